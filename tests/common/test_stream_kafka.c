/* SPDX-License-Identifier: MIT */
/* The Kafka log driver against librdkafka's mock cluster: what the shared contract cannot
 * see — property pass-through, exactly-once batch callbacks under a full queue, a leader
 * down, commit of the contiguous acknowledged prefix, pause at max_unacked, backlog. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEASE_MS 1500

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- fixture: a mock cluster, a loop and a log client in a fresh namespace ---- */

typedef struct {
    msm_test_kafka_t k;
    msm_loop_t *loop;
    msm_stream_t *s;
    char ns[64];
} fx_t;

static msm_stream_t *fx_stream(fx_t *f, uint64_t append_timeout_ms, const char *const *props,
                               char *err, size_t errsz)
{
    msm_stream_conf_t conf = {0};
    conf.backend = MSM_STREAM_KAFKA;
    conf.kafka_brokers = f->k.bootstraps;
    conf.name_prefix = f->ns;
    conf.kafka_props = props;
    conf.lease_ms = LEASE_MS;
    conf.append_timeout_ms = append_timeout_ms;
    return msm_stream_new(f->loop, &conf, err, errsz);
}

static int fx_open(fx_t *f, int brokers, uint64_t append_timeout_ms, const char *const *props)
{
    memset(f, 0, sizeof(*f));
    msm_test_namespace(f->ns, sizeof(f->ns));
    if (msm_test_kafka_start(&f->k, brokers) != 0)
        return -1;
    f->loop = msm_loop_new();
    char err[256] = "";
    f->s = fx_stream(f, append_timeout_ms, props, err, sizeof(err));
    if (!f->s)
        fprintf(stderr, "msm_stream_new: %s\n", err);
    return f->s ? 0 : -1;
}

static void fx_close(fx_t *f)
{
    msm_stream_free(f->s);
    if (f->loop)
        msm_loop_free(f->loop);
    msm_test_kafka_stop(&f->k);
}

/* Creates "<ns>.<name>" in the mock cluster with an exact partition count (the mock of
 * librdkafka 2.0.2 has no CreateTopics: ensure() can only make it auto-create). */
static void fx_topic(fx_t *f, const char *name, int partitions, int replicas)
{
    char topic[256];
    snprintf(topic, sizeof(topic), "%s.%s", f->ns, name);
    CU_ASSERT_EQUAL(rd_kafka_mock_topic_create(f->k.mcluster, topic, partitions, replicas),
                    RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* ---- completions ---- */

typedef struct {
    int done, calls;
    msm_err_t err;
    char reason[256];
    uint64_t at;
} done_t;

static void on_done(msm_err_t err, const char *reason, void *opaque)
{
    done_t *d = opaque;
    d->calls++;
    d->done = 1;
    d->err = err;
    d->at = now_ms();
    snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
}

static int append_values(fx_t *f, const char *name, int first, int n, done_t *d)
{
    msm_record_t recs[64];
    char vals[64][16];
    for (int i = 0; i < n; i++) {
        snprintf(vals[i], sizeof(vals[i]), "v%d", first + i);
        recs[i] = (msm_record_t){.value = vals[i], .value_len = strlen(vals[i])};
    }
    memset(d, 0, sizeof(*d));
    return msm_stream_append(f->s, name, recs, (size_t)n, on_done, d);
}

static msm_err_t append_sync(fx_t *f, const char *name, int first, int n)
{
    done_t d;
    if (append_values(f, name, first, n, &d) != MSM_OK)
        return MSM_ERR_BACKEND;
    if (msm_test_wait_flag(f->loop, &d.done, 10000) != 0)
        return MSM_ERR_TIMEOUT;
    return d.err;
}

typedef struct {
    int done;
    msm_err_t err;
    int64_t backlog;
} backlog_t;

static void on_backlog(msm_err_t err, int64_t backlog, void *opaque)
{
    backlog_t *b = opaque;
    b->done = 1;
    b->err = err;
    b->backlog = backlog;
}

static int64_t backlog_once(fx_t *f, const char *name, const char *group, msm_err_t *err)
{
    backlog_t b = {0};
    *err = MSM_ERR_INVALID;
    if (msm_stream_backlog(f->s, name, group, on_backlog, &b) != MSM_OK)
        return -2;
    if (msm_test_wait_flag(f->loop, &b.done, 15000) != 0)
        return -3;
    *err = b.err;
    return b.backlog;
}

/* Polls until the backlog reads @p want: commits travel asynchronously. */
static int64_t backlog_wait(fx_t *f, const char *name, const char *group, int64_t want)
{
    uint64_t deadline = now_ms() + 8000;
    int64_t last;
    msm_err_t err;
    for (;;) {
        last = backlog_once(f, name, group, &err);
        if (last == want || now_ms() >= deadline)
            return last;
        msm_test_spin(f->loop, 50);
    }
}

/* ---- a consumer that keeps what it receives ---- */

typedef struct {
    msm_consumer_t *c;
    int autoack;
    size_t free_after; /* free the consumer from its callback after this many (0: never) */
    int freed;
    int n;
    int values[512];
    int64_t offsets[512];
    msm_stream_msg_t *held[512];
    int nheld;
    size_t max_unacked_seen;
    int over_limit;
    size_t limit;
} sink_t;

static int msg_value(const msm_stream_msg_t *m)
{
    char buf[16];
    size_t n = m->value_len < sizeof(buf) - 1 ? m->value_len : sizeof(buf) - 1;
    memcpy(buf, m->value, n);
    buf[n] = '\0';
    return buf[0] == 'v' ? atoi(buf + 1) : -1;
}

static void on_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    sink_t *k = opaque;
    CU_ASSERT_FALSE(k->freed);
    size_t un = msm_consumer_unacked(c);
    if (un > k->max_unacked_seen)
        k->max_unacked_seen = un;
    if (k->limit && un > k->limit)
        k->over_limit++;
    for (size_t i = 0; i < n; i++) {
        if (k->n < 512) {
            k->values[k->n] = msg_value(msgs[i]);
            k->offsets[k->n] = strtoll(msgs[i]->position, NULL, 10);
            k->n++;
        }
        if (k->autoack)
            msm_consumer_ack(c, msgs[i]);
        else if (k->nheld < 512)
            k->held[k->nheld++] = msgs[i];
    }
    if (k->free_after && (size_t)k->n >= k->free_after) {
        msm_consumer_free(c); /* from inside its own callback: must be deferred safely */
        k->freed = 1;
        k->c = NULL;
    }
}

static int sink_start(fx_t *f, sink_t *k, const char *name, const char *group, size_t max_batch,
                      size_t max_unacked)
{
    char err[256] = "";
    k->c = msm_stream_consume(f->s, name, group, "member", max_batch, max_unacked, on_batch, k,
                              err, sizeof(err));
    if (!k->c)
        fprintf(stderr, "consume: %s\n", err);
    return k->c ? 0 : -1;
}

static int sink_wait(fx_t *f, sink_t *k, int n, uint64_t timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    while (k->n < n && now_ms() < deadline)
        msm_loop_run_once(f->loop, 20);
    return k->n >= n ? 0 : -1;
}

/* Acks the held message at offset @p off. */
static void sink_ack_offset(sink_t *k, int64_t off)
{
    for (int i = 0; i < k->nheld; i++) {
        if (k->held[i] && strtoll(k->held[i]->position, NULL, 10) == off) {
            msm_consumer_ack(k->c, k->held[i]);
            k->held[i] = NULL;
            return;
        }
    }
    CU_FAIL("no held message at that offset");
}

/* ---- tests ---- */

static void test_bad_property_named(void)
{
    fx_t f;
    memset(&f, 0, sizeof(f));
    CU_ASSERT_EQUAL_FATAL(msm_test_kafka_start(&f.k, 1), 0);
    f.loop = msm_loop_new();
    msm_test_namespace(f.ns, sizeof(f.ns));
    char err[256] = "";
    const char *const bad[] = {"linger.ms=1", "no.such.property=3", NULL};
    CU_ASSERT_PTR_NULL(fx_stream(&f, 1000, bad, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no.such.property"));
    const char *const noeq[] = {"linger.ms", NULL};
    CU_ASSERT_PTR_NULL(fx_stream(&f, 1000, noeq, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "key=value"));
    const char *const good[] = {"linger.ms=1", NULL};
    f.s = fx_stream(&f, 1000, good, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(f.s);
    CU_ASSERT_STRING_EQUAL(msm_stream_backend_name(f.s), "kafka");
    fx_close(&f);
}

static void test_ensure_twice_and_durable_append(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, NULL), 0);
    done_t a = {0}, b = {0};
    CU_ASSERT_EQUAL(msm_stream_ensure(f.s, "events.e", 2, on_done, &a), MSM_OK);
    CU_ASSERT_EQUAL(msm_stream_ensure(f.s, "events.e", 2, on_done, &b), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &a.done, 10000), 0);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &b.done, 10000), 0);
    CU_ASSERT_EQUAL(a.err, MSM_OK);
    CU_ASSERT_EQUAL(b.err, MSM_OK);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_EQUAL(b.calls, 1);

    /* Durable: the records are in the log, as the watermarks a new group sees prove. */
    done_t d;
    CU_ASSERT_EQUAL(append_values(&f, "events.e", 0, 5, &d), MSM_OK);
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.s), 1);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &d.done, 10000), 0);
    CU_ASSERT_EQUAL(d.err, MSM_OK);
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.s), 0);
    msm_err_t err;
    CU_ASSERT_EQUAL(backlog_once(&f, "events.e", "fresh", &err), 5);
    CU_ASSERT_EQUAL(err, MSM_OK);
    /* A stream that was never created has no backlog. */
    backlog_once(&f, "events.never", "fresh", &err);
    CU_ASSERT_EQUAL(err, MSM_ERR_NOTFOUND);
    msm_test_spin(f.loop, 100);
    CU_ASSERT_EQUAL(d.calls, 1);
    fx_close(&f);
}

static void test_queue_full_single_callback(void)
{
    const char *const props[] = {"queue.buffering.max.messages=3", NULL};
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, props), 0);
    fx_topic(&f, "events.q", 1, 1);
    done_t a, b;
    /* Three records fit, the fourth does not: one callback, after the three reports. */
    CU_ASSERT_EQUAL(append_values(&f, "events.q", 0, 10, &a), MSM_OK);
    /* Nothing fits now: the append fails at once and never calls back. */
    CU_ASSERT_NOT_EQUAL(append_values(&f, "events.q", 10, 1, &b), MSM_OK);
    CU_ASSERT_EQUAL(a.calls, 0);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &a.done, 10000), 0);
    CU_ASSERT_NOT_EQUAL(a.err, MSM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.reason, "ueue"));
    msm_test_spin(f.loop, 200);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_EQUAL(b.calls, 0);
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.s), 0);
    /* The three that were produced are in the log. */
    msm_err_t err;
    CU_ASSERT_EQUAL(backlog_once(&f, "events.q", "g", &err), 3);
    fx_close(&f);
}

static void test_leader_down(void)
{
    const char *const props[] = {"reconnect.backoff.ms=20", "reconnect.backoff.max.ms=200", NULL};
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 3, 1500, props), 0);
    char topic[256];
    snprintf(topic, sizeof(topic), "%s.events.down", f.ns);
    fx_topic(&f, "events.down", 1, 3);
    CU_ASSERT_EQUAL(rd_kafka_mock_partition_set_leader(f.k.mcluster, topic, 0, 2), 0);
    CU_ASSERT_EQUAL(append_sync(&f, "events.down", 0, 3), MSM_OK);

    /* Leader down for longer than append_timeout_ms: the append must fail, with a reason. */
    rd_kafka_mock_broker_set_down(f.k.mcluster, 2);
    done_t lost;
    uint64_t t0 = now_ms();
    CU_ASSERT_EQUAL(append_values(&f, "events.down", 3, 2, &lost), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &lost.done, 6000), 0);
    CU_ASSERT_NOT_EQUAL(lost.err, MSM_OK); /* success while unreadable would be a lie */
    CU_ASSERT_TRUE(lost.reason[0] != '\0');
    CU_ASSERT_TRUE(now_ms() - t0 >= 1000);

    /* Leader back within the timeout: the append may still complete, after recovery. */
    done_t late;
    CU_ASSERT_EQUAL(append_values(&f, "events.down", 5, 2, &late), MSM_OK);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_FALSE(late.done && late.err == MSM_OK);
    uint64_t up = now_ms();
    rd_kafka_mock_broker_set_up(f.k.mcluster, 2);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &late.done, 6000), 0);
    if (late.err == MSM_OK)
        CU_ASSERT_TRUE(late.at >= up);
    CU_ASSERT_EQUAL(append_sync(&f, "events.down", 7, 1), MSM_OK);

    /* Every record reported durable is consumable. */
    sink_t k = {.autoack = 1};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &k, "events.down", "g", 50, 100), 0);
    int want[8] = {1, 1, 1, 0, 0, late.err == MSM_OK, late.err == MSM_OK, 1};
    int nwant = 4 + 2 * (late.err == MSM_OK);
    uint64_t deadline = now_ms() + 15000;
    int have = 0;
    while (now_ms() < deadline) {
        int seen[8] = {0};
        have = 0;
        for (int i = 0; i < k.n; i++)
            if (k.values[i] >= 0 && k.values[i] < 8 && want[k.values[i]] && !seen[k.values[i]]++)
                have++;
        if (have == nwant)
            break;
        msm_loop_run_once(f.loop, 20);
    }
    CU_ASSERT_EQUAL(have, nwant);
    msm_consumer_free(k.c);
    fx_close(&f);
}

static void test_out_of_order_acks_commit_prefix(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, NULL), 0);
    fx_topic(&f, "events.ooo", 1, 1);
    CU_ASSERT_EQUAL(append_sync(&f, "events.ooo", 0, 10), MSM_OK);
    sink_t a = {0};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &a, "events.ooo", "g", 10, 100), 0);
    CU_ASSERT_EQUAL_FATAL(sink_wait(&f, &a, 10, 15000), 0);
    CU_ASSERT_EQUAL(msm_consumer_unacked(a.c), 10);

    /* 5 and 6 first: nothing is committable while 0..4 are out. */
    sink_ack_offset(&a, 5);
    sink_ack_offset(&a, 6);
    msm_test_spin(f.loop, 300);
    msm_err_t err;
    CU_ASSERT_EQUAL(backlog_once(&f, "events.ooo", "g", &err), 10);
    /* 2, 0, 1: the prefix 0..2 is committable. */
    sink_ack_offset(&a, 2);
    sink_ack_offset(&a, 0);
    sink_ack_offset(&a, 1);
    CU_ASSERT_EQUAL(backlog_wait(&f, "events.ooo", "g", 7), 7);
    /* 4, 3: the prefix jumps over 5 and 6, acked earlier, to 7. */
    sink_ack_offset(&a, 4);
    sink_ack_offset(&a, 3);
    CU_ASSERT_EQUAL(backlog_wait(&f, "events.ooo", "g", 3), 3);
    CU_ASSERT_EQUAL(msm_consumer_unacked(a.c), 3);

    /* A leaves without acking 7..9; a fresh member gets exactly those. */
    msm_consumer_free(a.c);
    sink_t b = {.free_after = 3};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &b, "events.ooo", "g", 10, 100), 0);
    CU_ASSERT_EQUAL(sink_wait(&f, &b, 3, 15000), 0);
    CU_ASSERT_TRUE(b.freed);
    CU_ASSERT_EQUAL(b.n, 3);
    for (int i = 0; i < b.n && i < 3; i++)
        CU_ASSERT_EQUAL(b.offsets[i], 7 + i);
    msm_test_spin(f.loop, 100);
    CU_ASSERT_EQUAL(b.n, 3);
    /* The freed member acknowledged nothing. */
    CU_ASSERT_EQUAL(backlog_once(&f, "events.ooo", "g", &err), 3);
    fx_close(&f);
}

static void test_pause_resume_at_max_unacked(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, NULL), 0);
    fx_topic(&f, "events.flow", 1, 1);
    CU_ASSERT_EQUAL(append_sync(&f, "events.flow", 0, 40), MSM_OK);
    sink_t k = {.limit = 5};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &k, "events.flow", "g", 2, 5), 0);
    CU_ASSERT_EQUAL_FATAL(sink_wait(&f, &k, 5, 15000), 0);
    msm_test_spin(f.loop, 500);
    CU_ASSERT_EQUAL(k.n, 5); /* held: nothing more while 5 are out */
    CU_ASSERT_EQUAL(msm_consumer_unacked(k.c), 5);
    sink_ack_offset(&k, 0);
    CU_ASSERT_EQUAL(sink_wait(&f, &k, 6, 3000), 0);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL(k.n, 6);
    /* Ack everything from now on: all 40 arrive, in order, each once. */
    for (int i = 0; i < k.nheld; i++)
        if (k.held[i])
            msm_consumer_ack(k.c, k.held[i]);
    k.nheld = 0;
    k.autoack = 1;
    CU_ASSERT_EQUAL(sink_wait(&f, &k, 40, 15000), 0);
    msm_test_spin(f.loop, 200);
    CU_ASSERT_EQUAL(k.n, 40);
    for (int i = 0; i < k.n; i++)
        CU_ASSERT_EQUAL(k.offsets[i], i);
    CU_ASSERT_EQUAL(k.over_limit, 0);
    CU_ASSERT_TRUE(k.max_unacked_seen <= 5);
    CU_ASSERT_EQUAL(backlog_wait(&f, "events.flow", "g", 0), 0);
    msm_consumer_free(k.c);
    fx_close(&f);
}

static void test_two_groups_and_backlog(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 3, 5000, NULL), 0);
    fx_topic(&f, "events.fan", 3, 3);
    /* Keyed records: each key stays on one partition, in order. */
    msm_record_t recs[30];
    char keys[30][8], vals[30][8];
    for (int i = 0; i < 30; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i % 4);
        snprintf(vals[i], sizeof(vals[i]), "v%d", i);
        recs[i] = (msm_record_t){keys[i], strlen(keys[i]), vals[i], strlen(vals[i])};
    }
    done_t d;
    CU_ASSERT_EQUAL(msm_stream_append(f.s, "events.fan", recs, 30, on_done, &d), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &d.done, 10000), 0);
    CU_ASSERT_EQUAL(d.err, MSM_OK);
    msm_err_t err;
    CU_ASSERT_EQUAL(backlog_once(&f, "events.fan", "g1", &err), 30);
    CU_ASSERT_EQUAL(backlog_once(&f, "events.fan", "g2", &err), 30);

    sink_t g1 = {.autoack = 1}, g2 = {0};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &g1, "events.fan", "g1", 8, 100), 0);
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &g2, "events.fan", "g2", 8, 100), 0);
    CU_ASSERT_EQUAL(sink_wait(&f, &g1, 30, 15000), 0);
    CU_ASSERT_EQUAL(sink_wait(&f, &g2, 30, 15000), 0);
    int last[4] = {-1, -1, -1, -1}, order_ok = 1;
    for (int i = 0; i < g1.n; i++) {
        int v = g1.values[i];
        order_ok &= v > last[v % 4];
        last[v % 4] = v;
    }
    CU_ASSERT_TRUE(order_ok);
    CU_ASSERT_EQUAL(backlog_wait(&f, "events.fan", "g1", 0), 0);
    /* g2 holds everything: its backlog counts down as its acks are committed. */
    CU_ASSERT_EQUAL(backlog_once(&f, "events.fan", "g2", &err), 30);
    int acked = 0;
    for (int i = 0; i < g2.nheld; i++) {
        if (g2.values[i] % 4 == 0) { /* all of key k0, so whole prefixes of one partition */
            msm_consumer_ack(g2.c, g2.held[i]);
            g2.held[i] = NULL;
            acked++;
        }
    }
    CU_ASSERT_EQUAL(backlog_wait(&f, "events.fan", "g2", 30 - acked), 30 - acked);
    for (int i = 0; i < g2.nheld; i++)
        if (g2.held[i])
            msm_consumer_ack(g2.c, g2.held[i]);
    CU_ASSERT_EQUAL(backlog_wait(&f, "events.fan", "g2", 0), 0);
    msm_consumer_free(g1.c);
    msm_consumer_free(g2.c);
    fx_close(&f);
}

static void test_free_with_pending_append(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, NULL), 0);
    fx_topic(&f, "events.bye", 1, 1);
    CU_ASSERT_EQUAL(append_sync(&f, "events.bye", 0, 1), MSM_OK);
    rd_kafka_mock_broker_set_down(f.k.mcluster, 1);
    done_t d;
    CU_ASSERT_EQUAL(append_values(&f, "events.bye", 1, 3, &d), MSM_OK);
    msm_test_spin(f.loop, 100);
    CU_ASSERT_EQUAL(d.calls, 0);
    uint64_t t0 = now_ms();
    msm_stream_free(f.s);
    f.s = NULL;
    CU_ASSERT_EQUAL(d.calls, 1);
    CU_ASSERT_EQUAL(d.err, MSM_ERR_SHUTDOWN);
    CU_ASSERT_TRUE(now_ms() - t0 < 3000);
    fx_close(&f);
}

int main(void)
{
    msm_log_setup("test_stream_kafka", MSM_LOG_WARN, MSM_LOG_LOGFMT, NULL);
    static CU_TestInfo tests[] = {
        {"bad property named in the error", test_bad_property_named},
        {"ensure twice, durable append, backlog", test_ensure_twice_and_durable_append},
        {"queue full: one callback after the last report", test_queue_full_single_callback},
        {"leader down: never false success", test_leader_down},
        {"out-of-order acks commit only the prefix", test_out_of_order_acks_commit_prefix},
        {"pause and resume at max_unacked", test_pause_resume_at_max_unacked},
        {"two groups, backlog counts down", test_two_groups_and_backlog},
        {"free with a pending append: SHUTDOWN", test_free_with_pending_append},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"stream_kafka", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
