#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child reached over TLS (PSK), as libnbd's nbds+unix URIs allow; the
# key file's path never appears in reports.

source ./functions.sh
set -e
set -x
requires nbdsh --version

printf 'alice:%s\n' 0123456789abcdef0123456789abcdef > $tmpdir/keys.psk
chmod 600 $tmpdir/keys.psk
for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x42; done
corrupt $tmpdir/c2.img 0 'tls'
start_child 0 file $tmpdir/c0.img
start_child 1 file $tmpdir/c1.img
start_child 2 --tls=require --tls-psk=$tmpdir/keys.psk file $tmpdir/c2.img

tls="nbds+unix://alice@/?socket=$tmpdir/c2.sock&tls-psk-file=$tmpdir/keys.psk"
quorum -U - -v $QUORUM_PLUGIN child="$(child_uri 0)" child="$(child_uri 1)" \
       child="$tls" --run "nbdsh -u \"\$uri\" -c 'assert h.pread(512, 0) == b\"\\x42\" * 512'" \
       2> $tmpdir/log
assert_grep "event=bad type=read child=2 name=nbds\+unix://alice@/\?socket=$tmpdir/c2.sock&tls-psk-file=\*\*\* offset=0x0" $tmpdir/syslog
assert_no_grep 'keys.psk' $tmpdir/syslog
grep 'event=' $tmpdir/log > $tmpdir/events
assert_no_grep 'keys.psk' $tmpdir/events

# Without the key, the child cannot be reached: refused at start-up.
expect_fail_start $tmpdir/log2 $QUORUM_PLUGIN child="$(child_uri 0)" \
    child="$(child_uri 1)" child="nbds+unix://alice@/?socket=$tmpdir/c2.sock"
assert_grep 'cannot connect to child 2' $tmpdir/log2
