"""transfer: send_file (file range -> socket, hashed, chunked or raw).

Every test runs against the compiled module and its pure twin, on real
sockets (socketpairs and 127.0.0.1 TCP connections) and real files in
tmp_path. What reaches the peer is decoded with the project's ChunkedDecoder
and also compared with the framing built by hand.
"""
import array
import errno
import hashlib
import http.client
import math
import os
import random
import signal
import socket
import threading
import time

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _fastpath import streamio as fast_streamio
from _fastpath.chunked import ChunkedDecoder
from conftest import import_twin, twin_params
from storage.pure import streamio as pure_streamio

MODULES = [p.values[0] for p in twin_params("transfer")]
WAIT = 10.0  # the longest any helper waits for a thread before failing


@pytest.fixture(params=twin_params("transfer"))
def tf(request):
    return import_twin(request.param)


@pytest.fixture
def chunk_file(tmp_path):
    """``chunk_file(data)``: an fd open for reading on a file holding data."""
    fds = []

    def make(data, name="chunk"):
        path = tmp_path / f"{name}{len(fds)}"
        path.write_bytes(data)
        fds.append(os.open(path, os.O_RDONLY))
        return fds[-1]

    yield make
    for fd in fds:
        os.close(fd)


@pytest.fixture
def pair():
    """(our end with a 5 s timeout, the peer's blocking end) of a socketpair."""
    ours, peer = socket.socketpair()
    ours.settimeout(5.0)
    yield ours, peer
    ours.close()
    peer.close()


@pytest.fixture
def tcp_pair():
    """(our end with a 5 s timeout, the accepted peer) of a 127.0.0.1 connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=5.0)
        peer, _ = listener.accept()
    yield ours, peer
    ours.close()
    peer.close()


class Reader(threading.Thread):
    """Reads a socket until EOF into ``data``: ``step`` bytes per recv, with a
    pause of ``delay`` seconds after each (a slow reader); closes the socket
    once it has ``close_after`` bytes (a peer that hangs up midway)."""

    def __init__(self, sock, step=1 << 16, delay=0.0, close_after=None):
        super().__init__(daemon=True)
        self.sock, self.step, self.delay, self.close_after = sock, step, delay, close_after
        self.data = bytearray()
        self.error = None

    def run(self):
        try:
            while True:
                got = self.sock.recv(self.step)
                if not got:
                    break
                self.data += got
                if self.close_after is not None and len(self.data) >= self.close_after:
                    self.sock.close()  # unread bytes left: TCP resets
                    break
                if self.delay:
                    time.sleep(self.delay)
        except OSError as exc:
            self.error = exc

    def finish(self):
        self.join(WAIT)
        assert not self.is_alive() and self.error is None
        return bytes(self.data)


def framed(data, bufsize):
    """The chunks send_file writes for data read by pieces of bufsize bytes."""
    return b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + bufsize]), data[i:i + bufsize])
                    for i in range(0, len(data), bufsize))


def decoded(wire):
    """The body carried by chunks (no last-chunk) as ChunkedDecoder sees it."""
    decoder = ChunkedDecoder()
    pieces, used = decoder.feed(wire + b"0\r\n\r\n")
    assert decoder.done and used == len(wire) + 5
    return b"".join(bytes(p) for p in pieces)


def make_hasher(tf, kind):
    # each twin's own Md5 first, then the other's and the ecosystem's
    own, other = (fast_streamio, pure_streamio) if tf.__name__.startswith("_fastpath") \
        else (pure_streamio, fast_streamio)
    return {"md5": own.Md5, "other-md5": other.Md5, "hashlib": hashlib.md5,
            "blake3": blake3.blake3, "none": lambda: None}[kind]()


def reference(kind, data):
    if kind == "none":
        return None
    return (blake3.blake3 if kind == "blake3" else hashlib.md5)(data).hexdigest()


def send(tf, sock, fd, offset, length, hasher=None, bufsize=1 << 16, chunked=True,
         **reader):
    """send_file through sock to a Reader of its peer; (returned, wire bytes)."""
    ours, peer = sock
    rd = Reader(peer, **reader)
    rd.start()
    try:
        n = tf.send_file(ours.fileno(), fd, offset, length, hasher, bytearray(bufsize),
                         ours.gettimeout(), chunked)
    finally:
        ours.shutdown(socket.SHUT_WR)
    return n, rd.finish()


# ------------------------------------------------------------------ happy paths

@pytest.mark.parametrize("kind", ["md5", "other-md5", "hashlib", "blake3", "none"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "raw"])
def test_whole_file(tf, pair, chunk_file, kind, chunked):
    data = random.Random(1).randbytes(1_000_003)
    hasher = make_hasher(tf, kind)
    n, wire = send(tf, pair, chunk_file(data), 0, len(data), hasher, chunked=chunked)
    assert n == len(data)
    if chunked:
        assert wire == framed(data, 1 << 16)
        assert decoded(wire) == data
    else:
        assert wire == data
    assert (hasher and hasher.hexdigest()) == reference(kind, data)


@pytest.mark.parametrize("offset,length,bufsize", [
    (0, 1, 4096), (999, 1, 4096), (1, 998, 4096), (4096, 4096, 4096),
    (0, 8192, 4096), (17, 8191, 4096), (100, 900, 1), (0, 1000, 999), (3, 997, 10_000),
])
def test_offsets_and_lengths(tf, pair, chunk_file, offset, length, bufsize):
    data = random.Random(2).randbytes(20_000)[:max(1000, offset + length)]
    h = make_hasher(tf, "md5")
    n, wire = send(tf, pair, chunk_file(data), offset, length, h, bufsize)
    part = data[offset:offset + length]
    assert n == length
    assert wire == framed(part, bufsize) and decoded(wire) == part
    assert h.hexdigest() == hashlib.md5(part).hexdigest()


def test_buffer_window(tf, pair, chunk_file):
    # a 3000-byte window of a bigger buffer: pieces are 3000 bytes
    data = random.Random(3).randbytes(50_000)
    window = memoryview(bytearray(10_000))[100:3100]
    ours, peer = pair
    rd = Reader(peer)
    rd.start()
    tf.send_file(ours.fileno(), chunk_file(data), 0, len(data), None, window, 5.0)
    ours.shutdown(socket.SHUT_WR)
    assert rd.finish() == framed(data, 3000)


def test_int_array_buffer_counts_bytes(tf, pair, chunk_file):
    data = random.Random(4).randbytes(10_000)
    ours, peer = pair
    rd = Reader(peer)
    rd.start()
    buf = array.array("i", bytes(4000))  # 4000 bytes, 1000 items
    tf.send_file(ours.fileno(), chunk_file(data), 0, len(data), None, buf, 5.0)
    ours.shutdown(socket.SHUT_WR)
    assert rd.finish() == framed(data, 4000)


def test_empty_length_touches_nothing(tf):
    # invalid descriptors would fail if they were used
    assert tf.send_file(-1, -1, 0, 0, hashlib.md5(), bytearray(8), None) == 0
    assert tf.send_file(-1, -1, 123, 0, None, bytearray(8), 1.0, False) == 0


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "raw"])
def test_tcp_connection(tf, tcp_pair, chunk_file, chunked):
    data = random.Random(5).randbytes(3 << 20)
    h = make_hasher(tf, "md5")
    n, wire = send(tf, tcp_pair, chunk_file(data), 5, len(data) - 5, h, 256 * 1024,
                   chunked)
    assert n == len(data) - 5
    assert (decoded(wire) if chunked else wire) == data[5:]
    assert h.hexdigest() == hashlib.md5(data[5:]).hexdigest()


def _http_sink(listener, results):
    """Answer one chunked PUT: decode the body, reply with its MD5."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(WAIT)
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += conn.recv(4096)
        head, rest = raw.split(b"\r\n\r\n", 1)
        decoder, md5 = ChunkedDecoder(), hashlib.md5()
        data = rest
        while True:
            pieces, _ = decoder.feed(data)
            for piece in pieces:
                md5.update(piece)
            if decoder.done:
                break
            data = conn.recv(1 << 16)
            assert data
        results.append((head, decoder.body_size))
        conn.sendall(b"HTTP/1.1 201 Created\r\nX-Body-Md5: %s\r\n"
                     b"Content-Length: 0\r\n\r\n" % md5.hexdigest().encode())


def test_http_client_chunked_put(tf, chunk_file):
    # The SEND shape: http.client sends the head, send_file the body.
    data = random.Random(6).randbytes((2 << 20) + 333)
    results = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=_http_sink, args=(listener, results))
        server.start()
        conn = http.client.HTTPConnection(*listener.getsockname(), timeout=5.0)
        try:
            conn.putrequest("PUT", "/0123ABCD")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            h = make_hasher(tf, "md5")
            sock = conn.sock
            n = tf.send_file(sock.fileno(), chunk_file(data), 0, len(data), h,
                             bytearray(1 << 16), sock.gettimeout())
            conn.send(b"0\r\n\r\n")
            reply = conn.getresponse()
            reply.read()
        finally:
            conn.close()
        server.join(WAIT)
    assert n == len(data) and reply.status == 201
    assert reply.getheader("X-Body-Md5") == h.hexdigest() == hashlib.md5(data).hexdigest()
    assert results[0][0].startswith(b"PUT /0123ABCD HTTP/1.1") and results[0][1] == len(data)


# ------------------------------------------------------------- a full socket

def small_buffers(ours, peer):
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


@pytest.mark.parametrize("timeout", [None, 2.0])
def test_slow_reader(tf, chunk_file, timeout):
    # The socket fills again and again: writev says EAGAIN, poll waits.
    ours, peer = socket.socketpair()
    with ours, peer:
        small_buffers(ours, peer)
        ours.settimeout(timeout)
        data = random.Random(7).randbytes(1 << 20)
        h = make_hasher(tf, "md5")
        n, wire = send(tf, (ours, peer), chunk_file(data), 0, len(data), h, 50_000,
                       step=8192, delay=0.0005)
    assert n == len(data) and wire == framed(data, 50_000)
    assert h.hexdigest() == hashlib.md5(data).hexdigest()


def test_slow_reader_tcp(tf, tcp_pair, chunk_file):
    ours, peer = tcp_pair
    # (a tiny receive window too would make TCP crawl on its timers)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = random.Random(8).randbytes(1 << 20)
    n, wire = send(tf, tcp_pair, chunk_file(data), 0, len(data), None, 1 << 16,
                   False, step=4096, delay=0.0002)
    assert n == len(data) and wire == data


def test_timeout_is_per_wait(tf, chunk_file):
    # The reader takes 32 KiB every 50 ms: the whole send lasts far longer
    # than the timeout, but no single wait does.
    ours, peer = socket.socketpair()
    with ours, peer:
        small_buffers(ours, peer)
        ours.settimeout(0.3)
        data = random.Random(9).randbytes(128 * 1024)
        started = time.monotonic()
        n, wire = send(tf, (ours, peer), chunk_file(data), 0, len(data), None,
                       1 << 16, False, step=32 * 1024, delay=0.05)
        assert time.monotonic() - started > 0.3
    assert n == len(data) and wire == data


@pytest.mark.parametrize("sock", ["pair", "tcp_pair"])
def test_timeout_expires(tf, chunk_file, sock, request):
    ours, peer = request.getfixturevalue(sock)
    ours.settimeout(0.2)
    data = bytes(8 << 20)  # far more than the socket buffers hold; nobody reads
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        tf.send_file(ours.fileno(), chunk_file(data), 0, len(data), None,
                     bytearray(1 << 16), 0.2)
    elapsed = time.monotonic() - started
    assert isinstance(info.value, socket.timeout) and str(info.value) == "timed out"
    assert 0 < info.value.sent < len(data)
    assert 0.19 <= elapsed < 3.0


def test_timeout_zero_fails_at_once_when_full(tf, pair, chunk_file):
    ours, peer = pair
    ours.setblocking(False)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        tf.send_file(ours.fileno(), chunk_file(bytes(4 << 20)), 0, 4 << 20, None,
                     bytearray(1 << 16), 0)
    assert time.monotonic() - started < 1.0


def test_signal_handler_exception_interrupts(tf, chunk_file):
    # A blocked send (no timeout, nobody reads) ends with the handler's exception.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread")

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        for timeout in (None, 30.0):  # blocked in writev, then in poll
            ours, peer = socket.socketpair()
            # if the signal were missed, the peer's shutdown ends the send (EPIPE)
            watchdog = threading.Timer(5.0, peer.shutdown, args=(socket.SHUT_RDWR,))
            with ours, peer:
                ours.settimeout(timeout)
                watchdog.start()
                signal.setitimer(signal.ITIMER_REAL, 0.2)
                try:
                    with pytest.raises(Interrupted):
                        tf.send_file(ours.fileno(), chunk_file(bytes(8 << 20)), 0,
                                     8 << 20, None, bytearray(1 << 16), timeout)
                finally:
                    watchdog.cancel()
                    watchdog.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("timeout", [None, 5.0])
@pytest.mark.parametrize("kind", ["md5", "hashlib"])
def test_signals_handled_mid_send_resume(tf, chunk_file, timeout, kind):
    # Handlers that return: every interrupted writev, poll or pread resumes
    # where it stopped, mid-piece included.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread")
    calls = []
    previous = signal.signal(signal.SIGALRM, lambda *_: calls.append(1))
    ours, peer = socket.socketpair()
    try:
        with ours, peer:
            small_buffers(ours, peer)
            ours.settimeout(timeout)
            data = random.Random(10).randbytes(1 << 20)
            h = make_hasher(tf, kind)
            signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
            n, wire = send(tf, (ours, peer), chunk_file(data), 3, len(data) - 3, h,
                           30_000, step=8192, delay=0.0005)
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert calls
    assert n == len(data) - 3 and wire == framed(data[3:], 30_000)
    assert h.hexdigest() == hashlib.md5(data[3:]).hexdigest()


# ------------------------------------------------------------------- failures

def test_peer_closed_before(tf, pair, chunk_file):
    ours, peer = pair
    peer.close()
    with pytest.raises(BrokenPipeError) as info:  # EPIPE, and no SIGPIPE death
        tf.send_file(ours.fileno(), chunk_file(b"x" * 1000), 0, 1000, None,
                     bytearray(64), 5.0)
    assert not isinstance(info.value, tf.SourceReadError)
    assert info.value.errno == errno.EPIPE and info.value.sent == 0


@pytest.mark.parametrize("sock", ["pair", "tcp_pair"])
def test_peer_closes_midway(tf, chunk_file, sock, request):
    ours, peer = request.getfixturevalue(sock)
    rd = Reader(peer, close_after=100_000)
    rd.start()
    data = bytes(32 << 20)
    with pytest.raises(OSError) as info:
        tf.send_file(ours.fileno(), chunk_file(data), 0, len(data), None,
                     bytearray(1 << 16), 5.0)
    rd.finish()
    exc = info.value
    assert not isinstance(exc, (tf.SourceReadError, TimeoutError))
    assert exc.errno in (errno.EPIPE, errno.ECONNRESET)
    assert 100_000 <= exc.sent < len(data)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "raw"])
def test_file_shorter_than_asked(tf, pair, chunk_file, chunked):
    data = random.Random(11).randbytes(10_000)
    ours, peer = pair
    rd = Reader(peer)
    rd.start()
    h = make_hasher(tf, "md5")
    with pytest.raises(tf.SourceTruncated) as info:
        tf.send_file(ours.fileno(), chunk_file(data), 1000, 20_000, h,
                     bytearray(4096), 5.0, chunked)
    ours.shutdown(socket.SHUT_WR)
    wire = rd.finish()
    exc = info.value
    assert isinstance(exc, tf.SourceReadError) and isinstance(exc, OSError)
    assert exc.sent == 9000 and "offset 10000" in str(exc)
    assert (decoded(wire) if chunked else wire) == data[1000:]
    assert h.hexdigest() == hashlib.md5(data[1000:]).hexdigest()


def test_offset_past_the_end(tf, pair, chunk_file):
    with pytest.raises(tf.SourceTruncated) as info:
        tf.send_file(pair[0].fileno(), chunk_file(b"abc"), 10, 1, None, bytearray(8), 5.0)
    assert info.value.sent == 0


def test_bad_file_descriptors(tf, pair, chunk_file, tmp_path):
    ours, _ = pair
    fd = chunk_file(b"data")
    buf = bytearray(64)
    with pytest.raises(tf.SourceReadError) as info:
        tf.send_file(ours.fileno(), -1, 0, 4, None, buf, 5.0)
    assert info.value.errno == errno.EBADF
    dirfd = os.open(tmp_path, os.O_RDONLY)
    try:
        with pytest.raises(tf.SourceReadError) as info:
            tf.send_file(ours.fileno(), dirfd, 0, 4, None, buf, 5.0)
        assert info.value.errno == errno.EISDIR
    finally:
        os.close(dirfd)
    with pytest.raises(tf.SourceReadError) as info:  # a socket is not seekable
        tf.send_file(ours.fileno(), ours.fileno(), 0, 4, None, buf, 5.0)
    assert info.value.errno == errno.ESPIPE
    for timeout in (None, 5.0):  # the socket side: plain OSError
        with pytest.raises(OSError) as info:
            tf.send_file(-1, fd, 0, 4, None, buf, timeout)
        assert info.value.errno == errno.EBADF
        assert not isinstance(info.value, tf.SourceReadError)
    with pytest.raises(OSError) as info:  # a file open read-only as the "socket"
        tf.send_file(fd, fd, 0, 4, None, buf, None)
    assert info.value.errno == errno.EBADF
    assert not isinstance(info.value, tf.SourceReadError)


def test_argument_checks(tf, pair, chunk_file):
    ours, _ = pair
    fd = chunk_file(b"data")
    with pytest.raises(ValueError):
        tf.send_file(ours.fileno(), fd, -1, 4, None, bytearray(8), 5.0)
    with pytest.raises(ValueError):
        tf.send_file(ours.fileno(), fd, 0, -1, None, bytearray(8), 5.0)
    for timeout in (-1, -0.5, math.nan):
        with pytest.raises(ValueError):
            tf.send_file(ours.fileno(), fd, 0, 4, None, bytearray(8), timeout)
    for timeout in (object(), "5", b"5"):
        with pytest.raises(TypeError):
            tf.send_file(ours.fileno(), fd, 0, 4, None, bytearray(8), timeout)
    with pytest.raises(TypeError):
        tf.send_file(ours.fileno(), fd, 0, 4, None, b"read-only", 5.0)
    with pytest.raises(ValueError):
        tf.send_file(ours.fileno(), fd, 0, 4, None, bytearray(), 5.0)
    ours.settimeout(None)  # a timeout on a blocking socket could not be kept
    with pytest.raises(ValueError):
        tf.send_file(ours.fileno(), fd, 0, 4, None, bytearray(8), 5.0)


def test_hasher_error_propagates(tf, pair, chunk_file):
    class Failing:
        def update(self, data):
            raise RuntimeError("no hashing today")

    with pytest.raises(RuntimeError):
        tf.send_file(pair[0].fileno(), chunk_file(b"data"), 0, 4, Failing(),
                     bytearray(8), 5.0)


def test_gil_released_while_waiting(tf, pair, chunk_file):
    # While send_file waits for a full socket, another Python thread runs.
    ours, peer = pair
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        with pytest.raises(TimeoutError):
            tf.send_file(ours.fileno(), chunk_file(bytes(8 << 20)), 0, 8 << 20,
                         make_hasher(tf, "md5"), bytearray(1 << 16), 0.3)
    finally:
        stop.set()
        ticker.join(WAIT)
    assert len(ticks) > 20


# ------------------------------------------------------- fast against pure

def run_twin(modname, fd, offset, length, bufsize, chunked, kind, small):
    """(returned value or the exception's type, errno, sent and text), the
    bytes on the wire, and the digest."""
    tf = import_twin(modname)
    ours, peer = socket.socketpair()
    with ours, peer:
        if small:
            small_buffers(ours, peer)
        ours.settimeout(5.0)
        rd = Reader(peer)
        rd.start()
        hasher = make_hasher(tf, kind)
        try:
            outcome = tf.send_file(ours.fileno(), fd, offset, length, hasher,
                                   bytearray(bufsize), 5.0, chunked)
        except OSError as exc:
            outcome = (type(exc).__name__, exc.errno, exc.sent, str(exc))
        ours.shutdown(socket.SHUT_WR)
        wire = rd.finish()
    return outcome, wire, hasher and hasher.hexdigest()


@st.composite
def ranges(draw):
    """(file size, offset, length): mostly inside the file, sometimes past its end."""
    size = draw(st.integers(0, 400_000))
    offset = draw(st.integers(0, size + 10))
    length = draw(st.integers(0, max(size - offset, 0) + 10))
    if draw(st.booleans()):  # bias to the common case, the range in the file
        offset = min(offset, size)
        length = min(length, size - offset)
    return size, offset, length


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=ranges(), bufsize=st.integers(1, 300_000), chunked=st.booleans(),
       kind=st.sampled_from(["md5", "hashlib", "none"]), small=st.booleans(),
       seed=st.integers(0, 2**32))
def test_twins_agree(chunk_file, sizes, bufsize, chunked, kind, small, seed):
    size, offset, length = sizes
    # at most ~200 pieces: tiny pieces cost a writev each
    bufsize = max(bufsize, length // 200 + 1)
    data = random.Random(seed).randbytes(size)
    fd = chunk_file(data)
    results = [run_twin(m, fd, offset, length, bufsize, chunked, kind, small)
               for m in MODULES]
    assert results[0] == results[1]
    outcome, wire, digest = results[0]
    part = data[offset:offset + length]
    assert wire == (framed(part, bufsize) if chunked else part)
    assert digest == reference(kind, part)
    if offset + length <= size or length == 0:  # 0 bytes: no read at all
        assert outcome == length
    else:
        assert outcome[:3] == ("SourceTruncated", None, len(part))
