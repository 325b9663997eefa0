#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A write that fails on one child of three succeeds at vote-threshold=2
# (the child is reported) and fails at vote-threshold=3; in both forms,
# with the failing child remote and, in the filter form, with the
# other children remote too.

source ./functions.sh
set -e
set -x
requires nbdsh --version

write_errors ()
{
  for i in 0 1 2; do truncate -s 0 $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 --filter=error file $tmpdir/c2.img error-pwrite-rate=1 error-pwrite=EIO
  children="child=$(child_uri 1) child=$(child_uri 2)"

  quorum -U - "${quorum_head[@]}" vote-threshold=2 $children \
         --run "nbdsh -u \"\$uri\" -c 'h.pwrite(b\"\\x11\" * 4096, 8192)'"
  assert_grep "^nbdkit-quorum-$form warning event=bad type=write child=2 name=nbd\+unix:///\?socket=$tmpdir/c2.sock offset=0x2000 length=0x1000 error=EIO\$" $tmpdir/syslog
  assert_no_grep 'event=failure' $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c1.img
  refute cmp $tmpdir/c0.img $tmpdir/c2.img

  rm $tmpdir/syslog
  quorum -U - "${quorum_head[@]}" vote-threshold=3 $children \
         --run "nbdsh -u \"\$uri\" -c '
import errno
try:
    h.pwrite(b\"\\x22\" * 4096, 8192)
    assert False, \"write succeeded on 2 of 3 at threshold 3\"
except nbd.Error as e:
    assert e.errno in (\"EIO\", errno.EIO), e
'"
  assert_grep 'event=failure type=write offset=0x2000 length=0x1000 reason=errors error=EIO successes=2 threshold=3' $tmpdir/syslog
}

for_each_form write_errors
