/* SPDX-License-Identifier: MIT */
/* AVRO: a JSON value (Avro's JSON encoding, unions also bare) into Avro binary, written into
 * one growing buffer, every problem recorded at its JSON path. */
#include "schema_avro_int.h"

#include "msm/err.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- which union branch a JSON value is (decode follows the same rule) ---- */

const char *msm__avro_branch_name(const av_node_t *n)
{
    return n->an_fullname;
}

void msm__avro_union_list(const av_node_t *u, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < u->an_n_branches && len + 1 < size; i++) {
        int w = snprintf(buf + len, size - len, "%s%s", i ? ", " : "",
                         msm__avro_branch_name(u->an_branches[i]));
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

long msm__avro_union_branch_by_name(const av_node_t *u, const char *name)
{
    for (size_t i = 0; i < u->an_n_branches; i++) {
        if (strcmp(msm__avro_branch_name(u->an_branches[i]), name) == 0)
            return (long)i;
    }
    return -1;
}

/* Does the JSON type of @p v fit branch type @p n at all (its content is checked later)? */
static bool json_type_fits(const av_node_t *n, const json_t *v)
{
    switch (n->an_kind) {
    case AV_NULL:
        return json_is_null(v);
    case AV_BOOLEAN:
        return json_is_boolean(v);
    case AV_INT:
    case AV_LONG:
        return json_is_integer(v);
    case AV_FLOAT:
    case AV_DOUBLE:
        return json_is_number(v);
    case AV_BYTES:
    case AV_STRING:
    case AV_ENUM:
    case AV_FIXED:
        return json_is_string(v);
    case AV_ARRAY:
        return json_is_array(v);
    case AV_MAP:
    case AV_RECORD:
        return json_is_object(v);
    case AV_UNION:
        return false;
    }
    return false;
}

long msm__avro_union_pick(const av_node_t *u, const json_t *v)
{
    if (json_is_object(v) && json_object_size(v) == 1) {
        void *it = json_object_iter((json_t *)v);
        const char *key = json_object_iter_key(it);
        if (json_object_iter_key_len(it) == strlen(key) &&
            msm__avro_union_branch_by_name(u, key) >= 0)
            return AV_PICK_WRAPPED;
    }
    long pick = AV_PICK_NONE;
    for (size_t i = 0; i < u->an_n_branches; i++) {
        if (!json_type_fits(u->an_branches[i], v))
            continue;
        if (pick != AV_PICK_NONE)
            return AV_PICK_AMBIGUOUS;
        pick = (long)i;
    }
    return pick;
}

/* ---- the encoder ---- */

typedef struct {
    uint8_t *en_buf;
    size_t en_len;
    size_t en_cap;
    bool en_nomem;
    bool en_toolarge;
    size_t en_limit;
    bool en_defaults;     /* encoding a field default (see msm__avro_encode) */
    av_compiler_t *en_cc; /* compile time only */
    msm_json_err_t *en_e;
    size_t en_errors;
} av_enc_t;

static bool stopped(const av_enc_t *en)
{
    return en->en_nomem || en->en_toolarge;
}

static bool reserve(av_enc_t *en, size_t n)
{
    if (stopped(en))
        return false;
    if (n > en->en_limit - en->en_len) {
        en->en_toolarge = true;
        return false;
    }
    if (en->en_len + n <= en->en_cap)
        return true;
    size_t cap = en->en_cap ? en->en_cap : 64;
    while (cap < en->en_len + n)
        cap *= 2;
    if (cap > en->en_limit)
        cap = en->en_limit; /* still >= en_len + n */
    uint8_t *buf = realloc(en->en_buf, cap);
    if (!buf) {
        en->en_nomem = true;
        return false;
    }
    en->en_buf = buf;
    en->en_cap = cap;
    return true;
}

static void put_raw(av_enc_t *en, const void *p, size_t n)
{
    if (n && reserve(en, n)) {
        memcpy(en->en_buf + en->en_len, p, n);
        en->en_len += n;
    }
}

static void put_byte(av_enc_t *en, uint8_t b)
{
    put_raw(en, &b, 1);
}

/* Zig-zag, then 7 bits per byte, least significant first. */
static void put_long(av_enc_t *en, int64_t v)
{
    uint64_t z = v < 0 ? ~((uint64_t)v << 1) : (uint64_t)v << 1;
    uint8_t tmp[10];
    size_t n = 0;
    while (z >= 0x80) {
        tmp[n++] = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    tmp[n++] = (uint8_t)z;
    put_raw(en, tmp, n);
}

static void put_le(av_enc_t *en, uint64_t bits, size_t n)
{
    uint8_t tmp[8];
    for (size_t i = 0; i < n; i++)
        tmp[i] = (uint8_t)(bits >> (8 * i));
    put_raw(en, tmp, n);
}

__attribute__((format(printf, 2, 3))) static void bad(av_enc_t *en, const char *fmt, ...)
{
    char desc[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    msm_json_err_add(en->en_e, NULL, "%s", desc);
    en->en_errors++;
}

static void enc_value(av_enc_t *en, const av_node_t *n, const json_t *v, int depth);

/* Bytes and fixed: a string of code points U+0000..U+00FF, one per byte. -1 = not such. */
static long long byte_string_length(const json_t *v)
{
    const uint8_t *p = (const uint8_t *)json_string_value(v);
    size_t n = json_string_length(v), count = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = msm__avro_utf8_next(p + i, n - i, &cp);
        if (len == 0 || cp > 0xFF)
            return -1;
        i += len;
        count++;
    }
    return (long long)count;
}

static void put_byte_string(av_enc_t *en, const json_t *v)
{
    const uint8_t *p = (const uint8_t *)json_string_value(v);
    size_t n = json_string_length(v);
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t len = msm__avro_utf8_next(p + i, n - i, &cp);
        put_byte(en, (uint8_t)cp);
        i += len;
    }
}

static void enc_bytes(av_enc_t *en, const av_node_t *n, const json_t *v)
{
    long long count = json_is_string(v) ? byte_string_length(v) : -1;
    if (n->an_kind == AV_FIXED && count != (long long)n->an_size) {
        bad(en, "must be a string of %zu characters U+0000 to U+00FF (fixed %s)", n->an_size,
            n->an_fullname);
        return;
    }
    if (count < 0) {
        bad(en, "must be a string of characters U+0000 to U+00FF, one per byte");
        return;
    }
    if (n->an_kind == AV_BYTES)
        put_long(en, count);
    put_byte_string(en, v);
}

static void enc_enum(av_enc_t *en, const av_node_t *n, const json_t *v)
{
    const char *s = json_string_value(v);
    for (size_t i = 0; s && i < n->an_n_symbols; i++) {
        if (strcmp(n->an_symbols[i], s) == 0) {
            put_long(en, (int64_t)i);
            return;
        }
    }
    char list[160];
    size_t len = 0;
    list[0] = '\0';
    for (size_t i = 0; i < n->an_n_symbols && len + 1 < sizeof(list); i++) {
        int w = snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "", n->an_symbols[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    bad(en, "must be one of the symbols of %s: %s", n->an_fullname, list);
}

static void enc_number(av_enc_t *en, const av_node_t *n, const json_t *v)
{
    if (!json_is_number(v)) {
        bad(en, "must be a number");
        return;
    }
    double d = json_number_value(v);
    if (n->an_kind == AV_DOUBLE) {
        uint64_t bits;
        memcpy(&bits, &d, sizeof(bits));
        put_le(en, bits, 8);
        return;
    }
    if (fabs(d) > FLT_MAX) {
        bad(en, "is out of range for a float");
        return;
    }
    float f = (float)d;
    uint32_t bits;
    memcpy(&bits, &f, sizeof(bits));
    put_le(en, bits, 4);
}

static void enc_record(av_enc_t *en, const av_node_t *n, const json_t *v, int depth)
{
    if (!json_is_object(v)) {
        bad(en, "must be an object");
        return;
    }
    size_t matched = 0;
    for (size_t i = 0; i < n->an_n_fields && !stopped(en); i++) {
        av_field_t *f = &n->an_fields[i];
        const json_t *fv = json_object_get(v, f->af_name);
        if (fv) {
            matched++;
            msm_json_path_push_key(en->en_e, f->af_name);
            enc_value(en, f->af_type, fv, depth + 1);
            msm_json_path_pop(en->en_e);
            continue;
        }
        if (en->en_cc) {
            int rc = msm__avro_field_default(en->en_cc, f, depth + 1);
            if (rc == MSM_ERR_NOMEM) {
                en->en_nomem = true;
                return;
            }
            if (rc != MSM_OK) {
                msm_json_err_add(en->en_e, f->af_name, "has an invalid default");
                en->en_errors++;
                continue;
            }
        }
        if (f->af_default) {
            put_raw(en, f->af_default, f->af_default_len);
        } else {
            msm_json_err_add(en->en_e, f->af_name, "is required");
            en->en_errors++;
        }
    }
    /* A default may carry members the record does not have (Java ignores them too). */
    if (en->en_defaults || matched == json_object_size(v))
        return;
    const char *key;
    const json_t *member;
    json_object_foreach((json_t *)v, key, member)
    {
        (void)member;
        if (!msm__avro_field_find(n, key)) {
            msm_json_err_add(en->en_e, key, "unknown field");
            en->en_errors++;
        }
    }
}

static void enc_array(av_enc_t *en, const av_node_t *n, const json_t *v, int depth)
{
    if (!json_is_array(v)) {
        bad(en, "must be an array");
        return;
    }
    size_t count = json_array_size(v);
    if (count > 0)
        put_long(en, (int64_t)count);
    for (size_t i = 0; i < count && !stopped(en); i++) {
        msm_json_path_push_index(en->en_e, i);
        enc_value(en, n->an_items, json_array_get(v, i), depth + 1);
        msm_json_path_pop(en->en_e);
    }
    put_byte(en, 0);
}

static void enc_map(av_enc_t *en, const av_node_t *n, const json_t *v, int depth)
{
    if (!json_is_object(v)) {
        bad(en, "must be an object");
        return;
    }
    size_t count = json_object_size(v);
    if (count > 0)
        put_long(en, (int64_t)count);
    const char *key;
    size_t key_len;
    const json_t *member;
    json_object_keylen_foreach((json_t *)v, key, key_len, member)
    {
        if (stopped(en))
            return;
        put_long(en, (int64_t)key_len);
        put_raw(en, key, key_len);
        msm_json_path_push_key(en->en_e, key);
        enc_value(en, n->an_items, member, depth + 1);
        msm_json_path_pop(en->en_e);
    }
    put_byte(en, 0);
}

static void enc_union(av_enc_t *en, const av_node_t *n, const json_t *v, int depth)
{
    if (en->en_defaults) {
        /* Spec: a union field's default is a value of the union's first type. */
        put_long(en, 0);
        enc_value(en, n->an_branches[0], v, depth);
        return;
    }
    long pick = msm__avro_union_pick(n, v);
    if (pick == AV_PICK_WRAPPED) {
        void *it = json_object_iter((json_t *)v);
        const char *key = json_object_iter_key(it);
        long b = msm__avro_union_branch_by_name(n, key);
        put_long(en, b);
        msm_json_path_push_key(en->en_e, key);
        enc_value(en, n->an_branches[b], json_object_iter_value(it), depth);
        msm_json_path_pop(en->en_e);
        return;
    }
    if (pick >= 0) {
        put_long(en, pick);
        enc_value(en, n->an_branches[pick], v, depth);
        return;
    }
    char list[200];
    msm__avro_union_list(n, list, sizeof(list));
    if (pick == AV_PICK_AMBIGUOUS)
        bad(en, "fits several types of the union [%s]: give it as {\"<type>\": value}", list);
    else
        bad(en, "matches no type of the union [%s]", list);
}

static void enc_value(av_enc_t *en, const av_node_t *n, const json_t *v, int depth)
{
    if (stopped(en))
        return;
    bool nests = n->an_kind == AV_RECORD || n->an_kind == AV_ARRAY || n->an_kind == AV_MAP;
    if (nests && depth >= MSM_AVRO_MAX_DEPTH) {
        bad(en, "records, arrays and maps nested deeper than %d", MSM_AVRO_MAX_DEPTH);
        return;
    }
    switch (n->an_kind) {
    case AV_NULL:
        if (!json_is_null(v))
            bad(en, "must be null");
        return;
    case AV_BOOLEAN:
        if (json_is_boolean(v))
            put_byte(en, json_is_true(v) ? 1 : 0);
        else
            bad(en, "must be a boolean");
        return;
    case AV_INT:
        if (!json_is_integer(v))
            bad(en, "must be an int");
        else if (json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX)
            bad(en, "must be an int (from %d to %d)", INT32_MIN, INT32_MAX);
        else
            put_long(en, json_integer_value(v));
        return;
    case AV_LONG:
        if (json_is_integer(v))
            put_long(en, json_integer_value(v));
        else
            bad(en, "must be a long");
        return;
    case AV_FLOAT:
    case AV_DOUBLE:
        enc_number(en, n, v);
        return;
    case AV_STRING:
        if (json_is_string(v)) {
            put_long(en, (int64_t)json_string_length(v));
            put_raw(en, json_string_value(v), json_string_length(v));
        } else {
            bad(en, "must be a string");
        }
        return;
    case AV_BYTES:
    case AV_FIXED:
        enc_bytes(en, n, v);
        return;
    case AV_ENUM:
        if (json_is_string(v))
            enc_enum(en, n, v);
        else
            bad(en, "must be a string, one of the symbols of %s", n->an_fullname);
        return;
    case AV_RECORD:
        enc_record(en, n, v, depth);
        return;
    case AV_ARRAY:
        enc_array(en, n, v, depth);
        return;
    case AV_MAP:
        enc_map(en, n, v, depth);
        return;
    case AV_UNION:
        enc_union(en, n, v, depth);
        return;
    }
}

int msm__avro_encode(const av_node_t *n,
                     const json_t *value,
                     bool defaults,
                     av_compiler_t *cc,
                     int depth,
                     size_t limit,
                     msm_json_err_t *e,
                     uint8_t **out,
                     size_t *out_len)
{
    av_enc_t en = {.en_limit = limit, .en_defaults = defaults, .en_cc = cc, .en_e = e};
    if (!value) {
        msm_json_err_add(e, NULL, "is required");
        return MSM_ERR_INVALID;
    }
    enc_value(&en, n, value, depth);
    if (en.en_nomem) {
        free(en.en_buf);
        return MSM_ERR_NOMEM;
    }
    if (en.en_toolarge) {
        msm_json_err_add(e, NULL, "encodes to more than %zu bytes", limit);
        en.en_errors++;
    }
    if (en.en_errors) {
        free(en.en_buf);
        return MSM_ERR_INVALID;
    }
    if (!en.en_buf && !(en.en_buf = malloc(1))) /* an empty value (null) is still malloc'd */
        return MSM_ERR_NOMEM;
    *out = en.en_buf;
    *out_len = en.en_len;
    return MSM_OK;
}
