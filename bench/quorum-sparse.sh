#!/usr/bin/env bash
# nbdkit-quorum benchmark: copying a sparse image through the quorum.
# The quorum reports a hole only where every child reports one, so a
# client that skips holes (nbdcopy) reads only the data; this measures
# how much that saves against the same copy of a fully allocated image.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-sparse.sh [SIZE [REPS [PERCENT]]]
#   SIZE     image size (default 1G), in /dev/shm
#   REPS     repetitions (default 3); medians shown
#   PERCENT  share of the image that holds data (default 1): one 64 KiB
#            run every 6.4 MiB at 1%, holes in between
#
# Layouts (rows), three `nbdkit file` children each, no noextents:
#   full         fully allocated, identical (the baseline)
#   sparse       PERCENT data, the same holes in every child
#   one-full     sparse, but child 2 has its holes written as zeros:
#                the quorum must then report data everywhere
# Fronts (columns): child (c0 directly, no quorum), qemu (qemu-nbd
# driver=quorum), filter (--filter=quorum nbd socket=c0 child=c1
# child=c2) and plugin (quorum child=c0 child=c1 child=c2).
# Measured: seconds of `nbdcopy URI null:`.  Target (issue 3): sparse
# at most 0.10 x full for the filter and the plugin; printed, and a
# miss is reported but does not change the exit status, which is
# non-zero only when a run failed.

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

size=${1:-1G}
reps=${2:-3}
pct=${3:-1}

bench_requires nbdkit nbdcopy nbdinfo qemu-nbd python3

make_full "$dir/full0.img" "$size"
make_sparse "$dir/sparse0.img" "$size" "$pct"
for i in 1 2; do
  cp "$dir/full0.img" "$dir/full$i.img"
  cp --sparse=always "$dir/sparse0.img" "$dir/sparse$i.img"
done
cp --sparse=always "$dir/sparse0.img" "$dir/one-full0.img"
cp --sparse=always "$dir/sparse0.img" "$dir/one-full1.img"
cp --sparse=never "$dir/sparse0.img" "$dir/one-full2.img"

layouts=(full sparse one-full)
fronts=(child qemu filter plugin)
declare -A val map

echo "nbdkit-quorum sparse copy: size=$size reps=$reps data=$pct% $(date -u +%Y-%m-%d) $(nproc) cores"
for l in "${layouts[@]}"; do
  echo "  $l: children occupy $(allocated_mib "$dir/${l}0.img") $(allocated_mib "$dir/${l}1.img") $(allocated_mib "$dir/${l}2.img") MiB"
  for f in "${fronts[@]}"; do : > "$dir/$l.$f"; done
done

for _ in $(seq "$reps"); do
  # Layouts and fronts interleaved within each repetition.
  for l in "${layouts[@]}"; do
    start_children 3 "$dir/$l"
    for f in "${fronts[@]}"; do
      if [ "$f" = child ]; then
        u=$(uri c0)
      else
        start_front "$f" c0 c1 c2
        u=$front_uri
      fi
      copy_seconds "$u" >> "$dir/$l.$f"
      # What the front says is data (once per layout and front).
      if [ -z "${map[$l.$f]:-}" ]; then
        map[$l.$f]=$(nbdinfo --map --totals --json "$u" | python3 -c '
import json, sys
print("%.1f" % sum(e["percent"] for e in json.load(sys.stdin) if not e["type"] & 1))')
      fi
      [ "$f" = child ] || stop_front
    done
    stop_children
  done
done

for l in "${layouts[@]}"; do
  for f in "${fronts[@]}"; do val[$l.$f]=$(median < "$dir/$l.$f"); done
done

printf '\nseconds to copy to null: (median of %s)\n' "$reps"
printf '%-10s' layout
for f in "${fronts[@]}"; do printf ' %9s' "$f"; done
printf '   %s\n' "data reported by each front (%)"
for l in "${layouts[@]}"; do
  printf '%-10s' "$l"
  for f in "${fronts[@]}"; do printf ' %9s' "${val[$l.$f]}"; done
  printf '  '
  for f in "${fronts[@]}"; do printf ' %s' "${map[$l.$f]}"; done
  echo
done

printf '\nratio against the full layout (baseline), same front\n'
printf '%-15s' ratio
for f in "${fronts[@]}"; do printf ' %9s' "$f"; done
echo
for l in sparse one-full; do
  printf '%-15s' "$l/full"
  for f in "${fronts[@]}"; do printf ' %9s' "$(ratio "${val[$l.$f]}" "${val[full.$f]}" %.3f)"; done
  echo
done
for f in filter plugin; do
  r=$(ratio "${val[sparse.$f]}" "${val[full.$f]}" %.3f)
  if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= 0.10 else 1)' "$r"; then
    echo "target sparse/full <= 0.10, $f: met ($r)"
  else
    echo "target sparse/full <= 0.10, $f: MISSED ($r)"
  fi
done
