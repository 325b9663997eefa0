#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child that dies (kill -9) is marked down, the export keeps serving
# and writing; when it comes back it is reconnected and the regions
# written meanwhile are copied to it before it votes on them again.
# In both forms, with no client connected while it is copied and with
# one connected: in the filter form the plugin below is then a source
# too (a context of it is only opened within a client connection), and
# with one remote child it is the only source.  A copy needs
# vote-threshold current children that agree: in the filter form with
# no client, child 1 alone is not enough, so child 2 stays stale until
# a client connects and lends the plugin, then is copied at the next
# retry.

source ./functions.sh
set -e
set -x
requires nbdsh --version

q="nbd+unix:///?socket=$tmpdir/q.sock"

# hold_client: a client connected to the quorum until release_client.
hold_client ()
{
  rm -f $tmpdir/held $tmpdir/release
  nbdsh -u "$q" -c "
import os, time
open('$tmpdir/held', 'w').close()
while not os.path.exists('$tmpdir/release'):
    time.sleep(0.1)
" &
  holder=$!
  cleanup_fn kill_pid $holder
  wait_for "held connection" 10 test -e $tmpdir/held
}

release_client ()
{
  touch $tmpdir/release
  wait $holder
}

# resync alone|held
resync ()
{
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 4M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      reconnect-delay=1 reconnect-max-delay=2 report=$tmpdir/r.jsonl \
      resync-rate=1
  [ "$1" = held ] && hold_client

  kill -9 $(cat $tmpdir/c2.pid)
  nbdsh -u "$q" -c 'h.pwrite(b"\x11" * 100000, 70000)' \
        -c 'h.zero(65536, 1000000)' \
        -c 'h.pwrite(b"\x22" * 4096, 4 * 1024 * 1024 - 4096)' \
        -c 'assert h.pread(100000, 70000) == b"\x11" * 100000'
  assert_grep 'event=down child=2 .* reason=connection-lost' $tmpdir/syslog
  refute cmp $tmpdir/c0.img $tmpdir/c2.img

  rm -f $tmpdir/c2.sock
  start_child 2 file $tmpdir/c2.img
  wait_for "event=resync-end" 10 grep -q 'event=resync-end child=2' $tmpdir/syslog
  if [ $form = filter ] && [ "$1" = alone ]; then
    # One current child can be read: nothing is copied.
    assert_grep 'event=resync-end child=2 .* dirty=0x50000 copied=0x0$' $tmpdir/syslog
    refute cmp $tmpdir/c1.img $tmpdir/c2.img
    hold_client
    wait_for "event=resync-end dirty=0x0" 20 \
        grep -q 'event=resync-end child=2 .* dirty=0x0 ' $tmpdir/syslog
    release_client
  fi
  cat $tmpdir/syslog
  # 5 granules of 64 KiB were written while it was down.
  assert_grep "^nbdkit-quorum-$form notice event=resync-start child=2 .* dirty=0x50000\$" $tmpdir/syslog
  assert_grep 'event=resync-end child=2 .* dirty=0x0 copied=0x50000$' $tmpdir/syslog
  # Progress by tenths, after each run of granules: 2, 2 and 1 of 5
  # (resync-rate=1 MiB/s copies one run at a time: more would be in
  # flight at once, and finish in any order).
  assert_grep 'event=resync-progress child=2 .* percent=40 dirty=0x30000 copied=0x20000$' $tmpdir/syslog
  assert_grep 'event=resync-progress child=2 .* percent=80 dirty=0x10000 copied=0x40000$' $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c2.img
  cmp $tmpdir/c1.img $tmpdir/c2.img
  nbdsh -u "$q" -c 'assert h.pread(4096, 4 * 1024 * 1024 - 4096) == b"\x22" * 4096'
  [ "$1" = held ] && release_client
  # The quorum is still there.
  alive $(cat $tmpdir/q.pid)
}

for_each_form resync alone
for_each_form resync held

# The filter with one remote child: the plugin below is the only copy
# to take the missed writes from.
resync_from_plugin ()
{
  for i in 0 1; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" vote-threshold=1 reconnect-delay=1 \
      child-timeout=2
  hold_client
  kill -9 $(cat $tmpdir/c1.pid)
  nbdsh -u "$q" -c 'h.pwrite(b"\x33" * 4096, 131072)'
  assert_grep 'event=down child=1 ' $tmpdir/syslog
  rm -f $tmpdir/c1.sock
  start_child 1 file $tmpdir/c1.img
  wait_for "event=resync-end" 10 grep -q 'event=resync-end child=1' $tmpdir/syslog
  cat $tmpdir/syslog
  assert_grep 'event=resync-end child=1 .* dirty=0x0 copied=0x10000$' $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c1.img
  release_client
  alive $(cat $tmpdir/q.pid)
}
form=filter
rm -f $tmpdir/syslog
resync_from_plugin
