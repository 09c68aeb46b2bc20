"""SEND between two local nodes, against the same copy made by curl, in one run.

1. Throughput: chunks of 1 MiB and 64 MiB stored on node A (cluster OPENIO) are
   copied to node B (cluster DRNS) by SEND (``storage.send.client``, one connection,
   one chunk after the other) and by ``curl GET A | curl PUT B`` per chunk (the copy
   an operator would script), rounds alternating; B's copies are deleted between
   rounds. Reported: MB/s of each and the ratio SEND / curl (median over rounds).
2. GET latency on A while copies run: 4 KiB GETs on one keep-alive connection, alone,
   while 10 chunks of 64 MiB are copied at once by curl (A serves 10 big GETs: the
   cost of the bytes alone), and while 10 SENDs of them run. Reported: p50 / p99.

    .venv/bin/python bench/load_send.py [--quick | --smoke] [--repeat N]

``--smoke`` only checks that it runs (tiny chunks, a fraction of a second each).

Only 127.0.0.1 is used; every loop is bounded in count and time.
"""
import argparse
import http.client
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from load_servers import (NodeServer, admin_htdigest, clear, curl_copy, fill,  # noqa: E402
                          run_in_tmp)
from storage.send.client import SendClient  # noqa: E402

MIB = 1 << 20
PASSWORD = "bench"


def chunk_id(n):
    return "%064X" % (0xBE7C0000000000000000000000000000 + n)


def by_send(a, b, ids):
    client = SendClient(f"http://127.0.0.1:{a.port}", "admin", PASSWORD)
    try:
        for cid in ids:
            result = client.send(cid, f"127.0.0.1:{b.port}", "DRNS")
            assert result.code == 201, (result.code, result.lines)
    finally:
        client.close()


def throughput(a, b, size, count, repeat):
    ids = [chunk_id(size // MIB * 1000 + i) for i in range(count)]
    fill(a, ids, size)
    rates = {"send": [], "curl": []}
    for _ in range(repeat):
        for name, copy in (("send", by_send), ("curl", curl_copy)):
            started = time.monotonic()
            copy(a, b, ids)
            rates[name].append(size * count / (time.monotonic() - started) / 1e6)
            clear(b, ids)
    clear(a, ids)
    send, curl = statistics.median(rates["send"]), statistics.median(rates["curl"])
    return send, curl


def get_latencies(port, cid, seconds, stop=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and len(out) < 200000:
            if stop is not None and stop.is_set():
                break
            t0 = time.perf_counter()
            conn.request("GET", "/" + cid)
            resp = conn.getresponse()
            resp.read()
            out.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return out


def pct(values, q):
    """The q-quantile of ``values`` (seconds) in ms; NaN for no values."""
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1e3


def latency_under(a, b, copy, size, senders, seconds):
    """GET 4 KiB latencies on A while ``senders`` chunks of ``size`` are copied to B at
    once by ``copy`` (by_send or curl_copy): (latencies, copies still running at the end
    of the window)."""
    small = chunk_id(1)
    ids = [chunk_id(900000 + i) for i in range(senders)]
    fill(a, ids, size)
    done = threading.Event()
    finished = []

    def copy_one(cid):
        try:
            copy(a, b, [cid])
        finally:
            finished.append(cid)
            if len(finished) == senders:
                done.set()
    threads = [threading.Thread(target=copy_one, args=(cid,)) for cid in ids]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    during = get_latencies(a.port, small, seconds, stop=done)
    running = not done.is_set()
    for thread in threads:
        thread.join(300)
    clear(b, ids)
    clear(a, ids)
    return during, running


def latency_table(a, b, size, senders, seconds):
    small = chunk_id(1)
    fill(a, [small], 4096)
    alone = get_latencies(a.port, small, seconds)
    rows = [("alone", alone, True)]
    for name, copy in (("10 curl copies", curl_copy), ("10 SENDs", by_send)):
        during, running = latency_under(a, b, copy, size, senders, seconds)
        rows.append((name, during, running))
    clear(a, [small])
    print(f"\nGET 4 KiB on A (one keep-alive connection), alone and while {senders} chunks of "
          f"{size // MIB} MiB are copied to B at once")
    print(f"{'while':>16} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99 vs alone':>13}")
    base = pct(alone, 0.99) or float("nan")
    for name, values, running in rows:
        note = "" if running else "  (the copies ended before the window)"
        print(f"{name:>16} {len(values):>9} {pct(values, 0.5):>8.3f} {pct(values, 0.99):>8.3f} "
              f"{pct(values, 0.99) / base:>12.2f}x{note}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts, 1 round")
    p.add_argument("--smoke", action="store_true", help="does it run? (seconds)")
    p.add_argument("--repeat", type=int, default=3, help="rounds per size (default 3)")
    args = p.parse_args(argv)
    repeat = 1 if args.quick or args.smoke else args.repeat
    if args.smoke:
        plan = [(MIB, 2), (8 * MIB, 1)]
    else:
        plan = [(MIB, 10 if args.quick else 64), (64 * MIB, 1 if args.quick else 4)]

    def run(tmp):
        digest = admin_htdigest(tmp, PASSWORD)
        for name in ("a", "b"):
            os.makedirs(os.path.join(tmp, name))
        a = NodeServer(os.path.join(tmp, "a"), os.path.join(tmp, "a", "data"),
                       extra_conf=[f"admin_htdigest {digest}"])
        b = NodeServer(os.path.join(tmp, "b"), os.path.join(tmp, "b", "data"),
                       extra_conf=["namespace DRNS"])
        with a, b:
            print("SEND vs curl GET | curl PUT (A -> B, one chunk after the other)")
            print(f"{'chunk':>8} {'count':>6} {'SEND MB/s':>10} {'curl MB/s':>10} {'ratio':>6}")
            for size, count in plan:
                send, curl = throughput(a, b, size, count, repeat)
                print(f"{size // MIB:>6}Mi {count:>6} {send:>10.0f} {curl:>10.0f} "
                      f"{send / curl:>5.2f}x", flush=True)
            size = MIB if args.smoke else 8 * MIB if args.quick else 64 * MIB
            seconds = 0.2 if args.smoke else 1.0 if args.quick else 3.0
            latency_table(a, b, size, 10, seconds)
    return run_in_tmp("load_send", run)


if __name__ == "__main__":
    sys.exit(main())
