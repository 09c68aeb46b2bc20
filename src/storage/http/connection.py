"""One HTTP/1.1 server connection: reads request heads, streams bodies, writes replies.

The connection owns its socket and output queue and asks the loop for write readiness
only while output is pending. Request semantics live in the application object
(``app.begin(request, conn)``), which answers with a ``Reply`` or, for a request body to
store, an upload object the connection streams into:

    upload.direct, upload.open(), upload.hasher
                               -> fast path: socket -> hash -> file in one C call
    upload.feed(data)          -> plain path (chunked pieces, head leftovers, uploads
                                  that transform their body, sockets the fast path
                                  cannot read such as TLS)
    upload.finish(trailers, n) -> Reply once the whole body arrived
    upload.fail(exc) -> Reply  /  upload.abort()  when something went wrong

Errors while reading a body are answered after the body is drained (bounded), so the
keep-alive connection survives; a client that announced ``Expect: 100-continue`` and
was refused is answered at once and the connection closed.
"""
import errno
import logging
import os
import socket
import time

from storage.errors import StorageError
from storage.fast import load
from storage.http.head import HttpError, find_head_end, parse_head
from storage.http.pumps import WOULD_BLOCK, chunked_pump, feed_pump, pump_for
from storage.http.reply import (SMALL_FILE, STREAM_PIECE, BlockingReply, Exchange, FileBody,
                                Reply, StreamBody, TaskReply)
from storage.http.response import build_head
from storage.http.taskstream import BUSY_REASON, TaskStream
from storage.loop import READ, WRITE

chunked = load("chunked")
FAST_DONE = load("getcore").DONE
FAST_PENDING = load("getcore").PENDING
LANE_CLOSE = load("lane").CLOSE
streamio = load("streamio")
log = logging.getLogger(__name__)

# S_LANE: see GetLane; S_TASK: a TaskReply runs (see TaskStream)
S_HEAD, S_BODY, S_DRAIN, S_WRITE, S_CLOSED, S_LANE, S_TASK = range(7)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
DRAIN_LIMIT = 64 << 20  # bytes we are willing to read and discard to keep a connection
HEAD_READ = 16 << 10  # bytes asked for per recv while reading a request head
MSG_MORE = getattr(socket, "MSG_MORE", 0)


def _run_job(job):
    """A BlockingReply job's Reply; a crash in it is a 500, never a dead worker."""
    try:
        return job()
    except Exception:
        log.exception("request handler failed")
        return Reply(500, body=b"internal error\n", reason="internal error")


class Connection:
    def __init__(self, sock, peer, loop, app, worker):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.loop = loop
        self.app = app
        self.worker = worker  # shared per-worker state: buffer, config, connection set
        self.config = worker.config
        self.closed = False
        self.state = S_HEAD
        self.inbuf = bytearray()
        self._scan = 0
        self.out = []
        self.exchange = None
        self.upload = None
        self.decoder = None
        self.remaining = 0  # body bytes still expected (Content-Length bodies)
        self.received = 0
        self.keep_alive = True
        self.pending_reply = None
        self.task = None  # the TaskStream of a running TaskReply
        self._events = READ  # what the loop watches for us (0: out of it)
        self.busy = False  # an offloaded job holds our fds
        self.served = 0  # replies sent (a lane reports them only while logging)
        self.direct_io = True  # the raw fd carries the bytes (false under TLS)
        self._more = MSG_MORE  # send() flag when more output follows (TLS: none)
        self._deferred = None  # what to do once it hands them back (close, timeout)
        # the compiled GET/HEAD path (_fastpath.getcore), None where it cannot write
        self.fast_get = getattr(app, "fast_get", None)
        self.fast_reply = None  # the rest of a reply the compiled path is sending
        # the worker's keep-alive lane (storage.http.lane), which serves this connection
        # between requests once the compiled path has answered one of them
        self.lane = getattr(worker, "lane", None)
        self.deadline = time.monotonic() + self.config.timeout_idle
        loop.register(self, READ)
        loop.timed.add(self)

    def fileno(self):
        return self.fd

    def __repr__(self):
        return f"<Connection {self.peer} state={self.state}>"

    # ---- reading -------------------------------------------------------------------
    def on_readable(self):
        if self.state == S_HEAD:
            self._read_head()
        elif self.state == S_BODY:
            self._read_body()
        elif self.state == S_DRAIN:
            self._drain()
        elif self.state == S_WRITE:
            # a pipelined request or EOF while we write: peek only to notice EOF
            self._read_more()
        elif self.state == S_TASK:
            self._read_during_task()

    def _read_more(self):
        buf = self.worker.buffer
        try:
            # A head read stays small: body bytes read here take the slow path (copied
            # through inbuf) instead of the pump.
            n = self.sock.recv_into(buf, min(HEAD_READ, len(buf)))
        except WOULD_BLOCK:
            return True
        except OSError:
            self.close()
            return False
        data = memoryview(buf)[:n]
        if not n:
            if self.state == S_WRITE:
                self.keep_alive = False  # finish writing, then close
                self._watch(WRITE)
                return False
            self.close()
            return False
        if len(self.inbuf) + len(data) > self.config.headers_buffer_size + (1 << 20):
            self._watch(WRITE)  # stop reading until the reply is out
        self.inbuf += data
        return True

    def _read_head(self):
        if not self.inbuf:
            # The common case: one read holds exactly one whole head. Parse it from the
            # receive buffer instead of staging it in inbuf.
            buf = self.worker.buffer
            try:
                n = self.sock.recv_into(buf, min(HEAD_READ, len(buf)))
            except WOULD_BLOCK:
                return
            except OSError:
                self.close()
                return
            if not n:
                self.close()
                return
            if n <= self.config.headers_buffer_size and buf.find(b"\r\n\r\n", 0, n) == n - 4 \
                    and buf[0] != 13:
                self._scan = 0
                fast = self.fast_get
                if fast is not None and self.app.healthy:
                    done = fast.serve(self.fd, buf, n,
                                      self.config.http_keepalive and not self.worker.stopping,
                                      self.peer)
                    if done:
                        self._fast_served(fast, done)
                        return
                self._start_request(bytes(memoryview(buf)[:n]))
                return
            self.inbuf += memoryview(buf)[:n]
            self._try_head()
            return
        if not self._read_more():
            return
        self._try_head()

    def _try_head(self):
        if self._scan == 0 and self.inbuf.startswith(b"\r\n"):
            # RFC 9112 2.2: ignore empty lines before a request line (old clients add
            # one after a POST body); bounded by the head size limit like any byte.
            stripped = self.inbuf.lstrip(b"\r\n")
            if len(self.inbuf) - len(stripped) <= self.config.headers_buffer_size:
                self.inbuf = bytearray(stripped)
                if not self.inbuf:
                    return
        end = find_head_end(self.inbuf, max(0, self._scan - 3))
        limit = self.config.headers_buffer_size
        if end < 0:
            self._scan = len(self.inbuf)
            if self._scan > limit:
                self._refuse(HttpError(431, "request head too large"))
            elif self._scan:
                if self.exchange is None:
                    self.deadline = time.monotonic() + self.config.timeout_read_header
                    self.exchange = Exchange(None, time.monotonic())
            return
        if end > limit:
            self._refuse(HttpError(431, "request head too large"))
            return
        if end == len(self.inbuf):  # one request, nothing pipelined
            head = bytes(self.inbuf)
            self.inbuf.clear()
        else:
            head = bytes(self.inbuf[:end])
            del self.inbuf[:end]
        self._scan = 0
        self._start_request(head)

    def _start_request(self, head):
        """Parse a whole head (bytes) and dispatch the request."""
        started = self.exchange.started if self.exchange else time.monotonic()
        try:
            request = parse_head(head)
        except HttpError as exc:
            self.exchange = Exchange(None, started)
            self._refuse(exc)
            return
        self.exchange = Exchange(request, started)
        self.keep_alive = request.keep_alive and self.config.http_keepalive \
            and not self.worker.stopping
        self._dispatch(request)

    def _fast_served(self, core, done):
        """Bookkeeping once the compiled GET path answered a request (DONE: all sent
        and counted) or began to (PENDING: its ``pending`` Reply sends the rest on
        each writable event, and counts the exchange when it is out)."""
        if done == FAST_DONE:
            self._fast_finished(core, core.keep_alive)
            return
        self.fast_reply = core.pending
        self.keep_alive = core.keep_alive
        self.state = S_WRITE
        self.deadline = time.monotonic() + self.config.timeout_write_reply
        self._watch(WRITE)

    def _fast_finished(self, reply, keep_alive):
        """A reply of the compiled path is out, counted and logged: the next request
        (buffered already, or on its way: the lane waits for it) or the end of the
        connection."""
        self.served += 1
        if not keep_alive:
            self.close()
            return
        self.deadline = time.monotonic() + self.config.timeout_idle
        self.state = S_HEAD
        if self.inbuf:
            self._watch(READ)
            self._try_head()
        elif self.lane is not None:
            self.loop.unregister(self)
            self._events = 0
            self.loop.timed.discard(self)
            self.state = S_LANE
            self.lane.adopt(self)
        else:
            self._watch(READ)

    def from_lane(self, code, payload):
        """What the lane reports: the end of the connection (CLOSE: the peer left, or
        a reply ended it), or bytes it read and leaves to the Python path (HANDBACK:
        the connection is ours again). The replies it sent are counted and logged."""
        if code == LANE_CLOSE:
            self.close()  # out of the lane already: release() finds nothing
            return
        if self.state != S_LANE:  # closed meanwhile
            return
        self.state = S_HEAD
        self.deadline = time.monotonic() + self.config.timeout_idle
        self.loop.register(self, READ)
        self._events = READ
        self.loop.timed.add(self)
        self.inbuf += payload
        self._try_head()

    def _fast_resume(self, reply):
        """A writable event while the compiled path's reply is pending."""
        if reply.resume(self.fd) == FAST_PENDING:
            return
        self.fast_reply = None
        self._fast_finished(reply, reply.keep_alive and self.keep_alive)

    def _refuse(self, exc):
        """A request we cannot even frame: reply and close."""
        if self.exchange is None:
            self.exchange = Exchange(None, time.monotonic())
        self.keep_alive = False
        self.inbuf.clear()
        self.send_reply(Reply(exc.status, body=(exc.reason + "\n").encode(), close=True,
                              reason=exc.reason))

    def _dispatch(self, request):
        has_body = request.chunked or bool(request.content_length)
        self.received = 0
        self.deadline = self.exchange.started + self.config.timeout_read_request
        try:
            result = self.app.begin(request, self)
        except Exception:
            log.exception("request handler failed")
            result = Reply(500, body=b"internal error\n", reason="internal error")
        if type(result) is BlockingReply:
            offloader = self.worker.offloader
            if offloader is None or has_body:  # no threads, or a body to read after
                result = _run_job(result.job)
            else:
                self.loop.unregister(self)
                self._events = 0
                self.busy = True
                offloader.submit(result.job, self._job_done)
                return
        if type(result) is TaskReply:
            if has_body:
                self._reply_after_body(Reply(400, body=b"unexpected request body\n",
                                             reason="unexpected body"))
            else:
                self._start_task(result)
            return
        if isinstance(result, Reply):
            if has_body and result.status < 300:
                result = Reply(400, body=b"unexpected request body\n", reason="unexpected body")
            if has_body:
                self._reply_after_body(result)
            else:
                self.send_reply(result)
            return
        # an upload: stream the body into it
        self.upload = result
        if request.chunked:
            self.decoder = chunked.ChunkedDecoder()
        else:
            self.remaining = request.content_length or 0
        if request.expect_continue and not self.inbuf:
            self._send_now(CONTINUE)
        self.state = S_BODY
        if self.inbuf:
            leftover, self.inbuf = self.inbuf, bytearray()
            self._consume(leftover)
        if self.state == S_BODY and not request.chunked and self.remaining == 0:
            self._body_complete([])

    def _reply_after_body(self, reply, body_started=False):
        """Answer an error while a request body is unread: drain it (bounded) first."""
        request = self.exchange.request
        if request.expect_continue and not body_started and not self.inbuf:
            reply.close = True
            self.keep_alive = False
            self.send_reply(reply)
            return
        if request.chunked:
            if self.decoder is None:
                self.decoder = chunked.ChunkedDecoder()
        elif not body_started:
            self.remaining = request.content_length or 0
        if not request.chunked and self.remaining > DRAIN_LIMIT:
            reply.close = True
            self.keep_alive = False
            self.send_reply(reply)
            return
        self.pending_reply = reply
        self.state = S_DRAIN
        if self.inbuf:
            leftover, self.inbuf = self.inbuf, bytearray()
            self._discard(leftover)
        if self.state == S_DRAIN and not request.chunked and self.remaining == 0:
            self._drain_done()

    # ---- body ----------------------------------------------------------------------
    def _read_body(self):
        upload = self.upload
        offloader = self.worker.offloader
        if self.decoder is not None and offloader is not None:
            # A chunked body: decode, hash and write on an I/O thread as well.
            self.loop.unregister(self)
            self._events = 0
            self.busy = True
            sock, decoder = self.sock, self.decoder
            offloader.submit(
                lambda: chunked_pump(sock, offloader.buffer(), decoder, upload.feed),
                self._chunked_done)
            return
        if self.decoder is None and not (upload.direct and self.direct_io) \
                and offloader is not None:
            # Body bytes the C pump cannot move (TLS, a compressing upload): recv and
            # feed on an I/O thread, out of the loop like the fast path.
            self.loop.unregister(self)
            self._events = 0
            self.busy = True
            sock, limit = self.sock, self.remaining
            offloader.submit(
                lambda: feed_pump(sock, offloader.buffer(), upload.feed, limit),
                self._pump_done)
            return
        if self.decoder is None and upload.direct and self.direct_io:
            if offloader is not None:
                # The connection sits out of the loop while a thread opens the chunk
                # file (first time) and pumps the body into it.
                self.loop.unregister(self)
                self._events = 0
                self.busy = True
                sockfd, hasher, limit = self.fd, upload.hasher, self.remaining
                offloader.submit(
                    lambda: pump_for(sockfd, upload.open(), offloader.buffer(), hasher, limit),
                    self._pump_done)
                return
            try:
                result = streamio.pump(self.fd, upload.open(), self.worker.buffer,
                                       upload.hasher, self.remaining)
            except (OSError, StorageError) as exc:
                result = exc
            self._pumped(result)
            return
        n = self._recv_body()
        if n is None:
            return
        if n == 0:
            self._client_gone()
            return
        self._consume(memoryview(self.worker.buffer)[:n])

    def _back_from_thread(self):
        """An I/O thread handed our fds back: act on a close or timeout that came
        meanwhile (-> False), else watch the socket again (-> True)."""
        self.busy = False
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            deferred()
            return False
        self.loop.register(self, READ)
        self._events = READ
        return True

    def _pump_done(self, future):
        """Back on the loop thread after an offloaded pump."""
        try:
            result = future.result()
        except (OSError, StorageError) as exc:
            result = exc
        if self._back_from_thread():
            self._pumped(result)

    def _chunked_done(self, future):
        """Back on the loop thread after an offloaded chunked pump."""
        if not self._back_from_thread():
            return
        try:
            wire, body, status, leftover = future.result()
        except chunked.ChunkedError as exc:
            self.upload.abort()
            self.upload = None
            self.keep_alive = False
            self.send_reply(Reply(400, body=f"{exc}\n".encode(), close=True, reason=str(exc)))
            return
        except StorageError as exc:
            self.exchange.bytes_in += getattr(exc, "received", 0)
            self._upload_failed(exc)
            return
        except OSError:
            self._client_gone()
            return
        self.exchange.bytes_in += wire
        self.received += body
        if status == streamio.LIMIT:  # the body ended
            if leftover:
                self.inbuf += leftover
            self._body_complete(self.decoder.trailers)
        elif status == streamio.EOF:
            self._client_gone()

    def _job_done(self, future):
        """Back on the loop thread after a BlockingReply's job."""
        reply = _run_job(future.result)
        if self._back_from_thread():
            self.send_reply(reply)
        elif reply.file is not None:  # closed or timed out meanwhile: drop the reply
            reply.file.release()

    def _pumped(self, result):
        if isinstance(result, (streamio.DiskWriteError, StorageError)):
            self._upload_failed(result, in_pump=True)  # disk full, chunk taken, ...
            return
        if isinstance(result, OSError):
            self._client_gone()
            return
        moved, status = result
        self.received += moved
        self.remaining -= moved
        self.exchange.bytes_in += moved
        if self.remaining == 0:
            self._body_complete([])
        elif status == 2:
            self._client_gone()

    def _consume(self, data):
        """Body bytes that did not come through pump (head leftovers, chunked)."""
        self.exchange.bytes_in += len(data)
        try:
            if self.decoder is not None:
                pieces, used = self.decoder.feed(data)
                for piece in pieces:
                    self.upload.feed(piece)
                    self.received += len(piece)
                if self.decoder.done:
                    if used < len(data):
                        self.inbuf += data[used:]
                        self.exchange.bytes_in -= len(data) - used
                    self._body_complete(self.decoder.trailers)
                return
            take = min(len(data), self.remaining)
            if take:
                self.remaining -= take  # counted first: a failed feed must not re-drain it
                self.received += take
                self.upload.feed(data[:take])
            if take < len(data):
                self.inbuf += data[take:]
                self.exchange.bytes_in -= len(data) - take
            if self.remaining == 0:
                self._body_complete([])
        except chunked.ChunkedError as exc:
            self.upload.abort()
            self.upload = None
            self.keep_alive = False
            self.send_reply(Reply(400, body=f"{exc}\n".encode(), close=True, reason=str(exc)))
        except Exception as exc:  # the write side failed (disk full, I/O error)
            self._upload_failed(exc)

    def _body_complete(self, trailers):
        upload, self.upload, self.decoder = self.upload, None, None
        try:
            reply = upload.finish(trailers, self.received)
        except Exception:
            log.exception("finishing an upload failed")
            upload.abort()
            reply = Reply(500, body=b"internal error\n", reason="internal error")
        self.send_reply(reply)

    def _upload_failed(self, exc, in_pump=False):
        """The write side failed (disk full, I/O error): drain what the client still
        sends (bounded), answer, then close."""
        upload, self.upload = self.upload, None
        reply = upload.fail(exc)
        reply.close = True
        self.keep_alive = False
        if self.decoder is not None:
            self.decoder = None
            self.send_reply(reply)
            return
        if in_pump:
            taken = getattr(exc, "received", 0)
            self.remaining -= taken
            self.exchange.bytes_in += taken
        self._reply_after_body(reply, body_started=True)

    def _client_gone(self):
        """The client disconnected (or reset) before the whole body arrived: 499.
        close() aborts the upload and records the exchange."""
        self.exchange.status = 499
        self.exchange.reason = "client closed the connection mid-body"
        self.close()

    # ---- draining ------------------------------------------------------------------
    def _recv_body(self):
        """Body bytes into the worker buffer: their count, 0 at EOF or on a socket
        error, None when the socket would block."""
        try:
            return self.sock.recv_into(self.worker.buffer)
        except WOULD_BLOCK:
            return None
        except OSError:
            return 0

    def _drain(self):
        n = self._recv_body()
        if n is None:
            return
        if n == 0:
            self.keep_alive = False
            self._drain_done()
            return
        self._discard(memoryview(self.worker.buffer)[:n])

    def _discard(self, data):
        self.exchange.bytes_in += len(data)
        if self.decoder is not None:
            try:
                _, used = self.decoder.feed(data)
            except chunked.ChunkedError:
                self.keep_alive = False
                self._drain_done()
                return
            if self.decoder.done:
                if used < len(data):
                    self.inbuf += data[used:]
                self._drain_done()
            return
        take = min(len(data), self.remaining)
        self.remaining -= take
        if take < len(data):
            self.inbuf += data[take:]
        if self.remaining == 0:
            self._drain_done()

    def _drain_done(self):
        reply, self.pending_reply, self.decoder = self.pending_reply, None, None
        if not self.keep_alive:
            reply.close = True
        self.send_reply(reply)

    # ---- a TaskReply ---------------------------------------------------------------
    def _start_task(self, task):
        pool = self.worker.transfers
        if task.light and self.worker.offloader is not None:
            pool = self.worker.offloader
        stream = TaskStream(self, task, pool)
        if not stream.start():
            task.cancel()  # never run: it releases what it holds
            self.send_reply(Reply(503, [("Retry-After", "5")],
                                  body=(BUSY_REASON + "\n").encode(), reason=BUSY_REASON))
            return
        self.task = stream
        self.state = S_TASK
        self.deadline = time.monotonic() + self.config.timeout_write_reply

    def _read_during_task(self):
        """While a task runs, read only to notice the client leaving (which cancels
        it); a pipelined request waits in ``inbuf`` (bounded: reading stops)."""
        buf = self.worker.buffer
        try:
            n = self.sock.recv_into(buf, min(HEAD_READ, len(buf)))
        except WOULD_BLOCK:
            return
        except OSError:
            n = 0
        if not n:
            self._client_gone()
            return
        self.inbuf += memoryview(buf)[:n]
        if len(self.inbuf) > self.config.headers_buffer_size:
            self._watch(0)

    def stream_write(self, data, last, close=False, counted=True):
        """Bytes of a TaskReply (TaskStream): sent now or queued; ``last`` ends the
        exchange once they are out (``close``: and the connection). ``counted``
        False for the head: the log and counters report body bytes."""
        if not counted and self.exchange is not None:
            self.exchange.bytes_out -= len(data)
        if last:
            self.task = None
            self.state = S_WRITE
            if close:
                self.keep_alive = False
        self.deadline = time.monotonic() + self.config.timeout_write_reply
        self.out.append(data)
        if self._events & WRITE:
            return  # the socket is full: on_writable sends it
        self._flush()

    # ---- writing -------------------------------------------------------------------
    def _send_now(self, data):
        try:
            self.sock.send(data)
        except OSError:
            pass

    def send_reply(self, reply):
        """Queue ``reply`` and start writing it."""
        exchange = self.exchange
        request = exchange.request if exchange else None
        if reply.close or self.worker.stopping:
            self.keep_alive = False
        head_only = request is not None and request.method == "HEAD"
        length = reply.length
        if length is None:
            length = reply.file.remaining if reply.file is not None else len(reply.body)
        headers = reply.headers
        if exchange is not None and exchange.reqid:
            headers = list(headers)
            headers.append(("X-Oio-Req-Id", exchange.reqid))
        head = build_head(reply.status, headers, length, self.keep_alive,
                          fields=reply.fields)
        now = time.monotonic()
        if exchange is not None:
            exchange.status = reply.status
            exchange.reason = reply.reason
            exchange.ttfb = now
            exchange.bytes_out = -len(head)  # the log and counters report body bytes
        self.state = S_WRITE
        self.deadline = now + self.config.timeout_write_reply
        out = self.out
        file = reply.file
        if head_only:
            if file is not None:
                file.release()
            out.append(head)
        elif file is not None:
            if type(file) is FileBody and file.remaining <= SMALL_FILE:
                try:
                    data = os.pread(file.fd, file.remaining, file.offset)
                finally:
                    file.release()
                if len(data) != file.remaining:
                    log.error("file shrank while being served")
                    self.close()
                    return
                out.append(head + data)
            else:
                out.append(head)
                out.append(file)
        else:
            out.append(head + reply.body if reply.body else head)
        if len(out) == 1 and type(out[0]) is bytes:
            # the usual small reply: one send, no queue walk
            try:
                sent = self.sock.send(out[0])
            except WOULD_BLOCK:
                sent = 0
            except OSError:
                out.clear()
                self._finish_exchange()
                self.close()
                return
            if sent == len(out[0]):
                out.clear()
                if exchange is not None:
                    exchange.bytes_out += sent
                self._reply_done()
                return
            if exchange is not None:
                exchange.bytes_out += sent
            out[0] = memoryview(out[0])[sent:]
        self._flush()

    def on_writable(self):
        reply = self.fast_reply
        if reply is not None:
            self._fast_resume(reply)
            return
        self._flush()

    def _flush(self):
        out = self.out
        sock = self.sock
        sent = 0
        try:
            while out:
                item = out[0]
                if type(item) is FileBody:
                    n = self._send_file(item)
                    if n == 0:
                        raise OSError(errno.EIO, "file shrank during sendfile")
                    item.offset += n
                    item.remaining -= n
                    sent += n
                    if item.remaining == 0:
                        out.pop(0)
                        item.release()
                elif type(item) is StreamBody:
                    if not item.pending:
                        item.pending = item.read(min(item.remaining, STREAM_PIECE))
                        if not item.pending:
                            raise OSError(errno.EIO, "body stream ended early")
                    n = sock.send(item.pending)
                    item.pending = memoryview(item.pending)[n:]
                    item.remaining -= n
                    sent += n
                    if item.remaining <= 0:
                        out.pop(0)
                        item.release()
                else:
                    flags = self._more if len(out) > 1 else 0
                    n = sock.send(item, flags)
                    sent += n
                    if n < len(item):
                        out[0] = memoryview(item)[n:]
                    else:
                        out.pop(0)
        except WOULD_BLOCK:
            if self.exchange is not None:
                self.exchange.bytes_out += sent
            self._watch(WRITE)
            return
        except OSError as exc:
            log.debug("sending a reply to %s failed: %s", self.peer, exc)
            if self.exchange is not None:
                self.exchange.bytes_out += sent
            self._finish_exchange()
            self.close()
            return
        if self.exchange is not None:
            self.exchange.bytes_out += sent
        if self.task is not None:  # all sent so far; the task goes on
            if len(self.inbuf) <= self.config.headers_buffer_size:
                self._watch(READ)
            else:
                self._watch(0)
            return
        self._reply_done()

    def _send_file(self, item):
        """Send part of a FileBody; -> bytes sent (0: the file ended early)."""
        return os.sendfile(self.fd, item.fd, item.offset, item.remaining)

    def _reply_done(self):
        self._finish_exchange()
        if not self.keep_alive:
            self.close()
            return
        self.state = S_HEAD
        self.deadline = time.monotonic() + self.config.timeout_idle
        self._watch(READ)
        if self.inbuf:
            self._try_head()

    def _watch(self, events):
        """Ask the loop for ``events``; a syscall only when it changes."""
        if self._events != events:
            self.loop.modify(self, events)
            self._events = events

    def _finish_exchange(self):
        self.served += 1
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            self.app.record(exchange, self)

    # ---- life cycle ----------------------------------------------------------------
    @property
    def idle(self):
        """Between two requests of a keep-alive connection: a stopping worker closes it.
        A new connection is never idle: its first request is on its way (a worker
        that stops right after accepting it still serves it)."""
        if self.state == S_LANE:
            return not self.lane.busy(self)
        return self.served and self.state == S_HEAD and not self.inbuf \
            and self.exchange is None

    def on_timeout(self):
        if self.busy:  # a thread is using our fds: act when it hands them back
            self._deferred = self.on_timeout
            return
        if self.state in (S_BODY, S_DRAIN) and self.exchange is not None:
            self.exchange.status = 408  # close() aborts the upload and records it
            self.exchange.reason = "timeout reading the request body"
        self.close()

    def close(self):
        if self.closed:
            return
        if self.busy:  # a thread is using our fds: close when it hands them back
            self._deferred = self.close
            return
        if self.state == S_LANE:
            reply = self.lane.release(self)
        else:
            reply, self.fast_reply = self.fast_reply, None
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.closed = True
        self.state = S_CLOSED
        exchange, self.exchange = self.exchange, None
        if exchange is not None and exchange.request is not None:
            exchange.status = exchange.status or 499
            self.app.record(exchange, self)
        if reply is not None:  # cut short: counted and logged as the Python path does
            reply.abort()
        if self.upload is not None:
            self.upload.abort()
            self.upload = None
        for item in self.out:
            if type(item) is FileBody or type(item) is StreamBody:
                item.release()
        self.out.clear()
        self.loop.unregister(self)
        self.loop.timed.discard(self)
        self.worker.connection_closed(self)
        try:
            self.sock.close()
        except OSError:
            pass
