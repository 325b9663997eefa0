#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A child whose reads fail (nbdkit's error filter) is outvoted and
# reported with its errno; when too few children succeed, the read
# fails with the errno most children gave (error voting).

source ./functions.sh
set -e
set -x
requires nbdsh --version

read_errors ()
{
  rm -f $tmpdir/fail2
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x33; done
  child0 file $tmpdir/c0.img
  start_child 1 --filter=error file $tmpdir/c1.img error-pread-rate=1 error-pread=ENOSPC
  start_child 2 --filter=error file $tmpdir/c2.img error-pread-rate=1 error-pread-file=$tmpdir/fail2 error-pread=ENOSPC
  children="child=$(child_uri 1) child=$(child_uri 2)"

  # Child 1 fails, 0 and 2 agree: the data is right.
  quorum -U - "${quorum_head[@]}" $children \
         --run "nbdsh -u \"\$uri\" -c 'assert h.pread(512, 0) == b\"\\x33\" * 512'"
  assert_grep "^nbdkit-quorum-$form warning event=bad type=read child=1 name=nbd\+unix:///\?socket=$tmpdir/c1.sock offset=0x0 length=0x200 error=ENOSPC\$" $tmpdir/syslog
  assert_no_grep 'event=failure' $tmpdir/syslog

  # Children 1 and 2 fail: one success is below the threshold; ENOSPC,
  # their common errno, reaches the client.
  touch $tmpdir/fail2
  rm $tmpdir/syslog
  quorum -U - "${quorum_head[@]}" $children \
         --run "nbdsh -u \"\$uri\" -c '
import errno
try:
    h.pread(512, 0)
    assert False, \"read succeeded with one child\"
except nbd.Error as e:
    assert e.errno in (\"ENOSPC\", errno.ENOSPC), e
'"
  assert_grep 'event=failure type=read offset=0x0 length=0x200 reason=errors error=ENOSPC successes=1 threshold=2' $tmpdir/syslog
  assert_grep 'event=bad type=read child=2 .* error=ENOSPC' $tmpdir/syslog
}

for_each_form read_errors
