"""Micro-benchmarks of the multi-buffer MD5 next to hashlib (OpenSSL).

    .venv/bin/python -m pytest bench/bench_md5mb.py --benchmark-enable -q

Groups:
  md5-1stream-8MiB   one stream, one 8 MiB update: md5mb on each kernel (one busy
                     lane: the scalar kernel runs it), hashlib.md5
  md5-threads-N      N = 1, 2, 4, 8 threads, each hashing its own 4 MiB stream in
                     256 KiB updates (the pump's piece size), md5mb (default kernel)
                     vs hashlib on the same threads
At the end a table gives, per row, the aggregate MB/s (wall clock, best round)
and MB per CPU-second of this process (the cost per core, which is what the
engine improves; other tenants of a shared machine do not count), and the
ratio md5mb/hashlib of each. Compare within a group: the machine is noisy.
"""
import hashlib
import random
import threading
import time

import pytest

from _fastpath import md5mb

MIB = 1 << 20
PIECE = 256 << 10
STREAM = 4 * MIB
# bounded runs: a handful of rounds each, whatever the timer says
ROUNDS = dict(rounds=5, iterations=1, warmup_rounds=1)
KERNELS = md5mb.available_kernels()


@pytest.fixture(scope="module")
def eight_mib():
    return random.Random(1).randbytes(8 * MIB)


@pytest.fixture(scope="module")
def streams():
    rng = random.Random(2)
    return [rng.randbytes(STREAM) for _ in range(8)]


@pytest.fixture(scope="module")
def table(request):
    """Rows (name, threads) -> (best MB/s, best MB per CPU-second), printed
    with ratios when the module is done."""
    rows = {}
    yield rows
    out = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if out is None or capture is None or not rows:
        return
    with capture.global_and_fixture_disabled():
        print_table(out, rows)


def print_table(out, rows):
    out.write_line("")
    out.write_line("md5 threads: aggregate MB/s (wall) and MB per CPU-second, best of rounds")
    out.write_line("threads  md5mb MB/s  hashlib MB/s  ratio   md5mb MB/cpu-s  hashlib MB/cpu-s  ratio")
    for n in sorted({k[1] for k in rows}):
        ours, ref = rows.get(("md5mb", n)), rows.get(("hashlib", n))
        if not ours or not ref:
            continue
        out.write_line("%7d  %10.0f  %12.0f  %5.2fx  %14.0f  %16.0f  %5.2fx" % (
            n, ours[0], ref[0], ours[0] / ref[0], ours[1], ref[1], ours[1] / ref[1]))
    out.write_line("md5mb kernel: %s" % md5mb.kernel())


@pytest.mark.benchmark(group="md5-1stream-8MiB")
@pytest.mark.parametrize("impl", [f"md5mb-{k}" for k in KERNELS] + ["hashlib"])
def test_one_stream(benchmark, eight_mib, impl):
    before = md5mb.kernel()
    if impl == "hashlib":
        make = hashlib.md5
    else:
        md5mb._set_kernel(impl.split("-", 1)[1])
        make = md5mb.Md5

    def run():
        h = make()
        h.update(eight_mib)
        return h.digest()

    try:
        assert benchmark.pedantic(run, **ROUNDS) == hashlib.md5(eight_mib).digest()
    finally:
        md5mb._set_kernel(before)


def hash_streams(make, streams):
    """Each stream hashed by its own thread in PIECE updates; (digests, wall
    seconds, process CPU seconds)."""
    digests = [None] * len(streams)
    start = threading.Barrier(len(streams) + 1)

    def work(i):
        view = memoryview(streams[i])
        h = make()
        start.wait(timeout=30)
        for pos in range(0, len(view), PIECE):
            h.update(view[pos:pos + PIECE])
        digests[i] = h.digest()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(streams))]
    for t in threads:
        t.start()
    cpu, wall = time.process_time(), time.perf_counter()
    start.wait(timeout=30)
    for t in threads:
        t.join(timeout=120)
    return digests, time.perf_counter() - wall, time.process_time() - cpu


@pytest.mark.parametrize("nthreads", [1, 2, 4, 8])
@pytest.mark.parametrize("impl", ["md5mb", "hashlib"])
def test_threads(benchmark, streams, table, impl, nthreads):
    benchmark.group = f"md5-threads-{nthreads}"
    make = md5mb.Md5 if impl == "md5mb" else hashlib.md5
    mine = streams[:nthreads]
    best = [0.0, 0.0]

    def run():
        digests, wall, cpu = hash_streams(make, mine)
        mb = STREAM * nthreads / 1e6
        best[0] = max(best[0], mb / wall)
        best[1] = max(best[1], mb / max(cpu, 1e-6))
        return digests

    before = md5mb.engine_stats()
    got = benchmark.pedantic(run, **ROUNDS)
    assert got == [hashlib.md5(s).digest() for s in mine]
    table[(impl, nthreads)] = tuple(best)
    benchmark.extra_info["MB/s"] = round(best[0])
    benchmark.extra_info["MB/cpu-s"] = round(best[1])
    if impl == "md5mb":  # how full the lanes were: batches by busy lanes
        grew = [b - a for a, b in zip(before, md5mb.engine_stats())]
        benchmark.extra_info["batches by busy lanes"] = grew[1:]
