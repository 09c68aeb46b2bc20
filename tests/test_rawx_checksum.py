"""checksum always|smart|off against real nodes (rawx.md sections 2 and 9), plus the
PutMeta rules they rest on."""
import hashlib
import os

import pytest
from nodeutil import CHUNK_HEADERS, chunk_id
from test_server_http import put_head, statuses

from storage.errors import BadRequest
from storage.rawx.meta import PutMeta

BODY = os.urandom(150_000)
MD5 = hashlib.md5(BODY).hexdigest().upper()
WRONG = "ab" * 16
EC_HEADERS = {  # an EC fragment under the reference's smart rule (policy "ec/...")
    "X-oio-Chunk-Meta-Content-Storage-Policy": "ec/EC63",
    "X-oio-Chunk-Meta-Content-Chunk-Method": "ec/algo=liberasurecode_rs_vand,k=6,m=3",
    "X-oio-Chunk-Meta-Chunk-Pos": "0.1",
    "X-oio-Chunk-Meta-Metachunk-Hash": "cd" * 16,
    "X-oio-Chunk-Meta-Metachunk-Size": "900000",
}


def stored_hash(node, cid):
    return os.getxattr(node.chunk_path(cid), "user.grid.chunk.hash").decode()


def put_chunked(node, cid, body, trailers=(), declare=True):
    """Chunked PUT; ``declare`` names the chunk-hash trailer in a Trailer: header."""
    extra = "Trailer: X-oio-Chunk-Meta-Chunk-Hash" if declare else ""
    data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
    data += b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in trailers) + b"\r\n"
    out = node.raw(put_head(cid, node.host, extra=extra, chunked=True) + data, shut=True)
    return statuses(out)[0]


def lower_headers(extra=None):
    headers = {k.lower(): v for k, v in CHUNK_HEADERS.items()}
    headers.update({k.lower(): v for k, v in (extra or {}).items()})
    return headers


# ---- PutMeta ---------------------------------------------------------------------------
@pytest.mark.parametrize("extra,announced", [
    ({}, False),
    ({"X-oio-Chunk-Meta-Chunk-Hash": WRONG}, True),
    ({"Trailer": "X-Oio-Chunk-Meta-Chunk-Hash"}, True),
    ({"Trailer": "x-oio-ext-foo , X-OIO-CHUNK-META-CHUNK-HASH"}, True),
    ({"Trailer": "X-oio-Chunk-Meta-Chunk-Size"}, False),
])
def test_announces_hash(extra, announced):
    assert PutMeta(chunk_id(0), lower_headers(extra)).announces_hash() is announced


def test_finish_without_computed_hash_keeps_the_announced_one():
    meta = PutMeta(chunk_id(0), lower_headers({"X-oio-Chunk-Meta-Chunk-Hash": "ab" * 16}))
    attrs = meta.finish([], None, 3)
    assert attrs["user.grid.chunk.hash"] == b"AB" * 16
    meta = PutMeta(chunk_id(0), lower_headers({"X-oio-Chunk-Meta-Chunk-Hash": "ab" * 16}))
    attrs = meta.finish([("x-oio-chunk-meta-chunk-hash", "ef" * 16)], None, 3)
    assert attrs["user.grid.chunk.hash"] == b"EF" * 16  # the trailer overrides
    meta = PutMeta(chunk_id(0), lower_headers({"X-oio-Chunk-Meta-Chunk-Hash": "ab" * 16}))
    attrs = meta.finish([("x-oio-chunk-meta-chunk-hash", "")], None, 3)
    assert attrs["user.grid.chunk.hash"] == b"AB" * 16  # an empty trailer erases nothing


def test_finish_without_any_hash_refuses():
    meta = PutMeta(chunk_id(0), lower_headers({"Trailer": "X-Oio-Chunk-Meta-Chunk-Hash"}))
    with pytest.raises(BadRequest, match="chunk-hash"):
        meta.finish([], None, 3)


# ---- always ----------------------------------------------------------------------------
def test_always_hashes_and_refuses_a_wrong_hash(node):
    cid = chunk_id(800)
    assert node.put(cid, BODY, {"X-oio-Chunk-Meta-Chunk-Hash": WRONG})[0] == 400
    assert node.request("GET", f"/{cid}")[0] == 404
    status, headers, _ = node.put(cid, BODY, {"X-oio-Chunk-Meta-Chunk-Hash": MD5.lower()})
    assert status == 201 and headers["x-oio-chunk-meta-chunk-hash"] == MD5
    assert stored_hash(node, cid) == MD5
    ec = chunk_id(801)
    assert node.put(ec, BODY, dict(EC_HEADERS, **{"X-oio-Chunk-Meta-Chunk-Hash": WRONG}))[0] \
        == 400


# ---- off -------------------------------------------------------------------------------
@pytest.fixture(params=["off", "zlib"])
def off_node(node_factory, request):
    return node_factory(checksum="off", compression=request.param)


def test_off_stores_the_announced_hash_as_is(off_node):
    node = off_node
    cid = chunk_id(802)
    status, headers, _ = node.put(cid, BODY, {"X-oio-Chunk-Meta-Chunk-Hash": WRONG})
    assert status == 201
    assert headers["x-oio-chunk-meta-chunk-hash"] == WRONG.upper()
    assert stored_hash(node, cid) == WRONG.upper()
    status, headers, data = node.request("GET", f"/{cid}")
    assert status == 200 and data == BODY
    assert headers["x-oio-chunk-meta-chunk-hash"] == WRONG.upper()
    # the chunk is what was sent: a check against the stored (wrong) hash tells
    check = {"X-oio-check-hash": "true"}
    assert node.request("HEAD", f"/{cid}", headers=check)[0] == 412
    assert node.request("HEAD", f"/{cid}",
                        headers=dict(check, **{"X-oio-Chunk-Meta-Chunk-Hash": MD5}))[0] == 200


def test_off_takes_the_trailer(off_node):
    node = off_node
    cid = chunk_id(803)
    trailer = [("X-oio-Chunk-Meta-Chunk-Hash", "0f" * 16)]
    assert put_chunked(node, cid, BODY, trailer) == 201
    assert stored_hash(node, cid) == "0F" * 16
    assert node.request("GET", f"/{cid}")[2] == BODY


def test_off_hashes_when_nothing_is_announced(off_node):
    node = off_node
    cid = chunk_id(804)
    status, headers, _ = node.put(cid, BODY)
    assert status == 201 and headers["x-oio-chunk-meta-chunk-hash"] == MD5
    assert stored_hash(node, cid) == MD5
    chunked = chunk_id(805)
    assert put_chunked(node, chunked, BODY, declare=False) == 201
    assert stored_hash(node, chunked) == MD5
    assert node.request("HEAD", f"/{chunked}", headers={"X-oio-check-hash": "true"})[0] == 200


def test_off_declared_trailer_that_never_comes_400(off_node):
    node = off_node
    cid = chunk_id(806)
    assert put_chunked(node, cid, BODY, trailers=()) == 400
    assert node.request("GET", f"/{cid}")[0] == 404
    assert put_chunked(node, cid, b"", [("X-oio-Chunk-Meta-Chunk-Hash", "")]) == 400
    assert node.request("GET", f"/{cid}")[0] == 404


# ---- smart -----------------------------------------------------------------------------
def test_smart_skips_ec_fragments_only(node_factory):
    node = node_factory(checksum="smart")
    ec = chunk_id(807)
    status, headers, _ = node.put(ec, BODY, dict(EC_HEADERS,
                                                 **{"X-oio-Chunk-Meta-Chunk-Hash": WRONG}))
    assert status == 201 and headers["x-oio-chunk-meta-chunk-hash"] == WRONG.upper()
    assert stored_hash(node, ec) == WRONG.upper()
    plain = chunk_id(808)
    assert node.put(plain, BODY, {"X-oio-Chunk-Meta-Chunk-Hash": WRONG})[0] == 400
    assert node.request("GET", f"/{plain}")[0] == 404
    assert node.put(plain, BODY)[0] == 201 and stored_hash(node, plain) == MD5
    # an EC fragment that announces nothing is hashed (never stored without a hash)
    bare = chunk_id(809)
    status, headers, _ = node.put(bare, BODY, EC_HEADERS)
    assert status == 201 and headers["x-oio-chunk-meta-chunk-hash"] == MD5
    # a real EC policy name ("EC63") with an EC chunk method is an EC fragment too
    # (the reference only tests the policy, which never starts with "ec/" in practice)
    ec_method_only = chunk_id(810)
    headers = dict(EC_HEADERS, **{"X-oio-Chunk-Meta-Content-Storage-Policy": "EC63",
                                  "X-oio-Chunk-Meta-Chunk-Hash": WRONG})
    assert node.put(ec_method_only, BODY, headers)[0] == 201
    assert stored_hash(node, ec_method_only) == WRONG.upper()
