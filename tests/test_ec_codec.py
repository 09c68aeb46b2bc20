"""storage.ec.codec: conformance vectors, all erasure patterns, caller-owned
buffers, bad input, threads; with the compiled kernels and the numpy twin."""
import hashlib
import importlib
import itertools
import json
import pathlib
import random
import struct
import threading
import zlib

import pytest
from paths import EC_VECTORS, ec_vector_input
from hypothesis import given, settings, strategies as st

from conftest import twin_params
from storage.ec import header
from storage.ec.codec import Codec
from storage.ec.errors import (ECBadFragmentChecksum, ECInsufficientFragments,
                               ECInvalidFragmentMetadata, ECInvalidParameter)

VECTORS = EC_VECTORS
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
PATTERNS = list(itertools.combinations(range(9), 3))


@pytest.fixture(params=twin_params("gf16"))
def codec(request):
    return Codec(gf16=importlib.import_module(request.param))


@pytest.fixture(scope="module")
def fast_codec():
    return Codec()


def segment_ids():
    return [s["input_size"] for s in MANIFEST["segments"]]


@pytest.mark.parametrize("seg", MANIFEST["segments"], ids=segment_ids())
def test_vectors_encode_decode(seg, fast_codec):
    data = ec_vector_input(seg)
    assert hashlib.sha256(data).hexdigest() == seg["input_sha256"]
    frags = fast_codec.encode(data)
    for f in seg["fragments"]:
        assert len(frags[f["index"]]) == f["size"] == seg["fragment_size"]
        assert hashlib.sha256(frags[f["index"]]).hexdigest() == f["sha256"]
        assert frags[f["index"]] == (VECTORS / f["file"]).read_bytes()
    stored = [(VECTORS / f["file"]).read_bytes() for f in seg["fragments"]]
    for name in seg["decode_3_missing_ok"]:
        lost = {int(x) for x in name.split("_")[1:]}
        assert fast_codec.decode([stored[i] for i in range(9) if i not in lost]) == data


def test_vector_metachunk_decodes_from_six_chunks(fast_codec):
    mc = MANIFEST["metachunk"]
    data = ec_vector_input(mc)
    chunks = {c["pos"]: (VECTORS / c["file"]).read_bytes() for c in mc["chunks"]}
    for c in mc["chunks"]:
        assert hashlib.sha256(chunks[c["pos"]]).hexdigest() == c["sha256"]
    use = [1, 2, 3, 5, 6, 8]
    fsize = mc["ec_fragment_size"]
    out = bytearray()
    for off in range(0, len(chunks["0.0"]), fsize):
        out += fast_codec.decode([chunks[f"0.{i}"][off:off + fsize] for i in use])
    assert hashlib.md5(out).hexdigest() == mc["input_md5"] and out == data


@pytest.mark.parametrize("size", [1, 13, 100, 1000, 4096 + 7])
def test_all_84_patterns(codec, size):
    data = random.Random(size).randbytes(size)
    frags = codec.encode(data)
    for lost in PATTERNS:
        avail = [frags[i] for i in range(9) if i not in lost]
        assert codec.decode(avail) == data, lost
        assert codec.reconstruct(avail, list(lost)) == [frags[i] for i in lost], lost


@pytest.mark.parametrize("lost", [(0, 1, 2), (3, 4, 5), (1, 5, 7), (6, 7, 8)])
def test_one_mib_into_caller_buffers(fast_codec, lost):
    data = random.Random(9).randbytes(1 << 20)
    fsize = fast_codec.fragment_size(len(data))
    assert fsize == 174844
    pool = [bytearray(fsize + 5) for _ in range(9)]  # larger than needed is fine
    assert fast_codec.encode_into(data, pool) == fsize
    frags = [bytes(b[:fsize]) for b in pool]
    assert frags == fast_codec.encode(data)
    out = bytearray(len(data))   # exactly the segment: the tail goes through scratch
    avail = [memoryview(frags[i]) for i in range(9) if i not in lost]
    assert fast_codec.decode_into(avail, out) == len(data) and out == data
    outs = [bytearray(fsize) for _ in lost]
    fast_codec.reconstruct_into(avail, lost, outs)
    assert [bytes(o) for o in outs] == [frags[i] for i in lost]


def test_inline_crc32_and_library_version():
    c = Codec(chksum_type="inline_crc32", library_version=0x010602)
    data = b"0123456789" * 50
    frags = c.encode(data)
    for i, f in enumerate(frags):
        h = header.parse(f)
        assert h.index == i and h.library_version == 0x010602
        assert h.chksum == zlib.crc32(f[80:])
    assert c.decode(frags[3:]) == data
    bad = bytearray(frags[4])
    bad[100] ^= 1
    with pytest.raises(ECBadFragmentChecksum, match="fragment 4: payload CRC32"):
        c.decode(frags[:4] + [bytes(bad)] + frags[5:6])
    with pytest.raises(ECBadFragmentChecksum, match="5 intact fragments"):
        c.reconstruct(frags[1:4] + [bytes(bad)] + frags[5:7], [0])
    # a corrupt fragment is left out when enough others remain
    assert c.decode([bytes(bad)] + frags[:4] + frags[5:7]) == data
    assert c.reconstruct([bytes(bad)] + frags[:4] + frags[5:7], [4]) == [frags[4]]


def rewrite(frag, offset, value):
    raw = bytearray(frag)
    raw[offset:offset + len(value)] = value
    raw[67:71] = struct.pack("<I", zlib.crc32(bytes(raw[:59])))
    return bytes(raw)


def test_bad_input_never_wrong_bytes(fast_codec):
    c = fast_codec
    a = c.encode(bytes(range(100)))
    b = c.encode(bytes(range(50)))
    cases = [
        (a[:5], ECInsufficientFragments, "5 distinct fragments"),
        (a[:5] + a[:1], ECInsufficientFragments, "need 6"),
        ([], ECInsufficientFragments, "0 distinct"),
        (a[:3] + b[3:6], ECInvalidFragmentMetadata, "different segments"),
        (a[:5] + [a[5][:90]], ECInvalidFragmentMetadata, "header says 80 \\+ 18"),
        (a[:5] + [a[5][:40]], ECInvalidFragmentMetadata, "shorter than"),
        (a[:5] + [a[5] + b"x"], ECInvalidFragmentMetadata, "header says"),
        ([rewrite(a[0], 59, b"\0")] + a[1:6], ECInvalidFragmentMetadata, "bad magic"),
        ([rewrite(a[0], 0, b"\x0c")] + a[1:6], ECInvalidFragmentMetadata, "index 12"),
        ([rewrite(a[0], 4, b"\x14") + b"\0\0"] + a[1:6], ECInvalidFragmentMetadata,
         "payload size 20"),
        (a[1:6] + [a[0][:67] + b"\0\0\0\0" + a[0][71:]], ECInvalidFragmentMetadata,
         "position 5"),
    ]
    for frags, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            c.decode(frags)
    with pytest.raises(ECInvalidParameter, match="single bytes-like"):
        c.decode(a[0])
    with pytest.raises(ECInvalidParameter, match="not in 0..8"):
        c.reconstruct(a[:6], [9])
    with pytest.raises(ECInsufficientFragments):
        c.reconstruct(a[:6], [0])  # 0 cannot be rebuilt from itself: 5 others
    with pytest.raises(ECInvalidParameter, match="buffer is 50 bytes"):
        c.decode_into(a[:6], bytearray(50))
    with pytest.raises(ECInvalidParameter, match="read-only"):
        c.encode_into(b"x", [bytes(82)] * 9)
    with pytest.raises(ECInvalidParameter, match="need 9 output buffers"):
        c.encode_into(b"x", [bytearray(82)] * 8)


def test_fragments_needed(fast_codec):
    assert fast_codec.fragments_needed([0]) == [1, 2, 3, 4, 5, 6]
    assert fast_codec.fragments_needed([6], [0, 1]) == [2, 3, 4, 5, 7, 8]
    with pytest.raises(ECInsufficientFragments):
        fast_codec.fragments_needed([0, 1, 2], [3])


@pytest.mark.parametrize("k,m", [(4, 2), (10, 4), (2, 1)])
def test_other_shapes_roundtrip(k, m):
    c = Codec(k, m)
    data = random.Random(k).randbytes(5000)
    frags = c.encode(data)
    assert len(frags) == k + m
    patterns = list(itertools.combinations(range(k + m), m))
    for lost in random.Random(m).sample(patterns, min(len(patterns), 25)):
        avail = [frags[i] for i in range(k + m) if i not in lost]
        assert c.decode(avail) == data
        assert c.reconstruct(avail, lost) == [frags[i] for i in lost]


@pytest.mark.parametrize("args", [dict(k=0), dict(m=0), dict(k=30, m=3),
                                  dict(chksum_type="md5"), dict(library_version=-1)])
def test_bad_parameters(args):
    with pytest.raises(ECInvalidParameter):
        Codec(**args)


def test_two_threads(fast_codec):
    rnd = random.Random(5)
    segments = [rnd.randbytes(300_000 + i) for i in range(6)]
    expected = [fast_codec.encode(s) for s in segments]
    errors = []

    def work(offset):
        try:
            for _ in range(3):
                for i in range(offset, len(segments), 2):
                    frags = fast_codec.encode(segments[i])
                    assert frags == expected[i]
                    assert fast_codec.decode(frags[3:]) == segments[i]
        except Exception as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(o,)) for o in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=3000), lost=st.sets(st.integers(0, 8), max_size=3))
def test_property_roundtrip_and_twins_agree(fast_codec, data, lost):
    pure = Codec(gf16=importlib.import_module("storage.pure.gf16"))
    frags = fast_codec.encode(data)
    assert frags == pure.encode(data)
    avail = [frags[i] for i in range(9) if i not in lost]
    random.Random(len(data)).shuffle(avail)
    assert fast_codec.decode(avail) == data == pure.decode(avail)
    if lost:
        assert fast_codec.reconstruct(avail, sorted(lost)) == [frags[i] for i in sorted(lost)]


class StepwiseGf16:
    """_fastpath.gf16 without encode_fragments: the codec takes its checked,
    one-step-at-a-time path (the reference for the one-call path)."""

    def __init__(self, mod):
        self.Gf16Matrix = mod.Gf16Matrix
        self.gf16_matmul = mod.gf16_matmul
        self.split_into = mod.split_into


@pytest.mark.parametrize("chksum", ["none", "inline_crc32"])
@pytest.mark.parametrize("k,m", [(6, 3), (4, 2), (10, 4)])
def test_encode_into_one_call_matches_stepwise(k, m, chksum):
    fast = importlib.import_module("_fastpath.gf16")
    one = Codec(k, m, chksum_type=chksum, library_version=0x010602)
    steps = Codec(k, m, chksum_type=chksum, library_version=0x010602, gf16=StepwiseGf16(fast))
    assert one._encode_fragments is not None and steps._encode_fragments is None
    rnd = random.Random(k * m)
    for size in [0, 1, 2 * k - 1, 2 * k, 64 * k, 64 * k + 2, 8192 * k + 7, 1 << 20]:
        data = rnd.randbytes(size)
        fsize = one.fragment_size(size)
        a = [bytearray(b"\x55" * (fsize + 2)) for _ in range(k + m)]
        b = [bytearray(b"\x55" * (fsize + 2)) for _ in range(k + m)]
        assert one.encode_into(data, (x for x in a)) == steps.encode_into(data, b) == fsize
        assert a == b, size
        if chksum == "inline_crc32":
            assert [header.parse(f[:fsize]).chksum for f in a] == [
                zlib.crc32(f[80:fsize]) for f in a]


def test_encode_into_errors_unchanged(fast_codec):
    c = fast_codec
    with pytest.raises(ECInvalidParameter, match="output buffer 3 is 81 bytes, fragments are 82"):
        c.encode_into(b"x", [bytearray(82)] * 3 + [bytearray(81)] + [bytearray(82)] * 5)
    with pytest.raises(ECInvalidParameter, match="need 9 output buffers, got 10"):
        c.encode_into(b"x", (bytearray(82) for _ in range(10)))
    with pytest.raises(ECInvalidParameter, match="output buffer 8 is read-only"):
        c.encode_into(b"x", [bytearray(82)] * 8 + [memoryview(bytearray(82)).toreadonly()])
    with pytest.raises(TypeError):
        c.encode_into(memoryview(bytes(100))[::2], [bytearray(82)] * 9)   # not contiguous
    with pytest.raises(TypeError):
        c.encode_into(12, [bytearray(82)] * 9)
