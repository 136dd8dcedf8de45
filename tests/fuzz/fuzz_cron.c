/* SPDX-License-Identifier: MIT */
/* libFuzzer target: msm_cron_parse() on arbitrary bytes, as PUT /v1/schedules parses a
 * schedule's cron (docs/schedules.md). A refused expression says why; a parsed one has every
 * field in range, and msm_cron_next() from a few instants answers a whole minute after the
 * instant, one the expression matches (checked with gmtime_r), or -1; walking on from it
 * never goes back. */
#include "msm/cron.h"
#include "msm/err.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_cron: %s\n", what);
    abort();
}

/* Whether @p t (unix ms, a whole minute) is one @p c matches, by the C library's calendar. */
static int matches(const msm_cron_t *c, int64_t t)
{
    time_t s = (time_t)(t / 1000);
    struct tm tm;
    if (!gmtime_r(&s, &tm))
        return 0;
    int dom = (c->mdays >> tm.tm_mday) & 1, dow = (c->wdays >> tm.tm_wday) & 1;
    int day = c->mday_star || c->wday_star ? dom && dow : dom || dow;
    return ((c->minutes >> tm.tm_min) & 1) && ((c->hours >> tm.tm_hour) & 1) &&
           ((c->months >> (tm.tm_mon + 1)) & 1) && day;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    msm_cron_t c;
    char why[160] = "";
    if (msm_cron_parse(text, &c, why, sizeof(why)) != MSM_OK) {
        if (!why[0])
            fail("refused without a reason");
        free(text);
        return 0;
    }
    free(text);
    if (!c.minutes || c.minutes >> 60 || !c.hours || c.hours >> 24 || !c.mdays || (c.mdays & 1) ||
        !c.months || (c.months & 1) || c.months >> 13 || !c.wdays || c.wdays >> 7)
        fail("a field out of range, or empty");
    /* 1970, 2000-02-28 23:59:30, 2026-12-31 23:59:59.999 */
    static const int64_t starts[] = {0, 951782370000LL, 1798761599999LL};
    for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
        int64_t t = starts[i];
        for (int step = 0; step < 4; step++) {
            int64_t n = msm_cron_next(&c, t);
            if (n == -1)
                break;
            if (n <= t || n % 60000 != 0)
                fail("next is not a whole minute after the instant");
            if (!matches(&c, n))
                fail("next is a minute the expression does not match");
            t = n;
        }
    }
    return 0;
}
