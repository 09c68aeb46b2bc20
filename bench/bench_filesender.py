"""The file sender thread (filesender) next to its pure twin.

    .venv/bin/python -m pytest bench/bench_filesender.py --benchmark-enable -q
    .venv/bin/python bench/bench_filesender.py     # main(): the ratios from a quick run

Groups ``round trip: <size>`` time one ``submit()`` -> ``completed()`` round trip, as a
worker's loop makes it: submit a 1 MiB or 8 MiB range of a (page-cached) file for the
non-blocking server side of a real 127.0.0.1 TCP pair, wait on ``fileno()`` (poll),
then take the result with ``completed()``. A client thread reads the other side as fast
as it can; between rounds (untimed) the bench waits until it has read everything, so
each round starts with empty socket buffers. Each round must report every byte sent and
no error, and the client must have received them all at the end.

A third row, ``loop``, is the reference the sender replaces: the caller itself waits
for the socket to drain (poll) and sendfile()s the next piece, in Python.

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

from _fastpath import filesender as fast
from storage.pure import filesender as pure

MIB = 1 << 20
SIZES = {"1 MiB": MIB, "8 MiB": 8 * MIB}
ROUNDS = {"1 MiB": dict(rounds=150, iterations=1, warmup_rounds=5),
          "8 MiB": dict(rounds=40, iterations=1, warmup_rounds=2)}
WAIT = 20.0  # seconds any wait may take before the bench gives up


class Link:
    """A 127.0.0.1 TCP pair: the server side non-blocking (a worker's), the client
    side drained by a thread until the server side shuts down."""

    def __init__(self):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            self.client = socket.create_connection(listener.getsockname(), timeout=WAIT)
            self.server, _ = listener.accept()
        self.server.setblocking(False)
        self.received = 0
        self.reader = threading.Thread(target=self._drain, name="bench-client", daemon=True)
        self.reader.start()

    def _drain(self):
        buf = bytearray(MIB)
        while True:  # ends at EOF (close()) or on a socket error / timeout
            try:
                got = self.client.recv_into(buf)
            except OSError:
                return
            if not got:
                return
            self.received += got

    def caught_up(self, total):
        """Wait (bounded) until the client has read ``total`` bytes in all: each round
        then starts with empty socket buffers."""
        deadline = time.monotonic() + WAIT
        while self.received < total:
            if time.monotonic() > deadline:
                raise AssertionError("the client fell behind")
            time.sleep(0.0001)

    def close(self):
        """Shut the server side; -> bytes the client received in all."""
        self.server.shutdown(socket.SHUT_WR)
        self.reader.join(WAIT)
        assert not self.reader.is_alive(), "the client thread did not finish"
        self.server.close()
        self.client.close()
        return self.received


def make_file(directory):
    path = os.path.join(directory, "chunk")
    with open(path, "wb") as f:
        f.write(os.urandom(8 * MIB))
    fd = os.open(path, os.O_RDONLY)
    os.pread(fd, 8 * MIB, 0)  # in the page cache, as a hot chunk
    return fd


def sender_round(sender, link, filefd, size):
    """One submit -> completed() round trip, as a worker's loop makes it."""
    sockfd = link.server.fileno()
    poller = select.poll()
    poller.register(sender.fileno(), select.POLLIN)
    token = object()

    def call():
        sender.submit(sockfd, filefd, 0, size, token)
        for _ in range(1000):
            if not poller.poll(WAIT * 1000):
                raise AssertionError("the sender never completed the job")
            done = sender.completed()
            if done:
                return done
        raise AssertionError("no completion")

    return call


def loop_round(link, filefd, size):
    """The reference: the caller waits for the socket to drain and sends each piece."""
    sockfd = link.server.fileno()
    poller = select.poll()
    poller.register(sockfd, select.POLLOUT)

    def call():
        offset = 0
        for _ in range(100_000):
            if offset >= size:
                return [(None, offset, 0)]
            try:
                offset += os.sendfile(sockfd, filefd, offset, size - offset)
            except BlockingIOError:
                if not poller.poll(WAIT * 1000):
                    raise AssertionError("the socket never drained")
        raise AssertionError("too many pieces")

    return call


@pytest.fixture(scope="module")
def filefd(tmp_path_factory):
    fd = make_file(str(tmp_path_factory.mktemp("filesender")))
    yield fd
    os.close(fd)


IMPLS = [pytest.param(fast, id="fast"), pytest.param(pure, id="pure"),
         pytest.param(None, id="loop")]


@pytest.mark.parametrize("mod", IMPLS)
@pytest.mark.parametrize("name", sorted(SIZES))
def test_round_trip(benchmark, filefd, mod, name):
    size = SIZES[name]
    benchmark.group = f"round trip: {name}"
    link = Link()
    sender = mod.FileSender() if mod is not None else None
    calls = [0]
    try:
        call = sender_round(sender, link, filefd, size) if sender is not None \
            else loop_round(link, filefd, size)

        def setup():
            link.caught_up(calls[0] * size)
            calls[0] += 1

        done = benchmark.pedantic(call, setup=setup, **ROUNDS[name])
    finally:
        if sender is not None:
            sender.close()
        received = link.close()
    assert len(done) == 1 and done[0][1:] == (size, 0)
    assert received == calls[0] * size


def _median_ms(link, call, rounds, size):
    times = []
    for i in range(rounds):
        link.caught_up(i * size)
        t0 = time.perf_counter()
        done = call()
        times.append(time.perf_counter() - t0)
        assert len(done) == 1 and done[0][2] == 0
    return statistics.median(times) * 1e3


def main():
    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as root:
        filefd = make_file(root)
        try:
            for name, size in SIZES.items():
                rounds = ROUNDS[name]["rounds"] // (3 if quick else 1)
                rows = {}
                for label, mod in (("fast", fast), ("pure", pure), ("loop", None)):
                    link = Link()
                    sender = mod.FileSender() if mod is not None else None
                    try:
                        call = sender_round(sender, link, filefd, size) if sender else \
                            loop_round(link, filefd, size)
                        rows[label] = _median_ms(link, call, rounds, size)
                    finally:
                        if sender is not None:
                            sender.close()
                        assert link.close() == rounds * size
                print(f"round trip {name}  fast {rows['fast']:6.3f} ms  pure {rows['pure']:6.3f}"
                      f" ms  loop {rows['loop']:6.3f} ms  pure/fast "
                      f"{rows['pure'] / rows['fast']:4.2f}x  loop/fast "
                      f"{rows['loop'] / rows['fast']:4.2f}x")
        finally:
            os.close(filefd)


if __name__ == "__main__":
    main()
