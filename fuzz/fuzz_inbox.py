"""Fuzz target: the feeds inbox record decoder (``storage.feeds.inbox.decode``), which
the delivery process runs on the workers' inbox files (a torn or damaged file must
cost a log line, never the delivery process).

Run with atheris (``make fuzz``):  python fuzz/fuzz_inbox.py -runs=20000
``TestOneInput`` needs nothing but storage.feeds.inbox, so tests import it and
smoke-run it over hypothesis inputs without atheris installed.

The first byte picks the input: the bytes as they are, or a valid record followed by
the bytes (so that mutations reach the body checks). Either records and the bytes
they took, or CorruptRecord with a one-line reason and the records before it;
anything else is a crash, and so is a record that does not encode back to the bytes
it was read from, or a count of bytes taken past the input.
"""
import sys

from storage.feeds import inbox

VALID = inbox.encode(1_700_000_000_123_456_789, 0, "0A" * 32, [(1, 0), (2, 1), (3, 2)],
                     b'{"event": "storage.chunk.new"}')


def check(data):
    try:
        records, used = inbox.decode(data)
    except inbox.CorruptRecord as exc:
        reason = str(exc)
        assert reason and "\n" not in reason
        records, used = exc.records, exc.consumed
    assert 0 <= used <= len(data)
    again = b"".join(inbox.encode(r.ts_ns, r.op, r.chunk_id, r.parts, r.event)
                     for r in records)
    assert again == bytes(data[:used]), (again, bytes(data[:used]))
    return records, used


def TestOneInput(data):
    if not data:
        return
    rest = bytes(data[1:])
    check(rest if data[0] % 2 == 0 else VALID + rest)


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
