#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# wait-for=threshold with state=: the writes a child misses while it is
# ahead, and those it has not completed, are in the state file when
# the quorum dies (kill -9) with the child still ahead.  Restarted, the
# quorum copies them to the child and the three images end identical;
# every write acknowledged before the kill reads back.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

q="nbd+unix:///?socket=$tmpdir/q.sock"
st=$tmpdir/state

qargs=(reconnect-delay=1 reconnect-max-delay=1 state=$st)

ahead_killed ()
{
  rm -f $st
  ahead_quorum "${qargs[@]}"

  # Ahead (push_ahead), then 8 more writes it is not sent, all flushed
  # on children 0 and 1.
  push_ahead "$q"
  nbdsh -u "$q" -c '
for i in range(8):
    h.pwrite(bytes([0x40 + i]) * 4096, 524288 + i * 16384)
h.flush()
'
  # Still ahead, still owing the first writes: the quorum dies.
  assert_no_grep 'event=caught-up' $tmpdir/syslog
  kill -9 $(cat $tmpdir/q.pid)
  wait_for "the quorum gone" 10 dead $(cat $tmpdir/q.pid)
  rm -f $tmpdir/q.pid $tmpdir/q.sock
  # Child 2 loses what it had in flight; it comes back without delay.
  kill -9 $(cat $tmpdir/c2.pid)
  rm -f $tmpdir/c2.pid $tmpdir/c2.sock
  start_child 2 file $tmpdir/c2.img

  rm -f $tmpdir/syslog
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
               child="$(child_uri 1)" child="$(child_uri 2)" \
               wait-for=threshold max-lag=64K "${qargs[@]}"
  hold_connection "$q"
  wait_for "child 2 identical" 60 \
      images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  # The data lands before the pass ends and reports: wait for that too.
  wait_for "resync-end report" 30 grep -q 'event=resync-end child=2 ' $tmpdir/syslog
  release_connection
  cat $tmpdir/syslog
  assert_grep 'event=resync-end child=2 .* dirty=0x0 copied=0x[1-9a-f]' \
              $tmpdir/syslog
  nbdsh -u "$q" -c '
for i in range(32):
    assert h.pread(4096, i * 16384) == bytes([0x60 + i]) * 4096, i
for i in range(8):
    assert h.pread(4096, 524288 + i * 16384) == bytes([0x40 + i]) * 4096, i
'
}

for_each_form ahead_killed
