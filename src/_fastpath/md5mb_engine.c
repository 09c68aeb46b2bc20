/* The multi-buffer MD5 engine: see md5mb_engine.h.
 *
 * One mutex guards the queue of waiting jobs and the "someone leads" flag.
 * Jobs in lanes belong to the leader alone, which reads and advances them
 * without the mutex while the kernel runs. Every job lives on its
 * submitter's stack and has its own condition variable, so a retired job
 * wakes exactly its thread. After fork() the child starts with an empty,
 * unlocked engine (pthread_atfork): the threads that queued jobs in the
 * parent do not exist there.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include "md5mb_kernels.h"
#include "md5mb_engine.h"

enum { JOB_QUEUED, JOB_DONE, JOB_LEAD };

typedef struct job {
    uint32_t *h;
    const uint8_t *p;
    size_t nblocks;         /* left to hash */
    int state;
    int has_cv;
    pthread_cond_t cv;
    struct job *next;
} job;

typedef struct {
    job *head, *tail;
} queue;

typedef struct {
    md5mb_lanes st;
    job *job[MD5MB_LANES];  /* NULL: free lane */
    int busy;
} lane_set;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static queue waiting;       /* jobs not in a lane, oldest first */
static int leading;         /* a thread is running lead() */
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static int setup_ok;
static uint64_t batches[MD5MB_LANES + 1];

/* ------------------------------------------------------------------- queue */

static void q_push(queue *q, job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static void q_push_front(queue *q, job *j)
{
    j->next = q->head;
    q->head = j;
    if (!q->tail)
        q->tail = j;
}

static job *q_pop(queue *q)
{
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
    }
    return j;
}

/* ------------------------------------------------------------------- lanes */

static void lanes_fill(lane_set *L, queue *q)
{
    for (int i = 0; i < MD5MB_LANES && q->head; i++) {
        if (L->job[i])
            continue;
        job *j = q_pop(q);
        L->job[i] = j;
        for (int w = 0; w < 4; w++)
            L->st.h[w][i] = j->h[w];
        L->busy++;
    }
}

/* Blocks every busy lane has left, at most a slice (>= 1: busy lanes always
 * have blocks left). */
static size_t lanes_slice(const lane_set *L)
{
    size_t n = MD5MB_SLICE_BLOCKS;
    for (int i = 0; i < MD5MB_LANES; i++)
        if (L->job[i] && L->job[i]->nblocks < n)
            n = L->job[i]->nblocks;
    return n;
}

static void lanes_run(int kernel, lane_set *L, size_t n)
{
    const uint8_t *ptrs[MD5MB_LANES];
    unsigned idle = 0;
    int one = -1;
    for (int i = 0; i < MD5MB_LANES; i++) {
        ptrs[i] = L->job[i] ? L->job[i]->p : NULL;
        if (L->job[i])
            one = i;
        else
            idle |= 1u << i;
    }
    __atomic_fetch_add(&batches[L->busy], 1, __ATOMIC_RELAXED);
    if (L->busy == 1) {
        /* 8 lanes for one stream would cost more than the scalar kernel */
        uint32_t h[4];
        for (int w = 0; w < 4; w++)
            h[w] = L->st.h[w][one];
        md5mb_blocks_scalar(h, ptrs[one], n);
        for (int w = 0; w < 4; w++)
            L->st.h[w][one] = h[w];
    } else {
        md5mb_blocks_x8(kernel, &L->st, ptrs, idle, n);
    }
}

static void lane_save(lane_set *L, int i)
{
    for (int w = 0; w < 4; w++)
        L->job[i]->h[w] = L->st.h[w][i];
}

/* Count n blocks done in every busy lane; finished jobs leave their lane
 * and their threads are woken. */
static void lanes_retire(lane_set *L, size_t n)
{
    for (int i = 0; i < MD5MB_LANES; i++) {
        job *j = L->job[i];
        if (!j)
            continue;
        j->p += n * MD5MB_BLOCK;
        j->nblocks -= n;
        if (j->nblocks == 0) {
            lane_save(L, i);
            L->job[i] = NULL;
            L->busy--;
            j->state = JOB_DONE;
            if (j->has_cv)
                pthread_cond_signal(&j->cv);
        }
    }
}

/* ------------------------------------------------------------------ engine */

static void before_fork(void) { pthread_mutex_lock(&mu); }
static void after_fork_parent(void) { pthread_mutex_unlock(&mu); }

static void after_fork_child(void)
{
    /* only the forking thread exists here, and it was not in the engine */
    waiting.head = waiting.tail = NULL;
    leading = 0;
    memset(batches, 0, sizeof batches);
    pthread_mutex_unlock(&mu);
}

static void setup(void)
{
    setup_ok = pthread_atfork(before_fork, after_fork_parent, after_fork_child) == 0;
}

/* Called and returns with mu held; me is queued. Leads until me is done,
 * then passes the lead (and the unfinished jobs) on. */
static void lead(job *me, int kernel)
{
    lane_set L;
    unsigned alone = 0;
    memset(&L, 0, sizeof L);
    while (me->state != JOB_DONE) {  /* each turn hashes >= 1 block of me or
                                        of a job queued before it */
        lanes_fill(&L, &waiting);
        size_t n = lanes_slice(&L);
        pthread_mutex_unlock(&mu);
        if (L.busy == 1 && ++alone % MD5MB_YIELD_SLICES == 0)
            sched_yield();
        lanes_run(kernel, &L, n);
        pthread_mutex_lock(&mu);
        lanes_retire(&L, n);
    }
    for (int i = MD5MB_LANES - 1; i >= 0; i--) {
        if (L.job[i]) {
            lane_save(&L, i);
            q_push_front(&waiting, L.job[i]);
        }
    }
    if (waiting.head) {
        waiting.head->state = JOB_LEAD;
        pthread_cond_signal(&waiting.head->cv);
    } else {
        leading = 0;
    }
}

static int is_x8(int kernel)
{
    return kernel == MD5MB_KERNEL_AVX2 || kernel == MD5MB_KERNEL_AVX512;
}

int md5mb_engine_blocks(int kernel, uint32_t h[4], const uint8_t *p, size_t nblocks)
{
    if (!is_x8(kernel) || pthread_once(&setup_once, setup) != 0 || !setup_ok)
        return -1;
    if (nblocks == 0)
        return 0;
    job me = {.h = h, .p = p, .nblocks = nblocks, .state = JOB_QUEUED, .has_cv = 1};
    if (pthread_cond_init(&me.cv, NULL) != 0)
        return -1;
    pthread_mutex_lock(&mu);
    q_push(&waiting, &me);
    if (!leading) {
        leading = 1;
        lead(&me, kernel);
    }
    while (me.state != JOB_DONE) {
        pthread_cond_wait(&me.cv, &mu);
        if (me.state == JOB_LEAD) {
            me.state = JOB_QUEUED;
            lead(&me, kernel);
        }
    }
    pthread_mutex_unlock(&mu);
    pthread_cond_destroy(&me.cv);
    return 0;
}

int md5mb_run_lanes(int kernel, uint32_t *h, const uint8_t *const *ptrs,
                    const size_t *nblocks, size_t n)
{
    if (!is_x8(kernel))
        return -1;
    job *jobs = calloc(n ? n : 1, sizeof *jobs);
    if (!jobs)
        return -1;
    queue q = {NULL, NULL};
    for (size_t i = 0; i < n; i++) {
        if (nblocks[i] == 0)
            continue;
        jobs[i].h = h + 4 * i;
        jobs[i].p = ptrs[i];
        jobs[i].nblocks = nblocks[i];
        q_push(&q, &jobs[i]);
    }
    lane_set L;
    memset(&L, 0, sizeof L);
    while (q.head || L.busy) {  /* each turn hashes >= 1 block */
        lanes_fill(&L, &q);
        size_t k = lanes_slice(&L);
        lanes_run(kernel, &L, k);
        lanes_retire(&L, k);
    }
    free(jobs);
    return 0;
}

void md5mb_engine_stats(uint64_t out[MD5MB_LANES + 1])
{
    for (int i = 0; i <= MD5MB_LANES; i++)
        out[i] = __atomic_load_n(&batches[i], __ATOMIC_RELAXED);
}
