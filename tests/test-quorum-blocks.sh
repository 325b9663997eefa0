#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Votes are per block (vote-block-size, 4 KiB by default), not per
# request: two children corrupted in different blocks of one request
# are each outvoted by the other two, and repaired; a request whose
# children all differ somewhere fails, naming the blocks and who sided
# with whom (versions=); vote-block-size=64K votes a 64 KiB request as
# one, as QEMU does, and then the same corruption is fatal.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json'

cat > $tmpdir/fails.py <<'PY'
try:
    h.pread(65536, 0)
    assert False, "read of disagreeing children succeeded"
except nbd.Error as e:
    pass
PY

blocks ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x33; done
  corrupt $tmpdir/c1.img 100 'one'            # block 0x0
  corrupt $tmpdir/c2.img 9000 'two'           # block 0x2000
  corrupt $tmpdir/c2.img 12288 'three'        # block 0x3000
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  children="child=$(child_uri 1) child=$(child_uri 2)"
  read64k="nbdsh -u \"\$uri\" -c 'assert h.pread(65536, 0) == b\"\\x33\" * 65536'"
  rm -f $tmpdir/r.jsonl $tmpdir/f.jsonl

  # One 64 KiB read: both bad children are outvoted, block by block; the
  # two adjacent bad blocks of child 2 make one report.
  quorum -U - "${quorum_head[@]}" report=$tmpdir/r.jsonl $children --run "$read64k"
  assert_grep 'event=bad type=read child=1 .* offset=0x0 length=0x1000 error=mismatch$' $tmpdir/syslog
  assert_grep 'event=bad type=read child=2 .* offset=0x2000 length=0x2000 error=mismatch$' $tmpdir/syslog
  test "$(grep -c 'event=bad' $tmpdir/syslog)" -eq 2
  assert_no_grep 'event=failure' $tmpdir/syslog

  # Whole-request votes: every child of the 64 KiB read differs.
  rm $tmpdir/syslog
  quorum -U - "${quorum_head[@]}" vote-block-size=64K $children \
         --run "nbdsh -u \"\$uri\" -c 'exec(open(\"$tmpdir/fails.py\").read())'"
  assert_grep 'event=failure type=read offset=0x0 length=0x10000 reason=no-quorum votes=1 threshold=2 versions=0/1/2$' $tmpdir/syslog

  # Threshold 3: no block that any child got wrong has a quorum; adjacent
  # blocks with the same sides make one failure line.
  rm $tmpdir/syslog
  quorum -U - "${quorum_head[@]}" vote-threshold=3 report=$tmpdir/f.jsonl $children \
         --run "nbdsh -u \"\$uri\" -c 'exec(open(\"$tmpdir/fails.py\").read())'"
  assert_grep 'event=failure type=read offset=0x0 length=0x1000 reason=no-quorum votes=2 threshold=3 versions=0,2/1$' $tmpdir/syslog
  assert_grep 'event=failure type=read offset=0x2000 length=0x2000 reason=no-quorum votes=2 threshold=3 versions=0,1/2$' $tmpdir/syslog
  test "$(grep -c 'event=failure' $tmpdir/syslog)" -eq 2
  python3 - $tmpdir/f.jsonl <<'PY'
import json, sys
fails = [json.loads(l) for l in open(sys.argv[1]) if '"failure"' in l]
sides = sorted((f["offset"], f["length"], f["versions"]) for f in fails)
assert sides == [(0, 4096, [[0, 2], [1]]), (8192, 8192, [[0, 1], [2]])], sides
PY

  # rewrite-corrupted repairs each child where it was outvoted.
  rm $tmpdir/syslog
  quorum -U - "${quorum_head[@]}" rewrite-corrupted=true $children --run "$read64k"
  assert_grep 'event=repair child=1 .* offset=0x0 length=0x1000$' $tmpdir/syslog
  assert_grep 'event=repair child=2 .* offset=0x2000 length=0x2000$' $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c1.img
  cmp $tmpdir/c0.img $tmpdir/c2.img

  # Bad values are refused with the rule.
  expect_fail_start $tmpdir/log "${quorum_head[@]}" vote-block-size=1000 $children
  assert_grep 'vote-block-size=1000: must be a power of 2 between 512 and 32M' $tmpdir/log
}

for_each_form blocks
