/* SPDX-License-Identifier: MIT */
/* The router's life: the registry decides which subscriptions exist; each gets a consumer of
 * dispatch.<sub> (group "router", this process's stable member name) once its status.<sub>
 * exists, and loses it when the subscription goes away, its max_concurrency changes or the
 * router stops. A paused subscription keeps its consumer (none is made while paused): what
 * it still reads ends NOT_PUSHED ("subscription paused"), so flowcontrol holds it until
 * :resume — and no consumer leaves and rejoins its group, which on Kafka can leave the
 * partitions with a departed member until its session times out. A consumer is only freed
 * when none of its records is in flight, so every record taken ends acknowledged (all its
 * outcomes durable) or handed back unacknowledged. */
#include "rt_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/pem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_STATUS_PARTITIONS 4
#define DEFAULT_MAX_CONNECTIONS   1024
#define DEFAULT_HOST_CONNECTIONS  256
#define DEFAULT_CONNECT_MS        5000
#define DEFAULT_POLL_MS           500
#define DEFAULT_MAX_BATCH         64
#define DEFAULT_MAX_IN_FLIGHT     4096
#define DRAIN_MARGIN_MS           5000 /* after the longest push: the outcomes' appends */
#define MAX_UNACKED_CAP           4096 /* however large a subscription's max_concurrency */
#define RETRY_MS                  1000 /* status ensure and consumer creation retries */
/* Added to a subscription's push timeout for its consumer's log lease: a record is held
 * while its pushes run, then its outcomes are appended and it is acknowledged. */
#define LEASE_GRACE_MS            5000

static void reconcile_all(router_t *rt);

/* ---- records ---- */

void msm__rt_record_free(router_t *rt, rt_record_t *rec)
{
    if (rec->prev)
        rec->prev->next = rec->next;
    else
        rt->records = rec->next;
    if (rec->next)
        rec->next->prev = rec->prev;
    for (size_t i = 0; i < rec->n; i++) {
        free(rec->items[i].body);
        free(rec->items[i].span);
    }
    free(rec->items);
    msm_arena_free(rec->arena);
    free(rec);
}

uint64_t msm__rt_lease_ms(const msm_sub_t *conf)
{
    return (uint64_t)conf->timeout_ms + LEASE_GRACE_MS;
}

/* ---- subscriptions ---- */

static int max_unacked_of(const msm_sub_t *conf)
{
    return conf->max_concurrency < MAX_UNACKED_CAP ? conf->max_concurrency : MAX_UNACKED_CAP;
}

/* Taking new records: consuming with the current settings, not stopping (paused or not). */
static int accepting(const rt_sub_t *sub)
{
    return sub->consumer && sub->conf && !sub->rt->stopping &&
           sub->consumer_max == max_unacked_of(sub->conf);
}

/* The registry check asked for after records were read has answered: a change committed
 * before they were read (a :pause answered to its caller) is in force for them. A failed
 * check pushes with the settings at hand. */
static void on_synced(msm_registry_t *reg, int err, void *opaque)
{
    (void)reg;
    router_t *rt = opaque;
    if (err == MSM_ERR_SHUTDOWN)
        return;
    msm__rt_send_by_priority(rt);
}

static void on_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    rt_sub_t *sub = opaque;
    router_t *rt = sub->rt;
    for (size_t i = 0; i < n; i++) {
        /* Records arriving while a consumer is on its way out stay unacknowledged: the
         * next consumer of this member name reads them again from its pending list. */
        if (accepting(sub))
            msm__rt_take(sub, msgs[i]);
    }
    /* Sent after the whole run (tasks of consecutive records share batch requests), with a
     * registry at least as new as the records: the batch's stamp says so, and the sends of
     * this loop turn go out in priority order before it sleeps; or a check of the registry
     * (the checks of one loop turn share one GET). */
    if (msm_registry_covers(rt->registry, msm_consumer_stamp(c)))
        rt->send_due = 1;
    else if (msm_registry_sync(rt->registry, on_synced, rt) != MSM_OK)
        msm__rt_send_queued(sub);
}

/* Before the loop sleeps: the sends of this turn's records, in priority order; then the
 * outcomes. */
static void before_sleep(msm_loop_t *loop, void *opaque)
{
    router_t *rt = opaque;
    if (rt->send_due) {
        rt->send_due = 0;
        msm__rt_send_by_priority(rt);
    }
    msm__rt_flush(loop, rt);
}

static void sub_metrics(router_t *rt, rt_sub_t *sub)
{
    for (int k = 1; k < RT_KINDS; k++) {
        static const char *const names[RT_KINDS] = {"", "success", "retriable", "fatal",
                                                    "not_pushed"};
        sub->m_kind[k] = msm_metric_labels(rt->m_deliveries, sub->name, names[k], NULL);
    }
    sub->m_latency = msm_metric_labels(rt->m_latency, sub->name, NULL);
    sub->m_in_flight = msm_metric_labels(rt->m_in_flight, sub->name, NULL);
}

/* Frees the settings replaced while deliveries pointed into them. */
static void sub_free_retired(rt_sub_t *sub)
{
    while (sub->retired) {
        rt_retired_t *r = sub->retired;
        sub->retired = r->next;
        msm_sub_free(r->conf);
        free(r);
    }
}

/* Replaces the settings; the old ones live on while deliveries may point into them.
 * @returns MSM_OK, or MSM_ERR_NOMEM with nothing changed. */
static int sub_set_conf(rt_sub_t *sub, msm_sub_t *conf)
{
    if (sub->conf && sub->live > 0) {
        rt_retired_t *r = malloc(sizeof(*r));
        if (!r)
            return MSM_ERR_NOMEM;
        r->conf = sub->conf;
        r->next = sub->retired;
        sub->retired = r;
        sub->conf = NULL;
    }
    msm_sub_free(sub->conf);
    sub->conf = conf;
    return MSM_OK;
}

static void sub_free(rt_sub_t *sub)
{
    msm_loop_timer_stop(sub->rt->env.loop, &sub->hold_timer);
    msm__rt_health_free(sub);
    msm__rt_canary_free(sub);
    msm__rt_queue_drop(sub);
    msm_consumer_free(sub->consumer);
    if (sub->ensure_token)
        ((rt_token_t *)sub->ensure_token)->sub = NULL;
    msm_sub_free(sub->conf);
    sub_free_retired(sub);
    msm_http_tls_release(sub->tls);
    json_decref(sub->conf_json);
    free(sub->wrr);
    free(sub->status_stream);
    free(sub->name);
    free(sub);
}

static void sub_unlink(router_t *rt, rt_sub_t *sub)
{
    for (rt_sub_t **p = &rt->subs; *p; p = &(*p)->next) {
        if (*p == sub) {
            *p = sub->next;
            return;
        }
    }
}

static void start_consumer(rt_sub_t *sub)
{
    router_t *rt = sub->rt;
    char stream[MSM_NAME_MAX + 16], err[256] = "";
    snprintf(stream, sizeof(stream), MSM_STREAM_DISPATCH, sub->name);
    int max = max_unacked_of(sub->conf);
    sub->consumer = msm_stream_consume(rt->env.stream, stream, RT_GROUP, rt->member,
                                       (size_t)rt->conf.max_batch, (size_t)max, on_batch, sub,
                                       err, sizeof(err));
    if (!sub->consumer) {
        msm_log(MSM_LOG_ERROR, RT_FACILITY, "cannot consume %s: %s (retrying)", stream, err);
        return;
    }
    sub->consumer_max = max;
    /* Batches come with the registry version read after them (Kafka: no stamps). */
    (void)msm_consumer_set_stamp(sub->consumer, MSM_KEY_VERSION);
    /* No other router takes a record of ours while its pushes may still run. */
    msm_consumer_set_lease(sub->consumer, msm__rt_lease_ms(sub->conf));
    msm_log(MSM_LOG_INFO, RT_FACILITY, "consuming %s as %s/%s, at most %d unacknowledged",
            stream, RT_GROUP, rt->member, max);
}

static void status_ensure(rt_sub_t *sub);

/* Brings one subscription to what it should be; may free it. @returns 1 when the wanted
 * state is not reached yet for a reason worth a retry (consumer creation failed). */
static int reconcile(router_t *rt, rt_sub_t *sub)
{
    int wanted = sub->conf && !sub->conf->paused && !rt->stopping;
    if (wanted && !sub->status_ready) {
        if (!sub->ensure_token)
            status_ensure(sub);
        wanted = 0; /* nothing is consumed before its outcomes have a place */
    }
    if (sub->consumer && !accepting(sub) && sub->live == 0) {
        msm_consumer_free(sub->consumer); /* unacknowledged records go back to the group */
        sub->consumer = NULL;
    }
    if (!sub->consumer && wanted && sub->live == 0) {
        start_consumer(sub);
        return sub->consumer == NULL;
    }
    if (!sub->conf && !sub->consumer && sub->live == 0 && !sub->ensure_token) {
        sub_unlink(rt, sub);
        sub_free(sub);
    }
    return 0;
}

static void on_retry_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    reconcile_all(opaque);
}

static void retry_later(router_t *rt)
{
    if (!msm_timer_active(&rt->retry_timer))
        msm_loop_timer_start(rt->env.loop, &rt->retry_timer, RETRY_MS, on_retry_timer, rt);
}

static void reconcile_all(router_t *rt)
{
    int retry = 0;
    for (rt_sub_t *sub = rt->subs, *next; sub; sub = next) {
        next = sub->next;
        retry |= reconcile(rt, sub);
    }
    if (retry)
        retry_later(rt);
}

void msm__rt_delivery_done(router_t *rt, rt_delivery_t *d, int ack)
{
    rt_sub_t *sub = d->sub;
    rt_record_t *rec = d->rec;
    if (--rec->open == 0) {
        if (ack) /* every outcome durable: done */
            msm_consumer_ack(sub->consumer, rec->msg);
        rec->msg = NULL;
        msm__rt_record_free(rt, rec);
    }
    rt->live--;
    if (--sub->live > 0)
        return;
    sub_free_retired(sub);
    if (!accepting(sub) && reconcile(rt, sub))
        retry_later(rt);
}

/* push_tls as libcurl takes it, made once per change of the settings, not per push.
 * @returns MSM_OK with *out NULL when there is none, or MSM_ERR_NOMEM. */
static int tls_of(const msm_push_tls_t *t, msm_http_tls_t **out)
{
    *out = NULL;
    if (!t->ca_pem && !t->client_cert_pem)
        return MSM_OK;
    *out = msm_http_tls_new(t->ca_pem, t->client_cert_pem, t->client_key_pem);
    return *out ? MSM_OK : MSM_ERR_NOMEM;
}

/* Takes a subscription's new settings from the registry snapshot (a deep copy: the
 * snapshot dies with the next change, deliveries may outlive it). */
static int sub_update(rt_sub_t *sub, const msm_sub_t *s)
{
    json_t *j = msm_sub_to_json(s, true);
    if (!j)
        return MSM_ERR_NOMEM;
    if (sub->conf_json && json_equal(j, sub->conf_json)) {
        json_decref(j);
        return MSM_OK;
    }
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_sub_t *copy = msm_sub_from_json(s->name, j, &e);
    msm_json_err_deinit(&e);
    msm_http_tls_t *tls = NULL;
    if (!copy || tls_of(&copy->push_tls, &tls) != MSM_OK || sub_set_conf(sub, copy) != MSM_OK) {
        msm_http_tls_release(tls);
        msm_sub_free(copy);
        json_decref(j);
        return MSM_ERR_NOMEM;
    }
    /* Requests in flight hold their own reference to the previous one. */
    msm_http_tls_release(sub->tls);
    sub->tls = tls;
    json_decref(sub->conf_json);
    sub->conf_json = j;
    if (sub->consumer) /* a new timeout_ms: the lease follows */
        msm_consumer_set_lease(sub->consumer, msm__rt_lease_ms(sub->conf));
    int rc = msm__rt_balance_reset(sub);
    if (rc == MSM_OK)
        rc = msm__rt_canary_reset(sub);
    return rc == MSM_OK ? msm__rt_health_reset(sub) : rc;
}

static rt_sub_t *sub_find(router_t *rt, const char *name)
{
    for (rt_sub_t *sub = rt->subs; sub; sub = sub->next) {
        if (strcmp(sub->name, name) == 0)
            return sub;
    }
    return NULL;
}

static rt_sub_t *sub_new(router_t *rt, const char *name)
{
    rt_sub_t *sub = calloc(1, sizeof(*sub));
    size_t n = strlen(name) + sizeof(MSM_STREAM_STATUS);
    if (!sub || !(sub->name = strdup(name)) || !(sub->status_stream = malloc(n))) {
        if (sub)
            free(sub->name);
        free(sub);
        return NULL;
    }
    snprintf(sub->status_stream, n, MSM_STREAM_STATUS, name);
    sub->rt = rt;
    msm_timer_init(&sub->hold_timer);
    sub_metrics(rt, sub);
    sub->next = rt->subs;
    rt->subs = sub;
    return sub;
}

#define REPORT_EVERY_MS 1000

static void on_report_timer(msm_loop_t *loop, void *opaque)
{
    router_t *rt = opaque;
    for (rt_sub_t *sub = rt->subs; sub; sub = sub->next) {
        msm__rt_health_report(sub);
        msm__rt_canary_tick(sub);
    }
    msm_loop_timer_start(loop, &rt->report_timer, REPORT_EVERY_MS, on_report_timer, rt);
}

static void on_registry(msm_registry_t *reg, void *opaque)
{
    router_t *rt = opaque;
    for (rt_sub_t *sub = rt->subs; sub; sub = sub->next) {
        if (sub->conf && !msm_registry_sub(reg, sub->name)) {
            msm_log(MSM_LOG_INFO, RT_FACILITY, "subscription %s removed", sub->name);
            (void)sub_set_conf(sub, NULL); /* out of memory: kept until nothing is live */
            (void)msm__rt_health_reset(sub); /* no endpoints: checks stop */
            (void)msm__rt_canary_reset(sub);
            json_decref(sub->conf_json); /* a later one of the same name starts afresh */
            sub->conf_json = NULL;
            sub->status_ready = 0;       /* its streams are being deleted */
        }
    }
    for (size_t i = 0; i < msm_registry_sub_count(reg); i++) {
        const msm_sub_t *s = msm_registry_sub_at(reg, i);
        rt_sub_t *sub = sub_find(rt, s->name);
        if (!sub && !(sub = sub_new(rt, s->name)))
            continue;
        if (sub_update(sub, s) != MSM_OK)
            msm_log(MSM_LOG_ERROR, RT_FACILITY, "subscription %s: out of memory", s->name);
    }
    reconcile_all(rt);
    if (!msm_timer_active(&rt->report_timer))
        msm_loop_timer_start(rt->env.loop, &rt->report_timer, 0, on_report_timer, rt);
}

/* ---- status.<sub> ---- */

static void on_status_ensured(msm_err_t err, const char *reason, void *opaque)
{
    rt_token_t *tok = opaque;
    rt_sub_t *sub = tok->sub;
    free(tok);
    if (!sub)
        return; /* the router or the subscription is gone */
    router_t *rt = sub->rt;
    sub->ensure_token = NULL;
    if (err != MSM_OK) {
        msm_log(MSM_LOG_WARN, RT_FACILITY, "cannot create %s: %s (retrying)",
                sub->status_stream, reason ? reason : msm_err_str(err));
        retry_later(rt);
        return;
    }
    sub->status_ready = sub->conf != NULL;
    reconcile_all(rt);
}

static void status_ensure(rt_sub_t *sub)
{
    router_t *rt = sub->rt;
    rt_token_t *tok = calloc(1, sizeof(*tok));
    if (!tok) {
        retry_later(rt);
        return;
    }
    tok->rt = rt;
    tok->sub = sub;
    sub->ensure_token = tok;
    if (msm_stream_ensure(rt->env.stream, sub->status_stream, rt->conf.status_partitions,
                          on_status_ensured, tok) != MSM_OK) {
        sub->ensure_token = NULL;
        free(tok);
        retry_later(rt);
    }
}

/* ---- life ---- */

static void conf_defaults(router_conf_t *c)
{
    if (c->status_partitions <= 0)
        c->status_partitions = DEFAULT_STATUS_PARTITIONS;
    if (c->max_connections <= 0)
        c->max_connections = DEFAULT_MAX_CONNECTIONS;
    if (c->max_host_connections <= 0)
        c->max_host_connections = DEFAULT_HOST_CONNECTIONS;
    if (c->connect_timeout_ms <= 0)
        c->connect_timeout_ms = DEFAULT_CONNECT_MS;
    if (c->registry_poll_ms <= 0)
        c->registry_poll_ms = DEFAULT_POLL_MS;
    if (c->max_batch <= 0)
        c->max_batch = DEFAULT_MAX_BATCH;
    if (c->max_in_flight <= 0)
        c->max_in_flight = DEFAULT_MAX_IN_FLIGHT;
}

static int register_metrics(router_t *rt)
{
    static const char *const by_sub_kind[] = {"subscription", "kind", NULL};
    static const char *const by_sub[] = {"subscription", NULL};
    msm_metrics_t *m = rt->env.metrics;
    msm_metric_t *invalid, *failures;
    int rc = msm_metrics_counter(m, "msm_router_deliveries_total",
                                 "push attempts finished, by subscription and outcome kind",
                                 by_sub_kind, &rt->m_deliveries);
    if (rc == MSM_OK)
        rc = msm_metrics_histogram(m, "msm_router_delivery_latency_seconds",
                                   "time from request start to answer or failure", by_sub,
                                   NULL, 0, &rt->m_latency);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(m, "msm_router_in_flight", "push requests in flight", by_sub,
                               &rt->m_in_flight);
    if (rc == MSM_OK)
        rc = msm__rt_canary_metrics(rt);
    if (rc == MSM_OK)
        rc = msm_metrics_counter(m, "msm_router_invalid_tasks_total",
                                 "dispatch entries that were not a valid task (dropped)", NULL,
                                 &invalid);
    if (rc == MSM_OK)
        rc = msm_metrics_counter(m, "msm_router_status_append_failures_total",
                                 "failed appends of outcomes to status (retried)", NULL,
                                 &failures);
    if (rc != MSM_OK)
        return rc;
    rt->m_invalid = msm_metric_solo(invalid);
    rt->m_append_failures = msm_metric_solo(failures);
    return MSM_OK;
}

/* push.ca_bundle parses as certificates: a daemon that could push nothing over https refuses
 * to start rather than fail every push. */
static int ca_bundle_check(const char *path, char *errbuf, size_t n)
{
    msm_buf_t pem = {0};
    char why[256];
    int rc = msm_buf_append_file(&pem, path);
    if (rc != MSM_OK)
        snprintf(errbuf, n, "push.ca_bundle %s: cannot read it", path);
    else if ((rc = msm_pem_certs_check((const char *)pem.data, why, sizeof(why))) < 0)
        snprintf(errbuf, n, "push.ca_bundle %s: %s", path, why);
    msm_buf_deinit(&pem);
    return rc < 0 ? rc : MSM_OK;
}

static int start_http(router_t *rt, char *errbuf, size_t n)
{
    msm_http_client_conf_t hc;
    msm_http_client_conf_init(&hc);
    const char *ca_bundle = rt->conf.ca_bundle;
    if (ca_bundle && *ca_bundle) {
        if (ca_bundle_check(ca_bundle, errbuf, n) != MSM_OK)
            return MSM_ERR_INVALID;
        hc.ca_file = ca_bundle;
    }
    hc.max_total_connections = (unsigned)rt->conf.max_connections;
    hc.max_host_connections = (unsigned)rt->conf.max_host_connections;
    hc.connect_timeout_ms = (uint32_t)rt->conf.connect_timeout_ms;
    /* Judged by the client on every address it connects to (the client keeps a copy). */
    msm_netpolicy_t *np =
        msm_netpolicy_new(rt->conf.allow_networks, rt->conf.deny_networks, errbuf, n);
    if (!np)
        return MSM_ERR_INVALID;
    hc.netpolicy = np;
    rt->http = msm_http_client_new(rt->env.loop, &hc, errbuf, n);
    msm_netpolicy_free(np);
    return rt->http ? MSM_OK : MSM_ERR_IO;
}

router_t *router_new_env(const router_env_t *env, const router_conf_t *conf, char *errbuf,
                         size_t errbuf_size)
{
    router_t *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    rt->env = *env;
    rt->conf = *conf;
    conf_defaults(&rt->conf);
    msm_timer_init(&rt->retry_timer);
    msm_timer_init(&rt->report_timer);
    rt->member = strdup(env->member);
    rt->env.member = rt->member;
    if (!rt->member) {
        snprintf(errbuf, errbuf_size, "out of memory");
        goto fail;
    }
    if (register_metrics(rt) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "cannot register the router's metrics");
        goto fail;
    }
    if (start_http(rt, errbuf, errbuf_size) != MSM_OK)
        goto fail;
    if (msm_loop_add_before_sleep(rt->env.loop, before_sleep, rt) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "out of memory");
        goto fail;
    }
    rt->registry = msm_registry_new(rt->env.redis, (uint32_t)rt->conf.registry_poll_ms,
                                    on_registry, rt);
    rt->schemas = msm_schema_store_new(rt->env.redis, 0);
    if (!rt->registry || !rt->schemas) {
        snprintf(errbuf, errbuf_size, "out of memory");
        goto fail;
    }
    return rt;
fail:
    router_free(rt);
    return NULL;
}

void router_free(router_t *rt)
{
    if (!rt)
        return;
    msm_loop_timer_stop(rt->env.loop, &rt->retry_timer);
    msm_loop_timer_stop(rt->env.loop, &rt->report_timer);
    msm_loop_remove_before_sleep(rt->env.loop, before_sleep, rt);
    msm_registry_free(rt->registry);
    /* Fetches in flight call back now and do nothing; their deliveries go below. */
    rt->freeing = 1;
    msm_schema_store_free(rt->schemas);
    rt->converting = NULL; /* deliveries belong to their records */
    while (rt->sending) {
        rt_req_t *req = rt->sending;
        rt->sending = req->next;
        msm_http_call_cancel(req->call);
        msm_gauge_dec(req->sub->m_in_flight);
        req->sub->in_http--;
        rt->in_http--;
        msm__rt_req_free(req);
    }
    msm__rt_batches_abandon(rt);
    while (rt->records)
        msm__rt_record_free(rt, rt->records); /* never acknowledged: delivered again */
    while (rt->subs) {
        rt_sub_t *sub = rt->subs;
        rt->subs = sub->next;
        sub_free(sub); /* its unacknowledged records stay pending for this member name */
    }
    msm_http_client_free(rt->http);
    msm_buf_deinit(&rt->packed);
    free(rt->outs);
    free(rt->out_ptrs);
    free(rt->member);
    free(rt);
}

void router_stop(void *opaque)
{
    router_t *rt = opaque;
    if (rt->stopping)
        return;
    rt->stopping = 1;
    /* Pushes not started are handed back at once (NOT_PUSHED: no attempt spent, another
     * router takes them); the ones in flight may run to their timeout. */
    int longest = 0;
    for (rt_sub_t *sub = rt->subs; sub; sub = sub->next) {
        if (sub->conf && sub->conf->timeout_ms > longest)
            longest = sub->conf->timeout_ms;
        while (sub->queue) {
            rt_delivery_t *d = sub->queue;
            sub->queue = d->next;
            d->next = NULL;
            msm__rt_finish(rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED, 0,
                           "router stopping", 0, 0);
        }
        sub->queue_tail = NULL;
    }
    if (rt->daemon) /* the outcomes' appends after the longest push */
        msm_daemon_set_drain_ms(rt->daemon, (uint64_t)longest + DRAIN_MARGIN_MS);
    msm_log(MSM_LOG_INFO, RT_FACILITY, "stopping: %zu deliveries in flight, waiting up to %d ms",
            rt->live, longest + DRAIN_MARGIN_MS);
    reconcile_all(rt);
}

int router_drained(void *opaque)
{
    const router_t *rt = opaque;
    /* The log client's pending count includes acknowledgements not yet answered. */
    return rt->live == 0 && rt->batches == NULL &&
           msm_stream_pending_appends(rt->env.stream) == 0;
}

int router_ready(void *opaque, char *why, size_t n)
{
    const router_t *rt = opaque;
    if (!msm_registry_loaded(rt->registry)) {
        snprintf(why, n, "registry not loaded");
        return 0;
    }
    for (const rt_sub_t *sub = rt->subs; sub; sub = sub->next) {
        if (sub->conf && !sub->conf->paused && !sub->status_ready) {
            snprintf(why, n, "%s not ready", sub->status_stream);
            return 0;
        }
    }
    return 1;
}

size_t router_live(const router_t *rt)
{
    return rt->live;
}

void router_http_stats(const router_t *rt, msm_http_client_stats_t *out)
{
    msm_http_client_stats(rt->http, out);
}

router_t *router_new(msm_daemon_t *d, const router_conf_t *conf)
{
    router_env_t env = {
        .loop = msm_daemon_loop(d),
        .redis = msm_daemon_redis(d),
        .stream = msm_daemon_stream(d),
        .metrics = msm_daemon_metrics(d),
        .member = msm_daemon_member(d),
    };
    char err[256] = "";
    router_t *rt = router_new_env(&env, conf, err, sizeof(err));
    if (!rt) {
        msm_log(MSM_LOG_ERROR, RT_FACILITY, "cannot start: %s", err);
        return NULL;
    }
    msm_daemon_set_ready(d, router_ready, rt);
    msm_daemon_on_stop(d, router_stop, router_drained, rt);
    rt->daemon = d;
    return rt;
}
