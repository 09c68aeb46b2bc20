# Declarations of the multi-buffer MD5 for other _fastpath modules
# (cimport _fastpath.md5mb): the C state and the GIL-free update that goes
# through the process-wide 8-lane engine.
from cpython.pythread cimport PyThread_type_lock
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from "md5mb_kernels.h" nogil:
    enum:
        MD5MB_BLOCK
        MD5MB_DIGEST
        MD5MB_LANES
        MD5MB_KERNEL_SCALAR
        MD5MB_KERNEL_AVX2
        MD5MB_KERNEL_AVX512
    ctypedef struct md5mb_state:
        uint32_t h[4]
        uint64_t length
        uint8_t tail[64]
    int md5mb_cpu_kernels()
    void md5mb_init(md5mb_state *s)
    void md5mb_blocks_scalar(uint32_t *h, const uint8_t *p, size_t nblocks)
    void md5mb_update_scalar(md5mb_state *s, const uint8_t *p, size_t len)
    size_t md5mb_update_begin(md5mb_state *s, const uint8_t **p, size_t *len)
    void md5mb_update_end(md5mb_state *s, size_t nblocks, const uint8_t *p, size_t len)
    void md5mb_digest(const md5mb_state *s, uint8_t *out)


cdef extern from "md5mb_engine.h" nogil:
    enum:
        MD5MB_SLICE_BLOCKS
    int md5mb_engine_blocks(int kernel, uint32_t *h, const uint8_t *p, size_t nblocks)
    int md5mb_run_lanes(int kernel, uint32_t *h, const uint8_t *const *ptrs,
                        const size_t *nblocks, size_t n)
    void md5mb_engine_stats(uint64_t *out)


cdef enum:
    # Updates shorter than this are hashed by the calling thread alone: the
    # engine's hand-offs cost more than the blocks.
    ENGINE_MINSIZE = 4096
    # Below this many bytes, hashing under the GIL is cheaper than dropping it.
    MD5MB_GIL_MINSIZE = 2048


# md5mb_init / md5mb_digest for modules that cannot link md5mb_kernels.c.
cdef void state_init(md5mb_state *s) noexcept nogil
cdef void state_digest(const md5mb_state *s, uint8_t *out) noexcept nogil

# Hash n bytes at p into s: through the engine when the process kernel is an
# 8-lane one and n >= ENGINE_MINSIZE, else with the scalar kernel. Cannot
# fail. Call without the GIL for large n (it may wait for other threads).
cdef void state_update(md5mb_state *s, const void *p, size_t n) noexcept nogil


cdef class Md5:
    cdef md5mb_state state
    # Held while the state is used without the GIL, so that two threads
    # updating the same object serialize instead of corrupting it (as hashlib).
    cdef PyThread_type_lock lock

    cdef int _acquire(self) except -1
    cdef void _release(self) noexcept
