"""The bookkeeping of a reply the compiled paths answer (``getcore``, ``lane``).

``Counters`` is a worker's row of the node-wide counters (``storage.stats``), as far
as the compiled GET path adds to it; ``AccessLog`` formats a reply's access line, byte
for byte as ``storage.accesslog.format_line`` words it, into the worker's log buffer
(``accesslog.LogBuffer``). A core and the replies it leaves pending share one of each.
The pure-Python twin is ``storage.pure.replylog``.
"""
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

__all__ = ["AccessLog", "Counters"]


cdef class Counters:
    """This worker's row of the node-wide counters: ``stats`` a writable int64 buffer,
    ``slots`` the indices the compiled path adds to, with its row's offset as
    ``base`` (and ``row``, the row length, for the node's in-flight figures)."""

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
        cdef int64_t micros = <int64_t>((monotonic() - started) * 1e6)
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


cdef bytes log_tail(account, bucket):
    """The access line's end for a chunk (``storage.accesslog``'s words)."""
    return ("account:%s bucket:%s\n" % (_log_text(account), _log_text(bucket))).encode(
        "utf-8", "backslashreplace")


cdef _log_text(value):
    if not value:
        return "-"
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


cdef class AccessLog:
    """Where the compiled path writes its access lines: the worker's ``buffer``, the
    line's start (``<pid> access INF - ``) and the ``counters`` that give the node's
    in-flight figures."""

    def __init__(self, LogBuffer buffer not None, int pid, Counters counters not None):
        self.buffer = buffer
        self.prefix = b"%d access INF - " % pid
        self.counters = counters

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


cdef void log_reply(AccessLog access, object peer, Request req, int status,
                    int64_t micros, int64_t bytes_out, str reqid, double started,
                    double ttfb, bytes tail) noexcept:
    """A reply's access line. The reply is out and counted whatever happens here: a
    line that cannot be made (no memory) is lost, never the reply."""
    try:
        access.write(peer, req, status, micros, bytes_out, reqid, started, ttfb, tail)
    except BaseException:
        pass
