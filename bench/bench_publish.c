/* SPDX-License-Identifier: MIT */
/* Publish over HTTP: a real msm-frontend process and a private redis-server (fsync always),
 * driven by libcurl multi with keep-alive and a fixed number of requests in flight. Events/s
 * and per-request latency for plain JSON events and for the same JSON converted to Avro by a
 * topic bound to a registry subject; with -k, the frontend's log is Kafka (a mock cluster
 * served by tools/msm-kafka-mock) instead of Redis. Method and caveats: bench/README.md.
 *
 *   msm-bench-publish [-c CONCURRENCY] [-n REQUESTS] [-k KAFKA_MOCK] FRONTEND
 *                     [json|avro [BATCH]] */
#include "bench_http.h"
#include "msm_test.h"
#include "msm_test_proc.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONCURRENCY 16
#define MAX_CONCURRENCY     1024
#define REQUEST_TIMEOUT_MS  30000  /* one publish; fsync always makes none take this long */
#define ROW_DEADLINE_MS     120000 /* a row that has not finished by then is reported failed */
#define ANSWER_KEEP         400    /* bytes of an answer kept to show in an error */
#define SUBJECT             "bench-value"

/* The ~200-byte event both forms publish; the Avro schema below describes it exactly (no
 * unions, so plain JSON and Avro's JSON encoding agree). */
#define EVENT_FMT                                                                                  \
    "{\"data\":{\"order_id\":%d,\"customer\":\"customer-000042\",\"status\":\"paid\","             \
    "\"currency\":\"EUR\",\"amount\":1299.5,\"gift\":false,"                                       \
    "\"items\":[\"sku-10001\",\"sku-10002\",\"sku-10003\"],"                                       \
    "\"shipping\":{\"country\":\"DE\",\"city\":\"Berlin\",\"postcode\":\"10115\"}}}"
#define EVENT_MAX_BYTES 320

static const char avro_schema_body[] =
    "{\"schemaType\":\"AVRO\",\"schema\":\"{\\\"type\\\":\\\"record\\\",\\\"name\\\":"
    "\\\"Order\\\",\\\"namespace\\\":\\\"bench\\\",\\\"fields\\\":["
    "{\\\"name\\\":\\\"order_id\\\",\\\"type\\\":\\\"long\\\"},"
    "{\\\"name\\\":\\\"customer\\\",\\\"type\\\":\\\"string\\\"},"
    "{\\\"name\\\":\\\"status\\\",\\\"type\\\":\\\"string\\\"},"
    "{\\\"name\\\":\\\"currency\\\",\\\"type\\\":\\\"string\\\"},"
    "{\\\"name\\\":\\\"amount\\\",\\\"type\\\":\\\"double\\\"},"
    "{\\\"name\\\":\\\"gift\\\",\\\"type\\\":\\\"boolean\\\"},"
    "{\\\"name\\\":\\\"items\\\",\\\"type\\\":{\\\"type\\\":\\\"array\\\",\\\"items\\\":"
    "\\\"string\\\"}},"
    "{\\\"name\\\":\\\"shipping\\\",\\\"type\\\":{\\\"type\\\":\\\"record\\\",\\\"name\\\":"
    "\\\"Address\\\",\\\"fields\\\":["
    "{\\\"name\\\":\\\"country\\\",\\\"type\\\":\\\"string\\\"},"
    "{\\\"name\\\":\\\"city\\\",\\\"type\\\":\\\"string\\\"},"
    "{\\\"name\\\":\\\"postcode\\\",\\\"type\\\":\\\"string\\\"}]}}]}\"}";

/* ---- time ---- */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- the answer of one request (kept short: only shown when something fails) ---- */

typedef struct {
    char text[ANSWER_KEEP];
    size_t len;
} answer_t;

static size_t keep_answer(char *ptr, size_t size, size_t n, void *opaque)
{
    answer_t *a = opaque;
    size_t bytes = size * n;
    size_t room = sizeof(a->text) - 1 - a->len;
    size_t take = bytes < room ? bytes : room;
    memcpy(a->text + a->len, ptr, take);
    a->len += take;
    a->text[a->len] = '\0';
    return bytes;
}

/* One blocking request, for set-up only (never while measuring). @returns the HTTP status,
 * 0 when there was no answer (the reason is then in @p a). */
static long http_call(const char *method, const char *url, const char *body, answer_t *a)
{
    a->len = 0;
    a->text[0] = '\0';
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (!e || !h) {
        snprintf(a->text, sizeof(a->text), "out of memory");
        curl_slist_free_all(h);
        curl_easy_cleanup(e);
        return 0;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, keep_answer);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)REQUEST_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    long status = 0;
    CURLcode rc = curl_easy_perform(e);
    if (rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(a->text, sizeof(a->text), "%s", curl_easy_strerror(rc));
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return status;
}

/* ---- the frontend process ---- */

typedef struct {
    msm_test_proc_t proc;
    char url[64];
} frontend_t;

/* @p kafka_brokers: the log's bootstrap servers, NULL for the Redis log. */
static int frontend_start(frontend_t *fe,
                          const char *bin,
                          const char *redis_url,
                          const char *dir,
                          const char *kafka_brokers)
{
    msm_test_proc_t *p = &fe->proc;
    char ns[64];
    p->port = msm_test_free_port();
    if (p->port <= 0)
        return -1;
    snprintf(fe->url, sizeof(fe->url), "http://127.0.0.1:%d", p->port);
    snprintf(p->log, sizeof(p->log), "%s/frontend.log", dir);
    /* Never outlive the benchmark, even when it is killed. */
    p->death_signal = SIGTERM;
    msm_test_proc_arg(p, "%s", bin);
    msm_test_proc_arg(p, "--redis.url=%s", redis_url);
    msm_test_proc_arg(p, "--namespace=%s", msm_test_namespace(ns, sizeof(ns)));
    msm_test_proc_arg(p, "--http.port=%d", p->port);
    msm_test_proc_arg(p, "--http.bind=127.0.0.1");
    msm_test_proc_arg(p, "--router.allow_networks=127.0.0.0/8,::1"); /* as every local run */
    /* Warnings only: a log line per request would be part of what is measured. */
    msm_test_proc_arg(p, "--logging.level=warn");
    if (kafka_brokers) {
        msm_test_proc_arg(p, "--log.backend=kafka");
        msm_test_proc_arg(p, "--kafka.brokers=%s", kafka_brokers);
    }
    if (msm_test_proc_start(p) != 0)
        return -1;
    return msm_test_proc_wait_ready(p, NULL, 15000);
}

/* The last lines of the frontend's log, to stderr: why it failed is usually there. */
static void print_log_tail(const char *path, int lines)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char ring[20][300];
    int n = 0;
    lines = lines > 20 ? 20 : lines;
    while (fgets(ring[n % lines], sizeof(ring[0]), f))
        n++;
    fclose(f);
    if (n == 0)
        return;
    fprintf(stderr, "--- last lines of the frontend's log ---\n");
    for (int i = n > lines ? n - lines : 0; i < n; i++)
        fputs(ring[i % lines], stderr);
}

static void frontend_stop(frontend_t *fe)
{
    msm_test_proc_stop(&fe->proc, SIGTERM, MSM_TEST_PROC_GRACE_MS);
}

/* ---- one row: N requests, C in flight ---- */

typedef struct {
    CURL *easy;
    uint64_t sent_us;
    answer_t answer;
} slot_t;

typedef struct {
    const char *form;
    int batch;
    int requests;
    char url[200];
    char *body; /* the same batch for every request */
    struct curl_slist *headers;
    CURLM *multi;
    slot_t *slots;
    int concurrency;
    int sent;
    int answered;
    uint64_t *lat_us; /* one per answered request, when measuring */
    int nlat;
    char error[600]; /* why the row failed; "" while it has not */
} row_t;

static char *make_batch(int batch)
{
    size_t cap = 16 + (size_t)batch * (EVENT_MAX_BYTES + 1);
    char *body = malloc(cap);
    if (!body)
        return NULL;
    size_t len = (size_t)snprintf(body, cap, "{\"events\":[");
    for (int i = 0; i < batch; i++) {
        if (i > 0)
            body[len++] = ',';
        len += (size_t)snprintf(body + len, cap - len, EVENT_FMT, 1000000 + i);
    }
    snprintf(body + len, cap - len, "]}");
    return body;
}

static int slot_send(row_t *r, slot_t *s)
{
    s->answer.len = 0;
    s->answer.text[0] = '\0';
    s->sent_us = now_us();
    if (curl_multi_add_handle(r->multi, s->easy) != CURLM_OK) {
        snprintf(r->error, sizeof(r->error), "curl_multi_add_handle failed");
        return -1;
    }
    r->sent++;
    return 0;
}

/* One request finished: latency on 200, the row's error otherwise; the slot goes again. */
static void slot_done(row_t *r, slot_t *s, CURLcode result)
{
    uint64_t lat = now_us() - s->sent_us;
    long status = 0;
    curl_multi_remove_handle(r->multi, s->easy);
    if (result == CURLE_OK)
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        const char *path = strstr(r->url, "/v1/");
        if (r->error[0])
            return;
        if (result != CURLE_OK)
            snprintf(r->error, sizeof(r->error), "POST %s: %s", path, curl_easy_strerror(result));
        else
            snprintf(r->error, sizeof(r->error), "POST %s: HTTP %ld %s", path, status,
                     s->answer.text);
        return;
    }
    r->answered++;
    if (r->lat_us)
        r->lat_us[r->nlat++] = lat;
    if (r->sent < r->requests && !r->error[0])
        slot_send(r, s);
}

static void on_done(void *ctx, void *slot, CURLcode result)
{
    slot_done(ctx, slot, result);
}

static int slots_init(row_t *r)
{
    r->slots = calloc((size_t)r->concurrency, sizeof(*r->slots));
    if (!r->slots)
        return -1;
    for (int i = 0; i < r->concurrency; i++) {
        slot_t *s = &r->slots[i];
        if (!(s->easy = bench_easy_new(r->url, r->headers, keep_answer, &s->answer, s,
                                       REQUEST_TIMEOUT_MS)))
            return -1;
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    }
    return 0;
}

static void slots_free(row_t *r)
{
    if (!r->slots)
        return;
    for (int i = 0; i < r->concurrency; i++) {
        if (r->slots[i].easy) {
            curl_multi_remove_handle(r->multi, r->slots[i].easy);
            curl_easy_cleanup(r->slots[i].easy);
        }
    }
    free(r->slots);
    r->slots = NULL;
}

/* Sends r->requests requests, r->concurrency at a time, until all are answered 200, one is
 * not, or the row's deadline passes. @returns 0 when all were answered 200. */
static int run_requests(row_t *r)
{
    r->sent = 0;
    r->answered = 0;
    for (int i = 0; i < r->concurrency && r->sent < r->requests; i++) {
        if (slot_send(r, &r->slots[i]) != 0)
            return -1;
    }
    uint64_t deadline = now_us() + (uint64_t)ROW_DEADLINE_MS * 1000u;
    while (r->answered < r->requests && !r->error[0]) {
        if (bench_multi_turn(r->multi, on_done, r) < 0) {
            snprintf(r->error, sizeof(r->error), "curl_multi_perform failed");
            break;
        }
        if (now_us() > deadline) {
            snprintf(r->error, sizeof(r->error), "%d of %d requests answered within %d s",
                     r->answered, r->requests, ROW_DEADLINE_MS / 1000);
            break;
        }
        if (r->answered < r->requests && !r->error[0])
            curl_multi_poll(r->multi, NULL, 0, 100, NULL);
    }
    return r->error[0] ? -1 : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void print_failed(const row_t *r)
{
    printf("| %-4s | %5d | FAILED: %s\n", r->form, r->batch, r->error);
    fflush(stdout);
}

/* Warms the connections up, then measures. @returns 0, or -1 after printing a FAILED row. */
static int run_row(row_t *r)
{
    int rc = -1;
    r->multi = bench_multi_new(r->concurrency);
    r->body = make_batch(r->batch);
    r->headers = bench_json_headers();
    if (!r->multi || !r->body || !r->headers || slots_init(r) != 0) {
        snprintf(r->error, sizeof(r->error), "out of memory");
        goto done;
    }

    int measured = r->requests;
    r->requests = r->concurrency * 2;
    if (run_requests(r) != 0)
        goto done;
    r->requests = measured;
    r->lat_us = calloc((size_t)measured, sizeof(*r->lat_us));
    if (!r->lat_us) {
        snprintf(r->error, sizeof(r->error), "out of memory");
        goto done;
    }
    uint64_t t0 = now_us();
    if (run_requests(r) != 0)
        goto done;
    double secs = (double)(now_us() - t0) / 1e6;
    qsort(r->lat_us, (size_t)r->nlat, sizeof(*r->lat_us), cmp_u64);
    long events = (long)measured * r->batch;
    printf("| %-4s | %5d | %8d | %7ld | %9.0f | %7.2f | %7.2f |\n", r->form, r->batch, measured,
           events, events / secs, r->lat_us[r->nlat / 2] / 1000.0,
           r->lat_us[(r->nlat * 99) / 100] / 1000.0);
    fflush(stdout);
    rc = 0;
done:
    if (rc != 0)
        print_failed(r);
    slots_free(r);
    curl_slist_free_all(r->headers);
    curl_multi_cleanup(r->multi);
    free(r->body);
    free(r->lat_us);
    r->lat_us = NULL;
    return rc;
}

/* ---- the forms: a plain topic, and a topic bound to an Avro subject ---- */

/* Creates the form's topic (and schema). @returns 0, or -1 with the reason in @p why. */
static int prepare_form(const frontend_t *fe, const char *form, char *why, size_t why_size)
{
    char url[200];
    answer_t a;
    long status;
    if (strcmp(form, "avro") == 0) {
        snprintf(url, sizeof(url), "%s/subjects/%s/versions", fe->url, SUBJECT);
        status = http_call("POST", url, avro_schema_body, &a);
        if (status != 200) {
            snprintf(why, why_size, "POST /subjects/%s/versions: HTTP %ld %s", SUBJECT, status,
                     a.text);
            return -1;
        }
        snprintf(url, sizeof(url), "%s/v1/topics/bench-avro", fe->url);
        status = http_call("PUT", url, "{\"schema_subject\":\"" SUBJECT "\"}", &a);
    } else {
        snprintf(url, sizeof(url), "%s/v1/topics/bench-json", fe->url);
        status = http_call("PUT", url, "{}", &a);
    }
    if (status != 200) {
        snprintf(why, why_size, "PUT %s: HTTP %ld %s", strstr(url, "/v1/"), status, a.text);
        return -1;
    }
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: msm-bench-publish [-c CONCURRENCY] [-n REQUESTS] [-k KAFKA_MOCK] "
                    "FRONTEND [json|avro [BATCH]]\n");
    return 2;
}

int main(int argc, char **argv)
{
    int concurrency = DEFAULT_CONCURRENCY, only_requests = 0, opt;
    const char *kafka_mock_bin = NULL;
    while ((opt = getopt(argc, argv, "c:n:k:")) != -1) {
        if (opt == 'c')
            concurrency = atoi(optarg);
        else if (opt == 'k')
            kafka_mock_bin = optarg;
        else if (opt == 'n')
            only_requests = atoi(optarg);
        else
            return usage();
    }
    if (optind >= argc || concurrency < 1 || concurrency > MAX_CONCURRENCY || only_requests < 0)
        return usage();
    const char *bin = argv[optind];
    const char *only_form = optind + 1 < argc ? argv[optind + 1] : NULL;
    int only_batch = optind + 2 < argc ? atoi(argv[optind + 2]) : 0;

    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    msm_test_redis_t redis;
    frontend_t fe = {0};
    msm_test_proc_t kafka_mock = {0};
    char brokers[512] = "", mock_log[600];
    if (msm_test_redis_start(&redis) != 0) {
        fprintf(stderr, "could not start redis-server\n");
        return 1;
    }
    snprintf(mock_log, sizeof(mock_log), "%s/kafka-mock.log", redis.dir);
    if (kafka_mock_bin && msm_test_kafka_mock_start(&kafka_mock, kafka_mock_bin, 3, mock_log,
                                                    brokers, sizeof(brokers)) != 0) {
        fprintf(stderr, "%s printed no bootstrap servers (log: %s)\n", kafka_mock_bin, mock_log);
        msm_test_redis_destroy(&redis);
        return 1;
    }
    if (frontend_start(&fe, bin, redis.url, redis.dir, kafka_mock_bin ? brokers : NULL) != 0) {
        fprintf(stderr, "%s did not become ready\n", bin);
        frontend_stop(&fe);
        print_log_tail(fe.proc.log, 20);
        msm_test_proc_stop(&kafka_mock, SIGTERM, MSM_TEST_PROC_GRACE_MS);
        msm_test_redis_destroy(&redis);
        return 1;
    }

    printf("publish over HTTP to the %s log: %d-byte JSON events, %d requests in flight, "
           "keep-alive\n",
           kafka_mock_bin ? "Kafka (librdkafka mock cluster, 3 brokers)" : "Redis",
           snprintf(NULL, 0, EVENT_FMT, 1000000), concurrency);
    printf("| form | batch | requests | events  | events/s  | p50 ms  | p99 ms  |\n");
    printf("|------|-------|----------|---------|-----------|---------|---------|\n");
    fflush(stdout);
    static const char *const forms[] = {"json", "avro"};
    static const int batches[] = {1, 100, 1000};
    /* A few seconds to a quarter of a minute a row on a 2-core machine with fsync always. */
    static const int requests[] = {12000, 1000, 300};
    /* Batches of 1000 show what one frontend can put into Kafka (issue 13's publish row). */
    size_t nbatches = kafka_mock_bin ? 3 : 2;
    int rc = 0;
    for (size_t f = 0; f < 2; f++) {
        if (only_form && strcmp(only_form, forms[f]) != 0)
            continue;
        char why[600] = "";
        int prepared = prepare_form(&fe, forms[f], why, sizeof(why));
        for (size_t i = 0; i < nbatches; i++) {
            if (only_batch && only_batch != batches[i])
                continue;
            row_t r = {.form = forms[f], .batch = batches[i], .concurrency = concurrency};
            r.requests = only_requests ? only_requests : requests[i];
            snprintf(r.url, sizeof(r.url), "%s/v1/topics/bench-%s:publish", fe.url, forms[f]);
            if (prepared != 0) {
                snprintf(r.error, sizeof(r.error), "%s", why);
                print_failed(&r);
                rc = 1;
            } else if (run_row(&r) != 0) {
                rc = 1;
            }
        }
    }
    if (kafka_mock_bin)
        printf("(p50/p99: one request, from sending it to its 200 answer, i.e. until every "
               "event in it is acknowledged by all in-sync replicas: acks=all; the mock keeps "
               "records in memory)\n");
    else
        printf("(p50/p99: one request, from sending it to its 200 answer, i.e. until every "
               "event in it is fsynced; redis-server with appendfsync always)\n");
    frontend_stop(&fe);
    if (kafka_mock_bin)
        msm_test_proc_stop(&kafka_mock, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    if (rc != 0) {
        fprintf(stderr, "msm-bench-publish: some rows FAILED (see the table)\n");
        print_log_tail(fe.proc.log, 20);
    }
    msm_test_redis_destroy(&redis);
    curl_global_cleanup();
    return rc;
}
