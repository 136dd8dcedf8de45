/* SPDX-License-Identifier: MIT */
/* PROTOBUF: proto3 JSON in, wire format out (msm_schema_encode_json). Fields are written in
 * field-number order, repeated scalars packed where the schema says so, defaults without
 * presence left out and map entries with both key and value, so the output is canonical:
 * encode(decode(x)) == x byte for byte. One growing buffer; a nested message's length is
 * fixed up after its body is written. */
#include "schema_protobuf_int.h"

#include "msm/base64.h"

#include "msm/err.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    msm_json_err_t *e;
    int depth; /* messages entered below the top one */
    int rc;    /* MSM_OK, MSM_ERR_INVALID once an error was recorded, MSM_ERR_NOMEM */
} pb_enc_t;

/* One converted value, ready to write. */
typedef struct {
    uint64_t bits;   /* varint value, or the 32/64 bits of a fixed-width value */
    const char *str; /* string and bytes (base64 text) */
    size_t str_len;
    size_t len; /* string: str_len; bytes: decoded length */
    bool is_default;
} pb_scalar_t;

static void bad(pb_enc_t *w, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records an error at the current path (extended by @p key) and carries on, so that one
 * call reports every bad member. */
static void bad(pb_enc_t *w, const char *key, const char *fmt, ...)
{
    char desc[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    msm_json_err_add(w->e, key, "%s", desc);
    if (w->rc == MSM_OK)
        w->rc = MSM_ERR_INVALID;
}

/* ---- the output buffer ---- */

static bool reserve(pb_enc_t *w, size_t n)
{
    if (w->rc == MSM_ERR_NOMEM)
        return false;
    if (w->cap - w->len >= n)
        return true;
    size_t cap = w->cap ? w->cap : 256;
    while (cap - w->len < n) {
        if (cap > SIZE_MAX / 2) {
            w->rc = MSM_ERR_NOMEM;
            return false;
        }
        cap *= 2;
    }
    uint8_t *buf = realloc(w->buf, cap);
    if (!buf) {
        w->rc = MSM_ERR_NOMEM;
        return false;
    }
    w->buf = buf;
    w->cap = cap;
    return true;
}

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static void varint_at(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p = (uint8_t)v;
}

static void put_varint(pb_enc_t *w, uint64_t v)
{
    size_t n = varint_size(v);
    if (!reserve(w, n))
        return;
    varint_at(w->buf + w->len, v);
    w->len += n;
}

static void put_fixed(pb_enc_t *w, uint64_t v, unsigned n)
{
    if (!reserve(w, n))
        return;
    for (unsigned i = 0; i < n; i++)
        w->buf[w->len++] = (uint8_t)(v >> (8 * i));
}

static void put_tag(pb_enc_t *w, uint32_t number, uint8_t wire)
{
    put_varint(w, (uint64_t)number << 3 | wire);
}

/* Starts a length-delimited body: one byte kept for its length, the usual case. */
static size_t begin_len(pb_enc_t *w)
{
    if (!reserve(w, 1))
        return w->len;
    return w->len++;
}

/* Writes the body's length at @p mark, moving the body when the length needs more bytes. */
static void end_len(pb_enc_t *w, size_t mark)
{
    if (w->rc == MSM_ERR_NOMEM)
        return;
    size_t body = w->len - mark - 1;
    size_t n = varint_size(body);
    if (n > 1) {
        if (!reserve(w, n - 1))
            return;
        memmove(w->buf + mark + n, w->buf + mark + 1, body);
        w->len += n - 1;
    }
    varint_at(w->buf + mark, body);
}

/* ---- numbers from JSON ---- */

/* Strict JSON number syntax (strtod alone would take hex, "inf", spaces). */
static bool is_number_text(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    size_t digits = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == digits)
        return false;
    if (i < n && s[i] == '.') {
        size_t frac = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == frac)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t exp = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == exp)
            return false;
    }
    return i == n;
}

/* "-?[0-9]+" into sign and magnitude. @returns 0, -1 when not that form, -2 above 2^64-1. */
static int parse_decimal(const char *s, size_t n, bool *neg, uint64_t *mag)
{
    size_t i = 0;
    *neg = n > 0 && s[0] == '-';
    i = *neg;
    if (i == n)
        return -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    *mag = v;
    return 0;
}

/* A JSON number, or a string holding one, as a double (for integral checks). */
static bool number_of(const json_t *v, double *out)
{
    if (json_is_real(v)) {
        *out = json_real_value(v);
        return true;
    }
    if (json_is_string(v) && is_number_text(json_string_value(v), json_string_length(v))) {
        errno = 0;
        *out = strtod(json_string_value(v), NULL);
        return errno == 0 && isfinite(*out);
    }
    return false;
}

/* An integer in [min, max] from a JSON integer, an integral real, or a decimal string. */
static bool json_signed(pb_enc_t *w, const json_t *v, int64_t min, int64_t max, int64_t *out)
{
    bool neg;
    uint64_t mag;
    double d;
    int64_t x;
    int rc = 1;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_string(v) &&
               (rc = parse_decimal(json_string_value(v), json_string_length(v), &neg, &mag)) == 0) {
        if (mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
            goto range;
        x = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    } else if (rc == -2) {
        goto range;
    } else if (number_of(v, &d) && d == floor(d)) {
        if (d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            goto range;
        x = (int64_t)d;
    } else {
        bad(w, NULL, "must be an integer (a number or a decimal string)");
        return false;
    }
    if (x < min || x > max)
        goto range;
    *out = x;
    return true;
range:
    bad(w, NULL, "must be between %" PRId64 " and %" PRId64, min, max);
    return false;
}

static bool json_unsigned(pb_enc_t *w, const json_t *v, uint64_t max, uint64_t *out)
{
    bool neg;
    uint64_t x;
    double d;
    int rc = 1;
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0)
            goto range;
        x = (uint64_t)json_integer_value(v);
    } else if (json_is_string(v) &&
               (rc = parse_decimal(json_string_value(v), json_string_length(v), &neg, &x)) == 0) {
        if (neg && x != 0)
            goto range;
    } else if (rc == -2) {
        goto range;
    } else if (number_of(v, &d) && d == floor(d)) {
        if (d < 0 || d >= 18446744073709551616.0)
            goto range;
        x = (uint64_t)d;
    } else {
        bad(w, NULL, "must be an integer (a number or a decimal string)");
        return false;
    }
    if (x > max)
        goto range;
    *out = x;
    return true;
range:
    bad(w, NULL, "must be between 0 and %" PRIu64, max);
    return false;
}

/* A number, a numeric string, or "NaN", "Infinity", "-Infinity". */
static bool json_double(pb_enc_t *w, const json_t *v, double *out)
{
    if (json_is_integer(v)) {
        *out = (double)json_integer_value(v);
        return true;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "NaN") == 0) {
            *out = NAN;
            return true;
        }
        if (strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0) {
            *out = s[0] == '-' ? -INFINITY : INFINITY;
            return true;
        }
        if (is_number_text(s, json_string_length(v)) && !number_of(v, out)) {
            bad(w, NULL, "is out of range");
            return false;
        }
    }
    if (number_of(v, out))
        return true;
    bad(w, NULL, "must be a number (or \"NaN\", \"Infinity\", \"-Infinity\")");
    return false;
}

/* ---- scalars ---- */

static uint64_t signed_bits(uint8_t type, int64_t x)
{
    switch (type) {
    case PB_TYPE_SINT32:
        return (uint32_t)x << 1 ^ (x < 0 ? UINT32_MAX : 0);
    case PB_TYPE_SINT64:
        return (uint64_t)x << 1 ^ (x < 0 ? UINT64_MAX : 0);
    case PB_TYPE_SFIXED32:
        return (uint32_t)x;
    default: /* int32, int64, enum: sign-extended varints */
        return (uint64_t)x;
    }
}

static bool enum_from_json(pb_enc_t *w, const pb_enum_t *e, const json_t *v, int64_t *out)
{
    if (json_is_string(v)) {
        const pb_enum_value_t *ev = msm__pb_enum_by_name(e, json_string_value(v));
        if (!ev) {
            bad(w, NULL, "unknown value '%s' of enum %s", json_string_value(v), e->full_name);
            return false;
        }
        *out = ev->number;
        return true;
    }
    if (json_is_integer(v))
        return json_signed(w, v, INT32_MIN, INT32_MAX, out);
    bad(w, NULL, "must be a name or a number of enum %s", e->full_name);
    return false;
}

/* Converts @p v for a field of @p f's type; false after recording why not. */
static bool scalar_from_json(pb_enc_t *w, const pb_field_t *f, const json_t *v, pb_scalar_t *sc)
{
    int64_t i = 0;
    uint64_t u = 0;
    double d = 0;
    memset(sc, 0, sizeof(*sc));
    switch (f->type) {
    case PB_TYPE_INT32:
    case PB_TYPE_SINT32:
    case PB_TYPE_SFIXED32:
        if (!json_signed(w, v, INT32_MIN, INT32_MAX, &i))
            return false;
        sc->bits = signed_bits(f->type, i);
        break;
    case PB_TYPE_INT64:
    case PB_TYPE_SINT64:
    case PB_TYPE_SFIXED64:
        if (!json_signed(w, v, INT64_MIN, INT64_MAX, &i))
            return false;
        sc->bits = signed_bits(f->type, i);
        break;
    case PB_TYPE_UINT32:
    case PB_TYPE_FIXED32:
        if (!json_unsigned(w, v, UINT32_MAX, &u))
            return false;
        sc->bits = u;
        break;
    case PB_TYPE_UINT64:
    case PB_TYPE_FIXED64:
        if (!json_unsigned(w, v, UINT64_MAX, &u))
            return false;
        sc->bits = u;
        break;
    case PB_TYPE_ENUM:
        if (!enum_from_json(w, f->enm, v, &i))
            return false;
        sc->bits = (uint64_t)i;
        break;
    case PB_TYPE_BOOL:
        if (!json_is_boolean(v)) {
            bad(w, NULL, "must be true or false");
            return false;
        }
        sc->bits = json_is_true(v);
        break;
    case PB_TYPE_FLOAT: {
        if (!json_double(w, v, &d))
            return false;
        /* Rounding to the largest float is fine; rounding to infinity is not. */
        if (isfinite(d) && fabs(d) >= PB_FLOAT_OVERFLOW) {
            bad(w, NULL, "is out of range for a float");
            return false;
        }
        uint32_t bits = 0x7fc00000u; /* one NaN for all, so the output is canonical */
        float x = (float)d;
        if (!isnan(d))
            memcpy(&bits, &x, sizeof(bits));
        sc->bits = bits;
        break;
    }
    case PB_TYPE_DOUBLE:
        if (!json_double(w, v, &d))
            return false;
        sc->bits = UINT64_C(0x7ff8000000000000);
        if (!isnan(d))
            memcpy(&sc->bits, &d, sizeof(d));
        break;
    case PB_TYPE_STRING:
    case PB_TYPE_BYTES:
        if (!json_is_string(v)) {
            bad(w, NULL,
                f->type == PB_TYPE_STRING ? "must be a string" : "must be a base64 string");
            return false;
        }
        sc->str = json_string_value(v);
        sc->str_len = sc->len = json_string_length(v);
        if (f->type == PB_TYPE_BYTES && msm_base64_lenient_measure(sc->str, &sc->str_len, &sc->len) != MSM_OK) {
            bad(w, NULL, "must be base64 (standard or URL-safe alphabet)");
            return false;
        }
        break;
    }
    sc->is_default = sc->bits == 0 && sc->len == 0;
    return true;
}

static void put_scalar(pb_enc_t *w, uint8_t type, const pb_scalar_t *sc)
{
    switch (msm__pb_wire_type(type)) {
    case PB_WIRE_I32:
        put_fixed(w, sc->bits, 4);
        return;
    case PB_WIRE_I64:
        put_fixed(w, sc->bits, 8);
        return;
    case PB_WIRE_VARINT:
        put_varint(w, sc->bits);
        return;
    }
    put_varint(w, sc->len);
    if (!reserve(w, sc->len))
        return;
    if (type == PB_TYPE_BYTES)
        msm_base64_lenient_decode(sc->str, sc->str_len, w->buf + w->len);
    else if (sc->len)
        memcpy(w->buf + w->len, sc->str, sc->len);
    w->len += sc->len;
}

/* ---- messages and fields ---- */

static void enc_message(pb_enc_t *w, const pb_msg_t *m, const json_t *obj);

/* A nested message as field @p number: tag, length, body. */
static void enc_nested(pb_enc_t *w, uint32_t number, const pb_msg_t *m, const json_t *v)
{
    if (w->depth >= PB_MAX_DEPTH) {
        bad(w, NULL, "messages nested deeper than %d", PB_MAX_DEPTH);
        return;
    }
    put_tag(w, number, PB_WIRE_LEN);
    size_t mark = begin_len(w);
    w->depth++;
    enc_message(w, m, v);
    w->depth--;
    end_len(w, mark);
}

/* Tag and value of one value of @p f (numbered @p number), left out when it is a default
 * and @p skip_default. */
static void
enc_value(pb_enc_t *w, const pb_field_t *f, uint32_t number, const json_t *v, bool skip_default)
{
    if (f->type == PB_TYPE_MESSAGE) {
        enc_nested(w, number, f->msg, v);
        return;
    }
    pb_scalar_t sc;
    if (!scalar_from_json(w, f, v, &sc) || (skip_default && sc.is_default))
        return;
    put_tag(w, number, msm__pb_wire_type(f->type));
    put_scalar(w, f->type, &sc);
}

static void enc_repeated(pb_enc_t *w, const pb_field_t *f, const json_t *v)
{
    if (!json_is_array(v)) {
        bad(w, NULL, "must be an array");
        return;
    }
    size_t n = json_array_size(v), mark = 0;
    if (n == 0)
        return;
    if (f->packed) {
        put_tag(w, f->number, PB_WIRE_LEN);
        mark = begin_len(w);
    }
    for (size_t i = 0; i < n && w->rc != MSM_ERR_NOMEM; i++) {
        const json_t *item = json_array_get(v, i);
        pb_scalar_t sc;
        msm_json_path_push_index(w->e, i);
        if (json_is_null(item))
            bad(w, NULL, "must not be null");
        else if (!f->packed)
            enc_value(w, f, f->number, item, false);
        else if (scalar_from_json(w, f, item, &sc))
            put_scalar(w, f->type, &sc);
        msm_json_path_pop(w->e);
    }
    if (f->packed)
        end_len(w, mark);
}

/* A map key (always a JSON string) in its canonical text form only, so that two different
 * keys never encode the same entry key ("1" and "01"). */
static bool
map_key_from_text(pb_enc_t *w, const pb_field_t *kf, const char *key, size_t len, pb_scalar_t *sc)
{
    memset(sc, 0, sizeof(*sc));
    if (kf->type == PB_TYPE_STRING) {
        sc->str = key;
        sc->len = sc->str_len = len;
        return true;
    }
    if (kf->type == PB_TYPE_BOOL) {
        if (len == 4 && memcmp(key, "true", 4) == 0)
            sc->bits = 1;
        else if (!(len == 5 && memcmp(key, "false", 5) == 0))
            goto invalid;
        return true;
    }
    bool neg;
    uint64_t mag;
    bool is_signed = kf->type == PB_TYPE_INT32 || kf->type == PB_TYPE_INT64 ||
                     kf->type == PB_TYPE_SINT32 || kf->type == PB_TYPE_SINT64 ||
                     kf->type == PB_TYPE_SFIXED32 || kf->type == PB_TYPE_SFIXED64;
    bool wide = msm__pb_wire_type(kf->type) == PB_WIRE_I64 || kf->type == PB_TYPE_INT64 ||
                kf->type == PB_TYPE_UINT64 || kf->type == PB_TYPE_SINT64;
    if (parse_decimal(key, len, &neg, &mag) != 0 || (neg && !is_signed) ||
        (len > 1 && key[neg] == '0') || (neg && mag == 0))
        goto invalid;
    uint64_t limit = is_signed ? (wide ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX) + neg
                               : (wide ? UINT64_MAX : UINT32_MAX);
    if (mag > limit)
        goto invalid;
    if (is_signed)
        sc->bits = signed_bits(kf->type, neg ? (int64_t)(0 - mag) : (int64_t)mag);
    else
        sc->bits = mag;
    return true;
invalid:
    bad(w, NULL, "map key must be a %s in canonical form", msm__pb_type_name(kf->type));
    return false;
}

static void enc_map(pb_enc_t *w, const pb_field_t *f, const json_t *v)
{
    if (!json_is_object(v)) {
        bad(w, NULL, "must be an object");
        return;
    }
    const pb_field_t *kf = &f->msg->fields[0], *vf = &f->msg->fields[1];
    const char *key;
    size_t key_len;
    json_t *item;
    json_t *map = (json_t *)v; /* jansson iterates through non-const pointers only */
    json_object_keylen_foreach(map, key, key_len, item)
    {
        pb_scalar_t ks;
        msm_json_path_push_key(w->e, key);
        if (json_is_null(item)) {
            bad(w, NULL, "must not be null");
        } else if (w->depth >= PB_MAX_DEPTH) {
            bad(w, NULL, "messages nested deeper than %d", PB_MAX_DEPTH);
        } else if (map_key_from_text(w, kf, key, key_len, &ks)) {
            /* Both key and value are always written, as protobuf's own encoders do. */
            put_tag(w, f->number, PB_WIRE_LEN);
            size_t mark = begin_len(w);
            w->depth++;
            put_tag(w, kf->number, msm__pb_wire_type(kf->type));
            put_scalar(w, kf->type, &ks);
            enc_value(w, vf, vf->number, item, false);
            w->depth--;
            end_len(w, mark);
        }
        msm_json_path_pop(w->e);
        if (w->rc == MSM_ERR_NOMEM)
            break;
    }
}

static void enc_field(pb_enc_t *w, const pb_field_t *f, const json_t *v)
{
    if (f->is_map)
        enc_map(w, f, v);
    else if (f->label == PB_LABEL_REPEATED)
        enc_repeated(w, f, v);
    else
        enc_value(w, f, f->number, v, !f->presence);
}

static bool given(const json_t *obj, const pb_field_t *f)
{
    const json_t *v = json_object_get(obj, f->json_name);
    if (!v || json_is_null(v))
        v = json_object_get(obj, f->name);
    return v && !json_is_null(v);
}

/* An earlier member of f's oneof that is set too, or NULL. */
static const pb_field_t *oneof_rival(const pb_msg_t *m, const pb_field_t *f, const json_t *obj)
{
    if (f->oneof < 0)
        return NULL;
    for (int32_t i = m->oneof_first[f->oneof]; i >= 0; i = m->fields[i].next_in_oneof) {
        const pb_field_t *g = &m->fields[i];
        if (g->number < f->number && given(obj, g))
            return g;
    }
    return NULL;
}

/* Whether @p key (which may hold U+0000) names a field of @p m. */
static bool known_member(const pb_msg_t *m, const char *key, size_t len)
{
    for (size_t i = 0; i < m->n_fields; i++) {
        const pb_field_t *f = &m->fields[i];
        if ((strlen(f->json_name) == len && memcmp(f->json_name, key, len) == 0) ||
            (strlen(f->name) == len && memcmp(f->name, key, len) == 0))
            return true;
    }
    return false;
}

/* The member holding @p f (by JSON name or by declared name), counted in *matched. */
static const json_t *
member_of(pb_enc_t *w, const json_t *obj, const pb_field_t *f, const char **key, size_t *matched)
{
    const json_t *by_json = json_object_get(obj, f->json_name);
    const json_t *by_name =
        strcmp(f->name, f->json_name) != 0 ? json_object_get(obj, f->name) : NULL;
    *matched += (by_json != NULL) + (by_name != NULL);
    if (by_json && by_name) {
        bad(w, f->name, "is given twice (also as '%s')", f->json_name);
        return NULL;
    }
    *key = by_json ? f->json_name : f->name;
    return by_json ? by_json : by_name;
}

static void enc_message(pb_enc_t *w, const pb_msg_t *m, const json_t *obj)
{
    if (!json_is_object(obj)) {
        bad(w, NULL, "must be an object");
        return;
    }
    size_t matched = 0;
    for (size_t i = 0; i < m->n_fields && w->rc != MSM_ERR_NOMEM; i++) {
        const pb_field_t *f = &m->fields[i];
        const char *key = NULL; /* stays NULL when given twice (reported already) */
        const json_t *v = member_of(w, obj, f, &key, &matched);
        const pb_field_t *rival;
        if (!v || json_is_null(v)) {
            if (f->required_bit >= 0 && key)
                bad(w, f->json_name, "is required");
        } else if ((rival = oneof_rival(m, f, obj))) {
            bad(w, key, "oneof '%s' is already set by '%s'", m->oneof_names[f->oneof],
                rival->json_name);
        } else {
            msm_json_path_push_key(w->e, key);
            enc_field(w, f, v);
            msm_json_path_pop(w->e);
        }
    }
    if (matched < json_object_size(obj)) {
        const char *key;
        size_t key_len;
        json_t *v;
        json_object_keylen_foreach((json_t *)obj, key, key_len, v)
        {
            if (!known_member(m, key, key_len))
                bad(w, key, "unknown field");
        }
    }
}

int msm__pb_encode_json(
    const void *impl, const json_t *value, msm_json_err_t *e, uint8_t **out, size_t *out_len)
{
    const pb_schema_t *s = impl;
    pb_enc_t w = {.e = e};
    reserve(&w, 1); /* an empty message is still a malloc'd buffer */
    if (w.rc == MSM_OK)
        enc_message(&w, s->root, value);
    if (w.rc != MSM_OK) {
        if (w.rc == MSM_ERR_NOMEM)
            msm_json_err_add(e, NULL, "out of memory");
        free(w.buf);
        return w.rc;
    }
    *out = w.buf;
    *out_len = w.len;
    return MSM_OK;
}
