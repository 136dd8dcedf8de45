/* SPDX-License-Identifier: MIT */
/* The lambda host (supervisor.c) with real processes: msm-example-lambda started with the
 * supervisor's flags gets real pushes over HTTP from a libcurl load generator. Handler
 * threads, kill -9 of a worker mid-request, the watchdog, autoscaling on a load step, and
 * a canary release rolled back and promoted. The pure parts (scale.c's verdicts, board.c's
 * latency buckets) are unit-tested first. */
#include "lambda_test_util.h"
#include "msm_test.h"

#include "board.h"
#include "scale.h"

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static char dir[256];

static int suite_init(void)
{
    return lt_suite_setup(dir, sizeof(dir));
}

static int suite_clean(void)
{
    lt_suite_teardown(dir);
    return 0;
}

/* ---- pure parts ---- */

static void test_latency_buckets(void)
{
    CU_ASSERT_EQUAL(msm__lat_bucket(0), 0);
    CU_ASSERT_EQUAL(msm__lat_bucket(15), 0);
    for (uint64_t us = 16; us < 60000000; us = us * 9 / 8 + 1) {
        unsigned b = msm__lat_bucket(us);
        CU_ASSERT_TRUE(us < msm__lat_bucket_upper_us(b));
        CU_ASSERT_TRUE(us >= msm__lat_bucket_upper_us(b - 1));
    }
    lm_tally_t t = {0};
    for (int i = 0; i < 99; i++)
        t.latency[msm__lat_bucket(1000)]++;
    t.latency[msm__lat_bucket(500000)]++;
    /* p99 is the 99th of 100: within the 1 ms bucket; p100 the slow one. */
    CU_ASSERT_TRUE(msm__tally_quantile_us(&t, 0.99) <= 1250);
    CU_ASSERT_TRUE(msm__tally_quantile_us(&t, 1.0) > 500000);
}

static void test_scaler(void)
{
    lm_scaler_t s;
    msm__scaler_init(&s, 1, 20, 1, 0.6, 1000, 5000, 0);
    uint64_t busy = 0;
    int64_t t = 0;
    /* Idle: stays at the minimum. */
    for (; t <= 3000; t += 100)
        CU_ASSERT_EQUAL(msm__scaler_step(&s, t, busy, 1), 1);
    /* 10 handler-seconds per second (500/s x 20 ms) arrive: while saturated the pool
     * doubles every half window, then settles at 10 / 0.6. Busy time never exceeds what
     * the workers running can give. */
    int most = 0, running = 1;
    int64_t step_at = t;
    int64_t reached = -1;
    for (; t <= 8000; t += 100) {
        busy += (uint64_t)(running < 10 ? running : 10) * 100000;
        int d = msm__scaler_step(&s, t, busy, running);
        running = d; /* workers start at once here */
        most = d > most ? d : most;
        if (d >= 17 && reached < 0)
            reached = t - step_at;
    }
    CU_ASSERT_EQUAL(most, 17);
    CU_ASSERT_TRUE(reached > 0 && reached <= 3000);
    /* Load gone: nothing for the down delay, then back to the minimum. */
    int64_t gone = t;
    for (; t <= gone + 4900; t += 100)
        CU_ASSERT_EQUAL(msm__scaler_step(&s, t, busy, 17), 17);
    /* Then down in steps (each to the most any sample of the last delay wanted), never up. */
    int last = 17;
    for (; t <= gone + 12000; t += 100) {
        int d = msm__scaler_step(&s, t, busy, s.sc_desired);
        CU_ASSERT_TRUE(d <= last);
        last = d;
    }
    CU_ASSERT_EQUAL(s.sc_desired, 1);
    /* Never above the maximum. */
    msm__scaler_init(&s, 2, 4, 2, 0.6, 1000, 5000, 0);
    busy = 0;
    for (t = 0; t <= 5000; t += 100) {
        busy += (uint64_t)s.sc_desired * 2 * 100000; /* every thread busy */
        msm__scaler_step(&s, t, busy, s.sc_desired);
    }
    CU_ASSERT_EQUAL(s.sc_desired, 4);
}

static void fill(lm_tally_t *t, uint64_t answered, uint64_t failed, uint64_t latency_us)
{
    memset(t, 0, sizeof(*t));
    t->answered = answered;
    t->failed = failed;
    t->latency[msm__lat_bucket(latency_us)] = answered;
}

static void test_canary_judge(void)
{
    lm_canary_rules_t r = {.cj_window_ms = 1000,
                           .cj_min_events = 50,
                           .cj_error_margin = 0.05,
                           .cj_latency_factor = 2.0,
                           .cj_latency_slack_us = 20000,
                           .cj_max_crashes = 3};
    lm_tally_t base, can;
    char why[256];
    fill(&base, 1000, 10, 5000);
    fill(&can, 40, 20, 5000);
    CU_ASSERT_EQUAL(msm__canary_judge(&r, &base, &can, 0, 5000, why, sizeof(why)),
                    LM_CANARY_WAIT); /* too few answers */
    fill(&can, 100, 50, 5000);
    CU_ASSERT_EQUAL(msm__canary_judge(&r, &base, &can, 0, 100, why, sizeof(why)),
                    LM_CANARY_ROLLBACK); /* 50% errors: no need to wait for the window */
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "50.0%"));
    fill(&can, 100, 2, 5000);
    CU_ASSERT_EQUAL(msm__canary_judge(&r, &base, &can, 0, 500, why, sizeof(why)),
                    LM_CANARY_WAIT); /* good so far, window not over */
    CU_ASSERT_EQUAL(msm__canary_judge(&r, &base, &can, 0, 1000, why, sizeof(why)),
                    LM_CANARY_PROMOTE);
    fill(&can, 100, 0, 200000);
    CU_ASSERT_EQUAL(msm__canary_judge(&r, &base, &can, 0, 1000, why, sizeof(why)),
                    LM_CANARY_ROLLBACK); /* p99 200 ms against 5 ms */
    fill(&can, 100, 0, 8000);
    CU_ASSERT_EQUAL(msm__canary_judge(&r, &base, &can, 0, 1000, why, sizeof(why)),
                    LM_CANARY_PROMOTE); /* slower, but within the slack */
    CU_ASSERT_EQUAL(msm__canary_judge(&r, &base, &can, 3, 1000, why, sizeof(why)),
                    LM_CANARY_ROLLBACK); /* crashing */
}

/* ---- a supervised lambda ---- */

typedef struct {
    msm_test_proc_t proc;
    int admin;
} lambda_t;

static int lambda_start(lambda_t *l, const char *bin, const char *const *args)
{
    static int seq;
    memset(l, 0, sizeof(*l));
    l->proc.port = msm_test_free_port();
    l->admin = msm_test_free_port();
    snprintf(l->proc.log, sizeof(l->proc.log), "%s/sup-%d.log", dir, ++seq);
    msm_test_proc_arg(&l->proc, "%s", bin);
    msm_test_proc_arg(&l->proc, "--port=%d", l->proc.port);
    msm_test_proc_arg(&l->proc, "--admin-port=%d", l->admin);
    msm_test_proc_arg(&l->proc, "--bind=127.0.0.1");
    for (int i = 0; args[i]; i++)
        msm_test_proc_arg(&l->proc, "%s", args[i]);
    if (msm_test_proc_start(&l->proc) != 0)
        return -1;
    if (msm_test_proc_wait_ready(&l->proc, "/healthz", 10000) == 0)
        return 0;
    fprintf(stderr, "lambda did not start (log %s)\n", l->proc.log);
    msm_test_proc_stop(&l->proc, SIGKILL, 2000);
    return -1;
}

/* GET /debug/workers from the supervisor. */
static json_t *workers(const lambda_t *l)
{
    lt_http_t h = {.path = "/debug/workers", .timeout_ms = 2000};
    lt_http(l->admin, &h);
    json_t *j = h.status == 200 ? json_loadb(h.rbody, h.rlen, 0, NULL) : NULL;
    lt_http_free(&h);
    return j;
}

static int ready_workers(const lambda_t *l, const char *release)
{
    json_t *j = workers(l);
    int n = 0;
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(j, "workers"), i, w)
    {
        if (strcmp(json_string_value(json_object_get(w, "state")), "ready") == 0 &&
            !json_is_true(json_object_get(w, "obsolete")) &&
            (!release || strcmp(json_string_value(json_object_get(w, "release")), release) == 0))
            n++;
    }
    json_decref(j);
    return n;
}

/* A metric's value from the supervisor's /metrics (the first line starting with @p name). */
static double metric(const lambda_t *l, const char *name)
{
    lt_http_t h = {.path = "/metrics", .timeout_ms = 2000};
    lt_http(l->admin, &h);
    double v = -1;
    size_t n = strlen(name);
    for (const char *p = h.rbody; p && *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    lt_http_free(&h);
    return v;
}

/* ---- a load generator: pushes at a rate, many in flight, keep-alive ---- */

#define LOAD_MAX_IN_FLIGHT 128

typedef struct {
    int port;
    CURLM *multi;
    CURL *idle[LOAD_MAX_IN_FLIGHT];
    int nidle, running;
    struct curl_slist *hdrs;
    char url[64];
    long long seq;
    long long sent, ok, failed, refused;
} load_t;

static void load_init(load_t *ld, int port)
{
    memset(ld, 0, sizeof(*ld));
    ld->port = port;
    ld->multi = curl_multi_init();
    curl_multi_setopt(ld->multi, CURLMOPT_MAXCONNECTS, (long)LOAD_MAX_IN_FLIGHT);
    snprintf(ld->url, sizeof(ld->url), "http://127.0.0.1:%d/", port);
    ld->hdrs = curl_slist_append(NULL, "ce-specversion: 1.0");
    ld->hdrs = curl_slist_append(ld->hdrs, "ce-source: /msm/topics/load");
    ld->hdrs = curl_slist_append(ld->hdrs, "ce-type: load");
    ld->hdrs = curl_slist_append(ld->hdrs, "Msm-Subscription: load");
    ld->hdrs = curl_slist_append(ld->hdrs, "Content-Type: application/json");
    ld->hdrs = curl_slist_append(ld->hdrs, "Expect:");
    for (int i = 0; i < LOAD_MAX_IN_FLIGHT; i++)
        ld->idle[ld->nidle++] = curl_easy_init();
}

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

static void load_send(load_t *ld)
{
    CURL *e = ld->idle[--ld->nidle];
    char id[64];
    snprintf(id, sizeof(id), "ce-id: load-%lld", ++ld->seq);
    struct curl_slist *h = curl_slist_append(NULL, id);
    for (struct curl_slist *x = ld->hdrs; x; x = x->next)
        h = curl_slist_append(h, x->data);
    curl_easy_setopt(e, CURLOPT_URL, ld->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, "{}");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, h);
    curl_multi_add_handle(ld->multi, e);
    ld->running++;
    ld->sent++;
}

static void load_collect(load_t *ld)
{
    int left;
    CURLMsg *m;
    while ((m = curl_multi_info_read(ld->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        long status = 0;
        struct curl_slist *h = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&h);
        if (m->data.result != CURLE_OK)
            ld->refused++;
        else if (status == 200)
            ld->ok++;
        else
            ld->failed++;
        curl_multi_remove_handle(ld->multi, m->easy_handle);
        curl_slist_free_all(h);
        ld->idle[ld->nidle++] = m->easy_handle;
        ld->running--;
    }
}

/* Offers @p rate pushes/s for @p ms (open loop, at most LOAD_MAX_IN_FLIGHT in flight),
 * calling @p every each 500 ms. */
static void load_run(load_t *ld, double rate, long long ms, void (*every)(void *), void *arg)
{
    long long start = lt_unix_ms(), next_tick = start + 500;
    double due = 0;
    for (;;) {
        long long now = lt_unix_ms();
        if (now - start >= ms)
            break;
        double should = rate * (double)(now - start) / 1000.0;
        while (due < should && ld->nidle > 0) {
            load_send(ld);
            due += 1;
        }
        if (due < should) /* saturated: what could not be sent is not owed later */
            due = should;
        int still;
        curl_multi_perform(ld->multi, &still);
        load_collect(ld);
        curl_multi_poll(ld->multi, NULL, 0, 2, NULL);
        if (every && now >= next_tick) {
            every(arg);
            next_tick += 500;
        }
    }
}

static void load_drain(load_t *ld)
{
    long long until = lt_unix_ms() + 15000;
    while (ld->running > 0 && lt_unix_ms() < until) {
        int still;
        curl_multi_perform(ld->multi, &still);
        load_collect(ld);
        curl_multi_poll(ld->multi, NULL, 0, 10, NULL);
    }
}

static void load_free(load_t *ld)
{
    load_drain(ld);
    for (int i = 0; i < ld->nidle; i++)
        curl_easy_cleanup(ld->idle[i]);
    curl_multi_cleanup(ld->multi);
    curl_slist_free_all(ld->hdrs);
}

/* ---- handler threads ---- */

/* Seconds to answer @p n pushes sent at once to a lambda whose handler blocks 300 ms. */
static double burst_secs(const char *workers_flag, const char *threads_flag, int n)
{
    lambda_t l;
    const char *args[] = {workers_flag, threads_flag, "--busy-ms=300", "--max-connection-age-ms=0",
                          NULL};
    if (lambda_start(&l, MSM_EXAMPLE_LAMBDA, args) != 0)
        return -1;
    load_t ld;
    load_init(&ld, l.proc.port);
    long long t0 = lt_unix_ms();
    while (ld.sent < n)
        load_send(&ld);
    load_drain(&ld);
    double secs = (double)(lt_unix_ms() - t0) / 1000.0;
    CU_ASSERT_EQUAL(ld.ok, n);
    load_free(&ld);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&l.proc, SIGTERM, 10000), 0);
    return secs;
}

static void test_threads(void)
{
    /* Serially, 12 pushes of 300 ms take 3.6 s; with 2 workers x 3 threads, 0.6 s. */
    double one = burst_secs("--max-workers=1", "--threads=1", 12);
    double six = burst_secs("--min-workers=2", "--threads=3", 12);
    printf("\n    12 pushes of a handler blocking 300 ms: 1 worker x 1 thread %.2f s, "
           "2 workers x 3 threads %.2f s\n",
           one, six);
    CU_ASSERT_TRUE(one >= 3.5);
    CU_ASSERT_TRUE(six > 0 && six < 1.5);
}

/* ---- kill -9 of a worker mid-request, and the watchdog ---- */

/* Handler threads busy in all workers; @p pid (may be NULL) gets a busy worker's, or 0. */
static int busy_threads(const lambda_t *l, int *pid)
{
    json_t *j = workers(l);
    int n = 0;
    size_t i;
    json_t *w;
    if (pid)
        *pid = 0;
    json_array_foreach(json_object_get(j, "workers"), i, w)
    {
        int busy = (int)json_integer_value(json_object_get(w, "busy_threads"));
        n += busy;
        if (pid && busy > 0)
            *pid = (int)json_integer_value(json_object_get(w, "pid"));
    }
    json_decref(j);
    return n;
}

static void test_kill_worker(void)
{
    lambda_t l;
    const char *args[] = {"--min-workers=2", "--threads=2", "--busy-ms=2000", NULL};
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, MSM_EXAMPLE_LAMBDA, args), 0);
    load_t ld;
    load_init(&ld, l.proc.port);
    load_send(&ld);
    int pid = 0;
    long long until = lt_unix_ms() + 3000;
    while (!pid && lt_unix_ms() < until) {
        int still;
        curl_multi_perform(ld.multi, &still);
        busy_threads(&l, &pid);
    }
    CU_ASSERT_TRUE_FATAL(pid > 0);
    long long killed = lt_unix_ms();
    kill(pid, SIGKILL);
    /* The request in flight fails (the router would push it again)... */
    load_drain(&ld);
    CU_ASSERT_EQUAL(ld.refused, 1);
    /* ... and a new worker serves within a second. */
    int back = 0;
    while (lt_unix_ms() - killed < 1000 && !(back = ready_workers(&l, NULL) == 2))
        usleep(20000);
    printf("\n    worker killed mid-request: 2 workers ready again after %lld ms\n",
           lt_unix_ms() - killed);
    CU_ASSERT_TRUE(back);
    CU_ASSERT_EQUAL(metric(&l, "msm_lambda_worker_restarts_total{reason=\"crashed\"}"), 1);
    load_free(&ld);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&l.proc, SIGTERM, 10000), 0);
}

static void test_watchdog(void)
{
    lambda_t l;
    const char *args[] = {"--threads=1", "--busy-ms=5000", "--watchdog-ms=300", NULL};
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, MSM_EXAMPLE_LAMBDA, args), 0);
    char deadline[64];
    snprintf(deadline, sizeof(deadline), "Msm-Deadline: %lld", lt_unix_ms() + 200);
    lt_http_t h = {.headers = {"ce-id: stuck", "ce-specversion: 1.0", "ce-source: /x", "ce-type: t",
                               "Msm-Subscription: s", deadline},
                   .body = "{}",
                   .body_len = 2,
                   .timeout_ms = 4000};
    long long t0 = lt_unix_ms();
    lt_http(l.proc.port, &h);
    /* Answered retry at the deadline while the thread still blocks... */
    CU_ASSERT_EQUAL(h.status, 503);
    lt_http_free(&h);
    /* ... then killed 300 ms past it, and replaced. */
    long long until = t0 + 3000;
    while (metric(&l, "msm_lambda_worker_restarts_total{reason=\"watchdog\"}") < 1 &&
           lt_unix_ms() < until)
        usleep(50000);
    long long took = lt_unix_ms() - t0;
    printf("\n    watchdog: worker replaced %lld ms after a push with a 200 ms deadline "
           "(--watchdog-ms 300)\n",
           took);
    CU_ASSERT_EQUAL(metric(&l, "msm_lambda_worker_restarts_total{reason=\"watchdog\"}"), 1);
    CU_ASSERT_TRUE(took >= 450 && took < 2000);
    until = lt_unix_ms() + 2000;
    while (ready_workers(&l, NULL) < 1 && lt_unix_ms() < until)
        usleep(20000);
    CU_ASSERT_EQUAL(ready_workers(&l, NULL), 1);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&l.proc, SIGTERM, 10000), 0);
}

/* ---- SIGTERM to the whole process group (Ctrl-C, systemd) still drains ---- */

static void test_group_sigterm_drains(void)
{
    lambda_t l;
    memset(&l, 0, sizeof(l));
    l.proc.own_group = 1; /* signals go to the group: supervisor and workers alike */
    l.proc.port = msm_test_free_port();
    l.admin = msm_test_free_port();
    snprintf(l.proc.log, sizeof(l.proc.log), "%s/group.log", dir);
    msm_test_proc_arg(&l.proc, "%s", MSM_EXAMPLE_LAMBDA);
    msm_test_proc_arg(&l.proc, "--port=%d", l.proc.port);
    msm_test_proc_arg(&l.proc, "--admin-port=%d", l.admin);
    msm_test_proc_arg(&l.proc, "--bind=127.0.0.1");
    msm_test_proc_arg(&l.proc, "--min-workers=2");
    msm_test_proc_arg(&l.proc, "--threads=3"); /* 3 busy however the pushes spread */
    msm_test_proc_arg(&l.proc, "--busy-ms=800");
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&l.proc), 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_wait_ready(&l.proc, "/healthz", 10000), 0);
    load_t ld;
    load_init(&ld, l.proc.port);
    for (int i = 0; i < 3; i++)
        load_send(&ld);
    long long until = lt_unix_ms() + 3000;
    while (busy_threads(&l, NULL) < 3 && lt_unix_ms() < until) {
        int still;
        curl_multi_perform(ld.multi, &still);
    }
    CU_ASSERT_EQUAL(busy_threads(&l, NULL), 3);
    /* The group's SIGTERM reaches every worker directly and through the supervisor: one
     * drain, not a forced stop. The pushes in flight are answered 200, the exit is 0. */
    CU_ASSERT_EQUAL(msm_test_proc_stop(&l.proc, SIGTERM, 10000), 0);
    load_drain(&ld);
    CU_ASSERT_EQUAL(ld.ok, 3);
    load_free(&ld);
}

/* ---- autoscaling ---- */

typedef struct {
    const lambda_t *l;
    load_t *ld;
    long long t0;
    double rate;
    long long last_ok;
    int max_workers;
    int last_workers;
    long long step_ms;   /* when the load step began */
    long long scaled_ms; /* when 10 workers first served after it */
    char *table;
    size_t len, cap;
} trace_t;

static void trace_row(void *arg)
{
    trace_t *t = arg;
    json_t *j = workers(t->l);
    int ready = (int)json_integer_value(json_object_get(j, "ready"));
    int desired = (int)json_integer_value(json_object_get(j, "desired"));
    double util = json_real_value(json_object_get(j, "utilization"));
    json_decref(j);
    char row[160];
    int n = snprintf(row, sizeof(row), "| %5.1f | %4.0f | %5lld | %4d | %4d | %5.0f%% |\n",
                     (double)(lt_unix_ms() - t->t0) / 1000, t->rate, (t->ld->ok - t->last_ok) * 2,
                     ready, desired, util * 100);
    t->last_ok = t->ld->ok;
    if (ready > t->max_workers)
        t->max_workers = ready;
    if (t->step_ms && !t->scaled_ms && ready >= 10)
        t->scaled_ms = lt_unix_ms();
    t->last_workers = ready;
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->cap + (size_t)n + 1) * 2;
        t->table = realloc(t->table, t->cap);
    }
    memcpy(t->table + t->len, row, (size_t)n + 1);
    t->len += (size_t)n;
}

static void test_autoscale(void)
{
    lambda_t l;
    const char *args[] = {"--min-workers=1", "--max-workers=32", "--busy-ms=20",
                          "--scale-down-delay-ms=4000", NULL};
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, MSM_EXAMPLE_LAMBDA, args), 0);
    load_t ld;
    load_init(&ld, l.proc.port);
    trace_t t = {.l = &l, .ld = &ld, .t0 = lt_unix_ms()};
    t.rate = 10;
    load_run(&ld, 10, 3000, trace_row, &t);
    int before = t.max_workers;
    t.rate = 500;
    t.step_ms = lt_unix_ms();
    load_run(&ld, 500, 10000, trace_row, &t);
    int peak = t.max_workers;
    t.rate = 10;
    load_run(&ld, 10, 10000, trace_row, &t);
    printf("\n    autoscaling, handler blocking 20 ms, 1 thread per worker, target 60%%:\n"
           "    |   t s | load/s | answered/s | workers | desired | utilisation |\n%s",
           t.table ? t.table : "");
    printf("    answered %lld of %lld (%lld refused, %lld failed)\n", ld.ok, ld.sent, ld.refused,
           ld.failed);
    CU_ASSERT_EQUAL(before, 1);
    printf("    10 workers serving %.1f s after the load step\n",
           t.scaled_ms ? (double)(t.scaled_ms - t.step_ms) / 1000 : -1.0);
    CU_ASSERT_TRUE(peak >= 10); /* 500/s x 20 ms = 10 busy: 17 at 60% */
    CU_ASSERT_TRUE(t.scaled_ms > 0 && t.scaled_ms - t.step_ms <= 5000); /* within seconds */
    CU_ASSERT_TRUE(t.last_workers <= 3); /* back down after the load step */
    /* Retired workers finish what they have: nothing refused or failed on the way down. */
    CU_ASSERT_EQUAL(ld.refused, 0);
    CU_ASSERT_EQUAL(ld.failed, 0);
    CU_ASSERT_TRUE(metric(&l, "msm_lambda_scale_events_total{direction=\"up\"}") >= 1);
    CU_ASSERT_TRUE(metric(&l, "msm_lambda_scale_events_total{direction=\"down\"}") >= 1);
    free(t.table);
    load_free(&ld);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&l.proc, SIGTERM, 15000), 0);
}

/* ---- canary ---- */

/* A canary "release": a script running the example lambda with @p extra appended. */
static void write_canary(char *path, size_t n, const char *name, const char *extra)
{
    snprintf(path, n, "%s/%s.sh", dir, name);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "#!/bin/sh\nexec '%s' \"$@\" %s\n", MSM_EXAMPLE_LAMBDA, extra);
    fclose(f);
    chmod(path, 0755);
}

static const char *canary_state(const lambda_t *l, char *why, size_t n)
{
    static char state[32];
    json_t *j = workers(l);
    json_t *c = json_object_get(j, "canary");
    snprintf(state, sizeof(state), "%s", json_string_value(json_object_get(c, "state")));
    snprintf(why, n, "%s", json_string_value(json_object_get(c, "why")));
    json_decref(j);
    return state;
}

/* Runs @p canary beside the example lambda under steady load until a verdict. */
static void run_canary(const char *canary, const char *expect)
{
    char flag[600];
    snprintf(flag, sizeof(flag), "--canary=%s", canary);
    lambda_t l;
    const char *args[] = {"--min-workers=4",
                          "--max-workers=4",
                          "--canary-share=25",
                          "--canary-window-ms=3000",
                          "--canary-min-events=100",
                          flag,
                          NULL};
    CU_ASSERT_EQUAL_FATAL(lambda_start(&l, MSM_EXAMPLE_LAMBDA, args), 0);
    load_t ld;
    load_init(&ld, l.proc.port);
    char why[256] = "";
    const char *state = "running";
    long long until = lt_unix_ms() + 20000;
    while (strcmp(state, "running") == 0 && lt_unix_ms() < until) {
        load_run(&ld, 400, 500, NULL, NULL);
        state = canary_state(&l, why, sizeof(why));
    }
    printf("\n    canary %s: %s (%s)\n", strrchr(canary, '/') + 1, state, why);
    CU_ASSERT_STRING_EQUAL(state, expect);
    /* Settled: four workers of the surviving release (a promoted canary is the current
     * one), none left of the other. */
    until = lt_unix_ms() + 8000;
    while (lt_unix_ms() < until &&
           (ready_workers(&l, "current") != 4 || ready_workers(&l, "canary") != 0))
        load_run(&ld, 100, 200, NULL, NULL);
    CU_ASSERT_EQUAL(ready_workers(&l, "current"), 4);
    CU_ASSERT_EQUAL(ready_workers(&l, "canary"), 0);
    json_t *j = workers(&l);
    const char *current = json_string_value(json_object_get(j, "current"));
    /* After a promotion every worker runs the new build. */
    CU_ASSERT_STRING_EQUAL(current, strcmp(expect, "promoted") == 0 ? canary : "/proc/self/exe");
    json_decref(j);
    CU_ASSERT_EQUAL(metric(&l, strcmp(expect, "promoted") == 0
                                   ? "msm_lambda_canary_decisions_total{decision=\"promote\"}"
                                   : "msm_lambda_canary_decisions_total{decision=\"rollback\"}"),
                    1);
    load_free(&ld);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&l.proc, SIGTERM, 15000), 0);
}

static void test_canary_rollback(void)
{
    char path[512];
    write_canary(path, sizeof(path), "canary-bad", "--fail-rate=0.5");
    run_canary(path, "rolled_back");
}

static void test_canary_promote(void)
{
    char path[512];
    write_canary(path, sizeof(path), "canary-good", "");
    run_canary(path, "promoted");
}

/* ---- start failures stay visible ---- */

static void test_start_failure(void)
{
    /* A start hook that fails (a bad --fail-attr) ends the lambda with status 1, not a
     * restart loop. */
    msm_test_proc_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.log, sizeof(c.log), "%s/start-failure.log", dir);
    msm_test_proc_arg(&c, "%s", MSM_EXAMPLE_LAMBDA);
    msm_test_proc_arg(&c, "--port=%d", msm_test_free_port());
    msm_test_proc_arg(&c, "--bind=127.0.0.1");
    msm_test_proc_arg(&c, "--fail-attr=nonsense");
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&c), 0);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, 0, 5000), 1);
}

static CU_TestInfo supervisor_tests[] = {
    {"latency buckets and quantiles", test_latency_buckets},
    {"autoscaler: up at once, down after the delay", test_scaler},
    {"canary verdicts", test_canary_judge},
    {"a worker that cannot start ends the lambda (status 1)", test_start_failure},
    {"--threads: a handler that blocks holds only its thread", test_threads},
    {"kill -9 of a worker mid-request: back within 1 s", test_kill_worker},
    {"watchdog: a handler far past its deadline is killed", test_watchdog},
    {"SIGTERM to the process group drains (not a second signal)", test_group_sigterm_drains},
    {"autoscaling on a load step, 10 -> 500 -> 10 pushes/s", test_autoscale},
    {"canary failing 50%: rolled back", test_canary_rollback},
    {"canary as good as the current release: promoted", test_canary_promote},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"supervisor", suite_init, suite_clean, NULL, NULL, supervisor_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
