/* SPDX-License-Identifier: MIT */
/* libmsm-lambda end to end: the reference msm-example-lambda and a test lambda (echo_lambda.c)
 * run as child processes on free ports and get real pushes over HTTP: headers to event
 * fields, status mapping, unknown subscriptions, deadlines, Msm-Signature, --record lines,
 * --latency-ms without blocking, --max-concurrent and --fail-attr, metrics, and the SIGTERM
 * drain. */
#include "lambda_test_util.h"
#include "msm_test.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
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

static void path_in_dir(char *buf, size_t n, const char *name)
{
    static int seq;
    snprintf(buf, n, "%s/%s-%d", dir, name, ++seq);
}

/* Starts the echo lambda writing to @p out. */
static int start_echo(msm_test_proc_t *c, const char *out, int star)
{
    const char *args[] = {"--out", out, star ? "--star" : NULL, NULL};
    return lt_child_start(c, dir, MSM_ECHO_LAMBDA, args);
}

/* The last JSON line of @p path (NULL when none). Payloads may hold NUL bytes. */
static json_t *last_line(const char *path, int *nlines)
{
    size_t len;
    char *text = lt_read_file(path, &len);
    *nlines = 0;
    if (!text)
        return NULL;
    const char *last = NULL;
    for (char *p = text; p < text + len;) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        if (!nl)
            break;
        (*nlines)++;
        last = p;
        p = nl + 1;
    }
    json_t *o =
        last ? json_loadb(last, (size_t)(strchr(last, '\n') - last), JSON_ALLOW_NUL, NULL) : NULL;
    free(text);
    return o;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "(absent)";
}

static long long jint(json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* A push to the echo lambda with the given extra headers. */
static void push(msm_test_proc_t *c, lt_http_t *h, const char *sub, const char *id,
                 const char *want)
{
    char hsub[128], hid[128], hwant[128]; /* used by lt_http() below only */
    snprintf(hsub, sizeof(hsub), "Msm-Subscription: %s", sub ? sub : "");
    snprintf(hid, sizeof(hid), "ce-id: %s", id ? id : "");
    snprintf(hwant, sizeof(hwant), "Msm-Attr-want: %s", want ? want : "");
    int n = 0;
    while (h->headers[n])
        n++;
    h->headers[n++] = "ce-specversion: 1.0";
    h->headers[n++] = hsub;
    h->headers[n++] = hid;
    h->headers[n++] = "ce-source: /msm/topics/orders";
    if (want)
        h->headers[n++] = hwant;
    h->headers[n] = NULL;
    if (!h->body) {
        h->body = "{}";
        h->body_len = 2;
    }
    lt_http(c->port, h);
    /* The pointers into this frame must not outlive it. */
    for (int i = 0; h->headers[i]; i++) {
        if (h->headers[i] == hsub || h->headers[i] == hid || h->headers[i] == hwant)
            h->headers[i] = NULL;
    }
}

static int body_code_is(const lt_http_t *h, const char *code)
{
    json_t *b = h->rbody ? json_loads(h->rbody, 0, NULL) : NULL;
    const char *c = json_string_value(json_object_get(json_object_get(b, "error"), "code"));
    int same = c && strcmp(c, code) == 0;
    json_decref(b);
    return same;
}

/* ---- flags ---- */

static void test_flags(void)
{
    char out[512], cmd[1024];
    path_in_dir(out, sizeof(out), "help");
    snprintf(cmd, sizeof(cmd), "%s --help > %s 2>&1", MSM_EXAMPLE_LAMBDA, out);
    CU_ASSERT_EQUAL(WEXITSTATUS(system(cmd)), 0);
    char *text = lt_read_file(out, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    const char *expect[] = {"--port",
                            "--bind",
                            "--config",
                            "--secret",
                            "--version",
                            "--record",
                            "--fail-rate",
                            "--fatal-rate",
                            "--latency-ms",
                            "--canary-share",
                            "--canary-window-ms",
                            "--min-workers",
                            "--max-workers",
                            "--threads",
                            "--watchdog-ms",
                            "--admin-port",
                            "--max-concurrent",
                            "--fail-attr",
                            NULL};
    for (int i = 0; expect[i]; i++)
        CU_ASSERT_PTR_NOT_NULL(strstr(text, expect[i]));
    /* Every flag is honoured: none says it is not there yet. */
    CU_ASSERT_PTR_NULL(strstr(text, "not yet"));
    free(text);

    snprintf(cmd, sizeof(cmd), "%s --version > %s 2>&1", MSM_EXAMPLE_LAMBDA, out);
    CU_ASSERT_EQUAL(WEXITSTATUS(system(cmd)), 0);
    text = lt_read_file(out, NULL);
    CU_ASSERT_TRUE(text && strncmp(text, "msm-example-lambda ", 19) == 0);
    free(text);

    snprintf(cmd, sizeof(cmd), "%s --fail-rate 2 > %s 2>&1", MSM_EXAMPLE_LAMBDA, out);
    CU_ASSERT_EQUAL(WEXITSTATUS(system(cmd)), 2);
    size_t len;
    text = lt_read_file(out, &len);
    CU_ASSERT_TRUE(text && strstr(text, "fail-rate") && strchr(text, '\n') == text + len - 1);
    free(text);
}

/* ---- the event a handler sees ---- */

static void test_event_round_trip(void)
{
    char out[512];
    path_in_dir(out, sizeof(out), "echo");
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(start_echo(&c, out, 0), 0);
    char deadline[64];
    long long dl = lt_unix_ms() + 20000;
    snprintf(deadline, sizeof(deadline), "Msm-Deadline: %lld", dl);
    static const char payload[] = {'a', 'b', '\0', 'c', 'd'};
    lt_http_t h = {
        .path = "/some/deep/path",
        .headers = {"ce-type: msm.order.created", "ce-time: 2026-11-25T12:00:00.123Z",
                    "Content-Type: application/x-protobuf", "Msm-Attempt: 3", deadline,
                    "Msm-Key: k-1", "Msm-Ordering-Key: ok-1",
                    "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    "Msm-Attr-kind: image", "Msm-Attr-Size: 42", "msm-attr-empty;",
                    "ce-subject: o-1", "ce-dataschema: https://shop.example/o.json",
                    "ce-msmsourceid: prod-1", "ce-partitionkey: pk-1", NULL},
        .body = payload,
        .body_len = sizeof(payload)};
    push(&c, &h, "sub-a", "evt-1", NULL);
    CU_ASSERT_EQUAL(h.rc, CURLE_OK);
    CU_ASSERT_EQUAL(h.status, 200);
    char v[64];
    CU_ASSERT_TRUE(lt_http_header(&h, "Msm-Status", v, sizeof(v)) && strcmp(v, "ok") == 0);
    lt_http_free(&h);

    int n;
    json_t *o = last_line(out, &n);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_STRING_EQUAL(jstr(o, "handler"), "echo");
    CU_ASSERT_STRING_EQUAL(jstr(o, "id"), "evt-1");
    CU_ASSERT_STRING_EQUAL(jstr(o, "topic"), "orders");
    CU_ASSERT_STRING_EQUAL(jstr(o, "source"), "/msm/topics/orders");
    CU_ASSERT_STRING_EQUAL(jstr(o, "type"), "msm.order.created");
    CU_ASSERT_STRING_EQUAL(jstr(o, "subject"), "o-1");
    CU_ASSERT_STRING_EQUAL(jstr(o, "dataschema"), "https://shop.example/o.json");
    CU_ASSERT_STRING_EQUAL(jstr(o, "source_id"), "prod-1");
    CU_ASSERT_STRING_EQUAL(jstr(o, "ext_partitionkey"), "pk-1");
    /* Context attributes and msmsourceid are not extensions. */
    CU_ASSERT_EQUAL(json_object_size(json_object_get(o, "extensions")), 1);
    CU_ASSERT_EQUAL(jint(o, "time_ms"), 1795608000123LL);
    CU_ASSERT_STRING_EQUAL(jstr(o, "subscription"), "sub-a");
    CU_ASSERT_STRING_EQUAL(jstr(o, "key"), "k-1");
    CU_ASSERT_STRING_EQUAL(jstr(o, "ordering_key"), "ok-1");
    /* A sampled trace: the handler sees its own span, a child of the push's. */
    CU_ASSERT_TRUE(msm_test_tp_child_of(jstr(o, "traceparent"),
                                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    CU_ASSERT_EQUAL(jint(o, "attempt"), 3);
    CU_ASSERT_EQUAL(jint(o, "deadline_ms"), dl);
    CU_ASSERT_TRUE(jint(o, "remaining_ms") > 15000 && jint(o, "remaining_ms") <= 20000);
    CU_ASSERT_STRING_EQUAL(jstr(o, "content_type"), "application/x-protobuf");
    json_t *p = json_object_get(o, "payload");
    CU_ASSERT_EQUAL(json_string_length(p), sizeof(payload));
    CU_ASSERT_EQUAL(memcmp(json_string_value(p), payload, sizeof(payload)), 0);
    CU_ASSERT_EQUAL(jint(o, "payload_len"), (long long)sizeof(payload));
    CU_ASSERT_TRUE(json_is_true(json_object_get(o, "nul_terminated")));
    /* Attributes: in arrival order, names as sent, lookup ignoring case. */
    json_t *attrs = json_object_get(o, "attrs");
    CU_ASSERT_EQUAL_FATAL(json_array_size(attrs), 3);
    const char *want[3][2] = {{"kind", "image"}, {"Size", "42"}, {"empty", ""}};
    for (size_t i = 0; i < 3; i++) {
        json_t *a = json_array_get(attrs, i);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(a, 0)), want[i][0]);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(a, 1)), want[i][1]);
    }
    CU_ASSERT_STRING_EQUAL(jstr(o, "attr_kind"), "image");
    CU_ASSERT_TRUE(json_is_null(json_object_get(o, "attr_missing")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(o, "at_out_of_range")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(o, "opaque_ok")));
    CU_ASSERT_TRUE(json_is_true(json_object_get(o, "same_event")));
    json_decref(o);

    /* The minimum: only ce-id. A CDC source has no topic; no deadline means "no limit". */
    lt_http_t m = {
        .method = "POST",
        .headers = {"ce-id: evt-2", "ce-source: /msm/cdc/files", "Msm-Subscription: sub-a", NULL}};
    lt_http(c.port, &m);
    CU_ASSERT_EQUAL(m.status, 200);
    lt_http_free(&m);
    o = last_line(out, &n);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_STRING_EQUAL(jstr(o, "id"), "evt-2");
    CU_ASSERT_STRING_EQUAL(jstr(o, "topic"), "");
    CU_ASSERT_STRING_EQUAL(jstr(o, "source"), "/msm/cdc/files");
    CU_ASSERT_EQUAL(jint(o, "attempt"), 1);
    CU_ASSERT_EQUAL(jint(o, "deadline_ms"), 0);
    CU_ASSERT_EQUAL(jint(o, "remaining_ms"), -1);
    CU_ASSERT_EQUAL(jint(o, "time_ms"), 0);
    CU_ASSERT_STRING_EQUAL(jstr(o, "key"), "");
    CU_ASSERT_EQUAL(json_array_size(json_object_get(o, "attrs")), 0);
    CU_ASSERT_EQUAL(jint(o, "payload_len"), 0);
    json_decref(o);

    /* Malformed pushes: 400, and no handler runs. */
    const char *bad[][4] = {{"Msm-Subscription: sub-a", NULL},
                            {"ce-id: x", "Msm-Subscription: sub-a", "Msm-Attempt: 0", NULL},
                            {"ce-id: x", "Msm-Subscription: sub-a", "Msm-Deadline: soon", NULL},
                            {"ce-id: x", "Msm-Subscription: sub-a", "ce-specversion: 0.3", NULL}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        lt_http_t b = {.method = "POST"};
        for (int j = 0; bad[i][j]; j++)
            b.headers[j] = bad[i][j];
        lt_http(c.port, &b);
        CU_ASSERT_EQUAL(b.status, 400);
        CU_ASSERT_TRUE(body_code_is(&b, "INVALID_ARGUMENT"));
        lt_http_free(&b);
    }
    o = last_line(out, &n);
    CU_ASSERT_EQUAL(n, 2);
    json_decref(o);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
}

/* ---- answers ---- */

static void test_status_mapping(void)
{
    char out[512];
    path_in_dir(out, sizeof(out), "echo");
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(start_echo(&c, out, 0), 0);
    struct {
        const char *want;
        long status;
        const char *msm_status;
        const char *code;
    } cases[] = {
        {"ok", 200, "ok", NULL},
        {"retry", 503, "retry", "RETRY"},
        {"fatal", 500, "fatal", "FATAL"},
        {"retry-after", 429, "retry", "RETRY"},
        {"bogus", 503, "retry", "RETRY"},
        {"complete-inside", 500, "fatal", "FATAL"},
        {"later:50", 200, "ok", NULL},
        {"overloaded", 429, "retry", "OVERLOADED"},
        {"overloaded-ok", 200, "ok", NULL},
        {"overloaded-retry-after", 429, "retry", "RETRY"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lt_http_t h = {0};
        push(&c, &h, "sub-a", "e", cases[i].want);
        CU_ASSERT_EQUAL(h.status, cases[i].status);
        char v[64];
        CU_ASSERT_TRUE(lt_http_header(&h, "Msm-Status", v, sizeof(v)) &&
                       strcmp(v, cases[i].msm_status) == 0);
        if (cases[i].code) {
            CU_ASSERT_TRUE(body_code_is(&h, cases[i].code));
        }
        if (h.status != cases[i].status)
            fprintf(stderr, "want=%s: got %ld %s\n", cases[i].want, h.status,
                    h.rbody ? h.rbody : "");
        lt_http_free(&h);
    }
    /* The handler's message reaches the router (as the task's last_error). */
    lt_http_t h = {0};
    push(&c, &h, "sub-a", "e", "fatal");
    CU_ASSERT_TRUE(h.rbody && strstr(h.rbody, "wanted fatal"));
    lt_http_free(&h);
    h = (lt_http_t){0};
    push(&c, &h, "sub-a", "e", "retry-after");
    char v[16];
    CU_ASSERT_TRUE(lt_http_header(&h, "Retry-After", v, sizeof(v)) && strcmp(v, "3") == 0);
    lt_http_free(&h);
    /* Overloaded: 429 that names no time, so the router holds nothing; with a retry after
     * as well, the time is said. */
    h = (lt_http_t){0};
    push(&c, &h, "sub-a", "e", "overloaded");
    CU_ASSERT_PTR_NULL(lt_http_header(&h, "Retry-After", v, sizeof(v)));
    lt_http_free(&h);
    h = (lt_http_t){0};
    push(&c, &h, "sub-a", "e", "overloaded-retry-after");
    CU_ASSERT_TRUE(lt_http_header(&h, "Retry-After", v, sizeof(v)) && strcmp(v, "1") == 0);
    lt_http_free(&h);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
}

static void test_unknown_subscription(void)
{
    char out[512];
    path_in_dir(out, sizeof(out), "echo");
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(start_echo(&c, out, 0), 0);
    lt_http_t h = {0};
    push(&c, &h, "nobody-handles-this", "e1", NULL);
    /* Retriable: not 2xx, and no Msm-Status: fatal. */
    CU_ASSERT_EQUAL(h.status, 404);
    char v[32];
    CU_ASSERT_PTR_NULL(lt_http_header(&h, "Msm-Status", v, sizeof(v)));
    CU_ASSERT_TRUE(body_code_is(&h, "NOT_FOUND"));
    lt_http_free(&h);
    int n;
    json_t *o = last_line(out, &n);
    CU_ASSERT_EQUAL(n, 0);
    json_decref(o);
    /* An exact subscription beats "*". */
    h = (lt_http_t){0};
    push(&c, &h, "sub-b", "e2", NULL);
    CU_ASSERT_EQUAL(h.status, 200);
    lt_http_free(&h);
    o = last_line(out, &n);
    CU_ASSERT_STRING_EQUAL(jstr(o, "handler"), "sub-b");
    json_decref(o);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);

    /* With "*" the same subscription is handled. */
    CU_ASSERT_EQUAL_FATAL(start_echo(&c, out, 1), 0);
    h = (lt_http_t){0};
    push(&c, &h, "nobody-handles-this", "e3", NULL);
    CU_ASSERT_EQUAL(h.status, 200);
    lt_http_free(&h);
    h = (lt_http_t){0};
    push(&c, &h, "sub-b", "e4", NULL);
    lt_http_free(&h);
    o = last_line(out, &n);
    CU_ASSERT_STRING_EQUAL(jstr(o, "handler"), "sub-b");
    json_decref(o);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
}

/* ---- deadlines ---- */

static void push_with_deadline(msm_test_proc_t *c, lt_http_t *h, long long in_ms, const char *want)
{
    static char dl[64];
    snprintf(dl, sizeof(dl), "Msm-Deadline: %lld", lt_unix_ms() + in_ms);
    h->headers[0] = dl;
    h->headers[1] = NULL;
    push(c, h, "sub-a", "d", want);
}

static void test_deadlines(void)
{
    char out[512];
    path_in_dir(out, sizeof(out), "echo");
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(start_echo(&c, out, 0), 0);
    /* A handler that blocks past the deadline: its "ok" is too late, so retry. */
    lt_http_t h = {0};
    push_with_deadline(&c, &h, 100, "sleep:300");
    CU_ASSERT_EQUAL(h.status, 503);
    CU_ASSERT_TRUE(body_code_is(&h, "DEADLINE_EXCEEDED"));
    lt_http_free(&h);
    /* A late (MSM_LATER) handler: answered retry at the deadline, not when it finishes. */
    h = (lt_http_t){0};
    push_with_deadline(&c, &h, 300, "later:1500");
    CU_ASSERT_EQUAL(h.status, 503);
    char v[32];
    CU_ASSERT_TRUE(lt_http_header(&h, "Msm-Status", v, sizeof(v)) && strcmp(v, "retry") == 0);
    CU_ASSERT_TRUE(h.secs >= 0.2 && h.secs < 2.0);
    lt_http_free(&h);
    /* Already past on arrival: answered without running the handler. */
    int before, after;
    json_decref(last_line(out, &before));
    h = (lt_http_t){0};
    push_with_deadline(&c, &h, -1000, NULL);
    CU_ASSERT_EQUAL(h.status, 503);
    CU_ASSERT_TRUE(body_code_is(&h, "DEADLINE_EXCEEDED"));
    lt_http_free(&h);
    json_decref(last_line(out, &after));
    CU_ASSERT_EQUAL(after, before);
    /* Within the deadline all is well, and the lambda still serves. */
    h = (lt_http_t){0};
    push_with_deadline(&c, &h, 5000, "later:20");
    CU_ASSERT_EQUAL(h.status, 200);
    lt_http_free(&h);
    /* The overrun later:1500 is still pending: SIGTERM waits for it (done at 1.5 s). */
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 8000), 0);
}

/* ---- signatures ---- */

static void sign(const char *secret, long long t, const char *id, const char *body, char *hex)
{
    char data[1024];
    int n = snprintf(data, sizeof(data), "%lld.%s.%s", t, id, body);
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)data, (size_t)n, mac,
         &len);
    for (unsigned i = 0; i < len; i++)
        sprintf(hex + 2 * i, "%02x", mac[i]);
}

static long signed_push_id(msm_test_proc_t *c, const char *id, const char *sig_header,
                           const char *body)
{
    lt_http_t h = {.headers = {sig_header, NULL}, .body = body, .body_len = strlen(body)};
    push(c, &h, "any", id, NULL);
    long status = h.status;
    if (status == 401 && !body_code_is(&h, "UNAUTHENTICATED"))
        status = -401;
    lt_http_free(&h);
    return status;
}

static long signed_push(msm_test_proc_t *c, const char *sig_header, const char *body)
{
    return signed_push_id(c, "evt-s", sig_header, body);
}

/* The text of a file (at most @p n - 1 bytes) into @p buf: "" when unreadable. */
static const char *file_text(const char *path, char *buf, size_t n)
{
    size_t len;
    char *text = lt_read_file(path, &len);
    snprintf(buf, n, "%s", text ? text : "");
    free(text);
    return buf;
}

/* A sender without v2 (v1 only) is accepted for one release, with a warning. */
static void test_signature(void)
{
    const char *args[] = {"--secret", "s3cret", NULL};
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    const char *body = "{\"n\":1}";
    long long now = lt_unix_ms() / 1000;
    char good[80], other[80], hdr[400];
    sign("s3cret", now, "evt-s", body, good);
    sign("wrong", now, "evt-s", body, other);

    snprintf(hdr, sizeof(hdr), "Msm-Signature: t=%lld,v1=%s", now, good);
    CU_ASSERT_EQUAL(signed_push(&c, hdr, body), 200);
    /* Rotation: any v1 may match; order of the parts is free. */
    char good2[80];
    sign("s3cret", now, "evt-s2", body, good2);
    snprintf(hdr, sizeof(hdr), "Msm-Signature: v1=%s, t=%lld, v1=%s", other, now, good2);
    CU_ASSERT_EQUAL(signed_push_id(&c, "evt-s2", hdr, body), 200);
    /* The same v1 push again is a replay. */
    CU_ASSERT_EQUAL(signed_push_id(&c, "evt-s2", hdr, body), 401);
    /* Wrong secret, tampered body, missing header, stale timestamp, garbage. */
    snprintf(hdr, sizeof(hdr), "Msm-Signature: t=%lld,v1=%s", now, other);
    CU_ASSERT_EQUAL(signed_push(&c, hdr, body), 401);
    snprintf(hdr, sizeof(hdr), "Msm-Signature: t=%lld,v1=%s", now, good);
    CU_ASSERT_EQUAL(signed_push(&c, hdr, "{\"n\":2}"), 401);
    CU_ASSERT_EQUAL(signed_push(&c, "X-Nothing: 1", body), 401);
    char stale[80];
    sign("s3cret", now - 3600, "evt-s", body, stale);
    snprintf(hdr, sizeof(hdr), "Msm-Signature: t=%lld,v1=%s", now - 3600, stale);
    CU_ASSERT_EQUAL(signed_push(&c, hdr, body), 401);
    CU_ASSERT_EQUAL(signed_push(&c, "Msm-Signature: t=abc,v1=zz", body), 401);
    CU_ASSERT_EQUAL(signed_push(&c, "Msm-Signature: garbage", body), 401);

    /* /debug/info shows the settings with the secret masked. */
    lt_http_t h = {.path = "/debug/info"};
    lt_http(c.port, &h);
    CU_ASSERT_EQUAL(h.status, 200);
    CU_ASSERT_PTR_NULL(h.rbody ? strstr(h.rbody, "s3cret") : "no body");
    CU_ASSERT_PTR_NOT_NULL(h.rbody ? strstr(h.rbody, "\"secret\":\"***\"") : NULL);
    lt_http_free(&h);
    h = (lt_http_t){.path = "/metrics"};
    lt_http(c.port, &h);
    CU_ASSERT_PTR_NOT_NULL(h.rbody ? strstr(h.rbody, "msm_lambda_signature_v1_only_total 2")
                                   : NULL);
    lt_http_free(&h);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
    char log[65536];
    CU_ASSERT_PTR_NOT_NULL(strstr(file_text(c.log, log, sizeof(log)), "v1 signature alone"));
    CU_ASSERT_PTR_NULL(strstr(log, "s3cret"));
}

/* ---- v2 (docs/push.md "Signatures"), computed here with one-shot OpenSSL calls ---- */

typedef struct {
    const char *id, *sub, *attempt, *deadline;
} v2_fields_t;

static void sign_v2(const char *secret, long long t, const v2_fields_t *f, const char *body,
                    char *hex)
{
    unsigned char md[32];
    char body_hex[65], text[1024];
    SHA256((const unsigned char *)body, strlen(body), md);
    for (int i = 0; i < 32; i++)
        sprintf(body_hex + 2 * i, "%02x", md[i]);
    int n = snprintf(text, sizeof(text), "v2\n%lld\n%s\n%s\n%s\n%s\n%s", t, f->id, f->sub,
                     f->attempt, f->deadline, body_hex);
    unsigned char mac[32];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)text, (size_t)n, mac,
         &len);
    for (unsigned i = 0; i < len; i++)
        sprintf(hex + 2 * i, "%02x", mac[i]);
}

/* A single push carrying @p f's headers and the signature header @p sig. @returns the status,
 * -401 for a 401 that is not UNAUTHENTICATED; @p msg gets the error message. */
static long v2_push(msm_test_proc_t *c, const v2_fields_t *f, const char *sig, const char *body,
                    char *msg, size_t msg_size)
{
    char att[64], dl[64];
    snprintf(att, sizeof(att), "Msm-Attempt: %s", f->attempt);
    snprintf(dl, sizeof(dl), "Msm-Deadline: %s", f->deadline);
    lt_http_t h = {.headers = {sig, att, dl, NULL}, .body = body, .body_len = strlen(body)};
    push(c, &h, f->sub, f->id, NULL);
    long status = h.status;
    if (status == 401 && !body_code_is(&h, "UNAUTHENTICATED"))
        status = -401;
    json_t *b = h.rbody ? json_loads(h.rbody, 0, NULL) : NULL;
    const char *m = json_string_value(json_object_get(json_object_get(b, "error"), "message"));
    snprintf(msg, msg_size, "%s", m ? m : "");
    json_decref(b);
    lt_http_free(&h);
    return status;
}

/* Signs @p f with @p secret (v1 and v2 at time @p t) into a whole header line. */
static void v2_header(char *hdr, size_t n, const char *secret, long long t, const v2_fields_t *f,
                      const char *body)
{
    char v1[80], v2[80];
    sign(secret, t, f->id, body, v1);
    sign_v2(secret, t, f, body, v2);
    snprintf(hdr, n, "Msm-Signature: t=%lld,v1=%s,v2=%s", t, v1, v2);
}

static void test_signature_v2(void)
{
    /* Two secrets (rotation): either one signs. */
    const char *args[] = {"--secret", "s3cret,next-s3cret", NULL};
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    const char *body = "{\"n\":1}";
    long long now = lt_unix_ms() / 1000;
    char deadline[32], hdr[400], msg[256];
    snprintf(deadline, sizeof(deadline), "%lld", lt_unix_ms() + 30000);
    v2_fields_t f = {"evt-v2", "orders-push", "3", deadline};

    v2_header(hdr, sizeof(hdr), "s3cret", now, &f, body);
    CU_ASSERT_EQUAL(v2_push(&c, &f, hdr, body, msg, sizeof(msg)), 200);
    /* The same request again: a replay. */
    CU_ASSERT_EQUAL(v2_push(&c, &f, hdr, body, msg, sizeof(msg)), 401);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "replay"));

    /* Headers altered on the way: Msm-Attempt, Msm-Subscription, Msm-Deadline, ce-id. */
    v2_fields_t g = {"evt-v2b", "orders-push", "1", deadline};
    v2_header(hdr, sizeof(hdr), "s3cret", now, &g, body);
    v2_fields_t altered = g;
    altered.attempt = "2";
    CU_ASSERT_EQUAL(v2_push(&c, &altered, hdr, body, msg, sizeof(msg)), 401);
    altered = g;
    altered.sub = "other-sub";
    CU_ASSERT_EQUAL(v2_push(&c, &altered, hdr, body, msg, sizeof(msg)), 401);
    altered = g;
    altered.deadline = "9999999999999";
    CU_ASSERT_EQUAL(v2_push(&c, &altered, hdr, body, msg, sizeof(msg)), 401);
    CU_ASSERT_EQUAL(v2_push(&c, &g, hdr, "{\"n\":2}", msg, sizeof(msg)), 401);
    /* ...and unaltered it is fine (the refusals above did not record it). */
    CU_ASSERT_EQUAL(v2_push(&c, &g, hdr, body, msg, sizeof(msg)), 200);

    /* A good v1 beside a wrong v2 is refused: v2 is required when present. */
    v2_fields_t d = {"evt-v2c", "orders-push", "1", deadline};
    char v1[80], v2[80];
    sign("s3cret", now, d.id, body, v1);
    sign_v2("wrong", now, &d, body, v2);
    snprintf(hdr, sizeof(hdr), "Msm-Signature: t=%lld,v1=%s,v2=%s", now, v1, v2);
    CU_ASSERT_EQUAL(v2_push(&c, &d, hdr, body, msg, sizeof(msg)), 401);
    /* Dropping that v2 leaves a v1-only push: accepted (one release), with the warning. */
    snprintf(hdr, sizeof(hdr), "Msm-Signature: t=%lld,v1=%s", now, v1);
    CU_ASSERT_EQUAL(v2_push(&c, &d, hdr, body, msg, sizeof(msg)), 200);

    /* Rotation: the second secret signs; a secret not configured does not. */
    v2_fields_t r = {"evt-v2d", "orders-push", "1", deadline};
    v2_header(hdr, sizeof(hdr), "next-s3cret", now, &r, body);
    CU_ASSERT_EQUAL(v2_push(&c, &r, hdr, body, msg, sizeof(msg)), 200);
    v2_fields_t u = {"evt-v2e", "orders-push", "1", deadline};
    v2_header(hdr, sizeof(hdr), "s3cret,next-s3cret", now, &u, body);
    CU_ASSERT_EQUAL(v2_push(&c, &u, hdr, body, msg, sizeof(msg)), 401);
    /* A sender mid-rotation may send one v2 per secret; any may match. */
    sign_v2("retired", now, &u, body, v1);
    sign_v2("next-s3cret", now, &u, body, v2);
    snprintf(hdr, sizeof(hdr), "Msm-Signature: t=%lld,v2=%s,v2=%s", now, v1, v2);
    CU_ASSERT_EQUAL(v2_push(&c, &u, hdr, body, msg, sizeof(msg)), 200);
    /* Replaying it signed by the other secret is still the same push. */
    sign_v2("s3cret", now, &u, body, v2);
    snprintf(hdr, sizeof(hdr), "Msm-Signature: t=%lld,v2=%s", now, v2);
    CU_ASSERT_EQUAL(v2_push(&c, &u, hdr, body, msg, sizeof(msg)), 401);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "replay"));
    /* Outside the tolerance window. */
    v2_header(hdr, sizeof(hdr), "s3cret", now - 400, &r, body);
    CU_ASSERT_EQUAL(v2_push(&c, &r, hdr, body, msg, sizeof(msg)), 401);

    lt_http_t h = {.path = "/metrics"};
    lt_http(c.port, &h);
    CU_ASSERT_PTR_NOT_NULL(h.rbody ? strstr(h.rbody, "msm_lambda_rejected_total{reason=\"replay\"} 2")
                                   : NULL);
    CU_ASSERT_PTR_NOT_NULL(h.rbody ? strstr(h.rbody, "msm_lambda_signature_v1_only_total 1")
                                   : NULL);
    lt_http_free(&h);
    /* Neither secret in /debug/info. */
    h = (lt_http_t){.path = "/debug/info"};
    lt_http(c.port, &h);
    CU_ASSERT_EQUAL(h.status, 200);
    CU_ASSERT_PTR_NULL(h.rbody ? strstr(h.rbody, "s3cret") : "no body");
    CU_ASSERT_PTR_NOT_NULL(h.rbody ? strstr(h.rbody, "\"secret\":\"***\"") : NULL);
    lt_http_free(&h);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
    char log[65536];
    file_text(c.log, log, sizeof(log));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "push evt-v2c accepted on a v1 signature alone"));
    CU_ASSERT_PTR_NULL(strstr(log, "s3cret"));
}

/* --replay-cache-size 2: a full cache evicts its oldest entry and refuses whatever is signed
 * at or before that entry's t (it could be a copy of it); later pushes are unaffected. */
static void test_replay_cache_full(void)
{
    const char *args[] = {"--secret", "s3cret", "--replay-cache-size", "2", NULL};
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    const char *body = "{}";
    long long now = lt_unix_ms() / 1000;
    char deadline[32], a[400], b[400], cc[400], hdr[400], msg[256];
    snprintf(deadline, sizeof(deadline), "%lld", lt_unix_ms() + 30000);
    v2_fields_t fa = {"rc-a", "orders-push", "1", deadline}, fb = fa, fc = fa, fd = fa, fe = fa;
    fb.id = "rc-b";
    fc.id = "rc-c";
    fd.id = "rc-d";
    fe.id = "rc-e";
    v2_header(a, sizeof(a), "s3cret", now - 20, &fa, body);
    v2_header(b, sizeof(b), "s3cret", now - 19, &fb, body);
    v2_header(cc, sizeof(cc), "s3cret", now - 18, &fc, body);
    CU_ASSERT_EQUAL(v2_push(&c, &fa, a, body, msg, sizeof(msg)), 200);
    CU_ASSERT_EQUAL(v2_push(&c, &fb, b, body, msg, sizeof(msg)), 200);
    CU_ASSERT_EQUAL(v2_push(&c, &fc, cc, body, msg, sizeof(msg)), 200); /* evicts a */
    /* a's copy: no longer in the cache, but at the floor. */
    CU_ASSERT_EQUAL(v2_push(&c, &fa, a, body, msg, sizeof(msg)), 401);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "replay cache is full"));
    /* A new push signed as early as a: refused the same way (retried, with a new t). */
    v2_header(hdr, sizeof(hdr), "s3cret", now - 20, &fd, body);
    CU_ASSERT_EQUAL(v2_push(&c, &fd, hdr, body, msg, sizeof(msg)), 401);
    /* A later one is fine (and evicts b); c is still known. */
    v2_header(hdr, sizeof(hdr), "s3cret", now, &fe, body);
    CU_ASSERT_EQUAL(v2_push(&c, &fe, hdr, body, msg, sizeof(msg)), 200);
    CU_ASSERT_EQUAL(v2_push(&c, &fc, cc, body, msg, sizeof(msg)), 401);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "received already"));
    CU_ASSERT_EQUAL(v2_push(&c, &fb, b, body, msg, sizeof(msg)), 401);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
}

/* ---- the example's --record ---- */

static void check_record_line(json_t *o,
                              const char *id,
                              int attempt,
                              const char *key,
                              const char *okey,
                              long long t0,
                              long long t1,
                              long long deadline,
                              const char *result)
{
    static const char *const keys[] = {"id",          "subscription", "attempt",
                                       "key",         "ordering_key", "received_ms",
                                       "received_us", "deadline_ms",  "in_flight",
                                       "result",      NULL};
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(json_object_size(o), 10);
    CU_ASSERT_EQUAL(jint(o, "deadline_ms"), deadline); /* Msm-Deadline, 0 when absent */
    /* Pushed one at a time: only itself was in progress. */
    CU_ASSERT_EQUAL(jint(o, "in_flight"), 1);
    for (int i = 0; keys[i]; i++)
        CU_ASSERT_PTR_NOT_NULL(json_object_get(o, keys[i]));
    CU_ASSERT_STRING_EQUAL(jstr(o, "id"), id);
    CU_ASSERT_STRING_EQUAL(jstr(o, "subscription"), "rec-sub");
    CU_ASSERT_TRUE(json_is_integer(json_object_get(o, "attempt")));
    CU_ASSERT_EQUAL(jint(o, "attempt"), attempt);
    if (key) {
        CU_ASSERT_STRING_EQUAL(jstr(o, "key"), key);
    } else {
        CU_ASSERT_TRUE(json_is_null(json_object_get(o, "key")));
    }
    if (okey) {
        CU_ASSERT_STRING_EQUAL(jstr(o, "ordering_key"), okey);
    } else {
        CU_ASSERT_TRUE(json_is_null(json_object_get(o, "ordering_key")));
    }
    CU_ASSERT_TRUE(json_is_integer(json_object_get(o, "received_ms")));
    CU_ASSERT_TRUE(jint(o, "received_ms") >= t0 && jint(o, "received_ms") <= t1);
    /* The same instant in microseconds. */
    CU_ASSERT_TRUE(json_is_integer(json_object_get(o, "received_us")));
    CU_ASSERT_EQUAL(jint(o, "received_us") / 1000, jint(o, "received_ms"));
    CU_ASSERT_STRING_EQUAL(jstr(o, "result"), result);
}

static void test_record(void)
{
    char rec[512];
    path_in_dir(rec, sizeof(rec), "record");
    const char *args[] = {"--record", rec, NULL};
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    long long t0 = lt_unix_ms();
    lt_http_t h = {.headers = {"Msm-Key: k1", "Msm-Ordering-Key: o1", "Msm-Attempt: 2",
                                "Msm-Deadline: 4102444800000", NULL}};
    push(&c, &h, "rec-sub", "r1", NULL);
    CU_ASSERT_EQUAL(h.status, 200);
    lt_http_free(&h);
    h = (lt_http_t){0};
    push(&c, &h, "rec-sub", "r2", NULL);
    CU_ASSERT_EQUAL(h.status, 200);
    lt_http_free(&h);
    long long t1 = lt_unix_ms();
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);

    /* Always fatal, then always retry: answers and records agree. */
    const char *fatal_args[] = {"--record", rec, "--fatal-rate", "1", NULL};
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, fatal_args), 0);
    h = (lt_http_t){0};
    push(&c, &h, "rec-sub", "r3", NULL);
    CU_ASSERT_EQUAL(h.status, 500);
    char v[16];
    CU_ASSERT_TRUE(lt_http_header(&h, "Msm-Status", v, sizeof(v)) && strcmp(v, "fatal") == 0);
    lt_http_free(&h);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
    const char *retry_args[] = {"--record", rec, "--fail-rate", "1", NULL};
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, retry_args), 0);
    h = (lt_http_t){0};
    push(&c, &h, "rec-sub", "r4", NULL);
    CU_ASSERT_EQUAL(h.status, 503);
    CU_ASSERT_TRUE(lt_http_header(&h, "Msm-Status", v, sizeof(v)) && strcmp(v, "retry") == 0);
    lt_http_free(&h);
    long long t2 = lt_unix_ms();
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);

    size_t len;
    char *text = lt_read_file(rec, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    json_t *lines[8] = {0};
    int n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && n < 8;
         l = strtok_r(NULL, "\n", &save))
        lines[n++] = json_loads(l, 0, NULL);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT_EQUAL(text[len - 1], '\0'); /* strtok replaced the last '\n' */
    check_record_line(lines[0], "r1", 2, "k1", "o1", t0, t1, 4102444800000, "ok");
    check_record_line(lines[1], "r2", 1, NULL, NULL, t0, t1, 0, "ok");
    check_record_line(lines[2], "r3", 1, NULL, NULL, t0, t2, 0, "fatal");
    check_record_line(lines[3], "r4", 1, NULL, NULL, t0, t2, 0, "retry");
    for (int i = 0; i < n; i++)
        json_decref(lines[i]);
    free(text);
}

/* Two processes appending to one record file at once: every line stays whole. */
typedef struct {
    msm_test_proc_t *pc_child;
    int pc_count;
    int pc_ok;
} pusher_t;

static void *pusher_main(void *arg)
{
    pusher_t *p = arg;
    for (int i = 0; i < p->pc_count; i++) {
        lt_http_t h = {.headers = {"Msm-Key: a-key-long-enough-to-make-lines-longer", NULL}};
        char id[64];
        snprintf(id, sizeof(id), "w%d-%d", p->pc_child->port, i);
        push(p->pc_child, &h, "rec-sub", id, NULL);
        p->pc_ok += h.status == 200;
        lt_http_free(&h);
    }
    return NULL;
}

static void test_record_concurrent_writers(void)
{
    char rec[512];
    path_in_dir(rec, sizeof(rec), "shared-record");
    const char *args[] = {"--record", rec, NULL};
    msm_test_proc_t a, b;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&a, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&b, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    pusher_t pa = {&a, 60, 0}, pb = {&b, 60, 0};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, pusher_main, &pa);
    pthread_create(&tb, NULL, pusher_main, &pb);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CU_ASSERT_EQUAL(pa.pc_ok + pb.pc_ok, 120);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&a, SIGTERM, 5000), 0);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&b, SIGTERM, 5000), 0);
    char *text = lt_read_file(rec, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    int lines = 0, valid = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *o = json_loads(l, 0, NULL);
        lines++;
        valid += o && json_object_size(o) == 10;
        json_decref(o);
    }
    CU_ASSERT_EQUAL(lines, 120);
    CU_ASSERT_EQUAL(valid, 120);
    free(text);
}

/* ---- --latency-ms: late answers, the loop keeps serving ---- */

typedef struct {
    msm_test_proc_t *lc_child;
    lt_http_t lc_h;
    const char *lc_id;
} latent_t;

static void *latent_main(void *arg)
{
    latent_t *l = arg;
    push(l->lc_child, &l->lc_h, "lat-sub", l->lc_id, NULL);
    return NULL;
}

static void test_latency_does_not_block(void)
{
    const int latency = 600;
    const char *args[] = {"--latency-ms", "600", NULL};
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    latent_t a = {.lc_child = &c, .lc_id = "l1"}, b = {.lc_child = &c, .lc_id = "l2"};
    pthread_t ta, tb;
    double t0 = lt_now_ms();
    pthread_create(&ta, NULL, latent_main, &a);
    pthread_create(&tb, NULL, latent_main, &b);
    /* Meanwhile the loop answers at once. */
    usleep(100 * 1000);
    lt_http_t health = {.path = "/healthz"};
    lt_http(c.port, &health);
    CU_ASSERT_EQUAL(health.status, 200);
    CU_ASSERT_TRUE(health.secs < 0.3);
    lt_http_free(&health);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    double total = lt_now_ms() - t0;
    CU_ASSERT_EQUAL(a.lc_h.status, 200);
    CU_ASSERT_EQUAL(b.lc_h.status, 200);
    CU_ASSERT_TRUE(a.lc_h.secs * 1000 >= latency - 20 && b.lc_h.secs * 1000 >= latency - 20);
    /* Both in about one latency, not two. */
    CU_ASSERT_TRUE(total < latency * 1.6);
    if (total >= latency * 1.6)
        fprintf(stderr, "two latent requests took %.0f ms\n", total);
    lt_http_free(&a.lc_h);
    lt_http_free(&b.lc_h);

    /* The metrics count them. */
    lt_http_t m = {.path = "/metrics"};
    lt_http(c.port, &m);
    CU_ASSERT_PTR_NOT_NULL(
        m.rbody ? strstr(m.rbody, "msm_lambda_invocations_total{handler=\"*\",result=\"ok\"} 2")
                : NULL);
    lt_http_free(&m);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
}

/* ---- --max-concurrent and --fail-attr ---- */

/* The record's line of @p id among @p n lines (NULL when absent). */
static json_t *line_of(json_t **lines, int n, const char *id)
{
    for (int i = 0; i < n; i++) {
        if (lines[i] && strcmp(jstr(lines[i], "id"), id) == 0)
            return lines[i];
    }
    return NULL;
}

/* Two invocations wait on --latency-ms: a third is refused as an overloaded endpoint would
 * (429, no Retry-After); each line counts what was in progress when it arrived. A poison
 * event answers retry whatever --fail-rate says. */
static void test_max_concurrent_and_fail_attr(void)
{
    char rec[512];
    path_in_dir(rec, sizeof(rec), "overload");
    const char *args[] = {"--record", rec,           "--latency-ms",  "800", "--max-concurrent",
                          "2",        "--fail-attr", "tenant=poison", NULL};
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    latent_t a = {.lc_child = &c, .lc_id = "m1"}, b = {.lc_child = &c, .lc_id = "m2"};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, latent_main, &a);
    usleep(100 * 1000); /* m1 arrives first: in_flight 1, then m2: 2 */
    pthread_create(&tb, NULL, latent_main, &b);
    usleep(200 * 1000);
    lt_http_t h = {0};
    push(&c, &h, "lat-sub", "m3", NULL);
    CU_ASSERT_EQUAL(h.status, 429);
    char v[32];
    CU_ASSERT_PTR_NULL(lt_http_header(&h, "Retry-After", v, sizeof(v)));
    CU_ASSERT_TRUE(lt_http_header(&h, "Msm-Status", v, sizeof(v)) && strcmp(v, "retry") == 0);
    CU_ASSERT_TRUE(body_code_is(&h, "OVERLOADED"));
    CU_ASSERT_TRUE(h.secs < 0.5); /* refused at once, not after the latency */
    lt_http_free(&h);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CU_ASSERT_EQUAL(a.lc_h.status, 200);
    CU_ASSERT_EQUAL(b.lc_h.status, 200);
    lt_http_free(&a.lc_h);
    lt_http_free(&b.lc_h);

    /* Once they are done there is room again; the poison event still fails. */
    h = (lt_http_t){.headers = {"Msm-Attr-tenant: poison", NULL}};
    push(&c, &h, "lat-sub", "p1", NULL);
    CU_ASSERT_EQUAL(h.status, 503);
    CU_ASSERT_TRUE(h.rbody && strstr(h.rbody, "poison"));
    lt_http_free(&h);
    h = (lt_http_t){.headers = {"Msm-Attr-tenant: healthy", NULL}};
    push(&c, &h, "lat-sub", "p2", NULL);
    CU_ASSERT_EQUAL(h.status, 200);
    lt_http_free(&h);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);

    char *text = lt_read_file(rec, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    json_t *lines[8] = {0};
    int n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && n < 8;
         l = strtok_r(NULL, "\n", &save))
        lines[n++] = json_loads(l, 0, NULL);
    CU_ASSERT_EQUAL(n, 5);
    const struct {
        const char *id;
        int in_flight;
        const char *result;
    } want[] = {
        {"m1", 1, "ok"}, {"m2", 2, "ok"}, {"m3", 3, "retry"}, {"p1", 1, "retry"}, {"p2", 1, "ok"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        json_t *o = line_of(lines, n, want[i].id);
        CU_ASSERT_PTR_NOT_NULL(o);
        if (!o)
            continue;
        CU_ASSERT_EQUAL(jint(o, "in_flight"), want[i].in_flight);
        CU_ASSERT_STRING_EQUAL(jstr(o, "result"), want[i].result);
    }
    for (int i = 0; i < n; i++)
        json_decref(lines[i]);
    free(text);

    /* A --fail-attr without '=' cannot start. */
    char out[512], cmd[1024];
    path_in_dir(out, sizeof(out), "bad-fail-attr");
    snprintf(cmd, sizeof(cmd), "%s --port 0 --fail-attr tenant > %s 2>&1", MSM_EXAMPLE_LAMBDA, out);
    CU_ASSERT_EQUAL(WEXITSTATUS(system(cmd)), 1);
    char *log = lt_read_file(out, NULL);
    CU_ASSERT_PTR_NOT_NULL(log ? strstr(log, "NAME=VALUE") : NULL);
    free(log);
}

/* ---- SIGTERM ---- */

static void test_sigterm_drains(void)
{
    /* Idle: exits 0 promptly. */
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, NULL), 0);
    double t0 = lt_now_ms();
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
    CU_ASSERT_TRUE(lt_now_ms() - t0 < 1500);
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, NULL), 0);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGINT, 5000), 0);

    /* Busy: the push in flight is answered 200, new connections are refused, exit 0. */
    const char *args[] = {"--latency-ms", "700", NULL};
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    latent_t a = {.lc_child = &c, .lc_id = "t1"};
    pthread_t ta;
    pthread_create(&ta, NULL, latent_main, &a);
    usleep(200 * 1000);
    kill(c.pid, SIGTERM);
    usleep(150 * 1000);
    lt_http_t late = {.path = "/healthz", .timeout_ms = 2000};
    lt_http(c.port, &late);
    CU_ASSERT_EQUAL(late.rc, CURLE_COULDNT_CONNECT);
    lt_http_free(&late);
    pthread_join(ta, NULL);
    CU_ASSERT_EQUAL(a.lc_h.status, 200);
    lt_http_free(&a.lc_h);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, 0, 5000), 0);

    /* A second signal does not wait for the handler: 503 for it, exit status 1. */
    const char *slow[] = {"--latency-ms", "20000", NULL};
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, slow), 0);
    latent_t b = {.lc_child = &c, .lc_id = "t2"};
    pthread_create(&ta, NULL, latent_main, &b);
    usleep(200 * 1000);
    kill(c.pid, SIGTERM);
    usleep(100 * 1000);
    t0 = lt_now_ms();
    int st = msm_test_proc_stop(&c, SIGTERM, 5000);
    CU_ASSERT_EQUAL(st, 1);
    if (st != 1)
        fprintf(stderr, "second SIGTERM: exit status %d (log %s)\n", st, c.log);
    CU_ASSERT_TRUE(lt_now_ms() - t0 < 2000);
    pthread_join(ta, NULL);
    CU_ASSERT_EQUAL(b.lc_h.status, 503);
    lt_http_free(&b.lc_h);
}

/* ---- API.md's example ---- */

static void test_api_example(void)
{
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_API_EXAMPLE_LAMBDA, NULL), 0);
    lt_http_t h = {0};
    push(&c, &h, "orders-sub", "o-1", NULL);
    CU_ASSERT_EQUAL(h.status, 200);
    lt_http_free(&h);
    h = (lt_http_t){0};
    push(&c, &h, "other-sub", "o-2", NULL);
    CU_ASSERT_EQUAL(h.status, 404);
    lt_http_free(&h);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
    char *log = lt_read_file(c.log, NULL);
    CU_ASSERT_PTR_NOT_NULL(log ? strstr(log, "order o-1 (event=o-1 subscription=orders-sub")
                               : NULL);
    free(log);
}

/* ---- batch push (API.md "Batch push") ---- */

/* POSTs @p body as a batch push; @returns the parsed answer (NULL when not JSON). */
static json_t *batch_push_at(msm_test_proc_t *c, const char *body, const char *sig,
                             long long deadline_ms, long *status)
{
    char dl[64];
    snprintf(dl, sizeof(dl), "Msm-Deadline: %lld", deadline_ms);
    lt_http_t h = {.headers = {"Content-Type: application/cloudevents-batch+json",
                               "Msm-Subscription: sub-a", dl, sig, NULL},
                   .body = body,
                   .body_len = strlen(body)};
    lt_http(c->port, &h);
    *status = h.status;
    json_t *o = h.rbody ? json_loads(h.rbody, 0, NULL) : NULL;
    lt_http_free(&h);
    return o;
}

static json_t *batch_push(msm_test_proc_t *c, const char *body, const char *sig, long *status)
{
    return batch_push_at(c, body, sig, lt_unix_ms() + 5000, status);
}

static const char *result_of(json_t *answer, const char *id)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(answer, "results"), i, r) {
        if (strcmp(jstr(r, "id"), id) == 0)
            return jstr(r, "status");
    }
    return NULL;
}

/* One request, one handler call per event, one result per event as the handler answered
 * (a late one included); an event of no handled subscription is "retry". */
static void test_batch_push(void)
{
    char out[512];
    path_in_dir(out, sizeof(out), "echo");
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(start_echo(&c, out, 0), 0);
    const char *body =
        "[{\"specversion\":\"1.0\",\"id\":\"b1\",\"source\":\"/msm/topics/orders\","
        "\"type\":\"msm.event\",\"time\":\"2025-11-25T12:00:00.123Z\","
        "\"datacontenttype\":\"application/json\",\"msmsubscription\":\"sub-a\","
        "\"msmattempt\":3,\"msmkey\":\"k1\",\"msmorderingkey\":\"o1\",\"want\":\"ok\","
        "\"region\":\"eu\",\"subject\":\"o-1\",\"msmsourceid\":\"prod-1\","
        "\"partitionkey\":\"pk-1\",\"data\":{\"n\":1}},"
        "{\"specversion\":\"1.0\",\"id\":\"b2\",\"source\":\"/msm/topics/orders\","
        "\"type\":\"msm.event\",\"datacontenttype\":\"application/octet-stream\","
        "\"msmattempt\":1,\"want\":\"retry\",\"data_base64\":\"aGk=\"},"
        "{\"specversion\":\"1.0\",\"id\":\"b3\",\"source\":\"/msm/topics/orders\","
        "\"type\":\"msm.event\",\"want\":\"fatal\"},"
        "{\"specversion\":\"1.0\",\"id\":\"b4\",\"source\":\"/msm/topics/orders\","
        "\"type\":\"msm.event\",\"want\":\"later:100\"},"
        "{\"specversion\":\"1.0\",\"id\":\"b5\",\"source\":\"/msm/topics/orders\","
        "\"type\":\"msm.event\",\"msmsubscription\":\"nobody\"}]";
    long status;
    json_t *a = batch_push(&c, body, NULL, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(a, "results")), 5);
    CU_ASSERT_STRING_EQUAL(result_of(a, "b1"), "ok");
    CU_ASSERT_STRING_EQUAL(result_of(a, "b2"), "retry");
    CU_ASSERT_STRING_EQUAL(result_of(a, "b3"), "fatal");
    CU_ASSERT_STRING_EQUAL(result_of(a, "b4"), "ok");
    CU_ASSERT_STRING_EQUAL(result_of(a, "b5"), "retry");
    json_decref(a);

    size_t len;
    char *text = lt_read_file(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    int n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        json_t *o = json_loads(l, 0, NULL);
        n++;
        if (o && strcmp(jstr(o, "id"), "b1") == 0) {
            CU_ASSERT_STRING_EQUAL(jstr(o, "subscription"), "sub-a");
            CU_ASSERT_STRING_EQUAL(jstr(o, "topic"), "orders");
            CU_ASSERT_EQUAL(jint(o, "attempt"), 3);
            CU_ASSERT_STRING_EQUAL(jstr(o, "key"), "k1");
            CU_ASSERT_STRING_EQUAL(jstr(o, "ordering_key"), "o1");
            CU_ASSERT_STRING_EQUAL(jstr(o, "content_type"), "application/json");
            CU_ASSERT_STRING_EQUAL(jstr(o, "payload"), "{\"n\":1}");
            CU_ASSERT_EQUAL(jint(o, "time_ms"), 1764072000123LL);
            CU_ASSERT(jint(o, "deadline_ms") > lt_unix_ms());
            CU_ASSERT_STRING_EQUAL(jstr(o, "subject"), "o-1");
            CU_ASSERT_STRING_EQUAL(jstr(o, "source_id"), "prod-1");
            CU_ASSERT_STRING_EQUAL(jstr(o, "ext_partitionkey"), "pk-1");
        }
        if (o && strcmp(jstr(o, "id"), "b2") == 0)
            CU_ASSERT_STRING_EQUAL(jstr(o, "payload"), "hi");
        json_decref(o);
    }
    CU_ASSERT_EQUAL(n, 4); /* b5 reached no handler */
    free(text);

    /* Not an array: 400, as a malformed single push. */
    a = batch_push(&c, "{\"id\":\"x\"}", NULL, &status);
    CU_ASSERT_EQUAL(status, 400);
    json_decref(a);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
}

/* --secret: a batch is signed as a single push with an empty ce-id and an empty Msm-Attempt
 * (v1 over "<t>..<body>"); a replayed or re-addressed batch is refused; the example's
 * --record has one line per event. */
static void test_batch_push_signed_record(void)
{
    char rec[512];
    path_in_dir(rec, sizeof(rec), "record");
    const char *args[] = {"--secret", "s3cret", "--record", rec, NULL};
    msm_test_proc_t c;
    CU_ASSERT_EQUAL_FATAL(lt_child_start(&c, dir, MSM_EXAMPLE_LAMBDA, args), 0);
    const char *body = "[{\"specversion\":\"1.0\",\"id\":\"s1\",\"source\":\"/msm/topics/t\","
                       "\"type\":\"msm.event\",\"msmsubscription\":\"rec-sub\","
                       "\"msmattempt\":2,\"msmkey\":\"k\",\"data\":1},"
                       "{\"specversion\":\"1.0\",\"id\":\"s2\",\"source\":\"/msm/topics/t\","
                       "\"type\":\"msm.event\",\"msmsubscription\":\"rec-sub\",\"data\":2}]";
    long long now = lt_unix_ms() / 1000, deadline = lt_unix_ms() + 5000;
    char dl[32], sig[400];
    snprintf(dl, sizeof(dl), "%lld", deadline);
    v2_fields_t f = {"", "sub-a", "", dl}; /* batch_push_at() sends Msm-Subscription: sub-a */
    v2_header(sig, sizeof(sig), "s3cret", now, &f, body);
    v2_fields_t other_sub = {"", "sub-b", "", dl};
    char wrong[400];
    v2_header(wrong, sizeof(wrong), "s3cret", now, &other_sub, body);
    long long t0 = lt_unix_ms();
    long status;
    json_t *a = batch_push(&c, body, "X-Nothing: 1", &status);
    CU_ASSERT_EQUAL(status, 401);
    json_decref(a);
    a = batch_push_at(&c, body, wrong, deadline, &status); /* signed for another subscription */
    CU_ASSERT_EQUAL(status, 401);
    json_decref(a);
    a = batch_push_at(&c, body, sig, deadline, &status);
    CU_ASSERT_EQUAL(status, 200);
    CU_ASSERT_STRING_EQUAL(result_of(a, "s1"), "ok");
    CU_ASSERT_STRING_EQUAL(result_of(a, "s2"), "ok");
    json_decref(a);
    a = batch_push_at(&c, body, sig, deadline, &status); /* replayed */
    CU_ASSERT_EQUAL(status, 401);
    json_decref(a);
    long long t1 = lt_unix_ms();
    CU_ASSERT_EQUAL(msm_test_proc_stop(&c, SIGTERM, 5000), 0);
    size_t len;
    char *text = lt_read_file(rec, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    json_t *lines[4] = {0};
    int n = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l && n < 4;
         l = strtok_r(NULL, "\n", &save))
        lines[n++] = json_loads(l, 0, NULL);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    check_record_line(lines[0], "s1", 2, "k", NULL, t0, t1, deadline, "ok");
    check_record_line(lines[1], "s2", 1, NULL, NULL, t0, t1, deadline, "ok");
    for (int i = 0; i < n; i++)
        json_decref(lines[i]);
    free(text);
}

static CU_TestInfo lambda_tests[] = {
    {"--help, --version, bad flags", test_flags},
    {"headers to event fields", test_event_round_trip},
    {"ok/retry/fatal answers", test_status_mapping},
    {"unknown subscription, exact before *", test_unknown_subscription},
    {"deadlines count as retry", test_deadlines},
    {"Msm-Signature v1 only: accepted with a warning", test_signature},
    {"Msm-Signature v2: headers signed, replays refused, two secrets", test_signature_v2},
    {"replay cache full: oldest evicted, floor refuses older", test_replay_cache_full},
    {"--record lines", test_record},
    {"--record from two processes", test_record_concurrent_writers},
    {"--latency-ms answers late without blocking", test_latency_does_not_block},
    {"--max-concurrent answers 429, --fail-attr retry", test_max_concurrent_and_fail_attr},
    {"SIGTERM drains and exits 0", test_sigterm_drains},
    {"API.md's three-line lambda", test_api_example},
    {"batch push: one handler call and one result per event", test_batch_push},
    {"batch push: signature with an empty ce-id and attempt, --record per event",
     test_batch_push_signed_record},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"lambda", suite_init, suite_clean, NULL, NULL, lambda_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
