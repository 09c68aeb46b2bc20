"""Sans-I/O parsing of an HTTP/1.x request head (request line + header fields),
pure-Python twin: the executable spec of ``_fastpath.httphead`` (same names,
signatures, exceptions, statuses and reasons; differential tests hold both to that).

Strict on purpose: hand-written HTTP servers are where request smuggling lives. Each
rejection is an ``HttpError`` carrying the status and a one-line reason. The caller
finds the end of the head (``find_head_end``) and enforces the size limit (431).
"""
import re

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_DIGITS = re.compile(rb"[0-9]{1,18}\Z")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]\Z")
_TARGET_CTL = re.compile(rb"[\x00-\x20\x7f]")  # controls, space and DEL


class HttpError(Exception):
    """A request that must be refused: ``status`` and a one-line ``reason``."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Request:
    """A parsed request head. ``headers`` maps lower-case names to str values (repeated
    fields joined with ', '); ``fields`` keeps every (lower name, value) in order."""

    __slots__ = ("method", "target", "path", "query", "version", "headers", "fields",
                 "keep_alive", "content_length", "chunked", "expect_continue")

    def header(self, name, default=""):
        return self.headers.get(name, default)


def find_head_end(buf, start=0):
    """Index just past the CRLFCRLF ending the head in ``buf``, or -1.
    ``start`` lets the caller skip what it already searched (minus 3 bytes)."""
    pos = buf.find(b"\r\n\r\n", start)
    return -1 if pos < 0 else pos + 4


def _content_length(values):
    lengths = set()
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if not _DIGITS.match(item.encode("latin-1")):
                raise HttpError(400, "invalid Content-Length")
            lengths.add(int(item))
    if len(lengths) != 1:
        raise HttpError(400, "conflicting Content-Length values")
    return lengths.pop()


def parse_head(data):
    """Parse ``data`` (bytes: the head including the final CRLFCRLF) into a Request."""
    if b"\0" in data:
        raise HttpError(400, "NUL byte in request head")
    lines = data.split(b"\r\n")
    # the head ends with CRLF CRLF: two trailing empty strings after the split
    if len(lines) < 3 or lines[-1] or lines[-2]:
        raise HttpError(400, "malformed request head")
    del lines[-2:]
    if data.count(b"\n") != len(lines) + 1 or data.count(b"\r") != len(lines) + 1:
        raise HttpError(400, "bare CR or LF in request head")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not TOKEN.match(method):
        raise HttpError(400, "invalid method")
    if version == b"HTTP/1.1":
        ver = 11
    elif version == b"HTTP/1.0":
        ver = 10
    elif not _VERSION.match(version):
        raise HttpError(400, "malformed HTTP version")
    elif version.startswith(b"HTTP/1."):
        ver = 11  # a higher minor version is served as the highest we know (RFC 9112 2.3)
    else:
        raise HttpError(505, "HTTP version not supported")
    if not target.startswith(b"/") or _TARGET_CTL.search(target):
        raise HttpError(400, "invalid request target")

    headers = {}
    fields = []
    counts = {}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding in headers")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.match(name):
            raise HttpError(400, "invalid header field")
        lname = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        fields.append((lname, text))
        if lname in headers:
            headers[lname] = headers[lname] + ", " + text
            counts[lname] += 1
        else:
            headers[lname] = text
            counts[lname] = 1

    req = Request()
    req.method = method.decode("ascii")
    req.target = target.decode("latin-1")
    path, _, query = req.target.partition("?")
    req.path = path
    req.query = query
    req.version = ver
    req.headers = headers
    req.fields = fields

    if ver == 11 and "host" not in headers:
        raise HttpError(400, "missing Host header")
    if counts.get("host", 0) > 1:
        raise HttpError(400, "repeated Host header")

    te = headers.get("transfer-encoding")
    cl = headers.get("content-length")
    if te is not None:
        if cl is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if ver == 10:
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if te.lower() != "chunked":
            raise HttpError(501, "unsupported Transfer-Encoding")
        req.chunked = True
        req.content_length = None
    else:
        req.chunked = False
        req.content_length = None if cl is None else _content_length(
            [v for n, v in fields if n == "content-length"])

    connection = headers.get("connection", "").lower()
    tokens = {t.strip() for t in connection.split(",")} if connection else ()
    if ver == 11:
        req.keep_alive = "close" not in tokens
    else:
        req.keep_alive = "keep-alive" in tokens
    expect = headers.get("expect")
    if expect is not None and ver == 11:
        if expect.lower() != "100-continue":
            raise HttpError(417, "unsupported Expect value")
        req.expect_continue = True
    else:
        req.expect_continue = False
    return req
