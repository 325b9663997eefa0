#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A replace sent the moment the last one's swap has made child N whole
# again (status shows no replacement) must not meet the swap still
# letting go of the spare: before the fix both closed the spare's
# libnbd handles (a double free: "free(): corrupted unsorted chunks",
# the front gone under its clients).  One control connection replaces
# child 2 back and forth between two servers as fast as the replies
# come, under a checked client workload; every replace is either taken
# or refused as still being wound up, the quorum stays up, the
# workload's reads are right throughout, and the children end equal.
# In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json'
requires_control
q="nbd+unix:///?socket=$tmpdir/q.sock"

race ()
{
  local i
  for i in 0 1 2 3; do rm -f $tmpdir/c$i.img; truncate -s 2M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 file $tmpdir/c2.img
  start_child 3 file $tmpdir/c3.img
  rm -f $tmpdir/q.sock
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      resync-rate=0 control=$tmpdir/ctl
  start_workload "$q" 30
  workload_more 20

  python3 - $tmpdir/ctl "$(child_uri 2)" "$(child_uri 3)" <<'PY'
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rw")
def ask(cmd, *args):
    f.write(json.dumps({"command": cmd, "args": list(args)}) + "\n")
    f.flush()
    line = f.readline()
    if not line:
        sys.exit("the control socket closed: the quorum is gone")
    return json.loads(line)
servers = [sys.argv[2], sys.argv[3]]
swaps = wound = 0
deadline = time.monotonic() + 60
while swaps < 12:
    if time.monotonic() > deadline:
        sys.exit("only %d swaps in 60 s" % swaps)
    st = ask("status")
    assert st["ok"], st
    c2 = st["children"][2]
    if c2["replacement"] is not None:
        continue
    other = servers[1] if c2["name"] == servers[0] else servers[0]
    r = ask("replace", "2", other)
    if r["ok"]:
        swaps += 1
    elif "wound up" in r["error"]:
        wound += 1
    else:
        sys.exit("replace refused: %s" % r["error"])
print("swaps %d, refused while wound up %d" % (swaps, wound))
PY
  # Until the last one is done.
  wait_for "the last replace" 60 status_check "r is None"
  workload_more 20
  stop_workload
  kill -0 $(cat $tmpdir/q.pid)
  nbdsh -u "$q" -c 'h.flush()'
  # Child 2 is whichever server took the last swap.
  status_check "c[2]['name'] in ('$(child_uri 2)', '$(child_uri 3)')"
  last=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["children"][2]["name"])' $tmpdir/status.json)
  if [ "$last" = "$(child_uri 2)" ]; then last=2; else last=3; fi
  images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c$last.img
}

for_each_form race
