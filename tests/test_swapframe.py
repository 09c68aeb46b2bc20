"""SWAP frame codec: the compiled FrameWriter/FrameReader and their pure twin.

The spec's golden bytes; every message type round trip, fed whole, one byte at a
time and split at random points; hypothesis round trips; every malformed frame
gives the same ProtocolError (same message) from both twins, whatever the split;
the writer's limits; payload views; a differential test on random and mutated
bytes; a smoke run of the fuzz target.
"""
import random
import re
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import import_twin, twin_params
from storage.swap.messages import FIELDS, RECORDS, SEGMENTS, MessageType, typed
from fuzzutil import load_fuzz_target

TWINS = twin_params("swapframe")
U = uuid.UUID("0123456789abcdef0011223344556677")
V = uuid.UUID("fedcba98-7654-3210-8000-000000000001")
T = MessageType
# every segment code, LONG_ARRAY included (no SWAP message uses it)
ALL_CODES = {**SEGMENTS, 99: "UuSsILlBF", 100: "l"}

GOLDEN = [
    (T.LIST_FG, [()], "00000004 0001 0001"),
    (T.GET_PATH_DETAILS, [(U, ["a", "bc"])],
     "0000001d 000d 0001" + U.hex + "0002 0001 61 0002 6263"),
    (T.SASL_MECHANISMS, [(["PLAIN"],)], "0000000d 0015 0001 0001 0005 504c41494e"),
    (T.SASL_RESPONSE, [(0, b"")], "0000000c 0014 0001 00000000 00000000"),
    (T.PATH_DETAILS, [], "00000004 000e 0000"),
]


def splits(data, seed=0):
    """Ways to cut ``data`` into feeds: whole, byte by byte, random points."""
    yield "whole", [data]
    yield "bytewise", [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    for _ in range(3):
        cuts = sorted(rng.sample(range(1, len(data)), min(max(len(data) - 1, 0), rng.randint(1, 6))))
        bounds = [0, *cuts, len(data)]
        yield "random", [data[a:b] for a, b in zip(bounds, bounds[1:])]


def norm(value):
    """Payloads (views out, bytes in) as ("bytes", b"..."), so that a message
    compares with the records it was encoded from."""
    if isinstance(value, (memoryview, bytes)):
        return ("bytes", bytes(value))
    if isinstance(value, (list, tuple)):
        return type(value)(norm(v) for v in value)
    return value


def run(mod, parts, table=SEGMENTS, max_frame=None):
    """Feed ``parts``, draining after each; return the messages, then the error
    message or "eof-ok"/the EOF error."""
    reader = mod.FrameReader(table) if max_frame is None else mod.FrameReader(table, max_frame)
    out = []
    try:
        for part in parts:
            reader.feed(part)
            while (msg := reader.next()) is not None:
                out.append(norm(msg))
        reader.eof()
        out.append("eof-ok")
    except mod.ProtocolError as exc:
        out.append(("error", str(exc)))
        with pytest.raises(mod.ProtocolError, match="^" + re.escape(str(exc)) + "$"):
            reader.next()  # it stays failed
    return out


def hexbytes(s):
    return bytes.fromhex(s.replace(" ", ""))


# -- the table -------------------------------------------------------------------

def test_message_table():
    assert [int(t) for t in T] == list(range(1, 26))
    assert set(SEGMENTS) == set(T) == set(FIELDS) == set(RECORDS)
    assert SEGMENTS[T.PATH_DETAILS] == "USILL" and SEGMENTS[T.FILE_SEGMENT] == "LLB"
    assert [t for t in T if not SEGMENTS[t]] == [T.LIST_FG, T.LIST_PARTITIONS, T.LIST_SLICES,
                                                 T.LIST_PEERS]
    assert RECORDS[T.PATH_DETAILS]._fields == ("group", "path", "kind", "size", "mtime")
    assert RECORDS[T.PATH_DETAILS].__name__ == "PathDetails"
    fast, pure = (import_twin(p.values[0]) for p in TWINS)
    for name in ("DEFAULT_MAX_FRAME", "MAX_COUNT", "SEGMENT_CODES", "__all__"):
        assert getattr(fast, name) == getattr(pure, name), name
    assert fast.DEFAULT_MAX_FRAME >= 524312  # a 512 KiB FILE_SEGMENT fits
    assert set("".join(SEGMENTS.values())) <= set(fast.SEGMENT_CODES)


def test_typed_records():
    t, recs = typed(14, [(U, "a", 0, 1, 2)])
    assert t is T.PATH_DETAILS and recs[0].path == "a" and recs[0] == (U, "a", 0, 1, 2)
    assert typed(1, [()]) == (T.LIST_FG, [()])


# -- golden bytes ------------------------------------------------------------------

@pytest.mark.parametrize("modname", TWINS)
@pytest.mark.parametrize("msg_type,records,wire", GOLDEN)
def test_golden(modname, msg_type, records, wire):
    mod = import_twin(modname)
    wire = hexbytes(wire)
    assert mod.encode(SEGMENTS, msg_type, records) == wire
    for how, parts in splits(wire):
        assert run(mod, parts) == [norm((msg_type, records)), "eof-ok"], how


@pytest.mark.parametrize("modname", TWINS)
def test_golden_by_hand(modname):
    """The same bytes from the writer's segment methods, batched into one send."""
    mod = import_twin(modname)
    w = mod.FrameWriter()
    w.begin(T.LIST_FG)
    w.end_record()
    w.end()
    w.begin(T.GET_PATH_DETAILS)
    w.uuid(U.bytes)
    w.string_array(["a", b"bc"])
    w.end_record()
    w.end()
    w.begin(T.SASL_MECHANISMS)
    w.string_array(("PLAIN",))
    w.end_record()
    w.end()
    w.begin(T.SASL_RESPONSE)
    w.int32(0)
    w.byte_array(bytearray())
    w.end_record()
    assert w.frames == 3
    w.end()
    w.begin(T.PATH_DETAILS)
    frames = w.finish()
    assert w.frames == 0 and len(w) == 0
    assert frames == b"".join(hexbytes(g[2]) for g in GOLDEN)
    assert w.take() == b""


@pytest.mark.parametrize("modname", TWINS)
def test_swap_package_binds_the_table(modname, monkeypatch):
    from storage import swap
    mod = import_twin(modname)
    assert swap.swapframe.__name__ in ("_fastpath.swapframe", "storage.pure.swapframe")
    assert swap.encode(T.GET_PATH_DETAILS, [(U, ["a", "bc"])]) == hexbytes(GOLDEN[1][2])
    r = swap.new_reader()
    r.feed(hexbytes(GOLDEN[2][2]))
    assert r.next() == (21, [(["PLAIN"],)])
    assert r.max_frame == mod.DEFAULT_MAX_FRAME


# -- round trips ---------------------------------------------------------------------

EXAMPLE = {
    "U": V, "u": [U, V, U], "S": "chemin/é\udcff", "s": ["", "a", "ü" * 3], "I": -7,
    "L": -(1 << 63), "l": [1, -1, (1 << 63) - 1], "B": b"\x00payload\xff", "F": 10,
}


def example(t, i=0):
    codes = ALL_CODES[t]
    return [tuple(EXAMPLE[c] for c in codes)] * (i + 1) if codes else [()]


@pytest.mark.parametrize("modname", TWINS)
@pytest.mark.parametrize("msg_type", sorted(ALL_CODES))
def test_every_type_round_trips(modname, msg_type):
    mod = import_twin(modname)
    records = example(msg_type, 2)
    wire = mod.encode(ALL_CODES, msg_type, records)
    wire = wire + wire  # two frames back to back
    want = [norm((msg_type, records))] * 2 + ["eof-ok"]
    for how, parts in splits(wire, seed=msg_type):
        assert run(mod, parts, ALL_CODES) == want, how
        assert run(mod, [bytearray(p) for p in parts], ALL_CODES) == want, how
        assert run(mod, [memoryview(b"@" + p + b"@")[1:-1] for p in parts], ALL_CODES) == want


@pytest.mark.parametrize("modname", TWINS)
def test_segmentless_types_ignore_reps(modname):
    mod = import_twin(modname)
    for reps in (0, 1, 7, -1, -32768):
        wire = b"\x00\x00\x00\x04\x00\x05" + reps.to_bytes(2, "big", signed=True)
        assert run(mod, [wire]) == [(5, [()]), "eof-ok"]
    assert mod.encode(SEGMENTS, T.LIST_PEERS, []) == hexbytes("00000004 0018 0001")


@pytest.mark.parametrize("modname", TWINS)
def test_strings_echo_byte_for_byte(modname):
    """A path that is not UTF-8 decodes (surrogateescape) and re-encodes to the
    same bytes: PATH_DETAILS must echo paths exactly."""
    mod = import_twin(modname)
    raw = b"dir/\xff\xfe/\xed\xa0\x80x"
    wire = mod.encode(SEGMENTS, T.GET_PATH_DETAILS, [(U, [raw])])
    r = mod.FrameReader(SEGMENTS)
    r.feed(wire)
    (_, [(group, [path])]) = r.next()
    assert group == U and isinstance(group, uuid.UUID) and isinstance(path, str)
    assert mod.encode(SEGMENTS, T.GET_PATH_DETAILS, [(group, [path])]) == wire


def value_of(code):
    return {
        "U": st.uuids(), "u": st.lists(st.uuids(), max_size=4),
        "S": st.text(max_size=12), "s": st.lists(st.text(max_size=8), max_size=4),
        "I": st.integers(-2 ** 31, 2 ** 31 - 1), "L": st.integers(-2 ** 63, 2 ** 63 - 1),
        "l": st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=4),
        "B": st.binary(max_size=40), "F": st.integers(-32768, 32767),
    }[code]


@st.composite
def messages(draw):
    t = draw(st.sampled_from(sorted(ALL_CODES)))
    codes = ALL_CODES[t]
    if not codes:
        return t, [()]
    record = st.tuples(*(value_of(c) for c in codes))
    return t, draw(st.lists(record, max_size=4))


CUTS = st.lists(st.integers(0, 400), max_size=6)


@pytest.mark.parametrize("modname", TWINS)
@settings(max_examples=150, deadline=None)
@given(msgs=st.lists(messages(), min_size=1, max_size=3), points=CUTS)
def test_round_trip(modname, msgs, points):
    mod = import_twin(modname)
    wire = b"".join(mod.encode(ALL_CODES, t, recs) for t, recs in msgs)
    bounds = [0, *sorted(p % (len(wire) + 1) for p in points), len(wire)]
    parts = [wire[a:b] for a, b in zip(bounds, bounds[1:])]
    assert run(mod, parts, ALL_CODES) == [norm(m) for m in msgs] + ["eof-ok"]


# -- malformed frames -----------------------------------------------------------------

def frame(t, reps, content=b"", length=None):
    if length is None:
        length = 4 + len(content)
    return (length.to_bytes(4, "big", signed=True) + t.to_bytes(2, "big", signed=True)
            + reps.to_bytes(2, "big", signed=True) + content)


def i16(n):
    return n.to_bytes(2, "big", signed=True)


def i32(n):
    return n.to_bytes(4, "big", signed=True)


MAX = (1 << 20) + (64 << 10)
MALFORMED = [
    (b"\x00\x00\x00\x03", "frame length 3 is below 4"),
    (b"\x00\x00\x00\x00\x00\x01\x00\x01", "frame length 0 is below 4"),
    (b"\xff\xff\xff\xff", "frame length -1 is below 4"),
    (i32(MAX + 1), f"frame length {MAX + 1} is above the maximum {MAX}"),
    (b"\x7f\xff\xff\xff\x00\x01", f"frame length 2147483647 is above the maximum {MAX}"),
    (frame(0, 1), "unknown message type 0"),
    (frame(26, 1), "unknown message type 26"),
    (frame(-1, 1), "unknown message type -1"),
    (frame(0x7fff, 0, b"x" * 10), "unknown message type 32767"),
    (frame(14, -1), "negative record count -1"),
    (frame(14, -32768, b"x" * 40), "negative record count -32768"),
    (frame(1, 1, b"\x00\x00"), "type 1: 2 bytes after the last record"),
    (frame(14, 0, b"abc"), "type 14: 3 bytes after the last record"),
    (frame(14, 1), "type 14 record 0: UUID at offset 8 overruns the frame"),
    (frame(14, 1, U.bytes[:15]), "type 14 record 0: UUID at offset 8 overruns the frame"),
    (frame(14, 1, U.bytes + b"\x00"), "type 14 record 0: STRING at offset 24 overruns the frame"),
    (frame(14, 1, U.bytes + i16(-2)), "type 14 record 0: negative STRING length -2"),
    (frame(14, 1, U.bytes + i16(5) + b"abcd"), "type 14 record 0: STRING at offset 24 overruns the frame"),
    (frame(14, 1, U.bytes + i16(1) + b"a" + i32(0) + bytes(15)),
     "type 14 record 0: LONG at offset 39 overruns the frame"),
    (frame(14, 1, U.bytes + i16(1) + b"a" + b"\x00\x00"),
     "type 14 record 0: INT at offset 27 overruns the frame"),
    (frame(14, 2, U.bytes + i16(1) + b"a" + bytes(20)),
     "type 14 record 1: UUID at offset 47 overruns the frame"),
    (frame(14, 1, U.bytes + i16(1) + b"a" + bytes(21)), "type 14: 1 bytes after the last record"),
    (frame(13, 1, U.bytes), "type 13 record 0: STRING_ARRAY at offset 24 overruns the frame"),
    (frame(13, 1, U.bytes + i16(-1)), "type 13 record 0: negative STRING_ARRAY count -1"),
    (frame(13, 1, U.bytes + i16(32767) + i16(0) * 10),
     "type 13 record 0: STRING_ARRAY at offset 24 overruns the frame"),
    (frame(13, 1, U.bytes + i16(2) + i16(1) + b"a" + i16(-1)),
     "type 13 record 0: negative STRING length -1"),
    (frame(13, 1, U.bytes + i16(2) + i16(1) + b"a" + i16(3) + b"ab"),
     "type 13 record 0: STRING at offset 29 overruns the frame"),
    (frame(13, 1, U.bytes + i16(3) + i16(0) + i16(3) + b"abc"),
     "type 13 record 0: STRING at offset 33 overruns the frame"),
    (frame(4, 1, U.bytes + i16(2) + U.bytes + bytes(2)),
     "type 4 record 0: UUID_ARRAY at offset 24 overruns the frame"),
    (frame(4, 1, U.bytes + i16(-5)), "type 4 record 0: negative UUID_ARRAY count -5"),
    (frame(19, 1, i16(0) + i32(-1)), "type 19 record 0: negative BYTE_ARRAY length -1"),
    (frame(19, 1, i16(0) + i32(5) + b"abcd"), "type 19 record 0: BYTE_ARRAY at offset 10 overruns the frame"),
    (frame(19, 1, i16(0) + b"\x00\x00\x00"), "type 19 record 0: BYTE_ARRAY at offset 10 overruns the frame"),
    (frame(9, 1, bytes(8) + b"\x00"), "type 9 record 0: FINISH_TYPE at offset 16 overruns the frame"),
    (frame(8, 1, bytes(8) + bytes(8) + i32(2 ** 31 - 1) + b"x"),
     "type 8 record 0: BYTE_ARRAY at offset 24 overruns the frame"),
    (frame(100, 1, i16(3) + bytes(16)), "type 100 record 0: LONG_ARRAY at offset 8 overruns the frame"),
    (frame(100, 1, i16(-3)), "type 100 record 0: negative LONG_ARRAY count -3"),
    # a valid frame first: the error comes after its message
    (frame(12, 1, U.bytes) + frame(77, 1), "unknown message type 77"),
]


@pytest.mark.parametrize("modname", TWINS)
@pytest.mark.parametrize("wire,reason", MALFORMED)
def test_malformed(modname, wire, reason):
    mod = import_twin(modname)
    valid_after = frame(12, 1, V.bytes)  # never reached
    for how, parts in splits(wire + valid_after, seed=len(wire)):
        got = run(mod, parts, ALL_CODES)
        assert got[-1] == ("error", reason), how
        assert all(m == (12, [(U,)]) for m in got[:-1])


@pytest.mark.parametrize("modname", TWINS)
def test_truncated_frames(modname):
    mod = import_twin(modname)
    wire = mod.encode(SEGMENTS, T.PATH_DETAILS, [(U, "path", 0, 1, 2)] * 3)
    for cut in range(1, len(wire)):
        for how, parts in splits(wire[:cut], seed=cut):
            assert run(mod, parts) == [("error", f"EOF inside a frame ({cut} bytes buffered)")], how


@pytest.mark.parametrize("modname", TWINS)
def test_length_refused_before_the_frame_arrives(modname):
    """L above max_frame is refused on the 4 length bytes, with nothing else
    buffered, and max_frame is L's bound (a 512 KiB FILE_SEGMENT is L = 524,312)."""
    mod = import_twin(modname)
    r = mod.FrameReader(SEGMENTS, 524312)
    r.feed(i32(524313))
    with pytest.raises(mod.ProtocolError, match="above the maximum 524312"):
        r.next()
    with pytest.raises(mod.ProtocolError):
        r.feed(b"more")
    payload = bytes(range(256)) * 2048
    wire = mod.encode(SEGMENTS, T.FILE_SEGMENT, [(5, 0, payload)], max_frame=524312)
    assert len(wire) == 4 + 524312
    r = mod.FrameReader(SEGMENTS, 524312)
    r.feed(wire)
    assert r.next() == (8, [(5, 0, payload)])
    with pytest.raises(mod.EncodeError):
        mod.encode(SEGMENTS, T.FILE_SEGMENT, [(5, 0, payload + b"x")], max_frame=524312)


@pytest.mark.parametrize("modname", TWINS)
def test_reader_arguments(modname):
    mod = import_twin(modname)
    for bad in (3, -1, 2 ** 31):
        with pytest.raises(ValueError, match="max_frame"):
            mod.FrameReader(SEGMENTS, bad)
    with pytest.raises(ValueError, match="unknown segment code 'X' for type 3"):
        mod.FrameReader({3: "UX"})
    with pytest.raises(ValueError, match="does not fit in int16"):
        mod.FrameReader({70000: "U"})
    r = mod.FrameReader({3: b"U"})
    r.feed(frame(3, 1, U.bytes))
    assert r.next() == (3, [(U,)]) and r.next() is None and r.buffered == 0
    r.feed(b"")
    r.eof()


# -- payload views ------------------------------------------------------------------

@pytest.mark.parametrize("modname", TWINS)
def test_payload_views_stay_valid(modname):
    """FILE_SEGMENT payloads are read-only memoryviews that later feeds and next()
    calls never change; a frame fed whole as bytes is not copied at all."""
    mod = import_twin(modname)
    a, b = b"A" * 1000, b"B" * 10
    wire = (mod.encode(SEGMENTS, T.FILE_SEGMENT, [(1, 0, a)])
            + mod.encode(SEGMENTS, T.FILE_SEGMENT, [(1, 1000, b)]))
    r = mod.FrameReader(SEGMENTS)
    r.feed(wire)
    (_, [(_, _, va)]) = r.next()
    assert isinstance(va, memoryview) and va.readonly and va.obj is wire  # no copy
    # streaming: pieces of a bytearray the caller then reuses
    r = mod.FrameReader(SEGMENTS)
    views = []
    buf = bytearray(7)
    for i in range(0, len(wire), 7):
        n = len(wire[i:i + 7])
        buf[:n] = wire[i:i + 7]
        r.feed(memoryview(buf)[:n])
        buf[:] = b"\xee" * 7
        while (msg := r.next()) is not None:
            views.append(msg[1][0][2])
    r.feed(wire[:30])
    r.next()
    assert [bytes(v) for v in views] == [a, b]
    assert all(v.readonly for v in views)
    with pytest.raises(TypeError):
        views[0][0] = 0


@pytest.mark.parametrize("modname", TWINS)
def test_big_frames_streamed(modname):
    """512 KiB FILE_SEGMENTs arriving in reads of odd sizes, small frames between
    them, drained after every read or only now and then."""
    mod = import_twin(modname)
    rng = random.Random(7)
    payloads = [rng.randbytes(524288), rng.randbytes(1000), rng.randbytes(524288 - 5)]
    wire = b"".join(mod.encode(SEGMENTS, T.FILE_SEGMENT, [(i, 0, p)]) + frame(12, 1, U.bytes)
                    for i, p in enumerate(payloads))
    want = [m for i, p in enumerate(payloads) for m in ((8, [(i, 0, p)]), (12, [(U,)]))]
    for drain_every in (1, 3, 50):
        r = mod.FrameReader(SEGMENTS)
        got = []
        pos = n = 0
        while pos < len(wire):
            step = rng.choice([1, 7, 4096, 65536, 65536 + 13, 200000])
            r.feed(bytearray(wire[pos:pos + step]))
            pos += step
            n += 1
            if n % drain_every == 0 or pos >= len(wire):
                while (msg := r.next()) is not None:
                    got.append(msg)
        r.eof()
        assert got == want, drain_every


@pytest.mark.parametrize("modname", TWINS)
def test_many_small_payload_frames_in_one_feed(modname):
    mod = import_twin(modname)
    wire = b"".join(mod.encode(SEGMENTS, T.SASL_RESPONSE, [(i, bytes([i]) * i)]) for i in range(200))
    r = mod.FrameReader(SEGMENTS)
    r.feed(wire[:5])
    r.feed(bytearray(wire[5:]))
    got = []
    while (msg := r.next()) is not None:
        got.append(msg)
        r.feed(b"")
    assert [(t, [(c, bytes(p))]) for t, [(c, p)] in got] == \
        [(20, [(i, bytes([i]) * i)]) for i in range(200)]


# -- the writer's limits ------------------------------------------------------------

@pytest.mark.parametrize("modname", TWINS)
def test_writer_limits(modname):
    mod = import_twin(modname)
    w = mod.FrameWriter()
    w.begin(T.LIST_DIRECTORY)
    w.uuid(U)
    w.string("x" * 32767)
    w.end_record()
    assert len(w.finish()) == 8 + 16 + 2 + 32767
    cases = [
        (lambda w: w.string("x" * 32768), "string of 32768 bytes is longer than 32767"),
        (lambda w: w.string("é" * 16384), "string of 32768 bytes is longer than 32767"),
        (lambda w: w.string(b"x" * 40000), "string of 40000 bytes is longer than 32767"),
        (lambda w: w.string("\ud800"), "string has a lone surrogate that UTF-8 cannot encode"),
        (lambda w: w.string_array([""] * 32768), "string array of 32768 entries is longer than 32767"),
        (lambda w: w.uuid_array([U] * 32768), "UUID array of 32768 entries is longer than 32767"),
        (lambda w: w.long_array(iter([0] * 32768)), "long array of 32768 entries is longer than 32767"),
        (lambda w: w.string_array(["a", "x" * 32768]), "string of 32768 bytes is longer than 32767"),
        (lambda w: w.int32(2 ** 31), "2147483648 does not fit in int32"),
        (lambda w: w.int32(-2 ** 31 - 1), "-2147483649 does not fit in int32"),
        (lambda w: w.int64(2 ** 63), "9223372036854775808 does not fit in int64"),
        (lambda w: w.int64(-2 ** 100), f"{-2 ** 100} does not fit in int64"),
        (lambda w: w.long_array([1, 2 ** 64]), f"{2 ** 64} does not fit in int64"),
        (lambda w: w.finish_type(32768), "32768 does not fit in int16"),
        (lambda w: w.uuid(b"x" * 15), "a UUID must be 16 bytes, not 15"),
        (lambda w: w.uuid_array([U, b"x"]), "a UUID must be 16 bytes, not 1"),
        (lambda w: w.byte_array(bytes(70000)), "frame length 70024 would be above the maximum 70000"),
        (lambda w: w.record("SI", ("a",)), "a record of 1 values for 2 segments"),
        (lambda w: w.record("SX", ("a", 1)), "unknown segment code 'X'"),
    ]
    for write, reason in cases:
        w = mod.FrameWriter(70000)
        w.begin(T.PATH_DETAILS)
        w.uuid(U)
        w.end_record()
        w.end()
        w.begin(T.PATH_DETAILS)
        w.uuid(V)
        with pytest.raises(mod.EncodeError) as info:
            write(w)
        assert str(info.value) == reason
        assert isinstance(info.value, ValueError)
        # the open frame is abandoned, the frame before it is kept
        with pytest.raises(RuntimeError, match="no frame is open"):
            w.uuid(U)
        assert w.frames == 1 and w.take() == frame(14, 1, U.bytes)


@pytest.mark.parametrize("modname", TWINS)
def test_writer_types_and_order(modname):
    mod = import_twin(modname)
    cases = [
        (lambda w: w.string(5), "a string must be str or bytes-like, not int"),
        (lambda w: w.uuid("0123"), "a UUID must be a uuid.UUID or 16 bytes, not str"),
        (lambda w: w.byte_array("abc"), "a byte array must be bytes-like, not str"),
        (lambda w: w.int32(1.5), "'float' object cannot be interpreted as an integer"),
        (lambda w: w.string_array("abc"), "string array must be a sequence, not str"),
        (lambda w: w.uuid_array(5), "UUID array must be a sequence, not int"),
        (lambda w: w.record("S", "a"), "a record must be a tuple or list, not str"),
    ]
    for write, reason in cases:
        w = mod.FrameWriter()
        w.begin(3)
        with pytest.raises(TypeError) as info:
            write(w)
        assert str(info.value) == reason
        with pytest.raises(RuntimeError):
            w.end()
    w = mod.FrameWriter()
    with pytest.raises(RuntimeError, match="no frame is open"):
        w.end_record()
    w.begin(1)
    with pytest.raises(RuntimeError, match="a frame is already open"):
        w.begin(1)
    with pytest.raises(RuntimeError, match="a frame is still open"):
        w.take()
    with pytest.raises(mod.EncodeError, match="40000 does not fit in int16"):
        mod.FrameWriter().begin(40000)
    with pytest.raises(ValueError, match="max_frame"):
        mod.FrameWriter(3)


@pytest.mark.parametrize("modname", TWINS)
def test_writer_reuse_across_sizes(modname):
    """Small and big frames, batched and alone: every take() is exactly what was
    written, and bytes taken earlier never change as the writer goes on."""
    mod = import_twin(modname)
    w = mod.FrameWriter()
    taken = []
    for size in (0, 10, 70000, 5, 300000, 65536 - 32, 65536 - 31, 1, 524288, 3):
        want = b""
        for k in range(1 + size % 3):
            payload = bytes([k + 1]) * size
            w.begin(T.FILE_SEGMENT)
            w.int64(k)
            w.int64(size)
            w.byte_array(payload)
            w.end_record()
            w.end()
            want += frame(8, 1, i64(k) + i64(size) + i32(size) + payload)
        if size == 5:  # an abandoned frame leaves the ended ones alone
            w.begin(T.FILE_SEGMENT)
            w.byte_array(bytes(1000))
            with pytest.raises(TypeError):
                w.uuid(None)
        out = w.take()
        assert out == want and type(out) is bytes and hash(out) == hash(want)
        taken.append((out, want))
    assert all(out == want for out, want in taken)


def i64(n):
    return n.to_bytes(8, "big", signed=True)


@pytest.mark.parametrize("modname", TWINS)
def test_writer_reps_limit(modname):
    mod = import_twin(modname)
    w = mod.FrameWriter()
    w.begin(T.SLICE_ONLINE)
    for _ in range(32767):
        w.uuid(U)
        w.end_record()
    with pytest.raises(mod.EncodeError, match="more than 32767 records in one frame"):
        w.end_record()
    wire = mod.encode(SEGMENTS, T.SLICE_ONLINE, [(U,)] * 32767)
    assert wire[6:8] == b"\x7f\xff"
    with pytest.raises(mod.EncodeError, match="more than 32767 records"):
        mod.encode(SEGMENTS, T.SLICE_ONLINE, [(U,)] * 32768)


@pytest.mark.parametrize("modname", TWINS)
def test_encode_errors(modname):
    mod = import_twin(modname)
    with pytest.raises(mod.EncodeError, match="unknown message type 26"):
        mod.encode(SEGMENTS, 26, [])
    with pytest.raises(mod.EncodeError, match="type 1 has no segments, a record has 1 values"):
        mod.encode(SEGMENTS, T.LIST_FG, [(1,)])
    with pytest.raises(mod.EncodeError, match="a record of 4 values for 5 segments"):
        mod.encode(SEGMENTS, T.PATH_DETAILS, [(U, "a", 0, 1)])
    nt = RECORDS[T.PATH_DETAILS](U, "a", 0, 1, 2)  # namedtuples are records
    assert mod.encode(SEGMENTS, 14, [nt]) == mod.encode(SEGMENTS, 14, [tuple(nt)])


# -- differential --------------------------------------------------------------------

FAST, PURE = (import_twin(p.values[0]) for p in TWINS)


def outcome(mod, parts, table=ALL_CODES, max_frame=4096):
    reader = mod.FrameReader(table, max_frame)
    out = []
    try:
        for part in parts:
            reader.feed(part)
            while (msg := reader.next()) is not None:
                out.append(norm(msg))
        reader.eof()
    except mod.ProtocolError as exc:
        out.append(("error", str(exc)))
    return out


def mutate(rng, wire):
    wire = bytearray(wire)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(wire))
        wire[i] = rng.choice([0, 0xff, 0x7f, 0x80, rng.randrange(256), wire[i] ^ 1])
    return bytes(wire)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), points=CUTS)
def test_differential_random_bytes(data, points):
    bounds = [0, *sorted(p % (len(data) + 1) for p in points), len(data)]
    parts = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    assert outcome(FAST, parts) == outcome(PURE, parts)


@settings(max_examples=300, deadline=None)
@given(msgs=st.lists(messages(), min_size=1, max_size=2), seed=st.integers(0, 2 ** 32))
def test_differential_mutated_frames(msgs, seed):
    rng = random.Random(seed)
    wire = b"".join(PURE.encode(ALL_CODES, t, recs) for t, recs in msgs)
    assert FAST.encode(ALL_CODES, msgs[0][0], msgs[0][1]) == PURE.encode(ALL_CODES, *msgs[0])
    bad = mutate(rng, wire)
    parts = [bad[i:i + rng.randint(1, 40)] for i in range(0, len(bad), 40)]
    assert outcome(FAST, parts) == outcome(PURE, parts)


# -- fuzz target ---------------------------------------------------------------------

FUZZ = load_fuzz_target("fuzz_swapframe")


def test_fuzz_target_imports_without_atheris():
    assert callable(FUZZ.TestOneInput)
    assert "atheris" not in vars(FUZZ)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 255), st.lists(messages(), min_size=1, max_size=2))
def test_fuzz_target_on_valid_frames(ctl, msgs):
    """Valid frames behind the control bytes: the target's round-trip checks run."""
    wire = b"".join(PURE.encode(ALL_CODES, t, recs) for t, recs in msgs)
    FUZZ.TestOneInput(bytes([ctl, 0]) + wire)
