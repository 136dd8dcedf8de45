/* SPDX-License-Identifier: MIT */
/* The event a handler reads: built once from the push request's CloudEvents and Msm-*
 * headers and its body, copied into one allocation so that a late (MSM_LATER) handler can
 * keep using it after the HTTP request is gone. */
#include "event_parts.h"

#include "msm/trace.h"
#include "msm/base64.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/time.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ATTR_PREFIX     "Msm-Attr-"
#define ATTR_PREFIX_LEN (sizeof(ATTR_PREFIX) - 1)
#define CE_PREFIX       "ce-"
#define CE_PREFIX_LEN   (sizeof(CE_PREFIX) - 1)
#define TOPIC_SOURCE    "/msm/topics/"
struct msm_event_s {
    const char *ev_id;
    const char *ev_source;
    const char *ev_topic;
    const char *ev_type;
    const char *ev_subject;
    const char *ev_dataschema;
    const char *ev_source_id;
    const char *ev_subscription;
    const char *ev_key;
    const char *ev_ordering_key;
    const char *ev_traceparent;
    const char *ev_content_type;
    int64_t ev_time_ms;
    int64_t ev_deadline_ms;
    int ev_attempt;
    lm_attr_t *ev_attrs;
    size_t ev_nattrs;
    lm_attr_t *ev_exts; /* CloudEvents extensions */
    size_t ev_nexts;
    const char *ev_payload;
    size_t ev_payload_len;
    char ev_span_tp[MSM_TRACEPARENT_LEN + 1]; /* the handler's span, when traced */
};

/* ---- collecting Msm-Attr-* headers ---- */

static int collect_attr(void *opaque, const char *name, const char *value)
{
    attr_collect_t *ac = opaque;
    if (strncasecmp(name, ATTR_PREFIX, ATTR_PREFIX_LEN) != 0 || name[ATTR_PREFIX_LEN] == '\0')
        return 0;
    if (ac->ac_n == LM_MAX_ATTRS) {
        ac->ac_too_many = 1;
        return 1;
    }
    lm_attr_t *a = &ac->ac_attrs[ac->ac_n++];
    a->a_name = name + ATTR_PREFIX_LEN;
    a->a_value = value;
    ac->ac_bytes += strlen(a->a_name) + strlen(value) + 2;
    return 0;
}

/* The CloudEvents context attributes (and msm's msmsourceid) binary mode sends as ce-*
 * headers: not extensions. */
static int is_ce_context(const char *name)
{
    static const char *const names[] = {"specversion", "id",      "source",     "type",
                                        "time",        "subject", "dataschema", "msmsourceid",
                                        NULL};
    for (size_t i = 0; names[i]; i++) {
        if (strcasecmp(names[i], name) == 0)
            return 1;
    }
    return 0;
}

/* ce-<extension> headers. */
static int collect_ext(void *opaque, const char *name, const char *value)
{
    attr_collect_t *ac = opaque;
    if (strncasecmp(name, CE_PREFIX, CE_PREFIX_LEN) != 0 || name[CE_PREFIX_LEN] == '\0' ||
        is_ce_context(name + CE_PREFIX_LEN))
        return 0;
    if (ac->ac_n == LM_MAX_ATTRS) {
        ac->ac_too_many = 1;
        return 1;
    }
    lm_attr_t *a = &ac->ac_attrs[ac->ac_n++];
    a->a_name = name + CE_PREFIX_LEN;
    a->a_value = value;
    ac->ac_bytes += strlen(a->a_name) + strlen(value) + 2;
    return 0;
}

/* ---- parsing helpers ---- */

static int parse_int64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0' || end == s || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static const char *header_or_empty(const msm_http_req_t *req, const char *name)
{
    const char *v = msm_http_req_header(req, name);
    return v ? v : "";
}

/* Copies @p s into the arena at *pos and returns the copy. */
static const char *arena_put(char **pos, const char *s, size_t len)
{
    char *p = *pos;
    memcpy(p, s, len);
    p[len] = '\0';
    *pos = p + len + 1;
    return p;
}

static const char **field_slot(msm_event_t *ev, int f)
{
    switch (f) {
    case F_ID:
        return &ev->ev_id;
    case F_SOURCE:
        return &ev->ev_source;
    case F_TOPIC:
        return &ev->ev_topic;
    case F_TYPE:
        return &ev->ev_type;
    case F_SUBJECT:
        return &ev->ev_subject;
    case F_DATASCHEMA:
        return &ev->ev_dataschema;
    case F_SOURCE_ID:
        return &ev->ev_source_id;
    case F_SUBSCRIPTION:
        return &ev->ev_subscription;
    case F_KEY:
        return &ev->ev_key;
    case F_ORDERING_KEY:
        return &ev->ev_ordering_key;
    case F_TRACEPARENT:
        return &ev->ev_traceparent;
    default:
        return &ev->ev_content_type;
    }
}

/* The topic of "/msm/topics/{topic}" (one non-empty segment), else "". */
static const char *topic_of(const char *source, size_t *len)
{
    size_t pl = strlen(TOPIC_SOURCE);
    if (strncmp(source, TOPIC_SOURCE, pl) != 0 || source[pl] == '\0' || strchr(source + pl, '/')) {
        *len = 0;
        return "";
    }
    *len = strlen(source + pl);
    return source + pl;
}

static int
check_headers(const msm_http_req_t *req, int64_t *attempt, int64_t *deadline, char *why, size_t n)
{
    const char *id = msm_http_req_header(req, "ce-id");
    if (!id || !*id) {
        snprintf(why, n, "the ce-id header is required");
        return -1;
    }
    const char *spec = msm_http_req_header(req, "ce-specversion");
    if (spec && strcmp(spec, "1.0") != 0) {
        snprintf(why, n, "ce-specversion \"%.32s\" is not supported (1.0 is)", spec);
        return -1;
    }
    const char *a = msm_http_req_header(req, "Msm-Attempt");
    *attempt = 1;
    if (a && parse_int64(a, 1, INT_MAX, attempt) != 0) {
        snprintf(why, n, "Msm-Attempt must be an integer >= 1");
        return -1;
    }
    const char *d = msm_http_req_header(req, "Msm-Deadline");
    *deadline = 0;
    if (d && parse_int64(d, 0, MSM_TIME_MAX_MS, deadline) != 0) {
        snprintf(why, n, "Msm-Deadline must be unix milliseconds");
        return -1;
    }
    return 0;
}

/* Sets the topic from the source and the lengths of the text fields. */
static void parts_measure(event_parts_t *p)
{
    for (int f = 0; f < F_COUNT; f++) {
        if (f != F_TOPIC)
            p->lens[f] = strlen(p->text[f]);
    }
    p->text[F_TOPIC] = topic_of(p->text[F_SOURCE], &p->lens[F_TOPIC]);
}

msm_event_t *msm__event_build(const event_parts_t *p, char *why, size_t why_size)
{
    const attr_collect_t *ac = p->attrs, *xc = p->exts;
    size_t total = 0;
    for (int f = 0; f < F_COUNT; f++)
        total += p->lens[f] + 1;
    size_t size = sizeof(msm_event_t) + (ac->ac_n + xc->ac_n) * sizeof(lm_attr_t) + total +
                  ac->ac_bytes + xc->ac_bytes + p->payload_len + 1;
    msm_event_t *ev = calloc(1, size);
    if (!ev) {
        snprintf(why, why_size, "out of memory");
        return NULL;
    }
    ev->ev_attrs = (lm_attr_t *)(void *)(ev + 1);
    ev->ev_exts = ev->ev_attrs + ac->ac_n;
    char *pos = (char *)(ev->ev_exts + xc->ac_n);
    for (int f = 0; f < F_COUNT; f++)
        *field_slot(ev, f) = arena_put(&pos, p->text[f], p->lens[f]);
    for (size_t i = 0; i < ac->ac_n; i++) {
        const lm_attr_t *a = &ac->ac_attrs[i];
        ev->ev_attrs[i].a_name = arena_put(&pos, a->a_name, strlen(a->a_name));
        ev->ev_attrs[i].a_value = arena_put(&pos, a->a_value, strlen(a->a_value));
    }
    ev->ev_nattrs = ac->ac_n;
    for (size_t i = 0; i < xc->ac_n; i++) {
        const lm_attr_t *a = &xc->ac_attrs[i];
        ev->ev_exts[i].a_name = arena_put(&pos, a->a_name, strlen(a->a_name));
        ev->ev_exts[i].a_value = arena_put(&pos, a->a_value, strlen(a->a_value));
    }
    ev->ev_nexts = xc->ac_n;
    ev->ev_payload = arena_put(&pos, p->payload, p->payload_len);
    ev->ev_payload_len = p->payload_len;
    ev->ev_attempt = (int)p->attempt;
    ev->ev_deadline_ms = p->deadline_ms;
    ev->ev_time_ms = p->time_ms;
    return ev;
}

msm_event_t *msm__event_new(const msm_http_req_t *req, char *why, size_t why_size)
{
    event_parts_t p = {0};
    if (check_headers(req, &p.attempt, &p.deadline_ms, why, why_size) != 0)
        return NULL;
    /* On the stack: a few KiB, and no allocation for events without attributes. */
    attr_collect_t acs = {0}, *ac = &acs;
    msm_http_req_headers(req, collect_attr, ac);
    if (ac->ac_too_many) {
        snprintf(why, why_size, "more than %d Msm-Attr-* headers", LM_MAX_ATTRS);
        return NULL;
    }
    p.attrs = ac;
    /* The extensions too: 2 x 4 KiB on the stack in all. */
    attr_collect_t xcs = {0}, *xc = &xcs;
    msm_http_req_headers(req, collect_ext, xc);
    if (xc->ac_too_many) {
        snprintf(why, why_size, "more than %d ce-* extension headers", LM_MAX_ATTRS);
        return NULL;
    }
    p.exts = xc;
    p.text[F_ID] = header_or_empty(req, "ce-id");
    p.text[F_SOURCE] = header_or_empty(req, "ce-source");
    p.text[F_TYPE] = header_or_empty(req, "ce-type");
    p.text[F_SUBJECT] = header_or_empty(req, "ce-subject");
    p.text[F_DATASCHEMA] = header_or_empty(req, "ce-dataschema");
    p.text[F_SOURCE_ID] = header_or_empty(req, "ce-msmsourceid");
    p.text[F_SUBSCRIPTION] = header_or_empty(req, "Msm-Subscription");
    p.text[F_KEY] = header_or_empty(req, "Msm-Key");
    p.text[F_ORDERING_KEY] = header_or_empty(req, "Msm-Ordering-Key");
    p.text[F_TRACEPARENT] = header_or_empty(req, "traceparent");
    p.text[F_CONTENT_TYPE] = header_or_empty(req, "Content-Type");
    parts_measure(&p);
    p.payload = msm_http_req_body(req, &p.payload_len);
    const char *t = msm_http_req_header(req, "ce-time");
    if (!t || msm_time_parse(t, &p.time_ms) != MSM_OK)
        p.time_ms = 0;
    return msm__event_build(&p, why, why_size);
}

/* ---- one event of a batch push (structured mode) ---- */

static const char *const batch_members[BM_COUNT] = {
    [BM_SPECVERSION] = "specversion",
    [BM_ID] = "id",
    [BM_SOURCE] = "source",
    [BM_TYPE] = "type",
    [BM_TIME] = "time",
    [BM_DATACONTENTTYPE] = "datacontenttype",
    [BM_DATASCHEMA] = "dataschema",
    [BM_SUBJECT] = "subject",
    [BM_DATA] = "data",
    [BM_DATA_BASE64] = "data_base64",
    [BM_MSMSUBSCRIPTION] = "msmsubscription",
    [BM_MSMATTEMPT] = "msmattempt",
    [BM_MSMKEY] = "msmkey",
    [BM_MSMORDERINGKEY] = "msmorderingkey",
    [BM_MSMSOURCEID] = "msmsourceid",
    [BM_TRACEPARENT] = "traceparent",
    [BM_TRACESTATE] = "tracestate",
};

const char *msm__batch_member_name(int m)
{
    return batch_members[m];
}

int msm__batch_member(const char *name)
{
    for (int m = 0; m < BM_COUNT; m++) {
        if (batch_members[m][0] == name[0] && strcmp(batch_members[m], name) == 0)
            return m;
    }
    return -1;
}

void msm__batch_parts_texts(event_parts_t *p,
                            const char *const members[BM_COUNT],
                            const char *subscription)
{
    static const struct {
        int field, member;
    } texts[] = {{F_ID, BM_ID},
                 {F_SOURCE, BM_SOURCE},
                 {F_TYPE, BM_TYPE},
                 {F_SUBJECT, BM_SUBJECT},
                 {F_DATASCHEMA, BM_DATASCHEMA},
                 {F_SOURCE_ID, BM_MSMSOURCEID},
                 {F_SUBSCRIPTION, BM_MSMSUBSCRIPTION},
                 {F_KEY, BM_MSMKEY},
                 {F_ORDERING_KEY, BM_MSMORDERINGKEY},
                 {F_TRACEPARENT, BM_TRACEPARENT},
                 {F_CONTENT_TYPE, BM_DATACONTENTTYPE}};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        const char *v = members[texts[i].member];
        p->text[texts[i].field] = v ? v : "";
    }
    if (!*p->text[F_SUBSCRIPTION])
        p->text[F_SUBSCRIPTION] = subscription ? subscription : "";
    parts_measure(p);
    const char *t = members[BM_TIME];
    if (!t || msm_time_parse(t, &p->time_ms) != MSM_OK)
        p->time_ms = 0;
}

static int json_attempt(const json_t *v, int64_t *out)
{
    *out = 1;
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return *out >= 1 && *out <= INT_MAX ? 0 : -1;
    }
    return json_is_string(v) ? parse_int64(json_string_value(v), 1, INT_MAX, out) : -1;
}

/* The payload: "data" (JSON, or text for a non-JSON type) or "data_base64". *owned is
 * what the caller frees. */
static int json_payload(const json_t *obj, const char *ct, event_parts_t *p, char **owned,
                        char *why, size_t n)
{
    const json_t *data = json_object_get(obj, "data");
    const json_t *b64 = json_object_get(obj, "data_base64");
    *owned = NULL;
    p->payload = "";
    p->payload_len = 0;
    if (b64) {
        const char *text = json_string_value(b64);
        size_t len = text ? strlen(text) : 0;
        char *out = text ? malloc(len / 4 * 3 + 3) : NULL;
        if (!out || msm_base64_decode(text, len, out, &p->payload_len) != MSM_OK) {
            free(out);
            snprintf(why, n, "data_base64 is not base64");
            return -1;
        }
        *owned = out;
        p->payload = out;
        return 0;
    }
    if (!data)
        return 0;
    if (json_is_string(data) && !msm_json_media_type(ct)) {
        p->payload = json_string_value(data);
        p->payload_len = json_string_length(data);
        return 0;
    }
    *owned = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!*owned) {
        snprintf(why, n, "out of memory");
        return -1;
    }
    p->payload = *owned;
    p->payload_len = strlen(*owned);
    return 0;
}

msm_event_t *msm__event_from_json(const json_t *obj, const char *subscription,
                                  int64_t deadline_ms, char *why, size_t why_size)
{
    const char *members[BM_COUNT];
    for (int m = 0; m < BM_COUNT; m++)
        members[m] = json_string_value(json_object_get(obj, batch_members[m]));
    if (!json_is_object(obj) || !members[BM_ID] || !*members[BM_ID]) {
        snprintf(why, why_size, "an event without an id");
        return NULL;
    }
    const char *spec = members[BM_SPECVERSION];
    if (spec && strcmp(spec, "1.0") != 0) {
        snprintf(why, why_size, "specversion \"%.32s\" is not supported (1.0 is)", spec);
        return NULL;
    }
    event_parts_t p = {.deadline_ms = deadline_ms};
    if (json_attempt(json_object_get(obj, "msmattempt"), &p.attempt) != 0) {
        snprintf(why, why_size, "msmattempt must be an integer >= 1");
        return NULL;
    }
    attr_collect_t acs = {0}, *ac = &acs;
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)obj, name, v) {
        if (msm__batch_member(name) >= 0 || !json_is_string(v))
            continue;
        if (ac->ac_n == LM_MAX_ATTRS) {
            snprintf(why, why_size, "more than %d attributes", LM_MAX_ATTRS);
            return NULL;
        }
        ac->ac_attrs[ac->ac_n++] = (lm_attr_t){name, json_string_value(v)};
        ac->ac_bytes += strlen(name) + strlen(json_string_value(v)) + 2;
    }
    p.attrs = ac;
    p.exts = ac; /* in a batch the attributes are the extensions */
    msm__batch_parts_texts(&p, members, subscription);
    char *owned;
    if (json_payload(obj, p.text[F_CONTENT_TYPE], &p, &owned, why, why_size) != 0)
        return NULL;
    msm_event_t *ev = msm__event_build(&p, why, why_size);
    free(owned);
    return ev;
}

int msm__event_trace(msm_event_t *ev, msm_span_t *span)
{
    if (!msm_span_start(span, ev->ev_traceparent))
        return 0;
    memcpy(ev->ev_span_tp, span->tp, sizeof(ev->ev_span_tp));
    ev->ev_traceparent = ev->ev_span_tp; /* what the handler sees, and its publishes carry */
    return 1;
}

void msm__event_free(msm_event_t *ev)
{
    free(ev);
}

/* ---- accessors ---- */

const char *msm_event_id(const msm_event_t *ev)
{
    return ev->ev_id;
}

const char *msm_event_topic(const msm_event_t *ev)
{
    return ev->ev_topic;
}

const char *msm_event_source(const msm_event_t *ev)
{
    return ev->ev_source;
}

const char *msm_event_type(const msm_event_t *ev)
{
    return ev->ev_type;
}

const char *msm_event_subject(const msm_event_t *ev)
{
    return ev->ev_subject;
}

const char *msm_event_dataschema(const msm_event_t *ev)
{
    return ev->ev_dataschema;
}

const char *msm_event_source_id(const msm_event_t *ev)
{
    return ev->ev_source_id;
}

int64_t msm_event_time_ms(const msm_event_t *ev)
{
    return ev->ev_time_ms;
}

const char *msm_event_subscription(const msm_event_t *ev)
{
    return ev->ev_subscription;
}

const char *msm_event_key(const msm_event_t *ev)
{
    return ev->ev_key;
}

const char *msm_event_ordering_key(const msm_event_t *ev)
{
    return ev->ev_ordering_key;
}

const char *msm_event_traceparent(const msm_event_t *ev)
{
    return ev->ev_traceparent;
}

int msm_event_attempt(const msm_event_t *ev)
{
    return ev->ev_attempt;
}

int64_t msm_event_deadline_ms(const msm_event_t *ev)
{
    return ev->ev_deadline_ms;
}

const char *msm_event_content_type(const msm_event_t *ev)
{
    return ev->ev_content_type;
}

const void *msm_event_payload(const msm_event_t *ev, size_t *len)
{
    if (len)
        *len = ev->ev_payload_len;
    return ev->ev_payload;
}

const char *msm_event_attr(const msm_event_t *ev, const char *name)
{
    const char *folded = NULL;
    for (size_t i = 0; i < ev->ev_nattrs; i++) {
        if (strcmp(ev->ev_attrs[i].a_name, name) == 0)
            return ev->ev_attrs[i].a_value;
        if (!folded && strcasecmp(ev->ev_attrs[i].a_name, name) == 0)
            folded = ev->ev_attrs[i].a_value;
    }
    return folded;
}

size_t msm_event_attr_count(const msm_event_t *ev)
{
    return ev->ev_nattrs;
}

int msm_event_attr_at(const msm_event_t *ev, size_t index, const char **name, const char **value)
{
    if (index >= ev->ev_nattrs)
        return MSM_ERR_NOTFOUND;
    if (name)
        *name = ev->ev_attrs[index].a_name;
    if (value)
        *value = ev->ev_attrs[index].a_value;
    return MSM_OK;
}

const char *msm_event_extension(const msm_event_t *ev, const char *name)
{
    /* Header names arrive in any case; CloudEvents names are lower-case. */
    for (size_t i = 0; i < ev->ev_nexts; i++) {
        if (strcasecmp(ev->ev_exts[i].a_name, name) == 0)
            return ev->ev_exts[i].a_value;
    }
    return NULL;
}

size_t msm_event_extension_count(const msm_event_t *ev)
{
    return ev->ev_nexts;
}

int msm_event_extension_at(const msm_event_t *ev, size_t index, const char **name,
                           const char **value)
{
    if (index >= ev->ev_nexts)
        return MSM_ERR_NOTFOUND;
    if (name)
        *name = ev->ev_exts[index].a_name;
    if (value)
        *value = ev->ev_exts[index].a_value;
    return MSM_OK;
}
