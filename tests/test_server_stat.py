"""/stat on a real node: the byte counters' directions (spec rawx.md section 6) and
the Prometheus layout of oio-rawx, checked against what the node really served."""
import re

from nodeutil import chunk_id

SAMPLE = re.compile(r'(\w+)\{service_id="([^"]*)",volume="([^"]*)",namespace="([^"]*)",'
                    r'(method|status_code|direction)="([^"]*)"\} (\d+)\Z')


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


def test_prometheus_is_the_reference_layout_with_what_was_served(node):
    bytes_in, bytes_out = serve_some(node)
    status, headers, body = node.request("GET", "/stat?format=prometheus")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = body.decode().splitlines()
    block = lines[:2 * 11 + 6 + 2]
    samples = [SAMPLE.match(line) for line in block]
    assert all(samples), [line for line, m in zip(block, samples) if not m]
    for m in samples:
        assert m.group(2, 3, 4) == ("rawx-test", node.docroot, "OPENIO")
    keys = [(m.group(1), m.group(6)) for m in samples]
    methods = ["all", "put", "post", "copy", "get", "head", "del", "stat", "info", "raw",
               "other"]
    assert keys == [("rawx_requests_hits_total", k) for k in methods] \
        + [("rawx_requests_duration_ms_total", k) for k in methods] \
        + [("rawx_responses_hits_total", c)
           for c in ("2xx", "4xx", "5xx", "other", "403", "404")] \
        + [("rawx_responses_size_byte_total", "out"), ("rawx_responses_size_byte_total", "in")]
    value = {(m.group(1), m.group(6)): int(m.group(7)) for m in samples}
    hits = {k: value[("rawx_requests_hits_total", k)] for k in methods}
    assert hits == dict.fromkeys(methods, 0) | {"all": 3, "put": 1, "get": 2}
    assert value[("rawx_requests_duration_ms_total", "put")] > 0
    assert value[("rawx_responses_hits_total", "2xx")] == 2
    assert value[("rawx_responses_hits_total", "404")] == 1
    assert value[("rawx_responses_size_byte_total", "out")] == bytes_out
    assert value[("rawx_responses_size_byte_total", "in")] == bytes_in
    rest = lines[len(block):]
    assert rest and rest[0].startswith("# HELP storage_node_")
    assert not any(line.startswith("rawx_") for line in rest)
