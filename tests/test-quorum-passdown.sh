#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# The filter passes every parameter it does not own down the chain: here
# to the error filter and the file plugin below it.  --help lists the
# quorum's parameters.

source ./functions.sh
set -e
set -x
requires nbdsh --version

for i in 0 1; do make_image $tmpdir/c$i.img 1M 0x12; done
start_child 1 file $tmpdir/c1.img
make_image $tmpdir/c2.img 1M 0x12
start_child 2 file $tmpdir/c2.img

quorum -U - --filter=$QUORUM_FILTER --filter=error file $tmpdir/c0.img \
       error-pread-rate=1 error-pread=EPERM \
       child="$(child_uri 1)" child="$(child_uri 2)" \
       --run "nbdsh -u \"\$uri\" -c 'assert h.pread(512, 0) == b\"\\x12\" * 512'"
assert_grep 'event=bad type=read child=0 name=plugin offset=0x0 length=0x200 error=EPERM' $tmpdir/syslog

for m in "--filter=$QUORUM_FILTER null" "$QUORUM_PLUGIN"; do
  quorum $m --help > $tmpdir/help
  for p in child= vote-threshold= read-pattern= blkverify= rewrite-corrupted= \
           child-timeout= reconnect-delay= reconnect-max-delay= report= syslog= \
           start-degraded=; do
    assert_grep "^$p" $tmpdir/help
  done
done
