"""A volume outlives its node: write through a real node (compression off, then on),
plant chunks as 4.x/7.x servers wrote them, record every reply, SIGTERM, start a new
node with the same config file, and get every reply back identical."""
import hashlib
import json
import os
import random

import blake3
from nodeutil import Node, chunk_id
from test_server_http import put_head, statuses

_rng = random.Random(3)
# half compressible text, half random: compressed files must really differ from the body
TEXT = b" ".join(_rng.choice([b"alpha", b"beta", b"gamma", b"delta", b"omega"])
                 for _ in range(40_000))


def body_for(n):
    return TEXT[:150_000 + n] + os.urandom(100_000)


def md5(data):
    return hashlib.md5(data).hexdigest().upper()


def write_set(node, base):
    """Every kind of write the node supports; -> {chunk id: plain body}."""
    bodies = {}
    plain, chunked, empty, copy, nop, b3 = (chunk_id(base + i) for i in range(6))
    # plain PUT with ext metadata
    bodies[plain] = body_for(base)
    status, _, _ = node.put(plain, bodies[plain], {"X-oio-Ext-Origin": "put%20ext",
                                                   "X-oio-req-id": f"w-{base}"})
    assert status == 201
    # chunked PUT whose hash, size, metachunk fields and ext metadata come as trailers
    bodies[chunked] = body_for(base + 1)
    data = bodies[chunked]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 65_000]), data[i:i + 65_000])
                    for i in range(0, len(data), 65_000))
    wire += (f"0\r\nX-oio-Chunk-Meta-Chunk-Hash: {md5(data).lower()}\r\n"
             f"X-oio-Chunk-Meta-Chunk-Size: {len(data)}\r\n"
             f"X-oio-Chunk-Meta-Metachunk-Hash: {'9a' * 16}\r\n"
             f"X-oio-Chunk-Meta-Metachunk-Size: {len(data) * 3}\r\n"
             f"X-Oio-Ext-Trailer-Key: tv\r\n\r\n").encode()
    out = node.raw(put_head(chunked, node.host, chunked=True,
                            extra="Trailer: X-oio-Chunk-Meta-Chunk-Hash") + wire, shut=True)
    assert statuses(out) == [201]
    # empty chunk, then marked non-optimal by POST
    bodies[empty] = b""
    assert node.put(empty, b"")[0] == 201
    flag = {"X-oio-Chunk-Meta-Non-Optimal-Placement": "true"}
    assert node.request("POST", f"/{empty}", headers=flag)[0] == 200
    # ext metadata added later by POST
    assert node.request("POST", f"/{plain}", headers={"X-Oio-Ext-Color": "blue%21"})[0] == 200
    # shallow copy of the plain chunk under another full path
    bodies[copy] = bodies[plain]
    headers = {"Destination": f"http://{node.host}/{copy}",
               "X-oio-Chunk-Meta-Full-Path": f"acct/cont2/copied%20obj/{base}/ABCDEF"}
    assert node.request("COPY", f"/{plain}", headers=headers)[0] == 201
    # non-optimal placement at PUT
    bodies[nop] = body_for(base + 4)
    assert node.put(nop, bodies[nop], flag)[0] == 201
    # blake3 chunk
    bodies[b3] = body_for(base + 5)
    status, headers, _ = node.put(b3, bodies[b3], {
        "X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1,cca=blake3"})
    assert status == 201
    assert headers["x-oio-chunk-meta-chunk-hash"] == blake3.blake3(bodies[b3]).hexdigest().upper()
    return bodies


def plant_legacy(node, cid, data, version_42):
    """A chunk as a 4.x (or, with ``version_42``, 7.x) server left it: content fields in
    their own xattrs, no full-path key."""
    path = node.chunk_path(cid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    attrs = {"user.grid.chunk.id": cid, "user.grid.content.container": "ab" * 32,
             "user.grid.content.path": "legacy obj/é", "user.grid.content.version": "9",
             "user.grid.content.id": "ff00", "user.grid.chunk.hash": md5(data),
             "user.grid.chunk.size": str(len(data)), "user.grid.chunk.position": "2",
             "user.grid.content.chunk_method": "plain/nb_copy=3",
             "user.grid.content.storage_policy": "THREECOPIES"}
    if version_42:
        attrs["user.grid.oio.version"] = "4.2"
    for key, value in attrs.items():
        os.setxattr(path, key, value.encode())


def exchange(conn, method, path, headers=None):
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    kept = [(k, v) for k, v in resp.getheaders() if k.lower() != "date"]
    return resp.status, kept, body


def snapshot(node, bodies):
    """Every GET / ranged GET / HEAD reply of the chunks, and /list."""
    record = {}
    conn = node.conn()
    try:
        for cid in sorted(bodies):
            reqid = {"X-oio-req-id": f"snap-{cid[-4:]}"}
            record[cid, "GET"] = exchange(conn, "GET", f"/{cid}", reqid)
            record[cid, "HEAD"] = exchange(conn, "HEAD", f"/{cid}", reqid)
            if bodies[cid]:
                a = len(bodies[cid]) // 3
                record[cid, "RANGE"] = exchange(conn, "GET", f"/{cid}",
                                                dict(reqid, Range=f"bytes={a}-{a + 99}"))
                record[cid, "TAIL"] = exchange(conn, "GET", f"/{cid}",
                                               dict(reqid, Range="bytes=-7"))
        record["list"] = exchange(conn, "GET", "/list")
    finally:
        conn.close()
    return record


def nop_links(docroot):
    root = os.path.join(docroot, "non_optimal_placement")
    return sorted((os.path.relpath(os.path.join(d, n), root), os.readlink(os.path.join(d, n)))
                  for d, _, names in os.walk(root) for n in names)


def test_volume_survives_restart(tmp_path):
    node = Node(tmp_path, shallow_copy="on")  # compression off
    try:
        node.start()
        plain_bodies = write_set(node, 900)
        assert node.stop() == 0
        # the same file and volume, now compressing the new chunks
        with open(node.conf_path, "a") as conf:
            conf.write("compression zlib\n")
        conf_text = node.conf_path.read_text()
        node.start()
        zlib_bodies = write_set(node, 950)
        legacy = {chunk_id(990): b"old 4.x bytes " * 100, chunk_id(991): b"7.x bytes " * 50}
        plant_legacy(node, chunk_id(990), legacy[chunk_id(990)], version_42=False)
        plant_legacy(node, chunk_id(991), legacy[chunk_id(991)], version_42=True)
        bodies = {**plain_bodies, **zlib_bodies, **legacy}

        # the volume holds both kinds, each chunk as its writer's config said
        for cid in plain_bodies:
            assert "user.grid.compression" not in os.listxattr(node.chunk_path(cid))
            assert open(node.chunk_path(cid), "rb").read() == plain_bodies[cid]
        for cid in zlib_bodies:
            assert os.getxattr(node.chunk_path(cid), "user.grid.compression") == b"zlib"
            if zlib_bodies[cid]:
                assert os.path.getsize(node.chunk_path(cid)) < len(zlib_bodies[cid])

        before = snapshot(node, bodies)
        links = nop_links(node.docroot)
        assert node.stop() == 0
        assert node.conf_path.read_text() == conf_text
        node.start()  # a new process, the same config file
        after = snapshot(node, bodies)
        assert after == before
        assert nop_links(node.docroot) == links

        # what was recorded is right, not merely stable
        for cid, body in bodies.items():
            status, headers, data = before[cid, "GET"]
            headers = dict((k.lower(), v) for k, v in headers)
            assert status == 200 and data == body, cid
            assert headers["content-length"] == str(len(body))
            assert headers["x-oio-chunk-meta-chunk-id"] == cid
            assert headers["x-oio-chunk-meta-chunk-size"] == str(len(body))
            if body:
                status, headers, data = before[cid, "RANGE"]
                a = len(body) // 3
                assert status == 206 and data == body[a:a + 100]
                assert dict(headers)["Content-Range"] == f"bytes {a}-{a + 99}/{len(body)}"
                assert before[cid, "TAIL"][2] == body[-7:]
            status, headers, data = before[cid, "HEAD"]
            assert status == 200 and data == b""
            assert dict(headers)["Content-Length"] == str(len(body))
        for base in (900, 950):
            plain, chunked, empty, copy = (chunk_id(base + i) for i in range(4))
            get = {k.lower(): v for k, v in before[plain, "GET"][1]}
            assert get["x-oio-ext-color"] == "blue!" and get["x-oio-ext-origin"] == "put ext"
            get = {k.lower(): v for k, v in before[chunked, "GET"][1]}
            assert get["x-oio-ext-trailer-key"] == "tv"
            assert get["x-oio-chunk-meta-metachunk-hash"] == "9A" * 16
            get = {k.lower(): v for k, v in before[copy, "GET"][1]}
            assert get["x-oio-chunk-meta-content-path"] == "copied%20obj"
            assert get["x-oio-chunk-meta-full-path"] == f"acct/cont2/copied%20obj/{base}/ABCDEF"
            assert os.stat(node.chunk_path(plain)).st_ino == os.stat(node.chunk_path(copy)).st_ino
        get = {k.lower(): v for k, v in before[chunk_id(991), "GET"][1]}
        assert get["x-oio-chunk-meta-content-path"] == "legacy%20obj%2F%C3%A9"
        assert get["x-oio-chunk-meta-container-id"] == "AB" * 32
        assert get["x-oio-chunk-meta-content-chunk-method"] == "plain/nb_copy=3,cca=md5"
        listed = json.loads(before["list"][2])
        assert sorted(c["chunk_id"] for c in listed["chunks"]) == sorted(bodies)
        assert len(links) == 4  # two PUT flags, two POST flags

        # every chunk the new node serves verifies against its stored hash
        conn = node.conn()
        try:
            for cid in bodies:
                status, _, _ = exchange(conn, "HEAD", f"/{cid}",
                                        {"X-oio-check-hash": "true"})
                assert status == 200, cid
        finally:
            conn.close()
    finally:
        node.kill()
