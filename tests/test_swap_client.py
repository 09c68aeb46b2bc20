"""storage.swap.client.SwapClient.

Most tests run against real nodes on 127.0.0.1 (``swap_listen``); the cases a real
node cannot be made to produce (a wrong md5, EOF before the SASL reply, a malformed
frame, the spec's golden bytes on the client's side of the wire) run against a
scripted peer: a thread on a real TCP socket that speaks the spec's frames.
"""
import hashlib
import io
import os
import socket
import threading
import time
import uuid

import pytest

from storage.swap import FinishType, MessageType, PathKind, encode, new_reader
from storage.swap.client import (
    AuthFailed,
    ChecksumMismatch,
    NotDeleted,
    NotStored,
    RemoteRefused,
    SwapClient,
    SwapConnectionError,
    SwapProtocolError,
    UnknownGroup,
)

T = MessageType
GROUP = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
FILES = uuid.UUID("f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f")
SLICE = uuid.UUID("11111111-2222-3333-4444-555555555555")
PARTITION = uuid.UUID("99999999-8888-7777-6666-555555555555")
GOLDEN_MECHANISMS = bytes.fromhex("0000000d 0015 0001 0001 0005 504c41494e")
GOLDEN_OK = bytes.fromhex("0000000c 0014 0001 00000000 00000000")


# -- the scripted peer -----------------------------------------------------------

class Peer:
    """The node's end of one connection, for a script."""

    def __init__(self, conn):
        self.conn = conn
        self.reader = new_reader(64 << 20)

    def send(self, data, bytewise=False):
        if not bytewise:
            self.conn.sendall(data)
            return
        for i in range(len(data)):
            self.conn.sendall(data[i:i + 1])

    def recv_exact(self, n):
        out = b""
        while len(out) < n:
            got = self.conn.recv(n - len(out))
            assert got, f"EOF after {out!r}"
            out += got
        return out

    def message(self):
        """The next message, or None at EOF."""
        while True:
            msg = self.reader.next()
            if msg is not None:
                return msg
            got = self.conn.recv(1 << 20)
            if not got:
                return None
            self.reader.feed(got)

    def handshake(self):
        self.send(GOLDEN_MECHANISMS)
        t, [(mech, payload)] = self.message()
        assert (t, mech, bytes(payload)) == (T.SASL_REQUEST, "PLAIN", b"myuser\0admin\0pw")
        self.send(GOLDEN_OK)

    def groups(self):
        """Answer the 2010 client's three questions with one partition, two groups."""
        for want in (T.LIST_PARTITIONS, T.LIST_FG, T.LIST_SLICES):
            assert self.message()[0] == want
        self.send(encode(T.PARTITION_DETAILS, [(PARTITION, "p", 1, 2, [SLICE])])
                  + encode(T.FG_LIST, [(GROUP, [SLICE], ["OPENIO/chunks"]),
                                       (FILES, [SLICE], ["OPENIO", "files"])])
                  + encode(T.SLICE_ONLINE, [(SLICE,)]))


class Scripted:
    """A listening socket on 127.0.0.1 whose first connection runs ``script(peer)``
    in a thread; ``done()`` joins it and re-raises what the script raised."""

    def __init__(self, script):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script):
        self.listener.settimeout(10)
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(10)
            with conn:
                script(Peer(conn))
        except BaseException as exc:  # noqa: BLE001 (done() re-raises it)
            self.error = exc
        finally:
            self.listener.close()

    def client(self, **kw):
        return SwapClient.connect("127.0.0.1", self.port, timeout=10, **kw)

    def done(self):
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture
def scripted():
    started = []

    def start(script):
        s = Scripted(script)
        started.append(s)
        return s
    yield start
    for s in started:
        s.thread.join(10)


# -- against the scripted peer ---------------------------------------------------

def test_golden_bytes_of_the_login_and_the_group_questions(scripted):
    def script(peer):
        peer.send(GOLDEN_MECHANISMS, bytewise=True)
        request = peer.recv_exact(4 + 0x1e)
        assert request == bytes.fromhex("0000001e 0013 0001 0005 504c41494e 0000000f") \
            + b"myuser\0admin\0pw"
        peer.send(GOLDEN_OK, bytewise=True)
        assert peer.recv_exact(24) == bytes.fromhex(
            "00000004 0005 0001 00000004 0001 0001 00000004 000a 0001")
        peer.send(encode(T.PARTITION_DETAILS, [(PARTITION, "p", 1, 2, [SLICE])])
                  + encode(T.FG_LIST, [(GROUP, [SLICE], ["OPENIO/chunks"])])
                  + encode(T.SLICE_ONLINE, [(SLICE,)]), bytewise=True)
        assert peer.recv_exact(4 + 0x1d) == bytes.fromhex("0000001d 000d 0001") \
            + GROUP.bytes + bytes.fromhex("0002 0001 61 0002 6263")
        peer.send(bytes.fromhex("00000004 000e 0000"))  # zero records: a wrong answer
        assert peer.message() is None
    s = scripted(script)
    client = s.client()
    client.authenticate("admin", "pw")
    [group] = client.list_groups()
    assert group.uuid == GROUP and group.namespace == "OPENIO/chunks" and group.local
    assert client.group("chunks") == GROUP
    with pytest.raises(SwapProtocolError, match="0 records for 2 paths"):
        client.stat("chunks", ["a", "bc"])
    assert client.closed  # out of step: closed
    s.done()


@pytest.mark.parametrize("ending", ["refused", "eof"])
def test_auth_failure_is_auth_failed(scripted, ending):
    def script(peer):
        peer.send(GOLDEN_MECHANISMS)
        assert peer.message()[0] == T.SASL_REQUEST
        if ending == "refused":
            peer.send(encode(T.SASL_RESPONSE, [(1, b"")]))
    s = scripted(script)
    client = s.client()
    with pytest.raises(AuthFailed):
        client.authenticate("admin", "pw")
    assert client.closed
    s.done()


def test_peer_mode_does_not_wait_for_an_offer(scripted):
    def script(peer):
        peer.groups()
        t, [(group, path, fid, offset, length)] = peer.message()
        assert t == T.REQUEST_FILE_STREAM and (group, path, offset, length) == (
            FILES, "x", 0, 0)
        peer.send(encode(T.FILE_SEGMENT, [(fid, 0, b"abc")])
                  + encode(T.CLOSE_FILE, [(fid, 0, hashlib.md5(b"abc").hexdigest().upper())]))
    s = scripted(script)
    client = s.client(peer=True)
    out = io.BytesIO()
    assert client.get("files", "x", out) == (3, hashlib.md5(b"abc").hexdigest())
    assert out.getvalue() == b"abc"
    s.done()


def test_peer_mode_on_a_node_that_wants_a_login(scripted):
    def script(peer):
        peer.send(GOLDEN_MECHANISMS)
        peer.message()
    s = scripted(script)
    client = s.client(peer=True)
    with pytest.raises(AuthFailed, match="not take this address for a peer"):
        client.list_groups()
    assert client.closed
    s.done()


def test_stream_md5_mismatch_and_refusal_keep_the_session(scripted):
    def script(peer):
        peer.handshake()
        peer.groups()
        _, [(_, _, fid, _, _)] = peer.message()
        peer.send(encode(T.FILE_SEGMENT, [(fid, 0, b"abc")])
                  + encode(T.CLOSE_FILE, [(fid, 0, "0" * 32)]))
        _, [(_, _, fid2, _, _)] = peer.message()
        assert fid2 == fid + 1  # fids count up per connection
        peer.send(encode(T.CLOSE_FILE, [(fid2, FinishType.FILE_DOES_NOT_EXIST, "")]))
        _, [(_, paths)] = peer.message()
        peer.send(encode(T.PATH_DETAILS, [(GROUP, p, 2, 0, 0) for p in paths]))
    s = scripted(script)
    client = s.client()
    client.authenticate("admin", "pw")
    with pytest.raises(ChecksumMismatch):
        client.get("chunks", "a", io.BytesIO())
    with pytest.raises(RemoteRefused) as info:
        client.get("chunks", "b", io.BytesIO())
    assert (info.value.code, info.value.name) == (7, "FILE_DOES_NOT_EXIST")
    assert "FILE_DOES_NOT_EXIST (7)" in str(info.value)
    [rec] = client.stat("chunks", ["c"])
    assert rec.kind == PathKind.NOT_FOUND
    with pytest.raises(UnknownGroup):
        client.group("nope")
    s.done()


def test_many_paths_are_several_frames_in_one_write(scripted):
    paths = [f"{i:03X}/{i:064X}" for i in range(40000)]
    seen = []

    def script(peer):
        peer.handshake()
        peer.groups()
        asked = []
        while sum(len(a) for a in asked) < len(paths):
            t, [(group, batch)] = peer.message()
            assert t == T.GET_PATH_DETAILS and group == GROUP
            asked.append(batch)
        seen.extend(len(a) for a in asked)
        for batch in asked:  # only after every request is in: the client pipelines
            peer.send(encode(T.PATH_DETAILS, [(GROUP, p, 0, len(p), 7) for p in batch],
                             max_frame=1 << 30))
    s = scripted(script)
    client = s.client()
    client.authenticate("admin", "pw")
    records = client.stat("chunks", paths)
    s.done()
    assert [r.path for r in records] == paths and records[5].size == len(paths[5])
    assert len(seen) > 2 and max(seen) <= 32767
    # each reply fits the node's default frame: 38 bytes a record plus the path
    assert max(seen) * (38 + 68) + 8 <= (1 << 20) + (64 << 10)


def test_put_stops_sending_when_the_node_refuses(scripted):
    received = []

    def script(peer):
        peer.handshake()
        peer.groups()
        t, [(_, _, fid)] = peer.message()
        assert t == T.TRANSMIT_FILE_STREAM
        peer.send(encode(T.CLOSE_FILE, [(fid, FinishType.PERMISSION_DENIED, "")]))
        while True:
            msg = peer.message()
            if msg is None:
                return
            received.append(msg[0])
    s = scripted(script)
    client = s.client()
    client.authenticate("admin", "pw")
    with pytest.raises(RemoteRefused) as info:
        client.put("chunks", "x", io.BytesIO(bytes(64 << 20)))
    assert info.value.name == "PERMISSION_DENIED"
    client.close()
    s.done()
    assert len(received) < 16  # not 128 segments: it stopped early


@pytest.mark.parametrize("junk", [bytes.fromhex("00000002 0001"),  # L < 4
                                  bytes.fromhex("00000004 0063 0001"),  # unknown type
                                  bytes.fromhex("00000004 000e")])  # EOF inside
def test_malformed_or_truncated_reply_closes(scripted, junk):
    def script(peer):
        peer.handshake()
        peer.groups()
        peer.message()
        peer.send(junk)
    s = scripted(script)
    client = s.client()
    client.authenticate("admin", "pw")
    with pytest.raises((SwapProtocolError, SwapConnectionError)):
        client.ls("chunks", "")
    assert client.closed
    s.done()


def test_connection_refused_is_a_swap_error():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(SwapConnectionError):
        SwapClient.connect("127.0.0.1", port, timeout=2)


def test_silent_node_times_out(scripted):
    def script(peer):
        time.sleep(1.5)
    s = scripted(script)
    client = SwapClient.connect("127.0.0.1", s.port, timeout=0.5)
    with pytest.raises(AuthFailed, match="no SASL offer"):
        client.authenticate("admin", "pw")
    s.done()


def test_put_reads_short_reads_into_full_segments(scripted):
    data = os.urandom(SEG := 512 << 10) + b"tail"
    sizes = []

    class Trickle(io.RawIOBase):
        def __init__(self):
            self.pos = 0

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), 10000, len(data) - self.pos)
            b[:n] = data[self.pos:self.pos + n]
            self.pos += n
            return n

    def script(peer):
        peer.handshake()
        peer.groups()
        t, [(_, path, fid)] = peer.message()
        md5 = hashlib.md5()
        while True:
            t, [rec] = peer.message()
            if t == T.CLOSE_FILE:
                assert rec == (fid, 0, md5.hexdigest())
                break
            assert rec[0] == fid and rec[1] == sum(sizes)
            sizes.append(len(rec[2]))
            md5.update(rec[2])
        assert peer.message()[0] == T.GET_PATH_DETAILS
        peer.send(encode(T.PATH_DETAILS, [(FILES, path, 0, len(data), 1)]))
    s = scripted(script)
    client = s.client()
    client.authenticate("admin", "pw")
    assert client.put("files", "p", Trickle()).size == len(data)
    s.done()
    assert sizes == [SEG, 4]


# -- against real nodes ----------------------------------------------------------

from nodeutil import chunk_id
from test_send import PASSWORD, htdigest, put_chunk  # noqa: F401 (fixture)


@pytest.fixture
def swap_factory(node_factory, htdigest, tmp_path):  # noqa: F811
    """Real nodes with swap_listen on 127.0.0.1:0, admin_htdigest and a files group;
    skips while the node announces no SWAP address (nodeutil's ``swap_port``)."""

    def make(**extra):
        files = tmp_path / f"files{len(os.listdir(tmp_path))}"
        files.mkdir()
        node = node_factory(swap_listen="127.0.0.1:0", admin_htdigest=htdigest,
                            swap_files_dir=files, **extra)
        if getattr(node, "swap_port", None) is None:
            pytest.skip("the node announced no SWAP listener")
        node.files_dir = files
        return node
    return make


@pytest.fixture
def swap_node(swap_factory):
    return swap_factory()


def login(node, **kw):
    client = SwapClient.connect("127.0.0.1", node.swap_port, timeout=10, **kw)
    client.authenticate("admin", PASSWORD)
    return client


def test_groups_are_chunks_and_files_with_stable_uuids(swap_node):
    with login(swap_node) as client:
        groups = {g.name: g for g in client.list_groups()}
        assert {g.namespace for g in groups.values()} == {"OPENIO/chunks", "OPENIO/files"}
        assert all(g.local for g in groups.values())
        assert client.group("chunks") == groups["chunks"].uuid
        assert client.group("OPENIO/files") == groups["files"].uuid
        assert client.peers() == []
    swap_node.stop()
    swap_node.start()
    with login(swap_node) as client:
        assert {g.name: g.uuid for g in client.list_groups()} == \
            {name: g.uuid for name, g in groups.items()}


def test_bad_credentials_are_refused(swap_node):
    for user, password in (("admin", "wrong"), ("nobody", PASSWORD)):
        client = SwapClient.connect("127.0.0.1", swap_node.swap_port, timeout=10)
        with pytest.raises(AuthFailed):
            client.authenticate(user, password)
        assert client.closed


def test_a_chunk_by_id_and_by_path(swap_node):
    cid = chunk_id(1)
    body = os.urandom(3 * (512 << 10) + 77)
    put_chunk(swap_node, cid, body)
    hashed = f"{cid[:3]}/{cid}"
    with login(swap_node) as client:
        records = client.stat("chunks", [hashed, cid, "/" + cid, chunk_id(2), ""])
        assert [r.path for r in records] == [hashed, cid, "/" + cid, chunk_id(2), ""]
        assert [r.kind for r in records] == [PathKind.FILE] * 3 + [
            PathKind.NOT_FOUND, PathKind.DIRECTORY]
        assert records[0].size == len(body)
        assert abs(records[0].mtime / 1000 - time.time()) < 60
        pieces = []
        result = client.get("chunks", cid, pieces.append)
        assert result == (len(body), hashlib.md5(body).hexdigest())
        assert b"".join(pieces) == body
        assert max(len(p) for p in pieces) == 512 << 10  # one segment at a time
        out = io.BytesIO()
        assert client.get("chunks", hashed, out, offset=1000, length=600000).size == 600000
        assert out.getvalue() == body[1000:601000]
        assert client.read_range("chunks", hashed, len(body) - 10, 100) == body[-10:]
        assert client.read_range("chunks", hashed, len(body), 100) == b""
        assert client.get("chunks", hashed, io.BytesIO(), offset=len(body)) == \
            (0, hashlib.md5().hexdigest())
        assert cid[:3] in client.ls("chunks", "")
        assert client.ls("chunks", cid[:3]) == [cid]
        assert client.ls("chunks", "/" + cid[:3]) == [cid]
        assert client.ls("chunks", "nowhere") == []


def test_chunks_refuse_writes_and_delete_like_rawx(swap_node):
    cid = chunk_id(3)
    put_chunk(swap_node, cid, b"chunk")
    with login(swap_node) as client:
        with pytest.raises(RemoteRefused) as info:
            client.put("chunks", f"{cid[:3]}/{chunk_id(4)}", io.BytesIO(b"x" * 100))
        assert info.value.name == "PERMISSION_DENIED"
        assert client.rm("chunks", cid) is True
        assert client.rm("chunks", cid) is False
        assert swap_node.request("GET", f"/{cid}")[0] == 404
        others = [chunk_id(5), chunk_id(6)]
        for other in others:
            put_chunk(swap_node, other, b"chunk")
        # a directory's chunks go, the hashed directory stays, empty
        [removal] = client.rm_many("chunks", [others[0][:3]])
        assert (removal.before, removal.after, removal.left) == (
            PathKind.DIRECTORY, PathKind.DIRECTORY, 0)
        assert removal.outcome == "emptied"
        assert [swap_node.request("GET", f"/{c}")[0] for c in others] == [404, 404]
        # a group's root is never deleted
        put_chunk(swap_node, others[0], b"chunk")
        (swap_node.files_dir / "keep").write_bytes(b"")
        for group in ("chunks", "files"):
            with pytest.raises(NotDeleted):
                client.rm(group, "/")
        assert swap_node.request("GET", f"/{others[0]}")[0] == 200


def test_files_put_get_overwrite_ls_rm(swap_node):
    big = os.urandom(5 * (512 << 10) + 3)
    seen = []
    with login(swap_node) as client:
        result = client.put("files", "/d/e/big.bin", io.BytesIO(big), progress=seen.append)
        assert result == (len(big), hashlib.md5(big).hexdigest())
        assert seen[-1] == len(big) and len(seen) == 6
        assert (swap_node.files_dir / "d/e/big.bin").read_bytes() == big
        out = io.BytesIO()
        assert client.get("files", "d/e/big.bin", out).md5 == result.md5
        assert out.getvalue() == big
        client.put("files", "d/e/big.bin", io.BytesIO(b"short"))  # truncates
        assert (swap_node.files_dir / "d/e/big.bin").read_bytes() == b"short"
        client.put("files", "d/empty", io.BytesIO(b""))
        assert sorted(client.ls("files", "d")) == ["e", "empty"]
        [d] = client.stat("files", ["d"])
        assert d.kind == PathKind.DIRECTORY
        assert client.rm("files", "d") is True
        assert client.stat("files", ["d/e/big.bin"])[0].kind == PathKind.NOT_FOUND
        assert not (swap_node.files_dir / "d").exists()


def test_refusals_name_the_finish_type(swap_node):
    other = uuid.UUID(int=12345)
    (swap_node.files_dir.parent / "outside").write_bytes(b"secret")
    with login(swap_node) as client:
        cases = [("files", "missing", "FILE_DOES_NOT_EXIST"),
                 ("files", "", "FILE_DOES_NOT_EXIST"),  # a directory
                 (other, "x", "NONEXISTENT_GROUP"),
                 ("files", "../outside", "WRONG_NODE")]
        for group, path, name in cases:
            with pytest.raises(RemoteRefused) as info:
                client.get(group, path, io.BytesIO())
            assert info.value.name == name, (group, path)
        with pytest.raises(RemoteRefused) as info:
            client.put(other, "x", io.BytesIO(b"x"))
        assert info.value.name == "GROUP_DOES_NOT_EXIST"
        with pytest.raises(RemoteRefused):
            client.read_range("files", "missing", 0, 10)
        [unknown, outside] = [client.stat(other, ["x"])[0], client.stat("files", ["../outside"])[0]]
        assert unknown.kind == PathKind.NOT_LOCAL
        assert outside.kind not in (PathKind.FILE, PathKind.DIRECTORY)
        assert client.ls(other, "") == []
        # still in step after every refusal
        assert client.stat("files", [""])[0].kind == PathKind.DIRECTORY


def test_a_write_the_node_discards_is_not_stored(swap_node):
    (swap_node.files_dir / "d").mkdir()
    with login(swap_node) as client:
        with pytest.raises(NotStored, match="DIRECTORY"):  # discarded at CLOSE_FILE
            client.put("files", "d", io.BytesIO(b"x"))
        client.put("files", "f", io.BytesIO(b"x"))
        with pytest.raises(RemoteRefused, match="IO_ERROR"):  # refused at the open
            client.put("files", "f/under", io.BytesIO(b"x"))
        assert client.stat("files", ["f"])[0].size == 1  # still in step


def test_a_stream_holds_one_segment_at_a_time(swap_node):
    import tracemalloc
    size = 48 << 20
    with open(swap_node.files_dir / "big", "wb") as f:
        f.truncate(size)
    with login(swap_node) as client:
        client.stat("files", ["big"])  # groups listed before measuring
        tracemalloc.start()
        try:
            result = client.get("files", "big", lambda data: None)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert result == (size, hashlib.md5(bytes(size)).hexdigest())
    assert peak < 4 << 20, peak


def test_stat_of_many_paths_in_several_frames(swap_node):
    (swap_node.files_dir / "here").write_bytes(b"12345")
    paths = [f"{i:03X}/{i:064X}" for i in range(40000)]
    paths[12345] = "here"
    with login(swap_node) as client:
        records = client.stat("files", paths)
    assert [r.path for r in records] == paths
    assert [r.kind for r in records].count(PathKind.NOT_FOUND) == len(paths) - 1
    assert records[12345].kind == PathKind.FILE and records[12345].size == 5


def test_a_path_open_for_writing_is_refused_to_a_second_writer(swap_node):
    with login(swap_node) as first, login(swap_node) as second:
        gid = first.group("files")
        first._send(encode(T.TRANSMIT_FILE_STREAM, [(gid, "busy", 99)])
                    + encode(T.FILE_SEGMENT, [(99, 0, b"half")]))
        first.stat("files", ["busy"])  # the open has been handled
        with pytest.raises(RemoteRefused) as info:
            second.put("files", "busy", io.BytesIO(b"other"))
        assert info.value.name == "FILE_DOES_NOT_EXIST"


def test_tls_then_plaintext_after_auth(swap_factory, tls_cert):
    import ssl
    node = swap_factory(swap_tls="on", tls_cert_file=tls_cert[0], tls_key_file=tls_cert[1])
    context = ssl.create_default_context(cafile=tls_cert[0])
    for plaintext in (False, True):
        client = SwapClient.connect("127.0.0.1", node.swap_port, timeout=10,
                                    ssl_context=context)
        assert client.tls
        client.authenticate("admin", PASSWORD, plaintext=plaintext)
        assert client.tls is not plaintext
        data = os.urandom(700000)
        client.put("files", f"t{plaintext}", io.BytesIO(data))
        out = io.BytesIO()
        client.get("files", f"t{plaintext}", out)
        assert out.getvalue() == data
        client.close()
    with pytest.raises(AuthFailed):  # plaintext on a TLS listener: no offer comes
        SwapClient.connect("127.0.0.1", node.swap_port, timeout=3).authenticate(
            "admin", PASSWORD)


def test_peers_skip_auth_and_are_listed(swap_factory):
    node = swap_factory(swap_peers="127.0.0.1,10.1.2.3")
    with SwapClient.connect("127.0.0.1", node.swap_port, timeout=10, peer=True) as client:
        assert client.stat("files", [""])[0].kind == PathKind.DIRECTORY
        assert sorted(host for host, _ in client.peers()) == ["10.1.2.3", "127.0.0.1"]


def test_an_unverified_stream_trusts_the_bytes(swap_node):
    """verify=False: no MD5 on the client; a corrupt chunk is not caught then, and is
    with the default."""
    cid = chunk_id(3)
    body = os.urandom(600000)
    put_chunk(swap_node, cid, body)
    with login(swap_node) as client:
        pieces = []
        assert client.get("chunks", cid, pieces.append, verify=False) == \
            (len(body), hashlib.md5(body).hexdigest())
        assert b"".join(pieces) == body
        with open(swap_node.chunk_path(cid), "r+b") as f:
            f.write(b"\xff\xfe")
        bad = []
        assert client.get("chunks", cid, bad.append, verify=False).size == len(body)
        assert b"".join(bad) != body
        with pytest.raises(ChecksumMismatch):
            client.get("chunks", cid, lambda data: None)
