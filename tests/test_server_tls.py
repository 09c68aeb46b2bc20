"""The TLS listener (tls_rawx_url, tls_cert_file, tls_key_file) against a real node:
real certificates from the openssl command, http.client with verification, curl."""
import hashlib
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

from nodeutil import CHUNK_HEADERS, Node, chunk_id


@pytest.fixture
def cert(tls_cert):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert, key) paths."""
    return tls_cert


@pytest.fixture
def tls_node(node_factory, cert):
    return node_factory(tls_rawx_url="127.0.0.1:0", tls_cert_file=cert[0],
                        tls_key_file=cert[1], timeout_read_header=2)


def client_context(cert):
    context = ssl.create_default_context(cafile=cert[0])
    return context


def https(node, cert, timeout=10):
    return http.client.HTTPSConnection("127.0.0.1", node.tls_port, timeout=timeout,
                                       context=client_context(cert))


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def test_both_addresses_announced_and_served(tls_node, cert):
    assert tls_node.tls_port and tls_node.tls_port != tls_node.port
    conn = https(tls_node, cert)
    status, headers, body = call(conn, "GET", "/info")
    assert status == 200 and body.startswith(b"namespace OPENIO\n")
    # the Host check accepts the TLS address (http.client sends 127.0.0.1:<tls port>)
    assert tls_node.request("GET", "/info")[0] == 200
    conn.close()


def test_put_get_head_delete_over_tls(tls_node, cert):
    data = os.urandom(3 << 20)  # several TLS records and several file pieces
    cid = chunk_id(1)
    conn = https(tls_node, cert)
    headers = dict(CHUNK_HEADERS)
    status, reply, _ = call(conn, "PUT", f"/{cid}", body=data, headers=headers)
    assert status == 201
    assert reply["x-oio-chunk-meta-chunk-hash"] == hashlib.md5(data).hexdigest().upper()
    # same keep-alive connection: full GET, ranged GET, HEAD, DELETE
    status, reply, body = call(conn, "GET", f"/{cid}")
    assert status == 200 and body == data
    status, reply, body = call(conn, "GET", f"/{cid}", headers={"Range": "bytes=100-2000099"})
    assert status == 206 and body == data[100:2000100]
    assert reply["content-range"] == f"bytes 100-2000099/{len(data)}"
    status, reply, body = call(conn, "HEAD", f"/{cid}", headers={"X-oio-check-hash": "true"})
    assert status == 200 and body == b"" and reply["content-length"] == str(len(data))
    status, _, _ = call(conn, "DELETE", f"/{cid}")
    assert status == 204
    status, _, _ = call(conn, "GET", f"/{cid}")
    assert status == 404
    conn.close()
    # what TLS wrote, the plain port serves (same volume, same layout)
    status, _, _ = tls_node.put(chunk_id(2), data[:1000])
    conn = https(tls_node, cert)
    assert call(conn, "GET", f"/{chunk_id(2)}")[2] == data[:1000]
    conn.close()


def test_chunked_upload_with_trailer_over_tls(tls_node, cert):
    pieces = [os.urandom(n) for n in (1, 70000, 5, 300000)]
    data = b"".join(pieces)
    digest = hashlib.md5(data).hexdigest().upper()
    cid = chunk_id(3)
    head = (f"PUT /{cid} HTTP/1.1\r\nHost: 127.0.0.1:{tls_node.tls_port}\r\n"
            "Transfer-Encoding: chunked\r\nTrailer: X-oio-Chunk-Meta-Chunk-Hash\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in CHUNK_HEADERS.items()) + "\r\n").encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    trailer = f"0\r\nX-oio-Chunk-Meta-Chunk-Hash: {digest}\r\n\r\n".encode()
    raw = socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10)
    with client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(head + body + trailer)
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 201 ")
    assert tls_node.request("GET", f"/{cid}")[2] == data


def read_reply(sock, deadline=10.0):
    """Bytes until a whole head (and a Content-Length body) arrived."""
    got = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        piece = sock.recv(65536)
        if not piece:
            break
        got += piece
        if b"\r\n\r\n" in got:
            head, _, rest = got.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if head.startswith(b"HTTP/1.1 1"):  # 100 Continue: keep reading
                got = rest
                continue
            if len(rest) >= length:
                return got
    return got


def test_pipelined_requests_over_tls(tls_node, cert):
    tls_node.put(chunk_id(4), b"four")
    tls_node.put(chunk_id(5), b"five!")
    host = f"127.0.0.1:{tls_node.tls_port}"
    both = (f"GET /{chunk_id(4)} HTTP/1.1\r\nHost: {host}\r\n\r\n"
            f"GET /{chunk_id(5)} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    raw = socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10)
    with client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(both.encode())
        got = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            got += piece
    assert got.count(b"HTTP/1.1 200 ") == 2
    assert got.index(b"\r\n\r\nfour") < got.index(b"\r\n\r\nfive!")


def test_curl_over_tls(tls_node, cert, tmp_path):
    data = os.urandom(1 << 20)
    src = tmp_path / "body"
    src.write_bytes(data)
    url = f"https://127.0.0.1:{tls_node.tls_port}/{chunk_id(6)}"
    args = ["curl", "-sS", "--cacert", cert[0], "-o", str(tmp_path / "out"),
            "-w", "%{http_code}"]
    headers = sum((["-H", f"{k}: {v}"] for k, v in CHUNK_HEADERS.items()), [])
    put = subprocess.run(args + headers + ["-T", str(src), url], capture_output=True,
                         text=True, timeout=30)
    assert put.stdout == "201", put.stderr
    get = subprocess.run(args + [url], capture_output=True, text=True, timeout=30)
    assert get.stdout == "200"
    assert (tmp_path / "out").read_bytes() == data


def test_plain_http_on_the_tls_port_is_dropped(tls_node, cert):
    with socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=5) as sock:
        sock.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        try:
            while len(got) < 1 << 20:  # until the server closes
                piece = sock.recv(65536)
                if not piece:
                    break
                got += piece
        except ConnectionResetError:
            pass
    assert b"namespace" not in got
    conn = https(tls_node, cert)
    assert call(conn, "GET", "/info")[0] == 200  # the worker is fine
    conn.close()


def test_silent_tls_client_is_dropped_after_the_header_timeout(tls_node, cert):
    with socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, no handshake ever started
        assert time.monotonic() - started < 9


def test_client_gone_mid_upload_leaves_nothing(tls_node, cert):
    cid = chunk_id(7)
    head = (f"PUT /{cid} HTTP/1.1\r\nHost: 127.0.0.1:{tls_node.tls_port}\r\n"
            f"Content-Length: {4 << 20}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in CHUNK_HEADERS.items()) + "\r\n").encode()
    raw = socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10)
    sock = client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(head + os.urandom(1 << 20))
    sock.close()
    path = tls_node.chunk_path(cid)
    for _ in range(100):
        line = [l for l in tls_node.access_lines(containing=cid) if cid in l]
        if line:
            break
        time.sleep(0.05)
    assert line and " PUT 499 " in line[0]
    directory = os.path.dirname(path)
    left = os.listdir(directory) if os.path.isdir(directory) else []
    assert not [name for name in left if cid in name]  # neither chunk nor .pending


def start_fails(tmp_path, **extra):
    node = Node(tmp_path, **extra)
    proc = subprocess.run([sys.executable, "-m", "storage", "serve", "-f",
                           str(node.conf_path)], capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stderr


def test_tls_url_without_files_is_a_config_error(tmp_path):
    code, err = start_fails(tmp_path, tls_rawx_url="127.0.0.1:0")
    assert code == 2 and "tls_cert_file" in err


def test_missing_or_bad_certificate_is_a_config_error(tmp_path, cert):
    code, err = start_fails(tmp_path, tls_rawx_url="127.0.0.1:0",
                            tls_cert_file=str(tmp_path / "nope.pem"), tls_key_file=cert[1])
    assert code == 2 and "nope.pem" in err and "Traceback" not in err
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    code, err = start_fails(tmp_path, tls_rawx_url="127.0.0.1:0",
                            tls_cert_file=str(bad), tls_key_file=cert[1])
    assert code == 2 and "cannot load" in err and "Traceback" not in err


def test_tls_listener_survives_a_reload(tls_node, cert):
    import signal
    conn = https(tls_node, cert)
    assert call(conn, "PUT", f"/{chunk_id(8)}", body=b"kept", headers=CHUNK_HEADERS)[0] == 201
    old = set(tls_node.worker_pids())
    tls_node.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and set(tls_node.worker_pids()) & old:
        time.sleep(0.05)
    assert old and not set(tls_node.worker_pids()) & old
    conn.close()
    conn = https(tls_node, cert)  # same port, same certificate
    assert call(conn, "GET", f"/{chunk_id(8)}")[2] == b"kept"
    conn.close()


def test_chunked_upload_then_pipelined_get_over_tls(tls_node, cert):
    """The chunked body is decoded on an I/O thread; the GET sent right behind it in
    the same TLS records must still be answered."""
    tls_node.put(chunk_id(9), b"next")
    data = os.urandom(200000)
    host = f"127.0.0.1:{tls_node.tls_port}"
    head = (f"PUT /{chunk_id(10)} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in CHUNK_HEADERS.items()) + "\r\n").encode()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    follow = f"GET /{chunk_id(9)} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    raw = socket.create_connection(("127.0.0.1", tls_node.tls_port), timeout=10)
    with client_context(cert).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(head + body + follow.encode())
        got = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            got += piece
    assert got.startswith(b"HTTP/1.1 201 ") and got.endswith(b"\r\n\r\nnext")
    assert tls_node.request("GET", f"/{chunk_id(10)}")[2] == data
