"""The worker's event loop (storage.loop) on real socket pairs: dispatch by watched
events, hang-ups, failing handlers, unregistering during a turn, timers and the
deadline sweep."""
import socket
import time

import pytest

from storage.loop import READ, WRITE, EventLoop


class Probe:
    """A registered object that records its calls, and can stop the loop."""

    def __init__(self, loop, sock, stop_after=1, on_read=None, on_write=None):
        self.loop = loop
        self.sock = sock
        self.calls = []
        self.closed = False
        self.stop_after = stop_after
        self._on_read = on_read
        self._on_write = on_write
        self.deadline = float("inf")

    def fileno(self):
        return self.sock.fileno()

    def _record(self, what, hook):
        self.calls.append(what)
        if hook is not None:
            hook(self)
        if len(self.calls) >= self.stop_after:
            self.loop.stop()

    def on_readable(self):
        self._record("read", self._on_read)

    def on_writable(self):
        self._record("write", self._on_write)

    def on_timeout(self):
        self._record("timeout", None)

    def close(self):
        self.closed = True
        self.loop.unregister(self)


@pytest.fixture
def loop():
    lp = EventLoop(tick=0.05)
    yield lp
    lp.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def run_bounded(loop, seconds=5.0):
    loop.call_later(seconds, loop.stop)  # a broken loop fails the test, never hangs it
    started = time.monotonic()
    loop.run()
    loop._stop = False
    return time.monotonic() - started


def test_dispatch_follows_the_watched_events(loop, pair):
    a, b = pair
    probe = Probe(loop, a)
    loop.register(probe, WRITE)
    run_bounded(loop)
    assert probe.calls == ["write"]
    loop.modify(probe, READ)
    b.send(b"x")
    run_bounded(loop)
    assert probe.calls == ["write", "read"]
    loop.modify(probe, READ | WRITE)
    probe.stop_after = 3
    run_bounded(loop)
    assert probe.calls == ["write", "read", "read", "write"]  # readable first


def test_nothing_ready_nothing_called(loop, pair):
    a, _ = pair
    probe = Probe(loop, a)
    loop.register(probe, READ)
    assert run_bounded(loop, 0.2) >= 0.19
    assert probe.calls == []


@pytest.mark.parametrize("events, call", [(READ, "read"), (WRITE, "write")])
def test_hang_up_wakes_the_watched_handler(loop, pair, events, call):
    a, b = pair
    if events == WRITE:  # fill the pipe so only the hang-up can wake a writer
        try:
            while True:
                a.send(b"f" * 65536)
        except BlockingIOError:
            pass
    probe = Probe(loop, a)
    loop.register(probe, events)
    b.close()
    run_bounded(loop)
    assert probe.calls == [call]


def test_a_failing_handler_closes_its_object_only(loop, pair):
    a, b = pair
    c, d = socket.socketpair()
    try:
        def boom(_):
            raise RuntimeError("handler bug")
        bad = Probe(loop, a, stop_after=99, on_write=boom)
        good = Probe(loop, c, stop_after=2)
        loop.register(bad, WRITE)
        loop.register(good, WRITE)
        run_bounded(loop)
        assert bad.closed and bad.calls == ["write"]
        assert good.calls == ["write", "write"] and not good.closed
    finally:
        c.close()
        d.close()


def test_unregistered_during_the_turn_is_skipped(loop, pair):
    a, b = pair
    c, d = socket.socketpair()
    try:
        first = Probe(loop, a, stop_after=99)
        second = Probe(loop, c, stop_after=99)

        def drop_the_other(me):
            loop.unregister(second if me is first else first)
            loop.stop()
        first._on_write = second._on_write = drop_the_other
        loop.register(first, WRITE)
        loop.register(second, WRITE)
        run_bounded(loop)
        assert len(first.calls) + len(second.calls) == 1
    finally:
        c.close()
        d.close()


def test_registration_errors(loop, pair):
    a, _ = pair
    probe = Probe(loop, a)
    with pytest.raises(KeyError):
        loop.modify(probe, READ)
    loop.register(probe, READ)
    with pytest.raises(KeyError):
        loop.register(probe, WRITE)
    loop.unregister(probe)
    loop.unregister(probe)  # twice: nothing happens


def test_unregister_after_close_frees_the_number(loop):
    a, b = socket.socketpair()
    probe = Probe(loop, a)
    loop.register(probe, READ)
    number = a.fileno()
    a.close()  # the socket says -1 now: the loop finds it by identity
    loop.unregister(probe)
    c, d = socket.socketpair()
    try:
        if c.fileno() != number:
            c, d = d, c
        assert c.fileno() == number
        again = Probe(loop, c)
        loop.register(again, READ)  # no "already registered"
        d.send(b"x")
        run_bounded(loop)
        assert again.calls == ["read"] and probe.calls == []
    finally:
        b.close()
        c.close()
        d.close()


def test_timers_in_order_and_a_failing_one_is_contained(loop):
    seen = []
    loop.call_later(0.06, lambda: seen.append(2))
    loop.call_later(0.02, lambda: seen.append(1))
    loop.call_later(0.04, lambda: 1 / 0)
    loop.call_later(0.08, loop.stop)
    run_bounded(loop)
    assert seen == [1, 2]


def test_deadline_sweep(loop, pair):
    a, _ = pair
    late = Probe(loop, a)
    late.deadline = time.monotonic() + 0.1
    on_time = Probe(loop, a)
    loop.timed.update((late, on_time))
    elapsed = run_bounded(loop)
    assert late.calls == ["timeout"] and on_time.calls == []
    assert 0.09 <= elapsed < 2


def test_a_waiter_waits_in_place_of_the_poll(loop, pair):
    """A waiter (the keep-alive lane) is called with the timeout each turn: None skips
    the loop's own poll, a number is the timeout of that poll."""
    a, b = pair
    probe = Probe(loop, a)
    loop.register(probe, READ)
    seen = []

    def waiter(timeout):
        seen.append(timeout)
        if len(seen) == 1:
            b.send(b"x")  # ready now, but this turn does not poll
            return None
        return 0

    loop.waiter = waiter
    loop.run()
    assert probe.calls == ["read"] and len(seen) == 2
    assert all(0 <= t <= loop.tick for t in seen)
    assert loop.fileno() == loop._epoll.fileno()


def test_a_failing_waiter_leaves_the_loop_polling(loop, pair):
    a, b = pair
    probe = Probe(loop, a)
    loop.register(probe, READ)

    def waiter(timeout):
        raise RuntimeError("the waiter failed")

    loop.waiter = waiter
    b.send(b"x")
    loop.run()
    assert probe.calls == ["read"]
