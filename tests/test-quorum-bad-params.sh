#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# Every bad parameter stops nbdkit at start-up with a message that names
# the parameter.

source ./functions.sh
set -e
set -x

truncate -s 1M $tmpdir/c0.img $tmpdir/c1.img $tmpdir/c2.img
for i in 0 1 2; do start_child $i file $tmpdir/c$i.img; done
c0="child=$(child_uri 0)"
c1="child=$(child_uri 1)"
c2="child=$(child_uri 2)"

refuse () {
    local pattern=$1
    shift
    expect_fail_start $tmpdir/log "$@"
    assert_grep "$pattern" $tmpdir/log
}

refuse 'vote-threshold=0: must be between 1 and the number of children \(3\)' \
       $QUORUM_PLUGIN $c0 $c1 $c2 vote-threshold=0
refuse 'vote-threshold=4: must be between 1 and the number of children \(3\)' \
       $QUORUM_PLUGIN $c0 $c1 $c2 vote-threshold=4
refuse 'vote-threshold' $QUORUM_PLUGIN $c0 $c1 $c2 vote-threshold=two
refuse 'vote-threshold=3: must be between 1 and the number of children \(2\)' \
       --filter=$QUORUM_FILTER file $tmpdir/c0.img $c1 vote-threshold=3
refuse 'child=: no children' $QUORUM_PLUGIN vote-threshold=1
refuse 'child=: no children besides the plugin' \
       --filter=$QUORUM_FILTER file $tmpdir/c0.img
refuse 'read-pattern=bogus: expected quorum or fifo' \
       $QUORUM_PLUGIN $c0 $c1 read-pattern=bogus
refuse 'blkverify=true: needs exactly 2 children and vote-threshold=2' \
       $QUORUM_PLUGIN $c0 $c1 $c2 blkverify=true
refuse 'blkverify=true: needs exactly 2 children and vote-threshold=2' \
       $QUORUM_PLUGIN $c0 $c1 blkverify=true vote-threshold=1
refuse 'blkverify=maybe: expected a boolean' \
       $QUORUM_PLUGIN $c0 $c1 blkverify=maybe
refuse 'rewrite-corrupted=true: cannot be used with blkverify' \
       $QUORUM_PLUGIN $c0 $c1 blkverify=true rewrite-corrupted=true
refuse 'rewrite-corrupted=true: needs read-pattern=quorum' \
       $QUORUM_PLUGIN $c0 $c1 $c2 rewrite-corrupted=true read-pattern=fifo
refuse 'child-timeout' $QUORUM_PLUGIN $c0 $c1 child-timeout=-1
refuse 'reconnect-delay=0' $QUORUM_PLUGIN $c0 $c1 reconnect-delay=0
refuse "unknown parameter 'bogus'" $QUORUM_PLUGIN $c0 $c1 bogus=1
refuse "child=nbd\+unix:///\?socket=$tmpdir/none.sock: cannot connect to child 2" \
       $QUORUM_PLUGIN $c0 $c1 child="nbd+unix:///?socket=$tmpdir/none.sock"
refuse 'child=not-a-uri: cannot connect to child 1' \
       $QUORUM_PLUGIN $c0 child=not-a-uri
refuse 'report=/nonexistent/dir/r.jsonl' \
       $QUORUM_PLUGIN $c0 $c1 report=/nonexistent/dir/r.jsonl
for r in -1 1e3 0x10 . 1. five 1048577 1048576.5 ""; do
  refuse "scrub-rate=$r: expected MiB/s, a number from 0 \(no limit\) to 1048576, such as scrub-rate=50" \
         $QUORUM_PLUGIN $c0 $c1 scrub-rate=$r
done

# Duplicate children: one disk would get two votes.  The same URI
# however spelled (socket path through a symbolic link or "./", query
# keys in another order, the default port written out, TLS or not), the
# same socket, the same child-command.
ln -s $tmpdir $tmpdir/link
refuse 'child 2 \(nbd\+unix:///\?socket=[^ ]*/c0.sock\) is the same disk as child 0 \(nbd\+unix:///\?socket=[^ ]*/c0.sock\): .*remove' \
       $QUORUM_PLUGIN $c0 $c1 $c0
refuse 'child 1 .* is the same disk as child 0' \
       $QUORUM_PLUGIN $c0 child="nbd+unix:///?socket=$tmpdir/link/./c0.sock" $c2
refuse 'child 2 .* is the same disk as child 1' \
       $QUORUM_PLUGIN $c0 \
       child="nbd+unix:///?socket=$tmpdir/c1.sock&tls-verify-peer=false" \
       child="nbds+unix://alice@/?tls-verify-peer=false&socket=$tmpdir/c1.sock"
refuse 'child 1 \(nbd://127.0.0.1:10809/x\) is the same disk as child 0 \(nbd://127.0.0.1/x\)' \
       $QUORUM_PLUGIN child=nbd://127.0.0.1/x child=nbd://127.0.0.1:10809/x
refuse 'child 2 .* is the same disk as child 1' \
       --filter=$QUORUM_FILTER file $tmpdir/c0.img $c1 $c1
cmd="nbdkit --exit-with-parent file $tmpdir/c2.img"
refuse 'child-command=: child 2 \(command:%20nbdkit.*\) is the same disk as child 1 \(command:nbdkit' \
       $QUORUM_PLUGIN $c0 child-command="$cmd" child-command=" $cmd"
# The password of a duplicate is not printed.
refuse 'child 1 \(nbd://alice:\*\*\*@127.0.0.1/\) is the same disk as child 0' \
       $QUORUM_PLUGIN child=nbd://127.0.0.1/ child=nbd://alice:hunter2@127.0.0.1/
grep -v '^+' $tmpdir/log > $tmpdir/log.notrace || :   # not set -x's lines
assert_no_grep hunter2 $tmpdir/log.notrace
# Two exports of one server are two disks.
quorum -U - $QUORUM_PLUGIN child="nbd+unix:///a?socket=$tmpdir/c0.sock" \
       child="nbd+unix:///b?socket=$tmpdir/c0.sock" $c1 --run true

# Every number has a range: a value outside is refused, not wrapped.
refuse 'child-timeout=3000000: out of range: must be between 0 \(no timeout\) and 86400' \
       $QUORUM_PLUGIN $c0 $c1 child-timeout=3000000
refuse 'child-timeout' $QUORUM_PLUGIN $c0 $c1 child-timeout=4294967296
refuse 'reconnect-delay=2147483648: out of range: must be between 1 and 86400' \
       $QUORUM_PLUGIN $c0 $c1 reconnect-delay=2147483648 \
       reconnect-max-delay=4294967295
refuse 'reconnect-max-delay=86401: out of range: must be between 1 and 86400' \
       $QUORUM_PLUGIN $c0 $c1 reconnect-max-delay=86401
refuse 'reconnect-max-delay=0: out of range: must be between 1 and 86400' \
       $QUORUM_PLUGIN $c0 $c1 reconnect-max-delay=0
refuse 'reconnect-delay=10, reconnect-max-delay=5: need' \
       $QUORUM_PLUGIN $c0 $c1 reconnect-delay=10 reconnect-max-delay=5
refuse 'vote-threshold=33: must be between 1 and the number of children \(3\)' \
       $QUORUM_PLUGIN $c0 $c1 $c2 vote-threshold=33
refuse 'vote-threshold' $QUORUM_PLUGIN $c0 $c1 vote-threshold=4294967297
refuse 'vote-block-size=64M: must be a power of 2 between 512 and 32M' \
       $QUORUM_PLUGIN $c0 $c1 vote-block-size=64M
refuse 'vote-block-size=1000: must be a power of 2 between 512 and 32M' \
       $QUORUM_PLUGIN $c0 $c1 vote-block-size=1000
refuse 'vote-block-size=256: must be a power of 2 between 512 and 32M' \
       $QUORUM_PLUGIN $c0 $c1 vote-block-size=256
# The ends of each range are accepted.
quorum -U - $QUORUM_PLUGIN $c0 $c1 child-timeout=86400 reconnect-delay=86400 \
       reconnect-max-delay=86400 vote-block-size=32M --run true
quorum -U - $QUORUM_PLUGIN $c0 $c1 child-timeout=0 reconnect-delay=1 \
       reconnect-max-delay=1 vote-block-size=512 vote-threshold=1 --run true

# report=FILE: a regular file or a new one, never through a symbolic
# link, never a FIFO (which would block start-up), nothing else.  Each
# must fail at once with a message, not hang (hence the short timeout).
refuse_fast () {
    local pattern=$1 r=0 pre=$SYSLOG_SHIM
    shift
    # As the harness's quorum function preloads, with a short timeout.
    [ -n "$QUORUM_PRELOAD" ] && pre="$QUORUM_PRELOAD:$pre"
    LD_PRELOAD=$pre QUORUM_SYSLOG_FILE=$tmpdir/syslog \
        timeout -k 1 10 nbdkit "$@" -U - --run true > $tmpdir/log 2>&1 || r=$?
    cat $tmpdir/log
    if [ $r -eq 0 ] || [ $r -ge 124 ]; then
        echo "$0: FAIL: nbdkit $* exited with $r, expected a refusal" >&2
        exit 1
    fi
    assert_grep "$pattern" $tmpdir/log
}
echo 'precious' > $tmpdir/target
ln -s $tmpdir/target $tmpdir/r-link.jsonl
refuse_fast "report=$tmpdir/r-link.jsonl: is a symbolic link" \
    $QUORUM_PLUGIN $c0 $c1 report=$tmpdir/r-link.jsonl
[ "$(cat $tmpdir/target)" = precious ]
ln -s $tmpdir/none $tmpdir/r-dangling.jsonl
refuse_fast "report=$tmpdir/r-dangling.jsonl: is a symbolic link" \
    $QUORUM_PLUGIN $c0 $c1 report=$tmpdir/r-dangling.jsonl
[ ! -e $tmpdir/none ]
mkfifo $tmpdir/r-fifo.jsonl
refuse_fast "report=$tmpdir/r-fifo.jsonl: is a FIFO, not a regular file" \
    $QUORUM_PLUGIN $c0 $c1 report=$tmpdir/r-fifo.jsonl
# With a reader on the FIFO, opening it would succeed: still refused.
sleep 30 < $tmpdir/r-fifo.jsonl &
reader=$!
cleanup_fn kill_pid $reader
refuse_fast "report=$tmpdir/r-fifo.jsonl: is a FIFO, not a regular file" \
    $QUORUM_PLUGIN $c0 $c1 report=$tmpdir/r-fifo.jsonl
kill_pid $reader
mkdir $tmpdir/r-dir.jsonl
refuse_fast "report=$tmpdir/r-dir.jsonl: is a directory, not a regular file" \
    $QUORUM_PLUGIN $c0 $c1 report=$tmpdir/r-dir.jsonl
refuse_fast "report=/dev/null: is a character device, not a regular file" \
    $QUORUM_PLUGIN $c0 $c1 report=/dev/null
# A new file is created private; an existing one is appended to.
quorum -U - $QUORUM_PLUGIN $c0 $c1 report=$tmpdir/r-new.jsonl --run true
[ "$(stat -c %a $tmpdir/r-new.jsonl)" = 600 ]
n=$(wc -l < $tmpdir/r-new.jsonl)
quorum -U - $QUORUM_PLUGIN $c0 $c1 report=$tmpdir/r-new.jsonl --run true
[ $(wc -l < $tmpdir/r-new.jsonl) -gt $n ]
