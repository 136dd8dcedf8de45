/* SPDX-License-Identifier: MIT */
/* Handler threads (--threads N): the loop hands a job over, one of N threads runs it (a
 * handler that blocks holds only its thread), the result comes back to the loop through an
 * eventfd. Jobs are embedded in their owner (no allocation per job). */
#ifndef MSM_LAMBDA_POOL_H
#define MSM_LAMBDA_POOL_H

#include "msm/loop.h"

typedef struct lm_job_s lm_job_t;
struct lm_job_s {
    lm_job_t *j_next;
    int j_result; /* what run returned, for done */
};

/** Runs a job on handler thread @p thread (0 .. N-1). @returns its result. */
typedef int lm_pool_run_cb(lm_job_t *job, unsigned thread, void *opaque);
/** Called on the loop thread for each job run. */
typedef void lm_pool_done_cb(lm_job_t *job, int result, void *opaque);

typedef struct lm_pool_s lm_pool_t;

/** Starts @p nthreads threads. @returns NULL on failure (errno set). */
lm_pool_t *msm__pool_new(
    msm_loop_t *loop, unsigned nthreads, lm_pool_run_cb *run, lm_pool_done_cb *done, void *opaque);

/** Queues @p job (loop thread). */
void msm__pool_submit(lm_pool_t *p, lm_job_t *job);

/** Jobs queued or running. */
unsigned msm__pool_busy(const lm_pool_t *p);

/**
 * Stops the threads. @p wait: join them (every job must be done); otherwise they are left
 * to the process's exit (a forced stop with handlers still running) and the pool leaks.
 */
void msm__pool_free(lm_pool_t *p, int wait);

#endif
