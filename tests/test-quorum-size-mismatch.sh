#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Children of different sizes: the plugin refuses to start, the filter
# refuses the connection; either way every child's size is listed.

source ./functions.sh
set -e
set -x
requires nbdinfo --version

truncate -s 1M $tmpdir/c0.img $tmpdir/c1.img
truncate -s 2M $tmpdir/c2.img
for i in 0 1 2; do start_child $i file $tmpdir/c$i.img; done

expect_fail_start $tmpdir/log $QUORUM_PLUGIN \
    child="$(child_uri 0)" child="$(child_uri 1)" child="$(child_uri 2)"
assert_grep 'children have different sizes' $tmpdir/log
assert_grep "child 0 \(nbd\+unix:///\?socket=$tmpdir/c0.sock\): 1048576" $tmpdir/log
assert_grep "child 2 \(nbd\+unix:///\?socket=$tmpdir/c2.sock\): 2097152" $tmpdir/log

# Filter: the plugin (2M) is child 0, the remote children are 1M.
if quorum -U - --filter=$QUORUM_FILTER file $tmpdir/c2.img \
          child="$(child_uri 0)" child="$(child_uri 1)" \
          --run 'nbdinfo "$uri"' > $tmpdir/log 2>&1; then
    echo "$0: FAIL: connection accepted over children of different sizes"
    cat $tmpdir/log
    exit 1
fi
cat $tmpdir/log
assert_grep 'child 0 \(plugin\): 2097152' $tmpdir/log
assert_grep 'child 1 .*: 1048576' $tmpdir/log
