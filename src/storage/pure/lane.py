"""Pure-Python twin of ``_fastpath.lane``: keep-alive connections the GET/HEAD fast
path (``storage.pure.getcore``) answers alone, between the worker loop's wake-ups.
"""
import os
import select
import time

from storage.pure.getcore import DECLINED, PENDING, GetCore

__all__ = ["CLOSE", "HANDBACK", "Lane"]

HANDBACK, CLOSE = 0, 2  # what Lane.wait() reports
LANE_BATCH = 64
HEAD_READ = 16384


class _Member:
    __slots__ = ("fd", "owner", "peer", "reply", "deadline")

    def __init__(self, fd, owner, peer, deadline):
        self.fd = fd
        self.owner = owner
        self.peer = peer
        self.reply = None
        self.deadline = deadline


class Lane:
    """Keep-alive connections served by the core alone (see the compiled ``Lane``):
    an epoll set of members, plus the attached file descriptor of the worker's loop;
    ``wait()`` serves the ready members until that one is ready or a member needs the
    Python path."""

    def __init__(self, core, buffer, head_limit, idle_timeout, write_timeout):
        if not isinstance(core, GetCore):
            raise TypeError("core must be a GetCore")
        if len(memoryview(buffer)) < 1:
            raise ValueError("the receive buffer is empty")
        self.core = core
        self.buffer = buffer
        self._read_size = min(HEAD_READ, len(memoryview(buffer)))
        self.head_limit = head_limit
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.serving = True
        self.keep_alive_ok = True
        self._members = {}
        self._outer = -1
        self._epoll = select.epoll()

    def fileno(self):
        if self._epoll is None:
            raise ValueError("the lane is closed")
        return self._epoll.fileno()

    def __len__(self):
        return len(self._members)

    def __contains__(self, fd):
        return fd in self._members

    def close(self):
        self._members.clear()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def adopt(self, fd, owner, peer=None):
        if self._epoll is None:
            raise ValueError("the lane is closed")
        if fd in self._members:
            raise KeyError(f"file descriptor {fd} is in the lane already")
        self._epoll.register(fd, select.EPOLLIN)
        self._members[fd] = _Member(fd, owner, peer, time.monotonic() + self.idle_timeout)

    def release(self, fd):
        member = self._members.pop(fd, None)
        if member is None:
            return None
        self._unwatch(fd)
        return member.reply

    def busy(self, fd):
        member = self._members.get(fd)
        return member is not None and member.reply is not None

    def expired(self, now):
        return [m.owner for m in self._members.values() if m.deadline <= now]

    def attach(self, fd):
        if self._epoll is None:
            raise ValueError("the lane is closed")
        if self._outer >= 0:
            raise ValueError("a file descriptor is attached already")
        self._epoll.register(fd, select.EPOLLIN)
        self._outer = fd

    def wait(self, timeout):
        out = []
        outer = False
        if self._epoll is None:
            return outer, out
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ms = 0 if left <= 0 else int(left * 1000) + 1
            try:
                events = self._epoll.poll(ms / 1000, LANE_BATCH)
            except InterruptedError:
                break
            for fd, _ in events:
                if fd == self._outer:
                    outer = True
                    continue
                member = self._members.get(fd)
                if member is None:
                    continue
                if member.reply is not None:
                    self._write(member, out)
                else:
                    self._read(member, out)
            if outer or out or not events or ms == 0:
                break
        return outer, out

    def _unwatch(self, fd):
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed already: the kernel dropped it

    def _leave(self, member):
        del self._members[member.fd]
        self._unwatch(member.fd)

    def _read(self, member, out):
        fd = member.fd
        try:
            data = os.read(fd, self._read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._leave(member)
            out.append((member.owner, CLOSE, None))
            return
        got = len(data)
        outcome = DECLINED
        if self.serving and 4 <= got <= self.head_limit and data[0] != 13 \
                and data.find(b"\r\n\r\n") == got - 4:
            outcome = self.core.serve(fd, data, got, self.keep_alive_ok, member.peer)
        if outcome == DECLINED:
            self._leave(member)
            out.append((member.owner, HANDBACK, data))
            return
        core = self.core
        if outcome == PENDING:
            member.reply, core.pending = core.pending, None
            member.deadline = time.monotonic() + self.write_timeout
            self._epoll.modify(fd, select.EPOLLOUT)
            return
        self._ended(member, core.keep_alive, out)

    def _write(self, member, out):
        reply = member.reply
        if reply._push() == PENDING:
            return
        member.reply = None
        if reply.keep_alive:
            try:
                self._epoll.modify(member.fd, select.EPOLLIN)
            except OSError:
                reply.keep_alive = False
        self._ended(member, reply.keep_alive, out)

    def _ended(self, member, keep_alive, out):
        if not keep_alive:
            self._leave(member)
            out.append((member.owner, CLOSE, None))
            return
        member.deadline = time.monotonic() + self.idle_timeout
