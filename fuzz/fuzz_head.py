"""Fuzz target: the HTTP/1.x request-head parser, compiled (``_fastpath.httphead``)
against its pure-Python twin (``storage.pure.httphead``).

Run with atheris (``make fuzz``):  python fuzz/fuzz_head.py -runs=20000
``TestOneInput`` needs nothing but the parser, so tests import it and smoke-run it
over hypothesis inputs without atheris installed.

The first input byte picks how the rest is searched for the end of the head (whole,
or grown in steps the way the connection does it, resuming 3 bytes before the last
scan), whether a valid request line and Host are put in front (so that mutations
reach the header rules), and whether the rest is also parsed as a head on its own
with CRLFCRLF appended. Both twins search and parse everything. A difference between
them (the parsed fields, or the error status and reason), any exception other than
HttpError, an HttpError with a status outside the ones the parser documents or a
multi-line reason, a request that breaks the parser's invariants, or a parsed
request that does not parse back to the same thing once re-serialized is a crash.
"""
import sys

from _fastpath import httphead as fast
from storage.pure import httphead as pure

STATUSES = {400, 417, 501, 505}
PREFIX = b"PUT /0123456789ABCDEF01234567 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
TOKEN = pure.TOKEN


def find_incrementally(find_head_end, wire, step):
    """find_head_end over a buffer growing by ``step`` bytes, as a connection reads."""
    buf = bytearray()
    scanned = 0
    for pos in range(0, len(wire), step):
        buf += wire[pos:pos + step]
        end = find_head_end(buf, max(0, scanned - 3))
        if end >= 0:
            return end
        scanned = len(buf)
    return -1


def serialize(req):
    """Bytes of a head equivalent to the parsed ``req``."""
    version = b"HTTP/1.1" if req.version == 11 else b"HTTP/1.0"
    lines = [req.method.encode("ascii") + b" " + req.target.encode("latin-1") + b" " + version]
    lines += [name.encode("ascii") + b": " + value.encode("latin-1")
              for name, value in req.fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def describe(req):
    return (req.method, req.target, req.path, req.query, req.version, req.headers,
            req.fields, req.keep_alive, req.content_length, req.chunked,
            req.expect_continue)


def check_request(req):
    assert TOKEN.match(req.method.encode("ascii")), req.method
    assert req.target.startswith("/"), req.target
    assert not any(ord(c) <= 0x20 or ord(c) == 0x7F for c in req.target), req.target
    assert req.path + ("?" + req.query if "?" in req.target else "") == req.target
    assert req.version in (10, 11)
    assert isinstance(req.keep_alive, bool) and isinstance(req.chunked, bool)
    assert isinstance(req.expect_continue, bool)
    if req.chunked:
        assert req.content_length is None and req.version == 11
    if req.content_length is not None:
        assert isinstance(req.content_length, int) and req.content_length >= 0
    if req.version == 11:
        assert "host" in req.headers
    for name, value in req.fields:
        assert name == name.lower() and TOKEN.match(name.encode("ascii")), name
        assert "\r" not in value and "\n" not in value and "\0" not in value
        assert value == value.strip(" \t")
    assert set(req.headers) == {name for name, _ in req.fields}


def outcome(mod, head):
    """What ``mod.parse_head`` makes of ``head``: the parsed fields, or the error's
    status and reason (checked). Any other exception propagates."""
    try:
        req = mod.parse_head(head)
    except mod.HttpError as exc:
        assert exc.status in STATUSES, (exc.status, head)
        assert exc.reason and "\n" not in exc.reason, exc.reason
        return ("error", exc.status, exc.reason)
    check_request(req)
    again = mod.parse_head(serialize(req))
    assert describe(again) == describe(req), head
    return describe(req)


def parse_checked(head):
    got = outcome(fast, head)
    want = outcome(pure, head)
    if got != want:
        raise AssertionError(f"fast and pure disagree on {head!r}\nfast: {got}\npure: {want}")
    return got


def TestOneInput(data):
    if not data:
        return
    ctl = data[0]
    wire = bytes(data[1:])
    if ctl & 0x40:
        # start from a valid request line so mutations reach the header rules quickly
        wire = PREFIX + wire
    if ctl & 0x80:
        # the parser must cope with whatever ends in CRLFCRLF, heads found or not
        parse_checked(wire + b"\r\n\r\n")
    end = pure.find_head_end(wire)
    step = 1 + (ctl & 0x3F)
    for mod in (fast, pure):
        assert find_incrementally(mod.find_head_end, wire, step) == end
        assert mod.find_head_end(bytearray(wire)) == end
    if end < 0:
        assert b"\r\n\r\n" not in wire
        return
    assert wire[end - 4:end] == b"\r\n\r\n" and b"\r\n\r\n" not in wire[:end - 1]
    parse_checked(wire[:end])


if __name__ == "__main__":
    import atheris

    # the parser is already imported: instrument what is loaded so libFuzzer sees coverage
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
