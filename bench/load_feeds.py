"""Feeds: what they cost the request path, and how fast a replication feed drains.

1. PUT 1 MiB throughput on node A with no feeds against A with three feeds
   (replication to node B, indexing to a beanstalkd, s3backup), in the same run, in
   pairs whose order alternates (``load_put``: keep-alive connections, every body
   verified by its MD5); the ratio is the median of the pairs' ratios (this machine
   is shared and noisy). With feeds, every 201 first writes the chunk's three queue
   rows.
   - "recording": the delivery process is paused (SIGSTOP) during the PUTs, so the
     ratio is the request path's own cost (queue rows before each 201);
   - "delivering": the delivery runs meanwhile (at nice 10, as in production). Node
     B (the target), beanstalkd and a moto S3 server stand in for other machines:
     they run at nice 10 too, yet they share A's two cores, so this ratio still
     counts part of the copy's work that a real target does elsewhere.
   After each run with feeds, every feed drains before the next run starts, so the
   delivery of one run never competes with the run without feeds.
2. Drain rate of a replication feed (A -> B, feed concurrency 4): chunks of 64 KiB
   and 1 MiB stored on A while the delivery is paused, then timed from SIGCONT until
   ``/stat`` shows ``feed.1.pending 0``; against ``curl GET A | curl PUT B`` over the
   same chunks, one after the other (what an operator would script). The same with a
   feed that asks B over SWAP which chunks it has (``swap``), and a resync where B
   has every chunk already.
3. Memory while chunks are pending: 100,000 chunks of 4 KiB PUT on a node whose
   three feeds (replication, indexing, s3backup) all point at 127.0.0.1 ports where
   nothing listens, so every row stays pending; the RSS of the workers and of the
   delivery process after 10,000 and after 100,000, and the queue's size on disk.
   Then the replication target comes up and the delivery drains for 10 s: its peak.

    .venv/bin/python bench/load_feeds.py [--quick | --smoke] [--repeat N] [--pending N]
        [--only put|drain|pending]

``--smoke`` only checks that it runs (a fraction of a second per step).

Only 127.0.0.1 is used; every loop is bounded in count and time.
"""
import argparse
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from beanstalkutil import BEANSTALKD, Beanstalkd, free_port  # noqa: E402
from feedsutil import parse_stat  # noqa: E402
from s3util import CREDENTIALS, MotoServer  # noqa: E402
from load_put import PutPlan, run_put_load  # noqa: E402
from load_servers import (CHUNK_META, NodeServer, clear, cpu_seconds,  # noqa: E402
                          curl_copy, fill, memory_kib, process_tree, request)

KIB, MIB = 1 << 10, 1 << 20
BUCKET = "bench-bucket"


def remote(*pids):
    """Nice the processes that stand in for other machines (the target node, moto and
    beanstalkd): on this one they share A's cores, and should take the CPU only when
    A's workers leave it, as if they ran elsewhere. Each runs in a session of its own,
    and with the kernel's autogroup scheduling a session's processes share one
    group whose weight their own nice value does not touch: the group is niced too
    (/proc/PID/autogroup), otherwise each stand-in would get as much CPU as A."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write("10")
        except OSError:
            pass  # no autogroup scheduling (or no right to change it)
        for one in process_tree(pid):
            try:
                os.setpriority(os.PRIO_PROCESS, one, 10)
            except OSError:
                pass


def chunk_id(n):
    return "%064X" % (0xFEED0000000000000000000000000000 + n)


def stat(port):
    return parse_stat(request(port, "GET", "/stat")[1])


def delivery_pid(node):
    with open(os.path.join(node.docroot, ".storage-node", "feeds.lock")) as f:
        return int(f.read().split()[0])


def wait_delivery(node, timeout=20.0):
    """The pid of A's delivery process once it holds its lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return delivery_pid(node)
        except (OSError, ValueError, IndexError):
            time.sleep(0.05)
    raise RuntimeError("the delivery process did not start")


def feeds_file(path, target_port, beanstalk_port, three, s3_endpoint=None):
    text = (f'[feed.1]\ntype = "replication"\ntarget = "http://127.0.0.1:{target_port}"\n')
    if three:
        text += (f'[feed.2]\ntype = "indexing"\ntarget = "beanstalk://127.0.0.1:'
                 f'{beanstalk_port}"\n[feed.3]\ntype = "s3backup"\n'
                 f'target = "s3://{BUCKET}/chunks"\nendpoint = "{s3_endpoint}"\n')
    with open(path, "w") as f:
        f.write(text)
    return path


def own_cpu(pid):
    """User + system CPU seconds of process ``pid`` alone (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_cpu(node):
    """CPU seconds used so far by the node's master and workers (its feeds delivery
    process left out)."""
    try:
        delivery = delivery_pid(node)
    except (OSError, ValueError, IndexError):
        delivery = None
    skip = set(process_tree(delivery)) if delivery else set()
    return sum(own_cpu(pid) for pid in process_tree(node.proc.pid) if pid not in skip)


def put_rate(node, seconds, max_requests, tag):
    """(MB/s, p99 ms, the node's workers' CPU ms per MiB stored, the chunk ids)."""
    plan = PutPlan(port=node.port, flavor="rawx", size=MIB, ok_statuses=(201,),
                   run_tag=tag)
    cpu = worker_cpu(node)
    stats = run_put_load(plan, procs=1, conns=4, duration=seconds,
                         max_requests=max_requests)
    cpu = worker_cpu(node) - cpu
    return (stats.mb_per_s, stats.percentile_ms(99), cpu * 1e3 / max(stats.ok, 1),
            stats.ids)


def put_ratio(plain, fed, repeat, seconds, max_requests, paused, copies, others=None):
    """PUT 1 MiB on ``plain`` and on ``fed``, in pairs whose order alternates (this
    machine is shared: a ratio within a pair is steadier than a ratio of medians).
    Every run's chunks are deleted after it, here and where the feeds copied them
    (``copies(ids)``), so the disk and moto's memory do not fill up.
    -> (median MB/s by name, median p99 ms by name, the pairs' ratios, median CPU
    ms per MiB by name, and for the runs with feeds: median CPU ms per MiB stored,
    from the PUTs' start to the end of the drain, of the delivery process and of each
    process tree in ``others`` {name: pid})."""
    rates = {"none": [], "feeds": []}
    p99 = {"none": [], "feeds": []}
    cpu = {"none": [], "feeds": []}
    ratios = []
    pid = wait_delivery(fed)
    pids = {"delivery": pid, **(others or {})}
    spent = {name: [] for name in pids}
    for i in range(repeat):
        order = (("none", plain), ("feeds", fed))
        pair = {}
        for name, node in order if i % 2 == 0 else order[::-1]:
            if name == "feeds" and paused:
                os.kill(pid, signal.SIGSTOP)
            if name == "feeds":
                before = {k: cpu_seconds(v) for k, v in pids.items()}
            try:
                rate, tail, cost, ids = put_rate(node, seconds, max_requests,
                                                 "%08X" % random.getrandbits(32))
            finally:
                if name == "feeds" and paused:
                    os.kill(pid, signal.SIGCONT)
            rates[name].append(rate)
            p99[name].append(tail)
            cpu[name].append(cost)
            pair[name] = rate
            if name == "feeds":
                # what is left to deliver must not run during the next "none" run
                for feed in (1, 2, 3):
                    wait_drained(fed, feed, 600)
                for k, v in pids.items():
                    spent[k].append((cpu_seconds(v) - before[k]) * 1e3 / max(len(ids), 1))
                copies(ids)
            clear(node, ids)
        ratios.append(pair["feeds"] / pair["none"])
    return ({k: statistics.median(v) for k, v in rates.items()},
            {k: statistics.median(v) for k, v in p99.items()}, ratios,
            {k: statistics.median(v) for k, v in cpu.items()},
            {k: statistics.median(v) for k, v in spent.items()})


def record_cost(tmp, feeds_path, count, rounds):
    """Microseconds the request path spends per chunk queueing it for the feeds of
    ``feeds_path`` (StoredMeta -> rows -> one committed transaction), measured on the
    real queue file, without HTTP around it: median of ``rounds`` runs."""
    from storage import config as configmod
    from storage.feeds import FeedRecorder
    from storage.rawx import meta as chunkmeta
    docroot = tempfile.mkdtemp(prefix="rec-", dir=tmp)
    conf = configmod.parse_text(f"listen 127.0.0.1:1\nnamespace N\ndocroot {docroot}\n"
                                f"feeds_config {feeds_path}\n")
    recorder = FeedRecorder(conf)
    headers = {k.lower(): v for k, v in CHUNK_META.items()}
    headers["x-oio-chunk-meta-chunk-hash"] = "0" * 32
    headers["x-oio-chunk-meta-chunk-size"] = "1048576"
    costs = []
    try:
        for r in range(rounds):
            metas = []
            for n in range(count):
                put_meta = chunkmeta.PutMeta(chunk_id(10_000_000 + r * count + n), headers)
                metas.append(chunkmeta.StoredMeta(put_meta.chunk_id, put_meta.xattrs()))
            started = time.perf_counter()
            for stored in metas:
                recorder.record_new(stored, "bench")
            costs.append((time.perf_counter() - started) / count * 1e6)
    finally:
        recorder.close()
    return statistics.median(costs)


def wait_drained(node, feed, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stat(node.port).get(f"feed.{feed}.pending") == "0":
            return True
        time.sleep(0.02)
    raise RuntimeError(f"feed {feed} did not drain within {timeout}s")


def feed_drain(a, b, ids, size, resync=False):
    """Seconds A's feed takes to deliver ``ids`` (stored on A while its delivery is
    paused); ``resync``: B has them all already (it only has to find that out)."""
    pid = wait_delivery(a)
    if resync:
        fill(b, ids, size)
    os.kill(pid, signal.SIGSTOP)
    try:
        fill(a, ids, size)
    finally:
        started = time.monotonic()
        os.kill(pid, signal.SIGCONT)
    wait_drained(a, 1, 600)
    took = time.monotonic() - started
    clear(b, ids)
    os.kill(pid, signal.SIGSTOP)  # A's deletes are not propagated: nothing to do
    try:
        clear(a, ids)
    finally:
        os.kill(pid, signal.SIGCONT)
    return took


def drain(sources, b, size, count, repeat, base, resync=False):
    """{name: chunks/s} medians over ``repeat`` rounds of the same ``count`` chunks:
    each source node's feed (``sources``: {name: node}), and "curl" (A's chunks copied
    with curl, unless ``resync``)."""
    ids = [chunk_id(base + i) for i in range(count)]
    rates = {name: [] for name in sources}
    if not resync:
        rates["curl"] = []
    for _ in range(repeat):
        for name, node in sources.items():
            rates[name].append(count / feed_drain(node, b, ids, size, resync))
        if not resync:
            first = next(iter(sources.values()))
            pid = wait_delivery(first)
            os.kill(pid, signal.SIGSTOP)  # its feed must not copy them meanwhile
            try:
                fill(first, ids, size)
                started = time.monotonic()
                curl_copy(first, b, ids)
                rates["curl"].append(count / (time.monotonic() - started))
                clear(b, ids)
                clear(first, ids)  # its rows find nothing to copy: dropped
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_drained(first, 1, 600)
    return {name: statistics.median(values) for name, values in rates.items()}


def dead_feeds(path, dead_port):
    """Three feeds whose targets are 127.0.0.1 ports where nothing listens."""
    with open(path, "w") as f:
        f.write(f'[feed.1]\ntype = "replication"\ntarget = "http://127.0.0.1:{dead_port}"\n'
                'retry_max = 2\n'
                f'[feed.2]\ntype = "indexing"\ntarget = "beanstalk://127.0.0.1:{dead_port}"\n'
                '[feed.3]\ntype = "s3backup"\ntarget = "s3://bench-bucket/chunks"\n'
                f'endpoint = "http://127.0.0.1:{dead_port}"\n')
    return path


def rss_mib(node):
    """(largest worker RSS, delivery process RSS, delivery peak) in MiB."""
    delivery = delivery_pid(node)
    workers = [pid for pid in process_tree(node.proc.pid)[1:] if pid != delivery]
    worker = max((memory_kib(pid) or (0, 0))[0] for pid in workers)
    rss, peak = memory_kib(delivery) or (0, 0)
    return worker / 1024, rss / 1024, peak / 1024


def queue_mib(node):
    """(database, WAL) sizes in MiB."""
    base = os.path.join(node.docroot, ".storage-node", "feeds.db")
    return tuple(os.path.getsize(base + ext) / MIB if os.path.exists(base + ext) else 0
                 for ext in ("", "-wal"))


def pending_memory(tmp, total, seconds_cap):
    """Print the RSS table of step 3 for ``total`` pending chunks."""
    dead = free_port()
    path = dead_feeds(os.path.join(tmp, "dead.toml"), dead)
    os.makedirs(os.path.join(tmp, "pend"))
    node = NodeServer(os.path.join(tmp, "pend"), os.path.join(tmp, "pend", "data"),
                      extra_conf=[f"feeds_config {path}"])
    print("\nMemory with chunks pending (three feeds, targets down; 4 KiB chunks)")
    print(f"{'pending':>9} {'worker RSS':>11} {'delivery RSS':>13} {'queue file':>12} "
          f"{'its WAL':>11}")
    with node:
        wait_delivery(node)
        done = 0
        for goal in sorted({min(total, total // 10), total}):
            plan = PutPlan(port=node.port, flavor="rawx", size=4 * KIB, ok_statuses=(201,),
                           run_tag="%08X" % random.getrandbits(32))
            run_put_load(plan, procs=2, conns=4, duration=seconds_cap,
                         max_requests=goal - done)
            done = int(stat(node.port)["feed.1.pending"])
            worker, delivery, _ = rss_mib(node)
            db, wal = queue_mib(node)
            print(f"{done:>9} {worker:>9.0f}Mi {delivery:>11.0f}Mi {db:>10.1f}Mi "
                  f"{wal:>9.1f}Mi", flush=True)
        b = NodeServer(os.path.join(tmp, "pend", "b"), os.path.join(tmp, "pend", "b", "data"),
                       extra_conf=["namespace DRNS"], port=dead)
        with b:
            time.sleep(10)
            left = int(stat(node.port)["feed.1.pending"])
            _, delivery, peak = rss_mib(node)
            print(f"replication target back for 10 s: {done - left} delivered, delivery "
                  f"RSS {delivery:.0f}Mi (peak {peak:.0f}Mi)", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs, 2 rounds")
    p.add_argument("--smoke", action="store_true", help="does it run? (seconds)")
    p.add_argument("--repeat", type=int, default=6,
                   help="PUT rounds (default 6; the drains take at most 3)")
    p.add_argument("--pending", type=int, default=None,
                   help="chunks pending in step 3 (default 100000; --quick 20000)")
    p.add_argument("--only", choices=("put", "drain", "pending"), action="append",
                   help="run only these steps (repeatable)")
    args = p.parse_args(argv)
    if BEANSTALKD is None:
        print("load_feeds: beanstalkd is not installed (apt-get install beanstalkd)",
              file=sys.stderr)
        return 1
    steps = set(args.only or ("put", "drain", "pending"))
    os.environ.update(CREDENTIALS)  # for the nodes' s3backup feeds (moto accepts any)
    total = args.pending or (500 if args.smoke else 20000 if args.quick else 100000)
    tmp = tempfile.mkdtemp(prefix="bench-feeds-")
    beanstalkd = Beanstalkd(free_port())
    failed = False
    try:
        beanstalkd.start()
        if steps & {"put", "drain"}:
            put_and_drain(tmp, beanstalkd, args, steps)
        if "pending" in steps:
            pending_memory(tmp, total, 30 if args.smoke else 600)
    except Exception as exc:
        print(f"load_feeds: failed: {exc!r}", file=sys.stderr)
        failed = True
    finally:
        beanstalkd.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


def put_and_drain(tmp, beanstalkd, args, steps):
    """Steps 1 and 2: node B (the replication target), beanstalkd and a moto S3
    server stand in for the other machines."""
    for name in ("plain", "fed", "drain", "b"):
        os.makedirs(os.path.join(tmp, name))
    swap_port = free_port()
    b = NodeServer(os.path.join(tmp, "b"), os.path.join(tmp, "b", "data"),
                   extra_conf=["namespace DRNS", f"swap_listen 127.0.0.1:{swap_port}",
                               "swap_peers 127.0.0.1"])
    b.swap_port = swap_port
    s3 = MotoServer().start()  # the s3backup feed's bucket, on 127.0.0.1
    try:
        s3.client().create_bucket(Bucket=BUCKET)
        with b:
            remote(b.proc.pid, beanstalkd.proc.pid, s3.proc.pid)
            _put_and_drain(tmp, b, beanstalkd, s3, args, steps)
    finally:
        s3.stop()


def _put_and_drain(tmp, b, beanstalkd, s3, args, steps):
    repeat = 1 if args.smoke else 2 if args.quick else args.repeat
    seconds = 0.3 if args.smoke else 2.0 if args.quick else 3.0
    max_requests = 20 if args.smoke else 100000
    drains = [(64 * KIB, 20), (MIB, 5)] if args.smoke else \
        [(64 * KIB, 200 if args.quick else 500), (MIB, 30 if args.quick else 100)]
    three = feeds_file(os.path.join(tmp, "three.toml"), b.port, beanstalkd.port, True,
                       s3.endpoint)
    one = feeds_file(os.path.join(tmp, "one.toml"), b.port, beanstalkd.port, False)
    if "put" in steps:
        rounds = 1 if args.smoke else 5
        count = 100 if args.smoke else 2000
        print("Queueing a chunk (the request path's part, on the queue file, no HTTP): "
              f"{record_cost(tmp, one, count, rounds):.0f} us with one feed, "
              f"{record_cost(tmp, three, count, rounds):.0f} us with three\n",
              flush=True)
        s3_client = s3.client()

        def copies(ids):
            """Delete what the feeds copied of ``ids``: on B and in the bucket."""
            clear(b, ids)
            for at in range(0, len(ids), 1000):
                s3_client.delete_objects(Bucket=BUCKET, Delete={"Objects": [
                    {"Key": f"chunks/{cid}"} for cid in ids[at:at + 1000]]})

        plain = NodeServer(os.path.join(tmp, "plain"), os.path.join(tmp, "plain", "data"))
        fed = NodeServer(os.path.join(tmp, "fed"), os.path.join(tmp, "fed", "data"),
                         extra_conf=[f"feeds_config {three}"])
        with plain, fed:
            print("PUT 1 MiB (1 process x 4 connections), no feeds vs three feeds "
                  "(replication, indexing, s3backup)")
            print(f"{'delivery':>11} {'none MB/s':>10} {'feeds MB/s':>11} "
                  f"{'ratio':>6} {'pairs min-max':>14} {'p99 none':>9} {'p99 feeds':>10} "
                  f"{'CPU ms/MiB none':>16} {'feeds':>6}")
            costs = []
            for paused in (True, False):
                rates, p99, ratios, cpu, spent = put_ratio(
                    plain, fed, repeat, seconds, max_requests, paused, copies,
                    {"B": b.proc.pid, "beanstalkd": beanstalkd.proc.pid,
                     "moto": s3.proc.pid})
                label = "recording" if paused else "delivering"
                costs.append((label, spent))
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                print(f"{label:>11} {rates['none']:>10.0f} {rates['feeds']:>11.0f} "
                      f"{statistics.median(ratios):>5.2f}x {spread:>14} "
                      f"{p99['none']:>7.1f}ms {p99['feeds']:>8.1f}ms "
                      f"{cpu['none']:>16.2f} {cpu['feeds']:>6.2f}", flush=True)
            print("CPU ms per MiB stored with feeds, from the PUTs to the end of the "
                  "drain, outside A's workers:")
            for label, spent in costs:
                print(f"{label:>11} " + "  ".join(f"{k} {v:.2f}" for k, v in spent.items()),
                      flush=True)
    if "drain" in steps:
        a = NodeServer(os.path.join(tmp, "drain"), os.path.join(tmp, "drain", "data"),
                       extra_conf=[f"feeds_config {one}"])
        swap_feed = os.path.join(tmp, "swap.toml")
        with open(swap_feed, "w") as f:
            f.write(f'[feed.1]\ntype = "replication"\ntarget = "http://127.0.0.1:{b.port}"\n'
                    f'swap = "127.0.0.1:{b.swap_port}"\n')
        os.makedirs(os.path.join(tmp, "drain-swap"))
        a_swap = NodeServer(os.path.join(tmp, "drain-swap"),
                            os.path.join(tmp, "drain-swap", "data"),
                            extra_conf=[f"feeds_config {swap_feed}"])
        with a, a_swap:
            print("\nReplication feed drain (A -> B, concurrency 4): HEAD then PUT per chunk, "
                  "or asking B over SWAP first (feed key swap),\nvs curl GET | curl PUT "
                  "one chunk after the other; chunks/s")
            print(f"{'chunk':>10} {'count':>6} {'feed':>8} {'feed+SWAP':>10} {'curl':>8} "
                  f"{'feed/curl':>10} {'SWAP/curl':>10} {'feed MB/s':>10}")
            sources = {"feed": a, "swap": a_swap}
            rounds = min(repeat, 3)
            for n, (size, count) in enumerate(drains):
                got = drain(sources, b, size, count, rounds, n * 100000)
                label = f"{size // KIB}Ki" if size < MIB else f"{size // MIB}Mi"
                print(f"{label:>10} {count:>6} {got['feed']:>8.0f} {got['swap']:>10.0f} "
                      f"{got['curl']:>8.0f} {got['feed'] / got['curl']:>9.2f}x "
                      f"{got['swap'] / got['curl']:>9.2f}x "
                      f"{got['feed'] * size / 1e6:>10.0f}", flush=True)
            size, count = drains[0]
            got = drain(sources, b, size, count * 2, rounds, 900000, resync=True)
            print(f"{'resync':>10} {count * 2:>6} {got['feed']:>8.0f} {got['swap']:>10.0f} "
                  f"{'-':>8} {'-':>10} {'-':>10}   (B has them all: "
                  f"SWAP {got['swap'] / got['feed']:.1f}x HEADs)", flush=True)

if __name__ == "__main__":
    sys.exit(main())
