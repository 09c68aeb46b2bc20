"""_fastpath.httphead and its twin storage.pure.httphead: the same cases against both,
then differential tests holding the compiled parser to the twin (every attribute, or the
exception's status and reason). tests/test_head.py covers the spec through the
re-exporting module storage.http.head."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import import_twin, twin_params
from storage.pure import httphead as pure

fast = import_twin("_fastpath.httphead")

ATTRS = ("method", "target", "path", "query", "version", "headers", "fields",
         "keep_alive", "content_length", "chunked", "expect_continue")


@pytest.fixture(params=twin_params("httphead"))
def mod(request):
    return import_twin(request.param)


def head(*lines):
    return "".join(line + "\r\n" for line in lines).encode("latin-1") + b"\r\n"


def refused(mod, data):
    with pytest.raises(mod.HttpError) as info:
        mod.parse_head(data)
    exc = info.value
    assert isinstance(exc, Exception)
    assert exc.reason and "\n" not in exc.reason and str(exc) == exc.reason
    return exc.status, exc.reason


# -- the same cases against both ----------------------------------------------------

def test_public_names(mod):
    for name in ("TOKEN", "HttpError", "Request", "find_head_end", "parse_head"):
        assert hasattr(mod, name), name
    assert issubclass(mod.HttpError, Exception)
    exc = mod.HttpError(431, "request head too large")
    assert (exc.status, exc.reason, str(exc)) == (431, "request head too large",
                                                  "request head too large")


def test_get_with_query(mod):
    req = mod.parse_head(head("GET /0123456789ABCDEF?x=1&y?z HTTP/1.1",
                              "Host: 127.0.0.1:6009", "User-Agent: wrk", "Accept: */*"))
    assert (req.method, req.target) == ("GET", "/0123456789ABCDEF?x=1&y?z")
    assert (req.path, req.query) == ("/0123456789ABCDEF", "x=1&y?z")
    assert req.version == 11 and req.keep_alive is True
    assert req.content_length is None and req.chunked is False
    assert req.expect_continue is False
    assert req.header("host") == "127.0.0.1:6009"
    assert req.header("missing") == "" and req.header("missing", None) is None
    assert req.fields == [("host", "127.0.0.1:6009"), ("user-agent", "wrk"),
                          ("accept", "*/*")]


def test_empty_query(mod):
    req = mod.parse_head(head("GET /a? HTTP/1.1", "Host: h"))
    assert (req.path, req.query, req.target) == ("/a", "", "/a?")


def test_put_with_length_and_continue(mod):
    req = mod.parse_head(head("PUT /ABC HTTP/1.1", "Host: h", "content-LENGTH: 1048576",
                              "Expect: 100-Continue", "X-oio-Chunk-Meta-Chunk-Pos: 0"))
    assert req.content_length == 1048576 and type(req.content_length) is int
    assert req.expect_continue is True and req.chunked is False
    assert req.header("x-oio-chunk-meta-chunk-pos") == "0"


def test_put_chunked(mod):
    req = mod.parse_head(head("PUT /ABC HTTP/1.1", "Host: h", "Transfer-Encoding: ChUnKeD"))
    assert req.chunked is True and req.content_length is None


def test_http10_without_host(mod):
    req = mod.parse_head(head("HEAD /ABC HTTP/1.0"))
    assert (req.method, req.version, req.keep_alive) == ("HEAD", 10, False)
    assert req.headers == {} and req.fields == []


def test_names_lowered_values_trimmed_repeats_joined(mod):
    req = mod.parse_head(head("POST /x HTTP/1.1", "HOST: h", "X-Oio-Ext-Color:  \tred \t",
                              "x-oio-EXT-color: blue", "Empty:", "Tab:\tv", "A: x \x01 y"))
    assert req.headers == {"host": "h", "x-oio-ext-color": "red, blue", "empty": "",
                           "tab": "v", "a": "x \x01 y"}
    assert req.fields == [("host", "h"), ("x-oio-ext-color", "red"),
                          ("x-oio-ext-color", "blue"), ("empty", ""), ("tab", "v"),
                          ("a", "x \x01 y")]


def test_latin1_target_and_value(mod):
    req = mod.parse_head(b"GET /caf\xe9?\xff HTTP/1.1\r\nHost: h\r\nX-Name: \xe9t\xe9\r\n\r\n")
    assert (req.target, req.path, req.query) == ("/caf\xe9?\xff", "/caf\xe9", "\xff")
    assert req.header("x-name") == "\xe9t\xe9"


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_bytes_like_input(mod, kind):
    req = mod.parse_head(kind(head("PUT /ABC HTTP/1.1", "Host: h", "Content-Length: 7")))
    assert (req.method, req.path, req.content_length) == ("PUT", "/ABC", 7)


def test_fast_takes_any_buffer():
    data = b"xx" + head("PUT /ABC HTTP/1.1", "Host: h", "Content-Length: 7") + b"PUT"
    req = fast.parse_head(memoryview(data)[2:-3])
    assert (req.method, req.path, req.content_length) == ("PUT", "/ABC", 7)
    assert fast.find_head_end(memoryview(data)[2:]) == len(data) - 5
    with pytest.raises(TypeError):
        fast.parse_head("GET / HTTP/1.0\r\n\r\n")


def test_request_attributes_are_writable(mod):
    req = mod.parse_head(head("GET / HTTP/1.1", "Host: h"))
    for attr in ATTRS:
        setattr(req, attr, "x")
        assert getattr(req, attr) == "x"
    req.headers = {"a": "b"}
    assert req.header("a") == "b"


@pytest.mark.parametrize("version,connection,keep", [
    ("1.1", None, True), ("1.1", "close", False), ("1.1", "Upgrade, CLOSE ", False),
    ("1.1", "closed", True), ("1.1", "", True), ("1.1", ",close,", False),
    ("1.1", "close\xa0", False), ("1.1", "\x0bclose\x1f", False), ("1.1", "cl ose", True),
    ("1.0", None, False), ("1.0", "Keep-Alive", True), ("1.0", "foo,  keep-alive\x85", True),
    ("1.0", "keep-alive x", False), ("1.0", "", False), ("1.2", "close", False),
])
def test_keep_alive(mod, version, connection, keep):
    # str.strip() drops every Unicode space, \x85 and \xa0 included: both agree on that
    lines = [f"GET / HTTP/{version}", "Host: h"]
    if connection is not None:
        lines.append(f"Connection: {connection}")
    assert mod.parse_head(head(*lines)).keep_alive is keep


@pytest.mark.parametrize("values,length", [
    (["0"], 0), (["000123"], 123), (["999999999999999999"], 10 ** 18 - 1),
    (["7", "7"], 7), (["7 ,\t7"], 7), (["07", "7"], 7),
])
def test_content_length_accepted(mod, values, length):
    lines = ["PUT / HTTP/1.1", "Host: h"] + [f"Content-Length: {v}" for v in values]
    assert mod.parse_head(head(*lines)).content_length == length


@pytest.mark.parametrize("values,reason", [
    ([""], "invalid Content-Length"), (["1" * 19], "invalid Content-Length"),
    (["5,"], "invalid Content-Length"), (["\xb2"], "invalid Content-Length"),
    (["5", "6"], "conflicting Content-Length values"),
    (["5, 6", "x"], "invalid Content-Length"),  # invalid wins over an earlier conflict
    (["5, 6, 5"], "conflicting Content-Length values"),
])
def test_bad_content_length(mod, values, reason):
    lines = ["PUT / HTTP/1.1", "Host: h"] + [f"Content-Length: {v}" for v in values]
    assert refused(mod, head(*lines)) == (400, reason)


# every rejection: (head, status, reason); the order of the checks is part of the spec
REFUSALS = [
    (b"GET / HTTP/1.1\r\nHost: \x00\r\n", 400, "NUL byte in request head"),
    (b"", 400, "malformed request head"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n", 400, "malformed request head"),
    (b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "bare CR or LF in request head"),
    (b"GET / HTTP/1.1\r\r\nHost: h\r\n\r\n", 400, "bare CR or LF in request head"),
    (b"\r\n\r\n", 400, "malformed request line"),
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "malformed request line"),
    (b"GET /\r\n\r\n", 400, "malformed request line"),
    (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method"),
    (b" / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method"),
    (b"G@T / HTTP/2.0\r\n\r\n", 400, "invalid method"),  # method before version
    (b"GET / HTTP/1.a\r\nHost: h\r\n\r\n", 400, "malformed HTTP version"),
    (b"GET x HTTP/1\r\nHost: h\r\n\r\n", 400, "malformed HTTP version"),
    (b"GET x HTTP/2.0\r\nHost: h\r\n\r\n", 505, "HTTP version not supported"),
    (b"GET x HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid request target"),
    (b"GET  HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid request target"),
    (b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid request target"),
    (b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400, "obsolete line folding in headers"),
    (b"GET / HTTP/1.1\r\nHost: h\r\n\tx\r\n\r\n", 400, "obsolete line folding in headers"),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400, "invalid header field"),
    (b"GET / HTTP/1.1\r\n: h\r\n\r\n", 400, "invalid header field"),
    (b"GET / HTTP/1.1\r\nHost\r\n\r\n", 400, "invalid header field"),
    (b"GET / HTTP/1.1\r\n\r\n\r\n", 400, "invalid header field"),
    (b"GET / HTTP/1.1\r\nX\xe9: 1\r\n\r\n", 400, "invalid header field"),
    (b"GET / HTTP/1.1\r\nX: 1\r\n\r\n", 400, "missing Host header"),
    (b"GET / HTTP/1.1\r\nX-A: 1\r\nB@d: 2\r\n\r\n", 400, "invalid header field"),
    (b"GET / HTTP/1.0\r\nHost: a\r\nHOST: a\r\n\r\n", 400, "repeated Host header"),
    (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\nHost: h\r\n\r\n",
     400, "both Content-Length and Transfer-Encoding"),
    (b"PUT / HTTP/1.0\r\nTransfer-Encoding: gzip\r\n\r\n",
     400, "Transfer-Encoding in an HTTP/1.0 request"),
    (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 501, "unsupported Transfer-Encoding"),
    (b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\xa0\r\n\r\n",
     501, "unsupported Transfer-Encoding"),
    (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400, "invalid Content-Length"),
    (b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\nExpect: no\r\n\r\n",
     400, "invalid Content-Length"),
    (b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n",
     417, "unsupported Expect value"),
    (b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: \r\n\r\n", 417, "unsupported Expect value"),
]


@pytest.mark.parametrize("data,status,reason", REFUSALS)
def test_refusals(mod, data, status, reason):
    assert refused(mod, data) == (status, reason)


@pytest.mark.parametrize("version", ["HTTP/1.2", "HTTP/1.9"])
def test_higher_minor_version_is_http11(mod, version):
    assert mod.parse_head(head(f"GET / {version}", "Host: h")).version == 11


def test_find_head_end(mod):
    data = b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    assert mod.find_head_end(data) == 18
    assert mod.find_head_end(bytearray(data), 18) == len(data)
    assert mod.find_head_end(data, 14) == 18 and mod.find_head_end(data, 15) == len(data)
    assert mod.find_head_end(data, len(data)) == -1
    assert mod.find_head_end(data, 10 ** 30) == -1
    assert mod.find_head_end(data, -4) == len(data)  # a slice index, as bytes.find takes
    assert mod.find_head_end(data, -10 ** 30) == 18
    assert mod.find_head_end(data, None) == 18
    assert mod.find_head_end(b"\r\n\r") == -1 and mod.find_head_end(b"") == -1


# -- differential: the compiled parser against the twin ----------------------------------

def outcome(module, data):
    try:
        req = module.parse_head(data)
    except module.HttpError as exc:
        return ("refused", exc.status, exc.reason, str(exc))
    return ("parsed",) + tuple((attr, type(getattr(req, attr)), getattr(req, attr))
                               for attr in ATTRS)


def same(data):
    expected = outcome(pure, data)
    assert outcome(fast, data) == expected, data
    assert outcome(fast, bytearray(data)) == expected
    return expected


TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
LATIN1 = "".join(chr(c) for c in range(1, 0x100) if c not in (0x0A, 0x0D))
SPECIAL = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect", "HOST",
           "content-length", "TRANSFER-encoding", "connection", "eXpect"]
SPECIAL_VALUES = ["chunked", "Chunked", "close", "keep-alive", "Keep-Alive, close",
                  "100-continue", "100-CONTINUE", "0", "12", "12, 12", "12 , 13", "",
                  "\xa0close", "close\x85", "chunked\x0b", "1" * 18, "1" * 19, "a,\xa0close\t,b",
    "Keep-Alive\x1c, x", "5 ,\t5"]

# the blanks around values and list items: what bytes.strip(b" \t") and str.strip() drop
BLANKS = st.text(alphabet=" \t\xa0\x85\x0b\x1c", max_size=2)
names = st.sampled_from(SPECIAL) | st.text(alphabet=TCHAR, min_size=1, max_size=10)
values = st.builds(lambda a, core, b: a + core + b, BLANKS,
                   st.sampled_from(SPECIAL_VALUES) | st.text(alphabet=LATIN1, max_size=16),
                   BLANKS)
VCHAR = "".join(chr(c) for c in range(0x21, 0x100) if c != 0x7F)  # plus obs-text


@st.composite
def heads(draw):
    """Mostly heads that get through the request line and Host checks, so that the
    field rules are reached; sometimes not."""
    method = draw(st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "M-SEARCH", "G@T"]))
    target = "/" + draw(st.text(alphabet=VCHAR, max_size=12) | st.text(alphabet=LATIN1,
                                                                      max_size=12))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.1", "HTTP/1.0",
                                    "HTTP/1.2", "HTTP/2.0", "HTTP/1.x"]))
    fields = draw(st.lists(st.tuples(names, values), max_size=8))
    if draw(st.integers(0, 3)):
        fields.insert(draw(st.integers(0, len(fields))), ("Host", "h"))
    return head(f"{method} {target} {version}", *(f"{n}:{v}" for n, v in fields))


@settings(max_examples=400, deadline=None)
@given(heads())
def test_differential_generated_heads(data):
    same(data)


ITEMS = {
    "Connection": ["close", "keep-alive", "Close", "KEEP-ALIVE", "upgrade", "", "clos"],
    "Content-Length": ["0", "7", "07", "1" * 18, "1" * 19, "", "x", "+1", "\xb2"],
    "Transfer-Encoding": ["chunked", "Chunked", "gzip", ""],
    "Expect": ["100-continue", "100-Continue", "x", ""],
}


@st.composite
def framing_heads(draw):
    """Valid request lines with the fields whose values the parser reads as lists."""
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    fields = [("Host", "h")] if draw(st.integers(0, 5)) else []
    for name in draw(st.lists(st.sampled_from(sorted(ITEMS)), max_size=3)):
        items = draw(st.lists(st.sampled_from(ITEMS[name]), min_size=1, max_size=3))
        fields.append((name, ",".join(draw(BLANKS) + item + draw(BLANKS) for item in items)))
    return head(f"PUT /x {version}", *(f"{n}:{v}" for n, v in fields))


@settings(max_examples=400, deadline=None)
@given(framing_heads())
def test_differential_framing_fields(data):
    same(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_differential_arbitrary_bytes(data):
    same(data + b"\r\n\r\n")
    same(data)


BASES = [
    head("GET /0123456789ABCDEF?x=1 HTTP/1.1", "Host: 127.0.0.1:6009"),
    head("PUT /ABC HTTP/1.1", "Host: h", "Content-Length: 42, 42", "Expect: 100-continue",
         "Connection: keep-alive, close", "X-oio-chunk-meta-chunk-pos: 0"),
    head("PUT /ABC HTTP/1.0", "Transfer-Encoding: chunked", "Connection: Keep-Alive"),
    head("DELETE /x HTTP/1.1", "host:", "Content-Length: 0", "X: \xe9"),
]
MUTATION_BYTES = b"\r\n\x00 \t:,/?aZ0-1\x7f\xff\x85\xa0\x0b"


def mutate(rng, data):
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        byte = rng.choice(MUTATION_BYTES)
        op = rng.randrange(4)
        if op == 0 and at < len(out):
            out[at] = byte
        elif op == 1:
            out[at:at] = bytes([byte])
        elif op == 2 and at < len(out):
            del out[at]
        else:  # duplicate a line, the easiest way to repeat a field
            lines = bytes(out).split(b"\r\n")
            pick = rng.randrange(len(lines))
            lines.insert(pick, lines[pick])
            out = bytearray(b"\r\n".join(lines))
    return bytes(out)


def test_differential_mutated_heads():
    rng = random.Random(20240611)
    kinds = set()
    for _ in range(3000):
        data = mutate(rng, rng.choice(BASES))
        result = same(data)
        kinds.add(result[0] if result[0] == "parsed" else result[1:3])
    # the mutations reach both valid heads and a good part of the rejections
    assert "parsed" in kinds and len(kinds) >= 10, kinds


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(-50, 50) | st.none())
def test_differential_find_head_end(data, start):
    wire = data.replace(b"x", b"\r\n")
    assert fast.find_head_end(wire, start) == pure.find_head_end(wire, start)
    assert fast.find_head_end(bytearray(wire), start) == pure.find_head_end(wire, start)
