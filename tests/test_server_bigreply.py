"""Big file replies against a real node: every byte to a slow reader (Python and compiled
paths), pipelined big replies in order, a client that stops reading (write timeout),
and a shutdown while such a client holds a reply."""
import hashlib
import os
import re
import socket
import time

from nodeutil import chunk_id

MiB = 1 << 20


def put_big(node, n, size=6 * MiB):
    body = os.urandom(size)
    cid = chunk_id(n)
    status, _, _ = node.put(cid, body, headers={"X-oio-Chunk-Meta-Chunk-Id": cid})
    assert status == 201
    return cid, body


def slow_get(node, raw, size, rcvbuf=16 << 10, pause=0.002, limit=20.0):
    """Send ``raw`` and read through a small receive buffer, slowly, until the server
    closes (the last request says Connection: close) or ``size`` bytes came."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", node.port))
        sock.sendall(raw)
        data = bytearray()
        deadline = time.monotonic() + limit
        while len(data) < size and time.monotonic() < deadline:
            got = sock.recv(64 << 10)
            if not got:
                break
            data += got
            time.sleep(pause)
        return bytes(data)


def split_reply(data):
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def stat_value(node, name):
    _, _, body = node.request("GET", "/stat")
    match = re.search(rf"^counter {re.escape(name)} (\d+)$", body.decode(), re.M)
    return int(match.group(1))


def test_slow_reader_gets_every_byte(node_factory):
    node = node_factory(workers=1)
    cid, body = put_big(node, 1)
    raw = f"GET /{cid} HTTP/1.1\r\nHost: {node.host}\r\nConnection: close\r\n\r\n".encode()
    for attempt in range(2):  # the Python path, then (cached metadata) the compiled one
        data = slow_get(node, raw, len(body) + 4096)
        head, got = split_reply(data)
        assert head.startswith("HTTP/1.1 200 ") and f"Content-Length: {len(body)}" in head
        assert hashlib.md5(got).digest() == hashlib.md5(body).digest()
        time.sleep(1.1)  # old enough for the metadata cache
    assert stat_value(node, "rep.bread") >= 2 * len(body)


def test_pipelined_big_replies_come_in_order(node_factory):
    node = node_factory(workers=1)
    one, body1 = put_big(node, 2, 3 * MiB)
    two, body2 = put_big(node, 3, 2 * MiB + 7)
    raw = (f"GET /{one} HTTP/1.1\r\nHost: {node.host}\r\n\r\n"
           f"GET /{two} HTTP/1.1\r\nHost: {node.host}\r\nX-oio-req-id: second\r\n\r\n"
           f"GET /{one} HTTP/1.1\r\nHost: {node.host}\r\nRange: bytes=5-9\r\n"
           "Connection: close\r\n\r\n").encode()
    data = slow_get(node, raw, len(body1) + len(body2) + 5 + 3000)
    head1, rest = split_reply(data)
    assert head1.startswith("HTTP/1.1 200 ")
    assert rest[:len(body1)] == body1
    head2, rest = split_reply(rest[len(body1):])
    assert "X-Oio-Req-Id: second" in head2
    assert rest[:len(body2)] == body2
    head3, rest = split_reply(rest[len(body2):])
    assert head3.startswith("HTTP/1.1 206 ") and rest == body1[5:10]


def test_a_client_that_stops_reading_is_cut_at_the_write_timeout(node_factory):
    node = node_factory(workers=1, timeout_write_reply=1)
    cid, body = put_big(node, 4, 16 * MiB)
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(10)
        stalled.connect(("127.0.0.1", node.port))
        stalled.sendall(f"GET /{cid} HTTP/1.1\r\nHost: {node.host}\r\n\r\n".encode())
        time.sleep(0.3)
        # the worker's loop is free meanwhile
        status, _, got = node.request("GET", "/" + cid, headers={"Range": "bytes=0-99"})
        assert status == 206 and got == body[:100]
        time.sleep(2.0)  # past the write timeout (swept every 0.5 s)
        received = 0
        closed = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                got = stalled.recv(MiB)
            except ConnectionResetError:
                closed = True
                break
            if not got:
                closed = True
                break
            received += len(got)
        assert closed and received < len(body)
    log = node.access_path.read_text()
    assert re.search(rf" GET 200 \d+ \d+ 0 .*/{cid}", log)
    status, _, _ = node.request("GET", "/info")
    assert status == 200


def test_shutdown_while_a_client_holds_a_big_reply(node_factory):
    node = node_factory(workers=1, shutdown_timeout=1)
    cid, _ = put_big(node, 5, 16 * MiB)
    with socket.socket() as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", node.port))
        stalled.sendall(f"GET /{cid} HTTP/1.1\r\nHost: {node.host}\r\n\r\n".encode())
        time.sleep(0.3)
        started = time.monotonic()
        assert node.stop(timeout=10) == 0
        assert time.monotonic() - started < 8
