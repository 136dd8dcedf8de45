/* SPDX-License-Identifier: MIT */
/* The JSON batch publish without a JSON tree: one pass over the body that validates it as
 * strictly as jansson does, copies each event's "data" compacted into one arena and decodes
 * the other fields there. It accepts only what it fully understands and what the full parser
 * (publish_json.c) would accept too; for anything else (an error to report, an unusual
 * field or form) it gives up and the full parser decides, so answers stay the full parser's.
 * Measured: parsing a batch into a jansson tree and printing each "data" back was over half
 * of the frontend's CPU per event. */
#include "pub_int.h"

#include "msm/err.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH      32  /* deeper data: the full parser */
#define MAX_KEYS       32  /* keys of one data object checked for duplicates; more: full */
#define MAX_INT_DIGITS 18  /* below int64's range whatever the digits */
#define MAX_REAL_CHARS 300 /* a real without exponent this short cannot overflow a double */

typedef struct {
    const char *p, *end;
    char *out; /* arena write position */
} scan_t;

static void skip_ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

static int eat(scan_t *s, char c)
{
    skip_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* One UTF-8 sequence at p (first byte >= 0x80), as jansson accepts it: no overlong forms, no
 * surrogates, nothing above U+10FFFF. @returns its length, 0 when invalid. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], n, v;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, v = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, v = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, v = c & 0x07;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (unsigned i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10ffff ||
        (v >= 0xd800 && v <= 0xdfff))
        return 0;
    return n;
}

/* A string at s->p (its opening quote). @p decode: its value, NUL-terminated, to s->out;
 * else its JSON text as is. \u escapes are left to the full parser (NUL and surrogate pairs
 * have rules of their own there). @returns the start of what was written, NULL to give up. */
static char *string(scan_t *s, int decode, int *escaped)
{
    if (s->p >= s->end || *s->p != '"')
        return NULL;
    char *start = s->out;
    if (!decode)
        *s->out++ = '"';
    s->p++;
    for (;;) {
        const char *run = s->p;
        while (s->p < s->end && (unsigned char)*s->p >= 0x20 && (unsigned char)*s->p < 0x80 &&
               *s->p != '"' && *s->p != '\\')
            s->p++;
        memcpy(s->out, run, (size_t)(s->p - run));
        s->out += s->p - run;
        if (s->p >= s->end)
            return NULL;
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            if (decode)
                *s->out++ = '\0';
            else
                *s->out++ = '"';
            return start;
        }
        if (c < 0x20)
            return NULL;
        if (c >= 0x80) {
            size_t n = utf8_len((const unsigned char *)s->p, (const unsigned char *)s->end);
            if (!n)
                return NULL;
            memcpy(s->out, s->p, n);
            s->out += n;
            s->p += n;
            continue;
        }
        /* a backslash */
        if (s->end - s->p < 2)
            return NULL;
        static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
        const char *at = strchr(esc_in, s->p[1]);
        if (!at || !s->p[1])
            return NULL;
        if (escaped)
            *escaped = 1;
        if (decode) {
            *s->out++ = esc_out[at - esc_in];
        } else {
            *s->out++ = '\\';
            *s->out++ = s->p[1];
        }
        s->p += 2;
    }
}

static int is_digit(const scan_t *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

/* A number, copied. Integers longer than MAX_INT_DIGITS and reals with an exponent or longer
 * than MAX_REAL_CHARS go to the full parser, which knows when they overflow. @p int_value:
 * when not NULL, the number must be a non-negative integer, stored there. */
static int number(scan_t *s, int64_t *int_value)
{
    const char *start = s->p;
    if (s->p < s->end && *s->p == '-') {
        if (int_value)
            return -1;
        s->p++;
    }
    if (!is_digit(s))
        return -1;
    if (*s->p == '0')
        s->p++;
    else
        while (is_digit(s))
            s->p++;
    size_t digits = (size_t)(s->p - start);
    int real = 0;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!is_digit(s))
            return -1;
        while (is_digit(s))
            s->p++;
        real = 1;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E'))
        return -1;
    size_t len = (size_t)(s->p - start);
    if ((!real && digits > MAX_INT_DIGITS) || len > MAX_REAL_CHARS)
        return -1;
    if (int_value) {
        if (real)
            return -1;
        int64_t v = 0;
        for (const char *q = start; q < s->p; q++)
            v = v * 10 + (*q - '0');
        *int_value = v;
        return 0;
    }
    memcpy(s->out, start, len);
    s->out += len;
    return 0;
}

static int literal(scan_t *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    memcpy(s->out, word, n);
    s->out += n;
    s->p += n;
    return 0;
}

static int value(scan_t *s, int depth);

/* An object's member names as written (a name with an escape gives up: two spellings
 * could be one name), checked for duplicates as jansson's JSON_REJECT_DUPLICATES does. */
static int object(scan_t *s, int depth)
{
    const char *names[MAX_KEYS];
    size_t lens[MAX_KEYS], n = 0;
    s->p++;
    *s->out++ = '{';
    if (eat(s, '}')) {
        *s->out++ = '}';
        return 0;
    }
    do {
        if (n > 0)
            *s->out++ = ',';
        skip_ws(s);
        int escaped = 0;
        char *name = string(s, 0, &escaped);
        if (!name || escaped || n == MAX_KEYS)
            return -1;
        size_t len = (size_t)(s->out - name);
        for (size_t i = 0; i < n; i++) {
            if (lens[i] == len && memcmp(names[i], name, len) == 0)
                return -1;
        }
        names[n] = name;
        lens[n++] = len;
        if (!eat(s, ':'))
            return -1;
        *s->out++ = ':';
        if (value(s, depth + 1) != 0)
            return -1;
    } while (eat(s, ','));
    if (!eat(s, '}'))
        return -1;
    *s->out++ = '}';
    return 0;
}

static int array(scan_t *s, int depth)
{
    s->p++;
    *s->out++ = '[';
    if (eat(s, ']')) {
        *s->out++ = ']';
        return 0;
    }
    int first = 1;
    do {
        if (!first)
            *s->out++ = ',';
        first = 0;
        if (value(s, depth + 1) != 0)
            return -1;
    } while (eat(s, ','));
    if (!eat(s, ']'))
        return -1;
    *s->out++ = ']';
    return 0;
}

/* Any JSON value, copied compact (no whitespace) to s->out. */
static int value(scan_t *s, int depth)
{
    skip_ws(s);
    if (s->p >= s->end || depth > MAX_DEPTH)
        return -1;
    switch (*s->p) {
    case '{':
        return object(s, depth);
    case '[':
        return array(s, depth);
    case '"':
        return string(s, 0, NULL) ? 0 : -1;
    case 't':
        return literal(s, "true");
    case 'f':
        return literal(s, "false");
    case 'n':
        return literal(s, "null");
    default:
        return number(s, NULL);
    }
}

/* ---- one event ---- */

enum {
    F_DATA,
    F_KEY,
    F_ORDERING_KEY,
    F_IDEMPOTENCY_KEY,
    F_CONTENT_TYPE,
    F_ATTRIBUTES,
    F_DELAY_MS,
    F_DELIVER_AT,
    F_DEADLINE,
    F_PRIORITY,
    F_TRACEPARENT,
    F_TRACESTATE,
    NFIELDS
};
static const char *const field_names[NFIELDS] = {
    "data",     "key",        "ordering_key", "idempotency_key", "content_type", "attributes",
    "delay_ms", "deliver_at", "deadline",     "priority",        "traceparent",  "tracestate"};

/* The attributes of the batch, grown as events come (pointers are made at the end). */
typedef struct {
    const char **kv; /* name, value, name, value... */
    size_t n, cap;
} attr_list_t;

static int attr_add(attr_list_t *a, const char *name, const char *v)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        const char **kv = realloc(a->kv, cap * 2 * sizeof(*kv));
        if (!kv)
            return -1;
        a->kv = kv;
        a->cap = cap;
    }
    a->kv[2 * a->n] = name;
    a->kv[2 * a->n + 1] = v;
    a->n++;
    return 0;
}

static int field_index(const char *name)
{
    for (int i = 0; i < NFIELDS; i++) {
        if (strcmp(field_names[i], name) == 0)
            return i;
    }
    return -1;
}

typedef struct {
    const char *text[NFIELDS]; /* the string fields, decoded */
    int64_t delay, priority;
    size_t attr_from, attr_count;
    const char *data;
    size_t data_len;
} fields_t;

static int attributes(scan_t *s, attr_list_t *attrs, fields_t *f)
{
    f->attr_from = attrs->n;
    if (!eat(s, '{'))
        return -1;
    if (eat(s, '}'))
        return 0;
    do {
        skip_ws(s);
        char *name = string(s, 1, NULL);
        if (!name || !eat(s, ':'))
            return -1;
        skip_ws(s);
        char *v = string(s, 1, NULL);
        if (!v)
            return -1;
        for (size_t i = f->attr_from; i < attrs->n; i++) {
            if (strcmp(attrs->kv[2 * i], name) == 0)
                return -1;
        }
        if (attr_add(attrs, name, v) != 0)
            return -1;
    } while (eat(s, ','));
    f->attr_count = attrs->n - f->attr_from;
    return eat(s, '}') ? 0 : -1;
}

/* The members of one event object into @p f. */
static int event_fields(scan_t *s, attr_list_t *attrs, fields_t *f)
{
    unsigned seen = 0;
    memset(f, 0, sizeof(*f));
    f->delay = -1;
    f->priority = FE_DEFAULT_PRIORITY;
    if (!eat(s, '{') || eat(s, '}'))
        return -1;
    do {
        skip_ws(s);
        char *name = string(s, 1, NULL);
        int i = name ? field_index(name) : -1;
        if (i < 0 || (seen & (1u << i)) || !eat(s, ':'))
            return -1;
        s->out = name; /* the name is not kept */
        seen |= 1u << i;
        skip_ws(s);
        if (i == F_DATA) {
            f->data = s->out;
            if (value(s, 0) != 0)
                return -1;
            f->data_len = (size_t)(s->out - f->data);
        } else if (i == F_ATTRIBUTES) {
            if (attributes(s, attrs, f) != 0)
                return -1;
        } else if (i == F_DELAY_MS || i == F_PRIORITY) {
            if (number(s, i == F_DELAY_MS ? &f->delay : &f->priority) != 0)
                return -1;
        } else if (!(f->text[i] = string(s, 1, NULL))) {
            return -1;
        }
    } while (eat(s, ','));
    return eat(s, '}') && f->data ? 0 : -1;
}

/* The checks of publish_json.c's parse_event on values it accepted the form of. */
static void event_check(const fe_parse_ctx_t *ctx,
                        fe_batch_t *b,
                        const fields_t *f,
                        fe_event_t *ev,
                        msm_json_err_t *e,
                        msm_json_err_t *big)
{
    static const size_t text_max[] = {[F_KEY] = FE_KEY_MAX_BYTES,
                                      [F_ORDERING_KEY] = FE_KEY_MAX_BYTES,
                                      [F_IDEMPOTENCY_KEY] = FE_IDEMPOTENCY_MAX_BYTES};
    const char **dest[] = {[F_KEY] = &ev->key,
                           [F_ORDERING_KEY] = &ev->ordering_key,
                           [F_IDEMPOTENCY_KEY] = &ev->idempotency_key};
    for (int i = F_KEY; i <= F_IDEMPOTENCY_KEY; i++) {
        if (f->text[i]) {
            msm_json_check_text(e, big, field_names[i], f->text[i], text_max[i]);
            *dest[i] = f->text[i];
        }
    }
    const char *ct = f->text[F_CONTENT_TYPE];
    if (ct) {
        if (!*ct || strlen(ct) > FE_CONTENT_TYPE_MAX || !fe_media_type_ok(ct) ||
            !msm_json_media_type(ct))
            msm_json_err_add(e, "content_type", "left to the full parser");
        ev->content_type = ct;
    } else {
        ev->content_type = "application/json";
    }
    for (size_t i = 0; i < f->attr_count; i++) {
        fe_check_attr(e, big, b->attr_entries[f->attr_from + i].key,
                      b->attr_entries[f->attr_from + i].key,
                      b->attr_entries[f->attr_from + i].value, i);
    }
    if (f->priority > 9)
        msm_json_err_add(e, "priority", "left to the full parser");
    ev->priority = (int)f->priority;
    fe_event_trace(b, ev, e, "traceparent", f->text[F_TRACEPARENT], "tracestate",
                   f->text[F_TRACESTATE]);
    if (f->delay > FE_DELAY_MAX_MS)
        msm_json_err_add(e, "delay_ms", "left to the full parser");
    fe_event_timing(e, ctx->now_ms, f->delay >= 0, f->delay, f->text[F_DELIVER_AT],
                    f->text[F_DEADLINE], ev);
    ev->data_field = "data";
    ev->payload = (const uint8_t *)f->data;
    ev->payload_len = f->data_len;
    if (f->data_len > ctx->max_event_bytes)
        msm_json_err_add(big, "data", "left to the full parser");
}

/* ---- the batch ---- */

typedef struct {
    fields_t *f;
    size_t n, cap;
} field_list_t;

static fields_t *next_fields(field_list_t *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        fields_t *f = realloc(l->f, cap * sizeof(*f));
        if (!f)
            return NULL;
        l->f = f;
        l->cap = cap;
    }
    return &l->f[l->n++];
}

/* Every event's fields, or -1. */
static int scan_batch(scan_t *s, size_t max_events, field_list_t *events, attr_list_t *attrs)
{
    if (!eat(s, '{'))
        return -1;
    skip_ws(s);
    char *name = string(s, 1, NULL);
    if (!name || strcmp(name, "events") != 0 || !eat(s, ':') || !eat(s, '['))
        return -1;
    s->out = name;
    do {
        fields_t *f = events->n < max_events ? next_fields(events) : NULL;
        if (!f || event_fields(s, attrs, f) != 0)
            return -1;
    } while (eat(s, ','));
    if (!eat(s, ']') || !eat(s, '}'))
        return -1;
    skip_ws(s);
    return s->p == s->end ? 0 : -1;
}

int fe_parse_json_batch_fast(const fe_parse_ctx_t *ctx, const char *body, size_t len, fe_batch_t *b)
{
    /* Nothing written is longer than what it was read from (a string's quotes make room
     * for its NUL), so the body's length bounds the arena. */
    char *arena = malloc(len + 1);
    scan_t s = {.p = body, .end = body + len, .out = arena};
    field_list_t events = {0};
    attr_list_t attrs = {0};
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    int ok = 0;
    memset(b, 0, sizeof(*b));
    if (!arena || !body || scan_batch(&s, ctx->max_events, &events, &attrs) != 0 ||
        fe_batch_init(b, events.n, attrs.n) != MSM_OK)
        goto done;
    b->accepted_ms = ctx->now_ms;
    b->list = "events";
    b->arena = arena;
    arena = NULL;
    for (size_t i = 0; i < attrs.n; i++) {
        Msm__V1__Event__AttributesEntry *a = &b->attr_entries[i];
        msm__v1__event__attributes_entry__init(a);
        a->key = (char *)attrs.kv[2 * i];
        a->value = (char *)attrs.kv[2 * i + 1];
        b->attr_ptrs[i] = a;
    }
    b->attr_used = attrs.n;
    for (size_t i = 0; i < events.n; i++) {
        fe_event_t *ev = &b->evs[i];
        if (events.f[i].attr_count) {
            ev->attrs = &b->attr_ptrs[events.f[i].attr_from];
            ev->n_attrs = events.f[i].attr_count;
        }
        event_check(ctx, b, &events.f[i], ev, &e, &big);
    }
    ok = msm_json_err_count(&e) == 0 && msm_json_err_count(&big) == 0;
    if (!ok)
        fe_batch_free(b);
done:
    free(arena);
    free(events.f);
    free(attrs.kv);
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    return ok;
}
