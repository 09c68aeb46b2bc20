"""Pure-Python (numpy) twin of ``_fastpath.gf16``: same names, signatures and
exceptions; the arithmetic is the log/antilog reference in storage.ec.gf."""
import zlib

import numpy as np

from storage.ec import gf

KERNEL_ENV = "STORAGE_NODE_GF16_KERNEL"
_MAX = 32


def available_kernels():
    """Names of the kernels this implementation can run."""
    return ("numpy",)


def kernel_name():
    """The kernel gf16_matmul uses by default."""
    return "numpy"


def cpu_features():
    """CPU features relevant to the kernels (none are used here)."""
    return {"avx2": False}


def gf_mul(a, b):
    """Product of two field elements (0..65535)."""
    if not (0 <= a <= 0xFFFF and 0 <= b <= 0xFFFF):
        raise ValueError("field elements are 0..65535")
    return gf.mul(a, b)


class Gf16Matrix:
    """A coefficient matrix (rows x cols, values 0..65535), checked once."""

    def __init__(self, coeffs):
        rows = [list(map(int, row)) for row in coeffs]
        if not rows or not rows[0]:
            raise ValueError("coefficient matrix is empty")
        ncols = len(rows[0])
        if any(len(row) != ncols for row in rows):
            raise ValueError("coefficient matrix rows differ in length")
        if len(rows) > _MAX or ncols > _MAX:
            raise ValueError(f"coefficient matrix larger than {_MAX}x{_MAX}")
        for row in rows:
            for v in row:
                if not 0 <= v <= 0xFFFF:
                    raise ValueError(f"coefficient {v} outside 0..65535")
        self.rows = len(rows)
        self.cols = ncols
        self._rows = rows

    def coefficients(self):
        """The matrix as a list of lists of ints."""
        return [list(row) for row in self._rows]

    def __repr__(self):
        return f"Gf16Matrix({self._rows!r})"


def gf16_matmul(matrix, inputs, outputs, kernel=None):
    """out_r[t] = XOR_c matrix[r][c] * in_c[t] over little-endian uint16 words."""
    mat = matrix if isinstance(matrix, Gf16Matrix) else Gf16Matrix(matrix)
    if kernel not in (None, "numpy"):
        raise ValueError(f"unknown or unavailable kernel {kernel!r}; have {available_kernels()}")
    inputs = [memoryview(b).cast("B") for b in inputs]
    outputs = list(outputs)
    if len(inputs) != mat.cols:
        raise ValueError(f"matrix has {mat.cols} columns but {len(inputs)} inputs were given")
    if len(outputs) != mat.rows:
        raise ValueError(f"matrix has {mat.rows} rows but {len(outputs)} outputs were given")
    nbytes = inputs[0].nbytes
    for i, v in enumerate(inputs):
        if v.nbytes != nbytes:
            raise ValueError(f"input {i} is {v.nbytes} bytes, input 0 is {nbytes}")
    out_views = []
    for i, o in enumerate(outputs):
        v = memoryview(o)
        if v.readonly:
            raise TypeError(f"output {i} is not writable")
        v = v.cast("B")
        if v.nbytes != nbytes:
            raise ValueError(f"output {i} is {v.nbytes} bytes, inputs are {nbytes}")
        out_views.append(v)
    if nbytes % 2:
        raise ValueError(f"regions are {nbytes} bytes: not a whole number of 16-bit words")
    words = [np.frombuffer(v, dtype="<u2") for v in inputs]
    results = gf.matmul_words(mat._rows, words)
    for v, res in zip(out_views, results):
        np.frombuffer(v, dtype="<u2")[:] = res


def split_into(data, outputs):
    """Copy ``data`` across ``outputs`` in order: each output receives the
    next len(output) bytes, zero-filled past the end of data. Returns the
    number of data bytes copied."""
    src = memoryview(data).cast("B")
    offset = 0
    for out in outputs:
        dst = memoryview(out).cast("B")
        if dst.readonly:
            raise TypeError("output is not writable")
        count = max(0, min(dst.nbytes, src.nbytes - offset))
        dst[:count] = src[offset:offset + count]
        dst[count:] = bytes(dst.nbytes - count)
        offset += count
    return offset


def encode_fragments(matrix, data, fragments, headers, blocksize, payload_crc=None, kernel=None):
    """Erasure-code one segment into cols + rows fragments: each starts with
    its H-byte slice of ``headers`` ((cols + rows) * H bytes), followed by a
    blocksize-byte payload (data pieces, the last zero-padded, then matrix
    times them). ``payload_crc``: None or (crc_offset, meta_len,
    meta_crc_offset): store each payload's CRC-32 (LE u32) in its header at
    crc_offset, then the CRC-32 of the header's first meta_len bytes at
    meta_crc_offset. Nothing is written unless every argument is valid.
    Returns H + blocksize."""
    if not isinstance(matrix, Gf16Matrix):
        raise ValueError("encode_fragments needs a Gf16Matrix")
    if kernel not in (None, "numpy"):
        raise ValueError(f"unknown or unavailable kernel {kernel!r}; have {available_kernels()}")
    if type(fragments) is not list and type(fragments) is not tuple:
        fragments = list(fragments)
    nfrags = matrix.rows + matrix.cols
    if len(fragments) != nfrags:
        raise ValueError(f"need {nfrags} fragments, got {len(fragments)}")
    if blocksize < 0 or blocksize % 2:
        raise ValueError(f"blocksize {blocksize} is not an even number of bytes")
    crc_at = -1
    if payload_crc is not None:
        crc_at, meta_len, meta_at = payload_crc
    hdrs = memoryview(headers).cast("B")
    if hdrs.nbytes % nfrags:
        raise ValueError(f"headers are {hdrs.nbytes} bytes, not a multiple of {nfrags}")
    hsize = hdrs.nbytes // nfrags
    fsize = hsize + blocksize
    if payload_crc is not None and not (0 <= crc_at <= hsize - 4 and 0 <= meta_len <= hsize
                                        and 0 <= meta_at <= hsize - 4):
        raise ValueError(f"payload_crc {payload_crc!r} does not fit {hsize}-byte headers")
    src = memoryview(data).cast("B")
    if src.nbytes > matrix.cols * blocksize:
        raise ValueError(f"segment is {src.nbytes} bytes, more than {matrix.cols} x {blocksize}")
    views = []
    for i, f in enumerate(fragments):
        v = memoryview(f)
        if v.readonly:
            raise TypeError(f"fragment buffer {i} is not writable")
        v = v.cast("B")
        if v.nbytes < fsize:
            raise ValueError(f"fragment buffer {i} is {v.nbytes} bytes, need {fsize}")
        views.append(v)
    payloads = [v[hsize:fsize] for v in views]
    split_into(src, payloads[:matrix.cols])
    if blocksize:
        gf16_matmul(matrix, payloads[:matrix.cols], payloads[matrix.cols:])
    for i, v in enumerate(views):
        v[:hsize] = hdrs[i * hsize:(i + 1) * hsize]
        if crc_at >= 0:
            v[crc_at:crc_at + 4] = zlib.crc32(payloads[i]).to_bytes(4, "little")
            v[meta_at:meta_at + 4] = zlib.crc32(v[:meta_len]).to_bytes(4, "little")
    return fsize
