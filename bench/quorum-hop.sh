#!/usr/bin/env bash
# nbdkit-quorum benchmark: what one hop to a child costs, and where the
# filter form's difference from the plugin form comes from.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-hop.sh [SIZE [REPS [SECONDS]]]
#   SIZE     image size (default 1G), in /dev/shm
#   REPS     repetitions (default 3); medians shown
#   SECONDS  run time of each fio job (default 10)
#
# Children: three `nbdkit --filter=noextents file` servers.  Rows, each
# under 4 KiB random reads and writes at queue depth 32 (fio):
#   passthrough  nbdkit nbd socket=c0: one hop through nbdkit-nbd-plugin
#   plugin-1     nbdkit quorum child=c0 vote-threshold=1: one hop
#                through the quorum engine
#   plugin       nbdkit quorum child=c0 child=c1 child=c2
#   filter       nbdkit --filter=quorum nbd socket=c0 child=c1 child=c2:
#                child 0 is reached through nbdkit-nbd-plugin
#   filter-file  nbdkit --filter=quorum file c0.img child=c1 child=c2:
#                child 0 is the image itself
# Printed: IOPS and the front's CPU per request (us), and the ratios
# filter/plugin, filter-file/plugin and plugin-1/passthrough (CPU).
# If filter-file is close to the plugin and filter is not, the filter
# form's cost is the nbd plugin's hop, not the quorum filter's.

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

size=${1:-1G}
reps=${2:-3}
secs=${3:-10}

bench_requires nbdkit fio python3 bc

make_full "$dir/c0.img" "$size"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
start_children 3 "$dir/c" --filter=noextents
hz=$(getconf CLK_TCK)

rows=(passthrough plugin-1 plugin filter filter-file)
workloads=(randread randwrite)
declare -A iops us

echo "nbdkit-quorum hop cost: size=$size reps=$reps fio=${secs}s QD32 4 KiB $(date -u +%Y-%m-%d) $(nproc) cores"
for w in "${workloads[@]}"; do
  for r in "${rows[@]}"; do : > "$dir/$w.$r"; : > "$dir/$w.$r.us"; done
  for _ in $(seq "$reps"); do
    for r in "${rows[@]}"; do
      front_args=()
      case $r in
        passthrough) start_front passthrough c0 ;;
        plugin-1) front_args=(vote-threshold=1); start_front plugin c0 ;;
        *) start_front "$r" c0 c1 c2 ;;
      esac
      c0=$(cpu_ticks "$front_pid")
      n=$(fio_iops "$front_uri" "$w" 32)
      c1=$(cpu_ticks "$front_pid")
      stop_front
      echo "$n" >> "$dir/$w.$r"
      echo "($c1 - $c0) / $hz * 1000000 / ($n * $secs)" | bc -l >> "$dir/$w.$r.us"
    done
  done
  for r in "${rows[@]}"; do
    iops[$w.$r]=$(median < "$dir/$w.$r")
    us[$w.$r]=$(median < "$dir/$w.$r.us")
  done
done

printf '\n%-10s' workload
for r in "${rows[@]}"; do printf ' %18s' "$r"; done
printf '\n%-10s' ''
for r in "${rows[@]}"; do printf ' %18s' "IOPS  us/req"; done
echo
for w in "${workloads[@]}"; do
  printf '%-10s' "$w"
  for r in "${rows[@]}"; do
    printf ' %10s %7.1f' "${iops[$w.$r]}" "${us[$w.$r]}"
  done
  echo
done
printf '\n%-10s %14s %19s %26s\n' workload filter/plugin filter-file/plugin "plugin-1/passthrough (CPU)"
for w in "${workloads[@]}"; do
  printf '%-10s %14s %19s %26s\n' "$w" \
         "$(ratio "${iops[$w.filter]}" "${iops[$w.plugin]}")" \
         "$(ratio "${iops[$w.filter-file]}" "${iops[$w.plugin]}")" \
         "$(ratio "${us[$w.plugin-1]}" "${us[$w.passthrough]}")"
done
