"""What the admin protocols' connections (RSMC, SWAP) share with each other: a socket
the worker's loop watches, a deadline the loop sweeps, and the way they leave."""
import socket

from storage.loop import READ

WOULD_BLOCK = (BlockingIOError, InterruptedError)  # a non-blocking call that must wait


class LoopConnection:
    """A connection of ``worker`` on ``loop`` for a protocol ``service``; registered
    for reading and for deadlines at once. Subclasses set ``deadline`` and define
    ``on_readable``, ``on_writable``, ``on_timeout`` and ``close`` (which ends with
    ``_detach()``)."""

    def __init__(self, sock, peer, loop, worker, service):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.loop = loop
        self.worker = worker
        self.service = service
        self.config = worker.config
        self.closed = False
        self._events = READ
        loop.register(self, READ)
        loop.timed.add(self)

    def fileno(self):
        return self.fd

    def _recv(self, size):
        """Up to ``size`` bytes from the socket: b"" at EOF or on a socket error (the
        peer is gone either way), None when nothing is there yet."""
        try:
            return self.sock.recv(size)
        except WOULD_BLOCK:
            return None
        except OSError:
            return b""

    def _watch(self, events):
        """Ask the loop for ``events``; a syscall only when they change."""
        if self._events != events and not self.closed:
            self.loop.modify(self, events)
            self._events = events

    def _detach(self):
        """Leave the loop and the worker, then close the socket (end of ``close``)."""
        self.loop.unregister(self)
        self.loop.timed.discard(self)
        self.worker.connection_closed(self)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
