/* SPDX-License-Identifier: MIT */
/* jansson helpers: parse errors with line/column, typed getters recording field paths, and
 * the API.md error body. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char *dump(const json_t *v)
{
    return msm_json_dump(v, NULL);
}

static void test_parse_ok_and_errors(void)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    const char ok[] = "{\"a\":1,\"b\":[true,null]}";
    json_t *v = msm_json_parse(ok, strlen(ok), &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 0);
    json_decref(v);

    /* Error on line 2: the detail carries line and column. */
    const char bad[] = "{\"a\":1,\n \"b\": tru }";
    CU_ASSERT_PTR_NULL(msm_json_parse(bad, strlen(bad), &e));
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 1);
    json_t *details = msm_json_err_take_details(&e);
    CU_ASSERT_EQUAL_FATAL(json_array_size(details), 1);
    json_t *d = json_array_get(details, 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d, "field")), "$");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(d, "line")), 2);
    CU_ASSERT_TRUE(json_integer_value(json_object_get(d, "column")) >= 7);
    const char *desc = json_string_value(json_object_get(d, "description"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(desc);
    CU_ASSERT_EQUAL(strncmp(desc, "invalid JSON at line 2, column ", 31), 0);
    json_decref(details);
    msm_json_err_deinit(&e);

    /* Empty body, trailing garbage, duplicate keys, embedded NUL: all refused. */
    const char *const refused[] = {"", "{} x", "{\"k\":1,\"k\":2}", "[\"a\\u0000b\"]", "{\"a\":"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        msm_json_err_init(&e);
        CU_ASSERT_PTR_NULL(msm_json_parse(refused[i], strlen(refused[i]), &e));
        CU_ASSERT_EQUAL(msm_json_err_count(&e), 1);
        msm_json_err_deinit(&e);
    }
    /* Not NUL-terminated input: only len bytes are read. */
    msm_json_err_init(&e);
    const char partial[] = "[1,2]garbage";
    v = msm_json_parse(partial, 5, &e);
    CU_ASSERT_PTR_NOT_NULL(v);
    json_decref(v);
    msm_json_err_deinit(&e);
}

static void test_getters_and_paths(void)
{
    const char body[] = "{\"events\":["
                        "{\"data\":1,\"key\":\"k0\",\"delay_ms\":5},"
                        "{\"data\":2,\"key\":7},"
                        "{\"data\":3,\"delay_ms\":-1,\"attributes\":{\"kind\":5,\"a.b\":1}},"
                        "{\"delay_ms\":2.5,\"ordered\":\"yes\",\"extra\":0}"
                        "],\"name\":\"\"}";
    msm_json_err_t e;
    msm_json_err_init(&e);
    json_t *root = msm_json_parse(body, strlen(body), &e);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    CU_ASSERT_EQUAL(msm_json_expect_object(&e, root), MSM_OK);

    json_t *events = NULL;
    CU_ASSERT_EQUAL(msm_json_get_array(&e, root, "events", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY,
                                       &events),
                    MSM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(events);
    const char *name = "default";
    CU_ASSERT_EQUAL(msm_json_get_str(&e, root, "name", MSM_JSON_NONEMPTY, &name),
                    MSM_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(name, "default"); /* untouched on error */

    msm_json_path_push_key(&e, "events");
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        msm_json_path_push_index(&e, i);
        const char *key = NULL;
        int64_t delay = 0;
        int ordered = 0;
        json_t *attrs = NULL;
        static const char *const known[] = {"data", "key", "delay_ms", "attributes", "ordered",
                                            NULL};
        msm_json_check_known(&e, ev, known);
        if (!json_object_get(ev, "data"))
            msm_json_err_add(&e, "data", "is required");
        msm_json_get_str(&e, ev, "key", MSM_JSON_OPTIONAL, &key);
        msm_json_get_int(&e, ev, "delay_ms", MSM_JSON_OPTIONAL, 0, INT64_MAX, &delay);
        msm_json_get_bool(&e, ev, "ordered", MSM_JSON_OPTIONAL, &ordered);
        if (msm_json_get_object(&e, ev, "attributes", MSM_JSON_OPTIONAL, &attrs) == MSM_OK &&
            attrs) {
            msm_json_path_push_key(&e, "attributes");
            const char *k;
            json_t *val;
            json_object_foreach(attrs, k, val)
            {
                if (!json_is_string(val))
                    msm_json_err_add(&e, k, "must be a string");
            }
            msm_json_path_pop(&e);
        }
        if (i == 0) {
            CU_ASSERT_STRING_EQUAL(key, "k0");
            CU_ASSERT_EQUAL(delay, 5);
        }
        msm_json_path_pop(&e);
    }
    msm_json_path_pop(&e);
    CU_ASSERT_EQUAL(e.je_depth, 0);
    CU_ASSERT_EQUAL(e.je_pathlen, 0);

    const char *want[][2] = {
        {"name", "must not be empty"},
        {"events[1].key", "must be a string"},
        {"events[2].delay_ms", "must be >= 0"},
        {"events[2].attributes.kind", "must be a string"},
        {"events[2].attributes[\"a.b\"]", "must be a string"},
        {"events[3].extra", "unknown field"},
        {"events[3].data", "is required"},
        {"events[3].delay_ms", "must be an integer"},
        {"events[3].ordered", "must be true or false"},
    };
    size_t nwant = sizeof(want) / sizeof(want[0]);
    CU_ASSERT_EQUAL(msm_json_err_count(&e), nwant);
    CU_ASSERT_STRING_EQUAL(msm_json_err_message(&e), "name: must not be empty");

    json_t *body_json = msm_json_err_body(&e, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body_json);
    json_t *err = json_object_get(body_json, "error");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(err, "code")), "INVALID_ARGUMENT");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(err, "message")),
                           "name: must not be empty (and 8 more problems)");
    json_t *details = json_object_get(err, "details");
    CU_ASSERT_EQUAL_FATAL(json_array_size(details), nwant);
    for (size_t k = 0; k < nwant; k++) {
        json_t *d = json_array_get(details, k);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d, "field")), want[k][0]);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d, "description")),
                               want[k][1]);
    }
    json_decref(body_json);
    json_decref(root);
    msm_json_err_deinit(&e);
}

static void test_required_ranges_and_types(void)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    json_t *o = json_pack("{s:i,s:f,s:n,s:s,s:[],s:{}}", "n", 50, "x", 1.5, "nul", "s", "abcdef",
                          "arr", "obj");
    int64_t n = -7;
    double x = 0;
    const char *s = NULL;
    json_t *arr = NULL;
    CU_ASSERT_EQUAL(msm_json_get_int(&e, o, "n", MSM_JSON_REQUIRED, 1, 10, &n), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(n, -7);
    CU_ASSERT_EQUAL(msm_json_get_int(&e, o, "n", MSM_JSON_REQUIRED, 100, INT64_MAX, &n),
                    MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_get_int(&e, o, "n", MSM_JSON_REQUIRED, INT64_MIN, 9, &n),
                    MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_get_int(&e, o, "n", MSM_JSON_REQUIRED, 0, 100, &n), MSM_OK);
    CU_ASSERT_EQUAL(n, 50);
    CU_ASSERT_EQUAL(msm_json_get_double(&e, o, "x", MSM_JSON_REQUIRED, 0, 1, &x),
                    MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_get_double(&e, o, "n", MSM_JSON_REQUIRED, 0, 100, &x), MSM_OK);
    CU_ASSERT_DOUBLE_EQUAL(x, 50.0, 1e-9);
    /* null: absent when NULLABLE, a type error otherwise. */
    CU_ASSERT_EQUAL(msm_json_get_str(&e, o, "nul", MSM_JSON_NULLABLE, &s), MSM_OK);
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_EQUAL(msm_json_get_str(&e, o, "nul", 0, &s), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_get_str(&e, o, "missing", MSM_JSON_REQUIRED, &s), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_get_str(&e, o, "missing", MSM_JSON_OPTIONAL, &s), MSM_OK);
    CU_ASSERT_EQUAL(msm_json_get_strn(&e, o, "s", 0, 3, &s), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_get_strn(&e, o, "s", 0, 6, &s), MSM_OK);
    CU_ASSERT_STRING_EQUAL(s, "abcdef");
    CU_ASSERT_EQUAL(msm_json_get_array(&e, o, "arr", MSM_JSON_NONEMPTY, &arr), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_get_array(&e, o, "obj", 0, &arr), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_get_object(&e, o, "arr", 0, &arr), MSM_ERR_INVALID);
    /* A non-object container: every member is absent. */
    CU_ASSERT_EQUAL(msm_json_get_int(&e, json_array_get(o, 0), "n", 0, 0, 1, &n), MSM_OK);

    const char *descs[] = {
        "must be between 1 and 10", "must be >= 100", "must be <= 9",
        "must be between 0 and 1",  "must be a string", "is required",
        "must be at most 3 bytes long", "must not be empty", "must be an array",
        "must be an object",
    };
    size_t nd = sizeof(descs) / sizeof(descs[0]);
    json_t *details = msm_json_err_take_details(&e);
    CU_ASSERT_EQUAL_FATAL(json_array_size(details), nd);
    for (size_t i = 0; i < nd; i++) {
        const char *got =
            json_string_value(json_object_get(json_array_get(details, i), "description"));
        CU_ASSERT_STRING_EQUAL(got, descs[i]);
    }
    json_decref(details);
    json_decref(o);
    msm_json_err_deinit(&e);
}

static void test_error_body_shape(void)
{
    json_t *details = json_array();
    json_array_append_new(details, json_pack("{s:s,s:s}", "field", "events[3].delay_ms",
                                             "description", "must be >= 0"));
    json_t *b = msm_json_error_body("INVALID_ARGUMENT", "bad \"event\"", details);
    char *s = dump(b);
    CU_ASSERT_STRING_EQUAL(s, "{\"error\":{\"code\":\"INVALID_ARGUMENT\",\"message\":"
                              "\"bad \\\"event\\\"\",\"details\":[{\"field\":"
                              "\"events[3].delay_ms\",\"description\":\"must be >= 0\"}]}}");
    free(s);
    json_decref(b);

    b = msm_json_error_body("NOT_FOUND", NULL, NULL);
    s = dump(b);
    CU_ASSERT_STRING_EQUAL(s, "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"\",\"details\":[]}}");
    free(s);
    json_decref(b);

    /* No errors recorded: a generic message and an empty details array. */
    msm_json_err_t e;
    msm_json_err_init(&e);
    b = msm_json_err_body(&e, "BAD");
    s = dump(b);
    CU_ASSERT_STRING_EQUAL(
        s, "{\"error\":{\"code\":\"BAD\",\"message\":\"invalid request\",\"details\":[]}}");
    free(s);
    json_decref(b);
    msm_json_err_deinit(&e);
}

static void test_limits(void)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    /* More errors than kept: counted, listed up to the cap. */
    for (int i = 0; i < 100; i++) {
        msm_json_path_push_index(&e, (size_t)i);
        msm_json_err_add(&e, "x", "bad %d", i);
        msm_json_path_pop(&e);
    }
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 100);
    json_t *d = msm_json_err_take_details(&e);
    CU_ASSERT_EQUAL(json_array_size(d), MSM_JSON_MAX_DETAILS);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(d, 31), "field")),
                           "[31].x");
    json_decref(d);
    msm_json_err_deinit(&e);

    /* Very deep and very long paths: truncated, never overflowing; pops stay balanced. */
    msm_json_err_init(&e);
    char longkey[600];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    for (int i = 0; i < 100; i++)
        msm_json_path_push_key(&e, i % 2 ? longkey : "a");
    msm_json_err_add(&e, "leaf", "deep");
    CU_ASSERT_TRUE(strlen(e.je_path) < MSM_JSON_PATH_MAX);
    for (int i = 0; i < 100; i++)
        msm_json_path_pop(&e);
    msm_json_path_pop(&e); /* one too many: harmless */
    CU_ASSERT_EQUAL(e.je_pathlen, 0);
    msm_json_err_add(&e, "top", "shallow");
    d = msm_json_err_take_details(&e);
    const char *deep = json_string_value(json_object_get(json_array_get(d, 0), "field"));
    CU_ASSERT_TRUE(strlen(deep) < MSM_JSON_PATH_MAX);
    CU_ASSERT_TRUE(strstr(deep, "...") != NULL);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(d, 1), "field")),
                           "top");
    json_decref(d);
    msm_json_err_deinit(&e);
}

static void test_media_type(void)
{
    const char *yes[] = {"application/json", "Application/JSON", "application/json; charset=utf-8",
                         "application/json ;charset=utf-8", "application/cloudevents+json",
                         "application/vnd.schemaregistry.v1+json"};
    const char *no[] = {NULL, "", "text/plain", "application/jsonx", "application/avro",
                        "json", "application/x-protobuf; proto=json"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        CU_ASSERT_TRUE(msm_json_media_type(yes[i]));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        CU_ASSERT_FALSE(msm_json_media_type(no[i]));
}

static CU_TestInfo json_tests[] = {
    {"parse: success and errors with line/column", test_parse_ok_and_errors},
    {"getters record field paths", test_getters_and_paths},
    {"required, ranges and types", test_required_ranges_and_types},
    {"error body shape", test_error_body_shape},
    {"detail and path limits", test_limits},
    {"JSON media types", test_media_type},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"json", NULL, NULL, NULL, NULL, json_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
