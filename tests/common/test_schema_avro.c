/* SPDX-License-Identifier: MIT */
/* The AVRO schema type: compile errors, canonical text, resolution (cross-checked with
 * avro-c's resolving reader), JSON to binary (compared with avro-c's writer), round trips,
 * malformed binaries and error paths. Schemas are written with ' for " to stay readable. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/schema.h"
#include "schema_avro_int.h"

#include <avro.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* 'a' -> "a": the test's schemas and values are written with single quotes. */
static char *q(const char *s)
{
    char *d = strdup(s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    for (char *p = d; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    return d;
}

static msm_schema_t *compile_q(const char *text, char *err, size_t err_size)
{
    char *t = q(text);
    msm_schema_t *s = msm_schema_compile(MSM_SCHEMA_AVRO, t, strlen(t), NULL, err, err_size);
    free(t);
    return s;
}

static msm_schema_t *compile_ok(const char *text)
{
    char err[256] = "";
    msm_schema_t *s = compile_q(text, err, sizeof(err));
    if (!s)
        fprintf(stderr, "\ncompile failed: %s\n  schema: %s\n", err, text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    return s;
}

static json_t *json_q(const char *text)
{
    char *t = q(text);
    json_error_t je;
    json_t *v = json_loads(t, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    free(t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    return v;
}

static char *hex(const uint8_t *p, size_t n)
{
    char *s = malloc(n * 3 + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    char *end = s;
    *end = '\0';
    for (size_t i = 0; i < n; i++)
        end += sprintf(end, i ? " %02x" : "%02x", p[i]);
    return s;
}

/* Encodes @p value_q; NULL when it fails (then *message is the first error). */
static uint8_t *encode_q(
    const msm_schema_t *s, const char *value_q, size_t *len, char *message, size_t message_size)
{
    json_t *v = json_q(value_q);
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *out = NULL;
    int rc = msm_schema_encode_json(s, v, &e, &out, len);
    if (message)
        snprintf(message, message_size, "%s", msm_json_err_message(&e));
    CU_ASSERT_EQUAL(rc == MSM_OK, msm_json_err_count(&e) == 0);
    msm_json_err_deinit(&e);
    json_decref(v);
    return rc == MSM_OK ? out : NULL;
}

static void assert_contains(const char *text, const char *part)
{
    if (!strstr(text, part))
        fprintf(stderr, "\n  expected '%s' in '%s'\n", part, text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, part));
}

/* ---- compiling ---- */

static void test_compile_errors(void)
{
    static const struct {
        const char *schema;
        const char *error;
    } cases[] = {
        {"", "invalid JSON"},
        {"{'type':", "invalid JSON"},
        {"{'type':'int','type':'long'}", "invalid JSON"}, /* duplicate member */
        {"'nope'", "unknown type 'nope'"},
        {"42", "a schema must be"},
        {"{'type':'record','fields':[]}", "record without a \"name\""},
        {"{'type':'record','name':'R'}", "\"fields\" must be an array"},
        {"{'type':'record','name':'1R','fields':[]}", "not a valid name"},
        {"{'type':'record','name':'a..R','fields':[]}", "not a valid full name"},
        {"{'type':'record','name':'R','fields':[{'name':'a','type':'int'},{'name':'a','type':'int'}"
         "]}",
         "field 'a' appears twice"},
        {"{'type':'record','name':'R','fields':[{'name':'a'}]}", "no \"type\""},
        {"{'type':'record','name':'R','fields':[{'name':'a','type':'int','default':'x'}]}",
         "record R, field 'a': invalid default: must be an int"},
        {"{'type':'record','name':'R','fields':[{'name':'a','type':['null','string'],'default':'x'}"
         "]}",
         "invalid default: must be null"},
        {"{'type':'record','name':'R','fields':[{'name':'a','type':{'type':'fixed','name':'F','"
         "size':2},'default':'\\u0100x'}]}",
         "invalid default: must be a string of 2 characters"},
        {"{'type':'record','name':'R','fields':[{'name':'a','type':'R'}],'x':1,'name2':'y','"
         "namespace':'n'}",
         ""},
        {"{'type':'enum','name':'E','symbols':[]}", "non-empty array"},
        {"{'type':'enum','name':'E','symbols':['A','A']}", "symbol 'A' appears twice"},
        {"{'type':'enum','name':'E','symbols':['A','B'],'default':'C'}", "one of its symbols"},
        {"{'type':'fixed','name':'F','size':-1}", "\"size\" must be an integer"},
        {"{'type':'array'}", "array without \"items\""},
        {"{'type':'map','values':'nope'}", "unknown type 'nope'"},
        {"['int','int']", "contains int twice"},
        {"[['int']]", "cannot contain a union directly"},
        {"[]", "at least one type"},
        {"[{'type':'fixed','name':'F','size':1},{'type':'fixed','name':'F','size':1}]",
         "type 'F' is defined twice"},
        {"[{'type':'fixed','name':'F','size':1},'F']", "contains F twice"},
        {"{'type':'record','name':'int','fields':[]}", "a primitive type"},
        {"{'type':'error','name':'E','fields':[]}", "unknown type 'error'"},
        /* Accepted by our parser (a short name falls back to the null namespace), refused by
         * avro-c: avro-c's own message comes through. */
        {"{'type':'record','name':'B','namespace':'x','fields':["
         "{'name':'a','type':{'type':'record','name':'A','namespace':'','fields':[]}},"
         "{'name':'b','type':'A'}]}",
         "invalid Avro schema: "},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[256] = "";
        msm_schema_t *s = compile_q(cases[i].schema, err, sizeof(err));
        if (!cases[i].error[0]) {
            /* The one valid schema of the table: unknown attributes are fine. */
            CU_ASSERT_PTR_NOT_NULL(s);
            msm_schema_free(s);
            continue;
        }
        if (s)
            fprintf(stderr, "\n  accepted: %s\n", cases[i].schema);
        CU_ASSERT_PTR_NULL(s);
        msm_schema_free(s);
        assert_contains(err, cases[i].error);
    }
}

static void test_compile_depth_limit(void)
{
    /* Arrays nested 64 deep compile; 65 do not. */
    for (int depth = 64; depth <= 65; depth++) {
        char text[4096] = "";
        for (int i = 0; i < depth; i++)
            strcat(text, "{\"type\":\"array\",\"items\":");
        strcat(text, "\"int\"");
        for (int i = 0; i < depth; i++)
            strcat(text, "}");
        char err[256] = "";
        msm_schema_t *s =
            msm_schema_compile(MSM_SCHEMA_AVRO, text, strlen(text), NULL, err, sizeof(err));
        if (depth == 64) {
            CU_ASSERT_PTR_NOT_NULL(s);
        } else {
            CU_ASSERT_PTR_NULL(s);
            assert_contains(err, "nested deeper than 64");
        }
        msm_schema_free(s);
    }
}

/* Defaults are encoded once, at compile time: all of them together are bounded. */
static void test_default_limits(void)
{
    size_t big = 65536, fields = 100;
    char *text = malloc(big + fields * 64 + 512);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    int n = sprintf(text,
                    "{\"type\":\"record\",\"name\":\"E\",\"fields\":[{\"name\":\"d0\","
                    "\"type\":{\"type\":\"record\",\"name\":\"D\",\"fields\":[{\"name\":"
                    "\"z\",\"type\":{\"type\":\"fixed\",\"name\":\"Z\",\"size\":%zu},"
                    "\"default\":\"",
                    big);
    memset(text + n, 'a', big);
    n += (int)big;
    n += sprintf(text + n, "\"}]},\"default\":{}}");
    for (size_t i = 1; i < fields; i++)
        n += sprintf(text + n, ",{\"name\":\"d%zu\",\"type\":\"D\",\"default\":{}}", i);
    sprintf(text + n, "]}");
    char err[256] = "";
    msm_schema_t *s =
        msm_schema_compile(MSM_SCHEMA_AVRO, text, strlen(text), NULL, err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    assert_contains(err, "invalid default: encodes to more than");
    msm_schema_free(s);
    free(text);
}

static void test_canonical(void)
{
    msm_schema_t *a = compile_ok("{'type':'record','name':'R','namespace':'x','fields':["
                                 "{'name':'a','type':'int','default':1},"
                                 "{'name':'b','type':['null','string'],'default':null}]}");
    msm_schema_t *b = compile_ok("{ 'fields' : [ {'type':'int', 'name':'a','default':1},\n"
                                 "  {'default':null, 'name':'b','type':['null','string']} ],\n"
                                 "  'namespace':'x', 'name':'R', 'type':'record' }");
    msm_schema_t *c = compile_ok("{'type':'record','name':'R','namespace':'x','fields':["
                                 "{'name':'a','type':'int','default':2},"
                                 "{'name':'b','type':['null','string'],'default':null}]}");
    msm_schema_t *d = compile_ok("{'type':'record','name':'R','namespace':'x','fields':["
                                 "{'name':'b','type':['null','string'],'default':null},"
                                 "{'name':'a','type':'int','default':1}]}");
    CU_ASSERT_STRING_EQUAL(msm_schema_canonical(a), msm_schema_canonical(b));
    CU_ASSERT_STRING_NOT_EQUAL(msm_schema_canonical(a), msm_schema_canonical(c)); /* default */
    CU_ASSERT_STRING_NOT_EQUAL(msm_schema_canonical(a), msm_schema_canonical(d)); /* order */
    CU_ASSERT_STRING_EQUAL(
        msm_schema_canonical(a),
        "{\"fields\":[{\"default\":1,\"name\":\"a\",\"type\":\"int\"},{\"default\":null,"
        "\"name\":\"b\",\"type\":[\"null\",\"string\"]}],\"name\":\"R\",\"namespace\":\"x\","
        "\"type\":\"record\"}");
    CU_ASSERT_STRING_EQUAL(msm_schema_content_type(a), "application/avro");
    CU_ASSERT_EQUAL(msm_schema_type(a), MSM_SCHEMA_AVRO);
    CU_ASSERT_PTR_NULL(msm_schema_message_name(a));
    msm_schema_t *e = compile_ok(" \"string\" ");
    CU_ASSERT_STRING_EQUAL(msm_schema_canonical(e), "\"string\"");
    msm_schema_free(a);
    msm_schema_free(b);
    msm_schema_free(c);
    msm_schema_free(d);
    msm_schema_free(e);
}

/* ---- resolution ---- */

static avro_schema_t avro_c_schema(const char *text_q)
{
    char *t = q(text_q);
    avro_schema_t s = NULL;
    int rc = avro_schema_from_json_length(t, strlen(t), &s);
    free(t);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return s;
}

/* Writes bytes of @p schema with avro-c: read into a generic value, written back. */
static uint8_t *
avro_c_rewrite(avro_schema_t schema, const uint8_t *data, size_t len, size_t *out_len)
{
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    avro_value_t v;
    CU_ASSERT_EQUAL_FATAL(avro_generic_value_new(iface, &v), 0);
    avro_reader_t r = avro_reader_memory((const char *)data, (int64_t)len);
    CU_ASSERT_EQUAL(avro_value_read(r, &v), 0);
    size_t size = 0;
    avro_value_sizeof(&v, &size);
    uint8_t *out = malloc(size + 1);
    avro_writer_t w = avro_writer_memory((const char *)out, (int64_t)size + 1);
    CU_ASSERT_EQUAL(avro_value_write(w, &v), 0);
    *out_len = (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    avro_reader_free(r);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    return out;
}

/*
 * avro-c's resolving reader: reads @p data (writer schema) into a value of the reader
 * schema and writes that. NULL when avro-c cannot resolve the pair.
 */
static uint8_t *avro_c_resolve(
    avro_schema_t writer, avro_schema_t reader, const uint8_t *data, size_t len, size_t *out_len)
{
    avro_value_iface_t *resolver = avro_resolved_writer_new(writer, reader);
    if (!resolver)
        return NULL;
    avro_value_iface_t *iface = avro_generic_class_from_schema(reader);
    avro_value_t dest, resolved;
    CU_ASSERT_EQUAL_FATAL(avro_generic_value_new(iface, &dest), 0);
    CU_ASSERT_EQUAL_FATAL(avro_resolved_writer_new_value(resolver, &resolved), 0);
    avro_resolved_writer_set_dest(&resolved, &dest);
    avro_reader_t r = avro_reader_memory((const char *)data, (int64_t)len);
    uint8_t *out = NULL;
    if (avro_value_read(r, &resolved) == 0) {
        size_t size = 0;
        avro_value_sizeof(&dest, &size);
        out = malloc(size + 1);
        avro_writer_t w = avro_writer_memory((const char *)out, (int64_t)size + 1);
        CU_ASSERT_EQUAL(avro_value_write(w, &dest), 0);
        *out_len = (size_t)avro_writer_tell(w);
        avro_writer_free(w);
    }
    avro_reader_free(r);
    avro_value_decref(&resolved);
    avro_value_decref(&dest);
    avro_value_iface_decref(iface);
    avro_value_iface_decref(resolver);
    return out;
}

#define REC(fields) "{'type':'record','name':'R','namespace':'x','fields':[" fields "]}"
#define LIST(extra)                                                                                \
    "{'type':'record','name':'LongList','fields':[{'name':'value','type':'long'}," extra           \
    "{'name':'next','type':['null','LongList']}]}"

static const struct {
    const char *reader;
    const char *writer;
    const char *why;   /* NULL = compatible; else a part of the reason */
    const char *datum; /* compatible pairs: a value written with the writer's schema */
    const char *read;  /* ... and what the reader's schema reads from it */
    bool avro_c;       /* avro-c's resolving reader supports the pair (then it must agree) */
} resolution_cases[] = {
    /* Fields added with a default (avro-c ignores defaults), or removed. */
    {REC("{'name':'a','type':'int'},{'name':'b','type':'string','default':'d'}"),
     REC("{'name':'a','type':'int'}"), NULL, "{'a':1}", "{'a':1,'b':'d'}", false},
    {REC("{'name':'a','type':'int'},{'name':'b','type':'string'}"),
     REC("{'name':'a','type':'int'}"),
     "field 'b': the writer's x.R has no such field and it has no default", NULL, NULL, false},
    {REC("{'name':'a','type':'int'}"),
     REC("{'name':'a','type':'int'},{'name':'b','type':'string'}"), NULL, "{'a':5,'b':'gone'}",
     "{'a':5}", true},
    /* Promotions, and what is not one. */
    {REC("{'name':'a','type':'long'}"), REC("{'name':'a','type':'int'}"), NULL, "{'a':-7}",
     "{'a':-7}", true},
    {REC("{'name':'a','type':'int'}"), REC("{'name':'a','type':'long'}"),
     "field 'a': type changed from long to int", NULL, NULL, false},
    {REC("{'name':'a','type':'double'}"), REC("{'name':'a','type':'float'}"), NULL, "{'a':1.5}",
     "{'a':1.5}", true},
    {REC("{'name':'a','type':'float'}"), REC("{'name':'a','type':'long'}"), NULL, "{'a':3}",
     "{'a':3.0}", true},
    {REC("{'name':'a','type':'bytes'}"), REC("{'name':'a','type':'string'}"), NULL, "{'a':'hi'}",
     "{'a':'hi'}", false},
    {REC("{'name':'x','type':'string'}"), REC("{'name':'x','type':'int'}"),
     "field 'x': type changed from int to string", NULL, NULL, false},
    /* Enums: a symbol removed needs the reader's default. */
    {"{'type':'enum','name':'E','symbols':['A','B']}",
     "{'type':'enum','name':'E','symbols':['A','B','C']}",
     "enum E: the writer's symbol 'C' is missing", NULL, NULL, false},
    {"{'type':'enum','name':'E','symbols':['A','B','Z'],'default':'Z'}",
     "{'type':'enum','name':'E','symbols':['A','B','C']}", NULL, "'B'", "'B'", true},
    {"{'type':'enum','name':'E','symbols':['A','B','C']}",
     "{'type':'enum','name':'E','symbols':['A','B']}", NULL, "'A'", "'A'", true},
    /* Unions. */
    {"['null','int','string']", "['null','int']", NULL, "{'int':4}", "4", true},
    {"['null','int']", "['null','int','string']", "type changed from string to union [null, int]",
     NULL, NULL, false},
    {"['null','long']", "'int'", NULL, "9", "9", true},
    {"'int'", "['null','int']", "the writer's union branch null cannot be read as int", NULL, NULL,
     false},
    {"'long'", "['int','long']", NULL, "{'int':2}", "2", true},
    {"['null','string']", "'int'", "type changed from int to union [null, string]", NULL, NULL,
     false},
    /* Names: unqualified names match; a renamed record needs an alias. */
    {"{'type':'record','name':'New','namespace':'x','aliases':['Old'],'fields':[{'name':'a','type':"
     "'int'}]}",
     "{'type':'record','name':'Old','namespace':'x','fields':[{'name':'a','type':'int'}]}", NULL,
     "{'a':1}", "{'a':1}", false},
    {"{'type':'record','name':'New','namespace':'x','fields':[{'name':'a','type':'int'}]}",
     "{'type':'record','name':'Old','namespace':'x','fields':[{'name':'a','type':'int'}]}",
     "record name changed from x.Old to x.New", NULL, NULL, false},
    {"{'type':'record','name':'R','namespace':'b','fields':[{'name':'a','type':'int'}]}",
     "{'type':'record','name':'R','namespace':'a','fields':[{'name':'a','type':'int'}]}", NULL,
     "{'a':1}", "{'a':1}", true},
    {REC("{'name':'renamed','type':'int','aliases':['a']}"), REC("{'name':'a','type':'int'}"), NULL,
     "{'a':3}", "{'renamed':3}", false},
    /* Fixed, arrays, maps. */
    {"{'type':'fixed','name':'F','size':8}", "{'type':'fixed','name':'F','size':16}",
     "fixed F: size changed from 16 to 8", NULL, NULL, false},
    {REC("{'name':'xs','type':{'type':'array','items':'long'}}"),
     REC("{'name':'xs','type':{'type':'array','items':'int'}}"), NULL, "{'xs':[1,2]}",
     "{'xs':[1,2]}", true},
    {REC("{'name':'xs','type':{'type':'array','items':'int'}}"),
     REC("{'name':'xs','type':{'type':'array','items':'long'}}"),
     "field 'xs[]': type changed from long to int", NULL, NULL, false},
    {REC("{'name':'m','type':{'type':'map','values':'double'}}"),
     REC("{'name':'m','type':{'type':'map','values':'int'}}"), NULL, "{'m':{'k':1}}",
     "{'m':{'k':1.0}}", true},
    /* Recursive types: compared without recursing forever. */
    {LIST(""), LIST(""), NULL, "{'value':1,'next':{'value':2,'next':null}}",
     "{'value':1,'next':{'value':2,'next':null}}", true},
    {LIST("{'name':'tag','type':'string','default':''},"), LIST(""), NULL,
     "{'value':1,'next':null}", "{'value':1,'tag':'','next':null}", false},
    {"{'type':'record','name':'LongList','fields':[{'name':'value','type':'int'},"
     "{'name':'next','type':['null','LongList']}]}",
     LIST(""), "field 'value': type changed from long to int", NULL, NULL, false},
    {"{'type':'record','name':'T','fields':[{'name':'kids','type':{'type':'array','items':'T'}},"
     "{'name':'v','type':'double'}]}",
     "{'type':'record','name':'T','fields':[{'name':'v','type':'float'},"
     "{'name':'kids','type':{'type':'array','items':'T'}}]}",
     NULL, "{'v':1.5,'kids':[{'v':2.5,'kids':[]}]}", "{'kids':[{'kids':[],'v':2.5}],'v':1.5}",
     false}, /* avro-c 1.11's resolver leaks on two different recursive schemas */
};

static void check_with_avro_c(size_t i, const msm_schema_t *reader, const msm_schema_t *writer)
{
    size_t len = 0;
    uint8_t *data = encode_q(writer, resolution_cases[i].datum, &len, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    if (!resolution_cases[i].avro_c) {
        free(data);
        return;
    }
    json_t *expected = json_q(resolution_cases[i].read);
    avro_schema_t w = avro_c_schema(resolution_cases[i].writer);
    avro_schema_t r = avro_c_schema(resolution_cases[i].reader);
    /* "written with avro-c": our bytes read and written back by avro-c, unchanged. */
    size_t wlen = 0;
    uint8_t *written = avro_c_rewrite(w, data, len, &wlen);
    CU_ASSERT_EQUAL(wlen, len);
    CU_ASSERT_EQUAL(memcmp(written, data, len), 0);
    size_t rlen = 0;
    uint8_t *read = avro_c_resolve(w, r, written, wlen, &rlen);
    if (!read)
        fprintf(stderr, "\n  avro-c cannot resolve case %zu: %s\n", i, avro_strerror());
    CU_ASSERT_PTR_NOT_NULL(read);
    if (read) {
        char why[256] = "";
        json_t *got = msm_schema_decode_json(reader, read, rlen, why, sizeof(why));
        CU_ASSERT_PTR_NOT_NULL(got);
        CU_ASSERT_TRUE(got && json_equal(got, expected));
        if (got && !json_equal(got, expected)) {
            char *g = json_dumps(got, JSON_ENCODE_ANY);
            fprintf(stderr, "\n  case %zu: avro-c read %s\n", i, g);
            free(g);
        }
        json_decref(got);
    }
    free(read);
    free(written);
    avro_schema_decref(w);
    avro_schema_decref(r);
    free(data);
    json_decref(expected);
}

static void test_can_read_table(void)
{
    for (size_t i = 0; i < sizeof(resolution_cases) / sizeof(resolution_cases[0]); i++) {
        msm_schema_t *r = compile_ok(resolution_cases[i].reader);
        msm_schema_t *w = compile_ok(resolution_cases[i].writer);
        char why[256] = "?";
        int rc = msm_schema_can_read(r, w, why, sizeof(why));
        if (resolution_cases[i].why) {
            if (rc != MSM_ERR_CONFLICT)
                fprintf(stderr, "\n  case %zu should conflict\n", i);
            CU_ASSERT_EQUAL(rc, MSM_ERR_CONFLICT);
            assert_contains(why, resolution_cases[i].why);
        } else {
            if (rc != MSM_OK)
                fprintf(stderr, "\n  case %zu: %s\n", i, why);
            CU_ASSERT_EQUAL(rc, MSM_OK);
            CU_ASSERT_STRING_EQUAL(why, "");
            check_with_avro_c(i, r, w);
        }
        msm_schema_free(r);
        msm_schema_free(w);
    }
}

static void test_can_read_mutual_recursion(void)
{
    /* A and B refer to each other; the reader widens a field deep inside the cycle. */
    const char *writer = "{'type':'record','name':'A','fields':[{'name':'b','type':['null',"
                         "{'type':'record','name':'B','fields':[{'name':'n','type':'int'},"
                         "{'name':'a','type':['null','A']}]}]}]}";
    const char *reader = "{'type':'record','name':'A','fields':[{'name':'b','type':['null',"
                         "{'type':'record','name':'B','fields':[{'name':'n','type':'long'},"
                         "{'name':'a','type':['null','A']}]}]}]}";
    msm_schema_t *w = compile_ok(writer), *r = compile_ok(reader);
    char why[256];
    CU_ASSERT_EQUAL(msm_schema_can_read(r, w, why, sizeof(why)), MSM_OK);
    CU_ASSERT_EQUAL(msm_schema_can_read(w, r, why, sizeof(why)), MSM_ERR_CONFLICT);
    assert_contains(why, "field 'b.n': type changed from long to int");
    msm_schema_free(w);
    msm_schema_free(r);
}

/* ---- encoding ---- */

static void assert_encodes(const char *schema, const char *value, const char *expected_hex)
{
    msm_schema_t *s = compile_ok(schema);
    size_t len = 0;
    char msg[256] = "";
    uint8_t *out = encode_q(s, value, &len, msg, sizeof(msg));
    if (!out)
        fprintf(stderr, "\n  %s: %s\n", value, msg);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    char *h = hex(out, len);
    if (strcmp(h, expected_hex) != 0)
        fprintf(stderr, "\n  %s -> %s, expected %s\n", value, h, expected_hex);
    CU_ASSERT_STRING_EQUAL(h, expected_hex);
    free(h);
    free(out);
    msm_schema_free(s);
}

static void test_encode_known_bytes(void)
{
    /* The examples of the Avro specification. */
    assert_encodes(REC("{'name':'a','type':'long'},{'name':'b','type':'string'}"),
                   "{'a':27,'b':'foo'}", "36 06 66 6f 6f");
    assert_encodes("{'type':'array','items':'long'}", "[3,27]", "04 06 36 00");
    assert_encodes("['null','string']", "null", "00");
    assert_encodes("['null','string']", "{'string':'a'}", "02 02 61");
    assert_encodes("['null','string']", "'a'", "02 02 61"); /* bare */
    assert_encodes("'int'", "-64", "7f");
    assert_encodes("'int'", "64", "80 01");
    assert_encodes("'long'", "-9223372036854775808", "ff ff ff ff ff ff ff ff ff 01");
    assert_encodes("'float'", "1.5", "00 00 c0 3f");
    assert_encodes("'double'", "-2", "00 00 00 00 00 00 00 c0");
    assert_encodes("'bytes'", "'\\u0000\\u00ff'", "04 00 ff");
    assert_encodes("{'type':'fixed','name':'F','size':2}", "'a\\u0080'", "61 80");
    assert_encodes("{'type':'map','values':'int'}", "{}", "00");
    assert_encodes("{'type':'enum','name':'E','symbols':['A','B']}", "'B'", "02");
    /* A missing field takes its default, encoded at compile time. */
    assert_encodes(
        REC("{'name':'a','type':'int'},{'name':'b','type':['null','int'],'default':null},"
            "{'name':'c','type':{'type':'array','items':'int'},'default':[1]},"
            "{'name':'d','type':{'type':'record','name':'D','fields':["
            "{'name':'z','type':'bytes','default':'\\u00ff'}]},'default':{}}"),
        "{'a':1}", "02 00 02 02 00 02 ff");
}

static const char *const rich_schema =
    "{'type':'record','name':'Rich','namespace':'t','fields':["
    "{'name':'n','type':'null'},{'name':'b','type':'boolean'},{'name':'i','type':'int'},"
    "{'name':'l','type':'long'},{'name':'f','type':'float'},{'name':'d','type':'double'},"
    "{'name':'by','type':'bytes'},{'name':'s','type':'string'},"
    "{'name':'e','type':{'type':'enum','name':'Color','symbols':['RED','GREEN','BLUE']}},"
    "{'name':'fx','type':{'type':'fixed','name':'Four','size':4}},"
    "{'name':'a','type':{'type':'array','items':'int'}},"
    "{'name':'m','type':{'type':'map','values':'long'}},"
    "{'name':'u','type':['null','string']},"
    "{'name':'r','type':{'type':'record','name':'Inner','fields':[{'name':'x','type':'int'}]}}]}";

static const char *const rich_value =
    "{'n':null,'b':true,'i':-3,'l':1234567890123,'f':1.5,'d':-0.25,'by':'\\u0000\\u00ff',"
    "'s':'h\\u00e9llo','e':'BLUE','fx':'abcd','a':[1,-1,300],'m':{'k':7},'u':'x','r':{'x':64}}";

static void set_field(avro_value_t *rec, const char *name, avro_value_t *field)
{
    CU_ASSERT_EQUAL_FATAL(avro_value_get_by_name(rec, name, field, NULL), 0);
}

static void test_encode_matches_avro_c(void)
{
    avro_schema_t schema = avro_c_schema(rich_schema);
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    avro_value_t rec, f, item;
    CU_ASSERT_EQUAL_FATAL(avro_generic_value_new(iface, &rec), 0);
    set_field(&rec, "n", &f);
    avro_value_set_null(&f);
    set_field(&rec, "b", &f);
    avro_value_set_boolean(&f, 1);
    set_field(&rec, "i", &f);
    avro_value_set_int(&f, -3);
    set_field(&rec, "l", &f);
    avro_value_set_long(&f, 1234567890123LL);
    set_field(&rec, "f", &f);
    avro_value_set_float(&f, 1.5f);
    set_field(&rec, "d", &f);
    avro_value_set_double(&f, -0.25);
    set_field(&rec, "by", &f);
    char by[] = {0, (char)0xFF};
    avro_value_set_bytes(&f, by, 2);
    set_field(&rec, "s", &f);
    avro_value_set_string(&f, "h\xc3\xa9llo");
    set_field(&rec, "e", &f);
    avro_value_set_enum(&f, 2);
    set_field(&rec, "fx", &f);
    char fx[] = "abcd";
    avro_value_set_fixed(&f, fx, 4);
    set_field(&rec, "a", &f);
    const int items[] = {1, -1, 300};
    for (size_t i = 0; i < 3; i++) {
        avro_value_append(&f, &item, NULL);
        avro_value_set_int(&item, items[i]);
    }
    set_field(&rec, "m", &f);
    avro_value_add(&f, "k", &item, NULL, NULL);
    avro_value_set_long(&item, 7);
    set_field(&rec, "u", &f);
    avro_value_set_branch(&f, 1, &item);
    avro_value_set_string(&item, "x");
    set_field(&rec, "r", &f);
    avro_value_get_by_name(&f, "x", &item, NULL);
    avro_value_set_int(&item, 64);

    char buf[256];
    avro_writer_t w = avro_writer_memory(buf, sizeof(buf));
    CU_ASSERT_EQUAL_FATAL(avro_value_write(w, &rec), 0);
    size_t expected_len = (size_t)avro_writer_tell(w);

    msm_schema_t *s = compile_ok(rich_schema);
    size_t len = 0;
    uint8_t *out = encode_q(s, rich_value, &len, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(len, expected_len);
    CU_ASSERT_EQUAL(memcmp(out, buf, expected_len), 0);

    /* And back: the same JSON, the same bytes. */
    char why[256] = "";
    json_t *back = msm_schema_decode_json(s, out, len, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    json_t *expected = json_q(rich_value);
    CU_ASSERT_TRUE(json_equal(back, expected));
    json_decref(expected);
    json_decref(back);

    free(out);
    msm_schema_free(s);
    avro_writer_free(w);
    avro_value_decref(&rec);
    avro_value_iface_decref(iface);
    avro_schema_decref(schema);
}

/* ---- round trips ---- */

static void test_round_trips(void)
{
    static const struct {
        const char *schema;
        const char *in;  /* given to encode_json */
        const char *out; /* what decode_json gives back */
    } cases[] = {
        {"['null','string']", "'x'", "'x'"},
        {"['null','string']", "{'string':'x'}", "'x'"},
        {"['int','long']", "{'long':5}", "{'long':5}"}, /* two branches take integers */
        {"['int','long']", "{'int':5}", "{'int':5}"},
        {"['string',{'type':'enum','name':'E','symbols':['A']}]", "{'E':'A'}", "{'E':'A'}"},
        /* A map whose only key names a branch must stay wrapped. */
        {"[{'type':'map','values':'int'},'int']", "{'map':{'int':5}}", "{'map':{'int':5}}"},
        {"[{'type':'map','values':'int'},'int']", "{'a':1,'b':2}", "{'a':1,'b':2}"},
        {"[{'type':'map','values':'int'},'int']", "7", "7"},
        {"['null','double']", "5", "5.0"},
        {"['float','string']", "0.1", "0.10000000149011612"},
        {"'bytes'", "'\\u0000a\\u00ff'", "'\\u0000a\\u00ff'"},
        {"'string'", "'\\u00e9\\u4e2d\\ud83d\\ude00'", "'\\u00e9\\u4e2d\\ud83d\\ude00'"},
        {"{'type':'map','values':['null','long']}", "{'b':1,'a':null}", "{'b':1,'a':null}"},
        {LIST(""), "{'value':1,'next':{'value':2,'next':null}}",
         "{'value':1,'next':{'value':2,'next':null}}"},
        {"{'type':'array','items':'null'}", "[null,null,null]", "[null,null,null]"},
        {"{'type':'record','name':'E','fields':[]}", "{}", "{}"},
        {"'double'", "-0.0", "-0.0"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        msm_schema_t *s = compile_ok(cases[i].schema);
        size_t len = 0;
        char msg[256] = "";
        uint8_t *bin = encode_q(s, cases[i].in, &len, msg, sizeof(msg));
        if (!bin)
            fprintf(stderr, "\n  case %zu: %s\n", i, msg);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
        char why[256] = "";
        CU_ASSERT_EQUAL(msm_schema_check(s, bin, len, why, sizeof(why)), MSM_OK);
        json_t *back = msm_schema_decode_json(s, bin, len, why, sizeof(why));
        CU_ASSERT_PTR_NOT_NULL_FATAL(back);
        json_t *expected = json_q(cases[i].out);
        if (!json_equal(back, expected)) {
            char *g = json_dumps(back, JSON_ENCODE_ANY);
            fprintf(stderr, "\n  case %zu decoded to %s\n", i, g);
            free(g);
        }
        CU_ASSERT_TRUE(json_equal(back, expected));
        /* Byte for byte again. */
        msm_json_err_t e;
        msm_json_err_init(&e);
        uint8_t *again = NULL;
        size_t again_len = 0;
        CU_ASSERT_EQUAL(msm_schema_encode_json(s, back, &e, &again, &again_len), MSM_OK);
        CU_ASSERT_EQUAL(again_len, len);
        CU_ASSERT_TRUE(again && memcmp(again, bin, len) == 0);
        msm_json_err_deinit(&e);
        free(again);
        json_decref(expected);
        json_decref(back);
        free(bin);
        msm_schema_free(s);
    }
}

/* Other writers may split arrays into blocks: valid, decoded, re-encoded in one block. */
static void test_non_canonical_input(void)
{
    char err[256] = "";
    char *text = q("{'type':'array','items':'int'}");
    void *impl = NULL;
    char *canonical = NULL, *resolved = NULL;
    CU_ASSERT_EQUAL_FATAL(msm_schema_avro_ops.compile(text, strlen(text), NULL, &impl, &canonical,
                                                      &resolved, err, sizeof(err)),
                          MSM_OK);
    const av_node_t *root = msm__avro_root(impl);
    static const struct {
        uint8_t data[16];
        size_t len;
        bool canonical;
    } cases[] = {
        {{0x04, 0x02, 0x04, 0x00}, 4, true},        /* [1,2] */
        {{0x02, 0x02, 0x02, 0x04, 0x00}, 5, false}, /* two blocks */
        {{0x03, 0x04, 0x02, 0x04, 0x00}, 5, false}, /* count -2, size 2 */
        {{0x84, 0x00, 0x02, 0x04, 0x00}, 5, false}, /* count in two bytes */
        {{0x04, 0x82, 0x00, 0x04, 0x00}, 5, false}, /* item in two bytes */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = NULL;
        bool canon = !cases[i].canonical;
        char why[256] = "";
        CU_ASSERT_EQUAL(
            msm__avro_decode(root, cases[i].data, cases[i].len, &v, &canon, why, sizeof(why)),
            MSM_OK);
        CU_ASSERT_EQUAL(canon, cases[i].canonical);
        json_t *expected = json_q("[1,2]");
        CU_ASSERT_TRUE(v && json_equal(v, expected));
        json_decref(expected);
        json_decref(v);
    }
    /* A block whose size lies. */
    const uint8_t lying[] = {0x03, 0x02, 0x02, 0x04, 0x00};
    char why[256] = "";
    CU_ASSERT_EQUAL(msm__avro_decode(root, lying, sizeof(lying), NULL, NULL, why, sizeof(why)),
                    MSM_ERR_INVALID);
    assert_contains(why, "block's size does not match");
    msm_schema_avro_ops.free(impl);
    free(canonical);
    free(text);
}

/* ---- malformed binaries ---- */

static void test_malformed(void)
{
    static const struct {
        const char *schema;
        uint8_t data[24];
        size_t len;
        const char *why;
    } cases[] = {
        {"'int'", {0x80}, 1, "truncated"},
        {"'int'", {0}, 0, "truncated"},
        {"'int'", {0x02, 0x00}, 2, "1 bytes left over"},
        {"'int'", {0xFF, 0xFF, 0xFF, 0xFF, 0x1F}, 5, "int out of the int range"},
        {"'int'", {0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 6, "out of the int range"},
        {"'long'",
         {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01},
         11,
         "longer than 10 bytes"},
        {"'long'",
         {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02},
         10,
         "overflows 64 bits"},
        {"'boolean'", {0x02}, 1, "neither 0 nor 1"},
        {"'double'", {0, 0, 0, 0}, 4, "truncated: double needs 8 bytes"},
        {"['null','int']", {0x04}, 1, "union index 2 out of range (2 types)"},
        {"['null','int']", {0x01}, 1, "union index -1 out of range"},
        {"{'type':'enum','name':'E','symbols':['A']}",
         {0x02},
         1,
         "enum index 1 out of range (1 symbols in E)"},
        {"'string'",
         {0xFE, 0xFF, 0xFF, 0xFF, 0x0F, 0x61},
         6,
         "truncated: string length 2147483647 but 1 bytes left"},
        {"'bytes'", {0x01}, 1, "negative bytes length -1"},
        {"'string'", {0x04, 0xC3, 0x28}, 3, "not valid UTF-8"},
        {"'string'", {0x04, 0xC0, 0x80}, 3, "not valid UTF-8"},             /* overlong NUL */
        {"'string'", {0x06, 0xED, 0xA0, 0x80}, 4, "not valid UTF-8"},       /* surrogate */
        {"'string'", {0x08, 0xF4, 0x90, 0x80, 0x80}, 5, "not valid UTF-8"}, /* > U+10FFFF */
        {"{'type':'map','values':'int'}",
         {0x04, 0x02, 0x61, 0x02, 0x02, 0x61, 0x04, 0x00},
         8,
         "[\"a\"]: map key appears twice"},
        {"{'type':'map','values':'int'}",
         {0x02, 0x02, 0xFF, 0x02, 0x00},
         5,
         "map key is not valid UTF-8"},
        {"{'type':'array','items':'int'}",
         {0xD0, 0x0F, 0x02, 0x02},
         4,
         "truncated: 1000 array items but 2 bytes left"},
        {"{'type':'array','items':'null'}",
         {0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x00},
         7,
         "more than 65536 array items that take no bytes"},
        {"{'type':'array','items':'int'}",
         {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01},
         10,
         "block count out of range"},
        {"{'type':'array','items':'int'}", {0x01, 0x00}, 1, "truncated"},
        {REC("{'name':'a','type':'int'},{'name':'s','type':'string'}"),
         {0x02, 0x06, 0x61},
         3,
         "s: truncated: string length 3 but 1 bytes left"},
        {"{'type':'fixed','name':'F','size':3}", {1, 2}, 2, "truncated: F needs 3 bytes"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        msm_schema_t *s = compile_ok(cases[i].schema);
        char why[256] = "";
        CU_ASSERT_EQUAL(msm_schema_check(s, cases[i].data, cases[i].len, why, sizeof(why)),
                        MSM_ERR_INVALID);
        assert_contains(why, cases[i].why);
        char why2[256] = "";
        CU_ASSERT_PTR_NULL(
            msm_schema_decode_json(s, cases[i].data, cases[i].len, why2, sizeof(why2)));
        CU_ASSERT_STRING_EQUAL(why, why2);
        msm_schema_free(s);
    }
}

/* NaN and infinities are valid Avro but have no JSON form. */
static void test_float_without_json_form(void)
{
    msm_schema_t *s = compile_ok("'float'");
    const uint8_t nan[] = {0x00, 0x00, 0xC0, 0x7F};
    char why[256] = "";
    CU_ASSERT_EQUAL(msm_schema_check(s, nan, sizeof(nan), why, sizeof(why)), MSM_OK);
    CU_ASSERT_PTR_NULL(msm_schema_decode_json(s, nan, sizeof(nan), why, sizeof(why)));
    assert_contains(why, "float NaN has no JSON form");
    msm_schema_free(s);
}

static uint8_t *list_of(size_t n, size_t *len)
{
    /* value 0, then the union's LongList branch, n - 1 times; the last next is null */
    uint8_t *p = malloc(2 * n);
    for (size_t i = 0; i < n; i++) {
        p[2 * i] = 0x00;
        p[2 * i + 1] = i + 1 < n ? 0x02 : 0x00;
    }
    *len = 2 * n;
    return p;
}

static void test_nesting_limit(void)
{
    msm_schema_t *s = compile_ok(LIST(""));
    size_t len;
    char why[256] = "";
    uint8_t *ok = list_of(64, &len);
    CU_ASSERT_EQUAL(msm_schema_check(s, ok, len, why, sizeof(why)), MSM_OK);
    json_t *v = msm_schema_decode_json(s, ok, len, why, sizeof(why));
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    /* encode_json has the same limit: 64 levels go, 65 do not. */
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *out = NULL;
    size_t out_len = 0;
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, v, &e, &out, &out_len), MSM_OK);
    CU_ASSERT_TRUE(out_len == len && memcmp(out, ok, len) == 0);
    free(out);
    json_t *deeper = json_pack("{s:i,s:O}", "value", 0, "next", v);
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, deeper, &e, &out, &out_len), MSM_ERR_INVALID);
    assert_contains(msm_json_err_message(&e), "nested deeper than 64");
    msm_json_err_deinit(&e);
    json_decref(deeper);
    json_decref(v);
    free(ok);

    uint8_t *deep = list_of(65, &len);
    CU_ASSERT_EQUAL(msm_schema_check(s, deep, len, why, sizeof(why)), MSM_ERR_INVALID);
    assert_contains(why, "nested deeper than 64");
    assert_contains(why, "next.next.next");
    free(deep);
    msm_schema_free(s);
}

/* ---- error paths ---- */

static void test_encode_error_paths(void)
{
    msm_schema_t *s =
        compile_ok("{'type':'record','name':'Ev','namespace':'com.x','fields':["
                   "{'name':'address','type':{'type':'record','name':'Address','fields':["
                   "{'name':'zip','type':'int'},{'name':'city','type':'string'}]}},"
                   "{'name':'alt','type':['null','Address'],'default':null},"
                   "{'name':'tags','type':{'type':'array','items':'string'},'default':[]},"
                   "{'name':'n','type':['int','long'],'default':0}]}");
    static const struct {
        const char *value;
        const char *errors[4];
    } cases[] = {
        {"{'address':{'zip':'x','city':'c'}}", {"events[3].data.address.zip: must be an int"}},
        {"{'address':{'zip':3000000000,'city':'c'}}",
         {"events[3].data.address.zip: must be an int (from -2147483648 to 2147483647)"}},
        {"{'address':{'city':'c','street':'s'}}",
         {"events[3].data.address.zip: is required",
          "events[3].data.address.street: unknown field"}},
        {"{'address':{'zip':1,'city':'c'},'tags':['a',2,'b',null]}",
         {"events[3].data.tags[1]: must be a string", "events[3].data.tags[3]: must be a string"}},
        {"{'address':{'zip':1,'city':'c'},'alt':{'com.x.Address':{'zip':1.5,'city':'c'}}}",
         {"events[3].data.alt[\"com.x.Address\"].zip: must be an int"}},
        {"{'address':{'zip':1,'city':'c'},'alt':{'zip':2}}",
         {"events[3].data.alt.city: is required"}},
        {"{'address':{'zip':1,'city':'c'},'alt':'x'}",
         {"events[3].data.alt: matches no type of the union [null, com.x.Address]"}},
        {"{'address':{'zip':1,'city':'c'},'n':5}",
         {"events[3].data.n: fits several types of the union [int, long]"}},
        {"[1]", {"events[3].data: must be an object"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_q(cases[i].value);
        msm_json_err_t e;
        msm_json_err_init(&e);
        msm_json_path_push_key(&e, "events");
        msm_json_path_push_index(&e, 3);
        msm_json_path_push_key(&e, "data");
        uint8_t *out = NULL;
        size_t len = 0;
        CU_ASSERT_EQUAL(msm_schema_encode_json(s, v, &e, &out, &len), MSM_ERR_INVALID);
        CU_ASSERT_PTR_NULL(out);
        json_t *details = msm_json_err_take_details(&e);
        size_t n = 0;
        while (n < 4 && cases[i].errors[n])
            n++;
        CU_ASSERT_EQUAL(json_array_size(details), n);
        for (size_t k = 0; k < n && k < json_array_size(details); k++) {
            json_t *d = json_array_get(details, k);
            char line[512];
            snprintf(line, sizeof(line), "%s: %s", json_string_value(json_object_get(d, "field")),
                     json_string_value(json_object_get(d, "description")));
            assert_contains(line, cases[i].errors[k]);
        }
        json_decref(details);
        msm_json_err_deinit(&e);
        json_decref(v);
    }
    /* The same schema, a good value: defaults fill alt, tags and n. */
    size_t len = 0;
    uint8_t *out = encode_q(s, "{'address':{'zip':1,'city':'c'}}", &len, NULL, 0);
    CU_ASSERT_PTR_NOT_NULL(out);
    char *h = hex(out, len);
    CU_ASSERT_STRING_EQUAL(h, "02 02 63 00 00 00 00");
    free(h);
    free(out);
    msm_schema_free(s);
}

static void test_decode_error_path(void)
{
    msm_schema_t *s =
        compile_ok("{'type':'record','name':'Ev','fields':[{'name':'items','type':{'type':'array',"
                   "'items':{'type':'map','values':{'type':'record','name':'P','fields':["
                   "{'name':'zip','type':'int'}]}}}}]}");
    /* items[1]["k"].zip is cut short. */
    const uint8_t data[] = {0x04, 0x00, 0x02, 0x02, 0x6B, 0xFF};
    char why[256] = "";
    CU_ASSERT_EQUAL(msm_schema_check(s, data, sizeof(data), why, sizeof(why)), MSM_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(why, "items[1][\"k\"].zip: truncated: the data ends inside a number "
                                "(at byte 6)");
    msm_schema_free(s);
}

static CU_TestInfo avro_tests[] = {
    {"compile: errors", test_compile_errors},
    {"compile: nesting limit", test_compile_depth_limit},
    {"compile: defaults are bounded", test_default_limits},
    {"canonical text", test_canonical},
    {"can_read: compatible and incompatible pairs", test_can_read_table},
    {"can_read: mutual recursion", test_can_read_mutual_recursion},
    {"encode: known bytes", test_encode_known_bytes},
    {"encode: same bytes as avro-c", test_encode_matches_avro_c},
    {"decode: round trips", test_round_trips},
    {"decode: non-canonical input", test_non_canonical_input},
    {"decode: malformed binaries", test_malformed},
    {"decode: NaN has no JSON form", test_float_without_json_form},
    {"decode: nesting limit", test_nesting_limit},
    {"encode: error paths", test_encode_error_paths},
    {"decode: error path", test_decode_error_path},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"schema_avro", NULL, NULL, NULL, NULL, avro_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
