"""EC objects on real nodes: storage.ec.writer, reader and rebuild together
(put, ranged get, lost/corrupt chunks, rebuild, check, pyeclib interop)."""
import hashlib
import io
import json
import os
import random
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from paths import EC_VECTORS, ec_vector_input
from pyeclib.ec_iface import ECDriver as PyECDriver

from nodeutil import Node
from storage.ec import description, reader, rebuild, writer
from storage.ec.layout import MIB, Layout
from storage.rawxclient import RawxClient, split_chunk_url

VECTORS = str(EC_VECTORS)
FS = 174844
LAYOUT = Layout()


def start_nodes(base, count, prefix="n"):
    def one(i):
        path = base / f"{prefix}{i}"
        path.mkdir()
        return Node(path, workers=1).start()
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = start_nodes(tmp_path_factory.mktemp("ec"), 11)
    yield nodes
    for node in nodes:
        node.kill()


def url(node):
    return f"http://{node.host}"


def urls(nodes):
    return [url(n) for n in nodes]


def node_of(nodes, chunk_url):
    base = split_chunk_url(chunk_url)[0]
    return next(n for n in nodes if url(n) == base)


def chunk_file(nodes, chunk):
    return node_of(nodes, chunk["url"]).chunk_path(chunk["id"])


def data_of(size, seed=0):
    return random.Random(seed).randbytes(size)


def put(nodes, data, **kw):
    kw.setdefault("path", "obj")
    desc = writer.put(io.BytesIO(data), urls(nodes), **kw)
    description.check(json.loads(description.dumps(desc)))     # survives JSON, consistent
    return desc


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def random_ranges(size, count, seed):
    rng = random.Random(seed)
    out = [(0, size - 1), (size - 1, size - 1), (0, 0)]
    for _ in range(count):
        s = rng.randrange(size)
        out.append((s, rng.randrange(s, size)))
    return out


@pytest.mark.parametrize("size", [0, 1, MIB - 1, MIB, 3 * MIB + MIB // 2])
def test_put_get(cluster, size):
    data = data_of(size, size)
    desc = put(cluster, data)
    assert desc["size"] == size
    assert desc["md5"] == hashlib.md5(data).hexdigest().upper()
    assert (desc["k"], desc["m"], desc["segment_size"]) == (6, 3, MIB)
    assert desc["chunk_method"] == "ec/algo=liberasurecode_rs_vand,k=6,m=3"
    [mc] = desc["metachunks"]
    assert mc["size"] == size and mc["hash"] == desc["md5"]
    assert len({split_chunk_url(c["url"])[0] for c in mc["chunks"]}) == 9
    for c in mc["chunks"]:
        assert c["pos"] == f"0.{c['index']}"
        assert c["size"] == LAYOUT.chunk_size(size) == os.path.getsize(chunk_file(cluster, c))
        with open(chunk_file(cluster, c), "rb") as f:
            assert hashlib.md5(f.read()).hexdigest().upper() == c["hash"]
    assert reader.read_all(desc, verify=True) == data
    if size:
        for s, e in random_ranges(size, 6, size):
            assert reader.read_all(desc, s, e) == data[s:e + 1], (s, e)
        assert reader.read_all(desc, size - 1, size + 100) == data[-1:]
        with pytest.raises(ValueError):
            reader.read_all(desc, size)


def test_several_metachunks(cluster):
    """chunk_size below 1 MiB / 6 gives 1 MiB metachunks: 2.5 MiB -> 3."""
    data = data_of(2 * MIB + MIB // 2, 11)
    desc = put(cluster, data, chunk_size=100_000)
    assert desc["metachunk_limit"] == MIB
    assert [(m["offset"], m["size"]) for m in desc["metachunks"]] == \
        [(0, MIB), (MIB, MIB), (2 * MIB, MIB // 2)]
    ids = [c["id"] for m in desc["metachunks"] for c in m["chunks"]]
    assert len(set(ids)) == 27
    for mc in desc["metachunks"]:
        assert mc["hash"] == hashlib.md5(data[mc["offset"]:mc["offset"] + mc["size"]]) \
            .hexdigest().upper()
        assert all(c["pos"] == f"{mc['pos']}.{c['index']}" for c in mc["chunks"])
    assert reader.read_all(desc, verify=True) == data
    for s, e in random_ranges(len(data), 6, 5) + [(MIB - 3, MIB + 3), (MIB - 1, 2 * MIB)]:
        assert reader.read_all(desc, s, e) == data[s:e + 1], (s, e)


def test_exact_multiple_of_the_metachunk_size(cluster, tmp_path):
    """No empty trailing metachunk, whether the size is known or not."""
    data = data_of(2 * MIB, 13)
    desc = put(cluster, data, chunk_size=100_000)
    assert [m["size"] for m in desc["metachunks"]] == [MIB, MIB]
    src = tmp_path / "in"
    src.write_bytes(data[:MIB])
    with open(src, "rb") as f:
        desc = writer.put(f, urls(cluster), path="f", chunk_size=100_000)
    assert [m["size"] for m in desc["metachunks"]] == [MIB]
    assert desc["md5"] == hashlib.md5(data[:MIB]).hexdigest().upper()
    assert reader.read_all(desc, verify=True) == data[:MIB]


def test_chunk_metadata(cluster):
    """The chunk headers OpenIO's client sends, as the node stored them."""
    data = data_of(MIB + 100, 1)
    desc = put(cluster, data, account="my acct", container="c", path="dir/o bj", version=42)
    mc = desc["metachunks"][0]
    c = description.chunk_of(mc, 7)
    node = node_of(cluster, c["url"])
    status, headers, _ = node.request("HEAD", "/" + c["id"])
    assert status == 200
    meta = {k[len("x-oio-chunk-meta-"):]: v for k, v in headers.items()
            if k.startswith("x-oio-chunk-meta-")}
    assert meta["chunk-pos"] == "0.7"
    assert meta["chunk-id"] == c["id"]
    assert meta["chunk-size"] == str(c["size"]) == str(LAYOUT.chunk_size(MIB + 100))
    assert meta["chunk-hash"] == c["hash"]
    assert meta["metachunk-size"] == str(MIB + 100)
    assert meta["metachunk-hash"] == mc["hash"]
    assert meta["content-chunk-method"] == "ec/algo=liberasurecode_rs_vand,k=6,m=3,cca=md5"
    assert meta["content-storage-policy"] == "EC6+3"
    assert meta["full-path"] == f"my%20acct/c/dir%2Fo%20bj/42/{desc['content_id']}"
    assert meta["content-version"] == "42"
    assert meta["content-id"] == desc["content_id"]
    assert meta["container-id"] == hashlib.sha256(b"my acct\0c").hexdigest().upper()


def test_vector_chunks_identical(cluster):
    """Our writer lays out the vectors' metachunk exactly as pyeclib did."""
    with open(os.path.join(VECTORS, "manifest.json")) as f:
        meta = json.load(f)["metachunk"]
    data = ec_vector_input(meta)
    desc = put(cluster, data)
    assert desc["md5"] == meta["input_md5"].upper()
    for entry in meta["chunks"]:
        c = description.chunk_of(desc["metachunks"][0], int(entry["pos"].split(".")[1]))
        assert c["hash"] == entry["md5"].upper()
        with open(chunk_file(cluster, c), "rb") as ours, \
                open(os.path.join(VECTORS, entry["file"]), "rb") as ref:
            assert ours.read() == ref.read()


def test_pyeclib_decodes_our_chunks(cluster):
    data = data_of(3 * MIB + 777, 2)
    desc = put(cluster, data, chksum_type="inline_crc32")
    chunks = []
    for c in sorted(desc["metachunks"][0]["chunks"], key=lambda c: c["index"]):
        with open(chunk_file(cluster, c), "rb") as f:
            chunks.append(f.read())
    driver = PyECDriver(k=6, m=3, ec_type="liberasurecode_rs_vand")
    out = []
    for j in range(LAYOUT.segment_count(len(data))):
        off, size = LAYOUT.fragment_span(len(data), j)
        frags = [chunks[i][off:off + size] for i in (1, 3, 5, 6, 7, 8)]   # 0, 2, 4 lost
        out.append(driver.decode(frags))
    assert b"".join(out) == data


def test_corrupt_header_detected(cluster):
    """checksum none: a flipped header byte fails the metadata checksum."""
    data = data_of(3 * MIB + 5, 3)
    desc = put(cluster, data)
    mc = desc["metachunks"][0]
    flip(chunk_file(cluster, description.chunk_of(mc, 1)), FS + 13)      # segment 1, orig size
    flip(chunk_file(cluster, description.chunk_of(mc, 4)), 2 * FS + 61)  # segment 2, magic
    source = reader.FragmentSource(mc, LAYOUT, 0, 3)
    try:
        for j in range(4):
            assert sorted(source.fragments(j)) == ([0, 1, 2, 3, 4, 5] if j < 1 else
                                                   [0, 2, 3, 4, 5, 6] if j < 2 else
                                                   [0, 2, 3, 5, 6, 7])
    finally:
        source.close()
    assert "metadata checksum" in source.bad[1] and "magic" in source.bad[4]
    assert reader.read_all(desc, verify=True) == data
    assert reader.read_all(desc, MIB + 10, 2 * MIB + 10) == data[MIB + 10:2 * MIB + 11]
    states = {r["pos"]: r["state"] for r in rebuild.check(desc)}
    assert states.pop("0.1") == states.pop("0.4") == "corrupt"
    assert set(states.values()) == {"ok"}


def test_corrupt_payload_crc32_detected(cluster):
    data = data_of(2 * MIB + 99, 4)
    desc = put(cluster, data, chksum_type="inline_crc32")
    mc = desc["metachunks"][0]
    flip(chunk_file(cluster, description.chunk_of(mc, 0)), FS + 80 + 1000)   # payload byte
    flip(chunk_file(cluster, description.chunk_of(mc, 5)), 2 * FS + 80 + 3)
    source = reader.FragmentSource(mc, LAYOUT, 0, 2)
    try:
        for j in range(3):
            source.fragments(j)
    finally:
        source.close()
    assert sorted(source.bad) == [0, 5]
    assert all("CRC32" in p for p in source.problems)
    assert reader.read_all(desc) == data
    assert reader.read_all(desc, MIB, MIB + 5000) == data[MIB:MIB + 5001]


def test_corrupt_payload_without_checksum_left_out_by_verify(cluster):
    """checksum none: a payload flip is invisible in the fragment; verify
    checks each chunk against its hash first, leaves the bad one out and
    names it; check() names it too."""
    data = data_of(2 * MIB + 5, 5)
    desc = put(cluster, data)
    mc = desc["metachunks"][0]
    flip(chunk_file(cluster, description.chunk_of(mc, 2)), FS + 80 + 5)    # segment 1
    problems = []
    assert reader.read_all(desc, verify=True, problems=problems) == data
    assert len(problems) == 1 and problems[0].startswith("chunk 0.2 (")
    assert "corrupt" in problems[0]
    at = MIB + 2 * (FS - 80) + 5        # the flipped byte in the object
    problems = []
    assert reader.read_all(desc, at - 3, at + 3, verify=True, problems=problems) == \
        data[at - 3:at + 4]
    assert len(problems) == 1 and "0.2" in problems[0]
    assert reader.read_all(desc, at - 3, at + 3) != data[at - 3:at + 4]    # trusted: wrong
    bad = [r for r in rebuild.check(desc) if r["state"] != "ok"]
    assert [(r["pos"], r["state"]) for r in bad] == [("0.2", "corrupt")]


def test_verify_reads_while_k_chunks_are_good(cluster):
    """Three corrupt chunks (data and parity) and the object still reads;
    a fourth leaves fewer than k good chunks: an error naming them all."""
    data = data_of(MIB + 77, 14)
    desc = put(cluster, data)
    mc = desc["metachunks"][0]
    for i in (0, 4, 7):
        flip(chunk_file(cluster, description.chunk_of(mc, i)), 80 + 1000 * i)
    problems = []
    assert reader.read_all(desc, verify=True, problems=problems) == data
    assert sorted(p.split(" ")[1] for p in problems) == ["0.0", "0.4", "0.7"]
    flip(chunk_file(cluster, description.chunk_of(mc, 8)), FS + 83)
    with pytest.raises(reader.ECReadError, match="only 5 usable chunks") as err:
        reader.read_all(desc, verify=True)
    assert all(f"chunk 0.{i}" in str(err.value) for i in (0, 4, 7, 8))


def test_missing_chunks(cluster):
    """Up to 3 missing chunks (404) read fine; a 4th is a clear error."""
    data = data_of(MIB // 2, 6)
    desc = put(cluster, data)
    chunks = desc["metachunks"][0]["chunks"]
    for n, c in enumerate(chunks[2:6]):
        node, cid = split_chunk_url(c["url"])
        assert RawxClient(node).delete(cid) == 204
        if n < 3:
            assert reader.read_all(desc, verify=True) == data
    with pytest.raises(reader.ECReadError, match="only 5 usable chunks of 9, need 6") as err:
        reader.read_all(desc)
    assert "missing (404)" in str(err.value)
    states = [r["state"] for r in rebuild.check(desc)]
    assert states.count("missing") == 4 and states.count("ok") == 5


def test_range_touches_only_its_segments(cluster):
    """Segment 0 is unreadable in 4 chunks: the whole object cannot be read,
    but a range in segments 1-2 never looks at segment 0's fragments."""
    data = data_of(3 * MIB + 10, 12)
    desc = put(cluster, data)
    mc = desc["metachunks"][0]
    for i in (0, 1, 6, 7):
        flip(chunk_file(cluster, description.chunk_of(mc, i)), 70)     # segment 0 header
    with pytest.raises(reader.ECReadError, match="segment 0"):
        reader.read_all(desc)
    assert reader.read_all(desc, MIB, 3 * MIB - 1) == data[MIB:3 * MIB]
    assert reader.read_all(desc, 3 * MIB + 2, 3 * MIB + 5) == data[3 * MIB + 2:3 * MIB + 6]


def test_put_fails_cleanly_with_a_dead_node(cluster):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"

    def files():
        return sorted(p for n in cluster for p in _chunk_files(n))
    before = files()
    with pytest.raises(writer.WriteError, match="8 live nodes remain, 9 distinct ones needed"):
        writer.put(io.BytesIO(data_of(2 * MIB, 7)), urls(cluster[:8]) + [dead], path="x")
    assert files() == before


def _chunk_files(node):
    for root, _dirs, names in os.walk(node.docroot):
        if "orphans" in root or "non_optimal" in root:
            continue
        for name in names:
            if len(name) == 64:
                yield os.path.join(root, name)


def test_rebuild_refuses_a_wrong_result(cluster):
    data = data_of(MIB + 3, 8)
    desc = put(cluster, data)
    mc = desc["metachunks"][0]
    c = description.chunk_of(mc, 3)
    c["hash"] = "0" * 32
    target = rebuild.spare_node(desc, 0, urls(cluster))
    before = sorted(_chunk_files(node_of(cluster, target + "/x")))
    with pytest.raises(rebuild.RebuildError, match="description says"):
        rebuild.rebuild(desc, 0, 3, target)
    assert sorted(_chunk_files(node_of(cluster, target + "/x"))) == before


def test_kill_three_get_rebuild(tmp_path):
    """The issue's scenario: put on 9 nodes, kill 3, get, rebuild one onto a
    fresh node, byte-compare."""
    nodes = start_nodes(tmp_path, 10)
    try:
        data = data_of(3 * MIB + 12345, 9)
        desc = put(nodes[:9], data)
        mc = desc["metachunks"][0]
        lost = [description.chunk_of(mc, i) for i in (0, 4, 7)]
        originals = {}
        for c in lost:
            with open(chunk_file(nodes, c), "rb") as f:
                originals[c["index"]] = f.read()
            node_of(nodes, c["url"]).kill()
        assert reader.read_all(desc, verify=True) == data
        for s, e in random_ranges(len(data), 4, 9):
            assert reader.read_all(desc, s, e) == data[s:e + 1]
        states = [r["state"] for r in rebuild.check(desc)]
        assert states.count("unreachable") == 3
        spare = rebuild.spare_node(desc, 0, urls(nodes))
        assert spare == url(nodes[9])
        old_id = lost[1]["id"]
        new = rebuild.rebuild(desc, 0, 4, spare)
        assert new["id"] != old_id and new["url"] == f"{spare}/{new['id']}"
        assert description.chunk_of(desc["metachunks"][0], 4) is new
        with open(nodes[9].chunk_path(new["id"]), "rb") as f:
            assert f.read() == originals[4]
        # A parity chunk, keeping its id, onto a named node.
        target = url(nodes[9])
        again = rebuild.rebuild(desc, 0, 7, target, same_id=True)
        assert again["id"] == lost[2]["id"]
        with open(nodes[9].chunk_path(again["id"]), "rb") as f:
            assert f.read() == originals[7]
        description.check(desc)
        states = [r["state"] for r in rebuild.check(desc)]
        assert states.count("ok") == 8 and states.count("unreachable") == 1
        assert reader.read_all(desc, verify=True) == data
    finally:
        for node in nodes:
            node.kill()
