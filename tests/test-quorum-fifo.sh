#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# read-pattern=fifo: child 0 first, the next on error; each failure is
# reported; no vote, so a corrupted later child is never read.

source ./functions.sh
set -e
set -x
requires nbdsh --version

fifo ()
{
  local c0name="nbd\+unix:///\?socket=$tmpdir/c0.sock"
  [ "$form" = filter ] && c0name=plugin
  rm -f $tmpdir/fail0
  make_image $tmpdir/c0.img 1M 0x00
  make_image $tmpdir/c1.img 1M 0x11
  make_image $tmpdir/c2.img 1M 0x22
  child0 --filter=error file $tmpdir/c0.img error-pread-rate=1 error-pread-file=$tmpdir/fail0
  start_child 1 file $tmpdir/c1.img
  start_child 2 file $tmpdir/c2.img
  children="child=$(child_uri 1) child=$(child_uri 2)"

  # Child 0 works: its data, whatever the others hold.
  quorum -U - "${quorum_head[@]}" read-pattern=fifo $children \
         --run "nbdsh -u \"\$uri\" -c 'assert h.pread(512, 0) == bytes(512)'"
  touch $tmpdir/syslog
  assert_no_grep 'event=' $tmpdir/syslog

  # Child 0 fails: child 1 answers.
  touch $tmpdir/fail0
  quorum -U - "${quorum_head[@]}" read-pattern=fifo $children \
         --run "nbdsh -u \"\$uri\" -c 'assert h.pread(512, 0) == b\"\\x11\" * 512'"
  assert_grep "event=bad type=read child=0 name=$c0name offset=0x0 length=0x200 error=EIO" $tmpdir/syslog
  assert_no_grep 'child=[12]' $tmpdir/syslog
}

for_each_form fifo
