"""The worker's keep-alive lane: plain connections served by the compiled core alone.

Once the compiled GET path (``getcore.GetCore``) has answered a request of a plain
connection and nothing of it is buffered, the connection leaves the worker's loop for
the lane (``lane.Lane``), an epoll set the compiled code owns. While the lane has
members the worker waits in it: the lane's set holds the loop's own epoll set too,
and the compiled wait reads the ready members' request heads, has the core answer
them and resumes the replies the sockets could not take at once, returning to Python
only when the loop's file descriptors are ready, a member needs the Python path, a
signal arrives or a timer is due. No Python runs per request while the members only
ask for what the core answers, which cuts a GET's CPU down to the syscalls it makes.

Whatever the core does not answer alone comes back to the connection with the bytes
the lane read (``Connection.from_lane``), and the Python path, the spec, answers it
as if it had read them itself. The replies the lane sends are counted and logged by
the compiled core (``storage.accesslog``): nothing comes back to Python per reply.
Deadlines (idle, writing a reply) are kept by the lane and swept here with the
loop's other deadlines.

``STORAGE_NODE_GET_LANE=off`` keeps every connection in the loop (the compiled path
still answers there).
"""
import logging
import os
import time

from storage.fast import load
from storage.loop import safe_close

lanes = load("lane")
log = logging.getLogger(__name__)


def enabled():
    return os.environ.get("STORAGE_NODE_GET_LANE", "on") != "off"


class GetLane:
    """The worker's lane (``lane.Lane``) and the loop's wait: while the lane has
    members, the worker waits in the lane (``wait``), which returns to Python only
    when the loop's own file descriptors are ready, a member needs the Python path,
    a signal arrives, or a timer is due."""

    def __init__(self, worker, core):
        config = worker.config
        self.worker = worker
        self.app = worker.app
        self.loop = worker.loop
        self.lane = lanes.Lane(core, worker.buffer, config.headers_buffer_size,
                               config.timeout_idle, config.timeout_write_reply)
        self.lane.attach(self.loop.fileno())
        self.closed = False
        self.deadline = 0.0  # swept on every tick: the members' deadlines are in the lane
        self.loop.waiter = self.wait
        self.loop.timed.add(self)

    def adopt(self, conn):
        self.lane.adopt(conn.fd, conn, conn.peer)

    def release(self, conn):
        """Take ``conn`` out -> the reply it was still sending (to abort) or None."""
        return self.lane.release(conn.fd)

    def busy(self, conn):
        return self.lane.busy(conn.fd)

    def wait(self, timeout):
        """The loop's wait -> the timeout left for its own poll: ``timeout`` when
        the lane is empty (nothing waited), 0 when the loop's file descriptors are
        ready, None when they are not (skip the poll)."""
        lane = self.lane
        if not len(lane):
            return timeout
        # what the Python path checks per request, as of now
        lane.serving = self.app.healthy
        lane.keep_alive_ok = not self.worker.stopping
        ready, out = lane.wait(timeout)
        for owner, code, payload in out:
            try:
                owner.from_lane(code, payload)
            except Exception:
                log.exception("handler failed; closing %r", owner)
                safe_close(owner)
        return 0 if ready else None

    def on_timeout(self):
        for owner in self.lane.expired(time.monotonic()):
            try:
                owner.on_timeout()
            except Exception:
                log.exception("timeout handler failed")
                safe_close(owner)

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self.loop.waiter == self.wait:
            self.loop.waiter = None
        self.loop.timed.discard(self)
        self.lane.close()

