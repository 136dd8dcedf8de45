/* SPDX-License-Identifier: MIT */
/* msmctl as a child process against a stand-in frontend served here with msm_http_server:
 * the requests it sends (method, path, query, JSON body), the tables and lines it prints,
 * --json, batching and throughput of publish, and a one-line reason with a non-zero status
 * for every error. */
#include "lambda_test_util.h"
#include "msm_test.h"
#include "msm/err.h"
#include "msm/http_server.h"
#include "msm/json.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static msm_loop_t *loop;
static msm_http_server_t *srv;
static char base_url[64];
static json_t *requests; /* one {"method","path","limit","body"} per request */
static json_t *batches;  /* publish batch sizes */
static int published;

/* ---- the stand-in frontend ---- */

static json_t *remember(msm_http_req_t *req)
{
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    json_t *b = len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *limit = msm_http_req_query(req, "limit");
    json_t *r = json_pack("{s:s,s:s,s:s?,s:o?,s:s?}", "method", msm_http_req_method(req), "path",
                          msm_http_req_path(req), "limit", limit, "body", b, "content_type",
                          msm_http_req_header(req, "Content-Type"));
    json_array_append_new(requests, r);
    return r;
}

static json_t *last_request(void)
{
    return json_array_get(requests, json_array_size(requests) - 1);
}

static void h_topic_put(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    json_t *r = remember(req);
    json_t *subj = json_object_get(json_object_get(r, "body"), "schema_subject");
    msm_http_respond_json(req, 200,
                          json_pack("{s:s,s:O?}", "name", msm_http_req_param(req, "topic"),
                                    "schema_subject", subj ? subj : json_null()));
}

static void h_topics_get(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(req, 200,
                          json_pack("{s:[{s:s,s:n},{s:s,s:s}]}", "topics", "name", "orders",
                                    "schema_subject", "name", "clicks", "schema_subject",
                                    "clicks-value"));
}

static void h_topic_delete(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    const char *name = msm_http_req_param(req, "topic");
    if (!name)
        name = msm_http_req_param(req, "name");
    if (strcmp(name, "missing") == 0)
        msm_http_respond_error(req, 404, "NOT_FOUND", "topic \"missing\" does not exist", NULL);
    else
        msm_http_respond(req, 204, NULL, NULL, 0);
}

static void h_sub_put(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    json_t *r = remember(req);
    json_t *out = json_deep_copy(json_object_get(r, "body"));
    json_object_set_new(out, "name", json_string(msm_http_req_param(req, "name")));
    msm_http_respond_json(req, 200, out);
}

static void h_subs_get(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(req, 200,
                          json_pack("{s:[{s:s,s:s,s:[{s:s},{s:s}],s:b,s:i,s:i,s:{s:i}}]}",
                                    "subscriptions", "name", "orders-sub", "topic", "orders",
                                    "endpoints", "url", "http://a:9000/", "url", "http://b:9000/",
                                    "ordered", 1, "max_concurrency", 64, "timeout_ms", 30000,
                                    "retry", "max_attempts", 7));
}

static void h_stats(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(req, 200,
                          json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:[{s:s,s:b,s:i}]}",
                                    "backlog", 12, "delayed", 1, "in_flight", 3, "retrying", 2,
                                    "succeeded", 1000, "failed_attempts", 9, "dead", 4,
                                    "concurrency_limit", 64, "rate_limit_per_s", 0, "endpoints",
                                    "url", "http://a:9000/", "healthy", 1, "in_flight", 3));
}

/* POST …/canary:promote|rollback: the new state; "plain" has no canary (409). */
static void h_canary(msm_http_req_t *req, void *opaque)
{
    remember(req);
    if (strcmp(msm_http_req_param(req, "name"), "plain") == 0) {
        msm_http_respond_error(req, 409, "FAILED_PRECONDITION",
                               "subscription plain has no canary", NULL);
        return;
    }
    int promote = opaque != NULL;
    msm_http_respond_json(req, 200,
                          json_pack("{s:s,s:f,s:s,s:s,s:n}", "version", "v2", "share",
                                    promote ? 1.0 : 0.0, "state",
                                    promote ? "promoted" : "rolled_back", "reason", "by request",
                                    "at"));
}

static void h_task(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(req, 200,
                          json_pack("{s:s,s:s,s:i,s:n,s:s,s:[{s:i,s:s,s:i,s:s}]}", "event_id",
                                    msm_http_req_param(req, "event_id"), "state", "dead",
                                    "attempts", 5, "next_attempt_at", "last_error", "boom",
                                    "history", "attempt", 1, "at", "2026-11-25T12:00:00.000Z",
                                    "status", 503, "error", "boom"));
}

static void h_dlq(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(req, 200,
                          json_pack("{s:[{s:s,s:s,s:i,s:s}]}", "tasks", "event_id", "dead-1",
                                    "state", "dead", "attempts", 5, "last_error", "kaput"));
}

static void h_replay(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    json_t *r = remember(req);
    size_t n = json_array_size(json_object_get(json_object_get(r, "body"), "event_ids"));
    msm_http_respond_json(req, 200, json_pack("{s:I}", "replayed", (json_int_t)(n ? n : 3)));
}

static void h_publish(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    json_t *r = remember(req);
    json_t *events = json_object_get(json_object_get(r, "body"), "events");
    json_array_append_new(batches, json_integer((json_int_t)json_array_size(events)));
    json_t *results = json_array();
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev)
    {
        char id[32];
        snprintf(id, sizeof(id), "id-%d", ++published);
        json_array_append_new(results, json_pack("{s:s,s:b}", "id", id, "duplicate", 0));
    }
    msm_http_respond_json(req, 200, json_pack("{s:o}", "results", results));
}

static void h_schedule_put(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    json_t *r = remember(req);
    json_t *out = json_deep_copy(json_object_get(r, "body"));
    json_object_set_new(out, "name", json_string(msm_http_req_param(req, "name")));
    msm_http_respond_json(req, 200, out);
}

static void h_schedules_get(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(req, 200,
                          json_pack("{s:[{s:s,s:s,s:s,s:n,s:s,s:s},{s:s,s:s,s:n,s:i,s:s,s:s}]}",
                                    "schedules", "name", "nightly", "topic", "orders", "cron",
                                    "0 3 * * *", "every_ms", "timezone", "UTC", "catch_up", "last",
                                    "name", "pulse", "topic", "orders", "cron", "every_ms", 60000,
                                    "timezone", "UTC", "catch_up", "all"));
}

static void h_subject_post(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(req, 200, json_pack("{s:i}", "id", 17));
}

static void h_subjects_get(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(req, 200, json_pack("[s,s]", "orders-value", "clicks-value"));
}

static void h_cdc_list(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(
        req, 200,
        json_pack("{s:[{s:s,s:s,s:s,s:[s,s],s:i,s:i}]}", "sources", "name", "db", "topic",
                  "files", "range_url", "http://db/changes", "partitions", "p0", "p1",
                  "poll_interval_ms", 1000, "batch_size", 500));
}

static void h_cdc_get(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    if (strcmp(msm_http_req_param(req, "name"), "db") != 0) {
        msm_http_respond_error(req, 404, "NOT_FOUND", "CDC source nope not found", NULL);
        return;
    }
    msm_http_respond_json(req, 200,
                          json_pack("{s:s,s:s,s:s,s:[s,s]}", "name", "db", "topic", "files",
                                    "range_url", "http://db/changes", "partitions", "p0", "p1"));
}

static void h_cdc_partitions(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    remember(req);
    msm_http_respond_json(
        req, 200,
        json_pack("{s:s,s:[{s:s,s:i,s:i,s:i,s:s,s:b},{s:s,s:i,s:i,s:i,s:b}]}", "source", "db",
                  "partitions", "partition", "p0", "cursor", 120, "notified", 150, "lag", 30,
                  "owner", "host-msm-scheduler-8081", "append_pending", 0, "partition", "p1",
                  "cursor", 7, "notified", 0, "lag", 0, "append_pending", 0));
}

static void h_cdc_notify(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    json_t *r = remember(req);
    json_t *seq = json_object_get(json_object_get(r, "body"), "sequence");
    msm_http_respond_json(req, 200, json_pack("{s:s,s:O,s:O}", "partition", "p0", "sequence", seq,
                                              "notified", seq));
}

static int suite_init(void)
{
    loop = msm_loop_new();
    msm_http_server_conf_t conf;
    msm_http_server_conf_init(&conf);
    conf.bind_address = "127.0.0.1";
    conf.name = "fake-frontend";
    char err[256];
    srv = loop ? msm_http_server_new(loop, &conf, err, sizeof(err)) : NULL;
    if (!srv)
        return -1;
    snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%u",
             (unsigned)msm_http_server_port(srv));
    struct {
        const char *m, *p;
        msm_http_handler_cb *cb;
    } routes[] = {
        {"PUT", "/v1/topics/{topic}", h_topic_put},
        {"GET", "/v1/topics", h_topics_get},
        {"DELETE", "/v1/topics/{topic}", h_topic_delete},
        {"PUT", "/v1/subscriptions/{name}", h_sub_put},
        {"GET", "/v1/subscriptions", h_subs_get},
        {"DELETE", "/v1/subscriptions/{name}", h_topic_delete},
        {"GET", "/v1/subscriptions/{name}/stats", h_stats},
        {"GET", "/v1/subscriptions/{name}/tasks/{event_id}", h_task},
        {"GET", "/v1/subscriptions/{name}/dlq", h_dlq},
        {"POST", "/v1/subscriptions/{name}/dlq:replay", h_replay},
        {"POST", "/v1/subscriptions/{name}/canary:promote", h_canary},
        {"POST", "/v1/subscriptions/{name}/canary:rollback", h_canary},
        {"POST", "/v1/topics/{topic}:publish", h_publish},
        {"PUT", "/v1/schedules/{name}", h_schedule_put},
        {"GET", "/v1/schedules", h_schedules_get},
        {"GET", "/v1/schedules/{name}", h_schedule_put},
        {"DELETE", "/v1/schedules/{name}", h_topic_delete},
        {"POST", "/subjects/{s}/versions", h_subject_post},
        {"GET", "/subjects", h_subjects_get},
        {"GET", "/v1/cdc/sources", h_cdc_list},
        {"GET", "/v1/cdc/sources/{name}", h_cdc_get},
        {"GET", "/v1/cdc/sources/{name}/partitions", h_cdc_partitions},
        {"POST", "/v1/cdc/sources/{name}:notify", h_cdc_notify},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        /* h_canary tells promote (non-NULL) from rollback by its opaque. */
        void *op = strstr(routes[i].p, "canary:promote") ? (void *)routes : NULL;
        if (msm_http_server_route(srv, routes[i].m, routes[i].p, routes[i].cb, op) != MSM_OK)
            return -1;
    }
    requests = json_array();
    batches = json_array();
    return 0;
}

static int suite_clean(void)
{
    msm_http_server_free(srv);
    msm_loop_free(loop);
    json_decref(requests);
    json_decref(batches);
    return 0;
}

/* ---- running msmctl while the loop serves ---- */

typedef struct {
    char *buf;
    size_t len;
    int fd;
} sink_t;

typedef struct {
    sink_t out, err;
    int status;
} run_t;

static void on_pipe(msm_loop_t *l, int fd, int events, void *opaque)
{
    (void)events;
    sink_t *s = opaque;
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n > 0) {
        char *b = realloc(s->buf, s->len + (size_t)n + 1);
        if (!b)
            return;
        memcpy(b + s->len, chunk, (size_t)n);
        s->buf = b;
        s->len += (size_t)n;
        s->buf[s->len] = '\0';
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    msm_loop_unwatch(l, fd);
    close(fd);
    s->fd = -1;
}

static int pipes_closed(void *arg)
{
    run_t *r = arg;
    return r->out.fd < 0 && r->err.fd < 0;
}

/* Runs `msmctl --url <fake> args...` (no --url when @p env_url is set: then it comes from
 * MSM_FRONTEND_URL). @returns the exit status. */
static int run_ctl_env(run_t *r, const char *env_url, const char *const *args)
{
    memset(r, 0, sizeof(*r));
    const char *argv[48] = {MSMCTL_BIN};
    int n = 1;
    if (!env_url) {
        argv[n++] = "--url";
        argv[n++] = base_url;
    }
    for (int i = 0; args[i] && n < 47; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], STDOUT_FILENO);
        dup2(pe[1], STDERR_FILENO);
        if (env_url)
            setenv("MSM_FRONTEND_URL", env_url, 1);
        else
            unsetenv("MSM_FRONTEND_URL");
        execv(MSMCTL_BIN, (char *const *)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    r->out.fd = po[0];
    r->err.fd = pe[0];
    fcntl(po[0], F_SETFL, O_NONBLOCK);
    fcntl(pe[0], F_SETFL, O_NONBLOCK);
    msm_loop_watch(loop, po[0], MSM_LOOP_READ, on_pipe, &r->out);
    msm_loop_watch(loop, pe[0], MSM_LOOP_READ, on_pipe, &r->err);
    if (msm_loop_run_until(loop, pipes_closed, r, 20000) != MSM_OK) {
        kill(pid, SIGKILL);
        for (sink_t *s = &r->out; s <= &r->err; s++) {
            if (s->fd >= 0) {
                msm_loop_unwatch(loop, s->fd);
                close(s->fd);
                s->fd = -1;
            }
        }
    }
    int st;
    waitpid(pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (!r->out.buf)
        r->out.buf = calloc(1, 1);
    if (!r->err.buf)
        r->err.buf = calloc(1, 1);
    return r->status;
}

static int run_ctl(run_t *r, const char *const *args)
{
    return run_ctl_env(r, NULL, args);
}

static void run_free(run_t *r)
{
    free(r->out.buf);
    free(r->err.buf);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A failure: non-zero status, nothing on stdout, one line on stderr holding @p what. */
static void expect_one_line_error(const char *const *args, int status, const char *what)
{
    run_t r;
    CU_ASSERT_EQUAL(run_ctl(&r, args), status);
    CU_ASSERT_STRING_EQUAL(r.out.buf, "");
    CU_ASSERT_EQUAL(count_lines(r.err.buf), 1);
    CU_ASSERT_EQUAL(strncmp(r.err.buf, "msmctl", 6), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err.buf, what));
    if (!strstr(r.err.buf, what) || r.status != status)
        fprintf(stderr, "\n[%s] status %d stderr: %s", args[0], r.status, r.err.buf);
    run_free(&r);
}

static json_t *body_of_last(void)
{
    return json_object_get(last_request(), "body");
}

static const char *last_field(const char *k)
{
    return json_string_value(json_object_get(last_request(), k));
}

/* ---- tests ---- */

static void test_bad_arguments(void)
{
    const char *none[] = {NULL};
    expect_one_line_error(none, 2, "no command");
    const char *unknown[] = {"frobnicate", NULL};
    expect_one_line_error(unknown, 2, "unknown command \"frobnicate\"");
    const char *group[] = {"sub", NULL};
    expect_one_line_error(group, 2, "expected a subcommand");
    const char *no_name[] = {"topic", "create", NULL};
    expect_one_line_error(no_name, 2, "expected NAME");
    const char *extra[] = {"topic", "list", "x", NULL};
    expect_one_line_error(extra, 2, "expected no arguments");
    const char *bad_flag[] = {"topic", "list", "--nope", NULL};
    expect_one_line_error(bad_flag, 2, "unknown flag");
    const char *no_topic[] = {"sub", "create", "s", "--endpoint", "http://x/", NULL};
    expect_one_line_error(no_topic, 2, "--topic is required");
    const char *bad_ep[] = {"sub", "create", "s", "--topic", "t", "--endpoint", "ftp://x", NULL};
    expect_one_line_error(bad_ep, 2, "not an http");
    const char *no_data[] = {"publish", "orders", NULL};
    expect_one_line_error(no_data, 2, "--data is required");
    const char *bad_json[] = {"publish", "orders", "--data", "{oops", NULL};
    expect_one_line_error(bad_json, 2, "not valid JSON");
    const char *bad_count[] = {"publish", "orders", "--data", "1", "--count", "0", NULL};
    expect_one_line_error(bad_count, 2, "count");
    const char *bad_state[] = {"tasks", "s", "--state", "running", NULL};
    expect_one_line_error(bad_state, 2, "only dead");
    const char *up[] = {"up", "extra", NULL};
    expect_one_line_error(up, 2, "expected no arguments");
    /* Nothing listens there: the reason names the URL. */
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", msm_test_free_port());
    const char *unreachable[] = {"--url", url, "topic", "list", NULL};
    expect_one_line_error(unreachable, 1, "cannot reach http://127.0.0.1:");
    /* No request reached the frontend in all of that. */
    CU_ASSERT_EQUAL(json_array_size(requests), 0);

    run_t r;
    const char *help[] = {"--help", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, help), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "sub create"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "dlq replay"));
    run_free(&r);
    const char *sub_help[] = {"publish", "--help", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, sub_help), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "--ordering-key"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "--rate"));
    run_free(&r);
}

static void test_topics(void)
{
    run_t r;
    const char *create[] = {"topic", "create", "orders", "--schema-subject", "orders-value", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, create), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "PUT");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/topics/orders");
    CU_ASSERT_STRING_EQUAL(last_field("content_type"), "application/json");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(body_of_last(), "schema_subject")),
                           "orders-value");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "topic orders saved"));
    run_free(&r);

    const char *plain[] = {"topic", "create", "clicks", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, plain), 0);
    CU_ASSERT_EQUAL(json_object_size(body_of_last()), 0); /* {} */
    run_free(&r);

    const char *list[] = {"topic", "list", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, list), 0);
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/topics");
    /* A header row and one row per topic, columns aligned. */
    CU_ASSERT_EQUAL(count_lines(r.out.buf), 3);
    CU_ASSERT_EQUAL(strncmp(r.out.buf, "NAME    SCHEMA_SUBJECT\n", 23), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "orders  -\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "clicks  clicks-value\n"));
    run_free(&r);

    const char *list_json[] = {"topic", "list", "--json", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, list_json), 0);
    json_t *j = json_loads(r.out.buf, 0, NULL);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "topics")), 2);
    json_decref(j);
    run_free(&r);

    const char *del[] = {"topic", "delete", "orders", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, del), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "DELETE");
    CU_ASSERT_STRING_EQUAL(r.out.buf, "topic orders deleted\n");
    run_free(&r);

    /* The API's error code and message, on one line. */
    const char *missing[] = {"topic", "delete", "missing", NULL};
    expect_one_line_error(missing, 1, "404 NOT_FOUND: topic \"missing\" does not exist");
}

static void test_subscriptions(void)
{
    run_t r;
    const char *create[] = {"sub",
                            "create",
                            "orders-sub",
                            "--topic",
                            "orders",
                            "--endpoint",
                            "http://127.0.0.1:9000/,http://127.0.0.1:9001/",
                            "--max-concurrency",
                            "8",
                            "--timeout-ms",
                            "1500",
                            "--max-attempts",
                            "3",
                            "--ordered",
                            "--filter",
                            "attributes.kind = \"image\"",
                            NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, create), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "PUT");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/subscriptions/orders-sub");
    json_t *want =
        json_pack("{s:s,s:[{s:s},{s:s}],s:b,s:s,s:i,s:i,s:{s:i}}", "topic", "orders", "endpoints",
                  "url", "http://127.0.0.1:9000/", "url", "http://127.0.0.1:9001/", "ordered", 1,
                  "filter", "attributes.kind = \"image\"", "max_concurrency", 8, "timeout_ms", 1500,
                  "retry", "max_attempts", 3);
    CU_ASSERT_TRUE(json_equal(body_of_last(), want));
    if (!json_equal(body_of_last(), want)) {
        char *s = json_dumps(body_of_last(), 0);
        fprintf(stderr, "\nsent %s\n", s);
        free(s);
    }
    json_decref(want);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "subscription orders-sub saved"));
    run_free(&r);

    /* Only what was given: the server's defaults apply to the rest. */
    const char *minimal[] = {"sub", "create",     "s2",        "--topic",
                             "t",   "--endpoint", "http://x/", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, minimal), 0);
    want = json_pack("{s:s,s:[{s:s}],s:b}", "topic", "t", "endpoints", "url", "http://x/",
                     "ordered", 0);
    CU_ASSERT_TRUE(json_equal(body_of_last(), want));
    json_decref(want);
    run_free(&r);

    const char *list[] = {"sub", "list", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, list), 0);
    CU_ASSERT_EQUAL(count_lines(r.out.buf), 2);
    CU_ASSERT_EQUAL(strncmp(r.out.buf, "NAME", 4), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "MAX_ATTEMPTS"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "http://a:9000/,http://b:9000/"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "orders-sub"));
    run_free(&r);

    const char *stats[] = {"sub", "stats", "orders-sub", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, stats), 0);
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/subscriptions/orders-sub/stats");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "backlog "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "12\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "URL"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "http://a:9000/  true"));
    run_free(&r);

    size_t before = json_array_size(requests);
    const char *watch[] = {"sub", "stats",         "orders-sub", "--watch", "--interval-ms",
                           "100", "--watch-count", "3",          "--json",  NULL};
    double t0 = lt_now_ms();
    CU_ASSERT_EQUAL(run_ctl(&r, watch), 0);
    CU_ASSERT_TRUE(lt_now_ms() - t0 >= 200);
    CU_ASSERT_EQUAL(json_array_size(requests) - before, 3);
    CU_ASSERT_EQUAL(count_lines(r.out.buf), 3);
    run_free(&r);

    const char *del[] = {"sub", "delete", "orders-sub", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, del), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "DELETE");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/subscriptions/orders-sub");
    run_free(&r);
}

static void test_schedules(void)
{
    run_t r;
    const char *put[] = {"schedule", "put",   "nightly",  "--topic",    "orders",
                         "--cron",   "0 3 * * *", "--catch-up", "none", "--data",
                         "{\"job\":\"report\"}", "--key", "k1", "--attr", "team=ops",
                         "--priority", "7", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, put), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "PUT");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/schedules/nightly");
    json_t *want = json_pack("{s:s,s:s,s:s,s:{s:{s:s},s:s,s:i,s:{s:s}}}", "topic", "orders",
                             "cron", "0 3 * * *", "catch_up", "none", "event", "data", "job",
                             "report", "key", "k1", "priority", 7, "attributes", "team", "ops");
    if (!json_equal(body_of_last(), want)) {
        char *s = json_dumps(body_of_last(), 0);
        fprintf(stderr, "\nsent %s\n", s);
        free(s);
    }
    CU_ASSERT_TRUE(json_equal(body_of_last(), want));
    json_decref(want);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "schedule nightly saved"));
    run_free(&r);

    const char *every[] = {"schedule", "put",    "pulse", "--topic", "orders", "--every-ms",
                           "60000",    "--data", "1",     NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, every), 0);
    want = json_pack("{s:s,s:I,s:{s:i}}", "topic", "orders", "every_ms", (json_int_t)60000,
                     "event", "data", 1);
    CU_ASSERT_TRUE(json_equal(body_of_last(), want));
    json_decref(want);
    run_free(&r);

    const char *list[] = {"schedule", "list", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, list), 0);
    CU_ASSERT_EQUAL(count_lines(r.out.buf), 3);
    CU_ASSERT_EQUAL(strncmp(r.out.buf, "NAME", 4), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "CATCH_UP"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "0 3 * * *"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "60000"));
    run_free(&r);

    const char *get[] = {"schedule", "get", "nightly", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, get), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "GET");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/schedules/nightly");
    run_free(&r);

    const char *del[] = {"schedule", "delete", "nightly", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, del), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "DELETE");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/schedules/nightly");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "schedule nightly deleted"));
    run_free(&r);

    /* Exactly one of --cron and --every-ms; --topic and --data required: usage errors. */
    const char *both[] = {"schedule", "put",    "x", "--topic", "t", "--cron", "* * * * *",
                          "--every-ms", "1000", "--data", "1", NULL};
    expect_one_line_error(both, 2, "exactly one of --cron and --every-ms");
    const char *neither[] = {"schedule", "put", "x", "--topic", "t", "--data", "1", NULL};
    expect_one_line_error(neither, 2, "exactly one of --cron and --every-ms");
    const char *notopic[] = {"schedule", "put", "x", "--every-ms", "1000", "--data", "1", NULL};
    expect_one_line_error(notopic, 2, "--topic is required");
    const char *nodata[] = {"schedule", "put", "x", "--topic", "t", "--every-ms", "1000", NULL};
    expect_one_line_error(nodata, 2, "--data is required");
}

static void test_publish(void)
{
    run_t r;
    const char *one[] = {
        "publish",        "orders", "--data",     "{\"n\":1}", "--key",  "k1",
        "--ordering-key", "o1",     "--delay-ms", "250",       "--attr", "kind=image",
        "--attr",         "size=3", "--priority", "7",         NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, one), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "POST");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/topics/orders:publish");
    json_t *want = json_pack("{s:[{s:{s:i},s:s,s:s,s:i,s:i,s:{s:s,s:s}}]}", "events", "data", "n",
                             1, "key", "k1", "ordering_key", "o1", "delay_ms", 250, "priority", 7,
                             "attributes", "kind", "image", "size", "3");
    CU_ASSERT_TRUE(json_equal(body_of_last(), want));
    json_decref(want);
    /* The id of the one event. */
    char expect[32];
    snprintf(expect, sizeof(expect), "id-%d\n", published);
    CU_ASSERT_STRING_EQUAL(r.out.buf, expect);
    run_free(&r);

    /* 250 events: batches of 100, 100, 50, and the rate at the end. */
    json_array_clear(batches);
    const char *many[] = {"publish", "orders", "--data",     "\"x\"",
                          "--count", "250",    "--progress", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, many), 0);
    CU_ASSERT_EQUAL(json_array_size(batches), 3);
    CU_ASSERT_EQUAL(json_integer_value(json_array_get(batches, 0)), 100);
    CU_ASSERT_EQUAL(json_integer_value(json_array_get(batches, 1)), 100);
    CU_ASSERT_EQUAL(json_integer_value(json_array_get(batches, 2)), 50);
    CU_ASSERT_EQUAL(strncmp(r.out.buf, "published 250 events to orders in ", 34), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "events/s)\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err.buf, "250/250 100%")); /* the progress bar */
    run_free(&r);

    /* --rate paces: 30 events at 100/s take about 0.3 s, in small batches. */
    json_array_clear(batches);
    const char *paced[] = {"publish", "orders", "--data", "1",      "--count",
                           "30",      "--rate", "100",    "--json", NULL};
    double t0 = lt_now_ms();
    CU_ASSERT_EQUAL(run_ctl(&r, paced), 0);
    double took = lt_now_ms() - t0;
    CU_ASSERT_TRUE(took >= 250);
    CU_ASSERT_EQUAL(json_array_size(batches), 3);
    json_t *j = json_loads(r.out.buf, 0, NULL);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "published")), 30);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(j, "results")), 30);
    CU_ASSERT_TRUE(json_is_number(json_object_get(j, "events_per_s")));
    json_decref(j);
    CU_ASSERT_STRING_EQUAL(r.err.buf, ""); /* no bar when stderr is not a terminal */
    run_free(&r);

    /* --data @FILE */
    char dir[256], path[300];
    CU_ASSERT_EQUAL_FATAL(lt_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/data.json", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "{\"from\":\"file\"}", 15), 15);
    close(fd);
    char arg[320];
    snprintf(arg, sizeof(arg), "@%s", path);
    const char *from_file[] = {"publish", "orders", "--data", arg, NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, from_file), 0);
    json_t *data =
        json_object_get(json_array_get(json_object_get(body_of_last(), "events"), 0), "data");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(data, "from")), "file");
    run_free(&r);
    lt_rmdir(dir);
}

static void test_tasks_and_dlq(void)
{
    run_t r;
    const char *task[] = {"tasks", "orders-sub", "evt-9", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, task), 0);
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/subscriptions/orders-sub/tasks/evt-9");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "event_id "));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "evt-9"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "history:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "ATTEMPT"));
    run_free(&r);

    const char *dead[] = {"tasks", "orders-sub", "--state", "dead", "--limit", "7", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, dead), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "GET");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/subscriptions/orders-sub/dlq");
    CU_ASSERT_STRING_EQUAL(last_field("limit"), "7");
    CU_ASSERT_EQUAL(strncmp(r.out.buf, "EVENT_ID", 8), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "dead-1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "kaput"));
    run_free(&r);

    const char *replay_all[] = {"dlq", "replay", "orders-sub", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, replay_all), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "POST");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/subscriptions/orders-sub/dlq:replay");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(body_of_last(), "event_ids")), 0);
    CU_ASSERT_STRING_EQUAL(r.out.buf, "replayed 3\n");
    run_free(&r);

    const char *replay_two[] = {"dlq", "replay", "orders-sub", "a", "b", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, replay_two), 0);
    json_t *want = json_pack("{s:[s,s]}", "event_ids", "a", "b");
    CU_ASSERT_TRUE(json_equal(body_of_last(), want));
    json_decref(want);
    CU_ASSERT_STRING_EQUAL(r.out.buf, "replayed 2\n");
    run_free(&r);
}

static void test_canary(void)
{
    run_t r;
    const char *promote[] = {"canary", "promote", "orders-sub", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, promote), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "POST");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/subscriptions/orders-sub/canary:promote");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "subscription orders-sub: canary v2 promoted"));
    run_free(&r);

    const char *rollback[] = {"canary", "rollback", "orders-sub", "--json", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, rollback), 0);
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/subscriptions/orders-sub/canary:rollback");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "\"rolled_back\""));
    run_free(&r);

    const char *none[] = {"canary", "rollback", "plain", NULL};
    CU_ASSERT_NOT_EQUAL(run_ctl(&r, none), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err.buf, "has no canary"));
    CU_ASSERT_EQUAL(count_lines(r.err.buf), 1);
    run_free(&r);
}

static void test_schema_and_env_url(void)
{
    run_t r;
    const char *reg[] = {"schema", "register", "orders-value",          "--type",
                         "json",   "--schema", "{\"type\":\"object\"}", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, reg), 0);
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/subjects/orders-value/versions");
    json_t *want = json_pack("{s:s,s:s}", "schema", "{\"type\":\"object\"}", "schemaType", "JSON");
    CU_ASSERT_TRUE(json_equal(body_of_last(), want));
    json_decref(want);
    CU_ASSERT_STRING_EQUAL(r.out.buf, "subject orders-value: schema id 17\n");
    run_free(&r);

    /* MSM_FRONTEND_URL instead of --url. */
    const char *list[] = {"schema", "list", NULL};
    CU_ASSERT_EQUAL(run_ctl_env(&r, base_url, list), 0);
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/subjects");
    CU_ASSERT_STRING_EQUAL(r.out.buf, "orders-value\nclicks-value\n");
    run_free(&r);
}

static void test_cdc(void)
{
    run_t r;
    const char *list[] = {"cdc", "list", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, list), 0);
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/cdc/sources");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "RANGE_URL"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "http://db/changes"));
    run_free(&r);

    /* the source, then its partitions: cursors, lag, who pulls them */
    const char *get[] = {"cdc", "get", "db", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, get), 0);
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/cdc/sources/db/partitions");
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "topic"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "CURSOR"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "LAG"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "host-msm-scheduler-8081"));
    run_free(&r);
    const char *get_json[] = {"cdc", "get", "db", "--json", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, get_json), 0);
    json_t *j = json_loads(r.out.buf, 0, NULL);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(
                        json_array_get(json_object_get(j, "state"), 0), "lag")),
                    30);
    json_decref(j);
    run_free(&r);

    const char *notify[] = {"cdc", "notify", "db", "--partition", "p0", "--sequence", "151",
                            NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, notify), 0);
    CU_ASSERT_STRING_EQUAL(last_field("method"), "POST");
    CU_ASSERT_STRING_EQUAL(last_field("path"), "/v1/cdc/sources/db:notify");
    json_t *want = json_pack("{s:s,s:i}", "partition", "p0", "sequence", 151);
    CU_ASSERT_TRUE(json_equal(body_of_last(), want));
    json_decref(want);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out.buf, "notified of sequence 151"));
    run_free(&r);

    /* errors: one line, non-zero */
    const char *missing[] = {"cdc", "notify", "db", "--partition", "p0", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, missing), 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err.buf, "--sequence"));
    run_free(&r);
    const char *unknown[] = {"cdc", "get", "nope", NULL};
    CU_ASSERT_EQUAL(run_ctl(&r, unknown), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err.buf, "404 NOT_FOUND"));
    CU_ASSERT_EQUAL(count_lines(r.err.buf), 1);
    run_free(&r);
}

static CU_TestInfo msmctl_tests[] = {
    {"bad arguments: one line, non-zero", test_bad_arguments},
    {"topic create/list/delete", test_topics},
    {"sub create/list/stats/delete", test_subscriptions},
    {"publish: batches, rate, progress", test_publish},
    {"schedule put/list/get/delete", test_schedules},
    {"tasks and dlq", test_tasks_and_dlq},
    {"schema, MSM_FRONTEND_URL", test_schema_and_env_url},
    {"canary promote/rollback", test_canary},
    {"cdc list/get/notify", test_cdc},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"msmctl", suite_init, suite_clean, NULL, NULL, msmctl_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
