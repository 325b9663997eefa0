#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A rebuild zeroes a long hole with a few long zero commands, not one
# a 1 MiB run: a 128 MiB sparse export (64 KiB of data at 0, 40 MiB
# and 100 MiB) replaced onto an empty server takes fewer than 48 zero
# commands (it took 128; about 30 now: the runs handed out before a
# block status answer says how long the hole is are still 1 MiB, and
# a run is at most a tenth of the copy), reads only the data, reports
# every tenth of its progress, and ends identical to the others.  Data
# written into the hole while the rebuild runs is copied too.  In both
# forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json'
requires nbdkit --filter=log null --dump-plugin
requires_control
q="nbd+unix:///?socket=$tmpdir/q.sock"
M=1048576

zero_runs ()
{
  local i zeros
  for i in 0 1 2 3; do rm -f $tmpdir/c$i.img; truncate -s 128M $tmpdir/c$i.img; done
  rm -f $tmpdir/c3.log
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 file $tmpdir/c2.img
  start_child 3 --filter=log file $tmpdir/c3.img logfile=$tmpdir/c3.log
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" control=$tmpdir/ctl \
      resync-rate=0
  nbdsh -u "$q" -c '
for off in (0, 40 << 20, 100 << 20):
    h.pwrite(b"\x99" * 65536, off)
h.flush()
'
  [ $form = filter ] && hold_connection "$q"
  "$ctl" "$tmpdir/ctl" replace 2 "$(child_uri 3)"
  # Into the hole while the rebuild may be running: copied as well.
  nbdsh -u "$q" -c 'h.pwrite(b"\x77" * 4096, 70 << 20)'
  wait_for "replace-end" 60 grep -q 'event=replace-end child=2' $tmpdir/syslog
  [ $form = filter ] && release_connection
  cat $tmpdir/syslog
  images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c3.img
  nbdsh -u "$q" -c '
assert h.pread(65536, 100 << 20) == b"\x99" * 65536
assert h.pread(4096, 70 << 20) == b"\x77" * 4096
assert h.pread(4096, 90 << 20) == bytes(4096)
'
  grep " Zero " $tmpdir/c3.log || :
  zeros=$(grep -c " Zero " $tmpdir/c3.log || :)
  echo "zero commands to the new server: $zeros"
  [ "$zeros" -ge 1 ] && [ "$zeros" -lt 48 ]
  # Long runs, yet a progress report at every tenth.
  for i in 10 20 30 40 50 60 70 80 90; do
    assert_grep "event=resync-progress child=3 .*percent=$i " $tmpdir/syslog
  done
  # What was read and written is the data, not the holes.
  assert_grep 'event=resync-end child=3 .* zeroed=0x[0-9a-f]* dirty=0x0' $tmpdir/syslog
  python3 -c "
import re, sys
m = re.search(r'event=resync-end child=3 .*zeroed=(0x[0-9a-f]+) dirty=0x0 copied=(0x[0-9a-f]+)',
              open('$tmpdir/syslog').read())
zeroed, copied = int(m.group(1), 16), int(m.group(2), 16)
assert copied == 128 << 20, copied
assert copied - zeroed <= 8 << 20, (copied, zeroed)
"
}

for_each_form zero_runs
