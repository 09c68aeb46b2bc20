"""Smoke runs of fuzz/fuzz_getcore.py (the compiled GET path against its twin and the
Python path's Range reader) over hypothesis inputs, without atheris."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from fuzzutil import load_fuzz_target



FUZZ = load_fuzz_target("fuzz_getcore")
CID = FUZZ.IDS[0].encode()


def test_fuzz_target_imports_without_atheris():
    assert callable(FUZZ.TestOneInput)
    assert "atheris" not in vars(FUZZ)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)


range_values = st.one_of(
    st.builds(lambda a, b: b"bytes=%s-%s" % (a, b),
              st.one_of(st.just(b""), st.integers(0, 5000).map(lambda i: b"%d" % i),
                        st.binary(max_size=3), st.text("0123456789", max_size=22).map(str.encode)),
              st.one_of(st.just(b""), st.integers(0, 5000).map(lambda i: b"%d" % i),
                        st.text("0123456789", max_size=22).map(str.encode))),
    st.text("bytes=-0123456789, ", max_size=30).map(str.encode),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.binary(min_size=2, max_size=2), range_values)
def test_fuzz_target_on_ranges(ctl, size, value):
    """Mode 2: a GET or HEAD of a remembered chunk with the Range header fuzzed; most of
    these are answered by both twins."""
    FUZZ.TestOneInput(bytes([(ctl & ~3) | 2]) + size + value)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 255), st.binary(min_size=2, max_size=2),
       st.lists(st.sampled_from([b"Connection: close\r\n", b"X-oio-req-id: r\r\n",
                                 b"X-Trans-Id: " + b"t" * 70 + b"\r\n", b"Host: x\r\n",
                                 b"Content-Length: 0\r\n", b"Expect: 100-continue\r\n",
                                 b"X-oio-check-hash: true\r\n", b"Connection: keep-alive\r\n",
                                 b"Range: bytes=-9\r\n", b" folded\r\n"]), max_size=4))
def test_fuzz_target_on_header_mixes(ctl, size, lines):
    """Mode 1: a valid request line and Host, then fuzzed header lines."""
    FUZZ.TestOneInput(bytes([(ctl & ~3) | 1]) + size + b"".join(lines))


def test_fuzz_target_serves_and_declines():
    """The fixed cases behind the smoke runs: a whole GET, a range, a HEAD, a declined
    HEAD (no stored hash), a never-remembered chunk, n out of the buffer. Each head
    the core answers is answered twice: by serve() and through the lane."""
    counters = FUZZ.TWINS[0].stats.totals
    before = counters()["req.hits"]
    FUZZ.TestOneInput(bytes([0x01, 0, 0]))  # GET of chunk 0, whole
    FUZZ.TestOneInput(bytes([0x02, 0, 0]) + b"bytes=1-5")  # its range
    FUZZ.TestOneInput(bytes([0x11, 0, 0]))  # HEAD of chunk 0
    assert counters()["req.hits"] == before + 3 * 2
    FUZZ.TestOneInput(bytes([0x15, 0, 0]))  # HEAD of chunk 1: no stored hash
    FUZZ.TestOneInput(bytes([0x09, 0, 0]))  # chunk 2: never remembered
    FUZZ.TestOneInput(bytes([0x21, 1, 0]))  # n past the buffer: ValueError from both
    FUZZ.TestOneInput(bytes([0x21, 2, 0]))  # n negative
    FUZZ.TestOneInput(bytes([0x03, 0, 0]) + b"/" + CID.lower())  # mode 3: the target
    assert counters()["req.hits"] == before + 4 * 2


def test_a_disagreement_is_caught():
    """The target fails when the twins disagree: make the pure twin forget its chunk."""
    pure = FUZZ.TWINS[1].core
    pure.forget(FUZZ.IDS[0])
    try:
        with pytest.raises(AssertionError, match="disagree"):
            FUZZ.TestOneInput(bytes([0x01, 0, 0]))
    finally:  # fresh twins (the counters of both start again)
        for twin in FUZZ.TWINS:
            twin.close()
        FUZZ.TWINS = (FUZZ.Twin(FUZZ.fast, FUZZ.fast_lane, FUZZ.ROOT.name),
                      FUZZ.Twin(FUZZ.pure, FUZZ.pure_lane, FUZZ.ROOT.name))
    FUZZ.TestOneInput(bytes([0x01, 0, 0]))
