"""Chunk routes against a real node on 127.0.0.1: statuses, headers, on-disk layout."""
import hashlib
import os
import subprocess
import threading
import time

import blake3
import pytest
from nodeutil import CHUNK_HEADERS, chunk_id

BODY = os.urandom(200_000)
MD5 = hashlib.md5(BODY).hexdigest().upper()


def test_put_get_head_delete_roundtrip(node):
    cid = chunk_id(1)
    status, headers, _ = node.put(cid, BODY, {"X-oio-req-id": "req-42"})
    assert status == 201
    assert headers["x-oio-chunk-meta-chunk-hash"] == MD5
    assert headers["x-oio-chunk-meta-chunk-size"] == str(len(BODY))
    assert headers["x-oio-req-id"] == "req-42"
    status, headers, data = node.request("GET", f"/{cid}")
    assert status == 200 and data == BODY
    assert headers["x-oio-chunk-meta-chunk-id"] == cid
    assert headers["x-oio-chunk-meta-content-chunk-method"] == "plain/nb_copy=1,cca=md5"
    assert headers["x-oio-chunk-meta-container-id"] == hashlib.sha256(
        b"acct\0cont").hexdigest().upper()
    assert "last-modified" in headers and "date" in headers
    status, headers, data = node.request("HEAD", f"/{cid}")
    assert status == 200 and data == b""
    assert headers["content-length"] == str(len(BODY))
    assert headers["accept-ranges"] == "bytes"
    status, headers, data = node.request("DELETE", f"/{cid}")
    assert status == 204 and data == b"" and "content-length" not in headers
    assert node.request("GET", f"/{cid}")[0] == 404
    assert node.request("DELETE", f"/{cid}")[0] == 404


def test_on_disk_layout_and_xattrs(node):
    cid = chunk_id(2)
    node.put(cid, b"abc", {"X-oio-Chunk-Meta-Full-Path": "a%2Fb/c/d%20e/-3/abcdef",
                           "X-oio-Ext-Some-Key": "v%41lue",
                           "X-oio-Chunk-Meta-Metachunk-Hash": "00ff",
                           "X-oio-Chunk-Meta-Metachunk-Size": "3"})
    path = node.chunk_path(cid)
    assert os.path.isfile(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    attrs = {k: os.getxattr(path, k) for k in os.listxattr(path)}
    assert attrs == {
        f"user.oio.content.fullpath:{cid}": b"a%2Fb/c/d%20e/-3/ABCDEF",
        "user.grid.chunk.hash": hashlib.md5(b"abc").hexdigest().upper().encode(),
        "user.grid.chunk.size": b"3",
        "user.grid.chunk.position": b"0",
        "user.grid.content.chunk_method": b"plain/nb_copy=1,cca=md5",
        "user.grid.content.storage_policy": b"SINGLE",
        "user.grid.metachunk.hash": b"00FF",
        "user.grid.metachunk.size": b"3",
        "user.oio.ext.Some-Key": b"vAlue",
    }
    _, headers, _ = node.request("GET", f"/{cid}")
    assert headers["x-oio-chunk-meta-content-path"] == "d%20e"
    assert headers["x-oio-chunk-meta-content-version"] == "-3"
    assert headers["x-oio-ext-some-key"] == "vAlue"
    # docroot is locked to this service and has the service dirs
    assert os.getxattr(node.docroot, "user.server.id") == b"rawx-test"
    assert os.getxattr(node.docroot, "user.server.type") == b"rawx"
    assert os.path.isdir(os.path.join(node.docroot, "orphans"))
    assert os.path.isdir(os.path.join(node.docroot, "non_optimal_placement"))
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".pending")]


@pytest.mark.parametrize("depth,width", [(0, 3), (2, 2)])
def test_hash_layout_configurable(node_factory, depth, width):
    node = node_factory(hash_depth=depth, hash_width=width)
    cid = chunk_id(3)
    assert node.put(cid, b"x")[0] == 201
    assert os.path.isfile(node.chunk_path(cid, width, depth))


def test_reads_chunk_written_by_another_server(node):
    """A chunk laid down on disk the way oio-rawx writes it is served with its headers."""
    cid = chunk_id(4)
    path = node.chunk_path(cid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"hello")
    os.setxattr(path, f"user.oio.content.fullpath:{cid}", b"AC/CT/p%C3%A9/7/00AA")
    os.setxattr(path, "user.grid.chunk.hash", hashlib.md5(b"hello").hexdigest().upper().encode())
    os.setxattr(path, "user.grid.chunk.size", b"5")
    os.setxattr(path, "user.grid.chunk.position", b"1.2")
    os.setxattr(path, "user.grid.content.chunk_method", b"ec/algo=liberasurecode_rs_vand,k=6,m=3")
    os.setxattr(path, "user.grid.content.storage_policy", b"EC")
    status, headers, data = node.request("GET", f"/{cid.lower()}")
    assert status == 200 and data == b"hello"
    assert headers["x-oio-chunk-meta-content-chunk-method"] == \
        "ec/algo=liberasurecode_rs_vand,k=6,m=3,cca=md5"
    assert headers["x-oio-chunk-meta-content-path"] == "p%C3%A9"
    assert headers["x-oio-chunk-meta-chunk-pos"] == "1.2"


def test_legacy_chunk_headers(node):
    cid = chunk_id(5)
    path = node.chunk_path(cid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"old")
    for key, value in {"user.grid.chunk.id": cid, "user.grid.content.container": "ab" * 32,
                       "user.grid.content.path": "legacy obj", "user.grid.content.version": "9",
                       "user.grid.content.id": "ff00", "user.grid.chunk.hash": "A" * 32,
                       "user.grid.chunk.size": "3", "user.grid.chunk.position": "0",
                       "user.grid.content.chunk_method": "plain/nb_copy=3",
                       "user.grid.content.storage_policy": "THREECOPIES",
                       "user.grid.oio.version": "4.2"}.items():
        os.setxattr(path, key, value.encode())
    status, headers, data = node.request("GET", f"/{cid}")
    assert status == 200 and data == b"old"
    assert headers["x-oio-chunk-meta-container-id"] == "AB" * 32
    assert headers["x-oio-chunk-meta-content-path"] == "legacy%20obj"
    assert headers["x-oio-chunk-meta-content-version"] == "9"
    assert headers["x-oio-chunk-meta-content-id"] == "FF00"


RANGES = [
    ("bytes=0-9", 206, (0, 9)), ("bytes=10-", 206, (10, 999)), ("bytes=-100", 206, (900, 999)),
    ("bytes=-5000", 206, (0, 999)), ("bytes=990-5000", 206, (990, 999)),
    ("bytes=0-999", 206, (0, 999)), ("bytes=1000-", 416, None), ("bytes=-0", 416, None),
    ("bytes=1000-1001", 416, None), ("bytes=5-4", 200, None), ("bytes=0-1,3-4", 200, None),
    ("bytes= 0-1", 200, None), ("items=0-1", 200, None), ("bytes=-", 200, None),
]


@pytest.mark.parametrize("value,status,span", RANGES)
def test_ranges(node, value, status, span):
    cid = chunk_id(6)
    data = bytes(range(256)) * 3 + bytes(232)
    if node.request("HEAD", f"/{cid}")[0] == 404:
        assert node.put(cid, data)[0] == 201
    got_status, headers, body = node.request("GET", f"/{cid}", headers={"Range": value})
    assert got_status == status
    if status == 206:
        a, b = span
        assert body == data[a:b + 1]
        assert headers["content-range"] == f"bytes {a}-{b}/1000"
    elif status == 416:
        assert body == b"" and "content-range" not in headers
    else:
        assert body == data


def test_range_with_curl(node, tmp_path):
    cid = chunk_id(7)
    data = os.urandom(3 << 20)
    assert node.put(cid, data)[0] == 201
    out = tmp_path / "part"
    res = subprocess.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}", "-r",
                          "1000000-1499999", f"http://{node.host}/{cid}"],
                         capture_output=True, timeout=30)
    assert res.stdout == b"206"
    assert out.read_bytes() == data[1000000:1500000]
    res = subprocess.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}",
                          f"http://{node.host}/{cid}"], capture_output=True, timeout=30)
    assert res.stdout == b"200" and out.read_bytes() == data


def test_empty_chunk(node):
    cid = chunk_id(8)
    assert node.put(cid, b"")[0] == 201
    status, headers, body = node.request("GET", f"/{cid}", headers={"Range": "bytes=-5"})
    assert status == 200 and body == b""
    assert node.request("GET", f"/{cid}", headers={"Range": "bytes=0-"})[0] == 416


def test_check_hash_and_corruption(node):
    cid = chunk_id(9)
    assert node.put(cid, BODY)[0] == 201
    check = {"X-oio-check-hash": "true"}
    assert node.request("HEAD", f"/{cid}", headers=check)[0] == 200
    wrong = dict(check, **{"X-oio-Chunk-Meta-Chunk-Hash": "0" * 32})
    assert node.request("HEAD", f"/{cid}", headers=wrong)[0] == 412
    path = node.chunk_path(cid)
    with open(path, "r+b") as f:  # flip one byte: same size, wrong content
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert node.request("HEAD", f"/{cid}", headers=check)[0] == 412
    assert node.request("HEAD", f"/{cid}")[0] == 200  # no check asked: metadata only
    with open(path, "r+b") as f:  # truncate: stored size no longer matches
        f.truncate(1000)
    assert node.request("GET", f"/{cid}")[0] == 412
    assert node.request("HEAD", f"/{cid}")[0] == 412
    os.removexattr(path, "user.grid.chunk.hash")
    assert node.request("HEAD", f"/{cid}")[0] == 500


def test_blake3_chunks(node):
    cid = chunk_id(10)
    status, headers, _ = node.put(cid, BODY, {
        "X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1,cca=blake3"})
    assert status == 201
    expected = blake3.blake3(BODY).hexdigest().upper()
    assert headers["x-oio-chunk-meta-chunk-hash"] == expected
    assert node.request("HEAD", f"/{cid}", headers={"X-oio-check-hash": "true"})[0] == 200


def test_put_hash_and_size_checks_leave_nothing(node):
    cid = chunk_id(11)
    bad_hash = {"X-oio-Chunk-Meta-Chunk-Hash": "0" * 32}
    assert node.put(cid, BODY, bad_hash)[0] == 400
    assert node.request("GET", f"/{cid}")[0] == 404
    assert node.put(cid, BODY, {"X-oio-Chunk-Meta-Chunk-Size": "5"})[0] == 400
    assert node.request("GET", f"/{cid}")[0] == 404
    assert not os.path.exists(node.chunk_path(cid) + ".pending")
    good = {"X-oio-Chunk-Meta-Chunk-Hash": MD5.lower(),
            "X-oio-Chunk-Meta-Chunk-Size": str(len(BODY))}
    assert node.put(cid, BODY, good)[0] == 201


@pytest.mark.parametrize("header,value", [
    ("X-oio-Chunk-Meta-Content-Storage-Policy", ""),
    ("X-oio-Chunk-Meta-Content-Chunk-Method", "plain"),
    ("X-oio-Chunk-Meta-Chunk-Pos", ""),
    ("X-oio-Chunk-Meta-Full-Path", "a/b/c/1"),
    ("X-oio-Chunk-Meta-Full-Path", "a/b/c/x/00"),
    ("X-oio-Chunk-Meta-Chunk-Id", "00" * 32),
    ("X-oio-Chunk-Meta-Container-Id", "00" * 32),
    ("X-oio-Chunk-Meta-Chunk-Hash", "xyz"),
    ("X-oio-Chunk-Meta-Chunk-Size", "12a"),
])
def test_put_bad_headers_400_before_409(node, header, value):
    cid = chunk_id(12)
    if node.request("HEAD", f"/{cid}")[0] == 404:
        assert node.put(cid, b"first")[0] == 201
    assert node.put(cid, b"data", {header: value})[0] == 400


def test_ec_chunk_needs_metachunk_info(node):
    ec = {"X-oio-Chunk-Meta-Content-Chunk-Method": "ec/algo=liberasurecode_rs_vand,k=6,m=3",
          "X-oio-Chunk-Meta-Chunk-Pos": "0.1"}
    assert node.put(chunk_id(13), b"frag", ec)[0] == 400
    ec["X-oio-Chunk-Meta-Metachunk-Hash"] = "AB" * 16
    ec["X-oio-Chunk-Meta-Metachunk-Size"] = "100"
    assert node.put(chunk_id(13), b"frag", ec)[0] == 201


@pytest.mark.parametrize("path,status", [
    ("/" + "A" * 23, 400), ("/" + "A" * 65, 400), ("/" + "G" * 32, 400),
    ("/" + "A" * 32 + "/", 400), ("/%C3%A9" + "A" * 30, 400), ("/" + "a" * 24, 404),
    ("//" + "A" * 24, 404), ("/%41" + "A" * 23, 404),
])
def test_chunk_id_rules(node, path, status):
    assert node.request("GET", path)[0] == status


def test_method_not_allowed(node):
    status, headers, _ = node.request("PATCH", "/" + "A" * 24)
    assert status == 405


def test_concurrent_put_same_id_exactly_one_wins(node_factory):
    node = node_factory(workers=2)
    cid = chunk_id(14)
    body = os.urandom(4 << 20)
    results = []
    barrier = threading.Barrier(8)

    def put():
        barrier.wait()
        results.append(node.put(cid, body)[0])

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [201] + [409] * 7
    assert node.request("GET", f"/{cid}")[2] == body


def test_info_and_stat(node):
    status, _, body = node.request("GET", "/info")
    assert status == 200
    assert body.decode().splitlines() == [
        "namespace OPENIO", f"path {node.docroot}", "service_id rawx-test",
        "hash_depth 1", "hash_width 3"]
    node.put(chunk_id(15), b"x")
    node.request("GET", f"/{chunk_id(15)}")
    node.request("GET", f"/{chunk_id(16)}")
    status, _, body = node.request("GET", "/stat")
    lines = body.decode().splitlines()
    names = [line.split()[1] for line in lines if line.startswith("counter ")]
    assert names[:3] == ["req.time", "req.time.put", "req.time.post"]
    assert names[-2:] == ["rep.bread", "rep.bwritten"]
    values = {line.split()[1]: int(line.split()[2]) for line in lines
              if line.startswith("counter ")}
    assert values["req.hits.put"] >= 1 and values["req.hits.get"] >= 2
    assert values["rep.hits.404"] >= 1
    assert f"config volume {node.docroot}" in lines
    assert "config service_id rawx-test" in lines
    status, _, body = node.request("GET", "/stat?format=prometheus")
    assert status == 200
    assert 'rawx_requests_hits_total{service_id="rawx-test",volume="%s",namespace="OPENIO",' \
        'method="put"}' % node.docroot in body.decode()


def test_stat_counts_whole_node(node_factory):
    node = node_factory(workers=2)
    for i in range(40):
        node.request("GET", f"/{chunk_id(100 + i)}")
    _, _, body = node.request("GET", "/stat")
    values = {l.split()[1]: int(l.split()[2]) for l in body.decode().splitlines()
              if l.startswith("counter ")}
    assert values["req.hits.get"] == 40  # all workers' figures, not one worker's
    pids = {line.split()[0] for line in node.access_lines("/stat")}
    assert len(pids) == 2  # both workers served


def test_access_log_line(node):
    node.put(chunk_id(17), b"12345", {"X-oio-req-id": "rid-1"})
    line = [l for l in node.access_lines(" PUT ") if " PUT " in l][-1].split()
    assert line[1:4] == ["access", "INF", "-"]
    assert line[4] == node.host
    assert line[6:8] == ["PUT", "201"]
    assert line[9:11] == ["0", "5"]  # body bytes out, body bytes in
    assert line[12] == "rid-1" and line[13] == f"/{chunk_id(17)}"
    assert line[-2:] == ["account:acct", "bucket:cont"]


def test_metadata_cache_sees_every_change(node):
    """Decoded metadata is cached per inode version: an xattr change right after a
    cached read must show at once, and fresh chunks (racy ctime) are never cached."""
    cid = chunk_id(18)
    assert node.put(cid, b"cached", {"X-oio-Ext-K": "one"})[0] == 201
    path = node.chunk_path(cid)
    assert node.request("GET", f"/{cid}")[1]["x-oio-ext-k"] == "one"  # racy: not cached
    os.setxattr(path, "user.oio.ext.K", b"two")
    assert node.request("GET", f"/{cid}")[1]["x-oio-ext-k"] == "two"
    time.sleep(1.2)  # now older than the racy window: the next read caches it
    for _ in range(3):
        assert node.request("GET", f"/{cid}")[1]["x-oio-ext-k"] == "two"
    os.setxattr(path, "user.oio.ext.K", b"three")
    assert node.request("HEAD", f"/{cid}")[1]["x-oio-ext-k"] == "three"
    assert node.request("GET", f"/{cid}")[1]["x-oio-ext-k"] == "three"
    os.removexattr(path, "user.grid.chunk.hash")
    assert node.request("HEAD", f"/{cid}")[0] == 500


def test_durable_put_with_fsync_and_fsync_dir(node_factory):
    node = node_factory(fsync="on", fsync_dir="yes", fallocate="enabled")
    cid = chunk_id(19)
    body = os.urandom(300_000)
    assert node.put(cid, body)[0] == 201
    assert node.request("GET", f"/{cid}")[2] == body
    assert os.path.getsize(node.chunk_path(cid)) == len(body)  # fallocate did not pad
