"""Feed definitions: the TOML file ``feeds_config`` names (spec send.md, "Configuration
(pinned)"), parsed with the standard library's ``tomllib`` into frozen ``Feed`` objects.

    [feed.1]
    type = "replication"              # replication | s3backup | search | indexing
    target = "http://127.0.0.1:6202"  # replication: a RAWX node of the other cluster
    prefix = "acct/cont"              # optional: chunks whose decoded full path starts so
    deletes = false                   # optional: also propagate DELETEs

Every mistake is a ConfigError (exit 2 at start, ``reload refused`` on SIGHUP) whose
message names the file and the feed: an id that is not a positive integer, a
duplicate id, an unknown type or key, a missing or malformed target, a value of the
wrong type.
"""
import dataclasses
import re
import tomllib
from urllib.parse import urlsplit

from storage.config import ConfigError

TYPES = ("replication", "s3backup", "search", "indexing")
DEFAULT_TUBE = "oio-index"
DEFAULT_CONCURRENCY = 4
DEFAULT_RETRY_MAX = 60.0  # seconds: the longest pause between two attempts
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
_TUBE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                        "-+/;.$_()")
KEYS = {"type", "target", "prefix", "deletes", "endpoint", "tube", "concurrency",
        "retry_max", "backfill", "swap", "swap_auth"}


@dataclasses.dataclass(frozen=True)
class Feed:
    """One feed. ``kind`` is what delivers it: replication, s3backup or index (search
    and indexing are synonyms). ``address``: (host, port) of the replication node or
    of beanstalkd; ``bucket``/``key_prefix`` for s3backup."""
    id: int
    type: str
    target: str
    prefix: str = ""
    deletes: bool = False
    endpoint: str = ""
    tube: str = DEFAULT_TUBE
    concurrency: int = DEFAULT_CONCURRENCY  # deliveries at once (ours)
    retry_max: float = DEFAULT_RETRY_MAX  # seconds (ours)
    backfill: bool = True  # a new feed is owed the chunks already stored (ours)
    swap: tuple = ()  # (host, port) of the replication target's SWAP listener (ours)
    # (user, password) for it; () when this node is its peer (never in a repr)
    swap_auth: tuple = dataclasses.field(default=(), repr=False)
    address: tuple = ()
    bucket: str = ""
    key_prefix: str = ""

    @property
    def kind(self):
        return "index" if self.type in ("search", "indexing") else self.type

    @property
    def prefix_bytes(self):
        return self.prefix.encode("utf-8")

    @property
    def base_url(self):
        """http://host:port of a replication target."""
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def matches(self, decoded_path):
        """Whether a chunk whose decoded full path (bytes) is ``decoded_path`` is
        this feed's."""
        return not self.prefix or decoded_path.startswith(self.prefix_bytes)


def load(path):
    """The feeds of the TOML file at ``path``: a tuple of Feed sorted by id."""
    try:
        with open(path, "rb") as stream:
            doc = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"feeds_config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"feeds_config: {path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"feeds_config: {path}: not UTF-8") from None
    return parse(doc, str(path))


def parse_text(text, source="<feeds>"):
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"feeds_config: {source}: not valid TOML: {exc}") from None
    return parse(doc, source)


def parse(doc, source="<feeds>"):
    """The feeds of a decoded TOML document (a dict)."""
    extra = sorted(set(doc) - {"feed"})
    if extra:
        raise ConfigError(f"feeds_config: {source}: unknown table or key {extra[0]!r} "
                          "(feeds are [feed.<id>] tables)")
    tables = doc.get("feed", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"feeds_config: {source}: 'feed' must be tables [feed.<id>]")
    feeds = {}
    for key, table in tables.items():
        name = f"feeds_config: {source}: feed {key}"
        if not (key.isascii() and key.isdigit()) or int(key) < 1:
            raise ConfigError(f"{name}: the id must be a positive integer")
        fid = int(key)
        if fid in feeds:
            raise ConfigError(f"{name}: duplicate id {fid}")
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: must be a table")
        feeds[fid] = _feed(fid, table, name)
    return tuple(feeds[fid] for fid in sorted(feeds))


def _feed(fid, table, name):
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(f"{name}: unknown key {unknown[0]!r}")

    def text(key, default=""):
        value = table.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{name}: {key} must be a string")
        return value

    kind = text("type")
    if not kind:
        raise ConfigError(f"{name}: missing type ({' | '.join(TYPES)})")
    if kind not in TYPES:
        raise ConfigError(f"{name}: unknown type {kind!r} (expected {' | '.join(TYPES)})")
    target = text("target")
    if not target:
        raise ConfigError(f"{name}: missing target")
    deletes = table.get("deletes", False)
    if not isinstance(deletes, bool):
        raise ConfigError(f"{name}: deletes must be true or false")
    backfill = table.get("backfill", True)
    if not isinstance(backfill, bool):
        raise ConfigError(f"{name}: backfill must be true or false")
    concurrency = table.get("concurrency", DEFAULT_CONCURRENCY)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) \
            or not 1 <= concurrency <= 64:
        raise ConfigError(f"{name}: concurrency must be an integer in 1..64")
    retry_max = table.get("retry_max", DEFAULT_RETRY_MAX)
    if not isinstance(retry_max, (int, float)) or isinstance(retry_max, bool) \
            or not 0.1 <= retry_max <= 86400:
        raise ConfigError(f"{name}: retry_max must be a number of seconds in 0.1..86400")
    fields = dict(id=fid, type=kind, target=target, prefix=text("prefix"), deletes=deletes,
                  concurrency=concurrency, retry_max=float(retry_max), backfill=backfill)
    endpoint = text("endpoint")
    tube = text("tube", DEFAULT_TUBE)
    if endpoint and kind != "s3backup":
        raise ConfigError(f"{name}: endpoint is for s3backup feeds")
    if "tube" in table and kind not in ("search", "indexing"):
        raise ConfigError(f"{name}: tube is for search/indexing feeds")
    if ("swap" in table or "swap_auth" in table) and kind != "replication":
        raise ConfigError(f"{name}: swap and swap_auth are for replication feeds")
    if kind == "replication":
        fields["address"] = _http_address(target, name)
        fields["swap"], fields["swap_auth"] = _swap(text("swap"), text("swap_auth"), name)
    elif kind == "s3backup":
        fields["bucket"], fields["key_prefix"] = _s3_target(target, name)
        if endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{name}: endpoint must be an http(s) URL, got "
                                  f"{endpoint!r}")
        fields["endpoint"] = endpoint
    else:
        from storage.events import parse_event_agent
        try:
            fields["address"] = parse_event_agent(target)
        except ConfigError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise ConfigError(f"{name}: target: {reason}") from None
        if not 0 < len(tube) <= 200 or tube.startswith("-") or not set(tube) <= _TUBE_CHARS:
            raise ConfigError(f"{name}: invalid beanstalkd tube name {tube!r}")
        fields["tube"] = tube
    return Feed(**fields)


def _http_address(target, name):
    parts = urlsplit(target)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None \
            or parts.path not in ("", "/") or parts.query or parts.username:
        raise ConfigError(f"{name}: target must be http://host:port (a RAWX node), got "
                          f"{target!r}")
    return parts.hostname, port


def _swap(value, auth, name):
    """(host, port) of ``swap = "host:port"`` and (user, password) of ``swap_auth =
    "user:password"``."""
    if auth and not value:
        raise ConfigError(f"{name}: swap_auth needs swap")
    if not value:
        return (), ()
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isascii() or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: swap must be host:port (the target's swap_listen), "
                          f"got {value!r}")
    credentials = ()
    if auth:
        user, sep, password = auth.partition(":")
        if not sep or not user:
            raise ConfigError(f"{name}: swap_auth must be user:password")
        credentials = (user, password)
    return (host, int(port)), credentials


def _s3_target(target, name):
    parts = urlsplit(target)
    bucket = parts.netloc
    if parts.scheme != "s3" or not _S3_BUCKET.match(bucket or "") or ".." in bucket \
            or parts.query or parts.fragment:
        raise ConfigError(f"{name}: target must be s3://bucket/prefix (a valid S3 "
                          f"bucket name), got {target!r}")
    return bucket, parts.path.strip("/")
