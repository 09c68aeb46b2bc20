"""Pure-Python (numpy) twin of ``_fastpath.gf16``: same names, signatures and
exceptions; the arithmetic is the log/antilog reference in storage.ec.gf."""
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
