"""storage.config: the oio-rawx configuration format (spec rawx.md section 9)."""
import dataclasses
import logging
import os

import pytest

from storage import config as cfg
from storage.config import Config, ConfigError, parse_text

BASE = "listen 127.0.0.1:6009\nnamespace OPENIO\ndocroot /srv/rawx\n"


def parse(extra="", base=BASE):
    return parse_text(base + extra)


def error_of(text):
    with pytest.raises(ConfigError) as info:
        parse_text(text)
    return str(info.value)


# -- required directives and defaults ------------------------------------------

def test_minimal_file_gives_the_documented_defaults():
    conf = parse()
    assert (conf.listen_host, conf.listen_port) == ("127.0.0.1", 6009)
    assert conf.namespace == "OPENIO"
    assert conf.docroot == "/srv/rawx"
    assert conf.service_id == ""
    assert conf.hash_width == 3
    assert conf.hash_depth == 1
    assert conf.fsync is False
    assert conf.fsync_dir is False
    assert conf.fallocate is False
    assert conf.checksum == "always"
    assert conf.shallow_copy is False
    assert conf.http_keepalive is True
    assert conf.events is False
    assert conf.compression == "off"
    assert conf.timeout_read_header == 60
    assert conf.timeout_read_request == 900
    assert conf.timeout_write_reply == 900
    assert conf.timeout_idle == 3600
    assert conf.headers_buffer_size == 65536
    assert conf.log_level == "INFO"
    assert conf.workers == 0 and conf.worker_count >= 1
    assert conf.io_threads == 8
    assert conf.access_log == "-"
    assert conf.buffer_size % 1024 == 0 and conf.buffer_size > 0


def test_config_is_frozen():
    conf = parse()
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.namespace = "OTHER"


@pytest.mark.parametrize("missing", ["listen", "namespace", "docroot"])
def test_missing_required_directive_is_named(missing):
    text = "".join(line + "\n" for line in BASE.splitlines()
                   if not line.startswith(missing))
    message = error_of(text)
    assert message.startswith(missing + ":")
    assert "missing" in message


@pytest.mark.parametrize("name", ["listen", "namespace", "docroot", "hash_width", "fsync"])
def test_directive_without_value_is_an_error(name):
    assert error_of(BASE + name + "\n").startswith(name + ":")


def test_relative_docroot_is_refused():
    message = error_of("listen 6009\nnamespace NS\ndocroot data/rawx\n")
    assert message.startswith("docroot:") and "absolute" in message


def test_every_directive_is_read():
    conf = parse(
        "service_id rawx-1\n"
        "hash_width 2\n"
        "hash_depth 3\n"
        "fsync on\n"
        "fsync_dir yes\n"
        "fallocate true\n"
        "checksum smart\n"
        "buffer_size 64\n"
        "shallow_copy enabled\n"
        "http_keepalive off\n"
        "events on\n"
        "event_agent beanstalk://127.0.0.1:6014\n"
        "compression zlib\n"
        "timeout_read_header 5\n"
        "timeout_read_request 6.5\n"
        "timeout_write_reply 7\n"
        "timeout_idle 8\n"
        "headers_buffer_size 8192\n"
        "log_level debug\n"
        "workers 3\n"
        "io_threads 0\n"
        "access_log off\n"
        "shutdown_timeout 2\n"
        "probe_interval 0.5\n")
    assert conf.service_id == "rawx-1"
    assert (conf.hash_width, conf.hash_depth) == (2, 3)
    assert conf.fsync and conf.fsync_dir and conf.fallocate and conf.shallow_copy
    assert conf.checksum == "smart"
    assert conf.buffer_size == 64 * 1024  # the file gives KiB
    assert conf.http_keepalive is False
    assert conf.events is True and conf.event_agent == "beanstalk://127.0.0.1:6014"
    assert conf.compression == "zlib"
    assert (conf.timeout_read_header, conf.timeout_read_request,
            conf.timeout_write_reply, conf.timeout_idle) == (5, 6.5, 7, 8)
    assert conf.headers_buffer_size == 8192
    assert conf.log_level == "DEBUG"
    assert conf.workers == 3 and conf.worker_count == 3
    assert conf.io_threads == 0
    assert conf.access_log == "off"
    assert conf.shutdown_timeout == 2 and conf.probe_interval == 0.5


def test_checksum_and_compression_choices():
    for word in ("always", "smart", "off", "ALWAYS"):
        assert parse(f"checksum {word}\n").checksum == word.lower()
    assert error_of(BASE + "checksum sometimes\n").startswith("checksum:")
    assert parse("compression off\n").compression == "off"
    assert error_of(BASE + "compression lz4\n").startswith("compression:")


@pytest.mark.parametrize("word,level", [("warn", "WARNING"), ("err", "ERROR"),
                                        ("notice", "INFO"), ("crit", "CRITICAL"),
                                        ("Error", "ERROR")])
def test_log_level_words(word, level):
    assert parse(f"log_level {word}\n").log_level == level


# -- booleans -----------------------------------------------------------------

TRUE = ["on", "yes", "true", "enable", "enabled", "1", "ON", "Yes", "TRUE"]
FALSE = ["off", "no", "false", "disable", "disabled", "0", "OFF", "No"]


@pytest.mark.parametrize("name", ["fsync", "fsync_dir", "fallocate", "shallow_copy",
                                  "http_keepalive"])
def test_every_boolean_word(name):
    for word in TRUE:
        assert getattr(parse(f"{name} {word}\n"), name) is True, word
    for word in FALSE:
        assert getattr(parse(f"{name} {word}\n"), name) is False, word


@pytest.mark.parametrize("word", ["2", "y", "nope", "enabledx", "o n"])
def test_bad_boolean_names_the_directive(word):
    message = error_of(BASE + f"fsync {word}\n")
    assert message.startswith("fsync:")


# -- bad values name the directive --------------------------------------------

@pytest.mark.parametrize("line,name", [
    ("hash_width x", "hash_width"),
    ("hash_width -1", "hash_width"),
    ("hash_width 17", "hash_width"),
    ("hash_depth 9", "hash_depth"),
    ("hash_depth 1.5", "hash_depth"),
    ("buffer_size 0", "buffer_size"),
    ("buffer_size big", "buffer_size"),
    ("timeout_idle 0", "timeout_idle"),
    ("timeout_idle -3", "timeout_idle"),
    ("timeout_read_header soon", "timeout_read_header"),
    ("headers_buffer_size 10", "headers_buffer_size"),
    ("log_level chatty", "log_level"),
    ("workers many", "workers"),
    ("io_threads 65", "io_threads"),
    ("io_threads -1", "io_threads"),
    ("access_log relative.log", "access_log"),
    ("listen 127.0.0.1:http", "listen"),
    ("listen 127.0.0.1:70000", "listen"),
    ("Listen 127.0.0.1:-1", "listen"),
    # Python's int()/float() would take these; a config file means plain decimals
    ("hash_width 1_0", "hash_width"),
    ("hash_depth \u0663", "hash_depth"),
    ("timeout_idle inf", "timeout_idle"),
    ("timeout_idle nan", "timeout_idle"),
    ("timeout_read_request 1_0", "timeout_read_request"),
    ("timeout_write_reply 1e3", "timeout_write_reply"),
])
def test_bad_value_names_the_directive(line, name):
    assert error_of(BASE + line + "\n").startswith(name + ":")


def test_plain_decimal_numbers():
    conf = parse("hash_width +2\ntimeout_idle 1.5\ntimeout_read_header .25\n"
                 "timeout_write_reply 30.\n")
    assert conf.hash_width == 2
    assert (conf.timeout_idle, conf.timeout_read_header) == (1.5, 0.25)
    assert conf.timeout_write_reply == 30


def test_events_need_a_beanstalk_agent():
    assert error_of(BASE + "events on\n").startswith("event_agent:")
    assert error_of(BASE + "events on\nevent_agent tcp://x:1\n").startswith("event_agent:")
    assert parse("events off\n").events is False


def test_access_log_absolute_path_accepted():
    assert parse("access_log /var/log/rawx.log\n").access_log == "/var/log/rawx.log"


# -- line format ----------------------------------------------------------------

def test_only_the_second_field_is_read():
    conf = parse("service_id rawx-1 trailing words # and a comment\n"
                 "fsync on off\n")
    assert conf.service_id == "rawx-1"
    assert conf.fsync is True


def test_quoted_value_is_taken_whole():
    conf = parse('service_id "rawx 1 with spaces" ignored\n')
    assert conf.service_id == "rawx 1 with spaces"
    conf = parse_text('listen 6009\nnamespace NS\ndocroot "/srv/my volume/rawx"\n')
    assert conf.docroot == "/srv/my volume/rawx"


def test_unterminated_quote_is_an_error():
    assert error_of(BASE + 'service_id "rawx\n').startswith("service_id:")


def test_comments_blank_lines_and_unknown_names_are_ignored():
    conf = parse_text(
        "# a comment\n"
        "\n"
        "   \t  \n"
        "  # indented comment fsync on\n"
        "listen 127.0.0.1:6009\n"
        "namespace OPENIO\n"
        "LoadModule mod_dav_rawx.so\n"
        "some_other_tool_setting 42 43\n"
        "lonely_word\n"
        "\tdocroot\t/srv/rawx  \n")
    assert conf.docroot == "/srv/rawx"
    assert conf.fsync is False


def test_windows_line_endings():
    conf = parse_text(BASE.replace("\n", "\r\n") + "fsync on\r\n")
    assert conf.docroot == "/srv/rawx" and conf.fsync is True


def test_later_line_wins():
    assert parse("hash_width 2\nhash_width 4\n").hash_width == 4


def test_listen_alias_and_forms():
    conf = parse_text("Listen 10.1.2.3:6200\nnamespace NS\ndocroot /d\n")
    assert (conf.listen_host, conf.listen_port) == ("10.1.2.3", 6200)
    assert conf.listen == "10.1.2.3:6200"
    conf = parse_text("listen 6201\nnamespace NS\ndocroot /d\n")
    assert (conf.listen_host, conf.listen_port) == ("0.0.0.0", 6201)
    conf = parse_text("listen [::1]:6202\nnamespace NS\ndocroot /d\n")
    assert (conf.listen_host, conf.listen_port) == ("::1", 6202)
    assert conf.listen == "[::1]:6202"


def test_volume_id_is_service_id_else_listen():
    assert parse().volume_id == "127.0.0.1:6009"
    assert parse("service_id rawx-7\n").volume_id == "rawx-7"


# -- deprecated grid_* aliases --------------------------------------------------

GRID = [
    ("grid_docroot /srv/other", "docroot", "/srv/other"),
    ("grid_namespace NS2", "namespace", "NS2"),
    ("grid_hash_width 2", "hash_width", 2),
    ("grid_hash_depth 0", "hash_depth", 0),
    ("grid_fsync enabled", "fsync", True),
    ("grid_fsync_dir on", "fsync_dir", True),
    ("grid_compression zlib", "compression", "zlib"),
    ("grid_fallocate yes", "fallocate", True),
    ("grid_service_id svc", "service_id", "svc"),
    ("grid_checksum off", "checksum", "off"),
    ("grid_buffer_size 8", "buffer_size", 8192),
]


@pytest.mark.parametrize("line,field,value", GRID)
def test_grid_alias_accepted_with_a_warning(caplog, line, field, value):
    with caplog.at_level(logging.WARNING, logger="storage.config"):
        conf = parse(line + "\n")
    assert getattr(conf, field) == value
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert line.split()[0] in message and "deprecated" in message and field in message


def test_grid_alias_bad_value_names_the_directive():
    message = error_of(BASE + "grid_hash_width wide\n")
    assert "hash_width" in message


def test_grid_alias_can_supply_a_required_directive():
    conf = parse_text("listen 6009\ngrid_namespace NS\ngrid_docroot /srv/x\n")
    assert (conf.namespace, conf.docroot) == ("NS", "/srv/x")


def test_no_warning_without_aliases(caplog):
    with caplog.at_level(logging.WARNING, logger="storage.config"):
        parse("fsync on\n")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- embedded default and files -------------------------------------------------

def test_embedded_default(tmp_path):
    conf = cfg.embedded_default(cwd=str(tmp_path))
    assert (conf.listen_host, conf.listen_port) == ("127.0.0.1", 6009)
    assert conf.namespace == "OPENIO"
    assert conf.docroot == os.path.join(str(tmp_path), "data", "rawx")
    assert os.path.isabs(conf.docroot)
    assert conf.events is False
    assert (conf.hash_width, conf.hash_depth) == (3, 1)


def test_embedded_default_uses_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cfg.embedded_default().docroot == os.path.join(str(tmp_path), "data", "rawx")


def test_load_file(tmp_path):
    path = tmp_path / "rawx.conf"
    path.write_text(BASE + "hash_depth 2\n")
    conf = cfg.load_file(str(path))
    assert isinstance(conf, Config) and conf.hash_depth == 2


def test_load_file_warning_names_file_and_line(tmp_path, caplog):
    path = tmp_path / "rawx.conf"
    path.write_text(BASE + "# comment\ngrid_fsync on\n")
    with caplog.at_level(logging.WARNING, logger="storage.config"):
        cfg.load_file(str(path))
    assert f"{path}:5:" in caplog.text


def test_load_file_missing(tmp_path):
    path = tmp_path / "nope.conf"
    with pytest.raises(ConfigError) as info:
        cfg.load_file(str(path))
    assert str(path) in str(info.value)


def test_load_file_not_utf8(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_bytes(BASE.encode() + b"service_id \xff\xfe\n")
    with pytest.raises(ConfigError):
        cfg.load_file(str(path))


# -- admin operations (spec send.md, "Configuration (pinned)") -------------------------

def test_admin_defaults():
    conf = parse()
    assert conf.admin_htdigest == ""
    assert (conf.keepalive_interval, conf.feed_send_timeout) == (5.0, 30.0)
    assert (conf.send_concurrency, conf.send_queue, conf.send_timeout) == (4, 64, 60.0)


def test_admin_directives_are_read(tmp_path):
    path = tmp_path / "admin.htdigest"
    path.write_text("admin:CAStor administrator:" + "0" * 32 + "\n")
    conf = parse(f"admin_htdigest {path}\nkeepalive_interval 0.5\nfeed_send_timeout 12\n"
                 "send_concurrency 2\nsend_queue 0\nsend_timeout 7\n")
    assert conf.admin_htdigest == str(path)
    assert (conf.keepalive_interval, conf.feed_send_timeout) == (0.5, 12.0)
    assert (conf.send_concurrency, conf.send_queue, conf.send_timeout) == (2, 0, 7.0)


def test_a_bad_htdigest_file_names_its_line(tmp_path):
    path = tmp_path / "admin.htdigest"
    path.write_text("# admins\nadmin:CAStor administrator:" + "0" * 32 + "\nbroken line\n")
    message = error_of(BASE + f"admin_htdigest {path}\n")
    assert message.startswith("admin_htdigest: ") and f"{path}:3" in message
    message = error_of(BASE + f"admin_htdigest {tmp_path / 'missing'}\n")
    assert message.startswith("admin_htdigest: ") and "cannot read" in message
    assert error_of(BASE + "admin_htdigest relative/file\n").startswith("admin_htdigest:")


@pytest.mark.parametrize("line", ["keepalive_interval 0", "feed_send_timeout x",
                                  "send_concurrency 0", "send_queue -1", "send_timeout -2"])
def test_bad_admin_values_name_the_directive(line):
    assert error_of(BASE + line + "\n").startswith(line.split()[0] + ":")
