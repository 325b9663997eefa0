#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# control= at start-up: a path that is a regular file, a directory, a
# symlink or a socket a server listens on is refused with a message
# naming control= and left as it was; a stale socket (nobody listens)
# is replaced; a relative path is made absolute; the socket is there
# for the --run command, removed when nbdkit exits, and not left behind
# by a start-up that fails later; and without control= the quorum listens on
# nothing but its export.  In both forms.

source ./functions.sh
set -e
set -x
requires python3 -c 'import socket'
requires_control

# listening_unix PID: the paths of the Unix sockets PID listens on.
listening_unix ()
{
  python3 - "$1" <<'PY'
import os, sys
pid = sys.argv[1]
inodes = set()
for fd in os.listdir("/proc/%s/fd" % pid):
    try:
        t = os.readlink("/proc/%s/fd/%s" % (pid, fd))
    except OSError:
        continue
    if t.startswith("socket:["):
        inodes.add(t[8:-1])
for l in open("/proc/net/unix").read().splitlines()[1:]:
    f = l.split()
    # Flags 00010000: accepting connections.
    if f[6] in inodes and int(f[3], 16) & 0x10000:
        print(f[7] if len(f) > 7 else "(unnamed)")
PY
}

start ()
{
  local i
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  children="child=$(child_uri 1) child=$(child_uri 2)"

  # A regular file, a directory, a symlink to a file: refused, intact.
  echo precious > $tmpdir/file
  expect_fail_start $tmpdir/log -U - "${quorum_head[@]}" $children \
      control=$tmpdir/file
  assert_grep "control=$tmpdir/file: exists and is not a socket: refusing to replace it; remove it or choose another path" $tmpdir/log
  [ "$(cat $tmpdir/file)" = precious ]
  mkdir -p $tmpdir/dir
  expect_fail_start $tmpdir/log -U - "${quorum_head[@]}" $children \
      control=$tmpdir/dir
  assert_grep "control=$tmpdir/dir: exists and is not a socket" $tmpdir/log
  test -d $tmpdir/dir
  ln -sf $tmpdir/file $tmpdir/link
  expect_fail_start $tmpdir/log -U - "${quorum_head[@]}" $children \
      control=$tmpdir/link
  assert_grep "control=$tmpdir/link: exists and is not a socket" $tmpdir/log
  [ "$(cat $tmpdir/file)" = precious ]
  test -L $tmpdir/link

  # A socket a server listens on (child 1's): refused, still served.
  expect_fail_start $tmpdir/log -U - "${quorum_head[@]}" $children \
      control=$tmpdir/c1.sock
  assert_grep "control=$tmpdir/c1.sock: in use: a server listens on it" $tmpdir/log
  nbdinfo --size "$(child_uri 1)" | grep -qx 1048576

  # Bad values.
  expect_fail_start $tmpdir/log -U - "${quorum_head[@]}" $children control=
  assert_grep "control=: empty path" $tmpdir/log
  expect_fail_start $tmpdir/log -U - "${quorum_head[@]}" $children \
      control=/$(printf 'x%.0s' $(seq 120))
  assert_grep "control=/x+: path too long for a Unix socket" $tmpdir/log

  # A stale socket (bound, then its server gone): replaced.  A
  # relative path is where nbdkit was started.
  python3 -c "import socket; s = socket.socket(socket.AF_UNIX); s.bind('$tmpdir/ctl')"
  test -S $tmpdir/ctl
  (cd $tmpdir &&
     quorum -U - "${quorum_head[@]}" $children control=ctl \
         --run "$ctl $tmpdir/ctl status > $tmpdir/status.txt")
  assert_grep "^ +State : healthy$" $tmpdir/status.txt
  # Removed when nbdkit exits.
  refute test -e $tmpdir/ctl

  # A start-up that fails later (a child unreachable) leaves no socket.
  expect_fail_start $tmpdir/log -U - "${quorum_head[@]}" $children \
      child="nbd+unix:///?socket=$tmpdir/none.sock" control=$tmpdir/ctl
  refute test -e $tmpdir/ctl

  # Without control= nothing listens but the export.
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      $children
  listening_unix $(cat $tmpdir/q.pid) > $tmpdir/listening
  cat $tmpdir/listening
  [ "$(cat $tmpdir/listening)" = "$tmpdir/q.sock" ]
  kill_pid $(cat $tmpdir/q.pid)
  rm -f $tmpdir/q.pid $tmpdir/q.sock
  # And with it, the export and the control socket.
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      $children control=$tmpdir/ctl
  listening_unix $(cat $tmpdir/q.pid) | sort > $tmpdir/listening
  cat $tmpdir/listening
  [ "$(cat $tmpdir/listening)" = "$(printf '%s\n' $tmpdir/ctl $tmpdir/q.sock | sort)" ]
  # A second quorum on the same control= is refused: in use.
  expect_fail_start $tmpdir/log -U - "${quorum_head[@]}" $children \
      control=$tmpdir/ctl
  assert_grep "control=$tmpdir/ctl: in use" $tmpdir/log
  "$ctl" $tmpdir/ctl status > /dev/null
}

for_each_form start
