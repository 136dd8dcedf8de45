/* SPDX-License-Identifier: MIT */
/* Fuzz target: Avro binary from the internet against fixed schemas (the first byte picks
 * one), and schema texts from the registry (first byte 0xFF). Crashes, sanitizer reports and
 * broken invariants (abort) are findings:
 *   - check() and decode_json() agree (decode may only add "no JSON form" for NaN/Infinity);
 *   - what decodes re-encodes; canonical input re-encodes to itself byte for byte, other
 *     valid input to a canonical form that decodes to the same JSON;
 *   - the JSON survives being printed and parsed again;
 *   - a compiled schema can read its own data, and its canonical text compiles to itself.
 * Needs common/src on the include path (for the canonical-input hook). */
#include "msm/err.h"
#include "msm/json.h"
#include "msm/schema.h"
#include "schema_avro_int.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fixed_schemas[] = {
    /* 0: a record with every type */
    "{\"type\":\"record\",\"name\":\"Rich\",\"namespace\":\"f\",\"fields\":["
    "{\"name\":\"n\",\"type\":\"null\"},{\"name\":\"b\",\"type\":\"boolean\"},"
    "{\"name\":\"i\",\"type\":\"int\"},{\"name\":\"l\",\"type\":\"long\"},"
    "{\"name\":\"f\",\"type\":\"float\"},{\"name\":\"d\",\"type\":\"double\"},"
    "{\"name\":\"by\",\"type\":\"bytes\"},{\"name\":\"s\",\"type\":\"string\"},"
    "{\"name\":\"e\",\"type\":{\"type\":\"enum\",\"name\":\"Color\","
    "\"symbols\":[\"RED\",\"GREEN\",\"BLUE\"],\"default\":\"RED\"}},"
    "{\"name\":\"fx\",\"type\":{\"type\":\"fixed\",\"name\":\"Four\",\"size\":4}},"
    "{\"name\":\"a\",\"type\":{\"type\":\"array\",\"items\":\"long\"}},"
    "{\"name\":\"m\",\"type\":{\"type\":\"map\",\"values\":\"string\"}},"
    "{\"name\":\"u\",\"type\":[\"null\",\"string\",\"Color\"],\"default\":null},"
    "{\"name\":\"r\",\"type\":{\"type\":\"record\",\"name\":\"Inner\",\"fields\":["
    "{\"name\":\"x\",\"type\":\"int\",\"default\":0},"
    "{\"name\":\"ts\",\"type\":{\"type\":\"long\",\"logicalType\":\"timestamp-millis\"}}]}},"
    "{\"name\":\"empties\",\"type\":{\"type\":\"array\",\"items\":{\"type\":\"record\","
    "\"name\":\"Empty\",\"fields\":[]}}}]}",
    /* 1: a recursive list */
    "{\"type\":\"record\",\"name\":\"LongList\",\"fields\":[{\"name\":\"value\",\"type\":\"long\"},"
    "{\"name\":\"tags\",\"type\":{\"type\":\"map\",\"values\":\"LongList\"}},"
    "{\"name\":\"next\",\"type\":[\"null\",\"LongList\"]}]}",
    /* 2: unions whose branches share JSON types (bare and wrapped forms) */
    "{\"type\":\"array\",\"items\":[\"null\",\"boolean\",\"int\",\"double\",\"string\","
    "{\"type\":\"array\",\"items\":[\"null\",\"long\",\"bytes\"]},"
    "{\"type\":\"map\",\"values\":[\"null\",\"string\",\"long\"]},"
    "{\"type\":\"record\",\"name\":\"P\",\"fields\":[{\"name\":\"int\",\"type\":\"int\"}]},"
    "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\"]},"
    "{\"type\":\"fixed\",\"name\":\"F\",\"size\":2}]}",
};

#define N_FIXED (sizeof(fixed_schemas) / sizeof(fixed_schemas[0]))

typedef struct {
    msm_schema_t *fs_schema; /* through the public API */
    void *fs_impl;           /* the same schema, for the canonical-input hook */
} fuzz_schema_t;

static fuzz_schema_t compiled[N_FIXED];

static void compile_fixed(void)
{
    for (size_t i = 0; i < N_FIXED; i++) {
        char err[256];
        const char *t = fixed_schemas[i];
        compiled[i].fs_schema =
            msm_schema_compile(MSM_SCHEMA_AVRO, t, strlen(t), NULL, err, sizeof(err));
        char *canonical = NULL, *resolved = NULL;
        if (!compiled[i].fs_schema ||
            msm_schema_avro_ops.compile(t, strlen(t), NULL, &compiled[i].fs_impl, &canonical,
                                        &resolved, err, sizeof(err)) != MSM_OK) {
            fprintf(stderr, "fixed schema %zu: %s\n", i, err);
            abort();
        }
        free(canonical);
    }
}

/* json_equal(), except that object keys may hold NUL (Avro map keys may): jansson's own
 * looks keys up by C string. Depth is bounded by the decoder's nesting limit. */
static bool same_json(const json_t *a, const json_t *b)
{
    if (!a || !b || json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!same_json(json_array_get(a, i), json_array_get(b, i)))
                return false;
        }
        return true;
    }
    if (!json_is_object(a))
        return json_equal((json_t *)a, (json_t *)b);
    if (json_object_size(a) != json_object_size(b))
        return false;
    const char *key;
    size_t key_len;
    json_t *value;
    json_object_keylen_foreach((json_t *)a, key, key_len, value)
    {
        if (!same_json(value, json_object_getn(b, key, key_len)))
            return false;
    }
    return true;
}

static uint8_t *encode(const msm_schema_t *s, const json_t *v, size_t *len)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *out = NULL;
    if (msm_schema_encode_json(s, v, &e, &out, len) != MSM_OK) {
        fprintf(stderr, "decoded value does not encode: %s\n", msm_json_err_message(&e));
        abort();
    }
    msm_json_err_deinit(&e);
    return out;
}

/* Every invariant about one (schema, bytes) pair. */
static void
decode_round_trip(const msm_schema_t *s, const av_node_t *root, const uint8_t *d, size_t n)
{
    char why_check[256] = "", why_decode[256] = "";
    int checked = msm_schema_check(s, d, n, why_check, sizeof(why_check));
    json_t *v = msm_schema_decode_json(s, d, n, why_decode, sizeof(why_decode));
    if (!v) {
        if (checked == MSM_OK && !strstr(why_decode, "has no JSON form"))
            abort(); /* check accepted what decode refused */
        /* Both refused: for the same reason, unless decode met a NaN first. */
        if (checked != MSM_OK && strcmp(why_check, why_decode) != 0 &&
            !strstr(why_decode, "has no JSON form"))
            abort();
        return;
    }
    if (checked != MSM_OK)
        abort();
    bool canonical = false;
    char why[256];
    if (msm__avro_decode(root, d, n, NULL, &canonical, why, sizeof(why)) != MSM_OK)
        abort();

    size_t len = 0;
    uint8_t *again = encode(s, v, &len);
    if (canonical && (len != n || memcmp(again, d, n) != 0))
        abort(); /* encode(decode(x)) != x */
    bool again_canonical = false;
    json_t *v2 = NULL;
    if (msm__avro_decode(root, again, len, &v2, &again_canonical, why, sizeof(why)) != MSM_OK ||
        !again_canonical || !same_json(v, v2))
        abort(); /* the canonical form decodes to the same value */
    json_decref(v2);

    /* The JSON text (as the router would deliver it) parses back to the same bytes. */
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_error_t jerr;
    if (!text)
        abort();
    json_t *parsed = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    /* jansson cannot parse a NUL in an object key (a map key may hold one). */
    if (!parsed && !strstr(text, "\\u0000"))
        abort();
    if (parsed) {
        size_t len3 = 0;
        uint8_t *third = encode(s, parsed, &len3);
        if (len3 != len || memcmp(third, again, len) != 0)
            abort();
        free(third);
        json_decref(parsed);
    }
    free(text);
    free(again);
    json_decref(v);
}

/* A schema text from the registry; bytes after a NUL are data for it. */
static void schema_text(const uint8_t *d, size_t n)
{
    const uint8_t *nul = memchr(d, 0, n);
    size_t text_len = nul ? (size_t)(nul - d) : n;
    char err[256];
    msm_schema_t *s =
        msm_schema_compile(MSM_SCHEMA_AVRO, (const char *)d, text_len, NULL, err, sizeof(err));
    if (!s)
        return;
    /* The canonical text is the same schema. */
    const char *canon = msm_schema_canonical(s);
    msm_schema_t *again =
        msm_schema_compile(MSM_SCHEMA_AVRO, canon, strlen(canon), NULL, err, sizeof(err));
    if (!again || strcmp(msm_schema_canonical(again), canon) != 0)
        abort();
    msm_schema_free(again);
    /* A schema reads its own data (unless it is too big to compare at all). */
    char why[256];
    if (msm_schema_can_read(s, s, why, sizeof(why)) != MSM_OK && !strstr(why, "too"))
        abort();
    for (size_t i = 0; i < N_FIXED; i++) {
        msm_schema_can_read(s, compiled[i].fs_schema, why, sizeof(why));
        msm_schema_can_read(compiled[i].fs_schema, s, why, sizeof(why));
    }
    if (nul) {
        void *impl = NULL;
        char *canonical = NULL, *resolved = NULL;
        if (msm_schema_avro_ops.compile((const char *)d, text_len, NULL, &impl, &canonical,
                                        &resolved, err, sizeof(err)) != MSM_OK)
            abort();
        decode_round_trip(s, msm__avro_root(impl), nul + 1, n - text_len - 1);
        msm_schema_avro_ops.free(impl);
        free(canonical);
    }
    msm_schema_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        compile_fixed();
        ready = true;
    }
    if (size == 0)
        return 0;
    if (data[0] == 0xFF) {
        schema_text(data + 1, size - 1);
        return 0;
    }
    const fuzz_schema_t *fs = &compiled[data[0] % N_FIXED];
    decode_round_trip(fs->fs_schema, msm__avro_root(fs->fs_impl), data + 1, size - 1);
    return 0;
}
