#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# nbdkit-quorum-ctl replace N --cancel: a replace whose new server died
# and never comes back is cancelled: the new server is forgotten (not
# reconnected when it is started again), child N keeps serving as
# before (writes reach it, reads are right), status shows no
# replacement (event=replace-cancel).  Cancelled while the new server
# is up, its connection closes and it takes no more writes.  With
# state= the membership stays the old one: a restart with the old URI
# does not take child N for a new disk.  A replace in progress across
# a restart is forgotten: child N is the old server, current, and a
# replace can be begun again.  Refused when no replace is in progress,
# for another child than the one being replaced, and for an option it
# does not know.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires nbdcopy --version
requires python3 -c 'import json'
requires nbdkit --filter=log null --dump-plugin
requires_control
q="nbd+unix:///?socket=$tmpdir/q.sock"
M=1048576
st=$tmpdir/state

qstart ()
{
  rm -f $tmpdir/q.sock
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      reconnect-delay=1 reconnect-max-delay=1 control=$tmpdir/ctl \
      resync-rate=1 state=$st "$@"
}

# unanswered: nothing answers on the control socket (a quorum that
# exited may still hold it for a moment while its threads end).
unanswered ()
{
  ! "$ctl" --timeout=2 $tmpdir/ctl status > /dev/null 2>&1
}

qrestart ()
{
  kill_pid $(cat $tmpdir/q.pid)
  wait_for "the quorum's exit" 30 unanswered
  rm -f $tmpdir/q.pid $tmpdir/syslog
  qstart
}

# rebuilding: a replace of child 2 by child 3 is under way.
rebuilding ()
{
  "$ctl" $tmpdir/ctl replace 2 "$(child_uri 3)"
  quiet=1 wait_for "rebuild progress" 30 status_check \
      "r is not None and r['state'] == 'rebuilding'" \
      "r['resync']['bytes_done'] > 0"
}

cancel ()
{
  local i
  for i in 0 1 2 3; do rm -f $tmpdir/c$i.img; truncate -s 16M $tmpdir/c$i.img; done
  rm -f $st $tmpdir/c3.log $tmpdir/c3b.log
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 file $tmpdir/c2.img
  start_child 3 --filter=log file $tmpdir/c3.img logfile=$tmpdir/c3.log
  qstart
  head -c 16M /dev/urandom > $tmpdir/data
  nbdcopy $tmpdir/data "$q"
  nbdsh -u "$q" -c 'h.flush()'

  refused replace 2 --cancel "replace 2 --cancel: no replace is in progress"

  # The new server dies and never comes back.
  rebuilding
  stop_child 3
  quiet=1 wait_for "replacement down" 30 status_check "r['state'] == 'down'"
  refused replace 1 --cancel "child 2 is being replaced, not child 1"
  refused replace 2 --cancle "'--cancle': unknown option: expected the URI of the new server, or --cancel"
  "$ctl" $tmpdir/ctl replace 2 --cancel | tee $tmpdir/out
  assert_grep "^child 2: replace cancelled: .*c3\.sock disconnected, child 2 serves as before" $tmpdir/out
  grep -qF "event=replace-cancel child=2 name=$(child_uri 2) new=$(child_uri 3)" $tmpdir/syslog
  status_check "r is None" "c[2]['name'] == '$(child_uri 2)'" \
      "c[2]['state'] == 'up'" "all(x['stale_bytes'] == 0 for x in c)" \
      "q['state'] == 'healthy'"
  refused replace 2 --cancel "no replace is in progress"
  "$ctl" $tmpdir/ctl replace 2 --cancel --json > $tmpdir/out || true
  assert_grep '"ok":false' $tmpdir/out
  # Child 2 serves as before.
  nbdsh -u "$q" -c 'h.pwrite(b"\xaa" * 65536, 0)' -c 'h.flush()' \
      -c 'assert h.pread(65536, 0) == b"\xaa" * 65536' \
      -c "assert h.pread(65536, 8 * $M) == open('$tmpdir/data', 'rb').read()[8 * $M:9 * $M][:65536]"
  region_is $tmpdir/c2.img 0 65536 0xaa
  # Forgotten: started again, nothing connects to it (reconnect-delay=1
  # would have tried three times).
  start_child 3 --filter=log file $tmpdir/c3.img logfile=$tmpdir/c3b.log
  refute try_for 3 grep -q "Connect " $tmpdir/c3b.log

  # Cancelled while the new server is up: its connection closes, and it
  # takes no more writes.
  rebuilding
  "$ctl" $tmpdir/ctl replace 2 --cancel --json > $tmpdir/out
  assert_grep '"ok":true,"command":"replace","child":2,"cancelled":true' $tmpdir/out
  wait_for "the new server's disconnect" 20 sh -c "[ \$(grep -c 'Connect ' $tmpdir/c3b.log) -ge 1 ] && [ \$(grep -c 'Connect ' $tmpdir/c3b.log) -eq \$(grep -c 'Disconnect ' $tmpdir/c3b.log) ]"
  status_check "r is None" "all(x['stale_bytes'] == 0 for x in c)"
  nbdsh -u "$q" -c 'h.pwrite(b"\xbb" * 65536, 65536)' -c 'h.flush()'
  region_is $tmpdir/c2.img 65536 65536 0xbb
  refute region_is $tmpdir/c3.img 65536 65536 0xbb

  # state= kept the old membership: restarted with the old URI, child 2
  # is not a new disk.
  qrestart
  status_check "r is None" "c[2]['name'] == '$(child_uri 2)'" \
      "c[2]['state'] == 'up'" "all(x['stale_bytes'] == 0 for x in c)"
  assert_no_grep "reason=new-disk" $tmpdir/syslog

  # A replace in progress across a restart: forgotten, child 2 is the
  # old server and current; a replace can be begun again.
  rebuilding
  qrestart
  status_check "r is None" "c[2]['name'] == '$(child_uri 2)'" \
      "c[2]['state'] == 'up'" "all(x['stale_bytes'] == 0 for x in c)"
  assert_no_grep "reason=new-disk|event=replace" $tmpdir/syslog
  nbdsh -u "$q" -c 'assert h.pread(65536, 65536) == b"\xbb" * 65536'
  rebuilding
  "$ctl" $tmpdir/ctl replace 2 --cancel
  status_check "r is None"
}

for_each_form cancel
