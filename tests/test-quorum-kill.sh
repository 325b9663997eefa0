#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child killed (kill -9) with many requests in flight, from several
# connections: not one request fails, the data read back is the data
# written; the child is restarted, resynced, and the three images end
# identical.  Then two children are killed: with one of three left and
# vote-threshold=2 every request fails with EIO and a failure report,
# and no read ever returns data that was not written.  When both come
# back, what child 0 alone is known to hold (child 2 had not flushed it
# when it died, child 1 missed it) is not copied: a copy needs
# vote-threshold=2 current children that agree.  It reads as EIO, never
# as other data, until it is written again; then every byte is readable
# and the same everywhere again.
# (test-quorum-resync.sh: the dirty map of a child killed while idle.)

source ./functions.sh
set -e
set -x
requires python3 -c 'import nbd'
requires nbdsh --version
requires nbdcopy --version

for i in 0 1 2; do
  truncate -s 4M $tmpdir/c$i.img
  start_child $i file $tmpdir/c$i.img
done
start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock $QUORUM_PLUGIN \
    child="$(child_uri 0)" child="$(child_uri 1)" child="$(child_uri 2)" \
    vote-threshold=2 reconnect-delay=1 reconnect-max-delay=2
q="nbd+unix:///?socket=$tmpdir/q.sock"

# The hammer has the first 256 KiB (4 connections x 32 requests in
# flight of overlapping random writes and reads), the checked workload
# the rest.
start_workload "$q" 20 --from 262144
workload_more 30
python3 $abs_top_srcdir/tests/hammer.py "$q" 4 32 8 > $tmpdir/hammer.log 2>&1 &
hammer=$!
cleanup_fn kill_pid $hammer
sleep 2

kill -9 $(cat $tmpdir/c2.pid)
wait_for "event=down" 30 grep -q 'event=down child=2' $tmpdir/syslog
assert_grep "event=down child=2 .* reason=connection-lost$" $tmpdir/syslog
# Every request of the hammer succeeded.
wait $hammer
cat $tmpdir/hammer.log
assert_grep '^ops=[1-9][0-9]* errors=0$' $tmpdir/hammer.log
workload_more 30
assert_no_grep 'event=failure' $tmpdir/syslog

rm -f $tmpdir/c2.sock
start_child 2 file $tmpdir/c2.img
wait_for "event=resync-end" 60 grep -q 'event=resync-end child=2' \
    $tmpdir/syslog
assert_grep "event=resync-end child=2 .* copied=0x[1-9a-f]" $tmpdir/syslog
workload_more 30
stop_workload
cmp $tmpdir/c0.img $tmpdir/c1.img
cmp $tmpdir/c0.img $tmpdir/c2.img

# One of three left.  The workload accepts failures now, never wrong
# data.
start_workload "$q" 20 --lenient
workload_more 30
kill -9 $(cat $tmpdir/c1.pid)
wait_for "event=down" 30 grep -q 'event=down child=1' $tmpdir/syslog
workload_more 30
assert_no_grep 'event=failure' $tmpdir/syslog
kill -9 $(cat $tmpdir/c2.pid)
wait_for "event=down" 30 \
    grep -q 'event=down child=2 .* reason=connection-lost' $tmpdir/syslog
workload_more 30

nbdsh -u "$q" -c '
import errno
ops = [("read", lambda: h.pread(4096, 0)),
       ("write", lambda: h.pwrite(b"x" * 4096, 0)),
       ("zero", lambda: h.zero(4096, 0)),
       ("trim", lambda: h.trim(4096, 0)),
       ("flush", lambda: h.flush())]
for name, op in ops:
    try:
        op()
    except nbd.Error as e:
        assert e.errnum == errno.EIO, (name, e)
    else:
        assert False, "%s with one child of three succeeded" % name
'
stop_workload
# It saw failures, all of them EIO.
assert_grep ' failures=[1-9][0-9]* EIO=[0-9]+ worst' $tmpdir/workload.log
assert_grep 'event=failure type=read .* reason=errors error=EIO successes=1 threshold=2' \
            $tmpdir/syslog
assert_grep 'event=failure type=write .* reason=errors error=EIO successes=1 threshold=2' \
            $tmpdir/syslog

# Both come back.  The writes acknowledged while child 1 was away
# reached children 0 and 2, but child 2 had not flushed them when it
# died: child 0 is the only copy known to hold them, and one is not
# enough to copy from.
rm -f $tmpdir/c1.sock $tmpdir/c2.sock
start_child 1 file $tmpdir/c1.img
start_child 2 file $tmpdir/c2.img
resynced ()
{
  [ "$(grep -c "event=resync-end child=$1 " $tmpdir/syslog)" -ge $2 ]
}
wait_for "event=resync-end" 60 resynced 1 1
wait_for "event=resync-end" 60 resynced 2 2
grep 'event=resync-end child=[12] ' $tmpdir/syslog | tail -n 2 > $tmpdir/last
assert_grep 'event=resync-end child=1 .* dirty=0x[1-9a-f][0-9a-f]* ' $tmpdir/last
# Reads there fail; every other read is right.
start_workload "$q" 5 --lenient
workload_more 5
stop_workload
# Written again, the whole disk is current everywhere.
head -c 4194304 /dev/urandom > $tmpdir/new.img
nbdcopy $tmpdir/new.img "$q"
nbdcopy "$q" $tmpdir/back.img
cmp $tmpdir/new.img $tmpdir/back.img
nbdsh -u "$q" -c 'h.flush()'
cmp $tmpdir/c0.img $tmpdir/c1.img
cmp $tmpdir/c0.img $tmpdir/c2.img
