# nbdkit-quorum test client: random overlapping reads and writes from
# several connections, many requests in flight on each.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: hammer.py URI CONNECTIONS DEPTH SECONDS [SEED]
import nbd, os, random, sys, time
uri, conns, depth, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
region = 256 * 1024
rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 1)
def drain(h):
    errs = 0
    while True:
        try:
            c = h.aio_peek_command_completed()
        except nbd.Error:
            return errs
        if c == 0:
            return errs
        try:
            h.aio_command_completed(c)
        except nbd.Error:
            errs += 1
hs = []
for _ in range(conns):
    h = nbd.NBD(); h.connect_uri(uri); hs.append(h)
deadline = time.monotonic() + secs
ops = 0; errors = 0
while time.monotonic() < deadline:
    for h in hs:
        while h.aio_in_flight() < depth:
            off = rng.randrange(0, region // 512) * 512
            ln = rng.choice([512, 4096, 8192, 65536])
            ln = min(ln, region - off)
            if rng.random() < 0.6:
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(os.urandom(ln))), off)
            else:
                h.aio_pread(nbd.Buffer(ln), off)
            ops += 1
    for h in hs:
        h.poll(0)
        errors += drain(h)
for h in hs:
    while h.aio_in_flight() > 0:
        h.poll(-1)
        errors += drain(h)
    errors += drain(h)
    h.flush(); h.shutdown()
print("ops=%d errors=%d" % (ops, errors))
sys.exit(1 if errors else 0)
