/* SPDX-License-Identifier: MIT */
/* The board: shared memory where every worker process posts what the supervisor needs to
 * keep it alive, size the pool and judge a canary — without asking it anything, so a worker
 * stuck in a handler is still seen. One slot per worker; the worker writes its own slot
 * (relaxed atomics: counters and timestamps, read as a consistent-enough sample), the
 * supervisor reads them and resets a slot before giving it to the next worker. */
#ifndef MSM_LAMBDA_BOARD_H
#define MSM_LAMBDA_BOARD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/** Most handler threads a worker may run (--threads). */
#define LM_MAX_THREADS 64
/** Latency buckets: 4 per power of two from 16 µs (bucket 0: below) up to ~67 s. */
#define LM_LAT_BUCKETS 90

/** Slot states, written by the worker (FREE and STARTING by the supervisor). */
enum { LM_SLOT_FREE = 0, LM_SLOT_STARTING = 1, LM_SLOT_READY = 2, LM_SLOT_DRAINING = 3 };

/** One handler thread (the loop thread when --threads is 0): what it is running. */
typedef struct {
    _Atomic int64_t t_busy_since_ms; /* monotonic ms the current handler call began; 0 idle */
    _Atomic int64_t t_deadline_ms;   /* its event's deadline, monotonic ms; 0 none */
} lm_thread_slot_t;

typedef struct lm_slot_s {
    _Atomic uint32_t s_state;
    _Atomic int32_t s_pid;
    _Atomic int64_t s_heartbeat_ms;             /* monotonic ms, refreshed by the worker's loop */
    _Atomic uint64_t s_busy_us;                 /* handler time of finished calls */
    _Atomic uint64_t s_answered;                /* invocations answered */
    _Atomic uint64_t s_failed;                  /* ... answered retry, fatal or past the deadline */
    _Atomic uint64_t s_latency[LM_LAT_BUCKETS]; /* arrival to answer */
    uint32_t s_nthreads;                        /* thread slots in use (set by the supervisor) */
    lm_thread_slot_t s_threads[LM_MAX_THREADS];
} lm_slot_t;

typedef struct {
    uint32_t b_magic;
    uint32_t b_nslots;
    lm_slot_t b_slots[];
} lm_board_t;

/** Counters of one or more slots added up (see msm__board_sum()). */
typedef struct {
    uint64_t busy_us; /* finished calls, plus the part already spent of running ones */
    uint64_t answered;
    uint64_t failed;
    uint64_t latency[LM_LAT_BUCKETS];
} lm_tally_t;

/** Bytes of a board of @p nslots slots. */
size_t msm__board_size(uint32_t nslots);

/** Creates a board in a memfd (so an exec'd worker can map it too). @returns the mapping
 *  with *fd set, or NULL. */
lm_board_t *msm__board_create(uint32_t nslots, int *fd);

/** Maps the board of fd @p fd (a worker). @returns NULL unless it is one. */
lm_board_t *msm__board_map(int fd);

void msm__board_unmap(lm_board_t *b);

/** Clears @p s for a new worker of @p nthreads handler threads. */
void msm__slot_reset(lm_slot_t *s, uint32_t nthreads);

/** Monotonic milliseconds (the board's clock: the same in every process). */
int64_t msm__board_now_ms(void);

/** A handler call begins on thread @p t; @p deadline_unix_ms 0 = none. */
void msm__slot_begin(lm_slot_t *s, unsigned t, int64_t deadline_unix_ms);
/** ... and ends. */
void msm__slot_end(lm_slot_t *s, unsigned t);
/** An invocation was answered after @p latency_us. */
void msm__slot_answered(lm_slot_t *s, int failed, uint64_t latency_us);

/** The bucket of @p us, and a bucket's upper bound in µs. */
unsigned msm__lat_bucket(uint64_t us);
uint64_t msm__lat_bucket_upper_us(unsigned b);

/** Adds slot @p s's counters at monotonic time @p now_ms to @p t. */
void msm__board_sum(const lm_slot_t *s, int64_t now_ms, lm_tally_t *t);
/** @p a - @p b, counter by counter (a later tally minus an earlier one). */
void msm__tally_sub(const lm_tally_t *a, const lm_tally_t *b, lm_tally_t *out);
void msm__tally_add(lm_tally_t *into, const lm_tally_t *t);
/** The latency quantile @p q (0..1) in µs, from the buckets' upper bounds; 0 when empty. */
uint64_t msm__tally_quantile_us(const lm_tally_t *t, double q);

#endif
