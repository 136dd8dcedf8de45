/* SPDX-License-Identifier: MIT */
/* The frontend test fixture (fe_fixture.h). */
#include "fe_fixture.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/stream.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the fixture: one redis-server, one frontend, per test binary ---- */


fixture_t F;

/* The ready callback is fixed when the server is made, before the frontend exists. */
int ready_probe(void *opaque, char *why, size_t n)
{
    (void)opaque;
    return F.fe ? fe_ready(F.fe, why, n) : 0;
}

int frontend_up(void)
{
    char err[256];
    msm_redis_conf_t rc = {.url = F.srv.url, .ns = F.ns, .command_timeout_ms = 1000};
    msm_stream_conf_t sc = {.backend = MSM_STREAM_REDIS, .redis_url = F.srv.url,
                            .name_prefix = F.ns, .append_timeout_ms = APPEND_TIMEOUT_MS};
    F.redis = msm_redis_new(F.loop, &rc, err, sizeof(err));
    F.stream = msm_stream_new(F.loop, &sc, err, sizeof(err));
    msm_http_server_conf_t hc;
    msm_http_server_conf_init(&hc);
    hc.bind_address = "127.0.0.1";
    hc.port = 0;
    hc.max_body_bytes = MAX_BODY_BYTES;
    hc.metrics = F.metrics;
    hc.ready = ready_probe;
    F.http = msm_http_server_new(F.loop, &hc, err, sizeof(err));
    if (!F.redis || !F.stream || !F.http)
        return -1;
    snprintf(F.base, sizeof(F.base), "http://127.0.0.1:%u", msm_http_server_port(F.http));
    fe_deps_t deps = {F.loop, F.redis, F.stream, F.http, F.metrics};
    /* A slow poll: a publish right after PUT topic must not depend on it. */
    /* Endpoints on loopback are refused unless allowed; 10.1.0.0/16 for the netpolicy test. */
    fe_settings_t set = {.max_event_bytes = MAX_EVENT_BYTES,
                         .registry_poll_ms = 5000,
                         .allow_networks = "127.0.0.0/8,::1,10.1.0.0/16",
                         .deny_networks = "10.1.99.0/24"};
    F.fe = fe_new(&deps, &set, err, sizeof(err));
    if (!F.fe) {
        fprintf(stderr, "fe_new: %s\n", err);
        return -1;
    }
    volatile int loaded = 0;
    for (int i = 0; i < 200 && !loaded; i++) {
        msm_test_spin(F.loop, 10);
        loaded = fe_registry_loaded(F.fe);
    }
    return loaded ? 0 : -1;
}

int suite_init(void)
{
    msm_log_setup("test-frontend", MSM_LOG_WARN, MSM_LOG_LOGFMT, NULL);
    memset(&F, 0, sizeof(F));
    if (msm_test_redis_start(&F.srv) != 0)
        return -1;
    msm_test_namespace(F.ns, sizeof(F.ns));
    F.loop = msm_loop_new();
    F.metrics = msm_metrics_new();
    char err[256];
    F.client = msm_http_client_new(F.loop, NULL, err, sizeof(err));
    struct timeval tv = {2, 0};
    F.sync = redisConnectWithTimeout("127.0.0.1", F.srv.port, tv);
    if (!F.loop || !F.metrics || !F.client || !F.sync || F.sync->err)
        return -1;
    return frontend_up();
}

int suite_clean(void)
{
    fe_free(F.fe);
    msm_http_client_free(F.client);
    msm_http_server_free(F.http);
    msm_stream_free(F.stream);
    msm_redis_free(F.redis);
    msm_metrics_free(F.metrics);
    msm_loop_free(F.loop);
    if (F.sync)
        redisFree(F.sync);
    msm_test_redis_destroy(&F.srv);
    return 0;
}

/* ---- HTTP on the loop ---- */


void resp_clear(resp_t *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

void on_response(msm_http_client_t *cl, msm_http_call_t *call,
                        const msm_http_result_t *res, void *opaque)
{
    (void)cl;
    (void)call;
    resp_t *r = opaque;
    r->err = res->err;
    r->status = res->status;
    r->body = malloc(res->body_len + 1);
    if (r->body) {
        if (res->body_len)
            memcpy(r->body, res->body, res->body_len);
        r->body[res->body_len] = '\0';
        r->len = res->body_len;
    }
    r->json = json_loadb(res->body ? res->body : "", res->body_len, JSON_DECODE_ANY, NULL);
    r->ms = res->latency_ms;
    r->done = 1;
}

/* One request with headers @p hs (Content-Type among them when wanted). */
void http_hs(resp_t *r, const char *method, const char *path, const char *body, size_t len,
             const msm_http_header_t *hs, size_t n)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", F.base, path);
    msm_http_request_t req = {.method = method, .url = url, .headers = hs, .n_headers = n,
                              .body = body, .body_len = body ? len : 0, .timeout_ms = 10000};
    memset(r, 0, sizeof(*r));
    CU_ASSERT_EQUAL_FATAL(msm_http_client_request(F.client, &req, on_response, r, NULL), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_wait_flag(F.loop, &r->done, 15000), 0);
    CU_ASSERT_EQUAL(r->err, MSM_OK);
}

/* One JSON request with an optional extra header ("Name: value" split in two). */
void http_h(resp_t *r, const char *method, const char *path, const char *body,
                   size_t len, const char *hname, const char *hvalue)
{
    msm_http_header_t headers[2] = {{"Content-Type", "application/json"}, {hname, hvalue}};
    http_hs(r, method, path, body, len, headers, hname ? 2 : 1);
}


void http(resp_t *r, const char *method, const char *path, const char *body)
{
    http_h(r, method, path, body, body ? strlen(body) : 0, NULL, NULL);
}

const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

json_int_t jint(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

const char *err_code(const resp_t *r)
{
    return jstr(json_object_get(r->json, "error"), "code");
}

/* Non-zero when the error body's details name @p field. */
int has_detail(const resp_t *r, const char *field)
{
    json_t *details = json_object_get(json_object_get(r->json, "error"), "details");
    size_t i;
    json_t *d;
    json_array_foreach(details, i, d) {
        const char *f = jstr(d, "field");
        if (f && strcmp(f, field) == 0)
            return 1;
    }
    return 0;
}

redisReply *cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(F.sync, fmt, ap);
    va_end(ap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    return r;
}

long long cmd_int(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(F.sync, fmt, ap);
    va_end(ap);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    long long v = r->type == REDIS_REPLY_INTEGER  ? r->integer
                  : r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10)
                                                  : -1;
    freeReplyObject(r);
    return v;
}

/* Entries in every partition of a log stream (docs/log-redis.md key layout). */
long long stream_len(const char *name, int partitions)
{
    long long n = 0;
    for (int p = 0; p < partitions; p++)
        n += cmd_int("XLEN %s:log:{%s}:%d", F.ns, name, p);
    return n;
}

void put_topic(const char *name, const char *body)
{
    char path[256];
    resp_t r;
    snprintf(path, sizeof(path), "/v1/topics/%s", name);
    http(&r, "PUT", path, body);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
}

void put_sub(const char *name, const char *topic)
{
    char path[256], body[512];
    resp_t r;
    snprintf(path, sizeof(path), "/v1/subscriptions/%s", name);
    snprintf(body, sizeof(body),
             "{\"topic\":\"%s\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"},"
             "{\"url\":\"http://127.0.0.1:9001/\",\"zone\":\"b\"}],\"max_concurrency\":7,"
             "\"rate_limit_per_s\":12}",
             topic);
    http(&r, "PUT", path, body);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
}
