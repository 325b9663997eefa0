# nbdkit-quorum test client: a steady stream of writes and reads, each
# checked against what was written, until a stop file appears.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: workload.py [--from OFFSET] [--to OFFSET] [--lenient]
#                    [--crash SAVEFILE] URI STOPFILE MAXLAT
#        workload.py --verify SAVEFILE URI
#
# One 4 KiB block in every 64 KiB of the disk from OFFSET on (up to the
# --to OFFSET, by default the end), all
# written first, then rewritten in turn, each write stamped with its
# block number and generation.  Every write is read back, and so is
# another block chosen at random.  Every request must answer within
# MAXLAT seconds.  STOPFILE.count holds the number of writes done so
# far, so that the caller can see progress.
#
# By default every request must succeed and every read return exactly
# the last generation written.  With --lenient requests may fail (with
# EIO); a block whose write failed may then hold the generation before
# or the one that failed (or, after more failures, any of them), and a
# read that succeeds must return one of those: anything else is wrong
# data, and fails the run.
#
# With --crash the server is going to be killed: the first request that
# fails ends the run, which succeeds.  The generations each block may
# hold then (the last one acknowledged, and the one in flight if its
# write was not answered) are saved to SAVEFILE as JSON.  --verify
# reads every block saved there from URI, once: each must hold one of
# those generations, so that no acknowledged write was lost, and no
# read returns anything else.
import argparse, errno, json, os, random, struct, sys, time

import nbd

p = argparse.ArgumentParser()
p.add_argument("--from", dest="start", type=int, default=0)
p.add_argument("--to", dest="end", type=int, default=None)
p.add_argument("--lenient", action="store_true")
p.add_argument("--crash", metavar="SAVEFILE")
p.add_argument("--verify", metavar="SAVEFILE")
p.add_argument("uri")
p.add_argument("stopfile", nargs="?")
p.add_argument("maxlat", type=float, nargs="?")
args = p.parse_args()
if not args.verify and args.maxlat is None:
    p.error("STOPFILE and MAXLAT are needed, except with --verify")

BLOCK = 4096
h = nbd.NBD()
h.connect_uri(args.uri)
end = h.get_size() if args.end is None else min(args.end, h.get_size())
blocks = list(range(args.start // 65536, end // 65536))
last = {}                   # block -> last generation issued
possible = {}               # block -> generations it may hold
rng = random.Random(1)
writes = reads = failures = 0
errnos = {}
worst = 0.0


def offset(b):
    return b * 65536 + (b % 16) * BLOCK


def stamp(b, g):
    return struct.pack(">QQ", b, g) * (BLOCK // 16)


def fail(msg):
    sys.exit("workload: FAIL: " + msg)


class Crashed(Exception):
    """--crash: a request failed, the server is gone."""


if args.verify:
    with open(args.verify) as f:
        saved = {int(b): set(gs) for b, gs in json.load(f).items()}
    for b in sorted(saved):
        data = h.pread(BLOCK, offset(b))
        if not any(data == stamp(b, g) for g in saved[b]):
            fail("block %d: read %r, expected generation %s" %
                 (b, data[:16], sorted(saved[b])))
    h.shutdown()
    print("workload: verified %d blocks" % len(saved))
    sys.exit(0)


def timed(what, fn, *fargs):
    """Run a request; its result, or None if it failed (--lenient)."""
    global worst, failures
    t = time.monotonic()
    try:
        r = fn(*fargs)
        ok = True
    except nbd.Error as e:
        if args.crash:
            raise Crashed("%s: %s" % (what, e))
        if not args.lenient:
            fail("%s: %s" % (what, e))
        ok = False
        failures += 1
        name = errno.errorcode.get(e.errnum, str(e.errnum))
        errnos[name] = errnos.get(name, 0) + 1
        r = None
    t = time.monotonic() - t
    worst = max(worst, t)
    if t > args.maxlat:
        fail("%s took %.2f s (limit %.2f s)" % (what, t, args.maxlat))
    if not ok:
        time.sleep(0.01)    # a dead quorum fails at once: do not spin
    return ok, r


def write(b):
    global writes
    g = last.get(b, 0) + 1
    last[b] = g
    possible[b].add(g)      # until it is answered, either may be there
    ok, _ = timed("write of block %d" % b, h.pwrite, stamp(b, g), offset(b))
    writes += 1
    if ok:
        possible[b] = {g}
    return ok


def check(b):
    global reads
    ok, data = timed("read of block %d" % b, h.pread, BLOCK, offset(b))
    reads += 1
    if ok and not any(data == stamp(b, g) for g in possible[b]):
        fail("block %d: read %r, expected generation %s" %
             (b, data[:16], sorted(possible[b])))


def progress():
    with open(args.stopfile + ".tmp", "w") as f:
        f.write("%d\n" % writes)
    os.rename(args.stopfile + ".tmp", args.stopfile + ".count")


# Known contents first: every block written once, which must work.
for b in blocks:
    last[b] = 1
    h.pwrite(stamp(b, 1), offset(b))
    possible[b] = {1}
progress()

i = 0
try:
    while not os.path.exists(args.stopfile):
        b = blocks[i % len(blocks)]
        if write(b):
            check(b)
        check(rng.choice(blocks))
        progress()
        i += 1
except Crashed as e:
    progress()
    with open(args.crash + ".tmp", "w") as f:
        json.dump({b: sorted(gs) for b, gs in possible.items()}, f)
    os.rename(args.crash + ".tmp", args.crash)
    print("workload: writes=%d reads=%d, then the server went away (%s)" %
          (writes, reads, e))
    sys.exit(0)

# Everything again.
for b in blocks:
    check(b)
if not args.lenient:
    h.flush()
h.shutdown()
print("workload: writes=%d reads=%d failures=%d%s worst-latency=%.2f s" %
      (writes, reads, failures,
       "".join(" %s=%d" % kv for kv in sorted(errnos.items())), worst))
