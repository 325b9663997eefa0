#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# state=FILE keeps what is stale across restarts (issue 12, 5):
# (a) a child that missed writes is still stale after the quorum is
#     restarted with it up: it is resynced, not trusted;
# (b) restarted with start-degraded while the child is still down, it
#     stays out of what it missed and is resynced when it returns;
# (c) a state file written for another export size, state-granule or
#     number of children is refused, naming what differs, and left as
#     it was;
# (d) a child whose URI changed at its position is a new disk: wholly
#     stale (reason=new-disk) and rebuilt, and only once;
# (e) the file is created with mode 0600 whatever the umask, and a
#     symbolic link as state= is refused, never followed;
# (f) when the state cannot be recorded (the file on a full tmpfs, in
#     a private mount namespace) writes fail with EIO and an error
#     naming the state, never silently unprotected.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires unshare --version

q="nbd+unix:///?socket=$tmpdir/q.sock"
st=$tmpdir/state

# qstart ARGS...: the quorum of children 0, 1, 2 with state=$st.
qstart ()
{
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" vote-threshold=2 \
      reconnect-delay=1 reconnect-max-delay=1 state=$st "$@"
}

# qhold: a client connected meanwhile, for the filter form, whose
# plugin (child 0) can only be read from within a client's connection:
# the copies to a stale child need it as a source.
qhold ()
{
  hold_connection "$q"
  holding=true
}
holding=false

qstop ()
{
  if $holding; then release_connection; holding=false; fi
  kill_pid $(cat $tmpdir/q.pid)
  rm -f $tmpdir/q.pid $tmpdir/q.sock
}

# three SIZE: images and children 0, 1, 2 (files), no state file.
three ()
{
  rm -f $st
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s $1 $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
}

# (a)
restart_stale ()
{
  local r=$((4 * 65536))
  three 1M
  qstart
  stop_child 2
  nbdsh -u "$q" -c "h.pwrite(b'W' * 65536, $r)" -c 'h.flush()'
  wait_for "event=down" 10 grep -q 'event=down child=2 ' $tmpdir/syslog
  qstop
  test "$(stat -c %a $st)" = 600

  start_child 2 file $tmpdir/c2.img
  rm -f $tmpdir/syslog
  qstart
  qhold
  nbdsh -u "$q" -c "assert h.pread(65536, $r) == b'W' * 65536"
  wait_for "child 2 resynced" 30 \
      images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  # The data lands before the pass ends and reports: wait for that too.
  wait_for "resync-end report" 30 grep -q 'event=resync-end child=2 ' $tmpdir/syslog
  cat $tmpdir/syslog
  assert_grep "event=resync-end child=2 .* copied=0x[1-9a-f]" $tmpdir/syslog
  qstop
}

# (b)
restart_degraded ()
{
  local r1=$((2 * 65536)) r2=$((6 * 65536))
  three 1M
  qstart
  stop_child 2
  nbdsh -u "$q" -c "h.pwrite(b'V' * 65536, $r1)" -c 'h.flush()'
  wait_for "event=down" 10 grep -q 'event=down child=2 ' $tmpdir/syslog
  qstop

  rm -f $tmpdir/syslog
  qstart start-degraded=true
  qhold
  nbdsh -u "$q" -c "assert h.pread(65536, $r1) == b'V' * 65536" \
        -c "h.pwrite(b'U' * 4096, $r2)" -c 'h.flush()'
  start_child 2 file $tmpdir/c2.img
  wait_for "child 2 resynced" 30 \
      images_equal $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
  cat $tmpdir/syslog
  region_is $tmpdir/c2.img $r1 65536 0x56
  nbdsh -u "$q" -c "assert h.pread(65536, $r1) == b'V' * 65536" \
        -c "assert h.pread(4096, $r2) == b'U' * 4096"
  qstop
}

# (c)
mismatch ()
{
  three 1M
  qstart
  nbdsh -u "$q" -c "h.pwrite(b'M' * 4096, 0)" -c 'h.flush()'
  qstop
  sha256sum $st > $tmpdir/st.sum
  local head=("${quorum_head[@]}") c1="child=$(child_uri 1)" c2="child=$(child_uri 2)"

  expect_fail_start $tmpdir/granule.log "${head[@]}" "$c1" "$c2" \
      state=$st state-granule=8M
  assert_grep "state.*state-granule|state-granule.*state" $tmpdir/granule.log
  assert_grep "(4194304|4M|4 ?MiB)" $tmpdir/granule.log
  assert_grep "(8388608|8M|8 ?MiB)" $tmpdir/granule.log

  expect_fail_start $tmpdir/children.log "${head[@]}" "$c1" state=$st
  assert_grep "state.*children|children.*state" $tmpdir/children.log
  assert_grep "\b3\b" $tmpdir/children.log
  assert_grep "\b2\b" $tmpdir/children.log

  for i in 0 1 2; do truncate -s 2M $tmpdir/c$i.img; done
  expect_fail_start $tmpdir/size.log "${head[@]}" "$c1" "$c2" state=$st
  assert_grep "state.*(size|bytes)" $tmpdir/size.log
  assert_grep "(1048576|1M|1 ?MiB|0x100000)" $tmpdir/size.log
  assert_grep "(2097152|2M|2 ?MiB|0x200000)" $tmpdir/size.log
  sha256sum -c $tmpdir/st.sum
}

# (d)
new_disk ()
{
  three 1M
  qstart
  nbdsh -u "$q" -c "h.pwrite(b'N' * 65536, 65536)" \
        -c "h.pwrite(b'n' * 4096, 8 * 65536)" -c 'h.flush()'
  qstop
  rm -f $tmpdir/c3.img; truncate -s 1M $tmpdir/c3.img
  start_child 3 file $tmpdir/c3.img
  rm -f $tmpdir/syslog
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 3)" vote-threshold=2 \
      reconnect-delay=1 reconnect-max-delay=1 state=$st
  qhold
  wait_for "child 2 rebuilt" 30 images_equal $tmpdir/c0.img $tmpdir/c3.img
  cat $tmpdir/syslog
  assert_grep "event=stale child=2 name=nbd\+unix:///\?socket=$tmpdir/c3.sock offset=0x0 length=0x100000 reason=new-disk" $tmpdir/syslog
  nbdsh -u "$q" -c "assert h.pread(65536, 65536) == b'N' * 65536"
  qstop
  # The new name is recorded: no new disk next time.
  rm -f $tmpdir/syslog
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 3)" vote-threshold=2 \
      state=$st
  nbdsh -u "$q" -c "assert h.pread(4096, 8 * 65536) == b'n' * 4096"
  assert_no_grep "reason=new-disk" $tmpdir/syslog
  qstop
}

# (e)
file_mode ()
{
  three 1M
  (umask 0; qstart)
  test "$(stat -c %a $st)" = 600
  qstop
  ln -s $tmpdir/target $tmpdir/link
  expect_fail_start $tmpdir/link.log "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" state=$tmpdir/link
  assert_grep "state=$tmpdir/link.*(symbolic link|symlink)" $tmpdir/link.log
  test ! -e $tmpdir/target
  rm $tmpdir/link
}

# (f)
unrecordable ()
{
  local head
  three 1M
  mkdir -p $tmpdir/small
  printf -v head '%q ' "${quorum_head[@]}"
  # Nothing written before the file system is full: the first write
  # needs the state changed (its region in the write-intent map), and
  # that needs room (a block of the file written for the first time).
  cat > $tmpdir/fill-and-write <<EOF
set -e
dd if=/dev/zero of=$tmpdir/small/fill bs=4096 status=none 2>/dev/null || :
df $tmpdir/small
nbdsh -u "\$1" -c '
import errno
for off in range(65536, 1048576, 65536):
    try:
        h.pwrite(b"2" * 4096, off)
        assert False, "a write at %d succeeded with the state not recorded" % off
    except nbd.Error as e:
        assert e.errnum == errno.EIO, e
assert h.pread(4096, 0) == bytes(4096)
'
EOF
  # A mount namespace of its own, made private from inside: under a
  # chroot (the Debian 13 stage) / is no mount point and unshare's own
  # --propagation private fails; that stage's namespace is private
  # already.
  unshare -m --propagation unchanged bash -c "
set -e
mount --make-rprivate / 2>/dev/null || true
tmpdir=$tmpdir
QUORUM_PRELOAD='$QUORUM_PRELOAD'
$(declare -f quorum)
mount -t tmpfs -o size=256k tmpfs $tmpdir/small
quorum -U - $head child='$(child_uri 1)' child='$(child_uri 2)' \
    state=$tmpdir/small/state --run 'bash $tmpdir/fill-and-write \"\$uri\"'
" > $tmpdir/full.log 2>&1 || { cat $tmpdir/full.log; exit 1; }
  cat $tmpdir/full.log
  assert_grep "error: .*state" $tmpdir/full.log
  # Nothing was written to any child.
  for i in 0 1 2; do cmp -n 1048576 $tmpdir/c$i.img /dev/zero; done
}

for_each_form restart_stale
for_each_form restart_degraded
for_each_form mismatch
for_each_form new_disk
for_each_form file_mode
for_each_form unrecordable
