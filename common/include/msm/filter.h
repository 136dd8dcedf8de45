/* SPDX-License-Identifier: MIT */
/* Subscription filters in Google Pub/Sub's filter language (docs/filter.md): parsed once when
 * a subscription is validated or loaded, then matched against the attributes of every event
 * the scheduler fans out, without allocating. */
#ifndef MSM_FILTER_H
#define MSM_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "msm/v1/event.pb-c.h"

/** Longest filter text, in bytes (Pub/Sub allows 256; msm more). */
#define MSM_FILTER_TEXT_MAX 4096
/** Deepest nesting of parentheses and NOTs; deeper filters are refused, so neither the
 *  parser nor the matcher can run out of stack on any input. */
#define MSM_FILTER_DEPTH_MAX 64

/** A parsed filter: immutable, so one may be matched from any number of threads. */
typedef struct msm_filter_s msm_filter_t;

/**
 * @brief Parses @p text, e.g. `attributes.kind = "image" AND NOT attributes:draft`.
 * @param text NUL-terminated; the empty string is an error (callers treat "" as no filter)
 * @param err receives "position N: <what is wrong>" on failure (N counts characters from 1);
 *        may be NULL
 * @param errlen size of @p err
 * @param err_pos receives the byte offset (from 0) of the error on failure; may be NULL
 * @returns the filter (free with msm_filter_free), or NULL when @p text is not a valid filter
 *          or memory ran out ("out of memory" in @p err).
 * @remark Any bytes are safe: recursion is bounded by MSM_FILTER_DEPTH_MAX and the length
 *         by MSM_FILTER_TEXT_MAX.
 */
msm_filter_t *msm_filter_parse(const char *text, char *err, size_t errlen, size_t *err_pos);

/**
 * @brief Whether an event with attributes @p attrs (@p n entries, as in msm.v1.Event) passes.
 * A NULL filter passes every event. An attribute named twice counts with its first value.
 * @remark Allocation-free, read-only: safe from any thread.
 */
bool msm_filter_match(const msm_filter_t *f,
                      Msm__V1__Event__AttributesEntry *const *attrs,
                      size_t n);

/** @brief Frees @p f (NULL is fine). */
void msm_filter_free(msm_filter_t *f);

#endif
