"""Helpers for the SEND tests (legacy and feed forms): admin credentials, and SEND
with curl or on a raw socket (the chunked reply decoded with its timing)."""
import base64
import hashlib
import socket
import subprocess
import time

from storage.fast import load

chunked = load("chunked")

PASSWORD = "s3cret:pw"  # a ':' in a password must survive Basic and Digest
REALM = "CAStor administrator"


def htdigest_line(user, password):
    ha1 = hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()
    return f"{user}:{REALM}:{ha1}\n"


def basic(user="admin", password=PASSWORD):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def curl_send(a, cid, target, cluster="DRNS", user=f"admin:{PASSWORD}", auth="--anyauth",
              extra=(), query="?admin", timeout=60):
    """SEND with curl: (final status, body text, connections curl opened)."""
    headers = []
    if cluster is not None:
        headers += ["-H", f"Castor-System-Cluster: {cluster}"]
    if target is not None:
        headers += ["-H", f"Castor-System-Target: {target}"]
    out = subprocess.run(
        ["curl", "-sS", auth, "-u", user, "-X", "SEND", *headers, *extra,
         "-o", "-", "-w", "\n%{http_code} %{num_connects}",
         f"http://{a.host}/{cid}{query}"],
        capture_output=True, text=True, timeout=timeout)
    body, _, codes = out.stdout.rpartition("\n")
    status, connects = codes.split()
    return int(status), body, int(connects)


def raw_send(a, cid, headers, query="?admin", read_timeout=30):
    """SEND on a raw socket: (status, head text, [(seconds since sent, piece)],
    trailers {name: value})."""
    lines = [f"SEND /{cid}{query} HTTP/1.1", f"Host: {a.host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", a.port), timeout=read_timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        started = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            assert got, f"closed before the head: {data!r}"
            data += got
        head, _, rest = data.partition(b"\r\n\r\n")
        head = head.decode("latin-1")
        status = int(head.split()[1])
        assert "transfer-encoding: chunked" in head.lower(), head
        decoder = chunked.ChunkedDecoder()
        pieces = []
        while True:
            if rest:
                got_pieces, _ = decoder.feed(rest)
                now = time.monotonic() - started
                pieces += [(now, bytes(p)) for p in got_pieces]
            if decoder.done:
                break
            rest = sock.recv(65536)
            assert rest, "closed inside the chunked body"
        trailers = {k.decode(): v.decode() for k, v in decoder.trailers}
        return status, head, pieces, trailers


def body_of(pieces):
    return b"".join(p for _, p in pieces).decode()
