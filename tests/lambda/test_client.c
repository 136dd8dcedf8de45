/* SPDX-License-Identifier: MIT */
/* msm/client.h against a real msm-frontend (and its real redis-server): one event and a
 * batch split over several requests on one kept-alive connection, read back from the topic's
 * log; the frontend's 400/404/413 answers through msm_client_last_error(); an unreachable
 * and a silent frontend; the bearer token; deadline caps; traceparent parenting, in-process
 * and from a handler of a real lambda (client_lambda.c) pushed to as the router does.
 *
 *   test_client FRONTEND CLIENT_LAMBDA */
#include "lambda_test_util.h"
#include "msm_test.h"

#include "msm/client.h"
#include "msm/trace.h"
#include "msm/v1/event.pb-c.h" /* the envelope the frontend appends */

#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define TOPIC     "ct"
#define PARENT_TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static const char *frontend_bin, *lambda_bin;
static char dir[256], ns[64], url[96];
static msm_test_redis_t redis_srv;
static msm_test_proc_t fe;

static long long unix_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static long api(const char *method, const char *path, const char *body, char **answer)
{
    lt_http_t h = {
        .method = method, .path = path, .body = body, .body_len = body ? strlen(body) : 0};
    h.headers[0] = "Content-Type: application/json";
    lt_http(fe.port, &h);
    long status = h.status;
    if (answer) {
        *answer = h.rbody;
        h.rbody = NULL;
    }
    lt_http_free(&h);
    return status;
}

static int suite_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (lt_tmpdir(dir, sizeof(dir)) != 0 || msm_test_redis_start(&redis_srv) != 0)
        return -1;
    msm_test_namespace(ns, sizeof(ns));
    if (lt_frontend_start(&fe, frontend_bin, dir, redis_srv.url, ns, NULL) != 0)
        return -1;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", fe.port);
    /* msm_client_new(NULL) reads it, here and in the lambda started below */
    setenv("MSM_FRONTEND_URL", url, 1);
    const char *topics[] = {"/v1/topics/" TOPIC, "/v1/topics/cb", "/v1/topics/ce"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        if (api("PUT", topics[i], "{\"partitions\":1}", NULL) != 200)
            return -1;
    }
    return 0;
}

static int suite_clean(void)
{
    int rc = msm_test_proc_stop(&fe, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    if (rc != 0)
        fprintf(stderr, "msm-frontend exited with %d (log: %s)\n", rc, fe.log);
    msm_test_redis_destroy(&redis_srv);
    lt_rmdir(dir);
    curl_global_cleanup();
    return rc == 0 ? 0 : -1;
}

/* ---- reading back ---- */

typedef struct {
    Msm__V1__Event **evs;
    size_t n;
} events_t;

/* Every envelope of the topic's log (one partition), oldest first. */
static events_t read_events(const char *topic)
{
    events_t out = {0};
    redisReply *r = msm_test_redis_query(&redis_srv, "XRANGE %s:log:{events.%s}:0 - +", ns, topic);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return out;
    }
    out.evs = calloc(r->elements + 1, sizeof(*out.evs));
    for (size_t i = 0; out.evs && i < r->elements; i++) {
        const redisReply *fields = r->element[i]->element[1];
        for (size_t f = 0; f + 1 < fields->elements; f += 2) {
            if (strcmp(fields->element[f]->str, "v") == 0)
                out.evs[out.n++] =
                    msm__v1__event__unpack(NULL, fields->element[f + 1]->len,
                                           (const uint8_t *)fields->element[f + 1]->str);
        }
    }
    freeReplyObject(r);
    return out;
}

static void events_free(events_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        msm__v1__event__free_unpacked(e->evs[i], NULL);
    free(e->evs);
    *e = (events_t){0};
}

static const Msm__V1__Event *find_event(const events_t *e, const char *id)
{
    for (size_t i = 0; i < e->n; i++) {
        if (e->evs[i] && strcmp(e->evs[i]->id, id) == 0)
            return e->evs[i];
    }
    return NULL;
}

static int payload_is(const Msm__V1__Event *ev, const char *text)
{
    return ev && ev->payload.len == strlen(text) &&
           memcmp(ev->payload.data, text, ev->payload.len) == 0;
}

/* msm_frontend_publish_requests_total{topic,result="ok"} from the frontend's /metrics. */
static long long requests_ok(const char *topic)
{
    char *text = NULL, want[128];
    if (api("GET", "/metrics", NULL, &text) != 200 || !text) {
        free(text);
        return -1;
    }
    snprintf(want, sizeof(want), "topic=\"%s\"", topic);
    long long n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "msm_frontend_publish_requests_total{", 36) == 0 && strstr(line, want) &&
            strstr(line, "result=\"ok\"")) {
            const char *sp = strrchr(line, ' ');
            n = sp ? atoll(sp + 1) : -1;
        }
    }
    free(text);
    return n;
}

/* ---- publish and read back ---- */

static void test_publish_one(void)
{
    msm_client_t *c = msm_client_new(url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(msm_client_connects(c), 0);
    msm_attr_t attrs[] = {{"kind", "image"}, {"tenant", "t-1"}};
    msm_message_t m = {.data = "{\"n\":1}",
                       .key = "k1",
                       .ordering_key = "o1",
                       .attrs = attrs,
                       .n_attrs = 2,
                       .priority = 7,
                       .has_priority = 1};
    msm_publish_result_t r = {.id = "stale", .duplicate = 9};
    CU_ASSERT_EQUAL_FATAL(msm_client_publish(c, TOPIC, &m, 1, &r), MSM_OK);
    CU_ASSERT_EQUAL(msm_client_last_error(c)->err, MSM_OK);
    CU_ASSERT_EQUAL(strlen(r.id), 36);
    CU_ASSERT_EQUAL(r.duplicate, 0);

    /* raw bytes with a content type, and a due time */
    static const unsigned char raw[] = {0x08, 0x00, 0x96, 0x01};
    long long at = unix_ms() + 3600 * 1000;
    msm_message_t b = {.bytes = raw,
                       .bytes_len = sizeof(raw),
                       .content_type = "application/x-protobuf",
                       .deliver_at_ms = at};
    msm_message_t d = {.data = "\"later\"", .delay_ms = 60000};
    msm_publish_result_t rb, rd;
    CU_ASSERT_EQUAL_FATAL(msm_client_publish(c, TOPIC, &b, 1, &rb), MSM_OK);
    long long before_d = unix_ms();
    CU_ASSERT_EQUAL_FATAL(msm_client_publish(c, TOPIC, &d, 1, &rd), MSM_OK);
    /* three calls, one connection */
    CU_ASSERT_EQUAL(msm_client_connects(c), 1);

    events_t e = read_events(TOPIC);
    const Msm__V1__Event *ev = find_event(&e, r.id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_TRUE(payload_is(ev, "{\"n\":1}"));
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/json");
    CU_ASSERT_STRING_EQUAL(ev->key, "k1");
    CU_ASSERT_STRING_EQUAL(ev->ordering_key, "o1");
    CU_ASSERT_EQUAL(ev->priority, 7);
    CU_ASSERT_EQUAL(ev->n_attributes, 2);
    for (size_t i = 0; i < ev->n_attributes; i++) {
        const char *want = strcmp(ev->attributes[i]->key, "kind") == 0 ? "image" : "t-1";
        CU_ASSERT_STRING_EQUAL(ev->attributes[i]->value, want);
    }
    CU_ASSERT_TRUE(msm_traceparent_valid(ev->traceparent)); /* no parent: a new trace */

    ev = find_event(&e, rb.id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_EQUAL(ev->payload.len, sizeof(raw));
    CU_ASSERT_EQUAL(memcmp(ev->payload.data, raw, sizeof(raw)), 0);
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/x-protobuf");
    CU_ASSERT_EQUAL(ev->deliver_at_ms, at);

    ev = find_event(&e, rd.id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_TRUE(payload_is(ev, "\"later\""));
    CU_ASSERT_TRUE(ev->deliver_at_ms >= before_d + 60000 && ev->deliver_at_ms <= unix_ms() + 60000);
    events_free(&e);
    msm_client_free(c);
}

#define BATCH 2500

/* 2,500 events in one call: three requests (the frontend takes 1,000 at most), one
 * connection; then a body limit that cuts a batch by size; then idempotency keys. */
static void test_batch_split(void)
{
    msm_client_t *c = msm_client_new(url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    msm_message_t *msgs = calloc(BATCH, sizeof(*msgs));
    char(*data)[48] = calloc(BATCH, sizeof(*data));
    msm_publish_result_t *res = calloc(BATCH, sizeof(*res));
    CU_ASSERT_FATAL(msgs && data && res);
    for (size_t i = 0; i < BATCH; i++) {
        snprintf(data[i], sizeof(data[i]), "{\"i\":%zu}", i);
        msgs[i].data = data[i];
    }
    long long req0 = requests_ok("cb");
    CU_ASSERT_EQUAL_FATAL(msm_client_publish(c, "cb", msgs, BATCH, res), MSM_OK);
    CU_ASSERT_EQUAL(msm_client_last_error(c)->published, BATCH);
    CU_ASSERT_EQUAL(requests_ok("cb") - req0, 3);
    CU_ASSERT_EQUAL(msm_client_connects(c), 1);

    events_t e = read_events("cb");
    CU_ASSERT_EQUAL(e.n, BATCH);
    size_t found = 0;
    for (size_t i = 0; i < BATCH; i++)
        found += payload_is(find_event(&e, res[i].id), data[i]); /* ids are distinct */
    CU_ASSERT_EQUAL(found, BATCH);
    events_free(&e);

    /* ~100-byte events under a 2 KiB body limit: about 20 per request */
    char pad[80];
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (size_t i = 0; i < 100; i++)
        snprintf(data[i], sizeof(data[i]), "{\"i\":%zu}", i);
    msm_attr_t attr = {"pad", pad};
    for (size_t i = 0; i < 100; i++) {
        msgs[i].attrs = &attr;
        msgs[i].n_attrs = 1;
    }
    msm_client_set_batch_limits(c, 0, 2048);
    req0 = requests_ok("cb");
    CU_ASSERT_EQUAL_FATAL(msm_client_publish(c, "cb", msgs, 100, res), MSM_OK);
    long long reqs = requests_ok("cb") - req0;
    CU_ASSERT_TRUE(reqs >= 5 && reqs <= 10);
    e = read_events("cb");
    CU_ASSERT_EQUAL(e.n, BATCH + 100);
    CU_ASSERT_TRUE(payload_is(find_event(&e, res[99].id), data[99]));
    events_free(&e);
    msm_client_set_batch_limits(c, 0, 0);

    /* an idempotency key repeated in the call, then in a later call */
    msm_message_t idem[2] = {{.data = "1", .idempotency_key = "order-1"},
                             {.data = "2", .idempotency_key = "order-1"}};
    CU_ASSERT_EQUAL_FATAL(msm_client_publish(c, "cb", idem, 2, res), MSM_OK);
    CU_ASSERT_FALSE(res[0].duplicate);
    CU_ASSERT_TRUE(res[1].duplicate);
    CU_ASSERT_STRING_EQUAL(res[1].id, res[0].id);
    msm_publish_result_t again;
    CU_ASSERT_EQUAL_FATAL(msm_client_publish(c, "cb", idem, 1, &again), MSM_OK);
    CU_ASSERT_TRUE(again.duplicate);
    CU_ASSERT_STRING_EQUAL(again.id, res[0].id);
    CU_ASSERT_EQUAL(msm_client_connects(c), 1);
    free(msgs);
    free(data);
    free(res);
    msm_client_free(c);
}

/* ---- errors ---- */

static void test_frontend_errors(void)
{
    msm_client_t *c = msm_client_new(url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    const msm_client_error_t *err = msm_client_last_error(c);
    msm_message_t ok = {.data = "{}"};
    msm_publish_result_t r[1500];

    CU_ASSERT_EQUAL(msm_client_publish(c, "no-such-topic", &ok, 1, r), MSM_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(err->http_status, 404);
    CU_ASSERT_STRING_EQUAL(err->code, "NOT_FOUND");
    CU_ASSERT_PTR_NOT_NULL(strstr(err->message, "no-such-topic"));

    /* a name no topic can have is no topic either (escaped in the path, not cut there) */
    CU_ASSERT_EQUAL(msm_client_publish(c, "bad topic/x?y", &ok, 1, r), MSM_ERR_NOTFOUND);
    CU_ASSERT_EQUAL(err->http_status, 404);
    CU_ASSERT_STRING_EQUAL(err->code, "NOT_FOUND");

    /* one bad event: 400 naming it, nothing published */
    msm_message_t three[3] = {
        {.data = "1"}, {.data = "2", .priority = 42, .has_priority = 1}, {.data = "3"}};
    CU_ASSERT_EQUAL(msm_client_publish(c, "ce", three, 3, r), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(err->err, MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(err->http_status, 400);
    CU_ASSERT_STRING_EQUAL(err->code, "INVALID_ARGUMENT");
    CU_ASSERT_TRUE(strlen(err->message) > 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->details, "priority"));
    CU_ASSERT_EQUAL(err->published, 0);
    CU_ASSERT_STRING_EQUAL(r[0].id, "");
    events_t e = read_events("ce");
    CU_ASSERT_EQUAL(e.n, 0);
    events_free(&e);

    /* split: the second request fails; the first one's 1,000 events stay published */
    msm_message_t *many = calloc(1500, sizeof(*many));
    CU_ASSERT_PTR_NOT_NULL_FATAL(many);
    for (size_t i = 0; i < 1500; i++)
        many[i].data = "true";
    many[1200].has_priority = 1;
    many[1200].priority = -1;
    CU_ASSERT_EQUAL(msm_client_publish(c, "ce", many, 1500, r), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(err->published, 1000);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->details, "200")); /* index in the failed request */
    CU_ASSERT_EQUAL(strlen(r[999].id), 36);
    CU_ASSERT_STRING_EQUAL(r[1000].id, "");
    e = read_events("ce");
    CU_ASSERT_EQUAL(e.n, 1000);
    CU_ASSERT_PTR_NOT_NULL(find_event(&e, r[0].id));
    events_free(&e);
    free(many);

    /* over the frontend's 1 MiB body: 413 */
    size_t big_len = 1100 * 1000;
    char *big = malloc(big_len + 3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    big[0] = '"';
    memset(big + 1, 'a', big_len);
    big[big_len + 1] = '"';
    big[big_len + 2] = '\0';
    msm_message_t huge = {.data = big};
    CU_ASSERT_EQUAL(msm_client_publish(c, "ce", &huge, 1, r), MSM_ERR_TOOLARGE);
    CU_ASSERT_EQUAL(err->http_status, 413);
    CU_ASSERT_STRING_EQUAL(err->code, "PAYLOAD_TOO_LARGE");
    free(big);

    /* refused before sending: data that is not JSON */
    msm_message_t bad = {.data = "{oops"};
    CU_ASSERT_EQUAL(msm_client_publish(c, "ce", &bad, 1, r), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(err->http_status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err->message, "not JSON"));
    CU_ASSERT_EQUAL(msm_client_publish(c, NULL, &ok, 1, r), MSM_ERR_INVALID);
    /* and a success clears the last error */
    CU_ASSERT_EQUAL(msm_client_publish(c, "ce", &ok, 1, r), MSM_OK);
    CU_ASSERT_EQUAL(err->err, MSM_OK);
    CU_ASSERT_EQUAL(err->http_status, 0);
    CU_ASSERT_STRING_EQUAL(err->message, "");
    /* a 413 answer may close the connection; nothing else does */
    CU_ASSERT_TRUE(msm_client_connects(c) >= 1 && msm_client_connects(c) <= 2);
    msm_client_free(c);

    CU_ASSERT_PTR_NULL(msm_client_new("ftp://127.0.0.1:1"));
}

/* ---- frontends that are not there, or do not answer ---- */

/* A listening socket nobody answers on: the kernel completes the TCP handshake. With
 * @p serve set, a thread accepts one connection and keeps the request's headers. */
typedef struct {
    int fd;
    int port;
    pthread_t thread;
    int serving;
    char headers[4096];
} silent_t;

static void *silent_main(void *arg)
{
    silent_t *s = arg;
    struct pollfd p = {.fd = s->fd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1)
        return NULL;
    int conn = accept(s->fd, NULL, NULL);
    if (conn < 0)
        return NULL;
    size_t len = 0;
    p.fd = conn;
    /* read the request, then wait for the client to give up and close */
    while (poll(&p, 1, 10000) == 1) {
        char buf[4096];
        ssize_t n = read(conn, buf, sizeof(buf));
        if (n <= 0)
            break;
        size_t take =
            (size_t)n < sizeof(s->headers) - 1 - len ? (size_t)n : sizeof(s->headers) - 1 - len;
        memcpy(s->headers + len, buf, take);
        len += take;
        s->headers[len] = '\0';
    }
    close(conn);
    return NULL;
}

static int silent_start(silent_t *s, int serve)
{
    memset(s, 0, sizeof(*s));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if ((s->fd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        bind(s->fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s->fd, 8) != 0 ||
        getsockname(s->fd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    s->port = ntohs(a.sin_port);
    if (serve && pthread_create(&s->thread, NULL, silent_main, s) != 0)
        return -1;
    s->serving = serve;
    return 0;
}

static void silent_stop(silent_t *s)
{
    if (s->serving)
        pthread_join(s->thread, NULL);
    close(s->fd);
}

static void test_unreachable(void)
{
    char u[64];
    msm_message_t m = {.data = "{}"};
    msm_publish_result_t r;

    /* nobody listens: an error at once */
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/", msm_test_free_port());
    msm_client_t *c = msm_client_new(u);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    double t0 = lt_now_ms();
    CU_ASSERT_EQUAL(msm_client_publish(c, TOPIC, &m, 1, &r), MSM_ERR_IO);
    CU_ASSERT_TRUE(lt_now_ms() - t0 < 2000);
    CU_ASSERT_EQUAL(msm_client_last_error(c)->http_status, 0);
    CU_ASSERT_TRUE(strlen(msm_client_last_error(c)->message) > 0);
    msm_client_free(c);

    /* connected, never answered: the client's timeout */
    silent_t s;
    CU_ASSERT_EQUAL_FATAL(silent_start(&s, 0), 0);
    snprintf(u, sizeof(u), "http://127.0.0.1:%d", s.port);
    c = msm_client_new(u);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    msm_client_set_timeout_ms(c, 300);
    t0 = lt_now_ms();
    CU_ASSERT_EQUAL(msm_client_publish(c, TOPIC, &m, 1, &r), MSM_ERR_TIMEOUT);
    double took = lt_now_ms() - t0;
    CU_ASSERT_TRUE(took >= 250 && took < 3000);
    CU_ASSERT_PTR_NOT_NULL(strstr(msm_client_last_error(c)->message, "in time"));
    msm_client_free(c);
    silent_stop(&s);
}

/* A handler's deadline caps a request the client would otherwise wait 30 s for; the
 * request carries the token and the child traceparent. */
static void test_deadline_token(void)
{
    silent_t s;
    CU_ASSERT_EQUAL_FATAL(silent_start(&s, 1), 0);
    char u[64];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d", s.port);
    msm_client_t *c = msm_client_new(u);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(msm_client_set_token(c, "s3cret-token"), MSM_OK);
    CU_ASSERT_EQUAL(msm_client_set_token(c, "bad\r\nInjected: yes"), MSM_ERR_INVALID);
    msm_message_t m = {.data = "{}"};
    msm_publish_result_t r;
    msm_publish_opts_t o = {.traceparent = PARENT_TP, .deadline_ms = unix_ms() + 400};
    double t0 = lt_now_ms();
    CU_ASSERT_EQUAL(msm_client_publish_opts(c, TOPIC, &m, 1, &r, &o), MSM_ERR_TIMEOUT);
    double took = lt_now_ms() - t0;
    CU_ASSERT_TRUE(took >= 300 && took < 3000);
    msm_client_free(c); /* closes the connection: the silent thread ends */
    silent_stop(&s);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.headers, "POST /v1/topics/" TOPIC ":publish HTTP/1.1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s.headers, "\r\nAuthorization: Bearer s3cret-token\r\n"));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(s.headers, "\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    CU_ASSERT_PTR_NULL(strstr(s.headers, "00f067aa0ba902b7"));
    CU_ASSERT_PTR_NULL(strstr(s.headers, "Injected"));

    /* a deadline already passed: nothing is sent */
    c = msm_client_new(url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    o.deadline_ms = unix_ms() - 1;
    CU_ASSERT_EQUAL(msm_client_publish_opts(c, TOPIC, &m, 1, &r, &o), MSM_ERR_TIMEOUT);
    CU_ASSERT_PTR_NOT_NULL(strstr(msm_client_last_error(c)->message, "deadline"));
    CU_ASSERT_EQUAL(msm_client_connects(c), 0);
    msm_client_free(c);
}

/* ---- trace context ---- */

static void test_child_traceparent(void)
{
    char a[64], b[64];
    CU_ASSERT_EQUAL(msm_client_child_traceparent(PARENT_TP, a, sizeof(a)), MSM_OK);
    CU_ASSERT_EQUAL(msm_client_child_traceparent(PARENT_TP, b, sizeof(b)), MSM_OK);
    CU_ASSERT_EQUAL(strlen(a), 55);
    CU_ASSERT_EQUAL(strncmp(a, PARENT_TP, 36), 0);               /* version and trace id */
    CU_ASSERT_STRING_EQUAL(a + 52, "-01");                       /* flags */
    CU_ASSERT_NOT_EQUAL(strncmp(a + 36, PARENT_TP + 36, 16), 0); /* a new span */
    CU_ASSERT_NOT_EQUAL(strncmp(a + 36, b + 36, 16), 0);
    /* a later version with more fields: answered in version 00 */
    CU_ASSERT_EQUAL(
        msm_client_child_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz",
                                     a, sizeof(a)),
        MSM_OK);
    CU_ASSERT_EQUAL(strncmp(a, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36), 0);
    CU_ASSERT_STRING_EQUAL(a + 52, "-00");
    const char *bad[] = {
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* forbidden version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 has no more */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_EQUAL(msm_client_child_traceparent(bad[i], a, sizeof(a)), MSM_ERR_INVALID);
    CU_ASSERT_EQUAL(msm_client_child_traceparent(PARENT_TP, a, 55), MSM_ERR_INVALID);
}

static void check_child_of_parent(const Msm__V1__Event *ev)
{
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev->traceparent);
    CU_ASSERT_EQUAL(strlen(ev->traceparent), 55);
    CU_ASSERT_EQUAL(strncmp(ev->traceparent, PARENT_TP, 36), 0);
    CU_ASSERT_NOT_EQUAL(strcmp(ev->traceparent, PARENT_TP), 0);
    CU_ASSERT_STRING_EQUAL(ev->traceparent + 52, "-01");
}

static void test_traceparent_published(void)
{
    msm_client_t *c = msm_client_new(NULL); /* MSM_FRONTEND_URL */
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    msm_message_t m[2] = {{.data = "\"a\""}, {.data = "\"b\""}};
    msm_publish_result_t r[2];
    msm_publish_opts_t o = {.traceparent = PARENT_TP, .deadline_ms = unix_ms() + 10000};
    CU_ASSERT_EQUAL_FATAL(msm_client_publish_opts(c, TOPIC, m, 2, r, &o), MSM_OK);
    events_t e = read_events(TOPIC);
    check_child_of_parent(find_event(&e, r[0].id));
    check_child_of_parent(find_event(&e, r[1].id));
    events_free(&e);
    msm_client_free(c);
}

/* A real lambda's handler publishes with msm_client_publish_from(): its event carries a
 * child of the pushed event's traceparent. */
static void test_publish_from_handler(void)
{
    msm_test_proc_t l;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&l, dir, lambda_bin, NULL), 0);
    char deadline[64];
    snprintf(deadline, sizeof(deadline), "Msm-Deadline: %lld", unix_ms() + 10000);
    const char *topics[] = {TOPIC, "no-such-topic"};
    for (int i = 0; i < 2; i++) {
        char hattr[64];
        snprintf(hattr, sizeof(hattr), "Msm-Attr-publish_to: %s", topics[i]);
        lt_http_t h = {.method = "POST", .body = "{}", .body_len = 2};
        const char *hdrs[] = {"ce-specversion: 1.0",
                              "ce-id: parent-event-1",
                              "ce-source: /msm/topics/orders",
                              "ce-type: msm.event",
                              "Content-Type: application/json",
                              "Msm-Subscription: sub",
                              "Msm-Attempt: 1",
                              "traceparent: " PARENT_TP,
                              deadline,
                              hattr};
        for (size_t j = 0; j < sizeof(hdrs) / sizeof(hdrs[0]); j++)
            h.headers[j] = hdrs[j];
        lt_http(l.port, &h);
        if (i == 0) {
            CU_ASSERT_EQUAL(h.status, 200);
        } else { /* the client's error reaches the router as the handler's */
            CU_ASSERT_EQUAL(h.status, 500);
            CU_ASSERT_PTR_NOT_NULL(h.rbody ? strstr(h.rbody, "NOT_FOUND") : NULL);
        }
        lt_http_free(&h);
    }
    CU_ASSERT_EQUAL(msm_test_proc_stop(&l, SIGTERM, 5000), 0);

    events_t e = read_events(TOPIC);
    const Msm__V1__Event *child = NULL;
    for (size_t i = 0; i < e.n; i++) {
        if (payload_is(e.evs[i], "{\"parent\":\"parent-event-1\"}"))
            child = e.evs[i];
    }
    check_child_of_parent(child);
    events_free(&e);
}

static CU_TestInfo client_tests[] = {
    {"one event, bytes, deliver_at and delay_ms, read back; one connection", test_publish_one},
    {"2,500 events split into requests on one connection; body limit; idempotency",
     test_batch_split},
    {"the frontend's 400/404/413 through msm_client_last_error", test_frontend_errors},
    {"an unreachable frontend fails at once, a silent one after the timeout", test_unreachable},
    {"the deadline caps the request; token and traceparent headers", test_deadline_token},
    {"child traceparent: same trace, new span; invalid parents", test_child_traceparent},
    {"published events carry the child traceparent", test_traceparent_published},
    {"a handler's msm_client_publish_from carries the pushed event's trace",
     test_publish_from_handler},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"client", suite_init, suite_clean, NULL, NULL, client_tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FRONTEND CLIENT_LAMBDA\n", argv[0]);
        return 2;
    }
    frontend_bin = argv[1];
    lambda_bin = argv[2];
    return msm_test_run(suites);
}
