#!/usr/bin/env bash
# nbdkit-quorum: the whole benchmark from a clean checkout.  Installs
# what is missing (scripts/install-deps, plus fio and bc), builds if the
# modules are not built, then runs every benchmark of this directory one
# after another; each prints its own tables and ratios.  Ends with
# "N ran, N failed" and exits non-zero if any of them failed.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/run-all.sh [--profile] [SIZE [REPS [SECONDS]]]
#   SIZE     image size (default 1G) for quorum-bench, -sparse, -scaling
#            (and -profile); the fan-out uses 64M: its reads are 4 KiB
#   REPS     repetitions (default 3); medians shown
#   SECONDS  run time of each fio job, and of the profile (default 10)
#   --profile  also bench/quorum-profile.sh (perf or callgrind)
#
# Runs, in this order:
#   quorum-bench.sh --pass=both SIZE REPS SECONDS  fronts x workloads,
#                                                  with and without
#                                                  noextents children
#   quorum-sparse.sh SIZE REPS                     1% data vs full copy
#   quorum-fanout.sh 64M REPS SECONDS              delayed children
#   quorum-scaling.sh SIZE REPS                    2/3/5 children x
#                                                  4K..32M requests
#   quorum-hop.sh SIZE REPS SECONDS                one hop's cost; the
#                                                  filter with a local
#                                                  plugin as child 0
#   quorum-floor.sh SIZE 5 SECONDS                 QD1 against the
#                                                  least an nbdkit
#                                                  plugin can do
#   quorum-state.sh SIZE REPS SECONDS              writes with state=
#                                                  on /dev/shm and on
#                                                  ext4 (a loop image;
#                                                  root) vs without
#   quorum-rebuild.sh SIZE REPS SECONDS            replace onto an
#                                                  empty server vs
#                                                  nbdcopy; IOPS during
#                                                  a rebuild; scrub vs
#                                                  seqread
#   quorum-jitter.sh randwrite-qd32 16 REPS        second-by-second
#                                                  rates: qemu, plugin,
#                                                  filter
#   quorum-profile.sh SIZE SECONDS (--profile)     top symbols
# Use a quiet machine: other load moves every figure.  A full run at
# the defaults takes roughly 90 minutes on 2 cores.

set -u
cd "$(dirname "$0")/.." || exit 1

profile=false
if [ "${1:-}" = --profile ]; then profile=true; shift; fi
size=${1:-1G}
reps=${2:-3}
secs=${3:-10}

# linux-perf also for quorum-bench.sh's "ours" column.
extra="fio bc linux-perf"
QUORUM_EXTRA_PKGS="$extra ${QUORUM_EXTRA_PKGS:-}" scripts/install-deps || {
  echo "bench/run-all: installing dependencies failed"
  exit 1
}

if [ ! -f plugins/quorum/.libs/nbdkit-quorum-plugin.so ] ||
   [ ! -f filters/quorum/.libs/nbdkit-quorum-filter.so ]; then
  echo "=== build"
  if ! { { [ -f configure ] || autoreconf -fi; } &&
         { [ -f Makefile ] || ./configure -q; } &&
         make -j"$(nproc)" >build.log 2>&1; }; then
    cat build.log
    echo "bench/run-all: the build failed"
    exit 1
  fi
fi

ran=0
failures=()
run () {
  echo
  echo "=== bench/$*"
  ran=$((ran + 1))
  "bench/$1" "${@:2}" || failures+=("$1 (exit $?)")
}

run quorum-bench.sh --pass=both "$size" "$reps" "$secs"
run quorum-sparse.sh "$size" "$reps"
run quorum-fanout.sh 64M "$reps" "$secs"
run quorum-scaling.sh "$size" "$reps"
run quorum-hop.sh "$size" "$reps" "$secs"
run quorum-floor.sh "$size" 5 "$secs"
run quorum-state.sh "$size" "$reps" "$secs"
run quorum-rebuild.sh "$size" "$reps" "$secs"
run quorum-jitter.sh randwrite-qd32 16 "$reps"
$profile && run quorum-profile.sh "$size" "$secs"

echo
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$ran ran, ${#failures[@]} failed"
[ ${#failures[@]} -eq 0 ]
