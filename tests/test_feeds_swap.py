"""Replication feeds that ask their target over SWAP which chunks it has (feed key
``swap``, storage.feeds.probe): real nodes, the target's real SWAP listener, its
access log to count the HTTP requests the feed made."""
import hashlib
import time

import pytest

from beanstalkutil import free_port
from feedsutil import chunk_id, pending, replication, stat, wait_for, write_feeds
from storage.config import ConfigError
from storage.feeds.config import parse_text

REALM = "CAStor administrator"


def htdigest(tmp_path, password="pw"):
    path = tmp_path / "admin.htdigest"
    ha1 = hashlib.md5(f"admin:{REALM}:{password}".encode()).hexdigest()
    path.write_text(f"admin:{REALM}:{ha1}\n")
    return path


def requests_for(node, ids, method):
    """How many ``method`` requests of the access log name one of ``ids``."""
    time.sleep(0.5)  # the access log is written every 0.2 s
    lines = node.access_lines()
    return sum(1 for line in lines if f" {method} " in line
               and any(cid in line for cid in ids))


def fill(source, target, there, new):
    for cid in there:
        assert target.put(cid, cid.encode())[0] == 201
    for cid in there + new:
        assert source.put(cid, cid.encode())[0] == 201


def test_chunks_the_target_has_are_done_without_http(node_factory, tmp_path):
    target = node_factory(sub="t", namespace="DRNS", swap_listen="127.0.0.1:0",
                          swap_peers="127.0.0.1")
    feeds = write_feeds(tmp_path / "feeds.toml",
                        replication(1, target, swap=f"127.0.0.1:{target.swap_port}"))
    source = node_factory(sub="src", feeds_config=str(feeds))
    there = [chunk_id(1000 + i) for i in range(30)]
    new = [chunk_id(2000 + i) for i in range(30)]
    fill(source, target, there, new)
    assert wait_for(lambda: pending(source, 1) == 0, 30)
    assert stat(source)["feed.1.done"] == "60" and stat(source)["feed.1.errors"] == "0"
    for cid in new:
        assert target.request("GET", f"/{cid}")[2] == cid.encode()
    assert requests_for(target, there + new, "HEAD") == 0  # SWAP told, not HEAD
    assert requests_for(target, new, "PUT") == 30
    assert requests_for(target, there, "PUT") == 30  # only the test's own PUTs
    assert "asking 127.0.0.1:%d over SWAP" % target.swap_port in \
        source.stderr_path.read_text()


def test_sasl_plain_credentials(node_factory, tmp_path):
    target = node_factory(sub="t", namespace="DRNS", swap_listen="127.0.0.1:0",
                          admin_htdigest=htdigest(tmp_path))
    swap = f"127.0.0.1:{target.swap_port}"
    text = replication(1, target, swap=swap, swap_auth="admin:pw")
    source = node_factory(sub="src", feeds_config=str(write_feeds(tmp_path / "f.toml", text)))
    ids = [chunk_id(3000 + i) for i in range(10)]
    fill(source, target, ids[:5], ids[5:])
    assert wait_for(lambda: pending(source, 1) == 0, 30)
    assert requests_for(target, ids, "HEAD") == 0


@pytest.mark.parametrize("how", ["wrong password", "nothing listens"])
def test_without_swap_the_feed_goes_the_http_way(node_factory, tmp_path, how):
    target = node_factory(sub="t", namespace="DRNS", swap_listen="127.0.0.1:0",
                          admin_htdigest=htdigest(tmp_path))
    if how == "wrong password":
        extra = dict(swap=f"127.0.0.1:{target.swap_port}", swap_auth="admin:nope")
    else:
        extra = dict(swap=f"127.0.0.1:{free_port()}")
    text = replication(1, target, **extra)
    source = node_factory(sub="src", feeds_config=str(write_feeds(tmp_path / "f.toml", text)))
    ids = [chunk_id(4000 + i) for i in range(10)]
    fill(source, target, ids[:5], ids[5:])
    assert wait_for(lambda: pending(source, 1) == 0, 30)
    assert stat(source)["feed.1.errors"] == "0"  # SWAP failing is not a delivery error
    assert requests_for(target, ids, "HEAD") == 10  # a HEAD per chunk instead
    assert "HEAD per chunk for 30s" in source.stderr_path.read_text()


@pytest.mark.parametrize("text, words", [
    ('type = "indexing"\ntarget = "beanstalk://127.0.0.1:1"\nswap = "127.0.0.1:9123"',
     "swap and swap_auth are for replication feeds"),
    ('type = "replication"\ntarget = "http://127.0.0.1:1"\nswap = "127.0.0.1"',
     "swap must be host:port"),
    ('type = "replication"\ntarget = "http://127.0.0.1:1"\nswap = "h:99999"',
     "swap must be host:port"),
    ('type = "replication"\ntarget = "http://127.0.0.1:1"\nswap_auth = "a:b"',
     "swap_auth needs swap"),
    ('type = "replication"\ntarget = "http://127.0.0.1:1"\nswap = "h:1"\nswap_auth = "ab"',
     "swap_auth must be user:password"),
])
def test_swap_keys_are_checked(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_text("[feed.1]\n" + text + "\n")


def test_the_password_never_shows_in_a_repr():
    feed = parse_text('[feed.1]\ntype = "replication"\ntarget = "http://127.0.0.1:1"\n'
                      'swap = "[::1]:9123"\nswap_auth = "admin:s3cret"\n')[0]
    assert feed.swap == ("::1", 9123) and feed.swap_auth == ("admin", "s3cret")
    assert "s3cret" not in repr(feed)
