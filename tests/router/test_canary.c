/* SPDX-License-Identifier: MIT */
/* Delivery canaries, the pure part (router/src/canary.h): the sliding windows, the split of
 * requests and the rollback rule, without Redis or HTTP. */
#include "canary.h"
#include "msm_test.h"

#include "msm/err.h"

#include <stdio.h>
#include <string.h>

static msm_canary_t conf(double ratio, int min_events)
{
    msm_canary_t c = {.version = "v2", .share = 0.1, .max_failure_ratio = ratio,
                      .min_events = min_events};
    return c;
}

static void test_window_slides(void)
{
    rt_window_t w;
    CU_ASSERT_EQUAL_FATAL(msm__rt_window_init(&w, 10), MSM_OK);
    CU_ASSERT_EQUAL(w.cap, RT_CANARY_WINDOW_MIN); /* never smaller than that */
    CU_ASSERT_EQUAL(msm__rt_window_failure_ratio(&w), 0.0);
    CU_ASSERT_EQUAL(msm__rt_window_p99(&w), 0);
    for (int i = 0; i < 100; i++)
        msm__rt_window_add(&w, 1, 10);
    CU_ASSERT_EQUAL(w.nfailed, 100);
    /* 100 successes push every failure out: the window holds the last cap outcomes. */
    for (int i = 0; i < 100; i++)
        msm__rt_window_add(&w, 0, 10);
    CU_ASSERT_EQUAL(w.n, 100);
    CU_ASSERT_EQUAL(w.nfailed, 0);
    for (int i = 0; i < 25; i++)
        msm__rt_window_add(&w, 1, 10);
    CU_ASSERT_DOUBLE_EQUAL(msm__rt_window_failure_ratio(&w), 0.25, 1e-9);
    msm__rt_window_deinit(&w);

    CU_ASSERT_EQUAL_FATAL(msm__rt_window_init(&w, 500), MSM_OK);
    CU_ASSERT_EQUAL(w.cap, 500); /* room for min_events */
    msm__rt_window_deinit(&w);
}

static void test_window_p99(void)
{
    rt_window_t w;
    CU_ASSERT_EQUAL_FATAL(msm__rt_window_init(&w, 200), MSM_OK);
    for (int i = 1; i <= 200; i++)
        msm__rt_window_add(&w, 0, i); /* 1..200 ms */
    CU_ASSERT_EQUAL(msm__rt_window_p99(&w), 198); /* nearest rank: the 198th of 200 */
    for (int i = 0; i < 200; i++)
        msm__rt_window_add(&w, 0, 7); /* the old ones all left */
    CU_ASSERT_EQUAL(msm__rt_window_p99(&w), 7);
    msm__rt_window_add(&w, 0, -5); /* a clock step: never negative */
    CU_ASSERT_EQUAL(msm__rt_window_p99(&w), 7);
    msm__rt_window_deinit(&w);
}

static void fill(rt_window_t *w, int n, int failures, int latency)
{
    for (int i = 0; i < n; i++)
        msm__rt_window_add(w, i < failures, latency);
}

static void test_judge_failures(void)
{
    rt_window_t c, b;
    msm_canary_t cf = conf(0.05, 200);
    char why[256] = "";
    CU_ASSERT_EQUAL_FATAL(msm__rt_window_init(&c, 200), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm__rt_window_init(&b, 200), MSM_OK);
    fill(&c, 199, 199, 10); /* every one failed, but one short of min_events */
    fill(&b, 200, 0, 10);
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 0);
    msm__rt_window_add(&c, 1, 10);
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "failure ratio 1.000"));
    /* The difference counts, not the level: both at 20 % is no regression. */
    fill(&c, 200, 40, 10);
    fill(&b, 200, 40, 10);
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 0);
    fill(&c, 200, 50, 10); /* 25 % - 20 % = 0.05: not over */
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 0);
    fill(&c, 200, 52, 10); /* 26 % */
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 1);
    /* The baseline must have its min_events too. */
    msm__rt_window_deinit(&b);
    CU_ASSERT_EQUAL_FATAL(msm__rt_window_init(&b, 200), MSM_OK);
    fill(&b, 10, 0, 10);
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 0);
    msm__rt_window_deinit(&c);
    msm__rt_window_deinit(&b);
}

static void test_judge_latency(void)
{
    rt_window_t c, b;
    msm_canary_t cf = conf(1.0, 100); /* failures never decide here */
    char why[256] = "";
    CU_ASSERT_EQUAL_FATAL(msm__rt_window_init(&c, 100), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm__rt_window_init(&b, 100), MSM_OK);
    fill(&b, 100, 0, 1);
    fill(&c, 100, 0, 3); /* three times slower, but 2 ms: noise */
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 0);
    fill(&b, 100, 0, 100);
    fill(&c, 100, 0, 190); /* 90 ms more but under twice */
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 0);
    fill(&c, 100, 0, 250); /* 2.5 times and 150 ms more */
    CU_ASSERT_EQUAL(msm__rt_canary_judge(&c, &b, &cf, why, sizeof(why)), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "p99 latency 250 ms against 100 ms"));
    msm__rt_window_deinit(&c);
    msm__rt_window_deinit(&b);
}

static void test_split(void)
{
    double credit = 0;
    int canary = 0;
    for (int i = 0; i < 1000; i++)
        canary += msm__rt_canary_split(&credit, 0.1);
    CU_ASSERT_EQUAL(canary, 100); /* exactly the share */
    credit = 0;
    int seq[4];
    for (int i = 0; i < 4; i++)
        seq[i] = msm__rt_canary_split(&credit, 0.5);
    CU_ASSERT_TRUE(seq[0] != seq[1] && seq[1] != seq[2] && seq[2] != seq[3]); /* alternates */
    credit = 0;
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(msm__rt_canary_split(&credit, 1.0), 1);
}

static void test_state_names(void)
{
    CU_ASSERT_EQUAL(msm__rt_canary_state_parse("active"), RT_CANARY_ACTIVE);
    CU_ASSERT_EQUAL(msm__rt_canary_state_parse("rolled_back"), RT_CANARY_ROLLED_BACK);
    CU_ASSERT_EQUAL(msm__rt_canary_state_parse("promoted"), RT_CANARY_PROMOTED);
    CU_ASSERT_EQUAL(msm__rt_canary_state_parse("nonsense"), RT_CANARY_NONE);
    CU_ASSERT_EQUAL(msm__rt_canary_state_parse(NULL), RT_CANARY_NONE);
    CU_ASSERT_STRING_EQUAL(msm__rt_canary_state_name(RT_CANARY_PROMOTED), "promoted");
}

static CU_TestInfo tests[] = {
    {"a window holds the last outcomes", test_window_slides},
    {"p99 by nearest rank", test_window_p99},
    {"failure ratio over the baseline's by more than max: rollback", test_judge_failures},
    {"p99 over twice the baseline's and 100 ms more: rollback", test_judge_latency},
    {"the split sends exactly the share, evenly", test_split},
    {"state names", test_state_names},
    {NULL, NULL},
};

static CU_SuiteInfo suites[] = {
    {"canary", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
