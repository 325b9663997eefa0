#!/usr/bin/env bash
# nbdkit-quorum benchmark: how close the quorum is to the least any
# nbdkit plugin can do for the same work, and whether that least
# reaches a given multiple of QEMU's quorum.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-floor.sh [--root=DIR] [--qd=N] [SIZE [REPS [SECONDS]]]
#   --root   the same run on Debian 13's stack, in the root that
#            scripts/in-debian13 keeps in DIR (as quorum-bench.sh)
#   --qd     fio's queue depth (default 1).  Above 1 the rows that
#            serialize a connection's requests (floor-serial, floor-1)
#            are left out: they are no floor there.
#   SIZE     image size (default 1G), in /dev/shm
#   REPS     repetitions (default 5), the rows interleaved; medians shown
#   SECONDS  run time of each fio job (default 8)
# Environment: STEAL_LIMIT (percent, default 5) and STEAL_RETRIES
# (default 2): a timed run during which the host took more than
# STEAL_LIMIT percent of the CPU is run again, up to STEAL_RETRIES
# times (bench-lib.sh); the script ends with the steal it saw.
#
# Children: three `nbdkit --filter=noextents file` servers.  Rows, each
# under fio's 4 KiB random reads and writes at queue depth N:
#   qemu          qemu-nbd driver=quorum over c0 c1 c2 (the baseline)
#   plugin        nbdkit quorum child=c0 child=c1 child=c2
#   floor         nbdkit floor-plugin.so socket=c0 socket=c1 socket=c2
#   floor-serial  the same with serial=true
#   floor-1       nbdkit floor-plugin.so socket=c0 serial=true: one child
#   child         c0 itself, no front
#   filter        nbdkit --filter=quorum nbd socket=c0 child=c1 child=c2,
#                 the filter row of bench/quorum-bench.sh
#   ffloor        nbdkit --filter=floor-filter.so nbd socket=c0
#                 floor-socket=c1 floor-socket=c2: the floor in that
#                 shape (floor-plugin.c built as a filter), child 0
#                 the nbd plugin on the request's thread
# floor-plugin.c (this directory; compiled here into the scratch
# directory) is the least an nbdkit plugin can do to serve three
# children: per-connection libnbd handles, every command issued at once
# and polled on the request's own thread, no other thread, a memcmp for
# the vote; at a higher queue depth each request takes a lane of its
# own (a connection to every child), so that requests share nothing.
# floor-serial also spares nbdkit's worker threads (the
# connection's requests run on one thread).  So at queue depth 1
# neither floor can be beaten by a plugin, the quorum included: what
# separates floor-serial from QEMU is nbdkit's and libnbd's own path
# plus the three children, not the quorum.  In the same way ffloor/floor
# is the most the filter form over nbdkit-nbd-plugin can reach of the
# plugin form at queue depth 1.  At a higher depth the floor is the
# least with nothing shared between requests, not a bound no plugin
# can beat: its children serve a connection per lane, where the quorum
# and QEMU open one to each child.
# Printed: IOPS and the front's CPU per request (us, user + system),
# then plugin/qemu, floor/qemu, fserial/qemu, plugin/floor,
# plugin/fserial, filter/plugin, ffloor/floor and filter/ffloor (at a
# higher depth those without floor-serial).

case ${1:-} in
  --root=*)
    exec "$(dirname "$0")/../scripts/in-debian13" "$1" --with="fio bc" \
         --build bench/quorum-floor.sh "${@:2}" ;;
esac

qd=1
case ${1:-} in
  --qd=*) qd=${1#--qd=}; shift ;;
esac
case $qd in
  ''|*[!0-9]*|0) echo "$0: --qd=$qd: give a queue depth of 1 or more" >&2
                 exit 1 ;;
esac

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

size=${1:-1G}
reps=${2:-5}
secs=${3:-8}

bench_requires nbdkit qemu-nbd fio python3 cc pkg-config

build_floor

make_full "$dir/c0.img" "$size"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
start_children 3 "$dir/c" --filter=noextents
hz=$(getconf CLK_TCK)

rows=(qemu plugin floor floor-serial floor-1 child filter ffloor)
# column name, numerator row, denominator row
cols=(plug/qemu:plugin:qemu floor/qemu:floor:qemu fserial/qemu:floor-serial:qemu
      plug/floor:plugin:floor plug/fserial:plugin:floor-serial
      filt/plug:filter:plugin ffl/floor:ffloor:floor filt/ffloor:filter:ffloor)
if [ "$qd" -gt 1 ]; then
  rows=(qemu plugin floor child filter ffloor)
  # The columns whose two rows are left.
  keep=()
  for c in "${cols[@]}"; do
    IFS=: read -r _ num den <<< "$c"
    [[ " ${rows[*]} " == *" $num "* && " ${rows[*]} " == *" $den "* ]] &&
      keep+=("$c")
  done
  cols=("${keep[@]}")
fi
workloads=(randread randwrite)
declare -A iops us

echo "nbdkit-quorum floor: size=$size reps=$reps fio=${secs}s QD$qd 4 KiB $(date -u +%Y-%m-%d) $(nproc) cores"
echo "$(nbdkit --version), $(nbdsh --version 2>/dev/null | sed -n 2p), $(qemu-img --version | head -n 1)"
for w in "${workloads[@]}"; do
  for r in "${rows[@]}"; do : > "$dir/$w.$r"; : > "$dir/$w.$r.us"; done
  for _ in $(seq "$reps"); do
    for r in "${rows[@]}"; do
      for try in $(seq 0 "${STEAL_RETRIES:-2}"); do
        case $r in
          qemu|plugin|floor|floor-serial|filter|ffloor) start_front "$r" c0 c1 c2 ;;
          floor-1) start_front floor-serial c0 ;;
          child) front_pid=; front_uri=$(uri c0) ;;
        esac
        if [ -n "$front_pid" ]; then
          c0=$(cpu_ticks "$front_pid")
          n=$(fio_iops "$front_uri" "$w" "$qd")
          c1=$(cpu_ticks "$front_pid")
          stop_front
          u=$(ratio "$(( (c1 - c0) * 1000000 / hz ))" "$(( n * secs ))" "%.1f")
        else
          n=$(fio_iops "$front_uri" "$w" "$qd")
          u=
        fi
        steal_retry "$try" "$w $r" || break
      done
      echo "$n" >> "$dir/$w.$r"
      [ -z "$u" ] || echo "$u" >> "$dir/$w.$r.us"
    done
  done
  for r in "${rows[@]}"; do
    iops[$w.$r]=$(median < "$dir/$w.$r")
    us[$w.$r]=$( [ -s "$dir/$w.$r.us" ] && median < "$dir/$w.$r.us" || echo -)
  done
done

printf '\n%-10s %-6s' workload unit
for r in "${rows[@]}"; do printf ' %12s' "$r"; done
for c in "${cols[@]}"; do printf ' %12s' "${c%%:*}"; done
printf '\n'
for w in "${workloads[@]}"; do
  printf '%-10s %-6s' "$w" IOPS
  for r in "${rows[@]}"; do printf ' %12s' "${iops[$w.$r]}"; done
  for c in "${cols[@]}"; do
    IFS=: read -r _ num den <<< "$c"
    printf ' %12s' "$(ratio "${iops[$w.$num]}" "${iops[$w.$den]}")"
  done
  printf '\n%-10s %-6s' "" us/req
  for r in "${rows[@]}"; do printf ' %12s' "${us[$w.$r]}"; done
  printf '\n'
done
echo
echo "us/req: the front's CPU (user + system) per request; fio's own and"
echo "the children's are not counted."
if [ "$qd" -eq 1 ]; then
  echo "floor and floor-serial are the least"
  echo "an nbdkit plugin can do here (bench/floor-plugin.c): a ratio of QEMU"
  echo "that they do not reach is out of reach of the quorum too.  ffloor is"
  echo "that least for the filter over nbdkit-nbd-plugin: a filter/plugin"
  echo "ratio above ffl/floor is out of the filter's reach."
else
  echo "At QD$qd floor and ffloor give each request a lane of its"
  echo "own (a connection to every child) and share nothing else: what they"
  echo "reach a design that shares nothing reaches, but they bound nothing."
fi
