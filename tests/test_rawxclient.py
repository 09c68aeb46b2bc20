"""storage.rawxclient against a real node: chunked PUT with trailers,
ranged GET, HEAD with hash check, DELETE, errors."""
import hashlib

import pytest

from nodeutil import CHUNK_HEADERS, chunk_id
from storage.rawxclient import META, RawxClient, RawxError, split_chunk_url

EC_HEADERS = dict(CHUNK_HEADERS)
EC_HEADERS["X-oio-Chunk-Meta-Content-Chunk-Method"] = "ec/algo=liberasurecode_rs_vand,k=6,m=3"
EC_HEADERS["X-oio-Chunk-Meta-Content-Storage-Policy"] = "EC6+3"


def upload(client, cid, pieces, trailers=None):
    up = client.put(cid, EC_HEADERS, tuple(trailers or ()))
    for p in pieces:
        up.write(p)
    return up.finish(trailers)


def test_split_chunk_url():
    assert split_chunk_url("http://127.0.0.1:6000/ABC") == ("http://127.0.0.1:6000", "ABC")
    for bad in ("127.0.0.1:6000/ABC", "http://127.0.0.1:6000/", "https://h/ABC"):
        with pytest.raises(ValueError):
            split_chunk_url(bad)


def test_chunked_put_with_trailers_then_get_head_delete(node):
    client = RawxClient(f"http://{node.host}")
    pieces = [b"a" * 1000, b"", bytearray(b"b" * 70000), memoryview(b"xyz")]
    body = b"".join(bytes(p) for p in pieces)
    md5 = hashlib.md5(body).hexdigest().upper()
    cid = chunk_id(1)
    reply = upload(client, cid, pieces, {META + "Metachunk-Size": "5", META + "Metachunk-Hash": "AB",
                                         META + "Chunk-Hash": md5,
                                         META + "Chunk-Size": str(len(body))})
    assert reply["x-oio-chunk-meta-chunk-hash"] == md5
    # Same connection, kept alive: the ranged GET.
    reader = client.get(cid, 999, 1001)
    assert reader.status == 206
    buf = bytearray(3)
    reader.readinto_exact(buf)
    reader.finish()
    assert buf == b"abb"
    reader = client.get(cid)
    assert reader.status == 200 and reader.headers["x-oio-chunk-meta-metachunk-size"] == "5"
    whole = bytearray(len(body))
    reader.readinto_exact(whole)
    reader.finish()
    assert whole == body
    status, headers = client.head(cid, check_hash=True)
    assert status == 200 and headers["x-oio-chunk-meta-chunk-pos"] == "0"
    status, _ = client.head(cid, check_hash=True, expected_hash="0" * 32)
    assert status == 412
    assert client.delete(cid) == 204
    assert client.delete(cid) == 404
    with pytest.raises(RawxError) as err:
        client.get(cid, 0, 10)
    assert err.value.status == 404
    client.close()


def test_short_body_is_an_error(node):
    client = RawxClient(node.host)
    cid = chunk_id(2)
    upload(client, cid, [b"0123456789"], {META + "Metachunk-Size": "1", META + "Metachunk-Hash": "AB"})
    reader = client.get(cid, 5, 9)
    with pytest.raises(RawxError, match="ended 5 bytes early"):
        reader.readinto_exact(bytearray(10))


def test_bad_trailer_hash_leaves_nothing(node):
    client = RawxClient(f"http://{node.host}")
    cid = chunk_id(3)
    with pytest.raises(RawxError) as err:
        upload(client, cid, [b"data"], {META + "Metachunk-Size": "4", META + "Metachunk-Hash": "AB",
                                        META + "Chunk-Hash": "0" * 32})
    assert err.value.status == 400
    assert client.head(cid)[0] == 404


def test_ec_method_needs_metachunk_trailers(node):
    client = RawxClient(f"http://{node.host}")
    with pytest.raises(RawxError) as err:
        upload(client, chunk_id(4), [b"data"])
    assert err.value.status == 400


def test_aborted_put_leaves_nothing(node):
    client = RawxClient(f"http://{node.host}")
    cid = chunk_id(5)
    up = client.put(cid, EC_HEADERS)
    up.write(b"x" * 5000)
    up.abort()
    assert RawxClient(node.host).head(cid)[0] == 404


def test_unreachable_node():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = RawxClient(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(RawxError) as err:
        client.head(chunk_id(1))
    assert err.value.status is None
    with pytest.raises(RawxError):
        client.put(chunk_id(1), EC_HEADERS)


def test_reconnects_after_server_closed_idle_connection(node):
    client = RawxClient(f"http://{node.host}")
    assert client.head(chunk_id(9))[0] == 404
    client._conn.sock.shutdown(2)           # as if the server had closed it
    assert client.head(chunk_id(9))[0] == 404
