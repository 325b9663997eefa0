#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# No password and no key path reaches stderr, syslog or the report
# file, although libnbd's messages carry the raw URI and the key file's
# path: children with a password in their URI or a tls-psk-file= that
# cannot be parsed, read, used or connected to, over TCP loopback, at
# start-up, on every reconnection the supervisor tries, and when a
# working child's connection is lost.  In both forms.  (nbdkit -v
# itself echoes every parameter as given: those lines are left out.)

source ./functions.sh
set -e
set -x
requires nbdsh --version

free_port ()
{
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

printf 'alice:%s\n' 0123456789abcdef0123456789abcdef > $tmpdir/good-keys.psk
printf 'bob:%s\n' fedcba9876543210fedcba9876543210 > $tmpdir/wrong-keys.psk
chmod 600 $tmpdir/*.psk
secrets='hunter2|keys\.psk'

# Nothing in FILE matches $secrets, except nbdkit's own echo of the
# parameters (-v) and this script's trace (set -x, which the harness's
# functions write where their stderr goes).
no_secret ()
{
  grep -E -v -e ': config key=[a-z-]+, value=' -e '^\++ ' "$1" \
      > $tmpdir/filtered || :
  assert_no_grep "$secrets" $tmpdir/filtered
}

secrets_body ()
{
  local tport pport i
  for i in 0 1 2 3 4 5; do make_image $tmpdir/c$i.img 1M 0x33; done
  tport=$(free_port)
  pport=$(free_port)
  child0 file $tmpdir/c0.img
  start_nbdkit -P $tmpdir/c1.pid -i 127.0.0.1 -p $tport --tls=require \
      --tls-psk=$tmpdir/good-keys.psk file $tmpdir/c1.img
  start_nbdkit -P $tmpdir/c4.pid -i 127.0.0.1 -p $pport file $tmpdir/c4.img
  # Children 2, 3 and 5 are one TLS server under three export names
  # (nbdkit's file plugin serves any name), else they are duplicates.
  children=(
    child="nbd://alice:hunter2@127.0.0.1:notaport/"
    child="nbds://alice:hunter2@127.0.0.1:$tport/two?tls-psk-file=$tmpdir/missing-keys.psk"
    child="nbds://bob@127.0.0.1:$tport/three?tls-psk-file=$tmpdir/wrong-keys.psk"
    child="nbd://alice:hunter2@127.0.0.1:$pport/"
    child="nbds://alice@127.0.0.1:$tport/five?tls-psk-file=$tmpdir/good-keys.psk"
  )

  # Refused at start-up: the message names the child without secrets.
  expect_fail_start $tmpdir/log "${quorum_head[@]}" "${children[@]}"
  assert_grep 'child=nbd://alice:\*\*\*@127.0.0.1:notaport/: cannot connect to child 1: .*unable to parse URI: nbd://alice:\*\*\*@127.0.0.1:notaport/' $tmpdir/log
  no_secret $tmpdir/log

  # Daemonised (errors go to syslog), degraded: the supervisor keeps
  # trying the three unreachable children.
  rm -f $tmpdir/syslog $tmpdir/r.jsonl
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock -v --log=syslog \
      "${quorum_head[@]}" "${children[@]}" start-degraded=true \
      vote-threshold=2 report=$tmpdir/r.jsonl 2> $tmpdir/stderr
  for i in 1 2 3; do
    wait_for "reconnection of child $i" 30 \
        grep -q "child $i (.*): reconnect failed" $tmpdir/stderr
  done
  assert_grep "child 1 \(nbd://alice:\*\*\*@127.0.0.1:notaport/\): unreachable at start-up: .*unable to parse URI: nbd://alice:\*\*\*@127.0.0.1:notaport/" $tmpdir/syslog
  assert_grep "child 2 \(nbds://alice:\*\*\*@127.0.0.1:$tport/two\?tls-psk-file=\*\*\*\): unreachable at start-up: .*\*\*\*: No such file" $tmpdir/syslog
  assert_grep "child 2 .*: reconnect failed: .*username alice:\*\*\*|child 2 .*: reconnect failed: .*\*\*\*: No such file" $tmpdir/stderr
  nbdsh -u "nbd+unix:///?socket=$tmpdir/q.sock" -c 'assert h.pread(4096, 0) == b"\x33" * 4096'

  # A working child with a password loses its connection, and cannot
  # be reached again for a while.
  kill_pid "$(cat $tmpdir/c4.pid)"
  wait_for "lost connection of child 4" 30 \
      grep -q "child 4 (nbd://alice:\*\*\*@127.0.0.1:$pport/): connection lost" $tmpdir/syslog
  wait_for "reconnection of child 4" 30 \
      grep -q "child 4 (.*): reconnect failed" $tmpdir/stderr
  # A write it misses: it is resynchronised when it comes back, from
  # the two children that took it (in the filter one is the plugin,
  # read from the background only while a client is connected).
  nbdsh -u "nbd+unix:///?socket=$tmpdir/q.sock" -c 'h.pwrite(b"\x44" * 4096, 0)'
  hold_connection "nbd+unix:///?socket=$tmpdir/q.sock"
  start_nbdkit -P $tmpdir/c4.pid -i 127.0.0.1 -p $pport file $tmpdir/c4.img
  wait_for "child 4 resynchronised" 60 \
      grep -q 'event=resync-end child=4 .* dirty=0x0 ' $tmpdir/syslog
  release_connection
  kill_pid "$(cat $tmpdir/q.pid)"
  rm -f $tmpdir/q.pid $tmpdir/q.sock   # nbdkit 1.32 leaves it
  cmp -n 4096 $tmpdir/c0.img $tmpdir/c4.img

  cat $tmpdir/syslog
  no_secret $tmpdir/stderr
  no_secret $tmpdir/syslog
  no_secret $tmpdir/r.jsonl
  assert_grep '"event":"down","child":2,"child_name":"nbds://alice:\*\*\*@' $tmpdir/r.jsonl
}

for_each_form secrets_body
