#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Block status on a second connection.  A child that advertises
# multi-conn gets its reads and writes on one connection and block
# status on another; multi-conn only promises that a flush makes writes
# visible on every connection, so before block status the quorum must
# flush writes completed since the last flush.  A child without
# multi-conn, or one that refuses a second connection, keeps one
# connection for everything.  The children log what they receive, and
# the logs are checked against those rules.

source ./functions.sh
set -e
set -x
requires nbdsh --version

for i in 0 1 2; do truncate -s 1M $tmpdir/c$i.img; done
# c0: multi-conn (the file plugin advertises it).
start_child 0 --filter=log file $tmpdir/c0.img logfile=$tmpdir/c0.log
# c1: no multi-conn.
start_child 1 --filter=log --filter=multi-conn file $tmpdir/c1.img \
            multi-conn-mode=disable logfile=$tmpdir/c1.log
# c2: multi-conn, but only one connection at a time.
start_child 2 --filter=log --filter=limit file $tmpdir/c2.img \
            limit=1 logfile=$tmpdir/c2.log

# Each step prints which 64 KiB blocks the quorum says are holes.
cat > $tmpdir/steps.py <<'EOF'
K = 1024
def holes():
    hole = [None] * 16
    def cb(ctx, off, entries, err):
        for i in range(0, len(entries), 2):
            for b in range(off // (64 * K), (off + entries[i]) // (64 * K)):
                hole[b] = entries[i + 1] & 1
            off += entries[i]
    h.block_status(1024 * K, 0, cb)
    return "".join("h" if x else "d" for x in hole)
print("start", holes())
h.pwrite(b"x" * (64 * K), 256 * K)
print("write", holes())
print("again", holes())
h.trim(64 * K, 256 * K)
print("trim ", holes())
h.pwrite(b"y" * (128 * K), 512 * K)
h.zero(64 * K, 512 * K)    # no NO_HOLE: it may punch a hole
print("zero ", holes())
EOF
quorum -U - $QUORUM_PLUGIN -v \
       child="$(child_uri 0)" child="$(child_uri 1)" child="$(child_uri 2)" \
       --run "nbdsh --base-allocation -u \"\$uri\" -c 'exec(open(\"$tmpdir/steps.py\").read())' > $tmpdir/steps" \
       2> $tmpdir/quorum.log ||
  { grep -v 'debug: .*: \(pread\|pwrite\)' $tmpdir/quorum.log | tail -40; false; }
cat $tmpdir/steps
cat > $tmpdir/expected <<'EOF'
start hhhhhhhhhhhhhhhh
write hhhhdhhhhhhhhhhh
again hhhhdhhhhhhhhhhh
trim  hhhhhhhhhhhhhhhh
zero  hhhhhhhhhdhhhhhh
EOF
diff -u $tmpdir/expected $tmpdir/steps

# Which children the quorum gave a second connection.
grep 'second connection' $tmpdir/quorum.log || true
assert_grep 'child 0 .*block status on a second connection' $tmpdir/quorum.log
assert_no_grep 'child 1 .*block status on a second connection' $tmpdir/quorum.log
assert_no_grep 'child 2 .*block status on a second connection' $tmpdir/quorum.log
assert_grep 'child 2 .*second connection failed' $tmpdir/quorum.log

# The logs: block status never reads another connection's writes that
# no flush covered, and a child with one connection gets no flushes it
# was not asked for.
python3 - $tmpdir/c0.log $tmpdir/c1.log $tmpdir/c2.log <<'EOF'
import re, sys
line_re = re.compile(r'connection=(\d+) (\.\.\.)?(\w+) id=(\d+)')
def parse(path):
    ev = []
    for n, line in enumerate(open(path)):
        m = line_re.search(line)
        if m:
            conn, done, op, id = m.groups()
            ev.append((n, (int(conn), int(id)), op, bool(done)))
    return ev
WRITES = ("Write", "Trim", "Zero")
for child, path in enumerate(sys.argv[1:]):
    ev = parse(path)
    conns_ext = {c[0] for _, c, op, d in ev if op == "Extents"}
    conns_wr = {c[0] for _, c, op, d in ev if op in WRITES}
    flushes = [(n, c, d) for n, c, op, d in ev if op == "Flush"]
    print("child %d: extents on %s, writes on %s, %d flush events"
          % (child, conns_ext, conns_wr, len(flushes)))
    assert conns_ext and conns_wr, "child %d saw no traffic" % child
    if child == 0:
        assert conns_ext.isdisjoint(conns_wr), \
            "child 0: block status should have its own connection"
    else:
        assert conns_ext == conns_wr, \
            "child %d: should have one connection for everything" % child
        assert not flushes, "child %d: flushed without being asked" % child
    # Every write completed on another connection before an Extents
    # starts must be covered by a flush sent after it and completed
    # before the Extents.
    starts = {}
    flush_spans = []
    for n, c, op, d in ev:
        if op == "Flush":
            if not d:
                starts[c] = n
            else:
                flush_spans.append((starts.pop(c), n))
    for n, c, op, d in ev:
        if op != "Extents" or d:
            continue
        for wn, wc, wop, wd in ev:
            if wn >= n or wop not in WRITES or not wd or wc[0] == c[0]:
                continue
            assert any(s > wn and e < n for s, e in flush_spans), \
                "child %d: Extents at line %d may miss the %s completed " \
                "at line %d (no flush in between)" % (child, n, wop, wn)
    if child == 0:
        # Three block status calls follow writes, two follow none.
        assert len(flush_spans) == 3, \
            "child 0: %d flushes, expected 3" % len(flush_spans)
print("logs ok")
EOF
