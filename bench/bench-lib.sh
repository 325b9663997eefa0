# Shared helpers of the nbdkit-quorum benchmarks; sourced, not run.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Every process a script starts is recorded by PID in $pids and killed
# by PID when it is stopped or when the script exits (never by name:
# other people's nbdkit processes may be running).  Images and sockets
# live in one directory under /dev/shm, removed at exit.
# Variables set here (front_uri, last_pid ...) are read by the scripts.
# shellcheck shell=bash disable=SC2034

set -euo pipefail
export PYENV_VERSION=system LC_ALL=C

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
plugin=$top/plugins/quorum/.libs/nbdkit-quorum-plugin.so
filter=$top/filters/quorum/.libs/nbdkit-quorum-filter.so

# bench_requires TOOL...: stop at once if a tool or the build is missing.
bench_requires () {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null ||
      { echo "bench: $t is missing (scripts/install-deps; apt-get install fio)" >&2; exit 1; }
  done
  if ! [ -f "$plugin" ] || ! [ -f "$filter" ]; then
    echo "bench: build first (make), or run bench/run-all" >&2; exit 1
  fi
}

dir=$(mktemp -d /dev/shm/quorum-bench.XXXXXX)
pids=()

# alive PID: running, not a zombie left for init to reap (daemonized
# nbdkit is init's child, and some inits reap late).
alive () {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# Kill one PID we started: TERM, wait up to 5 s, then KILL; forget it so
# that a later cleanup can never hit a recycled PID.
stop_pid () {
  local p=$1
  kill "$p" 2>/dev/null || true
  # A server started in the background (qemu-nbd) is our child: reap it,
  # or it stays a zombie that kill -0 still finds.  For the others (nbdkit
  # daemonizes) wait fails at once and kill -0 polls.
  wait "$p" 2>/dev/null || true
  for _ in $(seq 50); do alive "$p" || break; sleep 0.1; done
  alive "$p" && kill -9 "$p" 2>/dev/null
  forget_pid "$p"
}

# forget_pid PID: a process of ours that has ended and been waited for,
# no longer to be killed at exit (its PID may be reused).
forget_pid () {
  local i keep=()
  for i in "${pids[@]}"; do [ "$i" = "$1" ] || keep+=("$i"); done
  pids=("${keep[@]}")
}

bench_cleanup () {
  local p
  steal_summary
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# wait_pidfile FILE [SOCKET]: echo the PID once the server is up.
wait_pidfile () {
  local f=$1 s=${2:-}
  for _ in $(seq 100); do
    if [ -s "$f" ] && { [ -z "$s" ] || [ -S "$s" ]; }; then
      cat "$f"; return 0
    fi
    sleep 0.1
  done
  echo "bench: server with pid file $f did not start" >&2
  return 1
}

# start_nbdkit NAME ARGS...: an nbdkit server on $dir/NAME.sock; sets
# last_pid.  ARGS are nbdkit's (filters, plugin, parameters).
start_nbdkit () {
  local name=$1; shift
  rm -f "$dir/$name.sock" "$dir/$name.pid"
  nbdkit -P "$dir/$name.pid" -U "$dir/$name.sock" "$@"
  last_pid=$(wait_pidfile "$dir/$name.pid" "$dir/$name.sock")
  pids+=("$last_pid")
}

# uri NAME: the NBD URI of server NAME.
uri () { echo "nbd+unix:///?socket=$dir/$1.sock"; }

# start_children N PREFIX [FILTER...] [-- PARAM...]: children c0..c(N-1),
# nbdkit [FILTER...] file PREFIXi.img [PARAM...], e.g.
# start_children 3 "$dir/c" --filter=delay -- delay-read=20ms.
# Sets child_pids.
start_children () {
  local n=$1 img=$2 i pre=() post=(); shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do pre+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  post=("$@")
  child_pids=()
  for ((i = 0; i < n; i++)); do
    start_nbdkit "c$i" "${pre[@]}" file "$img$i.img" "${post[@]}"
    child_pids+=("$last_pid")
  done
}

stop_children () {
  local p
  for p in "${child_pids[@]}"; do stop_pid "$p"; done
  child_pids=()
}

# start_front KIND CHILD...: the front under test, on $dir/front.sock,
# over the named child servers; sets front_pid and front_uri.
#   plugin       nbdkit quorum child=c0 child=c1 ...
#   filter       nbdkit --filter=quorum nbd socket=c0 child=c1 ...
#   filter-file  nbdkit --filter=quorum file c0.img child=c1 ... (child 0
#                is the image itself, not a server: no hop)
#   passthrough  nbdkit nbd socket=c0 (one forwarding hop, first child)
#   qemu         qemu-nbd --image-opts driver=quorum,children.N...
#   qemu-file    the same, but child 0 is a file node on c0.img (QEMU's
#                shape of filter-file: no hop for child 0)
#   floor        nbdkit floor-plugin.so socket=c0 ...: the least an
#                nbdkit plugin can do for the same work, at queue depth
#                1 (bench/floor-plugin.c, compiled on first use)
#   floor-serial the same, its requests on one thread a connection
#   ffloor       nbdkit --filter=floor-filter.so nbd socket=c0
#                floor-socket=c1 ...: the same floor in the shape of
#                the filter row (the nbd plugin is child 0)
# Extra quorum parameters may be given in $front_args (an array); filters
# between the quorum filter and child 0 of filter-file (e.g.
# --filter=noextents) in $front_file_filters (an array).  The
# nbdkit fronts run under the command in $front_wrap (an array, e.g.
# env LD_PRELOAD=...) if it is set: it is started in the background and
# stopped with the front.
front_args=()
front_file_filters=()
front_wrap=()
front_wrap_pid=
front_exec () {
  if [ ${#front_wrap[@]} -eq 0 ]; then
    "$@"
  else
    "${front_wrap[@]}" "$@" &
    front_wrap_pid=$!
    pids+=("$front_wrap_pid")
  fi
}
start_front () {
  local kind=$1 sock=$dir/front.sock c i=0 o args=(); shift
  rm -f "$sock" "$dir/front.pid"
  case $kind in
    plugin)
      for c in "$@"; do args+=("child=$(uri "$c")"); done
      front_exec nbdkit -P "$dir/front.pid" -U "$sock" "$plugin" syslog=false \
             "${args[@]}" "${front_args[@]}" ;;
    filter)
      for c in "${@:2}"; do args+=("child=$(uri "$c")"); done
      front_exec nbdkit -P "$dir/front.pid" -U "$sock" --filter="$filter" \
             nbd socket="$dir/$1.sock" syslog=false \
             "${args[@]}" "${front_args[@]}" ;;
    filter-file)
      for c in "${@:2}"; do args+=("child=$(uri "$c")"); done
      front_exec nbdkit -P "$dir/front.pid" -U "$sock" --filter="$filter" \
             "${front_file_filters[@]}" file "$dir/$1.img" syslog=false \
             "${args[@]}" "${front_args[@]}" ;;
    passthrough)
      nbdkit -P "$dir/front.pid" -U "$sock" nbd socket="$dir/$1.sock" ;;
    ffloor)
      [ -f "$dir/floor-filter.so" ] || build_floor
      for c in "${@:2}"; do args+=("floor-socket=$dir/$c.sock"); done
      nbdkit -P "$dir/front.pid" -U "$sock" --filter="$dir/floor-filter.so" \
             nbd socket="$dir/$1.sock" "${args[@]}" ;;
    floor|floor-serial)
      [ -f "$dir/floor-plugin.so" ] || build_floor
      for c in "$@"; do args+=("socket=$dir/$c.sock"); done
      o=false; [ "$kind" = floor-serial ] && o=true
      nbdkit -P "$dir/front.pid" -U "$sock" "$dir/floor-plugin.so" \
             serial="$o" "${args[@]}" ;;
    qemu|qemu-file)
      o=driver=quorum,vote-threshold=$(( $# / 2 + 1 ))
      if [ "$kind" = qemu-file ]; then
        # Cache and aio as for the qemu front: qemu-nbd's options below,
        # so child 0 is opened O_DIRECT, which tmpfs (Linux 6.6 and
        # later) takes as cached I/O.  Older kernels refuse O_DIRECT on
        # tmpfs: there the same I/O without it.
        o+=",children.0.driver=file,children.0.filename=$dir/$1.img"
        if [ -z "${tmpfs_direct:-}" ]; then
          tmpfs_direct=yes
          dd if=/dev/zero of="$dir/direct.probe" bs=4096 count=1 \
             oflag=direct 2>/dev/null || tmpfs_direct=no
          rm -f "$dir/direct.probe"
        fi
        [ "$tmpfs_direct" = yes ] || o+=",children.0.cache.direct=off"
        i=1; shift
      fi
      for c in "$@"; do
        o+=",children.$i.driver=nbd,children.$i.server.type=unix"
        o+=",children.$i.server.path=$dir/$c.sock"
        i=$((i + 1))
      done
      qemu-nbd --persistent --shared=8 --cache=none --aio=threads \
               -k "$sock" --pid-file="$dir/front.pid" --image-opts "$o" &
      # qemu-nbd stays in the foreground: its PID is known at once.
      pids+=("$!") ;;
    *) echo "bench: unknown front $kind" >&2; return 1 ;;
  esac
  front_pid=$(wait_pidfile "$dir/front.pid" "$sock")
  [[ " ${pids[*]} " == *" $front_pid "* ]] || pids+=("$front_pid")
  front_uri="nbd+unix:///?socket=$sock"
}

# build_floor: compile bench/floor-plugin.c into $dir/floor-plugin.so,
# and as a filter into $dir/floor-filter.so.
build_floor () {
  local v
  for v in plugin filter; do
    # shellcheck disable=SC2046
    cc -std=gnu11 -O2 -Wall -fPIC -shared -o "$dir/floor-$v.so" \
       $([ $v = filter ] && echo -DFLOOR_FILTER) \
       "$top/bench/floor-plugin.c" $(pkg-config --cflags --libs libnbd nbdkit) \
       -lpthread || return 1
  done
}

stop_front () {
  stop_pid "$front_pid"
  if [ -n "$front_wrap_pid" ]; then stop_pid "$front_wrap_pid"; fi
  front_wrap_pid=
}

# Images.  make_full FILE SIZE: fully allocated, non-zero data.
make_full () {
  nbdkit -U - pattern "$2" --run "nbdcopy \"\$uri\" \"$1\""
}

# make_sparse FILE SIZE PERCENT: a hole everywhere but one 64 KiB run of
# data every 64K*100/PERCENT bytes (at least one run).
make_sparse () {
  python3 - "$1" "$2" "$3" <<'EOF'
import sys
path, size, pct = sys.argv[1], sys.argv[2], float(sys.argv[3])
mult = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}
size = int(size[:-1]) * mult[size[-1].upper()] if size[-1].isalpha() else int(size)
run = 64 << 10
stride = max(run, int(run * 100 / pct) // run * run)
with open(path, 'wb') as f:
    f.truncate(size)
    for off in range(0, size - run + 1, stride):
        f.seek(off)
        f.write(bytes(((off >> 16) + i) & 0xff or 1 for i in range(256)) * (run // 256))
EOF
}

# Hypervisor steal.  On a virtual machine the host may run other work
# on our cores: /proc/stat counts the time a virtual CPU wanted to run
# and could not as "steal".  A run that lost a tenth of its CPU so
# measures the host, not the code (seen here: IOPS fell from 12k to
# 2-4k within an hour, with vmstat showing st 13-39%; on that host steal
# also rose with the guest's wake-ups: 0-2% for two spinning loops,
# 4-11% for one fio QD1 writer against nbdkit memory).  Each timed run records the share of the machine's
# CPU time stolen while it ran; at exit the script prints the median and
# the worst, and a WARNING when a run lost more than STEAL_LIMIT percent
# (default 5), so that such a table is run again, not quoted.  The
# scripts whose tables are ratios of rows (quorum-bench.sh,
# quorum-floor.sh) repeat such a run, up to STEAL_RETRIES times (default
# 2), and keep only the repeat: the summary counts what was repeated.
#
# steal_now: "STEAL TOTAL" ticks of all CPUs so far.
steal_now () {
  awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i
                     print $9, t; exit }' /proc/stat
}
# steal_note "STEAL TOTAL": append the steal share since that reading to
# $dir/steal (one percentage a timed run).
steal_note () {
  local s0 t0 s1 t1
  read -r s0 t0 <<< "$1"
  read -r s1 t1 <<< "$(steal_now)"
  awk -v s="$((s1 - s0))" -v t="$((t1 - t0))" \
      'BEGIN { if (t > 0) printf "%.1f\n", 100 * s / t }' >> "$dir/steal"
  return 0
}
# steal_retry TRY WHAT: true when the timed run just recorded lost more
# than STEAL_LIMIT percent to steal and TRY (0, 1, ...) is below
# STEAL_RETRIES: the run is then struck from the record, to be repeated
# by the caller, who must not keep its figures.
steal_retry () {
  local last
  [ "$1" -lt "${STEAL_RETRIES:-2}" ] || return 1
  [ -s "$dir/steal" ] || return 1
  last=$(tail -n 1 "$dir/steal")
  awk -v s="$last" -v l="${STEAL_LIMIT:-5}" 'BEGIN { exit !(s > l) }' ||
    return 1
  sed -i '$d' "$dir/steal"
  echo "$last" >> "$dir/steal.redone"
  echo "bench: $2: the host took $last% of the CPU, running it again" >&2
}
steal_summary () {
  local limit=${STEAL_LIMIT:-5}
  if [ -s "$dir/steal.redone" ]; then
    echo "steal: $(wc -l < "$dir/steal.redone") runs repeated because the host took more than $limit% of the CPU during them"
  fi
  [ -s "$dir/steal" ] || return 0
  sort -n "$dir/steal" | awk -v lim="$limit" '
    { a[NR] = $1 }
    END {
      m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
      n = 0; for (i = 1; i <= NR; i++) if (a[i] > lim) n++
      printf "steal: %d timed runs, median %.1f%%, worst %.1f%% of the CPU taken by the host\n", NR, m, a[NR]
      if (n)
        printf "WARNING: %d runs lost more than %s%% to steal: these figures measure the host; run again when vmstat shows st near 0\n", n, lim
    }'
  return 0
}

# for_seconds SECONDS COMMAND...: run COMMAND once, then again until
# SECONDS have passed since it first began; $runs says how often it ran.
for_seconds () {
  local end
  end=$(python3 -c 'import sys, time; print(time.time() + float(sys.argv[1]))' "$1")
  shift
  runs=0
  while [ "$runs" = 0 ] ||
        python3 -c 'import sys, time; sys.exit(time.time() >= float(sys.argv[1]))' "$end"; do
    "$@"
    runs=$((runs + 1))
  done
}
# perf_event: the event perf can sample here, "cycles" where the CPU
# counts them, "cpu-clock" on a VM without hardware counters, nothing
# (and false) without perf or when perf may not sample.
perf_event () {
  command -v perf >/dev/null || return 1
  if perf stat -x, -e instructions true 2>&1 | grep -q '^[0-9][0-9]*,'; then
    echo cycles
  elif perf record -q -e cpu-clock -o "$dir/probe.data" -- true >/dev/null 2>&1; then
    rm -f "$dir/probe.data"
    echo cpu-clock
  else
    return 1
  fi
}
# perf_start PID FILE: sample PID's threads with call chains (DWARF:
# neither the quorum nor Debian's C library keeps frame pointers) into
# FILE, in the background ($perf_pid); perf_stop ends it.
perf_start () {
  perf record -q --call-graph dwarf,8192 -F 999 -e "${perf_ev:-cycles}" \
       -p "$1" -o "$2" >"$2.log" 2>&1 &
  perf_pid=$!
  pids+=("$perf_pid")
  sleep 0.5
}
perf_stop () {
  kill -INT "$perf_pid" 2>/dev/null || true
  wait "$perf_pid" || true
  stop_pid "$perf_pid"
}

# fio_iops URI RW DEPTH: IOPS of 4 KiB random RW (randread, randwrite)
# at queue depth DEPTH for $secs seconds over $size, through fio's nbd
# engine; fio's errors go to stderr if it fails.
fio_iops () {
  local st
  st=$(steal_now)
  fio --name=q --ioengine=nbd --uri="$1" --rw="$2" --bs=4k \
      --iodepth="$3" --runtime="$secs" --time_based \
      --size="$size" --randrepeat=1 --buffer_pattern=0x5a5aa5a5 \
      --output-format=json 2>"$dir/fio.err" |
    python3 -c "import json,sys; s=sys.stdin.read(); j=json.loads(s[s.index('{'):])['jobs'][0]; print('%.0f' % (j['read']['iops'] + j['write']['iops']))" ||
    { cat "$dir/fio.err" >&2; return 1; }
  steal_note "$st"
}

# allocated_mib FILE: what the file really occupies.
allocated_mib () { du -k "$1" | awk '{printf "%.1f", $1 / 1024}'; }

# cpu_ticks PID: user + system CPU ticks; sys_ticks PID: system only
# (the kernel's work for the process's system calls).
cpu_ticks () { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_ticks () { awk '{print $15}' "/proc/$1/stat"; }
hwm_kb () { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
# client_seconds VAR: set VAR to the CPU seconds (user + system) of
# every process this shell has waited for so far (clients run in
# command substitutions).  Not "$(client_seconds)": 'times' must run in
# this shell, not in a subshell of its own.
client_seconds () {
  times > "$dir/times"
  printf -v "$1" '%s' "$(awk 'NR == 2 {
         n = split($0, f, /[ms ]+/); s = 0
         for (i = 1; i + 1 <= n; i += 2) s += f[i] * 60 + f[i + 1]
         print s }' "$dir/times")"
}
# children_ticks: CPU ticks of the child servers in $child_pids.
children_ticks () {
  local p s=0
  for p in "${child_pids[@]}"; do s=$((s + $(cpu_ticks "$p"))); done
  echo "$s"
}
now () { date +%s.%N; }
median () { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# ratio A B [FMT]: A/B, or - when either is missing or B is zero.
ratio () {
  python3 -c '
import sys
try:
    a, b = float(sys.argv[1]), float(sys.argv[2])
    print(sys.argv[3] % (a / b))
except (ValueError, ZeroDivisionError):
    print("-")' "$1" "$2" "${3:-%.2f}"
}

# mib_per_s BYTES T0 T1
mib_per_s () {
  python3 -c 'import sys; b, t0, t1 = map(float, sys.argv[1:]); print("%.1f" % (b / 1048576 / (t1 - t0)))' "$@"
}

# copy_seconds URI [NBDCOPY-OPTIONS...]: nbdcopy URI null:, elapsed s.
copy_seconds () {
  local u=$1 t0 t1 st; shift
  st=$(steal_now)
  t0=$(now); nbdcopy "$@" "$u" null:; t1=$(now)
  steal_note "$st"
  python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1"
}
