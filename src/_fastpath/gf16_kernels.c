/* GF(2^16) region kernels: a portable scalar kernel with two 256-entry
 * tables per coefficient, and an AVX2 kernel with 4-bit split tables used
 * through byte shuffles (vpshufb), chosen at run time.
 *
 * Why split tables: a product c*x is linear in x over GF(2), so
 * c*x = c*n0 ^ c*(n1<<4) ^ c*(n2<<8) ^ c*(n3<<12) for the four nibbles of x.
 * Each term takes one of 16 values: a 16-byte table per result byte, which
 * is exactly what vpshufb looks up, 32 lanes at a time.
 */
#include <string.h>
#include "gf16_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define GF16_X86 1
#include <immintrin.h>
#endif

#define GF16_POLY 0x1100bu

uint16_t gf16_mul(uint16_t a, uint16_t b)
{
    uint32_t acc = 0, x = a;
    while (b) {
        if (b & 1)
            acc ^= x;
        b >>= 1;
        x <<= 1;
        if (x & 0x10000u)
            x ^= GF16_POLY;
    }
    return (uint16_t)acc;
}

int gf16_cpu_has_avx2(void)
{
#if GF16_X86 && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

void gf16_build_tables(const uint16_t *coeffs, int rows, int cols,
                       uint8_t *nibble, uint16_t *scalar)
{
    for (int i = 0; i < rows * cols; i++) {
        uint16_t c = coeffs[i];
        if (nibble) {
            uint8_t *t = nibble + (size_t)i * GF16_NIBBLE_TABLE_BYTES;
            for (int pos = 0; pos < 4; pos++) {
                for (int n = 0; n < 16; n++) {
                    uint16_t p = gf16_mul(c, (uint16_t)(n << (4 * pos)));
                    /* low result bytes, then high; each table twice (one copy per AVX2 lane) */
                    t[pos * 32 + n] = t[pos * 32 + 16 + n] = (uint8_t)(p & 0xff);
                    t[128 + pos * 32 + n] = t[128 + pos * 32 + 16 + n] = (uint8_t)(p >> 8);
                }
            }
        }
        if (scalar) {
            uint16_t *t = scalar + (size_t)i * GF16_SCALAR_TABLE_WORDS;
            for (int b = 0; b < 256; b++) {
                t[b] = gf16_mul(c, (uint16_t)b);
                t[256 + b] = gf16_mul(c, (uint16_t)(b << 8));
            }
        }
    }
}

/* ---- scalar kernel ------------------------------------------------------ */

/* Work on blocks so the output block stays in L1 while every input passes. */
#define GF16_SCALAR_BLOCK 4096

static inline uint16_t load_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline void store_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void scalar_range(const uint16_t *coeffs, int rows, int cols,
                         const uint16_t *tables,
                         const uint8_t *const *in, uint8_t *const *out,
                         size_t start, size_t end)
{
    for (size_t blk = start; blk < end; blk += GF16_SCALAR_BLOCK) {
        size_t stop = blk + GF16_SCALAR_BLOCK < end ? blk + GF16_SCALAR_BLOCK : end;
        for (int r = 0; r < rows; r++) {
            uint8_t *o = out[r];
            memset(o + blk, 0, stop - blk);
            for (int c = 0; c < cols; c++) {
                uint16_t coef = coeffs[r * cols + c];
                const uint8_t *x = in[c];
                if (coef == 0)
                    continue;
                if (coef == 1) {
                    for (size_t t = blk; t < stop; t++)
                        o[t] ^= x[t];
                    continue;
                }
                const uint16_t *tl = tables + (size_t)(r * cols + c) * GF16_SCALAR_TABLE_WORDS;
                const uint16_t *th = tl + 256;
                for (size_t t = blk; t < stop; t += 2) {
                    uint16_t v = load_le16(o + t) ^ tl[x[t]] ^ th[x[t + 1]];
                    store_le16(o + t, v);
                }
            }
        }
    }
}

/* ---- AVX2 kernel -------------------------------------------------------- */
#if GF16_X86 && defined(__GNUC__)

/* Up to this many output rows are accumulated in registers at once. */
#define GF16_AVX2_GROUP 4

/* One group of NR output rows (NR a compile-time constant at each call site,
 * so the accumulators live in registers), over bytes [start, end). */
__attribute__((target("avx2"), always_inline))
static inline void avx2_group(const int NR, const uint16_t *coeffs, int r0, int cols,
                              const uint8_t *tables,
                              const uint8_t *const *in, uint8_t *const *out,
                              uint8_t *const *copy, size_t start, size_t end)
{
    /* Per 128-bit lane: even bytes (word low bytes) first, then odd bytes. */
    const __m256i split = _mm256_setr_epi8(
        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i mask = _mm256_set1_epi8(0x0f);

    for (size_t t = start; t < end; t += 64) {
        __m256i acc_lo[GF16_AVX2_GROUP], acc_hi[GF16_AVX2_GROUP];
        for (int g = 0; g < NR; g++) {
            acc_lo[g] = _mm256_setzero_si256();
            acc_hi[g] = _mm256_setzero_si256();
        }
        for (int c = 0; c < cols; c++) {
            __m256i a = _mm256_loadu_si256((const __m256i *)(in[c] + t));
            __m256i b = _mm256_loadu_si256((const __m256i *)(in[c] + t + 32));
            if (copy && copy[c]) {
                /* encode: the data fragment is written from the loaded bytes */
                _mm256_storeu_si256((__m256i *)(copy[c] + t), a);
                _mm256_storeu_si256((__m256i *)(copy[c] + t + 32), b);
            }
            a = _mm256_shuffle_epi8(a, split);
            b = _mm256_shuffle_epi8(b, split);
            /* lo: low bytes of 32 words, hi: their high bytes (same order). */
            __m256i lo = _mm256_unpacklo_epi64(a, b);
            __m256i hi = _mm256_unpackhi_epi64(a, b);
            __m256i n0 = _mm256_and_si256(lo, mask);
            __m256i n1 = _mm256_and_si256(_mm256_srli_epi16(lo, 4), mask);
            __m256i n2 = _mm256_and_si256(hi, mask);
            __m256i n3 = _mm256_and_si256(_mm256_srli_epi16(hi, 4), mask);
            for (int g = 0; g < NR; g++) {
                int r = r0 + g;
                uint16_t coef = coeffs[r * cols + c];
                if (coef == 1) {
                    acc_lo[g] = _mm256_xor_si256(acc_lo[g], lo);
                    acc_hi[g] = _mm256_xor_si256(acc_hi[g], hi);
                } else if (coef != 0) {
                    const __m256i *tb = (const __m256i *)(tables + (size_t)(r * cols + c) * GF16_NIBBLE_TABLE_BYTES);
                    /* tables hold each 16-byte table twice (one per lane) */
                    __m256i xl = _mm256_xor_si256(
                        _mm256_xor_si256(_mm256_shuffle_epi8(_mm256_loadu_si256(tb + 0), n0),
                                         _mm256_shuffle_epi8(_mm256_loadu_si256(tb + 1), n1)),
                        _mm256_xor_si256(_mm256_shuffle_epi8(_mm256_loadu_si256(tb + 2), n2),
                                         _mm256_shuffle_epi8(_mm256_loadu_si256(tb + 3), n3)));
                    __m256i xh = _mm256_xor_si256(
                        _mm256_xor_si256(_mm256_shuffle_epi8(_mm256_loadu_si256(tb + 4), n0),
                                         _mm256_shuffle_epi8(_mm256_loadu_si256(tb + 5), n1)),
                        _mm256_xor_si256(_mm256_shuffle_epi8(_mm256_loadu_si256(tb + 6), n2),
                                         _mm256_shuffle_epi8(_mm256_loadu_si256(tb + 7), n3)));
                    acc_lo[g] = _mm256_xor_si256(acc_lo[g], xl);
                    acc_hi[g] = _mm256_xor_si256(acc_hi[g], xh);
                }
            }
        }
        for (int g = 0; g < NR; g++) {
            /* Re-interleave: the lane order of lo/hi matches a, then b. */
            _mm256_storeu_si256((__m256i *)(out[r0 + g] + t),
                                _mm256_unpacklo_epi8(acc_lo[g], acc_hi[g]));
            _mm256_storeu_si256((__m256i *)(out[r0 + g] + t + 32),
                                _mm256_unpackhi_epi8(acc_lo[g], acc_hi[g]));
        }
    }
}

/* Cache blocking: each pass over a block touches cols inputs and <= 4 outputs. */
#define GF16_AVX2_BLOCK 8192

/* copy: NULL, or per input column NULL or a region that receives a copy of
 * that input (written by the first group of rows only). */
__attribute__((target("avx2")))
static void avx2_range(const uint16_t *coeffs, int rows, int cols,
                       const uint8_t *tables,
                       const uint8_t *const *in, uint8_t *const *out,
                       uint8_t *const *copy, size_t start, size_t end)
{
    for (size_t blk = start; blk < end; blk += GF16_AVX2_BLOCK) {
        size_t stop = blk + GF16_AVX2_BLOCK < end ? blk + GF16_AVX2_BLOCK : end;
        for (int r0 = 0; r0 < rows; r0 += GF16_AVX2_GROUP) {
            uint8_t *const *cp = r0 == 0 ? copy : NULL;
            switch (rows - r0) {
            case 1: avx2_group(1, coeffs, r0, cols, tables, in, out, cp, blk, stop); break;
            case 2: avx2_group(2, coeffs, r0, cols, tables, in, out, cp, blk, stop); break;
            case 3: avx2_group(3, coeffs, r0, cols, tables, in, out, cp, blk, stop); break;
            default: avx2_group(4, coeffs, r0, cols, tables, in, out, cp, blk, stop); break;
            }
        }
    }
}
#endif

int gf16_matmul(int kernel, const uint16_t *coeffs, int rows, int cols,
                const uint8_t *nibble, const uint16_t *scalar,
                const uint8_t *const *inputs, uint8_t *const *outputs,
                size_t nbytes)
{
    if (rows < 0 || cols < 0 || rows > GF16_MAX_ROWS || cols > GF16_MAX_COLS || (nbytes & 1))
        return -1;
    if (scalar == NULL)
        return -1;
    size_t done = 0;
    if (kernel == GF16_KERNEL_AVX2) {
#if GF16_X86 && defined(__GNUC__)
        if (nibble == NULL)
            return -1;
        done = nbytes & ~(size_t)63;
        if (done)
            avx2_range(coeffs, rows, cols, nibble, inputs, outputs, NULL, 0, done);
#else
        return -1;
#endif
    } else if (kernel != GF16_KERNEL_SCALAR) {
        return -1;
    }
    if (done < nbytes)
        scalar_range(coeffs, rows, cols, scalar, inputs, outputs, done, nbytes);
    return 0;
}

int gf16_encode(int kernel, const uint16_t *coeffs, int rows, int cols,
                const uint8_t *nibble, const uint16_t *scalar,
                const uint8_t *data, size_t len, size_t bs,
                uint8_t *const *payloads)
{
    if (rows < 1 || cols < 1 || rows > GF16_MAX_ROWS || cols > GF16_MAX_COLS || (bs & 1)
        || len > (size_t)cols * bs || scalar == NULL)
        return -1;
    if (kernel == GF16_KERNEL_AVX2) {
#if GF16_X86 && defined(__GNUC__)
        if (nibble == NULL)
            return -1;
#else
        return -1;
#endif
    } else if (kernel != GF16_KERNEL_SCALAR) {
        return -1;
    }
    const uint8_t *in[GF16_MAX_COLS];
    uint8_t *copy[GF16_MAX_COLS];
    size_t fused = kernel == GF16_KERNEL_AVX2 ? bs & ~(size_t)63 : 0;
    for (int c = 0; c < cols; c++) {
        size_t lo = (size_t)c * bs;
        if (lo + bs <= len && fused) {
            /* whole fragment in the segment: read it there, the kernel writes
             * the copy as it goes (one pass over the data, not two) */
            in[c] = data + lo;
            copy[c] = payloads[c];
            memcpy(payloads[c] + fused, data + lo + fused, bs - fused);
        } else {
            /* the last, zero-padded fragment (or no fused pass): copy first */
            size_t count = len > lo ? len - lo : 0;
            if (count > bs)
                count = bs;
            if (count)
                memcpy(payloads[c], data + lo, count);
            memset(payloads[c] + count, 0, bs - count);
            in[c] = payloads[c];
            copy[c] = NULL;
        }
    }
    uint8_t *const *out = payloads + cols;
#if GF16_X86 && defined(__GNUC__)
    if (fused)
        avx2_range(coeffs, rows, cols, nibble, in, out, copy, 0, fused);
#endif
    if (fused < bs)
        scalar_range(coeffs, rows, cols, scalar, in, out, fused, bs);
    return 0;
}
