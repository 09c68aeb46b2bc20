"""Fuzz target: the compiled SWAP frame reader against its pure-Python twin.

Run with atheris (``make fuzz``):  python fuzz/fuzz_swapframe.py -runs=20000
``TestOneInput`` needs nothing but the two modules, so tests import it and
smoke-run it over hypothesis inputs without atheris installed.

The first two input bytes pick max_frame, the input type (bytes, bytearray,
memoryview slices) and the split points; the rest is fed to both readers in the
same pieces. Any difference in messages or error messages, any exception other
than ProtocolError, a payload that is not a read-only memoryview, or a decoded
frame that the writers do not re-encode to the same bytes is a crash.
"""
import random
import sys

from _fastpath import swapframe as fast
from storage.pure import swapframe as pure
from storage.swap.messages import SEGMENTS

# every segment code is reachable: type 99 holds them all, 100 a LONG_ARRAY
TABLE = {**SEGMENTS, 99: "UuSsILlBF", 100: "l"}


def _norm(value):
    if isinstance(value, memoryview):
        assert value.readonly, "payload view is writable"
        return ("bytes", value.tobytes())
    if isinstance(value, (list, tuple)):
        return type(value)(_norm(v) for v in value)
    return value


def trace(mod, parts, max_frame):
    """Feed ``parts`` to a fresh reader of ``mod``; return what happened."""
    reader = mod.FrameReader(TABLE, max_frame)
    events = []
    try:
        for part in parts:
            reader.feed(part)
            while (msg := reader.next()) is not None:
                events.append(_norm(msg))
        reader.eof()
        events.append("eof")
    except mod.ProtocolError as exc:
        events.append(("error", str(exc)))
        try:
            reader.next()
        except mod.ProtocolError as again:
            assert str(again) == str(exc), "reader did not stay failed the same way"
        else:
            raise AssertionError("reader did not stay failed")
    return events


def _split(rng, data, kind):
    parts = []
    pos = 0
    while pos < len(data):
        step = rng.randint(0, 9) if rng.random() < 0.7 else rng.randint(10, 300)
        parts.append(data[pos:pos + step])
        pos += step
    if kind == 1:
        parts = [bytearray(p) for p in parts]
    elif kind == 2:
        parts = [memoryview(b"@" + p + b"@")[1:-1] for p in parts]
    return parts


def _denorm(value):
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "bytes":
        return value[1]
    if isinstance(value, (list, tuple)):
        return type(value)(_denorm(v) for v in value)
    return value


def _check_reencode(wire, events):
    """Each decoded message re-encodes (both writers) to the frame it came from."""
    pos = 0
    for ev in events:
        if not (isinstance(ev, tuple) and isinstance(ev[0], int)):
            break
        t, records = ev[0], _denorm(ev[1])
        size = 4 + int.from_bytes(wire[pos:pos + 4], "big")
        original = wire[pos:pos + size]
        if not TABLE[t]:  # reps is ignored there; writers put 1
            original = original[:6] + b"\x00\x01"
        for mod in (fast, pure):
            again = mod.encode(TABLE, t, records, max_frame=size)
            assert again == original, f"{mod.__name__} re-encodes {original!r} as {again!r}"
        pos += size


def TestOneInput(data):
    if len(data) < 2:
        return
    ctl = data[0]
    rng = random.Random(data[:2])
    wire = bytes(data[2:])
    max_frame = 4 + (ctl >> 3) * 9 if ctl & 1 else fast.DEFAULT_MAX_FRAME
    parts = _split(rng, wire, (ctl >> 1) % 3)
    got = trace(fast, parts, max_frame)
    want = trace(pure, parts, max_frame)
    if got != want:
        raise AssertionError(f"fast and pure disagree on {wire!r}\nfast: {got}\npure: {want}")
    _check_reencode(wire, got)


if __name__ == "__main__":
    import atheris

    # coverage guidance comes from the (instrumented) pure twin, whose branches
    # mirror the compiled reader's
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
