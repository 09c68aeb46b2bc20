"""The sample files in etc/: the commented configuration names every directive the node
reads with a valid value (the feeds file it names included), and the nodes file is
what ``storage-node ec`` reads."""
import argparse
import logging
import pathlib
import re

from storage import config as configmod
from storage.cli.ec import read_nodes

ETC = pathlib.Path(__file__).resolve().parents[1] / "etc"
COMMENTED = re.compile(r"^# ([A-Za-z_]+) (\S.*)$")


def test_rawx_example_loads_quietly(caplog):
    text = (ETC / "rawx.conf.example").read_text()
    with caplog.at_level(logging.WARNING, logger="storage.config"):
        config = configmod.parse_text(text, "rawx.conf.example")
    assert caplog.records == []
    assert (config.listen, config.namespace) == ("127.0.0.1:6009", "OPENIO")


def test_rawx_example_shows_every_directive_with_a_valid_value(caplog, tmp_path):
    # the admin file the example names is read at load: give it one that exists
    admin = tmp_path / "admin.htdigest"
    admin.write_text("admin:CAStor administrator:" + "0" * 32 + "\n")
    feeds = ETC / "feeds.toml.example"  # the feeds file too
    lines = [re.sub(r"^# feeds_config .*", f"# feeds_config {feeds}",
                    re.sub(r"^# admin_htdigest .*", f"# admin_htdigest {admin}", line))
             for line in (ETC / "rawx.conf.example").read_text().splitlines()]
    shown = {m.group(1) for m in map(COMMENTED.match, lines) if m}
    active = {line.split()[0] for line in lines if line and not line.startswith("#")}
    assert configmod.node_directives() <= shown | active
    # every commented-out line, switched on at once, is still a valid configuration
    uncommented = "\n".join(
        f"{m.group(1)} {m.group(2)}" if (m := COMMENTED.match(line))
        and m.group(1) in configmod.known_directives() else line for line in lines)
    with caplog.at_level(logging.WARNING, logger="storage.config"):
        config = configmod.parse_text(uncommented, "rawx.conf.example")
    assert caplog.records == []
    assert config.tls_enabled and config.event_agent and config.service_id == "OPENIO-rawx-1"
    assert [(f.id, f.type) for f in config.feeds] == [
        (1, "replication"), (2, "s3backup"), (3, "indexing")]


def test_nodes_example_gives_nine_distinct_nodes_or_more():
    args = argparse.Namespace(nodes=None, nodes_file=str(ETC / "nodes.txt.example"))
    nodes = read_nodes(args)
    assert len(nodes) >= 9 and len(set(nodes)) == len(nodes)
    assert nodes[0] == "http://127.0.0.1:6201"
    assert nodes[-1] == "http://127.0.0.1:6210"
    assert "http://127.0.0.1:6209" in nodes  # a comment after the URL is not part of it
