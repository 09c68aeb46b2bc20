"""Faults against a real node: disconnects, a full disk, SIGKILL, SIGTERM, bad config."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from nodeutil import CHUNK_HEADERS, Node, chunk_id
from test_server_http import put_head


def pending_files(root):
    return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names
            if n.endswith(".pending")]


def disconnect_mid_body_leaves_nothing(node, cid, sent):
    """A client announces 10 MB, sends ``sent`` and leaves: no chunk, no pending file,
    the id stays free, and the access log says 499."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(put_head(cid, node.host, length=10_000_000) + sent)
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pending_files(node.docroot):
        time.sleep(0.05)
    assert not pending_files(node.docroot)
    assert node.request("GET", f"/{cid}")[0] == 404
    assert node.put(cid, b"again")[0] == 201
    assert any(" PUT 499 " in line for line in node.access_lines(" PUT 499 "))


@pytest.mark.parametrize("io_threads", [2, 0])
def test_disconnect_mid_body_leaves_nothing(node_factory, io_threads):
    node = node_factory(io_threads=io_threads)
    disconnect_mid_body_leaves_nothing(node, chunk_id(300), b"x" * 3_000_000)


def test_reset_mid_chunked_body_leaves_nothing(node):
    cid = chunk_id(301)
    s = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    s.sendall(put_head(cid, node.host, chunked=True) + b"100000\r\n" + b"y" * 50_000)
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST
    time.sleep(0.3)
    assert not pending_files(node.docroot)
    assert node.put(cid, b"fine")[0] == 201


@pytest.fixture
def small_volume(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("io_threads", [2, 0])
def test_full_disk_507_and_nothing_left(node_factory, small_volume, io_threads):
    node = node_factory(docroot=small_volume / "rawx", io_threads=io_threads)
    cid = chunk_id(302)
    status, _, body = node.put(cid, os.urandom(6 << 20))
    assert status == 507
    assert b"space" in body.lower()
    assert not pending_files(node.docroot)
    assert node.request("GET", f"/{cid}")[0] == 404
    assert node.put(chunk_id(303), b"small fits")[0] == 201  # the node lives on
    st = os.statvfs(node.docroot)
    assert st.f_bfree * st.f_frsize > 3 << 20  # the failed chunk's blocks were freed


def test_sigkill_mid_uploads_then_restart(tmp_path):
    data = tmp_path / "data"
    node = Node(tmp_path, docroot=data, workers=2).start()
    acked = []
    for i in range(5):
        cid = chunk_id(310 + i)
        assert node.put(cid, os.urandom(100_000))[0] == 201
        acked.append(cid)
    socks = []
    for i in range(6):  # uploads in the middle of their bodies
        s = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        s.sendall(put_head(chunk_id(320 + i), node.host, length=5_000_000) + b"p" * 1_000_000)
        socks.append(s)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(pending_files(str(data))) < 6:
        time.sleep(0.05)
    assert len(pending_files(str(data))) == 6  # they were in flight
    node.kill()  # SIGKILL to the master and the workers
    for s in socks:
        s.close()
    node = Node(tmp_path, docroot=data, workers=2).start()
    try:
        for cid in acked:
            assert node.request("GET", f"/{cid}")[0] == 200
        for i in range(6):
            cid = chunk_id(320 + i)
            assert node.request("GET", f"/{cid}")[0] == 404
            assert node.put(cid, b"retry")[0] == 201  # no id stays blocked
        assert not pending_files(str(data))
    finally:
        node.kill()


def test_sigterm_finishes_inflight_then_exits_0(node):
    cid = chunk_id(330)
    s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    s.sendall(put_head(cid, node.host, length=200_000) + b"a" * 100_000)
    time.sleep(0.2)
    node.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    s.sendall(b"a" * 100_000)
    reply = s.recv(4096)
    s.close()
    assert reply.startswith(b"HTTP/1.1 201")
    assert b"Connection: close" in reply
    assert node.proc.wait(15) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", node.port), timeout=1)


def test_sigint_exits_0(node):
    assert node.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("text,word", [
    ("namespace X\ndocroot /tmp/x\n", "listen"),
    ("listen 127.0.0.1:0\nnamespace X\ndocroot relative/dir\n", "docroot"),
    ("listen 127.0.0.1:0\nnamespace X\ndocroot /tmp/x\nfsync maybe\n", "fsync"),
    ("listen 127.0.0.1:0\nnamespace X\ndocroot /tmp/x\nhash_width abc\n", "hash_width"),
])
def test_bad_config_exit_2(tmp_path, text, word):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    res = subprocess.run([sys.executable, "-m", "storage", "serve", "-f", str(conf)],
                         capture_output=True, timeout=30)
    assert res.returncode == 2
    assert word in res.stderr.decode()
    assert "Traceback" not in res.stderr.decode()


def test_volume_locked_to_another_service(tmp_path):
    data = tmp_path / "data"
    node = Node(tmp_path, docroot=data, service_id="svc-a").start()
    node.stop()
    conf = tmp_path / "other.conf"
    conf.write_text(f"listen 127.0.0.1:0\nnamespace OPENIO\ndocroot {data}\nservice_id svc-b\n")
    res = subprocess.run([sys.executable, "-m", "storage", "serve", "-f", str(conf)],
                         capture_output=True, timeout=30)
    assert res.returncode == 2 and b"locked" in res.stderr


def test_liveness_probe_503(node_factory, tmp_path):
    node = node_factory(probe_interval=0.2)
    assert node.request("GET", "/info")[0] == 200
    os.chmod(node.docroot, 0o500)  # root ignores modes: make it fail for real below
    os.chmod(node.docroot, 0o755)
    probe_dir = node.docroot
    # Replace the docroot by a file-system object the probe cannot write into: an
    # immutable directory is not available everywhere, so move the docroot away.
    moved = probe_dir + ".moved"
    os.rename(probe_dir, moved)
    with open(probe_dir, "w") as f:
        f.write("not a directory")
    try:
        deadline = time.monotonic() + 5
        status = 200
        while time.monotonic() < deadline and status != 503:
            time.sleep(0.1)
            status, _, body = node.request("GET", "/info")
        assert status == 503 and body.startswith(b"volume unavailable")
        assert node.request("GET", f"/{chunk_id(340)}")[0] == 503
    finally:
        os.unlink(probe_dir)
        os.rename(moved, probe_dir)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and node.request("GET", "/info")[0] != 200:
        time.sleep(0.1)
    assert node.request("GET", "/info")[0] == 200
