/* MD5 block kernels: our own streaming state, a portable scalar block
 * function and an AVX2 function that advances 8 independent states at once
 * (one 32-bit lane per stream), chosen at run time.
 *
 * MD5 is sequential within a stream, so SIMD only helps across streams: the
 * 8-lane kernel takes 8 message pointers and hashes the same number of
 * 64-byte blocks from each. md5mb_engine.h gathers the streams.
 */
#ifndef MD5MB_KERNELS_H
#define MD5MB_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define MD5MB_BLOCK 64
#define MD5MB_DIGEST 16
#define MD5MB_LANES 8

/* The 8-lane kernels are AVX2 and AVX-512VL (same 256-bit lanes, with a
 * native rotate and three-input logic ops). */
enum md5mb_kernel { MD5MB_KERNEL_SCALAR = 0, MD5MB_KERNEL_AVX2 = 1, MD5MB_KERNEL_AVX512 = 2 };

/* A stream being hashed: chaining value, total bytes so far, and the bytes
 * of the last partial block (length % 64 of them). */
typedef struct {
    uint32_t h[4];
    uint64_t length;
    uint8_t tail[MD5MB_BLOCK];
} md5mb_state;

/* 8 chaining values, one per lane, word-major: h[word][lane]. */
typedef struct {
    uint32_t h[4][MD5MB_LANES];
} md5mb_lanes;

/* Bit mask (1 << kernel) of the kernels this build and CPU can run. */
int md5mb_cpu_kernels(void);

void md5mb_init(md5mb_state *s);

/* Advance one chaining value over nblocks whole blocks at p. */
void md5mb_blocks_scalar(uint32_t h[4], const uint8_t *p, size_t nblocks);

/* Advance the 8 lanes over nblocks blocks each with an 8-lane kernel; lane i
 * reads ptrs[i] (consecutive blocks). Lanes whose bit is set in idle are not
 * read (they hash a zero block in place) and their h values are garbage
 * afterwards. Returns 0, or -1 when kernel is not an 8-lane kernel of this
 * build (the caller checks md5mb_cpu_kernels() first). */
int md5mb_blocks_x8(int kernel, md5mb_lanes *lanes,
                    const uint8_t *const ptrs[MD5MB_LANES], unsigned idle, size_t nblocks);

/* Hash len bytes into s with the scalar kernel only: the whole-block part
 * goes through blocks(), which the caller may replace (the engine). */
void md5mb_update_scalar(md5mb_state *s, const uint8_t *p, size_t len);

/* Feed s up to the next block boundary from [*p, *p + *len) and set the
 * whole-block middle: returns the number of whole blocks starting at *p
 * (p and len are advanced past what was consumed or is left for the tail). */
size_t md5mb_update_begin(md5mb_state *s, const uint8_t **p, size_t *len);

/* After the caller hashed the nblocks from md5mb_update_begin: count them and
 * keep the remaining len bytes at p as the new tail. */
void md5mb_update_end(md5mb_state *s, size_t nblocks, const uint8_t *p, size_t len);

/* The digest of the bytes so far; s is not changed. */
void md5mb_digest(const md5mb_state *s, uint8_t out[MD5MB_DIGEST]);

#endif
