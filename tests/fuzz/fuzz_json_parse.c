/* SPDX-License-Identifier: MIT */
/* libFuzzer target: msm_json_parse() on arbitrary bytes, as every HTTP handler calls it on a
 * request body. A parsed document is then walked the way handlers validate one (typed getters,
 * unknown fields, paths built from untrusted member names), and every failure must still give
 * a well-formed API.md error body: the body a client gets for bad input cannot be missing. */
#include "msm/json.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Deeper than MSM_JSON_DEPTH_MAX, so the collector's depth bound is exercised too. */
#define WALK_DEPTH_MAX (MSM_JSON_DEPTH_MAX + 8)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant is reported like a crash, so libFuzzer keeps the input. */
static void fail(const char *what)
{
    fprintf(stderr, "fuzz_json_parse: %s\n", what);
    abort();
}

static void validate_object(msm_json_err_t *e, const json_t *obj)
{
    static const char *const known[] = {"data", "key", "delay_ms", "ordered", "rate", NULL};
    const char *key = NULL;
    int64_t delay = 0;
    int ordered = 0;
    double rate = 0;
    msm_json_get_strn(e, obj, "key", MSM_JSON_NONEMPTY, 64, &key);
    msm_json_get_int(e, obj, "delay_ms", MSM_JSON_NULLABLE, 0, 86400000, &delay);
    msm_json_get_bool(e, obj, "ordered", MSM_JSON_OPTIONAL, &ordered);
    msm_json_get_double(e, obj, "rate", MSM_JSON_OPTIONAL, 0, 1e6, &rate);
    msm_json_check_known(e, obj, known);
}

static void walk(msm_json_err_t *e, json_t *v, int depth)
{
    if (depth >= WALK_DEPTH_MAX)
        return;
    if (json_is_object(v)) {
        validate_object(e, v);
        const char *key;
        json_t *member;
        json_object_foreach(v, key, member)
        {
            msm_json_path_push_key(e, key);
            walk(e, member, depth + 1);
            msm_json_path_pop(e);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *element;
        json_array_foreach(v, i, element)
        {
            msm_json_path_push_index(e, i);
            msm_json_expect_object(e, element);
            walk(e, element, depth + 1);
            msm_json_path_pop(e);
        }
    }
}

static void check_string(const json_t *obj, const char *key, const char *what)
{
    if (!json_is_string(json_object_get(obj, key)))
        fail(what);
}

/* What a client of the API relies on: {"error":{"code","message","details":[{field,
 * description}...]}}, all strings, as many details as were recorded (up to the cap). */
static void check_error_body(msm_json_err_t *e)
{
    size_t recorded = msm_json_err_count(e);
    if (recorded == 0)
        fail("an error without a recorded detail");
    json_t *body = msm_json_err_body(e, NULL);
    if (!body)
        fail("msm_json_err_body returned NULL");
    json_t *err = json_object_get(body, "error");
    check_string(err, "code", "error.code is not a string");
    check_string(err, "message", "error.message is not a string");
    json_t *details = json_object_get(err, "details");
    if (!json_is_array(details))
        fail("error.details is not an array");
    size_t expected = recorded < MSM_JSON_MAX_DETAILS ? recorded : MSM_JSON_MAX_DETAILS;
    if (json_array_size(details) != expected)
        fail("error.details lost a recorded detail");
    size_t i;
    json_t *d;
    json_array_foreach(details, i, d)
    {
        check_string(d, "field", "a detail without a string field");
        check_string(d, "description", "a detail without a string description");
    }
    char *text = msm_json_dump(body, NULL);
    if (!text)
        fail("the error body does not serialise");
    free(text);
    json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    json_t *doc = msm_json_parse((const char *)data, size, &e);
    if (!doc) {
        check_error_body(&e);
        msm_json_err_deinit(&e);
        return 0;
    }
    if (msm_json_err_count(&e) != 0)
        fail("a parsed document with a recorded error");
    char *text = msm_json_dump(doc, NULL);
    if (!text)
        fail("a parsed document does not serialise");
    free(text);
    walk(&e, doc, 0);
    if (msm_json_err_count(&e) != 0)
        check_error_body(&e);
    json_decref(doc);
    msm_json_err_deinit(&e);
    return 0;
}
