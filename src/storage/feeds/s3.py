"""s3backup feeds (spec send.md, "What each feed type delivers"): one S3 object per
chunk, and what ``storage-node feeds restore`` needs to read it back.

Object: ``<key_prefix>/<CHUNKID>`` (``<CHUNKID>`` without a prefix); its body is the
chunk's data, uncompressed (a chunk the node stores compressed is inflated on the
way), streamed: never more than a piece of it in memory.

Metadata: the PUT headers that recreate the chunk on a RAWX node
(``send.push.put_headers``: every ``X-oio-Chunk-Meta-*`` and ``X-Oio-Ext-*``, the
hash among them, so the node a restore writes to verifies the data):
- in the object's S3 user metadata when they fit: ``oio-format: 1``, then one entry
  per header, ``oio-<name>`` for ``X-oio-Chunk-Meta-<name>`` and ``oio-ext-<name>``
  for ``X-Oio-Ext-<name>``, lower case (headers are case-insensitive and a node
  canonicalizes the names). S3 user metadata are ASCII, header values are bytes (seen
  as latin-1), so a value goes percent-encoded: every byte outside 0x21..0x7E, and
  ``%`` itself, as ``%XX``. Exact both ways, whatever the bytes;
- in a sidecar object ``<key>.meta`` when they do not: S3 allows 2 KB of user
  metadata (the bytes of every key and value), which a long full path or a few long
  ``X-Oio-Ext-*`` values exceed. The sidecar is JSON ``{"format": 1, "chunk_id": ID,
  "headers": {name: value}}`` (values latin-1 strings: JSON keeps them exact), written
  before the data object, whose user metadata are then ``oio-format: 1`` and
  ``oio-sidecar: 1``. A restore that finds an object without these entries, or a
  sidecar missing or naming another chunk, reports the chunk and writes nothing.

Integrity: the data is hashed while it is read (MD5 or BLAKE3, as the chunk's stored
hash says) and the last bytes are only handed to boto3 once the hash matches the
stored one, so a corrupt local chunk never becomes a complete object (412, FAILED).
Against corruption on the way, an MD5 chunk's stored hash goes as ``Content-MD5`` (S3
refuses a body that does not match); for a BLAKE3 chunk the reply's ``ETag`` (the
MD5 of a single-part object, but under SSE-KMS) is compared with the MD5 computed on
the way. Objects are single PUTs, so a chunk is at most 5 GiB (bigger: FAILED 413).

Errors: a connection failure, a timeout, a 5xx or throttling is retried; so is what
an operator must fix (no such bucket, denied access, bad credentials): the feed then
shows ``retrying`` and ``blocked`` in ``/stat`` with the reason in its log and in
``storage-node feeds status``, and drains once it is fixed. Only what no retry can
fix for this chunk is FAILED: the object or its metadata too large, an argument S3
refuses. A DELETE deletes the object and its sidecar (absent counts as done).

boto3 is imported here, lazily: a node without s3backup feeds never loads it.
Endpoint and credentials come as boto3 users expect them: the feed's ``endpoint``
(else AWS's), boto3's credential chain, the region of ``AWS_DEFAULT_REGION`` or
``~/.aws/config``, else ``us-east-1``.
"""
import base64
import hashlib
import io
import json
import os
import re
import threading
from urllib.parse import unquote_to_bytes

from storage.feeds.deliver import DONE, DROP, Outcome, local_chunk
from storage.feeds.queue import DELETED
from storage.rawx import compress
from storage.rawx import meta as chunkmeta
from storage.send.push import CorruptSource, put_headers

FORMAT = "1"
USER_META_LIMIT = 2048  # bytes of user metadata keys and values S3 accepts
SIDECAR_SUFFIX = ".meta"
SIDECAR_MAX = 1 << 20  # bytes: a larger sidecar is not ours
PIECE = 1 << 20  # bytes: the most a read hands boto3 at once
DEFAULT_REGION = "us-east-1"
MAX_OBJECT = 5 << 30  # bytes: the largest single PUT S3 takes
META_HEADER = "X-Oio-Chunk-Meta-"
EXT_HEADER = "X-Oio-Ext-"
# S3 error codes that retrying the same chunk cannot fix
FAILED_CODES = {"EntityTooLarge": 413, "MetadataTooLarge": 400, "InvalidArgument": 400,
                "KeyTooLongError": 400}


class BadBackup(Exception):
    """An object whose chunk metadata are missing or unreadable; str() says why."""


def object_key(feed_or_prefix, chunk_id):
    prefix = getattr(feed_or_prefix, "key_prefix", feed_or_prefix)
    return f"{prefix}/{chunk_id}" if prefix else chunk_id


def _quote(value):
    return "".join(ch if "!" <= ch <= "~" and ch != "%" else f"%{ord(ch):02X}"
                   for ch in value)


def _unquote(text):
    return unquote_to_bytes(text).decode("latin-1")


# ---- metadata <-> S3 --------------------------------------------------------------------
def encode_metadata(chunk_id, headers):
    """(user metadata dict, sidecar bytes or None) for a chunk's PUT ``headers``."""
    user = {"oio-format": FORMAT}
    for name, value in headers.items():
        lname = name.lower()
        if lname.startswith(META_HEADER.lower()):
            key = "oio-" + lname[len(META_HEADER):]
        elif lname.startswith(EXT_HEADER.lower()):
            key = "oio-ext-" + lname[len(EXT_HEADER):]
        else:
            continue
        user[key] = _quote(value)
    if sum(len(k) + len(v) for k, v in user.items()) <= USER_META_LIMIT:
        return user, None
    sidecar = json.dumps({"format": int(FORMAT), "chunk_id": chunk_id, "headers": headers},
                         sort_keys=True).encode("ascii")
    return {"oio-format": FORMAT, "oio-sidecar": "1"}, sidecar


# a chunk metadata header: the prefix, then the rest of an HTTP token
_HEADER_NAME = re.compile(r"(?:x-oio-chunk-meta-|x-oio-ext-)[!#$%&'*+.^_`|~0-9a-z-]+\Z", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a tab is a header value's


def _checked(headers):
    """``headers`` as they are, when each is a chunk metadata header a PUT may carry:
    a backup's metadata never sets another header (Content-Length, Host, ...) nor
    breaks the request's framing. BadBackup otherwise."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise BadBackup(f"its metadata names a header that is not chunk metadata: "
                            f"{name[:60]!r}")
        if _CONTROL.search(value):
            raise BadBackup(f"its metadata {name} holds a control character")
    return headers


def decode_user_metadata(user):
    """The PUT headers in an object's user metadata (no sidecar). BadBackup."""
    headers = {}
    for key, value in user.items():
        key = key.lower()
        if key in ("oio-format", "oio-sidecar") or not key.startswith("oio-"):
            continue
        if key.startswith("oio-ext-"):
            name = EXT_HEADER + chunkmeta.canonical_header(key[len("oio-ext-"):])
        else:
            name = META_HEADER + chunkmeta.canonical_header(key[len("oio-"):])
        try:
            headers[name] = _unquote(value)
        except (ValueError, UnicodeError):
            raise BadBackup(f"metadata {key[:60]} is not percent-encoded ASCII") from None
    return _checked(headers)


def decode_sidecar(data, chunk_id):
    """The PUT headers of a sidecar's bytes. BadBackup."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise BadBackup("its metadata sidecar is not JSON") from None
    headers = doc.get("headers") if isinstance(doc, dict) else None
    if not isinstance(headers, dict) or doc.get("format") != int(FORMAT) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise BadBackup("its metadata sidecar is not in the expected format")
    if str(doc.get("chunk_id", "")).upper() != chunk_id.upper():
        raise BadBackup("its metadata sidecar names another chunk")
    try:
        for value in headers.values():
            value.encode("latin-1")
    except UnicodeError:
        raise BadBackup("its metadata sidecar holds values that are not bytes") from None
    return _checked(headers)


# ---- boto3 ------------------------------------------------------------------------------
def make_client(endpoint="", timeout=30.0, attempts=2, pool=10):
    """A boto3 S3 client (ImportError when boto3 is not installed), with ``pool``
    connections for the threads that share it."""
    import boto3
    from botocore.config import Config
    session = boto3.session.Session()
    # UNSIGNED-PAYLOAD even over http://: botocore would otherwise read every body
    # twice (a SHA-256 pass to sign it, then the send); the signed Content-MD5
    # header and the ETag check guard the data instead
    s3 = {"payload_signing_enabled": False}
    if endpoint:
        s3["addressing_style"] = "path"
    config = Config(
        connect_timeout=timeout, read_timeout=timeout,
        retries={"mode": "standard", "max_attempts": attempts},
        max_pool_connections=max(pool, 1),
        # our own checks (Content-MD5, the hash on the way) instead of a CRC pass
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3=s3)
    return session.client("s3", endpoint_url=endpoint or None,
                          region_name=session.region_name or DEFAULT_REGION, config=config)


def error_code(exc):
    """(S3 error code, HTTP status) of a botocore ClientError."""
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return str(code), int(status)


def describe(exc):
    code, status = error_code(exc)
    if code or status:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        return f"S3 {code or status}" + (f": {message}" if message else "")
    return f"S3: {exc.__class__.__name__}: {exc}"


# ---- the chunk as a body ---------------------------------------------------------------
class CorruptData(Exception):
    """Raised from ChunkBody.read; the body keeps the reason in ``problem``."""


class ChunkBody(io.RawIOBase):
    """A local chunk's data, uncompressed, as the file-like boto3 sends: ``read(n)``,
    ``len()``, ``tell()`` and ``seek(0)`` (a rewind, for botocore's retries: the
    payload is sent unsigned, so it is not read once more to be signed). The data
    is hashed as it is read; data that ends early, or whose hash differs from the
    stored one, raises CorruptData before its last bytes are handed out."""

    def __init__(self, reader, stored):
        super().__init__()
        self.fd = reader.fd
        self.stored = stored
        self.expected = stored.get("chunk_hash").upper()
        if not self.expected:
            raise CorruptSource("it has no stored hash")
        self.algo = chunkmeta.hash_algo(self.expected)
        if stored.compression:
            try:
                self.size = int(stored.get("chunk_size"))
                self.wbits = compress.wbits_for(stored.compression)
            except (ValueError, compress.UnsupportedCompression) as exc:
                raise CorruptSource(f"cannot inflate it: {exc}") from None
        else:
            self.size = reader.size
            if stored.expected_size is not None and stored.expected_size != self.size:
                raise CorruptSource(f"its file has {self.size} bytes, its stored size is "
                                    f"{stored.expected_size}")
        self.problem = None
        self.rewind()

    def rewind(self):
        self.pos = 0
        self.hasher = chunkmeta.new_hasher(self.algo)
        self.md5 = None if self.algo == "md5" else hashlib.md5()
        self.inflater = compress.Inflater(self.fd, self.wbits, 0, self.size, to_end=True) \
            if self.stored.compression else None

    def __len__(self):
        return self.size

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        if whence == io.SEEK_SET and offset == 0:
            self.rewind()
        elif not ((whence == io.SEEK_SET and offset == self.pos)
                  or (whence == io.SEEK_CUR and offset == 0)):
            raise io.UnsupportedOperation("a chunk body only rewinds")
        return self.pos

    def _fail(self, problem):
        self.problem = problem
        raise CorruptData(problem)

    def read(self, size=-1):
        left = self.size - self.pos
        size = left if size is None or size < 0 else min(size, left)
        size = min(size, PIECE)
        if size <= 0:
            return b""
        try:
            if self.inflater is not None:
                data = self.inflater.read(size)
            else:
                data = os.pread(self.fd, size, self.pos)
        except OSError as exc:
            self._fail(f"cannot read it: {exc}")
        if not data:
            self._fail("its data is shorter than its stored size")
        self.hasher.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.pos += len(data)
        if self.pos == self.size:
            computed = self.hasher.hexdigest().upper()
            if computed != self.expected:
                self._fail(f"its data hashes to {computed}, its stored hash is "
                           f"{self.expected}")
        return data

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def md5_hex(self):
        return (self.hasher if self.md5 is None else self.md5).hexdigest().lower()


class SharedClient:
    """One boto3 client for all the threads of a feed: boto3 clients are thread-safe,
    and each one costs tens of MiB (a session loads its service models). Made on
    first use; closed by the last thread to leave."""

    def __init__(self, feed, timeout, users):
        self.feed = feed
        self.timeout = timeout
        self.users = users
        self.lock = threading.Lock()
        self.client = None

    def get(self):
        with self.lock:
            if self.client is None:
                self.client = make_client(self.feed.endpoint, self.timeout,
                                          pool=self.feed.concurrency)
            return self.client

    def release(self):
        with self.lock:
            self.users -= 1
            if self.users <= 0 and self.client is not None:
                self.client.close()
                self.client = None


# ---- the delivery -----------------------------------------------------------------------
class S3Target:
    """A feed thread's side of an s3backup feed (the delivery process), on the feed's
    SharedClient (a client of its own without one)."""

    def __init__(self, feed, repo, timeout, shared=None):
        self.feed = feed
        self.repo = repo
        self.timeout = timeout
        self.shared = shared or SharedClient(feed, timeout, 1)
        self.client = None

    def close(self):
        if self.shared is not None:
            self.shared.release()
            self.shared = None
        self.client = None

    def deliver(self, chunk_id, op, body, recorded_at):
        try:
            import botocore.exceptions as boterr
        except ImportError:
            return Outcome("retry", 503, "boto3 is not installed on this node")
        try:
            if self.client is None:
                self.client = self.shared.get()
            if op == DELETED:
                return self._delete(chunk_id)
            return self._put(chunk_id)
        except boterr.ClientError as exc:
            code, status = error_code(exc)
            if code in FAILED_CODES:
                return Outcome("failed", FAILED_CODES[code], describe(exc))
            return Outcome("retry", status if status >= 400 else 502, describe(exc))
        except boterr.BotoCoreError as exc:  # unreachable, timeout, no credentials
            return Outcome("retry", 502, describe(exc))

    def _delete(self, chunk_id):
        key = object_key(self.feed, chunk_id)
        # deleting an absent key is a success in S3: "404 counts as done"
        self.client.delete_object(Bucket=self.feed.bucket, Key=key)
        self.client.delete_object(Bucket=self.feed.bucket, Key=key + SIDECAR_SUFFIX)
        return DROP

    def _put(self, chunk_id):
        with local_chunk(self.repo, chunk_id) as chunk:
            if chunk is None:
                return DROP
            reader, stored = chunk
            data = ChunkBody(reader, stored)
            if data.size > MAX_OBJECT:
                return Outcome("failed", 413, f"{data.size} bytes: more than one S3 PUT "
                               "takes (5 GiB)")
            return self._upload(chunk_id, data, put_headers(stored))

    def _upload(self, chunk_id, data, headers):
        bucket, key = self.feed.bucket, object_key(self.feed, chunk_id)
        user, sidecar = encode_metadata(chunk_id, headers)
        if sidecar is not None:
            self.client.put_object(Bucket=bucket, Key=key + SIDECAR_SUFFIX, Body=sidecar,
                                   ContentType="application/json",
                                   ContentMD5=_b64(hashlib.md5(sidecar).digest()))
        extra = {}
        if data.algo == "md5":
            extra["ContentMD5"] = _b64(bytes.fromhex(data.expected))
        try:
            reply = self.client.put_object(Bucket=bucket, Key=key, Body=data,
                                           ContentLength=data.size, Metadata=user,
                                           ContentType="application/octet-stream", **extra)
        except Exception:
            if data.problem:  # botocore wraps what the body raised
                raise CorruptSource(data.problem) from None
            raise
        if data.problem:
            raise CorruptSource(data.problem)
        etag = reply.get("ETag", "").strip('"').lower()
        # a single PUT's ETag is the MD5 of what was stored (but with SSE-KMS): checked
        # for every chunk, as some S3-compatible servers ignore Content-MD5
        if reply.get("ServerSideEncryption") != "aws:kms" \
                and len(etag) == 32 and etag != data.md5_hex():
            return Outcome("retry", 502, f"S3 stored {key} with ETag {etag}, the data "
                           f"sent has MD5 {data.md5_hex()}")
        return DONE


def _b64(raw):
    return base64.b64encode(raw).decode("ascii")
