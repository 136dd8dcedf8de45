/* SPDX-License-Identifier: MIT */
/* libFuzzer target: untrusted bytes as a PROTOBUF payload of a rich proto3 message
 * (tests/common/protos/rich.proto: every scalar type, enums, nested and recursive messages,
 * packed and unpacked repeated fields, maps, a oneof). msm_schema_check and
 * msm_schema_decode_json must agree; what decodes must survive JSON -> wire -> JSON
 * unchanged (also through JSON text), and re-encoding must be stable byte for byte.
 * Seeds: tests/fuzz/corpus/protobuf_decode/. */
#include "msm/err.h"
#include "msm/json.h"
#include "msm/schema.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/protos/rich_fds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const msm_schema_t *schema(void)
{
    static msm_schema_t *s;
    if (!s) {
        char err[256];
        s = msm_schema_compile(MSM_SCHEMA_PROTOBUF, rich_b64, strlen(rich_b64), NULL, err,
                               sizeof(err));
        if (!s)
            abort();
    }
    return s;
}

/* Whatever decode produced must encode; NULL only when memory ran out. */
static uint8_t *encode(const msm_schema_t *s, const json_t *v, size_t *len)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *out = NULL;
    int rc = msm_schema_encode_json(s, v, &e, &out, len);
    msm_json_err_deinit(&e);
    if (rc != MSM_OK && rc != MSM_ERR_NOMEM)
        abort();
    return rc == MSM_OK ? out : NULL;
}

static bool same_bytes(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na) == 0);
}

/* json_equal(), but object keys compared with their length: map<string, ...> keys may hold
 * U+0000, and json_equal() looks keys up as C strings. */
static bool same_json(const json_t *a, const json_t *b)
{
    if (json_typeof(a) != json_typeof(b))
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
        return json_equal(a, b);
    if (json_object_size(a) != json_object_size(b))
        return false;
    const char *key;
    size_t key_len;
    json_t *value;
    json_object_keylen_foreach((json_t *)a, key, key_len, value)
    {
        const json_t *other = json_object_getn(b, key, key_len);
        if (!other || !same_json(value, other))
            return false;
    }
    return true;
}

/* The JSON as text and back (as a client would see and send it) encodes to the same bytes. */
static void text_round_trip(const msm_schema_t *s, const json_t *v, const uint8_t *bin, size_t n)
{
    size_t len = 0;
    char *text = msm_json_dump(v, &len);
    if (!text)
        return;
    json_t *parsed = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
    /* jansson cannot read back an object key holding U+0000; nothing else may fail. */
    if (!parsed && !strstr(text, "\\u0000"))
        abort();
    size_t n2 = 0;
    uint8_t *again = parsed ? encode(s, parsed, &n2) : NULL;
    if (again && !same_bytes(bin, n, again, n2))
        abort();
    free(again);
    json_decref(parsed);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const msm_schema_t *s = schema();
    char why[256];
    int checked = msm_schema_check(s, data, size, why, sizeof(why));
    json_t *first = msm_schema_decode_json(s, data, size, why, sizeof(why));
    if ((checked == MSM_OK) != (first != NULL) && strcmp(why, "out of memory") != 0)
        abort();
    if (!first)
        return 0;

    size_t n1 = 0, n2 = 0;
    uint8_t *bin = encode(s, first, &n1);
    json_t *second = bin ? msm_schema_decode_json(s, bin, n1, why, sizeof(why)) : NULL;
    if (bin && !second && strcmp(why, "out of memory") != 0)
        abort();
    if (second && !same_json(first, second))
        abort();
    uint8_t *again = second ? encode(s, second, &n2) : NULL;
    if (again && !same_bytes(bin, n1, again, n2))
        abort();
    if (bin)
        text_round_trip(s, first, bin, n1);
    free(again);
    json_decref(second);
    free(bin);
    json_decref(first);
    return 0;
}
