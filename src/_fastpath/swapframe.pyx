"""SWAP frame codec (spec/swap.md), compiled.

The pure-Python twin ``storage.pure.swapframe`` is the executable spec (its
docstring describes the frame, the segment codes and the decoded values); this
module makes the same decisions, with the same exceptions and messages.

What is faster here: the writer packs every value straight into one growing
buffer whose 8-byte header is back-patched when the frame ends (asyncpg's
WriteBuffer); that buffer is a bytes object only the writer holds, grown and
finally trimmed in place, so take() hands it over without copying big frames
(then starts a new one); the reader walks a whole frame with raw pointers, builds record
tuples directly, reuses the UUID object while the same UUID repeats (a
PATH_DETAILS frame carries its group in every record), and hands BYTE_ARRAY
payloads out as read-only memoryviews of a buffer it never writes again (the
bytes object that was fed, when a frame arrived in one piece: no copy at all).
"""
import operator
import uuid as _uuidmod

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_CheckBuffer, PyObject_GetBuffer
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_FromStringAndSize,
                                PyByteArray_GET_SIZE, PyByteArray_Resize)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove

cdef extern from "Python.h":
    int PyObject_GenericSetAttr(object o, object name, object value) except -1
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    long long PyLong_AsLongLongAndOverflow(object v, int *overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLongMask(object v) except? <unsigned long long>-1
    # resizes a bytes object nobody else holds (refcount 1) in place; on failure
    # frees it, sets *b to NULL and raises
    int _PyBytes_Resize(PyObject **b, Py_ssize_t newsize) except -1

__all__ = ["ProtocolError", "EncodeError", "FrameReader", "FrameWriter", "encode",
           "DEFAULT_MAX_FRAME", "MAX_COUNT", "SEGMENT_CODES"]

DEFAULT_MAX_FRAME = (1 << 20) + (64 << 10)
MAX_COUNT = 32767
SEGMENT_CODES = "UuSsILlBF"

cdef enum:
    _MAX_COUNT = 32767
    _INT31 = 2147483647
    # take() copies up to this many bytes out and keeps its buffer; above it,
    # handing the buffer over beats copying
    _COPY_OUT = 65536

_NAMES = {"U": "UUID", "u": "UUID_ARRAY", "S": "STRING", "s": "STRING_ARRAY", "I": "INT",
          "L": "LONG", "l": "LONG_ARRAY", "B": "BYTE_ARRAY", "F": "FINISH_TYPE"}
_ARRAY_WHAT = {"u": "UUID array", "s": "string array", "l": "long array"}
cdef object _UUID = _uuidmod.UUID
cdef object _SAFE_UNKNOWN = _uuidmod.SafeUUID.unknown
cdef object _NO_UUID = object()


class ProtocolError(ValueError):
    """A malformed frame: the connection must be closed. ``str(e)`` says why."""


class EncodeError(ValueError):
    """A value the SWAP format cannot hold (too long, out of range, unknown type)."""


cdef inline int16_t _be16(const unsigned char *p) noexcept nogil:
    return <int16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline int32_t _be32(const unsigned char *p) noexcept nogil:
    return <int32_t>((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) |
                     (<uint32_t>p[2] << 8) | p[3])


cdef inline uint64_t _be64(const unsigned char *p) noexcept nogil:
    return ((<uint64_t>_be32(p) & 0xFFFFFFFFu) << 32) | (<uint64_t>_be32(p + 4) & 0xFFFFFFFFu)


cdef inline void _put16(char *p, int v) noexcept nogil:
    p[0] = <char>((v >> 8) & 0xFF)
    p[1] = <char>(v & 0xFF)


cdef inline void _put32(char *p, int64_t v) noexcept nogil:
    cdef uint32_t u = <uint32_t>v
    p[0] = <char>(u >> 24)
    p[1] = <char>(u >> 16)
    p[2] = <char>(u >> 8)
    p[3] = <char>u


cdef inline void _put64(char *p, uint64_t u) noexcept nogil:
    _put32(p, <int64_t>(u >> 32))
    _put32(p + 4, <int64_t>(u & 0xFFFFFFFFu))


cdef dict _compile_segments(object segments):
    """{type: segment codes} -> {type: bytes}, checked."""
    cdef dict table = {}
    for t, codes in segments.items():
        t = operator.index(t)
        if not -32768 <= t <= 32767:
            raise ValueError(f"message type {t} does not fit in int16")
        if isinstance(codes, (bytes, bytearray)):
            codes = codes.decode("ascii", "replace")
        codes = str(codes)
        for c in codes:
            if c not in _NAMES:
                raise ValueError(f"unknown segment code {c!r} for type {t}")
        table[t] = codes.encode("ascii")
    return table


cdef Py_ssize_t _check_max_frame(object max_frame) except -1:
    max_frame = operator.index(max_frame)
    if not 4 <= max_frame <= _INT31:
        raise ValueError(f"max_frame must be in 4..{_INT31}, not {max_frame}")
    return max_frame


cdef inline const unsigned char *_ptr(object data):
    if type(data) is bytes:
        return <const unsigned char *>PyBytes_AS_STRING(data)
    return <const unsigned char *>PyByteArray_AS_STRING(data)


cdef inline Py_ssize_t _len(object data):
    if type(data) is bytes:
        return PyBytes_GET_SIZE(data)
    return PyByteArray_GET_SIZE(data)


cdef int _overrun(int t, Py_ssize_t i, char c, Py_ssize_t off) except -1:
    raise ProtocolError(f"type {t} record {i}: {_NAMES[chr(c)]} at offset {off} overruns the frame")


# -- reading -------------------------------------------------------------------

cdef class FrameReader:
    """Streaming SWAP frame decoder.

    ``segments`` maps each known message type to its segment codes; any other
    type is a ProtocolError. ``max_frame`` bounds L, the bytes after the length
    field. BYTE_ARRAY values are read-only memoryviews of an object the reader
    never writes again: valid for as long as the caller keeps them. Drained
    after each feed(), it holds at most one partial frame plus the last feed.
    """

    def __init__(self, segments, max_frame=DEFAULT_MAX_FRAME):
        self._segments = _compile_segments(segments)
        self.max_frame = _check_max_frame(max_frame)
        self._data = b""
        self._pos = 0
        self._owned = False
        self._error = None
        self._uuid_obj = None

    @property
    def buffered(self):
        """Bytes fed but not yet returned in a message."""
        return _len(self._data) - self._pos

    def feed(self, data):
        """Append ``data`` (any contiguous bytes-like) to the input."""
        cdef Py_buffer view
        if self._error is not None:
            raise ProtocolError(self._error)
        if type(data) is bytes:
            self._feed(data, <const unsigned char *>PyBytes_AS_STRING(data),
                       PyBytes_GET_SIZE(data), True)
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._feed(data, <const unsigned char *>view.buf, view.len, False)
        finally:
            PyBuffer_Release(&view)

    cdef int _feed(self, object data, const unsigned char *p, Py_ssize_t n,
                   bint is_bytes) except -1:
        cdef Py_ssize_t pending, have
        cdef char *buf
        if n == 0:
            return 0
        pending = _len(self._data) - self._pos
        if pending == 0:
            if is_bytes:  # immutable: keep it, no copy
                self._data = data
                self._owned = False
            else:
                self._data = PyByteArray_FromStringAndSize(<const char *>p, n)
                self._cap = n
                self._owned = True
            self._pos = 0
            return 0
        if not self._owned:
            self._data = PyByteArray_FromStringAndSize(
                <const char *>_ptr(self._data) + self._pos, pending)
            self._cap = pending
            self._pos = 0
            self._owned = True
        elif self._pos >= pending:  # compact; costs no more than was consumed
            buf = PyByteArray_AS_STRING(self._data)
            memmove(buf, buf + self._pos, pending)
            PyByteArray_Resize(self._data, pending)
            self._cap = pending  # at most what it holds: a guess low is harmless
            self._pos = 0
        have = PyByteArray_GET_SIZE(self._data)
        if have + n > self._cap:
            # grow geometrically (bytearray alone reallocates to the exact size on
            # big appends: quadratic copying for a frame arriving in 64 KiB reads);
            # the second resize shrinks by at most half, which CPython does in place
            self._cap = max(have + n, 2 * self._cap)
            PyByteArray_Resize(self._data, self._cap)
        PyByteArray_Resize(self._data, have + n)
        memcpy(PyByteArray_AS_STRING(self._data) + have, p, n)
        return 0

    def next(self):
        """The next whole message as ``(type, [record, ...])``, or None when more
        bytes are needed. Raises ProtocolError on a malformed frame."""
        if self._error is not None:
            raise ProtocolError(self._error)
        try:
            return self._next()
        except ProtocolError as exc:
            self._error = str(exc)
            raise

    def eof(self):
        """Call at EOF once next() has returned None: raise ProtocolError if part
        of a frame is buffered."""
        cdef Py_ssize_t n = _len(self._data) - self._pos
        if self._error is not None:
            raise ProtocolError(self._error)
        if n:
            self._error = f"EOF inside a frame ({n} bytes buffered)"
            raise ProtocolError(self._error)

    cdef object _next(self):
        cdef object data = self._data, owner
        cdef Py_ssize_t pos = self._pos, total = _len(data)
        cdef Py_ssize_t avail = total - pos, size, end, rest, base
        cdef const unsigned char *p
        cdef int32_t length
        cdef int t, reps
        cdef bytes codes
        if avail < 4:
            return None
        p = _ptr(data) + pos
        length = _be32(p)
        if length < 4:
            raise ProtocolError(f"frame length {length} is below 4")
        if length > self.max_frame:
            raise ProtocolError(f"frame length {length} is above the maximum {self.max_frame}")
        if avail < 6:
            return None
        t = _be16(p + 4)
        codes = self._segments.get(t)
        if codes is None:
            raise ProtocolError(f"unknown message type {t}")
        if avail < 8:
            return None
        reps = _be16(p + 6)
        if PyBytes_GET_SIZE(codes) and reps < 0:
            raise ProtocolError(f"negative record count {reps}")
        size = 4 + <Py_ssize_t>length
        if avail < size:
            return None
        end = pos + size
        if PyBytes_GET_SIZE(codes) == 0:
            if length != 4:
                raise ProtocolError(f"type {t}: {length - 4} bytes after the last record")
            self._pos = end
            if end == total:
                self._release()
            return (t, [()])
        owner = data
        base = pos
        if (self._owned and reps and
                memchr(PyBytes_AS_STRING(codes), b'B', PyBytes_GET_SIZE(codes)) != NULL):
            # payload views must outlive our next write: hand over whichever is
            # smaller to copy, the rest of the buffer or this frame
            rest = total - end
            if rest <= size:
                self._data = PyByteArray_FromStringAndSize(<const char *>p + size, rest)
                self._cap = rest
                self._pos = 0
            else:
                owner = PyBytes_FromStringAndSize(<const char *>p, size)
                base = 0
                self._pos = end
        else:
            self._pos = end
        records = self._decode(owner, base, size, t, codes, reps)
        if self._pos == _len(self._data):
            self._release()
        return (t, records)

    cdef int _release(self) except -1:
        if self._owned:
            PyByteArray_Resize(self._data, 0)
            self._cap = 0
        else:
            self._data = b""
        self._pos = 0
        return 0

    cdef list _decode(self, object owner, Py_ssize_t base, Py_ssize_t size, int t,
                      bytes codes, int reps):
        """The ``reps`` records of the frame at owner[base:base + size]."""
        cdef const unsigned char *f = _ptr(owner) + base
        cdef const char *cp = PyBytes_AS_STRING(codes)
        cdef Py_ssize_t ncodes = PyBytes_GET_SIZE(codes)
        cdef Py_ssize_t pos = 8, off, i, j, k, n, count
        cdef char c
        cdef object value, item, view = None
        cdef tuple rec
        cdef list records = [], items
        for i in range(reps):
            rec = PyTuple_New(ncodes)
            for j in range(ncodes):
                c = cp[j]
                off = pos
                if c == b'U':
                    if size - pos < 16:
                        _overrun(t, i, c, off)
                    value = self._uuid(f + pos)
                    pos += 16
                elif c == b'S':
                    if size - pos < 2:
                        _overrun(t, i, c, off)
                    n = _be16(f + pos)
                    if n < 0:
                        raise ProtocolError(f"type {t} record {i}: negative STRING length {n}")
                    if size - pos - 2 < n:
                        _overrun(t, i, c, off)
                    value = PyUnicode_DecodeUTF8(<const char *>f + pos + 2, n, "surrogateescape")
                    pos += 2 + n
                elif c == b'I':
                    if size - pos < 4:
                        _overrun(t, i, c, off)
                    value = _be32(f + pos)
                    pos += 4
                elif c == b'L':
                    if size - pos < 8:
                        _overrun(t, i, c, off)
                    value = PyLong_FromLongLong(<int64_t>_be64(f + pos))
                    pos += 8
                elif c == b'F':
                    if size - pos < 2:
                        _overrun(t, i, c, off)
                    value = _be16(f + pos)
                    pos += 2
                elif c == b'B':
                    if size - pos < 4:
                        _overrun(t, i, c, off)
                    n = _be32(f + pos)
                    if n < 0:
                        raise ProtocolError(f"type {t} record {i}: negative BYTE_ARRAY length {n}")
                    pos += 4
                    if size - pos < n:
                        _overrun(t, i, c, off)
                    if view is None:
                        view = memoryview(owner).toreadonly()
                    value = view[base + pos:base + pos + n]
                    pos += n
                else:  # an array: int16 count, then count items
                    if size - pos < 2:
                        _overrun(t, i, c, off)
                    count = _be16(f + pos)
                    if count < 0:
                        raise ProtocolError(
                            f"type {t} record {i}: negative {_NAMES[chr(c)]} count {count}")
                    pos += 2
                    k = 16 if c == b'u' else 8 if c == b'l' else 2
                    if size - pos < count * k:
                        _overrun(t, i, c, off)
                    items = PyList_New(count)
                    for k in range(count):
                        if c == b'u':
                            item = self._uuid(f + pos)
                            pos += 16
                        elif c == b'l':
                            item = PyLong_FromLongLong(<int64_t>_be64(f + pos))
                            pos += 8
                        else:
                            if size - pos < 2:
                                _overrun(t, i, b'S', pos)
                            n = _be16(f + pos)
                            if n < 0:
                                raise ProtocolError(
                                    f"type {t} record {i}: negative STRING length {n}")
                            if size - pos - 2 < n:
                                _overrun(t, i, b'S', pos)
                            item = PyUnicode_DecodeUTF8(<const char *>f + pos + 2, n,
                                                        "surrogateescape")
                            pos += 2 + n
                        Py_INCREF(item)
                        PyList_SET_ITEM(items, k, item)
                    value = items
                Py_INCREF(value)
                PyTuple_SET_ITEM(rec, j, value)
            records.append(rec)
        if pos != size:
            raise ProtocolError(f"type {t}: {size - pos} bytes after the last record")
        return records

    cdef object _uuid(self, const unsigned char *p):
        cdef object u, v
        if self._uuid_obj is not None and memcmp(p, self._uuid_key, 16) == 0:
            return self._uuid_obj  # immutable, so sharing it is safe
        v = (PyLong_FromUnsignedLongLong(_be64(p)) << 64) | PyLong_FromUnsignedLongLong(_be64(p + 8))
        u = _UUID.__new__(_UUID)
        # uuid.UUID forbids setattr; its slots are what UUID(int=v) fills
        PyObject_GenericSetAttr(u, "int", v)
        PyObject_GenericSetAttr(u, "is_safe", _SAFE_UNKNOWN)
        memcpy(self._uuid_key, p, 16)
        self._uuid_obj = u
        return u


# -- writing -------------------------------------------------------------------

cdef object _seq(object values, str what):
    if not isinstance(values, (list, tuple)):
        if isinstance(values, (str, bytes, bytearray, memoryview)) or not hasattr(values, "__iter__"):
            raise TypeError(f"{what} must be a sequence, not {type(values).__name__}")
        values = list(values)
    if len(values) > _MAX_COUNT:
        raise EncodeError(f"{what} of {len(values)} entries is longer than {_MAX_COUNT}")
    return values


cdef bytes _check_codes(object codes):
    """Segment codes (str or bytes) as bytes, every one known."""
    if isinstance(codes, (bytes, bytearray)):
        codes = codes.decode("ascii", "replace")
    for c in codes:
        if c not in _NAMES:
            raise EncodeError(f"unknown segment code {c!r}")
    return codes.encode("ascii")


cdef class FrameWriter:
    """Packs SWAP frames into one growing buffer (see the twin's docstring).

    begin(type), segment methods, end_record(), end(); take() returns every
    frame ended since the last take() as one bytes object; finish() is end()
    then take(). An EncodeError or TypeError abandons the open frame.
    """

    def __cinit__(self):
        self._obj = NULL
        self._buf = NULL
        self._size = 0
        self._cap = 0
        self._start = -1
        self._reps = 0
        self.frames = 0
        self._last_uuid = _NO_UUID

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self.max_frame = _check_max_frame(max_frame)

    def __dealloc__(self):
        Py_XDECREF(self._obj)

    def __len__(self):
        return self._size

    cdef char *_reserve(self, Py_ssize_t k) except NULL:
        """Room for k more bytes of the open frame, which may not pass max_frame."""
        cdef Py_ssize_t length = self._size + k - self._start - 4, cap
        cdef object fresh
        cdef char *p
        if length > self.max_frame:
            raise EncodeError(f"frame length {length} would be above the maximum {self.max_frame}")
        if self._size + k > self._cap:
            cap = max(self._cap * 2, self._size + k, 256)
            if self._obj == NULL:
                fresh = PyBytes_FromStringAndSize(NULL, cap)
                Py_INCREF(fresh)
                self._obj = <PyObject *>fresh
            else:
                try:
                    _PyBytes_Resize(&self._obj, cap)
                except MemoryError:  # the buffer is gone, and every frame in it
                    self._lose()
                    raise
            self._buf = PyBytes_AS_STRING(<object>self._obj)
            self._cap = cap
        p = self._buf + self._size
        self._size += k
        return p

    cdef int _lose(self) except -1:
        """After a failed resize (_obj is NULL): start again, empty."""
        self._obj = NULL
        self._buf = NULL
        self._cap = 0
        self._size = 0
        self._start = -1
        self.frames = 0
        return 0

    cdef int _open(self) except -1:
        if self._start < 0:
            raise RuntimeError("no frame is open")
        return 0

    cdef int _abandon(self) except -1:
        if self._start >= 0:
            self._size = self._start
            self._start = -1
        return 0

    def begin(self, msg_type):
        """Open a frame of ``msg_type`` (int16)."""
        cdef char *p
        if self._start >= 0:
            raise RuntimeError("a frame is already open")
        t = operator.index(msg_type)
        if not -32768 <= t <= 32767:
            raise EncodeError(f"{t} does not fit in int16")
        self._start = self._size
        self._reps = 0
        p = self._reserve(8)
        _put32(p, 4)
        _put16(p + 4, t)
        _put16(p + 6, 0)

    cdef int _put_uuid(self, object u) except -1:
        cdef Py_buffer view
        cdef char *p
        cdef object v
        if u is self._last_uuid:  # a group repeated in every record
            memcpy(self._reserve(16), self._last_uuid_bytes, 16)
            return 0
        if isinstance(u, _UUID):
            v = u.int
            p = self._reserve(16)
            _put64(p, PyLong_AsUnsignedLongLongMask(v >> 64))
            _put64(p + 8, PyLong_AsUnsignedLongLongMask(v))
            memcpy(self._last_uuid_bytes, p, 16)
            self._last_uuid = u  # immutable: its bytes cannot change
            return 0
        if not PyObject_CheckBuffer(u):
            raise TypeError(f"a UUID must be a uuid.UUID or 16 bytes, not {type(u).__name__}")
        PyObject_GetBuffer(u, &view, PyBUF_SIMPLE)
        try:
            if view.len != 16:
                raise EncodeError(f"a UUID must be 16 bytes, not {view.len}")
            memcpy(self._reserve(16), view.buf, 16)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _put_string(self, object s) except -1:
        cdef Py_buffer view
        cdef const char *src
        cdef Py_ssize_t n
        cdef char *p
        cdef bytes b
        if isinstance(s, str):
            try:
                src = PyUnicode_AsUTF8AndSize(s, &n)
            except UnicodeEncodeError:  # surrogates: the escaped bytes of a path
                try:
                    b = s.encode("utf-8", "surrogateescape")
                except UnicodeEncodeError:
                    raise EncodeError("string has a lone surrogate that UTF-8 cannot encode") from None
                src = PyBytes_AS_STRING(b)
                n = PyBytes_GET_SIZE(b)
            if n > _MAX_COUNT:
                raise EncodeError(f"string of {n} bytes is longer than {_MAX_COUNT}")
            p = self._reserve(2 + n)
            _put16(p, <int>n)
            memcpy(p + 2, src, n)
            return 0
        if not PyObject_CheckBuffer(s):
            raise TypeError(f"a string must be str or bytes-like, not {type(s).__name__}")
        PyObject_GetBuffer(s, &view, PyBUF_SIMPLE)
        try:
            if view.len > _MAX_COUNT:
                raise EncodeError(f"string of {view.len} bytes is longer than {_MAX_COUNT}")
            p = self._reserve(2 + view.len)
            _put16(p, <int>view.len)
            memcpy(p + 2, view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _put_int(self, object v, int bits) except -1:
        cdef int overflow = 0
        cdef long long x
        cdef char *p
        if type(v) is not int:
            v = PyNumber_Index(v)
        x = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow or (bits == 32 and not -2147483648 <= x <= 2147483647) or \
                (bits == 16 and not -32768 <= x <= 32767):
            raise EncodeError(f"{v} does not fit in int{bits}")
        p = self._reserve(bits // 8)
        if bits == 64:
            _put64(p, <uint64_t>x)
        elif bits == 32:
            _put32(p, x)
        else:
            _put16(p, <int>x)
        return 0

    cdef int _put_bytes(self, object data) except -1:
        cdef Py_buffer view
        cdef char *p
        if not PyObject_CheckBuffer(data):
            raise TypeError(f"a byte array must be bytes-like, not {type(data).__name__}")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len > _INT31:
                raise EncodeError(f"byte array of {view.len} bytes is longer than {_INT31}")
            p = self._reserve(4 + view.len)
            _put32(p, view.len)
            memcpy(p + 4, view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return 0

    cdef int _put_array(self, object values, char code) except -1:
        values = _seq(values, _ARRAY_WHAT[chr(code)])
        _put16(self._reserve(2), <int>len(values))
        for v in values:
            if code == b'u':
                self._put_uuid(v)
            elif code == b's':
                self._put_string(v)
            else:
                self._put_int(v, 64)
        return 0

    cdef int _put_record(self, bytes codes, object values) except -1:
        cdef const char *cp = PyBytes_AS_STRING(codes)
        cdef Py_ssize_t j, n = PyBytes_GET_SIZE(codes)
        cdef char c
        cdef bint is_tuple = type(values) is tuple
        if not is_tuple and not isinstance(values, (list, tuple)):
            raise TypeError(f"a record must be a tuple or list, not {type(values).__name__}")
        if len(values) != n:
            raise EncodeError(f"a record of {len(values)} values for {n} segments")
        for j in range(n):
            c = cp[j]
            v = <object>PyTuple_GET_ITEM(values, j) if is_tuple else values[j]
            if c == b'U':
                self._put_uuid(v)
            elif c == b'S':
                self._put_string(v)
            elif c == b'I':
                self._put_int(v, 32)
            elif c == b'L':
                self._put_int(v, 64)
            elif c == b'B':
                self._put_bytes(v)
            elif c == b'F':
                self._put_int(v, 16)
            else:
                self._put_array(v, c)
        return 0

    def uuid(self, u):
        """A UUID: uuid.UUID or 16 bytes."""
        self._open()
        try:
            self._put_uuid(u)
        except BaseException:
            self._abandon()
            raise

    def string(self, s):
        """A STRING: str (UTF-8, surrogateescape) or bytes-like, at most 32,767 bytes."""
        self._open()
        try:
            self._put_string(s)
        except BaseException:
            self._abandon()
            raise

    def string_array(self, values):
        """A STRING_ARRAY: at most 32,767 strings."""
        self._open()
        try:
            self._put_array(values, b's')
        except BaseException:
            self._abandon()
            raise

    def uuid_array(self, values):
        """A UUID_ARRAY: at most 32,767 UUIDs."""
        self._open()
        try:
            self._put_array(values, b'u')
        except BaseException:
            self._abandon()
            raise

    def long_array(self, values):
        """A LONG_ARRAY: at most 32,767 int64s."""
        self._open()
        try:
            self._put_array(values, b'l')
        except BaseException:
            self._abandon()
            raise

    def int32(self, v):
        """An INT (signed 32 bits)."""
        self._open()
        try:
            self._put_int(v, 32)
        except BaseException:
            self._abandon()
            raise

    def int64(self, v):
        """A LONG (signed 64 bits)."""
        self._open()
        try:
            self._put_int(v, 64)
        except BaseException:
            self._abandon()
            raise

    def finish_type(self, code):
        """A FINISH_TYPE (signed 16 bits)."""
        self._open()
        try:
            self._put_int(code, 16)
        except BaseException:
            self._abandon()
            raise

    def byte_array(self, data):
        """A BYTE_ARRAY: any bytes-like, copied once into the frame."""
        self._open()
        try:
            self._put_bytes(data)
        except BaseException:
            self._abandon()
            raise

    def record(self, codes, values):
        """Write one whole record, ``values`` in the layout ``codes`` (segment
        codes), and count it."""
        self._open()
        try:
            if not isinstance(values, (list, tuple)):
                raise TypeError(f"a record must be a tuple or list, not {type(values).__name__}")
            self._put_record(_check_codes(codes), values)
        except BaseException:
            self._abandon()
            raise
        self._end_record()

    cdef int _end_record(self) except -1:
        self._open()
        if self._reps == _MAX_COUNT:
            self._abandon()
            raise EncodeError(f"more than {_MAX_COUNT} records in one frame")
        self._reps += 1
        return 0

    def end_record(self):
        """Count one record in the open frame (at most 32,767)."""
        self._end_record()

    def end(self):
        """Close the open frame: back-patch its length and record count."""
        self._open()
        _put32(self._buf + self._start, self._size - self._start - 4)
        _put16(self._buf + self._start + 6, <int>self._reps)
        self._start = -1
        self.frames += 1

    def take(self):
        """Every frame ended since the last take(), as one bytes object."""
        cdef object out
        if self._start >= 0:
            raise RuntimeError("a frame is still open")
        if self._size == 0:
            return b""
        if self._size <= _COPY_OUT:  # cheaper than a new buffer; keep this one
            out = PyBytes_FromStringAndSize(self._buf, self._size)
            self._size = 0
            self.frames = 0
            return out
        try:
            _PyBytes_Resize(&self._obj, self._size)  # trim in place: no copy
        except MemoryError:
            self._lose()
            raise
        out = <object>self._obj
        Py_XDECREF(self._obj)  # out holds it now
        self._obj = NULL
        self._buf = NULL
        self._cap = 0
        self._size = 0
        self.frames = 0
        return out

    def finish(self):
        """end() then take()."""
        self.end()
        return self.take()


def encode(segments, msg_type, records, max_frame=DEFAULT_MAX_FRAME):
    """One frame of ``msg_type`` holding ``records`` (tuples laid out as
    ``segments[msg_type]``); a type without segments takes ``[()]`` (or []) and
    is written with reps = 1. Raises EncodeError."""
    cdef FrameWriter w
    cdef bytes codes
    t = operator.index(msg_type)
    try:
        raw = segments[t]
    except KeyError:
        raise EncodeError(f"unknown message type {t}") from None
    w = FrameWriter(max_frame)
    w.begin(t)
    if not raw:
        for rec in records:
            if len(rec):
                w._abandon()
                raise EncodeError(f"type {t} has no segments, a record has {len(rec)} values")
        w._end_record()
    else:
        codes = _check_codes(raw)
        for rec in records:
            try:
                if not isinstance(rec, (list, tuple)):
                    raise TypeError(f"a record must be a tuple or list, not {type(rec).__name__}")
                w._put_record(codes, rec)
            except BaseException:
                w._abandon()
                raise
            w._end_record()
    return w.finish()
