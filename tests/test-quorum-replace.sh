#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# nbdkit-quorum-ctl replace N URI under a checked workload: the new
# server is rebuilt in the background (status: the replacement,
# rebuilding, with progress; reports: replace-start, resync-progress)
# while child N keeps voting; killed mid-rebuild and started again, the
# rebuild continues from what it had flushed; then it takes child N's
# place (replace-end), the old server's connection is closed (its log
# filter sees the disconnect) and it takes no more writes, every read
# of the workload was right, and the new image equals the others.  A
# sparse export is rebuilt mostly by zeroing (resync-end zeroed=).
# Refused: a server of another size (both sizes said), a disk that is
# a child already, the filter's plugin, a second replace meanwhile.
# In both forms.

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

replace ()
{
  local i
  for i in 0 1 2 3; do rm -f $tmpdir/c$i.img; truncate -s 16M $tmpdir/c$i.img; done
  rm -f $tmpdir/c2.log
  truncate -s 8M $tmpdir/c4.img
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 --filter=log file $tmpdir/c2.img logfile=$tmpdir/c2.log
  start_child 3 file $tmpdir/c3.img
  start_child 4 file $tmpdir/c4.img
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      reconnect-delay=1 reconnect-max-delay=1 control=$tmpdir/ctl \
      resync-rate=2
  head -c 12M /dev/urandom > $tmpdir/data
  nbdcopy $tmpdir/data "$q"
  nbdsh -u "$q" -c 'h.flush()'

  refused replace 2 "$(child_uri 4)" "has 8388608 bytes, the export 16777216: the sizes must be the same"
  refused replace 1 "$(child_uri 2)" "is child 2 already"
  refused replace 2 "nbd+unix:///?socket=$tmpdir/none.sock" "cannot connect to"
  if [ $form = filter ]; then
    refused replace 0 "$(child_uri 3)" "child 0 is the filter's plugin, which cannot be replaced"
  fi
  status_check "r is None"

  # The workload from 8 MiB on (its blocks every 64 KiB), the filter's
  # plugin lent meanwhile.
  start_workload "$q" 30 --from $((8 * M))
  workload_more 50
  "$ctl" "$tmpdir/ctl" replace 2 "$(child_uri 3)"
  grep -qF "event=replace-start child=2 name=$(child_uri 2) new=$(child_uri 3)" $tmpdir/syslog
  refused replace 1 "$(child_uri 4)" "child 2 is being replaced already"
  quiet=1 wait_for "rebuild progress" 30 status_check \
      "r['state'] == 'rebuilding' and r['resync']['bytes_done'] >= 2 * $M"
  status_check "c[2]['state'] == 'up'" "c[2]['name'] == '$(child_uri 2)'" \
      "r['name'] == '$(child_uri 3)'" "r['index'] == 3" \
      "r['resync']['bytes_total'] == 16 * $M" "r['stale_bytes'] > 0"
  "$ctl" "$tmpdir/ctl" status | tee $tmpdir/status.txt
  grep -E "^ +replacement: .*c3\.sock, rebuilding, .* stale, rebuilt .* of 16 MiB \([0-9]+%\)" $tmpdir/status.txt
  assert_grep "event=resync-progress child=3 .*percent=10 " $tmpdir/syslog

  # Killed mid-rebuild, back: it continues.
  stop_child 3
  quiet=1 wait_for "replacement down" 30 status_check "r['state'] == 'down'"
  workload_more 20
  start_child 3 file $tmpdir/c3.img
  wait_for "second resync-start" 30 sh -c "[ \$(grep -c 'event=resync-start child=3 ' $tmpdir/syslog) -ge 2 ]"
  grep "event=resync-start child=3 " $tmpdir/syslog | tail -1 > $tmpdir/second
  python3 -c "
import re
d = int(re.search('dirty=0x([0-9a-f]+)', open('$tmpdir/second').read()).group(1), 16)
assert 0 < d < 16 * $M, d
print('continued with %d of %d bytes stale' % (d, 16 * $M))"
  assert_no_grep "event=replace-end" $tmpdir/syslog
  "$ctl" "$tmpdir/ctl" rate --resync=0
  wait_for "replace-end" 60 grep -q "event=replace-end" $tmpdir/syslog
  grep -qF "event=replace-end child=2 name=$(child_uri 3) old=$(child_uri 2)" $tmpdir/syslog
  workload_more 20
  stop_workload

  # The old server saw its connections close; the new one is child 2.
  wait_for "old child disconnected" 20 sh -c "[ \$(grep -c 'Connect ' $tmpdir/c2.log) -eq \$(grep -c 'Disconnect ' $tmpdir/c2.log) ]"
  quiet=1 wait_for "child 2 up" 20 status_check "c[2]['state'] == 'up'"
  status_check "r is None" "c[2]['name'] == '$(child_uri 3)'" \
      "all(x['stale_bytes'] == 0 for x in c)" "q['state'] == 'healthy'"
  nbdsh -u "$q" -c 'h.pwrite(b"\xee" * 65536, 0)' -c 'h.flush()'
  region_is $tmpdir/c3.img 0 65536 0xee
  refute region_is $tmpdir/c2.img 0 65536 0xee
  images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c3.img
}

# A sparse export, 1% data: zeroed, not copied.
sparse ()
{
  local i
  for i in 0 1 2 3; do rm -f $tmpdir/c$i.img; truncate -s 64M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  for i in 1 2 3; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" control=$tmpdir/ctl
  nbdsh -u "$q" -c '
import os
for i in range(10):
    h.pwrite(os.urandom(65536), i * 6 * 1048576)
h.flush()'
  [ $form = filter ] && hold_connection "$q"
  "$ctl" "$tmpdir/ctl" replace 2 "$(child_uri 3)"
  wait_for "replace-end" 60 grep -q "event=replace-end" $tmpdir/syslog
  [ $form = filter ] && release_connection
  grep "event=resync-end child=3 " $tmpdir/syslog | tee $tmpdir/end
  python3 -c "
import re
s = open('$tmpdir/end').read()
z = int(re.search('zeroed=0x([0-9a-f]+)', s).group(1), 16)
c = int(re.search('copied=0x([0-9a-f]+)', s).group(1), 16)
assert c == 64 * 1048576, c
print('read and copied: %d bytes, zeroed: %d' % (c - z, z))
# Only the data is read: its 640 KiB, not the 1 MiB runs around it.
assert c - z <= 1048576, (c, z)"
  images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c3.img
}

for_each_form replace
for_each_form sparse
