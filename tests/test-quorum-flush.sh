#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Flush voting: a child whose flush fails (the eval plugin: nbdkit's
# error filter cannot fail flush) is reported; the flush succeeds at
# vote-threshold=2 and fails at vote-threshold=3.

source ./functions.sh
set -e
set -x
requires nbdsh --version

flush ()
{
  for i in 0 1; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  start_child 2 eval \
    get_size='echo 1048576' \
    pread='dd if=/dev/zero bs=$3 count=1 status=none' \
    pwrite='cat >/dev/null' \
    can_write='exit 0' can_flush='exit 0' \
    flush='echo "EIO flush refused" >&2; exit 1'
  children="child=$(child_uri 1) child=$(child_uri 2)"

  quorum -U - "${quorum_head[@]}" vote-threshold=2 $children \
         --run "nbdsh -u \"\$uri\" -c 'assert h.can_flush()' -c 'h.flush()'"
  assert_grep "^nbdkit-quorum-$form warning event=bad type=flush child=2 name=nbd\+unix:///\?socket=$tmpdir/c2.sock offset=0x0 length=0x0 error=EIO\$" $tmpdir/syslog
  assert_no_grep 'event=failure' $tmpdir/syslog

  rm $tmpdir/syslog
  quorum -U - "${quorum_head[@]}" vote-threshold=3 $children \
         --run "nbdsh -u \"\$uri\" -c '
import errno
try:
    h.flush()
    assert False, \"flush succeeded on 2 of 3 at threshold 3\"
except nbd.Error as e:
    assert e.errno in (\"EIO\", errno.EIO), e
'"
  assert_grep 'event=failure type=flush .* reason=errors error=EIO successes=2 threshold=3' $tmpdir/syslog
}

for_each_form flush
