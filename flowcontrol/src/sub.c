/* SPDX-License-Identifier: MIT */
/* One subscription's engine: admits ready.<sub> into pending, takes pending tasks into
 * running within max_concurrency and appends them to dispatch.<sub>, brings due retries back
 * to pending and hands expired leases to the complete script as failed attempts. Every step is
 * a script (scripts.c); the timers only decide when to run them. */
#include "fc_int.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENSURE_RETRY_MS 1000

static int stopped(const fc_sub_t *sub)
{
    return sub->removed || sub->fc->stopping;
}

/* ---- admit: ready.<sub> → pending ---- */

static void admit_send(fc_op_t *op);

static void on_admit_retry(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    admit_send(opaque);
}

static void on_admitted(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_op_t *op = fc_op_answered(opaque);
    if (!op)
        return;
    fc_sub_t *sub = op->sub;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != op->nmsgs))
        why = "unexpected reply";
    if (why) {
        msm_log(MSM_LOG_WARN, "admit", "subscription %s: admitting %zu tasks failed: %s", sub->name,
                op->nmsgs, why);
        fc_op_retry_later(op, on_admit_retry);
        return;
    }
    size_t admitted = 0;
    for (size_t i = 0; i < reply->elements; i++)
        admitted += msm_redis_reply_int(reply->element[i], 0) == 1;
    msm_counter_add(sub->m_admitted, admitted);
    msm_counter_add(sub->m_duplicates, reply->elements - admitted);
    fc_op_ack(op);
    if (admitted)
        fc_sub_kick(sub);
    fc_op_free(op);
}

static void admit_send(fc_op_t *op)
{
    if (fc_op_eval(op, op->fc->scripts->admit, 1, on_admitted) != MSM_OK)
        fc_op_retry_later(op, on_admit_retry);
}

/* Adds one ready Task to the admit script's arguments; a record that is not a usable Task
 * is acknowledged and dropped (it can never become one). */
static int admit_add(fc_op_t *op, msm_stream_msg_t *msg, msm_buf_t *buf)
{
    fc_sub_t *sub = op->sub;
    Msm__V1__Task *task = msm_task_unpack(msg->value, msg->value_len);
    const Msm__V1__Event *ev = task ? task->event : NULL;
    if (!ev || !ev->id || !*ev->id || strlen(ev->id) > MSM_NAME_MAX) {
        msm_log(MSM_LOG_WARN, "admit", "subscription %s: dropping ready entry %s: not a task",
                sub->name, msg->position);
        msm_task_free(task);
        msm_consumer_ack(sub->ready, msg);
        return MSM_OK;
    }
    int priority = ev->priority < 0 ? 0 : ev->priority > 9 ? 9 : ev->priority;
    long long score = msm_pending_score(priority, op->now_ms);
    int rc = msm_pb_pack(&ev->base, buf);
    if (rc == MSM_OK)
        rc = fc_args_add(&op->args, ev->id, strlen(ev->id));
    if (rc == MSM_OK)
        rc = fc_args_addf(&op->args, "%lld", score);
    if (rc == MSM_OK)
        rc = fc_args_addf(&op->args, "%d", priority);
    if (rc == MSM_OK)
        rc = fc_args_add(&op->args, buf->data, buf->len);
    if (rc == MSM_OK)
        rc = fc_op_hold(op, msg);
    msm_task_free(task);
    return rc;
}

static void on_ready_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    fc_sub_t *sub = opaque;
    if (stopped(sub))
        return; /* unacknowledged: delivered again after a restart */
    fc_op_t *op = fc_op_new(sub->fc, sub, FC_OP_ADMIT);
    if (!op)
        return;
    op->consumer = c;
    op->now_ms = msm_time_unix_ms();
    msm_buf_t buf = {0};
    int rc = fc_args_add(&op->args, sub->k_pending, strlen(sub->k_pending));
    if (rc == MSM_OK)
        rc = fc_args_add(&op->args, sub->k_task, strlen(sub->k_task));
    if (rc == MSM_OK)
        rc = fc_args_addf(&op->args, "%lld", (long long)op->now_ms);
    for (size_t i = 0; rc == MSM_OK && i < n; i++)
        rc = admit_add(op, msgs[i], &buf);
    msm_buf_deinit(&buf);
    if (rc != MSM_OK) {
        msm_log(MSM_LOG_ERROR, "admit", "subscription %s: %s", sub->name, msm_err_str(rc));
        fc_op_free(op); /* the entries stay unacknowledged until a restart */
        return;
    }
    if (op->nmsgs == 0) {
        fc_op_free(op);
        return;
    }
    admit_send(op);
}

/* ---- take: pending → running → dispatch.<sub> ---- */

static void take_send(fc_sub_t *sub);

static void on_admit_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    take_send(opaque);
}

static void arm_admit(fc_sub_t *sub, uint64_t delay_ms)
{
    if (stopped(sub))
        return;
    msm_loop_timer_start(sub->fc->env.loop, &sub->admit_timer, delay_ms, on_admit_timer, sub);
}

void fc_sub_kick(fc_sub_t *sub)
{
    if (sub->taking)
        sub->take_again = 1;
    else
        arm_admit(sub, 0);
}

static void on_dispatched(msm_err_t err, const char *reason, void *opaque)
{
    fc_op_t *op = fc_op_answered(opaque);
    if (!op)
        return;
    if (err == MSM_OK) {
        msm_counter_add(op->sub->m_dispatched, op->nitems);
    } else {
        /* The tasks are running with a lease: when it expires they are retried. */
        msm_log(MSM_LOG_WARN, "dispatch", "subscription %s: appending %zu tasks failed: %s",
                op->sub->name, op->nitems, reason ? reason : msm_err_str(err));
        msm_counter_add(op->sub->m_dispatch_failures, op->nitems);
    }
    fc_op_free(op);
}

/* Packs one taken task (id, attempt, packed event from the take reply) as a msm.v1.Task. */
static int task_pack(fc_sub_t *sub,
                     const redisReply *const *item,
                     int64_t lease_until,
                     msm_buf_t *buf,
                     msm_record_t *rec)
{
    Msm__V1__Event *ev = msm_event_unpack(item[2]->str, item[2]->len);
    if (!ev) {
        msm_log(MSM_LOG_ERROR, "dispatch", "subscription %s: task %s has a corrupt event",
                sub->name, item[0]->str);
        return MSM_ERR_PARSE;
    }
    Msm__V1__Task task = MSM__V1__TASK__INIT;
    task.event = ev;
    task.subscription = sub->name;
    task.attempt = (int32_t)msm_redis_reply_int(item[1], 0);
    task.state = MSM__V1__TASK_STATE__TASK_STATE_RUNNING;
    task.lease_until_ms = lease_until;
    int rc = msm_pb_pack(&task.base, buf);
    /* Per-key order lives in the ordering key, else the key, as on events.<topic>. */
    const char *key = ev->ordering_key && *ev->ordering_key ? ev->ordering_key : ev->key;
    char *key_copy = key && *key ? strdup(key) : NULL;
    *rec = (msm_record_t){.key = key_copy,
                          .key_len = key_copy ? strlen(key_copy) : 0,
                          .value = buf->data,
                          .value_len = buf->len};
    msm_event_free(ev);
    return rc;
}

static void dispatch(fc_sub_t *sub, const redisReply *items, int64_t lease_until)
{
    size_t n = items->elements / 3, k = 0;
    if (!n)
        return;
    msm_record_t *recs = calloc(n, sizeof(*recs));
    msm_buf_t *bufs = calloc(n, sizeof(*bufs));
    fc_op_t *op = recs && bufs ? fc_op_new(sub->fc, sub, FC_OP_DISPATCH) : NULL;
    for (size_t i = 0; op && i < n; i++) {
        if (task_pack(sub, (const redisReply *const *)&items->element[3 * i], lease_until, &bufs[k],
                      &recs[k]) == MSM_OK) {
            k++;
        } else {
            free((void *)recs[k].key);
            recs[k] = (msm_record_t){0};
        }
    }
    int rc = MSM_ERR_NOMEM;
    if (op && k) {
        op->nitems = k;
        rc = msm_stream_append(sub->fc->env.stream, sub->s_dispatch, recs, k, on_dispatched, op);
        op->in_call = rc == MSM_OK;
    }
    if (rc != MSM_OK) {
        msm_counter_add(sub->m_dispatch_failures, n);
        if (k)
            msm_log(MSM_LOG_WARN, "dispatch", "subscription %s: %s", sub->name, msm_err_str(rc));
        fc_op_free(op);
    }
    for (size_t i = 0; recs && bufs && i < n; i++) {
        free((void *)recs[i].key);
        msm_buf_deinit(&bufs[i]);
    }
    free(recs);
    free(bufs);
}

static void on_taken(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_op_t *op = fc_op_answered(opaque);
    if (!op)
        return;
    fc_sub_t *sub = op->sub;
    sub->taking = 0;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
                 reply->element[2]->type != REDIS_REPLY_ARRAY))
        why = "unexpected reply";
    if (why) {
        msm_log(MSM_LOG_WARN, "admission", "subscription %s: take failed: %s", sub->name, why);
        sub->take_again = 0;
        arm_admit(sub, (uint64_t)sub->fc->conf.admit_poll_ms);
        fc_op_free(op);
        return;
    }
    long long running = msm_redis_reply_int(reply->element[0], 0);
    long long pending = msm_redis_reply_int(reply->element[1], 0);
    const redisReply *items = reply->element[2];
    size_t taken = items->elements / 3;
    msm_gauge_set(sub->m_in_flight, (double)running);
    dispatch(sub, items, op->lease_until_ms);
    if (taken)
        fc_sub_arm_lease(sub, op->lease_until_ms);
    /* Go on at once while there is room and work; otherwise outcomes (or the poll) kick. */
    int more = pending > 0 && running < sub->max_concurrency && taken > 0;
    if (more || sub->take_again)
        arm_admit(sub, 0);
    else
        arm_admit(sub, (uint64_t)sub->fc->conf.admit_poll_ms);
    sub->take_again = 0;
    fc_op_free(op);
}

static void take_send(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    if (stopped(sub) || sub->taking)
        return;
    if (!sub->dispatch_ready) {
        arm_admit(sub, (uint64_t)fc->conf.admit_poll_ms);
        return;
    }
    fc_op_t *op = fc_op_new(fc, sub, FC_OP_TAKE);
    if (!op) {
        arm_admit(sub, (uint64_t)fc->conf.admit_poll_ms);
        return;
    }
    op->now_ms = msm_time_unix_ms();
    op->lease_until_ms = op->now_ms + sub->timeout_ms + fc->conf.lease_grace_ms;
    fc_args_t *a = &op->args;
    int rc = fc_args_add(a, sub->k_pending, strlen(sub->k_pending));
    if (rc == MSM_OK)
        rc = fc_args_add(a, sub->k_running, strlen(sub->k_running));
    if (rc == MSM_OK)
        rc = fc_args_add(a, sub->k_task, strlen(sub->k_task));
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%lld", (long long)op->now_ms);
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%d", sub->max_concurrency);
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%d", fc->conf.batch);
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%lld", (long long)op->lease_until_ms);
    if (rc == MSM_OK)
        rc = fc_op_eval(op, fc->scripts->take, 2, on_taken);
    if (rc != MSM_OK) {
        fc_op_free(op);
        arm_admit(sub, (uint64_t)fc->conf.admit_poll_ms);
        return;
    }
    sub->taking = 1;
}

/* ---- timers at a unix-ms deadline (retry due times, lease deadlines) ---- */

/* Starts @p t to fire by @p due_unix_ms unless it already fires sooner; -1 or a far deadline
 * becomes the safety poll, so a change made elsewhere is seen in time. */
static void
arm_at(fc_sub_t *sub, msm_timer_t *t, uint64_t *at_mono, int64_t due_unix_ms, msm_loop_timer_cb *cb)
{
    if (stopped(sub))
        return;
    msm_loop_t *loop = sub->fc->env.loop;
    int64_t safety = sub->fc->conf.safety_poll_ms;
    int64_t delay = due_unix_ms < 0 ? safety : due_unix_ms - msm_time_unix_ms();
    if (delay < 0)
        delay = 0;
    if (delay > safety)
        delay = safety;
    uint64_t when = msm_loop_now_ms(loop) + (uint64_t)delay;
    if (msm_timer_active(t) && *at_mono <= when)
        return;
    *at_mono = when;
    msm_loop_timer_start(loop, t, (uint64_t)delay, cb, sub);
}

/* ---- retry: due retries → pending ---- */

static void due_send(fc_sub_t *sub);

static void on_retry_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    due_send(opaque);
}

void fc_sub_arm_retry(fc_sub_t *sub, int64_t due_unix_ms)
{
    arm_at(sub, &sub->retry_timer, &sub->retry_at_mono, due_unix_ms, on_retry_timer);
}

static void on_due(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_op_t *op = fc_op_answered(opaque);
    if (!op)
        return;
    fc_sub_t *sub = op->sub;
    sub->scanning_due = 0;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3))
        why = "unexpected reply";
    if (why) {
        msm_log(MSM_LOG_WARN, "retry", "subscription %s: retry scan failed: %s", sub->name, why);
        fc_sub_arm_retry(sub, -1);
        fc_op_free(op);
        return;
    }
    long long moved = msm_redis_reply_int(reply->element[0], 0);
    long long scanned = msm_redis_reply_int(reply->element[1], 0);
    long long next = msm_redis_reply_int(reply->element[2], 0);
    if (moved)
        fc_sub_kick(sub);
    fc_sub_arm_retry(sub, scanned >= sub->fc->conf.batch ? 0 : next);
    fc_op_free(op);
}

/* The periodic scans (due retries, expired leases) take @p nargs strings, of which the first
 * @p nkeys are keys, then now and the batch size. @returns MSM_OK once the script is sent;
 * on failure @p op is freed. */
static int scan_send(fc_op_t *op, const char *const *args, int nargs, int nkeys,
                     const msm_redis_script_t *script, msm_redis_reply_cb *cb)
{
    int rc = op ? MSM_OK : MSM_ERR_NOMEM;
    for (int i = 0; rc == MSM_OK && i < nargs; i++)
        rc = fc_args_add(&op->args, args[i], strlen(args[i]));
    if (rc == MSM_OK)
        rc = fc_args_addf(&op->args, "%lld", (long long)msm_time_unix_ms());
    if (rc == MSM_OK)
        rc = fc_args_addf(&op->args, "%d", op->fc->conf.batch);
    if (rc == MSM_OK)
        rc = fc_op_eval(op, script, nkeys, cb);
    if (rc != MSM_OK)
        fc_op_free(op);
    return rc;
}

static void due_send(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    if (stopped(sub) || sub->scanning_due)
        return;
    const char *const args[] = {sub->k_retry, sub->k_pending, sub->k_task /* prefix */};
    if (scan_send(fc_op_new(fc, sub, FC_OP_DUE), args, 3, 2, fc->scripts->due, on_due) !=
        MSM_OK) {
        fc_sub_arm_retry(sub, -1);
        return;
    }
    sub->scanning_due = 1;
}

/* ---- leases: expired running tasks → failed attempts ---- */

static void expire_send(fc_sub_t *sub);

static void on_lease_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    expire_send(opaque);
}

void fc_sub_arm_lease(fc_sub_t *sub, int64_t due_unix_ms)
{
    arm_at(sub, &sub->lease_timer, &sub->lease_at_mono, due_unix_ms, on_lease_timer);
}

static void on_expired(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_op_t *op = fc_op_answered(opaque);
    if (!op)
        return;
    fc_sub_t *sub = op->sub;
    sub->scanning_leases = 0;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
                 reply->element[0]->type != REDIS_REPLY_ARRAY))
        why = "unexpected reply";
    if (why) {
        msm_log(MSM_LOG_WARN, "lease", "subscription %s: lease scan failed: %s", sub->name, why);
        fc_sub_arm_lease(sub, -1);
        fc_op_free(op);
        return;
    }
    const redisReply *list = reply->element[0];
    if (list->elements >= 2 && !stopped(sub)) {
        fc_op_t *done = fc_complete_new(sub, 1);
        for (size_t i = 0; done && i + 1 < list->elements; i += 2)
            fc_complete_add(done, list->element[i]->str,
                            (int)msm_redis_reply_int(list->element[i + 1], 0),
                            FC_KIND_RETRIABLE, 0, "lease expired", 0, 0);
        if (done)
            fc_complete_send(done);
    }
    /* A full scan means more may be waiting; the complete just sent runs before the next
     * scan on the same connection, so the same ids are not found twice. */
    long long scanned = msm_redis_reply_int(reply->element[1], 0);
    long long next = msm_redis_reply_int(reply->element[2], 0);
    fc_sub_arm_lease(sub, scanned >= sub->fc->conf.batch ? 0 : next);
    fc_op_free(op);
}

static void expire_send(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    if (stopped(sub) || sub->scanning_leases)
        return;
    const char *const args[] = {sub->k_running, sub->k_task /* prefix */};
    if (scan_send(fc_op_new(fc, sub, FC_OP_EXPIRE), args, 2, 1, fc->scripts->expire,
                  on_expired) != MSM_OK) {
        fc_sub_arm_lease(sub, -1);
        return;
    }
    sub->scanning_leases = 1;
}

/* ---- dispatch.<sub> must exist before the first append ---- */

static void ensure_dispatch(fc_sub_t *sub);

static void on_ensure_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    ensure_dispatch(opaque);
}

static void on_ensured(msm_err_t err, const char *reason, void *opaque)
{
    fc_op_t *op = fc_op_answered(opaque);
    if (!op)
        return;
    fc_sub_t *sub = op->sub;
    if (err == MSM_OK) {
        sub->dispatch_ready = 1;
        fc_sub_kick(sub);
    } else if (!stopped(sub)) {
        msm_log(MSM_LOG_WARN, "dispatch", "subscription %s: creating %s failed: %s", sub->name,
                sub->s_dispatch, reason ? reason : msm_err_str(err));
        msm_loop_timer_start(sub->fc->env.loop, &sub->ensure_timer, ENSURE_RETRY_MS,
                             on_ensure_timer, sub);
    }
    fc_op_free(op);
}

static void ensure_dispatch(fc_sub_t *sub)
{
    if (stopped(sub))
        return;
    fc_op_t *op = fc_op_new(sub->fc, sub, FC_OP_ENSURE);
    int rc = op ? msm_stream_ensure(sub->fc->env.stream, sub->s_dispatch, sub->partitions,
                                    on_ensured, op)
                : MSM_ERR_NOMEM;
    if (op)
        op->in_call = rc == MSM_OK;
    if (rc != MSM_OK) {
        fc_op_free(op);
        msm_loop_timer_start(sub->fc->env.loop, &sub->ensure_timer, ENSURE_RETRY_MS,
                             on_ensure_timer, sub);
    }
}

/* ---- lifecycle ---- */

static int sub_metrics(fc_sub_t *sub)
{
    fc_metrics_t *m = &sub->fc->m;
    const char *n = sub->name;
    sub->m_admitted = msm_metric_labels(m->admitted, n, NULL);
    sub->m_duplicates = msm_metric_labels(m->duplicates, n, NULL);
    sub->m_dispatched = msm_metric_labels(m->dispatched, n, NULL);
    sub->m_dispatch_failures = msm_metric_labels(m->dispatch_failures, n, NULL);
    for (int k = 0; k < FC_KIND_COUNT; k++)
        sub->m_outcomes[k] = msm_metric_labels(m->outcomes, n, fc_kind_names[k], NULL);
    sub->m_stale = msm_metric_labels(m->stale, n, NULL);
    sub->m_retries = msm_metric_labels(m->retries, n, NULL);
    sub->m_dead = msm_metric_labels(m->dead, n, NULL);
    sub->m_expired = msm_metric_labels(m->expired, n, NULL);
    sub->m_in_flight = msm_metric_labels(m->in_flight, n, NULL);
    return sub->m_admitted && sub->m_in_flight ? MSM_OK : MSM_ERR_NOMEM;
}

static int sub_names(fc_sub_t *sub)
{
    msm_redis_t *r = sub->fc->env.redis;
    const char *n = sub->name;
    int bad = msm_redis_key(r, sub->k_pending, FC_KEY_MAX, MSM_KEY_PENDING, n) < 0 ||
              msm_redis_key(r, sub->k_running, FC_KEY_MAX, MSM_KEY_RUNNING, n) < 0 ||
              msm_redis_key(r, sub->k_retry, FC_KEY_MAX, MSM_KEY_RETRY, n) < 0 ||
              msm_redis_key(r, sub->k_dlq, FC_KEY_MAX, MSM_KEY_DLQ, n) < 0 ||
              msm_redis_key(r, sub->k_stats, FC_KEY_MAX, MSM_KEY_STATS, n) < 0 ||
              msm_redis_key(r, sub->k_task, FC_KEY_MAX, MSM_KEY_TASK, n, "") < 0;
    bad = bad || snprintf(sub->s_ready, FC_KEY_MAX, MSM_STREAM_READY, n) >= FC_KEY_MAX ||
          snprintf(sub->s_dispatch, FC_KEY_MAX, MSM_STREAM_DISPATCH, n) >= FC_KEY_MAX;
    return bad ? MSM_ERR_TOOLARGE : MSM_OK;
}

void fc_sub_update(fc_sub_t *sub, const msm_sub_t *s)
{
    int wider = s->max_concurrency > sub->max_concurrency;
    sub->max_concurrency = s->max_concurrency > 0 ? s->max_concurrency : 1;
    sub->timeout_ms = s->timeout_ms;
    sub->max_attempts = s->max_attempts > 0 ? s->max_attempts : 1;
    sub->min_backoff_ms = s->min_backoff_ms;
    sub->max_backoff_ms = s->max_backoff_ms;
    if (wider && sub->dispatch_ready)
        fc_sub_kick(sub);
}

fc_sub_t *fc_sub_new(flowcontrol_t *fc, const msm_sub_t *s, const msm_topic_t *topic)
{
    fc_sub_t *sub = calloc(1, sizeof(*sub));
    if (!sub)
        return NULL;
    sub->fc = fc;
    sub->refs = 1;
    sub->name = strdup(s->name);
    sub->partitions = topic && topic->partitions > 0 ? topic->partitions : 4;
    msm_timer_init(&sub->admit_timer);
    msm_timer_init(&sub->retry_timer);
    msm_timer_init(&sub->lease_timer);
    msm_timer_init(&sub->ensure_timer);
    fc_sub_update(sub, s);
    char err[256] = "";
    if (!sub->name || sub_names(sub) != MSM_OK || sub_metrics(sub) != MSM_OK)
        goto fail;
    size_t batch = (size_t)fc->conf.batch;
    sub->ready = msm_stream_consume(fc->env.stream, sub->s_ready, "flowcontrol", fc->member, batch,
                                    batch * 4, on_ready_batch, sub, err, sizeof(err));
    if (!sub->ready)
        goto fail;
    ensure_dispatch(sub);
    /* What an earlier run left behind: due retries and expired leases. */
    fc_sub_arm_retry(sub, 0);
    fc_sub_arm_lease(sub, 0);
    return sub;
fail:
    msm_log(MSM_LOG_ERROR, "flowcontrol", "subscription %s: cannot start: %s", s->name,
            *err ? err : "out of memory or name too long");
    fc_sub_destroy(sub);
    return NULL;
}

fc_sub_t *fc_sub_find(flowcontrol_t *fc, const char *name)
{
    for (fc_sub_t *s = fc->subs; s; s = s->next) {
        if (strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

void fc_sub_stop(fc_sub_t *sub)
{
    msm_loop_t *loop = sub->fc->env.loop;
    msm_loop_timer_stop(loop, &sub->admit_timer);
    msm_loop_timer_stop(loop, &sub->retry_timer);
    msm_loop_timer_stop(loop, &sub->lease_timer);
    msm_loop_timer_stop(loop, &sub->ensure_timer);
}

void fc_sub_close_consumer(fc_sub_t *sub)
{
    msm_consumer_free(sub->ready);
    sub->ready = NULL;
}

void fc_sub_destroy(fc_sub_t *sub)
{
    if (!sub)
        return;
    fc_sub_stop(sub);
    fc_sub_close_consumer(sub);
    free(sub->name);
    free(sub);
}

void fc_sub_keep(fc_sub_t *sub)
{
    sub->refs++;
}

static void unlink_from(fc_sub_t **list, fc_sub_t *sub)
{
    for (fc_sub_t **p = list; *p; p = &(*p)->next) {
        if (*p == sub) {
            *p = sub->next;
            sub->next = NULL;
            return;
        }
    }
}

void fc_sub_release(fc_sub_t *sub)
{
    if (--sub->refs > 0)
        return;
    if (sub->removed)
        unlink_from(&sub->fc->retired, sub);
    fc_sub_destroy(sub);
}

void fc_sub_remove(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    unlink_from(&fc->subs, sub);
    sub->removed = 1;
    fc_sub_stop(sub);
    sub->next = fc->retired;
    fc->retired = sub;
    fc_sub_release(sub); /* the list's reference */
}
