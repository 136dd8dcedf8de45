/* SPDX-License-Identifier: MIT */
/* The pure part of delivery canaries (canary.c; router/README.md "Delivery canaries"): a
 * bounded sliding window of outcomes per side, the split of requests between the sides and
 * the rollback rule. No I/O, so the tests drive them directly. */
#ifndef RT_CANARY_H
#define RT_CANARY_H

#include "msm/registry.h"

#include <stddef.h>
#include <stdint.h>

/** A window holds at least this many outcomes (a p99 of fewer says little). */
#define RT_CANARY_WINDOW_MIN 100
/** The latency rule: canary p99 > RT_CANARY_P99_FACTOR × baseline p99, and by more than
 *  RT_CANARY_P99_SLACK_MS (so 2 ms against 1 ms is not a regression). */
#define RT_CANARY_P99_FACTOR   2.0
#define RT_CANARY_P99_SLACK_MS 100

/** The canary's state, as stored in MSM_KEY_CANARY. */
typedef enum {
    RT_CANARY_NONE = 0, /**< the subscription has no canary */
    RT_CANARY_ACTIVE,
    RT_CANARY_ROLLED_BACK,
    RT_CANARY_PROMOTED,
} rt_canary_state_t;

/** The last cap outcomes of one side: failed or not, and latency. */
typedef struct {
    uint8_t *failed;
    uint32_t *latency_ms;
    size_t cap, n, head; /**< head: where the next outcome goes */
    size_t nfailed;
} rt_window_t;

/** @brief Room for max(@p min_events, RT_CANARY_WINDOW_MIN) outcomes. @returns MSM_OK or
 *  MSM_ERR_NOMEM. */
int msm__rt_window_init(rt_window_t *w, int min_events);
void msm__rt_window_deinit(rt_window_t *w);
/** @brief Adds one outcome; the oldest goes when the window is full. */
void msm__rt_window_add(rt_window_t *w, int failed, int64_t latency_ms);
/** @brief Failed / all; 0 when empty. */
double msm__rt_window_failure_ratio(const rt_window_t *w);
/** @brief The 99th percentile latency (nearest rank); 0 when empty. */
int64_t msm__rt_window_p99(const rt_window_t *w);

/**
 * @brief The rollback rule. Only once both windows hold >= min_events outcomes: the canary's
 * failure ratio minus the baseline's > max_failure_ratio, or the canary's p99 over
 * RT_CANARY_P99_FACTOR times the baseline's and RT_CANARY_P99_SLACK_MS above it.
 * @returns 1 (roll back, the reason in @p why) or 0.
 */
int msm__rt_canary_judge(const rt_window_t *canary, const rt_window_t *baseline,
                         const msm_canary_t *conf, char *why, size_t n);

/**
 * @brief The side of the next request: 1 canary, 0 baseline. @p credit carries the share
 * from one request to the next, so exactly @p share of them go to the canary, evenly
 * spread (share 0.5: every other one), with no randomness.
 */
int msm__rt_canary_split(double *credit, double share);

/** @brief "active", "rolled_back", "promoted" ("" for none) and back (NONE when unknown). */
const char *msm__rt_canary_state_name(rt_canary_state_t s);
rt_canary_state_t msm__rt_canary_state_parse(const char *s);

#endif
