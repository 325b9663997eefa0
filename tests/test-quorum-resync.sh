#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child that dies (kill -9) is marked down, the export keeps serving
# and writing; when it comes back it is reconnected and the regions
# written meanwhile are copied to it before it votes on them again.

source ./functions.sh
set -e
set -x
requires nbdsh --version

for i in 0 1 2; do truncate -s 4M $tmpdir/c$i.img; start_child $i file $tmpdir/c$i.img; done
start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock $QUORUM_PLUGIN \
    child="$(child_uri 0)" child="$(child_uri 1)" child="$(child_uri 2)" \
    reconnect-delay=1 report=$tmpdir/r.jsonl
q="nbd+unix:///?socket=$tmpdir/q.sock"

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
cat $tmpdir/syslog
# 5 granules of 64 KiB were written while it was down.
assert_grep 'event=resync-start child=2 .* dirty=0x50000$' $tmpdir/syslog
assert_grep 'event=resync-end child=2 .* dirty=0x0 copied=0x50000$' $tmpdir/syslog
cmp $tmpdir/c0.img $tmpdir/c2.img
cmp $tmpdir/c1.img $tmpdir/c2.img
nbdsh -u "$q" -c 'assert h.pread(4096, 4 * 1024 * 1024 - 4096) == b"\x22" * 4096'
