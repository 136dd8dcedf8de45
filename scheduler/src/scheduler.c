/* SPDX-License-Identifier: MIT */
/* The scheduler module: its life cycle, the registry watch that starts and stops one
 * consumer of events.<topic> per topic with subscriptions, the ready.<sub> streams, metrics
 * and readiness. Fan-out is in fanout.c, delayed events in delayed.c. */
#include "sch_int.h"
#include "cdc_int.h"

#include "msm/backoff.h"
#include "msm/err.h"
#include "msm/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_PARTITIONS 4

/* Lateness of fired delayed events, in seconds: milliseconds matter, seconds are a fault. */
static const double lateness_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25,  0.5,    1,     2.5,  5,     10,   60};

/* Claims the due delayed events of one subscription. KEYS[1]: sub:{s}:delayed, KEYS[2]:
 * sub:{s}:delayed:events; ARGV: now, most ids, claim lease end (unix ms). The due ids (score
 * <= now, at most ARGV[2]) are re-scored to the lease end, so other schedulers skip them
 * until their claimer removed them (or died: then they are due again). Returns {earliest
 * score above now or '', id, packed event or nil, ...}. ZRANGEBYSCORE by score is
 * O(log n + m): a large backlog further out costs nothing. Chunks of 1000 stay below
 * Lua's unpack() limit. */
static const char CLAIM_LUA[] =
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
    "local nxt = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf',\n"
    "                       'WITHSCORES', 'LIMIT', 0, 1)\n"
    "local r = {nxt[2] or ''}\n"
    "for i = 1, #due, 1000 do\n"
    "  local ids, z = {}, {}\n"
    "  for j = i, math.min(i + 999, #due) do\n"
    "    ids[#ids + 1] = due[j]\n"
    "    z[#z + 1] = ARGV[3]\n"
    "    z[#z + 1] = due[j]\n"
    "  end\n"
    "  redis.call('ZADD', KEYS[1], 'XX', unpack(z))\n"
    "  local evs = redis.call('HMGET', KEYS[2], unpack(ids))\n"
    "  for j = 1, #ids do\n"
    "    r[#r + 1] = ids[j]\n"
    "    r[#r + 1] = evs[j]\n"
    "  end\n"
    "end\n"
    "return r\n";

/* ---- shared helpers ---- */

void sch__hold(scheduler_t *s)
{
    s->inflight++;
}

static void destroy(scheduler_t *s);

void sch__release(scheduler_t *s)
{
    s->inflight--;
    if (s->freed && s->inflight == 0)
        destroy(s);
}

sch_sub_t *sch__sub(scheduler_t *s, const char *name)
{
    for (sch_sub_t *sub = s->subs; sub; sub = sub->next) {
        if (strcmp(sub->name, name) == 0)
            return sub;
    }
    return NULL;
}

uint64_t sch__backoff_ms(const scheduler_t *s, uint32_t attempt)
{
    uint64_t d = msm_backoff_delay_ms(attempt, (uint64_t)s->conf.retry_min_ms,
                                      (uint64_t)s->conf.retry_max_ms);
    /* Full jitter may draw 0: keep a floor so a dead backend is not hammered. */
    uint64_t floor = (uint64_t)s->conf.retry_min_ms / 2;
    return d < floor ? floor : d;
}

/* The length of a length-delimited field of @p len bytes in its parent (tag + varint). */
static size_t field_size(size_t len)
{
    size_t n = 2;
    for (size_t v = len; v >= 0x80; v >>= 7)
        n++;
    return n + len;
}

/* Where the tasks of @p tasks from @p start on are cut: at most the configured tasks and
 * bytes, at least one task. */
static size_t record_end(const scheduler_t *s, const Msm__V1__Task *tasks, size_t start, size_t n)
{
    size_t end = start, bytes = 0;
    size_t max_tasks = (size_t)s->conf.record_max_tasks,
           max_bytes = (size_t)s->conf.record_max_bytes;
    while (end < n && end - start < max_tasks) {
        size_t add = field_size(protobuf_c_message_get_packed_size(&tasks[end].base));
        if (end > start && bytes + add > max_bytes)
            break;
        bytes += add;
        end++;
    }
    return end;
}

int sch__records_build(
    const scheduler_t *s, const char *sub, Msm__V1__Event *const *evs, size_t n, sch_records_t *out)
{
    memset(out, 0, sizeof(*out));
    Msm__V1__Task *tasks = calloc(n ? n : 1, sizeof(*tasks));
    Msm__V1__Task **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    size_t *first = calloc(n ? n : 1, sizeof(*first)); /* per record: its first task */
    size_t *off = calloc(n + 1, sizeof(*off));         /* per record: where it starts in buf */
    out->recs = calloc(n ? n : 1, sizeof(*out->recs));
    int rc = MSM_ERR_NOMEM;
    if (!tasks || !ptrs || !first || !off || !out->recs)
        goto out;
    for (size_t i = 0; i < n; i++) {
        msm__v1__task__init(&tasks[i]);
        tasks[i].event = evs[i];
        tasks[i].subscription = (char *)sub;
        tasks[i].attempt = 0; /* flowcontrol counts attempts: 1 is the first delivery */
        tasks[i].state = MSM__V1__TASK_STATE__TASK_STATE_PENDING;
        ptrs[i] = &tasks[i];
    }
    for (size_t start = 0; start < n;) {
        size_t end = record_end(s, tasks, start, n);
        Msm__V1__TaskBatch batch = MSM__V1__TASK_BATCH__INIT;
        batch.n_tasks = end - start;
        batch.tasks = ptrs + start;
        size_t len = protobuf_c_message_get_packed_size(&batch.base);
        if (msm_buf_reserve(&out->buf, len) != MSM_OK)
            goto out;
        protobuf_c_message_pack(&batch.base, out->buf.data + out->buf.len);
        out->buf.len += len;
        first[out->n] = start;
        off[++out->n] = out->buf.len;
        start = end;
    }
    /* The buffer no longer moves: the values can point into it. */
    for (size_t r = 0; r < out->n; r++) {
        msm_record_t *rec = &out->recs[r];
        /* One partition per subscription: records are read back in the order written, so
         * the per-key order of the topic log survives (ordered subscriptions rely on it), and
         * one flowcontrol member owns the subscription anyway. */
        rec->key = sub;
        rec->key_len = strlen(sub);
        rec->value = out->buf.data + off[r];
        rec->value_len = off[r + 1] - off[r];
    }
    rc = MSM_OK;
out:
    free(tasks);
    free(ptrs);
    free(first);
    free(off);
    if (rc != MSM_OK)
        sch__records_deinit(out);
    return rc;
}

void sch__trace_start(msm_spans_t *spans, Msm__V1__Event *const *evs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        msm_span_t *s = evs[i] && msm_traceparent_sampled(evs[i]->traceparent)
                            ? msm_spans_start(spans, n, i, evs[i]->traceparent)
                            : NULL;
        if (s) /* a valid traceparent is at least as long as the new one */
            memcpy(evs[i]->traceparent, s->tp, sizeof(s->tp));
    }
}

void sch__trace_end(const msm_spans_t *spans, Msm__V1__Event *const *evs, size_t n,
                    const char *name, const char *sub)
{
    for (size_t i = 0; spans->started && i < n; i++) {
        const msm_span_t *s = msm_spans_get(spans, i);
        if (s) {
            msm_log_field_t f[] = {{"topic", evs[i]->topic}, {"event_id", evs[i]->id},
                                   {"subscription", sub}};
            msm_span_end(s, "scheduler", name, f, 3);
        }
    }
}

void sch__records_deinit(sch_records_t *r)
{
    msm_buf_deinit(&r->buf);
    free(r->recs);
    r->recs = NULL;
    r->n = 0;
}

static int topic_partitions(const scheduler_t *s, const char *topic)
{
    const msm_topic_t *t = s->registry ? msm_registry_topic(s->registry, topic) : NULL;
    return t ? t->partitions : DEFAULT_PARTITIONS;
}

/* ---- ready.<sub> streams ---- */

typedef struct {
    scheduler_t *s;
    char *sub;
} ready_ensure_t;

static void on_ready_ensured(msm_err_t err, const char *reason, void *opaque)
{
    ready_ensure_t *e = opaque;
    scheduler_t *s = e->s;
    sch_sub_t *sub = s->freed ? NULL : sch__sub(s, e->sub);
    if (sub)
        sub->ready_state = err == MSM_OK ? 2 : 0;
    if (err != MSM_OK && !s->freed && !s->stopping)
        msm_log(MSM_LOG_WARN, "scheduler", "ensuring stream ready.%s: %s (retried on next use)",
                e->sub, reason ? reason : msm_err_str(err));
    free(e->sub);
    free(e);
    sch__release(s);
}

/* The frontend ensures events.<topic>; ready.<sub> is ours to create before the first
 * append (an append to a stream that does not exist fails with NOTFOUND). */
void sch__ensure_ready(scheduler_t *s, sch_sub_t *sub)
{
    if (sub->ready_state != 0 || s->freed)
        return;
    ready_ensure_t *e = calloc(1, sizeof(*e));
    if (!e || !(e->sub = strdup(sub->name))) {
        free(e);
        return;
    }
    e->s = s;
    if (msm_stream_ensure(s->stream, sub->ready, topic_partitions(s, sub->topic), on_ready_ensured,
                          e) != MSM_OK) {
        free(e->sub);
        free(e);
        return;
    }
    sub->ready_state = 1;
    sch__hold(s);
}

/* ---- subscriptions ---- */

static void sub_free(sch_sub_t *sub)
{
    free(sub->name);
    free(sub->topic);
    free(sub->ready);
    free(sub);
}

static sch_sub_t *sub_new(scheduler_t *s, const msm_sub_t *rs)
{
    sch_sub_t *sub = calloc(1, sizeof(*sub));
    if (!sub)
        return NULL;
    size_t n = strlen(rs->name) + sizeof("ready.");
    sub->name = strdup(rs->name);
    sub->topic = strdup(rs->topic);
    sub->ready = malloc(n);
    if (!sub->name || !sub->topic || !sub->ready) {
        sub_free(sub);
        return NULL;
    }
    snprintf(sub->ready, n, MSM_STREAM_READY, rs->name);
    sub->m_fanned = msm_metric_labels(s->f_fanned, rs->name, NULL);
    sub->m_scheduled = msm_metric_labels(s->f_scheduled, rs->name, NULL);
    sub->m_fired = msm_metric_labels(s->f_fired, rs->name, NULL);
    sub->m_filtered = msm_metric_labels(s->f_filtered, rs->name, NULL);
    return sub;
}

/* Brings the subscription entries in line with the registry. */
static void reconcile_subs(scheduler_t *s)
{
    for (sch_sub_t *sub = s->subs; sub; sub = sub->next)
        sub->keep = 0;
    for (size_t i = 0; i < msm_registry_sub_count(s->registry); i++) {
        const msm_sub_t *rs = msm_registry_sub_at(s->registry, i);
        sch_sub_t *sub = sch__sub(s, rs->name);
        if (sub && strcmp(sub->topic, rs->topic) != 0) {
            char *topic = strdup(rs->topic);
            if (topic) {
                free(sub->topic);
                sub->topic = topic;
            }
        }
        if (!sub && (sub = sub_new(s, rs)) != NULL) {
            sub->next = s->subs;
            s->subs = sub;
            msm_log(MSM_LOG_INFO, "scheduler", "subscription %s on topic %s", rs->name, rs->topic);
        }
        if (sub) {
            sub->keep = 1;
            sch__ensure_ready(s, sub);
        }
    }
    for (sch_sub_t **p = &s->subs; *p;) {
        sch_sub_t *sub = *p;
        if (sub->keep) {
            p = &sub->next;
            continue;
        }
        msm_log(MSM_LOG_INFO, "scheduler", "subscription %s removed", sub->name);
        *p = sub->next;
        sub_free(sub);
    }
}

/* ---- topics and their consumers ---- */

static void topic_destroy(sch_topic_t *t)
{
    free(t->name);
    free(t->stream);
    free(t);
}

static void topic_start_consumer(sch_topic_t *t)
{
    scheduler_t *s = t->sch;
    char err[256] = "";
    t->consumer =
        msm_stream_consume(s->stream, t->stream, SCH_GROUP, s->member, (size_t)s->conf.batch,
                           (size_t)s->conf.max_unacked, sch__on_events, t, err, sizeof(err));
    if (!t->consumer) {
        msm_log(MSM_LOG_ERROR, "scheduler", "consuming %s: %s", t->stream, err);
        return;
    }
    /* Batches come with the registry version read after them: no check of our own when the
     * registry is that new already (Kafka: no stamps, every batch checks). */
    (void)msm_consumer_set_stamp(t->consumer, MSM_KEY_VERSION);
    s->stats.consumers++;
    msm_gauge_set(s->m_consumers, (double)s->stats.consumers);
    msm_log(MSM_LOG_INFO, "scheduler", "consuming %s as %s/%s", t->stream, SCH_GROUP, s->member);
}

static void topic_stop_consumer(sch_topic_t *t)
{
    if (!t->consumer)
        return;
    sch__topic_detach_jobs(t);
    msm_consumer_free(t->consumer);
    t->consumer = NULL;
    t->sch->stats.consumers--;
    msm_gauge_set(t->sch->m_consumers, (double)t->sch->stats.consumers);
}

static void on_events_ensured(msm_err_t err, const char *reason, void *opaque)
{
    sch_topic_t *t = opaque;
    scheduler_t *s = t->sch;
    t->ensuring = 0;
    if (err != MSM_OK)
        t->partitions = 0;
    if (t->removed) {
        topic_destroy(t);
    } else if (!s->stopping) {
        if (err != MSM_OK)
            msm_log(MSM_LOG_WARN, "scheduler",
                    "ensuring %s: %s; consuming anyway (the consumer waits for the stream)",
                    t->stream, reason ? reason : msm_err_str(err));
        topic_start_consumer(t);
    }
    sch__release(s);
}

static sch_topic_t *topic_new(scheduler_t *s, const char *name)
{
    sch_topic_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    size_t n = strlen(name) + sizeof("events.");
    t->sch = s;
    t->name = strdup(name);
    t->stream = malloc(n);
    if (!t->name || !t->stream) {
        topic_destroy(t);
        return NULL;
    }
    snprintf(t->stream, n, MSM_STREAM_EVENTS, name);
    t->m_consumed = msm_metric_labels(s->f_consumed, name, NULL);
    t->m_invalid = msm_metric_labels(s->f_invalid, name, NULL);
    const msm_topic_t *rt = msm_registry_topic(s->registry, name);
    if (rt &&
        msm_stream_ensure(s->stream, t->stream, rt->partitions, on_events_ensured, t) == MSM_OK) {
        t->ensuring = 1;
        t->partitions = rt->partitions;
        sch__hold(s);
    } else {
        /* Not registered (yet): the consumer waits until the frontend creates the stream. */
        topic_start_consumer(t);
    }
    return t;
}

/* Frees the entry, or leaves it to the pending ensure callback. */
static void topic_drop(sch_topic_t *t)
{
    topic_stop_consumer(t);
    if (t->ensuring)
        t->removed = 1;
    else
        topic_destroy(t);
}

static sch_topic_t *topic_find(scheduler_t *s, const char *name)
{
    for (sch_topic_t *t = s->topics; t; t = t->next) {
        if (strcmp(t->name, name) == 0)
            return t;
    }
    return NULL;
}

static void topic_keep(scheduler_t *s, const char *name)
{
    sch_topic_t *t = topic_find(s, name);
    if (!t && (t = topic_new(s, name)) != NULL) {
        t->next = s->topics;
        s->topics = t;
    }
    if (t)
        t->keep = 1;
}

/* One consumer per topic, subscribed or not (and per topic a subscription names): an event
 * published while a topic has no subscription is read and dropped, as Pub/Sub does (a
 * subscription receives what is published after its PUT answered), so the topic's log is
 * trimmed and stays bounded. */
static void reconcile_topics(scheduler_t *s)
{
    for (sch_topic_t *t = s->topics; t; t = t->next)
        t->keep = 0;
    size_t n = s->registry ? msm_registry_topic_count(s->registry) : 0;
    for (size_t i = 0; i < n; i++)
        topic_keep(s, msm_registry_topic_at(s->registry, i)->name);
    for (sch_sub_t *sub = s->subs; sub; sub = sub->next)
        topic_keep(s, sub->topic);
    for (sch_topic_t **p = &s->topics; *p;) {
        sch_topic_t *t = *p;
        if (t->keep) {
            p = &t->next;
            continue;
        }
        msm_log(MSM_LOG_INFO, "scheduler", "topic %s deleted: not consuming", t->name);
        *p = t->next;
        topic_drop(t);
    }
}

static void on_registry(msm_registry_t *reg, void *opaque)
{
    (void)reg;
    scheduler_t *s = opaque;
    if (s->stopping)
        return;
    reconcile_subs(s);
    reconcile_topics(s);
    sch__recurring_sync(s->recurring);
    sch_cdc_reconcile(s->cdc, s->registry);
    /* A subscription may have come with delayed events of an earlier life: look now. */
    sch__delayed_kick(s);
}

/* ---- readiness, metrics ---- */

static int ready_cb(void *opaque, char *why, size_t n)
{
    scheduler_t *s = opaque;
    if (scheduler_ready(s))
        return 1;
    snprintf(why, n, "registry not loaded");
    return 0;
}

static int register_metrics(scheduler_t *s, msm_metrics_t *m)
{
    static const char *const by_topic[] = {"topic", NULL};
    static const char *const by_sub[] = {"subscription", NULL};
    msm_metric_t *lateness = NULL, *retries = NULL, *consumers = NULL;
    int rc = 0;
    rc |= msm_metrics_counter(m, "msm_scheduler_events_consumed_total",
                              "events read from events.<topic> (redeliveries included)", by_topic,
                              &s->f_consumed);
    rc |= msm_metrics_counter(m, "msm_scheduler_events_invalid_total",
                              "records of events.<topic> that are not a msm.v1.Event (dropped)",
                              by_topic, &s->f_invalid);
    rc |= msm_metrics_counter(m, "msm_scheduler_tasks_fanned_out_total",
                              "tasks written for a subscription: to ready.<sub> or delayed", by_sub,
                              &s->f_fanned);
    rc |= msm_metrics_counter(m, "msm_scheduler_events_filtered_total",
                              "events the subscription's filter kept out: neither in "
                              "ready.<sub> nor delayed (acknowledged batches only)",
                              by_sub, &s->f_filtered);
    rc |=
        msm_metrics_counter(m, "msm_scheduler_delayed_scheduled_total",
                            "delayed events newly held until deliver_at", by_sub, &s->f_scheduled);
    rc |= msm_metrics_counter(m, "msm_scheduler_delayed_fired_total",
                              "delayed events moved to ready.<sub> when due", by_sub, &s->f_fired);
    rc |= msm_metrics_histogram(m, "msm_scheduler_delayed_fire_lateness_seconds",
                                "how long after deliver_at a delayed event reached ready.<sub>",
                                NULL, lateness_buckets,
                                sizeof(lateness_buckets) / sizeof(lateness_buckets[0]), &lateness);
    rc |= msm_metrics_counter(m, "msm_scheduler_write_retries_total",
                              "failed writes to Redis or the log retried after a backoff", NULL,
                              &retries);
    rc |= msm_metrics_gauge(m, "msm_scheduler_consumers", "topic consumers running", NULL,
                            &consumers);
    if (rc)
        return -1;
    s->m_lateness = msm_metric_solo(lateness);
    s->m_retries = msm_metric_solo(retries);
    s->m_consumers = msm_metric_solo(consumers);
    return 0;
}

/* ---- life cycle ---- */

scheduler_t *scheduler_new(msm_daemon_t *d, const sch_conf_t *conf)
{
    scheduler_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->daemon = d;
    s->loop = msm_daemon_loop(d);
    s->redis = msm_daemon_redis(d);
    s->stream = msm_daemon_stream(d);
    s->conf = *conf;
    memset(&s->conf.common, 0, sizeof(s->conf.common)); /* the strings stay the daemon's */
    if (s->conf.retry_max_ms < s->conf.retry_min_ms)
        s->conf.retry_max_ms = s->conf.retry_min_ms;
    snprintf(s->member, sizeof(s->member), "%s", msm_daemon_member(d));
    msm_timer_init(&s->delay_timer);
    s->hint_ms = INT64_MAX;
    s->claim_script = msm_redis_script_new(CLAIM_LUA);
    if (!s->claim_script || register_metrics(s, msm_daemon_metrics(d)) != 0 ||
        !(s->recurring = sch__recurring_new(s)))
        goto fail;
    char err[256];
    if (!(s->cdc = sch_cdc_new(d, conf, msm_daemon_metrics(d), err, sizeof(err)))) {
        msm_log(MSM_LOG_ERROR, "scheduler", "CDC pull: %s", err);
        goto fail;
    }
    s->registry = msm_registry_new(s->redis, (uint32_t)s->conf.registry_poll_ms, on_registry, s);
    if (!s->registry)
        goto fail;
    msm_daemon_set_ready(d, ready_cb, s);
    return s;
fail:
    sch__recurring_free(s->recurring);
    sch_cdc_free(s->cdc);
    msm_redis_script_free(s->claim_script);
    free(s);
    return NULL;
}

void scheduler_stop(void *opaque)
{
    scheduler_t *s = opaque;
    if (s->stopping)
        return;
    s->stopping = 1;
    msm_registry_free(s->registry);
    s->registry = NULL;
    for (sch_topic_t *t = s->topics; t; t = t->next)
        topic_stop_consumer(t); /* its last XACKs count in msm_stream_pending_appends() */
    sch__delayed_stop(s);
    sch__recurring_stop(s->recurring);
    sch_cdc_stop(s->cdc);
    msm_log(MSM_LOG_INFO, "scheduler",
            "stopped consuming; unacknowledged events will be redelivered");
}

int scheduler_drained(void *opaque)
{
    scheduler_t *s = opaque;
    return s->inflight == 0 && sch_cdc_drained(s->cdc) &&
           msm_stream_pending_appends(s->stream) == 0;
}

int scheduler_ready(const scheduler_t *s)
{
    return s->registry && msm_registry_loaded(s->registry);
}

void scheduler_stats(const scheduler_t *s, sch_stats_t *out)
{
    *out = s->stats;
    out->jobs = s->njobs;
    out->inflight = s->inflight;
}

static void destroy(scheduler_t *s)
{
    sch__recurring_free(s->recurring);
    msm_redis_script_free(s->claim_script);
    free(s);
}

void scheduler_free(scheduler_t *s)
{
    if (!s)
        return;
    scheduler_stop(s);
    msm_daemon_set_ready(s->daemon, NULL, NULL);
    while (s->topics) {
        sch_topic_t *t = s->topics;
        s->topics = t->next;
        topic_drop(t);
    }
    while (s->subs) {
        sch_sub_t *sub = s->subs;
        s->subs = sub->next;
        sub_free(sub);
    }
    sch_cdc_free(s->cdc); /* what it has in flight completes on its own */
    s->cdc = NULL;
    s->freed = 1;
    if (s->inflight == 0)
        destroy(s);
}
