"""Smoke runs of fuzz/fuzz_auth.py (the Authorization parser and the admin check) over
hypothesis inputs, without atheris."""
import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import auth
from fuzzutil import load_fuzz_target



FUZZ = load_fuzz_target("fuzz_auth")

DIGEST = (b'nonce="abc", response="0123", qop=auth, nc=00000001, cnonce="c\\"d", '
          b'algorithm=MD5, opaque=xyz')


def test_fuzz_target_imports_without_atheris():
    assert callable(FUZZ.TestOneInput)
    assert "atheris" not in vars(FUZZ)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, len(DIGEST)), st.binary(max_size=4),
       st.integers(0, 3))
def test_fuzz_target_on_mutated_digests(ctl, at, insert, drop):
    """Mode 3: a valid Digest prefix, then the rest of a valid value, mutated."""
    FUZZ.TestOneInput(bytes([ctl | 3]) + DIGEST[:at] + insert + DIGEST[at + drop:])


def test_fuzz_target_fixed_cases():
    """The one Basic password that lets in, a parsed Digest, and refusals."""
    good = base64.b64encode(b"admin:pw")
    for ctl in (0x02, 0x06, 0x0A):  # as bytes, latin-1 str, UTF-8 str
        FUZZ.TestOneInput(bytes([ctl]) + good)
        FUZZ.TestOneInput(bytes([ctl]) + base64.b64encode(b"admin:wrong"))
        FUZZ.TestOneInput(bytes([ctl | 3]) + DIGEST)
    assert FUZZ.outcome(bytes([ctl | 3]) + DIGEST) is None  # the ctl byte is no scheme
    creds = FUZZ.outcome(FUZZ.PREFIXES[3] + DIGEST)
    assert creds.cnonce == 'c"d' and creds.opaque == "xyz"


@pytest.mark.parametrize("creds", [
    auth.BasicCredentials("a:b", "c"),
    auth.BasicCredentials("a", "b\x00"),
    auth.DigestCredentials("u", "r", "n", "/", "x", None, None, None, None, None,
                           {"username": "u", "realm": "r", "nonce": "n", "uri": "/",
                            "response": "x", "Bad": "1"}),
    auth.DigestCredentials("u", "r", "n", "/", "x", None, "auth", None, None, None,
                           {"username": "u", "realm": "r", "nonce": "n", "uri": "/",
                            "response": "x", "qop": "auth"}),
    auth.DigestCredentials("u", "r", "n", "/", "y", None, None, None, None, None,
                           {"username": "u", "realm": "r", "nonce": "n", "uri": "/",
                            "response": "x"}),
])
def test_fuzz_invariants_catch_broken_credentials(creds):
    """The target is not vacuous: credentials breaking an invariant trip it."""
    with pytest.raises(AssertionError):
        FUZZ.check_credentials(creds)


def test_a_check_letting_in_a_wrong_password_is_caught(monkeypatch):
    monkeypatch.setattr(FUZZ.ADMIN.htdigest, "check_password", lambda user, pw: True)
    with pytest.raises(AssertionError):
        FUZZ.TestOneInput(b"\x02" + base64.b64encode(b"admin:wrong"))
