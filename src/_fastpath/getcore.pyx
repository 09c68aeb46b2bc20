"""The GET/HEAD fast path of a chunk server, compiled: one call answers the common read.

A worker spends most of a small GET in Python bookkeeping around a handful of
syscalls, and a big GET's few wake-ups run cold after the client's copies have
evicted the interpreter's data from the caches. ``GetCore.serve()`` takes the bytes of
one whole request head, already in the worker's receive buffer, and either declines
(returns ``DECLINED``; nothing was consumed or sent, the Python path answers) or
answers it: it parses the head (``httphead``), opens the chunk, checks it against the
metadata the Python path cached for that very inode version (``remember()``), builds
the reply head, and sends the head and the body (one ``sendmsg`` for a small file,
``sendfile`` for a big one) until the socket is full. What the socket did not take is
left in a ``Reply`` (``GetCore.pending``), which the loop resumes on each writable
event without any Python bookkeeping in between. Once the reply is out, the request is
counted in the worker's row of the node-wide counters, as ``WorkerStats.finish``
counts it, and its access line (``log_to()``) is formatted here, byte for byte as
``storage.accesslog.format_line`` words it, into the worker's log buffer
(``accesslog.LogBuffer``): no Python runs to log a reply.

It only ever answers what the Python path would answer with the same bytes: a GET
(whole or one satisfiable ``bytes=`` range) or a plain HEAD of a chunk whose metadata
is cached and whose size matches. Everything else (another method or route, a body, a
Host the node does not own, a percent-encoded id, an unsatisfiable range, a check-hash,
a compressed chunk, an open or fstat failure, a cache miss) is declined, and the Python
path, the executable spec, decides. ``Lane`` keeps the keep-alive connections the core
answers between their requests, so that no Python runs per request at all. The
pure-Python twin is ``storage.pure.getcore``.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memcpy

from _fastpath.httphead cimport parse_head_ptr
from _fastpath.replylog cimport log_reply, log_tail, monotonic

cdef extern from "<time.h>" nogil:
    struct timespec:
        time_t tv_sec
        long tv_nsec
    struct tm:
        int tm_sec, tm_min, tm_hour, tm_mday, tm_mon, tm_year, tm_wday
    time_t time(time_t *t)
    tm *gmtime_r(const time_t *timep, tm *result)

cdef extern from "<sys/stat.h>" nogil:
    struct stat:
        unsigned long st_dev
        unsigned long st_ino
        unsigned int st_mode
        long st_size
        timespec st_ctim
    int fstat(int fd, stat *buf)
    bint S_ISREG(unsigned int mode)

cdef extern from "<fcntl.h>" nogil:
    enum: O_RDONLY
    enum: O_CLOEXEC
    int c_open "open"(const char *path, int flags)

cdef extern from "<unistd.h>" nogil:
    ssize_t pread(int fd, void *buf, size_t count, long offset)
    int c_close "close"(int fd)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    struct msghdr:
        void *msg_name
        unsigned int msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    enum: MSG_MORE
    enum: MSG_NOSIGNAL
    ssize_t sendmsg(int fd, const msghdr *msg, int flags)

cdef extern from "<sys/sendfile.h>" nogil:
    ssize_t sendfile(int out_fd, int in_fd, long *offset, size_t count)

cdef extern from "<string.h>" nogil:
    void *memset(void *s, int c, size_t n)

__all__ = ["DECLINED", "DONE", "PENDING", "GetCore", "Reply", "parse_range"]

cdef enum:
    _PATH_MAX = 4096
    _MAX_DIGITS = 18  # longer range numbers are left to the Python path
    _HEAD_ROOM = 512  # status line, Date, Content-Range, request id, length, close

DECLINED = _DECLINED
DONE = _DONE
PENDING = _PENDING

cdef bytes _STATUS_200 = b"HTTP/1.1 200 OK\r\n"
cdef bytes _STATUS_206 = b"HTTP/1.1 206 Partial Content\r\n"
cdef const char *_DAYS = b"MonTueWedThuFriSatSun"
cdef const char *_MONTHS = b"JanFebMarAprMayJunJulAugSepOctNovDec"


cdef class _Entry:
    """What the Python path knows of one version (dev, inode, ctime) of a chunk."""
    cdef unsigned long dev, ino
    cdef int64_t ctime_ns, expected
    cdef bint check_size, head_ok
    cdef bytes fields
    cdef object account, bucket
    cdef bytes tail  # the access line's end: b"account:<a> bucket:<b>\n"


cdef inline int _digits(const unsigned char *s, Py_ssize_t n, int64_t *out) noexcept:
    """Decimal digits -> value; -1 for none at all, -2 for too many to handle here."""
    cdef int64_t v = 0
    cdef Py_ssize_t i
    if n == 0:
        return -1
    if n > _MAX_DIGITS:
        return -2
    for i in range(n):
        v = v * 10 + (s[i] - 48)
    out[0] = v
    return 0


cdef int _range_of(const unsigned char *s, Py_ssize_t n, int64_t size,
                   int64_t *offset, int64_t *length) noexcept:
    """``rawx.ranges.parse_range`` over raw bytes: 0 serve the whole chunk, 1 the range
    (offset, length), 2 unsatisfiable, -1 a number too long for this path."""
    cdef Py_ssize_t i = 6, a, dash
    cdef int64_t first = 0, last = 0
    cdef int rf, rl
    if n < 7 or s[0] != 98 or s[1] != 121 or s[2] != 116 or s[3] != 101 or s[4] != 115 \
            or s[5] != 61:  # "bytes="
        return 0
    a = i
    while i < n and 48 <= s[i] <= 57:
        i += 1
    if i >= n or s[i] != 45:  # "-"
        return 0
    dash = i
    i += 1
    while i < n and 48 <= s[i] <= 57:
        i += 1
    if i != n:
        return 0
    rf = _digits(s + a, dash - a, &first)
    rl = _digits(s + dash + 1, n - dash - 1, &last)
    if rf == -2 or rl == -2:
        return -1
    if rf == -1 and rl == -1:
        return 0
    if rf == -1:
        if last == 0:
            return 2
        length[0] = last if last < size else size
        offset[0] = size - length[0]
        return 1
    if rl == 0:
        if first > last:
            return 0
        if first >= size:
            return 2
        offset[0] = first
        length[0] = (last if last < size - 1 else size - 1) - first + 1
        return 1
    if first >= size:
        return 2
    offset[0] = first
    length[0] = size - first
    return 1


def parse_range(value, size):
    """The same answers as ``storage.rawx.ranges.parse_range``: None, "unsatisfiable" or
    (offset, length); raises OverflowError for a number of more than 18 digits (the
    fast path declines those requests)."""
    cdef bytes raw = value.encode("latin-1", "replace") if isinstance(value, str) else bytes(value)
    cdef int64_t offset = 0, length = 0
    cdef int found = _range_of(<const unsigned char *>PyBytes_AS_STRING(raw),
                               PyBytes_GET_SIZE(raw), size, &offset, &length)
    if found == -1:
        raise OverflowError("range number too long")
    if found == 2:
        return "unsatisfiable"
    if found == 1:
        return (offset, length)
    return None

cdef class GetCore:
    """One worker's GET/HEAD fast path. ``layout`` = (docroot, hash_width, hash_depth)
    of the chunk repository; ``hosts`` the Host values the node answers to, and
    ``wildcard_ports`` the ports (str) any Host may name when it listens on a wildcard
    address; ``stats`` a writable int64 buffer (the node-wide counters) and ``slots``
    the indices this path adds to in it, with its row's offset as ``base``
    (``storage.stats``)."""


    def __cinit__(self):
        self.head = NULL
        self.data = NULL

    def __init__(self, layout, hosts, stats=None, slots=None, small_file=65536,
                 cache_size=4096, wildcard_ports=()):
        cdef Py_ssize_t offset
        docroot, width, depth = layout
        self.docroot = docroot.encode() if isinstance(docroot, str) else bytes(docroot)
        self.width = width
        self.depth = depth
        if len(self.docroot) + depth * (width + 1) + 66 >= _PATH_MAX:
            raise ValueError("docroot too long")
        self.hosts = frozenset(hosts)
        self.ports = frozenset(wildcard_ports)
        self.cache = {}
        self.cache_size = cache_size
        self.small_file = small_file
        self.head_cap = 4096
        self.head = <char *>PyMem_Malloc(self.head_cap)
        self.data = <char *>PyMem_Malloc(small_file if small_file > 0 else 1)
        if self.head == NULL or self.data == NULL:
            raise MemoryError()
        self.date_second = -1
        self.kind = "get"
        self.reqid = ""
        self.counters = Counters(stats, slots)
        self.access = None
        self.tail = b""

    def log_to(self, buffer, int pid=0):
        """Write each reply's access line into ``buffer`` (an ``accesslog.LogBuffer``;
        None: log nothing), ``pid`` at its start. The in-flight figures are the
        node's when ``slots`` gave "row" (the row length), else this row's."""
        if buffer is None:
            self.access = None
        else:
            self.access = AccessLog(buffer, pid, self.counters)

    def __dealloc__(self):
        PyMem_Free(self.head)
        PyMem_Free(self.data)

    # ---- the metadata the Python path decoded --------------------------------------
    def remember(self, chunk_id, dev, ino, ctime_ns, expected, fields, head_ok,
                 account=None, bucket=None):
        """Cache what a GET/HEAD of this version of ``chunk_id`` (upper-case) answers
        with: ``fields`` the encoded metadata header lines, ``expected`` the size the
        chunk must have (None: unchecked), ``head_ok`` whether a HEAD may be answered
        (the chunk has a stored hash)."""
        cdef _Entry entry = _Entry.__new__(_Entry)
        entry.dev = dev
        entry.ino = ino
        entry.ctime_ns = ctime_ns
        entry.check_size = expected is not None
        entry.expected = expected if expected is not None else 0
        entry.fields = bytes(fields)
        entry.head_ok = bool(head_ok)
        entry.account = account
        entry.bucket = bucket
        entry.tail = log_tail(account, bucket)
        if chunk_id not in self.cache and len(self.cache) >= self.cache_size:
            self.cache.clear()
        self.cache[chunk_id] = entry

    def forget(self, chunk_id):
        self.cache.pop(chunk_id, None)

    def clear(self):
        self.cache.clear()

    def __len__(self):
        return len(self.cache)

    # ---- one request ---------------------------------------------------------------
    def serve(self, int sockfd, buf, Py_ssize_t n, bint keep_alive_ok=True, peer=None):
        """Answer the request head in ``buf[:n]`` on ``sockfd`` (non-blocking), or
        decline. -> DECLINED, DONE or PENDING (see the attributes). ``peer`` (str) is
        the client's address for the access line."""
        cdef Py_buffer view
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            if n < 0 or n > view.len:
                raise ValueError("n out of the buffer")
            return self._serve(sockfd, <const unsigned char *>view.buf, n, keep_alive_ok,
                               peer)
        finally:
            PyBuffer_Release(&view)

    cdef int _serve(self, int sockfd, const unsigned char *p, Py_ssize_t n,
                    bint keep_alive_ok, object peer) except -1:
        cdef double started = monotonic()
        cdef Request req
        cdef bint head_only, keep
        cdef str path, chunk_id, reqid, host, value
        cdef bytes rid
        cdef Py_ssize_t i, plen, start, idlen
        cdef const unsigned char *s
        cdef char cpath[_PATH_MAX]
        cdef char *c
        cdef int fd, ok, found = 0
        cdef stat st
        cdef _Entry entry
        cdef int64_t size, offset = 0, length = 0
        cdef int status = 200
        cdef object cached
        try:
            req = parse_head_ptr(p, n)
        except Exception:
            return _DECLINED  # the Python path refuses it with the right status
        if req.method == "GET":
            head_only = False
        elif req.method == "HEAD":
            head_only = True
        else:
            return _DECLINED
        if req.chunked or req.content_length or req.expect_continue:
            return _DECLINED
        headers = <dict>req.headers
        host = headers.get("host", "")
        if host and host not in self.hosts and host.rpartition(":")[2] not in self.ports:
            return _DECLINED  # 418: the Python path's
        if head_only and ("x-oio-check-hash" in headers or req.query):
            return _DECLINED  # hashing, or ?verbose (feed status): the Python path's
        # the chunk id: the path without its leading slashes, 24 to 64 ASCII hex
        path = req.path
        plen = len(path)
        if plen > 200:
            return _DECLINED
        raw_path = path.encode("latin-1")
        s = <const unsigned char *>PyBytes_AS_STRING(raw_path)
        start = 0
        while start < plen and s[start] == 47:
            start += 1
        idlen = plen - start
        if idlen < 24 or idlen > 64 or self.depth * self.width > idlen:
            return _DECLINED
        for i in range(start, plen):
            if not (48 <= s[i] <= 57 or 65 <= s[i] <= 70 or 97 <= s[i] <= 102):
                return _DECLINED
        chunk_id = path[start:].upper()
        cached = self.cache.get(chunk_id)
        if cached is None:
            return _DECLINED
        entry = <_Entry>cached
        if head_only and not entry.head_ok:
            return _DECLINED
        reqid = headers.get("x-oio-req-id") or headers.get("x-trans-id", "")
        if len(reqid) > 63:
            reqid = reqid[:63]
        rid = reqid.encode("latin-1")
        if b"\r" in rid or b"\n" in rid:
            return _DECLINED
        # the file: <docroot>/<id[0:w]>/.../<id>, the repository's layout
        raw_id = chunk_id.encode("ascii")
        c = cpath
        memcpy(c, PyBytes_AS_STRING(self.docroot), len(self.docroot))
        c += len(self.docroot)
        for i in range(self.depth):
            c[0] = 47
            memcpy(c + 1, PyBytes_AS_STRING(raw_id) + i * self.width, self.width)
            c += 1 + self.width
        c[0] = 47
        memcpy(c + 1, PyBytes_AS_STRING(raw_id), len(raw_id))
        c[1 + len(raw_id)] = 0
        with nogil:
            fd = c_open(cpath, O_RDONLY | O_CLOEXEC)
            ok = fd >= 0 and fstat(fd, &st) == 0
        if not ok or not S_ISREG(st.st_mode) or st.st_dev != entry.dev \
                or st.st_ino != entry.ino \
                or st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec != entry.ctime_ns \
                or (entry.check_size and entry.expected != st.st_size):
            if fd >= 0:
                c_close(fd)
            return _DECLINED
        size = st.st_size
        length = size
        if not head_only:
            value = headers.get("range")
            if value:
                raw_range = value.encode("latin-1")
                found = _range_of(<const unsigned char *>PyBytes_AS_STRING(raw_range),
                                  len(raw_range), size, &offset, &length)
                if found == 2 or found == -1:
                    c_close(fd)
                    return _DECLINED  # 416, or numbers only Python reads
                if found == 1:
                    if offset == 0 and length == 0:
                        length = size  # "bytes=-N" of an empty chunk: the whole of it
                    else:
                        status = 206
        keep = req.keep_alive and keep_alive_ok
        self.request = req
        self.kind = "head" if head_only else "get"
        self.reqid = reqid
        self.account = entry.account
        self.bucket = entry.bucket
        self.tail = entry.tail
        self.peer = peer
        self.status = status
        self.keep_alive = keep
        self.started = started
        self.pending = None
        self._build_head(status, entry.fields, rid, head_only, offset, length, size, keep)
        self.ttfb = monotonic()
        return self._send(sockfd, fd, head_only, offset, length)

    cdef int _build_head(self, int status, bytes fields, bytes rid, bint head_only,
                         int64_t offset, int64_t length, int64_t size, bint keep) except -1:
        """The reply head into self.head (length in self.bytes_out, negated: the
        counters report body bytes); byte for byte what ``build_head`` makes."""
        cdef Py_ssize_t need = PyBytes_GET_SIZE(fields) + PyBytes_GET_SIZE(rid) + _HEAD_ROOM
        cdef char *h
        cdef bytes line = _STATUS_206 if status == 206 else _STATUS_200
        cdef bytes extra
        if need > self.head_cap:
            h = <char *>PyMem_Realloc(self.head, need)
            if h == NULL:
                raise MemoryError()
            self.head = h
            self.head_cap = need
        h = self.head
        h = _put(h, line)
        h = self._date(h)
        h = _put(h, fields)
        if head_only:
            h = _put(h, b"Accept-Ranges: bytes\r\n")
        elif status == 206:
            extra = b"Content-Range: bytes %d-%d/%d\r\n" % (offset, offset + length - 1, size)
            h = _put(h, extra)
        if PyBytes_GET_SIZE(rid):
            h = _put(h, b"X-Oio-Req-Id: ")
            h = _put(h, rid)
            h = _put(h, b"\r\n")
        extra = b"Content-Length: %d\r\n" % length
        h = _put(h, extra)
        if not keep:
            h = _put(h, b"Connection: close\r\n")
        h[0] = 13
        h[1] = 10
        h += 2
        self.bytes_out = -(h - self.head)
        return 0

    cdef char *_date(self, char *h) noexcept:
        """Append the Date line, formatted once per second (email.utils.formatdate)."""
        cdef time_t now = time(NULL)
        cdef tm t
        cdef int day, mon
        if now != self.date_second:
            gmtime_r(&now, &t)
            day = (t.tm_wday + 6) % 7
            mon = t.tm_mon
            line = (b"Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n" % (
                (<bytes>_DAYS)[day * 3:day * 3 + 3], t.tm_mday,
                (<bytes>_MONTHS)[mon * 3:mon * 3 + 3], t.tm_year + 1900, t.tm_hour,
                t.tm_min, t.tm_sec))
            memcpy(self.date_line, PyBytes_AS_STRING(line), 37)
            self.date_line[37] = 0
            self.date_second = now
        memcpy(h, self.date_line, 37)
        return h + 37

    cdef int _send(self, int sockfd, int fd, bint head_only, int64_t offset,
                   int64_t length) except -1:
        """Send head and body until done or the socket is full; owns ``fd``."""
        cdef Py_ssize_t hlen = -self.bytes_out
        cdef Py_ssize_t total, got = 0
        cdef ssize_t sent = 0, r
        cdef iovec iov[2]
        cdef msghdr msg
        cdef bint small
        cdef int err = 0, outcome
        cdef Reply reply
        small = head_only or length <= self.small_file
        if small:
            if not head_only and length:
                with nogil:
                    got = pread(fd, self.data, length, offset)
                if got != length:
                    c_close(fd)  # shrank or failed under us: the Python path says so
                    return _DECLINED
            c_close(fd)
            total = hlen + (0 if head_only else length)
            memset(&msg, 0, sizeof(msg))
            iov[0].iov_base = self.head
            iov[0].iov_len = hlen
            iov[1].iov_base = self.data
            iov[1].iov_len = 0 if head_only else length
            msg.msg_iov = iov
            msg.msg_iovlen = 2
            with nogil:
                while True:
                    r = sendmsg(sockfd, &msg, MSG_NOSIGNAL)
                    err = errno
                    if r >= 0 or err != EINTR:
                        break
            if r < 0:
                if err == EAGAIN:  # EWOULDBLOCK on Linux
                    r = 0
                else:
                    return self._done(0, True)
            sent = r
            if sent < total:
                self.bytes_out = sent - hlen
                self._defer(sockfd, self._rest(hlen, sent, 0 if head_only else length),
                            -1, 0, 0)
                return self._pend()
            return self._done(total, False)
        # a big body: the head (more to follow), then sendfile until the socket is full
        self._defer(sockfd, PyBytes_FromStringAndSize(self.head, hlen), fd, offset, length)
        reply = self.pending
        outcome = reply._push()
        self.bytes_out = reply.bytes_out
        if outcome == _PENDING:
            return self._pend()
        # all out at once (or the client is gone): counted by the reply, as here
        self.pending = None
        self.keep_alive = reply.keep_alive
        return _DONE

    cdef int _pend(self) except -1:
        """A reply left pending is in flight until its Reply finishes (a GET counts
        in ``inflight.get`` meanwhile, as ``WorkerStats.start`` would)."""
        self.pending.in_flight = True
        if self.kind == "get":
            self.counters.inflight(1)
        return _PENDING

    cdef bytes _rest(self, Py_ssize_t hlen, ssize_t sent, Py_ssize_t body):
        """What sendmsg left of head + small body, as one bytes object."""
        cdef bytes rest = PyBytes_FromStringAndSize(NULL, hlen + body - sent)
        cdef char *r = PyBytes_AS_STRING(rest)
        if sent < hlen:
            memcpy(r, self.head + sent, hlen - sent)
            memcpy(r + hlen - sent, self.data, body)
        else:
            memcpy(r, self.data + (sent - hlen), body - (sent - hlen))
        return rest

    cdef void _defer(self, int sockfd, bytes left, int fd, int64_t offset, int64_t length):
        """Hand what is left of this reply to a Reply (it owns ``fd`` from now on)."""
        cdef Reply reply = Reply.__new__(Reply)
        reply.counters = self.counters
        reply.sockfd = sockfd
        reply.unsent = left
        reply.unsent_pos = 0
        reply.fd = fd
        reply.offset = offset
        reply.remaining = length
        reply.status = self.status
        reply.keep_alive = self.keep_alive
        reply.request = self.request
        reply.kind = self.kind
        reply.reqid = self.reqid
        reply.account = self.account
        reply.bucket = self.bucket
        reply.started = self.started
        reply.ttfb = self.ttfb
        reply.bytes_out = self.bytes_out
        reply.access = self.access
        reply.peer = self.peer
        reply.tail = self.tail
        self.pending = reply

    cdef int _done(self, Py_ssize_t sent, bint failed) except -1:
        """The reply is over: count it as ``WorkerStats.finish`` would, and log it."""
        cdef int64_t micros
        self.bytes_out += sent
        if self.bytes_out < 0:
            self.bytes_out = 0
        if failed:
            self.keep_alive = False
        micros = self.counters.count(self.kind == "head", self.started, self.bytes_out)
        if self.access is not None:
            log_reply(self.access, self.peer, self.request, self.status, micros, self.bytes_out,
                 self.reqid, self.started, self.ttfb, self.tail)
        return _DONE


cdef class Reply:
    """The rest of a reply the socket could not take at once: head bytes still to go
    (with a small body), then a file range to ``sendfile``. ``resume(sockfd)`` on each
    writable event sends what the socket takes; once all is out (or the client is
    gone) the reply is counted as the core counts an immediate one and ``resume``
    returns ``DONE``. ``abort()`` ends it early (the connection closed). Either way
    its access line is written then (``GetCore.log_to``). The attributes are those
    of the core's."""
    def __cinit__(self):
        self.fd = -1

    def __dealloc__(self):
        if self.fd >= 0:
            c_close(self.fd)

    @property
    def left(self):
        """Head or small-body bytes not sent yet (bytes)."""
        return self.unsent[self.unsent_pos:]

    def resume(self, int sockfd):
        """Send more on ``sockfd``: -> PENDING (the socket is full again) or DONE."""
        if self.finished:
            return _DONE
        self.sockfd = sockfd
        return self._push()

    def abort(self):
        """The connection is closing with the reply unfinished: release the file and
        count what went out (as a reply cut short)."""
        if not self.finished:
            self._finish(True)

    cdef int _push(self) except -1:
        cdef Py_ssize_t n = PyBytes_GET_SIZE(self.unsent) - self.unsent_pos
        cdef ssize_t r
        cdef long off = self.offset
        cdef int64_t length = self.remaining
        cdef int err = 0, sockfd = self.sockfd, flags
        cdef const char *p
        cdef int64_t sent = 0
        cdef bint failed = False, blocked = False
        if n > 0:
            p = PyBytes_AS_STRING(self.unsent) + self.unsent_pos
            flags = MSG_NOSIGNAL | (MSG_MORE if length else 0)
            with nogil:
                while True:
                    r = sendmsg_one(sockfd, p, n, flags)
                    err = errno
                    if r >= 0 or err != EINTR:
                        break
            if r < 0:
                if err != EAGAIN:
                    return self._finish(True)
                return _PENDING
            self.unsent_pos += r
            self.bytes_out += r
            if r < n:
                return _PENDING
        if length > 0:
            with nogil:
                while length > 0:
                    r = sendfile(sockfd, self.fd, &off, length)
                    if r > 0:
                        length -= r
                        sent += r
                    elif r == 0:  # the file ended early: the client cannot be served
                        failed = True
                        break
                    elif errno != EINTR:
                        if errno == EAGAIN:
                            blocked = True
                        else:
                            failed = True
                        break
            self.offset = off
            self.remaining = length
            self.bytes_out += sent
            if blocked:
                return _PENDING
        return self._finish(failed)

    cdef int _finish(self, bint failed) except -1:
        cdef int64_t micros
        self.finished = True
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1
        if self.bytes_out < 0:
            self.bytes_out = 0
        if failed:
            self.keep_alive = False
        if self.in_flight and self.kind == "get":
            self.counters.inflight(-1)
        self.in_flight = False
        micros = self.counters.count(self.kind == "head", self.started, self.bytes_out)
        if self.access is not None:
            log_reply(self.access, self.peer, self.request, self.status, micros, self.bytes_out,
                 self.reqid, self.started, self.ttfb, self.tail)
        return _DONE


cdef inline char *_put(char *h, bytes b) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(h, PyBytes_AS_STRING(b), n)
    return h + n


cdef inline ssize_t sendmsg_one(int fd, const char *p, size_t n, int flags) noexcept nogil:
    cdef iovec iov
    cdef msghdr msg
    memset(&msg, 0, sizeof(msg))
    iov.iov_base = <void *>p
    iov.iov_len = n
    msg.msg_iov = &iov
    msg.msg_iovlen = 1
    return sendmsg(fd, &msg, flags)
