/* SPDX-License-Identifier: MIT */
/* Every publish form of API.md against a real redis-server: a table of malformed requests
 * (each with its status, error code and field), the single-event form with Msm-* headers,
 * CloudEvents binary and structured mode, the protobuf RPC, idempotency keys and CDC push. */
#include "fe_fixture.h"
#include "fast_parse_check.h"

#include "msm/trace.h"
#include "msm/envelope.h"
#include "msm/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC "pt"

/* ---- reading what was published ---- */

/* Every envelope in events.<topic> (one partition), oldest first. */
static size_t read_events(const char *topic, Msm__V1__Event **out, size_t max)
{
    redisReply *r = cmd("XRANGE %s:log:{events.%s}:0 - +", F.ns, topic);
    size_t n = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && n < max; i++) {
        const redisReply *fields = r->element[i]->element[1];
        for (size_t f = 0; f + 1 < fields->elements; f += 2) {
            if (strcmp(fields->element[f]->str, "v") == 0)
                out[n++] = msm__v1__event__unpack(NULL, fields->element[f + 1]->len,
                                                  (const uint8_t *)fields->element[f + 1]->str);
        }
    }
    freeReplyObject(r);
    return n;
}

static Msm__V1__Event *find_event(const char *topic, const char *id)
{
    Msm__V1__Event *evs[2000];
    size_t n = read_events(topic, evs, 2000);
    Msm__V1__Event *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!found && evs[i] && strcmp(evs[i]->id, id) == 0)
            found = evs[i];
        else
            msm__v1__event__free_unpacked(evs[i], NULL);
    }
    return found;
}

static const char *attr(const Msm__V1__Event *ev, const char *name)
{
    const char *v = msm_event_attr(ev, name);
    return v ? v : "(none)";
}

/* ---- protobuf bodies ---- */

typedef enum {
    PB_NONE,
    PB_UNKNOWN_TOPIC,
    PB_BAD_PRIORITY,
    PB_NO_EVENTS,
    PB_NEG_DELAY,
    PB_EARLY_DEADLINE
} pb_kind_t;

static char *pb_body(pb_kind_t kind, size_t *len)
{
    Msm__V1__PublishRequest req = MSM__V1__PUBLISH_REQUEST__INIT;
    Msm__V1__PublishEvent ev = MSM__V1__PUBLISH_EVENT__INIT, *evs[] = {&ev};
    req.topic = kind == PB_UNKNOWN_TOPIC ? "nope" : TOPIC;
    ev.payload.data = (uint8_t *)"x";
    ev.payload.len = 1;
    req.events = evs;
    req.n_events = kind == PB_NO_EVENTS ? 0 : 1;
    if (kind == PB_BAD_PRIORITY) {
        ev.priority_set_case = MSM__V1__PUBLISH_EVENT__PRIORITY_SET_PRIORITY;
        ev.priority = 12;
    }
    if (kind == PB_NEG_DELAY)
        ev.delay_ms = -5;
    if (kind == PB_EARLY_DEADLINE) { /* expires before it is due */
        ev.deliver_at_ms = 1900000000000;
        ev.deadline_ms = 1800000000000;
    }
    *len = msm__v1__publish_request__get_packed_size(&req);
    char *buf = malloc(*len + 1);
    msm__v1__publish_request__pack(&req, (uint8_t *)buf);
    return buf;
}

/* ---- the table of malformed requests ---- */

typedef struct {
    const char *method, *path, *ctype;
    const char *h1, *v1, *h2, *v2;
    const char *body;
    pb_kind_t pb;
    int status;
    const char *code;
    const char *field; /* NULL: not checked */
} bad_t;

#define BATCH "/v1/topics/" TOPIC ":publish"
#define ONE   "/v1/topics/" TOPIC "/events"
#define JSON  "application/json"
#define CEJ   "application/cloudevents+json"
#define INV   "INVALID_ARGUMENT"
#define BIG   "PAYLOAD_TOO_LARGE"
#define UMT   "UNSUPPORTED_MEDIA_TYPE"
#define NF    "NOT_FOUND"

static const bad_t bad_cases[] = {
    /* JSON batch */
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[", 0, 400, INV, "$"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "[]", 0, 400, INV, "$"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":{}}", 0, 400, INV, "events"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[]}", 0, 400, INV, "events"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"data\":2}]}", 0, 400, INV, "$"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"delay_ms\":-1}]}", 0, 400, INV,
     "events[0].delay_ms"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1},{\"data\":1,\"priority\":10}]}",
     0, 400, INV, "events[1].priority"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"priority\":\"high\"}]}", 0, 400,
     INV, "events[0].priority"},
    {"POST", BATCH, JSON, 0, 0, 0, 0,
     "{\"events\":[{\"data\":1,\"deliver_at\":\"2030-13-01T00:00:00Z\"}]}", 0, 400, INV,
     "events[0].deliver_at"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"deadline\":\"tomorrow\"}]}", 0,
     400, INV, "events[0].deadline"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"deadline\":1900000000000}]}", 0,
     400, INV, "events[0].deadline"},
    {"POST", BATCH, JSON, 0, 0, 0, 0,
     "{\"events\":[{\"data\":1},{\"data\":1,\"deliver_at\":\"2030-01-02T00:00:00Z\","
     "\"deadline\":\"2030-01-01T00:00:00Z\"}]}",
     0, 400, INV, "events[1].deadline"},
    {"POST", BATCH, JSON, 0, 0, 0, 0,
     "{\"events\":[{\"data\":1,\"delay_ms\":60000,\"deadline\":\"2020-01-01T00:00:00Z\"}]}", 0,
     400, INV, "events[0].deadline"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data_base64\":\"a=b=\"}]}", 0, 400, INV,
     "events[0].data_base64"},
    /* An event's own trace context is refused when malformed (a header's is ignored). */
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"traceparent\":\"garbage\"}]}",
     0, 400, INV, "events[0].traceparent"},
    {"POST", BATCH, JSON, 0, 0, 0, 0,
     "{\"events\":[{\"data\":1,\"traceparent\":"
     "\"00-00000000000000000000000000000000-00f067aa0ba902b7-01\"}]}",
     0, 400, INV, "events[0].traceparent"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"tracestate\":\"a=b\"}]}", 0,
     400, INV, "events[0].tracestate"},
    {"POST", ONE, CEJ, 0, 0, 0, 0,
     "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\","
     "\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7\"}",
     0, 400, INV, "traceparent"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"key\":5}]}", 0, 400, INV,
     "events[0].key"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"attributes\":{\"a\":1}}]}", 0,
     400, INV, "events[0].attributes.a"},
    {"POST", BATCH, JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1,\"bogus\":true}]}", 0, 400, INV,
     "events[0].bogus"},
    {"POST", "/v1/topics/nope:publish", JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1}]}", 0, 404,
     NF, NULL},
    {"POST", "/v1/topics/bad%20name:publish", JSON, 0, 0, 0, 0, "{\"events\":[{\"data\":1}]}", 0,
     404, NF, NULL},
    /* single event with Msm-* headers */
    {"POST", ONE, NULL, 0, 0, 0, 0, "x", 0, 415, UMT, "Content-Type"},
    {"POST", ONE, "image/png", 0, 0, 0, 0, "x", 0, 415, UMT, "Content-Type"},
    {"POST", ONE, "application/cloudevents-batch+json", 0, 0, 0, 0, "[]", 0, 415, UMT,
     "Content-Type"},
    {"POST", ONE, JSON, 0, 0, 0, 0, "{\"a\":", 0, 400, INV, "$"},
    {"POST", ONE, JSON, "Msm-Delay-Ms", "-5", 0, 0, "1", 0, 400, INV, "Msm-Delay-Ms"},
    {"POST", ONE, JSON, "Msm-Delay-Ms", "soon", 0, 0, "1", 0, 400, INV, "Msm-Delay-Ms"},
    {"POST", ONE, JSON, "Msm-Priority", "12", 0, 0, "1", 0, 400, INV, "Msm-Priority"},
    {"POST", ONE, JSON, "Msm-Deliver-At", "yesterday", 0, 0, "1", 0, 400, INV, "Msm-Deliver-At"},
    {"POST", ONE, JSON, "Msm-Delay-Ms", "5", "Msm-Deliver-At", "2030-01-01T00:00:00Z", "1", 0,
     400, INV, "Msm-Deliver-At"},
    {"POST", ONE, JSON, "Msm-Bogus", "1", 0, 0, "1", 0, 400, INV, "Msm-Bogus"},
    {"POST", ONE, JSON, "Msm-Deadline", "2030-01-01T00:00:00Z", 0, 0, "1", 0, 400, INV,
     "Msm-Deadline"},
    {"POST", ONE, JSON, "Msm-Deadline", "0", 0, 0, "1", 0, 400, INV, "Msm-Deadline"},
    {"POST", ONE, JSON, "Msm-Deadline", "1800000000000", "Msm-Deliver-At", "2030-01-01T00:00:00Z",
     "1", 0, 400, INV, "Msm-Deadline"},
    {"POST", ONE, JSON, "Msm-Attr-a%b", "1", 0, 0, "1", 0, 400, INV, "[\"Msm-Attr-a%b\"]"},
    /* CloudEvents binary mode */
    {"POST", ONE, JSON, "ce-specversion", "0.3", "ce-id", "1", "1", 0, 400, INV,
     "ce-specversion"},
    {"POST", ONE, JSON, "ce-specversion", "1.0", "ce-source", "/s", "1", 0, 400, INV, "ce-id"},
    {"POST", ONE, JSON, "ce-specversion", "1.0", "ce-id", "1", "1", 0, 400, INV, "ce-type"},
    {"POST", ONE, JSON, "ce-specversion", "1.0", "ce-time", "noon", "1", 0, 400, INV, "ce-time"},
    {"POST", ONE, JSON, "ce-specversion", "1.0", "ce-Bad_Ext", "1", "1", 0, 400, INV,
     "ce-Bad_Ext"},
    /* CloudEvents structured mode */
    {"POST", ONE, CEJ, 0, 0, 0, 0, "{\"specversion\":", 0, 400, INV, "$"},
    {"POST", ONE, CEJ, 0, 0, 0, 0, "[1]", 0, 400, INV, "$"},
    {"POST", ONE, CEJ, 0, 0, 0, 0, "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\"}", 0,
     400, INV, "type"},
    {"POST", ONE, CEJ, 0, 0, 0, 0,
     "{\"specversion\":\"2.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}", 0, 400, INV,
     "specversion"},
    {"POST", ONE, CEJ, 0, 0, 0, 0,
     "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"data\":1,"
     "\"data_base64\":\"AA==\"}", 0, 400, INV, "data_base64"},
    {"POST", ONE, CEJ, 0, 0, 0, 0,
     "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\","
     "\"data_base64\":\"***\"}", 0, 400, INV, "data_base64"},
    {"POST", ONE, CEJ, 0, 0, 0, 0,
     "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"ext\":{}}", 0,
     400, INV, "ext"},
    {"POST", ONE, CEJ, 0, 0, 0, 0,
     "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\","
     "\"datacontenttype\":\"text/plain\",\"data\":{}}", 0, 400, INV, "data"},
    /* the protobuf RPC */
    {"POST", "/v1/publish", JSON, 0, 0, 0, 0, "{}", 0, 415, UMT, NULL},
    {"POST", "/v1/publish", "application/x-protobuf", 0, 0, 0, 0, "\x12\x05\x0a", 0, 400, INV,
     "$"},
    {"POST", "/v1/publish", "application/x-protobuf", 0, 0, 0, 0, NULL, PB_UNKNOWN_TOPIC, 404,
     NF, NULL},
    {"POST", "/v1/publish", "application/x-protobuf", 0, 0, 0, 0, NULL, PB_BAD_PRIORITY, 400, INV,
     "events[0].priority"},
    {"POST", "/v1/publish", "application/x-protobuf", 0, 0, 0, 0, NULL, PB_NO_EVENTS, 400, INV,
     "events"},
    {"POST", "/v1/publish", "application/x-protobuf", 0, 0, 0, 0, NULL, PB_NEG_DELAY, 400, INV,
     "events[0].delay_ms"},
    {"POST", "/v1/publish", "application/x-protobuf", 0, 0, 0, 0, NULL, PB_EARLY_DEADLINE, 400,
     INV, "events[0].deadline_ms"},
    /* CDC */
    {"POST", "/v1/cdc/sources/nosuch/changes", JSON, 0, 0, 0, 0,
     "{\"partition\":\"p0\",\"changes\":[{\"sequence\":1,\"op\":\"create\",\"entity\":\"e\","
     "\"data\":{}}]}", 0, 404, NF, NULL},
    {"POST", "/v1/cdc/sources/cdcbad/changes", JSON, 0, 0, 0, 0,
     "{\"partition\":\"p0\",\"changes\":[{\"sequence\":2,\"op\":\"create\",\"entity\":\"e\","
     "\"data\":{}},{\"sequence\":2,\"op\":\"update\",\"entity\":\"e\",\"data\":{}}]}", 0, 400,
     INV, "changes[1].sequence"},
    {"POST", "/v1/cdc/sources/cdcbad/changes", JSON, 0, 0, 0, 0,
     "{\"partition\":\"p0\",\"changes\":[{\"sequence\":1,\"op\":\"upsert\",\"entity\":\"e\","
     "\"data\":{}}]}", 0, 400, INV, "changes[0].op"},
    {"POST", "/v1/cdc/sources/cdcbad/changes", JSON, 0, 0, 0, 0,
     "{\"partition\":\"p9\",\"changes\":[{\"sequence\":1,\"op\":\"create\",\"entity\":\"e\","
     "\"data\":{}}]}", 0, 400, INV, NULL},
};

static void check_case(size_t i, const bad_t *c, const char *body, size_t len)
{
    msm_http_header_t hs[3];
    size_t n = 0;
    if (c->ctype)
        hs[n++] = (msm_http_header_t){"Content-Type", c->ctype};
    if (c->h1)
        hs[n++] = (msm_http_header_t){c->h1, c->v1};
    if (c->h2)
        hs[n++] = (msm_http_header_t){c->h2, c->v2};
    resp_t r;
    if (getenv("CASE_DEBUG"))
        fprintf(stderr, "case %zu\n", i);
    http_hs(&r, c->method, c->path, body, len, hs, n);
    int ok = r.status == c->status && err_code(&r) && strcmp(err_code(&r), c->code) == 0 &&
             (!c->field || has_detail(&r, c->field));
    if (!ok)
        fprintf(stderr, "case %zu (%s %s): got %d (err %d) %s\n", i, c->method, c->path,
                r.status, r.err, r.body);
    CU_ASSERT(ok);
    resp_clear(&r);
}

static void test_malformed(void)
{
    put_topic(TOPIC, "{\"partitions\":1}");
    resp_t r;
    http(&r, "PUT", "/v1/cdc/sources/cdcbad", "{\"topic\":\"" TOPIC "\",\"partitions\":[\"p0\"]}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    size_t ncases = sizeof(bad_cases) / sizeof(bad_cases[0]);
    CU_ASSERT(ncases >= 40);
    size_t from = getenv("CASE_FROM") ? (size_t)atoi(getenv("CASE_FROM")) : 0;
    for (size_t i = from; i < ncases; i++) {
        const bad_t *c = &bad_cases[i];
        size_t len = 0;
        char *pb = c->pb ? pb_body(c->pb, &len) : NULL;
        check_case(i, c, pb ? pb : c->body, pb ? len : strlen(c->body));
        free(pb);
    }
    /* Limits: 413 naming the field. */
    char *big = malloc(MAX_EVENT_BYTES * 2);
    memset(big, 'a', MAX_EVENT_BYTES + 10);
    big[MAX_EVENT_BYTES + 10] = '\0';
    const bad_t one_big = {"POST", ONE, "text/plain", 0, 0, 0, 0, 0, 0, 413, BIG, "$"};
    check_case(100, &one_big, big, strlen(big));
    char *body = malloc(MAX_EVENT_BYTES * 3);
    snprintf(body, MAX_EVENT_BYTES * 3, "{\"events\":[{\"data\":\"%s\"}]}", big);
    const bad_t batch_big = {"POST", BATCH, JSON, 0, 0, 0, 0, 0, 0, 413, BIG, "events[0].data"};
    check_case(101, &batch_big, body, strlen(body));
    big[1024 + 1] = '\0';
    snprintf(body, MAX_EVENT_BYTES * 3, "{\"events\":[{\"data\":1,\"key\":\"%s\"}]}", big);
    const bad_t key_big = {"POST", BATCH, JSON, 0, 0, 0, 0, 0, 0, 413, BIG, "events[0].key"};
    check_case(102, &key_big, body, strlen(body));
    const bad_t hdr_big = {"POST", ONE, JSON, "Msm-Key", big, 0, 0, 0, 0, 413, BIG, "Msm-Key"};
    check_case(103, &hdr_big, "1", 1);
    const bad_t attr_big = {"POST", ONE, JSON, "Msm-Attr-a", big, 0, 0, 0, 0, 413, BIG, "Msm-Attr-a"};
    check_case(104, &attr_big, "1", 1);
    /* 101 attributes */
    size_t off = (size_t)snprintf(body, MAX_EVENT_BYTES * 3, "{\"events\":[{\"data\":1,"
                                  "\"attributes\":{");
    for (int i = 0; i <= 100; i++)
        off += (size_t)snprintf(body + off, MAX_EVENT_BYTES * 3 - off, "%s\"a%d\":\"v\"",
                                i ? "," : "", i);
    snprintf(body + off, MAX_EVENT_BYTES * 3 - off, "}}]}");
    const bad_t attrs_many = {"POST", BATCH, JSON, 0, 0, 0, 0, 0, 0, 413, BIG, NULL};
    check_case(105, &attrs_many, body, strlen(body));
    free(big);
    free(body);
    /* Nothing of all that was published, and the frontend is fine. */
    CU_ASSERT_EQUAL(stream_len("events." TOPIC, 1), 0);
    http(&r, "GET", "/healthz", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
}

/* ---- trace context ---- */

#define TP_OWN      "00-11111111111111111111111111111111-2222222222222222-01"
#define TP_UNSAMPLED "00-33333333333333333333333333333333-4444444444444444-00"

/* The traceparent of event @p i of the answer @p r (read back from the topic's log). */
static Msm__V1__Event *answered_event(const resp_t *r, size_t i)
{
    const json_t *res = json_array_get(json_object_get(r->json, "results"), i);
    return find_event(TOPIC, json_string_value(json_object_get(res, "id")));
}

/* Each event's own context wins over the request's header; a sampled one gets the
 * frontend's span (a child), an unsampled one travels as given, none makes a new trace. */
static void test_trace_context(void)
{
    put_topic(TOPIC, "{\"partitions\":1}");
    const char *batch = "{\"events\":["
                        "{\"data\":1,\"traceparent\":\"" TP_OWN "\",\"tracestate\":\"a=1\"},"
                        "{\"data\":2,\"traceparent\":\"" TP_UNSAMPLED "\"},"
                        "{\"data\":3},{\"data\":4}]}";
    msm_http_header_t hs[] = {{"Content-Type", "application/json"},
                              {"traceparent", TRACEPARENT},
                              {"tracestate", "req=1"}};
    resp_t r;
    http_hs(&r, "POST", BATCH, batch, strlen(batch), hs, 3);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    Msm__V1__Event *ev[4];
    for (size_t i = 0; i < 4; i++) {
        ev[i] = answered_event(&r, i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ev[i]);
    }
    CU_ASSERT_TRUE(msm_test_tp_child_of(ev[0]->traceparent, TP_OWN));
    CU_ASSERT_STRING_EQUAL(ev[0]->tracestate, "a=1");
    CU_ASSERT_STRING_EQUAL(ev[1]->traceparent, TP_UNSAMPLED);
    CU_ASSERT_STRING_EQUAL(ev[1]->tracestate, "");
    /* The events without their own share the request's span. */
    CU_ASSERT_TRUE(msm_test_tp_child_of(ev[2]->traceparent, TRACEPARENT));
    CU_ASSERT_STRING_EQUAL(ev[2]->traceparent, ev[3]->traceparent);
    CU_ASSERT_STRING_EQUAL(ev[2]->tracestate, "req=1");
    for (size_t i = 0; i < 4; i++)
        msm__v1__event__free_unpacked(ev[i], NULL);
    resp_clear(&r);

    /* No context at all: a new trace per event (trace.sample_ratio 0 here: unsampled). */
    const char *plain = "{\"events\":[{\"data\":1},{\"data\":2}]}";
    http_hs(&r, "POST", BATCH, plain, strlen(plain), hs, 1);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    ev[0] = answered_event(&r, 0);
    ev[1] = answered_event(&r, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev[0]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev[1]);
    CU_ASSERT_TRUE(msm_traceparent_valid(ev[0]->traceparent));
    CU_ASSERT_FALSE(msm_traceparent_sampled(ev[0]->traceparent));
    CU_ASSERT_NOT_EQUAL(strncmp(ev[0]->traceparent, ev[1]->traceparent, 35), 0);
    msm__v1__event__free_unpacked(ev[0], NULL);
    msm__v1__event__free_unpacked(ev[1], NULL);
    resp_clear(&r);

    /* A structured CloudEvent's Distributed Tracing extension is its context. */
    const char *ce = "{\"specversion\":\"1.0\",\"id\":\"c1\",\"source\":\"/s\","
                     "\"type\":\"t\",\"traceparent\":\"" TP_OWN "\",\"data\":{}}";
    msm_http_header_t ch[] = {{"Content-Type", "application/cloudevents+json"}};
    http_hs(&r, "POST", ONE, ce, strlen(ce), ch, 1);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    Msm__V1__Event *one = find_event(TOPIC, jstr(r.json, "id"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(one);
    CU_ASSERT_TRUE(msm_test_tp_child_of(one->traceparent, TP_OWN));
    CU_ASSERT_STRING_EQUAL(attr(one, "traceparent"), "(none)");
    msm__v1__event__free_unpacked(one, NULL);
    resp_clear(&r);
}

/* ---- the single-event form ---- */

static void test_single(void)
{
    msm_http_header_t hs[] = {
        {"Content-Type", "application/avro"}, {"Msm-Key", "k1"}, {"Msm-Ordering-Key", "ok1"},
        {"Msm-Priority", "7"}, {"Msm-Delay-Ms", "1000"}, {"Msm-Attr-color", "red"},
        {"traceparent", TRACEPARENT}, {"Msm-Deadline", "4102444800000"}};
    resp_t r;
    http_hs(&r, "POST", ONE, "\x02\x04", 2, hs, sizeof(hs) / sizeof(hs[0]));
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    CU_ASSERT_PTR_NOT_NULL_FATAL(jstr(r.json, "id"));
    CU_ASSERT(json_is_false(json_object_get(r.json, "duplicate")));
    Msm__V1__Event *ev = find_event(TOPIC, jstr(r.json, "id"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(ev->key, "k1");
    CU_ASSERT_STRING_EQUAL(ev->ordering_key, "ok1");
    CU_ASSERT_EQUAL(ev->priority, 7);
    CU_ASSERT_EQUAL(ev->deliver_at_ms, ev->publish_time_ms + 1000);
    CU_ASSERT_EQUAL(ev->deadline_ms, 4102444800000); /* 2100-01-01 */
    CU_ASSERT_STRING_EQUAL(attr(ev, "color"), "red");
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/avro");
    CU_ASSERT_EQUAL(ev->payload.len, 2);
    CU_ASSERT(ev->payload.len == 2 && memcmp(ev->payload.data, "\x02\x04", 2) == 0);
    CU_ASSERT_TRUE(msm_test_tp_child_of(ev->traceparent, TRACEPARENT)); /* the frontend's span */
    CU_ASSERT_EQUAL(ev->schema_id, 0);
    msm__v1__event__free_unpacked(ev, NULL);
    resp_clear(&r);
}

static void test_cloudevents(void)
{
    msm_http_header_t bin[] = {
        {"Content-Type", "application/json"}, {"ce-specversion", "1.0"}, {"ce-id", "ev-1"},
        {"ce-source", "/orders"}, {"ce-type", "order.created"}, {"ce-subject", "o-9"},
        {"ce-time", "2026-01-02T03:04:05Z"}, {"ce-partitionkey", "pk1"}, {"ce-myext", "v1"}};
    resp_t r;
    http_hs(&r, "POST", ONE, "{\"a\":1}", 7, bin, sizeof(bin) / sizeof(bin[0]));
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    Msm__V1__Event *ev = find_event(TOPIC, jstr(r.json, "id"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(attr(ev, "type"), "order.created");
    CU_ASSERT_STRING_EQUAL(attr(ev, "source"), "/orders");
    CU_ASSERT_STRING_EQUAL(attr(ev, "subject"), "o-9");
    CU_ASSERT_STRING_EQUAL(attr(ev, "ce_id"), "ev-1");
    CU_ASSERT_STRING_EQUAL(attr(ev, "ce_time"), "2026-01-02T03:04:05Z");
    CU_ASSERT_STRING_EQUAL(attr(ev, "myext"), "v1");
    CU_ASSERT_STRING_EQUAL(attr(ev, "ce_extensions"), "partitionkey,myext");
    CU_ASSERT_STRING_EQUAL(ev->key, "pk1");
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/json");
    CU_ASSERT(ev->payload.len == 7 && memcmp(ev->payload.data, "{\"a\":1}", 7) == 0);
    msm__v1__event__free_unpacked(ev, NULL);
    resp_clear(&r);

    /* Binary mode without a Content-Type: the data is just bytes. */
    msm_http_header_t bare[] = {{"ce-specversion", "1.0"}, {"ce-id", "ev-0"},
                                {"ce-source", "/s"}, {"ce-type", "t.bytes"}};
    http_hs(&r, "POST", ONE, "\x01\x02", 2, bare, sizeof(bare) / sizeof(bare[0]));
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    ev = find_event(TOPIC, jstr(r.json, "id"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/octet-stream");
    CU_ASSERT(ev->payload.len == 2 && memcmp(ev->payload.data, "\x01\x02", 2) == 0);
    CU_ASSERT_STRING_EQUAL(attr(ev, "ce_extensions"), ""); /* a CloudEvent without any */
    msm__v1__event__free_unpacked(ev, NULL);
    resp_clear(&r);

    /* ce_* attribute names are msm's on a CloudEvent. */
    msm_http_header_t taken[] = {{"ce-specversion", "1.0"}, {"ce-id", "ev-r"},
                                 {"ce-source", "/s"}, {"ce-type", "t"},
                                 {"Msm-Attr-ce_extensions", "source"}};
    http_hs(&r, "POST", ONE, "x", 1, taken, sizeof(taken) / sizeof(taken[0]));
    CU_ASSERT_EQUAL(r.status, 400);
    resp_clear(&r);

    msm_http_header_t st[] = {{"Content-Type", "application/cloudevents+json; charset=utf-8"},
                              {"Msm-Priority", "2"}};
    const char *body = "{\"specversion\":\"1.0\",\"id\":\"ev-2\",\"source\":\"/s\","
                       "\"type\":\"t.x\",\"count\":3,\"flag\":true,\"data\":{\"x\":[1,2]}}";
    http_hs(&r, "POST", ONE, body, strlen(body), st, 2);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    ev = find_event(TOPIC, jstr(r.json, "id"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_STRING_EQUAL(attr(ev, "type"), "t.x");
    CU_ASSERT_STRING_EQUAL(attr(ev, "count"), "3");
    CU_ASSERT_STRING_EQUAL(attr(ev, "flag"), "true");
    CU_ASSERT_STRING_EQUAL(attr(ev, "ce_id"), "ev-2");
    CU_ASSERT_STRING_EQUAL(attr(ev, "ce_extensions"), "count,flag");
    CU_ASSERT_EQUAL(ev->priority, 2);
    CU_ASSERT_STRING_EQUAL(ev->content_type, "application/json");
    CU_ASSERT(ev->payload.len == 11 && memcmp(ev->payload.data, "{\"x\":[1,2]}", 11) == 0);
    msm__v1__event__free_unpacked(ev, NULL);
    resp_clear(&r);
}

/* ---- the protobuf RPC ---- */

static void test_protobuf_rpc(void)
{
    Msm__V1__PublishRequest req = MSM__V1__PUBLISH_REQUEST__INIT;
    Msm__V1__PublishEvent e[3], *ep[3];
    Msm__V1__PublishEvent__AttributesEntry a = MSM__V1__PUBLISH_EVENT__ATTRIBUTES_ENTRY__INIT,
                                           *ap[] = {&a};
    a.key = "k";
    a.value = "v";
    for (int i = 0; i < 3; i++) {
        msm__v1__publish_event__init(&e[i]);
        e[i].payload.data = (uint8_t *)"pb!";
        e[i].payload.len = 3;
        e[i].content_type = "application/x-protobuf";
        ep[i] = &e[i];
    }
    e[0].priority_set_case = MSM__V1__PUBLISH_EVENT__PRIORITY_SET_PRIORITY;
    e[0].priority = 0; /* explicit 0 is not the default 5 */
    e[1].attributes = ap;
    e[1].n_attributes = 1;
    e[2].idempotency_key = "pb-idem";
    e[2].deadline_ms = 4102444800000;
    req.topic = TOPIC;
    req.events = ep;
    req.n_events = 3;
    size_t len = msm__v1__publish_request__get_packed_size(&req);
    uint8_t *buf = malloc(len);
    msm__v1__publish_request__pack(&req, buf);
    msm_http_header_t hs[] = {{"Content-Type", "application/x-protobuf"}};
    resp_t r;
    http_hs(&r, "POST", "/v1/publish", (const char *)buf, len, hs, 1);
    free(buf);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    Msm__V1__PublishResponse *resp = msm__v1__publish_response__unpack(
        NULL, r.len, (const uint8_t *)r.body);
    CU_ASSERT_PTR_NOT_NULL_FATAL(resp);
    CU_ASSERT_EQUAL_FATAL(resp->n_results, 3);
    int prio[] = {0, 5, 5};
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_FALSE(resp->results[i]->duplicate);
        Msm__V1__Event *ev = find_event(TOPIC, resp->results[i]->id);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
        CU_ASSERT_EQUAL(ev->priority, prio[i]);
        CU_ASSERT_EQUAL(ev->deadline_ms, i == 2 ? 4102444800000 : 0);
        CU_ASSERT(ev->payload.len == 3 && memcmp(ev->payload.data, "pb!", 3) == 0);
        if (i == 1)
            CU_ASSERT_STRING_EQUAL(attr(ev, "k"), "v");
        msm__v1__event__free_unpacked(ev, NULL);
    }
    msm__v1__publish_response__free_unpacked(resp, NULL);
    resp_clear(&r);
}

/* ---- deadlines ---- */

/* "deadline" (RFC 3339) reaches the envelope; one already past is accepted (the event is
 * dead-lettered by the router, docs/publish.md); without one the envelope says 0. */
static void test_deadline(void)
{
    resp_t r;
    http(&r, "POST", BATCH,
         "{\"events\":[{\"data\":1,\"deadline\":\"2100-01-01T00:00:00.250Z\"},"
         "{\"data\":2,\"deadline\":\"2001-02-03T04:05:06Z\"},{\"data\":3},"
         "{\"data\":4,\"delay_ms\":1000,\"deadline\":\"2100-01-01T00:00:00Z\"}]}");
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    json_t *res = json_object_get(r.json, "results");
    CU_ASSERT_EQUAL_FATAL(json_array_size(res), 4);
    const int64_t want[] = {4102444800250, 981173106000, 0, 4102444800000};
    for (size_t i = 0; i < 4; i++) {
        Msm__V1__Event *ev = find_event(TOPIC, jstr(json_array_get(res, i), "id"));
        CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
        CU_ASSERT_EQUAL(ev->deadline_ms, want[i]);
        /* the JSON view of the envelope (task and DLQ listings) shows it */
        json_t *j = msm_event_to_json(ev);
        const char *dl = jstr(j, "deadline");
        if (want[i] == 4102444800250)
            CU_ASSERT(dl && strcmp(dl, "2100-01-01T00:00:00.250Z") == 0);
        if (want[i] == 0)
            CU_ASSERT_PTR_NULL(dl);
        json_decref(j);
        msm__v1__event__free_unpacked(ev, NULL);
    }
    resp_clear(&r);
}

/* ---- idempotency keys ---- */

static void test_idempotency(void)
{
    long long before = stream_len("events." TOPIC, 1);
    resp_t r;
    http(&r, "POST", BATCH,
         "{\"events\":[{\"data\":1,\"idempotency_key\":\"k1\"},{\"data\":2,"
         "\"idempotency_key\":\"k2\"},{\"data\":3,\"idempotency_key\":\"k1\"},{\"data\":4}]}");
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    json_t *res = json_object_get(r.json, "results");
    CU_ASSERT_EQUAL_FATAL(json_array_size(res), 4);
    char first[64];
    snprintf(first, sizeof(first), "%s", jstr(json_array_get(res, 0), "id"));
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(res, 2), "id"), first);
    int dups[] = {0, 0, 1, 0};
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(json_is_true(json_object_get(json_array_get(res, i), "duplicate")),
                        dups[i]);
    CU_ASSERT_EQUAL(stream_len("events." TOPIC, 1), before + 3);
    resp_clear(&r);
    /* A repeat: the first id, not published again. */
    http(&r, "POST", BATCH, "{\"events\":[{\"data\":9,\"idempotency_key\":\"k1\"}]}");
    CU_ASSERT_EQUAL(r.status, 200);
    res = json_object_get(r.json, "results");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(res, 0), "id"), first);
    CU_ASSERT(json_is_true(json_object_get(json_array_get(res, 0), "duplicate")));
    resp_clear(&r);
    msm_http_header_t hs[] = {{"Content-Type", "text/plain"}, {"Msm-Idempotency-Key", "k1"}};
    http_hs(&r, "POST", ONE, "again", 5, hs, 2);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "id"), first);
    CU_ASSERT(json_is_true(json_object_get(r.json, "duplicate")));
    resp_clear(&r);
    CU_ASSERT_EQUAL(stream_len("events." TOPIC, 1), before + 3);
    /* The key lives for the window (24 h by default). */
    long long ttl = cmd_int("PTTL %s:idem:{" TOPIC "}:k1", F.ns);
    CU_ASSERT(ttl > 23LL * 3600 * 1000 && ttl <= 24LL * 3600 * 1000);
}

/* ---- CDC push ---- */

static json_t *push(const char *partition, int from, int to, int *status)
{
    char body[4096];
    size_t off = (size_t)snprintf(body, sizeof(body), "{\"partition\":\"%s\",\"changes\":[",
                                  partition);
    for (int s = from; s <= to; s++)
        off += (size_t)snprintf(body + off, sizeof(body) - off,
                                "%s{\"sequence\":%d,\"op\":\"%s\",\"entity\":\"file-%d\"%s}",
                                s > from ? "," : "", s, s % 3 == 0 ? "delete" : "update", s % 2,
                                s % 3 == 0 ? "" : ",\"data\":{\"size\":1}");
    snprintf(body + off, sizeof(body) - off, "]}");
    resp_t r;
    http(&r, "POST", "/v1/cdc/sources/files/changes", body);
    *status = r.status;
    json_t *j = json_incref(r.json);
    resp_clear(&r);
    return j;
}

static void test_cdc_push(void)
{
    put_topic("cdct", "{\"partitions\":1}");
    resp_t r;
    http(&r, "PUT", "/v1/cdc/sources/files",
         "{\"topic\":\"cdct\",\"range_url\":\"http://127.0.0.1:1/changes\","
         "\"partitions\":[\"p0\",\"p1\"]}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "poll_interval_ms"), 1000);
    CU_ASSERT_EQUAL(jint(r.json, "batch_size"), 500);
    resp_clear(&r);
    /* Invalid sources: 400 naming the field, 404 for an unknown topic. */
    http(&r, "PUT", "/v1/cdc/sources/src1",
         "{\"topic\":\"cdct\",\"range_url\":\"mailto:x@y\",\"partitions\":[\"p0\"]}");
    CU_ASSERT(r.status == 400 && has_detail(&r, "range_url"));
    resp_clear(&r);
    http(&r, "PUT", "/v1/cdc/sources/src1", "{\"topic\":\"nope\",\"partitions\":[\"p0\"]}");
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    http(&r, "PUT", "/v1/cdc/sources/src1",
         "{\"topic\":\"cdct\",\"partitions\":[\"p0\",\"p0\"]}");
    CU_ASSERT(r.status == 400 && has_detail(&r, "partitions[1]"));
    resp_clear(&r);
    int st;
    json_t *a = push("p0", 1, 3, &st);
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(jint(a, "accepted"), 3);
    CU_ASSERT_EQUAL(jint(a, "duplicates"), 0);
    CU_ASSERT_EQUAL(jint(a, "last_sequence"), 3);
    json_decref(a);
    a = push("p0", 2, 5, &st); /* 2 and 3 again */
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(jint(a, "accepted"), 2);
    CU_ASSERT_EQUAL(jint(a, "duplicates"), 2);
    CU_ASSERT_EQUAL(jint(a, "last_sequence"), 5);
    json_decref(a);
    a = push("p0", 1, 5, &st); /* all old */
    CU_ASSERT_EQUAL(st, 200);
    CU_ASSERT_EQUAL(jint(a, "accepted"), 0);
    json_decref(a);
    a = push("p1", 1, 1, &st); /* partitions are independent */
    CU_ASSERT_EQUAL(jint(a, "accepted"), 1);
    json_decref(a);
    Msm__V1__Event *evs[16];
    size_t n = read_events("cdct", evs, 16);
    CU_ASSERT_EQUAL(n, 6);
    int64_t seqs[] = {1, 2, 3, 4, 5, 1};
    for (size_t i = 0; i < n && i < 6; i++) {
        CU_ASSERT_STRING_EQUAL(evs[i]->cdc_source, "files");
        CU_ASSERT_STRING_EQUAL(evs[i]->cdc_partition, i < 5 ? "p0" : "p1");
        CU_ASSERT_EQUAL(evs[i]->cdc_sequence, seqs[i]);
        CU_ASSERT_EQUAL(evs[i]->cdc_operation, seqs[i] % 3 == 0 ? MSM__V1__OPERATION__OPERATION_DELETE
                                                                : MSM__V1__OPERATION__OPERATION_UPDATE);
        char entity[16];
        snprintf(entity, sizeof(entity), "file-%d", (int)(seqs[i] % 2));
        CU_ASSERT_STRING_EQUAL(evs[i]->cdc_entity, entity);
        CU_ASSERT_STRING_EQUAL(evs[i]->ordering_key, entity);
        msm__v1__event__free_unpacked(evs[i], NULL);
    }
    CU_ASSERT_EQUAL(cmd_int("HGET %s:{registry}:cdc:files:cursor p0", F.ns), 5);
    http(&r, "GET", "/v1/cdc/sources", NULL);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(r.json, "sources")), 2);
    resp_clear(&r);
    /* The partitions' state: cursors, no batch pending, nobody pulling (no scheduler). */
    http(&r, "GET", "/v1/cdc/sources/files/partitions", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *parts = json_object_get(r.json, "partitions");
    CU_ASSERT_EQUAL(json_array_size(parts), 2);
    for (size_t i = 0; i < json_array_size(parts); i++) {
        json_t *p = json_array_get(parts, i);
        int p0 = strcmp(jstr(p, "partition"), "p0") == 0;
        CU_ASSERT_EQUAL(jint(p, "cursor"), p0 ? 5 : 1);
        CU_ASSERT_EQUAL(jint(p, "lag"), 0);
        CU_ASSERT(json_is_false(json_object_get(p, "append_pending")));
        CU_ASSERT(json_is_null(json_object_get(p, "owner")) || !json_object_get(p, "owner"));
    }
    resp_clear(&r);
    /* A PUT without p1 forgets p1's cursor; p0 keeps its own. */
    http(&r, "PUT", "/v1/cdc/sources/files",
         "{\"topic\":\"cdct\",\"range_url\":\"http://127.0.0.1:1/changes\","
         "\"partitions\":[\"p0\"]}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    CU_ASSERT_EQUAL(cmd_int("HEXISTS %s:{registry}:cdc:files:cursor p1", F.ns), 0);
    CU_ASSERT_EQUAL(cmd_int("HGET %s:{registry}:cdc:files:cursor p0", F.ns), 5);
    http(&r, "DELETE", "/v1/cdc/sources/files", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "GET", "/v1/cdc/sources/files", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    /* The source's state went with it: a source made again under the name starts afresh. */
    CU_ASSERT_EQUAL(cmd_int("EXISTS %s:{registry}:cdc:files:cursor", F.ns), 0);
    http(&r, "DELETE", "/v1/cdc/sources/files", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

/* POST /v1/cdc/sources/{name}:notify: recorded (the highest sequence per partition) and put
 * on the schedulers' notify stream; 404 unknown source, 400 unknown partition, bad body, or
 * a source nothing pulls. */
static void test_cdc_notify(void)
{
    put_topic("ntopic", "{\"partitions\":1}");
    resp_t r;
    http(&r, "PUT", "/v1/cdc/sources/pulled",
         "{\"topic\":\"ntopic\",\"range_url\":\"http://127.0.0.1:1/changes\","
         "\"partitions\":[\"p0\",\"p1\"]}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "PUT", "/v1/cdc/sources/pushed", "{\"topic\":\"ntopic\",\"partitions\":[\"p0\"]}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "POST", "/v1/cdc/sources/pulled:notify", "{\"partition\":\"p1\",\"sequence\":42}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "notified"), 42);
    resp_clear(&r);
    http(&r, "POST", "/v1/cdc/sources/pulled:notify", "{\"partition\":\"p1\",\"sequence\":7}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "notified"), 42); /* the highest stays */
    resp_clear(&r);
    CU_ASSERT_EQUAL(cmd_int("HGET %s:{registry}:cdc:pulled:notified p1", F.ns), 42);
    CU_ASSERT_EQUAL(cmd_int("XLEN %s:{registry}:cdc:notify", F.ns), 2);
    http(&r, "GET", "/v1/cdc/sources/pulled/partitions", NULL);
    json_t *p1 = json_array_get(json_object_get(r.json, "partitions"), 1);
    CU_ASSERT_STRING_EQUAL(jstr(p1, "partition"), "p1");
    CU_ASSERT_EQUAL(jint(p1, "notified"), 42);
    CU_ASSERT_EQUAL(jint(p1, "lag"), 42);
    resp_clear(&r);
    struct {
        const char *path, *body;
        int status;
        const char *field;
    } bad[] = {
        {"/v1/cdc/sources/nosuch:notify", "{\"partition\":\"p0\",\"sequence\":1}", 404, NULL},
        {"/v1/cdc/sources/pulled:notify", "{\"partition\":\"p9\",\"sequence\":1}", 400, NULL},
        {"/v1/cdc/sources/pulled:notify", "{\"partition\":\"p0\"}", 400, "sequence"},
        {"/v1/cdc/sources/pulled:notify", "{\"partition\":\"p0\",\"sequence\":0}", 400,
         "sequence"},
        {"/v1/cdc/sources/pulled:notify", "{\"sequence\":3}", 400, "partition"},
        {"/v1/cdc/sources/pulled:notify", "{\"partition\":\"p0\",\"sequence\":3,\"x\":1}", 400,
         "x"},
        {"/v1/cdc/sources/pulled:notify", "not json", 400, NULL},
        {"/v1/cdc/sources/pushed:notify", "{\"partition\":\"p0\",\"sequence\":1}", 400, NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        http(&r, "POST", bad[i].path, bad[i].body);
        CU_ASSERT_EQUAL(r.status, bad[i].status);
        if (r.status != bad[i].status)
            fprintf(stderr, "notify case %zu: %d\n", i, r.status);
        if (bad[i].field)
            CU_ASSERT(has_detail(&r, bad[i].field));
        resp_clear(&r);
    }
    /* nothing was recorded by the refused ones */
    CU_ASSERT_EQUAL(cmd_int("XLEN %s:{registry}:cdc:notify", F.ns), 2);
    http(&r, "DELETE", "/v1/cdc/sources/pulled", NULL);
    resp_clear(&r);
    CU_ASSERT_EQUAL(cmd_int("EXISTS %s:{registry}:cdc:pulled:notified", F.ns), 0);
}

/* The answer comes after the key or the partition is settled: a client that repeats at once
 * sees a duplicate, never "in progress". SCRIPT FLUSH sends each settle script through the
 * NOSCRIPT fallback, after which Redis ran it behind the client's next request while the
 * answer did not wait for it. */
static void test_settled_before_answer(void)
{
    resp_t r;
    put_topic("settle", "{\"partitions\":1}");
    http(&r, "PUT", "/v1/cdc/sources/settle-src",
         "{\"topic\":\"settle\",\"partitions\":[\"p0\"]}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    for (int i = 1; i <= 40; i++) {
        char body[160];
        snprintf(body, sizeof(body),
                 "{\"events\":[{\"data\":%d,\"idempotency_key\":\"s%d\"}]}", i, i);
        cmd_int("SCRIPT FLUSH");
        http(&r, "POST", "/v1/topics/settle:publish", body);
        CU_ASSERT_EQUAL(r.status, 200);
        resp_clear(&r);
        http(&r, "POST", "/v1/topics/settle:publish", body);
        CU_ASSERT_EQUAL(r.status, 200);
        json_t *res = json_array_get(json_object_get(r.json, "results"), 0);
        CU_ASSERT(json_is_true(json_object_get(res, "duplicate")));
        resp_clear(&r);
        cmd_int("SCRIPT FLUSH");
        for (int k = 0; k < 2; k++) {
            snprintf(body, sizeof(body),
                     "{\"partition\":\"p0\",\"changes\":[{\"sequence\":%d,\"op\":"
                     "\"update\",\"entity\":\"e\",\"data\":%d}]}",
                     2 * i + k, i);
            http(&r, "POST", "/v1/cdc/sources/settle-src/changes", body);
            CU_ASSERT_EQUAL(r.status, 200);
            CU_ASSERT_EQUAL(jint(r.json, "accepted"), 1);
            resp_clear(&r);
        }
    }
}

/* The fast JSON batch parser: the bodies it must take (and read as the full parser does),
 * and the ones it must leave to the full parser (errors, and forms it does not handle). */
static void test_fast_parser(void)
{
    static const char *const taken[] = {
        "{\"events\":[{\"data\":{\"order_id\":1,\"amount\":1299.5,\"items\":[\"a\",\"b\"]}}]}",
        " { \"events\" : [ { \"data\" : [ 1 , -0 , 0.25 , true , false , null , { } , [ ] ] } ] } ",
        "{\"events\":[{\"data\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}]}",
        "{\"events\":[{\"data\":\"q\\\"b\\\\s\\/n\\nt\\tr\\rb\\bf\\f\"}]}",
        "{\"events\":[{\"data\":1,\"key\":\"k\\\"1\",\"ordering_key\":\"o\","
        "\"idempotency_key\":\"i\",\"priority\":0,\"attributes\":{\"a\":\"1\",\"b\":\"\"}},"
        "{\"data\":{\"x\":{\"y\":{\"z\":[1,2,{\"w\":null}]}}},\"priority\":9,\"delay_ms\":5000,"
        "\"content_type\":\"application/vnd.x+json; charset=utf-8\"}]}",
        "{\"events\":[{\"deliver_at\":\"2030-01-01T00:00:00Z\",\"deadline\":"
        "\"2030-01-02T00:00:00Z\",\"data\":2,\"traceparent\":"
        "\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\",\"tracestate\":\"v=1\"}]}",
        "{\"events\":[{\"data\":123456789012345678,\"attributes\":{}}]}",
    };
    static const char *const declined[] = {
        "",
        "{}",
        "[]",
        "{\"events\":[]}",
        "{\"events\":[{}]}",
        "{\"events\":{}}",
        "{\"events\":[{\"data\":1}],\"x\":1}",
        "{\"events\":[{\"data\":1,\"data\":2}]}",
        "{\"events\":[{\"data\":{\"a\":1,\"a\":2}}]}",       /* a duplicate inside data */
        "{\"events\":[{\"data\":{\"a\":1,\"\\u0061\":2}}]}", /* the same, escaped */
        "{\"events\":[{\"data\":\"\\u00e9\"}]}",             /* \u: the full parser's */
        "{\"events\":[{\"data\":1234567890123456789012}]}",  /* beyond int64 */
        "{\"events\":[{\"data\":1e999}]}",
        "{\"events\":[{\"data\":01}]}",
        "{\"events\":[{\"data\":1.}]}",
        "{\"events\":[{\"data\":-}]}",
        "{\"events\":[{\"data\":\"\xc3\"}]}",         /* truncated UTF-8 */
        "{\"events\":[{\"data\":\"\xed\xa0\x80\"}]}", /* a surrogate */
        "{\"events\":[{\"data\":\"\xc0\xaf\"}]}",     /* overlong */
        "{\"events\":[{\"data\":\"a\tb\"}]}",         /* a raw control character */
        "{\"events\":[{\"data\":tru}]}",
        "{\"events\":[{\"data\":[1,]}]}",
        "{\"events\":[{\"data\":{\"a\":1,}}]}",
        "{\"events\":[{\"data\":1}]} x",
        "{\"events\":[{\"data\":1,\"priority\":10}]}",
        "{\"events\":[{\"data\":1,\"priority\":-1}]}",
        "{\"events\":[{\"data\":1,\"priority\":1.0}]}",
        "{\"events\":[{\"data\":1,\"key\":null}]}",
        "{\"events\":[{\"data\":1,\"key\":5}]}",
        "{\"events\":[{\"data\":1,\"key\":\"a\\nb\"}]}",
        "{\"events\":[{\"data\":1,\"attributes\":{\"a\":1}}]}",
        "{\"events\":[{\"data\":1,\"attributes\":{\"a\":\"1\",\"a\":\"2\"}}]}",
        "{\"events\":[{\"data\":1,\"content_type\":\"text/plain\"}]}",
        "{\"events\":[{\"data\":1,\"content_type\":\"\"}]}",
        "{\"events\":[{\"data\":1,\"delay_ms\":1,\"deliver_at\":\"2030-01-01T00:00:00Z\"}]}",
        "{\"events\":[{\"data\":1,\"deadline\":\"yesterday\"}]}",
        "{\"events\":[{\"data\":1,\"traceparent\":\"garbage\"}]}",
        "{\"events\":[{\"data\":1,\"tracestate\":\"a=b\"}]}",
        "{\"events\":[{\"data_base64\":\"AAAA\"}]}",
        "{\"events\":[{\"data\":1,\"other\":1}]}",
        "{\"events\":[{\"data\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
        "]]}]}",
    };
    char why[200] = "";
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++) {
        fast_verdict_t v = fast_parse_check(taken[i], strlen(taken[i]), why, sizeof(why));
        if (v != FAST_AGREES)
            fprintf(stderr, "taken[%zu] %s: %s\n", i, v == FAST_DECLINED ? "declined" : why,
                    taken[i]);
        CU_ASSERT_EQUAL(v, FAST_AGREES);
    }
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++) {
        fast_verdict_t v = fast_parse_check(declined[i], strlen(declined[i]), why, sizeof(why));
        if (v != FAST_DECLINED)
            fprintf(stderr, "declined[%zu] %s: %s\n", i, v == FAST_AGREES ? "taken" : why,
                    declined[i]);
        CU_ASSERT_EQUAL(v, FAST_DECLINED);
    }
    /* Over the frontend: what the fast parser took is what was published. */
    resp_t r;
    put_topic(TOPIC, "{\"partitions\":1}");
    http(&r, "POST", "/v1/topics/" TOPIC ":publish",
         "{ \"events\" : [ { \"data\" : { \"a\" : [ 1 , 2.50 ] , \"b\" : \"x y\" } , "
         "\"key\" : \"k\" , \"attributes\" : { \"t\" : \"A\" } } ] }");
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    const char *id = json_string_value(
        json_object_get(json_array_get(json_object_get(r.json, "results"), 0), "id"));
    Msm__V1__Event *ev = id ? find_event(TOPIC, id) : NULL;
    CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
    CU_ASSERT_EQUAL(ev->payload.len, strlen("{\"a\":[1,2.50],\"b\":\"x y\"}"));
    CU_ASSERT(memcmp(ev->payload.data, "{\"a\":[1,2.50],\"b\":\"x y\"}", ev->payload.len) == 0);
    CU_ASSERT_STRING_EQUAL(ev->key, "k");
    CU_ASSERT(ev->n_attributes == 1 && strcmp(ev->attributes[0]->value, "A") == 0);
    msm__v1__event__free_unpacked(ev, NULL);
    resp_clear(&r);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"malformed", test_malformed},
        {"single", test_single},
        {"trace context: own, header, new", test_trace_context},
        {"cloudevents", test_cloudevents},
        {"protobuf_rpc", test_protobuf_rpc},
        {"deadline", test_deadline},
        {"idempotency", test_idempotency},
        {"cdc_push", test_cdc_push},
        {"cdc_notify", test_cdc_notify},
        {"settled_before_answer", test_settled_before_answer},
        {"fast JSON parser agrees with the full one", test_fast_parser},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"publish", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
