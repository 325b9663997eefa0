#!/usr/bin/env bash
# nbdkit-quorum benchmark, counting mode: where a request's time goes,
# as counts rather than timings, so that a busy machine moves them
# little.  For each front and workload: system calls, futex waits and
# wakes, and context switches of the quorum's nbdkit, per request.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-syscalls.sh [--root=DIR] [--callers] [REQUESTS [FRONTS [WORKLOADS]]]
#   --root     the same on Debian 13's stack, in the root that
#              scripts/in-debian13 keeps in DIR
#   --callers  a third run of each front and workload, strace -k on the
#              futex calls only, and under each row the callers that
#              made at least 0.05 futex waits or wakes a request: the
#              first frame outside the C library and the one that
#              called it (object:function; the nbdkit binary is
#              stripped, so it is named alone, and libnbd's frames by
#              its nearest exported function).  The counts of the row
#              stay those of the second run: unwinding the stack at
#              each call slows the threads, which changes how often
#              they meet on a lock.
#   REQUESTS   requests per workload (default 4000)
#   FRONTS     comma-separated: plugin, filter, threshold (the plugin
#              with wait-for=threshold over children 0, 1 and a slow
#              one, 2 ms a request), threshold-fast (the same over
#              three fast children), floor, floor-serial (the least
#              an nbdkit plugin can do at queue depth 1: see
#              bench/quorum-floor.sh; queue depth 1 only), ffloor
#              (the same in the filter row's shape), qemu (QEMU's
#              quorum in qemu-nbd over the same children, as in
#              bench/quorum-bench.sh)
#              (default plugin,filter,threshold)
#   WORKLOADS  comma-separated, of randread-qd1, randread-qd32,
#              randwrite-qd1, randwrite-qd32 (default all four)
#
# The children are three `nbdkit --filter=noextents file` servers on
# 64 MiB images in /dev/shm, the front as in bench/quorum-bench.sh.  A
# Python client (libnbd's bindings) connects, then sends REQUESTS 4 KiB
# requests at random aligned offsets (fixed seed), keeping DEPTH in
# flight; the counts cover only those requests:
#   ctxsw    voluntary + involuntary context switches of every thread of
#            the front, from /proc/PID/task/*/status, after minus before
#            (a run without strace)
#   syscalls every system call of every thread (strace -f attached
#            for the requests only; a second run), and of them:
#   futex-w  futex waits (FUTEX_WAIT*: a thread went to sleep on a lock,
#            a semaphore or a condition variable)
#   futex-k  futex wakes (FUTEX_WAKE*: one thread woke another)
#   recv, send, poll, read, write   the socket and pipe calls
#   ctx/plugin  ctxsw divided by the plugin front's (wait-for=all over
#            three fast children), in the same run
# Each count is divided by REQUESTS.  The front's own threads only: the
# children's and the client's calls are not counted.

root= callers= opts=()
while [ $# -gt 0 ]; do
  case $1 in
    --root=*) root=$1 ;;
    --callers) callers=1; opts+=("$1") ;;
    *) break ;;
  esac
  shift
done
if [ -n "$root" ]; then
  exec "$(dirname "$0")/../scripts/in-debian13" "$root" --with="fio bc strace" \
       --build bench/quorum-syscalls.sh "${opts[@]}" "$@"
fi

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

nreq=${1:-4000}
fronts=${2:-plugin,filter,threshold}
workloads=${3:-randread-qd1,randread-qd32,randwrite-qd1,randwrite-qd32}
size=64M
bench_requires nbdkit strace python3

make_full "$dir/c0.img" "$size"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
start_children 3 "$dir/c" --filter=noextents
# The slow child of the threshold front (64 threads: slow per request,
# not short of threads).
cp "$dir/c0.img" "$dir/cs.img"
start_nbdkit cs -t 64 --filter=noextents --filter=delay file "$dir/cs.img" \
             delay-read=2ms delay-write=2ms

# The client: connect, say "ready", wait for a line on stdin, run the
# requests, say "done", wait for another line, then close.
cat > "$dir/client.py" <<'EOF'
import random, sys
import nbd
uri, rw, depth, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
blocks = size // 4096
rnd = random.Random(1)
buf = nbd.Buffer(4096)
wbuf = nbd.Buffer.from_bytearray(bytearray(b'\x5a' * 4096))
def retire(err):
    if err:
        sys.exit("request failed: %d" % err)
    return 1                    # retired: aio_in_flight counts the rest
print("ready", flush=True)
sys.stdin.readline()
sent = 0
while sent < n or h.aio_in_flight() > 0:
    while sent < n and h.aio_in_flight() < depth:
        off = rnd.randrange(blocks) * 4096
        if rw == "randread":
            h.aio_pread(buf, off, completion=retire)
        else:
            h.aio_pwrite(wbuf, off, completion=retire)
        sent += 1
    h.poll(-1)
print("done", flush=True)
sys.stdin.readline()
h.shutdown()
EOF

ctxsw () {
  local t s=0 v
  for t in /proc/"$1"/task/*/status; do
    v=$(awk '/ctxt_switches/ { n += $2 } END { print n + 0 }' "$t" 2>/dev/null) || v=0
    s=$((s + ${v:-0}))
  done
  echo "$s"
}

# run_client RW DEPTH MODE: one client run against the front; MODE
# ctxsw prints the context switches, strace leaves the trace in
# $dir/trace, callers the futex calls with their stacks in
# $dir/ktrace.
run_client () {
  local rw=$1 depth=$2 mode=$3 c0 c1 spid out= sargs=()
  case $mode in
    strace) out=$dir/trace ;;
    callers) out=$dir/ktrace; sargs=(-k -e trace=futex) ;;
  esac
  coproc CL { exec python3 "$dir/client.py" "$front_uri" "$rw" "$depth" "$nreq"; }
  local cpid=$CL_PID
  pids+=("$cpid")
  read -r _ <&"${CL[0]}"
  if [ -n "$out" ]; then
    rm -f "$out"
    strace -f -qq "${sargs[@]}" -e signal=none -o "$out" -p "$front_pid" 2>/dev/null &
    spid=$!
    pids+=("$spid")
    # strace says nothing when it is attached: wait for the threads to
    # show as traced.
    for _ in $(seq 100); do
      grep -q "^TracerPid:[[:space:]]*$spid" /proc/"$front_pid"/status 2>/dev/null && break
      sleep 0.05
    done
    sleep 0.3
  fi
  c0=$(ctxsw "$front_pid")
  echo go >&"${CL[1]}"
  read -r _ <&"${CL[0]}"
  c1=$(ctxsw "$front_pid")
  if [ -n "$out" ]; then
    stop_pid "$spid"
  fi
  echo bye >&"${CL[1]}"
  wait "$cpid" 2>/dev/null || true
  [ "$mode" = ctxsw ] && echo $((c1 - c0))
  return 0
}

printf 'nbdkit-quorum system calls per request: %s requests, %s, nbdkit %s, libnbd %s, %s\n' \
       "$nreq" "$(date -u +%Y-%m-%d)" \
       "$(nbdkit --version | awk '{print $2}')" \
       "$(python3 -c 'import nbd; print(nbd.NBD().get_version())')" \
       "$(. /etc/os-release; echo "$PRETTY_NAME")"
printf '%-15s %-14s %7s %9s %8s %8s %6s %6s %6s %6s %6s %8s\n' \
       workload front ctxsw syscalls futex-w futex-k recv send poll read write \
       ctx/plugin
for w in ${workloads//,/ }; do
  rw=${w%-qd*}; depth=${w#*-qd}
  base=-
  for f in ${fronts//,/ }; do
    front_args=()
    case $f in
      threshold) front_args=(wait-for=threshold); start_front plugin c0 c1 cs ;;
      threshold-fast) front_args=(wait-for=threshold); start_front plugin c0 c1 c2 ;;
      *) start_front "$f" c0 c1 c2 ;;
    esac
    cs=$(run_client "$rw" "$depth" ctxsw)
    [ "$f" = plugin ] && base=$cs
    run_client "$rw" "$depth" strace
    [ -n "$callers" ] && run_client "$rw" "$depth" callers
    stop_front
    [ -n "${KEEP_TRACE:-}" ] && cp "$dir/trace" "$KEEP_TRACE.$w.$f"
    python3 - "$dir/trace" "$nreq" "$w" "$f" "$cs" "$base" <<'PY'
import re, sys
path, n, w, f, cs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
base = sys.argv[6]
ratio = "%.2f" % (cs / int(base)) if base.isdigit() and int(base) else "-"
calls = {}
fw = fk = 0
pat = re.compile(r'^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)')
for line in open(path, errors="replace"):
    if "resumed>" in line:
        continue                 # the second half of an interrupted call
    m = pat.match(line)
    if not m:
        continue
    name = m.group(1)
    calls[name] = calls.get(name, 0) + 1
    if name == "futex":
        if "FUTEX_WAKE" in line:
            fk += 1
        elif "FUTEX_WAIT" in line or "FUTEX_LOCK" in line:
            fw += 1
total = sum(calls.values())
def g(*names):
    return sum(calls.get(x, 0) for x in names) / n
print("%-15s %-14s %7.2f %9.2f %8.2f %8.2f %6.2f %6.2f %6.2f %6.2f %6.2f %8s" %
      (w, f, cs / n, total / n, fw / n, fk / n,
       g("recvfrom", "recvmsg", "recv"), g("sendto", "sendmsg", "send"),
       g("poll", "ppoll"), g("read"), g("write"), ratio))
shown = {"futex", "recvfrom", "recvmsg", "recv", "sendto", "sendmsg", "send",
         "poll", "ppoll", "read", "write"}
rest = sorted((c, x) for x, c in calls.items() if x not in shown and c / n >= 0.05)
if rest:
    print("%-15s %-14s   others: %s" % ("", "", " ".join(
        "%s=%.2f" % (x, c / n) for c, x in reversed(rest))))
PY
    [ -n "$callers" ] && python3 - "$dir/ktrace" "$nreq" <<'PY'
import collections, re, sys
path, n = sys.argv[1], int(sys.argv[2])
frame = re.compile(r'^ > (\S*?)\(([^)+]*)')
def name(obj, sym):
    base = obj.rsplit("/", 1)[-1]
    if base.startswith("libc.so") or base.startswith("libpthread"):
        return None
    if base.startswith("nbdkit-quorum-"):
        return "quorum:" + (sym or "?")
    if base.startswith("libnbd.so"):
        return "libnbd:" + (sym or "?")
    if base == "nbdkit":
        return "nbdkit"
    return base.split(".so")[0] + ":" + (sym or "?")
counts = collections.Counter()
pending = {}            # thread: its unfinished call's kind
cur = None              # [kind, frames] of the call whose stack follows
def close():
    if cur is None:
        return
    names = [x for x in (name(*f) for f in cur[1]) if x]
    key = " <- ".join(names[:2]) if names else "libc"
    counts[(cur[0], key)] += 1
for line in open(path, errors="replace"):
    m = frame.match(line)
    if m:
        if cur is not None:
            cur[1].append(m.groups())
        continue
    close()
    cur = None
    m = re.match(r'^(\d+)\s+(.*)', line)
    if not m:
        continue
    tid, rest = m.groups()
    if "resumed>" in rest:
        kind = pending.pop(tid, None)
        if kind:
            cur = [kind, []]
        continue
    if not rest.startswith("futex("):
        continue
    kind = "wake" if "FUTEX_WAKE" in rest else "wait"
    if "<unfinished" in rest:
        pending[tid] = kind     # its stack comes with the resumption
    else:
        cur = [kind, []]
close()
for (kind, key), c in sorted(counts.items(), key=lambda x: -x[1]):
    if c / n >= 0.05:
        print("%-15s %-14s   futex %s %5.2f  %s" % ("", "", kind, c / n, key))
PY
  done
done
