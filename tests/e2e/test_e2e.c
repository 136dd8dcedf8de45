/* SPDX-License-Identifier: MIT */
/* End to end: a real redis-server, the four daemons and example lambdas as processes on free
 * ports, driven only through the public HTTP API (API.md) and checked through the lambdas'
 * record files and the task API.
 *
 *   test_e2e FRONTEND SCHEDULER FLOWCONTROL ROUTER EXAMPLE_LAMBDA [redis | kafka KAFKA_MOCK]
 *
 * The log backend is Redis unless "kafka" is given: then the log is a librdkafka mock
 * cluster of three brokers served by KAFKA_MOCK (tools/msm-kafka-mock, a process of its own,
 * real protocol over TCP), and Redis keeps only the state. */
#include "msm_test.h"
#include "msm_test_daemons.h"
#include "msm_test_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { FRONTEND, SCHEDULER, FLOWCONTROL, ROUTER, NDAEMONS };
static const char *bins[NDAEMONS + 1];

static msm_test_redis_t redis_srv;
static int on_kafka;
static const char *kafka_mock_bin;
static msm_test_proc_t kafka_mock;
static char kafka_brokers[512];
static char ns[64];
static char dir[256];

typedef struct {
    const char *name;
    msm_test_proc_t proc;
} daemon_t;

static daemon_t daemons[NDAEMONS];
static char frontend_url[64];

/* ---- HTTP ---- */

static long api(const char *method, const char *path, const char *body, json_t **out)
{
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", frontend_url, path);
    return msm_test_http_json(method, url, body, out);
}

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the suite ---- */

static void daemon_setup(int i)
{
    msm_test_proc_t *p = &daemons[i].proc;
    daemons[i].name = msm_test_daemon_names[i];
    msm_test_daemon_setup(p, i, bins[i], dir, redis_srv.url, ns);
    if (on_kafka) {
        msm_test_proc_arg(p, "--log.backend=kafka");
        msm_test_proc_arg(p, "--kafka.brokers=%s", kafka_brokers);
        /* The mock broker holds a Fetch that found nothing for its whole wait, records
         * arriving meanwhile or not (measured: 64 pushes in flight ran at 128/s with the
         * default 500 ms, 500/s with 20 ms); a real broker answers as they arrive. */
        msm_test_proc_arg(p, "--kafka.props=fetch.wait.max.ms=20");
        /* A killed member's partitions move after its session timeout: the shortest a
         * broker allows, so the kill -9 tests wait seconds, not half a minute. */
        msm_test_proc_arg(p, "--log.lease_ms=6000");
    }
}

static int kafka_mock_start(void)
{
    char log[sizeof(kafka_mock.log)];
    snprintf(log, sizeof(log), "%s/kafka-mock.log", dir);
    if (msm_test_kafka_mock_start(&kafka_mock, kafka_mock_bin, 3, log, kafka_brokers,
                                  sizeof(kafka_brokers)) == 0)
        return 0;
    fprintf(stderr, "msm-kafka-mock printed no bootstrap servers; see %s\n", log);
    return -1;
}

static int suite_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dir, sizeof(dir), "/tmp/msm-e2e-XXXXXX");
    if (!mkdtemp(dir) || msm_test_redis_start(&redis_srv) != 0 ||
        (on_kafka && kafka_mock_start() != 0))
        return -1;
    msm_test_namespace(ns, sizeof(ns));
    for (int i = 0; i < NDAEMONS; i++) {
        daemon_setup(i);
        if (msm_test_proc_start(&daemons[i].proc) != 0)
            return -1;
    }
    for (int i = 0; i < NDAEMONS; i++) {
        if (msm_test_proc_wait_ready(&daemons[i].proc, NULL, 15000) != 0) {
            fprintf(stderr, "%s not ready; see %s\n", daemons[i].name, daemons[i].proc.log);
            return -1;
        }
    }
    snprintf(frontend_url, sizeof(frontend_url), "http://127.0.0.1:%d",
             daemons[FRONTEND].proc.port);
    return 0;
}

static int suite_clean(void)
{
    for (int i = 0; i < NDAEMONS; i++) {
        int rc = msm_test_proc_stop(&daemons[i].proc, SIGTERM, MSM_TEST_PROC_GRACE_MS);
        if (rc != 0)
            fprintf(stderr, "%s exited with %d on SIGTERM (log: %s)\n", daemons[i].name, rc,
                    daemons[i].proc.log);
    }
    msm_test_redis_destroy(&redis_srv);
    if (on_kafka && msm_test_proc_stop(&kafka_mock, SIGTERM, MSM_TEST_PROC_GRACE_MS) != 0)
        fprintf(stderr, "msm-kafka-mock did not stop cleanly (log: %s)\n", kafka_mock.log);
    curl_global_cleanup();
    return 0;
}

/* ---- lambdas and their records ---- */

typedef struct {
    msm_test_proc_t proc;
    char record[320];
} lambda_t;

/* Starts the example lambda on @p port (0: a free one). */
static int
lambda_start_on(lambda_t *l, int port, const char *name, const char *extra1, const char *extra2)
{
    memset(l, 0, sizeof(*l));
    l->proc.port = port ? port : msm_test_free_port();
    snprintf(l->proc.log, sizeof(l->proc.log), "%s/%s.log", dir, name);
    snprintf(l->record, sizeof(l->record), "%s/%s.jsonl", dir, name);
    msm_test_proc_arg(&l->proc, "%s", bins[NDAEMONS]);
    msm_test_proc_arg(&l->proc, "--port=%d", l->proc.port);
    msm_test_proc_arg(&l->proc, "--bind=127.0.0.1");
    msm_test_proc_arg(&l->proc, "--record=%s", l->record);
    if (extra1)
        msm_test_proc_arg(&l->proc, "%s", extra1);
    if (extra2)
        msm_test_proc_arg(&l->proc, "%s", extra2);
    if (msm_test_proc_start(&l->proc) != 0)
        return -1;
    return msm_test_proc_wait_ready(&l->proc, NULL, 10000);
}

static int lambda_start(lambda_t *l, const char *name, const char *extra1, const char *extra2)
{
    return lambda_start_on(l, 0, name, extra1, extra2);
}

static void lambda_stop(lambda_t *l)
{
    CU_ASSERT_EQUAL(msm_test_proc_stop(&l->proc, SIGTERM, MSM_TEST_PROC_GRACE_MS), 0);
}

typedef struct {
    char id[64];
    int attempt;
    int64_t received_ms;
    int64_t deadline_ms; /* the push's Msm-Deadline */
    char result[8];
    char ordering_key[32];
} record_t;

/* Reads every line of a record file. */
static size_t records_read(const char *path, record_t **out)
{
    FILE *f = fopen(path, "r");
    size_t n = 0, cap = 0;
    record_t *r = NULL;
    char line[2048];
    while (f && fgets(line, sizeof(line), f)) {
        json_t *j = json_loads(line, 0, NULL);
        if (!j)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            r = realloc(r, cap * sizeof(*r));
        }
        record_t *x = &r[n++];
        snprintf(x->id, sizeof(x->id), "%s", json_string_value(json_object_get(j, "id")));
        x->attempt = (int)json_integer_value(json_object_get(j, "attempt"));
        x->received_ms = json_integer_value(json_object_get(j, "received_ms"));
        x->deadline_ms = json_integer_value(json_object_get(j, "deadline_ms"));
        snprintf(x->result, sizeof(x->result), "%s",
                 json_string_value(json_object_get(j, "result")));
        const char *okey = json_string_value(json_object_get(j, "ordering_key"));
        snprintf(x->ordering_key, sizeof(x->ordering_key), "%s", okey ? okey : "");
        json_decref(j);
    }
    if (f)
        fclose(f);
    *out = r;
    return n;
}

/* ---- published events ---- */

typedef struct {
    char id[64];
    int64_t published_ms;
    int handled; /* ok records seen */
    int64_t first_ok_ms;
} sent_t;

static int setup_route(const char *topic, const char *sub, const lambda_t *l, const char *extra)
{
    char body[1024];
    snprintf(body, sizeof(body), "{}");
    char path[256];
    snprintf(path, sizeof(path), "/v1/topics/%s", topic);
    long st = api("PUT", path, body, NULL);
    if (st != 200) {
        fprintf(stderr, "PUT %s: %ld\n", path, st);
        return -1;
    }
    snprintf(body, sizeof(body),
             "{\"topic\":\"%s\",\"endpoints\":[{\"url\":\"http://127.0.0.1:%d/\"}]%s%s}", topic,
             l->proc.port, extra ? "," : "", extra ? extra : "");
    snprintf(path, sizeof(path), "/v1/subscriptions/%s", sub);
    st = api("PUT", path, body, NULL);
    if (st != 200) {
        fprintf(stderr, "PUT %s: %ld\n", path, st);
        return -1;
    }
    sleep(2); /* every daemon's registry watcher sees the new subscription */
    return 0;
}

/* Publishes @p n events in batches of 100; records ids and publish times. */
static int publish(const char *topic, sent_t *sent, int n, const char *extra)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/topics/%s:publish", topic);
    for (int first = 0; first < n; first += 100) {
        int count = n - first < 100 ? n - first : 100;
        json_t *events = json_array();
        for (int i = 0; i < count; i++) {
            char key[16];
            snprintf(key, sizeof(key), "k%d", (first + i) % 10);
            json_t *ev = json_pack("{s:{s:i},s:s}", "data", "n", first + i, "key", key);
            if (extra) {
                json_t *x = json_loads(extra, 0, NULL);
                json_object_update(ev, x);
                json_decref(x);
            }
            json_array_append_new(events, ev);
        }
        json_t *req = json_pack("{s:o}", "events", events);
        char *body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        int64_t t0 = unix_ms();
        json_t *resp = NULL;
        long st = api("POST", path, body, &resp);
        free(body);
        json_t *results = json_object_get(resp, "results");
        if (st != 200 || json_array_size(results) != (size_t)count) {
            fprintf(stderr, "publish: %ld\n", st);
            json_decref(resp);
            return -1;
        }
        for (int i = 0; i < count; i++) {
            snprintf(sent[first + i].id, sizeof(sent[0].id), "%s",
                     json_string_value(json_object_get(json_array_get(results, i), "id")));
            sent[first + i].published_ms = t0;
        }
        json_decref(resp);
    }
    return 0;
}

static sent_t *find_sent(sent_t *sent, int n, const char *id)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(sent[i].id, id) == 0)
            return &sent[i];
    }
    return NULL;
}

/* Waits until every sent event has an "ok" record (or the timeout); returns how many do. */
static int wait_handled(const lambda_t *l, sent_t *sent, int n, int timeout_s, int *dups)
{
    int handled = 0;
    for (int t = 0; t <= timeout_s * 10; t++) {
        record_t *r = NULL;
        size_t nr = records_read(l->record, &r);
        for (int i = 0; i < n; i++)
            sent[i].handled = 0;
        for (size_t i = 0; i < nr; i++) {
            sent_t *s = find_sent(sent, n, r[i].id);
            if (s && strcmp(r[i].result, "ok") == 0) {
                if (!s->handled++)
                    s->first_ok_ms = r[i].received_ms;
            }
        }
        free(r);
        handled = 0;
        *dups = 0;
        for (int i = 0; i < n; i++) {
            handled += sent[i].handled > 0;
            *dups += sent[i].handled > 1;
        }
        if (handled == n)
            break;
        usleep(100000);
    }
    return handled;
}

static json_t *task(const char *sub, const char *id)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/subscriptions/%s/tasks/%s", sub, id);
    json_t *t = NULL;
    if (api("GET", path, NULL, &t) != 200) {
        json_decref(t);
        return NULL;
    }
    return t;
}

/* Waits until every task of @p sent is in @p state; returns how many are. */
static int wait_states(
    const char *sub, sent_t *sent, int n, const char *state, int timeout_s, int *max_attempts)
{
    int in_state = 0;
    for (int t = 0; t <= timeout_s * 2; t++) {
        in_state = 0;
        *max_attempts = 0;
        for (int i = 0; i < n; i++) {
            json_t *tk = task(sub, sent[i].id);
            const char *st = json_string_value(json_object_get(tk, "state"));
            int attempts = (int)json_integer_value(json_object_get(tk, "attempts"));
            if (st && strcmp(st, state) == 0)
                in_state++;
            if (attempts > *max_attempts)
                *max_attempts = attempts;
            json_decref(tk);
        }
        if (in_state == n)
            break;
        usleep(500000);
    }
    return in_state;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_thousand_exactly_once(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-ok", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("orders", "orders-sub", &l, NULL), 0);
    enum { N = 1000 };
    sent_t *sent = calloc(N, sizeof(*sent));
    int64_t t0 = unix_ms();
    CU_ASSERT_EQUAL_FATAL(publish("orders", sent, N, NULL), 0);
    int dups = 0;
    int handled = wait_handled(&l, sent, N, 60, &dups);
    int64_t t1 = 0;
    CU_ASSERT_EQUAL(handled, N);
    CU_ASSERT_EQUAL(dups, 0); /* no failure injected: each exactly once */
    int64_t *lat = calloc(N, sizeof(*lat));
    for (int i = 0; i < N; i++) {
        lat[i] = sent[i].first_ok_ms - sent[i].published_ms;
        if (sent[i].first_ok_ms > t1)
            t1 = sent[i].first_ok_ms;
    }
    qsort(lat, N, sizeof(*lat), cmp_i64);
    fprintf(stderr,
            "\n  e2e: %d events published and handled in %lld ms (%.0f events/s); "
            "publish-to-handler latency p50 %lld ms, p99 %lld ms\n",
            N, (long long)(t1 - t0), N * 1000.0 / (double)(t1 - t0 > 0 ? t1 - t0 : 1),
            (long long)lat[N / 2], (long long)lat[N * 99 / 100]);
    int max_attempts = 0;
    CU_ASSERT_EQUAL(wait_states("orders-sub", sent, N, "succeeded", 30, &max_attempts), N);
    CU_ASSERT_EQUAL(max_attempts, 1);
    /* The stats measure what happened: nothing waits, nothing runs, N succeeded. */
    json_t *st = NULL;
    int64_t deadline = unix_ms() + 10000;
    while (unix_ms() < deadline) {
        json_decref(st);
        st = NULL;
        if (api("GET", "/v1/subscriptions/orders-sub/stats", NULL, &st) == 200 &&
            json_integer_value(json_object_get(st, "succeeded")) == N &&
            json_integer_value(json_object_get(st, "backlog")) == 0 &&
            json_integer_value(json_object_get(st, "in_flight")) == 0)
            break;
        usleep(50 * 1000);
    }
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(st, "succeeded")), N);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(st, "backlog")), 0);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(st, "in_flight")), 0);
    json_decref(st);
    free(lat);
    free(sent);
    lambda_stop(&l);
}

/* ---- tracing ---- */

typedef struct {
    char span_id[17], parent_id[17];
    long long duration_us;
    int found;
} span_line_t;

/* The value of logfmt field @p key="…" in @p line into @p out ("" when absent). */
static void logfmt_field(const char *line, const char *key, char *out, size_t size)
{
    char pat[64];
    snprintf(pat, sizeof(pat), " %s=\"", key);
    const char *at = strstr(line, pat);
    out[0] = '\0';
    if (!at)
        return;
    at += strlen(pat);
    size_t n = strcspn(at, "\"");
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), at);
}

/* The span line of trace @p trace_id in the log at @p path (hop @p hop); how many there are. */
static int find_span(const char *path, const char *trace_id, const char *hop, span_line_t *out)
{
    FILE *f = fopen(path, "r");
    char line[4096], pat[64], v[64];
    snprintf(pat, sizeof(pat), "trace_id=\"%s\"", trace_id);
    memset(out, 0, sizeof(*out));
    while (f && fgets(line, sizeof(line), f)) {
        if (!strstr(line, pat))
            continue;
        logfmt_field(line, "hop", v, sizeof(v));
        if (strcmp(v, hop) != 0)
            continue;
        if (!out->found++) {
            logfmt_field(line, "span_id", out->span_id, sizeof(out->span_id));
            logfmt_field(line, "parent_id", out->parent_id, sizeof(out->parent_id));
            logfmt_field(line, "duration_us", v, sizeof(v));
            out->duration_us = strtoll(v, NULL, 10);
        }
    }
    if (f)
        fclose(f);
    return out->found;
}

/* One grep of a sampled event's trace id finds a span in each of the five processes' logs,
 * each the child of the one before; an unsampled event leaves no span line. */
static void test_trace_spans_at_every_hop(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-trace", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("traced", "traced-sub", &l, NULL), 0);
    const char *sampled = "4bf92f3577b34da6a3ce929d0e0e4736", *unsampled =
                                                                "5bf92f3577b34da6a3ce929d0e0e4737";
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"events\":[{\"data\":{\"n\":1},\"traceparent\":\"00-%s-00f067aa0ba902b7-01\"},"
             "{\"data\":{\"n\":2},\"delay_ms\":300,"
             "\"traceparent\":\"00-%s-00f067aa0ba902b8-01\",\"tracestate\":\"k=v\"},"
             "{\"data\":{\"n\":3},\"traceparent\":\"00-%s-00f067aa0ba902b9-00\"}]}",
             sampled, sampled, unsampled);
    json_t *resp = NULL;
    CU_ASSERT_EQUAL_FATAL(api("POST", "/v1/topics/traced:publish", body, &resp), 200);
    sent_t sent[3];
    memset(sent, 0, sizeof(sent));
    for (int i = 0; i < 3; i++)
        snprintf(sent[i].id, sizeof(sent[i].id), "%s",
                 json_string_value(json_object_get(
                     json_array_get(json_object_get(resp, "results"), (size_t)i), "id")));
    json_decref(resp);
    int dups = 0;
    CU_ASSERT_EQUAL(wait_handled(&l, sent, 3, 30, &dups), 3);
    usleep(300 * 1000); /* the handler's span line follows its answer */

    const char *hops[] = {"frontend", "scheduler", "flowcontrol", "router", "lambda"};
    const char *logs[] = {daemons[FRONTEND].proc.log, daemons[SCHEDULER].proc.log,
                          daemons[FLOWCONTROL].proc.log, daemons[ROUTER].proc.log, l.proc.log};
    /* Two events share the sampled trace (one delayed: its scheduler span is the firing). */
    span_line_t prev = {.span_id = "00f067aa0ba902b7", .found = 1};
    for (int h = 0; h < 5; h++) {
        span_line_t sp;
        int n = find_span(logs[h], sampled, hops[h], &sp);
        CU_ASSERT(n >= 2);
        if (n < 2)
            fprintf(stderr, "  no span of hop %s in %s\n", hops[h], logs[h]);
        /* The first line of each hop is the first event's: each the child of the last. */
        CU_ASSERT_STRING_EQUAL(sp.parent_id, prev.span_id);
        CU_ASSERT_EQUAL(strlen(sp.span_id), 16);
        CU_ASSERT_STRING_NOT_EQUAL(sp.span_id, prev.span_id);
        CU_ASSERT(sp.duration_us >= 0 && sp.duration_us < 30 * 1000 * 1000);
        prev = sp;
        span_line_t none;
        CU_ASSERT_EQUAL(find_span(logs[h], unsampled, hops[h], &none), 0);
    }
    fprintf(stderr, "\n  trace %s: a span in each of the 5 logs, each the child of the last\n",
            sampled);
    lambda_stop(&l);
}

static void test_retries_until_success(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-flaky", "--fail-rate=0.2", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(
        setup_route("flaky", "flaky-sub", &l,
                    "\"retry\":{\"max_attempts\":20,\"min_backoff_ms\":20,\"max_backoff_ms\":200}"),
        0);
    enum { N = 200 };
    sent_t *sent = calloc(N, sizeof(*sent));
    CU_ASSERT_EQUAL_FATAL(publish("flaky", sent, N, NULL), 0);
    int max_attempts = 0;
    CU_ASSERT_EQUAL(wait_states("flaky-sub", sent, N, "succeeded", 60, &max_attempts), N);
    CU_ASSERT_TRUE(max_attempts > 1);
    fprintf(stderr, "  fail-rate 0.2: all %d succeeded, up to %d attempts\n", N, max_attempts);
    free(sent);
    lambda_stop(&l);
}

/* :pause answered: nothing published after it is pushed (the router checks the registry
 * after it reads); :resume: everything held arrives. */
static void test_pause_holds_then_resume(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-pause", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("held", "held-sub", &l, NULL), 0);
    json_t *j = NULL;
    CU_ASSERT_EQUAL(api("POST", "/v1/subscriptions/held-sub:pause", NULL, &j), 200);
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "paused")));
    json_decref(j);
    enum { N = 50 };
    sent_t *sent = calloc(N, sizeof(*sent));
    CU_ASSERT_EQUAL_FATAL(publish("held", sent, N, NULL), 0);
    usleep(1500 * 1000); /* longer than any registry poll: a pause missed would show */
    record_t *r = NULL;
    size_t seen = records_read(l.record, &r);
    free(r);
    CU_ASSERT_EQUAL(seen, 0);
    j = NULL;
    CU_ASSERT_EQUAL(api("GET", "/v1/subscriptions/held-sub/stats", NULL, &j), 200);
    CU_ASSERT_TRUE(json_is_true(json_object_get(j, "paused")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "succeeded")), 0);
    json_decref(j);
    j = NULL;
    CU_ASSERT_EQUAL(api("POST", "/v1/subscriptions/held-sub:resume", NULL, &j), 200);
    json_decref(j);
    int dups = 0;
    CU_ASSERT_EQUAL(wait_handled(&l, sent, N, 30, &dups), N);
    int max_attempts = 0;
    CU_ASSERT_EQUAL(wait_states("held-sub", sent, N, "succeeded", 30, &max_attempts), N);
    CU_ASSERT_EQUAL(max_attempts, 1); /* held, not failed: no attempt spent */
    fprintf(stderr, "  pause: %zu of %d pushed while paused, then resumed\n", seen, N);
    free(sent);
    lambda_stop(&l);
}

static void test_fatal_goes_dead(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-fatal", "--fatal-rate=1", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("poison", "poison-sub", &l, NULL), 0);
    enum { N = 50 };
    sent_t *sent = calloc(N, sizeof(*sent));
    CU_ASSERT_EQUAL_FATAL(publish("poison", sent, N, NULL), 0);
    int max_attempts = 0;
    CU_ASSERT_EQUAL(wait_states("poison-sub", sent, N, "dead", 60, &max_attempts), N);
    CU_ASSERT_EQUAL(max_attempts, 1);
    json_t *dlq = NULL;
    CU_ASSERT_EQUAL(api("GET", "/v1/subscriptions/poison-sub/dlq?limit=1000", NULL, &dlq), 200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(dlq, "tasks")), N);
    json_decref(dlq);
    free(sent);
    lambda_stop(&l);
}

static void test_delayed_never_early(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-delay", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("later", "later-sub", &l, NULL), 0);
    enum { N = 20 };
    sent_t *sent = calloc(N, sizeof(*sent));
    CU_ASSERT_EQUAL_FATAL(publish("later", sent, N, "{\"delay_ms\":1500}"), 0);
    int dups = 0;
    CU_ASSERT_EQUAL(wait_handled(&l, sent, N, 30, &dups), N);
    int64_t min_wait = INT64_MAX, max_wait = 0;
    for (int i = 0; i < N; i++) {
        int64_t w = sent[i].first_ok_ms - sent[i].published_ms;
        min_wait = w < min_wait ? w : min_wait;
        max_wait = w > max_wait ? w : max_wait;
    }
    fprintf(stderr, "  delay_ms 1500: handled after %lld..%lld ms\n", (long long)min_wait,
            (long long)max_wait);
    CU_ASSERT_TRUE(min_wait >= 1500);
    free(sent);
    lambda_stop(&l);
}

/* @p unix_ms as RFC 3339 with milliseconds ({"deadline": ...}) into @p out. */
static void json_deadline(int64_t unix_ms, char *out, size_t n)
{
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char at[32];
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "{\"deadline\":\"%s.%03dZ\"}", at, (int)(unix_ms % 1000));
}

/* Event deadlines: events published already past theirs, and events whose deadline passes
 * while their subscription is paused, end dead with DEADLINE_EXCEEDED and never reach the
 * lambda; a push's Msm-Deadline is the earlier of the event's and now + timeout_ms. */
static void test_deadline_expired_dead_lettered(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-deadline", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("expiring", "expiring-sub", &l, "\"timeout_ms\":20000"), 0);
    enum { N = 20, M = 10 };
    sent_t *sent = calloc(2 * N + 2 * M, sizeof(*sent));
    sent_t *past = sent, *lapsed = sent + N, *near = sent + 2 * N, *far = sent + 2 * N + M;
    CU_ASSERT_EQUAL_FATAL(publish("expiring", past, N, "{\"deadline\":\"2001-02-03T04:05:06Z\"}"),
                          0);
    /* valid when published, past by the time the subscription resumes */
    json_t *j = NULL;
    CU_ASSERT_EQUAL(api("POST", "/v1/subscriptions/expiring-sub:pause", NULL, &j), 200);
    json_decref(j);
    sleep(1); /* the router sees the pause */
    char extra[128];
    json_deadline(unix_ms() + 1000, extra, sizeof(extra));
    CU_ASSERT_EQUAL_FATAL(publish("expiring", lapsed, N, extra), 0);
    sleep(2);
    j = NULL;
    CU_ASSERT_EQUAL(api("POST", "/v1/subscriptions/expiring-sub:resume", NULL, &j), 200);
    json_decref(j);
    /* pushed: a deadline 5 s ahead caps the 20 s timeout; one in 2100 does not */
    int64_t near_deadline = unix_ms() + 5000;
    json_deadline(near_deadline, extra, sizeof(extra));
    CU_ASSERT_EQUAL_FATAL(publish("expiring", near, M, extra), 0);
    CU_ASSERT_EQUAL_FATAL(publish("expiring", far, M, "{\"deadline\":\"2100-01-01T00:00:00Z\"}"),
                          0);
    int dups = 0, max_attempts = 0;
    CU_ASSERT_EQUAL(wait_handled(&l, near, 2 * M, 30, &dups), 2 * M);
    CU_ASSERT_EQUAL(wait_states("expiring-sub", past, 2 * N, "dead", 30, &max_attempts), 2 * N);
    for (int i = 0; i < 2 * N; i++) {
        json_t *tk = task("expiring-sub", past[i].id);
        const char *err = json_string_value(json_object_get(tk, "last_error"));
        CU_ASSERT(err && strcmp(err, "DEADLINE_EXCEEDED") == 0);
        json_decref(tk);
    }
    json_t *dlq = NULL;
    CU_ASSERT_EQUAL(api("GET", "/v1/subscriptions/expiring-sub/dlq?limit=1000", NULL, &dlq), 200);
    json_t *tasks = json_object_get(dlq, "tasks"), *t;
    size_t i;
    CU_ASSERT_EQUAL(json_array_size(tasks), 2 * N);
    json_array_foreach(tasks, i, t) {
        const char *err = json_string_value(json_object_get(t, "last_error"));
        CU_ASSERT(err && strcmp(err, "DEADLINE_EXCEEDED") == 0);
        CU_ASSERT_PTR_NOT_NULL(json_object_get(json_object_get(t, "event"), "deadline"));
    }
    json_decref(dlq);
    /* the lambda saw none of the expired events, and each pushed one with its deadline */
    record_t *r = NULL;
    size_t nr = records_read(l.record, &r), pushed_expired = 0, near_ok = 0, far_ok = 0;
    for (size_t k = 0; k < nr; k++) {
        if (find_sent(past, 2 * N, r[k].id))
            pushed_expired++;
        else if (find_sent(near, M, r[k].id))
            near_ok += r[k].deadline_ms == near_deadline;
        else if (find_sent(far, M, r[k].id))
            far_ok += r[k].deadline_ms > r[k].received_ms + 19000 &&
                      r[k].deadline_ms <= r[k].received_ms + 20000;
    }
    free(r);
    CU_ASSERT_EQUAL(pushed_expired, 0);
    CU_ASSERT_EQUAL(near_ok, M);
    CU_ASSERT_EQUAL(far_ok, M);
    fprintf(stderr, "  deadline: %d expired dead, %zu of them pushed; %zu/%zu deadlines right\n",
            2 * N, pushed_expired, near_ok + far_ok, (size_t)(2 * M));
    free(sent);
    lambda_stop(&l);
}

/* Kills daemon @p which with SIGKILL while events are on their way, starts it again, and
 * checks that every published (acknowledged) event is still handled and ends succeeded.
 * @p early: kill right after publishing the first half (the daemon is likely mid-batch),
 * and publish the second half while it is down; otherwise kill once 100 are handled. */
static void kill9_mid_delivery(int which, int early)
{
    char name[64], topic[64], sub[64];
    snprintf(name, sizeof(name), "lambda-k9-%s", msm_test_daemon_names[which]);
    snprintf(topic, sizeof(topic), "crashy-%s", msm_test_daemon_names[which]);
    snprintf(sub, sizeof(sub), "crashy-%s-sub", msm_test_daemon_names[which]);
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, name, "--latency-ms=20", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route(topic, sub, &l, "\"max_concurrency\":16"), 0);
    enum { N = 600 };
    sent_t *sent = calloc(N, sizeof(*sent));
    int dups = 0;
    if (early) {
        CU_ASSERT_EQUAL_FATAL(publish(topic, sent, N / 2, NULL), 0);
        CU_ASSERT_EQUAL(msm_test_proc_stop(&daemons[which].proc, SIGKILL, MSM_TEST_PROC_GRACE_MS),
                        128 + SIGKILL);
        CU_ASSERT_EQUAL_FATAL(publish(topic, sent + N / 2, N / 2, NULL), 0);
    } else {
        CU_ASSERT_EQUAL_FATAL(publish(topic, sent, N, NULL), 0);
        for (int t = 0; t < 100 && wait_handled(&l, sent, N, 0, &dups) < 100; t++)
            usleep(50000);
        CU_ASSERT_EQUAL(msm_test_proc_stop(&daemons[which].proc, SIGKILL, MSM_TEST_PROC_GRACE_MS),
                        128 + SIGKILL);
    }
    int handled_at_kill = wait_handled(&l, sent, N, 0, &dups);
    CU_ASSERT_TRUE(handled_at_kill < N);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&daemons[which].proc), 0);
    CU_ASSERT_EQUAL(msm_test_proc_wait_ready(&daemons[which].proc, NULL, 10000), 0);
    CU_ASSERT_EQUAL(wait_handled(&l, sent, N, 90, &dups), N);
    int max_attempts = 0;
    CU_ASSERT_EQUAL(wait_states(sub, sent, N, "succeeded", 60, &max_attempts), N);
    fprintf(stderr, "  %s kill -9 with %d of %d handled: all handled, %d handled twice\n",
            msm_test_daemon_names[which], handled_at_kill, N, dups);
    free(sent);
    lambda_stop(&l);
}

/* A worker of the lambda host killed with SIGKILL mid-request: the supervisor has a new
 * one serving within a second and msm pushes what the dead one held again (no event lost).
 * The handler blocks 300 ms on one of 4 threads of each of 2 workers. */
static int busy_worker(int admin_port, int *ready)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/debug/workers", admin_port);
    json_t *j = NULL;
    int pid = 0;
    *ready = 0;
    if (msm_test_http_json("GET", url, NULL, &j) == 200) {
        *ready = (int)json_integer_value(json_object_get(j, "ready"));
        size_t i;
        json_t *w;
        json_array_foreach(json_object_get(j, "workers"), i, w)
        {
            if (json_integer_value(json_object_get(w, "busy_threads")) > 0)
                pid = (int)json_integer_value(json_object_get(w, "pid"));
        }
    }
    json_decref(j);
    return pid;
}

static void test_lambda_worker_kill9(void)
{
    lambda_t l;
    memset(&l, 0, sizeof(l));
    l.proc.port = msm_test_free_port();
    int admin = msm_test_free_port();
    snprintf(l.proc.log, sizeof(l.proc.log), "%s/lambda-worker-k9.log", dir);
    snprintf(l.record, sizeof(l.record), "%s/lambda-worker-k9.jsonl", dir);
    msm_test_proc_arg(&l.proc, "%s", bins[NDAEMONS]);
    msm_test_proc_arg(&l.proc, "--port=%d", l.proc.port);
    msm_test_proc_arg(&l.proc, "--admin-port=%d", admin);
    msm_test_proc_arg(&l.proc, "--bind=127.0.0.1");
    msm_test_proc_arg(&l.proc, "--record=%s", l.record);
    msm_test_proc_arg(&l.proc, "--min-workers=2");
    msm_test_proc_arg(&l.proc, "--threads=4");
    msm_test_proc_arg(&l.proc, "--busy-ms=300");
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&l.proc), 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_wait_ready(&l.proc, "/healthz", 10000), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("host-k9", "host-k9-sub", &l, "\"max_concurrency\":8"), 0);
    enum { N = 100 };
    sent_t *sent = calloc(N, sizeof(*sent));
    CU_ASSERT_PTR_NOT_NULL_FATAL(sent);
    CU_ASSERT_EQUAL_FATAL(publish("host-k9", sent, N, NULL), 0);
    int dups = 0, ready = 0, pid = 0;
    for (int t = 0; t < 200 && (wait_handled(&l, sent, N, 0, &dups) < 10 || !pid); t++) {
        usleep(20000);
        pid = busy_worker(admin, &ready);
    }
    CU_ASSERT_TRUE_FATAL(pid > 0);
    int64_t killed = unix_ms();
    kill(pid, SIGKILL);
    int64_t back = -1;
    while (unix_ms() - killed < 3000) {
        int again = busy_worker(admin, &ready);
        (void)again;
        if (ready == 2) {
            back = unix_ms() - killed;
            break;
        }
        usleep(10000);
    }
    CU_ASSERT_TRUE(back >= 0 && back <= 1000);
    CU_ASSERT_EQUAL(wait_handled(&l, sent, N, 60, &dups), N);
    int max_attempts = 0;
    CU_ASSERT_EQUAL(wait_states("host-k9-sub", sent, N, "succeeded", 30, &max_attempts), N);
    /* What the dead worker held was pushed again: by the router after a failed attempt, or
     * by libcurl itself on a fresh connection when a reused one died before any answer (the
     * same attempt then). Either way every event was handled and succeeded. */
    fprintf(stderr,
            "  lambda worker kill -9 mid-request: serving again after %lld ms, all %d handled, "
            "max attempts %d\n",
            (long long)back, N, max_attempts);
    free(sent);
    lambda_stop(&l);
}

static void test_router_kill9_loses_nothing(void)
{
    kill9_mid_delivery(ROUTER, 0);
}

static void test_flowcontrol_kill9_loses_nothing(void)
{
    kill9_mid_delivery(FLOWCONTROL, 1);
}

static void test_scheduler_kill9_loses_nothing(void)
{
    kill9_mid_delivery(SCHEDULER, 1);
}

/* The frontend killed while requests are in flight: every event it acknowledged (200) is
 * handled; requests cut off got no answer and promised nothing. */
typedef struct {
    int delay_ms;
    int killed;
} killer_t;

static void *kill_frontend_later(void *arg)
{
    killer_t *k = arg;
    usleep((useconds_t)k->delay_ms * 1000);
    kill(daemons[FRONTEND].proc.pid, SIGKILL);
    k->killed = 1;
    return NULL;
}

static void test_frontend_kill9_loses_no_ack(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-k9-frontend", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("crashy-fe", "crashy-fe-sub", &l, NULL), 0);
    enum { BATCHES = 400, PER = 10 };
    sent_t *sent = calloc(BATCHES * PER, sizeof(*sent));
    killer_t k = {.delay_ms = 300};
    pthread_t th;
    CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, kill_frontend_later, &k), 0);
    int acked = 0, refused = 0;
    for (int b = 0; b < BATCHES && !(k.killed && refused); b++) {
        if (publish("crashy-fe", sent + acked, PER, NULL) == 0)
            acked += PER;
        else
            refused++;
    }
    pthread_join(th, NULL);
    /* Killed already: this only reaps it. */
    CU_ASSERT_EQUAL(msm_test_proc_stop(&daemons[FRONTEND].proc, 0, MSM_TEST_PROC_GRACE_MS),
                    128 + SIGKILL);
    CU_ASSERT_TRUE(acked > 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&daemons[FRONTEND].proc), 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_wait_ready(&daemons[FRONTEND].proc, NULL, 10000), 0);
    int dups = 0;
    CU_ASSERT_EQUAL(wait_handled(&l, sent, acked, 60, &dups), acked);
    fprintf(stderr, "  frontend kill -9 after %d acknowledged events: all handled\n", acked);
    free(sent);
    lambda_stop(&l);
}

static void test_bad_input_answers(void)
{
    json_t *r = NULL;
    CU_ASSERT_EQUAL(api("POST", "/v1/topics/nope:publish", "{\"events\":[{\"data\":1}]}", &r), 404);
    CU_ASSERT_PTR_NOT_NULL(json_object_get(json_object_get(r, "error"), "code"));
    json_decref(r);
    CU_ASSERT_EQUAL(api("POST", "/v1/topics/orders:publish",
                        "{\"events\":[{\"data\":1},"
                        "{\"delay_ms\":-1,\"data\":2}]}",
                        &r),
                    400);
    json_decref(r);
    CU_ASSERT_EQUAL(api("POST", "/v1/topics/orders:publish", "not json", NULL), 400);
    /* Endpoints msm must never push to: cloud metadata, an unlisted private address. */
    static const char *const unsafe[] = {"http://169.254.169.254/latest/meta-data/",
                                         "http://10.20.30.40:9000/"};
    for (size_t i = 0; i < 2; i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"%s\"}]}",
                 unsafe[i]);
        CU_ASSERT_EQUAL(api("PUT", "/v1/subscriptions/unsafe-sub", body, &r), 400);
        const char *msg =
            json_string_value(json_object_get(json_object_get(r, "error"), "message"));
        CU_ASSERT_PTR_NOT_NULL(msg && strstr(msg, "denied") ? msg : NULL);
        json_decref(r);
    }
    CU_ASSERT_EQUAL(api("GET", "/v1/subscriptions/unsafe-sub", NULL, NULL), 404);
    /* Every daemon still answers. */
    for (int i = 0; i < NDAEMONS; i++) {
        char url[128];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", daemons[i].proc.port);
        CU_ASSERT_EQUAL(msm_test_http_json("GET", url, NULL, NULL), 200);
    }
}

/* Publishes one JSON batch (a "events" array text) to @p topic; the ids go to @p ids. */
static int publish_batch(const char *topic, json_t *events, char (*ids)[64])
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/topics/%s:publish", topic);
    size_t n = json_array_size(events);
    json_t *req = json_pack("{s:o}", "events", events);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_t *resp = NULL;
    long st = api("POST", path, body, &resp);
    free(body);
    json_t *results = json_object_get(resp, "results");
    int rc = st == 200 && json_array_size(results) == n ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++)
        snprintf(ids[i], 64, "%s",
                 json_string_value(json_object_get(json_array_get(results, i), "id")));
    json_decref(resp);
    return rc;
}

/* Ordered: 100 keys x 100 events, every fifth attempt failing at random, and one poison event
 * (always failing) on key 0: per key the successes come in publish order; the poison holds
 * only its key and goes dead after max attempts, the other keys keep flowing meanwhile, and
 * key 0 moves on after it. */
static void test_ordered_keys_in_publish_order(void)
{
    enum { KEYS = 100, ROUNDS = 100, POISON_ROUND = 1 };
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(
        lambda_start(&l, "lambda-ordered", "--fail-rate=0.2", "--fail-attr=poison=yes"), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("ordered", "ordered-sub", &l,
                                      "\"ordered\":true,\"max_concurrency\":200,"
                                      "\"retry\":{\"max_attempts\":8,\"min_backoff_ms\":20,"
                                      "\"max_backoff_ms\":200}"),
                          0);
    char(*ids)[64] = calloc(KEYS * ROUNDS, 64);
    for (int r = 0; r < ROUNDS; r++) {
        json_t *events = json_array();
        for (int k = 0; k < KEYS; k++) {
            char key[16];
            snprintf(key, sizeof(key), "key-%d", k);
            json_t *ev =
                json_pack("{s:{s:i,s:i},s:s}", "data", "key", k, "seq", r, "ordering_key", key);
            if (k == 0 && r == POISON_ROUND)
                json_object_set_new(ev, "attributes", json_pack("{s:s}", "poison", "yes"));
            json_array_append_new(events, ev);
        }
        CU_ASSERT_EQUAL_FATAL(publish_batch("ordered", events, ids + (size_t)r * KEYS), 0);
    }
    /* Everything but the poison succeeds; the poison is dead. */
    const char *poison = ids[POISON_ROUND * KEYS + 0];
    int64_t deadline = unix_ms() + 120000;
    json_t *pt = NULL;
    while (unix_ms() < deadline) {
        json_decref(pt);
        pt = task("ordered-sub", poison);
        const char *st = json_string_value(json_object_get(pt, "state"));
        if (st && strcmp(st, "dead") == 0)
            break;
        usleep(200000);
    }
    const char *pstate = json_string_value(json_object_get(pt, "state"));
    CU_ASSERT_STRING_EQUAL(pstate ? pstate : "(none)", "dead");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(pt, "attempts")), 8);
    json_decref(pt);
    /* Per key: the index of each event's first success in the record, in publish order. */
    int *first_ok = malloc(sizeof(int) * KEYS * ROUNDS);
    record_t *rec = NULL;
    size_t nrec = 0;
    for (int t = 0; t < 1200; t++) {
        free(rec);
        nrec = records_read(l.record, &rec);
        size_t oks = 0;
        for (size_t i = 0; i < nrec; i++)
            oks += strcmp(rec[i].result, "ok") == 0;
        if (oks >= KEYS * ROUNDS - 1)
            break;
        usleep(100000);
    }
    for (int i = 0; i < KEYS * ROUNDS; i++)
        first_ok[i] = -1;
    int64_t poison_first = 0, poison_last = 0;
    for (size_t i = 0; i < nrec; i++) {
        if (strcmp(rec[i].id, poison) == 0) {
            if (!poison_first)
                poison_first = rec[i].received_ms;
            poison_last = rec[i].received_ms;
        }
        if (strcmp(rec[i].result, "ok") != 0)
            continue;
        for (int e = 0; e < KEYS * ROUNDS; e++) {
            if (first_ok[e] < 0 && strcmp(rec[i].id, ids[e]) == 0) {
                first_ok[e] = (int)i;
                break;
            }
        }
    }
    int missing = 0, out_of_order = 0;
    for (int k = 0; k < KEYS; k++) {
        int last = -1;
        for (int r = 0; r < ROUNDS; r++) {
            int e = r * KEYS + k;
            if (k == 0 && r == POISON_ROUND)
                continue;
            if (first_ok[e] < 0) {
                missing++;
                continue;
            }
            if (first_ok[e] < last)
                out_of_order++;
            last = first_ok[e];
        }
    }
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT_EQUAL(out_of_order, 0);
    /* The other keys did not wait for the poison: many of their events were handled while it
     * was being retried. */
    int others_meanwhile = 0;
    for (size_t i = 0; i < nrec; i++) {
        if (rec[i].received_ms > poison_first && rec[i].received_ms < poison_last &&
            strcmp(rec[i].ordering_key, "key-0") != 0 && strcmp(rec[i].result, "ok") == 0)
            others_meanwhile++;
    }
    CU_ASSERT(others_meanwhile > 100);
    /* Key 0 went on after the poison died, not before. */
    int after = first_ok[(POISON_ROUND + 1) * KEYS];
    int dead_at = -1;
    for (size_t i = 0; i < nrec; i++) {
        if (strcmp(rec[i].id, poison) == 0)
            dead_at = (int)i;
    }
    CU_ASSERT(after > dead_at);
    fprintf(stderr,
            "\n  ordered: %d keys x %d events in order, poison dead after 8 attempts, "
            "%d other successes while it was retried\n",
            KEYS, ROUNDS, others_meanwhile);
    /* Nothing stays held. */
    json_t *held = NULL;
    CU_ASSERT_EQUAL(api("GET", "/v1/subscriptions/ordered-sub/keys?blocked=true", NULL, &held),
                    200);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(held, "keys")), 0);
    json_decref(held);
    free(rec);
    free(first_ok);
    free(ids);
    lambda_stop(&l);
}

/* rate_limit_per_s 500: after the first second's burst, 475-525 pushes per second over 10 s. */
static void test_rate_limit(void)
{
    lambda_t l;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, "lambda-rate", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(setup_route("paced", "paced-sub", &l, "\"rate_limit_per_s\":500"), 0);
    enum { N = 6500 };
    sent_t *sent = calloc(N, sizeof(*sent));
    CU_ASSERT_EQUAL_FATAL(publish("paced", sent, N, NULL), 0);
    int dups = 0;
    CU_ASSERT_EQUAL(wait_handled(&l, sent, N, 40, &dups), N);
    record_t *rec = NULL;
    size_t nrec = records_read(l.record, &rec);
    int64_t first = INT64_MAX;
    for (size_t i = 0; i < nrec; i++)
        first = rec[i].received_ms < first ? rec[i].received_ms : first;
    int in_window = 0;
    for (size_t i = 0; i < nrec; i++)
        in_window += rec[i].received_ms >= first + 1000 && rec[i].received_ms < first + 11000;
    fprintf(stderr, "\n  rate_limit_per_s 500: %.1f pushes/s over 10 s\n", in_window / 10.0);
    CU_ASSERT(in_window >= 4750 && in_window <= 5250);
    json_t *st = NULL;
    CU_ASSERT_EQUAL(api("GET", "/v1/subscriptions/paced-sub/stats", NULL, &st), 200);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(st, "rate_limit_per_s")), 500);
    json_decref(st);
    free(rec);
    free(sent);
    lambda_stop(&l);
}

/* The stats' view of endpoint @p port: 1 healthy, 0 not, -1 not listed. */
static int endpoint_healthy(const char *sub, int port)
{
    char path[256], url[64];
    snprintf(path, sizeof(path), "/v1/subscriptions/%s/stats", sub);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    json_t *st = NULL;
    int healthy = -1;
    if (api("GET", path, NULL, &st) == 200) {
        size_t i;
        json_t *ep;
        json_array_foreach(json_object_get(st, "endpoints"), i, ep)
        {
            const char *u = json_string_value(json_object_get(ep, "url"));
            if (u && strcmp(u, url) == 0)
                healthy = json_is_true(json_object_get(ep, "healthy"));
        }
    }
    json_decref(st);
    return healthy;
}

static size_t oks_in(const char *record)
{
    record_t *r = NULL;
    size_t n = records_read(record, &r), oks = 0;
    for (size_t i = 0; i < n; i++)
        oks += strcmp(r[i].result, "ok") == 0;
    free(r);
    return oks;
}

/* Two endpoints with health checks; one is killed: within two health intervals everything
 * goes to the other and no attempt is spent; it comes back when the endpoint does. */
static void test_failover_between_endpoints(void)
{
    lambda_t a, b;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&a, "lambda-fo-a", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(lambda_start(&b, "lambda-fo-b", NULL, NULL), 0);
    int b_port = b.proc.port;
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/topics/fo", "{}", NULL), 200);
    char body[1024];
    const char *health = "\"health\":{\"path\":\"/healthz\",\"interval_ms\":500,"
                         "\"unhealthy_threshold\":2,\"healthy_threshold\":1}";
    snprintf(body, sizeof(body),
             "{\"topic\":\"fo\",\"endpoints\":[{\"url\":\"http://127.0.0.1:%d/\",%s},"
             "{\"url\":\"http://127.0.0.1:%d/\",%s}]}",
             a.proc.port, health, b_port, health);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/subscriptions/fo-sub", body, NULL), 200);
    sleep(2);
    enum { N1 = 100, N2 = 200, N3 = 100 };
    sent_t *sent = calloc(N1 + N2 + N3, sizeof(*sent));
    CU_ASSERT_EQUAL_FATAL(publish("fo", sent, N1, NULL), 0);
    for (int t = 0; t < 200 && oks_in(a.record) + oks_in(b.record) < N1; t++)
        usleep(100000);
    CU_ASSERT(oks_in(a.record) > 0 && oks_in(b.record) > 0); /* both took turns */
    /* b dies without a word. */
    int64_t killed = unix_ms();
    CU_ASSERT_EQUAL(msm_test_proc_stop(&b.proc, SIGKILL, MSM_TEST_PROC_GRACE_MS), 128 + SIGKILL);
    CU_ASSERT_EQUAL_FATAL(publish("fo", sent + N1, N2, NULL), 0);
    int64_t shifted = 0;
    for (int t = 0; t < 100 && !shifted; t++) {
        if (endpoint_healthy("fo-sub", b_port) == 0)
            shifted = unix_ms();
        else
            usleep(50000);
    }
    CU_ASSERT(shifted > 0);
    size_t a_before = oks_in(a.record);
    for (int t = 0; t < 300 && oks_in(a.record) < a_before + 1; t++)
        usleep(100000);
    int max_attempts = 0;
    CU_ASSERT_EQUAL(wait_states("fo-sub", sent, N1 + N2, "succeeded", 60, &max_attempts), N1 + N2);
    CU_ASSERT_EQUAL(max_attempts, 1); /* pushes that found b dead cost no attempt */
    /* b is back on its port: checked healthy, it takes its share again. */
    int64_t restarted = unix_ms();
    CU_ASSERT_EQUAL_FATAL(lambda_start_on(&b, b_port, "lambda-fo-b2", NULL, NULL), 0);
    int64_t back = 0;
    for (int t = 0; t < 100 && !back; t++) {
        if (endpoint_healthy("fo-sub", b_port) == 1)
            back = unix_ms();
        else
            usleep(50000);
    }
    CU_ASSERT(back > 0);
    CU_ASSERT_EQUAL_FATAL(publish("fo", sent + N1 + N2, N3, NULL), 0);
    CU_ASSERT_EQUAL(wait_states("fo-sub", sent + N1 + N2, N3, "succeeded", 60, &max_attempts), N3);
    CU_ASSERT(oks_in(b.record) > 0);
    fprintf(stderr,
            "\n  failover: endpoint reported unhealthy %lld ms after kill -9 (health "
            "interval 500 ms, threshold 2), %d of %d events succeeded on attempt 1; "
            "back %lld ms after its restart, %zu events to it after\n",
            (long long)(shifted - killed), N1 + N2, N1 + N2, (long long)(back - restarted),
            oks_in(b.record));
    free(sent);
    lambda_stop(&a);
    lambda_stop(&b);
}

/* Locality: zone a preferred over b; while a is up everything goes to a, when it dies the
 * traffic spills over to b with no attempt spent. */
static void test_zone_spill_over(void)
{
    lambda_t a, b;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&a, "lambda-zone-a", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(lambda_start(&b, "lambda-zone-b", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/topics/zoned", "{}", NULL), 200);
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"topic\":\"zoned\",\"locality\":[\"a\",\"b\"],\"endpoints\":["
             "{\"url\":\"http://127.0.0.1:%d/\",\"zone\":\"b\"},"
             "{\"url\":\"http://127.0.0.1:%d/\",\"zone\":\"a\"}]}",
             b.proc.port, a.proc.port);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/subscriptions/zoned-sub", body, NULL), 200);
    sleep(2);
    enum { N = 100 };
    sent_t *sent = calloc(2 * N, sizeof(*sent));
    int max_attempts = 0;
    CU_ASSERT_EQUAL_FATAL(publish("zoned", sent, N, NULL), 0);
    CU_ASSERT_EQUAL(wait_states("zoned-sub", sent, N, "succeeded", 60, &max_attempts), N);
    CU_ASSERT_EQUAL(oks_in(a.record), N); /* the preferred zone has capacity: all of it */
    CU_ASSERT_EQUAL(oks_in(b.record), 0);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&a.proc, SIGKILL, MSM_TEST_PROC_GRACE_MS), 128 + SIGKILL);
    CU_ASSERT_EQUAL_FATAL(publish("zoned", sent + N, N, NULL), 0);
    CU_ASSERT_EQUAL(wait_states("zoned-sub", sent + N, N, "succeeded", 60, &max_attempts), N);
    CU_ASSERT_EQUAL(max_attempts, 1); /* pushes that found a dead cost no attempt */
    CU_ASSERT_EQUAL(oks_in(b.record), N);
    fprintf(stderr,
            "\n  locality: %d events to zone a while up, %d spilled over to b after "
            "kill -9 of a, all on attempt 1\n",
            N, N);
    free(sent);
    lambda_stop(&b);
}

/* The canary's state in the stats ("" when none). */
static void canary_state(const char *sub, char *out, size_t n)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/subscriptions/%s/stats", sub);
    json_t *st = NULL;
    out[0] = '\0';
    if (api("GET", path, NULL, &st) == 200) {
        const char *s = json_string_value(json_object_get(json_object_get(st, "canary"), "state"));
        snprintf(out, n, "%s", s ? s : "");
    }
    json_decref(st);
}

/* A canary endpoint (version v2) failing half its pushes is rolled back by the router after
 * min_events, then gets nothing; a healthy canary stays active until promoted. */
static void test_canary_rollback_and_promote(void)
{
    lambda_t v1, v2;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&v1, "lambda-v1", NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(lambda_start(&v2, "lambda-v2", "--fail-rate=0.5", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/topics/rel", "{}", NULL), 200);
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"topic\":\"rel\",\"endpoints\":["
             "{\"url\":\"http://127.0.0.1:%d/\",\"version\":\"v1\"},"
             "{\"url\":\"http://127.0.0.1:%d/\",\"version\":\"v2\"}],"
             "\"canary\":{\"version\":\"v2\",\"share\":0.5,\"max_failure_ratio\":0.05,"
             "\"min_events\":50},"
             "\"retry\":{\"max_attempts\":20,\"min_backoff_ms\":10,\"max_backoff_ms\":100}}",
             v1.proc.port, v2.proc.port);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/subscriptions/rel-sub", body, NULL), 200);
    sleep(2);
    enum { N = 400 };
    sent_t *sent = calloc(2 * N, sizeof(*sent));
    int max_attempts = 0;
    CU_ASSERT_EQUAL_FATAL(publish("rel", sent, N, NULL), 0);
    CU_ASSERT_EQUAL(wait_states("rel-sub", sent, N, "succeeded", 90, &max_attempts), N);
    char state[32] = "";
    for (int t = 0; t < 50 && strcmp(state, "rolled_back") != 0; t++) {
        canary_state("rel-sub", state, sizeof(state));
        usleep(100000);
    }
    CU_ASSERT_STRING_EQUAL(state, "rolled_back");
    size_t v2_before = oks_in(v2.record);
    record_t *r = NULL;
    size_t v2_pushes = records_read(v2.record, &r);
    free(r);
    CU_ASSERT_EQUAL_FATAL(publish("rel", sent + N, N / 4, NULL), 0);
    CU_ASSERT_EQUAL(wait_states("rel-sub", sent + N, N / 4, "succeeded", 60, &max_attempts), N / 4);
    size_t v2_after = records_read(v2.record, &r);
    free(r);
    CU_ASSERT_EQUAL(v2_after, v2_pushes); /* rolled back: nothing more to v2 */
    fprintf(stderr,
            "\n  canary: fail-rate 0.5 rolled back (v2 had %zu pushes, %zu ok), then 0 of "
            "%d events to it\n",
            v2_pushes, v2_before, N / 4);
    lambda_stop(&v2);
    /* A healthy canary stays active, and the operator promotes it. */
    lambda_t v2b;
    CU_ASSERT_EQUAL_FATAL(lambda_start(&v2b, "lambda-v2b", NULL, NULL), 0);
    snprintf(body, sizeof(body),
             "{\"topic\":\"rel\",\"endpoints\":["
             "{\"url\":\"http://127.0.0.1:%d/\",\"version\":\"v1\"},"
             "{\"url\":\"http://127.0.0.1:%d/\",\"version\":\"v3\"}],"
             "\"canary\":{\"version\":\"v3\",\"share\":0.2,\"min_events\":20}}",
             v1.proc.port, v2b.proc.port);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/subscriptions/rel-sub2", body, NULL), 200);
    sleep(2);
    sent_t *more = calloc(N, sizeof(*more));
    CU_ASSERT_EQUAL_FATAL(publish("rel", more, N / 2, NULL), 0);
    CU_ASSERT_EQUAL(wait_states("rel-sub2", more, N / 2, "succeeded", 60, &max_attempts), N / 2);
    sleep(2);
    canary_state("rel-sub2", state, sizeof(state));
    CU_ASSERT_STRING_EQUAL(state, "active");
    json_t *pr = NULL;
    CU_ASSERT_EQUAL(api("POST", "/v1/subscriptions/rel-sub2/canary:promote", "{}", &pr), 200);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(pr, "state")), "promoted");
    json_decref(pr);
    free(more);
    free(sent);
    lambda_stop(&v1);
    lambda_stop(&v2b);
}

static CU_TestInfo tests[] = {
    {"1,000 events handled exactly once", test_thousand_exactly_once},
    {"tracing: one grep of a trace id finds a span in each of the five logs",
     test_trace_spans_at_every_hop},
    {"fail-rate 0.2: retried until all succeed", test_retries_until_success},
    {"fatal-rate 1: dead after one attempt", test_fatal_goes_dead},
    {"pause holds every event, resume delivers them", test_pause_holds_then_resume},
    {"delay_ms 1500: never early", test_delayed_never_early},
    {"deadline: expired events dead-lettered, never pushed; Msm-Deadline the earlier",
     test_deadline_expired_dead_lettered},
    {"ordered: 100 keys x 100 events in publish order, a poison holds only its key",
     test_ordered_keys_in_publish_order},
    {"rate_limit_per_s 500 over 10 s", test_rate_limit},
    {"failover: a killed endpoint is left within two health intervals, no attempt spent",
     test_failover_between_endpoints},
    {"locality: zone a preferred, spill-over to b when a dies", test_zone_spill_over},
    {"canary: fail-rate 0.5 rolled back after min_events, a healthy one promoted",
     test_canary_rollback_and_promote},
    {"lambda worker kill -9 mid-request: back within 1 s, redelivered", test_lambda_worker_kill9},
    {"router kill -9 mid-run loses nothing", test_router_kill9_loses_nothing},
    {"flowcontrol kill -9 mid-run, events published while down",
     test_flowcontrol_kill9_loses_nothing},
    {"scheduler kill -9 mid-run, events published while down", test_scheduler_kill9_loses_nothing},
    {"frontend kill -9 while publishing loses no acknowledged event",
     test_frontend_kill9_loses_no_ack},
    {"bad input: clear errors, nothing crashes", test_bad_input_answers},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"e2e", suite_init, suite_clean, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    int plain = argc == NDAEMONS + 2 ||
                (argc == NDAEMONS + 3 && strcmp(argv[NDAEMONS + 2], "redis") == 0);
    on_kafka = argc == NDAEMONS + 4 && strcmp(argv[NDAEMONS + 2], "kafka") == 0;
    if (!plain && !on_kafka) {
        fprintf(stderr,
                "usage: %s FRONTEND SCHEDULER FLOWCONTROL ROUTER EXAMPLE_LAMBDA "
                "[redis | kafka KAFKA_MOCK]\n",
                argv[0]);
        return 2;
    }
    kafka_mock_bin = on_kafka ? argv[NDAEMONS + 3] : NULL;
    for (int i = 0; i <= NDAEMONS; i++)
        bins[i] = argv[i + 1];
    signal(SIGPIPE, SIG_IGN);
    return msm_test_run(suites);
}
