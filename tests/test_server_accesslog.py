"""The access log of a real node: lines flushed by time and at exit, SIGUSR1 reopens
the file (logrotate) with no line lost or written twice, and a SIGKILL loses at most
the last fraction of a second and never leaves a partial line."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from nodeutil import chunk_id
from test_server_lane import Wire, cached_chunk

FIELDS = 21  # fields of an access line


def rids(lines, prefix):
    return [line.split()[12] for line in lines if line.split()[12].startswith(prefix)]


def whole(text):
    """The lines of an access log file, each checked whole."""
    assert not text or text.endswith("\n"), f"a partial last line: {text[-200:]!r}"
    lines = text.splitlines()
    for line in lines:
        fields = line.split()
        assert len(fields) == FIELDS and fields[1:4] == ["access", "INF", "-"], line
        assert fields[-2].startswith("account:") and fields[-1].startswith("bucket:"), line
    return lines


def ask(wire, n, prefix, cid):
    """One GET on ``wire`` (the lane's, once the chunk is cached) and one /info (the
    Python path's), each tagged."""
    for path in (f"/{cid}", "/info"):
        wire.send("GET", path, [("X-oio-req-id", f"{prefix}{n}-{path[1:5]}")])
        assert wire.reply()[0] == 200


def test_a_line_is_written_within_a_fraction_of_a_second(node_factory):
    node = node_factory()
    node.request("GET", "/info", headers={"X-oio-req-id": "first"})
    t0 = time.monotonic()
    assert any("first" in line for line in node.access_lines(containing="first"))
    assert time.monotonic() - t0 < 2.0  # the flush timer (0.2 s), on a busy host


def test_sigusr1_reopens_with_no_line_lost_or_twice(node_factory):
    """logrotate's way: rename the file, SIGUSR1, then the lines go on in a new file.
    Requests keep coming from two connections the whole time, through the lane and
    through the Python path, on two workers."""
    node = node_factory(workers=2)
    cid, _ = cached_chunk(node, 1, 5000)
    stop = threading.Event()
    sent = []
    errors = []

    def client(tag):
        wire = Wire(node)
        try:
            n = 0
            while not stop.is_set() and n < 500_000:  # bounded (stop comes first)
                ask(wire, n, tag, cid)
                sent.extend([f"{tag}{n}-{cid[:4]}", f"{tag}{n}-info"])
                n += 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            wire.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in ("a", "b")]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    old = node.tmp_path / "access.log.1"
    os.rename(node.access_path, old)
    time.sleep(0.3)  # lines still go to the renamed file until the signal
    node.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
            node.access_path.exists() and node.access_path.stat().st_size):
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert node.stop() == 0  # SIGTERM: the workers write out their last lines
    old_lines = whole(old.read_text())
    new_lines = whole(node.access_path.read_text())
    # both files got lines (the kernel may have given both connections to one worker)
    assert rids(old_lines, "a") and rids(new_lines, "a"), node.stderr_path.read_text()
    logged = rids(old_lines, "a") + rids(old_lines, "b") + rids(new_lines, "a") \
        + rids(new_lines, "b")
    assert len(logged) == len(set(logged))  # none twice
    assert sorted(logged) == sorted(sent)  # none lost


def test_sigusr1_without_access_log_file(node_factory):
    """``-`` (stderr) and ``off``: SIGUSR1 changes nothing, the node serves on."""
    for target in ("-", "off"):
        node = node_factory(access_log=target)
        node.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        node.request("GET", "/info", headers={"X-oio-req-id": "after-usr1"})
        assert node.proc.poll() is None and len(node.worker_pids()) == 1
        assert node.stop() == 0
        stderr = node.stderr_path.read_text()
        assert ("after-usr1" in stderr) == (target == "-")
        assert not node.access_path.exists()


def test_sigkill_loses_a_fraction_of_a_second_and_no_partial_line(node_factory):
    node = node_factory(workers=2)
    cid, _ = cached_chunk(node, 2, 3000)
    done = []  # (rid, when its reply was in)
    stop = threading.Event()

    def client(tag):
        wire = Wire(node)
        try:
            n = 0
            while not stop.is_set() and n < 500_000:  # bounded (stop comes first)
                ask(wire, n, tag, cid)
                now = time.monotonic()
                done.extend([(f"{tag}{n}-{cid[:4]}", now), (f"{tag}{n}-info", now)])
                n += 1
        except OSError:
            pass  # the node died under us
        finally:
            wire.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in ("a", "b")]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    killed_at = time.monotonic()
    os.killpg(node.proc.pid, signal.SIGKILL)  # master and workers at once
    stop.set()
    for thread in threads:
        thread.join(30)
    node.proc.wait(10)
    logged = set(rids(whole(node.access_path.read_text()), ""))
    # what a crash may lose: the last flush interval (0.2 s), plus a busy host's slack
    older = [rid for rid, when in done if when < killed_at - 1.0]
    assert older and not [rid for rid in older if rid not in logged]
    assert len(logged) >= len(older)


def test_a_directory_that_is_not_there_stops_the_node_at_start(tmp_path):
    conf = tmp_path / "rawx.conf"
    conf.write_text(f"listen 127.0.0.1:0\nnamespace OPENIO\ndocroot {tmp_path}/data\n"
                    f"access_log {tmp_path}/nowhere/access.log\n")
    out = subprocess.run([sys.executable, "-m", "storage", "serve", "-f", str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"access_log: no directory {tmp_path}/nowhere" in out.stderr


def test_pipelined_and_mixed_requests_keep_their_order(node_factory):
    """One worker, one buffer: the compiled path's lines and the Python path's are in
    the order their replies went out."""
    node = node_factory()
    cid, _ = cached_chunk(node, 3, 100)
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        wire = Wire.__new__(Wire)
        wire.node, wire.sock, wire.buf = node, sock, b""
        for n in range(20):
            ask(wire, n, "o", cid)
    node.request("GET", "/info", headers={"X-oio-req-id": "last"})
    lines = node.access_lines(containing="last")
    got = rids(lines, "o")
    assert got == [f"o{n}-{p}" for n in range(20) for p in (cid[:4], "info")]
    assert chunk_id(3)[:4] == cid[:4]
