#!/usr/bin/env bash
# nbdkit-quorum benchmark: are the children asked in parallel?  Every
# child answers reads after a fixed delay; a quorum that asks them all
# at once answers a read in about one delay, one that asks them in turn
# in N delays.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-fanout.sh [SIZE [REPS [SECONDS [DELAY]]]]
#   SIZE     image size (default 64M; the reads are random 4 KiB ones)
#   REPS     repetitions (default 3); medians shown
#   SECONDS  run time of each fio job (default 10)
#   DELAY    delay-read of every child (default 20ms)
#
# Children: nbdkit --filter=noextents --filter=delay file cN.img
# delay-read=DELAY.  Rows, each read with fio (ioengine=nbd, 4 KiB
# random reads, one at a time):
#   child        c0 directly (the baseline: one delay)
#   passthrough  nbdkit nbd socket=c0
#   qemu-3       qemu-nbd driver=quorum over c0 c1 c2
#   filter-3     nbdkit --filter=quorum nbd socket=c0 child=c1 child=c2
#   plugin-3     nbdkit quorum child=c0 child=c1 child=c2
#   plugin-5     nbdkit quorum over c0 .. c4
# Printed: mean and 99th percentile latency, and the ratio of the mean
# to the child's (about 1 when the fan-out is parallel, 3 or 5 if not).

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

size=${1:-64M}
reps=${2:-3}
secs=${3:-10}
delay=${4:-20ms}

bench_requires nbdkit qemu-nbd fio python3

make_full "$dir/c0.img" "$size"
for i in 1 2 3 4; do cp "$dir/c0.img" "$dir/c$i.img"; done
start_children 5 "$dir/c" --filter=noextents --filter=delay -- delay-read="$delay"

rows=(child passthrough qemu-3 filter-3 plugin-3 plugin-5)
declare -A mean p99

# fio_latency URI: "mean-ms p99-ms" of 4 KiB random reads at depth 1.
fio_latency () {
  fio --name=q --ioengine=nbd --uri="$1" --rw=randread --bs=4k \
      --iodepth=1 --runtime="$secs" --time_based --size="$size" \
      --randrepeat=1 --output-format=json 2>"$dir/fio.err" |
    python3 -c '
import json, sys
s = sys.stdin.read()
r = json.loads(s[s.index("{"):])["jobs"][0]["read"]
p = r["clat_ns"]["percentile"]["99.000000"]
print("%.2f %.2f" % (r["lat_ns"]["mean"] / 1e6, p / 1e6))' ||
    { cat "$dir/fio.err" >&2; return 1; }
}

echo "nbdkit-quorum fan-out: delay-read=$delay size=$size reps=$reps fio=${secs}s $(date -u +%Y-%m-%d) $(nproc) cores"
for r in "${rows[@]}"; do : > "$dir/$r"; done
for _ in $(seq "$reps"); do
  for r in "${rows[@]}"; do
    case $r in
      child) fio_latency "$(uri c0)" >> "$dir/$r"; continue ;;
      passthrough) start_front passthrough c0 ;;
      *-3) start_front "${r%-3}" c0 c1 c2 ;;
      *-5) start_front "${r%-5}" c0 c1 c2 c3 c4 ;;
    esac
    fio_latency "$front_uri" >> "$dir/$r"
    stop_front
  done
done

printf '\n%-12s %9s %9s %14s\n' row mean-ms p99-ms mean/child
for r in "${rows[@]}"; do
  mean[$r]=$(awk '{print $1}' "$dir/$r" | median)
  p99[$r]=$(awk '{print $2}' "$dir/$r" | median)
  printf '%-12s %9s %9s %14s\n' "$r" "${mean[$r]}" "${p99[$r]}" \
         "$(ratio "${mean[$r]}" "${mean[child]}")"
done
echo "quorum-latency / single-delayed-child latency: plugin-3 $(ratio "${mean[plugin-3]}" "${mean[child]}"), filter-3 $(ratio "${mean[filter-3]}" "${mean[child]}"), qemu-3 $(ratio "${mean[qemu-3]}" "${mean[child]}") (about 1: parallel; 3: one child after another)"
