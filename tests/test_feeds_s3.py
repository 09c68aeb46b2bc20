"""s3backup feeds and ``storage-node feeds status|retry|restore`` on real parts: real
nodes, moto's S3 server as its own process on 127.0.0.1, boto3 to look in the bucket."""
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from feedsutil import chunk_id, pending, stat, wait_for, write_feeds
from proxyutil import Relay
from s3util import CREDENTIALS, MotoServer, keys, put_backup, s3backup

from storage.feeds import s3 as s3feed

META_PREFIXES = ("x-oio-chunk-meta-", "x-oio-ext-")
LONG_PATH = "acct/cont/" + "d%C3%A9j%C3%A0-vu%2F" * 120 + "obj/1/0123456789ABCDEF0123456789ABCDEF"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer(log_path=str(tmp_path_factory.mktemp("moto") / "moto.log")).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(moto):
    """A new, empty bucket of the shared server: (client, name)."""
    client = moto.client()
    name = "b-" + uuid.uuid4().hex[:12]
    client.create_bucket(Bucket=name)
    return client, name


def s3node(node_factory, tmp_path, text, **extra):
    path = write_feeds(tmp_path / f"feeds-{uuid.uuid4().hex[:6]}.toml", text)
    return node_factory(feeds_config=str(path), env=CREDENTIALS, **extra)


def cli(*args, timeout=60):
    """storage-node feeds ARGS in a process of its own: (exit status, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "storage", "feeds", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **CREDENTIALS})
    return proc.returncode, proc.stdout, proc.stderr


def meta_of(node, cid):
    status, headers, _ = node.request("HEAD", f"/{cid}")
    assert status == 200, (status, cid)
    return {k: v for k, v in headers.items() if k.startswith(META_PREFIXES)}


def xattrs(node, cid):
    path = node.chunk_path(cid)
    return {name: os.getxattr(path, name) for name in os.listxattr(path)}


def data_of(client, name, key):
    return client.get_object(Bucket=name, Key=key)["Body"].read()


# ---- the metadata encoding, alone --------------------------------------------------------
def test_metadata_round_trip_any_bytes_and_the_sidecar_rule():
    headers = {"X-Oio-Chunk-Meta-Full-Path": "a/c/%E9t%C3%A9 x/1/0A",
               "X-Oio-Chunk-Meta-Chunk-Id": "0A" * 16,
               # every byte a header value may hold, as latin-1 (PUT headers carry
               # ext values percent-encoded; a control character is refused below)
               "X-Oio-Ext-Raw": "".join(chr(c) for c in range(256)
                                        if c == 9 or 0x20 <= c != 0x7f),
               "X-Oio-Ext-Pct": "100% sure"}
    user, sidecar = s3feed.encode_metadata("0A" * 16, headers)
    assert sidecar is None and all(v.isascii() and " " not in v for v in user.values())
    assert s3feed.decode_user_metadata({k.upper(): v for k, v in user.items()}) == headers
    big = dict(headers, **{f"X-Oio-Ext-K{n}": "v" * 100 for n in range(20)})
    user, sidecar = s3feed.encode_metadata("0A" * 16, big)
    assert user == {"oio-format": "1", "oio-sidecar": "1"}
    assert s3feed.decode_sidecar(sidecar, "0a" * 16) == big
    with pytest.raises(s3feed.BadBackup, match="another chunk"):
        s3feed.decode_sidecar(sidecar, "0B" * 16)
    with pytest.raises(s3feed.BadBackup, match="not JSON"):
        s3feed.decode_sidecar(b"{", "0A" * 16)
    user, _ = s3feed.encode_metadata("0A" * 16, {"X-Oio-Ext-Raw": "a\r\nHost: x"})
    with pytest.raises(s3feed.BadBackup, match="control character"):
        s3feed.decode_user_metadata(user)


def test_boto3_is_imported_only_for_s3_feeds():
    code = ("import sys, storage.server, storage.feeds.deliver, storage.cli; "
            "storage.cli.build_parser(); assert 'boto3' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class CountingBody(io.BytesIO):
    """A body that counts the bytes read from it and its rewinds."""
    read_bytes = rewinds = 0

    def read(self, size=-1):
        piece = super().read(size)
        self.read_bytes += len(piece)
        return piece

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_SET and offset == 0 and self.tell():
            self.rewinds += 1
        return super().seek(offset, whence)


def test_a_body_is_read_once_even_over_plain_http(bucket, moto, monkeypatch):
    """Over http://, botocore would read a body once to sign it (a SHA-256 pass) and
    again to send it; the feeds' client sends it unsigned (Content-MD5 and the ETag
    guard the data), so a chunk is read and hashed once."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    _, name = bucket
    client = s3feed.make_client(moto.endpoint)
    data = os.urandom(3 << 20 | 7)
    body = CountingBody(data)
    reply = client.put_object(Bucket=name, Key="once", Body=body, ContentLength=len(data),
                              ContentMD5=s3feed._b64(hashlib.md5(data).digest()))
    assert (body.read_bytes, body.rewinds) == (len(data), 0)
    assert reply["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert data_of(client, name, "once") == data


# ---- delivery ----------------------------------------------------------------------------
def test_chunks_land_in_the_bucket_and_restore_byte_for_byte(node_factory, tmp_path, bucket,
                                                            moto):
    client, name = bucket
    node = s3node(node_factory, tmp_path, s3backup(1, moto, name, "backup/v1"))
    bodies = {chunk_id(n): os.urandom(1000 * n + 1) for n in range(1, 5)}
    bodies[chunk_id(5)] = b""
    bodies[chunk_id(6)] = os.urandom(2_500_000)  # several pieces on the way
    extra = {chunk_id(1): {"X-Oio-Ext-Color": "bl%C3%BCe%20%25"},
             chunk_id(2): {"X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1,cca=blake3"},
             chunk_id(3): {"X-oio-Chunk-Meta-Full-Path": LONG_PATH,  # past 2 KB: a sidecar
                           **{f"X-Oio-Ext-Tag{n}": "%E2%9C%93" * 20 for n in range(8)}}}
    for cid, body in bodies.items():
        assert node.put(cid, body, extra.get(cid))[0] == 201
    assert wait_for(lambda: pending(node, 1) == 0, 20)
    assert stat(node)["feed.1.done"] == "6" and stat(node)["feed.1.errors"] == "0"
    prefix = "backup/v1/"
    assert keys(client, name) == sorted([prefix + c for c in bodies]
                                        + [prefix + chunk_id(3) + ".meta"])
    for cid, body in bodies.items():
        obj = client.get_object(Bucket=name, Key=prefix + cid)
        assert obj["Body"].read() == body
        if cid != chunk_id(3):
            assert s3feed.decode_user_metadata(obj["Metadata"])[
                "X-Oio-Chunk-Meta-Chunk-Hash"] == meta_of(node, cid)["x-oio-chunk-meta-chunk-hash"]
    assert client.head_object(Bucket=name, Key=prefix + chunk_id(3))["Metadata"] == \
        {"oio-format": "1", "oio-sidecar": "1"}

    fresh = node_factory()
    conf = node.conf_path
    code, out, err = cli("restore", "-f", conf, "--feed", 1, "--to",
                         f"http://{fresh.host}", "--progress")
    assert code == 0, err
    assert "6 restored, 0 skipped, 0 failed" in err and "restored 6" in err
    for cid, body in bodies.items():
        assert fresh.request("GET", f"/{cid}")[2] == body
        assert xattrs(fresh, cid) == xattrs(node, cid)
        assert meta_of(fresh, cid) == meta_of(node, cid)
    assert meta_of(fresh, chunk_id(1))["x-oio-ext-color"] == \
        "blüe %".encode().decode("latin-1")
    code, _, err = cli("restore", "-f", conf, "--feed", 1, "--to",
                       f"http://{fresh.host}")
    assert code == 0 and "0 restored, 6 skipped, 0 failed" in err
    # named chunks only; one the bucket does not have fails the run
    other = node_factory()
    missing = chunk_id(99)
    code, out, err = cli("restore", "-f", conf, "--feed", 1, "--to",
                         f"http://{other.host}", chunk_id(3), missing)
    assert code == 1 and "1 restored, 0 skipped, 1 failed" in err
    assert out.startswith(f"{missing} no such object")
    assert xattrs(other, chunk_id(3)) == xattrs(node, chunk_id(3))
    assert other.request("HEAD", f"/{chunk_id(1)}")[0] == 404


def test_an_object_without_metadata_is_reported_not_written(node_factory, tmp_path, bucket,
                                                           moto):
    client, name = bucket
    node = s3node(node_factory, tmp_path, s3backup(1, moto, name))
    good, bare, orphan = chunk_id(1), chunk_id(2), chunk_id(3)
    assert node.put(good, b"good")[0] == 201
    assert node.put(orphan, b"x", {"X-Oio-Ext-Big": "y" * 2500})[0] == 201
    assert wait_for(lambda: pending(node, 1) == 0, 20)
    client.put_object(Bucket=name, Key=bare, Body=b"no metadata")
    client.delete_object(Bucket=name, Key=orphan + ".meta")
    client.put_object(Bucket=name, Key="not-a-chunk", Body=b"ignored")
    fresh = node_factory()
    code, out, err = cli("restore", "-f", node.conf_path, "--feed", 1, "--to",
                         f"http://{fresh.host}")
    assert code == 1 and "1 restored, 0 skipped, 2 failed" in err
    assert f"{bare} not restored: its object has no chunk metadata" in out
    assert f"{orphan} not restored: its metadata sidecar is missing" in out
    assert fresh.request("HEAD", f"/{bare}")[0] == 404
    assert fresh.request("HEAD", f"/{orphan}")[0] == 404
    assert fresh.request("GET", f"/{good}")[2] == b"good"


def test_a_compressed_chunk_is_backed_up_uncompressed(node_factory, tmp_path, bucket, moto):
    client, name = bucket
    node = s3node(node_factory, tmp_path, s3backup(1, moto, name), compression="zlib")
    body = b"compressible " * 250_000  # 3.25 MB: inflated in several pieces
    cid = chunk_id(7)
    assert node.put(cid, body)[0] == 201
    assert os.path.getsize(node.chunk_path(cid)) < len(body) // 10  # stored compressed
    assert wait_for(lambda: pending(node, 1) == 0, 20)
    assert data_of(client, name, cid) == body
    fresh = node_factory()
    code, _, err = cli("restore", "-f", node.conf_path, "--feed", 1, "--to",
                       f"http://{fresh.host}", cid)
    assert code == 0, err
    assert fresh.request("GET", f"/{cid}")[2] == body
    assert meta_of(fresh, cid) == meta_of(node, cid)


def test_deletes_follow_only_with_deletes_true(node_factory, tmp_path, moto):
    client = moto.client()
    names = ["d-" + uuid.uuid4().hex[:12] for _ in range(2)]
    for one in names:
        client.create_bucket(Bucket=one)
    node = s3node(node_factory, tmp_path, s3backup(1, moto, names[0], deletes=True)
                  + s3backup(2, moto, names[1]))
    cid, big = chunk_id(1), chunk_id(2)
    assert node.put(cid, b"bye")[0] == 201
    assert node.put(big, b"bye", {"X-Oio-Ext-Big": "z" * 2500})[0] == 201
    assert wait_for(lambda: pending(node, 1) == pending(node, 2) == 0, 20)
    assert keys(client, names[0]) == keys(client, names[1]) == [cid, big, big + ".meta"]
    for one in (cid, big):
        assert node.request("DELETE", f"/{one}")[0] == 204
    assert wait_for(lambda: keys(client, names[0]) == [], 20)
    assert keys(client, names[1]) == [cid, big, big + ".meta"]
    assert stat(node)["feed.1.errors"] == "0"


# ---- failures, status and retry ------------------------------------------------------------
def test_a_body_damaged_on_the_way_is_sent_again(node_factory, tmp_path, bucket, moto):
    """moto, like some S3-compatible servers, stores a body whatever its Content-MD5
    says: the ETag of what was stored tells the feed, which sends the chunk again."""
    client, name = bucket
    relay = Relay(int(moto.endpoint.rsplit(":", 1)[1]))
    relay.corrupt = True
    try:
        node = s3node(node_factory, tmp_path,
                      s3backup(1, f"http://{relay.host}", name, retry_max=1))
        cid, body = chunk_id(11), os.urandom(300_000)
        assert node.put(cid, body)[0] == 201
        assert wait_for(lambda: int(stat(node)["feed.1.errors"]) >= 1, 20)
        assert relay.corrupted >= 1 and pending(node, 1) == 1
        code, out, _ = cli("status", "-f", node.conf_path, "--json")
        assert code == 0 and "ETag" in json.loads(out)[0]["last_error"]
        relay.corrupt = False
        assert cli("retry", "-f", node.conf_path, "--feed", 1)[0] == 0
        assert wait_for(lambda: pending(node, 1) == 0, 20)
        assert data_of(client, name, cid) == body
    finally:
        relay.close()


def test_missing_bucket_blocks_the_feed_alone_until_it_is_created(node_factory, tmp_path,
                                                                  bucket, moto):
    client, good = bucket
    missing = "m-" + uuid.uuid4().hex[:12]
    node = s3node(node_factory, tmp_path, s3backup(1, moto, missing, retry_max=1)
                  + s3backup(2, moto, good))
    ids = [chunk_id(n) for n in range(1, 4)]
    for cid in ids:
        assert node.put(cid, cid.encode())[0] == 201
    assert wait_for(lambda: stat(node)["feed.1.state"] == "blocked", 20)
    assert pending(node, 2) == 0 and keys(client, good) == ids  # the other feed delivers
    code, out, _ = cli("status", "-f", node.conf_path, "--json")
    assert code == 0
    rows = {row["id"]: row for row in json.loads(out)}
    lines = stat(node)
    assert (rows[1]["pending"], rows[1]["state"]) == (3, "blocked") == \
        (int(lines["feed.1.pending"]), lines["feed.1.state"])
    assert "NoSuchBucket" in rows[1]["last_error"] and rows[1]["oldest_pending_age"] >= 0
    assert (rows[2]["pending"], rows[2]["done"], rows[2]["state"]) == (0, 3, "ok")
    assert rows[1]["type"] == "s3backup" and rows[1]["target"] == f"s3://{missing}"
    # a chunk corrupted while it waits is never stored: FAILED, 412
    path = node.chunk_path(ids[0])
    with open(path, "r+b") as stream:
        stream.write(b"X")
    client.create_bucket(Bucket=missing)
    assert wait_for(lambda: pending(node, 1) == 0, 20)
    assert keys(client, missing) == ids[1:]
    _, headers, _ = node.request("HEAD", f"/{ids[0]}?verbose")
    assert headers["feed-1-status"] == "412"
    code, out, _ = cli("status", "-f", node.conf_path)
    assert code == 0
    lines = stat(node)
    table = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split()[:4] == ["ID", "TYPE", "TARGET", "PENDING"]
    for fid in ("1", "2"):
        assert table[fid][3:6] + [table[fid][7]] == [
            lines[f"feed.{fid}.pending"], lines[f"feed.{fid}.done"],
            lines[f"feed.{fid}.errors"], lines[f"feed.{fid}.state"]]
    assert "corrupt local chunk" in out
    code, _, err = cli("retry", "-f", node.conf_path, "--feed", 9)
    assert code == 2 and "no feed 9" in err and "Traceback" not in err


def test_s3_down_then_back_and_retry_clears_a_long_backoff(node_factory, tmp_path):
    server = MotoServer()  # not started yet: nothing listens on its port
    names = ["r-" + uuid.uuid4().hex[:12] for _ in range(2)]
    node = s3node(node_factory, tmp_path, s3backup(1, server, names[0], retry_max=600)
                  + s3backup(2, server, names[1], retry_max=1))
    assert node.put(chunk_id(1), b"patience")[0] == 201
    try:
        assert wait_for(lambda: int(stat(node)["feed.1.errors"]) >= 5, 20)
        assert stat(node)["feed.1.state"] == "blocked"  # its next try is 4 to 8 s away
        server.start()
        client = server.client()
        for one in names:
            client.create_bucket(Bucket=one)
        # feed 2 (retry_max 1) comes back by itself; feed 1 is still backing off
        assert wait_for(lambda: pending(node, 2) == 0, 10)
        assert pending(node, 1) == 1
        code, out, _ = cli("retry", "-f", node.conf_path, "--feed", 1)
        assert code == 0 and "1 pending chunks due now, 0 failed" in out
        assert wait_for(lambda: pending(node, 1) == 0, 2.0)
        assert data_of(client, names[0], chunk_id(1)) == b"patience"
        assert stat(node)["feed.1.state"] == "ok"
    finally:
        server.stop()


def test_restore_usage_errors(node_factory, tmp_path, moto):
    node = s3node(node_factory, tmp_path, s3backup(1, moto, "nowhere")
                  + '[feed.2]\ntype = "indexing"\ntarget = "beanstalk://127.0.0.1:1"\n')
    for args, words in [((9,), "no feed 9"), ((2,), "restore reads s3backup"),
                        ((1, "xyz"), "not a chunk id"),
                        ((1, "--jobs", "0"), "--jobs: must be an integer in 1..64"),
                        ((1, "--jobs", "65"), "1..64"), ((1, "--jobs", "x"), "1..64"),
                        ((1, "--to", "ftp://x"), "not an http node URL")]:
        code, _, err = cli("restore", "-f", node.conf_path, "--feed", *args)
        assert code == 2 and words in err and "Traceback" not in err, err
    code, _, err = cli("status", "-f", tmp_path / "absent.conf")
    assert code == 2 and "cannot read" in err
    code, _, err = cli("restore", "-f", node.conf_path, "--feed", 1)
    assert code == 1 and "NoSuchBucket" in err and "Traceback" not in err


# ---- parallel restore ----------------------------------------------------------------------
def node_files(node):
    """{chunk id: path} of the chunk files in the node's docroot, and the paths of
    files still ``.pending``."""
    chunks, partial = {}, []
    for top, dirs, files in os.walk(node.docroot):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.endswith(".pending"):
                partial.append(os.path.join(top, name))
            elif not name.startswith("."):  # not the node's lock
                chunks[name] = os.path.join(top, name)
    return chunks, partial


def test_more_than_a_page_of_a_feed_restores_in_parallel_then_skips(node_factory, tmp_path,
                                                                     bucket, moto):
    """1,100 chunks a real s3backup feed wrote: the listing takes two pages (1,000 keys
    each), eight threads restore them all, a second run skips them all."""
    _, name = bucket
    node = s3node(node_factory, tmp_path, s3backup(1, moto, name, "p", concurrency=16))
    bodies = {chunk_id(n): b"%d" % n * 7 for n in range(1100)}
    conn = node.conn()
    for cid, body in bodies.items():
        assert node.put(cid, body, conn=conn)[0] == 201
    conn.close()
    assert wait_for(lambda: pending(node, 1) == 0, 40)
    fresh = node_factory()
    code, out, err = cli("restore", "-f", node.conf_path, "--feed", 1, "--to",
                         f"http://{fresh.host}", "--jobs", 8, "--progress", timeout=120)
    assert (code, out) == (0, ""), err
    assert "1100 restored, 0 skipped, 0 failed" in err and "restored 1100" in err
    conn = fresh.conn()
    for cid, body in bodies.items():
        assert fresh.request("GET", f"/{cid}", conn=conn)[2] == body, cid
    conn.close()
    assert meta_of(fresh, chunk_id(1099)) == meta_of(node, chunk_id(1099))
    code, _, err = cli("restore", "-f", node.conf_path, "--feed", 1, "--to",
                       f"http://{fresh.host}", "--jobs", 8, timeout=120)
    assert code == 0 and "0 restored, 1100 skipped, 0 failed" in err


def test_ctrl_c_stops_cleanly_and_leaves_no_partial_chunk(node_factory, tmp_path, bucket,
                                                          moto):
    """SIGINT to a restore in the middle of 3 MiB chunks (several pieces each): exit
    130, a partial summary, no traceback; what the node has is whole."""
    client, name = bucket
    node = s3node(node_factory, tmp_path, s3backup(1, moto, name))
    seed = os.urandom(3 << 20)
    bodies = {chunk_id(n): seed[n:] + seed[:n] for n in range(24)}
    for cid, body in bodies.items():
        put_backup(client, name, cid, body)
    fresh = node_factory()
    proc = subprocess.Popen(
        [sys.executable, "-m", "storage", "feeds", "restore", "-f", str(node.conf_path),
         "--feed", "1", "--to", f"http://{fresh.host}", "--jobs", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **CREDENTIALS})
    try:
        assert wait_for(lambda: len(node_files(fresh)[0]) >= 2, 60, step=0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""
    assert "(interrupted: the other chunks were not tried)" in err
    restored = int(err.split("feed 1: ")[1].split()[0])
    time.sleep(0.5)  # the node has seen every connection close
    chunks, partial = node_files(fresh)
    assert partial == []
    assert restored <= len(chunks) < len(bodies)
    conn = fresh.conn()
    for cid in chunks:
        status, _, body = fresh.request("GET", f"/{cid}", conn=conn)
        assert status == 200 and body == bodies[cid], cid
    conn.close()
    # a run to the end completes what the first one left
    code, _, err = cli("restore", "-f", node.conf_path, "--feed", 1, "--to",
                       f"http://{fresh.host}")
    assert code == 0 and f"{24 - len(chunks)} restored, {len(chunks)} skipped" in err
