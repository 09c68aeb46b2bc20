"""Chunked transfer coding: compiled decoder/encoder next to the pure twin.

    .venv/bin/python -m pytest bench/bench_chunked.py --benchmark-enable -q

Compare the fast and pure rows of each group (a ratio; absolute times on a shared
machine are noise).
"""
import pytest

from _fastpath import chunked as fast
from storage.pure import chunked as pure

TWINS = [pytest.param(fast, id="fast"), pytest.param(pure, id="pure")]
MiB = 1 << 20
KiB = 1 << 10
TRAILERS = [("X-oio-Chunk-Meta-Metachunk-Hash", "0123456789abcdef0123456789abcdef"),
            ("X-oio-Chunk-Meta-Metachunk-Size", "8388608")]


def _wire(body_size, chunk_size):
    payload = bytes(range(256)) * (chunk_size // 256)
    chunks = [fast.encode_chunk(payload) for _ in range(body_size // chunk_size)]
    return b"".join(chunks) + fast.encode_last(TRAILERS)


BIG_WIRE = _wire(8 * MiB, 64 * KiB)
BIG_READS = [BIG_WIRE[i:i + 256 * KiB] for i in range(0, len(BIG_WIRE), 256 * KiB)]
SMALL_WIRE = _wire(4 * KiB, 4 * KiB)


def _decode(mod, reads):
    dec = mod.ChunkedDecoder()
    total = 0
    for data in reads:
        pieces, _ = dec.feed(data)
        for piece in pieces:
            total += len(piece)
    dec.finish()
    return total


@pytest.mark.parametrize("mod", TWINS)
def test_decode_8mib_in_64kib_chunks(benchmark, mod):
    benchmark.group = "decode 8 MiB, 64 KiB chunks, 256 KiB reads"
    assert benchmark(_decode, mod, BIG_READS) == 8 * MiB


@pytest.mark.parametrize("mod", TWINS)
def test_decode_4kib_body(benchmark, mod):
    benchmark.group = "decode 4 KiB body + 2 trailers, one read"
    assert benchmark(_decode, mod, [SMALL_WIRE]) == 4 * KiB


@pytest.mark.parametrize("mod", TWINS)
def test_decode_4kib_bytewise_header(benchmark, mod):
    # worst case for line buffering: the size line and trailers arrive in pieces
    benchmark.group = "decode 4 KiB body, 16-byte reads"
    reads = [SMALL_WIRE[i:i + 16] for i in range(0, len(SMALL_WIRE), 16)]
    assert benchmark(_decode, mod, reads) == 4 * KiB


@pytest.mark.parametrize("mod", TWINS)
def test_encode_64kib_chunk(benchmark, mod):
    benchmark.group = "encode_chunk 64 KiB"
    payload = memoryview(bytes(64 * KiB))
    assert len(benchmark(mod.encode_chunk, payload)) == len(b"10000\r\n") + 64 * KiB + 2
