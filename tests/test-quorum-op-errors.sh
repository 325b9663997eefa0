#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Zero, trim, extents and cache failing on one child (nbdkit's error
# filter): outvoted and reported at vote-threshold=2, each with its own
# type.  A child that missed a zero is left out of reads there (its
# dirty map), so its stale data is neither returned nor reported as a
# mismatch.  At vote-threshold=3 the zero fails.

source ./functions.sh
set -e
set -x
requires nbdsh --version

op_errors ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x99; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 --filter=error file $tmpdir/c2.img \
      error-zero-rate=1 error-trim-rate=1 error-extents-rate=1 \
      error-cache-rate=1 error-zero=ENOSPC
  children="child=$(child_uri 1) child=$(child_uri 2)"

  quorum -U - "${quorum_head[@]}" $children --run "nbdsh --base-allocation -u \"\$uri\" -c '
h.zero(65536, 131072)
assert h.pread(65536, 131072) == bytes(65536)
h.trim(65536, 262144)
entries = []
h.block_status(65536, 0, lambda ctx, off, e, err: entries.extend(e))
assert entries[1] == 0, entries       # a child failed: all data
assert h.can_cache()
h.cache(4096, 0)
'"
  cat $tmpdir/syslog
  c2="child=2 name=nbd\+unix:///\?socket=$tmpdir/c2.sock"
  assert_grep "event=bad type=zero $c2 offset=0x20000 length=0x10000 error=ENOSPC\$" $tmpdir/syslog
  # A trim is sent as a zero that may punch holes: the zero's error.
  assert_grep "event=bad type=trim $c2 offset=0x40000 length=0x10000 error=ENOSPC\$" $tmpdir/syslog
  assert_grep "event=bad type=extents $c2 offset=0x0 length=0x10000 error=EIO\$" $tmpdir/syslog
  assert_grep "event=bad type=cache $c2 offset=0x0 length=0x1000 error=EIO\$" $tmpdir/syslog
  # Child 2 missed the zero: stale there, left out of that read (not
  # reported as outvoted), and healed in the background while it stays
  # up, with the data the others agree on (written, not zeroed: its
  # zeroes still fail).
  assert_grep "event=stale $c2 offset=0x20000 length=0x10000 reason=write-failed\$" $tmpdir/syslog
  cmp -n 65536 -i 131072 $tmpdir/c0.img /dev/zero
  wait_for "child 2 healed" 20 cmp -n 65536 -i 131072 $tmpdir/c2.img /dev/zero
  assert_no_grep 'type=read' $tmpdir/syslog
  assert_no_grep 'event=failure' $tmpdir/syslog

  rm $tmpdir/syslog
  quorum -U - "${quorum_head[@]}" vote-threshold=3 $children --run "nbdsh -u \"\$uri\" -c '
import errno
try:
    h.zero(4096, 0)
    assert False, \"zero succeeded on 2 of 3 at threshold 3\"
except nbd.Error as e:
    assert e.errno in (\"ENOSPC\", errno.ENOSPC), e
'"
  assert_grep 'event=failure type=zero offset=0x0 length=0x1000 reason=errors error=ENOSPC successes=2 threshold=3' $tmpdir/syslog
}

for_each_form op_errors
