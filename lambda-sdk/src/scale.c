/* SPDX-License-Identifier: MIT */
/* Autoscaling and canary verdicts (scale.h). */
#include "scale.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Utilisation at which the pool is taken as saturated. */
#define LM_SATURATED 0.9

void msm__scaler_init(lm_scaler_t *s,
                      int min,
                      int max,
                      int threads,
                      double target,
                      int64_t up_window_ms,
                      int64_t down_delay_ms,
                      int64_t now_ms)
{
    memset(s, 0, sizeof(*s));
    s->sc_min = min;
    s->sc_max = max < min ? min : max;
    s->sc_threads = threads > 0 ? threads : 1;
    s->sc_target = target > 0 ? target : 0.6;
    s->sc_up_window_ms = up_window_ms > 0 ? up_window_ms : 1000;
    s->sc_down_delay_ms = down_delay_ms > 0 ? down_delay_ms : 10000;
    s->sc_desired = min;
    s->sc_last_up_ms = now_ms;
    s->sc_last_change_ms = now_ms;
}

static int clamp(const lm_scaler_t *s, long long n)
{
    if (n < s->sc_min)
        return s->sc_min;
    if (n > s->sc_max)
        return s->sc_max;
    return (int)n;
}

/* The newest sample at least @p age_ms old, or the oldest one there is. */
static unsigned sample_before(const lm_scaler_t *s, int64_t now_ms, int64_t age_ms)
{
    unsigned best = (s->sc_head + LM_SCALER_SAMPLES - s->sc_count) % LM_SCALER_SAMPLES;
    for (unsigned k = 1; k <= s->sc_count; k++) {
        unsigned i = (s->sc_head + LM_SCALER_SAMPLES - k) % LM_SCALER_SAMPLES;
        if (now_ms - s->sc_samples[i].t_ms >= age_ms)
            return i;
        best = i;
    }
    return best;
}

int msm__scaler_step(lm_scaler_t *s, int64_t now_ms, uint64_t busy_us, int running)
{
    int want = s->sc_desired;
    if (running < 1)
        running = 1;
    /* Capacity is integrated tick by tick: a window that saw the pool grow is measured
     * against what really ran in it. */
    if (s->sc_count > 0) {
        unsigned last = (s->sc_head + LM_SCALER_SAMPLES - 1) % LM_SCALER_SAMPLES;
        int64_t step = now_ms - s->sc_samples[last].t_ms;
        if (step > 0)
            s->sc_cap_us += (uint64_t)step * 1000u * (uint64_t)running * (uint64_t)s->sc_threads;
        unsigned i = sample_before(s, now_ms, s->sc_up_window_ms);
        int64_t dt_ms = now_ms - s->sc_samples[i].t_ms;
        uint64_t dcap = s->sc_cap_us - s->sc_samples[i].cap_us;
        if (dt_ms > 0 && dcap > 0) {
            uint64_t db =
                busy_us > s->sc_samples[i].busy_us ? busy_us - s->sc_samples[i].busy_us : 0;
            double busy_threads = (double)db / ((double)dt_ms * 1000.0);
            s->sc_utilisation = (double)db / (double)dcap;
            double need = ceil(busy_threads / (s->sc_target * s->sc_threads) - 1e-9);
            /* Saturated: the demand is unknown (requests queue), so at least double. */
            if (s->sc_utilisation >= LM_SATURATED && need < 2.0 * running)
                need = 2.0 * running;
            want = clamp(s, (long long)need);
        }
    }
    s->sc_samples[s->sc_head].t_ms = now_ms;
    s->sc_samples[s->sc_head].busy_us = busy_us;
    s->sc_samples[s->sc_head].cap_us = s->sc_cap_us;
    s->sc_samples[s->sc_head].want = want;
    s->sc_head = (s->sc_head + 1) % LM_SCALER_SAMPLES;
    if (s->sc_count < LM_SCALER_SAMPLES)
        s->sc_count++;

    if (want > s->sc_desired) {
        /* New workers need a moment to take load: measure them before growing again. */
        if (now_ms - s->sc_last_up_ms >= s->sc_up_window_ms / 2) {
            s->sc_desired = want;
            s->sc_last_up_ms = s->sc_last_change_ms = now_ms;
        }
        return s->sc_desired;
    }
    if (now_ms - s->sc_last_change_ms < s->sc_down_delay_ms)
        return s->sc_desired;
    int most = s->sc_min;
    for (unsigned k = 1; k <= s->sc_count; k++) {
        unsigned i = (s->sc_head + LM_SCALER_SAMPLES - k) % LM_SCALER_SAMPLES;
        if (now_ms - s->sc_samples[i].t_ms > s->sc_down_delay_ms)
            break;
        if (s->sc_samples[i].want > most)
            most = s->sc_samples[i].want;
    }
    if (most < s->sc_desired) {
        s->sc_desired = most;
        s->sc_last_change_ms = now_ms;
    }
    return s->sc_desired;
}

static double error_rate(const lm_tally_t *t)
{
    return t->answered ? (double)t->failed / (double)t->answered : 0.0;
}

lm_canary_verdict_t msm__canary_judge(const lm_canary_rules_t *r,
                                      const lm_tally_t *base,
                                      const lm_tally_t *canary,
                                      int canary_crashes,
                                      int64_t elapsed_ms,
                                      char *why,
                                      size_t why_size)
{
    if (r->cj_max_crashes > 0 && canary_crashes >= r->cj_max_crashes) {
        snprintf(why, why_size, "canary workers crashed %d times", canary_crashes);
        return LM_CANARY_ROLLBACK;
    }
    if (canary->answered < r->cj_min_events) {
        snprintf(why, why_size, "waiting for %llu canary answers (%llu so far)",
                 (unsigned long long)r->cj_min_events, (unsigned long long)canary->answered);
        return LM_CANARY_WAIT;
    }
    double ec = error_rate(canary), eb = error_rate(base);
    double margin = r->cj_error_margin > eb ? r->cj_error_margin : eb;
    if (ec > eb + margin) {
        snprintf(why, why_size, "error rate %.1f%% against %.1f%% for the current release",
                 ec * 100, eb * 100);
        return LM_CANARY_ROLLBACK;
    }
    uint64_t pc = msm__tally_quantile_us(canary, 0.99);
    uint64_t pb = msm__tally_quantile_us(base, 0.99);
    if (base->answered >= r->cj_min_events && (double)pc > (double)pb * r->cj_latency_factor &&
        pc > pb + (uint64_t)r->cj_latency_slack_us) {
        snprintf(why, why_size, "p99 latency %.1f ms against %.1f ms for the current release",
                 (double)pc / 1000, (double)pb / 1000);
        return LM_CANARY_ROLLBACK;
    }
    if (elapsed_ms < r->cj_window_ms) {
        snprintf(why, why_size, "watching: %lld of %lld ms", (long long)elapsed_ms,
                 (long long)r->cj_window_ms);
        return LM_CANARY_WAIT;
    }
    snprintf(why, why_size,
             "error rate %.1f%% (current %.1f%%), p99 %.2f ms (current %.2f ms) over %llu "
             "answers",
             ec * 100, eb * 100, (double)pc / 1000, (double)pb / 1000,
             (unsigned long long)canary->answered);
    return LM_CANARY_PROMOTE;
}
