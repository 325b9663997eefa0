#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# The scrub's rate limit holds: scrub start --rate=2 reads 2 MiB/s,
# within 20%, over a 10 s window (bytes_done from status at both ends);
# rate --scrub changes it while it runs, and status shows the new limit
# and the rate going up.  Meanwhile garbage on the control socket gets
# an error reply and the export serves.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json, socket'
requires_control
q="nbd+unix:///?socket=$tmpdir/q.sock"
M=1048576
size=$((64 * M))

# done_at: "BEFORE AFTER BYTES_DONE LIMIT RATE": the status was taken
# between BEFORE and AFTER (seconds).  On a loaded machine starting
# the tool and python takes a while: a rate is bounded from both sides
# of that uncertainty, never measured from one moment alone.
done_at ()
{
  local before=$EPOCHREALTIME
  "$ctl" $tmpdir/ctl status --json |
    python3 -c 'import json, sys
s = json.load(sys.stdin)["scrub"]
assert s["state"] == "running", s
print(s["bytes_done"], s["rate_limit"], s["rate"])' > $tmpdir/done_at
  echo "$before $EPOCHREALTIME $(cat $tmpdir/done_at)"
}

# check_rate WHAT B0 A0 D0 B1 A1 D1 LIMIT: the rate between two
# done_at can be LIMIT, within 20%.
check_rate ()
{
  python3 -c "
lo = ($7 - $4) / ($6 - $2)
hi = ($7 - $4) / ($5 - $3)
limit = $8
print('$1: %.2f to %.2f MiB/s, limit %.2f' % (lo / $M, hi / $M, limit / $M))
assert $5 - $3 >= 5, 'window too short'
assert lo <= 1.2 * limit and hi >= 0.8 * limit, (lo, hi, limit)"
}

rate ()
{
  local i
  python3 -c "
import os
d = os.urandom($size)
for i in range(3):
    open('$tmpdir/c%d.img' % i, 'wb').write(d)"
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" control=$tmpdir/ctl \
      scrub-rate=1.5

  "$ctl" $tmpdir/ctl rate > $tmpdir/ctl.out
  assert_grep "^scrub rate limit: 1.5 MiB/s$" $tmpdir/ctl.out
  "$ctl" $tmpdir/ctl rate --json > $tmpdir/ctl.out
  assert_grep '"scrub":1572864' $tmpdir/ctl.out
  "$ctl" $tmpdir/ctl scrub start --rate=2 > $tmpdir/ctl.out
  cat $tmpdir/ctl.out
  assert_grep "^scrub started \(rate limit 2 MiB/s\)" $tmpdir/ctl.out
  sleep 2
  read b0 a0 d0 l0 r0 < <(done_at)
  sleep 5
  # Garbage meanwhile, and the export.
  python3 -c "
import json, socket
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect('$tmpdir/ctl')
s.sendall(b'\x00\xffgarbage{\n')
r = json.loads(s.makefile().readline())
assert r['ok'] is False and 'malformed request' in r['error'], r"
  nbdsh -u "$q" -c "assert h.pread(4096, 0) == open('$tmpdir/c1.img', 'rb').read(4096)"
  sleep 5
  read b1 a1 d1 l1 r1 < <(done_at)
  check_rate "scrub rate" $b0 $a0 $d0 $b1 $a1 $d1 $((2 * M))
  python3 -c "
assert $l0 == $l1 == 2 * $M
assert 1.6 * $M <= $r1 <= 2.4 * $M, $r1"

  # Faster, while it runs.
  "$ctl" $tmpdir/ctl rate --scrub=4 > $tmpdir/ctl.out
  assert_grep "^scrub rate limit: 4 MiB/s$" $tmpdir/ctl.out
  sleep 2
  read b2 a2 d2 l2 r2 < <(done_at)
  sleep 5
  read b3 a3 d3 l3 r3 < <(done_at)
  check_rate "after rate --scrub=4" $b2 $a2 $d2 $b3 $a3 $d3 $((4 * M))
  [ "$l3" -eq $((4 * M)) ]
  "$ctl" $tmpdir/ctl scrub stop
}

for_each_form rate
