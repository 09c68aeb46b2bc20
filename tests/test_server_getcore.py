"""The compiled GET/HEAD path (_fastpath.getcore) inside a real node, against the Python
path of another real node: node A runs with the core (the default), node B with
STORAGE_NODE_GET_CORE=off. Both hold the same chunks (same bytes, same xattrs, same
mtime), old enough to be cached and read once, so that A's core answers what it can.
The same raw requests then go to both, and the replies (Date masked), the access log
lines (timings, pid and peer port masked) and the /stat counters must be the same."""
import hashlib
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import time

import pytest
from nodeutil import Node, chunk_id

PROBE = b"GET /info HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
DATE = re.compile(rb"\r\nDate: [^\r\n]*\r\n", re.I)
LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.I)
MTIME = 1_700_000_000  # both copies of a chunk get this mtime: same Last-Modified
BIG = 3 << 20


def _body(n, size):
    return random.Random(n).randbytes(size)


# name -> (chunk id, body)
CHUNKS = {name: (chunk_id(0x6000 + i), _body(i, size)) for i, (name, size) in enumerate([
    ("empty", 0), ("one", 1), ("small", 5000), ("edge", 65536), ("over", 65537),
    ("big", BIG), ("ext", 300), ("legacy", 3), ("nohash", 40), ("badsize", 5),
    ("nosize", 7), ("foreign", 11),
    # changed by the tests below (POST, DELETE, PUT again): never read by the others
    ("posted", 1000), ("deleted", 2000), ("replaced", 3000), ("replaced_big", 100_000),
])}
MISSING = chunk_id(0x6FFF)


def _set_xattrs(path, attrs):
    for key, value in attrs.items():
        os.setxattr(path, key, value if isinstance(value, bytes) else value.encode())


def _write_file(node, cid, body):
    path = node.chunk_path(cid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)
    return path


def _lay_down(node):
    """The chunks of CHUNKS on ``node``, through PUT/POST where a client can."""
    for name, (cid, body) in CHUNKS.items():
        if name == "legacy":  # written by a 7.x server: no full-path key
            _set_xattrs(_write_file(node, cid, body), {
                "user.grid.chunk.id": cid, "user.grid.content.container": "ab" * 32,
                "user.grid.content.path": "legacy obj", "user.grid.content.version": "9",
                "user.grid.content.id": "ff00",
                "user.grid.chunk.hash": hashlib.md5(body).hexdigest().upper(),
                "user.grid.chunk.size": str(len(body)), "user.grid.chunk.position": "0",
                "user.grid.content.chunk_method": "plain/nb_copy=3",
                "user.grid.content.storage_policy": "THREECOPIES",
                "user.grid.oio.version": "4.2"})
        elif name in ("nohash", "badsize", "nosize", "foreign"):
            attrs = {f"user.oio.content.fullpath:{cid}": b"AC/CT/p%C3%A9/7/00AA",
                     "user.grid.chunk.hash": hashlib.md5(body).hexdigest().upper(),
                     "user.grid.chunk.size": str(len(body)),
                     "user.grid.chunk.position": "1.2",
                     "user.grid.content.chunk_method": "ec/algo=liberasurecode_rs_vand,k=6,m=3",
                     "user.grid.content.storage_policy": "EC"}
            if name == "nohash":
                del attrs["user.grid.chunk.hash"]  # a GET is fine, a HEAD is a 500
            elif name == "badsize":
                attrs["user.grid.chunk.size"] = "10"  # 412 for GET and HEAD
            elif name == "nosize":
                del attrs["user.grid.chunk.size"]
            _set_xattrs(_write_file(node, cid, body), attrs)
        else:
            extra = {"X-oio-Ext-Color": "blue%21", "X-oio-req-id": "lay-down"} \
                if name == "ext" else {}
            status = node.put(cid, body, extra)[0]
            assert status == 201, (name, status)
            if name == "ext":
                status = node.request("POST", f"/{cid}", headers={"X-Oio-Ext-Shape": "round"})[0]
                assert status == 200
    for cid, _ in CHUNKS.values():
        os.utime(node.chunk_path(cid), (MTIME, MTIME))


class Pair:
    """Node A (getcore on) and node B (getcore off), fed the same requests."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.nodes = (a, b)
        self.stat_bytes = {}  # port -> body bytes of the /stat replies read so far

    # ---- raw conversations ---------------------------------------------------------
    def both(self, data, methods, **kw):
        """Send ``data`` ({HOST} = each node's own address) on one new connection to
        each node, read one reply per entry of ``methods``; both must agree."""
        got_a = converse(self.a, data, methods, **kw)
        got_b = converse(self.b, data, methods, **kw)
        assert got_a == got_b, f"core and Python path differ on {data!r}"
        return got_a

    def sequence(self, requests):
        """One keep-alive connection per node, one request after the other (each sent
        once the previous reply is in); -> the replies, equal on both nodes."""
        outs = []
        for node in self.nodes:
            with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
                wire = Wire(sock)
                replies = []
                for data, method in requests:
                    sock.sendall(data.replace(b"{HOST}", node.host.encode()))
                    replies.append(wire.reply(method == "HEAD"))
                outs.append(replies)
        for n, (x, y) in enumerate(zip(*outs)):
            assert x == y, f"request {n} {requests[n][0]!r} differs"
        return outs[0]

    # ---- what the nodes remember ---------------------------------------------------
    def _synced_lines(self, node):
        """The node's access lines once every reply sent so far is logged: one worker
        logs in order, so this request's line comes after all earlier ones."""
        tag = "sync-%d" % time.monotonic_ns()
        node.request("GET", "/info", headers={"X-oio-req-id": tag})
        lines = node.access_lines(containing=tag)
        assert any(tag in line for line in lines)
        return lines

    def log_marks(self):
        return [len(self._synced_lines(node)) for node in self.nodes]

    def log_since(self, marks):
        """The access lines written since ``marks``, masked; both nodes must agree."""
        outs = []
        for node, mark in zip(self.nodes, marks):
            lines = self._synced_lines(node)[mark:-1]
            outs.append([mask_log(node, line) for line in lines])
        assert outs[0] == outs[1]
        return outs[0]

    def counters(self):
        """Each node's /stat counters but the timings; rep.bread without the bytes
        of the earlier /stat replies (they hold the timings, of any length)."""
        outs = []
        for node in self.nodes:
            values, size = stat_counters(node)
            values["rep.bread"] -= self.stat_bytes.get(node.port, 0)
            self.stat_bytes[node.port] = self.stat_bytes.get(node.port, 0) + size
            outs.append(values)
        return outs


class Wire:
    """Replies read off a socket, framed by Content-Length."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        got = self.sock.recv(1 << 16)
        if not got:
            raise EOFError
        self.buf += got

    def reply(self, head_only):
        """(masked head, body) of the next reply; ("EOF", what was there) if the
        connection ended first."""
        try:
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                self._fill()
            head = bytes(self.buf[:end + 4])
            del self.buf[:end + 4]
            status = int(head[9:12])
            match = LENGTH.search(head)
            if head_only or status in (204, 304) or status < 200:
                length = 0
            elif match:
                length = int(match.group(1))
            else:
                return DATE.sub(b"\r\nDate: -\r\n", head), self.to_eof()
            while len(self.buf) < length:
                self._fill()
            body = bytes(self.buf[:length])
            del self.buf[:length]
        except EOFError:
            out = ("EOF", bytes(self.buf))
            self.buf.clear()
            return out
        return DATE.sub(b"\r\nDate: -\r\n", head), body

    def to_eof(self):
        """Whatever comes until the peer closes (bounded by the socket timeout)."""
        try:
            while True:
                self._fill()
        except (EOFError, ConnectionResetError):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def converse(node, data, methods, shut=False):
    """Send ``data`` to ``node`` and read len(methods) replies, then find out whether
    the connection is still open (it answers a probe) or closed (and what came last)."""
    data = data.replace(b"{HOST}", node.host.encode())
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        wire = Wire(sock)
        # a 418 names the node's own address: the same text for both nodes
        replies = [(head, body.replace(node.host.encode(), b"{HOST}"))
                   if head[:13] == b"HTTP/1.1 418 " else (head, body)
                   for head, body in (wire.reply(m == "HEAD") for m in methods)]
        if shut or b"\r\nconnection: close\r\n" in replies[-1][0].lower() \
                or replies[-1][0] == "EOF":
            return replies, ("closed", wire.to_eof())
        try:
            sock.sendall(PROBE.replace(b"{HOST}", node.host.encode()))
            probe = wire.reply(False)
        except (BrokenPipeError, ConnectionResetError):
            probe = ("EOF", b"")
        state = "open" if probe[0] != "EOF" and probe[0].startswith(b"HTTP/1.1 200") \
            else "closed"
        return replies, (state, bytes(wire.buf))


ACCESS = re.compile(r"(\d+) (access INF - \S+) (\S+):\d+ (\S+ \d+) (\d+) (\d+) (\d+) "
                    r"(- .*) (\S+) http (\d+) (put:.*)\Z")


def mask_log(node, line):
    """An access line without what differs between two nodes or two runs: pid, the
    node's address, the peer's port, the two timings (and a /stat reply's size)."""
    match = ACCESS.match(line.replace(node.host, "HOST"))
    assert match, line
    (_, start, peer, request, _, size, size_in, reqid, path, _, rest) = match.groups()
    if path.startswith("/stat"):
        size = "SIZE"  # its body holds the timings
    return " ".join(["PID", start, peer + ":PORT", request, "MICROS", size, size_in, reqid,
                     path, "http", "TTFB", rest])


def stat_counters(node):
    """-> ({counter: value} but the timings, the reply's body size)."""
    _, _, body = node.request("GET", "/stat")
    values = {}
    for line in body.decode().splitlines():
        parts = line.split()
        if parts and parts[0] == "counter" and not parts[1].startswith("req.time") \
                and parts[1] != "connections":
            values[parts[1]] = int(parts[2])
    return values, len(body)


def get(cid, method="GET", extra=b"", version=b"1.1", path=None):
    target = path if path is not None else b"/" + cid.encode()
    host = b"Host: {HOST}\r\n" if version == b"1.1" else b""
    return method.encode() + b" " + target + b" HTTP/" + version + b"\r\n" + host + extra \
        + b"\r\n"


def _wait_old_enough(nodes):
    """Until every chunk's ctime is over the racy second (RACY_SECONDS) old."""
    newest = max(os.stat(node.chunk_path(cid)).st_ctime
                 for node in nodes for cid, _ in CHUNKS.values())
    delay = newest + 1.1 - time.time()
    if delay > 0:
        time.sleep(min(delay, 3))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("getcore")
    nodes = []
    try:
        for sub, env in (("a", None), ("b", {"STORAGE_NODE_GET_CORE": "off"})):
            (base / sub).mkdir()
            nodes.append(Node(base / sub, workers=1, env=env).start())
        for node in nodes:
            _lay_down(node)
        _wait_old_enough(nodes)
        for node in nodes:  # one read through the Python path caches each chunk
            for name, (cid, body) in CHUNKS.items():
                status, _, data = node.request("GET", f"/{cid}")
                assert status == (412 if name == "badsize" else 200), name
                assert name == "badsize" or data == body
        yield Pair(*nodes)
    finally:
        for node in nodes:
            node.kill()


# ---- every chunk, whole -------------------------------------------------------------
READABLE = [n for n in CHUNKS if n not in ("posted", "deleted", "replaced", "replaced_big")]


@pytest.mark.parametrize("name", READABLE)
def test_get_and_head_of_each_chunk(pair, name):
    cid, body = CHUNKS[name]
    marks = pair.log_marks()
    for method, extra in (("GET", b""), ("HEAD", b""),
                          ("HEAD", b"X-oio-check-hash: true\r\n"),
                          ("HEAD", b"X-oio-check-hash: false\r\n"),
                          ("GET", b"Connection: close\r\n")):
        replies, state = pair.both(get(cid, method, extra), [method])
        head, data = replies[0]
        if name == "badsize":
            assert head.startswith(b"HTTP/1.1 412 ")
        elif name == "nohash" and method == "HEAD":
            assert head.startswith(b"HTTP/1.1 500 ")
        else:
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert data == (b"" if method == "HEAD" else body)
            assert b"\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n" in head
        assert state[0] == ("closed" if b"close" in extra else "open")
    assert len(pair.log_since(marks)) == 5 + 4  # and four probes


def test_http_client_sees_the_same(pair):
    for name in ("small", "ext", "legacy", "over"):
        cid, body = CHUNKS[name]
        for method in ("GET", "HEAD"):
            got = []
            for node in pair.nodes:
                status, headers, data = node.request(method, f"/{cid.lower()}",
                                                     headers={"X-Trans-Id": "client-1"})
                headers.pop("date")
                got.append((status, headers, data))
            assert got[0] == got[1]
            assert got[0][0] == 200 and got[0][2] == (body if method == "GET" else b"")
            assert got[0][1]["x-oio-req-id"] == "client-1"
    headers = got[0][1]
    assert headers["x-oio-chunk-meta-content-path"] == "obj"  # "over" came by PUT
    replies, _ = pair.both(get(CHUNKS["ext"][0]), ["GET"])
    assert b"\r\nX-Oio-Ext-Color: blue!\r\n" in replies[0][0]
    assert b"\r\nX-Oio-Ext-Shape: round\r\n" in replies[0][0]


# ---- ranges ---------------------------------------------------------------------------
RANGES = [
    b"bytes=0-0", b"bytes=0-9", b"bytes=10-19", b"bytes=4990-4999", b"bytes=4999-",
    b"bytes=4999-4999", b"bytes=0-4999", b"bytes=0-", b"bytes=-1", b"bytes=-5000",
    b"bytes=-5001", b"bytes=-999999", b"bytes=100-99999999", b"bytes=5000-",
    b"bytes=5000-5000", b"bytes=9999-", b"bytes=-0", b"bytes=-00", b"bytes=00-01",
    b"bytes=0000000000000000001-2", b"bytes=123456789012345678-",
    b"bytes=1234567890123456789-", b"bytes=-1234567890123456789",
    b"bytes=1-1234567890123456789", b"bytes=9-3", b"bytes=-", b"bytes=0-1,3-4",
    b"bytes=-1,-2", b"bytes= 0-1", b"bytes=0-1 ", b"bytes=0 -1", b"Bytes=0-1",
    b"BYTES=0-1", b"items=0-1", b"bytes=+1-2", b"bytes=1--2", b"bytes=0x10-",
    b"bytes=", b"bytes", b"=0-1", b"", b"bytes=\xb9-2", b"bytes=1-2\t",
]


def test_ranges_of_a_small_chunk(pair):
    cid, body = CHUNKS["small"]
    marks = pair.log_marks()
    requests = [(get(cid, extra=b"Range: " + value + b"\r\n"), "GET") for value in RANGES]
    requests += [(get(cid, "HEAD", b"Range: " + value + b"\r\n"), "HEAD")
                 for value in (b"bytes=0-9", b"bytes=9999-", b"bytes=-0")]
    replies = pair.sequence(requests)
    statuses = {int(head[9:12]) for head, _ in replies}
    assert statuses == {200, 206, 416}
    head, data = replies[RANGES.index(b"bytes=10-19")]
    assert head.startswith(b"HTTP/1.1 206 ") and data == body[10:20]
    assert b"\r\nContent-Range: bytes 10-19/5000\r\n" in head
    head, data = replies[RANGES.index(b"bytes=-5001")]
    assert b"\r\nContent-Range: bytes 0-4999/5000\r\n" in head and data == body
    assert replies[RANGES.index(b"bytes=5000-")][0].startswith(b"HTTP/1.1 416 ")
    assert len(pair.log_since(marks)) == len(requests)


@pytest.mark.parametrize("name", ["empty", "one", "edge", "over", "big", "nosize", "legacy"])
def test_ranges_of_other_sizes(pair, name):
    cid, body = CHUNKS[name]
    size = len(body)
    values = [b"bytes=0-0", b"bytes=-1", b"bytes=-0", b"bytes=0-", b"bytes=1-",
              b"bytes=%d-" % (size - 1), b"bytes=%d-" % size, b"bytes=-%d" % size,
              b"bytes=-%d" % (size + 1), b"bytes=0-%d" % (size - 1),
              b"bytes=1-%d" % (size + 5), b"bytes=65535-65536", b"bytes=0-65536",
              b"bytes=1-65537", b"bytes=0-1,2-3"]
    requests = [(get(cid, extra=b"Range: " + v + b"\r\n"), "GET") for v in values]
    replies = pair.sequence(requests)
    for value, (head, data) in zip(values, replies):
        match = re.search(rb"\r\nContent-Range: bytes (\d+)-(\d+)/(\d+)\r\n", head)
        if head.startswith(b"HTTP/1.1 206 "):
            first, last, total = map(int, match.groups())
            assert total == size and data == body[first:last + 1], value
        elif head.startswith(b"HTTP/1.1 200 "):
            assert match is None and data == body, value


def test_range_and_id_forms_on_one_connection_each(pair):
    """Ranges sent on a fresh connection each (the core sees them as the first read)."""
    cid, _ = CHUNKS["over"]
    for value in (b"bytes=1-65536", b"bytes=-65536", b"bytes=65536-", b"bytes=70000-",
                  b"bytes=0-0", b"bytes=3-2"):
        pair.both(get(cid, extra=b"Range: " + value + b"\r\n"), ["GET"])


# ---- request ids, versions, connection handling, Host ------------------------------
def test_request_id_echo(pair):
    cid, _ = CHUNKS["small"]
    marks = pair.log_marks()
    cases = [b"X-oio-req-id: abc\r\n", b"X-Trans-Id: trans-1\r\n",
             b"X-oio-req-id: first\r\nX-Trans-Id: second\r\n",
             b"X-oio-req-id:\r\nX-Trans-Id: second\r\n",
             b"X-oio-req-id: " + b"r" * 63 + b"\r\n",
             b"X-oio-req-id: " + b"s" * 64 + b"\r\n",
             b"X-oio-req-id: " + b"t" * 200 + b"\r\n",
             b"X-Trans-Id: " + b"u" * 100 + b"\r\n",
             b"x-OIO-REQ-ID: MiXeD\r\n",
             b"X-oio-req-id: caf\xe9-\xff\r\n",
             b"X-oio-req-id: a\tb\r\n", b"X-oio-req-id: with  spaces \r\n"]
    for extra in cases:
        for method in ("GET", "HEAD"):
            replies, _ = pair.both(get(cid, method, extra), [method])
            assert replies[0][0].startswith(b"HTTP/1.1 200 ")
    replies, _ = pair.both(get(cid, extra=cases[6]), ["GET"])
    assert b"\r\nX-Oio-Req-Id: " + b"t" * 63 + b"\r\n" in replies[0][0]
    lines = pair.log_since(marks)
    assert any(" " + "t" * 63 + " " in line for line in lines)


@pytest.mark.parametrize("version, extra, state", [
    (b"1.1", b"", "open"),
    (b"1.1", b"Connection: close\r\n", "closed"),
    (b"1.1", b"Connection: Close\r\n", "closed"),
    (b"1.1", b"Connection: keep-alive\r\n", "open"),
    (b"1.1", b"Connection: keep-alive, close\r\n", "closed"),
    (b"1.1", b"Connection: TE\r\n", "open"),
    (b"1.0", b"", "closed"),
    (b"1.0", b"Connection: keep-alive\r\n", "open"),
    (b"1.0", b"Connection: Keep-Alive\r\n", "open"),
    (b"1.0", b"Host: {HOST}\r\n", "closed"),
    (b"1.0", b"Host: {HOST}\r\nConnection: keep-alive\r\n", "open"),
])
def test_versions_and_keep_alive(pair, version, extra, state):
    cid, body = CHUNKS["edge"]
    for method in ("GET", "HEAD"):
        replies, got = pair.both(get(cid, method, extra, version), [method])
        assert replies[0][0].startswith(b"HTTP/1.1 200 ")
        assert got[0] == state


@pytest.mark.parametrize("host, status", [
    (b"{HOST}", 200), (b"rawx-test", 200), (b"127.0.0.1:1", 418), (b"localhost", 418),
    (b"RAWX-TEST", 418), (b"127.0.0.1", 418), (b"[::1]:80", 418), (b"", None),
])
def test_host_values(pair, host, status):
    cid, _ = CHUNKS["small"]
    data = b"GET /" + cid.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    replies, _ = pair.both(data, ["GET"])
    if status is not None:
        assert replies[0][0].startswith(b"HTTP/1.1 %d " % status)
    data = b"HEAD /" + cid.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
    pair.both(data, ["HEAD"])


def test_two_hosts_and_no_host(pair):
    cid, _ = CHUNKS["small"]
    pair.both(b"GET /" + cid.encode() + b" HTTP/1.1\r\nHost: {HOST}\r\nHost: {HOST}\r\n\r\n",
              ["GET"])
    pair.both(b"GET /" + cid.encode() + b" HTTP/1.1\r\n\r\n", ["GET"])


# ---- what the chunk id may look like ------------------------------------------------
def _percent(cid):
    return ("/" + cid[:-2] + "%%%02X" % ord(cid[-2]) + cid[-1]).encode()


@pytest.mark.parametrize("path, status", [
    (lambda cid: ("/" + cid.lower()).encode(), 200),
    (lambda cid: ("//" + cid).encode(), 200),
    (lambda cid: ("///" + cid.lower()).encode(), 200),
    (lambda cid: ("/" + cid[:32].lower() + cid[32:]).encode(), 200),
    (_percent, None),
    (lambda cid: ("/%2F" + cid).encode(), None),
    (lambda cid: ("/" + cid + "?x=1&y").encode(), None),
    (lambda cid: ("/" + cid + "?").encode(), None),
    (lambda cid: ("/" + cid + "/").encode(), None),
    (lambda cid: ("/" + cid + "0").encode(), None),
    (lambda cid: ("/" + cid[:-1]).encode(), None),
    (lambda cid: ("/" + cid[:24]).encode(), None),
    (lambda cid: ("/" + cid[:-1] + "G").encode(), None),
    (lambda cid: ("/./" + cid).encode(), None),
    (lambda cid: ("/" + MISSING).encode(), 404),
    (lambda cid: ("/" + MISSING.lower()).encode(), 404),
    (lambda cid: ("/" + MISSING[:24]).encode(), 404),
    (lambda cid: ("http://{HOST}/" + cid).encode(), None),
])
def test_chunk_id_forms(pair, path, status):
    cid, _ = CHUNKS["one"]
    target = path(cid)
    for method in ("GET", "HEAD"):
        replies, _ = pair.both(get(cid, method, path=target), [method])
        if status is not None and method == "GET":
            assert replies[0][0].startswith(b"HTTP/1.1 %d " % status), target


def test_missing_chunk_and_other_methods(pair):
    marks = pair.log_marks()
    for data, methods in (
            (get(MISSING), ["GET"]), (get(MISSING, "HEAD"), ["HEAD"]),
            (get(MISSING, extra=b"Range: bytes=0-1\r\n"), ["GET"]),
            (get(CHUNKS["small"][0], "OPTIONS"), ["OPTIONS"]),
            (get(CHUNKS["small"][0], "PUT", b"Content-Length: 0\r\n"), ["PUT"]),
            (get(CHUNKS["small"][0], extra=b"Content-Length: 0\r\n"), ["GET"]),
            (get(CHUNKS["small"][0], extra=b"Content-Length: 3\r\n") + b"abc", ["GET"]),
            (get(CHUNKS["small"][0], extra=b"Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
             ["GET"]),
            (get(CHUNKS["small"][0], extra=b"Expect: 100-continue\r\n"), ["GET"]),
            (get(CHUNKS["small"][0], version=b"2.0"), ["GET"]),
            (get(CHUNKS["small"][0]).replace(b"\r\n\r\n", b"\r\n folded\r\n\r\n"), ["GET"]),
            (b"\r\n" + get(CHUNKS["small"][0]), ["GET"]),
            (b"get /" + CHUNKS["small"][0].encode() + b" HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
             ["GET"])):
        replies, _ = pair.both(data, methods)
    assert replies[0][0].startswith(b"HTTP/1.1 ")
    assert pair.both(get(MISSING), ["GET"])[0][0][0].startswith(b"HTTP/1.1 404 ")
    pair.log_since(marks)


def test_odd_headers_and_targets(pair):
    cid, _ = CHUNKS["small"]
    marks = pair.log_marks()
    before = pair.counters()
    extras = [b"Range: bytes=0-1\r\nRange: bytes=2-3\r\n", b"Range:\r\n",
              b"Range:   bytes=1-2   \r\n", b"X-oio-req-id: \x01\r\n", b"X-oio-req-id: \x7f\r\n",
              b"Connection: upgrade\r\nUpgrade: h2c\r\n", b"Transfer-Encoding: identity\r\n",
              b"Content-Length: 00\r\n", b"Content-Length: 0\r\nContent-Length: 0\r\n",
              b"Expect: something\r\n", b"Cookie: " + b"c" * 3000 + b"\r\n",
              b"X-oio-req-id: " + b"\xff" * 70 + b"\r\n"]
    for extra in extras:
        for method in ("GET", "HEAD"):
            for version in (b"1.1", b"1.0"):
                pair.both(get(cid, method, extra, version), [method])
    for target in (b"/" + cid.encode() + b"#frag", b"/" + cid.encode() + b";p", b"*",
                   b"/" * 150 + cid.encode(), b"/" * 300 + cid.encode()):
        pair.both(get(cid, path=target), ["GET"])
    after = pair.counters()
    assert after[0] == after[1]
    assert after[0]["req.hits"] - before[0]["req.hits"] > len(extras) * 4
    pair.log_since(marks)


# ---- several requests on one connection ---------------------------------------------
def test_pipelined_heads(pair):
    small, _ = CHUNKS["small"]
    one, body = CHUNKS["one"]
    marks = pair.log_marks()
    replies, state = pair.both(get(small) + get(one, "HEAD"), ["GET", "HEAD"])
    assert [r[0][:12] for r in replies] == [b"HTTP/1.1 200"] * 2 and state[0] == "open"
    replies, state = pair.both(get(one) + get(small, extra=b"Range: bytes=1-2\r\n")
                               + get(MISSING) + get(one, extra=b"Connection: close\r\n"),
                               ["GET"] * 4)
    assert [r[0][9:12] for r in replies] == [b"200", b"206", b"404", b"200"]
    assert replies[0][1] == body and state == ("closed", b"")
    # a whole head with the start of the next one in the same read
    data = get(one) + get(small)
    pair.both(data, ["GET", "GET"])
    pair.both(get(one, version=b"1.0") + get(one), ["GET"])  # closed after the first
    pair.both(get(CHUNKS["big"][0], "HEAD") + get(CHUNKS["edge"][0]), ["HEAD", "GET"])
    pair.both(get(one), ["GET"], shut=True)  # the client half-closed after its request
    assert len(pair.log_since(marks)) >= 10


def test_keep_alive_sequence(pair):
    rng = random.Random(7)
    names = ["empty", "one", "small", "edge", "over", "ext", "legacy", "nohash", "badsize",
             "nosize", "foreign"]
    requests = []
    for i in range(60):
        name = rng.choice(names)
        cid = CHUNKS[name][0]
        method = rng.choice(["GET", "GET", "HEAD"])
        extra = b""
        if rng.random() < 0.3:
            extra += b"Range: bytes=%d-%d\r\n" % (rng.randrange(70000), rng.randrange(70000))
        if rng.random() < 0.3:
            extra += b"X-oio-req-id: seq-%d\r\n" % i
        if rng.random() < 0.1:
            cid = MISSING
        requests.append((get(cid, method, extra), method))
    marks = pair.log_marks()
    before = pair.counters()
    pair.sequence(requests)
    after = pair.counters()
    assert after[0] == after[1]
    delta = {k: after[0][k] - before[0][k] for k in after[0]}
    gets = sum(1 for _, m in requests if m == "GET")
    assert delta["req.hits.get"] == gets
    assert delta["req.hits.head"] == len(requests) - gets
    assert len(pair.log_since(marks)) == len(requests) + 2  # and the two /stat


# ---- changes: the core must never answer with what was -----------------------------
def test_post_changes_metadata(pair):
    cid, body = CHUNKS["posted"]
    for _ in range(2):
        pair.both(get(cid), ["GET"])  # cached by now: the core answers on A
    for n, color in enumerate(["red", "green", "blue"]):
        for node in pair.nodes:
            status = node.request("POST", f"/{cid}", headers={"X-Oio-Ext-Color": color})[0]
            assert status == 200
        # no wait: the very next reads must carry the new value
        for method in ("GET", "HEAD"):
            replies, _ = pair.both(get(cid, method), [method])
            assert b"\r\nX-Oio-Ext-Color: " + color.encode() + b"\r\n" in replies[0][0]
        if n == 1:  # and again once the new version is old enough to be cached
            time.sleep(1.1)
            for _ in range(2):
                replies, _ = pair.both(get(cid), ["GET"])
                assert b"\r\nX-Oio-Ext-Color: green\r\n" in replies[0][0]


def test_delete_then_put_again(pair):
    for name in ("deleted", "replaced", "replaced_big"):
        cid, body = CHUNKS[name]
        for _ in range(2):
            replies, _ = pair.both(get(cid), ["GET"])
            assert replies[0][1] == body
        for node in pair.nodes:
            assert node.request("DELETE", f"/{cid}")[0] == 204
        for method in ("GET", "HEAD"):
            replies, _ = pair.both(get(cid, method), [method])
            assert replies[0][0].startswith(b"HTTP/1.1 404 ")
        if name == "deleted":
            continue
        new = bytes(reversed(body))  # same size, other bytes
        for node in pair.nodes:
            assert node.put(cid, new)[0] == 201
            os.utime(node.chunk_path(cid), (MTIME, MTIME))
        replies, _ = pair.both(get(cid), ["GET"])
        assert replies[0][1] == new
        replies, _ = pair.both(get(cid, extra=b"Range: bytes=0-99\r\n"), ["GET"])
        assert replies[0][1] == new[:100]


def test_file_changed_behind_the_nodes_back(pair):
    """An xattr set on disk (any change moves the ctime) shows at once."""
    cid, body = CHUNKS["posted"]
    pair.both(get(cid), ["GET"])
    for node in pair.nodes:
        os.setxattr(node.chunk_path(cid), "user.oio.ext.Disk", b"yes")
    replies, _ = pair.both(get(cid, "HEAD"), ["HEAD"])
    assert b"\r\nX-Oio-Ext-Disk: yes\r\n" in replies[0][0]


# ---- a big reply to a slow reader (the core's PENDING path on A) -------------------
def slow_get(node, data, delay_reads=40):
    """Read a big reply through a small receive window, sleeping between the first
    reads so that the node's socket fills up; -> (masked head, body)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    with sock:
        sock.connect(("127.0.0.1", node.port))
        sock.sendall(data.replace(b"{HOST}", node.host.encode()))
        got = bytearray()
        want = None
        for i in range(100_000):
            if want is None and b"\r\n\r\n" in got:
                head = got[:got.index(b"\r\n\r\n") + 4]
                want = len(head) + int(LENGTH.search(head).group(1))
            if want is not None and len(got) >= want:
                break
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            got += chunk
            if i < delay_reads:
                time.sleep(0.01)
        head, _, body = bytes(got).partition(b"\r\n\r\n")
        return DATE.sub(b"\r\nDate: -\r\n", head + b"\r\n\r\n"), body


@pytest.mark.parametrize("extra, span", [
    (b"", (0, BIG)), (b"Range: bytes=1000000-\r\n", (1000000, BIG)),
    (b"Range: bytes=-2000000\r\nX-oio-req-id: slow\r\n", (BIG - 2000000, BIG)),
    (b"Connection: close\r\n", (0, BIG)),
])
def test_big_chunk_to_a_slow_reader(pair, extra, span):
    cid, body = CHUNKS["big"]
    marks = pair.log_marks()
    want = body[span[0]:span[1]]
    got = []
    for node in pair.nodes:
        head, data = slow_get(node, get(cid, extra=extra))
        assert data == want
        got.append((head, data))
    assert got[0] == got[1]
    lines = pair.log_since(marks)
    assert len(lines) == 1 and f" {len(want)} 0 " in lines[0]


# ---- the counters --------------------------------------------------------------------
def test_counters_after_the_same_requests(pair):
    before = pair.counters()
    cid, _ = CHUNKS["small"]
    for data, methods in ((get(cid), ["GET"]), (get(cid, "HEAD"), ["HEAD"]),
                          (get(cid, extra=b"Range: bytes=0-99\r\n"), ["GET"]),
                          (get(cid, extra=b"Range: bytes=99999-\r\n"), ["GET"]),
                          (get(MISSING), ["GET"]),
                          (get(cid) + get(cid, "HEAD"), ["GET", "HEAD"])):
        pair.both(data, methods)
    after = pair.counters()
    assert after[0] == after[1]
    delta = {k: after[0][k] - before[0][k] for k in after[0]}
    assert delta["req.hits.get"] == 5
    assert delta["req.hits.info"] == 6 and delta["req.hits.stat"] == 1  # probes, /stat
    assert delta["req.hits.head"] == 2
    assert delta["rep.hits.404"] == 1 and delta["rep.hits.4xx"] == 2
    assert delta["rep.bread"] >= 2 * 5000 + 100  # two whole GETs, a range, probes


# ---- is the core really answering on A? ----------------------------------------------
def test_node_a_answers_through_the_core(pair):
    """strace A's and B's worker during one small GET: the core sends head and body
    with one sendmsg(2), the Python path with send(2) (sendto)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    if os.environ.get("STORAGE_NODE_PURE") == "1":
        pytest.skip("the pure twin sends with send(2) like the Python path")
    cid, _ = CHUNKS["small"]
    calls = []
    for node in pair.nodes:
        pids = node.worker_pids()
        assert len(pids) == 1
        out = node.tmp_path / "strace.out"
        tracer = subprocess.Popen(["strace", "-e", "trace=sendmsg,sendto",
                                   "-o", str(out), "-p", str(pids[0])],
                                  stderr=subprocess.PIPE)
        try:
            # strace says "Process N attached" once it is; it exits if it cannot
            ready, _, _ = select.select([tracer.stderr], [], [], 5)
            said = tracer.stderr.readline().decode() if ready else ""
            if "attached" not in said:
                pytest.skip("cannot trace the node: " + said)
            for _ in range(3):
                pair.both(get(cid, extra=b"Connection: close\r\n"), ["GET"])
            time.sleep(0.2)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(5)
        calls.append(out.read_text())
    assert "sendmsg(" in calls[0]
    assert "sendmsg(" not in calls[1] and "sendto(" in calls[1]
