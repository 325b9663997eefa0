#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# When no version has vote-threshold votes the read fails with EIO and
# a failure report, never with doubtful data: two children corrupted
# differently (all three differ), and threshold 3 with one bad child.

source ./functions.sh
set -e
set -x
requires nbdsh --version

cat > $tmpdir/check.py <<'EOF'
import errno
try:
    h.pread(4096, 0)
    assert False, "read of disagreeing children succeeded"
except nbd.Error as e:
    assert e.errno in ("EIO", errno.EIO), e
# Where the children agree, reads still work.
assert h.pread(4096, 65536) == b"\x55" * 4096
EOF

no_quorum ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x55; done
  corrupt $tmpdir/c1.img 100 'AAAA'
  corrupt $tmpdir/c2.img 100 'BBBB'
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  children="child=$(child_uri 1) child=$(child_uri 2)"

  quorum -U - "${quorum_head[@]}" vote-threshold=2 $children \
         --run "nbdsh -u \"\$uri\" -c 'exec(open(\"$tmpdir/check.py\").read())'"
  assert_grep "^nbdkit-quorum-$form err event=failure type=read offset=0x0 length=0x1000 reason=no-quorum votes=1 threshold=2 versions=0/1/2\$" $tmpdir/syslog
  # No winner, so nobody is called bad.
  assert_no_grep 'event=bad' $tmpdir/syslog

  # Threshold 3: one corrupted child is enough to refuse.
  cp $tmpdir/c0.img $tmpdir/c1.img
  rm $tmpdir/syslog
  quorum -U - "${quorum_head[@]}" vote-threshold=3 $children \
         --run "nbdsh -u \"\$uri\" -c 'exec(open(\"$tmpdir/check.py\").read())'"
  assert_grep 'event=failure type=read offset=0x0 length=0x1000 reason=no-quorum votes=2 threshold=3 versions=0,1/2$' $tmpdir/syslog
}

for_each_form no_quorum
