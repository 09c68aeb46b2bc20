"""Feeds on real nodes (spec send.md): a source node (cluster OPENIO) whose feeds
replicate to a node of another cluster (DRNS) and publish to a real beanstalkd."""
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import pytest
from beanstalkutil import BEANSTALKD, Client, free_port
from feedsutil import (RefusingTarget, chunk_id, delivery_pid, pending, replication, stat,
                       wait_delivery_pid, wait_for, write_feeds)
from nodeutil import CHUNK_HEADERS

META_PREFIXES = ("x-oio-chunk-meta-", "x-oio-ext-")


def meta_of(node, cid):
    status, headers, _ = node.request("HEAD", f"/{cid}")
    assert status == 200, (status, cid)
    return {k: v for k, v in headers.items() if k.startswith(META_PREFIXES)}


def source(node_factory, tmp_path, text, name="feeds.toml", **extra):
    path = write_feeds(tmp_path / name, text)
    return node_factory(feeds_config=str(path), **extra)


def verbose(node, cid):
    status, headers, _ = node.request("HEAD", f"/{cid}?verbose")
    assert status == 200
    return {k: v for k, v in headers.items() if k.startswith("feed-")}


def test_replication_delivers_data_and_metadata_byte_for_byte(node_factory, tmp_path):
    target = node_factory(namespace="DRNS")
    node = source(node_factory, tmp_path, replication(1, target), shallow_copy="on")
    body = os.urandom(300_000)
    cid = chunk_id(1)
    assert node.put(cid, body, {"X-Oio-Ext-Color": "bl%C3%BCe",
                                "X-oio-Chunk-Meta-Metachunk-Size": "300000"})[0] == 201
    copy = chunk_id(2)  # a shallow copy is a new chunk too
    assert node.request("COPY", f"/{cid}", headers={
        "Destination": f"http://{node.host}/{copy}",
        "X-oio-Chunk-Meta-Full-Path": "acct/cont/copy/1/0123456789ABCDEF0123456789ABCDEF"})[0] \
        == 201
    assert wait_for(lambda: pending(node, 1) == 0)
    for one in (cid, copy):
        assert target.request("GET", f"/{one}")[2] == body
        assert meta_of(target, one) == meta_of(node, one)
    assert meta_of(target, cid)["x-oio-ext-color"] == "blüe".encode().decode("latin-1")
    got = verbose(node, cid)
    assert got["feed-1-status"] == "0" and got["feed-1-statustime"].endswith(" GMT")
    lines = stat(node)
    assert (lines["feed.1.done"], lines["feed.1.errors"], lines["feed.1.state"]) == \
        ("2", "0", "ok")
    # a chunk already on the target counts as done (409 there)
    third = chunk_id(3)
    assert target.put(third, b"already there")[0] == 201
    assert node.put(third, b"already there")[0] == 201
    assert wait_for(lambda: stat(node)["feed.1.done"] == "3")
    assert stat(node)["feed.1.errors"] == "0"


def test_target_down_then_back(node_factory, tmp_path):
    port = free_port()
    node = source(node_factory, tmp_path, replication(1, port, retry_max=1))
    ids = [chunk_id(10 + i) for i in range(5)]
    for cid in ids:
        assert node.put(cid, cid.encode())[0] == 201
    assert wait_for(lambda: stat(node)["feed.1.state"] == "blocked", 20)
    lines = stat(node)
    assert lines["feed.1.pending"] == "5" and int(lines["feed.1.errors"]) >= 5
    assert verbose(node, ids[0]) == {"feed-1-status": "1", "feed-1-statustime": ""}
    target = node_factory(namespace="DRNS", listen=f"127.0.0.1:{port}")
    assert wait_for(lambda: pending(node, 1) == 0, 30)
    for cid in ids:
        assert target.request("GET", f"/{cid}")[2] == cid.encode()
    assert stat(node)["feed.1.state"] == "ok"


def _put_until_killed(node, results, stop):
    conn = node.conn(timeout=5)
    n = 0
    while not stop.is_set() and n < 5000:
        cid = chunk_id(100_000 + n)
        try:
            status = node.put(cid, cid.encode() * 20, conn=conn)[0]
        except OSError:
            return
        if status == 201:
            results.append(cid)
        n += 1


def test_sigkill_mid_stream_misses_nothing(node_factory, tmp_path):
    target = node_factory(namespace="DRNS")
    node = source(node_factory, tmp_path, replication(1, target), workers=2)
    acked, stop = [], threading.Event()
    # the delivery process dies first, mid-queue: the master starts another
    killed = delivery_pid(node) if wait_delivery_pid(node) else None
    writers = [threading.Thread(target=_put_until_killed, args=(node, acked, stop))
               for _ in range(3)]
    for thread in writers:
        thread.start()
    assert wait_for(lambda: len(acked) >= 100, 30)
    os.kill(killed, signal.SIGKILL)
    assert wait_for(lambda: len(acked) >= 400, 30)
    node.kill()  # SIGKILL to the master, the workers, the delivery process at once
    stop.set()
    for thread in writers:
        thread.join(30)
    missing = [cid for cid in acked if target.request("HEAD", f"/{cid}")[0] != 200]
    assert missing, "the kill came too late to test anything"
    node.start()
    assert wait_for(lambda: pending(node, 1) == 0, 60)
    missing = [cid for cid in acked if target.request("HEAD", f"/{cid}")[0] != 200]
    assert missing == []
    for cid in acked[:: max(1, len(acked) // 20)]:
        assert target.request("GET", f"/{cid}")[2] == cid.encode() * 20


def test_ten_thousand_queued_chunks_drain(node_factory, tmp_path):
    target = node_factory(namespace="DRNS", workers=2)
    node = source(node_factory, tmp_path, replication(1, target, concurrency=8), workers=2)
    pid = wait_delivery_pid(node)
    os.kill(pid, signal.SIGSTOP)  # queue them all first
    count = 10_000
    try:
        def put_range(start, stop):
            conn = node.conn()
            for n in range(start, stop):
                assert node.put(chunk_id(200_000 + n), b"x%d" % n, conn=conn)[0] == 201
        threads = [threading.Thread(target=put_range, args=(i * count // 4,
                                                            (i + 1) * count // 4))
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert pending(node, 1) == count
    finally:
        os.kill(pid, signal.SIGCONT)
    started = time.monotonic()
    rss = []

    def drained():
        with open(f"/proc/{pid}/status") as stream:
            rss.extend(int(line.split()[1]) for line in stream if line.startswith("VmRSS"))
        return pending(node, 1) == 0
    assert wait_for(drained, 60, step=0.5), f"{pending(node, 1)} left after 60 s"
    elapsed = time.monotonic() - started
    print(f"10000 chunks drained in {elapsed:.1f}s, delivery RSS max {max(rss)} KiB")
    assert max(rss) < 100 * 1024  # bounded: rows are taken a few at a time
    assert stat(node)["feed.1.done"] == str(count)
    for n in range(0, count, 997):
        assert target.request("GET", f"/{chunk_id(200_000 + n)}")[2] == b"x%d" % n


def _put_latencies(node, count, base):
    conn = node.conn()
    out = []
    try:
        for n in range(count):
            started = time.perf_counter()
            assert node.put(chunk_id(base + n), b"latency", conn=conn)[0] == 201
            out.append(time.perf_counter() - started)
    finally:
        conn.close()
    return out


def test_a_blocked_feed_holds_up_neither_the_others_nor_the_requests(node_factory,
                                                                      tmp_path):
    refusing = RefusingTarget(503)
    try:
        target = node_factory(namespace="DRNS")
        plain = node_factory()
        node = source(node_factory, tmp_path,
                      replication(1, refusing.port, retry_max=1) + replication(2, target))
        ids = [chunk_id(300 + i) for i in range(20)]
        for cid in ids:
            assert node.put(cid, b"blocked?")[0] == 201
        assert wait_for(lambda: stat(node)["feed.1.state"] == "blocked", 20)
        assert wait_for(lambda: pending(node, 2) == 0, 20)
        lines = stat(node)
        assert lines["feed.1.pending"] == "20" and lines["feed.2.state"] == "ok"
        assert all(target.request("HEAD", f"/{cid}")[0] == 200 for cid in ids)
        status = verbose(node, ids[0])
        assert status["feed-1-status"] == "1" and status["feed-2-status"] == "0"
        _, _, prom = node.request("GET", "/stat?format=prometheus")
        assert b'feed="1",state="blocked"} 1' in prom
        # the request path never waits on delivery: PUTs are answered as on a node
        # without feeds (medians printed, not asserted), and while the delivery
        # process is stopped outright
        ours = statistics.median(_put_latencies(node, 100, 400))
        theirs = statistics.median(_put_latencies(plain, 100, 400))
        print(f"PUT median with a blocked feed {ours * 1e3:.2f} ms, "
              f"without feeds {theirs * 1e3:.2f} ms")
        assert wait_for(lambda: pending(node, 2) == 0, 20)
        pid = delivery_pid(node)
        os.kill(pid, signal.SIGSTOP)
        try:
            _put_latencies(node, 20, 600)
            assert pending(node, 2) == 20  # recorded, not delivered
        finally:
            os.kill(pid, signal.SIGCONT)
        assert wait_for(lambda: pending(node, 2) == 0, 20)
        assert stat(node)["feed.1.state"] == "blocked"
        # an operator's retry: the feed is "retrying" (not "ok" before any delivery)
        # while its new attempts are out, then blocked again after as many failures
        errors = int(stat(node)["feed.1.errors"])
        refusing.gate.clear()  # the target holds the new attempts
        retry = subprocess.run([sys.executable, "-m", "storage", "feeds", "retry", "-f",
                                node.conf_path, "--feed", "1"], capture_output=True,
                               text=True, timeout=60)
        assert retry.returncode == 0, retry.stderr
        assert wait_for(lambda: stat(node)["feed.1.state"] != "blocked", 10)
        assert stat(node)["feed.1.state"] == "retrying"
        refusing.gate.set()
        assert wait_for(lambda: stat(node)["feed.1.state"] == "blocked", 20)
        assert int(stat(node)["feed.1.errors"]) >= errors + 5
    finally:
        refusing.close()


def test_prefix_filter_on_the_decoded_path(node_factory, tmp_path):
    target = node_factory(namespace="DRNS")
    node = source(node_factory, tmp_path, replication(1, target, prefix="acct/cont"))
    inside, encoded, outside = chunk_id(501), chunk_id(502), chunk_id(503)
    path = "/obj/1/0123456789ABCDEF0123456789ABCDEF"
    assert node.put(inside, b"in", {"X-oio-Chunk-Meta-Full-Path": "acct/cont" + path})[0] \
        == 201
    assert node.put(encoded, b"in too",
                    {"X-oio-Chunk-Meta-Full-Path": "acct/co%6Etainer" + path})[0] == 201
    assert node.put(outside, b"out",
                    {"X-oio-Chunk-Meta-Full-Path": "acct/other" + path})[0] == 201
    assert wait_for(lambda: pending(node, 1) == 0)
    assert target.request("HEAD", f"/{inside}")[0] == 200
    assert target.request("HEAD", f"/{encoded}")[0] == 200  # "acct/container" matches
    assert target.request("HEAD", f"/{outside}")[0] == 404
    assert stat(node)["feed.1.done"] == "2"
    assert verbose(node, outside) == {"feed-1-status": "0", "feed-1-statustime": ""}


def test_deletes_follow_only_with_deletes_true(node_factory, tmp_path):
    with_deletes = node_factory(namespace="DRNS")
    without = node_factory(namespace="DRNS")
    node = source(node_factory, tmp_path,
                  replication(1, with_deletes, deletes=True) + replication(2, without))
    cid, gone_before = chunk_id(601), chunk_id(602)
    assert node.put(cid, b"to delete")[0] == 201
    assert wait_for(lambda: pending(node, 1) == 0 and pending(node, 2) == 0)
    assert node.request("DELETE", f"/{cid}")[0] == 204
    assert wait_for(lambda: with_deletes.request("HEAD", f"/{cid}")[0] == 404)
    assert wait_for(lambda: pending(node, 1) == 0)
    assert without.request("HEAD", f"/{cid}")[0] == 200
    pid = wait_delivery_pid(node)
    os.kill(pid, signal.SIGSTOP)  # stored and deleted before any delivery
    try:
        assert node.put(gone_before, b"short-lived")[0] == 201
        assert node.request("DELETE", f"/{gone_before}")[0] == 204
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_for(lambda: pending(node, 1) == 0 and pending(node, 2) == 0)
    assert with_deletes.request("HEAD", f"/{gone_before}")[0] == 404
    assert without.request("HEAD", f"/{gone_before}")[0] == 404  # nothing to copy
    # a shallow-copy-free node: the rows of deleted chunks do not pile up
    import sqlite3
    db = sqlite3.connect(os.path.join(node.docroot, ".storage-node", "feeds.db"))
    assert db.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0
    db.close()


BAD_FILES = [
    ('[feed.1]\ntype = "mirror"\ntarget = "http://127.0.0.1:1"\n', "feed 1: unknown type"),
    ('[feed.2]\ntype = "replication"\n', "feed 2: missing target"),
    ('[feed.3]\ntype = "replication"\ntarget = "http://127.0.0.1:1"\nprefix = 7\n',
     "feed 3: prefix must be a string"),
    ('[feed.0]\ntype = "replication"\ntarget = "http://127.0.0.1:1"\n', "feed 0"),
    ('[feed.4]\ntype = "replication"\ntarget = "http://127.0.0.1:1"\n'
     '[feed.04]\ntype = "replication"\ntarget = "http://127.0.0.1:1"\n', "duplicate id"),
]


@pytest.mark.parametrize("text, words", BAD_FILES)
def test_a_bad_feeds_file_stops_the_start(tmp_path, text, words):
    feeds = write_feeds(tmp_path / "feeds.toml", text)
    conf = tmp_path / "rawx.conf"
    conf.write_text(f"listen 127.0.0.1:0\nnamespace N\ndocroot {tmp_path}/d\n"
                    f"feeds_config {feeds}\n")
    res = subprocess.run([sys.executable, "-m", "storage", "serve", "-f", str(conf)],
                         capture_output=True, timeout=30)
    assert res.returncode == 2
    assert words.encode() in res.stderr and b"feeds_config" in res.stderr


def test_sighup_rereads_the_feeds_file_and_refuses_a_bad_one(node_factory, tmp_path):
    target = node_factory(namespace="DRNS")
    node = source(node_factory, tmp_path, replication(1, target))
    feeds = tmp_path / "feeds.toml"
    old_pid = wait_delivery_pid(node)
    feeds.write_text(replication(1, target) + '[feed.2]\ntype = "replication"\n')
    node.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in node.stderr_path.read_text())
    assert "feed 2: missing target" in node.stderr_path.read_text()
    assert node.put(chunk_id(701), b"still serving")[0] == 201
    assert wait_for(lambda: pending(node, 1) == 0)
    assert delivery_pid(node) == old_pid and "feed.2.pending" not in stat(node)
    # a good file is applied: a new delivery process, the new feed in /stat
    other = node_factory(namespace="DRNS")
    feeds.write_text(replication(1, target) + replication(2, other))
    node.proc.send_signal(signal.SIGHUP)
    wait_delivery_pid(node, old=old_pid)
    # chunks the old workers acknowledge meanwhile are queued for the old feeds
    assert wait_for(lambda: "reload complete" in node.stderr_path.read_text())
    assert "feed.2.pending" in stat(node)
    assert node.put(chunk_id(702), b"after the reload")[0] == 201
    assert wait_for(lambda: other.request("HEAD", f"/{chunk_id(702)}")[0] == 200)
    assert wait_for(lambda: target.request("HEAD", f"/{chunk_id(702)}")[0] == 200)


def test_a_feed_removed_by_a_reload_drops_its_rows(node_factory, tmp_path):
    node = source(node_factory, tmp_path, replication(1, free_port(), retry_max=1))
    assert node.put(chunk_id(801), b"never delivered")[0] == 201
    old_pid = wait_delivery_pid(node)
    (tmp_path / "feeds.toml").write_text("")
    node.proc.send_signal(signal.SIGHUP)
    wait_delivery_pid(node, old=old_pid)
    assert wait_for(lambda: "feed 1 is no longer defined: 1 queued rows dropped"
                    in node.stderr_path.read_text())
    # the old workers answer with the old feeds until they are gone
    assert wait_for(lambda: "reload complete" in node.stderr_path.read_text())
    assert "feed.1.pending" not in stat(node)


@pytest.mark.skipif(BEANSTALKD is None, reason="beanstalkd not installed")
def test_indexing_feed_job_bodies(node_factory, tmp_path, beanstalkd_factory):
    server = beanstalkd_factory()
    text = (f'[feed.3]\ntype = "indexing"\ntarget = "beanstalk://127.0.0.1:{server.port}"\n'
            'tube = "idx"\ndeletes = true\n'
            f'[feed.4]\ntype = "search"\ntarget = "beanstalk://127.0.0.1:{server.port}"\n')
    node = source(node_factory, tmp_path, text)
    cid = chunk_id(900)
    assert node.put(cid, b"index me", {"X-oio-req-id": "feed-1",
                                       "X-oio-Chunk-Meta-Metachunk-Size": "8"})[0] == 201
    assert wait_for(lambda: pending(node, 3) == 0)
    assert node.request("DELETE", f"/{cid}", headers={"X-oio-req-id": "feed-2"})[0] == 204
    assert wait_for(lambda: pending(node, 3) == 0 and pending(node, 4) == 0)
    client = Client(server.port, tube="idx")
    try:
        bodies = client.take(3, timeout=2)
    finally:
        client.close()
    assert len(bodies) == 2
    new, deleted = (json.loads(b) for b in bodies)
    assert list(new) == ["event", "when", "request_id", "data"]
    assert (new["event"], new["request_id"]) == ("storage.chunk.new", "feed-1")
    assert new["data"] == {
        "volume_id": node.host, "volume_service_id": "rawx-test",
        "full_path": CHUNK_HEADERS["X-oio-Chunk-Meta-Full-Path"],
        "container_id": "05CF049BD72E5EB3E32AC1B00EE3D5ED4094AADB5AF3A15138E1BF11FA854A95",
        "content_path": "obj", "content_version": "1",
        "content_id": "0123456789ABCDEF0123456789ABCDEF",
        "content_storage_policy": "SINGLE", "metachunk_hash": "", "metachunk_size": "8",
        "chunk_id": cid, "content_chunk_method": "plain/nb_copy=1,cca=md5",
        "chunk_position": "0", "chunk_hash": hashlib.md5(b"index me").hexdigest().upper(),
        "chunk_size": "8"}
    assert (deleted["event"], deleted["request_id"]) == ("storage.chunk.deleted", "feed-2")
    assert deleted["data"] == new["data"]
    client = Client(server.port, tube="oio-index")  # feed 4: the default tube, no deletes
    try:
        bodies = client.take(3, timeout=2)
    finally:
        client.close()
    assert [json.loads(b)["event"] for b in bodies] == ["storage.chunk.new"]


def test_rsmc_receive_and_erase_are_queued(node_factory, tmp_path):
    from storage.rsmc.client import RsmcClient
    origin = node_factory()
    target = node_factory(namespace="DRNS")
    node = source(node_factory, tmp_path, replication(1, target, deletes=True),
                  rsmc_listen="127.0.0.1:0")
    cid = chunk_id(1001)
    body = os.urandom(5000)
    assert origin.put(cid, body)[0] == 201
    client = RsmcClient("127.0.0.1", node.rsmc_port, None, None, timeout=30)
    assert client.request("RECEIVE", "/", [f"http://{origin.host}/{cid}"]).code == 201
    assert wait_for(lambda: pending(node, 1) == 0)
    assert target.request("GET", f"/{cid}")[2] == body
    assert meta_of(target, cid) == meta_of(node, cid)
    client = RsmcClient("127.0.0.1", node.rsmc_port, None, None, timeout=30)
    assert client.request("ERASE", "/", [cid]).code == 204
    assert wait_for(lambda: target.request("HEAD", f"/{cid}")[0] == 404)
