#!/usr/bin/env bash
# nbdkit-quorum benchmark: the quorum plugin and filter against QEMU's
# quorum driver, a single forwarding hop and the bare children, on the
# same three child servers, in one run.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-bench.sh [SIZE [REPS [SECONDS]]]
#   SIZE     image size (default 1G), in /dev/shm
#   REPS     repetitions of each measurement (default 3); medians shown
#   SECONDS  run time of each fio job (default 10)
#
# Fronts ("rows"), all over the same three `nbdkit file` children under
# --filter=noextents (QEMU's NBD export asks for block status before
# every read and the file plugin answers slowly on tmpfs: compare data
# paths, not that):
#   qemu         qemu-nbd --image-opts driver=quorum,... (the baseline)
#   filter       nbdkit --filter=quorum nbd socket=c0 child=c1 child=c2
#   plugin       nbdkit quorum child=c0 child=c1 child=c2
#   passthrough  nbdkit nbd socket=c0 (what one forwarding hop costs)
#   limit        the three children driven at once with no front
# Not part of 'make check': timing belongs here, never in tests.

set -euo pipefail
export PYENV_VERSION=system LC_ALL=C

top=$(cd "$(dirname "$0")/.." && pwd)
size=${1:-1G}
reps=${2:-3}
secs=${3:-10}
plugin=$top/plugins/quorum/.libs/nbdkit-quorum-plugin.so
filter=$top/filters/quorum/.libs/nbdkit-quorum-filter.so

for t in nbdkit nbdcopy qemu-nbd fio python3; do
  command -v $t >/dev/null || { echo "bench: $t is missing (scripts/install-deps; apt-get install fio)"; exit 1; }
done
[ -f "$plugin" ] && [ -f "$filter" ] || { echo "bench: build first (make)"; exit 1; }

dir=$(mktemp -d /dev/shm/quorum-bench.XXXXXX)
pids=()
cleanup () {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# Fully allocated, identical children.
nbdkit -U - pattern "$size" --run "nbdcopy \"\$uri\" $dir/c0.img"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
cp "$dir/c0.img" "$dir/src.img"
for i in 0 1 2; do
  nbdkit -P "$dir/c$i.pid" -U "$dir/c$i.sock" --filter=noextents \
         file "$dir/c$i.img"
done
for i in 0 1 2; do
  for _ in $(seq 50); do [ -s "$dir/c$i.pid" ] && break; sleep 0.1; done
  pids+=("$(cat "$dir/c$i.pid")")
done
child () { echo "nbd+unix:///?socket=$dir/c$1.sock"; }

# Start a front; sets front_pid and front_uri.
start_front () {
  local sock=$dir/front.sock
  rm -f "$sock" "$dir/front.pid"
  case $1 in
    plugin)
      nbdkit -P "$dir/front.pid" -U "$sock" "$plugin" syslog=false \
             child="$(child 0)" child="$(child 1)" child="$(child 2)" ;;
    filter)
      nbdkit -P "$dir/front.pid" -U "$sock" --filter="$filter" \
             nbd socket="$dir/c0.sock" syslog=false \
             child="$(child 1)" child="$(child 2)" ;;
    passthrough)
      nbdkit -P "$dir/front.pid" -U "$sock" nbd socket="$dir/c0.sock" ;;
    qemu)
      local o=driver=quorum,vote-threshold=2 i
      for i in 0 1 2; do
        o+=",children.$i.driver=nbd,children.$i.server.type=unix"
        o+=",children.$i.server.path=$dir/c$i.sock"
      done
      qemu-nbd --persistent --shared=8 --cache=none --aio=threads \
               -k "$sock" --pid-file="$dir/front.pid" --image-opts "$o" &
      ;;
  esac
  for _ in $(seq 100); do [ -S "$sock" ] && [ -s "$dir/front.pid" ] && break; sleep 0.1; done
  front_pid=$(cat "$dir/front.pid")
  pids+=("$front_pid")
  front_uri="nbd+unix:///?socket=$sock"
}

stop_front () {
  kill "$front_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$front_pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$front_pid" 2>/dev/null || true
}

cpu_ticks () { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kb () { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

now () { date +%s.%N; }

# One workload against one URI; prints "value unit".
run_workload () {
  local w=$1 uri=$2 t0 t1
  case $w in
    seqread|seqread-1conn)
      local extra=
      [ "$w" = seqread-1conn ] && extra=--connections=1
      t0=$(now); nbdcopy $extra "$uri" null:; t1=$(now)
      python3 -c "import os; print('%.1f' % (os.path.getsize('$dir/c0.img') / 1048576 / ($t1 - $t0)))" ;;
    seqwrite)
      t0=$(now); nbdcopy "$dir/src.img" "$uri"; t1=$(now)
      python3 -c "import os; print('%.1f' % (os.path.getsize('$dir/src.img') / 1048576 / ($t1 - $t0)))" ;;
    randread-qd1|randread-qd32|randwrite-qd1|randwrite-qd32)
      local rw=${w%-qd*} qd=${w#*-qd}
      fio --name=q --ioengine=nbd --uri="$uri" --rw="$rw" --bs=4k \
          --iodepth="$qd" --runtime="$secs" --time_based \
          --size="$size" --randrepeat=1 --buffer_pattern=0x5a5aa5a5 \
          --output-format=json 2>"$dir/fio.err" |
        python3 -c "import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index('{'):])['jobs'][0]; print('%.0f' % (j['read']['iops'] + j['write']['iops']))" ||
        { cat "$dir/fio.err" >&2; return 1; } ;;
  esac
}

# The limit row: the same workload on the three children at once; the
# figure is the per-child rate (what each copy moved), as a quorum front
# must move three copies for every byte it serves.
run_limit () {
  local w=$1 i f=()
  for i in 0 1 2; do
    run_workload "$w" "$(child $i)" > "$dir/limit.$i" &
    f+=($!)
  done
  wait "${f[@]}"
  sort -n "$dir"/limit.[012] | head -1
}

workloads=(seqread seqread-1conn randread-qd1 randread-qd32 seqwrite randwrite-qd1 randwrite-qd32)
fronts=(qemu filter plugin passthrough limit)
declare -A val cpu rss

median () { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "nbdkit-quorum benchmark: size=$size reps=$reps fio=${secs}s $(date -u +%Y-%m-%d) $(nproc) cores"
for w in "${workloads[@]}"; do
  for f in "${fronts[@]}"; do : > "$dir/$w.$f"; : > "$dir/$w.$f.cpu"; done
  for r in $(seq "$reps"); do
    # Rows interleaved within each repetition: ratios share a window.
    for f in "${fronts[@]}"; do
      if [ "$f" = limit ]; then
        run_limit "$w" >> "$dir/$w.$f"
        continue
      fi
      start_front "$f"
      c0=$(cpu_ticks "$front_pid")
      run_workload "$w" "$front_uri" >> "$dir/$w.$f"
      c1=$(cpu_ticks "$front_pid")
      echo $((c1 - c0)) >> "$dir/$w.$f.cpu"
      h=$(hwm_kb "$front_pid")
      [ "${rss[$f]:-0}" -lt "$h" ] && rss[$f]=$h
      stop_front
    done
  done
  for f in "${fronts[@]}"; do
    val[$w.$f]=$(median < "$dir/$w.$f")
    cpu[$w.$f]=$( [ -s "$dir/$w.$f.cpu" ] && median < "$dir/$w.$f.cpu" || echo -)
  done
done

hz=$(getconf CLK_TCK)
printf '\n%-15s %-6s' workload unit
for f in "${fronts[@]}"; do printf ' %11s' "$f"; done
printf ' %8s %8s %8s\n' filt/qemu plug/qemu plug/lim
for w in "${workloads[@]}"; do
  case $w in seq*) unit=MiB/s ;; *) unit=IOPS ;; esac
  printf '%-15s %-6s' "$w" "$unit"
  for f in "${fronts[@]}"; do printf ' %11s' "${val[$w.$f]}"; done
  python3 - "${val[$w.qemu]}" "${val[$w.filter]}" "${val[$w.plugin]}" "${val[$w.limit]}" <<'EOF'
import sys
q, fi, p, l = map(float, sys.argv[1:])
r = lambda a, b: '%8.2f' % (a / b) if b else '%8s' % '-'
print(' %s %s %s' % (r(fi, q), r(p, q), r(p, l)))
EOF
done
printf '\nfront CPU seconds per run (median; sequential rows move the whole image)\n'
for w in "${workloads[@]}"; do
  printf '%-15s' "$w"
  for f in qemu filter plugin passthrough; do
    printf ' %s=%.2f' "$f" "$(echo "${cpu[$w.$f]} / $hz" | bc -l)"
  done
  echo
done
printf '\npeak RSS (MiB):'
for f in qemu filter plugin passthrough; do printf ' %s=%.1f' "$f" "$(echo "${rss[$f]:-0} / 1024" | bc -l)"; done
echo
