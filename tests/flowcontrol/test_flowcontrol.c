/* SPDX-License-Identifier: MIT */
/* flowcontrol in-process against a real redis-server: the test plays the scheduler (appends
 * Tasks to ready.<sub>) and the router (consumes dispatch.<sub>, appends outcomes to status),
 * and checks concurrency, outcomes, backoff, dead letters, stale outcomes, duplicates and
 * lease expiry in the Redis keys of docs/pipeline.md. */
#include "msm_test.h"
#include "flowcontrol.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/registry.h"
#include "msm/time.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static msm_test_redis_t srv;

#define MAX_SEEN 256

/* One task the "router" received on dispatch.<sub>. */
typedef struct {
    char id[64];
    int attempt;
    int64_t lease_until_ms;
    int64_t seen_unix_ms;
} seen_t;

typedef struct {
    msm_loop_t *loop;
    msm_redis_t *redis;
    msm_stream_t *stream;
    msm_metrics_t *metrics;
    flowcontrol_t *fc;
    msm_consumer_t *dispatch;
    char ns[64];
    const char *sub;
    seen_t seen[MAX_SEEN];
    size_t nseen;
    size_t nanswered; /* outcomes the router sent */
    size_t max_unanswered;
    int bad_tasks; /* dispatched Tasks with wrong fields */
    int pending_ops, op_errors;
} fx_t;

typedef struct {
    int max_concurrency, timeout_ms, max_attempts, min_backoff_ms, max_backoff_ms;
    int lease_grace_ms;
} opts_t;

/* ---- a synchronous side channel for looking at the keys ---- */

static long long reply_ll(redisReply *r)
{
    long long v = msm_redis_reply_int(r, -1);
    freeReplyObject(r);
    return v;
}

/* A field of the task hash, or "" when absent (static buffer). */
static const char *task_field(fx_t *f, const char *id, const char *field)
{
    static char buf[4096];
    redisReply *r = msm_test_redis_query(&srv, "HGET %s:sub:{%s}:task:%s %s", f->ns, f->sub, id, field);
    buf[0] = '\0';
    if (r && r->type == REDIS_REPLY_STRING)
        snprintf(buf, sizeof(buf), "%s", r->str);
    freeReplyObject(r);
    return buf;
}

static long long zcard(fx_t *f, const char *set)
{
    return reply_ll(msm_test_redis_query(&srv, "ZCARD %s:sub:{%s}:%s", f->ns, f->sub, set));
}

static long long zscore(fx_t *f, const char *set, const char *id)
{
    return reply_ll(msm_test_redis_query(&srv, "ZSCORE %s:sub:{%s}:%s %s", f->ns, f->sub, set, id));
}

static long long stat(fx_t *f, const char *field)
{
    return reply_ll(msm_test_redis_query(&srv, "HGET %s:sub:{%s}:stats %s", f->ns, f->sub, field));
}

/* The value of one sample in the /metrics text, or -1. */
static double metric(fx_t *f, const char *name, const char *kind)
{
    char want[256];
    if (kind)
        snprintf(want, sizeof(want), "%s{subscription=\"%s\",kind=\"%s\"} ", name, f->sub, kind);
    else
        snprintf(want, sizeof(want), "%s{subscription=\"%s\"} ", name, f->sub);
    char *text = msm_metrics_render(f->metrics, NULL);
    double v = -1;
    char *p = text ? strstr(text, want) : NULL;
    if (p)
        v = strtod(p + strlen(want), NULL);
    free(text);
    return v;
}

/* ---- running the loop ---- */

/* Runs the loop in small steps until @p pred holds or @p timeout_ms passes. */
static int
spin_until(fx_t *f, int (*pred)(fx_t *, const void *), const void *arg, uint64_t timeout_ms)
{
    uint64_t deadline = msm_time_mono_ms() + timeout_ms;
    while (!pred(f, arg)) {
        if (msm_time_mono_ms() >= deadline)
            return -1;
        msm_loop_run_once(f->loop, 10);
    }
    return 0;
}

static int seen_at_least(fx_t *f, const void *arg)
{
    return f->nseen >= *(const size_t *)arg;
}

static int ops_done(fx_t *f, const void *arg)
{
    (void)arg;
    return f->pending_ops == 0;
}

typedef struct {
    const char *id;
    const char *state;
} state_want_t;

static int state_is(fx_t *f, const void *arg)
{
    const state_want_t *w = arg;
    return strcmp(task_field(f, w->id, "state"), w->state) == 0;
}

typedef struct {
    const char *name, *kind;
    double value;
} metric_want_t;

static int metric_is(fx_t *f, const void *arg)
{
    const metric_want_t *w = arg;
    return metric(f, w->name, w->kind) >= w->value;
}

static int wait_state(fx_t *f, const char *id, const char *state, uint64_t timeout_ms)
{
    state_want_t w = {id, state};
    return spin_until(f, state_is, &w, timeout_ms);
}

static int wait_metric(fx_t *f, const char *name, const char *kind, double value)
{
    metric_want_t w = {name, kind, value};
    return spin_until(f, metric_is, &w, 5000);
}

static int wait_seen(fx_t *f, size_t n, uint64_t timeout_ms)
{
    return spin_until(f, seen_at_least, &n, timeout_ms);
}

static void on_op_done(int err, const char *reason, void *opaque)
{
    fx_t *f = opaque;
    f->pending_ops--;
    if (err != MSM_OK) {
        fprintf(stderr, "write failed: %s\n", reason ? reason : msm_err_str(err));
        f->op_errors++;
    }
}

static void on_stream_done(msm_err_t err, const char *reason, void *opaque)
{
    on_op_done(err, reason, opaque);
}

static int wait_ops(fx_t *f)
{
    return spin_until(f, ops_done, NULL, 5000) == 0 && f->op_errors == 0 ? 0 : -1;
}

/* ---- the router's side ---- */

static void on_dispatch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    fx_t *f = opaque;
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Task *t = msm_task_unpack(msgs[i]->value, msgs[i]->value_len);
        if (!t || !t->event || strcmp(t->subscription, f->sub) != 0 ||
            t->state != MSM__V1__TASK_STATE__TASK_STATE_RUNNING || t->attempt < 1 ||
            f->nseen == MAX_SEEN) {
            f->bad_tasks++;
        } else {
            seen_t *s = &f->seen[f->nseen++];
            snprintf(s->id, sizeof(s->id), "%s", t->event->id);
            s->attempt = t->attempt;
            s->lease_until_ms = t->lease_until_ms;
            s->seen_unix_ms = msm_time_unix_ms();
            if (f->nseen - f->nanswered > f->max_unanswered)
                f->max_unanswered = f->nseen - f->nanswered;
        }
        msm_task_free(t);
        msm_consumer_ack(c, msgs[i]);
    }
}

static int send_outcome(fx_t *f,
                        const char *id,
                        int attempt,
                        Msm__V1__OutcomeKind kind,
                        int http_status,
                        const char *error,
                        int64_t retry_after_ms)
{
    Msm__V1__DeliveryOutcome o = MSM__V1__DELIVERY_OUTCOME__INIT;
    o.event_id = (char *)id;
    o.subscription = (char *)f->sub;
    o.attempt = attempt;
    o.kind = kind;
    o.http_status = http_status;
    o.error = (char *)(error ? error : "");
    o.latency_ms = 12;
    o.retry_after_ms = retry_after_ms;
    msm_buf_t buf = {0};
    msm_pb_pack(&o.base, &buf);
    msm_record_t rec = {
        .key = f->sub, .key_len = strlen(f->sub), .value = buf.data, .value_len = buf.len};
    f->nanswered++; /* before the append: flowcontrol may only dispatch more after it */
    f->pending_ops++;
    int rc = msm_stream_append(f->stream, MSM_STREAM_STATUS, &rec, 1, on_stream_done, f);
    msm_buf_deinit(&buf);
    if (rc != MSM_OK) {
        f->pending_ops--;
        return -1;
    }
    return wait_ops(f);
}

/* ---- the scheduler's side ---- */

static int send_ready(fx_t *f, const char *const *ids, size_t n)
{
    msm_buf_t *bufs = calloc(n, sizeof(*bufs));
    msm_record_t *recs = calloc(n, sizeof(*recs));
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Event ev = MSM__V1__EVENT__INIT;
        ev.id = (char *)ids[i];
        ev.topic = "orders";
        ev.key = (char *)ids[i];
        ev.priority = 5;
        ev.publish_time_ms = msm_time_unix_ms();
        Msm__V1__Task t = MSM__V1__TASK__INIT;
        t.event = &ev;
        t.subscription = (char *)f->sub;
        t.state = MSM__V1__TASK_STATE__TASK_STATE_PENDING;
        msm_pb_pack(&t.base, &bufs[i]);
        recs[i] = (msm_record_t){.key = ids[i],
                                 .key_len = strlen(ids[i]),
                                 .value = bufs[i].data,
                                 .value_len = bufs[i].len};
    }
    char name[128];
    snprintf(name, sizeof(name), MSM_STREAM_READY, f->sub);
    f->pending_ops++;
    int rc = msm_stream_append(f->stream, name, recs, n, on_stream_done, f);
    for (size_t i = 0; i < n; i++)
        msm_buf_deinit(&bufs[i]);
    free(bufs);
    free(recs);
    if (rc != MSM_OK) {
        f->pending_ops--;
        return -1;
    }
    return wait_ops(f);
}

/* ---- fixture ---- */

static int put_registry(fx_t *f, const opts_t *o)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_topic_t *topic = msm_topic_from_json("orders", NULL, &e);
    json_t *body =
        json_pack("{s:s,s:[{s:s}],s:i,s:i,s:{s:i,s:i,s:i}}", "topic", "orders", "endpoints", "url",
                  "http://127.0.0.1:9/", "max_concurrency", o->max_concurrency, "timeout_ms",
                  o->timeout_ms, "retry", "max_attempts", o->max_attempts, "min_backoff_ms",
                  o->min_backoff_ms, "max_backoff_ms", o->max_backoff_ms);
    msm_sub_t *sub = msm_sub_from_json(f->sub, body, &e);
    json_decref(body);
    int rc = -1;
    if (topic && sub) {
        json_t *tj = msm_topic_to_json(topic), *sj = msm_sub_to_json(sub, true);
        f->pending_ops += 2;
        msm_registry_put(f->redis, MSM_KEY_TOPICS, "orders", tj, on_op_done, f);
        msm_registry_put(f->redis, MSM_KEY_SUBS, f->sub, sj, on_op_done, f);
        json_decref(tj);
        json_decref(sj);
        rc = wait_ops(f);
    } else {
        fprintf(stderr, "subscription: %s\n", msm_json_err_message(&e));
    }
    msm_topic_free(topic);
    msm_sub_free(sub);
    msm_json_err_deinit(&e);
    return rc;
}

static int fx_open(fx_t *f, const opts_t *o)
{
    memset(f, 0, sizeof(*f));
    f->sub = "orders-sub";
    msm_test_namespace(f->ns, sizeof(f->ns));
    f->loop = msm_loop_new();
    char err[256] = "";
    msm_redis_conf_t rc = {.url = srv.url, .ns = f->ns};
    f->redis = msm_redis_new(f->loop, &rc, err, sizeof(err));
    msm_stream_conf_t sc = {
        .backend = MSM_STREAM_REDIS, .redis_url = srv.url, .name_prefix = f->ns};
    f->stream = msm_stream_new(f->loop, &sc, err, sizeof(err));
    f->metrics = msm_metrics_new();
    if (!f->redis || !f->stream || !f->metrics || put_registry(f, o) != 0)
        return -1;
    char ready[128];
    snprintf(ready, sizeof(ready), MSM_STREAM_READY, f->sub);
    f->pending_ops += 2;
    msm_stream_ensure(f->stream, ready, 2, on_stream_done, f);
    msm_stream_ensure(f->stream, MSM_STREAM_STATUS, 2, on_stream_done, f);
    if (wait_ops(f) != 0)
        return -1;
    fc_env_t env = {f->loop, f->redis, f->stream, f->metrics, "fc-test"};
    fc_conf_t conf = {.lease_grace_ms = o->lease_grace_ms,
                      .admit_poll_ms = 200,
                      .safety_poll_ms = 1000,
                      .registry_poll_ms = 50,
                      .batch = 64};
    f->fc = flowcontrol_new(&env, &conf);
    char dispatch[128];
    snprintf(dispatch, sizeof(dispatch), MSM_STREAM_DISPATCH, f->sub);
    f->dispatch = msm_stream_consume(f->stream, dispatch, "router", "test-router", 64, 1024,
                                     on_dispatch, f, err, sizeof(err));
    return f->fc && f->dispatch ? 0 : -1;
}

static void fx_close(fx_t *f)
{
    msm_consumer_free(f->dispatch);
    flowcontrol_free(f->fc);
    msm_stream_free(f->stream);
    msm_redis_free(f->redis);
    msm_metrics_free(f->metrics);
    msm_loop_free(f->loop);
}

static const opts_t default_opts = {.max_concurrency = 3,
                                    .timeout_ms = 30000,
                                    .max_attempts = 3,
                                    .min_backoff_ms = 300,
                                    .max_backoff_ms = 400,
                                    .lease_grace_ms = 5000};

static const seen_t *last_seen_of(fx_t *f, const char *id)
{
    for (size_t i = f->nseen; i > 0; i--) {
        if (strcmp(f->seen[i - 1].id, id) == 0)
            return &f->seen[i - 1];
    }
    return NULL;
}

/* ---- tests ---- */

static void test_concurrency_and_success(void)
{
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &default_opts) == 0);
    const char *ids[20];
    char names[20][16];
    for (int i = 0; i < 20; i++) {
        snprintf(names[i], sizeof(names[i]), "ev-%02d", i);
        ids[i] = names[i];
    }
    int64_t before = msm_time_unix_ms();
    CU_ASSERT_FATAL(send_ready(&f, ids, 20) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 3, 5000) == 0);
    int64_t after = msm_time_unix_ms();
    /* Nothing more while three are in flight, however long we wait. */
    msm_test_spin(f.loop, 600);
    CU_ASSERT_EQUAL(f.nseen, 3);
    CU_ASSERT_EQUAL(zcard(&f, "running"), 3);
    CU_ASSERT_EQUAL(zcard(&f, "pending"), 17);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_in_flight", NULL), 3);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_admitted_total", NULL), 20);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(f.seen[i].attempt, 1);
        /* lease = now + timeout_ms + grace */
        CU_ASSERT(f.seen[i].lease_until_ms >= before + 30000 + 5000);
        CU_ASSERT(f.seen[i].lease_until_ms <= after + 30000 + 5000);
        CU_ASSERT_STRING_EQUAL(task_field(&f, f.seen[i].id, "state"), "running");
    }
    /* Answer whatever is in flight until all twenty are done. */
    uint64_t deadline = msm_time_mono_ms() + 20000;
    while (f.nanswered < 20 && msm_time_mono_ms() < deadline) {
        while (f.nanswered < f.nseen) {
            const seen_t *s = &f.seen[f.nanswered];
            CU_ASSERT_FATAL(send_outcome(&f, s->id, s->attempt,
                                         MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL,
                                         0) == 0);
        }
        if (f.nanswered < 20)
            wait_seen(&f, f.nanswered + 1, 5000);
    }
    CU_ASSERT_EQUAL(f.nanswered, 20);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_outcomes_total", "success", 20) == 0);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL(f.nseen, 20); /* each exactly once */
    CU_ASSERT(f.max_unanswered <= 3);
    CU_ASSERT_EQUAL(f.max_unanswered, 3);
    CU_ASSERT_EQUAL(f.bad_tasks, 0);
    for (int i = 0; i < 20; i++) {
        CU_ASSERT_STRING_EQUAL(task_field(&f, ids[i], "state"), "succeeded");
        CU_ASSERT_STRING_EQUAL(task_field(&f, ids[i], "attempts"), "1");
        CU_ASSERT_PTR_NOT_NULL(last_seen_of(&f, ids[i]));
    }
    const char *h = task_field(&f, ids[0], "history");
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "\"result\":\"success\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(h, "\"http_status\":200"));
    CU_ASSERT_PTR_NULL(strstr(h, "running"));
    CU_ASSERT_EQUAL(stat(&f, "succeeded"), 20);
    CU_ASSERT_EQUAL(zcard(&f, "running"), 0);
    CU_ASSERT_EQUAL(zcard(&f, "pending"), 0);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_dispatched_total", NULL), 20);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_in_flight", NULL), 0);
    fx_close(&f);
}

static void test_retriable_backoff_then_dead(void)
{
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &default_opts) == 0);
    const char *ids[] = {"r1"};
    CU_ASSERT_FATAL(send_ready(&f, ids, 1) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 1, 5000) == 0);
    CU_ASSERT_EQUAL(f.seen[0].attempt, 1);

    int64_t sent = msm_time_unix_ms();
    CU_ASSERT_FATAL(send_outcome(&f, "r1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 500,
                                 "HTTP 500 from lambda", 0) == 0);
    CU_ASSERT(wait_state(&f, "r1", "retrying", 2000) == 0);
    long long due = zscore(&f, "retry", "r1");
    CU_ASSERT(due >= sent + 300);
    CU_ASSERT_EQUAL(atoll(task_field(&f, "r1", "next_attempt_at")), due);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "r1", "last_error"), "HTTP 500 from lambda");
    CU_ASSERT_FATAL(wait_seen(&f, 2, 3000) == 0);
    CU_ASSERT_EQUAL(f.seen[1].attempt, 2);
    CU_ASSERT(f.seen[1].seen_unix_ms - sent >= 300); /* not before min backoff */
    CU_ASSERT(f.seen[1].seen_unix_ms - sent < 1500);

    /* Retry-After wins over a shorter backoff. */
    sent = msm_time_unix_ms();
    CU_ASSERT_FATAL(send_outcome(&f, "r1", 2, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 503,
                                 NULL, 700) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 3, 3000) == 0);
    CU_ASSERT_EQUAL(f.seen[2].attempt, 3);
    CU_ASSERT(f.seen[2].seen_unix_ms - sent >= 700);

    /* The third failure of three attempts is the last. */
    CU_ASSERT_FATAL(send_outcome(&f, "r1", 3, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 503,
                                 NULL, 0) == 0);
    CU_ASSERT(wait_state(&f, "r1", "dead", 2000) == 0);
    CU_ASSERT(zscore(&f, "dlq", "r1") >= sent);
    CU_ASSERT_EQUAL(zscore(&f, "retry", "r1"), -1);
    CU_ASSERT_EQUAL(zcard(&f, "running"), 0);
    CU_ASSERT_EQUAL(stat(&f, "dead"), 1);
    CU_ASSERT_EQUAL(stat(&f, "failed_attempts"), 3);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "r1", "last_error"), "HTTP 503");
    CU_ASSERT_STRING_EQUAL(task_field(&f, "r1", "attempts"), "3");
    json_t *h = json_loads(task_field(&f, "r1", "history"), 0, NULL);
    CU_ASSERT_EQUAL(json_array_size(h), 3);
    for (size_t i = 0; i < json_array_size(h); i++) {
        json_t *e = json_array_get(h, i);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(e, "attempt")), (json_int_t)i + 1);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e, "result")), "retriable");
    }
    json_decref(h);
    msm_test_spin(f.loop, 800);
    CU_ASSERT_EQUAL(f.nseen, 3);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_retries_total", NULL), 2);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_dead_total", NULL), 1);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_outcomes_total", "retriable"), 3);
    fx_close(&f);
}

static void test_fatal_dead_then_replay(void)
{
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &default_opts) == 0);
    const char *ids[] = {"f1"};
    CU_ASSERT_FATAL(send_ready(&f, ids, 1) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 1, 5000) == 0);
    CU_ASSERT_FATAL(send_outcome(&f, "f1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL, 200,
                                 "bad payload", 0) == 0);
    CU_ASSERT(wait_state(&f, "f1", "dead", 2000) == 0);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "f1", "attempts"), "1");
    CU_ASSERT_STRING_EQUAL(task_field(&f, "f1", "last_error"), "bad payload");
    CU_ASSERT(zscore(&f, "dlq", "f1") > 0);
    CU_ASSERT_EQUAL(stat(&f, "dead"), 1);
    CU_ASSERT_EQUAL(stat(&f, "failed_attempts"), 1);
    msm_test_spin(f.loop, 600);
    CU_ASSERT_EQUAL(f.nseen, 1);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_outcomes_total", "fatal"), 1);

    /* Replay as the frontend does it: back to pending; admission picks it up. */
    redisReply *r = msm_test_redis_query(&srv, "HSET %s:sub:{%s}:task:f1 state pending", f.ns, f.sub);
    freeReplyObject(r);
    r = msm_test_redis_query(&srv, "ZREM %s:sub:{%s}:dlq f1", f.ns, f.sub);
    freeReplyObject(r);
    r = msm_test_redis_query(&srv, "ZADD %s:sub:{%s}:pending 1 f1", f.ns, f.sub);
    freeReplyObject(r);
    CU_ASSERT_FATAL(wait_seen(&f, 2, 3000) == 0);
    CU_ASSERT_STRING_EQUAL(f.seen[1].id, "f1");
    CU_ASSERT_EQUAL(f.seen[1].attempt, 2);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "f1", "state"), "running");
    fx_close(&f);
}

static void test_stale_outcomes_ignored(void)
{
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &default_opts) == 0);
    const char *ids[] = {"s1"};
    CU_ASSERT_FATAL(send_ready(&f, ids, 1) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 1, 5000) == 0);
    /* An outcome for an attempt the task is not on. */
    CU_ASSERT_FATAL(
        send_outcome(&f, "s1", 2, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL, 0) == 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_stale_outcomes_total", NULL, 1) == 0);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "s1", "state"), "running");
    CU_ASSERT_EQUAL(zcard(&f, "running"), 1);
    CU_ASSERT_EQUAL(stat(&f, "succeeded"), -1);
    /* The right one, then the same again, then a late failure. */
    CU_ASSERT_FATAL(
        send_outcome(&f, "s1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL, 0) == 0);
    CU_ASSERT(wait_state(&f, "s1", "succeeded", 2000) == 0);
    CU_ASSERT_FATAL(
        send_outcome(&f, "s1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL, 0) == 0);
    CU_ASSERT_FATAL(send_outcome(&f, "s1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 500,
                                 NULL, 0) == 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_stale_outcomes_total", NULL, 3) == 0);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "s1", "state"), "succeeded");
    CU_ASSERT_EQUAL(stat(&f, "succeeded"), 1);
    CU_ASSERT_EQUAL(stat(&f, "failed_attempts"), -1);
    CU_ASSERT_EQUAL(zcard(&f, "retry"), 0);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_outcomes_total", "success"), 1);
    fx_close(&f);
}

static void test_duplicate_ready_admitted_once(void)
{
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &default_opts) == 0);
    /* A task the scheduler parked as delayed is admitted when it arrives on ready. */
    redisReply *r = msm_test_redis_query(&srv, "HSET %s:sub:{%s}:task:d1 state delayed", f.ns, f.sub);
    freeReplyObject(r);
    const char *ids[] = {"dup", "dup", "d1"};
    CU_ASSERT_FATAL(send_ready(&f, ids, 3) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 2, 5000) == 0);
    msm_test_spin(f.loop, 500);
    CU_ASSERT_EQUAL(f.nseen, 2);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_admitted_total", NULL), 2);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_duplicates_total", NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(last_seen_of(&f, "dup"));
    CU_ASSERT_PTR_NOT_NULL(last_seen_of(&f, "d1"));
    for (size_t i = 0; i < 2; i++)
        CU_ASSERT_FATAL(send_outcome(&f, f.seen[i].id, 1,
                                     MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL,
                                     0) == 0);
    CU_ASSERT(wait_state(&f, "dup", "succeeded", 2000) == 0);
    /* The same entry again later (a scheduler redelivery): still a duplicate. */
    const char *again[] = {"dup"};
    CU_ASSERT_FATAL(send_ready(&f, again, 1) == 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_duplicates_total", NULL, 2) == 0);
    msm_test_spin(f.loop, 400);
    CU_ASSERT_EQUAL(f.nseen, 2);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "dup", "state"), "succeeded");
    CU_ASSERT_STRING_EQUAL(task_field(&f, "dup", "attempts"), "1");
    CU_ASSERT_EQUAL(stat(&f, "succeeded"), 2);
    fx_close(&f);
}

static void test_lease_expiry_redispatches(void)
{
    opts_t o = default_opts;
    o.timeout_ms = 200;
    o.lease_grace_ms = 100;
    o.min_backoff_ms = 100;
    o.max_backoff_ms = 100;
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    const char *ids[] = {"l1"};
    int64_t before = msm_time_unix_ms();
    CU_ASSERT_FATAL(send_ready(&f, ids, 1) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 1, 5000) == 0);
    int64_t lease = f.seen[0].lease_until_ms;
    CU_ASSERT(lease >= before + 200 + 100);
    /* No outcome: the lease (timeout + grace) expires, then the backoff, then attempt 2. */
    CU_ASSERT_FATAL(wait_seen(&f, 2, 3000) == 0);
    CU_ASSERT_STRING_EQUAL(f.seen[1].id, "l1");
    CU_ASSERT_EQUAL(f.seen[1].attempt, 2);
    CU_ASSERT(f.seen[1].seen_unix_ms >= lease + 100);
    CU_ASSERT_PTR_NOT_NULL(strstr(task_field(&f, "l1", "history"), "lease expired"));
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_leases_expired_total", NULL), 1);
    CU_ASSERT_EQUAL(stat(&f, "failed_attempts"), 1);
    /* The first attempt's late answer is stale; the second's counts. */
    CU_ASSERT_FATAL(
        send_outcome(&f, "l1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL, 0) == 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_stale_outcomes_total", NULL, 1) == 0);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "l1", "state"), "running");
    CU_ASSERT_FATAL(
        send_outcome(&f, "l1", 2, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL, 0) == 0);
    CU_ASSERT(wait_state(&f, "l1", "succeeded", 2000) == 0);
    fx_close(&f);
}

static int sub_gone(fx_t *f, const void *arg)
{
    (void)arg;
    return flowcontrol_sub_count(f->fc) == 0;
}

static int drained(fx_t *f, const void *arg)
{
    (void)arg;
    return flowcontrol_drained(f->fc);
}

static void test_ready_remove_and_drain(void)
{
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &default_opts) == 0);
    char why[64] = "";
    CU_ASSERT_EQUAL(flowcontrol_ready(f.fc, why, sizeof(why)), 0); /* registry not loaded yet */
    const char *ids[] = {"a", "b", "c", "d"};
    CU_ASSERT_FATAL(send_ready(&f, ids, 4) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 3, 5000) == 0);
    CU_ASSERT_EQUAL(flowcontrol_ready(f.fc, why, sizeof(why)), 1);
    CU_ASSERT_EQUAL(flowcontrol_sub_count(f.fc), 1);
    /* Deleting the subscription stops its engine, with work in flight. */
    f.pending_ops++;
    msm_registry_delete(f.redis, MSM_KEY_SUBS, f.sub, on_op_done, &f);
    CU_ASSERT(wait_ops(&f) == 0);
    CU_ASSERT(spin_until(&f, sub_gone, NULL, 3000) == 0);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL(f.nseen, 3);
    /* Stop: drained once nothing is in flight. */
    flowcontrol_stop(f.fc);
    CU_ASSERT(spin_until(&f, drained, NULL, 3000) == 0);
    fx_close(&f);
}

static int suite_init(void)
{
    return msm_test_redis_start(&srv);
}

static int suite_clean(void)
{
    msm_test_redis_destroy(&srv);
    return 0;
}

static CU_TestInfo flowcontrol_tests[] = {
    {"concurrency_and_success", test_concurrency_and_success},
    {"retriable_backoff_then_dead", test_retriable_backoff_then_dead},
    {"fatal_dead_then_replay", test_fatal_dead_then_replay},
    {"stale_outcomes_ignored", test_stale_outcomes_ignored},
    {"duplicate_ready_admitted_once", test_duplicate_ready_admitted_once},
    {"lease_expiry_redispatches", test_lease_expiry_redispatches},
    {"ready_remove_and_drain", test_ready_remove_and_drain},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"flowcontrol", suite_init, suite_clean, NULL, NULL, flowcontrol_tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return msm_test_run(suites);
}
