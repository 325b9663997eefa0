#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# libguestfs through a quorum: an ext4 filesystem on three children, a
# file's data silently damaged on one of them.  guestfish reads the
# file through the quorum and gets the right content, and the damaged
# child is reported with a range that holds the damaged bytes.
#
# libguestfs runs its appliance under software emulation here (KVM is
# there but hangs): LIBGUESTFS_BACKEND_SETTINGS=force_tcg.  One
# guestfish call, ~15-35 s (the first run builds the appliance).

source ./functions.sh
set -e
set -x
requires guestfish --version
requires mke2fs -V

export LIBGUESTFS_BACKEND=direct
export LIBGUESTFS_BACKEND_SETTINGS=force_tcg

# A bare ext4 filesystem, built without mounting anything: a small
# file with a recognisable content, and 1 MiB of other data.
mkdir $tmpdir/src
content='nbdkit-quorum guestfish test: three copies vote, the truth wins'
printf '%s\n' "$content" > $tmpdir/src/file
nbdkit -U - pattern 1M --run "nbdcopy \"\$uri\" $tmpdir/src/big"
mke2fs -q -F -t ext4 -d $tmpdir/src $tmpdir/c0.img 16M
for i in 1 2; do cp $tmpdir/c0.img $tmpdir/c$i.img; done

# Where the file's bytes are in the image: exactly once.
grep -obUa 'three copies vote' $tmpdir/c0.img > $tmpdir/where
cat $tmpdir/where
test "$(wc -l < $tmpdir/where)" -eq 1
bad_offset=$(cut -d: -f1 $tmpdir/where)
# Child 1: same length, other words.  ext4 has no data checksums, so
# nothing but the vote can notice.
corrupt $tmpdir/c1.img $bad_offset 'two LIARS agree!'
cmp -s $tmpdir/c0.img $tmpdir/c1.img && exit 1

for i in 0 1 2; do start_child $i file $tmpdir/c$i.img; done
sock=$tmpdir/q.sock
start_quorum -P $tmpdir/q.pid -U $sock $QUORUM_PLUGIN \
             report=$tmpdir/report.jsonl \
             child="$(child_uri 0)" child="$(child_uri 1)" child="$(child_uri 2)"

# guestfish 1.48 takes nbd://?socket= (not nbd+unix).  --format=raw:
# without it libguestfs probes the format of the --ro overlay's backing
# with "qemu-img info ./nbd:unix:SOCKET", which fails.
timeout -k 10 600 \
  guestfish --ro --format=raw -a "nbd://?socket=$sock" -m /dev/sda -- \
    cat /file : checksum sha256 /big > $tmpdir/out
cat $tmpdir/out
# (guestfish's cat adds a newline after the file's own.)
printf '%s\n\n%s\n' "$content" \
       "$(sha256sum < $tmpdir/src/big | cut -d' ' -f1)" > $tmpdir/expected
diff -u $tmpdir/expected $tmpdir/out

# Child 1 was outvoted, in a read that covered the damaged bytes; no
# other child was blamed and nothing failed.
assert_grep "event=bad type=read child=1 .*error=mismatch" $tmpdir/syslog
assert_no_grep 'event=bad .*child=[02] ' $tmpdir/syslog
assert_no_grep 'event=failure' $tmpdir/syslog
python3 - $tmpdir/report.jsonl $bad_offset <<'EOF'
import json, sys
bad = int(sys.argv[2])
lines = [json.loads(l) for l in open(sys.argv[1])]
hits = [e for e in lines if e["event"] == "bad" and e["child"] == 1
        and e["offset"] <= bad < e["offset"] + e["length"]]
assert hits, "no report of child 1 covers offset %d" % bad
print("child 1 reported at", [(e["offset"], e["length"]) for e in hits])
EOF
