/* SPDX-License-Identifier: MIT */
/* Fan-out: one consumed batch of events.<topic> becomes, per subscription of the topic, one
 * append of a TaskBatch record to ready.<sub> (the events due now; split only past
 * record_max_tasks/bytes) and one pipelined HSET + ZADD NX into the delayed store (events
 * whose deliver_at lies ahead). Before that the registry must be at least as new as the
 * batch (the subscription barrier: the batch's stamp says so, or a check of the version),
 * so a subscription created before the event was published gets it.
 * An event its subscription's filter does not match is left out of both writes (and so of
 * everything after them); it is only counted, once the batch is acknowledged.
 * The batch is acknowledged only once every write has completed OK; a failed write is
 * retried after a backoff without acknowledging, so progress resumes as soon as the backend
 * is back (and a crash meanwhile means a redelivery, never a loss). */
#include "sch_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OP_TODO, OP_INFLIGHT, OP_DONE, OP_FAILED } op_state_t;

/* One write of a batch: all its events for one subscription, due now or delayed. */
typedef struct {
    sch_job_t *job;
    char *sub;
    int delayed;
    size_t *idx; /* indexes into job->events, in event order */
    size_t n;
    int64_t earliest; /* delayed: the smallest deliver_at */
    int replies;      /* delayed: HSET and ZADD replies still awaited */
    int failed;       /* delayed: one of them failed */
    op_state_t state;
} sch_op_t;

/* The events of a batch one subscription's filter kept out: counted once it is acked. */
typedef struct {
    char *sub;
    size_t n;
} sch_skip_t;

struct sch_job_s {
    sch_job_t *prev, *next; /* in topic->jobs */
    scheduler_t *sch;
    sch_topic_t *topic; /* NULL once the consumer is gone (its messages with it) */
    msm_stream_msg_t **msgs;
    Msm__V1__Event **events; /* unpacked into arena */
    msm_arena_t *arena;
    size_t n;
    sch_op_t *ops;
    size_t nops;
    sch_skip_t *skips;
    size_t nskips;
    size_t inflight; /* writes, or the registry sync, awaiting completion */
    int synced;      /* the registry was checked: ops are built */
    uint32_t attempt;
    msm_timer_t retry_timer;
    msm_spans_t spans; /* of its sampled events */
};

static void job_send(sch_job_t *job);

static void on_retry_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    job_send(opaque);
}

/* ---- jobs ---- */

static void job_unlink(sch_job_t *job)
{
    sch_topic_t *t = job->topic;
    if (!t)
        return;
    if (job->prev)
        job->prev->next = job->next;
    else
        t->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
    job->topic = NULL;
}

static void job_free(sch_job_t *job)
{
    scheduler_t *s = job->sch;
    msm_loop_timer_stop(s->loop, &job->retry_timer);
    job_unlink(job);
    for (size_t i = 0; i < job->nops; i++) {
        sch_op_t *op = &job->ops[i];
        free(op->sub);
        free(op->idx);
    }
    for (size_t i = 0; i < job->nskips; i++)
        free(job->skips[i].sub);
    msm_arena_free(job->arena); /* every event of the batch */
    msm_spans_deinit(&job->spans);
    free(job->skips);
    free(job->ops);
    free(job->events);
    free(job->msgs);
    free(job);
    s->njobs--;
}

void sch__topic_detach_jobs(sch_topic_t *t)
{
    while (t->jobs) {
        sch_job_t *job = t->jobs;
        job_unlink(job); /* its messages die with the consumer: never acknowledged */
        if (!job->inflight)
            job_free(job);
    }
}

/* Sends what is not done yet again after a backoff (@p failed writes or syncs). */
static void job_retry(sch_job_t *job, size_t failed)
{
    scheduler_t *s = job->sch;
    job->attempt++;
    s->stats.fanout_retries += failed;
    msm_counter_add(s->m_retries, failed);
    msm_loop_timer_start(s->loop, &job->retry_timer, sch__backoff_ms(s, job->attempt),
                         on_retry_timer, job);
}

/* Every write of the job has completed: acknowledge, or retry what failed. */
static void job_settle(sch_job_t *job)
{
    scheduler_t *s = job->sch;
    if (!job->topic || s->freed || s->stopping) {
        job_free(job);
        return;
    }
    size_t failed = 0;
    for (size_t i = 0; i < job->nops; i++)
        failed += job->ops[i].state != OP_DONE;
    if (!failed) {
        for (size_t i = 0; i < job->n; i++)
            msm_consumer_ack(job->topic->consumer, job->msgs[i]);
        for (size_t i = 0; i < job->nskips; i++) {
            sch_sub_t *sub = sch__sub(s, job->skips[i].sub);
            if (sub)
                msm_counter_add(sub->m_filtered, job->skips[i].n);
        }
        sch__trace_end(&job->spans, job->events, job->n, "fanout", NULL);
        job_free(job);
        return;
    }
    job_retry(job, failed);
}

/* ---- one write ---- */

static void op_done(sch_op_t *op, int ok)
{
    sch_job_t *job = op->job;
    scheduler_t *s = job->sch;
    op->state = ok ? OP_DONE : OP_FAILED;
    job->inflight--;
    if (!job->inflight)
        job_settle(job);
    sch__release(s);
}

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    sch_op_t *op = opaque;
    scheduler_t *s = op->job->sch;
    if (!s->freed) {
        sch_sub_t *sub = sch__sub(s, op->sub);
        if (err == MSM_OK)
            msm_sub_count_enqueued(s->redis, op->sub, op->n);
        if (err == MSM_OK && sub) {
            msm_counter_add(sub->m_fanned, op->n);
        } else if (err != MSM_OK && !s->stopping) {
            msm_log(MSM_LOG_WARN, "scheduler", "appending %zu tasks to ready.%s: %s (retrying)",
                    op->n, op->sub, reason ? reason : msm_err_str(err));
            if (err == MSM_ERR_NOTFOUND && sub) {
                sub->ready_state = 0; /* gone (server reset?): make it again */
                sch__ensure_ready(s, sub);
            }
        }
    }
    op_done(op, err == MSM_OK);
}

static void delayed_reply(sch_op_t *op, const char *why)
{
    scheduler_t *s = op->job->sch;
    if (why) {
        if (!op->failed && !s->freed && !s->stopping)
            msm_log(MSM_LOG_WARN, "scheduler", "storing %zu delayed events of %s: %s (retrying)",
                    op->n, op->sub, why);
        op->failed = 1;
    }
    if (--op->replies)
        return;
    if (!op->failed && !s->freed) {
        sch_sub_t *sub = sch__sub(s, op->sub);
        if (sub)
            msm_counter_add(sub->m_fanned, op->n);
        sch__delayed_hint(s, op->earliest);
    }
    op_done(op, !op->failed);
}

/* HSET sub:{s}:delayed:events: the packed events are stored. */
static void on_delayed_stored(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    delayed_reply(opaque, msm_redis_reply_err(reply, err));
}

/* ZADD NX sub:{s}:delayed: their ids are due at deliver_at; the reply counts the new ones
 * (a redelivered event still waiting keeps its place, and a claim in progress its lease). */
static void on_delayed_indexed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_op_t *op = opaque;
    scheduler_t *s = op->job->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && reply->type != REDIS_REPLY_INTEGER)
        why = "unexpected reply to ZADD";
    if (!why && !s->freed) {
        sch_sub_t *sub = sch__sub(s, op->sub);
        if (sub)
            msm_counter_add(sub->m_scheduled, (uint64_t)reply->integer);
    }
    delayed_reply(op, why);
}

static int send_ready(sch_op_t *op)
{
    sch_job_t *job = op->job;
    scheduler_t *s = job->sch;
    sch_sub_t *sub = sch__sub(s, op->sub);
    char name[SCH_KEY_MAX];
    snprintf(name, sizeof(name), MSM_STREAM_READY, op->sub);
    if (sub)
        sch__ensure_ready(s, sub); /* no-op once ensured; queued before the append if not */
    Msm__V1__Event **evs = calloc(op->n, sizeof(*evs));
    if (!evs)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < op->n; i++)
        evs[i] = job->events[op->idx[i]];
    sch_records_t recs;
    int rc = sch__records_build(s, op->sub, evs, op->n, &recs);
    if (rc == MSM_OK)
        rc = msm_stream_append(s->stream, name, recs.recs, recs.n, on_appended, op);
    sch__records_deinit(&recs);
    free(evs);
    return rc;
}

/* HSET then ZADD NX, pipelined (no script: nothing per event runs in Lua). The hash comes
 * first: an id in the set always finds its event, unless a crash came between the two, and
 * then the event is redelivered and both are written again. */
static int send_delayed(sch_op_t *op)
{
    sch_job_t *job = op->job;
    scheduler_t *s = job->sch;
    size_t argc = 2 + 2 * op->n;
    const char **hset = calloc(argc, sizeof(*hset)), **zadd = calloc(argc + 1, sizeof(*zadd));
    size_t *hlens = calloc(argc, sizeof(*hlens)), *zlens = calloc(argc + 1, sizeof(*zlens));
    char *nums = malloc(op->n * 24);
    char hkey[SCH_KEY_MAX], zkey[SCH_KEY_MAX];
    int rc = MSM_ERR_NOMEM;
    if (!hset || !zadd || !hlens || !zlens || !nums)
        goto out;
    rc = MSM_ERR_TOOLARGE;
    int hl = msm_redis_key(s->redis, hkey, sizeof(hkey), MSM_KEY_DELAYED_EV, op->sub);
    int zl = msm_redis_key(s->redis, zkey, sizeof(zkey), MSM_KEY_DELAYED, op->sub);
    if (hl < 0 || zl < 0)
        goto out;
    hset[0] = "HSET";
    hlens[0] = 4;
    hset[1] = hkey;
    hlens[1] = (size_t)hl;
    zadd[0] = "ZADD";
    zlens[0] = 4;
    zadd[1] = zkey;
    zlens[1] = (size_t)zl;
    zadd[2] = "NX";
    zlens[2] = 2;
    for (size_t i = 0; i < op->n; i++) {
        const Msm__V1__Event *ev = job->events[op->idx[i]];
        const msm_stream_msg_t *msg = job->msgs[op->idx[i]];
        char *at = nums + i * 24;
        hset[2 + 2 * i] = ev->id;
        hlens[2 + 2 * i] = strlen(ev->id);
        hset[3 + 2 * i] = msg->value; /* the packed Event exactly as published */
        hlens[3 + 2 * i] = msg->value_len;
        zadd[3 + 2 * i] = at;
        zlens[3 + 2 * i] = (size_t)snprintf(at, 24, "%" PRId64, ev->deliver_at_ms);
        zadd[4 + 2 * i] = ev->id;
        zlens[4 + 2 * i] = strlen(ev->id);
    }
    rc = msm_redis_command_argv(s->redis, on_delayed_stored, op, (int)argc, hset, hlens);
    if (rc != MSM_OK)
        goto out;
    op->failed = 0;
    op->replies = 1;
    if (msm_redis_command_argv(s->redis, on_delayed_indexed, op, (int)argc + 1, zadd, zlens) ==
        MSM_OK)
        op->replies++;
    else
        op->failed = 1; /* the HSET's reply completes the op, as failed */
out:
    free(hset);
    free(zadd);
    free(hlens);
    free(zlens);
    free(nums);
    return rc;
}

static int job_build_ops(sch_job_t *job, int64_t now);

/* The registry is at least as new as the batch: its writes go out. */
static void job_synced(sch_job_t *job)
{
    if (job_build_ops(job, msm_time_unix_ms()) != MSM_OK) {
        msm_log(MSM_LOG_ERROR, "scheduler", "out of memory: %zu events of %s held back", job->n,
                job->topic->stream);
        job_unlink(job); /* unacknowledged: redelivered when this consumer is restarted */
        job_free(job);
        return;
    }
    job->synced = 1;
    job_send(job); /* no write at all (no subscription any more): acknowledged at once */
}

/* The registry is as new as it was when the batch arrived (or could not be asked). */
static void on_synced(msm_registry_t *reg, int err, void *opaque)
{
    (void)reg;
    sch_job_t *job = opaque;
    scheduler_t *s = job->sch;
    job->inflight--;
    if (!job->topic || s->freed || s->stopping) {
        job_free(job);
    } else if (err != MSM_OK) {
        msm_log(MSM_LOG_WARN, "scheduler",
                "checking the registry before fanning out %zu events of %s: %s (retrying)", job->n,
                job->topic->stream, msm_err_str(err));
        job_retry(job, 1);
    } else {
        job_synced(job);
    }
    sch__release(s);
}

/* The subscription barrier: fan out only with a registry at least as new as the batch. */
static void job_sync(sch_job_t *job)
{
    scheduler_t *s = job->sch;
    if (msm_registry_sync(s->registry, on_synced, job) != MSM_OK) {
        job_retry(job, 1);
        return;
    }
    job->inflight++;
    sch__hold(s);
}

/* Sends every write not yet done (all of them the first time, the failed ones after). */
static void job_send(sch_job_t *job)
{
    scheduler_t *s = job->sch;
    if (!job->topic || s->stopping) {
        job_free(job);
        return;
    }
    if (!job->synced) {
        job_sync(job);
        return;
    }
    for (size_t i = 0; i < job->nops; i++) {
        sch_op_t *op = &job->ops[i];
        if (op->state == OP_DONE)
            continue;
        int rc = op->delayed ? send_delayed(op) : send_ready(op);
        if (rc != MSM_OK) {
            op->state = OP_FAILED;
            msm_log(MSM_LOG_WARN, "scheduler", "writing tasks of %s: %s (retrying)", op->sub,
                    msm_err_str(rc));
            continue;
        }
        op->state = OP_INFLIGHT;
        job->inflight++;
        sch__hold(s);
    }
    if (!job->inflight)
        job_settle(job);
}

/* ---- building a job from a batch ---- */

static void op_add_event(sch_op_t *op, size_t ev_index)
{
    op->idx[op->n++] = ev_index;
    if (op->delayed) {
        int64_t at = op->job->events[ev_index]->deliver_at_ms;
        if (op->n == 1 || at < op->earliest)
            op->earliest = at;
    }
}

static sch_op_t *op_init(sch_job_t *job, const char *sub, int delayed)
{
    sch_op_t *op = &job->ops[job->nops];
    op->job = job;
    op->delayed = delayed;
    op->sub = strdup(sub);
    op->idx = calloc(job->n, sizeof(*op->idx));
    job->nops++; /* counted at once so job_free releases a half-built op */
    if (!op->sub || !op->idx)
        return NULL;
    return op;
}

/* Per subscription of the topic: one write for the events due now, one for the delayed, of
 * the events its filter matches (Pub/Sub: the others are never stored for it). */
static int job_build_ops(sch_job_t *job, int64_t now)
{
    scheduler_t *s = job->sch;
    msm_registry_t *reg = s->registry;
    size_t nsubs = reg ? msm_registry_sub_count(reg) : 0;
    job->ops = calloc(2 * nsubs + 1, sizeof(*job->ops));
    job->skips = calloc(nsubs + 1, sizeof(*job->skips));
    if (!job->ops || !job->skips)
        return MSM_ERR_NOMEM;
    for (size_t k = 0; k < nsubs; k++) {
        const msm_sub_t *sub = msm_registry_sub_at(reg, k);
        if (strcmp(sub->topic, job->topic->name) != 0)
            continue;
        sch_op_t *now_op = NULL, *later_op = NULL;
        size_t skipped = 0;
        for (size_t i = 0; i < job->n; i++) {
            const Msm__V1__Event *ev = job->events[i];
            if (!msm_filter_match(sub->filter_expr, ev->attributes, ev->n_attributes)) {
                skipped++;
                continue;
            }
            int delayed = ev->deliver_at_ms > now;
            sch_op_t **slot = delayed ? &later_op : &now_op;
            if (!*slot && !(*slot = op_init(job, sub->name, delayed)))
                return MSM_ERR_NOMEM;
            op_add_event(*slot, i);
        }
        if (skipped) {
            sch_skip_t *skip = &job->skips[job->nskips];
            if (!(skip->sub = strdup(sub->name)))
                return MSM_ERR_NOMEM;
            skip->n = skipped;
            job->nskips++;
        }
    }
    return MSM_OK;
}

/* Unpacks the batch; records that are not events are acknowledged and dropped at once
 * (redelivering them would never help). */
static sch_job_t *job_new(sch_topic_t *t, msm_stream_msg_t *const *msgs, size_t n)
{
    scheduler_t *s = t->sch;
    sch_job_t *job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    job->sch = s;
    job->topic = t;
    msm_timer_init(&job->retry_timer);
    job->msgs = calloc(n, sizeof(*job->msgs));
    job->events = calloc(n, sizeof(*job->events));
    s->njobs++;
    if (!job->msgs || !job->events) {
        job->topic = NULL;
        job_free(job);
        return NULL;
    }
    /* One arena for the batch's events: one chunk or a few instead of a dozen allocations
     * (and frees) per event. */
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += msgs[i]->value_len * 2 + 64;
    if (!msm_arena_alloc(&job->arena, 0, bytes)) {
        job->topic = NULL;
        job_free(job);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Event *ev = msm_event_unpack_in(&job->arena, msgs[i]->value, msgs[i]->value_len);
        if (!ev || !ev->id || !*ev->id) {
            msm_log(MSM_LOG_WARN, "scheduler", "dropping %s@%s: not a msm.v1.Event with an id",
                    t->stream, msgs[i]->position);
            msm_counter_inc(t->m_invalid);
            msm_consumer_ack(t->consumer, msgs[i]);
            continue;
        }
        job->msgs[job->n] = msgs[i];
        job->events[job->n++] = ev;
    }
    sch__trace_start(&job->spans, job->events, job->n);
    /* Linked only now: job_free above must not unlink a job that was never linked. */
    job->next = t->jobs;
    if (t->jobs)
        t->jobs->prev = job;
    t->jobs = job;
    return job;
}

void sch__on_events(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    sch_topic_t *t = opaque;
    msm_counter_add(t->m_consumed, n);
    sch_job_t *job = job_new(t, msgs, n);
    if (!job) {
        /* Left unacknowledged: redelivered when this consumer is restarted. */
        msm_log(MSM_LOG_ERROR, "scheduler", "out of memory: %zu events of %s held back", n,
                t->stream);
        return;
    }
    if (!job->n) {
        job_free(job); /* nothing but invalid records, acknowledged already */
        return;
    }
    /* The registry check first (none when the batch's stamp shows the registry is new
     * enough), then the writes. */
    if (msm_registry_covers(t->sch->registry, msm_consumer_stamp(c)))
        job_synced(job);
    else
        job_send(job);
}
