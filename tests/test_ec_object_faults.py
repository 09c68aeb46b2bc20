"""EC objects when nodes fail: put moves chunks off a node that refuses or
dies mid-upload, rebuild skips a target that fails, reads and rebuilds leave
a corrupt chunk out. Real nodes, real kills, real flipped bytes."""
import hashlib
import io
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nodeutil import Node
from storage.ec import description, placement, reader, rebuild, writer
from storage.ec.layout import MIB
from storage.rawxclient import RawxClient, split_chunk_url

FS = 174844


def start_nodes(base, count):
    def one(i):
        path = base / f"n{i}"
        path.mkdir()
        return Node(path, workers=1).start()
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = start_nodes(tmp_path_factory.mktemp("ecfaults"), 10)
    yield nodes
    for node in nodes:
        node.kill()


@pytest.fixture
def fresh(tmp_path):
    """Ten nodes of the test's own, to kill."""
    nodes = start_nodes(tmp_path, 10)
    yield nodes
    for node in nodes:
        node.kill()


def url(node):
    return f"http://{node.host}"


def urls(nodes):
    return [url(n) for n in nodes]


def dead_url():
    """A URL nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def node_of(nodes, chunk_url):
    base = split_chunk_url(chunk_url)[0]
    return next(n for n in nodes if url(n) == base)


def data_of(size, seed):
    return hashlib.shake_256(b"%d" % seed).digest(size)


def order(nodes, content_id, number=0):
    return placement.rank(nodes, placement.metachunk_key(content_id, number))


def content_id_where(nodes, wanted):
    """The first deterministic content id whose rendezvous order (metachunk
    0) satisfies ``wanted(order)``."""
    for n in range(10000):
        cid = "%032X" % n
        if wanted(order(nodes, cid)):
            return cid
    raise AssertionError("no content id fits")


def committed(node):
    """Chunk files on a node's disk (not .pending ones)."""
    out = []
    for root, _dirs, names in os.walk(node.docroot):
        out += [os.path.join(root, n) for n in names if len(n) == 64]
    return sorted(out)


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x08]))


def holders(desc):
    return [[split_chunk_url(c["url"])[0] for c in mc["chunks"]] for mc in desc["metachunks"]]


# -- put -------------------------------------------------------------------------
def test_put_replaces_a_node_that_refuses(cluster):
    """One of the nine best nodes is down: its chunk goes to the tenth."""
    dead = dead_url()
    nodes = urls(cluster[:9]) + [dead]
    cid = content_id_where(nodes, lambda o: o.index(dead) == 3)
    data = data_of(2 * MIB + 99, 1)
    problems = []
    desc = writer.put(io.BytesIO(data), nodes, path="o", content_id=cid, problems=problems)
    [mine] = holders(desc)
    assert sorted(mine) == sorted(urls(cluster[:9]))
    assert mine[3] == order(nodes, cid)[9]
    assert len(problems) == 1 and f"{dead} failed" in problems[0] and "refused" in problems[0]
    assert reader.read_all(desc, verify=True) == data


def test_put_moves_a_chunk_whose_node_dies_mid_upload(fresh):
    """A node SIGKILLed while its chunk streams: the chunk is regenerated on
    the next node of the order from the other eight, nothing is left on
    the dead node, and the object reads back whole."""
    cid = "C0FFEE" * 5 + "00"
    best = order(urls(fresh), cid)
    victim = node_of(fresh, best[2] + "/x")
    data = data_of(5 * MIB + 123, 2)
    sent = []

    def progress(n):
        sent.append(n)
        if len(sent) == 4:      # 3 buffer sets in flight: every node has segment 0 by now
            victim.kill()
    problems = []
    desc = writer.put(io.BytesIO(data), urls(fresh), path="o", content_id=cid,
                      progress=progress, problems=problems)
    [mine] = holders(desc)
    assert mine == best[:2] + [best[9]] + best[3:9]
    assert committed(victim) == []
    assert any("failed after" in p for p in problems)
    assert any(p.startswith("chunk 0.2: regenerated on") for p in problems)
    with open(node_of(fresh, mine[2] + "/x").chunk_path(desc["metachunks"][0]["chunks"][2]["id"]),
              "rb") as f:
        assert hashlib.md5(f.read()).hexdigest().upper() == \
            desc["metachunks"][0]["chunks"][2]["hash"]
    assert reader.read_all(desc, verify=True) == data
    assert {r["state"] for r in rebuild.check(desc)} == {"ok"}


def test_put_moves_every_chunk_of_a_node_that_died(fresh):
    """The node dies in metachunk 1: its chunk of metachunk 0, stored
    before, is moved as well, so no chunk of the object is on it."""
    nodes = urls(fresh)
    cid = content_id_where(nodes, lambda o: True)
    both = [n for n in order(nodes, cid, 0)[:9] if n in order(nodes, cid, 1)[:9]]
    victim = node_of(fresh, both[0] + "/x")
    data = data_of(3 * MIB, 3)
    sent = []
    stored_first = []

    def progress(n):
        sent.append(n)
        if len(sent) == 2:          # metachunk 1's only segment is queued
            deadline = time.monotonic() + 30
            while not committed(victim) and time.monotonic() < deadline:
                time.sleep(0.01)    # its chunk of metachunk 0 is stored first
            stored_first.append(bool(committed(victim)))
            victim.kill()
    problems = []
    desc = writer.put(io.BytesIO(data), nodes, path="o", content_id=cid, chunk_size=100_000,
                      progress=progress, problems=problems)
    assert len(desc["metachunks"]) == 3
    assert all(url(victim) not in mc for mc in holders(desc))
    assert all(len(set(mc)) == 9 for mc in holders(desc))
    if stored_first == [True]:  # the usual case: moved after the fact
        assert any(p.startswith("chunk 0.") and "stored on" in p for p in problems)
    else:  # a host too loaded to store it within 30 s: cut mid-upload, regenerated
        assert any(p.startswith("chunk 0.") and "regenerated on" in p for p in problems)
    assert reader.read_all(desc, verify=True) == data


def test_put_fails_when_too_few_live_nodes_remain_and_leaves_nothing(fresh):
    """Two of ten nodes die during metachunk 1: eight remain, the put
    fails, and the live nodes keep no chunk of it."""
    nodes = urls(fresh)
    cid = content_id_where(nodes, lambda o: True)
    victims = [node_of(fresh, n + "/x") for n in order(nodes, cid, 1)[:2]]
    before = {n.docroot: committed(n) for n in fresh}
    sent = []

    def progress(n):
        sent.append(n)
        if len(sent) == 2:
            for v in victims:
                v.kill()
    with pytest.raises(writer.WriteError, match="8 live nodes remain, 9 distinct ones needed"):
        writer.put(io.BytesIO(data_of(4 * MIB, 4)), nodes, path="o", content_id=cid,
                   chunk_size=100_000, progress=progress)
    for node in fresh:
        if node not in victims:
            assert committed(node) == before[node.docroot]


class _Pipe(io.RawIOBase):
    """A stream that cannot seek, like stdin from a pipe."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, view):
        return self._data.readinto(view)


class _Shifty(io.BytesIO):
    """A seekable input whose first byte changes once it has all been read."""

    shifted = False

    def readinto(self, view):
        n = super().readinto(view)
        if self.tell() == len(self.getbuffer()) and not self.shifted:
            self.shifted = True
            self.getbuffer()[0] ^= 1
        return n


@pytest.fixture
def thirteen(tmp_path):
    nodes = start_nodes(tmp_path, 13)
    yield nodes
    for node in nodes:
        node.kill()


def _kill_four(nodes, cid):
    victims = [node_of(nodes, n + "/x") for n in order(urls(nodes), cid)[1:5]]
    sent = []

    def progress(n):
        sent.append(n)
        if len(sent) == 4:
            for v in victims:
                v.kill()
    return victims, progress


def test_put_sends_again_when_more_than_m_chunks_are_lost(thirteen):
    """Four of the nine die mid-upload, nine live nodes remain: the four
    chunks cannot be rebuilt from five, so the input is read again."""
    cid = "5EED" * 8
    victims, progress = _kill_four(thirteen, cid)
    data = data_of(5 * MIB + 1, 7)
    problems = []
    desc = writer.put(io.BytesIO(data), urls(thirteen), path="o", content_id=cid,
                      progress=progress, problems=problems)
    [mine] = holders(desc)
    assert len(set(mine)) == 9 and not set(mine) & set(urls(victims))
    assert sum("sent again to" in p for p in problems) == 4
    assert reader.read_all(desc, verify=True) == data
    assert {r["state"] for r in rebuild.check(desc)} == {"ok"}


def test_put_from_a_pipe_fails_when_more_than_m_chunks_are_lost(thirteen):
    cid = "5EED" * 8
    victims, progress = _kill_four(thirteen, cid)
    before = {n.docroot: committed(n) for n in thirteen}
    with pytest.raises(writer.WriteError, match="the input cannot be read again"):
        writer.put(_Pipe(data_of(5 * MIB + 1, 7)), urls(thirteen), path="o", content_id=cid,
                   progress=progress)
    for node in thirteen:
        if node not in victims:
            assert committed(node) == before[node.docroot]


def test_put_refuses_an_input_that_changed_when_read_again(thirteen):
    cid = "5EED" * 8
    victims, progress = _kill_four(thirteen, cid)
    before = {n.docroot: committed(n) for n in thirteen}
    with pytest.raises(writer.WriteError, match="the input changed while it was stored"):
        writer.put(_Shifty(data_of(5 * MIB + 1, 7)), urls(thirteen), path="o", content_id=cid,
                   progress=progress)
    for node in thirteen:
        if node not in victims:
            assert committed(node) == before[node.docroot]


# -- get and rebuild -------------------------------------------------------------------
def test_rebuild_skips_a_target_that_fails(cluster):
    dead = dead_url()
    nodes = urls(cluster) + [dead]
    cid = content_id_where(nodes, lambda o: o.index(dead) < o.index(url(cluster[9])))
    data = data_of(MIB + 5, 5)
    desc = writer.put(io.BytesIO(data), urls(cluster[:9]), path="o", content_id=cid)
    lost = description.chunk_of(desc["metachunks"][0], 5)
    node, old_id = split_chunk_url(lost["url"])
    assert RawxClient(node).delete(old_id) == 204
    spares = rebuild.spares(desc, 0, nodes)
    assert spares == [dead, url(cluster[9])]
    dead_nodes = {}
    chunk = rebuild.rebuild(desc, 0, 5, spares, dead=dead_nodes)
    assert split_chunk_url(chunk["url"])[0] == url(cluster[9])
    assert list(dead_nodes) == [dead] and "refused" in dead_nodes[dead]
    assert reader.read_all(desc, verify=True) == data
    with pytest.raises(rebuild.RebuildError, match="no target"):
        rebuild.rebuild(desc, 0, 5, [dead], dead=dead_nodes)


def test_rebuild_leaves_a_corrupt_survivor_out(cluster):
    """Rebuilding chunk 4 while chunk 0 has a flipped payload byte: chunk 0
    fails its hash check and is not used, so the result is right."""
    data = data_of(2 * MIB + 7, 6)
    desc = writer.put(io.BytesIO(data), urls(cluster[:9]), path="o")
    mc = desc["metachunks"][0]
    c0, c4 = description.chunk_of(mc, 0), description.chunk_of(mc, 4)
    flip(node_of(cluster, c0["url"]).chunk_path(c0["id"]), FS + 80 + 17)
    node, cid = split_chunk_url(c4["url"])
    assert RawxClient(node).delete(cid) == 204
    old_hash = c4["hash"]
    chunk = rebuild.rebuild(desc, 0, 4, url(cluster[9]))
    assert chunk["hash"] == old_hash
    problems = []
    assert reader.read_all(desc, verify=True, problems=problems) == data
    assert [p.split(" ")[1] for p in problems] == ["0.0"]


class _NoMoves:
    """A placement plan that must not be asked to move a chunk."""

    def replace(self, *args):
        raise AssertionError(f"chunk moved: {args}")

    def lose(self, *args):
        raise AssertionError(f"chunk lost: {args}")


class _Fragments:
    """What an uploader takes from the pool: views, and release()."""

    def __init__(self, data, count=9):
        self.views = [memoryview(data)] * count

    def release(self):
        pass


def test_uploader_starts_over_when_the_node_closed_its_kept_alive_connection(tmp_path):
    """A node may close an idle kept-alive connection (timeout, reload): the
    next PUT fails at its first bytes. That is no reason to give the node
    up: the uploader starts over on a fresh connection."""
    (tmp_path / "n").mkdir()
    node = Node(tmp_path / "n", workers=1, timeout_idle=1).start()
    try:
        desc = {"storage_policy": "EC6+3", "chunk_method": "ec/algo=liberasurecode_rs_vand,k=6,"
                "m=3", "full_path": "a/c/o/1/" + "AB" * 16, "account": "a", "container": "c",
                "path": "o", "version": 1, "content_id": "AB" * 16}
        stored, problems = [], []
        up = writer._Uploader(0, 10, _NoMoves(), stored, problems)
        up.start()
        data = b"x" * 1000
        for number in (0, 1):
            cid = description.new_chunk_id()
            chunk = {"pos": f"{number}.0", "id": cid, "url": f"{url(node)}/{cid}"}
            up.inbox.put(("begin", number, chunk, description.chunk_headers(desc, chunk["pos"],
                                                                            cid)))
            up.inbox.put(("data", _Fragments(data), len(data)))
            up.inbox.put(("end", number, description.metachunk_trailers(1000, "0" * 32)))
            deadline = time.monotonic() + 10
            while number not in up.done and up.error is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert up.error is None and up.done[number][1] == len(data)
            if number == 0:
                time.sleep(2)       # the node closes the idle connection after 1 s
        up.inbox.put(("stop",))
        up.join(10)
        assert len(stored) == 2 and problems == []
        assert len(committed(node)) == 2
    finally:
        node.kill()


def test_rebuild_moves_on_when_its_target_dies_mid_stream(thirteen):
    """The best spare is SIGKILLed while the rebuilt chunk streams to it:
    the chunk is streamed again, from the start, to the next spare."""
    nodes = urls(thirteen)
    data = data_of(4 * MIB + 3, 8)
    desc = writer.put(io.BytesIO(data), nodes, path="o", content_id="BEEF" * 8)
    lost = description.chunk_of(desc["metachunks"][0], 7)
    old_hash = lost["hash"]
    node, old_id = split_chunk_url(lost["url"])
    assert RawxClient(node).delete(old_id) == 204
    spares = rebuild.spares(desc, 0, nodes)
    assert len(spares) == 4
    victim = node_of(thirteen, spares[0] + "/x")
    sent = []

    def progress(n):
        sent.append(n)
        if len(sent) == 1:
            victim.kill()
    dead = {}
    chunk = rebuild.rebuild(desc, 0, 7, spares, dead=dead, progress=progress)
    assert list(dead) == [spares[0]]
    assert split_chunk_url(chunk["url"])[0] == spares[1] and chunk["hash"] == old_hash
    assert len(sent) >= 1 + 5           # streamed again from the start
    assert committed(victim) == []
    assert reader.read_all(desc, verify=True) == data
