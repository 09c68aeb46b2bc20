"""Pure-Python twin of ``_fastpath.getcore``: the GET/HEAD fast path, step by step.

Same names, same decisions in the same order, same bytes on the socket, same counters,
same access lines (``storage.accesslog.format_line``, into the buffer ``log_to`` names).
It declines (``DECLINED``, nothing consumed or sent) whatever the Python request path
should decide, and answers a GET (whole or one satisfiable range) or a plain HEAD of a
chunk whose metadata ``remember()`` cached for the very inode version on disk.
"""
import os
import re
import socket
import time

from storage.http.response import build_head
from storage.pure.httphead import HttpError, parse_head
from storage.pure.replylog import AccessLog, Counters

__all__ = ["DECLINED", "DONE", "PENDING", "GetCore", "Reply", "parse_range"]

DECLINED, DONE, PENDING = 0, 1, 2
MAX_DIGITS = 18
_RANGE = re.compile(rb"bytes=([0-9]*)-([0-9]*)\Z")
_HEX_ID = re.compile(r"[0-9A-Fa-f]{24,64}\Z", re.ASCII)


def _range_of(raw, size):
    """-> (0, None) whole chunk, (1, (offset, length)), (2, None) unsatisfiable,
    (-1, None) a number too long for the fast path."""
    match = _RANGE.match(raw)
    if match is None:
        return 0, None
    first, last = match.groups()
    if len(first) > MAX_DIGITS or len(last) > MAX_DIGITS:
        return -1, None
    if not first and not last:
        return 0, None
    if not first:
        suffix = int(last)
        if suffix == 0:
            return 2, None
        length = min(suffix, size)
        return 1, (size - length, length)
    start = int(first)
    if last:
        end = int(last)
        if start > end:
            return 0, None
        if start >= size:
            return 2, None
        return 1, (start, min(end, size - 1) - start + 1)
    if start >= size:
        return 2, None
    return 1, (start, size - start)


def parse_range(value, size):
    """The answers of ``storage.rawx.ranges.parse_range``; OverflowError for a number
    of more than 18 digits."""
    raw = value.encode("latin-1", "replace") if isinstance(value, str) else bytes(value)
    found, wanted = _range_of(raw, size)
    if found == -1:
        raise OverflowError("range number too long")
    if found == 2:
        return "unsatisfiable"
    return wanted


class _Entry:
    __slots__ = ("dev", "ino", "ctime_ns", "expected", "fields", "head_ok", "account",
                 "bucket")


class GetCore:
    def __init__(self, layout, hosts, stats=None, slots=None, small_file=65536,
                 cache_size=4096, wildcard_ports=()):
        docroot, width, depth = layout
        self.docroot = docroot.encode() if isinstance(docroot, str) else bytes(docroot)
        self.width = width
        self.depth = depth
        if len(self.docroot) + depth * (width + 1) + 66 >= 4096:
            raise ValueError("docroot too long")
        self.hosts = frozenset(hosts)
        self.ports = frozenset(wildcard_ports)
        self.cache = {}
        self.cache_size = cache_size
        self.small_file = small_file
        self.counters = Counters(stats, slots)
        self.status = 0
        self.keep_alive = False
        self.request = None
        self.kind = "get"
        self.reqid = ""
        self.account = self.bucket = self.pending = None
        self.started = self.ttfb = 0.0
        self.bytes_out = 0
        self.access = None
        self.peer = None

    def log_to(self, buffer, pid=0):
        """Write each reply's access line into ``buffer`` (None: log nothing)."""
        self.access = None if buffer is None else AccessLog(buffer, pid, self.counters)

    def remember(self, chunk_id, dev, ino, ctime_ns, expected, fields, head_ok,
                 account=None, bucket=None):
        entry = _Entry()
        entry.dev, entry.ino, entry.ctime_ns = dev, ino, ctime_ns
        entry.expected = expected
        entry.fields = bytes(fields)
        entry.head_ok = bool(head_ok)
        entry.account, entry.bucket = account, bucket
        if chunk_id not in self.cache and len(self.cache) >= self.cache_size:
            self.cache.clear()
        self.cache[chunk_id] = entry

    def forget(self, chunk_id):
        self.cache.pop(chunk_id, None)

    def clear(self):
        self.cache.clear()

    def __len__(self):
        return len(self.cache)

    def serve(self, sockfd, buf, n, keep_alive_ok=True, peer=None):
        view = memoryview(buf)
        if n < 0 or n > view.nbytes:
            raise ValueError("n out of the buffer")
        started = time.monotonic()
        try:
            req = parse_head(bytes(view[:n]))
        except HttpError:
            return DECLINED
        if req.method not in ("GET", "HEAD"):
            return DECLINED
        head_only = req.method == "HEAD"
        if req.chunked or req.content_length or req.expect_continue:
            return DECLINED
        headers = req.headers
        host = headers.get("host", "")
        if host and host not in self.hosts and host.rpartition(":")[2] not in self.ports:
            return DECLINED
        if head_only and ("x-oio-check-hash" in headers or req.query):
            return DECLINED  # hashing, or ?verbose (feed status): the Python path's
        path = req.path
        if len(path) > 200:
            return DECLINED
        raw_id = path.lstrip("/")
        if not _HEX_ID.match(raw_id) or self.depth * self.width > len(raw_id):
            return DECLINED
        chunk_id = raw_id.upper()
        entry = self.cache.get(chunk_id)
        if entry is None or (head_only and not entry.head_ok):
            return DECLINED
        reqid = headers.get("x-oio-req-id") or headers.get("x-trans-id", "")
        rid = reqid[:63].encode("latin-1")
        if b"\r" in rid or b"\n" in rid:
            return DECLINED
        parts = [self.docroot]
        for level in range(self.depth):
            parts.append(chunk_id[level * self.width:(level + 1) * self.width].encode())
        parts.append(chunk_id.encode())
        try:
            fd = os.open(b"/".join(parts), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return DECLINED
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return DECLINED
        if not (st.st_mode & 0o170000 == 0o100000) or st.st_dev != entry.dev \
                or st.st_ino != entry.ino or st.st_ctime_ns != entry.ctime_ns \
                or (entry.expected is not None and entry.expected != st.st_size):
            os.close(fd)
            return DECLINED
        size = st.st_size
        offset, length, status = 0, size, 200
        if not head_only:
            value = headers.get("range")
            if value:
                found, wanted = _range_of(value.encode("latin-1"), size)
                if found in (2, -1):
                    os.close(fd)
                    return DECLINED
                if found == 1:
                    if wanted == (0, 0):
                        length = size
                    else:
                        offset, length = wanted
                        status = 206
        keep = req.keep_alive and keep_alive_ok
        self.request = req
        self.kind = "head" if head_only else "get"
        self.reqid = reqid[:63]
        self.account, self.bucket = entry.account, entry.bucket
        self.peer = peer
        self.status = status
        self.keep_alive = keep
        self.started = started
        self.pending = None
        head = self._build_head(status, entry.fields, rid, head_only, offset, length, size,
                                keep)
        self.bytes_out = -len(head)
        self.ttfb = time.monotonic()
        return self._send(sockfd, fd, head, head_only, offset, length)

    @staticmethod
    def _build_head(status, fields, rid, head_only, offset, length, size, keep):
        """The Python path's own head builder, with the headers a GET/HEAD adds."""
        if head_only:
            headers = [("Accept-Ranges", "bytes")]
        elif status == 206:
            headers = [("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}")]
        else:
            headers = []
        if rid:
            headers.append(("X-Oio-Req-Id", rid.decode("latin-1")))
        return build_head(status, headers, length, keep, fields=fields)

    def _send(self, sockfd, fd, head, head_only, offset, length):
        if head_only or length <= self.small_file:
            try:
                data = b"" if head_only or not length else os.pread(fd, length, offset)
            except OSError:
                data = None
            os.close(fd)
            if data is None or (not head_only and len(data) != length):
                return DECLINED
            wire = head + data
            try:
                sent = _send_on(sockfd, wire, 0)
            except BlockingIOError:
                sent = 0
            except OSError:
                return self._done(0, True)
            if sent < len(wire):
                self.bytes_out += sent
                self.pending = Reply(self, sockfd, wire[sent:], -1, 0, 0)
                return self._pend()
            return self._done(len(wire), False)
        reply = self.pending = Reply(self, sockfd, head, fd, offset, length)
        outcome = reply._push()
        self.bytes_out = reply.bytes_out
        if outcome == PENDING:
            return self._pend()
        self.pending = None
        self.keep_alive = reply.keep_alive
        return DONE

    def _pend(self):
        self.pending.in_flight = True
        if self.kind == "get":
            self.counters.inflight(1)
        return PENDING

    def _done(self, sent, failed):
        self.bytes_out = max(0, self.bytes_out + sent)
        if failed:
            self.keep_alive = False
        micros = self.counters.count(self.kind == "head", self.started, self.bytes_out)
        if self.access is not None:
            self.access.write(self, micros)
        return DONE


class Reply:
    """The rest of a reply the socket could not take at once (see the compiled
    ``Reply``): ``left`` bytes of head (or head and small body), then ``remaining``
    bytes of the file from ``offset``."""

    def __init__(self, core, sockfd, left, fd, offset, length):
        self._counters = core.counters
        self._access = core.access
        self._sockfd = sockfd
        self._left = left
        self._fd = fd
        self._offset = offset
        self.remaining = length
        for name in ("status", "keep_alive", "request", "kind", "reqid", "account",
                     "bucket", "started", "ttfb", "bytes_out", "peer"):
            setattr(self, name, getattr(core, name))
        self.finished = False
        self.in_flight = False

    @property
    def left(self):
        return self._left

    def resume(self, sockfd):
        if self.finished:
            return DONE
        self._sockfd = sockfd
        return self._push()

    def abort(self):
        if not self.finished:
            self._finish(True)

    def _push(self):
        if self._left:
            try:
                sent = _send_on(self._sockfd, self._left,
                                socket.MSG_MORE if self.remaining else 0)
            except BlockingIOError:
                return PENDING
            except OSError:
                return self._finish(True)
            self._left = self._left[sent:]
            self.bytes_out += sent
            if self._left:
                return PENDING
        failed = False
        while self.remaining > 0:
            try:
                moved = os.sendfile(self._sockfd, self._fd, self._offset, self.remaining)
            except BlockingIOError:
                return PENDING
            except InterruptedError:
                continue
            except OSError:
                failed = True
                break
            if moved == 0:  # the file ended early: the client cannot be served
                failed = True
                break
            self._offset += moved
            self.remaining -= moved
            self.bytes_out += moved
        return self._finish(failed)

    def _finish(self, failed):
        self.finished = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.bytes_out = max(0, self.bytes_out)
        if failed:
            self.keep_alive = False
        if self.in_flight and self.kind == "get":
            self._counters.inflight(-1)
        self.in_flight = False
        micros = self._counters.count(self.kind == "head", self.started, self.bytes_out)
        if self._access is not None:
            self._access.write(self, micros)
        return DONE

    def __del__(self):
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)


def _send_on(sockfd, data, flags):
    """send() on a raw fd (MSG_NOSIGNAL: a gone client is an error, not a signal)."""
    sock = socket.socket(fileno=os.dup(sockfd))
    try:
        return sock.send(data, flags | socket.MSG_NOSIGNAL)
    finally:
        sock.close()
