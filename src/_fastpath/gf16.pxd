from libc.stdint cimport uint8_t, uint16_t


cdef extern from "gf16_kernels.h" nogil:
    enum:
        GF16_MAX_ROWS
        GF16_MAX_COLS
        GF16_NIBBLE_TABLE_BYTES
        GF16_SCALAR_TABLE_WORDS
        GF16_KERNEL_SCALAR
        GF16_KERNEL_AVX2
    uint16_t c_gf16_mul "gf16_mul"(uint16_t a, uint16_t b)
    int gf16_cpu_has_avx2()
    void gf16_build_tables(const uint16_t *coeffs, int rows, int cols,
                           uint8_t *nibble, uint16_t *scalar)
    int c_gf16_matmul "gf16_matmul"(int kernel, const uint16_t *coeffs, int rows, int cols,
                    const uint8_t *nibble, const uint16_t *scalar,
                    const uint8_t *const *inputs, uint8_t *const *outputs,
                    size_t nbytes)
    int c_gf16_encode "gf16_encode"(int kernel, const uint16_t *coeffs, int rows, int cols,
                    const uint8_t *nibble, const uint16_t *scalar,
                    const uint8_t *data, size_t len, size_t bs,
                    uint8_t *const *payloads)


cdef extern from "zlib.h" nogil:
    unsigned long crc32(unsigned long crc, const unsigned char *buf, unsigned int len)


cdef class Gf16Matrix:
    cdef readonly int rows
    cdef readonly int cols
    cdef bytes _coeffs      # rows*cols little-endian uint16
    cdef bytes _nibble      # AVX2 split tables
    cdef bytes _scalar      # scalar 256-entry tables
