"""/stat on a real node: the byte counters' directions (spec rawx.md section 6) and
the Prometheus layout of oio-rawx, checked against what the node really served."""
from nodeutil import chunk_id

def plain_counters(node):
    _, _, body = node.request("GET", "/stat")
    return {line.split()[1]: int(line.split()[2]) for line in body.decode().splitlines()
            if line.startswith("counter ")}


def serve_some(node):
    """A 1000-byte PUT, a 100-byte ranged GET of it and a 404: (bytes in, bytes out)."""
    cid = chunk_id(9001)
    assert node.put(cid, b"p" * 1000)[0] == 201
    status, _, body = node.request("GET", f"/{cid}", headers={"Range": "bytes=0-99"})
    assert status == 206 and len(body) == 100
    assert node.request("GET", f"/{chunk_id(9002)}")[0] == 404
    return 1000, 100


def test_plain_stat_bread_is_bytes_sent_bwritten_bytes_received(node):
    bytes_in, bytes_out = serve_some(node)
    values = plain_counters(node)
    assert values["rep.bread"] == bytes_out  # as oio-rawx: read from the volume, sent
    assert values["rep.bwritten"] == bytes_in  # received, written to the volume

