/* SPDX-License-Identifier: MIT */
/* Delayed events: ONE loop timer, set at the earliest deliver_at across the subscriptions'
 * sub:{s}:delayed sets (or the safety poll, whichever is sooner), so thousands of waiting
 * events cost nothing until one is due. Each wake-up runs one cycle: per subscription, one
 * claim script takes the due ids (at most fire_batch), re-scores them to now + claim lease so
 * other schedulers skip them, and returns their events; they are appended as TaskBatch
 * records to ready.<sub>, and only once that append is durable removed from both keys
 * (HDEL, then ZREM, pipelined). Several schedulers never fire the same id twice; a claimer
 * that dies before removing leaves its ids due again after the lease (at-least-once).
 * Nothing is fired before its deliver_at: the claim compares against the wall clock at send
 * time. A full batch makes the next cycle start at once, and a cycle does not wait for the
 * appends of the one before: claimed ids are out of its range. */
#include "sch_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Claimed batches whose append or removal is still in flight, across subscriptions: the
 * next cycle waits below this (memory stays bounded when the log is slow). */
#define SCH_MAX_FIRING 32

typedef struct sch_cycle_s sch_cycle_t;

/* One subscription's claim. It belongs to its cycle until its events are handed to the log;
 * then it lives on alone until they are removed (or given back), while the next cycle may
 * already claim what became due meanwhile: the claimed ids are out of its range. */
typedef struct {
    scheduler_t *sch;
    sch_cycle_t *cycle; /* NULL once it left the cycle */
    char *sub;
    char key[SCH_KEY_MAX];   /* sub:{s}:delayed */
    char evkey[SCH_KEY_MAX]; /* sub:{s}:delayed:events */
    int64_t earliest;        /* smallest score above the cycle's now; INT64_MAX when none */
    char **ids;              /* claimed ids */
    size_t n;
    Msm__V1__Event **events; /* their events (NULL where missing or invalid), in arena */
    msm_arena_t *arena;
    int replies;             /* removal replies still awaited */
    int failed;
    msm_spans_t spans;       /* of its sampled events */
} sch_fire_t;

struct sch_cycle_s {
    scheduler_t *sch;
    size_t active; /* fires still claiming */
    int64_t now;   /* wall clock the claims compared against */
    int64_t earliest;
    int full; /* a full batch was due: more may be, look again at once */
    int failed;
};

static void cycle_start(scheduler_t *s);

/* ---- the timer ---- */

static void on_delay_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    scheduler_t *s = opaque;
    s->stats.delayed_timer_wakeups++;
    if (!s->cycle_running)
        cycle_start(s);
}

/* Arms the timer for unix time @p at_ms, never later than the safety poll. */
static void arm_at(scheduler_t *s, int64_t at_ms)
{
    int64_t now = msm_time_unix_ms();
    int64_t poll_at = now + s->conf.delayed_poll_ms;
    if (at_ms > poll_at)
        at_ms = poll_at;
    int64_t delay = at_ms > now ? at_ms - now : 0;
    s->delay_target_ms = at_ms;
    msm_loop_timer_start(s->loop, &s->delay_timer, (uint64_t)delay, on_delay_timer, s);
}

void sch__delayed_hint(scheduler_t *s, int64_t deliver_at_ms)
{
    if (s->stopping || s->freed)
        return;
    if (s->cycle_running) {
        if (deliver_at_ms < s->hint_ms)
            s->hint_ms = deliver_at_ms; /* the cycle's end takes it into account */
        return;
    }
    if (msm_timer_active(&s->delay_timer) && deliver_at_ms >= s->delay_target_ms)
        return;
    arm_at(s, deliver_at_ms);
}

void sch__delayed_kick(scheduler_t *s)
{
    sch__delayed_hint(s, 0);
}

void sch__delayed_stop(scheduler_t *s)
{
    msm_loop_timer_stop(s->loop, &s->delay_timer);
}

/* ---- the end of a cycle, and of a fire ---- */

static void cycle_end(sch_cycle_t *c)
{
    scheduler_t *s = c->sch;
    s->cycle_running = 0;
    if (s->stopping || s->freed) {
        free(c);
        return;
    }
    int64_t next = c->earliest < s->hint_ms ? c->earliest : s->hint_ms;
    s->hint_ms = INT64_MAX;
    if (c->full)
        next = 0; /* more may be due: look again at once */
    if (c->failed) {
        /* Only the healthy subscriptions' times count: a failing one waits for the backoff
         * instead of spinning. */
        int64_t retry = msm_time_unix_ms() + (int64_t)sch__backoff_ms(s, ++s->cycle_failures);
        if (retry < next)
            next = retry;
    } else {
        s->cycle_failures = 0;
    }
    arm_at(s, next);
    free(c);
}

/* The fire's claim is over (its events handed to the log, or nothing to do): its cycle
 * takes note, and ends with its last fire. */
static void fire_leave(sch_fire_t *f)
{
    sch_cycle_t *c = f->cycle;
    if (!c)
        return;
    f->cycle = NULL;
    if (f->failed)
        c->failed = 1;
    else if (f->n >= (size_t)c->sch->conf.fire_batch)
        c->full = 1;
    if (!f->failed && f->earliest < c->earliest)
        c->earliest = f->earliest;
    if (--c->active == 0)
        cycle_end(c);
}

static void fire_free(sch_fire_t *f)
{
    for (size_t j = 0; j < f->n; j++)
        free(f->ids[j]);
    msm_arena_free(f->arena);
    free(f->ids);
    free(f->events);
    free(f->sub);
    msm_spans_deinit(&f->spans);
    free(f);
}

/* A fire that left its cycle is done (removed, given back, or abandoned while stopping). */
static void fire_done(sch_fire_t *f)
{
    scheduler_t *s = f->sch;
    fire_free(f);
    s->firing--;
    if (s->fire_waiting && s->firing < SCH_MAX_FIRING) {
        s->fire_waiting = 0;
        sch__delayed_kick(s);
    }
}

/* ---- removing what was appended ---- */

static void on_removed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_fire_t *f = opaque;
    scheduler_t *s = f->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        /* Appended but still claimed: due again after the lease (a duplicate, no loss). */
        if (!f->failed && !s->freed && !s->stopping)
            msm_log(MSM_LOG_WARN, "scheduler", "removing %zu fired delayed events of %s: %s", f->n,
                    f->sub, why);
        f->failed = 1;
    }
    if (--f->replies == 0)
        fire_done(f);
    sch__release(s);
}

/* "<cmd> <key> id...": the claimed ids. */
static int send_ids(sch_fire_t *f, const char *cmd, const char *key)
{
    scheduler_t *s = f->sch;
    const char **argv = calloc(2 + f->n, sizeof(*argv));
    if (!argv)
        return MSM_ERR_NOMEM;
    argv[0] = cmd;
    argv[1] = key;
    for (size_t i = 0; i < f->n; i++)
        argv[2 + i] = f->ids[i];
    int rc = msm_redis_command_argv(s->redis, on_removed, f, (int)(2 + f->n), argv, NULL);
    free(argv);
    if (rc == MSM_OK) {
        f->replies++;
        sch__hold(s);
    }
    return rc;
}

/* HDEL before ZREM: a crash between them leaves an id without its event, which the next
 * claim drops (logged), never an event nobody will remove. */
static void send_remove(sch_fire_t *f)
{
    f->replies = 1; /* held until both are sent */
    if (send_ids(f, "HDEL", f->evkey) != MSM_OK || send_ids(f, "ZREM", f->key) != MSM_OK)
        f->failed = 1;
    if (--f->replies == 0)
        fire_done(f);
}

/* ---- appending the claimed events ---- */

static void record_fired(sch_fire_t *f, size_t count)
{
    scheduler_t *s = f->sch;
    if (s->freed)
        return;
    sch_sub_t *sub = sch__sub(s, f->sub);
    if (sub)
        msm_counter_add(sub->m_fired, count);
    int64_t now = msm_time_unix_ms();
    for (size_t i = 0; i < f->n; i++) {
        if (!f->events[i])
            continue;
        int64_t late = now - f->events[i]->deliver_at_ms;
        msm_histogram_observe(s->m_lateness, late > 0 ? (double)late / 1000.0 : 0.0);
    }
}

/* The append failed: the claim is given back for a backoff (re-scored to now + backoff),
 * so the retry need not wait for the lease, and a broken log is not hammered. If that fails
 * too, the lease does the same. */
static void send_giveback(sch_fire_t *f)
{
    scheduler_t *s = f->sch;
    const char **argv = calloc(3 + 2 * f->n, sizeof(*argv));
    char at[24];
    snprintf(at, sizeof(at), "%" PRId64,
             msm_time_unix_ms() + (int64_t)sch__backoff_ms(s, ++s->append_failures));
    f->replies = 0;
    if (argv) {
        argv[0] = "ZADD";
        argv[1] = f->key;
        argv[2] = "XX";
        for (size_t i = 0; i < f->n; i++) {
            argv[3 + 2 * i] = at;
            argv[4 + 2 * i] = f->ids[i];
        }
        if (msm_redis_command_argv(s->redis, on_removed, f, (int)(3 + 2 * f->n), argv, NULL) ==
            MSM_OK) {
            f->replies = 1;
            sch__hold(s);
        }
    }
    free(argv);
    if (!f->replies)
        fire_done(f);
}

static void on_fire_appended(msm_err_t err, const char *reason, void *opaque)
{
    sch_fire_t *f = opaque;
    scheduler_t *s = f->sch;
    size_t count = 0;
    for (size_t i = 0; i < f->n; i++)
        count += f->events[i] != NULL;
    if (s->freed) {
        fire_done(f); /* the Redis client may be gone: the claim lapses (a duplicate later) */
    } else if (err == MSM_OK) {
        s->append_failures = 0;
        msm_sub_count_enqueued(s->redis, f->sub, count);
        record_fired(f, count);
        sch__trace_end(&f->spans, f->events, f->n, "fire", f->sub);
        send_remove(f);
    } else if (s->stopping) {
        fire_done(f); /* due again after the lease */
    } else {
        msm_log(MSM_LOG_WARN, "scheduler",
                "appending %zu delayed events to ready.%s: %s (retrying)", count, f->sub,
                reason ? reason : msm_err_str(err));
        sch_sub_t *sub = err == MSM_ERR_NOTFOUND ? sch__sub(s, f->sub) : NULL;
        if (sub) {
            sub->ready_state = 0;
            sch__ensure_ready(s, sub);
        }
        send_giveback(f);
    }
    sch__release(s);
}

/* The claimed events, in claim order (deliver_at), as TaskBatch records. Once the append
 * is under way the fire leaves its cycle. */
static void append_fired(sch_fire_t *f)
{
    scheduler_t *s = f->sch;
    Msm__V1__Event **evs = calloc(f->n, sizeof(*evs));
    size_t count = 0;
    int rc = MSM_ERR_NOMEM;
    s->firing++;
    if (!evs)
        goto out;
    for (size_t i = 0; i < f->n; i++) {
        if (f->events[i])
            evs[count++] = f->events[i];
    }
    if (!count) {
        fire_leave(f);
        send_remove(f); /* nothing to deliver: only ids without events */
        free(evs);
        return;
    }
    sch_sub_t *sub = sch__sub(s, f->sub);
    if (sub)
        sch__ensure_ready(s, sub);
    if (!f->spans.started) /* not again when a failed append is retried */
        sch__trace_start(&f->spans, f->events, f->n);
    char name[SCH_KEY_MAX];
    snprintf(name, sizeof(name), MSM_STREAM_READY, f->sub);
    sch_records_t recs;
    rc = sch__records_build(s, f->sub, evs, count, &recs);
    if (rc == MSM_OK)
        rc = msm_stream_append(s->stream, name, recs.recs, recs.n, on_fire_appended, f);
    sch__records_deinit(&recs);
    if (rc == MSM_OK)
        sch__hold(s);
out:
    free(evs);
    if (rc != MSM_OK) {
        msm_log(MSM_LOG_WARN, "scheduler", "appending delayed events of %s: %s", f->sub,
                msm_err_str(rc));
        f->failed = 1;
    }
    fire_leave(f);
    if (rc != MSM_OK)
        send_giveback(f);
}

/* ---- the claim ---- */

/* Takes the claimed ids and events from the reply {earliest, id, event, ...}. */
static const char *take_claimed(sch_fire_t *f, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 1)
        return "unexpected reply to the claim script";
    const redisReply *next = reply->element[0];
    if (next->type == REDIS_REPLY_STRING && next->len)
        f->earliest = (int64_t)strtod(next->str, NULL);
    size_t n = reply->elements / 2;
    if (!n)
        return NULL;
    f->ids = calloc(n, sizeof(*f->ids));
    f->events = calloc(n, sizeof(*f->events));
    if (!f->ids || !f->events)
        return "out of memory"; /* the claim lapses: due again after the lease */
    for (size_t i = 0; i < n; i++) {
        const redisReply *id = reply->element[1 + 2 * i], *ev = reply->element[2 + 2 * i];
        if (id->type != REDIS_REPLY_STRING || !(f->ids[f->n] = strdup(id->str)))
            continue;
        if (ev->type == REDIS_REPLY_STRING)
            f->events[f->n] = msm_event_unpack_in(&f->arena, ev->str, ev->len);
        if (!f->events[f->n])
            msm_log(MSM_LOG_WARN, "scheduler",
                    "delayed event %s of %s has no valid stored event: dropped", f->ids[f->n],
                    f->sub);
        f->n++;
    }
    return NULL;
}

static void on_claimed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_fire_t *f = opaque;
    scheduler_t *s = f->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why)
        why = take_claimed(f, reply);
    if (why) {
        if (!s->freed && !s->stopping)
            msm_log(MSM_LOG_WARN, "scheduler", "claiming due delayed events of %s: %s", f->sub,
                    why);
        f->failed = 1;
    }
    if (why || !f->n || s->stopping || s->freed) {
        fire_leave(f); /* claimed while stopping: due again after the lease */
        fire_free(f);
    } else {
        append_fired(f);
    }
    sch__release(s);
}

static void fire_claim(sch_fire_t *f)
{
    scheduler_t *s = f->sch;
    char now[24], limit[24], until[24];
    snprintf(now, sizeof(now), "%" PRId64, f->cycle->now);
    snprintf(limit, sizeof(limit), "%d", s->conf.fire_batch);
    snprintf(until, sizeof(until), "%" PRId64, f->cycle->now + s->conf.claim_lease_ms);
    const char *argv[] = {f->key, f->evkey, now, limit, until};
    if (msm_redis_eval(s->redis, s->claim_script, on_claimed, f, 2, 5, argv, NULL) != MSM_OK) {
        f->failed = 1;
        fire_leave(f);
        fire_free(f);
        return;
    }
    sch__hold(s);
}

/* A fire per subscription; returns NULL when out of memory or the key is too long. */
static sch_fire_t *fire_new(sch_cycle_t *c, const char *sub)
{
    scheduler_t *s = c->sch;
    sch_fire_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->sch = s;
    f->cycle = c;
    f->earliest = INT64_MAX;
    if (!(f->sub = strdup(sub)) ||
        msm_redis_key(s->redis, f->key, sizeof(f->key), MSM_KEY_DELAYED, sub) < 0 ||
        msm_redis_key(s->redis, f->evkey, sizeof(f->evkey), MSM_KEY_DELAYED_EV, sub) < 0) {
        free(f->sub);
        free(f);
        return NULL;
    }
    return f;
}

static void cycle_start(scheduler_t *s)
{
    if (s->stopping || s->freed)
        return;
    if (s->firing >= SCH_MAX_FIRING) {
        s->fire_waiting = 1; /* the next fire_done() starts it */
        return;
    }
    size_t nsubs = 0;
    for (sch_sub_t *sub = s->subs; sub; sub = sub->next)
        nsubs++;
    sch_cycle_t *c = calloc(1, sizeof(*c));
    sch_fire_t **fires = calloc(nsubs ? nsubs : 1, sizeof(*fires));
    if (!c || !fires) {
        free(c);
        free(fires);
        arm_at(s, msm_time_unix_ms() + (int64_t)sch__backoff_ms(s, ++s->cycle_failures));
        return;
    }
    s->cycle_running = 1;
    s->hint_ms = INT64_MAX;
    s->stats.delayed_cycles++;
    c->sch = s;
    c->now = msm_time_unix_ms();
    c->earliest = INT64_MAX;
    c->active = 1; /* held until every fire is started */
    size_t n = 0;
    for (sch_sub_t *sub = s->subs; sub; sub = sub->next) {
        if ((fires[n] = fire_new(c, sub->name)) == NULL) {
            c->failed = 1;
            continue;
        }
        c->active++;
        n++;
    }
    for (size_t i = 0; i < n; i++)
        fire_claim(fires[i]);
    free(fires);
    if (--c->active == 0)
        cycle_end(c);
}
