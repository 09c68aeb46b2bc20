"""Building HTTP/1.1 response heads."""
import functools
import time
from email.utils import formatdate

REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content",
    206: "Partial Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 411: "Length Required", 412: "Precondition Failed",
    413: "Content Too Large", 416: "Range Not Satisfiable", 417: "Expectation Failed",
    418: "I'm a teapot", 431: "Request Header Fields Too Large",
    499: "Client Closed Request", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
    507: "Insufficient Storage",
}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()}

_date_cache = [0, b""]


def http_date(ts=None):
    """RFC 7231 IMF-fixdate."""
    return formatdate(time.time() if ts is None else ts, usegmt=True)


@functools.lru_cache(maxsize=4096)
def _date_of_second(second):
    return formatdate(second, usegmt=True)


def last_modified(mtime):
    """HTTP date of a file's mtime (whole seconds), cached: chunks share few seconds."""
    return _date_of_second(int(mtime))


def date_header():
    """The Date header line, cached for the current second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date_cache[1]


def encode_fields(headers):
    """[(name, str value)] -> the header lines as bytes. A CR or LF inside a value (stored
    metadata is not trusted) is blanked out: it can never split a header."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
        fields = "".join([f"{name}: {_one_line(value)}\r\n" for name, value in headers])
    return fields.encode("latin-1")


def build_head(status, headers, content_length=None, keep_alive=True, chunked=False,
               fields=b""):
    """Response head bytes. headers: [(name, str value)] in canonical form; ``fields``:
    header lines already encoded by ``encode_fields`` (cached per chunk by the caller)."""
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    out = [line, date_header(), fields]
    if headers:
        out.append(encode_fields(headers))
    if chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    elif content_length is not None and status != 204 and status >= 200:
        out.append(b"Content-Length: %d\r\n" % content_length)
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _one_line(value):
    return value.replace("\r", " ").replace("\n", " ")
