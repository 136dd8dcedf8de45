/* SPDX-License-Identifier: MIT */
/* The SDK's fast batch body reader against the jansson path (lambda-sdk/src/batch_fast.c):
 * used by the lambda.batch_fast suite and by a differential fuzz target. */
#ifndef MSM_BATCH_FAST_CHECK_H
#define MSM_BATCH_FAST_CHECK_H

#include <stddef.h>

/** What msm__batch_read_fast() did with a body. */
typedef enum {
    BATCH_DECLINED, /* it left the body to the jansson path */
    BATCH_AGREES,   /* it took it, and the jansson path builds the same events */
    BATCH_DIFFERS   /* it took what the jansson path refuses or reads otherwise: a bug */
} batch_verdict_t;

/** @brief Reads @p body both ways; on BATCH_DIFFERS, @p why says what differed. */
batch_verdict_t batch_fast_check(const char *body, size_t len, char *why, size_t why_size);

#endif
