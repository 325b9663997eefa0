#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Writes, zeroes and trims reach every child: each child's image is
# compared byte for byte afterwards.  Clients: nbdcopy, qemu-io, nbdsh.

source ./functions.sh
set -e
set -x
requires nbdcopy --version
requires qemu-io --version
requires nbdsh --version

for i in 0 1 2; do truncate -s 4M $tmpdir/c$i.img; done
nbdkit -U - pattern 4M --run "nbdcopy \"\$uri\" $tmpdir/pattern.img"
for i in 1 2; do start_child $i file $tmpdir/c$i.img; done

# Filter form: child 0 is the file plugin.
quorum -U - --filter=$QUORUM_FILTER file $tmpdir/c0.img \
       child="$(child_uri 1)" child="$(child_uri 2)" \
       --run "nbdcopy $tmpdir/pattern.img \"\$uri\" &&
              qemu-io -f raw -c 'write -P 0xab 1M 64k' -c 'write -z 2M 64k' \
                      -c 'discard 3M 64k' \"\$uri\" &&
              nbdsh -u \"\$uri\" -c 'h.pwrite(b\"hello\", 4096)' -c 'h.flush()'"

cp $tmpdir/pattern.img $tmpdir/expected.img
printf '\xab%.0s' $(seq 65536) | dd of=$tmpdir/expected.img bs=1 seek=1048576 conv=notrunc status=none
dd if=/dev/zero of=$tmpdir/expected.img bs=64k count=1 seek=32 conv=notrunc status=none
dd if=/dev/zero of=$tmpdir/expected.img bs=64k count=1 seek=48 conv=notrunc status=none
printf 'hello' | dd of=$tmpdir/expected.img bs=1 seek=4096 conv=notrunc status=none
for i in 0 1 2; do cmp $tmpdir/c$i.img $tmpdir/expected.img; done
