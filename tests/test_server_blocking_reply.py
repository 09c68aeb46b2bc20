"""Replies built by blocking work on an I/O thread (BlockingReply): HEAD check-hash and
compressed GETs that inflate up to a far Range, against a real node, with and without
I/O threads."""
import hashlib
import os
import socket

import pytest

from nodeutil import chunk_id

THREADS = pytest.mark.parametrize("io_threads", [0, 2])


@THREADS
def test_head_check_hash(node_factory, io_threads):
    node = node_factory(io_threads=io_threads)
    data = os.urandom(3 << 20)
    cid = chunk_id(1)
    assert node.put(cid, data)[0] == 201
    check = {"X-oio-check-hash": "true"}
    status, headers, body = node.request("HEAD", f"/{cid}", headers=check)
    assert status == 200 and headers["content-length"] == str(len(data)) and body == b""
    wrong = dict(check, **{"X-oio-Chunk-Meta-Chunk-Hash": "00" * 16})
    assert node.request("HEAD", f"/{cid}", headers=wrong)[0] == 412
    with open(node.chunk_path(cid), "r+b") as chunk:  # flip one byte on disk
        chunk.seek(len(data) // 2)
        byte = chunk.read(1)
        chunk.seek(len(data) // 2)
        chunk.write(bytes([byte[0] ^ 1]))
    assert node.request("HEAD", f"/{cid}", headers=check)[0] == 412
    assert node.request("HEAD", f"/{cid}")[0] == 200  # no check asked: no hashing
    assert node.request("HEAD", f"/{chunk_id(99)}", headers=check)[0] == 404


@THREADS
def test_pipelined_request_after_a_check_hash_waits_its_turn(node_factory, io_threads):
    node = node_factory(io_threads=io_threads)
    node.put(chunk_id(2), os.urandom(2 << 20))
    node.put(chunk_id(3), b"small")
    both = (f"HEAD /{chunk_id(2)} HTTP/1.1\r\nHost: {node.host}\r\nX-oio-check-hash: true"
            f"\r\n\r\nGET /{chunk_id(3)} HTTP/1.1\r\nHost: {node.host}\r\n"
            "Connection: close\r\n\r\n").encode()
    got = node.raw(both)
    assert got.startswith(b"HTTP/1.1 200 ")
    assert got.count(b"HTTP/1.1 200 ") == 2 and got.endswith(b"\r\n\r\nsmall")


def test_client_gone_during_a_check_hash(node_factory):
    node = node_factory(io_threads=2)
    cid = chunk_id(4)
    node.put(cid, os.urandom(16 << 20))
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(f"HEAD /{cid} HTTP/1.1\r\nHost: {node.host}\r\n"
                     "X-oio-check-hash: true\r\n\r\n".encode())
    lines = node.access_lines(containing=f" HEAD ", timeout=10)
    assert [line for line in lines if f" HEAD " in line and cid in line]  # accounted for
    assert node.request("GET", "/info")[0] == 200  # the worker lives on
    assert node.request("HEAD", f"/{cid}", headers={"X-oio-check-hash": "true"})[0] == 200


@THREADS
def test_compressed_range_far_into_the_chunk(node_factory, io_threads):
    node = node_factory(io_threads=io_threads, compression="zlib")
    data = hashlib.sha256(b"seed").digest() * (3 << 15)  # 3 MiB, compressible
    data = bytes(b ^ (i & 0xFF) for i, b in enumerate(data[:1 << 16])) + data[1 << 16:]
    cid = chunk_id(5)
    assert node.put(cid, data)[0] == 201
    first, last = (5 << 19) + 7, (5 << 19) + 100006  # 2.5 MiB in: inflated on a thread
    status, headers, body = node.request("GET", f"/{cid}",
                                         headers={"Range": f"bytes={first}-{last}"})
    assert status == 206 and body == data[first:last + 1]
    assert headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    # a corrupt stream found while skipping: a clean 500 before any byte of body
    with open(node.chunk_path(cid), "r+b") as chunk:
        chunk.seek(100)
        chunk.write(b"\xff" * 64)
    status, _, body = node.request("GET", f"/{cid}", headers={"Range": f"bytes={first}-"})
    assert status == 500 and body.startswith(b"cannot read the compressed chunk")
    assert node.request("GET", "/info")[0] == 200
