#!/usr/bin/env bash
# nbdkit-quorum benchmark: the quorum plugin and filter against QEMU's
# quorum driver, a single forwarding hop and the bare children, on the
# same three child servers, in one run.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-bench.sh [--root=DIR] [--pass=both|noextents|extents]
#                              [--workloads=W,...] [--fronts=F,...]
#                              [SIZE [REPS [SECONDS]]]
#   --root   the same run on Debian 13's stack (nbdkit 1.42, libnbd 1.22,
#            QEMU 10: its quorum driver is the baseline), built and run in
#            the root that scripts/in-debian13 keeps in DIR
#   --pass   which children (default both, one after the other, see below)
#   --workloads, --fronts  only these rows and fronts (default all; the
#            names are the tables'), e.g. more repetitions of one row:
#            --workloads=randwrite-qd32 --fronts=qemu,plugin,filter 1G 10 8
#   SIZE     image size (default 1G), in /dev/shm
#   REPS     repetitions of each measurement (default 3); medians shown
#   SECONDS  run time of each fio job (default 10)
# Environment: STEAL_LIMIT (percent, default 5) and STEAL_RETRIES
# (default 2): a timed run during which the host took more than
# STEAL_LIMIT percent of the CPU is run again, up to STEAL_RETRIES
# times (bench-lib.sh); the script ends with the steal it saw.
#
# Fronts ("rows"), all over the same three `nbdkit file` children:
#   qemu         qemu-nbd --image-opts driver=quorum,... (the baseline)
#   filter       nbdkit --filter=quorum nbd socket=c0 child=c1 child=c2
#   plugin       nbdkit quorum child=c0 child=c1 child=c2
#   passthrough  nbdkit nbd socket=c0 (what one forwarding hop costs)
#   limit        the three children driven at once with no front
#   qemu-file    qemu-nbd --image-opts driver=quorum,children.0.driver=file,
#                children.0.filename=c0.img,children.1/2 as in qemu
#   filter-file  nbdkit --filter=quorum [--filter=noextents] file c0.img
#                child=c1 child=c2
#   floor        QD1 rows only: nbdkit floor-plugin.so socket=c0 socket=c1
#                socket=c2, the least an nbdkit plugin can do for the
#                same work (bench/floor-plugin.c, bench/quorum-floor.sh):
#                a ratio of QEMU it does not reach, in the same run, is
#                out of the quorum's reach too.  Columns floor/qemu and
#                plug/floor.
#   ffloor       QD1 rows only: the same floor in the filter row's shape,
#                nbdkit --filter=floor-filter.so nbd socket=c0
#                floor-socket=c1 floor-socket=c2.  Columns filt/plug,
#                ffl/floor (what the shape costs at best: a filter/plugin
#                ratio it does not reach is out of the filter's reach)
#                and filt/ffloor.
# qemu-file and filter-file are the filter form as users run it: its plugin, child
# 0, local and in-process (here it reads c0's image itself; the c0
# server stays up but idle), against QEMU's quorum of the same shape,
# one local file child and two NBD children, with the qemu row's cache
# and aio options (so child 0 is opened O_DIRECT, which tmpfs takes as
# cached I/O; see bench-lib.sh for kernels that refuse it).  The filter
# row keeps nbdkit-nbd-plugin as its child 0, as in older tables: it
# measures that plugin's hop (a reader thread, a pipe, structured
# replies) as much as the quorum filter.  In the noextents pass,
# filter-file has --filter=noextents between the quorum and file, like
# the other children; QEMU has no such filter, but its file node keeps
# what it learned of the block status (tens of lseek calls a run on a
# fully allocated image, QEMU 6.2 and later), so its reads do not pay
# for asking.  Ratios ffile/qfile and ffile/plug compare filter-file
# with those two.  The two rows make a run about 2/5 longer than with
# the five before them: each costs what every other row does, REPS x
# (4 fio jobs of SECONDS + 3 copies of SIZE + start-up) a pass (at
# 1G 3 8, some 4 minutes a pass more).
# Passes: "noextents" runs the children under --filter=noextents, so
# only data paths are compared (QEMU's NBD client asks for block status
# before reads, and the file plugin answers it slowly on tmpfs);
# "extents" runs them bare, to show that quirk.  With both, a last
# table divides each rate of the second by the first.
# After the CPU table, "plugin against the targets": for the rows where
# the cores are busy (sequential, QD32), the targets of issue 17 and
# how much CPU a request (or GiB) the plugin would have to shed to
# reach them with the cores as busy as they were, against its front's
# whole user-space time (ours, libnbd's, nbdkit's, the C library's)
# and, where perf can sample (linux-perf), against what the quorum's
# own code costs of it (one more run of each of those rows, the plugin
# under perf; bench/perf-objects.py): a cut larger than that is out of
# the quorum's reach, whatever its code did.
# bench/run-all runs this with the other benchmarks of this directory.
# Not part of 'make check': timing belongs here, never in tests.

case ${1:-} in
  --root=*)
    exec "$(dirname "$0")/../scripts/in-debian13" "$1" --with="fio bc linux-perf" \
         --build bench/quorum-bench.sh "${@:2}" ;;
esac

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

passes=noextents,extents only_w= only_f=
while [ $# -gt 0 ]; do
  case $1 in
    --pass=*) passes=${1#--pass=}; passes=${passes/both/noextents,extents} ;;
    --workloads=*) only_w=${1#--workloads=} ;;
    --fronts=*) only_f=${1#--fronts=} ;;
    *) break ;;
  esac
  shift
done
size=${1:-1G}
reps=${2:-3}
secs=${3:-10}
for p in ${passes//,/ }; do
  case $p in noextents|extents) ;; *) echo "bench: --pass=$p: noextents, extents or both" >&2; exit 1 ;; esac
done

bench_requires nbdkit nbdcopy qemu-nbd fio python3 bc cc pkg-config

# Fully allocated, identical children.
make_full "$dir/c0.img" "$size"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
cp "$dir/c0.img" "$dir/src.img"
img_bytes=$(stat -c %s "$dir/c0.img")
child () { uri "c$1"; }

# One workload against one URI; prints the rate (MiB/s or IOPS).
run_workload () {
  local w=$1 uri=$2 t0 t1 st extra=()
  case $w in
    seqread|seqread-1conn)
      [ "$w" = seqread-1conn ] && extra=(--connections=1)
      st=$(steal_now)
      t0=$(now); nbdcopy "${extra[@]}" "$uri" null:; t1=$(now)
      steal_note "$st"
      mib_per_s "$img_bytes" "$t0" "$t1" ;;
    seqwrite)
      st=$(steal_now)
      t0=$(now); nbdcopy "$dir/src.img" "$uri"; t1=$(now)
      steal_note "$st"
      mib_per_s "$img_bytes" "$t0" "$t1" ;;
    randread-qd1|randread-qd32|randwrite-qd1|randwrite-qd32)
      fio_iops "$uri" "${w%-qd*}" "${w#*-qd}" ;;
  esac
}

# The limit row: the same workload on the three children at once; the
# figure is the per-child rate (what each copy moved), as a quorum front
# must move three copies for every byte it serves.
run_limit () {
  local w=$1 i p f=()
  for i in 0 1 2; do
    run_workload "$w" "$(child $i)" > "$dir/limit.$i" &
    f+=($!)
  done
  # Each job separately: 'wait a b c' reports only the last one.
  for p in "${f[@]}"; do wait "$p"; done
  sort -n "$dir"/limit.[012] | head -1
}

workloads=(seqread seqread-1conn randread-qd1 randread-qd32 seqwrite randwrite-qd1 randwrite-qd32)
fronts=(qemu filter plugin passthrough limit qemu-file filter-file floor ffloor)
# --workloads and --fronts: a subset, in the tables' order; the columns
# of fronts left out show "-".
pick () {
  local kind=$1 list=$2 x; shift 2
  for x in ${list//,/ }; do
    [[ " $* " == *" $x "* ]] ||
      { echo "bench: --$kind=$list: $x is not one of: $*" >&2; exit 1; }
  done
}
if [ -n "$only_w" ]; then
  pick workloads "$only_w" "${workloads[@]}"
  keep=()
  for w in "${workloads[@]}"; do
    [[ ,$only_w, == *,$w,* ]] && keep+=("$w")
  done
  workloads=("${keep[@]}")
fi
[ -n "$only_f" ] && pick fronts "$only_f" "${fronts[@]}"
front_picked () { [ -z "$only_f" ] || [[ ,$only_f, == *,$1,* ]]; }
declare -A val cpu cpusys rss cpuch cpucl ours
hz=$(getconf CLK_TCK)
# The rows of "plugin against the targets", and what perf samples here
# (nothing: that table's "ours" column is left out).
target_rows=" seqread randread-qd32 seqwrite randwrite-qd32 "
perf_ev=$(perf_event || true)

# untimed_run W: W once against the front, its rate and steal not kept.
untimed_run () {
  run_workload "$1" "$front_uri" > /dev/null
  sed -i '$d' "$dir/steal"
}

# One pass: every workload on every front, children with or without
# --filter=noextents; fills val/cpu/rss under "PASS.workload.front".
run_pass () {
  local pass=$1 w f c0 c1 h r try
  if [ "$pass" = noextents ]; then
    start_children 3 "$dir/c" --filter=noextents
    front_file_filters=(--filter=noextents)
  else
    start_children 3 "$dir/c"
    front_file_filters=()
  fi
  for w in "${workloads[@]}"; do
    for f in "${fronts[@]}"; do
      : > "$dir/$w.$f"; : > "$dir/$w.$f.cpu"
      : > "$dir/$w.$f.cpuch"; : > "$dir/$w.$f.cpucl"; : > "$dir/$w.$f.cpusys"
    done
    for _ in $(seq "$reps"); do
      # Rows interleaved within each repetition: ratios share a window.
      for f in "${fronts[@]}"; do
        # The floors serve one request a connection at a time.
        if [[ $f = *floor && $w != *-qd1 ]]; then continue; fi
        front_picked "$f" || continue
        if [ "$f" = limit ]; then
          run_limit "$w" >> "$dir/$w.$f"
          continue
        fi
        for try in $(seq 0 "${STEAL_RETRIES:-2}"); do
          start_front "$f" c0 c1 c2
          c0=$(cpu_ticks "$front_pid"); s0=$(sys_ticks "$front_pid")
          k0=$(children_ticks); client_seconds l0
          r=$(run_workload "$w" "$front_uri")
          c1=$(cpu_ticks "$front_pid"); s1=$(sys_ticks "$front_pid")
          k1=$(children_ticks); client_seconds l1
          steal_retry "$try" "$w $f" || break
          stop_front
        done
        echo "$r" >> "$dir/$w.$f"
        echo $((c1 - c0)) >> "$dir/$w.$f.cpu"
        echo $((s1 - s0)) >> "$dir/$w.$f.cpusys"
        echo $((k1 - k0)) >> "$dir/$w.$f.cpuch"
        echo "$l1 - $l0" | bc -l >> "$dir/$w.$f.cpucl"
        h=$(hwm_kb "$front_pid")
        [ "${rss[$pass.$f]:-0}" -lt "$h" ] && rss[$pass.$f]=$h
        stop_front
      done
    done
    # One more run of the plugin for the targets table, under perf: the
    # share of the front's user time that is the quorum's own code, with
    # the C library's samples charged to their callers.  Not a timed
    # run: its rate and its steal are not kept.
    if [ -n "$perf_ev" ] && [[ $target_rows == *" $w "* ]] &&
         front_picked plugin; then
      start_front plugin c0 c1 c2
      perf_start "$front_pid" "$dir/perf.data"
      # A sequential row moves the image again until SECONDS are up,
      # for enough samples.
      for_seconds "$secs" untimed_run "$w"
      perf_stop
      stop_front
      # A perf that failed leaves too few samples: "ours" is then "-".
      perf script -i "$dir/perf.data" --no-inline -F ip,sym,dso \
           > "$dir/perf.script" 2>/dev/null || true
      ours[$pass.$w]=$(python3 "$top/bench/perf-objects.py" --ours "$dir/perf.script")
      rm -f "$dir/perf.data" "$dir/perf.script"
    fi
    for f in "${fronts[@]}"; do
      val[$pass.$w.$f]=$( [ -s "$dir/$w.$f" ] && median < "$dir/$w.$f" || echo -)
      cpu[$pass.$w.$f]=$( [ -s "$dir/$w.$f.cpu" ] && median < "$dir/$w.$f.cpu" || echo -)
      cpusys[$pass.$w.$f]=$( [ -s "$dir/$w.$f.cpusys" ] && median < "$dir/$w.$f.cpusys" || echo -)
      cpuch[$pass.$w.$f]=$( [ -s "$dir/$w.$f.cpuch" ] && median < "$dir/$w.$f.cpuch" || echo -)
      cpucl[$pass.$w.$f]=$( [ -s "$dir/$w.$f.cpucl" ] && median < "$dir/$w.$f.cpucl" || echo -)
    done
  done
  stop_children
}

print_pass () {
  local pass=$1 w f unit b
  case $pass in
    noextents) echo; echo "children under --filter=noextents (data paths only; baseline qemu)" ;;
    extents) echo; echo "children without noextents (block status answered by the file plugin; baseline qemu)" ;;
  esac
  printf '%-15s %-6s' workload unit
  for f in "${fronts[@]}"; do printf ' %11s' "$f"; done
  printf ' %9s %9s %9s %11s %11s %11s %10s %9s %10s %11s\n' filt/qemu plug/qemu plug/lim ffile/qfile ffile/plug floor/qemu plug/floor filt/plug ffl/floor filt/ffloor
  for w in "${workloads[@]}"; do
    case $w in seq*) unit=MiB/s ;; *) unit=IOPS ;; esac
    printf '%-15s %-6s' "$w" "$unit"
    for f in "${fronts[@]}"; do printf ' %11s' "${val[$pass.$w.$f]}"; done
    printf ' %9s %9s %9s %11s %11s %11s %10s %9s %10s %11s\n' \
           "$(ratio "${val[$pass.$w.filter]}" "${val[$pass.$w.qemu]}")" \
           "$(ratio "${val[$pass.$w.plugin]}" "${val[$pass.$w.qemu]}")" \
           "$(ratio "${val[$pass.$w.plugin]}" "${val[$pass.$w.limit]}")" \
           "$(ratio "${val[$pass.$w.filter-file]}" "${val[$pass.$w.qemu-file]}")" \
           "$(ratio "${val[$pass.$w.filter-file]}" "${val[$pass.$w.plugin]}")" \
           "$(ratio "${val[$pass.$w.floor]}" "${val[$pass.$w.qemu]}")" \
           "$(ratio "${val[$pass.$w.plugin]}" "${val[$pass.$w.floor]}")" \
           "$(ratio "${val[$pass.$w.filter]}" "${val[$pass.$w.plugin]}")" \
           "$(ratio "${val[$pass.$w.ffloor]}" "${val[$pass.$w.floor]}")" \
           "$(ratio "${val[$pass.$w.filter]}" "${val[$pass.$w.ffloor]}")"
  done
  printf '\nfront CPU seconds per run (median; sequential rows move the whole image)\n'
  for w in "${workloads[@]}"; do
    printf '%-15s' "$w"
    for f in qemu filter plugin passthrough qemu-file filter-file; do
      if [ "${cpu[$pass.$w.$f]}" = - ]; then printf ' %s=-' "$f"; continue; fi
      printf ' %s=%.2f' "$f" "$(echo "${cpu[$pass.$w.$f]} / $hz" | bc -l)"
    done
    echo
  done
  # Where the cores go, and what that allows.  The children and the
  # client are the same programs under every front, so their CPU per
  # unit bounds any front on this machine:
  #   bound0  the rate if the front cost nothing: cores / (children +
  #           client) per unit;
  #   bound1  the rate if the front cost what one forwarding hop costs
  #           (the passthrough row's front CPU per unit, same run): a
  #           quorum front serves the same requests through the same
  #           nbdkit server code and sends them to three children, not
  #           one.  An estimate, not a proof: the quorum engine's own hop
  #           is cheaper than nbdkit-nbd-plugin's (read-pattern=fifo,
  #           one child: about 2/3 of the passthrough front's CPU per
  #           4 KiB read, 2026-11-23), so a quorum front may come close to it;
  #   boundK  the rate if this front's user-space code (ours, libnbd's,
  #           nbdkit's, QEMU's, the C library's) cost nothing and only
  #           the kernel's work for its system calls remained: cores /
  #           (children + client + front system time) per unit.  What
  #           this front's way of moving the data allows;
  #   /qemu   each divided by QEMU's rate: the best plugin/qemu ratio
  #           that bound allows.
  # The qemu-file and filter-file rows divide by qemu-file's rate (the
  # best ffile/qfile ratio); their children are c1 and c2 only (c0 is
  # idle), as child 0's file I/O is the front's own work (in front and
  # sys), so only their boundK is a bound of the same kind as the others'.
  # Meaningful where the cores are busy (QD32, sequential rows); at QD1
  # latency bounds the rate, and fio spins while it waits.
  printf '\nCPU per unit (random rows: us per request; sequential rows: s per GiB), median runs\n'
  printf '%-15s %-11s %8s %8s %9s %8s %9s %6s %9s %6s %9s %6s\n' \
         workload front front sys children client bound0 /qemu bound1 /qemu boundK /qemu
  for w in "${workloads[@]}"; do
    for f in qemu plugin qemu-file filter-file; do
      b=qemu; [[ $f == *-file ]] && b=qemu-file
      python3 - "$w" "$f" "$hz" "$img_bytes" "$secs" "$(nproc)" \
                "${val[$pass.$w.$b]}" \
                "${val[$pass.$w.$f]}" "${cpu[$pass.$w.$f]}" \
                "${cpusys[$pass.$w.$f]}" \
                "${cpuch[$pass.$w.$f]}" "${cpucl[$pass.$w.$f]}" \
                "${val[$pass.$w.passthrough]}" "${cpu[$pass.$w.passthrough]}" <<'PY'
import sys
w, f, hz, size, secs, cores, qemu, rate, fr, fs, ch, cl, prate, pfr = sys.argv[1:]
seq = w.startswith("seq")
def units(rate):
    # GiB moved by a sequential row, requests served by a random one
    return float(size) / 2**30 if seq else float(rate) * float(secs)
try:
    hz, cores, qemu = float(hz), int(cores), float(qemu)
    u = units(rate)
    fr, fs = float(fr) / hz / u, float(fs) / hz / u
    ch, cl = float(ch) / hz / u, float(cl) / u
except (ValueError, ZeroDivisionError):
    print("%-15s %-11s %8s" % (w, f, "-")); sys.exit(0)
scale = 1.0 if seq else 1e6
per_s = 1024.0 if seq else 1.0          # MiB/s or IOPS
b0 = cores / (ch + cl) * per_s
try:                    # bound1 needs the passthrough row (--fronts)
    b1 = cores / (ch + cl + float(pfr) / hz / units(prate)) * per_s
    b1s = "%9.0f %6.2f" % (b1, b1 / qemu)
except (ValueError, ZeroDivisionError):
    b1s = "%9s %6s" % ("-", "-")
bk = cores / (ch + cl + fs) * per_s
fmt = "%8.2f %8.2f %9.2f %8.2f" if seq else "%8.1f %8.1f %9.1f %8.1f"
print(("%-15s %-11s " + fmt + " %9.0f %6.2f %s %9.0f %6.2f") %
      (w, f, fr * scale, fs * scale, ch * scale, cl * scale,
       b0, b0 / qemu, b1s, bk, bk / qemu))
PY
    done
  done
  # The targets of issue 17, for the plugin rows where the cores are
  # busy (QD32, sequential; at QD1 latency bounds the rate: see the
  # floor columns).  With the CPU used as busily as it was (util: the
  # rate times the CPU per unit of front, children and client, over the
  # cores), the target rate needs that much less CPU per unit (cut).
  # Only the front can change, and of it only its user-space time
  # (user: ours, libnbd's, nbdkit's, the C library's) is code: a cut
  # beyond it is out of any user-space change's reach at that
  # utilization (the kernel's work for the front's system calls alone
  # is over budget), which the verdict says before comparing the cut
  # with the quorum's own code.  budget
  # is what the front's whole CPU (user and system) may come to per
  # unit at the target, the children and the client costing what they
  # did: against QEMU's quorum front in the same run (qfront), what a
  # front would have to shed of the kernel's work too.
  printf '\nplugin against the targets (CPU-bound rows)\n'
  printf '%-15s %6s %9s %5s %9s %9s %9s %9s %9s %9s  %s\n' \
         workload target plug/qemu util front budget qfront cut user ours verdict
  for w in seqread:1.3 randread-qd32:2.0 seqwrite:1.5 randwrite-qd32:1.5; do
    [[ " ${workloads[*]} " == *" ${w%%:*} "* ]] || continue
    python3 - "${w%%:*}" "${w#*:}" "$hz" "$img_bytes" "$secs" "$(nproc)" \
              "${val[$pass.${w%%:*}.qemu]}" "${val[$pass.${w%%:*}.plugin]}" \
              "${cpu[$pass.${w%%:*}.plugin]}" "${cpusys[$pass.${w%%:*}.plugin]}" \
              "${cpuch[$pass.${w%%:*}.plugin]}" "${cpucl[$pass.${w%%:*}.plugin]}" \
              "${ours[$pass.${w%%:*}]:--}" "${cpu[$pass.${w%%:*}.qemu]}" <<'PY'
import sys
w, target, hz, size, secs, cores, qemu, rate, fr, fs, ch, cl, share, qfr = sys.argv[1:]
seq = w.startswith("seq")
try:
    target, hz, cores = float(target), float(hz), int(cores)
    qemu, rate = float(qemu), float(rate)
    u = float(size) / 2**30 if seq else rate * float(secs)
    fr, fs = float(fr) / hz / u, float(fs) / hz / u
    ch, cl = float(ch) / hz / u, float(cl) / u
    per_s = rate / 1024.0 if seq else rate       # units a second
    t_per_s = target * qemu / (1024.0 if seq else 1.0)
    tot = fr + ch + cl
    util = per_s * tot / cores
    cut = tot - util * cores / t_per_s
    user = fr - fs
    budget = fr - cut
    qu = float(size) / 2**30 if seq else qemu * float(secs)
    qfront = float(qfr) / hz / qu
except (ValueError, ZeroDivisionError):
    print("%-15s %6s %9s" % (w, sys.argv[2], "-")); sys.exit(0)
scale = 1.0 if seq else 1e6
try:
    ours = float(share) * user
except ValueError:
    ours = None
if ours is not None and ours <= 0:
    ours = None
if cut <= 0:
    verdict = "at target"
elif budget <= 0:
    verdict = "out of any front's reach: the children and the client alone cost more"
elif cut > user:
    verdict = ("out of any user-space change's reach: more than the front's"
               " whole user time (%.0f%% of it)" % (100 * cut / user))
elif ours is not None and cut > ours:
    verdict = ("out of the quorum's reach: more than its own code costs"
               " (%.0f%% of it)" % (100 * cut / ours))
elif ours is not None:
    verdict = "needs %.0f%% of the quorum's own code cut" % (100 * cut / ours)
else:
    verdict = "needs %.0f%% of the front's user time cut" % (100 * cut / user)
f1 = "%9.3f" if seq else "%9.1f"
ofmt = "%9s" % "-" if ours is None else f1 % (ours * scale)
print(("%-15s %6.1f %9.2f %5.2f " + " ".join([f1] * 5) + " %s  %s") %
      (w, target, rate / qemu, util, fr * scale, budget * scale,
       qfront * scale, cut * scale, user * scale, ofmt, verdict))
PY
  done
  printf '(front, budget, qfront, cut, user and ours: s per GiB for sequential rows, us per request for random ones;\n'
  printf ' ours: the quorum'"'"'s own code and the C library it calls, its share of the user time\n'
  if [ -n "$perf_ev" ]; then
    printf ' in one more run of the plugin under perf (%s samples))\n' "$perf_ev"
  else
    printf ' not measured: perf cannot sample here)\n'
  fi
  printf 'peak RSS (MiB):'
  for f in qemu filter plugin passthrough qemu-file filter-file; do
    printf ' %s=%.1f' "$f" "$(echo "${rss[$pass.$f]:-0} / 1024" | bc -l)"
  done
  echo
}

echo "nbdkit-quorum benchmark: size=$size reps=$reps fio=${secs}s passes=$passes $(date -u +%Y-%m-%d) $(nproc) cores"
for pass in ${passes//,/ }; do run_pass "$pass"; done
for pass in ${passes//,/ }; do print_pass "$pass"; done

# Both passes: what answering block status costs each front (the quirk:
# QEMU's NBD client asks before reads; nbdcopy asks too, once per chunk).
if [[ ,$passes, == *,noextents,* && ,$passes, == *,extents,* ]]; then
  printf '\nextents / noextents (same front, same workload; < 1: block status costs)\n'
  printf '%-15s' workload
  for f in "${fronts[@]}"; do printf ' %11s' "$f"; done
  echo
  for w in "${workloads[@]}"; do
    printf '%-15s' "$w"
    for f in "${fronts[@]}"; do
      printf ' %11s' "$(ratio "${val[extents.$w.$f]}" "${val[noextents.$w.$f]}")"
    done
    echo
  done
fi
