"""Pure-Python twin of ``_fastpath.replylog``: the bookkeeping of a reply the GET/HEAD
fast path answers (``storage.pure.getcore``, ``storage.pure.lane``): a worker's row of
the node-wide counters, and the access line (``storage.accesslog.format_line``).
"""
import time

from storage.accesslog import format_line

__all__ = ["AccessLog", "Counters"]

_STATS = ("req.time", "req.time.get", "req.time.head", "req.hits", "req.hits.get",
          "req.hits.head", "rep.hits.2xx", "rep.bread", "inflight.get")


class AccessLog:
    """Where a core and its replies write their access lines."""

    def __init__(self, buffer, pid, counters):
        self.buffer = buffer
        self.pid = pid
        self.counters = counters

    def write(self, reply, micros):
        """The line of a reply (the core's last one, or a Reply) that is over."""
        req = reply.request
        put, get, delete = self.counters.node_inflight()
        try:
            line = format_line(self.pid, req.headers.get("host") or "-", reply.peer or "-",
                               req.method, reply.status, micros, reply.bytes_out, 0,
                               reply.reqid, req.path,
                               int((reply.ttfb - reply.started) * 1e6), put, get, delete,
                               reply.account, reply.bucket)
            self.buffer.add(line)
        except Exception:
            pass  # the reply is out and counted: only its line is lost


class Counters:
    """This worker's row of the node-wide counters, shared by a core and its replies."""

    def __init__(self, stats, slots):
        self.stats = None
        if stats is None:
            return
        view = memoryview(stats)
        if view.readonly:
            raise TypeError("stats must be writable")
        if view.nbytes % 8:
            raise ValueError("stats must be a buffer of int64")
        view = view.cast("B").cast("q")
        base = slots["base"]
        if base < 0 or base + max(slots[n] for n in _STATS) >= len(view):
            raise ValueError("stats slots out of the buffer")
        self.stats = view
        self.slots = {n: base + slots[n] for n in _STATS}
        # the in-flight figures: every row of the buffer given "row", else this one
        self.row_len = slots.get("row") or 0
        self.inflight_of = {n: slots.get(f"inflight.{n}", -1) for n in ("put", "get", "del")}
        if self.row_len:
            self.rows = len(view) // self.row_len
            if max(slots[n] for n in _STATS) >= self.row_len \
                    or max(self.inflight_of.values()) >= self.row_len:
                raise ValueError("stats slots out of the row")
        else:
            self.rows = 1
            if base + max(self.inflight_of.values()) >= len(view):
                raise ValueError("stats slots out of the buffer")
            self.inflight_of = {n: base + i if i >= 0 else -1
                                for n, i in self.inflight_of.items()}

    def count(self, head, started, bytes_out):
        """-> the reply's microseconds."""
        micros = int((time.monotonic() - started) * 1e6)
        if self.stats is None:
            return micros
        kind = "head" if head else "get"
        v, s = self.stats, self.slots
        v[s["req.time"]] += micros
        v[s["req.hits"]] += 1
        v[s["rep.hits.2xx"]] += 1
        v[s["rep.bread"]] += bytes_out
        v[s["req.time." + kind]] += micros
        v[s["req.hits." + kind]] += 1
        return micros

    def inflight(self, delta):
        if self.stats is not None:
            self.stats[self.slots["inflight.get"]] += delta

    def node_inflight(self):
        """(put, get, del) in flight (on the node, given "row")."""
        if self.stats is None:
            return 0, 0, 0
        v, size = self.stats, self.row_len
        return tuple(sum(v[w * size + i] for w in range(self.rows)) if i >= 0 else 0
                     for i in self.inflight_of.values())
