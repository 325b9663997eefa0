#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# A slow child 0 never costs the others their vote.  Child 0 takes 4 s
# to read, child-timeout is 2 s.  In the plugin form child 0 is remote:
# it is cut for the timeout, and the read is answered by children 1
# and 2.  In the filter form child 0 is the plugin below, called on the
# request's thread (child-timeout is for remote children): the read
# waits for it, and children 1 and 2, whose replies came at once, must
# not be cut as late because nobody read their sockets meanwhile (a
# request reading its own replies did not, while its plugin ran).

source ./functions.sh
set -e
set -x
requires nbdsh --version

slow_local ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x3a; done
  child0 --filter=delay file $tmpdir/c0.img rdelay=4
  start_child 1 file $tmpdir/c1.img
  start_child 2 file $tmpdir/c2.img

  quorum -U - "${quorum_head[@]}" child-timeout=2 \
         child="$(child_uri 1)" child="$(child_uri 2)" \
         --run "nbdsh -u \"\$uri\" -c '
assert h.pread(4096, 0) == b\"\\x3a\" * 4096
'"
  touch $tmpdir/syslog
  assert_no_grep "event=down child=[12] " $tmpdir/syslog
  assert_no_grep "event=bad .* child=[12] " $tmpdir/syslog
  if [ "$form" = plugin ]; then
    assert_grep "event=down child=0 .* reason=timeout\$" $tmpdir/syslog
  fi
}

for_each_form slow_local
