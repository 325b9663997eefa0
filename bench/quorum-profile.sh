#!/usr/bin/env bash
# nbdkit-quorum benchmark, optional mode: where the front spends its CPU
# during a sequential read.  Not run by bench/run-all unless asked
# (--profile): a profile is for reading, not for comparing runs.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-profile.sh [SIZE [SECONDS [FRONT [TOP]]]]
#   SIZE     image size (default 1G), in /dev/shm
#   SECONDS  how long to read (default 10): whole-image `nbdcopy URI
#            null:` copies one after another until the time is up (at
#            least one; under callgrind one copy may take much longer)
#   FRONT    plugin (default) or filter, over three children
#            nbdkit --filter=noextents file cN.img
#   TOP      symbols printed (default 15)
# PROFILER=auto (default), perf, perf-cpu-clock or callgrind:
#   perf            perf record -g -p FRONT-PID (hardware cycles)
#   perf-cpu-clock  the same on the cpu-clock software event, for
#                   machines (VMs) without hardware counters
#   callgrind       the front runs under valgrind --tool=callgrind
#                   (much slower: give it a small SIZE)
#   auto            perf if `perf stat -e instructions true` counts,
#                   else perf-cpu-clock if perf can sample, else callgrind
# Printed: the profiler used, what was read, and the top symbols by
# self time (perf) or by instructions executed (callgrind).

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

size=${1:-1G}
secs=${2:-10}
front=${3:-plugin}
top_n=${4:-15}
profiler=${PROFILER:-auto}

case $front in plugin|filter) ;; *) echo "bench: FRONT must be plugin or filter" >&2; exit 1 ;; esac
bench_requires nbdkit nbdcopy python3

if [ "$profiler" = auto ]; then
  if command -v perf >/dev/null &&
     perf stat -x, -e instructions true 2>&1 | grep -q '^[0-9][0-9]*,'; then
    profiler=perf
  elif command -v perf >/dev/null &&
       perf record -q -e cpu-clock -o "$dir/probe.data" -- true >/dev/null 2>&1; then
    profiler=perf-cpu-clock
  else
    profiler=callgrind
  fi
fi
case $profiler in
  perf|perf-cpu-clock) bench_requires perf ;;
  callgrind) bench_requires valgrind callgrind_annotate ;;
  *) echo "bench: PROFILER=$profiler: auto, perf, perf-cpu-clock or callgrind" >&2; exit 1 ;;
esac

make_full "$dir/c0.img" "$size"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
img_bytes=$(stat -c %s "$dir/c0.img")
start_children 3 "$dir/c" --filter=noextents

sock=$dir/front.sock
if [ "$profiler" = callgrind ]; then
  # In the foreground (-f) so that valgrind's process is the server.
  if [ "$front" = plugin ]; then
    set -- "$plugin" syslog=false child="$(uri c0)"
  else
    set -- --filter="$filter" nbd socket="$dir/c0.sock" syslog=false
  fi
  valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
           -q nbdkit -f -P "$dir/front.pid" -U "$sock" \
           "$@" child="$(uri c1)" child="$(uri c2)" &
  pids+=("$!")
  front_pid=$(wait_pidfile "$dir/front.pid" "$sock")
  front_uri="nbd+unix:///?socket=$sock"
else
  start_front "$front" c0 c1 c2
  event=cycles
  [ "$profiler" = perf-cpu-clock ] && event=cpu-clock
  perf record -q -g -e "$event" -p "$front_pid" -o "$dir/perf.data" \
       >"$dir/perf.log" 2>&1 &
  perf_pid=$!
  pids+=("$perf_pid")
  sleep 0.5
fi

# Read for SECONDS, whole copies only (at least one): a client that
# hangs up in the middle of a read is not what this profiles (and makes
# nbdkit 1.32 abort under valgrind in raw_send_socket).
copies=0
t0=$(now)
end=$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))' "$t0" "$secs")
while [ "$copies" = 0 ] ||
      python3 -c 'import sys, time; sys.exit(0 if time.time() < float(sys.argv[1]) else 1)' "$end"; do
  nbdcopy "$front_uri" null:
  copies=$((copies + 1))
done
t1=$(now)

echo "nbdkit-quorum profile: front=$front profiler=$profiler size=$size read for $(python3 -c 'import sys; print("%.1f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1") s, $copies whole copies ($(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) * int(sys.argv[2]) / 1048576 / (float(sys.argv[4]) - float(sys.argv[3]))))' "$img_bytes" "$copies" "$t0" "$t1") MiB/s) $(date -u +%Y-%m-%d) $(nproc) cores"

if [ "$profiler" = callgrind ]; then
  stop_front   # the server exits and callgrind writes its file
  printf '\ntop %s symbols by instructions executed (self), front process\n' "$top_n"
  callgrind_annotate --inclusive=no "$dir/callgrind.out" > "$dir/cg.txt" 2>/dev/null
  awk '/^-+$/ {d++; next} d >= 3 && NF' "$dir/cg.txt" > "$dir/cg-top.txt"
  head -n "$((top_n + 3))" "$dir/cg-top.txt"
else
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
  stop_pid "$perf_pid"
  stop_front
  perf report -i "$dir/perf.data" --stdio --no-children -g none \
       --sort dso,symbol 2>/dev/null |
    grep -v '^#' | grep -v '^$' | sed -E 's/( +-)+ *$//' > "$dir/perf.txt"
  printf '\ntop %s symbols by self time (%s samples), front process\n' "$top_n" "$event"
  head -n "$top_n" "$dir/perf.txt"
  printf '\ntop %s outside the kernel (our code, libnbd, nbdkit, libc)\n' "$top_n"
  # Not grep | head: under pipefail grep may die of SIGPIPE when head
  # has read enough, and fail the run.
  awk -v n="$top_n" '!/kernel\.kallsyms/ && k++ < n' "$dir/perf.txt"
fi
