/* SPDX-License-Identifier: MIT */
/* msm/json_scan.h against jansson: what it copies as jansson prints it must be byte for byte
 * what json_dumps() prints; what jansson refuses (or it cannot print the same) it gives up. */
#include "msm/json_scan.h"

#include "msm/err.h"
#include "msm_test.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* @p text copied by msm_json_scan_value() with @p flags into @p out; NULL when it gave up. */
static const char *scan_copy(const char *text, int flags, char *out, size_t size)
{
    msm_json_scan_t s = {.p = text,
                         .end = text + strlen(text),
                         .out = out,
                         .out_end = out + size - 1,
                         .flags = flags};
    if (msm_json_scan_value(&s, 0) != 0)
        return NULL;
    msm_json_scan_ws(&s);
    if (s.p != s.end)
        return NULL;
    *s.out = '\0';
    return out;
}

static char *jansson_print(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    return s;
}

static void test_as_jansson_prints(void)
{
    static const char *const values[] = {
        "1.0",
        "1e5",
        "-0",
        "-0.0",
        "0.1",
        "1E+2",
        "1e-400",
        "5e-324",
        "-12.5e-7",
        "123456789012345678",
        "1299.5",
        "0",
        "-7",
        "true",
        "false",
        "null",
        "\"\"",
        "\"a\\u001f\\/\\u00e9\\ud83d\\ude00\\u007f\\\"\\\\\\b\\f\\n\\r\\t\\u0008\\u000A\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f\"",
        " { \"a\" : [ 1 , { \"\\u0062\" : null } ] ,"
        " \"c\" : true } ",
        "[]",
        "{}",
        "[[[]],{}]",
        "{\"\\/\":\"\\/\"}"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char out[512];
        char *want = jansson_print(values[i]);
        const char *got = scan_copy(values[i], MSM_JSON_SCAN_AS_JANSSON, out, sizeof(out));
        CU_ASSERT_PTR_NOT_NULL(want);
        CU_ASSERT_PTR_NOT_NULL(got);
        if (want && got && strcmp(want, got) != 0)
            fprintf(stderr, "%s: jansson %s, scan %s\n", values[i], want, got);
        CU_ASSERT_TRUE(want && got && strcmp(want, got) == 0);
        free(want);
    }
}

static void test_gives_up(void)
{
    char deep[100] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "[");
    static const char *const values[] = {"\"\\u0000\"",
                                         "\"\\ud800\"",
                                         "\"\\udc00\"",
                                         "\"\\ud800\\u0041\"",
                                         "\"\\u12\"",
                                         "1E400",
                                         "-1e999",
                                         "1234567890123456789",
                                         "{\"a\":1,\"a\":2}",
                                         "{\"a\":1,\"\\u0061\":2}",
                                         "[1,]",
                                         "01",
                                         "1.",
                                         ".5",
                                         "-",
                                         "1e",
                                         "\"\xff\"",
                                         "\"\xed\xa0\x80\"",
                                         "\"\xc0\xaf\"",
                                         "\"a\x01\"",
                                         "\"\\x\"",
                                         "tru",
                                         "nul",
                                         "{\"a\"}",
                                         "\"abc",
                                         NULL};
    char out[512];
    for (size_t i = 0; values[i]; i++)
        CU_ASSERT_PTR_NULL(scan_copy(values[i], MSM_JSON_SCAN_AS_JANSSON, out, sizeof(out)));
    CU_ASSERT_PTR_NULL(scan_copy(deep, MSM_JSON_SCAN_AS_JANSSON, out, sizeof(out)));
    /* A real that does not fit the arena gives up rather than writes past it. */
    CU_ASSERT_PTR_NULL(scan_copy("1e15", MSM_JSON_SCAN_AS_JANSSON, out, 8));
}

/* Without flags (the frontend's form): as written, \u escapes and exponents left to jansson. */
static void test_as_written(void)
{
    char out[256];
    const char *got = scan_copy(" {\"a\" : [1.50, \"\\/\\n\"]} ", 0, out, sizeof(out));
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_STRING_EQUAL(got, "{\"a\":[1.50,\"\\/\\n\"]}");
    CU_ASSERT_PTR_NULL(scan_copy("\"\\u0041\"", 0, out, sizeof(out)));
    CU_ASSERT_PTR_NULL(scan_copy("1e5", 0, out, sizeof(out)));
    CU_ASSERT_PTR_NULL(scan_copy("{\"\\n\":1}", 0, out, sizeof(out)));
    /* Decoding: \u escapes with MSM_JSON_SCAN_UNICODE only. */
    const char *text = "\"x\\u00e9\\ud83d\\ude00\\t\"";
    msm_json_scan_t s = {.p = text,
                         .end = text + strlen(text),
                         .out = out,
                         .out_end = out + sizeof(out),
                         .flags = MSM_JSON_SCAN_UNICODE};
    int escaped = 0;
    CU_ASSERT_STRING_EQUAL(msm_json_scan_string(&s, 1, &escaped), "x\xc3\xa9\xf0\x9f\x98\x80\t");
    CU_ASSERT_TRUE(escaped);
    s = (msm_json_scan_t){.p = text, .end = text + strlen(text), .out = out};
    CU_ASSERT_PTR_NULL(msm_json_scan_string(&s, 1, NULL));
}

static void test_append_string(void)
{
    char text[160];
    size_t n = 0;
    for (int c = 1; c < 0x80; c++)
        text[n++] = (char)c;
    memcpy(text + n, "\xc3\xa9\xf0\x9f\x98\x80", 6);
    n += 6;
    msm_buf_t b = {0};
    CU_ASSERT_EQUAL(msm_json_append_string(&b, text, n), MSM_OK);
    json_t *v = json_stringn(text, n);
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    CU_ASSERT_STRING_EQUAL((const char *)b.data, want);
    CU_ASSERT_EQUAL(b.len, strlen(want));
    free(want);
    json_decref(v);
    msm_buf_deinit(&b);
}

static CU_TestInfo json_scan_tests[] = {
    {"copies values as jansson prints them", test_as_jansson_prints},
    {"gives up on what jansson refuses", test_gives_up},
    {"without flags: as written", test_as_written},
    {"strings written as jansson escapes them", test_append_string},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"json_scan", NULL, NULL, NULL, NULL, json_scan_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
