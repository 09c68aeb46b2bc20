"""Node-wide request counters shared by the worker processes.

A shared anonymous mapping is created before the workers fork; each worker owns one row
and only ever writes its own row, so no cross-process atomics are needed. ``/stat``
and the access log's in-flight figures sum the rows: they speak for the whole node.
"""
import mmap

KINDS = ("put", "post", "copy", "get", "head", "del", "stat", "info", "raw", "other")
COUNTERS = (
    ["req.time"] + [f"req.time.{k}" for k in KINDS]
    + ["req.hits"] + [f"req.hits.{k}" for k in KINDS]
    + ["rep.hits.2xx", "rep.hits.4xx", "rep.hits.5xx", "rep.hits.other",
       "rep.hits.403", "rep.hits.404", "rep.bread", "rep.bwritten"]
)
GAUGES = ("inflight.put", "inflight.get", "inflight.del", "connections")
_NAMES = COUNTERS + list(GAUGES)
INDEX = {name: i for i, name in enumerate(_NAMES)}
ROW = len(_NAMES)

_REQ_HITS = INDEX["req.hits"]
_REP_2XX, _REP_4XX, _REP_5XX, _REP_OTHER = (INDEX[f"rep.hits.{f}"]
                                            for f in ("2xx", "4xx", "5xx", "other"))
_REP_403, _REP_404 = INDEX["rep.hits.403"], INDEX["rep.hits.404"]
_BREAD, _BWRITTEN = INDEX["rep.bread"], INDEX["rep.bwritten"]
_TIME = {k: INDEX[f"req.time.{k}"] for k in KINDS}
_HITS = {k: INDEX[f"req.hits.{k}"] for k in KINDS}
_INFLIGHT = {"put": INDEX["inflight.put"], "get": INDEX["inflight.get"],
             "del": INDEX["inflight.del"]}


class SharedStats:
    """All workers' rows. Create before fork; call ``row(i)`` in worker i."""

    def __init__(self, workers):
        self.workers = workers
        self._map = mmap.mmap(-1, max(1, workers) * ROW * 8)
        self.values = memoryview(self._map).cast("q")

    def row(self, index):
        return WorkerStats(self, index)

    def total(self, name):
        i = INDEX[name]
        values = self.values
        return sum(values[w * ROW + i] for w in range(self.workers))

    def totals(self):
        values = self.values
        return {name: sum(values[w * ROW + i] for w in range(self.workers))
                for name, i in INDEX.items()}


class WorkerStats:
    """One worker's writable row, with node-wide reads."""

    def __init__(self, shared, index):
        self.shared = shared
        self.base = index * ROW
        self.values = shared.values

    def start(self, kind):
        i = _INFLIGHT.get(kind)
        if i is not None:
            self.values[self.base + i] += 1

    def finish(self, kind, status, micros, bytes_in, bytes_out):
        v = self.values
        b = self.base
        i = _INFLIGHT.get(kind)
        if i is not None:
            v[b + i] -= 1
        v[b] += micros
        v[b + _TIME[kind]] += micros
        v[b + _REQ_HITS] += 1
        v[b + _HITS[kind]] += 1
        family = status // 100
        if family == 2:
            v[b + _REP_2XX] += 1
        elif family == 4:
            v[b + _REP_4XX] += 1
            if status == 403:
                v[b + _REP_403] += 1
            elif status == 404:
                v[b + _REP_404] += 1
        elif family == 5:
            v[b + _REP_5XX] += 1
        else:
            v[b + _REP_OTHER] += 1
        v[b + _BREAD] += bytes_out  # the reference's names: bytes read from the volume
        v[b + _BWRITTEN] += bytes_in  # and bytes written to it

    def gauge_add(self, name, delta):
        self.values[self.base + INDEX[name]] += delta

    def inflight(self):
        """(put, get, del) in flight on the whole node."""
        total = self.shared.total
        return total("inflight.put"), total("inflight.get"), total("inflight.del")
