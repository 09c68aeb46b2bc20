"""Fuzz target: the Authorization parser (``storage.auth.parse_authorization``) and the
admin check behind it (``AdminAuth.check``).

Run with atheris (``make fuzz``):  python fuzz/fuzz_auth.py -runs=20000
``TestOneInput`` needs nothing but storage.auth, so tests import it and smoke-run it
over hypothesis inputs without atheris installed.

The first input byte picks what is put in front of the rest (nothing, ``Digest ``,
``Basic `` or a valid Digest prefix, so that mutations reach the parameter rules) and
whether the value is given as bytes, as str decoded latin-1, or as str decoded UTF-8
(with replacement characters). Any exception other than AuthError, an AuthError with an
empty or multi-line reason, credentials breaking the parser's invariants or not parsing
back to the same thing once re-serialized, or a check that raises, answers something
other than an AuthResult, or lets in anything but the one user's Basic password is a
crash. The clock is fixed and no Digest can pass, so every run is deterministic.
"""
import base64
import re
import sys

from storage import auth

USER, PASSWORD = "admin", "pw"
PREFIXES = (b"", b"Digest ", b"Basic ",
            b'Digest username="admin", realm="CAStor administrator", uri="/", ')
_TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CTL = re.compile(r"[\x00-\x1f\x7f]")


def make_admin():
    ha1 = auth._md5_hex(f"{USER}:{auth.REALM}:{PASSWORD}".encode())
    table = auth.ReplayTable(slots=64, window=8)
    return auth.AdminAuth(auth.Htdigest("fuzz", {USER: ha1}), b"s" * 32, table,
                          clock=lambda: 1_800_000_000.0)


ADMIN = make_admin()


def serialize(creds):
    """An Authorization value equivalent to the parsed ``creds`` (every value quoted)."""
    if isinstance(creds, auth.BasicCredentials):
        raw = f"{creds.user}:{creds.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()
    quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
              for value in creds.params.values())
    return "Digest " + ", ".join(f"{name}={value}"
                                 for name, value in zip(creds.params, quoted))


def check_credentials(creds):
    if isinstance(creds, auth.BasicCredentials):
        assert ":" not in creds.user, creds
        assert not _CTL.search(creds.user + creds.password), creds
        return
    assert isinstance(creds, auth.DigestCredentials), creds
    params = creds.params
    for name, value in params.items():
        assert _TCHAR.match(name) and name == name.lower(), name
        assert value.isascii() and not _CTL.search(value.replace("\t", "")), value
    assert (creds.username, creds.realm, creds.nonce, creds.uri, creds.response) == tuple(
        params[name] for name in ("username", "realm", "nonce", "uri", "response"))
    assert (creds.algorithm, creds.qop, creds.nc, creds.cnonce, creds.opaque) == tuple(
        params.get(name) for name in ("algorithm", "qop", "nc", "cnonce", "opaque"))
    if creds.qop is not None:
        assert creds.nc is not None and creds.cnonce is not None
    if creds.nc is not None:
        assert re.fullmatch(r"[0-9a-fA-F]{8}", creds.nc), creds.nc


def outcome(value):
    """What parse_authorization makes of ``value``: the credentials (checked, and
    round-tripped), or None for an AuthError. Any other exception propagates."""
    try:
        creds = auth.parse_authorization(value)
    except auth.AuthError as exc:
        assert type(exc) is auth.AuthError
        assert str(exc) and "\n" not in str(exc), str(exc)
        return None
    check_credentials(creds)
    assert auth.parse_authorization(serialize(creds)) == creds, value
    return creds


def check_admin(value, creds):
    result = ADMIN.check("GET", "/", value)
    assert isinstance(result, auth.AuthResult), result
    assert isinstance(result.ok, bool) and isinstance(result.stale, bool)
    assert "\n" not in result.reason and bool(result.reason) != result.ok, result
    if result.ok:
        assert creds == auth.BasicCredentials(USER, PASSWORD), (value, creds)
        assert result.user == USER
    else:
        assert result.user is None


def TestOneInput(data):
    if not data:
        return
    ctl = data[0]
    raw = PREFIXES[ctl & 3] + bytes(data[1:])
    form = (ctl >> 2) % 3
    if form == 0:
        value = raw
    elif form == 1:
        value = raw.decode("latin-1")
    else:
        value = raw.decode("utf-8", "replace")
    creds = outcome(value)
    if isinstance(value, bytes):
        # a str that is the same bytes (latin-1) parses the same
        assert outcome(value.decode("latin-1")) == creds
    check_admin(value, creds)


if __name__ == "__main__":
    import atheris

    # the parser is already imported: instrument what is loaded so libFuzzer sees coverage
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
