"""storage.cli.ec: the ``ec`` sub-commands, in process and as a command."""
import argparse
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from nodeutil import Node
from storage.cli import ec as ec_cli
from storage.rawxclient import RawxClient, split_chunk_url

MIB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("eccli")

    def one(i):
        (base / f"n{i}").mkdir()
        return Node(base / f"n{i}", workers=1).start()
    with ThreadPoolExecutor(10) as pool:
        nodes = list(pool.map(one, range(10)))
    yield nodes
    for node in nodes:
        node.kill()


@pytest.fixture
def nodes_file(cluster, tmp_path):
    path = tmp_path / "nodes.txt"
    lines = ["# the RAWX nodes"] + [f"http://{n.host}/" for n in cluster] + [cluster[0].host]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(capsys, *argv):
    status = ec_cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_parse_size():
    assert ec_cli.parse_size("1048576") == MIB
    assert ec_cli.parse_size("100M") == 100 * MIB
    assert ec_cli.parse_size("64MiB") == 64 * MIB
    assert ec_cli.parse_size("2k") == 2048
    with pytest.raises(argparse.ArgumentTypeError):
        ec_cli.parse_size("ten")


def test_put_get_check_rebuild(cluster, nodes_file, tmp_path, capsys):
    data = random.Random(1).randbytes(2 * MIB + 333)
    src = tmp_path / "input.bin"
    src.write_bytes(data)
    status, out, err = run(capsys, "put", str(src), "--nodes-file", nodes_file,
                           "--chunk-size", "1M")
    assert status == 0, err
    assert "\r" not in err                     # no progress bar: stderr is not a TTY
    desc = json.loads(out)
    assert desc["size"] == len(data) and desc["path"] == "input.bin"
    mc = desc["metachunks"][0]
    assert [c["pos"] for c in mc["chunks"]] == [f"0.{i}" for i in range(9)]
    assert all(set(c) >= {"url", "id", "pos", "size", "hash"} for c in mc["chunks"])
    dpath = tmp_path / "desc.json"
    dpath.write_text(out)

    got = tmp_path / "out.bin"
    assert run(capsys, "get", str(dpath), "-o", str(got))[0] == 0
    assert got.read_bytes() == data
    assert run(capsys, "get", str(dpath), "-o", str(got), "--range", "1048570-1048590")[0] == 0
    assert got.read_bytes() == data[1048570:1048591]
    assert run(capsys, "get", str(dpath), "-o", str(got), "--range", "-7")[0] == 0
    assert got.read_bytes() == data[-7:]
    status, _, err = run(capsys, "get", str(dpath), "-o", str(got), "--range", "5-2")
    assert status == 2 and "not satisfiable" in err

    status, out, _ = run(capsys, "check", str(dpath))
    assert status == 0 and json.loads(out)["ok"] == 9

    lost = mc["chunks"][2]
    node, cid = split_chunk_url(lost["url"])
    assert RawxClient(node).delete(cid) == 204
    status, out, _ = run(capsys, "check", str(dpath))
    report = json.loads(out)
    assert status == 1 and report["readable"]
    assert [(b["pos"], b["state"]) for b in report["bad"]] == [("0.2", "missing")]

    status, out, err = run(capsys, "rebuild", str(dpath), "--nodes-file", nodes_file)
    assert status == 0, err
    assert "rebuilt 0.2" in err and out == ""
    new = json.loads(dpath.read_text())        # updated in place
    new_chunk = new["metachunks"][0]["chunks"][2]
    assert new_chunk["hash"] == lost["hash"] and new_chunk["id"] != lost["id"]
    used = {split_chunk_url(c["url"])[0] for c in mc["chunks"]}
    assert split_chunk_url(new_chunk["url"])[0] not in used
    assert run(capsys, "check", str(dpath))[0] == 0
    assert run(capsys, "get", str(dpath), "-o", str(got))[0] == 0
    assert got.read_bytes() == data

    # Four chunks gone: get fails and leaves no output file.
    for c in new["metachunks"][0]["chunks"][:4]:
        node, cid = split_chunk_url(c["url"])
        assert RawxClient(node).delete(cid) == 204
    got.unlink()
    status, _, err = run(capsys, "get", str(dpath), "-o", str(got))
    assert status == 1 and "only 5 usable chunks" in err
    assert not got.exists()


def test_usage_errors(cluster, tmp_path, capsys):
    src = tmp_path / "in"
    src.write_bytes(b"x")
    status, _, err = run(capsys, "put", str(src), "--nodes",
                         ",".join(f"http://{n.host}" for n in cluster[:8]))
    assert status == 2 and "at least 9 distinct nodes" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nope"}')
    status, _, err = run(capsys, "get", str(bad))
    assert status == 2 and "format" in err
    status, _, err = run(capsys, "put", str(tmp_path / "missing"), "--nodes", "a,b")
    assert status == 2


def test_rebuild_to_named_node_and_progress(cluster, tmp_path, capsys):
    src = tmp_path / "in"
    src.write_bytes(os.urandom(MIB + 1))
    nodes = ",".join(f"http://{n.host}" for n in cluster)
    status, out, err = run(capsys, "put", str(src), "--nodes", nodes, "--progress")
    assert status == 0
    assert "\rput [" in err and "MiB/s" in err
    dpath = tmp_path / "d.json"
    dpath.write_text(out)
    desc = json.loads(out)
    holders = {split_chunk_url(c["url"])[0] for c in desc["metachunks"][0]["chunks"]}
    spare = next(f"http://{n.host}" for n in cluster if f"http://{n.host}" not in holders)
    status, out, err = run(capsys, "rebuild", str(dpath), "--pos", "0.8", "--to", spare,
                           "--same-id", "-o", str(dpath))
    assert status == 0, err
    new = json.loads(dpath.read_text())
    chunk = new["metachunks"][0]["chunks"][8]
    assert chunk["url"] == f"{spare}/{desc['metachunks'][0]['chunks'][8]['id']}"
    status, _, err = run(capsys, "rebuild", str(dpath), "--pos", "0.1", "--pos", "0.2",
                         "--to", spare)
    assert status == 2


def test_as_a_command_with_stdin(cluster, tmp_path):
    """The module's main() as a process: put from stdin, get to stdout."""
    data = random.Random(2).randbytes(300_000)
    code = "import sys; from storage.cli.ec import main; sys.exit(main())"
    nodes = ",".join(f"http://{n.host}" for n in cluster)
    put = subprocess.run([sys.executable, "-c", code, "put", "-", "--nodes", nodes,
                          "--path", "from-stdin"], input=data, capture_output=True, timeout=60)
    assert put.returncode == 0, put.stderr
    desc = json.loads(put.stdout)
    assert desc["path"] == "from-stdin" and desc["size"] == len(data)
    get = subprocess.run([sys.executable, "-c", code, "get", "-"], input=put.stdout,
                         capture_output=True, timeout=60)
    assert get.returncode == 0, get.stderr
    assert get.stdout == data


def test_add_subparser_registers_ec():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    ec_cli.add_subparser(sub)
    args = parser.parse_args(["ec", "check", "d.json"])
    assert args.func is ec_cli.cmd_check and args.description == "d.json"
    args = parser.parse_args(["ec", "put", "f", "--nodes", "a,b", "--nodes", "c",
                              "--chunk-size", "10M", "--no-progress"])
    assert args.func is ec_cli.cmd_put and args.chunk_size == 10 * MIB
    assert args.progress is False and ec_cli.read_nodes(args) == \
        ["http://a", "http://b", "http://c"]


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def _node_of(cluster, chunk_url):
    base = split_chunk_url(chunk_url)[0]
    return next(n for n in cluster if f"http://{n.host}" == base)


def test_get_leaves_a_corrupt_chunk_out(cluster, nodes_file, tmp_path, capsys):
    """One flipped byte in one chunk file: get decodes from the others, names
    the chunk, exits 0; --no-verify returns the corrupt bytes, as its help says."""
    data = random.Random(3).randbytes(3 * MIB + 10)
    src = tmp_path / "in"
    src.write_bytes(data)
    dpath = tmp_path / "d.json"
    assert run(capsys, "put", str(src), "--nodes-file", nodes_file, "-o", str(dpath))[0] == 0
    desc = json.loads(dpath.read_text())
    bad = desc["metachunks"][0]["chunks"][1]
    _flip(_node_of(cluster, bad["url"]).chunk_path(bad["id"]), 174844 + 80 + 12345)
    got = tmp_path / "out"
    status, _, err = run(capsys, "get", str(dpath), "-o", str(got))
    assert status == 0, err
    assert got.read_bytes() == data
    assert f"left out chunk 0.1 ({bad['url']})" in err and "corrupt" in err
    status, _, err = run(capsys, "get", str(dpath), "-o", str(got), "--no-verify")
    assert status == 0 and err == ""
    wrong = got.read_bytes()
    assert wrong != data and len(wrong) == len(data)
    assert sum(a != b for a, b in zip(wrong, data)) == 1
    help_text = ec_cli_help("get")
    assert "--no-verify trusts the chunks" in help_text
    assert "returned as they are, with exit status 0" in help_text


def ec_cli_help(command):
    parser = argparse.ArgumentParser(prog="storage-node")
    ec = ec_cli.add_subparser(parser.add_subparsers(dest="command"))
    sub = next(a for a in ec._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices[command].format_help().split())


def _dead_url():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _chunk_files(cluster):
    out = set()
    for node in cluster:
        for root, _dirs, names in os.walk(node.docroot):
            out |= {os.path.join(root, n) for n in names if len(n) == 64}
    return out


def _put(cluster, tmp_path, data, **kw):
    """A description file for data stored on the first 9 nodes."""
    from storage.ec import description, writer
    import io
    desc = writer.put(io.BytesIO(data), [f"http://{n.host}" for n in cluster[:9]], path="o",
                      **kw)
    dpath = tmp_path / "o.json"
    dpath.write_text(description.dumps(desc))
    return desc, dpath


def test_put_with_a_listed_node_down(cluster, tmp_path, capsys):
    data = random.Random(4).randbytes(MIB + 1)
    src = tmp_path / "in"
    src.write_bytes(data)
    dead = _dead_url()
    nodes = ",".join([f"http://{n.host}" for n in cluster] + [dead])
    for _ in range(3):      # the dead node is among the 9 chosen 9 times in 11
        status, out, err = run(capsys, "put", str(src), "--nodes", nodes)
        assert status == 0, err
        desc = json.loads(out)
        assert all(not c["url"].startswith(dead) for c in desc["metachunks"][0]["chunks"])
        if err:
            assert f"{dead} failed" in err and "sent to" in err


def test_rebuild_skips_a_dead_spare_and_updates_the_description(cluster, tmp_path, capsys):
    """The README's case: the best spare is down. The chunk goes to the next
    one and the description file is updated in place."""
    from storage.ec import placement
    dead = _dead_url()
    all_nodes = [f"http://{n.host}" for n in cluster] + [dead]
    cid = next("%032X" % i for i in range(1000)
               if placement.rank(all_nodes, f"{'%032X' % i}/0").index(dead)
               < placement.rank(all_nodes, f"{'%032X' % i}/0").index(all_nodes[9]))
    data = random.Random(5).randbytes(MIB + 10)
    desc, dpath = _put(cluster, tmp_path, data, content_id=cid)
    lost = desc["metachunks"][0]["chunks"][6]
    node, lost_id = split_chunk_url(lost["url"])
    assert RawxClient(node).delete(lost_id) == 204
    nodes_file = tmp_path / "nodes.txt"
    nodes_file.write_text("\n".join(all_nodes) + "\n")
    status, out, err = run(capsys, "rebuild", str(dpath), "--nodes-file", str(nodes_file))
    assert status == 0, err
    assert out == "" and f"target {dead} skipped" in err and "rebuilt 0.6" in err
    new = json.loads(dpath.read_text())["metachunks"][0]["chunks"][6]
    assert split_chunk_url(new["url"])[0] == all_nodes[9] and new["hash"] == lost["hash"]
    got = tmp_path / "got"
    assert run(capsys, "get", str(dpath), "-o", str(got))[0] == 0
    assert got.read_bytes() == data


def test_rebuild_resumes_and_orphans_nothing(cluster, tmp_path, capsys):
    """Metachunk 0 can be rebuilt, metachunk 1 cannot (4 chunks lost): the
    run fails but the description already names the rebuilt chunk, so a
    re-run rebuilds nothing twice and no chunk is left unreferenced."""
    data = random.Random(6).randbytes(MIB + MIB // 2)
    desc, dpath = _put(cluster, tmp_path, data, chunk_size=100_000)
    gone = [desc["metachunks"][0]["chunks"][1]] + desc["metachunks"][1]["chunks"][:4]
    for c in gone:
        node, cid = split_chunk_url(c["url"])
        assert RawxClient(node).delete(cid) == 204
    nodes = ",".join(f"http://{n.host}" for n in cluster)
    files = _chunk_files(cluster)
    status, _, err = run(capsys, "rebuild", str(dpath), "--nodes", nodes)
    assert status == 1 and "rebuilt 0.1" in err and "rebuild of 1.0 failed" in err
    first = json.loads(dpath.read_text())
    assert first["metachunks"][0]["chunks"][1]["url"] != gone[0]["url"]
    new_files = _chunk_files(cluster) - files
    assert len(new_files) == 1
    status, _, err = run(capsys, "rebuild", str(dpath), "--nodes", nodes)
    assert status == 1 and "rebuilt 0.1" not in err
    assert _chunk_files(cluster) - files == new_files
    assert json.loads(dpath.read_text()) == first
    assert not list(tmp_path.glob(".ec-desc-*"))        # written by rename, nothing left
    got = tmp_path / "got"
    assert run(capsys, "get", str(dpath), "-o", str(got), "--range", "0-1048575")[0] == 0
    assert got.read_bytes() == data[:MIB]


def test_rebuild_moves_a_corrupt_chunk_and_removes_the_bad_copy(cluster, tmp_path, capsys):
    data = random.Random(7).randbytes(2 * MIB + 3)
    desc, dpath = _put(cluster, tmp_path, data)
    bad = desc["metachunks"][0]["chunks"][4]
    bad_file = _node_of(cluster, bad["url"]).chunk_path(bad["id"])
    _flip(bad_file, 174844 + 80 + 99)
    new_desc = tmp_path / "new.json"
    status, _, err = run(capsys, "rebuild", str(dpath), "--nodes",
                         ",".join(f"http://{n.host}" for n in cluster), "-o", str(new_desc))
    assert status == 0, err
    assert f"removed the old copy {bad['url']}" in err
    assert not os.path.exists(bad_file)
    assert json.loads(dpath.read_text()) == desc            # -o: the input is left as is
    new = json.loads(new_desc.read_text())["metachunks"][0]["chunks"][4]
    assert split_chunk_url(new["url"])[0] == f"http://{cluster[9].host}"
    status, out, _ = run(capsys, "check", str(new_desc))
    assert status == 0 and json.loads(out)["ok"] == 9
    got = tmp_path / "got"
    status, _, err = run(capsys, "get", str(new_desc), "-o", str(got))
    assert status == 0 and err == "" and got.read_bytes() == data


def test_rebuild_with_no_spare_says_so(cluster, tmp_path, capsys):
    desc, dpath = _put(cluster, tmp_path, b"abc" * 1000)
    c = desc["metachunks"][0]["chunks"][0]
    node, cid = split_chunk_url(c["url"])
    assert RawxClient(node).delete(cid) == 204
    status, _, err = run(capsys, "rebuild", str(dpath), "--nodes",
                         ",".join(f"http://{n.host}" for n in cluster[:9]))
    assert status == 1 and "no spare" in err and "list more nodes" in err
    assert json.loads(dpath.read_text()) == desc


def test_rebuild_moves_healthy_chunks_with_pos(cluster, tmp_path, capsys):
    """--pos on good chunks moves them: each is read from all the others
    (the other positions asked for are not known bad), and the node a moved
    chunk leaves becomes the spare of the next one."""
    data = random.Random(8).randbytes(MIB + 5)
    desc, dpath = _put(cluster, tmp_path, data)
    argv = ["rebuild", str(dpath), "--nodes", ",".join(f"http://{n.host}" for n in cluster)]
    for i in range(4):
        argv += ["--pos", f"0.{i}"]
    status, _, err = run(capsys, *argv, "--pos", "0.0")
    assert status == 0, err
    assert err.count("removed the old copy") == 4
    moved = json.loads(dpath.read_text())["metachunks"][0]["chunks"]
    assert len({split_chunk_url(c["url"])[0] for c in moved}) == 9
    assert [c["hash"] for c in moved] == [c["hash"] for c in desc["metachunks"][0]["chunks"]]
    got = tmp_path / "got"
    assert run(capsys, "get", str(dpath), "-o", str(got))[0] == 0
    assert got.read_bytes() == data
