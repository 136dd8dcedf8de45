/* SPDX-License-Identifier: MIT */
/* The supervisor's two judgements, as pure functions of measured numbers (unit-tested):
 * how many workers keep handler utilisation near its target (Atlas: 40% headroom), and
 * whether a canary release is better promoted, rolled back, or watched longer. */
#ifndef MSM_LAMBDA_SCALE_H
#define MSM_LAMBDA_SCALE_H

#include "board.h"

#include <stdint.h>

/** Samples kept: one per supervisor tick over the longest window. */
#define LM_SCALER_SAMPLES 512

typedef struct {
    /* settings */
    int sc_min, sc_max;
    int sc_threads;           /* handler threads per worker (capacity of one worker) */
    double sc_target;         /* utilisation to keep, 0..1 */
    int64_t sc_up_window_ms;  /* utilisation measured over this for scaling up */
    int64_t sc_down_delay_ms; /* scale down only to the most wanted over this long */
    /* state */
    int sc_desired;
    double sc_utilisation; /* busy over capacity in the last up window */
    int64_t sc_last_up_ms, sc_last_change_ms;
    uint64_t sc_cap_us; /* handler capacity so far: running workers x threads x time */
    struct {
        int64_t t_ms;
        uint64_t busy_us;
        uint64_t cap_us;
        int want;
    } sc_samples[LM_SCALER_SAMPLES];
    unsigned sc_head, sc_count;
} lm_scaler_t;

/** Starts at @p min workers. */
void msm__scaler_init(lm_scaler_t *s,
                      int min,
                      int max,
                      int threads,
                      double target,
                      int64_t up_window_ms,
                      int64_t down_delay_ms,
                      int64_t now_ms);

/**
 * One tick: @p busy_us is the handler time of every worker so far (never decreasing),
 * @p running the workers serving now. Scales up at once to what the last up window needs
 * (at least twice @p running when they are saturated, at 90%: the queue hides the demand),
 * then waits half a window before growing again; down only when no sample of the last down
 * delay wanted as many, and not sooner than that after the last change. @returns the
 * desired worker count (sc_desired).
 */
int msm__scaler_step(lm_scaler_t *s, int64_t now_ms, uint64_t busy_us, int running);

typedef enum {
    LM_CANARY_WAIT = 0,
    LM_CANARY_PROMOTE = 1,
    LM_CANARY_ROLLBACK = 2,
} lm_canary_verdict_t;

typedef struct {
    int64_t cj_window_ms;        /* watch at least this long before promoting */
    uint64_t cj_min_events;      /* answers the canary needs before any verdict */
    double cj_error_margin;      /* rollback when its error rate exceeds the old one's by more
                                    than max(this, the old rate): 0.05 = 5 points and double */
    double cj_latency_factor;    /* ... or its p99 exceeds the old one's times this */
    int64_t cj_latency_slack_us; /* ... and by more than this (noise on tiny latencies) */
    int cj_max_crashes;          /* rollback when canary workers crashed this often */
} lm_canary_rules_t;

/**
 * Compares the canary's answers with the old release's over the same time (@p elapsed_ms
 * since the canary started). @p why receives the reason of a verdict or of waiting.
 */
lm_canary_verdict_t msm__canary_judge(const lm_canary_rules_t *r,
                                      const lm_tally_t *base,
                                      const lm_tally_t *canary,
                                      int canary_crashes,
                                      int64_t elapsed_ms,
                                      char *why,
                                      size_t why_size);

#endif
