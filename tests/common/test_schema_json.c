/* SPDX-License-Identifier: MIT */
/* The JSON (JSON Schema) type of msm/schema.h: compile errors, validation per keyword with
 * error paths, check/decode of bytes, canonical texts and the compatibility check. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static msm_schema_t *compile(const char *text, char *err, size_t err_size)
{
    return msm_schema_compile(MSM_SCHEMA_JSON, text, strlen(text), NULL, err, err_size);
}

/* Asserts got == want and says which row when not (CUnit shows no values). */
static void expect_str(const char *what, size_t row, const char *got, const char *want)
{
    int same = got && want && strcmp(got, want) == 0;
    if (!same)
        fprintf(stderr, "\n  %s, row %zu:\n    got  %s\n    want %s\n", what, row,
                got ? got : "(null)", want ? want : "(null)");
    CU_ASSERT_TRUE(same);
}

/* ---- compile ---- */

static void test_compile_errors(void)
{
    static const struct {
        const char *schema;
        const char *err;
    } cases[] = {
        {"{\"allOf\":[]}", "keyword 'allOf' is not supported (at $)"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"anyOf\":[{}]}}}",
         "keyword 'anyOf' is not supported (at $.properties.a)"},
        {"{\"properties\":{\"a\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/x\"}}}}",
         "keyword '$ref' is not supported (at $.properties.a.items)"},
        {"{\"additionalProperties\":{\"pattern\":\"^x\"}}",
         "keyword 'pattern' is not supported (at $.additionalProperties)"},
        {"{\"properties\":{\"a b\":{\"oneOf\":[]}}}",
         "keyword 'oneOf' is not supported (at $.properties[\"a b\"])"},
        {"{\"items\":[{}]}", "keyword 'items' in its array (tuple) form is not supported (at $)"},
        {"{\"uniqueItems\":true}",
         "keyword 'uniqueItems' is not supported (only false is accepted) (at $)"},
        {"{\"required\":3}", "'required' must be an array of names (at $)"},
        {"{\"required\":[\"a\",1]}", "'required' must be an array of names (at $)"},
        {"{\"required\":[\"b\",\"a\",\"b\"]}", "'required' names 'b' twice (at $)"},
        {"{\"properties\":{\"n\":{\"minimum\":\"a\"}}}",
         "'minimum' must be a number (at $.properties.n)"},
        {"{\"maximum\":null}", "'maximum' must be a number (at $)"},
        {"{\"exclusiveMinimum\":true}",
         "'exclusiveMinimum' must be a number (the draft-4 boolean form is not supported) "
         "(at $)"},
        {"{\"minLength\":-1}", "'minLength' must be a non-negative integer (at $)"},
        {"{\"maxItems\":1.5}", "'maxItems' must be a non-negative integer (at $)"},
        {"{\"maxLength\":\"3\"}", "'maxLength' must be a non-negative integer (at $)"},
        {"{\"type\":\"strin\"}", "'type': unknown type 'strin' (at $)"},
        {"{\"type\":[]}", "'type' must be a type name or a non-empty array of type names (at $)"},
        {"{\"type\":3}", "'type' must be a type name or a non-empty array of type names (at $)"},
        {"{\"type\":[\"string\",3]}", "'type' must list type names (strings) (at $)"},
        {"{\"type\":[\"string\",\"null\",\"string\"]}", "'type' names 'string' twice (at $)"},
        {"{\"properties\":{\"a\":3}}",
         "a schema must be an object or a boolean (at $.properties.a)"},
        {"{\"properties\":[]}", "'properties' must be an object of schemas (at $)"},
        {"{\"items\":\"x\"}", "a schema must be an object or a boolean (at $.items)"},
        {"{\"additionalProperties\":null}",
         "a schema must be an object or a boolean (at $.additionalProperties)"},
        {"{\"enum\":{}}", "'enum' must be an array (at $)"},
        {"{\"uniqueItems\":0}", "'uniqueItems' must be a boolean (at $)"},
        {"[]", "a schema must be an object or a boolean (at $)"},
        {"\"string\"", "a schema must be an object or a boolean (at $)"},
    };
    char err[256];
    for (size_t i = 0; i < N_OF(cases); i++) {
        err[0] = '\0';
        msm_schema_t *s = compile(cases[i].schema, err, sizeof(err));
        CU_ASSERT_PTR_NULL(s);
        msm_schema_free(s);
        expect_str("compile error", i, err, cases[i].err);
    }

    /* Every keyword that would change validation and is not implemented is refused. */
    static const char *const unsupported[] = {
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "$ref",
        "$defs",
        "definitions",
        "patternProperties",
        "pattern",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
        "propertyNames",
        "contains",
        "multipleOf",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
        "minProperties",
        "maxProperties",
        "$dynamicRef",
        "$recursiveRef",
        "additionalItems",
        "minContains",
        "maxContains",
    };
    for (size_t i = 0; i < N_OF(unsupported); i++) {
        char text[128], want[160];
        snprintf(text, sizeof(text), "{\"type\":\"object\",\"properties\":{\"p\":{\"%s\":1}}}",
                 unsupported[i]);
        snprintf(want, sizeof(want), "keyword '%s' is not supported (at $.properties.p)",
                 unsupported[i]);
        msm_schema_t *s = compile(text, err, sizeof(err));
        CU_ASSERT_PTR_NULL(s);
        msm_schema_free(s);
        expect_str("unsupported keyword", i, err, want);
    }

    /* Not JSON, trailing garbage, duplicate keys, empty. */
    static const char *const not_json[] = {"{\"a\":", "{} x", "{\"type\":1,\"type\":2}", ""};
    for (size_t i = 0; i < N_OF(not_json); i++) {
        err[0] = '\0';
        msm_schema_t *s = compile(not_json[i], err, sizeof(err));
        CU_ASSERT_PTR_NULL(s);
        msm_schema_free(s);
        CU_ASSERT_EQUAL(strncmp(err, "invalid JSON", 12), 0);
    }
}

/* "items" nested @p levels deep. */
static char *nested_items(int levels)
{
    size_t n = (size_t)levels * 10 + 8;
    char *t = malloc(n);
    size_t len = 0;
    for (int i = 0; i < levels; i++)
        len += (size_t)snprintf(t + len, n - len, "{\"items\":");
    len += (size_t)snprintf(t + len, n - len, "{}");
    for (int i = 0; i < levels; i++)
        t[len++] = '}';
    t[len] = '\0';
    return t;
}

static void test_compile_accepts(void)
{
    char err[512] = "";
    /* Annotations, unknown keywords (their values are not schemas), the no-op uniqueItems,
     * and keywords of another type's instances. */
    const char *ok = "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
                     "\"$id\":\"urn:x\",\"title\":\"t\",\"description\":\"d\",\"default\":{},"
                     "\"examples\":[1],\"$comment\":\"c\",\"format\":\"email\","
                     "\"readOnly\":true,\"writeOnly\":false,\"deprecated\":false,"
                     "\"x-vendor\":{\"allOf\":3},\"uniqueItems\":false,"
                     "\"properties\":{\"allOf\":{\"type\":\"string\"}},\"minimum\":2.0,"
                     "\"maxLength\":3.0,\"enum\":[],\"const\":null}";
    msm_schema_t *s = compile(ok, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(s);
    if (!s)
        fprintf(stderr, "\n  %s\n", err);
    msm_schema_free(s);
    CU_ASSERT_PTR_NOT_NULL(s = compile("true", err, sizeof(err)));
    msm_schema_free(s);
    CU_ASSERT_PTR_NOT_NULL(s = compile("false", err, sizeof(err)));
    msm_schema_free(s);

    /* 64 levels are fine, 65 are not. */
    char *deep = nested_items(64);
    s = compile(deep, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(s);
    msm_schema_free(s);
    free(deep);
    deep = nested_items(65);
    s = compile(deep, err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    msm_schema_free(s);
    free(deep);
    CU_ASSERT_EQUAL(strncmp(err, "schemas nest deeper than 64 levels (at $.items.items", 52), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "...)")); /* a long path is cut, not overflowed */

    /* Too many objects in an enum: their comparison cost is bounded. */
    size_t cap = 300 * 4 + 16, len = 0;
    char *big = malloc(cap);
    len += (size_t)snprintf(big, cap, "{\"enum\":[");
    for (int i = 0; i < 300; i++)
        len += (size_t)snprintf(big + len, cap - len, "%s{}", i ? "," : "");
    snprintf(big + len, cap - len, "]}");
    s = compile(big, err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    msm_schema_free(s);
    free(big);
    expect_str("enum containers", 0, err, "'enum' may list at most 256 objects or arrays (at $)");
}

static void test_canonical(void)
{
    char err[256];
    msm_schema_t *a = compile("{\"type\":\"object\",\n  \"properties\": {\"b\": {\"type\": "
                              "\"string\"}, \"a\": {}},\"required\":[\"b\"]}",
                              err, sizeof(err));
    msm_schema_t *b = compile(" { \"required\" : [\"b\"], \"properties\":{\"a\":{},"
                              "\"b\":{\"type\":\"string\"}}, \"type\":\"object\" } ",
                              err, sizeof(err));
    msm_schema_t *c = compile("{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"string\"},"
                              "\"a\":{}},\"required\":[\"a\"]}",
                              err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(msm_schema_type(a), MSM_SCHEMA_JSON);
    CU_ASSERT_STRING_EQUAL(msm_schema_content_type(a), "application/json");
    CU_ASSERT_PTR_NULL(msm_schema_message_name(a));
    expect_str("canonical", 0, msm_schema_canonical(a),
               "{\"properties\":{\"a\":{},\"b\":{\"type\":\"string\"}},\"required\":[\"b\"],"
               "\"type\":\"object\"}");
    CU_ASSERT_STRING_EQUAL(msm_schema_canonical(a), msm_schema_canonical(b));
    CU_ASSERT_STRING_NOT_EQUAL(msm_schema_canonical(a), msm_schema_canonical(c));
    msm_schema_free(a);
    msm_schema_free(b);
    msm_schema_free(c);
    a = compile(" true ", err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_STRING_EQUAL(msm_schema_canonical(a), "true");
    msm_schema_free(a);
}

/* ---- validation ---- */

typedef struct {
    const char *schema;
    const char *doc;
    const char *field; /* NULL: valid */
    const char *description;
} vcase_t;

static const vcase_t vcases[] = {
    /* type */
    {"{\"type\":\"string\"}", "\"x\"", NULL, NULL},
    {"{\"type\":\"string\"}", "3", "$", "must be a string"},
    {"{\"type\":\"integer\"}", "2", NULL, NULL},
    {"{\"type\":\"integer\"}", "2.0", NULL, NULL},
    {"{\"type\":\"integer\"}", "-1e3", NULL, NULL},
    {"{\"type\":\"integer\"}", "2.5", "$", "must be an integer"},
    {"{\"type\":\"integer\"}", "\"2\"", "$", "must be an integer"},
    {"{\"type\":\"number\"}", "2.5", NULL, NULL},
    {"{\"type\":\"number\"}", "7", NULL, NULL},
    {"{\"type\":\"number\"}", "\"2\"", "$", "must be a number"},
    {"{\"type\":[\"number\",\"integer\"]}", "true", "$", "must be a number"},
    {"{\"type\":\"boolean\"}", "false", NULL, NULL},
    {"{\"type\":\"boolean\"}", "0", "$", "must be a boolean"},
    {"{\"type\":\"object\"}", "[]", "$", "must be an object"},
    {"{\"type\":\"array\"}", "{}", "$", "must be an array"},
    {"{\"type\":\"null\"}", "null", NULL, NULL},
    {"{\"type\":\"null\"}", "0", "$", "must be null"},
    {"{\"type\":[\"string\",\"null\"]}", "null", NULL, NULL},
    {"{\"type\":[\"string\",\"null\"]}", "1", "$", "must be a string or null"},
    {"{\"type\":[\"null\",\"integer\",\"string\"]}", "true", "$",
     "must be a string, an integer or null"},
    /* properties, required, additionalProperties */
    {"{\"properties\":{\"a\":{\"type\":\"string\"}}}", "{\"a\":\"x\",\"b\":1}", NULL, NULL},
    {"{\"properties\":{\"a\":{\"type\":\"string\"}}}", "{\"a\":1}", "a", "must be a string"},
    {"{\"properties\":{\"a b\":{\"type\":\"string\"}}}", "{\"a b\":1}", "[\"a b\"]",
     "must be a string"},
    {"{\"properties\":{\"a\":false}}", "{\"a\":1}", "a", "is not allowed"},
    {"{\"properties\":{\"a\":false}}", "{\"b\":1}", NULL, NULL},
    {"{\"required\":[\"a\",\"b\"]}", "{\"b\":null,\"a\":0}", NULL, NULL},
    {"{\"required\":[\"a\",\"b\"]}", "{\"b\":null}", "a", "is required"},
    {"{\"required\":[\"a\"]}", "3", NULL, NULL}, /* object keywords ignore other types */
    {"{\"properties\":{\"a\":{}},\"additionalProperties\":false}", "{\"a\":1}", NULL, NULL},
    {"{\"properties\":{\"a\":{}},\"additionalProperties\":false}", "{\"a\":1,\"b\":2}", "b",
     "unknown field"},
    {"{\"additionalProperties\":{\"type\":\"integer\"}}", "{\"x\":1,\"y\":2.0}", NULL, NULL},
    {"{\"additionalProperties\":{\"type\":\"integer\"}}", "{\"x\":\"s\"}", "x",
     "must be an integer"},
    /* items */
    {"{\"items\":{\"type\":\"integer\"}}", "[1,2,3]", NULL, NULL},
    {"{\"items\":{\"type\":\"integer\"}}", "[1,\"a\"]", "[1]", "must be an integer"},
    {"{\"items\":{\"items\":{\"type\":\"string\"}}}", "[[],[\"a\",3]]", "[1][1]",
     "must be a string"},
    {"{\"items\":false}", "[]", NULL, NULL},
    {"{\"items\":false}", "[0]", "[0]", "is not allowed"},
    /* enum and const: numbers by value, objects regardless of member order */
    {"{\"enum\":[\"red\",\"green\",1,null]}", "\"green\"", NULL, NULL},
    {"{\"enum\":[\"red\",\"green\",1,null]}", "1.0", NULL, NULL},
    {"{\"enum\":[\"red\",\"green\",1,null]}", "null", NULL, NULL},
    {"{\"enum\":[\"red\",\"green\",1,null]}", "\"blue\"", "$",
     "must be one of [\"red\",\"green\",1,null]"},
    {"{\"enum\":[\"red\",\"green\",1,null]}", "false", "$",
     "must be one of [\"red\",\"green\",1,null]"},
    {"{\"enum\":[{\"a\":[1,2],\"b\":true}]}", "{\"b\":true,\"a\":[1,2.0]}", NULL, NULL},
    {"{\"enum\":[{\"a\":[1,2]}]}", "{\"a\":[2,1]}", "$", "must be one of [{\"a\":[1,2]}]"},
    {"{\"enum\":[]}", "1", "$", "must be one of []"},
    {"{\"const\":{\"a\":1}}", "{\"a\":1.0}", NULL, NULL},
    {"{\"const\":{\"a\":1}}", "{\"a\":2}", "$", "must be {\"a\":1}"},
    {"{\"const\":null}", "0", "$", "must be null"},
    /* numeric bounds */
    {"{\"minimum\":1}", "1", NULL, NULL},
    {"{\"minimum\":1}", "0.5", "$", "must be >= 1"},
    {"{\"minimum\":1}", "\"0\"", NULL, NULL}, /* numeric keywords ignore strings */
    {"{\"exclusiveMinimum\":0}", "0", "$", "must be > 0"},
    {"{\"exclusiveMinimum\":0}", "0.0001", NULL, NULL},
    {"{\"maximum\":10}", "10", NULL, NULL},
    {"{\"maximum\":10}", "10.5", "$", "must be <= 10"},
    {"{\"exclusiveMaximum\":2.5}", "2.5", "$", "must be < 2.5"},
    {"{\"exclusiveMaximum\":0.1}", "0.09", NULL, NULL},
    {"{\"minimum\":9007199254740993}", "9007199254740992", "$", "must be >= 9007199254740993"},
    {"{\"minimum\":9007199254740993}", "9007199254740993", NULL, NULL},
    /* lengths count code points */
    {"{\"minLength\":2}", "\"\xc3\xa9\"", "$", "must be at least 2 characters long"},
    {"{\"minLength\":2}", "\"\xc3\xa9\xc3\xa9\"", NULL, NULL},
    {"{\"maxLength\":2}", "\"\xe6\x97\xa5\xe6\x9c\xac\"", NULL, NULL},
    {"{\"maxLength\":2}", "\"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\"", "$",
     "must be at most 2 characters long"},
    {"{\"maxLength\":1}", "\"\\ud83d\\ude00\"", NULL, NULL}, /* one emoji */
    {"{\"minLength\":1}", "\"\"", "$", "must be at least 1 character long"},
    /* item counts */
    {"{\"minItems\":1}", "[]", "$", "must have at least 1 item"},
    {"{\"maxItems\":2}", "[1,2]", NULL, NULL},
    {"{\"maxItems\":2}", "[1,2,3]", "$", "must have at most 2 items"},
    /* boolean schemas */
    {"true", "{\"anything\":[1]}", NULL, NULL},
    {"false", "null", "$", "is not allowed"},
    {"{}", "[{}]", NULL, NULL},
};

static void test_validate_table(void)
{
    char err[256];
    for (size_t i = 0; i < N_OF(vcases); i++) {
        const vcase_t *vc = &vcases[i];
        msm_schema_t *s = compile(vc->schema, err, sizeof(err));
        if (!s)
            fprintf(stderr, "\n  row %zu: %s\n", i, err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(s);
        json_t *doc = json_loads(vc->doc, JSON_DECODE_ANY, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(doc);

        msm_json_err_t e;
        msm_json_err_init(&e);
        uint8_t *out = NULL;
        size_t out_len = 0;
        int rc = msm_schema_encode_json(s, doc, &e, &out, &out_len);
        if (!vc->field) {
            CU_ASSERT_EQUAL(rc, MSM_OK);
            expect_str("valid document", i, msm_json_err_message(&e), "");
            char *want = msm_json_dump(doc, NULL);
            CU_ASSERT_PTR_NOT_NULL_FATAL(out);
            CU_ASSERT_EQUAL(out_len, strlen(want));
            CU_ASSERT_EQUAL(memcmp(out, want, out_len), 0);
            free(want);
        } else {
            CU_ASSERT_EQUAL(rc, MSM_ERR_INVALID);
            CU_ASSERT_PTR_NULL(out);
            CU_ASSERT_EQUAL(msm_json_err_count(&e), 1);
            json_t *details = msm_json_err_take_details(&e);
            json_t *d = json_array_get(details, 0);
            expect_str("error field", i, json_string_value(json_object_get(d, "field")), vc->field);
            expect_str("error description", i, json_string_value(json_object_get(d, "description")),
                       vc->description);
            json_decref(details);
        }
        /* The same through the wire form. */
        char why[256] = "";
        rc = msm_schema_check(s, (const uint8_t *)vc->doc, strlen(vc->doc), why, sizeof(why));
        CU_ASSERT_EQUAL(rc, vc->field ? MSM_ERR_INVALID : MSM_OK);
        if (vc->field) {
            char want[300];
            snprintf(want, sizeof(want), "%s: %s", vc->field, vc->description);
            expect_str("check why", i, why, want);
        }
        free(out);
        msm_json_err_deinit(&e);
        json_decref(doc);
        msm_schema_free(s);
    }
}

/* Every error is reported at its path, under the path the caller pushed. */
static void test_validate_all_errors_with_paths(void)
{
    const char *schema =
        "{\"type\":\"object\",\"required\":[\"items\",\"id\"],\"additionalProperties\":false,"
        "\"properties\":{\"id\":{\"type\":\"string\",\"minLength\":1},"
        "\"items\":{\"type\":\"array\",\"minItems\":1,\"items\":{\"type\":\"object\","
        "\"required\":[\"qty\",\"sku\"],\"properties\":{\"qty\":{\"type\":\"integer\","
        "\"minimum\":1},\"sku\":{\"type\":\"string\"}}}}}}";
    const char *doc = "{\"items\":[{\"qty\":0,\"sku\":\"a\"},{\"qty\":2},"
                      "{\"qty\":1.5,\"sku\":3},{\"qty\":2.0,\"sku\":\"ok\"}],\"extra\":1}";
    char err[256];
    msm_schema_t *s = compile(schema, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    json_t *v = json_loads(doc, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);

    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_json_path_push_key(&e, "events");
    msm_json_path_push_index(&e, 2);
    msm_json_path_push_key(&e, "data");
    uint8_t *out = NULL;
    size_t out_len = 0;
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, v, &e, &out, &out_len), MSM_ERR_INVALID);
    CU_ASSERT_PTR_NULL(out);
    CU_ASSERT_EQUAL(e.je_depth, 3); /* the caller's path is left as it was */
    msm_json_path_pop(&e);
    msm_json_path_pop(&e);
    msm_json_path_pop(&e);

    static const char *const want[][2] = {
        {"events[2].data.items[0].qty", "must be >= 1"},
        {"events[2].data.items[1].sku", "is required"},
        {"events[2].data.items[2].qty", "must be an integer"},
        {"events[2].data.items[2].sku", "must be a string"},
        {"events[2].data.extra", "unknown field"},
        {"events[2].data.id", "is required"},
    };
    CU_ASSERT_EQUAL(msm_json_err_count(&e), N_OF(want));
    json_t *details = msm_json_err_take_details(&e);
    CU_ASSERT_EQUAL_FATAL(json_array_size(details), N_OF(want));
    for (size_t i = 0; i < N_OF(want); i++) {
        json_t *d = json_array_get(details, i);
        expect_str("field", i, json_string_value(json_object_get(d, "field")), want[i][0]);
        expect_str("description", i, json_string_value(json_object_get(d, "description")),
                   want[i][1]);
    }
    json_decref(details);
    msm_json_err_deinit(&e);

    /* Errors already in the collector do not make a valid value invalid. */
    msm_json_err_init(&e);
    msm_json_err_add(&e, "earlier", "some other problem");
    json_t *good = json_loads("{\"id\":\"x\",\"items\":[{\"qty\":1,\"sku\":\"a\"}]}", 0, NULL);
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, good, &e, &out, &out_len), MSM_OK);
    CU_ASSERT_EQUAL(out_len, strlen("{\"id\":\"x\",\"items\":[{\"qty\":1,\"sku\":\"a\"}]}"));
    free(out);
    json_decref(good);
    msm_json_err_deinit(&e);
    json_decref(v);
    msm_schema_free(s);
}

static void test_check_and_decode(void)
{
    char err[256], why[256];
    msm_schema_t *s = compile("{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\","
                              "\"maximum\":5}}}",
                              err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    const char good[] = "{\"n\": 3, \"x\": [1, 2]}trailing";
    size_t good_len = strlen(good) - strlen("trailing"); /* not NUL-terminated at len */
    CU_ASSERT_EQUAL(msm_schema_check(s, (const uint8_t *)good, good_len, why, sizeof(why)), MSM_OK);
    json_t *v = msm_schema_decode_json(s, (const uint8_t *)good, good_len, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(v, "n")), 3);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(v, "x")), 2);
    /* encode(decode(x)) is x in compact form. */
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *out = NULL;
    size_t out_len = 0;
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, v, &e, &out, &out_len), MSM_OK);
    CU_ASSERT_EQUAL(out_len, strlen("{\"n\":3,\"x\":[1,2]}"));
    CU_ASSERT_EQUAL(memcmp(out, "{\"n\":3,\"x\":[1,2]}", out_len), 0);
    free(out);
    msm_json_err_deinit(&e);
    json_decref(v);

    static const struct {
        const char *bytes;
        const char *why_prefix;
    } bad[] = {
        {"{\"n\":6}", "n: must be <= 5"},         {"{\"n\":\"6\"}", "n: must be an integer"},
        {"[]", "$: must be an object"},           {"{\"n\":1} x", "$: invalid JSON"},
        {"{\"n\":1,\"n\":2}", "$: invalid JSON"}, {"", "$: invalid JSON"},
        {"{\"n\":", "$: invalid JSON"},
    };
    for (size_t i = 0; i < N_OF(bad); i++) {
        why[0] = '\0';
        CU_ASSERT_EQUAL(msm_schema_check(s, (const uint8_t *)bad[i].bytes, strlen(bad[i].bytes),
                                         why, sizeof(why)),
                        MSM_ERR_INVALID);
        if (strncmp(why, bad[i].why_prefix, strlen(bad[i].why_prefix)) != 0)
            expect_str("check why", i, why, bad[i].why_prefix);
        CU_ASSERT_PTR_NULL(msm_schema_decode_json(s, (const uint8_t *)bad[i].bytes,
                                                  strlen(bad[i].bytes), why, sizeof(why)));
    }
    /* Embedded NUL bytes are not JSON text. */
    const uint8_t nul[] = {'{', '}', 0, ' '};
    CU_ASSERT_EQUAL(msm_schema_check(s, nul, sizeof(nul), why, sizeof(why)), MSM_ERR_INVALID);
    msm_schema_free(s);
}

/* A large enum against a large document stays fast: strings are looked up, not scanned. */
static void test_large_enum(void)
{
    enum { N = 20000 };
    json_t *values = json_array();
    json_t *doc = json_array();
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof(name), "v%05d", i);
        json_array_append_new(values, json_string(name));
        snprintf(name, sizeof(name), "v%05d", N - 1 - i);
        json_array_append_new(doc, json_string(name));
    }
    json_array_append_new(doc, json_string("nope"));
    json_t *schema = json_pack("{s:{s:o}}", "items", "enum", values);
    char *text = json_dumps(schema, JSON_COMPACT);
    char err[256];
    msm_schema_t *s = compile(text, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *out = NULL;
    size_t out_len;
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, doc, &e, &out, &out_len), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 1);
    const char *msg = msm_json_err_message(&e);
    CU_ASSERT_EQUAL(strncmp(msg, "[20000]: must be one of [\"v00000\",\"v00001\",", 43), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, ",...]")); /* the list is cut, not dumped whole */
    msm_json_err_deinit(&e);
    /* Reading its own writes: 20000 values, each looked up. */
    char why[256];
    CU_ASSERT_EQUAL(msm_schema_can_read(s, s, why, sizeof(why)), MSM_OK);
    msm_schema_free(s);
    free(text);
    json_decref(schema);
    json_decref(doc);
}

/* Every one-byte change and every truncation of a rich schema: compile, validate and compare
 * whatever compiles, under the sanitizers. Nothing may crash or leak. */
static void test_garbled_schemas(void)
{
    const char *base =
        "{\"type\":[\"object\",\"null\"],\"required\":[\"a\"],\"additionalProperties\":"
        "{\"type\":\"string\",\"maxLength\":3},\"properties\":{\"a\":{\"type\":\"array\","
        "\"minItems\":1,\"items\":{\"enum\":[1,\"x\",{\"k\":[]}]}},\"n\":{\"type\":"
        "\"integer\",\"exclusiveMinimum\":0,\"maximum\":9.5},\"c\":{\"const\":true}}}";
    const char *doc = "{\"a\":[1,\"x\",{\"k\":[]},2],\"n\":3,\"c\":true,\"z\":\"long\"}";
    static const char repl[] = {'0', '"', '{', '}', '[', ']', ':', ',', 'x', '-', ' ', '\\'};
    char err[256], why[512];
    msm_schema_t *orig = compile(base, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(orig);
    json_t *v = json_loads(doc, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    size_t len = strlen(base), compiled = 0;
    char *text = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    for (size_t i = 0; i < len; i++) {
        for (size_t k = 0; k <= sizeof(repl); k++) {
            memcpy(text, base, len + 1);
            size_t n = len;
            if (k == sizeof(repl))
                n = i; /* truncated */
            else
                text[i] = repl[k];
            msm_schema_t *s = msm_schema_compile(MSM_SCHEMA_JSON, text, n, NULL, err, sizeof(err));
            if (!s) {
                CU_ASSERT_TRUE(err[0] != '\0');
                continue;
            }
            compiled++;
            msm_json_err_t e;
            msm_json_err_init(&e);
            uint8_t *out = NULL;
            size_t out_len;
            if (msm_schema_encode_json(s, v, &e, &out, &out_len) == MSM_OK)
                free(out);
            msm_json_err_deinit(&e);
            msm_schema_check(s, (const uint8_t *)doc, strlen(doc), why, sizeof(why));
            int rc = msm_schema_can_read(s, orig, why, sizeof(why));
            CU_ASSERT_TRUE(rc == MSM_OK || rc == MSM_ERR_CONFLICT);
            rc = msm_schema_can_read(orig, s, why, sizeof(why));
            CU_ASSERT_TRUE(rc == MSM_OK || rc == MSM_ERR_CONFLICT);
            CU_ASSERT_EQUAL(msm_schema_can_read(s, s, why, sizeof(why)), MSM_OK);
            msm_schema_free(s);
        }
    }
    CU_ASSERT_TRUE(compiled > 50);
    free(text);
    json_decref(v);
    msm_schema_free(orig);
}

/* ---- compatibility ---- */

typedef struct {
    const char *reader;
    const char *writer;
    const char *why; /* NULL: compatible */
} ccase_t;

static const ccase_t ccases[] = {
    /* compatible */
    {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}",
     "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}", NULL},
    {"{\"type\":\"number\"}", "{\"type\":\"integer\"}", NULL},
    {"{\"type\":[\"string\",\"null\"]}", "{\"type\":\"string\"}", NULL},
    {"{}", "{\"type\":\"string\",\"maxLength\":3}", NULL},
    {"true", "{\"properties\":{\"a\":{\"type\":\"string\"}}}", NULL},
    {"{\"type\":\"string\"}", "false", NULL},
    /* an optional property added; the writer is closed, so its documents never hold it */
    {"{\"properties\":{\"a\":{\"type\":\"string\"},\"b\":{\"type\":\"integer\"}}}",
     "{\"properties\":{\"a\":{\"type\":\"string\"}},\"additionalProperties\":false}", NULL},
    /* a property removed from an open reader */
    {"{\"properties\":{\"a\":{\"type\":\"string\"}}}",
     "{\"properties\":{\"a\":{\"type\":\"string\"},\"b\":{\"type\":\"integer\"}}}", NULL},
    /* a property that accepts anything added to an open writer */
    {"{\"properties\":{\"b\":{\"description\":\"free\"}}}", "{}", NULL},
    /* the writer's additionalProperties schema covers the added property */
    {"{\"properties\":{\"x\":{\"type\":[\"string\",\"null\"]}},"
     "\"additionalProperties\":{\"type\":\"string\"}}",
     "{\"additionalProperties\":{\"type\":\"string\",\"maxLength\":4}}", NULL},
    /* a property removed from a closed reader that the writer never allowed */
    {"{\"additionalProperties\":false}",
     "{\"properties\":{\"gone\":false},\"additionalProperties\":false}", NULL},
    {"{\"properties\":{\"a\":{}}}", "{\"required\":[\"a\"],\"properties\":{\"a\":{}}}", NULL},
    {"{\"required\":[\"a\"]}", "{\"required\":[\"b\",\"a\"]}", NULL},
    {"{\"enum\":[\"a\",\"b\",\"c\"]}", "{\"enum\":[\"b\",\"a\"]}", NULL},
    {"{\"type\":\"string\",\"maxLength\":1}", "{\"const\":\"a\"}", NULL},
    {"{\"enum\":[true,false]}", "{\"type\":\"boolean\"}", NULL},
    {"{\"enum\":[1,2]}", "{\"enum\":[1.0,2,\"x\"],\"type\":\"integer\"}", NULL},
    {"{\"minimum\":0,\"maximum\":10}", "{\"minimum\":1,\"maximum\":10}", NULL},
    {"{\"exclusiveMinimum\":0}", "{\"minimum\":0.5,\"exclusiveMinimum\":0}", NULL},
    {"{\"minimum\":0}", "{\"exclusiveMinimum\":0}", NULL},
    {"{\"type\":\"integer\",\"minimum\":1}", "{\"type\":\"integer\",\"exclusiveMinimum\":0}", NULL},
    {"{\"maximum\":2}", "{\"type\":\"integer\",\"exclusiveMaximum\":2.5}", NULL},
    {"{\"maxLength\":10,\"minLength\":1}", "{\"maxLength\":5,\"minLength\":2}", NULL},
    {"{\"items\":{\"type\":\"number\"},\"maxItems\":4}",
     "{\"items\":{\"type\":\"integer\"},\"maxItems\":3}", NULL},
    {"{\"items\":{\"type\":\"string\"}}", "{\"type\":\"array\",\"maxItems\":0}", NULL},
    /* incompatible */
    {"{\"type\":\"object\",\"required\":[\"a\"]}", "{\"type\":\"string\"}",
     "$: type narrowed: the writer allows string, the reader only object"},
    {"{\"type\":\"string\"}", "{\"type\":[\"string\",\"null\"]}",
     "$: type narrowed: the writer allows string, null, the reader only string"},
    {"{\"type\":\"integer\"}", "{\"type\":\"number\"}",
     "$: type narrowed: the writer allows number, the reader only integer"},
    {"{\"properties\":{\"a\":{\"properties\":{\"b c\":{\"type\":\"string\"}}}}}",
     "{\"properties\":{\"a\":{\"properties\":{\"b c\":{\"type\":\"integer\"}}}}}",
     "$.a[\"b c\"]: type narrowed: the writer allows integer, the reader only string"},
    {"{\"properties\":{\"b\":{\"type\":\"string\"}}}", "{\"properties\":{\"a\":{}}}",
     "$.b: property added to an open content model (the writer does not declare it and allows "
     "additional properties, so its documents may hold any value there)"},
    {"{\"properties\":{\"x\":{\"type\":\"integer\"}},"
     "\"additionalProperties\":{\"type\":\"string\"}}",
     "{\"additionalProperties\":{\"type\":\"string\"}}",
     "$.x: type narrowed: the writer allows string, the reader only integer"},
    {"{\"properties\":{\"a\":{}},\"additionalProperties\":false}",
     "{\"properties\":{\"a\":{},\"b\":{\"type\":\"string\"}},\"additionalProperties\":false}",
     "$.b: property removed from a closed content model (the reader's additionalProperties is "
     "false, the writer allows it)"},
    {"{\"additionalProperties\":false}", "{}",
     "$: the reader rejects undeclared properties (additionalProperties false), the writer "
     "allows them"},
    {"{\"additionalProperties\":{\"type\":\"integer\"}}",
     "{\"additionalProperties\":{\"type\":\"number\"}}",
     "$.*: type narrowed: the writer allows number, the reader only integer"},
    {"{\"required\":[\"a\"],\"properties\":{\"a\":{}}}", "{\"properties\":{\"a\":{}}}",
     "$.a: required by the reader but not by the writer"},
    {"{\"enum\":[\"a\"]}", "{\"enum\":[\"a\",\"b\"]}",
     "$: the writer allows \"b\", the reader rejects it ($: must be one of [\"a\"])"},
    {"{\"type\":\"string\",\"enum\":[\"a\"]}", "{\"type\":\"string\"}",
     "$: the reader allows only listed values (enum or const), the writer does not list its "
     "values"},
    {"{\"const\":true}", "{\"type\":\"boolean\"}",
     "$: the writer allows false, the reader rejects it ($: must be true)"},
    {"{\"minimum\":5}", "{\"minimum\":1}", "$: minimum 5 is narrower than the writer's bound >= 1"},
    {"{\"minimum\":0}", "{\"type\":\"number\"}",
     "$: minimum 0 added (the writer has no lower bound)"},
    {"{\"exclusiveMaximum\":10}", "{\"maximum\":10}",
     "$: exclusiveMaximum 10 is narrower than the writer's bound <= 10"},
    {"{\"exclusiveMinimum\":0}", "{\"minimum\":0}",
     "$: exclusiveMinimum 0 is narrower than the writer's bound >= 0"},
    {"{\"maxLength\":5}", "{\"maxLength\":10}", "$: maxLength lowered from 10 to 5"},
    {"{\"minLength\":2}", "{\"minLength\":1}", "$: minLength raised from 1 to 2"},
    {"{\"minItems\":1}", "{\"type\":\"array\"}", "$: minItems 1 added"},
    {"{\"maxItems\":1}", "{}", "$: maxItems 1 added"},
    {"{\"items\":{\"type\":\"string\"}}", "{\"items\":{}}",
     "$[*]: type narrowed: the writer allows any type, the reader only string"},
    {"false", "{}", "$: the reader accepts no value here (false), the writer does"},
    {"{\"properties\":{\"a\":false}}", "{\"properties\":{\"a\":{\"type\":\"null\"}}}",
     "$.a: the reader accepts no value here (false), the writer does"},
};

static void test_can_read_table(void)
{
    char err[256];
    for (size_t i = 0; i < N_OF(ccases); i++) {
        msm_schema_t *r = compile(ccases[i].reader, err, sizeof(err));
        msm_schema_t *w = compile(ccases[i].writer, err, sizeof(err));
        if (!r || !w)
            fprintf(stderr, "\n  row %zu: %s\n", i, err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_PTR_NOT_NULL_FATAL(w);
        char why[512] = "unset";
        int rc = msm_schema_can_read(r, w, why, sizeof(why));
        if (!ccases[i].why) {
            if (rc != MSM_OK)
                fprintf(stderr, "\n  row %zu: unexpected: %s\n", i, why);
            CU_ASSERT_EQUAL(rc, MSM_OK);
            CU_ASSERT_STRING_EQUAL(why, "");
        } else {
            CU_ASSERT_EQUAL(rc, MSM_ERR_CONFLICT);
            expect_str("can_read why", i, why, ccases[i].why);
        }
        msm_schema_free(r);
        msm_schema_free(w);
    }
}

/* BACKWARD is can_read(new, latest); FORWARD is can_read(latest, new): the usual evolutions. */
static void test_evolution_directions(void)
{
    char err[256], why[512];
    const char *v1 = "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"}},"
                     "\"required\":[\"id\"],\"additionalProperties\":false}";
    /* v2 adds an optional field: BACKWARD (v1 is closed) and FORWARD. */
    const char *v2 = "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},"
                     "\"note\":{\"type\":\"string\"}},\"required\":[\"id\"],"
                     "\"additionalProperties\":false}";
    /* v3 makes it required: FORWARD only. */
    const char *v3 = "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\"},"
                     "\"note\":{\"type\":\"string\"}},\"required\":[\"id\",\"note\"],"
                     "\"additionalProperties\":false}";
    msm_schema_t *s1 = compile(v1, err, sizeof(err));
    msm_schema_t *s2 = compile(v2, err, sizeof(err));
    msm_schema_t *s3 = compile(v3, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s3);
    CU_ASSERT_EQUAL(msm_schema_can_read(s2, s1, why, sizeof(why)), MSM_OK);
    /* v1 closed: v2's documents with "note" are rejected by v1. */
    CU_ASSERT_EQUAL(msm_schema_can_read(s1, s2, why, sizeof(why)), MSM_ERR_CONFLICT);
    expect_str("forward v1<-v2", 0, why,
               "$.note: property removed from a closed content model (the reader's "
               "additionalProperties is false, the writer allows it)");
    CU_ASSERT_EQUAL(msm_schema_can_read(s3, s2, why, sizeof(why)), MSM_ERR_CONFLICT);
    expect_str("backward v3<-v2", 0, why, "$.note: required by the reader but not by the writer");
    CU_ASSERT_EQUAL(msm_schema_can_read(s2, s3, why, sizeof(why)), MSM_OK);
    msm_schema_free(s1);
    msm_schema_free(s2);
    msm_schema_free(s3);
}

/* A reader property is compared with the writer's additionalProperties once per name: two
 * large schemas could multiply their sizes, so the comparison's work is bounded. */
static void test_compat_work_bounded(void)
{
    json_t *rprops = json_object(), *wprops = json_object();
    for (int i = 0; i < 4000; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%d", i);
        json_object_set_new(rprops, name, json_pack("{s:s}", "type", "object"));
        if (i < 3000)
            json_object_set_new(wprops, name + 1, json_object());
    }
    json_t *reader = json_pack("{s:o}", "properties", rprops);
    json_t *writer =
        json_pack("{s:{s:s,s:o}}", "additionalProperties", "type", "object", "properties", wprops);
    char *rtext = json_dumps(reader, JSON_COMPACT), *wtext = json_dumps(writer, JSON_COMPACT);
    char err[256], why[256];
    msm_schema_t *r = compile(rtext, err, sizeof(err));
    msm_schema_t *w = compile(wtext, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_EQUAL(msm_schema_can_read(r, w, why, sizeof(why)), MSM_ERR_CONFLICT);
    expect_str("budget", 0, strchr(why, ':'), ": the schemas are too large to compare");
    /* Each one against itself is linear and fine. */
    CU_ASSERT_EQUAL(msm_schema_can_read(r, r, why, sizeof(why)), MSM_OK);
    CU_ASSERT_EQUAL(msm_schema_can_read(w, w, why, sizeof(why)), MSM_OK);
    msm_schema_free(r);
    msm_schema_free(w);
    free(rtext);
    free(wtext);
    json_decref(reader);
    json_decref(writer);
}

static CU_TestInfo schema_json_tests[] = {
    {"compile: unsupported keywords and bad values", test_compile_errors},
    {"compile: annotations, depth and limits", test_compile_accepts},
    {"canonical: whitespace and member order", test_canonical},
    {"validate: one table row per keyword", test_validate_table},
    {"validate: every error at its path", test_validate_all_errors_with_paths},
    {"check and decode the wire form", test_check_and_decode},
    {"a large enum is looked up", test_large_enum},
    {"garbled schemas neither crash nor leak", test_garbled_schemas},
    {"can_read: compatible and not, with reasons", test_can_read_table},
    {"can_read: backward and forward evolution", test_evolution_directions},
    {"can_read: work is bounded", test_compat_work_bounded},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"schema_json", NULL, NULL, NULL, NULL, schema_json_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
