"""RSMC RECEIVE of many chunks from another node, against the same copy made by curl.

Node B holds N chunks of 64 KiB; node A fetches them all with RSMC RECEIVE (requests
of 500 objects on one connection: A's transfer threads GET each chunk from B with its
metadata and store it, verified) and, in the same run, the same copy is done as one
``curl GET B | curl PUT A`` pair per chunk (the script an operator would write).
Rounds alternate; A's copies are erased between rounds. Reported: chunks/s of each,
MB/s, and the ratio RSMC / curl (median over rounds).

    .venv/bin/python bench/load_rsmc.py [--count 1000] [--repeat 3] [--quick | --smoke]

Only 127.0.0.1 is used; every loop is bounded in count and time.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from load_send import chunk_id  # noqa: E402
from load_servers import NodeServer, clear, curl_copy, fill, free_port, run_in_tmp  # noqa: E402
from storage.rsmc.client import RsmcClient  # noqa: E402

KIB = 1024


def by_rsmc(b, ids, port):
    client = RsmcClient("127.0.0.1", port, timeout=600)
    try:
        for start in range(0, len(ids), 500):
            batch = [f"http://127.0.0.1:{b.port}/{cid}" for cid in ids[start:start + 500]]
            reply = client.request("RECEIVE", "/", batch)
            assert reply.code == 201, (reply.code, reply.objects[:3])
    finally:
        client.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1000, help="chunks (default 1000)")
    p.add_argument("--size", type=int, default=64, help="KiB per chunk (default 64)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--quick", action="store_true", help="200 chunks, 1 round")
    p.add_argument("--smoke", action="store_true", help="does it run? (seconds)")
    args = p.parse_args(argv)
    count, repeat = args.count, args.repeat
    if args.quick:
        count, repeat = 200, 1
    if args.smoke:
        count, repeat = 10, 1

    def run(tmp):
        rsmc_port = free_port()
        for name in ("a", "b"):
            os.makedirs(os.path.join(tmp, name))
        a = NodeServer(os.path.join(tmp, "a"), os.path.join(tmp, "a", "data"),
                       extra_conf=[f"rsmc_listen 127.0.0.1:{rsmc_port}"])
        b = NodeServer(os.path.join(tmp, "b"), os.path.join(tmp, "b", "data"))
        with a, b:
            ids = [chunk_id(500000 + i) for i in range(count)]
            fill(b, ids, args.size * KIB)
            rates = {"rsmc": [], "curl": []}
            for _ in range(repeat):
                for name, copy in (("rsmc", lambda: by_rsmc(b, ids, rsmc_port)),
                                   ("curl", lambda: curl_copy(b, a, ids))):
                    started = time.monotonic()
                    copy()
                    rates[name].append(count / (time.monotonic() - started))
                    clear(a, ids)
            rsmc, curl = statistics.median(rates["rsmc"]), statistics.median(rates["curl"])
            mb = args.size * KIB / 1e6
            print(f"RECEIVE of {count} chunks of {args.size} KiB, B -> A ({repeat} rounds)")
            print(f"{'copy':>14} {'chunks/s':>9} {'MB/s':>7}")
            print(f"{'RSMC RECEIVE':>14} {rsmc:>9.0f} {rsmc * mb:>7.1f}")
            print(f"{'curl GET|PUT':>14} {curl:>9.0f} {curl * mb:>7.1f}")
            print(f"{'ratio':>14} {rsmc / curl:>8.2f}x", flush=True)
    return run_in_tmp("load_rsmc", run)


if __name__ == "__main__":
    sys.exit(main())
