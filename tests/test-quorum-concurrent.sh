#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Overlapping writes from many connections at once must not make the
# children diverge, and reads overlapping writes must not be taken for
# corruption: 4 connections x 32 requests in flight of random
# overlapping reads and writes over 256 KiB for 10 s, then every child
# is compared byte for byte and no report may have been made.

source ./functions.sh
set -e
set -x
requires python3 -c 'import nbd'

concurrent ()
{
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done

  quorum -U - "${quorum_head[@]}" \
         child="$(child_uri 1)" child="$(child_uri 2)" \
         --run "python3 $abs_top_srcdir/tests/hammer.py \"\$uri\" 4 32 10"
  cmp $tmpdir/c0.img $tmpdir/c1.img
  cmp $tmpdir/c0.img $tmpdir/c2.img
  touch $tmpdir/syslog
  assert_no_grep 'event=' $tmpdir/syslog
}

for_each_form concurrent
