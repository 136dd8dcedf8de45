/* SPDX-License-Identifier: MIT */
/* The whole data plane, end to end: a private redis-server, the four daemons and the example
 * lambda as real processes, events published over HTTP and timed from the publish request to
 * the lambda's record of the push. Workloads W0-W3 of issue 8, W4-W6 of issue 9 (a
 * subscription's pace and fair share); method in bench/README.md.
 *
 *   msm-bench-pipeline [FRONTEND SCHEDULER FLOWCONTROL ROUTER LAMBDA]
 *   MSM_BENCH_SCALE=0.1 scales every workload (default 1: the sizes).
 *   MSM_BENCH_ONLY=W1,W0 runs only the rows named (default: every row), e.g. W4,W5,W6.
 * The rows named *-kafka run the daemons on the Kafka log: a librdkafka mock cluster served
 * by tools/msm-kafka-mock (beside the daemons in the build tree, or the sixth argument). */
#include "bench_http.h"
#include "msm_test.h"
#include "msm_test_daemons.h"
#include "msm/id.h"
#include "msm/time.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH              1000    /* events per publish request */
#define IN_FLIGHT          4       /* publish requests in flight */
#define REQUEST_TIMEOUT_MS 30000   /* one publish or control call */
#define REGISTRY_POLL_MS   50      /* every daemon's registry poll */
#define SETTLE_MS          500     /* after a PUT, for the registry polls (10 of them) */
#define RETENTION_MS       5000    /* task_retention_ms of every subscription */
#define MIN_RATE           2000    /* events/s below which a workload is reported stuck */
#define WAIT_SLACK_MS      60000   /* on top of events / MIN_RATE */
#define FAR_DELAY_MS       3600000 /* W2's extra pending events: due in an hour */
#define W2_SPREAD_MS       10000   /* W2's events come due evenly over this */
#define STALL_MS           30000   /* no event handled for this long: the run is stuck */
#define ANSWER_KEEP        600     /* bytes of an answer shown in an error */
#define LAMBDA_PATH_SIZE   512
#define SETTLED_FROM_MS    5000  /* W4: the limit is judged from this far into the run */
#define RATE_SKIP_MS       1000  /* W5: the burst's second, not judged */
#define RATE_WINDOW_MS     10000 /* W5: the window judged after it */
#define PROBE_EVENTS       10    /* W6: tenant B's events (a probe: not scaled) */
#define PROBE_WAIT_MS      30000 /* W6: for B's events once A's are all handled */
#define KAFKA_FETCH_WAIT_MS 2     /* fetch.wait.max.ms on the mock cluster (bench/README.md) */
#define WARM_UP_MS          60000 /* Kafka rows: for the first event through a new route */

/* The ~100-byte JSON payload of every event. */
#define PAYLOAD_FMT                                                                                \
    "{\"order_id\":%d,\"customer\":\"customer-42\",\"status\":\"paid\",\"amount\":1299.5,"         \
    "\"items\":[\"sku-1\",\"sku-2\"]}"

enum { FRONTEND, SCHEDULER, FLOWCONTROL, ROUTER, NDAEMONS, LAMBDA = NDAEMONS, KAFKA_MOCK, NBINS };
static const char *const bin_names[NBINS] = {
    "frontend/msm-frontend",         "scheduler/msm-scheduler",
    "flowcontrol/msm-flowcontrol",   "router/msm-router",
    "lambda-sdk/msm-example-lambda", "tools/msm-kafka-mock/msm-kafka-mock"};
static const char *const short_names[NBINS] = {"frontend", "scheduler", "flowcontrol",
                                               "router",   "lambda",    "kafka-mock"};
/* CPU columns: redis-server (plus the Kafka mock on its rows), the daemons, the lambda
 * (reported apart: it is the user's). CPU_BROKER is only shown in a note. */
enum { CPU_REDIS, CPU_DAEMON0, CPU_LAMBDA = CPU_DAEMON0 + NDAEMONS, CPU_BROKER, NCPU };

typedef struct {
    char bins[NBINS][PATH_MAX];
    char dir[256]; /* logs and record files; kept when something failed */
    char ns[64];
    char frontend_url[64];
    double scale;
    msm_test_redis_t redis;
    msm_test_proc_t daemons[NDAEMONS];
    int failed;
    int on_kafka;               /* the daemons run on the Kafka log */
    msm_test_proc_t kafka_mock; /* serving it */
    char kafka_brokers[512];
} bench_t;

/* ---- small helpers ---- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int scaled(const bench_t *b, int n)
{
    int v = (int)(n * b->scale + 0.5);
    return v < 1 ? 1 : v;
}

/* ---- HTTP for set-up (blocking, never while measuring) ---- */

typedef struct {
    char *data;
    size_t len;
} buf_t;

static size_t buf_append(char *ptr, size_t size, size_t n, void *opaque)
{
    buf_t *b = opaque;
    size_t bytes = size * n;
    char *d = realloc(b->data, b->len + bytes + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, ptr, bytes);
    b->data = d;
    b->len += bytes;
    b->data[b->len] = '\0';
    return bytes;
}

/* One call to the frontend. @returns the HTTP status (0: no answer); @p answer gets the first
 * ANSWER_KEEP bytes of the body, or why there was none. */
static long
api(const bench_t *b, const char *method, const char *path, const char *body, char *answer)
{
    char url[512];
    buf_t out = {0};
    snprintf(url, sizeof(url), "%s%s", b->frontend_url, path);
    CURL *e = curl_easy_init();
    struct curl_slist *h = bench_json_headers();
    long status = 0;
    answer[0] = '\0';
    if (!e || !h) {
        snprintf(answer, ANSWER_KEEP, "out of memory");
        goto done;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, buf_append);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)REQUEST_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(e);
    if (rc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    else
        snprintf(answer, ANSWER_KEEP, "%s", curl_easy_strerror(rc));
    if (out.data)
        snprintf(answer, ANSWER_KEEP, "%s", out.data);
done:
    free(out.data);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return status;
}

/* ---- processes ---- */

/* The binaries: from the command line, else beside this one in the build tree. */
static int find_bins(bench_t *b, int argc, char **argv)
{
    if (argc == NBINS || argc == 1 + NBINS) { /* the Kafka mock is optional */
        for (int i = 0; i < argc - 1; i++)
            snprintf(b->bins[i], sizeof(b->bins[i]), "%s", argv[1 + i]);
        return 0;
    }
    if (argc != 1)
        return -1;
    char self[PATH_MAX - 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    for (int i = 0; i < NBINS; i++) {
        int len = snprintf(b->bins[i], sizeof(b->bins[i]), "%s/../%s", self, bin_names[i]);
        if (i == KAFKA_MOCK && access(b->bins[i], X_OK) != 0) {
            b->bins[i][0] = '\0'; /* the Kafka rows say so */
            continue;
        }
        if (len >= (int)sizeof(b->bins[i]) || access(b->bins[i], X_OK) != 0) {
            fprintf(stderr, "msm-bench-pipeline: %s: %s\n", b->bins[i], strerror(errno));
            return -1;
        }
    }
    return 0;
}

static void proc_common(const bench_t *b, msm_test_proc_t *p, int which)
{
    p->port = msm_test_free_port();
    p->death_signal = SIGTERM; /* never outlive the benchmark */
    snprintf(p->log, sizeof(p->log), "%s/%s.log", b->dir, short_names[which]);
    msm_test_proc_arg(p, "%s", b->bins[which]);
}

static int daemons_start(bench_t *b)
{
    char tokens[320];
    snprintf(tokens, sizeof(tokens), "%s/tokens.json", b->dir);
    if (bench_auth() && bench_write_tokens(tokens) != 0) {
        fprintf(stderr, "msm-bench-pipeline: cannot write %s\n", tokens);
        return -1;
    }
    for (int i = 0; i < NDAEMONS; i++) {
        msm_test_proc_t *p = &b->daemons[i];
        msm_test_daemon_setup(p, i, b->bins[i], b->dir, b->redis.url, b->ns);
        if (b->on_kafka) {
            msm_test_proc_arg(p, "--log.backend=kafka");
            msm_test_proc_arg(p, "--kafka.brokers=%s", b->kafka_brokers);
            /* The mock holds a Fetch that found nothing for its whole wait, even when
             * records arrive meanwhile (a real broker answers as they arrive): a short
             * wait keeps the hops from idling (bench/README.md). */
            msm_test_proc_arg(p, "--kafka.props=fetch.wait.max.ms=%d", KAFKA_FETCH_WAIT_MS);
        }
        if (bench_auth())
            msm_test_proc_arg(p, "--auth.tokens=%s", tokens);
        /* Warnings only: a log line per event would be part of what is measured. */
        msm_test_proc_arg(p, "--logging.level=warn");
        /* A short registry poll: a new subscription is seen within SETTLE_MS. */
        msm_test_proc_arg(p, "--%sregistry%spoll_ms=%d", i == SCHEDULER ? "scheduler." : "",
                          i == SCHEDULER ? "_" : ".", REGISTRY_POLL_MS);
    }
    if (msm_test_daemons_start(b->daemons, NDAEMONS, 15000) != 0)
        return -1;
    snprintf(b->frontend_url, sizeof(b->frontend_url), "http://127.0.0.1:%d",
             b->daemons[FRONTEND].port);
    return 0;
}

static void daemons_stop(bench_t *b)
{
    for (int i = 0; i < NDAEMONS; i++) {
        if (b->daemons[i].pid > 0)
            msm_test_proc_stop(&b->daemons[i], SIGTERM, MSM_TEST_PROC_GRACE_MS);
        memset(&b->daemons[i], 0, sizeof(b->daemons[i]));
    }
    if (b->kafka_mock.pid > 0)
        msm_test_proc_stop(&b->kafka_mock, SIGTERM, MSM_TEST_PROC_GRACE_MS);
}

/* The daemons again, on the Kafka log of a fresh mock cluster (the first *-kafka row).
 * Redis stays: the registry, task records and delayed sets live there on both logs. */
static int daemons_to_kafka(bench_t *b, char *why, size_t why_size)
{
    if (!b->bins[KAFKA_MOCK][0]) {
        snprintf(why, why_size, "no msm-kafka-mock beside the daemons, nor given");
        return 1;
    }
    daemons_stop(b);
    char log[300];
    snprintf(log, sizeof(log), "%s/kafka-mock.log", b->dir);
    if (msm_test_kafka_mock_start(&b->kafka_mock, b->bins[KAFKA_MOCK], 3, log, b->kafka_brokers,
                                  sizeof(b->kafka_brokers)) != 0) {
        snprintf(why, why_size, "msm-kafka-mock printed no bootstrap servers (log: %s)", log);
        return -1;
    }
    b->on_kafka = 1;
    msm_test_namespace(b->ns, sizeof(b->ns)); /* nothing of the Redis rows' subscriptions */
    if (daemons_start(b) != 0) {
        snprintf(why, why_size, "the daemons did not start on Kafka (logs in %s)", b->dir);
        return -1;
    }
    return 0;
}

typedef struct {
    msm_test_proc_t proc;
    char record[LAMBDA_PATH_SIZE];
} lambda_t;

/* One lambda per workload, so each has a record file of its own; @p extra: more flags
 * (NULL-terminated, may be NULL). */
static int lambda_start(const bench_t *b, lambda_t *l, const char *name, const char *const *extra)
{
    memset(l, 0, sizeof(*l));
    proc_common(b, &l->proc, LAMBDA);
    snprintf(l->proc.log, sizeof(l->proc.log), "%s/lambda-%s.log", b->dir, name);
    snprintf(l->record, sizeof(l->record), "%s/lambda-%s.jsonl", b->dir, name);
    msm_test_proc_arg(&l->proc, "--port=%d", l->proc.port);
    msm_test_proc_arg(&l->proc, "--bind=127.0.0.1");
    msm_test_proc_arg(&l->proc, "--record=%s", l->record);
    msm_test_proc_arg(&l->proc, "--logging.level=warn");
    for (int i = 0; extra && extra[i]; i++)
        msm_test_proc_arg(&l->proc, "%s", extra[i]);
    if (msm_test_proc_start(&l->proc) != 0)
        return -1;
    return msm_test_proc_wait_ready(&l->proc, NULL, 10000);
}

static void lambda_stop(lambda_t *l)
{
    if (l->proc.pid > 0)
        msm_test_proc_stop(&l->proc, SIGTERM, MSM_TEST_PROC_GRACE_MS);
}

/* ---- what the processes cost ---- */

/* utime + stime of @p pid in clock ticks, plus (@p with_children) the cutime + cstime of
 * its children already reaped; 0 when it cannot be read. */
static uint64_t cpu_ticks_of(pid_t pid, int with_children)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    line[n] = '\0';
    /* The name (field 2) may hold spaces: count fields from its closing parenthesis. */
    char *p = strrchr(line, ')');
    unsigned long long utime = 0, stime = 0, cutime = 0, cstime = 0;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %llu %llu",
                     &utime, &stime, &cutime, &cstime) != 4)
        return 0;
    return utime + stime + (with_children ? cutime + cstime : 0);
}

static uint64_t cpu_ticks(pid_t pid)
{
    return cpu_ticks_of(pid, 0);
}

/* A lambda is a supervisor and its worker processes: all of them, the workers that ended
 * included. */
static uint64_t cpu_ticks_tree(pid_t pid)
{
    uint64_t t = cpu_ticks_of(pid, 1);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    int child;
    while (f && fscanf(f, "%d", &child) == 1)
        t += cpu_ticks(child);
    if (f)
        fclose(f);
    return t;
}

static void cpu_sample(const bench_t *b, const lambda_t *l, uint64_t out[NCPU])
{
    out[CPU_REDIS] = cpu_ticks(b->redis.pid);
    for (int i = 0; i < NDAEMONS; i++)
        out[CPU_DAEMON0 + i] = cpu_ticks(b->daemons[i].pid);
    out[CPU_LAMBDA] = cpu_ticks_tree(l->proc.pid);
    out[CPU_BROKER] = b->kafka_mock.pid > 0 ? cpu_ticks(b->kafka_mock.pid) : 0;
}

/* INFO memory's used_memory in bytes, -1 when Redis does not answer. */
static long long used_memory(const bench_t *b)
{
    redisReply *r = msm_test_redis_query(&b->redis, "INFO memory");
    long long v = -1;
    const char *at = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "used_memory:") : NULL;
    if (at)
        v = atoll(at + strlen("used_memory:"));
    if (r)
        freeReplyObject(r);
    return v;
}

static int redis_fsync(const bench_t *b, const char *mode)
{
    redisReply *r = msm_test_redis_query(&b->redis, "CONFIG SET appendfsync %s", mode);
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

/* ---- the events of one workload: ids, times, and who saw them ---- */

typedef struct {
    char id[MSM_ID_STR_SIZE];
    int64_t sent_us;    /* the publish request carrying it was handed to libcurl */
    int64_t due_ms;     /* deliver_at, 0 when immediate */
    int64_t handled_us; /* the lambda's received_us of its first "ok", 0 until then */
} event_t;

typedef struct {
    event_t *ev;
    int n;
    uint32_t *slots; /* open addressing, index + 1; 0 = empty */
    uint32_t mask;
    int handled;
    long retries;    /* "retry" records */
    long duplicates; /* "ok" records after the first */
    long unknown;    /* records of ids this workload did not publish */
    off_t read_at;   /* how far the record file has been read */
    char partial[1024];
    size_t partial_len;
} track_t;

static uint32_t id_hash(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s)
        h = (h ^ (uint8_t)*s++) * 16777619u;
    return h;
}

static int track_init(track_t *t, int n)
{
    memset(t, 0, sizeof(*t));
    uint32_t size = 1024;
    while (size < (uint32_t)n * 2u)
        size <<= 1;
    t->ev = calloc((size_t)n, sizeof(*t->ev));
    t->slots = calloc(size, sizeof(*t->slots));
    t->mask = size - 1;
    t->n = n;
    return t->ev && t->slots ? 0 : -1;
}

static void track_free(track_t *t)
{
    free(t->ev);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static void track_index(track_t *t, int i)
{
    uint32_t h = id_hash(t->ev[i].id) & t->mask;
    while (t->slots[h])
        h = (h + 1) & t->mask;
    t->slots[h] = (uint32_t)i + 1;
}

static event_t *track_find(track_t *t, const char *id)
{
    for (uint32_t h = id_hash(id) & t->mask; t->slots[h]; h = (h + 1) & t->mask) {
        event_t *e = &t->ev[t->slots[h] - 1];
        if (strcmp(e->id, id) == 0)
            return e;
    }
    return NULL;
}

/* The value of "key": in one compact JSON record line, copied into @p out. */
static int field(const char *line, const char *key, char *out, size_t n)
{
    char pat[32];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    if (*p == '"')
        p++;
    size_t len = strcspn(p, "\",}");
    if (len >= n)
        return -1;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

static void track_line(track_t *t, const char *line)
{
    char id[MSM_ID_STR_SIZE + 8], result[16], received[32];
    if (field(line, "id", id, sizeof(id)) != 0 || field(line, "result", result, sizeof(result)) ||
        field(line, "received_ms", received, sizeof(received)) != 0)
        return;
    event_t *e = track_find(t, id);
    if (!e) {
        t->unknown++;
        return;
    }
    if (strcmp(result, "ok") != 0) {
        t->retries++;
        return;
    }
    if (e->handled_us) {
        t->duplicates++;
        return;
    }
    /* received_us where the lambda writes it, else the middle of received_ms' millisecond */
    char us[32];
    e->handled_us = field(line, "received_us", us, sizeof(us)) == 0 ? atoll(us)
                                                                     : atoll(received) * 1000 + 500;
    t->handled++;
}

/* Reads what the lambda appended to its record file since the last call. */
static void track_read(track_t *t, const char *record)
{
    int fd = open(record, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[1 << 16];
    ssize_t got;
    while ((got = pread(fd, buf, sizeof(buf), t->read_at)) > 0) {
        t->read_at += got;
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] != '\n') {
                if (t->partial_len < sizeof(t->partial) - 1)
                    t->partial[t->partial_len++] = buf[i];
                continue;
            }
            t->partial[t->partial_len] = '\0';
            track_line(t, t->partial);
            t->partial_len = 0;
        }
    }
    close(fd);
}

/* ---- publishing: batches over keep-alive connections, IN_FLIGHT at a time ---- */

typedef enum { TIMING_NOW, TIMING_DUE, TIMING_FAR } timing_t;

typedef struct {
    CURL *easy;
    buf_t body;
    buf_t answer;
    int first, count;
    int64_t sent_us;
} slot_t;

typedef struct {
    track_t *track; /* NULL: ids are not kept (W2's far-out events) */
    timing_t timing;
    int n;             /* events to publish */
    int batch;         /* events per request */
    int64_t pace_us;   /* > 0: one request every pace_us (W0), else as fast as answered */
    int in_flight;     /* requests in flight at most, 0: IN_FLIGHT */
    const char *attrs; /* every event's "attributes" (a JSON object), or NULL */
    char url[256];
    CURLM *multi;
    struct curl_slist *headers;
    slot_t slots[IN_FLIGHT];
    int next;     /* first event not yet sent */
    int answered; /* events answered 200 */
    char error[ANSWER_KEEP + 200];
} pub_t;

static int buf_printf(buf_t *b, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int buf_printf(buf_t *b, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->data + b->len, *cap - b->len, fmt, ap);
        va_end(ap);
        if (w < 0)
            return -1;
        if ((size_t)w < *cap - b->len) {
            b->len += (size_t)w;
            return 0;
        }
        size_t ncap = *cap * 2 + (size_t)w;
        char *d = realloc(b->data, ncap);
        if (!d)
            return -1;
        b->data = d;
        *cap = ncap;
    }
}

/* The body of one request: events first .. first+count-1 of the workload. */
static int make_body(pub_t *p, slot_t *s)
{
    size_t cap = 256 + (size_t)s->count * 200;
    free(s->body.data);
    s->body.len = 0;
    if (!(s->body.data = malloc(cap)))
        return -1;
    int rc = buf_printf(&s->body, &cap, "{\"events\":[");
    for (int i = s->first; i < s->first + s->count && rc == 0; i++) {
        rc = buf_printf(&s->body, &cap, "%s{\"key\":\"k%d\",\"data\":" PAYLOAD_FMT,
                        i > s->first ? "," : "", i % 64, 1000000 + i);
        if (rc == 0 && p->timing == TIMING_FAR)
            rc = buf_printf(&s->body, &cap, ",\"delay_ms\":%d", FAR_DELAY_MS);
        if (rc == 0 && p->attrs)
            rc = buf_printf(&s->body, &cap, ",\"attributes\":%s", p->attrs);
        if (rc == 0 && p->timing == TIMING_DUE) {
            char at[MSM_TIME_RFC3339_SIZE];
            msm_time_format(p->track->ev[i].due_ms, at, sizeof(at));
            rc = buf_printf(&s->body, &cap, ",\"deliver_at\":\"%s\"", at);
        }
        if (rc == 0)
            rc = buf_printf(&s->body, &cap, "}");
    }
    return rc == 0 ? buf_printf(&s->body, &cap, "]}") : -1;
}

static int slot_send(pub_t *p, slot_t *s)
{
    s->first = p->next;
    s->count = p->n - p->next < p->batch ? p->n - p->next : p->batch;
    if (make_body(p, s) != 0) {
        snprintf(p->error, sizeof(p->error), "out of memory");
        return -1;
    }
    p->next += s->count;
    free(s->answer.data);
    s->answer.data = NULL;
    s->answer.len = 0;
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body.data);
    curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)s->body.len);
    s->sent_us = msm_time_unix_us();
    for (int i = s->first; p->track && i < s->first + s->count; i++)
        p->track->ev[i].sent_us = s->sent_us;
    if (curl_multi_add_handle(p->multi, s->easy) != CURLM_OK) {
        snprintf(p->error, sizeof(p->error), "curl_multi_add_handle failed");
        return -1;
    }
    return 0;
}

/* Keeps the ids of a 200 answer: "results" are in request order. */
static int keep_ids(pub_t *p, slot_t *s)
{
    json_t *root = json_loadb(s->answer.data ? s->answer.data : "", s->answer.len, 0, NULL);
    json_t *results = json_object_get(root, "results");
    int ok = json_array_size(results) == (size_t)s->count;
    for (int i = 0; ok && p->track && i < s->count; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(results, i), "id"));
        event_t *e = &p->track->ev[s->first + i];
        if (!id || strlen(id) >= sizeof(e->id)) {
            ok = 0;
            break;
        }
        memcpy(e->id, id, strlen(id) + 1);
        track_index(p->track, s->first + i);
    }
    json_decref(root);
    return ok ? 0 : -1;
}

static void slot_done(pub_t *p, slot_t *s, CURLcode result)
{
    long status = 0;
    curl_multi_remove_handle(p->multi, s->easy);
    if (result == CURLE_OK)
        curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
    if (p->error[0])
        return;
    if (result != CURLE_OK) {
        snprintf(p->error, sizeof(p->error), "publish: %s", curl_easy_strerror(result));
    } else if (status != 200) {
        snprintf(p->error, sizeof(p->error), "publish: HTTP %ld %.*s", status, ANSWER_KEEP,
                 s->answer.data ? s->answer.data : "");
    } else if (keep_ids(p, s) != 0) {
        snprintf(p->error, sizeof(p->error), "publish: 200 without one id per event: %.*s",
                 ANSWER_KEEP, s->answer.data ? s->answer.data : "");
    } else {
        p->answered += s->count;
    }
    s->count = 0;
}

static void on_done(void *ctx, void *slot, CURLcode result)
{
    slot_done(ctx, slot, result);
}

static int pub_init(pub_t *p, const bench_t *b, const char *topic)
{
    snprintf(p->url, sizeof(p->url), "%s/v1/topics/%s:publish", b->frontend_url, topic);
    p->multi = bench_multi_new(IN_FLIGHT);
    p->headers = bench_json_headers();
    if (!p->multi || !p->headers)
        return -1;
    for (int i = 0; i < IN_FLIGHT; i++) {
        slot_t *s = &p->slots[i];
        if (!(s->easy = bench_easy_new(p->url, p->headers, buf_append, &s->answer, s,
                                       REQUEST_TIMEOUT_MS)))
            return -1;
    }
    return 0;
}

static void pub_deinit(pub_t *p)
{
    for (int i = 0; i < IN_FLIGHT; i++) {
        slot_t *s = &p->slots[i];
        if (s->easy) {
            curl_multi_remove_handle(p->multi, s->easy);
            curl_easy_cleanup(s->easy);
        }
        free(s->body.data);
        free(s->answer.data);
    }
    curl_slist_free_all(p->headers);
    curl_multi_cleanup(p->multi);
}

/* Publishes p->n events; every request has REQUEST_TIMEOUT_MS. @returns 0 when all were
 * answered 200, else -1 with p->error. */
static int pub_run(pub_t *p)
{
    int64_t start_us = msm_time_unix_us();
    int requests = 0;
    int in_flight = p->in_flight > 0 && p->in_flight < IN_FLIGHT ? p->in_flight : IN_FLIGHT;
    while (p->answered < p->n && !p->error[0]) {
        int64_t now = msm_time_unix_us();
        int64_t wait_ms = 100;
        for (int i = 0; i < in_flight && p->next < p->n; i++) {
            if (p->slots[i].count)
                continue;
            int64_t at = start_us + requests * p->pace_us;
            if (p->pace_us > 0 && now < at) {
                wait_ms = (at - now) / 1000;
                break;
            }
            if (slot_send(p, &p->slots[i]) != 0)
                return -1;
            requests++;
        }
        int finished = bench_multi_turn(p->multi, on_done, p);
        if (finished < 0) {
            snprintf(p->error, sizeof(p->error), "curl_multi_perform failed");
            break;
        }
        if (finished)
            wait_ms = 0;
        if (p->answered < p->n && !p->error[0] && wait_ms > 0)
            curl_multi_poll(p->multi, NULL, 0, (int)wait_ms, NULL);
    }
    return p->error[0] ? -1 : 0;
}

/* One publish run to its end: @p p says what (track, timing, n, batch, pace, in_flight,
 * attrs; the rest zero). @returns 0, or -1 with the reason in @p why. */
static int publish(const bench_t *b, const char *topic, pub_t *p, char *why, size_t why_size)
{
    int rc = pub_init(p, b, topic);
    if (rc != 0)
        snprintf(p->error, sizeof(p->error), "out of memory");
    else
        rc = pub_run(p);
    if (rc != 0)
        snprintf(why, why_size, "%d of %d events published; %s", p->answered, p->n, p->error);
    pub_deinit(p);
    return rc;
}

/* ---- the workloads ---- */

typedef struct run_s run_t;

typedef struct {
    const char *name;
    const char *title;
    int events; /* at scale 1 */
    int batch;
    int rate;                   /* > 0: events/s, one per request (W0) */
    int max_batch;              /* max_batch_events, 0: the default */
    int retry;                  /* every ~10th event fails once (W3) */
    int delayed;                /* W2 */
    const char *fsync;          /* appendfsync for this row */
    const char *lambda_args[4]; /* the lambda's flags on top of the usual ones */
    const char *sub_extra;      /* more subscription fields: ",\"name\":value..." */
    const char *needs; /* a field a frontend may refuse (400): the row is "not supported" */
    int sample_limit;  /* sample the stats' concurrency_limit every second (W4) */
    int fair;          /* tenant A's burst, then tenant B's 10 (W6) */
    int kafka;         /* the daemons on the Kafka log (a mock cluster) */
    /* lines after the row (W4-W6); @returns 0, or -1 when the row failed */
    int (*report)(const bench_t *b, run_t *r);
} workload_t;

/* The stats' concurrency_limit once a second during a row (W4), from another thread so the
 * publishing and the record reading go on undisturbed. */
typedef struct {
    const bench_t *sp_bench;
    char sp_path[256];
    int64_t sp_t0_us;
    int *sp_limits; /* [k]: the limit k seconds after sp_t0_us, -1 when not known */
    int sp_n;
    atomic_int sp_stop;
    pthread_t sp_thread;
    int sp_started;
} sampler_t;

struct run_s {
    const workload_t *w;
    char topic[64];
    char sub[64];
    lambda_t lambda;
    track_t track;
    track_t probe; /* W6: tenant B's events (track: tenant A's) */
    sampler_t sampler;
    uint64_t cpu0[NCPU], cpu1[NCPU];
    long long mem0, mem1;
    int64_t first_sent_us;
    int retention; /* the subscription has task_retention_ms */
    char note[800];
};

static void row_failed(const run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void row_failed(const run_t *r, const char *fmt, ...)
{
    va_list ap;
    printf("| %-10s | FAILED: ", r->w->name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

/* PUT topic and subscription. @returns 0, 1 when the frontend refused the field the row
 * needs (the reason in @p why), -1 on any other failure. */
static int make_route(bench_t *b, run_t *r, char *why, size_t why_size)
{
    char path[256], body[1024], answer[ANSWER_KEEP];
    snprintf(path, sizeof(path), "/v1/topics/%s", r->topic);
    long st = api(b, "PUT", path, "{}", answer);
    if (st != 200) {
        snprintf(why, why_size, "PUT %s: HTTP %ld %s", path, st, answer);
        return -1;
    }
    char extra[512] = "";
    if (r->w->max_batch)
        snprintf(extra, sizeof(extra), ",\"max_batch_events\":%d", r->w->max_batch);
    if (r->w->sub_extra)
        snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), "%s", r->w->sub_extra);
    if (r->w->retry)
        snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
                 ",\"retry\":{\"max_attempts\":10,\"min_backoff_ms\":100,"
                 "\"max_backoff_ms\":1000}");
    snprintf(path, sizeof(path), "/v1/subscriptions/%s", r->sub);
    for (r->retention = 1; r->retention >= 0; r->retention--) {
        char retention[64] = "";
        if (r->retention)
            snprintf(retention, sizeof(retention), ",\"task_retention_ms\":%d", RETENTION_MS);
        snprintf(body, sizeof(body),
                 "{\"topic\":\"%s\",\"endpoints\":[{\"url\":\"http://127.0.0.1:%d/\"}]%s%s}",
                 r->topic, r->lambda.proc.port, extra, retention);
        st = api(b, "PUT", path, body, answer);
        if (st == 200)
            break;
        if (st == 400 && r->w->needs && strstr(answer, r->w->needs)) {
            snprintf(why, why_size, "HTTP 400 %s", answer);
            return 1;
        }
        /* A frontend without task retention still runs the workload; the retention
         * figure then says why it is missing. */
        if (st == 400 && r->retention && strstr(answer, "task_retention_ms")) {
            snprintf(r->note, sizeof(r->note), "task_retention_ms refused: %s", answer);
            continue;
        }
        snprintf(why, why_size, "PUT %s: HTTP %ld %s", path, st, answer);
        return -1;
    }
    sleep_ms(SETTLE_MS);
    return 0;
}

/* Kafka rows: one event through the new route before the clock starts, so the row does not
 * measure the consumer groups' first join (seconds on Kafka). The lambda's record of it
 * counts as an unknown id. @returns 0, or -1 with the reason in @p why. */
static int warm_up(bench_t *b, run_t *r, char *why, size_t why_size)
{
    char path[256], answer[ANSWER_KEEP];
    snprintf(path, sizeof(path), "/v1/topics/%s:publish", r->topic);
    long st = api(b, "POST", path, "{\"events\":[{\"data\":{\"warm_up\":true}}]}", answer);
    if (st != 200) {
        snprintf(why, why_size, "POST %s: HTTP %ld %s", path, st, answer);
        return -1;
    }
    for (int64_t until = msm_time_unix_us() + WARM_UP_MS * 1000LL; msm_time_unix_us() < until; sleep_ms(20)) {
        struct stat sb;
        if (stat(r->lambda.record, &sb) == 0 && sb.st_size > 0)
            return 0;
    }
    snprintf(why, why_size, "the warm-up event was not handled within %d s", WARM_UP_MS / 1000);
    return -1;
}

/* The subscription's stats, shown when a wait runs out. */
static void print_stats(const bench_t *b, const run_t *r)
{
    char path[256], answer[ANSWER_KEEP];
    snprintf(path, sizeof(path), "/v1/subscriptions/%s/stats", r->sub);
    long st = api(b, "GET", path, NULL, answer);
    printf("|            |   stats of %s: HTTP %ld %s\n", r->sub, st, answer);
}

/* The log file of process @p which (an index of bin_names). */
static const char *proc_log(const bench_t *b, const lambda_t *l, int which)
{
    return which < NDAEMONS  ? b->daemons[which].log
           : which == LAMBDA ? l->proc.log
                             : b->kafka_mock.log;
}

/* The first of the processes that has exited (a zombie until its stop reaps it), or -1. */
static int exited_process(const bench_t *b, const lambda_t *l)
{
    for (int i = 0; i < NBINS; i++) {
        pid_t pid = i < NDAEMONS  ? b->daemons[i].pid
                    : i == LAMBDA ? l->proc.pid
                                  : b->kafka_mock.pid;
        if (i == KAFKA_MOCK && !b->on_kafka)
            continue;
        char path[64], line[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(line, 1, sizeof(line) - 1, f) : 0;
        if (f)
            fclose(f);
        line[n] = '\0';
        char *p = strrchr(line, ')');
        if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
            return i;
    }
    return -1;
}

/* Waits until every event of @p t (the row's track or probe) was handled. Gives up at
 * @p deadline_us, when nothing was handled for STALL_MS after @p progress_from_us, or when a
 * process exited. @returns 0 or -1. */
static int
wait_handled(const bench_t *b, run_t *r, track_t *t, int64_t deadline_us, int64_t progress_from_us)
{
    int seen = -1, dead;
    int64_t progress_us = progress_from_us, now;
    char why[700] = "by the deadline";
    for (;;) {
        track_read(t, r->lambda.record);
        if (t->handled == t->n)
            return 0;
        now = msm_time_unix_us();
        if (t->handled != seen) {
            seen = t->handled;
            progress_us = now > progress_us ? now : progress_us;
        }
        if (now > deadline_us)
            break;
        if (now > progress_us + STALL_MS * 1000LL) {
            snprintf(why, sizeof(why), "none in the last %d s", STALL_MS / 1000);
            break;
        }
        if ((dead = exited_process(b, &r->lambda)) >= 0) {
            snprintf(why, sizeof(why), "then %s exited (log: %s)", short_names[dead],
                     proc_log(b, &r->lambda, dead));
            break;
        }
        sleep_ms(20);
    }
    row_failed(r, "%d of %d events handled, %s (%ld retry answers, %ld records of unknown ids)",
               t->handled, t->n, why, t->retries, t->unknown);
    print_stats(b, r);
    return -1;
}

static int64_t wait_deadline(int events)
{
    return msm_time_unix_us() + (WAIT_SLACK_MS + (int64_t)events * 1000 / MIN_RATE) * 1000;
}

/* W2's set-up: the far-out events, published first and then fanned out into the delayed
 * set (its stats' "delayed" reaches them) before the measured events go. */
static int
publish_far(const bench_t *b, run_t *r, int far, double *rate, char *why, size_t why_size)
{
    int64_t t0 = msm_time_unix_us();
    pub_t p = {.timing = TIMING_FAR, .n = far, .batch = BATCH};
    if (publish(b, r->topic, &p, why, why_size) != 0)
        return -1;
    *rate = far * 1e6 / (double)(msm_time_unix_us() - t0 + 1);
    char path[256], answer[ANSWER_KEEP];
    snprintf(path, sizeof(path), "/v1/subscriptions/%s/stats", r->sub);
    int64_t deadline = wait_deadline(far);
    long long delayed = -1;
    while (msm_time_unix_us() < deadline) {
        if (api(b, "GET", path, NULL, answer) == 200) {
            json_t *j = json_loads(answer, 0, NULL);
            delayed = json_integer_value(json_object_get(j, "delayed"));
            json_decref(j);
            if (delayed >= far)
                return 0;
        }
        sleep_ms(200);
    }
    snprintf(why, why_size,
             "the %d far-out events did not all reach the delayed set "
             "(stats \"delayed\" %lld; last answer %s)",
             far, delayed, answer);
    return -1;
}

/* Due times for W2: evenly over W2_SPREAD_MS, from when publishing them should be done (at
 * the far-out publish's rate, doubled, plus a second). */
static void plan_due(track_t *t, double rate)
{
    int64_t publish_ms = (int64_t)(t->n / (rate > 1 ? rate : 1) * 2000.0) + 1000;
    int64_t start = msm_time_unix_ms() + publish_ms;
    for (int i = 0; i < t->n; i++)
        t->ev[i].due_ms = start + (int64_t)i * W2_SPREAD_MS / t->n;
}

/* ---- W4-W6 (issue 9): the stats sampler, two tenants ---- */

static void *sampler_main(void *arg)
{
    sampler_t *sp = arg;
    for (int k = 1; k < sp->sp_n; k++) {
        int64_t at = sp->sp_t0_us + k * 1000000LL;
        while (!atomic_load(&sp->sp_stop) && msm_time_unix_us() < at)
            sleep_ms(10);
        if (atomic_load(&sp->sp_stop))
            break;
        char answer[ANSWER_KEEP];
        if (api(sp->sp_bench, "GET", sp->sp_path, NULL, answer) != 200)
            continue;
        json_t *j = json_loads(answer, 0, NULL);
        json_t *v = json_object_get(j, "concurrency_limit");
        if (json_is_integer(v))
            sp->sp_limits[k] = (int)json_integer_value(v);
        json_decref(j);
    }
    return NULL;
}

/* Samples from r->first_sent_us until sampler_stop(), at most as long as the row may wait. */
static int sampler_start(const bench_t *b, run_t *r)
{
    sampler_t *sp = &r->sampler;
    sp->sp_bench = b;
    snprintf(sp->sp_path, sizeof(sp->sp_path), "/v1/subscriptions/%s/stats", r->sub);
    sp->sp_t0_us = r->first_sent_us;
    sp->sp_n = (int)((wait_deadline(r->track.n) - r->first_sent_us) / 1000000) + 2;
    if (!(sp->sp_limits = malloc((size_t)sp->sp_n * sizeof(*sp->sp_limits))))
        return -1;
    for (int k = 0; k < sp->sp_n; k++)
        sp->sp_limits[k] = -1;
    atomic_init(&sp->sp_stop, 0);
    if (pthread_create(&sp->sp_thread, NULL, sampler_main, sp) != 0)
        return -1;
    sp->sp_started = 1;
    return 0;
}

static void sampler_stop(sampler_t *sp)
{
    if (!sp->sp_started)
        return;
    atomic_store(&sp->sp_stop, 1);
    pthread_join(sp->sp_thread, NULL);
    sp->sp_started = 0;
}

/* W6: tenant A's burst as fast as the bench publishes; as soon as its last publish is
 * answered, tenant B's events, one per request and one request at a time. */
static int publish_tenants(const bench_t *b, run_t *r, char *why, size_t why_size)
{
    pub_t a = {.track = &r->track, .n = r->track.n, .batch = BATCH, .attrs = "{\"tenant\":\"A\"}"};
    if (publish(b, r->topic, &a, why, why_size) != 0)
        return -1;
    pub_t q = {.track = &r->probe,
               .n = r->probe.n,
               .batch = 1,
               .in_flight = 1,
               .attrs = "{\"tenant\":\"B\"}"};
    return publish(b, r->topic, &q, why, why_size);
}

static int run_publish(bench_t *b, run_t *r, char *why, size_t why_size)
{
    const workload_t *w = r->w;
    int n = r->track.n;
    if (w->delayed) {
        double rate = 0;
        if (publish_far(b, r, scaled(b, 1000000), &rate, why, why_size) != 0)
            return -1;
        plan_due(&r->track, rate);
    }
    r->mem0 = used_memory(b);
    cpu_sample(b, &r->lambda, r->cpu0);
    r->first_sent_us = msm_time_unix_us();
    if (w->sample_limit && sampler_start(b, r) != 0) {
        snprintf(why, why_size, "cannot start the stats sampler");
        return -1;
    }
    if (w->fair)
        return publish_tenants(b, r, why, why_size);
    pub_t p = {.track = &r->track,
               .timing = w->delayed ? TIMING_DUE : TIMING_NOW,
               .n = n,
               .batch = w->rate > 0 ? 1 : w->batch,
               .pace_us = w->rate > 0 ? 1000000 / w->rate : 0};
    return publish(b, r->topic, &p, why, why_size);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* One row: events/s, latency (lateness for W2) p50/p99/max, CPU per event, memory. */
static void print_row(const run_t *r)
{
    const track_t *t = &r->track;
    int64_t *lat = malloc((size_t)t->n * sizeof(*lat)); /* µs */
    int64_t last = 0;
    int late_published = 0;
    if (!lat) {
        row_failed(r, "out of memory");
        return;
    }
    for (int i = 0; i < t->n; i++) {
        const event_t *e = &t->ev[i];
        lat[i] = e->handled_us - (e->due_ms ? e->due_ms * 1000 : e->sent_us);
        late_published += e->due_ms && e->sent_us / 1000 > e->due_ms;
        if (e->handled_us > last)
            last = e->handled_us;
    }
    qsort(lat, (size_t)t->n, sizeof(*lat), cmp_i64);
    double secs = (double)(last - r->first_sent_us) / 1e6;
    long hz = sysconf(_SC_CLK_TCK);
    double us[NCPU], msm = 0;
    for (int i = 0; i < NCPU; i++) {
        uint64_t ticks = r->cpu1[i] > r->cpu0[i] ? r->cpu1[i] - r->cpu0[i] : 0;
        us[i] = (double)ticks * 1e6 / (double)hz / t->n;
        if (i != CPU_LAMBDA)
            msm += us[i];
    }
    double redis_alone = us[CPU_REDIS];
    us[CPU_REDIS] += us[CPU_BROKER]; /* the log's server, whichever it is */
    /* W2's pace is its due times, not the pipeline's: no events/s. */
    char rate[16] = "-";
    if (!r->w->delayed)
        snprintf(rate, sizeof(rate), "%.0f", t->n / (secs > 0 ? secs : 1e-9));
    printf("| %-10s | %7d | %8s | %8.2f | %8.2f | %8.2f | %5.1f | %5.1f | %5.1f | %5.1f | "
           "%5.1f | %6.1f | %6.1f | %7.1f | %7.1f |\n",
           r->w->name, t->n, rate, lat[t->n / 2] / 1000.0, lat[(int64_t)t->n * 99 / 100] / 1000.0,
           lat[t->n - 1] / 1000.0, us[CPU_REDIS], us[CPU_DAEMON0 + FRONTEND],
           us[CPU_DAEMON0 + SCHEDULER], us[CPU_DAEMON0 + FLOWCONTROL], us[CPU_DAEMON0 + ROUTER],
           msm, us[CPU_LAMBDA], r->mem0 / 1048576.0, r->mem1 / 1048576.0);
    if (late_published)
        printf("|            |   note: %d events were published after their deliver_at\n",
               late_published);
    if (r->w->kafka)
        printf("|            |   on Kafka: the redis column is redis-server %.1f + msm-kafka-mock "
               "%.1f µs per event\n",
               redis_alone, us[CPU_BROKER]);
    if (t->retries || t->duplicates)
        printf("|            |   %ld retry answers, %ld events handled again after an ok\n",
               t->retries, t->duplicates);
    fflush(stdout);
    free(lat);
}

/* After W1: Redis memory once the task retention window has passed. */
static void print_retention(const bench_t *b, const run_t *r)
{
    if (!r->retention) {
        printf("|            |   used_memory after the task retention window: not measured "
               "(%s)\n",
               r->note);
        return;
    }
    sleep_ms(RETENTION_MS + 2000);
    printf("|            |   used_memory %.1f MB, %d s after the run (task_retention_ms %d)\n",
           used_memory(b) / 1048576.0, (RETENTION_MS + 2000) / 1000, RETENTION_MS);
    fflush(stdout);
}

/* ---- W4-W6: what the lambda's record says about the pace ---- */

/* One record line: a push the lambda received. */
typedef struct {
    int64_t ms;
    int in_flight;
    int refused; /* answered retry: in W4 and W5 only --max-concurrent's 429 does */
} push_t;

/* Every push in @p record. @returns the array (caller frees) and its length in @p n, or NULL. */
static push_t *read_pushes(const char *record, size_t *n)
{
    FILE *f = fopen(record, "r");
    push_t *pu = NULL;
    size_t cap = 0;
    char *line = NULL, ms[32], in_flight[16], result[16];
    size_t line_cap = 0;
    *n = 0;
    while (f && getline(&line, &line_cap, f) > 0) {
        if (field(line, "received_ms", ms, sizeof(ms)) != 0 ||
            field(line, "result", result, sizeof(result)) != 0)
            continue;
        if (*n == cap) {
            push_t *more = realloc(pu, (cap = cap ? cap * 2 : 4096) * sizeof(*pu));
            if (!more)
                break;
            pu = more;
        }
        push_t *p = &pu[(*n)++];
        p->ms = atoll(ms);
        p->refused = strcmp(result, "ok") != 0;
        /* A lambda without the field (an older one) shows 0. */
        p->in_flight = 0;
        if (field(line, "in_flight", in_flight, sizeof(in_flight)) == 0)
            p->in_flight = atoi(in_flight);
    }
    free(line);
    if (f)
        fclose(f);
    return pu ? pu : calloc(1, sizeof(*pu));
}

static const char *verdict(int met)
{
    return met ? "met" : "MISSED";
}

typedef struct {
    long pushes, refused;
    int max_in_flight;
} second_t;

#define IN_FLIGHT_HIST 1024 /* in_flight values counted one by one up to this */

/* The in_flight below which @p q of the @p total counted pushes lie. */
static int hist_quantile(const long *hist, long total, double q)
{
    long seen = 0, want = (long)(q * (double)total);
    for (int v = 0; v < IN_FLIGHT_HIST; v++) {
        seen += hist[v];
        if (seen > want)
            return v;
    }
    return IN_FLIGHT_HIST - 1;
}

/* W4: per second since the first publish, what the lambda got and the limit msm used; then
 * the verdict on the run from SETTLED_FROM_MS on. */
static int report_backpressure(const bench_t *b, run_t *r)
{
    (void)b;
    size_t n;
    push_t *pu = read_pushes(r->lambda.record, &n);
    int nsec = 1;
    for (size_t i = 0; pu && i < n; i++) {
        int s = (int)((pu[i].ms * 1000 + 500 - r->first_sent_us) / 1000000);
        nsec = s + 1 > nsec ? s + 1 : nsec;
    }
    second_t *sec = pu ? calloc((size_t)nsec, sizeof(*sec)) : NULL;
    if (!sec) {
        free(pu);
        row_failed(r, "out of memory");
        return -1;
    }
    second_t late = {0};
    long hist[IN_FLIGHT_HIST] = {0}; /* in_flight of the pushes from SETTLED_FROM_MS on */
    for (size_t i = 0; i < n; i++) {
        int64_t at_us = pu[i].ms * 1000 + 500 - r->first_sent_us;
        second_t *s = &sec[at_us > 0 ? at_us / 1000000 : 0];
        int settled = at_us >= SETTLED_FROM_MS * 1000LL;
        second_t *both[2] = {s, settled ? &late : NULL};
        if (settled)
            hist[pu[i].in_flight < IN_FLIGHT_HIST ? pu[i].in_flight : IN_FLIGHT_HIST - 1]++;
        for (int k = 0; k < 2 && both[k]; k++) {
            both[k]->pushes++;
            both[k]->refused += pu[i].refused;
            if (pu[i].in_flight > both[k]->max_in_flight)
                both[k]->max_in_flight = pu[i].in_flight;
        }
    }
    printf("|            |   second: pushes at the lambda, 429 share, max in_flight at the "
           "lambda, concurrency_limit (stats, at the second's end)\n");
    for (int s = 0; s < nsec; s++) {
        int limit = s + 1 < r->sampler.sp_n ? r->sampler.sp_limits[s + 1] : -1;
        char shown[16] = "-";
        if (limit >= 0)
            snprintf(shown, sizeof(shown), "%d", limit);
        printf("|            |   %3d s: %6ld pushes, %5.1f %% 429, in_flight max %4d, limit %s\n",
               s, sec[s].pushes, sec[s].pushes ? 100.0 * sec[s].refused / sec[s].pushes : 0.0,
               sec[s].max_in_flight, shown);
    }
    double share = late.pushes ? 100.0 * late.refused / late.pushes : 0.0;
    /* A refused push counts itself: its in_flight is 21, so the maximum is 21 as soon as
     * one push was refused; the quantiles show where the offered concurrency sits. */
    if (late.pushes)
        printf("|            |   W4 from %d s on: max in_flight at the lambda %d (target <= 20: "
               "%s; p50 %d, p99 %d), 429 share %.2f %% of %ld pushes (target < 5 %%: %s); all "
               "%d events handled\n",
               SETTLED_FROM_MS / 1000, late.max_in_flight, verdict(late.max_in_flight <= 20),
               hist_quantile(hist, late.pushes, 0.5), hist_quantile(hist, late.pushes, 0.99), share,
               late.pushes, verdict(share < 5.0), r->track.n);
    else
        printf("|            |   W4 from %d s on: no pushes (the run was shorter at this "
               "scale); all %d events handled\n",
               SETTLED_FROM_MS / 1000, r->track.n);
    fflush(stdout);
    free(sec);
    free(pu);
    return 0;
}

/* W5: the push rate over RATE_WINDOW_MS after the first RATE_SKIP_MS of pushes (the token
 * bucket's one-second burst is in that first second). */
static int report_rate(const bench_t *b, run_t *r)
{
    (void)b;
    size_t n;
    push_t *pu = read_pushes(r->lambda.record, &n);
    if (!pu || n == 0) {
        free(pu);
        row_failed(r, "no pushes in the record");
        return -1;
    }
    int64_t first = pu[0].ms, last = pu[0].ms;
    for (size_t i = 1; i < n; i++) {
        first = pu[i].ms < first ? pu[i].ms : first;
        last = pu[i].ms > last ? pu[i].ms : last;
    }
    int64_t from = first + RATE_SKIP_MS, to = first + RATE_SKIP_MS + RATE_WINDOW_MS;
    /* At a small scale the pushes end sooner: the window ends with them. */
    to = last + 1 < to ? last + 1 : to;
    long in_window = 0, per_s[12] = {0};
    for (size_t i = 0; i < n; i++) {
        in_window += pu[i].ms >= from && pu[i].ms < to;
        int64_t s = (pu[i].ms - first) / 1000;
        if (s < 12)
            per_s[s]++;
    }
    printf("|            |   pushes per second from the first: ");
    for (int s = 0; s < 12; s++)
        printf("%ld%s", per_s[s], s < 11 ? " " : "\n");
    if (to - from < 1000) {
        printf("|            |   W5 rate: not measured (the pushes end within %d s of the "
               "first at this scale)\n",
               RATE_SKIP_MS / 1000 + 1);
    } else {
        double rate = in_window * 1000.0 / (double)(to - from);
        printf("|            |   W5 rate over %.1f s after the first second of pushes: %.1f/s "
               "(%ld pushes; target 475-525: %s)\n",
               (double)(to - from) / 1000.0, rate, in_window, verdict(rate >= 475 && rate <= 525));
    }
    fflush(stdout);
    free(pu);
    return 0;
}

/* W6: tenant B's publish-to-handler latency behind tenant A's burst, and how much of A's
 * burst was still queued when B began (without it, the figure would prove nothing). */
static int report_fair(const bench_t *b, run_t *r)
{
    track_t *q = &r->probe;
    if (wait_handled(b, r, q, msm_time_unix_us() + PROBE_WAIT_MS * 1000LL, msm_time_unix_us()) != 0)
        return -1;
    int64_t lat[PROBE_EVENTS];
    for (int i = 0; i < q->n; i++)
        lat[i] = q->ev[i].handled_us - q->ev[i].sent_us;
    qsort(lat, (size_t)q->n, sizeof(*lat), cmp_i64);
    int64_t b_from = q->ev[0].sent_us, a_last_us = 0;
    int queued = 0;
    for (int i = 0; i < r->track.n; i++) {
        const event_t *e = &r->track.ev[i];
        queued += e->handled_us > b_from;
        a_last_us = e->handled_us > a_last_us ? e->handled_us : a_last_us;
    }
    double p99 = lat[(int64_t)q->n * 99 / 100] / 1000.0;
    printf("|            |   W6 tenant B (%d events, one request at a time after A's last "
           "publish was answered): publish -> handler p50 %.1f ms, p99 %.1f ms, max %.1f ms "
           "(target p99 < 100 ms: %s)\n",
           q->n, lat[q->n / 2] / 1000.0, p99, lat[q->n - 1] / 1000.0, verdict(p99 < 100.0));
    printf("|            |   W6 tenant A: the row's events/s; %d of its %d events were not yet "
           "handled when B's first publish was sent, the last handled %.0f ms after it\n",
           queued, r->track.n, (double)(a_last_us - b_from) / 1000.0);
    fflush(stdout);
    return 0;
}

static int run_workload(bench_t *b, const workload_t *w)
{
    run_t r = {.w = w};
    char why[2048] = "";
    int rc = -1;
    snprintf(r.topic, sizeof(r.topic), "bench-%s", w->name);
    snprintf(r.sub, sizeof(r.sub), "bench-%s-sub", w->name);
    /* Every row sets it: the rows after W1-always run with everysec again. */
    const char *fsync = w->fsync ? w->fsync : "everysec";
    if (redis_fsync(b, fsync) != 0) {
        row_failed(&r, "CONFIG SET appendfsync %s refused", fsync);
        return -1;
    }
    if (w->kafka && !b->on_kafka) {
        int moved = daemons_to_kafka(b, why, sizeof(why));
        if (moved == 1) {
            printf("| %-10s | not run (%s)\n", w->name, why);
            return 0;
        }
        if (moved != 0) {
            row_failed(&r, "%s", why);
            return -1;
        }
    }
    int n = scaled(b, w->events);
    if (track_init(&r.track, n) != 0) {
        row_failed(&r, "out of memory");
        goto done;
    }
    if (w->fair && track_init(&r.probe, PROBE_EVENTS) != 0) {
        row_failed(&r, "out of memory");
        goto done;
    }
    if (lambda_start(b, &r.lambda, w->name, w->lambda_args) != 0) {
        row_failed(&r, "the lambda did not become ready (log: %s)", r.lambda.proc.log);
        goto done;
    }
    int dead = exited_process(b, &r.lambda);
    if (dead >= 0) {
        row_failed(&r, "%s has exited (log: %s)", short_names[dead], proc_log(b, &r.lambda, dead));
        goto done;
    }
    int route = make_route(b, &r, why, sizeof(why));
    if (route == 1) {
        printf("| %-10s | not supported (%s)\n", w->name, why);
        rc = 0;
        goto done;
    }
    if (route != 0 || (w->kafka && warm_up(b, &r, why, sizeof(why)) != 0) ||
        run_publish(b, &r, why, sizeof(why)) != 0) {
        row_failed(&r, "%s", why);
        goto done;
    }
    /* W2: nothing is due before its first due time; the deadline is after the last one. */
    int64_t progress_from = w->delayed ? r.track.ev[0].due_ms * 1000 : msm_time_unix_us();
    int64_t deadline =
        w->delayed ? r.track.ev[n - 1].due_ms * 1000 + WAIT_SLACK_MS * 1000LL : wait_deadline(n);
    if (wait_handled(b, &r, &r.track, deadline, progress_from) != 0)
        goto done;
    sampler_stop(&r.sampler);
    cpu_sample(b, &r.lambda, r.cpu1);
    r.mem1 = used_memory(b);
    print_row(&r);
    if (w->report && w->report(b, &r) != 0)
        goto done;
    if (strcmp(w->name, "W1") == 0)
        print_retention(b, &r);
    rc = 0;
done:
    sampler_stop(&r.sampler);
    free(r.sampler.sp_limits);
    lambda_stop(&r.lambda);
    track_free(&r.track);
    track_free(&r.probe);
    return rc;
}

/* ---- main ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* MSM_BENCH_ONLY: a comma-separated list of row names; unset or empty runs them all. */
static int only_skips(const char *only, const char *name)
{
    if (!only || !*only)
        return 0;
    size_t n = strlen(name);
    for (const char *p = only; *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, name, n) == 0)
            return 0;
        p += len;
        if (*p == ',')
            p++;
    }
    return 1;
}

int main(int argc, char **argv)
{
    static const workload_t workloads[] = {
        {.name = "W0", .title = "1k events/s one by one", .events = 5000, .rate = 1000},
        {.name = "W1", .title = "as fast as published", .events = 200000, .batch = BATCH},
        {.name = "W1b",
         .title = "max_batch_events 100",
         .events = 200000,
         .batch = BATCH,
         .max_batch = 100,
         .needs = "max_batch_events"},
        {.name = "W3",
         .title = "fail-rate 0.1, backoff 100 ms",
         .events = 200000,
         .batch = BATCH,
         .retry = 1,
         .lambda_args = {"--fail-rate=0.1"}},
        {.name = "W2",
         .title = "deliver_at spread over 10 s, far-out ones pending",
         .events = 100000,
         .batch = BATCH,
         .delayed = 1},
        {.name = "W1-always",
         .title = "W1, appendfsync always",
         .events = 200000,
         .batch = BATCH,
         .fsync = "always"},
        {.name = "W4",
         .title = "back-pressure: max_concurrency 64, lambda 20 ms and --max-concurrent 20",
         .events = 30000,
         .batch = BATCH,
         .lambda_args = {"--latency-ms=20", "--max-concurrent=20"},
         .sub_extra = ",\"max_concurrency\":64,\"retry\":{\"max_attempts\":1000,"
                      "\"min_backoff_ms\":100,\"max_backoff_ms\":2000}",
         .sample_limit = 1,
         .report = report_backpressure},
        {.name = "W5",
         .title = "rate_limit_per_s 500, published at once",
         .events = 6000,
         .batch = BATCH,
         .sub_extra = ",\"rate_limit_per_s\":500",
         .needs = "rate_limit_per_s",
         .report = report_rate},
        {.name = "W6",
         .title = "fairness_key tenant: A's burst, then B's 10 one at a time",
         .events = 100000,
         .batch = BATCH,
         .sub_extra = ",\"fairness_key\":\"tenant\"",
         .needs = "fairness_key",
         .fair = 1,
         .report = report_fair},
        /* Last: once on Kafka, the daemons stay there. */
        {.name = "W0-kafka",
         .title = "W0 on the Kafka log (mock cluster)",
         .events = 5000,
         .rate = 1000,
         .kafka = 1},
        {.name = "W1-kafka",
         .title = "W1 on the Kafka log (mock cluster)",
         .events = 200000,
         .batch = BATCH,
         .kafka = 1},
    };
    bench_t b = {.scale = 1.0};
    const char *only = getenv("MSM_BENCH_ONLY");
    const char *scale = getenv("MSM_BENCH_SCALE");
    if (scale && (b.scale = atof(scale)) <= 0) {
        fprintf(stderr, "msm-bench-pipeline: MSM_BENCH_SCALE must be a number > 0\n");
        return 2;
    }
    if (find_bins(&b, argc, argv) != 0) {
        fprintf(stderr, "usage: msm-bench-pipeline [FRONTEND SCHEDULER FLOWCONTROL ROUTER "
                        "LAMBDA [KAFKA_MOCK]]\n(without arguments: found beside this binary in "
                        "the build tree; without KAFKA_MOCK the *-kafka rows are not run)\n");
        return 2;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(b.dir, sizeof(b.dir), "%s/msm-bench-pipeline-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    msm_test_namespace(b.ns, sizeof(b.ns));
    if (!mkdtemp(b.dir) || msm_test_redis_start(&b.redis) != 0 ||
        redis_fsync(&b, "everysec") != 0) {
        fprintf(stderr, "msm-bench-pipeline: could not start redis-server\n");
        return 1;
    }
    int rc = daemons_start(&b) == 0 ? 0 : 1;
    if (rc == 0) {
        printf("pipeline: ~100-byte JSON events over HTTP, batches of %d, %d requests in "
               "flight; redis AOF everysec unless the row says otherwise; scale %g\n",
               BATCH, IN_FLIGHT, b.scale);
        for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++)
            printf("  %-9s %s, %d events\n", workloads[i].name, workloads[i].title,
                   scaled(&b, workloads[i].events));
        printf("CPU: µs per event of each process (utime+stime); msm = redis + the four "
               "daemons. MB: Redis used_memory before and after the row.\n");
        printf("| workload   | events  | events/s | p50 ms   | p99 ms   | max ms   | redis | "
               "fe    | sch   | fc    | rt    | msm    | lambda | MB bef. | MB aft. |\n");
        printf("|------------|---------|----------|----------|----------|----------|-------|"
               "-------|-------|-------|-------|--------|--------|---------|---------|\n");
        fflush(stdout);
        for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
            if (only_skips(only, workloads[i].name))
                continue;
            if (run_workload(&b, &workloads[i]) != 0)
                rc = 1;
        }
        printf("(W2: lateness = lambda's received_us - deliver_at, with %d far-out events "
               "pending; others: latency = received_us - when the publish request was sent. "
               "W6's row is tenant A's burst. msm = redis + the four daemons)\n",
               scaled(&b, 1000000));
    }
    fflush(stdout);
    daemons_stop(&b);
    msm_test_redis_destroy(&b.redis);
    if (rc != 0)
        fprintf(stderr, "msm-bench-pipeline: some rows FAILED; logs kept in %s\n", b.dir);
    else
        nftw(b.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    curl_global_cleanup();
    return rc;
}
