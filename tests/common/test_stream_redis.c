/* SPDX-License-Identifier: MIT */
/* What the Redis Streams driver promises beyond the shared contract: its key layout, an
 * acknowledged append surviving kill -9 of redis-server, appends held while Redis is away,
 * a restarted member resuming its own pending entries, trimming behind the slowest group,
 * a consumer's own lease, delete, stamps read behind reads, and its error answers. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/redis.h"
#include "msm/stream.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static msm_test_redis_t srv;

typedef struct {
    msm_loop_t *loop;
    msm_stream_t *stream;
    char ns[64];
} fixture_t;

static int fixture_open_ns(fixture_t *f, const char *ns, uint64_t append_timeout_ms,
                           uint64_t lease_ms)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->ns, sizeof(f->ns), "%s", ns);
    f->loop = msm_loop_new();
    msm_stream_conf_t conf = {.backend = MSM_STREAM_REDIS, .redis_url = srv.url,
                              .name_prefix = f->ns, .append_timeout_ms = append_timeout_ms,
                              .lease_ms = lease_ms};
    char err[256] = "";
    f->stream = msm_stream_new(f->loop, &conf, err, sizeof(err));
    if (!f->stream)
        fprintf(stderr, "msm_stream_new: %s\n", err);
    return f->stream ? 0 : -1;
}

static int fixture_open(fixture_t *f, uint64_t append_timeout_ms, uint64_t lease_ms)
{
    char ns[64];
    return fixture_open_ns(f, msm_test_namespace(ns, sizeof(ns)), append_timeout_ms, lease_ms);
}

static void fixture_close(fixture_t *f)
{
    msm_stream_free(f->stream);
    msm_loop_free(f->loop);
}

/* A synchronous side channel to look at what the driver stored. */
static long long peek_int(const char *fmt, const char *arg)
{
    redisReply *r = msm_test_redis_query(&srv, fmt, arg);
    long long v = msm_redis_reply_int(r, -1);
    freeReplyObject(r);
    return v;
}

typedef struct {
    int done;
    msm_err_t err;
    char reason[256];
} completion_t;

static void on_done(msm_err_t err, const char *reason, void *opaque)
{
    completion_t *c = opaque;
    CU_ASSERT_FALSE(c->done);
    c->done = 1;
    c->err = err;
    snprintf(c->reason, sizeof(c->reason), "%s", reason ? reason : "");
}

static msm_err_t ensure_sync(fixture_t *f, const char *name, int partitions)
{
    completion_t c = {0};
    if (msm_stream_ensure(f->stream, name, partitions, on_done, &c) != MSM_OK ||
        msm_test_wait_flag(f->loop, &c.done, 10000) != 0)
        return MSM_ERR_TIMEOUT;
    return c.err;
}

/* Appends values v<first>..v<first+n-1> with keys k<value % nkeys> in one batch. */
static int append_start(fixture_t *f, const char *name, int first, int n, int nkeys,
                        completion_t *c)
{
    msm_record_t *recs = calloc((size_t)n, sizeof(*recs));
    char(*keys)[16] = calloc((size_t)n, sizeof(*keys));
    char(*vals)[16] = calloc((size_t)n, sizeof(*vals));
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", (first + i) % nkeys);
        snprintf(vals[i], sizeof(vals[i]), "v%d", first + i);
        recs[i] = (msm_record_t){.key = keys[i], .key_len = strlen(keys[i]), .value = vals[i],
                                 .value_len = strlen(vals[i])};
    }
    memset(c, 0, sizeof(*c));
    int rc = msm_stream_append(f->stream, name, recs, (size_t)n, on_done, c);
    free(recs); /* copied by the driver */
    free(keys);
    free(vals);
    return rc;
}

static msm_err_t append_sync(fixture_t *f, const char *name, int first, int n, int nkeys)
{
    completion_t c;
    if (append_start(f, name, first, n, nkeys, &c) != MSM_OK ||
        msm_test_wait_flag(f->loop, &c.done, 20000) != 0)
        return MSM_ERR_TIMEOUT;
    if (c.err != MSM_OK)
        fprintf(stderr, "append: %s\n", c.reason);
    return c.err;
}

typedef struct {
    msm_consumer_t *consumer;
    int ack;
    int ack_below; /* with ack off: values below this are acknowledged all the same */
    int total, redelivered;
    unsigned char seen[4096];
    int distinct;
} collector_t;

/* The number of a value "v<number>". */
static int value_num(const msm_stream_msg_t *m)
{
    char buf[16] = "";
    memcpy(buf, m->value, m->value_len < 15 ? m->value_len : 15);
    return atoi(buf + 1);
}

static void on_batch(msm_consumer_t *consumer, msm_stream_msg_t *const *msgs, size_t n,
                     void *opaque)
{
    collector_t *c = opaque;
    for (size_t i = 0; i < n; i++) {
        int v = value_num(msgs[i]);
        if (v >= 0 && v < 4096 && !c->seen[v]++)
            c->distinct++;
        c->total++;
        c->redelivered += msgs[i]->redelivered != 0;
        if (c->ack || v < c->ack_below)
            msm_consumer_ack(consumer, msgs[i]);
    }
}

static msm_consumer_t *consume_in(fixture_t *f, const char *name, const char *group,
                                  const char *member, size_t max_batch, size_t max_unacked,
                                  collector_t *c)
{
    char err[256] = "";
    c->consumer = msm_stream_consume(f->stream, name, group, member, max_batch, max_unacked,
                                     on_batch, c, err, sizeof(err));
    if (!c->consumer)
        fprintf(stderr, "consume: %s\n", err);
    return c->consumer;
}

static msm_consumer_t *consume(fixture_t *f, const char *name, const char *member,
                               collector_t *c)
{
    return consume_in(f, name, "g", member, 100, 5000, c);
}

static int wait_distinct(fixture_t *f, collector_t *c, int want, uint64_t ms)
{
    for (uint64_t t = 0; t < ms && c->distinct < want; t += 20)
        msm_test_spin(f->loop, 20);
    return c->distinct;
}

static void part_key_of(const fixture_t *f, const char *name, int p, char *buf, size_t n)
{
    snprintf(buf, n, "%s:log:{%s}:%d", f->ns, name, p);
}

/* Waits until partition @p p of @p name holds @p want entries; returns its length then. */
static long long wait_len(fixture_t *f, const char *name, int p, long long want, uint64_t ms)
{
    char key[256];
    part_key_of(f, name, p, key, sizeof(key));
    long long len = peek_int("XLEN %s", key);
    for (uint64_t t = 0; t < ms && len != want; t += 50) {
        msm_test_spin(f->loop, 50);
        len = peek_int("XLEN %s", key);
    }
    return len;
}

/* The value of the oldest entry of partition @p p, or -1. */
static int first_value(fixture_t *f, const char *name, int p)
{
    char key[256];
    part_key_of(f, name, p, key, sizeof(key));
    redisReply *r = msm_test_redis_query(&srv, "XRANGE %s - + COUNT 1", key);
    int v = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        redisReply *fields = r->element[0]->element[1];
        for (size_t i = 0; i + 1 < fields->elements; i += 2) {
            if (strcmp(fields->element[i]->str, "v") == 0)
                v = atoi(fields->element[i + 1]->str + 1);
        }
    }
    freeReplyObject(r);
    return v;
}

/* ---- tests ---- */

static void test_key_layout(void)
{
    fixture_t f;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 30000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.layout", 4), MSM_OK);
    /* An existing stream keeps its partition count. */
    CU_ASSERT_EQUAL(ensure_sync(&f, "events.layout", 9), MSM_OK);
    char key[256];
    snprintf(key, sizeof(key), "%s:log:{events.layout}:meta", f.ns);
    CU_ASSERT_EQUAL(peek_int("HGET %s partitions", key), 4);

    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.layout", 0, 400, 8), MSM_OK);
    /* Every record is in exactly one partition stream, all of a key's in the same one. */
    long long total = 0;
    int streams_with_k3 = 0;
    for (int p = 0; p < 4; p++) {
        snprintf(key, sizeof(key), "%s:log:{events.layout}:%d", f.ns, p);
        total += peek_int("XLEN %s", key);
        redisReply *r = msm_test_redis_query(&srv, "XRANGE %s - +", key);
        int has_k3 = 0;
        for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            redisReply *fields = r->element[i]->element[1];
            has_k3 |= strcmp(fields->element[1]->str, "k3") == 0;
        }
        streams_with_k3 += has_k3;
        freeReplyObject(r);
    }
    CU_ASSERT_EQUAL(total, 400);
    CU_ASSERT_EQUAL(streams_with_k3, 1);
    fixture_close(&f);
}

static void test_unknown_stream(void)
{
    fixture_t f;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 30000), 0);
    CU_ASSERT_EQUAL(append_sync(&f, "events.never-ensured", 0, 3, 1), MSM_ERR_NOTFOUND);
    fixture_close(&f);
}

static void test_acked_append_survives_kill9(void)
{
    fixture_t f;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 10000, 30000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.crash", 3), MSM_OK);
    for (int b = 0; b < 10; b++)
        CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.crash", b * 100, 100, 7), MSM_OK);
    char ns[64];
    snprintf(ns, sizeof(ns), "%s", f.ns);
    fixture_close(&f);
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_kill(&srv), 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_restart(&srv), 0);

    /* A new client in the same namespace reads every acknowledged record back. */
    CU_ASSERT_EQUAL_FATAL(fixture_open_ns(&f, ns, 10000, 30000), 0);
    collector_t c = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.crash", "m", &c));
    CU_ASSERT_EQUAL(wait_distinct(&f, &c, 1000, 10000), 1000);
    msm_consumer_free(c.consumer);
    fixture_close(&f);
}

static void test_held_while_down(void)
{
    fixture_t f;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 30000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.held", 2), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.held", 0, 10, 3), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_stop(&srv), 0);
    msm_test_spin(f.loop, 200); /* the client notices */
    completion_t c;
    CU_ASSERT_EQUAL_FATAL(append_start(&f, "events.held", 10, 10, 3, &c), MSM_OK);
    msm_test_spin(f.loop, 500);
    CU_ASSERT_FALSE(c.done); /* held, not failed at once and never reported durable */
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.stream), 1);
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_restart(&srv), 0);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &c.done, 10000), 0);
    CU_ASSERT_EQUAL(c.err, MSM_OK);
    collector_t col = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.held", "m", &col));
    CU_ASSERT_EQUAL(wait_distinct(&f, &col, 20, 10000), 20);
    msm_consumer_free(col.consumer);

    /* Away longer than the append timeout: the append fails with TIMEOUT. */
    fixture_close(&f);
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 600, 30000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.held", 2), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_stop(&srv), 0);
    msm_test_spin(f.loop, 200);
    CU_ASSERT_EQUAL_FATAL(append_start(&f, "events.held", 20, 5, 3, &c), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &c.done, 5000), 0);
    CU_ASSERT_EQUAL(c.err, MSM_ERR_TIMEOUT);
    CU_ASSERT_TRUE(c.reason[0] != '\0');
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.stream), 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_restart(&srv), 0);
    fixture_close(&f);
}

static void test_member_resumes_own_pending(void)
{
    fixture_t f;
    /* A long lease: what comes back must come from the member's own pending list. */
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 600000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.resume", 2), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.resume", 0, 300, 5), MSM_OK);
    collector_t a = {.ack = 0};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.resume", "worker-1", &a));
    CU_ASSERT_EQUAL(wait_distinct(&f, &a, 300, 10000), 300);
    CU_ASSERT_EQUAL(a.redelivered, 0);
    msm_consumer_free(a.consumer); /* "crash": nothing acknowledged */

    collector_t b = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.resume", "worker-1", &b));
    CU_ASSERT_EQUAL(wait_distinct(&f, &b, 300, 5000), 300);
    CU_ASSERT_EQUAL(b.redelivered, 300);
    msm_consumer_free(b.consumer);

    /* Another member with the same long lease sees nothing: all acknowledged. */
    collector_t c = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.resume", "worker-2", &c));
    msm_test_spin(f.loop, 500);
    CU_ASSERT_EQUAL(c.total, 0);
    msm_consumer_free(c.consumer);
    fixture_close(&f);
}

static void test_consumer_before_stream(void)
{
    fixture_t f;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 30000), 0);
    collector_t c = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.later", "m", &c));
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.later", 2), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.later", 0, 50, 4), MSM_OK);
    CU_ASSERT_EQUAL(wait_distinct(&f, &c, 50, 10000), 50);
    msm_consumer_free(c.consumer);
    fixture_close(&f);
}

static void test_backlog_answers(void)
{
    fixture_t f;
    int64_t backlog;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 30000), 0);
    CU_ASSERT_EQUAL(msm_test_stream_backlog(f.loop, f.stream, "events.none", "g", &backlog),
                    MSM_ERR_NOTFOUND);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.bl", 3), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.bl", 0, 120, 9), MSM_OK);
    /* A group that has not joined yet will start at the oldest entry: all is backlog. */
    CU_ASSERT_EQUAL(msm_test_stream_backlog(f.loop, f.stream, "events.bl", "g", &backlog), MSM_OK);
    CU_ASSERT_EQUAL(backlog, 120);
    /* Delivered but unacknowledged entries still count. */
    collector_t c = {.ack = 0};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.bl", "m", &c));
    CU_ASSERT_EQUAL(wait_distinct(&f, &c, 120, 5000), 120);
    msm_test_stream_backlog(f.loop, f.stream, "events.bl", "g", &backlog);
    CU_ASSERT_EQUAL(backlog, 120);
    msm_consumer_free(c.consumer);
    fixture_close(&f);
}

static void test_trim_behind_slowest_group(void)
{
    fixture_t f;
    /* A long lease: nothing moves between members behind the test's back. */
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 600000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.trim", 1), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.trim", 0, 200, 1), MSM_OK);

    /* The slow group acknowledges v0..v49 and holds the next 60 (v50..v109) unacknowledged;
     * the fast group acknowledges everything. Both join before either reads (a group that
     * joins later starts at the oldest entry still there). */
    collector_t slow = {.ack = 0, .ack_below = 50};
    collector_t fast = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume_in(&f, "events.trim", "slow", "s", 10, 60, &slow));
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume_in(&f, "events.trim", "fast", "f", 100, 1000, &fast));
    CU_ASSERT_EQUAL(wait_distinct(&f, &slow, 110, 10000), 110);
    CU_ASSERT_EQUAL(wait_distinct(&f, &fast, 200, 10000), 200);

    /* Exactly what the slow group still needs stays: its oldest pending entry onwards. */
    CU_ASSERT_EQUAL(wait_len(&f, "events.trim", 0, 150, 5000), 150);
    msm_test_spin(f.loop, 1500); /* and no later trim takes more */
    CU_ASSERT_EQUAL(wait_len(&f, "events.trim", 0, 150, 0), 150);
    CU_ASSERT_EQUAL(first_value(&f, "events.trim", 0), 50);
    CU_ASSERT_EQUAL(slow.distinct, 110);

    /* The slow member comes back, acknowledges all: nothing is left. */
    msm_consumer_free(slow.consumer);
    collector_t again = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume_in(&f, "events.trim", "slow", "s", 10, 60, &again));
    CU_ASSERT_EQUAL(wait_distinct(&f, &again, 150, 10000), 150);
    CU_ASSERT_EQUAL(wait_len(&f, "events.trim", 0, 0, 5000), 0);
    msm_consumer_free(again.consumer);
    msm_consumer_free(fast.consumer);
    fixture_close(&f);
}

static void test_maxlen_still_trims(void)
{
    fixture_t f;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 30000), 0);
    msm_stream_free(f.stream);
    msm_stream_conf_t conf = {.backend = MSM_STREAM_REDIS, .redis_url = srv.url,
                              .name_prefix = f.ns, .redis_maxlen = 100};
    char err[256] = "";
    f.stream = msm_stream_new(f.loop, &conf, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.stream);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.maxlen", 1), MSM_OK);
    for (int b = 0; b < 10; b++)
        CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.maxlen", b * 100, 100, 1), MSM_OK);
    /* MAXLEN ~: at least 100 kept, whole nodes removed (100 entries a node by default). */
    long long len = wait_len(&f, "events.maxlen", 0, 100, 0);
    CU_ASSERT(len >= 100 && len <= 300);
    fixture_close(&f);
}

static void test_consumer_lease(void)
{
    fixture_t f;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 600000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.lease", 2), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.lease", 0, 100, 7), MSM_OK);
    collector_t a = {.ack = 0};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.lease", "a", &a));
    CU_ASSERT_EQUAL(wait_distinct(&f, &a, 100, 10000), 100);

    /* With the client's long lease, b leaves a's entries alone ... */
    collector_t b = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.lease", "b", &b));
    msm_test_spin(f.loop, 800);
    CU_ASSERT_EQUAL(b.total, 0);
    /* ... with a lease of its own of 300 ms, it takes them once idle that long. */
    msm_consumer_set_lease(b.consumer, 300);
    CU_ASSERT_EQUAL(wait_distinct(&f, &b, 100, 5000), 100);
    CU_ASSERT_EQUAL(b.redelivered, 100);
    /* Back to the client's lease: a member given entries now keeps them. */
    msm_consumer_set_lease(b.consumer, 0);
    msm_consumer_free(a.consumer);
    msm_consumer_free(b.consumer);
    fixture_close(&f);
}

/* Each record's batch stamp, by value (v<i>). */
typedef struct {
    msm_consumer_t *consumer;
    int64_t stamp[64];
    int seen;
} stamped_t;

static void on_stamped(msm_consumer_t *consumer, msm_stream_msg_t *const *msgs, size_t n,
                       void *opaque)
{
    stamped_t *st = opaque;
    for (size_t i = 0; i < n; i++) {
        int v = value_num(msgs[i]);
        if (v >= 0 && v < 64) {
            st->stamp[v] = msm_consumer_stamp(consumer);
            st->seen++;
        }
        msm_consumer_ack(consumer, msgs[i]);
    }
}

/* A batch's stamp is read after its records: a version set before a record was appended is
 * never newer than the stamp the record comes with, though the consumer was blocked in its
 * read (and so had asked before the version moved). */
static void test_stamp_read_after_records(void)
{
    fixture_t f;
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 30000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.stamp", 1), MSM_OK);
    stamped_t st = {0};
    char err[256] = "", key[128];
    st.consumer = msm_stream_consume(f.stream, "events.stamp", "g", "m", 10, 10, on_stamped, &st,
                                     err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(st.consumer);
    CU_ASSERT_EQUAL(msm_consumer_set_stamp(st.consumer, ""), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL_FATAL(msm_consumer_set_stamp(st.consumer, "ver"), MSM_OK);
    snprintf(key, sizeof(key), "%s:ver", f.ns);
    /* No key yet: stamp 0. */
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.stamp", 0, 1, 1), MSM_OK);
    for (int t = 0; t < 5000 && st.seen < 1; t += 10)
        msm_test_spin(f.loop, 10);
    CU_ASSERT_EQUAL_FATAL(st.seen, 1);
    CU_ASSERT_EQUAL(st.stamp[0], 0);
    for (int i = 1; i < 40; i++) {
        msm_test_spin(f.loop, 5); /* the consumer is blocked in its next read */
        char val[16];
        snprintf(val, sizeof(val), "%d", i * 10);
        freeReplyObject(msm_test_redis_query(&srv, "SET %s %s", key, val));
        CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.stamp", i, 1, 1), MSM_OK);
        for (int t = 0; t < 5000 && st.seen < i + 1; t += 1)
            msm_test_spin(f.loop, 1);
        CU_ASSERT_EQUAL_FATAL(st.seen, i + 1);
        CU_ASSERT_TRUE(st.stamp[i] >= i * 10);
    }
    msm_consumer_free(st.consumer);
    fixture_close(&f);
}

static void test_delete(void)
{
    fixture_t f;
    char key[256];
    CU_ASSERT_EQUAL_FATAL(fixture_open(&f, 5000, 30000), 0);
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.del", 3), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.del", 0, 30, 5), MSM_OK);
    collector_t c = {.ack = 1};
    CU_ASSERT_PTR_NOT_NULL_FATAL(consume(&f, "events.del", "m", &c));
    CU_ASSERT_EQUAL(wait_distinct(&f, &c, 30, 10000), 30);

    completion_t d = {0};
    CU_ASSERT_EQUAL_FATAL(msm_stream_delete(f.stream, "events.del", on_done, &d), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &d.done, 5000), 0);
    CU_ASSERT_EQUAL(d.err, MSM_OK);
    snprintf(key, sizeof(key), "%s:log:{events.del}:meta", f.ns);
    CU_ASSERT_EQUAL(peek_int("EXISTS %s", key), 0);
    /* The consumer lives on without re-creating anything, and appends find no stream. */
    CU_ASSERT_EQUAL(append_sync(&f, "events.del", 100, 5, 5), MSM_ERR_NOTFOUND);
    msm_test_spin(f.loop, 1500);
    for (int p = 0; p < 3; p++) {
        part_key_of(&f, "events.del", p, key, sizeof(key));
        CU_ASSERT_EQUAL(peek_int("EXISTS %s", key), 0);
    }
    /* Deleting what is not there is fine. */
    d = (completion_t){0};
    CU_ASSERT_EQUAL_FATAL(msm_stream_delete(f.stream, "events.del", on_done, &d), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &d.done, 5000), 0);
    CU_ASSERT_EQUAL(d.err, MSM_OK);

    /* Ensured again, the stream starts empty and the waiting consumer reads it. */
    CU_ASSERT_EQUAL_FATAL(ensure_sync(&f, "events.del", 3), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(append_sync(&f, "events.del", 100, 20, 5), MSM_OK);
    CU_ASSERT_EQUAL(wait_distinct(&f, &c, 50, 10000), 50);
    CU_ASSERT_EQUAL(c.total, 50);
    msm_consumer_free(c.consumer);
    fixture_close(&f);
}

static int suite_init(void)
{
    return msm_test_redis_start(&srv) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    msm_test_redis_destroy(&srv);
    return 0;
}

static CU_TestInfo tests[] = {
    {"key layout and partition by key", test_key_layout},
    {"append to a stream never ensured: NOTFOUND", test_unknown_stream},
    {"acknowledged appends survive kill -9", test_acked_append_survives_kill9},
    {"appends held while Redis is away", test_held_while_down},
    {"a restarted member resumes its own pending entries", test_member_resumes_own_pending},
    {"a consumer may start before its stream", test_consumer_before_stream},
    {"backlog: unknown stream, new group, unacknowledged", test_backlog_answers},
    {"trimmed behind the slowest group, exactly", test_trim_behind_slowest_group},
    {"redis_maxlen still caps partitions", test_maxlen_still_trims},
    {"a consumer's own lease decides when it takes others' entries", test_consumer_lease},
    {"delete: keys gone, appends NOTFOUND, consumers wait", test_delete},
    {"a batch's stamp is read after its records", test_stamp_read_after_records},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"stream.redis", suite_init, suite_clean, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
