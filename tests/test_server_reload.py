"""Zero-downtime restart on SIGHUP, against a real node: the master re-executes in place
with the listening sockets, new workers take over, old ones finish what they serve."""
import http.client
import os
import signal
import socket
import threading
import time

from nodeutil import CHUNK_HEADERS, chunk_id


def wait_for(predicate, timeout=20.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def reload(node):
    """SIGHUP, then wait until every worker is a new one; -> the new worker pids."""
    before = set(node.worker_pids())
    node.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(node.worker_pids()) >= len(before)
             and not before & set(node.worker_pids()))
    return set(node.worker_pids())


def test_sighup_replaces_the_workers_and_keeps_the_address(node_factory):
    node = node_factory(workers=2)
    cid = chunk_id(1)
    assert node.put(cid, b"before the reload")[0] == 201
    old = set(node.worker_pids())
    assert len(old) == 2
    new = reload(node)
    assert len(new) == 2 and not new & old
    assert node.proc.poll() is None  # same master process, same pid
    assert node.request("GET", f"/{cid}")[2] == b"before the reload"
    assert node.put(chunk_id(2), b"after")[0] == 201
    assert node.stop() == 0


def test_a_request_in_flight_survives_the_reload(node_factory):
    node = node_factory(workers=1)
    cid = chunk_id(3)
    body = os.urandom(200000)
    head = (f"PUT /{cid} HTTP/1.1\r\nHost: {node.host}\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in CHUNK_HEADERS.items()) + "\r\n").encode()
    with socket.create_connection(("127.0.0.1", node.port), timeout=15) as sock:
        sock.sendall(head + body[:1000])
        time.sleep(0.2)  # the old worker has the request
        (old,) = node.worker_pids()
        node.proc.send_signal(signal.SIGHUP)
        # a new worker comes up while the old one still holds our upload
        assert wait_for(lambda: len(node.worker_pids()) == 2)
        assert old in node.worker_pids()
        assert node.request("GET", "/info")[0] == 200  # served meanwhile
        assert wait_for(lambda: "stopping 1 old workers" in node.stderr_path.read_text())
        time.sleep(0.5)  # the old worker got its SIGTERM and drains
        assert old in node.worker_pids()
        sock.sendall(body[1000:])
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 201 "), reply
    assert b"Connection: close" in reply  # a draining worker ends keep-alive
    assert wait_for(lambda: old not in node.worker_pids())
    assert node.request("GET", f"/{cid}")[2] == body


def test_no_request_fails_across_reloads(node_factory):
    node = node_factory(workers=2)
    cid = chunk_id(4)
    node.put(cid, b"steady")
    failures = []
    done = []
    stop = threading.Event()

    def client():
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and len(done) < 20000:
            conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
            try:
                conn.request("GET", f"/{cid}")
                resp = conn.getresponse()
                if resp.status != 200 or resp.read() != b"steady":
                    failures.append(resp.status)
                done.append(1)
            except OSError as exc:
                failures.append(repr(exc))
            finally:
                conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            time.sleep(0.3)
            reload(node)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(40)
    assert len(done) > 50
    assert failures == []


def test_a_bad_config_is_refused_and_the_node_keeps_running(node_factory):
    node = node_factory(workers=1)
    old = node.worker_pids()
    text = node.conf_path.read_text()
    node.conf_path.write_text(text + "hash_width lots\n")
    node.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in node.stderr_path.read_text())
    assert "hash_width" in node.stderr_path.read_text()
    assert node.worker_pids() == old
    assert node.request("GET", "/info")[0] == 200
    node.conf_path.write_text(text)


def test_a_reload_applies_the_new_configuration(node_factory):
    node = node_factory(workers=1)
    src, dst = chunk_id(5), chunk_id(6)
    node.put(src, b"shared")
    copy_headers = {"Destination": f"http://{node.host}/{dst}",
                    "X-oio-Chunk-Meta-Full-Path": CHUNK_HEADERS["X-oio-Chunk-Meta-Full-Path"]}
    assert node.request("COPY", f"/{src}", headers=copy_headers)[0] == 405
    node.conf_path.write_text(node.conf_path.read_text() + "shallow_copy on\n")
    reload(node)
    assert node.request("COPY", f"/{src}", headers=copy_headers)[0] == 201
    assert node.request("GET", f"/{dst}")[2] == b"shared"


def test_sigterm_after_a_reload_stops_everything(node_factory):
    node = node_factory(workers=2)
    reload(node)
    pids = node.worker_pids()
    assert node.stop() == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split()[2] == "Z"
