"""storage.auth: the htdigest file, the Authorization parser, Digest and Basic checks,
nonces and the nonce-count table shared across os.fork()."""
import base64
import fcntl
import hashlib
import os
import re
import select
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import auth
from storage.auth import (
    REALM,
    AdminAuth,
    AuthError,
    AuthResult,
    BasicCredentials,
    DigestCredentials,
    HtdigestError,
    ReplayTable,
    load_htdigest,
    new_secret,
    parse_authorization,
)
from storage.config import ConfigError

TARGET = "/0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF?admin"


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def htdigest_line(user, password, realm=REALM):
    return f"{user}:{realm}:{md5(f'{user}:{realm}:{password}')}"


def digest_response(user, password, method, uri, nonce, nc, cnonce, qop="auth",
                    algorithm="MD5"):
    """RFC 7616 section 3.4.1, written out independently of the module."""
    ha1 = md5(f"{user}:{REALM}:{password}")
    if algorithm.lower() == "md5-sess":
        ha1 = md5(f"{ha1}:{nonce}:{cnonce}")
    return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{md5(f'{method}:{uri}')}")


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def htdigest_path(tmp_path):
    path = tmp_path / "admin.htdigest"
    path.write_text("\n".join([
        "# admin users of the node",
        htdigest_line("admin", "s3cret pw"),
        "",
        htdigest_line("admin", "other", realm="Some other realm"),
        htdigest_line("ops", "pw:with:colons"),
        htdigest_line("guest", "x", realm="guests"),
    ]) + "\n")
    return path


@pytest.fixture
def table():
    table = ReplayTable(slots=256, window=8)
    yield table
    table.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def admin(htdigest_path, table, clock):
    return AdminAuth(load_htdigest(htdigest_path), new_secret(), table, clock=clock)


def nonce_of(headers):
    assert headers[0][0] == "WWW-Authenticate"
    return re.search(r'nonce="([^"]+)"', headers[0][1]).group(1)


def digest_header(nonce, user="admin", password="s3cret pw", method="SEND", uri=TARGET,
                  nc="00000001", cnonce="0a4f113b", algorithm="MD5", qop="auth", **extra):
    """What curl --anyauth sends (its parameter order)."""
    response = extra.pop("response", None) or digest_response(
        user, password, method, uri, nonce, nc, cnonce, qop, algorithm or "MD5")
    value = (f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
             f'cnonce="{cnonce}", nc={nc}, qop={qop}, response="{response}"')
    if algorithm:
        value += f", algorithm={algorithm}"
    for name, param in extra.items():
        value += f', {name}="{param}"'
    return value


# -- the htdigest file -------------------------------------------------------------

def test_load_htdigest_keeps_the_realm_users(htdigest_path):
    ht = load_htdigest(htdigest_path)
    assert ht.path == htdigest_path
    assert ht.users == {"admin": md5(f"admin:{REALM}:s3cret pw"),
                        "ops": md5(f"ops:{REALM}:pw:with:colons")}


def test_load_htdigest_takes_crlf_uppercase_hex_and_colons_in_other_realms(tmp_path):
    path = tmp_path / "h"
    line = htdigest_line("admin", "pw")
    user, realm, ha1 = line.split(":")
    path.write_bytes(f"  # comment\r\n\r\n{user}:{realm}:{ha1.upper()}\r\n"
                     f"x:realm:with:colons:{ha1}\r\n".encode())
    assert load_htdigest(path).users == {"admin": ha1}


def test_an_htdigest_without_admin_users_loads_and_warns(tmp_path, caplog):
    path = tmp_path / "h"
    path.write_text(htdigest_line("guest", "x", realm="guests") + "\n")
    assert load_htdigest(path).users == {}
    assert "nobody can log in" in caplog.text


@pytest.mark.parametrize("line,reason", [
    ("admin", "expected user:realm:md5hex"),
    ("admin:" + "0" * 32, "expected user:realm:md5hex"),
    (f":{REALM}:" + "0" * 32, "empty user"),
    (f"ad\x01min:{REALM}:" + "0" * 32, "control character"),
    (f"admin:{REALM}:" + "0" * 31, "not 32 hex digits"),
    (f"admin:{REALM}:" + "g" * 32, "not 32 hex digits"),
    (f"admin:{REALM}:", "not 32 hex digits"),
    ("guest:guests:short", "not 32 hex digits"),  # other realms must still be well-formed
])
def test_a_malformed_line_names_the_file_and_line(tmp_path, line, reason):
    path = tmp_path / "h"
    path.write_text(f"# first\n{htdigest_line('ops', 'pw')}\n{line}\n")
    with pytest.raises(HtdigestError, match=re.escape(f"{path}:3: ") + ".*" + reason):
        load_htdigest(path)


def test_a_user_listed_twice_is_an_error(tmp_path):
    path = tmp_path / "h"
    path.write_text(htdigest_line("admin", "a") + "\n" + htdigest_line("admin", "b") + "\n")
    with pytest.raises(HtdigestError, match=re.escape(f"{path}:2: user 'admin' listed twice")):
        load_htdigest(path)


def test_a_line_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "h"
    path.write_bytes(b"\n" + f"adm\xffin:{REALM}:{'0' * 32}".encode("latin-1"))
    with pytest.raises(HtdigestError, match=re.escape(f"{path}:2: not UTF-8")):
        load_htdigest(path)


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_an_unreadable_file_is_a_config_error(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: cannot read: ")):
        load_htdigest(path)
    assert issubclass(HtdigestError, ConfigError)


def test_check_password(htdigest_path, admin):
    ht = load_htdigest(htdigest_path)
    for check in (ht.check_password, admin.check_password):
        assert check("admin", "s3cret pw")
        assert check(b"admin", b"s3cret pw")
        assert check("ops", "pw:with:colons")
        assert not check("admin", "s3cret pw ")
        assert not check("admin", "other")  # the password of another realm
        assert not check("guest", "x")  # a user of another realm only
        assert not check("nobody", "s3cret pw")
        assert not check(b"\xff", b"s3cret pw")
        assert not check("", "")


# -- the Authorization parser -------------------------------------------------------

RFC2617 = ('Digest username="Mufasa", realm="testrealm@host.com", '
           'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
           'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
           'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
RFC7616 = ('Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
           'algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
           'nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
           'response="8ca523f5e9506fed4657c9700eebdbec", '
           'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
CURL = ('Digest username="admin", realm="CAStor administrator", '
        'nonce="AAABojQp9veFL_gC5pdBXck2XD0xgAnO1Whd5K-ixpoL5gatW0Np_CVrX4-EQ212", '
        'uri="/0123?admin", cnonce="ZjYxNmE3ZTVkMjFmYzE0YWJkNGFkMmZhNjE0Nzc1NzI=", '
        'nc=00000001, qop=auth, response="5d6b1f3e0d6b2f8a1cb6d0e5c4bf7aa1", '
        'opaque="80b1e1126c71c863f52e01a55e8dbdf0", algorithm=MD5')


def oddly_spaced(value):
    """``value`` with OWS around every ',' and '=' outside quotes, tabs, and empty
    list elements, which RFC 7230 section 7 says recipients accept."""
    out, quoted, escaped = [], False, False
    for c in value:
        if quoted:
            out.append(c)
            quoted = escaped or c != '"'
            escaped = not escaped and c == "\\"
        elif c == '"':
            out.append(c)
            quoted = True
        elif c == ",":
            out.append(" \t, ,,\t ")
        elif c == "=":
            out.append("\t = ")
        else:
            out.append(c)
    scheme, rest = "".join(out).split(" ", 1)
    return f" \t{scheme.upper()}   ,{rest} ,\t"


def test_the_rfc_2617_example():
    creds = parse_authorization(RFC2617)
    assert creds == DigestCredentials(
        "Mufasa", "testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "/dir/index.html", "6629fae49393a05397450978507c4ef1", None, "auth", "00000001",
        "0a4f113b", "5ccc069c403ebaf9f0171e9517f40e41", creds.params)
    assert len(creds.params) == 9 and creds.params["qop"] == "auth"


def test_the_rfc_7616_example_and_its_response():
    creds = parse_authorization(RFC7616)
    assert (creds.username, creds.algorithm, creds.nc) == ("Mufasa", "MD5", "00000001")
    ha1 = md5("Mufasa:http-auth@example.org:Circle of Life")
    want = md5(f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:auth:"
               f"{md5('GET:/dir/index.html')}")
    assert want == creds.response


@pytest.mark.parametrize("value", [RFC2617, RFC7616, CURL])
def test_odd_spacing_bytes_and_case_parse_the_same(value):
    want = parse_authorization(value)
    assert parse_authorization(value.encode()) == want
    assert parse_authorization(oddly_spaced(value)) == want
    assert parse_authorization(oddly_spaced(value).encode()) == want
    assert parse_authorization("digest" + value[6:]) == want
    upper = re.sub(r"(^|, )(\w+)=", lambda m: m.group(1) + m.group(2).upper() + "=", value[7:])
    assert parse_authorization("Digest " + upper) == want


def test_quoted_pairs_and_tokens():
    creds = parse_authorization(r'Digest username="a\"b\\c\d", realm=r, nonce=n, uri="/x y",'
                                r' response=abc, x-ext="", y=z')
    assert creds.username == 'a"b\\cd'
    assert (creds.realm, creds.nonce, creds.uri, creds.response) == ("r", "n", "/x y", "abc")
    assert creds.params["x-ext"] == "" and creds.params["y"] == "z"
    assert creds.qop is None and creds.nc is None


@pytest.mark.parametrize("value,creds", [
    ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", ("Aladdin", "open sesame")),  # RFC 7617
    ("basic QWxhZGRpbjpvcGVuIHNlc2FtZQ", ("Aladdin", "open sesame")),  # unpadded
    ("BASIC   YTpiOmM=  ", ("a", "b:c")),
    ("Basic Og==", ("", "")),
    ("Basic " + base64.b64encode("tést:pässwörd".encode()).decode(), ("tést", "pässwörd")),
])
def test_basic(value, creds):
    assert parse_authorization(value) == BasicCredentials(*creds)
    assert parse_authorization(value.encode()) == BasicCredentials(*creds)


DIGEST_OK = 'Digest username="u", realm="r", nonce="n", uri="/", response="x"'


@pytest.mark.parametrize("value,reason", [
    ("", "no authentication scheme"),
    ("   ", "no authentication scheme"),
    ("=abc", "no authentication scheme"),
    ("Bearer abc", "unsupported authentication scheme 'Bearer'"),
    ("Basic", "Basic without credentials"),
    ("Basic\tYTpi", "malformed authentication scheme"),
    ("Basic YTpi YTpi", "not a token68"),
    ("Basic YT=pi", "not a token68"),
    ("Basic YTpiYw===", "padding"),
    ("Basic YTpiY", "padding"),
    ("Basic YTpi-w==", "not base64"),
    ("Basic /w==", "not base64 of UTF-8"),
    ("Basic YWJj", "without ':'"),
    ("Basic " + base64.b64encode(b"a:b\x00").decode(), "control character"),
    ("Digest", "Digest without username, realm, nonce, uri, response"),
    (DIGEST_OK.replace('uri="/", ', ""), "Digest without uri"),
    (DIGEST_OK + ", qop=auth", "Digest without nc, cnonce"),
    (DIGEST_OK + ", qop=auth, nc=00000001", "Digest without cnonce"),
    (DIGEST_OK + ', qop=auth, nc=1, cnonce="c"', "nc is not 8 hex digits"),
    (DIGEST_OK + ', qop=auth, nc=000000001, cnonce="c"', "nc is not 8 hex digits"),
    (DIGEST_OK + ', qop=auth, nc="0000000g", cnonce="c"', "nc is not 8 hex digits"),
    (DIGEST_OK + ', Realm="r"', "duplicate parameter realm"),
    (DIGEST_OK + ", nonce=n", "duplicate parameter nonce"),
    (DIGEST_OK + ' qop=auth', "expected ',' after parameter response"),
    (DIGEST_OK + ', qop', "malformed auth-param"),
    (DIGEST_OK + ', qop=', "malformed auth-param"),
    (DIGEST_OK + ', qop="auth', "malformed auth-param"),
    (DIGEST_OK + r', x="a\"', "malformed auth-param"),
    (DIGEST_OK + ', x=a"b"', "expected ','"),
    (DIGEST_OK + ', x=a/b', "expected ','"),
    (DIGEST_OK + ', "x"=a', "malformed auth-param"),
    (DIGEST_OK.replace('"u"', '"ü"'), "non-ASCII"),
    (DIGEST_OK.replace('"u"', '"\u20ac"'), "non-ASCII"),
    (DIGEST_OK.replace('"u"', '"u\nv"'), "control character"),
    (DIGEST_OK.replace('"u"', '"u\x7fv"'), "control character"),
    (DIGEST_OK + ', x="' + "a" * 8192 + '"', "over 8192 bytes"),
])
def test_malformed_values(value, reason):
    for form in (value, value.encode("utf-8")):
        with pytest.raises(AuthError, match=re.escape(reason)) as info:
            parse_authorization(form)
        assert "\n" not in str(info.value)
    assert issubclass(AuthError, ValueError)


def test_the_size_limit_is_8_kib():
    pad = "a" * (auth.MAX_AUTHORIZATION - len(DIGEST_OK) - len(', x=""'))
    value = DIGEST_OK + f', x="{pad}"'
    assert len(value) == auth.MAX_AUTHORIZATION
    assert parse_authorization(value).params["x"] == pad
    with pytest.raises(AuthError):
        parse_authorization(value + " ")


# hypothesis: valid parameter sets round-trip through random quoting and spacing

TCHAR = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
tokens = st.text(TCHAR, min_size=1, max_size=12)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"),
                 max_size=20)
ows = st.text(" \t", max_size=3)


@st.composite
def digest_params(draw):
    params = {name: draw(values) for name in ("username", "realm", "nonce", "uri", "response")}
    if draw(st.booleans()):
        params["qop"] = draw(values)
        params["nc"] = draw(st.text("0123456789abcdefABCDEF", min_size=8, max_size=8))
        params["cnonce"] = draw(values)
    for name in draw(st.lists(tokens, max_size=4)):
        if name.lower() not in params and name.lower() not in ("nc", "qop", "cnonce"):
            params[name.lower()] = draw(values)
    return params


@st.composite
def serialized(draw, params):
    """``params`` as a Digest value: shuffled, names in random case, each value a token
    when it can be and the draw says so, else quoted with needed and random escapes."""
    items = draw(st.permutations(list(params.items())))
    parts = []
    for name, value in items:
        name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
        if value and all(c in TCHAR for c in value) and draw(st.booleans()):
            text = value
        else:
            text = '"' + "".join("\\" + c if c in '"\\' or draw(st.integers(0, 7)) == 0
                                 else c for c in value) + '"'
        parts.append(f"{name}{draw(ows)}={draw(ows)}{text}")
    seps = [draw(ows) + "," + draw(st.sampled_from(["", ",", " ,\t,"])) + draw(ows)
            for _ in parts]
    head = draw(st.sampled_from(["Digest", "digest", "DIGEST", "dIgEsT"]))
    body = "".join(part + sep for part, sep in zip(parts, seps))[:-len(seps[-1])]
    tail = draw(st.sampled_from(["", ",", " , "]))
    return f"{draw(ows)}{head} {' ' * draw(st.integers(0, 2))}{body}{tail}{draw(ows)}"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_valid_params_round_trip(data):
    params = data.draw(digest_params())
    value = data.draw(serialized(params))
    creds = parse_authorization(data.draw(st.sampled_from([value, value.encode()])))
    assert creds.params == params
    assert (creds.username, creds.realm, creds.nonce, creds.uri, creds.response) == (
        params["username"], params["realm"], params["nonce"], params["uri"],
        params["response"])
    assert (creds.qop, creds.nc, creds.cnonce) == (
        params.get("qop"), params.get("nc"), params.get("cnonce"))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
       .filter(lambda u: ":" not in u),
       st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30))
def test_basic_round_trips(user, password):
    value = basic(user, password)
    assert parse_authorization(value) == BasicCredentials(user, password)


def outcome(value):
    try:
        return parse_authorization(value)
    except AuthError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.binary(),
                 st.text().map(lambda t: "Digest " + t), st.binary().map(lambda b: b"Basic " + b),
                 st.builds(lambda a, b: DIGEST_OK[:a] + b + DIGEST_OK[a:],
                           st.integers(0, len(DIGEST_OK)), st.text(max_size=4))))
def test_anything_parses_or_raises_auth_error(value):
    outcome(value)  # any other exception fails the test


# -- nonces and the admin check ----------------------------------------------------

def test_the_challenge(admin):
    headers = admin.challenge()
    assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    assert re.fullmatch(r'Digest realm="CAStor administrator", nonce="[A-Za-z0-9_-]{64}", '
                        r'opaque="[0-9a-f]{32}", stale=false, qop="auth", algorithm=MD5',
                        headers[0][1]), headers[0][1]
    assert headers[1][1] == 'Basic realm="CAStor administrator"'
    assert "stale=true," in admin.challenge(stale=True)[0][1]
    assert nonce_of(admin.challenge()) != nonce_of(headers)


def test_basic_check(admin):
    assert admin.check("SEND", TARGET, basic("admin", "s3cret pw")) == AuthResult(
        True, "admin", False, "")
    assert admin.check("SEND", TARGET, basic("ops", "pw:with:colons").encode()).ok
    for user, password in [("admin", "wrong"), ("guest", "x"), ("nobody", "s3cret pw")]:
        assert admin.check("SEND", TARGET, basic(user, password)) == AuthResult(
            False, None, False, "wrong user or password")


def test_no_or_malformed_credentials(admin):
    assert admin.check("SEND", TARGET, None) == AuthResult(False, None, False, "no credentials")
    result = admin.check("SEND", TARGET, "Bearer xyz")
    assert not result.ok and not result.stale
    assert result.reason == "malformed Authorization: unsupported authentication scheme 'Bearer'"


@pytest.mark.parametrize("algorithm", ["MD5", None, "md5", "MD5-sess"])
def test_digest_check(admin, algorithm):
    nonce = nonce_of(admin.challenge())
    value = digest_header(nonce, algorithm=algorithm)
    assert admin.check("SEND", TARGET, value) == AuthResult(True, "admin", False, "")


def test_digest_as_bytes_with_opaque_and_uppercase_response(admin):
    nonce = nonce_of(admin.challenge())
    response = digest_response("ops", "pw:with:colons", "GET", "/x", nonce, "00000001", "c")
    value = digest_header(nonce, user="ops", method="GET", uri="/x", cnonce="c",
                          response=response.upper(), opaque="whatever")
    assert admin.check(b"GET", b"/x", value.encode()) == AuthResult(True, "ops", False, "")


@pytest.mark.parametrize("change,reason", [
    ({"password": "wrong"}, "wrong user or password"),
    ({"user": "nobody"}, "wrong user or password"),
    ({"user": "guest", "password": "x"}, "wrong user or password"),
    ({"method": "GET"}, "wrong user or password"),  # signed for GET, sent as SEND
    ({"uri": "/other?admin"}, "Digest uri does not match the request target"),
    ({"uri": TARGET.split("?")[0]}, "Digest uri does not match the request target"),
    ({"algorithm": "SHA-256"}, "unsupported Digest algorithm 'SHA-256'"),
    ({"qop": "auth-int"}, "unsupported qop 'auth-int'"),
    ({"userhash": "true"}, "userhash not supported"),
])
def test_digest_refusals(admin, change, reason):
    nonce = nonce_of(admin.challenge())
    assert admin.check("SEND", TARGET, digest_header(nonce, **change)) == AuthResult(
        False, None, False, reason)


def test_digest_refusals_of_realm_qop_and_nonce(admin):
    nonce = nonce_of(admin.challenge())
    value = digest_header(nonce)
    assert admin.check("SEND", TARGET, value.replace(REALM, "x")).reason == "wrong realm 'x'"
    no_qop = re.sub(r"cnonce=\S+ nc=\S+ qop=auth, ", "", value)
    assert admin.check("SEND", TARGET, no_qop).reason == "Digest without qop=auth"
    bad = nonce[:-1] + "="
    result = admin.check("SEND", TARGET, digest_header(bad))
    assert result == AuthResult(False, None, False, "malformed nonce")


def test_an_expired_nonce_is_stale(admin, clock):
    nonce = nonce_of(admin.challenge())
    clock.now += 299.998
    assert admin.check("SEND", TARGET, digest_header(nonce)).ok  # still alive
    clock.now += 0.002
    assert admin.check("SEND", TARGET, digest_header(nonce, nc="00000002")) == AuthResult(
        False, None, True, "expired nonce")
    # stale only when the response is right: a wrong password is just wrong
    result = admin.check("SEND", TARGET, digest_header(nonce, nc="00000003", password="x"))
    assert result == AuthResult(False, None, False, "wrong user or password")


def test_a_nonce_from_the_future_is_stale(admin, clock):
    """The clock stepped back: the nonce would outlive its lifetime."""
    nonce = nonce_of(admin.challenge())
    clock.now -= 1
    assert admin.check("SEND", TARGET, digest_header(nonce)).reason == "expired nonce"


def test_a_nonce_of_another_secret_is_stale(admin, htdigest_path, table, clock):
    other = AdminAuth(load_htdigest(htdigest_path), new_secret(), table, clock=clock)
    nonce = nonce_of(other.challenge())
    assert admin.check("SEND", TARGET, digest_header(nonce)) == AuthResult(
        False, None, True, "nonce of another secret")
    assert not admin.check("SEND", TARGET, digest_header(nonce, password="x")).stale
    assert other.check("SEND", TARGET, digest_header(nonce)).ok


def test_workers_sharing_the_secret_accept_each_others_nonces(htdigest_path, table, clock):
    secret = new_secret()
    one, two = (AdminAuth(load_htdigest(htdigest_path), secret, table, clock=clock)
                for _ in range(2))
    nonce = nonce_of(one.challenge())
    assert two.check("SEND", TARGET, digest_header(nonce)).ok
    assert not one.check("SEND", TARGET, digest_header(nonce)).ok  # the same nc again


def test_nonce_counts_must_increase(admin):
    nonce = nonce_of(admin.challenge())
    check = lambda nc: admin.check("SEND", TARGET, digest_header(nonce, nc=nc))
    assert check("00000001").ok
    assert check("00000001") == AuthResult(False, None, True, "replayed nonce count")
    assert check("00000002").ok
    assert check("0000000A").ok
    assert check("00000009") == AuthResult(False, None, True, "replayed nonce count")
    assert check("0000000b").ok
    # another nonce has counts of its own
    assert admin.check("SEND", TARGET, digest_header(nonce_of(admin.challenge()))).ok


def test_a_full_table_refuses_with_stale_until_entries_expire(htdigest_path, clock):
    table = ReplayTable(slots=2, window=2)
    admin = AdminAuth(load_htdigest(htdigest_path), new_secret(), table, lifetime=10,
                      clock=clock)
    try:
        first, second = (nonce_of(admin.challenge()) for _ in range(2))
        assert admin.check("SEND", TARGET, digest_header(first)).ok
        clock.now += 5
        assert admin.check("SEND", TARGET, digest_header(second)).ok
        third = nonce_of(admin.challenge())
        assert admin.check("SEND", TARGET, digest_header(third)) == AuthResult(
            False, None, True, "nonce table full")
        # the nonces in the table still count
        assert admin.check("SEND", TARGET, digest_header(first, nc="00000002")).ok
        clock.now += 5  # the first nonce expires and frees its slot
        assert admin.check("SEND", TARGET, digest_header(third)).ok
        assert admin.check("SEND", TARGET, digest_header(third)).reason == "replayed nonce count"
    finally:
        table.close()


def test_replay_table_windows():
    table = ReplayTable(slots=4, window=1)
    try:
        key = bytes(16)  # like an unused slot: an all-zero key is no match for it
        assert table.record(key, 0, 100, 0) == auth.RECORDED
        assert table.record(key, 0, 100, 10) == auth.REPLAYED
        assert table.record(key, 7, 100, 10) == auth.RECORDED
        # another key hashing to the same single-slot window
        other = (4).to_bytes(8, "little") + bytes(8)
        assert table.record(other, 1, 200, 99) == auth.FULL
        assert table.record(other, 1, 200, 100) == auth.RECORDED  # expiry is exclusive
        assert table.record(key, 8, 100, 100) == auth.FULL
        # keys hashing elsewhere are not refused
        assert table.record((1).to_bytes(16, "little"), 1, 200, 100) == auth.RECORDED
    finally:
        table.close()
    with pytest.raises(ValueError):
        ReplayTable(slots=4, window=5)


def test_digest_comparisons_are_constant_time(admin, monkeypatch):
    calls = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    nonce = nonce_of(admin.challenge())
    value = digest_header(nonce)
    assert admin.check("SEND", TARGET, value).ok
    response = re.search(r'response="(\w+)"', value).group(1)
    assert (response, response) in calls  # the response digest
    assert any(isinstance(a, bytes) and len(a) == 32 for a, _ in calls)  # the nonce's MAC
    calls.clear()
    assert admin.check("SEND", TARGET, basic("admin", "s3cret pw")).ok
    assert calls and all(len(a) == 32 for a, _ in calls)  # the stored ha1
    calls.clear()
    assert not admin.check("SEND", TARGET, basic("nobody", "s3cret pw")).ok
    assert calls  # an unknown user is compared too


def test_admin_auth_arguments(htdigest_path, table):
    ht = load_htdigest(htdigest_path)
    with pytest.raises(ValueError, match="16 bytes"):
        AdminAuth(ht, b"short", table)
    with pytest.raises(ValueError, match="lifetime"):
        AdminAuth(ht, new_secret(), table, lifetime=0)
    assert len(new_secret()) == 32 and new_secret() != new_secret()


# -- the nonce-count table across os.fork() --------------------------------------

def in_child(body):
    """Run ``body()`` in a forked child; return its exit status (0 if it returned)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if body() is not False else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_child_workers_nonce_count_is_seen_by_the_parent(htdigest_path, clock):
    table = ReplayTable()  # made before the fork, as the master does
    secret = new_secret()
    admin = AdminAuth(load_htdigest(htdigest_path), secret, table, clock=clock)
    try:
        nonce = nonce_of(admin.challenge())
        value = digest_header(nonce, nc="00000005")
        assert in_child(lambda: admin.check("SEND", TARGET, value).ok) == 0
        assert admin.check("SEND", TARGET, value) == AuthResult(
            False, None, True, "replayed nonce count")
        assert not admin.check("SEND", TARGET, digest_header(nonce, nc="00000004")).ok
        assert admin.check("SEND", TARGET, digest_header(nonce, nc="00000006")).ok
        # and back: the child sees what the parent recorded
        value = digest_header(nonce, nc="00000006")
        assert in_child(lambda: admin.check("SEND", TARGET, value).stale) == 0
    finally:
        table.close()


def test_the_lock_excludes_other_processes_and_dies_with_its_holder():
    table = ReplayTable(slots=8, window=8)
    try:
        held_r, held_w = os.pipe()  # child -> parent: "I hold the lock"
        go_r, go_w = os.pipe()  # parent -> child: "die now"
        pid = os.fork()
        if pid == 0:
            try:
                os.close(held_r)
                os.close(go_w)
                fcntl.lockf(table._fd, fcntl.LOCK_EX)
                os.write(held_w, b"x")
                os.read(go_r, 1)  # then die holding it
            except BaseException as exc:
                os.write(held_w, repr(exc).encode()[:200])
            finally:
                os._exit(0)
        os.close(held_w)  # a child that dies early gives EOF, not a hang
        os.close(go_r)
        ready, _, _ = select.select([held_r], [], [], 30)
        said = os.read(held_r, 256) if ready else b"(no answer in 30 s)"
        assert said == b"x", said
        with pytest.raises(BlockingIOError):
            fcntl.lockf(table._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        fcntl.lockf(table._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel
        fcntl.lockf(table._fd, fcntl.LOCK_UN)
        assert table.record(bytes(16), 1, 100, 0) == auth.RECORDED
        for fd in (held_r, go_w):
            os.close(fd)
    finally:
        table.close()


def test_racing_workers_never_accept_the_same_count():
    """Two forked workers record counts 1..N of one nonce at once: each count is
    recorded by at most one of them (a lost update would let both take it)."""
    table = ReplayTable(slots=8, window=8)
    key = os.urandom(16)
    n = 400
    try:
        pipes, pids = [], []
        for _ in range(2):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    won = [nc for nc in range(1, n + 1)
                           if table.record(key, nc, 10**15, 1) == auth.RECORDED]
                    os.write(write_end, ",".join(map(str, won)).encode() + b"\n")
                finally:
                    os._exit(0)
            os.close(write_end)
            pipes.append(read_end)
            pids.append(pid)
        won = []
        for read_end in pipes:
            data = b""
            while not data.endswith(b"\n"):
                ready, _, _ = select.select([read_end], [], [], 30)
                got = os.read(read_end, 65536) if ready else b""
                assert got, f"a child died or hung: {data[-200:]!r}"
                data += got
            os.close(read_end)
            won.append({int(x) for x in data.split(b",") if x.strip()})
        for pid in pids:
            os.waitpid(pid, 0)
        assert not won[0] & won[1]
        assert n in won[0] | won[1]
        assert table.record(key, n, 10**15, 1) == auth.REPLAYED
    finally:
        table.close()


def test_the_client_side_answers_as_computed_independently(admin):
    scheme, params = auth.parse_challenge(admin.challenge()[0][1])
    assert scheme == "digest" and params["algorithm"] == "MD5"
    value = auth.digest_authorization(params, "admin", "s3cret pw", "SEND", TARGET, 3, "abc")
    creds = parse_authorization(value)
    assert (creds.nc, creds.cnonce, creds.opaque) == ("00000003", "abc", params["opaque"])
    assert creds.response == digest_response("admin", "s3cret pw", "SEND", TARGET,
                                             params["nonce"], "00000003", "abc")
    assert admin.check("SEND", TARGET, value).ok
