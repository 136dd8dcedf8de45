/* SPDX-License-Identifier: MIT */
/* The PROTOBUF schema type: compiling FileDescriptorSets, validating and decoding wire data
 * (messages packed by protobuf-c included), proto3 JSON encoding and its error paths, and
 * wire compatibility. */
#include "msm_test.h"
#include "msm/base64.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/schema.h"
#include "msm/v1/event.pb-c.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protos/rich_fds.h"

/* Descriptor sets, base64. tests/common/protos/ has the sources and the commands that
 * regenerate them (rich_b64: protos/rich_fds.h); event_b64 is schemas/msm/v1/event.proto:
 *   protoc-c --descriptor_set_out=/dev/stdout --include_imports -Ischemas \
 *       schemas/msm/v1/event.proto | base64 -w0 */

static const char event_b64[] =
    "CtwGChJtc20vdjEvZXZlbnQucHJvdG8SBm1zbS52MSLLBQoFRXZlbnQSDgoCaWQYASABKAlSAmlkEhQKBXRvcGljGAIg"
    "ASgJUgV0b3BpYxIQCgNrZXkYAyABKAlSA2tleRIhCgxvcmRlcmluZ19rZXkYBCABKAlSC29yZGVyaW5nS2V5Ej0KCmF0"
    "dHJpYnV0ZXMYBSADKAsyHS5tc20udjEuRXZlbnQuQXR0cmlidXRlc0VudHJ5UgphdHRyaWJ1dGVzEhgKB3BheWxvYWQY"
    "BiABKAxSB3BheWxvYWQSIQoMY29udGVudF90eXBlGAcgASgJUgtjb250ZW50VHlwZRIbCglzY2hlbWFfaWQYCCABKAVS"
    "CHNjaGVtYUlkEiYKD3B1Ymxpc2hfdGltZV9tcxgJIAEoA1INcHVibGlzaFRpbWVNcxIiCg1kZWxpdmVyX2F0X21zGAog"
    "ASgDUgtkZWxpdmVyQXRNcxIaCghwcmlvcml0eRgLIAEoBVIIcHJpb3JpdHkSJwoPaWRlbXBvdGVuY3lfa2V5GAwgASgJ"
    "Ug5pZGVtcG90ZW5jeUtleRIgCgt0cmFjZXBhcmVudBgNIAEoCVILdHJhY2VwYXJlbnQSHgoKdHJhY2VzdGF0ZRgOIAEo"
    "CVIKdHJhY2VzdGF0ZRIdCgpjZGNfc291cmNlGBQgASgJUgljZGNTb3VyY2USIwoNY2RjX3BhcnRpdGlvbhgVIAEoCVIM"
    "Y2RjUGFydGl0aW9uEiEKDGNkY19zZXF1ZW5jZRgWIAEoA1ILY2RjU2VxdWVuY2USNgoNY2RjX29wZXJhdGlvbhgXIAEo"
    "DjIRLm1zbS52MS5PcGVyYXRpb25SDGNkY09wZXJhdGlvbhIdCgpjZGNfZW50aXR5GBggASgJUgljZGNFbnRpdHkaPQoP"
    "QXR0cmlidXRlc0VudHJ5EhAKA2tleRgBIAEoCVIDa2V5EhQKBXZhbHVlGAIgASgJUgV2YWx1ZToCOAEqaAoJT3BlcmF0"
    "aW9uEhkKFU9QRVJBVElPTl9VTlNQRUNJRklFRBAAEhQKEE9QRVJBVElPTl9DUkVBVEUQARIUChBPUEVSQVRJT05fVVBE"
    "QVRFEAISFAoQT1BFUkFUSU9OX0RFTEVURRADYgZwcm90bzM=";

static const char legacy_b64[] =
    "Cu0BCgxsZWdhY3kucHJvdG8SCm1zbS5sZWdhY3ki0AEKBkxlZ2FjeRIOCgJpZBgBIAIoCVICaWQSFAoFY291bnQYAiAB"
    "KAVSBWNvdW50EisKBGtpbmQYAyABKA4yFy5tc20ubGVnYWN5LkxlZ2FjeS5LaW5kUgRraW5kEhYKBnZhbHVlcxgEIAMo"
    "BVIGdmFsdWVzEicKDXBhY2tlZF92YWx1ZXMYBSADKAVCAhABUgxwYWNrZWRWYWx1ZXMSEgoEbm90ZRgGIAEoCVIEbm90"
    "ZSIeCgRLaW5kEgoKBktJTkRfQRABEgoKBktJTkRfQhAC";

static const char group_b64[] =
    "CngKC2dyb3VwLnByb3RvEgptc20ubGVnYWN5Il0KCVdpdGhHcm91cBI0CgZyZXN1bHQYASABKAoyHC5tc20ubGVnYWN5"
    "LldpdGhHcm91cC5SZXN1bHRSBnJlc3VsdBoaCgZSZXN1bHQSEAoDdXJsGAIgASgJUgN1cmw=";

/* FieldDescriptorProto.Type and .Label, for hand-made descriptor sets. */
enum {
    T_DOUBLE = 1,
    T_FLOAT = 2,
    T_INT64 = 3,
    T_UINT64 = 4,
    T_INT32 = 5,
    T_FIXED64 = 6,
    T_FIXED32 = 7,
    T_BOOL = 8,
    T_STRING = 9,
    T_MESSAGE = 11,
    T_BYTES = 12,
    T_UINT32 = 13,
    T_ENUM = 14,
    T_SFIXED32 = 15,
    T_SFIXED64 = 16,
    T_SINT32 = 17,
    T_SINT64 = 18,
};
enum { L_OPT = 1, L_REQ = 2, L_REP = 3 };

/* ---- helpers ---- */

static msm_schema_t *compile(const char *b64, const char *name)
{
    char err[256] = "";
    msm_schema_t *s =
        msm_schema_compile(MSM_SCHEMA_PROTOBUF, b64, strlen(b64), name, err, sizeof(err));
    if (!s)
        fprintf(stderr, "\n  compile: %s\n", err);
    return s;
}

/* Compiling must fail, the reason containing @p expect. */
static void compile_fails(const char *b64, const char *name, const char *expect)
{
    char err[256] = "";
    msm_schema_t *s =
        msm_schema_compile(MSM_SCHEMA_PROTOBUF, b64, strlen(b64), name, err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    msm_schema_free(s);
    if (!strstr(err, expect)) {
        fprintf(stderr, "\n  expected '%s' in '%s'\n", expect, err);
        CU_FAIL("compile failed for another reason");
    }
}

static char *b64_of(const uint8_t *data, size_t n)
{
    char *s = malloc(msm_base64_encoded_size(n));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    msm_base64_encode(data, n, s);
    return s;
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        fprintf(stderr, "\n  bad test JSON %s: %s\n", text, jerr.text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    return v;
}

static void assert_json(const json_t *got, const char *expect_text)
{
    json_t *expect = parse(expect_text);
    if (!got || !json_equal(got, expect)) {
        char *g = got ? msm_json_dump(got, NULL) : NULL;
        fprintf(stderr, "\n  got      %s\n  expected %s\n", g ? g : "NULL", expect_text);
        free(g);
        CU_FAIL("JSON differs");
    }
    json_decref(expect);
}

static size_t from_hex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = hex; p[0] && p[1] && n < cap;) {
        if (*p == ' ') {
            p++;
            continue;
        }
        unsigned v;
        CU_ASSERT_FATAL(sscanf(p, "%2x", &v) == 1);
        out[n++] = (uint8_t)v;
        p += 2;
    }
    return n;
}

static void assert_bytes(const uint8_t *got, size_t n, const char *hex)
{
    uint8_t expect[256];
    size_t len = from_hex(hex, expect, sizeof(expect));
    if (n != len || (n && memcmp(got, expect, n) != 0)) {
        fprintf(stderr, "\n  got      ");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "%02x", got[i]);
        fprintf(stderr, "\n  expected %s\n", hex);
        CU_FAIL("bytes differ");
    }
}

/* Encodes @p text, which must be valid; the caller frees the bytes. */
static uint8_t *encode(const msm_schema_t *s, const char *text, size_t *len)
{
    json_t *v = parse(text);
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *out = NULL;
    int rc = msm_schema_encode_json(s, v, &e, &out, len);
    if (rc != MSM_OK)
        fprintf(stderr, "\n  encode %s: %s\n", text, msm_json_err_message(&e));
    CU_ASSERT_EQUAL(rc, MSM_OK);
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 0);
    msm_json_err_deinit(&e);
    json_decref(v);
    return rc == MSM_OK ? out : NULL;
}

/* Encoding @p text must fail, its first error at @p field and containing @p desc. */
static void
encode_fails(const msm_schema_t *s, const char *text, const char *field, const char *desc)
{
    json_t *v = parse(text);
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *out = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, v, &e, &out, &len), MSM_ERR_INVALID);
    CU_ASSERT_PTR_NULL(out);
    json_t *details = msm_json_err_take_details(&e);
    json_t *d = json_array_get(details, 0);
    const char *f = json_string_value(json_object_get(d, "field"));
    const char *why = json_string_value(json_object_get(d, "description"));
    if (!f || !why || strcmp(f, field) != 0 || !strstr(why, desc)) {
        fprintf(stderr, "\n  %s\n  expected %s: ...%s...\n  got      %s: %s\n", text, field, desc,
                f ? f : "-", why ? why : "-");
        CU_FAIL("wrong encode error");
    }
    json_decref(details);
    msm_json_err_deinit(&e);
    json_decref(v);
}

/* check and decode_json must both accept @p data; returns the JSON. */
static json_t *decode(const msm_schema_t *s, const uint8_t *data, size_t n)
{
    char why[256] = "";
    int rc = msm_schema_check(s, data, n, why, sizeof(why));
    if (rc != MSM_OK)
        fprintf(stderr, "\n  check: %s\n", why);
    CU_ASSERT_EQUAL(rc, MSM_OK);
    json_t *v = msm_schema_decode_json(s, data, n, why, sizeof(why));
    if (!v)
        fprintf(stderr, "\n  decode: %s\n", why);
    CU_ASSERT_PTR_NOT_NULL(v);
    return v;
}

static json_t *decode_hex(const msm_schema_t *s, const char *hex)
{
    uint8_t data[256];
    size_t n = from_hex(hex, data, sizeof(data));
    return decode(s, data, n);
}

/* encode(decode(x)) must give x back, byte for byte. */
static void assert_stable(const msm_schema_t *s, const uint8_t *x, size_t n)
{
    json_t *v = decode(s, x, n);
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *again = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(msm_schema_encode_json(s, v, &e, &again, &len), MSM_OK);
    CU_ASSERT_EQUAL(len, n);
    CU_ASSERT(len == n && memcmp(again, x, n) == 0);
    free(again);
    msm_json_err_deinit(&e);
    json_decref(v);
}

/* ---- hand-made descriptor sets ---- */

typedef struct {
    uint8_t b[4096];
    size_t n;
} tbuf_t;

static void tb_varint(tbuf_t *t, uint64_t v)
{
    CU_ASSERT_FATAL(t->n + 10 < sizeof(t->b));
    while (v >= 0x80) {
        t->b[t->n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t->b[t->n++] = (uint8_t)v;
}

static void tb_uint(tbuf_t *t, uint32_t field, uint64_t v)
{
    tb_varint(t, (uint64_t)field << 3);
    tb_varint(t, v);
}

static void tb_bytes(tbuf_t *t, uint32_t field, const void *p, size_t n)
{
    tb_varint(t, (uint64_t)field << 3 | 2);
    tb_varint(t, n);
    CU_ASSERT_FATAL(t->n + n < sizeof(t->b));
    memcpy(t->b + t->n, p, n);
    t->n += n;
}

static void tb_str(tbuf_t *t, uint32_t field, const char *s)
{
    tb_bytes(t, field, s, strlen(s));
}

typedef struct {
    const char *name;
    uint32_t number;
    int label;
    int type;
    const char *type_name; /* ".t.N" */
    int oneof;             /* oneof_index + 1; 0 = none */
} tfield_t;

typedef struct {
    const char *name; /* NULL = no message */
    tfield_t fields[6];
    int n_oneofs; /* named o0, o1, ... */
} tmsg_t;

/* A one-file set: package "t", @p syntax, messages @p msgs and enum t.E {E0 = 0, E1 = 1}.
 * Returns its base64 (the caller frees). */
static char *make_set(const char *syntax, const tmsg_t *msgs, size_t n_msgs)
{
    tbuf_t file = {0}, set = {0};
    tb_str(&file, 1, "t.proto");
    tb_str(&file, 2, "t");
    for (size_t i = 0; i < n_msgs; i++) {
        if (!msgs[i].name)
            continue;
        tbuf_t m = {0};
        tb_str(&m, 1, msgs[i].name);
        for (const tfield_t *f = msgs[i].fields; f < msgs[i].fields + 6 && f->name; f++) {
            tbuf_t fb = {0};
            tb_str(&fb, 1, f->name);
            tb_uint(&fb, 3, f->number);
            tb_uint(&fb, 4, (uint64_t)(f->label ? f->label : L_OPT));
            tb_uint(&fb, 5, (uint64_t)f->type);
            if (f->type_name)
                tb_str(&fb, 6, f->type_name);
            if (f->oneof)
                tb_uint(&fb, 9, (uint64_t)(f->oneof - 1));
            tb_bytes(&m, 2, fb.b, fb.n);
        }
        for (int k = 0; k < msgs[i].n_oneofs; k++) {
            tbuf_t o = {0};
            char name[16];
            snprintf(name, sizeof(name), "o%d", k);
            tb_str(&o, 1, name);
            tb_bytes(&m, 8, o.b, o.n);
        }
        tb_bytes(&file, 4, m.b, m.n);
    }
    tbuf_t e = {0}, v0 = {0}, v1 = {0};
    tb_str(&v0, 1, "E0");
    tb_uint(&v0, 2, 0);
    tb_str(&v1, 1, "E1");
    tb_uint(&v1, 2, 1);
    tb_str(&e, 1, "E");
    tb_bytes(&e, 2, v0.b, v0.n);
    tb_bytes(&e, 2, v1.b, v1.n);
    tb_bytes(&file, 5, e.b, e.n);
    if (syntax)
        tb_str(&file, 12, syntax);
    tb_bytes(&set, 1, file.b, file.n);
    return b64_of(set.b, set.n);
}

/* ---- compile ---- */

static void test_compile(void)
{
    msm_schema_t *s = compile(rich_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(msm_schema_type(s), MSM_SCHEMA_PROTOBUF);
    CU_ASSERT_STRING_EQUAL(msm_schema_message_name(s), "msm.test.Rich");
    CU_ASSERT_STRING_EQUAL(msm_schema_content_type(s), "application/x-protobuf");
    const char *canonical = msm_schema_canonical(s);
    CU_ASSERT_EQUAL(strncmp(canonical, "msm.test.Rich\n", 14), 0);
    CU_ASSERT_STRING_EQUAL(canonical + 14, rich_b64);

    /* The same set wrapped at 76 columns (base64's default), named with a leading dot:
     * the same schema. */
    size_t n = strlen(rich_b64);
    char *wrapped = malloc(n + n / 76 + 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(wrapped);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        wrapped[w++] = rich_b64[i];
        if (i % 76 == 75)
            wrapped[w++] = '\n';
    }
    wrapped[w++] = '\n';
    wrapped[w] = '\0';
    msm_schema_t *s2 = compile(wrapped, ".msm.test.Rich");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    CU_ASSERT_STRING_EQUAL(msm_schema_canonical(s2), canonical);
    free(wrapped);
    msm_schema_free(s2);

    /* A nested message and a message of an imported file can be the schema too. */
    s2 = compile(rich_b64, "msm.test.Rich.Nested");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    CU_ASSERT_STRING_EQUAL(msm_schema_message_name(s2), "msm.test.Rich.Nested");
    CU_ASSERT_EQUAL(strncmp(msm_schema_canonical(s2), "msm.test.Rich.Nested\n", 21), 0);
    msm_schema_free(s2);
    s2 = compile(rich_b64, "msm.test.money.Money");
    CU_ASSERT_PTR_NOT_NULL(s2);
    msm_schema_free(s2);

    s2 = compile(event_b64, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    CU_ASSERT_STRING_EQUAL(msm_schema_message_name(s2), "msm.v1.Event");
    msm_schema_free(s2);
    s2 = compile(legacy_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s2);
    CU_ASSERT_STRING_EQUAL(msm_schema_message_name(s2), "msm.legacy.Legacy");
    msm_schema_free(s2);
    msm_schema_free(s);
}

/* rich_b64 without its first file (money.proto): as protoc writes it without
 * --include_imports. */
static char *rich_without_imports(void)
{
    uint8_t raw[4096];
    size_t n = 0;
    CU_ASSERT_FATAL(msm_base64_decode(rich_b64, strlen(rich_b64), raw, &n) == MSM_OK);
    CU_ASSERT_FATAL(raw[0] == 0x0a && raw[1] < 0x80); /* file = 1, one-byte length */
    size_t skip = 2 + raw[1];
    return b64_of(raw + skip, n - skip);
}

static void test_compile_errors(void)
{
    compile_fails("", NULL, "base64");
    compile_fails("not base64!", NULL, "base64");
    compile_fails("////", NULL, "malformed descriptor set"); /* ff ff ff */
    compile_fails("EgA=", NULL, "no file");                  /* field 2, empty */
    compile_fails(group_b64, NULL, "group fields are not supported");
    compile_fails(rich_b64, "msm.test.Nope", "'msm.test.Nope' is not in the descriptor set");
    compile_fails(rich_b64, "msm.test.Color", "is an enum");
    compile_fails(rich_b64, "msm.test.Rich.MStrIntEntry", "is a map entry");
    char *b64 = rich_without_imports();
    compile_fails(b64, NULL, "type '.msm.test.money.Money' is not in the set");
    compile_fails(b64, NULL, "--include_imports");
    free(b64);

    static const struct {
        const char *what;
        const char *syntax;
        tmsg_t msgs[2];
        const char *expect;
    } rows[] = {
        {"duplicate numbers",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}, {"b", 1, L_OPT, T_STRING, NULL, 0}}, 0}},
         "fields 'a' and 'b' share number 1"},
        {"number 0", "proto3", {{"M", {{"a", 0, L_OPT, T_INT32, NULL, 0}}, 0}}, "field number"},
        {"reserved number",
         "proto3",
         {{"M", {{"a", 19000, L_OPT, T_INT32, NULL, 0}}, 0}},
         "field number"},
        {"number too large",
         "proto3",
         {{"M", {{"a", 536870912, L_OPT, T_INT32, NULL, 0}}, 0}},
         "field number"},
        {"unresolved",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_MESSAGE, ".t.Gone", 0}}, 0}},
         "type '.t.Gone' is not in the set"},
        {"relative name",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_MESSAGE, "t.N", 0}}, 0}},
         "not fully qualified"},
        {"enum as message",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_MESSAGE, ".t.E", 0}}, 0}},
         "'.t.E' is not a message"},
        {"message as enum",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_ENUM, ".t.N", 0}}, 0}, {"N", {{0}}, 0}},
         "'.t.N' is not an enum"},
        {"message without type name",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_MESSAGE, NULL, 0}}, 0}},
         "without a type name"},
        {"bad type", "proto3", {{"M", {{"a", 1, L_OPT, 19, NULL, 0}}, 0}}, "invalid type"},
        {"bad label", "proto3", {{"M", {{"a", 1, 4, T_INT32, NULL, 0}}, 0}}, "invalid label"},
        {"json name clash",
         "proto3",
         {{"M",
           {{"foo_bar", 1, L_OPT, T_INT32, NULL, 0}, {"fooBar", 2, L_OPT, T_INT32, NULL, 0}},
           0}},
         "same JSON name 'fooBar'"},
        {"oneof index",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 2}}, 1}},
         "oneof_index out of range"},
        {"bad field name",
         "proto3",
         {{"M", {{"a-b", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         "no valid name"},
        {"twice defined", "proto3", {{"M", {{0}}, 0}, {"M", {{0}}, 0}}, "'t.M' is defined twice"},
        {"editions", "editions", {{"M", {{0}}, 0}}, "syntax 'editions' is not supported"},
        {"no message", "proto3", {{NULL, {{0}}, 0}}, "declares no message"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *set = make_set(rows[i].syntax, rows[i].msgs, 2);
        compile_fails(set, NULL, rows[i].expect);
        free(set);
    }
    /* A hand-made set that is fine compiles, proto2 without a syntax field too. */
    static const tmsg_t ok[] = {{"M", {{"a", 1, L_OPT, T_MESSAGE, ".t.N", 0}}, 0},
                                {"N", {{"e", 1, L_OPT, T_ENUM, ".t.E", 0}}, 0}};
    char *set = make_set(NULL, ok, 2);
    msm_schema_t *s = compile(set, NULL);
    CU_ASSERT_PTR_NOT_NULL(s);
    CU_ASSERT_STRING_EQUAL(msm_schema_message_name(s), "t.M");
    msm_schema_free(s);
    free(set);
}

/* ---- protobuf-c interoperability (schemas/msm/v1/event.proto) ---- */

static void test_protobuf_c_to_json(void)
{
    msm_schema_t *s = compile(event_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    Msm__V1__Event ev = MSM__V1__EVENT__INIT;
    Msm__V1__Event__AttributesEntry a1 = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT;
    Msm__V1__Event__AttributesEntry a2 = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT;
    a1.key = "kind";
    a1.value = "image";
    a2.key = "h\xc3\xa9llo";
    a2.value = "";
    Msm__V1__Event__AttributesEntry *attrs[] = {&a1, &a2};
    uint8_t payload[] = {0x00, 0xff, 0x10, 'x'};
    ev.id = "0190f0e0-0000-7000-8000-000000000001";
    ev.topic = "orders";
    ev.key = "k1";
    ev.ordering_key = "ok";
    ev.n_attributes = 2;
    ev.attributes = attrs;
    ev.payload.data = payload;
    ev.payload.len = sizeof(payload);
    ev.content_type = "application/json";
    ev.schema_id = 42;
    ev.publish_time_ms = 1719000000123;
    ev.deliver_at_ms = -5;
    ev.priority = 9;
    ev.idempotency_key = "idem";
    ev.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    ev.tracestate = "a=b";
    ev.cdc_source = "src";
    ev.cdc_partition = "p0";
    ev.cdc_sequence = INT64_MAX;
    ev.cdc_operation = MSM__V1__OPERATION__OPERATION_UPDATE;
    ev.cdc_entity = "file/1";
    size_t n = msm__v1__event__get_packed_size(&ev);
    uint8_t *bin = malloc(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
    CU_ASSERT_EQUAL(msm__v1__event__pack(&ev, bin), n);

    char why[256];
    CU_ASSERT_EQUAL(msm_schema_check(s, bin, n, why, sizeof(why)), MSM_OK);
    json_t *v = decode(s, bin, n);
    assert_json(v, "{\"id\":\"0190f0e0-0000-7000-8000-000000000001\",\"topic\":\"orders\","
                   "\"key\":\"k1\",\"orderingKey\":\"ok\","
                   "\"attributes\":{\"kind\":\"image\",\"h\xc3\xa9llo\":\"\"},"
                   "\"payload\":\"AP8QeA==\",\"contentType\":\"application/json\","
                   "\"schemaId\":42,\"publishTimeMs\":\"1719000000123\",\"deliverAtMs\":\"-5\","
                   "\"priority\":9,\"idempotencyKey\":\"idem\","
                   "\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\","
                   "\"tracestate\":\"a=b\",\"cdcSource\":\"src\",\"cdcPartition\":\"p0\","
                   "\"cdcSequence\":\"9223372036854775807\","
                   "\"cdcOperation\":\"OPERATION_UPDATE\",\"cdcEntity\":\"file/1\"}");

    /* Our encoding of that JSON is what protobuf-c reads back. */
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *again = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(msm_schema_encode_json(s, v, &e, &again, &len), MSM_OK);
    Msm__V1__Event *back = msm__v1__event__unpack(NULL, len, again);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT_STRING_EQUAL(back->id, ev.id);
    CU_ASSERT_EQUAL(back->n_attributes, 2);
    CU_ASSERT_EQUAL(back->payload.len, sizeof(payload));
    CU_ASSERT_EQUAL(back->deliver_at_ms, -5);
    CU_ASSERT_EQUAL(back->cdc_sequence, INT64_MAX);
    CU_ASSERT_EQUAL(back->cdc_operation, MSM__V1__OPERATION__OPERATION_UPDATE);
    msm__v1__event__free_unpacked(back, NULL);
    assert_stable(s, again, len);
    free(again);
    msm_json_err_deinit(&e);
    json_decref(v);
    free(bin);
    msm_schema_free(s);
}

static void test_json_to_protobuf_c(void)
{
    msm_schema_t *s = compile(event_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    /* Original and JSON names mixed, 64-bit integers as numbers and strings, an enum by
     * number, URL-safe base64 without padding, null for absent. */
    size_t n = 0;
    uint8_t *bin = encode(s,
                          "{\"id\":\"x\",\"ordering_key\":\"ok2\",\"attributes\":{\"a\":\"1\"},"
                          "\"payload\":\"-_8\",\"schema_id\":\"7\",\"publishTimeMs\":1719000000123,"
                          "\"deliver_at_ms\":\"-1\",\"priority\":0,\"cdcOperation\":3,"
                          "\"cdcSequence\":\"9223372036854775807\",\"topic\":null}",
                          &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
    Msm__V1__Event *ev = msm__v1__event__unpack(NULL, n, bin);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(ev->id, "x");
    CU_ASSERT_STRING_EQUAL(ev->topic, "");
    CU_ASSERT_STRING_EQUAL(ev->ordering_key, "ok2");
    CU_ASSERT_EQUAL_FATAL(ev->n_attributes, 1);
    CU_ASSERT_STRING_EQUAL(ev->attributes[0]->key, "a");
    CU_ASSERT_STRING_EQUAL(ev->attributes[0]->value, "1");
    CU_ASSERT_EQUAL_FATAL(ev->payload.len, 2);
    CU_ASSERT_EQUAL(ev->payload.data[0], 0xfb);
    CU_ASSERT_EQUAL(ev->payload.data[1], 0xff);
    CU_ASSERT_EQUAL(ev->schema_id, 7);
    CU_ASSERT_EQUAL(ev->publish_time_ms, 1719000000123);
    CU_ASSERT_EQUAL(ev->deliver_at_ms, -1);
    CU_ASSERT_EQUAL(ev->priority, 0);
    CU_ASSERT_EQUAL(ev->cdc_operation, MSM__V1__OPERATION__OPERATION_DELETE);
    CU_ASSERT_EQUAL(ev->cdc_sequence, INT64_MAX);
    msm__v1__event__free_unpacked(ev, NULL);
    free(bin);
    msm_schema_free(s);
}

/* ---- encode / decode ---- */

static const char rich_full[] =
    "{\"fDouble\":1.5,\"fFloat\":0.1,\"fInt64\":\"-9223372036854775808\","
    "\"fUint64\":\"18446744073709551615\",\"fInt32\":-2147483648,\"fFixed64\":\"1\","
    "\"fFixed32\":4294967295,\"fBool\":true,\"fString\":\"h\xc3\xa9llo \xe2\x9c\x93\","
    "\"fBytes\":\"AQID\",\"fUint32\":4294967295,\"fEnum\":\"BLUE\",\"fSfixed32\":-1,"
    "\"fSfixed64\":\"-2\",\"fSint32\":-3,\"fSint64\":\"-4\","
    "\"nested\":{\"name\":\"n\",\"value\":1,\"children\":[{\"name\":\"c\"}]},"
    "\"rInt32\":[1,-1,0],\"rDouble\":[0.5,\"NaN\",\"Infinity\",\"-Infinity\",-0.0],"
    "\"rString\":[\"a\",\"\"],\"rNested\":[{},{\"value\":2}],\"rEnum\":[\"RED\",7],"
    "\"rSint64\":[\"-1\",\"1\"],\"mStrInt\":{\"a\":\"1\",\"\":\"0\"},"
    "\"mIntMsg\":{\"-1\":{\"name\":\"x\"},\"0\":{}},\"mBoolStr\":{\"true\":\"t\",\"false\":\"\"},"
    "\"mU64Enum\":{\"18446744073709551615\":\"GREEN\",\"0\":\"COLOR_UNSPECIFIED\"},"
    "\"cNested\":{\"name\":\"o\"},\"oInt32\":0,\"child\":{\"child\":{\"fInt32\":5}},"
    "\"price\":{\"currency\":\"EUR\",\"units\":\"12\",\"nanos\":-500},\"otherName\":\"r\"}";

static void test_round_trip(void)
{
    msm_schema_t *s = compile(rich_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    size_t n = 0;
    uint8_t *bin = encode(s, rich_full, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
    json_t *v = decode(s, bin, n);
    assert_json(v, rich_full);
    json_decref(v);
    assert_stable(s, bin, n);
    free(bin);

    /* Other spellings of the same values come back in the canonical form. */
    bin = encode(s,
                 "{\"f_int64\":5,\"fUint64\":7,\"fFloat\":\"1.5\",\"fDouble\":\"2\","
                 "\"fEnum\":2,\"fBytes\":\"-_8\",\"renamed\":\"x\",\"fBool\":false,"
                 "\"fInt32\":\"12\",\"fUint32\":3.0,\"rDouble\":[1],\"f_sint64\":\"1e3\","
                 "\"fSfixed32\":\"-7\",\"rEnum\":[0],\"oInt32\":null,\"mStrInt\":{}}",
                 &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
    v = decode(s, bin, n);
    assert_json(v, "{\"fInt64\":\"5\",\"fUint64\":\"7\",\"fFloat\":1.5,\"fDouble\":2.0,"
                   "\"fEnum\":\"GREEN\",\"fBytes\":\"+/8=\",\"otherName\":\"x\",\"fInt32\":12,"
                   "\"fUint32\":3,\"rDouble\":[1.0],\"fSint64\":\"1000\",\"fSfixed32\":-7,"
                   "\"rEnum\":[\"COLOR_UNSPECIFIED\"]}");
    json_decref(v);
    free(bin);
    msm_schema_free(s);
}

static void test_encode_bytes(void)
{
    msm_schema_t *s = compile(rich_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    static const struct {
        const char *json;
        const char *hex;
    } rows[] = {
        {"{}", ""},
        {"{\"fInt32\":0,\"fString\":\"\",\"fEnum\":\"COLOR_UNSPECIFIED\"}", ""},
        {"{\"fInt32\":-1}", "28ffffffffffffffffff01"},
        {"{\"fSint32\":-1}", "880101"},
        {"{\"fString\":\"a\",\"fInt32\":1}", "2801 4a0161"},
        {"{\"rInt32\":[1,2,300]}", "a20104 0102ac02"},
        {"{\"rInt32\":[]}", ""},
        {"{\"rSint64\":[\"-1\",\"1\"]}", "c80101 c80102"},
        {"{\"rString\":[\"a\",\"\"]}", "b2010161 b20100"},
        {"{\"fFloat\":1}", "150000803f"},
        {"{\"fFloat\":\"NaN\"}", "150000c07f"},
        {"{\"fFloat\":3.4028235e38}", "15ffff7f7f"},
        {"{\"fFloat\":-3.40282356e38}", "15ffff7fff"},
        {"{\"fDouble\":-0.0}", "090000000000000080"},
        {"{\"mBoolStr\":{\"true\":\"t\"}}", "e20105 0801 120174"},
        {"{\"mU64Enum\":{\"0\":\"COLOR_UNSPECIFIED\"}}", "ea0104 0800 1000"},
        {"{\"cNumber\":0}", "f80100"},
        {"{\"oInt32\":0}", "880200"},
        {"{\"nested\":{}}", "9a0100"},
        {"{\"fEnum\":-1}", "70ffffffffffffffffff01"},
        {"{\"fBytes\":\"+/8=\"}", "6202fbff"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        size_t n = 0;
        uint8_t *bin = encode(s, rows[i].json, &n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
        assert_bytes(bin, n, rows[i].hex);
        free(bin);
    }

    /* Lengths of 128 and more take two bytes: the body moves behind them. */
    char text[600], name[201];
    memset(name, 'a', 200);
    name[200] = '\0';
    snprintf(text, sizeof(text), "{\"nested\":{\"name\":\"%s\"},\"fInt32\":1}", name);
    size_t n = 0;
    uint8_t *bin = encode(s, text, &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
    CU_ASSERT_EQUAL(n, 2 + 2 + 2 + 3 + 200);
    assert_bytes(bin, 9, "2801 9a01cb01 0ac801");
    json_t *v = decode(s, bin, n);
    CU_ASSERT_EQUAL(
        strlen(json_string_value(json_object_get(json_object_get(v, "nested"), "name"))), 200);
    json_decref(v);
    free(bin);
    msm_schema_free(s);
}

static void test_encode_errors(void)
{
    msm_schema_t *s = compile(rich_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    static const struct {
        const char *json;
        const char *field;
        const char *desc;
    } rows[] = {
        {"[]", "$", "must be an object"},
        {"{\"fInt32\":\"abc\"}", "fInt32", "must be an integer"},
        {"{\"fInt32\":1.5}", "fInt32", "must be an integer"},
        {"{\"fInt32\":2147483648}", "fInt32", "must be between -2147483648 and 2147483647"},
        {"{\"fInt64\":\"9223372036854775808\"}", "fInt64", "must be between"},
        {"{\"fInt64\":\"99999999999999999999999\"}", "fInt64", "must be between"},
        {"{\"fUint32\":-1}", "fUint32", "must be between 0 and 4294967295"},
        {"{\"fUint64\":\"18446744073709551616\"}", "fUint64", "must be between 0 and"},
        {"{\"fUint64\":\"-1\"}", "fUint64", "must be between 0 and"},
        {"{\"fSint32\":true}", "fSint32", "must be an integer"},
        {"{\"fBool\":1}", "fBool", "must be true or false"},
        {"{\"fString\":5}", "fString", "must be a string"},
        {"{\"fBytes\":\"@@\"}", "fBytes", "must be base64"},
        {"{\"fBytes\":\"A\"}", "fBytes", "must be base64"},
        {"{\"fFloat\":1e39}", "fFloat", "out of range for a float"},
        {"{\"fFloat\":3.4028236e38}", "fFloat", "out of range for a float"},
        {"{\"fDouble\":\"1e999\"}", "fDouble", "out of range"},
        {"{\"fDouble\":\"nan\"}", "fDouble", "must be a number"},
        {"{\"fDouble\":\"0x10\"}", "fDouble", "must be a number"},
        {"{\"fEnum\":\"PURPLE\"}", "fEnum", "unknown value 'PURPLE' of enum msm.test.Color"},
        {"{\"fEnum\":2147483648}", "fEnum", "must be between"},
        {"{\"fEnum\":true}", "fEnum", "must be a name or a number"},
        {"{\"nested\":5}", "nested", "must be an object"},
        {"{\"nested\":{\"value\":\"x\"}}", "nested.value", "must be an integer"},
        {"{\"rNested\":[{},{\"nope\":1}]}", "rNested[1].nope", "unknown field"},
        {"{\"rInt32\":5}", "rInt32", "must be an array"},
        {"{\"rInt32\":[1,null]}", "rInt32[1]", "must not be null"},
        {"{\"rInt32\":[1,\"x\"]}", "rInt32[1]", "must be an integer"},
        {"{\"rString\":[\"a\",1]}", "rString[1]", "must be a string"},
        {"{\"mStrInt\":[]}", "mStrInt", "must be an object"},
        {"{\"mStrInt\":{\"a\":\"x\"}}", "mStrInt.a", "must be an integer"},
        {"{\"mStrInt\":{\"a\":null}}", "mStrInt.a", "must not be null"},
        {"{\"mIntMsg\":{\"01\":{}}}", "mIntMsg.01", "map key must be a int32"},
        {"{\"mIntMsg\":{\"2147483648\":{}}}", "mIntMsg.2147483648", "map key"},
        {"{\"mIntMsg\":{\"-0\":{}}}", "mIntMsg.-0", "map key"},
        {"{\"mIntMsg\":{\"1\":{\"bad\":1}}}", "mIntMsg.1.bad", "unknown field"},
        {"{\"mBoolStr\":{\"yes\":\"x\"}}", "mBoolStr.yes", "map key must be a bool"},
        {"{\"mU64Enum\":{\"-1\":\"RED\"}}", "mU64Enum.-1", "map key must be a uint64"},
        {"{\"cText\":\"a\",\"cNumber\":1}", "cNumber", "oneof 'choice' is already set by 'cText'"},
        {"{\"fInt32\":1,\"f_int32\":2}", "f_int32", "is given twice"},
        {"{\"unknownThing\":1}", "unknownThing", "unknown field"},
        {"{\"price\":{\"nanos\":\"1.5\"}}", "price.nanos", "must be an integer"},
        {"{\"child\":{\"child\":{\"fBool\":null,\"fUint32\":{}}}}", "child.child.fUint32",
         "must be an integer"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        encode_fails(s, rows[i].json, rows[i].field, rows[i].desc);

    /* A member name holding U+0000 is no field, even if it starts like one. */
    json_t *odd = json_object();
    CU_ASSERT_PTR_NOT_NULL_FATAL(odd);
    json_object_setn_new(odd, "fInt32\0x", 8, json_integer(1));
    msm_json_err_t oe;
    msm_json_err_init(&oe);
    uint8_t *odd_out = NULL;
    size_t odd_len = 0;
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, odd, &oe, &odd_out, &odd_len), MSM_ERR_INVALID);
    CU_ASSERT_STRING_EQUAL(msm_json_err_message(&oe), "fInt32: unknown field");
    msm_json_err_deinit(&oe);
    json_decref(odd);

    /* Errors land under the caller's path, and every bad member is reported. */
    json_t *v = parse("{\"fInt32\":\"x\",\"fBool\":2,\"zzz\":1}");
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_json_path_push_key(&e, "events");
    msm_json_path_push_index(&e, 3);
    msm_json_path_push_key(&e, "data");
    uint8_t *out = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(msm_schema_encode_json(s, v, &e, &out, &n), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_json_err_count(&e), 3);
    CU_ASSERT_STRING_EQUAL(msm_json_err_message(&e),
                           "events[3].data.fInt32: must be an integer (a number or a decimal "
                           "string)");
    json_t *details = msm_json_err_take_details(&e);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(details, 2), "field")),
                           "events[3].data.zzz");
    json_decref(details);
    msm_json_err_deinit(&e);
    json_decref(v);
    msm_schema_free(s);
}

/* ---- check: malformed and valid binaries ---- */

static void test_check_malformed(void)
{
    msm_schema_t *s = compile(rich_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    static const struct {
        const char *what;
        const char *hex;
        const char *why;
    } rows[] = {
        {"truncated varint", "2880", "at byte 0: truncated varint"},
        {"LEN past the end", "4a0561", "length past the end"},
        {"wrong wire type", "4801", "field f_string: wire type 0 does not fit type string"},
        {"wrong wire type for an enum", "7500000000", "does not fit type enum"},
        {"group start", "0b", "groups"},
        {"group end", "0c", "groups"},
        {"unknown field as a group", "fb07", "groups"},
        {"wire type 6", "0e", "invalid wire type"},
        {"bad UTF-8", "4a02c328", "field f_string: string is not valid UTF-8"},
        {"overlong UTF-8", "4a02c080", "not valid UTF-8"},
        {"UTF-16 surrogate", "4a03eda080", "not valid UTF-8"},
        {"field number 0", "0000", "field number 0"},
        {"field number 2^29", "808080801000", "field number above"},
        {"varint of 11 bytes", "28ffffffffffffffffffff01", "varint longer than 10 bytes"},
        {"varint above 2^64", "28ffffffffffffffffff02", "varint longer than 10 bytes"},
        {"truncated fixed64", "09010203", "truncated 64-bit value"},
        {"truncated fixed32", "1501", "truncated 32-bit value"},
        {"packed length", "aa0103000000", "packed length 3 is not a multiple of 8"},
        {"packed varint", "a2010180", "truncated varint"},
        {"inside a nested message", "2801 9a01020a05", "at byte 5, field nested: length past"},
        {"nested field type", "9a01021200", "field nested.value: wire type 2"},
        {"map entry key", "d201020801", "field m_str_int.key: wire type 0"},
        {"unknown field past the end", "a20605", "length past the end"},
        {"trailing byte", "280180", "at byte 2: truncated varint"},
        {"bad UTF-8 in a map key", "d201040a02c328", "m_str_int.key: string is not valid"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        uint8_t data[64];
        size_t n = from_hex(rows[i].hex, data, sizeof(data));
        char why[256] = "", why2[256] = "";
        CU_ASSERT_EQUAL(msm_schema_check(s, data, n, why, sizeof(why)), MSM_ERR_INVALID);
        CU_ASSERT_PTR_NULL(msm_schema_decode_json(s, data, n, why2, sizeof(why2)));
        if (!strstr(why, rows[i].why) || strcmp(why, why2) != 0) {
            fprintf(stderr, "\n  %s: expected '%s', got '%s' / '%s'\n", rows[i].what, rows[i].why,
                    why, why2);
            CU_FAIL("wrong check reason");
        }
    }
    msm_schema_free(s);
}

/* @p levels messages nested in each other through Rich.child (34). */
static size_t nest_children(uint8_t *buf, size_t cap, int levels)
{
    size_t start = cap;
    for (int i = 0; i < levels; i++) {
        size_t len = cap - start;
        CU_ASSERT_FATAL(len < 16384 && start >= 4);
        if (len >= 128) {
            buf[--start] = (uint8_t)(len >> 7);
            buf[--start] = (uint8_t)(len | 0x80);
        } else {
            buf[--start] = (uint8_t)len;
        }
        buf[--start] = 0x02;
        buf[--start] = 0x92;
    }
    memmove(buf, buf + start, cap - start);
    return cap - start;
}

static void test_depth(void)
{
    msm_schema_t *s = compile(rich_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    uint8_t buf[1024];
    char why[256] = "";
    size_t n = nest_children(buf, sizeof(buf), 64);
    CU_ASSERT_EQUAL(msm_schema_check(s, buf, n, why, sizeof(why)), MSM_OK);
    assert_stable(s, buf, n);
    n = nest_children(buf, sizeof(buf), 65);
    CU_ASSERT_EQUAL(msm_schema_check(s, buf, n, why, sizeof(why)), MSM_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "messages nested deeper than 64"));
    CU_ASSERT_PTR_NULL(msm_schema_decode_json(s, buf, n, why, sizeof(why)));

    /* The same limit on the JSON side. */
    char text[1024];
    for (int levels = 64; levels <= 65; levels++) {
        size_t len = 0;
        for (int i = 0; i < levels; i++)
            len += (size_t)snprintf(text + len, sizeof(text) - len, "{\"child\":");
        len += (size_t)snprintf(text + len, sizeof(text) - len, "{}");
        for (int i = 0; i < levels; i++)
            text[len++] = '}';
        text[len] = '\0';
        json_t *v = parse(text);
        msm_json_err_t e;
        msm_json_err_init(&e);
        uint8_t *out = NULL;
        int rc = msm_schema_encode_json(s, v, &e, &out, &n);
        CU_ASSERT_EQUAL(rc, levels == 64 ? MSM_OK : MSM_ERR_INVALID);
        if (levels == 65)
            CU_ASSERT_PTR_NOT_NULL(strstr(msm_json_err_message(&e), "nested deeper than 64"));
        free(out);
        msm_json_err_deinit(&e);
        json_decref(v);
    }
    msm_schema_free(s);
}

static void test_decode_semantics(void)
{
    msm_schema_t *s = compile(rich_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    static const struct {
        const char *what;
        const char *hex;
        const char *json;
    } rows[] = {
        {"empty", "", "{}"},
        {"the last scalar wins", "2801 2802", "{\"fInt32\":2}"},
        {"an explicit default is no value", "2801 2800", "{}"},
        {"optional keeps its default", "880200", "{\"oInt32\":0}"},
        {"messages merge", "9a0103 0a016e 9a0102 1002",
         "{\"nested\":{\"name\":\"n\",\"value\":2}}"},
        {"packed and unpacked mix", "a00101 a2010202 03", "{\"rInt32\":[1,2,3]}"},
        {"the last oneof member wins", "f20101 61 f80105", "{\"cNumber\":5}"},
        {"oneof back to a message", "f80105 820200", "{\"cNested\":{}}"},
        {"unknown enum numbers stay numbers", "7007", "{\"fEnum\":7}"},
        {"int32 keeps the low 32 bits", "28ffffffff1f", "{\"fInt32\":-1}"},
        {"bool of any non-zero varint", "4002", "{\"fBool\":true}"},
        {"map entry without value", "d20103 0a0161", "{\"mStrInt\":{\"a\":\"0\"}}"},
        {"map entry without key", "da0102 1200", "{\"mIntMsg\":{\"0\":{}}}"},
        {"the last map entry wins", "d20105 0a0161 1001 d20105 0a0161 1002",
         "{\"mStrInt\":{\"a\":\"2\"}}"},
        {"float 0.1 shows as 0.1", "15cdcccc3d", "{\"fFloat\":0.1}"},
        {"the largest float", "15ffff7f7f", "{\"fFloat\":3.4028235e38}"},
        {"the smallest float", "15 01000000", "{\"fFloat\":1e-45}"},
        {"float NaN and infinities", "15 0000c07f", "{\"fFloat\":\"NaN\"}"},
        {"double infinity", "09 000000000000f0ff", "{\"fDouble\":\"-Infinity\"}"},
        {"unknown fields skipped", "a00601 a1060102030405060708 a50601020304 a206026869 2801",
         "{\"fInt32\":1}"},
        {"empty packed run", "a20100", "{}"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *v = decode_hex(s, rows[i].hex);
        json_t *expect = parse(rows[i].json);
        if (!v || !json_equal(v, expect))
            fprintf(stderr, "\n  %s:", rows[i].what);
        assert_json(v, rows[i].json);
        json_decref(expect);
        json_decref(v);
    }
    msm_schema_free(s);
}

static void test_proto2(void)
{
    msm_schema_t *s = compile(legacy_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    encode_fails(s, "{}", "id", "is required");
    encode_fails(s, "{\"id\":null}", "id", "is required");
    size_t n = 0;
    /* Explicit presence: count 0 is written; repeated numbers unpacked unless [packed]. */
    uint8_t *bin = encode(s,
                          "{\"id\":\"x\",\"count\":0,\"kind\":\"KIND_B\",\"values\":[1,2],"
                          "\"packedValues\":[1,2]}",
                          &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bin);
    assert_bytes(bin, n, "0a0178 1000 1802 2001 2002 2a020102");
    json_t *v = decode(s, bin, n);
    assert_json(v, "{\"id\":\"x\",\"count\":0,\"kind\":\"KIND_B\",\"values\":[1,2],"
                   "\"packedValues\":[1,2]}");
    json_decref(v);
    free(bin);

    char why[256] = "";
    uint8_t missing[] = {0x10, 0x01};
    CU_ASSERT_EQUAL(msm_schema_check(s, missing, sizeof(missing), why, sizeof(why)),
                    MSM_ERR_INVALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "field id: required field is missing"));
    /* proto2 strings are not checked for UTF-8, but JSON cannot carry them. */
    uint8_t latin1[] = {0x0a, 0x01, 'x', 0x32, 0x01, 0xe9};
    CU_ASSERT_EQUAL(msm_schema_check(s, latin1, sizeof(latin1), why, sizeof(why)), MSM_OK);
    CU_ASSERT_PTR_NULL(msm_schema_decode_json(s, latin1, sizeof(latin1), why, sizeof(why)));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "UTF-8"));
    msm_schema_free(s);
}

/* ---- can_read ---- */

static void test_can_read(void)
{
    static const struct {
        const char *what;
        const char *syntax;
        tmsg_t writer[2], reader[2]; /* t.M (the schema) and t.N */
        int rc;
        const char *why;
    } rows[] = {
        {"same",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"field added",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}, {"b", 2, L_OPT, T_STRING, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"field removed",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}, {"b", 2, L_OPT, T_STRING, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"renamed",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"z", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"int32 to int64",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT64, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"uint64 to bool",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_UINT64, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_BOOL, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"int32 to enum",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_ENUM, ".t.E", 0}}, 0}},
         MSM_OK,
         NULL},
        {"sint32 to sint64",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_SINT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_SINT64, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"fixed32 to sfixed32",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_FIXED32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_SFIXED32, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"sfixed64 to fixed64",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_SFIXED64, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_FIXED64, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"string to bytes",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_STRING, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_BYTES, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"int32 to string",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_STRING, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "field 'a' (number 1) of t.M: type changed from int32 to string"},
        {"int32 to sint32",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_SINT32, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "type changed from int32 to sint32"},
        {"fixed32 to fixed64",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_FIXED32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_FIXED64, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "type changed from fixed32 to fixed64"},
        {"float to double",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_FLOAT, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_DOUBLE, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "type changed from float to double"},
        {"message to string",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_MESSAGE, ".t.N", 0}}, 0}, {"N", {{0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_STRING, NULL, 0}}, 0}, {"N", {{0}}, 0}},
         MSM_ERR_CONFLICT,
         "type changed from message to string"},
        {"nested field changed",
         "proto3",
         {{"M", {{"n", 1, L_OPT, T_MESSAGE, ".t.N", 0}}, 0},
          {"N", {{"x", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"n", 1, L_OPT, T_MESSAGE, ".t.N", 0}}, 0},
          {"N", {{"x", 1, L_OPT, T_STRING, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "field 'n.x' (number 1) of t.N: type changed from int32 to string"},
        {"nested field added",
         "proto3",
         {{"M", {{"n", 1, L_REP, T_MESSAGE, ".t.N", 0}}, 0},
          {"N", {{"x", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"n", 1, L_REP, T_MESSAGE, ".t.N", 0}}, 0},
          {"N", {{"x", 1, L_OPT, T_INT64, NULL, 0}, {"y", 2, L_OPT, T_BYTES, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"recursive messages",
         "proto3",
         {{"M", {{"m", 1, L_OPT, T_MESSAGE, ".t.M", 0}, {"n", 2, L_REP, T_MESSAGE, ".t.N", 0}}, 0},
          {"N", {{"m", 1, L_OPT, T_MESSAGE, ".t.M", 0}}, 0}},
         {{"M", {{"m", 1, L_OPT, T_MESSAGE, ".t.M", 0}, {"n", 2, L_REP, T_MESSAGE, ".t.N", 0}}, 0},
          {"N", {{"m", 1, L_OPT, T_MESSAGE, ".t.M", 0}}, 0}},
         MSM_OK,
         NULL},
        {"recursive message changed",
         "proto3",
         {{"M", {{"n", 1, L_OPT, T_MESSAGE, ".t.N", 0}}, 0},
          {"N", {{"m", 1, L_OPT, T_MESSAGE, ".t.M", 0}, {"v", 2, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"n", 1, L_OPT, T_MESSAGE, ".t.N", 0}}, 0},
          {"N", {{"m", 1, L_OPT, T_MESSAGE, ".t.M", 0}, {"v", 2, L_OPT, T_DOUBLE, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "field 'n.v' (number 2) of t.N: type changed from int32 to double"},
        {"single string to repeated",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_STRING, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_REP, T_STRING, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"repeated message to single",
         "proto3",
         {{"M", {{"a", 1, L_REP, T_MESSAGE, ".t.N", 0}}, 0}, {"N", {{0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_MESSAGE, ".t.N", 0}}, 0}, {"N", {{0}}, 0}},
         MSM_OK,
         NULL},
        {"single int32 to repeated",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_REP, T_INT32, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"repeated int32 to single",
         "proto3",
         {{"M", {{"a", 1, L_REP, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "changed from repeated int32 to a single value"},
        {"required added",
         "proto2",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}, {"b", 2, L_REQ, T_STRING, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "field 'b' (number 2) of t.M: required field added"},
        {"optional to required",
         "proto2",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_REQ, T_INT32, NULL, 0}}, 0}},
         MSM_ERR_CONFLICT,
         "became required"},
        {"required to optional",
         "proto2",
         {{"M", {{"a", 1, L_REQ, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
        {"two fields into one oneof",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}, {"b", 2, L_OPT, T_STRING, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 1}, {"b", 2, L_OPT, T_STRING, NULL, 1}}, 1}},
         MSM_ERR_CONFLICT,
         "field 'b' (number 2) of t.M: moved into oneof 'o0' with 'a'"},
        {"one field into a new oneof",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}}, 0}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 1}, {"b", 2, L_OPT, T_STRING, NULL, 1}}, 1}},
         MSM_OK,
         NULL},
        {"same oneof",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 1}, {"b", 2, L_OPT, T_STRING, NULL, 1}}, 1}},
         {{"M", {{"a", 1, L_OPT, T_INT64, NULL, 1}, {"b", 2, L_OPT, T_BYTES, NULL, 1}}, 1}},
         MSM_OK,
         NULL},
        {"oneof dissolved",
         "proto3",
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 1}, {"b", 2, L_OPT, T_STRING, NULL, 1}}, 1}},
         {{"M", {{"a", 1, L_OPT, T_INT32, NULL, 0}, {"b", 2, L_OPT, T_STRING, NULL, 0}}, 0}},
         MSM_OK,
         NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char *wb = make_set(rows[i].syntax, rows[i].writer, 2);
        char *rb = make_set(rows[i].syntax, rows[i].reader, 2);
        msm_schema_t *w = compile(wb, "t.M"), *r = compile(rb, "t.M");
        CU_ASSERT_PTR_NOT_NULL_FATAL(w);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        char why[256] = "";
        int rc = msm_schema_can_read(r, w, why, sizeof(why));
        if (rc != rows[i].rc || (rows[i].why && !strstr(why, rows[i].why))) {
            fprintf(stderr, "\n  %s: got %d '%s', expected %d '%s'\n", rows[i].what, rc, why,
                    rows[i].rc, rows[i].why ? rows[i].why : "");
            CU_FAIL("wrong compatibility");
        }
        msm_schema_free(w);
        msm_schema_free(r);
        free(wb);
        free(rb);
    }

    /* The message itself must stay the same. */
    msm_schema_t *rich = compile(rich_b64, NULL), *event = compile(event_b64, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rich);
    CU_ASSERT_PTR_NOT_NULL_FATAL(event);
    char why[256] = "";
    CU_ASSERT_EQUAL(msm_schema_can_read(rich, rich, why, sizeof(why)), MSM_OK);
    CU_ASSERT_EQUAL(msm_schema_can_read(rich, event, why, sizeof(why)), MSM_ERR_CONFLICT);
    CU_ASSERT_STRING_EQUAL(why, "message name changed from msm.v1.Event to msm.test.Rich");
    msm_schema_free(rich);
    msm_schema_free(event);
}

static CU_TestInfo protobuf_tests[] = {
    {"compile: names, canonical form", test_compile},
    {"compile: errors", test_compile_errors},
    {"protobuf-c packs, we decode", test_protobuf_c_to_json},
    {"we encode, protobuf-c unpacks", test_json_to_protobuf_c},
    {"round trip of every field shape", test_round_trip},
    {"encode: exact bytes", test_encode_bytes},
    {"encode: errors at their JSON path", test_encode_errors},
    {"check: malformed binaries", test_check_malformed},
    {"nesting limit", test_depth},
    {"decode: protobuf merge rules", test_decode_semantics},
    {"proto2: required, presence, packing", test_proto2},
    {"can_read", test_can_read},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"schema_protobuf", NULL, NULL, NULL, NULL, protobuf_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
