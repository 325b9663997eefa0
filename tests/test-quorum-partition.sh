#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A network partition between the quorum and one child, for real: the
# child serves TCP in a network namespace of its own, reached through
# a veth pair, and the link is cut while a workload runs.  The export
# keeps serving (2 of 3), the child is reported down after
# child-timeout, writes made meanwhile land on the other two; when the
# link comes back the child reconnects, is resynced, and the three
# images end byte-identical.
#
# The whole test runs in a network namespace made for it (the test
# starts itself again under unshare --net), and the child's namespace
# is created inside that one: no packet can leave the machine.

if [ -z "$QUORUM_TEST_NETNS" ]; then
  if ! unshare --net true; then
    echo "$0: FAIL: cannot create a network namespace (unshare --net):" \
         "this test must run as root" >&2
    exit 1
  fi
  QUORUM_TEST_NETNS=1 exec unshare --net -- "$0" "$@"
fi

source ./functions.sh
set -e
set -x
requires ip -V
requires nsenter --version
requires python3 -c 'import nbd'

# We are alone in this namespace: only lo, which starts down.
[ "$(ip -o link show | wc -l)" -eq 1 ]
ip link set lo up
# A connection that is not answered is not given up for ~15 min by
# default; the quorum's child-timeout must act long before that, and
# long before this does (~25 s).
sysctl -q -w net.ipv4.tcp_retries2=6

# The child's host: a namespace held by a process we own.
unshare --net sleep 300 &
holder=$!
cleanup_fn kill_pid $holder
for i in $(seq 100); do
  [ "$(readlink /proc/$holder/ns/net)" != "$(readlink /proc/$$/ns/net)" ] &&
    break
  sleep 0.1
done
[ "$(readlink /proc/$holder/ns/net)" != "$(readlink /proc/$$/ns/net)" ]
ip link add vq type veth peer name vc netns $holder
ip addr add 10.77.0.1/24 dev vq
ip link set vq up
nsenter --target $holder --net sh -c '
  ip link set lo up &&
  ip addr add 10.77.0.2/24 dev vc &&
  ip link set vc up'

for i in 0 1 2; do truncate -s 4M $tmpdir/c$i.img; done
start_child 0 file $tmpdir/c0.img
start_child 1 file $tmpdir/c1.img
# Child 2 listens on TCP in the other namespace.  (start_nbdkit, but
# through nsenter.)
nsenter --target $holder --net \
  nbdkit -P $tmpdir/c2.pid -i 10.77.0.2 -p 10809 file $tmpdir/c2.img
for i in $(seq 100); do [ -s $tmpdir/c2.pid ] && break; sleep 0.1; done
cleanup_fn kill_pid "$(cat $tmpdir/c2.pid)"
c2="nbd://10.77.0.2:10809/"

start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock $QUORUM_PLUGIN \
    child="$(child_uri 0)" child="$(child_uri 1)" child="$c2" \
    child-timeout=2 reconnect-delay=1 reconnect-max-delay=2
q="nbd+unix:///?socket=$tmpdir/q.sock"

# Every request must succeed within 12 s: far more than child-timeout
# on a busy machine, far less than TCP would wait without it.
start_workload "$q" 12
workload_more 50

ip link set vq down
child2_cut_off "nbd://10.77.0.2:10809/"

ip link set vq up
child2_back
stop_workload
cat $tmpdir/syslog

cmp $tmpdir/c0.img $tmpdir/c1.img
cmp $tmpdir/c0.img $tmpdir/c2.img
