/* GF(2^16) region multiply-accumulate kernels (polynomial 0x1100b).
 *
 * Symbols are little-endian uint16 words. For a rows x cols coefficient
 * matrix C, gf16_matmul computes out_r[t] = XOR_c C[r][c] * in_c[t].
 * Tables are precomputed once per matrix with gf16_build_tables().
 */
#ifndef GF16_KERNELS_H
#define GF16_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define GF16_MAX_ROWS 32
#define GF16_MAX_COLS 32

/* Bytes of precomputed tables per coefficient for each kernel. */
#define GF16_NIBBLE_TABLE_BYTES 256   /* (low, high) x 4 nibble positions x 16, twice */
#define GF16_SCALAR_TABLE_WORDS 512   /* 2 x 256 uint16 */

enum gf16_kernel { GF16_KERNEL_SCALAR = 0, GF16_KERNEL_AVX2 = 1 };

uint16_t gf16_mul(uint16_t a, uint16_t b);

/* 1 when the CPU running us supports AVX2 (and the compiler could emit it). */
int gf16_cpu_has_avx2(void);

/* nibble: rows*cols*256 bytes (may be NULL); scalar: rows*cols*512 words. */
void gf16_build_tables(const uint16_t *coeffs, int rows, int cols,
                       uint8_t *nibble, uint16_t *scalar);

/* nbytes must be even. Outputs are overwritten, not accumulated into.
 * Returns 0, or -1 for an unknown kernel / bad shape. */
int gf16_matmul(int kernel, const uint16_t *coeffs, int rows, int cols,
                const uint8_t *nibble, const uint16_t *scalar,
                const uint8_t *const *inputs, uint8_t *const *outputs,
                size_t nbytes);

/* Encode one segment of len bytes: data payloads payloads[0..cols) get the
 * segment cut in bs-byte pieces (the last zero-padded), parity payloads
 * payloads[cols..cols+rows) get coeffs (rows x cols) times the data payloads.
 * With the AVX2 kernel, whole data pieces are copied by the kernel itself as
 * it reads them. bs must be even and len <= cols * bs; payloads must not
 * overlap data. Returns 0, or -1 for an unknown kernel / bad shape. */
int gf16_encode(int kernel, const uint16_t *coeffs, int rows, int cols,
                const uint8_t *nibble, const uint16_t *scalar,
                const uint8_t *data, size_t len, size_t bs,
                uint8_t *const *payloads);

#endif
