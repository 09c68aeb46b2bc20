"""storage.http.head: strict sans-I/O parsing of HTTP/1.x request heads."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import import_twin, twin_params

from storage.http import head as selected
from fuzzutil import load_fuzz_target



def head(*lines):
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n"


@pytest.fixture(scope="module", params=twin_params("httphead"))
def hp(request):
    """The compiled parser and its pure twin: every case runs against both."""
    return import_twin(request.param)


def refused(hp, data):
    with pytest.raises(hp.HttpError) as info:
        hp.parse_head(data)
    exc = info.value
    assert exc.reason and "\n" not in exc.reason and str(exc) == exc.reason
    return exc.status


# -- valid heads ----------------------------------------------------------------

def test_get_http11(hp):
    req = hp.parse_head(head("GET /0123456789ABCDEF0123456789ABCDEF?x=1&y HTTP/1.1",
                          "Host: 127.0.0.1:6009", "User-Agent: curl/8", "Accept: */*"))
    assert req.method == "GET"
    assert req.target == "/0123456789ABCDEF0123456789ABCDEF?x=1&y"
    assert req.path == "/0123456789ABCDEF0123456789ABCDEF"
    assert req.query == "x=1&y"
    assert req.version == 11
    assert req.keep_alive is True
    assert req.content_length is None and req.chunked is False
    assert req.expect_continue is False
    assert req.header("host") == "127.0.0.1:6009"
    assert req.header("user-agent") == "curl/8"
    assert req.header("missing") == "" and req.header("missing", None) is None
    assert req.fields == [("host", "127.0.0.1:6009"), ("user-agent", "curl/8"),
                          ("accept", "*/*")]


def test_put_with_content_length_and_continue(hp):
    req = hp.parse_head(head("PUT /ABC HTTP/1.1", "Host: h", "Content-Length: 1048576",
                          "Expect: 100-continue", "X-oio-Chunk-Meta-Chunk-Pos: 0"))
    assert req.method == "PUT" and req.path == "/ABC" and req.query == ""
    assert req.content_length == 1048576 and not req.chunked
    assert req.expect_continue is True
    assert req.header("x-oio-chunk-meta-chunk-pos") == "0"


def test_put_chunked(hp):
    req = hp.parse_head(head("PUT /ABC HTTP/1.1", "Host: h", "Transfer-Encoding: chunked",
                          "Trailer: X-oio-Chunk-Meta-Chunk-Hash"))
    assert req.chunked is True and req.content_length is None


def test_transfer_encoding_is_case_insensitive(hp):
    assert hp.parse_head(head("PUT / HTTP/1.1", "Host: h", "Transfer-Encoding: Chunked")).chunked


def test_head_http10_without_host(hp):
    req = hp.parse_head(head("HEAD /ABC HTTP/1.0"))
    assert req.method == "HEAD" and req.version == 10
    assert req.keep_alive is False
    assert req.headers == {} and req.fields == []


def test_minimal_http11(hp):
    req = hp.parse_head(b"DELETE / HTTP/1.1\r\nHost:\r\n\r\n")
    assert req.method == "DELETE" and req.header("host", None) == ""


def test_names_lower_cased_values_trimmed_repeats_joined(hp):
    req = hp.parse_head(head("POST /x HTTP/1.1", "HOST: h", "X-Oio-Ext-Color:  \tred \t",
                          "x-oio-EXT-color: blue", "Empty:", "Tab:\tv"))
    assert req.headers["host"] == "h"
    assert req.headers["x-oio-ext-color"] == "red, blue"
    assert req.headers["empty"] == ""
    assert req.headers["tab"] == "v"
    assert req.fields == [("host", "h"), ("x-oio-ext-color", "red"),
                          ("x-oio-ext-color", "blue"), ("empty", ""), ("tab", "v")]


def test_latin1_value_and_target_bytes(hp):
    req = hp.parse_head(b"GET /caf\xe9 HTTP/1.1\r\nHost: h\r\nX-Name: \xe9t\xe9\r\n\r\n")
    assert req.target == "/caf\xe9"
    assert req.header("x-name") == "\xe9t\xe9"


def test_custom_method_token_is_parsed(hp):
    # 405 is the application's business: the parser accepts any token
    assert hp.parse_head(head("M-SEARCH /x HTTP/1.1", "Host: h")).method == "M-SEARCH"


# -- keep-alive ---------------------------------------------------------------

@pytest.mark.parametrize("version,connection,keep", [
    ("1.1", None, True),
    ("1.1", "close", False),
    ("1.1", "Close", False),
    ("1.1", "keep-alive", True),
    ("1.1", "Upgrade, close", False),
    ("1.1", "upgrade ,  CLOSE ", False),
    ("1.1", "closed", True),
    ("1.0", None, False),
    ("1.0", "keep-alive", True),
    ("1.0", "Keep-Alive", True),
    ("1.0", "foo, keep-alive", True),
    ("1.0", "close", False),
])
def test_keep_alive(hp, version, connection, keep):
    lines = [f"GET / HTTP/{version}", "Host: h"]
    if connection is not None:
        lines.append(f"Connection: {connection}")
    assert hp.parse_head(head(*lines)).keep_alive is keep


def test_repeated_connection_fields_are_combined(hp):
    req = hp.parse_head(head("GET / HTTP/1.1", "Host: h", "Connection: foo", "Connection: close"))
    assert req.keep_alive is False


# -- Expect -------------------------------------------------------------------

def test_expect_100_continue_any_case(hp):
    assert hp.parse_head(head("PUT / HTTP/1.1", "Host: h", "Expect: 100-Continue",
                           "Content-Length: 1")).expect_continue


@pytest.mark.parametrize("value", ["200-ok", "100-continue, foo", "", "continue"])
def test_other_expectations_are_417(hp, value):
    assert refused(hp, head("PUT / HTTP/1.1", "Host: h", f"Expect: {value}")) == 417


def test_expect_ignored_in_http10(hp):
    req = hp.parse_head(head("PUT / HTTP/1.0", "Expect: 100-continue", "Content-Length: 1"))
    assert req.expect_continue is False
    assert hp.parse_head(head("PUT / HTTP/1.0", "Expect: other")).expect_continue is False


# -- Content-Length / Transfer-Encoding -----------------------------------------

@pytest.mark.parametrize("values,length", [
    (["0"], 0),
    (["42"], 42),
    (["000123"], 123),
    (["999999999999999999"], 10 ** 18 - 1),
    (["7", "7"], 7),
    (["7, 7"], 7),
    (["7 ,7", "7"], 7),
])
def test_content_length_accepted(hp, values, length):
    lines = ["PUT / HTTP/1.1", "Host: h"] + [f"Content-Length: {v}" for v in values]
    assert hp.parse_head(head(*lines)).content_length == length


@pytest.mark.parametrize("values", [
    [""], [" "], ["abc"], ["+5"], ["-5"], ["5a"], ["0x10"], ["5.0"], ["1e3"],
    ["5 5"], ["5,"], [",5"], ["1" * 19], ["\xb2"],
    ["5", "6"], ["5, 6"], ["5", ""], ["5", "+5"],
])
def test_bad_or_conflicting_content_length_is_400(hp, values):
    lines = ["PUT / HTTP/1.1", "Host: h"] + [f"Content-Length: {v}" for v in values]
    assert refused(hp, head(*lines)) == 400


@pytest.mark.parametrize("first", ["Content-Length: 5", "Transfer-Encoding: chunked"])
def test_content_length_with_transfer_encoding_is_400(hp, first):
    other = ("Transfer-Encoding: chunked" if first.startswith("Content")
             else "Content-Length: 5")
    assert refused(hp, head("PUT / HTTP/1.1", "Host: h", first, other)) == 400
    # also when the Transfer-Encoding is one we would not support anyway
    assert refused(hp, head("PUT / HTTP/1.1", "Host: h", "Content-Length: 5",
                        "Transfer-Encoding: gzip")) == 400


@pytest.mark.parametrize("value", ["gzip", "gzip, chunked", "chunked, gzip", "identity",
                                   "chunked;q=1"])
def test_transfer_encoding_other_than_chunked_is_501(hp, value):
    assert refused(hp, head("PUT / HTTP/1.1", "Host: h", f"Transfer-Encoding: {value}")) == 501


def test_repeated_transfer_encoding_is_not_plain_chunked(hp):
    assert refused(hp, head("PUT / HTTP/1.1", "Host: h", "Transfer-Encoding: chunked",
                        "Transfer-Encoding: chunked")) == 501


def test_transfer_encoding_in_http10_is_400(hp):
    assert refused(hp, head("PUT / HTTP/1.0", "Transfer-Encoding: chunked")) == 400


# -- framing and syntax ---------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: h\r\n X-Folded: yes\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\tfolded\r\n\r\n",
    b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
])
def test_obs_fold_is_400(hp, data):
    assert refused(hp, data) == 400


@pytest.mark.parametrize("line", ["Host : h", "Host\t: h", "X A: 1", ": empty-name",
                                  "NoColon", "X-\xe9: 1", "X(A): 1", "X@: 1"])
def test_bad_field_names_are_400(hp, line):
    assert refused(hp, head("GET / HTTP/1.1", "Host: h", line)) == 400


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\nX-A: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\nb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\rX-A: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
    b"GET /\r HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n\n\r\n",
])
def test_bare_lf_or_cr_is_400(hp, data):
    assert refused(hp, data) == 400


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHo\x00st: h\r\n\r\n",
])
def test_nul_is_400(hp, data):
    assert refused(hp, data) == 400


@pytest.mark.parametrize("data", [b"\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nHost: h\r\n", b"", b"\r\n"])
def test_malformed_heads_are_400(hp, data):
    assert refused(hp, data) == 400


@pytest.mark.parametrize("line", [
    "GET  / HTTP/1.1", "GET / HTTP/1.1 ", " GET / HTTP/1.1", "GET /", "GET",
    "GET / HTTP/1.1 extra", "GET\t/ HTTP/1.1",
])
def test_malformed_request_line_is_400(hp, line):
    assert refused(hp, head(line, "Host: h")) == 400


@pytest.mark.parametrize("method", ["G(T", "GE\"T", "G@T", "GET:", "G\xe9T", "{GET}", "G/T"])
def test_bad_method_token_is_400(hp, method):
    assert refused(hp, head(f"{method} / HTTP/1.1", "Host: h")) == 400


@pytest.mark.parametrize("version", ["HTTP/1", "HTTP/1.", "http/1.1", "HTTP/1.1.1",
                                     "HTTP/11", "HTTP/1.a", "HTTP/x.1", "HTTP/9.x",
                                     "HTTP 1.1", "HTTPS/1.1", "HTTP/1.1x", "HTTP/", "-",
                                     "HTTP/10.0", "HTTP/1,1"])
def test_malformed_version_is_400(hp, version):
    assert refused(hp, head(f"GET / {version}", "Host: h")) == 400


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0", "HTTP/0.9", "HTTP/9.9"])
def test_unsupported_version_is_505(hp, version):
    assert refused(hp, head(f"GET / {version}", "Host: h")) == 505


def test_higher_minor_version_is_served_as_http11(hp):
    # RFC 9112 section 2.3: process as the highest minor version we implement
    req = hp.parse_head(head("GET / HTTP/1.2", "Host: h"))
    assert req.version == 11 and req.keep_alive


def test_missing_host_in_http11_is_400(hp):
    assert refused(hp, head("GET / HTTP/1.1", "X-A: 1")) == 400


@pytest.mark.parametrize("lines", [("Host: a", "Host: a"), ("Host: a", "host: b"),
                                   ("Host:", "Host:")])
def test_repeated_host_is_400(hp, lines):
    assert refused(hp, head("GET / HTTP/1.1", *lines)) == 400
    assert refused(hp, head("GET / HTTP/1.0", *lines)) == 400


@pytest.mark.parametrize("target", ["*", "ABC", "http://h/ABC", "", "?x", "./a"])
def test_target_must_start_with_slash(hp, target):
    assert refused(hp, head(f"OPTIONS {target} HTTP/1.1", "Host: h")) == 400


@pytest.mark.parametrize("char", ["\x01", "\x1f", "\x7f", "\x0b", "\x0c", "\t"])
def test_control_characters_in_target_are_400(hp, char):
    assert refused(hp, head(f"GET /a{char}b HTTP/1.1", "Host: h")) == 400


# -- find_head_end ----------------------------------------------------------------

def test_find_head_end(hp):
    data = b"GET / HTTP/1.1\r\nHost: h\r\n\r\nPUT"
    end = hp.find_head_end(data)
    assert data[:end].endswith(b"\r\n\r\n") and data[end:] == b"PUT"
    assert hp.find_head_end(b"GET / HTTP/1.1\r\nHost: h\r\n\r") == -1
    assert hp.find_head_end(b"") == -1
    assert hp.find_head_end(b"\r\n\r\n") == 4
    assert hp.find_head_end(bytearray(data)) == end


def test_find_head_end_with_start(hp):
    data = b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    first = hp.find_head_end(data)
    assert first == 18
    assert hp.find_head_end(data, first) == len(data)
    assert hp.find_head_end(data, 14) == 18  # the terminator starts at 14
    assert hp.find_head_end(data, 15) == len(data)  # starting past its first byte misses it
    assert hp.find_head_end(data, len(data)) == -1


def test_find_head_end_resuming_three_bytes_back(hp):
    """Grow a buffer a few bytes at a time, resuming 3 bytes before the last scan as the
    connection does: the end is found exactly where a whole scan finds it."""
    rng = random.Random(7)
    wire = head("PUT /ABC HTTP/1.1", "Host: h", "Content-Length: 3") + b"abc"
    for _ in range(200):
        buf = bytearray()
        scanned = 0
        end = -1
        pos = 0
        while end < 0 and pos < len(wire):
            step = rng.randint(1, 5)
            buf += wire[pos:pos + step]
            pos += step
            end = hp.find_head_end(buf, max(0, scanned - 3))
            scanned = len(buf)
        assert end == hp.find_head_end(wire) == len(wire) - 3


# -- properties -----------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHAR, min_size=1, max_size=12)
# names the parser gives meaning to are generated separately below
names = tokens.filter(lambda n: n.lower() not in (
    "host", "content-length", "transfer-encoding", "expect", "connection"))
VCHAR = "".join(chr(c) for c in range(0x21, 0x100) if c != 0x7F)  # plus obs-text
values = st.text(alphabet=VCHAR, max_size=20) | st.builds(
    lambda a, b: a + " \t " + b, st.text(alphabet="abc", min_size=1, max_size=3),
    st.text(alphabet="xyz", min_size=1, max_size=3))
targets = st.builds(lambda p: "/" + p, st.text(alphabet=VCHAR, max_size=30))


@st.composite
def valid_heads(draw):
    method = draw(tokens)
    target = draw(targets)
    version = draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1"]))
    fields = draw(st.lists(st.tuples(names, values), max_size=6))
    if version == "HTTP/1.1" or draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), ("Host", draw(values)))
    body = draw(st.sampled_from(["none", "length", "chunked"]))
    if body == "length":
        fields.append(("Content-Length", str(draw(st.integers(0, 10 ** 12)))))
    elif body == "chunked" and version == "HTTP/1.1":
        fields.append(("Transfer-Encoding", "chunked"))
    if draw(st.booleans()):
        fields.append(("Connection", draw(st.sampled_from(["close", "keep-alive"]))))
    if version == "HTTP/1.1" and draw(st.booleans()):
        fields.append(("Expect", "100-continue"))
    lines = [f"{method} {target} {version}"] + [
        f"{n}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{v}"
        f"{draw(st.sampled_from(['', ' ', chr(9)]))}" for n, v in fields]
    return method, target, version, fields, head(*lines)


@settings(max_examples=200, deadline=None)
@given(valid_heads())
def test_round_trip_of_generated_valid_heads(hp, case):
    method, target, version, fields, data = case
    req = hp.parse_head(data)
    assert req.method == method
    assert req.target == target
    assert req.version == (11 if version == "HTTP/1.1" else 10)
    assert req.fields == [(n.lower(), v) for n, v in fields]
    for name in {n.lower() for n, _ in fields}:
        assert req.headers[name] == ", ".join(v for n, v in fields if n.lower() == name)
    declared = dict((n, v) for n, v in fields)
    assert req.chunked == ("Transfer-Encoding" in declared)
    assert req.content_length == (int(declared["Content-Length"])
                                  if "Content-Length" in declared else None)
    connection = declared.get("Connection")
    if req.version == 11:
        assert req.keep_alive == (connection != "close")
        assert req.expect_continue == ("Expect" in declared)
    else:
        assert req.keep_alive == (connection == "keep-alive")
    assert hp.find_head_end(data + b"PUT / HTTP/1.1\r\n\r\n") == len(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_http_error_and_twins_agree(data):
    # differential: one pass over both twins (the fuzz target below does the same)
    assert FUZZ.outcome(FUZZ.fast, data + b"\r\n\r\n") == \
        FUZZ.outcome(FUZZ.pure, data + b"\r\n\r\n")


def mutate(rng, data):
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        byte = rng.choice(b"\r\n\x00 \t:,/aZ0-\x7f\xff")
        op = rng.randrange(3)
        if op == 0 and at < len(out):
            out[at] = byte
        elif op == 1:
            out[at:at] = bytes([byte])
        elif at < len(out):
            del out[at]
    return bytes(out)


# -- the fuzz target -----------------------------------------------------------------

FUZZ = load_fuzz_target("fuzz_head")


def test_head_module_re_exports_one_twin():
    assert selected.parse_head in (FUZZ.fast.parse_head, FUZZ.pure.parse_head)
    assert selected.HttpError in (FUZZ.fast.HttpError, FUZZ.pure.HttpError)
    assert selected.find_head_end in (FUZZ.fast.find_head_end, FUZZ.pure.find_head_end)


def test_fuzz_target_imports_without_atheris():
    assert callable(FUZZ.TestOneInput)
    assert "atheris" not in vars(FUZZ)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_target_smoke(data):
    FUZZ.TestOneInput(data)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 255), valid_heads(), st.randoms(use_true_random=False))
def test_fuzz_target_on_valid_and_mutated_heads(ctl, case, rng):
    data = case[-1]
    FUZZ.TestOneInput(bytes([ctl]) + data + b"GET")
    FUZZ.TestOneInput(bytes([ctl]) + mutate(rng, data))


@pytest.mark.parametrize("attr,value", [
    ("fields", [("host", "h"), ("x-a", "a\r\nX-Injected: 1")]),
    ("target", "relative"),
    ("content_length", -1),
    ("fields", [("Host", "h")]),
])
def test_fuzz_invariants_catch_a_broken_request(hp, attr, value):
    """The target is not vacuous: a request breaking an invariant trips it."""
    req = hp.parse_head(head("GET / HTTP/1.1", "Host: h"))
    FUZZ.check_request(req)
    setattr(req, attr, value)
    with pytest.raises(AssertionError):
        FUZZ.check_request(req)
