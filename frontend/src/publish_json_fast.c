/* SPDX-License-Identifier: MIT */
/* The JSON batch publish without a JSON tree: one pass over the body that validates it as
 * strictly as jansson does, copies each event's "data" compacted into one arena and decodes
 * the other fields there. It accepts only what it fully understands and what the full parser
 * (publish_json.c) would accept too; for anything else (an error to report, an unusual
 * field or form) it gives up and the full parser decides, so answers stay the full parser's.
 * The scanning itself is msm/json_scan.h's, without its jansson-form options: "data" keeps
 * its numbers and escapes as written.
 * Measured: parsing a batch into a jansson tree and printing each "data" back was over half
 * of the frontend's CPU per event. */
#include "pub_int.h"

#include "msm/err.h"
#include "msm/json_scan.h"

#include <stdlib.h>
#include <string.h>

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

static int attributes(msm_json_scan_t *s, attr_list_t *attrs, fields_t *f)
{
    f->attr_from = attrs->n;
    size_t count = 0;
    char *name;
    int rc;
    while ((rc = msm_json_scan_member(s, &count, &name)) == 1) {
        char *v = msm_json_scan_string(s, 1, NULL);
        if (!v)
            return -1;
        for (size_t i = f->attr_from; i < attrs->n; i++) {
            if (strcmp(attrs->kv[2 * i], name) == 0)
                return -1;
        }
        if (attr_add(attrs, name, v) != 0)
            return -1;
    }
    f->attr_count = attrs->n - f->attr_from;
    return rc;
}

/* The members of one event object into @p f. */
static int event_fields(msm_json_scan_t *s, attr_list_t *attrs, fields_t *f)
{
    unsigned seen = 0;
    memset(f, 0, sizeof(*f));
    f->delay = -1;
    f->priority = FE_DEFAULT_PRIORITY;
    size_t count = 0;
    char *name;
    int rc;
    while ((rc = msm_json_scan_member(s, &count, &name)) == 1) {
        int i = field_index(name);
        if (i < 0 || (seen & (1u << i)))
            return -1;
        s->out = name; /* the name is not kept */
        seen |= 1u << i;
        if (i == F_DATA) {
            f->data = s->out;
            if (msm_json_scan_value(s, 0) != 0)
                return -1;
            f->data_len = (size_t)(s->out - f->data);
        } else if (i == F_ATTRIBUTES) {
            if (attributes(s, attrs, f) != 0)
                return -1;
        } else if (i == F_DELAY_MS || i == F_PRIORITY) {
            if (msm_json_scan_number(s, i == F_DELAY_MS ? &f->delay : &f->priority) != 0)
                return -1;
        } else if (!(f->text[i] = msm_json_scan_string(s, 1, NULL))) {
            return -1;
        }
    }
    return rc == 0 && f->data ? 0 : -1;
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
static int
scan_batch(msm_json_scan_t *s, size_t max_events, field_list_t *events, attr_list_t *attrs)
{
    if (!msm_json_scan_eat(s, '{'))
        return -1;
    char *name = msm_json_scan_name(s);
    if (!name || strcmp(name, "events") != 0 || !msm_json_scan_eat(s, '['))
        return -1;
    s->out = name;
    do {
        fields_t *f = events->n < max_events ? next_fields(events) : NULL;
        if (!f || event_fields(s, attrs, f) != 0)
            return -1;
    } while (msm_json_scan_eat(s, ','));
    if (!msm_json_scan_eat(s, ']') || !msm_json_scan_eat(s, '}'))
        return -1;
    msm_json_scan_ws(s);
    return s->p == s->end ? 0 : -1;
}

int fe_parse_json_batch_fast(const fe_parse_ctx_t *ctx, const char *body, size_t len, fe_batch_t *b)
{
    /* Nothing written is longer than what it was read from (a string's quotes make room
     * for its NUL), so the body's length bounds the arena. */
    char *arena = malloc(len + 1);
    msm_json_scan_t s = {
        .p = body, .end = body + len, .out = arena, .out_end = arena ? arena + len + 1 : NULL};
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
