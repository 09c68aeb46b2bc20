"""A single-threaded event loop on the stdlib's epoll (``select.epoll``).

The loop only dispatches: every registered object has ``fileno()``,
``on_readable()`` / ``on_writable()``, ``close()`` and a ``closed`` flag. An
exception in one handler closes that object, never the loop. Deadlines are swept
once per tick rather than kept in a heap: a connection's deadline moves on every
state change, and a sweep of a few thousand objects per second costs less than
re-heaping on each move.

It talks to ``select.epoll`` itself rather than through ``selectors.EpollSelector``.
The selector keeps a key namedtuple per file descriptor and rebuilds it on every
``modify``, and looks a key up per event. For a big GET that is two modifies and
two or three events per request, and counting the bytecodes a worker ran showed
that this bookkeeping was half of all the Python executed per request. Each of
those wake-ups runs with cold caches, after the client's copies have evicted the
interpreter's data. Here one dict maps a file descriptor to ``(object, events)``.
The event masks are the ``selectors`` ones (``READ``, ``WRITE``), and a hang-up
or an error wakes whichever of the two handlers the object is watching for, as
with the selector.

A ``waiter`` may wait in place of the loop's own poll: the worker's keep-alive lane
(``storage.http.lane``) waits in its compiled epoll set, which holds this loop's
descriptor (``fileno()``), and tells the loop whether to poll its own set this turn.
"""
import heapq
import logging
import select
import selectors
import time

log = logging.getLogger(__name__)
READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE
_EPOLL = {0: 0, READ: select.EPOLLIN, WRITE: select.EPOLLOUT,
          READ | WRITE: select.EPOLLIN | select.EPOLLOUT}
_WAKES_READER = ~select.EPOLLOUT  # input, hang-up or error
_WAKES_WRITER = ~select.EPOLLIN  # room to write, hang-up or error


class EventLoop:
    def __init__(self, tick=0.5):
        self._epoll = select.epoll()
        self._watched = {}  # fd -> (object, events)
        self.tick = tick
        self.timed = set()  # objects with a ``deadline`` and ``on_timeout()``
        self._timers = []
        self._seq = 0
        self._stop = False
        # waits in place of our poll when set (storage.http.lane): waiter(timeout) ->
        # the timeout left for our own poll, None to skip it this turn
        self.waiter = None

    def fileno(self):
        """The epoll set's own file descriptor (readable when a watched one is ready)."""
        return self._epoll.fileno()

    def register(self, obj, events):
        """Watch ``obj`` for ``events`` (READ, WRITE, both, or 0 for nothing yet)."""
        fd = obj.fileno()
        if fd in self._watched:
            raise KeyError(f"file descriptor {fd} is already registered")
        self._epoll.register(fd, _EPOLL[events])
        self._watched[fd] = (obj, events)

    def modify(self, obj, events):
        fd = obj.fileno()
        if fd not in self._watched:
            raise KeyError(f"file descriptor {fd} is not registered")
        self._epoll.modify(fd, _EPOLL[events])
        self._watched[fd] = (obj, events)

    def unregister(self, obj):
        """Stop watching ``obj``; nothing happens if it is not watched."""
        try:
            fd = obj.fileno()
        except (OSError, ValueError):
            fd = -1
        entry = self._watched.get(fd)
        if entry is None or entry[0] is not obj:
            # closed already (a closed socket says -1): find it by identity, so that
            # its number is free for the next file the process opens
            fd = next((f for f, (o, _) in self._watched.items() if o is obj), None)
            if fd is None:
                return
        del self._watched[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed already: the kernel dropped it from the set

    def call_later(self, delay, callback):
        """Run ``callback()`` after ``delay`` seconds (monotonic)."""
        self._seq += 1
        heapq.heappush(self._timers, (time.monotonic() + delay, self._seq, callback))

    def stop(self):
        self._stop = True

    def run(self):
        poll = self._epoll.poll
        watched = self._watched
        timers = self._timers
        monotonic = time.monotonic
        next_sweep = monotonic() + self.tick
        while not self._stop:
            timeout = self.tick
            if timers:
                timeout = max(0.0, min(timeout, timers[0][0] - monotonic()))
            waiter = self.waiter
            if waiter is not None:
                try:
                    timeout = waiter(timeout)
                except Exception:
                    log.exception("waiting failed")
            try:
                ready = poll(timeout) if timeout is not None else ()
            except InterruptedError:
                ready = ()
            for fd, event in ready:
                entry = watched.get(fd)
                if entry is None:  # unregistered by an earlier handler of this turn
                    continue
                obj, events = entry
                try:
                    if event & _WAKES_READER and events & READ:
                        obj.on_readable()
                    if event & _WAKES_WRITER and events & WRITE and not obj.closed:
                        obj.on_writable()
                except Exception:
                    log.exception("handler failed; closing %r", obj)
                    safe_close(obj)
            now = monotonic()
            while timers and timers[0][0] <= now:
                _, _, callback = heapq.heappop(timers)
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
                        safe_close(obj)

    def close(self):
        self._epoll.close()
        self._watched.clear()


def safe_close(obj):
    """close() ``obj``; a failure is logged, never raised."""
    try:
        obj.close()
    except Exception:
        log.exception("close failed for %r", obj)
