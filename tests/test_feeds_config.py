"""The feeds file (spec send.md, "Configuration (pinned)"): what loads, and every
mistake a ConfigError naming the feed."""
import pytest

from storage import config as configmod
from storage.config import ConfigError
from storage.feeds import config as feedsconf

PINNED = """
[feed.1]
type = "replication"                  # replication | s3backup | search | indexing
target = "http://127.0.0.1:6202"      # a RAWX node of the other cluster (ours or oio-rawx)
prefix = "acct/cont"                  # optional
deletes = false                       # optional

[feed.2]
type = "s3backup"
target = "s3://bucket/some/prefix"    # object key = prefix + "/" + CHUNKID
endpoint = "http://127.0.0.1:9000"    # optional

[feed.3]
type = "indexing"
target = "beanstalk://127.0.0.1:11300"
tube = "oio-index"                    # optional (default "oio-index")
"""


def test_the_pinned_example_loads():
    one, two, three = feedsconf.parse_text(PINNED)
    assert (one.id, one.type, one.kind, one.address, one.prefix, one.deletes) == \
        (1, "replication", "replication", ("127.0.0.1", 6202), "acct/cont", False)
    assert one.base_url == "http://127.0.0.1:6202"
    assert (two.kind, two.bucket, two.key_prefix, two.endpoint) == \
        ("s3backup", "bucket", "some/prefix", "http://127.0.0.1:9000")
    assert (three.kind, three.address, three.tube) == ("index", ("127.0.0.1", 11300),
                                                       "oio-index")


def test_defaults_and_order():
    feeds = feedsconf.parse_text('[feed.7]\ntype = "search"\ntarget = "beanstalk://h:1"\n'
                                 '[feed.2]\ntype = "replication"\ntarget = "http://h:2/"\n'
                                 'deletes = true\nconcurrency = 8\nretry_max = 2\n')
    assert [f.id for f in feeds] == [2, 7]
    assert (feeds[0].deletes, feeds[0].concurrency, feeds[0].retry_max) == (True, 8, 2.0)
    assert (feeds[1].kind, feeds[1].tube, feeds[1].prefix) == ("index", "oio-index", "")
    assert feedsconf.parse_text("") == ()


def test_prefix_matches_the_decoded_path():
    feed, = feedsconf.parse_text('[feed.1]\ntype = "replication"\ntarget = "http://h:1"\n'
                                 'prefix = "acct/cont"\n')
    assert feed.matches(b"acct/cont/obj/1/AB") and not feed.matches(b"acct/other/obj")
    from storage.feeds import decoded_path
    assert decoded_path("acct/co%6Et/o%20b/1/AB") == b"acct/cont/o b/1/AB"
    assert feed.matches(decoded_path("acct/co%6Et/obj/1/AB"))


@pytest.mark.parametrize("text, words", [
    ('[feed.0]\ntype = "replication"\ntarget = "http://h:1"', ["feed 0", "positive"]),
    ('[feed.x]\ntype = "replication"\ntarget = "http://h:1"', ["feed x", "positive"]),
    ('[feed.-1]\ntype = "replication"\ntarget = "http://h:1"', ["feed -1", "positive"]),
    ('[feed.1]\ntype = "replication"\ntarget = "http://h:1"\n'
     '[feed.01]\ntype = "replication"\ntarget = "http://h:1"', ["feed 01", "duplicate"]),
    ('[feed.1]\ntype = "replication"\ntarget = "http://h:1"\n'
     '[feed.1]\ntype = "search"\ntarget = "beanstalk://h:1"', ["not valid TOML"]),
    ('[feed.3]\ntype = "mirror"\ntarget = "http://h:1"', ["feed 3", "unknown type"]),
    ('[feed.3]\ntarget = "http://h:1"', ["feed 3", "missing type"]),
    ('[feed.4]\ntype = "replication"', ["feed 4", "missing target"]),
    ('[feed.4]\ntype = "replication"\ntarget = 12', ["feed 4", "target must be a string"]),
    ('[feed.5]\ntype = "replication"\ntarget = "http://h:1"\nprefix = 3',
     ["feed 5", "prefix must be a string"]),
    ('[feed.5]\ntype = "replication"\ntarget = "http://h:1"\ndeletes = "yes"',
     ["feed 5", "deletes"]),
    ('[feed.5]\ntype = "replication"\ntarget = "http://h:1"\ndelete = true',
     ["feed 5", "unknown key 'delete'"]),
    ('[feed.6]\ntype = "replication"\ntarget = "h:1"', ["feed 6", "http://host:port"]),
    ('[feed.6]\ntype = "replication"\ntarget = "http://h"', ["feed 6", "http://host:port"]),
    ('[feed.6]\ntype = "replication"\ntarget = "http://h:1/x"', ["feed 6", "http://host:port"]),
    ('[feed.7]\ntype = "s3backup"\ntarget = "http://h:1"', ["feed 7", "s3://bucket"]),
    ('[feed.7]\ntype = "s3backup"\ntarget = "s3://B_ad/x"', ["feed 7", "s3://bucket"]),
    ('[feed.7]\ntype = "s3backup"\ntarget = "s3://bucket"\nendpoint = "ftp://x"',
     ["feed 7", "endpoint"]),
    ('[feed.8]\ntype = "indexing"\ntarget = "beanstalk://h"', ["feed 8", "target", ":port"]),
    ('[feed.8]\ntype = "indexing"\ntarget = "beanstalk://h:1"\ntube = "-x"',
     ["feed 8", "tube"]),
    ('[feed.8]\ntype = "replication"\ntarget = "http://h:1"\ntube = "t"', ["feed 8", "tube"]),
    ('[feed.9]\ntype = "replication"\ntarget = "http://h:1"\nconcurrency = 0',
     ["feed 9", "concurrency"]),
    ('[feeds.1]\ntype = "replication"', ["unknown table", "feeds"]),
    ('feed = 3', ["feed", "tables"]),
    ('[feed.1\n', ["not valid TOML"]),
])
def test_mistakes_name_the_feed(text, words):
    with pytest.raises(ConfigError) as info:
        feedsconf.parse_text(text, "f.toml")
    message = str(info.value)
    assert message.startswith("feeds_config: f.toml")
    for word in words:
        assert word in message


def test_feeds_config_is_a_directive(tmp_path):
    path = tmp_path / "feeds.toml"
    path.write_text(PINNED)
    base = f"listen 127.0.0.1:0\nnamespace N\ndocroot {tmp_path}/d\n"
    conf = configmod.parse_text(base + f"feeds_config {path}\n")
    assert conf.feeds_config == str(path) and [f.id for f in conf.feeds] == [1, 2, 3]
    assert configmod.parse_text(base).feeds == ()
    with pytest.raises(ConfigError, match="feeds_config: must be an absolute path"):
        configmod.parse_text(base + "feeds_config feeds.toml\n")
    with pytest.raises(ConfigError, match="feeds_config: cannot read"):
        configmod.parse_text(base + f"feeds_config {tmp_path}/missing.toml\n")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="feeds_config"):
        configmod.parse_text(base + f"feeds_config {path}\n")
