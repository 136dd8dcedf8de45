/* SPDX-License-Identifier: MIT */
/* The Prometheus registry: exact exposition text, escaping, histogram cumulativity, updates
 * from several threads, and rejection of invalid names. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void test_exact_text(void)
{
    msm_metrics_t *reg = msm_metrics_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(reg);
    msm_metric_t *reqs, *temp, *lat;
    const char *const labels[] = {"method", "code", NULL};
    CU_ASSERT_EQUAL_FATAL(msm_metrics_counter(reg, "app_requests_total", "Requests served.",
                                              labels, &reqs),
                          MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_metrics_gauge(reg, "app_temperature", "Current temperature.", NULL,
                                            &temp),
                          MSM_OK);
    const double b[] = {0.1, 0.5, 1};
    CU_ASSERT_EQUAL_FATAL(
        msm_metrics_histogram(reg, "app_latency_seconds", "Latency.", NULL, b, 3, &lat), MSM_OK);

    msm_metric_child_t *get200 = msm_metric_labels(reqs, "GET", "200", NULL);
    msm_metric_child_t *post500 = msm_metric_labels(reqs, "POST", "500", NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(get200);
    CU_ASSERT_PTR_NOT_NULL_FATAL(post500);
    CU_ASSERT_PTR_EQUAL(msm_metric_labels(reqs, "GET", "200", NULL), get200); /* cached */
    msm_counter_inc(get200);
    msm_counter_add(get200, 2);
    msm_counter_inc(post500);
    msm_gauge_set(msm_metric_solo(temp), 21.5);
    msm_gauge_dec(msm_metric_solo(temp));
    msm_metric_child_t *h = msm_metric_solo(lat);
    msm_histogram_observe(h, 0.05);
    msm_histogram_observe(h, 0.5); /* le is inclusive */
    msm_histogram_observe(h, 3);

    size_t len = 0;
    char *text = msm_metrics_render(reg, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    const char *want = "# HELP app_requests_total Requests served.\n"
                       "# TYPE app_requests_total counter\n"
                       "app_requests_total{method=\"GET\",code=\"200\"} 3\n"
                       "app_requests_total{method=\"POST\",code=\"500\"} 1\n"
                       "# HELP app_temperature Current temperature.\n"
                       "# TYPE app_temperature gauge\n"
                       "app_temperature 20.5\n"
                       "# HELP app_latency_seconds Latency.\n"
                       "# TYPE app_latency_seconds histogram\n"
                       "app_latency_seconds_bucket{le=\"0.1\"} 1\n"
                       "app_latency_seconds_bucket{le=\"0.5\"} 2\n"
                       "app_latency_seconds_bucket{le=\"1\"} 2\n"
                       "app_latency_seconds_bucket{le=\"+Inf\"} 3\n"
                       "app_latency_seconds_sum 3.55\n"
                       "app_latency_seconds_count 3\n";
    CU_ASSERT_STRING_EQUAL(text, want);
    CU_ASSERT_EQUAL(len, strlen(want));
    free(text);
    CU_ASSERT_EQUAL(msm_counter_value(get200), 3);
    CU_ASSERT_DOUBLE_EQUAL(msm_gauge_value(msm_metric_solo(temp)), 20.5, 1e-12);
    CU_ASSERT_EQUAL(msm_histogram_count(h), 3);
    CU_ASSERT_DOUBLE_EQUAL(msm_histogram_sum(h), 3.55, 1e-12);
    msm_metrics_free(reg);
}

static void test_escaping(void)
{
    msm_metrics_t *reg = msm_metrics_new();
    msm_metric_t *fam;
    const char *const labels[] = {"path", NULL};
    CU_ASSERT_EQUAL_FATAL(
        msm_metrics_counter(reg, "esc_total", "Back\\slash and\nnewline \"quoted\".", labels, &fam),
        MSM_OK);
    msm_counter_inc(msm_metric_labels(fam, "a\\b\"c\"\nd", NULL));
    char *text = msm_metrics_render(reg, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    /* HELP escapes backslash and newline only; label values also escape the quote. */
    CU_ASSERT_STRING_EQUAL(text, "# HELP esc_total Back\\\\slash and\\nnewline \"quoted\".\n"
                                 "# TYPE esc_total counter\n"
                                 "esc_total{path=\"a\\\\b\\\"c\\\"\\nd\"} 1\n");
    free(text);
    msm_metrics_free(reg);
}

static void test_histogram_cumulative(void)
{
    msm_metrics_t *reg = msm_metrics_new();
    msm_metric_t *fam;
    const char *const labels[] = {"route", NULL};
    CU_ASSERT_EQUAL_FATAL(msm_metrics_histogram(reg, "lat_seconds", "", labels, NULL, 0, &fam),
                          MSM_OK);
    msm_metric_child_t *c = msm_metric_labels(fam, "/x", NULL);
    /* One observation in every default bucket and two above the last. */
    for (size_t i = 0; i < msm_metrics_default_nbuckets; i++)
        msm_histogram_observe(c, msm_metrics_default_buckets[i]);
    msm_histogram_observe(c, 11);
    msm_histogram_observe(c, 1e9);
    char *text = msm_metrics_render(reg, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    /* No HELP line for an empty help text. */
    CU_ASSERT_PTR_NULL(strstr(text, "# HELP"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "# TYPE lat_seconds histogram\n"));
    /* Parse every bucket line: counts never decrease and reach _count at +Inf. */
    unsigned long long prev = 0, last = 0, count = 0;
    int nbuckets = 0, saw_inf = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        static const char bucket[] = "lat_seconds_bucket{route=\"/x\",le=\"";
        static const char cnt[] = "lat_seconds_count{route=\"/x\"} ";
        if (strncmp(line, bucket, sizeof(bucket) - 1) == 0) {
            char *sp = strrchr(line, ' ');
            unsigned long long v = strtoull(sp + 1, NULL, 10);
            CU_ASSERT_TRUE(v >= prev);
            prev = last = v;
            nbuckets++;
            if (strstr(line, "le=\"+Inf\""))
                saw_inf = 1;
        } else if (strncmp(line, cnt, sizeof(cnt) - 1) == 0) {
            count = strtoull(line + sizeof(cnt) - 1, NULL, 10);
        }
    }
    CU_ASSERT_EQUAL(nbuckets, (int)msm_metrics_default_nbuckets + 1);
    CU_ASSERT_TRUE(saw_inf);
    CU_ASSERT_EQUAL(last, msm_metrics_default_nbuckets + 2);
    CU_ASSERT_EQUAL(count, last);
    free(text);

    /* Spot-check cumulativity on a tiny histogram, exact text. */
    msm_metric_t *small;
    const double b[] = {1, 2};
    CU_ASSERT_EQUAL_FATAL(msm_metrics_histogram(reg, "small", "", NULL, b, 2, &small), MSM_OK);
    for (int i = 0; i < 5; i++)
        msm_histogram_observe(msm_metric_solo(small), 0.5);
    msm_histogram_observe(msm_metric_solo(small), 1.5);
    text = msm_metrics_render(reg, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "small_bucket{le=\"1\"} 5\n"
                                        "small_bucket{le=\"2\"} 6\n"
                                        "small_bucket{le=\"+Inf\"} 6\n"
                                        "small_sum 4\n"
                                        "small_count 6\n"));
    free(text);
    msm_metrics_free(reg);
}

enum { THREADS = 4, PER_THREAD = 100000 };

typedef struct {
    msm_metric_t *fam;
    msm_metric_child_t *shared;
    msm_metric_child_t *gauge;
    msm_metric_child_t *hist;
    int idx;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    char label[16];
    snprintf(label, sizeof(label), "t%d", a->idx);
    /* Every thread also creates children concurrently with the others. */
    msm_metric_child_t *own = msm_metric_labels(a->fam, label, NULL);
    for (int i = 0; i < PER_THREAD; i++) {
        msm_counter_inc(a->shared);
        msm_counter_inc(own);
        msm_gauge_add(a->gauge, 1.0);
        msm_histogram_observe(a->hist, (i % 3) * 0.5);
    }
    return NULL;
}

static void test_concurrent_updates(void)
{
    msm_metrics_t *reg = msm_metrics_new();
    msm_metric_t *fam, *g, *h;
    const char *const labels[] = {"who", NULL};
    CU_ASSERT_EQUAL_FATAL(msm_metrics_counter(reg, "ops_total", "Ops.", labels, &fam), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_metrics_gauge(reg, "level", "Level.", NULL, &g), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_metrics_histogram(reg, "obs", "Obs.", NULL, NULL, 0, &h), MSM_OK);
    msm_metric_child_t *shared = msm_metric_labels(fam, "all", NULL);
    pthread_t th[THREADS];
    worker_arg_t args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (worker_arg_t){fam, shared, msm_metric_solo(g), msm_metric_solo(h), i};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    /* Render while they run: must not crash or deadlock. */
    for (int i = 0; i < 20; i++)
        free(msm_metrics_render(reg, NULL));
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT_EQUAL(msm_counter_value(shared), (uint64_t)THREADS * PER_THREAD);
    for (int i = 0; i < THREADS; i++) {
        char label[16];
        snprintf(label, sizeof(label), "t%d", i);
        CU_ASSERT_EQUAL(msm_counter_value(msm_metric_labels(fam, label, NULL)), PER_THREAD);
    }
    CU_ASSERT_DOUBLE_EQUAL(msm_gauge_value(msm_metric_solo(g)), (double)THREADS * PER_THREAD,
                           0.5);
    CU_ASSERT_EQUAL(msm_histogram_count(msm_metric_solo(h)), (uint64_t)THREADS * PER_THREAD);
    char *text = msm_metrics_render(reg, NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "ops_total{who=\"all\"} 400000\n"));
    free(text);
    msm_metrics_free(reg);
}

static void test_invalid_names_rejected(void)
{
    msm_metrics_t *reg = msm_metrics_new();
    msm_metric_t *fam = NULL;
    const char *const ok[] = {"a", NULL};
    const char *const bad_label[] = {"1a", NULL};
    const char *const reserved[] = {"__x", NULL};
    const char *const dup[] = {"a", "a", NULL};
    const char *const le[] = {"le", NULL};
    const char *const dash[] = {"a-b", NULL};
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "", "", NULL, &fam), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "9lives", "", NULL, &fam), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "has-dash", "", NULL, &fam), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "has space", "", NULL, &fam), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "x", "", bad_label, &fam), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "x", "", reserved, &fam), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "x", "", dup, &fam), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "x", "", dash, &fam), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_histogram(reg, "x", "", le, NULL, 0, &fam), MSM_ERR_INVALID);
    const double unsorted[] = {1, 0.5};
    const double inf[] = {1, INFINITY};
    CU_ASSERT_EQUAL(msm_metrics_histogram(reg, "x", "", NULL, unsorted, 2, &fam),
                    MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_metrics_histogram(reg, "x", "", NULL, inf, 2, &fam), MSM_ERR_INVALID);
    CU_ASSERT_PTR_NULL(fam);

    /* Valid names, including colons; the identical family again is found, a different one
     * under the same name is refused. */
    msm_metric_t *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "ns:sub_total", "", ok, &a), MSM_OK);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "ns:sub_total", "other help", ok, &b), MSM_OK);
    CU_ASSERT_PTR_EQUAL(a, b);
    CU_ASSERT_EQUAL(msm_metrics_gauge(reg, "ns:sub_total", "", ok, &b), MSM_ERR_EXISTS);
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "ns:sub_total", "", NULL, &b), MSM_ERR_EXISTS);

    /* Wrong number of label values: no child. */
    CU_ASSERT_PTR_NULL(msm_metric_labels(a, NULL));
    CU_ASSERT_PTR_NULL(msm_metric_labels(a, "x", "y", NULL));
    CU_ASSERT_PTR_NULL(msm_metric_solo(a));
    /* Updates through a NULL or mistyped child are ignored, not crashes. */
    msm_counter_inc(NULL);
    msm_gauge_set(msm_metric_labels(a, "x", NULL), 5);
    CU_ASSERT_EQUAL(msm_counter_value(msm_metric_labels(a, "x", NULL)), 0);
    msm_metrics_free(reg);
}

static int collected;
static void collect(msm_metrics_t *reg, void *opaque)
{
    (void)reg;
    collected++;
    msm_gauge_set(opaque, 42);
}

static void test_collector_and_many_children(void)
{
    msm_metrics_t *reg = msm_metrics_new();
    msm_metric_t *g, *c;
    const char *const labels[] = {"id", NULL};
    CU_ASSERT_EQUAL_FATAL(msm_metrics_gauge(reg, "backlog", "Backlog.", NULL, &g), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_metrics_counter(reg, "per_id_total", "Per id.", labels, &c), MSM_OK);
    CU_ASSERT_EQUAL(msm_metrics_add_collector(reg, collect, msm_metric_solo(g)), MSM_OK);
    /* Enough children to grow the hash table a few times; pointers stay stable. */
    msm_metric_child_t *first = msm_metric_labels(c, "0", NULL);
    for (int i = 0; i < 1000; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", i);
        msm_counter_add(msm_metric_labels(c, id, NULL), (uint64_t)i);
    }
    CU_ASSERT_PTR_EQUAL(msm_metric_labels(c, "0", NULL), first);
    CU_ASSERT_EQUAL(msm_counter_value(msm_metric_labels(c, "999", NULL)), 999);
    collected = 0;
    char *text = msm_metrics_render(reg, NULL);
    CU_ASSERT_EQUAL(collected, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nbacklog 42\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nper_id_total{id=\"0\"} 0\nper_id_total{id=\"1\"} 1\n"));
    free(text);
    msm_metrics_remove_collector(reg, collect, msm_metric_solo(g));
    free(msm_metrics_render(reg, NULL));
    CU_ASSERT_EQUAL(collected, 1);
    msm_metrics_free(reg);
}

static CU_TestInfo metrics_tests[] = {
    {"exact text of a small registry", test_exact_text},
    {"HELP and label value escaping", test_escaping},
    {"histogram buckets are cumulative", test_histogram_cumulative},
    {"concurrent updates sum correctly", test_concurrent_updates},
    {"invalid names rejected", test_invalid_names_rejected},
    {"collectors and many children", test_collector_and_many_children},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"metrics", NULL, NULL, NULL, NULL, metrics_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
