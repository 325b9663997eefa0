#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# scripts/nbdkit-quorum-verify: copies that agree (exit 0); one bad
# block (exit 1, the odd copy and its exact 4 KiB range); many bad
# blocks, each range listed and blamed on the right copy; a truncated
# copy (sizes); qcow2 copies next to raw ones; two copies that differ
# (no majority); a sparse 1 GiB image whose holes are not read; usage
# errors (exit 2); and nothing left behind on any exit path, a signal
# included.  Then: a raw disk holding a qcow2 header whose backing file
# names a host file (compared as raw, the host file never opened);
# external data files refused; a child that stalls is not timed out;
# temporary directories with quotes, &, % and spaces, and too long for
# sun_path; --json checked against the damage; the progress line on a
# terminal; and a stale copy read once, not block by block.

source ./functions.sh
set -e
set -x
requires qemu-img --version
requires qemu-nbd --version
requires qemu-io --version
requires /usr/bin/python3 -c 'import nbd'

verify=$abs_top_srcdir/scripts/nbdkit-quorum-verify
requires test -x "$verify"

# Under the sanitizer build the quorum nbdkit needs the runtime
# preloaded, with the shim that skips the destructors (it may hang in
# exit(3) otherwise), and its --run client must inherit neither (see
# quorum in functions.sh).
if [ -n "$QUORUM_PRELOAD" ]; then
  cat > $tmpdir/nbdkit-preload <<'EOF'
#!/usr/bin/env bash
args=() run=false
for a in "$@"; do
  $run && a="unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS; $a"
  run=false
  [ "$a" = --run ] && run=true
  args+=("$a")
done
LD_PRELOAD=$QUORUM_PRELOAD:$SYSLOG_SHIM QUORUM_SYSLOG_FILE=${0%/*}/syslog \
  exec nbdkit "${args[@]}"
EOF
  chmod +x $tmpdir/nbdkit-preload
  export QUORUM_NBDKIT=$tmpdir/nbdkit-preload
fi

# The script's own temporary directories go here, so that we can check
# that it removes them.
mkdir $tmpdir/vt
export TMPDIR=$tmpdir/vt

# run_verify STATUS ARGS...: run the script in $tmpdir/img (or $vdir),
# output in $tmpdir/out; its exit status must be STATUS.
mkdir $tmpdir/img
run_verify ()
{
  local want=$1 rc=0
  shift
  ({ set +x; } 2>/dev/null; cd "${vdir:-$tmpdir/img}" && exec "$verify" "$@") > $tmpdir/out 2>&1 || rc=$?
  cat $tmpdir/out
  if [ "$rc" -ne "$want" ]; then
    echo "$0: FAIL: nbdkit-quorum-verify $*: exit status $rc, expected $want"
    exit 1
  fi
  # Every server stopped, the private directory gone.
  if [ -n "$(ls -A $tmpdir/vt)" ]; then
    echo "$0: FAIL: nbdkit-quorum-verify left $(ls -A $tmpdir/vt) behind"
    exit 1
  fi
}
P=--plugin=$QUORUM_PLUGIN
cd_img () { (cd $tmpdir/img && "$@"); }

# Expected output, line for line (the "read:" line is left out).
assert_output ()
{
  grep -v '^read: ' $tmpdir/out > $tmpdir/out.cmp || true
  if ! diff -u $tmpdir/expected $tmpdir/out.cmp; then
    echo "$0: FAIL: unexpected output"
    exit 1
  fi
}

# --- Three copies that agree.
nbdkit -U - pattern 1M --run "nbdcopy \"\$uri\" $tmpdir/img/c0.img"
cp $tmpdir/img/c0.img $tmpdir/img/c1.img
cp $tmpdir/img/c0.img $tmpdir/img/c2.img
run_verify 0 $P c0.img c1.img c2.img
assert_grep '^agree: 3 copies, 1048576 bytes$' $tmpdir/out
assert_no_grep 'differ' $tmpdir/out
run_verify 0 $P -q c0.img c1.img c2.img
test ! -s $tmpdir/out
# Without --plugin: the build next to the script (in-tree builds).
if [ -f $abs_top_srcdir/plugins/quorum/.libs/nbdkit-quorum-plugin.so ]; then
  run_verify 0 c0.img c1.img c2.img
  assert_grep '^agree: 3 copies, 1048576 bytes$' $tmpdir/out
fi

# --- One bad block in c1: the exact 4 KiB block that holds the
# damaged bytes, c1 named as the odd one out.
corrupt $tmpdir/img/c1.img 8200 'XXXX'
run_verify 1 $P --report=$tmpdir/report.jsonl c0.img c1.img c2.img
cat > $tmpdir/expected <<'EOF'
differ: 0x2000-0x2fff (4096 bytes): odd one out: c1.img; c0.img c2.img agree
total: 3 copies, 1048576 bytes; 1 range differs, 4096 bytes
  c1.img: outvoted in 4096 bytes
EOF
assert_output
# --report kept the quorum's lines: child 1, and only child 1, outvoted,
# among them the 4 KiB read at 0x2000; and the summary.
assert_grep '"event":"bad","type":"read","child":1,.*"offset":8192,"length":4096,"mismatch":true' $tmpdir/report.jsonl
assert_no_grep '"event":"bad".*"child":[02],' $tmpdir/report.jsonl
assert_grep '"event":"summary","child":2,' $tmpdir/report.jsonl
# -q: nothing printed, the status says it.
run_verify 1 $P -q c0.img c1.img c2.img
test ! -s $tmpdir/out

# --- Many bad blocks in 12 MiB (three 4 MiB reads), blamed on the
# right copy each time: c2 at 100, 300000, two blocks either side of
# 4 MiB, three adjacent blocks from 6000000 (merged into one range),
# 8 KiB at 9 MiB; c0 at 11 MiB; at 7000000 c0 and c1 were both
# changed the same way, so the unchanged c2 is the odd one out.
nbdkit -U - pattern 12M --run "nbdcopy \"\$uri\" $tmpdir/img/c0.img"
cp $tmpdir/img/c0.img $tmpdir/img/c1.img
cp $tmpdir/img/c0.img $tmpdir/img/c2.img
for off in 100 300000 4194300 4194305 6000000 6004096 6008192; do
  corrupt $tmpdir/img/c2.img $off 'Z'
done
cd_img dd if=/dev/urandom of=c2.img bs=4096 seek=2304 count=2 conv=notrunc \
          status=none
corrupt $tmpdir/img/c0.img 11534336 'Q'
corrupt $tmpdir/img/c0.img 7000000 'R'
corrupt $tmpdir/img/c1.img 7000000 'R'
run_verify 1 $P c0.img c1.img c2.img
cat > $tmpdir/expected <<'EOF'
differ: 0x0-0xfff (4096 bytes): odd one out: c2.img; c0.img c1.img agree
differ: 0x49000-0x49fff (4096 bytes): odd one out: c2.img; c0.img c1.img agree
differ: 0x3ff000-0x400fff (8192 bytes): odd one out: c2.img; c0.img c1.img agree
differ: 0x5b8000-0x5bafff (12288 bytes): odd one out: c2.img; c0.img c1.img agree
differ: 0x6ac000-0x6acfff (4096 bytes): odd one out: c2.img; c0.img c1.img agree
differ: 0x900000-0x901fff (8192 bytes): odd one out: c2.img; c0.img c1.img agree
differ: 0xb00000-0xb00fff (4096 bytes): odd one out: c0.img; c1.img c2.img agree
total: 3 copies, 12582912 bytes; 7 ranges differ, 45056 bytes
  c0.img: outvoted in 4096 bytes
  c2.img: outvoted in 40960 bytes
EOF
assert_output

# --- Two copies that differ: no majority is possible; each range is
# listed with both copies, and the report has the failure lines.
run_verify 1 $P --report=$tmpdir/report2.jsonl c0.img c2.img
cat > $tmpdir/expected <<'EOF'
differ: 0x0-0xfff (4096 bytes): no majority: c0.img | c2.img
differ: 0x49000-0x49fff (4096 bytes): no majority: c0.img | c2.img
differ: 0x3ff000-0x400fff (8192 bytes): no majority: c0.img | c2.img
differ: 0x5b8000-0x5bafff (12288 bytes): no majority: c0.img | c2.img
differ: 0x6ac000-0x6acfff (4096 bytes): no majority: c0.img | c2.img
differ: 0x900000-0x901fff (8192 bytes): no majority: c0.img | c2.img
differ: 0xb00000-0xb00fff (4096 bytes): no majority: c0.img | c2.img
total: 2 copies, 12582912 bytes; 7 ranges differ, 45056 bytes
EOF
assert_output
assert_grep '"event":"failure","type":"read","offset":299008,"length":4096,"reason":"no-quorum","votes":1,"threshold":2' $tmpdir/report2.jsonl
assert_no_grep '"event":"bad"' $tmpdir/report2.jsonl
# Two copies that agree.
run_verify 0 $P c1.img c1.img
assert_grep '^agree: 2 copies, 12582912 bytes$' $tmpdir/out

# --- A truncated copy.
cp $tmpdir/img/c1.img $tmpdir/img/c2.img
truncate -s 12578816 $tmpdir/img/c2.img
run_verify 1 $P c0.img c1.img c2.img
echo 'sizes differ: c0.img 12582912, c1.img 12582912, c2.img 12578816' \
     > $tmpdir/expected
assert_output

# --- qcow2 copies next to a raw one; --format=auto tells them apart.
# The raw copy is the odd one out at 64 KiB.
rm $tmpdir/img/c*.img
nbdkit -U - pattern 1M --run "nbdcopy \"\$uri\" $tmpdir/img/r.img"
for q in q0 q1; do
  cd_img qemu-img convert -f raw -O qcow2 r.img $q.qcow2
done
cd_img qemu-io -f raw -c 'write -P 0x11 65536 4096' r.img
run_verify 1 $P --format=auto q0.qcow2 r.img q1.qcow2
cat > $tmpdir/expected <<'EOF'
differ: 0x10000-0x10fff (4096 bytes): odd one out: r.img; q0.qcow2 q1.qcow2 agree
total: 3 copies, 1048576 bytes; 1 range differs, 4096 bytes
  r.img: outvoted in 4096 bytes
EOF
assert_output
# All qcow2, forced: q1 written to through qemu-io (a new cluster).
cd_img qemu-img convert -f raw -O qcow2 r.img q2.qcow2
cd_img qemu-io -f qcow2 -c 'write -P 0x11 65536 4096' q0.qcow2
run_verify 0 $P --format=qcow2 q0.qcow2 q2.qcow2
run_verify 1 $P --format=qcow2 q0.qcow2 q1.qcow2 q2.qcow2
assert_grep '^differ: 0x10000-0x10fff \(4096 bytes\): odd one out: q1.qcow2; q0.qcow2 q2.qcow2 agree$' $tmpdir/out
# --format=qcow2 on a raw image is a start-up error.
run_verify 2 $P --format=qcow2 q0.qcow2 r.img
assert_grep 'r.img: not a qcow2 image' $tmpdir/out
# And the default reads qcow2 files as the bytes they hold.
run_verify 1 $P q0.qcow2 q1.qcow2

# --- A sparse 1 GiB disk: 64 KiB of data at 100 MiB and at 700 MiB, a
# byte changed in s2 at 700 MiB + 5000.  The holes are not read: every
# child sees a handful of reads (the quorum's summary), where reading
# the whole disk would take 256 reads of 4 MiB.
nbdkit -U - pattern 64K --run "nbdcopy \"\$uri\" $tmpdir/img/pat"
truncate -s 1G $tmpdir/img/s0.img
cd_img dd if=pat of=s0.img bs=64K seek=1600 conv=notrunc status=none
cd_img dd if=pat of=s0.img bs=64K seek=11200 conv=notrunc status=none
cd_img cp --sparse=always s0.img s1.img
cd_img cp --sparse=always s0.img s2.img
run_verify 0 $P --report=$tmpdir/sparse.jsonl s0.img s1.img s2.img
assert_grep '^agree: 3 copies, 1073741824 bytes$' $tmpdir/out
assert_grep '^read: 131072 bytes; skipped 1073610752 bytes that are zero in every copy$' $tmpdir/out
for i in 0 1 2; do
  assert_grep "\"event\":\"summary\",\"child\":$i,.*\"reads\":2," $tmpdir/sparse.jsonl
done
corrupt $tmpdir/img/s2.img $((700 * 1024 * 1024 + 5000)) 'x'
rm $tmpdir/sparse.jsonl
run_verify 1 $P --report=$tmpdir/sparse.jsonl s0.img s1.img s2.img
cat > $tmpdir/expected <<'EOF'
differ: 0x2bc01000-0x2bc01fff (4096 bytes): odd one out: s2.img; s0.img s1.img agree
total: 3 copies, 1073741824 bytes; 1 range differs, 4096 bytes
  s2.img: outvoted in 4096 bytes
EOF
assert_output
# 2 reads of 64 KiB: the quorum's report already names the 4 KiB
# block, so nothing is read again.
assert_grep '"event":"summary","child":2,.*"reads":2,' $tmpdir/sparse.jsonl
# An extra data region in one copy only is read, and found.
cd_img cp --sparse=always s0.img s2.img
cd_img dd if=pat of=s2.img bs=64K seek=8000 conv=notrunc status=none
run_verify 1 $P s0.img s1.img s2.img
assert_grep '^differ: 0x1f400000-0x1f40ffff \(65536 bytes\): odd one out: s2.img; s0.img s1.img agree$' $tmpdir/out
rm $tmpdir/img/s*.img

# --- File names that qemu would take for a protocol and nbdkit for a
# parameter, and a space.
cp $tmpdir/img/r.img "$tmpdir/img/a=b.img"
cp $tmpdir/img/r.img "$tmpdir/img/nbd:x.img"
mkdir "$tmpdir/img/sp ace"
cp $tmpdir/img/r.img "$tmpdir/img/sp ace/x y.img"
corrupt "$tmpdir/img/nbd:x.img" 5000 'Q'
run_verify 1 $P a=b.img nbd:x.img "sp ace/x y.img"
assert_grep '^differ: 0x1000-0x1fff \(4096 bytes\): odd one out: nbd:x.img; a=b.img sp ace/x y.img agree$' $tmpdir/out
rm -r "$tmpdir/img/a=b.img" "$tmpdir/img/nbd:x.img" "$tmpdir/img/sp ace"

# --- Usage and start-up errors: exit status 2.
run_verify 0 --help
assert_grep '^Usage: nbdkit-quorum-verify ' $tmpdir/out
run_verify 2 $P
run_verify 2 $P r.img
run_verify 2 $P r.img missing.img
assert_grep 'missing.img: no such file' $tmpdir/out
run_verify 2 $P --format=vmdk r.img r.img
run_verify 2 --bogus r.img r.img
run_verify 2 --plugin=$tmpdir/no-such-plugin.so r.img r.img
# A plugin nbdkit cannot load: the quorum does not start.
run_verify 2 --plugin=$tmpdir/img/pat r.img r.img
assert_grep 'did not complete' $tmpdir/out

# --- A signal in the middle of a check: the servers are stopped and
# the private directory removed.  A wrapper around the quorum's nbdkit
# stops child 0's server (SIGSTOP) first, so that the quorum hangs in
# its handshake with child 0 until the signal comes.
cat > $tmpdir/nbdkit-stop-c0 <<EOF
#!/usr/bin/env bash
for a in "\$@"; do
  case \$a in
    child=*c0.sock) d=\${a#*socket=}; d=\${d%c0.sock}; d=\${d:-./} ;;
  esac
done
kill -STOP "\$(cat "\${d}c0.pid")"
cp "\${d}c0.pid" $tmpdir/stopped
exec ${QUORUM_NBDKIT:-nbdkit} "\$@"
EOF
chmod +x $tmpdir/nbdkit-stop-c0
({ set +x; } 2>/dev/null; cd $tmpdir/img &&
 QUORUM_NBDKIT=$tmpdir/nbdkit-stop-c0 exec "$verify" $P r.img r.img r.img) \
  > $tmpdir/out 2>&1 &
vpid=$!
cleanup_fn kill_pid $vpid
for i in $(seq 100); do
  [ -s $tmpdir/stopped ] && break
  sleep 0.1
done
c0pid=$(cat $tmpdir/stopped)
cleanup_fn kill -9 $c0pid
kill -TERM $vpid
rc=0
wait $vpid || rc=$?
cat $tmpdir/out
test $rc -eq 143
if kill -0 $c0pid 2>/dev/null; then
  echo "$0: FAIL: the stopped child server $c0pid was left running"
  exit 1
fi
test -z "$(ls -A $tmpdir/vt)"

# ---------------------------------------------------------------------
# Images nobody trusts, odd temporary directories, one pass over the
# data, --json and the progress line.  Each part has its own images in
# $tmpdir/n.

# A wrapper around the quorum's nbdkit, for the parts below:
#  QV_LOG=FILE      puts the log filter over the quorum, so that every
#                   read the tool makes is counted;
#  QV_FIRST=ARGS    parameters given before the tool's own;
#  QV_STOP_C0=SECS  stops child 0's server that long (SIGSTOP, then
#                   SIGCONT in the background).
cat > $tmpdir/nbdkit-wrap <<EOF
#!/usr/bin/env bash
pre=() post=()
if [ -n "\$QV_LOG" ]; then
  pre+=(--filter=log)
  post+=("logfile=\$QV_LOG")
fi
if [ -n "\$QV_STOP_C0" ]; then
  for a in "\$@"; do
    case \$a in
      child=*c0.sock) d=\${a#*socket=}; d=\${d%c0.sock}; d=\${d:-./} ;;
    esac
  done
  c0=\$(cat "\${d}c0.pid")
  kill -STOP "\$c0"
  (sleep "\$QV_STOP_C0"; kill -CONT "\$c0") </dev/null >/dev/null 2>&1 &
fi
# The plugin is the first argument that is not an option; QV_FIRST
# goes right after it.
args=() seen=false
for a in "\$@"; do
  args+=("\$a")
  if ! \$seen && [ "\${a#-}" = "\$a" ] && [ "\${a#*=}" = "\$a" ]; then
    seen=true
    [ -n "\$QV_FIRST" ] && args+=(\$QV_FIRST)
  fi
done
exec ${QUORUM_NBDKIT:-nbdkit} "\${pre[@]}" "\${args[@]}" "\${post[@]}"
EOF
chmod +x $tmpdir/nbdkit-wrap
mkdir $tmpdir/n
n_verify () { vdir=$tmpdir/n run_verify "$@"; }
cd_n () { (cd $tmpdir/n && "$@"); }

# --- A guest wrote a qcow2 header at the start of its raw disk, whose
# backing file names a file of the host.  By default the images are
# raw: the bytes of the disk are compared, the host file is never
# opened (a FIFO as the backing file: opening it would let its writer
# go on), and the damage at 900000 in p2 is found.
head -c 1M /dev/zero | tr '\0' S > $tmpdir/secret
mkfifo $tmpdir/secret.fifo
cd_n nbdkit -U - pattern 1M --run 'nbdcopy "$uri" p0.img'
cd_n qemu-img create -q -f qcow2 -b $tmpdir/secret -F raw hdr.qcow2 1M
# -u: qemu-img would open the FIFO itself.
cd_n qemu-img create -q -u -f qcow2 -b $tmpdir/secret.fifo -F raw \
     hdrf.qcow2 1M
cd_n cp p0.img f0.img
cd_n dd if=hdr.qcow2 of=p0.img conv=notrunc status=none
cd_n dd if=hdrf.qcow2 of=f0.img conv=notrunc status=none
test "$(cd_n head -c 4 p0.img)" = $'QFI\xfb'
test $(stat -c %s $tmpdir/n/hdr.qcow2) -lt 897024
for i in 1 2; do cd_n cp p0.img p$i.img; cd_n cp f0.img f$i.img; done
corrupt $tmpdir/n/p2.img 900000 'x'
corrupt $tmpdir/n/f2.img 900000 'x'
( exec > $tmpdir/secret.fifo; touch $tmpdir/fifo-opened ) &
fifo_writer=$!
cleanup_fn eval "kill $fifo_writer 2>/dev/null"
n_verify 1 $P p0.img p1.img p2.img
cat > $tmpdir/expected <<'EOF'
differ: 0xdb000-0xdbfff (4096 bytes): odd one out: p2.img; p0.img p1.img agree
total: 3 copies, 1048576 bytes; 1 range differs, 4096 bytes
  p2.img: outvoted in 4096 bytes
EOF
assert_output
n_verify 1 $P f0.img f1.img f2.img
assert_grep '^differ: 0xdb000-0xdbfff \(4096 bytes\): odd one out: f2.img; f0.img f1.img agree$' $tmpdir/out
# Asked to read them as qcow2 (or to probe), the tool refuses a backing
# file, without opening it.
n_verify 2 $P --format=qcow2 f0.img f1.img f2.img
assert_grep 'f0.img: .*backing file' $tmpdir/out
n_verify 2 $P --format=auto f0.img f1.img f2.img
assert_grep 'f0.img: .*backing file' $tmpdir/out
n_verify 2 $P --format=qcow2 p0.img p1.img p2.img
assert_grep 'p0.img: .*backing file.*--allow-backing' $tmpdir/out
test ! -e $tmpdir/fifo-opened
# Unless told to: then qemu follows the backing file, the three read
# the host file where their qcow2 has no cluster, and agree.
n_verify 0 $P --format=auto --allow-backing p0.img p1.img p2.img
assert_grep '^agree: 3 copies, 1048576 bytes$' $tmpdir/out
# Let the FIFO's writer go.
exec 7<>$tmpdir/secret.fifo
wait $fifo_writer
exec 7<&-
# An external data file is a host file too: refused.
cd_n qemu-img create -q -f qcow2 -o data_file=$tmpdir/dsecret,data_file_raw=on \
     d0.qcow2 1M
head -c 1M /dev/zero | tr '\0' S > $tmpdir/dsecret
cd_n cp d0.qcow2 d1.qcow2
n_verify 2 $P --format=qcow2 d0.qcow2 d1.qcow2
assert_grep 'd0.qcow2: .*data file' $tmpdir/out
rm $tmpdir/n/*

# --- A slow copy is not a failure: the tool's own children have no
# timeout, whatever the quorum's default (here 1 s, given first), and
# child 0 that does not answer for 3 s only makes the check slower.
cd_n nbdkit -U - pattern 1M --run 'nbdcopy "$uri" c0.img'
cd_n cp c0.img c1.img
cd_n cp c0.img c2.img
QUORUM_NBDKIT=$tmpdir/nbdkit-wrap QV_FIRST=child-timeout=1 QV_STOP_C0=3 \
  n_verify 0 $P c0.img c1.img c2.img
assert_grep '^agree: 3 copies, 1048576 bytes$' $tmpdir/out
rm $tmpdir/n/*

# --- Temporary directories with spaces, quotes, & and %, and one whose
# socket paths would not fit in sun_path (108 bytes).
cd_n nbdkit -U - pattern 4M --run 'nbdcopy "$uri" c0.img'
cd_n cp c0.img c1.img
cd_n cp c0.img c2.img
corrupt $tmpdir/n/c1.img 3000000 'Q'
cat > $tmpdir/expected <<'EOF'
differ: 0x2dc000-0x2dcfff (4096 bytes): odd one out: c1.img; c0.img c2.img agree
total: 3 copies, 4194304 bytes; 1 range differs, 4096 bytes
  c1.img: outvoted in 4096 bytes
EOF
weird="$tmpdir/a b 'c' \"d\" & e%20f %s"
long=$tmpdir/$(printf 'l%.0s' $(seq 120))
for t in "$weird" "$long"; do
  mkdir "$t"
  TMPDIR=$t n_verify 1 $P c0.img c1.img c2.img
  assert_output
  if [ -n "$(ls -A "$t")" ]; then
    echo "$0: FAIL: nbdkit-quorum-verify left $(ls -A "$t") behind in $t"
    exit 1
  fi
  rmdir "$t"
done
rm $tmpdir/n/*

# --- --json, checked field by field against the damage made: in
# 12 MiB, c2 changed at 100, 300000, either side of 4 MiB, in three
# adjacent blocks from 6000000 and in 8 KiB at 9 MiB, c0 at 11 MiB; at
# 7000000 c0 and c1 were changed alike, so that c2 is the odd one out.
cd_n nbdkit -U - pattern 12M --run 'nbdcopy "$uri" c0.img'
cd_n cp c0.img c1.img
cd_n cp c0.img c2.img
for off in 100 300000 4194300 4194305 6000000 6004096 6008192; do
  corrupt $tmpdir/n/c2.img $off 'Z'
done
cd_n dd if=/dev/urandom of=c2.img bs=4096 seek=2304 count=2 conv=notrunc \
          status=none
corrupt $tmpdir/n/c0.img 11534336 'Q'
corrupt $tmpdir/n/c0.img 7000000 'R'
corrupt $tmpdir/n/c1.img 7000000 'R'
cat > $tmpdir/check-json.py <<'EOF'
import json, sys

# check-json.py OUT KIND: OUT holds the tool's --json output.
out, kind = sys.argv[1], sys.argv[2]
with open(out) as f:
    j = json.load(f)            # one JSON document, nothing else
B = 4096
SIZE = 12 << 20
names = ["c0.img", "c1.img", "c2.img"]


def expect(what, got, want):
    if got != want:
        sys.exit("FAIL: %s: got %r, expected %r" % (what, got, want))


def odd_blocks(damage):
    """{block: odd image} from (image, offset, length)."""
    blocks = {}
    for img, off, length in damage:
        for b in range(off // B, (off + length - 1) // B + 1):
            blocks[b] = img
    return blocks


def merged(blocks):
    """[[offset, length, odd]], adjacent blocks of one odd image merged."""
    out = []
    for b in sorted(blocks):
        if out and out[-1][0] + out[-1][1] == b * B and out[-1][2] == blocks[b]:
            out[-1][1] += B
        else:
            out.append([b * B, B, blocks[b]])
    return out


# c2 is the odd one out everywhere but at 11 MiB, where c0 is.
DAMAGE = [(2, 100, 1), (2, 300000, 1), (2, 4194300, 1), (2, 4194305, 1),
          (2, 6000000, 1), (2, 6004096, 1), (2, 6008192, 1),
          (2, 9 << 20, 8192), (0, 11534336, 1), (2, 7000000, 1)]

expect("schema", j["schema"], 1)
if kind == "three":
    want = merged(odd_blocks(DAMAGE))
    expect("status", j["status"], 1)
    expect("result", j["result"], "differ")
    expect("size", j["size"], SIZE)
    expect("sizes_differ", j["sizes_differ"], False)
    expect("number of images", len(j["images"]), 3)
    for i, im in enumerate(j["images"]):
        expect("images[%d].name" % i, im["name"], names[i])
        expect("images[%d].format" % i, im["format"], "raw")
        expect("images[%d].size" % i, im["size"], SIZE)
        expect("images[%d].outvoted_bytes" % i, im["outvoted_bytes"],
               sum(l for o, l, odd in want if odd == i))
        expect("images[%d].unreadable_bytes" % i, im["unreadable_bytes"], 0)
    expect("number of ranges", len(j["ranges"]), len(want))
    for r, (off, length, odd) in zip(j["ranges"], want):
        w = "range at %d" % off
        expect(w + ": offset", r["offset"], off)
        expect(w + ": length", r["length"], length)
        expect(w + ": odd_one_out", r["odd_one_out"], odd)
        expect(w + ": outvoted", r["outvoted"], [odd])
        expect(w + ": agree", r["agree"], [i for i in range(3) if i != odd])
        expect(w + ": unreadable", r["unreadable"], [])
        expect(w + ": failure", r["failure"], None)
    t = j["totals"]
    expect("totals.copies", t["copies"], 3)
    expect("totals.ranges", t["ranges"], len(want))
    expect("totals.bytes_differ", t["bytes_differ"],
           sum(l for _, l, _ in want))
    expect("totals.bytes_read", t["bytes_read"], SIZE)
    expect("totals.bytes_skipped", t["bytes_skipped"], 0)
    expect("down", j["down"], [])
elif kind == "two":
    # c0 and c2 alone: no majority wherever either was changed.
    want = merged(odd_blocks(DAMAGE))
    expect("status", j["status"], 1)
    expect("result", j["result"], "differ")
    expect("names", [im["name"] for im in j["images"]], ["c0.img", "c2.img"])
    expect("number of ranges", len(j["ranges"]), len(want))
    for r, (off, length, _) in zip(j["ranges"], want):
        w = "range at %d" % off
        expect(w + ": offset", r["offset"], off)
        expect(w + ": length", r["length"], length)
        expect(w + ": odd_one_out", r["odd_one_out"], None)
        expect(w + ": outvoted", r["outvoted"], [])
        expect(w + ": agree", r["agree"], None)
        f = r["failure"]
        expect(w + ": failure.reason", f["reason"], "no-quorum")
        expect(w + ": failure.groups", f["groups"], [[0], [1]])
        expect(w + ": failure.votes", f["votes"], 1)
        expect(w + ": failure.threshold", f["threshold"], 2)
    expect("totals.bytes_differ", j["totals"]["bytes_differ"],
           sum(l for _, l, _ in want))
    expect("images outvoted", [im["outvoted_bytes"] for im in j["images"]],
           [0, 0])
elif kind == "agree":
    expect("status", j["status"], 0)
    expect("result", j["result"], "agree")
    expect("size", j["size"], SIZE)
    expect("ranges", j["ranges"], [])
    expect("totals.ranges", j["totals"]["ranges"], 0)
    expect("totals.bytes_differ", j["totals"]["bytes_differ"], 0)
elif kind == "sizes":
    expect("status", j["status"], 1)
    expect("result", j["result"], "differ")
    expect("sizes_differ", j["sizes_differ"], True)
    expect("size", j["size"], None)
    expect("sizes", [im["size"] for im in j["images"]], [SIZE, SIZE - B])
    expect("ranges", j["ranges"], [])
print("json %s: ok" % kind)
EOF
# The JSON document alone on stdout, stderr apart.
n_json ()
{
  local want=$1 rc=0
  shift
  (cd $tmpdir/n && exec "$verify" $P --json "$@") > $tmpdir/out.json \
    2> $tmpdir/err || rc=$?
  cat $tmpdir/out.json $tmpdir/err
  test $rc -eq $want
  test -z "$(ls -A $tmpdir/vt)"
}
n_json 1 c0.img c1.img c2.img
/usr/bin/python3 $tmpdir/check-json.py $tmpdir/out.json three
n_json 1 c0.img c2.img
/usr/bin/python3 $tmpdir/check-json.py $tmpdir/out.json two
n_json 0 c1.img c1.img
/usr/bin/python3 $tmpdir/check-json.py $tmpdir/out.json agree
cd_n cp c1.img c3.img
truncate -s $((12 * 1024 * 1024 - 4096)) $tmpdir/n/c3.img
n_json 1 c1.img c3.img
/usr/bin/python3 $tmpdir/check-json.py $tmpdir/out.json sizes

# --- The progress line: on a terminal (a pty from script(1)), and
# with --progress; never otherwise.
requires script -qec true /dev/null
script -qec "cd $tmpdir/n && '$verify' $P c0.img c1.img c2.img" \
       /dev/null > $tmpdir/tty.out 2>&1 || test $? -eq 1
cat -A $tmpdir/tty.out
assert_grep $'\r'"nbdkit-quorum-verify: 100% " $tmpdir/tty.out
assert_grep '^differ: 0xb00000-0xb00fff ' $tmpdir/tty.out
n_verify 1 $P c0.img c1.img c2.img
assert_no_grep '%' $tmpdir/out
n_verify 1 $P --progress c0.img c1.img c2.img
assert_grep '^nbdkit-quorum-verify: 100% ' $tmpdir/out
rm $tmpdir/n/*

# --- One pass over the data: a stale copy differs everywhere; each
# byte is read once (the log filter over the quorum sees every read
# the tool makes), and every child was asked as many times.
cd_n nbdkit -U - pattern 16M --run 'nbdcopy "$uri" c0.img'
cd_n cp c0.img c1.img
cd_n dd if=/dev/urandom of=c2.img bs=1M count=16 status=none
cat > $tmpdir/reads.py <<'EOF'
import json, re, sys

# reads.py LOG REPORT SIZE NCHILDREN: every byte of the disk read once.
log, report = sys.argv[1], sys.argv[2]
size, n = int(sys.argv[3]), int(sys.argv[4])
reads = []
for line in open(log):
    m = re.search(r" Read id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)",
                  line)
    if m:
        reads.append((int(m.group(1), 16), int(m.group(2), 16)))
reads.sort()
pos = 0
for off, count in reads:
    if off != pos:
        sys.exit("FAIL: %d reads; one at %d, expected %d" %
                 (len(reads), off, pos))
    pos += count
if pos != size:
    sys.exit("FAIL: %d bytes read, expected %d" % (pos, size))
summ = [json.loads(l) for l in open(report) if '"summary"' in l]
if len(summ) != n or any(s["reads"] != len(reads) for s in summ):
    sys.exit("FAIL: children's reads %r, the tool made %d" %
             ([s["reads"] for s in summ], len(reads)))
print("%d reads, each byte once" % len(reads))
EOF
rm -f $tmpdir/qlog
QUORUM_NBDKIT=$tmpdir/nbdkit-wrap QV_LOG=$tmpdir/qlog \
  n_verify 1 $P --report=$tmpdir/stale.jsonl c0.img c1.img c2.img
cat > $tmpdir/expected <<'EOF'
differ: 0x0-0xffffff (16777216 bytes): odd one out: c2.img; c0.img c1.img agree
total: 3 copies, 16777216 bytes; 1 range differs, 16777216 bytes
  c2.img: outvoted in 16777216 bytes
EOF
assert_output
/usr/bin/python3 $tmpdir/reads.py $tmpdir/qlog $tmpdir/stale.jsonl 16777216 3
# Two copies: no majority anywhere, still one pass.
rm -f $tmpdir/qlog $tmpdir/stale.jsonl
QUORUM_NBDKIT=$tmpdir/nbdkit-wrap QV_LOG=$tmpdir/qlog \
  n_verify 1 $P --report=$tmpdir/stale.jsonl c0.img c2.img
cat > $tmpdir/expected <<'EOF'
differ: 0x0-0xffffff (16777216 bytes): no majority: c0.img | c2.img
total: 2 copies, 16777216 bytes; 1 range differs, 16777216 bytes
EOF
assert_output
/usr/bin/python3 $tmpdir/reads.py $tmpdir/qlog $tmpdir/stale.jsonl 16777216 2
rm $tmpdir/n/*

# --- A copy that cannot be read: named with the error over the reads
# that failed, each byte still read once.  A wrapper puts child 1
# behind the error filter (a child-command over the tool's socket).
cat > $tmpdir/nbdkit-err1 <<EOF
#!/usr/bin/env bash
args=()
for a in "\$@"; do
  case \$a in
    child=*c1.sock)
      a="child-command=nbdkit --exit-with-parent --filter=error nbd socket=c1.sock error-pread=EIO error-pread-rate=1" ;;
  esac
  args+=("\$a")
done
exec ${QUORUM_NBDKIT:-nbdkit} "\${args[@]}"
EOF
chmod +x $tmpdir/nbdkit-err1
cd_n nbdkit -U - pattern 8M --run 'nbdcopy "$uri" c0.img'
cd_n cp c0.img c1.img
cd_n cp c0.img c2.img
corrupt $tmpdir/n/c2.img 5000000 'E'
QUORUM_NBDKIT=$tmpdir/nbdkit-err1 n_verify 1 $P c0.img c1.img c2.img
cat > $tmpdir/expected <<'EOF'
differ: 0x0-0x4c3fff (4997120 bytes): unreadable: c1.img (EIO)
differ: 0x4c4000-0x4c4fff (4096 bytes): no majority: c0.img | c2.img; unreadable: c1.img (EIO)
differ: 0x4c5000-0x7fffff (3387392 bytes): unreadable: c1.img (EIO)
total: 3 copies, 8388608 bytes; 3 ranges differ, 8388608 bytes
  c1.img: unreadable in 8388608 bytes
EOF
assert_output
rm $tmpdir/n/*
