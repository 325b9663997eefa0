#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Every bad parameter stops nbdkit at start-up with a message that names
# the parameter.

source ./functions.sh
set -e
set -x

truncate -s 1M $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
for i in 0 1 2; do start_child $i file $tmpdir/c$i.img; done
c0="child=$(child_uri 0)"
c1="child=$(child_uri 1)"
c2="child=$(child_uri 2)"

refuse () {
    local pattern=$1
    shift
    expect_fail_start $tmpdir/log "$@"
    assert_grep "$pattern" $tmpdir/log
}

refuse 'vote-threshold=0: must be between 1 and the number of children \(3\)' \
       $QUORUM_PLUGIN $c0 $c1 $c2 vote-threshold=0
refuse 'vote-threshold=4: must be between 1 and the number of children \(3\)' \
       $QUORUM_PLUGIN $c0 $c1 $c2 vote-threshold=4
refuse 'vote-threshold' $QUORUM_PLUGIN $c0 $c1 $c2 vote-threshold=two
refuse 'vote-threshold=3: must be between 1 and the number of children \(2\)' \
       --filter=$QUORUM_FILTER file $tmpdir/c0.img $c1 vote-threshold=3
refuse 'child=: no children' $QUORUM_PLUGIN vote-threshold=1
refuse 'child=: no children besides the plugin' \
       --filter=$QUORUM_FILTER file $tmpdir/c0.img
refuse 'read-pattern=bogus: expected quorum or fifo' \
       $QUORUM_PLUGIN $c0 $c1 read-pattern=bogus
refuse 'blkverify=true: needs exactly 2 children and vote-threshold=2' \
       $QUORUM_PLUGIN $c0 $c1 $c2 blkverify=true
refuse 'blkverify=true: needs exactly 2 children and vote-threshold=2' \
       $QUORUM_PLUGIN $c0 $c1 blkverify=true vote-threshold=1
refuse 'blkverify=maybe: expected a boolean' \
       $QUORUM_PLUGIN $c0 $c1 blkverify=maybe
refuse 'rewrite-corrupted=true: cannot be used with blkverify' \
       $QUORUM_PLUGIN $c0 $c1 blkverify=true rewrite-corrupted=true
refuse 'rewrite-corrupted=true: needs read-pattern=quorum' \
       $QUORUM_PLUGIN $c0 $c1 $c2 rewrite-corrupted=true read-pattern=fifo
refuse 'child-timeout' $QUORUM_PLUGIN $c0 $c1 child-timeout=-1
refuse 'reconnect-delay=0' $QUORUM_PLUGIN $c0 $c1 reconnect-delay=0
refuse "unknown parameter 'bogus'" $QUORUM_PLUGIN $c0 $c1 bogus=1
refuse "child=nbd\+unix:///\?socket=$tmpdir/none.sock: cannot connect to child 2" \
       $QUORUM_PLUGIN $c0 $c1 child="nbd+unix:///?socket=$tmpdir/none.sock"
refuse 'child=not-a-uri: cannot connect to child 1' \
       $QUORUM_PLUGIN $c0 child=not-a-uri
refuse 'report=/nonexistent/dir/r.jsonl' \
       $QUORUM_PLUGIN $c0 $c1 report=/nonexistent/dir/r.jsonl
