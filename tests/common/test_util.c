/* SPDX-License-Identifier: MIT */
/* Small utilities: RFC 3339 time, UUIDv7 ids, exponential backoff with full jitter, trace
 * context and span lines. */
#include "msm_test.h"
#include "msm/backoff.h"
#include "msm/err.h"
#include "msm/id.h"
#include "msm/log.h"
#include "msm/time.h"
#include "msm/trace.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- time ---- */

static void test_time_clocks(void)
{
    uint64_t m1 = msm_time_mono_ms();
    int64_t u = msm_time_unix_ms();
    CU_ASSERT_TRUE(u > 1700000000000LL); /* after Nov 2023 */
    CU_ASSERT_TRUE(u < 4102444800000LL); /* before 2100 */
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint64_t m2 = msm_time_mono_ms();
    CU_ASSERT_TRUE(m2 - m1 >= 20);
    CU_ASSERT_TRUE(m2 - m1 < 2000);
    uint64_t us = msm_time_mono_us();
    CU_ASSERT_TRUE(us / 1000 >= m2);
    time_t now = time(NULL);
    CU_ASSERT_TRUE(llabs(msm_time_unix_ms() / 1000 - (int64_t)now) <= 1);
}

static int64_t parse_ok(const char *s)
{
    int64_t v = INT64_MIN;
    int rc = msm_time_parse(s, &v);
    if (rc != MSM_OK)
        fprintf(stderr, "\n  unexpected parse failure: \"%s\"\n", s);
    CU_ASSERT_EQUAL(rc, MSM_OK);
    return v;
}

static void test_time_parse_examples(void)
{
    /* 2026-11-25T12:00:00Z is 1795608000 s after the epoch. */
    CU_ASSERT_EQUAL(parse_ok("2026-11-25T12:00:00Z"), 1795608000000LL);
    CU_ASSERT_EQUAL(parse_ok("2026-11-25T12:00:00.123+02:00"), 1795608000000LL - 7200000 + 123);
    CU_ASSERT_EQUAL(parse_ok("2026-11-25T12:00:00.5-05:30"), 1795608000000LL + 19800000 + 500);
    CU_ASSERT_EQUAL(parse_ok("2026-11-25t12:00:00z"), 1795608000000LL);
    CU_ASSERT_EQUAL(parse_ok("2026-11-25T12:00:00+00:00"), 1795608000000LL);
    CU_ASSERT_EQUAL(parse_ok("2026-11-25T12:00:00-00:00"), 1795608000000LL);
    CU_ASSERT_EQUAL(parse_ok("1970-01-01T00:00:00Z"), 0);
    CU_ASSERT_EQUAL(parse_ok("1969-12-31T23:59:59.999Z"), -1);
    CU_ASSERT_EQUAL(parse_ok("1985-04-12T23:20:50.52Z"), 482196050520LL); /* RFC 3339 §5.8 */
    CU_ASSERT_EQUAL(parse_ok("1996-12-19T16:39:57-08:00"), 851042397000LL);
    /* Fractions longer than ms are truncated, not rounded. */
    CU_ASSERT_EQUAL(parse_ok("2026-11-25T12:00:00.123999999Z"), 1795608000123LL);
    CU_ASSERT_EQUAL(parse_ok("2026-11-25T12:00:00.000001Z"), 1795608000000LL);
    /* Leap years: 2024 and 2000 have Feb 29, and Dec 31 is day 366. */
    CU_ASSERT_EQUAL(parse_ok("2024-02-29T00:00:00Z"), 1709164800000LL);
    CU_ASSERT_EQUAL(parse_ok("2000-02-29T00:00:00Z"), 951782400000LL);
    CU_ASSERT_EQUAL(parse_ok("2024-12-31T00:00:00Z") - parse_ok("2024-01-01T00:00:00Z"),
                    365LL * 86400000);
    /* A leap second (RFC 3339 §5.7 example) counts as the next second, as in POSIX time. */
    CU_ASSERT_EQUAL(parse_ok("1990-12-31T23:59:60Z"), parse_ok("1991-01-01T00:00:00Z"));
    CU_ASSERT_EQUAL(parse_ok("1990-12-31T15:59:60-08:00"), parse_ok("1991-01-01T00:00:00Z"));
    /* Extremes of the grammar. */
    CU_ASSERT_EQUAL(parse_ok("0000-01-01T00:00:00Z"), MSM_TIME_MIN_MS);
    CU_ASSERT_EQUAL(parse_ok("9999-12-31T23:59:59.999Z"), MSM_TIME_MAX_MS);
    /* Not NUL-terminated input. */
    int64_t v = 0;
    CU_ASSERT_EQUAL(msm_time_parse_n("2026-11-25T12:00:00Zjunk", 20, &v), MSM_OK);
    CU_ASSERT_EQUAL(v, 1795608000000LL);
}

static void test_time_parse_rejects(void)
{
    static const char *const bad[] = {
        "",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-02-29T00:00:00Z", /* 2026 is not a leap year */
        "1900-02-29T00:00:00Z", /* nor is 1900 */
        "2026-04-31T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "2026-01-32T00:00:00Z",
        "2026-11-25T24:00:00Z",
        "2026-11-25T12:60:00Z",
        "2026-11-25T12:00:61Z",
        "2026-11-25T12:00:00",      /* no offset */
        "2026-11-25 12:00:00Z",     /* space separator */
        "2026-11-25",               /* date only */
        "2026-11-25T12:00Z",        /* no seconds */
        "2026-11-25T12:00:00.Z",    /* empty fraction */
        "2026-11-25T12:00:00,5Z",   /* comma */
        "2026-11-25T12:00:00+0200", /* offset without colon */
        "2026-11-25T12:00:00+02",
        "2026-11-25T12:00:00+24:00",
        "2026-11-25T12:00:00+02:60",
        "2026-11-25T12:00:00Z ",
        " 2026-11-25T12:00:00Z",
        "2026-11-25T12:00:00ZZ",
        "26-11-25T12:00:00Z",
        "+2026-11-25T12:00:00Z",
        "2026-1-25T12:00:00Z",
        "2026-11-25T1:00:00Z",
        "2026-11-25T12:00:00.12a4Z",
        "2026-11-25X12:00:00Z",
        "2026/11/25T12:00:00Z",
        "２026-11-25T12:00:00Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 42;
        int rc = msm_time_parse(bad[i], &v);
        if (rc != MSM_ERR_PARSE)
            fprintf(stderr, "\n  accepted invalid \"%s\"\n", bad[i]);
        CU_ASSERT_EQUAL(rc, MSM_ERR_PARSE);
        CU_ASSERT_EQUAL(v, 42); /* untouched */
    }
    int64_t v;
    CU_ASSERT_EQUAL(msm_time_parse(NULL, &v), MSM_ERR_PARSE);
    /* Truncated in the middle: every prefix of a valid stamp is invalid. */
    const char *full = "2026-11-25T12:00:00.123+02:00";
    for (size_t n = 0; n < strlen(full); n++)
        CU_ASSERT_EQUAL(msm_time_parse_n(full, n, &v), MSM_ERR_PARSE);
}

static void test_time_format(void)
{
    char buf[MSM_TIME_RFC3339_SIZE];
    CU_ASSERT_EQUAL(msm_time_format(1795608000123LL, buf, sizeof(buf)), 24);
    CU_ASSERT_STRING_EQUAL(buf, "2026-11-25T12:00:00.123Z");
    msm_time_format(0, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "1970-01-01T00:00:00.000Z");
    msm_time_format(-1, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "1969-12-31T23:59:59.999Z");
    /* A millisecond before and after midnight of a leap day. */
    msm_time_format(1709164800000LL - 1, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "2024-02-28T23:59:59.999Z");
    msm_time_format(1709164800000LL, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "2024-02-29T00:00:00.000Z");
    msm_time_format(1709164800000LL + 86400000, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "2024-03-01T00:00:00.000Z");
    msm_time_format(MSM_TIME_MIN_MS, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "0000-01-01T00:00:00.000Z");
    msm_time_format(MSM_TIME_MAX_MS, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "9999-12-31T23:59:59.999Z");
    CU_ASSERT_EQUAL(msm_time_format(MSM_TIME_MAX_MS + 1, buf, sizeof(buf)), 0);
    CU_ASSERT_STRING_EQUAL(buf, "");
    CU_ASSERT_EQUAL(msm_time_format(MSM_TIME_MIN_MS - 1, buf, sizeof(buf)), 0);
    CU_ASSERT_EQUAL(msm_time_format(0, buf, sizeof(buf) - 1), 0);

    /* Round trip over many instants, including every ms around a day boundary. */
    int64_t v;
    for (int64_t t = 86400000 - 1500; t < 86400000 + 1500; t++) {
        msm_time_format(t, buf, sizeof(buf));
        CU_ASSERT_EQUAL_FATAL(msm_time_parse(buf, &v), MSM_OK);
        CU_ASSERT_EQUAL_FATAL(v, t);
    }
    for (int i = 0; i < 20000; i++) {
        int64_t t = MSM_TIME_MIN_MS + (int64_t)msm_rand_below(
                                          (uint64_t)(MSM_TIME_MAX_MS - MSM_TIME_MIN_MS) + 1);
        CU_ASSERT_EQUAL_FATAL(msm_time_format(t, buf, sizeof(buf)), 24);
        CU_ASSERT_EQUAL_FATAL(msm_time_parse(buf, &v), MSM_OK);
        CU_ASSERT_EQUAL_FATAL(v, t);
    }
    /* Agrees with the C library for the present day. */
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char want[32];
    strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
    msm_time_format((int64_t)now * 1000, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, want);
}

/* ---- ids ---- */

static void test_id_format_and_fields(void)
{
    int64_t before = msm_time_unix_ms();
    msm_id_t id;
    msm_id_new(&id);
    int64_t after = msm_time_unix_ms();
    char s[MSM_ID_STR_SIZE];
    CU_ASSERT_PTR_EQUAL(msm_id_format(&id, s), s);
    CU_ASSERT_EQUAL(strlen(s), 36);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            CU_ASSERT_EQUAL(s[i], '-');
        } else {
            CU_ASSERT_TRUE((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'));
        }
    }
    CU_ASSERT_EQUAL(s[14], '7');                  /* version */
    CU_ASSERT_PTR_NOT_NULL(strchr("89ab", s[19])); /* variant 0b10 */
    CU_ASSERT_EQUAL(msm_id_version(&id), 7);
    int64_t ts = msm_id_timestamp_ms(&id);
    CU_ASSERT_TRUE(ts >= before && ts <= after + 1);

    msm_id_t back;
    CU_ASSERT_EQUAL(msm_id_parse(s, &back), MSM_OK);
    CU_ASSERT_EQUAL(msm_id_compare(&id, &back), 0);
    char s2[MSM_ID_STR_SIZE];
    msm_id_new_str(s2);
    CU_ASSERT_EQUAL(msm_id_parse(s2, NULL), MSM_OK);
    CU_ASSERT_TRUE(strcmp(s, s2) < 0);
}

static void test_id_known_vector(void)
{
    /* RFC 9562 Appendix A.6 example: 2022-02-22T19:22:22Z = 0x017F22E279B0 ms. */
    msm_id_t id;
    CU_ASSERT_EQUAL(msm_id_parse("017F22E2-79B0-7CC3-98C4-DC0C0C07398F", &id), MSM_OK);
    CU_ASSERT_EQUAL(msm_id_version(&id), 7);
    CU_ASSERT_EQUAL(msm_id_timestamp_ms(&id), 0x017F22E279B0LL);
    CU_ASSERT_EQUAL(msm_id_timestamp_ms(&id), parse_ok("2022-02-22T19:22:22Z"));
    char s[MSM_ID_STR_SIZE];
    CU_ASSERT_STRING_EQUAL(msm_id_format(&id, s), "017f22e2-79b0-7cc3-98c4-dc0c0c07398f");
    /* A version 4 UUID parses, but has no timestamp. */
    CU_ASSERT_EQUAL(msm_id_parse("919108f7-52d1-4320-9bac-f847db4148a8", &id), MSM_OK);
    CU_ASSERT_EQUAL(msm_id_version(&id), 4);
    CU_ASSERT_EQUAL(msm_id_timestamp_ms(&id), -1);
}

static void test_id_parse_rejects(void)
{
    static const char *const bad[] = {
        "",
        "yesterday",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398",   /* 35 */
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398f0", /* 37 */
        "017f22e279b07cc398c4dc0c0c07398f",      /* no dashes */
        "{017f22e2-79b0-7cc3-98c4-dc0c0c07398f}",
        "urn:uuid:017f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        "017f22e2-79b0-7cc3-98c4_dc0c0c07398f",
        "017f22e-279b0-7cc3-98c4-dc0c0c07398f",
        "017f22g2-79b0-7cc3-98c4-dc0c0c07398f",
        " 17f22e2-79b0-7cc3-98c4-dc0c0c07398f",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_EQUAL(msm_id_parse(bad[i], NULL), MSM_ERR_PARSE);
    CU_ASSERT_EQUAL(msm_id_parse(NULL, NULL), MSM_ERR_PARSE);
    CU_ASSERT_EQUAL(msm_id_parse_n("017f22e2-79b0-7cc3-98c4-dc0c0c07398fXYZ", 36, NULL), MSM_OK);
}

static void test_id_strictly_increasing(void)
{
    enum { N = 10000 };
    msm_id_t *ids = malloc(N * sizeof(*ids));
    char(*strs)[MSM_ID_STR_SIZE] = malloc(N * sizeof(*strs));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ids);
    CU_ASSERT_PTR_NOT_NULL_FATAL(strs);
    for (int i = 0; i < N; i++) {
        msm_id_new(&ids[i]);
        msm_id_format(&ids[i], strs[i]);
    }
    int bytes_ok = 1, strs_ok = 1, ts_ok = 1, same_ms = 0;
    for (int i = 1; i < N; i++) {
        bytes_ok &= msm_id_compare(&ids[i - 1], &ids[i]) < 0;
        strs_ok &= strcmp(strs[i - 1], strs[i]) < 0;
        int64_t a = msm_id_timestamp_ms(&ids[i - 1]), b = msm_id_timestamp_ms(&ids[i]);
        ts_ok &= a <= b;
        same_ms += a == b;
    }
    CU_ASSERT_TRUE(bytes_ok);
    CU_ASSERT_TRUE(strs_ok);
    CU_ASSERT_TRUE(ts_ok);
    /* 10,000 ids take far less than 10,000 ms: the counter must have done the ordering. */
    CU_ASSERT_TRUE(same_ms > 0);
    free(ids);
    free(strs);
}

enum { THREADS = 4, PER_THREAD = 5000 };
static msm_id_t thread_ids[THREADS][PER_THREAD];

static void *id_worker(void *arg)
{
    msm_id_t *out = arg;
    for (int i = 0; i < PER_THREAD; i++)
        msm_id_new(&out[i]);
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return msm_id_compare(a, b);
}

static void test_id_threads_unique_and_ordered(void)
{
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, id_worker, thread_ids[t]), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    int ordered = 1;
    for (int t = 0; t < THREADS; t++)
        for (int i = 1; i < PER_THREAD; i++)
            ordered &= msm_id_compare(&thread_ids[t][i - 1], &thread_ids[t][i]) < 0;
    CU_ASSERT_TRUE(ordered);
    msm_id_t *all = malloc(sizeof(thread_ids));
    CU_ASSERT_PTR_NOT_NULL_FATAL(all);
    memcpy(all, thread_ids, sizeof(thread_ids));
    qsort(all, THREADS * PER_THREAD, sizeof(msm_id_t), cmp_id);
    int unique = 1;
    for (int i = 1; i < THREADS * PER_THREAD; i++)
        unique &= msm_id_compare(&all[i - 1], &all[i]) != 0;
    CU_ASSERT_TRUE(unique);
    free(all);
}

static void test_id_fork_differs(void)
{
    msm_id_t parent_id;
    msm_id_new(&parent_id);
    int pfd[2];
    CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
    pid_t pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        msm_id_t child[2];
        msm_id_new(&child[0]);
        child[1].b[0] = (uint8_t)(msm_rand_u64() & 0xff);
        ssize_t w = write(pfd[1], child, sizeof(child));
        _exit(w == (ssize_t)sizeof(child) ? 0 : 1);
    }
    close(pfd[1]);
    msm_id_t mine;
    msm_id_new(&mine);
    msm_id_t child[2];
    ssize_t r = read(pfd[0], child, sizeof(child));
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CU_ASSERT_EQUAL(r, (ssize_t)sizeof(child));
    CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* Parent and child made an id right after the fork: their random tails differ. */
    CU_ASSERT_NOT_EQUAL(memcmp(child[0].b + 12, mine.b + 12, 4), 0);
    CU_ASSERT_NOT_EQUAL(msm_id_compare(&child[0], &mine), 0);
}

/* ---- backoff ---- */

static void test_backoff_cap(void)
{
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(1, 100, 60000), 100);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(0, 100, 60000), 100);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(2, 100, 60000), 200);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(3, 100, 60000), 400);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(10, 100, 60000), 51200);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(11, 100, 60000), 60000);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(64, 100, 60000), 60000);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(65, 100, 60000), 60000);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(1000, 100, 60000), 60000);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(UINT32_MAX, 100, 60000), 60000);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(UINT32_MAX, 1, UINT64_MAX), UINT64_MAX);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(64, 1, UINT64_MAX), UINT64_C(1) << 63);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(63, 3, UINT64_MAX), UINT64_C(3) << 62);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(64, 3, UINT64_MAX), UINT64_MAX); /* 3 << 63 overflows */
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(5, 0, 60000), 0);
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(5, 500, 100), 100); /* max below min wins */
    CU_ASSERT_EQUAL(msm_backoff_cap_ms(5, 100, 0), 0);
}

static void test_backoff_bounds(void)
{
    for (uint32_t attempt = 0; attempt < 80; attempt++) {
        uint64_t cap = msm_backoff_cap_ms(attempt, 100, 60000);
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            uint64_t d = msm_backoff_delay_ms(attempt, 100, 60000);
            CU_ASSERT_TRUE_FATAL(d <= cap);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        /* Full jitter reaches both ends of [0, cap] given enough samples. */
        CU_ASSERT_TRUE(lo <= cap / 20);
        CU_ASSERT_TRUE(hi >= cap - cap / 20);
    }
    for (int i = 0; i < 1000; i++) {
        CU_ASSERT_EQUAL(msm_backoff_delay_ms(7, 0, 1000), 0);
        CU_ASSERT_TRUE(msm_backoff_delay_ms(1, 1, 1000) <= 1);
        (void)msm_backoff_delay_ms(UINT32_MAX, 1, UINT64_MAX); /* no overflow, no trap */
    }
}

static void test_backoff_distribution(void)
{
    /* 100,000 samples over [0, 1000] in 10 buckets: each holds ~10% (binomial sd ~0.1%). */
    enum { N = 100000, B = 10 };
    int bucket[B] = {0};
    double sum = 0;
    int distinct_small[4] = {0};
    for (int i = 0; i < N; i++) {
        uint64_t d = msm_backoff_delay_ms(4, 125, 60000); /* cap 1000 */
        CU_ASSERT_TRUE_FATAL(d <= 1000);
        bucket[d >= 1000 ? B - 1 : d / 100]++;
        sum += (double)d;
        uint64_t s = msm_backoff_delay_ms(2, 1, 100); /* cap 2: 0, 1 and 2 all appear */
        distinct_small[s]++;
    }
    for (int b = 0; b < B; b++)
        CU_ASSERT_TRUE(bucket[b] > N / B * 9 / 10 && bucket[b] < N / B * 11 / 10);
    double mean = sum / N;
    CU_ASSERT_TRUE(mean > 480 && mean < 520);
    for (int k = 0; k < 3; k++)
        CU_ASSERT_TRUE(distinct_small[k] > N / 3 * 9 / 10);
    CU_ASSERT_EQUAL(distinct_small[3], 0);
}

static void test_rand_helpers(void)
{
    CU_ASSERT_EQUAL(msm_rand_below(0), 0);
    CU_ASSERT_EQUAL(msm_rand_below(1), 0);
    int seen[7] = {0};
    double lo = 1, hi = 0;
    for (int i = 0; i < 70000; i++) {
        uint64_t v = msm_rand_below(7);
        CU_ASSERT_TRUE_FATAL(v < 7);
        seen[v]++;
        double d = msm_rand_double();
        CU_ASSERT_TRUE_FATAL(d >= 0 && d < 1);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    for (int k = 0; k < 7; k++)
        CU_ASSERT_TRUE(seen[k] > 9000 && seen[k] < 11000);
    CU_ASSERT_TRUE(lo < 0.001 && hi > 0.999);
    /* Bits look random: each of the 64 bits is set about half the time. */
    int ones[64] = {0};
    for (int i = 0; i < 10000; i++) {
        uint64_t v = msm_rand_u64();
        for (int b = 0; b < 64; b++)
            ones[b] += (int)((v >> b) & 1);
    }
    for (int b = 0; b < 64; b++)
        CU_ASSERT_TRUE(ones[b] > 4500 && ones[b] < 5500);
}

/* ---- trace context and spans ---- */

#define PARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void test_trace_ids(void)
{
    char a[MSM_TRACEPARENT_LEN + 1], b[MSM_TRACEPARENT_LEN + 1];
    msm_traceparent_new(a, 1);
    msm_traceparent_new(b, 0);
    CU_ASSERT_TRUE(msm_traceparent_valid(a));
    CU_ASSERT_TRUE(msm_traceparent_valid(b));
    CU_ASSERT_TRUE(msm_traceparent_sampled(a));
    CU_ASSERT_FALSE(msm_traceparent_sampled(b));
    CU_ASSERT_NOT_EQUAL(strncmp(a + 3, b + 3, 32), 0);
    /* A child keeps trace and flags; a later version's parent is answered in 00. */
    CU_ASSERT_EQUAL(msm_traceparent_child(PARENT, a), MSM_OK);
    CU_ASSERT_TRUE(msm_test_tp_child_of(a, PARENT));
    char later[] = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
    CU_ASSERT_EQUAL(msm_traceparent_child(later, later), MSM_OK);
    CU_ASSERT_TRUE(msm_test_tp_child_of(later, PARENT));
    CU_ASSERT_EQUAL(msm_traceparent_child("00-bad", a), MSM_ERR_INVALID);
    CU_ASSERT_FALSE(msm_traceparent_sampled(NULL));
    CU_ASSERT_FALSE(msm_traceparent_sampled("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02"));
    CU_ASSERT_TRUE(msm_traceparent_sampled("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"));
}

static void test_spans(void)
{
    msm_span_t s;
    CU_ASSERT_FALSE(msm_span_start(&s, NULL));
    CU_ASSERT_FALSE(msm_span_start(&s, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
    CU_ASSERT_TRUE(msm_span_start(&s, PARENT));
    CU_ASSERT_STRING_EQUAL(s.parent, PARENT);
    CU_ASSERT_TRUE(msm_test_tp_child_of(s.tp, PARENT));
    /* A batch's spans: storage only once one is sampled. */
    msm_spans_t set = {0};
    CU_ASSERT_PTR_NULL(msm_spans_start(&set, 3, 0, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
    CU_ASSERT_PTR_NULL(set.spans);
    CU_ASSERT_PTR_NOT_NULL(msm_spans_start(&set, 3, 1, PARENT));
    msm_span_t *root = msm_spans_start(&set, 3, 2, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    CU_ASSERT_STRING_EQUAL(root->parent, "");
    CU_ASSERT_TRUE(msm_traceparent_sampled(root->tp));
    CU_ASSERT_PTR_NULL(msm_spans_get(&set, 0));
    CU_ASSERT_PTR_NOT_NULL(msm_spans_get(&set, 1));
    CU_ASSERT_PTR_NULL(msm_spans_start(&set, 3, 3, PARENT)); /* out of range */
    msm_spans_deinit(&set);
    CU_ASSERT_PTR_NULL(msm_spans_get(&set, 1));
}

/* The span line as logfmt and as JSON: every field, values escaped. */
static void test_span_lines(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    msm_span_t s;
    CU_ASSERT_TRUE_FATAL(msm_span_start(&s, PARENT));
    msm_log_field_t f[] = {{"topic", "or\"ders"}, {"skipped", NULL}};
    msm_log_setup("test", MSM_LOG_INFO, MSM_LOG_LOGFMT, out);
    msm_span_end(&s, "router", "push", f, 2);
    msm_log_setup("test", MSM_LOG_INFO, MSM_LOG_JSON, out);
    msm_span_end(&s, "router", "push", f, 2);
    msm_log_setup("test", MSM_LOG_WARN, MSM_LOG_JSON, out);
    msm_span_end(&s, "router", "push", f, 2); /* below the level: nothing */
    fclose(out);
    msm_log_setup("test_util", MSM_LOG_INFO, MSM_LOG_LOGFMT, NULL);
    char want[256];
    snprintf(want, sizeof(want), " facility=trace msg=\"span\" trace_id=\"%.32s\" span_id=\"%.16s\" "
             "parent_id=\"00f067aa0ba902b7\" hop=\"router\" name=\"push\" duration_us=\"",
             s.tp + 3, s.tp + 36);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\" topic=\"or\\\"ders\"\n"));
    CU_ASSERT_PTR_NULL(strstr(text, "skipped"));
    const char *json_line = strchr(text, '\n') + 1;
    json_t *j = json_loads(json_line, JSON_DISABLE_EOF_CHECK, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "hop")), "router");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "topic")), "or\"ders");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "parent_id")), "00f067aa0ba902b7");
    CU_ASSERT_EQUAL(strchr(json_line, '\n')[1], '\0'); /* two lines in all */
    json_decref(j);
    free(text);
}

static CU_TestInfo time_tests[] = {
    {"clocks", test_time_clocks},
    {"parse RFC 3339 examples", test_time_parse_examples},
    {"parse rejects garbage", test_time_parse_rejects},
    {"format and round trip", test_time_format},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo id_tests[] = {
    {"format, version, variant, timestamp", test_id_format_and_fields},
    {"RFC 9562 example", test_id_known_vector},
    {"parse rejects garbage", test_id_parse_rejects},
    {"10,000 ids strictly increasing", test_id_strictly_increasing},
    {"threads: unique and ordered", test_id_threads_unique_and_ordered},
    {"forked child differs", test_id_fork_differs},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo backoff_tests[] = {
    {"cap, overflow-safe", test_backoff_cap},
    {"bounds over many samples", test_backoff_bounds},
    {"distribution", test_backoff_distribution},
    {"rand helpers", test_rand_helpers},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo trace_tests[] = {
    {"traceparent: new, child, sampled", test_trace_ids},
    {"spans: start, a batch's set", test_spans},
    {"span lines: logfmt and JSON", test_span_lines},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"time", NULL, NULL, NULL, NULL, time_tests},
    {"id", NULL, NULL, NULL, NULL, id_tests},
    {"backoff", NULL, NULL, NULL, NULL, backoff_tests},
    {"trace", NULL, NULL, NULL, NULL, trace_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
