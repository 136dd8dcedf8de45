/* SPDX-License-Identifier: MIT */
/* Batch push (API.md "Batch push", max_batch_events > 1): up to max_batch_events tasks of
 * one subscription in one request, `Content-Type: application/cloudevents-batch+json`, the
 * body a JSON array of structured-mode CloudEvents written straight into the request's
 * reusable buffer. The answer `2xx {"results":[{"id","status":"ok"|"retry"|"fatal"}]}`
 * settles each event; an event left out is retried, and any other answer retries them all.
 *
 * Signature: `Msm-Signature: t=<t>,v1=<hex>,v2=<hex>` as a single push's (docs/push.md
 * "Signatures") with an empty ce-id and an empty Msm-Attempt (this request sends neither:
 * the ids and attempts are inside the signed body). */
#include "rt_int.h"

#include "msm/base64.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/json_scan.h"
#include "msm/log.h"
#include "msm/signature.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_HEADERS 5
#define CONTENT_TYPE  "application/cloudevents-batch+json"

/* ---- writing JSON into a buffer ---- */

typedef struct {
    msm_buf_t *b;
    int err;
} jw_t;

static void put(jw_t *w, const void *p, size_t n)
{
    if (w->err || msm_buf_reserve(w->b, n) != MSM_OK) {
        w->err = 1;
        return;
    }
    memcpy(w->b->data + w->b->len, p, n);
    w->b->len += n;
}

static void put_s(jw_t *w, const char *s)
{
    put(w, s, strlen(s));
}

/* A JSON string; the text was checked as UTF-8 where it entered msm. */
static void put_str(jw_t *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put(w, "\"", 1);
    const unsigned char *p = (const unsigned char *)s, *run = p;
    for (; *p; p++) {
        if (*p >= 0x20 && *p != '"' && *p != '\\')
            continue;
        put(w, run, (size_t)(p - run));
        char esc[6] = {'\\', (char)*p, 0, 0, 0, 0};
        if (*p < 0x20) {
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[*p >> 4];
            esc[5] = hex[*p & 15];
            put(w, esc, 6);
        } else {
            put(w, esc, 2);
        }
        run = p + 1;
    }
    put(w, run, (size_t)(p - run));
    put(w, "\"", 1);
}

/* ,"name":"value" */
static void member(jw_t *w, const char *name, const char *value)
{
    put(w, ",\"", 2);
    put_s(w, name);
    put(w, "\":", 2);
    put_str(w, value);
}

static void member_opt(jw_t *w, const char *name, const char *value)
{
    if (value && *value)
        member(w, name, value);
}

/* ---- one event ---- */

static void put_data(jw_t *w, const rt_delivery_t *d)
{
    const Msm__V1__Event *ev = d->task->event;
    if (d->body) { /* delivery_format json */
        put_s(w, ",\"datacontenttype\":\"application/json\",\"data\":");
        put(w, d->body, d->body_len);
        return;
    }
    member_opt(w, "datacontenttype", ev->content_type);
    if (ev->payload.len > 0 && msm_json_media_type(ev->content_type)) {
        /* JSON payloads were validated at publish: embedded as they are. */
        put_s(w, ",\"data\":");
        put(w, ev->payload.data, ev->payload.len);
        return;
    }
    size_t n = msm_base64_encoded_size(ev->payload.len);
    put_s(w, ",\"data_base64\":\"");
    if (w->err || msm_buf_reserve(w->b, n) != MSM_OK) {
        w->err = 1;
        return;
    }
    w->b->len += msm_base64_encode(ev->payload.data, ev->payload.len,
                                   (char *)w->b->data + w->b->len);
    put(w, "\"", 1);
}

static void put_event(jw_t *w, const rt_sub_t *sub, const rt_delivery_t *d)
{
    const Msm__V1__Event *ev = d->task->event;
    char source[512], t[MSM_TIME_RFC3339_SIZE], attempt[16];
    put_s(w, "{\"specversion\":\"1.0\"");
    member(w, "id", ev->id);
    size_t sn = msm__rt_ce_source_size(ev);
    char *src = sn <= sizeof(source) ? source : malloc(sn); /* names are far shorter */
    if (!src) {
        w->err = 1;
        return;
    }
    msm__rt_ce_source(ev, src, sn);
    member(w, "source", src);
    if (src != source)
        free(src);
    member(w, "type", msm__rt_ce_type(ev));
    if (msm_time_format(ev->publish_time_ms, t, sizeof(t)))
        member(w, "time", t);
    if (msm__rt_ce_origin(ev)) { /* the rest of the producer's context */
        member_opt(w, "subject", msm_event_attr(ev, "subject"));
        member_opt(w, "dataschema", msm_event_attr(ev, "dataschema"));
        member_opt(w, "msmsourceid", msm_event_attr(ev, "ce_id"));
    }
    member(w, "msmsubscription", sub->name);
    snprintf(attempt, sizeof(attempt), "%" PRId32, d->task->attempt);
    put_s(w, ",\"msmattempt\":");
    put_s(w, attempt);
    member_opt(w, "msmkey", ev->key);
    member_opt(w, "msmorderingkey", ev->ordering_key);
    member_opt(w, "traceparent", ev->traceparent);
    member_opt(w, "tracestate", ev->tracestate);
    /* Attributes whose names may be extensions (a CloudEvent's extensions among them): a
     * batch has no Msm-Attr-* headers to carry the others. */
    for (size_t i = 0; i < ev->n_attributes; i++) {
        const char *k = ev->attributes[i]->key;
        if (msm__rt_ce_extension_name_ok(k))
            member(w, k, ev->attributes[i]->value);
    }
    put_data(w, d);
    put(w, "}", 1);
}

/* ---- the request ---- */

static int add_headers(rt_req_t *req, int64_t now)
{
    const rt_sub_t *sub = req->sub;
    if (req->hcap < BATCH_HEADERS) {
        msm_http_header_t *h = realloc(req->h, BATCH_HEADERS * sizeof(*h));
        if (!h)
            return MSM_ERR_NOMEM;
        req->h = h;
        req->hcap = BATCH_HEADERS;
    }
    req->nh = 0;
    req->h[req->nh++] = (msm_http_header_t){"Content-Type", CONTENT_TYPE};
    req->h[req->nh++] = (msm_http_header_t){"Msm-Subscription", sub->name};
    snprintf(req->deadline, sizeof(req->deadline), "%" PRId64, req->deadline_ms);
    req->h[req->nh++] = (msm_http_header_t){"Msm-Deadline", req->deadline};
    if (sub->conf->secret && *sub->conf->secret) {
        /* No ce-id and no Msm-Attempt header: both sign as "" (the ids and attempts are
         * inside the signed body). */
        char t[24];
        snprintf(t, sizeof(t), "%" PRId64, now / 1000);
        msm_signature_fields_t f = {t, "", sub->name, "", req->deadline};
        if (msm_signature_header(sub->conf->secret, &f, req->body.data, req->body.len,
                                 req->signature, sizeof(req->signature)) != MSM_OK)
            return MSM_ERR_INVALID;
        req->h[req->nh++] = (msm_http_header_t){"Msm-Signature", req->signature};
    }
    return MSM_OK;
}

int msm__rt_batch_build(rt_req_t *req, int64_t now_ms)
{
    jw_t w = {&req->body, 0};
    req->body.len = 0;
    put(&w, "[", 1);
    for (size_t i = 0; i < req->n; i++) {
        if (i > 0)
            put(&w, ",", 1);
        put_event(&w, req->sub, req->items[i]);
    }
    put(&w, "]", 1);
    if (w.err)
        return MSM_ERR_NOMEM;
    return add_headers(req, now_ms);
}

/* ---- the answer ---- */

/* The delivery of @p id not settled yet, looking first where the lambda most likely put it
 * (answers usually keep the order of the request). */
static rt_delivery_t *find(rt_req_t *req, const char *id, size_t hint)
{
    for (size_t k = 0; k < req->n; k++) {
        rt_delivery_t *d = req->items[(hint + k) % req->n];
        if (d->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_UNSPECIFIED &&
            strcmp(d->task->event->id, id) == 0)
            return d;
    }
    return NULL;
}

static void settle_one(rt_req_t *req, const msm_http_result_t *res, const char *id,
                       const char *st, size_t hint)
{
    rt_delivery_t *d = id ? find(req, id, hint) : NULL;
    if (!d)
        return;
    router_t *rt = req->sub->rt;
    if (st && strcmp(st, "ok") == 0)
        msm__rt_finish(rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS, res->status, "",
                       (int64_t)res->latency_ms, 0);
    else if (st && strcmp(st, "fatal") == 0)
        msm__rt_finish(rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL, res->status,
                       "fatal: batch result", (int64_t)res->latency_ms, 0);
    else
        msm__rt_finish(rt, d, MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE, res->status,
                       "retry: batch result", (int64_t)res->latency_ms, 0);
}

/* One {"id":…,"status":…} of the results (other members skipped); the two strings are
 * decoded in the scan's output, NULL when absent. @returns 0, or -1 to give up. */
static int scan_result(msm_json_scan_t *s, char **id, char **st)
{
    *id = *st = NULL;
    size_t count = 0;
    char *name;
    int rc;
    while ((rc = msm_json_scan_member(s, &count, &name)) == 1) {
        char **slot = strcmp(name, "id") == 0 ? id : strcmp(name, "status") == 0 ? st : NULL;
        if (!slot) {
            if (msm_json_scan_value(s, 2) != 0)
                return -1;
            continue;
        }
        /* A repeated member or one that is not a string: the tree decides. */
        if (*slot || s->p >= s->end || *s->p != '"' || !(*slot = msm_json_scan_string(s, 1, NULL)))
            return -1;
    }
    return rc;
}

int msm__rt_results_scan(const char *body, size_t len, char *out, rt_result_t *results,
                         size_t max)
{
    msm_json_scan_t s = {.p = body,
                         .end = body + len,
                         .out = out,
                         .out_end = out + len + 1,
                         .flags = MSM_JSON_SCAN_UNICODE};
    size_t n = 0, count = 0;
    int seen = 0, rc;
    char *name;
    while ((rc = msm_json_scan_member(&s, &count, &name)) == 1) {
        if (strcmp(name, "results") != 0) {
            if (msm_json_scan_value(&s, 1) != 0)
                return -1;
            continue;
        }
        if (seen++ || !msm_json_scan_eat(&s, '['))
            return -1; /* a second "results": the tree decides which one counts */
        if (msm_json_scan_eat(&s, ']'))
            continue;
        do {
            char *id, *st;
            if (n == max || scan_result(&s, &id, &st) != 0)
                return -1;
            results[n++] = (rt_result_t){id, st};
        } while (msm_json_scan_eat(&s, ','));
        if (!msm_json_scan_eat(&s, ']'))
            return -1;
    }
    msm_json_scan_ws(&s);
    return rc == 0 && s.p == s.end && seen ? (int)n : -1;
}

/* The results answer read in one pass: nothing is settled unless the whole body reads.
 * @returns 1 when settled, -1 when it gives up (the jansson reading then decides, which
 * answers as before). */
static int settle_results_fast(rt_req_t *req, const msm_http_result_t *res)
{
    char *out = malloc(res->body_len + 1); /* decoded strings are never longer */
    rt_result_t *results = malloc((req->n + 1) * sizeof(*results));
    int n = out && results ? msm__rt_results_scan(res->body, res->body_len, out, results,
                                                  req->n + 1)
                           : -1;
    for (int i = 0; i < n; i++)
        settle_one(req, res, results[i].id, results[i].status, (size_t)i);
    free(results);
    free(out);
    return n >= 0 ? 1 : -1;
}

/* Settles the events the answer names; @returns 0 when it is not a results answer. */
static int settle_results(rt_req_t *req, const msm_http_result_t *res)
{
    if (settle_results_fast(req, res) == 1)
        return 1;
    json_t *root = json_loadb(res->body, res->body_len, 0, NULL);
    json_t *results = json_object_get(root, "results");
    if (!json_is_array(results)) {
        json_decref(root);
        return 0;
    }
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r)
        settle_one(req, res, json_string_value(json_object_get(r, "id")),
                   json_string_value(json_object_get(r, "status")), i);
    json_decref(root);
    return 1;
}

void msm__rt_batch_settle(rt_req_t *req, const msm_http_result_t *res)
{
    char err[512];
    const char *left = "not in the batch answer";
    if (res->err != MSM_OK) {
        msm__rt_transport_error(req, res, err, sizeof(err));
        left = err;
    } else if (res->status < 200 || res->status > 299) {
        msm__rt_http_error(res, "", err, sizeof(err));
        left = err;
    } else if (!settle_results(req, res)) {
        msm__rt_http_error(res, "no batch results: ", err, sizeof(err));
        left = err;
    }
    int64_t retry_after = msm__rt_retry_after_ms(res);
    /* A denied endpoint address: no retry can help (as for a single push). */
    Msm__V1__OutcomeKind kind = res->err == MSM_ERR_DENIED
                                    ? MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL
                                    : MSM__V1__OUTCOME_KIND__OUTCOME_KIND_RETRIABLE;
    for (size_t i = 0; i < req->n; i++) {
        rt_delivery_t *d = req->items[i];
        if (d->kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_UNSPECIFIED)
            msm__rt_finish(req->sub->rt, d, kind, res->status, left, (int64_t)res->latency_ms,
                           retry_after);
    }
}
