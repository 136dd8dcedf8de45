/* SPDX-License-Identifier: MIT */
/* The board shared by the supervisor and its workers (board.h). */
#include "board.h"

#include "msm/time.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BOARD_MAGIC     0x6d736d62u /* "msmb" */
#define LAT_FLOOR_SHIFT 4           /* bucket 0 holds everything below 2^4 µs */

size_t msm__board_size(uint32_t nslots)
{
    return sizeof(lm_board_t) + (size_t)nslots * sizeof(lm_slot_t);
}

lm_board_t *msm__board_create(uint32_t nslots, int *fd)
{
    size_t size = msm__board_size(nslots);
    int mfd = memfd_create("msm-lambda-board", MFD_CLOEXEC);
    if (mfd < 0)
        return NULL;
    if (ftruncate(mfd, (off_t)size) != 0) {
        close(mfd);
        return NULL;
    }
    lm_board_t *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (b == MAP_FAILED) {
        close(mfd);
        return NULL;
    }
    b->b_magic = BOARD_MAGIC;
    b->b_nslots = nslots;
    *fd = mfd;
    return b;
}

lm_board_t *msm__board_map(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(lm_board_t))
        return NULL;
    lm_board_t *b = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (b == MAP_FAILED)
        return NULL;
    if (b->b_magic != BOARD_MAGIC || msm__board_size(b->b_nslots) > (size_t)st.st_size) {
        munmap(b, (size_t)st.st_size);
        return NULL;
    }
    return b;
}

void msm__board_unmap(lm_board_t *b)
{
    if (b)
        munmap(b, msm__board_size(b->b_nslots));
}

void msm__slot_reset(lm_slot_t *s, uint32_t nthreads)
{
    memset(s, 0, sizeof(*s));
    s->s_nthreads = nthreads > LM_MAX_THREADS ? LM_MAX_THREADS : nthreads;
}

int64_t msm__board_now_ms(void)
{
    return (int64_t)(msm_time_mono_us() / 1000);
}

void msm__slot_begin(lm_slot_t *s, unsigned t, int64_t deadline_unix_ms)
{
    if (!s || t >= LM_MAX_THREADS)
        return;
    int64_t now = msm__board_now_ms();
    int64_t deadline = 0;
    if (deadline_unix_ms > 0) {
        deadline = now + (deadline_unix_ms - msm_time_unix_ms());
        if (deadline <= 0)
            deadline = 1;
    }
    atomic_store_explicit(&s->s_threads[t].t_deadline_ms, deadline, memory_order_relaxed);
    atomic_store_explicit(&s->s_threads[t].t_busy_since_ms, now, memory_order_release);
}

void msm__slot_end(lm_slot_t *s, unsigned t)
{
    if (!s || t >= LM_MAX_THREADS)
        return;
    int64_t since = atomic_load_explicit(&s->s_threads[t].t_busy_since_ms, memory_order_relaxed);
    int64_t now = msm__board_now_ms();
    /* Counted before the thread shows idle: a reader may count the call twice for an
     * instant, never lose it. */
    if (since > 0 && now > since)
        atomic_fetch_add_explicit(&s->s_busy_us, (uint64_t)(now - since) * 1000,
                                  memory_order_relaxed);
    atomic_store_explicit(&s->s_threads[t].t_busy_since_ms, 0, memory_order_release);
}

unsigned msm__lat_bucket(uint64_t us)
{
    if (us < (1u << LAT_FLOOR_SHIFT))
        return 0;
    unsigned log2 = 63u - (unsigned)__builtin_clzll(us);
    unsigned quarter = (unsigned)((us >> (log2 - 2)) & 3u); /* log2 >= 4 here */
    unsigned b = 1 + (log2 - LAT_FLOOR_SHIFT) * 4 + quarter;
    return b < LM_LAT_BUCKETS ? b : LM_LAT_BUCKETS - 1;
}

uint64_t msm__lat_bucket_upper_us(unsigned b)
{
    if (b == 0)
        return 1u << LAT_FLOOR_SHIFT;
    unsigned log2 = (b - 1) / 4 + LAT_FLOOR_SHIFT, quarter = (b - 1) % 4;
    return ((uint64_t)4 + quarter + 1) << (log2 - 2);
}

void msm__slot_answered(lm_slot_t *s, int failed, uint64_t latency_us)
{
    if (!s)
        return;
    atomic_fetch_add_explicit(&s->s_answered, 1, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&s->s_failed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->s_latency[msm__lat_bucket(latency_us)], 1, memory_order_relaxed);
}

void msm__board_sum(const lm_slot_t *s, int64_t now_ms, lm_tally_t *t)
{
    lm_slot_t *m = (lm_slot_t *)s; /* atomic loads take non-const pointers */
    t->busy_us += atomic_load_explicit(&m->s_busy_us, memory_order_relaxed);
    for (uint32_t i = 0; i < s->s_nthreads; i++) {
        int64_t since =
            atomic_load_explicit(&m->s_threads[i].t_busy_since_ms, memory_order_acquire);
        if (since > 0 && now_ms > since)
            t->busy_us += (uint64_t)(now_ms - since) * 1000;
    }
    t->answered += atomic_load_explicit(&m->s_answered, memory_order_relaxed);
    t->failed += atomic_load_explicit(&m->s_failed, memory_order_relaxed);
    for (unsigned b = 0; b < LM_LAT_BUCKETS; b++)
        t->latency[b] += atomic_load_explicit(&m->s_latency[b], memory_order_relaxed);
}

static uint64_t sub_floor(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

void msm__tally_sub(const lm_tally_t *a, const lm_tally_t *b, lm_tally_t *out)
{
    out->busy_us = sub_floor(a->busy_us, b->busy_us);
    out->answered = sub_floor(a->answered, b->answered);
    out->failed = sub_floor(a->failed, b->failed);
    for (unsigned i = 0; i < LM_LAT_BUCKETS; i++)
        out->latency[i] = sub_floor(a->latency[i], b->latency[i]);
}

void msm__tally_add(lm_tally_t *into, const lm_tally_t *t)
{
    into->busy_us += t->busy_us;
    into->answered += t->answered;
    into->failed += t->failed;
    for (unsigned i = 0; i < LM_LAT_BUCKETS; i++)
        into->latency[i] += t->latency[i];
}

uint64_t msm__tally_quantile_us(const lm_tally_t *t, double q)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < LM_LAT_BUCKETS; i++)
        total += t->latency[i];
    if (total == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)total + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LM_LAT_BUCKETS; i++) {
        seen += t->latency[i];
        if (seen >= rank)
            return msm__lat_bucket_upper_us(i);
    }
    return msm__lat_bucket_upper_us(LM_LAT_BUCKETS - 1);
}
