# Declarations shared with other _fastpath modules that want to hash with the
# same MD5 object (cimport _fastpath.streamio).
from cpython.pythread cimport PyThread_type_lock

from _fastpath.md5mb cimport md5mb_state


cdef extern from "<openssl/evp.h>" nogil:
    ctypedef struct EVP_MD_CTX:
        pass
    ctypedef struct EVP_MD:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_MD_CTX *EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX *ctx)
    const EVP_MD *EVP_md5()
    int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *md, ENGINE *impl)
    int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *data, size_t count)
    int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *out, unsigned int *size)
    int EVP_MD_CTX_copy_ex(EVP_MD_CTX *out, const EVP_MD_CTX *inp)


cdef enum:
    # Below this many bytes, hashing under the GIL is cheaper than dropping it.
    GIL_MINSIZE = 2048
    MD5_DIGEST_SIZE = 16
    MD5_BLOCK_SIZE = 64
    # pump() statuses
    PUMP_AGAIN = 0
    PUMP_LIMIT = 1
    PUMP_EOF = 2


cdef class Md5:
    # OpenSSL's context with STORAGE_NODE_MD5=openssl, else NULL and the
    # md5mb state is used
    cdef EVP_MD_CTX *ctx
    cdef md5mb_state state
    # Held while the context is used without the GIL, so that two threads
    # updating the same object serialize instead of corrupting it (as hashlib).
    cdef PyThread_type_lock lock

    cdef int _acquire(self) except -1
    cdef void _release(self) noexcept


# Hash n bytes at p into an Md5's OpenSSL context (ctx), or when ctx is NULL
# into its md5mb state: 1 on success, 0 on failure (OpenSSL only). Needs no
# GIL; the caller holds the Md5's lock (_acquire) for the whole update.
cdef int _md5_update(EVP_MD_CTX *ctx, md5mb_state *state, const void *p,
                     size_t n) noexcept nogil

# A writable, contiguous, non-empty view of buf, in bytes (TypeError or ValueError
# otherwise): the check of every caller-owned buffer (pump, hash_file, transfer).
cdef object _byte_view(buf)
