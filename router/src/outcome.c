/* SPDX-License-Identifier: MIT */
/* Outcomes: each finished delivery becomes a msm.v1.DeliveryOutcome; those finished in one
 * loop turn go to "status" in one append (key = subscription), and their dispatch entries
 * are acknowledged only when that append is durable. A failed append is retried with
 * backoff, never dropped: until then the entries stay unacknowledged. */
#include "rt_int.h"

#include "msm/backoff.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdlib.h>
#include <string.h>

#define APPEND_RETRY_MIN_MS 100
#define APPEND_RETRY_MAX_MS 2000

static const char *const kind_names[RT_KINDS] = {"unspecified", "success", "retriable",
                                                 "fatal"};

static int pack(rt_delivery_t *d)
{
    Msm__V1__DeliveryOutcome o = MSM__V1__DELIVERY_OUTCOME__INIT;
    o.event_id = d->task->event->id;
    o.subscription = d->sub->name;
    o.attempt = d->task->attempt;
    o.kind = d->kind;
    o.http_status = d->http_status;
    o.error = d->error ? d->error : "";
    o.latency_ms = d->latency_ms;
    o.retry_after_ms = d->retry_after_ms;
    o.endpoint = d->endpoint ? d->endpoint : "";
    o.finished_at_ms = d->finished_at_ms;
    int rc = msm_pb_pack(&o.base, &d->packed);
    if (rc != MSM_OK)
        d->packed.len = 0; /* packed again before the append */
    return rc;
}

void msm__rt_finish(router_t *rt, rt_delivery_t *d, Msm__V1__OutcomeKind kind, int http_status,
                    const char *error, int64_t latency_ms, int64_t retry_after_ms)
{
    d->kind = kind;
    d->http_status = http_status;
    d->error = strdup(error ? error : "");
    d->latency_ms = latency_ms;
    d->retry_after_ms = retry_after_ms;
    d->finished_at_ms = msm_time_unix_ms();
    (void)pack(d); /* a failure is retried by batch_send() */
    if (kind >= 0 && kind < RT_KINDS)
        msm_counter_inc(d->sub->m_kind[kind]);
    msm_histogram_observe(d->sub->m_latency, (double)latency_ms / 1000.0);
    msm_log(MSM_LOG_DEBUG, RT_FACILITY, "sub=%s event=%s attempt=%d %s status=%d %s",
            d->sub->name, d->task->event->id, d->task->attempt,
            kind >= 0 && kind < RT_KINDS ? kind_names[kind] : "?", http_status,
            d->error ? d->error : "");
    msm__rt_list_push(&rt->finished, d);
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

/* Frees a batch whose router is gone: its entries were never acknowledged. */
static void batch_free_orphan(rt_batch_t *b)
{
    while (b->items) {
        rt_delivery_t *d = b->items;
        b->items = d->next;
        msm__rt_delivery_free(d);
    }
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
            "appending %zu outcomes to status failed (%s): retrying in %llu ms", b->n, why,
            (unsigned long long)delay);
    msm_loop_timer_start(rt->env.loop, &b->retry_timer, delay, on_retry_timer, b);
}

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    rt_batch_t *b = opaque;
    b->appending = 0;
    router_t *rt = b->rt;
    if (!rt) {
        batch_free_orphan(b);
        return;
    }
    if (err != MSM_OK) {
        batch_retry_later(b, reason ? reason : msm_err_str(err));
        return;
    }
    batch_unlink(rt, b);
    while (b->items) {
        rt_delivery_t *d = b->items;
        b->items = d->next;
        msm_consumer_ack(d->sub->consumer, d->msg); /* durable now: the entry is done */
        d->msg = NULL;
        msm__rt_delivery_release(rt, d);
    }
    free(b);
}

static void batch_send(rt_batch_t *b)
{
    router_t *rt = b->rt;
    for (rt_delivery_t *d = b->items; d; d = d->next) {
        if (d->packed.len == 0 && pack(d) != MSM_OK) {
            batch_retry_later(b, "out of memory");
            return;
        }
    }
    msm_record_t *recs = calloc(b->n, sizeof(*recs));
    if (!recs) {
        batch_retry_later(b, "out of memory");
        return;
    }
    size_t i = 0;
    for (rt_delivery_t *d = b->items; d; d = d->next, i++) {
        recs[i] = (msm_record_t){.key = d->sub->name,
                                 .key_len = strlen(d->sub->name),
                                 .value = d->packed.data,
                                 .value_len = d->packed.len};
    }
    b->appending = 1;
    int rc = msm_stream_append(rt->env.stream, MSM_STREAM_STATUS, recs, b->n, on_appended, b);
    free(recs);
    if (rc != MSM_OK) {
        b->appending = 0;
        batch_retry_later(b, msm_err_str(rc));
    }
}

void msm__rt_flush(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    router_t *rt = opaque;
    if (!rt->finished)
        return;
    rt_batch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return; /* the outcomes wait for the next turn */
    b->rt = rt;
    msm_timer_init(&b->retry_timer);
    /* The finished list is newest first; reverse it so outcomes go out in finishing order. */
    while (rt->finished) {
        rt_delivery_t *d = rt->finished;
        msm__rt_list_remove(&rt->finished, d);
        d->prev = NULL;
        d->next = b->items;
        b->items = d;
        b->n++;
    }
    b->next = rt->batches;
    if (rt->batches)
        rt->batches->prev = b;
    rt->batches = b;
    batch_send(b);
}

void msm__rt_batches_abandon(router_t *rt)
{
    while (rt->batches) {
        rt_batch_t *b = rt->batches;
        rt->batches = b->next;
        msm_loop_timer_stop(rt->env.loop, &b->retry_timer);
        for (rt_delivery_t *d = b->items; d; d = d->next) {
            d->sub = NULL;
            d->msg = NULL;
        }
        if (b->appending)
            b->rt = NULL; /* the append's callback frees it */
        else
            batch_free_orphan(b);
    }
}
