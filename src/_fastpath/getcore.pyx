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
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from _fastpath.accesslog cimport LogBuffer
from _fastpath.httphead cimport Request, parse_head_ptr

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    struct tm:
        int tm_sec, tm_min, tm_hour, tm_mday, tm_mon, tm_year, tm_wday
    enum: CLOCK_MONOTONIC
    int clock_gettime(int clk, timespec *tp)
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
    void *memmem(const void *haystack, size_t hlen, const void *needle, size_t nlen)

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        int fd
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    enum: EPOLLIN
    enum: EPOLLOUT
    enum: EPOLL_CTL_ADD
    enum: EPOLL_CTL_MOD
    enum: EPOLL_CTL_DEL
    enum: EPOLL_CLOEXEC
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int fd, void *buf, size_t n, int flags)

__all__ = ["CLOSE", "DECLINED", "DONE", "HANDBACK", "PENDING", "GetCore", "Lane", "Reply",
           "parse_range"]

cdef enum:
    _DECLINED = 0
    _DONE = 1      # the whole reply went out (or the client vanished): counted here
    _PENDING = 2   # the socket filled up: ``pending`` (a Reply) holds the rest
    _PATH_MAX = 4096
    _MAX_DIGITS = 18  # longer range numbers are left to the Python path
    _HEAD_ROOM = 512  # status line, Date, Content-Range, request id, length, close

DECLINED = _DECLINED
DONE = _DONE
PENDING = _PENDING

cdef enum:
    _HANDBACK = 0  # Lane.wait(): the connection is out of the lane with these bytes
    _CLOSE = 2     # the connection is out of the lane and must be closed
    _LANE_BATCH = 64  # events taken per epoll_wait
    _HEAD_READ = 16384  # bytes asked for per recv, as the Python path asks

HANDBACK = _HANDBACK
CLOSE = _CLOSE

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


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class _Counters:
    """This worker's row of the node-wide counters (``storage.stats``), as far as the
    compiled path adds to it: a GetCore and the replies it leaves pending share it."""

    cdef Py_buffer view
    cdef bint has_stats
    cdef int64_t *row
    cdef Py_ssize_t s_time, s_time_get, s_time_head, s_hits, s_hits_get, s_hits_head
    cdef Py_ssize_t s_2xx, s_bytes_out, s_inflight_get
    # the node's in-flight figures for the access line: every worker's row
    cdef int64_t *first
    cdef Py_ssize_t row_len, rows, s_inflight_put, s_inflight_del

    def __cinit__(self, stats, slots):
        self.has_stats = False
        if stats is None:
            return
        PyObject_GetBuffer(stats, &self.view, PyBUF_WRITABLE)
        self.has_stats = True
        if self.view.len % 8:
            raise ValueError("stats must be a buffer of int64")
        base = slots["base"]
        names = ("req.time", "req.time.get", "req.time.head", "req.hits",
                 "req.hits.get", "req.hits.head", "rep.hits.2xx", "rep.bread",
                 "inflight.get")
        top = max(slots[name] for name in names) + base
        if base < 0 or top >= self.view.len // 8:
            raise ValueError("stats slots out of the buffer")
        self.row = (<int64_t *>self.view.buf) + <Py_ssize_t>base
        (self.s_time, self.s_time_get, self.s_time_head, self.s_hits, self.s_hits_get,
         self.s_hits_head, self.s_2xx, self.s_bytes_out, self.s_inflight_get) = \
            [slots[n] for n in names]
        # with "row" (the row length), the in-flight figures sum every row of the
        # buffer, as ``WorkerStats.inflight`` does; else they are this row's
        self.first = self.row
        self.rows = 1
        self.row_len = 0
        self.s_inflight_put = slots.get("inflight.put", -1)
        self.s_inflight_del = slots.get("inflight.del", -1)
        if slots.get("row"):
            self.row_len = slots["row"]
            self.first = <int64_t *>self.view.buf
            self.rows = self.view.len // 8 // self.row_len
            if top - base >= self.row_len or \
                    max(self.s_inflight_put, self.s_inflight_del) >= self.row_len:
                raise ValueError("stats slots out of the row")
        elif base + max(self.s_inflight_put, self.s_inflight_del) >= self.view.len // 8:
            raise ValueError("stats slots out of the buffer")

    def __dealloc__(self):
        if self.has_stats:
            PyBuffer_Release(&self.view)

    cdef int64_t count(self, bint head, double started, int64_t bytes_out) noexcept:
        """A finished 200/206 reply, as ``WorkerStats.finish`` counts it -> its
        microseconds."""
        cdef int64_t micros = <int64_t>((_monotonic() - started) * 1e6)
        cdef int64_t *row = self.row
        if not self.has_stats:
            return micros
        row[self.s_time] += micros
        row[self.s_hits] += 1
        row[self.s_2xx] += 1
        row[self.s_bytes_out] += bytes_out
        if head:
            row[self.s_time_head] += micros
            row[self.s_hits_head] += 1
        else:
            row[self.s_time_get] += micros
            row[self.s_hits_get] += 1
        return micros

    cdef void inflight(self, int64_t delta) noexcept:
        if self.has_stats:
            self.row[self.s_inflight_get] += delta

    cdef void node_inflight(self, int64_t *put, int64_t *get, int64_t *dele) noexcept:
        """PUT, GET and DELETE requests in flight (on the node, given "row")."""
        cdef Py_ssize_t w
        cdef int64_t *row
        put[0] = get[0] = dele[0] = 0
        if not self.has_stats:
            return
        for w in range(self.rows):
            row = self.first + w * self.row_len
            if self.s_inflight_put >= 0:
                put[0] += row[self.s_inflight_put]
            get[0] += row[self.s_inflight_get]
            if self.s_inflight_del >= 0:
                dele[0] += row[self.s_inflight_del]


cdef inline char *_put_int(char *p, int64_t value) noexcept:
    """Decimal digits of ``value`` at p -> the end."""
    cdef char digits[24]
    cdef int n = 0
    cdef uint64_t u
    if value < 0:
        p[0] = 45  # "-"
        p += 1
        u = <uint64_t>0 - <uint64_t>value
    else:
        u = <uint64_t>value
    while True:
        digits[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    while n:
        n -= 1
        p[0] = digits[n]
        p += 1
    return p


cdef inline char *_put_utf8(char *p, const char *s, Py_ssize_t n) noexcept:
    memcpy(p, s, n)
    return p + n


cdef bytes _log_tail(account, bucket):
    """The access line's end for a chunk (``storage.accesslog``'s words)."""
    return ("account:%s bucket:%s\n" % (_log_text(account), _log_text(bucket))).encode(
        "utf-8", "backslashreplace")


cdef _log_text(value):
    if not value:
        return "-"
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


cdef class _AccessLog:
    """Where the compiled path writes its access lines: the worker's buffer, the
    line's start (``<pid> access INF - ``) and the counters that give the node's
    in-flight figures. A core and the replies it leaves pending share it."""
    cdef LogBuffer buffer
    cdef bytes prefix
    cdef _Counters counters

    cdef int write(self, object peer, Request req, int status, int64_t micros,
                   int64_t bytes_out, str reqid, double started, double ttfb,
                   bytes tail) except -1:
        """One reply's line, as ``storage.accesslog.format_line`` makes it."""
        cdef const char *host_p
        cdef const char *peer_p
        cdef const char *method_p
        cdef const char *reqid_p
        cdef const char *path_p
        cdef Py_ssize_t host_n, peer_n, method_n, reqid_n, path_n, need
        cdef int64_t put, get, dele
        cdef char *start
        cdef char *p
        host = (<dict>req.headers).get("host") or "-"
        host_p = PyUnicode_AsUTF8AndSize(host, &host_n)
        peer_p = PyUnicode_AsUTF8AndSize(peer if peer else "-", &peer_n)
        method_p = PyUnicode_AsUTF8AndSize(req.method, &method_n)
        reqid_p = PyUnicode_AsUTF8AndSize(reqid if reqid else "-", &reqid_n)
        path_p = PyUnicode_AsUTF8AndSize(req.path, &path_n)
        need = (PyBytes_GET_SIZE(self.prefix) + host_n + peer_n + method_n + reqid_n
                + path_n + PyBytes_GET_SIZE(tail) + 8 * 21 + 64)
        self.counters.node_inflight(&put, &get, &dele)
        start = p = self.buffer.reserve(need)
        p = _put_utf8(p, PyBytes_AS_STRING(self.prefix), PyBytes_GET_SIZE(self.prefix))
        p = _put_utf8(p, host_p, host_n)
        p[0] = 32
        p = _put_utf8(p + 1, peer_p, peer_n)
        p[0] = 32
        p = _put_utf8(p + 1, method_p, method_n)
        p[0] = 32
        p = _put_int(p + 1, status)
        p[0] = 32
        p = _put_int(p + 1, micros)
        p[0] = 32
        p = _put_int(p + 1, bytes_out)
        p = _put_utf8(p, b" 0 - ", 5)  # no body bytes in
        p = _put_utf8(p, reqid_p, reqid_n)
        p[0] = 32
        p = _put_utf8(p + 1, path_p, path_n)
        p = _put_utf8(p, b" http ", 6)
        p = _put_int(p, <int64_t>((ttfb - started) * 1e6))
        p = _put_utf8(p, b" put:", 5)
        p = _put_int(p, put)
        p = _put_utf8(p, b" get:", 5)
        p = _put_int(p, get)
        p = _put_utf8(p, b" del:", 5)
        p = _put_int(p, dele)
        p[0] = 32
        p = _put_utf8(p + 1, PyBytes_AS_STRING(tail), PyBytes_GET_SIZE(tail))
        self.buffer.commit(p - start)
        return 0


cdef class GetCore:
    """One worker's GET/HEAD fast path. ``layout`` = (docroot, hash_width, hash_depth)
    of the chunk repository; ``hosts`` the Host values the node answers to, and
    ``wildcard_ports`` the ports (str) any Host may name when it listens on a wildcard
    address; ``stats`` a writable int64 buffer (the node-wide counters) and ``slots``
    the indices this path adds to in it, with its row's offset as ``base``
    (``storage.stats``)."""

    cdef bytes docroot
    cdef int width, depth
    cdef frozenset hosts, ports
    cdef dict cache
    cdef Py_ssize_t cache_size, small_file
    cdef _Counters counters
    cdef char *head
    cdef Py_ssize_t head_cap
    cdef char *data
    cdef time_t date_second
    cdef char date_line[40]
    # what the last serve() did, for the caller's bookkeeping
    cdef readonly int status
    cdef readonly bint keep_alive
    cdef readonly Request request
    cdef readonly str kind, reqid
    cdef readonly object account, bucket
    cdef readonly double started, ttfb
    cdef readonly int64_t bytes_out
    cdef readonly Reply pending  # what a PENDING serve() left to send
    cdef _AccessLog access  # None: no access log
    cdef object peer  # the client's address (str), for the access line
    cdef bytes tail

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
        self.counters = _Counters(stats, slots)
        self.access = None
        self.tail = b""

    def log_to(self, buffer, int pid=0):
        """Write each reply's access line into ``buffer`` (an ``accesslog.LogBuffer``;
        None: log nothing), ``pid`` at its start. The in-flight figures are the
        node's when ``slots`` gave "row" (the row length), else this row's."""
        cdef _AccessLog access
        if buffer is None:
            self.access = None
            return
        access = _AccessLog.__new__(_AccessLog)
        access.buffer = <LogBuffer?>buffer
        access.prefix = b"%d access INF - " % pid
        access.counters = self.counters
        self.access = access

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
        entry.tail = _log_tail(account, bucket)
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
        cdef double started = _monotonic()
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
        self.ttfb = _monotonic()
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
            _log(self.access, self.peer, self.request, self.status, micros, self.bytes_out,
                 self.reqid, self.started, self.ttfb, self.tail)
        return _DONE


cdef void _log(_AccessLog access, object peer, Request req, int status, int64_t micros,
               int64_t bytes_out, str reqid, double started, double ttfb,
               bytes tail) noexcept:
    """A reply's access line. The reply is out and counted whatever happens here: a
    line that cannot be made (no memory) is lost, never the reply."""
    try:
        access.write(peer, req, status, micros, bytes_out, reqid, started, ttfb, tail)
    except BaseException:
        pass


cdef class Reply:
    """The rest of a reply the socket could not take at once: head bytes still to go
    (with a small body), then a file range to ``sendfile``. ``resume(sockfd)`` on each
    writable event sends what the socket takes; once all is out (or the client is
    gone) the reply is counted as the core counts an immediate one and ``resume``
    returns ``DONE``. ``abort()`` ends it early (the connection closed). Either way
    its access line is written then (``GetCore.log_to``). The attributes are those
    of the core's."""

    cdef _Counters counters
    cdef int sockfd, fd
    cdef int64_t offset
    cdef readonly int64_t remaining
    cdef bytes unsent  # head (or head and small body) bytes, sent up to unsent_pos
    cdef Py_ssize_t unsent_pos
    cdef readonly int status
    cdef readonly bint keep_alive, finished
    cdef bint in_flight
    cdef readonly Request request
    cdef readonly str kind, reqid
    cdef readonly object account, bucket
    cdef readonly double started, ttfb
    cdef readonly int64_t bytes_out
    cdef _AccessLog access
    cdef object peer
    cdef bytes tail

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
            _log(self.access, self.peer, self.request, self.status, micros, self.bytes_out,
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


cdef class _Member:
    """A keep-alive connection the lane holds: its owner (the Python connection), its
    peer's address, the reply it is sending, and when it times out."""
    cdef int fd
    cdef object owner, peer
    cdef Reply reply
    cdef double deadline


cdef class Lane:
    """Keep-alive connections that only ask for what the core answers, served with no
    Python at all between requests.

    A worker's loop wakes up two or three times per big GET (the request, then the
    socket draining), and each wake-up ran a few hundred bytecodes of dispatch and
    bookkeeping with caches the client's copies had just evicted. The lane is an
    epoll set of its own, owned here, which also holds the worker loop's epoll
    descriptor (``attach``). While the lane has members the worker waits in
    ``wait()``: it reads the ready members' request heads, has the core answer them
    and resumes their pending replies, and returns only when the attached descriptor
    is ready, something needs the Python path, a signal arrives or the timeout (the
    loop's next timer) is up.

    A connection joins with ``adopt(fd, owner, peer)`` once the core has answered one
    of its requests and nothing of it is buffered. It leaves when a read brings what
    the core does not answer alone (anything declined, a partial head, pipelined
    heads): ``wait()`` then reports ``(owner, HANDBACK, bytes read)`` and the Python
    path takes those bytes as if it had read them. ``(owner, CLOSE, None)`` means the
    connection left and must be closed (the peer left, or a reply ended it). Replies
    are counted, and logged (``GetCore.log_to``), by the core as ever: nothing is
    reported per reply.
    ``release(fd)`` takes a connection out (the owner is closing it) and returns the
    reply it was still sending, if any; ``expired(now)`` names the owners whose idle
    or write deadline has passed. ``serving`` (the volume is healthy) and
    ``keep_alive_ok`` (the worker is not stopping) are the conditions the Python path
    checks per request. The pure-Python twin is ``storage.pure.getcore.Lane``."""

    cdef int epfd, outer
    cdef GetCore core
    cdef dict members
    cdef object buffer
    cdef readonly Py_ssize_t head_limit
    cdef public double idle_timeout, write_timeout
    cdef public bint serving, keep_alive_ok
    cdef epoll_event ready[_LANE_BATCH]

    def __cinit__(self):
        self.epfd = -1
        self.outer = -1

    def __init__(self, GetCore core not None, buffer, Py_ssize_t head_limit,
                 double idle_timeout, double write_timeout):
        self.core = core
        self.buffer = buffer
        self.head_limit = head_limit
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.serving = True
        self.keep_alive_ok = True
        self.members = {}
        if len(memoryview(buffer)) < 1:
            raise ValueError("the receive buffer is empty")
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")

    def __dealloc__(self):
        if self.epfd >= 0:
            c_close(self.epfd)

    def fileno(self):
        if self.epfd < 0:
            raise ValueError("the lane is closed")
        return self.epfd

    def __len__(self):
        return len(self.members)

    def __contains__(self, fd):
        return fd in self.members

    def close(self):
        """Drop the epoll set; members' replies are abandoned (closed with their
        owners, which ``release`` them first)."""
        self.members.clear()
        if self.epfd >= 0:
            c_close(self.epfd)
            self.epfd = -1

    def adopt(self, int fd, owner, peer=None):
        """Take the connection on ``fd`` (idle, nothing buffered) into the lane;
        ``peer`` (str) is its client's address, for the access lines."""
        cdef _Member member
        if self.epfd < 0:
            raise ValueError("the lane is closed")
        if fd in self.members:
            raise KeyError(f"file descriptor {fd} is in the lane already")
        if self._watch(EPOLL_CTL_ADD, fd, EPOLLIN) < 0:
            raise OSError(errno, "epoll_ctl failed")
        member = _Member.__new__(_Member)
        member.fd = fd
        member.owner = owner
        member.peer = peer
        member.reply = None
        member.deadline = _monotonic() + self.idle_timeout
        self.members[fd] = member

    def release(self, int fd):
        """Take ``fd`` out of the lane -> the Reply it was still sending (not finished:
        the caller aborts it) or None. Nothing happens for a non-member."""
        cdef _Member member = self.members.pop(fd, None)
        if member is None:
            return None
        self._watch(EPOLL_CTL_DEL, fd, 0)  # closed already: the kernel dropped it
        return member.reply

    def busy(self, int fd):
        """Whether the member on ``fd`` is sending a reply."""
        cdef _Member member = self.members.get(fd)
        return member is not None and member.reply is not None

    def expired(self, double now):
        """The owners whose deadline is at or before ``now`` (still members)."""
        cdef _Member member
        return [member.owner for member in self.members.values() if member.deadline <= now]

    cdef int _watch(self, int op, int fd, unsigned int events) noexcept:
        cdef epoll_event ev
        memset(&ev, 0, sizeof(ev))
        ev.events = events
        ev.data.fd = fd
        return epoll_ctl(self.epfd, op, fd, &ev)

    def attach(self, int fd):
        """Watch ``fd`` (the worker loop's own epoll set) for input too: ``wait()``
        returns as soon as it is ready."""
        if self.epfd < 0:
            raise ValueError("the lane is closed")
        if self.outer >= 0:
            raise ValueError("a file descriptor is attached already")
        if self._watch(EPOLL_CTL_ADD, fd, EPOLLIN) < 0:
            raise OSError(errno, "epoll_ctl failed")
        self.outer = fd

    def wait(self, double timeout):
        """Serve ready members, for up to ``timeout`` seconds (0: one pass without
        blocking), until the attached file descriptor is ready or something needs the
        Python path -> (attached one ready, [(owner, HANDBACK | CLOSE,
        payload)]). A signal ends the wait too (its handler runs first)."""
        cdef int n, i, fd, ms
        cdef list out = []
        cdef bint outer = False
        cdef Py_buffer view
        cdef _Member member
        cdef object found
        cdef double deadline = _monotonic() + timeout, left
        if self.epfd < 0:
            return outer, out
        PyObject_GetBuffer(self.buffer, &view, PyBUF_WRITABLE)
        try:
            while True:
                left = deadline - _monotonic()
                ms = 0 if left <= 0 else <int>(left * 1000) + 1
                with nogil:
                    n = epoll_wait(self.epfd, self.ready, _LANE_BATCH, ms)
                if n < 0:
                    if errno != EINTR:
                        raise OSError(errno, "epoll_wait failed")
                    PyErr_CheckSignals()
                    break
                for i in range(n):
                    fd = self.ready[i].data.fd
                    if fd == self.outer:
                        outer = True
                        continue
                    found = self.members.get(fd)
                    if found is None:
                        continue  # left during this pass
                    member = <_Member>found
                    if member.reply is not None:
                        self._write(member, out)
                    else:
                        self._read(member, <unsigned char *>view.buf, view.len, out)
                if outer or out or n == 0 or ms == 0:
                    break
        finally:
            PyBuffer_Release(&view)
        return outer, out

    cdef int _leave(self, _Member member) except -1:
        del self.members[member.fd]
        self._watch(EPOLL_CTL_DEL, member.fd, 0)
        return 0

    cdef int _read(self, _Member member, unsigned char *buf, Py_ssize_t cap,
                   list out) except -1:
        cdef ssize_t got
        cdef int err = 0, fd = member.fd, outcome
        cdef size_t want = _HEAD_READ if cap > _HEAD_READ else cap
        cdef const unsigned char *end
        with nogil:
            got = recv(fd, buf, want, 0)
            err = errno
        if got < 0:
            if err == EAGAIN or err == EINTR:
                return 0  # nothing after all (level-triggered: asked again if needed)
            self._leave(member)
            out.append((member.owner, _CLOSE, None))
            return 0
        if got == 0:  # the client left between requests
            self._leave(member)
            out.append((member.owner, _CLOSE, None))
            return 0
        # what the Python path hands the core: one whole head, nothing after it
        outcome = _DECLINED
        if self.serving and got <= self.head_limit and got >= 4 and buf[0] != 13:
            end = <const unsigned char *>memmem(buf, got, b"\r\n\r\n", 4)
            if end == buf + got - 4:
                outcome = self.core._serve(fd, buf, got, self.keep_alive_ok, member.peer)
        if outcome == _DECLINED:
            self._leave(member)
            out.append((member.owner, _HANDBACK, PyBytes_FromStringAndSize(<char *>buf, got)))
            return 0
        if outcome == _PENDING:
            member.reply = self.core.pending
            self.core.pending = None
            member.deadline = _monotonic() + self.write_timeout
            if self._watch(EPOLL_CTL_MOD, fd, EPOLLOUT) < 0:
                # cannot happen to a member; never leave one stuck if it does
                member.reply._finish(True)
                self._leave(member)
                out.append((member.owner, _CLOSE, None))
            return 0
        self._ended(member, self.core.keep_alive, out)
        return 0

    cdef int _write(self, _Member member, list out) except -1:
        cdef Reply reply = member.reply
        if reply._push() == _PENDING:
            return 0
        member.reply = None
        if reply.keep_alive and self._watch(EPOLL_CTL_MOD, member.fd, EPOLLIN) < 0:
            reply.keep_alive = False
        self._ended(member, reply.keep_alive, out)
        return 0

    cdef int _ended(self, _Member member, bint keep_alive, list out) except -1:
        """A reply is out: the member waits for its next request, or leaves."""
        if not keep_alive:
            self._leave(member)
            out.append((member.owner, _CLOSE, None))
            return 0
        member.deadline = _monotonic() + self.idle_timeout
        return 0
