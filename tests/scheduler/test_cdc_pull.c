/* SPDX-License-Identifier: MIT */
/* The scheduler's CDC pull (docs/cdc.md) end to end: msm-frontend and msm-scheduler as real
 * processes on a redis-server of the test's own; the CDC source is a range server inside the
 * test (msm/http_server.h on the test's loop) that answers in pages (has_more), and injects
 * 429s and 503s with Retry-After, 500s, malformed answers and a stall past the fetch timeout.
 * What arrives in events.<topic> is read back by a consumer group of the test's own.
 *
 *   test_cdc_pull FRONTEND_BIN SCHEDULER_BIN */
#include "msm_test.h"
#include "msm_test_http.h"
#include "msm_test_proc.h"

#include "msm/cdc_state.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/http_server.h"
#include "msm/registry.h"
#include "msm/time.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *frontend_bin, *scheduler_bin;
static msm_test_redis_t redis_srv;
static char dir[256];
static msm_loop_t *loop;

#define TOPIC  "files"
#define SOURCE "db"
#define MAXP   8

/* ---- the range server ---- */

enum fault { F_NONE, F_429, F_503, F_500, F_MALFORMED, F_STALL, F_STALE };

typedef struct {
    int pi;
    int64_t after;
    int count; /* answers with changes for this (partition, after) */
} page_t;

typedef struct {
    char name[16];
    int64_t *seqs; /* the partition's changes, in order: seqs[0..avail) exist now */
    size_t avail, cap;
    int requests;
    int64_t retry_until; /* unix ms: a request before this disobeys a Retry-After */
    int early;           /* requests that came before it */
} rpart_t;

typedef struct stall_s {
    struct stall_s *next;
    msm_http_req_t *req;
    char *body;
    msm_timer_t timer;
} stall_t;

static struct {
    msm_http_server_t *srv;
    rpart_t parts[MAXP];
    int nparts;
    int requests;
    page_t *pages;
    size_t npages, cappages;
    enum fault (*fault)(int pi, int reqno); /* per partition request number, 1-based */
    uint64_t stall_ms;
    stall_t *stalls;
} RS;

static int64_t now_ms(void)
{
    return msm_time_unix_ms();
}

/* The change of sequence @p s: a delete (no data) every 5th, entities e0..e9. */
static const char *op_of(int64_t s)
{
    return s % 5 == 0 ? "delete" : s % 7 == 0 ? "update" : "create";
}

static void rs_add(int pi, size_t n, int64_t first, int64_t step)
{
    rpart_t *p = &RS.parts[pi];
    if (p->avail + n > p->cap) {
        p->cap = (p->avail + n) * 2;
        p->seqs = realloc(p->seqs, p->cap * sizeof(*p->seqs));
    }
    int64_t s = p->avail ? p->seqs[p->avail - 1] + step : first;
    for (size_t i = 0; i < n; i++, s += step)
        p->seqs[p->avail++] = s;
}

static void rs_reset(int nparts)
{
    for (int i = 0; i < MAXP; i++)
        free(RS.parts[i].seqs);
    free(RS.pages);
    msm_http_server_t *srv = RS.srv;
    memset(&RS, 0, sizeof(RS));
    RS.srv = srv;
    RS.nparts = nparts;
    for (int i = 0; i < nparts; i++)
        snprintf(RS.parts[i].name, sizeof(RS.parts[i].name), "p%d", i);
}

static page_t *page_of(int pi, int64_t after)
{
    for (size_t i = 0; i < RS.npages; i++) {
        if (RS.pages[i].pi == pi && RS.pages[i].after == after)
            return &RS.pages[i];
    }
    if (RS.npages == RS.cappages) {
        RS.cappages = RS.cappages ? 2 * RS.cappages : 256;
        RS.pages = realloc(RS.pages, RS.cappages * sizeof(*RS.pages));
    }
    RS.pages[RS.npages] = (page_t){pi, after, 0};
    return &RS.pages[RS.npages++];
}

static int max_page_count(void)
{
    int m = 0;
    for (size_t i = 0; i < RS.npages; i++) {
        m = RS.pages[i].count > m ? RS.pages[i].count : m;
        if (RS.pages[i].count > 1)
            fprintf(stderr, "  page p%d after %" PRId64 " fetched %d times\n", RS.pages[i].pi,
                    RS.pages[i].after, RS.pages[i].count);
    }
    return m;
}

/* {"changes":[…],"has_more":…} of partition @p pi after @p after, at most @p limit. */
static char *page(int pi, int64_t after, int64_t limit, size_t *nchanges)
{
    rpart_t *p = &RS.parts[pi];
    json_t *changes = json_array();
    size_t i = 0;
    while (i < p->avail && p->seqs[i] <= after)
        i++;
    size_t n = 0;
    for (; i < p->avail && (int64_t)n < limit; i++, n++) {
        int64_t s = p->seqs[i];
        char entity[16];
        snprintf(entity, sizeof(entity), "e%d", (int)(s % 10));
        json_t *c =
            json_pack("{s:I,s:s,s:s}", "sequence", (json_int_t)s, "op", op_of(s), "entity", entity);
        if (s % 5 != 0)
            json_object_set_new(c, "data",
                                json_pack("{s:I,s:s}", "s", (json_int_t)s, "p", p->name));
        json_array_append_new(changes, c);
    }
    *nchanges = n;
    json_t *j = json_pack("{s:o,s:b}", "changes", changes, "has_more", i < p->avail);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

static void on_stall_timer(msm_loop_t *l, void *opaque)
{
    (void)l;
    stall_t *st = opaque;
    /* long after the scheduler gave up on it */
    msm_http_respond(st->req, 200, "application/json", st->body, strlen(st->body));
    st->req = NULL;
}

static void h_changes(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    const char *part = msm_http_req_query(req, "partition");
    const char *after_s = msm_http_req_query(req, "after");
    const char *limit_s = msm_http_req_query(req, "limit");
    int pi = -1;
    for (int i = 0; part && i < RS.nparts; i++) {
        if (strcmp(RS.parts[i].name, part) == 0)
            pi = i;
    }
    if (pi < 0 || !after_s || !limit_s) {
        msm_http_respond_error(req, 400, "BAD", "partition, after and limit", NULL);
        return;
    }
    RS.requests++;
    rpart_t *p = &RS.parts[pi];
    int reqno = ++p->requests;
    if (now_ms() + 10 < p->retry_until) { /* 10 ms: two processes' clocks, in ms */
        p->early++;
        fprintf(stderr, "  p%d request %d after %s came %lld ms before Retry-After allowed\n", pi,
                reqno, after_s, (long long)(p->retry_until - now_ms()));
    }
    enum fault f = RS.fault ? RS.fault(pi, reqno) : F_NONE;
    int64_t after = strtoll(after_s, NULL, 10), limit = strtoll(limit_s, NULL, 10);
    if (f == F_429 || f == F_503) {
        msm_http_add_header(req, "Retry-After", "1");
        p->retry_until = now_ms() + 1000;
        msm_http_respond_error(req, f == F_429 ? 429 : 503, "SLOW_DOWN", "later", NULL);
        return;
    }
    if (f == F_500) {
        msm_http_respond_error(req, 500, "OOPS", "broken", NULL);
        return;
    }
    if (f == F_MALFORMED) {
        const char *bad = "{\"changes\":[{\"sequence\":\"seven\",\"op\":\"create\"}]}";
        msm_http_respond(req, 200, "application/json", bad, strlen(bad));
        return;
    }
    size_t n = 0;
    /* F_STALE: the page starts at or before `after` (what was not asked for) */
    char *body = page(pi, f == F_STALE ? after - 1 : after, limit, &n);
    if (f == F_STALE) {
        msm_http_respond(req, 200, "application/json", body, strlen(body));
        free(body);
        return;
    }
    if (f == F_STALL) {
        stall_t *st = calloc(1, sizeof(*st));
        st->req = req;
        st->body = body;
        msm_timer_init(&st->timer);
        st->next = RS.stalls;
        RS.stalls = st;
        msm_loop_timer_start(loop, &st->timer, RS.stall_ms, on_stall_timer, st);
        return;
    }
    if (n)
        page_of(pi, after)->count++;
    msm_http_respond(req, 200, "application/json", body, strlen(body));
    free(body);
}

static void stalls_free(void)
{
    while (RS.stalls) {
        stall_t *st = RS.stalls;
        RS.stalls = st->next;
        msm_loop_timer_stop(loop, &st->timer);
        free(st->body);
        free(st);
    }
}

/* ---- HTTP to the frontend and the scheduler (blocking: the loop waits meanwhile) ---- */

static long http(const char *method, int port, const char *path, const char *body, char **out)
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    return msm_test_http(method, url, body, out);
}

/* ---- the suite's processes ---- */

typedef struct {
    char ns[64];
    msm_test_proc_t fe;
    msm_test_proc_t sch[2];
    int nsch;
    msm_stream_t *log;
    msm_consumer_t *reader;
} fx_t;

static fx_t F;

static void proc_common(msm_test_proc_t *p, const char *bin, const char *name)
{
    memset(p, 0, sizeof(*p));
    p->port = msm_test_free_port();
    p->death_signal = SIGKILL;
    snprintf(p->log, sizeof(p->log), "%s/%s-%s.log", dir, F.ns, name);
    msm_test_proc_arg(p, "%s", bin);
    msm_test_proc_arg(p, "--redis.url=%s", redis_srv.url);
    msm_test_proc_arg(p, "--namespace=%s", F.ns);
    msm_test_proc_arg(p, "--http.port=%d", p->port);
    msm_test_proc_arg(p, "--http.bind=127.0.0.1");
}

/* A scheduler with the test's CDC settings and @p extra flags (NULL-terminated). */
static int scheduler_start(int i, const char *const *extra)
{
    char name[16];
    snprintf(name, sizeof(name), "scheduler%d", i);
    msm_test_proc_t *p = &F.sch[i];
    proc_common(p, scheduler_bin, name);
    msm_test_proc_arg(p, "--scheduler.registry_poll_ms=200");
    msm_test_proc_arg(p, "--cdc.fetch_timeout_ms=800");
    msm_test_proc_arg(p, "--cdc.backoff_min_ms=50");
    msm_test_proc_arg(p, "--cdc.backoff_max_ms=800");
    msm_test_proc_arg(p, "--cdc.lease_ms=1500");
    msm_test_proc_arg(p, "--log.append_timeout_ms=1500");
    for (size_t k = 0; extra && extra[k]; k++)
        msm_test_proc_arg(p, "%s", extra[k]);
    if (msm_test_proc_start(p) != 0 || msm_test_proc_wait_ready(p, "/healthz", 15000) != 0)
        return -1;
    if (i >= F.nsch)
        F.nsch = i + 1;
    return 0;
}

/* The frontend, topic "files" (one partition: the log keeps the source's order), and the
 * test's reader of events.files (its group exists before the first event). */
static int fixture_up(int nparts)
{
    memset(&F, 0, sizeof(F));
    msm_test_namespace(F.ns, sizeof(F.ns));
    rs_reset(nparts);
    proc_common(&F.fe, frontend_bin, "frontend");
    msm_test_proc_arg(&F.fe, "--log.append_timeout_ms=1500");
    if (msm_test_proc_start(&F.fe) != 0 || msm_test_proc_wait_ready(&F.fe, NULL, 15000) != 0)
        return -1;
    if (http("PUT", F.fe.port, "/v1/topics/" TOPIC, "{\"partitions\":1}", NULL) != 200)
        return -1;
    msm_stream_conf_t sc = {
        .backend = MSM_STREAM_REDIS, .redis_url = redis_srv.url, .name_prefix = F.ns};
    char err[256];
    F.log = msm_stream_new(loop, &sc, err, sizeof(err));
    return F.log ? 0 : -1;
}

static void fixture_down(void)
{
    if (F.reader)
        msm_consumer_free(F.reader);
    F.reader = NULL;
    for (int i = 0; i < F.nsch; i++) {
        if (F.sch[i].pid > 0 && msm_test_proc_stop(&F.sch[i], SIGTERM, 10000) != 0)
            fprintf(stderr, "scheduler %d did not stop cleanly: %s\n", i, F.sch[i].log);
    }
    msm_test_proc_stop(&F.fe, SIGTERM, 10000);
    msm_test_spin(loop, 50);
    msm_stream_free(F.log);
    F.log = NULL;
    stalls_free();
}

/* PUT the source: @p nparts partitions of the range server, @p extra JSON members. */
static long source_put(int nparts, const char *extra)
{
    char body[1024], parts[256] = "";
    size_t off = 0;
    for (int i = 0; i < nparts; i++)
        off += (size_t)snprintf(parts + off, sizeof(parts) - off, "%s\"p%d\"", i ? "," : "", i);
    snprintf(body, sizeof(body),
             "{\"topic\":\"" TOPIC "\",\"range_url\":\"http://127.0.0.1:%u/changes\","
             "\"partitions\":[%s]%s%s}",
             (unsigned)msm_http_server_port(RS.srv), parts, extra ? "," : "", extra ? extra : "");
    return http("PUT", F.fe.port, "/v1/cdc/sources/" SOURCE, body, NULL);
}

/* An integer field of a hash of the test's namespace (0 when absent). */
static long long hash_int(const char *key, const char *field)
{
    char k[256];
    snprintf(k, sizeof(k), "%s:%s", F.ns, key);
    redisReply *r = msm_test_redis_query(&redis_srv, "HGET %s %s", k, field);
    long long v = r && r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : r ? 0 : -1;
    if (r)
        freeReplyObject(r);
    return v;
}

static long long cursor_of(int pi)
{
    char field[16];
    snprintf(field, sizeof(field), "p%d", pi);
    return hash_int("{registry}:cdc:" SOURCE ":cursor", field);
}

/* The member holding partition @p pi's lease, into @p out ("" when none). */
static void owner_of(int pi, char *out, size_t n)
{
    char key[256];
    snprintf(key, sizeof(key), "%s:{registry}:cdc:" SOURCE ":lease:p%d", F.ns, pi);
    redisReply *r = msm_test_redis_query(&redis_srv, "GET %s", key);
    snprintf(out, n, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    if (r)
        freeReplyObject(r);
}

/* ---- what arrived in events.files ---- */

typedef struct {
    int64_t last[MAXP]; /* last sequence per partition, in log order */
    int order_errors;
    int dups;
    int bad; /* envelopes not as the push path makes them */
    size_t total;
    /* seen[pi]: sequences received, sorted insertion into a flat set */
    int64_t *seen[MAXP];
    size_t nseen[MAXP], capseen[MAXP];
} got_t;

static got_t G;

static int seen_has(int pi, int64_t s)
{
    size_t lo = 0, hi = G.nseen[pi];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (G.seen[pi][mid] == s)
            return 1;
        if (G.seen[pi][mid] < s)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static void seen_add(int pi, int64_t s)
{
    if (seen_has(pi, s)) {
        G.dups++;
        return;
    }
    if (G.nseen[pi] == G.capseen[pi]) {
        G.capseen[pi] = G.capseen[pi] ? 2 * G.capseen[pi] : 1024;
        G.seen[pi] = realloc(G.seen[pi], G.capseen[pi] * sizeof(int64_t));
    }
    size_t i = G.nseen[pi];
    while (i > 0 && G.seen[pi][i - 1] > s) {
        G.seen[pi][i] = G.seen[pi][i - 1];
        i--;
    }
    G.seen[pi][i] = s;
    G.nseen[pi]++;
}

static void got_reset(void)
{
    for (int i = 0; i < MAXP; i++)
        free(G.seen[i]);
    memset(&G, 0, sizeof(G));
}

/* The envelope a change gets on either path (msm_cdc_envelope, msm_cdc_payload). */
static int envelope_ok(const Msm__V1__Event *ev, int pi, int64_t s)
{
    char entity[16], data[64];
    snprintf(entity, sizeof(entity), "e%d", (int)(s % 10));
    snprintf(data, sizeof(data), "{\"s\":%" PRId64 ",\"p\":\"p%d\"}", s, pi);
    const char *want = s % 5 == 0 ? "null" : data;
    Msm__V1__Operation op = s % 5 == 0   ? MSM__V1__OPERATION__OPERATION_DELETE
                            : s % 7 == 0 ? MSM__V1__OPERATION__OPERATION_UPDATE
                                         : MSM__V1__OPERATION__OPERATION_CREATE;
    return strcmp(ev->topic, TOPIC) == 0 && strcmp(ev->key, entity) == 0 &&
           strcmp(ev->ordering_key, entity) == 0 && strcmp(ev->cdc_entity, entity) == 0 &&
           strcmp(ev->cdc_source, SOURCE) == 0 && ev->cdc_operation == op &&
           strcmp(ev->content_type, "application/json") == 0 && ev->priority == 5 &&
           ev->payload.len == strlen(want) && memcmp(ev->payload.data, want, strlen(want)) == 0 &&
           strlen(ev->id) == 36;
}

static void on_events(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    (void)opaque;
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Event *ev = msm_event_unpack(msgs[i]->value, msgs[i]->value_len);
        int pi = ev && ev->cdc_partition[0] == 'p' ? atoi(ev->cdc_partition + 1) : -1;
        if (pi < 0 || pi >= MAXP) {
            G.bad++;
        } else {
            int64_t s = ev->cdc_sequence;
            if (!envelope_ok(ev, pi, s))
                G.bad++;
            if (s <= G.last[pi])
                G.order_errors++;
            G.last[pi] = s > G.last[pi] ? s : G.last[pi];
            seen_add(pi, s);
            G.total++;
        }
        msm_event_free(ev);
        msm_consumer_ack(c, msgs[i]);
    }
}

static int reader_start(void)
{
    got_reset();
    char err[256];
    F.reader = msm_stream_consume(F.log, "events." TOPIC, "test-reader", "t", 1000, 10000,
                                  on_events, NULL, err, sizeof(err));
    if (!F.reader)
        return -1;
    /* the group exists before the first event: nothing is trimmed away from under it */
    msm_test_spin(loop, 300);
    return 0;
}

/* Runs the loop until the reader has read everything in the log now. */
static int reader_drain(void)
{
    for (int i = 0; i < 200; i++) {
        int64_t backlog = -1;
        if (msm_test_stream_backlog(loop, F.log, "events." TOPIC, "test-reader", &backlog) ==
                MSM_OK &&
            backlog == 0)
            return 0;
        msm_test_spin(loop, 25);
    }
    return -1;
}

/* Every change of every partition received once. */
static int all_received(void)
{
    for (int pi = 0; pi < RS.nparts; pi++) {
        if (G.nseen[pi] != RS.parts[pi].avail)
            return 0;
    }
    return 1;
}

static int wait_all(uint64_t timeout_ms)
{
    uint64_t end = msm_time_mono_ms() + timeout_ms;
    while (msm_time_mono_ms() < end) {
        msm_test_spin(loop, 50);
        if (all_received())
            return 0;
    }
    return -1;
}

/* The cursor is never ahead of the log: read it, then read the log to its end; every change
 * at or below the cursor must be in. */
static void check_cursor_behind_log(void)
{
    long long cur[MAXP];
    for (int pi = 0; pi < RS.nparts; pi++)
        cur[pi] = cursor_of(pi);
    CU_ASSERT_EQUAL(reader_drain(), 0);
    for (int pi = 0; pi < RS.nparts; pi++) {
        rpart_t *p = &RS.parts[pi];
        for (size_t i = 0; i < p->avail && p->seqs[i] <= cur[pi]; i++) {
            if (!seen_has(pi, p->seqs[i])) {
                CU_FAIL("the cursor is ahead of the log");
                fprintf(stderr, "  p%d: cursor %lld, sequence %" PRId64 " not in the log\n", pi,
                        cur[pi], p->seqs[i]);
                break;
            }
        }
    }
}

static size_t count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    char line[4096];
    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

static double metric(int port, const char *series)
{
    char *text = NULL;
    if (http("GET", port, "/metrics", NULL, &text) != 200 || !text) {
        free(text);
        return -1;
    }
    char line[512];
    snprintf(line, sizeof(line), "\n%s", series); /* a sample, not its # HELP */
    const char *at = strstr(text, line);
    double v = at ? strtod(at + strlen(line), NULL) : -1;
    free(text);
    return v;
}

/* ---- the tests ---- */

typedef struct {
    int done;
    int status;
} flag_t;

static void on_claimed(const msm_cdc_claim_t *res, void *opaque)
{
    flag_t *f = opaque;
    f->status = res->status;
    f->done = 1;
}

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    (void)reason;
    flag_t *f = opaque;
    f->status = err;
    f->done = 1;
}

/* p0: a streak of four 503s, then a 429, a 500 and a malformed answer, each between good
 * pages; p1: a stall past the fetch timeout, a 429, and a page that starts at or before
 * `after`. */
static enum fault faults_mixed(int pi, int reqno)
{
    if (pi == 0) {
        if (reqno >= 2 && reqno <= 5)
            return F_503;
        return reqno == 8 ? F_429 : reqno == 12 ? F_500 : reqno == 15 ? F_MALFORMED : F_NONE;
    }
    return reqno == 3 ? F_STALL : reqno == 6 ? F_429 : reqno == 9 ? F_STALE : F_NONE;
}

static void test_pages_and_faults(void)
{
    CU_ASSERT_EQUAL_FATAL(fixture_up(2), 0);
    rs_add(0, 1500, 3, 2); /* sequences with gaps */
    rs_add(1, 1200, 1, 3);
    RS.fault = faults_mixed;
    RS.stall_ms = 2500;
    CU_ASSERT_EQUAL_FATAL(reader_start(), 0);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(source_put(2, "\"batch_size\":50,\"poll_interval_ms\":100"), 200);
    /* several moments while it runs: the cursor is never ahead of the log */
    for (int k = 0; k < 6 && !all_received(); k++) {
        msm_test_spin(loop, 300);
        check_cursor_behind_log();
    }
    CU_ASSERT_EQUAL(wait_all(60000), 0);
    msm_test_spin(loop, 500); /* anything more would show now */
    check_cursor_behind_log();
    CU_ASSERT_EQUAL(G.dups, 0);
    CU_ASSERT_EQUAL(G.order_errors, 0);
    CU_ASSERT_EQUAL(G.bad, 0);
    CU_ASSERT_EQUAL(G.total, 1500 + 1200);
    CU_ASSERT_EQUAL(cursor_of(0), RS.parts[0].seqs[1499]);
    CU_ASSERT_EQUAL(cursor_of(1), RS.parts[1].seqs[1199]);
    /* Retry-After was honoured: no request came before it said */
    CU_ASSERT_EQUAL(RS.parts[0].early, 0);
    CU_ASSERT_EQUAL(RS.parts[1].early, 0);
    /* each back-off logged once per change of reason, not per retry */
    const char *log = F.sch[0].log;
    CU_ASSERT_EQUAL(count_in_file(log, "partition p0: the source answered 503"), 1);
    CU_ASSERT_EQUAL(count_in_file(log, "partition p0: the source answered 429"), 1);
    CU_ASSERT_EQUAL(count_in_file(log, "partition p0: the source answered 500"), 1);
    CU_ASSERT_EQUAL(count_in_file(log, "partition p0: malformed range answer"), 1);
    CU_ASSERT_EQUAL(count_in_file(log, "partition p1: range request timed out"), 1);
    CU_ASSERT_EQUAL(count_in_file(log, "partition p1: malformed range answer: changes[0]"), 1);
    CU_ASSERT_TRUE(count_in_file(log, "partition p0: pulling again") >= 4);
    int port = F.sch[0].port;
    CU_ASSERT_EQUAL(metric(port, "msm_scheduler_cdc_backoffs_total{source=\"db\",partition=\"p0\","
                                 "reason=\"unavailable\"} "),
                    4);
    CU_ASSERT_EQUAL(metric(port, "msm_scheduler_cdc_backoffs_total{source=\"db\",partition=\"p1\","
                                 "reason=\"timeout\"} "),
                    1);
    CU_ASSERT_EQUAL(metric(port, "msm_scheduler_cdc_changes_pulled_total{source=\"db\","
                                 "partition=\"p0\"} "),
                    1500);
    CU_ASSERT_EQUAL(metric(port, "msm_scheduler_cdc_lag{source=\"db\",partition=\"p1\"} "), 0);
    CU_ASSERT_TRUE(metric(port, "msm_scheduler_cdc_fetch_seconds_count{source=\"db\"} ") >= 60);
    CU_ASSERT_EQUAL(metric(port, "msm_scheduler_cdc_partitions_owned "), 2);
    fixture_down();
}

/* Two schedulers share four partitions: both hold some, a page is never fetched twice; the
 * holder of p0 is killed (-9): the other takes its partitions over within the lease, and
 * every change arrives exactly once. */
static void test_two_schedulers_and_kill9(void)
{
    CU_ASSERT_EQUAL_FATAL(fixture_up(4), 0);
    for (int pi = 0; pi < 4; pi++)
        rs_add(pi, 200, 1, 1);
    CU_ASSERT_EQUAL_FATAL(reader_start(), 0);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(1, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(source_put(4, "\"batch_size\":20,\"poll_interval_ms\":50"), 200);
    /* changes keep coming while the schedulers balance */
    char owners[4][256];
    int both = 0;
    for (int round = 0; round < 60; round++) {
        for (int pi = 0; pi < 4; pi++)
            rs_add(pi, 10, 1, 1);
        msm_test_spin(loop, 100);
        for (int pi = 0; pi < 4; pi++)
            owner_of(pi, owners[pi], sizeof(owners[pi]));
        int n0 = 0;
        for (int pi = 0; pi < 4; pi++)
            n0 += strstr(owners[pi], "-msm-scheduler-") &&
                  atoi(strrchr(owners[pi], '-') + 1) == F.sch[0].port;
        both = n0 == 2;
        if (both && round >= 20)
            break;
    }
    CU_ASSERT_TRUE(both); /* two each: the fair share */
    CU_ASSERT_EQUAL(wait_all(20000), 0);
    CU_ASSERT_EQUAL(max_page_count(), 1); /* no (partition, after) page fetched twice */
    fprintf(stderr, "  %d range requests, %zu pages, each fetched once\n", RS.requests, RS.npages);
    /* kill -9 the holder of p0 while changes keep coming */
    int victim = atoi(strrchr(owners[0], '-') + 1) == F.sch[0].port ? 0 : 1;
    uint64_t killed_at = msm_time_mono_ms();
    CU_ASSERT_EQUAL(msm_test_proc_stop(&F.sch[victim], SIGKILL, 5000), 128 + SIGKILL);
    int taken = 0;
    uint64_t taken_ms = 0;
    for (int round = 0; round < 100 && !taken; round++) {
        for (int pi = 0; pi < 4; pi++)
            rs_add(pi, 5, 1, 1);
        msm_test_spin(loop, 100);
        taken = 1;
        for (int pi = 0; pi < 4; pi++) {
            owner_of(pi, owners[pi], sizeof(owners[pi]));
            taken &= strstr(owners[pi], "-msm-scheduler-") &&
                     atoi(strrchr(owners[pi], '-') + 1) == F.sch[1 - victim].port;
        }
        taken_ms = msm_time_mono_ms() - killed_at;
    }
    CU_ASSERT_TRUE(taken);
    /* lease 1.5 s, rounds every 0.5 s: the fair share grows once the dead one ages out */
    CU_ASSERT_TRUE(taken_ms < 6000);
    fprintf(stderr, "  all partitions taken over %llu ms after the kill -9\n",
            (unsigned long long)taken_ms);
    CU_ASSERT_EQUAL(wait_all(30000), 0);
    msm_test_spin(loop, 500);
    CU_ASSERT_EQUAL(reader_drain(), 0);
    CU_ASSERT_EQUAL(G.dups, 0);
    CU_ASSERT_EQUAL(G.order_errors, 0);
    CU_ASSERT_EQUAL(G.bad, 0);
    size_t want = 0;
    for (int pi = 0; pi < 4; pi++)
        want += RS.parts[pi].avail;
    CU_ASSERT_EQUAL(G.total, want);
    fixture_down();
}

/* A puller died between its append and its settle (the test plays it with the protocol's
 * own calls): the scheduler that takes the partition recovers the batch from the log's mark,
 * and none of its changes is published again. */
static void test_recovers_interrupted_batch(void)
{
    CU_ASSERT_EQUAL_FATAL(fixture_up(1), 0);
    rs_add(0, 300, 1, 1);
    CU_ASSERT_EQUAL_FATAL(reader_start(), 0);
    CU_ASSERT_EQUAL_FATAL(source_put(1, "\"batch_size\":100,\"poll_interval_ms\":100"), 200);
    char err[256];
    msm_redis_conf_t rc = {.url = redis_srv.url, .ns = F.ns};
    msm_redis_t *r = msm_redis_new(loop, &rc, err, sizeof(err));
    msm_cdc_state_t *st = msm_cdc_state_new(r, F.log, 1500);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    /* the dead puller's batch: 1..100, claimed, appended with its envelopes, never settled */
    flag_t cl = {0, -1};
    msm_cdc_claim_args_t a = {SOURCE, "p0", "dead-batch", NULL, 1000, 100};
    CU_ASSERT_EQUAL_FATAL(msm_cdc_claim(st, &a, on_claimed, &cl), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_wait_flag(loop, &cl.done, 10000), 0);
    CU_ASSERT_EQUAL_FATAL(cl.status, MSM_CDC_CLAIMED);
    size_t n = 0;
    char *text = page(0, 0, 100, &n);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    msm_record_t recs[100];
    int64_t seqs[100];
    msm_buf_t bufs[100];
    char ids[100][48];
    for (size_t i = 0; i < n; i++) {
        msm_cdc_change_t ch;
        msm_cdc_change_get(json_array_get(json_object_get(j, "changes"), i), &ch);
        msm_cdc_payload_t pl;
        msm_json_err_t e;
        msm_json_err_init(&e);
        CU_ASSERT_EQUAL(msm_cdc_payload(&ch, NULL, 0, 1 << 20, &pl, &e, &e), MSM_OK);
        msm_json_err_deinit(&e);
        Msm__V1__Event env = MSM__V1__EVENT__INIT;
        snprintf(ids[i], sizeof(ids[i]), "00000000-0000-7000-8000-%012zu", i);
        env.id = ids[i];
        env.topic = TOPIC;
        env.payload.data = pl.data;
        env.payload.len = pl.len;
        env.content_type = (char *)pl.content_type;
        env.priority = 5;
        msm_cdc_envelope(&env, SOURCE, "p0", &ch);
        memset(&bufs[i], 0, sizeof(bufs[i]));
        msm_pb_pack(&env.base, &bufs[i]);
        free(pl.data);
        recs[i] = (msm_record_t){.key = ch.entity,
                                 .key_len = strlen(ch.entity),
                                 .value = bufs[i].data,
                                 .value_len = bufs[i].len};
        seqs[i] = ch.sequence;
    }
    char mark[128];
    msm_cdc_mark_name(mark, sizeof(mark), SOURCE, "p0");
    msm_stream_mark_t m = {mark, "dead-batch", seqs};
    flag_t ap = {0, -1};
    CU_ASSERT_EQUAL_FATAL(
        msm_stream_append_marked(F.log, "events." TOPIC, recs, n, &m, on_appended, &ap), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_wait_flag(loop, &ap.done, 10000), 0);
    CU_ASSERT_EQUAL(ap.status, MSM_OK);
    json_decref(j);
    for (size_t i = 0; i < n; i++)
        msm_buf_deinit(&bufs[i]);
    msm_cdc_state_free(st);
    msm_redis_free(r);
    /* ... the puller is gone. A scheduler comes. */
    CU_ASSERT_EQUAL(cursor_of(0), 0);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(0, NULL), 0);
    CU_ASSERT_EQUAL(wait_all(30000), 0);
    msm_test_spin(loop, 500);
    CU_ASSERT_EQUAL(reader_drain(), 0);
    CU_ASSERT_EQUAL(G.dups, 0);
    CU_ASSERT_EQUAL(G.bad, 0);
    CU_ASSERT_EQUAL(G.total, 300);
    CU_ASSERT_EQUAL(cursor_of(0), 300);
    /* it never fetched the dead batch's changes into the log again */
    CU_ASSERT_TRUE(count_in_file(F.sch[0].log, "batch dead-batch (up to sequence 100) was "
                                               "interrupted; all of it is durable") == 1);
    fixture_down();
}

/* poll_interval_ms 60 s: a change arrives within seconds only because of :notify; a
 * partition that was not notified waits for its poll. */
static void test_notify_fetches_at_once(void)
{
    CU_ASSERT_EQUAL_FATAL(fixture_up(2), 0);
    CU_ASSERT_EQUAL_FATAL(reader_start(), 0);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(source_put(2, "\"poll_interval_ms\":60000"), 200);
    /* the first round of each partition (at the lease) finds nothing */
    for (int i = 0; i < 100 && (RS.parts[0].requests < 1 || RS.parts[1].requests < 1); i++)
        msm_test_spin(loop, 50);
    CU_ASSERT_TRUE(RS.parts[0].requests >= 1 && RS.parts[1].requests >= 1);
    msm_test_spin(loop, 300);
    rs_add(0, 5, 1, 1);
    rs_add(1, 5, 1, 1);
    uint64_t t0 = msm_time_mono_ms();
    CU_ASSERT_EQUAL(http("POST", F.fe.port, "/v1/cdc/sources/" SOURCE ":notify",
                         "{\"partition\":\"p0\",\"sequence\":5}", NULL),
                    200);
    while (G.nseen[0] < 5 && msm_time_mono_ms() - t0 < 5000)
        msm_test_spin(loop, 20);
    uint64_t took = msm_time_mono_ms() - t0;
    CU_ASSERT_EQUAL(G.nseen[0], 5);
    CU_ASSERT_TRUE(took < 3000);
    fprintf(stderr, "  notified change in the log after %llu ms (poll interval 60 s)\n",
            (unsigned long long)took);
    msm_test_spin(loop, 1500);
    CU_ASSERT_EQUAL(G.nseen[1], 0); /* not notified: waits for its poll */
    CU_ASSERT_EQUAL(metric(F.sch[0].port, "msm_scheduler_cdc_lag{source=\"db\",partition=\"p0\"} "),
                    0);
    fixture_down();
}

/* One source, pushed and pulled: a change is published once whichever path brings it first
 * (the push's last accepted sequence is the pull's cursor). */
static void test_push_and_pull(void)
{
    CU_ASSERT_EQUAL_FATAL(fixture_up(1), 0);
    rs_add(0, 100, 1, 1);
    CU_ASSERT_EQUAL_FATAL(reader_start(), 0);
    CU_ASSERT_EQUAL_FATAL(source_put(1, "\"batch_size\":10,\"poll_interval_ms\":100"), 200);
    /* the connector pushes 1..30 before any scheduler runs (the range answer's changes) */
    size_t n30 = 0;
    char *text = page(0, 0, 30, &n30);
    json_t *j = json_loads(text, 0, NULL);
    free(text);
    json_t *req =
        json_pack("{s:s,s:O}", "partition", "p0", "changes", json_object_get(j, "changes"));
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    json_decref(j);
    char *answer = NULL;
    CU_ASSERT_EQUAL(http("POST", F.fe.port, "/v1/cdc/sources/" SOURCE "/changes", body, &answer),
                    200);
    CU_ASSERT_PTR_NOT_NULL(answer && strstr(answer, "\"accepted\":30"));
    free(answer);
    CU_ASSERT_EQUAL(cursor_of(0), 30);
    /* then the pull starts after the push's last sequence */
    CU_ASSERT_EQUAL_FATAL(scheduler_start(0, NULL), 0);
    CU_ASSERT_EQUAL(wait_all(20000), 0);
    /* and a push of old changes afterwards is all duplicates */
    CU_ASSERT_EQUAL(http("POST", F.fe.port, "/v1/cdc/sources/" SOURCE "/changes", body, &answer),
                    200);
    CU_ASSERT_PTR_NOT_NULL(answer && strstr(answer, "\"accepted\":0"));
    free(answer);
    free(body);
    msm_test_spin(loop, 500);
    CU_ASSERT_EQUAL(reader_drain(), 0);
    CU_ASSERT_EQUAL(G.dups, 0);
    CU_ASSERT_EQUAL(G.order_errors, 0);
    CU_ASSERT_EQUAL(G.bad, 0);
    CU_ASSERT_EQUAL(G.total, 100);
    /* the first range request asked after 30 */
    CU_ASSERT_EQUAL(page_of(0, 0)->count, 0);
    CU_ASSERT_EQUAL(page_of(0, 30)->count, 1);
    fixture_down();
}

static int requests_settle(uint64_t quiet_ms, uint64_t timeout_ms)
{
    uint64_t end = msm_time_mono_ms() + timeout_ms;
    int last = RS.requests;
    uint64_t since = msm_time_mono_ms();
    while (msm_time_mono_ms() < end) {
        msm_test_spin(loop, 50);
        if (RS.requests != last) {
            last = RS.requests;
            since = msm_time_mono_ms();
        } else if (msm_time_mono_ms() - since >= quiet_ms) {
            return 0;
        }
    }
    return -1;
}

/* Deleted, changed to push only, partitions changed: pulling stops and starts within a
 * registry poll (200 ms here). */
static void test_source_changes(void)
{
    CU_ASSERT_EQUAL_FATAL(fixture_up(3), 0);
    rs_add(0, 10, 1, 1);
    CU_ASSERT_EQUAL_FATAL(reader_start(), 0);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(source_put(1, "\"poll_interval_ms\":50"), 200);
    for (int i = 0; i < 100 && G.nseen[0] < 10; i++)
        msm_test_spin(loop, 50);
    CU_ASSERT_EQUAL(G.nseen[0], 10);
    msm_test_spin(loop, 300);
    CU_ASSERT_TRUE(RS.parts[0].requests > 2); /* polling every 50 ms */
    /* push only: no range_url */
    CU_ASSERT_EQUAL(http("PUT", F.fe.port, "/v1/cdc/sources/" SOURCE,
                         "{\"topic\":\"" TOPIC "\",\"partitions\":[\"p0\"]}", NULL),
                    200);
    CU_ASSERT_EQUAL(requests_settle(1000, 3000), 0); /* stopped within the registry poll */
    /* pulled again, with other partitions: p1 and p2, not p0 */
    int p0 = RS.parts[0].requests;
    char body[512];
    snprintf(body, sizeof(body),
             "{\"topic\":\"" TOPIC "\",\"range_url\":\"http://127.0.0.1:%u/changes\","
             "\"partitions\":[\"p1\",\"p2\"],\"poll_interval_ms\":50}",
             (unsigned)msm_http_server_port(RS.srv));
    CU_ASSERT_EQUAL(http("PUT", F.fe.port, "/v1/cdc/sources/" SOURCE, body, NULL), 200);
    for (int i = 0; i < 60 && (RS.parts[1].requests < 3 || RS.parts[2].requests < 3); i++)
        msm_test_spin(loop, 50);
    CU_ASSERT_TRUE(RS.parts[1].requests >= 3 && RS.parts[2].requests >= 3);
    CU_ASSERT_EQUAL(RS.parts[0].requests, p0);
    /* deleted: nothing more */
    CU_ASSERT_EQUAL(http("DELETE", F.fe.port, "/v1/cdc/sources/" SOURCE, NULL, NULL), 200);
    CU_ASSERT_EQUAL(requests_settle(1000, 3000), 0);
    CU_ASSERT_EQUAL(metric(F.sch[0].port, "msm_scheduler_cdc_partitions_owned "), 0);
    fixture_down();
}

/* Changes per second from one partition with batch_size 500 (a figure, not asserted). */
static void test_throughput(void)
{
    enum { N = 50000 };
    CU_ASSERT_EQUAL_FATAL(fixture_up(1), 0);
    rs_add(0, N, 1, 1);
    CU_ASSERT_EQUAL_FATAL(reader_start(), 0);
    CU_ASSERT_EQUAL_FATAL(scheduler_start(0, NULL), 0);
    uint64_t t0 = msm_time_mono_ms();
    CU_ASSERT_EQUAL_FATAL(source_put(1, "\"batch_size\":500"), 200);
    uint64_t end = t0 + 120000;
    while (cursor_of(0) < N && msm_time_mono_ms() < end)
        msm_test_spin(loop, 20);
    uint64_t took = msm_time_mono_ms() - t0;
    CU_ASSERT_EQUAL(cursor_of(0), N);
    fprintf(stderr,
            "  pulled %d changes of one partition (batch_size 500) in %llu ms: "
            "%.0f changes/s (the source registered at t0; includes the lease and first poll)\n",
            N, (unsigned long long)took, N * 1000.0 / (double)(took ? took : 1));
    CU_ASSERT_EQUAL(wait_all(30000), 0);
    CU_ASSERT_EQUAL(G.dups, 0);
    fixture_down();
}

static void test_help_lists_settings(void)
{
    msm_test_proc_t p;
    memset(&p, 0, sizeof(p));
    snprintf(p.log, sizeof(p.log), "%s/help.log", dir);
    msm_test_proc_arg(&p, "%s", scheduler_bin);
    msm_test_proc_arg(&p, "--help");
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&p), 0);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&p, 0, 10000), 0);
    const char *names[] = {"cdc.fetch_timeout_ms",    "cdc.lease_ms",         "cdc.backoff_min_ms",
                           "cdc.backoff_max_ms",      "cdc.max_answer_bytes", "cdc.max_event_bytes",
                           "MSM_CDC_FETCH_TIMEOUT_MS"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        CU_ASSERT_TRUE(count_in_file(p.log, names[i]) >= 1);
}

static int suite_init(void)
{
    snprintf(dir, sizeof(dir), "/tmp/msm-cdc-XXXXXX");
    if (!mkdtemp(dir) || msm_test_redis_start(&redis_srv) != 0 || !(loop = msm_loop_new()))
        return -1;
    msm_http_server_conf_t hc;
    msm_http_server_conf_init(&hc);
    hc.bind_address = "127.0.0.1";
    hc.port = 0;
    char err[256];
    RS.srv = msm_http_server_new(loop, &hc, err, sizeof(err));
    if (!RS.srv || msm_http_server_route(RS.srv, "GET", "/changes", h_changes, NULL) != MSM_OK)
        return -1;
    return 0;
}

static int suite_clean(void)
{
    msm_http_server_free(RS.srv);
    rs_reset(0);
    got_reset();
    msm_loop_free(loop);
    msm_test_redis_destroy(&redis_srv);
    if (CU_get_number_of_failures() == 0) { /* the daemons' logs stay when something failed */
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    } else {
        fprintf(stderr, "the daemons' logs: %s\n", dir);
    }
    return 0;
}

static CU_TestInfo tests[] = {
    {"pages, 429/503 + Retry-After, 500, malformed, a stall: each change once, in order; the "
     "cursor never ahead of the log; backoffs logged once",
     test_pages_and_faults},
    {"two schedulers share the partitions without double fetches; kill -9 of a holder: taken "
     "over, nothing twice",
     test_two_schedulers_and_kill9},
    {"a batch interrupted between append and settle is recovered, nothing twice",
     test_recovers_interrupted_batch},
    {":notify fetches at once (poll interval 60 s)", test_notify_fetches_at_once},
    {"push and pull on one source: each change once", test_push_and_pull},
    {"a source deleted or changed stops and starts pulling", test_source_changes},
    {"throughput of one partition (figure)", test_throughput},
    {"--help lists the cdc settings", test_help_lists_settings},
    CU_TEST_INFO_NULL,
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FRONTEND_BIN SCHEDULER_BIN\n", argv[0]);
        return 2;
    }
    frontend_bin = argv[1];
    scheduler_bin = argv[2];
    CU_SuiteInfo suites[] = {
        {"cdc_pull", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
