#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Children with very long names (a child-command of 1500 bytes, a
# socket path of 1000 bytes, too long for sun_path): every key=value
# report keeps all its fields, the name shortened with a marker, and
# stays one line of at most 1024 bytes; the JSON report keeps the whole
# name.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

pad=$(printf 'x%.0s' $(seq 1500))
long_dir=$tmpdir/$(printf 'd%.0s' $(seq 200))/$(printf 'e%.0s' $(seq 200))/$(printf 'f%.0s' $(seq 200))/$(printf 'g%.0s' $(seq 200))/$(printf 'h%.0s' $(seq 200))
mkdir -p "$long_dir"

long_names ()
{
  local i line
  for i in 0 1 2; do make_image $tmpdir/c$i.img 64K 0x61; done
  corrupt $tmpdir/c2.img 100 'b'
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  cmd="nbdkit --exit-with-parent file $tmpdir/c2.img # $pad"
  rm -f $tmpdir/r.jsonl
  quorum -U - "${quorum_head[@]}" child="$(child_uri 1)" child-command="$cmd" \
         child="nbd+unix:///?socket=$long_dir/c3.sock" \
         vote-threshold=2 start-degraded=true report=$tmpdir/r.jsonl \
         --run "nbdsh -u \"\$uri\" -c 'assert h.pread(4096, 0) == b\"a\" * 4096'"
  cat $tmpdir/syslog

  line=$(grep 'event=bad' $tmpdir/syslog)
  [[ $line =~ ^nbdkit-quorum-$form\ warning\ event=bad\ type=read\ child=2\ name=command:nbdkit%20--exit-with-parent%20file%20[^\ ]*xxx\.\.\.x+\ offset=0x0\ length=0x1000\ error=mismatch$ ]]
  line=$(grep 'event=down child=3' $tmpdir/syslog)
  [[ $line =~ event=down\ child=3\ name=nbd\+unix:///\?socket=$tmpdir/ddd[^\ ]*\.\.\.[^\ ]*/c3\.sock\ reason=unreachable$ ]]
  # No line is longer than the limit (the syslog capture adds the
  # ident and priority).
  awk '{ sub(/^[^ ]+ [^ ]+ /, ""); if (length($0) > 1024) { print; exit 1 } }' $tmpdir/syslog

  python3 - $tmpdir/r.jsonl "command:$cmd" "nbd+unix:///?socket=$long_dir/c3.sock" <<'PY'
import json, sys, urllib.parse
ev = [json.loads(l) for l in open(sys.argv[1])]
bad = [e for e in ev if e["event"] == "bad"]
assert len(bad) == 1 and bad[0]["child"] == 2, bad
assert urllib.parse.unquote(bad[0]["child_name"]) == sys.argv[2]
assert bad[0]["offset"] == 0 and bad[0]["length"] == 4096 and bad[0]["mismatch"]
down = [e for e in ev if e["event"] == "down" and e["child"] == 3]
assert down and down[0]["child_name"] == sys.argv[3], down
assert down[0]["reason"] == "unreachable"
print("full names in the report file")
PY
}

for_each_form long_names
