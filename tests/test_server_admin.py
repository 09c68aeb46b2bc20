"""POST, COPY, GET /update/{ID} and GET /list against a real node (rawx.md 5-7)."""
import json
import os

import pytest
from nodeutil import CHUNK_HEADERS, chunk_id


def nop_entries(node, cid):
    directory = os.path.join(node.docroot, "non_optimal_placement", cid[:3])
    if not os.path.isdir(directory):
        return []
    return [n for n in os.listdir(directory) if n.startswith(cid + ".")]


def test_post_ext_metadata_and_non_optimal_placement(node):
    cid = chunk_id(500)
    assert node.request("POST", f"/{cid}", headers={"X-oio-Ext-K": "v"})[0] == 404
    assert node.put(cid, b"data")[0] == 201
    status, _, _ = node.request("POST", f"/{cid}", headers={"X-Oio-Ext-Color": "blue%21"})
    assert status == 200
    assert os.getxattr(node.chunk_path(cid), "user.oio.ext.Color") == b"blue!"
    flag = {"X-oio-Chunk-Meta-Non-Optimal-Placement": "true"}
    assert node.request("POST", f"/{cid}", headers=flag)[0] == 200
    entries = nop_entries(node, cid)
    assert len(entries) == 1 and entries[0].startswith(f"{cid}.0.")
    link = os.path.join(node.docroot, "non_optimal_placement", cid[:3], entries[0])
    assert os.readlink(link) == f"../../{cid[:3]}/{cid}"
    assert open(link, "rb").read() == b"data"  # resolves to the chunk
    assert node.request("POST", f"/{cid}", headers=flag)[0] == 409
    assert node.request("GET", f"/{cid}")[1]["x-oio-ext-color"] == "blue!"


def test_put_with_non_optimal_placement_ignores_an_existing_entry(node):
    cid = chunk_id(501)
    flag = {"X-oio-Chunk-Meta-Non-Optimal-Placement": "true"}
    assert node.put(cid, b"x", flag)[0] == 201
    assert len(nop_entries(node, cid)) == 1
    assert node.request("DELETE", f"/{cid}")[0] == 204
    assert node.put(cid, b"y", flag)[0] == 201  # the old entry is there: ignored
    assert len(nop_entries(node, cid)) == 1


def test_copy_refused_without_shallow_copy(node):
    cid = chunk_id(502)
    assert node.put(cid, b"x")[0] == 201
    headers = {"Destination": f"/{chunk_id(503)}",
               "X-oio-Chunk-Meta-Full-Path": CHUNK_HEADERS["X-oio-Chunk-Meta-Full-Path"]}
    assert node.request("COPY", f"/{cid}", headers=headers)[0] == 405


def test_shallow_copy_shares_the_inode(node_factory):
    node = node_factory(shallow_copy="on")
    src, dst = chunk_id(504), chunk_id(505)
    assert node.put(src, b"shared bytes")[0] == 201
    full = "acct/cont2/other/7/ABCDEF"
    headers = {"Destination": f"http://{node.host}/{dst}", "X-oio-Chunk-Meta-Full-Path": full}
    assert node.request("COPY", f"/{src}", headers=headers)[0] == 201
    assert os.stat(node.chunk_path(src)).st_ino == os.stat(node.chunk_path(dst)).st_ino
    status, got, body = node.request("GET", f"/{dst}")
    assert status == 200 and body == b"shared bytes"
    assert got["x-oio-chunk-meta-full-path"] == full
    assert got["x-oio-chunk-meta-chunk-id"] == dst
    assert node.request("GET", f"/{src}")[1]["x-oio-chunk-meta-full-path"] == \
        CHUNK_HEADERS["X-oio-Chunk-Meta-Full-Path"]
    assert node.request("COPY", f"/{src}", headers=headers)[0] == 409
    # DELETE of one name removes its own full-path key from the shared inode first
    assert node.request("DELETE", f"/{src}")[0] == 204
    keys = os.listxattr(node.chunk_path(dst))
    assert f"user.oio.content.fullpath:{src}" not in keys
    assert f"user.oio.content.fullpath:{dst}" in keys
    assert node.request("GET", f"/{dst}")[2] == b"shared bytes"


@pytest.mark.parametrize("destination,full,status", [
    ("", "a/b/c/1/AB", 400),
    ("http://10.9.9.9:6000/" + "B" * 64, "a/b/c/1/AB", 403),
    ("/" + "X" * 30, "a/b/c/1/AB", 400),
    ("/SAME", "a/b/c/1/AB", 403),
    ("/" + "C" * 64, "", 400),
    ("/" + "C" * 64, "a/b/c/notint/AB", 400),
    ("/" + "D" * 64, "a/b/c/1/AB", 404),
])
def test_copy_errors(node_factory, destination, full, status):
    node = node_factory(shallow_copy="on")
    src = chunk_id(506)
    node.put(src, b"x")
    if destination == "/SAME":
        destination = f"/{src}"
    path = f"/{src}" if status != 404 else f"/{chunk_id(507)}"
    headers = {"Destination": destination, "X-oio-Chunk-Meta-Full-Path": full}
    headers = {k: v for k, v in headers.items() if v}
    assert node.request("COPY", path, headers=headers)[0] == status


def test_update_route_replaces_metadata(node):
    cid = chunk_id(508)
    assert node.request("GET", f"/update/{cid}", headers=CHUNK_HEADERS)[0] == 404
    assert node.put(cid, b"payload")[0] == 201
    stored_hash = node.request("HEAD", f"/{cid}")[1]["x-oio-chunk-meta-chunk-hash"]
    new = dict(CHUNK_HEADERS, **{"X-oio-Chunk-Meta-Chunk-Pos": "4",
                                 "X-oio-Chunk-Meta-Content-Storage-Policy": "TWOCOPIES",
                                 "X-oio-Chunk-Meta-Chunk-Id": cid.lower()})
    status, headers, body = node.request("GET", f"/update/{cid}", headers=new)
    assert status == 200 and body == b"" and headers["content-length"] == "0"
    got = node.request("HEAD", f"/{cid}")[1]
    assert got["x-oio-chunk-meta-chunk-pos"] == "4"
    assert got["x-oio-chunk-meta-content-storage-policy"] == "TWOCOPIES"
    assert got["x-oio-chunk-meta-chunk-hash"] == stored_hash
    bad = dict(new, **{"X-oio-Chunk-Meta-Chunk-Id": chunk_id(509)})
    assert node.request("GET", f"/update/{cid}", headers=bad)[0] == 400
    assert node.request("GET", "/update/xyz", headers=new)[0] == 400


def test_list_walks_leaf_dirs_with_marker(node):
    ids = sorted("%03X" % d + "%061X" % i for d in (0x00A, 0x00B, 0xFFF) for i in range(3))
    for cid in ids:
        assert node.put(cid, b"l")[0] == 201
    os.makedirs(os.path.join(node.docroot, "00A"), exist_ok=True)
    open(os.path.join(node.docroot, "00A", ids[0] + ".pending"), "w").close()
    status, headers, body = node.request("GET", "/list")
    doc = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert [c["chunk_id"] for c in doc["chunks"]] == ids
    assert doc["is_truncated"] is False and doc["marker"] == ""
    page = json.loads(node.request("GET", "/list", body=json.dumps(
        {"min_to_return": 2}).encode())[2])
    assert [c["chunk_id"] for c in page["chunks"]] == ids[:3]  # whole leaf dirs
    assert page["is_truncated"] is True and page["marker"] == "00B"
    page = json.loads(node.request("GET", "/list", body=json.dumps(
        {"start_after": ids[4], "min_to_return": 1}).encode())[2])
    assert [c["chunk_id"] for c in page["chunks"]] == ids[3:6]  # the marker's dir, whole
    assert page["marker"] == "FFF"
    assert node.request("GET", "/list", body=b"not json")[0] == 400
    assert node.request("GET", "/list", body=b'{"min_to_return": 0}')[0] == 400
    assert node.request("GET", "/list", body=b"x" * 70000)[0] == 413
