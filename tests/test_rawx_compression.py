"""compression zlib: compress.py on its own, then PUT/GET/HEAD of compressed chunks
against a real node (rawx.md sections 3-4)."""
import hashlib
import http.client
import os
import random
import zlib

import pytest
from hypothesis import given, settings, strategies as st
from nodeutil import chunk_id
from test_server_faults import (disconnect_mid_body_leaves_nothing, pending_files,  # noqa: F401
                               small_volume)  # small_volume: a fixture
from test_server_http import put_head, statuses

from storage.rawx import compress

# compressible but not trivially: words from a small vocabulary, plus a random tail
_rng = random.Random(7)
_WORDS = [bytes(_rng.choice(b"abcdefghij") for _ in range(_rng.randint(2, 9)))
          for _ in range(300)]
BODY = b" ".join(_rng.choice(_WORDS) for _ in range(260_000)) + os.urandom(300_000)
MD5 = hashlib.md5(BODY).hexdigest().upper()


def inflater_file(tmp_path, data, wbits=zlib.MAX_WBITS):
    z = zlib.compressobj(1, zlib.DEFLATED, wbits)
    path = tmp_path / "c"
    path.write_bytes(z.compress(data) + z.flush())
    return os.open(path, os.O_RDONLY)


def read_all(inflater, piece):
    out = []
    for _ in range(10_000_000):
        got = inflater.read(piece)
        if not got:
            return b"".join(out)
        assert len(got) <= piece
        out.append(got)
    raise AssertionError("inflater never ended")


# ---- compress.py ---------------------------------------------------------------------
def test_compressor_makes_one_zlib_stream():
    comp = compress.Compressor()
    packed = b"".join(comp.compress(BODY[i:i + 5000]) for i in range(0, len(BODY), 5000))
    packed += comp.flush()
    assert packed[:1] == b"\x78"  # RFC 1950 header: deflate, 32 KiB window
    d = zlib.decompressobj()
    assert d.decompress(packed) == BODY and d.eof and not d.unused_data
    assert len(packed) < len(BODY)


@pytest.mark.parametrize("name,wbits", [("zlib", 15), ("deflate", -15)])
def test_wbits_for_known_codecs(name, wbits):
    assert compress.wbits_for(name) == wbits


def test_wbits_for_unknown_codec():
    with pytest.raises(compress.UnsupportedCompression, match="compression lzw not supported"):
        compress.wbits_for("lzw")


@pytest.mark.parametrize("wbits", [15, -15])
@pytest.mark.parametrize("piece", [1, 777, 256 << 10, 4 << 20])
def test_inflater_whole(tmp_path, wbits, piece):
    data = BODY if piece > 1 else BODY[:20_000]
    fd = inflater_file(tmp_path, data, wbits)
    try:
        assert read_all(compress.Inflater(fd, wbits), piece) == data
    finally:
        os.close(fd)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3000), skip=st.integers(0, 3500), length=st.integers(0, 3500),
       piece=st.integers(1, 5000))
def test_inflater_skip_and_length(tmp_path_factory, data, skip, length, piece):
    fd = inflater_file(tmp_path_factory.mktemp("inf"), data)
    try:
        got = read_all(compress.Inflater(fd, 15, skip, length), piece)
    finally:
        os.close(fd)
    assert got == data[skip:skip + length]


def test_inflater_large_skip_crosses_file_reads(tmp_path):
    fd = inflater_file(tmp_path, BODY)
    try:
        inflater = compress.Inflater(fd, 15, len(BODY) - 1000, 600)
        assert read_all(inflater, 100) == BODY[-1000:-400]
    finally:
        os.close(fd)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_inflater_corrupt_stream_raises_oserror(tmp_path, damage):
    z = zlib.compressobj(1)
    packed = bytearray(z.compress(BODY) + z.flush())
    if damage == "flip":
        packed[len(packed) // 3] ^= 0xFF
    elif damage == "truncate":
        del packed[len(packed) // 2:]
    else:
        packed = bytearray(os.urandom(5000))
    path = tmp_path / "bad"
    path.write_bytes(bytes(packed))
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            read_all(compress.Inflater(fd, 15), 64 << 10)
        with pytest.raises(OSError):
            compress.hash_inflated(fd, 15, hashlib.md5())
    finally:
        os.close(fd)


def test_inflater_to_end_checks_the_stream_end(tmp_path):
    z = zlib.compressobj(1)
    packed = bytearray(z.compress(BODY) + z.flush())
    packed[-1] ^= 0x01  # the Adler-32 trailer: every data byte decodes fine
    path = tmp_path / "bad"
    path.write_bytes(bytes(packed))
    fd = os.open(path, os.O_RDONLY)
    try:
        # a range that stops before the end never looks at the trailer
        assert read_all(compress.Inflater(fd, 15, 0, len(BODY) - 1), 1 << 20) == BODY[:-1]
        with pytest.raises(OSError):
            read_all(compress.Inflater(fd, 15, 10, len(BODY) - 10, to_end=True), 1 << 20)
    finally:
        os.close(fd)
    fd = inflater_file(tmp_path, BODY)
    try:  # the stream holds more than the stored size says
        with pytest.raises(OSError):
            read_all(compress.Inflater(fd, 15, 0, len(BODY) - 1, to_end=True), 1 << 20)
        assert read_all(compress.Inflater(fd, 15, 0, len(BODY), to_end=True), 4096) == BODY
    finally:
        os.close(fd)


def test_hash_inflated(tmp_path):
    fd = inflater_file(tmp_path, BODY)
    try:
        hasher = hashlib.md5()
        assert compress.hash_inflated(fd, 15, hasher) == len(BODY)
    finally:
        os.close(fd)
    assert hasher.hexdigest().upper() == MD5


# ---- a node with compression zlib ----------------------------------------------------
def stored_attrs(path):
    return {k: os.getxattr(path, k) for k in os.listxattr(path)}


@pytest.fixture
def znode(node_factory):
    return node_factory(compression="zlib")


@pytest.mark.parametrize("io_threads", [2, 0])
def test_put_stores_one_zlib_stream(node_factory, io_threads):
    node = node_factory(compression="zlib", io_threads=io_threads)
    cid = chunk_id(700)
    status, headers, body = node.put(cid, BODY, {"X-oio-req-id": "z-1"})
    assert status == 201 and body == b""
    assert headers["x-oio-chunk-meta-chunk-hash"] == MD5
    assert headers["x-oio-chunk-meta-chunk-size"] == str(len(BODY))
    assert headers["x-oio-req-id"] == "z-1"
    path = node.chunk_path(cid)
    attrs = stored_attrs(path)
    assert attrs["user.grid.compression"] == b"zlib"
    assert attrs["user.grid.chunk.size"] == str(len(BODY)).encode()
    assert attrs["user.grid.chunk.hash"] == MD5.encode()
    raw = open(path, "rb").read()
    assert len(raw) < len(BODY)
    d = zlib.decompressobj()
    assert d.decompress(raw) == BODY and d.eof and not d.unused_data
    status, headers, data = node.request("GET", f"/{cid}")
    assert status == 200 and data == BODY
    assert headers["content-length"] == str(len(BODY))
    assert headers["x-oio-chunk-meta-chunk-size"] == str(len(BODY))
    status, headers, data = node.request("HEAD", f"/{cid}")
    assert status == 200 and data == b"" and headers["content-length"] == str(len(BODY))
    assert node.request("HEAD", f"/{cid}", headers={"X-oio-check-hash": "true"})[0] == 200


def test_blake3_and_empty_compressed_chunks(znode):
    import blake3
    cid = chunk_id(701)
    status, headers, _ = znode.put(cid, BODY, {
        "X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1,cca=blake3"})
    assert status == 201
    assert headers["x-oio-chunk-meta-chunk-hash"] == blake3.blake3(BODY).hexdigest().upper()
    assert znode.request("HEAD", f"/{cid}", headers={"X-oio-check-hash": "true"})[0] == 200
    empty = chunk_id(702)
    status, headers, _ = znode.put(empty, b"")
    assert status == 201 and headers["x-oio-chunk-meta-chunk-size"] == "0"
    assert zlib.decompress(open(znode.chunk_path(empty), "rb").read()) == b""
    status, headers, data = znode.request("GET", f"/{empty}")
    assert status == 200 and data == b"" and headers["content-length"] == "0"
    assert znode.request("GET", f"/{empty}", headers={"Range": "bytes=0-"})[0] == 416
    assert znode.request("HEAD", f"/{empty}", headers={"X-oio-check-hash": "true"})[0] == 200


RANGES = [
    ("bytes=0-9", 206, (0, 9)), ("bytes=700000-", 206, (700000, None)),
    ("bytes=-100", 206, (-100, None)), ("bytes=123456-654321", 206, (123456, 654321)),
    ("bytes=0-99999999", 206, (0, None)), ("bytes=99999999-", 416, None),
    ("bytes=-0", 416, None), ("bytes=5-4", 200, None), ("bytes=0-1,3-4", 200, None),
]


def test_ranges_count_decompressed_bytes(znode):
    cid = chunk_id(703)
    assert znode.put(cid, BODY)[0] == 201
    size = len(BODY)
    conn = znode.conn()
    try:
        for value, status, span in RANGES:
            got, headers, data = znode.request("GET", f"/{cid}", headers={"Range": value},
                                               conn=conn)
            assert got == status, value
            if status == 206:
                a = span[0] if span[0] >= 0 else size + span[0]
                b = size - 1 if span[1] is None else span[1]
                assert data == BODY[a:b + 1], value
                assert headers["content-range"] == f"bytes {a}-{b}/{size}"
                assert headers["content-length"] == str(b - a + 1)
            elif status == 416:
                assert data == b"" and "content-range" not in headers
            else:
                assert data == BODY
    finally:
        conn.close()


def test_chunked_put_with_trailers_compressed(znode):
    cid = chunk_id(704)
    body = b"".join(b"%x\r\n%s\r\n" % (len(BODY[i:i + 70_000]), BODY[i:i + 70_000])
                    for i in range(0, len(BODY), 70_000))
    body += (f"0\r\nX-oio-Chunk-Meta-Chunk-Hash: {MD5.lower()}\r\n"
             f"X-oio-Chunk-Meta-Chunk-Size: {len(BODY)}\r\n\r\n").encode()
    out = znode.raw(put_head(cid, znode.host, chunked=True) + body, shut=True)
    assert statuses(out) == [201]
    assert znode.request("GET", f"/{cid}")[2] == BODY
    assert os.getxattr(znode.chunk_path(cid), "user.grid.compression") == b"zlib"


def test_wrong_hash_or_size_leaves_nothing(znode):
    cid = chunk_id(705)
    assert znode.put(cid, BODY, {"X-oio-Chunk-Meta-Chunk-Hash": "0" * 32})[0] == 400
    assert znode.put(cid, BODY, {"X-oio-Chunk-Meta-Chunk-Size": "12"})[0] == 400
    assert znode.request("GET", f"/{cid}")[0] == 404
    assert not pending_files(znode.docroot)
    assert znode.put(cid, BODY)[0] == 201


@pytest.mark.parametrize("io_threads", [2, 0])
def test_disconnect_mid_compressed_body_leaves_nothing(node_factory, io_threads):
    node = node_factory(compression="zlib", io_threads=io_threads)
    disconnect_mid_body_leaves_nothing(node, chunk_id(706), BODY * 2)


@pytest.mark.parametrize("io_threads", [2, 0])
def test_full_disk_compressed_507_nothing_left(node_factory, small_volume, io_threads):
    node = node_factory(docroot=small_volume / "rawx", compression="zlib",
                        io_threads=io_threads)
    cid = chunk_id(707)
    status, _, body = node.put(cid, os.urandom(6 << 20))  # random: does not shrink
    assert status == 507 and b"space" in body.lower()
    assert not pending_files(node.docroot)
    assert node.request("GET", f"/{cid}")[0] == 404
    assert node.put(chunk_id(708), BODY)[0] == 201


def test_corrupt_compressed_chunk(znode):
    cid = chunk_id(709)
    assert znode.put(cid, BODY)[0] == 201
    path = znode.chunk_path(cid)
    check = {"X-oio-check-hash": "true"}
    wrong = dict(check, **{"X-oio-Chunk-Meta-Chunk-Hash": "0" * 32})
    assert znode.request("HEAD", f"/{cid}", headers=wrong)[0] == 412
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 4)
        byte = f.read(1)
        f.seek(size // 4)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert znode.request("HEAD", f"/{cid}", headers=check)[0] == 412
    assert znode.request("HEAD", f"/{cid}")[0] == 200  # metadata only
    # GET: the headers are out before the damage is met: the connection is cut short
    with pytest.raises(http.client.IncompleteRead):
        znode.request("GET", f"/{cid}")
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    assert znode.request("HEAD", f"/{cid}", headers=check)[0] == 412
    assert znode.request("GET", f"/{cid}", headers={"Range": "bytes=0-99"})[2] == BODY[:100]
    assert znode.request("GET", "/info")[0] == 200  # the node lives on


def plant(node, cid, data, attrs):
    path = node.chunk_path(cid)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    base = {f"user.oio.content.fullpath:{cid}": b"acct/cont/obj/1/0123456789ABCDEF",
            "user.grid.chunk.position": b"0", "user.grid.content.storage_policy": b"SINGLE",
            "user.grid.content.chunk_method": b"plain/nb_copy=1"}
    base.update(attrs)
    for key, value in base.items():
        os.setxattr(path, key, value)
    return path


def test_reads_deflate_chunk_of_the_reference(znode):
    cid = chunk_id(710)
    z = zlib.compressobj(1, zlib.DEFLATED, -15)
    plant(znode, cid, z.compress(BODY) + z.flush(),
          {"user.grid.compression": b"deflate", "user.grid.chunk.hash": MD5.encode(),
           "user.grid.chunk.size": str(len(BODY)).encode()})
    assert znode.request("GET", f"/{cid}")[2] == BODY
    status, _, data = znode.request("GET", f"/{cid}", headers={"Range": "bytes=10-19"})
    assert status == 206 and data == BODY[10:20]
    assert znode.request("HEAD", f"/{cid}", headers={"X-oio-check-hash": "true"})[0] == 200


def test_unsupported_compression_500_one_line(znode):
    cid = chunk_id(711)
    plant(znode, cid, b"\x00\x01\x02", {"user.grid.compression": b"lzw",
                                       "user.grid.chunk.hash": b"A" * 32,
                                       "user.grid.chunk.size": b"10"})
    status, _, body = znode.request("GET", f"/{cid}")
    assert status == 500 and body == b"compression lzw not supported\n"
    status, _, _ = znode.request("HEAD", f"/{cid}")
    assert status == 500
    assert znode.request("GET", "/info")[0] == 200


def test_compression_per_chunk_not_per_config(node):
    """A node with compression off reads zlib chunks, and treats "off" as plain (with
    the size check of plain chunks)."""
    cid = chunk_id(712)
    plant(node, cid, zlib.compress(BODY), {"user.grid.compression": b"zlib",
                                           "user.grid.chunk.hash": MD5.encode(),
                                           "user.grid.chunk.size": str(len(BODY)).encode()})
    assert node.request("GET", f"/{cid}")[2] == BODY
    assert node.request("HEAD", f"/{cid}", headers={"X-oio-check-hash": "true"})[0] == 200
    plain = chunk_id(713)
    plant(node, plain, b"hello", {"user.grid.compression": b"off",
                                  "user.grid.chunk.hash": b"A" * 32,
                                  "user.grid.chunk.size": b"5"})
    assert node.request("GET", f"/{plain}")[2] == b"hello"
    os.setxattr(node.chunk_path(plain), "user.grid.chunk.size", b"6")
    assert node.request("GET", f"/{plain}")[0] == 412
    # and a new PUT on this node is plain
    new = chunk_id(714)
    assert node.put(new, BODY)[0] == 201
    assert "user.grid.compression" not in os.listxattr(node.chunk_path(new))
    assert open(node.chunk_path(new), "rb").read() == BODY


def test_compressed_chunk_without_valid_size_500(znode):
    cid = chunk_id(715)
    plant(znode, cid, zlib.compress(b"abc"), {"user.grid.compression": b"zlib",
                                             "user.grid.chunk.hash": b"A" * 32,
                                             "user.grid.chunk.size": b"x"})
    status, _, body = znode.request("GET", f"/{cid}")
    assert status == 500 and b"size" in body


def test_update_and_copy_keep_a_compressed_chunk_readable(node_factory):
    node = node_factory(compression="zlib", shallow_copy="on")
    cid, dst = chunk_id(716), chunk_id(717)
    assert node.put(cid, BODY)[0] == 201
    headers = {"X-oio-Chunk-Meta-Content-Storage-Policy": "THREECOPIES",
               "X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=3",
               "X-oio-Chunk-Meta-Chunk-Pos": "4",
               "X-oio-Chunk-Meta-Full-Path": "acct/cont/obj/1/0123456789ABCDEF"}
    assert node.request("GET", f"/update/{cid}", headers=headers)[0] == 200
    status, got, data = node.request("GET", f"/{cid}")
    assert status == 200 and data == BODY and got["x-oio-chunk-meta-chunk-pos"] == "4"
    copy = {"Destination": f"http://{node.host}/{dst}",
            "X-oio-Chunk-Meta-Full-Path": "acct/cont/other/2/ABCDEF"}
    assert node.request("COPY", f"/{cid}", headers=copy)[0] == 201
    assert node.request("GET", f"/{dst}", headers={"Range": "bytes=5-9"})[2] == BODY[5:10]
    assert node.request("HEAD", f"/{dst}", headers={"X-oio-check-hash": "true"})[0] == 200
