#!/usr/bin/env bash
# nbdkit-quorum fault soak: a checked workload on the quorum plugin
# while children are killed, restarted, stopped and continued.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: bench/quorum-soak.sh [MINUTES [SIZE [CLIENTS]]]
#   MINUTES  how long faults are injected (default 10)
#   SIZE     image size (default 256M), in $SOAK_DIR (default /dev/shm)
#   CLIENTS  concurrent client connections (default 4)
#
# Three `nbdkit file` children on unix sockets, the quorum plugin over
# them (child-timeout=2, reconnect-delay=1), and bench/quorum-soak.py:
# CLIENTS connections doing random writes, zeroes, reads and flushes,
# each read checked against a model of what may be there.  Every few
# seconds one fault, then the injector waits for the child to be back
# and resynced: kill -9 (restarted 1-4 s later), or SIGSTOP (SIGCONT
# after 1-4 s: shorter or longer than child-timeout).  Every fifth
# fault hits two children at once: with one of three left requests
# must fail rather than return wrong data.  At the end the faults stop,
# every child is waited for, the clients read back everything and the
# child images are compared 64 KiB at a time.  (No network partitions
# here: tests/test-quorum-partition.sh does those, in namespaces.)
#
# Prints a summary; exits non-zero if a read returned wrong data, if
# the images differ, if a read was outvoted, if a child did not come
# back or a client did not finish.  Not part of 'make check'.
# SOAK_KEEP=1 keeps the directory (images, logs, report.jsonl).

set -euo pipefail
export PYENV_VERSION=system LC_ALL=C

top=$(cd "$(dirname "$0")/.." && pwd)
minutes=${1:-10}
size=${2:-256M}
clients=${3:-4}
plugin=$top/plugins/quorum/.libs/nbdkit-quorum-plugin.so

for t in nbdkit python3; do
  command -v $t >/dev/null || { echo "soak: $t is missing (scripts/install-deps)"; exit 1; }
done
python3 -c 'import nbd' || { echo "soak: python3-libnbd is missing"; exit 1; }
[ -f "$plugin" ] || { echo "soak: build first (make)"; exit 1; }

dir=$(mktemp -d "${SOAK_DIR:-/dev/shm}/quorum-soak.XXXXXX")
declare -a cpid=()                # the children's nbdkit, by index
qpid=
wpid=

say ()
{
  echo "soak: $(date +%T) $*" | tee -a "$dir/faults.log"
}

stop_pid ()
{
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -CONT "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

cleanup ()
{
  local p
  set +e
  stop_pid "$wpid"
  stop_pid "$qpid"
  for p in "${cpid[@]}"; do stop_pid "$p"; done
  if [ "${SOAK_KEEP:-}" = 1 ]; then
    echo "soak: kept $dir"
  else
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Children run in the foreground (-f), so that what they say when they
# die is kept in cN.log, but not as our jobs (no notices when we kill
# them).
start_child ()
{
  local i=$1 n
  rm -f "$dir/c$i.sock" "$dir/c$i.pid"
  ( nbdkit -f -P "$dir/c$i.pid" -U "$dir/c$i.sock" file "$dir/c$i.img" \
           2>> "$dir/c$i.log" & )
  for n in $(seq 100); do [ -s "$dir/c$i.pid" ] && break; sleep 0.1; done
  cpid[$i]=$(cat "$dir/c$i.pid")
}

# A child server that died by itself (not one we killed) is counted and
# started again: the quorum must cope, but that is not its fault.
crashes=0
check_children ()
{
  local i
  for i in 0 1 2; do
    if ! kill -0 ${cpid[$i]} 2>/dev/null; then
      crashes=$((crashes + 1))
      say "child $i's nbdkit died by itself: $(tail -n 1 "$dir/c$i.log")"
      start_child $i
    fi
  done
}

# healthy I: child I is not down, or its last resync has ended.
healthy ()
{
  local last
  last=$(grep -E "\"event\":\"(down|resync-end)\",\"child\":$1," \
              "$dir/report.jsonl" | tail -n 1)
  [ -z "$last" ] || [[ $last == *'"event":"resync-end"'* ]]
}

# wait_healthy I...: up to 120 s for each.
wait_healthy ()
{
  local i n
  # A child-timeout may still be running out.
  sleep 3
  for i in "$@"; do
    for n in $(seq 1200); do
      healthy $i && break
      [ $((n % 10)) -eq 0 ] && check_children
      sleep 0.1
    done
    if ! healthy $i; then
      say "child $i is not back after 120 s"
      if command -v gdb >/dev/null; then
        gdb -p $qpid -batch -ex 'thread apply all bt' \
            > "$dir/quorum-stacks.txt" 2>&1 || :
        say "the quorum's threads: $dir/quorum-stacks.txt (SOAK_KEEP=1)"
      fi
      return 1
    fi
  done
}

for i in 0 1 2; do
  truncate -s "$size" "$dir/c$i.img"
  start_child $i
done
nbdkit ${SOAK_VERBOSE:+-v} -f -P "$dir/q.pid" -U "$dir/q.sock" "$plugin" \
       child="nbd+unix:///?socket=$dir/c0.sock" \
       child="nbd+unix:///?socket=$dir/c1.sock" \
       child="nbd+unix:///?socket=$dir/c2.sock" \
       child-timeout=2 reconnect-delay=1 reconnect-max-delay=4 \
       syslog=false report="$dir/report.jsonl" \
       2> >(grep --line-buffered -Ev ': debug: (pread|pwrite|flush|zero|trim|cache|extents) ' \
            > "$dir/quorum.log") &
qpid=$!
for n in $(seq 100); do [ -S "$dir/q.sock" ] && break; sleep 0.1; done
if [ "$(cat "$dir/q.pid" 2>/dev/null)" != $qpid ]; then
  echo "soak: the quorum nbdkit did not start:"
  cat "$dir/quorum.log"
  exit 1
fi
touch "$dir/report.jsonl"

python3 "$top/bench/quorum-soak.py" run "nbd+unix:///?socket=$dir/q.sock" \
        "$clients" "$dir/stop" "$dir/result" 2> "$dir/clients.log" &
wpid=$!
say "$clients clients on $size, faults for $minutes min, in $dir"

end=$((SECONDS + minutes * 60))
k=0
ok=true
while [ $SECONDS -lt $end ]; do
  sleep $((2 + RANDOM % 4))
  kill -0 $qpid 2>/dev/null || { say "the quorum nbdkit died"; ok=false; break; }
  check_children
  i=$((RANDOM % 3))
  j=$(( (i + 1 + RANDOM % 2) % 3 ))
  k=$((k + 1))
  if [ $((k % 5)) -eq 0 ]; then
    victims="$i $j"
  else
    victims=$i
  fi
  hold=$((1 + RANDOM % 4))
  if [ $((RANDOM % 2)) -eq 0 ]; then
    say "fault $k: kill -9 child ${victims// / and child }, restart in $hold s"
    for v in $victims; do kill -9 ${cpid[$v]}; done
    sleep $hold
    for v in $victims; do start_child $v; done
  else
    say "fault $k: SIGSTOP child ${victims// / and child } for $hold s"
    for v in $victims; do kill -STOP ${cpid[$v]}; done
    sleep $hold
    for v in $victims; do kill -CONT ${cpid[$v]}; done
  fi
  wait_healthy $victims || { ok=false; break; }
done

say "faults stopped after $k; waiting for every child"
wait_healthy 0 1 2 || ok=false
say "clients reading everything back"
touch "$dir/stop"
# The read back of SIZE by every client is bounded too.
for n in $(seq 3000); do kill -0 $wpid 2>/dev/null || break; sleep 0.1; done
if kill -0 $wpid 2>/dev/null; then
  say "clients hung"
  ok=false
  stop_pid $wpid
fi
wait $wpid || ok=false
wpid=
# The summary lines go to the report file as the quorum exits.
stop_pid $qpid
wait $qpid || :
qpid=
cat "$dir/clients.log" >&2

echo $crashes > "$dir/crashes"
status=0
python3 "$top/bench/quorum-soak.py" check "$dir" "$clients" || status=1
$ok || { echo "soak: FAIL (see above)"; status=1; }
exit $status
