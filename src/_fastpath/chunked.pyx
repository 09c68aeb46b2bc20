"""HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1), compiled.

A sans-I/O streaming decoder and an encoder. The pure-Python twin
``storage.pure.chunked`` is the executable spec; this module makes the same
decisions byte for byte (the differential tests hold both to that).

Body pieces are memoryview slices of the object passed to ``feed()``; body bytes
are never copied. Only partial size lines and trailer lines are buffered, and
those are bounded: a size line's content (extensions included, CRLF excluded) by
``max_line``, the whole trailer section (each line with its CRLF, plus the final
empty line) by ``max_trailer_size``, both enforced as soon as a buffered prefix
proves them exceeded.

Strictness is deliberate (request-smuggling defences): the chunk size is 1 to 16
hex digits and nothing else, every line ends with CRLF, chunk data is followed
by exactly CRLF, trailer fields are ``token: value`` without obs-fold.
"""
import operator

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_GET_SIZE,
                                PyByteArray_Resize)
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from libc.string cimport memchr, memcpy, strcmp
from cpython.pyport cimport PY_SSIZE_T_MAX

_MAX_CHUNK_SIZE = 2 ** 64 - 1

__all__ = ["ChunkedError", "ChunkedDecoder", "encode_chunk", "encode_last", "chunk_header"]

cdef enum:
    _CR = 0x0D
    _LF = 0x0A
    _SP = 0x20
    _HT = 0x09
    _MAX_SIZE_DIGITS = 16
    # character classes, bits in _CLASS
    _C_TCHAR = 1
    _C_QDTEXT = 2
    _C_QPAIR = 4
    _C_FIELD = 8
    # results of _check_extensions
    _EXT_OK = 0
    _EXT_BAD_SIZE = 1
    _EXT_BAD = 2

cdef unsigned char _CLASS[256]
cdef signed char _HEXVAL[256]
cdef const char *_HEXDIGITS = b"0123456789abcdef"


cdef int _init_tables() except -1:
    cdef int c
    cdef bytes tchar = (b"!#$%&'*+-.^_`|~0123456789"
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for c in range(256):
        _CLASS[c] = 0
        _HEXVAL[c] = -1
    for c in tchar:
        _CLASS[c] |= _C_TCHAR
    for c in range(256):
        # qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
        if c == _HT or c == _SP or c == 0x21 or 0x23 <= c <= 0x5B or 0x5D <= c <= 0x7E or c >= 0x80:
            _CLASS[c] |= _C_QDTEXT
        # after a backslash in a quoted-pair; also what a field value may hold
        if c == _HT or 0x20 <= c <= 0x7E or c >= 0x80:
            _CLASS[c] |= _C_QPAIR | _C_FIELD
    for c in range(10):
        _HEXVAL[0x30 + c] = c
    for c in range(6):
        _HEXVAL[0x61 + c] = 10 + c
        _HEXVAL[0x41 + c] = 10 + c
    return 0

_init_tables()


class ChunkedError(ValueError):
    """Malformed chunked framing; ``str(e)`` is a one-line reason."""


cdef inline Py_ssize_t _skip_ows(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and (s[i] == _SP or s[i] == _HT):
        i += 1
    return i


cdef inline Py_ssize_t _skip_token(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and (_CLASS[s[i]] & _C_TCHAR):
        i += 1
    return i


cdef int _check_extensions(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Check s[i:n], the size line after its hex digits.

    Grammar: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ),
    nothing else (no trailing whitespace).
    """
    cdef Py_ssize_t j, k
    j = _skip_ows(s, i, n)
    if j >= n or s[j] != b';':
        return _EXT_BAD_SIZE
    while True:
        # s[j] is ';'
        j = _skip_ows(s, j + 1, n)
        k = _skip_token(s, j, n)
        if k == j:
            return _EXT_BAD
        j = _skip_ows(s, k, n)
        if j < n and s[j] == b'=':
            j = _skip_ows(s, j + 1, n)
            if j < n and s[j] == b'"':
                j += 1
                while True:
                    if j >= n:
                        return _EXT_BAD
                    if s[j] == b'"':
                        j += 1
                        break
                    if s[j] == b'\\':
                        j += 1
                        if j >= n or not (_CLASS[s[j]] & _C_QPAIR):
                            return _EXT_BAD
                        j += 1
                    elif _CLASS[s[j]] & _C_QDTEXT:
                        j += 1
                    else:
                        return _EXT_BAD
            else:
                k = _skip_token(s, j, n)
                if k == j:
                    return _EXT_BAD
                j = k
            k = j
            j = _skip_ows(s, k, n)
        if j == n:
            return _EXT_OK if j == k else _EXT_BAD   # no trailing whitespace
        if s[j] != b';':
            return _EXT_BAD


cdef int _bytearray_append(bytearray b, const unsigned char *p, Py_ssize_t k) except -1:
    cdef Py_ssize_t old = PyByteArray_GET_SIZE(b)
    PyByteArray_Resize(b, old + k)
    memcpy(PyByteArray_AS_STRING(b) + old, p, k)
    return 0


cdef object _byte_view(object data):
    """A 1-D unsigned-byte memoryview over any contiguous bytes-like data."""
    cdef object mv = PyMemoryView_FromObject(data)
    cdef Py_buffer *b = PyMemoryView_GET_BUFFER(mv)
    if b.ndim != 1 or b.itemsize != 1 or b.format == NULL or strcmp(b.format, "B") != 0:
        mv = mv.cast("B")
    return mv


cdef class ChunkedDecoder:
    """Streaming decoder for a chunked body.

    feed(data) -> (pieces, consumed): pieces are memoryview slices of data (never
    empty, never spanning two calls); consumed < len(data) only when the body
    ended inside data. Raises ChunkedError on malformed input, and again on every
    later call. ``done`` turns True once the trailer section is complete;
    ``trailers`` is [(name_lower, value)]; ``body_size`` counts body bytes.
    """

    def __init__(self, Py_ssize_t max_line=4096, Py_ssize_t max_trailer_size=65536):
        if max_line < 1:
            raise ValueError("max_line must be >= 1")
        if max_trailer_size < 2:
            raise ValueError("max_trailer_size must be >= 2")
        # keep max_line + 2 from overflowing; no line that long fits in memory anyway
        self._max_line = min(max_line, PY_SSIZE_T_MAX - 2)
        self._max_trailer_size = max_trailer_size
        self._state = CHUNKED_SIZE
        self._remaining = 0
        self._line = bytearray()
        self._trailer_bytes = 0
        self._error = None
        self.done = False
        self.trailers = []
        self.body_size = 0

    cdef int _fail(self, str reason) except -1:
        self._error = reason
        raise ChunkedError(reason)

    def feed(self, data):
        """Decode data (any bytes-like); return (pieces, consumed)."""
        cdef Py_buffer view
        if self._error is not None:
            raise ChunkedError(self._error)
        if type(data) is bytes:
            if self.done:
                return [], 0
            return self._feed(data, <const unsigned char *>PyBytes_AS_STRING(data),
                              PyBytes_GET_SIZE(data))
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self.done:
                return [], 0
            return self._feed(data, <const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef object _feed(self, object data, const unsigned char *buf, Py_ssize_t n):
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t take
        cdef list pieces = []
        cdef object mv = None
        while pos < n:
            if self._state == CHUNKED_DATA:
                take = n - pos
                if <unsigned long long>take > self._remaining:
                    take = <Py_ssize_t>self._remaining
                if mv is None:
                    mv = _byte_view(data)
                pieces.append(mv[pos:pos + take])
                pos += take
                self._remaining -= <unsigned long long>take
                self.body_size += <unsigned long long>take
                if self._remaining == 0:
                    self._state = CHUNKED_DATA_CR
            elif self._state == CHUNKED_DATA_CR:
                if buf[pos] != _CR:
                    self._fail("missing CRLF after chunk data")
                pos += 1
                self._state = CHUNKED_DATA_LF
            elif self._state == CHUNKED_DATA_LF:
                if buf[pos] != _LF:
                    self._fail("missing CRLF after chunk data")
                pos += 1
                self._state = CHUNKED_SIZE
            elif self._state == CHUNKED_DONE:
                break
            else:
                pos = self._feed_line(buf, pos, n)
        return pieces, pos

    cdef Py_ssize_t _feed_line(self, const unsigned char *buf, Py_ssize_t pos,
                               Py_ssize_t n) except -1:
        """Consume up to one size or trailer line from buf[pos:n]; return new pos."""
        cdef Py_ssize_t have = PyByteArray_GET_SIZE(self._line)
        cdef Py_ssize_t avail = n - pos
        cdef Py_ssize_t window, k
        cdef const unsigned char *lf = NULL
        if self._state == CHUNKED_SIZE:
            window = self._max_line + 2 - have
        else:
            window = self._max_trailer_size - self._trailer_bytes - have
        if window > 0:
            lf = <const unsigned char *>memchr(buf + pos, _LF, avail if avail < window else window)
        if lf == NULL:
            if avail >= window:
                if self._state == CHUNKED_SIZE:
                    self._fail("chunk size line too long")
                self._fail("trailer section too long")
            _bytearray_append(self._line, buf + pos, avail)
            return n
        k = lf - (buf + pos) + 1
        if have == 0:
            self._line_complete(buf + pos, k)
        else:
            _bytearray_append(self._line, buf + pos, k)
            self._line_complete(<const unsigned char *>PyByteArray_AS_STRING(self._line), have + k)
            PyByteArray_Resize(self._line, 0)
        return pos + k

    cdef int _line_complete(self, const unsigned char *line, Py_ssize_t n) except -1:
        """Act on one complete line of n bytes (ending with LF)."""
        cdef Py_ssize_t i, colon, start, end
        cdef unsigned long long size = 0
        cdef int r
        cdef bytes name
        cdef char *np
        if n < 2 or line[n - 2] != _CR:
            return self._fail("line ends with bare LF")
        n -= 2
        if memchr(line, _CR, n) != NULL:
            return self._fail("bare CR in line")
        if self._state == CHUNKED_SIZE:
            i = 0
            while i < n and _HEXVAL[line[i]] >= 0:
                if i < _MAX_SIZE_DIGITS:
                    size = (size << 4) | <unsigned long long>_HEXVAL[line[i]]
                i += 1
            if i == 0:
                return self._fail("bad chunk size line")
            if i > _MAX_SIZE_DIGITS:
                return self._fail("chunk size too large")
            if i < n:
                r = _check_extensions(line, i, n)
                if r == _EXT_BAD_SIZE:
                    return self._fail("bad chunk size line")
                if r == _EXT_BAD:
                    return self._fail("bad chunk extension")
            if size:
                self._remaining = size
                self._state = CHUNKED_DATA
            else:
                self._state = CHUNKED_TRAILER
            return 0
        # a trailer line
        self._trailer_bytes += n + 2
        if n == 0:
            self._state = CHUNKED_DONE
            self.done = True
            return 0
        if line[0] == _SP or line[0] == _HT:
            return self._fail("obs-fold in trailer section")
        colon = 0
        while colon < n and line[colon] != b':':
            colon += 1
        if colon == n:
            return self._fail("trailer field without colon")
        if colon == 0 or _skip_token(line, 0, colon) != colon:
            return self._fail("bad trailer field name")
        start = _skip_ows(line, colon + 1, n)
        end = n
        while end > start and (line[end - 1] == _SP or line[end - 1] == _HT):
            end -= 1
        for i in range(start, end):
            if not (_CLASS[line[i]] & _C_FIELD):
                return self._fail("bad trailer field value")
        name = PyBytes_FromStringAndSize(NULL, colon)
        np = PyBytes_AS_STRING(name)
        for i in range(colon):
            np[i] = line[i] + 32 if 0x41 <= line[i] <= 0x5A else line[i]
        self.trailers.append((name, PyBytes_FromStringAndSize(<const char *>line + start, end - start)))
        return 0

    def finish(self):
        """Call at EOF: raise ChunkedError unless the body was complete."""
        if self._error is not None:
            raise ChunkedError(self._error)
        if not self.done:
            raise ChunkedError("truncated chunked body")


cdef Py_ssize_t _put_hex(char *out, unsigned long long v) noexcept nogil:
    """Write v in lowercase hex (no leading zeros) to out; return the length."""
    cdef char tmp[16]
    cdef Py_ssize_t k = 0, i
    while True:
        tmp[k] = _HEXDIGITS[v & 15]
        k += 1
        v >>= 4
        if v == 0:
            break
    for i in range(k):
        out[i] = tmp[k - 1 - i]
    return k


def encode_chunk(data):
    """One chunk carrying data (any bytes-like); b"" for empty data, since an
    empty chunk would be the last-chunk."""
    cdef Py_buffer view
    cdef char head[18]
    cdef Py_ssize_t hl
    cdef bytes out
    cdef char *p
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len == 0:
            return b""
        hl = _put_hex(head, <unsigned long long>view.len)
        head[hl] = b'\r'
        head[hl + 1] = b'\n'
        hl += 2
        out = PyBytes_FromStringAndSize(NULL, hl + view.len + 2)
        p = PyBytes_AS_STRING(out)
        memcpy(p, head, hl)
        memcpy(p + hl, view.buf, view.len)
        p[hl + view.len] = b'\r'
        p[hl + view.len + 1] = b'\n'
        return out
    finally:
        PyBuffer_Release(&view)


cdef bytes _as_field_bytes(object x, str what):
    if isinstance(x, str):
        try:
            return x.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"trailer {what} is not latin-1: {x!r}") from None
    return bytes(x)


def encode_last(trailers=()):
    """The last-chunk, the trailer fields (name, value) (bytes or str), and the
    final CRLF. Raise ValueError for a name that is not a token or a value with
    CR, LF or another control byte."""
    cdef list out = [b"0\r\n"]
    cdef bytes name, value
    cdef const unsigned char *s
    cdef Py_ssize_t i, n
    for rawname, rawvalue in trailers:
        name = _as_field_bytes(rawname, "name")
        value = _as_field_bytes(rawvalue, "value")
        s = <const unsigned char *>PyBytes_AS_STRING(name)
        n = PyBytes_GET_SIZE(name)
        if n == 0 or _skip_token(s, 0, n) != n:
            raise ValueError(f"trailer name is not a token: {name!r}")
        s = <const unsigned char *>PyBytes_AS_STRING(value)
        n = PyBytes_GET_SIZE(value)
        for i in range(n):
            if not (_CLASS[s[i]] & _C_FIELD):
                raise ValueError(f"trailer value has a control byte: {value!r}")
        out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def chunk_header(n):
    """The size line for a chunk of n bytes (1 <= n < 2**64), to send the data
    itself separately; the caller then sends b"\\r\\n"."""
    cdef char head[18]
    cdef Py_ssize_t hl
    n = operator.index(n)
    if n < 1 or n > _MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size out of range: {n}")
    hl = _put_hex(head, <unsigned long long>n)
    head[hl] = b'\r'
    head[hl + 1] = b'\n'
    return PyBytes_FromStringAndSize(head, hl + 2)
