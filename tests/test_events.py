"""storage.events against a real beanstalkd on 127.0.0.1 (started per test)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from storage.config import ConfigError, build
from storage.events import (BeanstalkEvents, DATA_KEYS, encode_event, from_config,
                            parse_event_agent)
from storage.rawx.meta import StoredMeta

from beanstalkutil import BEANSTALKD, Beanstalkd, Client, free_port, wait_for

needs_beanstalkd = pytest.mark.skipif(
    BEANSTALKD is None, reason="beanstalkd not installed (apt-get install beanstalkd)")


@pytest.fixture
def closing():
    """Registers BeanstalkEvents objects to close at teardown (their threads stop)."""
    objects = []

    def register(events):
        objects.append(events)
        return events
    yield register
    for events in objects:
        events.close(0)


def event_data(index, size=0):
    """event_data-shaped dict whose chunk_id carries ``index``."""
    data = {key: f"{key}-value" for key in DATA_KEYS}
    data["chunk_id"] = f"{index:064X}"
    if size:
        data["full_path"] = "p" * size
    return data


def indices(bodies):
    return [int(json.loads(body)["data"]["chunk_id"], 16) for body in bodies]


def make_events(port, closing, **kwargs):
    kwargs.setdefault("backoff_min", 0.02)
    kwargs.setdefault("backoff_max", 0.1)
    return closing(BeanstalkEvents("127.0.0.1", port, **kwargs))


# ---- parse_event_agent -----------------------------------------------------------------
@pytest.mark.parametrize("url, expected", [
    ("beanstalk://127.0.0.1:11300", ("127.0.0.1", 11300)),
    ("beanstalk://localhost:6014", ("localhost", 6014)),
    ("beanstalk://[::1]:11300", ("::1", 11300)),
    ("beanstalk://[fe80::1%eth0]:1", ("fe80::1%eth0", 1)),
    ("beanstalk://queue.example.com:65535", ("queue.example.com", 65535)),
])
def test_parse_event_agent(url, expected):
    assert parse_event_agent(url) == expected


@pytest.mark.parametrize("url", [
    "", "127.0.0.1:11300", "tcp://127.0.0.1:11300", "beanstalk://", "beanstalk://host",
    "beanstalk://:11300", "beanstalk://host:", "beanstalk://host:0", "beanstalk://host:65536",
    "beanstalk://host:port", "beanstalk://host:+80", "beanstalk://host:１２",
    "beanstalk://::1:11300",
    "beanstalk://[::1]", "beanstalk://[::1:11300", "beanstalk://[nothex]:11300",
    "beanstalk://host:11300/path", "beanstalk://user@host:11300", "BEANSTALK://host:1",
])
def test_parse_event_agent_rejects(url):
    with pytest.raises(ConfigError) as info:
        parse_event_agent(url)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert message.startswith("event_agent: ") and "\n" not in message


def test_from_config(closing):
    base = {"listen_host": "127.0.0.1", "listen_port": 6200, "namespace": "NS",
            "docroot": "/srv"}
    assert from_config(build(dict(base))) is None
    port = free_port()
    config = build(dict(base, events=True, event_agent=f"beanstalk://127.0.0.1:{port}"))
    events = closing(from_config(config, max_queue=5))
    assert (events.host, events.port, events.tube, events.max_queue) == \
        ("127.0.0.1", port, "oio", 5)
    with pytest.raises(ConfigError):
        from_config(build(dict(base, events=True, event_agent="beanstalk://nohost")))


def test_invalid_tube_and_sizes():
    for tube in ("", "-oio", "o io", "t" * 201, "tübe"):
        with pytest.raises(ValueError):
            BeanstalkEvents("127.0.0.1", 1, tube=tube)
    with pytest.raises(ValueError):
        BeanstalkEvents("127.0.0.1", 1, max_queue=0)


# ---- the job body ----------------------------------------------------------------------
def stored_meta():
    chunk_id = "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"
    attrs = {
        "user.oio.content.fullpath:" + chunk_id: b"acct/cont/my%20obj/1700000000000000/0A1B",
        "user.grid.chunk.hash": b"9E107D9D372BB6826BD81D3542A419D6",
        "user.grid.chunk.size": b"43",
        "user.grid.chunk.position": b"0",
        "user.grid.content.chunk_method": b"plain/nb_copy=3",
        "user.grid.content.storage_policy": b"THREECOPIES",
    }
    return StoredMeta(chunk_id, attrs)


def test_encode_event_exact_json():
    data = stored_meta().event_data("127.0.0.1:6200", "rawx-1")
    body = encode_event("storage.chunk.new", "req-42", data, 1700000000123456)
    cid = data["container_id"]
    expected = (
        '{"event":"storage.chunk.new","when":1700000000123456,"request_id":"req-42",'
        '"data":{"volume_id":"127.0.0.1:6200","volume_service_id":"rawx-1",'
        '"full_path":"acct/cont/my%20obj/1700000000000000/0A1B",'
        f'"container_id":"{cid}","content_path":"my%20obj",'
        '"content_version":"1700000000000000","content_id":"0A1B",'
        '"content_storage_policy":"THREECOPIES","metachunk_hash":"","metachunk_size":"",'
        '"chunk_id":"0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",'
        '"content_chunk_method":"plain/nb_copy=3,cca=md5","chunk_position":"0",'
        '"chunk_hash":"9E107D9D372BB6826BD81D3542A419D6","chunk_size":"43"}}')
    assert len(cid) == 64
    assert body == expected.encode()


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.dictionaries(st.sampled_from(DATA_KEYS + ("x", "ÿ\n")),
                                             st.text()))
def test_encode_event_matches_json_dumps(event_type, request_id, data):
    body = encode_event(event_type, request_id, data, 123)
    reference = {key: data.get(key, "") for key in DATA_KEYS}
    reference.update(data)
    expected = {"event": event_type, "when": 123, "request_id": request_id or "-",
                "data": reference}
    assert body == json.dumps(expected, separators=(",", ":")).encode()


def test_encode_event_fills_missing_keys_and_request_id():
    body = json.loads(encode_event("storage.chunk.deleted", "", {"chunk_id": "AB",
                                                                "chunk_size": None}, 7))
    assert list(body) == ["event", "when", "request_id", "data"]
    assert body["request_id"] == "-" and body["when"] == 7
    assert list(body["data"]) == list(DATA_KEYS)
    assert body["data"]["chunk_id"] == "AB"
    assert all(body["data"][key] == "" for key in DATA_KEYS if key != "chunk_id")
    assert json.loads(encode_event("e", None, {}, 1))["request_id"] == "-"


# ---- with a real beanstalkd --------------------------------------------------------------
@needs_beanstalkd
def test_many_events_arrive_in_order_with_exact_json(beanstalkd_factory, closing):
    server = beanstalkd_factory()
    events = make_events(server.port, closing)
    data = stored_meta().event_data("127.0.0.1:6200", "rawx-1")
    before = time.time_ns() // 1000
    events.emit("storage.chunk.new", "req-1", data)
    after = time.time_ns() // 1000
    count = 3000
    for index in range(1, count):
        events.emit("storage.chunk.deleted", f"r{index}", event_data(index))
    assert events.close(10)
    assert (events.sent, events.dropped, events.failed, events.queued) == (count, 0, 0, 0)
    assert not events.connected

    client = Client(server.port)
    assert client.command("use oio") == b"USING oio"
    word, job_id, size = client.command("peek-ready").split()
    assert word == b"FOUND"
    client.exactly(int(size) + 2)
    stats = client.stats_job(int(job_id))
    assert (stats["tube"], stats["pri"], stats["delay"], stats["ttr"]) == \
        ("oio", "2147483648", "0", "120")
    bodies = client.take(count + 1)
    client.close()
    assert len(bodies) == count

    job = json.loads(bodies[0])
    assert before <= job["when"] <= after and type(job["when"]) is int
    assert bodies[0] == encode_event("storage.chunk.new", "req-1", data, job["when"])
    assert job["data"]["metachunk_hash"] == ""  # empty values are present
    assert indices(bodies[1:]) == list(range(1, count))
    for index in (1, count // 2, count - 1):
        job = json.loads(bodies[index])
        assert job["event"] == "storage.chunk.deleted" and job["request_id"] == f"r{index}"
        assert job["data"] == event_data(index)


@needs_beanstalkd
def test_events_wait_for_beanstalkd_to_start(beanstalkd_factory, closing):
    server = beanstalkd_factory(start=False)
    events = make_events(server.port, closing)
    for index in range(50):
        events.emit("storage.chunk.new", "-", event_data(index))
    time.sleep(0.2)  # a few refused connection attempts
    assert (events.sent, events.queued, events.connected) == (0, 50, False)
    server.start()
    assert wait_for(lambda: events.sent == 50)
    assert events.connected and events.queued == 0 and events.dropped == 0
    client = Client(server.port)
    assert indices(client.take(51)) == list(range(50))
    client.close()


@needs_beanstalkd
def test_beanstalkd_restarted_mid_stream(beanstalkd_factory, closing, tmp_path):
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    server = beanstalkd_factory(binlog=binlog)
    events = make_events(server.port, closing, max_queue=100000)
    total = 20000
    for index in range(total // 2):
        events.emit("storage.chunk.new", "-", event_data(index))
    assert wait_for(lambda: events.sent > 0)
    server.kill()  # SIGKILL while puts are in flight; the binlog keeps what it inserted
    for index in range(total // 2, 3 * total // 4):
        events.emit("storage.chunk.new", "-", event_data(index))
    assert wait_for(lambda: not events.connected)
    assert events.queued > 0
    server.start()
    for index in range(3 * total // 4, total):
        events.emit("storage.chunk.new", "-", event_data(index))
    assert events.close(15)
    assert events.dropped == 0 and events.failed == 0

    client = Client(server.port)
    got = indices(client.take(2 * total))
    client.close()
    # at-least-once: a put in flight at the kill may have been stored and be sent again
    first_seen = list(dict.fromkeys(got))
    assert first_seen == list(range(total))
    assert events.sent <= len(got) <= events.sent + events.batch


@needs_beanstalkd
def test_overflow_drops_newest_and_emit_never_blocks(beanstalkd_factory, closing):
    server = beanstalkd_factory(start=False)
    events = make_events(server.port, closing, max_queue=100)
    burst = 100000
    for index in range(burst):
        events.emit("storage.chunk.new", "-", event_data(index))
    assert events.dropped == burst - 100
    assert events.queued == 100 and events.sent == 0
    server.start()
    assert events.close(10)
    assert events.sent == 100 and events.dropped == burst - 100
    client = Client(server.port)
    assert indices(client.take(101)) == list(range(100))  # the oldest are kept
    client.close()


@needs_beanstalkd
def test_close_gives_up_after_timeout_and_later_emits_are_dropped(beanstalkd_factory,
                                                                  closing):
    server = beanstalkd_factory(start=False)
    events = make_events(server.port, closing)
    for index in range(10):
        events.emit("storage.chunk.new", "-", event_data(index))
    assert events.close(0.3) is False
    assert not events._thread.is_alive()
    assert (events.dropped, events.queued, events.sent) == (10, 0, 0)
    events.emit("storage.chunk.new", "-", event_data(11))  # no exception
    assert events.dropped == 11


@needs_beanstalkd
def test_job_too_big_is_counted_and_dropped(beanstalkd_factory, closing):
    server = beanstalkd_factory(max_job_size=2000)
    events = make_events(server.port, closing)
    events.emit("storage.chunk.new", "-", event_data(0))
    events.emit("storage.chunk.new", "-", event_data(1, size=5000))
    events.emit("storage.chunk.new", "-", event_data(2))
    assert events.close(10)
    assert (events.sent, events.failed, events.dropped) == (2, 1, 0)
    client = Client(server.port)
    assert indices(client.take(3)) == [0, 2]
    client.close()


@needs_beanstalkd
def test_draining_server_is_retried(beanstalkd_factory, closing):
    server = beanstalkd_factory()
    events = make_events(server.port, closing)
    events.emit("storage.chunk.new", "-", event_data(0))
    assert wait_for(lambda: events.sent == 1)
    server.proc.send_signal(signal.SIGUSR1)  # drain mode: every put gets DRAINING
    assert wait_for(lambda: server_stats(server.port)["draining"] == "true")
    for index in range(1, 6):
        events.emit("storage.chunk.new", "-", event_data(index))
    # a put after the drain began came back DRAINING
    assert wait_for(lambda: int(server_stats(server.port)["cmd-put"]) >= 2)
    assert events.sent == 1 and events.queued == 5 and events.failed == 0
    server.kill()
    server.start()
    assert wait_for(lambda: events.sent == 6)
    assert events.failed == 0 and events.dropped == 0
    client = Client(server.port)
    assert indices(client.take(6)) == [1, 2, 3, 4, 5]
    client.close()


def server_stats(port):
    client = Client(port)
    reply = client.command("stats")
    word, size = reply.split()
    assert word == b"OK", reply
    text = client.exactly(int(size) + 2).decode()
    client.close()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_silent_server_does_not_hang_the_sender(closing):
    """A peer that accepts and never replies: the use reply times out, the sender
    reconnects, and close() still returns."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    accepted = []
    stop = threading.Event()

    def accept_loop():
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass
    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        events = make_events(listener.getsockname()[1], closing, io_timeout=0.1)
        events.emit("storage.chunk.new", "-", event_data(0))
        assert wait_for(lambda: len(accepted) >= 3)  # it gave up and tried again
        assert (events.sent, events.queued, events.connected) == (0, 1, False)
        assert events.close(0.2) is False
        assert not events._thread.is_alive() and events.dropped == 1
        # the silent peer saw the use command, never a put
        data = accepted[0].recv(1024)
        assert data == b"use oio\r\n"
    finally:
        stop.set()
        acceptor.join(2)
        listener.close()
        for conn in accepted:
            conn.close()


def test_used_after_fork_drops_and_does_not_raise(closing):
    events = make_events(free_port(), closing)
    pid = os.fork()
    if pid == 0:  # the child: no sender thread here
        try:
            events.emit("storage.chunk.new", "-", event_data(0))
            events.emit("storage.chunk.new", "-", event_data(1))
            os._exit(0 if (events.dropped, events.queued) == (2, 0) else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert events.dropped == 0


# ---- a scripted peer: replies beanstalkd would send only under memory pressure or bugs --
class ScriptedPeer:
    """Accepts connections one after the other and lets ``handler(index, peer)`` answer
    each; ``peer.command()`` reads one command line and, for put, its body."""

    def __init__(self, handler):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.handler = handler
        self.stop = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        index = 0
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            conn.settimeout(5)
            self.conn, self.buf = conn, b""
            try:
                self.handler(index, self)
            except Exception as exc:  # reported by close()
                self.errors.append(exc)
            finally:
                conn.close()
            index += 1

    def command(self):
        """(command line, body or None); EOFError when the client hung up."""
        while b"\r\n" not in self.buf:
            data = self.conn.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        if not line.startswith(b"put "):
            return line, None
        size = int(line.split()[-1]) + 2
        while len(self.buf) < size:
            data = self.conn.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        body, self.buf = self.buf[:size], self.buf[size:]
        assert body.endswith(b"\r\n")
        return line, body[:-2]

    def reply(self, text):
        self.conn.sendall(text + b"\r\n")

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.listener.close()
        assert not self.errors, self.errors


def test_transient_replies_are_retried_and_permanent_ones_counted(closing):
    received = []

    def handler(index, peer):
        assert peer.command() == (b"use oio", None)
        peer.reply(b"USING oio")
        while True:
            try:
                line, body = peer.command()
            except EOFError:
                return
            assert line == b"put 2147483648 0 120 %d" % len(body)
            event = indices([body])[0]
            received.append(event)
            if event == 0 and received.count(0) == 1:
                peer.reply(b"OUT_OF_MEMORY")
            elif event == 1:
                peer.reply(b"BURIED 7")  # stored but buried: sending it again would duplicate
            elif event == 2:
                peer.reply(b"JOB_TOO_BIG")
            else:
                peer.reply(b"INSERTED %d" % len(received))

    peer = ScriptedPeer(handler)
    try:
        events = make_events(peer.port, closing)
        for index in range(5):
            events.emit("storage.chunk.new", "-", event_data(index))
        assert wait_for(lambda: events.sent + events.failed == 5)
        assert (events.sent, events.failed, events.dropped, events.queued) == (3, 2, 0, 0)
        assert sorted(received) == [0, 0, 1, 2, 3, 4]  # only the refused-for-now is resent
        assert events.close(2)
    finally:
        peer.close()


@pytest.mark.parametrize("breakage", [b"", b"NOT_A_REPLY", b"EXPECTED_CRLF"])
def test_unacknowledged_puts_are_resent_in_order_on_a_new_connection(closing, breakage):
    """The first connection takes one put and then hangs up (or says something the
    sender cannot follow): every event still unacknowledged goes again, in order."""
    received = {0: [], 1: []}

    def handler(index, peer):
        assert peer.command() == (b"use oio", None)
        peer.reply(b"USING oio")
        while True:
            try:
                _, body = peer.command()
            except EOFError:
                return
            received[min(index, 1)].append(indices([body])[0])
            if index == 0:
                if breakage:
                    peer.reply(breakage)
                return
            peer.reply(b"INSERTED %d" % len(received[1]))

    peer = ScriptedPeer(handler)
    try:
        events = make_events(peer.port, closing)
        for index in range(20):
            events.emit("storage.chunk.new", "-", event_data(index))
        assert events.close(5)
    finally:
        peer.close()
    first = received[0][0]
    assert first == 0
    if breakage == b"EXPECTED_CRLF":  # refused for good: counted, not resent
        assert (events.failed, received[1]) == (1, list(range(1, 20)))
    else:
        assert (events.failed, received[1]) == (0, list(range(20)))
    assert events.sent == len(received[1]) and events.dropped == 0
