"""The node's one admin credential module: the htdigest file, HTTP Digest and Basic
(SEND, later SWAP and RSMC), and a plain password check (SASL PLAIN, RSMC).

Public API (everything else is private):

    REALM = "CAStor administrator"
    DEFAULT_NONCE_LIFETIME = 300          # seconds
    MAX_AUTHORIZATION = 8192              # bytes of an Authorization value

    class AuthError(ValueError)           # a malformed Authorization value; str() is one line
    class HtdigestError(ConfigError)      # "<path>:<line>: reason" or "<path>: cannot read: ..."

    load_htdigest(path) -> Htdigest       # raises HtdigestError
    Htdigest.path, Htdigest.users         # {user: ha1 hex} for REALM only
    Htdigest.ha1(user) -> str | None
    Htdigest.check_password(user, password) -> bool   # str or bytes (UTF-8)

    new_secret() -> bytes                 # 32 random bytes; the master makes it before fork
    ReplayTable(slots=65536, window=16)   # create in the master before fork; .close()
    ReplayTable.record(key, nc, expires_ms, now_ms) -> RECORDED | REPLAYED | FULL
                                          # (AdminAuth calls it; 32 bytes a slot)

    parse_authorization(value) -> BasicCredentials | DigestCredentials   # sans-I/O
    BasicCredentials(user, password)                                     # NamedTuple of str
    DigestCredentials(username, realm, nonce, uri, response, algorithm, qop, nc, cnonce,
                      opaque, params)     # NamedTuple of str (None if absent); params:
                                          # every auth-param, names lower-cased

    AdminAuth(htdigest, secret, replay_table, lifetime=DEFAULT_NONCE_LIFETIME,
              clock=time.time)
    AdminAuth.challenge(stale=False) -> [("WWW-Authenticate", digest), ("WWW-Authenticate", basic)]
    AdminAuth.check(method, target, authorization) -> AuthResult   # never raises on input
    AdminAuth.check_password(user, password) -> bool
    AdminAuth.new_nonce() -> str          # (challenge() calls it)
    AuthResult(ok, user, stale, reason)   # on a refusal, answer 401 with challenge(stale)

  The client side (storage-node send, tools):
    parse_challenge(value) -> (scheme lower-cased, {param: value})   # one WWW-Authenticate
    digest_authorization(challenge_params, user, password, method, uri, nc, cnonce) -> str
                                          # nc: int; AuthError if the challenge's qop or
                                          # algorithm is not one we answer (auth, MD5(-sess))

Nonces are ours: base64url(timestamp ms, 8 random bytes, HMAC-SHA256(secret, both)), so
any worker sharing the secret accepts any worker's nonce until it is ``lifetime`` old.
Only Digest with ``qop=auth`` is accepted (``algorithm`` MD5, absent, or MD5-sess): it
is what carries the nonce count that the shared ReplayTable checks. A refusal whose
response digest was right (expired nonce, another secret's nonce, a replayed or
unrecordable nonce count) is ``stale``: the client silently retries with a new nonce.
A SIGHUP reload builds a new AdminAuth from a new load_htdigest() with the same secret
and table, so outstanding nonces stay valid.

Wiring: the master makes ``secret = new_secret()`` and ``table = ReplayTable()`` before
it forks; each worker builds ``AdminAuth(load_htdigest(path), secret, table)`` and, when
``check()`` refuses, answers 401 with the fields of ``challenge(result.stale)``.
"""
import base64
import binascii
import fcntl
import hashlib
import hmac
import logging
import mmap
import os
import re
import struct
import threading
import time
import weakref
from typing import NamedTuple

from storage.config import ConfigError

log = logging.getLogger(__name__)

REALM = "CAStor administrator"
DEFAULT_NONCE_LIFETIME = 300
MAX_AUTHORIZATION = 8192


class AuthError(ValueError):
    """A malformed Authorization header value; str() is a one-line reason."""


class HtdigestError(ConfigError):
    """An unreadable or malformed htdigest file; str() names the file and line."""


# -- the htdigest file -----------------------------------------------------------------

_HA1 = re.compile(r"[0-9a-fA-F]{32}\Z")


def _md5_hex(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _utf8(value):
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


class Htdigest:
    """The users of REALM in an htdigest file: ``users`` maps user -> ha1 (lower hex)."""

    def __init__(self, path, users):
        self.path = path
        self.users = dict(users)

    def ha1(self, user):
        """The stored md5(user:realm:password) hex of ``user``, or None."""
        return self.users.get(user)

    def check_password(self, user, password):
        """True if ``password`` is ``user``'s (str or UTF-8 bytes, each)."""
        user_bytes = _utf8(user)
        try:
            name = user_bytes.decode("utf-8")
        except UnicodeDecodeError:
            name = None
        stored = self.users.get(name)
        # an unknown user costs the same hash and comparison as a known one
        got = _md5_hex(user_bytes + b":" + REALM.encode() + b":" + _utf8(password))
        return hmac.compare_digest(got, stored or "0" * 32) and stored is not None


def load_htdigest(path):
    """Read the htdigest file at ``path``: ``user:realm:md5(user:realm:password)`` a line,
    blank lines and ``#`` comments allowed; lines of other realms are kept out."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise HtdigestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    users = {}
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise HtdigestError(f"{path}:{number}: not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        user, sep, rest = line.partition(":")
        realm, sep2, ha1 = rest.rpartition(":")
        if not sep or not sep2:
            raise HtdigestError(f"{path}:{number}: expected user:realm:md5hex")
        if not user or any(ord(c) < 0x20 or ord(c) == 0x7F for c in user):
            raise HtdigestError(f"{path}:{number}: empty user or control character")
        if not _HA1.match(ha1):
            raise HtdigestError(f"{path}:{number}: the hash is not 32 hex digits")
        if realm != REALM:
            continue
        if user in users:
            raise HtdigestError(f"{path}:{number}: user {user!r} listed twice")
        users[user] = ha1.lower()
    if not users:
        log.warning("%s: no user of realm %r: nobody can log in as admin", path, REALM)
    return Htdigest(path, users)


# -- the shared nonce-count table ------------------------------------------------------

RECORDED, REPLAYED, FULL = "recorded", "replayed", "full"
_SLOT = struct.Struct("<16sQI4x")  # nonce key, expiry (ms since the epoch), highest nc


class ReplayTable:
    """The highest nonce count seen per live nonce, in memory every forked worker shares.

    A memfd mapped MAP_SHARED holds ``slots`` fixed 32-byte slots; a nonce may use one of
    ``window`` slots from its hash, so memory stays bounded and a full window refuses.
    Exclusion across processes is an fcntl record lock on the memfd: the kernel drops it
    when its holder dies, where a semaphore (multiprocessing.Lock) would stay taken and
    block every worker's next login. Record locks do not exclude threads of one process,
    so a thread lock (fresh in each forked child) does that.
    """

    def __init__(self, slots=65536, window=16):
        if slots < 1 or not 1 <= window <= slots:
            raise ValueError(f"bad ReplayTable size: slots={slots} window={window}")
        self.slots = slots
        self.window = window
        self._fd = os.memfd_create("storage-node-replay", os.MFD_CLOEXEC)
        os.ftruncate(self._fd, slots * _SLOT.size)
        self._map = mmap.mmap(self._fd, slots * _SLOT.size)
        self._thread_lock = threading.Lock()
        ref = weakref.ref(self)

        def fresh_lock():
            table = ref()
            if table is not None:
                table._thread_lock = threading.Lock()

        os.register_at_fork(after_in_child=fresh_lock)

    def close(self):
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1

    def record(self, key, nc, expires_ms, now_ms):
        """Record nonce count ``nc`` for the nonce ``key`` (16 bytes) living until
        ``expires_ms`` (exclusive): RECORDED if ``nc`` beats the count seen so far, REPLAYED if not,
        FULL if the nonce is new and its window holds no expired slot."""
        start = int.from_bytes(key[:8], "little") % self.slots
        with self._thread_lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                free = -1
                for i in range(self.window):
                    slot = (start + i) % self.slots
                    seen_key, expires, seen_nc = _SLOT.unpack_from(self._map, slot * _SLOT.size)
                    if expires <= now_ms:
                        if free < 0:
                            free = slot
                    elif seen_key == key:
                        if nc <= seen_nc:
                            return REPLAYED
                        _SLOT.pack_into(self._map, slot * _SLOT.size, key, expires, nc)
                        return RECORDED
                if free < 0:
                    return FULL
                _SLOT.pack_into(self._map, free * _SLOT.size, key, expires_ms, nc)
                return RECORDED
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)


def new_secret():
    """A fresh nonce secret (32 random bytes), shared by every worker of the node."""
    return os.urandom(32)


# -- the Authorization header (sans-I/O) ------------------------------------------------

class BasicCredentials(NamedTuple):
    user: str
    password: str


class DigestCredentials(NamedTuple):
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None
    qop: str | None
    nc: str | None  # 8 hex digits as sent (they enter the hash as they are)
    cnonce: str | None
    opaque: str | None
    params: dict  # every auth-param, lower-case name -> unquoted value


_PRINTABLE = re.compile(rb"[\t\x20-\x7e]*\Z")
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_SCHEME = re.compile(_TCHAR + rb"+")
_TOKEN68 = re.compile(rb"[A-Za-z0-9\-._~+/]+=*\Z")
_PARAM = re.compile(rb"(" + _TCHAR + rb"+)[ \t]*=[ \t]*(" + _TCHAR
                    + rb'+|"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*")[ \t]*')
_SEPARATORS = re.compile(rb"[ \t,]*")
_QUOTED_PAIR = re.compile(rb"\\(.)")
_NC = re.compile(r"[0-9a-fA-F]{8}\Z")
_CTL = re.compile(r"[\x00-\x1f\x7f]")
_REQUIRED = ("username", "realm", "nonce", "uri", "response")


def parse_authorization(value):
    """Parse an Authorization header value (str or bytes) into BasicCredentials or
    DigestCredentials; AuthError (one-line reason) for anything else. RFC 7235 syntax."""
    if isinstance(value, str):
        if len(value) > MAX_AUTHORIZATION:
            raise AuthError(f"Authorization value over {MAX_AUTHORIZATION} bytes")
        if not value.isascii():
            raise AuthError("non-ASCII character in Authorization value")
        data = value.encode("ascii")
    else:
        data = bytes(value)
    if len(data) > MAX_AUTHORIZATION:
        raise AuthError(f"Authorization value over {MAX_AUTHORIZATION} bytes")
    if not _PRINTABLE.match(data):
        raise AuthError("non-ASCII or control character in Authorization value")
    data = data.strip(b" \t")
    m = _SCHEME.match(data)
    if not m:
        raise AuthError("no authentication scheme")
    scheme = m.group().decode().lower()
    rest = data[m.end():]
    if rest[:1] not in (b" ", b""):
        raise AuthError("malformed authentication scheme")
    rest = rest.lstrip(b" ")
    if scheme == "basic":
        return _parse_basic(rest)
    if scheme == "digest":
        return _parse_digest(rest)
    raise AuthError(f"unsupported authentication scheme {m.group().decode()!r}")


def _parse_basic(token):
    if not token:
        raise AuthError("Basic without credentials")
    if not _TOKEN68.match(token):
        raise AuthError("Basic credentials are not a token68")
    bare = token.rstrip(b"=")
    padded = bare + b"=" * (-len(bare) % 4)
    if token not in (bare, padded) or len(bare) % 4 == 1:
        raise AuthError("Basic credentials: bad base64 padding")
    try:
        decoded = binascii.a2b_base64(padded, strict_mode=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise AuthError("Basic credentials are not base64 of UTF-8") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise AuthError("Basic credentials without ':'")
    if _CTL.search(decoded):
        raise AuthError("control character in Basic credentials")
    return BasicCredentials(user, password)


def _parse_params(data):
    """The auth-params of ``data``: ``name = token / quoted-string``, comma-separated,
    OWS around commas and '=', empty list elements skipped (RFC 7230 section 7)."""
    params = {}
    pos, end = 0, len(data)
    while True:
        pos = _SEPARATORS.match(data, pos).end()
        if pos == end:
            return params
        m = _PARAM.match(data, pos)
        if not m:
            raise AuthError(f"malformed auth-param at offset {pos}")
        name = m.group(1).decode().lower()
        raw = m.group(2)
        if raw[:1] == b'"':
            raw = _QUOTED_PAIR.sub(rb"\1", raw[1:-1])
        if name in params:
            raise AuthError(f"duplicate parameter {name}")
        params[name] = raw.decode("ascii")
        pos = m.end()
        if pos < end and data[pos] != 0x2C:  # ','
            raise AuthError(f"expected ',' after parameter {name}")


def _parse_digest(data):
    params = _parse_params(data)
    missing = [name for name in _REQUIRED if name not in params]
    if "qop" in params:
        missing += [name for name in ("nc", "cnonce") if name not in params]
    if missing:
        raise AuthError(f"Digest without {', '.join(missing)}")
    nc = params.get("nc")
    if nc is not None and not _NC.match(nc):
        raise AuthError("nc is not 8 hex digits")
    get = params.get
    return DigestCredentials(get("username"), get("realm"), get("nonce"), get("uri"),
                             get("response"), get("algorithm"), get("qop"), nc,
                             get("cnonce"), get("opaque"), params)


# -- the admin check -------------------------------------------------------------------

class AuthResult(NamedTuple):
    ok: bool
    user: str | None  # the authenticated user, None on a refusal
    stale: bool  # refused only for its nonce: challenge again with stale=true
    reason: str  # why it was refused (for the log), "" when ok


_NONCE_BYTES = 8 + 8 + 32  # timestamp ms, salt, HMAC-SHA256
_NONCE = re.compile(r"[A-Za-z0-9_-]{64}\Z")


def _refused(reason, stale=False):
    return AuthResult(False, None, stale, reason)


class AdminAuth:
    """Checks admin credentials (Digest or Basic) against an Htdigest; see the module
    docstring. ``secret``: the node's nonce secret (bytes, >= 16); ``lifetime``: nonce
    lifetime in seconds; ``clock``: seconds since the epoch."""

    def __init__(self, htdigest, secret, replay_table, lifetime=DEFAULT_NONCE_LIFETIME,
                 clock=time.time):
        if not isinstance(secret, bytes) or len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if lifetime <= 0:
            raise ValueError(f"nonce lifetime must be > 0, got {lifetime!r}")
        self.htdigest = htdigest
        self.replay_table = replay_table
        self.lifetime = lifetime
        self._secret = secret
        self._clock = clock
        self._opaque = hmac.new(secret, b"opaque", hashlib.sha256).hexdigest()[:32]

    def check_password(self, user, password):
        """True if ``password`` is ``user``'s (for SASL PLAIN and RSMC)."""
        return self.htdigest.check_password(user, password)

    def new_nonce(self):
        """A nonce any worker sharing the secret accepts for ``lifetime`` seconds."""
        head = struct.pack(">Q", int(self._clock() * 1000)) + os.urandom(8)
        mac = hmac.new(self._secret, head, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(head + mac).decode("ascii")

    def challenge(self, stale=False):
        """The 401's WWW-Authenticate fields, Digest first (some clients read only one)."""
        digest = (f'Digest realm="{REALM}", nonce="{self.new_nonce()}", '
                  f'opaque="{self._opaque}", stale={"true" if stale else "false"}, '
                  f'qop="auth", algorithm=MD5')
        return [("WWW-Authenticate", digest), ("WWW-Authenticate", f'Basic realm="{REALM}"')]

    def check(self, method, target, authorization):
        """Check an Authorization value (str, bytes or None) of a request ``method`` on
        ``target`` (the request target as received). Never raises on client input."""
        if authorization is None:
            return _refused("no credentials")
        try:
            creds = parse_authorization(authorization)
        except AuthError as exc:
            return _refused(f"malformed Authorization: {exc}")
        if isinstance(creds, BasicCredentials):
            if self.htdigest.check_password(creds.user, creds.password):
                return AuthResult(True, creds.user, False, "")
            return _refused("wrong user or password")
        return self._check_digest(_str(method), _str(target), creds)

    def _check_digest(self, method, target, creds):
        algorithm = (creds.algorithm or "MD5").lower()
        if algorithm not in ("md5", "md5-sess"):
            return _refused(f"unsupported Digest algorithm {creds.algorithm!r}")
        if creds.qop is None:
            return _refused("Digest without qop=auth")
        if creds.qop.lower() != "auth":
            return _refused(f"unsupported qop {creds.qop!r}")
        if creds.params.get("userhash", "false").lower() != "false":
            return _refused("userhash not supported")
        if creds.realm != REALM:
            return _refused(f"wrong realm {creds.realm!r}")
        if creds.uri != target:
            return _refused("Digest uri does not match the request target")
        if not _NONCE.match(creds.nonce):
            return _refused("malformed nonce")
        stored = self.htdigest.ha1(creds.username)
        ha1 = stored or "0" * 32  # an unknown user costs the same as a known one
        if algorithm == "md5-sess":
            ha1 = _md5_hex(f"{ha1}:{creds.nonce}:{creds.cnonce}".encode())
        ha2 = _md5_hex(f"{method}:{creds.uri}".encode())
        want = _md5_hex(f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}"
                        .encode())
        if not hmac.compare_digest(want, creds.response.lower()) or stored is None:
            return _refused("wrong user or password")
        # the response is right: what remains is about the nonce, so refusals are stale
        raw = base64.urlsafe_b64decode(creds.nonce)
        head, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(hmac.new(self._secret, head, hashlib.sha256).digest(), mac):
            return _refused("nonce of another secret", stale=True)
        issued_ms = struct.unpack(">Q", head[:8])[0]
        now_ms = int(self._clock() * 1000)
        expires_ms = issued_ms + int(self.lifetime * 1000)
        if not issued_ms <= now_ms < expires_ms:
            return _refused("expired nonce", stale=True)
        verdict = self.replay_table.record(mac[:16], int(creds.nc, 16), expires_ms, now_ms)
        if verdict == REPLAYED:
            return _refused("replayed nonce count", stale=True)
        if verdict == FULL:
            return _refused("nonce table full", stale=True)
        return AuthResult(True, creds.username, False, "")


def _str(value):
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


# -- the client side (storage-node send, tools) -------------------------------------------

def parse_challenge(value):
    """A WWW-Authenticate value (one challenge) -> (scheme lower-cased, {param: value}).
    AuthError when it is not ``scheme auth-params`` (a Basic challenge has a realm)."""
    data = _str(value).encode("latin-1", "replace").strip(b" \t")
    if len(data) > MAX_AUTHORIZATION or not _PRINTABLE.match(data):
        raise AuthError("malformed challenge")
    m = _SCHEME.match(data)
    if not m:
        raise AuthError("no authentication scheme in the challenge")
    return m.group().decode().lower(), _parse_params(data[m.end():].lstrip(b" "))


def digest_authorization(challenge, user, password, method, uri, nc, cnonce):
    """The Authorization value answering a Digest ``challenge`` (its params, from
    parse_challenge) with qop=auth, nonce count ``nc`` (int) and ``cnonce`` (str)."""
    realm, nonce = challenge.get("realm", ""), challenge.get("nonce", "")
    algorithm = challenge.get("algorithm", "MD5")
    qops = [q.strip().lower() for q in challenge.get("qop", "auth").split(",")]
    if "auth" not in qops or algorithm.lower() not in ("md5", "md5-sess"):
        raise AuthError(f"unsupported Digest challenge (qop {challenge.get('qop')!r}, "
                        f"algorithm {algorithm!r})")
    ha1 = _md5_hex(_utf8(user) + b":" + realm.encode() + b":" + _utf8(password))
    if algorithm.lower() == "md5-sess":
        ha1 = _md5_hex(f"{ha1}:{nonce}:{cnonce}".encode())
    ha2 = _md5_hex(f"{method}:{uri}".encode())
    count = f"{nc:08x}"
    response = _md5_hex(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}".encode())
    value = (f'Digest username="{_quote(user)}", realm="{_quote(realm)}", '
             f'nonce="{_quote(nonce)}", uri="{_quote(uri)}", response="{response}", '
             f'qop=auth, nc={count}, cnonce="{_quote(cnonce)}", algorithm={algorithm}')
    if "opaque" in challenge:
        value += f', opaque="{_quote(challenge["opaque"])}"'
    return value


def _quote(text):
    return text.replace("\\", "\\\\").replace('"', '\\"')


class DigestClient:
    """The client side of one Digest session (``storage-node send``, ``rsmc``): it
    answers the node's challenge, counting nc up on the same nonce, and tells whether
    a 401 is worth another try (a first challenge, or a stale nonce) or means the
    credentials themselves are wrong."""

    def __init__(self, user, password):
        self.user = user
        self.password = password
        self._challenge = None  # the Digest params the node sent last
        self._nc = 0

    def authorization(self, method, uri):
        """The Authorization value for the next request, None before a challenge."""
        if self._challenge is None:
            return None
        self._nc += 1
        return digest_authorization(self._challenge, self.user, self.password, method, uri,
                                    self._nc, os.urandom(8).hex())

    def challenged(self, values):
        """A 401's WWW-Authenticate values: True when a retry may succeed (the node's
        first challenge, or stale=true), False when there is nothing to answer or the
        credentials were refused. Malformed challenges are skipped."""
        digest = []
        for value in values or ():
            try:
                scheme, params = parse_challenge(value)
            except AuthError:
                continue
            if scheme == "digest":
                digest.append(params)
        if not digest:
            return False
        if self._challenge is not None and digest[0].get("stale", "").lower() != "true":
            return False
        self._challenge, self._nc = digest[0], 0
        return True
