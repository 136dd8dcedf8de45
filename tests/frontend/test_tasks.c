/* SPDX-License-Identifier: MIT */
/* A subscription's delivery state through the frontend (data plane v2, docs/pipeline.md):
 * stats, the task API, the task lists (stores and task records), the held ordering keys,
 * the DLQ and its replay, :pause/:resume and DELETE.
 * The other layers' keys are written by hand here, as flowcontrol and the scheduler write
 * them; ready.<sub> is read back through the Redis log's own keys. */
#include "msm_test.h"

#include "frontend.h"

#include "msm/base64.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/id.h"
#include "msm/registry.h"
#include "msm/stream.h"
#include "msm/time.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe_fixture.h"

#define HISTORY "[{\"attempt\":1,\"at\":1700000000000,\"result\":\"retry\",\"error\":\"HTTP 500\"," \
                "\"latency_ms\":12}]"
#define DUE_MS   1700000001234LL
#define DUE_TEXT "2023-11-14T22:13:21.234Z"

typedef struct {
    volatile int done;
    msm_err_t err;
} append_wait_t;

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    (void)reason;
    append_wait_t *w = opaque;
    w->err = err;
    w->done = 1;
}

static void append_raw(const char *stream, int n)
{
    msm_record_t recs[8];
    for (int i = 0; i < n && i < 8; i++)
        recs[i] = (msm_record_t){.value = "task", .value_len = 4};
    append_wait_t w = {0, MSM_ERR_IO};
    CU_ASSERT_EQUAL_FATAL(msm_stream_append(F.stream, stream, recs, (size_t)n, on_appended, &w),
                          MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_wait_flag(F.loop, &w.done, 5000), 0);
    CU_ASSERT_EQUAL(w.err, MSM_OK);
}

static void zadd_ids(const char *set, const char *sub, const char *prefix, int n, int score0)
{
    for (int i = 0; i < n; i++)
        freeReplyObject(cmd("ZADD %s:sub:{%s}:%s %d %s-%d", F.ns, sub, set, score0 + i, prefix,
                            i));
}

static void event_init(Msm__V1__Event *ev, const char *id, int prio)
{
    msm__v1__event__init(ev);
    ev->id = (char *)id;
    ev->topic = "tk-topic";
    ev->priority = prio;
    ev->content_type = "application/json";
    ev->payload.data = (uint8_t *)"{\"n\":1}";
    ev->payload.len = 7;
}

/* A delayed event as the scheduler stores it: due at @p due. */
static void write_delayed(const char *sub, const char *id, long long due)
{
    Msm__V1__Event ev;
    event_init(&ev, id, 5);
    msm_buf_t buf = {0};
    CU_ASSERT_EQUAL_FATAL(msm_pb_pack(&ev.base, &buf), MSM_OK);
    freeReplyObject(cmd("HSET %s:sub:{%s}:delayed:events %s %b", F.ns, sub, id, buf.data,
                        buf.len));
    freeReplyObject(cmd("ZADD %s:sub:{%s}:delayed %lld %s", F.ns, sub, due, id));
    msm_buf_deinit(&buf);
}

/* A task as flowcontrol keeps it in the retry store or the DLQ (@p store "retry", "dlq"),
 * with @p score its next attempt or its time of death. */
static void write_stored(const char *store, const char *sub, const char *id, int attempt,
                         const char *last_error, const char *history, int prio, long long score)
{
    Msm__V1__Event ev;
    event_init(&ev, id, prio);
    Msm__V1__Task t = MSM__V1__TASK__INIT;
    t.event = &ev;
    t.subscription = (char *)sub;
    t.attempt = attempt;
    t.state = strcmp(store, "dlq") == 0 ? MSM__V1__TASK_STATE__TASK_STATE_DEAD
                                        : MSM__V1__TASK_STATE__TASK_STATE_RETRYING;
    t.next_attempt_at_ms = strcmp(store, "dlq") == 0 ? 0 : score;
    t.last_error = (char *)last_error;
    t.history = (char *)history;
    msm_buf_t buf = {0};
    CU_ASSERT_EQUAL_FATAL(msm_pb_pack(&t.base, &buf), MSM_OK);
    freeReplyObject(cmd("HSET %s:sub:{%s}:%s:tasks %s %b", F.ns, sub, store, id, buf.data,
                        buf.len));
    freeReplyObject(cmd("ZADD %s:sub:{%s}:%s %lld %s", F.ns, sub, store, score, id));
    msm_buf_deinit(&buf);
}

/* The task records of ready.<sub>'s records (one partition), in order, as TaskBatches. */
static size_t ready_batches(const char *sub, Msm__V1__TaskBatch **out, size_t max)
{
    redisReply *all = cmd("XRANGE %s:log:{ready.%s}:0 - +", F.ns, sub);
    size_t n = 0;
    for (size_t i = 0; all->type == REDIS_REPLY_ARRAY && i < all->elements && n < max; i++) {
        const redisReply *f = all->element[i]->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            if (strcmp(f->element[k]->str, "v") == 0)
                out[n++] = msm_task_batch_unpack(f->element[k + 1]->str, f->element[k + 1]->len);
        }
    }
    freeReplyObject(all);
    return n;
}

/* ---- stats ---- */

static void test_stats(void)
{
    put_topic("st-topic", "{}");
    put_sub("st-sub", "st-topic");
    resp_t r;
    /* Nothing yet: every count is 0 (the ready stream has no entry). */
    http(&r, "GET", "/v1/subscriptions/st-sub/stats", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "backlog"), 0);
    CU_ASSERT_EQUAL(jint(r.json, "dead"), 0);
    CU_ASSERT_EQUAL(jint(r.json, "concurrency_limit"), 7); /* no gauge: the configured one */
    CU_ASSERT_TRUE(json_is_false(json_object_get(r.json, "paused")));
    resp_clear(&r);

    zadd_ids("delayed", "st-sub", "d", 2, 1);
    zadd_ids("retry", "st-sub", "y", 4, 1);
    zadd_ids("dlq", "st-sub", "x", 5, 1);
    /* 40 tasks appended to ready.st-sub, 30 settled, 2 running: 8 wait (in the log or
     * pending in the owner's memory). */
    freeReplyObject(cmd("HSET %s:sub:{st-sub}:stats succeeded 17 failed_attempts 9 dead 5 "
                        "pending 3 running 2 concurrency_limit 4 updated_ms 1 enqueued 40 "
                        "done 30",
                        F.ns));

    http(&r, "GET", "/v1/subscriptions/st-sub/stats", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "backlog"), 40 - 30 - 2);
    CU_ASSERT_EQUAL(jint(r.json, "delayed"), 2);
    CU_ASSERT_EQUAL(jint(r.json, "in_flight"), 2);
    CU_ASSERT_EQUAL(jint(r.json, "retrying"), 4);
    CU_ASSERT_EQUAL(jint(r.json, "dead"), 5);
    CU_ASSERT_EQUAL(jint(r.json, "succeeded"), 17);
    CU_ASSERT_EQUAL(jint(r.json, "failed_attempts"), 9);
    CU_ASSERT_EQUAL(jint(r.json, "concurrency_limit"), 4); /* the owner's gauge */
    CU_ASSERT_EQUAL(jint(r.json, "rate_limit_per_s"), 12);
    json_t *eps = json_object_get(r.json, "endpoints");
    CU_ASSERT_EQUAL(json_array_size(eps), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(eps, 1), "url"), "http://127.0.0.1:9001/");
    resp_clear(&r);

    http(&r, "GET", "/v1/subscriptions/ghost/stats", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

/* ---- canaries: validation, :promote / :rollback, stats ---- */

#define CANARY_EPS                                                                                 \
    "\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\",\"version\":\"v1\"},"                       \
    "{\"url\":\"http://127.0.0.1:9001/\",\"version\":\"v2\"}]"

static void test_canary(void)
{
    put_topic("cn-topic", "{}");
    resp_t r;
    static const char *const bad[] = {
        "\"canary\":{\"version\":\"v9\"}",                 /* no endpoint has it */
        "\"canary\":{\"version\":\"v2\",\"share\":0}",     /* share in (0,1] */
        "\"canary\":{\"version\":\"v2\",\"share\":1.5}",
        "\"canary\":{\"version\":\"v2\",\"max_failure_ratio\":2}",
        "\"canary\":{\"version\":\"v2\",\"min_events\":0}",
        "\"canary\":{\"version\":\"v2\",\"bogus\":1}",
        "\"canary\":{\"share\":0.1}", /* version required */
    };
    char body[1024];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(body, sizeof(body), "{\"topic\":\"cn-topic\"," CANARY_EPS ",%s}", bad[i]);
        http(&r, "PUT", "/v1/subscriptions/cn-sub", body);
        CU_ASSERT_EQUAL(r.status, 400);
        resp_clear(&r);
    }
    /* Every endpoint of the canary version: no baseline left. */
    http(&r, "PUT", "/v1/subscriptions/cn-sub",
         "{\"topic\":\"cn-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\","
         "\"version\":\"v2\"}],\"canary\":{\"version\":\"v2\"}}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_TRUE(has_detail(&r, "canary.version"));
    resp_clear(&r);

    http(&r, "PUT", "/v1/subscriptions/cn-sub",
         "{\"topic\":\"cn-topic\"," CANARY_EPS ",\"canary\":{\"version\":\"v2\","
         "\"share\":0.25,\"max_failure_ratio\":0.05,\"min_events\":200}}");
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *c = json_object_get(r.json, "canary");
    CU_ASSERT_STRING_EQUAL(jstr(c, "version"), "v2");
    CU_ASSERT_EQUAL(jint(c, "min_events"), 200);
    resp_clear(&r);

    /* Stats: active, the routers' windows summed (a stale report is left out). */
    freeReplyObject(cmd("HSET %s:sub:{cn-sub}:canary:report r1 "
                        "{\"version\":\"v2\",\"canary\":{\"events\":100,\"failures\":10,"
                        "\"p99_ms\":40},\"baseline\":{\"events\":300,\"failures\":3,"
                        "\"p99_ms\":20},\"updated_ms\":%lld} "
                        "old {\"version\":\"v2\",\"canary\":{\"events\":999,\"failures\":999,"
                        "\"p99_ms\":9},\"baseline\":{},\"updated_ms\":1}",
                        F.ns, (long long)msm_time_unix_ms()));
    http(&r, "GET", "/v1/subscriptions/cn-sub/stats", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    c = json_object_get(r.json, "canary");
    CU_ASSERT_STRING_EQUAL(jstr(c, "state"), "active");
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(c, "share")), 0.25, 1e-9);
    CU_ASSERT_EQUAL(jint(json_object_get(c, "canary"), "events"), 100);
    CU_ASSERT_DOUBLE_EQUAL(
        json_number_value(json_object_get(json_object_get(c, "canary"), "failure_ratio")), 0.1,
        1e-9);
    CU_ASSERT_EQUAL(jint(json_object_get(c, "canary"), "p99_ms"), 40);
    CU_ASSERT_EQUAL(jint(json_object_get(c, "baseline"), "events"), 300);
    resp_clear(&r);

    http(&r, "POST", "/v1/subscriptions/cn-sub/canary:rollback", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "state"), "rolled_back");
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(r.json, "share")), 0, 1e-9);
    resp_clear(&r);
    redisReply *st = cmd("HGET %s:sub:{cn-sub}:canary state", F.ns);
    CU_ASSERT_STRING_EQUAL(st->str, "rolled_back");
    freeReplyObject(st);
    http(&r, "GET", "/v1/subscriptions/cn-sub/stats", NULL);
    CU_ASSERT_STRING_EQUAL(jstr(json_object_get(r.json, "canary"), "state"), "rolled_back");
    resp_clear(&r);

    http(&r, "POST", "/v1/subscriptions/cn-sub/canary:promote", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "state"), "promoted");
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "version"), "v2");
    resp_clear(&r);

    http(&r, "POST", "/v1/subscriptions/ghost/canary:promote", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    put_sub("cn-plain", "cn-topic");
    http(&r, "POST", "/v1/subscriptions/cn-plain/canary:rollback", NULL);
    CU_ASSERT_EQUAL(r.status, 409);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/cn-plain/stats", NULL);
    CU_ASSERT_PTR_NULL(json_object_get(r.json, "canary"));
    resp_clear(&r);
}

/* ---- GET .../tasks/{event_id}: record, then delayed, DLQ, retry store ---- */

static void test_task_get(void)
{
    put_topic("tk-topic", "{}");
    put_sub("tk-sub", "tk-topic");
    resp_t r;
    /* The task record flowcontrol wrote is answered as is, with defaults for what it lacks.
     * Ids that are not UUIDv7 have their records in bucket 0 (msm_task_key()). */
    freeReplyObject(cmd("HSET %s:sub:{tk-sub}:t:0 ev-rec %s", F.ns,
                        "{\"event_id\":\"ev-rec\",\"state\":\"succeeded\",\"attempts\":1,"
                        "\"updated_ms\":5}"));
    http(&r, "GET", "/v1/subscriptions/tk-sub/tasks/ev-rec", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "state"), "succeeded");
    CU_ASSERT_EQUAL(jint(r.json, "attempts"), 1);
    CU_ASSERT_EQUAL(jint(r.json, "updated_ms"), 5);
    CU_ASSERT(json_is_null(json_object_get(r.json, "next_attempt_at")));
    CU_ASSERT(json_is_null(json_object_get(r.json, "last_error")));
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "history")), 0);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(r.json, "history"));
    resp_clear(&r);

    write_delayed("tk-sub", "ev-del", DUE_MS);
    http(&r, "GET", "/v1/subscriptions/tk-sub/tasks/ev-del", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "state"), "delayed");
    CU_ASSERT_EQUAL(jint(r.json, "attempts"), 0);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "next_attempt_at"), DUE_TEXT);
    CU_ASSERT_EQUAL(jint(json_object_get(json_object_get(r.json, "event"), "data"), "n"), 1);
    resp_clear(&r);

    write_stored("dlq", "tk-sub", "ev-dead", 5, "HTTP 503", HISTORY, 5, 100);
    http(&r, "GET", "/v1/subscriptions/tk-sub/tasks/ev-dead", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "event_id"), "ev-dead");
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "state"), "dead");
    CU_ASSERT_EQUAL(jint(r.json, "attempts"), 5);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "last_error"), "HTTP 503");
    CU_ASSERT(json_is_null(json_object_get(r.json, "next_attempt_at")));
    json_t *h = json_object_get(r.json, "history");
    CU_ASSERT_EQUAL(json_array_size(h), 1);
    CU_ASSERT_EQUAL(jint(json_array_get(h, 0), "latency_ms"), 12);
    resp_clear(&r);

    write_stored("retry", "tk-sub", "ev-retry", 2, "HTTP 500", HISTORY, 5, DUE_MS);
    http(&r, "GET", "/v1/subscriptions/tk-sub/tasks/ev-retry", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "state"), "retrying");
    CU_ASSERT_EQUAL(jint(r.json, "attempts"), 2);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "next_attempt_at"), DUE_TEXT);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "last_error"), "HTTP 500");
    resp_clear(&r);

    /* A record wins over the stores: it is the newest word on the task. Its time in ms is
     * shown in RFC 3339. */
    freeReplyObject(cmd("HSET %s:sub:{tk-sub}:t:0 ev-retry %s", F.ns,
                        "{\"event_id\":\"ev-retry\",\"state\":\"retrying\",\"attempts\":3,"
                        "\"next_attempt_at\":1700000001234}"));
    http(&r, "GET", "/v1/subscriptions/tk-sub/tasks/ev-retry", NULL);
    CU_ASSERT_EQUAL(jint(r.json, "attempts"), 3);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "next_attempt_at"), DUE_TEXT);
    resp_clear(&r);

    http(&r, "GET", "/v1/subscriptions/tk-sub/tasks/ev-none", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/ghost/tasks/ev-dead", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

/* ---- GET .../tasks?state=S ---- */

static void test_task_list(void)
{
    put_topic("tk-topic", "{}");
    put_sub("ls-sub", "tk-topic");
    /* Deaths at 100, 200, 200 (a tie, ordered by id), 300. */
    write_stored("dlq", "ls-sub", "a", 5, "HTTP 503", "[]", 5, 100);
    write_stored("dlq", "ls-sub", "b", 5, "HTTP 503", "[]", 5, 200);
    write_stored("dlq", "ls-sub", "c", 5, "HTTP 503", "[]", 5, 200);
    write_stored("dlq", "ls-sub", "d", 5, "HTTP 503", "[]", 5, 300);
    resp_t r;
    const char *expect[] = {"a", "b", "c", "d"};
    char path[256] = "/v1/subscriptions/ls-sub/tasks?state=dead&limit=2";
    size_t seen = 0;
    for (int page = 0; page < 3; page++) {
        http(&r, "GET", path, NULL);
        CU_ASSERT_EQUAL_FATAL(r.status, 200);
        json_t *tasks = json_object_get(r.json, "tasks");
        for (size_t i = 0; i < json_array_size(tasks) && seen < 4; i++) {
            CU_ASSERT_STRING_EQUAL(jstr(json_array_get(tasks, i), "event_id"), expect[seen]);
            CU_ASSERT_STRING_EQUAL(jstr(json_array_get(tasks, i), "state"), "dead");
            seen++;
        }
        const char *next = jstr(r.json, "next_cursor");
        if (next)
            snprintf(path, sizeof(path),
                     "/v1/subscriptions/ls-sub/tasks?state=dead&limit=2&cursor=%s", next);
        int last = next == NULL;
        CU_ASSERT(json_object_get(r.json, "next_cursor") != NULL);
        resp_clear(&r);
        if (last)
            break;
    }
    CU_ASSERT_EQUAL(seen, 4);

    /* A cursor whose task left the store meanwhile continues after its time. */
    freeReplyObject(cmd("ZREM %s:sub:{ls-sub}:dlq a", F.ns));
    http(&r, "GET", "/v1/subscriptions/ls-sub/tasks?state=dead&cursor=100:a", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "tasks")), 3);
    CU_ASSERT(json_is_null(json_object_get(r.json, "next_cursor")));
    resp_clear(&r);

    write_stored("retry", "ls-sub", "y", 2, "HTTP 500", HISTORY, 5, DUE_MS);
    write_delayed("ls-sub", "z", DUE_MS);
    http(&r, "GET", "/v1/subscriptions/ls-sub/tasks?state=retrying", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *t = json_array_get(json_object_get(r.json, "tasks"), 0);
    CU_ASSERT_STRING_EQUAL(jstr(t, "event_id"), "y");
    CU_ASSERT_STRING_EQUAL(jstr(t, "next_attempt_at"), DUE_TEXT);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/ls-sub/tasks?state=delayed", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    t = json_array_get(json_object_get(r.json, "tasks"), 0);
    CU_ASSERT_STRING_EQUAL(jstr(t, "event_id"), "z");
    CU_ASSERT_STRING_EQUAL(jstr(t, "state"), "delayed");
    resp_clear(&r);

    /* The states only task records hold are listed from them (test_task_list_records):
     * none here, an empty last page. */
    const char *from_records[] = {"pending", "running", "succeeded"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "/v1/subscriptions/ls-sub/tasks?state=%s",
                 from_records[i]);
        http(&r, "GET", path, NULL);
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "tasks")), 0);
        CU_ASSERT(json_is_null(json_object_get(r.json, "next_cursor")));
        resp_clear(&r);
    }
    const char *bad[] = {"/v1/subscriptions/ls-sub/tasks", "/v1/subscriptions/ls-sub/tasks?state=x",
                         "/v1/subscriptions/ls-sub/tasks?state=dead&limit=0",
                         "/v1/subscriptions/ls-sub/tasks?state=dead&cursor=zz"};
    for (size_t i = 0; i < 4; i++) {
        http(&r, "GET", bad[i], NULL);
        CU_ASSERT_EQUAL(r.status, 400);
        resp_clear(&r);
    }
    http(&r, "GET", "/v1/subscriptions/ghost/tasks?state=dead", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

/* ---- GET .../tasks?state=S from the task records, GET .../keys?blocked=true ---- */

#define RETENTION_MS 3600000
#define BASE_MS      1700000000000LL

/* A UUIDv7 published at @p ms (the rest of a fresh id keeps it unique). */
static void id_at(long long ms, char *buf)
{
    msm_id_t id;
    msm_id_new(&id);
    for (int i = 0; i < 6; i++)
        id.b[i] = (uint8_t)(ms >> (8 * (5 - i)));
    msm_id_format(&id, buf);
}

/* A task record where and as flowcontrol writes it: HSET into the bucket of the id's
 * publish second, then PEXPIRE the bucket to the retention. */
static void write_record(const char *sub, const char *id, const char *state, int attempts,
                         int parked)
{
    char key[256], json[512];
    CU_ASSERT_FATAL(msm_task_key(F.redis, key, sizeof(key), sub, id) > 0);
    snprintf(json, sizeof(json),
             "{\"event_id\":\"%s\",\"state\":\"%s\",\"attempts\":%d%s%s,\"updated_ms\":%lld%s}",
             id, state, attempts, parked ? ",\"parked\":true" : "",
             attempts > 0 ? ",\"last_error\":\"HTTP 500\"" : "", (long long)msm_time_unix_ms(),
             attempts > 0 ? ",\"history\":" HISTORY : "");
    freeReplyObject(cmd("HSET %s %s %s", key, id, json));
    freeReplyObject(cmd("PEXPIRE %s %d", key, RETENTION_MS));
}

/* @p n fields "<prefix>-<i>" → @p json in one bucket, a thousand per HSET. */
static void write_bulk(const char *key, const char *prefix, int n, const char *json)
{
    enum { CHUNK = 1000 };
    static char ids[CHUNK][32];
    const char *argv[2 + 2 * CHUNK];
    for (int at = 0; at < n; at += CHUNK) {
        int argc = 0;
        argv[argc++] = "HSET";
        argv[argc++] = key;
        for (int i = at; i < n && i < at + CHUNK; i++) {
            snprintf(ids[i - at], sizeof(ids[0]), "%s-%05d", prefix, i);
            argv[argc++] = ids[i - at];
            argv[argc++] = json;
        }
        redisReply *r = redisCommandArgv(F.sync, argc, argv, NULL);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        CU_ASSERT_NOT_EQUAL(r->type, REDIS_REPLY_ERROR);
        freeReplyObject(r);
    }
}

/* A cursor as the frontend makes one: @p text in base64url. */
static void cursor_of(const char *text, char *out)
{
    size_t n = msm_base64_encode(text, strlen(text), out);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

typedef struct {
    int pages;
    int short_pages; /* pages with fewer than the limit and a next_cursor */
    int max_page;    /* most items on one page */
    int repeats;     /* items seen more than once */
} walk_t;

/* Follows next_cursor from @p first (a path with limit) to the end, counting each item of
 * @p member by @p id_field in @p seen (id → times seen); checks every item's "state" when
 * @p state is given. */
static walk_t walk_pages(const char *first, const char *member, const char *id_field,
                         const char *state, long limit, json_t *seen)
{
    walk_t w = {0};
    char path[512];
    snprintf(path, sizeof(path), "%s", first);
    for (;;) {
        resp_t r;
        http(&r, "GET", path, NULL);
        CU_ASSERT_EQUAL_FATAL(r.status, 200);
        json_t *items = json_object_get(r.json, member);
        CU_ASSERT_FATAL(json_is_array(items));
        CU_ASSERT_PTR_NOT_NULL(json_object_get(r.json, "next_cursor")); /* null, not absent */
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it) {
            const char *id = jstr(it, id_field);
            CU_ASSERT_PTR_NOT_NULL_FATAL(id);
            if (state)
                CU_ASSERT_STRING_EQUAL(jstr(it, "state"), state);
            json_int_t times = jint(seen, id) + 1;
            json_object_set_new(seen, id, json_integer(times));
            if (times > 1)
                w.repeats++;
        }
        if ((int)json_array_size(items) > w.max_page)
            w.max_page = (int)json_array_size(items);
        w.pages++;
        const char *next = jstr(r.json, "next_cursor");
        if (next && (long)json_array_size(items) < limit)
            w.short_pages++;
        if (next)
            snprintf(path, sizeof(path), "%s&cursor=%s", first, next);
        resp_clear(&r);
        if (!next || w.pages > 1000)
            break;
    }
    return w;
}

/* Non-zero when every id of @p ids (n of them) is in @p seen exactly once and @p seen holds
 * nothing else. */
static int seen_exactly(const json_t *seen, char ids[][MSM_ID_STR_SIZE], size_t n)
{
    if (json_object_size(seen) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (jint(seen, ids[i]) != 1)
            return 0;
    }
    return 1;
}

static void test_task_list_records(void)
{
    put_topic("tk-topic", "{}");
    put_sub("rc-sub", "tk-topic");
    put_sub("rc-subx", "tk-topic"); /* a name that extends the other: never listed with it */
    /* 60 tasks over 6 publish seconds: succeeded, running, pending (half of them parked
     * behind a held key), and records of the states listed from their stores. */
    enum { N = 60 };
    static char ids[N][MSM_ID_STR_SIZE];
    static char succeeded[N][MSM_ID_STR_SIZE], running[N][MSM_ID_STR_SIZE],
        pending[N][MSM_ID_STR_SIZE];
    size_t ns = 0, nr = 0, np = 0;
    for (int i = 0; i < N; i++) {
        id_at(BASE_MS + (i % 6) * 1000 + i, ids[i]);
        switch (i % 5) {
        case 0:
        case 1:
            write_record("rc-sub", ids[i], "succeeded", 1 + i % 3, 0);
            strcpy(succeeded[ns++], ids[i]);
            break;
        case 2:
            write_record("rc-sub", ids[i], "running", 1, 0);
            strcpy(running[nr++], ids[i]);
            break;
        case 3:
            write_record("rc-sub", ids[i], "pending", 0, i % 10 == 3);
            strcpy(pending[np++], ids[i]);
            break;
        default:
            write_record("rc-sub", ids[i], i % 2 ? "retrying" : "dead", 2, 0);
        }
    }
    char other[MSM_ID_STR_SIZE];
    id_at(BASE_MS, other);
    write_record("rc-subx", other, "succeeded", 1, 0);
    /* Keys under the bucket pattern that are not buckets are passed over. */
    freeReplyObject(cmd("SET %s:sub:{rc-sub}:t:junk x", F.ns));
    freeReplyObject(cmd("SET %s:sub:{rc-sub}:t:7 x", F.ns));

    /* Every state, pages of a few: each task exactly once, in more than two pages. */
    const struct {
        const char *state;
        char (*ids)[MSM_ID_STR_SIZE];
        size_t n;
        long limit;
    } cases[] = {
        {"succeeded", succeeded, ns, 4}, {"running", running, nr, 3}, {"pending", pending, np, 5}};
    for (size_t c = 0; c < 3; c++) {
        char first[256];
        snprintf(first, sizeof(first), "/v1/subscriptions/rc-sub/tasks?state=%s&limit=%ld",
                 cases[c].state, cases[c].limit);
        json_t *seen = json_object();
        walk_t w = walk_pages(first, "tasks", "event_id", cases[c].state, cases[c].limit, seen);
        CU_ASSERT(seen_exactly(seen, cases[c].ids, cases[c].n));
        CU_ASSERT_EQUAL(w.repeats, 0);
        CU_ASSERT(w.pages > 2);
        CU_ASSERT(w.max_page <= cases[c].limit);
        json_decref(seen);
    }
    CU_ASSERT_EQUAL(ns, 24);
    CU_ASSERT_EQUAL(nr, 12);
    CU_ASSERT_EQUAL(np, 12);

    /* One page holds them all; an item is what GET .../tasks/{id} answers. */
    resp_t r, one;
    http(&r, "GET", "/v1/subscriptions/rc-sub/tasks?state=succeeded&limit=1000", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *tasks = json_object_get(r.json, "tasks");
    CU_ASSERT_EQUAL(json_array_size(tasks), ns);
    CU_ASSERT(json_is_null(json_object_get(r.json, "next_cursor")));
    json_t *t = json_array_get(tasks, 0);
    char path[512];
    snprintf(path, sizeof(path), "/v1/subscriptions/rc-sub/tasks/%s", jstr(t, "event_id"));
    http(&one, "GET", path, NULL);
    CU_ASSERT_EQUAL(one.status, 200);
    CU_ASSERT(json_equal(t, one.json));
    CU_ASSERT(json_is_array(json_object_get(t, "history")));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(t, "next_attempt_at"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(t, "last_error"));
    resp_clear(&one);
    resp_clear(&r);

    /* Parked tasks are pending: listed with their flag. */
    http(&r, "GET", "/v1/subscriptions/rc-sub/tasks?state=pending&limit=1000", NULL);
    size_t parked = 0, i;
    json_array_foreach(json_object_get(r.json, "tasks"), i, t) {
        parked += json_is_true(json_object_get(t, "parked"));
    }
    CU_ASSERT_EQUAL(parked, 6);
    resp_clear(&r);

    /* Dead, retrying and delayed still come from their stores, not from the records. */
    http(&r, "GET", "/v1/subscriptions/rc-sub/tasks?state=retrying", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "tasks")), 0);
    resp_clear(&r);

    /* A bucket far larger than a page's work: pages come back short (with a cursor) rather
     * than keep Redis busy, and still each task exactly once. */
    put_sub("rc-big", "tk-topic");
    char big[256];
    snprintf(big, sizeof(big), "%s:sub:{rc-big}:t:1700000100", F.ns);
    write_bulk(big, "s", 25000, "{\"state\":\"succeeded\",\"attempts\":1}");
    static char run_ids[3][MSM_ID_STR_SIZE] = {"r-0", "r-1", "r-2"};
    for (int k = 0; k < 3; k++)
        freeReplyObject(cmd("HSET %s %s {\"state\":\"running\",\"attempts\":1}", big, run_ids[k]));
    json_t *seen = json_object();
    walk_t w = walk_pages("/v1/subscriptions/rc-big/tasks?state=running&limit=10", "tasks",
                          "event_id", "running", 10, seen);
    CU_ASSERT(seen_exactly(seen, run_ids, 3));
    CU_ASSERT(w.pages >= 2);
    CU_ASSERT(w.short_pages >= 1);
    json_decref(seen);
    seen = json_object();
    w = walk_pages("/v1/subscriptions/rc-big/tasks?state=succeeded&limit=1000", "tasks",
                   "event_id", "succeeded", 1000, seen);
    CU_ASSERT_EQUAL(json_object_size(seen), 25000);
    CU_ASSERT_EQUAL(w.repeats, 0);
    CU_ASSERT(w.max_page <= 1000);
    json_decref(seen);

    /* Cursors that are not this listing's: 400 with the error body. */
    char c1[128], c2[128], c3[128];
    cursor_of("t1:running:0::0:", c1);       /* another state's */
    cursor_of("t1:succeeded:x1::0:", c2);    /* not a SCAN cursor */
    cursor_of("t1:succeeded:0:017:0:", c3);  /* not a bucket */
    const char *bad[] = {"zz!!", "100:a", c1, c2, c3, "eA"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        snprintf(path, sizeof(path), "/v1/subscriptions/rc-sub/tasks?state=succeeded&cursor=%s",
                 bad[k]);
        http(&r, "GET", path, NULL);
        CU_ASSERT_EQUAL(r.status, 400);
        CU_ASSERT_STRING_EQUAL(err_code(&r), "INVALID_ARGUMENT");
        CU_ASSERT(has_detail(&r, "cursor"));
        resp_clear(&r);
    }
    /* A good cursor made by hand goes on where it says. */
    cursor_of("t1:succeeded:0::0:", c1);
    snprintf(path, sizeof(path), "/v1/subscriptions/rc-sub/tasks?state=succeeded&cursor=%s", c1);
    http(&r, "GET", path, NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "tasks")), 24);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/ghost/tasks?state=succeeded", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

static void test_held_keys(void)
{
    put_topic("tk-topic", "{}");
    put_sub("hk-sub", "tk-topic");
    resp_t r;
    /* None held: an empty last page. */
    http(&r, "GET", "/v1/subscriptions/hk-sub/keys?blocked=true", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "keys")), 0);
    CU_ASSERT(json_is_null(json_object_get(r.json, "next_cursor")));
    resp_clear(&r);

    /* Seven keys held for i seconds by event e-i after i attempts, as flowcontrol writes
     * them (its Lua encoder orders members its own way). Keys may hold ':'. */
    long long now = (long long)msm_time_unix_ms();
    for (int i = 1; i <= 7; i++) {
        char val[160];
        if (i == 2)
            snprintf(val, sizeof(val), "{\"since_ms\":%lld,\"attempts\":%d,\"event_id\":\"e-%d\"}",
                     now - i * 1000, i, i);
        else
            snprintf(val, sizeof(val), "{\"event_id\":\"e-%d\",\"attempts\":%d,\"since_ms\":%lld}",
                     i, i, now - i * 1000);
        freeReplyObject(cmd("HSET %s:sub:{hk-sub}:held order:%d %s", F.ns, i, val));
    }
    http(&r, "GET", "/v1/subscriptions/hk-sub/keys?blocked=true", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *keys = json_object_get(r.json, "keys");
    CU_ASSERT_EQUAL(json_array_size(keys), 7);
    CU_ASSERT(json_is_null(json_object_get(r.json, "next_cursor")));
    size_t i;
    json_t *k;
    long long after = (long long)msm_time_unix_ms();
    json_array_foreach(keys, i, k) {
        int n = 0;
        CU_ASSERT_EQUAL_FATAL(sscanf(jstr(k, "key"), "order:%d", &n), 1);
        char holder[16];
        snprintf(holder, sizeof(holder), "e-%d", n);
        CU_ASSERT_STRING_EQUAL(jstr(k, "event_id"), holder);
        CU_ASSERT_EQUAL(jint(k, "attempts"), n);
        /* held since n seconds before `now`, read at most `after - now` later */
        CU_ASSERT(jint(k, "blocked_ms") >= n * 1000);
        CU_ASSERT(jint(k, "blocked_ms") <= n * 1000 + (after - now) + 10);
        CU_ASSERT_EQUAL(json_object_size(k), 4);
    }
    resp_clear(&r);

    json_t *seen = json_object();
    walk_t w = walk_pages("/v1/subscriptions/hk-sub/keys?blocked=true&limit=2", "keys", "key",
                          NULL, 2, seen);
    CU_ASSERT_EQUAL(json_object_size(seen), 7);
    CU_ASSERT_EQUAL(w.repeats, 0);
    CU_ASSERT(w.pages >= 4);
    CU_ASSERT(w.max_page <= 2);
    json_decref(seen);

    /* Many held keys (a hash table, not a packed small hash): pages cover each once. */
    put_sub("hk-big", "tk-topic");
    char held[256], val[128];
    snprintf(held, sizeof(held), "%s:sub:{hk-big}:held", F.ns);
    snprintf(val, sizeof(val), "{\"event_id\":\"e\",\"attempts\":1,\"since_ms\":%lld}", now);
    write_bulk(held, "tenant:key", 300, val);
    seen = json_object();
    w = walk_pages("/v1/subscriptions/hk-big/keys?blocked=true&limit=7", "keys", "key", NULL, 7,
                   seen);
    CU_ASSERT_EQUAL(json_object_size(seen), 300);
    CU_ASSERT_EQUAL(w.repeats, 0);
    CU_ASSERT(w.pages > 2);
    CU_ASSERT(w.max_page <= 7);
    json_decref(seen);

    /* Only blocked=true is served; everything else is refused, never ignored. */
    char rc_cursor[128], rc_query[192], path[256];
    cursor_of("t1:succeeded:0::0:", rc_cursor); /* the task listing's, not this one's */
    snprintf(rc_query, sizeof(rc_query), "?blocked=true&cursor=%s", rc_cursor);
    const char *bad[] = {"", "?blocked=false", "?blocked=1", "?blocked", "?blocked=true&limit=0",
                         "?blocked=true&limit=1001", "?blocked=true&cursor=zz!!", rc_query};
    const char *field[] = {"blocked", "blocked", "blocked", "blocked", "limit", "limit", "cursor",
                           "cursor"};
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        snprintf(path, sizeof(path), "/v1/subscriptions/hk-sub/keys%s", bad[b]);
        http(&r, "GET", path, NULL);
        CU_ASSERT_EQUAL(r.status, 400);
        CU_ASSERT(has_detail(&r, field[b]));
        if (b == 0)
            CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "only blocked=true is supported"));
        resp_clear(&r);
    }
    http(&r, "GET", "/v1/subscriptions/ghost/keys?blocked=true", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "NOT_FOUND");
    resp_clear(&r);
}

/* ---- DLQ list and replay ---- */

static void test_dlq_and_replay(void)
{
    put_topic("tk-topic", "{}");
    put_sub("dq-sub", "tk-topic");
    /* Three dead tasks, died at 100, 200, 300, with the records flowcontrol wrote. */
    const char *dead[] = {"ev-d1", "ev-d2", "ev-d3"};
    for (int i = 0; i < 3; i++) {
        write_stored("dlq", "dq-sub", dead[i], 5, "HTTP 503", HISTORY, 5, (i + 1) * 100);
        freeReplyObject(cmd("HSET %s:sub:{dq-sub}:t:0 %s {\"state\":\"dead\"}", F.ns, dead[i]));
    }
    resp_t r;
    http(&r, "GET", "/v1/subscriptions/dq-sub/dlq?limit=2", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *tasks = json_object_get(r.json, "tasks");
    CU_ASSERT_EQUAL_FATAL(json_array_size(tasks), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(tasks, 0), "event_id"), "ev-d3");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(tasks, 1), "event_id"), "ev-d2");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(tasks, 0), "state"), "dead");
    CU_ASSERT_EQUAL(jint(json_array_get(tasks, 0), "attempts"), 5);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(json_array_get(tasks, 0), "history")), 1);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/dq-sub/dlq", NULL);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "tasks")), 3);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/dq-sub/dlq?limit=0", NULL);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "limit"));
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/dq-sub/dlq?limit=abc", NULL);
    CU_ASSERT_EQUAL(r.status, 400);
    resp_clear(&r);

    /* Replay one by id: one TaskBatch in ready.dq-sub, attempt 0, history kept. */
    http(&r, "POST", "/v1/subscriptions/dq-sub/dlq:replay", "{\"event_ids\":[\"ev-d1\"]}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "replayed"), 1);
    resp_clear(&r);
    Msm__V1__TaskBatch *b[8] = {0};
    size_t nb = ready_batches("dq-sub", b, 8);
    CU_ASSERT_EQUAL_FATAL(nb, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b[0]);
    CU_ASSERT_EQUAL_FATAL(b[0]->n_tasks, 1);
    const Msm__V1__Task *t = b[0]->tasks[0];
    CU_ASSERT_STRING_EQUAL(t->event->id, "ev-d1");
    CU_ASSERT_EQUAL(t->attempt, 0);
    CU_ASSERT_EQUAL(t->state, MSM__V1__TASK_STATE__TASK_STATE_PENDING);
    CU_ASSERT_STRING_EQUAL(t->history, HISTORY);
    for (size_t i = 0; i < nb; i++)
        msm_task_batch_free(b[i]);
    CU_ASSERT_EQUAL(cmd_int("ZSCORE %s:sub:{dq-sub}:dlq ev-d1", F.ns), -1); /* nil */
    CU_ASSERT_EQUAL(cmd_int("HEXISTS %s:sub:{dq-sub}:dlq:tasks ev-d1", F.ns), 0);
    http(&r, "GET", "/v1/subscriptions/dq-sub/tasks/ev-d1", NULL);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "state"), "pending");
    CU_ASSERT_EQUAL(jint(r.json, "attempts"), 0);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "history")), 1);
    resp_clear(&r);
    CU_ASSERT(cmd_int("PTTL %s:sub:{dq-sub}:t:0", F.ns) > 3000000); /* task_retention_ms */

    /* Ids that are not dead, or unknown, are not replayed (and no record is written). */
    http(&r, "POST", "/v1/subscriptions/dq-sub/dlq:replay",
         "{\"event_ids\":[\"ev-unknown\",\"ev-d1\"]}");
    CU_ASSERT_EQUAL(jint(r.json, "replayed"), 0);
    resp_clear(&r);
    CU_ASSERT_EQUAL(stream_len("ready.dq-sub", 1), 1);
    /* An empty list replays the rest, each id once. */
    http(&r, "POST", "/v1/subscriptions/dq-sub/dlq:replay", "{\"event_ids\":[]}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "replayed"), 2);
    resp_clear(&r);
    CU_ASSERT_EQUAL(cmd_int("ZCARD %s:sub:{dq-sub}:dlq", F.ns), 0);
    CU_ASSERT_EQUAL(cmd_int("HLEN %s:sub:{dq-sub}:dlq:tasks", F.ns), 0);
    CU_ASSERT_EQUAL(stream_len("ready.dq-sub", 1), 2);
    http(&r, "POST", "/v1/subscriptions/dq-sub/dlq:replay", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "replayed"), 0);
    resp_clear(&r);

    /* Many dead tasks go in bounded pages: one record per page. */
    for (int i = 0; i < 1203; i++) {
        char id[32];
        snprintf(id, sizeof(id), "m-%04d", i);
        write_stored("dlq", "dq-sub", id, 5, "HTTP 503", "[]", 5, 1000 + i);
    }
    freeReplyObject(cmd("ZADD %s:sub:{dq-sub}:dlq 5 orphan", F.ns)); /* no packed task */
    http(&r, "POST", "/v1/subscriptions/dq-sub/dlq:replay", "{}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "replayed"), 1203);
    resp_clear(&r);
    CU_ASSERT_EQUAL(stream_len("ready.dq-sub", 1), 2 + 3);
    CU_ASSERT_EQUAL(cmd_int("ZCARD %s:sub:{dq-sub}:dlq", F.ns), 1); /* the orphan stays */

    http(&r, "POST", "/v1/subscriptions/dq-sub/dlq:replay", "{\"event_ids\":[1]}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "event_ids[0]"));
    resp_clear(&r);
    http(&r, "POST", "/v1/subscriptions/ghost/dlq:replay", "{}");
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

/* ---- :pause, :resume and the new subscription fields ---- */

static void test_pause_resume(void)
{
    put_topic("pz-topic", "{}");
    resp_t r;
    http(&r, "PUT", "/v1/subscriptions/pz-sub",
         "{\"topic\":\"pz-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"max_batch_events\":10,\"task_retention_ms\":5000,\"secret\":\"k\"}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "max_batch_events"), 10);
    CU_ASSERT_EQUAL(jint(r.json, "task_retention_ms"), 5000);
    CU_ASSERT_TRUE(json_is_false(json_object_get(r.json, "paused")));
    resp_clear(&r);

    http(&r, "POST", "/v1/subscriptions/pz-sub:pause", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(json_is_true(json_object_get(r.json, "paused")));
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "secret"), "***");
    CU_ASSERT_EQUAL(jint(r.json, "max_batch_events"), 10);
    resp_clear(&r);
    redisReply *stored = cmd("HGET %s:{registry}:subs pz-sub", F.ns);
    CU_ASSERT_PTR_NOT_NULL(strstr(stored->str, "\"paused\":true"));
    CU_ASSERT_PTR_NOT_NULL(strstr(stored->str, "\"secret\":\"k\""));
    freeReplyObject(stored);
    http(&r, "GET", "/v1/subscriptions/pz-sub/stats", NULL);
    CU_ASSERT_TRUE(json_is_true(json_object_get(r.json, "paused")));
    resp_clear(&r);

    /* A PUT that does not name "paused" keeps it; one that does sets it. */
    http(&r, "PUT", "/v1/subscriptions/pz-sub",
         "{\"topic\":\"pz-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"max_concurrency\":3}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(json_is_true(json_object_get(r.json, "paused")));
    CU_ASSERT_EQUAL(jint(r.json, "max_concurrency"), 3);
    resp_clear(&r);
    http(&r, "POST", "/v1/subscriptions/pz-sub:resume", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_TRUE(json_is_false(json_object_get(r.json, "paused")));
    CU_ASSERT_EQUAL(jint(r.json, "max_concurrency"), 3);
    resp_clear(&r);
    http(&r, "PUT", "/v1/subscriptions/pz-sub",
         "{\"topic\":\"pz-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"paused\":true}");
    CU_ASSERT_TRUE(json_is_true(json_object_get(r.json, "paused")));
    resp_clear(&r);
    http(&r, "PUT", "/v1/subscriptions/pz-sub",
         "{\"topic\":\"pz-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"max_batch_events\":0,\"task_retention_ms\":1}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "max_batch_events"));
    CU_ASSERT(has_detail(&r, "task_retention_ms"));
    resp_clear(&r);

    http(&r, "POST", "/v1/subscriptions/ghost:pause", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    http(&r, "POST", "/v1/subscriptions/ghost:resume", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

/* ---- PUT ensures the three streams; DELETE removes them and every key ---- */

static void test_sub_streams_and_delete(void)
{
    put_topic("dl-topic", "{}");
    put_sub("dl-sub", "dl-topic");
    put_sub("dl-sub2", "dl-topic"); /* a name that extends the other: must survive */
    const char *streams[] = {"ready", "dispatch", "status"};
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(cmd_int("HGET %s:log:{%s.dl-sub}:meta partitions", F.ns, streams[i]), 1);
    append_raw("ready.dl-sub", 3);
    append_raw("status.dl-sub", 1);
    write_stored("dlq", "dl-sub", "x1", 5, "HTTP 503", "[]", 5, 100);
    write_stored("retry", "dl-sub", "x2", 1, "HTTP 500", "[]", 5, DUE_MS);
    write_delayed("dl-sub", "x3", DUE_MS);
    freeReplyObject(cmd("HSET %s:sub:{dl-sub}:t:0 x4 {}", F.ns));
    freeReplyObject(cmd("HSET %s:sub:{dl-sub}:stats succeeded 3", F.ns));
    freeReplyObject(cmd("SET %s:sub:{dl-sub}:owner fc-1", F.ns));
    freeReplyObject(cmd("HSET %s:sub:{dl-sub2}:stats succeeded 4", F.ns));

    /* The DELETE answers once the cleanup is done (sub_lifecycle.c). */
    resp_t r;
    http(&r, "DELETE", "/v1/subscriptions/dl-sub", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    redisReply *left = cmd("KEYS %s:sub:{dl-sub}:*", F.ns);
    CU_ASSERT_EQUAL(left->elements, 0);
    freeReplyObject(left);
    left = cmd("KEYS %s:log:{*.dl-sub}*", F.ns);
    CU_ASSERT_EQUAL(left->elements, 0);
    freeReplyObject(left);
    CU_ASSERT_EQUAL(cmd_int("HGET %s:sub:{dl-sub2}:stats succeeded", F.ns), 4);
    CU_ASSERT_EQUAL(cmd_int("HGET %s:log:{ready.dl-sub2}:meta partitions", F.ns), 1);
    http(&r, "DELETE", "/v1/subscriptions/dl-sub", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);

    /* The same name again starts empty. */
    put_sub("dl-sub", "dl-topic");
    http(&r, "GET", "/v1/subscriptions/dl-sub/stats", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "backlog"), 0);
    CU_ASSERT_EQUAL(jint(r.json, "dead"), 0);
    CU_ASSERT_EQUAL(jint(r.json, "retrying"), 0);
    CU_ASSERT_EQUAL(jint(r.json, "delayed"), 0);
    CU_ASSERT_EQUAL(jint(r.json, "succeeded"), 0);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/dl-sub/tasks/x4", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    CU_ASSERT_EQUAL(stream_len("ready.dl-sub", 1), 0);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"stats", test_stats},
        {"canary: validation, promote, rollback, stats", test_canary},
        {"task_get", test_task_get},
        {"task_list", test_task_list},
        {"task_list_records", test_task_list_records},
        {"held_keys", test_held_keys},
        {"dlq_and_replay", test_dlq_and_replay},
        {"pause_resume", test_pause_resume},
        {"sub_streams_and_delete", test_sub_streams_and_delete},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"tasks", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
