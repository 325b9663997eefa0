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
child2_cut_off "nbd\+unix:///\?socket=$tmpdir/c2.sock"

kill -CONT $c2pid
child2_back
stop_workload
cat $tmpdir/syslog

cmp $tmpdir/c0.img $tmpdir/c1.img
cmp $tmpdir/c0.img $tmpdir/c2.img
