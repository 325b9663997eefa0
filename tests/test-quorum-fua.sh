#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# FUA on a quorum whose children do not all have it: the export still
# offers FUA, a child that has it gets the flag, and a child without it
# (the plugin below the filter, or a remote server) gets the write
# without the flag and then a flush of its own.  Never the flag itself:
# the plugin would make nbdkit abort, and libnbd refuses it for a
# server that did not advertise it.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

# An eval plugin over $tmpdir/cN.img without FUA, logging to cN.log
# every write (with its flags) and flush.
no_fua_child ()
{
  local n=$1
  shift
  "$@" eval \
    get_size='echo 1048576' \
    pread="dd if=$tmpdir/c$n.img skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
    pwrite="echo pwrite \$3 \$4 \"\$5\" >> $tmpdir/c$n.log; dd of=$tmpdir/c$n.img seek=\$4 oflag=seek_bytes conv=notrunc status=none" \
    can_write='exit 0' can_flush='exit 0' can_fua='echo none' \
    flush="echo flush >> $tmpdir/c$n.log"
}

fua ()
{
  for i in 0 1 2; do
    truncate -s 0 $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img
    rm -f $tmpdir/c$i.log
  done
  # Child 0 without FUA (the fua filter's default mode) through
  # nbdkit's own filters, not eval: in the filter form it runs inside
  # the quorum's nbdkit, and under the sanitizer builds an eval
  # script's processes (dd) would inherit the preloaded runtime.
  child0 --filter=fua --filter=log file $tmpdir/c0.img \
         logfile=$tmpdir/c0.log
  no_fua_child 1 start_child 1
  start_child 2 --filter=log file $tmpdir/c2.img logfile=$tmpdir/c2.log
  children="child=$(child_uri 1) child=$(child_uri 2)"

  quorum -U - "${quorum_head[@]}" $children --run "nbdsh -u \"\$uri\" -c '
assert h.can_fua()
h.pwrite(b\"x\" * 512, 0, nbd.CMD_FLAG_FUA)
h.zero(4096, 8192, nbd.CMD_FLAG_FUA)
assert h.pread(512, 0) == b\"x\" * 512
'"
  assert_no_grep 'event=(bad|failure)' $tmpdir/syslog
  # The write, without FUA, then a flush; the same for the zero
  # (written as zeroes by nbdkit for the eval child).
  cat $tmpdir/c0.log
  assert_no_grep 'fua=1' $tmpdir/c0.log
  grep -E ' (Write|Zero|Flush) id=' $tmpdir/c0.log |
    sed -E 's/.* (Write|Zero) id=[0-9]+ offset=(0x[0-9a-f]+).*/\1 \2/; s/.* Flush id=.*/Flush/' \
    > $tmpdir/c0.ops
  cat $tmpdir/c0.ops
  test "$(head -n 4 $tmpdir/c0.ops | tr '\n' ' ')" = "Write 0x0 Flush Zero 0x2000 Flush "
  cat $tmpdir/c1.log
  assert_grep '^pwrite 512 0 $' $tmpdir/c1.log
  test "$(sed -n '2p' $tmpdir/c1.log)" = flush
  test "$(grep -c '^flush$' $tmpdir/c1.log)" -ge 2
  for i in 0 1; do
    cmp -n 512 $tmpdir/c$i.img $tmpdir/c2.img
  done
  # The child with FUA had the flag, and no flush.
  cat $tmpdir/c2.log
  assert_grep 'Write .*offset=0x0 count=0x200 fua=1' $tmpdir/c2.log
  assert_grep 'Zero .*offset=0x2000 count=0x1000 .*fua=1' $tmpdir/c2.log
  assert_no_grep 'Flush' $tmpdir/c2.log
}

for_each_form fua
