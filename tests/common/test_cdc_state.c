/* SPDX-License-Identifier: MIT */
/* The CDC batch protocol push and pull share (msm/cdc_state.h), on each log backend:
 * `test_cdc_state redis|kafka` (state in a real redis-server; the log in it, or in
 * librdkafka's mock cluster). Claims exclude each other; a batch interrupted between its
 * append and its settle (a crash) is recovered from the log's marks before the next claim,
 * so none of its changes is published twice: Redis knows the whole batch is in, Kafka finds
 * which records are (a partial append included). */
#include "msm_test.h"
#include "msm/cdc_state.h"
#include "msm/err.h"
#include "msm/registry.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static msm_stream_backend_t backend;
static msm_test_redis_t redis_server;
static msm_test_kafka_t kafka_cluster;

#define APPEND_TIMEOUT_MS 400

typedef struct {
    char ns[64];
    msm_loop_t *loop;
    msm_redis_t *redis;
    msm_stream_t *log;
    msm_cdc_state_t *st;
} fx_t;

static int fx_open(fx_t *f)
{
    memset(f, 0, sizeof(*f));
    msm_test_namespace(f->ns, sizeof(f->ns));
    f->loop = msm_loop_new();
    char err[256];
    msm_redis_conf_t rc = {.url = redis_server.url, .ns = f->ns};
    f->redis = msm_redis_new(f->loop, &rc, err, sizeof(err));
    msm_stream_conf_t sc = {.backend = backend,
                            .redis_url = redis_server.url,
                            .kafka_brokers = kafka_cluster.bootstraps,
                            .name_prefix = f->ns,
                            .append_timeout_ms = 10000};
    f->log = msm_stream_new(f->loop, &sc, err, sizeof(err));
    f->st = f->redis && f->log ? msm_cdc_state_new(f->redis, f->log, APPEND_TIMEOUT_MS) : NULL;
    return f->st ? 0 : -1;
}

static void fx_close(fx_t *f)
{
    msm_cdc_state_free(f->st);
    msm_stream_free(f->log);
    msm_redis_free(f->redis);
    msm_loop_free(f->loop);
}

/* One command on @p f's key @p key ("<ns>:<key>"), with two more arguments. */
static void query(const fx_t *f, const char *cmd, const char *key, const char *a, const char *b)
{
    char k[256];
    snprintf(k, sizeof(k), "%s:%s", f->ns, key);
    redisReply *r = b ? msm_test_redis_query(&redis_server, "%s %s %s %s", cmd, k, a, b)
                      : msm_test_redis_query(&redis_server, "%s %s %s", cmd, k, a);
    if (r)
        freeReplyObject(r);
}

/* The source "db" on topic "files" with partitions p0 and p1, as the frontend stores it. */
static void source_put(fx_t *f)
{
    query(f, "HSET", "{registry}:cdc:sources", "db",
          "{\"name\":\"db\",\"topic\":\"files\",\"partitions\":[\"p0\",\"p1\"],"
          "\"poll_interval_ms\":1000,\"batch_size\":500}");
}

typedef struct {
    int done;
    msm_cdc_claim_t res;
    int64_t skip[64];
    char topic[64];
} claim_t;

static void on_claim(const msm_cdc_claim_t *res, void *opaque)
{
    claim_t *c = opaque;
    c->res = *res;
    c->res.source = NULL;
    c->res.reason = NULL;
    snprintf(c->topic, sizeof(c->topic), "%s", res->topic ? res->topic : "");
    c->res.topic = c->topic;
    for (size_t i = 0; i < res->nskip && i < 64; i++)
        c->skip[i] = res->skip[i];
    c->res.skip = c->skip;
    if (res->status < 0)
        fprintf(stderr, "claim: %s\n", res->reason);
    c->done = 1;
}

static int claim(fx_t *f,
                 const char *partition,
                 const char *token,
                 const char *member,
                 uint64_t lock_ms,
                 int64_t last,
                 claim_t *out)
{
    memset(out, 0, sizeof(*out));
    msm_cdc_claim_args_t a = {"db", partition, token, member, lock_ms, last};
    if (msm_cdc_claim(f->st, &a, on_claim, out) != MSM_OK)
        return -100;
    if (msm_test_wait_flag(f->loop, &out->done, 60000) != 0)
        return -101;
    return out->res.status;
}

typedef struct {
    int done, err, ours;
    int64_t cursor;
} settle_t;

static void on_settle(int err, const char *reason, int64_t cursor, int ours, void *opaque)
{
    (void)reason;
    settle_t *s = opaque;
    *s = (settle_t){1, err, ours, cursor};
}

static int64_t settle(
    fx_t *f, const char *partition, const char *token, msm_cdc_outcome_t o, int64_t to, int *ours)
{
    settle_t s = {0};
    if (msm_cdc_settle(f->st, "db", partition, token, o, to, on_settle, &s) != MSM_OK ||
        msm_test_wait_flag(f->loop, &s.done, 10000) != 0 || s.err != MSM_OK)
        return -1;
    if (ours)
        *ours = s.ours;
    return s.cursor;
}

typedef struct {
    int done;
    msm_err_t err;
} done_t;

static void on_done(msm_err_t err, const char *reason, void *opaque)
{
    (void)reason;
    done_t *d = opaque;
    d->done = 1;
    d->err = err;
}

static int ensure(fx_t *f)
{
    done_t d = {0};
    if (msm_stream_ensure(f->log, "events.files", 3, on_done, &d) != MSM_OK ||
        msm_test_wait_flag(f->loop, &d.done, 30000) != 0)
        return -1;
    return d.err;
}

/* Appends one record per sequence of @p seqs, marked as batch @p token of db/p0 would. */
static int append(fx_t *f, const char *token, const int64_t *seqs, size_t n)
{
    msm_record_t recs[64];
    char vals[64][16];
    for (size_t i = 0; i < n; i++) {
        snprintf(vals[i], sizeof(vals[i]), "v%" PRId64, seqs[i]);
        recs[i] = (msm_record_t){.key = vals[i],
                                 .key_len = strlen(vals[i]),
                                 .value = vals[i],
                                 .value_len = strlen(vals[i])};
    }
    char mark[128];
    msm_cdc_mark_name(mark, sizeof(mark), "db", "p0");
    msm_stream_mark_t m = {mark, token, seqs};
    done_t d = {0};
    if (msm_stream_append_marked(f->log, "events.files", recs, n, &m, on_done, &d) != MSM_OK ||
        msm_test_wait_flag(f->loop, &d.done, 30000) != 0)
        return -1;
    return d.err;
}

/* The partition's lock expires, then the intent's age passes the append timeout. */
static void let_expire(fx_t *f, uint64_t lock_ms)
{
    msm_test_spin(f->loop, lock_ms + APPEND_TIMEOUT_MS + 300);
}

static void test_claim_excludes(void)
{
    fx_t f;
    claim_t c;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f), 0);
    source_put(&f);
    CU_ASSERT_EQUAL(claim(&f, "p0", "t1", NULL, 5000, 10, &c), MSM_CDC_CLAIMED);
    CU_ASSERT_EQUAL(c.res.cursor, 0);
    CU_ASSERT_STRING_EQUAL(c.topic, "files");
    /* a second batch of the partition waits; the other partition is free */
    CU_ASSERT_EQUAL(claim(&f, "p0", "t2", NULL, 5000, 10, &c), MSM_CDC_BUSY);
    CU_ASSERT_TRUE(c.res.retry_ms > 0 && c.res.retry_ms <= 1000); /* batches are short */
    CU_ASSERT_EQUAL(claim(&f, "p1", "t3", NULL, 5000, 10, &c), MSM_CDC_CLAIMED);
    int ours = 0;
    CU_ASSERT_EQUAL(settle(&f, "p0", "t1", MSM_CDC_DURABLE, 10, &ours), 10);
    CU_ASSERT_TRUE(ours);
    CU_ASSERT_EQUAL(settle(&f, "p1", "t3", MSM_CDC_NOTHING, 10, &ours), 0);
    CU_ASSERT_TRUE(ours);
    /* a settle of a batch that is not the intent's moves nothing */
    CU_ASSERT_EQUAL(settle(&f, "p0", "t9", MSM_CDC_DURABLE, 99, &ours), 10);
    CU_ASSERT_FALSE(ours);
    CU_ASSERT_EQUAL(claim(&f, "p0", "t4", NULL, 5000, 20, &c), MSM_CDC_CLAIMED);
    CU_ASSERT_EQUAL(c.res.cursor, 10);
    CU_ASSERT_TRUE(msm_cdc_published(&c.res, 10));
    CU_ASSERT_FALSE(msm_cdc_published(&c.res, 11));
    settle(&f, "p0", "t4", MSM_CDC_NOTHING, 20, NULL);
    /* unknown source and partition; a lease that is someone else's */
    CU_ASSERT_EQUAL(claim(&f, "p7", "t5", NULL, 5000, 1, &c), MSM_CDC_NO_PARTITION);
    query(&f, "SET", "{registry}:cdc:db:lease:p0", "other", NULL);
    CU_ASSERT_EQUAL(claim(&f, "p0", "t6", "me", 5000, 1, &c), MSM_CDC_NOT_OWNER);
    query(&f, "SET", "{registry}:cdc:db:lease:p0", "me", NULL);
    CU_ASSERT_EQUAL(claim(&f, "p0", "t7", "me", 5000, 1, &c), MSM_CDC_CLAIMED);
    settle(&f, "p0", "t7", MSM_CDC_NOTHING, 1, NULL);
    query(&f, "HDEL", "{registry}:cdc:sources", "db", NULL);
    CU_ASSERT_EQUAL(claim(&f, "p0", "t8", NULL, 5000, 1, &c), MSM_CDC_NO_SOURCE);
    fx_close(&f);
}

/* A batch appended whole, whose appender died before the settle: the next claim recovers it
 * and none of its changes is published again. */
static void test_crash_after_append(void)
{
    fx_t f;
    claim_t c;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f), 0);
    source_put(&f);
    CU_ASSERT_EQUAL_FATAL(ensure(&f), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(claim(&f, "p0", "dead-1", NULL, 300, 20, &c), MSM_CDC_CLAIMED);
    int64_t seqs[10];
    for (int i = 0; i < 10; i++)
        seqs[i] = 11 + i;
    CU_ASSERT_EQUAL_FATAL(append(&f, "dead-1", seqs, 10), MSM_OK);
    /* ... and the appender dies: no settle. While its lock lives, and then while its append
     * could still be in flight, the partition waits. */
    CU_ASSERT_EQUAL(claim(&f, "p0", "next", NULL, 5000, 30, &c), MSM_CDC_BUSY);
    let_expire(&f, 300);
    CU_ASSERT_EQUAL_FATAL(claim(&f, "p0", "next", NULL, 5000, 30, &c), MSM_CDC_CLAIMED);
    CU_ASSERT_TRUE(c.res.recovered);
    for (int64_t s = 11; s <= 20; s++)
        CU_ASSERT_TRUE(msm_cdc_published(&c.res, s));
    CU_ASSERT_FALSE(msm_cdc_published(&c.res, 21));
    if (backend == MSM_STREAM_REDIS) { /* all or nothing: the cursor moved past it */
        CU_ASSERT_EQUAL(c.res.cursor, 20);
        CU_ASSERT_EQUAL(c.res.nskip, 0);
    } else { /* found record by record: kept as skip until the cursor passes them */
        CU_ASSERT_EQUAL(c.res.cursor, 0);
        CU_ASSERT_EQUAL(c.res.nskip, 10);
    }
    CU_ASSERT_EQUAL(settle(&f, "p0", "next", MSM_CDC_DURABLE, 30, NULL), 30);
    CU_ASSERT_EQUAL(claim(&f, "p0", "after", NULL, 5000, 40, &c), MSM_CDC_CLAIMED);
    CU_ASSERT_EQUAL(c.res.cursor, 30);
    CU_ASSERT_EQUAL(c.res.nskip, 0);
    CU_ASSERT_FALSE(c.res.recovered);
    settle(&f, "p0", "after", MSM_CDC_NOTHING, 40, NULL);
    fx_close(&f);
}

/* Died before its append, or its append failed (settled UNKNOWN): recovered as nothing. */
static void test_crash_before_append(void)
{
    fx_t f;
    claim_t c;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f), 0);
    source_put(&f);
    CU_ASSERT_EQUAL_FATAL(ensure(&f), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(claim(&f, "p0", "dead-2", NULL, 300, 50, &c), MSM_CDC_CLAIMED);
    let_expire(&f, 300);
    CU_ASSERT_EQUAL_FATAL(claim(&f, "p0", "next", NULL, 5000, 50, &c), MSM_CDC_CLAIMED);
    CU_ASSERT_TRUE(c.res.recovered);
    CU_ASSERT_EQUAL(c.res.cursor, 0);
    CU_ASSERT_EQUAL(c.res.nskip, 0);
    /* an append that failed may be in: its intent stays, the lock goes */
    int ours = 0;
    CU_ASSERT_EQUAL(settle(&f, "p0", "next", MSM_CDC_UNKNOWN, 50, &ours), 0);
    CU_ASSERT_TRUE(ours);
    CU_ASSERT_EQUAL(claim(&f, "p0", "again", NULL, 5000, 50, &c), MSM_CDC_BUSY);
    let_expire(&f, 0);
    CU_ASSERT_EQUAL(claim(&f, "p0", "again", NULL, 5000, 50, &c), MSM_CDC_CLAIMED);
    CU_ASSERT_TRUE(c.res.recovered);
    CU_ASSERT_EQUAL(c.res.cursor, 0);
    settle(&f, "p0", "again", MSM_CDC_NOTHING, 50, NULL);
    fx_close(&f);
}

/* Kafka: a batch over several partitions may be in partly. Only its records that are in are
 * skipped; the others go out with the next batch. (Redis appends are all or nothing.) */
static void test_partial_append(void)
{
    fx_t f;
    claim_t c;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f), 0);
    source_put(&f);
    CU_ASSERT_EQUAL_FATAL(ensure(&f), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(claim(&f, "p0", "dead-3", NULL, 300, 36, &c), MSM_CDC_CLAIMED);
    const int64_t in[] = {31, 33, 36}; /* of 31..36: the records that made it */
    CU_ASSERT_EQUAL_FATAL(append(&f, "dead-3", in, 3), MSM_OK);
    let_expire(&f, 300);
    CU_ASSERT_EQUAL_FATAL(claim(&f, "p0", "next", NULL, 5000, 36, &c), MSM_CDC_CLAIMED);
    CU_ASSERT_TRUE(c.res.recovered);
    if (backend == MSM_STREAM_REDIS) {
        /* a marked append on Redis is one script: this one was whole */
        CU_ASSERT_EQUAL(c.res.cursor, 36);
    } else {
        CU_ASSERT_EQUAL(c.res.cursor, 0);
        for (int64_t s = 31; s <= 36; s++)
            CU_ASSERT_EQUAL(msm_cdc_published(&c.res, s), s == 31 || s == 33 || s == 36);
    }
    /* the next batch publishes 32, 34, 35 (and above): then nothing is left to skip */
    CU_ASSERT_EQUAL(settle(&f, "p0", "next", MSM_CDC_DURABLE, 40, NULL), 40);
    CU_ASSERT_EQUAL(claim(&f, "p0", "after", NULL, 5000, 41, &c), MSM_CDC_CLAIMED);
    CU_ASSERT_EQUAL(c.res.cursor, 40);
    CU_ASSERT_EQUAL(c.res.nskip, 0);
    settle(&f, "p0", "after", MSM_CDC_NOTHING, 41, NULL);
    fx_close(&f);
}

static int suite_init(void)
{
    if (msm_test_redis_start(&redis_server) != 0)
        return -1;
    if (backend == MSM_STREAM_KAFKA && msm_test_kafka_start(&kafka_cluster, 3) != 0)
        return -1;
    return 0;
}

static int suite_clean(void)
{
    if (backend == MSM_STREAM_KAFKA)
        msm_test_kafka_stop(&kafka_cluster);
    msm_test_redis_destroy(&redis_server);
    return 0;
}

static CU_TestInfo tests[] = {
    {"claims exclude each other; settle moves the cursor", test_claim_excludes},
    {"crash after the append: recovered, nothing published twice", test_crash_after_append},
    {"crash before the append, or a failed append: recovered as nothing", test_crash_before_append},
    {"a partial append: only what is in is skipped", test_partial_append},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    const char *which = msm_test_backend_arg(argc, argv, &backend);
    if (!which)
        return 2;
    static char name[32];
    snprintf(name, sizeof(name), "cdc_state.%s", which);
    CU_SuiteInfo suites[] = {
        {name, suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
