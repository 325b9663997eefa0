#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child that stays up is healed (issue 12, 3):
# - two children, vote-threshold=2: one transient EIO on a child's
#   write fails the write; the same bytes written again succeed, and
#   the granule is readable again (the region is settled), with the
#   two images equal;
# - three children, vote-threshold=2: a write that fails on one child
#   (which stays up, and fails the first copies too) is acknowledged;
#   the child is stale there and copied to in the background, retried
#   until it works (each failed copy reported as resync-stopped): its
#   image ends equal to the others;
# - a flush that fails on a child (which lost the writes it had not
#   flushed: an eval child, as nbdkit 1.32's error filter cannot fail
#   a flush) makes what was written to it since its last flush stale,
#   reported with reason=flush-failed, and it is healed.
# Each with the failing child remote and, as child 0, the filter's
# plugin in the filter form.

source ./functions.sh
set -e
set -x
requires nbdsh --version

q="nbd+unix:///?socket=$tmpdir/q.sock"

# failing_child N F ARGS...: child N serving ARGS (file IMAGE), with
# the error filter failing its writes while $tmpdir/trigger exists if
# N is F.  Child 0 through child0.
failing_child ()
{
  local n=$1 f=$2 err=()
  shift 2
  if [ "$n" = "$f" ]; then
    err=(--filter=error "$@" error-pwrite=EIO error-pwrite-rate=100%
         error-pwrite-file=$tmpdir/trigger)
  else
    err=("$@")
  fi
  if [ "$n" = 0 ]; then child0 "${err[@]}"; else start_child $n "${err[@]}"; fi
}

# transient F: two children, child F fails one write.
transient ()
{
  local f=$1 r=65536
  for i in 0 1; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  touch $tmpdir/trigger
  for i in 0 1; do failing_child $i $f file $tmpdir/c$i.img; done
  quorum -U - "${quorum_head[@]}" child="$(child_uri 1)" vote-threshold=2 \
         --run "nbdsh -u \"\$uri\" -c '
import os, time
data = b\"B\" * 4096
try:
    h.pwrite(data, $r + 4096)
    assert False, \"write on 1 of 2 children succeeded\"
except nbd.Error:
    pass
# The settler tries the region while the child still fails writes:
# that must leave it unsettled, not make the child stale for good.
time.sleep(2)
os.unlink(\"$tmpdir/trigger\")
h.pwrite(data, $r + 4096)
want = bytes(4096) + data + bytes(65536 - 8192)
deadline = time.monotonic() + 20
while True:
    try:
        d = h.pread(65536, $r)
        break
    except nbd.Error as e:
        assert time.monotonic() < deadline, \"granule never readable: %s\" % e
        time.sleep(0.2)
assert d == want, d[4096:4112]
assert h.pread(4096, $r + 4096) == data
'"
  cat $tmpdir/syslog
  assert_grep "event=bad type=write child=$f .* error=EIO" $tmpdir/syslog
  cmp $tmpdir/c0.img $tmpdir/c1.img
}

# stays_up F: three children, child F fails a write and stays up.
stays_up ()
{
  local f=$1 r=$((2 * 65536))
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  touch $tmpdir/trigger
  for i in 0 1 2; do failing_child $i $f file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" vote-threshold=2 \
      reconnect-delay=1 reconnect-max-delay=1
  hold_connection "$q"
  nbdsh -u "$q" -c "h.pwrite(b'C' * 4096, $r + 4096)"
  assert_grep "event=bad type=write child=$f .* error=EIO" $tmpdir/syslog
  refute images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  # The first copies to it fail too; they are retried.
  sleep 2
  rm $tmpdir/trigger
  wait_for "healed child $f" 30 \
      images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  # The copy's data lands before the pass that made it ends (and says
  # so): wait for the report too.
  wait_for "resync-end or settle report for child $f" 30 \
      grep -E -q -- "event=(resync-end child=$f |settle )" $tmpdir/syslog
  cat $tmpdir/syslog
  assert_grep "event=stale child=$f .* offset=0x2[0-9a-f]{4} length=0x[0-9a-f]+ reason=write-failed" $tmpdir/syslog
  # The copies that failed were reported as stopped, not as ended: a
  # resync-end says the pass got through.
  assert_grep "event=resync-stopped child=$f .* copied=0x0 reason=write-failed$" \
              $tmpdir/syslog
  assert_no_grep "event=resync-end child=$f .* dirty=0x[1-9a-f][0-9a-f]* copied=0x0$" \
                 $tmpdir/syslog
  nbdsh -u "$q" -c "assert h.pread(4096, $r + 4096) == b'C' * 4096"
  release_connection
  alive $(cat $tmpdir/q.pid)
}

# flush_fails: child 2 fails a flush and loses the write before it.
flush_fails ()
{
  local r=$((3 * 65536)) img=$tmpdir/c2.img
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 eval get_size='echo 1048576' \
      pread="dd if=$img skip=\$4 count=\$3 iflag=skip_bytes,count_bytes status=none" \
      pwrite="dd of=$img seek=\$4 oflag=seek_bytes conv=notrunc status=none" \
      flush="if [ -e $tmpdir/trigger ]; then
               rm -f $tmpdir/trigger
               dd if=/dev/zero of=$img bs=65536 seek=3 count=1 conv=notrunc status=none
               echo 'EIO the cache was lost' >&2
               exit 1
             fi"
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" vote-threshold=2 \
      reconnect-delay=1 reconnect-max-delay=1
  hold_connection "$q"
  # A flushed write first: not stale afterwards.
  nbdsh -u "$q" -c "h.pwrite(b'E' * 4096, 0)" -c 'h.flush()'
  touch $tmpdir/trigger
  nbdsh -u "$q" -c "h.pwrite(b'D' * 65536, $r)" -c 'h.flush()'
  test ! -e $tmpdir/trigger
  assert_grep "event=bad type=flush child=2 .* error=EIO" $tmpdir/syslog
  wait_for "healed child 2" 30 \
      images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  cat $tmpdir/syslog
  assert_grep "event=stale child=2 .* offset=0x30000 length=0x10000 reason=flush-failed" $tmpdir/syslog
  assert_no_grep "event=stale child=2 .* offset=0x0 .*reason=flush-failed" $tmpdir/syslog
  nbdsh -u "$q" -c "assert h.pread(65536, $r) == b'D' * 65536"
  release_connection
  alive $(cat $tmpdir/q.pid)
}

for_each_form transient 1
for_each_form transient 0
for_each_form stays_up 2
for_each_form stays_up 0
for_each_form flush_fails
