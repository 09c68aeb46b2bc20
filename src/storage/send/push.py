"""Pushing one local chunk to a RAWX node (ours or oio-rawx) with the node's outbound
client: what SEND, RSMC's SEND and replication feeds share.

``HEAD`` on the target first (200: it has the chunk, 409). Then ``PUT``, chunked,
with every metadata header of the chunk (its hash among them, so the target verifies
the data). The data is hashed on the way out (compiled ``transfer.send_file``,
without the GIL; a compressed chunk is inflated and sent as its data) and the body is
only ended, by its last chunk, once it matches the stored hash: a corrupt source chunk
is never stored on the target. Any failure before that drops the connection, and the
target discards what it received.
"""
import threading

from storage.fast import load
from storage.rawx import compress
from storage.rawx import meta as chunkmeta
from storage.rawxclient import RawxError

transfer = load("transfer")

PIECE = 1 << 20  # bytes per HTTP chunk sent to the target
SLICE = 4 << 20  # bytes sent between two looks at the cancel flag
_BUFFERS = threading.local()  # one piece buffer per transfer thread


class Cancelled(Exception):
    """The requester left: the transfer stops where it is."""

    status = None


class CorruptSource(Exception):
    """The local chunk does not match its stored hash or size; str() says how."""


class TargetRefused(Exception):
    """The target answered HEAD with neither 200 nor 404: ``status``."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def put_headers(stored, chunk_id=None):
    """The PUT headers that recreate ``stored`` (a StoredMeta) on another node, as
    ``chunk_id`` (default: its own id): every ``X-oio-Chunk-Meta-*`` and
    ``X-Oio-Ext-*`` of a HEAD, ext values percent-encoded (the target decodes them)."""
    headers = {}
    for name, value in stored.reply_headers():
        if name.startswith("X-Oio-Ext-"):
            value = _quote_ext(value)
        headers[name] = value
    if chunk_id is not None:
        headers["X-Oio-Chunk-Meta-Chunk-Id"] = chunk_id
    return headers


def _quote_ext(value):
    return "".join(ch if " " < ch < "\x7f" and ch != "%" else f"%{ord(ch):02X}"
                   for ch in value)


def _piece_buffer():
    buf = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = bytearray(PIECE)
    return buf


def push_chunk(client, chunk_id, dest_id, reader, stored, check_cancel=None,
               progress=None, absent=False):
    """Push local chunk ``chunk_id`` (open ``reader``, its ``stored`` StoredMeta) to
    ``client``'s node as ``dest_id``: 201 stored, 409 it was there. ``check_cancel()``
    raises Cancelled to stop between slices; ``progress()`` is called when the data
    transfer begins; ``absent``: the target said it has no such chunk (SWAP), so no
    HEAD first. Raises CorruptSource, TargetRefused, RawxError (unreachable, broken,
    or the target refused the PUT: its status)."""
    check_cancel = check_cancel or (lambda: None)
    if not absent:
        status, _ = client.head(dest_id)
        if status == 200:
            return 409
        if status != 404:
            raise TargetRefused(f"the target answered HEAD with {status}", status)
    check_cancel()
    if progress is not None:
        progress()
    expected = stored.get("chunk_hash").upper()
    if not expected:
        raise CorruptSource("it has no stored hash")
    upload = client.put(dest_id, put_headers(stored, dest_id))
    try:
        if stored.compression:
            computed = _send_inflated(upload, reader, stored, check_cancel)
        else:
            computed = _send_plain(upload, reader, stored, check_cancel)
    except BaseException:
        upload.abort()
        raise
    if computed is None:
        upload.abort()
        raise CorruptSource("its data is shorter than its stored size, or unreadable")
    if computed != expected:
        upload.abort()
        raise CorruptSource(f"its data hashes to {computed}, its stored hash is {expected}")
    check_cancel()
    try:
        upload.finish()
    except RawxError as exc:
        if exc.status == 409:  # stored there meanwhile by someone else
            return 409
        raise
    return 201


def _hasher(stored):
    return chunkmeta.new_hasher(chunkmeta.hash_algo(stored.get("chunk_hash")))


def _send_plain(upload, reader, stored, check_cancel):
    """The file as it is, by the compiled sender; -> its hash, None if short."""
    size = reader.size
    if stored.expected_size is not None and stored.expected_size != size:
        return None
    hasher = _hasher(stored)
    buf = _piece_buffer()
    offset = 0
    while offset < size:
        check_cancel()
        length = min(SLICE, size - offset)
        try:
            upload.send_file(reader.fd, offset, length, hasher, buf)
        except transfer.SourceReadError:  # shrank, or cannot be read
            return None
        offset += length
    return hasher.hexdigest().upper()


def _send_inflated(upload, reader, stored, check_cancel):
    """A compressed chunk is sent as its data: inflated piece by piece."""
    try:
        size = int(stored.get("chunk_size") or -1)
    except ValueError:
        return None
    if size < 0:
        return None
    wbits = compress.wbits_for(stored.compression)
    inflater = compress.Inflater(reader.fd, wbits, 0, size, to_end=True)
    hasher = _hasher(stored)
    left = size
    while left:
        check_cancel()
        try:
            data = inflater.read(min(PIECE, left))
        except OSError:  # a corrupt zlib stream, or a read error
            return None
        if not data:
            return None
        hasher.update(data)
        upload.write(data)
        left -= len(data)
    return hasher.hexdigest().upper()
