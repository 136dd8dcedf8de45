/* SPDX-License-Identifier: MIT */
/* PROTOBUF wire format in: validation (msm_schema_check) and proto3 JSON out
 * (msm_schema_decode_json), one bounded walk for both. Protobuf's own merge rules apply:
 * the last value of a singular scalar wins, repeated occurrences of a message merge,
 * repeated fields append (packed or not), the last member of a oneof wins. */
#include "schema_protobuf_int.h"

#include "msm/base64.h"
#include "msm/err.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *why;
    size_t why_size;
    const uint8_t *base;                      /* the whole input, for byte offsets */
    const pb_field_t *path[PB_MAX_DEPTH + 1]; /* the fields descended into */
    int depth;
    bool build; /* decode_json: build JSON, and every string must be UTF-8 */
} pb_dec_t;

/* "field a.b.c" of the path plus @p f, cut to fit. */
static void path_text(const pb_dec_t *d, const pb_field_t *f, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i <= d->depth; i++) {
        const pb_field_t *p = i < d->depth ? d->path[i] : f;
        if (!p || len + 1 >= n)
            continue;
        int w = snprintf(buf + len, n - len, "%s%s", len ? "." : "", p->name);
        len = w < 0 ? len : (size_t)w >= n - len ? n - 1 : len + (size_t)w;
    }
}

static int dec_fail(pb_dec_t *d, const uint8_t *at, const pb_field_t *f, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int dec_fail(pb_dec_t *d, const uint8_t *at, const pb_field_t *f, const char *fmt, ...)
{
    char what[160], path[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    path_text(d, f, path, sizeof(path));
    size_t offset = (size_t)(at - d->base);
    if (path[0])
        snprintf(d->why, d->why_size, "at byte %zu, field %s: %s", offset, path, what);
    else
        snprintf(d->why, d->why_size, "at byte %zu: %s", offset, what);
    return MSM_ERR_INVALID;
}

static int dec_nomem(pb_dec_t *d)
{
    snprintf(d->why, d->why_size, "out of memory");
    return MSM_ERR_NOMEM;
}

/* ---- scalars ---- */

static json_t *int64_json(int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRId64, v);
    return json_string(buf);
}

static json_t *uint64_json(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    return json_string(buf);
}

static json_t *special_json(double v)
{
    return json_string(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
}

/* The shortest decimal that reads back as the same float, so 0.1f shows as 0.1 and not
 * 0.10000000149011612; encode turns the double back into exactly this float. */
static json_t *float_json(float f)
{
    if (!isfinite(f))
        return special_json(f);
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, (double)f);
        double v = strtod(buf, NULL);
        if (fabs(v) < PB_FLOAT_OVERFLOW && (float)v == f)
            return json_real(v);
    }
    return json_real((double)f);
}

static json_t *double_json(double v)
{
    return isfinite(v) ? json_real(v) : special_json(v);
}

static json_t *bytes_json(const uint8_t *data, size_t len)
{
    char *text = malloc(msm_base64_encoded_size(len));
    if (!text)
        return NULL;
    size_t n = msm_base64_encode(data, len, text);
    json_t *v = json_stringn_nocheck(text, n);
    free(text);
    return v;
}

static json_t *enum_json(const pb_enum_t *e, int32_t v)
{
    const pb_enum_value_t *ev = msm__pb_enum_by_number(e, v);
    return ev ? json_string(ev->name) : json_integer(v);
}

static int32_t zigzag32(uint32_t n)
{
    return (int32_t)(n >> 1) ^ -(int32_t)(n & 1);
}

static int64_t zigzag64(uint64_t n)
{
    return (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
}

/* The JSON of one value (NULL when @p out is NULL: validation only), and whether it is the
 * type's default value (0, false, empty; +0.0 but not -0.0). */
static int dec_scalar(pb_dec_t *d,
                      const pb_msg_t *m,
                      const pb_field_t *f,
                      const pb_record_t *v,
                      json_t **out,
                      bool *is_default)
{
    uint64_t u = v->value;
    json_t *j = NULL;
    *is_default = u == 0 && v->len == 0;
    if ((f->type == PB_TYPE_STRING) && (m->proto3 || d->build) &&
        !msm__pb_utf8_valid(v->data, v->len))
        return dec_fail(d, v->start, f, "string is not valid UTF-8");
    if (!out)
        return MSM_OK;
    switch (f->type) {
    case PB_TYPE_INT32:
    case PB_TYPE_SFIXED32:
        j = json_integer((int32_t)(uint32_t)u);
        *is_default = (uint32_t)u == 0;
        break;
    case PB_TYPE_UINT32:
    case PB_TYPE_FIXED32:
        j = json_integer((uint32_t)u);
        *is_default = (uint32_t)u == 0;
        break;
    case PB_TYPE_SINT32:
        j = json_integer(zigzag32((uint32_t)u));
        *is_default = (uint32_t)u == 0;
        break;
    case PB_TYPE_INT64:
    case PB_TYPE_SFIXED64:
        j = int64_json((int64_t)u);
        break;
    case PB_TYPE_UINT64:
    case PB_TYPE_FIXED64:
        j = uint64_json(u);
        break;
    case PB_TYPE_SINT64:
        j = int64_json(zigzag64(u));
        break;
    case PB_TYPE_BOOL:
        j = json_boolean(u != 0);
        break;
    case PB_TYPE_ENUM:
        j = enum_json(f->enm, (int32_t)(uint32_t)u);
        *is_default = (uint32_t)u == 0;
        break;
    case PB_TYPE_FLOAT: {
        uint32_t bits = (uint32_t)u;
        float x;
        memcpy(&x, &bits, sizeof(x));
        j = float_json(x);
        *is_default = bits == 0;
        break;
    }
    case PB_TYPE_DOUBLE: {
        double x;
        memcpy(&x, &u, sizeof(x));
        j = double_json(x);
        break;
    }
    case PB_TYPE_STRING:
        j = json_stringn_nocheck(v->len ? (const char *)v->data : "", v->len);
        break;
    case PB_TYPE_BYTES:
        j = bytes_json(v->data, v->len);
        break;
    }
    if (!j)
        return dec_nomem(d);
    *out = j;
    return MSM_OK;
}

/* ---- fields ---- */

static int
dec_message(pb_dec_t *d, const pb_msg_t *m, const uint8_t *p, const uint8_t *end, json_t *obj);

/* A oneof shows its last member only. */
static void clear_oneof(const pb_msg_t *m, const pb_field_t *f, json_t *obj)
{
    if (f->oneof < 0)
        return;
    for (int32_t i = m->oneof_first[f->oneof]; i >= 0; i = m->fields[i].next_in_oneof) {
        if (&m->fields[i] != f)
            json_object_del(obj, m->fields[i].json_name);
    }
}

/* obj's member for @p f, created empty (array or object) when missing. */
static json_t *container_of(pb_dec_t *d, json_t *obj, const pb_field_t *f, bool array)
{
    json_t *c = json_object_get(obj, f->json_name);
    if (c && (array ? json_is_array(c) : json_is_object(c)))
        return c;
    c = array ? json_array() : json_object();
    if (!c || json_object_set_new(obj, f->json_name, c) != 0) {
        dec_nomem(d);
        return NULL;
    }
    return c;
}

/* Decodes the message in [p, end) into @p target (NULL: validate only), one level deeper. */
static int dec_nested(pb_dec_t *d, const pb_field_t *f, const pb_record_t *rec, json_t *target)
{
    if (d->depth >= PB_MAX_DEPTH)
        return dec_fail(d, rec->start, f, "messages nested deeper than %d", PB_MAX_DEPTH);
    d->path[d->depth++] = f;
    int rc = dec_message(d, f->msg, rec->data, rec->data + rec->len, target);
    d->depth--;
    return rc;
}

static int dec_singular_message(
    pb_dec_t *d, const pb_msg_t *m, const pb_field_t *f, const pb_record_t *rec, json_t *obj)
{
    if (!obj)
        return dec_nested(d, f, rec, NULL);
    /* A message seen again merges into what is there. */
    json_t *sub = json_object_get(obj, f->json_name);
    bool fresh = !json_is_object(sub);
    if (fresh && !(sub = json_object()))
        return dec_nomem(d);
    int rc = dec_nested(d, f, rec, sub);
    if (rc != MSM_OK || !fresh) {
        if (fresh)
            json_decref(sub);
        return rc;
    }
    clear_oneof(m, f, obj);
    return json_object_set_new(obj, f->json_name, sub) == 0 ? MSM_OK : dec_nomem(d);
}

static int dec_singular_scalar(
    pb_dec_t *d, const pb_msg_t *m, const pb_field_t *f, const pb_record_t *rec, json_t *obj)
{
    json_t *v = NULL;
    bool is_default;
    int rc = dec_scalar(d, m, f, rec, obj ? &v : NULL, &is_default);
    if (rc != MSM_OK || !obj)
        return rc;
    /* Without presence a default value is no value: proto3 JSON leaves it out. */
    if (!f->presence && is_default) {
        json_decref(v);
        json_object_del(obj, f->json_name);
        return MSM_OK;
    }
    clear_oneof(m, f, obj);
    return json_object_set_new(obj, f->json_name, v) == 0 ? MSM_OK : dec_nomem(d);
}

static int
dec_append(pb_dec_t *d, const pb_msg_t *m, const pb_field_t *f, const pb_record_t *rec, json_t *obj)
{
    json_t *v = NULL;
    bool is_default;
    int rc;
    if (f->type == PB_TYPE_MESSAGE) {
        if (obj && !(v = json_object()))
            return dec_nomem(d);
        rc = dec_nested(d, f, rec, v);
    } else {
        rc = dec_scalar(d, m, f, rec, obj ? &v : NULL, &is_default);
    }
    if (rc != MSM_OK || !obj) {
        json_decref(v);
        return rc;
    }
    json_t *array = container_of(d, obj, f, true);
    if (!array) {
        json_decref(v);
        return MSM_ERR_NOMEM;
    }
    return json_array_append_new(array, v) == 0 ? MSM_OK : dec_nomem(d);
}

/* A packed run of scalars: varints back to back, or 4/8-byte values. */
static int
dec_packed(pb_dec_t *d, const pb_msg_t *m, const pb_field_t *f, const pb_record_t *rec, json_t *obj)
{
    uint8_t wire = msm__pb_wire_type(f->type);
    unsigned width = wire == PB_WIRE_I32 ? 4 : wire == PB_WIRE_I64 ? 8 : 0;
    if (width && rec->len % width != 0)
        return dec_fail(d, rec->start, f, "packed length %zu is not a multiple of %u", rec->len,
                        width);
    pb_reader_t r = {rec->data, rec->data + rec->len, NULL};
    while (r.p < r.end) {
        pb_record_t v = {.number = f->number, .wire = wire, .start = r.p};
        if (width) {
            v.value = pb_read_le(r.p, width);
            r.p += width;
        } else if (msm__pb_read_varint(&r, &v.value) < 0) {
            return dec_fail(d, v.start, f, "packed values: %s", r.err);
        }
        int rc = dec_append(d, m, f, &v, obj);
        if (rc != MSM_OK)
            return rc;
    }
    return MSM_OK;
}

/* The JSON key of a map entry's key (decimal for integers, "true"/"false"). */
static void map_key_text(const json_t *k, char *buf, size_t n, const char **key, size_t *len)
{
    if (json_is_string(k)) {
        *key = json_string_value(k);
        *len = json_string_length(k);
        return;
    }
    if (json_is_integer(k))
        snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(k));
    else if (json_is_boolean(k))
        snprintf(buf, n, "%s", json_is_true(k) ? "true" : "false");
    else
        buf[0] = '\0';
    *key = buf;
    *len = strlen(buf);
}

/* The value a field has when it is absent (a map entry without key or value). */
static json_t *default_json(pb_dec_t *d, const pb_msg_t *entry, const pb_field_t *f)
{
    if (f->type == PB_TYPE_MESSAGE)
        return json_object();
    static const uint8_t nothing[1];
    pb_record_t zero = {.number = f->number, .data = nothing, .start = d->base};
    json_t *v = NULL;
    bool is_default;
    return dec_scalar(d, entry, f, &zero, &v, &is_default) == MSM_OK ? v : NULL;
}

static int dec_map_entry(pb_dec_t *d, const pb_field_t *f, const pb_record_t *rec, json_t *obj)
{
    json_t *entry = NULL;
    if (obj && !(entry = json_object()))
        return dec_nomem(d);
    int rc = dec_nested(d, f, rec, entry);
    if (rc != MSM_OK || !obj) {
        json_decref(entry);
        return rc;
    }
    const pb_field_t *kf = &f->msg->fields[0], *vf = &f->msg->fields[1];
    json_t *k = json_object_get(entry, kf->json_name);
    json_t *v = json_object_get(entry, vf->json_name);
    json_t *key_json = k ? json_incref(k) : default_json(d, f->msg, kf);
    json_t *value = v ? json_incref(v) : default_json(d, f->msg, vf);
    json_t *map = container_of(d, obj, f, false);
    rc = key_json && value && map ? MSM_OK : MSM_ERR_NOMEM;
    if (rc == MSM_OK) {
        char buf[32];
        const char *key;
        size_t len;
        map_key_text(key_json, buf, sizeof(buf), &key, &len);
        /* The last entry of a key wins. */
        rc = json_object_setn_new_nocheck(map, key, len, value) == 0 ? MSM_OK : MSM_ERR_NOMEM;
        value = NULL;
    }
    json_decref(key_json);
    json_decref(value);
    json_decref(entry);
    return rc == MSM_OK ? MSM_OK : dec_nomem(d);
}

static int
dec_field(pb_dec_t *d, const pb_msg_t *m, const pb_field_t *f, const pb_record_t *rec, json_t *obj)
{
    uint8_t want = msm__pb_wire_type(f->type);
    if (f->label == PB_LABEL_REPEATED && rec->wire == PB_WIRE_LEN && pb_packable(f->type))
        return dec_packed(d, m, f, rec, obj);
    if (rec->wire != want)
        return dec_fail(d, rec->start, f, "wire type %u does not fit type %s", rec->wire,
                        msm__pb_type_name(f->type));
    if (f->is_map)
        return dec_map_entry(d, f, rec, obj);
    if (f->label == PB_LABEL_REPEATED)
        return dec_append(d, m, f, rec, obj);
    if (f->type == PB_TYPE_MESSAGE)
        return dec_singular_message(d, m, f, rec, obj);
    return dec_singular_scalar(d, m, f, rec, obj);
}

static int
dec_message(pb_dec_t *d, const pb_msg_t *m, const uint8_t *p, const uint8_t *end, json_t *obj)
{
    pb_reader_t r = {p, end, NULL};
    pb_record_t rec = {.start = p};
    uint64_t seen = 0;
    int more;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        const pb_field_t *f = msm__pb_field_by_number(m, rec.number);
        if (!f)
            continue; /* unknown: well formed (msm__pb_next checked it), skipped */
        if (f->required_bit >= 0)
            seen |= 1ull << f->required_bit;
        int rc = dec_field(d, m, f, &rec, obj);
        if (rc != MSM_OK)
            return rc;
    }
    if (more < 0)
        return dec_fail(d, rec.start, NULL, "%s", r.err);
    if ((seen & m->required_mask) != m->required_mask) {
        for (size_t i = 0; i < m->n_fields; i++) {
            const pb_field_t *f = &m->fields[i];
            if (f->required_bit >= 0 && !(seen & (1ull << f->required_bit)))
                return dec_fail(d, end, f, "required field is missing");
        }
    }
    return MSM_OK;
}

/* ---- entry points ---- */

int msm__pb_check(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    static const uint8_t nothing[1];
    const pb_schema_t *s = impl;
    if (!data)
        data = nothing, len = 0;
    pb_dec_t d = {.why = why, .why_size = why_size, .base = data};
    return dec_message(&d, s->root, data, data + len, NULL);
}

json_t *
msm__pb_decode_json(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    static const uint8_t nothing[1];
    const pb_schema_t *s = impl;
    if (!data)
        data = nothing, len = 0;
    pb_dec_t d = {.why = why, .why_size = why_size, .base = data, .build = true};
    json_t *obj = json_object();
    if (!obj) {
        dec_nomem(&d);
        return NULL;
    }
    if (dec_message(&d, s->root, data, data + len, obj) != MSM_OK) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}
