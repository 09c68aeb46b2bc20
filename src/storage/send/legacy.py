"""The legacy SEND transfer (no ``feedid``/``feedtype``): one chunk to one node of
another cluster, run on a transfer thread.

Steps, each of which can end the SEND before any byte of data moves:
1. ``GET /info`` on the target: its namespace must be ``Castor-System-Cluster``.
2. ``HEAD /<ID>`` on the target: 200 means it has the chunk already (409).
3. ``PUT /<ID>``, chunked, with every metadata header of the chunk (its hash among
   them, so the target verifies the data). The data is hashed on the way out and the
   body is only ended (the last chunk) once it matches the stored hash: a corrupt
   source chunk is never stored on the target. Any failure before that point drops
   the connection, and the target discards what it received.
The outcome is a TaskOutcome: the code, a reason line when it is not the target's own
answer, ``Remote cluster returned: <code>`` and the ``Castor-System-Result`` trailer.
"""
import logging
import socket
import threading

import blake3

from storage.fast import load
from storage.http.reply import TaskOutcome
from storage.rawx import compress
from storage.rawxclient import RawxClient, RawxError

streamio = load("streamio")
transfer = load("transfer")
log = logging.getLogger(__name__)

PIECE = 1 << 20  # bytes per HTTP chunk sent to the target
SLICE = 4 << 20  # bytes sent between two looks at the cancel flag
RESULT_TRAILER = "Castor-System-Result"
_BUFFERS = threading.local()  # one piece buffer per transfer thread


def outcome(code, reason=None):
    """The TaskOutcome of a SEND that ended with ``code``."""
    lines = [reason] if reason else []
    lines.append(f"Remote cluster returned: {code}")
    return TaskOutcome(code, lines, [(RESULT_TRAILER, str(code))])


class Cancelled(Exception):
    """The client left: the transfer stops where it is."""

    status = None


def _piece_buffer():
    buf = getattr(_BUFFERS, "buf", None)
    if buf is None:
        buf = _BUFFERS.buf = bytearray(PIECE)
    return buf


def put_headers(stored):
    """The PUT headers that recreate ``stored`` (a StoredMeta) on another node: every
    ``X-oio-Chunk-Meta-*`` and ``X-Oio-Ext-*`` of a HEAD, ext values percent-encoded
    (the target percent-decodes them)."""
    headers = {}
    for name, value in stored.reply_headers():
        if name.startswith("X-Oio-Ext-"):
            value = _quote_ext(value)
        headers[name] = value
    return headers


def _quote_ext(value):
    return "".join(ch if " " < ch < "\x7f" and ch != "%" else f"%{ord(ch):02X}"
                   for ch in value)


class LegacySend:
    """One SEND of chunk ``chunk_id`` (open ``reader``, its ``stored`` metadata) to
    ``target`` ("host:port") of cluster ``cluster``; ``auth`` (user, password) for
    the target or None; ``timeout`` seconds per connect or stalled read/write."""

    def __init__(self, chunk_id, reader, stored, target, cluster, auth, timeout):
        self.chunk_id = chunk_id
        self.reader = reader
        self.stored = stored
        self.target = target
        self.cluster = cluster
        self.auth = auth
        self.timeout = timeout
        self.cancelled = False
        self._started = False
        self._client = None  # the RawxClient while run() uses it
        self._lock = threading.Lock()  # orders cancel() against run()'s start and end

    def cancel(self):
        """Called from the loop thread: a transfer that never started releases the
        chunk now; a running one has its target connection shut down, which ends a
        send blocked on a slow target at once (the target discards the partial chunk)."""
        with self._lock:
            self.cancelled = True
            if not self._started:
                self._started = True  # run() will not start
                self.reader.close()
            elif self._client is not None:
                self._client.shutdown()

    def run(self, progress):
        """The whole SEND (on a transfer thread): a TaskOutcome. ``progress()`` is
        called once the data transfer begins."""
        with self._lock:
            if self._started:
                return outcome(499, "cancelled: the client left")
            self._started = True
            client = self._client = RawxClient(self.target, timeout=self.timeout,
                                               auth=self.auth)
        try:
            return self._run(client, progress)
        except (Cancelled, RawxError) as exc:
            if self.cancelled:
                log.info("SEND %s to %s: cancelled, the client left", self.chunk_id,
                         self.target)
                return outcome(499, "cancelled: the client left")
            if exc.status is not None:
                return outcome(exc.status)
            timed_out = isinstance(exc.__cause__, (socket.timeout, TimeoutError))
            code = 504 if timed_out else 502
            log.warning("SEND %s to %s: %s", self.chunk_id, self.target, exc)
            return outcome(code, f"error: {exc}")
        finally:
            with self._lock:
                self._client = None
                client.close()
            self.reader.close()

    def _run(self, client, progress):
        namespace = client.info().get("namespace", "")
        if namespace != self.cluster:
            return outcome(400, f"error: Castor-System-Cluster is {self.cluster!r} but the "
                                f"target's namespace is {namespace!r}")
        status, _ = client.head(self.chunk_id)
        if status == 200:
            return outcome(409)
        if status != 404:
            return outcome(status, f"error: the target answered HEAD with {status}")
        self._check_cancel()
        progress()
        stored = self.stored
        expected = stored.get("chunk_hash").upper()
        if not expected:
            return self._corrupt("it has no stored hash")
        upload = client.put(self.chunk_id, put_headers(stored))
        try:
            if stored.compression:
                computed = self._send_inflated(upload)
            else:
                computed = self._send_plain(upload)
        except BaseException:
            upload.abort()
            raise
        if computed is None:
            upload.abort()
            return self._corrupt("its data is shorter than its stored size, or unreadable")
        if computed != expected:
            upload.abort()
            return self._corrupt(f"its data hashes to {computed}, its stored hash is "
                                 f"{expected}")
        self._check_cancel()
        try:
            upload.finish()
        except RawxError as exc:
            if exc.status == 409:  # stored there meanwhile by someone else
                return outcome(409)
            raise
        log.info("SEND %s to %s (%s): done", self.chunk_id, self.target, self.cluster)
        return outcome(201)

    def _hasher(self):
        return streamio.Md5() if len(self.stored.get("chunk_hash")) == 32 \
            else blake3.blake3()

    def _send_plain(self, upload):
        """The file as it is, by the compiled sender; -> its hash, None if short."""
        size = self.reader.size
        expected = self.stored.expected_size
        if expected is not None and expected != size:
            return None
        hasher = self._hasher()
        buf = _piece_buffer()
        offset = 0
        while offset < size:
            self._check_cancel()
            length = min(SLICE, size - offset)
            try:
                upload.send_file(self.reader.fd, offset, length, hasher, buf)
            except transfer.SourceReadError:  # shrank, or cannot be read
                return None
            offset += length
        return hasher.hexdigest().upper()

    def _send_inflated(self, upload):
        """A compressed chunk is sent as its data: inflated piece by piece."""
        size = int(self.stored.get("chunk_size") or -1)
        if size < 0:
            return None
        wbits = compress.wbits_for(self.stored.compression)
        inflater = compress.Inflater(self.reader.fd, wbits, 0, size, to_end=True)
        hasher = self._hasher()
        left = size
        while left:
            self._check_cancel()
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

    def _check_cancel(self):
        if self.cancelled:
            raise Cancelled()

    def _corrupt(self, why):
        log.error("SEND %s to %s: not sent, the source chunk is corrupt: %s",
                  self.chunk_id, self.target, why)
        return outcome(412, f"error: source chunk {self.chunk_id} is corrupt: {why}")
