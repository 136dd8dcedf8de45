/* SPDX-License-Identifier: MIT */
/* msm-router in-process: a real redis-server (registry, dispatch.<sub> records of
 * TaskBatches, status.<sub> records of OutcomeBatches) and a real HTTP endpoint
 * (msm/http_server.h on the same loop, ephemeral port) that records what it receives and
 * answers as each test says. Checks the pushed request header by header, the signature,
 * the outcome of every kind of answer, header injection, bounded concurrency, weighted
 * round robin, graceful stop, a kill-and-restart, records of many tasks acknowledged only
 * once all their outcomes are durable, expired leases (not pushed) and batch push. */
#include "msm_test.h"
#include "router.h"

#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/http_server.h"
#include "msm/log.h"
#include "msm/registry.h"
#include "msm/time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REQS  64
#define MAX_OUTS  64
#define MAX_STATUS 64
#define PUBLISHED 1764072000123LL /* 2025-11-25T12:00:00.123Z */
#define SECRET    "s3cr3t"

static msm_test_redis_t redis_srv;

/* ---- the endpoint ---- */

typedef enum {
    ANSWER_200,
    ANSWER_500,
    ANSWER_429,
    ANSWER_FATAL,
    ANSWER_BATCH, /* {"results":[…]}: each event's "verdict" attribute, "omit" leaves it out */
    HOLD, /* keep the request unanswered until the test says */
} ep_mode_t;

/* The request headers a test looks at (the server can only be asked by name). */
static const char *const seen_names[] = {
    "ce-specversion", "ce-id",          "ce-source",       "ce-type",        "ce-time",
    "Content-Type",   "Msm-Subscription", "Msm-Attempt",   "Msm-Deadline",   "Msm-Key",
    "Msm-Ordering-Key", "traceparent",  "tracestate",      "Msm-Signature",  "Msm-Attr-type",
    "Msm-Attr-region", "Msm-Attr-evil", "X-Evil",          "X-Evil2",        "Msm-Attr-good",
    "ce-subject",     "ce-dataschema",  "ce-msmsourceid",  "ce-partitionkey", "ce-plain",
    "ce-evil",        "ce-good",        "Msm-Attr-plain",  "X-Evil3",         NULL};
#define NSEEN (sizeof(seen_names) / sizeof(seen_names[0]) - 1)

typedef struct {
    char *h[NSEEN];
    char *body;
    size_t body_len;
    char path[64];
    int64_t at_ms;
} req_rec_t;

typedef struct {
    msm_loop_t *loop;
    msm_redis_t *redis;
    msm_stream_t *stream;
    msm_metrics_t *metrics;
    msm_http_server_t *ep;
    router_t *rt;
    msm_consumer_t *status;
    char ns[64];
    char sub[64];
    char member[96];
    int max_in_flight; /* the router's --push.max_in_flight; 0: its default */
    const char *allow_networks; /* the router's; NULL: loopback (127.0.0.0/8,::1) */
    const char *deny_networks;  /* the router's; NULL: none */
    int up_status;     /* what GET /up answers (active health checks); 0: 200 */
    const char *fail_path; /* requests to this path answer 500 whatever the mode; NULL none */
    const char *lifecycle_topic; /* the router's --lifecycle.topic; NULL: off */
    const char *ca_bundle;       /* the router's --push.ca_bundle; NULL: the system's store */
    int registry_poll_ms;        /* the router's; 0: 50 */
    char url[128];
    ep_mode_t mode;
    req_rec_t reqs[MAX_REQS];
    int nreqs;
    msm_http_req_t *held[MAX_REQS];
    int nheld;
    Msm__V1__DeliveryOutcome *outs[MAX_OUTS]; /* borrowed from status[] */
    int nouts;
    Msm__V1__OutcomeBatch *status_recs[MAX_STATUS];
    int nstatus;
    int put_done;
    int ensure_done;
    int append_done;
    int64_t backlog;
    int backlog_done;
} fixture_t;

static fixture_t F;

/* When dir is set, start() serves the endpoint over HTTPS with the test CA's server
 * certificate (msm_test_certs_make()), and with client_ca requires client certificates that
 * CA signed (the server itself answers 401 without one). */
static struct {
    const char *dir;
    int client_ca;
} ep_tls;

static const char *hdr(const req_rec_t *r, const char *name)
{
    for (size_t i = 0; i < NSEEN; i++) {
        if (strcmp(seen_names[i], name) == 0)
            return r->h[i];
    }
    CU_FAIL("header not recorded by the test endpoint");
    return NULL;
}

static void on_held_cancel(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    for (int i = 0; i < F.nheld; i++) {
        if (F.held[i] == req)
            F.held[i] = NULL;
    }
}

/* The batch answer: one result per event of the request's array, as its "verdict"
 * extension says ("omit": none). */
static void answer_batch(msm_http_req_t *req)
{
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    json_t *events = json_loadb(body, len, 0, NULL);
    json_t *results = json_array();
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        const char *v = json_string_value(json_object_get(ev, "verdict"));
        if (v && strcmp(v, "omit") == 0)
            continue;
        json_array_append_new(results, json_pack("{s:O,s:s}", "id", json_object_get(ev, "id"),
                                                 "status", v ? v : "ok"));
    }
    json_decref(events);
    msm_http_respond_json(req, 200, json_pack("{s:o}", "results", results));
}

static void answer(msm_http_req_t *req, ep_mode_t mode)
{
    switch (mode) {
    case ANSWER_BATCH:
        answer_batch(req);
        break;
    case ANSWER_200:
        msm_http_respond(req, 200, "text/plain", "ok", 2);
        break;
    case ANSWER_500:
        msm_http_respond(req, 500, "text/plain", "boom\r\nline", 10);
        break;
    case ANSWER_429:
        msm_http_add_header(req, "Retry-After", "2");
        msm_http_respond(req, 429, "text/plain", "slow down", 9);
        break;
    case ANSWER_FATAL:
        msm_http_add_header(req, "Msm-Status", "fatal");
        msm_http_respond(req, 500, "text/plain", "bad event", 9);
        break;
    case HOLD:
        msm_http_req_on_cancel(req, on_held_cancel, NULL);
        F.held[F.nheld++] = req;
        break;
    }
}

static void h_hook(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    if (F.nreqs < MAX_REQS) {
        req_rec_t *r = &F.reqs[F.nreqs++];
        for (size_t i = 0; i < NSEEN; i++) {
            const char *v = msm_http_req_header(req, seen_names[i]);
            r->h[i] = v ? strdup(v) : NULL;
        }
        const char *body = msm_http_req_body(req, &r->body_len);
        r->body = malloc(r->body_len + 1);
        memcpy(r->body, body, r->body_len + 1);
        snprintf(r->path, sizeof(r->path), "%s", msm_http_req_path(req));
        r->at_ms = msm_time_unix_ms();
    }
    int fail = F.fail_path && strcmp(msm_http_req_path(req), F.fail_path) == 0;
    answer(req, F.nheld < MAX_REQS && !fail ? F.mode : ANSWER_500);
}

/* The active health check's target: F.up_status (200 unless a test says otherwise). */
static void h_up(msm_http_req_t *req, void *opaque)
{
    (void)opaque;
    int st = F.up_status ? F.up_status : 200;
    msm_http_respond(req, st, "text/plain", "up", 2);
}

/* Answers every held request with @p mode. */
static void release_held(ep_mode_t mode)
{
    for (int i = 0; i < F.nheld; i++) {
        if (F.held[i])
            answer(F.held[i], mode);
        F.held[i] = NULL;
    }
    F.nheld = 0;
}

static int held_count(void)
{
    int n = 0;
    for (int i = 0; i < F.nheld; i++)
        n += F.held[i] != NULL;
    return n;
}

/* ---- waiting ---- */

static int want_int;

static int reqs_reached(void *arg)
{
    (void)arg;
    return F.nreqs >= want_int;
}

static int outs_reached(void *arg)
{
    (void)arg;
    return F.nouts >= want_int;
}

static int held_reached(void *arg)
{
    (void)arg;
    return held_count() >= want_int;
}

static int flag_set(void *arg)
{
    return *(int *)arg;
}

static int is_drained(void *arg)
{
    (void)arg;
    return router_drained(F.rt);
}

static int is_ready(void *arg)
{
    (void)arg;
    char why[64];
    return router_ready(F.rt, why, sizeof(why));
}

static void wait_reqs(int n, uint64_t ms)
{
    want_int = n;
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, reqs_reached, NULL, ms), MSM_OK);
}

static void wait_outs(int n, uint64_t ms)
{
    want_int = n;
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, outs_reached, NULL, ms), MSM_OK);
}

static void wait_held(int n, uint64_t ms)
{
    want_int = n;
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, held_reached, NULL, ms), MSM_OK);
}

/* ---- the status stream, read as flowcontrol would ---- */

static void on_status(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    (void)opaque;
    for (size_t i = 0; i < n; i++) {
        Msm__V1__OutcomeBatch *b = msm_outcome_batch_unpack(msgs[i]->value, msgs[i]->value_len);
        CU_ASSERT_PTR_NOT_NULL(b);
        CU_ASSERT_EQUAL(msgs[i]->key_len, strlen(F.sub));
        CU_ASSERT_EQUAL(memcmp(msgs[i]->key, F.sub, msgs[i]->key_len), 0);
        if (b && F.nstatus < MAX_STATUS) {
            F.status_recs[F.nstatus++] = b;
            CU_ASSERT(b->n_outcomes > 0);
            for (size_t k = 0; k < b->n_outcomes && F.nouts < MAX_OUTS; k++) {
                CU_ASSERT_STRING_EQUAL(b->outcomes[k]->subscription, F.sub);
                F.outs[F.nouts++] = b->outcomes[k];
            }
        } else {
            msm_outcome_batch_free(b);
        }
        msm_consumer_ack(c, msgs[i]);
    }
}

static const Msm__V1__DeliveryOutcome *outcome_of(const char *event_id)
{
    for (int i = 0; i < F.nouts; i++) {
        if (strcmp(F.outs[i]->event_id, event_id) == 0)
            return F.outs[i];
    }
    return NULL;
}

/* ---- setup ---- */

static void on_put(int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err != MSM_OK)
        fprintf(stderr, "registry put: %s\n", reason);
    CU_ASSERT_EQUAL(err, MSM_OK);
    F.put_done = 1;
}

static void on_done(msm_err_t err, const char *reason, void *opaque)
{
    if (err != MSM_OK)
        fprintf(stderr, "stream: %s\n", reason);
    CU_ASSERT_EQUAL(err, MSM_OK);
    *(int *)opaque = 1;
}

/* Registers subscription F.sub with @p json (endpoints etc.) and makes its dispatch stream
 * (as flowcontrol would). */
static void put_sub(const char *json_text)
{
    json_error_t jerr;
    json_t *body = json_loads(json_text, 0, &jerr);
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_sub_t *s = msm_sub_from_json(F.sub, body, &e);
    if (!s)
        fprintf(stderr, "sub: %s\n", msm_json_err_message(&e));
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    msm_json_err_deinit(&e);
    json_t *stored = msm_sub_to_json(s, true);
    F.put_done = 0;
    CU_ASSERT_EQUAL(msm_registry_put(F.redis, MSM_KEY_SUBS, F.sub, stored, on_put, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, flag_set, &F.put_done, 5000), MSM_OK);
    json_decref(stored);
    json_decref(body);
    msm_sub_free(s);
    char name[128];
    snprintf(name, sizeof(name), MSM_STREAM_DISPATCH, F.sub);
    F.ensure_done = 0;
    CU_ASSERT_EQUAL(msm_stream_ensure(F.stream, name, 2, on_done, &F.ensure_done), MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, flag_set, &F.ensure_done, 5000), MSM_OK);
}

static void start_router(void)
{
    router_env_t env = {F.loop, F.redis, F.stream, F.metrics, F.member};
    char allow[128], deny[128];
    /* The test endpoints are on loopback, which the router refuses unless allowed. */
    snprintf(allow, sizeof(allow), "%s", F.allow_networks ? F.allow_networks : "127.0.0.0/8,::1");
    snprintf(deny, sizeof(deny), "%s", F.deny_networks ? F.deny_networks : "");
    router_conf_t conf = {.registry_poll_ms = F.registry_poll_ms ? F.registry_poll_ms : 50,
                          .max_in_flight = F.max_in_flight,
                          .allow_networks = allow,
                          .deny_networks = deny,
                          .lifecycle_topic = (char *)F.lifecycle_topic,
                          .ca_bundle = (char *)F.ca_bundle};
    char err[256] = "";
    F.rt = router_new_env(&env, &conf, err, sizeof(err));
    if (!F.rt)
        fprintf(stderr, "router: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(F.rt);
}

static void start_status_reader(void)
{
    char err[256] = "", name[128];
    snprintf(name, sizeof(name), MSM_STREAM_STATUS, F.sub);
    F.status = msm_stream_consume(F.stream, name, "test", "reader", 64, 1000, on_status, NULL,
                                  err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(F.status);
}

static int start(void)
{
    memset(&F, 0, sizeof(F));
    msm_test_namespace(F.ns, sizeof(F.ns));
    snprintf(F.sub, sizeof(F.sub), "orders-push");
    snprintf(F.member, sizeof(F.member), "testhost-msm-router-%s", F.ns);
    F.loop = msm_loop_new();
    F.metrics = msm_metrics_new();
    char err[256] = "";
    msm_redis_conf_t rc = {.url = redis_srv.url, .ns = F.ns};
    F.redis = msm_redis_new(F.loop, &rc, err, sizeof(err));
    /* A short append timeout lets a test see the router retry a failed status append. */
    msm_stream_conf_t sc = {.backend = MSM_STREAM_REDIS, .redis_url = redis_srv.url,
                            .name_prefix = F.ns, .append_timeout_ms = 300};
    F.stream = msm_stream_new(F.loop, &sc, err, sizeof(err));
    msm_http_server_conf_t hc;
    msm_http_server_conf_init(&hc);
    hc.bind_address = "127.0.0.1";
    hc.name = "lambda";
    char cert[300], key[300], client_ca[300];
    if (ep_tls.dir) {
        snprintf(cert, sizeof(cert), "%s/srv.pem", ep_tls.dir);
        snprintf(key, sizeof(key), "%s/srv.key", ep_tls.dir);
        snprintf(client_ca, sizeof(client_ca), "%s/ca.pem", ep_tls.dir);
        hc.tls_cert_file = cert;
        hc.tls_key_file = key;
        hc.tls_client_ca_file = ep_tls.client_ca ? client_ca : NULL;
    }
    F.ep = msm_http_server_new(F.loop, &hc, err, sizeof(err));
    if (!F.loop || !F.metrics || !F.redis || !F.stream || !F.ep) {
        fprintf(stderr, "fixture: %s\n", err);
        return -1;
    }
    msm_http_server_route(F.ep, "POST", "/hook/{name}", h_hook, NULL);
    msm_http_server_route(F.ep, "GET", "/up", h_up, NULL);
    snprintf(F.url, sizeof(F.url), "%s://127.0.0.1:%u/hook/a", ep_tls.dir ? "https" : "http",
             (unsigned)msm_http_server_port(F.ep));
    return 0;
}

static void stop(void)
{
    router_free(F.rt);
    msm_consumer_free(F.status);
    msm_http_server_free(F.ep);
    msm_stream_free(F.stream);
    msm_redis_free(F.redis);
    msm_metrics_free(F.metrics);
    msm_loop_free(F.loop);
    for (int i = 0; i < F.nreqs; i++) {
        for (size_t j = 0; j < NSEEN; j++)
            free(F.reqs[i].h[j]);
        free(F.reqs[i].body);
    }
    for (int i = 0; i < F.nstatus; i++)
        msm_outcome_batch_free(F.status_recs[i]);
    memset(&F, 0, sizeof(F));
}

/* A standard subscription on F.url with @p extra JSON members (may be ""). */
static void put_standard_sub(const char *extra)
{
    char json[1024];
    snprintf(json, sizeof(json), "{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"%s\"}]%s}",
             F.url, extra);
    put_sub(json);
}

/* Starts the router and the status reader on a subscription made by put_sub(). */
static void start_all(void)
{
    start_router();
    start_status_reader();
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, is_ready, NULL, 5000), MSM_OK);
}

/* ---- tasks ---- */

typedef struct {
    const char *id;
    const char *topic;
    const char *key;
    const char *ordering_key;
    const char *content_type;
    const void *payload;
    size_t payload_len;
    const char *const *attrs; /* name, value, ..., NULL */
    const char *traceparent;
    const char *tracestate;
    const char *cdc_source;
    int attempt;
    int schema_id;
    int64_t lease_until_ms;
    int64_t deadline_ms; /* the event's */
} task_spec_t;

/* What one task of a record needs while it is packed. */
typedef struct {
    Msm__V1__Event ev;
    Msm__V1__Event__AttributesEntry entries[12], *ptrs[12];
    Msm__V1__Task task;
} task_mem_t;

static void fill_task(const task_spec_t *t, task_mem_t *m)
{
    Msm__V1__Event ev = MSM__V1__EVENT__INIT;
    ev.id = (char *)t->id;
    ev.topic = (char *)(t->topic ? t->topic : "orders");
    ev.key = (char *)(t->key ? t->key : "");
    ev.ordering_key = (char *)(t->ordering_key ? t->ordering_key : "");
    ev.content_type = (char *)(t->content_type ? t->content_type : "application/json");
    ev.payload.data = (uint8_t *)(t->payload ? t->payload : "{}");
    ev.payload.len = t->payload ? t->payload_len : 2;
    ev.publish_time_ms = PUBLISHED;
    ev.priority = 5;
    ev.traceparent = (char *)(t->traceparent ? t->traceparent : "");
    ev.tracestate = (char *)(t->tracestate ? t->tracestate : "");
    ev.cdc_source = (char *)(t->cdc_source ? t->cdc_source : "");
    ev.schema_id = t->schema_id;
    ev.deadline_ms = t->deadline_ms;
    size_t n = 0;
    for (size_t i = 0; t->attrs && t->attrs[i] && n < 12; i += 2, n++) {
        Msm__V1__Event__AttributesEntry e = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT;
        e.key = (char *)t->attrs[i];
        e.value = (char *)t->attrs[i + 1];
        m->entries[n] = e;
        m->ptrs[n] = &m->entries[n];
    }
    m->ev = ev;
    m->ev.n_attributes = n;
    m->ev.attributes = m->ptrs;
    Msm__V1__Task task = MSM__V1__TASK__INIT;
    task.subscription = F.sub;
    task.attempt = t->attempt ? t->attempt : 1;
    task.state = MSM__V1__TASK_STATE__TASK_STATE_RUNNING;
    task.lease_until_ms = t->lease_until_ms;
    m->task = task;
    m->task.event = &m->ev;
}

/* One dispatch record holding the @p n tasks (as flowcontrol appends them). */
static void append_tasks(const task_spec_t *ts, size_t n)
{
    task_mem_t mem[16];
    Msm__V1__Task *ptrs[16];
    CU_ASSERT_FATAL(n <= 16);
    for (size_t i = 0; i < n; i++) {
        fill_task(&ts[i], &mem[i]);
        ptrs[i] = &mem[i].task;
    }
    Msm__V1__TaskBatch batch = MSM__V1__TASK_BATCH__INIT;
    batch.n_tasks = n;
    batch.tasks = ptrs;
    msm_buf_t buf = {0};
    CU_ASSERT_EQUAL_FATAL(msm_pb_pack(&batch.base, &buf), MSM_OK);
    msm_record_t rec = {ts[0].id, strlen(ts[0].id), buf.data, buf.len};
    char name[128];
    snprintf(name, sizeof(name), MSM_STREAM_DISPATCH, F.sub);
    F.append_done = 0;
    CU_ASSERT_EQUAL(msm_stream_append(F.stream, name, &rec, 1, on_done, &F.append_done), MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, flag_set, &F.append_done, 5000), MSM_OK);
    msm_buf_deinit(&buf);
}

static void append_task(const task_spec_t *t)
{
    append_tasks(t, 1);
}

static void append_simple(const char *id)
{
    task_spec_t t = {.id = id, .key = id};
    append_task(&t);
}

/* ---- dispatch entries end acknowledged ---- */

static void on_backlog(msm_err_t err, int64_t backlog, void *opaque)
{
    (void)opaque;
    CU_ASSERT_EQUAL(err, MSM_OK);
    F.backlog = backlog;
    F.backlog_done = 1;
}

static int64_t dispatch_backlog(void)
{
    char name[128];
    snprintf(name, sizeof(name), MSM_STREAM_DISPATCH, F.sub);
    F.backlog_done = 0;
    CU_ASSERT_EQUAL(msm_stream_backlog(F.stream, name, "router", on_backlog, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, flag_set, &F.backlog_done, 5000), MSM_OK);
    return F.backlog;
}

/* Acknowledgements leave before the loop sleeps: give them a few turns. */
static void assert_dispatch_acked(void)
{
    int64_t b = -1;
    for (int i = 0; i < 40 && b != 0; i++) {
        msm_test_spin(F.loop, 50);
        b = dispatch_backlog();
    }
    CU_ASSERT_EQUAL(b, 0);
}

/* ---- tests ---- */

static void to_hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* Msm-Signature checked independently of the router's code (docs/push.md "Signatures"):
 * t recent, v1 = HMAC(secret, "<t>.<id>.<body>"), v2 = HMAC(secret, "v2\n<t>\n<id>\n
 * <Msm-Subscription>\n<Msm-Attempt>\n<Msm-Deadline>\n<hex SHA-256 of the body>"), each
 * header as received ("" when absent). */
static int verify_signature_as(const req_rec_t *r, const char *id)
{
    const char *sig = hdr(r, "Msm-Signature");
    if (!sig)
        return 0;
    long long t;
    char hex1[65], hex2[65];
    int end = 0;
    if (sscanf(sig, "t=%lld,v1=%64[0-9a-f],v2=%64[0-9a-f]%n", &t, hex1, hex2, &end) != 3 ||
        strlen(hex1) != 64 || strlen(hex2) != 64 || sig[end] != '\0')
        return 0;
    char prefix[128];
    int n = snprintf(prefix, sizeof(prefix), "%lld.%s.", t, id);
    size_t len = (size_t)n + r->body_len;
    unsigned char *msg = malloc(len);
    memcpy(msg, prefix, (size_t)n);
    memcpy(msg + n, r->body, r->body_len);
    unsigned char mac[32];
    unsigned maclen = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), msg, len, mac, &maclen);
    free(msg);
    char want1[65];
    to_hex(mac, 32, want1);

    unsigned char md[32];
    char body_hex[65], text[1024], want2[65];
    SHA256((const unsigned char *)r->body, r->body_len, md);
    to_hex(md, 32, body_hex);
    const char *sub = hdr(r, "Msm-Subscription"), *attempt = hdr(r, "Msm-Attempt");
    const char *deadline = hdr(r, "Msm-Deadline");
    n = snprintf(text, sizeof(text), "v2\n%lld\n%s\n%s\n%s\n%s\n%s", t, id, sub ? sub : "",
                 attempt ? attempt : "", deadline ? deadline : "", body_hex);
    unsigned maclen2 = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)text, (size_t)n, mac,
         &maclen2);
    to_hex(mac, 32, want2);
    long long now = msm_time_unix_ms() / 1000;
    return maclen == 32 && maclen2 == 32 && strcmp(want1, hex1) == 0 &&
           strcmp(want2, hex2) == 0 && t <= now && t >= now - 30;
}

static int verify_signature(const req_rec_t *r)
{
    return verify_signature_as(r, hdr(r, "ce-id"));
}

static void test_headers_and_success(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub(",\"secret\":\"" SECRET "\",\"timeout_ms\":4000");
    start_all();
    F.mode = ANSWER_200;
    static const char payload[] = "{\"n\":1}\0\xff\x01 binary";
    const char *attrs[] = {"type", "com.example.order.created", "region", "eu-west", NULL};
    task_spec_t t = {.id = "0190a3e2-0000-7000-8000-000000000001",
                     .key = "customer-7",
                     .ordering_key = "order-42",
                     .content_type = "application/octet-stream",
                     .payload = payload,
                     .payload_len = sizeof(payload) - 1,
                     .attrs = attrs,
                     .traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                     .tracestate = "vendor=1",
                     .attempt = 3};
    int64_t before = msm_time_unix_ms();
    append_task(&t);
    wait_reqs(1, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nreqs, 1);
    const req_rec_t *r = &F.reqs[0];
    CU_ASSERT_STRING_EQUAL(r->path, "/hook/a");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-specversion"), "1.0");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-id"), t.id);
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-source"), "/msm/topics/orders");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-type"), "com.example.order.created");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-time"), "2025-11-25T12:00:00.123Z");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Content-Type"), "application/octet-stream");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Subscription"), F.sub);
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Attempt"), "3");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Key"), "customer-7");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Ordering-Key"), "order-42");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Attr-type"), "com.example.order.created");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Attr-region"), "eu-west");
    CU_ASSERT_TRUE(msm_test_tp_child_of(hdr(r, "traceparent"), t.traceparent)); /* its span */
    CU_ASSERT_STRING_EQUAL(hdr(r, "tracestate"), "vendor=1");
    const char *deadline = hdr(r, "Msm-Deadline");
    CU_ASSERT_PTR_NOT_NULL_FATAL(deadline);
    long long dl = atoll(deadline);
    CU_ASSERT(dl >= before + 4000 && dl <= r->at_ms + 4000);
    CU_ASSERT_EQUAL(r->body_len, sizeof(payload) - 1);
    CU_ASSERT_EQUAL(memcmp(r->body, payload, sizeof(payload) - 1), 0);
    CU_ASSERT(verify_signature(r));

    wait_outs(1, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nouts, 1);
    const Msm__V1__DeliveryOutcome *o = F.outs[0];
    CU_ASSERT_STRING_EQUAL(o->event_id, t.id);
    CU_ASSERT_STRING_EQUAL(o->subscription, F.sub);
    CU_ASSERT_EQUAL(o->attempt, 3);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS);
    CU_ASSERT_EQUAL(o->http_status, 200);
    CU_ASSERT_STRING_EQUAL(o->error, "");
    CU_ASSERT_STRING_EQUAL(o->endpoint, F.url);
    CU_ASSERT_EQUAL(o->retry_after_ms, 0);
    CU_ASSERT(o->latency_ms >= 0 && o->latency_ms < 4000);
    CU_ASSERT(o->finished_at_ms >= before && o->finished_at_ms <= msm_time_unix_ms());
    assert_dispatch_acked();

    size_t len;
    char *text = msm_metrics_render(F.metrics, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "msm_router_deliveries_total{subscription=\"orders-push\","
                                        "kind=\"success\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "msm_router_delivery_latency_seconds_count{subscription="
                                        "\"orders-push\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "msm_router_in_flight{subscription=\"orders-push\"} 0"));
    free(text);
    stop();
}

static void test_cdc_source_and_defaults(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub("");
    start_all();
    F.mode = ANSWER_200;
    task_spec_t t = {.id = "0190a3e2-0000-7000-8000-000000000002", .cdc_source = "pg-main"};
    append_task(&t);
    wait_reqs(1, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nreqs, 1);
    const req_rec_t *r = &F.reqs[0];
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-source"), "/msm/cdc/pg-main");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-type"), "msm.event");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Content-Type"), "application/json");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Attempt"), "1");
    CU_ASSERT_PTR_NULL(hdr(r, "Msm-Key"));
    CU_ASSERT_PTR_NULL(hdr(r, "Msm-Ordering-Key"));
    CU_ASSERT_PTR_NULL(hdr(r, "traceparent"));
    CU_ASSERT_PTR_NULL(hdr(r, "Msm-Signature"));
    CU_ASSERT_EQUAL(r->body_len, 2);
    wait_outs(1, 10000);
    stop();
}

/* An event published as a CloudEvent (it carries ce_id): the producer's source, subject,
 * type, dataschema and extensions, its id as ce-msmsourceid; ce-id stays msm's. */
static void test_cloudevent_context(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub(",\"secret\":\"" SECRET "\"");
    start_all();
    F.mode = ANSWER_200;
    const char *attrs[] = {"type", "com.shop.order", "source", "/shop", "subject", "o-1",
                           "dataschema", "https://shop.example/order.json", "ce_id", "prod-1",
                           "partitionkey", "pk-1", "plain", "not-an-extension",
                           "ce_extensions", "partitionkey", NULL};
    task_spec_t t = {.id = "0190a3e2-0000-7000-8000-000000000011", .key = "pk-1", .attrs = attrs};
    append_task(&t);
    /* Published as a CloudEvent before msm listed extensions: its attributes with extension
     * names were its extensions. */
    const char *older[] = {"type", "t.old", "source", "/old", "ce_id", "prod-2", "plain", "p",
                           NULL};
    task_spec_t t2 = {.id = "0190a3e2-0000-7000-8000-000000000012", .attrs = older};
    append_task(&t2);
    wait_reqs(2, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nreqs, 2);
    const req_rec_t *r = &F.reqs[0];
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-id"), t.id);
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-source"), "/shop");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-type"), "com.shop.order");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-subject"), "o-1");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-dataschema"), "https://shop.example/order.json");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-msmsourceid"), "prod-1");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-partitionkey"), "pk-1");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-time"), "2025-11-25T12:00:00.123Z");
    CU_ASSERT_PTR_NULL(hdr(r, "ce-plain"));
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Attr-plain"), "not-an-extension");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Key"), "pk-1");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Subscription"), F.sub);
    CU_ASSERT(verify_signature(r));
    r = &F.reqs[1];
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-source"), "/old");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-msmsourceid"), "prod-2");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-plain"), "p");
    CU_ASSERT_PTR_NULL(hdr(r, "ce-subject"));
    wait_outs(2, 10000);
    stop();
}

/* delivery_format "json": an Avro payload reaches the lambda as JSON (signed as sent); one
 * that does not decode with its schema, or names no schema, is dead-lettered. */
static void test_delivery_format_json(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    const char *schema = "{\"type\":\"record\",\"name\":\"Order\",\"fields\":["
                         "{\"name\":\"id\",\"type\":\"long\"},"
                         "{\"name\":\"note\",\"type\":[\"null\",\"string\"]}]}";
    redisReply *x = msm_test_redis_query(&redis_srv, "HSET %s:{registry}:schemas:id:7 type AVRO schema %s",
                                         F.ns, schema);
    freeReplyObject(x);
    char extra[128];
    snprintf(extra, sizeof(extra), ",\"delivery_format\":\"json\",\"secret\":\"%s\"", SECRET);
    put_standard_sub(extra);
    start_all();
    F.mode = ANSWER_200;
    const uint8_t avro[] = {0x06, 0x02, 0x04, 'h', 'i'}; /* id 3, note: branch 1 "hi" */
    task_spec_t ok = {.id = "0190a3e2-0000-7000-8000-0000000000c1", .schema_id = 7,
                      .content_type = "application/avro", .payload = avro,
                      .payload_len = sizeof(avro)};
    append_task(&ok);
    const uint8_t bad[] = {0x06, 0x09};
    task_spec_t broken = {.id = "0190a3e2-0000-7000-8000-0000000000c2", .schema_id = 7,
                          .content_type = "application/avro", .payload = bad,
                          .payload_len = sizeof(bad)};
    append_task(&broken);
    task_spec_t unknown = {.id = "0190a3e2-0000-7000-8000-0000000000c3", .schema_id = 99,
                           .content_type = "application/avro", .payload = avro,
                           .payload_len = sizeof(avro)};
    append_task(&unknown);
    wait_outs(3, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nreqs, 1);
    const req_rec_t *r = &F.reqs[0];
    CU_ASSERT_STRING_EQUAL(hdr(r, "Content-Type"), "application/json");
    const char *want = "{\"id\":3,\"note\":\"hi\"}";
    CU_ASSERT(r->body_len == strlen(want) && memcmp(r->body, want, r->body_len) == 0);
    CU_ASSERT(verify_signature(r));
    const Msm__V1__DeliveryOutcome *o = outcome_of(ok.id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS);
    o = outcome_of(broken.id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL &&
              strstr(o->error, "does not decode"));
    o = outcome_of(unknown.id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL &&
              strstr(o->error, "schema 99"));
    stop();
}

/* One task answered with @p mode; returns its outcome (owned by F). */
static const Msm__V1__DeliveryOutcome *one_outcome(ep_mode_t mode, const char *extra)
{
    put_standard_sub(extra);
    start_all();
    F.mode = mode;
    append_simple("0190a3e2-0000-7000-8000-0000000000aa");
    wait_outs(1, 10000);
    if (F.nouts != 1)
        return NULL;
    assert_dispatch_acked();
    return F.outs[0];
}

static void test_500_retriable(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    const Msm__V1__DeliveryOutcome *o = one_outcome(ANSWER_500, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE);
    CU_ASSERT_EQUAL(o->http_status, 500);
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, "500"));
    CU_ASSERT_PTR_NULL(strchr(o->error, '\n')); /* the body's CR/LF never reach the record */
    CU_ASSERT_EQUAL(o->retry_after_ms, 0);
    size_t len;
    char *text = msm_metrics_render(F.metrics, &len);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "kind=\"retriable\"} 1"));
    free(text);
    stop();
}

static void test_429_retry_after(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    const Msm__V1__DeliveryOutcome *o = one_outcome(ANSWER_429, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE);
    CU_ASSERT_EQUAL(o->http_status, 429);
    CU_ASSERT_EQUAL(o->retry_after_ms, 2000);
    stop();
}

static void test_fatal(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    const Msm__V1__DeliveryOutcome *o = one_outcome(ANSWER_FATAL, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL);
    CU_ASSERT_EQUAL(o->http_status, 500);
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, "bad event"));
    stop();
}

static void test_timeout(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    uint64_t t0 = msm_time_mono_ms();
    const Msm__V1__DeliveryOutcome *o = one_outcome(HOLD, ",\"timeout_ms\":300");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(F.nreqs, 1);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE);
    CU_ASSERT_EQUAL(o->http_status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, "timeout"));
    CU_ASSERT(o->latency_ms >= 250 && o->latency_ms < 2000);
    CU_ASSERT(msm_time_mono_ms() - t0 < 8000);
    stop();
}

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd); /* bound, never listening, now closed: connecting is refused */
    return port;
}

static void test_refused(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    snprintf(F.url, sizeof(F.url), "http://127.0.0.1:%d/hook/a", closed_port());
    const Msm__V1__DeliveryOutcome *o = one_outcome(ANSWER_200, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    /* Nothing reached the endpoint: the attempt is not spent. */
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED);
    CU_ASSERT_EQUAL(o->http_status, 0);
    CU_ASSERT(strlen(o->error) > 0);
    CU_ASSERT_STRING_EQUAL(o->endpoint, F.url);
    stop();
}

/* A listening socket on @p ip (a free port) that nobody accepts from: a connection made to
 * it would wait in its backlog. @returns the fd (its port in *port), or -1. */
static int listen_unaccepted(const char *ip, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    inet_pton(AF_INET, ip, &a.sin_addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Nothing connected to @p fd (closes it). */
static int never_connected(int fd)
{
    int c = accept(fd, NULL, NULL);
    int none = c < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (c >= 0)
        close(c);
    close(fd);
    return none;
}

/* router.allow_networks / deny_networks at connect time: an endpoint address outside them
 * is never connected to (not even a TCP handshake), and the task is FATAL at once with the
 * reason. */
static void test_denied_address(void)
{
    /* An IP literal: 127.0.0.2 with only 127.0.0.1 allowed. */
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    F.allow_networks = "127.0.0.1/32";
    int port = 0;
    int fd = listen_unaccepted("127.0.0.2", &port);
    CU_ASSERT_FATAL(fd >= 0);
    snprintf(F.url, sizeof(F.url), "http://127.0.0.2:%d/hook/a", port);
    const Msm__V1__DeliveryOutcome *o = one_outcome(ANSWER_200, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL);
    CU_ASSERT_EQUAL(o->http_status, 0);
    CU_ASSERT_STRING_EQUAL(o->error, "endpoint denied: address 127.0.0.2 is denied (loopback); "
                                     "allow it in router.allow_networks");
    CU_ASSERT_STRING_EQUAL(o->endpoint, F.url);
    CU_ASSERT(never_connected(fd));
    CU_ASSERT_EQUAL(F.nreqs, 0);
    stop();

    /* A host name: every address of localhost is denied (deny wins over allow). */
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    F.allow_networks = "127.0.0.0/8,::1";
    F.deny_networks = "127.0.0.0/8,::1";
    fd = listen_unaccepted("127.0.0.1", &port);
    CU_ASSERT_FATAL(fd >= 0);
    snprintf(F.url, sizeof(F.url), "http://localhost:%d/hook/a", port);
    o = one_outcome(ANSWER_200, ",\"max_batch_events\":4");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, "endpoint denied: address "));
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, "is denied by router.deny_networks"));
    CU_ASSERT(never_connected(fd));
    stop();
}

static void test_header_injection(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub("");
    start_all();
    F.mode = ANSWER_200;
    const char *attrs[] = {"evil", "x\r\nX-Evil: 1", "good", "yes", "bad name", "v",
                           "type", "t\nX-Evil: 2", "ce_id", "p-1", "source", "/s\r\nX-Evil3: 1",
                           "ce_extensions", "evil,good,bad name", NULL};
    task_spec_t t = {.id = "0190a3e2-0000-7000-8000-000000000003",
                     .key = "k\r\nX-Evil2: 1",
                     .attrs = attrs};
    append_task(&t);
    wait_reqs(1, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nreqs, 1);
    const req_rec_t *r = &F.reqs[0];
    CU_ASSERT_PTR_NULL(hdr(r, "X-Evil"));
    CU_ASSERT_PTR_NULL(hdr(r, "X-Evil2"));
    CU_ASSERT_PTR_NULL(hdr(r, "Msm-Attr-evil"));
    CU_ASSERT_PTR_NULL(hdr(r, "Msm-Attr-type"));
    CU_ASSERT_PTR_NULL(hdr(r, "Msm-Key"));
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-type"), "msm.event");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Attr-good"), "yes");
    /* A CloudEvent's context is checked the same way. */
    CU_ASSERT_PTR_NULL(hdr(r, "X-Evil3"));
    CU_ASSERT_PTR_NULL(hdr(r, "ce-evil"));
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-good"), "yes");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-source"), "/msm/topics/orders");
    CU_ASSERT_STRING_EQUAL(hdr(r, "ce-msmsourceid"), "p-1");
    wait_outs(1, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nouts, 1);
    CU_ASSERT_EQUAL(F.outs[0]->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS);
    stop();
}

static void test_concurrency_bounded(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub(",\"max_concurrency\":2");
    start_all();
    F.mode = HOLD;
    char ids[5][40];
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof(ids[i]), "0190a3e2-0000-7000-8000-00000000010%d", i);
        append_simple(ids[i]);
    }
    wait_held(2, 10000);
    msm_test_spin(F.loop, 1200); /* long enough for more reads, were any allowed */
    CU_ASSERT_EQUAL(held_count(), 2);
    CU_ASSERT_EQUAL(F.nreqs, 2);
    /* Taken from the log: the bound, give or take one entry per other partition (a read
     * asks every partition); on the wire: exactly the bound. */
    CU_ASSERT(router_live(F.rt) >= 2 && router_live(F.rt) <= 3);
    F.mode = ANSWER_200;
    release_held(ANSWER_200);
    wait_outs(5, 15000);
    CU_ASSERT_EQUAL(F.nouts, 5);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_PTR_NOT_NULL(outcome_of(ids[i]));
    assert_dispatch_acked();
    stop();
}

static void test_weighted_round_robin(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    unsigned port = msm_http_server_port(F.ep);
    char json[512];
    snprintf(json, sizeof(json),
             "{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"http://127.0.0.1:%u/hook/a\","
             "\"weight\":3},{\"url\":\"http://127.0.0.1:%u/hook/b\",\"weight\":1}],"
             "\"max_concurrency\":1}",
             port, port);
    put_sub(json);
    start_all();
    F.mode = ANSWER_200;
    for (int i = 0; i < 8; i++) {
        char id[40];
        snprintf(id, sizeof(id), "0190a3e2-0000-7000-8000-00000000020%d", i);
        append_simple(id);
    }
    wait_outs(8, 15000);
    int a = 0, b = 0;
    for (int i = 0; i < F.nreqs; i++) {
        a += strcmp(F.reqs[i].path, "/hook/a") == 0;
        b += strcmp(F.reqs[i].path, "/hook/b") == 0;
    }
    CU_ASSERT_EQUAL(a, 6);
    CU_ASSERT_EQUAL(b, 2);
    /* Keep-alive: one push at a time (max_concurrency 1), all over one pooled connection
     * (both paths are the same host:port). */
    msm_http_client_stats_t st;
    router_http_stats(F.rt, &st);
    CU_ASSERT_EQUAL(st.started, 8);
    CU_ASSERT_EQUAL(st.connections_opened, 1);
    CU_ASSERT_EQUAL(st.connections_reused, 7);
    stop();
}

static void test_graceful_stop(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub("");
    start_all();
    F.mode = HOLD;
    append_simple("0190a3e2-0000-7000-8000-000000000301");
    append_simple("0190a3e2-0000-7000-8000-000000000302");
    wait_held(2, 10000);
    router_stop(F.rt);
    CU_ASSERT_FALSE(router_drained(F.rt));
    append_simple("0190a3e2-0000-7000-8000-000000000303"); /* after the stop: not taken */
    msm_test_spin(F.loop, 300);
    CU_ASSERT_FALSE(router_drained(F.rt));
    release_held(ANSWER_200);
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, is_drained, NULL, 10000), MSM_OK);
    wait_outs(2, 5000);
    CU_ASSERT_EQUAL(F.nouts, 2);
    CU_ASSERT_PTR_NOT_NULL(outcome_of("0190a3e2-0000-7000-8000-000000000301"));
    CU_ASSERT_PTR_NOT_NULL(outcome_of("0190a3e2-0000-7000-8000-000000000302"));
    msm_test_spin(F.loop, 1200);
    CU_ASSERT_EQUAL(F.nreqs, 2);
    CU_ASSERT_EQUAL(F.nouts, 2);
    CU_ASSERT_EQUAL(dispatch_backlog(), 1); /* the third waits for the next router */
    stop();
}

static void test_kill_and_restart(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub("");
    start_all();
    F.mode = HOLD;
    char ids[4][40];
    for (int i = 0; i < 4; i++) {
        snprintf(ids[i], sizeof(ids[i]), "0190a3e2-0000-7000-8000-00000000040%d", i);
        append_simple(ids[i]);
    }
    wait_held(4, 10000);
    router_free(F.rt); /* like kill -9: nothing acknowledged, requests cut */
    F.rt = NULL;
    msm_test_spin(F.loop, 200);
    CU_ASSERT_EQUAL(F.nouts, 0);
    F.mode = ANSWER_200;
    uint64_t t0 = msm_time_mono_ms();
    start_router(); /* same member name: its pending entries come back at once */
    wait_outs(4, 10000);
    CU_ASSERT(msm_time_mono_ms() - t0 < 5000); /* well before any lease would expire */
    CU_ASSERT_EQUAL(F.nouts, 4);
    for (int i = 0; i < 4; i++) {
        const Msm__V1__DeliveryOutcome *o = outcome_of(ids[i]);
        CU_ASSERT_PTR_NOT_NULL(o);
        if (o)
            CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS);
    }
    CU_ASSERT_EQUAL(F.nreqs, 8);
    assert_dispatch_acked();
    stop();
}

static void test_settings_change(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub(",\"max_concurrency\":1");
    start_all();
    F.mode = HOLD;
    char ids[5][40];
    for (int i = 0; i < 5; i++)
        snprintf(ids[i], sizeof(ids[i]), "0190a3e2-0000-7000-8000-00000000050%d", i);
    append_simple(ids[0]);
    append_simple(ids[1]);
    wait_held(1, 10000);
    msm_test_spin(F.loop, 300);
    CU_ASSERT_EQUAL(F.nreqs, 1);
    /* A new bound: the consumer is remade once what it took is done. */
    put_standard_sub(",\"max_concurrency\":3");
    msm_test_spin(F.loop, 300);
    F.mode = ANSWER_200;
    release_held(ANSWER_200);
    wait_outs(2, 10000);
    F.mode = HOLD;
    for (int i = 2; i < 5; i++)
        append_simple(ids[i]);
    wait_held(3, 10000); /* three at once: the old bound of one is gone */
    release_held(ANSWER_200);
    wait_outs(5, 10000);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_PTR_NOT_NULL(outcome_of(ids[i]));
    assert_dispatch_acked();
    stop();
}

static int metric_at_least_one(void *arg)
{
    (void)arg;
    char *text = msm_metrics_render(F.metrics, NULL);
    int yes = text && strstr(text, "msm_router_status_append_failures_total 0") == NULL &&
              strstr(text, "msm_router_status_append_failures_total ") != NULL;
    free(text);
    return yes;
}

static void test_status_append_retried(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub("");
    start_all();
    F.mode = HOLD;
    const char *id = "0190a3e2-0000-7000-8000-000000000601";
    append_simple(id);
    wait_held(1, 10000);
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_kill(&redis_srv), 0);
    F.mode = ANSWER_200;
    release_held(ANSWER_200); /* the outcome cannot be stored now */
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, metric_at_least_one, NULL, 10000), MSM_OK);
    CU_ASSERT_EQUAL(F.nouts, 0);
    CU_ASSERT_FALSE(router_drained(F.rt));
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_restart(&redis_srv), 0);
    wait_outs(1, 15000);
    for (int i = 0; i < F.nouts; i++) { /* a re-read may deliver it twice: never zero times */
        CU_ASSERT_STRING_EQUAL(F.outs[i]->event_id, id);
        CU_ASSERT_EQUAL(F.outs[i]->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS);
    }
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, is_drained, NULL, 10000), MSM_OK);
    assert_dispatch_acked();
    stop();
}

static void test_ready(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    start_router();
    char why[64] = "";
    CU_ASSERT_FALSE(router_ready(F.rt, why, sizeof(why)));
    CU_ASSERT(strlen(why) > 0);
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, is_ready, NULL, 5000), MSM_OK);
    CU_ASSERT(router_drained(F.rt));
    stop();
}

/* A record of three tasks: acknowledged only once all three outcomes are durable, even
 * when the first outcome is appended long before the others. */
static void test_record_acked_when_all_durable(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub("");
    start_all();
    F.mode = HOLD;
    task_spec_t ts[3] = {{.id = "0190a3e2-0000-7000-8000-000000000701"},
                         {.id = "0190a3e2-0000-7000-8000-000000000702"},
                         {.id = "0190a3e2-0000-7000-8000-000000000703"}};
    append_tasks(ts, 3);
    wait_held(3, 10000);
    answer(F.held[0], ANSWER_200); /* one finishes, two stay in flight */
    F.held[0] = NULL;
    wait_outs(1, 10000);
    msm_test_spin(F.loop, 300);
    CU_ASSERT_EQUAL(F.nouts, 1);
    CU_ASSERT_EQUAL(dispatch_backlog(), 1); /* its record waits for the other two */
    release_held(ANSWER_500);
    wait_outs(3, 10000);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_PTR_NOT_NULL(outcome_of(ts[i].id));
    assert_dispatch_acked();
    stop();
}

/* Outcomes finished in one loop turn share one status record: three tasks of one record
 * whose leases passed all finish as the record is taken. */
static void test_one_status_record_per_turn(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub("");
    start_all();
    F.mode = ANSWER_200;
    int64_t gone = msm_time_unix_ms() - 1;
    task_spec_t ts[3] = {{.id = "0190a3e2-0000-7000-8000-000000000711", .lease_until_ms = gone},
                         {.id = "0190a3e2-0000-7000-8000-000000000712", .lease_until_ms = gone},
                         {.id = "0190a3e2-0000-7000-8000-000000000713", .lease_until_ms = gone}};
    append_tasks(ts, 3);
    wait_outs(3, 10000);
    CU_ASSERT_EQUAL(F.nstatus, 1);
    CU_ASSERT_EQUAL(F.status_recs[0]->n_outcomes, 3);
    CU_ASSERT_EQUAL(F.nreqs, 0);
    assert_dispatch_acked();
    stop();
}

/* A paused subscription gets nothing pushed: its records wait in the log; resumed, they go. */
static void test_paused(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub(",\"paused\":true");
    start_all();
    F.mode = ANSWER_200;
    append_simple("0190a3e2-0000-7000-8000-000000000721");
    msm_test_spin(F.loop, 600);
    CU_ASSERT_EQUAL(F.nreqs, 0);
    CU_ASSERT_EQUAL(F.nouts, 0);
    CU_ASSERT_EQUAL(dispatch_backlog(), 1);
    put_standard_sub(",\"paused\":false");
    wait_outs(1, 10000);
    CU_ASSERT_EQUAL(F.nreqs, 1);
    CU_ASSERT(F.nouts == 1 && F.outs[0]->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS);
    assert_dispatch_acked();
    stop();
}

/* The barrier at the router: a pause answered before a record was appended keeps that
 * record from being pushed, though the registry's poll is far off (the record's stamp shows the router's
 * registry is older, so it is checked first). */
static void test_pause_before_record_holds_it(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    F.registry_poll_ms = 600000;
    put_standard_sub("");
    start_all();
    F.mode = ANSWER_200;
    append_simple("0190a3e2-0000-7000-8000-000000000731");
    wait_outs(1, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nreqs, 1);
    put_standard_sub(",\"paused\":true");
    append_simple("0190a3e2-0000-7000-8000-000000000732");
    msm_test_spin(F.loop, 600);
    wait_outs(2, 10000);
    CU_ASSERT_EQUAL(F.nreqs, 1);
    /* What a paused subscription still reads goes back to flowcontrol, which holds it. */
    const Msm__V1__DeliveryOutcome *o = outcome_of("0190a3e2-0000-7000-8000-000000000732");
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED);
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, "paused"));
    stop();
}

/* A task whose lease passed before its push would start is not pushed: NOT_PUSHED, no
 * HTTP request; the live task of the same record is pushed as usual. */
static void test_expired_lease_not_pushed(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub("");
    start_all();
    F.mode = ANSWER_200;
    int64_t now = msm_time_unix_ms();
    task_spec_t ts[3] = {
        {.id = "0190a3e2-0000-7000-8000-000000000801", .lease_until_ms = now - 1000,
         .attempt = 2},
        {.id = "0190a3e2-0000-7000-8000-000000000802", .lease_until_ms = now + 60000},
        {.id = "0190a3e2-0000-7000-8000-000000000803", .lease_until_ms = now - 1},
    };
    append_tasks(ts, 3);
    wait_outs(3, 10000);
    CU_ASSERT_EQUAL(F.nreqs, 1);
    CU_ASSERT_STRING_EQUAL(hdr(&F.reqs[0], "ce-id"), ts[1].id);
    const Msm__V1__DeliveryOutcome *o = outcome_of(ts[0].id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED);
    CU_ASSERT_EQUAL(o->attempt, 2);
    CU_ASSERT_EQUAL(o->http_status, 0);
    CU_ASSERT_STRING_EQUAL(o->endpoint, "");
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, "lease"));
    o = outcome_of(ts[2].id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED);
    o = outcome_of(ts[1].id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS);
    assert_dispatch_acked();
    size_t len;
    char *text = msm_metrics_render(F.metrics, &len);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "kind=\"not_pushed\"} 2"));
    free(text);
    stop();
}

static const req_rec_t *req_of(const char *id)
{
    for (int i = 0; i < F.nreqs; i++) {
        const char *ce_id = hdr(&F.reqs[i], "ce-id");
        if (ce_id && strcmp(ce_id, id) == 0)
            return &F.reqs[i];
    }
    return NULL;
}

/* An event past its deadline is not pushed: FATAL, DEADLINE_EXCEEDED (flowcontrol
 * dead-letters it). Msm-Deadline is the event's deadline when that comes before now +
 * timeout_ms, else now + timeout_ms. */
static void test_event_deadline(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub(",\"timeout_ms\":4000");
    start_all();
    F.mode = ANSWER_200;
    int64_t now = msm_time_unix_ms();
    task_spec_t ts[4] = {
        {.id = "0190a3e2-0000-7000-8000-000000000901", .deadline_ms = now - 1},
        {.id = "0190a3e2-0000-7000-8000-000000000902", .deadline_ms = now + 2000},
        {.id = "0190a3e2-0000-7000-8000-000000000903", .deadline_ms = now + 600000},
        {.id = "0190a3e2-0000-7000-8000-000000000904"},
    };
    append_tasks(ts, 4);
    wait_outs(4, 10000);
    CU_ASSERT_EQUAL(F.nreqs, 3);
    CU_ASSERT_PTR_NULL(req_of(ts[0].id));
    const Msm__V1__DeliveryOutcome *o = outcome_of(ts[0].id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL);
    CU_ASSERT_STRING_EQUAL(o->error, "DEADLINE_EXCEEDED");
    CU_ASSERT_EQUAL(o->http_status, 0);
    CU_ASSERT_STRING_EQUAL(o->endpoint, "");
    const req_rec_t *r = req_of(ts[1].id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(atoll(hdr(r, "Msm-Deadline")), ts[1].deadline_ms);
    for (int i = 2; i < 4; i++) {
        r = req_of(ts[i].id);
        CU_ASSERT_PTR_NOT_NULL_FATAL(r);
        long long dl = atoll(hdr(r, "Msm-Deadline"));
        CU_ASSERT(dl >= now + 4000 && dl <= r->at_ms + 4000);
        o = outcome_of(ts[i].id);
        CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS);
    }
    assert_dispatch_acked();
    stop();
}

/* The event's deadline also bounds the wait for the answer: 300 ms, not timeout_ms. */
static void test_event_deadline_caps_timeout(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub(",\"timeout_ms\":30000");
    start_all();
    F.mode = HOLD;
    int64_t now = msm_time_unix_ms();
    task_spec_t t = {.id = "0190a3e2-0000-7000-8000-000000000911", .deadline_ms = now + 300};
    append_task(&t);
    wait_outs(1, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nouts, 1);
    const Msm__V1__DeliveryOutcome *o = F.outs[0];
    CU_ASSERT_EQUAL(o->kind, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE);
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, "timeout"));
    CU_ASSERT(o->latency_ms >= 150 && o->latency_ms < 2000);
    stop();
}

/* ---- https endpoints: push_tls (docs/security.md "Outbound TLS") ---- */

static char tls_dir[256];

/* start() with an HTTPS endpoint and fresh test certificates. */
static int start_https(int client_ca)
{
    if (msm_test_certs_make(tls_dir, sizeof(tls_dir)) != 0)
        return -1;
    ep_tls.dir = tls_dir;
    ep_tls.client_ca = client_ca;
    int rc = start();
    ep_tls.dir = NULL;
    return rc;
}

static void stop_https(void)
{
    stop();
    msm_test_certs_remove(tls_dir);
}

/* Member @p name of @p tls: @p pem itself when it is PEM text, else the text of that test
 * file (NULL: none). */
static void tls_member(json_t *tls, const char *name, const char *pem)
{
    char *text = pem && strncmp(pem, "-----", 5) != 0 ? msm_test_certs_read(tls_dir, pem) : NULL;
    CU_ASSERT(!pem || text || strncmp(pem, "-----", 5) == 0);
    if (pem && (text || strncmp(pem, "-----", 5) == 0))
        json_object_set_new(tls, name, json_string(text ? text : pem));
    free(text);
}

/* The subscription on F.url with push_tls made of @p ca, @p cert, @p key (tls_member(); all
 * NULL: no push_tls); @p health adds an active health check every 100 ms. */
static void put_tls_sub(const char *ca, const char *cert, const char *key, int health)
{
    json_t *tls = json_object();
    tls_member(tls, "ca_pem", ca);
    tls_member(tls, "client_cert_pem", cert);
    tls_member(tls, "client_key_pem", key);
    json_t *ep = json_pack("{s:s}", "url", F.url);
    if (health)
        json_object_set_new(ep, "health",
                            json_pack("{s:s,s:i}", "path", "/up", "interval_ms", 100));
    json_t *body = json_pack("{s:s,s:[o]}", "topic", "orders", "endpoints", ep);
    if (json_object_size(tls) > 0)
        json_object_set_new(body, "push_tls", tls);
    else
        json_decref(tls);
    char *text = json_dumps(body, JSON_COMPACT);
    put_sub(text);
    free(text);
    json_decref(body);
}

/* New push_tls for the running router: put_tls_sub(), then time for its registry poll. */
static void change_tls(const char *ca, const char *cert, const char *key)
{
    put_tls_sub(ca, cert, key, 0);
    msm_test_spin(F.loop, 300);
}

/* Pushes task @p id and checks its outcome: @p kind, @p http_status and an error holding
 * @p error_part. */
static void expect_push(const char *id, Msm__V1__OutcomeKind kind, int http_status,
                        const char *error_part)
{
    append_simple(id);
    wait_outs(F.nouts + 1, 10000);
    const Msm__V1__DeliveryOutcome *o = outcome_of(id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(o);
    CU_ASSERT_EQUAL(o->kind, kind);
    CU_ASSERT_EQUAL(o->http_status, http_status);
    if (!strstr(o->error, error_part))
        fprintf(stderr, "%s: error \"%s\" lacks \"%s\"\n", id, o->error, error_part);
    CU_ASSERT_PTR_NOT_NULL(strstr(o->error, error_part));
}

/* start_https(), the subscription (put_tls_sub()), the router; the endpoint answers 200. */
static void start_https_sub(int client_ca, const char *ca, const char *cert, const char *key,
                            int health)
{
    CU_ASSERT_EQUAL_FATAL(start_https(client_ca), 0);
    put_tls_sub(ca, cert, key, health);
    start_all();
    F.mode = ANSWER_200;
}

#define PUSHED   MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS
#define RETRIED  MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE

/* A push over https with the subscription's CA: delivered; its health checks trust the same
 * CA (else the endpoint would be marked down after three failed checks and nothing sent). */
static void test_https_push_with_ca_pem(void)
{
    start_https_sub(0, "ca.pem", NULL, NULL, 1);
    msm_test_spin(F.loop, 600); /* several health checks */
    expect_push("0190a3e2-0000-7000-8000-000000000a01", PUSHED, 200, "");
    CU_ASSERT_EQUAL(F.nreqs, 1);
    assert_dispatch_acked();
    stop_https();
}

/* A CA nobody named is not trusted: without ca_pem (the system's store) or with another CA's
 * ca_pem the push fails before any byte of the event leaves (retriable, the reason in the
 * error); with the right one it goes; a ca_pem that is not a certificate (the frontend
 * refuses it; stored anyway) fails it again, saying why. */
static void test_https_push_untrusted(void)
{
    start_https_sub(0, NULL, NULL, NULL, 0);
    expect_push("0190a3e2-0000-7000-8000-000000000a11", RETRIED, 0, "certificate");
    change_tls("rogue-ca.pem", NULL, NULL);
    expect_push("0190a3e2-0000-7000-8000-000000000a12", RETRIED, 0, "certificate");
    change_tls("ca.pem", NULL, NULL);
    expect_push("0190a3e2-0000-7000-8000-000000000a13", PUSHED, 200, "");
    change_tls("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", NULL, NULL);
    expect_push("0190a3e2-0000-7000-8000-000000000a14", RETRIED, 0, "CA certificate");
    CU_ASSERT_EQUAL(F.nreqs, 1);
    assert_dispatch_acked();
    stop_https();
}

/* push.ca_bundle: the router's default trust for every https push; a file that is not PEM
 * certificates stops the router at start, naming it. */
static void test_https_push_router_ca_bundle(void)
{
    CU_ASSERT_EQUAL_FATAL(start_https(0), 0);
    put_tls_sub(NULL, NULL, NULL, 0);
    char path[300], err[256] = "";
    snprintf(path, sizeof(path), "%s/ca.srl", tls_dir); /* a serial number, not PEM */
    router_env_t env = {F.loop, F.redis, F.stream, F.metrics, F.member};
    router_conf_t bad = {.ca_bundle = path};
    CU_ASSERT_PTR_NULL(router_new_env(&env, &bad, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "push.ca_bundle"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "ca.srl"));
    snprintf(path, sizeof(path), "%s/ca.pem", tls_dir);
    F.ca_bundle = path;
    start_all();
    F.mode = ANSWER_200;
    expect_push("0190a3e2-0000-7000-8000-000000000a31", PUSHED, 200, "");
    stop_https();
}

/* An endpoint that requires a client certificate: with the subscription's certificate and
 * key the push is delivered; once the subscription has none, or another CA's, the next push
 * is refused (401): the kept-alive connection the right certificate opened is not reused
 * without it. */
static void test_https_push_client_certificate(void)
{
    start_https_sub(1, "ca.pem", "cli.pem", "cli.key", 0);
    expect_push("0190a3e2-0000-7000-8000-000000000a21", PUSHED, 200, "");
    change_tls("ca.pem", NULL, NULL);
    expect_push("0190a3e2-0000-7000-8000-000000000a22", RETRIED, 401, "UNAUTHENTICATED");
    change_tls("ca.pem", "rogue.pem", "rogue.key");
    expect_push("0190a3e2-0000-7000-8000-000000000a23", RETRIED, 401, "UNAUTHENTICATED");
    CU_ASSERT_EQUAL(F.nreqs, 1);
    change_tls("ca.pem", "cli.pem", "cli.key");
    expect_push("0190a3e2-0000-7000-8000-000000000a24", PUSHED, 200, "");
    CU_ASSERT_EQUAL(F.nreqs, 2);
    assert_dispatch_acked();
    stop_https();
}

static json_t *find_event(json_t *events, const char *id)
{
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        if (strcmp(json_string_value(json_object_get(ev, "id")), id) == 0)
            return ev;
    }
    return NULL;
}

/* max_batch_events: the tasks of two consecutive records go in ONE request (structured
 * CloudEvents array, signed with an empty ce-id), settled per event by the answer. */
static void test_batch_push(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_standard_sub(",\"max_batch_events\":10,\"secret\":\"" SECRET "\"");
    F.mode = ANSWER_BATCH;
    static const char bin[] = "\x00\x01\xff";
    const char *ok[] = {"verdict", "ok", "region", "eu-west", "Bad-Name", "x", NULL};
    const char *retry[] = {"verdict", "retry", NULL};
    const char *fatal[] = {"verdict", "fatal", "ce_id", "prod-9", "source", "/shop",
                           "subject", "o-1", "dataschema", "https://shop.example/o.json",
                           "type", "com.shop.order", "partitionkey", "pk-1",
                           "ce_extensions", "partitionkey", NULL};
    const char *omit[] = {"verdict", "omit", NULL};
    task_spec_t first[2] = {
        {.id = "0190a3e2-0000-7000-8000-000000000901", .key = "k1", .ordering_key = "o1",
         .attrs = ok, .payload = "{\"n\":1}", .payload_len = 7, .attempt = 2},
        {.id = "0190a3e2-0000-7000-8000-000000000902", .attrs = retry,
         .content_type = "application/octet-stream", .payload = bin, .payload_len = 3},
    };
    task_spec_t second[2] = {
        {.id = "0190a3e2-0000-7000-8000-000000000903", .attrs = fatal},
        {.id = "0190a3e2-0000-7000-8000-000000000904", .attrs = omit},
    };
    /* Two records in the log before the router reads them: one read, one request. */
    append_tasks(first, 2);
    append_tasks(second, 2);
    start_all();
    wait_outs(4, 10000);
    CU_ASSERT_EQUAL_FATAL(F.nreqs, 1);
    const req_rec_t *r = &F.reqs[0];
    CU_ASSERT_STRING_EQUAL(hdr(r, "Content-Type"), "application/cloudevents-batch+json");
    CU_ASSERT_STRING_EQUAL(hdr(r, "Msm-Subscription"), F.sub);
    CU_ASSERT_PTR_NOT_NULL(hdr(r, "Msm-Deadline"));
    CU_ASSERT_PTR_NULL(hdr(r, "ce-id"));
    CU_ASSERT(verify_signature_as(r, ""));
    json_t *events = json_loadb(r->body, r->body_len, 0, NULL);
    CU_ASSERT_FATAL(json_is_array(events));
    size_t total = 0;
    for (int i = 0; i < F.nreqs; i++) {
        json_t *a = json_loadb(F.reqs[i].body, F.reqs[i].body_len, 0, NULL);
        total += json_array_size(a);
        json_decref(a);
    }
    CU_ASSERT_EQUAL(total, 4);
    json_t *e1 = find_event(events, first[0].id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e1);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "specversion")), "1.0");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "source")), "/msm/topics/orders");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "type")), "msm.event");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "time")),
                           "2025-11-25T12:00:00.123Z");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "datacontenttype")),
                           "application/json");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "msmsubscription")), F.sub);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(e1, "msmattempt")), 2);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "msmkey")), "k1");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "msmorderingkey")), "o1");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e1, "region")), "eu-west");
    CU_ASSERT_PTR_NULL(json_object_get(e1, "Bad-Name"));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(e1, "data"), "n")), 1);
    if (F.nreqs == 1) {
        json_t *e2 = find_event(events, first[1].id);
        CU_ASSERT_PTR_NOT_NULL_FATAL(e2);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e2, "data_base64")), "AAH/");
        CU_ASSERT_PTR_NULL(json_object_get(e2, "data"));
    }
    CU_ASSERT_PTR_NULL(json_object_get(e1, "subject"));
    CU_ASSERT_PTR_NULL(json_object_get(e1, "msmsourceid"));
    /* Published as a CloudEvent: the producer's context, its id as msmsourceid. */
    json_t *e3 = find_event(events, second[0].id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e3);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e3, "id")), second[0].id);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e3, "source")), "/shop");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e3, "subject")), "o-1");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e3, "type")), "com.shop.order");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e3, "dataschema")),
                           "https://shop.example/o.json");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e3, "msmsourceid")), "prod-9");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(e3, "partitionkey")), "pk-1");
    CU_ASSERT_PTR_NULL(json_object_get(e3, "ce_extensions"));
    CU_ASSERT_PTR_NULL(json_object_get(e3, "ce_id"));
    json_decref(events);

    const Msm__V1__DeliveryOutcome *o = outcome_of(first[0].id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS && o->attempt == 2 &&
              o->http_status == 200);
    o = outcome_of(first[1].id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE);
    o = outcome_of(second[0].id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL);
    o = outcome_of(second[1].id);
    CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE &&
              strstr(o->error, "not in the batch answer"));
    assert_dispatch_acked();

    /* Any other answer: every event of the request retriable. */
    F.mode = ANSWER_500;
    task_spec_t third[2] = {{.id = "0190a3e2-0000-7000-8000-000000000905", .attrs = ok},
                            {.id = "0190a3e2-0000-7000-8000-000000000906", .attrs = ok}};
    int before = F.nreqs;
    append_tasks(third, 2);
    wait_outs(6, 10000);
    CU_ASSERT_EQUAL(F.nreqs, before + 1);
    for (int i = 0; i < 2; i++) {
        o = outcome_of(third[i].id);
        CU_ASSERT(o && o->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE &&
                  o->http_status == 500);
    }
    assert_dispatch_acked();
    stop();
}

static int suite_init(void)
{
    return msm_test_redis_start(&redis_srv) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    msm_test_redis_destroy(&redis_srv);
    return 0;
}

static int paths_seen(void *arg)
{
    return F.nreqs >= *(int *)arg;
}

/* The router's --push.max_in_flight is full: each freed slot goes to the waiting
 * subscription of the highest priority, whatever came first. */
static void test_priority_across_subscriptions(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    F.max_in_flight = 1;
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/hook/", (unsigned)msm_http_server_port(F.ep));
    char json[512];
    snprintf(F.sub, sizeof(F.sub), "high-push");
    snprintf(json, sizeof(json),
             "{\"topic\":\"orders\",\"priority\":9,\"endpoints\":[{\"url\":\"%shigh\"}]}", url);
    put_sub(json);
    snprintf(F.sub, sizeof(F.sub), "low-push");
    snprintf(json, sizeof(json),
             "{\"topic\":\"orders\",\"priority\":1,\"endpoints\":[{\"url\":\"%slow\"}]}", url);
    put_sub(json);
    start_router();
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, is_ready, NULL, 5000), MSM_OK);
    F.mode = HOLD;
    append_simple("0190a3e2-0000-7000-8000-000000000200");
    int one = 1;
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, paths_seen, &one, 5000), MSM_OK);
    for (int i = 1; i <= 3; i++) {
        char id[40];
        snprintf(id, sizeof(id), "0190a3e2-0000-7000-8000-00000000020%d", i);
        append_simple(id);
    }
    snprintf(F.sub, sizeof(F.sub), "high-push");
    for (int i = 1; i <= 3; i++) {
        char id[40];
        snprintf(id, sizeof(id), "0190a3e2-0000-7000-8000-00000000030%d", i);
        append_simple(id);
    }
    msm_test_spin(F.loop, 600); /* both are read and wait for the one slot */
    CU_ASSERT_EQUAL(F.nreqs, 1);
    for (int n = 2; n <= 7; n++) {
        release_held(ANSWER_200);
        CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, paths_seen, &n, 5000), MSM_OK);
    }
    release_held(ANSWER_200);
    const char *want[] = {"/hook/low", "/hook/high", "/hook/high", "/hook/high",
                          "/hook/low", "/hook/low",  "/hook/low"};
    for (int i = 0; i < 7 && i < F.nreqs; i++)
        CU_ASSERT_STRING_EQUAL(F.reqs[i].path, want[i]);
    stop();
}

/* Requests recorded at @p path from index @p from on. */
static int reqs_at(const char *path, int from)
{
    int n = 0;
    for (int i = from; i < F.nreqs; i++)
        n += strcmp(F.reqs[i].path, path) == 0;
    return n;
}

static int count_kind(Msm__V1__OutcomeKind kind)
{
    int n = 0;
    for (int i = 0; i < F.nouts; i++)
        n += F.outs[i]->kind == kind;
    return n;
}

/* This router's report of endpoint @p url (sub:{s}:endpoints), or NULL. */
static json_t *endpoint_report(const char *url)
{
    char key[256];
    snprintf(key, sizeof(key), "%s:sub:{%s}:endpoints", F.ns, F.sub);
    redisReply *r = msm_test_redis_query(&redis_srv, "HVALS %s", key);
    json_t *found = NULL;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements && !found; i++) {
        json_t *j = json_loads(r->element[i]->str, 0, NULL);
        if (j && strcmp(json_string_value(json_object_get(j, "url")), url) == 0)
            found = j;
        else
            json_decref(j);
    }
    freeReplyObject(r);
    return found;
}

/* Locality prefers zone b; b's endpoint is down (connection refused): its pushes come back
 * NOT_PUSHED (no attempt spent), it is ejected after three, and traffic spills over to
 * zone a. The report says why b is not used. */
static void test_locality_and_ejection(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    int dead = msm_test_free_port();
    char json[1024], dead_url[128];
    snprintf(dead_url, sizeof(dead_url), "http://127.0.0.1:%d/hook/b", dead);
    snprintf(json, sizeof(json),
             "{\"topic\":\"orders\",\"locality\":[\"b\",\"a\"],\"max_concurrency\":1,"
             "\"endpoints\":[{\"url\":\"%s\",\"zone\":\"a\"},{\"url\":\"%s\",\"zone\":\"b\"}]}",
             F.url, dead_url);
    put_sub(json);
    start_all();
    F.mode = ANSWER_200;
    char ids[10][40];
    for (int i = 0; i < 10; i++) {
        snprintf(ids[i], sizeof(ids[i]), "0190a3e2-0000-7000-8000-0000000004%02d", i);
        append_simple(ids[i]);
    }
    wait_outs(10, 15000);
    CU_ASSERT_EQUAL(F.nouts, 10);
    CU_ASSERT_EQUAL(count_kind(MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED), 3);
    CU_ASSERT_EQUAL(count_kind(MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS), 7);
    CU_ASSERT_EQUAL(count_kind(MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE), 0);
    CU_ASSERT_EQUAL(reqs_at("/hook/a", 0), 7);
    msm_test_spin(F.loop, 1300); /* a report */
    json_t *b = endpoint_report(dead_url), *a = endpoint_report(F.url);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_FALSE(json_is_true(json_object_get(b, "healthy")));
    CU_ASSERT_PTR_NOT_NULL(strstr(json_string_value(json_object_get(b, "reason")), "ejected"));
    CU_ASSERT_TRUE(json_is_true(json_object_get(a, "healthy")));
    json_decref(a);
    json_decref(b);
    stop();
}

/* Active checks: GET /up failing twice takes the endpoint out (everything goes to the other),
 * one success brings it back. */
static void test_active_health_check(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    char json[1024], other[128];
    snprintf(other, sizeof(other), "http://127.0.0.1:%u/hook/c",
             (unsigned)msm_http_server_port(F.ep));
    snprintf(json, sizeof(json),
             "{\"topic\":\"orders\",\"max_concurrency\":1,\"endpoints\":["
             "{\"url\":\"%s\",\"health\":{\"path\":\"/up\",\"interval_ms\":100,"
             "\"unhealthy_threshold\":2,\"healthy_threshold\":1}},{\"url\":\"%s\"}]}",
             F.url, other);
    put_sub(json);
    start_all();
    F.mode = ANSWER_200;
    F.up_status = 500;
    msm_test_spin(F.loop, 600); /* two failed checks at least */
    char ids[6][40];
    for (int i = 0; i < 6; i++) {
        snprintf(ids[i], sizeof(ids[i]), "0190a3e2-0000-7000-8000-0000000005%02d", i);
        append_simple(ids[i]);
    }
    wait_outs(6, 10000);
    CU_ASSERT_EQUAL(count_kind(MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS), 6);
    CU_ASSERT_EQUAL(reqs_at("/hook/c", 0), 6);
    CU_ASSERT_EQUAL(reqs_at("/hook/a", 0), 0);
    msm_test_spin(F.loop, 1200);
    json_t *a = endpoint_report(F.url);
    CU_ASSERT_FALSE(json_is_true(json_object_get(a, "healthy")));
    CU_ASSERT_PTR_NOT_NULL(strstr(json_string_value(json_object_get(a, "reason")), "HTTP 500"));
    json_decref(a);
    /* Back: both take turns again. */
    F.up_status = 200;
    msm_test_spin(F.loop, 400);
    int from = F.nreqs;
    for (int i = 0; i < 6; i++) {
        snprintf(ids[i], sizeof(ids[i]), "0190a3e2-0000-7000-8000-0000000006%02d", i);
        append_simple(ids[i]);
    }
    wait_outs(12, 10000);
    CU_ASSERT_EQUAL(reqs_at("/hook/a", from), 3);
    CU_ASSERT_EQUAL(reqs_at("/hook/c", from), 3);
    stop();
}

/* ---- delivery canaries ---- */

/* Subscription F.sub on /hook/a (v1) and /hook/b (v2), canary v2 with @p share. */
static void put_canary_sub(const char *share, int min_events)
{
    unsigned port = msm_http_server_port(F.ep);
    char json[768];
    snprintf(json, sizeof(json),
             "{\"topic\":\"orders\",\"max_concurrency\":1,\"endpoints\":["
             "{\"url\":\"http://127.0.0.1:%u/hook/a\",\"version\":\"v1\"},"
             "{\"url\":\"http://127.0.0.1:%u/hook/b\",\"version\":\"v2\"}],"
             "\"canary\":{\"version\":\"v2\",\"share\":%s,\"max_failure_ratio\":0.05,"
             "\"min_events\":%d}}",
             port, port, share, min_events);
    put_sub(json);
}

static void append_n(int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char id[40];
        snprintf(id, sizeof(id), "0190a3e2-0000-7000-8000-%012d", 900 + i);
        append_simple(id);
    }
}

/* Field @p field of the canary's shared state (sub:{s}:canary), "" when absent. */
static void canary_field(const char *field, char *out, size_t n)
{
    char key[256];
    snprintf(key, sizeof(key), "%s:sub:{%s}:canary", F.ns, F.sub);
    redisReply *r = msm_test_redis_query(&redis_srv, "HGET %s %s", key, field);
    snprintf(out, n, "%s", r && r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
}

static int canary_state_is(void *arg)
{
    char st[64];
    canary_field("state", st, sizeof(st));
    return strcmp(st, arg) == 0;
}

typedef struct {
    int n;
    char types[4][64];
    char payloads[4][512];
} announced_t;

static void on_announced(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n,
                         void *opaque)
{
    announced_t *a = opaque;
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Event *ev = msm_event_unpack(msgs[i]->value, msgs[i]->value_len);
        if (ev && a->n < 4) {
            for (size_t k = 0; k < ev->n_attributes; k++) {
                if (strcmp(ev->attributes[k]->key, "type") == 0)
                    snprintf(a->types[a->n], sizeof(a->types[0]), "%s",
                             ev->attributes[k]->value);
            }
            snprintf(a->payloads[a->n], sizeof(a->payloads[0]), "%.*s", (int)ev->payload.len,
                     (const char *)ev->payload.data);
            a->n++;
        }
        msm__v1__event__free_unpacked(ev, NULL);
        msm_consumer_ack(c, msgs[i]);
    }
}

static int announced_one(void *arg)
{
    return ((announced_t *)arg)->n >= 1;
}

/* The canary (/hook/b) answers 500 every time: once both sides have min_events outcomes
 * the router rolls it back for everyone (the shared state, a lifecycle event, the metric),
 * and b gets no more traffic. */
static void test_canary_rolled_back(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    F.lifecycle_topic = "ops";
    F.ensure_done = 0;
    CU_ASSERT_EQUAL(msm_stream_ensure(F.stream, "events.ops", 1, on_done, &F.ensure_done),
                    MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, flag_set, &F.ensure_done, 5000), MSM_OK);
    announced_t a = {0};
    char err[256] = "";
    msm_consumer_t *ops = msm_stream_consume(F.stream, "events.ops", "ops", "ops-1", 16, 64,
                                             on_announced, &a, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    put_canary_sub("0.5", 5);
    start_all();
    F.mode = ANSWER_200;
    F.fail_path = "/hook/b";
    append_n(0, 10);
    wait_outs(10, 15000);
    CU_ASSERT_EQUAL(reqs_at("/hook/a", 0), 5); /* share 0.5: every other request */
    CU_ASSERT_EQUAL(reqs_at("/hook/b", 0), 5);
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, canary_state_is, "rolled_back", 5000), MSM_OK);
    char v[64], why[256];
    canary_field("version", v, sizeof(v));
    canary_field("reason", why, sizeof(why));
    CU_ASSERT_STRING_EQUAL(v, "v2");
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "failure ratio 1.000"));
    CU_ASSERT_EQUAL(msm_loop_run_until(F.loop, announced_one, &a, 5000), MSM_OK);
    CU_ASSERT_STRING_EQUAL(a.types[0], "msm.canary.rolled_back");
    CU_ASSERT_PTR_NOT_NULL(strstr(a.payloads[0], "\"version\":\"v2\""));
    size_t tlen;
    char *text = msm_metrics_render(F.metrics, &tlen);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(text, "msm_router_canary_rollbacks_total{subscription=\"orders-push\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "msm_router_canary_state{subscription=\"orders-push\"} 2"));
    free(text);
    int before = F.nreqs;
    append_n(10, 6);
    wait_outs(16, 15000);
    CU_ASSERT_EQUAL(reqs_at("/hook/b", before), 0);
    CU_ASSERT_EQUAL(reqs_at("/hook/a", before), 6);
    msm_consumer_free(ops);
    stop();
}

/* A healthy canary stays active and gets its share; promoted through the shared state (as
 * the frontend's :promote writes it), every endpoint takes traffic. */
static void test_canary_promoted(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    put_canary_sub("0.1", 3);
    start_all();
    F.mode = ANSWER_200;
    append_n(0, 10);
    wait_outs(10, 15000);
    CU_ASSERT_EQUAL(reqs_at("/hook/b", 0), 1); /* a tenth */
    CU_ASSERT_EQUAL(reqs_at("/hook/a", 0), 9);
    msm_test_spin(F.loop, 1500); /* judged at least once */
    char st[64];
    canary_field("state", st, sizeof(st));
    CU_ASSERT_STRING_EQUAL(st, ""); /* nothing to say: active */
    char key[256];
    snprintf(key, sizeof(key), "%s:sub:{%s}:canary", F.ns, F.sub);
    freeReplyObject(msm_test_redis_query(&redis_srv, "HSET %s version v2 state promoted", key));
    msm_test_spin(F.loop, 1500); /* the routers read it each second */
    int before = F.nreqs;
    append_n(10, 10);
    wait_outs(20, 15000);
    CU_ASSERT_EQUAL(reqs_at("/hook/b", before), 5); /* plain round robin over both */
    CU_ASSERT_EQUAL(reqs_at("/hook/a", before), 5);
    /* The routers' windows, for the stats. */
    snprintf(key, sizeof(key), "%s:sub:{%s}:canary:report", F.ns, F.sub);
    redisReply *r = msm_test_redis_query(&redis_srv, "HGET %s %s", key, F.member);
    CU_ASSERT_PTR_NOT_NULL(r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "\"canary\"")
                                                               : NULL);
    freeReplyObject(r);
    stop();
}

/* An endpoint's own max_concurrency: no more requests to it than that, whatever the
 * subscription allows; the rest wait (no attempt spent) and go as requests end. */
static void test_endpoint_concurrency_cap(void)
{
    CU_ASSERT_EQUAL_FATAL(start(), 0);
    char json[512];
    snprintf(json, sizeof(json),
             "{\"topic\":\"orders\",\"max_concurrency\":10,"
             "\"endpoints\":[{\"url\":\"%s\",\"max_concurrency\":2}]}",
             F.url);
    put_sub(json);
    start_all();
    F.mode = HOLD;
    char ids[5][40];
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof(ids[i]), "0190a3e2-0000-7000-8000-0000000007%02d", i);
        append_simple(ids[i]);
    }
    wait_held(2, 10000);
    msm_test_spin(F.loop, 500);
    CU_ASSERT_EQUAL(held_count(), 2);
    CU_ASSERT_EQUAL(F.nreqs, 2);
    F.mode = ANSWER_200;
    release_held(ANSWER_200);
    wait_outs(5, 10000);
    CU_ASSERT_EQUAL(F.nouts, 5);
    CU_ASSERT_EQUAL(count_kind(MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS), 5);
    stop();
}

static CU_TestInfo tests[] = {
    {"ready once the registry and status are there", test_ready},
    {"200: every API.md header, signature, body; SUCCESS", test_headers_and_success},
    {"CDC source, default ce-type, optional headers absent", test_cdc_source_and_defaults},
    {"a CloudEvent keeps its producer's context", test_cloudevent_context},
    {"delivery_format json: Avro payloads delivered as JSON", test_delivery_format_json},
    {"500: RETRIABLE", test_500_retriable},
    {"429 + Retry-After: 2: RETRIABLE, retry_after_ms 2000", test_429_retry_after},
    {"Msm-Status: fatal: FATAL", test_fatal},
    {"no answer within timeout_ms: RETRIABLE timeout", test_timeout},
    {"connection refused: NOT_PUSHED, no attempt spent", test_refused},
    {"denied endpoint address: never connected, FATAL", test_denied_address},
    {"CR/LF in attributes and key never make headers", test_header_injection},
    {"in flight bounded by max_concurrency", test_concurrency_bounded},
    {"weighted round robin over endpoints", test_weighted_round_robin},
    {"graceful stop finishes in-flight work, takes none", test_graceful_stop},
    {"freed mid-flight, restarted: every task gets an outcome", test_kill_and_restart},
    {"max_concurrency change remakes the consumer", test_settings_change},
    {"status append failing: retried, acknowledged only once stored",
     test_status_append_retried},
    {"a record of many tasks is acknowledged once all outcomes are durable",
     test_record_acked_when_all_durable},
    {"outcomes of a turn share a status record", test_one_status_record_per_turn},
    {"expired lease: NOT_PUSHED, no request", test_expired_lease_not_pushed},
    {"event deadline: past is FATAL DEADLINE_EXCEEDED, unpushed; Msm-Deadline the earlier",
     test_event_deadline},
    {"event deadline caps the wait for the answer", test_event_deadline_caps_timeout},
    {"https: push_tls.ca_pem trusted, for pushes and health checks", test_https_push_with_ca_pem},
    {"https: an unnamed CA is not trusted (retriable, the reason)", test_https_push_untrusted},
    {"https: push.ca_bundle, the router's default trust", test_https_push_router_ca_bundle},
    {"https: client certificate; a connection never crosses settings",
     test_https_push_client_certificate},
    {"paused: nothing pushed until resumed", test_paused},
    {"a pause answered before a record was appended holds it", test_pause_before_record_holds_it},
    {"batch push: one request, per-event results", test_batch_push},
    {"priority across subscriptions when the router is full", test_priority_across_subscriptions},
    {"locality prefers a zone, a dead endpoint is ejected, no attempt spent",
     test_locality_and_ejection},
    {"active health checks take an endpoint out and back", test_active_health_check},
    {"an endpoint's max_concurrency caps its requests", test_endpoint_concurrency_cap},
    {"a failing canary is rolled back for every router", test_canary_rolled_back},
    {"a healthy canary keeps its share, then is promoted", test_canary_promoted},
    {NULL, NULL},
};

static CU_SuiteInfo suites[] = {
    {"router", suite_init, suite_clean, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    if (getenv("MSM_TEST_DEBUG")) /* the router's per-delivery lines */
        msm_log_setup("test_router", MSM_LOG_DEBUG, MSM_LOG_LOGFMT, NULL);
    return msm_test_run(suites);
}
