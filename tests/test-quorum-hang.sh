#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child server that hangs for real (SIGSTOP) in the middle of a
# workload: the request it holds completes on the other two within
# child-timeout, the child is reported down (timeout), the export keeps
# serving; reconnection attempts fail while it is stopped (its kernel
# accepts the connection, nobody answers the handshake).  After SIGCONT
# it is reconnected and resynced, and the three images end identical.

source ./functions.sh
set -e
set -x
requires python3 -c 'import nbd'
requires nbdsh --version

for i in 0 1 2; do
  truncate -s 4M $tmpdir/c$i.img
  start_child $i file $tmpdir/c$i.img
done
c2pid=$(cat $tmpdir/c2.pid)
# A stopped process ignores SIGTERM until it runs again: on every exit
# path, let it run first (cleanup goes last registered first).
cleanup_fn kill -CONT $c2pid

start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock $QUORUM_PLUGIN \
    child="$(child_uri 0)" child="$(child_uri 1)" child="$(child_uri 2)" \
    child-timeout=2 reconnect-delay=1 reconnect-max-delay=2
q="nbd+unix:///?socket=$tmpdir/q.sock"

# Every request within 12 s: without the timeout, one would wait for
# as long as the child is stopped.
start_workload "$q" 12
workload_more 50

kill -STOP $c2pid
wait_for "event=down" 30 grep -q 'event=down child=2' $tmpdir/syslog
assert_grep "event=down child=2 name=nbd\+unix:///\?socket=$tmpdir/c2.sock reason=timeout$" \
            $tmpdir/syslog
wait_for "event=bad" 30 grep -E -q \
    "event=bad type=(read|write) child=2 .* error=ETIMEDOUT" $tmpdir/syslog

# Serving on with two children; a write lands on both.
workload_more 30
off=$((40 * 65536 + 61440))
make_image $tmpdir/p.blk 4096 0x50
nbdsh -u "$q" -c "h.pwrite(b'P' * 4096, $off)"
cmp -n 4096 -i $off:0 $tmpdir/c0.img $tmpdir/p.blk
cmp -n 4096 -i $off:0 $tmpdir/c1.img $tmpdir/p.blk
cmp -n 4096 -i $off:0 $tmpdir/c2.img /dev/zero
# Reconnection attempts meanwhile: 1 s after, handshake cut at 2 s.
sleep 4
workload_more 30
assert_no_grep 'event=up child=2' $tmpdir/syslog

kill -CONT $c2pid
wait_for "event=resync-end" 60 grep -q 'event=resync-end child=2' \
    $tmpdir/syslog
assert_grep "event=up child=2 " $tmpdir/syslog
assert_grep "event=resync-end child=2 .* copied=0x[1-9a-f]" $tmpdir/syslog

workload_more 30
stop_workload
cat $tmpdir/syslog

cmp $tmpdir/c0.img $tmpdir/c1.img
cmp $tmpdir/c0.img $tmpdir/c2.img
