"""storage.config: which directive names load quietly and which get a warning. A
misspelled directive (``fsycn on``) must not leave durability off without a word, while
the reference's own files, full of oio-rawx directives the node does not use, load
without noise."""
import logging
import subprocess
import sys

import pytest

from storage import config as configmod

BASE = "listen 127.0.0.1:6009\nnamespace OPENIO\ndocroot /srv/rawx\n"
# as oio-rawx's conf_reader.go lists them (loadedOpts, deprecatedOpts)
OIO_RAWX_NAMES = """listen Listen namespace service_id syslog_id hash_width hash_depth fsync
fsync_dir docroot compression compress fallocate http_keepalive checksum buffer_size
fadvise_upload fadvise_download open_nonblock shallow_copy event_conn_attempts
max_connections timeout_read_header timeout_read_request timeout_write_reply timeout_idle
timeout_conn_event timeout_send_event headers_buffer_size sock_tcp_cork sock_tcp_nodelay
events topic tls_cert_file tls_key_file tls_rawx_url log_access_get log_access_put
log_access_delete log_access_format log_request_format log_event_format log_format
log_level statsd_addr statsd_prefix graceful_stop_timeout tcp_keepalive grid_namespace
grid_hash_width grid_hash_depth grid_fsync grid_fsync_dir grid_docroot grid_compression
grid_compress grid_fallocate grid_service_id grid_checksum grid_buffer_size
grid_fadvise_upload grid_fadvise_download""".split()
VALUES = {  # a valid value for the names the node parses ("off" fits the others)
    "listen": "127.0.0.1:6009", "Listen": "127.0.0.1:6009", "docroot": "/srv/rawx",
    "grid_docroot": "/srv/rawx", "hash_width": "3", "grid_hash_width": "3",
    "hash_depth": "1", "grid_hash_depth": "1", "checksum": "always",
    "grid_checksum": "always", "buffer_size": "256", "grid_buffer_size": "256",
    "compression": "off", "compress": "off", "grid_compression": "off",
    "grid_compress": "off", "timeout_read_header": "5", "timeout_read_request": "5",
    "timeout_write_reply": "5", "timeout_idle": "5", "headers_buffer_size": "65536",
    "log_level": "INFO", "tls_cert_file": "/c.pem",
    "tls_rawx_url": "127.0.0.1:6010\ntls_cert_file /c.pem\ntls_key_file /k.pem",
    "tls_key_file": "/k.pem", "events": "off",
}


def warnings(caplog, text):
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="storage.config"):
        configmod.parse_text(text, source="rawx.conf")
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_misspelled_directive_is_warned_with_its_line_and_the_likely_name(caplog):
    assert warnings(caplog, BASE + "fsycn on\n") == [
        "rawx.conf:4: unknown directive fsycn ignored (neither storage-node's nor "
        "oio-rawx's); did you mean fsync?"]


def test_every_unknown_name_is_warned(caplog):
    got = warnings(caplog, BASE + "LoadModule mod_dav_rawx.so\nfoo_bar 1\n")
    assert [w.split(":")[1] for w in got] == ["4", "5"]
    assert "LoadModule" in got[0] and "foo_bar" in got[1]


@pytest.mark.parametrize("name", OIO_RAWX_NAMES)
def test_oio_rawx_directives_load_without_a_warning(caplog, name):
    got = warnings(caplog, BASE + f"{name} {VALUES.get(name, 'off')}\n")
    assert [w for w in got if "deprecated" not in w] == []


def test_kafka_settings_load_quietly(caplog):
    text = BASE + "kafka_acks all\nkafka_linger.ms 5\n"
    assert warnings(caplog, text) == []


def test_our_own_directives_load_quietly(caplog):
    text = BASE + ("workers 2\nio_threads 4\naccess_log off\nshutdown_timeout 3\n"
                   "probe_interval 2\nevent_agent beanstalk://127.0.0.1:11300\n")
    assert warnings(caplog, text) == []


def test_the_warning_reaches_the_terminal_at_start(tmp_path):
    """storage-node serve prints it on stderr before its logging is even set up."""
    conf = tmp_path / "rawx.conf"
    conf.write_text("listen 127.0.0.1:0\ndocroot /srv/rawx\nfsycn on\n")  # no namespace
    proc = subprocess.run([sys.executable, "-m", "storage", "serve", "-f", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{conf}:3: unknown directive fsycn ignored (neither storage-node's nor "
        "oio-rawx's); did you mean fsync?",
        "storage-node: configuration error: namespace: missing required directive"]
