"""``storage-node swap stat|get|put|ls|rm|groups`` as a user runs it (a subprocess)
against real nodes: output shapes, --json, progress bars, credentials from the
environment or a prompt, TLS, exit statuses 0/1/2."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import test_swap_client
from nodeutil import chunk_id
from test_send import PASSWORD, put_chunk

from storage.cli.common import UsageError
from storage.cli.swap import mtime_text, parse_address

# the real nodes of test_swap_client
htdigest = test_swap_client.htdigest
swap_factory = test_swap_client.swap_factory
swap_node = test_swap_client.swap_node

AUTH = ["-u", f"admin:{PASSWORD}"]


def run_swap(args, env=None, stdin=None, text=True, timeout=60, **kw):
    out = subprocess.run([sys.executable, "-m", "storage", "swap", *args], check=False,
                         capture_output=True, text=text, timeout=timeout, input=stdin,
                         env={**os.environ, **(env or {})}, **kw)
    return out.returncode, out.stdout, out.stderr


def addr(node):
    return f"127.0.0.1:{node.swap_port}"


def test_address_parsing_and_mtime_text():
    assert parse_address("node:9000") == ("node", 9000)
    assert parse_address("node") == ("node", 9123)
    assert parse_address("[::1]:9001") == ("::1", 9001)
    for bad in ("node:", ":1", "node:x", "node:70000", "::1:9", "[::1"):
        with pytest.raises(UsageError):
            parse_address(bad)
    assert mtime_text(0) == "-"
    assert mtime_text(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


@pytest.mark.parametrize("args", [
    ["stat", "127.0.0.1:1", "x"],  # no -u
    ["stat", "127.0.0.1:1", "x", "-u", "a:b", "--peer"],
    ["stat", "nohost:", "x", "-u", "a:b"],
    ["get", "127.0.0.1:1", "x", "-u", "a:b", "--plaintext-after-auth"],  # no --tls
    ["get", "127.0.0.1:1", "x", "-u", "a:b", "--offset", "-3"],
    ["stat", "127.0.0.1:1"],  # no path
    ["frobnicate", "127.0.0.1:1"],
])
def test_bad_usage_exits_2(args):
    code, out, err = run_swap(args)
    assert code == 2 and out == "" and err


def test_unreachable_node_exits_1():
    code, _, err = run_swap(["stat", "127.0.0.1:1", "x", *AUTH])
    assert code == 1 and "cannot connect" in err


def test_stat_lines_json_and_status(swap_node):
    cid = chunk_id(20)
    put_chunk(swap_node, cid, b"0123456789")
    hashed = f"{cid[:3]}/{cid}"
    code, out, err = run_swap(["stat", addr(swap_node), *AUTH, hashed, cid[:3]])
    assert code == 0, err
    first, second = [line.split(" ") for line in out.splitlines()]
    assert first[:3] == [hashed, "file", "10"] and first[3].endswith("Z")
    assert second[:2] == [cid[:3], "directory"]
    code, out, _ = run_swap(["stat", addr(swap_node), *AUTH, "--json", cid, "missing"])
    assert code == 1  # one path is not there
    records = json.loads(out)
    assert [(r["path"], r["kind"], r["size"]) for r in records] == [
        (cid, "file", 10), ("missing", "not-found", 0)]
    assert isinstance(records[0]["mtime"], int) and records[1]["mtime"] == 0


def test_put_get_ls_rm_in_the_files_group(swap_node, tmp_path):
    data = os.urandom(3 * (512 << 10) + 5)
    local = tmp_path / "local.bin"
    local.write_bytes(data)
    files = ["--group", "files", *AUTH]
    code, out, err = run_swap(["put", addr(swap_node), *files, "--progress", str(local),
                               "dir/a.bin"])
    assert code == 0, err
    assert out.split() == ["dir/a.bin", str(len(data)), hashlib.md5(data).hexdigest()]
    assert "put dir/a.bin" in err and "MiB" in err and "100%" in err
    code, _, err = run_swap(["put", addr(swap_node), *files, "-", "dir/b.txt"],
                              stdin="hello\n")
    assert code == 0, err
    # get to stdout, with the progress bar on stderr
    code, out, err = run_swap(["get", addr(swap_node), *files, "--progress", "dir/a.bin"],
                              text=False)
    assert code == 0, err
    assert out == data and b"100%" in err
    code, out, _ = run_swap(["get", addr(swap_node), *files, "dir/a.bin", "--offset", "7",
                             "--length", "5"], text=False)
    assert out == data[7:12]
    target = tmp_path / "copy.bin"
    code, out, err = run_swap(["get", addr(swap_node), *files, "dir/b.txt", "-o",
                               str(target)])
    assert code == 0, err
    assert target.read_text() == "hello\n"
    assert out.split() == [str(target), "6", hashlib.md5(b"hello\n").hexdigest()]
    code, out, _ = run_swap(["ls", addr(swap_node), *files, "dir"])
    assert (code, out) == (0, "a.bin\nb.txt\n")
    code, out, _ = run_swap(["ls", addr(swap_node), *files, "-l", "--json", "/dir"])
    assert [(e["name"], e["kind"], e["size"]) for e in json.loads(out)] == [
        ("a.bin", "file", len(data)), ("b.txt", "file", 6)]
    code, out, _ = run_swap(["ls", addr(swap_node), *files, "/"])
    assert (code, out) == (0, "dir\n")
    code, out, _ = run_swap(["ls", addr(swap_node), *files, "", "-l"])
    assert code == 0 and out.startswith("dir directory ")
    code, out, _ = run_swap(["rm", addr(swap_node), *files, "dir/b.txt", "nothing"])
    assert code == 1
    assert out.splitlines() == ["dir/b.txt deleted", "nothing not-found"]
    code, out, _ = run_swap(["rm", addr(swap_node), *files, "dir"])
    assert (code, out) == (0, "dir deleted\n")
    assert not (swap_node.files_dir / "dir").exists()
    (swap_node.files_dir / "keep").write_bytes(b"")
    code, out, _ = run_swap(["rm", addr(swap_node), *files, "/"])  # the node refuses
    assert (code, out) == (1, "/ still-there\n")


def test_rm_of_chunks(swap_node):
    ids = [chunk_id(30), chunk_id(31)]
    for cid in ids:
        put_chunk(swap_node, cid, b"x")
    code, out, _ = run_swap(["rm", addr(swap_node), *AUTH, ids[0], ids[0][:3]])
    assert (code, out) == (0, f"{ids[0]} deleted\n{ids[0][:3]} emptied\n")
    assert swap_node.request("GET", f"/{ids[1]}")[0] == 404


def test_failures_exit_1_and_leave_no_partial_output(swap_node, tmp_path):
    where = tmp_path / "out"
    where.mkdir()
    target = where / "out.bin"
    code, _, err = run_swap(["get", addr(swap_node), *AUTH, chunk_id(21), "-o",
                               str(target)])
    assert code == 1 and "FILE_DOES_NOT_EXIST (7)" in err
    assert list(where.iterdir()) == []
    local = where / "x"
    local.write_bytes(b"x")
    code, _, err = run_swap(["put", addr(swap_node), *AUTH, str(local), "ABC/x"])
    assert code == 1 and "PERMISSION_DENIED (2)" in err
    code, _, err = run_swap(["put", addr(swap_node), *AUTH, str(where / "none"), "y"])
    assert code == 1 and "cannot read" in err
    code, _, err = run_swap(["ls", addr(swap_node), *AUTH, "nowhere"])
    assert code == 1 and "not a directory" in err
    code, _, err = run_swap(["stat", addr(swap_node), "-u", "admin:wrong", "x"])
    assert code == 1 and "refused" in err
    code, _, err = run_swap(["stat", addr(swap_node), *AUTH, "--group", "nope", "x"])
    assert code == 1 and "OPENIO/chunks" in err


def test_password_from_environment_and_prompt(swap_node):
    code, out, err = run_swap(["groups", addr(swap_node), "-u", "admin"],
                              env={"STORAGE_NODE_PASSWORD": PASSWORD})
    assert code == 0, err
    assert sorted(line.split()[1] for line in out.splitlines()) == [
        "OPENIO/chunks", "OPENIO/files"]
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_NODE_PASSWORD"}
    # getpass reads the controlling terminal; without one (a new session) it reads stdin
    out = subprocess.run([sys.executable, "-m", "storage", "swap", "groups", addr(swap_node),
                          "-u", "admin"], check=False, capture_output=True, text=True, timeout=60,
                         input=PASSWORD + "\n", env=env, start_new_session=True)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2


def test_tls_with_and_without_plaintext_after_auth(swap_factory, tls_cert, tmp_path):
    node = swap_factory(swap_tls="on", tls_cert_file=tls_cert[0], tls_key_file=tls_cert[1])
    (node.files_dir / "f").write_bytes(b"over tls")
    for extra in ([], ["--plaintext-after-auth"]):
        code, out, err = run_swap(["get", addr(node), *AUTH, "--group", "files",
                                   "--cafile", tls_cert[0], *extra, "f"])
        assert (code, out) == (0, "over tls"), err
    code, _, err = run_swap(["stat", addr(node), *AUTH, "--tls", "f"])  # unverified
    assert code == 1 and "certificate" in err.lower()


def test_peer_needs_no_login(swap_factory):
    node = swap_factory(swap_peers="127.0.0.1")
    code, out, err = run_swap(["ls", addr(node), "--peer", "--group", "files", "/"])
    assert (code, out) == (0, ""), err
    code, out, err = run_swap(["peers", addr(node), "--peer"])
    assert code == 0 and out.split()[0] == "127.0.0.1", err
