"""SEND /<ID>?admin (legacy form) between real nodes on 127.0.0.1: node A (cluster
OPENIO) pushes chunks to node B (cluster DRNS), with curl and raw sockets as clients.
Faults come from real processes: a node stopped or killed, a relay that slows or cuts
the link (tests/proxyutil.py)."""
import base64
import hashlib
import os
import socket
import time

import pytest

from nodeutil import chunk_id
from proxyutil import Relay
from sendutil import REALM, PASSWORD, basic, body_of, curl_send, htdigest_line, raw_send
from storage.fast import load

chunked = load("chunked")

EXT = {"X-Oio-Ext-Owner": "ops team", "X-Oio-Ext-Note": "50% off"}


@pytest.fixture
def htdigest(tmp_path):
    path = tmp_path / "admin.htdigest"
    path.write_text("# admins\n" + htdigest_line("admin", PASSWORD))
    return path


@pytest.fixture
def pair(node_factory, htdigest):
    """(source A, target B): two clusters."""
    a = node_factory(sub="a", admin_htdigest=htdigest, keepalive_interval=0.3)
    b = node_factory(sub="b", namespace="DRNS")
    return a, b


def put_chunk(node, cid, body, headers=None):
    status, _, _ = node.put(cid, body, headers={**EXT, **(headers or {})})
    assert status == 201


def head(node, cid):
    status, headers, _ = node.request("HEAD", f"/{cid}")
    return status, headers


def chunk_meta(headers):
    return {k: v for k, v in headers.items()
            if k.startswith("x-oio-chunk-meta-") or k.startswith("x-oio-ext-")}


def send_headers(target, cluster="DRNS", **extra):
    return {"Authorization": basic(), "Castor-System-Cluster": cluster,
            "Castor-System-Target": target, **extra}


def test_curl_anyauth_digest_copies_data_and_metadata(pair):
    a, b = pair
    cid = chunk_id(1)
    data = os.urandom(3 << 20) + b"tail"
    put_chunk(a, cid, data)
    status, body, connects = curl_send(a, cid, b.host)
    assert status == 200
    assert body.splitlines()[-1] == "Remote cluster returned: 201"
    assert connects == 1  # the 401, then the Digest retry on the same connection
    got = b.request("GET", f"/{cid}")
    assert got[0] == 200 and got[2] == data
    assert chunk_meta(head(b, cid)[1]) == chunk_meta(head(a, cid)[1])
    assert head(b, cid)[1]["x-oio-ext-note"] == "50% off"


def test_already_there_is_409_in_the_status_line(pair):
    a, b = pair
    cid = chunk_id(2)
    put_chunk(a, cid, b"x" * 1000)
    put_chunk(b, cid, b"x" * 1000)
    status, _, pieces, trailers = raw_send(a, cid, send_headers(b.host))
    assert status == 409
    assert body_of(pieces).splitlines()[-1] == "Remote cluster returned: 409"
    assert trailers == {"castor-system-result": "409"}


def test_basic_auth_and_trailer(pair):
    a, b = pair
    cid = chunk_id(3)
    put_chunk(a, cid, b"y" * 5000)
    status, body, _ = curl_send(a, cid, b.host, auth="--basic")
    assert status == 200 and body.splitlines()[-1] == "Remote cluster returned: 201"
    cid2 = chunk_id(4)
    put_chunk(a, cid2, b"z" * 5000)
    status, head_text, pieces, trailers = raw_send(a, cid2, send_headers(b.host))
    assert status == 200
    assert "X-Oio-Chunk-Meta-Chunk-Size: 5000" in head_text  # HEAD-like headers
    assert trailers == {"castor-system-result": "201"}


@pytest.mark.parametrize("user", ["admin:wrong", "nobody:" + PASSWORD])
def test_wrong_credentials_get_401_with_both_challenges(pair, user):
    a, b = pair
    cid = chunk_id(5)
    put_chunk(a, cid, b"data")
    status, _, _ = curl_send(a, cid, b.host, user=user)
    assert status == 401
    status, headers, body = a.request("SEND", f"/{cid}?admin",
                                      headers={"Castor-System-Cluster": "DRNS",
                                               "Castor-System-Target": b.host})
    assert status == 401 and headers["content-length"] == str(len(body))
    with socket.create_connection(("127.0.0.1", a.port), timeout=5) as sock:
        sock.sendall(f"SEND /{cid}?admin HTTP/1.1\r\nHost: {a.host}\r\n\r\n".encode())
        reply = sock.recv(65536).decode()
    challenges = [l for l in reply.split("\r\n") if l.startswith("WWW-Authenticate:")]
    assert challenges[0].startswith('WWW-Authenticate: Digest realm="CAStor administrator"')
    assert "qop=\"auth\"" in challenges[0] and "algorithm=MD5" in challenges[0]
    assert "stale=false" in challenges[0]
    assert challenges[1] == 'WWW-Authenticate: Basic realm="CAStor administrator"'
    assert head(b, cid)[0] == 404


def test_replayed_digest_is_refused(pair):
    a, b = pair
    cid = chunk_id(6)
    put_chunk(a, cid, b"data")
    put_chunk(b, cid, b"data")  # a 409 outcome: quick
    conn = a.conn()
    conn.request("SEND", f"/{cid}?admin")
    resp = conn.getresponse()
    resp.read()
    challenge = resp.msg.get_all("WWW-Authenticate")[0]
    nonce = challenge.split('nonce="')[1].split('"')[0]
    uri = f"/{cid}?admin"
    ha1 = hashlib.md5(f"admin:{REALM}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"SEND:{uri}".encode()).hexdigest()
    resp = hashlib.md5(f"{ha1}:{nonce}:00000001:abc:auth:{ha2}".encode()).hexdigest()
    value = (f'Digest username="admin", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
             f'response="{resp}", qop=auth, nc=00000001, cnonce="abc", algorithm=MD5')
    hdrs = {"Authorization": value, "Castor-System-Cluster": "DRNS",
            "Castor-System-Target": b.host}
    assert a.request("SEND", uri, headers=hdrs)[0] == 409
    conn.request("SEND", uri, headers=hdrs)  # the same nc again
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 401 and "stale=true" in resp.msg.get_all("WWW-Authenticate")[0]
    conn.close()


def test_refusals(pair, tmp_path):
    a, b = pair
    cid = chunk_id(7)
    put_chunk(a, cid, b"data")
    auth = {"Authorization": basic()}
    # no ?admin
    status, _, body = a.request("SEND", f"/{cid}", headers={**auth, **send_headers(b.host)})
    assert status == 400 and b"?admin" in body
    # missing headers
    for missing in ("Castor-System-Cluster", "Castor-System-Target"):
        hdrs = send_headers(b.host)
        del hdrs[missing]
        status, headers, body = a.request("SEND", f"/{cid}?admin", headers=hdrs)
        assert status == 400 and missing.encode() in body
    # a target that is not host:port
    status, _, _ = a.request("SEND", f"/{cid}?admin",
                             headers=send_headers("http://127.0.0.1:1/x"))
    assert status == 400
    # unknown chunk (after the credentials: no probing without them)
    assert a.request("SEND", f"/{chunk_id(99)}?admin", headers=send_headers(b.host))[0] == 404
    assert a.request("SEND", f"/{chunk_id(99)}?admin")[0] == 401
    # a body on SEND
    status, _, _ = a.request("SEND", f"/{cid}?admin", body=b"x", headers=send_headers(b.host))
    assert status == 400
    assert head(b, cid)[0] == 404


def test_without_admin_file_admin_is_403(node_factory, pair):
    a, b = pair
    plain = node_factory(sub="c")
    cid = chunk_id(8)
    put_chunk(plain, cid, b"data")
    status, _, body = plain.request("SEND", f"/{cid}?admin", headers=send_headers(b.host))
    assert status == 403 and b"admin_htdigest" in body


def test_bare_address_host_is_accepted(pair):
    a, b = pair
    cid = chunk_id(9)
    put_chunk(a, cid, b"data")
    hdrs = {**send_headers(b.host), "Host": "127.0.0.1"}
    status, _, body = a.request("SEND", f"/{cid}?admin", headers=hdrs)
    assert status == 200 and body.decode().splitlines()[-1] == "Remote cluster returned: 201"
    assert a.request("GET", f"/{cid}", headers={"Host": "127.0.0.1"})[0] == 418


def test_cluster_mismatch_transfers_nothing(pair):
    a, b = pair
    cid = chunk_id(10)
    put_chunk(a, cid, b"data" * 100)
    status, head_text, pieces, trailers = raw_send(a, cid, send_headers(b.host, "OTHER"))
    assert status == 400
    assert "connection: close" in head_text.lower()  # a chunked error reply
    text = body_of(pieces)
    assert "DRNS" in text and text.splitlines()[-1] == "Remote cluster returned: 400"
    assert trailers == {"castor-system-result": "400"}
    assert head(b, cid)[0] == 404


def test_target_down_is_502(pair):
    a, b = pair
    cid = chunk_id(11)
    put_chunk(a, cid, b"data")
    target = b.host
    b.stop()
    status, _, pieces, trailers = raw_send(a, cid, send_headers(target))
    assert status == 502
    assert "Connection refused" in body_of(pieces) or "refused" in body_of(pieces).lower()
    assert trailers == {"castor-system-result": "502"}


def slow_target(node_factory, rate):
    """(B, a relay to B at ``rate`` bytes/s): B serves under the relay's address."""
    relay = Relay(rate=rate)
    b = node_factory(sub="b", namespace="DRNS", service_id=relay.host)
    relay.upstream_port = b.port
    return b, relay


def test_keepalive_newlines_flow_while_a_slow_target_receives(node_factory, htdigest):
    b, relay = slow_target(node_factory, 4 << 20)  # 6 MiB take about 1.5 s
    try:
        a = node_factory(sub="a", admin_htdigest=htdigest, keepalive_interval=0.2)
        cid = chunk_id(12)
        data = os.urandom(6 << 20)
        put_chunk(a, cid, data)
        status, _, pieces, trailers = raw_send(a, cid, send_headers(relay.host))
        text = body_of(pieces)
        assert status == 200, text
        assert trailers == {"castor-system-result": "201"}, text
        newlines = [t for t, p in pieces if p == b"\n"]
        final = [t for t, p in pieces if p.startswith(b"Remote cluster returned")]
        assert len(newlines) >= 3 and final and max(newlines) < final[0]
        assert b.request("GET", f"/{cid}")[2] == data
    finally:
        relay.close()


def start_send(a, cid, headers):
    """A SEND on a raw socket whose reply is read later: (socket, reader thread's
    result list). The result is raw_send's tuple, or the exception."""
    import threading
    result = []

    def run():
        try:
            result.append(raw_send(a, cid, headers))
        except Exception as exc:  # reported by the test
            result.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def wait_for(predicate, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_target_killed_mid_transfer_leaves_no_chunk(node_factory, htdigest):
    b, relay = slow_target(node_factory, 2 << 20)
    try:
        a = node_factory(sub="a", admin_htdigest=htdigest)
        cid = chunk_id(13)
        data = os.urandom(8 << 20)
        put_chunk(a, cid, data)
        thread, result = start_send(a, cid, send_headers(relay.host))
        wait_for(lambda: relay.forwarded > 1 << 20, what="the transfer to start")
        b.kill()
        thread.join(30)
        status, _, pieces, trailers = result[0]
        assert status == 200  # the head went out when the transfer began
        assert trailers["castor-system-result"] in ("502", "504"), body_of(pieces)
        b.start()
        relay.upstream_port = b.port
        assert head(b, cid)[0] == 404
        assert not os.path.exists(b.chunk_path(cid))
        # nothing left blocks the chunk: the next SEND stores it whole
        status, _, pieces, trailers = raw_send(a, cid, send_headers(relay.host))
        assert trailers == {"castor-system-result": "201"}, body_of(pieces)
        assert b.request("GET", f"/{cid}")[2] == data
    finally:
        relay.close()


def test_client_gone_mid_send_cancels_the_transfer(node_factory, htdigest):
    b, relay = slow_target(node_factory, 1 << 20)
    try:
        a = node_factory(sub="a", admin_htdigest=htdigest, keepalive_interval=0.2)
        cid = chunk_id(14)
        put_chunk(a, cid, os.urandom(8 << 20))
        lines = [f"SEND /{cid}?admin HTTP/1.1", f"Host: {a.host}"]
        lines += [f"{k}: {v}" for k, v in send_headers(relay.host).items()]
        with socket.create_connection(("127.0.0.1", a.port), timeout=10) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
            wait_for(lambda: relay.forwarded > 256 << 10, what="the transfer to start")
        wait_for(lambda: "cancelled, the client left" in a.stderr_path.read_text(),
                 what="A to cancel the SEND")
        sent = relay.forwarded
        time.sleep(0.5)
        assert relay.forwarded - sent < 1 << 20  # A stopped sending (the relay drains)
        wait_for(lambda: any(" 499 " in l for l in b.access_lines(" 499 ")),
                 what="B to drop the upload")
        assert head(b, cid)[0] == 404
        assert not os.path.exists(b.chunk_path(cid))
        line = [l for l in a.access_lines("SEND") if "SEND" in l][-1]
        assert " 499 " in line
    finally:
        relay.close()


def test_corrupt_source_chunk_is_not_sent(pair):
    a, b = pair
    cid = chunk_id(15)
    put_chunk(a, cid, os.urandom(2 << 20))
    with open(a.chunk_path(cid), "r+b") as f:
        f.seek(1 << 20)
        byte = f.read(1)
        f.seek(1 << 20)
        f.write(bytes([byte[0] ^ 0x01]))
    status, _, pieces, trailers = raw_send(a, cid, send_headers(b.host))
    assert trailers == {"castor-system-result": "412"}
    assert "corrupt" in body_of(pieces)
    assert head(b, cid)[0] == 404
    log = a.stderr_path.read_text()
    assert f"SEND {cid}" in log and "corrupt" in log


def test_compressed_source_is_sent_as_its_data(node_factory, htdigest):
    a = node_factory(sub="a", admin_htdigest=htdigest, compression="zlib")
    b = node_factory(sub="b", namespace="DRNS")
    cid = chunk_id(16)
    data = b"compressible " * 300000
    put_chunk(a, cid, data)
    assert os.path.getsize(a.chunk_path(cid)) < len(data) // 10
    status, _, pieces, trailers = raw_send(a, cid, send_headers(b.host))
    assert trailers == {"castor-system-result": "201"}, body_of(pieces)
    assert b.request("GET", f"/{cid}")[2] == data
    assert os.path.getsize(b.chunk_path(cid)) == len(data)
    assert chunk_meta(head(b, cid)[1]) == chunk_meta(head(a, cid)[1])


def test_castor_system_auth_goes_to_the_target_as_basic(node_factory, pair):
    a, b = pair
    relay = Relay(rate=None)
    b2 = node_factory(sub="b", namespace="DRNS", service_id=relay.host)
    relay.upstream_port = b2.port
    try:
        cid = chunk_id(17)
        put_chunk(a, cid, b"data" * 10)
        hdrs = send_headers(relay.host, **{"Castor-System-Auth": "remote:pa:ss"})
        status, _, pieces, trailers = raw_send(a, cid, hdrs)
        assert trailers == {"castor-system-result": "201"}, body_of(pieces)
        token = base64.b64encode(b"remote:pa:ss").decode()
        assert f"Authorization: Basic {token}".encode() in relay.sent
        assert b"PUT /" + cid.encode() in relay.sent
    finally:
        relay.close()


def test_concurrency_is_bounded_and_gets_keep_serving(node_factory, htdigest):
    b, relay = slow_target(node_factory, 1 << 20)
    try:
        a = node_factory(sub="a", admin_htdigest=htdigest, send_concurrency=1,
                         send_queue=0, keepalive_interval=0.2)
        first, second = chunk_id(18), chunk_id(19)
        put_chunk(a, first, os.urandom(3 << 20))
        put_chunk(a, second, b"small")
        thread, result = start_send(a, first, send_headers(relay.host))
        wait_for(lambda: relay.forwarded > 64 << 10, what="the first transfer")
        status, headers, body = a.request("SEND", f"/{second}?admin",
                                          headers=send_headers(relay.host))
        assert status == 503 and headers.get("retry-after") == "5"
        # the worker's loop is free meanwhile: a GET is answered before the SEND ends
        assert a.request("GET", f"/{second}")[2] == b"small"
        assert thread.is_alive()
        thread.join(30)
        assert result[0][3] == {"castor-system-result": "201"}
    finally:
        relay.close()


def test_htdigest_is_checked_at_start_and_reread_on_sighup(node_factory, tmp_path, htdigest):
    import signal
    from nodeutil import Node
    from test_server_reload import reload, wait_for as wait_reload
    bad = tmp_path / "bad.htdigest"
    bad.write_text("admin:no-hash-here\n")
    (tmp_path / "x").mkdir()
    node = Node(tmp_path / "x", admin_htdigest=bad)
    with pytest.raises(RuntimeError):
        node.start(timeout=10)
    assert node.proc.returncode == 2
    assert f"admin_htdigest: {bad}:1" in node.stderr_path.read_text()
    a = node_factory(sub="a", admin_htdigest=htdigest, workers=2)
    cid = chunk_id(20)
    put_chunk(a, cid, b"x")
    probe = {"Authorization": basic(), "Castor-System-Cluster": "DRNS",
             "Castor-System-Target": "127.0.0.1:1"}
    assert a.request("SEND", f"/{cid}?admin", headers=probe)[0] == 502
    # a broken file: the reload is refused, the node keeps its credentials
    good = htdigest.read_text()
    htdigest.write_text(good + "garbage\n")
    a.proc.send_signal(signal.SIGHUP)
    assert wait_reload(lambda: "reload refused" in a.stderr_path.read_text())
    assert a.request("SEND", f"/{cid}?admin", headers=probe)[0] == 502
    # a new password: taken by the reload, the old one refused
    htdigest.write_text(htdigest_line("admin", "new password"))
    reload(a)
    assert a.request("SEND", f"/{cid}?admin", headers=probe)[0] == 401
    probe["Authorization"] = basic(password="new password")
    assert a.request("SEND", f"/{cid}?admin", headers=probe)[0] == 502


def test_send_on_the_tls_port(node_factory, htdigest, tls_cert):
    import http.client
    import ssl
    crt, key = tls_cert
    a = node_factory(sub="a", admin_htdigest=htdigest, tls_rawx_url="127.0.0.1:0",
                     tls_cert_file=crt, tls_key_file=key, keepalive_interval=0.2)
    b = node_factory(sub="b", namespace="DRNS")
    cid = chunk_id(21)
    put_chunk(a, cid, os.urandom(1 << 20))
    context = ssl.create_default_context(cafile=str(crt))
    conn = http.client.HTTPSConnection("127.0.0.1", a.tls_port, context=context, timeout=30)
    hdrs = {**send_headers(b.host), "Host": f"127.0.0.1:{a.tls_port}"}
    conn.request("SEND", f"/{cid}?admin", headers=hdrs)
    resp = conn.getresponse()
    body = resp.read().decode()
    assert resp.status == 200 and body.splitlines()[-1] == "Remote cluster returned: 201"
    conn.request("SEND", f"/{cid}?admin", headers=hdrs)  # same connection: kept alive
    resp = conn.getresponse()
    assert resp.status == 409 and resp.read().decode().endswith("returned: 409\n")
    conn.close()
    assert b.request("GET", f"/{cid}")[2] == a.request("GET", f"/{cid}")[2]


def test_source_failing_mid_transfer_leaves_no_chunk(node_factory, htdigest):
    """The source file shrinks under the transfer (a failing disk, an operator), then
    the source node is killed in the middle of the next one: the target keeps nothing."""
    b, relay = slow_target(node_factory, 2 << 20)
    try:
        a = node_factory(sub="a", admin_htdigest=htdigest)
        cid = chunk_id(22)
        put_chunk(a, cid, os.urandom(8 << 20))
        thread, result = start_send(a, cid, send_headers(relay.host))
        wait_for(lambda: relay.forwarded > 1 << 20, what="the transfer to start")
        os.truncate(a.chunk_path(cid), 2 << 20)
        thread.join(30)
        status, _, pieces, trailers = result[0]
        assert trailers == {"castor-system-result": "412"}, body_of(pieces)
        assert "shorter" in body_of(pieces)
        wait_for(lambda: b.access_lines(" 499 "), what="B to drop the upload")
        assert head(b, cid)[0] == 404 and not os.path.exists(b.chunk_path(cid))

        other = chunk_id(23)
        put_chunk(a, other, os.urandom(8 << 20))
        thread, result = start_send(a, other, send_headers(relay.host))
        wait_for(lambda: relay.forwarded > (3 << 20), what="the second transfer")
        a.kill()
        thread.join(30)
        wait_for(lambda: len(b.access_lines(" 499 ")) >= 2, what="B to drop it too")
        assert head(b, other)[0] == 404 and not os.path.exists(b.chunk_path(other))
    finally:
        relay.close()
