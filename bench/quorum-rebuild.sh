#!/usr/bin/env bash
# nbdkit-quorum benchmark: rebuilding a child (nbdkit-quorum-ctl
# replace N URI) and scrubbing, against what copying and reading the
# same images costs, and what a rebuild costs the clients, in one run.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-rebuild.sh [--fronts=LIST] [SIZE [REPS [SECONDS]]]
#   --fronts   plugin, filter or both (default plugin,filter)
#   SIZE       image size (default 1G), in /dev/shm
#   REPS       repetitions of each measurement (default 3); medians
#   SECONDS    run time of each fio job (default 10)
#
# Children: three `nbdkit file` servers c0, c1, c2 on identical, fully
# allocated images (and s0, s1, s2 on sparse ones: one 64 KiB run of
# data every 6.4 MiB, 1%); fronts: the plugin (child=c0 child=c1
# child=c2) and the filter (nbd socket=c0 child=c1 child=c2), started
# afresh for every measurement with control=SOCKET and report=FILE.
# The one replaced is always child 2.
#
# 1. Rebuild, no client load.  `replace 2 URI` onto a new `nbdkit file`
#    server on an empty (all-hole) image, the front at resync-rate=0
#    (no limit); the time is from the replace-start report event to
#    replace-end (the engine's clock, milliseconds; the report file is
#    polled every 50 ms), so it holds the rebuild and the swap.  The
#    bound: `nbdcopy c0 NEW` onto another such server (one copy, read
#    once, as fast as nbdcopy's requests in flight go), same children;
#    and the bound of a rebuild that reads two sources, as this one
#    must (a copy made from one source would be that source's vote
#    twice): `nbdcopy c0 NEW` while `nbdcopy c1 null:` reads the
#    second, timed until both are done (q/2src).
#    Rows:
#      full, noextents  children (and the new server) under
#                       --filter=noextents: data paths only, as
#                       quorum-bench.sh compares them
#      full, extents    bare children: block status answered by the
#                       file plugin (the denominator of the sparse row)
#      sparse, extents  the sparse children, bare (noextents would hide
#                       the holes the row is about); the rebuild zeroes
#                       what every child reports as a hole
#    quorum/nbdcopy is the rebuild's rate over nbdcopy's (target >=
#    0.80 for full); sparse/full the sparse rebuild's time over the
#    full one's with the same (bare) children (target <= 0.10).  In the
#    filter the plugin (child 0) is read by a rebuild only through a
#    client's connection, so an idle client (nbdsh) is held connected
#    meanwhile: both forms then read all three children.
# 2. Client IOPS during a rebuild.  fio 4 KiB random reads at queue
#    depth 32 (as quorum-bench.sh runs them) for SECONDS on the front
#    over the noextents children: with no rebuild (the baseline), while
#    a rebuild runs at the default resync-rate= (none given), and while
#    one runs at resync-rate=0.  So that a rebuild runs the whole time,
#    a helper on the control socket starts `replace 2` again each time
#    the last one is swapped in, alternating between c2 and a spare
#    server r (an image rebuilt from scratch each time: the rebuild
#    copies everything whatever the target holds).  Also shown: how
#    much of the fio run a rebuild was running (busy) and the rebuild's
#    rate meanwhile.
# 3. Scrub, unthrottled.  `scrub start --rate=0` over the noextents
#    children (time from scrub-start to scrub-end, as above; the filter
#    with an idle client held, as for the rebuild), against the
#    sequential read row of quorum-bench.sh (nbdcopy FRONT null:, on a
#    fresh front).  scrub/seqread: the scrub's rate over the read's.
# Rows are interleaved within each repetition, so ratios share a
# window.  Targets are shown with "ok" or "MISSED"; nothing here fails
# on a figure (the exit status is non-zero only when a run failed).
# Not part of 'make check': timing belongs here, never in tests.

# shellcheck source=bench/bench-lib.sh
source "$(dirname "$0")/bench-lib.sh"

fronts=plugin,filter
while [ $# -gt 0 ]; do
  case $1 in
    --fronts=*) fronts=${1#--fronts=}; fronts=${fronts/both/plugin,filter} ;;
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

bench_requires nbdkit nbdcopy nbdsh fio python3
ctl=$top/tools/nbdkit-quorum-ctl
[ -x "$ctl" ] || { echo "bench: $ctl is not built (make)" >&2; exit 1; }

# The control-socket side, in Python: it speaks the protocol of
# nbdkit-quorum-ctl(1) itself (one JSON object per line), so that
# polling every 50 ms does not start a process each time, which would
# take CPU from the front being measured.
cat > "$dir/ctl.py" <<'EOF'
import datetime, json, os, socket, sys, time

POLL = 0.05

class Ctl:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.buf = b""

    def __call__(self, command, *args):
        req = {"command": command}
        if args:
            req["args"] = list(args)
        self.s.sendall((json.dumps(req) + "\n").encode())
        while b"\n" not in self.buf:
            b = self.s.recv(1 << 16)
            if not b:
                raise SystemExit("bench: the control socket closed")
            self.buf += b
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

def must(reply):
    if not reply.get("ok"):
        raise SystemExit("bench: %s: %s" % (reply.get("command"), reply.get("error")))
    return reply

def events(path, pos):
    """New report events of path from pos: (list, new pos)."""
    try:
        with open(path) as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return [], pos
    end = data.rfind("\n") + 1
    return [json.loads(l) for l in data[:end].splitlines() if l], pos + end

def when(ev):
    return datetime.datetime.strptime(ev["time"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()

def name(ev):
    return ev["event"].replace("_", "-")

def wait_event(report, which, timeout):
    """Poll the report file until event which; every event until then."""
    seen, pos, t0 = [], 0, time.monotonic()
    while True:
        new, pos = events(report, pos)
        seen += new
        if any(name(e) == which for e in new):
            return seen
        if time.monotonic() - t0 > timeout:
            raise SystemExit("bench: no %s event within %d s" % (which, timeout))
        time.sleep(POLL)

def first(seen, which, **match):
    for e in seen:
        if name(e) == which and all(e.get(k) == v for k, v in match.items()):
            return e
    raise SystemExit("bench: no %s event %s" % (which, match))

def rebuild(sock, report, n, uri, timeout):
    """replace n uri; print seconds, bytes read and copied, zeroed."""
    c = Ctl(sock)
    spare = must(c("status"))["quorum"]["children"]
    must(c("replace", n, uri))
    seen = wait_event(report, "replace-end", timeout)
    t = when(first(seen, "replace-end")) - when(first(seen, "replace-start"))
    end = first(seen, "resync-end", child=spare)
    print("%.3f %d %d" % (t, end.get("copied", 0), end.get("zeroed", 0)))

def scrub(sock, report, timeout):
    """scrub start --rate=0; print seconds, done, skipped, unchecked."""
    c = Ctl(sock)
    must(c("scrub", "start", "--rate=0"))
    seen = wait_event(report, "scrub-end", timeout)
    end = first(seen, "scrub-end")
    if end.get("result") != "done":
        raise SystemExit("bench: scrub ended %s" % end.get("result"))
    t = when(end) - when(first(seen, "scrub-start"))
    print("%.3f %d %d %d" % (t, end["done"], end["skipped"], end["unchecked"]))

def churn(sock, report, n, uri_a, uri_b, ready, stop):
    """Keep a replace of child n running (between uri_a and uri_b) until
    the file stop exists; print the share of the time a rebuild ran,
    its MiB/s and how many were started."""
    c = Ctl(sock)
    n = int(n)
    size = must(c("status"))["quorum"]["size"]
    started = refused = ended = pos = 0
    busy = done = cur = 0.0
    pending = False
    t0 = last = None
    while not os.path.exists(stop):
        s = must(c("status"))
        now = time.monotonic()
        r = s["children"][n]["replacement"]
        # The next replace only once the last one's replace-end is
        # reported: the engine lets go of the last spare just before,
        # and refuses a replace meanwhile ("still being wound up";
        # tests/test-quorum-replace-race.sh).
        new, pos = events(report, pos)
        ended += sum(name(e) == "replace-end" for e in new)
        if t0 is not None and (r is not None or ended < started):
            busy += now - last
        if r is None and ended == started:
            if pending:
                done += size                     # swapped in: complete
            pending, cur = False, 0
            other = uri_b if s["children"][n]["name"] == uri_a else uri_a
            reply = c("replace", str(n), other)
            if reply.get("ok"):
                started += 1
                refused = 0
                pending = True
                if t0 is None:
                    t0 = now
                    open(ready, "w").close()
            else:
                refused += 1
                if refused > 200:
                    raise SystemExit("bench: replace refused: %s" % reply.get("error"))
        elif r is not None and r.get("resync"):
            cur = r["resync"]["bytes_done"]
        last = now
        time.sleep(POLL)
    t = time.monotonic() - t0
    print("%.2f %.1f %d" % (busy / t, (done + cur) / 1048576 / t, started))

{"rebuild": lambda a: rebuild(a[0], a[1], a[2], a[3], float(a[4])),
 "scrub": lambda a: scrub(a[0], a[1], float(a[2])),
 "churn": lambda a: churn(*a)}[sys.argv[1]](sys.argv[2:])
EOF
ctlpy () { python3 "$dir/ctl.py" "$@"; }
timeout=3600

# Images: full c0..c2 (identical), sparse s0..s2 (identical, 1% data).
make_full "$dir/c0.img" "$size"
cp "$dir/c0.img" "$dir/c1.img"
cp "$dir/c0.img" "$dir/c2.img"
make_sparse "$dir/s0.img" "$size" 1
cp --sparse=always "$dir/s0.img" "$dir/s1.img"
cp --sparse=always "$dir/s0.img" "$dir/s2.img"
img_bytes=$(stat -c %s "$dir/c0.img")

# servers PREFIX [FILTER...]: nbdkit file servers PREFIX0..2 on
# PREFIX0..2.img; sets child_pids (stop_children stops them).
servers () {
  local p=$1 i; shift
  child_pids=()
  for i in 0 1 2; do
    start_nbdkit "$p$i" "$@" file "$dir/$p$i.img"
    child_pids+=("$last_pid")
  done
}

# new_server NAME [FILTER...]: nbdkit file on a new empty image.
new_server () {
  local n=$1; shift
  rm -f "$dir/$n.img"
  truncate -s "$img_bytes" "$dir/$n.img"
  start_nbdkit "$n" "$@" file "$dir/$n.img"
  new_pid=$last_pid
}
drop_server () { stop_pid "$new_pid"; rm -f "$dir/$1.img"; }

# The front, with control= and report= (a new report file each time).
front () {
  local f=$1 p=$2; shift 2
  rm -f "$dir/report"
  front_args=(control="$dir/ctl" report="$dir/report" "$@")
  start_front "$f" "${p}0" "${p}1" "${p}2"
}

# An idle client connected to the front (the filter's plugin is read in
# the background only through a client's connection).
hold () {
  rm -f "$dir/held" "$dir/release"
  nbdsh -u "$front_uri" -c "
import os, time
open('$dir/held', 'w').close()
while not os.path.exists('$dir/release'):
    time.sleep(0.1)
" &
  held_pid=$!
  pids+=("$held_pid")
  for _ in $(seq 100); do [ -e "$dir/held" ] && return 0; sleep 0.1; done
  echo "bench: the idle client did not connect" >&2
  return 1
}
release () { touch "$dir/release"; wait "$held_pid"; forget_pid "$held_pid"; }

# seconds CMD...: elapsed seconds of CMD.
seconds () {
  local t0 t1
  t0=$(now); "$@"; t1=$(now)
  python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$t0" "$t1"
}

# two_sources SRC0 SRC1 DST: the copying bound of a rebuild that must
# read vote-threshold (2) sources: nbdcopy SRC0 to DST and, at the same
# time, nbdcopy SRC1 to null: (read, not compared).
two_sources () {
  local a r=0
  nbdcopy "$1" "$3" &
  a=$!
  pids+=("$a")
  nbdcopy "$2" null: || r=$?
  wait "$a" || r=$?
  forget_pid "$a"
  return "$r"
}

IFS=, read -ra forms <<< "$fronts"
# The rebuild rows: layout (full/sparse), children's filter.
rrows=(full.noextents full.extents sparse.extents)
for k in "${rrows[@]}"; do
  for f in "${forms[@]}" nbdcopy nbdcopy2; do : > "$dir/r.$k.$f"; : > "$dir/r.$k.$f.aux"; done
done
modes=(none default unlimited)
for f in "${forms[@]}"; do
  for m in "${modes[@]}"; do : > "$dir/i.$f.$m"; : > "$dir/i.$f.$m.aux"; done
  for m in scrub seqread; do : > "$dir/s.$f.$m"; : > "$dir/s.$f.$m.aux"; done
done

echo "nbdkit-quorum rebuild and scrub: size=$size reps=$reps fio=${secs}s fronts=$fronts $(date -u +%Y-%m-%d) $(nproc) cores"
for rep in $(seq "$reps"); do
  echo "  repetition $rep of $reps" >&2
  # 1. Rebuilds, no client load; rows and fronts interleaved.
  for k in "${rrows[@]}"; do
    layout=${k%.*} filt=()
    [ "${k#*.}" = noextents ] && filt=(--filter=noextents)
    p=c; [ "$layout" = sparse ] && p=s
    servers "$p" "${filt[@]}"
    for f in "${forms[@]}"; do
      front "$f" "$p" resync-rate=0
      [ "$f" = filter ] && hold
      new_server n "${filt[@]}"
      ctlpy rebuild "$dir/ctl" "$dir/report" 2 "$(uri n)" "$timeout" > "$dir/out"
      read -r t copied zeroed < "$dir/out"
      echo "$t" >> "$dir/r.$k.$f"
      echo "$(( (copied - zeroed) / 1048576 ))" >> "$dir/r.$k.$f.aux"
      [ "$f" = filter ] && release
      stop_front
      drop_server n
    done
    new_server n "${filt[@]}"
    seconds nbdcopy "$(uri "${p}0")" "$(uri n)" >> "$dir/r.$k.nbdcopy"
    drop_server n
    new_server n "${filt[@]}"
    seconds two_sources "$(uri "${p}0")" "$(uri "${p}1")" "$(uri n)" \
            >> "$dir/r.$k.nbdcopy2"
    drop_server n
    stop_children
  done

  # 2. Client IOPS during a rebuild, and 3. the scrub, over the
  # noextents children.
  servers c --filter=noextents
  new_server r --filter=noextents
  for f in "${forms[@]}"; do
    for m in "${modes[@]}"; do
      case $m in
        none|default) front "$f" c ;;
        unlimited) front "$f" c resync-rate=0 ;;
      esac
      if [ "$m" = none ]; then
        fio_iops "$front_uri" randread 32 >> "$dir/i.$f.$m"
      else
        rm -f "$dir/ready" "$dir/stop"
        ctlpy churn "$dir/ctl" "$dir/report" 2 "$(uri c2)" "$(uri r)" "$dir/ready" "$dir/stop" \
              > "$dir/churn" &
        churn_pid=$!
        pids+=("$churn_pid")
        for _ in $(seq 100); do [ -e "$dir/ready" ] && break; sleep 0.05; done
        [ -e "$dir/ready" ] || { echo "bench: the rebuild did not start" >&2; exit 1; }
        fio_iops "$front_uri" randread 32 >> "$dir/i.$f.$m"
        touch "$dir/stop"
        wait "$churn_pid" || { echo "bench: the rebuild helper failed" >&2; exit 1; }
        forget_pid "$churn_pid"
        cat "$dir/churn" >> "$dir/i.$f.$m.aux"
      fi
      stop_front
    done

    front "$f" c
    [ "$f" = filter ] && hold
    ctlpy scrub "$dir/ctl" "$dir/report" "$timeout" > "$dir/out"
    read -r t scrubbed skipped unchecked < "$dir/out"
    mib_per_s "$scrubbed" 0 "$t" >> "$dir/s.$f.scrub"
    echo "$skipped $unchecked" >> "$dir/s.$f.scrub.aux"
    [ "$f" = filter ] && release
    stop_front
    front "$f" c
    t=$(seconds nbdcopy "$front_uri" null:)
    mib_per_s "$img_bytes" 0 "$t" >> "$dir/s.$f.seqread"
    stop_front
  done
  drop_server r
  stop_children
done

# mark RATIO TARGET ge|le: ok, or MISSED with the target.
mark () {
  python3 -c 'import sys
r, t, how = sys.argv[1:]
try:
    good = float(r) >= float(t) if how == "ge" else float(r) <= float(t)
    print("ok" if good else "MISSED" + (">=" if how == "ge" else "<=") + t)
except ValueError:
    print("-")' "$1" "$2" "$3"
}
# medcol FILE COL: the median of column COL (1-based) of FILE.
medcol () { awk -v c="$2" '{print $c}' "$1" | median; }

printf '\n1. rebuild of child 2 onto an empty server, no client load, resync-rate=0 (seconds, medians)\n'
printf '%-7s %-10s %-8s %8s %8s %8s %8s %8s %7s %12s %8s %12s %11s\n' \
       layout children front seconds MiB/s read-MiB nbdcopy-s q/nbdcp target \
       2-sources-s q/2src target sparse/full
for k in "${rrows[@]}"; do
  tn=$(median < "$dir/r.$k.nbdcopy")
  t2=$(median < "$dir/r.$k.nbdcopy2")
  for f in "${forms[@]}"; do
    t=$(median < "$dir/r.$k.$f")
    q=$(ratio "$tn" "$t")
    q2=$(ratio "$t2" "$t")
    if [ "${k%.*}" = full ]; then
      tgt=$(mark "$q" 0.80 ge) tgt2=$(mark "$q2" 0.80 ge) sf=
    else
      tgt= tgt2=
      sf=$(ratio "$t" "$(median < "$dir/r.full.extents.$f")")
      sf="$sf $(mark "$sf" 0.10 le)"
    fi
    printf '%-7s %-10s %-8s %8s %8s %8s %8s %8s %7s %12s %8s %12s %11s\n' \
           "${k%.*}" "${k#*.}" "$f" "$t" "$(mib_per_s "$img_bytes" 0 "$t")" \
           "$(median < "$dir/r.$k.$f.aux")" "$tn" "$q" "$tgt" \
           "$t2" "$q2" "$tgt2" "$sf"
  done
done
echo "(MiB/s: the image's size over the time; read-MiB: what the rebuild read and wrote, the rest zeroed;"
echo " q/nbdcp: nbdcopy's time over the rebuild's, nbdcopy c0 -> an empty server, same children;"
echo " q/2src: the same with two sources, nbdcopy c0 -> an empty server while nbdcopy c1 -> null:,"
echo " the least a rebuild that reads vote-threshold=2 copies (the first rule) must read)"

printf '\n2. fio 4 KiB random reads, QD32, %s s, noextents children (IOPS, medians)\n' "$secs"
printf '%-8s %-10s %9s %7s %6s %14s %9s\n' front rebuild IOPS /none busy rebuild-MiB/s rebuilds
for f in "${forms[@]}"; do
  base=$(median < "$dir/i.$f.none")
  for m in "${modes[@]}"; do
    v=$(median < "$dir/i.$f.$m")
    if [ "$m" = none ]; then b=- rr=- n=-; else
      b=$(medcol "$dir/i.$f.$m.aux" 1)
      rr=$(medcol "$dir/i.$f.$m.aux" 2)
      n=$(medcol "$dir/i.$f.$m.aux" 3)
    fi
    case $m in
      none) what=none ;; default) what=default ;; unlimited) what=rate=0 ;;
    esac
    printf '%-8s %-10s %9s %7s %6s %14s %9s\n' "$f" "$what" "$v" \
           "$(ratio "$v" "$base")" "$b" "$rr" "$n"
  done
done
echo "(default: no resync-rate= given; busy: share of the fio run a rebuild ran; rebuilds: started per run)"

printf '\n3. scrub --rate=0 against the sequential read (nbdcopy FRONT null:), noextents children (MiB/s, medians)\n'
printf '%-8s %9s %9s %13s %15s\n' front scrub seqread scrub/seqread skipped/unchecked
for f in "${forms[@]}"; do
  s=$(median < "$dir/s.$f.scrub")
  r=$(median < "$dir/s.$f.seqread")
  printf '%-8s %9s %9s %13s %15s\n' "$f" "$s" "$r" "$(ratio "$s" "$r")" \
         "$(tail -1 "$dir/s.$f.scrub.aux" | tr ' ' /)"
done
