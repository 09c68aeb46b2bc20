"""Fuzz target: reading a chunk's metadata back from an s3backup object
(``storage.feeds.s3``: decode_user_metadata, decode_sidecar), what ``storage-node
feeds restore`` trusts to PUT a chunk on a node.

Run with atheris (``make fuzz``):  python fuzz/fuzz_s3meta.py -runs=20000
``TestOneInput`` needs nothing but storage.feeds.s3 (boto3 is not imported), so tests
import it and smoke-run it over hypothesis inputs without atheris installed.

The first byte picks the form: a sidecar (the rest is its bytes), S3 user metadata
(the rest is split into ``key=value`` lines), or a round trip (the rest becomes
header values, encoded then decoded). Either an answer or BadBackup with a one-line
reason; anything else is a crash, and so is an answer holding a header that is not
chunk metadata or a value with a control character (it would be PUT as it is), or a
round trip that does not give back what went in.
"""
import re
import sys

from storage.feeds import s3

CHUNK_ID = "0123456789ABCDEF" * 4
NAMES = ("X-Oio-Chunk-Meta-Chunk-Id", "X-Oio-Chunk-Meta-Full-Path",
         "X-Oio-Chunk-Meta-Chunk-Hash", "X-Oio-Ext-Color", "X-Oio-Ext-A.b_c")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab may be in a value


def check(headers):
    for name, value in headers.items():
        assert isinstance(name, str) and isinstance(value, str)
        assert name.lower().startswith(("x-oio-chunk-meta-", "x-oio-ext-")), name
        assert ":" not in name and "\t" not in name, name
        assert not _CONTROL.search(name + value), (name, value)
        value.encode("latin-1")


def decode(fn, *args):
    try:
        headers = fn(*args)
    except s3.BadBackup as exc:
        reason = str(exc)
        assert reason and "\n" not in reason and "\r" not in reason, repr(reason)
        return None
    check(headers)
    return headers


def TestOneInput(data):
    if not data:
        return
    mode, rest = data[0] % 3, bytes(data[1:])
    if mode == 0:
        decode(s3.decode_sidecar, rest, CHUNK_ID)
    elif mode == 1:
        user = {}
        for line in rest.decode("latin-1").split("\n"):
            key, _, value = line.partition("=")
            user[key] = value
        decode(s3.decode_user_metadata, user)
    else:
        text = rest.decode("latin-1")
        values = text.split("\n")
        headers = {name: value for name, value in zip(NAMES, values)
                   if not _CONTROL.search(value)}
        user, sidecar = s3.encode_metadata(CHUNK_ID, headers)
        for key, value in user.items():
            assert key.isascii() and value.isascii() and not _CONTROL.search(key + value)
        got = decode(s3.decode_sidecar, sidecar, CHUNK_ID) if sidecar is not None \
            else decode(s3.decode_user_metadata, user)
        assert got == headers, (got, headers)


if __name__ == "__main__":
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
