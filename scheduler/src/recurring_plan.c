/* SPDX-License-Identifier: MIT */
/* Which ticks of a recurring schedule a firing publishes (docs/schedules.md "Catching up"):
 * a pure function of the schedule, the last settled due time and the clock, so every
 * scheduler that looks at the same moment decides alike, and tests need no clock. */
#include "sch_int.h"

#include "msm/err.h"

#include <stdlib.h>
#include <string.h>

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* The missed ticks in (start, end]: the latest @p keep into @p due (in order), the others
 * counted in @p skipped when after @p count_after, the latest of all in @p last. */
typedef struct {
    int64_t start, end;
    size_t keep;
    int64_t count_after;
} missed_t;

/* every_ms ticks are multiples: counted, not walked. */
static void every_missed(int64_t every, const missed_t *m, sch_plan_t *out)
{
    int64_t a = floor_div(m->start, every) + 1, b = floor_div(m->end, every);
    if (b < a)
        return;
    int64_t total = b - a + 1;
    size_t keep = m->keep;
    int64_t count_after = m->count_after;
    int64_t *due = out->due;
    size_t *ndue = &out->n;
    uint64_t *skipped = &out->skipped;
    out->last_ms = b * every;
    int64_t kept = total < (int64_t)keep ? total : (int64_t)keep;
    for (int64_t i = b - kept + 1; i <= b; i++)
        due[(*ndue)++] = i * every;
    /* the skipped ones are a .. b - kept; only those after count_after are counted */
    int64_t lo = max64(a, floor_div(count_after, every) + 1), hi = b - kept;
    if (hi >= lo)
        *skipped += (uint64_t)(hi - lo + 1);
}

/* cron ticks are walked (at most one a minute: the lookback bounds the walk). A ring keeps
 * the latest @p keep; the others are skipped. */
static int cron_missed(const msm_schedule_t *s, const missed_t *m, sch_plan_t *plan)
{
    size_t keep = m->keep, head = 0, held = 0; /* the ring: due[head .. head+held) mod keep */
    int64_t *due = plan->due;
    for (int64_t t = msm_schedule_next(s, m->start); t != -1 && t <= m->end;
         t = msm_schedule_next(s, t)) {
        plan->last_ms = t;
        int64_t out = t; /* what leaves the ring (t itself when keep is 0) */
        if (keep) {
            if (held == keep) {
                out = due[head];
                due[head] = t;
                head = (head + 1) % keep;
            } else {
                due[(head + held++) % keep] = t;
                out = INT64_MIN;
            }
        }
        if (out != INT64_MIN && out > m->count_after)
            plan->skipped++;
    }
    /* unroll the ring into due order */
    int64_t *tmp = held ? malloc(held * sizeof(*tmp)) : NULL;
    if (held && !tmp)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < held; i++)
        tmp[i] = due[(head + i) % keep];
    if (held)
        memcpy(due, tmp, held * sizeof(*tmp));
    free(tmp);
    plan->n = held;
    return MSM_OK;
}

int sch__plan(const msm_schedule_t *s,
              int64_t from_ms,
              int64_t now_ms,
              int64_t grace_ms,
              size_t cap,
              int64_t count_after_ms,
              sch_plan_t *out)
{
    memset(out, 0, sizeof(*out));
    out->last_ms = from_ms;
    if (now_ms <= from_ms)
        return MSM_OK;
    int64_t start = max64(from_ms, now_ms - SCH_CATCH_UP_LOOKBACK_MS);
    out->last_ms = start;                   /* ticks before the lookback: dropped, settled */
    int64_t missed_end = now_ms - grace_ms; /* due at or before it: missed */
    size_t keep = s->catch_up == MSM_CATCH_UP_ALL ? cap : s->catch_up == MSM_CATCH_UP_LAST ? 1 : 0;
    /* on time: at most one a second (every_ms >= 1000) over the grace */
    size_t room = keep + (size_t)(grace_ms / MSM_SCHEDULE_EVERY_MIN_MS) + 2;
    out->due = malloc(room * sizeof(*out->due));
    if (!out->due)
        return MSM_ERR_NOMEM;
    if (missed_end > start) {
        missed_t m = {start, missed_end, keep, count_after_ms};
        if (s->cron && cron_missed(s, &m, out) != MSM_OK) {
            sch__plan_deinit(out);
            return MSM_ERR_NOMEM;
        }
        if (!s->cron)
            every_missed(s->every_ms, &m, out);
    }
    for (int64_t t = msm_schedule_next(s, max64(start, missed_end)); t != -1 && t <= now_ms;
         t = msm_schedule_next(s, t)) {
        if (out->n == room)
            break; /* cannot happen: every_ms >= 1000 and cron a minute */
        out->due[out->n++] = t;
        out->last_ms = t;
    }
    return MSM_OK;
}

void sch__plan_deinit(sch_plan_t *p)
{
    free(p->due);
    p->due = NULL;
    p->n = 0;
}
