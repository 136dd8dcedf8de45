/* SPDX-License-Identifier: MIT */
/* POST /v1/topics/{topic}:publish, the JSON batch form of API.md: every event is validated
 * first (any error: 400 naming events[i].field, nothing published), then all of them go to
 * events.<topic> in ONE log append as msm.v1.Event envelopes, and the request is answered
 * from the append's completion: 200 only once every event is durable, 503 otherwise. */
#include "fe_int.h"

#include "msm/base64.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/id.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "publish"

/* Per-event field limits (frontend/README.md). */
#define KEY_MAX_BYTES         1024
#define IDEMPOTENCY_MAX_BYTES 256
#define CONTENT_TYPE_MAX      255
#define ATTRS_MAX             100
#define ATTR_NAME_MAX         128
#define ATTR_VALUE_MAX        1024
#define DELAY_MAX_MS          (10LL * 366 * 24 * 3600 * 1000) /* ten years */
#define TRACESTATE_MAX        512
#define DEFAULT_PRIORITY      5

/* ---- one event, validated ---- */

typedef struct {
    const char *key;             /* borrowed from the request JSON; "" when absent */
    const char *ordering_key;
    const char *content_type;
    const char *idempotency_key;
    const json_t *attributes;    /* NULL when absent */
    uint8_t *payload;            /* owned */
    size_t payload_len;
    int64_t deliver_at_ms;       /* 0 = now */
    int priority;
} pub_event_t;

static int has_control_chars(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return 1;
    }
    return 0;
}

/* A text field that may end up in an HTTP header at delivery (Msm-Key, ...). */
static void get_header_safe(msm_json_err_t *e, const json_t *ev, const char *field,
                            size_t max, const char **out)
{
    if (msm_json_get_strn(e, ev, field, MSM_JSON_NULLABLE, max, out) == MSM_OK &&
        has_control_chars(*out))
        msm_json_err_add(e, field, "must not contain control characters");
}

static int attr_name_valid(const char *s)
{
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
    return n >= 1 && n <= ATTR_NAME_MAX && s[n] == '\0';
}

static void parse_attributes(msm_json_err_t *e, const json_t *ev, pub_event_t *out)
{
    json_t *attrs = NULL;
    if (msm_json_get_object(e, ev, "attributes", MSM_JSON_NULLABLE, &attrs) != MSM_OK || !attrs)
        return;
    msm_json_path_push_key(e, "attributes");
    if (json_object_size(attrs) > ATTRS_MAX)
        msm_json_err_add(e, NULL, "at most %d attributes", ATTRS_MAX);
    const char *name;
    json_t *v;
    json_object_foreach(attrs, name, v) {
        if (!attr_name_valid(name))
            msm_json_err_add(e, name, "name must match [A-Za-z0-9._-]{1,%d}", ATTR_NAME_MAX);
        else if (!json_is_string(v))
            msm_json_err_add(e, name, "must be a string");
        else if (json_string_length(v) > ATTR_VALUE_MAX)
            msm_json_err_add(e, name, "must be at most %d bytes long", ATTR_VALUE_MAX);
        else if (has_control_chars(json_string_value(v)))
            msm_json_err_add(e, name, "must not contain control characters");
    }
    msm_json_path_pop(e);
    out->attributes = attrs;
}

static int is_json_media_type(const char *ct)
{
    size_t n = strcspn(ct, ";");
    return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/* data (any JSON, stored as its compact text) or data_base64 (+ content_type). Size
 * errors go to @p big (413), the rest to @p e (400). */
static void parse_payload(const fe_t *fe, msm_json_err_t *e, msm_json_err_t *big,
                          const json_t *ev, pub_event_t *out)
{
    size_t limit = fe->fe_set.max_event_bytes;
    const json_t *data = json_object_get(ev, "data");
    const char *b64 = NULL;
    if (msm_json_get_str(e, ev, "data_base64", MSM_JSON_OPTIONAL, &b64) != MSM_OK)
        return;
    if (data && b64) {
        msm_json_err_add(e, "data_base64", "cannot be used with data");
        return;
    }
    if (!data && !b64) {
        msm_json_err_add(e, "data", "is required (or data_base64)");
        return;
    }
    if (out->content_type && data && !is_json_media_type(out->content_type))
        msm_json_err_add(e, "content_type",
                         "must be application/json or a +json type when data is given");
    if (data) {
        size_t len = 0;
        char *text = msm_json_dump(data, &len);
        if (!text) {
            msm_json_err_add(e, "data", "cannot be serialised");
            return;
        }
        if (len > limit) {
            msm_json_err_add(big, "data", "exceeds the limit of %zu bytes", limit);
            free(text);
            return;
        }
        out->payload = (uint8_t *)text;
        out->payload_len = len;
        if (!out->content_type)
            out->content_type = "application/json";
        return;
    }
    size_t n = strlen(b64);
    if (n / 4 * 3 > limit + 2) { /* surely too large: do not even decode */
        msm_json_err_add(big, "data_base64", "exceeds the limit of %zu bytes", limit);
        return;
    }
    out->payload = malloc(n / 4 * 3 + 1);
    if (!out->payload || msm_base64_decode(b64, n, out->payload, &out->payload_len) != MSM_OK) {
        msm_json_err_add(e, "data_base64", "must be valid base64 (RFC 4648, padded)");
        return;
    }
    if (out->payload_len > limit)
        msm_json_err_add(big, "data_base64", "exceeds the limit of %zu bytes", limit);
    if (!out->content_type)
        out->content_type = "application/octet-stream";
}

static void parse_timing(msm_json_err_t *e, const json_t *ev, int64_t now_ms, pub_event_t *out)
{
    int64_t delay = -1;
    const char *at = NULL;
    int have_delay = json_object_get(ev, "delay_ms") != NULL;
    msm_json_get_int(e, ev, "delay_ms", MSM_JSON_OPTIONAL, 0, DELAY_MAX_MS, &delay);
    if (msm_json_get_str(e, ev, "deliver_at", MSM_JSON_OPTIONAL, &at) == MSM_OK && at) {
        int64_t t;
        if (have_delay)
            msm_json_err_add(e, "deliver_at", "cannot be used with delay_ms");
        else if (msm_time_parse(at, &t) != MSM_OK)
            msm_json_err_add(e, "deliver_at", "must be an RFC 3339 date-time");
        else if (t < 0)
            msm_json_err_add(e, "deliver_at", "must not be before 1970-01-01T00:00:00Z");
        else
            out->deliver_at_ms = t;
    }
    if (delay >= 0)
        out->deliver_at_ms = now_ms + delay;
}

static void parse_event(const fe_t *fe, msm_json_err_t *e, msm_json_err_t *big,
                        const json_t *ev, int64_t now_ms, pub_event_t *out)
{
    static const char *const known[] = {
        "data", "data_base64", "content_type", "key", "ordering_key", "attributes",
        "delay_ms", "deliver_at", "idempotency_key", "priority", NULL};
    *out = (pub_event_t){.key = "", .ordering_key = "", .idempotency_key = "",
                         .priority = DEFAULT_PRIORITY};
    if (msm_json_expect_object(e, ev) != MSM_OK)
        return;
    msm_json_check_known(e, ev, known);
    get_header_safe(e, ev, "key", KEY_MAX_BYTES, &out->key);
    get_header_safe(e, ev, "ordering_key", KEY_MAX_BYTES, &out->ordering_key);
    get_header_safe(e, ev, "idempotency_key", IDEMPOTENCY_MAX_BYTES, &out->idempotency_key);
    const char *ct = NULL;
    if (msm_json_get_strn(e, ev, "content_type", MSM_JSON_NULLABLE | MSM_JSON_NONEMPTY,
                          CONTENT_TYPE_MAX, &ct) == MSM_OK &&
        ct) {
        if (has_control_chars(ct) || !strchr(ct, '/'))
            msm_json_err_add(e, "content_type", "must be a media type such as type/subtype");
        else
            out->content_type = ct;
    }
    parse_attributes(e, ev, out);
    int64_t prio = DEFAULT_PRIORITY;
    msm_json_get_int(e, ev, "priority", MSM_JSON_NULLABLE, 0, 9, &prio);
    out->priority = (int)prio;
    parse_timing(e, ev, now_ms, out);
    parse_payload(fe, e, big, ev, out);
}

/* ---- trace context (W3C): carried when well-formed, ignored otherwise ---- */

static int hex_run(const char *s, size_t n, int *all_zero)
{
    *all_zero = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        if (c != '0')
            *all_zero = 0;
    }
    return 1;
}

static int traceparent_valid(const char *tp)
{
    size_t n = tp ? strlen(tp) : 0;
    int zero;
    if (n < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-')
        return 0;
    if (!hex_run(tp, 2, &zero) || strncmp(tp, "ff", 2) == 0)
        return 0;
    if (strncmp(tp, "00", 2) == 0 ? n != 55 : (n > 55 && tp[55] != '-'))
        return 0;
    if (!hex_run(tp + 3, 32, &zero) || zero || !hex_run(tp + 36, 16, &zero) || zero)
        return 0;
    return hex_run(tp + 53, 2, &zero);
}

static int tracestate_valid(const char *ts)
{
    return ts && strlen(ts) <= TRACESTATE_MAX && !has_control_chars(ts);
}

/* ---- the request ---- */

typedef struct {
    fe_call_t base;
    char *topic;
    size_t n;
    char (*ids)[MSM_ID_STR_SIZE];
    uint64_t start_us;
} publish_t;

static void publish_cleanup(fe_call_t *c)
{
    publish_t *p = (publish_t *)c;
    free(p->topic);
    free(p->ids);
}

static void count(fe_t *fe, const char *topic, const char *result, size_t events,
                  uint64_t start_us)
{
    msm_counter_inc(msm_metric_labels(fe->fe_m_requests, topic, result, NULL));
    msm_counter_add(msm_metric_labels(fe->fe_m_events, topic, result, NULL), events);
    msm_histogram_observe(msm_metric_labels(fe->fe_m_latency, result, NULL),
                          (double)(msm_time_mono_us() - start_us) / 1e6);
}

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    publish_t *p = opaque;
    fe_t *fe = p->base.fe;
    if (err != MSM_OK) {
        msm_log(MSM_LOG_WARN, FAC, "publish of %zu events to %s failed: %s", p->n, p->topic,
                reason ? reason : msm_err_str(err));
        count(fe, p->topic, "unavailable", p->n, p->start_us);
        char msg[512];
        snprintf(msg, sizeof(msg), "nothing was published: %s",
                 reason ? reason : msm_err_str(err));
        fe_call_error(&p->base, 503, "UNAVAILABLE", msg, NULL);
        return;
    }
    count(fe, p->topic, "ok", p->n, p->start_us);
    if (!p->base.req)
        msm_log(MSM_LOG_WARN, FAC, "%zu events published to %s after the request was "
                "cancelled", p->n, p->topic);
    json_t *results = json_array();
    for (size_t i = 0; results && i < p->n; i++)
        json_array_append_new(results, json_pack("{s:s,s:b}", "id", p->ids[i], "duplicate", 0));
    fe_call_json(&p->base, 200, json_pack("{s:o*}", "results", results));
}

/* Fills an envelope for @p ev; attribute entries go to @p entries / @p ptrs (room for
 * the event's attribute count). Strings are borrowed: the envelope is packed, not freed. */
static void envelope_fill(Msm__V1__Event *env, const pub_event_t *ev, const char *id,
                          const char *topic, int64_t now_ms, const char *traceparent,
                          const char *tracestate, Msm__V1__Event__AttributesEntry *entries,
                          Msm__V1__Event__AttributesEntry **ptrs)
{
    msm__v1__event__init(env);
    env->id = (char *)id;
    env->topic = (char *)topic;
    env->key = (char *)ev->key;
    env->ordering_key = (char *)ev->ordering_key;
    env->payload.data = ev->payload;
    env->payload.len = ev->payload_len;
    env->content_type = (char *)ev->content_type;
    env->publish_time_ms = now_ms;
    env->deliver_at_ms = ev->deliver_at_ms;
    env->priority = ev->priority;
    env->idempotency_key = (char *)ev->idempotency_key;
    if (traceparent) {
        env->traceparent = (char *)traceparent;
        if (tracestate)
            env->tracestate = (char *)tracestate;
    }
    size_t k = 0;
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)ev->attributes, name, v) {
        msm__v1__event__attributes_entry__init(&entries[k]);
        entries[k].key = (char *)name;
        entries[k].value = (char *)json_string_value(v);
        ptrs[k] = &entries[k];
        k++;
    }
    env->n_attributes = k;
    env->attributes = k ? ptrs : NULL;
}

/* Packs every event into one buffer and points @p records at the pieces. */
static int pack_events(publish_t *p, const pub_event_t *evs, int64_t now_ms,
                       const char *traceparent, const char *tracestate, uint8_t **buf_out,
                       msm_record_t *records)
{
    size_t total = 0, nattrs = 0;
    for (size_t i = 0; i < p->n; i++)
        nattrs += json_object_size(evs[i].attributes);
    Msm__V1__Event *envs = calloc(p->n, sizeof(*envs));
    Msm__V1__Event__AttributesEntry *entries = calloc(nattrs + 1, sizeof(*entries));
    Msm__V1__Event__AttributesEntry **ptrs = calloc(nattrs + 1, sizeof(*ptrs));
    size_t *sizes = calloc(p->n, sizeof(*sizes));
    uint8_t *buf = NULL;
    int rc = MSM_ERR_NOMEM;
    if (!envs || !entries || !ptrs || !sizes)
        goto out;
    size_t a = 0;
    for (size_t i = 0; i < p->n; i++) {
        msm_id_new_str(p->ids[i]);
        envelope_fill(&envs[i], &evs[i], p->ids[i], p->topic, now_ms, traceparent, tracestate,
                      entries + a, ptrs + a);
        a += envs[i].n_attributes;
        sizes[i] = msm__v1__event__get_packed_size(&envs[i]);
        total += sizes[i];
    }
    buf = malloc(total + 1);
    if (!buf)
        goto out;
    size_t off = 0;
    for (size_t i = 0; i < p->n; i++) {
        msm__v1__event__pack(&envs[i], buf + off);
        /* The record key picks the partition: ordering_key keeps its events in order. */
        const char *key = *evs[i].ordering_key ? evs[i].ordering_key : evs[i].key;
        records[i] = (msm_record_t){.key = *key ? key : NULL, .key_len = strlen(key),
                                    .value = buf + off, .value_len = sizes[i]};
        off += sizes[i];
    }
    *buf_out = buf;
    buf = NULL;
    rc = MSM_OK;
out:
    free(buf);
    free(envs);
    free(entries);
    free(ptrs);
    free(sizes);
    return rc;
}

static void events_free(pub_event_t *evs, size_t n)
{
    for (size_t i = 0; evs && i < n; i++)
        free(evs[i].payload);
    free(evs);
}

/* Validates the body into @p evs (n of them). Answers 400/413 itself and returns -1. */
static int validate(fe_t *fe, msm_http_req_t *req, const json_t *body, int64_t now_ms,
                    pub_event_t **evs_out, size_t *n_out, const char **result)
{
    static const char *const known[] = {"events", NULL};
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    json_t *events = NULL;
    pub_event_t *evs = NULL;
    size_t n = 0;
    if (msm_json_expect_object(&e, body) == MSM_OK) {
        msm_json_check_known(&e, body, known);
        msm_json_get_array(&e, body, "events", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &events);
    }
    n = json_array_size(events);
    if (n > fe->fe_set.max_events) {
        msm_json_err_add(&big, "events", "at most %zu events per request",
                         fe->fe_set.max_events);
        n = 0;
    } else if (n && !msm_json_err_count(&e)) {
        evs = calloc(n, sizeof(*evs));
        if (!evs)
            msm_json_err_add(&e, NULL, "out of memory");
        msm_json_path_push_key(&e, "events");
        msm_json_path_push_key(&big, "events");
        for (size_t i = 0; evs && i < n; i++) {
            msm_json_path_push_index(&e, i);
            msm_json_path_push_index(&big, i);
            parse_event(fe, &e, &big, json_array_get(events, i), now_ms, &evs[i]);
            msm_json_path_pop(&e);
            msm_json_path_pop(&big);
        }
        msm_json_path_pop(&e);
        msm_json_path_pop(&big);
    }
    int bad = msm_json_err_count(&e) > 0, too_large = msm_json_err_count(&big) > 0;
    /* A malformed request is 400 even when it is also too large: fix the form first. */
    if (bad)
        msm_http_respond_json(req, 400, msm_json_err_body(&e, NULL));
    else if (too_large)
        msm_http_respond_json(req, 413, msm_json_err_body(&big, "PAYLOAD_TOO_LARGE"));
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    if (bad || too_large) {
        events_free(evs, n);
        *result = bad ? "invalid" : "too_large";
        return -1;
    }
    *evs_out = evs;
    *n_out = n;
    return 0;
}

/* Starts the append; the answer comes from on_appended. */
static void publish_start(fe_t *fe, msm_http_req_t *req, const char *topic, pub_event_t *evs,
                          size_t n, int64_t now_ms, uint64_t start_us)
{
    const char *tp = msm_http_req_header(req, "traceparent");
    const char *ts = msm_http_req_header(req, "tracestate");
    if (!traceparent_valid(tp))
        tp = NULL;
    if (!tracestate_valid(ts))
        ts = NULL;
    publish_t *p = fe_call_new(fe, req, sizeof(*p));
    msm_record_t *records = calloc(n, sizeof(*records));
    uint8_t *buf = NULL;
    if (!p || !records || !(p->topic = strdup(topic)) || !(p->ids = calloc(n, sizeof(*p->ids)))) {
        free(records);
        if (p) {
            p->base.cleanup = publish_cleanup;
            fe_call_end(&p->base);
        }
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    p->base.cleanup = publish_cleanup;
    p->n = n;
    p->start_us = start_us;
    int rc = pack_events(p, evs, now_ms, tp, ts, &buf, records);
    char stream[MSM_NAME_MAX + 32];
    snprintf(stream, sizeof(stream), MSM_STREAM_EVENTS, topic);
    if (rc == MSM_OK)
        rc = msm_stream_append(fe->fe_deps.stream, stream, records, n, on_appended, p);
    free(records);
    free(buf);
    if (rc != MSM_OK) {
        count(fe, topic, "unavailable", n, start_us);
        fe_call_unavailable(&p->base, msm_err_str(rc));
    }
}

static void publish(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    uint64_t start_us = msm_time_mono_us();
    const char *topic = msm_http_req_param(req, "topic");
    if (!msm_name_valid(topic) || !fe_topic_exists(fe, topic)) {
        count(fe, "", "not_found", 0, start_us); /* no label per unknown name */
        fe_not_found(req, "topic", topic);
        return;
    }
    json_t *body;
    if (fe_parse_body(req, 0, &body) != 0) {
        count(fe, topic, "invalid", 0, start_us);
        return;
    }
    int64_t now_ms = msm_time_unix_ms();
    pub_event_t *evs = NULL;
    size_t n = 0;
    const char *result = NULL;
    if (validate(fe, req, body, now_ms, &evs, &n, &result) != 0) {
        count(fe, topic, result, json_array_size(json_object_get(body, "events")), start_us);
        json_decref(body);
        return;
    }
    /* Strings in evs point into body: it lives until the append has copied the records. */
    publish_start(fe, req, topic, evs, n, now_ms, start_us);
    events_free(evs, n);
    json_decref(body);
}

int fe_publish_routes(fe_t *fe)
{
    return msm_http_server_route(fe->fe_deps.http, "POST", "/v1/topics/{topic}:publish", publish,
                                 fe);
}
