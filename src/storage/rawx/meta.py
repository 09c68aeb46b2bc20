"""Chunk metadata: request headers <-> extended attributes, with RAWX's validation rules.

Spec rawx.md sections 2-4. Header names are matched lower-case; reply headers go out in
canonical form. All values are ``str`` decoded as latin-1 from the wire, xattr values
are ``bytes``.
"""
import hashlib
import re
from urllib.parse import quote, unquote_to_bytes

import blake3

from storage.errors import BadRequest
from storage.fast import load

PREFIX = "x-oio-chunk-meta-"
EXT_PREFIX = "x-oio-ext-"
TRUE_WORDS = ("true", "yes", "on", "1")
XATTR_FULLPATH = "user.oio.content.fullpath:"
XATTR_EXT = "user.oio.ext."

# logical name -> xattr key
XATTR = {
    "chunk_hash": "user.grid.chunk.hash",
    "chunk_size": "user.grid.chunk.size",
    "chunk_pos": "user.grid.chunk.position",
    "chunk_method": "user.grid.content.chunk_method",
    "storage_policy": "user.grid.content.storage_policy",
    "metachunk_hash": "user.grid.metachunk.hash",
    "metachunk_size": "user.grid.metachunk.size",
    "compression": "user.grid.compression",
    # written by 4.x/7.x servers, read for legacy chunks
    "legacy_chunk_id": "user.grid.chunk.id",
    "legacy_container": "user.grid.content.container",
    "legacy_path": "user.grid.content.path",
    "legacy_version": "user.grid.content.version",
    "legacy_content_id": "user.grid.content.id",
}

_HEX_ID = re.compile(r"[0-9A-Fa-f]{24,64}\Z", re.ASCII)
_HEX_0_64 = re.compile(r"[0-9A-Fa-f]{0,64}\Z", re.ASCII)
_INT64 = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
_INT64_MAX = (1 << 63) - 1
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB
# Content-Path reply escaping keeps these bytes as they are (like Go's url.PathEscape
# as the reference uses it), escapes the rest with upper-case hex.
_PATH_SAFE_EXTRA = "$&+:=@"


streamio = load("streamio")


def new_hasher(algo):
    """A fresh hasher of a chunk's data: "md5" (the compiled Md5) or blake3."""
    return streamio.Md5() if algo == "md5" else blake3.blake3()


def hash_algo(chunk_hash):
    """The algorithm a stored chunk hash was made with: 32 hex digits are MD5."""
    return "md5" if len(chunk_hash) == 32 else "blake3"

def _unquote(text):
    """Percent-decode header text into bytes. The text is the latin-1 view of the wire
    bytes: unquote_to_bytes(str) would re-encode raw non-ASCII bytes as UTF-8."""
    return unquote_to_bytes(text.encode("latin-1"))


def valid_chunk_id(text):
    """True for 24 to 64 ASCII hex characters."""
    return _HEX_ID.match(text) is not None


def parse_int64(name, value):
    if not _INT64.match(value):
        raise BadRequest(f"invalid {name}: not an integer")
    number = int(value)
    if not -_INT64_MAX - 1 <= number <= _INT64_MAX:
        raise BadRequest(f"invalid {name}: out of int64 range")
    return number


def check_hex(name, value):
    if not _HEX_0_64.match(value):
        raise BadRequest(f"invalid {name}: not hexadecimal")
    return value.upper()


def canonical_header(name):
    """Go's textproto canonical form: 'x-oio-ext-foo-bar' -> 'X-Oio-Ext-Foo-Bar'."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def container_id(account, container):
    """SHA256(account + NUL + container), upper-case hex (the cid OpenIO uses)."""
    return hashlib.sha256(account + b"\0" + container).hexdigest().upper()


def escape_path(raw):
    """Percent-encode bytes outside the safe set, upper-case hex."""
    # quote() always keeps ASCII letters, digits and "_.-~"; the rest of the set is `safe`.
    return quote(raw, safe=_PATH_SAFE_EXTRA)


class FullPath:
    """``acct/cont/path/version/contentid``, each part percent-encoded."""

    __slots__ = ("raw", "account", "container", "path", "version", "content_id")

    def __init__(self, raw, account, container, path, version, content_id):
        self.raw = raw
        self.account = account
        self.container = container
        self.path = path
        self.version = version
        self.content_id = content_id

    @classmethod
    def parse(cls, value):
        """Validate a Full-Path header; the stored form has the content id upper-cased."""
        parts = value.split("/")
        if len(parts) != 5:
            raise BadRequest("invalid full-path: expected 5 parts")
        try:
            account, container, path = (_unquote(p) for p in parts[:3])
            version = _unquote(parts[3]).decode("ascii")
            content_id = _unquote(parts[4]).decode("ascii")
        except UnicodeError:
            raise BadRequest("invalid full-path: non-ASCII version or content id") from None
        if not account or not container or not path:
            raise BadRequest("invalid full-path: empty account, container or path")
        parse_int64("full-path version", version)
        check_hex("full-path content id", content_id)
        parts[4] = parts[4].upper()
        return cls("/".join(parts), account, container, path, version, content_id.upper())

    @classmethod
    def from_stored(cls, stored):
        """Lenient parse of a stored full path (never raises)."""
        parts = stored.split("/")
        if len(parts) != 5:
            return None
        return cls(stored, _unquote(parts[0]), _unquote(parts[1]), _unquote(parts[2]),
                   _unquote(parts[3]).decode("latin-1"),
                   _unquote(parts[4]).decode("latin-1").upper())


class ChunkMethod:
    """``type/k=v,k=v``; decides the hash algorithm through ``cca``."""

    __slots__ = ("stored", "algo", "is_ec")

    def __init__(self, value):
        kind, slash, params = value.partition("/")
        if not slash:
            raise BadRequest("invalid content-chunk-method: missing '/'")
        cca = None
        for item in params.split(","):
            key, _, val = item.partition("=")
            if key.strip() == "cca":
                cca = val.strip()
        if cca is None:
            self.stored = value + ("," if params else "") + "cca=md5"
            self.algo = "md5"
        else:
            self.stored = value
            self.algo = "md5" if cca == "md5" else "blake3"
        self.is_ec = kind == "ec"


def _hdr(headers, name):
    return headers.get(PREFIX + name, "")


def ext_attrs(fields):
    """{xattr: bytes} for every X-Oio-Ext-* field of an iterable of (lname, value).
    Raises BadRequest for a value whose percent-decoding holds a control byte: a CR/LF
    would come back as a header line in GET replies, a NUL cannot be an xattr value."""
    attrs = {}
    for name, value in fields:
        if name.startswith(EXT_PREFIX) and len(name) > len(EXT_PREFIX):
            key = canonical_header(name)[len(EXT_PREFIX):]
            raw = _unquote(value)
            if _CONTROL.search(raw):
                raise BadRequest(f"invalid {canonical_header(name)}: control character")
            attrs[XATTR_EXT + key] = raw
    return attrs


class PutMeta:
    """The validated metadata of a PUT, built from the request headers before any byte of
    the body is read (400 beats 409), completed with the trailers at the end."""

    def __init__(self, chunk_id, headers):
        """headers: {lower-case name: str}. Raises BadRequest with a one-line reason."""
        self.chunk_id = chunk_id
        self.headers = headers
        policy = _hdr(headers, "content-storage-policy")
        if not policy:
            raise BadRequest("missing header X-oio-Chunk-Meta-Content-Storage-Policy")
        method = _hdr(headers, "content-chunk-method")
        if not method:
            raise BadRequest("missing header X-oio-Chunk-Meta-Content-Chunk-Method")
        self.method = ChunkMethod(method)
        self.position = _hdr(headers, "chunk-pos")
        if not self.position:
            raise BadRequest("missing header X-oio-Chunk-Meta-Chunk-Pos")
        raw_fullpath = _hdr(headers, "full-path")
        if not raw_fullpath:
            raise BadRequest("missing header X-oio-Chunk-Meta-Full-Path")
        self.fullpath = FullPath.parse(raw_fullpath)
        self.policy = policy
        self._check_consistency(headers)
        self.chunk_hash = check_hex("chunk-hash", _hdr(headers, "chunk-hash"))
        self.metachunk_hash = check_hex("metachunk-hash", _hdr(headers, "metachunk-hash"))
        self.chunk_size = _hdr(headers, "chunk-size")
        if self.chunk_size:
            parse_int64("chunk-size", self.chunk_size)
        self.metachunk_size = _hdr(headers, "metachunk-size")
        if self.metachunk_size:
            parse_int64("metachunk-size", self.metachunk_size)
        self.non_optimal = _hdr(headers, "non-optimal-placement").lower() in TRUE_WORDS
        self.ext = ext_attrs(headers.items())
        self.compression = ""  # the codec of the stored body, set by a compressing upload

    def _check_consistency(self, headers):
        fp = self.fullpath
        given_id = _hdr(headers, "chunk-id")
        if given_id and given_id.upper() != self.chunk_id:
            raise BadRequest("chunk-id header does not match the URL")
        cid = _hdr(headers, "container-id")
        if cid and cid.upper() != container_id(fp.account, fp.container):
            raise BadRequest("container-id does not match the full-path")
        content_path = _hdr(headers, "content-path")
        if content_path and _unquote(content_path) != fp.path:
            raise BadRequest("content-path does not match the full-path")
        version = _hdr(headers, "content-version")
        if version and version != fp.version:
            raise BadRequest("content-version does not match the full-path")
        content_id = _hdr(headers, "content-id")
        if content_id:
            if content_id.upper() != fp.content_id:
                raise BadRequest("content-id does not match the full-path")
        elif not fp.content_id:
            raise BadRequest("missing content id")

    def announces_hash(self):
        """True when the client gave the chunk hash as a header, or declared it as a
        trailer in a ``Trailer:`` request header."""
        if self.chunk_hash:
            return True
        declared = self.headers.get("trailer", "")
        return any(name.strip().lower() == PREFIX + "chunk-hash"
                   for name in declared.split(","))

    def finish(self, trailers, computed_hash, received):
        """Apply the trailers and the checks at end of body. Returns the xattrs to write.
        trailers: [(lower name, str value)]; computed_hash: upper hex, or None when the
        body was not hashed (``checksum off|smart``): the announced hash is then stored
        as is, and a chunk whose announced trailer never came is refused (400) rather
        than stored without a hash."""
        tmap = dict(trailers)
        mc_hash = tmap.get(PREFIX + "metachunk-hash")
        if mc_hash is not None:
            self.metachunk_hash = check_hex("metachunk-hash", mc_hash)
        mc_size = tmap.get(PREFIX + "metachunk-size")
        if mc_size is not None:
            parse_int64("metachunk-size", mc_size)
            self.metachunk_size = mc_size
        if self.method.is_ec and not (self.metachunk_hash and self.metachunk_size):
            raise BadRequest("ec chunk without metachunk-hash and metachunk-size")
        expected = tmap.get(PREFIX + "chunk-hash")
        expected = check_hex("chunk-hash", expected) if expected is not None else self.chunk_hash
        if computed_hash is None:
            expected = expected or self.chunk_hash  # an empty trailer does not erase it
            if not expected:
                raise BadRequest("missing chunk-hash (not hashed: checksum is off)")
            computed_hash = expected
        elif expected and expected != computed_hash:
            raise BadRequest("chunk-hash mismatch")
        self.chunk_hash = computed_hash
        size = tmap.get(PREFIX + "chunk-size")
        if size is not None:
            parse_int64("chunk-size", size)
            self.chunk_size = size
        if self.chunk_size:
            if int(self.chunk_size) != received:
                raise BadRequest("chunk-size mismatch")
        else:
            self.chunk_size = str(received)
        self.ext.update(ext_attrs(trailers))
        return self.xattrs()

    def xattrs(self):
        values = {
            XATTR_FULLPATH + self.chunk_id: self.fullpath.raw,
            XATTR["chunk_hash"]: self.chunk_hash,
            XATTR["chunk_size"]: self.chunk_size,
            XATTR["chunk_pos"]: self.position,
            XATTR["chunk_method"]: self.method.stored,
            XATTR["storage_policy"]: self.policy,
            XATTR["metachunk_hash"]: self.metachunk_hash,
            XATTR["metachunk_size"]: self.metachunk_size,
            XATTR["compression"]: self.compression,
        }
        attrs = {k: v.encode("latin-1") for k, v in values.items() if v}
        attrs.update((k, v) for k, v in self.ext.items() if v)
        return attrs


def _text(attrs, key):
    value = attrs.get(key)
    return value.decode("latin-1") if value else ""


class StoredMeta:
    """Metadata of a chunk on disk, from its xattrs (current or legacy layout)."""

    __slots__ = ("chunk_id", "attrs", "fullpath", "container_id", "content_path",
                 "content_version", "content_id", "account", "bucket", "expected_size",
                 "compression")

    def __init__(self, chunk_id, attrs):
        self.chunk_id = chunk_id
        self.attrs = attrs
        raw = _text(attrs, XATTR_FULLPATH + chunk_id)
        fp = FullPath.from_stored(raw) if raw else None
        self.fullpath = raw
        self.account = self.bucket = None
        # the codec of a compressed chunk, "" for a plain one (the reference writes
        # "off" on the chunks it stores uncompressed)
        compression = _text(attrs, XATTR["compression"])
        self.compression = "" if compression == "off" else compression
        # the size the file must have, or None when it cannot be checked (no stored
        # size, or compressed data); a stored size that is not a number never matches
        size = attrs.get(XATTR["chunk_size"])
        if not size or self.compression:
            self.expected_size = None
        else:
            try:
                self.expected_size = int(size)
            except ValueError:
                self.expected_size = -1
        if fp is not None:
            self.account = fp.account
            self.bucket = fp.container
            self.container_id = container_id(fp.account, fp.container)
            self.content_path = escape_path(fp.path)
            self.content_version = fp.version
            self.content_id = fp.content_id
        else:  # a legacy chunk: the content fields have their own xattrs
            self.container_id = _text(attrs, XATTR["legacy_container"]).upper()
            self.content_path = escape_path(attrs.get(XATTR["legacy_path"], b""))
            self.content_version = _text(attrs, XATTR["legacy_version"])
            self.content_id = _text(attrs, XATTR["legacy_content_id"]).upper()

    def get(self, name):
        return _text(self.attrs, XATTR[name])

    def chunk_method(self):
        method = self.get("chunk_method")
        if method and "cca=" not in method:
            algo = "md5" if len(self.get("chunk_hash")) == 32 else "blake3"
            kind, slash, params = method.partition("/")
            sep = "," if params else ("" if slash else "/")
            method = f"{method}{sep}cca={algo}"
        return method

    def reply_headers(self):
        """[(canonical name, value)] for GET/HEAD, empty values left out."""
        pairs = [
            ("X-Oio-Chunk-Meta-Full-Path", self.fullpath),
            ("X-Oio-Chunk-Meta-Container-Id", self.container_id),
            ("X-Oio-Chunk-Meta-Content-Path", self.content_path),
            ("X-Oio-Chunk-Meta-Content-Version", self.content_version),
            ("X-Oio-Chunk-Meta-Content-Id", self.content_id),
            ("X-Oio-Chunk-Meta-Content-Storage-Policy", self.get("storage_policy")),
            ("X-Oio-Chunk-Meta-Content-Chunk-Method", self.chunk_method()),
            ("X-Oio-Chunk-Meta-Metachunk-Hash", self.get("metachunk_hash")),
            ("X-Oio-Chunk-Meta-Metachunk-Size", self.get("metachunk_size")),
            ("X-Oio-Chunk-Meta-Chunk-Id", self.chunk_id),
            ("X-Oio-Chunk-Meta-Chunk-Pos", self.get("chunk_pos")),
            ("X-Oio-Chunk-Meta-Chunk-Hash", self.get("chunk_hash")),
            ("X-Oio-Chunk-Meta-Chunk-Size", self.get("chunk_size")),
        ]
        for key, value in self.attrs.items():
            if key.startswith(XATTR_EXT) and value:
                pairs.append(("X-Oio-Ext-" + key[len(XATTR_EXT):], value.decode("latin-1")))
        return [(k, v) for k, v in pairs if v]

    def event_data(self, volume_id, service_id):
        """The ``data`` object of storage.chunk.* events (spec section 8)."""
        return {
            "volume_id": volume_id,
            "volume_service_id": service_id,
            "full_path": self.fullpath,
            "container_id": self.container_id,
            "content_path": self.content_path,
            "content_version": self.content_version,
            "content_id": self.content_id,
            "content_storage_policy": self.get("storage_policy"),
            "metachunk_hash": self.get("metachunk_hash"),
            "metachunk_size": self.get("metachunk_size"),
            "chunk_id": self.chunk_id,
            "content_chunk_method": self.chunk_method(),
            "chunk_position": self.get("chunk_pos"),
            "chunk_hash": self.get("chunk_hash"),
            "chunk_size": self.get("chunk_size"),
        }
