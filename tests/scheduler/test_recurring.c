/* SPDX-License-Identifier: MIT */
/* Recurring schedules in the scheduler.
 *
 *   test_recurring FRONTEND SCHEDULER
 *
 * The plan (which ticks a firing publishes, catch_up) as a pure function; then the real
 * msm-frontend and msm-scheduler processes against a real redis-server: a schedule every
 * second for ten seconds with two schedulers, one of them killed with kill -9 midway (exactly
 * ten events in the topic's log, one per due time, consecutive, no duplicate id), and the
 * three catch_up policies after every scheduler was stopped for four ticks. The topic's log
 * is read back from Redis; a consumer group of the test's own ("audit", never reading) keeps
 * the log from being trimmed behind the scheduler's group. */
#include "lambda_test_util.h"
#include "msm_test.h"
#include "msm_test_proc.h"
#include "sch_int.h"

#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/schedule.h"
#include "msm/time.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *fe_bin, *sch_bin;
static msm_test_redis_t srv;
static msm_test_proc_t frontend;
static char dir[256], ns[64];

/* ---- the plan (pure) ---- */

static msm_schedule_t every(int64_t ms, msm_catch_up_t c)
{
    return (msm_schedule_t){.name = "p", .every_ms = ms, .catch_up = c};
}

/* The plan's due times as "a,b,c" in seconds. */
static const char *plan_text(const sch_plan_t *p, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < p->n && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? "," : "",
                                (long long)(p->due[i] / 1000));
    return buf;
}

static void check_plan(const msm_schedule_t *s,
                       int64_t from,
                       int64_t now,
                       int64_t grace,
                       size_t cap,
                       int64_t counted,
                       const char *want,
                       int64_t want_last,
                       uint64_t want_skipped)
{
    sch_plan_t p;
    char got[512];
    CU_ASSERT_EQUAL_FATAL(sch__plan(s, from, now, grace, cap, counted, &p), MSM_OK);
    plan_text(&p, got, sizeof(got));
    if (strcmp(got, want) != 0 || p.last_ms != want_last || p.skipped != want_skipped)
        fprintf(stderr,
                "\n  plan(%s, from %lld, now %lld, grace %lld, cap %zu): [%s] last %lld "
                "skipped %llu; want [%s] last %lld skipped %llu",
                msm_catch_up_name(s->catch_up), (long long)from, (long long)now, (long long)grace,
                cap, got, (long long)p.last_ms, (unsigned long long)p.skipped, want,
                (long long)want_last, (unsigned long long)want_skipped);
    CU_ASSERT_STRING_EQUAL(got, want);
    CU_ASSERT_EQUAL(p.last_ms, want_last);
    CU_ASSERT_EQUAL(p.skipped, want_skipped);
    sch__plan_deinit(&p);
}

static void test_plan(void)
{
    msm_schedule_t none = every(1000, MSM_CATCH_UP_NONE), last = every(1000, MSM_CATCH_UP_LAST),
                   all = every(1000, MSM_CATCH_UP_ALL);
    /* On time: the tick due now, and one due a little ago, whatever the policy. */
    check_plan(&none, 99000, 100000, 5000, 100, 0, "100", 100000, 0);
    check_plan(&none, 99000, 100004, 5000, 100, 0, "100", 100000, 0);
    check_plan(&none, 100000, 100999, 5000, 100, 0, "", 100000, 0);
    /* Late but within the grace: still on time, all of them. */
    check_plan(&none, 96000, 100500, 5000, 100, 0, "97,98,99,100", 100000, 0);
    /* Stopped since 50 s: ticks 51..95 are missed (due more than 5 s ago), 96..100 on time. */
    check_plan(&none, 50000, 100000, 5000, 100, 0, "96,97,98,99,100", 100000, 45);
    check_plan(&last, 50000, 100000, 5000, 100, 0, "95,96,97,98,99,100", 100000, 44);
    check_plan(&all, 50000, 100000, 5000, 100, 0,
               "51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,"
               "66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,"
               "93,94,95,96,97,98,99,100",
               100000, 0);
    /* "all" publishes at most cap missed ticks: the latest. */
    check_plan(&all, 50000, 100000, 5000, 3, 0, "93,94,95,96,97,98,99,100", 100000, 42);
    /* Skipped ticks already counted by an earlier firing are not counted again. */
    check_plan(&none, 50000, 100000, 5000, 100, 90000, "96,97,98,99,100", 100000, 5);
    /* A grace of 0: only what is due this very millisecond is on time. */
    check_plan(&none, 97000, 100000, 0, 100, 0, "", 100000, 3);
    check_plan(&last, 97000, 100000, 0, 100, 0, "100", 100000, 2);
    /* Nothing due (the clock is before the last settled due time). */
    check_plan(&all, 100000, 99000, 5000, 100, 0, "", 100000, 0);
    /* Missed further back than the lookback (31 days): dropped, not counted, settled. */
    int64_t now = 100LL * 24 * 3600 * 1000;
    sch_plan_t p;
    CU_ASSERT_EQUAL_FATAL(sch__plan(&all, 0, now, 5000, 2, 0, &p), MSM_OK);
    CU_ASSERT_EQUAL(p.n, 2 + 5);
    CU_ASSERT_EQUAL(p.skipped, (uint64_t)(SCH_CATCH_UP_LOOKBACK_MS / 1000 - 5 - 2));
    CU_ASSERT_EQUAL(p.last_ms, now);
    sch__plan_deinit(&p);

    /* cron: walked minute by minute; the same rules. */
    msm_schedule_t cron = {.name = "c", .cron = "*/10 * * * *", .catch_up = MSM_CATCH_UP_LAST};
    CU_ASSERT_EQUAL_FATAL(msm_cron_parse(cron.cron, &cron.cron_expr, NULL, 0), MSM_OK);
    int64_t t0;
    msm_time_parse("2026-03-01T10:00:00Z", &t0);
    /* stopped from 10:00 to 11:00:30: 10:10..10:50 missed, 11:00 on time (30 s late) */
    char want[128];
    snprintf(want, sizeof(want), "%lld,%lld", (long long)((t0 + 50 * 60000) / 1000),
             (long long)((t0 + 60 * 60000) / 1000));
    check_plan(&cron, t0, t0 + 60 * 60000 + 30000, 60000, 100, 0, want, t0 + 60 * 60000, 4);
    cron.catch_up = MSM_CATCH_UP_NONE;
    snprintf(want, sizeof(want), "%lld", (long long)((t0 + 60 * 60000) / 1000));
    check_plan(&cron, t0, t0 + 60 * 60000 + 30000, 60000, 100, 0, want, t0 + 60 * 60000, 5);
    cron.catch_up = MSM_CATCH_UP_ALL; /* at most 2 missed: 10:40, 10:50 */
    snprintf(want, sizeof(want), "%lld,%lld,%lld", (long long)((t0 + 40 * 60000) / 1000),
             (long long)((t0 + 50 * 60000) / 1000), (long long)((t0 + 60 * 60000) / 1000));
    check_plan(&cron, t0, t0 + 60 * 60000 + 30000, 60000, 2, 0, want, t0 + 60 * 60000, 3);
}

/* ---- processes ---- */

static int scheduler_start(msm_test_proc_t *p, const char *name, const char *const *extra)
{
    memset(p, 0, sizeof(*p));
    p->port = msm_test_free_port();
    snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, name);
    msm_test_proc_arg(p, "%s", sch_bin);
    msm_test_proc_arg(p, "--redis.url=%s", srv.url);
    msm_test_proc_arg(p, "--namespace=%s", ns);
    msm_test_proc_arg(p, "--http.port=%d", p->port);
    msm_test_proc_arg(p, "--http.bind=127.0.0.1");
    msm_test_proc_arg(p, "--scheduler.registry_poll_ms=200");
    for (int i = 0; extra && extra[i]; i++)
        msm_test_proc_arg(p, "%s", extra[i]);
    if (msm_test_proc_start(p) != 0 || msm_test_proc_wait_ready(p, NULL, 15000) != 0) {
        fprintf(stderr, "msm-scheduler not ready; see %s\n", p->log);
        return -1;
    }
    return 0;
}

static long api(const char *method, const char *path, const char *body, json_t **out)
{
    lt_http_t h = {.method = method,
                   .path = path,
                   .body = body,
                   .body_len = body ? strlen(body) : 0,
                   .headers = {"Content-Type: application/json", NULL}};
    lt_http(frontend.port, &h);
    if (out)
        *out = h.rbody ? json_loads(h.rbody, 0, NULL) : NULL;
    if (h.status != 200)
        fprintf(stderr, "\n  %s %s: %ld %s", method, path, h.status, h.rbody ? h.rbody : "");
    long status = h.status;
    lt_http_free(&h);
    return status;
}

/* The value of one sample line of a Prometheus text ("name{labels} value"), or -1. */
static double metric(int port, const char *series)
{
    lt_http_t h = {.path = "/metrics"};
    lt_http(port, &h);
    double v = -1;
    const char *at = h.rbody ? strstr(h.rbody, series) : NULL;
    while (at && at[strlen(series)] != ' ')
        at = strstr(at + 1, series);
    if (at)
        v = strtod(at + strlen(series) + 1, NULL);
    lt_http_free(&h);
    return v;
}

static void put_topic(const char *topic)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/topics/%s", topic);
    CU_ASSERT_EQUAL_FATAL(api("PUT", path, "{\"partitions\":1}", NULL), 200);
    /* A group that never reads: the log is not trimmed behind the scheduler's. */
    redisReply *r = msm_test_redis_query(
        &srv, "XGROUP CREATE %s:log:{events.%s}:0 audit 0 MKSTREAM", ns, topic);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    if (r->type != REDIS_REPLY_STATUS)
        fprintf(stderr, "\n  XGROUP CREATE: %s", r->str ? r->str : "?");
    CU_ASSERT_EQUAL(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
}

/* One event of the topic's log, as a schedule published it. */
typedef struct {
    char id[MSM_ID_STR_SIZE];
    char schedule[64];
    int64_t due_ms;
    int64_t publish_ms;
    char key[64];
    char idem[128];
    char payload[128];
} tick_t;

typedef struct {
    tick_t *t;
    size_t n;
} ticks_t;

/* Everything in events.<topic> (partition 0), in log order. */
static void read_log(const char *topic, ticks_t *out)
{
    free(out->t);
    memset(out, 0, sizeof(*out));
    redisReply *r = msm_test_redis_query(&srv, "XRANGE %s:log:{events.%s}:0 - +", ns, topic);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    out->t = calloc(r->elements + 1, sizeof(*out->t));
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *fields = r->element[i]->element[1];
        for (size_t f = 0; f + 1 < fields->elements; f += 2) {
            if (strcmp(fields->element[f]->str, "v") != 0)
                continue;
            Msm__V1__Event *ev =
                msm_event_unpack(fields->element[f + 1]->str, fields->element[f + 1]->len);
            CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
            tick_t *t = &out->t[out->n++];
            snprintf(t->id, sizeof(t->id), "%s", ev->id);
            const char *sname = msm_event_attr(ev, MSM_SCHEDULE_ATTR_NAME);
            const char *due = msm_event_attr(ev, MSM_SCHEDULE_ATTR_DUE);
            snprintf(t->schedule, sizeof(t->schedule), "%s", sname ? sname : "");
            if (!due || msm_time_parse(due, &t->due_ms) != MSM_OK)
                t->due_ms = -1;
            t->publish_ms = ev->publish_time_ms;
            snprintf(t->key, sizeof(t->key), "%s", ev->key);
            snprintf(t->idem, sizeof(t->idem), "%s", ev->idempotency_key);
            snprintf(t->payload, sizeof(t->payload), "%.*s", (int)ev->payload.len,
                     (const char *)ev->payload.data);
            msm_event_free(ev);
        }
    }
    freeReplyObject(r);
}

/* The latest due time of @p schedule's events in the log, or -1. */
static int64_t latest_due(const ticks_t *l, const char *schedule)
{
    int64_t m = -1;
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->t[i].schedule, schedule) == 0 && l->t[i].due_ms > m)
            m = l->t[i].due_ms;
    }
    return m;
}

/* Polls the log until @p schedule has an event due at or after @p due_ms. */
static int wait_due(
    const char *topic, const char *schedule, int64_t due_ms, ticks_t *l, int64_t deadline_unix_ms)
{
    for (;;) {
        read_log(topic, l);
        if (latest_due(l, schedule) >= due_ms)
            return 0;
        if (lt_unix_ms() > deadline_unix_ms)
            return -1;
        usleep(20 * 1000);
    }
}

/* Polls the log until @p schedule has @p n events due in [from, to]. */
static int wait_window(const char *topic,
                       const char *schedule,
                       int64_t from,
                       int64_t to,
                       size_t n,
                       ticks_t *l,
                       int64_t deadline_unix_ms)
{
    for (;;) {
        read_log(topic, l);
        size_t k = 0;
        for (size_t i = 0; i < l->n; i++)
            k += strcmp(l->t[i].schedule, schedule) == 0 && l->t[i].due_ms >= from &&
                 l->t[i].due_ms <= to;
        if (k >= n)
            return 0;
        if (lt_unix_ms() > deadline_unix_ms)
            return -1;
        usleep(20 * 1000);
    }
}

static void wait_until_unix(int64_t t)
{
    int64_t now;
    while ((now = lt_unix_ms()) < t)
        usleep((useconds_t)((t - now) > 100 ? 100000 : (t - now) * 1000));
}

/* The due times of @p schedule's events in (after, until], sorted, as "+2,+4" seconds from
 * @p base. */
static const char *dues_text(const ticks_t *l,
                             const char *schedule,
                             int64_t base,
                             int64_t after,
                             int64_t until,
                             char *buf,
                             size_t n)
{
    int64_t d[256];
    size_t k = 0;
    for (size_t i = 0; i < l->n && k < 256; i++) {
        const tick_t *t = &l->t[i];
        if (strcmp(t->schedule, schedule) == 0 && t->due_ms > after && t->due_ms <= until)
            d[k++] = t->due_ms;
    }
    for (size_t i = 1; i < k; i++) /* insertion sort: a handful */
        for (size_t j = i; j > 0 && d[j - 1] > d[j]; j--) {
            int64_t x = d[j];
            d[j] = d[j - 1];
            d[j - 1] = x;
        }
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < k && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s+%lld", i ? "," : "",
                                (long long)((d[i] - base) / 1000));
    return buf;
}

static int ids_unique(const ticks_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        for (size_t j = i + 1; j < l->n; j++)
            if (strcmp(l->t[i].id, l->t[j].id) == 0)
                return 0;
    return 1;
}

/* Ten ticks, two schedulers, one killed with kill -9 midway. */
static void test_acceptance(void)
{
    const char *name = "every-second";
    put_topic("acc");
    msm_test_proc_t s1, s2;
    CU_ASSERT_EQUAL_FATAL(scheduler_start(&s1, "scheduler-1", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(&s2, "scheduler-2", NULL), 0);
    int64_t put_ms = lt_unix_ms();
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/schedules/every-second",
                              "{\"topic\":\"acc\",\"every_ms\":1000,\"catch_up\":\"all\","
                              "\"event\":{\"data\":{\"job\":\"report\"},\"key\":\"k1\"}}",
                              NULL),
                          200);
    ticks_t l = {0};
    CU_ASSERT_EQUAL_FATAL(wait_due("acc", name, 0, &l, put_ms + 10000), 0);
    int64_t d0 = latest_due(&l, name);
    for (size_t i = 0; i < l.n; i++) /* the first tick found may not be the first published */
        if (l.t[i].due_ms < d0)
            d0 = l.t[i].due_ms;
    CU_ASSERT(d0 > put_ms - 1000); /* nothing due before the PUT is published */
    /* Midway (after the fifth tick, at a phase of the second that differs run to run):
     * kill -9 one scheduler. */
    CU_ASSERT_EQUAL_FATAL(wait_due("acc", name, d0 + 4000, &l, d0 + 15000), 0);
    usleep((useconds_t)(lt_unix_ms() % 9) * 100 * 1000);
    double fired1 =
        metric(s1.port, "msm_scheduler_schedule_ticks_fired_total{schedule=\"every-second\"}");
    double fired2_before =
        metric(s2.port, "msm_scheduler_schedule_ticks_fired_total{schedule=\"every-second\"}");
    int64_t kill_ms = lt_unix_ms();
    CU_ASSERT_EQUAL(msm_test_proc_stop(&s1, SIGKILL, 5000), 128 + SIGKILL);
    /* The ten ticks, the last ones from the survivor (a tick the dead one had claimed waits
     * for its claim to lapse: log.append_timeout_ms + 5 s). */
    CU_ASSERT_EQUAL_FATAL(wait_window("acc", name, d0, d0 + 9000, 10, &l, d0 + 9000 + 30000), 0);
    double fired2 =
        metric(s2.port, "msm_scheduler_schedule_ticks_fired_total{schedule=\"every-second\"}");
    double late_n = metric(s2.port, "msm_scheduler_schedule_tick_lateness_seconds_count");
    double late_sum = metric(s2.port, "msm_scheduler_schedule_tick_lateness_seconds_sum");
    /* DELETE stops it: at most the tick in flight at the answer, then nothing. */
    CU_ASSERT_EQUAL(api("DELETE", "/v1/schedules/every-second", NULL, NULL), 200);
    int64_t deleted_ms = lt_unix_ms();
    wait_until_unix(deleted_ms + 1500); /* a registry poll (200 ms) and a tick */
    read_log("acc", &l);
    size_t after_delete = l.n;
    wait_until_unix(deleted_ms + 4000);
    read_log("acc", &l);
    CU_ASSERT_EQUAL(l.n, after_delete);
    CU_ASSERT(latest_due(&l, name) <= d0 + 10000 + 1000);

    /* Exactly ten events due d0 .. d0+9 s, one per second, no id twice. */
    char got[512], want[512];
    dues_text(&l, name, d0, d0 - 1, d0 + 9000, got, sizeof(got));
    snprintf(want, sizeof(want), "+0,+1,+2,+3,+4,+5,+6,+7,+8,+9");
    CU_ASSERT_STRING_EQUAL(got, want);
    CU_ASSERT_TRUE(ids_unique(&l));
    size_t in_window = 0;
    printf("\n    schedule every_ms 1000, two schedulers, scheduler-1 killed (-9) %lld ms after "
           "d0 (it had published %.0f ticks, scheduler-2 %.0f)\n",
           (long long)(kill_ms - d0), fired1, fired2_before);
    for (size_t i = 0; i < l.n; i++) {
        const tick_t *t = &l.t[i];
        char id[MSM_ID_STR_SIZE], key[MSM_SCHEDULE_TICK_KEY_MAX], due[32];
        msm_schedule_tick_id(name, t->due_ms, id);
        msm_schedule_tick_key(name, t->due_ms, key, sizeof(key));
        CU_ASSERT_STRING_EQUAL(t->id, id);    /* derived from name and due time */
        CU_ASSERT_STRING_EQUAL(t->idem, key); /* published with the tick's key */
        CU_ASSERT_STRING_EQUAL(t->schedule, name);
        CU_ASSERT_STRING_EQUAL(t->key, "k1");
        CU_ASSERT_STRING_EQUAL(t->payload, "{\"job\":\"report\"}");
        CU_ASSERT(t->publish_ms >= t->due_ms);
        msm_time_format(t->due_ms, due, sizeof(due));
        if (t->due_ms >= d0 && t->due_ms <= d0 + 9000)
            in_window++;
        printf("    due %s  id %s  published %+lld ms%s\n", due, t->id,
               (long long)(t->publish_ms - t->due_ms),
               t->due_ms > d0 + 9000 ? "  (after the ten: before the DELETE took effect)" : "");
    }
    printf("    events due d0..d0+9s: %zu, in the log: %zu, ids unique: %s; scheduler-2 fired "
           "%.0f ticks in all, lateness mean %.1f ms over its %.0f\n",
           in_window, l.n, ids_unique(&l) ? "yes" : "NO", fired2,
           late_n > 0 ? late_sum / late_n * 1000 : 0, late_n);
    CU_ASSERT_EQUAL(in_window, 10);
    /* DELETE removed the schedule's state. */
    redisReply *r =
        msm_test_redis_query(&srv, "HEXISTS %s:{registry}:schedules:last_due %s", ns, name);
    CU_ASSERT_EQUAL(r ? r->integer : -1, 0);
    freeReplyObject(r);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&s2, SIGTERM, MSM_TEST_PROC_GRACE_MS), 0);
    free(l.t);
}

/* none / last / all after every scheduler was down for four ticks. */
static void test_catch_up(void)
{
    static const char *const names[] = {"cu-none", "cu-last", "cu-all"};
    static const char *const policies[] = {"none", "last", "all"};
    const char *const flags[] = {"--schedules.misfire_grace_ms=3000", "--schedules.catch_up_max=3",
                                 NULL};
    put_topic("cu");
    msm_test_proc_t s;
    CU_ASSERT_EQUAL_FATAL(scheduler_start(&s, "scheduler-cu", flags), 0);
    for (int i = 0; i < 3; i++) {
        char path[128], body[256];
        snprintf(path, sizeof(path), "/v1/schedules/%s", names[i]);
        snprintf(body, sizeof(body),
                 "{\"topic\":\"cu\",\"every_ms\":2000,\"catch_up\":\"%s\",\"event\":{\"data\":%d}}",
                 policies[i], i);
        CU_ASSERT_EQUAL_FATAL(api("PUT", path, body, NULL), 200);
    }
    /* One tick of each, the same one (they share due times: multiples of 2 s), then stop. */
    ticks_t l = {0};
    int64_t l0 = -1;
    for (int64_t deadline = lt_unix_ms() + 15000; lt_unix_ms() < deadline;) {
        read_log("cu", &l);
        int64_t a = latest_due(&l, names[0]), b = latest_due(&l, names[1]),
                c = latest_due(&l, names[2]);
        if (a > 0 && a == b && b == c && lt_unix_ms() < a + 1000) {
            l0 = a;
            break;
        }
        usleep(20 * 1000);
    }
    CU_ASSERT_FATAL(l0 > 0);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&s, SIGTERM, MSM_TEST_PROC_GRACE_MS), 0);
    read_log("cu", &l);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(latest_due(&l, names[i]), l0);
    /* Down until l0 + 11.3 s: l0+2..l0+8 are more than the grace (3 s) late when it is back,
     * l0+10 is not, if it is up within 1.7 s. */
    wait_until_unix(l0 + 11300);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(&s, "scheduler-cu", flags), 0);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL_FATAL(wait_due("cu", names[i], l0 + 12000, &l, l0 + 30000), 0);
    static const char *const want[] = {"+10,+12", "+8,+10,+12", "+4,+6,+8,+10,+12"};
    static const double skipped[] = {4, 3, 1};
    printf("\n    every_ms 2000, scheduler down from l0 (%lld) to l0+11.3 s, grace 3 s, "
           "catch_up_max 3:\n",
           (long long)l0);
    for (int i = 0; i < 3; i++) {
        char got[256], series[160];
        dues_text(&l, names[i], l0, l0, l0 + 12000, got, sizeof(got));
        snprintf(series, sizeof(series),
                 "msm_scheduler_schedule_ticks_skipped_total{schedule=\"%s\",reason=\"catch_up\"}",
                 names[i]);
        double sk = metric(s.port, series);
        printf("    %-8s published after l0: %-18s skipped %.0f\n", policies[i], got, sk);
        CU_ASSERT_STRING_EQUAL(got, want[i]);
        CU_ASSERT_EQUAL(sk, skipped[i]);
    }
    CU_ASSERT_TRUE(ids_unique(&l));
    for (int i = 0; i < 3; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/schedules/%s", names[i]);
        CU_ASSERT_EQUAL(api("DELETE", path, NULL, NULL), 200);
    }
    CU_ASSERT_EQUAL(msm_test_proc_stop(&s, SIGTERM, MSM_TEST_PROC_GRACE_MS), 0);
    free(l.t);
}

/* The tick of @p schedule due at @p due, or NULL. */
static const tick_t *tick_at(const ticks_t *l, const char *schedule, int64_t due)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->t[i].schedule, schedule) == 0 && l->t[i].due_ms == due)
            return &l->t[i];
    }
    return NULL;
}

/* A tick claimed by a scheduler that died before settling it (the claim is written here, as
 * msm/idempotency.h writes it, lapsing 6.5 s after the due time): the ticks after it are not
 * held up; "all" publishes it once the claim lapses, "none" skips it (by then it is later
 * than the grace, 5 s) and counts it. */
static void test_claim_lapse(void)
{
    static const char *const names[] = {"lapse-all", "lapse-none"};
    put_topic("lapse");
    msm_test_proc_t s;
    CU_ASSERT_EQUAL_FATAL(scheduler_start(&s, "scheduler-lapse", NULL), 0);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/schedules/lapse-all",
                              "{\"topic\":\"lapse\",\"every_ms\":1000,\"catch_up\":\"all\","
                              "\"event\":{\"data\":1}}",
                              NULL),
                          200);
    CU_ASSERT_EQUAL_FATAL(api("PUT", "/v1/schedules/lapse-none",
                              "{\"topic\":\"lapse\",\"every_ms\":1000,\"catch_up\":\"none\","
                              "\"event\":{\"data\":2}}",
                              NULL),
                          200);
    ticks_t l = {0};
    int64_t now = lt_unix_ms();
    CU_ASSERT_EQUAL_FATAL(wait_due("lapse", names[0], 0, &l, now + 10000), 0);
    CU_ASSERT_EQUAL_FATAL(wait_due("lapse", names[1], 0, &l, now + 10000), 0);
    int64_t first = latest_due(&l, names[0]), t = first + 3000;
    for (int i = 0; i < 2; i++) {
        char id[MSM_ID_STR_SIZE], key[MSM_SCHEDULE_TICK_KEY_MAX];
        msm_schedule_tick_id(names[i], t, id);
        msm_schedule_tick_key(names[i], t, key, sizeof(key));
        long long ttl = (long long)(t + 6500 - lt_unix_ms());
        redisReply *r =
            msm_test_redis_query(&srv, "SET %s:idem:{lapse}:%s p:%s PX %lld NX", ns, key, id, ttl);
        CU_ASSERT_TRUE_FATAL(r && r->type == REDIS_REPLY_STATUS);
        freeReplyObject(r);
    }
    CU_ASSERT_EQUAL_FATAL(wait_due("lapse", names[1], t + 9000, &l, t + 25000), 0);
    CU_ASSERT_EQUAL_FATAL(wait_window("lapse", names[0], t, t, 1, &l, t + 25000), 0);
    read_log("lapse", &l);
    const tick_t *late = tick_at(&l, names[0], t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(late);
    CU_ASSERT(late->publish_ms - t >= 6000);
    CU_ASSERT_PTR_NULL(tick_at(&l, names[1], t));
    printf("\n    a claim left by a dead scheduler on the tick due %+lld ms: \"all\" published it "
           "%lld ms late, \"none\" skipped it\n",
           (long long)(t - first), (long long)(late->publish_ms - t));
    for (int i = 0; i < 2; i++) {
        char got[256], want[256], series[160];
        dues_text(&l, names[i], first, first - 1, t + 7000, got, sizeof(got));
        snprintf(want, sizeof(want), "+0,+1,+2,%s+4,+5,+6,+7,+8,+9,+10", i == 0 ? "+3," : "");
        CU_ASSERT_STRING_EQUAL(got, want);
        /* the ticks after the held one came on time */
        for (int64_t d = t + 1000; d <= t + 7000; d += 1000) {
            const tick_t *k = tick_at(&l, names[i], d);
            CU_ASSERT_TRUE(k && k->publish_ms - d < 1000);
        }
        snprintf(series, sizeof(series),
                 "msm_scheduler_schedule_ticks_skipped_total{schedule=\"%s\",reason=\"catch_up\"}",
                 names[i]);
        CU_ASSERT_EQUAL(metric(s.port, series), i == 0 ? 0 : 1);
        printf("    %-10s due after the first: %s\n", names[i], got);
    }
    CU_ASSERT_TRUE(ids_unique(&l));
    for (int i = 0; i < 2; i++) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/schedules/%s", names[i]);
        CU_ASSERT_EQUAL(api("DELETE", path, NULL, NULL), 200);
    }
    CU_ASSERT_EQUAL(msm_test_proc_stop(&s, SIGTERM, MSM_TEST_PROC_GRACE_MS), 0);
    free(l.t);
}

static int suite_init(void)
{
    if (lt_suite_setup(dir, sizeof(dir)) != 0 || msm_test_redis_start(&srv) != 0)
        return -1;
    msm_test_namespace(ns, sizeof(ns));
    return lt_frontend_start(&frontend, fe_bin, dir, srv.url, ns, NULL);
}

static int suite_clean(void)
{
    msm_test_proc_stop(&frontend, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    msm_test_redis_destroy(&srv);
    if (getenv("MSM_TEST_KEEP"))
        fprintf(stderr, "logs kept in %s\n", dir);
    else
        lt_suite_teardown(dir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FRONTEND SCHEDULER\n", argv[0]);
        return 2;
    }
    fe_bin = argv[1];
    sch_bin = argv[2];
    static CU_TestInfo plan_tests[] = {
        {"plan: on time, missed, catch_up", test_plan},
        CU_TEST_INFO_NULL,
    };
    static CU_TestInfo process_tests[] = {
        {"acceptance: every second, two schedulers, kill -9", test_acceptance},
        {"catch_up none, last, all after a stop", test_catch_up},
        {"a claim left by a dead scheduler lapses", test_claim_lapse},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"recurring plan", NULL, NULL, NULL, NULL, plan_tests},
        {"recurring", suite_init, suite_clean, NULL, NULL, process_tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
