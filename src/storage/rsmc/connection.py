"""One RSMC manager connection on a worker's loop (the loop's side of the protocol).

Bytes go to the sans-I/O ``RequestParser``; each whole request is checked
(credentials) and handed to a transfer thread (``RsmcNode.execute``), one at a time in
arrival order; the reply is written as the socket takes it, a LOG file by sendfile.
A request refused by the parser (400, 413, 501) is answered, then the connection
closes: the next request's start cannot be found reliably. The client leaving
cancels the running request between two objects. Nothing here blocks.
"""
import collections
import errno
import logging
import os
import time

from storage.loop import READ, WRITE
from storage.loopconn import WOULD_BLOCK, LoopConnection
from storage.rsmc.commands import Response
from storage.rsmc.parser import RequestParser, RsmcError

log = logging.getLogger(__name__)

READ_SIZE = 64 << 10
MAX_QUEUED = 8  # whole requests waiting behind the running one (then reading stops)
BUSY_REASON = "too many transfers in progress, retry later"


class RsmcService:
    """What every RSMC connection of a worker shares: ``node`` (RsmcNode), ``admin``
    (AdminAuth or None), ``needs_auth`` (the listener is not on loopback),
    ``server`` (the Server header)."""

    def __init__(self, node, admin, needs_auth, server):
        self.node = node
        self.admin = admin
        self.needs_auth = needs_auth
        self.server = server


class RsmcConnection(LoopConnection):
    def __init__(self, sock, peer, loop, worker, service):
        super().__init__(sock, peer, loop, worker, service)
        self.parser = RequestParser()
        self.queue = collections.deque()
        self.out = collections.deque()  # bytes, or [fd, offset, left, release]
        self.running = None  # the request a thread works on
        self.cancelled = False
        self.closing = False  # close once the output is out
        self.eof = False  # the manager is done sending (half-close): answer, then close
        self.deadline = time.monotonic() + self.config.timeout_idle

    def __repr__(self):
        return f"<RsmcConnection {self.peer}>"

    @property
    def idle(self):
        """Between requests: a stopping worker may close it."""
        return self.running is None and not self.queue and not self.out \
            and self.parser.idle

    # ---- reading -------------------------------------------------------------------
    def on_readable(self):
        data = self._recv(READ_SIZE)
        if data is None:
            return
        if not data:
            if self.idle or not self.parser.idle:  # nothing owed, or half a request
                self.close()
                return
            self.eof = True  # answer what was asked, then close
            self._watch(0)
            return
        for event in self.parser.feed(data):
            if isinstance(event, RsmcError):
                log.info("rsmc %s: refused: %s", self.peer, event.reason)
                self.queue.append(Response(event.code, event.reason, close=True))
                self._watch(0)
                break
            self.queue.append(event)
        if self.parser.buffered:
            self.deadline = time.monotonic() + self.config.timeout_read_header
        if len(self.queue) >= MAX_QUEUED:
            self._watch(0)
        self._next()

    # ---- running requests ----------------------------------------------------------
    def _next(self):
        """Start the next queued request when nothing runs and nothing is being sent."""
        if self.running is not None or self.out or self.closed or not self.queue:
            return
        item = self.queue.popleft()
        if isinstance(item, Response):
            self._reply(item)
            return
        refusal = self._refusal(item)
        if refusal is not None:
            self._reply(refusal)
            return
        pool = self.worker.transfers
        if pool.full:
            self._reply(Response(503, BUSY_REASON))
            return
        self.running = item
        node = self.service.node
        pool.submit(lambda: node.execute(item, lambda: self.cancelled), self._finished)

    def _refusal(self, request):
        service = self.service
        if not service.needs_auth:
            return None
        if service.admin is None:
            return Response(403, "admin operations are disabled: no admin_htdigest")
        result = service.admin.check(request.command, request.argument,
                                     request.headers.get("authorization"))
        if result.ok:
            return None
        log.info("rsmc %s %s from %s refused: %s", request.command, request.argument,
                 self.peer, result.reason)
        return Response(401, "Unauthorized", headers=service.admin.challenge(result.stale))

    def _finished(self, future):
        request, self.running = self.running, None
        try:
            response = future.result()
        except Exception:
            log.exception("rsmc %s %s failed", request.command, request.argument)
            response = Response(500, "internal error")
        if self.closed:
            if response.file is not None:
                response.file[3]()
            return
        log.info("rsmc %s %s %s from %s: %d", request.command, request.argument,
                 f"({len(request.items)} objects)" if request.items else "", self.peer,
                 response.code)
        self._reply(response)

    # ---- writing -------------------------------------------------------------------
    def _reply(self, response):
        self.out.append(response.head_and_body(self.service.server))
        if response.file is not None:
            self.out.append(list(response.file))
        if response.close:
            self.closing = True
        self.deadline = time.monotonic() + self.config.timeout_write_reply
        self._flush()

    def on_writable(self):
        self._flush()

    def _flush(self):
        out = self.out
        try:
            while out:
                item = out[0]
                if type(item) is list:  # [fd, offset, left, release]
                    if item[2]:
                        sent = os.sendfile(self.fd, item[0], item[1], item[2])
                        if sent == 0:
                            raise OSError(errno.EIO, "the log file shrank")
                        item[1] += sent
                        item[2] -= sent
                    if not item[2]:
                        out.popleft()
                        item[3]()
                    continue
                sent = self.sock.send(item)
                if sent < len(item):
                    out[0] = memoryview(item)[sent:]
                    raise BlockingIOError()
                out.popleft()
        except WOULD_BLOCK:
            self._watch(WRITE)
            return
        except OSError as exc:
            log.debug("rsmc %s: sending failed: %s", self.peer, exc)
            self.close()
            return
        if self.closing or (self.eof and not self.queue and self.running is None):
            self.close()
            return
        self.deadline = time.monotonic() + self.config.timeout_idle
        self._watch(READ if len(self.queue) < MAX_QUEUED and not self.eof else 0)
        self._next()

    # ---- life cycle ----------------------------------------------------------------
    def on_timeout(self):
        if self.running is not None and not self.out:
            self.deadline = time.monotonic() + self.config.timeout_idle  # its own timeouts
            return
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.cancelled = True  # a running request stops between two objects
        for item in self.out:
            if type(item) is list:
                item[3]()
        self.out.clear()
        self.queue.clear()
        self._detach()
