/* SPDX-License-Identifier: MIT */
/* One subscription's engine, alive while this member owns the subscription: ready records
 * come into memory (pending, by priority), free slots under max_concurrency are filled and
 * the tasks admitted in a loop turn leave in ONE dispatch.<sub> record; a task whose lease
 * passes without an outcome is dispatched again on the same attempt; due retries are claimed
 * from the retry store. A ready record stays unacknowledged until every task in it is
 * settled (task.c), so a member that dies loses nothing: the next owner reads it again. */
#include "fc_int.h"
#include "msm/trace.h"
#include "msm/err.h"
#include "msm/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENSURE_RETRY_MS 1000
/* Due retries are claimed on this grid: those due within one tick share one claim script
 * (a steady trickle of failures would otherwise run one per failure), late by < a tick. */
#define RETRY_TICK_MS 10

static int working(const fc_sub_t *sub)
{
    return sub->owner && !sub->removed;
}

/* ---- ready records in ---- */

static int clamp_priority(int p)
{
    return p < 0 ? 0 : p >= FC_PRIORITIES ? FC_PRIORITIES - 1 : p;
}

static int task_valid(const Msm__V1__Task *t)
{
    const Msm__V1__Event *ev = t ? t->event : NULL;
    return ev && ev->id && *ev->id && strlen(ev->id) <= MSM_NAME_MAX;
}

/* Takes one task into memory as pending; 0 when it is not taken (duplicate, invalid). */
static int intake(fc_sub_t *sub, fc_rec_t *rec, Msm__V1__Task *t)
{
    if (!task_valid(t)) {
        msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: dropping a ready task without event id",
                sub->name);
        return 0;
    }
    if (fc_map_find(sub, t->event->id)) {
        msm_counter_inc(sub->m_duplicates);
        return 0;
    }
    fc_task_t *task = fc_task_get(sub->fc);
    if (!task)
        return 0; /* out of memory: its record is held until a restart */
    task->sub = sub;
    task->rec = rec;
    task->t = t;
    task->priority = clamp_priority(t->event->priority);
    if (fc_map_add(sub, task) != MSM_OK) {
        fc_task_put(sub->fc, task);
        return 0;
    }
    if (!sub->ordered || !fc_order_intake(sub, task))
        fc_pq_push(sub, task, 0);
    if (!task->parked)
        fc_task_dirty(sub, task);
    return 1;
}

/* A task whose record says it already finished, or waits in the retry store, is not taken
 * again when its ready record comes back after a takeover. */
static int already_settled(const redisReply *state)
{
    if (!state || state->type != REDIS_REPLY_STRING)
        return 0;
    return strstr(state->str, "\"state\":\"succeeded\"") ||
           strstr(state->str, "\"state\":\"dead\"") ||
           strstr(state->str, "\"state\":\"retrying\"") ||
           strstr(state->str, "\"parked\":true"); /* waits behind its held key */
}

/* Takes the tasks of one ready record in; @p states (an MGET reply of their task records,
 * from *next on) skips those already settled. Takes @p b and its @p arena. */
static void rec_take(fc_sub_t *sub,
                     msm_stream_msg_t *msg,
                     Msm__V1__TaskBatch *b,
                     msm_arena_t *arena,
                     const redisReply *states,
                     size_t *next)
{
    fc_rec_t *rec = calloc(1, sizeof(*rec));
    if (!rec) {
        msm_arena_free(arena); /* unacknowledged: read again after a restart */
        return;
    }
    rec->msg = msg;
    rec->batch = b;
    rec->arena = arena;
    rec->unsettled = 1; /* held while the tasks are taken in */
    size_t taken = 0, settled = 0;
    for (size_t k = 0; k < b->n_tasks; k++) {
        const redisReply *st = states && *next < states->elements ? states->element[*next] : NULL;
        if (states)
            (*next)++;
        if (already_settled(st)) {
            settled++;
            continue;
        }
        rec->unsettled++;
        if (intake(sub, rec, b->tasks[k]))
            taken++;
        else
            rec->unsettled--;
    }
    msm_counter_add(sub->m_admitted, taken);
    msm_counter_add(sub->m_duplicates, settled);
    sub->c_done += (int64_t)(b->n_tasks - taken); /* never settled here: not in the backlog */
    if (--rec->unsettled == 0) {
        msm_consumer_ack(sub->ready, msg); /* nothing new in it */
        msm_arena_free(arena);
        free(rec);
    }
}

/* Redelivered records wait for one look-up of their tasks' records (off the happy path):
 * KEYS are the record hashes, ARGV the ids, in pairs. */
static const char RECHECK_LUA[] = "local out = {}\n"
                                  "for i = 1, #KEYS do\n"
                                  "  out[i] = redis.call('HGET', KEYS[i], ARGV[i])\n"
                                  "end\n"
                                  "return out\n";
static msm_redis_script_t *recheck_script; /* process-wide, never freed */

/* Redelivered records wait for one look-up of their tasks' records. */
typedef struct {
    size_t n;
    msm_stream_msg_t **msgs;
    Msm__V1__TaskBatch **batches;
    msm_arena_t **arenas; /* batches[i] lives in arenas[i] */
} recheck_t;

static void recheck_free(recheck_t *rc)
{
    for (size_t i = 0; i < rc->n; i++)
        msm_arena_free(rc->arenas[i]);
    rc->n = 0;
}

static void on_rechecked(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_call_t *c = opaque;
    recheck_t *rc = c->data;
    int same = 0;
    fc_sub_t *sub = fc_call_sub(c, &same);
    if (!sub || !same || !working(sub)) {
        recheck_free(rc);
        fc_call_free(c);
        if (sub)
            fc_sub_release(sub);
        return;
    }
    const char *why = msm_redis_reply_err(reply, err);
    const redisReply *states = !why && reply->type == REDIS_REPLY_ARRAY ? reply : NULL;
    size_t next = 0;
    for (size_t i = 0; i < rc->n; i++)
        rec_take(sub, rc->msgs[i], rc->batches[i], rc->arenas[i], states, &next);
    rc->n = 0;
    fc_call_free(c);
    fc_sub_release(sub);
}

static void recheck_send(fc_sub_t *sub, recheck_t *rc)
{
    size_t nkeys = 0;
    for (size_t i = 0; i < rc->n; i++)
        nkeys += rc->batches[i]->n_tasks;
    const char **argv = calloc(2 * nkeys + 1, sizeof(*argv));
    char *keys = malloc(nkeys * FC_KEY_MAX + 1);
    if (!recheck_script)
        recheck_script = msm_redis_script_new(RECHECK_LUA);
    fc_call_t *c = argv && keys && recheck_script ? fc_call_new(sub) : NULL;
    int ok = c != NULL;
    if (ok) {
        size_t k = 0;
        for (size_t i = 0; i < rc->n; i++) {
            for (size_t t = 0; t < rc->batches[i]->n_tasks; t++, k++) {
                const Msm__V1__Task *task = rc->batches[i]->tasks[t];
                const char *id = task_valid(task) ? task->event->id : "";
                char *key = keys + k * FC_KEY_MAX;
                if (msm_task_key(sub->fc->env.redis, key, FC_KEY_MAX, sub->name, id) < 0)
                    *key = '\0';
                argv[k] = key;
                argv[nkeys + k] = id;
            }
        }
        c->data = rc;
        ok = msm_redis_eval(sub->fc->env.redis, recheck_script, on_rechecked, c, (int)nkeys,
                            (int)(2 * nkeys), argv, NULL) == MSM_OK;
    }
    free(argv);
    free(keys);
    if (ok)
        return;
    /* Not checked: taken in as they are (at-least-once). */
    if (c) {
        c->data = NULL;
        fc_sub_release(sub);
        fc_call_free(c);
    }
    size_t next = 0;
    for (size_t i = 0; i < rc->n; i++)
        rec_take(sub, rc->msgs[i], rc->batches[i], rc->arenas[i], NULL, &next);
    free(rc);
}

static void on_ready_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    fc_sub_t *sub = opaque;
    if (!working(sub) || c != sub->ready)
        return; /* unacknowledged: the next owner reads them again */
    recheck_t *rc = NULL;
    for (size_t i = 0; i < n; i++) {
        msm_arena_t *arena = NULL;
        Msm__V1__TaskBatch *b =
            msm_task_batch_unpack_in(&arena, msgs[i]->value, msgs[i]->value_len);
        if (!b) {
            msm_arena_free(arena);
            msm_log(MSM_LOG_WARN, FC_FACILITY,
                    "subscription %s: dropping ready record %s: not a task batch", sub->name,
                    msgs[i]->position);
            msm_consumer_ack(c, msgs[i]);
            continue;
        }
        if (!msgs[i]->redelivered) {
            size_t next = 0;
            rec_take(sub, msgs[i], b, arena, NULL, &next);
            continue;
        }
        if (!rc) {
            rc = calloc(1, sizeof(*rc) + n * (sizeof(*rc->msgs) + sizeof(*rc->batches) +
                                              sizeof(*rc->arenas)));
            if (!rc) {
                msm_arena_free(arena);
                continue;
            }
            rc->msgs = (msm_stream_msg_t **)(rc + 1);
            rc->batches = (Msm__V1__TaskBatch **)(rc->msgs + n);
            rc->arenas = (msm_arena_t **)(rc->batches + n);
        }
        rc->msgs[rc->n] = msgs[i];
        rc->arenas[rc->n] = arena;
        rc->batches[rc->n++] = b;
    }
    if (rc)
        recheck_send(sub, rc);
}

void fc_sub_take_retries(fc_sub_t *sub, const void *const *data, const size_t *lens, size_t n)
{
    size_t taken = 0;
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Task *t = msm_task_unpack(data[i], lens[i]);
        if (!task_valid(t) || fc_map_find(sub, t->event->id)) {
            msm_task_free(t); /* already in memory (claimed again before it settled) */
            continue;
        }
        fc_task_t *task = fc_task_get(sub->fc);
        if (!task) {
            msm_task_free(t);
            continue;
        }
        task->sub = sub;
        task->t = t; /* rec is NULL */
        task->owns_t = 1;
        task->priority = clamp_priority(t->event->priority);
        if (fc_map_add(sub, task) != MSM_OK) {
            fc_task_put(sub->fc, task);
            continue;
        }
        if (sub->ordered)
            fc_order_from_store(sub, task);
        fc_pq_push(sub, task, 0);
        fc_task_dirty(sub, task);
        taken++;
    }
    msm_counter_add(sub->m_admitted, taken);
}

/* ---- admission and dispatch ---- */

void fc_sub_requeue(fc_sub_t *sub, fc_task_t *task)
{
    fc_running_remove(sub, task);
    fc_pq_push(sub, task, 1);
    fc_task_dirty(sub, task);
}

static void lease_and_send(fc_sub_t *sub, fc_task_t *task, int64_t now)
{
    task->lease_until_ms = now + sub->timeout_ms + sub->fc->conf.lease_grace_ms;
    task->t->lease_until_ms = task->lease_until_ms;
    task->t->state = MSM__V1__TASK_STATE__TASK_STATE_RUNNING;
    fc_running_add(sub, task);
    fc_task_dirty(sub, task);
    if (fc_ptrs_push(&sub->outgoing, &sub->noutgoing, &sub->capoutgoing, task) != MSM_OK)
        msm_counter_inc(sub->m_dispatch_failures); /* sent again when the lease passes */
}

/* The flowcontrol span of a sampled task, from its entry into the pending queue to its
 * admission; the dispatched task carries its traceparent to the router. */
static void trace_admit(const fc_sub_t *sub, const fc_task_t *task)
{
    Msm__V1__Event *ev = task->t->event;
    msm_span_t span;
    if (!ev || !msm_span_start(&span, ev->traceparent))
        return;
    if (task->queued_us && task->queued_us < span.start_us)
        span.start_us = task->queued_us;
    memcpy(ev->traceparent, span.tp, sizeof(span.tp)); /* a valid one is at least as long */
    char attempt[16];
    snprintf(attempt, sizeof(attempt), "%d", task->t->attempt);
    msm_log_field_t f[] = {{"subscription", sub->name}, {"event_id", ev->id},
                           {"attempt", attempt}};
    msm_span_end(&span, "flowcontrol", "admit", f, 3);
}

static void on_pace_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    (void)opaque; /* the loop's turn that follows admits */
}

/* Admits pending tasks into free slots within the pace; they leave in this turn's dispatch
 * record. */
static void sub_admit(fc_sub_t *sub)
{
    if (!working(sub) || sub->paused || !sub->streams_ready || sub->fc->stopping)
        return;
    int64_t now = fc_now_ms(), wake = 0;
    size_t allowed = fc_pace_allowance(&sub->pace, sub->nrunning, now, &wake), n = 0;
    fc_task_t *task;
    while (n < allowed && (task = fc_pq_pop(sub))) {
        task->t->attempt++;
        trace_admit(sub, task);
        lease_and_send(sub, task, now);
        n++;
    }
    fc_pace_take(&sub->pace, n);
    /* Held back by the rate or a Retry-After while work waits: look again then (the timer
     * only wakes the loop; its turn admits). */
    if (wake && sub->npending && !msm_timer_active(&sub->pace_timer))
        msm_loop_timer_start(sub->fc->env.loop, &sub->pace_timer,
                             wake > now ? (uint64_t)(wake - now) : 0, on_pace_timer, sub);
}

static void on_dispatched(msm_err_t err, const char *reason, void *opaque)
{
    fc_call_t *c = opaque;
    int same = 0;
    fc_sub_t *sub = fc_call_sub(c, &same);
    size_t n = c->n;
    fc_call_free(c);
    if (!sub)
        return;
    sub->dispatching--;
    if (err == MSM_OK) {
        msm_counter_add(sub->m_dispatched, n);
    } else if (same) {
        /* The tasks stay running: when their lease passes they are dispatched again. */
        msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: appending %zu tasks failed: %s",
                sub->name, n, reason ? reason : msm_err_str(err));
        msm_counter_add(sub->m_dispatch_failures, n);
    }
    fc_sub_release(sub);
}

/* The tasks admitted this turn, in records of at most dispatch_max tasks. */
static void dispatch_outgoing(fc_sub_t *sub)
{
    size_t max = (size_t)sub->fc->conf.dispatch_max;
    Msm__V1__Task **tasks = malloc((sub->noutgoing < max ? sub->noutgoing : max) * sizeof(*tasks));
    msm_buf_t buf = {0};
    for (size_t off = 0; tasks && off < sub->noutgoing; off += max) {
        size_t n = sub->noutgoing - off < max ? sub->noutgoing - off : max;
        for (size_t i = 0; i < n; i++)
            tasks[i] = sub->outgoing[off + i]->t;
        Msm__V1__TaskBatch b = MSM__V1__TASK_BATCH__INIT;
        b.n_tasks = n;
        b.tasks = tasks;
        buf.len = 0;
        fc_call_t *c = fc_call_new(sub);
        int rc = c ? msm_pb_pack(&b.base, &buf) : MSM_ERR_NOMEM;
        if (rc == MSM_OK) {
            /* Per-key order of a subscription lives in the tasks' order within a record. */
            msm_record_t rec = {.value = buf.data, .value_len = buf.len};
            c->n = n;
            rc = msm_stream_append(sub->fc->env.stream, sub->s_dispatch, &rec, 1, on_dispatched,
                                   c);
        }
        if (rc == MSM_OK) {
            sub->dispatching++;
            continue;
        }
        msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: dispatch: %s", sub->name,
                msm_err_str(rc));
        msm_counter_add(sub->m_dispatch_failures, n);
        if (c) {
            fc_sub_release(sub);
            fc_call_free(c);
        }
    }
    if (!tasks)
        msm_counter_add(sub->m_dispatch_failures, sub->noutgoing);
    free(tasks);
    msm_buf_deinit(&buf);
    sub->noutgoing = 0;
}

/* ---- leases ---- */

static void on_lease_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    fc_sub_t *sub = opaque;
    if (!working(sub))
        return;
    int64_t now = fc_now_ms();
    size_t n = 0;
    fc_task_t *task;
    /* The list is in dispatch order; leases of one subscription grow with it. */
    while ((task = sub->running_head) && task->lease_until_ms <= now) {
        fc_running_remove(sub, task);
        lease_and_send(sub, task, now); /* same attempt: a push that never ran costs none */
        n++;
    }
    if (n) {
        msm_counter_add(sub->m_expired, n);
        msm_log(MSM_LOG_WARN, FC_FACILITY,
                "subscription %s: %zu leases passed without an outcome: dispatched again",
                sub->name, n);
    }
}

static void arm_lease(fc_sub_t *sub)
{
    if (!sub->running_head || msm_timer_active(&sub->lease_timer))
        return;
    int64_t delay = sub->running_head->lease_until_ms - fc_now_ms();
    msm_loop_timer_start(sub->fc->env.loop, &sub->lease_timer, delay > 0 ? (uint64_t)delay : 0,
                         on_lease_timer, sub);
}

/* ---- retries ---- */

static void on_retry_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    fc_sub_t *sub = opaque;
    sub->retry_due_ms = 0;
    fc_retry_claim(sub);
}

void fc_sub_arm_retry(fc_sub_t *sub, int64_t due_ms)
{
    if (!working(sub))
        return;
    due_ms = (due_ms + RETRY_TICK_MS - 1) / RETRY_TICK_MS * RETRY_TICK_MS;
    if (sub->retry_due_ms && msm_timer_active(&sub->retry_timer) && sub->retry_due_ms <= due_ms)
        return;
    int64_t delay = due_ms - fc_now_ms();
    sub->retry_due_ms = due_ms > 0 ? due_ms : 1;
    msm_loop_timer_start(sub->fc->env.loop, &sub->retry_timer, delay > 0 ? (uint64_t)delay : 0,
                         on_retry_timer, sub);
}

/* ---- the turn ---- */

void fc_sub_turn(fc_sub_t *sub)
{
    if (!working(sub))
        return;
    sub_admit(sub);
    if (sub->noutgoing)
        dispatch_outgoing(sub);
    for (size_t i = 0; i < sub->ndirty; i++) {
        fc_task_t *t = sub->dirty[i];
        t->dirty = 0;
        fc_task_record(sub, t);
    }
    sub->ndirty = 0;
    fc_order_check(sub);
    fc_stats_gauges(sub);
    fc_flush_send(sub);
    arm_lease(sub);
    msm_gauge_set(sub->m_in_flight, (double)sub->nrunning);
    msm_gauge_set(sub->m_pending, (double)sub->npending);
    msm_gauge_set(sub->m_limit, (double)fc_pace_limit(&sub->pace));
}

/* ---- the engine's life ---- */

void fc_sub_consume(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    char err[256] = "";
    size_t batch = (size_t)fc->conf.batch;
    size_t max = (size_t)(sub->fairness_key ? fc->conf.fair_max_records : fc->conf.max_records);
    sub->ready = msm_stream_consume(fc->env.stream, sub->s_ready, "flowcontrol", fc->member, batch,
                                    max, on_ready_batch, sub, err, sizeof(err));
    if (sub->ready)
        sub->status = msm_stream_consume(fc->env.stream, sub->s_status, "flowcontrol",
                                         fc->member, batch, max, fc_on_status_batch, sub, err,
                                         sizeof(err));
    if (!sub->ready || !sub->status) {
        msm_log(MSM_LOG_ERROR, FC_FACILITY, "subscription %s: cannot consume: %s", sub->name, err);
        fc_sub_stop_engine(sub); /* the next renewal starts it again */
        return;
    }
    /* Only the owner reads these streams: the records of a member that died are taken over
     * once idle for an ownership lease. */
    msm_consumer_set_lease(sub->ready, (uint64_t)fc->conf.owner_lease_ms);
    msm_consumer_set_lease(sub->status, (uint64_t)fc->conf.owner_lease_ms);
    fc_sub_arm_retry(sub, 1); /* what an earlier owner left in the retry store */
}

/* dispatch.<sub> and status.<sub> are made one after the other (sub->ensuring: 1, 2) before
 * anything is read or dispatched. */
static void ensure_next(fc_sub_t *sub);

static void on_ensure_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    fc_sub_t *sub = opaque;
    sub->ensuring = 0;
    ensure_next(sub);
}

static void ensure_retry(fc_sub_t *sub, const char *why)
{
    msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: creating its streams: %s (retrying)",
            sub->name, why);
    msm_loop_timer_start(sub->fc->env.loop, &sub->ensure_timer, ENSURE_RETRY_MS, on_ensure_timer,
                         sub);
}

static void on_ensured(msm_err_t err, const char *reason, void *opaque)
{
    fc_call_t *c = opaque;
    int same = 0;
    fc_sub_t *sub = fc_call_sub(c, &same);
    fc_call_free(c);
    if (!sub)
        return;
    if (same && working(sub)) {
        if (err != MSM_OK)
            ensure_retry(sub, reason ? reason : msm_err_str(err));
        else
            ensure_next(sub);
    }
    fc_sub_release(sub);
}

static void ensure_next(fc_sub_t *sub)
{
    if (!working(sub))
        return;
    if (sub->ensuring == 2) {
        sub->streams_ready = 1;
        if (sub->ordered)
            fc_order_load(sub); /* held keys first: nothing behind them may run */
        else
            fc_sub_consume(sub);
        return;
    }
    const char *name = sub->ensuring == 0 ? sub->s_dispatch : sub->s_status;
    sub->ensuring++;
    fc_call_t *c = fc_call_new(sub);
    if (c && msm_stream_ensure(sub->fc->env.stream, name, sub->partitions, on_ensured, c) == MSM_OK)
        return;
    if (c) {
        fc_sub_release(sub);
        fc_call_free(c);
    }
    ensure_retry(sub, "cannot send");
}

void fc_sub_start_engine(fc_sub_t *sub)
{
    sub->owner = 1;
    sub->own_gen++;
    sub->ensuring = 0;
    ensure_next(sub);
}

void fc_sub_stop_engine(fc_sub_t *sub)
{
    msm_loop_t *loop = sub->fc->env.loop;
    sub->owner = 0;
    sub->own_gen++; /* late answers of this term are void */
    sub->streams_ready = 0;
    sub->ensuring = 0;
    msm_loop_timer_stop(loop, &sub->ensure_timer);
    msm_loop_timer_stop(loop, &sub->lease_timer);
    msm_loop_timer_stop(loop, &sub->retry_timer);
    msm_loop_timer_stop(loop, &sub->lazy_timer);
    msm_loop_timer_stop(loop, &sub->pace_timer);
    msm_loop_timer_stop(loop, &sub->order_timer);
    sub->retry_due_ms = 0;
    sub->claiming = 0;
    /* Pipelines in flight finish their writes but settle and acknowledge nothing. */
    for (fc_flush_t *fl = sub->fc->flushes; fl; fl = fl->next) {
        if (fl->sub == sub) {
            fl->ndone = 0;
            fl->nacks = 0;
        }
    }
    if (sub->flush) {
        /* Its writes go out (harmless, and the flush frees itself when answered); it settles
         * nothing: the tasks are dropped below. */
        sub->flush->ndone = 0;
        sub->flush->nacks = 0;
        fc_flush_send(sub);
    }
    sub->noutgoing = 0;
    sub->ndirty = 0;
    for (size_t b = 0; b < sub->map_size; b++) {
        while (sub->map[b])
            fc_task_drop(sub, sub->map[b], 0);
    }
    fc_order_reset(sub);
    fc_pq_reset(sub);
    sub->running_head = sub->running_tail = NULL;
    sub->nrunning = 0;
    msm_consumer_free(sub->ready); /* unacknowledged records go to the next owner */
    msm_consumer_free(sub->status);
    sub->ready = sub->status = NULL;
    msm_gauge_set(sub->m_in_flight, 0);
    msm_gauge_set(sub->m_pending, 0);
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
    sub->m_pending = msm_metric_labels(m->pending, n, NULL);
    sub->m_limit = msm_metric_labels(m->limit, n, NULL);
    sub->m_limit_drops = msm_metric_labels(m->limit_drops, n, NULL);
    sub->m_held = msm_metric_labels(m->held, n, NULL);
    sub->m_held_longest = msm_metric_labels(m->held_longest, n, NULL);
    sub->m_hol = msm_metric_labels(m->hol, n, NULL);
    return sub->m_admitted && sub->m_in_flight && sub->m_pending ? MSM_OK : MSM_ERR_NOMEM;
}

static int sub_names(fc_sub_t *sub)
{
    msm_redis_t *r = sub->fc->env.redis;
    const char *n = sub->name;
    int bad = msm_redis_key(r, sub->k_retry, FC_KEY_MAX, MSM_KEY_RETRY, n) < 0 ||
              msm_redis_key(r, sub->k_retry_tasks, FC_KEY_MAX, MSM_KEY_RETRY_TASKS, n) < 0 ||
              msm_redis_key(r, sub->k_dlq, FC_KEY_MAX, MSM_KEY_DLQ, n) < 0 ||
              msm_redis_key(r, sub->k_dlq_tasks, FC_KEY_MAX, MSM_KEY_DLQ_TASKS, n) < 0 ||
              msm_redis_key(r, sub->k_stats, FC_KEY_MAX, MSM_KEY_STATS, n) < 0 ||
              msm_redis_key(r, sub->k_owner, FC_KEY_MAX, MSM_KEY_OWNER, n) < 0 ||
              msm_redis_key(r, sub->k_held, FC_KEY_MAX, MSM_KEY_HELD, n) < 0 ||
              msm_redis_key(r, sub->k_parked, FC_KEY_MAX, MSM_KEY_PARKED, n) < 0 ||
              msm_redis_key(r, sub->k_parked_tasks, FC_KEY_MAX, MSM_KEY_PARKED_TASKS, n) < 0;
    bad = bad || snprintf(sub->s_ready, FC_KEY_MAX, MSM_STREAM_READY, n) >= FC_KEY_MAX ||
          snprintf(sub->s_dispatch, FC_KEY_MAX, MSM_STREAM_DISPATCH, n) >= FC_KEY_MAX ||
          snprintf(sub->s_status, FC_KEY_MAX, MSM_STREAM_STATUS, n) >= FC_KEY_MAX;
    return bad ? MSM_ERR_TOOLARGE : MSM_OK;
}

int fc_tasks_in_flight_max(const msm_sub_t *s)
{
    /* A batch push counts as ONE request against max_concurrency (docs/push.md), so up to
     * max_batch_events tasks ride on each: counted in tasks, a limit of 64 could never fill
     * a batch of 100. */
    long long conc = s->max_concurrency > 0 ? s->max_concurrency : 1;
    long long per = s->max_batch_events > 1 ? s->max_batch_events : 1;
    long long n = conc * per;
    return n < FC_TASKS_IN_FLIGHT_CAP ? (int)n : FC_TASKS_IN_FLIGHT_CAP;
}

void fc_sub_update(fc_sub_t *sub, const msm_sub_t *s)
{
    sub->max_concurrency = s->max_concurrency > 0 ? s->max_concurrency : 1;
    sub->timeout_ms = s->timeout_ms;
    sub->max_attempts = s->max_attempts > 0 ? s->max_attempts : 1;
    sub->min_backoff_ms = s->min_backoff_ms;
    sub->max_backoff_ms = s->max_backoff_ms;
    sub->retention_ms = s->task_retention_ms > 0 ? s->task_retention_ms : 3600000;
    if (sub->paused != s->paused)
        msm_log(MSM_LOG_INFO, FC_FACILITY, "subscription %s %s", sub->name,
                s->paused ? "paused" : "resumed");
    sub->paused = s->paused;
    sub->rate_limit_per_s = s->rate_limit_per_s;
    const char *fair = s->fairness_key && *s->fairness_key ? s->fairness_key : NULL;
    int fair_changed = !fair != !sub->fairness_key ||
                       (fair && strcmp(fair, sub->fairness_key) != 0);
    int restart = sub->owner && (sub->ordered != s->ordered || fair_changed);
    if (restart) {
        /* Tasks in memory were queued under the other rule: a new term rebuilds them from the
         * log (this member's unacknowledged records come back to it). */
        msm_log(MSM_LOG_INFO, FC_FACILITY,
                "subscription %s: ordered or fairness_key changed: restarting its engine",
                sub->name);
        fc_own_stop(sub, 0);
    }
    sub->ordered = s->ordered;
    if (fair_changed) {
        free(sub->fairness_key);
        sub->fairness_key = fair ? strdup(fair) : NULL; /* out of memory: plain FIFO */
    }
    if (restart)
        fc_own_start(sub);
    fc_pace_set(&sub->pace, fc_tasks_in_flight_max(s), s->rate_limit_per_s, fc_now_ms());
    sub->stats_written = 0; /* the concurrency limit may have moved */
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
    msm_timer_init(&sub->own_timer);
    msm_timer_init(&sub->ensure_timer);
    msm_timer_init(&sub->lease_timer);
    msm_timer_init(&sub->retry_timer);
    msm_timer_init(&sub->lazy_timer);
    msm_timer_init(&sub->pace_timer);
    msm_timer_init(&sub->order_timer);
    if (!sub->name || sub_names(sub) != MSM_OK || sub_metrics(sub) != MSM_OK) {
        msm_log(MSM_LOG_ERROR, FC_FACILITY, "subscription %s: cannot start: out of memory or name too long",
                s->name);
        fc_sub_destroy(sub);
        return NULL;
    }
    fc_sub_update(sub, s);
    msm_log(MSM_LOG_INFO, FC_FACILITY, "subscription %s: max_concurrency %d, timeout %d ms",
            sub->name, sub->max_concurrency, sub->timeout_ms);
    return sub;
}

fc_sub_t *fc_sub_find(flowcontrol_t *fc, const char *name)
{
    for (fc_sub_t *s = fc->subs; s; s = s->next) {
        if (strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

void fc_sub_destroy(fc_sub_t *sub)
{
    if (!sub)
        return;
    msm_loop_t *loop = sub->fc->env.loop;
    msm_loop_timer_stop(loop, &sub->own_timer);
    fc_sub_stop_engine(sub);
    free(sub->map);
    free(sub->kmap);
    free(sub->fmap);
    free(sub->fairness_key);
    free(sub->outgoing);
    free(sub->dirty);
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
    fc_own_stop(sub, 1);
    sub->removed = 1;
    sub->next = fc->retired;
    fc->retired = sub;
    fc_sub_release(sub); /* the list's reference */
}
