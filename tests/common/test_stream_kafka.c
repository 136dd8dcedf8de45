/* SPDX-License-Identifier: MIT */
/* The Kafka log driver against librdkafka's mock cluster: what the shared contract cannot
 * see. Property handling, a batch callback that waits for the last broker acknowledgement
 * and fires once, append timeouts, commits that never pass an unacknowledged record (read
 * back as the group's committed offsets), flow control at max_unacked, rebalances, a
 * backlog query that does not block the loop, and every callback on the loop's thread. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/stream.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LEASE_MS    1500
#define MAX_SEEN    512
#define API_PRODUCE 0 /* Kafka protocol ApiKey of ProduceRequest */

static pthread_t loop_thread;

/* The mock cluster holds a rebalance for the session timeout less a second after a member
 * leaves; the driver's floor (6 s, real brokers' minimum) is lowered here to keep the suite
 * short. (Producer handles log that they ignore it.) */
static const char *const group_props[] = {"session.timeout.ms=3500", NULL};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Every callback of the driver must run on the thread that runs the loop. */
static void assert_loop_thread(void)
{
    CU_ASSERT_TRUE(pthread_equal(pthread_self(), loop_thread));
}

/* ---- fixture: a mock cluster, a loop and a log client in a fresh namespace ---- */

typedef struct {
    msm_test_kafka_t k;
    msm_loop_t *loop;
    msm_stream_t *s;
    char ns[64];
} fx_t;

static msm_stream_t *
fx_stream(fx_t *f, uint64_t append_timeout_ms, const char *const *props, char *err, size_t errsz)
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

static void fx_topic_name(const fx_t *f, const char *stream, char *out, size_t n)
{
    snprintf(out, n, "%s.%s", f->ns, stream);
}

/* Creates the stream's topic in the mock cluster with an exact partition count (the mock of
 * librdkafka 2.0.x has no CreateTopics: ensure() can only make it auto-create). */
static void fx_topic(fx_t *f, const char *stream, int partitions, int replicas)
{
    char topic[256];
    fx_topic_name(f, stream, topic, sizeof(topic));
    CU_ASSERT_EQUAL(rd_kafka_mock_topic_create(f->k.mcluster, topic, partitions, replicas),
                    RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* A librdkafka consumer handle of our own on the mock cluster, to read what the driver
 * left in the broker. @p group may be NULL. */
static rd_kafka_t *probe_new(fx_t *f, const char *group)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", f->k.bootstraps, err, sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group ? group : "probe", err, sizeof(err));
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(rk);
    return rk;
}

/* The group's committed offset for one partition of a stream (-1001 = none), read from the
 * broker. The Kafka group of msm group G on stream S is "<prefix>.<S>:<G>". */
static int64_t committed(fx_t *f, const char *stream, const char *group, int32_t partition)
{
    char topic[256], gid[320];
    fx_topic_name(f, stream, topic, sizeof(topic));
    snprintf(gid, sizeof(gid), "%s:%s", topic, group);
    rd_kafka_t *rk = probe_new(f, gid);
    if (!rk)
        return -2;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    int64_t off = -2;
    if (rd_kafka_committed(rk, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && !l->elems[0].err)
        off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return off;
}

/* Spins the loop until the committed offset reads @p want; returns the last read. */
static int64_t
committed_wait(fx_t *f, const char *stream, const char *group, int32_t partition, int64_t want)
{
    uint64_t deadline = now_ms() + 5000;
    int64_t got;
    for (;;) {
        got = committed(f, stream, group, partition);
        if (got == want || now_ms() >= deadline)
            return got;
        msm_test_spin(f->loop, 50);
    }
}

/* The partition's high watermark: how many records the log holds. */
static int64_t high_watermark(fx_t *f, const char *stream, int32_t partition)
{
    char topic[256];
    fx_topic_name(f, stream, topic, sizeof(topic));
    rd_kafka_t *rk = probe_new(f, NULL);
    int64_t lo = -1, hi = -1;
    if (rk && rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, 5000) != 0)
        hi = -1;
    if (rk)
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return hi;
}

/* Reads every record of one partition, up to its high watermark, with a consumer of our own
 * outside any group; stores the values ("v<n>" -> n). @returns how many, or -1. */
static int read_partition(fx_t *f, const char *stream, int32_t partition, int *values, int max)
{
    char topic[256];
    fx_topic_name(f, stream, topic, sizeof(topic));
    int64_t hw = high_watermark(f, stream, partition);
    rd_kafka_t *rk = probe_new(f, NULL);
    if (hw < 0 || !rk)
        return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0;
    uint64_t deadline = now_ms() + 10000;
    for (int64_t next = 0; next < hw && now_ms() < deadline;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            char buf[16] = "";
            snprintf(buf, sizeof(buf), "%.*s", (int)(m->len < 15 ? m->len : 15),
                     (const char *)m->payload);
            if (n < max)
                values[n++] = buf[0] == 'v' ? atoi(buf + 1) : -1;
            next = m->offset + 1;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return n;
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
    assert_loop_thread();
    d->calls++;
    d->done = 1;
    d->err = err;
    d->at = now_ms();
    snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
}

/* Appends values "v<first>".."v<first+n-1>"; keyed "k<i % nkeys>" when nkeys > 0. */
static int append_values(fx_t *f, const char *name, int first, int n, int nkeys, done_t *d)
{
    msm_record_t recs[64];
    char vals[64][16], keys[64][16];
    for (int i = 0; i < n && i < 64; i++) {
        snprintf(vals[i], sizeof(vals[i]), "v%d", first + i);
        snprintf(keys[i], sizeof(keys[i]), "k%d", nkeys > 0 ? (first + i) % nkeys : 0);
        recs[i] = (msm_record_t){.value = vals[i], .value_len = strlen(vals[i])};
        if (nkeys > 0) {
            recs[i].key = keys[i];
            recs[i].key_len = strlen(keys[i]);
        }
    }
    memset(d, 0, sizeof(*d));
    return msm_stream_append(f->s, name, recs, (size_t)n, on_done, d);
}

static msm_err_t append_sync(fx_t *f, const char *name, int first, int n, int nkeys)
{
    done_t d;
    if (append_values(f, name, first, n, nkeys, &d) != MSM_OK)
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
    assert_loop_thread();
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
    int values[MAX_SEEN];
    int32_t partitions[MAX_SEEN];
    int64_t offsets[MAX_SEEN];
    uint32_t redelivered[MAX_SEEN];
    msm_stream_msg_t *held[MAX_SEEN];
    int nheld;
    size_t max_batch_seen;
    size_t max_unacked_seen;
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
    assert_loop_thread();
    CU_ASSERT_FALSE(k->freed);
    CU_ASSERT_EQUAL(msm_consumer_stamp(c), -1);
    if (n > k->max_batch_seen)
        k->max_batch_seen = n;
    size_t un = msm_consumer_unacked(c);
    if (un > k->max_unacked_seen)
        k->max_unacked_seen = un;
    for (size_t i = 0; i < n; i++) {
        if (k->n < MAX_SEEN) {
            k->values[k->n] = msg_value(msgs[i]);
            k->partitions[k->n] = msgs[i]->partition;
            k->offsets[k->n] = strtoll(msgs[i]->position, NULL, 10);
            k->redelivered[k->n] = msgs[i]->redelivered;
            k->n++;
        }
        if (k->autoack)
            msm_consumer_ack(c, msgs[i]);
        else if (k->nheld < MAX_SEEN)
            k->held[k->nheld++] = msgs[i];
    }
    if (k->free_after && (size_t)k->n >= k->free_after) {
        msm_consumer_free(c); /* from inside its own callback: must be deferred safely */
        k->freed = 1;
        k->c = NULL;
    }
}

static int sink_start(fx_t *f,
                      sink_t *k,
                      const char *name,
                      const char *group,
                      const char *member,
                      size_t max_batch,
                      size_t max_unacked)
{
    char err[256] = "";
    k->c = msm_stream_consume(f->s, name, group, member, max_batch, max_unacked, on_batch, k, err,
                              sizeof(err));
    if (!k->c)
        fprintf(stderr, "consume: %s\n", err);
    else /* Kafka has no stamps: asking is refused, every batch has none (on_batch) */
        CU_ASSERT_EQUAL(msm_consumer_set_stamp(k->c, "registry:version"), MSM_ERR_INVALID);
    return k->c ? 0 : -1;
}

static int sink_wait(fx_t *f, sink_t *k, int n, uint64_t timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    while (k->n < n && now_ms() < deadline)
        msm_loop_run_once(f->loop, 20);
    return k->n >= n ? 0 : -1;
}

/* Acks the held message of @p partition at offset @p off. */
static void sink_ack(sink_t *k, int32_t partition, int64_t off)
{
    for (int i = 0; i < k->nheld; i++) {
        msm_stream_msg_t *m = k->held[i];
        if (m && m->partition == partition && strtoll(m->position, NULL, 10) == off) {
            msm_consumer_ack(k->c, m);
            k->held[i] = NULL;
            return;
        }
    }
    CU_FAIL("no held message at that offset");
}

static void sink_ack_all(sink_t *k)
{
    for (int i = 0; i < k->nheld; i++)
        if (k->held[i])
            msm_consumer_ack(k->c, k->held[i]);
    k->nheld = 0;
}

/* ---- tests ---- */

static void test_properties(void)
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
    /* What the guarantees rest on cannot be weakened through the pass-through. */
    const char *const fixed[][2] = {{"acks=1", "acks"},
                                    {"enable.idempotence=false", "enable.idempotence"},
                                    {"enable.auto.commit=true", "enable.auto.commit"},
                                    {"message.timeout.ms=600000", "message.timeout.ms"}};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        const char *const props[] = {fixed[i][0], NULL};
        err[0] = '\0';
        CU_ASSERT_PTR_NULL(fx_stream(&f, 1000, props, err, sizeof(err)));
        CU_ASSERT_PTR_NOT_NULL(strstr(err, fixed[i][1]));
    }
    const char *const good[] = {"linger.ms=1", NULL};
    f.s = fx_stream(&f, 1000, good, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(f.s);
    CU_ASSERT_STRING_EQUAL(msm_stream_backend_name(f.s), "kafka");
    fx_close(&f);
}

static void test_ensure_durable_append_backlog(void)
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

    /* Durable: once the callback says so, the broker's watermark counts the records. */
    done_t d;
    CU_ASSERT_EQUAL(append_values(&f, "events.e", 0, 5, 0, &d), MSM_OK);
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.s), 1);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &d.done, 10000), 0);
    CU_ASSERT_EQUAL(d.err, MSM_OK);
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.s), 0);
    int64_t sum = 0;
    for (int32_t p = 0; p < 4; p++) { /* the mock auto-creates with its default count, 4 */
        int64_t hw = high_watermark(&f, "events.e", p);
        sum += hw > 0 ? hw : 0;
    }
    CU_ASSERT_EQUAL(sum, 5);
    msm_err_t err;
    CU_ASSERT_EQUAL(backlog_once(&f, "events.e", "fresh", &err), 5);
    CU_ASSERT_EQUAL(err, MSM_OK);
    /* A stream that does not exist has no backlog. (The mock cluster auto-creates every topic
     * a metadata request names; a topic error stands in for a broker that does not.) */
    char never[256];
    fx_topic_name(&f, "events.never", never, sizeof(never));
    rd_kafka_mock_topic_set_error(f.k.mcluster, never, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
    CU_ASSERT_EQUAL(backlog_once(&f, "events.never", "fresh", &err), -1);
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
    CU_ASSERT_EQUAL(append_values(&f, "events.q", 0, 10, 0, &a), MSM_OK);
    /* Nothing fits now: the append fails at once and never calls back. */
    CU_ASSERT_NOT_EQUAL(append_values(&f, "events.q", 10, 1, 0, &b), MSM_OK);
    CU_ASSERT_EQUAL(a.calls, 0);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &a.done, 10000), 0);
    CU_ASSERT_NOT_EQUAL(a.err, MSM_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.reason, "ueue"));
    msm_test_spin(f.loop, 200);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_EQUAL(b.calls, 0);
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.s), 0);
    /* The callback came only once the three produced records were in the log. */
    CU_ASSERT_EQUAL(high_watermark(&f, "events.q", 0), 3);
    fx_close(&f);
}

static void test_callback_waits_for_every_partition(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 2, 10000, NULL), 0);
    char topic[256];
    fx_topic_name(&f, "events.slow", topic, sizeof(topic));
    fx_topic(&f, "events.slow", 2, 1);
    CU_ASSERT_EQUAL(rd_kafka_mock_partition_set_leader(f.k.mcluster, topic, 0, 1), 0);
    CU_ASSERT_EQUAL(rd_kafka_mock_partition_set_leader(f.k.mcluster, topic, 1, 2), 0);
    /* 40 keys: where does each go? The first record of the next batch has key k0. */
    CU_ASSERT_EQUAL(append_sync(&f, "events.slow", 0, 40, 40), MSM_OK);
    int values[64];
    int n0 = read_partition(&f, "events.slow", 0, values, 64);
    int64_t n1 = high_watermark(&f, "events.slow", 1);
    CU_ASSERT_TRUE_FATAL(n0 > 0 && n1 > 0); /* both partitions take some keys */
    int k0_on_0 = 0;
    for (int i = 0; i < n0; i++)
        k0_on_0 |= values[i] == 0;

    /* The leader of the partition k0 is NOT on answers 1.5 s late: the first reports come
     * at once, the batch is durable only with the last. */
    int32_t slow = k0_on_0 ? 2 : 1;
    CU_ASSERT_EQUAL(rd_kafka_mock_broker_set_rtt(f.k.mcluster, slow, 1500), 0);
    done_t d;
    uint64_t t0 = now_ms();
    CU_ASSERT_EQUAL(append_values(&f, "events.slow", 40, 40, 40, &d), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &d.done, 10000), 0);
    CU_ASSERT_EQUAL(d.err, MSM_OK);
    CU_ASSERT_TRUE(d.at - t0 >= 1400);
    CU_ASSERT_EQUAL(msm_stream_pending_appends(f.s), 0);
    CU_ASSERT_EQUAL(rd_kafka_mock_broker_set_rtt(f.k.mcluster, slow, 0), 0);
    int64_t total = high_watermark(&f, "events.slow", 0) + high_watermark(&f, "events.slow", 1);
    CU_ASSERT_EQUAL(total, 80);
    msm_test_spin(f.loop, 100);
    CU_ASSERT_EQUAL(d.calls, 1);
    fx_close(&f);
}

static void test_leader_down_times_out(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 3, 1500, NULL), 0);
    char topic[256];
    fx_topic_name(&f, "events.down", topic, sizeof(topic));
    fx_topic(&f, "events.down", 1, 3);
    CU_ASSERT_EQUAL(rd_kafka_mock_partition_set_leader(f.k.mcluster, topic, 0, 2), 0);
    CU_ASSERT_EQUAL(append_sync(&f, "events.down", 0, 3, 0), MSM_OK);

    /* Leader down for longer than append_timeout_ms: the append fails with TIMEOUT, about
     * when the timeout says (librdkafka scans for expired records once a second). */
    rd_kafka_mock_broker_set_down(f.k.mcluster, 2);
    done_t lost;
    uint64_t t0 = now_ms();
    CU_ASSERT_EQUAL(append_values(&f, "events.down", 3, 2, 0, &lost), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &lost.done, 6000), 0);
    CU_ASSERT_EQUAL(lost.err, MSM_ERR_TIMEOUT);
    CU_ASSERT_TRUE(lost.reason[0] != '\0');
    CU_ASSERT_TRUE(lost.at - t0 >= 1400);
    CU_ASSERT_TRUE(lost.at - t0 <= 1500 + 2500);

    /* Leader back within the timeout: the append may complete, but only after recovery. */
    done_t late;
    CU_ASSERT_EQUAL(append_values(&f, "events.down", 5, 2, 0, &late), MSM_OK);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_FALSE(late.done && late.err == MSM_OK);
    uint64_t up = now_ms();
    rd_kafka_mock_broker_set_up(f.k.mcluster, 2);
    CU_ASSERT_EQUAL(msm_test_wait_flag(f.loop, &late.done, 6000), 0);
    if (late.err == MSM_OK)
        CU_ASSERT_TRUE(late.at >= up);
    CU_ASSERT_EQUAL(append_sync(&f, "events.down", 7, 1, 0), MSM_OK);

    /* Every record reported durable is in the log, once (idempotent retries); a failed
     * one may be there too (a failure means "not known durable", not "absent"). */
    int values[64], count[8] = {0};
    int n = read_partition(&f, "events.down", 0, values, 64);
    CU_ASSERT_TRUE(n >= 4);
    for (int i = 0; i < n; i++)
        if (values[i] >= 0 && values[i] < 8)
            count[values[i]]++;
    int durable[8] = {1, 1, 1, 0, 0, late.err == MSM_OK, late.err == MSM_OK, 1};
    for (int v = 0; v < 8; v++) {
        if (durable[v])
            CU_ASSERT_EQUAL(count[v], 1);
        CU_ASSERT_TRUE(count[v] <= 1);
    }
    fx_close(&f);
}

static void test_commit_never_passes_unacked(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, group_props), 0);
    fx_topic(&f, "events.ooo", 1, 1);
    CU_ASSERT_EQUAL(append_sync(&f, "events.ooo", 0, 10, 0), MSM_OK);
    sink_t a = {0};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &a, "events.ooo", "g", "a", 10, 100), 0);
    CU_ASSERT_EQUAL_FATAL(sink_wait(&f, &a, 10, 15000), 0);
    CU_ASSERT_EQUAL(msm_consumer_unacked(a.c), 10);

    /* 5 and 6 first: nothing is committable while 0..4 are out. */
    sink_ack(&a, 0, 5);
    sink_ack(&a, 0, 6);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_TRUE(committed(&f, "events.ooo", "g", 0) < 0);
    /* 2, 0, 1: the prefix 0..2 is committable, not past 3. */
    sink_ack(&a, 0, 2);
    sink_ack(&a, 0, 0);
    sink_ack(&a, 0, 1);
    CU_ASSERT_EQUAL(committed_wait(&f, "events.ooo", "g", 0, 3), 3);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL(committed(&f, "events.ooo", "g", 0), 3);
    msm_err_t err;
    CU_ASSERT_EQUAL(backlog_once(&f, "events.ooo", "g", &err), 7);
    /* 4, 3: the prefix jumps over 5 and 6, acked earlier, to 7. */
    sink_ack(&a, 0, 4);
    sink_ack(&a, 0, 3);
    CU_ASSERT_EQUAL(committed_wait(&f, "events.ooo", "g", 0, 7), 7);
    CU_ASSERT_EQUAL(msm_consumer_unacked(a.c), 3);
    /* 9 alone moves nothing. */
    sink_ack(&a, 0, 9);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL(committed(&f, "events.ooo", "g", 0), 7);

    /* A leaves without acking 7 and 8; a fresh member gets 7, 8 and 9 (9 was acked, but a
     * commit cannot skip the 7 and 8 before it). */
    msm_consumer_free(a.c);
    CU_ASSERT_EQUAL(committed(&f, "events.ooo", "g", 0), 7);
    sink_t b = {.free_after = 3};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &b, "events.ooo", "g", "b", 10, 100), 0);
    CU_ASSERT_EQUAL(sink_wait(&f, &b, 3, 15000), 0);
    CU_ASSERT_TRUE(b.freed);
    CU_ASSERT_EQUAL(b.n, 3);
    for (int i = 0; i < b.n && i < 3; i++)
        CU_ASSERT_EQUAL(b.offsets[i], 7 + i);
    msm_test_spin(f.loop, 100);
    CU_ASSERT_EQUAL(b.n, 3);
    /* The member freed from its callback acknowledged nothing. */
    CU_ASSERT_EQUAL(committed(&f, "events.ooo", "g", 0), 7);
    fx_close(&f);
}

static void test_pause_resume_at_max_unacked(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, NULL), 0);
    fx_topic(&f, "events.flow", 1, 1);
    CU_ASSERT_EQUAL(append_sync(&f, "events.flow", 0, 40, 0), MSM_OK);
    sink_t k = {0};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &k, "events.flow", "g", "m", 2, 5), 0);
    CU_ASSERT_EQUAL_FATAL(sink_wait(&f, &k, 5, 15000), 0);
    msm_test_spin(f.loop, 500);
    CU_ASSERT_EQUAL(k.n, 5); /* held: nothing more while 5 are out */
    CU_ASSERT_EQUAL(msm_consumer_unacked(k.c), 5);
    /* One ack makes room for exactly one more. */
    sink_ack(&k, 0, 0);
    CU_ASSERT_EQUAL(sink_wait(&f, &k, 6, 3000), 0);
    msm_test_spin(f.loop, 300);
    CU_ASSERT_EQUAL(k.n, 6);
    CU_ASSERT_EQUAL(msm_consumer_unacked(k.c), 5);
    /* Ack everything from now on: all 40 arrive, in order, each once, never over 5 out. */
    sink_ack_all(&k);
    k.autoack = 1;
    CU_ASSERT_EQUAL(sink_wait(&f, &k, 40, 15000), 0);
    msm_test_spin(f.loop, 200);
    CU_ASSERT_EQUAL(k.n, 40);
    for (int i = 0; i < k.n; i++)
        CU_ASSERT_EQUAL(k.offsets[i], i);
    CU_ASSERT_TRUE(k.max_unacked_seen <= 5);
    CU_ASSERT_TRUE(k.max_batch_seen <= 2);
    CU_ASSERT_EQUAL(committed_wait(&f, "events.flow", "g", 0, 40), 40);
    msm_consumer_free(k.c);
    fx_close(&f);
}

/* Index of the first record @p k received from @p partition at or past @p from, or -1. */
static int first_seen(const sink_t *k, int32_t partition, int from)
{
    for (int i = from; i < k->n; i++)
        if (k->partitions[i] == partition)
            return i;
    return -1;
}

static void test_rebalance_redelivers_unacked(void)
{
    enum { PARTS = 4, PER = 6 };
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, group_props), 0);
    char topic[256];
    fx_topic_name(&f, "events.rb", topic, sizeof(topic));
    fx_topic(&f, "events.rb", PARTS, 1);
    /* PER records in every partition: 24 keys land where they land, so write each
     * partition's records through a producer of our own with an explicit partition. */
    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    char err[256];
    rd_kafka_conf_set(pc, "bootstrap.servers", f.k.bootstraps, err, sizeof(err));
    rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(prod);
    for (int p = 0; p < PARTS; p++) {
        for (int i = 0; i < PER; i++) {
            char v[16];
            snprintf(v, sizeof(v), "v%d", p * PER + i);
            CU_ASSERT_EQUAL(
                rd_kafka_producev(prod, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(p),
                                  RD_KAFKA_V_VALUE(v, strlen(v)),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                RD_KAFKA_RESP_ERR_NO_ERROR);
        }
    }
    CU_ASSERT_EQUAL(rd_kafka_flush(prod, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(prod);

    /* A alone takes all 24, acknowledges the first 2 of every partition, holds the rest. */
    sink_t a = {0};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &a, "events.rb", "g", "a", 100, 100), 0);
    CU_ASSERT_EQUAL_FATAL(sink_wait(&f, &a, PARTS * PER, 15000), 0);
    for (int p = 0; p < PARTS; p++) {
        sink_ack(&a, p, 0);
        sink_ack(&a, p, 1);
    }
    for (int p = 0; p < PARTS; p++)
        CU_ASSERT_EQUAL(committed_wait(&f, "events.rb", "g", p, 2), 2);

    /* B joins: the group rebalances and B receives the records of its partitions from the
     * committed offset, the ones A still holds. B holds them in turn. */
    sink_t b = {0};
    int a_before = a.n;
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &b, "events.rb", "g", "b", 100, 100), 0);
    CU_ASSERT_EQUAL(sink_wait(&f, &b, 1, 20000), 0);
    msm_test_spin(f.loop, 1000);
    int b_parts = 0;
    for (int p = 0; p < PARTS; p++) {
        int i = first_seen(&b, p, 0);
        if (i < 0)
            continue;
        b_parts++;
        CU_ASSERT_EQUAL(b.offsets[i], 2);
    }
    CU_ASSERT_TRUE(b_parts >= 1 && b_parts < PARTS);
    CU_ASSERT_EQUAL(b.n, b_parts * (PER - 2));
    /* The partitions A kept were read again from their committed offset, marked as
     * redelivered. */
    for (int p = 0; p < PARTS; p++) {
        if (first_seen(&b, p, 0) >= 0)
            continue;
        int i = first_seen(&a, p, a_before);
        CU_ASSERT_TRUE_FATAL(i >= 0);
        CU_ASSERT_EQUAL(a.offsets[i], 2);
        CU_ASSERT_NOT_EQUAL(a.redelivered[i], 0);
    }
    /* A now acks everything it ever received, stale copies included: the partitions A kept
     * commit to the end; B's stay where they were, since B still holds those records. */
    sink_ack_all(&a);
    for (int p = 0; p < PARTS; p++)
        if (first_seen(&b, p, 0) < 0)
            CU_ASSERT_EQUAL(committed_wait(&f, "events.rb", "g", p, PER), PER);
    msm_test_spin(f.loop, 300);
    for (int p = 0; p < PARTS; p++)
        if (first_seen(&b, p, 0) >= 0)
            CU_ASSERT_EQUAL(committed(&f, "events.rb", "g", p), 2);
    sink_ack_all(&b);
    for (int p = 0; p < PARTS; p++)
        CU_ASSERT_EQUAL(committed_wait(&f, "events.rb", "g", p, PER), PER);
    CU_ASSERT_EQUAL(backlog_wait(&f, "events.rb", "g", 0), 0);
    msm_consumer_free(a.c);
    msm_consumer_free(b.c);
    fx_close(&f);
}

static void test_backlog_does_not_block_the_loop(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 1, 5000, NULL), 0);
    fx_topic(&f, "events.bl", 2, 1);
    CU_ASSERT_EQUAL(append_sync(&f, "events.bl", 0, 12, 3), MSM_OK);
    msm_err_t err;
    CU_ASSERT_EQUAL(backlog_once(&f, "events.bl", "g", &err), 12); /* warm */

    /* Every broker answers 400 ms late: the query takes seconds, the loop keeps turning. */
    CU_ASSERT_EQUAL(rd_kafka_mock_broker_set_rtt(f.k.mcluster, -1, 400), 0);
    backlog_t b = {0};
    uint64_t t0 = now_ms(), longest = 0;
    CU_ASSERT_EQUAL(msm_stream_backlog(f.s, "events.bl", "g", on_backlog, &b), MSM_OK);
    while (!b.done && now_ms() - t0 < 20000) {
        uint64_t s = now_ms();
        msm_loop_run_once(f.loop, 10);
        if (now_ms() - s > longest)
            longest = now_ms() - s;
    }
    CU_ASSERT_TRUE(b.done);
    CU_ASSERT_EQUAL(b.err, MSM_OK);
    CU_ASSERT_EQUAL(b.backlog, 12);
    CU_ASSERT_TRUE(now_ms() - t0 >= 800); /* several requests, each 400 ms late */
    CU_ASSERT_TRUE(longest < 200);
    CU_ASSERT_EQUAL(rd_kafka_mock_broker_set_rtt(f.k.mcluster, -1, 0), 0);
    fx_close(&f);
}

static void test_two_groups_backlog_counts_down(void)
{
    fx_t f;
    CU_ASSERT_EQUAL_FATAL(fx_open(&f, 3, 5000, NULL), 0);
    fx_topic(&f, "events.fan", 3, 3);
    /* Keyed records: each key stays on one partition, in order. */
    CU_ASSERT_EQUAL(append_sync(&f, "events.fan", 0, 30, 4), MSM_OK);
    msm_err_t err;
    CU_ASSERT_EQUAL(backlog_once(&f, "events.fan", "g1", &err), 30);
    CU_ASSERT_EQUAL(backlog_once(&f, "events.fan", "g2", &err), 30);

    sink_t g1 = {.autoack = 1}, g2 = {0};
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &g1, "events.fan", "g1", "m", 8, 100), 0);
    CU_ASSERT_EQUAL_FATAL(sink_start(&f, &g2, "events.fan", "g2", "m", 8, 100), 0);
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
    /* g2 holds everything; it acks the first 3 records of every partition. */
    CU_ASSERT_EQUAL(backlog_once(&f, "events.fan", "g2", &err), 30);
    int acked = 0;
    for (int i = 0; i < g2.nheld; i++) {
        if (g2.held[i] && strtoll(g2.held[i]->position, NULL, 10) < 3) {
            msm_consumer_ack(g2.c, g2.held[i]);
            g2.held[i] = NULL;
            acked++;
        }
    }
    CU_ASSERT_TRUE(acked > 0);
    CU_ASSERT_EQUAL(backlog_wait(&f, "events.fan", "g2", 30 - acked), 30 - acked);
    sink_ack_all(&g2);
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
    CU_ASSERT_EQUAL(append_sync(&f, "events.bye", 0, 1, 0), MSM_OK);
    rd_kafka_mock_broker_set_down(f.k.mcluster, 1);
    done_t d;
    CU_ASSERT_EQUAL(append_values(&f, "events.bye", 1, 3, 0, &d), MSM_OK);
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
    loop_thread = pthread_self();
    static CU_TestInfo tests[] = {
        {"properties: unknown named, guarantees fixed", test_properties},
        {"ensure twice, durable append, backlog", test_ensure_durable_append_backlog},
        {"queue full: one callback after the last report", test_queue_full_single_callback},
        {"callback waits for every partition's leader", test_callback_waits_for_every_partition},
        {"leader down: TIMEOUT, never false success", test_leader_down_times_out},
        {"commit never passes an unacked record", test_commit_never_passes_unacked},
        {"pause and resume at max_unacked", test_pause_resume_at_max_unacked},
        {"rebalance: unacked records go to the new owner", test_rebalance_redelivers_unacked},
        {"backlog does not block the loop", test_backlog_does_not_block_the_loop},
        {"two groups, backlog counts down", test_two_groups_backlog_counts_down},
        {"free with a pending append: SHUTDOWN", test_free_with_pending_append},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"stream_kafka", NULL, NULL, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
