/* A process-wide engine that hashes the whole blocks of several MD5 streams
 * at once with an 8-lane kernel (md5mb_kernels.h).
 *
 * A thread with blocks to hash submits them and sleeps. If no thread is
 * leading, the submitter leads: it loads queued jobs into free lanes, runs
 * the kernel over a slice of blocks common to all busy lanes, retires the
 * finished jobs (waking their threads), refills the lanes, and so on until
 * its own job is done; then it hands the unfinished jobs and the lead to a
 * waiting thread. A single busy lane is hashed with the scalar kernel. Call
 * without the GIL: submitters block.
 */
#ifndef MD5MB_ENGINE_H
#define MD5MB_ENGINE_H

#include <stddef.h>
#include <stdint.h>

/* Blocks of a lane hashed between two looks at the queue (bounds how long a
 * new job waits for a free lane to be refilled). */
#define MD5MB_SLICE_BLOCKS 64

/* A leader hashing a lone stream offers its core to other runnable threads
 * every this many slices, so that on a busy machine a thread with bytes to
 * hash gets to queue them and share the kernel call. */
#ifndef MD5MB_YIELD_SLICES
#define MD5MB_YIELD_SLICES 8
#endif

/* Hash nblocks 64-byte blocks at p into the chaining value h with the
 * 8-lane kernel (an MD5MB_KERNEL_* the CPU has) shared with other threads.
 * Returns when done: 0, or -1 if the kernel is not an 8-lane kernel (or
 * the engine could not start; h is then unchanged). */
int md5mb_engine_blocks(int kernel, uint32_t h[4], const uint8_t *p, size_t nblocks);

/* The same lane scheduling for n streams known in advance, on this thread
 * only: h[4i .. 4i+3] advanced over nblocks[i] blocks at ptrs[i]. 0 or -1 as above. */
int md5mb_run_lanes(int kernel, uint32_t *h, const uint8_t *const *ptrs,
                    const size_t *nblocks, size_t n);

/* Batches the calling process's engine has run, by number of busy lanes
 * (index 1..8), for tests and tuning. Counts are approximate (not locked). */
void md5mb_engine_stats(uint64_t out[9]);

#endif
