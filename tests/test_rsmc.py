"""RSMC against real nodes on 127.0.0.1: node A's management port (rsmc_listen)
receives from node B (ours) and from a plain HTTP server, sends to B, erases, gives
INFO and its request log across a restart; every refusal; credentials off loopback."""
import hashlib
import http.server
import os
import socket
import threading

import pytest

from nodeutil import chunk_id
from storage.rsmc.client import RsmcClient
from test_send import EXT, chunk_meta, head, put_chunk

REALM = "CAStor administrator"


def rsmc(node, user=None, password=None):
    return RsmcClient("127.0.0.1", node.rsmc_port, user, password, timeout=30)


def raw(node, data, timeout=10):
    """Raw bytes to the management port; everything it answers until it closes."""
    with socket.create_connection(("127.0.0.1", node.rsmc_port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            got = sock.recv(65536)
            if not got:
                return out.decode("latin-1")
            out += got


@pytest.fixture
def nodes(node_factory):
    a = node_factory(sub="a", rsmc_listen="127.0.0.1:0")
    b = node_factory(sub="b", service_id="")
    return a, b


def test_receive_from_our_node_keeps_data_and_metadata(nodes):
    a, b = nodes
    ids = [chunk_id(200 + i) for i in range(3)]
    for i, cid in enumerate(ids):
        put_chunk(b, cid, os.urandom(70000 + i))
    renamed = chunk_id(299)
    items = [f"http://{b.host}/{ids[0]}", f"http://{b.host}/{ids[1]} {renamed}",
             f"http://{b.host}/{ids[2]}", f"http://{b.host}/{chunk_id(298)}"]
    reply = rsmc(a).request("RECEIVE", "/", items)
    assert reply.code == 207
    assert [(o[0], o[1]) for o in reply.objects] == [
        (items[0], 201), (items[1].split()[0], 201), (items[2], 201),
        (items[3], 404)]
    for src, dst in ((ids[0], ids[0]), (ids[1], renamed), (ids[2], ids[2])):
        assert a.request("GET", f"/{dst}")[2] == b.request("GET", f"/{src}")[2]
    assert chunk_meta(head(a, ids[0])[1]) == chunk_meta(head(b, ids[0])[1])
    moved = chunk_meta(head(a, renamed)[1])
    assert moved["x-oio-chunk-meta-chunk-id"] == renamed
    assert moved["x-oio-ext-note"] == EXT["X-Oio-Ext-Note"]
    again = rsmc(a).request("RECEIVE", "/", items[:1])
    assert again.code == 409 and again.objects[0][1] == 409


def test_receive_of_a_corrupt_source_stores_nothing(nodes):
    a, b = nodes
    cid = chunk_id(210)
    put_chunk(b, cid, os.urandom(50000))
    with open(b.chunk_path(cid), "r+b") as f:
        f.seek(100)
        f.write(b"\xff\x00")
    reply = rsmc(a).request("RECEIVE", "/", [f"http://{b.host}/{cid}"])
    assert reply.code == 400 and "verification failed" in reply.objects[0][2]
    assert head(a, cid)[0] == 404 and not os.path.exists(a.chunk_path(cid))


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **kw: _Files(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_receive_from_a_plain_web_server(nodes, web):
    a, _ = nodes
    root, host = web
    data = os.urandom(5000)
    (root / "file.bin").write_bytes(data)
    cid = chunk_id(220)
    reply = rsmc(a).request("RECEIVE", "/", [f"http://{host}/file.bin {cid}"])
    assert reply.code == 400 and "no chunk metadata" in reply.objects[0][2]
    assert head(a, cid)[0] == 404
    meta = {"X-oio-Chunk-Meta-Content-Storage-Policy": "SINGLE",
            "X-oio-Chunk-Meta-Content-Chunk-Method": "plain/nb_copy=1",
            "X-oio-Chunk-Meta-Chunk-Pos": "0",
            "X-oio-Chunk-Meta-Full-Path": "acct/cont/obj/1/0123456789ABCDEF0123456789ABCDEF"}
    reply = rsmc(a).request("RECEIVE", "/", [f"http://{host}/file.bin {cid}"], meta)
    assert reply.code == 201, reply.objects
    assert a.request("GET", f"/{cid}")[2] == data
    assert head(a, cid)[1]["x-oio-chunk-meta-chunk-hash"] == \
        hashlib.md5(data).hexdigest().upper()
    bad = dict(meta, **{"X-oio-Chunk-Meta-Chunk-Hash": "0" * 32})
    other = chunk_id(221)
    reply = rsmc(a).request("RECEIVE", "/", [f"http://{host}/file.bin {other}"], bad)
    assert reply.code == 400 and head(a, other)[0] == 404


def test_send_erase_info(nodes):
    a, b = nodes
    cid, missing = chunk_id(230), chunk_id(231)
    put_chunk(a, cid, os.urandom(300000))
    client = rsmc(a)
    reply = client.request("SEND", "/", [f"{cid} http://{b.host}/{cid}",
                                         f"{missing} http://{b.host}/{missing}",
                                         f"{cid} http://10.1.2.3:6000/{cid}"])
    assert [o[1] for o in reply.objects] == [201, 404, 403] and reply.code == 207
    assert b.request("GET", f"/{cid}")[2] == a.request("GET", f"/{cid}")[2]
    assert client.request("SEND", "/", [f"{cid} http://{b.host}/{cid}"]).code == 409
    # a destination given as a node only: the chunk keeps its id
    other = chunk_id(232)
    put_chunk(a, other, b"x" * 10)
    assert client.request("SEND", "/", [f"{other} http://{b.host}"]).code == 201
    assert b.request("GET", f"/{other}")[2] == b"x" * 10
    info = client.request("INFO", cid)
    assert info.code == 200 and info.objects == [(cid, 200, "OK")]
    lines = dict(line.split(": ", 1) for line in info.payload.decode().splitlines())
    assert {k.lower(): v for k, v in lines.items()} == chunk_meta(head(a, cid)[1])
    remote = client.request("INFO", f"http://{b.host}/{cid}")
    assert remote.code == 200 and remote.payload == info.payload
    assert client.request("INFO", missing).code == 404
    erase = client.request("ERASE", "/", [cid, missing, "../" + cid])
    assert [o[1] for o in erase.objects] == [204, 404, 403]
    assert head(a, cid)[0] == 404
    client.close()


def test_refusals_and_limits(nodes, tmp_path):
    a, b = nodes
    cid = chunk_id(240)
    put_chunk(a, cid, b"keep me")
    client = rsmc(a)
    erase = client.request("ERASE", "/", ["/etc/passwd", "../../etc/passwd", "not-hex",
                                          f"./{cid}"])
    assert [o[1] for o in erase.objects] == [403, 403, 400, 403]
    assert client.request("ERASE", "/..", [cid]).objects[0][1] == 403
    # a symlink in the volume is not followed
    link = chunk_id(241)
    os.makedirs(os.path.dirname(a.chunk_path(link)), exist_ok=True)
    os.symlink("/etc/hostname", a.chunk_path(link))
    assert client.request("INFO", link).code == 403
    assert client.request("ERASE", "/", [link]).objects[0][1] == 403
    assert os.path.islink(a.chunk_path(link))
    client.close()
    # whole-request refusals: nothing is done
    too_many = "".join(f"{chunk_id(i)}\r\n" for i in range(10001))
    reply = raw(a, f"ERASE / RSMP/1.0\r\n\r\n{cid}\r\n{too_many}\r\n".encode())
    assert reply.startswith("RSMP/1.0 413 ") and head(a, cid)[0] == 200
    huge = "X-Pad: " + "a" * (1 << 20) + "\r\n"
    assert raw(a, f"INFO {cid} RSMP/1.0\r\n{huge}\r\n".encode()).startswith("RSMP/1.0 413 ")
    assert raw(a, b"FROB x RSMP/1.0\r\n\r\n").startswith("RSMP/1.0 501 ")
    assert raw(a, b"INFO x HTTP/1.1\r\n\r\n").startswith("RSMP/1.0 400 ")


def test_peers_are_checked_after_name_resolution(node_factory):
    a = node_factory(sub="a", rsmc_listen="127.0.0.1:0", rsmc_peers="127.0.0.2/32")
    b = node_factory(sub="b", service_id="")
    cid = chunk_id(250)
    put_chunk(b, cid, b"data")
    # "localhost" resolves to 127.0.0.1, outside 127.0.0.2/32: refused, no connection
    reply = rsmc(a).request("RECEIVE", "/", [f"http://localhost:{b.port}/{cid}",
                                             f"http://127.0.0.1:{b.port}/{cid}"])
    assert [o[1] for o in reply.objects] == [403, 403]
    assert not [l for l in b.access_lines() if cid in l and " GET " in l]


def test_several_requests_per_connection_lf_endings(nodes):
    a, b = nodes
    cid = chunk_id(260)
    put_chunk(a, cid, b"x")
    out = raw(a, f"INFO {cid} RSMP/1.0\n\nERASE / RSMP/1.0\n\n{cid}\n\nINFO {cid} RSMP/1.0\n\n"
              .encode())
    codes = [line.split()[1] for line in out.splitlines() if line.startswith("RSMP/1.0")]
    assert codes == ["200", "204", "404"]


def test_log_and_its_backups_across_a_restart(nodes):
    a, _ = nodes
    cid = chunk_id(270)
    put_chunk(a, cid, b"x")
    a.access_lines(cid)
    log = rsmc(a).request("LOG")
    assert log.code == 200 and cid.encode() in log.payload
    assert rsmc(a).request("GET", "server.log.1").code == 404
    a.stop()
    a.start()
    first = rsmc(a).request("LOG")
    assert first.code == 200 and cid.encode() not in first.payload
    backup = rsmc(a).request("GET", "server.log.1")
    assert backup.code == 200 and backup.payload == log.payload
    assert rsmc(a).request("GET", "server.log.99").code == 404
    assert rsmc(a).request("GET", "../etc/passwd").code == 404


def test_log_without_a_log_file_is_404(node_factory):
    a = node_factory(sub="a", rsmc_listen="127.0.0.1:0", access_log="-")
    reply = rsmc(a).request("LOG")
    assert reply.code == 404 and "not written to a file" in reply.objects[0][2]


def test_credentials_off_loopback(node_factory, tmp_path):
    ha1 = hashlib.md5(f"admin:{REALM}:pw".encode()).hexdigest()
    digest = tmp_path / "admin.htdigest"
    digest.write_text(f"admin:{REALM}:{ha1}\n")
    # bound to the wildcard address: not loopback, so every request needs credentials
    # (the tests only ever connect to 127.0.0.1)
    a = node_factory(sub="a", rsmc_listen="0.0.0.0:0", admin_htdigest=digest)
    cid = chunk_id(280)
    put_chunk(a, cid, b"x")
    reply = rsmc(a).request("ERASE", "/", [cid])
    assert reply.code == 401 and reply.header("WWW-Authenticate")[0].startswith("Digest ")
    assert head(a, cid)[0] == 200  # nothing done
    assert rsmc(a, "admin", "wrong").request("ERASE", "/", [cid]).code == 401
    assert head(a, cid)[0] == 200
    client = rsmc(a, "admin", "pw")
    assert client.request("INFO", cid).code == 200  # Digest, after the challenge
    assert client.request("ERASE", "/", [cid]).code == 204  # the same nonce, nc 2
    client.close()
    import base64
    token = base64.b64encode(b"admin:pw").decode()
    out = raw(a, f"INFO {cid} RSMP/1.0\r\nAuthorization: Basic {token}\r\n\r\n".encode())
    assert out.startswith("RSMP/1.0 404 ")


def test_rsmc_off_loopback_needs_an_admin_file(tmp_path):
    from storage.config import ConfigError, parse_text
    with pytest.raises(ConfigError, match="rsmc_listen"):
        parse_text("listen 127.0.0.1:1\nnamespace N\ndocroot /d\nrsmc_listen 0.0.0.0:90\n")
    assert parse_text("listen 127.0.0.1:1\nnamespace N\ndocroot /d\n"
                      "rsmc_listen 127.0.0.1:90\n").rsmc_port == 90


def test_receive_and_erase_emit_chunk_events(node_factory, beanstalkd_factory):
    import json
    from beanstalkutil import Client
    server = beanstalkd_factory()
    a = node_factory(sub="a", rsmc_listen="127.0.0.1:0", events="on",
                     event_agent=f"beanstalk://127.0.0.1:{server.port}")
    b = node_factory(sub="b", service_id="")
    cid = chunk_id(290)
    put_chunk(b, cid, b"evented")
    assert rsmc(a).request("RECEIVE", "/", [f"http://{b.host}/{cid}"]).code == 201
    assert rsmc(a).request("ERASE", "/", [cid]).code == 204
    client = Client(server.port)
    try:
        new, deleted = (json.loads(body) for body in client.take(2, timeout=10))
    finally:
        client.close()
    assert (new["event"], deleted["event"]) == ("storage.chunk.new", "storage.chunk.deleted")
    assert new["data"]["chunk_id"] == deleted["data"]["chunk_id"] == cid
    assert new["data"]["chunk_size"] == "7"
