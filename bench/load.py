"""HTTP load comparison: our storage node vs Debian's nginx, same client, same run.

Starts both servers on 127.0.0.1 (2 workers each, no access log), makes them
serve identical bytes, and measures with the same client:

  GET 4 KiB, 1 MiB, 8 MiB and a 500 KB range of an 8 MiB chunk   (wrk)
  PUT 1 MiB and 8 MiB (ours hashing and verifying MD5)            (load_put.py)
  64 concurrent 64 MiB PUTs while sampling each worker's peak RSS (load_rss.py)

Each GET and PUT row has a twin ", access log" row, measured in the same run on a
second pair of servers that both write an access log file (nginx ``access_log FILE``
in its default combined format, ours ``access_log FILE``): what a log line costs
each side. The logged files are truncated after each measurement (bounded disk
use); the row's notes give the lines each server logged.

and prints a Markdown table (also written to bench/out/latest.md) with the
ratio ours/nginx against the targets, and each server's CPU time (its master
and workers, user + system) per request: on this 2-core machine the client
shares the cores, so a server's speed shows both in its own throughput and in
the CPU it leaves to the client. Everything it starts it stops; its temp
dirs are removed.

    .venv/bin/python bench/load.py [--quick] [--duration S] [--only get_4k,put_1m]
    .venv/bin/python bench/load.py --smoke --out /tmp/smoke.md   # a few seconds, see below

``--smoke`` checks that the benchmark still runs, not how fast anything is (the test
suite runs it): our node only, 0.2 s per row, at most 8 MiB PUT per row, 2 uploads in
the RSS row, the GET rows only when wrk is installed. Targets are not judged; the exit
status is 1 if any row had an error.
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from load_put import Connection, PutPlan, make_body, request_head, run_put_load
from load_rss import run_rss_row, workers_of
from load_servers import REPO, NginxServer, NodeServer, cpu_seconds
from load_wrk import range_script, run_wrk

HERE = os.path.dirname(os.path.abspath(__file__))
KIB, MIB = 1 << 10, 1 << 20
RANGE = (3_000_000, 3_499_999)  # 500 KB inside the 8 MiB chunk, not page-aligned


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    kind: str  # "get", "put" or "rss"
    size: int
    metric: str  # what the ratio compares: "req/s" or "MB/s"
    target: float  # minimum ratio ours/nginx; for "rss", max MiB per worker
    byte_range: tuple = None
    logged: bool = False  # both servers write an access log file


def _logged(row, target=None):
    """The twin of ``row`` measured with both access logs on."""
    return Row(row.key + "_log", row.title + ", access log", row.kind, row.size, row.metric,
               row.target if target is None else target, row.byte_range, True)


_PLAIN = [
    Row("get_4k", "GET 4 KiB", "get", 4 * KIB, "req/s", 0.35),
    Row("get_1m", "GET 1 MiB", "get", MIB, "MB/s", 0.8),
    Row("get_8m", "GET 8 MiB", "get", 8 * MIB, "MB/s", 0.95),
    Row("get_range", "GET 500 KB of 8 MiB", "get", 8 * MIB, "MB/s", 0.8, RANGE),
    Row("put_1m", "PUT 1 MiB", "put", MIB, "MB/s", 0.75),
    Row("put_8m", "PUT 8 MiB", "put", 8 * MIB, "MB/s", 0.75),
]
# issue 15: a log line should cost about what nginx's does (>= 0.9x on GET 4 KiB)
_LOG_TARGETS = {"get_4k": 0.9}
ROWS = [r for plain in _PLAIN for r in (plain, _logged(plain, _LOG_TARGETS.get(plain.key)))]
ROWS.append(Row("rss", "RSS: 64 x PUT 64 MiB", "rss", 64 * MIB, "MiB/worker", 100.0))
ROW_KEYS = [r.key for r in ROWS]
SMOKE_SECONDS = 0.2  # per row under --smoke
SMOKE_PUT_BYTES = 8 * MIB  # bound on bytes PUT per row under --smoke
SMOKE_RSS_UPLOADS = 2


@dataclass
class Measure:
    """One server's result on one row. Latencies in ms; MB = 10**6 bytes of payload."""

    req_s: float
    mb_s: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    note: str = ""
    peak_mib: float = None  # rss rows only: largest VmHWM over the workers
    requests: int = 0  # completed in the run
    cpu_ms: float = None  # the server's CPU (user + system) per request
    logged: int = None  # lines in the access log after the run (logged rows)
    # ours only, with --repeat: the median of ours/nginx within each repeat, which the
    # row is judged by (less swayed by the machine's drift than a ratio of medians)
    paired: float = None


def get_chunk_id(size):
    """The fixed id of the GET test chunk of `size` bytes (64 upper-case hex)."""
    return ("%08X" % size) * 8


def fetch(port, path, byte_range=None):
    """One GET through http.client: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Range": "bytes=%d-%d" % byte_range} if byte_range else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def seed_get_chunks(servers, sizes):
    """Make every server serve the GET chunks; return {size: body}.

    Our node gets them by PUT (so they carry real RAWX xattrs); nginx gets
    hard links to the very same files, at the same relative path.
    """
    bodies = {size: make_body(size, seed=size) for size in sizes}
    ours = servers.get("ours")
    for size, body in bodies.items():
        cid = get_chunk_id(size)
        if ours is not None:
            plan = PutPlan(ours.port, "rawx", size, (201,), "00000000")
            conn = Connection(ours.port, 30)
            try:
                status = conn.put(request_head(plan, cid, hashlib.md5(body).hexdigest()), body)
            finally:
                conn.close()
            if status != 201:
                raise RuntimeError("seeding %s on our node: status %d" % (cid, status))
            src = ours.file_path(cid)
            if not os.path.exists(src):
                raise RuntimeError("our node did not store %s at %s" % (cid, src))
        nginx = servers.get("nginx")
        if nginx is not None:
            dst = nginx.file_path(cid)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if ours is not None:
                os.link(src, dst)
            else:
                with open(dst, "wb") as f:
                    f.write(body)
    return bodies


def check_get_chunks(servers, bodies):
    """Before measuring: every server returns the right bytes, whole and ranged."""
    for server in servers.values():
        for size, body in bodies.items():
            path = server.url_path(get_chunk_id(size))
            status, got = fetch(server.port, path)
            if status != 200 or got != body:
                raise RuntimeError("%s GET %s: status %d, %d bytes, same=%s"
                                   % (server.name, path, status, len(got), got == body))
        big = bodies[8 * MIB]
        path = server.url_path(get_chunk_id(8 * MIB))
        status, got = fetch(server.port, path, RANGE)
        if status != 206 or got != big[RANGE[0]:RANGE[1] + 1]:
            raise RuntimeError("%s ranged GET %s: status %d, %d bytes"
                               % (server.name, path, status, len(got)))


def measure_get(row, server, duration, connections):
    cid = get_chunk_id(row.size)
    url = "http://127.0.0.1:%d%s" % (server.port, server.url_path(cid))
    payload = row.size
    script = None
    if row.byte_range:
        script = range_script(*row.byte_range)
        payload = row.byte_range[1] - row.byte_range[0] + 1
    res = run_wrk(url, duration, connections=connections, script=script)
    note = ""
    if res.errors:
        note = "wrk: %d non-2xx, socket errors %s" % (res.non_2xx, res.socket_errors)
    return Measure(res.req_per_s, res.req_per_s * payload / 1e6, res.p50_ms, res.p99_ms,
                   res.errors, note, requests=res.requests)


def prune_tree(root, prefixes):
    """Unlink every file under root whose name starts with one of `prefixes`."""
    removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(prefixes):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def put_plan(server, size, run_tag):
    if server.name == "ours":
        return PutPlan(server.port, "rawx", size, (201,), run_tag)
    return PutPlan(server.port, "dav", size, (201, 204), run_tag)


def new_tag():
    # First char F: never the prefix of a GET chunk id (those start with 0).
    return "F" + os.urandom(4).hex().upper()[:7]


def measure_put(row, server, duration, connections, max_bytes):
    tag = new_tag()
    procs = 2 if connections >= 2 else 1
    try:
        stats = run_put_load(put_plan(server, row.size, tag), procs=procs,
                             conns=max(1, connections // procs), duration=duration,
                             max_requests=max(connections, max_bytes // row.size))
    finally:
        prune_tree(server.docroot, (tag,))  # bounded disk use between rows
    note = ""
    if stats.errors:
        note = "%d errors, statuses %s %s" % (stats.errors, stats.statuses,
                                              "; ".join(stats.error_samples[:2]))
    return Measure(stats.req_per_s, stats.mb_per_s, stats.percentile_ms(50),
                   stats.percentile_ms(99), stats.errors, note, requests=stats.ok)


def measure_rss(row, server, uploads):
    tag = new_tag()
    try:
        stats, peaks = run_rss_row(put_plan(server, row.size, tag), server.proc.pid,
                                   uploads=uploads)
    finally:
        prune_tree(server.docroot, (tag,))
    pids = sorted(peaks.hwm_kib)
    workers = workers_of(server.proc.pid, pids)
    per = ", ".join("%d:%.0f" % (p, peaks.hwm_kib[p] / 1024.0) for p in pids)
    note = "VmHWM MiB per pid (first = main): %s; %d samples" % (per, peaks.samples)
    if stats.errors:
        note += "; %d errors, statuses %s %s" % (stats.errors, stats.statuses,
                                                 "; ".join(stats.error_samples[:2]))
    if stats.ok + stats.errors != uploads:
        note += "; only %d of %d uploads finished" % (stats.ok + stats.errors, uploads)
        stats.errors += uploads - stats.ok - stats.errors
    return Measure(stats.req_per_s, stats.mb_per_s, stats.percentile_ms(50),
                   stats.percentile_ms(99), stats.errors, note,
                   peak_mib=peaks.peak_mib(workers))


def settle_log(path, timeout=2.0):
    """Wait (bounded) until the access log file stops growing (a server may flush its
    last lines a fraction of a second late), count its lines, and truncate it: both
    servers append (O_APPEND), so they go on writing at the new end. -> lines."""
    deadline = time.monotonic() + timeout
    size = -1
    while time.monotonic() < deadline:
        now = os.path.getsize(path) if os.path.exists(path) else 0
        if now == size:
            break
        size = now
        time.sleep(0.25)
    lines = 0
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                lines += block.count(b"\n")
        os.truncate(path, 0)
    except FileNotFoundError:
        pass
    return lines


def measure_guarded(row, srv, args):
    """measure_get/measure_put, with the server's CPU per request; a crash becomes an
    error row and the server restarts."""
    try:
        before = cpu_seconds(srv.proc.pid)
        if row.kind == "get":
            m = measure_get(row, srv, args.duration, args.connections)
        else:
            m = measure_put(row, srv, args.duration, args.connections, args.max_put_bytes)
        if m.requests:
            m.cpu_ms = (cpu_seconds(srv.proc.pid) - before) * 1e3 / m.requests
        if srv.access_path:
            m.logged = settle_log(srv.access_path)
            m.note = "; ".join(filter(None, [m.note, "%d access log lines for %d requests"
                                             % (m.logged, m.requests)]))
            if not m.logged and m.requests:
                m.errors += 1
        return m
    except Exception as exc:
        nan = float("nan")
        note = "%s: %s" % (type(exc).__name__, exc)
        if srv.proc.poll() is not None:
            note += "; server exited with %s, log tail: %r" % (srv.proc.returncode,
                                                              srv.log_tail(600))
            srv.stop()
            srv.start()  # same docroot: the GET chunks are still there
        return Measure(nan, nan, nan, nan, errors=1, note=note)


def metric_of(row):
    return (lambda m: m.req_s) if row.metric == "req/s" else (lambda m: m.mb_s)


def median_measure(row, measures):
    """The run with the median ratio metric, with the median CPU per request of the
    runs; errors of all runs are summed."""
    key = metric_of(row)
    ok = [m for m in measures if not m.errors] or measures
    pick = sorted(ok, key=key)[(len(ok) - 1) // 2]
    if len(measures) == 1:
        return pick
    errors = sum(m.errors for m in measures)
    notes = "; ".join(m.note for m in measures if m.note)
    vals = ", ".join(fmt(key(m)) for m in measures)
    cpus = sorted(m.cpu_ms for m in ok if m.cpu_ms is not None)
    return Measure(pick.req_s, pick.mb_s, pick.p50_ms, pick.p99_ms, errors,
                   ("median of %s %s" % (row.metric, vals)) + ("; " + notes if notes else ""),
                   requests=pick.requests,
                   cpu_ms=cpus[(len(cpus) - 1) // 2] if cpus else None, logged=pick.logged)


def paired_ratio(row, ours, nginx):
    """Median over the repeats of ours/nginx within the same repeat (the two runs of a
    repeat are back to back): less swayed than the ratio of medians by a slow drift of
    the machine's speed. None without two clean runs to pair."""
    key = metric_of(row)
    ratios = sorted(key(a) / key(b) for a, b in zip(ours, nginx)
                    if not a.errors and not b.errors and key(b))
    if len(ratios) < 2:
        return None
    return ratios[(len(ratios) - 1) // 2]


def start_servers(names, tmp, workers, node_bin, node_conf=(), access_log=False):
    """Start the named servers, each in its own dir under tmp (writing an access log
    file there with ``access_log``); return {name: server}."""
    servers = {}
    try:
        for name in names:
            prefix = tempfile.mkdtemp(prefix=name + ("-log-" if access_log else "-"),
                                      dir=tmp)
            docroot = os.path.join(prefix, "root")
            if name == "ours":
                srv = NodeServer(prefix, docroot, workers, binary=node_bin,
                                 extra_conf=node_conf, access_log=access_log)
            else:
                srv = NginxServer(prefix, docroot, workers, access_log=access_log)
            servers[name] = srv.start()
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def stop_servers(servers):
    for srv in servers.values():
        srv.stop()


def fmt(v, digits=1):
    return "-" if v is None else ("%.*f" % (digits, v))


def judge(row, results):
    """(ratio text, target text, verdict) for one row."""
    ours, ng = results.get("ours"), results.get("nginx")
    if row.kind == "rss":
        target = "< %.0f MiB/worker" % row.target
        if ours is None:
            return ("nginx %s MiB" % fmt(ng.peak_mib) if ng else "-"), target, "n/a"
        text = "%.1f MiB/worker" % ours.peak_mib
        if ng is not None:
            text += " (nginx %.1f)" % ng.peak_mib
        ok = ours.peak_mib < row.target and not ours.errors
        return text, target, "pass" if ok else "FAIL"
    target = ">= %.2fx %s" % (row.target, row.metric)
    if ours is None or ng is None:
        return "-", target, "n/a"
    if ours.paired is not None:  # several repeats: the paired ratio
        ratio, text = ours.paired, "%.2fx paired" % ours.paired
    else:
        a, b = (ours.req_s, ng.req_s) if row.metric == "req/s" else (ours.mb_s, ng.mb_s)
        ratio = a / b if b else float("inf")
        text = "%.2fx" % ratio
    ok = ratio >= row.target and not ours.errors and not ng.errors
    return text, target, "pass" if ok else "FAIL"


def render_table(rows, results, header_lines):
    head = ("| row | ours req/s | ours MB/s | ours p50/p99 ms | nginx req/s | nginx MB/s "
            "| nginx p50/p99 ms | CPU ms/req ours / nginx | ours/nginx | target | result |")
    lines = list(header_lines) + ["", head, "|" + "---|" * 11]
    notes = []
    for row in rows:
        res = results.get(row.key, {})
        cells = [row.title]
        for name in ("ours", "nginx"):
            m = res.get(name)
            if m is None:
                cells += ["-", "-", "-"]
            else:
                cells += [fmt(m.req_s), fmt(m.mb_s),
                          "%s / %s" % (fmt(m.p50_ms, 2), fmt(m.p99_ms, 2))]
                if m.note:
                    notes.append("- %s, %s: %s" % (row.title, name, m.note.lstrip("; ")))
        cells.append(" / ".join(fmt(getattr(res.get(name), "cpu_ms", None), 2)
                                for name in ("ours", "nginx")))
        cells += list(judge(row, res))
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines) + "\n"


def nginx_version():
    try:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    except FileNotFoundError:
        return "not installed"
    return (out.stderr or out.stdout).strip().replace("nginx version: ", "")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per row and server")
    p.add_argument("--quick", action="store_true", help="1 s per row")
    p.add_argument("--only", default="", help="comma-separated rows: " + ",".join(ROW_KEYS))
    p.add_argument("--servers", default="auto",
                   help="ours,nginx | nginx | ours | auto (ours only if src/storage/cli exists)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per row and server, alternating the order; the median is kept")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="worker processes of each server")
    p.add_argument("--max-put-bytes", type=int, default=4 << 30,
                   help="bound on bytes PUT per row and server (deleted after the row)")
    p.add_argument("--rss-uploads", type=int, default=64)
    p.add_argument("--node-conf", action="append", default=[],
                   help="an extra directive for our node, e.g. 'io_threads 8' (repeatable)")
    p.add_argument("--node-bin", default=os.path.join(REPO, ".venv", "bin", "storage-node"))
    p.add_argument("--tmp", default=None, help="parent of the temp dir (default: $TMPDIR)")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temp dir (configs, logs, chunks) for a post-mortem")
    p.add_argument("--out", default=os.path.join(HERE, "out", "latest.md"))
    p.add_argument("--smoke", action="store_true",
                   help="does it still run? ours only, tiny rows, no targets (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 1.0
    default_keys = ROW_KEYS
    if args.smoke:
        args.duration = SMOKE_SECONDS
        args.servers = "ours"
        args.repeat = 1
        args.max_put_bytes = min(args.max_put_bytes, SMOKE_PUT_BYTES)
        args.rss_uploads = min(args.rss_uploads, SMOKE_RSS_UPLOADS)
        if shutil.which("wrk") is None:  # the GET rows' client
            print("note: smoke run without wrk: the GET rows are skipped", file=sys.stderr)
            default_keys = [r.key for r in ROWS if r.kind != "get"]
    keys = [k.strip() for k in args.only.split(",") if k.strip()] or default_keys
    bad = [k for k in keys if k not in ROW_KEYS]
    if bad:
        p.error("unknown rows %s (known: %s)" % (bad, ", ".join(ROW_KEYS)))
    args.rows = [r for r in ROWS if r.key in keys]
    if args.servers == "auto":
        cli = os.path.join(REPO, "src", "storage", "cli")  # a package since SEND
        have_node = os.path.exists(cli) or os.path.exists(cli + ".py")
        args.servers = "ours,nginx" if have_node else "nginx"
        if not have_node:
            print("note: src/storage/cli not found, measuring nginx only", file=sys.stderr)
    args.server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not set(args.server_names) <= {"ours", "nginx"} or not args.server_names:
        p.error("--servers takes ours and/or nginx")
    return args


def run(args):
    """Run the selected rows; return (markdown text, {row: {server: Measure}})."""
    results = {}
    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    tmp = tempfile.mkdtemp(prefix="bench-load-", dir=args.tmp)
    try:
        # one pair of servers without an access log, one with (the logged rows)
        pairs = {False: {}, True: {}}
        try:
            for logged in (False, True):
                if any(r.logged == logged for r in args.rows if r.kind != "rss"):
                    pairs[logged] = start_servers(args.server_names, tmp, args.workers,
                                                  args.node_bin, args.node_conf, logged)
                    bodies = seed_get_chunks(pairs[logged], (4 * KIB, MIB, 8 * MIB))
                    check_get_chunks(pairs[logged], bodies)
                    for srv in pairs[logged].values():
                        if srv.access_path:
                            settle_log(srv.access_path)  # the seeding's lines
            for row in args.rows:
                if row.kind == "rss":
                    continue
                servers = pairs[row.logged]
                runs = {name: [] for name in servers}
                order = list(servers)
                for rep in range(args.repeat):
                    # Alternate who goes first: drift on a shared machine hits both.
                    for name in (order if rep % 2 == 0 else order[::-1]):
                        print("%-22s %-5s ..." % (row.title, name), end=" ", flush=True,
                              file=sys.stderr)
                        m = measure_guarded(row, servers[name], args)
                        runs[name].append(m)
                        print("%.1f req/s %.1f MB/s%s" % (m.req_s, m.mb_s,
                                                          " ERRORS" if m.errors else ""),
                              file=sys.stderr)
                for name, ms in runs.items():
                    results.setdefault(row.key, {})[name] = median_measure(row, ms)
                if "ours" in runs and "nginx" in runs:
                    paired = paired_ratio(row, runs["ours"], runs["nginx"])
                    if paired is not None:
                        results[row.key]["ours"].paired = paired
                        results[row.key]["ours"].note += \
                            "; paired ratio (median of ours/nginx per repeat) %.2fx" % paired
        finally:
            for servers in pairs.values():
                stop_servers(servers)
        for row in args.rows:
            if row.kind != "rss":
                continue
            # Fresh servers, so VmHWM (lifetime peak) covers this load alone.
            for name in args.server_names:
                print("%-22s %-5s ..." % (row.title, name), end=" ", flush=True,
                      file=sys.stderr)
                servers = start_servers([name], tmp, args.workers, args.node_bin,
                                        args.node_conf)
                try:
                    m = measure_rss(row, servers[name], args.rss_uploads)
                finally:
                    stop_servers(servers)
                results.setdefault(row.key, {})[name] = m
                print("peak %.1f MiB/worker%s" % (m.peak_mib, " ERRORS" if m.errors else ""),
                      file=sys.stderr)
    finally:
        if args.keep_tmp:
            print("kept %s (server configs and logs)" % tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    header = [
        "# HTTP load: storage-node vs nginx",
        "",
        "%s; %d CPUs; nginx %s; %g s per row and server%s; %d connections; %d workers each; "
        "load average %.2f before, %.2f after; "
        "wrk -t2 for GET, bench/load_put.py (2 processes) for PUT; MB = 10^6 payload bytes."
        % (time.strftime("%Y-%m-%d %H:%M:%S"), os.cpu_count() or 0, nginx_version(),
           args.duration,
           " (median of %d alternating runs)" % args.repeat if args.repeat > 1 else "",
           args.connections, args.workers, load_before, os.getloadavg()[0]),
        "",
        "Command: `%s`" % " ".join([".venv/bin/python", "bench/load.py"]
                                    + list(getattr(args, "argv", []))),
    ]
    return render_table(args.rows, results, header), results


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.argv = argv
    text, results = run(args)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({k: {s: vars(m) for s, m in v.items()} for k, v in results.items()}, f,
                  indent=1)
    if args.smoke:  # timings mean nothing here: only a broken row fails
        broken = [r.key for r in args.rows
                  if any(m.errors for m in results.get(r.key, {}).values())
                  or r.key not in results]
        if broken:
            print("smoke run: errors in rows %s" % ", ".join(broken), file=sys.stderr)
        return 1 if broken else 0
    verdicts = [judge(r, results.get(r.key, {}))[2] for r in args.rows]
    return 1 if "FAIL" in verdicts else 0


if __name__ == "__main__":
    sys.exit(main())
