/* SPDX-License-Identifier: MIT */
/* PostgreSQL to a lambda, end to end: a real PostgreSQL cluster (wal_level=logical),
 * tools/msm-pg-cdc serving its replication slot as a CDC range source, a real redis-server,
 * the four daemons and a lambda (tests/lambda/echo_lambda.c, which records what its handler
 * sees) as processes. The scheduler pulls the source (docs/cdc.md). Inserts, updates and
 * deletes in transactions — two of them interleaved so that the one begun first commits
 * last — must reach the lambda in commit order per row, deletes as tombstones, across a
 * kill -9 of the adapter and of the scheduler, with every change published exactly once
 * (the topic's log holds one record per change). Prints the changes/s pulled and the
 * commit → handler latency.
 *
 *   test_cdc_postgres FRONTEND SCHEDULER FLOWCONTROL ROUTER ECHO_LAMBDA MSM_PG_CDC */
#include "lambda_test_util.h"
#include "msm_test.h"
#include "msm_test_daemons.h"
#include "msm_test_pg.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOPIC       "pg-accounts"
#define SOURCE      "pg-shop"
#define SUB         "sub-a" /* the echo lambda's recording handler */
#define MAX_ROWS    4000
#define MAX_CHANGES 8000
#define MAX_VERSION 3
#define BULK_ROWS   2000
#define STEADY_TX   100
#define WAIT_MS     60000

static const char *bins[MSM_TEST_NDAEMONS];
static const char *lambda_bin, *adapter_bin;
static char dir[256], ns[64], out_file[300], frontend_url[64];
static msm_test_redis_t redis_srv;
static msm_test_pg_t pg;
static msm_test_proc_t daemons[MSM_TEST_NDAEMONS], lambda, adapter;
static int adapter_port;
static PGconn *c1, *c2;

/* ---- what the database did, in commit order ---- */

typedef struct {
    int id;
    int v;                /* the row's version after the change; 0: deleted */
    long long commit_ms;  /* unix ms when its COMMIT returned */
    long long handled_ms; /* the lambda's received_ms of its first push, 0 until then */
    char event_id[64];    /* the event it became */
} change_t;

static change_t changes[MAX_CHANGES];
static int nchanges;

/* Records that rows @p from..@p to changed to version @p v (0: deleted) in a transaction
 * that committed at @p commit_ms. A row's versions never repeat, so (row, version) names a
 * change. */
static void committed(int from, int to, int v, long long commit_ms)
{
    for (int id = from; id <= to && nchanges < MAX_CHANGES; id++)
        changes[nchanges++] = (change_t){.id = id, .v = v, .commit_ms = commit_ms};
}

static int sql(PGconn *c, const char *stmt)
{
    int rc = msm_test_pg_exec(c, "%s", stmt);
    CU_ASSERT_EQUAL(rc, 0);
    return rc;
}

/* One transaction on c1 setting rows from..to to version v (0: delete, insert when new). */
static void tx(const char *op, int from, int to, int v)
{
    char stmt[256];
    if (strcmp(op, "insert") == 0)
        snprintf(stmt, sizeof(stmt),
                 "INSERT INTO accounts SELECT g, %d, 'n' || g FROM generate_series(%d, %d) g", v,
                 from, to);
    else if (strcmp(op, "update") == 0)
        snprintf(stmt, sizeof(stmt), "UPDATE accounts SET v = %d WHERE id BETWEEN %d AND %d", v,
                 from, to);
    else
        snprintf(stmt, sizeof(stmt), "DELETE FROM accounts WHERE id BETWEEN %d AND %d", from, to);
    if (sql(c1, stmt) == 0)
        committed(from, to, v, lt_unix_ms());
}

/* ---- what the lambda saw ---- */

/* The entity msm-pg-cdc names a row of public.accounts by (tools/msm-pg-cdc/README.md). */
static int row_of(const char *entity)
{
    static const char prefix[] = "public.accounts/";
    if (!entity || strncmp(entity, prefix, sizeof(prefix) - 1) != 0)
        return -1;
    return atoi(entity + sizeof(prefix) - 1);
}

typedef struct {
    int handled;       /* changes whose first push arrived */
    int out_of_order;  /* a row's version arrived after a later one of the same row */
    int unexpected;    /* pushes matching no change */
    int republished;   /* a change pushed under a second event id */
    int wrong_source;  /* ce-source other than /msm/cdc/<source> */
    char example[300]; /* the first problem seen */
} seen_t;

static void problem(seen_t *s, int *count, const char *line)
{
    if (!s->example[0])
        snprintf(s->example, sizeof(s->example), "%.299s", line);
    (*count)++;
}

/* Reads the lambda's record and matches every push to its change: the first pushes of a
 * row's changes must come in commit order, and a change has one event id (a retry keeps it;
 * a second id would be a second publish). */
static seen_t read_seen(void)
{
    static int change_of[MAX_ROWS][MAX_VERSION + 1]; /* index + 1; 0: none */
    static int rank[MAX_CHANGES];                    /* among its row's changes */
    int next_rank[MAX_ROWS] = {0};                   /* of the row's next first push */
    seen_t s = {0};
    memset(change_of, 0, sizeof(change_of));
    for (int i = 0; i < nchanges; i++) {
        change_t *c = &changes[i];
        c->handled_ms = 0;
        c->event_id[0] = '\0';
        change_of[c->id][c->v] = i + 1;
        rank[i] = next_rank[c->id]++;
    }
    memset(next_rank, 0, sizeof(next_rank));
    FILE *f = fopen(out_file, "r");
    char line[8192];
    while (f && fgets(line, sizeof(line), f)) {
        json_t *j = json_loads(line, 0, NULL);
        int id = row_of(json_string_value(json_object_get(j, "key")));
        const char *payload = json_string_value(json_object_get(j, "payload"));
        const char *event_id = json_string_value(json_object_get(j, "id"));
        const char *source = json_string_value(json_object_get(j, "source"));
        json_t *data = payload ? json_loads(payload, JSON_DECODE_ANY, NULL) : NULL;
        json_int_t v = json_is_null(data) ? 0 : json_integer_value(json_object_get(data, "v"));
        if (!source || strcmp(source, "/msm/cdc/" SOURCE) != 0)
            problem(&s, &s.wrong_source, line);
        int i = id >= 0 && id < MAX_ROWS && v >= 0 && v <= MAX_VERSION && data
                    ? change_of[id][v] - 1
                    : -1;
        if (i < 0 || !event_id) {
            problem(&s, &s.unexpected, line);
        } else if (changes[i].handled_ms) {
            if (strcmp(changes[i].event_id, event_id) != 0)
                problem(&s, &s.republished, line);
        } else {
            if (rank[i] != next_rank[id])
                problem(&s, &s.out_of_order, line);
            next_rank[id] = rank[i] + 1;
            changes[i].handled_ms = json_integer_value(json_object_get(j, "received_ms"));
            snprintf(changes[i].event_id, sizeof(changes[i].event_id), "%s", event_id);
            s.handled++;
        }
        json_decref(data);
        json_decref(j);
    }
    if (f)
        fclose(f);
    return s;
}

/* Waits until every change so far was pushed. @returns the last read. */
static seen_t wait_all(void)
{
    seen_t s = {0};
    for (long long until = lt_unix_ms() + WAIT_MS; lt_unix_ms() < until; usleep(50 * 1000)) {
        s = read_seen();
        if (s.handled >= nchanges)
            break;
    }
    return s;
}

static void check_seen(const seen_t *s, const char *when)
{
    if (s->handled != nchanges || s->out_of_order || s->unexpected || s->republished ||
        s->wrong_source)
        fprintf(stderr,
                "%s: %d of %d changes pushed, %d out of order, %d unexpected, %d republished, "
                "%d with another source; first: %s\n",
                when, s->handled, nchanges, s->out_of_order, s->unexpected, s->republished,
                s->wrong_source, s->example);
    CU_ASSERT_EQUAL(s->handled, nchanges);
    CU_ASSERT_EQUAL(s->out_of_order, 0);
    CU_ASSERT_EQUAL(s->unexpected, 0);
    CU_ASSERT_EQUAL(s->republished, 0);
    CU_ASSERT_EQUAL(s->wrong_source, 0);
}

/* Records ever appended to the topic's log (one partition; XINFO's entries-added, as the
 * stream is trimmed behind its consumers): every change published once, none twice. */
static long long log_records(void)
{
    redisReply *r =
        msm_test_redis_query(&redis_srv, "XINFO STREAM %s:log:{events.%s}:0", ns, TOPIC);
    long long n = -1;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[i]->str, "entries-added") == 0)
            n = r->element[i + 1]->integer;
    }
    if (r)
        freeReplyObject(r);
    return n;
}

/* ---- processes ---- */

static int start_adapter(void)
{
    memset(&adapter, 0, sizeof(adapter));
    snprintf(adapter.log, sizeof(adapter.log), "%s/msm-pg-cdc.log", dir);
    adapter.port = adapter_port;
    adapter.death_signal = SIGTERM;
    msm_test_proc_arg(&adapter, "%s", adapter_bin);
    msm_test_proc_arg(&adapter, "--http.bind=127.0.0.1");
    msm_test_proc_arg(&adapter, "--http.port=%d", adapter_port);
    msm_test_proc_arg(&adapter, "--pg.conninfo=%s", pg.conninfo);
    msm_test_proc_arg(&adapter, "--pg.slot=msm_e2e");
    msm_test_proc_arg(&adapter, "--pg.tables=public.accounts");
    msm_test_proc_arg(&adapter, "--pg.status_interval_ms=500");
    if (msm_test_proc_start(&adapter) != 0)
        return -1;
    return msm_test_proc_wait_ready(&adapter, "/readyz", WAIT_MS);
}

static long api(const char *method, const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", frontend_url, path);
    return msm_test_http_json(method, url, body, NULL);
}

static int suite_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *settings[] = {"wal_level=logical", NULL};
    if (lt_tmpdir(dir, sizeof(dir)) != 0 || msm_test_pg_start(&pg, settings) != 0 ||
        !msm_test_pg_has_wal2json(&pg) || msm_test_redis_start(&redis_srv) != 0)
        return -1;
    snprintf(out_file, sizeof(out_file), "%s/pushes.jsonl", dir);
    c1 = msm_test_pg_connect(&pg);
    c2 = msm_test_pg_connect(&pg);
    if (!c1 || !c2 ||
        msm_test_pg_exec(c1, "CREATE TABLE accounts (id int PRIMARY KEY, v int NOT NULL, "
                             "name text)") != 0)
        return -1;
    adapter_port = msm_test_free_port();
    if (start_adapter() != 0) {
        fprintf(stderr, "msm-pg-cdc not ready; see %s\n", adapter.log);
        return -1;
    }
    msm_test_namespace(ns, sizeof(ns));
    for (int i = 0; i < MSM_TEST_NDAEMONS; i++)
        msm_test_daemon_setup(&daemons[i], i, bins[i], dir, redis_srv.url, ns);
    /* A short registry poll: the source is pulled soon after its PUT. */
    msm_test_proc_arg(&daemons[MSM_TEST_SCHEDULER], "--scheduler.registry_poll_ms=100");
    if (msm_test_daemons_start(daemons, MSM_TEST_NDAEMONS, 15000) != 0)
        return -1;
    snprintf(frontend_url, sizeof(frontend_url), "http://127.0.0.1:%d",
             daemons[MSM_TEST_FRONTEND].port);
    const char *args[] = {"--out", out_file, NULL};
    return lt_child_start(&lambda, dir, lambda_bin, args);
}

static int suite_clean(void)
{
    int failed = CU_get_number_of_failures() > 0;
    msm_test_proc_stop(&lambda, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    for (int i = 0; i < MSM_TEST_NDAEMONS; i++) {
        if (daemons[i].pid > 0 &&
            msm_test_proc_stop(&daemons[i], SIGTERM, MSM_TEST_PROC_GRACE_MS) != 0)
            fprintf(stderr, "%s did not exit cleanly (log: %s)\n", msm_test_daemon_names[i],
                    daemons[i].log);
    }
    msm_test_proc_stop(&adapter, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    PQfinish(c1);
    PQfinish(c2);
    msm_test_pg_destroy(&pg);
    msm_test_redis_destroy(&redis_srv);
    if (failed)
        fprintf(stderr, "logs kept in %s\n", dir);
    else
        lt_rmdir(dir);
    curl_global_cleanup();
    return 0;
}

/* ---- the tests ---- */

static void test_route(void)
{
    char body[512];
    CU_ASSERT_EQUAL(api("PUT", "/v1/topics/" TOPIC, "{\"partitions\":1}"), 200);
    snprintf(body, sizeof(body),
             "{\"topic\":\"" TOPIC "\",\"ordered\":true,\"endpoints\":[{\"url\":"
             "\"http://127.0.0.1:%d/\"}]}",
             lambda.port);
    CU_ASSERT_EQUAL(api("PUT", "/v1/subscriptions/" SUB, body), 200);
    snprintf(body, sizeof(body),
             "{\"topic\":\"" TOPIC "\",\"range_url\":\"http://127.0.0.1:%d/changes\","
             "\"partitions\":[\"p0\"],\"poll_interval_ms\":50,\"batch_size\":500}",
             adapter_port);
    CU_ASSERT_EQUAL(api("PUT", "/v1/cdc/sources/" SOURCE, body), 200);
}

/* Inserts, updates and deletes, two transactions interleaved: commit order per row. */
static void test_commit_order(void)
{
    tx("insert", 1, 20, 1);
    tx("update", 1, 10, 2);
    /* c2 begins first and commits last: its change of row 12 comes after c1's. */
    sql(c2, "BEGIN");
    sql(c2, "UPDATE accounts SET v = 2 WHERE id = 11");
    sql(c1, "BEGIN");
    sql(c1, "UPDATE accounts SET v = 2 WHERE id = 12");
    sql(c1, "COMMIT");
    long long t = lt_unix_ms();
    committed(12, 12, 2, t);
    sql(c2, "UPDATE accounts SET v = 3 WHERE id = 12");
    sql(c2, "COMMIT");
    t = lt_unix_ms();
    committed(11, 11, 2, t);
    committed(12, 12, 3, t);
    tx("delete", 15, 17, 0);
    seen_t s = wait_all();
    check_seen(&s, "commit order");
    CU_ASSERT_EQUAL(log_records(), nchanges);
}

/* kill -9 of the adapter, then of the scheduler, with changes committed meanwhile. */
static void test_restarts(void)
{
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_stop(&adapter, SIGKILL, 5000), 128 + SIGKILL);
    tx("update", 1, 5, 3);
    tx("delete", 18, 18, 0);
    CU_ASSERT_EQUAL_FATAL(start_adapter(), 0);
    tx("insert", 21, 25, 1);
    seen_t s = wait_all();
    check_seen(&s, "after the adapter's restart");

    msm_test_proc_t *sch = &daemons[MSM_TEST_SCHEDULER];
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_stop(sch, SIGKILL, 5000), 128 + SIGKILL);
    tx("update", 21, 25, 2);
    tx("insert", 26, 30, 1);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(sch), 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_wait_ready(sch, NULL, 15000), 0);
    tx("update", 26, 30, 2);
    s = wait_all();
    check_seen(&s, "after the scheduler's restart");
    CU_ASSERT_EQUAL(log_records(), nchanges);
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Commit -> handler latency of changes [from, to). */
static void print_latency(const char *what, int from, int to)
{
    static long long lat[MAX_CHANGES];
    int n = 0;
    for (int i = from; i < to; i++) {
        if (changes[i].handled_ms)
            lat[n++] = changes[i].handled_ms - changes[i].commit_ms;
    }
    CU_ASSERT_FATAL(n > 0);
    qsort(lat, (size_t)n, sizeof(lat[0]), cmp_ll);
    printf("  commit -> handler, %s %d changes: p50 %lld ms, p99 %lld ms, max %lld ms\n", what, n,
           lat[n / 2], lat[(n * 99) / 100], lat[n - 1]);
}

/* One transaction of BULK_ROWS inserts: the pull's pace; then the latency of every change. */
static void test_figures(void)
{
    int before = nchanges;
    tx("insert", 1000, 1000 + BULK_ROWS - 1, 1);
    seen_t s = wait_all();
    check_seen(&s, "bulk insert");
    CU_ASSERT_EQUAL(log_records(), nchanges);
    long long last = 0;
    for (int i = before; i < nchanges; i++) {
        if (changes[i].handled_ms > last)
            last = changes[i].handled_ms;
    }
    long long took = last - changes[before].commit_ms;
    printf("\n  PostgreSQL -> lambda: %d changes in one transaction, the last handled %lld ms "
           "after its commit (%.0f changes/s)\n",
           BULK_ROWS, took, took > 0 ? BULK_ROWS * 1000.0 / (double)took : 0.0);
    print_latency("the bulk transaction's", before, nchanges);
    /* Steady state: one change per transaction, one transaction every 20 ms. */
    before = nchanges;
    for (int i = 0; i < STEADY_TX; i++) {
        tx("update", 1000 + i, 1000 + i, 2);
        usleep(20 * 1000);
    }
    s = wait_all();
    check_seen(&s, "steady updates");
    print_latency("one change per transaction every 20 ms,", before, nchanges);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr,
                "usage: %s FRONTEND SCHEDULER FLOWCONTROL ROUTER ECHO_LAMBDA "
                "MSM_PG_CDC\n",
                argv[0]);
        return 2;
    }
    for (int i = 0; i < MSM_TEST_NDAEMONS; i++)
        bins[i] = argv[1 + i];
    lambda_bin = argv[5];
    adapter_bin = argv[6];
    signal(SIGPIPE, SIG_IGN);
    CU_TestInfo tests[] = {
        {"topic, ordered subscription, source pulled from msm-pg-cdc", test_route},
        {"inserts, updates, deletes: commit order per row, tombstones", test_commit_order},
        {"kill -9 of the adapter and of the scheduler: nothing lost, nothing twice", test_restarts},
        {"figures: changes/s pulled, commit -> handler latency", test_figures},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"cdc_postgres", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
