# The compiled GET/HEAD path, for the lane (lane.pyx) to cimport: the core that
# answers a request head and the Reply it leaves when the socket fills up.
# The pure-Python twin is storage.pure.getcore.
from libc.stdint cimport int64_t
from libc.time cimport time_t

from _fastpath.httphead cimport Request
from _fastpath.replylog cimport AccessLog, Counters

cdef enum:
    _DECLINED = 0
    _DONE = 1      # the whole reply went out (or the client vanished): counted here
    _PENDING = 2   # the socket filled up: ``pending`` (a Reply) holds the rest


cdef class GetCore:
    cdef bytes docroot
    cdef int width, depth
    cdef frozenset hosts, ports
    cdef dict cache
    cdef Py_ssize_t cache_size, small_file
    cdef Counters counters
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
    cdef AccessLog access  # None: no access log
    cdef object peer  # the client's address (str), for the access line
    cdef bytes tail

    # Answer the request head p[0:n] on sockfd, or decline: _DECLINED, _DONE, _PENDING.
    cdef int _serve(self, int sockfd, const unsigned char *p, Py_ssize_t n,
                    bint keep_alive_ok, object peer) except -1
    cdef int _build_head(self, int status, bytes fields, bytes rid, bint head_only,
                         int64_t offset, int64_t length, int64_t size, bint keep) except -1
    cdef char *_date(self, char *h) noexcept
    cdef int _send(self, int sockfd, int fd, bint head_only, int64_t offset,
                   int64_t length) except -1
    cdef int _pend(self) except -1
    cdef bytes _rest(self, Py_ssize_t hlen, ssize_t sent, Py_ssize_t body)
    cdef void _defer(self, int sockfd, bytes left, int fd, int64_t offset, int64_t length)
    cdef int _done(self, Py_ssize_t sent, bint failed) except -1


cdef class Reply:
    cdef Counters counters
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
    cdef AccessLog access
    cdef object peer
    cdef bytes tail


    # Send what the socket takes: _PENDING (full again) or _DONE (counted, logged).
    cdef int _push(self) except -1
    # The reply is over (``failed``: cut short): release the file, count and log it.
    cdef int _finish(self, bint failed) except -1
