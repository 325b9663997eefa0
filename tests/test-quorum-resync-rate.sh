#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# resync-rate=MIB/S and nbdkit-quorum-ctl rate --resync=MIB/S: a child
# back after missing 24 MiB of writes is copied at the limit, within
# 20% over a 10 s window (bytes_done in status, sampled twice), and
# once the limit is lifted it finishes at once: the images are equal.
# The limit is the engine's, the same in both forms: the plugin's.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires nbdcopy --version
requires python3 -c 'import json'
requires_control
q="nbd+unix:///?socket=$tmpdir/q.sock"

for i in 0 1 2; do truncate -s 32M $tmpdir/c$i.img; done
for i in 0 1 2; do start_child $i file $tmpdir/c$i.img; done
start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock $QUORUM_PLUGIN \
    child="$(child_uri 0)" child="$(child_uri 1)" child="$(child_uri 2)" \
    reconnect-delay=1 reconnect-max-delay=1 control=$tmpdir/ctl \
    resync-rate=2
"$ctl" $tmpdir/ctl rate > $tmpdir/rate.out
cat $tmpdir/rate.out
assert_grep "^resync rate limit: 2 MiB/s per child$" $tmpdir/rate.out

stop_child 2
wait_for "child 2 down" 20 sh -c "'$ctl' $tmpdir/ctl status --json | python3 -c 'import json,sys; assert json.load(sys.stdin)[\"children\"][2][\"state\"] == \"down\"'"
head -c 24M /dev/urandom > $tmpdir/data
nbdcopy $tmpdir/data "$q"
start_child 2 file $tmpdir/c2.img

# done: the bytes it has copied, and when.
sample ()
{
  "$ctl" $tmpdir/ctl status --json | python3 -c '
import json, sys, time
c = json.load(sys.stdin)["children"][2]
r = c["resync"]
print(time.monotonic(), r["bytes_done"] if r else -1, r["bytes_total"] if r else -1)'
}
wait_for "resync progress" 30 sh -c "[ \$('$ctl' $tmpdir/ctl status --json | python3 -c 'import json,sys; r=json.load(sys.stdin)[\"children\"][2][\"resync\"]; print(r[\"bytes_done\"] if r else 0)') -gt 0 ]"
read t0 d0 total < <(sample)
sleep 10
read t1 d1 total1 < <(sample)
python3 - "$t0" "$d0" "$t1" "$d1" "$total" <<'PY'
import sys
t0, d0, t1, d1, total = map(float, sys.argv[1:])
assert total == 24 * 1048576, total
rate = (d1 - d0) / (t1 - t0) / 1048576
print("resync rate over %.1f s: %.2f MiB/s (limit 2)" % (t1 - t0, rate))
assert 1.6 <= rate <= 2.4, rate
PY

# Lifted: done at once.
"$ctl" $tmpdir/ctl rate --resync=0 > $tmpdir/rate.out
assert_grep "^resync rate limit: none per child$" $tmpdir/rate.out
wait_for "child 2 up" 60 sh -c "'$ctl' $tmpdir/ctl status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); assert s[\"children\"][2][\"state\"] == \"up\" and s[\"quorum\"][\"resync_rate_limit\"] == 0'"
assert_grep "event=resync-end child=2 .*copied=0x1800000" $tmpdir/syslog
images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
