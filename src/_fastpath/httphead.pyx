"""Sans-I/O parsing of an HTTP/1.x request head (request line + header fields), compiled.

The pure-Python twin ``storage.pure.httphead`` is the executable spec; this module
makes the same decisions in the same order, with the same statuses and reasons (the
differential tests hold both to that). It scans the head with memchr and table
lookups and builds the str values directly from the wire bytes: the method and the
(lower-cased) field names as ASCII, the target and the field values as latin-1.

Strict on purpose: hand-written HTTP servers are where request smuggling lives. Each
rejection is an ``HttpError`` carrying the status and a one-line reason. The caller
finds the end of the head (``find_head_end``) and enforces the size limit (431).
"""
import re

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.object cimport PyObject
from cpython.unicode cimport (PyUnicode_1BYTE_DATA, PyUnicode_DecodeLatin1,
                              PyUnicode_GET_LENGTH, PyUnicode_KIND, PyUnicode_New)
from libc.string cimport memchr, memcmp

cdef extern from "string.h" nogil:
    # GNU extension; Python.h defines _GNU_SOURCE on Linux
    void *memmem(const void *haystack, size_t haystacklen,
                 const void *needle, size_t needlelen)

cdef extern from "Python.h":
    # with exc=NULL an overflowing index is clipped, as slice indices are
    Py_ssize_t PyNumber_AsSsize_t(object o, PyObject *exc) except? -1

__all__ = ["TOKEN", "HttpError", "Request", "find_head_end", "parse_head"]

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

cdef enum:
    _CR = 0x0D
    _LF = 0x0A
    _SP = 0x20
    _HT = 0x09
    _MAX_LENGTH_DIGITS = 18
    # character classes, bits in _CLASS
    _C_TCHAR = 1
    _C_TARGET = 2       # allowed in the request target: above SP and not DEL
    _C_PYSPACE = 4      # str.isspace() of the latin-1 character (what str.strip() drops)
    _C_DIGIT = 8
    # field names the parser gives meaning to: their indices in _KNOWN_NAMES
    _H_HOST = 0
    _H_CONTENT_LENGTH = 1
    _H_TRANSFER_ENCODING = 2
    _H_CONNECTION = 3
    _H_EXPECT = 4
    _MAX_KNOWN = 48
    _MAX_KNOWN_LEN = 48     # longer names are never known
    _PER_LEN = 6            # known names of one length, at most

# Names that come back as these shared str objects instead of new ones (saves an
# allocation and a hash per field); the first five are the ones with meaning above.
_KNOWN_NAMES = (
    "host", "content-length", "transfer-encoding", "connection", "expect",
    "user-agent", "accept", "accept-encoding", "content-type", "trailer", "range",
    "te", "date", "x-oio-req-id", "x-trans-id", "x-oio-check-hash",
    "x-oio-chunk-meta-container-id", "x-oio-chunk-meta-content-id",
    "x-oio-chunk-meta-content-path", "x-oio-chunk-meta-content-version",
    "x-oio-chunk-meta-content-storage-policy", "x-oio-chunk-meta-content-chunk-method",
    "x-oio-chunk-meta-full-path", "x-oio-chunk-meta-chunk-id",
    "x-oio-chunk-meta-chunk-pos", "x-oio-chunk-meta-chunk-size",
    "x-oio-chunk-meta-chunk-hash", "x-oio-chunk-meta-metachunk-size",
    "x-oio-chunk-meta-metachunk-hash", "x-oio-chunk-meta-oio-version",
    "x-oio-chunk-meta-compression",
)
_KNOWN_METHODS = ("GET", "PUT", "HEAD", "DELETE", "POST", "OPTIONS")

cdef unsigned char _CLASS[256]
cdef unsigned char _LOWER[256]          # ASCII lower-casing, other bytes unchanged
cdef tuple _known = tuple(_KNOWN_NAMES)
cdef tuple _methods = tuple(_KNOWN_METHODS)
cdef const unsigned char *_known_ptr[_MAX_KNOWN]
# indices into _KNOWN_NAMES by name length, -1 terminated
cdef signed char _by_len[_MAX_KNOWN_LEN][_PER_LEN + 1]


cdef int _init_tables() except -1:
    cdef int c, k, i, n
    cdef bytes tchar = (b"!#$%&'*+-.^_`|~0123456789"
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for c in range(256):
        _CLASS[c] = 0
        _LOWER[c] = c + 32 if 0x41 <= c <= 0x5A else c
        if c > _SP and c != 0x7F:
            _CLASS[c] |= _C_TARGET
        if chr(c).isspace():
            _CLASS[c] |= _C_PYSPACE
        if 0x30 <= c <= 0x39:
            _CLASS[c] |= _C_DIGIT
    for c in tchar:
        _CLASS[c] |= _C_TCHAR
    assert len(_known) <= _MAX_KNOWN
    for n in range(_MAX_KNOWN_LEN):
        _by_len[n][0] = -1
    for i, name in enumerate(_known):
        # the str objects live as long as the module (in _known); ASCII, so 1-byte data
        _known_ptr[i] = PyUnicode_1BYTE_DATA(name)
        n = PyUnicode_GET_LENGTH(name)
        assert name == name.lower() and name.isascii() and n < _MAX_KNOWN_LEN, name
        k = 0
        while _by_len[n][k] >= 0:
            k += 1
        assert k < _PER_LEN, name
        _by_len[n][k] = i
        _by_len[n][k + 1] = -1
    return 0


_init_tables()


class HttpError(Exception):
    """A request that must be refused: ``status`` and a one-line ``reason``."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


cdef class Request:
    """A parsed request head. ``headers`` maps lower-case names to str values (repeated
    fields joined with ', '); ``fields`` keeps every (lower name, value) in order."""

    def header(self, name, default=""):
        return self.headers.get(name, default)


def find_head_end(buf, start=0):
    """Index just past the CRLFCRLF ending the head in ``buf``, or -1.
    ``start`` lets the caller skip what it already searched (minus 3 bytes)."""
    cdef Py_buffer view
    cdef Py_ssize_t begin = 0 if start is None else PyNumber_AsSsize_t(start, NULL)
    cdef Py_ssize_t n
    if type(buf) is bytes:
        n = PyBytes_GET_SIZE(buf)
        return find_head_end_ptr(<const unsigned char *>PyBytes_AS_STRING(buf), n,
                                 _clamp_start(begin, n))
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        return find_head_end_ptr(<const unsigned char *>view.buf, view.len,
                                 _clamp_start(begin, view.len))
    finally:
        PyBuffer_Release(&view)


cdef inline Py_ssize_t _clamp_start(Py_ssize_t start, Py_ssize_t n) noexcept:
    # a slice index, like bytes.find's: negative counts from the end
    if start < 0:
        start += n
        if start < 0:
            start = 0
    return n if start > n else start


cdef Py_ssize_t find_head_end_ptr(const unsigned char *p, Py_ssize_t n,
                                  Py_ssize_t start) noexcept nogil:
    cdef const unsigned char *hit
    if n - start < 4:
        return -1
    hit = <const unsigned char *>memmem(p + start, <size_t>(n - start), b"\r\n\r\n", 4)
    return -1 if hit == NULL else (hit - p) + 4


def parse_head(data):
    """Parse ``data`` (bytes-like: the head including the final CRLFCRLF) into a Request."""
    cdef Py_buffer view
    if type(data) is bytes:
        return parse_head_ptr(<const unsigned char *>PyBytes_AS_STRING(data),
                              PyBytes_GET_SIZE(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return parse_head_ptr(<const unsigned char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef bint _all_in_class(const unsigned char *s, Py_ssize_t n, unsigned char cls) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        if not (_CLASS[s[i]] & cls):
            return False
    return True


cdef bint _crlf_pairs_only(const unsigned char *p, Py_ssize_t n) noexcept:
    """True when every CR and every LF in p[0:n] is part of a CRLF."""
    cdef Py_ssize_t i = 0, lf = 0, cr = 0
    cdef const unsigned char *hit
    while True:
        hit = <const unsigned char *>memchr(p + i, _LF, n - i)
        if hit == NULL:
            break
        i = hit - p
        if i == 0 or p[i - 1] != _CR:
            return False
        lf += 1
        i += 1
    i = 0
    while True:
        hit = <const unsigned char *>memchr(p + i, _CR, n - i)
        if hit == NULL:
            break
        cr += 1
        i = hit - p + 1
    # each LF follows its own CR: equal counts leave no CR unpaired
    return cr == lf


cdef inline Py_ssize_t _line_end(const unsigned char *p, Py_ssize_t pos,
                                 Py_ssize_t end) noexcept:
    cdef const unsigned char *hit = <const unsigned char *>memchr(p + pos, _CR, end - pos)
    return end if hit == NULL else hit - p


cdef int _version(const unsigned char *v, Py_ssize_t n) noexcept:
    """11 or 10; 0 for a malformed version (400), -1 for an unsupported one (505)."""
    if (n != 8 or memcmp(v, b"HTTP/", 5) != 0 or not (_CLASS[v[5]] & _C_DIGIT)
            or v[6] != b'.' or not (_CLASS[v[7]] & _C_DIGIT)):
        return 0
    if v[5] != b'1':
        return -1
    # a higher minor version is served as the highest we know (RFC 9112 2.3)
    return 10 if v[7] == b'0' else 11


cdef Py_ssize_t _known_index(const unsigned char *name, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i, j, k = 0
    cdef const unsigned char *known
    if n >= _MAX_KNOWN_LEN:
        return -1
    while _by_len[n][k] >= 0:
        i = _by_len[n][k]
        k += 1
        known = _known_ptr[i]
        # from the end: the x-oio-chunk-meta-* names share long prefixes
        j = n - 1
        while j >= 0 and _LOWER[name[j]] == known[j]:
            j -= 1
        if j < 0:
            return i
    return -1


cdef str _lower_ascii(const unsigned char *s, Py_ssize_t n):
    cdef str out = PyUnicode_New(n, 127)
    cdef unsigned char *d = <unsigned char *>PyUnicode_1BYTE_DATA(out)
    cdef Py_ssize_t i
    for i in range(n):
        d[i] = _LOWER[s[i]]
    return out


cdef str _method(const unsigned char *s, Py_ssize_t n):
    cdef str known
    for known in _methods:
        if (PyUnicode_GET_LENGTH(known) == n
                and memcmp(PyUnicode_1BYTE_DATA(known), s, n) == 0):
            return known
    return PyUnicode_DecodeLatin1(<const char *>s, n, NULL)


cdef inline str _latin1(const unsigned char *s, Py_ssize_t n):
    return PyUnicode_DecodeLatin1(<const char *>s, n, NULL)


cdef bint _lower_equals(str s, const char *lit, Py_ssize_t n) except -1:
    """s.lower() == lit, for an ASCII lower-case literal."""
    cdef const unsigned char *d
    cdef Py_ssize_t i
    if PyUnicode_KIND(s) != 1:
        return s.lower() == lit.decode("ascii")
    if PyUnicode_GET_LENGTH(s) != n:
        return False
    d = <const unsigned char *>PyUnicode_1BYTE_DATA(s)
    # no latin-1 character but A-Z lower-cases to ASCII, so ASCII folding suffices
    for i in range(n):
        if _LOWER[d[i]] != <unsigned char>lit[i]:
            return False
    return True


cdef bint _has_token(str s, const char *token, Py_ssize_t n) except -1:
    """token in {t.strip() for t in s.lower().split(",")}, for an ASCII lower-case token."""
    cdef const unsigned char *d
    cdef Py_ssize_t size, i = 0, a, b, j
    cdef const unsigned char *hit
    if PyUnicode_KIND(s) != 1:
        return token.decode("ascii") in {t.strip() for t in s.lower().split(",")}
    size = PyUnicode_GET_LENGTH(s)
    d = <const unsigned char *>PyUnicode_1BYTE_DATA(s)
    while i <= size:
        hit = <const unsigned char *>memchr(d + i, b',', size - i)
        b = size if hit == NULL else hit - d
        a = i
        i = b + 1
        while a < b and (_CLASS[d[a]] & _C_PYSPACE):
            a += 1
        while b > a and (_CLASS[d[b - 1]] & _C_PYSPACE):
            b -= 1
        if b - a == n:
            for j in range(n):
                if _LOWER[d[a + j]] != <unsigned char>token[j]:
                    break
            else:
                return True
    return False


cdef struct _Length:
    bint seen
    bint invalid        # some item is not 1 to 18 digits: wins over a conflict
    bint conflict       # two items differ
    unsigned long long value


cdef void _length_items(const unsigned char *s, Py_ssize_t n, _Length *length) noexcept:
    """Fold one Content-Length field value (already trimmed) into ``length``."""
    cdef Py_ssize_t i = 0, a, b, j
    cdef unsigned long long v
    cdef const unsigned char *hit
    while not length.invalid:
        hit = <const unsigned char *>memchr(s + i, b',', n - i)
        b = n if hit == NULL else hit - s
        a = i
        while a < b and (s[a] == _SP or s[a] == _HT):
            a += 1
        while b > a and (s[b - 1] == _SP or s[b - 1] == _HT):
            b -= 1
        if b == a or b - a > _MAX_LENGTH_DIGITS or not _all_in_class(s + a, b - a, _C_DIGIT):
            length.invalid = True
            return
        v = 0
        for j in range(a, b):
            v = v * 10 + (s[j] - 0x30)
        if not length.seen:
            length.seen = True
            length.value = v
        elif v != length.value:
            length.conflict = True
        if hit == NULL:
            return
        i = hit - s + 1


cdef Request parse_head_ptr(const unsigned char *p, Py_ssize_t n):
    cdef Py_ssize_t end, eol, sp1, sp2, pos, colon, vs, ve, idx
    cdef Py_ssize_t host_count = 0, te_count = 0, cl_count = 0
    cdef Py_ssize_t connection_count = 0, expect_count = 0
    cdef const unsigned char *hit
    cdef int ver
    cdef bint keep
    cdef _Length length
    cdef PyObject *old
    cdef dict headers
    cdef list fields
    cdef str name, value, target
    cdef Request req

    if n > 0 and memchr(p, 0, n) != NULL:
        raise HttpError(400, "NUL byte in request head")
    if n < 4 or memcmp(p + n - 4, b"\r\n\r\n", 4) != 0:
        raise HttpError(400, "malformed request head")
    if not _crlf_pairs_only(p, n):
        raise HttpError(400, "bare CR or LF in request head")
    end = n - 4  # the lines are p[0:end] split at each CRLF

    eol = _line_end(p, 0, end)
    hit = <const unsigned char *>memchr(p, _SP, eol)
    if hit == NULL:
        raise HttpError(400, "malformed request line")
    sp1 = hit - p
    hit = <const unsigned char *>memchr(p + sp1 + 1, _SP, eol - sp1 - 1)
    if hit == NULL:
        raise HttpError(400, "malformed request line")
    sp2 = hit - p
    if memchr(p + sp2 + 1, _SP, eol - sp2 - 1) != NULL:
        raise HttpError(400, "malformed request line")
    if sp1 == 0 or not _all_in_class(p, sp1, _C_TCHAR):
        raise HttpError(400, "invalid method")
    ver = _version(p + sp2 + 1, eol - sp2 - 1)
    if ver == 0:
        raise HttpError(400, "malformed HTTP version")
    if ver < 0:
        raise HttpError(505, "HTTP version not supported")
    if (sp2 == sp1 + 1 or p[sp1 + 1] != b'/'
            or not _all_in_class(p + sp1 + 1, sp2 - sp1 - 1, _C_TARGET)):
        raise HttpError(400, "invalid request target")

    headers = {}
    fields = []
    length.seen = length.invalid = length.conflict = False
    length.value = 0
    while eol < end:
        pos = eol + 2
        eol = _line_end(p, pos, end)
        if eol > pos and (p[pos] == _SP or p[pos] == _HT):
            raise HttpError(400, "obsolete line folding in headers")
        hit = <const unsigned char *>memchr(p + pos, b':', eol - pos)
        if hit == NULL:
            raise HttpError(400, "invalid header field")
        colon = hit - p
        if colon == pos or not _all_in_class(p + pos, colon - pos, _C_TCHAR):
            raise HttpError(400, "invalid header field")
        idx = _known_index(p + pos, colon - pos)
        name = <str>_known[idx] if idx >= 0 else _lower_ascii(p + pos, colon - pos)
        vs = colon + 1
        ve = eol
        while vs < ve and (p[vs] == _SP or p[vs] == _HT):
            vs += 1
        while ve > vs and (p[ve - 1] == _SP or p[ve - 1] == _HT):
            ve -= 1
        value = _latin1(p + vs, ve - vs)
        fields.append((name, value))
        old = PyDict_GetItemWithError(headers, name)
        if old == NULL:
            headers[name] = value
        else:
            headers[name] = <str>old + ", " + value
        if idx == _H_HOST:
            host_count += 1
        elif idx == _H_CONTENT_LENGTH:
            cl_count += 1
            _length_items(p + vs, ve - vs, &length)
        elif idx == _H_TRANSFER_ENCODING:
            te_count += 1
        elif idx == _H_CONNECTION:
            connection_count += 1
        elif idx == _H_EXPECT:
            expect_count += 1

    req = Request.__new__(Request)
    req.method = _method(p, sp1)
    target = _latin1(p + sp1 + 1, sp2 - sp1 - 1)
    req.target = target
    hit = <const unsigned char *>memchr(p + sp1 + 1, b'?', sp2 - sp1 - 1)
    if hit == NULL:
        req.path = target
        req.query = ""
    else:
        req.path = _latin1(p + sp1 + 1, hit - (p + sp1 + 1))
        req.query = _latin1(hit + 1, (p + sp2) - (hit + 1))
    req.version = ver
    req.headers = headers
    req.fields = fields

    if ver == 11 and host_count == 0:
        raise HttpError(400, "missing Host header")
    if host_count > 1:
        raise HttpError(400, "repeated Host header")

    if te_count:
        if cl_count:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if ver == 10:
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if not _lower_equals(headers["transfer-encoding"], b"chunked", 7):
            raise HttpError(501, "unsupported Transfer-Encoding")
        req.chunked = True
        req.content_length = None
    else:
        req.chunked = False
        if not cl_count:
            req.content_length = None
        elif length.invalid:
            raise HttpError(400, "invalid Content-Length")
        elif length.conflict:
            raise HttpError(400, "conflicting Content-Length values")
        else:
            req.content_length = length.value

    if ver == 11:
        keep = not connection_count or not _has_token(headers["connection"], b"close", 5)
    else:
        keep = connection_count > 0 and _has_token(headers["connection"], b"keep-alive", 10)
    req.keep_alive = keep
    if expect_count and ver == 11:
        if not _lower_equals(headers["expect"], b"100-continue", 12):
            raise HttpError(417, "unsupported Expect value")
        req.expect_continue = True
    else:
        req.expect_continue = False
    return req
