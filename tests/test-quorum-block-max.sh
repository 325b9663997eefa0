#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Requests longer than a child's maximum block size are split for that
# child.  qemu-nbd takes at most 32 MiB (a longer write makes it drop
# the connection, a longer read fails), and nbdkit passes a client's
# 40 MiB requests through whatever the export advertises.  Child 0
# takes at most 8 MiB, aligned to 4 KiB, and refuses anything else
# (blocksize-policy); its log shows what reached it.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires qemu-nbd --version

block_max ()
{
  for i in 0 1 2; do
    truncate -s 0 $tmpdir/c$i.img; truncate -s 64M $tmpdir/c$i.img
  done
  rm -f $tmpdir/c0.log
  child0 --filter=log --filter=blocksize-policy file $tmpdir/c0.img \
         blocksize-minimum=4096 blocksize-maximum=8M \
         blocksize-error-policy=error logfile=$tmpdir/c0.log
  start_qemu_child 1
  start_qemu_child 2
  children="child=$(child_uri 1) child=$(child_uri 2)"

  quorum -U - "${quorum_head[@]}" $children --run "nbdsh -u \"\$uri\" -c '
M = 1 << 20
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 8 * M
# A client that ignores the advertised maximum: newer libnbd refuses
# to send such a request unless asked (nbdkit takes up to 64 MiB).
if hasattr(nbd, \"STRICT_PAYLOAD\"):
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_PAYLOAD)
data = bytes(range(256)) * (40 * M // 256)
h.pwrite(data, 12 * M + 4096)
assert h.pread(40 * M, 12 * M + 4096) == data
h.zero(40 * M, 4096)
assert h.pread(40 * M, 4096) == bytes(40 * M)
'"
  assert_no_grep 'event=(bad|failure|down)' $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c1.img
  cmp $tmpdir/c0.img $tmpdir/c2.img
  # Nothing longer than 8 MiB reached child 0, and every cut fell on
  # 4 KiB.
  grep -E 'connection=.* (Read|Write|Zero) ' $tmpdir/c0.log | tail -n 12
  python3 - $tmpdir/c0.log <<'PY'
import re, sys
n = 0
for line in open(sys.argv[1]):
    m = re.search(r' (Read|Write|Zero) id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)', line)
    if m:
        off, count = int(m.group(2), 16), int(m.group(3), 16)
        assert count <= 8 << 20, line
        assert off % 4096 == 0 and count % 4096 == 0, line
        n += 1
assert n >= 15, n
PY
}

for_each_form block_max
