#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# NBD leaves trimmed bytes unspecified: the memory plugin reads zeroes
# back, qemu-nbd --discard=ignore and a plugin whose trim does nothing
# keep the old data.  The quorum trims as a zero that may punch holes,
# so every child reads the same afterwards: no false mismatch with
# three children, no EIO with two.  A child that cannot zero (nbdkit's
# nozero filter) means no trim offered.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires qemu-nbd --version

# An eval plugin over $tmpdir/cN.img whose trim does nothing.
lazy_trim ()
{
  local n=$1
  shift
  "$@" eval \
    get_size='echo 1048576' \
    pread="dd if=$tmpdir/c$n.img skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
    pwrite="dd of=$tmpdir/c$n.img seek=\$4 oflag=seek_bytes conv=notrunc status=none" \
    can_write='exit 0' can_flush='exit 0' flush='exit 0' \
    can_trim='exit 0' trim='exit 0'
}

script="
M = 1 << 20
assert h.can_trim()
h.pwrite(b\"x\" * M, 0)
h.trim(256 * 1024, 65536)
h.trim(4096, 512 * 1024, nbd.CMD_FLAG_FUA)
expect = bytearray(b\"x\" * M)
expect[65536:65536 + 256 * 1024] = bytes(256 * 1024)
expect[512 * 1024:512 * 1024 + 4096] = bytes(4096)
assert h.pread(M, 0) == expect
"

trim ()
{
  for i in 0 1 2; do truncate -s 0 $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 memory 1M
  lazy_trim 1 start_child 1
  start_qemu_child 2 --discard=ignore

  # Three children: none outvoted.
  quorum -U - "${quorum_head[@]}" child="$(child_uri 1)" \
         child="$(child_uri 2)" --run "nbdsh -u \"\$uri\" -c '$script'"
  assert_no_grep 'event=(bad|failure)' $tmpdir/syslog
  cmp $tmpdir/c1.img $tmpdir/c2.img

  # Two that trim differently: the read does not fail.
  quorum -U - "${quorum_head[@]}" child="$(child_uri 1)" \
         --run "nbdsh -u \"\$uri\" -c '$script'"
  assert_no_grep 'event=(bad|failure)' $tmpdir/syslog

  # A child that cannot zero: no trim.
  stop_child 1
  start_child 1 --filter=nozero memory 1M zeromode=none
  quorum -U - "${quorum_head[@]}" child="$(child_uri 1)" \
         child="$(child_uri 2)" --run "nbdsh -u \"\$uri\" -c '
assert not h.can_trim()
assert h.can_zero()
h.pwrite(b\"y\" * 8192, 0)
h.zero(4096, 0)
assert h.pread(8192, 0) == bytes(4096) + b\"y\" * 4096
'"
  assert_no_grep 'event=(bad|failure)' $tmpdir/syslog
}

for_each_form trim
