"""The compiled GET/HEAD path (_fastpath.getcore) and its twin, on real TCP sockets on
127.0.0.1 and real files: what it answers must be byte for byte what the Python path
(build_head + the file) answers, and what it declines must leave the socket untouched."""
import os
import re
import select
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import import_twin, twin_params
from storage.accesslog import format_line, open_log
from storage.http.response import build_head, encode_fields
from storage.rawx.ranges import parse_range as reference_range
from storage.stats import INDEX, ROW, SharedStats

CID = "0123456789ABCDEF" * 4
FIELDS = encode_fields([("X-Oio-Chunk-Meta-Chunk-Id", CID),
                        ("X-Oio-Chunk-Meta-Chunk-Hash", "00" * 16),
                        ("Last-Modified", "Sun, 22 Nov 2026 02:00:00 GMT")])
HOST = "127.0.0.1:6009"
DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


@pytest.fixture(params=twin_params("getcore"))
def mod(request):
    return import_twin(request.param)


def connected():
    """(server socket, non-blocking, as a worker holds it; client socket)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=10)
        server, _ = listener.accept()
    server.setblocking(False)
    return server, client


@pytest.fixture
def pair():
    server, client = connected()
    yield server, client
    server.close()
    client.close()


class Volume:
    def __init__(self, root, mod, small_file=65536, hosts=(HOST,), ports=(), node=False):
        """``node``: the core's in-flight figures are every row's (its "row" slot)."""
        self.root = root
        self.stats = SharedStats(2)
        self.row = self.stats.row(1)
        slots = dict(INDEX, base=self.row.base, **({"row": ROW} if node else {}))
        self.core = mod.GetCore((str(root), 3, 1), hosts, self.row.values, slots,
                                small_file, 16, wildcard_ports=ports)

    def path(self, cid=CID):
        return self.root / cid[:3] / cid

    def put(self, body, cid=CID, expected="same", head_ok=True, fields=FIELDS):
        path = self.path(cid)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
        self.learn(cid, len(body) if expected == "same" else expected, head_ok, fields)
        return path

    def learn(self, cid=CID, expected=None, head_ok=True, fields=FIELDS):
        st_ = os.stat(self.path(cid))
        self.core.remember(cid, st_.st_dev, st_.st_ino, st_.st_ctime_ns, expected, fields,
                           head_ok, "acct", "cont")


@pytest.fixture
def vol(tmp_path, mod):
    return Volume(tmp_path, mod)


def serve(core, server, head, keep=True, peer=None):
    if isinstance(head, str):
        head = head.encode("latin-1")
    buf = bytearray(head) + bytearray(64)  # the worker's buffer is larger than the head
    return core.serve(server.fileno(), buf, len(head), keep, peer)


def log_buffer(mod, tmp_path, limit=1 << 20):
    """The access log buffer twin of ``mod`` (compiled or pure), on a file of tmp_path
    -> (buffer, path)."""
    twin = import_twin(mod.__name__.replace("getcore", "accesslog"))
    path = tmp_path / "access.log"
    return twin.LogBuffer(open_log(str(path)), limit), path


def logged(buffer, path):
    """Flush ``buffer`` -> the lines of its file (str)."""
    buffer.flush()
    return path.read_text().splitlines()


def masked(line):
    """An access line without its two timings (fields 8 and 15)."""
    fields = line.split(" ")
    fields[8] = fields[15] = "T"
    return " ".join(fields)


def get(path="/" + CID, method="GET", extra="", version="1.1"):
    return f"{method} {path} HTTP/{version}\r\nHost: {HOST}\r\n{extra}\r\n"


def expected(status, body, headers=(), keep=True, length=None):
    head = build_head(status, list(headers), len(body) if length is None else length,
                      keep, fields=FIELDS)
    return head + body


def read_reply(client, size):
    data = b""
    while len(data) < size:
        got = client.recv(size - len(data))
        if not got:
            break
        data += got
    return data


def same(got, want):
    assert DATE.sub(b"\r\nDate: -\r\n", got) == DATE.sub(b"\r\nDate: -\r\n", want)


# ---- answered ---------------------------------------------------------------------
def test_get_whole_small_chunk(mod, vol, pair):
    server, client = pair
    body = os.urandom(5000)
    vol.put(body)
    assert serve(vol.core, server, get()) == mod.DONE
    want = expected(200, body)
    same(read_reply(client, len(want)), want)
    assert vol.core.status == 200 and vol.core.keep_alive
    assert vol.core.kind == "get" and vol.core.bytes_out == len(body)
    assert vol.core.account == "acct" and vol.core.bucket == "cont"
    assert vol.core.request.method == "GET"


def test_counters_as_worker_stats_finish(mod, vol, pair):
    server, client = pair
    body = b"x" * 100
    vol.put(body)
    for head in (get(), get(method="HEAD")):
        assert serve(vol.core, server, head) == mod.DONE
    read_reply(client, 1)
    totals = vol.stats.totals()
    assert totals["req.hits"] == 2 and totals["req.hits.get"] == 1
    assert totals["req.hits.head"] == 1 and totals["rep.hits.2xx"] == 2
    assert totals["rep.bread"] == 100 and totals["rep.hits.4xx"] == 0
    assert totals["req.time"] == totals["req.time.get"] + totals["req.time.head"]
    assert totals["inflight.get"] == 0
    assert vol.stats.values[INDEX["req.hits"]] == 0  # the other worker's row


def test_head(mod, vol, pair):
    server, client = pair
    vol.put(b"y" * 777)
    assert serve(vol.core, server, get(method="HEAD", extra="X-oio-req-id: r1\r\n")) == mod.DONE
    want = expected(200, b"", [("Accept-Ranges", "bytes"), ("X-Oio-Req-Id", "r1")],
                    length=777)
    same(read_reply(client, len(want)), want)
    assert vol.core.kind == "head" and vol.core.bytes_out == 0
    client.settimeout(0.2)
    with pytest.raises(socket.timeout):
        client.recv(1)  # no body


@pytest.mark.parametrize("value", [
    "bytes=0-9", "bytes=10-19", "bytes=-5", "bytes=90-", "bytes=95-500", "bytes=-500",
    "bytes=0-", "bytes=9-3", "bytes=0-1,3-4", "bytes=-", "items=0-5", "bytes=0-99",
    "bytes=00007-0000000000000009", "bytes= 1-2",
])
def test_ranges(mod, vol, pair, value):
    """Whatever the Python path's parse_range says: 206 and Content-Range for a range
    (even one naming the whole chunk), 200 for one it ignores."""
    server, client = pair
    body = bytes(range(100))
    vol.put(body)
    assert serve(vol.core, server, get(extra=f"Range: {value}\r\n")) == mod.DONE
    wanted = reference_range(value, 100)
    if wanted is None:
        want = expected(200, body)
    else:
        offset, length = wanted
        want = expected(206, body[offset:offset + length],
                        [("Content-Range", f"bytes {offset}-{offset + length - 1}/100")])
    same(read_reply(client, len(want)), want)
    assert vol.core.status == (200 if wanted is None else 206)


def test_range_of_an_empty_chunk_is_the_whole(mod, vol, pair):
    server, client = pair
    vol.put(b"")
    assert serve(vol.core, server, get(extra="Range: bytes=-5\r\n")) == mod.DONE
    want = expected(200, b"")
    same(read_reply(client, len(want)), want)


def test_request_id_sources_and_truncation(mod, vol, pair):
    server, client = pair
    vol.put(b"z")
    long_id = "a" * 80
    for extra, rid in ((f"X-Trans-Id: t1\r\n", "t1"),
                       (f"X-oio-req-id: {long_id}\r\n", long_id[:63]),
                       ("X-oio-req-id: o1\r\nX-Trans-Id: t1\r\n", "o1")):
        assert serve(vol.core, server, get(extra=extra)) == mod.DONE
        want = expected(200, b"z", [("X-Oio-Req-Id", rid)])
        same(read_reply(client, len(want)), want)
        assert vol.core.reqid == rid


@pytest.mark.parametrize("version, extra, keep_ok, keep", [
    ("1.1", "", True, True), ("1.1", "Connection: close\r\n", True, False),
    ("1.0", "", True, False), ("1.0", "Connection: keep-alive\r\n", True, True),
    ("1.1", "", False, False),
])
def test_keep_alive(mod, vol, pair, version, extra, keep_ok, keep):
    server, client = pair
    vol.put(b"k" * 10)
    assert serve(vol.core, server, get(extra=extra, version=version), keep_ok) == mod.DONE
    want = expected(200, b"k" * 10, keep=keep)
    same(read_reply(client, len(want)), want)
    assert vol.core.keep_alive == keep


def test_leading_slashes_and_lower_case_id(mod, vol, pair):
    server, client = pair
    vol.put(b"abc")
    assert serve(vol.core, server, get(path="//" + CID.lower())) == mod.DONE
    want = expected(200, b"abc")
    same(read_reply(client, len(want)), want)


def test_wildcard_port(mod, tmp_path, pair):
    server, client = pair
    vol = Volume(tmp_path, mod, hosts=("0.0.0.0:6009",), ports=("6009",))
    vol.put(b"w")
    head = f"GET /{CID} HTTP/1.1\r\nHost: 10.1.2.3:6009\r\n\r\n"
    assert serve(vol.core, server, head) == mod.DONE
    head = f"GET /{CID} HTTP/1.1\r\nHost: 10.1.2.3:6010\r\n\r\n"
    assert serve(vol.core, server, head) == mod.DECLINED


def finish(mod, reply, server, limit=2000):
    """Drive a pending Reply as the loop does: resume on each writable event."""
    for _ in range(limit):
        select.select([], [server], [], 10)
        if reply.resume(server.fileno()) == mod.DONE:
            return
    raise AssertionError("the reply never finished")


def reader_of(client, size):
    got = []
    thread = threading.Thread(target=lambda: got.append(read_reply(client, size)))
    thread.start()
    return thread, got


def test_big_body_goes_on_from_where_the_socket_filled(mod, tmp_path, pair):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    vol = Volume(tmp_path, mod, small_file=1024)
    body = os.urandom(4 << 20)
    vol.put(body)
    assert serve(vol.core, server, get()) == mod.PENDING
    reply = vol.core.pending
    assert 0 < reply.remaining < len(body) and reply.left == b""
    assert reply.bytes_out == vol.core.bytes_out == len(body) - reply.remaining
    assert (reply.status, reply.kind, reply.keep_alive) == (200, "get", True)
    assert reply.request.method == "GET" and reply.account == "acct"
    assert reply.started == vol.core.started and reply.ttfb >= reply.started
    totals = vol.stats.totals()
    assert totals["req.hits"] == 0 and totals["inflight.get"] == 1  # in flight
    thread, got = reader_of(client, len(expected(200, body)))
    finish(mod, reply, server)
    thread.join(10)
    same(got[0], expected(200, body))
    assert reply.finished and reply.remaining == 0 and reply.bytes_out == len(body)
    totals = vol.stats.totals()
    assert totals["req.hits"] == totals["req.hits.get"] == totals["rep.hits.2xx"] == 1
    assert totals["rep.bread"] == len(body) and totals["inflight.get"] == 0
    assert reply.resume(server.fileno()) == mod.DONE  # over: nothing counted twice
    reply.abort()
    assert vol.stats.totals()["req.hits"] == 1


def test_small_body_left_over_is_one_bytes_object(mod, vol, pair):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = os.urandom(60000)
    vol.put(body)
    want = expected(200, body)
    # fill the pipe first so that the reply cannot all go
    filler = b""
    try:
        while True:
            filler += b"f" * server.send(b"f" * 65536)
    except BlockingIOError:
        pass
    assert serve(vol.core, server, get()) == mod.PENDING
    reply = vol.core.pending
    left = reply.left
    assert isinstance(left, bytes) and 0 < len(left) <= len(want)
    assert reply.remaining == 0
    sent = len(want) - len(left)
    assert reply.bytes_out == vol.core.bytes_out == sent - (len(want) - len(body))
    thread, got = reader_of(client, len(filler) + len(want))
    finish(mod, reply, server)
    thread.join(10)
    same(got[0][len(filler):], want)
    assert reply.bytes_out == len(body) and reply.left == b""
    assert vol.stats.totals()["rep.bread"] == len(body)


def test_pending_head_is_not_in_flight(mod, vol, pair):
    """Only GETs count in inflight.get (WorkerStats.start), also when left pending."""
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    vol.put(b"h" * 10)
    try:
        while True:
            server.send(b"f" * 65536)
    except BlockingIOError:
        pass
    assert serve(vol.core, server, get(method="HEAD")) == mod.PENDING
    reply = vol.core.pending
    assert reply.kind == "head" and vol.stats.totals()["inflight.get"] == 0
    reply.abort()
    totals = vol.stats.totals()
    assert totals["req.hits.head"] == 1 and totals["inflight.get"] == 0


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def pending_big_reply(mod, tmp_path, server):
    """A 2 MiB GET left pending on a small send buffer -> (volume, reply, the number
    of open descriptors before it)."""
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    vol = Volume(tmp_path, mod, small_file=1024)
    vol.put(os.urandom(2 << 20))
    before = open_fds()
    assert serve(vol.core, server, get()) == mod.PENDING
    assert open_fds() == before + 1  # the chunk, held by the reply
    return vol, vol.core.pending, before


def test_abort_releases_the_file_and_counts_once(mod, tmp_path, pair):
    server, client = pair
    vol, reply, before = pending_big_reply(mod, tmp_path, server)
    partial = reply.bytes_out
    reply.abort()
    reply.abort()
    assert open_fds() == before and reply.finished and not reply.keep_alive
    assert reply.bytes_out == partial
    totals = vol.stats.totals()
    assert totals["req.hits"] == 1 and totals["inflight.get"] == 0
    assert totals["rep.bread"] == partial
    assert reply.resume(server.fileno()) == mod.DONE


def test_client_gone_while_pending(mod, tmp_path, pair):
    server, client = pair
    vol, reply, before = pending_big_reply(mod, tmp_path, server)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    finish(mod, reply, server)
    assert reply.finished and not reply.keep_alive and open_fds() == before - 1
    totals = vol.stats.totals()
    assert totals["req.hits"] == 1 and totals["inflight.get"] == 0


def test_dropped_reply_closes_its_file(mod, tmp_path, pair):
    server, client = pair
    vol, first, before = pending_big_reply(mod, tmp_path, server)
    assert serve(vol.core, server, get(method="DELETE")) == mod.DECLINED
    assert vol.core.pending is first  # a declined head leaves it
    del vol.core, first  # the core and its reply go: the file is closed with them
    assert open_fds() == before


def test_client_gone_is_done_and_not_kept(mod, vol, pair):
    server, client = pair
    vol.put(b"g" * 100)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    results = {serve(vol.core, server, get()) for _ in range(3)}
    assert results == {mod.DONE}
    assert not vol.core.keep_alive


# ---- the access line ----------------------------------------------------------------
def test_access_line_of_an_immediate_reply(mod, tmp_path, pair):
    """Byte for byte the Python path's line (``format_line``), the node's in-flight
    figures summed over every worker's row."""
    server, client = pair
    vol = Volume(tmp_path, mod, node=True)
    body = os.urandom(5000)
    vol.put(body)
    buffer, path = log_buffer(mod, tmp_path)
    vol.core.log_to(buffer, 4242)
    vol.stats.row(0).start("put")  # another worker's upload in flight
    extra = "X-oio-req-id: rid-1\r\n"
    assert serve(vol.core, server, get(extra=extra), peer="127.0.0.1:51234") == mod.DONE
    read_reply(client, len(expected(200, body, [("X-Oio-Req-Id", "rid-1")])))
    assert len(buffer) > 0 and path.read_text() == ""  # buffered, not written yet
    [line] = logged(buffer, path)
    want = format_line(4242, HOST, "127.0.0.1:51234", "GET", 200, 0, 5000, 0, "rid-1",
                       "/" + CID, 0, 1, 0, 0, "acct", "cont").decode()
    assert masked(line) == masked(want.rstrip("\n"))
    micros, ttfb = int(line.split()[8]), int(line.split()[15])
    assert 0 <= ttfb <= micros < 10 ** 7


def test_access_line_of_head_range_and_unknowns(mod, tmp_path, pair):
    """No Host, no request id, no peer, no account: "-"; a HEAD sends no body bytes."""
    server, client = pair
    vol = Volume(tmp_path, mod)
    vol.put(b"0123456789")
    vol.core.remember(CID, *(lambda s: (s.st_dev, s.st_ino, s.st_ctime_ns))(
        os.stat(vol.path())), 10, FIELDS, True, None, b"bucket-\xc3\xa9")
    buffer, path = log_buffer(mod, tmp_path)
    vol.core.log_to(buffer, 1)
    head = f"HEAD /{CID} HTTP/1.0\r\n\r\n"
    assert serve(vol.core, server, head) == mod.DONE
    ranged = get(extra="Range: bytes=2-4\r\n")
    assert serve(vol.core, server, ranged, peer="[::1]:8") == mod.DONE
    lines = logged(buffer, path)
    assert [masked(line) for line in lines] == [
        "1 access INF - - - HEAD 200 T 0 0 - - /%s http T put:0 get:0 del:0 "
        "account:- bucket:bucket-\u00e9" % CID,
        "1 access INF - %s [::1]:8 GET 206 T 3 0 - - /%s http T put:0 get:0 del:0 "
        "account:- bucket:bucket-\u00e9" % (HOST, CID)]


def test_access_line_of_a_pending_reply_once_it_is_out(mod, tmp_path, pair):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    vol = Volume(tmp_path, mod, small_file=1024, node=True)
    body = os.urandom(4 << 20)
    vol.put(body)
    buffer, path = log_buffer(mod, tmp_path)
    vol.core.log_to(buffer, 9)
    assert serve(vol.core, server, get(), peer="p:1") == mod.PENDING
    reply = vol.core.pending
    assert logged(buffer, path) == []  # not out yet
    thread, got = reader_of(client, len(expected(200, body)))
    while reply.resume(server.fileno()) == mod.PENDING:
        select.select([], [server], [], 5)
    thread.join(10)
    reply.abort()  # finished already: nothing logged twice
    [line] = logged(buffer, path)
    assert line.split()[5:10] == ["p:1", "GET", "200", line.split()[8], str(len(body))]
    assert " get:0 " in line  # no longer in flight when logged


def test_access_line_of_an_aborted_reply(mod, tmp_path, pair):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    vol = Volume(tmp_path, mod, small_file=1024)
    vol.put(os.urandom(4 << 20))
    buffer, path = log_buffer(mod, tmp_path)
    vol.core.log_to(buffer, 9)
    assert serve(vol.core, server, get(), peer="p:1") == mod.PENDING
    reply = vol.core.pending
    reply.abort()
    reply.abort()
    [line] = logged(buffer, path)
    assert 0 < int(line.split()[9]) < 4 << 20 and " GET 200 " in line


def test_log_to_none_logs_nothing(mod, tmp_path, pair):
    server, client = pair
    vol = Volume(tmp_path, mod)
    vol.put(b"abc")
    buffer, path = log_buffer(mod, tmp_path)
    vol.core.log_to(buffer, 9)
    vol.core.log_to(None)
    assert serve(vol.core, server, get()) == mod.DONE
    assert logged(buffer, path) == [] and buffer.lines == 0


def test_the_compiled_core_takes_the_compiled_buffer(tmp_path):
    from _fastpath import getcore
    from storage.pure import accesslog
    core = getcore.GetCore((str(tmp_path), 3, 1), (HOST,))
    with pytest.raises(TypeError):
        core.log_to(accesslog.LogBuffer(2), 1)


# ---- declined: nothing sent ---------------------------------------------------------
DECLINED_HEADS = {
    "put": get(method="PUT", extra="Content-Length: 0\r\n"),
    "delete": get(method="DELETE"),
    "post": get(method="POST"),
    "body": get(extra="Content-Length: 5\r\n"),
    "chunked": get(extra="Transfer-Encoding: chunked\r\n"),
    "expect": get(extra="Expect: 100-continue\r\n"),
    "wrong host": f"GET /{CID} HTTP/1.1\r\nHost: 10.0.0.1:6009\r\n\r\n",
    "percent": get(path="/" + CID[:-2] + "%41"),
    "short id": get(path="/" + CID[:23]),
    "long id": get(path="/" + CID + "0"),
    "not hex": get(path="/" + CID[:-1] + "G"),
    "info": get(path="/info"),
    "stat": get(path="/stat"),
    "query": get(path="/" + CID + "?x=1&y"),  # the Python path decides what a query means
    "unsatisfiable": get(extra="Range: bytes=500-\r\n"),
    "suffix zero": get(extra="Range: bytes=-0\r\n"),
    "huge number": get(extra="Range: bytes=1234567890123456789-\r\n"),
    "check hash": get(method="HEAD", extra="X-oio-check-hash: true\r\n"),
    "verbose head": get(method="HEAD", path="/" + CID + "?verbose"),  # feed status
    "bad head": f"GET /{CID} HTTP/1.1\r\nHost: {HOST}\r\n folded\r\n\r\n",
    "bad version": f"GET /{CID} HTTP/2.0\r\nHost: {HOST}\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(DECLINED_HEADS))
def test_declined_heads_leave_the_socket_alone(mod, vol, pair, name):
    server, client = pair
    vol.put(b"d" * 100)
    head = DECLINED_HEADS[name]
    if name == "query":
        result = serve(vol.core, server, head)
        if result != mod.DECLINED:  # a query is not part of the path: answered
            read_reply(client, 1)
            return
    assert serve(vol.core, server, head) == mod.DECLINED
    client.settimeout(0.1)
    with pytest.raises(socket.timeout):
        client.recv(1)
    assert vol.stats.totals()["req.hits"] == 0


def test_declined_when_the_chunk_changed(mod, vol, pair):
    server, _ = pair
    path = vol.put(b"c" * 100)
    os.setxattr(path, "user.test", b"1")  # any metadata change moves the ctime
    assert serve(vol.core, server, get()) == mod.DECLINED
    vol.learn(expected=100)
    assert serve(vol.core, server, get()) == mod.DONE


def test_declined_without_cache_entry_or_file(mod, vol, pair):
    server, _ = pair
    assert serve(vol.core, server, get()) == mod.DECLINED  # never remembered
    vol.put(b"c")
    os.unlink(vol.path())
    assert serve(vol.core, server, get()) == mod.DECLINED
    vol.path().mkdir()
    assert serve(vol.core, server, get()) == mod.DECLINED


def test_declined_on_size_mismatch_and_head_without_hash(mod, vol, pair):
    server, client = pair
    vol.put(b"s" * 10, expected=11)
    assert serve(vol.core, server, get()) == mod.DECLINED
    assert serve(vol.core, server, get(method="HEAD")) == mod.DECLINED
    vol.put(b"s" * 10, expected=None, head_ok=False)
    assert serve(vol.core, server, get(method="HEAD")) == mod.DECLINED
    assert serve(vol.core, server, get()) == mod.DONE  # a GET needs no stored hash


def test_forget_clear_and_bounded_cache(mod, vol, pair):
    server, _ = pair
    vol.put(b"f")
    vol.core.forget(CID)
    assert serve(vol.core, server, get()) == mod.DECLINED
    for n in range(40):
        vol.put(b"f", cid="%064X" % n)
    assert 0 < len(vol.core) <= 16
    vol.core.clear()
    assert len(vol.core) == 0


def test_layout_deeper_than_the_id_is_declined(mod, tmp_path, pair):
    server, _ = pair
    core = mod.GetCore((str(tmp_path), 16, 2), (HOST,))
    core.remember(CID[:24], 1, 1, 1, None, b"", True)
    assert serve(core, server, get(path="/" + CID[:24])) == mod.DECLINED


def test_bad_arguments(mod, tmp_path, pair):
    server, _ = pair
    core = mod.GetCore((str(tmp_path), 3, 1), (HOST,))
    with pytest.raises(ValueError):
        core.serve(server.fileno(), bytearray(10), 11)
    with pytest.raises(ValueError):
        mod.GetCore(("/" + "d" * 5000, 3, 1), (HOST,))
    stats = SharedStats(1)
    with pytest.raises(ValueError):
        mod.GetCore((str(tmp_path), 3, 1), (HOST,), stats.values, dict(INDEX, base=10))


# ---- the Range reader against the Python path's -----------------------------------
range_values = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}",
              st.one_of(st.just(""), st.integers(0, 10 ** 6).map(str),
                        st.text("0123456789", max_size=22)),
              st.one_of(st.just(""), st.integers(0, 10 ** 6).map(str),
                        st.text("0123456789", max_size=22))),
    st.text("bytes=-0123456789, ", max_size=30),
    st.text(max_size=20).map(lambda s: "bytes=" + s),
)


@settings(max_examples=600, deadline=None)
@given(value=range_values, size=st.one_of(st.integers(0, 200), st.integers(0, 10 ** 7)))
def test_parse_range_matches_the_python_path(value, size):
    from _fastpath import getcore as fast
    from storage.pure import getcore as pure
    want = reference_range(value, size)
    for impl in (fast, pure):
        try:
            got = impl.parse_range(value, size)
        except OverflowError:
            assert any(len(n) > 18 for n in re.findall(r"\d+", value))
            continue
        assert got == want, (impl.__name__, value, size)
