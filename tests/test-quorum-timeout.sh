#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child that hangs loses its vote after child-timeout: the read
# completes from the other two, the child is reported with ETIMEDOUT
# and disconnected (then reconnected in the background).

source ./functions.sh
set -e
set -x
requires nbdsh --version

timeout_child ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x5c; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 --filter=delay file $tmpdir/c2.img rdelay=60

  quorum -U - "${quorum_head[@]}" child-timeout=2 \
         child="$(child_uri 1)" child="$(child_uri 2)" \
         --run "nbdsh -u \"\$uri\" -c '
import time
t = time.monotonic()
assert h.pread(4096, 0) == b\"\\x5c\" * 4096
t = time.monotonic() - t
print(\"read with a hung child: %.2f s\" % t)
assert t < 30, t
'"
  assert_grep "event=bad type=read child=2 .* error=ETIMEDOUT" $tmpdir/syslog
  assert_grep "^nbdkit-quorum-$form warning event=down child=2 name=nbd\+unix:///\?socket=$tmpdir/c2.sock reason=timeout\$" $tmpdir/syslog
}

for_each_form timeout_child
