#!/usr/bin/env python3
# nbdkit-quorum benchmarks: a front's perf samples by object.
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause
#
# Usage: perf-objects.py SCRIPT [USER [TOP]]
#        perf-objects.py --ours SCRIPT
#   SCRIPT  the output of `perf script --no-inline -F ip,sym,dso` of a
#           recording with call chains (--call-graph dwarf: neither the
#           quorum nor Debian's C library keeps frame pointers)
#   USER    the front's user CPU a unit of work (us a request, s a
#           GiB) during the recording, or -: prints what each object's
#           share of it comes to
#   TOP     how many of the functions sampled on the quorum's behalf
#           to list (default 10)
#   --ours  print only the quorum's share of the user-space samples
#           (0 to 1), C library samples charged to their caller; - when
#           there are fewer than MIN_USER_SAMPLES of them
#
# Objects: the kernel, the quorum's own .so (nbdkit-quorum-*), libnbd,
# nbdkit, the C library (and ld.so), the rest.  "all" is each one's
# share of every sample, "user" its share of the user-space ones;
# "+callees" charges a sample in the C library (a lock, an allocation,
# a system call's wrapper) to the first object up its stack that is not
# the C library: what a front whose own code cost nothing would save.

import os
import re
import sys

GROUPS = ("kernel", "quorum (ours)", "libnbd", "nbdkit", "libc", "other")
MIN_USER_SAMPLES = 100
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(\S*).*\((.*)\)\s*$")


def group(dso):
    base = os.path.basename(dso)
    if "kernel" in dso or (dso.startswith("[") and dso != "[unknown]"):
        return "kernel"
    if base.startswith("nbdkit-quorum-"):
        return "quorum (ours)"
    if base.startswith("libnbd."):
        return "libnbd"
    if base == "nbdkit":
        return "nbdkit"
    if base.startswith(("libc.", "libc-", "ld-linux")):
        return "libc"
    return "other"


def count(path):
    """Samples by leaf object, by object charged, and the functions
    sampled on the quorum's behalf."""
    own, charged, ours_fn = {}, {}, {}
    total = 0

    def sample(stack):
        nonlocal total
        if not stack:
            return
        total += 1
        g = [group(d) for d, _ in stack]
        own[g[0]] = own.get(g[0], 0) + 1
        c = g[0]
        if c == "libc":
            c = next((x for x in g[1:] if x not in ("libc", "other")), "libc")
        charged[c] = charged.get(c, 0) + 1
        if c == "quorum (ours)":
            fn = stack[0][1]
            ours_fn[fn] = ours_fn.get(fn, 0) + 1

    stack = []
    with open(path, errors="replace") as f:
        for line in f:
            m = FRAME.match(line)
            if m:
                if m.group(2) != "inlined":
                    stack.append((m.group(2),
                                  re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))))
            elif not line.strip():
                sample(stack)
                stack = []
    sample(stack)
    return total, own, charged, ours_fn


def main(argv):
    if len(argv) >= 2 and argv[1] == "--ours":
        total, own, charged, _ = count(argv[2])
        user = total - own.get("kernel", 0)
        # Too few samples say nothing (a run of a fraction of a second).
        print("%.4f" % (charged.get("quorum (ours)", 0) / user)
              if user >= MIN_USER_SAMPLES else "-")
        return 0
    total, own, charged, ours_fn = count(argv[1])
    try:
        user_unit = float(argv[2])
    except (IndexError, ValueError):
        user_unit = None
    top = int(argv[3]) if len(argv) > 3 else 10
    if not total:
        print("(no samples)")
        return 0
    user = total - own.get("kernel", 0)
    print("%-14s %7s %7s %9s %9s" % ("object", "all", "user", "+callees", "per unit"))
    for g in GROUPS:
        v = own.get(g, 0)
        if g == "kernel":
            print("%-14s %6.1f%% %7s %9s %9s" % (g, 100 * v / total, "-", "-", "-"))
            continue
        u = v / user if user else 0.0
        c = charged.get(g, 0) / user if user else 0.0
        per = "%9.2f" % (c * user_unit) if user_unit is not None else "%9s" % "-"
        print("%-14s %6.1f%% %6.1f%% %8.1f%% %s" % (g, 100 * v / total, 100 * u, 100 * c, per))
    print("(%d samples; per unit: the +callees share of the front's user time"
          " a unit)" % total)
    if ours_fn:
        n = sum(ours_fn.values())
        print("\nwhere the quorum's share (+callees) goes, by the function sampled")
        for fn, v in sorted(ours_fn.items(), key=lambda kv: -kv[1])[:top]:
            print("  %5.1f%%  %s" % (100 * v / n, fn))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
