"""md5mb: Md5 and md5_many against hashlib, on every kernel the CPU has, from
one thread, many threads at once, and a forked child.

The compiled module is run with each of its kernels (the 8-lane ones go
through the process-wide engine for updates of 4 KiB and more); the twin has
only "scalar".
"""
import hashlib
import os
import random
import select
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import import_twin, twin_params

MODULES = [p.values[0] for p in twin_params("md5mb")]


def kernel_params():
    """(module name, kernel) for every kernel of every twin."""
    params = []
    for modname in MODULES:
        mod = import_twin(modname)
        for name in mod.available_kernels():
            params.append(pytest.param((modname, name),
                                       id=f"{modname.split('.')[0]}-{name}"))
    return params


@pytest.fixture(params=kernel_params())
def md5mod(request):
    """The module with its kernel switched to the param's; restored after."""
    modname, name = request.param
    mod = import_twin(modname)
    before = mod.kernel()
    mod._set_kernel(name)
    yield mod
    mod._set_kernel(before)


@pytest.fixture(params=MODULES)
def mod(request):
    return import_twin(request.param)


def chunks(data, rng, biggest):
    """data cut at random points into pieces of at most biggest bytes."""
    pos = 0
    while pos < len(data):  # each turn takes >= 1 byte
        n = rng.randint(1, biggest)
        yield data[pos:pos + n]
        pos += n


# --------------------------------------------------------------- one stream

def test_every_small_size(md5mod):
    rng = random.Random(5)
    for size in range(301):
        data = rng.randbytes(size)
        assert md5mod.Md5(data).digest() == hashlib.md5(data).digest(), size


def test_random_splits(md5mod):
    rng = random.Random(6)
    for size in (0, 63, 64, 4095, 4096, 4097, 65536, 200_003):
        data = rng.randbytes(size)
        for biggest in (1 if size <= 4096 else 97, 5000, 70_000):
            h = md5mod.Md5()
            for i, piece in enumerate(chunks(data, rng, biggest)):
                h.update([bytes, bytearray, memoryview][i % 3](piece))
            assert h.hexdigest() == hashlib.md5(data).hexdigest(), (size, biggest)


@settings(max_examples=40, deadline=None)
@given(pieces=st.lists(st.binary(max_size=9000), max_size=6))
@pytest.mark.parametrize("combo", kernel_params())
def test_matches_hashlib(combo, pieces):
    modname, name = combo
    mod = import_twin(modname)
    before = mod.kernel()
    mod._set_kernel(name)
    try:
        ours, ref = mod.Md5(), hashlib.md5()
        for piece in pieces:
            ours.update(piece)
            ref.update(piece)
            assert ours.digest() == ref.digest()  # digest does not end the stream
    finally:
        mod._set_kernel(before)


def test_large_update(md5mod):
    # one update far larger than a slice of the engine, not a block multiple
    data = random.Random(7).randbytes((3 << 20) + 13)
    assert md5mod.Md5(data).digest() == hashlib.md5(data).digest()


def test_surface(mod):
    h = mod.Md5(b"abc")
    assert (h.name, h.digest_size, h.block_size) == ("md5", 16, 64)
    assert h.hexdigest() == "900150983cd24fb0d6963f7d28e17f72"
    assert h.digest() == bytes.fromhex(h.hexdigest())
    words = memoryview(bytes(range(256)) * 40).cast("I")  # a non-byte format
    h2 = mod.Md5()
    h2.update(words)
    assert h2.digest() == hashlib.md5(words).digest()


def test_rejects_what_hashlib_rejects(mod):
    for bad in ("text", 12, None, [1, 2]):
        with pytest.raises(TypeError):
            mod.Md5().update(bad)
        with pytest.raises(TypeError):
            hashlib.md5().update(bad)


def test_copy_is_independent(md5mod):
    rng = random.Random(8)
    head, left, right = rng.randbytes(10_000), rng.randbytes(7000), rng.randbytes(33)
    h = md5mod.Md5(head)
    other = h.copy()
    h.update(left)
    other.update(right)
    assert h.digest() == hashlib.md5(head + left).digest()
    assert other.digest() == hashlib.md5(head + right).digest()


# ------------------------------------------------------------------- lanes

def test_md5_many_random_lane_lengths(md5mod):
    """Streams of unequal lengths load, finish and refill lanes at different
    times; every lane must come out as hashlib's digest."""
    rng = random.Random(9)
    for _ in range(12):
        count = rng.randint(0, 20)
        messages = [rng.randbytes(rng.choice([0, 1, 64, rng.randint(0, 300 * 64)]))
                    for _ in range(count)]
        assert md5mod.md5_many(messages) == [hashlib.md5(m).digest() for m in messages]


def test_lane_kernels_agree_with_scalar():
    fast = import_twin("_fastpath.md5mb")
    rng = random.Random(10)
    messages = [rng.randbytes(rng.randint(0, 12_000)) for _ in range(19)]
    before = fast.kernel()
    try:
        fast._set_kernel("scalar")
        scalar = fast.md5_many(messages)
        for name in fast.available_kernels():
            fast._set_kernel(name)
            assert fast.md5_many(messages) == scalar, name
    finally:
        fast._set_kernel(before)


def test_md5_many_takes_any_buffer(mod):
    messages = [b"x" * 5000, bytearray(b"y" * 70), memoryview(b"z" * 200)[10:]]
    assert mod.md5_many(messages) == [hashlib.md5(m).digest() for m in messages]
    with pytest.raises(TypeError):
        mod.md5_many([b"ok", "not bytes"])


# ----------------------------------------------------------------- threads

def hash_in_threads(mod, streams, biggest):
    """Each stream hashed by its own thread in random pieces; their digests."""
    results = [None] * len(streams)
    errors = []
    start = threading.Barrier(len(streams))

    def work(i):
        try:
            rng = random.Random(i)
            h = mod.Md5()
            start.wait(timeout=30)
            for piece in chunks(streams[i], rng, biggest):
                h.update(piece)
            results[i] = h.digest()
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(streams))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    return results


@pytest.mark.parametrize("nthreads", [2, 8, 13])
def test_many_threads_many_streams(md5mod, nthreads):
    rng = random.Random(nthreads)
    streams = [rng.randbytes(rng.randint(100_000, 1_200_000)) for _ in range(nthreads)]
    got = hash_in_threads(md5mod, streams, 300_000)
    assert got == [hashlib.md5(s).digest() for s in streams]


def test_threads_share_batches():
    """Threads hashing at the same time end up in the same kernel calls (the
    point of the engine). Timing decides how often: a few rounds at most."""
    fast = import_twin("_fastpath.md5mb")
    lanes = [k for k in fast.available_kernels() if k != "scalar"]
    if not lanes:
        pytest.skip("no 8-lane kernel on this CPU")
    rng = random.Random(13)
    streams = [rng.randbytes(1 << 20) for _ in range(4)]
    expected = [hashlib.md5(s).digest() for s in streams]
    before = fast.kernel()
    fast._set_kernel(lanes[0])
    try:
        for _ in range(5):
            counts = fast.engine_stats()
            assert hash_in_threads(fast, streams, 256 << 10) == expected
            shared = sum(fast.engine_stats()[2:]) - sum(counts[2:])
            if shared:
                break
        assert shared > 0
    finally:
        fast._set_kernel(before)


def test_threads_sharing_one_object(md5mod):
    """Updates of one object from two threads serialize (same pieces, so the
    order does not matter)."""
    piece = random.Random(11).randbytes(50_000)
    h = md5mod.Md5()

    def work():
        for _ in range(10):
            h.update(piece)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert h.digest() == hashlib.md5(piece * 20).digest()


def test_engine_used_only_by_lane_kernels():
    fast = import_twin("_fastpath.md5mb")
    data = bytes(64 << 10)
    before = fast.kernel()
    try:
        for name in fast.available_kernels():
            fast._set_kernel(name)
            counts = fast.engine_stats()
            fast.Md5(data[:4095])  # small updates stay on the calling thread
            assert fast.engine_stats() == counts
            fast.Md5(data)
            grew = [b - a for a, b in zip(counts, fast.engine_stats())]
            if name == "scalar":
                assert grew == [0] * 9
            else:  # one thread alone: one busy lane, hashed by the scalar kernel
                assert grew[1] > 0 and grew[0] == 0 and grew[2:] == [0] * 7, name
    finally:
        fast._set_kernel(before)
    assert len(fast.engine_stats()) == 9


# -------------------------------------------------------------------- fork

def test_fork_then_hash_in_child(md5mod):
    """A child forked while another thread is hashing through the engine gets
    a fresh engine: its threads hash correctly and nothing waits forever."""
    rng = random.Random(12)
    streams = [rng.randbytes(300_000) for _ in range(3)]
    expected = b"".join(hashlib.md5(s).digest() for s in streams)
    stop = threading.Event()
    big = rng.randbytes(1 << 20)

    def busy():  # keeps the parent's engine leading while we fork
        for _ in range(10_000):
            if stop.is_set():
                return
            md5mod.Md5(big)

    background = threading.Thread(target=busy)
    background.start()
    rfd, wfd = os.pipe()
    try:
        time.sleep(0.01)
        pid = os.fork()
        if pid == 0:  # the child: report and leave without running pytest's cleanup
            status = 1
            try:
                os.close(rfd)
                got = b"".join(hash_in_threads(md5mod, streams, 40_000))
                os.write(wfd, got)
                status = 0
            finally:
                os._exit(status)
        os.close(wfd)
        wfd = -1
        received = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: EOF or the deadline
            ready, _, _ = select.select([rfd], [], [], 1.0)
            if ready:
                got = os.read(rfd, 4096)
                if not got:
                    break
                received += got
        else:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert received == expected
    finally:
        stop.set()
        background.join(timeout=60)
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)


# ------------------------------------------------------------- environment

def run_python(code, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("modname", MODULES)
def test_kernel_from_environment(modname):
    mod = import_twin(modname)
    for name in mod.available_kernels():
        done = run_python(f"import {modname} as m; print(m.kernel())",
                          STORAGE_NODE_MD5_KERNEL=name)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == name
    done = run_python(f"import {modname}", STORAGE_NODE_MD5_KERNEL="md4")
    assert done.returncode != 0
    assert "STORAGE_NODE_MD5_KERNEL" in done.stderr


def test_set_kernel_rejects_unknown(mod):
    assert mod.kernel() in mod.available_kernels()
    assert mod.available_kernels()[-1] == "scalar"
    with pytest.raises(ValueError):
        mod._set_kernel("sse9")
