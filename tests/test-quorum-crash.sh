#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# kill -9 of the quorum with writes in flight, then a restart with the
# same state= file (issue 12, 5).  Three checked workloads (each one
# write at a time, over its own part of the disk) and the hammer
# (several connections, many overlapping writes in flight, in the
# first 256 KiB) run until the kill.  After the restart: every block a
# workload wrote holds what it acknowledged last (or the write in
# flight at the kill), reads of the whole disk succeed, the regions
# that had writes in flight are settled (event=settle), and the three
# children end byte-identical.  (Without state= they stay different:
# nothing remembers where the writes in flight were.)

source ./functions.sh
set -e
set -x
requires python3 -c 'import nbd'
requires nbdcopy --version

q="nbd+unix:///?socket=$tmpdir/q.sock"
st=$tmpdir/state

qstart ()
{
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" vote-threshold=2 \
      reconnect-delay=1 reconnect-max-delay=1 state=$st
}

progressed ()
{
  [ "$(cat $tmpdir/stop.$1.count 2>/dev/null || echo 0)" -ge $2 ]
}

# crash_child N: start child N (not child 0 of the filter form) on its
# image.  Child 2 is slower, so that the kill finds writes done on some
# children and not yet on others.
crash_child ()
{
  case $1 in
    2) start_child 2 --filter=delay file $tmpdir/c2.img delay-write=20ms ;;
    *) start_child $1 file $tmpdir/c$1.img ;;
  esac
}

crash ()
{
  local k pids=() hammer
  rm -f $st $tmpdir/saved.* $tmpdir/stop.*
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 8M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  crash_child 1
  crash_child 2
  qstart

  for k in 1 2 3; do
    python3 $abs_top_srcdir/tests/workload.py \
        --from $((k * 2 * 1048576 - 1048576)) --to $((k * 2 * 1048576 + 1048576)) \
        --crash $tmpdir/saved.$k "$q" $tmpdir/stop.$k 20 \
        > $tmpdir/workload.$k.log 2>&1 &
    pids+=($!)
    cleanup_fn kill_pid $!
  done
  python3 $abs_top_srcdir/tests/hammer.py "$q" 3 16 60 > $tmpdir/hammer.log 2>&1 &
  hammer=$!
  cleanup_fn kill_pid $hammer
  for k in 1 2 3; do
    wait_for "progress of workload $k" 60 progressed $k 50
  done
  sleep 1
  alive $hammer
  kill -9 $(cat $tmpdir/q.pid)
  for k in 1 2 3; do
    if ! wait ${pids[$((k - 1))]}; then
      cat $tmpdir/workload.$k.log
      echo "$0: FAIL: workload $k failed before the kill" >&2
      exit 1
    fi
    cat $tmpdir/workload.$k.log
    test -s $tmpdir/saved.$k
  done
  wait $hammer || :
  rm -f $tmpdir/q.pid $tmpdir/q.sock
  # A child server can die when the quorum is killed under it: Debian
  # 12's nbdkit 1.32 did in 2 of 14 runs here, child 2 both times (no
  # message; not seen with nbdkit 1.42).  That is not the
  # quorum's to answer for, and the restart would fail on the refused
  # connection, so start it again on its image, say so, and go on: what
  # it had not written yet is a write in flight at the kill like any
  # other, which state= must have recorded.
  for k in 0 1 2; do
    if [ -s $tmpdir/c$k.pid ] && ! alive $(cat $tmpdir/c$k.pid); then
      echo "$0: child $k (pid $(cat $tmpdir/c$k.pid)) died when the quorum was killed: starting it again" >&2
      stop_child $k
      crash_child $k
    fi
  done

  rm -f $tmpdir/syslog
  qstart
  for k in 1 2 3; do
    python3 $abs_top_srcdir/tests/workload.py --verify $tmpdir/saved.$k "$q"
  done
  rm -f $tmpdir/q.img
  nbdcopy "$q" $tmpdir/q.img
  wait_for "settled children" 60 \
      images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  cat $tmpdir/syslog
  assert_grep "event=settle offset=0x[0-9a-f]+ length=0x[0-9a-f]+ winner=[0-2] votes=[0-9]+ rewritten=0x[0-9a-f]+" $tmpdir/syslog
  # What was read is what the children hold, now and after.
  cmp $tmpdir/q.img $tmpdir/c0.img
  for k in 1 2 3; do
    python3 $abs_top_srcdir/tests/workload.py --verify $tmpdir/saved.$k "$q"
  done
  rm -f $tmpdir/q.img
  nbdcopy "$q" $tmpdir/q.img
  cmp $tmpdir/q.img $tmpdir/c0.img
  kill_pid $(cat $tmpdir/q.pid)
  rm -f $tmpdir/q.pid $tmpdir/q.sock
}

for_each_form crash
