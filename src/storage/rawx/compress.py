"""Compressed chunk bodies (``compression zlib``; spec rawx.md sections 3-4).

A compressed chunk file holds ONE zlib stream (RFC 1950 framing, what Go's
``compress/zlib`` writer produces); ``user.grid.compression`` names the codec and
``user.grid.chunk.size`` keeps the uncompressed length. Chunks written by the reference
with ``compression deflate`` hold a raw deflate stream (RFC 1951) and are read too.

Memory stays bounded on both sides: the compressor sees the body piece by piece, the
inflater reads the file by ``READ_PIECE`` and never inflates more than it is asked for.
"""
import errno
import os
import zlib

from storage.errors import StorageError

ZLIB = "zlib"
# Level 1 (zlib's fastest): chunk bodies are often already compressed or encrypted,
# where every level saves nothing and costs the same; on compressible data level 1 was
# measured 1.2x (text) to 8x (DNA-like) faster than the default 6 for a ratio a few
# points worse, and PUT throughput matters more to a storage node than those points.
LEVEL = 1
READ_PIECE = 256 << 10  # compressed bytes read from the chunk file at a time
HASH_PIECE = 1 << 20  # decompressed bytes hashed at a time
# codec name as stored in user.grid.compression -> zlib wbits
_WBITS = {"zlib": zlib.MAX_WBITS, "deflate": -zlib.MAX_WBITS}
PLAIN = ("", "off")  # values meaning "not compressed" (the reference writes "off")


class UnsupportedCompression(StorageError):
    """A chunk compressed with a codec we cannot read (e.g. the reference's lzw)."""


def is_compressed(name):
    return name not in PLAIN


def wbits_for(name):
    """zlib ``wbits`` decoding a chunk stored with compression ``name``; raises
    UnsupportedCompression with a one-line reason for an unknown codec."""
    try:
        return _WBITS[name]
    except KeyError:
        raise UnsupportedCompression(f"compression {name} not supported") from None


class Compressor:
    """One zlib stream, fed piece by piece. ``compress`` returns the compressed bytes
    ready to be written (often empty: zlib buffers), ``flush`` the tail of the stream."""

    __slots__ = ("_z",)

    def __init__(self, level=LEVEL):
        self._z = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS)

    def compress(self, data):
        return self._z.compress(data)

    def flush(self):
        return self._z.flush(zlib.Z_FINISH)


class Inflater:
    """Decompressed bytes of a compressed chunk file: skip ``skip`` bytes, then serve
    at most ``length`` bytes (None: to the end of the stream).

    ``read(n)`` returns 1 to ``n`` bytes, b"" once ``length`` bytes were served or the
    stream ended; a corrupt stream, a file that ends inside the stream or a read error
    raise OSError (EIO). With ``to_end``, the piece that completes ``length`` is only
    returned once the stream is seen to end right there with a good checksum (a
    damaged literal only shows in the zlib trailer's Adler-32): a reader of the whole
    chunk never gets a complete body with wrong bytes."""

    __slots__ = ("_fd", "_pos", "_z", "_skip", "_left", "_to_end")

    def __init__(self, fd, wbits, skip=0, length=None, to_end=False):
        self._fd = fd
        self._pos = 0  # file offset of the next compressed byte to read
        self._z = zlib.decompressobj(wbits)
        self._skip = skip
        self._left = length
        self._to_end = to_end and length is not None

    def _inflate(self, limit):
        """1 to ``limit`` (> 0) decompressed bytes, b"" at the end of the stream.
        Each turn either reads a new piece of the file or inflates a pending tail
        (which yields output since ``limit`` > 0), so the loop ends with the file."""
        z = self._z
        while not z.eof:
            tail = z.unconsumed_tail
            if not tail:
                tail = os.pread(self._fd, READ_PIECE, self._pos)
                if not tail:
                    raise OSError(errno.EIO, "compressed chunk ends inside its stream")
                self._pos += len(tail)
            try:
                out = z.decompress(tail, limit)
            except zlib.error as exc:
                raise OSError(errno.EIO, f"corrupt compressed chunk: {exc}") from None
            if out:
                return out
            if z.unconsumed_tail and len(z.unconsumed_tail) == len(tail):
                raise OSError(errno.EIO, "corrupt compressed chunk: no progress")
        return b""

    def read(self, n):
        while self._skip:  # bounded: each turn drops >= 1 byte or raises
            dropped = self._inflate(min(self._skip, READ_PIECE * 4))
            if not dropped:
                return b""
            self._skip -= len(dropped)
        if self._left is not None:
            n = min(n, self._left)
        if n <= 0:
            return b""
        out = self._inflate(n)
        if self._left is not None:
            self._left -= len(out)
            if self._left == 0 and self._to_end and self._inflate(1):
                raise OSError(errno.EIO, "compressed chunk longer than its stored size")
        return out


def hash_inflated(fd, wbits, hasher):
    """Feed the whole decompressed stream of a chunk file to ``hasher``; -> its
    length in bytes. OSError (EIO) on a corrupt or truncated stream."""
    inflater = Inflater(fd, wbits)
    total = 0
    while True:  # bounded by the stream: each turn takes >= 1 byte or ends
        piece = inflater.read(HASH_PIECE)
        if not piece:
            return total
        hasher.update(piece)
        total += len(piece)
