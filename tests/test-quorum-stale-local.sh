#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A write that fails on child 0 (in the filter form the plugin below
# the filter, with the error filter between them) but succeeds on
# enough other children is acknowledged, and child 0 is stale there:
# a read-pattern=fifo read, which asks child 0 first, returns the new
# data, never child 0's old copy; and child 0 is no source when
# another child missed the write and is copied to.  (Issue 12, 1.)

source ./functions.sh
set -e
set -x
requires nbdsh --version

q="nbd+unix:///?socket=$tmpdir/q.sock"

# fifo: the write acknowledged by children 1 and 2, read back.
fifo ()
{
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  touch $tmpdir/trigger0
  child0 --filter=error file $tmpdir/c0.img error-pwrite=EIO \
         error-pwrite-rate=100% error-pwrite-file=$tmpdir/trigger0
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  quorum -U - "${quorum_head[@]}" child="$(child_uri 1)" \
         child="$(child_uri 2)" read-pattern=fifo \
         --run "nbdsh -u \"\$uri\" -c '
h.pwrite(b\"A\" * 512, 0)
d = h.pread(8, 0)
assert d == b\"A\" * 8, \"fifo read after a write child 0 failed: %r\" % d
d = h.pread(65536, 0)
assert d == b\"A\" * 512 + bytes(65536 - 512), d[:16]
'"
  assert_grep "event=bad type=write child=0 .* error=EIO" $tmpdir/syslog
  assert_grep "event=stale child=0 .* reason=write-failed" $tmpdir/syslog
  region_is $tmpdir/c0.img 0 512 0
  rm -f $tmpdir/trigger0
}

# source: four children, vote-threshold=2.  Child 3 is down while a
# write fails on child 0 and succeeds on 1 and 2 (then flushed there).
# 1 and 2 go down, 3 comes back: child 0 is the only child up that is
# current elsewhere, and it must not give 3 its old copy of the
# written region, nor vote with it there (the two old copies would win
# a read).  When 1 and 2 are back, 3 gets the new data.
source_child0 ()
{
  local r=$((3 * 65536))
  for i in 0 1 2 3; do rm -f $tmpdir/c$i.img; make_image $tmpdir/c$i.img 1M 0x5a; done
  touch $tmpdir/trigger0
  child0 --filter=error file $tmpdir/c0.img error-pwrite=EIO \
         error-pwrite-rate=100% error-pwrite-file=$tmpdir/trigger0
  for i in 1 2 3; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" child="$(child_uri 3)" \
      vote-threshold=2 reconnect-delay=1 reconnect-max-delay=1
  hold_connection "$q"

  kill -9 $(cat $tmpdir/c3.pid)
  nbdsh -u "$q" -c "h.pwrite(b'W' * 65536, $r)" -c 'h.flush()'
  wait_for "event=down" 10 grep -q 'event=down child=3' $tmpdir/syslog
  assert_grep "event=bad type=write child=0 .* error=EIO" $tmpdir/syslog
  region_is $tmpdir/c1.img $r 65536 0x57
  region_is $tmpdir/c0.img $r 65536 0x5a

  for i in 1 2; do kill -9 $(cat $tmpdir/c$i.pid); done
  wait_for "event=down" 10 grep -q 'event=down child=2' $tmpdir/syslog
  wait_for "event=down" 10 grep -q 'event=down child=1' $tmpdir/syslog
  rm -f $tmpdir/c3.sock
  start_child 3 file $tmpdir/c3.img
  wait_for "event=up" 10 grep -q 'event=up child=3' $tmpdir/syslog
  # Time for a copy from child 0 alone to happen, if it were going to.
  try_for 5 grep -q 'event=resync-end child=3' $tmpdir/syslog || :
  # With only child 0 current, the region cannot be read.
  nbdsh -u "$q" -c "
try:
    d = h.pread(4096, $r)
    assert False, 'read with one current copy of two returned %r' % d[:8]
except nbd.Error:
    pass
"

  for i in 1 2; do rm -f $tmpdir/c$i.sock; start_child $i file $tmpdir/c$i.img; done
  wait_for "child 3's copy of the write" 30 region_is $tmpdir/c3.img $r 65536 0x57
  nbdsh -u "$q" -c "assert h.pread(65536, $r) == b'W' * 65536"
  cat $tmpdir/syslog
  release_connection
  alive $(cat $tmpdir/q.pid)
}

for_each_form fifo
for_each_form source_child0
