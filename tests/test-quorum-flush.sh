#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Flush voting: a child whose flush fails is reported; the flush
# succeeds at vote-threshold=2 and fails at vote-threshold=3.  The
# failing child is nbdkit's error filter where it can fail flush
# (error_filter_fails_flush), else the eval plugin; with the error
# filter, child 0 fails too, which in the filter form is the local
# plugin's flush.

source ./functions.sh
set -e
set -x
requires nbdsh --version

flush ()
{
  for i in 0 1; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  start_child 1 file $tmpdir/c1.img
  if error_filter_fails_flush; then
    echo "$0: the error filter fails child 2's flush"
    rm -f $tmpdir/c2.img; truncate -s 1M $tmpdir/c2.img
    start_child 2 --filter=error file $tmpdir/c2.img \
                error-flush=EIO error-flush-rate=100%
  else
    echo "$0: this nbdkit's error filter cannot fail flush: eval fails it"
    start_child 2 eval \
      get_size='echo 1048576' \
      pread='dd if=/dev/zero bs=$3 count=1 status=none' \
      pwrite='cat >/dev/null' \
      can_write='exit 0' can_flush='exit 0' \
      flush='echo "EIO flush refused" >&2; exit 1'
  fi
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

# Child 0's flush fails (the error filter only): in the filter form that
# is the plugin below, called in-process.
flush_child0 ()
{
  local c0name="nbd\+unix:///\?socket=$tmpdir/c0.sock"
  [ "$form" = filter ] && c0name=plugin
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 --filter=error file $tmpdir/c0.img \
         error-flush=EIO error-flush-rate=100%
  start_child 1 file $tmpdir/c1.img
  start_child 2 file $tmpdir/c2.img
  children="child=$(child_uri 1) child=$(child_uri 2)"

  quorum -U - "${quorum_head[@]}" vote-threshold=2 $children \
         --run "nbdsh -u \"\$uri\" -c 'h.flush()'"
  assert_grep "^nbdkit-quorum-$form warning event=bad type=flush child=0 name=$c0name offset=0x0 length=0x0 error=EIO\$" $tmpdir/syslog
  assert_no_grep 'event=failure' $tmpdir/syslog
}

for_each_form flush
if error_filter_fails_flush; then
  for_each_form flush_child0
else
  echo "$0: child 0's failing flush needs an error filter that fails flush"
fi
