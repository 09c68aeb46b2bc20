"""The keep-alive lane inside a real node: once the compiled path has answered a
request of a keep-alive connection, the connection waits in the lane, and every later
request either is answered there or comes back to the Python path intact. Real nodes,
real sockets, real files."""
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time

import pytest
from nodeutil import CHUNK_HEADERS, chunk_id

BIG = 4 << 20
LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)\r\n", re.I)


def cached_chunk(node, n, size):
    """PUT a chunk, let it age past the racy window and GET it once, so the core knows
    it. -> (chunk id, body)."""
    cid = chunk_id(n)
    body = os.urandom(size)
    assert node.put(cid, body)[0] == 201
    old = time.time() - 10
    os.utime(node.chunk_path(cid), (old, old))
    time.sleep(1.1)  # the ctime (now) must be older than the racy window
    assert node.request("GET", f"/{cid}")[0] == 200
    return cid, body


class Wire:
    """Raw requests and replies on one keep-alive connection."""

    def __init__(self, node, timeout=10, rcvbuf=None):
        self.node = node
        self.sock = socket.socket()
        if rcvbuf:  # before connecting: the window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", node.port))
        self.buf = b""

    def send(self, method, path, headers=(), body=b""):
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.node.host}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body or method == "PUT":
            lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def reply(self, head_only=False):
        while b"\r\n\r\n" not in self.buf:
            got = self.sock.recv(65536)
            if not got:
                raise ConnectionError("closed before a reply")
            self.buf += got
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        match = LENGTH.search(head + b"\r\n")
        size = 0 if head_only or match is None else int(match.group(1))
        while len(self.buf) < size:
            got = self.sock.recv(1 << 20)
            if not got:
                raise ConnectionError("closed within a body")
            self.buf += got
        body, self.buf = self.buf[:size], self.buf[size:]
        return status, head, body

    def ask(self, method, path, headers=(), body=b""):
        self.send(method, path, headers, body)
        return self.reply(method == "HEAD")

    def closed(self, timeout=10):
        """True once the node closed the connection (EOF or reset)."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def put_headers():
    return list(CHUNK_HEADERS.items())


def test_every_route_on_a_connection_in_the_lane(node_factory):
    node = node_factory()
    cid, body = cached_chunk(node, 1, 5000)
    wire = Wire(node)
    try:
        assert wire.ask("GET", f"/{cid}")[2] == body  # answered by the core: in the lane
        status, head, got = wire.ask("GET", f"/{cid}", [("Range", "bytes=10-19")])
        assert status == 206 and got == body[10:20]
        assert wire.ask("HEAD", f"/{cid}")[0] == 200
        # handed back to the Python path, then answered there
        new = chunk_id(2)
        assert wire.ask("PUT", f"/{new}", put_headers(), b"fresh")[0] == 201
        assert wire.ask("GET", f"/{new}")[2] == b"fresh"  # not cached yet: Python
        assert wire.ask("GET", "/info")[0] == 200
        assert wire.ask("GET", f"/{cid}", [("Range", "bytes=9000-")])[0] == 416
        assert wire.ask("GET", f"/{cid}")[2] == body  # the core again
        assert wire.ask("DELETE", f"/{cid}")[0] == 204
        assert wire.ask("GET", f"/{cid}")[0] == 404  # the cached entry is no use now
        status, head, _ = wire.ask("GET", f"/{new}", [("Connection", "close")])
        assert status == 200 and b"Connection: close" in head
        assert wire.closed()
    finally:
        wire.close()
    lines = node.access_lines(containing=f"/{new}")
    assert sum(f"/{cid}" in line for line in lines) >= 8  # each request has its line


def test_pipelined_and_split_requests_come_back_whole(node_factory):
    node = node_factory()
    cid, body = cached_chunk(node, 3, 300)
    wire = Wire(node)
    try:
        assert wire.ask("GET", f"/{cid}")[2] == body
        head = f"GET /{cid} HTTP/1.1\r\nHost: {node.host}\r\n\r\n".encode()
        wire.sock.sendall(head * 3)  # three at once: the lane hands them back
        assert [wire.reply()[2] for _ in range(3)] == [body] * 3
        wire.sock.sendall(head[:10])  # half a head, then the rest
        time.sleep(0.2)
        wire.sock.sendall(head[10:])
        assert wire.reply()[2] == body
        assert wire.ask("GET", f"/{cid}")[2] == body
    finally:
        wire.close()


def test_big_replies_to_slow_readers_in_the_lane(node_factory):
    node = node_factory()
    cid, body = cached_chunk(node, 4, BIG)
    wires = [Wire(node) for _ in range(4)]
    try:
        for wire in wires:
            assert wire.ask("GET", f"/{cid}")[2] == body  # joins the lane
        for wire in wires:
            wire.send("GET", f"/{cid}")
        time.sleep(0.3)  # the replies fill the sockets and wait in the lane
        for wire in wires:
            assert wire.reply()[2] == body
            assert wire.ask("HEAD", f"/{cid}")[0] == 200
    finally:
        for wire in wires:
            wire.close()
    # nothing left in flight: the access line of the next request says so
    assert node.request("GET", "/info", headers={"X-oio-req-id": "after"})[0] == 200
    line = [l for l in node.access_lines(containing="after") if "after" in l][0]
    assert " get:0 " in line


def test_client_leaving_mid_reply_in_the_lane(node_factory):
    node = node_factory()
    size = 16 << 20  # more than the send buffer and the small window hold
    cid, body = cached_chunk(node, 5, size)
    wire = Wire(node, rcvbuf=4096)
    wire.ask("GET", f"/{cid}")
    wire.send("GET", f"/{cid}")
    time.sleep(0.3)
    wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    wire.close()  # reset with most of the reply unsent
    other = Wire(node)
    try:
        assert other.ask("GET", f"/{cid}")[2] == body  # the worker goes on serving
    finally:
        other.close()
    # the reply cut short has its access line, with the bytes that went out (the
    # lines are written by the flush that brings this last request's line)
    node.request("GET", "/info", headers={"X-oio-req-id": "synced"})
    sent = sorted(int(l.split()[9]) for l in node.access_lines(containing="synced")
                  if "GET 200" in l and f"/{cid}" in l)
    assert len(sent) == 4 and sent[0] < size and sent[1:] == [size] * 3


def test_idle_members_time_out(node_factory):
    node = node_factory(timeout_idle=1)
    cid, body = cached_chunk(node, 6, 100)
    wire = Wire(node)
    try:
        assert wire.ask("GET", f"/{cid}")[2] == body
        assert wire.closed(timeout=5)  # swept by the worker's tick
    finally:
        wire.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_closes_idle_members_and_finishes_replies(node_factory, sig):
    node = node_factory()
    cid, body = cached_chunk(node, 7, BIG)
    idle, busy = Wire(node), Wire(node)
    try:
        assert idle.ask("GET", f"/{cid}")[2] == body
        assert busy.ask("GET", f"/{cid}")[2] == body
        busy.send("GET", f"/{cid}")
        time.sleep(0.2)  # the reply waits in the lane for the reader
        node.proc.send_signal(sig)
        assert idle.closed()
        status, head, got = busy.reply()
        assert status == 200 and got == body  # finished before the worker left
        assert busy.closed()
        assert node.proc.wait(15) == 0
    finally:
        idle.close()
        busy.close()


def test_volume_gone_is_503_for_members(node_factory):
    node = node_factory(probe_interval=0.2)
    cid, body = cached_chunk(node, 8, 100)
    wire = Wire(node)
    moved = node.docroot + ".moved"
    try:
        assert wire.ask("GET", f"/{cid}")[2] == body
        os.rename(node.docroot, moved)
        with open(node.docroot, "w") as f:
            f.write("not a directory")
        deadline = time.monotonic() + 5
        status = 200
        while status != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
            status = wire.ask("GET", f"/{cid}")[0]
        assert status == 503
    finally:
        wire.close()
        if os.path.exists(moved):
            os.unlink(node.docroot)
            os.rename(moved, node.docroot)


def epoll_sets_waited_on(node, cid):
    """strace the worker through five keep-alive GETs -> the epoll descriptors it
    waited on (None: strace cannot run here)."""
    pid = node.worker_pids()[0]
    out = node.tmp_path / "strace.out"
    tracer = subprocess.Popen(["strace", "-e", "trace=epoll_wait,epoll_pwait", "-o",
                               str(out), "-p", str(pid)], stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([tracer.stderr], [], [], 5)
        if not ready or "attached" not in tracer.stderr.readline().decode():
            return None
        wire = Wire(node)
        for _ in range(5):
            wire.ask("GET", f"/{cid}")
        wire.close()
        time.sleep(0.2)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(5)
    return set(re.findall(r"epoll_p?wait\((\d+),", out.read_text()))


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("lane", ["on", "off"])
def test_the_worker_waits_in_the_lane(node_factory, lane):
    node = node_factory(env={"STORAGE_NODE_GET_LANE": lane})
    cid, _ = cached_chunk(node, 9, 100)
    sets = epoll_sets_waited_on(node, cid)
    if sets is None:
        pytest.skip("cannot trace the node")
    assert len(sets) == (2 if lane == "on" else 1)
