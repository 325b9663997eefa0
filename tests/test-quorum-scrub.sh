#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# scrub start/stop through the control socket: a scrub finds blocks
# corrupted on one child (its backing file overwritten behind the
# quorum's back), reports each, and with --repair rewrites them; skips
# what every child says is a hole; reports a block one child cannot
# read (EIO) and leaves it alone, --repair or not; in the filter, says
# what it could not check while no client lent it the plugin, and does
# not rewrite the plugin.  status --json shows each scrub field.  In
# both forms.  The rate limit is test-quorum-scrub-rate.sh's.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json'
requires_control
q="nbd+unix:///?socket=$tmpdir/q.sock"
M=1048576
size=$((8 * M))

# scrub ARGS...: scrub start ARGS, and wait until it is done.
scrub ()
{
  "$ctl" $tmpdir/ctl scrub start "$@"
  quiet=1 wait_for "the scrub's end" 60 status_check "sc['state'] == 'done'"
}

# Three equal images: 6 MiB of data, then a 2 MiB hole.
make_images ()
{
  local i
  python3 -c "
import random
r = random.Random(14)
d = bytes(r.getrandbits(8) for _ in range(6 * $M))
for i in range(3):
    with open('$tmpdir/c%d.img' % i, 'wb') as f:
        f.write(d)
        f.truncate($size)"
}

# hold_client: in the filter, a client connection lends the plugin to
# the scrub until release_client.
hold_client ()
{
  rm -f $tmpdir/release $tmpdir/held
  nbdsh -u "$q" -c 'import os, time' -c "open('$tmpdir/held', 'w').close()" \
        -c "while not os.path.exists('$tmpdir/release'): time.sleep(0.1)" &
  holder=$!
  cleanup_fn kill_pid $holder
  wait_for "the client's connection" 10 test -e $tmpdir/held
}

release_client ()
{
  touch $tmpdir/release
  wait $holder
}

scrub_corrupt ()
{
  local blk=4096
  make_images
  # Child 1: block 25 and blocks 100-101 (one run).
  corrupt $tmpdir/c1.img $((25 * blk + 7)) "garbage"
  corrupt $tmpdir/c1.img $((100 * blk + 4000)) "$(printf '%0200d' 0)"
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" control=$tmpdir/ctl
  hold_client

  status_check "sc['state'] == 'idle'" "sc['offset'] is None" \
      "sc['bytes_done'] == 0" "sc['rate_limit'] == 50 * $M"

  # Check only: three blocks found, in two reports, nothing written.
  scrub
  status_check "sc['state'] == 'done'" "sc['repair'] is False" \
      "sc['stopped'] is False" "sc['stopping'] is False" \
      "sc['offset'] == 0" "sc['length'] == $size" \
      "sc['bytes_total'] == $size" "sc['bytes_done'] == $size" \
      "sc['mismatched_bytes'] == 3 * $blk" "sc['repaired_bytes'] == 0" \
      "sc['unreadable_bytes'] == 0" "sc['no_quorum_bytes'] == 0" \
      "sc['skipped_bytes'] == 2 * $M" "sc['unchecked_bytes'] == 0" \
      "sc['rate_limit'] == 50 * $M" "sc['eta_seconds'] is None" \
      "sc['elapsed_seconds'] >= 0" \
      "c[1]['bad_reads'] == 2" "c[0]['bad_reads'] == 0" \
      "c[1]['last_error']['error'] == 'mismatch'" \
      "c[1]['last_error']['offset'] == 100 * $blk" \
      "c[1]['last_error']['length'] == 2 * $blk" \
      "all(x['writes'] == 0 for x in c)"
  assert_grep "event=scrub-start offset=0x0 length=0x800000 mode=check rate=52428800$" $tmpdir/syslog
  assert_grep "event=bad type=read child=1 .* offset=0x19000 length=0x1000 error=mismatch$" $tmpdir/syslog
  assert_grep "event=bad type=read child=1 .* offset=0x64000 length=0x2000 error=mismatch$" $tmpdir/syslog
  assert_grep "event=scrub-end offset=0x0 length=0x800000 result=done done=0x800000 mismatched=0x3000 repaired=0x0 unreadable=0x0 no-quorum=0x0 skipped=0x200000 unchecked=0x0$" $tmpdir/syslog
  assert_no_grep "event=repair" $tmpdir/syslog
  refute cmp -s $tmpdir/c0.img $tmpdir/c1.img
  "$ctl" $tmpdir/ctl status > $tmpdir/status.txt
  assert_grep "^ +Scrub : done, 8 MiB of 8 MiB \(100%\) from offset 0 in [0-9]+ s$" $tmpdir/status.txt
  assert_grep "^ +12 KiB mismatched, 0 B repaired, 0 B unreadable, 0 B without quorum$" $tmpdir/status.txt

  # Repair: the same three, rewritten; the images equal again.
  scrub --repair
  status_check "sc['repair'] is True" "sc['mismatched_bytes'] == 3 * $blk" \
      "sc['repaired_bytes'] == 3 * $blk" "c[1]['bytes_repaired'] == 3 * $blk" \
      "c[1]['writes'] == 2" "c[0]['writes'] == 0 and c[2]['writes'] == 0"
  assert_grep "event=repair child=1 .* offset=0x19000 length=0x1000$" $tmpdir/syslog
  assert_grep "event=repair child=1 .* offset=0x64000 length=0x2000$" $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c1.img
  cmp $tmpdir/c2.img $tmpdir/c1.img

  # Clean now; a range rounded out to whole blocks.
  scrub --offset=4097 --length=1
  status_check "sc['offset'] == 4096" "sc['length'] == 4096" \
      "sc['bytes_done'] == 4096" "sc['mismatched_bytes'] == 0"
  scrub --repair
  status_check "sc['mismatched_bytes'] == 0" "sc['repaired_bytes'] == 0"

  # One at a time.
  "$ctl" $tmpdir/ctl scrub start --rate=0.1
  out=0
  "$ctl" $tmpdir/ctl scrub start > $tmpdir/ctl.out 2>&1 || out=$?
  cat $tmpdir/ctl.out
  [ $out = 1 ]
  assert_grep "a scrub is running already" $tmpdir/ctl.out
  "$ctl" $tmpdir/ctl scrub stop
  quiet=1 wait_for "the scrub's end" 30 status_check "sc['state'] == 'done'"
  status_check "sc['stopped'] is True" "sc['bytes_done'] < $size" \
      "sc['rate_limit'] == $M // 10"
  assert_grep "event=scrub-end .* result=stopped " $tmpdir/syslog
  "$ctl" $tmpdir/ctl rate --scrub=50

  if [ $form = filter ]; then
    # The plugin corrupted: found, but not rewritten from here.
    corrupt $tmpdir/c0.img $((30 * blk)) "plugin"
    scrub --repair
    status_check "sc['mismatched_bytes'] == $blk" "sc['repaired_bytes'] == 0" \
        "sc['unchecked_bytes'] == 0" "c[0]['bad_reads'] == 1"
    assert_grep "event=bad type=read child=0 name=plugin offset=0x1e000 length=0x1000 error=mismatch$" $tmpdir/syslog
    refute cmp -s $tmpdir/c0.img $tmpdir/c1.img
    # No client: the plugin is not read, and that is said.
    release_client
    scrub
    status_check "sc['unchecked_bytes'] == $size" \
        "sc['mismatched_bytes'] == 0" "sc['bytes_done'] == $size"
    assert_grep "scrub: the plugin \(child 0\) cannot be read from the background while no client is connected" $tmpdir/syslog
  else
    release_client
  fi
}

# Child 2 cannot read block 1280 (at 5 MiB).
scrub_unreadable ()
{
  local bad=$((5 * M))
  make_images
  corrupt $tmpdir/c2.img $bad "only child 2 has this"
  cp $tmpdir/c2.img $tmpdir/c2.before
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 eval get_size="echo $size" \
      pread="if [ \$4 -lt $((bad + 4096)) ] && [ \$((\$4 + \$3)) -gt $bad ]; then echo 'EIO bad sector' >&2; exit 1; fi; dd if=$tmpdir/c2.img skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
      pwrite="dd of=$tmpdir/c2.img seek=\$4 oflag=seek_bytes conv=notrunc status=none"
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" control=$tmpdir/ctl
  hold_client

  scrub --repair
  status_check "sc['unreadable_bytes'] == 4096" \
      "sc['mismatched_bytes'] == 0" "sc['repaired_bytes'] == 0" \
      "sc['no_quorum_bytes'] == 0" "sc['skipped_bytes'] == 0" \
      "sc['unchecked_bytes'] == 0" "sc['bytes_done'] == $size" \
      "c[2]['errors'] == 1" "c[2]['last_error']['error'] == 'EIO'" \
      "c[2]['last_error']['offset'] == $bad" \
      "c[2]['last_error']['length'] == 4096" \
      "all(x['writes'] == 0 for x in c)"
  assert_grep "event=bad type=read child=2 .* offset=0x500000 length=0x1000 error=EIO$" $tmpdir/syslog
  assert_grep "event=scrub-end .* unreadable=0x1000 " $tmpdir/syslog
  assert_no_grep "event=repair|event=failure" $tmpdir/syslog
  cmp $tmpdir/c2.img $tmpdir/c2.before
  # And the export reads it, from children 0 and 1.
  nbdsh -u "$q" -c "assert h.pread(4096, $bad) == open('$tmpdir/c0.img', 'rb').read()[$bad:$bad + 4096]"
  release_client
}

run ()
{
  scrub_corrupt
  kill_pid $(cat $tmpdir/q.pid)
  rm -f $tmpdir/q.pid $tmpdir/q.sock $tmpdir/syslog
  for i in 0 1 2; do stop_child $i; done
  scrub_unreadable
}

for_each_form run
