/* SPDX-License-Identifier: MIT */
/* Trace context of published events (docs/tracing.md). Each event's traceparent is its own
 * (body field, CloudEvents extension), else the request's traceparent header, else a new
 * trace, sampled at trace.sample_ratio. A sampled context gets a span of the frontend: one
 * for the request under its header, one per event under the event's own or as the root of
 * a new trace. The spans are logged once the events are durable. */
#include "pub_int.h"

#include "msm/backoff.h"
#include "msm/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fe_event_trace(fe_batch_t *b, fe_event_t *ev, msm_json_err_t *e, const char *field,
                    const char *traceparent, const char *state_field, const char *tracestate)
{
    if (traceparent) {
        if (!msm_traceparent_valid(traceparent))
            msm_json_err_add(e, field, "must be a W3C traceparent "
                             "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)");
        else
            ev->traceparent = fe_batch_keep(b, traceparent, strlen(traceparent));
    }
    if (tracestate) {
        if (strlen(tracestate) > 512 || msm_json_has_control_chars(tracestate))
            msm_json_err_add(e, state_field, "must be a W3C tracestate of at most 512 bytes");
        else if (!traceparent)
            msm_json_err_add(e, state_field, "needs a traceparent");
        else
            ev->tracestate = fe_batch_keep(b, tracestate, strlen(tracestate));
    }
}

/* tps[i] := @p tp (its first MSM_TRACEPARENT_LEN characters: a later version's extra fields
 * are not kept, as a hop that does not change the context may drop them). */
static void keep_tp(fe_pub_t *p, size_t i, const char *tp)
{
    memcpy(p->tps[i], tp, MSM_TRACEPARENT_LEN);
    p->tps[i][MSM_TRACEPARENT_LEN] = '\0';
}

/* A span for event i under @p parent (NULL: the root of a new trace); it covers the request. */
static void event_span(fe_pub_t *p, size_t i, const char *parent)
{
    msm_span_t *s = msm_spans_start(&p->spans, p->batch.n, i, parent);
    if (s) {
        s->start_us = p->start_us;
        keep_tp(p, i, s->tp);
    } else if (parent) {
        keep_tp(p, i, parent); /* out of memory: passed on, not traced here */
    } else {
        msm_traceparent_new(p->tps[i], 0);
    }
}

int fe_pub_trace_begin(fe_pub_t *p, double sample_ratio)
{
    const fe_batch_t *b = &p->batch;
    if (!(p->tps = malloc(b->n * sizeof(*p->tps))))
        return MSM_ERR_NOMEM;
    if (b->traceparent && msm_span_start(&p->req_span, b->traceparent)) {
        p->req_span.start_us = p->start_us;
        p->has_req_span = 1;
    }
    for (size_t i = 0; i < b->n; i++) {
        const fe_event_t *ev = &b->evs[i];
        if (ev->traceparent)
            event_span(p, i, ev->traceparent);
        else if (b->traceparent)
            keep_tp(p, i, p->has_req_span ? p->req_span.tp : b->traceparent);
        else if (sample_ratio > 0 && msm_rand_double() < sample_ratio)
            event_span(p, i, NULL);
        else
            msm_traceparent_new(p->tps[i], 0);
    }
    return MSM_OK;
}

void fe_pub_trace_end(const fe_pub_t *p)
{
    char count[24];
    if (p->has_req_span) {
        snprintf(count, sizeof(count), "%zu", p->batch.n);
        msm_log_field_t f[] = {{"topic", p->topic}, {"events", count}};
        msm_span_end(&p->req_span, "frontend", "publish", f, 2);
    }
    for (size_t i = 0; p->spans.started && i < p->batch.n; i++) {
        const msm_span_t *s = msm_spans_get(&p->spans, i);
        if (s && !p->dup[i]) {
            msm_log_field_t f[] = {{"topic", p->topic}, {"event_id", p->ids[i]}};
            msm_span_end(s, "frontend", "publish", f, 2);
        }
    }
}
