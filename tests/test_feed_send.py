"""The feed form of SEND (``SEND /<ID>?feedid=..&admin``, spec send.md) between real
nodes: a source node (cluster OPENIO) whose feeds replicate to nodes of another
cluster and publish to a real beanstalkd; curl and raw sockets as clients."""
import os
import socket
import threading
import time

import pytest

from beanstalkutil import BEANSTALKD, Client, free_port
from feedsutil import pending, replication, stat, wait_for, write_feeds
from nodeutil import chunk_id
from sendutil import PASSWORD, basic, body_of, curl_send, htdigest_line, raw_send

AUTH = {"Authorization": basic()}


@pytest.fixture
def htdigest(tmp_path):
    path = tmp_path / "admin.htdigest"
    path.write_text(htdigest_line("admin", PASSWORD))
    return path


def source(node_factory, tmp_path, htdigest, text, **extra):
    path = write_feeds(tmp_path / "feeds.toml", text)
    extra.setdefault("keepalive_interval", 0.3)
    return node_factory(sub="src", feeds_config=str(path), admin_htdigest=htdigest, **extra)


def feed_send(node, cid, query, read_timeout=30):
    """(status, head headers {lower name: value}, body lines, trailers, seconds)."""
    started = time.monotonic()
    status, head, pieces, trailers = raw_send(node, cid, AUTH, query=query,
                                              read_timeout=read_timeout)
    took = time.monotonic() - started
    headers = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    lines = [line for line in body_of(pieces).split("\n") if line]
    return status, headers, lines, trailers, took


def feed_fields(headers):
    return {k: v for k, v in headers.items() if k.startswith("feed-")}


def test_done_feeds_answer_at_once_in_the_head(node_factory, tmp_path, htdigest):
    target = node_factory(sub="t", namespace="DRNS")
    node = source(node_factory, tmp_path, htdigest, replication(1, target))
    cid = chunk_id(1)
    assert node.put(cid, b"replicated")[0] == 201
    assert wait_for(lambda: pending(node, 1) == 0)
    status, headers, lines, trailers, _ = feed_send(node, cid, "?feedid=1&admin")
    assert status == 200
    fields = feed_fields(headers)
    assert fields["feed-1-status"] == "0" and fields["feed-1-statustime"].endswith(" GMT")
    assert lines == [] and trailers == {}  # nothing was processed now
    assert headers["x-oio-chunk-meta-chunk-id"] == cid  # HEAD-like headers


def test_chunk_stored_before_the_feed_existed_is_sent_now(node_factory, tmp_path,
                                                           htdigest):
    target = node_factory(sub="t", namespace="DRNS")
    node = node_factory(sub="src", admin_htdigest=htdigest)
    cid = chunk_id(2)
    body = os.urandom(200_000)
    assert node.put(cid, body, {"X-Oio-Ext-Tag": "old"})[0] == 201
    node.stop()
    # backfill off: the SEND, not the backfill of a new feed, must be what sends it
    feeds = write_feeds(tmp_path / "feeds.toml", replication(1, target, backfill=False))
    with open(node.conf_path, "a") as conf:
        conf.write(f"feeds_config {feeds}\n")
    node.start()
    assert target.request("HEAD", f"/{cid}")[0] == 404
    status, headers, lines, trailers, _ = feed_send(node, cid, "?feedid=1&admin")
    assert status == 200 and feed_fields(headers) == {}
    assert lines[0] == "Feed-1-Status: 0" and lines[1].startswith("Feed-1-StatusTime: ")
    assert trailers["feed-1-status"] == "0" and trailers["feed-1-statustime"].endswith("GMT")
    assert target.request("GET", f"/{cid}")[2] == body
    assert target.request("HEAD", f"/{cid}")[1]["x-oio-ext-tag"] == "old"


def test_timeout_really_expires_with_status_1(node_factory, tmp_path, htdigest):
    port = free_port()  # nothing listens there
    node = source(node_factory, tmp_path, htdigest, replication(1, port, retry_max=60))
    cid = chunk_id(3)
    assert node.put(cid, b"owed")[0] == 201
    status, _, pieces, trailers = raw_send(node, cid, AUTH, query="?feedid=1&timeout=1.5&admin")
    assert status == 200
    newlines = [p for _, p in pieces if p == b"\n"]
    assert len(newlines) >= 3  # keepalive_interval 0.3 s
    last = max(t for t, _ in pieces)
    assert 1.5 <= last < 6
    assert trailers == {"feed-1-status": "1", "feed-1-statustime": ""}
    assert body_of(pieces).rstrip("\n").endswith("Feed-1-Status: 1\nFeed-1-StatusTime: ")


def test_target_back_within_the_timeout_is_0(node_factory, tmp_path, htdigest):
    port = free_port()
    node = source(node_factory, tmp_path, htdigest, replication(1, port, retry_max=1))
    cid = chunk_id(4)
    assert node.put(cid, b"late")[0] == 201
    time.sleep(0.6)  # the feed is retrying now, not blocked
    box = {}
    thread = threading.Thread(target=lambda: box.update(r=feed_send(
        node, cid, "?feedid=1&timeout=20&admin")))
    thread.start()
    time.sleep(0.5)
    target = node_factory(sub="t", namespace="DRNS", listen=f"127.0.0.1:{port}")
    thread.join(30)
    status, _, lines, trailers, took = box["r"]
    assert status == 200 and trailers["feed-1-status"] == "0", (lines, trailers)
    assert took < 15
    assert target.request("GET", f"/{cid}")[2] == b"late"


def test_blocked_feed_is_reported_not_retried(node_factory, tmp_path, htdigest):
    port = free_port()
    target = node_factory(sub="t", namespace="DRNS")
    text = replication(1, port, retry_max=0.2) + replication(2, target)
    node = source(node_factory, tmp_path, htdigest, text)
    cid = chunk_id(5)
    assert node.put(cid, b"blocked")[0] == 201
    assert wait_for(lambda: stat(node)["feed.1.state"] == "blocked", 20)
    assert wait_for(lambda: pending(node, 2) == 0)
    status, headers, lines, trailers, took = feed_send(
        node, cid, "?feedid=1&feedid=2&timeout=20&admin")
    assert took < 5  # reported at once, not waited on
    assert feed_fields(headers)["feed-2-status"] == "0"
    assert trailers["feed-1-status"] == "503" and "feed-2-status" not in trailers
    assert "Feed-1-Status: 503" in lines


def test_force_reprocess_delivers_again(node_factory, tmp_path, htdigest):
    target = node_factory(sub="t", namespace="DRNS")
    node = source(node_factory, tmp_path, htdigest, replication(1, target))
    cid = chunk_id(6)
    assert node.put(cid, b"again")[0] == 201
    assert wait_for(lambda: pending(node, 1) == 0)
    assert target.request("DELETE", f"/{cid}")[0] == 204
    for force in ("forceReprocess", "force=yes"):
        status, headers, _, trailers, _ = feed_send(node, cid, f"?feedid=1&{force}&admin")
        assert status == 200 and feed_fields(headers) == {}
        assert trailers["feed-1-status"] == "0"
        assert target.request("GET", f"/{cid}")[2] == b"again"
        assert target.request("DELETE", f"/{cid}")[0] == 204
    # forceReprocess=no: done is done, nothing is sent
    status, headers, _, trailers, _ = feed_send(node, cid, "?feedid=1&force=no&admin")
    assert feed_fields(headers)["feed-1-status"] == "0" and trailers == {}
    assert target.request("HEAD", f"/{cid}")[0] == 404


def test_prefix_mismatch_succeeds_with_nothing_sent(node_factory, tmp_path, htdigest):
    target = node_factory(sub="t", namespace="DRNS")
    node = source(node_factory, tmp_path, htdigest,
                  replication(1, target, prefix="other-account/"))
    cid = chunk_id(7)
    assert node.put(cid, b"not mine")[0] == 201
    status, headers, lines, trailers, _ = feed_send(node, cid, "?feedtype=all&admin")
    assert status == 200 and feed_fields(headers)["feed-1-status"] == "0"
    assert lines == [] and trailers == {}
    assert target.request("HEAD", f"/{cid}")[0] == 404


def test_failure_code_of_a_corrupt_chunk(node_factory, tmp_path, htdigest):
    target = node_factory(sub="t", namespace="DRNS")
    node = source(node_factory, tmp_path, htdigest, replication(1, target, retry_max=60))
    node.stop()  # store the chunk with delivery stopped, then corrupt it
    feeds_line = [line for line in node.conf_path.read_text().splitlines()
                  if line.startswith("feeds_config")][0]
    node.conf_path.write_text(node.conf_path.read_text().replace(feeds_line + "\n", ""))
    node.start()
    cid = chunk_id(8)
    assert node.put(cid, b"x" * 5000)[0] == 201
    with open(node.chunk_path(cid), "r+b") as chunk:
        chunk.write(b"y")
    node.stop()
    with open(node.conf_path, "a") as conf:
        conf.write(feeds_line + "\n")
    node.start()
    status, _, lines, trailers, _ = feed_send(node, cid, "?feedid=1&timeout=10&admin")
    assert status == 200 and trailers["feed-1-status"] == "412", (lines, trailers)
    assert target.request("HEAD", f"/{cid}")[0] == 404  # never stored there


@pytest.mark.skipif(BEANSTALKD is None, reason="beanstalkd not installed")
def test_union_of_feedid_and_feedtype_with_curl(node_factory, tmp_path, htdigest,
                                                beanstalkd_factory):
    server = beanstalkd_factory()
    target = node_factory(sub="t", namespace="DRNS")
    text = replication(1, target, backfill=False) + replication(2, target, prefix="nothing/") \
        + (f'[feed.3]\ntype = "indexing"\ntarget = "beanstalk://127.0.0.1:{server.port}"\n'
           'tube = "idx"\nbackfill = false\n')
    node = source(node_factory, tmp_path, htdigest, text)
    node.stop()  # the chunk goes in before the feeds, so the SEND has work to do
    conf = node.conf_path.read_text()
    node.conf_path.write_text("\n".join(line for line in conf.splitlines()
                                        if not line.startswith("feeds_config")) + "\n")
    node.start()
    cid = chunk_id(9)
    assert node.put(cid, b"indexed")[0] == 201
    node.stop()
    node.conf_path.write_text(conf)
    node.start()
    status, body, _ = curl_send(node, cid, None, cluster=None,
                                query="?feedid=1&feedtype=indexing&timeout=10&admin")
    assert status == 200
    lines = body.split("\n")
    assert "Feed-1-Status: 0" in lines and "Feed-3-Status: 0" in lines
    assert not any(line.startswith("Feed-2-") for line in lines)  # not selected
    client = Client(server.port, tube="idx")
    try:
        job = client.command("reserve-with-timeout 5")
        assert job.startswith(b"RESERVED")
    finally:
        client.close()


@pytest.mark.parametrize("query, reason", [
    ("?feedid=9&admin", b"not a defined feed"),
    ("?feedid=one&admin", b"not a defined feed"),
    ("?feedid=-1&admin", b"not a defined feed"),
    ("?feedtype=backup&admin", b"feedtype"),
    ("?feedid=1&timeout=soon&admin", b"timeout"),
    ("?feedid=1&timeout=-3&admin", b"timeout"),
    ("?feedid=1&timeout=nan&admin", b"timeout"),
    ("?feedid=1&forceReprocess=maybe&admin", b"forceReprocess"),
])
def test_bad_arguments_are_400(node_factory, tmp_path, htdigest, query, reason):
    target = node_factory(sub="t", namespace="DRNS")
    node = source(node_factory, tmp_path, htdigest, replication(1, target))
    cid = chunk_id(10)
    assert node.put(cid, b"x")[0] == 201
    status, _, body = node.request("SEND", f"/{cid}{query}", headers=AUTH)
    assert status == 400 and reason in body, body


def test_refusals_before_anything_runs(node_factory, tmp_path, htdigest):
    target = node_factory(sub="t", namespace="DRNS")
    node = source(node_factory, tmp_path, htdigest, replication(1, target))
    cid = chunk_id(11)
    assert node.put(cid, b"x")[0] == 201
    assert node.request("SEND", f"/{cid}?feedid=1")[0] == 400  # no ?admin
    assert node.request("SEND", f"/{cid}?feedid=1&admin")[0] == 401
    assert node.request("SEND", f"/{cid}?feedid=9&admin")[0] == 401  # auth first
    assert node.request("SEND", f"/{chunk_id(12)}?feedid=1&admin", headers=AUTH)[0] == 404
    # a node without feeds: any feed id is unknown, a type selects nothing
    bare = node_factory(sub="bare", admin_htdigest=htdigest)
    assert bare.put(cid, b"x")[0] == 201
    assert bare.request("SEND", f"/{cid}?feedid=1&admin", headers=AUTH)[0] == 400
    status, headers, lines, trailers, _ = feed_send(bare, cid, "?feedtype=all&admin")
    assert status == 200 and feed_fields(headers) == {} and lines == [] and not trailers


def test_client_leaving_mid_wait_ends_the_send(node_factory, tmp_path, htdigest):
    port = free_port()
    node = source(node_factory, tmp_path, htdigest, replication(1, port, retry_max=60))
    cid = chunk_id(13)
    assert node.put(cid, b"owed")[0] == 201
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(f"SEND /{cid}?feedid=1&timeout=false&admin HTTP/1.1\r\n"
                     f"Host: {node.host}\r\nAuthorization: {basic()}\r\n\r\n".encode())
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 ")  # the head goes out at once
    # the SEND ends (logged as the client leaving) and the worker goes on serving
    assert any(" 499 " in line for line in node.access_lines(" 499 "))
    assert node.request("HEAD", f"/{cid}")[0] == 200
    assert stat(node)["feed.1.pending"] == "1"  # the delivery still owes it
