"""Restore rate of an s3backup feed's bucket (``storage-node feeds restore``) against
what an operator would script, in the same run.

Chunks of 64 KiB and 1 MiB are written in the bucket of a moto S3 server on
127.0.0.1 in the backup format (``tests/s3util.put_backup``, with the functions of
``storage.feeds.s3``), then restored onto one node:
- "restore -j1" and "restore -j4": the restore's own engine (``RestorePool`` of
  ``Restorer``s, as the command runs it, without the process start-up), one and
  four threads; each chunk is a HEAD (skip it if the node has it), a GET from S3
  and a streamed PUT with its metadata headers, the node verifying the hash;
- "script": a plain loop of boto3 ``get_object`` (the body read whole) and an
  ``http.client`` PUT of the same chunk with the same headers on a keep-alive
  connection, one chunk after the other.
The node is emptied between runs; the order of the three alternates between rounds
(this machine is shared and noisy) and each figure is the median of the rounds. moto
(pure Python) serves the GETs: it is the ceiling here, not S3.

    .venv/bin/python bench/load_restore.py [--quick | --smoke] [--repeat N]

``--smoke`` only checks that it runs (seconds). Only 127.0.0.1 is used; every loop
is bounded in count (the chunks) and time (``DEADLINE`` seconds a run).
"""
import argparse
import http.client
import os
import statistics
import sys
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "src"))
sys.path.insert(0, os.path.join(REPO, "tests"))

from load_servers import NodeServer, clear, run_in_tmp
from s3util import CREDENTIALS, MotoServer, put_backup

KIB, MIB = 1 << 10, 1 << 20
BUCKET = "bench-restore"
DEADLINE = 300.0  # seconds a restore run may take
TIMEOUT = 60.0  # seconds a request may take


def chunk_id(n):
    return "%064X" % (0x5E570E00000000000000000000000000 + n)


def fill_bucket(client, prefix, size, count, base):
    """``count`` chunks of ``size`` random bytes (each different) under ``prefix``."""
    piece = os.urandom(size)
    ids = []
    for n in range(count):
        cid = chunk_id(base + n)
        put_backup(client, BUCKET, cid, piece[:-8] + n.to_bytes(8, "big"), prefix)
        ids.append(cid)
    return ids


def run_restore(endpoint, prefix, ids, port, jobs):
    """The restore engine over ``ids`` with ``jobs`` threads: -> seconds taken."""
    from storage.feeds import restore, s3
    from storage.rawxclient import RawxClient
    feed = types.SimpleNamespace(bucket=BUCKET, key_prefix=prefix)
    client = s3.make_client(endpoint, TIMEOUT, attempts=3, pool=jobs + 1)
    stopping = threading.Event()
    pool = restore.RestorePool(
        [restore.Restorer(client, feed, RawxClient(f"http://127.0.0.1:{port}", TIMEOUT),
                          stopping) for _ in range(jobs)], iter(ids), stopping)
    restored = 0
    started = time.monotonic()
    try:
        for chunk, outcome, reason in pool.results():
            if outcome != restore.RESTORED:
                raise RuntimeError(f"{chunk} {outcome}: {reason}")
            restored += 1
            if time.monotonic() - started > DEADLINE:
                raise RuntimeError(f"restore took more than {DEADLINE:.0f} s")
    except BaseException:
        pool.stop()
        raise
    finally:
        client.close()
    if restored != len(ids):
        raise RuntimeError(f"{restored} of {len(ids)} chunks restored")
    return time.monotonic() - started


def run_script(endpoint, prefix, ids, port):
    """What an operator would script: get_object, read the body, PUT it with the
    headers of its metadata; one chunk after the other. -> seconds taken."""
    from storage.feeds import s3
    client = s3.make_client(endpoint, TIMEOUT, attempts=3)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    started = time.monotonic()
    try:
        for cid in ids:
            obj = client.get_object(Bucket=BUCKET, Key=s3.object_key(prefix, cid))
            with obj["Body"] as body:
                data = body.read()
            conn.request("PUT", "/" + cid, body=data,
                         headers=s3.decode_user_metadata(obj["Metadata"]))
            resp = conn.getresponse()
            resp.read()
            if resp.status != 201:
                raise RuntimeError(f"PUT {cid}: {resp.status}")
            if time.monotonic() - started > DEADLINE:
                raise RuntimeError(f"the script took more than {DEADLINE:.0f} s")
    finally:
        conn.close()
        client.close()
    return time.monotonic() - started


def measure(s3_server, node, prefix, ids, repeat):
    """{way: median seconds} over ``repeat`` rounds, the order alternating."""
    ways = [("script", lambda: run_script(s3_server.endpoint, prefix, ids, node.port)),
            ("restore -j1", lambda: run_restore(s3_server.endpoint, prefix, ids,
                                                node.port, 1)),
            ("restore -j4", lambda: run_restore(s3_server.endpoint, prefix, ids,
                                                node.port, 4))]
    seconds = {name: [] for name, _ in ways}
    for round_no in range(repeat):
        for name, run in ways if round_no % 2 == 0 else ways[::-1]:
            clear(node, ids)
            seconds[name].append(run())
    clear(node, ids)
    return {name: statistics.median(values) for name, values in seconds.items()}


def bench(tmp, args):
    os.environ.update(CREDENTIALS)  # moto takes any; boto3 wants some
    repeat = 1 if args.smoke else 2 if args.quick else args.repeat
    sizes = [(64 * KIB, 12), (MIB, 4)] if args.smoke else \
        [(64 * KIB, 150 if args.quick else 500), (MIB, 40 if args.quick else 100)]
    s3_server = MotoServer().start()
    try:
        client = s3_server.client()
        client.create_bucket(Bucket=BUCKET)
        os.makedirs(os.path.join(tmp, "node"))
        node = NodeServer(os.path.join(tmp, "node"), os.path.join(tmp, "node", "data"))
        with node:
            print("Restore from S3 (moto on 127.0.0.1) onto one node: the restore engine "
                  "with 1 and 4 threads vs a get_object + PUT loop")
            print(f"{'chunk':>6} {'count':>6} {'way':>12} {'chunks/s':>9} {'MB/s':>7} "
                  f"{'vs script':>10}")
            for n, (size, count) in enumerate(sizes):
                label = f"{size // KIB}Ki" if size < MIB else f"{size // MIB}Mi"
                ids = fill_bucket(client, label, size, count, n * 100000)
                taken = measure(s3_server, node, label, ids, repeat)
                for way, secs in taken.items():
                    print(f"{label:>6} {count:>6} {way:>12} {count / secs:>9.0f} "
                          f"{count * size / secs / 1e6:>7.1f} "
                          f"{taken['script'] / secs:>9.2f}x", flush=True)
    finally:
        s3_server.stop()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer chunks, 2 rounds")
    p.add_argument("--smoke", action="store_true", help="does it run? (seconds)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    args = p.parse_args(argv)
    if not 1 <= args.repeat <= 20:
        p.error("--repeat must be in 1..20")
    return run_in_tmp("load_restore", lambda tmp: bench(tmp, args))


if __name__ == "__main__":
    sys.exit(main())
