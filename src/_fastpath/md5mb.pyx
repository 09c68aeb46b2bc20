# distutils: sources = src/_fastpath/md5mb_kernels.c src/_fastpath/md5mb_engine.c
"""Multi-buffer MD5: several streams hashed at once by one core.

MD5 is sequential within a stream, but the uploads of a worker are hashed by
several threads at the same time. Their whole 64-byte blocks go through one
process-wide engine (md5mb_engine.c) that runs 8 streams per SIMD kernel call:
AVX-512VL (native rotates and three-input logic) or AVX2, or the portable
scalar kernel if the CPU has neither, or if the environment says
``STORAGE_NODE_MD5_KERNEL=scalar`` (or ``avx2`` / ``avx512`` to force one).
``Md5`` has the surface of ``hashlib.md5()``. Twin: ``storage.pure.md5mb``.
"""
import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.pythread cimport (
    NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock, PyThread_allocate_lock,
    PyThread_free_lock, PyThread_release_lock,
)
from libc.string cimport memcpy

KERNEL_ENV = "STORAGE_NODE_MD5_KERNEL"
_NAMES = {MD5MB_KERNEL_SCALAR: "scalar", MD5MB_KERNEL_AVX2: "avx2",
          MD5MB_KERNEL_AVX512: "avx512"}
_IDS = {name: kid for kid, name in _NAMES.items()}

cdef int _cpu = md5mb_cpu_kernels()
# The kernel of every update in the process; read without the GIL.
cdef int _kernel = MD5MB_KERNEL_SCALAR


def available_kernels():
    """Names of the kernels this build and CPU can run, fastest first."""
    order = (MD5MB_KERNEL_AVX512, MD5MB_KERNEL_AVX2, MD5MB_KERNEL_SCALAR)
    return tuple(_NAMES[k] for k in order if _cpu & (1 << k))


cdef int _kernel_id(name) except -1:
    if name not in available_kernels():
        raise ValueError(f"MD5 kernel {name!r}: not one of {available_kernels()}")
    return _IDS[name]


def _set_kernel(name):
    """Switch the kernel of the whole process (for tests and benchmarks);
    ValueError unless ``name`` is in available_kernels()."""
    global _kernel
    _kernel = _kernel_id(name)


def kernel():
    """The kernel updates use: 'avx512', 'avx2' (8 lanes) or 'scalar'."""
    return _NAMES[_kernel]


def _init_kernel():
    forced = os.environ.get(KERNEL_ENV, "")
    try:
        _set_kernel(forced or available_kernels()[0])
    except ValueError as exc:
        raise ValueError(f"{KERNEL_ENV}={forced!r}: {exc}") from None


_init_kernel()


def engine_stats():
    """Batches the engine of this process ran, by busy lanes: a tuple of 9
    counts (index 1 = one stream, hashed with the scalar kernel)."""
    cdef uint64_t out[MD5MB_LANES + 1]
    md5mb_engine_stats(out)
    return tuple(out[i] for i in range(MD5MB_LANES + 1))


cdef void state_init(md5mb_state *s) noexcept nogil:
    md5mb_init(s)


cdef void state_digest(const md5mb_state *s, uint8_t *out) noexcept nogil:
    md5mb_digest(s, out)


cdef void state_update(md5mb_state *s, const void *p, size_t n) noexcept nogil:
    cdef const uint8_t *q = <const uint8_t *>p
    cdef size_t nblocks
    cdef int k = _kernel
    if k == MD5MB_KERNEL_SCALAR or n < ENGINE_MINSIZE:
        md5mb_update_scalar(s, q, n)
        return
    nblocks = md5mb_update_begin(s, &q, &n)
    if md5mb_engine_blocks(k, s.h, q, nblocks) != 0:
        md5mb_blocks_scalar(s.h, q, nblocks)  # the engine could not start
    md5mb_update_end(s, nblocks, q, n)


cdef class Md5:
    """MD5 with the surface of ``hashlib.md5()``, hashed through the engine.

    ``update`` accepts any bytes-like object and releases the GIL for inputs
    of at least 2 KiB.
    """

    def __cinit__(self):
        self.lock = PyThread_allocate_lock()
        if self.lock == NULL:
            raise MemoryError()
        md5mb_init(&self.state)

    def __init__(self, data=b""):
        self.update(data)

    def __dealloc__(self):
        if self.lock != NULL:
            PyThread_free_lock(self.lock)

    cdef int _acquire(self) except -1:
        if not PyThread_acquire_lock(self.lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self.lock, WAIT_LOCK)
        return 0

    cdef void _release(self) noexcept:
        PyThread_release_lock(self.lock)

    @property
    def name(self):
        return "md5"

    @property
    def digest_size(self):
        return MD5MB_DIGEST

    @property
    def block_size(self):
        return MD5MB_BLOCK

    def update(self, data):
        """Hash the bytes of ``data`` (any bytes-like object)."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._acquire()
            try:
                if view.len >= MD5MB_GIL_MINSIZE:
                    with nogil:
                        state_update(&self.state, view.buf, <size_t>view.len)
                else:
                    state_update(&self.state, view.buf, <size_t>view.len)
            finally:
                self._release()
        finally:
            PyBuffer_Release(&view)

    def digest(self):
        """The 16-byte digest of the bytes so far (the object stays usable)."""
        cdef uint8_t out[MD5MB_DIGEST]
        self._acquire()
        try:
            md5mb_digest(&self.state, out)
        finally:
            self._release()
        return PyBytes_FromStringAndSize(<char *>out, MD5MB_DIGEST)

    def hexdigest(self):
        """The digest as 32 lower-case hex digits, like hashlib."""
        return self.digest().hex()

    def copy(self):
        """An independent Md5 with the same state."""
        cdef Md5 other = Md5.__new__(Md5)
        self._acquire()
        try:
            memcpy(&other.state, &self.state, sizeof(md5mb_state))
        finally:
            self._release()
        return other


def md5_many(messages):
    """The 16-byte MD5 digests of a sequence of bytes-like messages, hashed
    side by side through the lanes of the current kernel on this thread."""
    cdef Py_ssize_t n = len(messages), i, got = 0
    cdef Py_buffer *views = <Py_buffer *>PyMem_Calloc(n or 1, sizeof(Py_buffer))
    cdef md5mb_state *states = <md5mb_state *>PyMem_Calloc(n or 1, sizeof(md5mb_state))
    cdef uint32_t *h = <uint32_t *>PyMem_Calloc(n or 1, 4 * sizeof(uint32_t))
    cdef const uint8_t **ptrs = <const uint8_t **>PyMem_Calloc(n or 1, sizeof(void *))
    cdef size_t *lens = <size_t *>PyMem_Calloc(n or 1, sizeof(size_t))
    cdef size_t *nblocks = <size_t *>PyMem_Calloc(n or 1, sizeof(size_t))
    cdef uint8_t out[MD5MB_DIGEST]
    cdef int k = _kernel, rc = 0
    try:
        if not (views and states and h and ptrs and lens and nblocks):
            raise MemoryError()
        for i in range(n):
            PyObject_GetBuffer(messages[i], &views[i], PyBUF_SIMPLE)
            got += 1
        with nogil:
            for i in range(n):
                md5mb_init(&states[i])
                ptrs[i] = <const uint8_t *>views[i].buf
                lens[i] = <size_t>views[i].len
                nblocks[i] = md5mb_update_begin(&states[i], &ptrs[i], &lens[i])
                memcpy(&h[4 * i], states[i].h, sizeof(states[i].h))
            if k == MD5MB_KERNEL_SCALAR:
                for i in range(n):
                    md5mb_blocks_scalar(&h[4 * i], ptrs[i], nblocks[i])
            else:
                rc = md5mb_run_lanes(k, h, ptrs, nblocks, <size_t>n)
            for i in range(n):
                memcpy(states[i].h, &h[4 * i], sizeof(states[i].h))
                md5mb_update_end(&states[i], nblocks[i], ptrs[i], lens[i])
        if rc != 0:
            raise MemoryError()
        result = []
        for i in range(n):
            md5mb_digest(&states[i], out)
            result.append(PyBytes_FromStringAndSize(<char *>out, MD5MB_DIGEST))
        return result
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)
        PyMem_Free(states)
        PyMem_Free(h)
        PyMem_Free(ptrs)
        PyMem_Free(lens)
        PyMem_Free(nblocks)
