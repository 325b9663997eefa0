#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child whose zero command fails (nbdkit's error filter), though it
# is connected and takes writes, is still resynchronised where its
# sources hold zeroes: the zero's failure is reported and zeroes are
# written instead, and its image ends identical to the others.  (It
# was retried, failing the same way, for as long as nbdkit ran.)  In
# both forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
q="nbd+unix:///?socket=$tmpdir/q.sock"

zero_fails ()
{
  local i c2=(--filter=error file $tmpdir/c2.img error-zero=EIO error-zero-rate=1)
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; make_image $tmpdir/c$i.img 2M 0x99; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 "${c2[@]}"
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" \
      reconnect-delay=1 reconnect-max-delay=1
  [ $form = filter ] && hold_connection "$q"

  # Child 2 misses a zero of the first MiB.
  kill -9 $(cat $tmpdir/c2.pid)
  nbdsh -u "$q" -c 'h.zero(1048576, 0)' -c 'h.flush()'
  wait_for "event=down" 10 grep -q 'event=down child=2' $tmpdir/syslog

  rm -f $tmpdir/c2.sock
  start_child 2 "${c2[@]}"
  wait_for "child 2 identical" 30 \
      images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  # The copy's data lands before the pass that made it ends (and says
  # so): wait for the report too.
  wait_for "resync-end report" 30 grep -q 'event=resync-end child=2 ' $tmpdir/syslog
  [ $form = filter ] && release_connection
  cat $tmpdir/syslog
  # Its zero was tried, failed, and zeroes were written.
  assert_grep 'event=bad type=zero child=2 .* error=EIO$' $tmpdir/syslog
  assert_grep 'event=resync-end child=2 .* zeroed=0x[1-9a-f][0-9a-f]* dirty=0x0 copied=0x[1-9a-f]' \
              $tmpdir/syslog
  assert_no_grep 'event=resync-stopped child=2' $tmpdir/syslog
  nbdsh -u "$q" -c 'assert h.pread(1048576, 0) == bytes(1048576)'
}

for_each_form zero_fails
