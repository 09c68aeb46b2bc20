"""Pure-Python twin of ``_fastpath.streamio`` (the executable spec).

Same names, signatures and exceptions; hashlib for MD5, socket.recv_into,
os.write / os.preadv, os.listxattr / getxattr / setxattr and link + unlink.
"""
import errno
import hashlib
import os
import socket

import blake3 as _blake3

AGAIN = 0  # pump() status: the socket would block
LIMIT = 1  # pump() status: limit reached
EOF = 2  # pump() status: the peer closed its side

_HASH_FILE_BUFSIZE = 256 * 1024


def md5_backend():
    """Where Md5 hashes: always 'hashlib' here."""
    return "hashlib"


class DiskWriteError(OSError):
    """A write to the destination file failed; ``errno`` is kept (ENOSPC, EIO,
    EDQUOT, ...). Socket-side errors are ordinary OSError subclasses instead."""


class Md5:
    """MD5 with the surface of ``hashlib.md5()`` (a thin wrapper of it)."""

    name = "md5"
    digest_size = 16
    block_size = 64

    def __init__(self, data=b""):
        self._h = hashlib.md5(data)

    def update(self, data):
        """Hash the bytes of ``data`` (any bytes-like object)."""
        self._h.update(data)

    def digest(self):
        return self._h.digest()

    def hexdigest(self):
        return self._h.hexdigest()

    def copy(self):
        other = Md5.__new__(Md5)
        other._h = self._h.copy()
        return other


def _byte_view(buf):
    view = memoryview(buf)
    if view.readonly:
        raise TypeError("buf must be a writable bytes-like object")
    if not view.c_contiguous:
        raise TypeError("buf must be C-contiguous")
    if view.nbytes == 0:
        raise ValueError("buf must not be empty")
    return view.cast("B")


def _write_full(fd, piece):
    # os.write retries EINTR itself (PEP 475)
    while piece:  # each turn writes >= 1 byte
        try:
            done = os.write(fd, piece)
        except OSError as exc:
            raise DiskWriteError(exc.errno, exc.strerror) from exc
        if done == 0:
            raise DiskWriteError(errno.EIO, os.strerror(errno.EIO))  # never spin
        piece = piece[done:]


def pump(sockfd, filefd, buf, hasher, limit):
    """Move up to ``limit`` bytes from a non-blocking socket to a file, hashing
    them; ``(bytes moved, status)`` with status AGAIN, LIMIT or EOF."""
    if limit < 0:
        raise ValueError("limit must be >= 0")
    view = _byte_view(buf)
    if limit == 0:
        return 0, LIMIT
    sock = socket.socket(fileno=sockfd)  # borrowed: detached below, not closed
    moved = 0
    try:
        while moved < limit:  # each turn moves >= 1 byte or leaves
            want = min(len(view), limit - moved)
            try:
                got = sock.recv_into(view, want, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return moved, AGAIN
            if got == 0:
                return moved, EOF
            piece = view[:got]
            if hasher is not None:
                hasher.update(piece)
            try:
                _write_full(filefd, piece)
            except DiskWriteError as exc:
                exc.received = moved + got
                raise
            moved += got
        return moved, LIMIT
    finally:
        sock.detach()


def write_all(filefd, data, hasher):
    """Hash (unless ``hasher`` is None) and write all of ``data``; returns its
    length in bytes. DiskWriteError on a write error."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    if hasher is not None and view.nbytes:
        hasher.update(view)
    _write_full(filefd, view)
    return view.nbytes


def hash_file(fd, algo, offset=0, length=-1, buf=None):
    """Upper-case hex digest ("md5" or "blake3") of ``length`` bytes from
    ``offset`` (-1 = to EOF; also stops at EOF), read by pread into ``buf``."""
    if not isinstance(algo, str):
        raise TypeError("algo must be str")
    if algo == "md5":
        hasher = hashlib.md5()
    elif algo == "blake3":
        hasher = _blake3.blake3()
    else:
        raise ValueError(f"unknown hash algorithm {algo!r}")
    if offset < 0 or length < -1:
        raise ValueError("offset must be >= 0 and length >= -1")
    view = _byte_view(bytearray(_HASH_FILE_BUFSIZE) if buf is None else buf)
    while length != 0:  # each turn reads >= 1 byte, stops at EOF
        want = len(view) if length < 0 else min(len(view), length)
        got = os.preadv(fd, [view[:want]], offset)
        if got == 0:
            break
        hasher.update(view[:got])
        offset += got
        if length > 0:
            length -= got
    return hasher.hexdigest().upper()


def _check_fd(fd):
    # os.*xattr(-1, ...) would act on the current directory instead
    if fd < 0:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def read_xattrs(fd):
    """All extended attributes of an open file as {name: value}."""
    _check_fd(fd)
    result = {}
    for name in os.listxattr(fd):
        try:
            result[name] = os.getxattr(fd, name)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed since the listing
                raise
    return result


def write_xattrs(fd, attrs):
    """Set every (name, value) of a mapping or an iterable of pairs."""
    _check_fd(fd)
    items = attrs.items() if hasattr(attrs, "items") else attrs
    for name, value in items:
        os.setxattr(fd, os.fsencode(name), value)


def _check_paths(src, dst):
    if not isinstance(src, str) or not isinstance(dst, str):
        raise TypeError("src and dst must be str")


def _rename_by_link(src, dst):
    """link + unlink; FileExistsError from link if dst exists. If src cannot
    be removed, the new link is removed again so that nothing changed."""
    _check_paths(src, dst)
    os.link(src, dst)
    try:
        os.unlink(src)
    except OSError:
        os.unlink(dst)
        raise


def rename_noreplace(src, dst):
    """Rename src to dst unless dst exists (FileExistsError then)."""
    _rename_by_link(src, dst)
