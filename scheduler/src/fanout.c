/* SPDX-License-Identifier: MIT */
/* Fan-out: one consumed batch of events.<topic> becomes, per subscription of the topic, one
 * append of Tasks to ready.<sub> (events due now) and one schedule script (events whose
 * deliver_at lies ahead). The batch is acknowledged only once every one of those writes
 * has completed OK; a failed write is retried after a backoff without acknowledging, so
 * progress resumes as soon as the backend is back (and a crash meanwhile means a
 * redelivery, never a loss). */
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
    size_t *idx; /* indexes into job->events */
    size_t n;
    msm_buf_t tasks;  /* due now: the packed Tasks back to back */
    size_t *lens;     /* due now: each Task's length */
    int64_t earliest; /* delayed: the smallest deliver_at */
    op_state_t state;
} sch_op_t;

struct sch_job_s {
    sch_job_t *prev, *next; /* in topic->jobs */
    scheduler_t *sch;
    sch_topic_t *topic; /* NULL once the consumer is gone (its messages with it) */
    msm_stream_msg_t **msgs;
    Msm__V1__Event **events;
    size_t n;
    sch_op_t *ops;
    size_t nops;
    size_t inflight;
    uint32_t attempt;
    msm_timer_t retry_timer;
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
        free(op->lens);
        msm_buf_deinit(&op->tasks);
    }
    for (size_t i = 0; i < job->n; i++)
        msm_event_free(job->events[i]);
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
        job_free(job);
        return;
    }
    job->attempt++;
    s->stats.fanout_retries += failed;
    msm_counter_add(s->m_retries, failed);
    msm_loop_timer_start(s->loop, &job->retry_timer, sch__backoff_ms(s, job->attempt),
                         on_retry_timer, job);
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

static void on_scheduled(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_op_t *op = opaque;
    scheduler_t *s = op->job->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && reply->type != REDIS_REPLY_INTEGER)
        why = "unexpected reply to the schedule script";
    if (!s->freed) {
        sch_sub_t *sub = sch__sub(s, op->sub);
        if (!why) {
            if (sub) {
                msm_counter_add(sub->m_fanned, op->n);
                msm_counter_add(sub->m_scheduled, (uint64_t)reply->integer);
            }
            sch__delayed_hint(s, op->earliest);
        } else if (!s->stopping) {
            msm_log(MSM_LOG_WARN, "scheduler",
                    "scheduling %zu delayed events of %s: %s "
                    "(retrying)",
                    op->n, op->sub, why);
        }
    }
    op_done(op, why == NULL);
}

/* Partition key of a Task: the event's ordering key, else its key (as on events.<topic>). */
static const char *task_key(const Msm__V1__Event *ev, size_t *len)
{
    const char *k = ev->ordering_key && *ev->ordering_key ? ev->ordering_key : ev->key;
    *len = k ? strlen(k) : 0;
    return k;
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
    msm_record_t *recs = calloc(op->n, sizeof(*recs));
    if (!recs)
        return MSM_ERR_NOMEM;
    size_t off = 0;
    for (size_t i = 0; i < op->n; i++) {
        recs[i].key = task_key(job->events[op->idx[i]], &recs[i].key_len);
        recs[i].value = op->tasks.data + off;
        recs[i].value_len = op->lens[i];
        off += op->lens[i];
    }
    int rc = msm_stream_append(s->stream, name, recs, op->n, on_appended, op);
    free(recs);
    return rc;
}

/* Arguments of the schedule script (see SCHEDULE_LUA in scheduler.c). */
static int send_delayed(sch_op_t *op)
{
    sch_job_t *job = op->job;
    scheduler_t *s = job->sch;
    size_t nkeys = 1 + op->n, argc = nkeys + 1 + 3 * op->n;
    const char **argv = calloc(argc, sizeof(*argv));
    size_t *lens = calloc(argc, sizeof(*lens));
    char *keys = malloc(nkeys * SCH_KEY_MAX);
    char *nums = malloc((op->n + 1) * 24);
    int rc = MSM_ERR_NOMEM;
    if (!argv || !lens || !keys || !nums)
        goto out;
    rc = MSM_ERR_TOOLARGE;
    int len = msm_redis_key(s->redis, keys, SCH_KEY_MAX, MSM_KEY_DELAYED, op->sub);
    if (len < 0)
        goto out;
    argv[0] = keys;
    lens[0] = (size_t)len;
    size_t a = nkeys;
    argv[a] = nums;
    lens[a++] = (size_t)snprintf(nums, 24, "%" PRId64, msm_time_unix_ms());
    for (size_t i = 0; i < op->n; i++) {
        const Msm__V1__Event *ev = job->events[op->idx[i]];
        const msm_stream_msg_t *msg = job->msgs[op->idx[i]];
        char *key = keys + (i + 1) * SCH_KEY_MAX, *at = nums + (i + 1) * 24;
        len = msm_redis_key(s->redis, key, SCH_KEY_MAX, MSM_KEY_TASK, op->sub, ev->id);
        if (len < 0)
            goto out;
        argv[1 + i] = key;
        lens[1 + i] = (size_t)len;
        argv[a] = ev->id;
        lens[a++] = strlen(ev->id);
        argv[a] = at;
        lens[a++] = (size_t)snprintf(at, 24, "%" PRId64, ev->deliver_at_ms);
        argv[a] = msg->value; /* the packed Event exactly as published */
        lens[a++] = msg->value_len;
    }
    rc = msm_redis_eval(s->redis, s->schedule_script, on_scheduled, op, (int)nkeys, (int)argc, argv,
                        lens);
out:
    free(argv);
    free(lens);
    free(keys);
    free(nums);
    return rc;
}

/* Sends every write not yet done (all of them the first time, the failed ones after). */
static void job_send(sch_job_t *job)
{
    scheduler_t *s = job->sch;
    if (!job->topic || s->stopping) {
        job_free(job);
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

static int op_add_event(sch_op_t *op, size_t ev_index)
{
    op->idx[op->n++] = ev_index;
    if (op->delayed) {
        int64_t at = op->job->events[ev_index]->deliver_at_ms;
        if (op->n == 1 || at < op->earliest)
            op->earliest = at;
        return MSM_OK;
    }
    size_t before = op->tasks.len;
    int rc = sch__pack_task(op->job->events[ev_index], op->sub, &op->tasks);
    op->lens[op->n - 1] = op->tasks.len - before;
    return rc;
}

static sch_op_t *op_init(sch_job_t *job, const char *sub, int delayed)
{
    sch_op_t *op = &job->ops[job->nops];
    op->job = job;
    op->delayed = delayed;
    op->sub = strdup(sub);
    op->idx = calloc(job->n, sizeof(*op->idx));
    op->lens = delayed ? NULL : calloc(job->n, sizeof(*op->lens));
    job->nops++; /* counted at once so job_free releases a half-built op */
    if (!op->sub || !op->idx || (!delayed && !op->lens))
        return NULL;
    return op;
}

/* Per subscription of the topic: one write for the events due now, one for the delayed. */
static int job_build_ops(sch_job_t *job, int64_t now)
{
    scheduler_t *s = job->sch;
    msm_registry_t *reg = s->registry;
    size_t nsubs = reg ? msm_registry_sub_count(reg) : 0;
    job->ops = calloc(2 * nsubs + 1, sizeof(*job->ops));
    if (!job->ops)
        return MSM_ERR_NOMEM;
    for (size_t k = 0; k < nsubs; k++) {
        const msm_sub_t *sub = msm_registry_sub_at(reg, k);
        if (strcmp(sub->topic, job->topic->name) != 0)
            continue;
        sch_op_t *now_op = NULL, *later_op = NULL;
        for (size_t i = 0; i < job->n; i++) {
            int delayed = job->events[i]->deliver_at_ms > now;
            sch_op_t **slot = delayed ? &later_op : &now_op;
            if (!*slot && !(*slot = op_init(job, sub->name, delayed)))
                return MSM_ERR_NOMEM;
            if (op_add_event(*slot, i) != MSM_OK)
                return MSM_ERR_NOMEM;
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
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Event *ev = msm_event_unpack(msgs[i]->value, msgs[i]->value_len);
        if (!ev || !ev->id || !*ev->id) {
            msm_log(MSM_LOG_WARN, "scheduler", "dropping %s@%s: not a msm.v1.Event with an id",
                    t->stream, msgs[i]->position);
            msm_counter_inc(t->m_invalid);
            msm_event_free(ev);
            msm_consumer_ack(t->consumer, msgs[i]);
            continue;
        }
        job->msgs[job->n] = msgs[i];
        job->events[job->n++] = ev;
    }
    /* Linked only now: job_free above must not unlink a job that was never linked. */
    job->next = t->jobs;
    if (t->jobs)
        t->jobs->prev = job;
    t->jobs = job;
    return job;
}

void sch__on_events(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    (void)c;
    sch_topic_t *t = opaque;
    msm_counter_add(t->m_consumed, n);
    sch_job_t *job = job_new(t, msgs, n);
    if (!job) {
        /* Left unacknowledged: redelivered when this consumer is restarted. */
        msm_log(MSM_LOG_ERROR, "scheduler", "out of memory: %zu events of %s held back", n,
                t->stream);
        return;
    }
    if (job_build_ops(job, msm_time_unix_ms()) != MSM_OK) {
        msm_log(MSM_LOG_ERROR, "scheduler", "out of memory: %zu events of %s held back", n,
                t->stream);
        job_unlink(job); /* unacknowledged: redelivered when this consumer is restarted */
        job_free(job);
        return;
    }
    job_send(job); /* no write at all (no subscription any more): acknowledged at once */
}
