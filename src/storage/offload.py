"""Blocking byte-moving jobs on a few threads, their results handed back to the loop.

A body pump (recv -> MD5 -> write) releases the GIL for its whole run, so on a thread
it uses a second core, and a write that the kernel throttles (dirty page writeback)
no longer stalls every other connection of the worker. The loop learns of finished
jobs through a pipe it watches; callbacks always run on the loop thread.
"""
import collections
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from storage.loop import READ

log = logging.getLogger(__name__)


class Offloader:
    def __init__(self, loop, threads, buffer_size, name="pump", max_pending=None):
        self.loop = loop
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self.pending = 0  # jobs submitted whose callback has not run yet
        self.max_pending = max_pending  # None: no bound (see ``full``)
        self.buffer_size = buffer_size
        self._local = threading.local()
        self._done = collections.deque()
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.closed = False
        loop.register(self, READ)

    def fileno(self):
        return self._rfd

    def buffer(self):
        """This thread's reusable receive buffer (allocated once per thread)."""
        buf = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = bytearray(self.buffer_size)
        return buf

    @property
    def full(self):
        """True when no job may be submitted now: closed, or ``max_pending`` jobs
        running or waiting for a thread."""
        return self.closed or (self.max_pending is not None
                               and self.pending >= self.max_pending)

    def submit(self, job, callback):
        """Run ``job()`` on a thread; then ``callback(future)`` on the loop thread."""
        self.pending += 1
        future = self.pool.submit(job)
        future.add_done_callback(lambda fut: self._finished(callback, fut))

    def post(self, callback):
        """Run ``callback()`` on the loop thread soon; callable from any thread."""
        self._wake(callback, None)

    def _finished(self, callback, future):  # on the pool thread
        self._wake(callback, future)

    def _wake(self, callback, future):
        if self.closed:  # the worker is exiting: nobody will run it
            return
        self._done.append((callback, future))
        try:
            os.write(self._wfd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def on_readable(self):
        try:
            os.read(self._rfd, 65536)
        except BlockingIOError:
            pass
        while self._done:
            callback, future = self._done.popleft()
            try:
                if future is None:
                    callback()
                else:
                    self.pending -= 1
                    callback(future)
            except Exception:
                log.exception("offloaded job callback failed")

    def close(self):
        if not self.closed:
            self.closed = True
            self.loop.unregister(self)
            self.pool.shutdown(wait=False, cancel_futures=True)
            os.close(self._rfd)
            os.close(self._wfd)
