"""SWAP frame codec (spec/swap.md), pure-Python twin.

The executable spec of ``_fastpath.swapframe``: same names, signatures,
exceptions and error messages (the differential tests hold both to that).

A frame is ``int32 L, int16 type, int16 reps`` then ``reps`` records, L counting
the bytes after itself; all integers are big-endian and signed. What a record
holds is given per message type by a string of segment codes, one character per
segment (``storage.swap.messages.SEGMENTS`` is the table for SWAP):

    U UUID (16 bytes)          u UUID_ARRAY (int16 count, UUIDs)
    S STRING (int16 length)    s STRING_ARRAY (int16 count, STRINGs)
    I INT (int32)              L LONG (int64)
    l LONG_ARRAY (int16 count, int64s)
    B BYTE_ARRAY (int32 length, bytes)
    F FINISH_TYPE (int16)

Decoded values: U -> uuid.UUID; S -> str (UTF-8 with surrogateescape, so any
bytes survive a decode and re-encode byte for byte, as echoed paths must);
I, L, F -> int; arrays -> lists; B -> a read-only memoryview (never a copy).
A message is ``(type, records)``, each record a tuple; a type without segments
always reads as one empty record ``[()]`` (its reps is ignored, as the spec says)
and is written with reps = 1.

``FrameReader`` is sans-I/O: ``feed()`` bytes, then ``next()`` returns a message
or None ("need more"). It never allocates from a length it has not got the bytes
for, refuses L above ``max_frame`` as soon as the 4 length bytes are in, and
raises ``ProtocolError`` (and again on every later call) on anything malformed.
"""
import operator
import struct
import uuid

__all__ = ["ProtocolError", "EncodeError", "FrameReader", "FrameWriter", "encode",
           "DEFAULT_MAX_FRAME", "MAX_COUNT", "SEGMENT_CODES"]

#: largest L (bytes after the length field) accepted or written by default:
#: a 512 KiB FILE_SEGMENT (L = 524,312) with room to spare
DEFAULT_MAX_FRAME = (1 << 20) + (64 << 10)
#: largest string length, array count and reps (signed int16)
MAX_COUNT = 32767
#: the segment codes, in the order of the table in the module docstring
SEGMENT_CODES = "UuSsILlBF"

_NAMES = {"U": "UUID", "u": "UUID_ARRAY", "S": "STRING", "s": "STRING_ARRAY", "I": "INT",
          "L": "LONG", "l": "LONG_ARRAY", "B": "BYTE_ARRAY", "F": "FINISH_TYPE"}
_INT31 = (1 << 31) - 1
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">ihh")
_UUID = uuid.UUID


class ProtocolError(ValueError):
    """A malformed frame: the connection must be closed. ``str(e)`` says why."""


class EncodeError(ValueError):
    """A value the SWAP format cannot hold (too long, out of range, unknown type)."""


def _compile_segments(segments):
    """{type: segment codes} -> {type: str}, checked."""
    table = {}
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
        table[t] = codes
    return table


def _check_max_frame(max_frame):
    max_frame = operator.index(max_frame)
    if not 4 <= max_frame <= _INT31:
        raise ValueError(f"max_frame must be in 4..{_INT31}, not {max_frame}")
    return max_frame


# -- reading -------------------------------------------------------------------

class FrameReader:
    """Streaming SWAP frame decoder.

    ``segments`` maps each known message type to its segment codes (see the
    module docstring); any other type is a ProtocolError. ``max_frame`` bounds
    L, the bytes after the length field.

    BYTE_ARRAY values are read-only memoryviews of an object the reader never
    writes again (the bytes object that was fed, or a buffer the reader hands
    over and stops using): they stay valid for as long as the caller keeps them,
    and keep that object alive meanwhile. A frame fed whole as one ``bytes``
    object is not copied at all; other input is copied once.

    Memory: the reader holds what was fed and not yet returned. A caller that
    drains ``next()`` after each ``feed()`` keeps it to one partial frame (at
    most 4 + max_frame bytes, refused beyond) plus the last feed.
    """

    def __init__(self, segments, max_frame=DEFAULT_MAX_FRAME):
        self._segments = _compile_segments(segments)
        self.max_frame = _check_max_frame(max_frame)
        self._data = b""  # bytes (the caller's, not written) or our bytearray
        self._pos = 0  # start of the unconsumed bytes in _data
        self._owned = False  # _data is our bytearray, never exported while ours
        self._error = None

    @property
    def buffered(self):
        """Bytes fed but not yet returned in a message."""
        return len(self._data) - self._pos

    def feed(self, data):
        """Append ``data`` (any contiguous bytes-like) to the input."""
        if self._error is not None:
            raise ProtocolError(self._error)
        mv = memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        if not len(mv):
            return
        pending = len(self._data) - self._pos
        if not pending:
            if type(data) is bytes:  # immutable: keep it, no copy
                self._data, self._pos, self._owned = data, 0, False
            else:
                self._data, self._pos, self._owned = bytearray(mv), 0, True
            return
        if not self._owned:
            self._data = bytearray(memoryview(self._data)[self._pos:])
            self._pos, self._owned = 0, True
        elif self._pos >= pending:  # compact; costs no more than was consumed
            del self._data[:self._pos]
            self._pos = 0
        self._data += mv

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
        if self._error is not None:
            raise ProtocolError(self._error)
        n = len(self._data) - self._pos
        if n:
            self._error = f"EOF inside a frame ({n} bytes buffered)"
            raise ProtocolError(self._error)

    def _next(self):
        data, pos = self._data, self._pos
        avail = len(data) - pos
        if avail < 4:
            return None
        length = _I32.unpack_from(data, pos)[0]
        if length < 4:
            raise ProtocolError(f"frame length {length} is below 4")
        if length > self.max_frame:
            raise ProtocolError(f"frame length {length} is above the maximum {self.max_frame}")
        if avail < 6:
            return None
        t = _I16.unpack_from(data, pos + 4)[0]
        codes = self._segments.get(t)
        if codes is None:
            raise ProtocolError(f"unknown message type {t}")
        if avail < 8:
            return None
        reps = _I16.unpack_from(data, pos + 6)[0]
        if codes and reps < 0:
            raise ProtocolError(f"negative record count {reps}")
        size = 4 + length
        if avail < size:
            return None
        end = pos + size
        if not codes:
            if length != 4:
                raise ProtocolError(f"type {t}: {length - 4} bytes after the last record")
            self._advance(end)
            return t, [()]
        owner, base = data, pos
        if self._owned and "B" in codes and reps:
            # payload views must outlive our next write: hand over whichever is
            # smaller to copy, the rest of the buffer or this frame
            rest = len(data) - end
            if rest <= size:
                self._data, self._pos = bytearray(memoryview(data)[end:]), 0
            else:
                owner, base = bytes(memoryview(data)[pos:end]), 0
                self._pos = end
        else:
            self._pos = end
        records = _decode(owner, base, size, t, codes, reps)
        if self._pos == len(self._data):
            self._release()
        return t, records

    def _advance(self, end):
        self._pos = end
        if end == len(self._data):
            self._release()

    def _release(self):
        if self._owned:
            del self._data[:]
        else:
            self._data = b""
        self._pos = 0


def _decode(buf, base, size, t, codes, reps):
    """The ``reps`` records of the frame at buf[base:base + size]."""
    end = base + size
    pos = base + 8
    view = None
    records = []
    for i in range(reps):
        rec = []
        for c in codes:
            off = pos
            if c == "U":
                if end - pos < 16:
                    _overrun(t, i, c, off - base)
                rec.append(_uuid(buf, pos))
                pos += 16
            elif c == "S":
                value, pos = _string(buf, pos, end, base, t, i)
                rec.append(value)
            elif c == "I":
                if end - pos < 4:
                    _overrun(t, i, c, off - base)
                rec.append(_I32.unpack_from(buf, pos)[0])
                pos += 4
            elif c == "L":
                if end - pos < 8:
                    _overrun(t, i, c, off - base)
                rec.append(_I64.unpack_from(buf, pos)[0])
                pos += 8
            elif c == "F":
                if end - pos < 2:
                    _overrun(t, i, c, off - base)
                rec.append(_I16.unpack_from(buf, pos)[0])
                pos += 2
            elif c == "B":
                if end - pos < 4:
                    _overrun(t, i, c, off - base)
                n = _I32.unpack_from(buf, pos)[0]
                if n < 0:
                    raise ProtocolError(f"type {t} record {i}: negative BYTE_ARRAY length {n}")
                pos += 4
                if end - pos < n:
                    _overrun(t, i, c, off - base)
                if view is None:
                    view = memoryview(buf).toreadonly()
                rec.append(view[pos:pos + n])
                pos += n
            else:  # an array: int16 count, then count items
                if end - pos < 2:
                    _overrun(t, i, c, off - base)
                count = _I16.unpack_from(buf, pos)[0]
                if count < 0:
                    raise ProtocolError(f"type {t} record {i}: negative {_NAMES[c]} count {count}")
                pos += 2
                item = 16 if c == "u" else 8 if c == "l" else 2
                if end - pos < count * item:
                    _overrun(t, i, c, off - base)
                if c == "u":
                    items = [_uuid(buf, pos + 16 * k) for k in range(count)]
                    pos += 16 * count
                elif c == "l":
                    items = [_I64.unpack_from(buf, pos + 8 * k)[0] for k in range(count)]
                    pos += 8 * count
                else:
                    items = []
                    for _ in range(count):
                        value, pos = _string(buf, pos, end, base, t, i)
                        items.append(value)
                rec.append(items)
        records.append(tuple(rec))
    if pos != end:
        raise ProtocolError(f"type {t}: {end - pos} bytes after the last record")
    return records


def _overrun(t, i, c, off):
    raise ProtocolError(f"type {t} record {i}: {_NAMES[c]} at offset {off} overruns the frame")


def _uuid(buf, pos):
    hi, lo = _U64.unpack_from(buf, pos)[0], _U64.unpack_from(buf, pos + 8)[0]
    return _UUID(int=(hi << 64) | lo)


def _string(buf, pos, end, base, t, i):
    """Decode the STRING at buf[pos:]; return (str, position after it)."""
    if end - pos < 2:
        _overrun(t, i, "S", pos - base)
    n = _I16.unpack_from(buf, pos)[0]
    if n < 0:
        raise ProtocolError(f"type {t} record {i}: negative STRING length {n}")
    if end - pos - 2 < n:
        _overrun(t, i, "S", pos - base)
    return str(buf[pos + 2:pos + 2 + n], "utf-8", "surrogateescape"), pos + 2 + n


# -- writing -------------------------------------------------------------------

def _string_bytes(s):
    if isinstance(s, str):
        try:
            return s.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise EncodeError("string has a lone surrogate that UTF-8 cannot encode") from None
    try:
        return memoryview(s).cast("B")
    except TypeError:
        raise TypeError(f"a string must be str or bytes-like, not {type(s).__name__}") from None


def _uuid_bytes(u):
    if isinstance(u, _UUID):
        return u.bytes
    try:
        b = memoryview(u).cast("B")
    except TypeError:
        raise TypeError(f"a UUID must be a uuid.UUID or 16 bytes, not {type(u).__name__}") from None
    if len(b) != 16:
        raise EncodeError(f"a UUID must be 16 bytes, not {len(b)}")
    return b


def _seq(values, what):
    if not isinstance(values, (list, tuple)):
        if isinstance(values, (str, bytes, bytearray, memoryview)) or not hasattr(values, "__iter__"):
            raise TypeError(f"{what} must be a sequence, not {type(values).__name__}")
        values = list(values)
    if len(values) > MAX_COUNT:
        raise EncodeError(f"{what} of {len(values)} entries is longer than {MAX_COUNT}")
    return values


def _int(v, bits):
    v = operator.index(v)
    if not -(1 << (bits - 1)) <= v < 1 << (bits - 1):
        raise EncodeError(f"{v} does not fit in int{bits}")
    return v


class FrameWriter:
    """Packs SWAP frames into one growing buffer.

    ``begin(type)`` reserves the 8-byte header; the segment methods append one
    value each; ``end_record()`` counts a record; ``end()`` back-patches L and
    reps. Several frames may be ended before ``take()`` returns them all as one
    bytes object (one send). ``finish()`` is ``end()`` then ``take()``.

    A value the format cannot hold raises EncodeError (TypeError for a value of
    the wrong type) and abandons the open frame: its bytes are dropped, frames
    ended before it are kept, and the next frame starts with ``begin()``.
    Using the writer out of order (a segment with no open frame, ``take()``
    inside one) raises RuntimeError.
    """

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self.max_frame = _check_max_frame(max_frame)
        self._buf = bytearray()
        self._start = -1  # offset of the open frame, -1 when none
        self._reps = 0
        self.frames = 0  # frames ended and not yet taken

    def __len__(self):
        return len(self._buf)

    def begin(self, msg_type):
        """Open a frame of ``msg_type`` (int16)."""
        if self._start >= 0:
            raise RuntimeError("a frame is already open")
        t = _int(msg_type, 16)
        self._start = len(self._buf)
        self._reps = 0
        self._buf += _HEAD.pack(4, t, 0)

    def _open(self):
        if self._start < 0:
            raise RuntimeError("no frame is open")

    def _abandon(self):
        if self._start >= 0:
            del self._buf[self._start:]
            self._start = -1

    def _put(self, *chunks):
        """Append bytes, refusing to let the open frame's L pass max_frame."""
        length = len(self._buf) + sum(len(c) for c in chunks) - self._start - 4
        if length > self.max_frame:
            raise EncodeError(f"frame length {length} would be above the maximum {self.max_frame}")
        for chunk in chunks:
            self._buf += chunk

    def _guard(self, write, *args):
        self._open()
        try:
            write(*args)
        except BaseException:
            self._abandon()
            raise

    def uuid(self, u):
        """A UUID: uuid.UUID or 16 bytes."""
        self._guard(self._uuid, u)

    def _uuid(self, u):
        self._put(_uuid_bytes(u))

    def string(self, s):
        """A STRING: str (UTF-8, surrogateescape) or bytes-like, at most 32,767 bytes."""
        self._guard(self._string, s)

    def _string(self, s):
        b = _string_bytes(s)
        if len(b) > MAX_COUNT:
            raise EncodeError(f"string of {len(b)} bytes is longer than {MAX_COUNT}")
        self._put(_I16.pack(len(b)), b)

    def string_array(self, values):
        """A STRING_ARRAY: at most 32,767 strings."""
        self._guard(self._array, values, "string array", self._string)

    def uuid_array(self, values):
        """A UUID_ARRAY: at most 32,767 UUIDs."""
        self._guard(self._array, values, "UUID array", self._uuid)

    def long_array(self, values):
        """A LONG_ARRAY: at most 32,767 int64s."""
        self._guard(self._array, values, "long array", self._int64)

    def _array(self, values, what, write):
        values = _seq(values, what)
        self._put(_I16.pack(len(values)))
        for v in values:
            write(v)

    def int32(self, v):
        """An INT (signed 32 bits)."""
        self._guard(self._int32, v)

    def _int32(self, v):
        self._put(_I32.pack(_int(v, 32)))

    def int64(self, v):
        """A LONG (signed 64 bits)."""
        self._guard(self._int64, v)

    def _int64(self, v):
        self._put(_I64.pack(_int(v, 64)))

    def finish_type(self, code):
        """A FINISH_TYPE (signed 16 bits)."""
        self._guard(self._finish_type, code)

    def _finish_type(self, code):
        self._put(_I16.pack(_int(code, 16)))

    def byte_array(self, data):
        """A BYTE_ARRAY: any bytes-like, copied once into the frame."""
        self._guard(self._byte_array, data)

    def _byte_array(self, data):
        try:
            b = memoryview(data).cast("B")
        except TypeError:
            raise TypeError(f"a byte array must be bytes-like, not {type(data).__name__}") from None
        if len(b) > _INT31:
            raise EncodeError(f"byte array of {len(b)} bytes is longer than {_INT31}")
        self._put(_I32.pack(len(b)), b)

    def record(self, codes, values):
        """Write one whole record, ``values`` in the layout ``codes`` (segment
        codes), and count it."""
        self._guard(self._record, codes, values)
        self.end_record()

    def _record(self, codes, values):
        if isinstance(codes, (bytes, bytearray)):
            codes = codes.decode("ascii", "replace")
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"a record must be a tuple or list, not {type(values).__name__}")
        for c in codes:
            if c not in _NAMES:
                raise EncodeError(f"unknown segment code {c!r}")
        if len(values) != len(codes):
            raise EncodeError(f"a record of {len(values)} values for {len(codes)} segments")
        for c, v in zip(codes, values):
            if c == "U":
                self._uuid(v)
            elif c == "S":
                self._string(v)
            elif c == "I":
                self._int32(v)
            elif c == "L":
                self._int64(v)
            elif c == "B":
                self._byte_array(v)
            elif c == "F":
                self._finish_type(v)
            elif c == "u":
                self._array(v, "UUID array", self._uuid)
            elif c == "s":
                self._array(v, "string array", self._string)
            else:
                self._array(v, "long array", self._int64)

    def end_record(self):
        """Count one record in the open frame (at most 32,767)."""
        self._open()
        if self._reps == MAX_COUNT:
            self._abandon()
            raise EncodeError(f"more than {MAX_COUNT} records in one frame")
        self._reps += 1

    def end(self):
        """Close the open frame: back-patch its length and record count."""
        self._open()
        start = self._start
        _I32.pack_into(self._buf, start, len(self._buf) - start - 4)
        _I16.pack_into(self._buf, start + 6, self._reps)
        self._start = -1
        self.frames += 1

    def take(self):
        """Every frame ended since the last take(), as one bytes object."""
        if self._start >= 0:
            raise RuntimeError("a frame is still open")
        out = bytes(self._buf)
        del self._buf[:]
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
    t = operator.index(msg_type)
    try:
        codes = segments[t]
    except KeyError:
        raise EncodeError(f"unknown message type {t}") from None
    w = FrameWriter(max_frame)
    w.begin(t)
    if isinstance(codes, (bytes, bytearray)):
        codes = codes.decode("ascii", "replace")
    for c in codes:
        if c not in _NAMES:
            raise EncodeError(f"unknown segment code {c!r}")
    if not codes:
        for rec in records:
            if len(rec):
                w._abandon()
                raise EncodeError(f"type {t} has no segments, a record has {len(rec)} values")
        w.end_record()
    else:
        for rec in records:
            w.record(codes, rec)
    return w.finish()
