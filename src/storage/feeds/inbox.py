"""The feeds' inbox: how a worker records a chunk for its feeds at the cost of one
``write()``, and how the delivery process moves those records into the queue.

Writing three rows into SQLite before each 201 cost the request path 130 µs with
three feeds (a transaction, its index entries and counters, its WAL frames). A worker
now appends one record per chunk to a file of its own, and the delivery process
ingests the records into the queue a few times a second:

- **Worker** (``InboxWriter``): ``<docroot>/.storage-node/inbox/<pid>.<ns>.log``,
  opened ``O_APPEND`` after the fork and held under a shared ``flock`` for the life
  of the process. A record is written by one ``write()`` before the reply (with
  ``fsync on``, ``fdatasync`` too), so it is in the page cache, safe from SIGKILL,
  when the 201 goes out; a failed write is the 503 the queue's failure was.
- **Record**: ``b"FQ"``, the body's length (u32) and CRC-32 (u32), then the body:
  the time (ns since the epoch, u64), the op (u8), the chunk id (u8 length, ASCII),
  the feeds (u16 count, then per feed its id, u32, and its part, u8: 0 owed, 1 owed
  with the event, 2 forget once delivered) and the event (u32 length, bytes).
  ``Decoder`` is sans-I/O: bytes in, records out, a torn or corrupt record said so.
- **Delivery process** (``Ingester``, every turn of its loop): reads what each file
  gained since the offset kept in the queue, and applies the records of all files in
  time order in one transaction, which also moves the offsets. A record never
  overrides a row changed after its time (delivered, failed, or recorded again by a
  feed SEND or the backfill). A file whose writer is gone (its flock is free) is
  removed once read to its end; a torn record at its end was never acknowledged
  (the write did not return), so it is dropped with a warning.

Readers of the queue (``/stat``, a verbose HEAD, feed SEND) see a chunk once it is
ingested, within a fraction of a second; until then it counts as not delivered yet,
which it is.
"""
import fcntl
import logging
import os
import struct
import time
import zlib

log = logging.getLogger(__name__)

DIRNAME = "inbox"
MAGIC = b"FQ"
_HEAD = struct.Struct("<2sII")  # magic, body length, CRC-32 of the body
_FIXED = struct.Struct("<QB")  # time ns, op
_FEED = struct.Struct("<IB")  # feed id, part
MAX_BODY = 1 << 20
OWED, OWED_EVENT, FORGET = 0, 1, 2
READ_MAX = 4 << 20  # bytes read from one file per turn


class InboxError(Exception):
    """A record cannot be written (disk full, I/O error)."""


def encode(ts_ns, op, chunk_id, parts, event=b""):
    """One record: ``parts`` [(feed id, OWED | OWED_EVENT | FORGET)]."""
    cid = chunk_id.encode("ascii")
    body = b"".join([_FIXED.pack(ts_ns, op), bytes([len(cid)]), cid,
                     struct.pack("<H", len(parts)),
                     b"".join(_FEED.pack(fid, part) for fid, part in parts),
                     struct.pack("<I", len(event)), event])
    return _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body


class Record:
    __slots__ = ("ts_ns", "op", "chunk_id", "parts", "event")

    def __init__(self, ts_ns, op, chunk_id, parts, event):
        self.ts_ns = ts_ns
        self.op = op
        self.chunk_id = chunk_id
        self.parts = parts
        self.event = event


class CorruptRecord(Exception):
    """Bytes that are not a record where one should start; str() says why."""


def decode(data):
    """The whole records at the start of ``data`` (bytes-like): (records, bytes
    consumed). Stops before an incomplete record; raises CorruptRecord on bytes that
    cannot be one (the records before it are in its ``records`` attribute and its
    ``consumed`` the bytes they took)."""
    view = memoryview(data)
    records, at = [], 0
    while len(view) - at >= _HEAD.size:
        magic, length, crc = _HEAD.unpack_from(view, at)
        try:
            if magic != MAGIC:
                raise CorruptRecord(f"no record mark at byte {at}")
            if length > MAX_BODY:
                raise CorruptRecord(f"a record of {length} bytes at byte {at}")
            end = at + _HEAD.size + length
            if end > len(view):
                break  # incomplete: more may come
            body = view[at + _HEAD.size:end]
            if zlib.crc32(body) != crc:
                raise CorruptRecord(f"bad checksum at byte {at}")
            records.append(_body(body, at))
        except CorruptRecord as exc:
            exc.records, exc.consumed = records, at
            raise
        at = end
    return records, at


def _body(body, at):
    try:
        ts_ns, op = _FIXED.unpack_from(body, 0)
        pos = _FIXED.size
        size = body[pos]
        chunk_id = bytes(body[pos + 1:pos + 1 + size]).decode("ascii")
        pos += 1 + size
        (count,) = struct.unpack_from("<H", body, pos)
        pos += 2
        parts = [_FEED.unpack_from(body, pos + i * _FEED.size) for i in range(count)]
        pos += count * _FEED.size
        (elen,) = struct.unpack_from("<I", body, pos)
        pos += 4
        event = bytes(body[pos:pos + elen])
        pos += elen
    except (struct.error, IndexError, UnicodeDecodeError):
        raise CorruptRecord(f"a malformed record at byte {at}") from None
    if pos != len(body) or len(event) != elen or op not in (0, 1) or len(chunk_id) != size \
            or any(part not in (OWED, OWED_EVENT, FORGET) or fid == 0 for fid, part in parts):
        raise CorruptRecord(f"a malformed record at byte {at}")
    return Record(ts_ns, op, chunk_id, parts, event)


def directory(docroot):
    from storage.feeds.queue import DIRECTORY
    return os.path.join(docroot, DIRECTORY, DIRNAME)


# ---- the worker's side ----------------------------------------------------------------
class InboxWriter:
    """A worker's inbox file (open it after the fork)."""

    def __init__(self, docroot, durable=False):
        path = directory(docroot)
        os.makedirs(path, mode=0o755, exist_ok=True)
        self.path = os.path.join(path, f"{os.getpid()}.{time.time_ns()}.log")
        self.durable = durable
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                          0o644)
        fcntl.flock(self.fd, fcntl.LOCK_SH)  # "a writer is alive" for the ingester

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def append(self, record):
        """Write one encoded record; InboxError when it is not all written."""
        try:
            written = os.write(self.fd, record)
            if written != len(record):
                raise OSError(f"short write ({written} of {len(record)} bytes)")
            if self.durable:
                os.fdatasync(self.fd)
        except OSError as exc:
            raise InboxError(f"feeds inbox {self.path}: {exc}") from None


def backlog(docroot, offsets, piece=4 << 20):
    """{feed id: records owed} in the inbox files past their ingested ``offsets``:
    what ``/stat`` adds to the queue's pending rows (read ``offsets`` before the
    queue's counters: a record ingested meanwhile counts twice, never zero times).
    Every record is counted, however far the ingester lags: the files are read
    ``piece`` bytes at a time and only the records' heads and feed lists are looked
    at (no checksum, no event), about 1 µs a record."""
    out = {}
    path = directory(docroot)
    try:
        names = [n for n in os.listdir(path) if n.endswith(".log")]
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(path, name), "rb") as stream:
                stream.seek(offsets.get(name, 0))
                _count_owed(stream, piece, out)
        except OSError:
            continue
    return out


def _count_owed(stream, piece, out):
    buf = b""
    while True:
        data = stream.read(piece)
        if not data:
            return
        buf = buf + data if buf else data
        at, size = 0, len(buf)
        try:
            while size - at >= _HEAD.size:
                magic, length, _ = _HEAD.unpack_from(buf, at)
                if magic != MAGIC or length > MAX_BODY:
                    return  # damage: the ingester says where; count what came before
                end = at + _HEAD.size + length
                if end > size:
                    break
                pos = at + _HEAD.size + _FIXED.size
                pos += 1 + buf[pos]
                (count,) = struct.unpack_from("<H", buf, pos)
                for fid, part in _FEED.iter_unpack(buf[pos + 2:pos + 2 + count * _FEED.size]):
                    if part != FORGET:
                        out[fid] = out.get(fid, 0) + 1
                at = end
        except (struct.error, IndexError):
            return
        buf = buf[at:]


# ---- the delivery process's side ------------------------------------------------------
class Ingester:
    """Moves the inbox files' records into ``fqueue`` (a FeedQueue) for the feeds of
    ``feed_ids``; ``run()`` once per turn of the delivery loop."""

    def __init__(self, docroot, fqueue, feed_ids):
        self.dir = directory(docroot)
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self.fqueue = fqueue
        self.feed_ids = set(feed_ids)

    def run(self):
        """Ingest what the files gained; -> records applied."""
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.endswith(".log"))
        except OSError as exc:
            log.error("feeds inbox %s: %s", self.dir, exc)
            return 0
        offsets = self.fqueue.inbox_offsets()
        records, moved, finished = [], {}, []
        for name in names:
            got = self._read(name, offsets.get(name, 0))
            if got is None:
                continue
            recs, offset, done = got
            records += recs
            if offset != offsets.get(name, 0):
                moved[name] = offset
            if done:
                finished.append(name)
        if records or moved:
            records.sort(key=lambda r: r.ts_ns)
            self.fqueue.ingest(records, moved, self.feed_ids)
        for name in finished:
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
        gone = set(offsets) - set(names) | set(finished)
        if gone:
            self.fqueue.forget_inbox(gone)
        return len(records)

    def _read(self, name, offset):
        """(records, new offset, whether the file is finished) or None."""
        path = os.path.join(self.dir, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            # the writer holds a shared lock while it lives: taking it exclusive
            # means it is gone (and nothing more will be written)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                alive = False
            except BlockingIOError:
                alive = True
            size = os.fstat(fd).st_size
            data = os.pread(fd, min(READ_MAX, size - offset), offset) if size > offset \
                else b""
        finally:
            os.close(fd)
        more = offset + len(data) < size  # not all read this turn
        try:
            records, used = decode(data)
        except CorruptRecord as exc:
            log.error("feeds inbox %s: %s; the rest of the file is skipped", path, exc)
            return exc.records, size, not alive
        offset += used
        if alive or more:
            return records, offset, False
        if offset < size:
            log.warning("feeds inbox %s: a torn record at its end (%d bytes), written by a "
                        "process that died before it was acknowledged: dropped", path,
                        size - offset)
        return records, size, True
