/* SPDX-License-Identifier: MIT */
/* POST /v1/topics/{topic}:publish, the JSON batch form of API.md: every event is validated
 * first (any error: 400 naming events[i].field, nothing published), then the pipeline
 * (pub_int.h) publishes all of them in one durable append. */
#include "pub_int.h"

#include "msm/err.h"
#include "msm/time.h"

#include <stdlib.h>
#include <string.h>

static void get_text(msm_json_err_t *e, msm_json_err_t *big, const json_t *ev,
                     const char *field, size_t max, const char **out)
{
    const char *v = NULL;
    if (msm_json_get_str(e, ev, field, MSM_JSON_NULLABLE, &v) == MSM_OK && v) {
        msm_json_check_text(e, big, field, v, max);
        *out = v;
    }
}

static void parse_attributes(msm_json_err_t *e, msm_json_err_t *big, const json_t *ev,
                             fe_batch_t *b, fe_event_t *out)
{
    json_t *attrs = NULL;
    if (msm_json_get_object(e, ev, "attributes", MSM_JSON_NULLABLE, &attrs) != MSM_OK || !attrs)
        return;
    msm_json_path_push_key(e, "attributes");
    msm_json_path_push_key(big, "attributes");
    const char *name;
    json_t *v;
    size_t count = 0;
    json_object_foreach(attrs, name, v) {
        if (!json_is_string(v)) {
            msm_json_err_add(e, name, "must be a string");
            continue;
        }
        fe_check_attr(e, big, name, name, json_string_value(v), count++);
        fe_batch_attr(b, out, name, json_string_value(v));
    }
    msm_json_path_pop(e);
    msm_json_path_pop(big);
}

/* data (any JSON) or data_base64 (+ content_type). */
static void parse_payload(const fe_parse_ctx_t *ctx, msm_json_err_t *e, msm_json_err_t *big,
                          const json_t *ev, int keep_json, fe_event_t *out)
{
    size_t limit = ctx->max_event_bytes;
    const json_t *data = json_object_get(ev, "data");
    const char *b64 = NULL;
    if (msm_json_get_str(e, ev, "data_base64", MSM_JSON_OPTIONAL, &b64) != MSM_OK)
        return;
    if (data && b64) {
        msm_json_err_add(e, "data_base64", "cannot be used with data");
        return;
    }
    if (!data && !b64) {
        msm_json_err_add(e, "data", "is required (or data_base64)");
        return;
    }
    if (out->content_type && data && !msm_json_media_type(out->content_type))
        msm_json_err_add(e, "content_type",
                         "must be application/json or a +json type when data is given");
    if (data) {
        if (!out->content_type)
            out->content_type = "application/json";
        fe_event_data(out, data, keep_json, limit, e, big);
        return;
    }
    fe_event_data_base64(out, b64, limit, e, big);
    if (!out->content_type)
        out->content_type = keep_json ? NULL : "application/octet-stream";
}

void fe_event_timing(msm_json_err_t *e,
                     int64_t now_ms,
                     int have_delay,
                     int64_t delay,
                     const char *deliver_at,
                     const char *deadline,
                     fe_event_t *out)
{
    if (deliver_at) {
        int64_t t;
        if (have_delay)
            msm_json_err_add(e, "deliver_at", "cannot be used with delay_ms");
        else if (msm_time_parse(deliver_at, &t) != MSM_OK)
            msm_json_err_add(e, "deliver_at", "must be an RFC 3339 date-time");
        else if (t < 0)
            msm_json_err_add(e, "deliver_at", "must not be before 1970-01-01T00:00:00Z");
        else
            out->deliver_at_ms = t;
    }
    if (delay >= 0)
        out->deliver_at_ms = now_ms + delay;
    if (deadline) {
        int64_t t;
        if (msm_time_parse(deadline, &t) != MSM_OK || t <= 0)
            msm_json_err_add(e, "deadline", "must be an RFC 3339 date-time after 1970");
        else
            out->deadline_ms = t;
        fe_check_deadline(e, "deadline", out);
    }
}

static void parse_timing(msm_json_err_t *e, const json_t *ev, int64_t now_ms, fe_event_t *out)
{
    int64_t delay = -1;
    const char *at = NULL, *dl = NULL;
    int have_delay = json_object_get(ev, "delay_ms") != NULL;
    msm_json_get_int(e, ev, "delay_ms", MSM_JSON_OPTIONAL, 0, FE_DELAY_MAX_MS, &delay);
    if (msm_json_get_str(e, ev, "deliver_at", MSM_JSON_OPTIONAL, &at) != MSM_OK)
        at = NULL;
    if (msm_json_get_str(e, ev, "deadline", MSM_JSON_NULLABLE, &dl) != MSM_OK)
        dl = NULL;
    fe_event_timing(e, now_ms, have_delay, delay, at, dl, out);
}

static void parse_event(const fe_parse_ctx_t *ctx, msm_json_err_t *e, msm_json_err_t *big,
                        const json_t *ev, int keep_json, fe_batch_t *b, fe_event_t *out)
{
    static const char *const known[] = {
        "data", "data_base64", "content_type", "key", "ordering_key", "attributes",
        "delay_ms", "deliver_at", "deadline", "idempotency_key", "priority", "traceparent",
        "tracestate", NULL};
    if (msm_json_expect_object(e, ev) != MSM_OK)
        return;
    msm_json_check_known(e, ev, known);
    get_text(e, big, ev, "key", FE_KEY_MAX_BYTES, &out->key);
    get_text(e, big, ev, "ordering_key", FE_KEY_MAX_BYTES, &out->ordering_key);
    get_text(e, big, ev, "idempotency_key", FE_IDEMPOTENCY_MAX_BYTES, &out->idempotency_key);
    const char *ct = NULL;
    if (msm_json_get_strn(e, ev, "content_type", MSM_JSON_NULLABLE | MSM_JSON_NONEMPTY,
                          FE_CONTENT_TYPE_MAX, &ct) == MSM_OK &&
        ct) {
        if (!fe_media_type_ok(ct))
            msm_json_err_add(e, "content_type", "must be a media type such as type/subtype");
        else
            out->content_type = ct;
    }
    parse_attributes(e, big, ev, b, out);
    int64_t prio = FE_DEFAULT_PRIORITY;
    msm_json_get_int(e, ev, "priority", MSM_JSON_NULLABLE, 0, 9, &prio);
    out->priority = (int)prio;
    const char *tp = NULL, *ts = NULL;
    msm_json_get_str(e, ev, "traceparent", MSM_JSON_NULLABLE, &tp);
    msm_json_get_str(e, ev, "tracestate", MSM_JSON_NULLABLE, &ts);
    fe_event_trace(b, out, e, "traceparent", tp, "tracestate", ts);
    parse_timing(e, ev, ctx->now_ms, out);
    parse_payload(ctx, e, big, ev, keep_json, out);
}

static size_t count_attributes(const json_t *events)
{
    size_t n = 0, i;
    const json_t *ev;
    json_array_foreach(events, i, ev) {
        n += json_object_size(json_object_get(ev, "attributes"));
    }
    return n;
}

int fe_parse_json_event(const fe_parse_ctx_t *ctx, json_t *event, int keep_json,
                        fe_batch_t *b, msm_json_err_t *e, msm_json_err_t *big)
{
    b->json = event;
    b->accepted_ms = ctx->now_ms;
    if (fe_batch_init(b, 1, json_object_size(json_object_get(event, "attributes"))) != MSM_OK) {
        msm_json_err_add(e, NULL, "out of memory");
        return 400;
    }
    parse_event(ctx, e, big, event, keep_json, b, &b->evs[0]);
    return msm_json_err_count(e) ? 400 : msm_json_err_count(big) ? 413 : 0;
}

int fe_parse_json_batch(const fe_parse_ctx_t *ctx, json_t *body, int keep_json,
                        fe_batch_t *b, msm_json_err_t *e, msm_json_err_t *big)
{
    static const char *const known[] = {"events", NULL};
    json_t *events = NULL;
    b->json = body;
    b->accepted_ms = ctx->now_ms;
    b->list = "events";
    if (msm_json_expect_object(e, body) == MSM_OK) {
        msm_json_check_known(e, body, known);
        msm_json_get_array(e, body, "events", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &events);
    }
    size_t n = json_array_size(events);
    if (n > ctx->max_events) {
        msm_json_err_add(big, "events", "at most %zu events per request", ctx->max_events);
        return 413;
    }
    if (msm_json_err_count(e))
        return 400;
    if (fe_batch_init(b, n, count_attributes(events)) != MSM_OK) {
        msm_json_err_add(e, NULL, "out of memory");
        return 400;
    }
    msm_json_path_push_key(e, "events");
    msm_json_path_push_key(big, "events");
    for (size_t i = 0; i < n; i++) {
        msm_json_path_push_index(e, i);
        msm_json_path_push_index(big, i);
        parse_event(ctx, e, big, json_array_get(events, i), keep_json, b, &b->evs[i]);
        msm_json_path_pop(e);
        msm_json_path_pop(big);
    }
    msm_json_path_pop(e);
    msm_json_path_pop(big);
    /* A malformed request is 400 even when it is also too large: fix the form first. */
    return msm_json_err_count(e) ? 400 : msm_json_err_count(big) ? 413 : 0;
}

/* ---- the route ---- */

static void on_done(fe_pub_t *p, int status, json_t *error)
{
    if (status == 200)
        fe_call_json(&p->base, 200, fe_pub_results(p));
    else
        fe_call_json(&p->base, status, error);
}

static void publish(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    uint64_t start_us = msm_time_mono_us();
    const char *topic = msm_http_req_param(req, "topic"), *subject = NULL;
    if (!msm_name_valid(topic) || !fe_topic_lookup(fe, topic, &subject)) {
        fe_pub_count(fe, "", "not_found", 0, start_us); /* no label per unknown name */
        fe_not_found(req, "topic", topic);
        return;
    }
    fe_parse_ctx_t ctx = fe_parse_ctx(fe);
    fe_batch_t b = {0};
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    size_t len;
    const char *raw = msm_http_req_body(req, &len);
    if (!subject && fe_parse_json_batch_fast(&ctx, raw, len, &b)) {
        fe_pub_run(fe, req, topic, subject, on_done, start_us, 0, &b, &e, &big, b.n);
        return;
    }
    json_t *body;
    if (fe_parse_body(req, 0, &body) != 0) {
        msm_json_err_deinit(&e);
        msm_json_err_deinit(&big);
        fe_pub_count(fe, topic, "invalid", 0, start_us);
        return;
    }
    size_t events = json_array_size(json_object_get(body, "events"));
    int status = fe_parse_json_batch(&ctx, body, subject != NULL, &b, &e, &big);
    fe_pub_run(fe, req, topic, subject, on_done, start_us, status, &b, &e, &big, events);
}

int fe_publish_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"POST", "/v1/topics/{topic}:publish", publish},
        {"POST", "/v1/topics/{topic}/events", fe_publish_single},
        {"POST", "/v1/publish", fe_publish_pb},
    };
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]),
                                  fe);
}
