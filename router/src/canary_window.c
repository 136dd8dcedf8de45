/* SPDX-License-Identifier: MIT */
/* Delivery canaries, the pure part (canary.h): the sliding windows of outcomes, the split of
 * requests between the canary and the baseline, and the rollback rule. */
#include "canary.h"

#include "msm/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int msm__rt_window_init(rt_window_t *w, int min_events)
{
    memset(w, 0, sizeof(*w));
    w->cap = min_events > RT_CANARY_WINDOW_MIN ? (size_t)min_events : RT_CANARY_WINDOW_MIN;
    w->failed = calloc(w->cap, sizeof(*w->failed));
    w->latency_ms = calloc(w->cap, sizeof(*w->latency_ms));
    if (!w->failed || !w->latency_ms) {
        msm__rt_window_deinit(w);
        return MSM_ERR_NOMEM;
    }
    return MSM_OK;
}

void msm__rt_window_deinit(rt_window_t *w)
{
    free(w->failed);
    free(w->latency_ms);
    memset(w, 0, sizeof(*w));
}

void msm__rt_window_add(rt_window_t *w, int failed, int64_t latency_ms)
{
    if (!w->cap)
        return;
    if (w->n == w->cap)
        w->nfailed -= w->failed[w->head]; /* the oldest leaves */
    else
        w->n++;
    w->failed[w->head] = failed ? 1 : 0;
    w->latency_ms[w->head] = latency_ms < 0 ? 0 : latency_ms > UINT32_MAX ? UINT32_MAX
                                                                          : (uint32_t)latency_ms;
    w->nfailed += w->failed[w->head];
    w->head = (w->head + 1) % w->cap;
}

double msm__rt_window_failure_ratio(const rt_window_t *w)
{
    return w->n ? (double)w->nfailed / (double)w->n : 0.0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int64_t msm__rt_window_p99(const rt_window_t *w)
{
    if (!w->n)
        return 0;
    /* Judged once a second, not per outcome: a sorted copy is cheap enough. */
    uint32_t *v = malloc(w->n * sizeof(*v));
    if (!v)
        return 0;
    memcpy(v, w->latency_ms, w->n * sizeof(*v)); /* before it wraps the first n are used */
    qsort(v, w->n, sizeof(*v), cmp_u32);
    size_t rank = (w->n * 99 + 99) / 100; /* nearest rank: ceil(0.99 n), 1-based */
    int64_t p = v[rank - 1];
    free(v);
    return p;
}

int msm__rt_canary_judge(const rt_window_t *canary, const rt_window_t *baseline,
                         const msm_canary_t *conf, char *why, size_t n)
{
    size_t min = conf->min_events > 0 ? (size_t)conf->min_events : 1;
    if (canary->n < min || baseline->n < min)
        return 0;
    double fc = msm__rt_window_failure_ratio(canary), fb = msm__rt_window_failure_ratio(baseline);
    if (fc - fb > conf->max_failure_ratio) {
        snprintf(why, n,
                 "failure ratio %.3f over the last %zu outcomes against %.3f for the baseline "
                 "(max_failure_ratio %.3f)",
                 fc, canary->n, fb, conf->max_failure_ratio);
        return 1;
    }
    int64_t pc = msm__rt_window_p99(canary), pb = msm__rt_window_p99(baseline);
    if ((double)pc > RT_CANARY_P99_FACTOR * (double)pb && pc - pb > RT_CANARY_P99_SLACK_MS) {
        snprintf(why, n, "p99 latency %lld ms against %lld ms for the baseline",
                 (long long)pc, (long long)pb);
        return 1;
    }
    return 0;
}

int msm__rt_canary_split(double *credit, double share)
{
    *credit += share;
    if (*credit >= 1.0 - 1e-9) {
        *credit -= 1.0;
        return 1;
    }
    return 0;
}

static const char *const state_names[] = {"", "active", "rolled_back", "promoted"};

const char *msm__rt_canary_state_name(rt_canary_state_t s)
{
    return s >= RT_CANARY_NONE && s <= RT_CANARY_PROMOTED ? state_names[s] : "";
}

rt_canary_state_t msm__rt_canary_state_parse(const char *s)
{
    for (int i = RT_CANARY_ACTIVE; s && i <= RT_CANARY_PROMOTED; i++) {
        if (strcmp(s, state_names[i]) == 0)
            return (rt_canary_state_t)i;
    }
    return RT_CANARY_NONE;
}
