#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Reports field by field: the syslog line (ident, priority, each
# key=value) and the same event as a JSON line in report=FILE; with
# syslog=false nothing reaches syslog.

source ./functions.sh
set -e
set -x
requires nbdsh --version

for i in 0 1 2; do make_image $tmpdir/c$i.img 64K 0x77; done
corrupt $tmpdir/c0.img 10 'q'
for i in 0 1 2; do start_child $i file $tmpdir/c$i.img; done

quorum -U - --filter=$QUORUM_FILTER file $tmpdir/c0.img \
       child="$(child_uri 1)" child="$(child_uri 2)" report=$tmpdir/r.jsonl \
       --run "nbdsh -u \"\$uri\" -c 'h.pread(1024, 0)'"
cat $tmpdir/syslog
line=$(grep 'event=bad' $tmpdir/syslog)
read -r ident prio rest <<< "$line"
[ "$ident" = nbdkit-quorum-filter ]
[ "$prio" = warning ]
declare -A kv
for f in $rest; do kv[${f%%=*}]=${f#*=}; done
[ "${kv[event]}" = bad ]
[ "${kv[type]}" = read ]
[ "${kv[child]}" = 0 ]
[ "${kv[name]}" = plugin ]
[ "${kv[offset]}" = 0x0 ]
[ "${kv[length]}" = 0x400 ]
[ "${kv[error]}" = mismatch ]
[ ${#kv[@]} -eq 7 ]

# The report file: JSON, private, same event, then a summary per child.
[ "$(stat -c %a $tmpdir/r.jsonl)" = 600 ]
python3 - $tmpdir/r.jsonl <<'EOF'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
bad = [e for e in ev if e["event"] == "bad"]
assert len(bad) == 1, ev
b = bad[0]
assert b["type"] == "read" and b["child"] == 0 and b["child_name"] == "plugin"
assert b["offset"] == 0 and b["length"] == 1024 and b["mismatch"] is True
assert b["time"].endswith("Z") and "T" in b["time"]
summ = {e["child"]: e for e in ev if e["event"] == "summary"}
assert sorted(summ) == [0, 1, 2], summ
assert summ[0]["bad_reads"] == 1 and summ[1]["bad_reads"] == 0
assert all(s["reads"] == 1 for s in summ.values())
print("report ok")
EOF

# syslog=false: nothing goes to syslog, the report file still grows.
rm $tmpdir/syslog
quorum -U - --filter=$QUORUM_FILTER file $tmpdir/c0.img \
       child="$(child_uri 1)" child="$(child_uri 2)" report=$tmpdir/r.jsonl \
       syslog=false --run "nbdsh -u \"\$uri\" -c 'h.pread(1024, 0)'"
[ ! -e $tmpdir/syslog ]
[ $(grep -c '"event":"bad"' $tmpdir/r.jsonl) -eq 2 ]
