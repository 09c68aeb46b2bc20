/* MD5 (RFC 1321) block kernels: portable scalar, and AVX2 over 8 streams.
 *
 * The 8-lane kernel keeps lane i of each of the four 256-bit registers
 * A, B, C, D for stream i. Per block it loads 64 bytes from each stream and
 * transposes them (two 8x8 transposes of 32-bit words) so that register W[j]
 * holds message word j of all 8 streams; then the 64 MD5 steps are the scalar
 * steps done lane-wise. AVX2 has no 32-bit rotate: rotl(x, s) is
 * (x << s) | (x >> (32 - s)).
 */
#include <string.h>
#include "md5mb_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define MD5MB_X86 1
#include <immintrin.h>
#endif

static const uint32_t K[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu,
    0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u,
    0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu,
    0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u,
    0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau,
    0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu,
    0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au,
    0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu,
    0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u,
    0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u,
    0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u,
    0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u,
    0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

int md5mb_cpu_kernels(void)
{
    int mask = 1 << MD5MB_KERNEL_SCALAR;
#if MD5MB_X86 && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        mask |= 1 << MD5MB_KERNEL_AVX2;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
        mask |= 1 << MD5MB_KERNEL_AVX512;
#endif
    return mask;
}

void md5mb_init(md5mb_state *s)
{
    s->h[0] = 0x67452301u;
    s->h[1] = 0xefcdab89u;
    s->h[2] = 0x98badcfeu;
    s->h[3] = 0x10325476u;
    s->length = 0;
    memset(s->tail, 0, sizeof s->tail);
}

/* ------------------------------------------------------------------ scalar */

/* The 64 steps: (function, rotating registers, step i for K[i], message
 * word j, rotation s). */
#define MD5_64_STEPS(STEP, F, G, H, I) \
    do { \
    STEP(F, a, b, c, d, 0, 0, 7);   STEP(F, d, a, b, c, 1, 1, 12); \
    STEP(F, c, d, a, b, 2, 2, 17);  STEP(F, b, c, d, a, 3, 3, 22); \
    STEP(F, a, b, c, d, 4, 4, 7);   STEP(F, d, a, b, c, 5, 5, 12); \
    STEP(F, c, d, a, b, 6, 6, 17);  STEP(F, b, c, d, a, 7, 7, 22); \
    STEP(F, a, b, c, d, 8, 8, 7);   STEP(F, d, a, b, c, 9, 9, 12); \
    STEP(F, c, d, a, b, 10, 10, 17); STEP(F, b, c, d, a, 11, 11, 22); \
    STEP(F, a, b, c, d, 12, 12, 7);  STEP(F, d, a, b, c, 13, 13, 12); \
    STEP(F, c, d, a, b, 14, 14, 17); STEP(F, b, c, d, a, 15, 15, 22); \
    STEP(G, a, b, c, d, 16, 1, 5);   STEP(G, d, a, b, c, 17, 6, 9); \
    STEP(G, c, d, a, b, 18, 11, 14); STEP(G, b, c, d, a, 19, 0, 20); \
    STEP(G, a, b, c, d, 20, 5, 5);   STEP(G, d, a, b, c, 21, 10, 9); \
    STEP(G, c, d, a, b, 22, 15, 14); STEP(G, b, c, d, a, 23, 4, 20); \
    STEP(G, a, b, c, d, 24, 9, 5);   STEP(G, d, a, b, c, 25, 14, 9); \
    STEP(G, c, d, a, b, 26, 3, 14);  STEP(G, b, c, d, a, 27, 8, 20); \
    STEP(G, a, b, c, d, 28, 13, 5);  STEP(G, d, a, b, c, 29, 2, 9); \
    STEP(G, c, d, a, b, 30, 7, 14);  STEP(G, b, c, d, a, 31, 12, 20); \
    STEP(H, a, b, c, d, 32, 5, 4);   STEP(H, d, a, b, c, 33, 8, 11); \
    STEP(H, c, d, a, b, 34, 11, 16); STEP(H, b, c, d, a, 35, 14, 23); \
    STEP(H, a, b, c, d, 36, 1, 4);   STEP(H, d, a, b, c, 37, 4, 11); \
    STEP(H, c, d, a, b, 38, 7, 16);  STEP(H, b, c, d, a, 39, 10, 23); \
    STEP(H, a, b, c, d, 40, 13, 4);  STEP(H, d, a, b, c, 41, 0, 11); \
    STEP(H, c, d, a, b, 42, 3, 16);  STEP(H, b, c, d, a, 43, 6, 23); \
    STEP(H, a, b, c, d, 44, 9, 4);   STEP(H, d, a, b, c, 45, 12, 11); \
    STEP(H, c, d, a, b, 46, 15, 16); STEP(H, b, c, d, a, 47, 2, 23); \
    STEP(I, a, b, c, d, 48, 0, 6);   STEP(I, d, a, b, c, 49, 7, 10); \
    STEP(I, c, d, a, b, 50, 14, 15); STEP(I, b, c, d, a, 51, 5, 21); \
    STEP(I, a, b, c, d, 52, 12, 6);  STEP(I, d, a, b, c, 53, 3, 10); \
    STEP(I, c, d, a, b, 54, 10, 15); STEP(I, b, c, d, a, 55, 1, 21); \
    STEP(I, a, b, c, d, 56, 8, 6);   STEP(I, d, a, b, c, 57, 15, 10); \
    STEP(I, c, d, a, b, 58, 6, 15);  STEP(I, b, c, d, a, 59, 13, 21); \
    STEP(I, a, b, c, d, 60, 4, 6);   STEP(I, d, a, b, c, 61, 11, 10); \
    STEP(I, c, d, a, b, 62, 2, 15);  STEP(I, b, c, d, a, 63, 9, 21); \
    } while (0)


static inline uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define ROTL32(x, s) (((x) << (s)) | ((x) >> (32 - (s))))
/* F with one fewer operation than the RFC's form; G's two terms share no
 * bits, so its | is a +, and the term without b joins a + w + K early. */
#define SF(b, c, d) ((d) ^ ((b) & ((c) ^ (d))))
#define SG(b, c, d) (((b) & (d)) + ((c) & ~(d)))
#define SH(b, c, d) ((b) ^ (c) ^ (d))
#define SI(b, c, d) ((c) ^ ((b) | ~(d)))
#define SSTEP(f, a, b, c, d, i, j, s) \
    do { a += w[j] + K[i]; a += f(b, c, d); a = ROTL32(a, s) + b; } while (0)

void md5mb_blocks_scalar(uint32_t h[4], const uint8_t *p, size_t nblocks)
{
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    uint32_t w[16];
    for (size_t n = 0; n < nblocks; n++, p += MD5MB_BLOCK) {
        for (int j = 0; j < 16; j++)
            w[j] = load_le32(p + 4 * j);
        uint32_t a0 = a, b0 = b, c0 = c, d0 = d;
        MD5_64_STEPS(SSTEP, SF, SG, SH, SI);
        a += a0; b += b0; c += c0; d += d0;
    }
    h[0] = a; h[1] = b; h[2] = c; h[3] = d;
}

/* ------------------------------------------------------------ AVX2, 8 lanes */

#if MD5MB_X86 && defined(__GNUC__)
#define MD5MB_HAVE_AVX2 1

#define VADD(x, y) _mm256_add_epi32(x, y)
#define VROTL(x, s) _mm256_or_si256(_mm256_slli_epi32(x, s), _mm256_srli_epi32(x, 32 - (s)))
/* Each step's critical path runs through b (computed by the step before):
 * the parts of f that need only c and d, and a + w + K, are off that path
 * (G as a sum, as in the scalar kernel). */
#define VF(b, c, d) _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)))
#define VG(b, c, d) VADD(_mm256_and_si256(b, d), _mm256_andnot_si256(d, c))
#define VH(b, c, d) _mm256_xor_si256(b, _mm256_xor_si256(c, d))
#define VI(b, c, d) _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones)))
#define VSTEP(f, a, b, c, d, i, j, s) \
    do { \
        a = VADD(VADD(a, VADD(w[j], _mm256_set1_epi32((int)K[i]))), f(b, c, d)); \
        a = VADD(VROTL(a, s), b); \
    } while (0)

/* Rows r[0..7] (8 words each, one per stream) become columns: out[j] holds
 * word j of every stream. */
__attribute__((target("avx2"), always_inline))
static inline void transpose8(const __m256i r[8], __m256i out[8])
{
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    /* u_k: word k (low 128 bits) and word k + 4 (high) of four streams */
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    out[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    out[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    out[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    out[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    out[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    out[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    out[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    out[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* One 8-lane kernel per instruction set, from the same body: STEP and the
 * four round functions are the only differences. Lanes flagged idle read a
 * zero block in place (their results are discarded by the caller). */
#define DEFINE_BLOCKS_X8(name, isa, STEP, F, G, H, I) \
__attribute__((target(isa))) \
static void name(md5mb_lanes *lanes, const uint8_t *const ptrs[MD5MB_LANES], \
                 unsigned idle, size_t nblocks) \
{ \
    static const uint8_t zero_block[MD5MB_BLOCK]; \
    const uint8_t *p[MD5MB_LANES]; \
    size_t step[MD5MB_LANES]; \
    for (int i = 0; i < MD5MB_LANES; i++) { \
        int off = (idle >> i) & 1; \
        p[i] = off ? zero_block : ptrs[i]; \
        step[i] = off ? 0 : MD5MB_BLOCK; \
    } \
    const __m256i ones = _mm256_set1_epi32(-1); \
    (void)ones; \
    __m256i a = _mm256_loadu_si256((const __m256i *)lanes->h[0]); \
    __m256i b = _mm256_loadu_si256((const __m256i *)lanes->h[1]); \
    __m256i c = _mm256_loadu_si256((const __m256i *)lanes->h[2]); \
    __m256i d = _mm256_loadu_si256((const __m256i *)lanes->h[3]); \
    for (size_t n = 0; n < nblocks; n++) { \
        __m256i r[8], w[16]; \
        for (int i = 0; i < 8; i++) \
            r[i] = _mm256_loadu_si256((const __m256i *)p[i]); \
        transpose8(r, w); \
        for (int i = 0; i < 8; i++) \
            r[i] = _mm256_loadu_si256((const __m256i *)(p[i] + 32)); \
        transpose8(r, w + 8); \
        for (int i = 0; i < 8; i++) \
            p[i] += step[i]; \
        __m256i a0 = a, b0 = b, c0 = c, d0 = d; \
        MD5_64_STEPS(STEP, F, G, H, I); \
        a = VADD(a, a0); b = VADD(b, b0); c = VADD(c, c0); d = VADD(d, d0); \
    } \
    _mm256_storeu_si256((__m256i *)lanes->h[0], a); \
    _mm256_storeu_si256((__m256i *)lanes->h[1], b); \
    _mm256_storeu_si256((__m256i *)lanes->h[2], c); \
    _mm256_storeu_si256((__m256i *)lanes->h[3], d); \
}

DEFINE_BLOCKS_X8(blocks_x8_avx2, "avx2", VSTEP, VF, VG, VH, VI)

/* AVX-512VL on the same 256-bit registers: a real rotate (vprold) and each
 * round function as one three-input logic op (vpternlogd; the immediates
 * are the functions' truth tables over b = 0xf0, c = 0xcc, d = 0xaa). That
 * shortens each step's dependency chain from 6 operations to 4. */
#define ZF(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0xca)
#define ZG(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0xe4)
#define ZH(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0x96)
#define ZI(b, c, d) _mm256_ternarylogic_epi32(b, c, d, 0x39)
#define ZSTEP(f, a, b, c, d, i, j, s) \
    do { \
        a = VADD(VADD(a, VADD(w[j], _mm256_set1_epi32((int)K[i]))), f(b, c, d)); \
        a = VADD(_mm256_rol_epi32(a, s), b); \
    } while (0)

DEFINE_BLOCKS_X8(blocks_x8_avx512, "avx512f,avx512vl", ZSTEP, ZF, ZG, ZH, ZI)

#endif

int md5mb_blocks_x8(int kernel, md5mb_lanes *lanes,
                    const uint8_t *const ptrs[MD5MB_LANES], unsigned idle, size_t nblocks)
{
#ifdef MD5MB_HAVE_AVX2
    if (kernel == MD5MB_KERNEL_AVX2) {
        blocks_x8_avx2(lanes, ptrs, idle, nblocks);
        return 0;
    }
    if (kernel == MD5MB_KERNEL_AVX512) {
        blocks_x8_avx512(lanes, ptrs, idle, nblocks);
        return 0;
    }
#else
    (void)kernel; (void)lanes; (void)ptrs; (void)idle; (void)nblocks;
#endif
    return -1;
}

/* ----------------------------------------------------------------- streams */

size_t md5mb_update_begin(md5mb_state *s, const uint8_t **p, size_t *len)
{
    size_t fill = (size_t)(s->length % MD5MB_BLOCK);
    if (fill) {
        size_t take = MD5MB_BLOCK - fill;
        if (take > *len)
            take = *len;
        memcpy(s->tail + fill, *p, take);
        s->length += take;
        *p += take;
        *len -= take;
        if (fill + take < MD5MB_BLOCK)
            return 0;
        md5mb_blocks_scalar(s->h, s->tail, 1);
    }
    return *len / MD5MB_BLOCK;
}

void md5mb_update_end(md5mb_state *s, size_t nblocks, const uint8_t *p, size_t len)
{
    size_t whole = nblocks * MD5MB_BLOCK;
    s->length += whole;
    if (len > whole) {
        memcpy(s->tail, p + whole, len - whole);
        s->length += len - whole;
    }
}

void md5mb_update_scalar(md5mb_state *s, const uint8_t *p, size_t len)
{
    size_t nblocks = md5mb_update_begin(s, &p, &len);
    md5mb_blocks_scalar(s->h, p, nblocks);
    md5mb_update_end(s, nblocks, p, len);
}

void md5mb_digest(const md5mb_state *s, uint8_t out[MD5MB_DIGEST])
{
    uint8_t last[2 * MD5MB_BLOCK];
    uint32_t h[4] = {s->h[0], s->h[1], s->h[2], s->h[3]};
    size_t fill = (size_t)(s->length % MD5MB_BLOCK);
    /* 0x80, zeros, then the length in bits (little-endian) ending a block */
    size_t total = fill < 56 ? MD5MB_BLOCK : 2 * MD5MB_BLOCK;
    uint64_t bits = s->length << 3;
    memset(last, 0, sizeof last);
    memcpy(last, s->tail, fill);
    last[fill] = 0x80;
    for (int i = 0; i < 8; i++)
        last[total - 8 + i] = (uint8_t)(bits >> (8 * i));
    md5mb_blocks_scalar(h, last, total / MD5MB_BLOCK);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(h[i] >> (8 * j));
}
