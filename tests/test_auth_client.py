"""The client side of storage.auth (parse_challenge, digest_authorization), checked
against the server side: what the client answers, AdminAuth accepts."""
import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from storage import auth

TARGET = "/0123456789ABCDEF0123456789ABCDEF?admin"


@pytest.fixture
def admin(tmp_path):
    path = tmp_path / "htdigest"
    import hashlib
    ha1 = hashlib.md5(f'ad"min:{auth.REALM}:pa:ss "w'.encode()).hexdigest()
    path.write_text(f'ad"min:{auth.REALM}:{ha1}\n')
    table = auth.ReplayTable(slots=64, window=4)
    yield auth.AdminAuth(auth.load_htdigest(str(path)), auth.new_secret(), table)
    table.close()


def test_an_answered_challenge_is_accepted_once_per_count(admin):
    scheme, params = auth.parse_challenge(admin.challenge()[0][1])
    assert scheme == "digest" and params["realm"] == auth.REALM
    assert params["qop"] == "auth" and params["stale"] == "false"
    for nc in (1, 2, 7):
        value = auth.digest_authorization(params, 'ad"min', 'pa:ss "w', "SEND", TARGET,
                                          nc, "c0ffee")
        result = admin.check("SEND", TARGET, value)
        assert result.ok and result.user == 'ad"min', result.reason
    assert not admin.check("SEND", TARGET, value).ok  # nc 7 again: a replay
    wrong = auth.digest_authorization(params, 'ad"min', "nope", "SEND", TARGET, 8, "c")
    assert not admin.check("SEND", TARGET, wrong).ok


def test_basic_challenge_and_errors():
    assert auth.parse_challenge('Basic realm="CAStor administrator"') == \
        ("basic", {"realm": auth.REALM})
    for bad in ("", "Digest realm=", "Digest a=b c=d", "\x01"):
        with pytest.raises(auth.AuthError):
            auth.parse_challenge(bad)
    with pytest.raises(auth.AuthError):
        auth.digest_authorization({"nonce": "n", "qop": "auth-int"}, "u", "p", "GET", "/",
                                  1, "c")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_challenge_takes_any_text(text):
    try:
        auth.parse_challenge(text)
    except auth.AuthError:
        pass


def test_digest_client_retries_only_what_may_succeed(admin):
    client = auth.DigestClient("ad\"min", "pa:ss \"w")
    assert client.authorization("SEND", TARGET) is None  # nothing to answer yet
    assert not client.challenged(['Basic realm="x"', "\x01junk"])
    first = [value for _, value in admin.challenge()]
    assert client.challenged(first)  # the node's first challenge: answer it
    value = client.authorization("SEND", TARGET)
    assert admin.check("SEND", TARGET, value).ok
    assert 'nc=00000002' in client.authorization("SEND", TARGET)
    assert not client.challenged([v for _, v in admin.challenge()])  # refused: give up
    assert client.challenged([v for _, v in admin.challenge(stale=True)])  # new nonce
    assert "nc=00000001" in client.authorization("SEND", TARGET)
