#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Extents: a range is a hole (reads as zero) only where every child
# says so; anywhere one child has data, the quorum reports data.

source ./functions.sh
set -e
set -x
requires nbdinfo --version

extents ()
{
  # 1 MiB sparse children; data at: c0 [0,64k) [512k,576k)
  #                                 c1 [0,64k) [256k,320k)
  #                                 c2 [0,64k)
  for i in 0 1 2; do
    rm -f $tmpdir/c$i.img
    truncate -s 1M $tmpdir/c$i.img
  done
  dd if=/dev/urandom of=$tmpdir/c0.img bs=64k count=1 conv=notrunc status=none
  dd if=$tmpdir/c0.img of=$tmpdir/c1.img bs=64k count=1 conv=notrunc status=none
  dd if=$tmpdir/c0.img of=$tmpdir/c2.img bs=64k count=1 conv=notrunc status=none
  printf 'x' | dd of=$tmpdir/c0.img bs=1 seek=524288 conv=notrunc status=none
  printf 'y' | dd of=$tmpdir/c1.img bs=1 seek=262144 conv=notrunc status=none
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done

  quorum -U - "${quorum_head[@]}" \
         child="$(child_uri 1)" child="$(child_uri 2)" \
         --run "nbdinfo --map --totals \"\$uri\" > $tmpdir/totals &&
                nbdinfo --map --json \"\$uri\" > $tmpdir/map.json"
  cat $tmpdir/map.json
  python3 - $tmpdir/map.json <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
def kind(off):
    for e in m:
        if e["offset"] <= off < e["offset"] + e["length"]:
            return e["type"] & 1            # 1 = hole
    raise SystemExit("offset %d not mapped" % off)
K = 1024
assert kind(0) == 0, "data everywhere at 0"
assert kind(256 * K) == 0, "c1 has data at 256K"
assert kind(512 * K) == 0, "c0 has data at 512K"
assert kind(128 * K) == 1, "all three have a hole at 128K"
assert kind(768 * K) == 1, "all three have a hole at 768K"
assert kind(1024 * K - 1) == 1
print("extents ok")
EOF
}

for_each_form extents
