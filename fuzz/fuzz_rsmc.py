"""Fuzz target: the RSMC request parser (storage.rsmc.parser), fed untrusted bytes.

Run with atheris (``make fuzz``):  python fuzz/fuzz_rsmc.py -runs=20000
``TestOneInput`` needs only the parser, so tests smoke-run it over hypothesis inputs
without atheris.

The first input byte picks the limits and the split points; the rest is fed in
pieces. A crash is: any exception (errors are events, never raised), an event that
is neither a Request nor an RsmcError, a code outside 400/413/501, an error that is
not the last event or does not stick, a request whose command is unknown or whose
items exceed the limit, or a different outcome for the same bytes fed whole.
"""
import random
import sys

from storage.rsmc.parser import KNOWN, Request, RequestParser, RsmcError


def run(parts, max_bytes, max_items):
    parser = RequestParser(max_bytes, max_items)
    events = []
    for part in parts:
        got = parser.feed(part)
        for event in got:
            if not isinstance(event, (Request, RsmcError)):
                raise AssertionError(f"unexpected event {event!r}")
        events += got
        if parser.error is not None:
            again = parser.feed(b"LOG RSMP/1.0\r\n\r\n")
            if again != [parser.error]:
                raise AssertionError("the parser did not stay failed")
            break
    for index, event in enumerate(events):
        if isinstance(event, RsmcError):
            if index != len(events) - 1 or event.code not in (400, 413, 501):
                raise AssertionError(f"bad error event {event.code} at {index}")
        else:
            if event.command not in KNOWN or len(event.items) > max_items:
                raise AssertionError(f"bad request {event!r}")
    return [(e.code, e.reason) if isinstance(e, RsmcError)
            else (e.command, e.argument, e.fields, e.items) for e in events]


def TestOneInput(data):
    if not data:
        return
    ctl = data[0]
    rng = random.Random(data[:1])
    wire = bytes(data[1:])
    max_bytes, max_items = (64 + ctl * 4, 1 + ctl % 7) if ctl & 1 else (1 << 20, 10_000)
    cuts = sorted(rng.randrange(len(wire) + 1) for _ in range(ctl % 5))
    parts = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]
    split = run(parts, max_bytes, max_items)
    whole = run([wire], max_bytes, max_items)
    if split != whole:
        raise AssertionError(f"split and whole disagree on {wire!r}:\n{split}\n{whole}")


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
