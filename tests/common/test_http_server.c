/* SPDX-License-Identifier: MIT */
/* The HTTP server on a real socket: the loop runs in the test thread, blocking libcurl (or raw
 * sockets) in helper threads drive it. Routing, errors, limits, deferred answers, concurrency,
 * keep-alive, built-in endpoints, malformed input and shutdown. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/http_server.h"
#include "msm/json.h"
#include "msm/version.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- fixture: a loop, a server on 127.0.0.1:0, a pipe that wakes the loop ---- */

static msm_loop_t *loop;
static msm_http_server_t *srv;
static int wake[2] = {-1, -1};
static char base[64];

static void drain(msm_loop_t *l, int fd, int events, void *opaque)
{
    (void)l, (void)events, (void)opaque;
    char buf[64];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

static void start_conf(msm_http_server_conf_t *conf)
{
    loop = msm_loop_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
    CU_ASSERT_EQUAL_FATAL(pipe2(wake, O_NONBLOCK | O_CLOEXEC), 0);
    msm_loop_watch(loop, wake[0], MSM_LOOP_READ, drain, NULL);
    conf->bind_address = "127.0.0.1";
    conf->port = 0;
    char err[256];
    srv = msm_http_server_new(loop, conf, err, sizeof(err));
    if (!srv)
        fprintf(stderr, "server: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    CU_ASSERT_TRUE(msm_http_server_port(srv) > 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%u", (unsigned)msm_http_server_port(srv));
}

static void start(void)
{
    msm_http_server_conf_t conf;
    msm_http_server_conf_init(&conf);
    conf.name = "test";
    start_conf(&conf);
}

static void stop(void)
{
    msm_http_server_free(srv);
    srv = NULL;
    msm_loop_unwatch(loop, wake[0]);
    close(wake[0]);
    close(wake[1]);
    msm_loop_free(loop);
    loop = NULL;
}

/* ---- client side: jobs run in threads while the loop runs here ---- */

typedef struct {
    void (*j_fn)(void *);
    void *j_arg;
    atomic_int j_done;
    pthread_t j_thread;
} job_t;

static void *job_main(void *p)
{
    job_t *j = p;
    j->j_fn(j->j_arg);
    atomic_store(&j->j_done, 1);
    ssize_t rc = write(wake[1], "x", 1);
    (void)rc;
    return NULL;
}

typedef struct {
    job_t *jobs;
    int n;
} jobs_t;

static int jobs_done(void *p)
{
    jobs_t *js = p;
    for (int i = 0; i < js->n; i++) {
        if (!atomic_load(&js->jobs[i].j_done))
            return 0;
    }
    return 1;
}

static void jobs_start(job_t *jobs, int n)
{
    for (int i = 0; i < n; i++) {
        atomic_init(&jobs[i].j_done, 0);
        CU_ASSERT_EQUAL_FATAL(pthread_create(&jobs[i].j_thread, NULL, job_main, &jobs[i]), 0);
    }
}

static void jobs_finish(job_t *jobs, int n)
{
    jobs_t js = {jobs, n};
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, jobs_done, &js, 30000), MSM_OK);
    for (int i = 0; i < n; i++)
        pthread_join(jobs[i].j_thread, NULL);
}

static void run_job(void (*fn)(void *), void *arg)
{
    job_t j = {.j_fn = fn, .j_arg = arg};
    jobs_start(&j, 1);
    jobs_finish(&j, 1);
}

typedef struct {
    /* request */
    const char *method;
    const char *path;
    const char *body;
    size_t body_len;
    const char *headers[8];
    int chunked;
    long timeout_ms;
    CURL *easy; /* reused when set (keep-alive) */
    const char *ca, *cert, *key; /* https: the CA to trust, a client certificate and key */
    /* result */
    CURLcode rc;
    long status;
    char *rbody;
    size_t rlen;
    char rhdrs[8192];
    size_t rhlen;
    long nconnects;
    double seconds;
    size_t sent; /* chunked upload position */
} call_t;

static size_t on_write(char *p, size_t sz, size_t n, void *ud)
{
    call_t *c = ud;
    size_t len = sz * n;
    char *b = realloc(c->rbody, c->rlen + len + 1);
    if (!b)
        return 0;
    memcpy(b + c->rlen, p, len);
    c->rbody = b;
    c->rlen += len;
    c->rbody[c->rlen] = '\0';
    return len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    call_t *c = ud;
    size_t len = sz * n;
    if (c->rhlen + len < sizeof(c->rhdrs)) {
        memcpy(c->rhdrs + c->rhlen, p, len);
        c->rhlen += len;
        c->rhdrs[c->rhlen] = '\0';
    }
    return len;
}

static size_t on_read(char *p, size_t sz, size_t n, void *ud)
{
    call_t *c = ud;
    size_t left = c->body_len - c->sent;
    size_t len = sz * n < 1000 ? sz * n : 1000; /* several chunks */
    if (len > left)
        len = left;
    memcpy(p, c->body + c->sent, len);
    c->sent += len;
    return len;
}

/* A response header's value (first match, case-insensitive name), or NULL. */
static const char *resp_header(const call_t *c, const char *name, char *out, size_t n)
{
    size_t nl = strlen(name);
    const char *line = c->rhdrs;
    while (line && *line) {
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t l = strcspn(v, "\r\n");
            if (l >= n)
                l = n - 1;
            memcpy(out, v, l);
            out[l] = '\0';
            return out;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NULL;
}

static void do_call(void *arg)
{
    call_t *c = arg;
    CURL *e = c->easy ? c->easy : curl_easy_init();
    char url[2048];
    snprintf(url, sizeof(url), "%s%s", base, c->path);
    free(c->rbody);
    c->rbody = NULL;
    c->rlen = c->rhlen = c->sent = 0;
    c->rhdrs[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms ? c->timeout_ms : 10000L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (c->ca)
        curl_easy_setopt(e, CURLOPT_CAINFO, c->ca);
    if (c->cert) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, c->key);
    }
    const char *method = c->method ? c->method : "GET";
    /* HTTPGET resets NOBODY, so it goes first. */
    curl_easy_setopt(e, CURLOPT_UPLOAD, 0L);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_NOBODY, strcmp(method, "HEAD") == 0 ? 1L : 0L);
    if (c->chunked) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, c);
    } else if (c->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)c->body_len);
    }
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, strcmp(method, "HEAD") == 0 ? NULL : method);
    struct curl_slist *hl = NULL;
    for (int i = 0; i < 8 && c->headers[i]; i++)
        hl = curl_slist_append(hl, c->headers[i]);
    if (c->chunked)
        hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    c->rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &c->status);
    curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &c->nconnects);
    curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &c->seconds);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hl);
    if (!c->easy)
        curl_easy_cleanup(e);
}

/* One blocking request, served by the loop meanwhile. */
static void call(call_t *c)
{
    run_job(do_call, c);
}

static void call_free(call_t *c)
{
    free(c->rbody);
    c->rbody = NULL;
}

static json_t *body_json(const call_t *c)
{
    return c->rbody ? json_loads(c->rbody, 0, NULL) : NULL;
}

/* Checks an API.md error body and returns it (caller decrefs). */
static void check_error(const call_t *c, long status, const char *code)
{
    char ct[128];
    CU_ASSERT_EQUAL(c->rc, CURLE_OK);
    CU_ASSERT_EQUAL(c->status, status);
    CU_ASSERT_PTR_NOT_NULL(resp_header(c, "Content-Type", ct, sizeof(ct)));
    CU_ASSERT_STRING_EQUAL(ct, "application/json");
    json_t *b = body_json(c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    json_t *err = json_object_get(b, "error");
    CU_ASSERT_TRUE(json_is_object(err));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(err, "code")), code);
    CU_ASSERT_TRUE(json_is_string(json_object_get(err, "message")));
    CU_ASSERT_TRUE(json_is_array(json_object_get(err, "details")));
    json_decref(b);
}

/* ---- handlers ---- */

static int handler_calls;

static void h_echo_route(msm_http_req_t *req, void *opaque)
{
    handler_calls++;
    json_t *o = json_pack("{s:s,s:s,s:s}", "route", (const char *)opaque, "pattern",
                          msm_http_req_route(req), "method", msm_http_req_method(req));
    const char *names[] = {"topic", "name", "event_id"};
    for (int i = 0; i < 3; i++) {
        const char *v = msm_http_req_param(req, names[i]);
        if (v)
            json_object_set_new(o, names[i], json_string(v));
    }
    msm_http_respond_json(req, 200, o);
}

static void add_routes(void)
{
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "PUT", "/v1/topics/{topic}", h_echo_route, "put"),
                    MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/v1/topics/{topic}", h_echo_route, "get"),
                    MSM_OK);
    CU_ASSERT_EQUAL(
        msm_http_server_route(srv, "POST", "/v1/topics/{topic}:publish", h_echo_route, "publish"),
        MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/v1/topics", h_echo_route, "list"),
                    MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/v1/subscriptions/{name}/tasks/{event_id}",
                                          h_echo_route, "task"),
                    MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/v1/topics/special", h_echo_route,
                                          "special"),
                    MSM_OK);
}

static void expect_route(const char *method, const char *path, const char *route,
                         const char *param, const char *value)
{
    call_t c = {.method = method, .path = path};
    call(&c);
    CU_ASSERT_EQUAL(c.rc, CURLE_OK);
    CU_ASSERT_EQUAL(c.status, 200);
    json_t *b = body_json(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "route")), route);
    if (param) {
        const char *got = json_string_value(json_object_get(b, param));
        CU_ASSERT_PTR_NOT_NULL(got);
        if (got)
            CU_ASSERT_STRING_EQUAL(got, value);
    }
    json_decref(b);
    call_free(&c);
}

static void test_routing(void)
{
    start();
    add_routes();
    expect_route("PUT", "/v1/topics/orders", "put", "topic", "orders");
    expect_route("GET", "/v1/topics/orders", "get", "topic", "orders");
    expect_route("POST", "/v1/topics/orders:publish", "publish", "topic", "orders");
    expect_route("GET", "/v1/topics", "list", NULL, NULL);
    expect_route("GET", "/v1/topics/special", "special", NULL, NULL); /* literal beats param */
    expect_route("GET", "/v1/topics/a%20b%2Fc", "get", "topic", "a b/c");
    expect_route("GET", "/v1/subscriptions/s1/tasks/e%3A1", "task", "name", "s1");
    expect_route("GET", "/v1/subscriptions/s1/tasks/e%3A1", "task", "event_id", "e:1");
    /* An empty parameter does not match the suffix route; the plain route takes it. */
    expect_route("PUT", "/v1/topics/:publish", "put", "topic", ":publish");

    /* HEAD is answered by the GET route, without a body. */
    call_t c = {.method = "HEAD", .path = "/v1/topics/orders"};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(c.rlen, 0);
    call_free(&c);

    /* Malformed escapes in a parameter: 400 without calling the handler. */
    handler_calls = 0;
    c = (call_t){.path = "/v1/topics/bad%zz"};
    call(&c);
    check_error(&c, 400, "INVALID_ARGUMENT");
    call_free(&c);
    c = (call_t){.path = "/v1/topics/nul%00"};
    call(&c);
    check_error(&c, 400, "INVALID_ARGUMENT");
    call_free(&c);
    CU_ASSERT_EQUAL(handler_calls, 0);

    /* Bad registrations. */
    const char *bad[] = {"no-slash", "", "/a/{", "/a/}", "/a/{x}{y}", "/a/{}", "/a/{x-y}",
                         "/a/x{y}z}", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", bad[i], h_echo_route, "x"),
                        MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "get", "/x", h_echo_route, "x"), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "PUT", "/v1/topics/{other}", h_echo_route, "x"),
                    MSM_ERR_EXISTS);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/healthz", h_echo_route, "x"),
                    MSM_ERR_EXISTS);
    /* A prefix around the parameter works too. */
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/v2/x-{id}.json", h_echo_route, "pre"),
                    MSM_OK);
    expect_route("GET", "/v2/x-7.json", "pre", NULL, NULL);
    stop();
}

static void test_not_found_and_method_not_allowed(void)
{
    start();
    add_routes();
    call_t c = {.path = "/nope"};
    call(&c);
    check_error(&c, 404, "NOT_FOUND");
    call_free(&c);
    c = (call_t){.path = "/v1/topics/a/b"};
    call(&c);
    check_error(&c, 404, "NOT_FOUND");
    call_free(&c);

    /* The suffix route wins the path, so GET is not allowed there (no fallback to {topic}). */
    char allow[128];
    c = (call_t){.method = "GET", .path = "/v1/topics/orders:publish"};
    call(&c);
    check_error(&c, 405, "METHOD_NOT_ALLOWED");
    CU_ASSERT_PTR_NOT_NULL(resp_header(&c, "Allow", allow, sizeof(allow)));
    CU_ASSERT_STRING_EQUAL(allow, "POST");
    call_free(&c);

    c = (call_t){.method = "DELETE", .path = "/v1/topics/orders"};
    call(&c);
    check_error(&c, 405, "METHOD_NOT_ALLOWED");
    CU_ASSERT_PTR_NOT_NULL(resp_header(&c, "Allow", allow, sizeof(allow)));
    CU_ASSERT_STRING_EQUAL(allow, "PUT, GET, HEAD");
    call_free(&c);

    /* A 404 with a body: the body is drained, the connection stays usable. */
    CURL *e = curl_easy_init();
    c = (call_t){.method = "POST", .path = "/nope", .body = "{\"a\":1}", .body_len = 7, .easy = e};
    call(&c);
    check_error(&c, 404, "NOT_FOUND");
    c.method = "GET";
    c.path = "/healthz";
    c.body = NULL;
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(c.nconnects, 0); /* reused */
    call_free(&c);
    curl_easy_cleanup(e);
    stop();
}

static void h_echo_request(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    const char *x = msm_http_req_query(req, "x");
    const char *y = msm_http_req_query(req, "y");
    const char *flag = msm_http_req_query(req, "flag");
    const char *empty = msm_http_req_query(req, "empty");
    const char *missing = msm_http_req_query(req, "missing");
    json_t *o = json_pack("{s:s?,s:s?,s:s?,s:s?,s:b,s:s?,s:s?,s:s,s:s,s:s,s:I,s:b}", "x", x, "y",
                          y, "flag", flag, "empty", empty, "missing_is_null", missing == NULL,
                          "custom", msm_http_req_header(req, "x-CUSTOM-header"), "absent",
                          msm_http_req_header(req, "X-Absent"), "remote",
                          msm_http_req_remote_addr(req), "method", msm_http_req_method(req),
                          "path", msm_http_req_path(req), "body_len", (json_int_t)len,
                          "nul_terminated", body[len] == '\0');
    msm_http_add_header(req, "X-Reply", "yes");
    msm_http_add_header(req, "Retry-After", "3");
    CU_ASSERT_EQUAL(msm_http_add_header(req, "Bad\r\nName", "v"), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_http_add_header(req, "X-Ok", "evil\r\nInjected: 1"), MSM_ERR_INVALID);
    msm_http_respond_json(req, 201, o);
    /* Answering twice is refused, not a crash. */
    CU_ASSERT_EQUAL(msm_http_respond(req, 200, "text/plain", "x", 1), MSM_ERR_INVALID);
}

static void test_query_and_headers(void)
{
    start();
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/echo", h_echo_request, NULL), MSM_OK);
    call_t c = {.path = "/echo?x=1&y=a%20b+c&flag&x=2&empty=&%zz=bad",
                .headers = {"X-Custom-Header: Hello There"}};
    call(&c);
    CU_ASSERT_EQUAL(c.rc, CURLE_OK);
    CU_ASSERT_EQUAL(c.status, 201);
    json_t *b = body_json(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "x")), "1"); /* the first */
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "y")), "a b c");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "flag")), "");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "empty")), "");
    CU_ASSERT_TRUE(json_is_true(json_object_get(b, "missing_is_null")));
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "custom")), "Hello There");
    CU_ASSERT_TRUE(json_is_null(json_object_get(b, "absent"))); /* s? packs NULL as null */
    CU_ASSERT_EQUAL(strncmp(json_string_value(json_object_get(b, "remote")), "127.0.0.1:", 10), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "method")), "GET");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "path")), "/echo");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "body_len")), 0);
    CU_ASSERT_TRUE(json_is_true(json_object_get(b, "nul_terminated")));
    json_decref(b);
    char v[64];
    CU_ASSERT_PTR_NOT_NULL(resp_header(&c, "x-reply", v, sizeof(v)));
    CU_ASSERT_STRING_EQUAL(v, "yes");
    CU_ASSERT_PTR_NOT_NULL(resp_header(&c, "Retry-After", v, sizeof(v)));
    CU_ASSERT_STRING_EQUAL(v, "3");
    CU_ASSERT_PTR_NULL(resp_header(&c, "Injected", v, sizeof(v)));
    call_free(&c);
    stop();
}

static int collect_header(void *opaque, const char *name, const char *value)
{
    json_t *arr = opaque;
    json_array_append_new(arr, json_pack("[s,s]", name, value));
    return 0;
}

static int stop_at_second(void *opaque, const char *name, const char *value)
{
    (void)name, (void)value;
    int *seen = opaque;
    return ++*seen == 2;
}

static void h_headers(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    json_t *all = json_array();
    size_t n = msm_http_req_headers(req, collect_header, all);
    int seen = 0;
    size_t stopped = msm_http_req_headers(req, stop_at_second, &seen);
    msm_http_respond_json(req, 200,
                          json_pack("{s:o,s:I,s:I,s:i}", "headers", all, "count", (json_int_t)n,
                                    "stopped", (json_int_t)stopped, "seen", seen));
}

static void test_header_iteration(void)
{
    start();
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/headers", h_headers, NULL), MSM_OK);
    call_t c = {.path = "/headers",
                .headers = {"Msm-Attr-kind: image", "X-Two: 2", "msm-attr-Size;"}};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    json_t *b = body_json(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    json_t *hs = json_object_get(b, "headers");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "count")),
                    (json_int_t)json_array_size(hs));
    CU_ASSERT_TRUE(json_array_size(hs) >= 4); /* Host and Accept from libcurl, then ours */
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "seen")), 2);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "stopped")), 2);
    /* Ours arrive in order, spelled as sent; an empty value is "". */
    int found = 0;
    size_t i;
    json_t *h;
    json_array_foreach(hs, i, h)
    {
        const char *name = json_string_value(json_array_get(h, 0));
        const char *value = json_string_value(json_array_get(h, 1));
        if (found == 0 && strcmp(name, "Msm-Attr-kind") == 0 && strcmp(value, "image") == 0)
            found = 1;
        else if (found == 1 && strcmp(name, "X-Two") == 0 && strcmp(value, "2") == 0)
            found = 2;
        else if (found == 2 && strcmp(name, "msm-attr-Size") == 0 && strcmp(value, "") == 0)
            found = 3;
    }
    CU_ASSERT_EQUAL(found, 3);
    json_decref(b);
    call_free(&c);
    stop();
}

static void h_json(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    msm_json_err_t e;
    msm_json_err_init(&e);
    json_t *in = msm_json_parse(body, len, &e);
    json_t *items = NULL;
    if (in) {
        msm_json_expect_object(&e, in);
        msm_json_get_array(&e, in, "items", MSM_JSON_REQUIRED, &items);
    }
    if (msm_json_err_count(&e)) {
        msm_http_respond_json(req, 400, msm_json_err_body(&e, NULL));
    } else {
        json_object_set_new(in, "count", json_integer((json_int_t)json_array_size(items)));
        json_object_set_new(in, "ctype", json_string(msm_http_req_header(req, "content-type")));
        msm_http_respond_json(req, 200, json_incref(in));
    }
    json_decref(in);
    msm_json_err_deinit(&e);
}

static void test_json_round_trip(void)
{
    start();
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "POST", "/json", h_json, NULL), MSM_OK);
    const char *in = "{\"items\":[1,\"two\",{\"three\":[3.5,null,true]}],\"name\":\"\\u00e9t\\u00e9\"}";
    call_t c = {.method = "POST",
                .path = "/json",
                .body = in,
                .body_len = strlen(in),
                .headers = {"Content-Type: application/json"}};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    json_t *got = body_json(&c);
    json_t *want = json_loads(in, 0, NULL);
    json_object_set_new(want, "count", json_integer(3));
    json_object_set_new(want, "ctype", json_string("application/json"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(got);
    CU_ASSERT_TRUE(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    call_free(&c);

    /* Invalid JSON: 400 with the API.md body and a detail carrying line/column. */
    c = (call_t){.method = "POST", .path = "/json", .body = "{\"items\":\n [1,}", .body_len = 15};
    call(&c);
    check_error(&c, 400, "INVALID_ARGUMENT");
    json_t *b = body_json(&c);
    json_t *d = json_array_get(json_object_get(json_object_get(b, "error"), "details"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d, "field")), "$");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(d, "line")), 2);
    json_decref(b);
    call_free(&c);

    /* Valid JSON, wrong shape. */
    c = (call_t){.method = "POST", .path = "/json", .body = "{\"items\":5}", .body_len = 11};
    call(&c);
    check_error(&c, 400, "INVALID_ARGUMENT");
    b = body_json(&c);
    d = json_array_get(json_object_get(json_object_get(b, "error"), "details"), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d, "field")), "items");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d, "description")),
                           "must be an array");
    json_decref(b);
    call_free(&c);
    stop();
}

static size_t last_body_len;
static void h_sink(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    handler_calls++;
    msm_http_req_body(req, &last_body_len);
    msm_http_respond(req, 200, "text/plain", "ok", 2);
}

static void test_body_too_large(void)
{
    msm_http_server_conf_t conf;
    msm_http_server_conf_init(&conf);
    conf.max_body_bytes = 2048;
    start_conf(&conf);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "POST", "/sink", h_sink, NULL), MSM_OK);
    char *big = malloc(10240);
    memset(big, 'a', 10240);
    handler_calls = 0;

    /* Without Expect: the body is drained (not kept), 413, and the connection survives. */
    CURL *e = curl_easy_init();
    call_t c = {.method = "POST", .path = "/sink", .body = big, .body_len = 10240, .easy = e,
                .headers = {"Expect:"}};
    call(&c);
    check_error(&c, 413, "PAYLOAD_TOO_LARGE");
    c.body_len = 2048; /* exactly at the limit: accepted, complete */
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(c.nconnects, 0);
    CU_ASSERT_EQUAL(last_body_len, 2048);
    CU_ASSERT_EQUAL(handler_calls, 1);
    call_free(&c);
    curl_easy_cleanup(e);

    /* With Expect: 100-continue: answered before the body is sent. */
    c = (call_t){.method = "POST", .path = "/sink", .body = big, .body_len = 10240,
                 .headers = {"Expect: 100-continue"}};
    call(&c);
    check_error(&c, 413, "PAYLOAD_TOO_LARGE");
    CU_ASSERT_TRUE(c.seconds < 0.9); /* curl did not wait out its 1 s Expect timeout */
    call_free(&c);

    /* Chunked, no Content-Length: noticed while receiving. */
    c = (call_t){.method = "POST", .path = "/sink", .body = big, .body_len = 10240, .chunked = 1,
                 .headers = {"Expect:"}};
    call(&c);
    check_error(&c, 413, "PAYLOAD_TOO_LARGE");
    call_free(&c);
    /* Chunked within the limit is assembled completely. */
    c = (call_t){.method = "POST", .path = "/sink", .body = big, .body_len = 1500, .chunked = 1,
                 .headers = {"Expect:"}};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(last_body_len, 1500);
    call_free(&c);
    CU_ASSERT_EQUAL(handler_calls, 2);
    free(big);
    stop();
}

/* ---- deferred answers ---- */

typedef struct {
    msm_timer_t l_timer;
    msm_http_req_t *l_req;
    size_t l_pending_seen;
} later_t;

static size_t pending_seen;
static int later_answered;

static void later_fire(msm_loop_t *l, void *opaque)
{
    (void)l;
    later_t *x = opaque;
    pending_seen = msm_http_server_pending(srv);
    msm_http_add_header(x->l_req, "X-Late", "1");
    msm_http_respond_json(x->l_req, 200, json_pack("{s:b}", "late", 1));
    later_answered++;
    free(x);
}

static void h_later(msm_http_req_t *req, void *opaque)
{
    later_t *x = calloc(1, sizeof(*x));
    msm_timer_init(&x->l_timer);
    x->l_req = req;
    msm_loop_timer_start(loop, &x->l_timer, (uint64_t)(uintptr_t)opaque, later_fire, x);
}

static void test_deferred_response(void)
{
    start();
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/later", h_later, (void *)50), MSM_OK);
    CURL *e = curl_easy_init();
    call_t c = {.path = "/later", .easy = e};
    pending_seen = 0;
    call(&c);
    CU_ASSERT_EQUAL(c.rc, CURLE_OK);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_TRUE(c.seconds >= 0.045);
    CU_ASSERT_EQUAL(pending_seen, 1);
    CU_ASSERT_EQUAL(msm_http_server_pending(srv), 0);
    char v[16];
    CU_ASSERT_PTR_NOT_NULL(resp_header(&c, "X-Late", v, sizeof(v)));
    CU_ASSERT_STRING_EQUAL(c.rbody, "{\"late\":true}");
    /* The connection is reusable after a deferred answer. */
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(c.nconnects, 0);
    call_free(&c);
    curl_easy_cleanup(e);
    stop();
}

static void test_client_gone_before_late_answer(void)
{
    start();
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/later", h_later, (void *)300), MSM_OK);
    later_answered = 0;
    call_t c = {.path = "/later", .timeout_ms = 80};
    call(&c);
    CU_ASSERT_EQUAL(c.rc, CURLE_OPERATION_TIMEDOUT);
    call_free(&c);
    CU_ASSERT_EQUAL(msm_http_server_pending(srv), 1); /* still valid, still waiting */
    msm_test_spin(loop, 400);                        /* the late answer meets a closed socket */
    CU_ASSERT_EQUAL(later_answered, 1);
    CU_ASSERT_EQUAL(msm_http_server_pending(srv), 0);
    msm_test_spin(loop, 50);
    msm_metric_t *g = NULL;
    CU_ASSERT_EQUAL(msm_metrics_gauge(msm_http_server_metrics(srv), "msm_http_requests_in_flight",
                                      NULL, NULL, &g),
                    MSM_OK);
    CU_ASSERT_DOUBLE_EQUAL(msm_gauge_value(msm_metric_solo(g)), 0, 1e-9);
    /* And the server still serves. */
    c = (call_t){.path = "/healthz"};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    call_free(&c);
    stop();
}

/* ---- concurrency ---- */

enum { CLIENT_THREADS = 4, PER_CLIENT = 50, TOTAL = CLIENT_THREADS * PER_CLIENT };

static msm_http_req_t *gathered[TOTAL];
static size_t ngathered, max_gathered;
static msm_timer_t gather_timer;

static void answer_gathered(void)
{
    for (size_t i = 0; i < ngathered; i++) {
        const char *id = msm_http_req_param(gathered[i], "id");
        msm_http_respond(gathered[i], 200, "text/plain", id, strlen(id));
    }
    ngathered = 0;
}

static void gather_timeout(msm_loop_t *l, void *opaque)
{
    (void)l, (void)opaque;
    answer_gathered(); /* fallback so a failure cannot hang the test */
}

static void h_gather(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    gathered[ngathered++] = req;
    if (ngathered > max_gathered)
        max_gathered = ngathered;
    /* The last one arriving answers everybody, from inside a handler. */
    if (ngathered == TOTAL) {
        msm_loop_timer_stop(loop, &gather_timer);
        answer_gathered();
    }
}

typedef struct {
    int mc_index;
    int mc_ok;
} multi_arg_t;

typedef struct {
    char buf[32];
    size_t len;
} small_buf_t;

static size_t small_write(char *p, size_t sz, size_t n, void *ud)
{
    small_buf_t *b = ud;
    size_t len = sz * n;
    if (b->len + len < sizeof(b->buf)) {
        memcpy(b->buf + b->len, p, len);
        b->len += len;
        b->buf[b->len] = '\0';
    }
    return len;
}

static void multi_client(void *arg)
{
    multi_arg_t *a = arg;
    CURLM *m = curl_multi_init();
    CURL *easy[PER_CLIENT];
    small_buf_t bufs[PER_CLIENT];
    char ids[PER_CLIENT][16];
    for (int i = 0; i < PER_CLIENT; i++) {
        char url[128];
        snprintf(ids[i], sizeof(ids[i]), "%d", a->mc_index * PER_CLIENT + i);
        snprintf(url, sizeof(url), "%s/gather/%s", base, ids[i]);
        bufs[i].len = 0;
        bufs[i].buf[0] = '\0';
        easy[i] = curl_easy_init();
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, small_write);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &bufs[i]);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT_MS, 15000L);
        curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(m, easy[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    a->mc_ok = 0;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left))) {
        if (msg->msg != CURLMSG_DONE || msg->data.result != CURLE_OK)
            continue;
        long status = 0;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        for (int i = 0; i < PER_CLIENT; i++) {
            if (easy[i] == msg->easy_handle && status == 200 && strcmp(bufs[i].buf, ids[i]) == 0)
                a->mc_ok++;
        }
    }
    for (int i = 0; i < PER_CLIENT; i++) {
        curl_multi_remove_handle(m, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    curl_multi_cleanup(m);
}

static void test_many_concurrent(void)
{
    start();
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/gather/{id}", h_gather, NULL), MSM_OK);
    ngathered = max_gathered = 0;
    msm_timer_init(&gather_timer);
    msm_loop_timer_start(loop, &gather_timer, 10000, gather_timeout, NULL);
    multi_arg_t args[CLIENT_THREADS];
    job_t jobs[CLIENT_THREADS];
    for (int i = 0; i < CLIENT_THREADS; i++) {
        args[i] = (multi_arg_t){i, 0};
        jobs[i] = (job_t){.j_fn = multi_client, .j_arg = &args[i]};
    }
    jobs_start(jobs, CLIENT_THREADS);
    jobs_finish(jobs, CLIENT_THREADS);
    msm_loop_timer_stop(loop, &gather_timer);
    CU_ASSERT_EQUAL(max_gathered, TOTAL); /* all 200 were in flight at once */
    for (int i = 0; i < CLIENT_THREADS; i++)
        CU_ASSERT_EQUAL(args[i].mc_ok, PER_CLIENT);
    CU_ASSERT_EQUAL(msm_http_server_pending(srv), 0);
    stop();
}

static void test_keep_alive(void)
{
    start();
    CURL *e = curl_easy_init();
    call_t c = {.path = "/healthz", .easy = e};
    long connects = 0;
    for (int i = 0; i < 5; i++) {
        call(&c);
        CU_ASSERT_EQUAL(c.status, 200);
        connects += c.nconnects;
    }
    CU_ASSERT_EQUAL(connects, 1); /* one connection for five requests */
    call_free(&c);
    curl_easy_cleanup(e);
    stop();
}

/* ---- built-in endpoints ---- */

static int ready_flag;
static int ready_cb(void *opaque, char *why, size_t n)
{
    (void)opaque;
    if (!ready_flag)
        snprintf(why, n, "redis down");
    return ready_flag;
}

static void test_builtins(void)
{
    msm_http_server_conf_t conf;
    msm_http_server_conf_init(&conf);
    msm_metrics_t *reg = msm_metrics_new();
    msm_metric_t *mine;
    CU_ASSERT_EQUAL(msm_metrics_counter(reg, "my_things_total", "Things.", NULL, &mine), MSM_OK);
    msm_counter_add(msm_metric_solo(mine), 7);
    json_t *cfg = json_pack("{s:{s:s},s:s}", "redis", "url", "redis://h:1", "password", "***");
    conf.name = "frontend";
    conf.metrics = reg;
    conf.ready = ready_cb;
    conf.config = cfg;
    start_conf(&conf);
    json_object_set_new(cfg, "later", json_true()); /* the server kept its own copy */
    CU_ASSERT_PTR_EQUAL(msm_http_server_metrics(srv), reg);

    call_t c = {.path = "/healthz"};
    for (int i = 0; i < 3; i++) {
        call(&c);
        CU_ASSERT_EQUAL(c.status, 200);
        CU_ASSERT_STRING_EQUAL(c.rbody, "{\"status\":\"ok\"}");
    }
    call_free(&c);
    c = (call_t){.path = "/nope"};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 404);
    call_free(&c);

    ready_flag = 1;
    c = (call_t){.path = "/readyz"};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_STRING_EQUAL(c.rbody, "{\"status\":\"ready\"}");
    ready_flag = 0;
    call(&c);
    check_error(&c, 503, "NOT_READY");
    CU_ASSERT_PTR_NOT_NULL(strstr(c.rbody, "\"message\":\"redis down\""));
    call_free(&c);

    c = (call_t){.path = "/metrics"};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    char ct[96];
    CU_ASSERT_PTR_NOT_NULL(resp_header(&c, "Content-Type", ct, sizeof(ct)));
    CU_ASSERT_STRING_EQUAL(ct, "text/plain; version=0.0.4; charset=utf-8");
    const char *want[] = {
        "# TYPE my_things_total counter\nmy_things_total 7\n",
        "# TYPE msm_http_requests_total counter\n",
        "msm_http_requests_total{method=\"GET\",route=\"/healthz\",code=\"200\"} 3\n",
        "msm_http_requests_total{method=\"GET\",route=\"unmatched\",code=\"404\"} 1\n",
        "msm_http_requests_total{method=\"GET\",route=\"/readyz\",code=\"200\"} 1\n",
        "msm_http_requests_total{method=\"GET\",route=\"/readyz\",code=\"503\"} 1\n",
        "# TYPE msm_http_request_duration_seconds histogram\n",
        "msm_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"} 3\n",
        "msm_http_request_duration_seconds_count{route=\"/healthz\"} 3\n",
        "msm_http_request_duration_seconds_count{route=\"/readyz\"} 2\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!strstr(c.rbody, want[i]))
            fprintf(stderr, "missing in /metrics: %s", want[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(c.rbody, want[i]));
    }
    call_free(&c);

    c = (call_t){.path = "/debug/info"};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    json_t *b = body_json(&c);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "name")), "frontend");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "version")), msm_version());
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(b, "git_sha")), msm_git_sha());
    json_t *want_cfg = json_pack("{s:{s:s},s:s}", "redis", "url", "redis://h:1", "password", "***");
    CU_ASSERT_TRUE(json_equal(json_object_get(b, "config"), want_cfg));
    json_decref(want_cfg);
    CU_ASSERT_TRUE(json_integer_value(json_object_get(b, "uptime_s")) >= 0);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(b, "pid")), getpid());
    json_decref(b);
    call_free(&c);
    stop();
    json_decref(cfg);
    msm_metrics_free(reg); /* borrowed: freed after the server */
}

/* ---- malformed input ---- */

static int raw_port;
static int raw_ok; /* cases whose answer was a status line or a close */

static void raw_send(const char *data, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)raw_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 3};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return;
    }
    ssize_t w = len ? send(fd, data, len, MSG_NOSIGNAL) : 0;
    (void)w;
    shutdown(fd, SHUT_WR);
    char buf[512];
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof(buf) - 1)
            got = 0; /* only the start matters; keep reading until close */
    }
    buf[got] = '\0';
    if (got == 0 || strncmp(buf, "HTTP/1.", 7) == 0 || strstr(buf, "HTTP/1."))
        raw_ok++;
    close(fd);
}

static void malformed_client(void *arg)
{
    (void)arg;
    static const char *const cases[] = {
        "THIS IS NOT HTTP\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET /healthz HTTP/9.9\r\n\r\n",
        "GET\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n\r\n",
        "GET /v1/x%zz%00%%/../.. HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "GET /healthz?a=%&b=%2&c=%zz HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /half",
        "",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        raw_send(cases[i], strlen(cases[i]));
    /* Binary noise with NULs, and a 100 KB request line. */
    char noise[64];
    for (size_t i = 0; i < sizeof(noise); i++)
        noise[i] = (char)(i * 37);
    raw_send(noise, sizeof(noise));
    size_t n = 100000;
    char *huge = malloc(n + 32);
    memcpy(huge, "GET /", 5);
    memset(huge + 5, 'a', n);
    memcpy(huge + 5 + n, " HTTP/1.1\r\n\r\n", 14);
    raw_send(huge, strlen(huge));
    free(huge);
}

static void test_malformed_requests(void)
{
    start();
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "POST", "/echo", h_echo_request, NULL), MSM_OK);
    raw_port = msm_http_server_port(srv);
    raw_ok = 0;
    run_job(malformed_client, NULL);
    CU_ASSERT_EQUAL(raw_ok, 13);
    call_t c = {.path = "/healthz"};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    call_free(&c);
    stop();
}

/* ---- shutdown ---- */

static int cancel_calls;
static void on_cancel(msm_http_req_t *req, void *opaque)
{
    (void)req, (void)opaque;
    cancel_calls++;
}

static void h_forever(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    msm_http_req_on_cancel(req, on_cancel, NULL);
}

static int one_pending(void *arg)
{
    (void)arg;
    return msm_http_server_pending(srv) == 2;
}

static void test_shutdown_answers_pending(void)
{
    start();
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/forever", h_forever, NULL), MSM_OK);
    call_t c1 = {.path = "/forever"}, c2 = {.path = "/forever"};
    job_t jobs[2] = {{.j_fn = do_call, .j_arg = &c1}, {.j_fn = do_call, .j_arg = &c2}};
    cancel_calls = 0;
    jobs_start(jobs, 2);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, one_pending, NULL, 5000), MSM_OK);
    msm_http_server_free(srv); /* answers both 503 before closing */
    srv = NULL;
    for (int i = 0; i < 2; i++)
        pthread_join(jobs[i].j_thread, NULL);
    CU_ASSERT_EQUAL(cancel_calls, 2);
    check_error(&c1, 503, "SHUTTING_DOWN");
    check_error(&c2, 503, "SHUTTING_DOWN");
    call_free(&c1);
    call_free(&c2);
    stop();
}

typedef struct {
    atomic_int q_phase; /* 1: first request done; 2: quiesced, go on */
    CURLcode q_rc_new;
    call_t q_call;
} quiesce_arg_t;

static void quiesce_client(void *arg)
{
    quiesce_arg_t *q = arg;
    CURL *e = curl_easy_init();
    q->q_call = (call_t){.path = "/healthz", .easy = e};
    do_call(&q->q_call);
    atomic_store(&q->q_phase, 1);
    ssize_t rc = write(wake[1], "x", 1);
    (void)rc;
    while (atomic_load(&q->q_phase) != 2)
        usleep(1000);
    q->q_call.path = "/readyz"; /* over the kept-alive connection */
    do_call(&q->q_call);
    curl_easy_cleanup(e);
    call_t fresh = {.path = "/healthz", .timeout_ms = 2000};
    do_call(&fresh); /* a new connection: refused */
    q->q_rc_new = fresh.rc;
    call_free(&fresh);
}

static int phase_one(void *arg)
{
    return atomic_load(&((quiesce_arg_t *)arg)->q_phase) == 1;
}

static void test_quiesce(void)
{
    start();
    quiesce_arg_t q = {0};
    atomic_init(&q.q_phase, 0);
    job_t j = {.j_fn = quiesce_client, .j_arg = &q};
    jobs_start(&j, 1);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, phase_one, &q, 5000), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_quiesce(srv), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_quiesce(srv), MSM_OK); /* idempotent */
    atomic_store(&q.q_phase, 2);
    jobs_finish(&j, 1);
    check_error(&q.q_call, 503, "SHUTTING_DOWN");
    CU_ASSERT_EQUAL(q.q_call.nconnects, 0);
    CU_ASSERT_EQUAL(q.q_rc_new, CURLE_COULDNT_CONNECT);
    call_free(&q.q_call);
    stop();
}

static void test_new_errors(void)
{
    start();
    msm_http_server_conf_t conf;
    msm_http_server_conf_init(&conf);
    conf.bind_address = "127.0.0.1";
    conf.port = msm_http_server_port(srv); /* taken */
    char err[256] = "";
    CU_ASSERT_PTR_NULL(msm_http_server_new(loop, &conf, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "bind 127.0.0.1:"));
    conf.port = 70000;
    CU_ASSERT_PTR_NULL(msm_http_server_new(loop, &conf, err, sizeof(err)));
    conf.port = 0;
    conf.bind_address = "not an address";
    CU_ASSERT_PTR_NULL(msm_http_server_new(loop, &conf, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not an address"));
    stop();
}

/* ---- limits: slow clients, oversize bodies ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int raw_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)raw_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

typedef struct {
    const char *sl_head;    /* sent at once; then one byte every 200 ms */
    double sl_closed_after; /* seconds until the server hung up; < 0: it never did */
    int sl_answered;        /* an HTTP answer arrived instead */
} slow_t;

static void slow_client(void *arg)
{
    slow_t *sl = arg;
    sl->sl_closed_after = -1;
    int fd = raw_connect();
    if (fd < 0)
        return;
    double t0 = now_s();
    send(fd, sl->sl_head, strlen(sl->sl_head), MSG_NOSIGNAL);
    while (now_s() - t0 < 6) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 200) > 0) {
            char buf[256];
            ssize_t r = recv(fd, buf, sizeof(buf), 0);
            if (r > 0 && strncmp(buf, "HTTP/", 5) == 0)
                sl->sl_answered = 1;
            if (r <= 0) {
                sl->sl_closed_after = now_s() - t0;
                break;
            }
            continue;
        }
        if (send(fd, "a", 1, MSG_NOSIGNAL) != 1) {
            sl->sl_closed_after = now_s() - t0;
            break;
        }
    }
    close(fd);
}

typedef struct {
    int nc_ok;
    double nc_slowest;
} normal_t;

/* Meanwhile, ordinary requests every 100 ms for two seconds. */
static void normal_clients(void *arg)
{
    normal_t *n = arg;
    for (int i = 0; i < 20; i++) {
        call_t c = {.path = "/healthz", .timeout_ms = 3000};
        do_call(&c);
        if (c.rc == CURLE_OK && c.status == 200)
            n->nc_ok++;
        if (c.seconds > n->nc_slowest)
            n->nc_slowest = c.seconds;
        call_free(&c);
        usleep(100 * 1000);
    }
}

/* A server with POST /sink for raw-socket clients (limits of 0: the defaults). */
static void start_sink(unsigned deadline_ms, size_t max_body)
{
    msm_http_server_conf_t conf;
    msm_http_server_conf_init(&conf);
    conf.request_deadline_ms = deadline_ms;
    conf.max_body_bytes = max_body;
    start_conf(&conf);
    raw_port = msm_http_server_port(srv);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "POST", "/sink", h_sink, NULL), MSM_OK);
    handler_calls = 0;
}

static int no_connections(void *arg)
{
    (void)arg;
    return msm_http_server_connections(srv) == 0;
}

static void test_slow_clients_dropped(void)
{
    start_sink(1000, 0);
    /* Slow headers (each byte resets the idle timeout), a slow body, a slow request line. */
    slow_t sl[3] = {{.sl_head = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "},
                    {.sl_head = "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"},
                    {.sl_head = "GET /"}};
    normal_t nc = {0};
    job_t jobs[4] = {{.j_fn = slow_client, .j_arg = &sl[0]},
                     {.j_fn = slow_client, .j_arg = &sl[1]},
                     {.j_fn = slow_client, .j_arg = &sl[2]},
                     {.j_fn = normal_clients, .j_arg = &nc}};
    jobs_start(jobs, 4);
    jobs_finish(jobs, 4);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_FALSE(sl[i].sl_answered);
        CU_ASSERT_TRUE(sl[i].sl_closed_after >= 0.9);
        CU_ASSERT_TRUE(sl[i].sl_closed_after < 2.5);
    }
    CU_ASSERT_EQUAL(nc.nc_ok, 20);
    CU_ASSERT_TRUE(nc.nc_slowest < 0.5);
    CU_ASSERT_EQUAL(handler_calls, 0);
    call_t c = {.path = "/metrics"};
    call(&c);
    CU_ASSERT_PTR_NOT_NULL(c.rbody ? strstr(c.rbody, "msm_http_requests_dropped_total{reason="
                                                     "\"deadline\"} 3")
                                   : NULL);
    call_free(&c);
    /* The dropped connections are gone (the last client's close may still be on its way). */
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, no_connections, NULL, 3000), MSM_OK);
    stop();
}

static void test_body_limit_default(void)
{
    start_sink(0, 0);
    size_t mib = (size_t)1024 * 1024;
    char *big = malloc(mib + 1);
    memset(big, 'a', mib + 1);
    call_t c = {
        .method = "POST", .path = "/sink", .body = big, .body_len = mib, .headers = {"Expect:"}};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_EQUAL(last_body_len, mib);
    c.body_len = mib + 1;
    call(&c);
    check_error(&c, 413, "PAYLOAD_TOO_LARGE");
    call_free(&c);
    free(big);
    stop();
}

typedef struct {
    const char *ob_head;
    int ob_chunked;     /* then stream 64 KiB chunks */
    size_t ob_sent;     /* body bytes the server took before hanging up */
    int ob_hung_up;     /* send failed with a reset or broken pipe */
    char ob_answer[64]; /* the start of what came back */
} oversize_t;

static void oversize_client(void *arg)
{
    oversize_t *ob = arg;
    int fd = raw_connect();
    if (fd < 0)
        return;
    send(fd, ob->ob_head, strlen(ob->ob_head), MSG_NOSIGNAL);
    if (ob->ob_chunked) {
        static char chunk[65536 + 16];
        int hl = snprintf(chunk, sizeof(chunk), "10000\r\n");
        memset(chunk + hl, 'b', 65536);
        memcpy(chunk + hl + 65536, "\r\n", 2);
        size_t len = (size_t)hl + 65536 + 2;
        while (ob->ob_sent < (size_t)64 * 1024 * 1024) {
            ssize_t w = send(fd, chunk, len, MSG_NOSIGNAL);
            if (w < 0) {
                ob->ob_hung_up = errno == EPIPE || errno == ECONNRESET;
                break;
            }
            ob->ob_sent += (size_t)w;
        }
    }
    ssize_t r = recv(fd, ob->ob_answer, sizeof(ob->ob_answer) - 1, 0);
    ob->ob_answer[r > 0 ? r : 0] = '\0';
    close(fd);
}

static void test_oversize_cut_off(void)
{
    start_sink(0, 2048);
    /* A declared 64 MiB: 413 at once, before any body byte is sent. */
    oversize_t cl = {.ob_head =
                         "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n"};
    run_job(oversize_client, &cl);
    CU_ASSERT_EQUAL(strncmp(cl.ob_answer, "HTTP/1.1 413", 12), 0);
    /* A chunked stream of 64 MiB: cut off as it arrives, far short of its end. */
    oversize_t ch = {.ob_head =
                         "POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                     .ob_chunked = 1};
    run_job(oversize_client, &ch);
    CU_ASSERT_TRUE(ch.ob_hung_up);
    CU_ASSERT_TRUE(ch.ob_sent < (size_t)32 * 1024 * 1024);
    CU_ASSERT_EQUAL(handler_calls, 0);
    stop();
}

/* ---- TLS and client certificates ---- */

static char tls_dir[256];

/* The path of @p name in tls_dir (one of a few static buffers, for several at once). */
static const char *tls_path(const char *name)
{
    static char bufs[6][320];
    static int next;
    char *b = bufs[next++ % 6];
    snprintf(b, sizeof(bufs[0]), "%s/%s", tls_dir, name);
    return b;
}

static int make_certs(void)
{
    return msm_test_certs_make(tls_dir, sizeof(tls_dir));
}

static void remove_certs(void)
{
    msm_test_certs_remove(tls_dir);
}

static void h_whoami(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    const char *cn = msm_http_req_client_subject(req);
    msm_http_respond(req, 200, "text/plain", cn ? cn : "-", strlen(cn ? cn : "-"));
}

/* An https server with @p client_ca (or none); base becomes https://127.0.0.1:port. */
static void start_tls(const char *client_ca)
{
    msm_http_server_conf_t conf;
    msm_http_server_conf_init(&conf);
    conf.tls_cert_file = tls_path("srv.pem");
    conf.tls_key_file = tls_path("srv.key");
    conf.tls_client_ca_file = client_ca;
    start_conf(&conf);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/whoami", h_whoami, NULL), MSM_OK);
    snprintf(base, sizeof(base), "https://127.0.0.1:%u", (unsigned)msm_http_server_port(srv));
}

static void test_tls_client_certificates(void)
{
    CU_ASSERT_EQUAL_FATAL(make_certs(), 0);
    char ca[128];
    snprintf(ca, sizeof(ca), "%s", tls_path("ca.pem"));
    start_tls(ca);

    /* A certificate the client CA signed: served, its CN is the subject. */
    call_t c = {.path = "/whoami", .ca = ca, .cert = tls_path("cli.pem"),
                .key = tls_path("cli.key")};
    call(&c);
    CU_ASSERT_EQUAL(c.rc, CURLE_OK);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_STRING_EQUAL(c.rbody ? c.rbody : "", "orders-service");
    call_free(&c);

    /* No certificate, or one from another CA: refused. */
    c = (call_t){.path = "/whoami", .ca = ca};
    call(&c);
    if (c.rc == CURLE_OK)
        check_error(&c, 401, "UNAUTHENTICATED");
    call_free(&c);
    c = (call_t){.path = "/whoami", .ca = ca, .cert = tls_path("rogue.pem"),
                 .key = tls_path("rogue.key")};
    call(&c);
    CU_ASSERT_NOT_EQUAL(c.status, 200);
    if (c.rc == CURLE_OK)
        check_error(&c, 401, "UNAUTHENTICATED");
    call_free(&c);

    /* Health probes carry no certificate and stay open. */
    c = (call_t){.path = "/healthz", .ca = ca};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    call_free(&c);

    /* Plain HTTP to the TLS port gets no answer. */
    snprintf(base, sizeof(base), "http://127.0.0.1:%u", (unsigned)msm_http_server_port(srv));
    c = (call_t){.path = "/healthz", .timeout_ms = 3000};
    call(&c);
    CU_ASSERT_NOT_EQUAL(c.rc, CURLE_OK);
    CU_ASSERT_NOT_EQUAL(c.status, 200);
    call_free(&c);
    stop();

    /* Without a client CA: HTTPS for anyone, and no subject even with a certificate. */
    start_tls(NULL);
    c = (call_t){.path = "/whoami", .ca = ca, .cert = tls_path("cli.pem"),
                 .key = tls_path("cli.key")};
    call(&c);
    CU_ASSERT_EQUAL(c.status, 200);
    CU_ASSERT_STRING_EQUAL(c.rbody ? c.rbody : "", "-");
    call_free(&c);
    stop();

    /* Bad settings are refused at start. */
    loop = msm_loop_new();
    msm_http_server_conf_t conf;
    msm_http_server_conf_init(&conf);
    conf.bind_address = "127.0.0.1";
    conf.tls_cert_file = tls_path("srv.pem");
    char err[256] = "";
    CU_ASSERT_PTR_NULL(msm_http_server_new(loop, &conf, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "tls.key"));
    conf.tls_key_file = tls_path("missing.key");
    CU_ASSERT_PTR_NULL(msm_http_server_new(loop, &conf, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "missing.key"));
    conf.tls_key_file = tls_path("ca.pem"); /* not a key */
    CU_ASSERT_PTR_NULL(msm_http_server_new(loop, &conf, err, sizeof(err)));
    msm_loop_free(loop);
    loop = NULL;
    remove_certs();
}

static int suite_init(void)
{
    return curl_global_init(CURL_GLOBAL_ALL) == CURLE_OK ? 0 : -1;
}

static int suite_clean(void)
{
    curl_global_cleanup();
    return 0;
}

static CU_TestInfo http_tests[] = {
    {"routing: params, suffix routes, precedence", test_routing},
    {"404 and 405 error bodies", test_not_found_and_method_not_allowed},
    {"query parameters and headers", test_query_and_headers},
    {"header iteration in arrival order", test_header_iteration},
    {"JSON round trip and 400 details", test_json_round_trip},
    {"413 for oversize bodies", test_body_too_large},
    {"deferred response from a timer", test_deferred_response},
    {"client gone before a late answer", test_client_gone_before_late_answer},
    {"200 requests in flight", test_many_concurrent},
    {"keep-alive reuse", test_keep_alive},
    {"healthz readyz metrics debug/info", test_builtins},
    {"malformed requests do not crash", test_malformed_requests},
    {"free answers pending requests 503", test_shutdown_answers_pending},
    {"quiesce stops accepting", test_quiesce},
    {"constructor errors", test_new_errors},
    {"slow clients dropped at the request deadline", test_slow_clients_dropped},
    {"1 MiB body limit by default", test_body_limit_default},
    {"oversize bodies cut off as they arrive", test_oversize_cut_off},
    {"TLS with client certificates", test_tls_client_certificates},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"http_server", suite_init, suite_clean, NULL, NULL, http_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
