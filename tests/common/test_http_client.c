/* SPDX-License-Identifier: MIT */
/* The HTTP client against our own HTTP server on the same loop (127.0.0.1, ephemeral port):
 * round trips, concurrency, keep-alive reuse, timeouts against a handler that never answers,
 * refused connections, the response cap, cancellation, and freeing with requests in flight. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/http_client.h"
#include "msm/http_server.h"
#include "msm/time.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- fixture: a loop, a server and a client on it ---- */

static msm_loop_t *loop;
static msm_http_server_t *srv;
static msm_http_client_t *cl;
static char base[64];
static int never_seen; /* requests that reached the handler that never answers */

/* "<method>|<X-Test>|<Content-Type>|<query i>|<body>", and two response headers. */
static void h_echo(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    const char *x = msm_http_req_header(req, "X-Test");
    const char *ct = msm_http_req_header(req, "Content-Type");
    const char *i = msm_http_req_query(req, "i");
    size_t n = len + 256;
    char *out = malloc(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    int w = snprintf(out, n, "%s|%s|%s|%s|%.*s", msm_http_req_method(req), x ? x : "-",
                     ct ? ct : "-", i ? i : "-", (int)len, body);
    msm_http_add_header(req, "Retry-After", "7");
    msm_http_add_header(req, "X-Echo", "yes");
    msm_http_respond(req, 200, "text/plain", out, (size_t)w);
    free(out);
}

/* A body of {n} bytes of 'a'. */
static void h_size(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    size_t n = strtoul(msm_http_req_param(req, "n"), NULL, 10);
    char *body = malloc(n + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    memset(body, 'a', n);
    msm_http_respond(req, 200, "text/plain", body, n);
    free(body);
}

static void h_status(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    int status = atoi(msm_http_req_param(req, "code"));
    msm_http_add_header(req, "Retry-After", "2");
    msm_http_respond(req, status, "text/plain", "status", 6);
}

/* Suspended for good: msm_http_server_free() answers it 503 at teardown. */
static void h_never(msm_http_req_t *req, void *opaque)
{
    (void)req, (void)opaque;
    never_seen++;
}

static unsigned server_idle_s; /* 0 = the server's default */
/* When set, the server speaks HTTPS with the test certificates in this directory
 * (msm_test_certs_make()) and requires client certificates its CA signed. */
static const char *server_tls_dir;

static void start_conf(msm_http_client_conf_t *cconf)
{
    never_seen = 0;
    loop = msm_loop_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
    msm_http_server_conf_t sconf;
    msm_http_server_conf_init(&sconf);
    sconf.bind_address = "127.0.0.1";
    sconf.name = "test";
    sconf.idle_timeout_s = server_idle_s;
    char cert[300], key[300], ca[300];
    if (server_tls_dir) {
        snprintf(cert, sizeof(cert), "%s/srv.pem", server_tls_dir);
        snprintf(key, sizeof(key), "%s/srv.key", server_tls_dir);
        snprintf(ca, sizeof(ca), "%s/ca.pem", server_tls_dir);
        sconf.tls_cert_file = cert;
        sconf.tls_key_file = key;
        sconf.tls_client_ca_file = ca;
    }
    char err[256];
    srv = msm_http_server_new(loop, &sconf, err, sizeof(err));
    if (!srv)
        fprintf(stderr, "server: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(srv);
    snprintf(base, sizeof(base), "%s://127.0.0.1:%u", server_tls_dir ? "https" : "http",
             (unsigned)msm_http_server_port(srv));
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/echo", h_echo, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "POST", "/echo", h_echo, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "PUT", "/echo", h_echo, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "DELETE", "/echo", h_echo, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/size/{n}", h_size, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/status/{code}", h_status, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_server_route(srv, "GET", "/never", h_never, NULL), MSM_OK);
    cl = msm_http_client_new(loop, cconf, err, sizeof(err));
    if (!cl)
        fprintf(stderr, "client: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cl);
}

static void start(void)
{
    msm_http_client_conf_t conf;
    msm_http_client_conf_init(&conf);
    start_conf(&conf);
}

static void stop(void)
{
    msm_http_client_free(cl);
    cl = NULL;
    msm_http_server_free(srv);
    srv = NULL;
    msm_loop_free(loop);
    loop = NULL;
}

/* ---- results, copied out of the callback ---- */

typedef struct {
    int calls; /* how many times the callback ran: must end at exactly 1 */
    int err;
    int curl_code;
    int status;
    char error[256];
    char *body;
    size_t body_len;
    char retry_after[32];
    char x_echo[32];
    size_t nheaders;
    uint64_t latency_ms;
    int reused;
    /* optional follow-up, run from inside the callback */
    void (*then)(msm_http_client_t *c, void *arg);
    void *then_arg;
} result_t;

static int in_submit;        /* set while msm_http_client_request() runs */
static int cb_inside_submit; /* callbacks seen while in_submit */

static void
on_done(msm_http_client_t *c, msm_http_call_t *call, const msm_http_result_t *res, void *opaque)
{
    (void)call;
    result_t *r = opaque;
    if (in_submit)
        cb_inside_submit++;
    r->calls++;
    r->err = res->err;
    r->curl_code = res->curl_code;
    r->status = res->status;
    snprintf(r->error, sizeof(r->error), "%s", res->error ? res->error : "");
    CU_ASSERT_TRUE((res->err == MSM_OK) == (res->error == NULL));
    CU_ASSERT_PTR_NOT_NULL(res->headers);
    CU_ASSERT_PTR_NOT_NULL(res->body);
    CU_ASSERT_EQUAL(res->body[res->body_len], '\0');
    free(r->body);
    r->body = malloc(res->body_len + 1);
    memcpy(r->body, res->body, res->body_len + 1);
    r->body_len = res->body_len;
    const char *v = msm_http_headers_get(res->headers, "retry-after");
    snprintf(r->retry_after, sizeof(r->retry_after), "%s", v ? v : "");
    v = msm_http_headers_get(res->headers, "X-ECHO");
    snprintf(r->x_echo, sizeof(r->x_echo), "%s", v ? v : "");
    r->nheaders = msm_http_headers_count(res->headers);
    r->latency_ms = res->latency_ms;
    r->reused = res->reused;
    if (r->then)
        r->then(c, r->then_arg);
}

static int submit(const msm_http_request_t *req, result_t *r, msm_http_call_t **call)
{
    in_submit = 1;
    int rc = msm_http_client_request(cl, req, on_done, r, call);
    in_submit = 0;
    return rc;
}

static int get(const char *path, result_t *r)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", base, path);
    msm_http_request_t req = {.url = url};
    return submit(&req, r, NULL);
}

typedef struct {
    result_t *r;
    int n;
} results_t;

static int all_done(void *arg)
{
    results_t *rs = arg;
    for (int i = 0; i < rs->n; i++) {
        if (rs->r[i].calls == 0)
            return 0;
    }
    return 1;
}

static int wait_all(result_t *r, int n, uint64_t timeout_ms)
{
    results_t rs = {r, n};
    return msm_loop_run_until(loop, all_done, &rs, timeout_ms);
}

static void results_free(result_t *r, int n)
{
    for (int i = 0; i < n; i++) {
        free(r[i].body);
        r[i].body = NULL;
    }
}

/* ---- tests ---- */

static void test_round_trip(void)
{
    start();
    cb_inside_submit = 0;
    char url[128];
    snprintf(url, sizeof(url), "%s/echo", base);

    msm_http_header_t h_get[] = {{"X-Test", "hello there"}};
    msm_http_request_t get_req = {.url = url, .headers = h_get, .n_headers = 1};
    result_t r_get = {0};
    CU_ASSERT_EQUAL(submit(&get_req, &r_get, NULL), MSM_OK);

    msm_http_header_t h_post[] = {{"Content-Type", "application/json"}, {"X-Test", "p"}};
    char body[] = "{\"n\":1}";
    msm_http_request_t post_req = {.method = "POST",
                                   .url = url,
                                   .headers = h_post,
                                   .n_headers = 2,
                                   .body = body,
                                   .body_len = strlen(body)};
    result_t r_post = {0};
    CU_ASSERT_EQUAL(submit(&post_req, &r_post, NULL), MSM_OK);
    memset(body, 'X', strlen(body)); /* copied by default: changing it now changes nothing */

    /* A borrowed body, with the method implied by it, and no Content-Type given. */
    static const char borrowed[] = "borrowed-bytes";
    msm_http_request_t put_req = {.method = "PUT",
                                  .url = url,
                                  .body = borrowed,
                                  .body_len = sizeof(borrowed) - 1,
                                  .flags = MSM_HTTP_BODY_BORROW};
    result_t r_put = {0};
    CU_ASSERT_EQUAL(submit(&put_req, &r_put, NULL), MSM_OK);
    msm_http_request_t implied_req = {.url = url, .body = "b", .body_len = 1};
    result_t r_implied = {0};
    CU_ASSERT_EQUAL(submit(&implied_req, &r_implied, NULL), MSM_OK);
    msm_http_request_t del_req = {.method = "DELETE", .url = url};
    result_t r_del = {0};
    CU_ASSERT_EQUAL(submit(&del_req, &r_del, NULL), MSM_OK);
    msm_http_request_t head_req = {.method = "HEAD", .url = url};
    result_t r_head = {0};
    CU_ASSERT_EQUAL(submit(&head_req, &r_head, NULL), MSM_OK);
    result_t r_429 = {0};
    CU_ASSERT_EQUAL(get("/status/429", &r_429), MSM_OK);
    result_t r_404 = {0};
    CU_ASSERT_EQUAL(get("/nowhere", &r_404), MSM_OK);

    /* Nothing can have completed yet: completions only come from the loop. */
    CU_ASSERT_EQUAL(r_get.calls + r_post.calls + r_put.calls + r_del.calls, 0);
    CU_ASSERT_EQUAL(msm_http_client_pending(cl), 8);
    result_t *all[] = {&r_get, &r_post, &r_put, &r_implied, &r_del, &r_head, &r_429, &r_404};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        CU_ASSERT_EQUAL(wait_all(all[i], 1, 5000), MSM_OK);
        CU_ASSERT_EQUAL(all[i]->calls, 1);
        CU_ASSERT_EQUAL(all[i]->err, MSM_OK);
    }

    CU_ASSERT_EQUAL(r_get.status, 200);
    CU_ASSERT_STRING_EQUAL(r_get.body, "GET|hello there|-|-|");
    CU_ASSERT_STRING_EQUAL(r_get.retry_after, "7"); /* looked up in lower case */
    CU_ASSERT_STRING_EQUAL(r_get.x_echo, "yes");
    CU_ASSERT_TRUE(r_get.nheaders >= 3);
    CU_ASSERT_STRING_EQUAL(r_post.body, "POST|p|application/json|-|{\"n\":1}");
    CU_ASSERT_STRING_EQUAL(r_put.body, "PUT|-|-|-|borrowed-bytes");
    CU_ASSERT_STRING_EQUAL(r_implied.body, "POST|-|-|-|b");
    CU_ASSERT_STRING_EQUAL(r_del.body, "DELETE|-|-|-|");
    CU_ASSERT_EQUAL(r_head.status, 200);
    CU_ASSERT_EQUAL(r_head.body_len, 0);
    CU_ASSERT_EQUAL(r_429.status, 429); /* a status is not an error */
    CU_ASSERT_STRING_EQUAL(r_429.retry_after, "2");
    CU_ASSERT_EQUAL(r_404.status, 404);
    CU_ASSERT_EQUAL(msm_http_client_pending(cl), 0);
    CU_ASSERT_EQUAL(cb_inside_submit, 0);

    msm_http_client_stats_t st;
    msm_http_client_stats(cl, &st);
    CU_ASSERT_EQUAL(st.started, 8);
    CU_ASSERT_EQUAL(st.completed, 8);
    CU_ASSERT_EQUAL(st.failed, 0);
    CU_ASSERT_TRUE(st.connections_opened >= 1);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        results_free(all[i], 1);
    stop();
}

/* Walks the response headers with the index API while they are valid (in the callback). */
typedef struct {
    int calls;
    int status;
    size_t count;
    int x_echo_at;   /* index of X-Echo, -1 when absent */
    int past_end;    /* msm_http_headers_at(count) said NOTFOUND */
    int absent_null; /* lookup of a missing name gave NULL */
    int content_type_ok;
} walk_t;

static void
on_walk(msm_http_client_t *c, msm_http_call_t *call, const msm_http_result_t *res, void *opaque)
{
    (void)c, (void)call;
    walk_t *w = opaque;
    w->calls++;
    w->status = res->status;
    w->count = msm_http_headers_count(res->headers);
    w->x_echo_at = -1;
    for (size_t i = 0; i < w->count; i++) {
        const char *name = NULL, *value = NULL;
        CU_ASSERT_EQUAL(msm_http_headers_at(res->headers, i, &name, &value), MSM_OK);
        if (name && strcmp(name, "X-Echo") == 0 && strcmp(value, "yes") == 0)
            w->x_echo_at = (int)i;
    }
    const char *name, *value;
    w->past_end = msm_http_headers_at(res->headers, w->count, &name, &value) == MSM_ERR_NOTFOUND;
    w->absent_null = msm_http_headers_get(res->headers, "X-Absent") == NULL;
    const char *ct = msm_http_headers_get(res->headers, "content-type");
    w->content_type_ok = ct && strcmp(ct, "text/plain") == 0;
}

static void test_headers_accessor(void)
{
    start();
    char url[128];
    snprintf(url, sizeof(url), "%s/echo", base);
    /* An explicit Expect: 100-continue brings an interim response first; only the final
     * response's headers may be reported. */
    msm_http_header_t h[] = {{"Expect", "100-continue"}};
    msm_http_request_t req = {
        .url = url, .headers = h, .n_headers = 1, .body = "body", .body_len = 4};
    walk_t w = {0};
    CU_ASSERT_EQUAL(msm_http_client_request(cl, &req, on_walk, &w, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &w.calls, 5000), 0);
    CU_ASSERT_EQUAL(w.calls, 1);
    CU_ASSERT_EQUAL(w.status, 200);
    CU_ASSERT_TRUE(w.count >= 3);
    CU_ASSERT_TRUE(w.x_echo_at >= 0);
    CU_ASSERT_TRUE(w.past_end);
    CU_ASSERT_TRUE(w.absent_null);
    CU_ASSERT_TRUE(w.content_type_ok);
    stop();
}

/* A host name goes through curl's resolver (threaded when available) on the loop. */
static void test_host_name(void)
{
    start();
    char url[128];
    snprintf(url, sizeof(url), "http://localhost:%u/echo?i=host",
             (unsigned)msm_http_server_port(srv));
    msm_http_request_t req = {.url = url};
    result_t r = {0};
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(&r, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(r.err, MSM_OK);
    CU_ASSERT_STRING_EQUAL(r.body, "GET|-|-|host|");
    if (!msm_http_client_async_dns())
        fprintf(stderr, "(libcurl resolves names blocking) ");
    results_free(&r, 1);
    msm_http_client_free(NULL); /* harmless */
    stop();
}

static void test_invalid_requests(void)
{
    start();
    cb_inside_submit = 0;
    char url[128];
    snprintf(url, sizeof(url), "%s/echo", base);
    result_t r = {0};
    msm_http_request_t req = {.url = url, .method = "get"};
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_ERR_INVALID);
    req.method = "GET";
    req.url = "ftp://127.0.0.1/x";
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_ERR_INVALID);
    req.url = NULL;
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_ERR_INVALID);
    req.url = url;
    msm_http_header_t bad_value[] = {{"X-Ok", "evil\r\nInjected: 1"}};
    req.headers = bad_value;
    req.n_headers = 1;
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_ERR_INVALID);
    msm_http_header_t bad_name[] = {{"Bad Name", "v"}};
    req.headers = bad_name;
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_ERR_INVALID);
    req.headers = NULL;
    req.n_headers = 0;
    req.method = "HEAD";
    req.body = "x";
    req.body_len = 1;
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_http_client_request(cl, &req, NULL, NULL, NULL), MSM_ERR_INVALID);

    /* A URL curl cannot parse fails later, through the callback. */
    req.method = NULL;
    req.body = NULL;
    req.body_len = 0;
    req.url = "http://[::1/x";
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_OK);
    CU_ASSERT_EQUAL(r.calls, 0);
    CU_ASSERT_EQUAL(wait_all(&r, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(r.calls, 1);
    CU_ASSERT_EQUAL(r.err, MSM_ERR_INVALID);
    CU_ASSERT_NOT_EQUAL(r.error[0], '\0');
    CU_ASSERT_EQUAL(cb_inside_submit, 0);
    msm_http_client_stats_t st;
    msm_http_client_stats(cl, &st);
    CU_ASSERT_EQUAL(st.started, 1);
    CU_ASSERT_EQUAL(st.failed, 1);
    results_free(&r, 1);
    stop();
}

#define CONCURRENT 200

static void test_many_concurrent(void)
{
    start();
    cb_inside_submit = 0;
    result_t *r = calloc(CONCURRENT, sizeof(*r));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    for (int i = 0; i < CONCURRENT; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/echo?i=%d", i);
        CU_ASSERT_EQUAL(get(path, &r[i]), MSM_OK);
    }
    CU_ASSERT_EQUAL(msm_http_client_pending(cl), CONCURRENT);
    CU_ASSERT_EQUAL(wait_all(r, CONCURRENT, 20000), MSM_OK);
    int ok = 0;
    for (int i = 0; i < CONCURRENT; i++) {
        char want[64];
        snprintf(want, sizeof(want), "GET|-|-|%d|", i);
        CU_ASSERT_EQUAL(r[i].calls, 1);
        if (r[i].err == MSM_OK && r[i].status == 200 && r[i].body && strcmp(r[i].body, want) == 0)
            ok++;
    }
    CU_ASSERT_EQUAL(ok, CONCURRENT);
    CU_ASSERT_EQUAL(cb_inside_submit, 0);
    msm_http_client_stats_t st;
    msm_http_client_stats(cl, &st);
    CU_ASSERT_EQUAL(st.completed, CONCURRENT);
    CU_ASSERT_TRUE(st.connections_opened <= 64); /* the per-host default */
    results_free(r, CONCURRENT);
    free(r);
    stop();
}

/* Sequential requests, each submitted from the previous one's callback. */
typedef struct {
    result_t r;
    int left;
    int reused;
    int ok;
} chain_t;

static void chain_next(msm_http_client_t *c, void *arg);

static void chain_submit(msm_http_client_t *c, chain_t *ch)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/echo?i=%d", base, ch->left);
    msm_http_request_t req = {.url = url};
    ch->r.calls = 0;
    ch->r.then = chain_next;
    ch->r.then_arg = ch;
    in_submit = 1;
    CU_ASSERT_EQUAL(msm_http_client_request(c, &req, on_done, &ch->r, NULL), MSM_OK);
    in_submit = 0;
}

static void chain_next(msm_http_client_t *c, void *arg)
{
    chain_t *ch = arg;
    if (ch->r.err == MSM_OK && ch->r.status == 200)
        ch->ok++;
    ch->reused += ch->r.reused;
    if (--ch->left > 0)
        chain_submit(c, ch);
}

static int chain_done(void *arg)
{
    return ((chain_t *)arg)->left == 0;
}

static void test_keep_alive(void)
{
    start();
    cb_inside_submit = 0;
    chain_t ch = {.left = 50};
    chain_submit(cl, &ch);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, chain_done, &ch, 10000), MSM_OK);
    CU_ASSERT_EQUAL(ch.ok, 50);
    CU_ASSERT_TRUE(ch.reused >= 48);
    msm_http_client_stats_t st;
    msm_http_client_stats(cl, &st);
    CU_ASSERT_EQUAL(st.completed, 50);
    CU_ASSERT_TRUE(st.connections_opened >= 1 && st.connections_opened <= 2);
    CU_ASSERT_EQUAL(st.connections_reused, (uint64_t)ch.reused);
    CU_ASSERT_EQUAL(cb_inside_submit, 0);
    results_free(&ch.r, 1);
    stop();
}

static void test_timeout(void)
{
    start();
    char url[128];
    snprintf(url, sizeof(url), "%s/never", base);
    msm_http_request_t req = {.url = url, .timeout_ms = 300};
    result_t slow = {0};
    uint64_t t0 = msm_time_mono_ms();
    CU_ASSERT_EQUAL(submit(&req, &slow, NULL), MSM_OK);
    result_t fast[10] = {{0}};
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(get("/echo", &fast[i]), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(fast, 10, 5000), MSM_OK);
    for (int i = 0; i < 10; i++) {
        CU_ASSERT_EQUAL(fast[i].err, MSM_OK);
        CU_ASSERT_EQUAL(fast[i].status, 200);
    }
    CU_ASSERT_EQUAL(slow.calls, 0); /* still waiting while the others are done */
    CU_ASSERT_EQUAL(wait_all(&slow, 1, 5000), MSM_OK);
    uint64_t took = msm_time_mono_ms() - t0;
    CU_ASSERT_EQUAL(never_seen, 1);
    CU_ASSERT_EQUAL(slow.calls, 1);
    CU_ASSERT_EQUAL(slow.err, MSM_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(slow.curl_code, 28); /* CURLE_OPERATION_TIMEDOUT */
    CU_ASSERT_EQUAL(slow.status, 0);
    CU_ASSERT_NOT_EQUAL(slow.error[0], '\0');
    CU_ASSERT_TRUE(slow.latency_ms >= 290 && slow.latency_ms < 1500);
    CU_ASSERT_TRUE(took >= 290 && took < 1500);
    msm_http_client_stats_t st;
    msm_http_client_stats(cl, &st);
    CU_ASSERT_EQUAL(st.timeouts, 1);
    CU_ASSERT_EQUAL(st.failed, 1);
    CU_ASSERT_EQUAL(st.completed, 10);
    /* The client's default timeout applies when the request sets none. */
    msm_http_client_free(cl);
    msm_http_client_conf_t conf;
    msm_http_client_conf_init(&conf);
    conf.timeout_ms = 200;
    char err[128];
    cl = msm_http_client_new(loop, &conf, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cl);
    result_t dflt = {0};
    CU_ASSERT_EQUAL(get("/never", &dflt), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(&dflt, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(dflt.err, MSM_ERR_TIMEOUT);
    CU_ASSERT_TRUE(dflt.latency_ms >= 190 && dflt.latency_ms < 1500);
    results_free(fast, 10);
    results_free(&slow, 1);
    results_free(&dflt, 1);
    stop();
}

/* A port that refuses connections: bound, never listening, so nobody else can take it. */
static int refusing_port(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (*fd < 0 || bind(*fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(*fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    return ntohs(a.sin_port);
}

static void test_connection_refused(void)
{
    start();
    int fd;
    int port = refusing_port(&fd);
    CU_ASSERT_FATAL(port > 0);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);
    msm_http_request_t req = {.url = url, .method = "POST", .body = "x", .body_len = 1};
    result_t r = {0};
    result_t ok = {0};
    uint64_t t0 = msm_time_mono_ms();
    CU_ASSERT_EQUAL(submit(&req, &r, NULL), MSM_OK);
    CU_ASSERT_EQUAL(get("/echo", &ok), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(&r, 1, 5000), MSM_OK);
    uint64_t took = msm_time_mono_ms() - t0;
    CU_ASSERT_EQUAL(r.calls, 1);
    CU_ASSERT_EQUAL(r.err, MSM_ERR_IO);
    CU_ASSERT_EQUAL(r.curl_code, 7); /* CURLE_COULDNT_CONNECT */
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_EQUAL(r.reused, 0);
    CU_ASSERT_NOT_EQUAL(r.error[0], '\0');
    CU_ASSERT_TRUE(took < 1000);
    CU_ASSERT_EQUAL(wait_all(&ok, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(ok.status, 200);
    close(fd);
    results_free(&r, 1);
    results_free(&ok, 1);
    stop();
}

/* A client with a netpolicy judges the address it connects to: a denied one is never
 * connected to and the request fails with MSM_ERR_DENIED and the reason. */
static void test_netpolicy(void)
{
    start();
    char err[256] = "";
    msm_netpolicy_t *np = msm_netpolicy_new("127.0.0.1/32", NULL, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(np);
    msm_http_client_conf_t conf;
    msm_http_client_conf_init(&conf);
    conf.netpolicy = np;
    msm_http_client_t *pc = msm_http_client_new(loop, &conf, err, sizeof(err));
    msm_netpolicy_free(np); /* the client keeps its own copy */
    CU_ASSERT_PTR_NOT_NULL_FATAL(pc);
    unsigned port = (unsigned)msm_http_server_port(srv);
    char ok_url[128], denied_url[128];
    snprintf(ok_url, sizeof(ok_url), "http://127.0.0.1:%u/echo?i=np", port);
    snprintf(denied_url, sizeof(denied_url), "http://[::ffff:127.0.0.2]:%u/echo", port);
    msm_http_request_t ok_req = {.url = ok_url}, denied_req = {.url = denied_url};
    result_t r[2] = {{0}, {0}};
    CU_ASSERT_EQUAL(msm_http_client_request(pc, &ok_req, on_done, &r[0], NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_client_request(pc, &denied_req, on_done, &r[1], NULL), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(r, 2, 5000), MSM_OK);
    CU_ASSERT_EQUAL(r[0].err, MSM_OK);
    CU_ASSERT_EQUAL(r[0].status, 200);
    CU_ASSERT_EQUAL(r[1].err, MSM_ERR_DENIED);
    CU_ASSERT_EQUAL(r[1].status, 0);
    CU_ASSERT_STRING_EQUAL(r[1].error, "address 127.0.0.2 is denied (loopback); allow it in "
                                       "router.allow_networks");
    results_free(r, 2);
    msm_http_client_free(pc);

    char host[64];
    CU_ASSERT_EQUAL(msm_http_url_host("http://u:p@example.com:80/x?y#z", host, sizeof(host)),
                    MSM_OK);
    CU_ASSERT_STRING_EQUAL(host, "example.com");
    CU_ASSERT_EQUAL(msm_http_url_host("https://[fe80::1]:8443/", host, sizeof(host)), MSM_OK);
    CU_ASSERT_STRING_EQUAL(host, "fe80::1");
    CU_ASSERT_EQUAL(msm_http_url_host("http://10.0.0.1/", host, sizeof(host)), MSM_OK);
    CU_ASSERT_STRING_EQUAL(host, "10.0.0.1");
    CU_ASSERT_EQUAL(msm_http_url_host("http://", host, sizeof(host)), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_http_url_host("http://a-long-host-name.example/", host, 8),
                    MSM_ERR_TOOLARGE);
    stop();
}

static void test_response_cap(void)
{
    msm_http_client_conf_t conf;
    msm_http_client_conf_init(&conf);
    conf.max_response_bytes = 10000;
    start_conf(&conf);
    result_t at = {0}, over = {0}, big = {0}, after = {0}, per_req = {0};
    CU_ASSERT_EQUAL(get("/size/10000", &at), MSM_OK);
    CU_ASSERT_EQUAL(get("/size/10001", &over), MSM_OK);
    CU_ASSERT_EQUAL(get("/size/5000000", &big), MSM_OK);
    char url[128];
    snprintf(url, sizeof(url), "%s/size/200", base);
    msm_http_request_t req = {.url = url, .max_response_bytes = 100};
    CU_ASSERT_EQUAL(submit(&req, &per_req, NULL), MSM_OK);
    result_t *all[] = {&at, &over, &big, &per_req};
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(wait_all(all[i], 1, 10000), MSM_OK);
    CU_ASSERT_EQUAL(at.err, MSM_OK);
    CU_ASSERT_EQUAL(at.body_len, 10000);
    CU_ASSERT_EQUAL(at.body[9999], 'a');
    CU_ASSERT_EQUAL(over.err, MSM_ERR_TOOLARGE);
    CU_ASSERT_EQUAL(over.status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(over.error, "over 10000 bytes"));
    CU_ASSERT_TRUE(over.body_len <= 10000);
    CU_ASSERT_EQUAL(big.err, MSM_ERR_TOOLARGE);
    CU_ASSERT_TRUE(big.body_len <= 10000);
    CU_ASSERT_EQUAL(per_req.err, MSM_ERR_TOOLARGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(per_req.error, "over 100 bytes"));
    /* The client goes on working. */
    CU_ASSERT_EQUAL(get("/echo", &after), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(&after, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(after.err, MSM_OK);
    msm_http_client_stats_t st;
    msm_http_client_stats(cl, &st);
    CU_ASSERT_EQUAL(st.failed, 3);
    CU_ASSERT_EQUAL(st.completed, 2);
    results_free(&at, 1);
    results_free(&over, 1);
    results_free(&big, 1);
    results_free(&after, 1);
    results_free(&per_req, 1);
    stop();
}

static int never_reached(void *arg)
{
    return never_seen >= *(int *)arg;
}

static void test_cancel(void)
{
    start();
    char url[128];
    snprintf(url, sizeof(url), "%s/never", base);
    msm_http_request_t req = {.url = url,
                              .body = "borrowed",
                              .body_len = 8,
                              .flags = MSM_HTTP_BODY_BORROW,
                              .method = "GET"};
    result_t early = {0}, sent = {0}, ok = {0};
    msm_http_call_t *c_early = NULL, *c_sent = NULL;
    /* Cancelled before the loop ever ran: nothing is sent. */
    CU_ASSERT_EQUAL(submit(&req, &early, &c_early), MSM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c_early);
    msm_http_call_cancel(c_early);
    /* Cancelled once the server holds it. */
    CU_ASSERT_EQUAL(submit(&req, &sent, &c_sent), MSM_OK);
    int one = 1;
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, never_reached, &one, 5000), MSM_OK);
    CU_ASSERT_EQUAL(msm_http_client_pending(cl), 1);
    msm_http_call_cancel(c_sent);
    CU_ASSERT_EQUAL(msm_http_client_pending(cl), 0);
    CU_ASSERT_EQUAL(get("/echo", &ok), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(&ok, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(ok.err, MSM_OK);
    msm_test_spin(loop, 200);
    CU_ASSERT_EQUAL(early.calls, 0);
    CU_ASSERT_EQUAL(sent.calls, 0);
    CU_ASSERT_EQUAL(never_seen, 1);
    msm_http_client_stats_t st;
    msm_http_client_stats(cl, &st);
    CU_ASSERT_EQUAL(st.cancelled, 2);
    CU_ASSERT_EQUAL(st.started, 3);
    CU_ASSERT_EQUAL(st.completed, 1);
    CU_ASSERT_EQUAL(st.failed, 0);
    msm_http_client_free(cl);
    cl = NULL;
    CU_ASSERT_EQUAL(early.calls + sent.calls, 0);
    results_free(&ok, 1);
    stop();
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The server closes an idle kept-alive connection; the next request notices and opens a
 * new one instead of failing. The idle connection stays watched by the loop (no epoll_ctl
 * per reuse): once the server closes it, the loop must let go of it, not report the closed
 * socket at every turn. */
static void test_server_closed_idle_connection(void)
{
    server_idle_s = 1;
    start();
    server_idle_s = 0;
    result_t a = {0}, b = {0}, c = {0};
    CU_ASSERT_EQUAL(get("/echo", &a), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(&a, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(a.err, MSM_OK);
    double cpu0 = cpu_seconds();
    msm_test_spin(loop, 2500);
    double spent = cpu_seconds() - cpu0;
    if (spent >= 0.5)
        fprintf(stderr, "the loop spun on the closed idle connection: %.2f s of CPU\n", spent);
    CU_ASSERT(spent < 0.5);
    CU_ASSERT_EQUAL(get("/echo", &b), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(&b, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(b.err, MSM_OK);
    CU_ASSERT_EQUAL(b.status, 200);
    CU_ASSERT_EQUAL(b.reused, 0);
    CU_ASSERT_EQUAL(get("/echo", &c), MSM_OK); /* and that one is kept alive again */
    CU_ASSERT_EQUAL(wait_all(&c, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(c.reused, 1);
    msm_http_client_stats_t st;
    msm_http_client_stats(cl, &st);
    CU_ASSERT_EQUAL(st.connections_opened, 2);
    CU_ASSERT_EQUAL(st.failed, 0);
    results_free(&a, 1);
    results_free(&b, 1);
    results_free(&c, 1);
    stop();
}

/* While the client is closing, new requests are refused. */
static void submit_refused(msm_http_client_t *c, void *arg)
{
    int *refused = arg;
    msm_http_request_t req = {.url = "http://127.0.0.1:1/"};
    result_t dummy = {0};
    if (msm_http_client_request(c, &req, on_done, &dummy, NULL) == MSM_ERR_SHUTDOWN)
        (*refused)++;
}

static void test_free_in_flight(void)
{
    msm_http_client_conf_t conf;
    msm_http_client_conf_init(&conf);
    conf.max_host_connections = 3; /* so some requests are still queued inside curl */
    start_conf(&conf);
    enum { N = 6 };
    result_t r[N];
    memset(r, 0, sizeof(r));
    int refused = 0;
    for (int i = 0; i < N; i++) {
        r[i].then = submit_refused;
        r[i].then_arg = &refused;
        CU_ASSERT_EQUAL(get("/never", &r[i]), MSM_OK);
    }
    int three = 3;
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, never_reached, &three, 5000), MSM_OK);
    msm_test_spin(loop, 50);
    CU_ASSERT_EQUAL(never_seen, 3);
    msm_http_client_free(cl);
    cl = NULL;
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].calls, 1);
        CU_ASSERT_EQUAL(r[i].err, MSM_ERR_SHUTDOWN);
        CU_ASSERT_STRING_EQUAL(r[i].error, "client closed");
    }
    CU_ASSERT_EQUAL(refused, N);
    msm_test_spin(loop, 100); /* nothing else arrives later */
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(r[i].calls, 1);
    results_free(r, N);
    stop();
}

/* The first answer frees the client from inside its callback. */
static void free_client(msm_http_client_t *c, void *arg)
{
    (void)arg;
    msm_http_client_free(c);
    cl = NULL;
}

static void test_free_from_callback(void)
{
    start();
    enum { N = 4 };
    result_t r[N + 1];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(get("/never", &r[i]), MSM_OK);
    int all = N;
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, never_reached, &all, 5000), MSM_OK);
    r[N].then = free_client;
    CU_ASSERT_EQUAL(get("/echo", &r[N]), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(r, N + 1, 5000), MSM_OK);
    CU_ASSERT_PTR_NULL(cl);
    CU_ASSERT_EQUAL(r[N].calls, 1);
    CU_ASSERT_EQUAL(r[N].err, MSM_OK);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r[i].calls, 1);
        CU_ASSERT_EQUAL(r[i].err, MSM_ERR_SHUTDOWN);
    }
    msm_test_spin(loop, 100);
    for (int i = 0; i <= N; i++)
        CU_ASSERT_EQUAL(r[i].calls, 1);
    results_free(r, N + 1);
    stop();
}

/* A request cancelled by another one's callback never gets its own. */
typedef struct {
    msm_http_call_t *victim;
} cancel_arg_t;

static void cancel_other(msm_http_client_t *c, void *arg)
{
    (void)c;
    msm_http_call_cancel(((cancel_arg_t *)arg)->victim);
}

static void cancel_self(msm_http_client_t *c, void *arg)
{
    (void)c;
    msm_http_call_cancel(arg); /* inside its own callback: a no-op */
}

static void test_cancel_from_callback(void)
{
    start();
    result_t victim = {0}, killer = {0}, self = {0};
    cancel_arg_t ca = {0};
    CU_ASSERT_EQUAL(get("/never", &victim), MSM_OK);
    msm_http_call_t *c_victim = NULL, *c_self = NULL;
    char url[128];
    snprintf(url, sizeof(url), "%s/never", base);
    msm_http_request_t req = {.url = url};
    result_t v2 = {0};
    CU_ASSERT_EQUAL(submit(&req, &v2, &c_victim), MSM_OK);
    ca.victim = c_victim;
    killer.then = cancel_other;
    killer.then_arg = &ca;
    CU_ASSERT_EQUAL(get("/echo", &killer), MSM_OK);
    snprintf(url, sizeof(url), "%s/echo", base);
    req.url = url;
    CU_ASSERT_EQUAL(submit(&req, &self, &c_self), MSM_OK);
    self.then = cancel_self;
    self.then_arg = c_self;
    CU_ASSERT_EQUAL(wait_all(&killer, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(&self, 1, 5000), MSM_OK);
    CU_ASSERT_EQUAL(self.calls, 1);
    CU_ASSERT_EQUAL(self.err, MSM_OK);
    msm_test_spin(loop, 100);
    CU_ASSERT_EQUAL(v2.calls, 0);
    CU_ASSERT_EQUAL(msm_http_client_pending(cl), 1); /* only the first /never is left */
    msm_http_client_free(cl);
    cl = NULL;
    CU_ASSERT_EQUAL(victim.calls, 1);
    CU_ASSERT_EQUAL(v2.calls, 0);
    results_free(&victim, 1);
    results_free(&killer, 1);
    results_free(&self, 1);
    stop();
}

/* GET /echo with @p tls; waits for the answer into @p r. */
static void get_tls(msm_http_tls_t *tls, result_t *r)
{
    char url[256];
    snprintf(url, sizeof(url), "%s/echo", base);
    msm_http_request_t req = {.url = url, .tls = tls};
    memset(r, 0, sizeof(*r));
    CU_ASSERT_EQUAL_FATAL(submit(&req, r, NULL), MSM_OK);
    CU_ASSERT_EQUAL(wait_all(r, 1, 10000), MSM_OK);
}

/* TLS settings per request: a kept-alive connection serves only requests whose settings
 * are equal to those it was opened with (equal, not the same object: a reloaded setting
 * keeps its connections), and a request keeps its settings alive after the caller's
 * release. The test server requires a client certificate (else 401). */
static void test_tls_per_request(void)
{
    char dir[256];
    CU_ASSERT_EQUAL_FATAL(msm_test_certs_make(dir, sizeof(dir)), 0);
    char *ca = msm_test_certs_read(dir, "ca.pem"), *cert = msm_test_certs_read(dir, "cli.pem");
    char *key = msm_test_certs_read(dir, "cli.key");
    CU_ASSERT_FATAL(ca && cert && key);
    CU_ASSERT_PTR_NULL(msm_http_tls_new(ca, cert, NULL)); /* a certificate needs its key */
    server_tls_dir = dir;
    start();
    msm_http_tls_t *with_cert = msm_http_tls_new(ca, cert, key);
    msm_http_tls_t *ca_only = msm_http_tls_new(ca, NULL, NULL);
    CU_ASSERT_FATAL(with_cert && ca_only);
    struct {
        msm_http_tls_t *tls; /* NULL: the system's store */
        int fresh_copy;      /* an equal copy of tls, made for this request only */
        int status;          /* 0: no answer (the server's CA is not trusted) */
        int reused;
    } steps[] = {
        {NULL, 0, 0, 0},
        {with_cert, 0, 200, 0},
        {with_cert, 0, 200, 1},
        {with_cert, 1, 200, 1}, /* equal settings, another object: the same connection */
        {ca_only, 0, 401, 0},   /* no certificate: never over the certificate's connection */
        {with_cert, 0, 200, 1},
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        msm_http_tls_t *copy = steps[i].fresh_copy ? msm_http_tls_new(ca, cert, key) : NULL;
        result_t r;
        get_tls(copy ? copy : steps[i].tls, &r);
        msm_http_tls_release(copy); /* the pooled handle holds its own reference */
        if (r.status != steps[i].status || r.reused != steps[i].reused)
            fprintf(stderr, "step %zu: status %d reused %d (%s)\n", i, r.status, r.reused,
                    r.error);
        CU_ASSERT_EQUAL(r.status, steps[i].status);
        CU_ASSERT_EQUAL(r.reused, steps[i].reused);
        CU_ASSERT(steps[i].status != 0 || strstr(r.error, "certificate"));
        results_free(&r, 1);
    }
    stop();
    msm_http_tls_release(with_cert);
    msm_http_tls_release(ca_only);

    /* the client's ca_file is the default trust; a request's client certificate adds to it */
    char ca_file[300];
    snprintf(ca_file, sizeof(ca_file), "%s/ca.pem", dir);
    msm_http_client_conf_t conf;
    msm_http_client_conf_init(&conf);
    conf.ca_file = ca_file;
    start_conf(&conf);
    msm_http_tls_t *cert_only = msm_http_tls_new(NULL, cert, key);
    result_t r;
    get_tls(NULL, &r);
    CU_ASSERT_EQUAL(r.status, 401); /* trusted: an answer, though no certificate */
    results_free(&r, 1);
    get_tls(cert_only, &r);
    CU_ASSERT_EQUAL(r.status, 200);
    results_free(&r, 1);
    msm_http_tls_release(cert_only);
    stop();
    server_tls_dir = NULL;
    free(ca);
    free(cert);
    free(key);
    msm_test_certs_remove(dir);
}

static CU_TestInfo http_client_tests[] = {
    {"GET/POST/PUT/DELETE/HEAD round trips", test_round_trip},
    {"header accessor", test_headers_accessor},
    {"host name resolution", test_host_name},
    {"invalid requests are refused at submit", test_invalid_requests},
    {"200 concurrent requests", test_many_concurrent},
    {"keep-alive reuse over 50 sequential requests", test_keep_alive},
    {"TLS settings per request; connections only among equal ones", test_tls_per_request},
    {"per-request and default timeouts", test_timeout},
    {"connection refused fails promptly", test_connection_refused},
    {"netpolicy: a denied address is never connected to", test_netpolicy},
    {"response size cap", test_response_cap},
    {"server closed an idle connection", test_server_closed_idle_connection},
    {"cancel", test_cancel},
    {"cancel from a callback", test_cancel_from_callback},
    {"free with requests in flight", test_free_in_flight},
    {"free from a callback", test_free_from_callback},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"http_client", NULL, NULL, NULL, NULL, http_client_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
