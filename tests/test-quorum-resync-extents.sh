#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A resync zeroes what every source reports as zeroes and reads only the
# rest, block by block within a run, and still copies a block only
# where vote-threshold sources agree.  Child 2 misses 6 MiB of data, a
# 6 MiB zero with 4 KiB of data written in its middle, and 64 KiB of
# data at 12 MiB; then, behind the quorum's back, one 4 KiB block of
# child 0's data is corrupted and its 64 KiB at 12 MiB punched out (a
# hole: zeroes, where child 1 has data).  When 2 comes back it copies
# the data and zeroes the zero, and child 1 (--filter=log) sees no read
# of the zeroed region but that of its 4 KiB of data; the corrupt block
# and the 64 KiB where 0 and 1 disagree (one says zero, the other
# data) are not copied and stay stale (two granules), and reads of them
# fail.  In both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires nbdkit --filter=log null --dump-plugin
requires fallocate --version
q="nbd+unix:///?socket=$tmpdir/q.sock"
M=1048576

resync_extents ()
{
  local i
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 16M $tmpdir/c$i.img; done
  rm -f $tmpdir/c1.log
  child0 file $tmpdir/c0.img
  start_child 1 --filter=log file $tmpdir/c1.img logfile=$tmpdir/c1.log
  start_child 2 file $tmpdir/c2.img
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      reconnect-delay=1 reconnect-max-delay=1
  [ $form = filter ] && hold_connection "$q"

  kill -9 $(cat $tmpdir/c2.pid)
  nbdsh -u "$q" -c "
import os
M = $M
h.pwrite(os.urandom(6 * M), 0)
h.zero(6 * M, 6 * M)
h.pwrite(os.urandom(4096), 9 * M + 8192)
h.pwrite(os.urandom(65536), 12 * M)
h.flush()
"
  wait_for "event=down" 10 grep -q 'event=down child=2' $tmpdir/syslog
  corrupt $tmpdir/c0.img $((3 * M + 8192)) "$(printf 'X%.0s' $(seq 4096))"
  fallocate -p -o $((12 * M)) -l 65536 $tmpdir/c0.img
  # What child 1 was asked before the resync: from here on, its log.
  : > $tmpdir/c1.log

  rm -f $tmpdir/c2.sock
  start_child 2 file $tmpdir/c2.img
  wait_for "event=resync-end" 30 grep -q 'event=resync-end child=2' $tmpdir/syslog
  grep 'event=resync-end child=2' $tmpdir/syslog | head -1 | tee $tmpdir/end
  cp $tmpdir/c1.log $tmpdir/c1.first

  python3 - $tmpdir $M <<'PY'
import re, sys
d, M = sys.argv[1], int(sys.argv[2])
end = open(d + "/end").read()
h = lambda k: int(re.search(k + r"=0x([0-9a-f]+)", end).group(1), 16)
print("resync-end: zeroed %d, copied %d, left stale %d" %
      (h("zeroed"), h("copied"), h("dirty")))
# Two granules left: the corrupt block's and the one at 12 MiB.
assert h("dirty") == 2 * 65536, h("dirty")
# The zero is zeroed, all but the block of data in it.
assert h("zeroed") >= 6 * M - 65536, h("zeroed")
# Child 1 was read, in the zeroed region, at its 4 KiB of data only.
reads = [(int(o, 16), int(c, 16)) for o, c in
         re.findall(r" Read id=\d+ offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)",
                    open(d + "/c1.first", errors="replace").read())]
print("child 1 reads:", [(hex(o), hex(c)) for o, c in reads])
assert reads, "no read of child 1"
inside = [(o, c) for o, c in reads if o < 12 * M and o + c > 6 * M]
assert inside == [(9 * M + 8192, 4096)], inside
# Child 2: child 1's bytes but where 0 and 1 disagree.
c1 = open(d + "/c1.img", "rb").read()
c2 = open(d + "/c2.img", "rb").read()
bad = [(3 * M + 8192, 4096), (12 * M, 65536)]
for o, n in bad:
    assert c2[o:o + n] == bytes(n), "copied where the sources disagree: %d" % o
pos = 0
for o, n in bad + [(len(c1), 0)]:
    assert c2[pos:o] == c1[pos:o], "not copied in [%d, %d)" % (pos, o)
    pos = o + n
PY

  nbdsh -u "$q" -c "
M = $M
for o, n in ((3 * M + 8192, 4096), (12 * M, 65536)):
    try:
        h.pread(n, o)
        assert False, 'read where the sources disagree at %d' % o
    except nbd.Error:
        pass
assert h.pread(4096, 9 * M + 8192) == open('$tmpdir/c1.img', 'rb').read()[9 * M + 8192:9 * M + 12288]
assert h.pread(M, 7 * M) == bytes(M)
"
  [ $form = filter ] && release_connection
  alive $(cat $tmpdir/q.pid)
}

for_each_form resync_extents
