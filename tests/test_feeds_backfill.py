"""Backfill: a feed added to a volume that already holds chunks is owed them (real
nodes, a real volume; storage.feeds.backfill)."""
import json
import signal
import socket
import subprocess
import sys
import threading

from feedsutil import chunk_id, pending, replication, stat, wait_delivery_pid, wait_for
from nodeutil import CHUNK_HEADERS
from storage import config as configmod
from storage.feeds.backfill import Backfill
from storage.feeds.config import parse_text
from storage.feeds.queue import FeedQueue
from storage.repo import FsChunkRepo

MINE = {"X-oio-Chunk-Meta-Full-Path": "mine/cont/obj/1/0123456789ABCDEF0123456789ABCDEF"}
OTHER = {"X-oio-Chunk-Meta-Full-Path": "other/cont/obj/1/0123456789ABCDEF0123456789ABCDEF"}


def add_feeds(node, path, text):
    path.write_text(text)
    with open(node.conf_path, "a") as conf:
        conf.write(f"feeds_config {path}\n")


def test_a_new_feed_gets_the_older_chunks_that_match(node_factory, tmp_path):
    target = node_factory(sub="t", namespace="DRNS")
    node = node_factory(sub="src")
    mine = [chunk_id(100 + i) for i in range(40)]
    other = [chunk_id(200 + i) for i in range(10)]
    for cid in mine:
        assert node.put(cid, cid.encode(), MINE)[0] == 201
    for cid in other:
        assert node.put(cid, cid.encode(), OTHER)[0] == 201
    node.stop()
    add_feeds(node, tmp_path / "feeds.toml", replication(1, target, prefix="mine/"))
    node.start()
    assert wait_for(lambda: stat(node)["feed.1.done"] == str(len(mine)), 30)
    assert pending(node, 1) == 0
    for cid in mine:
        assert target.request("GET", f"/{cid}")[2] == cid.encode()
    for cid in other:
        assert target.request("HEAD", f"/{cid}")[0] == 404
    assert "feed 1: backfill done, 40 chunks queued" in node.stderr_path.read_text()
    # a restart does not backfill again: the feed is known
    node.stop()
    node.start()
    assert wait_for(lambda: "delivering feed 1" in node.stderr_path.read_text())
    assert stat(node)["feed.1.done"] == str(len(mine))
    assert node.stderr_path.read_text().count("backfill starts") == 1


def test_backfill_false_owes_only_the_new_chunks(node_factory, tmp_path):
    target = node_factory(sub="t", namespace="DRNS")
    node = node_factory(sub="src")
    assert node.put(chunk_id(1), b"old")[0] == 201
    node.stop()
    add_feeds(node, tmp_path / "feeds.toml", replication(1, target, backfill=False))
    node.start()
    assert node.put(chunk_id(2), b"new")[0] == 201
    assert wait_for(lambda: target.request("HEAD", f"/{chunk_id(2)}")[0] == 200)
    assert target.request("HEAD", f"/{chunk_id(1)}")[0] == 404
    assert stat(node)["feed.1.done"] == "1"


def test_a_feed_added_by_sighup_is_backfilled(node_factory, tmp_path):
    first = node_factory(sub="t1", namespace="DRNS")
    second = node_factory(sub="t2", namespace="DRNS")
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(replication(1, first))
    node = node_factory(sub="src", feeds_config=str(feeds))
    ids = [chunk_id(300 + i) for i in range(5)]
    for cid in ids:
        assert node.put(cid, b"before feed 2")[0] == 201
    old = wait_delivery_pid(node)
    feeds.write_text(replication(1, first) + replication(2, second))
    node.proc.send_signal(signal.SIGHUP)
    wait_delivery_pid(node, old=old)
    assert wait_for(lambda: all(second.request("HEAD", f"/{c}")[0] == 200 for c in ids), 30)
    assert stat(node)["feed.1.done"] == "5"  # feed 1 is not queued again


def test_a_chunk_an_old_worker_stores_during_the_reload_reaches_the_new_feed(
        node_factory, tmp_path):
    first = node_factory(sub="t1", namespace="DRNS")
    second = node_factory(sub="t2", namespace="DRNS")
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(replication(1, first))
    node = node_factory(sub="src", feeds_config=str(feeds))
    old = wait_delivery_pid(node)
    cid = chunk_id(400)
    body = b"z" * 100_000
    head = "".join(f"{k}: {v}\r\n" for k, v in {**CHUNK_HEADERS, **MINE}.items())
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=20)
    try:  # an upload the old worker is in the middle of when the reload comes
        sock.sendall(f"PUT /{cid} HTTP/1.1\r\nHost: {node.host}\r\nContent-Length: "
                     f"{len(body)}\r\n{head}Connection: close\r\n\r\n".encode()
                     + body[:50_000])
        feeds.write_text(replication(1, first) + replication(2, second))
        node.proc.send_signal(signal.SIGHUP)
        wait_delivery_pid(node, old=old)
        assert wait_for(lambda: "backfill: waiting for" in node.stderr_path.read_text())
        sock.sendall(body[50_000:])
        assert sock.recv(4096).startswith(b"HTTP/1.1 201")
    finally:
        sock.close()
    assert wait_for(lambda: second.request("HEAD", f"/{cid}")[0] == 200, 30)
    assert wait_for(lambda: first.request("HEAD", f"/{cid}")[0] == 200, 30)


def test_the_scan_resumes_after_its_cursor(tmp_path):
    """A scan stopped part way (its cursor in the queue) goes on after the last
    directory it finished, and never queues one twice."""
    docroot = tmp_path / "vol"
    docroot.mkdir()
    repo = FsChunkRepo(str(docroot), 3, 1)
    ids = ["%03X" % n + "0" * 61 for n in (0x001, 0x00A, 0xA00, 0xFFF)]
    for cid in ids:
        writer = repo.writer(cid)
        writer.open()
        writer.write(b"data")
        writer.set_attrs({"user.oio.content.fullpath:" + cid: b"a/c/o/1/0123"})
        writer.commit()
    conf = tmp_path / "rawx.conf"
    conf.write_text(f"listen 127.0.0.1:6009\nnamespace OPENIO\ndocroot {docroot}\n")
    config = configmod.load(str(conf))
    feed = parse_text('[feed.1]\ntype = "replication"\ntarget = "http://127.0.0.1:9"\n')[0]
    fq = FeedQueue(str(docroot))
    fq.start_backfill([1])
    fq.backfill_step(1, [ids[0]], "001")  # as if stopped after the first directory
    scan = Backfill(config, repo, [feed], threading.Event())
    scan.run()
    assert fq.backfills() == {}  # finished
    queued = sorted(row[0] for row in fq.due(1, 100))
    assert queued == sorted(ids)
    assert fq.counts()[1][0] == 4
    fq.close()


def test_feeds_status_shows_a_backfill_under_way(tmp_path):
    docroot = tmp_path / "vol"
    docroot.mkdir()
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(replication(1, 9))
    conf = tmp_path / "rawx.conf"
    conf.write_text(f"listen 127.0.0.1:6009\nnamespace OPENIO\ndocroot {docroot}\n"
                    f"feeds_config {feeds}\n")
    fq = FeedQueue(str(docroot))
    fq.prepare_feeds([1])
    fq.start_backfill([1])
    fq.backfill_step(1, [chunk_id(1), chunk_id(2)], "7FF")
    fq.close()
    out = subprocess.run([sys.executable, "-m", "storage", "feeds", "status", "-f", str(conf),
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fill = json.loads(out.stdout)[0]["backfill"]
    assert fill["directory"] == "7FF" and fill["fraction"] == 0.5 and fill["queued"] == 2
    out = subprocess.run([sys.executable, "-m", "storage", "feeds", "status", "-f", str(conf)],
                         capture_output=True, text=True, timeout=60)
    assert "feed 1: backfill of the older chunks 50% done (hash directory 7FF), 2 queued" \
        in out.stdout
