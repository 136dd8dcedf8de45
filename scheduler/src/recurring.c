/* SPDX-License-Identifier: MIT */
/* Recurring schedules (docs/schedules.md): one loop timer per schedule, set at its next due
 * time. A firing reads the schedule's last settled due time, plans the ticks due since
 * (recurring_plan.c: on time, or missed and left to catch_up), claims each tick's
 * idempotency key like a publish with a key (msm/idempotency.h), appends the claimed ticks'
 * events to events.<topic> in one append, commits the keys, and advances the last settled
 * due time. Every scheduler fires every schedule: the key, derived like the event id from
 * the schedule's name and the tick's due time, makes each tick one publish whoever gets
 * there first, and a restarted scheduler resumes from the stored due time. */
#include "sch_int.h"

#include "msm/err.h"
#include "msm/idempotency.h"
#include "msm/log.h"
#include "msm/time.h"
#include "msm/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "schedules"
/* A timer never waits longer: a wall clock that jumps is noticed this soon. */
#define MAX_WAIT_MS 300000
/* A claimed tick key outlives a scheduler that died before settling it by the longest an
 * append may take (log.append_timeout_ms) and this much more. */
#define PENDING_MARGIN_MS 5000

/* Lateness of published ticks, in seconds: milliseconds are normal, a takeover seconds. */
static const double lateness_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25,  0.5,    1,     2.5,  5,     10,   60};

/* KEYS: the schedules hash, the last_due hash; ARGV: name, due ms. Moves last_due forward
 * only, and only while the schedule exists (a late firing must not bring back the state of
 * a deleted one). */
static const char ADVANCE_LUA[] =
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
    "local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')\n"
    "if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end\n"
    "return 1\n";

typedef struct sch_sched_s sch_sched_t;

/* Per planned tick, during a firing. */
enum { TICK_OPEN = 0, TICK_SETTLED = 1, TICK_CLAIMED = 2 };

/* The firing in flight of one schedule. */
typedef struct {
    sch_sched_t *sc;
    int64_t from_ms; /* the last settled due time it started from */
    int64_t now_ms;  /* the plan's clock */
    sch_plan_t plan;
    char (*keys)[MSM_SCHEDULE_TICK_KEY_MAX];
    char (*ids)[MSM_ID_STR_SIZE];
    const char **key_ptrs, **id_ptrs; /* views of the claimed ones, for msm_idem_* */
    unsigned char *state;             /* TICK_* per planned tick */
    size_t nclaimed;
    uint32_t commit_tries;
    msm_timer_t retry; /* a failed commit is retried: the events are durable already */
} fire_t;

struct sch_sched_s {
    sch_sched_t *next;
    sch_recurring_t *rec;
    msm_schedule_t *spec;
    msm_schedule_t *next_spec; /* a newer version that came while firing */
    msm_timer_t timer;
    int64_t wake_ms;     /* unix ms the timer is for */
    fire_t *fire;        /* the firing in flight, or NULL */
    int keep;            /* reconcile mark */
    int removed;         /* deleted while firing: the firing's end frees it */
    int topic_missing;   /* logged once until the topic is back */
    uint32_t failures;   /* consecutive failed firings: their backoff */
    uint32_t busy_tries; /* consecutive firings that met another scheduler's claim */
    int64_t counted_ms;  /* skipped ticks up to here are counted already */
    int64_t *open;       /* ticks the last plan meant to publish that stayed unsettled */
    size_t nopen;        /* (skipped later, they are counted then) */
    msm_metric_child_t *m_fired, *m_skipped, *m_no_topic;
};

struct sch_recurring_s {
    scheduler_t *sch;
    msm_idem_t *idem;
    msm_redis_script_t *advance;
    sch_sched_t *list;
    size_t count;
    int stopping;
    uint64_t pending_ms;
    msm_metric_t *f_fired, *f_skipped;
    msm_metric_child_t *m_lateness, *m_count;
};

static void fire_start(sch_sched_t *sc);
static void fire_end(fire_t *f, int failed);
static void arm(sch_sched_t *sc, int64_t at_ms);

/* ---- timers ---- */

static void on_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    sch_sched_t *sc = opaque;
    if (sc->rec->stopping || sc->fire)
        return;
    if (msm_time_unix_ms() < sc->wake_ms) { /* a capped wait, or the clock moved back */
        arm(sc, sc->wake_ms);
        return;
    }
    fire_start(sc);
}

/* Wakes at @p at_ms (unix; at once when past). */
static void arm(sch_sched_t *sc, int64_t at_ms)
{
    int64_t delay = at_ms - msm_time_unix_ms();
    if (delay < 0)
        delay = 0;
    if (delay > MAX_WAIT_MS)
        delay = MAX_WAIT_MS;
    sc->wake_ms = at_ms;
    msm_loop_timer_start(sc->rec->sch->loop, &sc->timer, (uint64_t)delay, on_timer, sc);
}

/* ---- schedule entries ---- */

static void sched_free(sch_sched_t *sc)
{
    msm_loop_timer_stop(sc->rec->sch->loop, &sc->timer);
    free(sc->open);
    msm_schedule_free(sc->spec);
    msm_schedule_free(sc->next_spec);
    free(sc);
}

static sch_sched_t *sched_new(sch_recurring_t *rec, const msm_schedule_t *rs)
{
    sch_sched_t *sc = calloc(1, sizeof(*sc));
    if (!sc || !(sc->spec = msm_schedule_dup(rs))) {
        free(sc);
        return NULL;
    }
    sc->rec = rec;
    msm_timer_init(&sc->timer);
    sc->m_fired = msm_metric_labels(rec->f_fired, rs->name, NULL);
    sc->m_skipped = msm_metric_labels(rec->f_skipped, rs->name, "catch_up", NULL);
    sc->m_no_topic = msm_metric_labels(rec->f_skipped, rs->name, "no_topic", NULL);
    return sc;
}

static sch_sched_t *sched_find(sch_recurring_t *rec, const char *name)
{
    for (sch_sched_t *sc = rec->list; sc; sc = sc->next) {
        if (strcmp(sc->spec->name, name) == 0)
            return sc;
    }
    return NULL;
}

void sch__recurring_sync(sch_recurring_t *rec)
{
    scheduler_t *s = rec->sch;
    if (rec->stopping || !s->registry)
        return;
    for (sch_sched_t *sc = rec->list; sc; sc = sc->next)
        sc->keep = 0;
    for (size_t i = 0; i < msm_registry_schedule_count(s->registry); i++) {
        const msm_schedule_t *rs = msm_registry_schedule_at(s->registry, i);
        sch_sched_t *sc = sched_find(rec, rs->name);
        if (!sc) {
            if (!(sc = sched_new(rec, rs)))
                continue;
            sc->next = rec->list;
            rec->list = sc;
            rec->count++;
            if (rs->cron)
                msm_log(MSM_LOG_INFO, FAC, "schedule %s on topic %s: cron \"%s\", catch_up %s",
                        rs->name, rs->topic, rs->cron, msm_catch_up_name(rs->catch_up));
            else
                msm_log(MSM_LOG_INFO, FAC, "schedule %s on topic %s: every %lld ms, catch_up %s",
                        rs->name, rs->topic, (long long)rs->every_ms,
                        msm_catch_up_name(rs->catch_up));
            arm(sc, 0); /* at once: ticks missed while no scheduler ran */
        } else if (rs->updated_ms != (sc->next_spec ? sc->next_spec : sc->spec)->updated_ms) {
            msm_schedule_t *copy = msm_schedule_dup(rs);
            if (copy && sc->fire) { /* the firing's end takes it */
                msm_schedule_free(sc->next_spec);
                sc->next_spec = copy;
            } else if (copy) {
                msm_schedule_free(sc->spec);
                sc->spec = copy;
                msm_log(MSM_LOG_INFO, FAC, "schedule %s changed", rs->name);
                arm(sc, 0);
            }
        }
        sc->keep = 1;
    }
    for (sch_sched_t **p = &rec->list; *p;) {
        sch_sched_t *sc = *p;
        if (sc->keep) {
            p = &sc->next;
            continue;
        }
        *p = sc->next;
        rec->count--;
        msm_log(MSM_LOG_INFO, FAC, "schedule %s deleted: not firing", sc->spec->name);
        msm_loop_timer_stop(s->loop, &sc->timer);
        if (sc->fire)
            sc->removed = 1;
        else
            sched_free(sc);
    }
    msm_gauge_set(rec->m_count, (double)rec->count);
}

/* ---- a firing ---- */

static void fire_free(fire_t *f)
{
    msm_loop_timer_stop(f->sc->rec->sch->loop, &f->retry);
    sch__plan_deinit(&f->plan);
    free(f->keys);
    free(f->ids);
    free(f->key_ptrs);
    free(f->id_ptrs);
    free(f->state);
    free(f);
}

/* The new last settled due time: everything before the first open tick (or the whole plan). */
static int64_t settled_until(const fire_t *f)
{
    for (size_t i = 0; i < f->plan.n; i++) {
        if (f->state[i] != TICK_SETTLED)
            return f->plan.due[i] - 1;
    }
    return f->plan.last_ms;
}

static void on_advanced(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fire_t *f = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) /* the next firing starts from the older due time: its ticks are duplicates */
        msm_log(MSM_LOG_WARN, FAC, "schedule %s: last due time not stored: %s", f->sc->spec->name,
                why);
    fire_end(f, why != NULL);
}

static void advance(fire_t *f)
{
    sch_sched_t *sc = f->sc;
    sch_recurring_t *rec = sc->rec;
    int64_t until = settled_until(f);
    if (until <= f->from_ms) {
        fire_end(f, 0);
        return;
    }
    char ks[SCH_KEY_MAX], kl[SCH_KEY_MAX], due[24];
    msm_redis_key(rec->sch->redis, ks, sizeof(ks), "%s", MSM_KEY_SCHEDULES);
    msm_redis_key(rec->sch->redis, kl, sizeof(kl), "%s", MSM_KEY_SCHEDULES_LAST_DUE);
    snprintf(due, sizeof(due), "%lld", (long long)until);
    const char *argv[] = {ks, kl, sc->spec->name, due};
    if (msm_redis_eval(rec->sch->redis, rec->advance, on_advanced, f, 2, 4, argv, NULL) != MSM_OK)
        fire_end(f, 1);
}

/* The claimed ticks' keys and ids as arrays for msm_idem_settle(). @returns how many. */
static size_t claimed_views(fire_t *f)
{
    size_t k = 0;
    for (size_t i = 0; i < f->plan.n; i++) {
        if (f->state[i] != TICK_CLAIMED)
            continue;
        f->key_ptrs[k] = f->keys[i];
        f->id_ptrs[k] = f->ids[i];
        k++;
    }
    return k;
}

static void commit(fire_t *f);

static void on_commit_retry(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    commit(opaque);
}

static void on_committed(int err, const char *why, void *opaque)
{
    fire_t *f = opaque;
    sch_recurring_t *rec = f->sc->rec;
    if (err != MSM_OK) {
        /* The events are durable: the keys must say so, or a claim lapsing later would
         * publish them again. Retried until it works or the scheduler stops. */
        msm_log(MSM_LOG_WARN, FAC, "schedule %s: tick keys not committed (retried): %s",
                f->sc->spec->name, why);
        msm_counter_inc(rec->sch->m_retries);
        if (rec->stopping) {
            fire_end(f, 1);
            return;
        }
        msm_loop_timer_start(rec->sch->loop, &f->retry,
                             sch__backoff_ms(rec->sch, f->commit_tries++), on_commit_retry, f);
        return;
    }
    for (size_t i = 0; i < f->plan.n; i++) {
        if (f->state[i] == TICK_CLAIMED)
            f->state[i] = TICK_SETTLED;
    }
    advance(f);
}

static void commit(fire_t *f)
{
    sch_recurring_t *rec = f->sc->rec;
    size_t n = claimed_views(f);
    if (msm_idem_settle(rec->idem, rec->sch->redis, f->sc->spec->topic, f->key_ptrs, f->id_ptrs, n,
                        1, (uint64_t)rec->sch->conf.idempotency_window_ms, on_committed,
                        f) != MSM_OK)
        on_committed(MSM_ERR_NOMEM, "not sent", f);
}

static void on_released(int err, const char *why, void *opaque)
{
    fire_t *f = opaque;
    if (err != MSM_OK) /* the claims lapse after the pending time */
        msm_log(MSM_LOG_WARN, FAC, "schedule %s: tick keys not released: %s", f->sc->spec->name,
                why);
    fire_end(f, 1);
}

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    fire_t *f = opaque;
    sch_sched_t *sc = f->sc;
    sch_recurring_t *rec = sc->rec;
    if (err != MSM_OK) {
        msm_log(MSM_LOG_WARN, FAC, "schedule %s: publish of %zu ticks to %s failed: %s",
                sc->spec->name, f->nclaimed, sc->spec->topic, reason ? reason : msm_err_str(err));
        size_t n = claimed_views(f);
        if (msm_idem_settle(rec->idem, rec->sch->redis, sc->spec->topic, f->key_ptrs, f->id_ptrs, n,
                            0, 0, on_released, f) != MSM_OK)
            on_released(MSM_ERR_NOMEM, "not sent", f);
        return;
    }
    int64_t now = msm_time_unix_ms();
    for (size_t i = 0; i < f->plan.n; i++) {
        if (f->state[i] != TICK_CLAIMED)
            continue;
        msm_counter_inc(sc->m_fired);
        msm_histogram_observe(rec->m_lateness, (double)(now - f->plan.due[i]) / 1000.0);
        msm_log(MSM_LOG_DEBUG, FAC, "schedule %s: tick %lld published as %s (%lld ms late)",
                sc->spec->name, (long long)f->plan.due[i], f->ids[i],
                (long long)(now - f->plan.due[i]));
    }
    commit(f);
}

/* One tick's event: the stored envelope with its id, key, time, trace and attributes. */
static void tick_event(const fire_t *f,
                       size_t i,
                       const Msm__V1__Event *tpl,
                       int64_t now,
                       Msm__V1__Event *env,
                       Msm__V1__Event__AttributesEntry **attrs,
                       Msm__V1__Event__AttributesEntry *mine,
                       char *due_text,
                       char *tp)
{
    const msm_schedule_t *spec = f->sc->spec;
    *env = *tpl;
    env->id = f->ids[i];
    env->topic = spec->topic;
    env->publish_time_ms = now;
    env->deliver_at_ms = 0;
    env->idempotency_key = f->keys[i];
    msm_traceparent_new(tp, 0);
    env->traceparent = tp;
    env->tracestate = "";
    msm_time_format(f->plan.due[i], due_text, MSM_TIME_RFC3339_SIZE);
    for (size_t a = 0; a < tpl->n_attributes; a++)
        attrs[a] = tpl->attributes[a];
    msm__v1__event__attributes_entry__init(&mine[0]);
    mine[0].key = MSM_SCHEDULE_ATTR_NAME;
    mine[0].value = spec->name;
    msm__v1__event__attributes_entry__init(&mine[1]);
    mine[1].key = MSM_SCHEDULE_ATTR_DUE;
    mine[1].value = due_text;
    attrs[tpl->n_attributes] = &mine[0];
    attrs[tpl->n_attributes + 1] = &mine[1];
    env->attributes = attrs;
    env->n_attributes = tpl->n_attributes + 2;
}

/* One append of every claimed tick's event, in due order. */
static int append_claimed(fire_t *f)
{
    sch_sched_t *sc = f->sc;
    scheduler_t *s = sc->rec->sch;
    Msm__V1__Event *tpl = msm_event_unpack(sc->spec->envelope, sc->spec->envelope_len);
    Msm__V1__Event__AttributesEntry **attrs =
        tpl ? calloc(tpl->n_attributes + 2, sizeof(*attrs)) : NULL;
    msm_record_t *recs = calloc(f->nclaimed, sizeof(*recs));
    size_t *offs = calloc(f->nclaimed + 1, sizeof(*offs));
    msm_buf_t buf = {0};
    int rc = MSM_ERR_NOMEM;
    if (!tpl || !attrs || !recs || !offs)
        goto out;
    int64_t now = msm_time_unix_ms();
    size_t k = 0;
    for (size_t i = 0; i < f->plan.n; i++) {
        if (f->state[i] != TICK_CLAIMED)
            continue;
        Msm__V1__Event env;
        Msm__V1__Event__AttributesEntry mine[2];
        char due_text[MSM_TIME_RFC3339_SIZE], tp[MSM_TRACEPARENT_LEN + 1];
        tick_event(f, i, tpl, now, &env, attrs, mine, due_text, tp);
        size_t len = msm__v1__event__get_packed_size(&env);
        if (msm_buf_reserve(&buf, len) != MSM_OK)
            goto out;
        msm__v1__event__pack(&env, buf.data + buf.len);
        buf.len += len;
        offs[++k] = buf.len;
    }
    /* The buffer no longer moves. The record key picks the partition as a publish's does:
     * ordering_key, else key, else none. */
    const char *key = *tpl->ordering_key ? tpl->ordering_key : tpl->key;
    for (size_t r = 0; r < k; r++)
        recs[r] = (msm_record_t){.key = *key ? key : NULL,
                                 .key_len = strlen(key),
                                 .value = buf.data + offs[r],
                                 .value_len = offs[r + 1] - offs[r]};
    char stream[MSM_NAME_MAX + 32];
    snprintf(stream, sizeof(stream), MSM_STREAM_EVENTS, sc->spec->topic);
    rc = msm_stream_append(s->stream, stream, recs, k, on_appended, f);
out:
    msm_event_free(tpl);
    free(attrs);
    free(recs);
    free(offs);
    msm_buf_deinit(&buf);
    return rc;
}

static void
on_claimed(int err, const char *why, const msm_idem_result_t *res, size_t n, void *opaque)
{
    fire_t *f = opaque;
    sch_sched_t *sc = f->sc;
    if (err != MSM_OK || n != f->plan.n) {
        msm_log(MSM_LOG_WARN, FAC, "schedule %s: claiming ticks: %s", sc->spec->name,
                why ? why : "unexpected answer");
        fire_end(f, 1);
        return;
    }
    f->nclaimed = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i].state == MSM_IDEM_CLAIMED) {
            f->state[i] = TICK_CLAIMED;
            f->nclaimed++;
        } else if (res[i].state == MSM_IDEM_DUPLICATE) {
            f->state[i] = TICK_SETTLED; /* another scheduler published it */
        }
    }
    if (f->nclaimed == 0 || sc->rec->stopping) {
        if (f->nclaimed) { /* stopping: give the claims back */
            size_t k = claimed_views(f);
            if (msm_idem_settle(sc->rec->idem, sc->rec->sch->redis, sc->spec->topic, f->key_ptrs,
                                f->id_ptrs, k, 0, 0, on_released, f) == MSM_OK)
                return;
        }
        advance(f);
        return;
    }
    int rc = append_claimed(f);
    if (rc != MSM_OK)
        on_appended(rc, msm_err_str(rc), f);
}

static void claim(fire_t *f)
{
    sch_sched_t *sc = f->sc;
    sch_recurring_t *rec = sc->rec;
    size_t n = f->plan.n;
    f->keys = calloc(n, sizeof(*f->keys));
    f->ids = calloc(n, sizeof(*f->ids));
    f->key_ptrs = calloc(n, sizeof(*f->key_ptrs));
    f->id_ptrs = calloc(n, sizeof(*f->id_ptrs));
    if (!f->keys || !f->ids || !f->key_ptrs || !f->id_ptrs) {
        fire_end(f, 1);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        msm_schedule_tick_key(sc->spec->name, f->plan.due[i], f->keys[i], sizeof(f->keys[i]));
        msm_schedule_tick_id(sc->spec->name, f->plan.due[i], f->ids[i]);
        f->key_ptrs[i] = f->keys[i];
        f->id_ptrs[i] = f->ids[i];
    }
    if (msm_idem_claim(rec->idem, rec->sch->redis, sc->spec->topic, f->key_ptrs, f->id_ptrs, n,
                       rec->pending_ms, on_claimed, f) != MSM_OK)
        fire_end(f, 1);
}

static void on_last_due(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fire_t *f = opaque;
    sch_sched_t *sc = f->sc;
    sch_recurring_t *rec = sc->rec;
    scheduler_t *s = rec->sch;
    const char *why = msm_redis_reply_err(reply, err);
    if (why || sc->removed || rec->stopping || !s->registry) {
        if (why)
            msm_log(MSM_LOG_WARN, FAC, "schedule %s: reading its last due time: %s", sc->spec->name,
                    why);
        fire_end(f, why != NULL);
        return;
    }
    const msm_schedule_t *spec = sc->spec;
    long long last = msm_redis_reply_int(reply, -1);
    f->from_ms = last > spec->updated_ms ? last : spec->updated_ms;
    f->now_ms = msm_time_unix_ms();
    int has_topic = msm_registry_topic(s->registry, spec->topic) != NULL;
    msm_schedule_t strict = *spec;
    if (!has_topic) /* every due tick is skipped while the topic does not exist */
        strict.catch_up = MSM_CATCH_UP_NONE;
    if (sch__plan(&strict, f->from_ms, f->now_ms, has_topic ? s->conf.schedules_grace_ms : 0,
                  (size_t)s->conf.schedules_catch_up_max, sc->counted_ms, &f->plan) != MSM_OK ||
        !(f->state = calloc(f->plan.n + 1, 1))) {
        fire_end(f, 1);
        return;
    }
    /* The plan counts the ticks it skips after counted_ms; ticks an earlier plan meant to
     * publish (then another scheduler's claim was in the way) are counted when skipped now. */
    uint64_t skipped = f->plan.skipped;
    for (size_t i = 0; i < sc->nopen; i++) {
        int64_t t = sc->open[i];
        int planned = 0;
        for (size_t j = 0; j < f->plan.n && !planned; j++)
            planned = f->plan.due[j] == t;
        skipped += t > f->from_ms && t <= f->plan.last_ms && t <= sc->counted_ms && !planned;
    }
    if (skipped) {
        msm_counter_add(has_topic ? sc->m_skipped : sc->m_no_topic, skipped);
        msm_log(MSM_LOG_INFO, FAC, "schedule %s: %llu missed tick(s) skipped (%s)", spec->name,
                (unsigned long long)skipped,
                has_topic ? msm_catch_up_name(spec->catch_up) : "its topic does not exist");
    }
    if (!has_topic && !sc->topic_missing)
        msm_log(MSM_LOG_WARN, FAC, "schedule %s: topic %s does not exist: ticks are skipped",
                spec->name, spec->topic);
    sc->topic_missing = !has_topic;
    if (f->plan.last_ms > sc->counted_ms)
        sc->counted_ms = f->plan.last_ms;
    if (f->plan.n == 0)
        advance(f);
    else
        claim(f);
}

static void fire_start(sch_sched_t *sc)
{
    sch_recurring_t *rec = sc->rec;
    fire_t *f = calloc(1, sizeof(*f));
    if (!f) {
        arm(sc, msm_time_unix_ms() + (int64_t)sch__backoff_ms(rec->sch, sc->failures++));
        return;
    }
    f->sc = sc;
    msm_timer_init(&f->retry);
    sc->fire = f;
    sch__hold(rec->sch);
    char key[SCH_KEY_MAX];
    msm_redis_key(rec->sch->redis, key, sizeof(key), "%s", MSM_KEY_SCHEDULES_LAST_DUE);
    if (msm_redis_command(rec->sch->redis, on_last_due, f, "HGET %s %s", key, sc->spec->name) !=
        MSM_OK)
        fire_end(f, 1);
}

/* The firing is over: the entry waits for its next tick, a retry, or goes. */
static void fire_end(fire_t *f, int failed)
{
    sch_sched_t *sc = f->sc;
    sch_recurring_t *rec = sc->rec;
    scheduler_t *s = rec->sch;
    int open = 0;
    if (f->state) { /* planned: what stays unsettled is looked at again */
        size_t k = 0;
        int64_t *keep = f->plan.n ? malloc(f->plan.n * sizeof(*keep)) : NULL;
        for (size_t i = 0; i < f->plan.n; i++) {
            if (f->state[i] == TICK_SETTLED)
                continue;
            open = 1;
            if (keep)
                keep[k++] = f->plan.due[i];
        }
        free(sc->open);
        sc->open = keep;
        sc->nopen = k;
    }
    int64_t planned_at = f->now_ms;
    sc->fire = NULL;
    fire_free(f);
    sc->failures = failed ? sc->failures + 1 : 0;
    sc->busy_tries = !failed && open ? sc->busy_tries + 1 : 0;
    if (sc->removed) {
        sched_free(sc);
    } else if (!rec->stopping) {
        int64_t now = msm_time_unix_ms();
        if (sc->next_spec) { /* changed meanwhile: plan again with the new one */
            msm_schedule_free(sc->spec);
            sc->spec = sc->next_spec;
            sc->next_spec = NULL;
            arm(sc, now);
        } else if (failed) {
            arm(sc, now + (int64_t)sch__backoff_ms(s, sc->failures - 1));
        } else {
            /* The next tick after the plan's clock (due already, if the firing took long);
             * ticks another scheduler holds are looked at again sooner. */
            int64_t next = msm_schedule_next(sc->spec, planned_at ? planned_at : now);
            int64_t again = now + (int64_t)sch__backoff_ms(s, sc->busy_tries - 1);
            if (open && (next < 0 || again < next))
                next = again;
            if (next >= 0)
                arm(sc, next);
        }
    }
    sch__release(s); /* last: it may free the scheduler, and us with it */
}

/* ---- life cycle ---- */

sch_recurring_t *sch__recurring_new(scheduler_t *s)
{
    static const char *const by_schedule[] = {"schedule", NULL};
    static const char *const by_schedule_reason[] = {"schedule", "reason", NULL};
    msm_metrics_t *m = msm_daemon_metrics(s->daemon);
    sch_recurring_t *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return NULL;
    rec->sch = s;
    rec->pending_ms =
        (uint64_t)msm_daemon_common(s->daemon)->log_append_timeout_ms + PENDING_MARGIN_MS;
    rec->idem = msm_idem_new();
    rec->advance = msm_redis_script_new(ADVANCE_LUA);
    msm_metric_t *lateness = NULL, *count = NULL;
    int rc = !rec->idem || !rec->advance;
    rc |= msm_metrics_counter(m, "msm_scheduler_schedule_ticks_fired_total",
                              "ticks of a recurring schedule published (durable in its topic)",
                              by_schedule, &rec->f_fired);
    rc |= msm_metrics_counter(m, "msm_scheduler_schedule_ticks_skipped_total",
                              "ticks of a recurring schedule not published: missed and skipped "
                              "by its catch_up (reason catch_up), or its topic did not exist "
                              "(reason no_topic)",
                              by_schedule_reason, &rec->f_skipped);
    rc |= msm_metrics_histogram(m, "msm_scheduler_schedule_tick_lateness_seconds",
                                "how long after its due time a published tick was durable", NULL,
                                lateness_buckets,
                                sizeof(lateness_buckets) / sizeof(lateness_buckets[0]), &lateness);
    rc |= msm_metrics_gauge(m, "msm_scheduler_schedules", "recurring schedules being fired", NULL,
                            &count);
    if (rc) {
        sch__recurring_free(rec);
        return NULL;
    }
    rec->m_lateness = msm_metric_solo(lateness);
    rec->m_count = msm_metric_solo(count);
    return rec;
}

void sch__recurring_stop(sch_recurring_t *rec)
{
    if (!rec || rec->stopping)
        return;
    rec->stopping = 1;
    for (sch_sched_t *sc = rec->list; sc; sc = sc->next) {
        msm_loop_timer_stop(rec->sch->loop, &sc->timer);
        /* A commit waiting for its retry gives up: its claims lapse. */
        if (sc->fire && msm_timer_active(&sc->fire->retry)) {
            msm_loop_timer_stop(rec->sch->loop, &sc->fire->retry);
            fire_end(sc->fire, 1);
        }
    }
}

void sch__recurring_free(sch_recurring_t *rec)
{
    if (!rec)
        return;
    while (rec->list) {
        sch_sched_t *sc = rec->list;
        rec->list = sc->next;
        sched_free(sc);
    }
    msm_idem_free(rec->idem);
    msm_redis_script_free(rec->advance);
    free(rec);
}
