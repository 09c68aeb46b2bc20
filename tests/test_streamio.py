"""streamio: Md5, pump/write_all, hash_file, xattrs, rename_noreplace.

Every test runs against the compiled module and its pure twin, on real
sockets (socketpair) and real files in tmp_path.
"""
import array
import errno
import hashlib
import os
import random
import selectors
import socket
import subprocess
import sys
import threading

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import import_twin, twin_params


@pytest.fixture(params=twin_params("streamio"))
def sio(request):
    return import_twin(request.param)


@pytest.fixture
def pair():
    """(our non-blocking end, the peer's blocking end)."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    yield ours, peer
    ours.close()
    peer.close()


@pytest.fixture
def out(tmp_path):
    path = tmp_path / "chunk"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    yield fd, path
    os.close(fd)


def make_hasher(sio, kind):
    return {"md5": sio.Md5, "blake3": blake3.blake3, "none": lambda: None}[kind]()


def reference(kind, data):
    if kind == "md5":
        return hashlib.md5(data).hexdigest()
    if kind == "blake3":
        return blake3.blake3(data).hexdigest()
    return None


def hexdigest(hasher):
    return None if hasher is None else hasher.hexdigest()


# ------------------------------------------------------------------------ Md5

@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(st.binary(max_size=6000), max_size=6))
@pytest.mark.parametrize("modname", [p.values[0] for p in twin_params("streamio")])
def test_md5_matches_hashlib(modname, pieces):
    sio = import_twin(modname)
    ours, ref = sio.Md5(), hashlib.md5()
    for i, piece in enumerate(pieces):
        # all kinds of bytes-like input
        ours.update([bytes, bytearray, memoryview][i % 3](piece))
        ref.update(piece)
    assert ours.digest() == ref.digest()
    assert ours.hexdigest() == ref.hexdigest()


def test_md5_surface(sio):
    h = sio.Md5(b"abc")
    assert h.name == "md5" and h.digest_size == 16 and h.block_size == 64
    assert h.hexdigest() == hashlib.md5(b"abc").hexdigest()
    assert h.digest() == h.digest()  # digest() does not finalize
    big = random.Random(1).randbytes((1 << 20) + 17)
    h.update(big)
    assert h.digest() == hashlib.md5(b"abc" + big).digest()
    h.update(array.array("i", [1, 2, 3]))
    assert h.digest() == hashlib.md5(b"abc" + big + bytes(array.array("i", [1, 2, 3]))).digest()
    with pytest.raises(TypeError):
        h.update("text")


def test_md5_copy_is_independent(sio):
    h = sio.Md5(b"head")
    c = h.copy()
    assert type(c) is type(h)
    c.update(b"tail of the copy")
    h.update(b"tail of the original")
    assert c.hexdigest() == hashlib.md5(b"headtail of the copy").hexdigest()
    assert h.hexdigest() == hashlib.md5(b"headtail of the original").hexdigest()


def test_md5_same_object_from_two_threads(sio):
    # Identical blocks: any interleaving of the locked updates gives one digest.
    block, rounds = bytes(range(256)) * 256, 40
    h = sio.Md5()

    def work():
        for _ in range(rounds):
            h.update(block)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert h.hexdigest() == hashlib.md5(block * (2 * rounds)).hexdigest()


# ----------------------------------------------------------------------- pump

@pytest.mark.parametrize("kind", ["md5", "blake3", "none"])
def test_pump_limit_smaller_than_data(sio, pair, out, kind):
    ours, peer = pair
    fd, path = out
    data = random.Random(2).randbytes(1000)
    peer.sendall(data)
    hasher = make_hasher(sio, kind)
    buf = bytearray(128)
    assert sio.pump(ours.fileno(), fd, buf, hasher, 300) == (300, sio.LIMIT)
    assert path.read_bytes() == data[:300]
    assert sio.pump(ours.fileno(), fd, buf, hasher, 10_000) == (700, sio.AGAIN)
    assert path.read_bytes() == data
    assert hexdigest(hasher) == reference(kind, data)


def test_pump_would_block_on_empty_socket(sio, pair, out):
    ours, _ = pair
    assert sio.pump(ours.fileno(), out[0], bytearray(64), sio.Md5(), 100) == (0, sio.AGAIN)


def test_pump_eof(sio, pair, out):
    ours, peer = pair
    fd, path = out
    peer.sendall(b"last bytes")
    peer.shutdown(socket.SHUT_WR)
    h = sio.Md5()
    assert sio.pump(ours.fileno(), fd, bytearray(4), h, 1 << 20) == (10, sio.EOF)
    assert sio.pump(ours.fileno(), fd, bytearray(4), h, 1 << 20) == (0, sio.EOF)
    assert path.read_bytes() == b"last bytes"
    assert h.hexdigest() == hashlib.md5(b"last bytes").hexdigest()


def test_pump_limit_zero_touches_nothing(sio, pair):
    ours, peer = pair
    peer.sendall(b"stay")
    # invalid descriptors would fail if they were used
    assert sio.pump(-1, -1, bytearray(8), sio.Md5(), 0) == (0, sio.LIMIT)
    assert ours.recv(8) == b"stay"


def test_pump_buffer_checks(sio, pair, out):
    ours, _ = pair
    with pytest.raises(TypeError):
        sio.pump(ours.fileno(), out[0], b"read-only", None, 10)
    with pytest.raises(ValueError):
        sio.pump(ours.fileno(), out[0], bytearray(), None, 10)
    with pytest.raises(ValueError):
        sio.pump(ours.fileno(), out[0], bytearray(8), None, -1)


@pytest.mark.parametrize("kind", ["md5", "blake3"])
def test_pump_into_views_and_typed_buffers(sio, pair, out, kind):
    ours, peer = pair
    fd, path = out
    data = random.Random(3).randbytes(5000)
    peer.sendall(data)
    hasher = make_hasher(sio, kind)
    backing = bytearray(1000)
    got = sio.pump(ours.fileno(), fd, memoryview(backing)[100:300], hasher, 2500)
    assert got == (2500, sio.LIMIT)
    got = sio.pump(ours.fileno(), fd, array.array("i", bytes(400)), hasher, 10_000)
    assert got == (2500, sio.AGAIN)
    assert path.read_bytes() == data
    assert hexdigest(hasher) == reference(kind, data)


def _sender(sock, data, seed):
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 70_000)
        sock.sendall(data[pos:pos + step])
        pos += step
    sock.shutdown(socket.SHUT_WR)


def _pump_until_eof(sio, sock, fd, buf, hasher, step):
    """Drive pump like the event loop does; bounded by iterations and time."""
    total = 0
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        for _ in range(200_000):
            moved, status = sio.pump(sock.fileno(), fd, buf, hasher, step)
            total += moved
            if status == sio.EOF:
                return total
            if status == sio.AGAIN:
                assert sel.select(timeout=30), "sender stalled"
    raise AssertionError("no EOF")


@pytest.mark.parametrize("kind", ["md5", "blake3", "none"])
def test_pump_data_over_many_sends(sio, pair, out, kind):
    ours, peer = pair
    fd, path = out
    data = random.Random(4).randbytes(3 << 20)
    hasher = make_hasher(sio, kind)
    sender = threading.Thread(target=_sender, args=(peer, data, 5))
    sender.start()
    try:
        total = _pump_until_eof(sio, ours, fd, bytearray(7777), hasher, 100_003)
    finally:
        sender.join(60)
    assert total == len(data)
    assert path.read_bytes() == data
    assert hexdigest(hasher) == reference(kind, data)


@pytest.mark.parametrize("kind", ["md5", "blake3", "none"])
@pytest.mark.parametrize("target", ["read-only", "/dev/full"])
def test_pump_disk_error(sio, pair, tmp_path, kind, target):
    ours, peer = pair
    if target == "read-only":
        (tmp_path / "ro").write_bytes(b"")
        fd, code = os.open(tmp_path / "ro", os.O_RDONLY), errno.EBADF
    else:
        fd, code = os.open("/dev/full", os.O_WRONLY), errno.ENOSPC
    peer.sendall(b"x" * 5000)
    try:
        with pytest.raises(sio.DiskWriteError) as info:
            sio.pump(ours.fileno(), fd, bytearray(1024), make_hasher(sio, kind), 5000)
    finally:
        os.close(fd)
    assert info.value.errno == code
    assert isinstance(info.value, OSError)
    # the first piece (one buffer) was taken from the socket, then its write failed
    assert info.value.received == 1024


def test_pump_disk_error_counts_earlier_pieces(sio, pair, tmp_path):
    """received covers pieces written before the failing one: a caller keeps framing."""
    ours, peer = pair
    limit_fd = os.open("/dev/full", os.O_WRONLY)
    peer.sendall(b"y" * 3000)
    try:
        with pytest.raises(sio.DiskWriteError) as info:
            sio.pump(ours.fileno(), limit_fd, bytearray(1000), None, 3000)
    finally:
        os.close(limit_fd)
    rest = b""
    ours.setblocking(False)
    try:
        rest = ours.recv(10000)
    except BlockingIOError:
        pass
    assert info.value.received + len(rest) == 3000


@pytest.mark.parametrize("kind", ["md5", "blake3"])
def test_pump_peer_reset_is_a_socket_error(sio, pair, out, kind):
    ours, peer = pair
    ours.send(b"never read by the peer")
    peer.sendall(b"some body")
    peer.close()  # closing with unread data resets the connection
    with pytest.raises(OSError) as info:
        sio.pump(ours.fileno(), out[0], bytearray(64), make_hasher(sio, kind), 1000)
    assert not isinstance(info.value, sio.DiskWriteError)
    assert isinstance(info.value, ConnectionResetError)


def test_pump_from_a_non_socket(sio, out, tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            sio.pump(fd, out[0], bytearray(64), None, 10)
    finally:
        os.close(fd)
    assert info.value.errno == errno.ENOTSOCK
    assert not isinstance(info.value, sio.DiskWriteError)


def test_pump_and_md5_in_threads_at_once(sio, tmp_path):
    results, errors = {}, []
    blobs = [random.Random(10 + i).randbytes((2 << 20) + i) for i in range(4)]

    def pump_worker(i):
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        fd = os.open(tmp_path / f"t{i}", os.O_RDWR | os.O_CREAT, 0o644)
        sender = threading.Thread(target=_sender, args=(peer, blobs[i], i))
        sender.start()
        try:
            h = sio.Md5()
            _pump_until_eof(sio, ours, fd, bytearray(65536), h, 1 << 20)
            results[i] = h.hexdigest()
        except Exception as exc:  # reported below, with the thread's name
            errors.append((i, exc))
        finally:
            sender.join(60)
            os.close(fd)
            ours.close()
            peer.close()

    def md5_worker(i):
        h = sio.Md5()
        for k in range(0, len(blobs[i]), 1 << 18):
            h.update(memoryview(blobs[i])[k:k + (1 << 18)])
        results[i] = h.hexdigest()

    threads = [threading.Thread(target=pump_worker, args=(0,)),
               threading.Thread(target=pump_worker, args=(1,)),
               threading.Thread(target=md5_worker, args=(2,)),
               threading.Thread(target=md5_worker, args=(3,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i in range(4):
        assert results[i] == hashlib.md5(blobs[i]).hexdigest()
    for i in range(2):
        assert (tmp_path / f"t{i}").read_bytes() == blobs[i]


# ------------------------------------------------------------------ write_all

@pytest.mark.parametrize("kind", ["md5", "blake3", "none"])
def test_write_all(sio, out, kind):
    fd, path = out
    rng = random.Random(6)
    pieces = [b"", rng.randbytes(10), bytearray(rng.randbytes(3000)),
              memoryview(rng.randbytes(1 << 20))[5:], array.array("h", [1, -2, 3])]
    hasher = make_hasher(sio, kind)
    for piece in pieces:
        assert sio.write_all(fd, piece, hasher) == memoryview(piece).nbytes
    whole = b"".join(bytes(p) for p in pieces)
    assert path.read_bytes() == whole
    assert hexdigest(hasher) == reference(kind, whole)


@pytest.mark.parametrize("kind", ["md5", "blake3", "none"])
def test_write_all_disk_full(sio, kind):
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(sio.DiskWriteError) as info:
            sio.write_all(fd, b"x" * 5000, make_hasher(sio, kind))
    finally:
        os.close(fd)
    assert info.value.errno == errno.ENOSPC


def test_write_all_rejects_text(sio, out):
    with pytest.raises(TypeError):
        sio.write_all(out[0], "text", None)


# ------------------------------------------------------------------ hash_file

@pytest.fixture
def random_file(tmp_path):
    data = random.Random(7).randbytes((1 << 20) + 123)
    path = tmp_path / "data"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    yield fd, data
    os.close(fd)


@pytest.mark.parametrize("algo", ["md5", "blake3"])
@pytest.mark.parametrize("bufsize", [None, 1000, 1 << 16])
def test_hash_file(sio, random_file, algo, bufsize):
    fd, data = random_file
    ref = {"md5": hashlib.md5, "blake3": blake3.blake3}[algo]
    n = len(data)
    for offset, length in [(0, -1), (0, 0), (100, -1), (5, 1000), (0, n),
                           (n - 10, 100), (n + 5, -1), (12345, 500_000)]:
        buf = None if bufsize is None else bytearray(bufsize)
        expected = ref(data[offset:] if length < 0 else data[offset:offset + length])
        got = sio.hash_file(fd, algo, offset, length, buf)
        assert got == expected.hexdigest().upper(), (offset, length)


def test_hash_file_errors(sio, random_file, tmp_path):
    fd, _ = random_file
    with pytest.raises(ValueError):
        sio.hash_file(fd, "sha1")
    with pytest.raises(ValueError):
        sio.hash_file(fd, "md5", -1)
    dirfd = os.open(tmp_path, os.O_RDONLY)
    try:
        for algo in ("md5", "blake3"):
            with pytest.raises(IsADirectoryError):
                sio.hash_file(dirfd, algo)
    finally:
        os.close(dirfd)


# --------------------------------------------------------------------- xattrs

def user_attrs(attrs):
    return {k: v for k, v in attrs.items() if k.startswith("user.")}


def test_xattrs_round_trip(sio, out):
    fd, _ = out
    assert user_attrs(sio.read_xattrs(fd)) == {}
    attrs = {
        "user.grid.content.path": b"some/object/name",
        "user.empty": b"",
        "user.big": bytes(range(256)) * 8,  # 2 KiB: more than a first guess
        "user.oio.ext.Caf\u00e9": "h\u00e9".encode(),
    }
    sio.write_xattrs(fd, attrs)
    got = sio.read_xattrs(fd)
    assert user_attrs(got) == attrs
    assert all(type(v) is bytes for v in got.values())
    sio.write_xattrs(fd, [("user.empty", b"now set")])  # replaces
    assert sio.read_xattrs(fd)["user.empty"] == b"now set"


def test_many_xattrs(sio, out):
    fd, _ = out
    pairs = [(f"user.attr.{i:03d}", str(i).encode() * (i % 5)) for i in range(25)]
    sio.write_xattrs(fd, iter(pairs))
    assert user_attrs(sio.read_xattrs(fd)) == dict(pairs)


def test_xattrs_errors(sio, out):
    fd, _ = out
    with pytest.raises(OSError) as info:
        sio.write_xattrs(fd, {"user.huge": b"x" * (70 * 1024)})
    assert info.value.errno == errno.E2BIG
    with pytest.raises(ValueError):
        sio.write_xattrs(fd, {"user.bad\0name": b"v"})
    with pytest.raises(TypeError):
        sio.write_xattrs(fd, {"user.text": "not bytes"})
    with pytest.raises(OSError) as info:
        sio.read_xattrs(-1)
    assert info.value.errno == errno.EBADF


# --------------------------------------------------------------------- rename

@pytest.mark.parametrize("func", ["rename_noreplace", "_rename_by_link"])
def test_rename_moves(sio, tmp_path, func):
    src, dst = tmp_path / "a.pending", tmp_path / "a"
    src.write_bytes(b"chunk")
    getattr(sio, func)(str(src), str(dst))
    assert not src.exists()
    assert dst.read_bytes() == b"chunk"


@pytest.mark.parametrize("func", ["rename_noreplace", "_rename_by_link"])
def test_rename_refuses_to_replace(sio, tmp_path, func):
    src, dst = tmp_path / "b.pending", tmp_path / "b"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        getattr(sio, func)(str(src), str(dst))
    assert src.read_bytes() == b"new"
    assert dst.read_bytes() == b"old"


@pytest.mark.parametrize("func", ["rename_noreplace", "_rename_by_link"])
def test_rename_missing_source(sio, tmp_path, func):
    with pytest.raises(FileNotFoundError):
        getattr(sio, func)(str(tmp_path / "nope"), str(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()


def _forbid_unlink_in(directory):
    """Make unlinking from directory fail while linking out of it works:
    chmod for a normal user, the append-only flag for root. A function that
    undoes it, or None when this process cannot do either."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return lambda: directory.chmod(0o755)
    done = subprocess.run(["chattr", "+a", str(directory)], capture_output=True)
    if done.returncode:
        return None
    return lambda: subprocess.run(["chattr", "-a", str(directory)], check=True)


def test_rename_by_link_rolls_back_when_source_stays(sio, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "src").write_bytes(b"data")
    undo = _forbid_unlink_in(locked)
    if undo is None:
        pytest.skip("cannot make unlink fail here (no chattr +a as root)")
    try:
        with pytest.raises(PermissionError):
            sio._rename_by_link(str(locked / "src"), str(tmp_path / "dst"))
    finally:
        undo()
    assert (locked / "src").read_bytes() == b"data"
    assert not (tmp_path / "dst").exists()


# --------------------------------------------------------------- differential

FAST, PURE = (import_twin(p.values[0]) for p in twin_params("streamio"))


def _outcome(call):
    try:
        return ("ok", call())
    except Exception as exc:  # the type is what is compared
        return ("raised", type(exc))


@pytest.mark.parametrize("seed", range(6))
def test_pump_twins_agree(tmp_path, seed):
    """Same bytes, same buffer size and limits: same (moved, status) steps,
    same file bytes, same digest."""
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(0, 200_000))
    bufsize = rng.choice([13, 4096, 65536, 1 << 20])
    limits = [rng.randint(0, 50_000) for _ in range(8)]
    seen = {}
    for sio in (FAST, PURE):
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        peer.setblocking(False)
        fd = os.open(tmp_path / sio.__name__, os.O_RDWR | os.O_CREAT, 0o644)
        sent = peer.send(data) if data else 0  # whatever fits, without blocking
        peer.shutdown(socket.SHUT_WR)
        h, buf, steps = sio.Md5(), bytearray(bufsize), []
        try:
            for limit in limits:
                steps.append(sio.pump(ours.fileno(), fd, buf, h, limit))
        finally:
            os.close(fd)
            ours.close()
            peer.close()
        seen[sio] = (sent, steps, (tmp_path / sio.__name__).read_bytes(), h.hexdigest())
    assert seen[FAST] == seen[PURE]
    sent, _, written, digest = seen[FAST]
    moved = min(sent, sum(limits))
    assert written == data[:moved]
    assert digest == hashlib.md5(data[:moved]).hexdigest()


def test_bad_arguments_raise_the_same(tmp_path, pair, out):
    ours, _ = pair
    fd, _ = out
    calls = [
        lambda m: m.pump(ours.fileno(), fd, b"ro", None, 5),
        lambda m: m.pump(ours.fileno(), fd, memoryview(bytearray(8))[::2], None, 5),
        lambda m: m.pump(ours.fileno(), fd, bytearray(), None, 5),
        lambda m: m.pump(ours.fileno(), fd, bytearray(8), None, -5),
        lambda m: m.pump(ours.fileno(), fd, "text", None, 5),
        lambda m: m.write_all(fd, "text", None),
        lambda m: m.write_all(fd, None, None),
        lambda m: m.hash_file(fd, "sha256"),
        lambda m: m.hash_file(fd, "md5", 0, -2),
        lambda m: m.hash_file(fd, "md5", 0, -1, b"ro"),
        lambda m: m.write_xattrs(fd, {"user.x\0": b""}),
        lambda m: m.write_xattrs(fd, {"user.x": None}),
        lambda m: m.write_xattrs(fd, [("user.only-a-name",)]),
        lambda m: m.rename_noreplace(b"bytes", "str"),
        lambda m: m.Md5().update("text"),
    ]
    for call in calls:
        assert _outcome(lambda: call(FAST)) == _outcome(lambda: call(PURE))
        assert _outcome(lambda: call(FAST))[0] == "raised"


def test_pump_with_foreign_md5_and_subclasses(pair, out):
    """An Md5 of the other module or a subclass goes through .update()."""
    ours, peer = pair
    fd, path = out

    class Counting(FAST.Md5):
        calls = 0

        def update(self, data):
            Counting.calls += 1
            super().update(data)

    data = random.Random(9).randbytes(50_000)
    peer.sendall(data)
    for hasher in (PURE.Md5(), Counting()):
        Counting.calls = 0  # Md5(data=b"") calls update once itself
        os.lseek(fd, 0, os.SEEK_SET)
        assert FAST.pump(ours.fileno(), fd, bytearray(1000), hasher, 25_000) == (25_000, 1)
        assert hasher.hexdigest() == hashlib.md5(data[:25_000]).hexdigest()
        data = data[25_000:]
    assert Counting.calls == 25


def test_pump_hasher_error_propagates(sio, pair, out):
    ours, peer = pair
    fd, path = out

    class Broken:
        def update(self, data):
            raise RuntimeError("hasher broke")

    peer.sendall(b"x" * 100)
    with pytest.raises(RuntimeError):
        sio.pump(ours.fileno(), fd, bytearray(64), Broken(), 100)
    assert path.read_bytes() == b""  # hashed before written: nothing written


# ------------------------------------------------- Md5 backends (md5mb, openssl)

def test_md5_backend_names(sio):
    assert sio.md5_backend() in ("md5mb", "openssl", "hashlib")
    if sio is FAST and not os.environ.get("STORAGE_NODE_MD5"):
        assert sio.md5_backend() == "md5mb"


@pytest.mark.parametrize("kernel", import_twin("_fastpath.md5mb").available_kernels())
def test_pumps_in_threads_on_each_md5mb_kernel(tmp_path, kernel):
    """Several pumps at once share the md5mb engine's lanes (kernel switched
    for the whole process); every file and digest must be right."""
    md5mb = import_twin("_fastpath.md5mb")
    blobs = [random.Random(40 + i).randbytes((1 << 20) + 7 * i) for i in range(4)]
    results, errors = {}, []

    def pump_worker(i):
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        fd = os.open(tmp_path / f"k{i}", os.O_RDWR | os.O_CREAT, 0o644)
        sender = threading.Thread(target=_sender, args=(peer, blobs[i], i))
        sender.start()
        try:
            h = FAST.Md5()
            _pump_until_eof(FAST, ours, fd, bytearray(256 << 10), h, 4 << 20)
            FAST.write_all(fd, blobs[i][:5000], h)  # the engine's small-update path
            results[i] = h.digest()
        except Exception as exc:  # reported below
            errors.append((i, exc))
        finally:
            sender.join(60)
            os.close(fd)
            ours.close()
            peer.close()

    before = md5mb.kernel()
    md5mb._set_kernel(kernel)
    try:
        threads = [threading.Thread(target=pump_worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        md5mb._set_kernel(before)
    assert not errors
    for i in range(4):
        assert results[i] == hashlib.md5(blobs[i] + blobs[i][:5000]).digest()
        assert (tmp_path / f"k{i}").read_bytes() == blobs[i] + blobs[i][:5000]


OPENSSL_CHECK = """
import hashlib, os, socket, tempfile
from _fastpath import streamio
assert streamio.md5_backend() == "openssl"
data = os.urandom(300_000)
h = streamio.Md5(data[:10]); h.update(data[10:]); c = h.copy()
assert h.digest() == c.digest() == hashlib.md5(data).digest()
ours, peer = socket.socketpair(); ours.setblocking(False)
with tempfile.TemporaryFile() as f:
    peer.sendall(data[:100_000])
    h = streamio.Md5()
    assert streamio.pump(ours.fileno(), f.fileno(), bytearray(1 << 16), h, 100_000) == (100_000, 1)
    streamio.write_all(f.fileno(), data[100_000:], h)
    assert h.hexdigest() == hashlib.md5(data).hexdigest()
    assert streamio.hash_file(f.fileno(), "md5") == hashlib.md5(data).hexdigest().upper()
print("ok")
"""


def test_md5_openssl_escape_hatch():
    env = dict(os.environ, STORAGE_NODE_MD5="openssl")
    done = subprocess.run([sys.executable, "-c", OPENSSL_CHECK], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    env["STORAGE_NODE_MD5"] = "sha1"
    done = subprocess.run([sys.executable, "-c", "import _fastpath.streamio"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "STORAGE_NODE_MD5" in done.stderr
