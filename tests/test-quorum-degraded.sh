#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child unreachable at start-up: refused by default; with
# start-degraded=true the quorum serves from the others, and when the
# child appears everything is copied to it, since nothing it holds can
# be trusted (here it holds stale bytes the others never had).  A copy
# needs vote-threshold current children that agree: in the filter form
# the plugin is one of them only while a client is connected, so the
# child is copied to once one is.

source ./functions.sh
set -e
set -x
requires nbdsh --version

degraded ()
{
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  corrupt $tmpdir/c2.img 500000 'stale'
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  children="child=$(child_uri 1) child=$(child_uri 2)"

  expect_fail_start $tmpdir/log "${quorum_head[@]}" $children
  assert_grep 'cannot connect to child 2: .*\(see start-degraded\)' $tmpdir/log

  # Not enough children for the threshold even degraded.
  expect_fail_start $tmpdir/log "${quorum_head[@]}" $children start-degraded=true \
      vote-threshold=3
  assert_grep 'start-degraded=true: only 2 of 3 children are reachable, vote-threshold is 3' $tmpdir/log

  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" $children \
      start-degraded=true reconnect-max-delay=2
  q="nbd+unix:///?socket=$tmpdir/q.sock"
  nbdsh -u "$q" -c 'h.pwrite(b"\x07" * 4096, 0)' \
        -c 'assert h.pread(4096, 0) == b"\x07" * 4096'
  assert_grep "^nbdkit-quorum-$form warning event=down child=2 name=nbd\+unix:///\?socket=$tmpdir/c2.sock reason=unreachable\$" $tmpdir/syslog

  start_child 2 file $tmpdir/c2.img
  wait_for "event=resync-end" 10 grep -q 'event=resync-end child=2' $tmpdir/syslog
  if [ $form = filter ]; then
    assert_grep 'event=resync-end child=2 .* dirty=0x100000 copied=0x0$' $tmpdir/syslog
    rm -f $tmpdir/release
    nbdsh -u "$q" -c "
import os, time
while not os.path.exists('$tmpdir/release'):
    time.sleep(0.1)
" &
    holder=$!
    cleanup_fn kill_pid $holder
    wait_for "resync-end copied=0x100000" 20 \
        grep -q 'event=resync-end child=2 .* copied=0x100000$' $tmpdir/syslog
    touch $tmpdir/release
    wait $holder
  fi
  assert_grep 'event=resync-start child=2 .* dirty=0x100000$' $tmpdir/syslog
  assert_grep 'event=resync-end child=2 .* copied=0x100000$' $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c2.img
}

for_each_form degraded
