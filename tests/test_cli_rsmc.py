"""``storage-node rsmc`` against real nodes: per-object results as a table or JSON,
batches, exit status 0 only when every object succeeded."""
import json
import os
import subprocess
import sys

import pytest

from nodeutil import chunk_id
from test_send import put_chunk


def run(args, timeout=60, env=None):
    out = subprocess.run([sys.executable, "-m", "storage", "rsmc", *args],
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    return out.returncode, out.stdout, out.stderr


@pytest.fixture
def nodes(node_factory):
    return (node_factory(sub="a", rsmc_listen="127.0.0.1:0"),
            node_factory(sub="b", service_id=""))


def test_receive_in_batches_then_erase_as_json(nodes, tmp_path):
    a, b = nodes
    ids = [chunk_id(300 + i) for i in range(7)]
    for cid in ids:
        put_chunk(b, cid, os.urandom(1000))
    listing = tmp_path / "list.txt"
    listing.write_text("# chunks\n" + "".join(f"http://{b.host}/{c}\n" for c in ids[2:]))
    code, out, err = run([f"127.0.0.1:{a.rsmc_port}", "receive", "--batch", "2",
                          "--progress", "-f", str(listing),
                          f"http://{b.host}/{ids[0]}", f"http://{b.host}/{ids[1]}"])
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert [r[1] for r in rows] == ["201"] * 7
    assert "receive 7/7" in err
    for cid in ids:
        assert a.request("GET", f"/{cid}")[2] == b.request("GET", f"/{cid}")[2]
    code, out, _ = run([f"127.0.0.1:{a.rsmc_port}", "erase", "--json", ids[0], ids[0]])
    assert code == 1
    assert [(r["object"], r["code"]) for r in json.loads(out)] == [(ids[0], 204),
                                                                   (ids[0], 404)]


def test_info_and_log(nodes, tmp_path):
    a, _ = nodes
    cid = chunk_id(310)
    put_chunk(a, cid, b"hello")
    code, out, _ = run([f"127.0.0.1:{a.rsmc_port}", "info", cid])
    assert code == 0 and "X-Oio-Chunk-Meta-Chunk-Size: 5" in out
    code, out, _ = run([f"127.0.0.1:{a.rsmc_port}", "info", "--json", cid])
    assert json.loads(out)["properties"]["X-Oio-Chunk-Meta-Chunk-Size"] == "5"
    code, _, err = run([f"127.0.0.1:{a.rsmc_port}", "info", chunk_id(311)])
    assert code == 1 and " 404 " in err
    a.access_lines(cid)
    target = tmp_path / "log.txt"
    code, _, err = run([f"127.0.0.1:{a.rsmc_port}", "log", "-o", str(target)])
    assert code == 0 and cid in target.read_text()
    code, _, err = run([f"127.0.0.1:{a.rsmc_port}", "log", "--backup", "3"])
    assert code == 1 and "404" in err


def test_send_failure_and_usage(nodes):
    a, b = nodes
    cid = chunk_id(320)
    put_chunk(a, cid, b"x")
    code, out, _ = run([f"127.0.0.1:{a.rsmc_port}", "send", f"{cid} http://{b.host}/{cid}",
                        f"{chunk_id(321)} http://{b.host}/{chunk_id(321)}"])
    assert code == 1 and [l.split()[1] for l in out.splitlines()] == ["201", "404"]
    assert run([f"127.0.0.1:{a.rsmc_port}", "erase"])[0] == 2
    assert run(["nohost", "erase", cid])[0] == 2
    assert run([f"127.0.0.1:{a.rsmc_port}", "erase", "--batch", "0", cid])[0] == 2
    code, _, err = run(["127.0.0.1:1", "erase", cid])
    assert code == 1 and "storage-node rsmc:" in err
