#!/usr/bin/env bash
# nbdkit-quorum benchmark: sequential read throughput of the quorum
# plugin as the number of children and the request size grow, against
# one bare child read the same way.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-scaling.sh [SIZE [REPS [CHILDREN [REQUEST-SIZES]]]]
#   SIZE           image size (default 1G), in /dev/shm
#   REPS           repetitions (default 3); medians shown
#   CHILDREN       child counts, comma separated (default 2,3,5)
#   REQUEST-SIZES  nbdcopy --request-size values (default 4K,64K,1M,32M)
#
# Children: nbdkit --filter=noextents file cN.img, identical and fully
# allocated (no block status: data paths only).  Each cell is
# `nbdcopy --request-size=R URI null:` with nbdcopy's other defaults
# (4 connections when the server allows multi-conn, which the file
# plugin and the quorum plugin do; at most 64 requests and 16 MiB in
# flight per connection, so one 32 MiB request at a time).  Columns:
# child (c0 directly, the baseline) and plugin-N (nbdkit quorum over
# c0 .. cN-1, default vote-threshold); then each plugin-N / child.

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

size=${1:-1G}
reps=${2:-3}
IFS=, read -r -a counts <<< "${3:-2,3,5}"
IFS=, read -r -a rsizes <<< "${4:-4K,64K,1M,32M}"

bench_requires nbdkit nbdcopy python3

bytes () {
  python3 -c '
import sys
s = sys.argv[1]; m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
print(int(s[:-1]) * m[s[-1].upper()] if s[-1].isalpha() else int(s))' "$1"
}

max=0
for n in "${counts[@]}"; do [ "$n" -gt "$max" ] && max=$n; done
make_full "$dir/c0.img" "$size"
for ((i = 1; i < max; i++)); do cp "$dir/c0.img" "$dir/c$i.img"; done
img_bytes=$(stat -c %s "$dir/c0.img")
start_children "$max" "$dir/c" --filter=noextents

cols=(child)
for n in "${counts[@]}"; do cols+=("plugin-$n"); done
declare -A val

echo "nbdkit-quorum scaling: size=$size reps=$reps children=${counts[*]} request sizes=${rsizes[*]} $(date -u +%Y-%m-%d) $(nproc) cores"
for rs in "${rsizes[@]}"; do
  for c in "${cols[@]}"; do : > "$dir/$rs.$c"; done
done
for _ in $(seq "$reps"); do
  for rs in "${rsizes[@]}"; do
    b=$(bytes "$rs")
    # Columns interleaved within each repetition.
    for c in "${cols[@]}"; do
      if [ "$c" = child ]; then
        u=$(uri c0)
      else
        n=${c#plugin-}
        names=()
        for ((i = 0; i < n; i++)); do names+=("c$i"); done
        start_front plugin "${names[@]}"
        u=$front_uri
      fi
      s=$(copy_seconds "$u" --request-size="$b")
      python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1048576 / float(sys.argv[2])))' \
              "$img_bytes" "$s" >> "$dir/$rs.$c"
      [ "$c" = child ] || stop_front
    done
  done
done

printf '\nsequential read, MiB/s (median of %s)\n' "$reps"
printf '%-8s' request
for c in "${cols[@]}"; do printf ' %10s' "$c"; done
for n in "${counts[@]}"; do printf ' %10s' "p$n/child"; done
echo
for rs in "${rsizes[@]}"; do
  printf '%-8s' "$rs"
  for c in "${cols[@]}"; do
    val[$rs.$c]=$(median < "$dir/$rs.$c")
    printf ' %10s' "${val[$rs.$c]}"
  done
  for n in "${counts[@]}"; do
    printf ' %10s' "$(ratio "${val[$rs.plugin-$n]}" "${val[$rs.child]}")"
  done
  echo
done
