/* SPDX-License-Identifier: MIT */
/* flowcontrol's pace (flowcontrol/src/pace.c) on a simulated clock: the token bucket keeps its
 * rate and burst, the adaptive limit goes down on congestion once per round trip and back up
 * by one per limit's worth of successes, and a Retry-After holds everything, capped. */
#include "msm_test.h"
#include "fc_int.h"

static void test_unlimited_starts_at_max(void)
{
    fc_pace_t p = {0};
    int64_t wake;
    fc_pace_set(&p, 64, 0, 1000);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), 64);
    CU_ASSERT_EQUAL(fc_pace_allowance(&p, 0, 1000, &wake), 64);
    CU_ASSERT_EQUAL(wake, 0);
    CU_ASSERT_EQUAL(fc_pace_allowance(&p, 60, 1000, &wake), 4);
    CU_ASSERT_EQUAL(fc_pace_allowance(&p, 70, 1000, &wake), 0);
}

/* 500/s for 10 s after the burst: 5,000 tasks, not one more. */
static void test_rate_over_ten_seconds(void)
{
    fc_pace_t p = {0};
    int64_t wake, now = 0;
    fc_pace_set(&p, 100000, 500, now);
    size_t burst = fc_pace_allowance(&p, 0, now, &wake);
    CU_ASSERT_EQUAL(burst, 500);
    fc_pace_take(&p, burst);
    CU_ASSERT_EQUAL(fc_pace_allowance(&p, 0, now, &wake), 0);
    CU_ASSERT(wake > now && wake <= now + 2);
    size_t total = 0;
    for (now = 1; now <= 10000; now++) {
        size_t n = fc_pace_allowance(&p, 0, now, &wake);
        fc_pace_take(&p, n);
        total += n;
    }
    CU_ASSERT(total >= 4999 && total <= 5000);
    /* A slow rate still lets one task through (the burst is at least one). */
    fc_pace_t slow = {0};
    fc_pace_set(&slow, 10, 0.5, 0);
    CU_ASSERT_EQUAL(fc_pace_allowance(&slow, 0, 0, &wake), 1);
    fc_pace_take(&slow, 1);
    CU_ASSERT_EQUAL(fc_pace_allowance(&slow, 0, 1000, &wake), 0);
    CU_ASSERT_EQUAL(wake, 2000);
    CU_ASSERT_EQUAL(fc_pace_allowance(&slow, 0, 2000, &wake), 1);
}

static void test_congestion_once_per_round_trip(void)
{
    fc_pace_t p = {0};
    fc_pace_set(&p, 64, 0, 0);
    fc_pace_success(&p, 100, 64); /* round trip 100 ms */
    CU_ASSERT_EQUAL(fc_pace_congestion(&p, 1000, 0, 60000), 1);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), 48);
    /* The rest of that round trip's refusals count once. */
    CU_ASSERT_EQUAL(fc_pace_congestion(&p, 1050, 0, 60000), 0);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), 48);
    CU_ASSERT_EQUAL(fc_pace_congestion(&p, 1101, 0, 60000), 1);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), 36);
    for (int64_t t = 1200; t < 5000; t += 200)
        fc_pace_congestion(&p, t, 0, 60000);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), 1); /* never below one */
    int64_t wake;
    CU_ASSERT_EQUAL(fc_pace_allowance(&p, 0, 5000, &wake), 1);
}

static void test_additive_increase_in_use_only(void)
{
    fc_pace_t p = {0};
    fc_pace_set(&p, 64, 0, 0);
    fc_pace_success(&p, 5, 10);
    for (int i = 0; i < 4; i++)
        fc_pace_congestion(&p, 1000 + 100 * i, 0, 60000);
    int low = fc_pace_limit(&p);
    CU_ASSERT(low < 30);
    /* Idle (one in flight): no growth. */
    for (int i = 0; i < 1000; i++)
        fc_pace_success(&p, 5, 1);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), low);
    /* In use: about one more per limit's worth of successes. */
    for (int i = 0; i <= low; i++) /* one more: the sum of 1/limit rounds either way */
        fc_pace_success(&p, 5, (size_t)low);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), low + 1);
    for (int i = 0; i < 100000; i++)
        fc_pace_success(&p, 5, 64);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), 64); /* never above max_concurrency */
    /* Settings change: the limit stays within the new maximum. */
    fc_pace_set(&p, 8, 0, 0);
    CU_ASSERT_EQUAL(fc_pace_limit(&p), 8);
}

static void test_retry_after_holds_capped(void)
{
    fc_pace_t p = {0};
    int64_t wake;
    fc_pace_set(&p, 10, 0, 0);
    fc_pace_congestion(&p, 1000, 5000, 2000); /* asks 5 s, the cap is 2 s */
    CU_ASSERT_EQUAL(fc_pace_allowance(&p, 0, 1500, &wake), 0);
    CU_ASSERT_EQUAL(wake, 3000);
    CU_ASSERT_EQUAL(fc_pace_allowance(&p, 0, 2999, &wake), 0);
    CU_ASSERT(fc_pace_allowance(&p, 0, 3000, &wake) > 0);
    /* A shorter one later does not shorten a longer hold. */
    fc_pace_congestion(&p, 4000, 1000, 60000);
    fc_pace_congestion(&p, 4100, 100, 60000);
    CU_ASSERT_EQUAL(fc_pace_allowance(&p, 0, 4500, &wake), 0);
    CU_ASSERT_EQUAL(wake, 5000);
}

/* Every retry is jittered, the first included, never below min_backoff_ms nor (Retry-After
 * included) above max_backoff_ms. */
static void test_retry_delay_jittered(void)
{
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 2000; i++) {
        int64_t d = fc_retry_delay_ms(100, 60000, 1, 0);
        CU_ASSERT(d >= 100 && d <= 200);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    CU_ASSERT(lo < 110 && hi > 190); /* spread over the window, not pinned at min */
    for (int i = 0; i < 200; i++) {
        int64_t d = fc_retry_delay_ms(100, 1000, 8, 0);
        CU_ASSERT(d >= 100 && d <= 1000);
    }
    CU_ASSERT_EQUAL(fc_retry_delay_ms(300, 300, 3, 0), 300);
    CU_ASSERT_EQUAL(fc_retry_delay_ms(0, 0, 1, 0), 0);
    CU_ASSERT_EQUAL(fc_retry_delay_ms(100, 400, 1, 2000), 400); /* Retry-After capped */
    int64_t d = fc_retry_delay_ms(100, 60000, 1, 5000);
    CU_ASSERT_EQUAL(d, 5000);
}

static CU_TestInfo pace_tests[] = {
    {"unlimited_starts_at_max", test_unlimited_starts_at_max},
    {"rate_over_ten_seconds", test_rate_over_ten_seconds},
    {"congestion_once_per_round_trip", test_congestion_once_per_round_trip},
    {"additive_increase_in_use_only", test_additive_increase_in_use_only},
    {"retry_after_holds_capped", test_retry_after_holds_capped},
    {"retry_delay_jittered", test_retry_delay_jittered},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"pace", NULL, NULL, NULL, NULL, pace_tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return msm_test_run(suites);
}
