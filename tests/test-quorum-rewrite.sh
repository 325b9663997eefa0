#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# rewrite-corrupted: the winning version is written back over the
# outvoted child (read its image directly afterwards); refused on a
# read-only export.

source ./functions.sh
set -e
set -x
requires nbdsh --version

rewrite ()
{
  for i in 0 1 2; do make_image $tmpdir/c$i.img 1M 0x66; done
  corrupt $tmpdir/c1.img 5000 'rot'
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  children="child=$(child_uri 1) child=$(child_uri 2)"

  # Read-only export: nothing can be rewritten, so no connection.
  if quorum -r -U - "${quorum_head[@]}" rewrite-corrupted=true $children \
            --run "nbdsh -u \"\$uri\" -c 'h.pread(512, 0)'" > $tmpdir/log 2>&1; then
      echo "$0: FAIL: rewrite-corrupted accepted on a read-only export"
      exit 1
  fi
  assert_grep 'rewrite-corrupted=true: the export is read-only' $tmpdir/log
  refute cmp $tmpdir/c0.img $tmpdir/c1.img

  quorum -U - "${quorum_head[@]}" rewrite-corrupted=true $children \
         --run "nbdsh -u \"\$uri\" -c 'assert h.pread(8192, 0) == b\"\\x66\" * 8192'"
  cmp $tmpdir/c0.img $tmpdir/c1.img
  cmp $tmpdir/c0.img $tmpdir/c2.img
  assert_grep "event=bad type=read child=1 .* offset=0x1000 length=0x1000 error=mismatch" $tmpdir/syslog
  assert_grep "^nbdkit-quorum-$form notice event=repair child=1 name=nbd\+unix:///\?socket=$tmpdir/c1.sock offset=0x1000 length=0x1000\$" $tmpdir/syslog
}

for_each_form rewrite
