"""A worker's access log buffer: whole lines in, whole lines out in one ``write()``.

Writing each access line as it is made costs a ``write()`` per request (nginx's
``access_log FILE`` does that); the Python ``logging`` module cost several times
more. Lines are appended here instead, where each reply is made: by the compiled GET
path (``getcore``, which formats its line straight into ``reserve()``d room) and by
the Python path (``add()``). The buffer is written out in one ``write()`` once it
holds ``limit`` bytes, and by its owner on a timer and at exit (``flush()``), so a
crash loses at most the lines of that last fraction of a second. Only whole lines
are ever written, to a file opened with ``O_APPEND``: lines of several workers
interleave, they never split.

A write that fails (a full disk, a closed descriptor) drops what was buffered and
counts it (``dropped`` lines, ``error`` its errno) rather than let the buffer grow
without bound; the owner reports it. ``reopen(fd)`` writes out what is buffered,
then sends the next lines to ``fd`` (SIGUSR1, after logrotate). One thread only: the
worker's loop. The pure-Python twin is ``storage.pure.accesslog``.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memcpy, memmove

cdef extern from "<unistd.h>" nogil:
    ssize_t write(int fd, const void *buf, size_t count)

cdef extern from "<string.h>" nogil:
    const void *memchr(const void *s, int c, size_t n)

__all__ = ["LogBuffer"]

cdef enum:
    _HELD_LIMITS = 16  # a descriptor that keeps saying EAGAIN holds this many limits


cdef long long _count_lines(const char *p, Py_ssize_t n) noexcept:
    cdef long long lines = 0
    cdef const char *end = p + n
    cdef const char *nl
    while p < end:
        nl = <const char *>memchr(p, 10, end - p)
        if nl == NULL:
            break
        lines += 1
        p = nl + 1
    return lines


cdef class LogBuffer:
    """Access lines for the file descriptor ``fd`` (not owned: the caller closes it),
    written out in one ``write()`` once ``limit`` bytes are buffered, or on
    ``flush()``."""

    def __cinit__(self):
        self.buf = NULL
        self.out = -1

    def __init__(self, int fd, Py_ssize_t limit=65536):
        if fd < 0:
            raise ValueError("fd must be a file descriptor")
        if limit < 1:
            raise ValueError("limit must be positive")
        self.cap = limit + 4096
        self.buf = <char *>PyMem_Malloc(self.cap)
        if self.buf == NULL:
            raise MemoryError()
        self.size = 0
        self.limit = limit
        self.out = fd

    def __dealloc__(self):
        PyMem_Free(self.buf)

    @property
    def fd(self):
        return self.out

    def __len__(self):
        """Bytes buffered, not written yet."""
        return self.size

    def add(self, line):
        """Append one or more whole lines (bytes-like, ending in a newline)."""
        cdef Py_buffer view
        cdef char *room
        PyObject_GetBuffer(line, &view, PyBUF_SIMPLE)
        try:
            if view.len == 0:
                return
            if (<const char *>view.buf)[view.len - 1] != 10:
                raise ValueError("an access line ends with a newline")
            room = self.reserve(view.len)
            memcpy(room, view.buf, view.len)
            self.size += view.len
            self.lines += _count_lines(<const char *>view.buf, view.len)
            if self.size >= self.limit:
                self.drain()
        finally:
            PyBuffer_Release(&view)

    def flush(self):
        """Write out every buffered line -> bytes written."""
        return self.drain()

    def reopen(self, int fd):
        """Write out what is buffered, then log to ``fd`` -> the previous descriptor
        (for the caller to close)."""
        cdef int old = self.out
        if fd < 0:
            raise ValueError("fd must be a file descriptor")
        self.drain()
        self.out = fd
        return old

    cdef char *reserve(self, Py_ssize_t n) except NULL:
        cdef Py_ssize_t want = self.size + n
        cdef char *grown
        if want > self.cap:
            if want < 2 * self.cap:
                want = 2 * self.cap
            grown = <char *>PyMem_Realloc(self.buf, want)
            if grown == NULL:
                raise MemoryError()
            self.buf = grown
            self.cap = want
        return self.buf + self.size

    cdef int commit(self, Py_ssize_t n) except -1:
        self.size += n
        self.lines += 1
        if self.size >= self.limit:
            self.drain()
        return 0

    cdef Py_ssize_t drain(self) except -1:
        cdef Py_ssize_t done = 0, size = self.size
        cdef ssize_t r
        cdef int err = 0, fd = self.out
        cdef const char *buf = self.buf
        while done < size:
            with nogil:
                r = write(fd, buf + done, size - done)
                err = errno
            if r > 0:
                done += r
                continue
            if r < 0 and err == EINTR:
                continue
            if r < 0 and err == EAGAIN and size < _HELD_LIMITS * self.limit:
                # a pipe that is full for now: keep the rest for the next flush
                memmove(self.buf, self.buf + done, size - done)
                self.size = size - done
                return done
            # the disk is full, the descriptor is gone...: drop rather than grow
            self.dropped += _count_lines(buf + done, size - done)
            self.error = err if r < 0 else 0
            break
        self.size = 0
        return done
