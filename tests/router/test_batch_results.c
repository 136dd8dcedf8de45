/* SPDX-License-Identifier: MIT */
/* The batch answer's one-pass reading (msm__rt_results_scan) against jansson's, the
 * reference: what it reads must be what the tree gives, result by result; what it gives up
 * on, the tree reads. */
#include "batch_results_check.h"
#include "msm_test.h"

#include <stdio.h>
#include <string.h>

/* 1: taken and read as the tree reads it; 0: left to the tree; -1: they differ. */
static int check(const char *body)
{
    results_verdict_t v = batch_results_check(body, strlen(body));
    if (v == RESULTS_DIFFER)
        fprintf(stderr, "fast and tree readings differ: %s\n", body);
    return v == RESULTS_AGREE ? 1 : v == RESULTS_LEFT ? 0 : -1;
}

static void test_taken_as_the_tree_reads_them(void)
{
    static const char *const bodies[] = {
        "{\"results\":[{\"id\":\"a\",\"status\":\"ok\"},{\"id\":\"b\",\"status\":\"retry\"}]}",
        " { \"results\" : [ { \"status\" : \"fatal\" , \"id\" : \"c\" } ] } \n",
        "{\"results\":[]}",
        "{\"results\":[{}]}",
        "{\"results\":[{\"id\":\"a\"}]}", /* no status: retry */
        "{\"results\":[{\"id\":\"a\",\"status\":\"maybe\"}]}",
        "{\"results\":[{\"id\":\"\\u00e9t\\u00e9\\n\\\"q\\\"\",\"status\":\"ok\"}]}",
        "{\"results\":[{\"id\":\"\xc3\xa9t\xc3\xa9\",\"status\":\"ok\",\"error\":{\"a\":[1,2.5,"
        "null,true]}}]}",
        "{\"took_ms\":12,\"results\":[{\"id\":\"x\",\"status\":\"ok\"}],\"meta\":{\"v\":\"1\"}}",
        "{\"results\":[{\"id\":\"\\ud83d\\ude00\",\"status\":\"ok\"}]}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(*bodies); i++)
        CU_ASSERT_EQUAL(check(bodies[i]), 1);
}

static void test_unusual_left_to_the_tree(void)
{
    static const char *const bodies[] = {
        "",
        "[]",
        "{}",
        "{\"ok\":true}",                                   /* no results */
        "{\"results\":{}}",                                /* not an array */
        "{\"results\":[1]}",                               /* a result that is not an object */
        "{\"results\":[{\"id\":1,\"status\":\"ok\"}]}",    /* id not a string */
        "{\"results\":[{\"id\":\"a\",\"id\":\"b\"}]}",     /* repeated member */
        "{\"results\":[],\"results\":[{\"id\":\"a\"}]}",   /* repeated results */
        "{\"results\":[{\"id\":\"a\",\"status\":\"ok\"}]", /* cut */
        "{\"results\":[{\"id\":\"a\",\"status\":\"ok\"}]} x",
        "{\"results\":[{\"id\":\"a\",\"status\":\"ok\"},]}",
        "{\"results\":[{\"id\":\"\\u0000\",\"status\":\"ok\"}]}",
        "{\"results\":[{\"id\":\"\xff\",\"status\":\"ok\"}]}", /* not UTF-8 */
        "{\"results\":[{\"id\":\"\\ud83d\",\"status\":\"ok\"}]}", /* lone surrogate */
        "{\"n\":123456789012345678901234567890,\"results\":[]}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(*bodies); i++) {
        int rc = check(bodies[i]);
        if (rc != 0)
            fprintf(stderr, "taken, not left to the tree: %s\n", bodies[i]);
        CU_ASSERT_EQUAL(rc, 0);
    }
}

/* More results than the request had events: left to the tree (which ignores the extras). */
static void test_more_results_than_room(void)
{
    char body[4096] = "{\"results\":[";
    for (int i = 0; i < RESULTS_CHECK_MAX + 1; i++)
        snprintf(body + strlen(body), sizeof(body) - strlen(body), "%s{\"id\":\"e%d\"}",
                 i ? "," : "", i);
    strcat(body, "]}");
    CU_ASSERT_EQUAL(check(body), 0);
}

static CU_TestInfo tests[] = {
    {"taken as the tree reads them", test_taken_as_the_tree_reads_them},
    {"unusual answers left to the tree", test_unusual_left_to_the_tree},
    {"more results than room", test_more_results_than_room},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"batch_results", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
