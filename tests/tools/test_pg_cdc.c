/* SPDX-License-Identifier: MIT */
/* msm-pg-cdc as a process against a real PostgreSQL cluster, queried like msm's scheduler
 * queries a CDC source: GET /changes?partition=p0&after=<cursor>&limit=N, the cursor moving
 * to the last sequence of each answer. Covers commit order across interleaved transactions,
 * tombstones, key moves, paging through a transaction larger than the adapter's buffer, a
 * kill -9 in the middle (same sequences again, nothing acknowledged again), the slot's
 * confirmed_flush_lsn moving only with acknowledgements, bad requests, and one throughput
 * measurement (printed, not asserted). argv[1]: the msm-pg-cdc binary. */
#include "msm_test.h"
#include "msm_test_http.h"
#include "msm_test_pg.h"
#include "msm_test_daemons.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SLOT       "msm_test"
#define WAIT_MS    30000
#define SMALL_PAGE 7

static const char *adapter_bin;
static msm_test_pg_t pg;
static msm_test_proc_t adapter;
static int adapter_port;
static PGconn *c1, *c2;
static int64_t cursor; /* what "msm" has durably: every answer so far, acknowledged */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- HTTP ---- */

/* GET path on the adapter: the status (0: no answer), the body as text and as JSON. */
static long get(const char *path, char **text, json_t **json)
{
    char url[512], *data = NULL;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", adapter_port, path);
    long status = msm_test_http("GET", url, NULL, &data);
    if (json)
        *json = data ? json_loads(data, 0, NULL) : NULL;
    if (text)
        *text = data;
    else
        free(data);
    return status;
}

/* One range request; the answer's JSON (NULL unless 200). */
static json_t *fetch(int64_t after, int limit)
{
    char path[128];
    json_t *j = NULL;
    snprintf(path, sizeof(path), "/changes?partition=p0&after=%" PRId64 "&limit=%d", after, limit);
    long st = get(path, NULL, &j);
    if (st != 200) {
        fprintf(stderr, "GET %s: %ld\n", path, st);
        json_decref(j);
        return NULL;
    }
    return j;
}

/*
 * Pages like the scheduler: from @p *from, @p limit at a time, each request acknowledging the
 * previous answer, until @p want changes came (or WAIT_MS passed). Checks every answer's
 * shape and that sequences rise strictly. @returns the changes (an array), *from moved.
 */
static json_t *collect(int64_t *from, int limit, size_t want)
{
    json_t *all = json_array();
    uint64_t deadline = now_ms() + WAIT_MS;
    while (json_array_size(all) < want && now_ms() < deadline) {
        json_t *page = fetch(*from, limit);
        CU_ASSERT_PTR_NOT_NULL_FATAL(page);
        json_t *changes = json_object_get(page, "changes");
        CU_ASSERT_FATAL(json_is_array(changes));
        CU_ASSERT(json_is_boolean(json_object_get(page, "has_more")));
        CU_ASSERT(json_array_size(changes) <= (size_t)limit);
        size_t i;
        json_t *c;
        json_array_foreach(changes, i, c)
        {
            int64_t seq = json_integer_value(json_object_get(c, "sequence"));
            CU_ASSERT(seq > *from);
            *from = seq;
            json_array_append(all, c);
        }
        json_decref(page);
    }
    CU_ASSERT_EQUAL(json_array_size(all), want);
    return all;
}

static const char *op_of(json_t *c)
{
    return json_string_value(json_object_get(c, "op"));
}

static const char *entity_of(json_t *c)
{
    return json_string_value(json_object_get(c, "entity"));
}

static void expect_change(json_t *all, size_t i, const char *op, const char *entity)
{
    json_t *c = json_array_get(all, i);
    if (!c || strcmp(op_of(c), op) != 0 || strcmp(entity_of(c), entity) != 0)
        fprintf(stderr, "\nchange %zu: want %s %s, got %s\n", i, op, entity,
                c ? json_dumps(c, JSON_COMPACT) : "nothing");
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_STRING_EQUAL(op_of(c), op);
    CU_ASSERT_STRING_EQUAL(entity_of(c), entity);
}

/* ---- the adapter process ---- */

static int start_adapter(msm_test_proc_t *p, int buffer_changes)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->log, sizeof(p->log), "%s/adapter.log", pg.dir);
    p->port = adapter_port;
    p->death_signal = SIGKILL;
    msm_test_proc_arg(p, "%s", adapter_bin);
    msm_test_proc_arg(p, "--http.bind=127.0.0.1");
    msm_test_proc_arg(p, "--http.port=%d", adapter_port);
    msm_test_proc_arg(p, "--pg.conninfo=%s", pg.conninfo);
    msm_test_proc_arg(p, "--pg.slot=" SLOT);
    msm_test_proc_arg(p, "--pg.tables=public.users,public.items");
    msm_test_proc_arg(p, "--pg.status_interval_ms=300");
    msm_test_proc_arg(p, "--pg.monitor_interval_ms=200");
    msm_test_proc_arg(p, "--range.wait_ms=200");
    msm_test_proc_arg(p, "--buffer.max_changes=%d", buffer_changes);
    if (msm_test_proc_start(p) != 0)
        return -1;
    return msm_test_proc_wait_ready(p, "/readyz", WAIT_MS);
}

static void print_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    if (!f)
        return;
    fprintf(stderr, "---- %s\n", path);
    while (fgets(line, sizeof(line), f))
        fputs(line, stderr);
    fclose(f);
}

static int suite_init(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    const char *settings[] = {"wal_level=logical", NULL};
    if (msm_test_pg_start(&pg, settings) != 0 || !msm_test_pg_has_wal2json(&pg))
        return -1;
    c1 = msm_test_pg_connect(&pg);
    c2 = msm_test_pg_connect(&pg);
    adapter_port = msm_test_free_port();
    if (!c1 || !c2 || adapter_port <= 0 ||
        msm_test_pg_exec(c1, "CREATE TABLE users (id int PRIMARY KEY, name text, "
                             "score numeric(10,2), ratio float8);"
                             "CREATE TABLE items (a int, b text, qty int, PRIMARY KEY (a, b));"
                             "CREATE TABLE skipped (id int PRIMARY KEY)") != 0)
        return -1;
    if (start_adapter(&adapter, 40) != 0) {
        print_file(adapter.log);
        return -1;
    }
    return 0;
}

static int suite_clean(void)
{
    /* A graceful stop exits 0 (under the sanitizers: no leak, no error either). */
    int status = msm_test_proc_stop(&adapter, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    if (status != 0)
        fprintf(stderr, "msm-pg-cdc exited with %d on SIGTERM\n", status);
    if (status != 0 || CU_get_number_of_failures() > 0) {
        print_file(adapter.log);
        print_file(pg.log);
    }
    PQfinish(c1);
    PQfinish(c2);
    msm_test_pg_destroy(&pg);
    curl_global_cleanup();
    return status == 0 ? 0 : -1;
}

/* ---- the tests ---- */

static void expect_status(const char *path, long want, const char *code)
{
    json_t *j = NULL;
    long st = get(path, NULL, &j);
    if (st != want)
        fprintf(stderr, "\nGET %s: %ld, want %ld\n", path, st, want);
    CU_ASSERT_EQUAL(st, want);
    if (code) {
        json_t *err = json_object_get(j, "error");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(err, "code")), code);
        CU_ASSERT(json_is_array(json_object_get(err, "details")));
    }
    json_decref(j);
}

static void test_bad_requests(void)
{
    expect_status("/healthz", 200, NULL);
    expect_status("/readyz", 200, NULL);
    expect_status("/changes", 400, "INVALID_ARGUMENT");
    expect_status("/changes?partition=p0&after=-1", 400, "INVALID_ARGUMENT");
    expect_status("/changes?partition=p0&after=abc", 400, "INVALID_ARGUMENT");
    expect_status("/changes?partition=p0&after=99999999999999999999", 400, "INVALID_ARGUMENT");
    expect_status("/changes?partition=p0&limit=0", 400, "INVALID_ARGUMENT");
    expect_status("/changes?partition=p0&limit=100001", 400, "INVALID_ARGUMENT");
    expect_status("/changes?partition=p0&limit=5x", 400, "INVALID_ARGUMENT");
    expect_status("/changes?partition=p9&after=0", 404, "NOT_FOUND");
    expect_status("/changes?partition=a%2Fb&after=0", 404, "NOT_FOUND");
    /* A cursor far beyond this database's WAL (another slot's?) must not acknowledge
     * anything: refused once the monitor has seen the server's position. */
    char path[128];
    long st = 0;
    snprintf(path, sizeof(path), "/changes?partition=p0&after=%" PRId64, INT64_MAX / 2);
    for (uint64_t deadline = now_ms() + WAIT_MS; now_ms() < deadline && st != 400;)
        st = get(path, NULL, NULL);
    CU_ASSERT_EQUAL(st, 400);
    /* Nothing was acknowledged by it: the stream still starts at the beginning. */
    json_t *page = fetch(0, 10);
    CU_ASSERT_PTR_NOT_NULL_FATAL(page);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(page, "changes")), 0);
    CU_ASSERT(json_is_false(json_object_get(page, "has_more")));
    json_decref(page);
}

#define BIG_TXN 120 /* more than the adapter's buffer (40): it must page through it */

static void test_commit_order(void)
{
    /* A begins first and commits last; B commits in between from another connection. */
    CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c1, "BEGIN;"
                                               "INSERT INTO users VALUES (1, 'ann', 12.50, 0.5);"
                                               "INSERT INTO users VALUES (2, 'bob', 1, 2)"),
                          0);
    CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c2, "BEGIN;"
                                               "INSERT INTO users VALUES (3, 'cy', 0, 0);"
                                               "UPDATE users SET name = 'cyd' WHERE id = 3;"
                                               "INSERT INTO items VALUES (1, 'x/y', 5);"
                                               "COMMIT"),
                          0);
    CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c1, "UPDATE users SET name = 'anna' WHERE id = 1;"
                                               "DELETE FROM users WHERE id = 2;"
                                               "COMMIT"),
                          0);
    CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c2, "UPDATE users SET id = 10 WHERE id = 1"), 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c2, "INSERT INTO skipped VALUES (1)"), 0);
    CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c2,
                                           "INSERT INTO users SELECT g, 'u' || g, g, g "
                                           "FROM generate_series(100, %d) g",
                                           99 + BIG_TXN),
                          0);
    json_t *all = collect(&cursor, SMALL_PAGE, 9 + BIG_TXN);
    expect_change(all, 0, "create", "public.users/3");
    expect_change(all, 1, "update", "public.users/3");
    expect_change(all, 2, "create", "public.items/1/x%2Fy");
    expect_change(all, 3, "create", "public.users/1");
    expect_change(all, 4, "create", "public.users/2");
    expect_change(all, 5, "update", "public.users/1");
    expect_change(all, 6, "delete", "public.users/2");
    expect_change(all, 7, "delete", "public.users/1");  /* the key moved: 1 is gone… */
    expect_change(all, 8, "create", "public.users/10"); /* …and 10 appears */
    for (int i = 0; i < BIG_TXN; i++) {
        char entity[64];
        snprintf(entity, sizeof(entity), "public.users/%d", 100 + i);
        expect_change(all, 9 + (size_t)i, "create", entity);
    }
    /* Data: the new row, numeric exact as a string, floats as numbers; deletes carry none. */
    char *d3 = json_dumps(json_object_get(json_array_get(all, 3), "data"), JSON_COMPACT);
    CU_ASSERT_STRING_EQUAL(d3, "{\"id\":1,\"name\":\"ann\",\"score\":\"12.50\",\"ratio\":0.5}");
    free(d3);
    CU_ASSERT_STRING_EQUAL(
        json_string_value(json_object_get(json_object_get(json_array_get(all, 5), "data"), "name")),
        "anna");
    CU_ASSERT_PTR_NULL(json_object_get(json_array_get(all, 6), "data"));
    CU_ASSERT_PTR_NULL(json_object_get(json_array_get(all, 7), "data"));
    json_decref(all);
    /* Caught up: an empty answer after waiting briefly, nothing more to say. */
    json_t *page = fetch(cursor, SMALL_PAGE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(page);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(page, "changes")), 0);
    CU_ASSERT(json_is_false(json_object_get(page, "has_more")));
    json_decref(page);
}

static void test_kill_restart(void)
{
    for (int t = 0; t < 3; t++)
        CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c1,
                                               "INSERT INTO users SELECT g, 'r', 1, 1 "
                                               "FROM generate_series(%d, %d) g",
                                               300 + 10 * t, 309 + 10 * t),
                              0);
    /* A first page of 10; msm keeps the first 5 durably and acknowledges them. */
    json_t *p1 = NULL;
    for (uint64_t deadline = now_ms() + WAIT_MS; now_ms() < deadline;) {
        json_decref(p1);
        p1 = fetch(cursor, 10);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p1);
        if (json_array_size(json_object_get(p1, "changes")) == 10)
            break;
    }
    json_t *first = json_object_get(p1, "changes");
    CU_ASSERT_EQUAL_FATAL(json_array_size(first), 10);
    int64_t acked = json_integer_value(json_object_get(json_array_get(first, 4), "sequence"));
    json_t *p2 = fetch(acked, 10);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p2);
    CU_ASSERT(
        json_equal(json_array_get(json_object_get(p2, "changes"), 0), json_array_get(first, 5)));
    json_decref(p2);

    CU_ASSERT_EQUAL(msm_test_proc_stop(&adapter, SIGKILL, MSM_TEST_PROC_GRACE_MS), 128 + SIGKILL);
    CU_ASSERT_EQUAL_FATAL(start_adapter(&adapter, 40), 0);

    /* From msm's cursor: the unacknowledged 5 again, the same sequences and content, then the
     * rest; nothing at or below the cursor. */
    int64_t from = acked;
    json_t *again = collect(&from, SMALL_PAGE, 25);
    for (size_t i = 0; i < 5; i++)
        CU_ASSERT(json_equal(json_array_get(again, i), json_array_get(first, 5 + i)));
    for (size_t i = 0; i < json_array_size(again); i++) {
        char entity[64];
        snprintf(entity, sizeof(entity), "public.users/%zu", 305 + i);
        expect_change(again, i, "create", entity);
    }
    json_decref(again);
    json_decref(p1);
    cursor = from;
}

static int slot_confirmed_at_least(const char *lsn)
{
    char *v = msm_test_pg_value(c2,
                                "SELECT confirmed_flush_lsn >= '%s'::pg_lsn FROM "
                                "pg_replication_slots WHERE slot_name = '" SLOT "'",
                                lsn);
    int yes = v && strcmp(v, "t") == 0;
    free(v);
    return yes;
}

static void test_slot_advances(void)
{
    CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c1, "INSERT INTO users SELECT g, 's', 1, 1 "
                                               "FROM generate_series(400, 404) g"),
                          0);
    char *end = msm_test_pg_value(c1, "SELECT pg_current_wal_lsn()");
    CU_ASSERT_PTR_NOT_NULL_FATAL(end);
    /* Served but not acknowledged: the slot keeps them. */
    json_t *page = NULL;
    for (uint64_t deadline = now_ms() + WAIT_MS; now_ms() < deadline;) {
        json_decref(page);
        page = fetch(cursor, 100);
        CU_ASSERT_PTR_NOT_NULL_FATAL(page);
        if (json_array_size(json_object_get(page, "changes")) == 5)
            break;
    }
    json_t *changes = json_object_get(page, "changes");
    CU_ASSERT_EQUAL_FATAL(json_array_size(changes), 5);
    CU_ASSERT_FALSE(slot_confirmed_at_least(end));
    /* Acknowledged, and the WAL moves to a new segment (a sequence unit, README.md): the
     * slot's confirmed_flush_lsn passes them. */
    cursor = json_integer_value(json_object_get(json_array_get(changes, 4), "sequence"));
    json_decref(page);
    page = fetch(cursor, 100);
    CU_ASSERT_PTR_NOT_NULL(page);
    json_decref(page);
    free(msm_test_pg_value(c1, "SELECT pg_switch_wal()"));
    CU_ASSERT_EQUAL(msm_test_pg_exec(c1, "INSERT INTO skipped VALUES (2)"), 0);
    int moved = 0;
    for (uint64_t deadline = now_ms() + WAIT_MS; now_ms() < deadline && !moved;) {
        moved = slot_confirmed_at_least(end);
        if (!moved)
            usleep(50000);
    }
    CU_ASSERT_TRUE(moved);
    free(end);
}

static void test_metrics(void)
{
    char *text = NULL;
    CU_ASSERT_EQUAL_FATAL(get("/metrics", &text, NULL), 200);
    const char *names[] = {"msm_pg_cdc_changes_served_total ",
                           "msm_pg_cdc_changes_read_total ",
                           "msm_pg_cdc_slot_lag_bytes ",
                           "msm_pg_cdc_range_request_seconds_count ",
                           "msm_pg_cdc_range_requests_total{code=\"200\"} ",
                           "msm_pg_cdc_stream_up 1",
                           NULL};
    for (int i = 0; names[i]; i++) {
        if (!strstr(text, names[i]))
            fprintf(stderr, "\n/metrics has no %s\n", names[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(text, names[i]));
    }
    free(text);
}

#define BENCH_ROWS 10000
#define BENCH_PAGE 500

/* One ad hoc measurement: 10,000 inserts, then paged through like the scheduler would. */
static void test_throughput(void)
{
    /* A graceful stop answers 0; the measurement runs with the default buffer. */
    CU_ASSERT_EQUAL(msm_test_proc_stop(&adapter, SIGTERM, MSM_TEST_PROC_GRACE_MS), 0);
    CU_ASSERT_EQUAL_FATAL(start_adapter(&adapter, 20000), 0);
    for (int t = 0; t < 10; t++)
        CU_ASSERT_EQUAL_FATAL(msm_test_pg_exec(c1,
                                               "INSERT INTO users SELECT g, 'bench', g, g "
                                               "FROM generate_series(%d, %d) g",
                                               1000000 + t * (BENCH_ROWS / 10),
                                               1000000 + (t + 1) * (BENCH_ROWS / 10) - 1),
                              0);
    uint64_t t0 = now_ms();
    json_t *all = collect(&cursor, BENCH_PAGE, BENCH_ROWS);
    uint64_t ms = now_ms() - t0;
    CU_ASSERT_EQUAL(json_array_size(all), BENCH_ROWS);
    char entity[64];
    snprintf(entity, sizeof(entity), "public.users/%d", 1000000 + BENCH_ROWS - 1);
    expect_change(all, BENCH_ROWS - 1, "create", entity);
    json_decref(all);
    printf("\nmsm-pg-cdc: %d changes (10 transactions) paged with limit %d in %" PRIu64
           " ms: %.0f changes/s\n",
           BENCH_ROWS, BENCH_PAGE, ms, ms ? BENCH_ROWS * 1000.0 / (double)ms : 0.0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MSM_PG_CDC_BINARY\n", argv[0]);
        return 2;
    }
    adapter_bin = argv[1];
    CU_TestInfo tests[] = {
        {"bad requests", test_bad_requests},
        {"commit order, tombstones, key moves, paging", test_commit_order},
        {"kill -9: same sequences, nothing acknowledged again", test_kill_restart},
        {"the slot advances with acknowledgements", test_slot_advances},
        {"metrics", test_metrics},
        {"throughput (printed)", test_throughput},
        CU_TEST_INFO_NULL};
    CU_SuiteInfo suites[] = {{"pg_cdc", suite_init, suite_clean, NULL, NULL, tests},
                             CU_SUITE_INFO_NULL};
    return msm_test_run(suites);
}
