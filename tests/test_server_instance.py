"""One node per listen address and per volume, with real nodes on 127.0.0.1: a second
node on a served address or docroot fails at start (one line, exit status 1), a node
killed with SIGKILL can start again at once, and SIGHUP's re-exec keeps the locks."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

from nodeutil import Node, chunk_id
from test_server_reload import reload, wait_for
from test_server_tls import cert  # noqa: F401 (a fixture)

from storage.instance import LOCK_NAME


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def second_node(tmp_path, name, docroot, port=0, extra="", timeout=30):
    """Run ``storage-node serve`` on a config of its own (``extra``: more directive
    lines); -> (exit status, stderr) once it exits (a node that starts is stopped and
    reported as such)."""
    conf = tmp_path / f"{name}.conf"
    conf.write_text(f"listen 127.0.0.1:{port}\nnamespace OPENIO\ndocroot {docroot}\n"
                    f"service_id rawx-test\nworkers 1\naccess_log off\n{extra}")
    proc = subprocess.Popen([sys.executable, "-m", "storage", "serve", "-f", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return "started", out.decode() + err.decode()
    return proc.returncode, err.decode()


def served_docroots(node, count=20):
    """The docroot /info names over ``count`` fresh connections."""
    seen = set()
    for _ in range(count):
        status, _, body = node.request("GET", "/info")
        assert status == 200
        seen.add(body.decode().splitlines()[1])
    return seen


def test_second_node_on_a_served_address_fails_at_start(node_factory, tmp_path):
    port = free_port()
    first = node_factory(workers=2, listen=f"127.0.0.1:{port}")
    status, err = second_node(tmp_path, "second", tmp_path / "other", port)
    assert status == 1
    assert err.splitlines() == [f"storage-node: another storage-node serves "
                                f"127.0.0.1:{port}"]
    assert served_docroots(first) == {f"path {first.docroot}"}  # nobody joined its group


def test_second_node_on_a_served_tls_address_fails_at_start(node_factory, tmp_path, cert):
    tls_port = free_port()
    tls = f"tls_rawx_url 127.0.0.1:{tls_port}\ntls_cert_file {cert[0]}\n" \
          f"tls_key_file {cert[1]}\n"
    first = node_factory(workers=1, tls_rawx_url=f"127.0.0.1:{tls_port}",
                         tls_cert_file=cert[0], tls_key_file=cert[1])
    assert first.tls_port == tls_port
    status, err = second_node(tmp_path, "second", tmp_path / "other", extra=tls)
    assert status == 1
    assert err.splitlines() == [f"storage-node: another storage-node serves "
                                f"127.0.0.1:{tls_port}"]


def test_any_listener_on_the_address_is_found(tmp_path):
    """A listener that is not a storage-node (SO_REUSEPORT like ours, same user): the
    probe finds it, which binding alone would not."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        port = other.getsockname()[1]
        started = time.monotonic()
        status, err = second_node(tmp_path, "node", tmp_path / "data", port)
    assert status == 1
    assert err.splitlines() == [f"storage-node: 127.0.0.1:{port} is already served by "
                                "another process"]
    assert time.monotonic() - started < 15


def test_second_node_on_a_served_docroot_fails_at_start(node_factory, tmp_path):
    first = node_factory(workers=1)
    status, err = second_node(tmp_path, "second", first.docroot)
    assert status == 1
    assert err.splitlines() == [f"storage-node: another storage-node (pid {first.proc.pid}) "
                                f"serves the volume {first.docroot}"]
    assert first.request("GET", "/info")[0] == 200


def test_a_node_killed_with_sigkill_starts_again(tmp_path):
    port = free_port()
    node = Node(tmp_path, workers=2, listen=f"127.0.0.1:{port}").start()
    try:
        assert node.put(chunk_id(1), b"kept")[0] == 201
        os.kill(node.proc.pid, signal.SIGKILL)  # the master alone: workers follow it
        node.proc.wait(10)
        node.start()  # same address, same docroot, at once
        assert node.port == port
        assert node.request("GET", f"/{chunk_id(1)}")[2] == b"kept"
        os.killpg(node.proc.pid, signal.SIGKILL)  # the whole group this time
        node.proc.wait(10)
        node.start()
        assert node.request("GET", "/info")[0] == 200
    finally:
        node.kill()


def test_sighup_keeps_the_locks_across_the_re_exec(node_factory, tmp_path):
    port = free_port()
    node = node_factory(workers=2, listen=f"127.0.0.1:{port}")
    old = set(node.worker_pids())
    new = reload(node)
    assert new and not new & old and node.proc.poll() is None
    assert node.request("GET", "/info")[0] == 200
    status, err = second_node(tmp_path, "second", tmp_path / "other", port)
    assert (status, err.splitlines()) == (1, [f"storage-node: another storage-node "
                                              f"serves 127.0.0.1:{port}"])
    status, err = second_node(tmp_path, "third", node.docroot)
    assert status == 1 and "serves the volume" in err


def test_a_reload_onto_a_served_docroot_is_refused(node_factory, tmp_path):
    node = node_factory(workers=1)
    other = node_factory(workers=1)
    text = node.conf_path.read_text().replace(node.docroot, other.docroot)
    node.conf_path.write_text(text)
    node.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload refused" in node.stderr_path.read_text())
    assert "serves the volume" in node.stderr_path.read_text()
    assert served_docroots(node, 3) == {f"path {node.docroot}"}
    assert other.request("GET", "/info")[0] == 200


def test_the_volume_lock_is_never_listed_as_a_chunk(node_factory):
    node = node_factory(workers=1, hash_depth=0)  # the lock file sits in the leaf dir
    assert os.path.exists(os.path.join(node.docroot, LOCK_NAME))
    cid = chunk_id(5)
    assert node.put(cid, b"x")[0] == 201
    status, _, body = node.request("GET", "/list")
    assert status == 200
    assert json.loads(body)["chunks"] == [{"chunk_id": cid}]
