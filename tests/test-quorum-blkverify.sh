#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# blkverify: two children that must agree byte for byte.  A difference
# is reported with its exact offset, the read fails and nbdkit stops.

source ./functions.sh
set -e
set -x
requires nbdsh --version

blkverify ()
{
  make_image $tmpdir/c0.img 1M 0x44
  make_image $tmpdir/c1.img 1M 0x44
  corrupt $tmpdir/c1.img 70000 'Z'
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img

  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" blkverify=true vote-threshold=2
  qpid=$(cat $tmpdir/q.pid)

  nbdsh -u "nbd+unix:///?socket=$tmpdir/q.sock" -c '
import errno
assert h.pread(4096, 0) == b"\x44" * 4096
try:
    h.pread(65536, 65536)
    assert False, "read over a difference succeeded"
except nbd.Error as e:
    assert e.errno in ("EIO", errno.EIO), e
'
  # 70000 = 0x11170
  assert_grep "^nbdkit-quorum-$form err event=failure type=read offset=0x10000 length=0x10000 reason=blkverify first-difference=0x11170\$" $tmpdir/syslog

  # nbdkit shuts down.
  for i in $(seq 100); do alive $qpid || break; sleep 0.1; done
  if alive $qpid; then
      echo "$0: FAIL: nbdkit still running after a blkverify mismatch"
      exit 1
  fi
}

for_each_form blkverify
