/* SPDX-License-Identifier: MIT */
/* Pushes: a dispatch record's msm.v1.TaskBatch becomes one delivery per task; queued
 * deliveries become requests to an endpoint of their subscription, bounded by
 * max_concurrency. One task per request in CloudEvents 1.0 binary mode with the Msm-*
 * headers of API.md ("Push to lambdas"), or with max_batch_events > 1 up to that many per
 * request (batch_push.c). A task whose lease has passed, or of a paused subscription, is
 * not pushed at all (OUTCOME_KIND_NOT_PUSHED: no attempt spent). Requests are kept per
 * subscription with their header arrays and buffers, so a warm push allocates nothing.
 * Everything that comes from an event is checked before it goes into a header: an event
 * can never add headers of its own. */
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
#define FIXED_HEADERS      20                   /* headers besides the attributes */
#define IDLE_REQS_MAX      64                   /* requests kept for reuse per subscription */

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

/* ---- CloudEvents context shared by both modes ---- */

const char *msm__rt_ce_type(const Msm__V1__Event *ev)
{
    const char *t = msm_event_attr(ev, "type");
    return t && *t && msm__rt_value_ok(t) ? t : "msm.event";
}

int msm__rt_ce_origin(const Msm__V1__Event *ev)
{
    const char *id = msm_event_attr(ev, "ce_id");
    return id && *id;
}

/* The producer's own ce-source (a CloudEvent's, when safe), else NULL. */
static const char *producer_source(const Msm__V1__Event *ev)
{
    const char *s = msm__rt_ce_origin(ev) ? msm_event_attr(ev, "source") : NULL;
    return s && *s && msm__rt_value_ok(s) ? s : NULL;
}

/* What msm's ce-source names: the CDC source when set and safe, else the topic. */
static const char *source_of(const Msm__V1__Event *ev, int *cdc)
{
    *cdc = ev->cdc_source && *ev->cdc_source && msm__rt_value_ok(ev->cdc_source);
    const char *what = *cdc ? ev->cdc_source : ev->topic;
    return what && msm__rt_value_ok(what) ? what : "";
}

size_t msm__rt_ce_source_size(const Msm__V1__Event *ev)
{
    int cdc;
    const char *own = producer_source(ev);
    return own ? strlen(own) + 1 : strlen(source_of(ev, &cdc)) + sizeof("/msm/topics/");
}

void msm__rt_ce_source(const Msm__V1__Event *ev, char *out, size_t n)
{
    int cdc;
    const char *own = producer_source(ev);
    if (own) {
        snprintf(out, n, "%s", own);
        return;
    }
    const char *what = source_of(ev, &cdc);
    snprintf(out, n, cdc ? "/msm/cdc/%s" : "/msm/topics/%s", what);
}

int msm__rt_ce_extension_name_ok(const char *name)
{
    static const char *const taken[] = {
        "specversion", "id", "source", "type", "time", "datacontenttype", "dataschema",
        "subject", "data", "data_base64", "msmsubscription", "msmattempt", "msmkey",
        "msmorderingkey", "msmsourceid", "traceparent", "tracestate", NULL};
    size_t n = strlen(name);
    if (n == 0 || n > 20 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789") != n)
        return 0;
    for (size_t i = 0; taken[i]; i++) {
        if (strcmp(taken[i], name) == 0)
            return 0;
    }
    return 1;
}

int msm__rt_ce_extension(const Msm__V1__Event *ev, const char *name)
{
    if (!msm__rt_ce_extension_name_ok(name))
        return 0;
    /* The frontend lists a CloudEvent's extensions (comma separated) since this release;
     * an older CloudEvent's attributes with extension names were its extensions. */
    const char *list = msm_event_attr(ev, "ce_extensions");
    if (!list)
        return 1;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        size_t k = strcspn(p, ",");
        if (k == n && strncmp(p, name, n) == 0)
            return 1;
        p += k;
        if (*p)
            p++;
    }
    return 0;
}

/* ---- requests, kept for reuse ---- */

static rt_req_t *req_get(rt_sub_t *sub)
{
    rt_req_t *req = sub->idle_reqs;
    if (req) {
        sub->idle_reqs = req->next;
        sub->nidle_reqs--;
    } else if (!(req = calloc(1, sizeof(*req)))) {
        return NULL;
    }
    req->next = req->prev = NULL;
    req->sub = sub;
    req->n = req->nh = 0;
    req->text.len = req->body.len = 0;
    return req;
}

void msm__rt_req_free(rt_req_t *req)
{
    free(req->items);
    free(req->h);
    msm_buf_deinit(&req->text);
    msm_buf_deinit(&req->body);
    free(req);
}

static void req_put(rt_sub_t *sub, rt_req_t *req)
{
    req->call = NULL;
    if (sub->nidle_reqs >= IDLE_REQS_MAX) {
        msm__rt_req_free(req);
        return;
    }
    req->next = sub->idle_reqs;
    sub->idle_reqs = req;
    sub->nidle_reqs++;
}

static int req_reserve(rt_req_t *req, size_t items, size_t headers)
{
    if (items > req->cap) {
        rt_delivery_t **p = realloc(req->items, items * sizeof(*p));
        if (!p)
            return MSM_ERR_NOMEM;
        req->items = p;
        req->cap = items;
    }
    if (headers > req->hcap) {
        msm_http_header_t *h = realloc(req->h, headers * sizeof(*h));
        if (!h)
            return MSM_ERR_NOMEM;
        req->h = h;
        req->hcap = headers;
    }
    return MSM_OK;
}

static void add(rt_req_t *req, const char *name, const char *value)
{
    if (req->nh < req->hcap)
        req->h[req->nh++] = (msm_http_header_t){name, value};
}

/* An optional header from event data: sent only when set and safe. */
static void add_optional(rt_req_t *req, const char *name, const char *value)
{
    if (value && *value && msm__rt_value_ok(value))
        add(req, name, value);
}

/* ---- one task per request: binary mode ---- */

/* Room in req->text for ce-source, the Msm-Attr-* names and the ce-<extension> names
 * (reserved before any pointer into it is taken). */
static size_t text_size(const Msm__V1__Event *ev)
{
    size_t n = msm__rt_ce_source_size(ev);
    for (size_t i = 0; i < ev->n_attributes; i++)
        n += 2 * strlen(ev->attributes[i]->key) + sizeof("Msm-Attr-") + sizeof("ce-");
    return n;
}

static char *text_take(rt_req_t *req, size_t n)
{
    char *p = (char *)req->text.data + req->text.len;
    req->text.len += n;
    return p;
}

/* Msm-Attr-<name> per attribute; an unsafe name or value drops that attribute. */
static void add_attributes(rt_req_t *req, const Msm__V1__Event *ev)
{
    for (size_t i = 0; i < ev->n_attributes; i++) {
        const char *k = ev->attributes[i]->key, *v = ev->attributes[i]->value;
        if (!msm__rt_token_ok(k) || !msm__rt_value_ok(v)) {
            msm_log(MSM_LOG_DEBUG, RT_FACILITY, "event %s: attribute not sent as a header",
                    ev->id);
            continue;
        }
        size_t n = strlen(k) + sizeof("Msm-Attr-");
        char *name = text_take(req, n);
        snprintf(name, n, "Msm-Attr-%s", k);
        add(req, name, v);
    }
}

/* The rest of the producer's context of an event published as a CloudEvent: ce-subject,
 * ce-dataschema, its id as ce-msmsourceid and ce-<name> per extension. Unsafe values are
 * not sent (ce-source and ce-type are the caller's). */
static void add_producer_context(rt_req_t *req, const Msm__V1__Event *ev)
{
    add_optional(req, "ce-subject", msm_event_attr(ev, "subject"));
    add_optional(req, "ce-dataschema", msm_event_attr(ev, "dataschema"));
    add_optional(req, "ce-msmsourceid", msm_event_attr(ev, "ce_id"));
    for (size_t i = 0; i < ev->n_attributes; i++) {
        const char *k = ev->attributes[i]->key, *v = ev->attributes[i]->value;
        if (!msm__rt_ce_extension(ev, k) || !*v || !msm__rt_value_ok(v))
            continue;
        size_t n = strlen(k) + sizeof("ce-");
        char *name = text_take(req, n);
        snprintf(name, n, "ce-%s", k);
        add(req, name, v);
    }
}

static int build_single(rt_req_t *req, int64_t now)
{
    const rt_sub_t *sub = req->sub;
    const rt_delivery_t *d = req->items[0];
    const Msm__V1__Task *task = d->task;
    const Msm__V1__Event *ev = task->event;
    const uint8_t *body = d->body ? (const uint8_t *)d->body : ev->payload.data;
    size_t body_len = d->body ? d->body_len : ev->payload.len;
    if (req_reserve(req, 1, FIXED_HEADERS + 2 * ev->n_attributes) != MSM_OK ||
        msm_buf_reserve(&req->text, text_size(ev)) != MSM_OK)
        return MSM_ERR_NOMEM;
    size_t sn = msm__rt_ce_source_size(ev);
    char *source = text_take(req, sn);
    msm__rt_ce_source(ev, source, sn);
    add(req, "ce-specversion", "1.0");
    add(req, "ce-id", ev->id);
    add(req, "ce-source", source);
    add(req, "ce-type", msm__rt_ce_type(ev));
    if (msm_time_format(ev->publish_time_ms, req->time, sizeof(req->time)))
        add(req, "ce-time", req->time);
    if (msm__rt_ce_origin(ev))
        add_producer_context(req, ev);
    add_optional(req, "Content-Type", d->body ? "application/json" : ev->content_type);
    add(req, "Msm-Subscription", sub->name);
    snprintf(req->attempt, sizeof(req->attempt), "%" PRId32, task->attempt);
    add(req, "Msm-Attempt", req->attempt);
    snprintf(req->deadline, sizeof(req->deadline), "%" PRId64, req->deadline_ms);
    add(req, "Msm-Deadline", req->deadline);
    add_optional(req, "Msm-Key", ev->key);
    add_optional(req, "Msm-Ordering-Key", ev->ordering_key);
    add_optional(req, "traceparent", ev->traceparent);
    add_optional(req, "tracestate", ev->tracestate);
    if (sub->conf->secret && *sub->conf->secret) {
        /* v2 signs the headers exactly as sent above (docs/push.md "Signatures"). */
        char t[24];
        snprintf(t, sizeof(t), "%" PRId64, now / 1000);
        msm_signature_fields_t f = {t, ev->id, sub->name, req->attempt, req->deadline};
        if (msm_signature_header(sub->conf->secret, &f, body, body_len, req->signature,
                                 sizeof(req->signature)) != MSM_OK)
            return MSM_ERR_INVALID;
        add(req, "Msm-Signature", req->signature);
    }
    add_attributes(req, ev);
    return MSM_OK;
}

/* ---- the answer ---- */

int64_t msm__rt_retry_after_ms(const msm_http_result_t *res)
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
void msm__rt_http_error(const msm_http_result_t *res, const char *prefix, char *buf, size_t n)
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

static Msm__V1__OutcomeKind classify(const rt_req_t *req, const msm_http_result_t *res,
                                     char *err, size_t n)
{
    err[0] = '\0';
    if (res->err == MSM_OK) {
        const char *st = msm_http_headers_get(res->headers, "Msm-Status");
        if (st && strcasecmp(st, "fatal") == 0) {
            /* The lambda's explicit verdict wins over its status code. */
            msm__rt_http_error(res, "fatal: ", err, n);
            return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL;
        }
        if (res->status >= 200 && res->status <= 299)
            return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS;
        msm__rt_http_error(res, "", err, n);
        return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE;
    }
    msm__rt_transport_error(req, res, err, n);
    /* The endpoint's address is not allowed (router.allow_networks / deny_networks): no
     * retry can help, so the task goes dead at once, the reason in its error. */
    if (res->err == MSM_ERR_DENIED)
        return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL;
    return MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE;
}

void msm__rt_transport_error(const rt_req_t *req, const msm_http_result_t *res, char *err,
                             size_t n)
{
    const char *why = res->error ? res->error : msm_err_str(res->err);
    if (res->err == MSM_ERR_TIMEOUT)
        snprintf(err, n, "timeout after %u ms (Msm-Deadline): %s", (unsigned)req->timeout_ms,
                 why);
    else if (res->err == MSM_ERR_IO)
        snprintf(err, n, "connection failed: %s", why);
    else if (res->err == MSM_ERR_DENIED)
        snprintf(err, n, "endpoint denied: %s", why);
    else
        snprintf(err, n, "%s: %s", msm_err_str(res->err), why);
}

/* ---- sending ---- */

#define HOLD_LOOK_MS 1000 /* a held subscription looks again at least this often */

/* The connection was never made (refused, unresolvable host): the push did not start. */
static int never_reached(const msm_http_result_t *res)
{
    return res->err == MSM_ERR_IO && res->status == 0 &&
           (res->curl_code == CURLE_COULDNT_CONNECT || res->curl_code == CURLE_COULDNT_RESOLVE_HOST);
}

static void req_unlink(router_t *rt, rt_req_t *req)
{
    if (req->prev)
        req->prev->next = req->next;
    else
        rt->sending = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->next = req->prev = NULL;
}

static void on_response(msm_http_client_t *cl, msm_http_call_t *call,
                        const msm_http_result_t *res, void *opaque)
{
    (void)cl;
    (void)call;
    rt_req_t *req = opaque;
    rt_sub_t *sub = req->sub;
    router_t *rt = sub->rt;
    req_unlink(rt, req);
    msm__rt_health_observe(sub, req->endpoint, res);
    int was_full = rt->in_http >= (size_t)rt->conf.max_in_flight;
    sub->in_http--;
    rt->in_http--;
    msm_gauge_dec(sub->m_in_flight);
    if (never_reached(res)) {
        /* Nothing reached the endpoint: no attempt spent (flowcontrol sends it again, to a
         * healthy endpoint once this one is ejected). */
        char err[512];
        msm__rt_transport_error(req, res, err, sizeof(err));
        for (size_t i = 0; i < req->n; i++)
            msm__rt_finish(rt, req->items[i], MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED, 0,
                           err, (int64_t)res->latency_ms, 0);
    } else if (req->body.len > 0) {
        msm__rt_batch_settle(req, res);
    } else {
        char err[512];
        Msm__V1__OutcomeKind kind = classify(req, res, err, sizeof(err));
        msm__rt_finish(rt, req->items[0], kind, res->status, err, (int64_t)res->latency_ms,
                       msm__rt_retry_after_ms(res));
    }
    req_put(sub, req);
    if (was_full)
        msm__rt_send_by_priority(rt); /* the freed slot goes to the highest priority */
    else
        msm__rt_send_queued(sub);
}

/* Ends every delivery of a request that could not be started. */
static void req_fail(rt_req_t *req, const char *endpoint, const char *why)
{
    for (size_t i = 0; i < req->n; i++) {
        req->items[i]->endpoint = endpoint;
        msm__rt_finish(req->sub->rt, req->items[i],
                       MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 0, why, 0, 0);
    }
    req_put(req->sub, req);
}

/* No endpoint may take the request now (every usable one at its max_concurrency): its
 * deliveries go back to the front of the queue, in order, until a request ends. */
static void req_requeue(rt_req_t *req)
{
    rt_sub_t *sub = req->sub;
    for (size_t i = req->n; i > 0; i--) {
        rt_delivery_t *d = req->items[i - 1];
        d->next = sub->queue;
        sub->queue = d;
        if (!sub->queue_tail)
            sub->queue_tail = d;
    }
    req->n = 0;
    req_put(sub, req);
}

/* The push deadline: the subscription's timeout from now, or the earliest deadline of the
 * request's events when that comes first. */
static int64_t push_deadline(const rt_req_t *req, int64_t now)
{
    int64_t dl = now + req->sub->conf->timeout_ms;
    for (size_t i = 0; i < req->n; i++) {
        int64_t ev_dl = req->items[i]->task->event->deadline_ms;
        if (ev_dl > 0 && ev_dl < dl)
            dl = ev_dl;
    }
    return dl;
}

/* The router's span of each sampled event of the request (once: a requeued one keeps its
 * own); the push carries its traceparent. Out of memory, the event is not traced here. */
static void trace_start(rt_req_t *req)
{
    for (size_t i = 0; i < req->n; i++) {
        rt_delivery_t *d = req->items[i];
        Msm__V1__Event *ev = d->task->event;
        if (d->span || !msm_traceparent_sampled(ev->traceparent) ||
            !(d->span = malloc(sizeof(*d->span))))
            continue;
        if (msm_span_start(d->span, ev->traceparent)) {
            memcpy(ev->traceparent, d->span->tp, sizeof(d->span->tp));
        } else {
            free(d->span);
            d->span = NULL;
        }
    }
}

/* @returns 0, or 1 when no endpoint could take it (requeued: stop sending for now). */
static int send_req(rt_req_t *req)
{
    rt_sub_t *sub = req->sub;
    router_t *rt = sub->rt;
    const msm_endpoint_t *ep = msm__rt_balance_pick(sub);
    if (!ep) {
        if (sub->in_http > 0) {
            req_requeue(req);
            return 1;
        }
        req_fail(req, "", "no endpoint to push to");
        return 0;
    }
    int64_t now = msm_time_unix_ms();
    trace_start(req);
    req->deadline_ms = push_deadline(req, now);
    /* at least 1 ms: an event whose deadline passes now was checked when queued */
    req->timeout_ms = (uint32_t)(req->deadline_ms > now ? req->deadline_ms - now : 1);
    int rc = req->n == 1 && sub->conf->max_batch_events <= 1 ? build_single(req, now)
                                                             : msm__rt_batch_build(req, now);
    if (rc == MSM_OK) {
        const rt_delivery_t *d = req->items[0];
        msm_http_request_t hr = {
            .method = "POST",
            .url = ep->url,
            .headers = req->h,
            .n_headers = req->nh,
            .flags = MSM_HTTP_BODY_BORROW, /* the request and its tasks live until the end */
            .timeout_ms = req->timeout_ms,
            .tls = sub->tls,
        };
        if (req->body.len > 0) {
            hr.body = req->body.data;
            hr.body_len = req->body.len;
        } else {
            hr.body = d->body ? d->body : (const char *)d->task->event->payload.data;
            hr.body_len = d->body ? d->body_len : d->task->event->payload.len;
        }
        rc = msm_http_client_request(rt->http, &hr, on_response, req, &req->call);
    }
    if (rc != MSM_OK) {
        char err[128];
        snprintf(err, sizeof(err), "request not started: %s", msm_err_str(rc));
        req_fail(req, ep->url, err);
        return 0;
    }
    for (size_t i = 0; i < req->n; i++)
        req->items[i]->endpoint = ep->url;
    req->endpoint = ep->url;
    msm__rt_health_sent(sub, ep->url);
    req->next = rt->sending;
    if (rt->sending)
        rt->sending->prev = req;
    rt->sending = req;
    sub->in_http++;
    rt->in_http++;
    msm_gauge_inc(sub->m_in_flight);
    return 0;
}

static rt_delivery_t *queue_pop(rt_sub_t *sub)
{
    rt_delivery_t *d = sub->queue;
    sub->queue = d->next;
    if (!sub->queue)
        sub->queue_tail = NULL;
    d->next = NULL;
    return d;
}

/* Ends a delivery that was never sent. */
static void give_up(rt_delivery_t *d, Msm__V1__OutcomeKind kind, const char *why)
{
    d->endpoint = "";
    msm__rt_finish(d->sub->rt, d, kind, 0, why, 0, 0);
}

/* Why @p d must not be pushed now, or NULL: its lease passed (flowcontrol dispatches it
 * again on the same attempt), or its subscription is paused. */
static const char *not_pushed(const rt_sub_t *sub, const rt_delivery_t *d, int64_t now)
{
    if (d->task->lease_until_ms > 0 && now >= d->task->lease_until_ms)
        return "lease expired before the push started";
    if (sub->conf && sub->conf->paused)
        return "subscription paused";
    return NULL;
}

/* Starts queued deliveries while the subscription has free slots. The log bounds what is
 * taken only roughly (a read may return one record per partition, a record holds many
 * tasks), so the bound on requests in flight is kept here; a batch request is one. */
static void on_hold_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm__rt_send_queued(opaque);
}

void msm__rt_hold_arm(rt_sub_t *sub, int64_t at_ms)
{
    if (msm_timer_active(&sub->hold_timer) && sub->hold_at_ms <= at_ms)
        return;
    int64_t now = msm_time_unix_ms();
    sub->hold_at_ms = at_ms;
    msm_loop_timer_start(sub->rt->env.loop, &sub->hold_timer,
                         at_ms > now ? (uint64_t)(at_ms - now) : 0, on_hold_timer, sub);
}

/* No endpoint may take requests: the deliveries wait (no attempt spent) until one may, or
 * until their lease passes (then NOT_PUSHED: flowcontrol dispatches them again). */
static int held(rt_sub_t *sub)
{
    int64_t now = msm_time_unix_ms();
    if (!sub->conf || msm__rt_health_any(sub, now))
        return 0;
    rt_delivery_t **p = &sub->queue, *last = NULL;
    int64_t next_lease = now + HOLD_LOOK_MS;
    while (*p) {
        rt_delivery_t *d = *p;
        int64_t lease = d->task->lease_until_ms;
        if (lease > 0 && now >= lease) {
            *p = d->next;
            d->next = NULL;
            msm__rt_finish(sub->rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED, 0,
                           "no healthy endpoint before the lease passed", 0, 0);
            continue;
        }
        if (lease > 0 && lease < next_lease)
            next_lease = lease;
        last = d;
        p = &d->next;
    }
    sub->queue_tail = last;
    if (sub->queue)
        msm__rt_hold_arm(sub, next_lease);
    return 1;
}

void msm__rt_send_queued(rt_sub_t *sub)
{
    router_t *rt = sub->rt;
    if (sub->queue && held(sub))
        return;
    while (sub->queue && (!sub->conf || sub->in_http < sub->conf->max_concurrency) &&
           rt->in_http < (size_t)rt->conf.max_in_flight) {
        size_t per = sub->conf && sub->conf->max_batch_events > 1
                         ? (size_t)sub->conf->max_batch_events
                         : 1;
        rt_req_t *req = req_get(sub);
        if (!req || req_reserve(req, per, 0) != MSM_OK) {
            if (req)
                req_put(sub, req);
            rt_delivery_t *d = queue_pop(sub);
            msm__rt_finish(rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, 0,
                           "out of memory", 0, 0);
            continue;
        }
        int64_t now = msm_time_unix_ms();
        while (sub->queue && req->n < per) {
            rt_delivery_t *d = queue_pop(sub);
            const char *why = not_pushed(sub, d, now);
            if (why) {
                msm__rt_finish(rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED, 0, why, 0,
                               0);
                continue;
            }
            if (d->task->event->deadline_ms > 0 && now >= d->task->event->deadline_ms) {
                /* past the publisher's deadline: never pushed, dead-lettered at once */
                give_up(d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL, RT_DEADLINE_EXCEEDED);
                continue;
            }
            d->kind = MSM__V1__OUTCOME_KIND__OUTCOME_KIND_UNSPECIFIED;
            req->items[req->n++] = d;
        }
        if (req->n == 0) {
            req_put(sub, req);
            continue;
        }
        if (send_req(req))
            break;
    }
}

void msm__rt_send_by_priority(router_t *rt)
{
    for (int p = 9; p >= 0 && rt->in_http < (size_t)rt->conf.max_in_flight; p--) {
        for (rt_sub_t *sub = rt->subs; sub; sub = sub->next) {
            int prio = sub->conf ? sub->conf->priority : 5;
            if (sub->queue && (prio == p || (p == 0 && (prio < 0 || prio > 9))))
                msm__rt_send_queued(sub);
        }
    }
}

void msm__rt_queue_drop(rt_sub_t *sub)
{
    sub->queue = sub->queue_tail = NULL; /* the deliveries belong to their records */
    while (sub->idle_reqs) {
        rt_req_t *req = sub->idle_reqs;
        sub->idle_reqs = req->next;
        msm__rt_req_free(req);
    }
    sub->nidle_reqs = 0;
}

static void enqueue(rt_sub_t *sub, rt_delivery_t *d)
{
    d->next = NULL;
    if (sub->queue_tail)
        sub->queue_tail->next = d;
    else
        sub->queue = d;
    sub->queue_tail = d;
}

static void converting_push(router_t *rt, rt_delivery_t *d)
{
    d->prev = NULL;
    d->next = rt->converting;
    if (rt->converting)
        rt->converting->prev = d;
    rt->converting = d;
}

static void converting_remove(router_t *rt, rt_delivery_t *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        rt->converting = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->next = d->prev = NULL;
}

/* ---- delivery_format "json" (docs/schemas.md) ---- */

/* A payload with a schema, not JSON already, to a subscription that wants JSON. */
static int wants_json(const rt_sub_t *sub, const Msm__V1__Event *ev)
{
    return sub->conf->delivery_format && strcmp(sub->conf->delivery_format, "json") == 0 &&
           ev->schema_id > 0 && !msm_json_media_type(ev->content_type);
}

static void on_schema(const msm_schema_t *s, int id, int err, const char *why, void *opaque)
{
    rt_delivery_t *d = opaque;
    router_t *rt = d->sub->rt;
    if (rt->freeing)
        return;
    converting_remove(rt, d);
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
    msm__rt_send_queued(d->sub);
}

/* ---- one dispatch record ---- */

/* The record's TaskBatch, unpacked into rec->arena (everything protobuf-c allocates for it
 * dies with the record); NULL when the bytes are not one. */
static Msm__V1__TaskBatch *unpack(rt_record_t *rec, const msm_stream_msg_t *msg)
{
    return msm_task_batch_unpack_in(&rec->arena, msg->value, msg->value_len);
}

static int task_ok(const Msm__V1__Task *task)
{
    return task && task->event && task->event->id && *task->event->id &&
           msm__rt_value_ok(task->event->id);
}

/* A task on its way: queued, or first converted to JSON (delivery_format). */
static void start_delivery(rt_sub_t *sub, rt_delivery_t *d)
{
    router_t *rt = sub->rt;
    if (!wants_json(sub, d->task->event)) {
        enqueue(sub, d);
        return;
    }
    converting_push(rt, d);
    if (msm_schema_store_get(rt->schemas, d->task->event->schema_id, on_schema, d) != MSM_OK) {
        converting_remove(rt, d);
        give_up(d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, "out of memory");
    }
}

/* A record nothing can come of: dropped loudly (acknowledged, as no outcome could name it). */
static void drop_record(rt_sub_t *sub, msm_stream_msg_t *msg, const char *why)
{
    msm_log(MSM_LOG_ERROR, RT_FACILITY, "dispatch.%s record %s %s: dropped", sub->name,
            msg->position, why);
    msm_counter_inc(sub->rt->m_invalid);
    msm_consumer_ack(sub->consumer, msg);
}

void msm__rt_take(rt_sub_t *sub, msm_stream_msg_t *msg)
{
    router_t *rt = sub->rt;
    rt_record_t *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return; /* unacknowledged: delivered again after a restart */
    Msm__V1__TaskBatch *batch = unpack(rec, msg);
    if (!batch) {
        msm_arena_free(rec->arena);
        free(rec);
        drop_record(sub, msg, "is not a TaskBatch");
        return;
    }
    rt_delivery_t *items = batch->n_tasks ? calloc(batch->n_tasks, sizeof(*items)) : NULL;
    if (batch->n_tasks && !items) {
        msm_arena_free(rec->arena);
        free(rec);
        return;
    }
    rec->sub = sub;
    rec->msg = msg;
    rec->batch = batch;
    rec->items = items;
    rec->n = batch->n_tasks;
    /* Count every task before the first can finish (a schema may answer at once). */
    for (size_t i = 0; i < rec->n; i++) {
        rt_delivery_t *d = &items[i];
        d->rec = rec;
        d->sub = sub;
        d->task = batch->tasks[i];
        d->endpoint = "";
        if (!task_ok(d->task)) {
            msm_log(MSM_LOG_ERROR, RT_FACILITY, "dispatch.%s record %s: task %zu is not valid: "
                    "dropped", sub->name, msg->position, i);
            msm_counter_inc(rt->m_invalid);
            d->task = NULL;
            continue;
        }
        rec->open++;
    }
    if (rec->open == 0) {
        drop_record(sub, msg, "holds no valid task");
        msm_arena_free(rec->arena);
        free(items);
        free(rec);
        return;
    }
    rec->next = rt->records;
    if (rt->records)
        rt->records->prev = rec;
    rt->records = rec;
    sub->live += rec->open;
    rt->live += rec->open;
    for (size_t i = 0; i < rec->n; i++) {
        if (items[i].task)
            start_delivery(sub, &items[i]);
    }
}
