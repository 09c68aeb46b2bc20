"""storage.ec_cli: the ``ec`` sub-commands, in process and as a command."""
import argparse
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from nodeutil import Node
from storage import ec_cli
from storage.ec.rawxclient import RawxClient, split_chunk_url

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
    assert "rebuilt 0.2" in err
    new = json.loads(out)
    new_chunk = new["metachunks"][0]["chunks"][2]
    assert new_chunk["hash"] == lost["hash"] and new_chunk["id"] != lost["id"]
    used = {split_chunk_url(c["url"])[0] for c in mc["chunks"]}
    assert split_chunk_url(new_chunk["url"])[0] not in used
    dpath.write_text(out)
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
    code = "import sys; from storage.ec_cli import main; sys.exit(main())"
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
