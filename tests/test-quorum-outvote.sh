#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# One corrupted child of three is outvoted (threshold 2): the client
# reads the right data and the child is reported with the exact 4 KiB
# block it got wrong, whatever the size of the request.  Clients: nbdsh
# and qemu-io.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires qemu-io --version

outvote ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x55; done
  corrupt $tmpdir/c2.img 8200 'XXXX'
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done

  quorum -U - -v -D quorum.votes=1 "${quorum_head[@]}" vote-threshold=2 \
         child="$(child_uri 1)" child="$(child_uri 2)" \
         --run "nbdsh -u \"\$uri\" -c 'assert h.pread(4096, 8192) == b\"\\x55\" * 4096' &&
                qemu-io -f raw -c 'read -P 0x55 0 64k' \"\$uri\"" \
         2> $tmpdir/debug
  # -D quorum.votes=1: a line per vote that was not unanimous.
  assert_grep 'read 4096@8192: children differ: 1 blocks of 4096 bytes outvoted a child, 0 had no quorum' $tmpdir/debug
  assert_grep 'read 65536@0: children differ: 1 blocks of 4096 bytes outvoted a child, 0 had no quorum' $tmpdir/debug

  name="nbd\+unix:///\?socket=$tmpdir/c2.sock"
  # nbdsh's read of 4 KiB at 8 KiB and qemu-io's of 64 KiB at 0 both
  # name the block at 8 KiB, and nothing else.
  line="^nbdkit-quorum-$form warning event=bad type=read child=2 name=$name offset=0x2000 length=0x1000 error=mismatch\$"
  test "$(grep -E -c "$line" $tmpdir/syslog)" -eq 2
  test "$(grep -c 'event=bad' $tmpdir/syslog)" -eq 2
  # The good children are never blamed; nothing failed.
  assert_no_grep 'child=[01] ' $tmpdir/syslog
  assert_no_grep 'event=failure' $tmpdir/syslog
}

for_each_form outvote
