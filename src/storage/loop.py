"""A single-threaded event loop on stdlib ``selectors`` (epoll on Linux).

The loop only dispatches: every registered object has ``on_readable()`` /
``on_writable()`` and ``close()``. An exception in one handler closes that object,
never the loop. Deadlines are swept once per tick rather than kept in a heap: a
connection's deadline moves on every state change, and a sweep of a few thousand
objects per second costs less than re-heaping on each move.
"""
import heapq
import logging
import selectors
import time

log = logging.getLogger(__name__)
READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


class EventLoop:
    def __init__(self, tick=0.5):
        self.selector = selectors.DefaultSelector()
        self.tick = tick
        self.timed = set()  # objects with a ``deadline`` and ``on_timeout()``
        self._timers = []
        self._seq = 0
        self._stop = False

    def register(self, obj, events):
        self.selector.register(obj.fileno(), events, obj)

    def modify(self, obj, events):
        self.selector.modify(obj.fileno(), events, obj)

    def unregister(self, obj):
        try:
            self.selector.unregister(obj.fileno())
        except (KeyError, ValueError):
            pass

    def call_later(self, delay, callback):
        """Run ``callback()`` after ``delay`` seconds (monotonic)."""
        self._seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._seq, callback))

    def stop(self):
        self._stop = True

    def run(self):
        select = self.selector.select
        next_sweep = time.monotonic() + self.tick
        while not self._stop:
            timeout = self.tick
            if self._timers:
                timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            for key, mask in select(timeout):
                obj = key.data
                try:
                    if mask & READ:
                        obj.on_readable()
                    if mask & WRITE and not obj.closed:
                        obj.on_writable()
                except Exception:
                    log.exception("handler failed; closing %r", obj)
                    _safe_close(obj)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, callback = heapq.heappop(self._timers)
                try:
                    callback()
                except Exception:
                    log.exception("timer callback failed")
            if now >= next_sweep:
                next_sweep = now + self.tick
                for obj in [o for o in self.timed if o.deadline <= now]:
                    try:
                        obj.on_timeout()
                    except Exception:
                        log.exception("timeout handler failed")
                        _safe_close(obj)

    def close(self):
        self.selector.close()


def _safe_close(obj):
    try:
        obj.close()
    except Exception:
        log.exception("close failed for %r", obj)
