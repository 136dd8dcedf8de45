/* SPDX-License-Identifier: MIT */
/* flowcontrol in-process against a real redis-server: the test plays the scheduler (appends
 * TaskBatch records to ready.<sub>) and the router (consumes dispatch.<sub>, appends
 * OutcomeBatch records to status.<sub>), and checks concurrency, outcomes, backoff, dead
 * letters, stale outcomes, duplicates, leases, ownership and takeover between two members,
 * and retention, in the task records, stores and streams of docs/pipeline.md. */
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
    size_t records;   /* dispatch records read */
    size_t max_unanswered;
    int bad_tasks; /* dispatched Tasks with wrong fields */
    int pending_ops, op_errors;
} fx_t;

typedef struct {
    int max_concurrency, timeout_ms, max_attempts, min_backoff_ms, max_backoff_ms;
    int lease_grace_ms;
    int owner_lease_ms;
    int retention_ms;
    int paused;
    int ordered;
    int max_batch_events; /* 0: the default (one event per push) */
    const char *fairness_key;
    const char *lifecycle_topic;
} opts_t;

/* ---- a synchronous side channel for looking at the keys ---- */

static long long reply_ll(redisReply *r)
{
    long long v = msm_redis_reply_int(r, -1);
    freeReplyObject(r);
    return v;
}

/* A field of the task record (numbers as text, the history as JSON), or "" when absent
 * (static buffer). */
static const char *task_field(fx_t *f, const char *id, const char *field)
{
    static char buf[4096];
    char key[512];
    msm_task_key(f->redis, key, sizeof(key), f->sub, id);
    redisReply *r = msm_test_redis_query(&srv, "HGET %s %s", key, id);
    buf[0] = '\0';
    json_t *rec = r && r->type == REDIS_REPLY_STRING ? json_loads(r->str, 0, NULL) : NULL;
    json_t *v = json_object_get(rec, field);
    if (json_is_string(v)) {
        snprintf(buf, sizeof(buf), "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
    } else if (json_is_array(v)) {
        char *text = json_dumps(v, JSON_COMPACT);
        snprintf(buf, sizeof(buf), "%s", text ? text : "");
        free(text);
    }
    json_decref(rec);
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

static long long hexists(fx_t *f, const char *hash, const char *field)
{
    return reply_ll(
        msm_test_redis_query(&srv, "HEXISTS %s:sub:{%s}:%s %s", f->ns, f->sub, hash, field));
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
        Msm__V1__TaskBatch *b = msm_task_batch_unpack(msgs[i]->value, msgs[i]->value_len);
        if (!b || !b->n_tasks)
            f->bad_tasks++;
        f->records++;
        for (size_t k = 0; b && k < b->n_tasks; k++) {
            const Msm__V1__Task *t = b->tasks[k];
            if (!t->event || strcmp(t->subscription, f->sub) != 0 ||
                t->state != MSM__V1__TASK_STATE__TASK_STATE_RUNNING || t->attempt < 1 ||
                f->nseen == MAX_SEEN) {
                f->bad_tasks++;
                continue;
            }
            seen_t *s = &f->seen[f->nseen++];
            snprintf(s->id, sizeof(s->id), "%s", t->event->id);
            s->attempt = t->attempt;
            s->lease_until_ms = t->lease_until_ms;
            s->seen_unix_ms = msm_time_unix_ms();
            if (f->nseen - f->nanswered > f->max_unanswered)
                f->max_unanswered = f->nseen - f->nanswered;
        }
        msm_task_batch_free(b);
        msm_consumer_ack(c, msgs[i]);
    }
}

static int append_wait(fx_t *f, const char *stream, const msm_buf_t *buf)
{
    msm_record_t rec = {.value = buf->data, .value_len = buf->len};
    f->pending_ops++;
    if (msm_stream_append(f->stream, stream, &rec, 1, on_stream_done, f) != MSM_OK) {
        f->pending_ops--;
        return -1;
    }
    return wait_ops(f);
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
    Msm__V1__DeliveryOutcome *list[] = {&o};
    Msm__V1__OutcomeBatch b = MSM__V1__OUTCOME_BATCH__INIT;
    b.n_outcomes = 1;
    b.outcomes = list;
    msm_buf_t buf = {0};
    msm_pb_pack(&b.base, &buf);
    char name[128];
    snprintf(name, sizeof(name), MSM_STREAM_STATUS, f->sub);
    f->nanswered++; /* before the append: flowcontrol may only dispatch more after it */
    int rc = append_wait(f, name, &buf);
    msm_buf_deinit(&buf);
    return rc;
}

/* ---- the scheduler's side ---- */

/* One ready record holding @p tasks. */
static int send_ready_tasks(fx_t *f, Msm__V1__Task **tasks, size_t n)
{
    Msm__V1__TaskBatch b = MSM__V1__TASK_BATCH__INIT;
    b.n_tasks = n;
    b.tasks = tasks;
    msm_buf_t buf = {0};
    msm_pb_pack(&b.base, &buf);
    char name[128];
    snprintf(name, sizeof(name), MSM_STREAM_READY, f->sub);
    int rc = append_wait(f, name, &buf);
    msm_buf_deinit(&buf);
    return rc;
}

/* One ready record of @p n events: @p okeys their ordering keys (NULL: none), @p tenant the
 * value of their "tenant" attribute (NULL: none). */
static int send_ready_full(fx_t *f, const char *const *ids, const char *const *okeys, size_t n,
                           int priority, const char *tenant)
{
    Msm__V1__Event__AttributesEntry attr = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT;
    Msm__V1__Event__AttributesEntry *attrs[] = {&attr};
    attr.key = "tenant";
    attr.value = (char *)tenant;
    Msm__V1__Event *evs = calloc(n, sizeof(*evs));
    Msm__V1__Task *ts = calloc(n, sizeof(*ts));
    Msm__V1__Task **tasks = calloc(n, sizeof(*tasks));
    for (size_t i = 0; i < n; i++) {
        evs[i] = (Msm__V1__Event)MSM__V1__EVENT__INIT;
        evs[i].id = (char *)ids[i];
        evs[i].topic = "orders";
        evs[i].key = (char *)ids[i];
        evs[i].ordering_key = okeys ? (char *)okeys[i] : "";
        evs[i].priority = priority;
        evs[i].n_attributes = tenant ? 1 : 0;
        evs[i].attributes = attrs;
        evs[i].publish_time_ms = msm_time_unix_ms();
        ts[i] = (Msm__V1__Task)MSM__V1__TASK__INIT;
        ts[i].event = &evs[i];
        ts[i].subscription = (char *)f->sub;
        ts[i].state = MSM__V1__TASK_STATE__TASK_STATE_PENDING;
        tasks[i] = &ts[i];
    }
    int rc = send_ready_tasks(f, tasks, n);
    free(tasks);
    free(ts);
    free(evs);
    return rc;
}

static int send_ready_prio(fx_t *f, const char *const *ids, size_t n, int priority)
{
    return send_ready_full(f, ids, NULL, n, priority, NULL);
}

static int send_ready(fx_t *f, const char *const *ids, size_t n)
{
    return send_ready_prio(f, ids, n, 5);
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
    if (o->retention_ms)
        json_object_set_new(body, "task_retention_ms", json_integer(o->retention_ms));
    if (o->max_batch_events)
        json_object_set_new(body, "max_batch_events", json_integer(o->max_batch_events));
    json_object_set_new(body, "paused", json_boolean(o->paused));
    json_object_set_new(body, "ordered", json_boolean(o->ordered));
    if (o->fairness_key)
        json_object_set_new(body, "fairness_key", json_string(o->fairness_key));
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

static flowcontrol_t *fc_member_new(fx_t *f, const char *member, const opts_t *o)
{
    fc_env_t env = {f->loop, f->redis, f->stream, f->metrics, member};
    fc_conf_t conf = {.lease_grace_ms = o->lease_grace_ms,
                      .owner_lease_ms = o->owner_lease_ms ? o->owner_lease_ms : 5000,
                      .registry_poll_ms = 50,
                      .batch = 16,
                      .record_lag_ms = 1000,
                      .lifecycle_topic = (char *)o->lifecycle_topic};
    return flowcontrol_new(&env, &conf);
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
    f->pending_ops++;
    msm_stream_ensure(f->stream, ready, 2, on_stream_done, f);
    if (wait_ops(f) != 0)
        return -1;
    f->fc = fc_member_new(f, "fc-test", o);
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
    /* A pending task's record is written only once it has waited --record.lag_ms. */
    CU_ASSERT_STRING_EQUAL(task_field(&f, "ev-19", "state"), "");
    /* Nothing more while three are in flight, however long we wait. */
    msm_test_spin(f.loop, 600);
    CU_ASSERT_EQUAL(f.nseen, 3);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_pending", NULL), 17);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_in_flight", NULL), 3);
    CU_ASSERT_EQUAL(f.records, 1); /* the three left in one dispatch record */
    CU_ASSERT_EQUAL(stat(&f, "running"), 3);
    CU_ASSERT_EQUAL(stat(&f, "pending"), 17);
    CU_ASSERT(wait_state(&f, "ev-19", "pending", 3000) == 0);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_admitted_total", NULL), 20);
    for (size_t i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(f.seen[i].attempt, 1);
        /* lease = now + timeout_ms + grace */
        CU_ASSERT(f.seen[i].lease_until_ms >= before + 30000 + 5000);
        CU_ASSERT(f.seen[i].lease_until_ms <= after + 30000 + 5000);
        CU_ASSERT(wait_state(&f, f.seen[i].id, "running", 2000) == 0);
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
    /* No history is kept for a task that never failed. */
    CU_ASSERT_STRING_EQUAL(task_field(&f, ids[0], "history"), "");
    CU_ASSERT_STRING_EQUAL(task_field(&f, ids[0], "last_error"), "");
    CU_ASSERT_EQUAL(stat(&f, "succeeded"), 20);
    CU_ASSERT_EQUAL(stat(&f, "done"), 20); /* the backlog's output side */
    CU_ASSERT_EQUAL(stat(&f, "running"), 0);
    CU_ASSERT_EQUAL(stat(&f, "pending"), 0);
    CU_ASSERT_EQUAL(zcard(&f, "retry"), 0);
    /* Nothing in memory; the ready record is acknowledged and the stream trimmed. */
    CU_ASSERT_EQUAL(flowcontrol_task_count(f.fc), 0);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_dispatched_total", NULL), 20);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_in_flight", NULL), 0);
    fx_close(&f);
}

/* With batch push, max_concurrency counts requests (docs/push.md): 2 requests of up to 5
 * events let 10 tasks run at once, never more. */
static void test_batch_push_concurrency(void)
{
    opts_t o = default_opts;
    o.max_concurrency = 2;
    o.max_batch_events = 5;
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    const char *ids[25];
    char names[25][16];
    for (int i = 0; i < 25; i++) {
        snprintf(names[i], sizeof(names[i]), "bp-%02d", i);
        ids[i] = names[i];
    }
    CU_ASSERT_FATAL(send_ready(&f, ids, 25) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 10, 5000) == 0);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL(f.nseen, 10);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_in_flight", NULL), 10);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_concurrency_limit", NULL), 10);
    uint64_t deadline = msm_time_mono_ms() + 20000;
    while (f.nanswered < 25 && msm_time_mono_ms() < deadline) {
        while (f.nanswered < f.nseen) {
            const seen_t *s = &f.seen[f.nanswered];
            CU_ASSERT_FATAL(send_outcome(&f, s->id, s->attempt,
                                         MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL,
                                         0) == 0);
        }
        if (f.nanswered < 25)
            wait_seen(&f, f.nanswered + 1, 5000);
    }
    CU_ASSERT_EQUAL(f.nanswered, 25);
    CU_ASSERT_EQUAL(f.max_unanswered, 10);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_outcomes_total", "success", 25) == 0);
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

    /* Retry-After wins over a shorter backoff, up to max_backoff_ms (400): 2 s asked. */
    sent = msm_time_unix_ms();
    CU_ASSERT_FATAL(send_outcome(&f, "r1", 2, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 503,
                                 NULL, 2000) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 3, 3000) == 0);
    CU_ASSERT_EQUAL(f.seen[2].attempt, 3);
    CU_ASSERT(f.seen[2].seen_unix_ms - sent >= 400);
    CU_ASSERT(f.seen[2].seen_unix_ms - sent < 1500);

    /* The third failure of three attempts is the last. */
    CU_ASSERT_FATAL(send_outcome(&f, "r1", 3, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 503,
                                 NULL, 0) == 0);
    CU_ASSERT(wait_state(&f, "r1", "dead", 2000) == 0);
    CU_ASSERT(zscore(&f, "dlq", "r1") >= sent);
    CU_ASSERT_EQUAL(zscore(&f, "retry", "r1"), -1);
    CU_ASSERT_EQUAL(hexists(&f, "retry:tasks", "r1"), 0);
    CU_ASSERT_EQUAL(hexists(&f, "dlq:tasks", "r1"), 1);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_in_flight", NULL), 0);
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

    /* Replay as the frontend does it: the dead Task back on ready.<sub>, attempts reset. */
    redisReply *r = msm_test_redis_query(&srv, "HGET %s:sub:{%s}:dlq:tasks f1", f.ns, f.sub);
    CU_ASSERT_FATAL(r && r->type == REDIS_REPLY_STRING);
    Msm__V1__Task *dead = msm_task_unpack(r->str, r->len);
    freeReplyObject(r);
    CU_ASSERT_FATAL(dead && dead->event);
    CU_ASSERT_EQUAL(dead->attempt, 1);
    CU_ASSERT_STRING_EQUAL(dead->last_error, "bad payload");
    CU_ASSERT_PTR_NOT_NULL(strstr(dead->history, "\"fatal\""));
    dead->attempt = 0;
    dead->state = MSM__V1__TASK_STATE__TASK_STATE_PENDING;
    CU_ASSERT_FATAL(send_ready_tasks(&f, &dead, 1) == 0);
    msm_task_free(dead);
    CU_ASSERT_FATAL(wait_seen(&f, 2, 3000) == 0);
    CU_ASSERT_STRING_EQUAL(f.seen[1].id, "f1");
    CU_ASSERT_EQUAL(f.seen[1].attempt, 1);
    CU_ASSERT(wait_state(&f, "f1", "running", 2000) == 0);
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
    CU_ASSERT(wait_state(&f, "s1", "running", 3000) == 0);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_in_flight", NULL), 1);
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
    CU_ASSERT(wait_state(&f, "d1", "succeeded", 2000) == 0);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL(f.nseen, 2);
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
    /* No outcome: when the lease (timeout + grace) passes the task is dispatched again on the
     * same attempt: a push that never ran costs no attempt. */
    CU_ASSERT_FATAL(wait_seen(&f, 2, 3000) == 0);
    CU_ASSERT_STRING_EQUAL(f.seen[1].id, "l1");
    CU_ASSERT_EQUAL(f.seen[1].attempt, 1);
    CU_ASSERT(f.seen[1].seen_unix_ms >= lease);
    CU_ASSERT(f.seen[1].lease_until_ms > lease);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_leases_expired_total", NULL), 1);
    CU_ASSERT_EQUAL(stat(&f, "failed_attempts"), -1);
    /* The router reports it could not push in time: back to pending, no attempt spent. */
    CU_ASSERT_FATAL(send_outcome(&f, "l1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED, 0,
                                 NULL, 0) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 3, 3000) == 0);
    CU_ASSERT_EQUAL(f.seen[2].attempt, 1);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_outcomes_total", "not_pushed"), 1);
    /* A late answer of another attempt is stale; the current one counts. */
    CU_ASSERT_FATAL(
        send_outcome(&f, "l1", 2, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL, 0) == 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_stale_outcomes_total", NULL, 1) == 0);
    CU_ASSERT(wait_state(&f, "l1", "running", 3000) == 0);
    CU_ASSERT_FATAL(
        send_outcome(&f, "l1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL, 0) == 0);
    CU_ASSERT(wait_state(&f, "l1", "succeeded", 2000) == 0);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "l1", "attempts"), "1");
    fx_close(&f);
}

/* ---- ownership, takeover, priorities, pause, retention ---- */

static int owned_by(fx_t *f, const void *arg)
{
    (void)f;
    return flowcontrol_owned_count(*(flowcontrol_t *const *)arg) == 1;
}

/* Answers every dispatched task not answered yet with success. */
static void answer_all(fx_t *f)
{
    while (f->nanswered < f->nseen) {
        const seen_t *s = &f->seen[f->nanswered];
        CU_ASSERT_FATAL(send_outcome(f, s->id, s->attempt,
                                     MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, 200, NULL,
                                     0) == 0);
    }
}

static size_t times_seen(fx_t *f, const char *id)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nseen; i++)
        n += strcmp(f->seen[i].id, id) == 0;
    return n;
}

typedef struct {
    int done;
    int64_t backlog;
} backlog_t;

static void on_backlog(msm_err_t err, int64_t backlog, void *opaque)
{
    backlog_t *b = opaque;
    b->backlog = err == MSM_OK ? backlog : -1;
    b->done = 1;
}

/* Records of ready.<sub> not acknowledged by group flowcontrol. */
static int64_t ready_backlog(fx_t *f)
{
    char name[128];
    snprintf(name, sizeof(name), MSM_STREAM_READY, f->sub);
    backlog_t b = {0, -1};
    if (msm_stream_backlog(f->stream, name, "flowcontrol", on_backlog, &b) != MSM_OK ||
        msm_test_wait_flag(f->loop, &b.done, 3000) != 0)
        return -1;
    return b.backlog;
}

static int backlog_zero(fx_t *f, const void *arg)
{
    (void)arg;
    return ready_backlog(f) == 0;
}

/* Member A works on the subscription; B waits. A dies (no release, records held): B takes
 * the subscription over once the lease passes, reads A's records again, skips what A had
 * settled and delivers everything else. */
static void test_takeover_between_members(void)
{
    opts_t o = default_opts;
    o.owner_lease_ms = 600;
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    flowcontrol_t *a = f.fc;
    CU_ASSERT_FATAL(spin_until(&f, owned_by, &a, 3000) == 0);
    flowcontrol_t *b = fc_member_new(&f, "fc-other", &o);
    CU_ASSERT_FATAL(b != NULL);
    const char *ids[10];
    char names[10][16];
    for (int i = 0; i < 10; i++) {
        snprintf(names[i], sizeof(names[i]), "t-%d", i);
        ids[i] = names[i];
    }
    CU_ASSERT_FATAL(send_ready(&f, ids, 10) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 3, 5000) == 0);
    CU_ASSERT_FATAL(send_outcome(&f, f.seen[0].id, 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS,
                                 200, NULL, 0) == 0);
    CU_ASSERT(wait_state(&f, f.seen[0].id, "succeeded", 2000) == 0);
    char first[64];
    snprintf(first, sizeof(first), "%s", f.seen[0].id);
    msm_test_spin(f.loop, 700); /* a whole lease: B never owned it meanwhile */
    CU_ASSERT_EQUAL(flowcontrol_owned_count(b), 0);
    CU_ASSERT_EQUAL(f.nseen, 4);

    flowcontrol_free(a); /* as kill -9: no release, nothing acknowledged */
    f.fc = b;
    CU_ASSERT_FATAL(spin_until(&f, owned_by, &b, 5000) == 0);
    /* A's two running tasks and the seven pending come back; the settled one does not. */
    uint64_t deadline = msm_time_mono_ms() + 20000;
    size_t distinct = 0;
    while (msm_time_mono_ms() < deadline) {
        answer_all(&f);
        distinct = 0;
        for (int i = 0; i < 10; i++)
            distinct += strcmp(task_field(&f, ids[i], "state"), "succeeded") == 0;
        if (distinct == 10)
            break;
        msm_test_spin(f.loop, 50);
    }
    CU_ASSERT_EQUAL(distinct, 10);
    CU_ASSERT_EQUAL(times_seen(&f, first), 1);
    CU_ASSERT_EQUAL(f.nseen, 13); /* 4 by A (one answered), 9 again by B */
    CU_ASSERT(spin_until(&f, backlog_zero, NULL, 3000) == 0);
    CU_ASSERT_EQUAL(flowcontrol_task_count(b), 0);
    fx_close(&f);
}

/* Under backlog, higher priorities leave first. */
static void test_priorities(void)
{
    opts_t o = default_opts;
    o.max_concurrency = 1;
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    const char *low[] = {"lo-1", "lo-2", "lo-3"}, *high[] = {"hi-1", "hi-2", "hi-3"};
    CU_ASSERT_FATAL(send_ready_prio(&f, low, 3, 1) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 1, 5000) == 0);
    CU_ASSERT_FATAL(send_ready_prio(&f, high, 3, 8) == 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_pending", NULL, 5) == 0);
    for (size_t n = 2; n <= 6; n++) {
        answer_all(&f);
        CU_ASSERT_FATAL(wait_seen(&f, n, 3000) == 0);
    }
    const char *want[] = {"lo-1", "hi-1", "hi-2", "hi-3", "lo-2", "lo-3"};
    for (size_t i = 0; i < 6; i++)
        CU_ASSERT_STRING_EQUAL(f.seen[i].id, want[i]);
    fx_close(&f);
}

/* Answers everything in flight with HTTP @p status (retriable), Retry-After @p retry_after_ms. */
static void refuse_all(fx_t *f, int status, int64_t retry_after_ms)
{
    while (f->nanswered < f->nseen) {
        const seen_t *s = &f->seen[f->nanswered];
        CU_ASSERT_FATAL(send_outcome(f, s->id, s->attempt,
                                     MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, status, NULL,
                                     retry_after_ms) == 0);
    }
}

/* 429s lower the concurrency limit (stats and /metrics show it, no more than it is ever in
 * flight); a Retry-After holds the whole subscription that long; successes raise it again. */
static void test_congestion_lowers_limit_and_holds(void)
{
    opts_t o = default_opts;
    o.max_concurrency = 8;
    o.max_attempts = 100;
    o.min_backoff_ms = 1;
    o.max_backoff_ms = 700;
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    char names[40][16];
    const char *ids[40];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "c-%02d", i);
        ids[i] = names[i];
    }
    CU_ASSERT_FATAL(send_ready(&f, ids, 40) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 8, 5000) == 0);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_concurrency_limit", NULL), 8);
    refuse_all(&f, 429, 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_limit_decreases_total", NULL, 1) == 0);
    msm_test_spin(f.loop, 200);
    double limit = metric(&f, "msm_flowcontrol_concurrency_limit", NULL);
    CU_ASSERT(limit >= 1 && limit <= 6);
    CU_ASSERT(f.nseen - f.nanswered <= (size_t)limit);
    CU_ASSERT(stat(&f, "concurrency_limit") == (long long)limit);

    /* Retry-After 5 s, capped at max_backoff_ms (700): nothing starts meanwhile. */
    refuse_all(&f, 503, 5000);
    size_t seen = f.nseen;
    int64_t held = msm_time_unix_ms();
    msm_test_spin(f.loop, 450);
    CU_ASSERT_EQUAL(f.nseen, seen);
    CU_ASSERT_FATAL(wait_seen(&f, seen + 1, 3000) == 0);
    int64_t resumed = f.seen[seen].seen_unix_ms - held;
    CU_ASSERT(resumed >= 500 && resumed < 2500);

    /* Successes in use bring the limit back up, never above max_concurrency. */
    uint64_t deadline = msm_time_mono_ms() + 15000;
    while (metric(&f, "msm_flowcontrol_outcomes_total", "success") < 40 &&
           msm_time_mono_ms() < deadline) {
        answer_all(&f);
        msm_loop_run_once(f.loop, 10);
    }
    CU_ASSERT(metric(&f, "msm_flowcontrol_concurrency_limit", NULL) > limit);
    CU_ASSERT(f.max_unanswered <= 8);
    fx_close(&f);
}

static long long hlen(fx_t *f, const char *hash)
{
    return reply_ll(msm_test_redis_query(&srv, "HLEN %s:sub:{%s}:%s", f->ns, f->sub, hash));
}

static int seen_ids_are(fx_t *f, const char *prefix, const char *const *want, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < f->nseen; i++) {
        if (strncmp(f->seen[i].id, prefix, strlen(prefix)) != 0)
            continue;
        if (k >= n || strcmp(f->seen[i].id, want[k]) != 0)
            return 0;
        k++;
    }
    return k == n;
}

/* Answers what is in flight: @p fail_id (if given) with a retriable 500, the rest with 200. */
static void answer_failing(fx_t *f, const char *fail_id)
{
    while (f->nanswered < f->nseen) {
        const seen_t *s = &f->seen[f->nanswered];
        int fail = fail_id && strcmp(s->id, fail_id) == 0;
        CU_ASSERT_FATAL(send_outcome(f, s->id, s->attempt,
                                     fail ? MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE
                                          : MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS,
                                     fail ? 500 : 200, NULL, 0) == 0);
    }
}

/* Ordered: one task per key in flight; a failing one holds only its key (what arrives behind
 * it is parked in Redis, its ready record acknowledged), the other key flows; once it
 * succeeds the parked ones follow in order and the key is free again. */
static void test_ordered_key_held_by_failure(void)
{
    opts_t o = default_opts;
    o.ordered = 1;
    o.max_concurrency = 10;
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    const char *ids[] = {"a1", "b1", "a2", "b2", "a3"}, *keys[] = {"A", "B", "A", "B", "A"};
    CU_ASSERT_FATAL(send_ready_full(&f, ids, keys, 5, 5, NULL) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 2, 5000) == 0);
    msm_test_spin(f.loop, 200);
    CU_ASSERT_EQUAL(f.nseen, 2); /* a1 and b1 only */
    CU_ASSERT_EQUAL(stat(&f, "pending"), 3);
    answer_failing(&f, "a1"); /* a1 fails, b1 succeeds: b2 goes, A is held */
    CU_ASSERT_FATAL(wait_seen(&f, 3, 5000) == 0);
    CU_ASSERT_STRING_EQUAL(f.seen[2].id, "b2");
    CU_ASSERT(wait_state(&f, "a2", "pending", 3000) == 0);
    CU_ASSERT_EQUAL(hlen(&f, "held"), 1);
    CU_ASSERT_EQUAL(zcard(&f, "parked"), 2);
    CU_ASSERT_EQUAL(hlen(&f, "parked:tasks"), 2);
    CU_ASSERT_EQUAL(metric(&f, "msm_flowcontrol_keys_held", NULL), 1);
    answer_failing(&f, NULL); /* b2 */
    /* a1 again after its backoff, then a2 and a3 one after the other. */
    uint64_t deadline = msm_time_mono_ms() + 10000;
    while (f.nseen < 6 && msm_time_mono_ms() < deadline) {
        answer_failing(&f, NULL);
        msm_loop_run_once(f.loop, 10);
    }
    answer_failing(&f, NULL);
    const char *a_order[] = {"a1", "a1", "a2", "a3"}, *b_order[] = {"b1", "b2"};
    CU_ASSERT(seen_ids_are(&f, "a", a_order, 4));
    CU_ASSERT(seen_ids_are(&f, "b", b_order, 2));
    CU_ASSERT(wait_state(&f, "a3", "succeeded", 3000) == 0);
    CU_ASSERT_STRING_EQUAL(task_field(&f, "a2", "attempts"), "1");
    msm_test_spin(f.loop, 200);
    CU_ASSERT_EQUAL(hlen(&f, "held"), 0);
    CU_ASSERT_EQUAL(zcard(&f, "parked"), 0);
    CU_ASSERT_EQUAL(zcard(&f, "retry"), 0);
    CU_ASSERT_EQUAL(flowcontrol_task_count(f.fc), 0);
    /* The key is free: the next one goes at once. */
    const char *more[] = {"a4"}, *more_keys[] = {"A"};
    CU_ASSERT_FATAL(send_ready_full(&f, more, more_keys, 1, 5, NULL) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 7, 3000) == 0);
    CU_ASSERT_STRING_EQUAL(f.seen[6].id, "a4");
    CU_ASSERT_EQUAL(f.bad_tasks, 0);
    fx_close(&f);
}

/* A key held when its member goes: the next member reads the held keys before anything else,
 * parks what arrives behind them, and a dead holder lets the key move on. */
static void test_ordered_takeover_and_dead_holder(void)
{
    opts_t o = default_opts;
    o.ordered = 1;
    o.max_concurrency = 10;
    o.max_attempts = 2;
    o.owner_lease_ms = 600;
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    const char *ids[] = {"k1", "k2"}, *keys[] = {"K", "K"};
    CU_ASSERT_FATAL(send_ready_full(&f, ids, keys, 2, 5, NULL) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 1, 5000) == 0);
    answer_failing(&f, "k1");
    CU_ASSERT(wait_state(&f, "k2", "pending", 3000) == 0);
    CU_ASSERT_EQUAL(hlen(&f, "held"), 1);
    /* The member goes without a word; another one takes over. */
    flowcontrol_free(f.fc);
    f.fc = fc_member_new(&f, "fc-other", &o);
    CU_ASSERT_FATAL(f.fc != NULL);
    const char *late[] = {"k3"}, *late_keys[] = {"K"};
    CU_ASSERT_FATAL(send_ready_full(&f, late, late_keys, 1, 5, NULL) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 2, 8000) == 0);
    CU_ASSERT_STRING_EQUAL(f.seen[1].id, "k1"); /* not k3: the key is still held */
    CU_ASSERT_EQUAL(f.seen[1].attempt, 2);
    answer_failing(&f, "k1"); /* the last attempt: dead, the key moves on */
    CU_ASSERT(wait_state(&f, "k1", "dead", 3000) == 0);
    uint64_t deadline = msm_time_mono_ms() + 8000;
    while (f.nseen < 4 && msm_time_mono_ms() < deadline) {
        answer_failing(&f, NULL);
        msm_loop_run_once(f.loop, 10);
    }
    answer_failing(&f, NULL);
    const char *order[] = {"k1", "k1", "k2", "k3"};
    CU_ASSERT(seen_ids_are(&f, "k", order, 4));
    CU_ASSERT(wait_state(&f, "k3", "succeeded", 3000) == 0);
    msm_test_spin(f.loop, 200);
    CU_ASSERT_EQUAL(hlen(&f, "held"), 0);
    CU_ASSERT_EQUAL(zcard(&f, "parked"), 0);
    fx_close(&f);
}

/* fairness_key: within a priority the tenants take turns, so a tenant arriving behind
 * another's burst is served at once instead of after it. */
static void test_fair_share_round_robin(void)
{
    opts_t o = default_opts;
    o.max_concurrency = 1;
    o.fairness_key = "tenant";
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    const char *a[] = {"a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"}, *b[] = {"b0", "b1"};
    CU_ASSERT_FATAL(send_ready_full(&f, a, NULL, 8, 5, "A") == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 1, 5000) == 0);
    CU_ASSERT_FATAL(send_ready_full(&f, b, NULL, 2, 5, "B") == 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_pending", NULL, 9) == 0);
    for (size_t n = 2; n <= 10; n++) {
        answer_all(&f);
        CU_ASSERT_FATAL(wait_seen(&f, n, 3000) == 0);
    }
    const char *want[] = {"a0", "a1", "b0", "a2", "b1", "a3", "a4", "a5", "a6", "a7"};
    for (size_t i = 0; i < 10; i++)
        CU_ASSERT_STRING_EQUAL(f.seen[i].id, want[i]);
    fx_close(&f);
}

typedef struct {
    int n;
    char types[8][32];
    char payloads[8][512];
} announced_t;

static void on_announced(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    announced_t *a = opaque;
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Event *ev = msm_event_unpack(msgs[i]->value, msgs[i]->value_len);
        if (ev && a->n < 8) {
            for (size_t k = 0; k < ev->n_attributes; k++) {
                if (strcmp(ev->attributes[k]->key, "type") == 0)
                    snprintf(a->types[a->n], 32, "%s", ev->attributes[k]->value);
            }
            snprintf(a->payloads[a->n], 512, "%.*s", (int)ev->payload.len,
                     (const char *)ev->payload.data);
            a->n++;
        }
        msm__v1__event__free_unpacked(ev, NULL);
        msm_consumer_ack(c, msgs[i]);
    }
}

static int announced_at_least(fx_t *f, const void *arg)
{
    (void)f;
    const announced_t *a = ((const announced_t *const *)arg)[0];
    return a->n >= 2;
}

/* --lifecycle.topic: a task going retrying, then dead, is announced as two events there. */
static void test_lifecycle_events(void)
{
    opts_t o = default_opts;
    o.max_attempts = 2;
    o.min_backoff_ms = 10;
    o.max_backoff_ms = 20;
    o.lifecycle_topic = "ops";
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    f.pending_ops++;
    msm_stream_ensure(f.stream, "events.ops", 1, on_stream_done, &f);
    CU_ASSERT_FATAL(wait_ops(&f) == 0);
    announced_t a = {0};
    char err[256] = "";
    msm_consumer_t *ops = msm_stream_consume(f.stream, "events.ops", "ops", "ops-1", 16, 64,
                                             on_announced, &a, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    const char *ids[] = {"lc1"};
    CU_ASSERT_FATAL(send_ready(&f, ids, 1) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 1, 5000) == 0);
    CU_ASSERT_FATAL(send_outcome(&f, "lc1", 1, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 500,
                                 "boom", 0) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 2, 5000) == 0);
    CU_ASSERT_FATAL(send_outcome(&f, "lc1", 2, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 500,
                                 "boom", 0) == 0);
    const announced_t *pa = &a;
    CU_ASSERT(spin_until(&f, announced_at_least, &pa, 5000) == 0);
    CU_ASSERT_STRING_EQUAL(a.types[0], "msm.task.retrying");
    CU_ASSERT_STRING_EQUAL(a.types[1], "msm.task.dead");
    CU_ASSERT_PTR_NOT_NULL(strstr(a.payloads[1], "\"event_id\":\"lc1\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.payloads[1], "\"subscription\":\"orders-sub\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.payloads[1], "\"last_error\":\"boom\""));
    msm_consumer_free(ops);
    fx_close(&f);
}

static int set_paused(fx_t *f, const opts_t *o, int paused)
{
    opts_t p = *o;
    p.paused = paused;
    return put_registry(f, &p);
}

/* Paused: nothing is dispatched, tasks wait in memory; resumed: they flow. */
static void test_pause_resume(void)
{
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &default_opts) == 0);
    CU_ASSERT_FATAL(set_paused(&f, &default_opts, 1) == 0);
    msm_test_spin(f.loop, 200); /* the registry poll */
    const char *ids[] = {"p1", "p2"};
    CU_ASSERT_FATAL(send_ready(&f, ids, 2) == 0);
    CU_ASSERT(wait_metric(&f, "msm_flowcontrol_pending", NULL, 2) == 0);
    msm_test_spin(f.loop, 500);
    CU_ASSERT_EQUAL(f.nseen, 0);
    CU_ASSERT(wait_state(&f, "p1", "pending", 3000) == 0);
    CU_ASSERT_FATAL(set_paused(&f, &default_opts, 0) == 0);
    CU_ASSERT(wait_seen(&f, 2, 3000) == 0);
    fx_close(&f);
}

static int record_gone(fx_t *f, const void *arg)
{
    return task_field(f, arg, "state")[0] == '\0';
}

/* Finished task records expire after task_retention_ms; nothing else stays behind. */
static void test_retention(void)
{
    opts_t o = default_opts;
    o.retention_ms = 1000;
    fx_t f;
    CU_ASSERT_FATAL(fx_open(&f, &o) == 0);
    const char *ids[] = {"k1", "k2"};
    CU_ASSERT_FATAL(send_ready(&f, ids, 2) == 0);
    CU_ASSERT_FATAL(wait_seen(&f, 2, 5000) == 0);
    answer_all(&f);
    CU_ASSERT(wait_state(&f, "k1", "succeeded", 2000) == 0);
    long long ttl = reply_ll(msm_test_redis_query(&srv, "PTTL %s:sub:{%s}:t:0", f.ns, f.sub));
    CU_ASSERT(ttl > 0 && ttl <= 1000);
    CU_ASSERT(spin_until(&f, record_gone, "k1", 3000) == 0);
    CU_ASSERT(spin_until(&f, record_gone, "k2", 3000) == 0);
    CU_ASSERT(spin_until(&f, backlog_zero, NULL, 3000) == 0);
    /* Only the subscription's owner lease and stats remain among its keys. */
    redisReply *r = msm_test_redis_query(&srv, "KEYS %s:sub:{%s}:*", f.ns, f.sub);
    CU_ASSERT_FATAL(r && r->type == REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < r->elements; i++) {
        const char *k = r->element[i]->str;
        CU_ASSERT(strstr(k, ":owner") || strstr(k, ":stats"));
    }
    freeReplyObject(r);
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
    {"batch_push_concurrency", test_batch_push_concurrency},
    {"retriable_backoff_then_dead", test_retriable_backoff_then_dead},
    {"fatal_dead_then_replay", test_fatal_dead_then_replay},
    {"stale_outcomes_ignored", test_stale_outcomes_ignored},
    {"duplicate_ready_admitted_once", test_duplicate_ready_admitted_once},
    {"lease_expiry_redispatches", test_lease_expiry_redispatches},
    {"takeover_between_members", test_takeover_between_members},
    {"priorities", test_priorities},
    {"congestion_lowers_limit_and_holds", test_congestion_lowers_limit_and_holds},
    {"ordered_key_held_by_failure", test_ordered_key_held_by_failure},
    {"ordered_takeover_and_dead_holder", test_ordered_takeover_and_dead_holder},
    {"fair_share_round_robin", test_fair_share_round_robin},
    {"lifecycle_events", test_lifecycle_events},
    {"pause_resume", test_pause_resume},
    {"retention", test_retention},
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
