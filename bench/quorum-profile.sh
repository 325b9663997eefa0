#!/usr/bin/env bash
# nbdkit-quorum benchmark, optional mode: where the front spends its CPU
# during a sequential read, or 4 KiB random reads or writes at a queue
# depth.  Not run by bench/run-all unless asked (--profile): a profile
# is for reading, not for comparing runs.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-profile.sh [--root=DIR] [--workload=W]
#                                [SIZE [SECONDS [FRONT [TOP]]]]
#   --root   the same in the Debian 13 root that scripts/in-debian13
#            keeps in DIR (nbdkit 1.42, libnbd 1.22, its own perf)
#   --workload  seqread (default): whole-image `nbdcopy URI null:`
#            copies one after another until SECONDS are up (at least
#            one; under callgrind one copy may take much longer);
#            randread-qdN or randwrite-qdN: fio, 4 KiB random reads or
#            writes at queue depth N for SECONDS, as quorum-bench.sh
#            runs them
#   SIZE     image size (default 1G), in /dev/shm
#   SECONDS  how long the workload runs (default 10)
#   FRONT    plugin (default) or filter, over three children
#            nbdkit --filter=noextents file cN.img
#   TOP      symbols printed (default 15)
# PROFILER=auto (default), perf, perf-cpu-clock or callgrind:
#   perf            perf record -p FRONT-PID on hardware cycles, 999
#                   samples a second, call chains unwound with DWARF
#   perf-cpu-clock  the same on the cpu-clock software event, for
#                   machines (VMs) without hardware counters
#   callgrind       the front runs under valgrind --tool=callgrind
#                   (much slower: give it a small SIZE)
#   auto            perf if `perf stat -e instructions true` counts,
#                   else perf-cpu-clock if perf can sample, else callgrind
# Printed: the profiler used, what was done and the front's user and
# system CPU a unit of it (a GiB read, a request), and the top symbols
# by self time (perf) or by instructions executed (callgrind).  With
# perf, also the samples by object (bench/perf-objects.py: the kernel,
# the quorum's own .so, libnbd, nbdkit, the C library, the rest), with
# the C library's charged to their caller: the quorum's "per unit" is
# what a front whose own code cost nothing would save a unit, to set
# against quorum-bench.sh's "cut" for the same row.

case ${1:-} in
  --root=*)
    exec "$(dirname "$0")/../scripts/in-debian13" "$1" --with="fio bc linux-perf" \
         --build bench/quorum-profile.sh "${@:2}" ;;
esac

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

workload=seqread
case ${1:-} in
  --workload=*) workload=${1#--workload=}; shift ;;
esac
case $workload in
  seqread) ;;
  randread-qd[1-9]*|randwrite-qd[1-9]*)
    qd=${workload##*-qd}
    case $qd in *[!0-9]*)
      echo "bench: --workload=$workload: the depth after -qd must be a number" >&2; exit 1 ;;
    esac
    rw=${workload%-qd*} ;;
  *) echo "bench: --workload=$workload: seqread, randread-qdN or randwrite-qdN (N a queue depth)" >&2
     exit 1 ;;
esac

size=${1:-1G}
secs=${2:-10}
front=${3:-plugin}
top_n=${4:-15}
profiler=${PROFILER:-auto}

case $front in plugin|filter) ;; *) echo "bench: FRONT must be plugin or filter" >&2; exit 1 ;; esac
bench_requires nbdkit nbdcopy python3
[ "$workload" = seqread ] || bench_requires fio

if [ "$profiler" = auto ]; then
  case $(perf_event || true) in
    cycles) profiler=perf ;;
    cpu-clock) profiler=perf-cpu-clock ;;
    *) profiler=callgrind ;;
  esac
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
  perf_ev=cycles
  [ "$profiler" = perf-cpu-clock ] && perf_ev=cpu-clock
  perf_start "$front_pid" "$dir/perf.data"
fi

# front_ticks: the front's user and system CPU ticks so far.
# per_unit TICKS UNITS SCALE FORMAT: TICKS in seconds times SCALE, a
# unit (a GiB, a request), printed with FORMAT.
front_ticks () { awk '{print $14, $15}' "/proc/$front_pid/stat"; }
hz=$(getconf CLK_TCK)
per_unit () {
  python3 -c 'import sys; t, n, hz, k = map(float, sys.argv[1:5]); print(sys.argv[5] % (t * k / hz / n if n else 0))' \
          "$1" "$2" "$hz" "$3" "$4"
}

if [ "$workload" = seqread ]; then
  # Read for SECONDS, whole copies only (at least one): a client that
  # hangs up in the middle of a read is not what this profiles (and
  # makes nbdkit 1.32 abort under valgrind in raw_send_socket).
  read -r u0 s0 < <(front_ticks)
  t0=$(now)
  for_seconds "$secs" nbdcopy "$front_uri" null:
  copies=$runs
  t1=$(now)
  read -r u1 s1 < <(front_ticks)
  gib=$(python3 -c 'import sys; print(int(sys.argv[1]) * int(sys.argv[2]) / 2**30)' "$img_bytes" "$copies")
  user_us=$(per_unit "$((u1 - u0))" "$gib" 1 %.3f)
  sys_us=$(per_unit "$((s1 - s0))" "$gib" 1 %.3f)
  unit="s a GiB"
  did="read for $(python3 -c 'import sys; print("%.1f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1") s, $copies whole copies ($(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) * int(sys.argv[2]) / 1048576 / (float(sys.argv[4]) - float(sys.argv[3]))))' "$img_bytes" "$copies" "$t0" "$t1") MiB/s); the front's CPU a GiB: user $user_us s, system $sys_us s"
else
  # The front's CPU ticks around the fio run, for a request's user and
  # system time (under the profiler: higher than without it).
  read -r u0 s0 < <(front_ticks)
  iops=$(fio_iops "$front_uri" "$rw" "$qd")
  read -r u1 s1 < <(front_ticks)
  requests=$(python3 -c 'import sys; print(float(sys.argv[1]) * float(sys.argv[2]))' "$iops" "$secs")
  user_us=$(per_unit "$((u1 - u0))" "$requests" 1e6 %.1f)
  sys_us=$(per_unit "$((s1 - s0))" "$requests" 1e6 %.1f)
  unit="us a request"
  did="$workload for $secs s: $iops IOPS; the front's CPU a request: user $user_us us, system $sys_us us"
fi

echo "nbdkit-quorum profile: front=$front profiler=$profiler size=$size $did $(date -u +%Y-%m-%d) $(nproc) cores $(nbdkit --version 2>/dev/null | head -n 1)"

if [ "$profiler" = callgrind ]; then
  stop_front   # the server exits and callgrind writes its file
  printf '\ntop %s symbols by instructions executed (self), front process\n' "$top_n"
  callgrind_annotate --inclusive=no "$dir/callgrind.out" > "$dir/cg.txt" 2>/dev/null
  awk '/^-+$/ {d++; next} d >= 3 && NF' "$dir/cg.txt" > "$dir/cg-top.txt"
  head -n "$((top_n + 3))" "$dir/cg-top.txt"
else
  perf_stop
  stop_front
  perf report -i "$dir/perf.data" --stdio --no-children -g none \
       --sort dso,symbol 2>/dev/null |
    grep -v '^#' | grep -v '^$' | sed -E 's/( +-)+ *$//' > "$dir/perf.txt"
  printf '\ntop %s symbols by self time (%s samples), front process\n' "$top_n" "$perf_ev"
  head -n "$top_n" "$dir/perf.txt"
  printf '\ntop %s outside the kernel (our code, libnbd, nbdkit, libc)\n' "$top_n"
  # Not grep | head: under pipefail grep may die of SIGPIPE when head
  # has read enough, and fail the run.
  awk -v n="$top_n" '!/kernel\.kallsyms/ && k++ < n' "$dir/perf.txt"

  # The same samples by object: the share of all of the front's
  # samples and of its user-space ones; for the fio workloads also that
  # share with each sample in the C library (or ld.so) charged to the
  # first object up its stack that is not (ours, libnbd's or nbdkit's
  # locks, allocations and system call wrappers), and what that comes to
  # a request of the user time measured above.
  perf script -i "$dir/perf.data" --no-inline -F ip,sym,dso 2>/dev/null > "$dir/script.txt"
  printf '\nby object, front process (per unit: %s)\n' "$unit"
  python3 "$top/bench/perf-objects.py" "$dir/script.txt" "${user_us:--}" "$top_n"
fi
