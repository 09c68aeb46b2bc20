"""Pure-Python twin of ``_fastpath.transfer`` (the executable spec).

Same names, signatures and exceptions: ``os.preadv`` into the caller's buffer,
``hasher.update`` per piece, ``os.writev`` of the framed piece on the socket's
descriptor and ``select.poll`` for POLLOUT whenever it is full. See the
compiled module's docstring for the contract (a plain socket, never TLS).
"""
import errno
import math
import operator
import os
import select
import time

from storage.pure.streamio import _byte_view  # the same buffer checks as the pump

__all__ = ["SourceReadError", "SourceTruncated", "send_file"]

_INT_MAX = 2**31 - 1  # poll()'s longest wait, in milliseconds


class SourceReadError(OSError):
    """Reading the file failed; ``errno`` is kept (EIO, EBADF, EISDIR, ...).
    Socket-side errors are ordinary OSError subclasses instead."""


class SourceTruncated(SourceReadError):
    """The file ended before the range did (it shrank, or the range was wrong)."""


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


def _wait_writable(sockfd, deadline):
    """Wait until the socket takes bytes (or has an error the next writev
    reports); TimeoutError once time.monotonic() passes ``deadline`` (None:
    never). poll retries EINTR itself (PEP 475)."""
    poller = select.poll()
    poller.register(sockfd, select.POLLOUT)
    while True:
        if deadline is None:
            ms = None
        else:
            ms = min(max(math.ceil((deadline - time.monotonic()) * 1000), 0), _INT_MAX)
        events = poller.poll(ms)
        if events:
            if events[0][1] & select.POLLNVAL:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            return
        if ms == 0:
            raise TimeoutError("timed out")


def _write_piece(sockfd, iov, data, seconds):
    """writev all of iov (list of memoryviews), waiting whenever the socket is
    full; returns the bytes of iov[data] written."""
    sent = first = 0
    deadline = None  # of the wait in progress; any progress ends it
    try:
        while first < len(iov):
            try:
                done = os.writev(sockfd, iov[first:])  # retries EINTR (PEP 475)
            except BlockingIOError:
                if deadline is None and seconds >= 0:
                    deadline = time.monotonic() + seconds
                _wait_writable(sockfd, deadline)
                continue
            if done == 0:  # never from a socket with bytes to write: do not spin
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            deadline = None
            while done > 0:
                take = min(done, len(iov[first]))
                iov[first] = iov[first][take:]
                done -= take
                if first == data:
                    sent += take
                if not iov[first]:
                    first += 1
    except OSError as exc:
        exc.sent = sent  # the piece's share; send_file adds the earlier ones
        raise
    return sent


def send_file(sockfd, filefd, offset, length, hasher, buf, timeout, chunked=True):
    """Send ``length`` bytes of a file from ``offset`` to a socket, hashing
    them into ``hasher``, read by pieces of ``len(buf)`` bytes; each piece one
    HTTP/1.1 chunk if ``chunked``. Returns the bytes of file data sent."""
    sockfd, filefd = operator.index(sockfd), operator.index(filefd)
    offset, length = operator.index(offset), operator.index(length)
    if offset < 0 or length < 0:
        raise ValueError("offset and length must be >= 0")
    seconds = _wait_seconds(timeout)
    view = _byte_view(buf)
    if length == 0:
        return 0
    if timeout is not None and os.get_blocking(sockfd):
        raise ValueError("a timeout needs a non-blocking socket")
    pos, left, sent = offset, length, 0
    while left:
        try:
            got = os.preadv(filefd, [view[:min(len(view), left)]], pos)
        except OSError as exc:
            err = SourceReadError(exc.errno, exc.strerror)
            err.sent = sent
            raise err from None
        if got == 0:
            err = SourceTruncated(f"the file ended at offset {pos}, "
                                  f"{left} bytes before the end of the range")
            err.sent = sent
            raise err
        pos += got
        left -= got
        piece = view[:got]
        if hasher is not None:
            hasher.update(piece)
        if chunked:
            iov, data = [memoryview(b"%x\r\n" % got), piece, memoryview(b"\r\n")], 1
        else:
            iov, data = [piece], 0
        try:
            sent += _write_piece(sockfd, iov, data, seconds)
        except OSError as exc:
            exc.sent += sent
            raise
    return sent
