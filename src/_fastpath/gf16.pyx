# distutils: sources = src/_fastpath/gf16_kernels.c
# distutils: libraries = z
"""GF(2^16) region arithmetic (polynomial 0x1100b) over little-endian uint16 words.

``gf16_matmul(matrix, inputs, outputs)`` computes, for every output row r and
word t, ``out_r[t] = XOR_c matrix[r][c] * in_c[t]``. The AVX2 kernel (4-bit
split tables + byte shuffles) is used when the CPU has it, unless the
environment says ``STORAGE_NODE_GF16_KERNEL=scalar``; the portable scalar
kernel uses two 256-entry tables per coefficient. The GIL is released while
the kernel runs. ``encode_fragments`` does a whole erasure-coding encode
(split, parity, fragment headers and their CRC-32s) in one GIL-free call.
Twin: ``storage.pure.gf16``.
"""
import os

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy, memset

KERNEL_ENV = "STORAGE_NODE_GF16_KERNEL"

cdef int _HAS_AVX2 = gf16_cpu_has_avx2()


def available_kernels():
    """Names of the kernels this build and CPU can run, fastest first."""
    return ("avx2", "scalar") if _HAS_AVX2 else ("scalar",)


def _default_kernel():
    forced = os.environ.get(KERNEL_ENV, "")
    if forced:
        if forced not in available_kernels():
            raise ValueError(f"{KERNEL_ENV}={forced!r}: not one of {available_kernels()}")
        return forced
    return available_kernels()[0]


_KERNEL = _default_kernel()


def kernel_name():
    """The kernel gf16_matmul uses by default: 'avx2' or 'scalar'."""
    return _KERNEL


def cpu_features():
    """CPU features relevant to the kernels, as a dict of name -> bool."""
    return {"avx2": bool(_HAS_AVX2)}


def gf_mul(int a, int b):
    """Product of two field elements (0..65535)."""
    if not (0 <= a <= 0xffff and 0 <= b <= 0xffff):
        raise ValueError("field elements are 0..65535")
    return c_gf16_mul(<uint16_t>a, <uint16_t>b)


cdef class Gf16Matrix:
    """A coefficient matrix (rows x cols, values 0..65535) with its lookup
    tables precomputed once; reuse it for every region it multiplies."""

    def __init__(self, coeffs):
        rows = [list(map(int, row)) for row in coeffs]
        if not rows or not rows[0]:
            raise ValueError("coefficient matrix is empty")
        ncols = len(rows[0])
        if any(len(row) != ncols for row in rows):
            raise ValueError("coefficient matrix rows differ in length")
        if len(rows) > GF16_MAX_ROWS or ncols > GF16_MAX_COLS:
            raise ValueError(f"coefficient matrix larger than {GF16_MAX_ROWS}x{GF16_MAX_COLS}")
        flat = bytearray()
        for row in rows:
            for v in row:
                if not 0 <= v <= 0xffff:
                    raise ValueError(f"coefficient {v} outside 0..65535")
                flat += v.to_bytes(2, "little")
        self.rows = len(rows)
        self.cols = ncols
        self._coeffs = bytes(flat)
        n = self.rows * self.cols
        nibble = bytearray(n * GF16_NIBBLE_TABLE_BYTES)
        scalar = bytearray(n * GF16_SCALAR_TABLE_WORDS * 2)
        cdef const uint16_t *cp = <const uint16_t *><const char *>self._coeffs
        cdef uint8_t *np_ = <uint8_t *><char *>nibble
        cdef uint16_t *sp = <uint16_t *><char *>scalar
        gf16_build_tables(cp, self.rows, self.cols, np_, sp)
        self._nibble = bytes(nibble)
        self._scalar = bytes(scalar)

    def coefficients(self):
        """The matrix as a list of lists of ints."""
        cdef const uint16_t *cp = <const uint16_t *><const char *>self._coeffs
        return [[cp[r * self.cols + c] for c in range(self.cols)] for r in range(self.rows)]

    def __repr__(self):
        return f"Gf16Matrix({self.coefficients()!r})"


cdef int _kernel_id(kernel) except -1:
    name = _KERNEL if kernel is None else kernel
    if name == "avx2" and _HAS_AVX2:
        return GF16_KERNEL_AVX2
    if name == "scalar":
        return GF16_KERNEL_SCALAR
    raise ValueError(f"unknown or unavailable kernel {name!r}; have {available_kernels()}")


def gf16_matmul(matrix, inputs, outputs, kernel=None):
    """out_r[t] = XOR_c matrix[r][c] * in_c[t] over little-endian uint16 words.

    ``matrix``: a Gf16Matrix or a rows x cols sequence of ints (tables are
    then built for this call only). ``inputs``: cols bytes-like objects of
    one even length; ``outputs``: rows writable buffers of that length,
    overwritten. ``kernel``: None (the default one) or a name from
    available_kernels().
    """
    cdef Gf16Matrix mat = matrix if isinstance(matrix, Gf16Matrix) else Gf16Matrix(matrix)
    cdef int kern = _kernel_id(kernel)
    inputs = list(inputs)
    outputs = list(outputs)
    if len(inputs) != mat.cols:
        raise ValueError(f"matrix has {mat.cols} columns but {len(inputs)} inputs were given")
    if len(outputs) != mat.rows:
        raise ValueError(f"matrix has {mat.rows} rows but {len(outputs)} outputs were given")

    cdef Py_buffer in_views[GF16_MAX_COLS]
    cdef Py_buffer out_views[GF16_MAX_ROWS]
    cdef const uint8_t *in_ptrs[GF16_MAX_COLS]
    cdef uint8_t *out_ptrs[GF16_MAX_ROWS]
    cdef int n_in = 0, n_out = 0, i, rc, nrows, ncols
    cdef Py_ssize_t nbytes = -1
    cdef const uint16_t *cp = <const uint16_t *><const char *>mat._coeffs
    cdef const uint8_t *tn = <const uint8_t *><const char *>mat._nibble
    cdef const uint16_t *ts = <const uint16_t *><const char *>mat._scalar
    try:
        for i in range(mat.cols):
            PyObject_GetBuffer(inputs[i], &in_views[i], PyBUF_SIMPLE)
            n_in += 1
            if nbytes < 0:
                nbytes = in_views[i].len
            elif in_views[i].len != nbytes:
                raise ValueError(f"input {i} is {in_views[i].len} bytes, input 0 is {nbytes}")
            in_ptrs[i] = <const uint8_t *>in_views[i].buf
        for i in range(mat.rows):
            PyObject_GetBuffer(outputs[i], &out_views[i], PyBUF_SIMPLE | PyBUF_WRITABLE)
            n_out += 1
            if out_views[i].len != nbytes:
                raise ValueError(f"output {i} is {out_views[i].len} bytes, inputs are {nbytes}")
            out_ptrs[i] = <uint8_t *>out_views[i].buf
        if nbytes % 2:
            raise ValueError(f"regions are {nbytes} bytes: not a whole number of 16-bit words")
        nrows = mat.rows
        ncols = mat.cols
        with nogil:
            rc = c_gf16_matmul(kern, cp, nrows, ncols, tn, ts,
                             <const uint8_t *const *>in_ptrs, <uint8_t *const *>out_ptrs,
                             <size_t>nbytes)
        if rc != 0:
            raise ValueError("gf16 kernel rejected its arguments")
    finally:
        for i in range(n_in):
            PyBuffer_Release(&in_views[i])
        for i in range(n_out):
            PyBuffer_Release(&out_views[i])


def split_into(data, outputs):
    """Copy ``data`` (bytes-like) across ``outputs`` (writable buffers) in
    order: each output receives the next len(output) bytes, zero-filled past
    the end of data. Returns the number of data bytes copied. GIL released."""
    cdef Py_buffer src
    cdef Py_buffer dst
    cdef Py_ssize_t offset = 0, count
    PyObject_GetBuffer(data, &src, PyBUF_SIMPLE)
    try:
        for out in outputs:
            PyObject_GetBuffer(out, &dst, PyBUF_SIMPLE | PyBUF_WRITABLE)
            try:
                count = src.len - offset
                if count > dst.len:
                    count = dst.len
                if count < 0:
                    count = 0
                with nogil:
                    if count:
                        memcpy(dst.buf, <const char *>src.buf + offset, count)
                    if count < dst.len:
                        memset(<char *>dst.buf + count, 0, dst.len - count)
                offset += count
            finally:
                PyBuffer_Release(&dst)
    finally:
        PyBuffer_Release(&src)
    return offset


cdef inline void _put_le32(unsigned char *p, unsigned long v) noexcept nogil:
    p[0] = v & 0xff
    p[1] = (v >> 8) & 0xff
    p[2] = (v >> 16) & 0xff
    p[3] = (v >> 24) & 0xff


cdef inline unsigned long _crc32(const unsigned char *p, size_t n) noexcept nogil:
    # zlib's crc32 takes an unsigned int length: feed it at most 1 GiB at a time
    cdef unsigned long crc = 0
    cdef size_t step
    while True:
        step = n if n < (1 << 30) else (1 << 30)
        crc = crc32(crc, p, <unsigned int>step)
        p += step
        n -= step
        if n == 0:
            return crc


def encode_fragments(matrix, data, fragments, headers, Py_ssize_t blocksize,
                     payload_crc=None, kernel=None):
    """Erasure-code one segment into cols + rows fragments in one call, with
    the GIL released for all of the byte work.

    ``matrix``: a Gf16Matrix (rows x cols): the parity rows. ``data``: the
    segment (bytes-like), at most cols * blocksize bytes. ``headers``: a
    bytes-like of (cols + rows) * H bytes, H >= 0: fragment i starts with
    headers[i*H:(i+1)*H], followed by its blocksize-byte payload (data
    fragments: the segment cut in pieces, the last zero-padded; parity
    fragments: matrix times the data payloads). ``fragments``: cols + rows
    writable buffers of at least H + blocksize bytes. ``payload_crc``: None,
    or (crc_offset, meta_len, meta_crc_offset): in each fragment's header,
    store the CRC-32 (zlib) of its payload as a little-endian u32 at
    crc_offset, then the CRC-32 of the header's first meta_len bytes at
    meta_crc_offset. Nothing is written unless every argument is valid
    (ValueError; a read-only fragment raises BufferError). ``data`` must not
    overlap the fragments. Returns H + blocksize, the bytes written at the
    start of each fragment.
    """
    if not isinstance(matrix, Gf16Matrix):
        raise ValueError("encode_fragments needs a Gf16Matrix")
    cdef Gf16Matrix mat = matrix
    cdef int kern = _kernel_id(kernel)
    if type(fragments) is not list and type(fragments) is not tuple:
        fragments = list(fragments)
    cdef int nfrags = mat.rows + mat.cols
    if len(fragments) != nfrags:
        raise ValueError(f"need {nfrags} fragments, got {len(fragments)}")
    if blocksize < 0 or blocksize % 2:
        raise ValueError(f"blocksize {blocksize} is not an even number of bytes")
    cdef Py_ssize_t crc_at = -1, meta_len = 0, meta_at = 0
    if payload_crc is not None:
        crc_at, meta_len, meta_at = payload_crc

    cdef Py_buffer src, hdrs
    cdef Py_buffer views[GF16_MAX_ROWS + GF16_MAX_COLS]
    cdef uint8_t *frag[GF16_MAX_ROWS + GF16_MAX_COLS]
    cdef uint8_t *payloads[GF16_MAX_ROWS + GF16_MAX_COLS]
    cdef int n_views = 0, i, rc = 0, nrows = mat.rows, ncols = mat.cols
    cdef Py_ssize_t hsize, fsize
    cdef const uint16_t *cp = <const uint16_t *><const char *>mat._coeffs
    cdef const uint8_t *tn = <const uint8_t *><const char *>mat._nibble
    cdef const uint16_t *ts = <const uint16_t *><const char *>mat._scalar
    cdef const unsigned char *hp
    cdef unsigned char *h
    cdef bint got_src = False, got_hdrs = False
    try:
        PyObject_GetBuffer(headers, &hdrs, PyBUF_SIMPLE)
        got_hdrs = True
        if hdrs.len % nfrags:
            raise ValueError(f"headers are {hdrs.len} bytes, not a multiple of {nfrags}")
        hsize = hdrs.len // nfrags
        fsize = hsize + blocksize
        if payload_crc is not None and not (0 <= crc_at <= hsize - 4 and 0 <= meta_len <= hsize
                                            and 0 <= meta_at <= hsize - 4):
            raise ValueError(f"payload_crc {payload_crc!r} does not fit {hsize}-byte headers")
        PyObject_GetBuffer(data, &src, PyBUF_SIMPLE)
        got_src = True
        if src.len > ncols * blocksize:
            raise ValueError(f"segment is {src.len} bytes, more than {ncols} x {blocksize}")
        for i in range(nfrags):
            PyObject_GetBuffer(fragments[i], &views[i], PyBUF_SIMPLE | PyBUF_WRITABLE)
            n_views += 1
            if views[i].len < fsize:
                raise ValueError(f"fragment buffer {i} is {views[i].len} bytes, need {fsize}")
            frag[i] = <uint8_t *>views[i].buf
            payloads[i] = frag[i] + hsize
        hp = <const unsigned char *>hdrs.buf
        with nogil:
            rc = c_gf16_encode(kern, cp, nrows, ncols, tn, ts, <const uint8_t *>src.buf,
                               <size_t>src.len, <size_t>blocksize, payloads)
            if rc == 0:
                for i in range(nfrags):
                    h = <unsigned char *>frag[i]
                    memcpy(h, hp + i * hsize, hsize)
                    if crc_at >= 0:
                        _put_le32(h + crc_at, _crc32(payloads[i], <size_t>blocksize))
                        _put_le32(h + meta_at, _crc32(h, <size_t>meta_len))
        if rc != 0:
            raise ValueError("gf16 kernel rejected its arguments")
    finally:
        for i in range(n_views):
            PyBuffer_Release(&views[i])
        if got_src:
            PyBuffer_Release(&src)
        if got_hdrs:
            PyBuffer_Release(&hdrs)
    return fsize
