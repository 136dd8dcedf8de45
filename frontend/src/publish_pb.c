/* SPDX-License-Identifier: MIT */
/* POST /v1/publish: the publish RPC for compiled clients. The body is an
 * msm.v1.PublishRequest (application/x-protobuf), the answer an msm.v1.PublishResponse;
 * errors are API.md's JSON body with the right status, as everywhere. */
#include "pub_int.h"

#include "msm/err.h"
#include "msm/time.h"
#include "msm/v1/publish.pb-c.h"

#include <stdlib.h>
#include <string.h>

#define PROTOBUF_TYPE "application/x-protobuf"

static void parse_event(const fe_parse_ctx_t *ctx, const Msm__V1__PublishEvent *pe,
                        fe_batch_t *b, fe_event_t *ev, msm_json_err_t *e, msm_json_err_t *big)
{
    msm_json_check_text(e, big, "key", pe->key, FE_KEY_MAX_BYTES);
    msm_json_check_text(e, big, "ordering_key", pe->ordering_key, FE_KEY_MAX_BYTES);
    msm_json_check_text(e, big, "idempotency_key", pe->idempotency_key, FE_IDEMPOTENCY_MAX_BYTES);
    ev->key = pe->key;
    ev->ordering_key = pe->ordering_key;
    ev->idempotency_key = pe->idempotency_key;
    if (*pe->content_type) {
        if (strlen(pe->content_type) > FE_CONTENT_TYPE_MAX || !fe_media_type_ok(pe->content_type))
            msm_json_err_add(e, "content_type", "must be a media type such as type/subtype");
        else
            ev->content_type = pe->content_type;
    }
    msm_json_path_push_key(e, "attributes");
    msm_json_path_push_key(big, "attributes");
    for (size_t i = 0; i < pe->n_attributes; i++) {
        fe_check_attr(e, big, pe->attributes[i]->key, pe->attributes[i]->key,
                      pe->attributes[i]->value, i);
        fe_batch_attr(b, ev, pe->attributes[i]->key, pe->attributes[i]->value);
    }
    msm_json_path_pop(e);
    msm_json_path_pop(big);
    if (pe->priority_set_case == MSM__V1__PUBLISH_EVENT__PRIORITY_SET_PRIORITY) {
        if (pe->priority < 0 || pe->priority > 9)
            msm_json_err_add(e, "priority", "must be from 0 to 9");
        else
            ev->priority = pe->priority;
    }
    if (pe->delay_ms < 0 || pe->delay_ms > FE_DELAY_MAX_MS)
        msm_json_err_add(e, "delay_ms", "must be from 0 to %lld", (long long)FE_DELAY_MAX_MS);
    else if (pe->delay_ms)
        ev->deliver_at_ms = ctx->now_ms + pe->delay_ms;
    if (pe->deliver_at_ms < 0)
        msm_json_err_add(e, "deliver_at_ms", "must not be negative");
    else if (pe->deliver_at_ms)
        ev->deliver_at_ms = pe->deliver_at_ms; /* wins over delay_ms */
    if (pe->deadline_ms < 0)
        msm_json_err_add(e, "deadline_ms", "must not be negative");
    else
        ev->deadline_ms = pe->deadline_ms;
    fe_check_deadline(e, "deadline_ms", ev);
    fe_event_trace(b, ev, e, "traceparent", *pe->traceparent ? pe->traceparent : NULL,
                   "tracestate", *pe->tracestate ? pe->tracestate : NULL);
    ev->payload = pe->payload.data ? pe->payload.data : (const uint8_t *)"";
    ev->payload_len = pe->payload.len;
    ev->data_field = "payload";
    if (pe->payload.len > ctx->max_event_bytes)
        msm_json_err_add(big, "payload", "exceeds the limit of %zu bytes", ctx->max_event_bytes);
}

int fe_parse_pb_batch(const fe_parse_ctx_t *ctx, const uint8_t *data, size_t len,
                      fe_batch_t *b, const char **topic, msm_json_err_t *e,
                      msm_json_err_t *big)
{
    Msm__V1__PublishRequest *pr = msm__v1__publish_request__unpack(NULL, len, data);
    if (!pr) {
        msm_json_err_add(e, NULL, "not a valid msm.v1.PublishRequest (protobuf wire format)");
        return 400;
    }
    b->pb = pr;
    b->accepted_ms = ctx->now_ms;
    b->list = "events";
    *topic = pr->topic;
    if (!*pr->topic)
        msm_json_err_add(e, "topic", "is required");
    if (pr->n_events == 0) {
        msm_json_err_add(e, "events", "must not be empty");
        return 400;
    }
    if (pr->n_events > ctx->max_events) {
        msm_json_err_add(big, "events", "at most %zu events per request", ctx->max_events);
        return 413;
    }
    size_t nattrs = 0;
    for (size_t i = 0; i < pr->n_events; i++)
        nattrs += pr->events[i]->n_attributes;
    if (fe_batch_init(b, pr->n_events, nattrs) != MSM_OK) {
        msm_json_err_add(e, NULL, "out of memory");
        return 400;
    }
    msm_json_path_push_key(e, "events");
    msm_json_path_push_key(big, "events");
    for (size_t i = 0; i < pr->n_events; i++) {
        msm_json_path_push_index(e, i);
        msm_json_path_push_index(big, i);
        parse_event(ctx, pr->events[i], b, &b->evs[i], e, big);
        msm_json_path_pop(e);
        msm_json_path_pop(big);
    }
    msm_json_path_pop(e);
    msm_json_path_pop(big);
    return msm_json_err_count(e) ? 400 : msm_json_err_count(big) ? 413 : 0;
}

/* ---- the route ---- */

static void on_done(fe_pub_t *p, int status, json_t *error)
{
    if (status != 200) {
        fe_call_json(&p->base, status, error);
        return;
    }
    size_t n = p->batch.n;
    Msm__V1__PublishResult *results = calloc(n, sizeof(*results));
    Msm__V1__PublishResult **ptrs = calloc(n, sizeof(*ptrs));
    Msm__V1__PublishResponse resp = MSM__V1__PUBLISH_RESPONSE__INIT;
    uint8_t *buf = NULL;
    if (results && ptrs) {
        for (size_t i = 0; i < n; i++) {
            msm__v1__publish_result__init(&results[i]);
            results[i].id = p->ids[i];
            results[i].duplicate = p->dup[i];
            ptrs[i] = &results[i];
        }
        resp.n_results = n;
        resp.results = ptrs;
        buf = malloc(msm__v1__publish_response__get_packed_size(&resp) + 1);
    }
    if (!buf) {
        free(results);
        free(ptrs);
        fe_call_error(&p->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    size_t len = msm__v1__publish_response__pack(&resp, buf);
    free(results);
    free(ptrs);
    fe_call_bytes(&p->base, 200, PROTOBUF_TYPE, buf, len);
    free(buf);
}

void fe_publish_pb(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    uint64_t start_us = msm_time_mono_us();
    const char *ct = msm_http_req_header(req, "Content-Type");
    if (!ct || !fe_same_media_type(ct, PROTOBUF_TYPE)) {
        msm_http_respond_error(req, 415, "UNSUPPORTED_MEDIA_TYPE",
                               "POST /v1/publish takes an application/x-protobuf "
                               "msm.v1.PublishRequest", NULL);
        fe_pub_count(fe, "", "unsupported", 0, start_us);
        return;
    }
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    fe_parse_ctx_t ctx = fe_parse_ctx(fe);
    fe_batch_t b = {0};
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    const char *topic = NULL, *subject = NULL;
    int status = fe_parse_pb_batch(&ctx, (const uint8_t *)body, len, &b, &topic, &e, &big);
    if (status == 0 && (!msm_name_valid(topic) || !fe_topic_lookup(fe, topic, &subject))) {
        fe_pub_count(fe, "", "not_found", 0, start_us);
        fe_not_found(req, "topic", topic);
        fe_batch_free(&b);
        msm_json_err_deinit(&e);
        msm_json_err_deinit(&big);
        return;
    }
    /* A failure is counted under the topic only when it exists (no label per bad name). */
    const char *label = topic && msm_name_valid(topic) && fe_topic_exists(fe, topic) ? topic : "";
    fe_pub_run(fe, req, status ? label : topic, subject, on_done, start_us, status, &b, &e,
               &big, b.n);
}
