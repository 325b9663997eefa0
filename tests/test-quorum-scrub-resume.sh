#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# With state=FILE a scrub resumes after a restart, as md's and ZFS's
# do: a slow scrub records checkpoints (status: scrub.checkpoint);
# nbdkit is killed with SIGKILL mid-scrub and started again with the
# same state=: the scrub runs again by itself from its checkpoint
# (event=scrub-resume from=, status: resumed_from, bytes_done counted
# from there, the counts found before the kill carried over), reads
# nothing before the checkpoint again (child 3's log filter), and
# finds the block corrupted past it.  A scrub that ended leaves no
# checkpoint (a restart starts none); a clean stop (SIGTERM) saves
# where it was and resumes there; "scrub stop" clears the checkpoint,
# so a restart then starts no scrub; a checkpoint of a newer record
# version is ignored with a message.  In both forms (in the filter
# child 0 is the plugin, not read while no client is connected: the
# three others outvote the corrupted child by themselves).

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json, re'
requires nbdkit --filter=log null --dump-plugin
requires_control
M=1048576
size=$((16 * M))
blk=4096
st=$tmpdir/state
early=$((100 * blk))            # corrupted before any checkpoint
late=$((14 * M + 5 * blk))      # and far past the one of the kill

qstart ()
{
  rm -f $tmpdir/q.sock
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" child="$(child_uri 3)" \
      vote-threshold=2 control=$tmpdir/ctl state=$st "$@"
}

# gone PID: the quorum PID has exited, all its threads (a killed
# process is a zombie while its other threads still hold its sockets):
# nothing answers on its control socket any more.
gone ()
{
  ! alive "$1" &&
    ! "$ctl" --timeout=2 $tmpdir/ctl status > /dev/null 2>&1
}

# qkill SIGNAL: stop the quorum with SIGNAL and wait for its exit; its
# syslog so far is kept as syslog.N.
qkill ()
{
  local pid
  pid=$(cat $tmpdir/q.pid)
  kill -$1 $pid
  wait_for "the quorum's exit" 30 gone $pid
  rm -f $tmpdir/q.pid $tmpdir/q.sock
  runs=$((runs + 1))
  mv $tmpdir/syslog $tmpdir/syslog.$runs
  touch $tmpdir/syslog
}

# field NAME FILE: the hex field NAME= of the last scrub-resume in FILE.
field ()
{
  python3 -c "
import re
m = re.findall(r'event=scrub-resume .*\b$1=0x([0-9a-f]+)', open('$2').read())
print(int(m[-1], 16))"
}

# poke_newer: the checkpoint in $st as a newer build would write it
# (record version 2), both copies of block 0 with their checksums
# right (see common/statefile-block.c).
poke_newer ()
{
  python3 - $st <<'EOF'
import hashlib, struct, sys
f = open(sys.argv[1], 'r+b')
for i in range(2):
    f.seek(i * 4096)
    c = bytearray(f.read(4096))
    if c[:8] != b'QUORUMST':
        continue
    c[32 + 1048:32 + 1052] = struct.pack('<I', 2)
    c[24:32] = hashlib.sha256(bytes(c[:24]) + bytes(c[32:])).digest()[:8]
    f.seek(i * 4096)
    f.write(c)
EOF
}

resume ()
{
  local i ck from lines
  runs=0
  rm -f $st $tmpdir/c3.log
  python3 -c "
import random
r = random.Random(15)
d = bytes(r.getrandbits(8) for _ in range($size))
for i in range(4):
    open('$tmpdir/c%d.img' % i, 'wb').write(d)"
  corrupt $tmpdir/c1.img $((early + 9)) "early"
  corrupt $tmpdir/c1.img $((late + 9)) "late"
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 file $tmpdir/c2.img
  start_child 3 --filter=log file $tmpdir/c3.img logfile=$tmpdir/c3.log
  qstart

  # A slow scrub, killed once it has a checkpoint (and found the early
  # block), long before the late block.
  "$ctl" $tmpdir/ctl scrub start --rate=0.5
  quiet=1 wait_for "a checkpoint" 60 status_check \
      "sc['checkpoint'] is not None and sc['checkpoint'] >= $M"
  status_check "sc['state'] == 'running'" "sc['resumed_from'] is None" \
      "sc['mismatched_bytes'] == $blk" "sc['bytes_done'] < $late - 2 * $M"
  ck=$(python3 -c "import json; print(json.load(open('$tmpdir/status.json'))['scrub']['checkpoint'])")
  qkill KILL
  lines=$(wc -l < $tmpdir/c3.log)

  # Started again: it resumes by itself, from the checkpoint.
  qstart scrub-rate=0.5
  wait_for "scrub-resume" 30 grep -q "event=scrub-resume" $tmpdir/syslog
  assert_grep "event=scrub-resume offset=0x0 length=0x1000000 from=0x[0-9a-f]+ mode=check rate=524288$" $tmpdir/syslog
  assert_no_grep "event=scrub-start" $tmpdir/syslog
  from=$(field from $tmpdir/syslog)
  [ $from -ge $ck ] && [ $from -lt $late ]
  status_check "sc['state'] == 'running'" "sc['resumed_from'] == $from" \
      "sc['offset'] == 0" "sc['length'] == $size" "sc['repair'] is False" \
      "sc['bytes_done'] >= $from" "sc['bytes_done'] < $size" \
      "sc['mismatched_bytes'] == $blk"
  "$ctl" $tmpdir/ctl status > $tmpdir/status.txt
  assert_grep "^ +Scrub : running, .* resumed at offset $from " $tmpdir/status.txt
  "$ctl" $tmpdir/ctl rate --scrub=0
  quiet=1 wait_for "the scrub's end" 60 status_check "sc['state'] == 'done'"
  status_check "sc['stopped'] is False" "sc['bytes_done'] == $size" \
      "sc['mismatched_bytes'] == 2 * $blk" "sc['checkpoint'] is None"
  assert_grep "event=bad type=read child=1 .* offset=$(printf 0x%x $late) length=0x1000 error=mismatch$" $tmpdir/syslog
  # The early block was not read again, nor anything before from.
  assert_no_grep "offset=$(printf 0x%x $early) " $tmpdir/syslog
  assert_grep "event=scrub-end offset=0x0 length=0x1000000 result=done done=0x1000000 mismatched=0x2000 " $tmpdir/syslog
  tail -n +$((lines + 1)) $tmpdir/c3.log > $tmpdir/c3.after
  python3 -c "
import re
reads = [(int(o, 16), int(c, 16)) for o, c in
         re.findall(r'Read id=\d+ offset=0x([0-9a-f]+) count=0x([0-9a-f]+)',
                    open('$tmpdir/c3.after').read())]
assert reads, 'child 3 read nothing after the restart'
low = min(o for o, c in reads)
print('after the restart child 3 read %d bytes, from offset %d (resumed at %d)'
      % (sum(c for o, c in reads), low, $from))
assert low >= $from, (low, $from)
assert sum(c for o, c in reads) == $size - $from, reads"

  # Done: no checkpoint, nothing resumes.
  qkill KILL
  qstart
  status_check "sc['state'] == 'idle'" "sc['checkpoint'] is None"
  assert_no_grep "event=scrub-resume|event=scrub-start" $tmpdir/syslog

  # A clean stop saves where it was, and a restart resumes there.
  "$ctl" $tmpdir/ctl scrub start --rate=0.5 --repair
  quiet=1 wait_for "a checkpoint" 60 status_check "sc['checkpoint'] is not None"
  qkill TERM
  assert_grep "event=scrub-end .* result=stopped " $tmpdir/syslog.$runs
  qstart scrub-rate=0.5
  wait_for "scrub-resume" 30 grep -q "event=scrub-resume" $tmpdir/syslog
  assert_grep "event=scrub-resume offset=0x0 length=0x1000000 from=0x[0-9a-f]+ mode=repair " $tmpdir/syslog
  from=$(field from $tmpdir/syslog)
  python3 -c "
import re
s = open('$tmpdir/syslog.$runs').read()
done = int(re.findall(r'event=scrub-end .* done=0x([0-9a-f]+)', s)[-1], 16)
assert done == $from, (done, $from)"
  status_check "sc['repair'] is True" "sc['resumed_from'] == $from"

  # scrub stop: the checkpoint goes, and a restart starts no scrub.
  "$ctl" $tmpdir/ctl scrub stop
  quiet=1 wait_for "the scrub's end" 30 status_check "sc['state'] == 'done'"
  status_check "sc['stopped'] is True" "sc['checkpoint'] is None"
  qkill KILL
  qstart
  status_check "sc['state'] == 'idle'"
  assert_no_grep "event=scrub-resume|event=scrub-start" $tmpdir/syslog

  # A checkpoint of a newer record version: ignored, with a message;
  # the file serves on.
  "$ctl" $tmpdir/ctl scrub start --rate=0.5
  quiet=1 wait_for "a checkpoint" 60 status_check "sc['checkpoint'] is not None"
  qkill KILL
  poke_newer
  qstart
  wait_for "the message" 30 grep -q "the scrub checkpoint in it is ignored: written by a newer build" $tmpdir/syslog
  status_check "sc['state'] == 'idle'" "st['file'] == '$st'"
  assert_no_grep "event=scrub-resume" $tmpdir/syslog
}

for_each_form resume
