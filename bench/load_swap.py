"""SWAP against HTTP on the same node, in one run.

1. Existence and size of N chunks (default 10,000): one SWAP GET_PATH_DETAILS frame
   (``SwapClient.stat``: the paths are bare chunk ids) against N HTTP HEADs on one
   keep-alive connection (``http.client``). Goal: SWAP 20x faster or more.
2. Streaming a 64 MiB chunk: SWAP REQUEST_FILE_STREAM (``SwapClient.get``) against
   HTTP GET of it read by ``http.client``, both as is, and both checking the MD5 (SWAP's
   at CLOSE_FILE, HTTP's against X-oio-Chunk-Meta-Chunk-Hash). Goal: at least 0.8x.
Rounds alternate; medians are reported with the ratios.

    .venv/bin/python bench/load_swap.py [--count 10000] [--repeat 5] [--quick | --smoke]

Only 127.0.0.1 is used; every loop is bounded in count and time.
"""
import argparse
import hashlib
import http.client
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from load_send import PASSWORD, chunk_id  # noqa: E402
from load_servers import NodeServer, admin_htdigest, fill, free_port, run_in_tmp  # noqa: E402
from storage.swap.client import SwapClient  # noqa: E402

MIB = 1 << 20


def by_swap_stat(port, ids):
    with SwapClient.connect("127.0.0.1", port) as client:
        client.authenticate("admin", PASSWORD)
        client.list_groups()
        started = time.perf_counter()
        records = client.stat("chunks", ids)
        elapsed = time.perf_counter() - started
    assert len(records) == len(ids) and all(r[3] > 0 for r in records)
    return elapsed


def by_http_head(port, ids):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("HEAD", "/" + ids[0])
        conn.getresponse().read()
        started = time.perf_counter()
        for cid in ids:
            conn.request("HEAD", "/" + cid)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200 and int(resp.getheader("Content-Length")) > 0
        return time.perf_counter() - started
    finally:
        conn.close()


def by_swap_get(port, cid, check):
    with SwapClient.connect("127.0.0.1", port) as client:
        client.authenticate("admin", PASSWORD)
        client.list_groups()
        started = time.perf_counter()
        size, _ = client.get("chunks", cid, lambda data: None, verify=check)
        return size / (time.perf_counter() - started) / 1e6


def by_http_get(port, cid, check):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    buf = bytearray(1 << 20)
    try:
        started = time.perf_counter()
        conn.request("GET", "/" + cid)
        resp = conn.getresponse()
        md5 = hashlib.md5() if check else None
        view = memoryview(buf)
        size = 0
        while True:
            n = resp.readinto(buf)
            if not n:
                break
            if md5 is not None:
                md5.update(view[:n])
            size += n
        if md5 is not None:
            assert md5.hexdigest().upper() == resp.getheader("X-Oio-Chunk-Meta-Chunk-Hash")
        return size / (time.perf_counter() - started) / 1e6
    finally:
        conn.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10000, help="chunks to stat (10000)")
    p.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--quick", action="store_true", help="2,000 chunks, 8 MiB, 2 rounds")
    p.add_argument("--smoke", action="store_true", help="does it run? (seconds)")
    args = p.parse_args(argv)
    count, repeat, big = args.count, args.repeat, 64 * MIB
    if args.quick:
        count, repeat, big = 2000, 2, 8 * MIB
    if args.smoke:
        count, repeat, big = 50, 1, MIB

    def run(tmp):
        digest = admin_htdigest(tmp, PASSWORD)
        swap_port = free_port()
        node = NodeServer(tmp, os.path.join(tmp, "data"),
                          extra_conf=[f"admin_htdigest {digest}",
                                      f"swap_listen 127.0.0.1:{swap_port}"])
        with node:
            ids = [chunk_id(700000 + i) for i in range(count)]
            fill(node, ids, 4096)
            large = chunk_id(1)
            fill(node, [large], big)
            swap_t, http_t = [], []
            for _ in range(repeat):
                swap_t.append(by_swap_stat(swap_port, ids))
                http_t.append(by_http_head(node.port, ids))
            s, h = statistics.median(swap_t), statistics.median(http_t)
            print(f"existence and size of {count} chunks ({repeat} rounds)")
            print(f"  SWAP GET_PATH_DETAILS, one frame  {s * 1e3:9.1f} ms")
            print(f"  HTTP HEAD x {count}, keep-alive  {h * 1e3:9.1f} ms")
            print(f"  SWAP is {h / s:.1f}x faster", flush=True)
            rates = {"swap": [], "swap-unchecked": [], "http": [], "http+md5": []}
            for _ in range(repeat):
                rates["swap"].append(by_swap_get(swap_port, large, True))
                rates["swap-unchecked"].append(by_swap_get(swap_port, large, False))
                rates["http"].append(by_http_get(node.port, large, False))
                rates["http+md5"].append(by_http_get(node.port, large, True))
            med = {k: statistics.median(v) for k, v in rates.items()}
            print(f"\nstreaming a {big // MIB} MiB chunk ({repeat} rounds, MB/s)")
            print(f"  HTTP GET                    {med['http']:8.0f}")
            print(f"  SWAP stream, unchecked      {med['swap-unchecked']:8.0f}  "
                  f"{med['swap-unchecked'] / med['http']:.2f}x HTTP GET")
            print(f"  HTTP GET + md5 check        {med['http+md5']:8.0f}")
            print(f"  SWAP stream, md5 checked    {med['swap']:8.0f}  "
                  f"{med['swap'] / med['http+md5']:.2f}x HTTP GET + md5", flush=True)
    return run_in_tmp("load_swap", run)


if __name__ == "__main__":
    sys.exit(main())
