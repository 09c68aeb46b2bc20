"""``storage-node send`` against real nodes: one line per chunk, exit status 0 only
when every chunk ended 201 or 409, the password from the environment or a prompt."""
import os
import subprocess
import sys

import pytest

from nodeutil import chunk_id
from test_send import PASSWORD, htdigest, put_chunk  # noqa: F401 (fixture)
from storage.cli.send import split_chunk


def run_send(args, env=None, stdin=None, timeout=60):
    out = subprocess.run([sys.executable, "-m", "storage", "send", *args],
                         capture_output=True, text=True, timeout=timeout, input=stdin,
                         env={**os.environ, **(env or {})})
    return out.returncode, out.stdout, out.stderr


@pytest.fixture
def clusters(node_factory, htdigest):
    a = node_factory(sub="a", admin_htdigest=htdigest)
    b = node_factory(sub="b", namespace="DRNS")
    return a, b


def test_many_chunks_one_line_each(clusters):
    a, b = clusters
    ids = [chunk_id(100 + i) for i in range(5)]
    for i, cid in enumerate(ids):
        put_chunk(a, cid, os.urandom(1000 + i))
    put_chunk(b, ids[0], b"already")
    args = ["--target", b.host, "--cluster", "DRNS", "-u", f"admin:{PASSWORD}",
            "--node", f"http://{a.host}", "--progress", *ids[:3],
            *[f"http://{a.host}/{cid.lower()}" for cid in ids[3:]]]
    code, out, err = run_send(args)
    assert code == 0, err
    lines = out.splitlines()
    assert [l.split()[:2] for l in lines] == [[ids[0], "409"]] + [[c, "201"] for c in ids[1:]]
    assert "sent 5/5" in err
    for cid in ids[1:]:
        assert b.request("GET", f"/{cid}")[2] == a.request("GET", f"/{cid}")[2]


def test_a_failure_makes_the_status_1(clusters):
    a, b = clusters
    good, missing = chunk_id(110), chunk_id(111)
    put_chunk(a, good, b"x")
    code, out, _ = run_send(["--target", b.host, "--cluster", "DRNS", "-u",
                             f"admin:{PASSWORD}", "--node", a.host, good, missing])
    assert code == 1
    assert out.splitlines()[0].split()[:2] == [good, "201"]
    assert out.splitlines()[1].split()[:2] == [missing, "404"]


def test_cluster_mismatch_line_says_why(clusters):
    a, b = clusters
    cid = chunk_id(112)
    put_chunk(a, cid, b"x")
    code, out, _ = run_send(["--target", b.host, "--cluster", "WRONG", "-u",
                             f"admin:{PASSWORD}", "--node", a.host, cid])
    assert code == 1
    assert out.startswith(f"{cid} 400 ") and "DRNS" in out


def test_password_from_environment_and_prompt(clusters):
    a, b = clusters
    first, second = chunk_id(113), chunk_id(114)
    put_chunk(a, first, b"x")
    put_chunk(a, second, b"y")
    base = ["--target", b.host, "--cluster", "DRNS", "-u", "admin", "--node", a.host]
    code, out, err = run_send(base + [first], env={"STORAGE_NODE_PASSWORD": PASSWORD})
    assert code == 0 and out.split()[1] == "201", err
    # getpass reads the controlling terminal; without one (a new session) it reads
    # stdin
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_NODE_PASSWORD"}
    out = subprocess.run([sys.executable, "-m", "storage", "send", *base, second],
                         capture_output=True, text=True, timeout=60,
                         input=PASSWORD + "\n", env=env, start_new_session=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] in ("201", "409")


def test_wrong_password_is_401_and_status_1(clusters):
    a, b = clusters
    cid = chunk_id(115)
    put_chunk(a, cid, b"x")
    code, out, _ = run_send(["--target", b.host, "--cluster", "DRNS", "-u", "admin:nope",
                             "--node", a.host, cid])
    assert code == 1 and out.split()[1] == "401"


def test_source_node_down_is_a_failure_line(tmp_path):
    code, out, _ = run_send(["--target", "127.0.0.1:1", "--cluster", "X", "-u", "a:b",
                             "--node", "http://127.0.0.1:1", chunk_id(116)])
    assert code == 1 and out.split()[1] == "0"


@pytest.mark.parametrize("bad", [["--target", "nohost", "--cluster", "X", "-u", "a:b",
                                  chunk_id(1)],
                                 ["--target", "h:1", "--cluster", "X", "-u", "a:b", "xyz"],
                                 ["--target", "h:1", "--cluster", "X", "-u", ":b",
                                  chunk_id(1)]])
def test_bad_arguments_exit_2(bad):
    code, _, err = run_send(bad)
    assert code == 2 and err.startswith("storage-node send: ")


def test_split_chunk():
    cid = chunk_id(1)
    assert split_chunk(cid.lower(), "http://n:1") == ("http://n:1", cid)
    assert split_chunk(f"http://h:2/{cid}", "x") == ("http://h:2", cid)
    for bad in ("ftp://h/" + cid, "http://h:2/xyz", "12"):
        with pytest.raises(ValueError):
            split_chunk(bad, "x")
