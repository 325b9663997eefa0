#!/usr/bin/env bash
# nbdkit-quorum benchmark: what state=FILE costs writes.  The same
# fronts over the same three children, without state= (the baseline,
# in the same run), with the state file on /dev/shm, and with it on a
# disk file system; each rate divided by the baseline's, and the state
# file's fdatasyncs per GiB written.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-state.sh [--fronts=LIST] [--disk=loop|DIR]
#                              [--granule=SIZE] [--slow-sync=MS]
#                              [SIZE [REPS [SECONDS]]]
#   --fronts   plugin, filter or both (default plugin,filter)
#   --disk     where the "disk" rows keep the state file: "loop" (the
#              default) makes an ext4 file system in a 256 MiB image
#              under /var/tmp, mounts it on a loop device (root only)
#              and unmounts and removes it at exit, whatever the exit;
#              DIR uses that directory as it is (say, /var/tmp when it
#              is on a disk)
#   --granule  state-granule= of the state rows (default: none given,
#              the quorum's default)
#   --slow-sync  one more row, "slow": the disk row with every fdatasync
#              of the front made MS milliseconds longer (a shim built
#              here with cc and preloaded into the front: it sleeps
#              after the real call), to stand for a disk whose cache
#              flush takes that long, where the machine's own (a virtual
#              disk with a host cache, say) answers in a tenth of a
#              millisecond.  (strace's delay injection cannot stand in:
#              with -f it halves the front's rate by itself.)
#   SIZE       image size (default 1G), in /dev/shm
#   REPS       repetitions of each measurement (default 3); medians
#   SECONDS    run time of each fio job (default 10)
#
# Children: three `nbdkit --filter=noextents file` servers on fully
# allocated images in /dev/shm, as in quorum-bench.sh.  Fronts: the
# plugin (child=c0 child=c1 child=c2) and the filter (over nbd
# socket=c0), each started afresh for every measurement with
# control=SOCKET and, in the state rows, a new state file.
# Workloads:
#   seqwrite        nbdcopy of a SIZE image onto the front (MiB/s;
#                   nbdcopy flushes at the end)
#   randwrite-qd32  fio, nbd engine, 4 KiB random writes, queue depth 32
#   randwrite-qd1   the same at queue depth 1 (IOPS)
# The fdatasync count is the difference of "syncs" in
# `nbdkit-quorum-ctl SOCKET status --json` (the "state" object) before
# and after the workload; "per GiB" divides it by the bytes written
# (fio's io_bytes, or the image's size).  The targets (issue 12):
# seqwrite and randwrite-qd32 at least 0.90 of the baseline,
# randwrite-qd1 at least 0.75.  fio writes no flushes, so once every
# state granule it touches is in the write-intent map the random rows
# need no more fdatasyncs: their count is what filling the map costs.
# Not part of 'make check': timing belongs here, never in tests.

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

fronts=plugin,filter
disk=loop
granule=
slow=
while [ $# -gt 0 ]; do
  case $1 in
    --fronts=*) fronts=${1#--fronts=}; fronts=${fronts/both/plugin,filter} ;;
    --disk=*) disk=${1#--disk=} ;;
    --granule=*) granule=${1#--granule=} ;;
    --slow-sync=*) slow=${1#--slow-sync=} ;;
    --*) echo "bench: $1: unknown option" >&2; exit 1 ;;
    *) break ;;
  esac
  shift
done
size=${1:-1G}
reps=${2:-3}
secs=${3:-10}
for f in ${fronts//,/ }; do
  case $f in plugin|filter) ;; *) echo "bench: --fronts=$f: plugin, filter or both" >&2; exit 1 ;; esac
done

bench_requires nbdkit nbdcopy fio python3
if [ -n "$slow" ]; then
  [[ $slow =~ ^[0-9]+$ ]] || { echo "bench: --slow-sync=$slow: milliseconds, an integer" >&2; exit 1; }
  bench_requires cc
  cat > "$dir/slowsync.c" <<'EOF'
/* fdatasync, then sleep QUORUM_BENCH_SYNC_DELAY_US microseconds. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

int
fdatasync (int fd)
{
  static int (*real) (int);
  const char *e = getenv ("QUORUM_BENCH_SYNC_DELAY_US");
  int r;

  if (real == NULL)
    real = (int (*) (int)) dlsym (RTLD_NEXT, "fdatasync");
  r = real (fd);
  if (e)
    usleep (atoi (e));
  return r;
}
EOF
  cc -shared -fPIC -O2 -o "$dir/slowsync.so" "$dir/slowsync.c" -ldl
fi
ctl=$top/tools/nbdkit-quorum-ctl
[ -x "$ctl" ] || { echo "bench: $ctl is not built (make)" >&2; exit 1; }

# The disk file system.  Its cleanup runs after bench-lib's, which
# kills the fronts first (a front holds the state file open: the file
# system could not be unmounted under it).
vdir='' mnt=''
state_cleanup () {
  bench_cleanup
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then
    umount "$mnt" 2>/dev/null || { sleep 1; umount "$mnt"; } || {
      echo "bench: could not unmount $mnt: left as it is" >&2
      return 0
    }
  fi
  [ -n "$vdir" ] && rm -rf "$vdir"
  return 0
}
trap state_cleanup EXIT

case $disk in
  loop)
    [ "$(id -u)" = 0 ] ||
      { echo "bench: --disk=loop needs root (or give --disk=DIR)" >&2; exit 1; }
    bench_requires mkfs.ext4 mount umount mountpoint
    vdir=$(mktemp -d /var/tmp/quorum-state.XXXXXX)
    mnt=$vdir/mnt
    mkdir "$mnt"
    truncate -s 256M "$vdir/ext4.img"
    mkfs.ext4 -q -F "$vdir/ext4.img"
    mount -o loop "$vdir/ext4.img" "$mnt"
    disk_dir=$mnt
    disk_what="ext4 in a loop image in /var/tmp, on $(df --output=source,fstype /var/tmp | awk 'NR == 2 {print $1 " (" $2 ")"}')"
    ;;
  *)
    [ -d "$disk" ] || { echo "bench: --disk=$disk: not a directory" >&2; exit 1; }
    vdir=$(mktemp -d "$disk/quorum-state.XXXXXX")
    disk_dir=$vdir
    disk_what="$disk, on $(df --output=source,fstype "$disk" | awk 'NR == 2 {print $1 " (" $2 ")"}')"
    ;;
esac

make_full "$dir/c0.img" "$size"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
cp "$dir/c0.img" "$dir/src.img"
img_bytes=$(stat -c %s "$dir/c0.img")

# fio_write URI DEPTH: "IOPS BYTES" of 4 KiB random writes.
fio_write () {
  fio --name=q --ioengine=nbd --uri="$1" --rw=randwrite --bs=4k \
      --iodepth="$2" --runtime="$secs" --time_based \
      --size="$size" --randrepeat=1 --buffer_pattern=0x5a5aa5a5 \
      --output-format=json 2>"$dir/fio.err" |
    python3 -c "import json,sys; s=sys.stdin.read(); w=json.loads(s[s.index('{'):])['jobs'][0]['write']; print('%.0f %d' % (w['iops'], w['io_bytes']))" ||
    { cat "$dir/fio.err" >&2; return 1; }
}

syncs () {
  "$ctl" "$dir/ctl" status --json |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["state"]["syncs"])'
}

# One workload against the front; prints "RATE BYTES".
run_workload () {
  local t0 t1
  case $1 in
    seqwrite)
      t0=$(now); nbdcopy "$dir/src.img" "$front_uri"; t1=$(now)
      echo "$(mib_per_s "$img_bytes" "$t0" "$t1") $img_bytes" ;;
    randwrite-qd1|randwrite-qd32)
      fio_write "$front_uri" "${1#*-qd}" ;;
  esac
}

workloads=(seqwrite randwrite-qd32 randwrite-qd1)
states=(none shm disk)
[ -n "$slow" ] && states+=(slow)
declare -A val spg

start_children 3 "$dir/c" --filter=noextents
for w in "${workloads[@]}"; do
  for f in ${fronts//,/ }; do
    for s in "${states[@]}"; do : > "$dir/$w.$f.$s"; : > "$dir/$w.$f.$s.spg"; done
  done
  for _ in $(seq "$reps"); do
    # Rows interleaved within each repetition: ratios share a window.
    for f in ${fronts//,/ }; do
      for s in "${states[@]}"; do
        front_args=(control="$dir/ctl")
        front_wrap=()
        case $s in
          shm) rm -f "$dir/q.state"; front_args+=(state="$dir/q.state") ;;
          disk|slow) rm -f "$disk_dir/q.state"; front_args+=(state="$disk_dir/q.state") ;;
        esac
        [ "$s" = slow ] &&
          front_wrap=(env LD_PRELOAD="$dir/slowsync.so"
                      QUORUM_BENCH_SYNC_DELAY_US=$((slow * 1000)))
        [ "$s" != none ] && [ -n "$granule" ] && front_args+=(state-granule="$granule")
        start_front "$f" c0 c1 c2
        n0=$(syncs)
        run_workload "$w" > "$dir/out"
        read -r rate bytes < "$dir/out"
        n1=$(syncs)
        stop_front
        echo "$rate" >> "$dir/$w.$f.$s"
        python3 -c 'import sys; n, b = int(sys.argv[1]), int(sys.argv[2]); print("%.1f" % (n / (b / 2**30)))' \
                "$((n1 - n0))" "$bytes" >> "$dir/$w.$f.$s.spg"
      done
    done
  done
  for f in ${fronts//,/ }; do
    for s in "${states[@]}"; do
      val[$w.$f.$s]=$(median < "$dir/$w.$f.$s")
      spg[$w.$f.$s]=$(median < "$dir/$w.$f.$s.spg")
    done
  done
done
stop_children

echo "nbdkit-quorum state= benchmark: size=$size reps=$reps fio=${secs}s $(date -u +%Y-%m-%d) $(nproc) cores"
echo "state-granule=${granule:-default}; shm: /dev/shm (tmpfs); disk: $disk_what"
[ -n "$slow" ] && echo "slow: the disk row, every fdatasync of the front ${slow} ms longer (preloaded shim)"
echo "fdatasyncs counted by the status command's state.syncs (control=), medians"
printf '%-15s %-6s %-5s %-6s %10s %7s %9s %7s\n' \
       workload front state unit rate /none sync/GiB target
for w in "${workloads[@]}"; do
  case $w in seq*) unit=MiB/s; tgt=0.90 ;; *-qd32) unit=IOPS; tgt=0.90 ;; *) unit=IOPS; tgt=0.75 ;; esac
  for f in ${fronts//,/ }; do
    for s in "${states[@]}"; do
      r=$(ratio "${val[$w.$f.$s]}" "${val[$w.$f.none]}")
      if [ "$s" = none ]; then mark=; else
        mark=$(python3 -c 'import sys
try: print("ok" if float(sys.argv[1]) >= float(sys.argv[2]) else "MISSED>=" + sys.argv[2])
except ValueError: print("-")' "$r" "$tgt")
      fi
      printf '%-15s %-6s %-5s %-6s %10s %7s %9s %7s\n' "$w" "$f" "$s" "$unit" \
             "${val[$w.$f.$s]}" "$r" "${spg[$w.$f.$s]}" "$mark"
    done
  done
done
