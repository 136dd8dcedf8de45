/* SPDX-License-Identifier: MIT */
/* Delayed events: ONE loop timer, set at the earliest deliver_at across the subscriptions'
 * sub:{s}:delayed sets (or the safety poll, whichever is sooner), so thousands of waiting
 * events cost nothing until one is due. Each wake-up runs one cycle, per subscription and
 * pipelined: ZRANGEBYSCORE -inf now (the due ids) and ZRANGE 0 0 WITHSCORES (the earliest).
 * Due ids are moved: their events are read from the task hashes, appended as Tasks to
 * ready.<sub>, and only once that append completed OK removed from the set (the task hash
 * stays for flowcontrol). A crash between append and ZREM, or two instances firing the same
 * id, gives a duplicate in ready.<sub>, never a loss: delivery is at-least-once. Nothing is
 * fired before its deliver_at: the scan compares against the wall clock at send time. */
#include "sch_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sch_cycle_s sch_cycle_t;

/* One subscription's part of a cycle. */
typedef struct {
    sch_cycle_t *cycle;
    char *sub;
    char key[SCH_KEY_MAX]; /* sub:{s}:delayed */
    int replies;           /* scan replies still awaited */
    int64_t earliest;      /* smallest score in the set; INT64_MAX when empty */
    char **ids;            /* due ids */
    int64_t *due_at;       /* their deliver_at */
    size_t n;
    int failed;
} sch_fire_t;

struct sch_cycle_s {
    scheduler_t *sch;
    sch_fire_t *fires;
    size_t nfires;
    size_t active; /* fires not finished */
    int64_t now;   /* wall clock the scan compared against */
    int64_t earliest;
    int moved; /* something was moved (or a full batch was due): look again */
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

/* ---- the end of a cycle ---- */

static void cycle_free(sch_cycle_t *c)
{
    for (size_t i = 0; i < c->nfires; i++) {
        sch_fire_t *f = &c->fires[i];
        for (size_t j = 0; j < f->n; j++)
            free(f->ids[j]);
        free(f->ids);
        free(f->due_at);
        free(f->sub);
    }
    free(c->fires);
    free(c);
}

static void cycle_end(sch_cycle_t *c)
{
    scheduler_t *s = c->sch;
    s->cycle_running = 0;
    if (s->stopping || s->freed) {
        cycle_free(c);
        return;
    }
    int64_t next = c->earliest < s->hint_ms ? c->earliest : s->hint_ms;
    s->hint_ms = INT64_MAX;
    if (c->moved)
        next = 0; /* more may be due (a full batch): look again at once */
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
    cycle_free(c);
}

static void fire_finish(sch_fire_t *f)
{
    sch_cycle_t *c = f->cycle;
    if (f->failed)
        c->failed = 1;
    else if (f->n)
        c->moved = 1;
    else if (f->earliest < c->earliest)
        c->earliest = f->earliest;
    if (--c->active == 0)
        cycle_end(c);
}

/* ---- moving the due ids ---- */

static void on_removed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_fire_t *f = opaque;
    scheduler_t *s = f->cycle->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        /* Appended but still in the set: fired again next cycle (a duplicate, no loss). */
        if (!s->freed && !s->stopping)
            msm_log(MSM_LOG_WARN, "scheduler", "removing %zu fired ids of %s: %s", f->n, f->sub,
                    why);
        f->failed = 1;
    }
    fire_finish(f);
    sch__release(s);
}

static void send_remove(sch_fire_t *f)
{
    scheduler_t *s = f->cycle->sch;
    size_t argc = 2 + f->n;
    const char **argv = calloc(argc, sizeof(*argv));
    if (!argv) {
        f->failed = 1;
        fire_finish(f);
        return;
    }
    argv[0] = "ZREM";
    argv[1] = f->key;
    for (size_t i = 0; i < f->n; i++)
        argv[2 + i] = f->ids[i];
    int rc = msm_redis_command_argv(s->redis, on_removed, f, (int)argc, argv, NULL);
    free(argv);
    if (rc != MSM_OK) {
        f->failed = 1;
        fire_finish(f);
        return;
    }
    sch__hold(s);
}

static void record_fired(sch_fire_t *f, size_t count)
{
    scheduler_t *s = f->cycle->sch;
    if (s->freed)
        return;
    sch_sub_t *sub = sch__sub(s, f->sub);
    if (sub)
        msm_counter_add(sub->m_fired, count);
    int64_t now = msm_time_unix_ms();
    for (size_t i = 0; i < f->n; i++) {
        int64_t late = now - f->due_at[i];
        msm_histogram_observe(s->m_lateness, late > 0 ? (double)late / 1000.0 : 0.0);
    }
}

typedef struct {
    sch_fire_t *fire;
    size_t count;
} fire_append_t;

static void on_fire_appended(msm_err_t err, const char *reason, void *opaque)
{
    fire_append_t *a = opaque;
    sch_fire_t *f = a->fire;
    scheduler_t *s = f->cycle->sch;
    if (err == MSM_OK) {
        record_fired(f, a->count);
        send_remove(f);
    } else {
        if (!s->freed && !s->stopping) {
            msm_log(MSM_LOG_WARN, "scheduler",
                    "moving %zu delayed events to ready.%s: %s "
                    "(retrying)",
                    a->count, f->sub, reason ? reason : msm_err_str(err));
            sch_sub_t *sub = err == MSM_ERR_NOTFOUND ? sch__sub(s, f->sub) : NULL;
            if (sub) {
                sub->ready_state = 0;
                sch__ensure_ready(s, sub);
            }
        }
        f->failed = 1;
        fire_finish(f);
    }
    free(a);
    sch__release(s);
}

/* Builds the Tasks of the events found and appends them in one batch. */
static void append_tasks(sch_fire_t *f, const redisReply *events)
{
    scheduler_t *s = f->cycle->sch;
    msm_buf_t tasks = {0};
    msm_record_t *recs = calloc(f->n, sizeof(*recs));
    size_t *lens = calloc(f->n, sizeof(*lens));
    Msm__V1__Event **evs = calloc(f->n, sizeof(*evs));
    fire_append_t *a = malloc(sizeof(*a));
    size_t count = 0;
    int rc = MSM_ERR_NOMEM;
    if (!recs || !lens || !evs || !a)
        goto out;
    for (size_t i = 0; i < f->n; i++) {
        const redisReply *e = events->element[i];
        Msm__V1__Event *ev =
            e->type == REDIS_REPLY_STRING ? msm_event_unpack(e->str, e->len) : NULL;
        if (!ev) {
            /* Nothing to deliver: it is removed with the others (and logged). */
            msm_log(MSM_LOG_WARN, "scheduler",
                    "delayed task %s of %s has no valid event: "
                    "dropped",
                    f->ids[i], f->sub);
            continue;
        }
        size_t before = tasks.len;
        if (sch__pack_task(ev, f->sub, &tasks) != MSM_OK) {
            msm_event_free(ev);
            goto out;
        }
        lens[count] = tasks.len - before;
        evs[count++] = ev;
    }
    if (!count) {
        send_remove(f);
        rc = MSM_OK;
        goto out;
    }
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        const char *k =
            evs[i]->ordering_key && *evs[i]->ordering_key ? evs[i]->ordering_key : evs[i]->key;
        recs[i] = (msm_record_t){.key = k,
                                 .key_len = k ? strlen(k) : 0,
                                 .value = tasks.data + off,
                                 .value_len = lens[i]};
        off += lens[i];
    }
    char name[SCH_KEY_MAX];
    snprintf(name, sizeof(name), MSM_STREAM_READY, f->sub);
    *a = (fire_append_t){f, count};
    rc = msm_stream_append(s->stream, name, recs, count, on_fire_appended, a);
    if (rc == MSM_OK) {
        a = NULL;
        sch__hold(s);
    }
out:
    for (size_t i = 0; i < count; i++)
        msm_event_free(evs[i]);
    free(evs);
    free(recs);
    free(lens);
    free(a);
    msm_buf_deinit(&tasks);
    if (rc != MSM_OK) {
        f->failed = 1;
        fire_finish(f);
    }
}

static void on_fetched(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_fire_t *f = opaque;
    scheduler_t *s = f->cycle->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != f->n))
        why = "unexpected reply to the fetch script";
    if (why || s->stopping || s->freed) {
        if (why && !s->freed && !s->stopping)
            msm_log(MSM_LOG_WARN, "scheduler", "reading delayed events of %s: %s", f->sub, why);
        f->failed = why != NULL;
        fire_finish(f);
    } else {
        append_tasks(f, reply);
    }
    sch__release(s);
}

static void send_fetch(sch_fire_t *f)
{
    scheduler_t *s = f->cycle->sch;
    const char **argv = calloc(f->n, sizeof(*argv));
    char *keys = malloc(f->n * SCH_KEY_MAX);
    int rc = MSM_ERR_NOMEM;
    if (argv && keys) {
        rc = MSM_OK;
        for (size_t i = 0; i < f->n && rc == MSM_OK; i++) {
            argv[i] = keys + i * SCH_KEY_MAX;
            if (msm_redis_key(s->redis, keys + i * SCH_KEY_MAX, SCH_KEY_MAX, MSM_KEY_TASK, f->sub,
                              f->ids[i]) < 0)
                rc = MSM_ERR_TOOLARGE;
        }
        if (rc == MSM_OK)
            rc = msm_redis_eval(s->redis, s->fetch_script, on_fetched, f, (int)f->n, (int)f->n,
                                argv, NULL);
    }
    free(argv);
    free(keys);
    if (rc != MSM_OK) {
        f->failed = 1;
        fire_finish(f);
        return;
    }
    sch__hold(s);
}

/* ---- the scan ---- */

static void scan_reply_done(sch_fire_t *f)
{
    if (--f->replies)
        return;
    if (f->failed || !f->n || f->cycle->sch->stopping || f->cycle->sch->freed) {
        fire_finish(f);
        return;
    }
    send_fetch(f);
}

/* ZRANGEBYSCORE -inf now WITHSCORES LIMIT 0 fire_batch: [id, score, ...]. */
static void on_due(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_fire_t *f = opaque;
    scheduler_t *s = f->cycle->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && reply->type != REDIS_REPLY_ARRAY)
        why = "unexpected reply";
    size_t n = why ? 0 : reply->elements / 2;
    if (n) {
        f->ids = calloc(n, sizeof(*f->ids));
        f->due_at = calloc(n, sizeof(*f->due_at));
        if (!f->ids || !f->due_at)
            why = "out of memory";
    }
    for (size_t i = 0; !why && i < n; i++) {
        const redisReply *id = reply->element[2 * i], *sc = reply->element[2 * i + 1];
        if (id->type != REDIS_REPLY_STRING || sc->type != REDIS_REPLY_STRING ||
            !(f->ids[f->n] = strdup(id->str)))
            continue;
        f->due_at[f->n++] = (int64_t)strtod(sc->str, NULL);
    }
    if (why) {
        if (!s->freed && !s->stopping)
            msm_log(MSM_LOG_WARN, "scheduler", "scanning delayed events of %s: %s", f->sub, why);
        f->failed = 1;
    }
    scan_reply_done(f);
    sch__release(s);
}

/* ZRANGE 0 0 WITHSCORES: [id, score] or []. */
static void on_earliest(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_fire_t *f = opaque;
    scheduler_t *s = f->cycle->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (why)
        f->failed = 1;
    else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
             reply->element[1]->type == REDIS_REPLY_STRING)
        f->earliest = (int64_t)strtod(reply->element[1]->str, NULL);
    scan_reply_done(f);
    sch__release(s);
}

static void fire_scan(sch_fire_t *f)
{
    scheduler_t *s = f->cycle->sch;
    char now[24], limit[24];
    snprintf(now, sizeof(now), "%" PRId64, f->cycle->now);
    snprintf(limit, sizeof(limit), "%d", s->conf.fire_batch);
    const char *due[] = {"ZRANGEBYSCORE", f->key, "-inf", now, "WITHSCORES", "LIMIT", "0", limit};
    const char *first[] = {"ZRANGE", f->key, "0", "0", "WITHSCORES"};
    f->replies = 1; /* held until both are sent, so no reply can finish the fire early */
    if (msm_redis_command_argv(s->redis, on_due, f, 8, due, NULL) == MSM_OK) {
        f->replies++;
        sch__hold(s);
    } else {
        f->failed = 1;
    }
    if (msm_redis_command_argv(s->redis, on_earliest, f, 5, first, NULL) == MSM_OK) {
        f->replies++;
        sch__hold(s);
    } else {
        f->failed = 1;
    }
    scan_reply_done(f);
}

static void cycle_start(scheduler_t *s)
{
    if (s->stopping || s->freed)
        return;
    size_t nsubs = 0;
    for (sch_sub_t *sub = s->subs; sub; sub = sub->next)
        nsubs++;
    sch_cycle_t *c = calloc(1, sizeof(*c));
    if (!c || (nsubs && !(c->fires = calloc(nsubs, sizeof(*c->fires))))) {
        free(c);
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
    for (sch_sub_t *sub = s->subs; sub; sub = sub->next) {
        sch_fire_t *f = &c->fires[c->nfires];
        f->cycle = c;
        f->earliest = INT64_MAX;
        if (!(f->sub = strdup(sub->name)) ||
            msm_redis_key(s->redis, f->key, sizeof(f->key), MSM_KEY_DELAYED, sub->name) < 0) {
            free(f->sub);
            f->sub = NULL;
            c->failed = 1;
            continue;
        }
        c->nfires++;
        c->active++;
    }
    for (size_t i = 0; i < c->nfires; i++)
        fire_scan(&c->fires[i]);
    if (--c->active == 0)
        cycle_end(c);
}
