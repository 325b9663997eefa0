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
# included.

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

# run_verify STATUS ARGS...: run the script in $tmpdir/img, output in
# $tmpdir/out; its exit status must be STATUS.
mkdir $tmpdir/img
run_verify ()
{
  local want=$1 rc=0
  shift
  ({ set +x; } 2>/dev/null; cd $tmpdir/img && exec "$verify" "$@") > $tmpdir/out 2>&1 || rc=$?
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

# --- qcow2 copies next to a raw one; --format=auto asks qemu-img.
# The raw copy is the odd one out at 64 KiB.
rm $tmpdir/img/c*.img
nbdkit -U - pattern 1M --run "nbdcopy \"\$uri\" $tmpdir/img/r.img"
for q in q0 q1; do
  cd_img qemu-img convert -f raw -O qcow2 r.img $q.qcow2
done
cd_img qemu-io -f raw -c 'write -P 0x11 65536 4096' r.img
run_verify 1 $P q0.qcow2 r.img q1.qcow2
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
assert_grep 'r.img: qemu-img info failed' $tmpdir/out

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
    child=*c0.sock) d=\${a#*socket=}; d=\${d%/c0.sock} ;;
  esac
done
kill -STOP "\$(cat "\$d/c0.pid")"
cp "\$d/c0.pid" $tmpdir/stopped
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
