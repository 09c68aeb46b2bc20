"""Request bodies moved on an I/O thread: socket -> hash -> file in one C call
(``pump_for``), or recv and hand to an upload that transforms its body (``feed_pump``,
``chunked_pump``). Each lingers briefly when the socket runs dry, then hands the
connection back to the loop."""
import logging
import select
import ssl
import time

from storage.errors import StorageError
from storage.fast import load

streamio = load("streamio")
log = logging.getLogger(__name__)

PUMP_LINGER = 0.002  # seconds an I/O thread waits for more body bytes
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError)


class _Linger:
    """An I/O thread's patience with a dry socket: ``wait()`` polls for more bytes until
    ``linger`` seconds after the pump started (each hand-back to the loop costs a round
    trip; a slow client still holds a thread only that long). -> True if readable."""

    __slots__ = ("fd", "deadline", "poller")

    def __init__(self, fd, linger):
        self.fd = fd
        self.deadline = time.monotonic() + linger
        self.poller = None

    def wait(self):
        timeout = self.deadline - time.monotonic()
        if timeout <= 0:
            return False
        if self.poller is None:
            self.poller = select.poll()
            self.poller.register(self.fd, select.POLLIN)
        return bool(self.poller.poll(timeout * 1000))


def _feed(feed, data, received):
    """Hand body bytes to an upload; its failure becomes a StorageError whose
    ``received`` counts the bytes taken off the socket (a failing transform fails the
    upload, not the worker)."""
    try:
        feed(data)
    except StorageError as exc:
        exc.received = received
        raise
    except Exception as exc:
        log.error("upload body transform failed: %r", exc)
        wrapped = StorageError(f"cannot store the body: {exc}")
        wrapped.received = received
        raise wrapped from exc


def pump_for(sockfd, filefd, buf, hasher, limit, linger=PUMP_LINGER):
    """``streamio.pump`` on an I/O thread, lingering (``_Linger``) when the socket runs
    dry. Same results as pump; DiskWriteError.received counts every round."""
    total = 0
    patience = _Linger(sockfd, linger)
    while True:
        try:
            moved, status = streamio.pump(sockfd, filefd, buf, hasher, limit - total)
        except streamio.DiskWriteError as exc:
            exc.received = total + getattr(exc, "received", 0)
            raise
        total += moved
        if status != streamio.AGAIN or total >= limit or not patience.wait():
            return total, status


def feed_pump(sock, buf, feed, limit, linger=PUMP_LINGER):
    """``pump_for``'s twin for bodies that cannot take the fast path (an upload that
    compresses, a TLS socket): recv into ``buf`` and hand each piece to ``feed``, on an
    I/O thread. Same results as pump. A failure of ``feed`` is raised as a StorageError
    (``_feed``); a socket error is raised as is."""
    total = 0
    view = memoryview(buf)
    patience = _Linger(sock.fileno(), linger)
    while total < limit:
        try:
            got = sock.recv_into(view, min(len(view), limit - total))
        except WOULD_BLOCK:
            if not patience.wait():
                return total, streamio.AGAIN
            continue
        if got == 0:
            return total, streamio.EOF
        total += got
        _feed(feed, view[:got], total)
    return total, streamio.LIMIT



def chunked_pump(sock, buf, decoder, feed, linger=PUMP_LINGER):
    """A chunked request body on an I/O thread: recv into ``buf``, decode, hand each
    body piece to ``feed``, until the body ends, the socket runs dry (after ``linger``)
    or the peer leaves. -> (bytes off the wire, body bytes, status, leftover) with
    status AGAIN, EOF or LIMIT (the body ended; ``leftover`` is what followed it: a
    pipelined request). ChunkedError and, from ``feed``, a StorageError (``_feed``;
    ``received`` = wire bytes) are raised."""
    wire = body = 0
    view = memoryview(buf)
    patience = _Linger(sock.fileno(), linger)
    while True:
        try:
            got = sock.recv_into(view)
        except WOULD_BLOCK:
            if not patience.wait():
                return wire, body, streamio.AGAIN, b""
            continue
        if got == 0:
            return wire, body, streamio.EOF, b""
        wire += got
        pieces, used = decoder.feed(view[:got])
        for piece in pieces:
            _feed(feed, piece, wire)
            body += len(piece)
        if decoder.done:
            return wire - (got - used), body, streamio.LIMIT, bytes(view[used:got])
