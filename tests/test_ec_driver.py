"""storage.ec.driver.ECDriver against pyeclib's liberasurecode_rs_vand."""
import itertools
import random

import pytest
from hypothesis import given, settings, strategies as st

from storage.ec import (ECBackendNotSupported, ECDriver, ECInsufficientFragments,
                        ECInvalidParameter)

pyeclib = pytest.importorskip("pyeclib.ec_iface")

PATTERNS = list(itertools.combinations(range(9), 3))


def reference(chksum_type="none"):
    return pyeclib.ECDriver(k=6, m=3, ec_type="liberasurecode_rs_vand", chksum_type=chksum_type)


@pytest.fixture(scope="module")
def ours():
    return ECDriver(k=6, m=3, ec_type="liberasurecode_rs_vand")


@pytest.fixture(scope="module")
def ref():
    return reference()


@pytest.mark.parametrize("chksum_type", ["none", "inline_crc32"])
def test_random_sizes_byte_identical(chksum_type):
    ours, ref = ECDriver(chksum_type=chksum_type), reference(chksum_type)
    rnd = random.Random(42)
    sizes = [0, 1, 11, 12, 13, 24, 25] + [rnd.randrange(1, 200_000) for _ in range(12)]
    for size in sizes:
        data = rnd.randbytes(size)
        frags = ours.encode(data)
        assert frags == ref.encode(data), size
        lost = rnd.choice(PATTERNS)
        avail = [frags[i] for i in range(9) if i not in lost]
        assert ref.decode(avail) == data == ours.decode(avail)
        assert ours.reconstruct(avail, list(lost)) == ref.reconstruct(avail, list(lost))


@pytest.mark.parametrize("size", [100, 4097])
def test_all_84_patterns_cross_decode(ours, ref, size):
    data = random.Random(size).randbytes(size)
    frags = ref.encode(data)
    assert ours.encode(data) == frags
    for lost in PATTERNS:
        avail = [frags[i] for i in range(9) if i not in lost]
        assert ours.decode(avail) == data
        assert ours.reconstruct(avail, list(lost)) == ref.reconstruct(avail, list(lost))


@pytest.mark.parametrize("size", [1 << 20, (1 << 20) + 7])
def test_one_mib(ours, ref, size):
    data = random.Random(size).randbytes(size)
    frags = ours.encode(data)
    assert frags == ref.encode(data)
    for lost in [(0, 1, 2), (2, 5, 8)]:
        avail = [frags[i] for i in range(9) if i not in lost]
        assert ref.decode(avail) == data == ours.decode(avail)


def test_library_version_written():
    frag = ECDriver(library_version=0x010602).encode(b"hello")[0]
    assert frag[63:67] == bytes([0x02, 0x06, 0x01, 0x00])
    assert reference().decode(ECDriver(library_version=0x010602).encode(b"hello")) == b"hello"


def test_metadata_and_helpers(ours, ref):
    for chksum_type in ("none", "inline_crc32"):
        frags = ECDriver(chksum_type=chksum_type).encode(b"x" * 500)
        for f in frags:
            assert ours.get_metadata(f, 1) == ref.get_metadata(f, 1)
            assert ours.get_metadata(f) == ref.get_metadata(f)
    bad = bytearray(ECDriver(chksum_type="inline_crc32").encode(b"x" * 500)[2])
    bad[90] ^= 1
    assert ours.get_metadata(bytes(bad), 1) == ref.get_metadata(bytes(bad), 1)
    for missing, exclude in [([0], []), ([7], []), ([0, 1, 2], []), ([6], [0, 1]), ([8], [3])]:
        assert ours.fragments_needed(missing, exclude) == ref.fragments_needed(missing, exclude)
    frags = ours.encode(bytes(range(100)))
    ranges = [(0, 3), (10, 20), (99, 99)]
    assert ours.decode(frags[3:], ranges=ranges) == ref.decode(frags[3:], ranges=ranges)
    with pytest.raises(ECInvalidParameter):
        ours.decode(frags[3:], ranges=[(50, 100)])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**8), st.integers(1, 4 << 20))
def test_segment_info(ours, ref, data_len, segment_size):
    assert ours.get_segment_info(data_len, segment_size) == ref.get_segment_info(data_len, segment_size)


@pytest.mark.parametrize("data_len,segment_size", [(0, 1 << 20), (1, 1 << 20), ((1 << 20) + 11, 1 << 20),
                                                   ((1 << 20) + 12, 1 << 20), (3 << 20 | 5, 1 << 20)])
def test_segment_info_edges(ours, ref, data_len, segment_size):
    assert ours.get_segment_info(data_len, segment_size) == ref.get_segment_info(data_len, segment_size)


def test_driver_errors(ours):
    with pytest.raises(ECBackendNotSupported):
        ECDriver(ec_type="isa_l_rs_vand")
    with pytest.raises(ECInvalidParameter):
        ECDriver(chksum_type="algsig")
    with pytest.raises(ECInsufficientFragments):
        ours.decode(ours.encode(b"abc")[:5])
    with pytest.raises(ECInvalidParameter):
        ours.get_segment_info(10, 0)
