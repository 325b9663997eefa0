#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Children that agree: the data comes through unchanged, in both the
# plugin and the filter form, and nothing is reported.

source ./functions.sh
set -e
set -x
requires nbdcopy --version
requires nbdsh --version

nbdkit -U - pattern 1M --run "nbdcopy \"\$uri\" $tmpdir/expected.img"
for i in 0 1 2; do cp $tmpdir/expected.img $tmpdir/c$i.img; done
for i in 1 2; do start_child $i file $tmpdir/c$i.img; done

# Filter form: the file plugin is child 0.
quorum -U - --filter=$QUORUM_FILTER file $tmpdir/c0.img \
       child="$(child_uri 1)" child="$(child_uri 2)" \
       --run "nbdcopy \"\$uri\" $tmpdir/out-filter.img"
cmp $tmpdir/out-filter.img $tmpdir/expected.img

# Plugin form: all three remote, all three must agree; child 0 over
# TCP on the loopback (nbd://), the others over unix sockets.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_nbdkit -P $tmpdir/c0.pid -i 127.0.0.1 -p $port file $tmpdir/c0.img
quorum -U - $QUORUM_PLUGIN vote-threshold=3 \
       child="nbd://127.0.0.1:$port/" child="$(child_uri 1)" child="$(child_uri 2)" \
       --run "nbdcopy \"\$uri\" $tmpdir/out-plugin.img &&
              nbdsh -u \"\$uri\" -c 'assert h.get_size() == 1048576' \
                    -c 'assert h.pread(8, 8) == (8).to_bytes(8, \"big\")'"
cmp $tmpdir/out-plugin.img $tmpdir/expected.img

# Nothing to report.
touch $tmpdir/syslog
assert_no_grep 'event=' $tmpdir/syslog
