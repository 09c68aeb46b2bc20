"""The compiled GET/HEAD path (getcore) next to its pure twin, and the Python request path.

    .venv/bin/python -m pytest bench/bench_getcore.py --benchmark-enable -q
    .venv/bin/python bench/bench_getcore.py        # main(): the ratios from a quick run
    .venv/bin/python bench/bench_getcore.py --smoke   # does it still run (3 rounds)

Groups ``serve: <case>`` time one ``GetCore.serve()`` on the non-blocking server side of
a real 127.0.0.1 TCP pair: a cached 4 KiB GET, a 64 KiB GET (the largest reply sent
with one sendmsg), a HEAD, a 500-byte Range GET and a declined request (a cache miss).
Between two timed calls (untimed) the client reads the whole previous reply, so the
socket never fills; every answered call must have been counted as DONE by the core.

Group ``request path: GET 4 KiB`` times ``Connection.on_readable()`` of a real worker
built in-process (``storage.server.Worker``: config, repository, ``RawxApp``, event
loop; ``io_threads 0``, the access log off as in bench/load.py), the request already
sent by the client: once through the Python path (no core), once with the compiled
core, once with its pure twin. The chunks are stored by PUTs through that same
connection, and the cores learn their metadata from the app itself (``RawxApp`` hands
it over on a Python-path GET, as in the node).

Compare the rows of one group (ratios; absolute times on a shared machine are noise).
"""
import os
import select
import socket
import statistics
import sys
import tempfile
import threading
import time

import pytest

from _fastpath import getcore as fast
from storage import config as configmod
from storage.http.reply import SMALL_FILE
from storage.pure import getcore as pure
from storage.rawx.app import RACY_SECONDS
from storage.server import Worker
from storage.stats import INDEX, SharedStats

TWINS = [pytest.param(fast, id="fast"), pytest.param(pure, id="pure")]
KIB = 1024
CID_4K = "0123456789ABCDEF" * 4
CID_64K = "FEDCBA9876543210" * 4
MISSING = "00112233445566778899AABBCCDDEEFF" * 2
PUT_HEADERS = (
    "X-oio-Chunk-Meta-Content-Storage-Policy: SINGLE\r\n"
    "X-oio-Chunk-Meta-Content-Chunk-Method: plain/nb_copy=1\r\n"
    "X-oio-Chunk-Meta-Chunk-Pos: 0\r\n"
    "X-oio-Chunk-Meta-Full-Path: acct/cont/obj/1/0123456789ABCDEF0123456789ABCDEF\r\n")
SERVE_ROUNDS = dict(rounds=2000, iterations=1, warmup_rounds=50)
PATH_ROUNDS = dict(rounds=1000, iterations=1, warmup_rounds=50)
WAIT = 10.0  # seconds any socket wait may take before the bench gives up


def request_head(host, cid, method="GET", extra=""):
    return (f"{method} /{cid} HTTP/1.1\r\nHost: {host}\r\n"
            f"X-oio-req-id: bench-0123456789\r\n{extra}\r\n").encode("latin-1")


def cases(host):
    """name -> (request head, what the client gets: "body", "head" or None)."""
    return {
        "GET 4 KiB": (request_head(host, CID_4K), "body"),
        "GET 64 KiB": (request_head(host, CID_64K), "body"),
        "HEAD": (request_head(host, CID_4K, "HEAD"), "head"),
        "Range GET 500 B": (request_head(host, CID_64K, extra="Range: bytes=1000-1499\r\n"),
                            "body"),
        "declined (cache miss)": (request_head(host, MISSING), None),
    }


class ReplyReader:
    """Reads whole HTTP replies off a blocking client socket (bounded waits)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)
        self.have = 0

    def _fill(self):
        if self.have == len(self.buf):
            raise AssertionError("reply larger than the reader's buffer")
        got = self.sock.recv_into(self.view[self.have:])
        if not got:
            raise AssertionError("the server closed the connection")
        self.have += got

    def reply(self, head_only=False):
        """-> (status, body length) of the next whole reply."""
        for _ in range(10_000):
            end = self.buf.find(b"\r\n\r\n", 0, self.have)
            if end >= 0:
                break
            self._fill()
        else:
            raise AssertionError("no reply head")
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        total = end + 4 + (0 if head_only else length)
        for _ in range(10_000):
            if self.have >= total:
                break
            self._fill()
        else:
            raise AssertionError("short reply body")
        rest = self.have - total
        self.buf[:rest] = self.buf[total:self.have]
        self.have = rest
        return status, length


def tcp_pair():
    """(server side, non-blocking as a worker holds it; client side, blocking), with
    buffers big enough for a 64 KiB reply in one send."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.connect(listener.getsockname())
        client.settimeout(WAIT)
        server, _ = listener.accept()
    server.setblocking(False)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server, client


def wait_readable(fd):
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if not poller.poll(WAIT * 1000):
        raise AssertionError("the request never reached the server")


class InProcessNode:
    """A real worker (storage.server.Worker) without its loop running: one keep-alive
    client connection whose ``on_readable()`` the bench calls itself."""

    def __init__(self, root):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        port = self.listener.getsockname()[1]
        docroot = os.path.join(root, "rawx")
        os.makedirs(docroot)
        self.config = configmod.parse_text(
            f"listen 127.0.0.1:{port}\nnamespace OPENIO\ndocroot {docroot}\n"
            "hash_width 3\nhash_depth 1\nfsync off\nio_threads 0\naccess_log off\n")
        self.host = self.config.listen
        self.worker = Worker(self.config, 0, self.listener, SharedStats(1))
        # on_readable() is what is timed: a connection the core answered must stay in
        # the loop, not move to the worker's keep-alive lane (which nobody runs here)
        if self.worker.lane is not None:
            self.worker.lane.close()
            self.worker.lane = None
        self.app = self.worker.app
        self.app.fast_get = None  # set per measurement
        self.client = socket.socket()
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.client.connect(self.listener.getsockname())
        self.client.settimeout(WAIT)
        server, peer = self.listener.accept()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.worker.accepted(server, peer)
        (self.conn,) = self.worker.connections
        self.reader = ReplyReader(self.client)

    def exchange(self, data, head_only=False):
        """Send a whole request (a thread sends a big body), run the connection until
        the reply is out; -> (status, body length)."""
        sender = threading.Thread(target=self.client.sendall, args=(data,))
        sender.start()
        served = self.conn.served
        for _ in range(100_000):
            if self.conn.served > served or self.conn.closed:
                break
            wait_readable(self.conn.fd)
            self.conn.on_readable()
        sender.join(WAIT)
        assert not self.conn.closed and self.conn.served == served + 1
        return self.reader.reply(head_only)

    def put(self, cid, body):
        head = (f"PUT /{cid} HTTP/1.1\r\nHost: {self.host}\r\n{PUT_HEADERS}"
                f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
        status, _ = self.exchange(head + body)
        assert status == 201, status

    def new_core(self, mod):
        """A GetCore as the app builds one, counting into its own stats row; the app
        teaches it the metadata of both chunks through Python-path GETs."""
        stats = SharedStats(1)
        row = stats.row(0)
        core = mod.GetCore(self.app.repo.layout, self.app.allowed_hosts, row.values,
                           dict(INDEX, base=row.base), SMALL_FILE, 4096)
        self.conn.fast_get = None
        self.app.fast_get = core
        try:
            for cid, size in ((CID_4K, 4 * KIB), (CID_64K, 64 * KIB)):
                assert self.exchange(request_head(self.host, cid)) == (200, size)
        finally:
            self.app.fast_get = None
        assert len(core) == 2
        return core, stats

    def close(self):
        self.conn.close()
        self.client.close()
        self.worker.loop.close()
        self.listener.close()


def lay_down(root):
    """An in-process node holding a 4 KiB and a 64 KiB chunk, old enough (ctime) for
    the app to cache their metadata; -> (node, {twin: (core, stats)})."""
    node = InProcessNode(root)
    node.put(CID_4K, os.urandom(4 * KIB))
    node.put(CID_64K, os.urandom(64 * KIB))
    stored = time.time()
    # the app caches (and hands the core) only metadata over RACY_SECONDS old
    time.sleep(max(0.0, RACY_SECONDS + 0.2 - (time.time() - stored)))
    cores = {mod: node.new_core(mod) for mod in (fast, pure)}
    return node, cores


@pytest.fixture(scope="module")
def node_and_cores(tmp_path_factory):
    node, cores = lay_down(str(tmp_path_factory.mktemp("getcore")))
    yield node, cores
    node.close()


@pytest.fixture(scope="module")
def pair():
    server, client = tcp_pair()
    yield server, client
    server.close()
    client.close()


def serve_round(core, server, client, head, expect):
    """(setup, timed call, check) for one serve() case over ``server``/``client``."""
    buf = bytearray(16 * KIB)  # the worker's receive buffer holds the head, and more
    buf[:len(head)] = head
    n = len(head)
    fd = server.fileno()
    reader = ReplyReader(client)
    calls = [0]

    def setup():
        if calls[0] and expect is not None:
            status, _ = reader.reply(expect == "head")
            assert status in (200, 206), status
        calls[0] += 1

    def call():
        return core.serve(fd, buf, n, True)

    def finish():
        setup()  # the last reply
        return calls[0] - 1

    return setup, call, finish


@pytest.mark.parametrize("mod", TWINS)
@pytest.mark.parametrize("case", ["GET 4 KiB", "GET 64 KiB", "HEAD", "Range GET 500 B",
                                  "declined (cache miss)"])
def test_serve(benchmark, node_and_cores, pair, mod, case):
    node, cores = node_and_cores
    core, stats = cores[mod]
    server, client = pair
    head, expect = cases(node.host)[case]
    benchmark.group = f"serve: {case}"
    before = stats.total("req.hits")
    setup, call, finish = serve_round(core, server, client, head, expect)
    result = benchmark.pedantic(call, setup=setup, **SERVE_ROUNDS)
    calls = finish()
    if expect is None:
        assert result == mod.DECLINED and stats.total("req.hits") == before
    else:
        # every call answered in full (DONE), none left PENDING
        assert result == mod.DONE and stats.total("req.hits") - before == calls


def path_round(node, core, head):
    """(setup, timed call, check) for Connection.on_readable() of a 4 KiB GET."""
    conn = node.conn
    calls = [0]

    def setup():
        if calls[0]:
            assert node.reader.reply() == (200, 4 * KIB)
        node.client.sendall(head)
        wait_readable(conn.fd)
        calls[0] += 1

    def finish():
        assert node.reader.reply() == (200, 4 * KIB)
        return calls[0]

    conn.fast_get = core
    return setup, conn.on_readable, finish


PATHS = [pytest.param(None, id="python path"), pytest.param(fast, id="core fast"),
         pytest.param(pure, id="core pure")]


@pytest.mark.parametrize("mod", PATHS)
def test_request_path(benchmark, node_and_cores, mod):
    node, cores = node_and_cores
    core, stats = cores[mod] if mod is not None else (None, None)
    benchmark.group = "request path: GET 4 KiB"
    served = node.conn.served
    hits = stats.total("req.hits") if stats is not None else 0
    setup, call, finish = path_round(node, core, request_head(node.host, CID_4K))
    try:
        benchmark.pedantic(call, setup=setup, **PATH_ROUNDS)
        calls = finish()
    finally:
        node.conn.fast_get = None
    assert not node.conn.closed and node.conn.served - served == calls
    if stats is not None:  # the core answered every one of them
        assert stats.total("req.hits") - hits == calls


def _median_us(setup, call, rounds):
    times = []
    for _ in range(rounds):
        setup()
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main():
    rounds = 3 if "--smoke" in sys.argv else 300 if "--quick" in sys.argv else 1500
    with tempfile.TemporaryDirectory() as root:
        node, cores = lay_down(root)
        server, client = tcp_pair()
        try:
            for case, (head, expect) in cases(node.host).items():
                rows = {}
                for label, mod in (("fast", fast), ("pure", pure)):
                    setup, call, finish = serve_round(cores[mod][0], server, client, head,
                                                      expect)
                    rows[label] = _median_us(setup, call, rounds)
                    finish()
                print(f"serve {case:22} fast {rows['fast']:7.2f} us  pure {rows['pure']:7.2f}"
                      f" us  pure/fast {rows['pure'] / rows['fast']:5.1f}x")
            rows = {}
            head = request_head(node.host, CID_4K)
            for label, mod in (("python", None), ("fast", fast), ("pure", pure)):
                setup, call, finish = path_round(node, cores[mod][0] if mod else None, head)
                rows[label] = _median_us(setup, call, rounds)
                finish()
                node.conn.fast_get = None
            print(f"request path GET 4 KiB: python {rows['python']:7.2f} us  core fast "
                  f"{rows['fast']:7.2f} us  core pure {rows['pure']:7.2f} us  python/core fast "
                  f"{rows['python'] / rows['fast']:5.1f}x  python/core pure "
                  f"{rows['python'] / rows['pure']:5.1f}x")
        finally:
            server.close()
            client.close()
            node.close()


if __name__ == "__main__":
    main()
