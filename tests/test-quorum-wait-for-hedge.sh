#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# read-pattern=fifo with wait-for=threshold hedges: child 0 fails every
# read, child 1 takes 2 s a read; child 2 is asked too once child 1 has
# not answered within a few times the usual latency, and its reply
# wins: 10 reads complete before child 1 answered the first.  With
# wait-for=all, fifo waits for child 1.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version

hedge ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1048576 0x44; done
  child0 --filter=error file $tmpdir/c0.img error-pread=EIO \
         error-pread-rate=1
  start_child 1 --filter=delay file $tmpdir/c1.img delay-read=2
  start_child 2 file $tmpdir/c2.img
  children="child=$(child_uri 1) child=$(child_uri 2)"

  quorum -U - "${quorum_head[@]}" $children read-pattern=fifo \
         wait-for=threshold \
         --run "nbdsh -u \"\$uri\" -c '
import time
t = time.monotonic()
for i in range(10):
    assert h.pread(4096, i * 65536) == b\"\\x44\" * 4096
e = time.monotonic() - t
print(\"10 hedged reads:\", e)
assert e < 2.0, e
'"
  assert_grep "event=bad type=read child=0 .* error=EIO" $tmpdir/syslog
  assert_no_grep "event=failure" $tmpdir/syslog

  quorum -U - "${quorum_head[@]}" $children read-pattern=fifo \
         --run "nbdsh -u \"\$uri\" -c '
import time
t = time.monotonic()
assert h.pread(4096, 0) == b\"\\x44\" * 4096
assert time.monotonic() - t >= 1.9
'"
}

for_each_form hedge
