"""The lane: keep-alive connections the compiled GET/HEAD path (``getcore``) answers
with no Python at all between their requests (see ``Lane``). The pure-Python twin is
``storage.pure.lane``.
"""
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, errno

from _fastpath.getcore cimport _DECLINED, _PENDING, GetCore, Reply
from _fastpath.replylog cimport monotonic

cdef extern from "<unistd.h>" nogil:
    int c_close "close"(int fd)

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

__all__ = ["CLOSE", "HANDBACK", "Lane"]

cdef enum:
    _HANDBACK = 0  # Lane.wait(): the connection is out of the lane with these bytes
    _CLOSE = 2     # the connection is out of the lane and must be closed
    _LANE_BATCH = 64  # events taken per epoll_wait
    _HEAD_READ = 16384  # bytes asked for per recv, as the Python path asks

HANDBACK = _HANDBACK
CLOSE = _CLOSE


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
    checks per request. The pure-Python twin is ``storage.pure.lane.Lane``."""

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
        member.deadline = monotonic() + self.idle_timeout
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
        cdef double deadline = monotonic() + timeout, left
        if self.epfd < 0:
            return outer, out
        PyObject_GetBuffer(self.buffer, &view, PyBUF_WRITABLE)
        try:
            while True:
                left = deadline - monotonic()
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
            member.deadline = monotonic() + self.write_timeout
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
        member.deadline = monotonic() + self.idle_timeout
        return 0
