#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# wait-for=threshold: a slow child that owes more than max-lag= bytes
# of writes is put ahead: it is sent nothing more (later writes mark it
# stale), it keeps its connection while it completes what it owes,
# then it is resynchronised, caught up and identical to the others.
# It is never cut.  Were another child to go down while it is ahead,
# it takes requests again at once (recalled): writes do not fail for
# want of children, and all three end identical.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

q="nbd+unix:///?socket=$tmpdir/q.sock"

lagging ()
{
  ahead_quorum reconnect-delay=1
  push_ahead "$q"
  # The late thread puts it ahead when it next runs: on a loaded
  # machine all 32 writes may have been sent to child 2 by then, and
  # then it missed nothing.  These come after, while it still owes the
  # first ones (2 s each): they are not sent to it, it is stale there.
  nbdsh -u "$q" -c '
for i in range(8):
    h.pwrite(bytes([0x40 + i]) * 4096, i * 16384 + 8192)
h.flush()
'
  # Copies need two agreeing sources; in the filter one is the plugin,
  # read from the background only while a client is connected.
  hold_connection "$q"
  wait_for "event=caught-up" 60 grep -q 'event=caught-up child=2' \
      $tmpdir/syslog
  # What it was not sent was stale, and copied to it.
  assert_grep 'event=resync-end child=2 .* copied=0x[1-9a-f]' $tmpdir/syslog
  # Ahead, not cut: it kept its connection throughout.
  assert_no_grep 'event=down child=2' $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c1.img
  wait_for "child 2 identical" 30 cmp $tmpdir/c0.img $tmpdir/c2.img
  release_connection

  # Caught up, it is sent writes again: one more reaches it without a
  # resync (were it still ahead, the write would make it stale there).
  resyncs=$(grep -c 'event=resync-start child=2' $tmpdir/syslog)
  nbdsh -u "$q" -c 'h.pwrite(b"\x7e" * 4096, 8192); h.flush()'
  wait_for "child 2 took the write" 30 cmp $tmpdir/c0.img $tmpdir/c2.img
  test "$(grep -c 'event=resync-start child=2' $tmpdir/syslog)" = "$resyncs"
}

# recalled: child 2 is ahead when child 1 is killed.
recalled ()
{
  ahead_quorum reconnect-delay=1
  hold_connection "$q"
  # Flushed (push_ahead): what child 2 misses is on child 1's disk when
  # it dies (what a child had not flushed is stale for it then, and one
  # copy is not enough to copy from).
  push_ahead "$q"
  kill -9 $(cat $tmpdir/c1.pid)
  wait_for "event=down" 30 grep -q 'event=down child=1' $tmpdir/syslog
  # Children 0 and 2 take these (child 2 at 2 s a write).
  nbdsh -u "$q" -c '
h.pwrite(b"\x51" * 4096, 4096)
h.pwrite(b"\x52" * 4096, 65536 + 4096)
h.flush()
assert h.pread(4096, 4096) == b"\x51" * 4096
'
  assert_grep 'event=recalled child=2' $tmpdir/syslog
  assert_no_grep 'event=failure' $tmpdir/syslog
  # Child 1 back: copied to, as is what child 2 missed while ahead.
  rm -f $tmpdir/c1.sock
  start_child 1 file $tmpdir/c1.img
  wait_for "child 1 identical" 60 cmp $tmpdir/c0.img $tmpdir/c1.img
  wait_for "child 2 identical" 60 cmp $tmpdir/c0.img $tmpdir/c2.img
  release_connection
  nbdsh -u "$q" -c 'assert h.pread(4096, 65536 + 4096) == b"\x52" * 4096'
}

for_each_form lagging
for_each_form recalled
