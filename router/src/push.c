/* SPDX-License-Identifier: MIT */
/* One push: a dispatch entry's msm.v1.Task becomes a POST to an endpoint of its
 * subscription in CloudEvents 1.0 binary mode with the Msm-* headers of API.md ("Push to
 * lambdas"), and the answer becomes an outcome kind. Everything that comes from an event
 * is checked before it goes into a header: an event can never add headers of its own. */
#include "rt_int.h"

#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/signature.h"
#include "msm/time.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RETRY_AFTER_MAX_MS (24LL * 3600 * 1000) /* a longer pause is not believed */
#define ERROR_BODY_MAX     200                  /* of a failed answer's body, kept in error */
#define FIXED_HEADERS      16                   /* headers besides the attributes */

/* ---- header hygiene ---- */

int msm__rt_token_ok(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (!s || !*s)
        return 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int alnum = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9');
        if (!alnum && !strchr(extra, *p))
            return 0;
    }
    return 1;
}

int msm__rt_value_ok(const char *s)
{
    if (!s)
        return 0;
    /* RFC 9110 field-value: visible characters, obs-text, space and tab. CR and LF are what
     * header injection needs; the other controls are refused with them. */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return 0;
    }
    return 1;
}

/* ---- the request's headers ---- */

typedef struct {
    msm_http_header_t *h;
    size_t n, cap;
    char **owned; /* names and values built for this request */
    size_t nowned;
    char attempt[16];
    char deadline[24];
    char time[MSM_TIME_RFC3339_SIZE];
    char signature[96];
} headers_t;

static void headers_deinit(headers_t *hs)
{
    for (size_t i = 0; i < hs->nowned; i++)
        free(hs->owned[i]);
    free(hs->owned);
    free(hs->h);
}

static void add(headers_t *hs, const char *name, const char *value)
{
    if (hs->n < hs->cap)
        hs->h[hs->n++] = (msm_http_header_t){name, value};
}

/* An optional header from event data: sent only when set and safe. */
static void add_optional(headers_t *hs, const char *name, const char *value)
{
    if (value && *value && msm__rt_value_ok(value))
        add(hs, name, value);
}

static char *own(headers_t *hs, char *s)
{
    if (s)
        hs->owned[hs->nowned++] = s;
    return s;
}

/* Msm-Attr-<name> per attribute; an unsafe name or value drops that attribute. */
static void add_attributes(headers_t *hs, const Msm__V1__Event *ev)
{
    for (size_t i = 0; i < ev->n_attributes; i++) {
        const char *k = ev->attributes[i]->key, *v = ev->attributes[i]->value;
        if (!msm__rt_token_ok(k) || !msm__rt_value_ok(v)) {
            msm_log(MSM_LOG_DEBUG, RT_FACILITY, "event %s: attribute not sent as a header",
                    ev->id);
            continue;
        }
        size_t n = strlen(k) + sizeof("Msm-Attr-");
        char *name = own(hs, malloc(n));
        if (name) {
            snprintf(name, n, "Msm-Attr-%s", k);
            add(hs, name, v);
        }
    }
}

static const char *ce_type(const Msm__V1__Event *ev)
{
    const char *t = msm_event_attr(ev, "type");
    return t && *t && msm__rt_value_ok(t) ? t : "msm.event";
}

static char *ce_source(const Msm__V1__Event *ev)
{
    int cdc = ev->cdc_source && *ev->cdc_source && msm__rt_value_ok(ev->cdc_source);
    const char *what = cdc ? ev->cdc_source : ev->topic;
    if (!msm__rt_value_ok(what))
        what = "";
    size_t n = strlen(what) + sizeof("/msm/topics/");
    char *s = malloc(n);
    if (s)
        snprintf(s, n, cdc ? "/msm/cdc/%s" : "/msm/topics/%s", what);
    return s;
}

static int build_headers(const rt_sub_t *sub, const rt_delivery_t *d, headers_t *hs)
{
    const Msm__V1__Task *task = d->task;
    const Msm__V1__Event *ev = task->event;
    const uint8_t *body = d->body ? (const uint8_t *)d->body : ev->payload.data;
    size_t body_len = d->body ? d->body_len : ev->payload.len;
    memset(hs, 0, sizeof(*hs));
    hs->cap = FIXED_HEADERS + ev->n_attributes;
    hs->h = calloc(hs->cap, sizeof(*hs->h));
    hs->owned = calloc(ev->n_attributes + 1, sizeof(*hs->owned));
    char *source = hs->h && hs->owned ? own(hs, ce_source(ev)) : NULL;
    if (!source)
        return MSM_ERR_NOMEM;
    int64_t now = msm_time_unix_ms();
    add(hs, "ce-specversion", "1.0");
    add(hs, "ce-id", ev->id);
    add(hs, "ce-source", source);
    add(hs, "ce-type", ce_type(ev));
    if (msm_time_format(ev->publish_time_ms, hs->time, sizeof(hs->time)))
        add(hs, "ce-time", hs->time);
    add_optional(hs, "Content-Type", d->body ? "application/json" : ev->content_type);
    add(hs, "Msm-Subscription", sub->name);
    snprintf(hs->attempt, sizeof(hs->attempt), "%" PRId32, task->attempt);
    add(hs, "Msm-Attempt", hs->attempt);
    snprintf(hs->deadline, sizeof(hs->deadline), "%" PRId64, now + sub->conf->timeout_ms);
    add(hs, "Msm-Deadline", hs->deadline);
    add_optional(hs, "Msm-Key", ev->key);
    add_optional(hs, "Msm-Ordering-Key", ev->ordering_key);
    add_optional(hs, "traceparent", ev->traceparent);
    add_optional(hs, "tracestate", ev->tracestate);
    if (sub->conf->secret && *sub->conf->secret) {
        char t[24], hex[MSM_SIGNATURE_HEX_LEN + 1];
        snprintf(t, sizeof(t), "%" PRId64, now / 1000);
        if (msm_signature_v1(sub->conf->secret, t, strlen(t), ev->id, body, body_len, hex) !=
            MSM_OK)
            return MSM_ERR_INVALID;
        snprintf(hs->signature, sizeof(hs->signature), "t=%s,v1=%s", t, hex);
        add(hs, "Msm-Signature", hs->signature);
    }
    add_attributes(hs, ev);
    return MSM_OK;
}

/* ---- the answer ---- */

static int64_t retry_after_ms(const msm_http_result_t *res)
{
    if (res->status != 429 && res->status != 503)
        return 0;
    const char *v = msm_http_headers_get(res->headers, "Retry-After");
    if (!v || !*v)
        return 0;
    int64_t ms;
    if (strspn(v, "0123456789") == strlen(v)) {
        ms = strlen(v) > 9 ? RETRY_AFTER_MAX_MS : strtoll(v, NULL, 10) * 1000;
    } else {
        time_t at = curl_getdate(v, NULL); /* the HTTP-date form */
        ms = at > 0 ? (int64_t)at * 1000 - msm_time_unix_ms() : 0;
    }
    if (ms < 0)
        return 0;
    return ms > RETRY_AFTER_MAX_MS ? RETRY_AFTER_MAX_MS : ms;
}

/* "HTTP 503: <start of the body>", controls turned into spaces. */
static void http_error(const msm_http_result_t *res, const char *prefix, char *buf, size_t n)
{
    int w = snprintf(buf, n, "%sHTTP %d", prefix, res->status);
    if (w < 0 || (size_t)w + 3 >= n || res->body_len == 0)
        return;
    size_t room = n - (size_t)w - 3;
    size_t take = res->body_len < ERROR_BODY_MAX ? res->body_len : ERROR_BODY_MAX;
    if (take > room)
        take = room;
    char *p = buf + w;
    *p++ = ':';
    *p++ = ' ';
    for (size_t i = 0; i < take; i++) {
        unsigned char c = (unsigned char)res->body[i];
        *p++ = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    *p = '\0';
}

static Msm__V1__OutcomeKind classify(const rt_sub_t *sub, const msm_http_result_t *res,
                                     char *err, size_t n)
{
    err[0] = '\0';
    if (res->err == MSM_OK) {
        const char *st = msm_http_headers_get(res->headers, "Msm-Status");
        if (st && strcasecmp(st, "fatal") == 0) {
            /* The lambda's explicit verdict wins over its status code. */
            http_error(res, "fatal: ", err, n);
            return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL;
        }
        if (res->status >= 200 && res->status <= 299)
            return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS;
        http_error(res, "", err, n);
        return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE;
    }
    const char *why = res->error ? res->error : msm_err_str(res->err);
    if (res->err == MSM_ERR_TIMEOUT)
        snprintf(err, n, "timeout after %d ms: %s", sub->conf ? sub->conf->timeout_ms : 0, why);
    else if (res->err == MSM_ERR_IO)
        snprintf(err, n, "connection failed: %s", why);
    else
        snprintf(err, n, "%s: %s", msm_err_str(res->err), why);
    return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE;
}

static void send_request(router_t *rt, rt_delivery_t *d);

/* Starts queued deliveries while the subscription has free slots. The log bounds what is
 * taken only roughly (a read may return one entry per partition), so the bound on requests
 * in flight is kept here. */
static void send_queued(router_t *rt, rt_sub_t *sub)
{
    while (sub->queue && (!sub->conf || sub->in_http < sub->conf->max_concurrency)) {
        rt_delivery_t *d = sub->queue;
        sub->queue = d->next;
        if (!sub->queue)
            sub->queue_tail = NULL;
        d->next = NULL;
        send_request(rt, d);
    }
}

void msm__rt_queue_drop(rt_sub_t *sub)
{
    while (sub->queue) {
        rt_delivery_t *d = sub->queue;
        sub->queue = d->next;
        msm__rt_delivery_free(d);
    }
    sub->queue_tail = NULL;
}

static void on_response(msm_http_client_t *cl, msm_http_call_t *call,
                        const msm_http_result_t *res, void *opaque)
{
    (void)cl;
    (void)call;
    rt_delivery_t *d = opaque;
    router_t *rt = d->sub->rt;
    msm__rt_list_remove(&rt->sending, d);
    d->call = NULL;
    rt_sub_t *sub = d->sub;
    sub->in_http--;
    msm_gauge_dec(sub->m_in_flight);
    char err[512];
    Msm__V1__OutcomeKind kind = classify(sub, res, err, sizeof(err));
    msm__rt_finish(rt, d, kind, res->status, err, (int64_t)res->latency_ms,
                   retry_after_ms(res));
    send_queued(rt, sub);
}

/* ---- one task ---- */

static void send_request(router_t *rt, rt_delivery_t *d)
{
    rt_sub_t *sub = d->sub;
    const msm_endpoint_t *ep = msm__rt_balance_pick(sub);
    d->endpoint = strdup(ep ? ep->url : "");
    if (!ep) {
        msm__rt_finish(rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 0,
                       "no endpoint to push to", 0, 0);
        return;
    }
    headers_t hs;
    int rc = build_headers(sub, d, &hs);
    if (rc == MSM_OK) {
        const Msm__V1__Event *ev = d->task->event;
        msm_http_request_t req = {
            .method = "POST",
            .url = ep->url,
            .headers = hs.h,
            .n_headers = hs.n,
            .body = d->body ? d->body : (const char *)ev->payload.data,
            .body_len = d->body ? d->body_len : ev->payload.len,
            .flags = MSM_HTTP_BODY_BORROW, /* the task lives until the callback */
            .timeout_ms = (uint32_t)sub->conf->timeout_ms,
        };
        rc = msm_http_client_request(rt->http, &req, on_response, d, &d->call);
    }
    headers_deinit(&hs);
    if (rc != MSM_OK) {
        char err[128];
        snprintf(err, sizeof(err), "request not started: %s", msm_err_str(rc));
        msm__rt_finish(rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 0, err, 0, 0);
        return;
    }
    msm__rt_list_push(&rt->sending, d);
    sub->in_http++;
    msm_gauge_inc(sub->m_in_flight);
}

static void enqueue(rt_sub_t *sub, rt_delivery_t *d)
{
    if (sub->queue_tail)
        sub->queue_tail->next = d;
    else
        sub->queue = d;
    sub->queue_tail = d;
    send_queued(sub->rt, sub);
}

/* ---- delivery_format "json" (docs/schemas.md) ---- */

/* A payload with a schema, not JSON already, to a subscription that wants JSON. */
static int wants_json(const rt_sub_t *sub, const Msm__V1__Event *ev)
{
    return sub->conf->delivery_format && strcmp(sub->conf->delivery_format, "json") == 0 &&
           ev->schema_id > 0 && !msm_json_media_type(ev->content_type);
}

/* Ends a delivery that was never sent. */
static void give_up(rt_delivery_t *d, Msm__V1__OutcomeKind kind, const char *why)
{
    d->endpoint = strdup("");
    msm__rt_finish(d->sub->rt, d, kind, 0, why, 0, 0);
}

static void on_schema(const msm_schema_t *s, int id, int err, const char *why, void *opaque)
{
    rt_delivery_t *d = opaque;
    router_t *rt = d->sub->rt;
    if (rt->freeing)
        return;
    msm__rt_list_remove(&rt->converting, d);
    char msg[512];
    const Msm__V1__Event *ev = d->task->event;
    json_t *j = NULL;
    if (!s) {
        /* A schema that is gone or broken will not come back: dead-letter, not retry. */
        snprintf(msg, sizeof(msg), "schema %d for delivery_format json: %s", id,
                 why ? why : msm_err_str(err));
        give_up(d, err == MSM_ERR_BACKEND ? MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE
                                          : MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL, msg);
        return;
    }
    char reason[256];
    if (!(j = msm_schema_decode_json(s, ev->payload.data, ev->payload.len, reason,
                                     sizeof(reason)))) {
        snprintf(msg, sizeof(msg), "payload does not decode with schema %d: %s", id, reason);
        give_up(d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL, msg);
        return;
    }
    d->body = msm_json_dump(j, &d->body_len);
    json_decref(j);
    if (!d->body) {
        give_up(d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, "out of memory");
        return;
    }
    enqueue(d->sub, d);
}

void msm__rt_push(rt_sub_t *sub, msm_stream_msg_t *msg)
{
    router_t *rt = sub->rt;
    Msm__V1__Task *task = msm_task_unpack(msg->value, msg->value_len);
    if (!task || !task->event || !task->event->id || !*task->event->id ||
        !msm__rt_value_ok(task->event->id)) {
        /* Nothing could ever deliver it, and no outcome could name it: drop it loudly. */
        msm_log(MSM_LOG_ERROR, RT_FACILITY, "dispatch.%s entry %s is not a valid task: dropped",
                sub->name, msg->position);
        msm_counter_inc(rt->m_invalid);
        msm_task_free(task);
        msm_consumer_ack(sub->consumer, msg);
        return;
    }
    rt_delivery_t *d = calloc(1, sizeof(*d));
    if (!d) {
        msm_task_free(task); /* unacknowledged: delivered again after a restart */
        return;
    }
    d->sub = sub;
    d->msg = msg;
    d->task = task;
    sub->live++;
    rt->live++;
    /* Later: the subscription's filter goes here (a filtered-out event is a success). */
    if (!wants_json(sub, task->event)) {
        enqueue(sub, d);
        return;
    }
    msm__rt_list_push(&rt->converting, d);
    if (msm_schema_store_get(rt->schemas, task->event->schema_id, on_schema, d) != MSM_OK) {
        msm__rt_list_remove(&rt->converting, d);
        give_up(d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, "out of memory");
    }
}
