"""The file sender thread (_fastpath.filesender) and its twin, on real TCP sockets on
127.0.0.1 and real files."""
import errno
import gc
import os
import select
import socket
import sys
import threading

import pytest

from conftest import import_twin, twin_params

MiB = 1 << 20


@pytest.fixture(params=twin_params("filesender"))
def mod(request):
    return import_twin(request.param)


@pytest.fixture
def sender(mod):
    s = mod.FileSender()
    yield s
    s.close()


@pytest.fixture
def listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock


def connected(listener, rcvbuf=None):
    """(server side, non-blocking as a worker's; client side)."""
    client = socket.socket()
    if rcvbuf:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.connect(listener.getsockname())
    client.settimeout(20)
    server, _ = listener.accept()
    server.setblocking(False)
    return server, client


@pytest.fixture
def file_of(tmp_path):
    opened = []

    def make(data):
        path = tmp_path / f"f{len(opened)}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        opened.append(fd)
        return fd

    yield make
    for fd in opened:
        os.close(fd)


def read_all(sock, size, out):
    buf = bytearray()
    while len(buf) < size:
        got = sock.recv(MiB)
        if not got:
            break
        buf += got
    out.append(bytes(buf))


def wait_completed(sender, count, timeout=20):
    """Collect ``count`` results, waiting on fileno() as the loop does."""
    results = []
    for _ in range(200):
        if len(results) >= count:
            break
        ready, _, _ = select.select([sender.fileno()], [], [], timeout / 200)
        if ready:
            results += sender.completed()
    return results


def test_sends_a_file_range_and_hands_the_token_back(sender, listener, file_of):
    data = os.urandom(6 * MiB)
    fd = file_of(data)
    server, client = connected(listener)
    got = []
    reader = threading.Thread(target=read_all, args=(client, 5 * MiB, got))
    reader.start()
    token = object()
    sender.submit(server.fileno(), fd, MiB, 5 * MiB, token)
    assert len(sender) == 1
    results = wait_completed(sender, 1)
    reader.join(20)
    assert results == [(token, 5 * MiB, 0)]
    assert got[0] == data[MiB:]
    assert len(sender) == 0
    assert sender.completed() == []
    server.close()
    client.close()


def test_many_jobs_at_once_each_its_own_bytes(sender, listener, file_of):
    files = [os.urandom(MiB + n * 4099) for n in range(6)]
    pairs = [connected(listener, rcvbuf=64 << 10) for _ in files]
    got = [[] for _ in files]
    readers = [threading.Thread(target=read_all, args=(c, len(d), g))
               for (_, c), d, g in zip(pairs, files, got)]
    for n, ((server, _), data) in enumerate(zip(pairs, files)):
        sender.submit(server.fileno(), file_of(data), 0, len(data), n)
    for reader in readers:
        reader.start()
    results = wait_completed(sender, len(files))
    for reader in readers:
        reader.join(20)
    assert sorted(results) == [(n, len(d), 0) for n, d in enumerate(files)]
    assert [g[0] for g in got] == files
    for server, client in pairs:
        server.close()
        client.close()


def test_a_file_shorter_than_announced_is_eio(sender, listener, file_of):
    fd = file_of(b"x" * 1000)
    server, client = connected(listener)
    sender.submit(server.fileno(), fd, 0, 5000, "short")
    assert wait_completed(sender, 1) == [("short", 1000, errno.EIO)]
    server.close()
    client.close()


def test_shutting_the_socket_down_ends_a_stalled_job(sender, listener, file_of):
    fd = file_of(os.urandom(16 * MiB))
    server, client = connected(listener, rcvbuf=4096)
    sender.submit(server.fileno(), fd, 0, 16 * MiB, "stalled")
    assert not select.select([sender.fileno()], [], [], 0.3)[0]  # the client reads nothing
    server.shutdown(socket.SHUT_RDWR)
    [(token, sent, err)] = wait_completed(sender, 1)
    assert token == "stalled" and 0 < sent < 16 * MiB and err == errno.EPIPE
    server.close()
    client.close()


def test_close_cancels_what_is_left(mod, listener, file_of):
    sender = mod.FileSender()
    fd = file_of(os.urandom(8 * MiB))
    server, client = connected(listener, rcvbuf=4096)
    sender.submit(server.fileno(), fd, 0, 8 * MiB, "left")
    sender.close()
    sender.close()  # twice is fine
    [(token, sent, err)] = sender.completed()
    assert token == "left" and sent < 8 * MiB and err == errno.ECANCELED
    with pytest.raises(ValueError):
        sender.submit(server.fileno(), fd, 0, 10, "late")
    server.close()
    client.close()


def test_bad_submissions(sender, listener, file_of):
    fd = file_of(b"abc")
    server, client = connected(listener)
    with pytest.raises(ValueError):
        sender.submit(server.fileno(), fd, 0, 0, "empty")
    with pytest.raises(ValueError):
        sender.submit(server.fileno(), fd, -1, 3, "negative")
    with pytest.raises(OSError):
        sender.submit(-1, fd, 0, 3, "no socket")
    assert len(sender) == 0
    sender.submit(server.fileno(), fd, 0, 3, "ok")
    assert wait_completed(sender, 1) == [("ok", 3, 0)]
    assert client.recv(10) == b"abc"
    server.close()
    client.close()


def test_one_job_per_socket_at_a_time(sender, listener, file_of):
    fd = file_of(os.urandom(16 * MiB))
    server, client = connected(listener, rcvbuf=4096)
    sender.submit(server.fileno(), fd, 0, 16 * MiB, "first")  # stalls: nobody reads
    with pytest.raises(OSError):
        sender.submit(server.fileno(), fd, 0, 3, "second")
    assert len(sender) == 1
    server.shutdown(socket.SHUT_RDWR)
    [(token, _, err)] = wait_completed(sender, 1)
    assert token == "first" and err == errno.EPIPE
    server.close()
    client.close()


def test_tokens_are_not_leaked(sender, listener, file_of):
    fd = file_of(b"t" * 100)
    token = ["a token"]
    before = sys.getrefcount(token)
    for _ in range(20):
        server, client = connected(listener)
        sender.submit(server.fileno(), fd, 0, 100, token)
        wait_completed(sender, 1)
        server.close()
        client.close()
    gc.collect()
    assert sys.getrefcount(token) == before
