"""The SWAP listener of real nodes on 127.0.0.1, spoken to frame by frame with the
codec (spec swap.md: session, file groups, node behaviour)."""
import hashlib
import os
import socket
import ssl
import time
import uuid

import pytest

from nodeutil import chunk_id
from storage import swap
from storage.swap.messages import FinishType, MessageType as T, PathKind, SaslCode
from test_send import put_chunk

REALM = "CAStor administrator"


class Peer:
    """A SWAP session over a real socket: send frames, read messages."""

    def __init__(self, port, tls=None, timeout=10):
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = tls.wrap_socket(self.raw, server_hostname="127.0.0.1") if tls \
            else self.raw
        self.reader = swap.new_reader()

    def send(self, msg_type, records):
        self.sock.sendall(swap.encode(msg_type, records))

    def recv(self):
        """The next message (type, records); None at EOF."""
        while True:
            message = self.reader.next()
            if message is not None:
                return message
            data = self.sock.recv(1 << 20)
            if not data:
                return None
            self.reader.feed(data)

    def login(self, user="admin", password="pw"):
        assert self.recv() == (T.SASL_MECHANISMS, [(["PLAIN"],)])
        self.send(T.SASL_REQUEST, [("PLAIN", b"myuser\0" + user.encode() + b"\0" +
                                    password.encode())])
        return self.recv()

    def groups(self):
        self.send(T.LIST_FG, [()])
        _, records = self.recv()
        return {namespace[0].rsplit("/", 1)[1]: group for group, _, namespace in records}

    def close(self):
        self.sock.close()


@pytest.fixture
def admin_file(tmp_path):
    path = tmp_path / "admin.htdigest"
    ha1 = hashlib.md5(f"admin:{REALM}:pw".encode()).hexdigest()
    path.write_text(f"admin:{REALM}:{ha1}\n")
    return path


@pytest.fixture
def node(node_factory, admin_file, tmp_path):
    files = tmp_path / "swapfiles"
    return node_factory(sub="s", swap_listen="127.0.0.1:0", admin_htdigest=admin_file,
                        swap_files_dir=files)


def session(node):
    peer = Peer(node.swap_port)
    assert peer.login() == (T.SASL_RESPONSE, [(SaslCode.OK, b"")])
    return peer, peer.groups()


def exactly(sock, n):
    data = b""
    while len(data) < n:
        got = sock.recv(n - len(data))
        assert got, data
        data += got
    return data


def test_golden_session_and_group_lists(node):
    peer = Peer(node.swap_port)
    # the node speaks first, with the spec's golden bytes
    first = exactly(peer.sock, 17)
    assert first == bytes.fromhex("0000000d 0015 0001 0001 0005 504c41494e".replace(" ", ""))
    peer.send(T.SASL_REQUEST, [("PLAIN", b"myuser\0admin\0pw")])
    assert exactly(peer.sock, 16) == bytes.fromhex("0000000c001400010000000000000000")
    peer.send(T.LIST_PARTITIONS, [()])
    kind, [(partition, description, free, total, slices)] = peer.recv()
    assert kind == T.PARTITION_DETAILS and total >= free > 0 and len(slices) == 2
    groups = peer.groups()
    assert set(groups) == {"chunks", "files"}
    peer.send(T.LIST_SLICES, [()])
    kind, records = peer.recv()
    assert kind == T.SLICE_ONLINE and sorted(r[0] for r in records) == sorted(slices)
    peer.close()
    # the UUIDs stay the same across a restart
    node.stop()
    node.start()
    again, groups2 = session(node)
    assert groups2 == groups
    again.close()


def test_wrong_password_unknown_mechanism_and_early_messages_close(node):
    peer = Peer(node.swap_port)
    assert peer.login(password="nope") == (T.SASL_RESPONSE, [(SaslCode.FAILED, b"")])
    assert peer.recv() is None
    peer = Peer(node.swap_port)
    peer.recv()
    peer.send(T.SASL_REQUEST, [("CRAM-MD5", b"x")])
    assert peer.recv() is None
    peer = Peer(node.swap_port)
    peer.recv()
    peer.send(T.LIST_FG, [()])
    assert peer.recv() is None
    peer = Peer(node.swap_port)
    peer.recv()
    peer.send(T.SASL_REQUEST, [("PLAIN", b"admin\0pw")])  # two fields only
    assert peer.recv() == (T.SASL_RESPONSE, [(SaslCode.FAILED, b"")])


def test_path_details_of_thousands_of_paths_in_one_frame(node):
    cids = [chunk_id(600 + i) for i in range(3)]
    for cid in cids:
        put_chunk(node, cid, os.urandom(1000))
    peer, groups = session(node)
    paths = [f"/{cids[0]}", f"{cids[1][:3]}/{cids[1]}", "missing/file", "../../etc/passwd",
             ""] + [f"nothing{i}" for i in range(3000)]
    peer.send(T.GET_PATH_DETAILS, [(groups["chunks"], paths)])
    kind, records = peer.recv()
    assert kind == T.PATH_DETAILS and len(records) == len(paths)
    assert [r[1] for r in records] == paths  # echoed, in order
    assert records[0][2:4] == (PathKind.FILE, 1000)
    assert records[1][2:4] == (PathKind.FILE, 1000)
    assert records[2][2] == records[3][2] == PathKind.NOT_FOUND
    assert records[4][2] == PathKind.DIRECTORY
    assert abs(records[0][4] - os.stat(node.chunk_path(cids[0])).st_mtime * 1000) < 2
    unknown = uuid.uuid4()
    peer.send(T.GET_PATH_DETAILS, [(unknown, ["a"])])
    assert peer.recv()[1] == [(unknown, "a", PathKind.NOT_LOCAL, 0, 0)]


def stream(peer, group, path, fid, offset=0, length=0):
    peer.send(T.REQUEST_FILE_STREAM, [(group, path, fid, offset, length)])
    data = bytearray()
    while True:
        kind, records = peer.recv()
        if kind == T.CLOSE_FILE:
            return bytes(data), records[0]
        assert kind == T.FILE_SEGMENT
        got_fid, seg_offset, payload = records[0]
        assert got_fid == fid and seg_offset == offset + len(data)
        assert len(payload) <= 524288
        data += payload


def test_file_streams(node):
    cid = chunk_id(610)
    body = os.urandom(1300000)
    put_chunk(node, cid, body)
    peer, groups = session(node)
    data, close = stream(peer, groups["chunks"], cid, 7)
    assert data == body and close == (7, 0, hashlib.md5(body).hexdigest())
    data, close = stream(peer, groups["chunks"], cid, 8, 1000, 600000)
    assert data == body[1000:601000] and close[2] == hashlib.md5(data).hexdigest()
    data, close = stream(peer, groups["chunks"], cid, 9, len(body) + 5)
    assert data == b"" and close == (9, 0, hashlib.md5(b"").hexdigest())
    assert stream(peer, groups["chunks"], "nope", 10)[1] == (10, FinishType.FILE_DOES_NOT_EXIST, "")
    assert stream(peer, groups["chunks"], cid[:3], 11)[1][1] == FinishType.FILE_DOES_NOT_EXIST
    assert stream(peer, groups["chunks"], "../../../etc/passwd", 12)[1][1] == FinishType.WRONG_NODE
    assert stream(peer, uuid.uuid4(), cid, 13)[1][1] == FinishType.NONEXISTENT_GROUP
    # a corrupt chunk: the stored md5 goes with the bytes, so the receiver sees it
    with open(node.chunk_path(cid), "r+b") as f:
        f.write(b"\0\0\0")
    data, close = stream(peer, groups["chunks"], cid, 14)
    assert hashlib.md5(data).hexdigest() != close[2]


def test_random_access_and_fids(node):
    cid = chunk_id(620)
    body = os.urandom(700000)
    put_chunk(node, cid, body)
    peer, groups = session(node)
    peer.send(T.RANDOM_ACCESS_OPEN, [(groups["chunks"], cid, 5)])
    peer.send(T.RANDOM_ACCESS_OPEN, [(groups["chunks"], cid, 5)])  # fid in use
    assert peer.recv() == (T.CLOSE_FILE, [(5, FinishType.DUPLICATE_FID, "")])
    peer.send(T.REQUEST_FILE_SEGMENT, [(5, 100, 600000)])
    got = bytearray()
    for expected_offset in (100, 100 + 524288):
        kind, [(fid, offset, payload)] = peer.recv()
        assert (kind, fid, offset) == (T.FILE_SEGMENT, 5, expected_offset)
        got += payload
    assert bytes(got) == body[100:600100]
    peer.send(T.REQUEST_FILE_SEGMENT, [(5, len(body) - 10, 100)])
    assert peer.recv()[1][0][2] == body[-10:]
    peer.send(T.CLOSE_FILE, [(5, 0, "")])
    peer.send(T.REQUEST_FILE_SEGMENT, [(5, 0, 10)])
    assert peer.recv() == (T.CLOSE_FILE, [(5, FinishType.FID_NOT_OPEN, "")])
    peer.send(T.FILE_SEGMENT, [(99, 0, b"ignored")])  # unknown fid: ignored
    peer.send(T.CLOSE_FILE, [(98, 0, "")])
    peer.send(T.LIST_PEERS, [()])
    assert peer.recv() == (T.LIST_PEER_RESULT, [])


def put_file(peer, group, path, fid, body, md5=None, piece=524288):
    peer.send(T.TRANSMIT_FILE_STREAM, [(group, path, fid)])
    for offset in range(0, len(body), piece):
        peer.send(T.FILE_SEGMENT, [(fid, offset, body[offset:offset + piece])])
    peer.send(T.CLOSE_FILE, [(fid, 0, hashlib.md5(body).hexdigest() if md5 is None
                              else md5)])


def details(peer, group, path):
    peer.send(T.GET_PATH_DETAILS, [(group, [path])])
    return peer.recv()[1][0][2:4]


def test_writes_are_verified_and_confined(node, tmp_path):
    peer, groups = session(node)
    files = groups["files"]
    body = os.urandom(1200000)
    put_file(peer, files, "/dir/sub/a.bin", 1, body)
    assert details(peer, files, "dir/sub/a.bin") == (PathKind.FILE, len(body))
    assert (tmp_path / "swapfiles/dir/sub/a.bin").read_bytes() == body
    put_file(peer, files, "dir/sub/a.bin", 2, b"short")  # overwritten and truncated
    assert details(peer, files, "dir/sub/a.bin") == (PathKind.FILE, 5)
    put_file(peer, files, "bad.bin", 3, b"data", md5="0" * 32)  # wrong md5: discarded
    put_file(peer, files, "empty-md5.bin", 4, b"data", md5="")
    assert details(peer, files, "bad.bin")[0] == PathKind.NOT_FOUND
    assert details(peer, files, "empty-md5.bin")[0] == PathKind.NOT_FOUND
    peer.send(T.LIST_DIRECTORY, [(files, "/dir/sub")])
    assert peer.recv() == (T.LIST_DIRECTORY_RESULT, [(files, "/dir/sub", ["a.bin"])])
    peer.send(T.LIST_DIRECTORY, [(files, "missing")])
    assert peer.recv()[1][0][2] == []
    # refusals
    peer.send(T.TRANSMIT_FILE_STREAM, [(groups["chunks"], "x", 10)])
    assert peer.recv() == (T.CLOSE_FILE, [(10, FinishType.PERMISSION_DENIED, "")])
    peer.send(T.TRANSMIT_FILE_STREAM, [(files, "../escape", 11)])
    assert peer.recv() == (T.CLOSE_FILE, [(11, FinishType.WRONG_NODE, "")])
    peer.send(T.TRANSMIT_FILE_STREAM, [(uuid.uuid4(), "x", 12)])
    assert peer.recv() == (T.CLOSE_FILE, [(12, FinishType.GROUP_DOES_NOT_EXIST, "")])
    os.symlink("/etc", tmp_path / "swapfiles/out")
    peer.send(T.TRANSMIT_FILE_STREAM, [(files, "out/evil", 13)])
    assert peer.recv() == (T.CLOSE_FILE, [(13, FinishType.WRONG_NODE, "")])
    assert details(peer, files, "out/hostname")[0] == PathKind.NOT_FOUND
    assert stream(peer, files, "out/hostname", 14)[1][1] == FinishType.WRONG_NODE
    # a path open for writing in another session
    other, _ = session(node)
    peer.send(T.TRANSMIT_FILE_STREAM, [(files, "busy.bin", 20)])
    details(peer, files, "busy.bin")  # a round trip: the open is done
    other.send(T.TRANSMIT_FILE_STREAM, [(files, "busy.bin", 21)])
    assert other.recv() == (T.CLOSE_FILE, [(21, FinishType.FILE_DOES_NOT_EXIST, "")])
    # a session that ends mid-write leaves nothing
    peer.send(T.FILE_SEGMENT, [(20, 0, b"partial")])
    peer.close()
    time.sleep(0.3)
    put_file(other, files, "check", 22, b"x")
    assert details(other, files, "busy.bin")[0] == PathKind.NOT_FOUND
    assert not [n for n in os.listdir(tmp_path / "swapfiles") if "busy" in n]


def test_delete_path(node, tmp_path):
    cid = chunk_id(630)
    put_chunk(node, cid, b"x" * 100)
    peer, groups = session(node)
    put_file(peer, groups["files"], "d/e/f", 1, b"abc")
    peer.send(T.DELETE_PATH, [(groups["files"], "d")])
    assert details(peer, groups["files"], "d")[0] == PathKind.NOT_FOUND
    peer.send(T.DELETE_PATH, [(groups["chunks"], cid)])
    assert details(peer, groups["chunks"], cid)[0] == PathKind.NOT_FOUND
    assert node.request("HEAD", f"/{cid}")[0] == 404
    peer.send(T.DELETE_PATH, [(groups["chunks"], "../../etc")])
    peer.send(T.DELETE_PATH, [(groups["files"], "")])  # a group's root: refused
    peer.send(T.DELETE_PATH, [(uuid.uuid4(), "x")])
    assert details(peer, groups["files"], "")[0] == PathKind.DIRECTORY


def test_a_malformed_frame_closes_only_that_session(node):
    good, groups = session(node)
    bad, _ = session(node)
    bad.sock.sendall(b"\x00\x00\x00\x08\x7f\x7f\x00\x01\x00\x00\x00\x00")  # unknown type
    assert bad.recv() is None
    bad, _ = session(node)
    bad.sock.sendall(b"\x00\x00\x00\x02\x00\x01")  # L < 4
    assert bad.recv() is None
    bad, _ = session(node)
    bad.sock.sendall(b"\x7f\xff\xff\xff")  # L far over the limit
    assert bad.recv() is None
    assert details(good, groups["chunks"], "")[0] == PathKind.DIRECTORY
    assert node.request("GET", "/info")[0] == 200


def test_a_silent_peer_times_out(node_factory, admin_file):
    node = node_factory(sub="t", swap_listen="127.0.0.1:0", admin_htdigest=admin_file,
                        timeout_read_header=1)
    peer = Peer(node.swap_port, timeout=10)
    assert peer.recv()[0] == T.SASL_MECHANISMS
    started = time.monotonic()
    assert peer.recv() is None
    assert time.monotonic() - started < 8


def test_peers_skip_authentication(node_factory, admin_file):
    node = node_factory(sub="p", swap_listen="127.0.0.1:0", admin_htdigest=admin_file,
                        swap_peers="127.0.0.1:9124,10.0.0.7")
    peer = Peer(node.swap_port)
    peer.send(T.LIST_PEERS, [()])  # nothing came first: a peer speaks at once
    assert peer.recv() == (T.LIST_PEER_RESULT, [(bytes([127, 0, 0, 1]), 9124),
                                                (bytes([10, 0, 0, 7]), 9123)])


def test_tls_then_plaintext_after_authentication(node_factory, admin_file, tls_cert):
    crt, key = tls_cert
    node = node_factory(sub="l", swap_listen="127.0.0.1:0", admin_htdigest=admin_file,
                        swap_tls="on", tls_cert_file=crt, tls_key_file=key)
    cid = chunk_id(640)
    body = os.urandom(600000)
    put_chunk(node, cid, body)
    context = ssl.create_default_context(cafile=str(crt))
    peer = Peer(node.swap_port, tls=context)
    assert peer.login() == (T.SASL_RESPONSE, [(SaslCode.OK, b"")])
    groups = peer.groups()
    assert stream(peer, groups["chunks"], cid, 1)[0] == body  # over TLS
    plain = peer.sock.unwrap()  # close_notify both ways, then plaintext
    peer.sock = plain
    assert stream(peer, groups["chunks"], cid, 2)[0] == body
    assert details(peer, groups["chunks"], cid) == (PathKind.FILE, len(body))
    # without TLS the node answers nothing a plaintext client understands
    raw = socket.create_connection(("127.0.0.1", node.swap_port), timeout=5)
    raw.sendall(swap.encode(T.LIST_FG, [()]))
    raw.settimeout(5)
    try:
        reply = raw.recv(100)
    except (ConnectionResetError, socket.timeout):
        reply = b""
    assert not reply.startswith(b"\x00\x00\x00")
    raw.close()


def test_sighup_keeps_the_swap_and_rsmc_ports(node_factory, admin_file):
    from test_server_reload import reload
    node = node_factory(sub="r", swap_listen="127.0.0.1:0", admin_htdigest=admin_file,
                        rsmc_listen="127.0.0.1:0", workers=2)
    ports = (node.swap_port, node.rsmc_port)
    before, groups = session(node)
    reload(node)
    after, groups_after = session(node)  # the same port, new workers
    assert groups_after == groups and (node.swap_port, node.rsmc_port) == ports
    from storage.rsmc.client import RsmcClient
    client = RsmcClient("127.0.0.1", node.rsmc_port, timeout=10)
    assert client.request("LOG").code == 200
    client.close()
    # a second node cannot take either port
    from nodeutil import Node
    import pathlib
    other_dir = pathlib.Path(node.tmp_path).parent / "other"
    other_dir.mkdir()
    other = Node(other_dir, service_id="other", swap_listen=f"127.0.0.1:{ports[0]}",
                 admin_htdigest=admin_file)
    with pytest.raises(RuntimeError):
        other.start(timeout=10)
    assert other.proc.returncode == 1
    assert "swap_listen" in other.stderr_path.read_text()
