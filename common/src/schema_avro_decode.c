/* SPDX-License-Identifier: MIT */
/* AVRO: our own decoder of Avro binary, for bytes from the internet. Every length is checked
 * against the bytes left, nesting and item counts are bounded, strings must be UTF-8, and the
 * same walk either only checks or also builds the JSON encoding. */
#include "schema_avro_int.h"

#include "msm/err.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t msm__avro_utf8_next(const uint8_t *p, size_t n, uint32_t *cp)
{
    uint8_t b = p[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t len;
    uint32_t c, min;
    if ((b & 0xE0) == 0xC0) {
        len = 2, c = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
        len = 3, c = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
        len = 4, c = b & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

static bool utf8_valid(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        /* ASCII runs are the common case. */
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t len = msm__avro_utf8_next(p + i, n - i, &cp);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

/* Where in the value the decoder is, for messages. */
typedef struct {
    const char *ps_field;  /* a record field, or NULL */
    const uint8_t *ps_key; /* a map key, or NULL */
    size_t ps_key_len;
    size_t ps_index; /* an array index when both are NULL */
} av_seg_t;

typedef struct {
    const uint8_t *mk_key;
    size_t mk_len;
} av_key_t;

typedef struct {
    const uint8_t *de_start;
    const uint8_t *de_p;
    const uint8_t *de_end;
    bool de_build;     /* decode_json: build the JSON too */
    bool de_canonical; /* exactly what encode_json writes, so far */
    bool de_failed;
    char *de_why;
    size_t de_why_size;
    av_key_t *de_keys; /* the keys of the maps being decoded, to refuse repeats */
    size_t de_n_keys;
    size_t de_cap_keys;
    char *de_text; /* bytes turned into code points */
    size_t de_text_cap;
    size_t de_empty_items;
    av_seg_t de_path[MSM_AVRO_MAX_DEPTH + 1];
    size_t de_depth;
} av_dec_t;

static size_t left(const av_dec_t *d)
{
    return (size_t)(d->de_end - d->de_p);
}

static void push_field(av_dec_t *d, const char *name)
{
    d->de_path[d->de_depth++] = (av_seg_t){.ps_field = name};
}

static void push_index(av_dec_t *d, size_t index)
{
    d->de_path[d->de_depth++] = (av_seg_t){.ps_index = index};
}

static void push_key(av_dec_t *d, const uint8_t *key, size_t len)
{
    d->de_path[d->de_depth++] = (av_seg_t){.ps_key = key, .ps_key_len = len};
}

static void pop(av_dec_t *d)
{
    d->de_depth--;
}

/* events[2].tags["k"], in the style of msm_json_err paths; "$" for the value itself. */
static void format_path(const av_dec_t *d, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < d->de_depth && len + 1 < size; i++) {
        const av_seg_t *s = &d->de_path[i];
        int w;
        if (s->ps_field) {
            w = snprintf(buf + len, size - len, "%s%s", len ? "." : "", s->ps_field);
        } else if (s->ps_key) {
            char key[40];
            size_t k = 0;
            for (size_t j = 0; j < s->ps_key_len && k + 4 < sizeof(key); j++) {
                uint8_t c = s->ps_key[j];
                key[k++] = c >= 0x20 && c < 0x7F && c != '"' && c != '\\' ? (char)c : '?';
            }
            if (s->ps_key_len > k)
                key[k++] = '.', key[k++] = '.', key[k++] = '.';
            key[k] = '\0';
            w = snprintf(buf + len, size - len, "[\"%s\"]", key);
        } else {
            w = snprintf(buf + len, size - len, "[%zu]", s->ps_index);
        }
        if (w < 0)
            break;
        len += (size_t)w;
    }
    if (len >= size)
        len = size - 1;
    if (len == 0)
        snprintf(buf, size, "$");
}

/* Records the problem, with where it is, and returns MSM_ERR_INVALID. */
__attribute__((format(printf, 2, 3))) static int bad(av_dec_t *d, const char *fmt, ...)
{
    if (d->de_failed)
        return MSM_ERR_INVALID;
    d->de_failed = true;
    char path[160], desc[200];
    format_path(d, path, sizeof(path));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    snprintf(d->de_why, d->de_why_size, "%s: %s (at byte %zu)", path, desc,
             (size_t)(d->de_p - d->de_start));
    return MSM_ERR_INVALID;
}

static int nomem(av_dec_t *d)
{
    if (!d->de_failed) {
        d->de_failed = true;
        snprintf(d->de_why, d->de_why_size, "out of memory");
    }
    return MSM_ERR_NOMEM;
}

/* An unsigned varint of at most 10 bytes; *nbytes = how many it took. */
static int read_varint(av_dec_t *d, uint64_t *out, size_t *nbytes)
{
    uint64_t v = 0;
    for (size_t i = 0;; i++) {
        if (d->de_p == d->de_end)
            return bad(d, "truncated: the data ends inside a number");
        uint8_t b = *d->de_p;
        if (i == 9 && b > 1) /* the tenth byte holds bit 63 only */
            return bad(d, b & 0x80 ? "varint longer than 10 bytes" : "varint overflows 64 bits");
        d->de_p++;
        v |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            if (b == 0 && i > 0)
                d->de_canonical = false; /* a longer form than needed */
            *out = v;
            *nbytes = i + 1;
            return MSM_OK;
        }
    }
}

static int read_long(av_dec_t *d, int64_t *out)
{
    uint64_t z;
    size_t n;
    if (read_varint(d, &z, &n) != MSM_OK)
        return MSM_ERR_INVALID;
    *out = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
    return MSM_OK;
}

/* Java's readers refuse ints longer than 5 bytes or out of range: so do we. */
static int read_int(av_dec_t *d, const char *what, int32_t *out)
{
    const uint8_t *at = d->de_p;
    uint64_t z;
    size_t n;
    if (read_varint(d, &z, &n) != MSM_OK)
        return MSM_ERR_INVALID;
    int64_t v = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
    if (n > 5 || v < INT32_MIN || v > INT32_MAX) {
        d->de_p = at;
        return bad(d, "%s out of the int range", what);
    }
    *out = (int32_t)v;
    return MSM_OK;
}

/* The length of bytes, a string or a map key: never more than the bytes left. */
static int read_length(av_dec_t *d, const char *what, size_t *out)
{
    const uint8_t *at = d->de_p;
    int64_t n;
    if (read_long(d, &n) != MSM_OK)
        return MSM_ERR_INVALID;
    if (n < 0) {
        d->de_p = at;
        return bad(d, "negative %s length %" PRId64, what, n);
    }
    size_t remaining = left(d);
    if ((uint64_t)n > remaining) {
        d->de_p = at;
        return bad(d, "truncated: %s length %" PRId64 " but %zu bytes left", what, n, remaining);
    }
    *out = (size_t)n;
    return MSM_OK;
}

static int emit(av_dec_t *d, json_t **out, json_t *v)
{
    if (!v)
        return nomem(d);
    *out = v;
    return MSM_OK;
}

/* Bytes and fixed: each byte becomes the code point of its value (Avro's JSON encoding). */
static int emit_bytes(av_dec_t *d, const uint8_t *p, size_t n, json_t **out)
{
    if (!d->de_build)
        return MSM_OK;
    if (n > (SIZE_MAX - 1) / 2)
        return nomem(d);
    if (d->de_text_cap < 2 * n + 1) {
        char *t = realloc(d->de_text, 2 * n + 1);
        if (!t)
            return nomem(d);
        d->de_text = t;
        d->de_text_cap = 2 * n + 1;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x80) {
            d->de_text[m++] = (char)p[i];
        } else {
            d->de_text[m++] = (char)(0xC0 | (p[i] >> 6));
            d->de_text[m++] = (char)(0x80 | (p[i] & 0x3F));
        }
    }
    return emit(d, out, json_stringn_nocheck(d->de_text, m));
}

static int take(av_dec_t *d, size_t n, const char *what, const uint8_t **p)
{
    if (n > left(d))
        return bad(d, "truncated: %s needs %zu bytes, %zu left", what, n, left(d));
    *p = d->de_p;
    d->de_p += n;
    return MSM_OK;
}

static int dec_value(av_dec_t *d, const av_node_t *n, int depth, json_t **out);

static int dec_float(av_dec_t *d, const av_node_t *n, json_t **out)
{
    size_t size = n->an_kind == AV_FLOAT ? 4 : 8;
    const uint8_t *p = NULL;
    if (take(d, size, n->an_fullname, &p) != MSM_OK)
        return MSM_ERR_INVALID;
    uint64_t bits = 0;
    for (size_t i = 0; i < size; i++)
        bits |= (uint64_t)p[i] << (8 * i);
    double v;
    if (size == 4) {
        uint32_t b32 = (uint32_t)bits;
        float f;
        memcpy(&f, &b32, sizeof(f));
        v = f;
    } else {
        memcpy(&v, &bits, sizeof(v));
    }
    if (!d->de_build)
        return MSM_OK;
    if (!isfinite(v)) {
        d->de_p = p;
        return bad(d, "%s %s has no JSON form", n->an_fullname, isnan(v) ? "NaN" : "Infinity");
    }
    return emit(d, out, json_real(v));
}

static int dec_string(av_dec_t *d, json_t **out)
{
    size_t n;
    const uint8_t *p = NULL;
    if (read_length(d, "string", &n) != MSM_OK || take(d, n, "string", &p) != MSM_OK)
        return MSM_ERR_INVALID;
    if (!utf8_valid(p, n)) {
        d->de_p = p;
        return bad(d, "string is not valid UTF-8");
    }
    return d->de_build ? emit(d, out, json_stringn_nocheck((const char *)p, n)) : MSM_OK;
}

static int dec_record(av_dec_t *d, const av_node_t *n, int depth, json_t **out)
{
    json_t *obj = NULL;
    if (d->de_build && !(obj = json_object()))
        return nomem(d);
    for (size_t i = 0; i < n->an_n_fields; i++) {
        const av_field_t *f = &n->an_fields[i];
        json_t *v = NULL;
        push_field(d, f->af_name);
        int rc = dec_value(d, f->af_type, depth + 1, &v);
        pop(d);
        if (rc == MSM_OK && obj && json_object_set_new_nocheck(obj, f->af_name, v) != 0)
            rc = nomem(d);
        if (rc != MSM_OK) {
            json_decref(obj);
            return rc;
        }
    }
    *out = obj;
    return MSM_OK;
}

/*
 * One block header of an array or map: *count items follow (0 = the end). A negative count
 * is followed by the block's size in bytes, which *block_end then marks (else NULL).
 */
static int read_block(av_dec_t *d, size_t blocks, int64_t *count, const uint8_t **block_end)
{
    const uint8_t *at = d->de_p;
    *block_end = NULL;
    if (read_long(d, count) != MSM_OK)
        return MSM_ERR_INVALID;
    if (*count == 0)
        return MSM_OK;
    if (blocks > 0)
        d->de_canonical = false; /* encode_json writes one block */
    if (*count > 0)
        return MSM_OK;
    d->de_canonical = false;
    if (*count == INT64_MIN) {
        d->de_p = at;
        return bad(d, "block count out of range");
    }
    *count = -*count;
    size_t size;
    if (read_length(d, "block", &size) != MSM_OK)
        return MSM_ERR_INVALID;
    *block_end = d->de_p + size;
    return MSM_OK;
}

static int check_block_end(av_dec_t *d, const uint8_t *block_end)
{
    if (block_end && d->de_p != block_end)
        return bad(d, "the block's size does not match its items");
    return MSM_OK;
}

/* Items that take bytes cannot outnumber the bytes left; the others share one budget. */
static int check_count(av_dec_t *d, int64_t count, bool may_be_empty, const char *what)
{
    if (!may_be_empty) {
        if ((uint64_t)count > left(d))
            return bad(d, "truncated: %" PRId64 " %s but %zu bytes left", count, what, left(d));
        return MSM_OK;
    }
    if ((uint64_t)count > MSM_AVRO_MAX_EMPTY_ITEMS - d->de_empty_items)
        return bad(d, "more than %d array items that take no bytes", MSM_AVRO_MAX_EMPTY_ITEMS);
    d->de_empty_items += (size_t)count;
    return MSM_OK;
}

static int dec_array(av_dec_t *d, const av_node_t *n, int depth, json_t **out)
{
    json_t *arr = NULL;
    if (d->de_build && !(arr = json_array()))
        return nomem(d);
    int rc = MSM_OK;
    size_t index = 0;
    for (size_t blocks = 0; rc == MSM_OK; blocks++) {
        int64_t count;
        const uint8_t *block_end;
        rc = read_block(d, blocks, &count, &block_end);
        if (rc != MSM_OK || count == 0)
            break;
        rc = check_count(d, count, n->an_items->an_may_be_empty, "array items");
        for (int64_t i = 0; i < count && rc == MSM_OK; i++, index++) {
            json_t *v = NULL;
            push_index(d, index);
            rc = dec_value(d, n->an_items, depth + 1, &v);
            pop(d);
            if (rc == MSM_OK && arr && json_array_append_new(arr, v) != 0)
                rc = nomem(d);
        }
        if (rc == MSM_OK)
            rc = check_block_end(d, block_end);
    }
    if (rc != MSM_OK) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return MSM_OK;
}

static int push_map_key(av_dec_t *d, const uint8_t *key, size_t len)
{
    if (d->de_n_keys == d->de_cap_keys) {
        size_t cap = d->de_cap_keys ? d->de_cap_keys * 2 : 32;
        av_key_t *keys = realloc(d->de_keys, cap * sizeof(*keys));
        if (!keys)
            return nomem(d);
        d->de_keys = keys;
        d->de_cap_keys = cap;
    }
    d->de_keys[d->de_n_keys++] = (av_key_t){key, len};
    return MSM_OK;
}

static int cmp_key(const void *a, const void *b)
{
    const av_key_t *x = a, *y = b;
    if (x->mk_len != y->mk_len)
        return x->mk_len < y->mk_len ? -1 : 1;
    return x->mk_len ? memcmp(x->mk_key, y->mk_key, x->mk_len) : 0;
}

/* A JSON object cannot hold a key twice, so neither may the map (that would not round-trip). */
static int check_unique_keys(av_dec_t *d, size_t first)
{
    size_t n = d->de_n_keys - first;
    if (n < 2) {
        d->de_n_keys = first;
        return MSM_OK;
    }
    av_key_t *keys = d->de_keys + first;
    qsort(keys, n, sizeof(*keys), cmp_key);
    for (size_t i = 1; i < n; i++) {
        if (cmp_key(&keys[i - 1], &keys[i]) == 0) {
            d->de_depth++;
            d->de_path[d->de_depth - 1] =
                (av_seg_t){.ps_key = keys[i].mk_key, .ps_key_len = keys[i].mk_len};
            int rc = bad(d, "map key appears twice");
            d->de_depth--;
            return rc;
        }
    }
    d->de_n_keys = first;
    return MSM_OK;
}

static int dec_map_entry(av_dec_t *d, const av_node_t *n, int depth, json_t *obj)
{
    size_t len;
    const uint8_t *key = NULL;
    if (read_length(d, "map key", &len) != MSM_OK || take(d, len, "map key", &key) != MSM_OK)
        return MSM_ERR_INVALID;
    if (!utf8_valid(key, len)) {
        d->de_p = key;
        return bad(d, "map key is not valid UTF-8");
    }
    if (push_map_key(d, key, len) != MSM_OK)
        return MSM_ERR_NOMEM;
    json_t *v = NULL;
    push_key(d, key, len);
    int rc = dec_value(d, n->an_items, depth + 1, &v);
    pop(d);
    if (rc == MSM_OK && obj && json_object_setn_new_nocheck(obj, (const char *)key, len, v) != 0)
        rc = nomem(d);
    return rc;
}

static int dec_map(av_dec_t *d, const av_node_t *n, int depth, json_t **out)
{
    json_t *obj = NULL;
    if (d->de_build && !(obj = json_object()))
        return nomem(d);
    size_t first_key = d->de_n_keys;
    int rc = MSM_OK;
    for (size_t blocks = 0; rc == MSM_OK; blocks++) {
        int64_t count;
        const uint8_t *block_end;
        rc = read_block(d, blocks, &count, &block_end);
        if (rc != MSM_OK || count == 0)
            break;
        rc = check_count(d, count, false, "map entries");
        for (int64_t i = 0; i < count && rc == MSM_OK; i++)
            rc = dec_map_entry(d, n, depth, obj);
        if (rc == MSM_OK)
            rc = check_block_end(d, block_end);
    }
    if (rc == MSM_OK)
        rc = check_unique_keys(d, first_key);
    if (rc != MSM_OK) {
        json_decref(obj);
        return rc;
    }
    *out = obj;
    return MSM_OK;
}

static int dec_union(av_dec_t *d, const av_node_t *n, int depth, json_t **out)
{
    const uint8_t *at = d->de_p;
    int32_t index = 0;
    if (read_int(d, "union index", &index) != MSM_OK)
        return MSM_ERR_INVALID;
    if (index < 0 || (size_t)index >= n->an_n_branches) {
        d->de_p = at;
        return bad(d, "union index %" PRId32 " out of range (%zu types)", index, n->an_n_branches);
    }
    const av_node_t *b = n->an_branches[index];
    json_t *v = NULL;
    int rc = dec_value(d, b, depth, &v);
    if (rc != MSM_OK)
        return rc;
    if (!d->de_build)
        return MSM_OK;
    /* Bare exactly when encode_json, given it bare, picks this branch again. */
    if (msm__avro_union_pick(n, v) == index) {
        *out = v;
        return MSM_OK;
    }
    json_t *wrapped = json_object();
    if (!wrapped) {
        json_decref(v);
        return nomem(d);
    }
    if (json_object_set_new_nocheck(wrapped, msm__avro_branch_name(b), v) != 0) {
        json_decref(wrapped); /* v went with the failed set */
        return nomem(d);
    }
    *out = wrapped;
    return MSM_OK;
}

static int dec_enum(av_dec_t *d, const av_node_t *n, json_t **out)
{
    const uint8_t *at = d->de_p;
    int32_t index = 0;
    if (read_int(d, "enum index", &index) != MSM_OK)
        return MSM_ERR_INVALID;
    if (index < 0 || (size_t)index >= n->an_n_symbols) {
        d->de_p = at;
        return bad(d, "enum index %" PRId32 " out of range (%zu symbols in %s)", index,
                   n->an_n_symbols, n->an_fullname);
    }
    return d->de_build ? emit(d, out, json_string_nocheck(n->an_symbols[index])) : MSM_OK;
}

static int dec_scalar(av_dec_t *d, const av_node_t *n, json_t **out)
{
    const uint8_t *p = NULL;
    switch (n->an_kind) {
    case AV_NULL:
        return d->de_build ? emit(d, out, json_null()) : MSM_OK;
    case AV_BOOLEAN:
        if (take(d, 1, "boolean", &p) != MSM_OK)
            return MSM_ERR_INVALID;
        if (*p > 1) {
            d->de_p = p;
            return bad(d, "boolean byte %u is neither 0 nor 1", *p);
        }
        return d->de_build ? emit(d, out, json_boolean(*p)) : MSM_OK;
    case AV_INT: {
        int32_t v = 0;
        if (read_int(d, "int", &v) != MSM_OK)
            return MSM_ERR_INVALID;
        return d->de_build ? emit(d, out, json_integer(v)) : MSM_OK;
    }
    case AV_LONG: {
        int64_t v;
        if (read_long(d, &v) != MSM_OK)
            return MSM_ERR_INVALID;
        return d->de_build ? emit(d, out, json_integer(v)) : MSM_OK;
    }
    case AV_FLOAT:
    case AV_DOUBLE:
        return dec_float(d, n, out);
    case AV_STRING:
        return dec_string(d, out);
    case AV_BYTES: {
        size_t len;
        if (read_length(d, "bytes", &len) != MSM_OK || take(d, len, "bytes", &p) != MSM_OK)
            return MSM_ERR_INVALID;
        return emit_bytes(d, p, len, out);
    }
    case AV_FIXED:
        if (take(d, n->an_size, n->an_fullname, &p) != MSM_OK)
            return MSM_ERR_INVALID;
        return emit_bytes(d, p, n->an_size, out);
    case AV_ENUM:
        return dec_enum(d, n, out);
    default:
        return bad(d, "internal error: not a scalar type");
    }
}

static int dec_value(av_dec_t *d, const av_node_t *n, int depth, json_t **out)
{
    switch (n->an_kind) {
    case AV_RECORD:
    case AV_ARRAY:
    case AV_MAP:
        if (depth >= MSM_AVRO_MAX_DEPTH)
            return bad(d, "records, arrays and maps nested deeper than %d", MSM_AVRO_MAX_DEPTH);
        if (n->an_kind == AV_RECORD)
            return dec_record(d, n, depth, out);
        return n->an_kind == AV_ARRAY ? dec_array(d, n, depth, out) : dec_map(d, n, depth, out);
    case AV_UNION:
        return dec_union(d, n, depth, out);
    default:
        return dec_scalar(d, n, out);
    }
}

int msm__avro_decode(const av_node_t *root,
                     const uint8_t *data,
                     size_t len,
                     json_t **json,
                     bool *canonical,
                     char *why,
                     size_t why_size)
{
    static const uint8_t nothing[1];
    if (!data)
        data = nothing, len = 0; /* no arithmetic on NULL */
    av_dec_t d = {.de_start = data,
                  .de_p = data,
                  .de_end = data + len,
                  .de_build = json != NULL,
                  .de_canonical = true,
                  .de_why = why,
                  .de_why_size = why_size};
    json_t *v = NULL;
    int rc = dec_value(&d, root, 0, &v);
    if (rc == MSM_OK && d.de_p != d.de_end)
        rc = bad(&d, "%zu bytes left over after the value", left(&d));
    free(d.de_keys);
    free(d.de_text);
    if (rc != MSM_OK) {
        json_decref(v);
        return rc;
    }
    if (json)
        *json = v;
    if (canonical)
        *canonical = d.de_canonical;
    return MSM_OK;
}
