#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# What the export offers is fixed by the children reachable at
# start-up.  A child that joins later (start-degraded), or comes back,
# must offer what
# cannot be made up for it: one read-only, without flush, or asking
# for a larger alignment is kept out, said so with what it lacks, and
# tried again; one without FUA and with a smaller maximum block size
# joins, and gets a flush after its writes and requests split to its
# maximum, never the flag or a request it did not advertise.  In both
# forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

# The quorum's messages (--log=syslog: the capture has them).
not_joining ()
{
  grep -F -q "quorum: child 2 (nbd+unix:///?socket=$tmpdir/c2.sock): not joining: it $1" $tmpdir/syslog
}

rejoin_caps ()
{
  for i in 0 1 2; do truncate -s 0 $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  rm -f $tmpdir/c2.log
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  quorum_args=("${quorum_head[@]}" child="$(child_uri 1)"
               child="$(child_uri 2)" reconnect-delay=1 reconnect-max-delay=1)
  q="nbd+unix:///?socket=$tmpdir/q.sock"

  # Unreachable at start-up, then read-only.
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock --log=syslog \
      "${quorum_args[@]}" start-degraded=true
  nbdsh -u "$q" -c 'assert h.can_fua() and h.can_flush()'
  start_child 2 -r file $tmpdir/c2.img
  wait_for "refusal of a read-only child" 20 \
      not_joining 'is read-only, and the export is writable; next try in 1 s'
  assert_no_grep 'event=up child=2' $tmpdir/syslog
  kill_pid "$(cat $tmpdir/q.pid)"
  rm -f $tmpdir/q.pid $tmpdir/q.sock $tmpdir/syslog
  stop_child 2

  # There at start-up, then back without what the export offers.
  start_child 2 file $tmpdir/c2.img
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock --log=syslog \
      "${quorum_args[@]}"
  nbdsh -u "$q" -c 'h.pwrite(b"a" * 4096, 0)'
  stop_child 2
  wait_for "child 2 down" 20 grep -q 'event=down child=2' $tmpdir/syslog

  start_child 2 eval get_size='echo 1048576' pread='exit 1' \
      pwrite='exit 1' can_write='exit 0' can_flush='exit 3'
  wait_for "refusal of a child without flush" 20 \
      not_joining 'cannot flush, and the export offers flush'
  stop_child 2

  start_child 2 --filter=blocksize-policy file $tmpdir/c2.img \
      blocksize-minimum=64K blocksize-preferred=64K
  wait_for "refusal of a child asking for 64K alignment" 20 \
      not_joining "needs requests aligned to 65536 bytes, and the export's minimum block size is 1"
  stop_child 2
  assert_no_grep 'event=up child=2' $tmpdir/syslog

  # No FUA (the fua filter's default), and at most 64 KiB at a
  # time (refusing more).
  start_child 2 --filter=log --filter=fua --filter=blocksize-policy \
      file $tmpdir/c2.img blocksize-maximum=64K \
      blocksize-error-policy=error logfile=$tmpdir/c2.log
  wait_for "resync of child 2" 30 \
      grep -q 'event=resync-end child=2' $tmpdir/syslog
  nbdsh -u "$q" -c '
h.pwrite(b"b" * (1 << 20), 0, nbd.CMD_FLAG_FUA)
h.zero(256 * 1024, 0, nbd.CMD_FLAG_FUA)
assert h.pread(1 << 20, 0) == bytes(256 * 1024) + b"b" * (768 * 1024)
'
  assert_no_grep 'event=(bad|failure)' $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c2.img
  cmp $tmpdir/c1.img $tmpdir/c2.img
  cat $tmpdir/c2.log
  python3 - $tmpdir/c2.log <<'PY'
import re, sys
ops = []
for line in open(sys.argv[1]):
    m = re.search(r' (Read|Write|Zero|Flush) id=\d+ (offset=\S+ count=(0x[0-9a-f]+))?(.*fua=(\d))?', line)
    if m and not line.rstrip().endswith("..."):
        continue
    if m:
        op = m.group(1)
        if op != "Flush":
            assert int(m.group(3), 16) <= 65536, line
            assert m.group(5) in (None, "0"), line
        ops.append(op)
# The 1 MiB write in 16 parts, a flush; the zero in 4 parts, a flush.
print(ops)
want = ["Write"] * 16 + ["Flush"] + ["Zero"] * 4 + ["Flush"]
assert any(ops[i:i + len(want)] == want for i in range(len(ops))), ops
PY
}

for_each_form rejoin_caps
