"""Outbound fast path: a range of a chunk file sent to a peer as an HTTP body,
hashed on the way, without the GIL (SEND, replication feeds).

``send_file(sockfd, filefd, offset, length, hasher, buf, timeout, chunked=True)``
reads ``length`` bytes of the file from ``offset`` by ``pread`` into ``buf``
(the caller's reusable writable buffer; a piece is ``len(buf)`` bytes at most),
hashes each piece into ``hasher`` and writes it to the socket with one
``writev`` per piece: framed as one HTTP/1.1 chunk (``<hex size>\\r\\n<data>\\r\\n``)
with ``chunked=True``, raw (a Content-Length body) otherwise. The data is never
copied on our side. Returns the bytes of file data sent (``length``); the
caller sends the request head before and, if chunked, the last-chunk after.
``length`` 0 sends nothing and touches no descriptor.

``hasher``: an ``Md5`` of ``_fastpath.streamio`` is hashed in C and the whole
loop (pread + MD5 + writev + poll) runs without the GIL; any other object with
``update()`` (hashlib, blake3, ...) is called with the GIL, once per piece,
with a memoryview of the piece; ``None`` hashes nothing. A piece is hashed as
soon as it is read, so after an exception the hasher may hold bytes that were
not sent.

``timeout``: ``None`` waits for the socket forever; a number of seconds (>= 0)
bounds each wait for the socket to take more bytes (each wait, as a socket
timeout does for one send; any progress starts a new wait). A timeout needs a
non-blocking socket (as a Python socket with a timeout is at the OS level):
ValueError otherwise. Pass ``sock.fileno()`` and ``sock.gettimeout()`` of a
plain socket: bytes written to the descriptor of a TLS socket would bypass TLS.

Errors, each with a ``sent`` attribute (bytes of file data the socket took):
``TimeoutError`` ("timed out", as ``socket.timeout``) when a wait expires;
``OSError`` with the errno on socket errors (BrokenPipeError,
ConnectionResetError, ...; SIGPIPE must be ignored, as Python does);
``SourceReadError`` (an OSError) with the errno on file read errors, and its
subclass ``SourceTruncated`` (errno None) when the file ends before the range
does. ValueError / TypeError for bad arguments, before any I/O. A signal
handler's exception interrupts the call at the next syscall; a handler that
returns lets it go on.

The pure-Python twin is ``storage.pure.transfer``.
"""
import os

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EAGAIN, EBADF, EINTR, EIO, errno
from libc.math cimport ceil

from _fastpath.md5mb cimport md5mb_state
from _fastpath.streamio cimport EVP_MD_CTX, Md5, _byte_view, _md5_update

__all__ = ["SourceReadError", "SourceTruncated", "send_file"]


cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from "<limits.h>":
    int INT_MAX

cdef extern from "<unistd.h>" nogil:
    ssize_t c_pread "pread" (int fd, void *buf, size_t count, long long offset)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t c_writev "writev" (int fd, const iovec *iov, int iovcnt)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum: POLLOUT
    enum: POLLNVAL
    int c_poll "poll" (pollfd *fds, unsigned long nfds, int timeout)

cdef extern from "<fcntl.h>" nogil:
    enum: F_GETFL
    enum: O_NONBLOCK
    int fcntl(int fd, int cmd, ...)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    enum: CLOCK_MONOTONIC
    int clock_gettime(int clk, timespec *tp)


cdef enum:
    # _Send results (0 = done or ready)
    FAIL_READ = 1       # pread failed: errno in err
    FAIL_TRUNCATED = 2  # the file ended before the range
    FAIL_SEND = 3       # writev or poll failed: errno in err
    FAIL_TIMEOUT = 4    # a wait for the socket expired
    FAIL_INTR = 5       # a signal may have cut a syscall short: run the handlers, resume
    FAIL_HASH = 6       # MD5 update failed (OpenSSL only)
    # "ffffffffffffffff\r\n": the longest size line of a chunk
    SIZE_LINE_MAX = 18


cdef const char *_HEX_DIGITS = b"0123456789abcdef"
cdef const char *_CRLF = b"\r\n"


cdef struct _Send:
    # One transfer's state, so that a call interrupted by a signal resumes
    # exactly where it stopped (mid-piece included).
    int sockfd
    int filefd
    char *buf
    size_t cap
    long long offset      # file offset of the next read
    long long left        # file bytes not read yet
    long long sent        # file bytes the socket took
    bint chunked
    iovec iov[3]          # the piece being written: iov[first:count] pending
    int first
    int count
    int data              # index of the data in iov (counted in sent)
    size_t piece          # bytes of the last piece read
    char size_line[SIZE_LINE_MAX]
    double timeout        # seconds each wait may take; < 0: forever
    bint blocking         # the socket's fd is in blocking mode
    bint waiting          # a wait is in progress (deadline is set)
    double deadline       # CLOCK_MONOTONIC seconds
    int err


class SourceReadError(OSError):
    """Reading the file failed; ``errno`` is kept (EIO, EBADF, EISDIR, ...).
    Socket-side errors are ordinary OSError subclasses instead."""


class SourceTruncated(SourceReadError):
    """The file ended before the range did (it shrank, or the range was wrong)."""


cdef inline double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


cdef int _size_line(char *out, size_t n) noexcept nogil:
    """Write the size line of an n-byte chunk (lower-case hex + CRLF, n >= 1)
    to out: its length."""
    cdef char digits[16]
    cdef int k = 0, i
    while n:
        digits[k] = _HEX_DIGITS[n & 15]
        n >>= 4
        k += 1
    for i in range(k):
        out[i] = digits[k - 1 - i]
    out[k] = b"\r"
    out[k + 1] = b"\n"
    return k + 2


cdef int _read_piece(_Send *s) noexcept nogil:
    """pread the next piece into buf and frame it in iov: 0 or a FAIL_*."""
    cdef size_t want = s.cap if <unsigned long long>s.left > s.cap else <size_t>s.left
    cdef ssize_t got = c_pread(s.filefd, s.buf, want, s.offset)
    if got < 0:
        if errno == EINTR:
            return FAIL_INTR
        s.err = errno
        return FAIL_READ
    if got == 0:
        return FAIL_TRUNCATED
    s.offset += got
    s.left -= got
    s.piece = <size_t>got
    s.first = 0
    if s.chunked:
        s.iov[0].iov_base = s.size_line
        s.iov[0].iov_len = <size_t>_size_line(s.size_line, <size_t>got)
        s.iov[1].iov_base = s.buf
        s.iov[1].iov_len = <size_t>got
        s.iov[2].iov_base = <void *>_CRLF
        s.iov[2].iov_len = 2
        s.count, s.data = 3, 1
    else:
        s.iov[0].iov_base = s.buf
        s.iov[0].iov_len = <size_t>got
        s.count, s.data = 1, 0
    return 0


cdef void _advance(_Send *s, size_t done) noexcept nogil:
    """Drop the done bytes from the front of the pending iov entries."""
    cdef iovec *v
    cdef size_t take
    while done > 0 and s.first < s.count:
        v = &s.iov[s.first]
        take = v.iov_len if done > v.iov_len else done
        v.iov_base = <char *>v.iov_base + take
        v.iov_len -= take
        done -= take
        if s.first == s.data:
            s.sent += <long long>take
        if v.iov_len == 0:
            s.first += 1


cdef int _wait_writable(_Send *s) noexcept nogil:
    """poll for POLLOUT until the socket takes bytes or the wait's deadline
    passes: 0 (writable, or an error the next writev reports) or a FAIL_*."""
    cdef pollfd pfd
    cdef double remaining
    cdef int ms, n
    if s.timeout >= 0 and not s.waiting:
        s.waiting = True
        s.deadline = _now() + s.timeout
    pfd.fd = s.sockfd
    pfd.events = POLLOUT
    while True:
        if s.timeout < 0:
            ms = -1
        else:
            remaining = (s.deadline - _now()) * 1000.0
            if remaining <= 0:
                ms = 0
            elif remaining >= INT_MAX:
                ms = INT_MAX
            else:
                ms = <int>ceil(remaining)
        pfd.revents = 0
        n = c_poll(&pfd, 1, ms)
        if n > 0:
            if pfd.revents & POLLNVAL:
                s.err = EBADF
                return FAIL_SEND
            return 0
        if n < 0:
            if errno == EINTR:
                return FAIL_INTR  # the deadline is kept for the resumed wait
            s.err = errno
            return FAIL_SEND
        if ms == 0:
            return FAIL_TIMEOUT


cdef int _write_piece(_Send *s) noexcept nogil:
    """writev the pending iov entries, waiting whenever the socket is full:
    0 once all are written, or a FAIL_*."""
    cdef ssize_t done
    cdef int rc
    while s.first < s.count:
        done = c_writev(s.sockfd, &s.iov[s.first], s.count - s.first)
        if done > 0:
            s.waiting = False  # progress: the next wait gets the whole timeout
            _advance(s, <size_t>done)
            if s.blocking and s.first < s.count:
                # a blocking socket writes less only when a signal cut the
                # writev short (after some bytes: no EINTR): run the handlers
                return FAIL_INTR
            continue
        if done == 0:  # never from a socket with bytes to write: do not spin
            s.err = EIO
            return FAIL_SEND
        if errno == EINTR:
            return FAIL_INTR
        if errno != EAGAIN and errno != EWOULDBLOCK:
            s.err = errno
            return FAIL_SEND
        rc = _wait_writable(s)
        if rc:
            return rc
    return 0


cdef int _send_md5(_Send *s, EVP_MD_CTX *ctx, md5mb_state *state) noexcept nogil:
    """The whole transfer (or the rest of it) without Python objects, hashing
    into ctx, else into state, or nothing if both are NULL: 0 or a FAIL_*."""
    cdef int rc
    while True:
        rc = _write_piece(s)
        if rc or s.left == 0:
            return rc
        rc = _read_piece(s)
        if rc:
            return rc
        if (ctx != NULL or state != NULL) and \
                _md5_update(ctx, state, s.buf, s.piece) != 1:
            return FAIL_HASH


def _wait_seconds(timeout):
    """timeout as seconds (float), -1.0 for None; ValueError if negative or NaN."""
    if timeout is None:
        return -1.0
    if isinstance(timeout, (str, bytes, bytearray)):  # float() would parse them
        raise TypeError("timeout must be None or a number of seconds")
    seconds = float(timeout)
    if not seconds >= 0:
        raise ValueError("timeout must be None or a number of seconds >= 0")
    return seconds


cdef object _failure(int rc, _Send *s):
    """The exception for a FAIL_* result, with ``sent`` set."""
    if rc == FAIL_READ:
        exc = SourceReadError(s.err, os.strerror(s.err))
    elif rc == FAIL_TRUNCATED:
        exc = SourceTruncated(f"the file ended at offset {s.offset}, "
                              f"{s.left} bytes before the end of the range")
    elif rc == FAIL_TIMEOUT:
        exc = TimeoutError("timed out")
    elif rc == FAIL_HASH:
        exc = ValueError("MD5 update failed")
    else:  # OSError(errno, msg) picks the subclass (BrokenPipeError, ...)
        exc = OSError(s.err, os.strerror(s.err))
    exc.sent = s.sent
    return exc


def send_file(int sockfd, int filefd, long long offset, long long length,
              hasher, buf, timeout, bint chunked=True):
    """Send ``length`` bytes of a file from ``offset`` to a socket, hashing
    them into ``hasher``, read by pieces of ``len(buf)`` bytes; each piece one
    HTTP/1.1 chunk if ``chunked``. Returns the bytes of file data sent.
    ``timeout``: seconds each wait for the socket may take (None: forever).
    See the module docstring for the errors.
    """
    cdef _Send s
    cdef Py_buffer view
    cdef Md5 md5 = None
    cdef EVP_MD_CTX *ctx = NULL
    cdef md5mb_state *state = NULL
    cdef int rc = 0, flags, err
    if offset < 0 or length < 0:
        raise ValueError("offset and length must be >= 0")
    wait = _wait_seconds(timeout)
    pieces = _byte_view(buf)
    if length == 0:
        return 0
    flags = fcntl(sockfd, F_GETFL)
    err = errno
    if timeout is not None:
        if flags < 0:
            raise OSError(err, os.strerror(err))
        if not flags & O_NONBLOCK:
            raise ValueError("a timeout needs a non-blocking socket")
    s.sockfd, s.filefd = sockfd, filefd
    s.offset, s.left, s.sent = offset, length, 0
    s.chunked = chunked
    s.first = s.count = s.data = 0
    s.piece = 0
    s.timeout, s.waiting, s.deadline = wait, False, 0.0
    s.blocking = flags >= 0 and not flags & O_NONBLOCK
    s.err = 0
    PyObject_GetBuffer(pieces, &view, PyBUF_WRITABLE)
    s.buf, s.cap = <char *>view.buf, <size_t>view.len
    try:
        if hasher is None or type(hasher) is Md5:
            md5 = hasher
            while True:  # each turn ends the transfer or a signal interrupted it
                if md5 is not None:
                    md5._acquire()
                    ctx, state = md5.ctx, &md5.state
                try:
                    with nogil:
                        rc = _send_md5(&s, ctx, state)
                finally:
                    if md5 is not None:
                        md5._release()
                if rc != FAIL_INTR:
                    break
                PyErr_CheckSignals()  # raises what a handler raised
        else:
            update = hasher.update
            while True:  # each turn writes a piece, reads one, or stops
                if s.first < s.count:
                    with nogil:
                        rc = _write_piece(&s)
                elif s.left == 0:
                    rc = 0
                    break
                else:
                    with nogil:
                        rc = _read_piece(&s)
                    if rc == 0:
                        update(pieces[:s.piece])
                if rc == FAIL_INTR:
                    PyErr_CheckSignals()
                elif rc:
                    break
    finally:
        PyBuffer_Release(&view)
    if rc:
        raise _failure(rc, &s)
    return s.sent
