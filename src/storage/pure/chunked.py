"""HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1), pure-Python twin.

This is the executable spec of ``_fastpath.chunked``: same names, signatures,
exceptions, and the same decisions byte for byte (the differential tests hold
both to that). The decoder is sans-I/O: it is fed bytes and hands back body
pieces as memoryview slices of what it was fed, never copies of them.

Strictness is deliberate (request-smuggling defences): the chunk size is 1 to 16
hex digits and nothing else, every line ends with CRLF, chunk data is followed by
exactly CRLF, trailer fields are ``token: value`` without obs-fold, and the size
line and the trailer section are bounded.

Line limits, in bytes: a size line's content (extensions included, CRLF
excluded) is at most ``max_line``; the trailer section (every trailer line with
its CRLF, plus the final empty line) is at most ``max_trailer_size``. Both are
enforced as soon as the buffered prefix of a line proves them exceeded.
"""

import operator

__all__ = ["ChunkedError", "ChunkedDecoder", "encode_chunk", "encode_last", "chunk_header"]

_CR = 0x0D
_LF = 0x0A
_SP = 0x20
_HT = 0x09
_MAX_SIZE_DIGITS = 16

_HEX = frozenset(b"0123456789abcdefABCDEF")
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
_QDTEXT = frozenset([_HT, _SP, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F), *range(0x80, 0x100)])
# what may follow a backslash in a quoted-pair: HTAB / SP / VCHAR / obs-text
_QPAIR = frozenset([_HT, *range(0x20, 0x7F), *range(0x80, 0x100)])
# field-value bytes: anything but CTLs (HTAB allowed) and DEL
_FIELD_BYTE = frozenset([_HT, *range(0x20, 0x7F), *range(0x80, 0x100)])

# decoder states
_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE = range(6)


class ChunkedError(ValueError):
    """Malformed chunked framing; ``str(e)`` is a one-line reason."""


def _byte_view(data):
    """A 1-D unsigned-byte memoryview over any contiguous bytes-like ``data``."""
    mv = memoryview(data)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    return mv


def _skip_ows(s, i, n):
    while i < n and (s[i] == _SP or s[i] == _HT):
        i += 1
    return i


def _check_extensions(s, i, n):
    """Validate ``s[i:n]``, the size line after the hex digits; raise if bad.

    Grammar: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ),
    nothing else (no trailing whitespace).
    """
    j = _skip_ows(s, i, n)
    if j >= n or s[j] != 0x3B:  # ';'
        raise ChunkedError("bad chunk size line")
    while True:
        # s[j] is ';'
        j = _skip_ows(s, j + 1, n)
        k = j
        while k < n and s[k] in _TCHAR:
            k += 1
        if k == j:
            raise ChunkedError("bad chunk extension")
        j = _skip_ows(s, k, n)
        if j < n and s[j] == 0x3D:  # '='
            j = _skip_ows(s, j + 1, n)
            if j < n and s[j] == 0x22:  # '"'
                j += 1
                while True:
                    if j >= n:
                        raise ChunkedError("bad chunk extension")
                    c = s[j]
                    if c == 0x22:
                        j += 1
                        break
                    if c == 0x5C:  # backslash
                        j += 1
                        if j >= n or s[j] not in _QPAIR:
                            raise ChunkedError("bad chunk extension")
                        j += 1
                    elif c in _QDTEXT:
                        j += 1
                    else:
                        raise ChunkedError("bad chunk extension")
            else:
                k = j
                while k < n and s[k] in _TCHAR:
                    k += 1
                if k == j:
                    raise ChunkedError("bad chunk extension")
                j = k
            k = j
            j = _skip_ows(s, k, n)
        if j == n:
            if j != k:
                raise ChunkedError("bad chunk extension")  # trailing whitespace
            return
        if s[j] != 0x3B:
            raise ChunkedError("bad chunk extension")


def _check_line_end(line):
    """``line`` ends with LF; check CRLF and that no other CR is in it."""
    n = len(line)
    if n < 2 or line[n - 2] != _CR:
        raise ChunkedError("line ends with bare LF")
    if line.find(b"\r", 0, n - 2) >= 0:
        raise ChunkedError("bare CR in line")


def _parse_size_line(line):
    """Return the chunk size of a complete size line (ending with CRLF)."""
    _check_line_end(line)
    n = len(line) - 2
    i = 0
    while i < n and line[i] in _HEX:
        i += 1
    if i == 0:
        raise ChunkedError("bad chunk size line")
    if i > _MAX_SIZE_DIGITS:
        raise ChunkedError("chunk size too large")
    if i < n:
        _check_extensions(line, i, n)
    return int(line[:i], 16)


def _parse_trailer_line(line):
    """Return (name_lower, value) of a complete trailer line, or None for the
    empty line that ends the trailer section."""
    _check_line_end(line)
    n = len(line) - 2
    if n == 0:
        return None
    if line[0] == _SP or line[0] == _HT:
        raise ChunkedError("obs-fold in trailer section")
    colon = line.find(b":", 0, n)
    if colon < 0:
        raise ChunkedError("trailer field without colon")
    if colon == 0 or any(c not in _TCHAR for c in line[:colon]):
        raise ChunkedError("bad trailer field name")
    start = _skip_ows(line, colon + 1, n)
    end = n
    while end > start and (line[end - 1] == _SP or line[end - 1] == _HT):
        end -= 1
    value = bytes(line[start:end])
    if any(c not in _FIELD_BYTE for c in value):
        raise ChunkedError("bad trailer field value")
    return bytes(line[:colon]).lower(), value


class ChunkedDecoder:
    """Streaming decoder for a chunked body.

    ``done`` turns True once the last-chunk and the trailer section are
    complete; ``trailers`` is [(name_lower, value)] in arrival order, values
    stripped of OWS; ``body_size`` counts the body bytes decoded so far.
    """

    def __init__(self, max_line=4096, max_trailer_size=65536):
        max_line = operator.index(max_line)
        max_trailer_size = operator.index(max_trailer_size)
        if max_line < 1:
            raise ValueError("max_line must be >= 1")
        if max_trailer_size < 2:
            raise ValueError("max_trailer_size must be >= 2")
        self._max_line = max_line
        self._max_trailer_size = max_trailer_size
        self._state = _SIZE
        self._remaining = 0  # data bytes left in the current chunk
        self._line = bytearray()  # partial size or trailer line
        self._trailer_bytes = 0  # complete trailer lines so far, CRLFs included
        self._error = None
        self.done = False
        self.trailers = []
        self.body_size = 0

    def feed(self, data):
        """Decode ``data`` (any contiguous bytes-like); return (pieces, consumed).

        pieces: the body bytes found in this call, as non-empty memoryview
        slices of ``data`` (no copy; they keep ``data``'s buffer exported while
        alive). consumed: bytes of ``data`` used; less than len(data) only when
        the body ended inside it, the rest being the next pipelined request.
        After ``done``, returns ([], 0). Raises ChunkedError on malformed
        input, and again on every later call.
        """
        if self._error is not None:
            raise ChunkedError(self._error)
        mv = _byte_view(data)
        if self.done:
            return [], 0
        try:
            return self._feed(mv)
        except ChunkedError as exc:
            self._error = str(exc)
            raise

    def _feed(self, mv):
        n = len(mv)
        pos = 0
        pieces = []
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - pos)
                pieces.append(mv[pos:pos + take])
                pos += take
                self._remaining -= take
                self.body_size += take
                if self._remaining == 0:
                    self._state = _DATA_CR
            elif state == _DATA_CR:
                if mv[pos] != _CR:
                    raise ChunkedError("missing CRLF after chunk data")
                pos += 1
                self._state = _DATA_LF
            elif state == _DATA_LF:
                if mv[pos] != _LF:
                    raise ChunkedError("missing CRLF after chunk data")
                pos += 1
                self._state = _SIZE
            elif state == _DONE:
                break
            else:
                pos = self._feed_line(mv, pos, n)
        return pieces, pos

    def _feed_line(self, mv, pos, n):
        """Consume up to one size or trailer line from mv[pos:n]; return new pos."""
        if self._state == _SIZE:
            window = self._max_line + 2 - len(self._line)
        else:
            window = self._max_trailer_size - self._trailer_bytes - len(self._line)
        avail = n - pos
        lf = -1
        if window > 0:
            lf = bytes(mv[pos:pos + min(avail, window)]).find(b"\n")
        if lf < 0:
            if avail >= window:
                if self._state == _SIZE:
                    raise ChunkedError("chunk size line too long")
                raise ChunkedError("trailer section too long")
            self._line += mv[pos:n]
            return n
        k = lf + 1
        if self._line:
            self._line += mv[pos:pos + k]
            line = bytes(self._line)
            self._line.clear()
        else:
            line = bytes(mv[pos:pos + k])
        if self._state == _SIZE:
            size = _parse_size_line(line)
            if size:
                self._remaining = size
                self._state = _DATA
            else:
                self._state = _TRAILER
        else:
            self._trailer_bytes += len(line)
            field = _parse_trailer_line(line)
            if field is None:
                self._state = _DONE
                self.done = True
            else:
                self.trailers.append(field)
        return pos + k

    def finish(self):
        """Call at EOF: raise ChunkedError unless the body was complete."""
        if self._error is not None:
            raise ChunkedError(self._error)
        if not self.done:
            raise ChunkedError("truncated chunked body")


def _as_field_bytes(x, what):
    if isinstance(x, str):
        try:
            return x.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"trailer {what} is not latin-1: {x!r}") from None
    return bytes(x)


def encode_chunk(data):
    """One chunk carrying ``data`` (any bytes-like); b"" for empty data, since an
    empty chunk would be the last-chunk."""
    mv = _byte_view(data)
    n = len(mv)
    if n == 0:
        return b""
    return b"%x\r\n" % n + mv.tobytes() + b"\r\n"


def encode_last(trailers=()):
    """The last-chunk, the trailer fields ``(name, value)`` (bytes or str), and
    the final CRLF. Raise ValueError for a name that is not a token or a value
    with CR, LF or another control byte."""
    out = [b"0\r\n"]
    for name, value in trailers:
        name = _as_field_bytes(name, "name")
        value = _as_field_bytes(value, "value")
        if not name or any(c not in _TCHAR for c in name):
            raise ValueError(f"trailer name is not a token: {name!r}")
        if any(c not in _FIELD_BYTE for c in value):
            raise ValueError(f"trailer value has a control byte: {value!r}")
        out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def chunk_header(n):
    """The size line for a chunk of ``n`` bytes (1 <= n < 2**64), to send the
    data itself separately; the caller then sends b"\\r\\n"."""
    n = operator.index(n)
    if n < 1 or n >= 1 << 64:
        raise ValueError(f"chunk size out of range: {n}")
    return b"%x\r\n" % n
