#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# wait-for=threshold with read-pattern=fifo: a write is acknowledged
# while a child that is slow to write still has it in flight; a read of
# the same bytes that asks that child first waits until it wrote them,
# and never returns what was there before the acknowledged write.  The
# slow child is child 0 in the plugin form (asked first); in the filter
# form child 0 is the plugin, never late, and child 1 is the slow one.

source ./functions.sh
set -e
set -x
requires nbdsh --version
q="nbd+unix:///?socket=$tmpdir/q.sock"

fifo_late ()
{
  local i
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  case $form in
    plugin) child0 --filter=delay file $tmpdir/c0.img delay-write=2
            start_child 1 file $tmpdir/c1.img ;;
    filter) child0 file $tmpdir/c0.img
            start_child 1 --filter=delay file $tmpdir/c1.img delay-write=2 ;;
  esac
  start_child 2 file $tmpdir/c2.img
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      wait-for=threshold read-pattern=fifo
  nbdsh -u "$q" -c '
for i in range(4):
    d = bytes([0x41 + i]) * 4096
    h.pwrite(d, i * 65536)
    got = h.pread(4096, i * 65536)
    assert got == d, "read %d returned %r, written %r" % (i, got[:4], d[:4])
'
  images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
}

for_each_form fifo_late
