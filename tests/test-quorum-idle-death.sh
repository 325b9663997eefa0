#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child that dies while the quorum is idle is reported down within
# moments, with no request to find it.  Requests one at a time leave
# the children's sockets parked, out of the reactor's set (a request
# alone reads its own replies, and the next one takes them back with
# no system call): nobody polls them until the next request, and the
# reactor must look at them on its own.  Child 2 does not offer
# multi-conn, so the quorum has one connection to it, that data socket:
# otherwise a second one for block status, which the reactor polls,
# would give the death away.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

q="nbd+unix:///?socket=$tmpdir/q.sock"

idle_death ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x5c; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 --filter=multi-conn file $tmpdir/c2.img \
              multi-conn-mode=disable
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
               child="$(child_uri 1)" child="$(child_uri 2)"

  # Requests one at a time; then the client stays connected and idle
  # (its connection's close would be a request too) while child 2 dies,
  # and then writes and reads again.
  rm -f $tmpdir/idle $tmpdir/go
  nbdsh -u "$q" -c "
import os, time
for i in range(16):
    h.pwrite(bytes([0x20 + i]) * 4096, i * 65536)
    assert h.pread(4096, i * 65536) == bytes([0x20 + i]) * 4096
open('$tmpdir/idle', 'w').close()
for _ in range(300):
    if os.path.exists('$tmpdir/go'):
        break
    time.sleep(0.1)
h.pwrite(b'\x77' * 4096, 0)
assert h.pread(4096, 0) == b'\x77' * 4096
assert h.pread(4096, 65536) == b'\x21' * 4096
" &
  client=$!
  cleanup_fn kill_pid $client
  wait_for "the client idle" 30 test -e $tmpdir/idle
  sleep 0.5
  assert_no_grep 'event=down' $tmpdir/syslog
  kill -9 $(cat $tmpdir/c2.pid)
  rm -f $tmpdir/c2.pid $tmpdir/c2.sock
  wait_for "event=down child=2 while idle" 5 \
      grep -q 'event=down child=2 .* reason=connection-lost$' $tmpdir/syslog
  assert_no_grep 'event=down child=[01] ' $tmpdir/syslog
  # The other two serve on.
  touch $tmpdir/go
  wait $client
}

for_each_form idle_death
