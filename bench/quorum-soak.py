# nbdkit-quorum fault soak: the clients and the final check, for
# bench/quorum-soak.sh (which starts the servers and injects faults).
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: quorum-soak.py run URI CLIENTS STOPFILE RESULTS
#        quorum-soak.py check DIR CLIENTS
#
# run: CLIENTS processes, one connection each, doing random writes,
# zeroes, reads and flushes until STOPFILE appears, then reading back
# everything they own; each writes RESULTS.N.json.
#
# The model: the disk is cut in 64 KiB regions, region r belongs to
# client r % CLIENTS, so no two clients touch the same bytes and each
# knows what it wrote.  Every 4 KiB block written carries its block
# number and a generation; generation 0 is zeroes (the disk starts
# zeroed, and a zero request writes it).  A block whose last write
# succeeded must read back as that generation.  A write that failed may
# have reached any subset of the children, so until a write succeeds
# there again, the block may read back as the generation before it or
# any failed one since: a read that returns anything else is wrong
# data.  A read may fail (EIO): that is a failure returned, not wrong
# data.
#
# check: the results, the report file (report.jsonl) and the three
# child images (c0.img ...) in DIR, compared 64 KiB at a time: prints
# the summary; exits 1 if any read returned wrong data, if the images
# differ, if an outvoted read was seen, or if a client did not finish.

import errno, json, os, random, struct, sys, time

BLOCK = 4096
REGION = 65536
PER_REGION = REGION // BLOCK


def stamp(b, g):
    if g == 0:
        return bytes(BLOCK)
    return struct.pack(">QQ", b, g) * (BLOCK // 16)


def client(k, uri, nr_clients, stopfile, results):
    import nbd

    rng = random.Random(k * 7919 + int(time.time()))
    h = nbd.NBD()
    h.connect_uri(uri)
    size = h.get_size()
    own = list(range(k, size // REGION, nr_clients))
    possible = {}               # block -> generations it may hold
    gen = 0
    st = {"client": k, "ok": {}, "failed": {}, "wrong": 0, "wrong_examples": [],
          "worst_latency": 0.0, "slow": 0, "unreadable_at_end": [],
          "quorum_lost": False, "finished": False}

    def count(kind, op, what):
        d = st[kind].setdefault(op, {})
        d[what] = d.get(what, 0) + 1

    def request(op, fn, *args):
        t = time.monotonic()
        try:
            r = fn(*args)
            ok = True
        except nbd.Error as e:
            ok, r = False, None
            count("failed", op, errno.errorcode.get(e.errnum, str(e.errnum)))
            if not (h.aio_is_ready() or h.aio_is_processing()):
                st["quorum_lost"] = True
                raise
        t = time.monotonic() - t
        st["worst_latency"] = max(st["worst_latency"], t)
        if t > 10:
            st["slow"] += 1
        if ok:
            count("ok", op, "n")
        return ok, r

    def check(blocks, data):
        for i, b in enumerate(blocks):
            got = data[i * BLOCK:(i + 1) * BLOCK]
            gens = possible.get(b, {0})
            if not any(got == stamp(b, g) for g in gens):
                st["wrong"] += 1
                if len(st["wrong_examples"]) < 10:
                    st["wrong_examples"].append(
                        "block %d: read %s, expected generation %s" %
                        (b, got[:16].hex(), sorted(gens)))

    def settle(blocks, g, ok):
        for b in blocks:
            if ok:
                possible[b] = {g}
            else:
                possible.setdefault(b, {0}).add(g)

    try:
        while not os.path.exists(stopfile):
            r = rng.choice(own)
            first = rng.randrange(PER_REGION)
            n = rng.randint(1, PER_REGION - first)
            blocks = [r * PER_REGION + first + i for i in range(n)]
            offset = blocks[0] * BLOCK
            x = rng.random()
            if x < 0.50:
                gen += 1
                data = b"".join(stamp(b, gen) for b in blocks)
                ok, _ = request("write", h.pwrite, data, offset)
                settle(blocks, gen, ok)
            elif x < 0.55:
                ok, _ = request("zero", h.zero, n * BLOCK, offset)
                settle(blocks, 0, ok)
            elif x < 0.60:
                ok, _ = request("flush", h.flush)
            else:
                ok, data = request("read", h.pread, n * BLOCK, offset)
                if ok:
                    check(blocks, data)
            if not ok:
                time.sleep(0.01)    # a failing quorum answers at once

        # Everything this client owns, read back once the faults stopped.
        for r in own:
            blocks = list(range(r * PER_REGION, (r + 1) * PER_REGION))
            ok, data = request("read", h.pread, REGION, r * REGION)
            if ok:
                check(blocks, data)
            else:
                st["unreadable_at_end"].append(r * REGION)
        h.shutdown()
        st["finished"] = True
    except nbd.Error as e:
        st["error"] = str(e)
    with open("%s.%d.json" % (results, k), "w") as f:
        json.dump(st, f)


def run(uri, nr_clients, stopfile, results):
    pids = []
    for k in range(nr_clients):
        pid = os.fork()
        if pid == 0:
            try:
                client(k, uri, nr_clients, stopfile, results)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)


def check(d, nr_clients):
    bad = False
    ok = {}
    failed = {}
    wrong = 0
    examples = []
    unreadable = []
    worst = 0.0
    slow = 0
    for k in range(nr_clients):
        try:
            with open(os.path.join(d, "result.%d.json" % k)) as f:
                st = json.load(f)
        except OSError:
            print("client %d: no result (it died or hung)" % k)
            bad = True
            continue
        if not st["finished"]:
            print("client %d did not finish: %s" %
                  (k, st.get("error", "?")))
            bad = True
        for kind, dst in (("ok", ok), ("failed", failed)):
            for op, d2 in st[kind].items():
                for what, n in d2.items():
                    key = (op, what)
                    dst[key] = dst.get(key, 0) + n
        wrong += st["wrong"]
        examples += st["wrong_examples"]
        unreadable += st["unreadable_at_end"]
        worst = max(worst, st["worst_latency"])
        slow += st["slow"]

    events = {}
    copied = 0
    mismatches = 0
    left_dirty = 0
    with open(os.path.join(d, "report.jsonl")) as f:
        for line in f:
            ev = json.loads(line)
            name = ev["event"]
            if name == "down":
                name = "down (%s)" % ev["reason"]
            elif name == "bad" and ev.get("mismatch"):
                mismatches += 1
                name = "bad (mismatch)"
            elif name == "bad":
                name = "bad (%s)" % ev.get("error", "?")
            elif name == "failure":
                name = "failure (%s %s)" % (ev["type"], ev["reason"])
            elif name == "resync-end":
                copied += ev["copied"]
                if ev["dirty"]:
                    left_dirty += 1
            events[name] = events.get(name, 0) + 1

    diverged = []
    imgs = [open(os.path.join(d, "c%d.img" % i), "rb") for i in range(3)]
    off = 0
    while True:
        chunks = [f.read(REGION) for f in imgs]
        if not chunks[0] and not chunks[1] and not chunks[2]:
            break
        if not (chunks[0] == chunks[1] == chunks[2]):
            odd = [i for i in range(3)
                   if chunks[i] != chunks[(i + 1) % 3] and
                   chunks[i] != chunks[(i + 2) % 3]]
            diverged.append((off, odd))
        off += REGION

    served = sum(n for (op, _), n in ok.items())
    failures = sum(failed.values())
    print()
    print("=== quorum soak summary ===")
    print("requests served:       %d  (%s)" % (served, ", ".join(
        "%s %d" % (op, n) for (op, _), n in sorted(ok.items()))))
    print("failures returned:     %d  (%s)" % (failures, ", ".join(
        "%s %s %d" % (op, e, n) for (op, e), n in sorted(failed.items()))
        or "none"))
    print("wrong data returned:   %d" % wrong)
    for e in examples:
        print("    " + e)
    print("divergence found:      %d granules of 64 KiB differ between "
          "the children" % len(diverged))
    for o, odd in diverged[:10]:
        print("    offset 0x%x: %s" % (o, "child %d differs" % odd[0]
                                       if len(odd) == 1 else
                                       "all three differ"))
    print("unreadable at the end: %d regions of 64 KiB" % len(unreadable))
    print("outvoted reads:        %d" % mismatches)
    print("resyncs:               %d  (%d left regions dirty)" %
          (events.get("resync-end", 0), left_dirty))
    print("bytes resynced:        %d  (%.1f MiB)" % (copied, copied / 2**20))
    try:
        with open(os.path.join(d, "crashes")) as f:
            crashes = int(f.read())
    except (OSError, ValueError):
        crashes = 0
    print("child server crashes:  %d  (nbdkit children that died by "
          "themselves, restarted)" % crashes)
    print("worst latency:         %.2f s  (%d requests over 10 s)" %
          (worst, slow))
    print("events:                %s" % ", ".join(
        "%s %d" % kv for kv in sorted(events.items())))
    if wrong or diverged or mismatches:
        bad = True
    print("RESULT: %s" % ("FAIL" if bad else "PASS"))
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2], int(sys.argv[3])))
    else:
        sys.exit("usage: quorum-soak.py run URI CLIENTS STOPFILE RESULTS\n"
                 "       quorum-soak.py check DIR CLIENTS")
