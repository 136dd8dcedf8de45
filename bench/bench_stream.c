/* SPDX-License-Identifier: MIT */
/* Log throughput: append + consume + ack events/s and append latency, for both drivers at
 * batch sizes 1, 100 and 1000. Method and caveats: bench/README.md. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IN_FLIGHT   8   /* appends outstanding at once, as a publishing daemon would have */
#define VALUE_BYTES 256 /* a typical small event envelope */

typedef struct {
    msm_loop_t *loop;
    msm_stream_t *stream;
    const char *name;
    int batch;
    int total;       /* records to append */
    int appended;    /* records handed to msm_stream_append */
    int durable;     /* records reported durable */
    int failed;
    int in_flight;
    int consumed;
    uint64_t *lat_us; /* per append call */
    int nlat;
    msm_record_t *recs;
    char (*keys)[16];
    char value[VALUE_BYTES];
} bench_t;

typedef struct {
    bench_t *b;
    uint64_t started_us;
} append_ctx_t;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void issue_appends(bench_t *b);

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    append_ctx_t *ctx = opaque;
    bench_t *b = ctx->b;
    b->lat_us[b->nlat++] = now_us() - ctx->started_us;
    b->in_flight--;
    if (err == MSM_OK) {
        b->durable += b->batch;
    } else {
        b->failed++;
        fprintf(stderr, "append failed: %s\n", reason);
    }
    free(ctx);
    issue_appends(b);
}

static void issue_appends(bench_t *b)
{
    while (b->in_flight < IN_FLIGHT && b->appended < b->total && !b->failed) {
        for (int i = 0; i < b->batch; i++) {
            b->recs[i].key = b->keys[(b->appended + i) % 1024];
            b->recs[i].key_len = strlen(b->keys[(b->appended + i) % 1024]);
            b->recs[i].value = b->value;
            b->recs[i].value_len = sizeof(b->value);
        }
        append_ctx_t *ctx = malloc(sizeof(*ctx));
        ctx->b = b;
        ctx->started_us = now_us();
        if (msm_stream_append(b->stream, b->name, b->recs, (size_t)b->batch, on_appended, ctx) !=
            MSM_OK) {
            free(ctx);
            b->failed++;
            return;
        }
        b->in_flight++;
        b->appended += b->batch;
    }
}

static void on_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    bench_t *b = opaque;
    for (size_t i = 0; i < n; i++)
        msm_consumer_ack(c, msgs[i]);
    b->consumed += (int)n;
}

static int all_consumed(void *arg)
{
    bench_t *b = arg;
    return b->failed || b->consumed >= b->total;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void ensure_done(msm_err_t err, const char *reason, void *opaque)
{
    int *done = opaque;
    *done = err == MSM_OK ? 1 : -1;
    if (err != MSM_OK)
        fprintf(stderr, "ensure: %s\n", reason);
}

static int nothing_pending(void *arg)
{
    return msm_stream_pending_appends(arg) == 0;
}

static int run_one(msm_stream_backend_t backend, const char *url, const char *brokers, int batch,
                   int total)
{
    static unsigned run_no;
    char ns[64];
    snprintf(ns, sizeof(ns), "bench%u", ++run_no);
    msm_stream_conf_t conf = {0};
    conf.backend = backend;
    conf.redis_url = url;
    conf.kafka_brokers = brokers;
    conf.name_prefix = ns;
    bench_t b = {0};
    b.loop = msm_loop_new();
    char err[256];
    b.stream = msm_stream_new(b.loop, &conf, err, sizeof(err));
    if (!b.stream) {
        fprintf(stderr, "stream: %s\n", err);
        return -1;
    }
    b.name = "events.bench";
    b.batch = batch;
    b.total = total;
    b.lat_us = calloc((size_t)total / (size_t)batch + 1, sizeof(uint64_t));
    b.recs = calloc((size_t)batch, sizeof(*b.recs));
    b.keys = calloc(1024, sizeof(*b.keys));
    for (int i = 0; i < 1024; i++)
        snprintf(b.keys[i], sizeof(b.keys[i]), "key-%d", i);
    memset(b.value, 'x', sizeof(b.value));

    volatile int ensured = 0;
    msm_stream_ensure(b.stream, b.name, 4, ensure_done, (void *)&ensured);
    msm_test_wait_flag(b.loop, &ensured, 20000);
    msm_consumer_t *c = msm_stream_consume(b.stream, b.name, "bench", "m1", (size_t)batch,
                                           (size_t)batch * 4 > 4000 ? (size_t)batch * 4 : 4000,
                                           on_batch, &b, err, sizeof(err));
    if (ensured != 1 || !c) {
        fprintf(stderr, "setup failed: %s\n", c ? "ensure" : err);
        return -1;
    }
    /* Let a Kafka member join its group before the clock starts. */
    msm_test_spin(b.loop, backend == MSM_STREAM_KAFKA ? 3000 : 50);

    uint64_t t0 = now_us();
    issue_appends(&b);
    int rc = msm_loop_run_until(b.loop, all_consumed, &b, 300000);
    uint64_t elapsed = now_us() - t0;
    if (rc != MSM_OK || b.failed) {
        fprintf(stderr, "run failed: consumed %d of %d\n", b.consumed, b.total);
        return -1;
    }
    qsort(b.lat_us, (size_t)b.nlat, sizeof(uint64_t), cmp_u64);
    double secs = (double)elapsed / 1e6;
    printf("| %-6s | %5d | %7d | %10.0f | %9.2f | %9.2f |\n", msm_stream_backend_name(b.stream),
           batch, total, total / secs, b.lat_us[b.nlat / 2] / 1000.0,
           b.lat_us[(b.nlat * 99) / 100] / 1000.0);
    fflush(stdout);
    msm_consumer_free(c);
    /* Let the last acknowledgements be answered before the client goes. */
    msm_loop_run_until(b.loop, nothing_pending, b.stream, 5000);
    msm_stream_free(b.stream);
    msm_loop_free(b.loop);
    free(b.lat_us);
    free(b.recs);
    free(b.keys);
    return 0;
}

/* msm-bench-stream [redis|kafka [BATCH]]: every row by default, or the ones asked for. */
int main(int argc, char **argv)
{
    const char *only_driver = argc > 1 ? argv[1] : NULL;
    int only_batch = argc > 2 ? atoi(argv[2]) : 0;
    msm_test_redis_t redis;
    msm_test_kafka_t kafka;
    if (msm_test_redis_start(&redis) != 0 || msm_test_kafka_start(&kafka, 3) != 0) {
        fprintf(stderr, "could not start redis-server or the Kafka mock cluster\n");
        return 1;
    }
    printf("log drivers: append + consume + ack, %d-byte values, %d appends in flight\n",
           VALUE_BYTES, IN_FLIGHT);
    printf("| driver | batch | events  | events/s   | p50 ms    | p99 ms    |\n");
    printf("|--------|-------|---------|------------|-----------|-----------|\n");
    const int batches[] = {1, 100, 1000};
    const int totals[] = {5000, 100000, 200000};
    /* The mock cluster keeps only a few MB per partition: a producer far ahead of the
     * consumer would see its oldest records trimmed (offset out of range), so Kafka's big
     * batches run on fewer events. */
    const int kafka_totals[] = {5000, 50000, 50000};
    int rc = 0;
    for (int be = 0; be < 2; be++) {
        const char *driver = be == 0 ? "redis" : "kafka";
        if (only_driver && strcmp(only_driver, driver) != 0)
            continue;
        for (int i = 0; i < 3; i++) {
            if (only_batch && only_batch != batches[i])
                continue;
            if (run_one(be == 0 ? MSM_STREAM_REDIS : MSM_STREAM_KAFKA, redis.url, kafka.bootstraps,
                        batches[i], be == 0 ? totals[i] : kafka_totals[i]) != 0)
                rc = 1;
        }
    }
    printf("(p50/p99: time from append to durable completion of one batch; redis-server with "
           "appendfsync always; kafka = librdkafka mock cluster, in-process)\n");
    msm_test_kafka_stop(&kafka);
    msm_test_redis_destroy(&redis);
    return rc;
}
