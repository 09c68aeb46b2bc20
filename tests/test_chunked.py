"""Chunked transfer coding: the compiled decoder/encoder and its pure twin.

Every framing case is fed whole, one byte at a time and split at random points,
with and without a pipelined request behind it; then property tests, a
differential test between the two implementations, and a smoke run of the fuzz
target.
"""
import array
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import import_twin, twin_params
from fuzzutil import load_fuzz_target

TWINS = twin_params("chunked")
PIPELINED = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


def splits(data, seed=0):
    """Ways to cut ``data`` into feeds: whole, byte by byte, random points."""
    yield "whole", [data]
    yield "bytewise", [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(data)), min(max(len(data) - 1, 0), rng.randint(1, 6))))
        bounds = [0, *cuts, len(data)]
        yield "random", [data[a:b] for a, b in zip(bounds, bounds[1:])]


def decode(mod, parts, **limits):
    """Feed ``parts``; return (body, trailers, rest) where rest is what the
    decoder left unconsumed (the next pipelined request)."""
    dec = mod.ChunkedDecoder(**limits)
    body = []
    rest = b""
    for i, part in enumerate(parts):
        pieces, consumed = dec.feed(part)
        for piece in pieces:
            assert isinstance(piece, memoryview) and len(piece) > 0
        body += [bytes(p) for p in pieces]
        if consumed < len(part):
            assert dec.done
            rest = bytes(part[consumed:]) + b"".join(parts[i + 1:])
            break
    dec.finish()
    assert dec.done
    data = b"".join(body)
    assert dec.body_size == len(data)
    return data, dec.trailers, rest


def expect_error(mod, parts, reason, **limits):
    dec = mod.ChunkedDecoder(**limits)
    with pytest.raises(mod.ChunkedError) as info:
        for part in parts:
            dec.feed(part)
    assert reason in str(info.value)
    # it stays failed
    with pytest.raises(mod.ChunkedError):
        dec.feed(b"0\r\n\r\n")
    with pytest.raises(mod.ChunkedError):
        dec.finish()


VALID = [
    (b"0\r\n\r\n", b"", []),
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello", []),
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world", []),
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789", []),
    (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789", []),
    (b"0005\r\nhello\r\n0000\r\n\r\n", b"hello", []),
    (b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello", []),
    (b"7\r\n0\r\n\r\nab\r\n0\r\n\r\n", b"0\r\n\r\nab", []),  # framing inside data
    (b"5;name\r\nhello\r\n0\r\n\r\n", b"hello", []),
    (b"5;name=value\r\nhello\r\n0\r\n\r\n", b"hello", []),
    (b'5;n="quoted \\" ;value"\r\nhello\r\n0\r\n\r\n', b"hello", []),
    (b'5;n=""\r\nhello\r\n0\r\n\r\n', b"hello", []),
    (b"5 ;a=b\r\nhello\r\n0\r\n\r\n", b"hello", []),
    (b"5\t;a=b;c;d=\"\xff\"\r\nhello\r\n0;last\r\n\r\n", b"hello", []),
    (b"5; a = b ;c\r\nhello\r\n0\r\n\r\n", b"hello", []),
    (b"3\r\nabc\r\n0\r\nX-Hash: abc\r\nx-size:   12  \r\n\r\n", b"abc",
     [(b"x-hash", b"abc"), (b"x-size", b"12")]),
    (b"0\r\nX-Empty:\r\nX-Blank: \t \r\n\r\n", b"", [(b"x-empty", b""), (b"x-blank", b"")]),
    (b"0\r\nA: b:\tc  d\xe9\r\n\r\n", b"", [(b"a", b"b:\tc  d\xe9")]),
    (b"0\r\nX-A: 1\r\nx-a: 2\r\n\r\n", b"", [(b"x-a", b"1"), (b"x-a", b"2")]),
    # what an OpenIO client sends for an erasure-coded upload
    (b"4\r\nabcd\r\n0\r\nX-oio-Chunk-Meta-Metachunk-Hash: 0123456789ABCDEF\r\n"
     b"X-oio-Chunk-Meta-Metachunk-Size: 4\r\n\r\n", b"abcd",
     [(b"x-oio-chunk-meta-metachunk-hash", b"0123456789ABCDEF"),
      (b"x-oio-chunk-meta-metachunk-size", b"4")]),
]

INVALID = [
    (b"-5\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
    (b"+5\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
    (b"0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
    (b" 5\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
    (b"5 \r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
    (b"5\t\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
    (b"\r\n0\r\n\r\n", "bad chunk size line"),
    (b"g\r\n0\r\n\r\n", "bad chunk size line"),
    (b"1_0\r\n", "bad chunk size line"),
    (b"5,\r\nhello\r\n0\r\n\r\n", "bad chunk size line"),
    (b"00000000000000005\r\nhello\r\n0\r\n\r\n", "chunk size too large"),
    (b"10000000000000000\r\n", "chunk size too large"),
    (b"ffffffffffffffffff\r\n", "chunk size too large"),
    (b"5\nhello\r\n0\r\n\r\n", "bare LF"),
    (b"5\rhello\r\n0\r\n\r\n", "bare CR"),
    (b"5\r\r\nhello\r\n0\r\n\r\n", "bare CR"),
    (b"5\r\nhelloX\r\n0\r\n\r\n", "missing CRLF after chunk data"),
    (b"5\r\nhello\n0\r\n\r\n", "missing CRLF after chunk data"),
    (b"5\r\nhello\r0\r\n\r\n", "missing CRLF after chunk data"),
    (b"5\r\nhell\r\n0\r\n\r\n", "missing CRLF after chunk data"),
    (b"5\r\nhello\r\n0\r\n\n", "bare LF"),
    (b"0\n\r\n", "bare LF"),
    (b"0\r\nX: y\n\r\n", "bare LF"),
    (b"0\r\nX: a\rb\r\n\r\n", "bare CR"),
    (b"0\r\n folded\r\n\r\n", "obs-fold"),
    (b"0\r\nX: a\r\n continued\r\n\r\n", "obs-fold"),
    (b"0\r\nX: a\r\n\tcontinued\r\n\r\n", "obs-fold"),
    (b"0\r\nnocolon\r\n\r\n", "without colon"),
    (b"0\r\n: v\r\n\r\n", "bad trailer field name"),
    (b"0\r\nX Y: v\r\n\r\n", "bad trailer field name"),
    (b"0\r\nX : v\r\n\r\n", "bad trailer field name"),
    (b"0\r\nX\x00: v\r\n\r\n", "bad trailer field name"),
    (b"0\r\nX: a\x00b\r\n\r\n", "bad trailer field value"),
    (b"0\r\nX: a\x7fb\r\n\r\n", "bad trailer field value"),
    (b"0\r\nX: \x1b[0m\r\n\r\n", "bad trailer field value"),
    (b"5;\r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b"5;=x\r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b"5;a=\r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b'5;a="open\r\nhello\r\n0\r\n\r\n', "bad chunk extension"),
    (b'5;a="x" y\r\nhello\r\n0\r\n\r\n', "bad chunk extension"),
    (b'5;a="x\x01"\r\nhello\r\n0\r\n\r\n', "bad chunk extension"),
    (b'5;a="x\\\x00"\r\nhello\r\n0\r\n\r\n', "bad chunk extension"),
    (b"5;a \r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b"5;a=b \r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b"5;a=b c\r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b"5;a,b\r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b"5;a=b;\r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b"5;a@b\r\nhello\r\n0\r\n\r\n", "bad chunk extension"),
    (b"1" + b";a" * 3000 + b"\r\nx\r\n0\r\n\r\n", "chunk size line too long"),
    (b"0\r\n" + b"X: " + b"v" * 70000 + b"\r\n\r\n", "trailer section too long"),
]


@pytest.mark.parametrize("modname", TWINS)
@pytest.mark.parametrize("wire,body,trailers", VALID)
@pytest.mark.parametrize("suffix", [b"", PIPELINED], ids=["alone", "pipelined"])
def test_valid(modname, wire, body, trailers, suffix):
    mod = import_twin(modname)
    for how, parts in splits(wire + suffix, seed=len(wire)):
        got = decode(mod, parts)
        assert got == (body, trailers, suffix), how


@pytest.mark.parametrize("modname", TWINS)
@pytest.mark.parametrize("wire,reason", INVALID)
def test_invalid(modname, wire, reason):
    mod = import_twin(modname)
    for how, parts in splits(wire + PIPELINED, seed=len(wire)):
        if how == "bytewise" and len(wire) > 5000:
            continue  # the whole and random splits cover the long ones
        expect_error(mod, parts, reason)


@pytest.mark.parametrize("modname", TWINS)
@pytest.mark.parametrize("wire,body,trailers", VALID)
def test_eof_in_every_state(modname, wire, body, trailers):
    mod = import_twin(modname)
    for cut in range(len(wire)):
        for how, parts in splits(wire[:cut], seed=cut):
            dec = mod.ChunkedDecoder()
            for part in parts:
                assert dec.feed(part)[1] == len(part)
            assert not dec.done
            with pytest.raises(mod.ChunkedError, match="truncated chunked body"):
                dec.finish()
        dec = mod.ChunkedDecoder()
        dec.feed(wire[:cut])
        dec.feed(wire[cut:])
        dec.finish()


@pytest.mark.parametrize("modname", TWINS)
def test_size_line_bound(modname):
    mod = import_twin(modname)
    n = 10
    at_limit = b"5;" + b"a" * (n - 2)  # content exactly max_line bytes
    over = at_limit + b"a"
    for how, parts in splits(at_limit + b"\r\nhello\r\n0\r\n\r\n"):
        assert decode(mod, parts, max_line=n)[0] == b"hello", how
    for how, parts in splits(over + b"\r\nhello\r\n0\r\n\r\n"):
        expect_error(mod, parts, "chunk size line too long", max_line=n)
    # the bound holds before the line ends: no unbounded buffering
    dec = mod.ChunkedDecoder(max_line=n)
    assert dec.feed(at_limit + b"\r") == ([], n + 1)
    assert dec.feed(b"\n")[1] == 1
    dec = mod.ChunkedDecoder(max_line=n)
    with pytest.raises(mod.ChunkedError, match="too long"):
        for _ in range(n + 2):
            dec.feed(b"1")


@pytest.mark.parametrize("modname", TWINS)
def test_trailer_section_bound(modname):
    mod = import_twin(modname)
    section = b"X: y\r\nLong: zzzz\r\n\r\n"
    wire = b"1\r\na\r\n0\r\n" + section
    for how, parts in splits(wire):
        assert decode(mod, parts, max_trailer_size=len(section))[1] == [
            (b"x", b"y"), (b"long", b"zzzz")], how
        expect_error(mod, parts, "trailer section too long",
                     max_trailer_size=len(section) - 1)
    dec = mod.ChunkedDecoder(max_trailer_size=100)
    dec.feed(b"0\r\n")
    with pytest.raises(mod.ChunkedError, match="too long"):
        for _ in range(101):
            dec.feed(b"v")


@pytest.mark.parametrize("modname", TWINS)
def test_limits_validated(modname):
    mod = import_twin(modname)
    with pytest.raises(ValueError):
        mod.ChunkedDecoder(max_line=0)
    with pytest.raises(ValueError):
        mod.ChunkedDecoder(max_trailer_size=1)


@pytest.mark.parametrize("modname", TWINS)
def test_pieces_are_slices_not_copies(modname):
    mod = import_twin(modname)
    buf = bytearray(b"5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
    dec = mod.ChunkedDecoder()
    pieces, consumed = dec.feed(buf)
    assert consumed == len(buf) and dec.done
    assert [p.obj for p in pieces] == [buf, buf]
    buf[3:8] = b"HELLO"  # same length: the view sees the change
    assert bytes(pieces[0]) == b"HELLO"
    for p in pieces:
        p.release()

    raw = b"xx5\r\nhello\r\n0\r\n\r\nyy"
    view = memoryview(raw)[2:-2]
    dec = mod.ChunkedDecoder()
    pieces, consumed = dec.feed(view)
    assert consumed == len(view) and pieces[0].obj is raw
    assert bytes(pieces[0]) == b"hello"


@pytest.mark.parametrize("modname", TWINS)
def test_buffer_inputs(modname):
    mod = import_twin(modname)
    wire = b"4\r\nabcd\r\n0\r\n\r\n"
    for data in (wire, bytearray(wire), memoryview(wire), array.array("B", wire)):
        dec = mod.ChunkedDecoder()
        pieces, consumed = dec.feed(data)
        assert [bytes(p) for p in pieces] == [b"abcd"] and consumed == len(wire)
    # a multi-byte item format is read, and sliced, as bytes
    words = array.array("I", b"a\r\n0123456789\r\n0\r\n\r\n")  # 20 bytes
    dec = mod.ChunkedDecoder()
    pieces, consumed = dec.feed(words)
    assert [bytes(p) for p in pieces] == [b"0123456789"] and consumed == 20
    assert pieces[0].obj is words
    with pytest.raises(TypeError):
        mod.ChunkedDecoder().feed("0\r\n\r\n")


@pytest.mark.parametrize("modname", TWINS)
def test_empty_feeds_and_after_done(modname):
    mod = import_twin(modname)
    dec = mod.ChunkedDecoder()
    assert dec.feed(b"") == ([], 0)
    assert dec.feed(b"3\r\nab")[1] == 5
    assert dec.feed(b"") == ([], 0)
    tail = b"c\r\n0\r\nT: 1\r\n\r\n"
    pieces, consumed = dec.feed(tail + b"NEXT")
    assert [bytes(p) for p in pieces] == [b"c"] and consumed == len(tail)
    assert dec.done and dec.body_size == 3 and dec.trailers == [(b"t", b"1")]
    assert dec.feed(b"more") == ([], 0)
    assert dec.feed(b"") == ([], 0)
    dec.finish()


@pytest.mark.parametrize("modname", TWINS)
def test_huge_chunk_size_never_wraps(modname):
    mod = import_twin(modname)
    dec = mod.ChunkedDecoder()
    pieces, consumed = dec.feed(b"ffffffffffffffff\r\n" + b"x" * 100 + b"\r\n0\r\n\r\n")
    # the CRLF and last-chunk are just body bytes of the huge chunk
    assert consumed == 18 + 107 and dec.body_size == 107 and not dec.done
    with pytest.raises(mod.ChunkedError, match="truncated"):
        dec.finish()


@pytest.mark.parametrize("modname", TWINS)
def test_encoder(modname):
    mod = import_twin(modname)
    assert mod.encode_chunk(b"") == b""
    assert mod.encode_chunk(bytearray()) == b""
    assert mod.encode_chunk(b"abc") == b"3\r\nabc\r\n"
    assert mod.encode_chunk(memoryview(b"x" * 4096)) == b"1000\r\n" + b"x" * 4096 + b"\r\n"
    assert mod.encode_chunk(array.array("I", [0])) == b"4\r\n\0\0\0\0\r\n"
    assert mod.encode_last() == b"0\r\n\r\n"
    assert mod.encode_last([("X-Hash", "ab"), (b"x-size", b"12")]) == \
        b"0\r\nX-Hash: ab\r\nx-size: 12\r\n\r\n"
    assert mod.encode_last(iter([("A", "\xe9\t")])) == b"0\r\nA: \xe9\t\r\n\r\n"
    for name in ["", "X Y", "X:", "X\r\n", b"a\x00", "caf\xe9", "\u20ac"]:
        with pytest.raises(ValueError):
            mod.encode_last([(name, "v")])
    for value in ["a\r\nX-Injected: 1", "a\rb", "a\nb", b"\x00", "\x7f", "\u20ac"]:
        with pytest.raises(ValueError):
            mod.encode_last([("X", value)])
    assert mod.chunk_header(1) == b"1\r\n"
    assert mod.chunk_header(255) == b"ff\r\n"
    assert mod.chunk_header(65536) == b"10000\r\n"
    assert mod.chunk_header(2 ** 64 - 1) == b"ffffffffffffffff\r\n"
    for bad in (0, -1, 2 ** 64):
        with pytest.raises(ValueError):
            mod.chunk_header(bad)
    with pytest.raises(TypeError):
        mod.chunk_header(1.5)


@pytest.mark.parametrize("modname", TWINS)
def test_chunk_header_then_data_decodes(modname):
    mod = import_twin(modname)
    payload = bytes(range(256)) * 300
    wire = mod.chunk_header(len(payload)) + payload + b"\r\n" + mod.encode_last()
    assert decode(mod, [wire])[0] == payload


# -- properties ---------------------------------------------------------------

TOKEN = st.text("!#$%&'*+-.^_`|~0123456789abcdefXYZ", min_size=1, max_size=12)
FIELD_VALUE = st.binary(max_size=20).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128))
TRAILERS = st.lists(st.tuples(TOKEN, FIELD_VALUE), max_size=4)
BODIES = st.lists(st.binary(max_size=300), max_size=6)
CUTS = st.lists(st.integers(min_value=0, max_value=4000), max_size=8)


def cut(data, points):
    bounds = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("modname", TWINS)
@settings(max_examples=60, deadline=None)
@given(bodies=BODIES, trailers=TRAILERS, points=CUTS, pipelined=st.booleans())
def test_round_trip(modname, bodies, trailers, points, pipelined):
    mod = import_twin(modname)
    suffix = PIPELINED if pipelined else b""
    wire = b"".join(mod.encode_chunk(b) for b in bodies) + mod.encode_last(trailers)
    body, got_trailers, rest = decode(mod, cut(wire + suffix, points))
    assert body == b"".join(bodies)
    assert got_trailers == [(n.lower().encode(), v.strip(b" \t")) for n, v in trailers]
    assert rest == suffix


@pytest.mark.parametrize("modname", TWINS)
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200), points=CUTS, small=st.booleans())
def test_arbitrary_bytes_only_raise_chunked_error(modname, data, points, small):
    mod = import_twin(modname)
    limits = {"max_line": 6, "max_trailer_size": 12} if small else {}
    dec = mod.ChunkedDecoder(**limits)
    try:
        for part in cut(data, points):
            pieces, consumed = dec.feed(part)
            assert all(len(p) for p in pieces) and consumed <= len(part)
        dec.finish()
    except mod.ChunkedError as exc:
        assert str(exc) and "\n" not in str(exc)


# -- differential -------------------------------------------------------------

FUZZ = load_fuzz_target("fuzz_chunked")
NASTY = b"\r\n;=\" \t:0aF-x\\\x00\xff"


def corrupt(rng, wire):
    data = bytearray(wire)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(3)
        at = rng.randrange(len(data) + 1)
        if op == 0 and at < len(data):
            data[at] = rng.choice(NASTY)
        elif op == 1:
            data[at:at] = bytes([rng.choice(NASTY)])
        elif at < len(data):
            del data[at]
    return bytes(data)


def random_wire(rng):
    chunks = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
              for _ in range(rng.randint(0, 4))]
    wire = b""
    for c in chunks:
        ext = rng.choice([b"", b";a", b";a=b", b' ;q="x\\"y"'])
        wire += b"%x%s\r\n%s\r\n" % (len(c), ext, c)
    trailers = rng.choice([[], [("X-Hash", "abc")], [("A", "1"), ("B", " 2 ")]])
    wire += FUZZ.fast.encode_last(trailers)
    return wire + rng.choice([b"", PIPELINED])


def test_differential_random_inputs():
    rng = random.Random(20240607)
    for i in range(400):
        wire = random_wire(rng)
        if i % 4:
            wire = corrupt(rng, wire)
        for limits in ((4096, 65536), (5, 12)):
            parts = FUZZ._split(rng, wire, i % 3)
            fast = FUZZ.trace(FUZZ.fast, parts, *limits)
            pure = FUZZ.trace(FUZZ.pure, parts, *limits)
            assert fast == pure, wire


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255), BODIES, TRAILERS)
def test_fuzz_target_on_valid_bodies(ctl, bodies, trailers):
    wire = b"".join(FUZZ.pure.encode_chunk(b) for b in bodies) + FUZZ.pure.encode_last(trailers)
    FUZZ.TestOneInput(bytes([ctl & 0xFE, 7]) + wire)
