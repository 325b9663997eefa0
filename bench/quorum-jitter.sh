#!/usr/bin/env bash
# nbdkit-quorum benchmark: how steady each front's rate is from one
# second to the next, and what the children pay for a command as it
# moves.  A median of a few runs hides a rate that swings; this shows
# the swing, and the counts that go with it.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-jitter.sh [--root=DIR] [WORKLOAD [SECONDS [REPS [FRONTS]]]]
#   --root    the same on Debian 13's stack, in the root that
#             scripts/in-debian13 keeps in DIR
#   WORKLOAD  randwrite-qd32 (default), randread-qd32, randwrite-qd1 or
#             randread-qd1: fio's 4 KiB random I/O at that depth
#   SECONDS   length of each fio run (default 16)
#   REPS      runs of each front, interleaved (default 3)
#   FRONTS    comma-separated, as bench/quorum-bench.sh names them
#             (default qemu,plugin,filter)
#
# Children: three `nbdkit --filter=noextents file` servers on 256 MiB
# images in /dev/shm, started once (they serve every run).  Each second
# of each run gives one sample: fio's rate (--write_iops_log), and the
# CPU and context switches of the front and of the three children over
# that second (/proc, every thread).  Printed per front, over all its
# seconds: the rate's minimum, quartiles and maximum, and at the
# slowest and fastest quarter of the seconds the children's CPU a
# command (us, for the three together divided by 3 x the requests) and
# their context switches a command, and the front's CPU a request.
# The first second of each run is left out (connections, warm-up).
# Not part of 'make check': timing belongs here, never in tests.

case ${1:-} in
  --root=*)
    exec "$(dirname "$0")/../scripts/in-debian13" "$1" --with="fio bc" \
         --build bench/quorum-jitter.sh "${@:2}" ;;
esac

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

workload=${1:-randwrite-qd32}
secs=${2:-16}
reps=${3:-3}
fronts=${4:-qemu,plugin,filter}
size=256M
case $workload in
  randread-qd1|randread-qd32|randwrite-qd1|randwrite-qd32) ;;
  *) echo "bench: $workload: randread-qd1, randread-qd32, randwrite-qd1 or randwrite-qd32" >&2
     exit 1 ;;
esac
bench_requires nbdkit qemu-nbd fio python3

make_full "$dir/c0.img" "$size"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
start_children 3 "$dir/c" --filter=noextents

# The sampler: one line a second, "cpu_front ctx_front cpu_children
# ctx_children" (ticks and switches over that second), until fio ends.
cat > "$dir/sample.py" <<'PY'
import os, sys, time
front, children, stop = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
def read(pid):
    cpu = ctx = 0
    try:
        tasks = os.listdir("/proc/%s/task" % pid)
    except OSError:
        return 0, 0
    for t in tasks:
        try:
            st = open("/proc/%s/task/%s/stat" % (pid, t)).read()
            f = st[st.rindex(")") + 2:].split()
            cpu += int(f[11]) + int(f[12])
            for l in open("/proc/%s/task/%s/status" % (pid, t)):
                if l.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                    ctx += int(l.split()[1])
        except (OSError, ValueError, IndexError):
            pass             # a thread that ended between list and read
    return cpu, ctx
def snap():
    fc, fx = read(front)
    cc = cx = 0
    for c in children:
        a, b = read(c)
        cc, cx = cc + a, cx + b
    return fc, fx, cc, cx
prev = snap()
nxt = time.monotonic() + 1
while not os.path.exists(stop):
    time.sleep(max(0, nxt - time.monotonic()))
    nxt += 1
    cur = snap()
    print(*[b - a for a, b in zip(prev, cur)], flush=True)
    prev = cur
PY

rw=${workload%-qd*} qd=${workload#*-qd}
for r in $(seq "$reps"); do
  for f in ${fronts//,/ }; do
    start_front "$f" c0 c1 c2
    rm -f "$dir/stop" "$dir"/log_iops*.log
    python3 "$dir/sample.py" "$front_pid" "$(IFS=,; echo "${child_pids[*]}")" \
            "$dir/stop" > "$dir/samples" &
    spid=$!
    pids+=("$spid")
    # The sampler's seconds start with fio's, to within its start-up.
    fio --name=q --ioengine=nbd --uri="$front_uri" --rw="$rw" --bs=4k \
        --iodepth="$qd" --runtime="$secs" --time_based --size="$size" \
        --randrepeat=1 --write_iops_log="$dir/log" --log_avg_msec=1000 \
        > /dev/null 2> "$dir/fio.err" ||
      { cat "$dir/fio.err" >&2; exit 1; }
    touch "$dir/stop"
    wait "$spid" || true
    forget_pid "$spid"
    paste -d' ' <(awk -F, '{print $2}' "$dir"/log_iops.1.log) "$dir/samples" |
      tail -n +2 | awk -v f="$f" 'NF == 5 {print f, $0}' >> "$dir/all"
    stop_front
  done
done

echo "nbdkit-quorum jitter: $workload, $reps x ${secs}s a front, $(date -u +%Y-%m-%d), $(nbdkit --version | head -n 1), $(qemu-img --version | head -n 1)"
python3 - "$dir/all" "$(getconf CLK_TCK)" "$fronts" <<'PY'
import sys
path, hz, order = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
rows = {}
for line in open(path):
    f, iops, fc, fx, cc, cx = line.split()
    rows.setdefault(f, []).append(tuple(map(float, (iops, fc, fx, cc, cx))))
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))]
print("%-8s %5s %7s %7s %7s %7s %7s   %-26s %-26s" %
      ("front", "secs", "min", "p25", "median", "p75", "max",
       "slowest 25%: ch-us ch-ctx fr-us", "fastest 25%: ch-us ch-ctx fr-us"))
for f in order:
    s = [x for x in rows.get(f, []) if x[0] > 0]
    if not s:
        continue
    rate = [x[0] for x in s]
    s.sort()
    k = max(1, len(s) // 4)
    def per(part):
        n = sum(x[0] for x in part)
        return ("%6.1f %6.2f %6.1f" %
                (sum(x[3] for x in part) / hz * 1e6 / (3 * n),
                 sum(x[4] for x in part) / (3 * n),
                 sum(x[1] for x in part) / hz * 1e6 / n))
    print("%-8s %5d %7.0f %7.0f %7.0f %7.0f %7.0f   %-26s %-26s" %
          (f, len(s), min(rate), q(rate, .25), q(rate, .5), q(rate, .75),
           max(rate), per(s[:k]), per(s[-k:])))
print("(per second of fio's rate; ch-us: the children's CPU a command, us;"
      " ch-ctx: their context switches a command; fr-us: the front's CPU a request, us)")
PY
