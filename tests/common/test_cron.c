/* SPDX-License-Identifier: MIT */
/* Cron expressions: what parses and what is refused (with the field named), and the next
 * matching minute across month ends, leap years, the day-of-month/day-of-week rule, names,
 * steps and macros. Pure functions: times are fixed RFC 3339 strings. */
#include "msm_test.h"

#include "msm/cron.h"
#include "msm/err.h"
#include "msm/time.h"

#include <stdio.h>
#include <string.h>

static int64_t at(const char *rfc3339)
{
    int64_t t = 0;
    CU_ASSERT_EQUAL_FATAL(msm_time_parse(rfc3339, &t), MSM_OK);
    return t;
}

/* The next match of @p expr after @p after, as RFC 3339 ("" when none). */
static const char *next_of(const char *expr, const char *after, char *buf, size_t n)
{
    msm_cron_t c;
    char why[160];
    if (msm_cron_parse(expr, &c, why, sizeof(why)) != MSM_OK) {
        if (snprintf(buf, n, "parse error: %s", why) >= (int)n)
            buf[n - 1] = '\0'; /* cut: still shown */
        return buf;
    }
    int64_t t = msm_cron_next(&c, at(after));
    if (t == -1) /* matches are whole minutes: -1 is never one */
        snprintf(buf, n, "none");
    else
        msm_time_format(t, buf, n);
    return buf;
}

static void test_next(void)
{
    static const struct {
        const char *expr, *after, *want;
    } cases[] = {
        /* every minute: strictly after, whole minutes */
        {"* * * * *", "2026-03-01T10:00:00Z", "2026-03-01T10:01:00.000Z"},
        {"* * * * *", "2026-03-01T10:00:59.999Z", "2026-03-01T10:01:00.000Z"},
        {"* * * * *", "2026-03-01T10:00:00.001Z", "2026-03-01T10:01:00.000Z"},
        /* steps */
        {"*/5 * * * *", "2026-03-01T10:03:00Z", "2026-03-01T10:05:00.000Z"},
        {"*/5 * * * *", "2026-03-01T10:55:00Z", "2026-03-01T11:00:00.000Z"},
        {"10-30/10 * * * *", "2026-03-01T10:31:00Z", "2026-03-01T11:10:00.000Z"},
        {"7/20 * * * *", "2026-03-01T10:28:00Z", "2026-03-01T10:47:00.000Z"},
        {"0 */6 * * *", "2026-03-01T19:00:00Z", "2026-03-02T00:00:00.000Z"},
        /* lists and ranges */
        {"0,30 9-17 * * *", "2026-03-01T17:30:00Z", "2026-03-02T09:00:00.000Z"},
        {"15 1,13 * * *", "2026-03-01T01:15:00Z", "2026-03-01T13:15:00.000Z"},
        /* month ends and leap years */
        {"0 0 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T00:00:00.000Z"},
        {"0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00.000Z"},
        {"0 0 29 2 *", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00.000Z"}, /* 2100: no */
        {"0 0 1 1 *", "2026-12-31T23:59:00Z", "2027-01-01T00:00:00.000Z"},
        {"59 23 31 12 *", "2026-12-31T23:58:59Z", "2026-12-31T23:59:00.000Z"},
        /* names, case-insensitive, in ranges */
        {"0 12 * JAN,jul *", "2026-02-01T00:00:00Z", "2026-07-01T12:00:00.000Z"},
        {"0 9 * * MON-FRI", "2026-03-06T09:00:00Z", "2026-03-09T09:00:00.000Z"}, /* Fri->Mon */
        {"0 9 * * sun", "2026-03-01T09:00:00Z", "2026-03-08T09:00:00.000Z"},
        /* day of week 7 is Sunday, also as the end of "a/n" (found by fuzz_cron: "7/7") */
        {"0 0 * * 7", "2026-03-02T00:00:00Z", "2026-03-08T00:00:00.000Z"},
        {"0 0 * * 7/7", "2026-03-02T00:00:00Z", "2026-03-08T00:00:00.000Z"},
        {"0 0 * * 1/2", "2026-03-07T00:00:00Z", "2026-03-08T00:00:00.000Z"},
        {"0 0 * * */7", "2026-03-02T00:00:00Z", "2026-03-08T00:00:00.000Z"},
        {"0 0 * * 5-7", "2026-03-02T00:00:00Z", "2026-03-06T00:00:00.000Z"},
        /* both day fields restricted: either matches (the 13th, or any Friday) */
        {"0 0 13 * 5", "2026-03-01T00:00:00Z", "2026-03-06T00:00:00.000Z"},
        {"0 0 13 * 5", "2026-03-06T00:00:00Z", "2026-03-13T00:00:00.000Z"},
        {"0 0 13 * 5", "2026-03-13T00:00:00Z", "2026-03-20T00:00:00.000Z"},
        /* one of them '*'-led: both must match (Friday the 13th... of odd days) */
        {"0 0 */2 * 5", "2026-03-01T00:00:00Z", "2026-03-13T00:00:00.000Z"},
        {"0 0 13 * *", "2026-03-01T00:00:00Z", "2026-03-13T00:00:00.000Z"},
        {"0 0 * * 5", "2026-03-01T00:00:00Z", "2026-03-06T00:00:00.000Z"},
        /* macros */
        {"@hourly", "2026-03-01T10:00:00Z", "2026-03-01T11:00:00.000Z"},
        {"@daily", "2026-03-01T10:00:00Z", "2026-03-02T00:00:00.000Z"},
        {"@midnight", "2026-03-01T00:00:00Z", "2026-03-02T00:00:00.000Z"},
        {"@weekly", "2026-03-01T00:00:00Z", "2026-03-08T00:00:00.000Z"},
        {"@monthly", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00.000Z"},
        {"@yearly", "2026-03-01T00:00:00Z", "2027-01-01T00:00:00.000Z"},
        {"@ANNUALLY", "2026-03-01T00:00:00Z", "2027-01-01T00:00:00.000Z"},
        /* spaces and tabs between fields */
        {"  0\t12  * *   *  ", "2026-03-01T00:00:00Z", "2026-03-01T12:00:00.000Z"},
        /* before 1970 too */
        {"30 * * * *", "1969-12-31T23:00:00Z", "1969-12-31T23:30:00.000Z"},
        /* never */
        {"0 0 30 2 *", "2026-03-01T00:00:00Z", "none"},
        {"0 0 31 4,6,9,11 *", "2026-03-01T00:00:00Z", "none"},
        {"* * * * *", "9999-12-31T23:59:00Z", "none"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char got[80];
        next_of(cases[i].expr, cases[i].after, got, sizeof(got));
        if (strcmp(got, cases[i].want) != 0)
            fprintf(stderr, "\n  \"%s\" after %s: got %s, want %s", cases[i].expr, cases[i].after,
                    got, cases[i].want);
        CU_ASSERT_STRING_EQUAL(got, cases[i].want);
    }
}

/* Walking next() from one match to the next enumerates exactly the matching minutes. */
static void test_walk(void)
{
    msm_cron_t c;
    CU_ASSERT_EQUAL_FATAL(msm_cron_parse("*/15 8-9 * * MON", &c, NULL, 0), MSM_OK);
    int64_t t = at("2026-03-01T00:00:00Z"), end = at("2026-03-31T00:00:00Z");
    int n = 0;
    while ((t = msm_cron_next(&c, t)) > 0 && t < end) {
        char s[32];
        msm_time_format(t, s, sizeof(s));
        /* Mondays of March 2026: 2, 9, 16, 23, 30 */
        char day[3] = {s[8], s[9], '\0'};
        CU_ASSERT_PTR_NOT_NULL(strstr("02 09 16 23 30", day));
        CU_ASSERT_TRUE(s[11] == '0' && (s[12] == '8' || s[12] == '9'));
        CU_ASSERT_EQUAL((t / 60000) % 15, 0);
        n++;
    }
    CU_ASSERT_EQUAL(n, 5 * 2 * 4);
}

static void test_refused(void)
{
    static const struct {
        const char *expr, *why; /* a part of the message */
    } cases[] = {
        {"", "5 fields"},
        {"* * * *", "5 fields"},
        {"* * * * * *", "5 fields"}, /* seconds or years: not supported */
        {"60 * * * *", "minute field: 60 is out of range 0-59"},
        {"* 24 * * *", "hour field: 24 is out of range 0-23"},
        {"* * 0 * *", "day-of-month field: 0 is out of range 1-31"},
        {"* * 32 * *", "day-of-month field: 32"},
        {"* * * 13 *", "month field: 13 is out of range 1-12"},
        {"* * * 0 *", "month field: 0"},
        {"* * * * 8", "day-of-week field: 8 is out of range 0-7"},
        {"*/0 * * * *", "minute field: step 0"},
        {"*/61 * * * *", "minute field: step 61"},
        {"*/ * * * *", "a step needs a number"},
        {"30-10 * * * *", "runs backwards"},
        {"* * * * FRI-MON", "runs backwards"},
        {"1,,2 * * * *", "minute field: expected a number"},
        {"1, * * * *", "minute field: expected a number"},
        {"a * * * *", "minute field: expected a number"},
        {"* * * JANUARY *", "month field: expected a number 1-12 or a name such as JAN"},
        {"* * * * MON,TUES", "day-of-week field"},
        {"* * * FOO *", "month field"},
        {"1-2-3 * * * *", "minute field: unexpected"},
        {"? * * * *", "minute field"},
        {"L * * * *", "minute field"},
        {"* * 15W * *", "day-of-month field: unexpected"},
        {"* * * * 5#3", "day-of-week field: unexpected"},
        {"0 0 * * MON/2", "day-of-week field"}, /* accepted: checked below */
        {"@reboot", "unknown macro"},
        {"@every 5m", "unknown macro"},
        {"@daily extra", "unknown macro"},
        {"99999999999999999999 * * * *", "minute field"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        msm_cron_t c;
        char why[160] = "";
        int rc = msm_cron_parse(cases[i].expr, &c, why, sizeof(why));
        if (strcmp(cases[i].expr, "0 0 * * MON/2") == 0) {
            /* a start name with a step is "a/n", to 7: Mon Wed Fri Sun */
            CU_ASSERT_EQUAL(rc, MSM_OK);
            CU_ASSERT_EQUAL(c.wdays, (1 << 0) | (1 << 1) | (1 << 3) | (1 << 5));
            continue;
        }
        if (rc == MSM_OK || !strstr(why, cases[i].why))
            fprintf(stderr, "\n  \"%s\": rc %d, why \"%s\", want \"%s\"", cases[i].expr, rc, why,
                    cases[i].why);
        CU_ASSERT_EQUAL(rc, MSM_ERR_PARSE);
        CU_ASSERT_PTR_NOT_NULL(strstr(why, cases[i].why));
    }
    char longtext[MSM_CRON_TEXT_MAX + 10];
    memset(longtext, ' ', sizeof(longtext) - 1);
    longtext[sizeof(longtext) - 1] = '\0';
    msm_cron_t c;
    CU_ASSERT_EQUAL(msm_cron_parse(longtext, &c, NULL, 0), MSM_ERR_PARSE);
    CU_ASSERT_EQUAL(msm_cron_parse(NULL, &c, NULL, 0), MSM_ERR_PARSE);
}

static void test_bits(void)
{
    msm_cron_t c;
    CU_ASSERT_EQUAL_FATAL(msm_cron_parse("0-59/20,5 */12 1,15-16 1-12/3 0-6/2", &c, NULL, 0),
                          MSM_OK);
    CU_ASSERT_EQUAL(c.minutes, (1ULL << 0) | (1ULL << 5) | (1ULL << 20) | (1ULL << 40));
    CU_ASSERT_EQUAL(c.hours, (1u << 0) | (1u << 12));
    CU_ASSERT_EQUAL(c.mdays, (1u << 1) | (1u << 15) | (1u << 16));
    CU_ASSERT_EQUAL(c.months, (1u << 1) | (1u << 4) | (1u << 7) | (1u << 10));
    CU_ASSERT_EQUAL(c.wdays, (1u << 0) | (1u << 2) | (1u << 4) | (1u << 6));
    CU_ASSERT_FALSE(c.mday_star);
    CU_ASSERT_FALSE(c.wday_star);
    CU_ASSERT_EQUAL_FATAL(msm_cron_parse("* * * * *", &c, NULL, 0), MSM_OK);
    CU_ASSERT_EQUAL(c.minutes, (1ULL << 60) - 1);
    CU_ASSERT_EQUAL(c.wdays, 0x7f);
    CU_ASSERT_EQUAL(c.months, 0x1ffe);
    CU_ASSERT_TRUE(c.mday_star && c.wday_star);
}

static CU_TestInfo tests[] = {
    {"next matching minute", test_next},
    {"walking a month", test_walk},
    {"refused, naming the field", test_refused},
    {"fields as bits", test_bits},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"cron", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
