#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# wait-for=threshold: with one child of three slow (2 s a request,
# behind nbdkit's delay filter), 20 writes, 20 FUA writes and a flush,
# and 20 reads, all complete before the slow child answered the first
# of them, and the slow child still ends byte-identical to the others;
# with wait-for=all (the default) one request waits for it.  Bad values
# are refused.  In both forms (the slow child is always a remote one).

source ./functions.sh
set -e
set -x
requires nbdsh --version

expect_fail_start $tmpdir/log "$QUORUM_PLUGIN" child=nbd://localhost \
                  wait-for=some
assert_grep "wait-for=some: expected all or threshold" $tmpdir/log
expect_fail_start $tmpdir/log "$QUORUM_PLUGIN" child=nbd://localhost \
                  max-lag=1K
assert_grep "max-lag=1K: must be between 4K and 1T" $tmpdir/log

# 20 requests of 4 KiB at distinct offsets (no range waits for an
# earlier one), and how long they took in all.
requests='
import time
def timed(what):
    t = time.monotonic()
    for i in range(20):
        if what == "write":
            h.pwrite(bytes([0x40 + i]) * 4096, i * 65536)
        else:
            assert h.pread(4096, i * 65536) == bytes([0x40 + i]) * 4096
    return time.monotonic() - t
'

wait_for_threshold ()
{
  for i in 0 1 2; do truncate -s 0 $tmpdir/c$i.img; truncate -s 2M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 --filter=delay file $tmpdir/c2.img \
              delay-read=2 delay-write=2
  children="child=$(child_uri 1) child=$(child_uri 2)"

  # Had any request waited for child 2, the 20 would take 2 s or more.
  quorum -U - "${quorum_head[@]}" $children wait-for=threshold \
         --run "nbdsh -u \"\$uri\" -c '$requests
w = timed(\"write\")
print(\"20 writes:\", w)
assert w < 2.0, w
# FUA writes elsewhere and a flush: on stable storage on two children,
# which completed every write before it, without waiting for child 2.
t = time.monotonic()
for i in range(20):
    h.pwrite(b\"F\" * 4096, i * 65536 + 8192, nbd.CMD_FLAG_FUA)
h.flush()
f = time.monotonic() - t
print(\"20 FUA writes and a flush:\", f)
assert f < 2.0, f
# Child 2 catches up on its own while the quorum serves on.
def same():
    c = [open(\"$tmpdir/c%d.img\" % i, \"rb\").read() for i in range(3)]
    return c[0] == c[1] == c[2]
for i in range(300):
    if same():
        break
    time.sleep(0.1)
assert same()
# Reads of what it has (a read overlapping a write it has not
# completed waits for it: see wait-for in the manual).
r = timed(\"read\")
print(\"20 reads:\", r)
assert r < 2.0, r
'"
  cmp $tmpdir/c0.img $tmpdir/c2.img
  cmp $tmpdir/c1.img $tmpdir/c2.img
  assert_no_grep 'event=bad' $tmpdir/syslog
  assert_no_grep 'event=stale' $tmpdir/syslog

  # wait-for=all: the first read already waits for child 2.
  quorum -U - "${quorum_head[@]}" $children \
         --run "nbdsh -u \"\$uri\" -c '
import time
t = time.monotonic()
assert h.pread(4096, 0) == bytes([0x40]) * 4096
assert time.monotonic() - t >= 1.9
'"
}

for_each_form wait_for_threshold
