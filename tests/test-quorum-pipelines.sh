#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# The tools that libguestfs and virt-v2v pipelines run against an NBD
# export, pointed at a quorum with one corrupted child, in the plugin
# and in the filter form: qemu-img convert (both URI syntaxes) and
# qemu-img compare see the good image; nbdcopy reads the good image
# out and writes a new one in, after which every child holds it; and
# nbdinfo --map and qemu-img map show the merged extents of sparse
# children (a hole only where every child has one).

source ./functions.sh
set -e
set -x
requires qemu-img --version
requires nbdcopy --version
requires nbdinfo --version

size=4M
nbdkit -U - pattern $size --run "nbdcopy \"\$uri\" $tmpdir/good.img"
# What is written through the quorum later.
nbdkit -U - random $size seed=42 --run "nbdcopy \"\$uri\" $tmpdir/new.img"
cmp -s $tmpdir/good.img $tmpdir/new.img && exit 1

qsock=$tmpdir/q.sock
quri="nbd+unix:///?socket=$qsock"

# stop_server NAME: stop the server of $tmpdir/NAME.pid, if any, and
# remove its socket.
stop_server ()
{
  if [ -s $tmpdir/$1.pid ]; then
    kill_pid "$(cat $tmpdir/$1.pid)"
  fi
  rm -f $tmpdir/$1.pid $tmpdir/$1.sock
}

# pipelines FORM BAD: run every tool against the quorum (FORM plugin or
# filter) whose child BAD has 4 KiB overwritten at 1 MiB.
pipelines ()
{
  local form=$1 bad=$2 i rc

  for i in 0 1 2; do cp $tmpdir/good.img $tmpdir/c$i.img; done
  dd if=/dev/urandom of=$tmpdir/c$bad.img bs=4096 seek=256 count=1 \
     conv=notrunc status=none
  rm -f $tmpdir/syslog
  if [ $form = plugin ]; then
    for i in 0 1 2; do start_child $i file $tmpdir/c$i.img; done
    start_quorum -P $tmpdir/q.pid -U $qsock $QUORUM_PLUGIN \
                 child="$(child_uri 0)" child="$(child_uri 1)" \
                 child="$(child_uri 2)"
  else
    for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
    start_quorum -P $tmpdir/q.pid -U $qsock --filter=$QUORUM_FILTER \
                 file $tmpdir/c0.img \
                 child="$(child_uri 1)" child="$(child_uri 2)"
  fi

  # qemu-img convert, with the URI and with qemu's older syntax.
  qemu-img convert -f raw -O raw "$quri" $tmpdir/out1.img
  cmp $tmpdir/out1.img $tmpdir/good.img
  qemu-img convert -f raw -O raw "nbd:unix:$qsock" $tmpdir/out2.img
  cmp $tmpdir/out2.img $tmpdir/good.img

  # qemu-img compare: identical to the good image, not to the bad
  # child's image (exit status 1, the first differing offset).
  qemu-img compare -f raw -F raw "$quri" $tmpdir/good.img > $tmpdir/cmp
  assert_grep '^Images are identical\.$' $tmpdir/cmp
  rc=0
  qemu-img compare -f raw -F raw "$quri" $tmpdir/c$bad.img > $tmpdir/cmp || rc=$?
  cat $tmpdir/cmp
  test $rc -eq 1
  assert_grep '^Content mismatch at offset 1048576!$' $tmpdir/cmp

  # nbdcopy out of the quorum.
  nbdcopy "$quri" $tmpdir/out3.img
  cmp $tmpdir/out3.img $tmpdir/good.img

  # The bad child was outvoted, nothing failed.
  if [ $form = plugin ]; then
    assert_grep "event=bad type=read child=$bad name=nbd\+unix:///\?socket=$tmpdir/c$bad.sock offset=.* error=mismatch" $tmpdir/syslog
  else
    assert_grep "event=bad type=read child=$bad name=plugin offset=.* error=mismatch" $tmpdir/syslog
  fi
  assert_no_grep "event=bad .*child=[^$bad] " $tmpdir/syslog
  assert_no_grep 'event=failure' $tmpdir/syslog

  # nbdcopy into the quorum: every child, the bad one too, then holds
  # the new image, and the quorum reads it back without a report.
  nbdcopy $tmpdir/new.img "$quri"
  for i in 0 1 2; do cmp $tmpdir/c$i.img $tmpdir/new.img; done
  rm -f $tmpdir/syslog
  nbdcopy "$quri" $tmpdir/out4.img
  cmp $tmpdir/out4.img $tmpdir/new.img
  touch $tmpdir/syslog
  assert_no_grep 'event=' $tmpdir/syslog

  # Stopped, for the next form to start on the same sockets (nbdkit
  # leaves its socket behind).
  stop_server q
  for i in 0 1 2; do stop_server c$i; done
}

pipelines plugin 1
pipelines filter 0

# Extents.  4 MiB sparse children: 64 KiB of data at 0 and at 2 MiB in
# all four; s3 also has 64 KiB of zeros written (allocated) at 1 MiB.
# The contents agree everywhere; the quorum's map has data wherever
# any child has it.
for i in 0 1 2 3; do
  truncate -s 4M $tmpdir/s$i.img
  dd if=$tmpdir/good.img of=$tmpdir/s$i.img bs=64K count=1 \
     conv=notrunc status=none
  dd if=$tmpdir/good.img of=$tmpdir/s$i.img bs=64K skip=32 seek=32 count=1 \
     conv=notrunc status=none
done
dd if=/dev/zero of=$tmpdir/s3.img bs=64K seek=16 count=1 conv=notrunc \
   status=none
cat > $tmpdir/expected-map <<'EOF'
0 65536 0
65536 983040 3
1048576 65536 0
1114112 983040 3
2097152 65536 0
2162688 2031616 3
EOF
cat > $tmpdir/expected-qemu-map <<'EOF'
0 65536 true
65536 983040 false
1048576 65536 true
1114112 983040 false
2097152 65536 true
2162688 2031616 false
EOF

# check_map URI: nbdinfo --map and qemu-img map of URI as expected.
check_map ()
{
  nbdinfo --map "$1" > $tmpdir/map
  cat $tmpdir/map
  awk '{ print $1, $2, $3 }' $tmpdir/map > $tmpdir/map.cmp
  diff -u $tmpdir/expected-map $tmpdir/map.cmp
  qemu-img map -f raw --output=json "$1" > $tmpdir/qmap
  cat $tmpdir/qmap
  python3 - $tmpdir/qmap > $tmpdir/qmap.cmp <<'EOF'
import json, sys
for e in json.load(open(sys.argv[1])):
    print(e["start"], e["length"], "true" if e["data"] else "false")
EOF
  diff -u $tmpdir/expected-qemu-map $tmpdir/qmap.cmp
}

for i in 0 1 2 3; do start_child $i file $tmpdir/s$i.img; done
# A child on its own does not have the data at 1 MiB.
nbdinfo --map "$(child_uri 0)" > $tmpdir/map0
assert_grep '^ *65536 *2031616 *3 *hole,zero$' $tmpdir/map0

rm -f $tmpdir/syslog
start_quorum -P $tmpdir/q.pid -U $qsock $QUORUM_PLUGIN \
             child="$(child_uri 0)" child="$(child_uri 1)" \
             child="$(child_uri 2)" child="$(child_uri 3)"
check_map "$quri"
# The copies agree, zeros written or not.
nbdcopy "$quri" $tmpdir/s.out
cmp $tmpdir/s.out $tmpdir/s0.img
stop_server q

# Filter form: s3 is the plugin below the filter.
start_quorum -P $tmpdir/q.pid -U $qsock --filter=$QUORUM_FILTER \
             file $tmpdir/s3.img \
             child="$(child_uri 0)" child="$(child_uri 1)" \
             child="$(child_uri 2)"
check_map "$quri"
stop_server q
touch $tmpdir/syslog
assert_no_grep 'event=' $tmpdir/syslog
