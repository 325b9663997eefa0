#!/usr/bin/env bash
# nbdkit-quorum
# Copyright (C) 2026 the nbdkit-quorum authors.
# SPDX-License-Identifier: BSD-3-Clause

# The control socket against bad clients: garbage, JSON that is not a
# request, an unknown command or key, an over-long line, half a line
# and a disconnect, half a line and silence, a client that never reads
# its replies, more clients than are served at once, and another uid.
# Each gets an error reply or is dropped, the socket goes on answering
# others, and the export keeps serving (a write and a read right
# after).  nbdkit-quorum-ctl exits 0, 1 and 2 as documented.  In both
# forms.

source ./functions.sh
set -e
set -x
requires nbdsh --version
requires python3 -c 'import json, socket'
requires setpriv --version
requires_control
if [ "$(id -u)" != 0 ]; then
  echo "$0: FAIL: this test must run as root (it connects as nobody)" >&2
  exit 1
fi
q="nbd+unix:///?socket=$tmpdir/q.sock"

# The socket in a directory that nobody may traverse (not read).
ctldir=$(mktemp -d -t quorum-ctl.XXXXXX)
cleanup_fn rm -rf "$ctldir"
chmod 0711 "$ctldir"
sock=$ctldir/ctl

# client CODE: Python with helpers: conn() a connection, send(s, b),
# line(s) the next reply line as JSON, ask(s, b) both, closed(s) true
# once the server has closed it (after any replies still in flight).
cat > $tmpdir/client.py <<'PY'
import json, os, socket, sys, time
SOCK = os.environ["SOCK"]
class Conn(socket.socket):
    buf = b""
def conn():
    s = Conn(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(SOCK)
    return s
def send(s, b):
    s.sendall(b)
def line(s):
    while b"\n" not in s.buf:
        d = s.recv(65536)
        assert d, "closed before a reply line; got %r" % s.buf
        s.buf += d
    l, s.buf = s.buf.split(b"\n", 1)
    return json.loads(l)
def ask(s, b):
    send(s, b)
    return line(s)
def closed(s):
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return True
        if not d:
            return True
def refused(r, words):
    assert r["ok"] is False, r
    assert words in r["error"], (words, r)
exec(sys.argv[1])
PY
client ()
{
  SOCK=$sock python3 $tmpdir/client.py "$1"
}

# still_serving N: a write and a read of the export, and status.
still_serving ()
{
  nbdsh -u "$q" -c "h.pwrite(bytes([$1]) * 4096, $1 * 4096)" \
        -c "assert h.pread(4096, $1 * 4096) == bytes([$1]) * 4096"
  "$ctl" $sock status --json > $tmpdir/st.json
  python3 -c "import json; s = json.load(open('$tmpdir/st.json')); assert s['ok'] is True and all(c['state'] == 'up' for c in s['children'])"
}

protocol ()
{
  local i out
  for i in 0 1 2; do rm -f $tmpdir/c$i.img; truncate -s 1M $tmpdir/c$i.img; done
  child0 file $tmpdir/c0.img
  for i in 1 2; do start_child $i file $tmpdir/c$i.img; done
  start_quorum -P $tmpdir/q.pid -U $tmpdir/q.sock "${quorum_head[@]}" \
      child="$(child_uri 1)" child="$(child_uri 2)" control=$sock \
      -D quorum.control_timeout=2
  still_serving 1

  # Bad requests on one connection: each gets its error, and the
  # connection goes on to answer a good one.
  client '
s = conn()
refused(ask(s, b"garbage\n"), "malformed request")
refused(ask(s, b"{\"command\": \"status\"\n"), "malformed request: incomplete JSON")
refused(ask(s, b"[1, 2]\n"), "not a JSON object")
refused(ask(s, b"{}\n"), "no \"command\" string")
refused(ask(s, b"{\"command\": 7}\n"), "no \"command\" string")
refused(ask(s, b"{\"command\": \"frobnicate\"}\n"), "unknown command \"frobnicate\"")
refused(ask(s, b"{\"command\": \"fr\\u00ffob\\u0001\"}\n"), "unknown command \"fr??ob?\"")
r = ask(s, b"{\"command\": \"status\", \"verbose\": true}\n")
refused(r, "status: unknown key \"verbose\"")
assert r["command"] == "status", r
refused(ask(s, b"{\"command\": \"status\", \"args\": [\"x\"]}\n"), "status: takes no arguments")
refused(ask(s, b"\xff\xfe{}\n"), "malformed request")
refused(ask(s, b"{\"command\": \"help\"} {\"command\": \"help\"}\n"), "malformed request")
refused(ask(s, b"{\"a\":" * 20 + b"1" + b"}" * 20 + b"\n"), "malformed request")
r = ask(s, b"\n  \n{\"command\": \"help\"}\r\n")
assert r["ok"] is True and r["command"] == "help", r
assert [c["name"] for c in r["commands"]] == ["fail", "help", "rate", "replace", "return", "scrub", "status"], r
r = ask(s, b"{\"command\": \"status\", \"args\": []}\n")
assert r["ok"] is True and len(r["children"]) == 3, r
refused(ask(s, b"{\"command\": \"scrub\", \"args\": [1]}\n"), "scrub: \"args\" must be an array of strings")
refused(ask(s, b"{\"command\": \"scrub\", \"args\": \"start\"}\n"), "scrub: \"args\" must be an array of strings")
refused(ask(s, b"{\"command\": \"scrub\"}\n"), "scrub: expected \"start\"")
refused(ask(s, b"{\"command\": \"scrub\", \"args\": [\"frob\"]}\n"), "scrub: expected \"start\"")
refused(ask(s, b"{\"command\": \"scrub\", \"args\": [\"stop\"]}\n"), "scrub stop: no scrub is running")
for a, why in [("--rate=-1", "expected MiB/s"), ("--rate=1e3", "expected MiB/s"),
               ("--rate=2000000", "expected MiB/s"), ("--rate=", "expected MiB/s"),
               ("--offset=1M", "expected a size below the export"), ("--offset=x", "expected a size below the export"),
               ("--length=0", "expected a size above 0"), ("--length=99999999999999999999", "expected a size above 0"),
               ("--frob", "unknown argument"), ("--repair=yes", "unknown argument")]:
    refused(ask(s, json.dumps({"command": "scrub", "args": ["start", a]}).encode() + b"\n"), "scrub start: \x27%s\x27: %s" % (a, why))
refused(ask(s, b"{\"command\": \"scrub\", \"args\": [\"start\", \"--offset=512K\", \"--length=1M\"]}\n"), "goes past the end of the export")
refused(ask(s, b"{\"command\": \"rate\", \"args\": [\"--resync=5x\"]}\n"), "rate: \x27--resync=5x\x27: expected MiB/s")
refused(ask(s, b"{\"command\": \"rate\", \"args\": [\"--scrub=five\"]}\n"), "rate: \x27--scrub=five\x27: expected MiB/s")
r = ask(s, b"{\"command\": \"rate\"}\n")
assert r["ok"] is True and r["scrub"] == 50 * 1048576 and r["resync"] == 100 * 1048576, r
for a, why in [("fail", "expected the index of a child"), ("fail 9", "expected the index of a child, from 0 to 2"),
               ("return x", "expected the index of a child"), ("return 1", "child 1 is not failed"),
               ("replace 1", "expected the index of a child and the URI"), ("replace 7 nbd://x", "expected the index of a child")]:
    refused(ask(s, json.dumps({"command": a.split()[0], "args": a.split()[1:]}).encode() + b"\n"), why)
r = ask(s, b"{\"command\": \"status\"}\n")
assert r["scrub"]["state"] == "idle" and r["scrub"]["rate_limit"] == 50 * 1048576, r
'
  still_serving 2

  # An over-long line: an error reply, then dropped.
  client '
s = conn()
try:
    send(s, b"x" * 70000)
except (BrokenPipeError, ConnectionResetError):
    pass
refused(line(s), "request too long: no newline within 65536 bytes")
assert closed(s)
'
  still_serving 3

  # Half a line and gone; half a line and silence: dropped after
  # control_timeout (2 s here) with an error reply.
  client '
s = conn()
send(s, b"{\"command\": \"sta")
s.close()
s = conn()
send(s, b"{\"command\": \"sta")
t = time.time()
refused(line(s), "request timed out: no newline within 2 s")
assert closed(s)
assert time.time() - t >= 1.5
'
  still_serving 4

  # A client that asks and never reads: dropped once its replies fill
  # the socket and sit unread; meanwhile others are answered.
  client '
s = conn()
s.setblocking(False)
sent = 0
try:
    for i in range(2000):
        sent += s.send(b"{\"command\": \"status\"}\n" * 64)
except BlockingIOError:
    pass
s.setblocking(True)
s.settimeout(20)
other = conn()
r = ask(other, b"{\"command\": \"help\"}\n")
assert r["ok"] is True, r
other.close()
time.sleep(4)
assert closed(s)
'
  still_serving 5

  # More clients than are served at once: the one too many is told.
  client '
held = [conn() for i in range(16)]
for h in held:
    assert ask(h, b"{\"command\": \"help\"}\n")["ok"] is True
s = conn()
refused(line(s), "too many control connections (at most 16 at once)")
assert closed(s)
held[0].close()
time.sleep(0.5)
s = conn()
assert ask(s, b"{\"command\": \"help\"}\n")["ok"] is True
'
  still_serving 6

  # Another uid: the socket (0600) refuses it, and with the mode
  # widened the server does (SO_PEERCRED).
  [ "$(stat -c %a $sock)" = 600 ]
  out=0
  setpriv --reuid=nobody --regid=nogroup --clear-groups \
      "$ctl" $sock status > $tmpdir/nobody.out 2>&1 || out=$?
  cat $tmpdir/nobody.out
  [ $out = 2 ]
  assert_grep "Permission denied" $tmpdir/nobody.out
  chmod 0666 $sock
  out=0
  setpriv --reuid=nobody --regid=nogroup --clear-groups \
      "$ctl" $sock status > $tmpdir/nobody.out 2>&1 || out=$?
  cat $tmpdir/nobody.out
  [ $out = 1 ]
  assert_grep "permission denied: only uid $(id -u) may use this control socket" $tmpdir/nobody.out
  assert_no_grep "children|Version" $tmpdir/nobody.out
  # (Debian's python3, and the script where nobody can read it.)
  install -m 0644 $tmpdir/client.py $ctldir/client.py
  SOCK=$sock setpriv --reuid=nobody --regid=nogroup --clear-groups \
      /usr/bin/python3 $ctldir/client.py '
s = conn()
refused(line(s), "permission denied")
assert closed(s)
'
  chmod 0600 $sock
  still_serving 7

  # nbdkit-quorum-ctl: 0 done, 1 refused, 2 usage or connection.
  "$ctl" $sock status > $tmpdir/ctl.out
  assert_grep "^ +State : healthy$" $tmpdir/ctl.out
  "$ctl" $sock help > $tmpdir/ctl.out
  assert_grep "^status +" $tmpdir/ctl.out
  "$ctl" --timeout=5 $sock status --json > $tmpdir/ctl.out
  python3 -c "import json; assert json.load(open('$tmpdir/ctl.out'))['ok'] is True"
  for args in "frobnicate" "frobnicate a --b" ; do
    out=0
    "$ctl" $sock $args > $tmpdir/ctl.out 2> $tmpdir/ctl.err || out=$?
    cat $tmpdir/ctl.out $tmpdir/ctl.err
    [ $out = 1 ]
    assert_grep 'frobnicate: unknown command "frobnicate"' $tmpdir/ctl.err
    python3 -c "import json; r = json.load(open('$tmpdir/ctl.out')); assert r['ok'] is False"
  done
  for args in "" "$sock" "$sock status --frob" "--frob $sock status" \
              "--timeout=0 $sock status" "$tmpdir/nothing status" \
              "$tmpdir/c1.img status"; do
    out=0
    "$ctl" $args > $tmpdir/ctl.out 2>&1 || out=$?
    cat $tmpdir/ctl.out
    [ $out = 2 ]
  done
  "$ctl" --help | grep -q "^usage: nbdkit-quorum-ctl"
  still_serving 8
}

for_each_form protocol
