#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# nbdkit-quorum-ctl fail N and return N: a child taken out of service
# is down with reason "failed", status says "failed", it is not
# reconnected while failed, writes go on without it (read back right
# throughout), and once returned it is reconnected at once and
# resynchronised: the images are equal.  A fail that would leave fewer
# than vote-threshold children in service is refused, and so is a fail
# of the filter's plugin, a return of a child that is not failed and a
# child that does not exist.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json'
requires_control
q="nbd+unix:///?socket=$tmpdir/q.sock"

fail_return ()
{
  local i
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 4M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      reconnect-delay=1 reconnect-max-delay=1 control=$tmpdir/ctl
  nbdsh -u "$q" -c 'h.pwrite(b"\x11" * 65536, 0)'

  refused fail 3 "expected the index of a child, from 0 to 2"
  refused fail x "expected the index of a child"
  refused fail "expected the index of a child"
  refused return 1 "child 1 is not failed"

  "$ctl" "$tmpdir/ctl" fail 1
  status_check "c[1]['state'] == 'failed'" "q['state'] == 'degraded'" \
      "c[0]['state'] == 'up' and c[2]['state'] == 'up'"
  "$ctl" "$tmpdir/ctl" status | grep -E "^ +1 +failed "
  assert_grep "event=fail child=1 " $tmpdir/syslog
  assert_grep "event=down child=1 .*reason=failed" $tmpdir/syslog
  refused fail 1 "child 1 is failed already"
  # Two in service, vote-threshold=2: no more may go.
  refused fail 2 "would leave 1 child in service (up or resyncing), fewer than vote-threshold=2"
  if [ $form = filter ]; then
    refused fail 0 "child 0 is the filter's plugin, which cannot be taken out of service"
  else
    refused fail 0 "fewer than vote-threshold=2"
  fi

  # Written while it is out: read back right, not on child 1.
  nbdsh -u "$q" -c 'h.pwrite(b"\x22" * 65536, 0)' \
        -c 'h.pwrite(b"\x23" * 100000, 1000000)' \
        -c 'assert h.pread(65536, 0) == b"\x22" * 65536' \
        -c 'assert h.pread(100000, 1000000) == b"\x23" * 100000'
  region_is $tmpdir/c1.img 0 65536 0x11
  region_is $tmpdir/c2.img 0 65536 0x22
  # Not reconnected while failed (reconnect-delay=1).
  sleep 3
  status_check "c[1]['state'] == 'failed'" "c[1]['stale_bytes'] == 3 * 65536"
  assert_no_grep "event=up child=1" $tmpdir/syslog

  # Back: at once, resynchronised (in the filter form a client lends
  # the plugin, a source).
  [ $form = filter ] && hold_connection "$q"
  "$ctl" "$tmpdir/ctl" return 1
  assert_grep "event=return child=1 " $tmpdir/syslog
  quiet=1 wait_for "child 1 up" 30 status_check "c[1]['state'] == 'up'"
  [ $form = filter ] && release_connection
  assert_grep "event=resync-end child=1 .*copied=0x30000" $tmpdir/syslog
  status_check "q['state'] == 'healthy'" \
      "all(x['stale_bytes'] == 0 for x in c)"
  nbdsh -u "$q" -c 'assert h.pread(65536, 0) == b"\x22" * 65536'
  images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  refused return 1 "child 1 is not failed"
}

for_each_form fail_return
