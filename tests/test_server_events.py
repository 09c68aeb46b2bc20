"""storage.chunk.* events from a real node to a real beanstalkd (spec rawx.md section 8)."""
import hashlib
import json

import pytest
from beanstalkutil import BEANSTALKD, Client
from nodeutil import chunk_id

pytestmark = pytest.mark.skipif(BEANSTALKD is None, reason="beanstalkd not installed")


def test_put_and_delete_events(node_factory, beanstalkd_factory):
    server = beanstalkd_factory()
    node = node_factory(events="on", event_agent=f"beanstalk://127.0.0.1:{server.port}")
    cid = chunk_id(400)
    assert node.put(cid, b"event body", {"X-oio-req-id": "ev-1",
                                         "X-oio-Chunk-Meta-Metachunk-Size": "10"})[0] == 201
    assert node.request("DELETE", f"/{cid}", headers={"X-oio-req-id": "ev-2"})[0] == 204
    client = Client(server.port)
    try:
        bodies = client.take(2, timeout=10)
    finally:
        client.close()
    new, deleted = (json.loads(b) for b in bodies)
    assert list(new) == ["event", "when", "request_id", "data"]
    assert new["event"] == "storage.chunk.new" and new["request_id"] == "ev-1"
    assert isinstance(new["when"], int)
    assert new["data"] == {
        "volume_id": node.host, "volume_service_id": "rawx-test",
        "full_path": "acct/cont/obj/1/0123456789ABCDEF0123456789ABCDEF",
        "container_id": "05CF049BD72E5EB3E32AC1B00EE3D5ED4094AADB5AF3A15138E1BF11FA854A95",
        "content_path": "obj", "content_version": "1",
        "content_id": "0123456789ABCDEF0123456789ABCDEF",
        "content_storage_policy": "SINGLE", "metachunk_hash": "", "metachunk_size": "10",
        "chunk_id": cid, "content_chunk_method": "plain/nb_copy=1,cca=md5",
        "chunk_position": "0", "chunk_hash": hashlib.md5(b"event body").hexdigest().upper(),
        "chunk_size": "10"}
    assert deleted["event"] == "storage.chunk.deleted" and deleted["request_id"] == "ev-2"
    assert deleted["data"]["chunk_id"] == cid and deleted["data"]["chunk_size"] == "10"


def test_bad_event_agent_is_a_config_error(node_factory, tmp_path):
    import subprocess
    import sys
    conf = tmp_path / "bad.conf"
    conf.write_text(f"listen 127.0.0.1:0\nnamespace N\ndocroot {tmp_path}/d\nevents on\n"
                    "event_agent beanstalk://nohostport\n")
    res = subprocess.run([sys.executable, "-m", "storage", "serve", "-f", str(conf)],
                         capture_output=True, timeout=30)
    assert res.returncode == 2 and b"event_agent" in res.stderr
