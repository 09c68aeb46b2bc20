"""HTTP/1.1 behaviour of the real node over raw sockets: framing, keep-alive,
pipelining, 100-continue, chunked bodies, smuggling defences, limits, timeouts."""
import os
import re
import socket
import time

import pytest
from nodeutil import CHUNK_HEADERS, chunk_id


def put_head(cid, host, extra="", length=None, chunked=False):
    lines = [f"PUT /{cid} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in CHUNK_HEADERS.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def statuses(raw):
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


def test_keepalive_and_pipelining(node):
    host = node.host
    cid = chunk_id(200)
    req = put_head(cid, host, length=5) + b"hello"
    req += f"GET /{cid} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    req += f"HEAD /{cid} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    req += f"GET /info HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    out = node.raw(req)
    assert statuses(out) == [201, 200, 200, 200]
    assert out.count(b"hello") == 1  # GET body, HEAD has none
    assert out.endswith(b"hash_width 3\n")


def test_http10_without_host_and_closes(node):
    out = node.raw(b"GET /info HTTP/1.0\r\n\r\n")
    assert statuses(out) == [200] and b"Connection: close" in out


def test_http10_keepalive(node):
    out = node.raw(b"GET /info HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                   b"GET /info HTTP/1.0\r\n\r\n")
    assert statuses(out) == [200, 200]


def test_expect_100_continue(node):
    cid = chunk_id(201)
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(put_head(cid, node.host, "Expect: 100-continue", length=3))
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"abc")
        assert statuses(s.recv(4096)) == [201]


def test_expect_100_refused_is_answered_at_once(node):
    cid = chunk_id(202)
    assert node.put(cid, b"x")[0] == 201
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(put_head(cid, node.host, "Expect: 100-continue", length=1000))
        reply = s.recv(4096)
        assert statuses(reply) == [409] and b"Connection: close" in reply


def test_error_with_body_keeps_connection_after_drain(node):
    cid = chunk_id(203)
    assert node.put(cid, b"x")[0] == 201
    body = b"z" * 300_000
    req = put_head(cid, node.host, length=len(body)) + body
    req += f"GET /info HTTP/1.1\r\nHost: {node.host}\r\nConnection: close\r\n\r\n".encode()
    assert statuses(node.raw(req)) == [409, 200]


def test_chunked_body_with_trailers(node):
    cid = chunk_id(204)
    import hashlib
    md5 = hashlib.md5(b"hello world").hexdigest()
    body = (b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n"
            b"X-oio-Chunk-Meta-Chunk-Hash: " + md5.encode() + b"\r\n"
            b"X-oio-Ext-Trailer-Key: tv\r\n\r\n")
    req = put_head(cid, node.host, chunked=True) + body
    req += f"GET /{cid} HTTP/1.1\r\nHost: {node.host}\r\nConnection: close\r\n\r\n".encode()
    out = node.raw(req)
    assert statuses(out) == [201, 200]
    assert out.endswith(b"hello world")
    assert b"X-Oio-Ext-Trailer-Key: tv" in out


def test_chunked_trailer_hash_mismatch(node):
    cid = chunk_id(205)
    body = b"3\r\nabc\r\n0\r\nX-oio-Chunk-Meta-Chunk-Hash: " + b"0" * 32 + b"\r\n\r\n"
    out = node.raw(put_head(cid, node.host, chunked=True) + body, shut=True)
    assert statuses(out) == [400]
    assert node.request("GET", f"/{cid}")[0] == 404


@pytest.mark.parametrize("body", [
    b"zz\r\nabc\r\n0\r\n\r\n", b"3\nabc\r\n0\r\n\r\n", b"3\r\nabcd\r\n0\r\n\r\n",
    b"-3\r\nabc\r\n0\r\n\r\n", b"fffffffffffffffff\r\n",
])
def test_malformed_chunked_400_nothing_stored(node, body):
    cid = chunk_id(206)
    out = node.raw(put_head(cid, node.host, chunked=True) + body, shut=True)
    assert statuses(out) == [400]
    assert node.request("GET", f"/{cid}")[0] == 404


@pytest.mark.parametrize("extra,status", [
    ("Content-Length: 3\r\nTransfer-Encoding: chunked", 400),
    ("Content-Length: 3\r\nContent-Length: 4", 400),
    ("Content-Length: ", 400),
    ("Content-Length: 3x", 400),
    ("Content-Length: -3", 400),
    ("Transfer-Encoding: gzip", 501),
    ("X-Folded: a\r\n  b", 400),
    ("Bad Header: x", 400),
    ("Expect: something", 417),
])
def test_smuggling_defences(node, extra, status):
    head = f"PUT /{chunk_id(207)} HTTP/1.1\r\nHost: {node.host}\r\n{extra}\r\n\r\nabc"
    out = node.raw(head.encode(), shut=True)
    assert statuses(out)[:1] == [status]
    assert node.request("GET", f"/{chunk_id(207)}")[0] == 404


def test_header_too_large_431(node):
    big = "X-Big: " + "a" * 70_000
    out = node.raw(f"GET /info HTTP/1.1\r\nHost: {node.host}\r\n{big}\r\n\r\n".encode())
    assert statuses(out) == [431]


def test_bad_request_line(node):
    assert statuses(node.raw(b"GARBAGE\r\n\r\n")) == [400]
    assert statuses(node.raw(b"GET /info HTTP/2.0\r\n\r\n")) == [505]


def test_wrong_host_418(node):
    status, _, body = node.request("GET", "/info", headers={"Host": "10.1.2.3:6009"})
    assert status == 418  # oio-rawx's rule, with a one-line reason (the reference: none)
    assert body == f"wrong Host 10.1.2.3:6009: this service is {node.host}, " \
        "rawx-test\n".encode()
    assert node.request("GET", "/info", headers={"Host": "rawx-test"})[0] == 200
    assert statuses(node.raw(b"GET /info HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")) \
        == [200]


def test_request_id_cut_to_63(node):
    _, headers, _ = node.request("GET", "/info", headers={"X-trans-id": "r" * 100})
    assert headers["x-oio-req-id"] == "r" * 63


def test_silent_client_is_dropped(node_factory):
    node = node_factory(timeout_read_header=1, timeout_idle=2)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(b"GET /info HTTP/1.1\r\n")  # never finishes its head
        start = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - start < 8
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        start = time.monotonic()
        assert s.recv(100) == b""  # idle keep-alive connection
        assert time.monotonic() - start < 8


@pytest.mark.parametrize("io_threads", [2, 0])
def test_slow_body_times_out_and_leaves_nothing(node_factory, io_threads):
    node = node_factory(timeout_read_request=1, io_threads=io_threads)
    cid = chunk_id(208)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
        s.sendall(put_head(cid, node.host, length=100) + b"only some")
        assert s.recv(100) == b""
    assert node.request("GET", f"/{cid}")[0] == 404
    assert any(" PUT 408 " in line for line in node.access_lines(" PUT 408 "))
    assert node.put(cid, b"x")[0] == 201


def test_empty_lines_before_request_are_ignored(node):
    out = node.raw(b"\r\n\r\nGET /info HTTP/1.1\r\nHost: " + node.host.encode() +
                   b"\r\nConnection: close\r\n\r\n")
    assert statuses(out) == [200]


def test_non_utf8_escape_in_chunk_id_is_400(node):
    assert node.request("GET", "/%FF" + "A" * 30)[0] == 400


def test_chunked_body_read_by_a_thread_then_pipelined_request(node):
    """Head first, then the chunked body and the next request in one send: the body is
    decoded on an I/O thread, which hands the pipelined request back to the loop."""
    cid = chunk_id(211)
    data = os.urandom(300000)
    head = (f"PUT /{cid} HTTP/1.1\r\nHost: {node.host}\r\nTransfer-Encoding: chunked\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in CHUNK_HEADERS.items()) + "\r\n").encode()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    follow = f"GET /info HTTP/1.1\r\nHost: {node.host}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(head)
        time.sleep(0.1)
        sock.sendall(body + follow.encode())
        out = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            out += piece
    assert statuses(out) == [201, 200] and out.endswith(b"hash_width 3\n")
    assert node.request("GET", f"/{cid}")[2] == data
