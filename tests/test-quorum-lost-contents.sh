#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child that comes back must show it is the same disk before it
# votes (issue 12, 4).  A memory child restarted on the same socket is
# empty: it rejoins wholly stale (reason=lost-contents), is rebuilt
# from the others, and reads never return its zeros.  Two of them
# (with vote-threshold=2 of 3) must not outvote the one good copy;
# with 5 children and vote-threshold=3 two are rebuilt.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires nbdcopy --version

q="nbd+unix:///?socket=$tmpdir/q.sock"

# The data: 4 KiB in some granules, one whole granule, then flushed.
write_data ()
{
  nbdsh -u "$q" -c "
for g in (0, 3, 7, 15):
    h.pwrite(bytes([0x41 + g]) * 4096, g * 65536 + 8192)
h.pwrite(b'F' * 65536, 9 * 65536)
h.flush()
"
}

# restart_empty N...: the memory children N... lose everything.
restart_empty ()
{
  local i
  for i in "$@"; do stop_child $i; done
  for i in "$@"; do
    wait_for "event=down" 10 grep -q "event=down child=$i " $tmpdir/syslog
  done
  for i in "$@"; do start_child $i memory 1M; done
  for i in "$@"; do
    wait_for "event=up" 10 grep -q "event=up child=$i " $tmpdir/syslog
  done
}

# rebuilt N: memory child N holds what child 0 holds.
rebuilt ()
{
  rm -f $tmpdir/m.img
  nbdcopy "$(child_uri $1)" $tmpdir/m.img && cmp -s $tmpdir/m.img $tmpdir/c0.img
}

# rebuild FILES MEMS T: FILES file children (0 first), then MEMS memory
# children, vote-threshold T; the memory children restart empty.
rebuild ()
{
  local files=$1 mems=$2 t=$3 n=$(($1 + $2)) i children=()
  for i in $(seq 0 $((files - 1))); do
    rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img
  done
  child0 file $tmpdir/c0.img
  for i in $(seq 1 $((n - 1))); do
    if [ $i -lt $files ]; then start_child $i file $tmpdir/c$i.img
    else start_child $i memory 1M; fi
    children+=("child=$(child_uri $i)")
  done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      "${children[@]}" vote-threshold=$t reconnect-delay=1 \
      reconnect-max-delay=1
  hold_connection "$q"
  write_data
  rebuilt $((n - 1))

  restart_empty $(seq $files $((n - 1)))
  # Never its zeros, while it is rebuilt and after.
  for i in $(seq 10); do
    rm -f $tmpdir/q.img
    nbdcopy "$q" $tmpdir/q.img
    cmp $tmpdir/q.img $tmpdir/c0.img
  done
  for i in $(seq $files $((n - 1))); do
    wait_for "rebuilt child $i" 30 rebuilt $i
  done
  cat $tmpdir/syslog
  for i in $(seq $files $((n - 1))); do
    assert_grep "event=stale child=$i .* offset=0x0 length=0x100000 reason=lost-contents" $tmpdir/syslog
  done
  release_connection
  alive $(cat $tmpdir/q.pid)
}

# outvote: child 0 the one good copy, children 1 and 2 memory, both
# restarted empty; vote-threshold=2.  They cannot be rebuilt (one
# current source), and every read of the data fails or returns it.
outvote ()
{
  rm -f $tmpdir/c0.img; truncate -s 1M $tmpdir/c0.img
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i memory 1M; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" vote-threshold=2 \
      reconnect-delay=1 reconnect-max-delay=1
  hold_connection "$q"
  write_data
  restart_empty 1 2
  nbdsh -u "$q" -c "
import time
bad = []
for _ in range(10):
    for g in (0, 3, 7, 15):
        try:
            d = h.pread(4096, g * 65536 + 8192)
        except nbd.Error:
            continue
        if d != bytes([0x41 + g]) * 4096:
            bad.append((g, d[:8]))
    try:
        d = h.pread(65536, 9 * 65536)
        if d != b'F' * 65536:
            bad.append((9, d[:8]))
    except nbd.Error:
        pass
    time.sleep(0.3)
assert not bad, 'reads returned the restarted children\'s data: %r' % bad[:4]
"
  cat $tmpdir/syslog
  for i in 1 2; do
    assert_grep "event=stale child=$i .* offset=0x0 length=0x100000 reason=lost-contents" $tmpdir/syslog
  done
  release_connection
  alive $(cat $tmpdir/q.pid)
}

for_each_form rebuild 2 1 2
for_each_form rebuild 3 2 3
for_each_form outvote
