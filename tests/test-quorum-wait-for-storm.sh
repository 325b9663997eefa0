#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# wait-for=threshold under a storm of overlapping writes, 32 in flight
# over 256 KiB, while one child is killed and its commands fail at
# once: every fan-out answered at the threshold must still be finished
# by the late thread, whichever thread ends its last command (a slot
# refused inside slot_send's own hold, or a reply that comes before
# it lets go), and so release its range.  Before the fix such a fan-out
# was never handed over: the overlapping writes after it hung, and so
# did nbdkit's exit.  Here every write completes within 20 s, the
# children that stayed up end equal, and the quorum exits within 15 s
# of SIGTERM.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

storm ()
{
  local i pid
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 file $tmpdir/c2.img
  rm -f $tmpdir/q.sock
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" wait-for=threshold \
      reconnect-delay=1 reconnect-max-delay=1
  pid=$(cat $tmpdir/q.pid)

  nbdsh -u "nbd+unix:///?socket=$tmpdir/q.sock" -c "
import os, random, signal, time
random.seed(1)
done = [0]
def cb(err):
    assert err.value == 0, err.value
    done[0] += 1
    return 1
sent = 0
killed = False
start = time.monotonic()
last = start
while time.monotonic() - start < 4:
    while h.aio_in_flight() < 32:
        off = random.randrange(64) * 4096
        h.aio_pwrite(bytes([sent % 251]) * 4096, off,
                     completion=cb)
        sent += 1
    before = done[0]
    h.poll(1000)
    if done[0] > before:
        last = time.monotonic()
    assert time.monotonic() - last < 20, 'no write completed in 20 s'
    if not killed and time.monotonic() - start > 1.5:
        os.kill($(cat $tmpdir/c2.pid), signal.SIGKILL)
        killed = True
while h.aio_in_flight() > 0:
    before = done[0]
    h.poll(1000)
    if done[0] > before:
        last = time.monotonic()
    assert time.monotonic() - last < 20, 'no write completed in 20 s'
h.flush()
print('writes', sent, 'completed', done[0])
assert done[0] == sent
"
  images_equal $tmpdir/c0.img $tmpdir/c1.img
  # Every fan-out finished: the late thread stops, nbdkit exits.
  kill $pid
  for i in $(seq 150); do
    alive $pid || break
    sleep 0.1
  done
  if alive $pid; then
    echo "$0: FAIL: the quorum did not exit within 15 s of SIGTERM" >&2
    exit 1
  fi
}

for_each_form storm
