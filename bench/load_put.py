"""PUT load client for bench/load.py.

wrk's Lua PUT builds each request body in Lua and is client-bound, so PUTs go
through this client instead: `procs` processes x `conns` threads, one
keep-alive connection per thread, each request the header block then one
preallocated body sent as a memoryview (no per-request copy in user space).
Every request gets a fresh chunk id; every status is checked. Bounded by a
duration and by a request count.
"""

import hashlib
import math
import multiprocessing
import os
import socket
import threading
import time
from dataclasses import dataclass, field

MSG_MORE = getattr(socket, "MSG_MORE", 0)


@dataclass(frozen=True)
class PutPlan:
    """What one PUT row sends. Picklable, so worker processes can rebuild requests.

    `flavor` is "rawx" (our node: /ID and the X-oio-Chunk-Meta-* headers, with
    the body's MD5 as Chunk-Hash so the node hashes and verifies every byte) or
    "dav" (nginx: /ABC/ID, plain PUT).
    """

    port: int
    flavor: str
    size: int
    ok_statuses: tuple
    run_tag: str  # 8 hex chars, distinct per row and server: ids never repeat
    seed: int = 1


def make_body(size, seed=1):
    """Deterministic incompressible bytes of `size` (same for every process)."""
    out = bytearray()
    block = hashlib.sha512(b"bench-body-%d" % seed).digest()
    counter = 0
    while len(out) < size:
        out += hashlib.shake_256(block + counter.to_bytes(8, "little")).digest(1 << 16)
        counter += 1
    return bytes(out[:size])


def chunk_id(run_tag, proc, conn, seq):
    """64 upper-case hex chars, unique per (run_tag, proc, conn, seq)."""
    return ("%s%04X%04X%048X" % (run_tag, proc, conn, seq)).upper()


def request_head(plan, cid, body_md5):
    """The request line and headers (bytes) of one PUT of chunk `cid`."""
    if plan.flavor == "rawx":
        lines = [
            "PUT /%s HTTP/1.1" % cid,
            "Host: 127.0.0.1:%d" % plan.port,
            "Content-Length: %d" % plan.size,
            "X-oio-Chunk-Meta-Content-Storage-Policy: SINGLE",
            "X-oio-Chunk-Meta-Content-Chunk-Method: plain/cca=md5",
            "X-oio-Chunk-Meta-Chunk-Pos: 0",
            "X-oio-Chunk-Meta-Full-Path: ACCT/CONT/obj/1/%s" % cid[-32:],
            "X-oio-Chunk-Meta-Chunk-Hash: %s" % body_md5,
        ]
    elif plan.flavor == "dav":
        lines = [
            "PUT /%s/%s HTTP/1.1" % (cid[:3], cid),
            "Host: 127.0.0.1:%d" % plan.port,
            "Content-Length: %d" % plan.size,
        ]
    else:
        raise ValueError("unknown flavor %r" % plan.flavor)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class Connection:
    """One blocking keep-alive HTTP/1.1 connection to 127.0.0.1:port."""

    def __init__(self, port, timeout):
        self.port = port
        self.timeout = timeout
        self.sock = None
        self.rfile = None

    def open(self):
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=65536)

    def close(self):
        if self.rfile is not None:
            self.rfile.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.rfile = None

    def put(self, head, body):
        """Send head + body, read the reply; return its status (reply body dropped)."""
        if self.sock is None:
            self.open()
        self.sock.sendall(head, MSG_MORE)
        self.sock.sendall(body)
        return self.read_reply()

    def read_reply(self):
        line = self.rfile.readline(65537)
        if not line:
            raise ConnectionError("server closed the connection")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError("bad status line %r" % line[:100])
        status = int(parts[1])
        length = 0
        close = parts[0] == b"HTTP/1.0"
        for _ in range(200):  # bounded header count
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        else:
            raise ConnectionError("too many reply headers")
        if length:
            if len(self.rfile.read(length)) != length:
                raise ConnectionError("short reply body")
        if close:
            self.close()
        return status


@dataclass
class PutStats:
    """Aggregated outcome of a PUT run. Latencies in seconds."""

    ok: int = 0
    errors: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    latencies: list = field(default_factory=list)
    statuses: dict = field(default_factory=dict)
    error_samples: list = field(default_factory=list)
    ids: list = field(default_factory=list)

    def merge(self, other):
        self.ok += other.ok
        self.errors += other.errors
        self.bytes_sent += other.bytes_sent
        self.seconds = max(self.seconds, other.seconds)
        self.latencies.extend(other.latencies)
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        self.error_samples.extend(other.error_samples[: 5 - len(self.error_samples)])
        self.ids.extend(other.ids)

    @property
    def req_per_s(self):
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self):
        """Payload of successful PUTs, 10**6 bytes per second."""
        return self.bytes_sent / self.seconds / 1e6 if self.seconds else 0.0

    def percentile_ms(self, pct):
        if not self.latencies:
            return float("nan")
        lat = sorted(self.latencies)
        # Nearest rank: the smallest latency with at least pct% of samples <= it.
        idx = min(len(lat) - 1, max(0, math.ceil(pct / 100.0 * len(lat)) - 1))
        return lat[idx] * 1e3


def _conn_loop(plan, body, md5, proc, conn_no, start_at, deadline, budget, budget_lock,
               stats, lock, timeout):
    """One thread: PUT until the deadline passes or the shared budget is spent."""
    mine = PutStats()
    conn = Connection(plan.port, timeout)
    seq = 0
    try:
        try:
            conn.open()
        except OSError as exc:
            mine.errors += 1
            mine.error_samples.append("connect: %s" % exc)
            return
        while time.monotonic() < start_at:
            time.sleep(min(0.01, max(0.0, start_at - time.monotonic())))
        while time.monotonic() < deadline:
            with budget_lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            cid = chunk_id(plan.run_tag, proc, conn_no, seq)
            seq += 1
            head = request_head(plan, cid, md5)
            t0 = time.perf_counter()
            try:
                status = conn.put(head, body)
            except (OSError, ValueError) as exc:
                conn.close()
                mine.errors += 1
                if len(mine.error_samples) < 5:
                    mine.error_samples.append("%s: %s" % (type(exc).__name__, exc))
                continue
            lat = time.perf_counter() - t0
            mine.statuses[status] = mine.statuses.get(status, 0) + 1
            if status in plan.ok_statuses:
                mine.ok += 1
                mine.bytes_sent += plan.size
                mine.latencies.append(lat)
                mine.ids.append(cid)
            else:
                mine.errors += 1
    finally:
        conn.close()
        with lock:
            stats.merge(mine)


def run_put_threads(plan, conns, duration, max_requests, proc=0, start_at=None,
                    timeout=60.0):
    """PUT from `conns` threads of this process; return PutStats (seconds = wall time)."""
    body = make_body(plan.size, plan.seed)
    view = memoryview(body)
    md5 = hashlib.md5(body).hexdigest().upper()
    now = time.monotonic()
    start_at = now + 0.2 if start_at is None else start_at
    deadline = start_at + duration
    budget, budget_lock = [max_requests], threading.Lock()
    stats, lock = PutStats(), threading.Lock()
    threads = [threading.Thread(target=_conn_loop,
                                args=(plan, view, md5, proc, i, start_at, deadline, budget,
                                      budget_lock, stats, lock, timeout), daemon=True)
               for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        # A request in flight at the deadline finishes or times out; bounded.
        t.join(duration + 2 * timeout + 5)
    stats.seconds = max(1e-9, time.monotonic() - start_at)
    return stats


def _proc_main(plan, conns, duration, max_requests, proc, start_at, timeout, out):
    try:
        stats = run_put_threads(plan, conns, duration, max_requests, proc, start_at, timeout)
        out.send(stats)
    except BaseException as exc:  # report, never hang the parent
        out.send(exc)
    finally:
        out.close()


def run_put_load(plan, procs=2, conns=8, duration=5.0, max_requests=1000, timeout=60.0):
    """PUT load from `procs` processes x `conns` connections; merged PutStats.

    Processes share one start time (CLOCK_MONOTONIC is system-wide) so the
    measured window is common; `max_requests` is split between processes.
    """
    ctx = multiprocessing.get_context("fork")
    start_at = time.monotonic() + 0.5
    share = [max_requests // procs + (1 if i < max_requests % procs else 0)
             for i in range(procs)]
    workers, pipes = [], []
    try:
        for i in range(procs):
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_proc_main,
                            args=(plan, conns, duration, share[i], i, start_at, timeout,
                                  child), daemon=True)
            p.start()
            child.close()
            workers.append(p)
            pipes.append(parent)
        total = PutStats()
        wait_s = (start_at - time.monotonic()) + duration + 2 * timeout + 10
        for pipe in pipes:
            if not pipe.poll(max(1.0, wait_s)):
                raise RuntimeError("PUT worker gave no result in time")
            res = pipe.recv()
            if isinstance(res, BaseException):
                raise RuntimeError("PUT worker failed: %r" % res)
            total.merge(res)
        return total
    finally:
        for p in workers:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
