#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# child-command=: the quorum starts its children itself (systemd socket
# activation through libnbd), here qemu-nbd on qcow2 images and nbdkit
# on a raw image named relative to where nbdkit was started.  The
# corrupted child is outvoted and named by its command; writes reach
# every image; a child server that dies is a child failure like any
# other: it is started again and resynchronised; and the servers stop
# with the quorum.  A command that does not work stops nbdkit at
# start-up with a message naming child-command.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires qemu-img --version
requires qemu-io --version
requires qemu-nbd --version

for i in 0 1; do
  qemu-img create -q -f qcow2 $tmpdir/c$i.qcow2 4M
  qemu-io -f qcow2 -c 'write -P 0x44 0 4M' $tmpdir/c$i.qcow2 >/dev/null
done
make_image $tmpdir/c2.img 4M 0x44
qemu-io -f qcow2 -c 'write -P 0x99 4k 4k' $tmpdir/c1.qcow2 >/dev/null

# The children inherit the quorum's environment: under a sanitizer's
# runtime (scripts/test) they must not (qemu's coroutines and TSan do
# not mix).  "exec env -u ..." keeps the PID that LISTEN_PID names.
noload= noload_name=
if [ -n "$QUORUM_PRELOAD" ]; then
  noload="env -u LD_PRELOAD "
  noload_name="env%20-u%20LD_PRELOAD%20"
fi

# The plugin as a background server, started from $tmpdir so that the
# relative image name must be resolved there.
cd $tmpdir
start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock $QUORUM_PLUGIN \
   child-command="${noload}qemu-nbd -f qcow2 $tmpdir/c0.qcow2" \
   child-command="${noload}qemu-nbd -f qcow2 '$tmpdir/c1.qcow2'" \
   child-command="${noload}nbdkit --exit-with-parent file c2.img" \
   reconnect-delay=1 report=$tmpdir/r.jsonl
cd - >/dev/null
qpid=$(cat $tmpdir/q.pid)
q="nbd+unix:///?socket=$tmpdir/q.sock"

nbdsh -u "$q" -c 'assert h.pread(16384, 0) == b"\x44" * 16384' \
      -c 'h.pwrite(b"\x55" * 65536, 1048576)'
# The three servers are the quorum's child processes.
servers=$(ps --ppid $qpid -o pid= | tr -d ' ')
test "$(echo $servers | wc -w)" -eq 3
assert_grep "event=bad type=read child=1 name=command:${noload_name}qemu-nbd%20-f%20qcow2%20%27$tmpdir/c1.qcow2%27 offset=0x1000 length=0x1000 error=mismatch\$" $tmpdir/syslog
for i in 0 1; do
  qemu-io -f qcow2 -r -U -c 'read -P 0x55 1M 64k' $tmpdir/c$i.qcow2 | grep -q 'read 65536/65536'
done

# The nbdkit child dies: reported, started again, resynchronised.
c2=$(ps --ppid $qpid -o pid=,args= | awk '/nbdkit/ { print $1 }')
kill -9 $c2
nbdsh -u "$q" -c 'h.pwrite(b"\x66" * 4096, 2 * 1048576)'
wait_for "event=resync-end" 10 grep -q 'event=resync-end child=2' $tmpdir/syslog
assert_grep "event=down child=2 name=command:${noload_name}nbdkit%20--exit-with-parent%20file%20c2.img reason=connection-lost" $tmpdir/syslog
# What it missed (64 KiB at 2M) and what it had taken but not flushed
# when it died (64 KiB at 1M): it may have lost that.
assert_grep 'event=stale child=2 .* offset=0x100000 length=0x10000 reason=down$' $tmpdir/syslog
assert_grep 'event=resync-end child=2 .* dirty=0x0 copied=0x20000$' $tmpdir/syslog
qemu-img convert -U -f qcow2 -O raw $tmpdir/c0.qcow2 $tmpdir/c0.raw
cmp $tmpdir/c0.raw $tmpdir/c2.img
servers=$(ps --ppid $qpid -o pid= | tr -d ' ')
test "$(echo $servers | wc -w)" -eq 3

# Stopping the quorum stops every server it started.
kill_pid $qpid
for pid in $servers; do
  for i in $(seq 50); do alive $pid || break; sleep 0.1; done
  refute alive $pid
done

# A command that cannot serve stops nbdkit at start-up.
expect_fail_start $tmpdir/log $QUORUM_PLUGIN \
    child-command="$tmpdir/no-such-server" child="$(child_uri 9)"
assert_grep "child-command=$tmpdir/no-such-server: cannot connect to child 0" $tmpdir/log
expect_fail_start $tmpdir/log $QUORUM_PLUGIN child-command=' ' child-command=x
assert_grep 'child-command=: empty command' $tmpdir/log
