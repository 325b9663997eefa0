#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# wait-for=threshold: a slow child's reply that arrives after the
# answer is still compared: where it differs it is reported, and with
# rewrite-corrupted rewritten, as if it had been on time.  Overlapping
# writes under a slow child still reach every child in the same order:
# all three end byte-identical.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

late_differs ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1048576 0x33; done
  corrupt $tmpdir/c2.img $((3 * 4096 + 100)) XYZ
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 --filter=delay file $tmpdir/c2.img delay-read=2
  children="child=$(child_uri 1) child=$(child_uri 2)"

  # The answer comes before child 2's (2 s); its difference is found
  # after, in block 3 only, and rewritten there.
  quorum -U - "${quorum_head[@]}" $children wait-for=threshold \
         rewrite-corrupted=true \
         --run "nbdsh -u \"\$uri\" -c '
import time
t = time.monotonic()
assert h.pread(16384, 0) == b\"\\x33\" * 16384
assert time.monotonic() - t < 2.0
for i in range(300):
    if open(\"$tmpdir/c2.img\", \"rb\").read(16384) == b\"\\x33\" * 16384:
        break
    time.sleep(0.1)
'"
  assert_grep "event=bad type=read child=2 .* offset=0x3000 length=0x1000 error=mismatch\$" \
              $tmpdir/syslog
  assert_grep "event=repair child=2 .* offset=0x3000 length=0x1000\$" \
              $tmpdir/syslog
  assert_no_grep "event=bad type=read child=[01]" $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c2.img
}

overlapping ()
{
  for i in 0 1 2; do truncate -s 0 $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 --filter=delay file $tmpdir/c2.img delay-write=60ms \
              delay-zero=5ms
  children="child=$(child_uri 1) child=$(child_uri 2)"

  # Three bursts of 60 writes and zeroes in flight at once over 64 KiB:
  # they overlap one another in every way, each write with its own
  # byte; on child 2 a zero is quicker than a write, so that one sent
  # before the write it follows had completed would overtake it.
  quorum -U - "${quorum_head[@]}" $children wait-for=threshold \
         --run "nbdsh -u \"\$uri\" -c '
import random
rnd = random.Random(15)
for burst in range(3):
    cookies = []
    for i in range(60):
        off = rnd.randrange(16) * 4096
        n = rnd.randrange(1, 17 - off // 4096) * 4096
        if i % 3 == 2:
            cookies.append(h.aio_zero(n, off))
        else:
            cookies.append(h.aio_pwrite(bytes([burst * 60 + i + 1]) * n,
                                        off))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c)
h.flush()
'"
  # The quorum drained child 2 before it stopped.
  cmp $tmpdir/c0.img $tmpdir/c1.img
  cmp $tmpdir/c0.img $tmpdir/c2.img
  # The writes landed.
  refute cmp -n 65536 $tmpdir/c0.img /dev/zero
}

for_each_form late_differs
for_each_form overlapping
