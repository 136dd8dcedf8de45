/* SPDX-License-Identifier: MIT */
/* The flowcontrol daemon's core: watches the registry and keeps one engine per subscription
 * (sub.c), consumes "status" (outcome.c), and implements readiness, stop and drain. */
#include "fc_int.h"
#include "msm/err.h"
#include "msm/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_RETRY_MS 1000

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
    COUNTER(admitted, "msm_flowcontrol_admitted_total", "tasks admitted from ready.<sub>", by_sub);
    COUNTER(duplicates, "msm_flowcontrol_duplicates_total",
            "ready entries skipped because the task already existed", by_sub);
    COUNTER(dispatched, "msm_flowcontrol_dispatched_total", "tasks appended to dispatch.<sub>",
            by_sub);
    COUNTER(dispatch_failures, "msm_flowcontrol_dispatch_failures_total",
            "tasks taken but not appended to dispatch.<sub> (retried when the lease expires)",
            by_sub);
    COUNTER(outcomes, "msm_flowcontrol_outcomes_total", "router outcomes applied, by kind",
            by_kind);
    COUNTER(stale, "msm_flowcontrol_stale_outcomes_total",
            "outcomes ignored: duplicate, or not the task's current attempt", by_sub);
    COUNTER(retries, "msm_flowcontrol_retries_total", "failed attempts scheduled for retry",
            by_sub);
    COUNTER(dead, "msm_flowcontrol_dead_total", "tasks moved to the dead-letter queue", by_sub);
    COUNTER(expired, "msm_flowcontrol_leases_expired_total",
            "running tasks whose lease expired without an outcome", by_sub);
#undef COUNTER
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(reg, "msm_flowcontrol_in_flight",
                               "tasks running (dispatched, no outcome yet)", by_sub, &m->in_flight);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(reg, "msm_flowcontrol_subscriptions", "subscriptions managed", NULL,
                               &m->subs);
    return rc;
}

static void start_status(flowcontrol_t *fc);

static void on_status_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    start_status(opaque);
}

/* Outcomes are read only once the registry is known, so none is dropped as "unknown". */
static void start_status(flowcontrol_t *fc)
{
    if (fc->status || fc->stopping)
        return;
    char err[256] = "";
    size_t batch = (size_t)fc->conf.batch;
    fc->status = msm_stream_consume(fc->env.stream, MSM_STREAM_STATUS, "flowcontrol", fc->member,
                                    batch, batch * 8, fc_on_status_batch, fc, err, sizeof(err));
    if (!fc->status) {
        msm_log(MSM_LOG_ERROR, "flowcontrol", "consuming %s: %s", MSM_STREAM_STATUS, err);
        msm_loop_timer_start(fc->env.loop, &fc->status_timer, STATUS_RETRY_MS, on_status_timer, fc);
    }
}

static size_t count_subs(const flowcontrol_t *fc)
{
    size_t n = 0;
    for (const fc_sub_t *s = fc->subs; s; s = s->next)
        n++;
    return n;
}

static void on_registry_changed(msm_registry_t *reg, void *opaque)
{
    flowcontrol_t *fc = opaque;
    if (fc->stopping)
        return;
    /* Gone from the registry: stop and retire. */
    fc_sub_t *s = fc->subs;
    while (s) {
        fc_sub_t *next = s->next;
        if (!msm_registry_sub(reg, s->name)) {
            msm_log(MSM_LOG_INFO, "flowcontrol", "subscription %s removed", s->name);
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
        msm_log(MSM_LOG_INFO, "flowcontrol", "subscription %s: max_concurrency %d, timeout %d ms",
                sub->name, sub->max_concurrency, sub->timeout_ms);
    }
    msm_gauge_set(msm_metric_solo(fc->m.subs), (double)count_subs(fc));
    start_status(fc);
}

static void conf_defaults(fc_conf_t *c)
{
    if (c->lease_grace_ms < 0)
        c->lease_grace_ms = FC_DEFAULT_LEASE_GRACE_MS;
    if (c->admit_poll_ms <= 0)
        c->admit_poll_ms = FC_DEFAULT_ADMIT_POLL_MS;
    if (c->safety_poll_ms <= 0)
        c->safety_poll_ms = FC_DEFAULT_SAFETY_POLL_MS;
    if (c->registry_poll_ms <= 0)
        c->registry_poll_ms = FC_DEFAULT_REGISTRY_POLL_MS;
    if (c->batch <= 0)
        c->batch = FC_DEFAULT_BATCH;
}

flowcontrol_t *flowcontrol_new(const fc_env_t *env, const fc_conf_t *conf)
{
    flowcontrol_t *fc = calloc(1, sizeof(*fc));
    if (!fc)
        return NULL;
    fc->env = *env;
    fc->conf = *conf;
    conf_defaults(&fc->conf);
    msm_timer_init(&fc->status_timer);
    fc->member = strdup(env->member ? env->member : "flowcontrol");
    fc->scripts = fc_scripts_new();
    if (!fc->member || !fc->scripts || metrics_init(fc) != MSM_OK)
        goto fail;
    fc->registry =
        msm_registry_new(env->redis, (uint32_t)fc->conf.registry_poll_ms, on_registry_changed, fc);
    if (!fc->registry)
        goto fail;
    return fc;
fail:
    msm_log(MSM_LOG_ERROR, "flowcontrol", "cannot start: out of memory or metrics clash");
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
    msm_loop_timer_stop(fc->env.loop, &fc->status_timer);
    if (fc->scripts)
        fc_ops_orphan_all(fc);
    msm_consumer_free(fc->status);
    fc->status = NULL;
    fc_sub_t *lists[] = {fc->subs, fc->retired};
    for (size_t i = 0; i < 2; i++) {
        fc_sub_t *s = lists[i];
        while (s) {
            fc_sub_t *next = s->next;
            fc_sub_destroy(s);
            s = next;
        }
    }
    fc_scripts_release(fc->scripts);
    free(fc->member);
    free(fc);
}

void flowcontrol_stop(void *opaque)
{
    flowcontrol_t *fc = opaque;
    if (fc->stopping)
        return;
    fc->stopping = 1;
    msm_loop_timer_stop(fc->env.loop, &fc->status_timer);
    for (fc_sub_t *s = fc->subs; s; s = s->next)
        fc_sub_stop(s);
}

int flowcontrol_drained(void *opaque)
{
    flowcontrol_t *fc = opaque;
    if (!fc->stopping || fc->nops)
        return 0;
    if (!fc->consumers_closed) {
        /* Freeing a consumer sends its last acknowledgements; they count as pending in the
         * log client until Redis has answered them. */
        msm_consumer_free(fc->status);
        fc->status = NULL;
        for (fc_sub_t *s = fc->subs; s; s = s->next)
            fc_sub_close_consumer(s);
        fc->consumers_closed = 1;
    }
    return msm_stream_pending_appends(fc->env.stream) == 0;
}

int flowcontrol_ready(void *opaque, char *why, size_t n)
{
    flowcontrol_t *fc = opaque;
    if (!msm_registry_loaded(fc->registry)) {
        snprintf(why, n, "registry not loaded");
        return 0;
    }
    if (!fc->status) {
        snprintf(why, n, "not consuming %s", MSM_STREAM_STATUS);
        return 0;
    }
    return 1;
}

size_t flowcontrol_sub_count(const flowcontrol_t *fc)
{
    return count_subs(fc);
}
