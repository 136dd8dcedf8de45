/* SPDX-License-Identifier: MIT */
/* The fast JSON batch parser against the full one: same events, field by field; payloads
 * equal as JSON (the fast parser keeps numbers as written, the full one prints them back). */
#include "fast_parse_check.h"

#include "pub_int.h"

#include <stdio.h>
#include <string.h>

static int same_text(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int same_payload(const fe_event_t *a, const fe_event_t *b)
{
    json_t *ja = json_loadb((const char *)a->payload, a->payload_len, JSON_DECODE_ANY, NULL);
    json_t *jb = json_loadb((const char *)b->payload, b->payload_len, JSON_DECODE_ANY, NULL);
    int same = ja && jb && json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    return same;
}

static const char *event_differs(const fe_event_t *f, const fe_event_t *s)
{
    if (!same_text(f->key, s->key) || !same_text(f->ordering_key, s->ordering_key) ||
        !same_text(f->idempotency_key, s->idempotency_key))
        return "keys";
    if (!same_text(f->content_type, s->content_type))
        return "content_type";
    if (f->n_attrs != s->n_attrs)
        return "attribute count";
    for (size_t a = 0; a < f->n_attrs; a++) {
        if (strcmp(f->attrs[a]->key, s->attrs[a]->key) != 0 ||
            strcmp(f->attrs[a]->value, s->attrs[a]->value) != 0)
            return "attributes";
    }
    if (f->priority != s->priority || f->deliver_at_ms != s->deliver_at_ms ||
        f->deadline_ms != s->deadline_ms)
        return "priority or times";
    if (!same_text(f->traceparent, s->traceparent) || !same_text(f->tracestate, s->tracestate))
        return "trace context";
    if (!same_text(f->data_field, s->data_field) || !same_payload(f, s))
        return "payload";
    return NULL;
}

fast_verdict_t fast_parse_check(const char *body, size_t len, char *why, size_t why_size)
{
    fe_parse_ctx_t ctx = {.max_events = 50, .max_event_bytes = 4096, .now_ms = 1700000000000};
    fe_batch_t fast = {0}, full = {0};
    if (!fe_parse_json_batch_fast(&ctx, body, len, &fast))
        return FAST_DECLINED;
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    json_t *tree = msm_json_parse(body, len, &e);
    int status = tree ? fe_parse_json_batch(&ctx, tree, 0, &full, &e, &big) : 400;
    fast_verdict_t v = FAST_AGREES;
    if (status != 0) {
        snprintf(why, why_size, "the full parser answers %d", status);
        v = FAST_DIFFERS;
    } else if (full.n != fast.n) {
        snprintf(why, why_size, "%zu events, the full parser %zu", fast.n, full.n);
        v = FAST_DIFFERS;
    }
    for (size_t i = 0; v == FAST_AGREES && i < fast.n; i++) {
        const char *what = event_differs(&fast.evs[i], &full.evs[i]);
        if (what) {
            snprintf(why, why_size, "events[%zu]: %s differ", i, what);
            v = FAST_DIFFERS;
        }
    }
    if (status == 0)
        fe_batch_free(&full);
    fe_batch_free(&fast);
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    return v;
}
