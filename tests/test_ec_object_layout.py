"""storage.ec.layout: sizes and ranges against the spec's formulas and the
pyeclib-made metachunk vectors."""
import hashlib
import json
import math
import os
import random

import pytest
from paths import EC_VECTORS, ec_vector_input

from storage.ec import Codec
from storage.ec.layout import MIB, SEGMENT_SIZE, Layout, locate

VECTORS = str(EC_VECTORS)
FS = 174844


@pytest.fixture(scope="module")
def layout():
    return Layout(6, 3)


def spec_chunk_size(length):
    r = length % 2 ** 20
    return (length // 2 ** 20) * 174844 + (80 + 2 * math.ceil(r / 12) if r else 0)


def test_full_fragment(layout):
    assert layout.full_fragment == FS
    assert layout.fragment_size(SEGMENT_SIZE) == FS
    assert layout.fragment_size(0) == 80
    assert layout.fragment_size(1) == 82
    assert layout.fragment_size(12) == 82
    assert layout.fragment_size(13) == 84


@pytest.mark.parametrize("length", [0, 1, 11, 12, 13, MIB - 1, MIB, MIB + 1, 2621563,
                                    7 * MIB + 12345, 600 * MIB])
def test_chunk_size_formula(layout, length):
    assert layout.chunk_size(length) == spec_chunk_size(length)
    # ... and it is the sum of the fragments appended, segment by segment.
    count = layout.segment_count(length)
    assert sum(layout.fragment_span(length, j)[1] for j in range(count)) == spec_chunk_size(length)


def test_chunk_size_random(layout):
    rng = random.Random(7)
    for _ in range(500):
        length = rng.randrange(0, 50 * MIB)
        assert layout.chunk_size(length) == spec_chunk_size(length)


def test_segments_never_merged(layout):
    # 1 MiB + 1 byte: a 1-byte last segment (pyeclib would merge it).
    assert layout.segment_count(MIB + 1) == 2
    assert layout.segment_span(MIB + 1, 1) == (MIB, 1)
    assert layout.fragment_span(MIB + 1, 1) == (FS, 82)
    with pytest.raises(IndexError):
        layout.segment_span(MIB + 1, 2)
    assert layout.segment_count(0) == 0


def test_fragment_range_formula(layout):
    rng = random.Random(3)
    for _ in range(500):
        s = rng.randrange(0, 20 * MIB)
        e = rng.randrange(s, 20 * MIB)
        a, b = layout.fragment_range(s, e)
        assert a == (s // 2 ** 20) * 174844
        assert b == (e // 2 ** 20 + 1) * 174844 - 1
        segs = layout.segments_for(20 * MIB, s, e)
        assert a == layout.fragment_span(20 * MIB, segs[0])[0]
        last_off, last_len = layout.fragment_span(20 * MIB, segs[-1])
        assert b == last_off + last_len - 1
    with pytest.raises(ValueError):
        layout.fragment_range(5, 4)


def test_segments_for(layout):
    assert list(layout.segments_for(3 * MIB + 5, 0, 0)) == [0]
    assert list(layout.segments_for(3 * MIB + 5, MIB - 1, MIB)) == [0, 1]
    assert list(layout.segments_for(3 * MIB + 5, 3 * MIB, 10 * MIB)) == [3]
    assert list(layout.segments_for(0, 0, 10)) == []
    assert list(layout.segments_for(10, 10, 20)) == []


def test_metachunk_limit(layout):
    assert layout.metachunk_limit(100 * MIB) == 600 * MIB
    assert layout.metachunk_limit(MIB) == 6 * MIB
    assert layout.metachunk_limit(MIB // 6 + 1000) == MIB          # rounded down
    assert layout.metachunk_limit(1) == MIB                        # at least one segment
    assert layout.metachunk_limit(10 * MIB + 12345) == 60 * MIB
    with pytest.raises(ValueError):
        layout.metachunk_limit(0)


def test_split_and_locate(layout):
    assert layout.split(0, MIB) == [(0, 0)]
    assert layout.split(MIB, MIB) == [(0, MIB)]
    parts = layout.split(2 * MIB + 3, MIB)
    assert parts == [(0, MIB), (MIB, MIB), (2 * MIB, 3)]
    assert list(locate(parts, 0, 2 * MIB + 2)) == [(0, 0, MIB - 1), (1, 0, MIB - 1), (2, 0, 2)]
    assert list(locate(parts, MIB - 1, MIB)) == [(0, MIB - 1, MIB - 1), (1, 0, 0)]
    assert list(locate(parts, 2 * MIB + 1, 2 * MIB + 1)) == [(2, 1, 1)]


def test_metachunk_vectors_follow_the_layout(layout):
    """The vectors' metachunk: encode it segment by segment with the
    layout, append fragment i to chunk i, compare with pyeclib's chunks."""
    with open(os.path.join(VECTORS, "manifest.json")) as f:
        meta = json.load(f)["metachunk"]
    assert meta["ec_segment_size"] == layout.segment_size
    assert meta["ec_fragment_size"] == layout.full_fragment
    data = ec_vector_input(meta)
    assert len(data) == meta["input_size"]
    codec = Codec(6, 3)
    chunks = [bytearray() for _ in range(9)]
    bufs = [bytearray(FS) for _ in range(9)]
    for j in range(layout.segment_count(len(data))):
        off, length = layout.segment_span(len(data), j)
        fsize = codec.encode_into(memoryview(data)[off:off + length], bufs)
        assert (len(chunks[0]), fsize) == layout.fragment_span(len(data), j)
        for i in range(9):
            chunks[i] += bufs[i][:fsize]
    for entry in meta["chunks"]:
        i = int(entry["pos"].split(".")[1])
        assert entry["size"] == layout.chunk_size(len(data)) == len(chunks[i])
        assert hashlib.md5(chunks[i]).hexdigest() == entry["md5"]
        with open(os.path.join(VECTORS, entry["file"]), "rb") as f:
            assert f.read() == chunks[i]
