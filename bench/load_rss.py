"""Peak memory of a server's processes under many concurrent large PUTs.

`run_rss_row` opens `uploads` connections at once, each sending one PUT of
`size` bytes (the same preallocated body as a memoryview), while a sampler
thread reads VmRSS/VmHWM from /proc/<pid>/status of the server process and all
its descendants every `interval` seconds.
"""

import hashlib
import threading
import time
from dataclasses import dataclass, field

from load_put import Connection, PutPlan, PutStats, chunk_id, make_body, request_head
from load_servers import memory_kib, process_tree


@dataclass
class MemoryPeaks:
    """Per-pid peaks in KiB: the largest sampled VmRSS and the last VmHWM seen."""

    rss_kib: dict = field(default_factory=dict)
    hwm_kib: dict = field(default_factory=dict)
    samples: int = 0

    def sample(self, root_pid):
        for pid in process_tree(root_pid):
            mem = memory_kib(pid)
            if mem is None:
                continue
            rss, hwm = mem
            self.rss_kib[pid] = max(rss, self.rss_kib.get(pid, 0))
            self.hwm_kib[pid] = max(hwm, self.hwm_kib.get(pid, 0))
        self.samples += 1

    def peak_mib(self, pids=None):
        """Largest VmHWM (lifetime peak RSS) over `pids` (default: all seen), in MiB."""
        pids = self.hwm_kib if pids is None else pids
        return max((self.hwm_kib[p] for p in pids if p in self.hwm_kib), default=0) / 1024.0


def workers_of(root_pid, pids):
    """The worker pids: the descendants of root_pid, or root_pid itself if it has none."""
    kids = [p for p in pids if p != root_pid]
    return kids or [root_pid]


def run_rss_row(plan, server_pid, uploads=64, timeout=180.0, interval=0.05):
    """Run `uploads` concurrent PUTs of plan.size bytes; return (PutStats, MemoryPeaks).

    All connections are opened first, then released together, so the uploads
    overlap. Bounded: every socket operation times out after `timeout` s.
    """
    body = make_body(plan.size, plan.seed)
    view = memoryview(body)
    md5 = hashlib.md5(body).hexdigest().upper()
    peaks = MemoryPeaks()
    peaks.sample(server_pid)
    stats, lock = PutStats(), threading.Lock()
    go = threading.Event()
    done = threading.Event()

    def upload(i):
        mine = PutStats()
        conn = Connection(plan.port, timeout)
        try:
            conn.open()
            go.wait(timeout)
            cid = chunk_id(plan.run_tag, 0, i, 0)
            t0 = time.perf_counter()
            status = conn.put(request_head(plan, cid, md5), view)
            mine.statuses[status] = 1
            if status in plan.ok_statuses:
                mine.ok, mine.bytes_sent = 1, plan.size
                mine.latencies.append(time.perf_counter() - t0)
                mine.ids.append(cid)
            else:
                mine.errors = 1
        except (OSError, ValueError) as exc:
            mine.errors = 1
            mine.error_samples.append("%s: %s" % (type(exc).__name__, exc))
        finally:
            conn.close()
            with lock:
                stats.merge(mine)

    def sampler():
        while not done.wait(interval):
            peaks.sample(server_pid)

    threads = [threading.Thread(target=upload, args=(i,), daemon=True) for i in range(uploads)]
    watcher = threading.Thread(target=sampler, daemon=True)
    for t in threads:
        t.start()
    watcher.start()
    time.sleep(0.2)  # let every thread connect before the common start
    t0 = time.monotonic()
    go.set()
    for t in threads:
        t.join(2 * timeout + 5)
    stats.seconds = max(1e-9, time.monotonic() - t0)
    done.set()
    watcher.join(5)
    peaks.sample(server_pid)
    return stats, peaks


__all__ = ["MemoryPeaks", "PutPlan", "run_rss_row", "workers_of"]
