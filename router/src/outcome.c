/* SPDX-License-Identifier: MIT */
/* Outcomes: each finished delivery becomes a msm.v1.DeliveryOutcome; a subscription's
 * outcomes go to status.<sub> as ONE msm.v1.OutcomeBatch record (key = subscription) per
 * loop turn, or, while its previous append is in flight, once that one is answered (group
 * commit: no wait at low load, larger records under load), and a dispatch record is
 * acknowledged only once the outcomes of all its tasks are durable. A failed append is retried with backoff, never dropped: until then
 * the records stay unacknowledged. */
#include "rt_int.h"

#include "msm/backoff.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdlib.h>
#include <string.h>

#define APPEND_RETRY_MIN_MS 100
#define APPEND_RETRY_MAX_MS 2000
#define HELD_MAX            4096 /* outcomes held behind an append in flight, at most */

static const char *const kind_names[RT_KINDS] = {"unspecified", "success", "retriable",
                                                 "fatal", "not_pushed"};

void msm__rt_finish(router_t *rt, rt_delivery_t *d, Msm__V1__OutcomeKind kind, int http_status,
                    const char *error, int64_t latency_ms, int64_t retry_after_ms)
{
    (void)rt;
    rt_sub_t *sub = d->sub;
    d->kind = kind;
    d->http_status = http_status;
    snprintf(d->error, sizeof(d->error), "%s", error ? error : "");
    d->latency_ms = latency_ms;
    d->retry_after_ms = retry_after_ms;
    d->finished_at_ms = msm_time_unix_ms();
    if (kind >= 0 && kind < RT_KINDS)
        msm_counter_inc(sub->m_kind[kind]);
    if (kind != MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED)
        msm_histogram_observe(sub->m_latency, (double)latency_ms / 1000.0);
    msm__rt_canary_observe(sub, d->endpoint, kind, latency_ms);
    msm_log(MSM_LOG_DEBUG, RT_FACILITY, "sub=%s event=%s attempt=%d %s status=%d %s",
            sub->name, d->task->event->id, d->task->attempt,
            kind >= 0 && kind < RT_KINDS ? kind_names[kind] : "?", http_status, d->error);
    if (d->span) {
        char attempt[16], status[16];
        snprintf(attempt, sizeof(attempt), "%d", d->task->attempt);
        snprintf(status, sizeof(status), "%d", http_status);
        msm_log_field_t f[] = {
            {"subscription", sub->name}, {"event_id", d->task->event->id},
            {"attempt", attempt}, {"outcome", kind >= 0 && kind < RT_KINDS ? kind_names[kind] : "?"},
            {"http_status", status}, {"endpoint", d->endpoint}};
        msm_span_end(d->span, "router", "push", f, 6);
        free(d->span);
        d->span = NULL;
    }
    d->next = NULL;
    if (sub->finished_tail)
        sub->finished_tail->next = d;
    else
        sub->finished = d;
    sub->finished_tail = d;
    sub->nfinished++;
}

/* ---- packing ---- */

static int scratch_reserve(router_t *rt, size_t n)
{
    if (n <= rt->outs_cap)
        return MSM_OK;
    Msm__V1__DeliveryOutcome *outs = realloc(rt->outs, n * sizeof(*outs));
    if (!outs)
        return MSM_ERR_NOMEM;
    rt->outs = outs;
    Msm__V1__DeliveryOutcome **ptrs = realloc(rt->out_ptrs, n * sizeof(*ptrs));
    if (!ptrs)
        return MSM_ERR_NOMEM;
    rt->out_ptrs = ptrs;
    rt->outs_cap = n;
    return MSM_OK;
}

/* The batch's OutcomeBatch into rt->packed (the append copies it). */
static int pack(router_t *rt, const rt_batch_t *b)
{
    if (scratch_reserve(rt, b->n) != MSM_OK)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < b->n; i++) {
        const rt_delivery_t *d = b->items[i];
        Msm__V1__DeliveryOutcome *o = &rt->outs[i];
        msm__v1__delivery_outcome__init(o);
        o->event_id = d->task->event->id;
        o->subscription = d->sub->name;
        o->attempt = d->task->attempt;
        o->kind = d->kind;
        o->http_status = d->http_status;
        o->error = (char *)d->error;
        o->latency_ms = d->latency_ms;
        o->retry_after_ms = d->retry_after_ms;
        o->endpoint = (char *)d->endpoint;
        o->finished_at_ms = d->finished_at_ms;
        rt->out_ptrs[i] = o;
    }
    Msm__V1__OutcomeBatch ob = MSM__V1__OUTCOME_BATCH__INIT;
    ob.n_outcomes = b->n;
    ob.outcomes = rt->out_ptrs;
    return msm_pb_pack(&ob.base, &rt->packed);
}

/* ---- batches ---- */

static void batch_send(rt_batch_t *b);

static void batch_unlink(router_t *rt, rt_batch_t *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        rt->batches = b->next;
    if (b->next)
        b->next->prev = b->prev;
}

static void batch_free(rt_batch_t *b)
{
    free(b->items);
    free(b);
}

static void on_retry_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    batch_send(opaque);
}

static void batch_retry_later(rt_batch_t *b, const char *why)
{
    router_t *rt = b->rt;
    b->failures++;
    msm_counter_inc(rt->m_append_failures);
    uint64_t delay = msm_backoff_cap_ms(b->failures, APPEND_RETRY_MIN_MS, APPEND_RETRY_MAX_MS);
    msm_log(MSM_LOG_WARN, RT_FACILITY,
            "appending %zu outcomes to %s failed (%s): retrying in %llu ms", b->n,
            b->sub->status_stream, why, (unsigned long long)delay);
    msm_loop_timer_start(rt->env.loop, &b->retry_timer, delay, on_retry_timer, b);
}

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    rt_batch_t *b = opaque;
    b->appending = 0;
    router_t *rt = b->rt;
    if (!rt) {
        batch_free(b); /* orphaned: its deliveries went with the router */
        return;
    }
    b->sub->status_appending--; /* what waited behind it leaves before the loop sleeps */
    if (err != MSM_OK && !b->sub->conf) {
        /* The subscription is deleted (its streams with it): nobody will read these. */
        msm_log(MSM_LOG_INFO, RT_FACILITY, "%zu outcomes of deleted %s dropped", b->n,
                b->sub->name);
        batch_unlink(rt, b);
        for (size_t i = 0; i < b->n; i++)
            msm__rt_delivery_done(rt, b->items[i], 0);
        batch_free(b);
        return;
    }
    if (err != MSM_OK) {
        batch_retry_later(b, reason ? reason : msm_err_str(err));
        return;
    }
    batch_unlink(rt, b);
    /* Durable now; the last outcome of a record acknowledges it (this may free the sub). */
    for (size_t i = 0; i < b->n; i++)
        msm__rt_delivery_done(rt, b->items[i], 1);
    batch_free(b);
}

static void batch_send(rt_batch_t *b)
{
    router_t *rt = b->rt;
    if (pack(rt, b) != MSM_OK) {
        batch_retry_later(b, "out of memory");
        return;
    }
    msm_record_t rec = {.key = b->sub->name,
                        .key_len = strlen(b->sub->name),
                        .value = rt->packed.data,
                        .value_len = rt->packed.len};
    b->appending = 1;
    b->sub->status_appending++;
    int rc = msm_stream_append(rt->env.stream, b->sub->status_stream, &rec, 1, on_appended, b);
    if (rc != MSM_OK) {
        b->appending = 0;
        b->sub->status_appending--;
        batch_retry_later(b, msm_err_str(rc));
    }
}

/* One status.<sub> record for what @p sub finished this turn. */
static void flush_sub(router_t *rt, rt_sub_t *sub)
{
    rt_batch_t *b = calloc(1, sizeof(*b));
    rt_delivery_t **items = malloc(sub->nfinished * sizeof(*items));
    if (!b || !items) {
        free(b);
        free(items);
        return; /* the outcomes wait for the next turn */
    }
    b->rt = rt;
    b->sub = sub;
    b->items = items;
    msm_timer_init(&b->retry_timer);
    for (rt_delivery_t *d = sub->finished; d; d = d->next)
        b->items[b->n++] = d;
    sub->finished = sub->finished_tail = NULL;
    sub->nfinished = 0;
    b->next = rt->batches;
    if (rt->batches)
        rt->batches->prev = b;
    rt->batches = b;
    batch_send(b);
}

void msm__rt_flush(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    router_t *rt = opaque;
    for (rt_sub_t *sub = rt->subs; sub; sub = sub->next) {
        if (sub->finished && (!sub->status_appending || sub->nfinished >= HELD_MAX))
            flush_sub(rt, sub);
    }
}

void msm__rt_batches_abandon(router_t *rt)
{
    while (rt->batches) {
        rt_batch_t *b = rt->batches;
        rt->batches = b->next;
        msm_loop_timer_stop(rt->env.loop, &b->retry_timer);
        if (b->appending)
            b->rt = NULL; /* the append's callback frees it */
        else
            batch_free(b);
    }
}
