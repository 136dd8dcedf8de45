/* SPDX-License-Identifier: MIT */
/* A subscription's pace: how many more tasks may start now. Three brakes, all in memory:
 *
 *  - the adaptive concurrency limit (AIMD, as TCP and Netflix's concurrency-limits do): one
 *    more slot per limit's worth of successes while the limit is in use; a quarter less on a
 *    congestion signal (429, 503, no answer), at most once per round trip so one burst of
 *    refusals counts once. It moves between 1 and max_concurrency (in tasks: times
 *    max_batch_events with batch push, fc_tasks_in_flight_max()).
 *  - the rate limit: a token bucket of rate_limit_per_s, burst one second's worth.
 *  - the hold: a Retry-After stops the whole subscription that long (capped).
 *
 * Pure arithmetic on the times it is given: tests drive it without a loop. */
#include "fc_int.h"
#include "msm/backoff.h"

#include <math.h>

#define DECREASE      0.75 /* the limit kept on a congestion signal */
#define MIN_RTT_MS    20   /* decreases are this far apart at least */
#define RTT_WEIGHT    0.1  /* of a new latency in the smoothed round trip */

static double clamp(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void fc_pace_set(fc_pace_t *p, int max_concurrency, double rate_per_s, int64_t now_ms)
{
    int first = p->max == 0;
    p->max = max_concurrency > 0 ? max_concurrency : 1;
    /* A new subscription starts at its maximum: the signals bring it down if need be. */
    p->limit = first ? p->max : clamp(p->limit, 1, p->max);
    if (rate_per_s != p->rate || first) {
        p->rate = rate_per_s > 0 ? rate_per_s : 0;
        p->burst = p->rate > 0 ? (p->rate < 1 ? 1 : p->rate) : 0;
        p->tokens = p->burst;
        p->refilled_ms = now_ms;
    }
}

static void refill(fc_pace_t *p, int64_t now_ms)
{
    if (p->rate <= 0 || now_ms <= p->refilled_ms)
        return;
    p->tokens = fmin(p->burst, p->tokens + p->rate * (double)(now_ms - p->refilled_ms) / 1000.0);
    p->refilled_ms = now_ms;
}

size_t fc_pace_allowance(fc_pace_t *p, size_t running, int64_t now_ms, int64_t *wake_ms)
{
    *wake_ms = 0;
    if (p->hold_until_ms > now_ms) {
        *wake_ms = p->hold_until_ms;
        return 0;
    }
    size_t limit = (size_t)p->limit;
    size_t n = running < limit ? limit - running : 0;
    if (p->rate > 0 && n) {
        refill(p, now_ms);
        size_t tokens = (size_t)p->tokens;
        if (tokens < n) {
            n = tokens;
            /* Woken when the next whole token is there (at least 1 ms on). */
            double need = (double)(tokens + 1) - p->tokens;
            int64_t in = (int64_t)ceil(need * 1000.0 / p->rate);
            *wake_ms = now_ms + (in > 0 ? in : 1);
        }
    }
    return n;
}

void fc_pace_take(fc_pace_t *p, size_t n)
{
    if (p->rate > 0)
        p->tokens -= (double)n;
}

void fc_pace_success(fc_pace_t *p, int64_t latency_ms, size_t running)
{
    p->rtt_ms = p->rtt_ms > 0 ? p->rtt_ms + RTT_WEIGHT * ((double)latency_ms - p->rtt_ms)
                              : (double)latency_ms;
    /* Grows only while in use: an idle subscription's limit says nothing about the endpoint. */
    if (p->limit < p->max && (double)running * 2 >= p->limit)
        p->limit = fmin(p->max, p->limit + 1.0 / p->limit);
}

int fc_pace_congestion(fc_pace_t *p, int64_t now_ms, int64_t retry_after_ms, int64_t cap_ms)
{
    if (retry_after_ms > 0) {
        int64_t hold = retry_after_ms < cap_ms || cap_ms <= 0 ? retry_after_ms : cap_ms;
        if (now_ms + hold > p->hold_until_ms)
            p->hold_until_ms = now_ms + hold;
    }
    double rtt = p->rtt_ms > MIN_RTT_MS ? p->rtt_ms : MIN_RTT_MS;
    if ((double)(now_ms - p->last_drop_ms) < rtt)
        return 0; /* the same round trip's refusals count once */
    p->last_drop_ms = now_ms;
    p->limit = clamp(floor(p->limit * DECREASE), 1, p->max);
    return 1;
}

int64_t fc_retry_delay_ms(int64_t min_ms, int64_t max_ms, int attempt, int64_t retry_after_ms)
{
    uint64_t min = (uint64_t)(min_ms > 0 ? min_ms : 0), max = (uint64_t)(max_ms > 0 ? max_ms : 0);
    if (max < min)
        max = min;
    /* Jittered from the first retry on, never below min_backoff_ms (a promise to the
     * endpoint): uniform between min and min * 2^attempt, capped at max. Full jitter from 0
     * would leave every first retry exactly at min, all at once. */
    uint64_t hi = msm_backoff_cap_ms(attempt > 0 ? (uint32_t)attempt + 1 : 2, min, max);
    uint64_t delay = hi > min ? min + msm_rand_below(hi - min + 1) : hi;
    /* A Retry-After is honoured up to max_backoff_ms: an endpoint cannot park a task for
     * longer than its subscription allows. */
    if (retry_after_ms > 0 && (uint64_t)retry_after_ms > delay)
        delay = (uint64_t)retry_after_ms < max ? (uint64_t)retry_after_ms : max;
    return (int64_t)delay;
}

int fc_pace_limit(const fc_pace_t *p)
{
    return (int)p->limit;
}
