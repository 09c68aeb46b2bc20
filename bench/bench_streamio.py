"""Micro-benchmarks of streamio, fast next to its twin and the ecosystem reference.

    .venv/bin/python -m pytest bench/bench_streamio.py --benchmark-enable -q

Groups: md5-1MiB (Md5 vs hashlib.md5), pump-8MiB (socketpair -> file with
MD5 and a 256 KiB or 16 KiB buffer, fast vs pure; a thread sends), hash_file-8MiB (pread + MD5/blake3, fast vs pure = the
hashlib loop). Compare within a group: the machine is shared and noisy.
"""
import hashlib
import os
import random
import selectors
import socket
import threading

import pytest

from _fastpath import streamio as fast
from storage.pure import streamio as pure

MIB = 1 << 20
IMPLS = [pytest.param(fast, id="fast"), pytest.param(pure, id="pure")]
# bounded runs: a handful of rounds each, whatever the timer says
ROUNDS = dict(rounds=8, iterations=1, warmup_rounds=1)


@pytest.fixture(scope="module")
def one_mib():
    return random.Random(1).randbytes(MIB)


@pytest.fixture(scope="module")
def eight_mib():
    return random.Random(2).randbytes(8 * MIB)


@pytest.mark.benchmark(group="md5-1MiB")
@pytest.mark.parametrize("make", [
    pytest.param(fast.Md5, id="fast.Md5"),
    pytest.param(pure.Md5, id="pure.Md5"),
    pytest.param(hashlib.md5, id="hashlib.md5"),
])
def test_md5_1mib(benchmark, one_mib, make):
    def run():
        h = make()
        h.update(one_mib)
        return h.digest()

    assert benchmark.pedantic(run, **ROUNDS) == hashlib.md5(one_mib).digest()


@pytest.mark.benchmark(group="pump-8MiB")
@pytest.mark.parametrize("bufsize", [
    # the server's buffer, and small reads (per-piece overhead dominates)
    pytest.param(256 * 1024, id="buf256k"),
    pytest.param(16 * 1024, id="buf16k"),
])
@pytest.mark.parametrize("sio", IMPLS)
def test_pump_8mib(benchmark, tmp_path, eight_mib, sio, bufsize):
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    fd = os.open(tmp_path / "chunk", os.O_WRONLY | os.O_CREAT, 0o644)
    buf = bytearray(bufsize)  # reused across rounds, as the server does
    sel = selectors.DefaultSelector()
    sel.register(ours, selectors.EVENT_READ)

    def run():
        os.lseek(fd, 0, os.SEEK_SET)
        sender = threading.Thread(target=peer.sendall, args=(eight_mib,))
        sender.start()
        h, total = sio.Md5(), 0
        for _ in range(100_000):
            moved, status = sio.pump(ours.fileno(), fd, buf, h, len(eight_mib) - total)
            total += moved
            if status == sio.LIMIT:
                break
            assert status == sio.AGAIN and sel.select(timeout=30)
        sender.join()
        return h.digest()

    try:
        assert benchmark.pedantic(run, **ROUNDS) == hashlib.md5(eight_mib).digest()
    finally:
        sel.close()
        os.close(fd)
        ours.close()
        peer.close()


@pytest.mark.benchmark(group="hash_file-8MiB")
@pytest.mark.parametrize("algo", ["md5", "blake3"])
@pytest.mark.parametrize("sio", IMPLS)
def test_hash_file_8mib(benchmark, tmp_path, eight_mib, sio, algo):
    path = tmp_path / "chunk"
    path.write_bytes(eight_mib)
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(256 * 1024)
    try:
        got = benchmark.pedantic(sio.hash_file, args=(fd, algo, 0, -1, buf), **ROUNDS)
    finally:
        os.close(fd)
    if algo == "md5":
        assert got == hashlib.md5(eight_mib).hexdigest().upper()
