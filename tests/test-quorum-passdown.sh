#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# The filter passes every parameter it does not own down the chain: here
# to the error filter and the file plugin below it.  --help lists the
# quorum's parameters, and the plugin's --dump-plugin its quorum_* keys.

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
  for p in child= child-command= vote-threshold= vote-block-size= \
           read-pattern= blkverify= rewrite-corrupted= child-timeout= \
           reconnect-delay= reconnect-max-delay= report= syslog= \
           start-degraded= export-name=; do
    assert_grep "^$p" $tmpdir/help
  done
done

# --dump-plugin: keys a script can test.
quorum $QUORUM_PLUGIN --dump-plugin > $tmpdir/dump
assert_grep '^quorum_version=[0-9]+\.[0-9]+\.[0-9]+$' $tmpdir/dump
assert_grep '^quorum_hash=sha256$' $tmpdir/dump
assert_grep '^quorum_max_children=32$' $tmpdir/dump
assert_grep '^quorum_vote_block_size=4096$' $tmpdir/dump
assert_grep '^quorum_features=.*child-command' $tmpdir/dump
assert_grep "^quorum_libnbd_version=$(nbdsh -c 'print(h.get_version())')\$" $tmpdir/dump
