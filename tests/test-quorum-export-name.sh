#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Export names.  The quorum's children hold the replicas of one export,
# export-name=NAME (default ""): a client asking for another is refused
# with a message naming what it asked for and the parameter, "" is the
# default export and means NAME, and NBD_OPT_LIST (nbdinfo --list)
# shows NAME alone.  Child 0 is a plugin that serves several exports
# (the file plugin's dir=): in the filter form it is opened with NAME
# (the filter used to crash at start-up over such a plugin).

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires nbdinfo --version
requires python3 -c 'import json'

# The client side, run by nbdkit --run: the quorum's export name, its
# socket, a scratch directory.
cat > $tmpdir/clients.sh <<'EOF2'
set -e -x
name=$1
sock=$2
tmpdir=$3
# The export the quorum serves, by its name and as the default.
nbdsh -u "nbd+unix:///$name?socket=$sock" \
      -c 'h.pwrite(b"\x11" * 4096, 0)' \
      -c 'assert h.pread(4096, 0) == b"\x11" * 4096'
nbdsh -c "
h.set_full_info(True)
h.connect_uri('nbd+unix://?socket=$sock')
assert h.get_canonical_export_name() == '$name', h.get_canonical_export_name()
assert h.pread(4096, 0) == b'\x11' * 4096
"
# Any other export is refused.
nbdsh -c "
try:
    h.connect_uri('nbd+unix:///other?socket=$sock')
    assert False, 'export other was served'
except nbd.Error as e:
    print('refused: %s' % e)
"
# Only this export is listed.
nbdinfo --list --json "nbd+unix://?socket=$sock" > $tmpdir/list.json
python3 - "$name" $tmpdir/list.json <<'PY'
import json, sys
names = [e["export-name"] for e in json.load(open(sys.argv[2]))["exports"]]
assert names == [sys.argv[1]], names
PY
EOF2

# export_names NAME: export-name=NAME (none given if NAME is empty).
export_names ()
{
  local name=$1 param=
  [ -n "$name" ] && param="export-name=$name"
  rm -rf $tmpdir/exports
  mkdir $tmpdir/exports
  make_image $tmpdir/exports/$name 1M 0x00
  make_image $tmpdir/exports/other 1M 0x77
  for i in 1 2; do make_image $tmpdir/c$i.img 1M 0x00; done
  child0 file dir=$tmpdir/exports
  # The plugin form's child 0 is that export of the server.
  [ "$form" = plugin ] &&
    quorum_head=("$QUORUM_PLUGIN" "child=nbd+unix:///$name?socket=$tmpdir/c0.sock")
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done

  quorum -U - "${quorum_head[@]}" $param \
         child="$(child_uri 1)" child="$(child_uri 2)" \
         --run "sh $tmpdir/clients.sh '$name' \"\$unixsocket\" $tmpdir" 2> $tmpdir/log || {
    cat $tmpdir/log; exit 1; }
  cat $tmpdir/log
  assert_grep "export \"other\" refused: this quorum serves only the export \"$name\" \(export-name=\)" $tmpdir/log
  # The export's replicas took the write, the other export nothing.
  for i in 1 2; do cmp $tmpdir/exports/$name $tmpdir/c$i.img; done
  cmp -n 4096 $tmpdir/c1.img <(printf '\x11%.0s' $(seq 4096))
  make_image $tmpdir/other.img 1M 0x77
  cmp $tmpdir/exports/other $tmpdir/other.img
}

for_each_form export_names disk
# The default: export-name="" over a plugin whose exports all have
# names is served as "", and the plugin's file "" does not exist: only
# the refusal of other names and the list are checked here.
default_name ()
{
  rm -rf $tmpdir/exports
  mkdir $tmpdir/exports
  make_image $tmpdir/exports/other 1M 0x77
  for i in 1 2; do truncate -s 1M $tmpdir/c$i.img; start_child $i file $tmpdir/c$i.img; done
  child0 file dir=$tmpdir/exports
  [ "$form" = plugin ] &&
    quorum_head=("$QUORUM_PLUGIN" "child=nbd+unix:///other?socket=$tmpdir/c0.sock")
  quorum -U - "${quorum_head[@]}" child="$(child_uri 1)" child="$(child_uri 2)" \
         --run "nbdsh -c \"
h.set_opt_mode(True)
h.connect_uri('nbd+unix:///?socket=\$unixsocket')
names = []
h.opt_list(lambda n, d: names.append(n))
assert names == [''], names
h.opt_abort()
\" && nbdsh -c \"
try:
    h.connect_uri('nbd+unix:///other?socket=\$unixsocket')
    assert False, 'export other was served'
except nbd.Error as e:
    print('refused: %s' % e)
\"" 2> $tmpdir/log || { cat $tmpdir/log; exit 1; }
  cat $tmpdir/log
  assert_grep 'export "other" refused: this quorum serves only the export "" \(export-name=\)' $tmpdir/log
}
for_each_form default_name

# A name the NBD protocol cannot carry is refused at start-up.
long=$(printf 'x%.0s' $(seq 4097))
expect_fail_start $tmpdir/log $QUORUM_PLUGIN export-name=$long \
    child="$(child_uri 1)" child="$(child_uri 2)"
assert_grep 'export-name=: too long \(4097 bytes, at most 4096\)' $tmpdir/log
