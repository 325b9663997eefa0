#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Fan-out is parallel: three children each delaying every read by 2 s
# answer one read in about 2 s, not 6 (a wide margin: this checks
# parallelism, not speed).

source ./functions.sh
set -e
set -x
requires nbdsh --version

for i in 0 1 2; do
  truncate -s 1M $tmpdir/c$i.img
  start_child $i --filter=delay file $tmpdir/c$i.img rdelay=2
done

quorum -U - $QUORUM_PLUGIN \
       child="$(child_uri 0)" child="$(child_uri 1)" child="$(child_uri 2)" \
       --run "nbdsh -u \"\$uri\" -c '
import time
t = time.monotonic()
assert h.pread(4096, 0) == bytes(4096)
t = time.monotonic() - t
print(\"one read through three delayed children: %.2f s\" % t)
assert 1.9 < t < 5.0, t
'"
