/* SPDX-License-Identifier: MIT */
/* The frontend test fixture: one redis-server and one in-process frontend per test binary,
 * HTTP requests on the same loop, and a blocking view of Redis. */
#ifndef MSM_FE_FIXTURE_H
#define MSM_FE_FIXTURE_H

#include "msm_test.h"

#include "frontend.h"

#include "msm/http_client.h"
#include "msm/metrics.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stddef.h>

#define APPEND_TIMEOUT_MS 1500
#define MAX_EVENT_BYTES   4096
#define MAX_BODY_BYTES    (256 * 1024)
#define TRACEPARENT       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

typedef struct {
    msm_test_redis_t srv;
    char ns[64];
    msm_loop_t *loop;
    msm_redis_t *redis;
    msm_stream_t *stream;
    msm_http_server_t *http;
    msm_metrics_t *metrics;
    msm_http_client_t *client;
    fe_t *fe;
    redisContext *sync; /* the test's own blocking view of Redis */
    char base[64];
} fixture_t;

typedef struct {
    int done;
    int err;
    int status;
    char *body; /* NUL-terminated copy of the body (len bytes) */
    size_t len;
    json_t *json;
    uint64_t ms;
} resp_t;

extern fixture_t F;

int ready_probe(void *opaque, char *why, size_t n);
int frontend_up(void);
int suite_init(void);
int suite_clean(void);
void resp_clear(resp_t *r);
void on_response(msm_http_client_t *cl, msm_http_call_t *call,
                        const msm_http_result_t *res, void *opaque);
void http_h(resp_t *r, const char *method, const char *path, const char *body,
                   size_t len, const char *hname, const char *hvalue);
void http(resp_t *r, const char *method, const char *path, const char *body);
const char *jstr(const json_t *o, const char *key);
const char *err_code(const resp_t *r);
redisReply *cmd(const char *fmt, ...);
void http_hs(resp_t *r, const char *method, const char *path, const char *body, size_t len,
             const msm_http_header_t *hs, size_t n);
json_int_t jint(const json_t *o, const char *key);
int has_detail(const resp_t *r, const char *field);
long long cmd_int(const char *fmt, ...);
long long stream_len(const char *name, int partitions);
void put_topic(const char *name, const char *body);
void put_sub(const char *name, const char *topic);

#endif
