#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A resync copies a region only from vote-threshold current children
# that agree, never from fewer (issue 12, 2).  Four children,
# vote-threshold=2: child 3 misses a write that children 0, 1 and 2
# took (and flushed); 1 and 2 go down and child 0's copy is corrupted
# behind the quorum's back.  When 3 comes back, child 0 is its only
# current source: 3 must not get the corrupt bytes, and a read of the
# block fails instead of returning them (they would win with two
# votes).  When 1 comes back, 0 and 1 disagree: still no copy.  When 2
# is back too, 1 and 2 agree and 3 gets the right data, and reads
# return it.
# (With three children the same cannot end well: once 1 is back, 0 and
# 1 disagree and nothing has two votes, so a fourth child is needed to
# show the copy that must happen.)

source ./functions.sh
set -e
set -x
requires nbdsh --version

q="nbd+unix:///?socket=$tmpdir/q.sock"

resync_sources ()
{
  local r=$((5 * 65536))
  for i in 0 1 2 3; do rm -f $tmpdir/c$i.img; make_image $tmpdir/c$i.img 1M 0x5a; done
  child0 file $tmpdir/c0.img
  for i in 1 2 3; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" child="$(child_uri 3)" \
      vote-threshold=2 reconnect-delay=1 reconnect-max-delay=1
  hold_connection "$q"

  kill -9 $(cat $tmpdir/c3.pid)
  nbdsh -u "$q" -c "h.pwrite(b'W' * 65536, $r)" -c 'h.flush()'
  wait_for "event=down" 10 grep -q 'event=down child=3' $tmpdir/syslog
  for i in 1 2; do kill -9 $(cat $tmpdir/c$i.pid); done
  wait_for "event=down" 10 grep -q 'event=down child=1' $tmpdir/syslog
  wait_for "event=down" 10 grep -q 'event=down child=2' $tmpdir/syslog
  # Silent corruption of child 0's only copy of the first 4 KiB.
  corrupt $tmpdir/c0.img $r "$(printf 'X%.0s' $(seq 4096))"

  rm -f $tmpdir/c3.sock
  start_child 3 file $tmpdir/c3.img
  wait_for "event=up" 10 grep -q 'event=up child=3' $tmpdir/syslog
  # Time for a copy from child 0 alone to happen, if it were going to.
  try_for 5 grep -q 'event=resync-end child=3' $tmpdir/syslog || :
  refute grep -q X $tmpdir/c3.img
  nbdsh -u "$q" -c "
try:
    d = h.pread(4096, $r)
    assert False, 'read with one current copy returned %r' % d[:8]
except nbd.Error:
    pass
"
  refute grep -q X $tmpdir/c3.img

  rm -f $tmpdir/c1.sock
  start_child 1 file $tmpdir/c1.img
  wait_for "event=up" 10 grep -q 'event=up child=1' $tmpdir/syslog
  sleep 3   # time for a copy from 0 and 1 to happen, if it were going to
  refute grep -q X $tmpdir/c3.img

  rm -f $tmpdir/c2.sock
  start_child 2 file $tmpdir/c2.img
  wait_for "child 3's copy of the write" 30 \
      region_is $tmpdir/c3.img $r 65536 0x57
  nbdsh -u "$q" -c "assert h.pread(65536, $r) == b'W' * 65536"
  cat $tmpdir/syslog
  release_connection
  alive $(cat $tmpdir/q.pid)
}

for_each_form resync_sources
