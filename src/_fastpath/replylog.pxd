# The compiled paths' bookkeeping of a reply (getcore's GetCore and Reply, lane's
# Lane), for them to cimport: the worker's row of the node-wide counters and the
# access line. The pure-Python twin is storage.pure.replylog.
from libc.stdint cimport int64_t

from _fastpath.accesslog cimport LogBuffer
from _fastpath.httphead cimport Request


cdef extern from "<time.h>" nogil:
    ctypedef struct _timespec "struct timespec":
        long tv_sec
        long tv_nsec
    int _clock_gettime "clock_gettime"(int clk, _timespec *tp)
    enum: _CLOCK_MONOTONIC "CLOCK_MONOTONIC"


# time.monotonic(), without Python
cdef inline double monotonic() noexcept nogil:
    cdef _timespec ts
    _clock_gettime(_CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class Counters:
    cdef Py_buffer view
    cdef bint has_stats
    cdef int64_t *row
    cdef Py_ssize_t s_time, s_time_get, s_time_head, s_hits, s_hits_get, s_hits_head
    cdef Py_ssize_t s_2xx, s_bytes_out, s_inflight_get
    # the node's in-flight figures for the access line: every worker's row
    cdef int64_t *first
    cdef Py_ssize_t row_len, rows, s_inflight_put, s_inflight_del

    # A finished 200/206 reply, as WorkerStats.finish counts it -> its microseconds.
    cdef int64_t count(self, bint head, double started, int64_t bytes_out) noexcept
    cdef void inflight(self, int64_t delta) noexcept
    # PUT, GET and DELETE requests in flight (on the node, given "row").
    cdef void node_inflight(self, int64_t *put, int64_t *get, int64_t *dele) noexcept


cdef class AccessLog:
    cdef LogBuffer buffer
    cdef bytes prefix
    cdef Counters counters

    cdef int write(self, object peer, Request req, int status, int64_t micros,
                   int64_t bytes_out, str reqid, double started, double ttfb,
                   bytes tail) except -1


# The access line's end for a chunk: b"account:<a> bucket:<b>\n".
cdef bytes log_tail(account, bucket)

# A reply's access line; a line that cannot be made is lost, never the reply.
cdef void log_reply(AccessLog access, object peer, Request req, int status,
                    int64_t micros, int64_t bytes_out, str reqid, double started,
                    double ttfb, bytes tail) noexcept
