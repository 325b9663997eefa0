#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# report=FILE under stress: child names holding quotes, backslashes,
# control characters and non-ASCII bytes (a socket path, percent-encoded
# in its URI as libnbd requires, and a child-command written raw) stay
# one valid JSON line per event, and decode back to what was given; and
# hundreds of reports written at once by many request threads (nbdcopy,
# 4 connections, many requests in flight) are whole lines, one per
# event, none lost.  The file is appended to, never truncated.

source ./functions.sh
set -e
set -x
requires nbdcopy --version
requires python3 -c 'import json, urllib.parse'

odd=$tmpdir/$'q"u\\o\x01\t\n é'
mkdir "$odd"
enc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$odd/c1.sock")

size=16M
for i in 0 1 2; do make_image $tmpdir/c$i.img $size 0x5a; done
# One bad byte every 64 KiB of child 1: 256 blocks, never adjacent.
python3 - $tmpdir/c1.img <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    for off in range(100, 16 * 1048576, 65536):
        f.seek(off)
        f.write(b"x")
PY
start_child 0 file $tmpdir/c0.img
start_nbdkit -P $tmpdir/c1.pid -U "$odd/c1.sock" file $tmpdir/c1.img
echo '{"existing":"line"}' > $tmpdir/r.jsonl
chmod 600 $tmpdir/r.jsonl

cmd="nbdkit --exit-with-parent file '$tmpdir/c2.img'"
quorum -U - $QUORUM_PLUGIN child="$(child_uri 0)" \
       child="nbd+unix:///?socket=$enc" child-command="$cmd" \
       report=$tmpdir/r.jsonl \
       --run 'nbdcopy --connections=4 --requests=32 "$uri" null:'

python3 - $tmpdir/r.jsonl "nbd+unix:///?socket=$odd/c1.sock" "command:$cmd" <<'PY'
import json, sys, urllib.parse
path, uri1, name2 = sys.argv[1:4]
lines = open(path, "rb").read().split(b"\n")
assert lines[-1] == b"", "file must end with a newline"
events = [json.loads(l) for l in lines[:-1]]     # every line is JSON
assert events[0] == {"existing": "line"}, "file was truncated"
bad = [e for e in events if e.get("event") == "bad"]
offsets = sorted(e["offset"] for e in bad)
assert offsets == list(range(0, 16 * 1048576, 65536)), offsets[:8]
assert all(e["child"] == 1 and e["length"] == 4096 and e["mismatch"]
           for e in bad)
names = {e["child"]: e["child_name"] for e in events if "child_name" in e}
assert urllib.parse.unquote(names[1]) == uri1, names[1]
assert urllib.parse.unquote(names[2]) == name2, names[2]
# No raw byte that could break a line or a key=value field.
for n in names.values():
    assert all(0x20 < ord(ch) < 0x7f and ch not in "\"\\'" for ch in n), n
print(len(bad), "bad reports, all whole JSON lines")
PY
# The same events reached syslog, one line each, fields unbroken.
test "$(grep -c 'event=bad type=read child=1 ' $tmpdir/syslog)" -eq 256
grep 'event=bad' $tmpdir/syslog | awk 'NF != 9 { print; exit 1 }'
