/* SPDX-License-Identifier: MIT */
/* The router's one-pass reading of a batch answer (msm__rt_results_scan) against jansson's,
 * the reference: used by the router.batch_results suite and by a differential fuzz target. */
#ifndef MSM_BATCH_RESULTS_CHECK_H
#define MSM_BATCH_RESULTS_CHECK_H

#include <stddef.h>

/** What msm__rt_results_scan() did with an answer. */
typedef enum {
    RESULTS_LEFT,   /* it gave up: the tree reads it */
    RESULTS_AGREE,  /* it read it, result by result, as the tree does */
    RESULTS_DIFFER  /* it read what the tree refuses or reads otherwise: a bug */
} results_verdict_t;

/** Results the check lets the fast reading take at most. */
#define RESULTS_CHECK_MAX 64

/** @brief Reads @p body both ways. */
results_verdict_t batch_results_check(const char *body, size_t len);

#endif
