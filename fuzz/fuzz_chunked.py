"""Fuzz target: the compiled chunked decoder against its pure-Python twin.

Run with atheris (``make fuzz``):  python fuzz/fuzz_chunked.py -runs=20000
``TestOneInput`` needs nothing but the two modules, so tests import it and
smoke-run it over hypothesis inputs without atheris installed.

The first two input bytes pick the limits, the input type and the split points;
the rest is fed to both decoders in the same pieces. Any difference in pieces,
consumed counts, state, trailers or error reasons, any exception other than
ChunkedError, a piece that is not a slice of what was fed, or a decoded body that
does not survive re-encoding is a crash.
"""
import random
import sys

from _fastpath import chunked as fast
from storage.pure import chunked as pure


def _owner(data):
    return data.obj if isinstance(data, memoryview) else data


def trace(mod, parts, max_line, max_trailer_size):
    """Feed ``parts`` to a fresh decoder of ``mod``; return what happened."""
    dec = mod.ChunkedDecoder(max_line, max_trailer_size)
    events = []
    for part in parts:
        try:
            pieces, consumed = dec.feed(part)
        except mod.ChunkedError as exc:
            events.append(("error", str(exc)))
            try:
                dec.feed(b"0\r\n\r\n")
            except mod.ChunkedError as again:
                events.append(("still failed", str(again)))
            else:
                raise AssertionError("decoder did not stay failed")
            break
        for piece in pieces:
            assert isinstance(piece, memoryview) and len(piece) > 0, piece
            assert piece.obj is _owner(part), "piece is not a slice of the fed data"
        assert 0 <= consumed <= len(part)
        assert consumed == len(part) or dec.done
        events.append(([bytes(p) for p in pieces], consumed, dec.done, dec.body_size,
                       list(dec.trailers)))
        if dec.done:
            assert dec.feed(part[consumed:]) == ([], 0)
            break
    try:
        dec.finish()
        events.append("finished")
    except mod.ChunkedError as exc:
        events.append(("finish", str(exc)))
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


def TestOneInput(data):
    if len(data) < 2:
        return
    ctl = data[0]
    rng = random.Random(data[:2])
    wire = bytes(data[2:])
    if ctl & 1:
        max_line, max_trailer_size = 1 + (ctl >> 1) % 12, 2 + (ctl >> 4) * 3
    else:
        max_line, max_trailer_size = 4096, 65536
    parts = _split(rng, wire, (ctl >> 1) % 3)
    got = trace(fast, parts, max_line, max_trailer_size)
    want = trace(pure, parts, max_line, max_trailer_size)
    if got != want:
        raise AssertionError(f"fast and pure disagree on {wire!r}\nfast: {got}\npure: {want}")
    if got and got[-1] == "finished":
        # what was decoded must survive an encode/decode round trip
        body = b"".join(b"".join(ev[0]) for ev in got if isinstance(ev, tuple))
        trailers = got[-2][4]
        again = fast.encode_chunk(body) + fast.encode_last(trailers)
        dec = fast.ChunkedDecoder()
        pieces, consumed = dec.feed(again)
        assert dec.done and consumed == len(again)
        assert b"".join(pieces) == body and dec.trailers == trailers


if __name__ == "__main__":
    import atheris

    # coverage guidance comes from the (instrumented) pure twin, whose branches
    # mirror the compiled decoder's
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
