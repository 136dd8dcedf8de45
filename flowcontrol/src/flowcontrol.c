/* SPDX-License-Identifier: MIT */
/* The flowcontrol daemon's core: watches the registry and keeps one engine per subscription
 * (sub.c), each competing for its ownership (own.c); runs every owned subscription's turn
 * before the loop sleeps (one dispatch record, one pipeline); readiness, stop and drain. */
#include "fc_int.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const fc_kind_names[FC_KIND_COUNT] = {"success", "retriable", "fatal", "not_pushed"};

int64_t fc_now_ms(void)
{
    return msm_time_unix_ms();
}

/* ---- calls in flight ---- */

fc_call_t *fc_call_new(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    fc_call_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->fc = fc;
    c->sub = sub;
    c->gen = sub->own_gen;
    fc_sub_keep(sub);
    c->next = fc->calls;
    if (fc->calls)
        fc->calls->prev = c;
    fc->calls = c;
    fc->ncalls++;
    return c;
}

fc_sub_t *fc_call_take(fc_call_t *c)
{
    int same = 0;
    fc_sub_t *sub = fc_call_sub(c, &same);
    fc_call_free(c);
    if (sub && (!same || !sub->owner || sub->removed)) {
        fc_sub_release(sub); /* an answer of an earlier term, or of a subscription gone */
        return NULL;
    }
    return sub;
}

fc_sub_t *fc_call_sub(fc_call_t *c, int *gen_ok)
{
    *gen_ok = c->sub && c->gen == c->sub->own_gen;
    return c->fc ? c->sub : NULL;
}

void fc_call_free(fc_call_t *c)
{
    flowcontrol_t *fc = c->fc;
    if (fc) {
        if (c->prev)
            c->prev->next = c->next;
        else
            fc->calls = c->next;
        if (c->next)
            c->next->prev = c->prev;
        fc->ncalls--;
    }
    free(c->data);
    free(c);
}

static void calls_orphan_all(flowcontrol_t *fc)
{
    for (fc_call_t *c = fc->calls, *next; c; c = next) {
        next = c->next;
        c->fc = NULL;
        c->sub = NULL; /* the subscriptions are destroyed right after, whatever their counts */
        c->next = c->prev = NULL;
    }
    fc->calls = NULL;
    fc->ncalls = 0;
}

/* ---- metrics ---- */

static int metrics_init(flowcontrol_t *fc)
{
    msm_metrics_t *reg = fc->env.metrics;
    fc_metrics_t *m = &fc->m;
    const char *const by_sub[] = {"subscription", NULL};
    const char *const by_kind[] = {"subscription", "kind", NULL};
    int rc = MSM_OK;
#define COUNTER(field, name, help, labels)                                                         \
    if (rc == MSM_OK)                                                                              \
    rc = msm_metrics_counter(reg, name, help, labels, &m->field)
    COUNTER(admitted, "msm_flowcontrol_admitted_total", "tasks taken into memory from ready.<sub>",
            by_sub);
    COUNTER(duplicates, "msm_flowcontrol_duplicates_total",
            "ready tasks skipped because the same event was already in memory", by_sub);
    COUNTER(dispatched, "msm_flowcontrol_dispatched_total", "tasks appended to dispatch.<sub>",
            by_sub);
    COUNTER(dispatch_failures, "msm_flowcontrol_dispatch_failures_total",
            "tasks whose dispatch append failed (dispatched again when their lease passes)",
            by_sub);
    COUNTER(outcomes, "msm_flowcontrol_outcomes_total", "router outcomes applied, by kind",
            by_kind);
    COUNTER(stale, "msm_flowcontrol_stale_outcomes_total",
            "outcomes ignored: duplicate, or not the task's current attempt", by_sub);
    COUNTER(retries, "msm_flowcontrol_retries_total", "failed attempts put in the retry store",
            by_sub);
    COUNTER(dead, "msm_flowcontrol_dead_total", "tasks moved to the dead-letter queue", by_sub);
    COUNTER(expired, "msm_flowcontrol_leases_expired_total",
            "running tasks whose lease passed without an outcome (dispatched again)", by_sub);
    COUNTER(limit_drops, "msm_flowcontrol_limit_decreases_total",
            "times the adaptive concurrency limit went down on 429, 503 or no answer", by_sub);
    COUNTER(hol, "msm_flowcontrol_keys_held_too_long_total",
            "ordering keys held by a failing event past --hol.threshold_ms (head-of-line)",
            by_sub);
#undef COUNTER
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(reg, "msm_flowcontrol_in_flight",
                               "tasks running (dispatched, no outcome yet)", by_sub, &m->in_flight);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(reg, "msm_flowcontrol_pending", "tasks in memory waiting for a slot",
                               by_sub, &m->pending);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(
            reg, "msm_flowcontrol_concurrency_limit",
            "the adaptive concurrency limit in tasks (1..max_concurrency x max_batch_events)",
            by_sub, &m->limit);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(reg, "msm_flowcontrol_keys_held",
                               "ordering keys held by a failing event", by_sub, &m->held);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(reg, "msm_flowcontrol_key_held_longest_ms",
                               "how long the longest-held ordering key has been held", by_sub,
                               &m->held_longest);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(reg, "msm_flowcontrol_subscriptions", "subscriptions known", NULL,
                               &m->subs);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(reg, "msm_flowcontrol_owned_subscriptions",
                               "subscriptions this member owns", NULL, &m->owned);
    return rc;
}

/* ---- the registry ---- */

static size_t count_subs(const flowcontrol_t *fc, int owned_only)
{
    size_t n = 0;
    for (const fc_sub_t *s = fc->subs; s; s = s->next)
        n += !owned_only || s->owner;
    return n;
}

static void on_registry_changed(msm_registry_t *reg, void *opaque)
{
    flowcontrol_t *fc = opaque;
    if (fc->stopping)
        return;
    fc_sub_t *s = fc->subs;
    while (s) {
        fc_sub_t *next = s->next;
        if (!msm_registry_sub(reg, s->name)) {
            msm_log(MSM_LOG_INFO, FC_FACILITY, "subscription %s removed", s->name);
            fc_sub_remove(s);
        }
        s = next;
    }
    for (size_t i = 0; i < msm_registry_sub_count(reg); i++) {
        const msm_sub_t *def = msm_registry_sub_at(reg, i);
        fc_sub_t *sub = fc_sub_find(fc, def->name);
        if (sub) {
            fc_sub_update(sub, def);
            continue;
        }
        sub = fc_sub_new(fc, def, msm_registry_topic(reg, def->topic));
        if (!sub)
            continue; /* logged; tried again at the next registry change */
        sub->next = fc->subs;
        fc->subs = sub;
        fc_own_start(sub);
    }
    msm_gauge_set(msm_metric_solo(fc->m.subs), (double)count_subs(fc, 0));
}

/* Before the loop sleeps: every owned subscription's dispatch record and pipeline. */
static void on_before_sleep(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    flowcontrol_t *fc = opaque;
    for (fc_sub_t *s = fc->subs; s; s = s->next)
        fc_sub_turn(s);
    msm_gauge_set(msm_metric_solo(fc->m.owned), (double)count_subs(fc, 1));
}

/* ---- life ---- */

static void conf_defaults(fc_conf_t *c)
{
    if (c->lease_grace_ms < 0)
        c->lease_grace_ms = FC_DEFAULT_LEASE_GRACE_MS;
    if (c->owner_lease_ms <= 0)
        c->owner_lease_ms = FC_DEFAULT_OWNER_LEASE_MS;
    if (c->registry_poll_ms <= 0)
        c->registry_poll_ms = FC_DEFAULT_REGISTRY_POLL_MS;
    if (c->batch <= 0)
        c->batch = FC_DEFAULT_BATCH;
    if (c->max_records <= 0)
        c->max_records = FC_DEFAULT_MAX_RECORDS;
    if (c->dispatch_max <= 0)
        c->dispatch_max = FC_DEFAULT_DISPATCH_MAX;
    if (c->record_lag_ms < 0)
        c->record_lag_ms = FC_DEFAULT_RECORD_LAG_MS;
    if (c->fair_max_records <= 0)
        c->fair_max_records = FC_DEFAULT_FAIR_MAX_RECORDS;
    if (c->hol_threshold_ms <= 0)
        c->hol_threshold_ms = FC_DEFAULT_HOL_THRESHOLD_MS;
}

flowcontrol_t *flowcontrol_new(const fc_env_t *env, const fc_conf_t *conf)
{
    flowcontrol_t *fc = calloc(1, sizeof(*fc));
    if (!fc)
        return NULL;
    fc->env = *env;
    fc->conf = *conf;
    conf_defaults(&fc->conf);
    fc->member = strdup(env->member ? env->member : "flowcontrol");
    if (!fc->member || metrics_init(fc) != MSM_OK ||
        msm_loop_add_before_sleep(fc->env.loop, on_before_sleep, fc) != MSM_OK)
        goto fail;
    fc->registry =
        msm_registry_new(env->redis, (uint32_t)fc->conf.registry_poll_ms, on_registry_changed, fc);
    if (!fc->registry)
        goto fail;
    return fc;
fail:
    msm_log(MSM_LOG_ERROR, FC_FACILITY, "cannot start: out of memory or metrics clash");
    flowcontrol_free(fc);
    return NULL;
}

flowcontrol_t *flowcontrol_new_daemon(msm_daemon_t *d, const fc_conf_t *conf)
{
    fc_env_t env = {
        .loop = msm_daemon_loop(d),
        .redis = msm_daemon_redis(d),
        .stream = msm_daemon_stream(d),
        .metrics = msm_daemon_metrics(d),
        .member = msm_daemon_member(d),
    };
    flowcontrol_t *fc = flowcontrol_new(&env, conf);
    if (!fc)
        return NULL;
    msm_daemon_set_ready(d, flowcontrol_ready, fc);
    msm_daemon_on_stop(d, flowcontrol_stop, flowcontrol_drained, fc);
    return fc;
}

void flowcontrol_free(flowcontrol_t *fc)
{
    if (!fc)
        return;
    msm_registry_free(fc->registry);
    msm_loop_remove_before_sleep(fc->env.loop, on_before_sleep, fc);
    fc_flushes_orphan_all(fc);
    calls_orphan_all(fc);
    fc_sub_t *lists[] = {fc->subs, fc->retired};
    for (size_t i = 0; i < 2; i++) {
        fc_sub_t *s = lists[i];
        while (s) {
            fc_sub_t *next = s->next;
            fc_sub_destroy(s);
            s = next;
        }
    }
    fc_tasks_free_pool(fc);
    free(fc->member);
    free(fc);
}

void flowcontrol_stop(void *opaque)
{
    flowcontrol_t *fc = opaque;
    if (fc->stopping)
        return;
    fc->stopping = 1;
    size_t running = 0;
    for (fc_sub_t *s = fc->subs; s; s = s->next)
        running += s->nrunning;
    msm_log(MSM_LOG_INFO, FC_FACILITY, "stopping: %zu tasks running", running);
}

/* Drained: nothing running is waiting for its outcome and every write is answered. Then the
 * subscriptions are given up (their unacknowledged records go to the next owner). */
int flowcontrol_drained(void *opaque)
{
    flowcontrol_t *fc = opaque;
    if (!fc->stopping)
        return 0;
    for (fc_sub_t *s = fc->subs; s; s = s->next) {
        if (s->nrunning || s->dispatching || s->flush)
            return 0;
    }
    if (fc->flushes)
        return 0;
    if (!fc->consumers_closed) {
        for (fc_sub_t *s = fc->subs; s; s = s->next)
            fc_own_stop(s, 1);
        fc->consumers_closed = 1;
    }
    return fc->ncalls == 0 && msm_stream_pending_appends(fc->env.stream) == 0;
}

int flowcontrol_ready(void *opaque, char *why, size_t n)
{
    flowcontrol_t *fc = opaque;
    if (!msm_registry_loaded(fc->registry)) {
        snprintf(why, n, "registry not loaded");
        return 0;
    }
    return 1;
}

size_t flowcontrol_sub_count(const flowcontrol_t *fc)
{
    return count_subs(fc, 0);
}

size_t flowcontrol_owned_count(const flowcontrol_t *fc)
{
    return count_subs(fc, 1);
}

size_t flowcontrol_task_count(const flowcontrol_t *fc)
{
    size_t n = 0;
    for (const fc_sub_t *s = fc->subs; s; s = s->next)
        n += s->ntasks;
    return n;
}
