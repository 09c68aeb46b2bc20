"""The loop's side of a ``TaskReply`` (SEND): the task runs on the worker's transfer
threads; this object sends the reply around it on the connection.

Timeline of one reply:
- The task starts on a transfer thread; the connection keeps reading its socket only
  to notice the client leaving (which cancels the task).
- If the outcome arrives before anything was sent, it is the whole reply and its
  status is the status line (a 409 after the target's HEAD, a refused target, ...).
- Otherwise the head goes out with status 200 when the task reports progress (the
  transfer began) or ``interval`` seconds passed, whichever comes first; then a
  newline chunk every ``interval`` seconds.
- The outcome's lines and trailers end the chunked body.
A stepped task (feed SEND) returns ``TaskWait`` until it is done: each step runs on a
pool thread, the thread is free between steps, and a step may send the head at once
with headers of its own.
A chunked reply whose outcome is an error ends the connection (``Connection: close``
in the head when the status is known; closed after the trailers otherwise): some
clients read an error body by Content-Length only and would desynchronize.
"""
import logging
import time

from storage.fast import load
from storage.http.reply import TaskOutcome, TaskWait
from storage.http.response import build_head

chunked = load("chunked")
log = logging.getLogger(__name__)

KEEPALIVE = chunked.encode_chunk(b"\n")
BUSY_REASON = "too many transfers in progress, retry later"


class TaskStream:
    """One running TaskReply on ``conn`` (a storage.http.connection.Connection)."""

    __slots__ = ("conn", "task", "pool", "head_sent", "done")

    def __init__(self, conn, task, pool):
        self.conn = conn
        self.task = task
        self.pool = pool
        self.head_sent = False
        self.done = False

    def start(self):
        """Submit the task; False (nothing started) when the pool's queue is full."""
        if self.pool is None or self.pool.full:
            return False
        self._submit()
        self.conn.loop.call_later(self.task.interval, self._tick)
        return True

    def _submit(self):
        if not self.done and not self.conn.closed:
            self.pool.submit(lambda: self.task.run(self._progress), self._finished)

    # ---- events (loop thread) ------------------------------------------------------
    def _progress(self):  # on the transfer thread
        self.pool.post(self._started)

    def _started(self):
        if not self.done and not self.head_sent and not self.conn.closed:
            self._send_head(200, keep_alive=True)

    def _tick(self):
        if self.done or self.conn.closed:
            return
        if not self.head_sent:
            self._send_head(200, keep_alive=True)
        self.conn.stream_write(KEEPALIVE, last=False)
        self.conn.loop.call_later(self.task.interval, self._tick)

    def _finished(self, future):
        try:
            outcome = future.result()
        except Exception:
            log.exception("transfer task failed")
            outcome = TaskOutcome(500, ["internal error"])
        if self.done or self.conn.closed:
            return
        if type(outcome) is TaskWait:
            if outcome.headers is not None and not self.head_sent:
                self._send_head(200, keep_alive=True, extra=outcome.headers)
            self.conn.loop.call_later(outcome.after, self._submit)
            return
        self.done = True
        error = outcome.status >= 400
        if not self.head_sent:
            self._send_head(outcome.status, keep_alive=not error, extra=outcome.headers)
        tail = b"".join(chunked.encode_chunk((line + "\n").encode("utf-8", "replace"))
                        for line in outcome.lines)
        trailers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in outcome.trailers]
        exchange = self.conn.exchange
        if exchange is not None:
            exchange.reason = outcome.lines[-1] if outcome.lines else ""
            if error:  # the access log and the counters tell a failed SEND apart
                exchange.status = outcome.status
        self.conn.stream_write(tail + chunked.encode_last(trailers), last=True,
                               close=error)

    def cancel(self):
        """The connection ends before the outcome (client gone, timeout, shutdown)."""
        if not self.done:
            self.done = True
            try:
                self.task.cancel()
            except Exception:
                log.exception("cancelling a transfer task failed")

    # ---- output --------------------------------------------------------------------
    def _send_head(self, status, keep_alive, extra=()):
        conn = self.conn
        self.head_sent = True
        keep_alive = keep_alive and conn.keep_alive
        conn.keep_alive = keep_alive
        headers = list(self.task.headers)
        headers += extra
        exchange = conn.exchange
        if exchange is not None:
            if exchange.reqid:
                headers.append(("X-Oio-Req-Id", exchange.reqid))
            exchange.status = status
            exchange.ttfb = time.monotonic()
        head = build_head(status, headers, keep_alive=keep_alive, chunked=True,
                          fields=self.task.fields)
        conn.stream_write(head, last=False, counted=False)
