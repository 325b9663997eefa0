#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# control=SOCKET and nbdkit-quorum-ctl status: the JSON reply checked
# field by field against the state the test makes (known I/O; a child
# killed -9, written around while down, restarted slow enough to be
# seen resyncing, and back in sync), and the human form showing the
# same.  The socket is mode 0600 and gone once nbdkit exits.  The
# state object without state= and with it (the file, its granule, an
# fdatasync for the first write to a granule and none for the next,
# a write failed everywhere seen unsettled).
# In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json'
requires_control
version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' \
              "$abs_top_builddir/config.h")
q="nbd+unix:///?socket=$tmpdir/q.sock"

# rx STRING: STRING as an extended regexp matching itself.
rx ()
{
  printf '%s' "$1" | sed 's/[][\.*^$?+(){}|]/\\&/g'
}

# human_shows REGEXP...: the human form of status matches every one.
human_shows ()
{
  local re
  "$ctl" "$tmpdir/ctl" status > "$tmpdir/status.txt"
  for re in "$@"; do
    grep -E -q -- "$re" "$tmpdir/status.txt" || return 1
  done
}

control ()
{
  local gr=65536 i
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 4M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      reconnect-delay=1 reconnect-max-delay=1 control=$tmpdir/ctl \
      resync-rate=1

  # A socket, mode 0600, owned by us.
  test -S $tmpdir/ctl
  [ "$(stat -c %a:%u $tmpdir/ctl)" = "600:$(id -u)" ]

  if [ $form = filter ]; then name0=plugin; local0=True
  else name0=$(child_uri 0); local0=False; fi
  status_check "s['ok'] is True" "s['command'] == 'status'" \
      "q['version'] == '$version'" "q['form'] == '$form'" \
      "q['size'] == 4 * 1024 * 1024" "q['children'] == 3" \
      "q['children_up'] == 3" "q['vote_threshold'] == 2" \
      "q['read_pattern'] == 'quorum'" "q['vote_block_size'] == 4096" \
      "q['granule_size'] == $gr" "q['export_name'] == ''" \
      "q['state'] == 'healthy'" "len(c) == 3" \
      "[x['index'] for x in c] == [0, 1, 2]" \
      "c[0]['name'] == '$name0'" "c[0]['local'] is $local0" \
      "c[1]['name'] == '$(child_uri 1)'" "c[1]['local'] is False" \
      "c[2]['name'] == '$(child_uri 2)'" \
      "all(x['state'] == 'up' for x in c)" \
      "all(x['stale_bytes'] == 0 for x in c)" \
      "all(x['resync'] is None for x in c)" \
      "all(x['last_error'] is None for x in c)" \
      "all(x[k] == 0 for x in c for k in ('reads', 'writes', 'bad_reads', 'errors', 'timeouts', 'bytes_repaired'))" \
      "sorted(st) == ['file', 'granule', 'syncs', 'unsettled_bytes']" \
      "st['file'] is None" "st['granule'] is None" "st['syncs'] == 0" \
      "st['unsettled_bytes'] == 0"

  # Known I/O: each child reads once and writes twice.
  nbdsh -u "$q" -c 'h.pwrite(b"\x11" * 4096, 0)' \
        -c 'h.pwrite(b"\x12" * 4096, 8192)' \
        -c 'assert h.pread(4096, 0) == b"\x11" * 4096'
  status_check "all(x['reads'] == 1 and x['writes'] == 2 for x in c)" \
      "all(x['bad_reads'] + x['errors'] + x['timeouts'] == 0 for x in c)"

  # Child 2 dies; 4 granules are written while it is down: 0, 2, and
  # 15 and 16 (one write across them).
  kill -9 $(cat $tmpdir/c2.pid)
  quiet=1 wait_for "child 2 down" 20 status_check "c[2]['state'] == 'down'"
  nbdsh -u "$q" -c 'h.pwrite(b"\x21" * 4096, 0)' \
        -c 'h.pwrite(b"\x22" * 4096, 2 * 65536)' \
        -c 'h.pwrite(b"\x23" * 100000, 1000000)' \
        -c 'assert h.pread(100000, 1000000) == b"\x23" * 100000'
  status_check "q['state'] == 'degraded'" "q['children_up'] == 2" \
      "c[2]['state'] == 'down'" "c[2]['stale_bytes'] == 4 * $gr" \
      "c[0]['stale_bytes'] == 0 and c[1]['stale_bytes'] == 0" \
      "c[2]['resync'] is None" \
      "c[2]['writes'] == 2 and c[2]['reads'] == 1" \
      "all(x['writes'] == 5 and x['reads'] == 2 for x in c[:2])" \
      "c[2]['last_error']['type'] == 'down'" \
      "c[2]['last_error']['error'] == 'connection-lost'" \
      "c[2]['last_error']['time'].endswith('Z')" \
      "abs(c[2]['last_error']['unix_time'] - $(date +%s)) < 60" \
      "c[0]['last_error'] is None and c[1]['last_error'] is None"
  human_shows "^ +State : degraded$" "^ +Children : 3 \(2 up\)$" \
      "^ +Version : nbdkit-quorum $version \($form\)$" \
      "^ +Size : 4194304 \(4 MiB\)$" "^ +Vote threshold : 2$" \
      "^ +2 +down +256 KiB +1 +2 +0 +0 +0 +0 B +$(rx "$(child_uri 2)")$" \
      "^ +1 +up +0 B +2 +5 +0 +0 +0 +0 B +$(rx "$(child_uri 1)")$" \
      "last error: [-0-9T:.]+Z down: connection-lost$" \
      "^ +State file : none \(in memory only\)$" "^ +Unsettled : 0 B$" ||
    { cat $tmpdir/status.txt; exit 1; }

  # Back, writing slowly (2 s a write): the 3 runs it is sent are
  # seen being copied (one at a time: at resync-rate=1 a resync has one
  # run in flight, resync-copy.c).  In the filter form a client is connected
  # meanwhile: a copy needs vote-threshold current sources, and the
  # plugin is one only while a client lends it.
  if [ $form = filter ]; then
    rm -f $tmpdir/release
    nbdsh -u "$q" -c "
import os, time
while not os.path.exists('$tmpdir/release'):
    time.sleep(0.1)
" &
    holder=$!
    cleanup_fn kill_pid $holder
  fi
  rm -f $tmpdir/c2.sock
  start_child 2 --filter=delay file $tmpdir/c2.img delay-write=2
  quiet=1 wait_for "a resync with progress" 30 status_check \
      "c[2]['state'] == 'resyncing'" \
      "c[2]['resync']['bytes_done'] > 0"
  status_check "q['state'] == 'degraded'" \
      "c[2]['resync']['bytes_total'] == 4 * $gr" \
      "c[2]['resync']['bytes_done'] % $gr == 0" \
      "c[2]['resync']['bytes_done'] <= 4 * $gr" \
      "c[2]['stale_bytes'] <= 4 * $gr - c[2]['resync']['bytes_done']" \
      "c[2]['resync']['rate'] > 0" \
      "c[2]['resync']['elapsed_seconds'] >= 0" \
      "c[2]['resync']['eta_seconds'] is None or c[2]['resync']['eta_seconds'] >= 1 or c[2]['stale_bytes'] == 0"
  # Two writes of 2 s are still to go: time enough to see it.
  human_shows "^ +State : degraded$" \
      "^ +2 +resyncing +[0-9]+ KiB +" \
      "^ +resync: [0-9]+ KiB of 256 KiB copied \([0-9]+%\), [0-9.]+ [KM]?i?B/s" ||
    { cat $tmpdir/status.txt; exit 1; }

  # In sync: clean, everything copied once, the images equal.
  quiet=1 wait_for "child 2 up" 30 status_check "c[2]['state'] == 'up'"
  if [ $form = filter ]; then
    touch $tmpdir/release
    wait $holder
  fi
  status_check "q['state'] == 'healthy'" "q['children_up'] == 3" \
      "all(x['state'] == 'up' and x['stale_bytes'] == 0 for x in c)" \
      "c[2]['resync'] is None" "c[2]['bytes_repaired'] == 4 * $gr" \
      "c[2]['writes'] == 2 + 3" \
      "c[2]['last_error']['type'] == 'down'"
  cmp $tmpdir/c0.img $tmpdir/c2.img
  cmp $tmpdir/c1.img $tmpdir/c2.img
  human_shows "^ +State : healthy$" "^ +2 +up +0 B +.* 256 KiB +$(rx "$(child_uri 2)")$"

  # Gone with the server.
  kill_pid $(cat $tmpdir/q.pid)
  rm -f $tmpdir/q.pid $tmpdir/q.sock
  refute test -e $tmpdir/ctl
}

# With state=FILE (and the default state-granule=, 4 MiB).
control_state ()
{
  local i fail=$tmpdir/fail err
  rm -f $tmpdir/q.state $fail
  err=(error-pwrite=EIO error-pwrite-rate=100% error-pwrite-file=$fail
       error-pread=EIO error-pread-rate=100% error-pread-file=$fail)
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 8M $tmpdir/c$i.img; done
  child0 --filter=error file $tmpdir/c0.img "${err[@]}"
  for i in 1 2; do
    start_child $i --filter=error file $tmpdir/c$i.img "${err[@]}"
  done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      state=$tmpdir/q.state control=$tmpdir/ctl

  status_check "q['state'] == 'healthy'" \
      "sorted(st) == ['file', 'granule', 'syncs', 'unsettled_bytes']" \
      "st['file'] == '$tmpdir/q.state'" "st['granule'] == 4 * 1024 * 1024" \
      "isinstance(st['syncs'], int) and st['syncs'] >= 0" \
      "st['unsettled_bytes'] == 0"

  # The first write to a granule waits for one fdatasync, the next to
  # it none (no flush was sent: the sweeper cannot clear its bit), a
  # write to the next granule one more.  Counted from inside one
  # connection, so that nothing else happens meanwhile.
  nbdsh -u "$q" -c "
import json, subprocess
def syncs():
    out = subprocess.check_output(['$ctl', '$tmpdir/ctl', 'status', '--json'])
    return json.loads(out)['state']['syncs']
s0 = syncs()
h.pwrite(b'\x31' * 4096, 0)
s1 = syncs()
assert s1 == s0 + 1, (s0, s1)
h.pwrite(b'\x32' * 4096, 65536)
h.pwrite(b'\x33' * 4096, 4 * 1024 * 1024 - 4096)
assert syncs() == s1, (s1, syncs())
h.pwrite(b'\x34' * 4096, 4 * 1024 * 1024)
assert syncs() == s1 + 1, (s1, syncs())
"
  status_check "st['syncs'] >= 2" "st['unsettled_bytes'] == 0" \
      "all(x['stale_bytes'] == 0 for x in c)"

  # A write that fails on every child: its 64 KiB granule is unsettled
  # (no child is stale), and can be settled by no one while reads fail
  # too.
  touch $fail
  nbdsh -u "$q" -c "
try:
    h.pwrite(b'\x41' * 4096, 5 * 1024 * 1024)
    assert False, 'the write succeeded'
except nbd.Error:
    pass
"
  status_check "st['unsettled_bytes'] == 65536" \
      "all(x['stale_bytes'] == 0 for x in c)" "q['size'] == 8 * 1024 * 1024"
  human_shows "^ +State file : $(rx "$tmpdir/q.state") \(write-intent granule 4 MiB, [0-9]+ syncs\)$" \
      "^ +Unsettled : 64 KiB$" ||
    { cat $tmpdir/status.txt; exit 1; }
  rm -f $fail

  kill_pid $(cat $tmpdir/q.pid)
  rm -f $tmpdir/q.pid $tmpdir/q.sock $tmpdir/q.state
}

for_each_form control
for_each_form control_state
