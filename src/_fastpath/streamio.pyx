# distutils: libraries = crypto
"""Byte-moving fast paths of the chunk server: socket -> file with hashing (PUT),
file hashing by pread (HEAD with X-oio-check-hash), xattrs and no-replace renames.

MD5 goes through the multi-buffer engine of ``_fastpath.md5mb`` (the
uploads hashed by a worker's threads share 8-lane SIMD kernels) so that the
whole recv + hash + write loop can run without the GIL;
``STORAGE_NODE_MD5=openssl`` selects OpenSSL's libcrypto (EVP API) instead.
Other hashers (blake3, ...) are called through their Python ``update`` with
the GIL held.
"""
import os

import blake3 as _blake3

from cpython.buffer cimport (
    PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
    PyThread_free_lock, PyThread_release_lock,
)
from libc.errno cimport EAGAIN, EINTR, EINVAL, EIO, ENODATA, ENOSYS, ERANGE, errno
from libc.stdint cimport uint8_t
from libc.string cimport memcpy, strlen

from _fastpath.md5mb cimport md5mb_state, state_digest, state_init, state_update


cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from "Python.h":
    # str from a file system name, exactly as os.listxattr decodes it
    object PyUnicode_DecodeFSDefault(const char *s)

cdef extern from "<unistd.h>" nogil:
    ssize_t c_write "write" (int fd, const void *buf, size_t count)
    ssize_t c_pread "pread" (int fd, void *buf, size_t count, long long offset)
    int c_link "link" (const char *src, const char *dst)
    int c_unlink "unlink" (const char *path)

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_recv "recv" (int fd, void *buf, size_t count, int flags)
    int MSG_DONTWAIT

cdef extern from "<sys/xattr.h>" nogil:
    ssize_t flistxattr(int fd, char *names, size_t size)
    ssize_t fgetxattr(int fd, const char *name, void *value, size_t size)
    int fsetxattr(int fd, const char *name, const void *value, size_t size, int flags)

cdef extern from "<fcntl.h>":
    int AT_FDCWD

cdef extern from "<stdio.h>" nogil:
    # glibc >= 2.28 (Python.h defines _GNU_SOURCE, which exposes both)
    int renameat2(int olddirfd, const char *oldpath, int newdirfd,
                  const char *newpath, unsigned int flags)
    unsigned int RENAME_NOREPLACE


cdef enum:
    # Retries of a syscall interrupted by a signal before giving up with EINTR;
    # the GIL is not held there, so Python signal handlers run only after.
    EINTR_RETRIES = 16
    # Attempts at listing/reading xattrs that keep growing under us (ERANGE).
    XATTR_RETRIES = 8
    XATTR_VALUE_INITIAL = 1024
    HASH_FILE_BUFSIZE = 256 * 1024
    # Internal failure sides of the raw pump loop (negative, statuses are >= 0)
    FAIL_RECV = -1
    FAIL_WRITE = -2
    FAIL_HASH = -3


MD5_ENV = "STORAGE_NODE_MD5"


def _md5_uses_openssl():
    choice = os.environ.get(MD5_ENV, "")
    if choice not in ("", "md5mb", "openssl"):
        raise ValueError(f"{MD5_ENV}={choice!r}: not one of ('md5mb', 'openssl')")
    return choice == "openssl"


# Read once: every Md5 of the process hashes the same way.
cdef bint _OPENSSL_MD5 = _md5_uses_openssl()


def md5_backend():
    """Where Md5 hashes: 'md5mb' (the multi-buffer engine) or 'openssl'."""
    return "openssl" if _OPENSSL_MD5 else "md5mb"


AGAIN = PUMP_AGAIN
LIMIT = PUMP_LIMIT
EOF = PUMP_EOF


class DiskWriteError(OSError):
    """A write to the destination file failed; ``errno`` is kept (ENOSPC, EIO,
    EDQUOT, ...). Socket-side errors are ordinary OSError subclasses instead."""


cdef object _os_error(int err):
    # OSError(errno, msg) picks the subclass itself (ConnectionResetError, ...)
    return OSError(err, os.strerror(err))


# --------------------------------------------------------------------------- MD5

cdef int _md5_update(EVP_MD_CTX *ctx, md5mb_state *state, const void *p,
                     size_t n) noexcept nogil:
    """Hash n bytes into an OpenSSL context, or (ctx NULL) into a md5mb state
    through the engine: 1 on success, 0 on failure (OpenSSL only)."""
    if ctx != NULL:
        return EVP_DigestUpdate(ctx, p, n)
    state_update(state, p, n)
    return 1


cdef class Md5:
    """MD5 with the surface of ``hashlib.md5()``: the md5mb engine, or
    OpenSSL's EVP API with ``STORAGE_NODE_MD5=openssl``.

    ``update`` accepts any bytes-like object and releases the GIL for inputs of
    at least GIL_MINSIZE bytes.
    """

    def __cinit__(self):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()
        state_init(&self.state)
        if not _OPENSSL_MD5:
            return
        self.ctx = EVP_MD_CTX_new()
        if self.ctx == NULL:
            raise MemoryError()
        if EVP_DigestInit_ex(self.ctx, EVP_md5(), NULL) != 1:
            raise ValueError("MD5 is not available from libcrypto")

    def __init__(self, data=b""):
        self.update(data)

    def __dealloc__(self):
        if self.ctx != NULL:
            EVP_MD_CTX_free(self.ctx)
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef int _acquire(self) except -1:
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)
        return 0

    cdef void _release(self) noexcept:
        PyThread_release_lock(self.lock)

    @property
    def name(self):
        return "md5"

    @property
    def digest_size(self):
        return MD5_DIGEST_SIZE

    @property
    def block_size(self):
        return MD5_BLOCK_SIZE

    def update(self, data):
        """Hash the bytes of ``data`` (any bytes-like object)."""
        cdef Py_buffer view
        cdef int ok
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._acquire()
            try:
                if view.len >= GIL_MINSIZE:
                    with nogil:
                        ok = _md5_update(self.ctx, &self.state, view.buf,
                                         <size_t>view.len)
                else:
                    ok = _md5_update(self.ctx, &self.state, view.buf,
                                     <size_t>view.len)
            finally:
                self._release()
        finally:
            PyBuffer_Release(&view)
        if ok != 1:
            raise ValueError("MD5 update failed")

    def digest(self):
        """The 16-byte digest of the bytes so far (the object stays usable)."""
        cdef unsigned char out[MD5_DIGEST_SIZE]
        cdef unsigned int size = 0
        cdef EVP_MD_CTX *tmp
        cdef int ok
        if self.ctx == NULL:
            self._acquire()
            try:
                state_digest(&self.state, <uint8_t *>out)
            finally:
                self._release()
            return PyBytes_FromStringAndSize(<char *>out, MD5_DIGEST_SIZE)
        tmp = EVP_MD_CTX_new()
        if tmp == NULL:
            raise MemoryError()
        try:
            self._acquire()
            try:
                ok = EVP_MD_CTX_copy_ex(tmp, self.ctx)
            finally:
                self._release()
            if ok != 1 or EVP_DigestFinal_ex(tmp, out, &size) != 1:
                raise ValueError("MD5 finalization failed")
            return PyBytes_FromStringAndSize(<char *>out, size)
        finally:
            EVP_MD_CTX_free(tmp)

    def hexdigest(self):
        """The digest as 32 lower-case hex digits, like hashlib."""
        return self.digest().hex()

    def copy(self):
        """An independent Md5 with the same state."""
        cdef Md5 other = Md5.__new__(Md5)
        cdef int ok = 1
        self._acquire()
        try:
            if self.ctx == NULL:
                memcpy(&other.state, &self.state, sizeof(md5mb_state))
            else:
                ok = EVP_MD_CTX_copy_ex(other.ctx, self.ctx)
        finally:
            self._release()
        if ok != 1:
            raise ValueError("MD5 copy failed")
        return other


# ---------------------------------------------------------------- raw syscalls

cdef ssize_t _recv_some(int fd, char *p, size_t n) noexcept nogil:
    """recv without blocking: bytes read (0 = EOF) or -errno. Cannot raise."""
    cdef ssize_t got
    cdef int tries
    for tries in range(EINTR_RETRIES):
        got = c_recv(fd, p, n, MSG_DONTWAIT)
        if got >= 0:
            return got
        if errno != EINTR:
            return -errno
    return -EINTR


cdef int _write_full(int fd, const char *p, size_t n) noexcept nogil:
    """Write all n bytes, looping on short writes: 0 or an errno. Cannot raise."""
    cdef ssize_t done
    cdef int interrupted = 0
    while n > 0:  # each turn writes >= 1 byte or counts an EINTR
        done = c_write(fd, p, n)
        if done < 0:
            if errno == EINTR and interrupted < EINTR_RETRIES:
                interrupted += 1
                continue
            return errno
        if done == 0:
            return EIO  # a regular file never does this; do not spin on it
        p += done
        n -= <size_t>done
    return 0


cdef int _pump_raw(int sockfd, int filefd, char *p, Py_ssize_t cap,
                   EVP_MD_CTX *ctx, md5mb_state *state, Py_ssize_t limit,
                   Py_ssize_t *moved, int *err) noexcept nogil:
    """The pump loop without Python objects: a status >= 0, or a FAIL_* side
    with the errno in err. Hashes into ctx, else into state; no hashing if
    both are NULL."""
    cdef Py_ssize_t want, got
    while moved[0] < limit:
        want = limit - moved[0]
        if want > cap:
            want = cap
        got = _recv_some(sockfd, p, <size_t>want)
        if got < 0:
            if got == -EAGAIN or got == -EWOULDBLOCK:
                return PUMP_AGAIN
            err[0] = <int>-got
            return FAIL_RECV
        if got == 0:
            return PUMP_EOF
        if (ctx != NULL or state != NULL) and \
                _md5_update(ctx, state, p, <size_t>got) != 1:
            return FAIL_HASH
        err[0] = _write_full(filefd, p, <size_t>got)
        moved[0] += got  # on failure: consumed from the socket (DiskWriteError.received)
        if err[0]:
            return FAIL_WRITE
    return PUMP_LIMIT


cdef object _byte_view(buf):
    """A writable, contiguous, non-empty view of buf, in bytes (TypeError or
    ValueError otherwise; the same checks as the twin)."""
    view = memoryview(buf)
    if view.readonly:
        raise TypeError("buf must be a writable bytes-like object")
    if not view.c_contiguous:
        raise TypeError("buf must be C-contiguous")
    if view.nbytes == 0:
        raise ValueError("buf must not be empty")
    return view.cast("B")


# ------------------------------------------------------------------- streaming

def pump(int sockfd, int filefd, buf, hasher, Py_ssize_t limit):
    """Move up to ``limit`` bytes from a non-blocking socket to a file, hashing them.

    ``buf`` is the caller's reusable writable buffer (any size). Returns
    ``(bytes moved, status)`` with status 0 (AGAIN: the socket would block),
    1 (LIMIT reached) or 2 (EOF from the peer). Bytes count as moved once
    written. Raises DiskWriteError on a file write error (its ``received``
    attribute: bytes taken from the socket by this call, so a caller can keep
    its framing), OSError on a socket error.
    """
    cdef Py_buffer view
    cdef Py_ssize_t moved = 0, got
    cdef int rc = PUMP_LIMIT, err = 0
    cdef Md5 md5
    cdef char *p
    if limit < 0:
        raise ValueError("limit must be >= 0")
    pieces = _byte_view(buf)
    if limit == 0:
        return 0, PUMP_LIMIT
    PyObject_GetBuffer(pieces, &view, PyBUF_WRITABLE)
    p = <char *>view.buf
    try:
        if hasher is None or type(hasher) is Md5:
            # The whole loop without the GIL: recv + MD5 + write.
            md5 = hasher
            if md5 is None:
                with nogil:
                    rc = _pump_raw(sockfd, filefd, p, view.len, NULL, NULL,
                                   limit, &moved, &err)
            else:
                md5._acquire()
                try:
                    with nogil:
                        rc = _pump_raw(sockfd, filefd, p, view.len, md5.ctx,
                                       &md5.state, limit, &moved, &err)
                finally:
                    md5._release()
        else:
            update = hasher.update
            while moved < limit:  # each turn moves >= 1 byte or leaves
                got = limit - moved
                if got > view.len:
                    got = view.len
                with nogil:
                    got = _recv_some(sockfd, p, <size_t>got)
                if got < 0:
                    if got == -EAGAIN or got == -EWOULDBLOCK:
                        rc = PUMP_AGAIN
                    else:
                        rc, err = FAIL_RECV, <int>-got
                    break
                if got == 0:
                    rc = PUMP_EOF
                    break
                update(pieces[:got])
                with nogil:
                    err = _write_full(filefd, p, <size_t>got)
                moved += got
                if err:
                    rc = FAIL_WRITE
                    break
            else:
                rc = PUMP_LIMIT
    finally:
        PyBuffer_Release(&view)
    if rc == FAIL_RECV:
        raise _os_error(err)
    if rc == FAIL_WRITE:
        exc = DiskWriteError(err, os.strerror(err))
        exc.received = moved  # bytes taken from the socket, the failed piece included
        raise exc
    if rc == FAIL_HASH:
        raise ValueError("MD5 update failed")
    return moved, rc


def write_all(int filefd, data, hasher):
    """Hash (unless ``hasher`` is None) and write all of ``data`` to ``filefd``.

    For body bytes that arrived with the request head, or decoded pieces of a
    chunked body. Returns the number of bytes written (len of data in bytes).
    Raises DiskWriteError on a write error.
    """
    cdef Py_buffer view
    cdef int err = 0, ok = 1
    cdef Py_ssize_t n
    cdef Md5 md5
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        n = view.len
        if type(hasher) is Md5:
            md5 = hasher
            md5._acquire()
            try:
                with nogil:
                    ok = _md5_update(md5.ctx, &md5.state, view.buf, <size_t>n)
                    if ok == 1:
                        err = _write_full(filefd, <const char *>view.buf, <size_t>n)
            finally:
                md5._release()
        else:
            if hasher is not None and n:
                # hashers may insist on unsigned bytes (blake3 refuses 'h')
                hasher.update(data if type(data) is bytes
                              else memoryview(data).cast("B"))
            with nogil:
                err = _write_full(filefd, <const char *>view.buf, <size_t>n)
    finally:
        PyBuffer_Release(&view)
    if ok != 1:
        raise ValueError("MD5 update failed")
    if err:
        raise DiskWriteError(err, os.strerror(err))
    return n


# ------------------------------------------------------------------ file hashing

cdef int _md5_range(int fd, char *p, Py_ssize_t cap, EVP_MD_CTX *ctx,
                    md5mb_state *state, Py_ssize_t offset,
                    Py_ssize_t length) noexcept nogil:
    """MD5 of [offset, offset+length) (length -1 = to EOF) by pread: 0 or errno."""
    cdef Py_ssize_t want, got
    cdef int interrupted = 0
    while length != 0:  # each turn reads >= 1 byte, stops at EOF or fails
        want = cap if length < 0 or length > cap else length
        got = c_pread(fd, p, <size_t>want, offset)
        if got < 0:
            if errno == EINTR and interrupted < EINTR_RETRIES:
                interrupted += 1
                continue
            return errno
        if got == 0:
            break
        if _md5_update(ctx, state, p, <size_t>got) != 1:
            return EIO
        offset += got
        if length > 0:
            length -= got
    return 0


def hash_file(int fd, str algo, Py_ssize_t offset=0, Py_ssize_t length=-1, buf=None):
    """Upper-case hex digest ("md5" or "blake3") of ``length`` bytes of a file
    from ``offset`` (length -1 = to EOF; hashing also stops at EOF), read by
    pread into ``buf`` (a reusable writable buffer; one is allocated if None).
    OSError on read errors.
    """
    cdef Py_buffer view
    cdef Py_ssize_t got
    cdef int err = 0, interrupted = 0
    cdef Md5 md5
    cdef char *p
    if algo != "md5" and algo != "blake3":
        raise ValueError(f"unknown hash algorithm {algo!r}")
    if offset < 0 or length < -1:
        raise ValueError("offset must be >= 0 and length >= -1")
    pieces = _byte_view(bytearray(HASH_FILE_BUFSIZE) if buf is None else buf)
    PyObject_GetBuffer(pieces, &view, PyBUF_WRITABLE)
    p = <char *>view.buf
    try:
        if algo == "md5":
            md5 = Md5()  # private to this call: no locking needed
            with nogil:
                err = _md5_range(fd, p, view.len, md5.ctx, &md5.state, offset,
                                 length)
            hasher = md5
        else:
            hasher = _blake3.blake3()
            while length != 0:  # each turn reads >= 1 byte, stops at EOF or fails
                got = view.len if length < 0 or length > view.len else length
                with nogil:
                    got = c_pread(fd, p, <size_t>got, offset)
                    if got < 0:
                        err = errno
                if got < 0:
                    if err == EINTR and interrupted < EINTR_RETRIES:
                        interrupted += 1
                        err = 0
                        continue
                    break
                if got == 0:
                    break
                hasher.update(pieces[:got])
                offset += got
                if length > 0:
                    length -= got
    finally:
        PyBuffer_Release(&view)
    if err:
        raise _os_error(err)
    return hasher.hexdigest().upper()


# ------------------------------------------------------------------------ xattrs

cdef object _get_xattr(int fd, const char *name, char **value, size_t *cap):
    """One xattr value as bytes, or None if it vanished (ENODATA). *value is a
    scratch buffer of *cap bytes, grown here when a value does not fit."""
    cdef ssize_t got
    cdef int err, attempt
    cdef char *bigger
    for attempt in range(XATTR_RETRIES):
        with nogil:
            got = fgetxattr(fd, name, value[0], cap[0])
            err = errno
        if got >= 0:
            return PyBytes_FromStringAndSize(value[0], got)
        if err == ENODATA:
            return None
        if err != ERANGE:
            raise _os_error(err)
        with nogil:
            got = fgetxattr(fd, name, NULL, 0)
            err = errno
        if got < 0:
            if err == ENODATA:
                return None
            raise _os_error(err)
        # the value may grow again before the next read: take some margin
        bigger = <char *>PyMem_Realloc(value[0], <size_t>got + cap[0])
        if bigger == NULL:
            raise MemoryError()
        value[0] = bigger
        cap[0] = <size_t>got + cap[0]
    raise _os_error(ERANGE)


def read_xattrs(int fd):
    """All extended attributes of an open file as {name: value}, names as str
    with their namespace prefix ("user.") kept."""
    cdef char *names = NULL
    cdef char *value = NULL
    cdef char *grown
    cdef size_t cap = XATTR_VALUE_INITIAL
    cdef ssize_t size = 0, got = -1, pos
    cdef int err = 0, attempt
    try:
        for attempt in range(XATTR_RETRIES):
            with nogil:
                size = flistxattr(fd, NULL, 0)
                err = errno
            if size < 0:
                raise _os_error(err)
            if size == 0:
                return {}
            grown = <char *>PyMem_Realloc(names, <size_t>size)
            if grown == NULL:
                raise MemoryError()
            names = grown
            with nogil:
                got = flistxattr(fd, names, <size_t>size)
                err = errno
            if got >= 0:
                break
            if err != ERANGE:  # ERANGE: a name was added in between, again
                raise _os_error(err)
        if got < 0:
            raise _os_error(ERANGE)
        value = <char *>PyMem_Malloc(cap)
        if value == NULL:
            raise MemoryError()
        result = {}
        pos = 0
        while pos < got:  # names are NUL-terminated, back to back
            content = _get_xattr(fd, names + pos, &value, &cap)
            if content is not None:
                result[PyUnicode_DecodeFSDefault(names + pos)] = content
            pos += <ssize_t>strlen(names + pos) + 1
        return result
    finally:
        PyMem_Free(names)
        PyMem_Free(value)


def write_xattrs(int fd, attrs):
    """Set every (name: str, value: bytes-like) of a mapping or an iterable of
    pairs on an open file. OSError (ENOSPC, ENOTSUP, E2BIG, ...) propagates."""
    cdef Py_buffer view
    cdef bytes raw
    cdef const char *cname
    cdef int rc, err = 0
    items = attrs.items() if hasattr(attrs, "items") else attrs
    for name, value in items:
        raw = os.fsencode(name)
        if b"\0" in raw:
            raise ValueError("embedded null byte")
        cname = raw
        PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                rc = fsetxattr(fd, cname, view.buf, <size_t>view.len, 0)
                if rc < 0:
                    err = errno
        finally:
            PyBuffer_Release(&view)
        if rc < 0:
            raise _os_error(err)


# ----------------------------------------------------------------------- rename

cdef object _path_error(int err, src, dst):
    return OSError(err, os.strerror(err), src, None, dst)


def _rename_by_link(str src not None, str dst not None):
    """rename_noreplace for filesystems without RENAME_NOREPLACE: link then
    unlink; FileExistsError from link if dst exists. If src cannot be removed,
    the new link is removed again so that nothing changed."""
    cdef bytes bsrc = os.fsencode(src), bdst = os.fsencode(dst)
    cdef const char *csrc = bsrc
    cdef const char *cdst = bdst
    cdef int rc, err = 0
    with nogil:
        rc = c_link(csrc, cdst)
        if rc < 0:
            err = errno
    if rc < 0:
        raise _path_error(err, src, dst)
    with nogil:
        rc = c_unlink(csrc)
        if rc < 0:
            err = errno
            c_unlink(cdst)
    if rc < 0:
        raise _path_error(err, src, None)


def rename_noreplace(str src not None, str dst not None):
    """Atomically rename src to dst unless dst exists (FileExistsError then,
    both files untouched). Uses renameat2(RENAME_NOREPLACE); falls back to
    link + unlink where the filesystem or kernel does not support the flag."""
    cdef bytes bsrc = os.fsencode(src), bdst = os.fsencode(dst)
    cdef const char *csrc = bsrc
    cdef const char *cdst = bdst
    cdef int rc, err = 0
    with nogil:
        rc = renameat2(AT_FDCWD, csrc, AT_FDCWD, cdst, RENAME_NOREPLACE)
        if rc < 0:
            err = errno
    if rc == 0:
        return
    if err == EINVAL or err == ENOSYS:
        _rename_by_link(src, dst)
        return
    raise _path_error(err, src, dst)
