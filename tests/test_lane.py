"""lane.Lane and its twin: keep-alive connections served by the core alone, on real
TCP sockets on 127.0.0.1 and real files. What the core answers goes out with nothing
reported to Python (its access line is the core's); whatever else arrives is handed
back byte for byte with nothing sent, and the connection leaves the lane."""
import os
import select
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import import_twin

# the fixtures mod (both twins), vol and pair are test_getcore's own
from test_getcore import (CID, HOST, Volume, connected, expected, get, log_buffer,  # noqa: F401
                          logged, mod, pair, read_reply, reader_of, same, vol)

BUFFER = 1 << 16


@pytest.fixture
def lanes(mod):
    """The lane module of the same twin as ``mod`` (the core's)."""
    return import_twin(mod.__name__.replace("getcore", "lane"))


@pytest.fixture
def lane(mod, vol, lanes):
    lane = lanes.Lane(vol.core, bytearray(BUFFER), 8192, 60.0, 60.0)
    yield lane
    lane.close()


def settle(lane, rounds=50):
    """wait() until something is reported (or ``rounds`` quiet waits) -> reports."""
    for _ in range(rounds):
        _, out = lane.wait(0.05)
        if out:
            return out
    return []


def nothing_to_read(client):
    return not select.select([client], [], [], 0.05)[0]


# ---- served in the lane ----------------------------------------------------------
def test_answers_without_reporting(mod, vol, lane, pair):
    server, client = pair
    body = os.urandom(5000)
    vol.put(body)
    lane.adopt(server.fileno(), "owner")
    assert len(lane) == 1 and server.fileno() in lane and not lane.busy(server.fileno())
    for n in range(3):
        client.sendall(get().encode())
        assert lane.wait(0.2) == (False, [])
        want = expected(200, body)
        same(read_reply(client, len(want)), want)
    totals = vol.stats.totals()
    assert totals["req.hits.get"] == 3 and totals["rep.bread"] == 3 * len(body)
    assert len(lane) == 1


def test_replies_are_logged_by_the_core(mod, vol, lane, pair, tmp_path):
    """The access line of each reply the lane sends is the core's: nothing comes back
    to Python, and the line names the peer the connection joined with."""
    server, client = pair
    vol.put(b"abc")
    buffer, path = log_buffer(mod, tmp_path)
    vol.core.log_to(buffer, 77)
    lane.adopt(server.fileno(), "owner", "10.0.0.9:4242")
    for n in range(2):
        client.sendall(get(extra=f"X-oio-req-id: r{n}\r\n").encode())
        assert settle(lane, rounds=4) == []
        read_reply(client, len(expected(200, b"abc", [("X-Oio-Req-Id", f"r{n}")])))
    lines = logged(buffer, path)
    assert [line.split()[12] for line in lines] == ["r0", "r1"]
    for line in lines:
        fields = line.split()
        assert fields[:8] == ["77", "access", "INF", "-", HOST, "10.0.0.9:4242", "GET", "200"]
        assert fields[9:11] == ["3", "0"] and fields[-2:] == ["account:acct", "bucket:cont"]
    assert vol.stats.totals()["req.hits"] == 2


def test_big_reply_is_resumed_in_the_lane(mod, tmp_path, pair, lanes):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    vol = Volume(tmp_path, mod, small_file=1024)
    body = os.urandom(4 << 20)
    vol.put(body)
    buffer, path = log_buffer(mod, tmp_path)
    vol.core.log_to(buffer, 77)
    lane = lanes.Lane(vol.core, bytearray(BUFFER), 8192, 60.0, 60.0)
    lane.adopt(server.fileno(), "owner", "10.0.0.9:4242")
    client.sendall(get().encode())
    lane.wait(0)
    assert lane.busy(server.fileno())
    assert vol.stats.totals()["inflight.get"] == 1
    thread, got = reader_of(client, len(expected(200, body)))
    for _ in range(400):
        assert lane.wait(0.05) == (False, [])
        if not lane.busy(server.fileno()):
            break
    thread.join(10)
    same(got[0], expected(200, body))
    assert not lane.busy(server.fileno()) and len(lane) == 1
    [line] = logged(buffer, path)  # once the reply is out, with all it sent
    assert line.split()[9] == str(len(body)) and " get:0 " in line
    totals = vol.stats.totals()
    assert totals["req.hits.get"] == 1 and totals["inflight.get"] == 0
    assert totals["rep.bread"] == len(body)
    lane.close()


@pytest.mark.parametrize("how", ["asked", "stopping"])
def test_a_reply_that_ends_the_connection(mod, vol, lane, pair, how, lanes):
    server, client = pair
    vol.put(b"abc")
    lane.adopt(server.fileno(), "owner")
    if how == "asked":
        client.sendall(get(extra="Connection: close\r\n").encode())
    else:
        lane.keep_alive_ok = False
        client.sendall(get().encode())
    out = settle(lane)
    assert out == [("owner", lanes.CLOSE, None)]
    want = expected(200, b"abc", keep=False)
    same(read_reply(client, len(want)), want)
    assert len(lane) == 0


# ---- handed back -----------------------------------------------------------------
HANDED_BACK = {
    "post": f"POST /{CID} HTTP/1.1\r\nHost: 127.0.0.1:6009\r\n\r\n",
    "unknown chunk": get("/" + "AB" * 32),
    "partial head": get()[:-2],
    "two heads": get() + get(),
    "head and body": get().replace("\r\n\r\n", "\r\nContent-Length: 2\r\n\r\n") + "xy",
    "leading empty line": "\r\n" + get(),
    "info": "GET /info HTTP/1.1\r\nHost: 127.0.0.1:6009\r\n\r\n",
    "garbage": "\x00\xff\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(HANDED_BACK))
def test_what_the_core_does_not_answer_is_handed_back(mod, vol, lane, pair, name, lanes):
    server, client = pair
    vol.put(b"abc")
    lane.adopt(server.fileno(), "owner")
    data = HANDED_BACK[name].encode("latin-1")
    client.sendall(data)
    out = settle(lane)
    assert out == [("owner", lanes.HANDBACK, data)]
    assert len(lane) == 0 and nothing_to_read(client)
    assert vol.stats.totals()["req.hits"] == 0


def test_a_head_longer_than_the_limit_is_handed_back(mod, vol, pair, lanes):
    server, client = pair
    vol.put(b"abc")
    lane = lanes.Lane(vol.core, bytearray(BUFFER), 40, 60.0, 60.0)
    lane.adopt(server.fileno(), "owner")
    data = get().encode()
    client.sendall(data)
    assert settle(lane) == [("owner", lanes.HANDBACK, data)]
    lane.close()


def test_not_serving_hands_everything_back(mod, vol, lane, pair, lanes):
    server, client = pair
    vol.put(b"abc")
    lane.serving = False  # the volume fails its probe: the Python path says 503
    lane.adopt(server.fileno(), "owner")
    client.sendall(get().encode())
    assert settle(lane) == [("owner", lanes.HANDBACK, get().encode())]
    assert nothing_to_read(client)


def test_peer_gone_between_requests(mod, vol, lane, pair, lanes):
    server, client = pair
    lane.adopt(server.fileno(), "owner")
    client.close()
    assert settle(lane) == [("owner", lanes.CLOSE, None)]
    assert len(lane) == 0


# ---- membership, deadlines, the attached descriptor ------------------------------
def test_release_returns_the_reply_still_going(mod, tmp_path, pair, lanes):
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    vol = Volume(tmp_path, mod, small_file=1024)
    vol.put(os.urandom(2 << 20))
    lane = lanes.Lane(vol.core, bytearray(BUFFER), 8192, 60.0, 60.0)
    lane.adopt(server.fileno(), "owner")
    client.sendall(get().encode())
    lane.wait(0)
    reply = lane.release(server.fileno())
    assert reply is not None and not reply.finished and len(lane) == 0
    reply.abort()  # what the closing connection does
    totals = vol.stats.totals()
    assert totals["req.hits"] == 1 and totals["inflight.get"] == 0
    assert lane.release(server.fileno()) is None
    lane.close()


def test_idle_and_write_deadlines(mod, tmp_path, pair, lanes):
    server, client = pair
    other_server, other_client = connected()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
    vol = Volume(tmp_path, mod, small_file=1024)
    vol.put(os.urandom(2 << 20))
    lane = lanes.Lane(vol.core, bytearray(BUFFER), 8192, 100.0, 1000.0)
    lane.adopt(server.fileno(), "writing")
    lane.adopt(other_server.fileno(), "idle")
    now = time.monotonic()
    assert lane.expired(now) == []
    assert sorted(lane.expired(now + 101)) == ["idle", "writing"]  # both idle
    client.sendall(get().encode())
    lane.wait(0)
    assert lane.busy(server.fileno())
    assert sorted(lane.expired(now + 101)) == ["idle"]  # writing: its write deadline
    assert sorted(lane.expired(now + 1001)) == ["idle", "writing"]
    lane.release(server.fileno()).abort()
    lane.close()
    other_server.close()
    other_client.close()


def test_the_attached_descriptor_ends_the_wait(mod, lane, pair):
    server, client = pair
    lane.adopt(server.fileno(), "owner")
    r, w = os.pipe()
    try:
        lane.attach(r)
        with pytest.raises(ValueError):
            lane.attach(r)
        os.write(w, b"x")
        assert lane.wait(30.0) == (True, [])  # returns at once: the pipe is ready
        os.read(r, 1)
        assert lane.wait(0) == (False, [])
    finally:
        lane.close()
        os.close(r)
        os.close(w)


def test_bad_use(mod, vol, lane, pair, lanes):
    server, _ = pair
    lane.adopt(server.fileno(), "owner")
    with pytest.raises(KeyError):
        lane.adopt(server.fileno(), "again")
    with pytest.raises(OSError):
        lane.adopt(10_000, "not a descriptor")
    with pytest.raises(ValueError):
        lanes.Lane(vol.core, bytearray(), 8192, 1.0, 1.0)
    with pytest.raises(TypeError):
        lanes.Lane(None, bytearray(10), 8192, 1.0, 1.0)
    assert not lane.busy(12345) and lane.release(12345) is None
    lane.close()
    assert lane.wait(0) == (False, [])
    with pytest.raises(ValueError):
        lane.fileno()
    with pytest.raises(ValueError):
        lane.adopt(server.fileno(), "closed")


# ---- whatever the bytes: answered, or handed back untouched ----------------------
VALID = [get(), get(method="HEAD"), get(extra="Range: bytes=1-2\r\n"),
         get(extra="X-oio-req-id: abc\r\n"), get(version="1.0")]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(min_size=1, max_size=300),
    st.tuples(st.sampled_from(VALID), st.integers(0, 200), st.binary(max_size=8)).map(
        lambda t: (t[0][:t[1]] + t[2].decode("latin-1") + t[0][t[1]:]).encode("latin-1"))))
def test_any_bytes_are_answered_or_handed_back(mod, vol, lanes, data):
    vol.put(b"0123456789")
    server, client = connected()
    lane = lanes.Lane(vol.core, bytearray(BUFFER), 8192, 60.0, 60.0)
    try:
        lane.adopt(server.fileno(), "owner")
        before = vol.stats.totals()["req.hits"]
        client.sendall(data)
        out = settle(lane, rounds=3)
        if out and out[0][1] == lanes.HANDBACK:
            assert out == [("owner", lanes.HANDBACK, out[0][2])]
            assert data.startswith(out[0][2]) and nothing_to_read(client)
            assert vol.stats.totals()["req.hits"] == before
        else:  # answered (an HTTP/1.0 client or "close" ends the connection)
            assert out in ([], [("owner", lanes.CLOSE, None)])
            assert vol.stats.totals()["req.hits"] == before + 1
            assert client.recv(12) in (b"HTTP/1.1 200", b"HTTP/1.1 206")
    finally:
        lane.close()
        server.close()
        client.close()
