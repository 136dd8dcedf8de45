/* SPDX-License-Identifier: MIT */
/* The fast JSON batch parser against the full one (frontend/src/publish_json_fast.c): used
 * by the publish tests and by a differential fuzz target. */
#ifndef MSM_FAST_PARSE_CHECK_H
#define MSM_FAST_PARSE_CHECK_H

#include <stddef.h>

/** What fe_parse_json_batch_fast() did with a body. */
typedef enum {
    FAST_DECLINED, /* it left the body to the full parser */
    FAST_AGREES,   /* it accepted, and the full parser accepts the same events */
    FAST_DIFFERS   /* it accepted what the full parser refuses or reads otherwise: a bug */
} fast_verdict_t;

/** @brief Runs both parsers on @p body (a topic without schema); on FAST_DIFFERS, @p why
 *  says what differed. */
fast_verdict_t fast_parse_check(const char *body, size_t len, char *why, size_t why_size);

#endif
