"""The node's configuration: the oio-rawx file format, parsed once into a frozen object.

Format (spec rawx.md section 9): one ``name value`` per line; only the second
whitespace-separated field is read, unless it starts with a double quote, in which case
the quoted value is taken whole; ``#`` lines are comments. Deprecated ``grid_*`` aliases
are accepted with a warning. A name that is neither ours nor one oio-rawx reads is
ignored with a warning naming the line (a misspelled ``fsycn on`` must not silently
leave durability off); oio-rawx's own directives that the node does not use are
ignored quietly, so the reference's files load as they are.
"""
import dataclasses
import difflib
import logging
import os
import re
import shlex

log = logging.getLogger(__name__)

TRUE_WORDS = {"on", "yes", "true", "enable", "enabled", "1"}
FALSE_WORDS = {"off", "no", "false", "disable", "disabled", "0"}

DEPRECATED_ALIASES = {
    "grid_docroot": "docroot",
    "grid_namespace": "namespace",
    "grid_hash_width": "hash_width",
    "grid_hash_depth": "hash_depth",
    "grid_fsync": "fsync",
    "grid_fsync_dir": "fsync_dir",
    "grid_compression": "compression",
    "grid_fallocate": "fallocate",
    "grid_service_id": "service_id",
    "grid_checksum": "checksum",
    "grid_buffer_size": "buffer_size",
    "grid_compress": "compression",
    "tcp_keepalive": "http_keepalive",
}
ALIASES = {"Listen": "listen", "compress": "compression"}

# Every directive oio-rawx reads (rawx/conf_reader.go of oio-sds: loadedOpts and
# deprecatedOpts, 2024), and the prefix of its Kafka settings. Those the node does not
# use (syslog_id, fadvise_*, sock_tcp_*, log_*_format, statsd_*, ...) load silently.
OIO_RAWX_DIRECTIVES = frozenset({
    "listen", "Listen", "namespace", "service_id", "syslog_id", "hash_width",
    "hash_depth", "fsync", "fsync_dir", "docroot", "compression", "compress",
    "fallocate", "http_keepalive", "checksum", "buffer_size", "fadvise_upload",
    "fadvise_download", "open_nonblock", "shallow_copy", "event_conn_attempts",
    "max_connections", "timeout_read_header", "timeout_read_request",
    "timeout_write_reply", "timeout_idle", "timeout_conn_event", "timeout_send_event",
    "headers_buffer_size", "sock_tcp_cork", "sock_tcp_nodelay", "events", "topic",
    "tls_cert_file", "tls_key_file", "tls_rawx_url", "log_access_get", "log_access_put",
    "log_access_delete", "log_access_format", "log_request_format", "log_event_format",
    "log_format", "log_level", "statsd_addr", "statsd_prefix", "graceful_stop_timeout",
    "tcp_keepalive", "grid_namespace", "grid_hash_width", "grid_hash_depth", "grid_fsync",
    "grid_fsync_dir", "grid_docroot", "grid_compression", "grid_compress",
    "grid_fallocate", "grid_service_id", "grid_checksum", "grid_buffer_size",
    "grid_fadvise_upload", "grid_fadvise_download",
})
OIO_RAWX_PREFIXES = ("kafka_",)
# Ours, read by other parts of the node: not this parser's (none today).
OTHER_NODE_DIRECTIVES = frozenset()

# Python's int()/float() also take "1_000", non-ASCII digits and "inf": a config file
# means plain decimal numbers.
_INTEGER = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\Z", re.ASCII)


class ConfigError(ValueError):
    """A missing directive or a bad value; str() names the directive."""


@dataclasses.dataclass(frozen=True)
class Config:
    listen_host: str
    listen_port: int
    namespace: str
    docroot: str
    service_id: str = ""
    hash_width: int = 3
    hash_depth: int = 1
    fsync: bool = False
    fsync_dir: bool = False
    fallocate: bool = False
    checksum: str = "always"
    buffer_size: int = 256 * 1024  # bytes (the file gives KiB)
    shallow_copy: bool = False
    http_keepalive: bool = True
    events: bool = False
    event_agent: str = ""
    compression: str = "off"
    timeout_read_header: float = 60.0
    timeout_read_request: float = 900.0
    timeout_write_reply: float = 900.0
    timeout_idle: float = 3600.0
    headers_buffer_size: int = 65536
    log_level: str = "INFO"
    # The second, TLS, listener of the reference (off while tls_host is empty).
    tls_host: str = ""
    tls_port: int = 0
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # Ours, not in oio-rawx: worker processes, access log destination, shutdown grace.
    workers: int = 0  # 0 = one per core
    io_threads: int = 8  # per worker: request bodies, big hashes; 0 = inline
    access_log: str = "-"  # "-" = stderr, "off", or a file path
    shutdown_timeout: float = 10.0
    probe_interval: float = 5.0
    # Admin operations (spec send.md, "Configuration (pinned)"): the htdigest file
    # that guards SEND, SWAP and RSMC ("" = admin operations answer 403), the
    # newline keep-alive period of SEND replies, what a feed SEND's timeout=true means.
    admin_htdigest: str = ""
    keepalive_interval: float = 5.0
    feed_send_timeout: float = 30.0
    # Ours: SEND transfers a worker runs at once (more wait their turn, up to
    # send_queue), and the seconds a target may take to accept a connection or answer.
    send_concurrency: int = 4
    send_queue: int = 64
    send_timeout: float = 60.0
    # RSMC (spec rsmc.md, pinned): the management listener ("" = off), the networks
    # RECEIVE may fetch from and SEND push to, the request log backups kept at start.
    rsmc_host: str = ""
    rsmc_port: int = 0
    rsmc_peers: str = "127.0.0.0/8,::1/128"
    rsmc_log_keep: int = 10
    # SWAP (spec swap.md, pinned): the listener ("" = off), TLS on it, the peer
    # addresses that skip authentication, the plain file area ("" = no files group).
    swap_host: str = ""
    swap_port: int = 0
    swap_tls: bool = False
    swap_peers: str = ""
    swap_files_dir: str = ""
    # Feeds (spec send.md, pinned): the TOML file of feed definitions ("" = no feeds)
    # and what it defines, read at start and on every SIGHUP (storage.feeds.config).
    feeds_config: str = ""
    feeds: tuple = ()

    @property
    def listen(self):
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def tls_enabled(self):
        return bool(self.tls_host)

    @property
    def tls_listen(self):
        if not self.tls_host:
            return ""
        host = f"[{self.tls_host}]" if ":" in self.tls_host else self.tls_host
        return f"{host}:{self.tls_port}"

    @property
    def rsmc_listen(self):
        if not self.rsmc_host:
            return ""
        host = f"[{self.rsmc_host}]" if ":" in self.rsmc_host else self.rsmc_host
        return f"{host}:{self.rsmc_port}"

    @property
    def swap_listen(self):
        if not self.swap_host:
            return ""
        host = f"[{self.swap_host}]" if ":" in self.swap_host else self.swap_host
        return f"{host}:{self.swap_port}"

    @property
    def rsmc_on_loopback(self):
        """RSMC needs no credentials on a loopback address (spec rsmc.md)."""
        import ipaddress
        try:
            return ipaddress.ip_address(self.rsmc_host).is_loopback
        except ValueError:
            return self.rsmc_host == "localhost"

    @property
    def volume_id(self):
        """The id a volume is locked to: service_id, else the listen address."""
        return self.service_id or self.listen

    @property
    def worker_count(self):
        return self.workers or (os.cpu_count() or 1)


def _bool(name, value):
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}: expected a boolean (on/off), got {value!r}")


def _int(name, value, low=None, high=None):
    if not _INTEGER.match(value):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    number = int(value, 10)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ConfigError(f"{name}: {number} out of range [{low}, {high}]")
    return number


def _seconds(name, value):
    if not _DECIMAL.match(value):
        raise ConfigError(f"{name}: expected a number of seconds, got {value!r}")
    number = float(value)
    if not number > 0:
        raise ConfigError(f"{name}: must be > 0, got {value!r}")
    return number


def _choice(name, value, choices):
    if value.lower() not in choices:
        raise ConfigError(f"{name}: expected one of {'|'.join(choices)}, got {value!r}")
    return value.lower()


def parse_listen(value, name="listen"):
    """'host:port', '[v6]:port' or a bare port -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "0.0.0.0", value
    host = host.strip("[]") or "0.0.0.0"
    return host, _int(name, port, 0, 65535)


# name -> (dataclass field, converter(name, raw) -> value)
_DIRECTIVES = {
    "namespace": ("namespace", lambda n, v: v),
    "docroot": ("docroot", lambda n, v: v),
    "service_id": ("service_id", lambda n, v: v),
    "hash_width": ("hash_width", lambda n, v: _int(n, v, 0, 16)),
    "hash_depth": ("hash_depth", lambda n, v: _int(n, v, 0, 8)),
    "fsync": ("fsync", _bool),
    "fsync_dir": ("fsync_dir", _bool),
    "fallocate": ("fallocate", _bool),
    "checksum": ("checksum", lambda n, v: _choice(n, v, ("always", "smart", "off"))),
    "buffer_size": ("buffer_size", lambda n, v: _int(n, v, 4, 65536) * 1024),
    "shallow_copy": ("shallow_copy", _bool),
    "http_keepalive": ("http_keepalive", _bool),
    "events": ("events", _bool),
    "event_agent": ("event_agent", lambda n, v: v),
    "compression": ("compression", lambda n, v: _choice(n, v, ("off", "zlib"))),
    "timeout_read_header": ("timeout_read_header", _seconds),
    "timeout_read_request": ("timeout_read_request", _seconds),
    "timeout_write_reply": ("timeout_write_reply", _seconds),
    "timeout_idle": ("timeout_idle", _seconds),
    "headers_buffer_size": ("headers_buffer_size", lambda n, v: _int(n, v, 1024, 1 << 24)),
    "log_level": ("log_level", lambda n, v: _log_level(n, v)),
    "workers": ("workers", lambda n, v: _int(n, v, 0, 1024)),
    "io_threads": ("io_threads", lambda n, v: _int(n, v, 0, 64)),
    "access_log": ("access_log", lambda n, v: v),
    "shutdown_timeout": ("shutdown_timeout", _seconds),
    "probe_interval": ("probe_interval", _seconds),
    "tls_cert_file": ("tls_cert_file", lambda n, v: v),
    "tls_key_file": ("tls_key_file", lambda n, v: v),
    "admin_htdigest": ("admin_htdigest", lambda n, v: v),
    "keepalive_interval": ("keepalive_interval", _seconds),
    "feed_send_timeout": ("feed_send_timeout", _seconds),
    "send_concurrency": ("send_concurrency", lambda n, v: _int(n, v, 1, 256)),
    "send_queue": ("send_queue", lambda n, v: _int(n, v, 0, 100000)),
    "send_timeout": ("send_timeout", _seconds),
    "rsmc_peers": ("rsmc_peers", lambda n, v: _peers(n, v)),
    "rsmc_log_keep": ("rsmc_log_keep", lambda n, v: _int(n, v, 1, 1000)),
    "swap_tls": ("swap_tls", _bool),
    "swap_peers": ("swap_peers", lambda n, v: _swap_peers(n, v)),
    "swap_files_dir": ("swap_files_dir", lambda n, v: v),
    "feeds_config": ("feeds_config", lambda n, v: v),
}


def _swap_peers(name, value):
    from storage.swap.connection import parse_peers
    try:
        parse_peers(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value


def _peers(name, value):
    from storage.rsmc.commands import parse_peers
    try:
        parse_peers(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value


def _log_level(name, value):
    level = value.upper()
    aliases = {"ERR": "ERROR", "WARN": "WARNING", "NOTICE": "INFO", "CRIT": "CRITICAL"}
    level = aliases.get(level, level)
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{name}: unknown log level {value!r}")
    return level


def node_directives():
    """The directive names this parser reads into the Config (aliases aside)."""
    return set(_DIRECTIVES) | {"listen", "tls_rawx_url", "rsmc_listen", "swap_listen"}


def known_directives():
    """Every directive name that loads without a warning."""
    return (node_directives() | set(ALIASES) | set(DEPRECATED_ALIASES)
            | OIO_RAWX_DIRECTIVES | OTHER_NODE_DIRECTIVES)


def _ignore(name, source, lineno):
    """A directive the node does not use: quiet if oio-rawx or another service of
    ours reads it, else a warning (with the closest known name, if any)."""
    if name in OIO_RAWX_DIRECTIVES or name in OTHER_NODE_DIRECTIVES \
            or name.startswith(OIO_RAWX_PREFIXES):
        log.debug("%s:%d: ignoring %s (not used by storage-node)", source, lineno, name)
        return
    close = difflib.get_close_matches(name, sorted(known_directives()), n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    log.warning("%s:%d: unknown directive %s ignored (neither storage-node's nor "
                "oio-rawx's)%s", source, lineno, name, hint)


def _split_line(line):
    """-> (name, value) or None for blank/comment lines. Only field 2 is read."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    parts = stripped.split(None, 1)
    if len(parts) < 2:
        return parts[0], ""
    name, rest = parts
    if rest.startswith('"'):
        try:
            value = shlex.split(rest)[0]
        except ValueError:
            raise ConfigError(f"{name}: unterminated quoted value") from None
        return name, value
    return name, rest.split()[0]


def parse_text(text, source="<config>"):
    """Parse oio-rawx configuration text into a Config. Raises ConfigError."""
    values = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        pair = _split_line(line)
        if pair is None:
            continue
        name, raw = pair
        name = ALIASES.get(name, name)
        if name in DEPRECATED_ALIASES:
            log.warning("%s:%d: %s is deprecated, use %s", source, lineno, name,
                        DEPRECATED_ALIASES[name])
            name = DEPRECATED_ALIASES[name]
        if name == "listen":
            if not raw:
                raise ConfigError("listen: empty value")
            values["listen_host"], values["listen_port"] = parse_listen(raw)
            continue
        if name == "swap_listen":
            if not raw:
                raise ConfigError("swap_listen: empty value")
            values["swap_host"], values["swap_port"] = parse_listen(raw, name)
            continue
        if name == "rsmc_listen":
            if not raw:
                raise ConfigError("rsmc_listen: empty value")
            values["rsmc_host"], values["rsmc_port"] = parse_listen(raw, name)
            continue
        if name == "tls_rawx_url":
            if not raw:
                raise ConfigError("tls_rawx_url: empty value")
            values["tls_host"], values["tls_port"] = parse_listen(raw, name)
            continue
        if name not in _DIRECTIVES:
            _ignore(name, source, lineno)
            continue
        field, convert = _DIRECTIVES[name]
        if not raw:
            raise ConfigError(f"{name}: empty value")
        values[field] = convert(name, raw)
    return build(values)


def build(values):
    """Check required directives and cross-field rules, return the frozen Config."""
    for field, directive in (("listen_host", "listen"), ("namespace", "namespace"),
                             ("docroot", "docroot")):
        if not values.get(field):
            raise ConfigError(f"{directive}: missing required directive")
    if not os.path.isabs(values["docroot"]):
        raise ConfigError(f"docroot: must be an absolute path, got {values['docroot']!r}")
    if values.get("events"):
        if not values.get("event_agent"):
            raise ConfigError("event_agent: events on needs event_agent beanstalk://host:port")
        from storage.events import parse_event_agent  # imports this module
        parse_event_agent(values["event_agent"])
    if values.get("tls_host"):
        for directive in ("tls_cert_file", "tls_key_file"):
            if not values.get(directive):
                raise ConfigError(f"{directive}: tls_rawx_url needs tls_cert_file and "
                                  "tls_key_file")
    htdigest = values.get("admin_htdigest")
    if htdigest:
        if not os.path.isabs(htdigest):
            raise ConfigError(f"admin_htdigest: must be an absolute path, got {htdigest!r}")
        from storage import auth  # the file must load now: a bad line stops the node
        try:
            auth.load_htdigest(htdigest)
        except auth.HtdigestError as exc:
            raise ConfigError(f"admin_htdigest: {exc}") from None
    if values.get("rsmc_host") and not htdigest:
        probe = Config(listen_host="127.0.0.1", listen_port=0, namespace="x", docroot="/",
                       rsmc_host=values["rsmc_host"])
        if not probe.rsmc_on_loopback:
            raise ConfigError("rsmc_listen: off loopback every request needs credentials: "
                              "set admin_htdigest")
    files_dir = values.get("swap_files_dir")
    if files_dir and not os.path.isabs(files_dir):
        raise ConfigError(f"swap_files_dir: must be an absolute path, got {files_dir!r}")
    if values.get("swap_tls"):
        if not values.get("swap_host"):
            raise ConfigError("swap_tls: needs swap_listen")
        for directive in ("tls_cert_file", "tls_key_file"):
            if not values.get(directive):
                raise ConfigError(f"{directive}: swap_tls on needs tls_cert_file and "
                                  "tls_key_file")
    feeds_path = values.get("feeds_config")
    if feeds_path:
        if not os.path.isabs(feeds_path):
            raise ConfigError(f"feeds_config: must be an absolute path, got {feeds_path!r}")
        from storage.feeds import config as feeds_config  # imports this module
        values["feeds"] = feeds_config.load(feeds_path)
    access = values.get("access_log", "-")
    if access not in ("-", "off") and not os.path.isabs(access):
        raise ConfigError(f"access_log: must be -, off or an absolute path, got {access!r}")
    return Config(**values)


def load_file(path):
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8") from None
    return parse_text(text, source=path)


EMBEDDED_DEFAULT = """\
# storage-node embedded default: a single local volume, events off.
listen 127.0.0.1:6009
namespace OPENIO
docroot {docroot}
hash_width 3
hash_depth 1
fsync off
"""


def embedded_default(cwd=None):
    """The configuration used without -f: 127.0.0.1:6009, OPENIO, ./data/rawx."""
    docroot = os.path.abspath(os.path.join(cwd or os.getcwd(), "data", "rawx"))
    return parse_text(EMBEDDED_DEFAULT.format(docroot=docroot), source="<embedded>")


def load(path=None, overrides=None, cwd=None):
    """The node's configuration: the file at ``path`` (else the embedded default for
    ``cwd``) with ``overrides`` (command-line settings) applied. Raises ConfigError."""
    config = load_file(path) if path else embedded_default(cwd)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return config
