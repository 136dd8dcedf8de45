/* SPDX-License-Identifier: MIT */
/* The publish pipeline (pub_int.h): batches, the field checks every form shares, then
 * schema, idempotency and the one durable log append, answered through the form's done
 * callback: 200 only once every new event is durable, and nothing published on any error. */
#include "pub_int.h"

#include "msm/access.h"
#include "msm/base64.h"
#include "msm/cdc_state.h"
#include "msm/err.h"
#include "msm/idempotency.h"
#include "msm/log.h"
#include "msm/time.h"
#include "msm/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAC "publish"
#define KEY_MAX 1600
/* A claimed idempotency key not settled by then is free again (the frontend died). */
#define IDEM_PENDING_MS 60000

/* ---- batches ---- */

int fe_batch_init(fe_batch_t *b, size_t n, size_t nattrs)
{
    b->evs = calloc(n ? n : 1, sizeof(*b->evs));
    b->attr_entries = calloc(nattrs ? nattrs : 1, sizeof(*b->attr_entries));
    b->attr_ptrs = calloc(nattrs ? nattrs : 1, sizeof(*b->attr_ptrs));
    if (!b->evs || !b->attr_entries || !b->attr_ptrs)
        return MSM_ERR_NOMEM;
    b->n = n;
    b->attr_cap = nattrs;
    for (size_t i = 0; i < n; i++)
        b->evs[i] = (fe_event_t){.key = "", .ordering_key = "", .idempotency_key = "",
                                 .priority = FE_DEFAULT_PRIORITY};
    return MSM_OK;
}

void fe_batch_free(fe_batch_t *b)
{
    for (size_t i = 0; b->evs && i < b->n; i++)
        free(b->evs[i].owned);
    free(b->evs);
    free(b->attr_entries);
    free(b->attr_ptrs);
    json_decref(b->json);
    free(b->arena);
    if (b->pb)
        protobuf_c_message_free_unpacked(b->pb, NULL);
    for (size_t i = 0; i < b->nstrings; i++)
        free(b->strings[i]);
    free(b->strings);
    memset(b, 0, sizeof(*b));
}

const char *fe_batch_keep(fe_batch_t *b, const char *s, size_t n)
{
    char **grown = realloc(b->strings, (b->nstrings + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    b->strings = grown;
    char *copy = malloc(n + 1);
    if (!copy)
        return NULL;
    memcpy(copy, s, n);
    copy[n] = '\0';
    b->strings[b->nstrings++] = copy;
    return copy;
}

void fe_batch_attr(fe_batch_t *b, fe_event_t *ev, const char *name, const char *value)
{
    if (b->attr_used == b->attr_cap)
        return; /* callers size the batch from the attribute count */
    Msm__V1__Event__AttributesEntry *a = &b->attr_entries[b->attr_used];
    msm__v1__event__attributes_entry__init(a);
    a->key = (char *)name;
    a->value = (char *)value;
    b->attr_ptrs[b->attr_used] = a;
    if (!ev->attrs)
        ev->attrs = &b->attr_ptrs[b->attr_used];
    ev->n_attrs++;
    b->attr_used++;
}

/* ---- payloads given in JSON ---- */

void fe_event_data(fe_event_t *ev, const json_t *data, int keep_json, size_t limit,
                   msm_json_err_t *e, msm_json_err_t *big)
{
    ev->data_field = "data";
    if (keep_json) { /* the topic's schema encodes it */
        ev->data = data;
        return;
    }
    size_t len = 0;
    char *text = msm_json_dump(data, &len);
    if (!text) {
        msm_json_err_add(e, "data", "cannot be serialised");
        return;
    }
    ev->owned = (uint8_t *)text;
    ev->payload = ev->owned;
    ev->payload_len = len;
    if (len > limit)
        msm_json_err_add(big, "data", "exceeds the limit of %zu bytes", limit);
}

void fe_event_data_base64(fe_event_t *ev, const char *b64, size_t limit, msm_json_err_t *e,
                          msm_json_err_t *big)
{
    ev->data_field = "data_base64";
    size_t n = strlen(b64);
    if (n / 4 * 3 > limit + 2) { /* surely too large: do not even decode */
        msm_json_err_add(big, "data_base64", "exceeds the limit of %zu bytes", limit);
        return;
    }
    ev->owned = malloc(n / 4 * 3 + 1);
    if (!ev->owned || msm_base64_decode(b64, n, ev->owned, &ev->payload_len) != MSM_OK) {
        msm_json_err_add(e, "data_base64", "must be valid base64 (RFC 4648, padded)");
        return;
    }
    ev->payload = ev->owned;
    if (ev->payload_len > limit)
        msm_json_err_add(big, "data_base64", "exceeds the limit of %zu bytes", limit);
}

/* ---- shared checks ---- */

void fe_check_deadline(msm_json_err_t *e, const char *field, const fe_event_t *ev)
{
    if (ev->deadline_ms > 0 && ev->deliver_at_ms > 0 && ev->deadline_ms <= ev->deliver_at_ms)
        msm_json_err_add(e, field, "must be after the event's deliver_at (or now + delay_ms)");
}

static int attr_name_valid(const char *s)
{
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-");
    return n >= 1 && n <= FE_ATTR_NAME_MAX && s[n] == '\0';
}

void fe_check_attr(msm_json_err_t *e, msm_json_err_t *big, const char *field,
                   const char *name, const char *value, size_t count)
{
    if (count == FE_ATTRS_MAX) /* reported once, at the first one too many */
        msm_json_err_add(big, NULL, "at most %d attributes per event", FE_ATTRS_MAX);
    if (!attr_name_valid(name))
        msm_json_err_add(e, field, "name must match [A-Za-z0-9._-]{1,%d}", FE_ATTR_NAME_MAX);
    else if (strlen(value) > FE_ATTR_VALUE_MAX)
        msm_json_err_add(big, field, "must be at most %d bytes long", FE_ATTR_VALUE_MAX);
    else if (msm_json_has_control_chars(value))
        msm_json_err_add(e, field, "must not contain control characters");
}

int fe_media_type_ok(const char *ct)
{
    size_t n = strcspn(ct, ";");
    const char *slash = memchr(ct, '/', n);
    return n > 0 && slash && slash != ct && slash + 1 < ct + n && !msm_json_has_control_chars(ct);
}

int fe_same_media_type(const char *a, const char *b)
{
    size_t na = strcspn(a, "; "), nb = strcspn(b, "; ");
    return na == nb && strncasecmp(a, b, na) == 0;
}

/* W3C trace context: carried when well formed, ignored otherwise. */
void fe_trace_context(fe_batch_t *b, const char *traceparent, const char *tracestate)
{
    if (!msm_traceparent_valid(traceparent))
        return;
    b->traceparent = fe_batch_keep(b, traceparent, strlen(traceparent));
    if (b->traceparent && tracestate && strlen(tracestate) <= 512 &&
        !msm_json_has_control_chars(tracestate))
        b->tracestate = fe_batch_keep(b, tracestate, strlen(tracestate));
}

/* ---- requests ---- */

fe_parse_ctx_t fe_parse_ctx(const fe_t *fe)
{
    return (fe_parse_ctx_t){.max_events = fe->fe_set.max_events,
                            .max_event_bytes = fe->fe_set.max_event_bytes,
                            .now_ms = msm_time_unix_ms()};
}

void fe_pub_count(fe_t *fe, const char *topic, const char *result, size_t events,
                  uint64_t start_us)
{
    msm_counter_inc(msm_metric_labels(fe->fe_m_requests, topic, result, NULL));
    msm_counter_add(msm_metric_labels(fe->fe_m_events, topic, result, NULL), events);
    msm_histogram_observe(msm_metric_labels(fe->fe_m_latency, result, NULL),
                          (double)(msm_time_mono_us() - start_us) / 1e6);
}

void fe_parse_failed(fe_t *fe, msm_http_req_t *req, const char *topic, int status,
                     msm_json_err_t *e, msm_json_err_t *big, size_t events, uint64_t start_us)
{
    if (status == 413)
        msm_http_respond_json(req, 413, msm_json_err_body(big, "PAYLOAD_TOO_LARGE"));
    else if (status == 415)
        msm_http_respond_json(req, 415, msm_json_err_body(e, "UNSUPPORTED_MEDIA_TYPE"));
    else
        msm_http_respond_json(req, status, msm_json_err_body(e, NULL));
    fe_pub_count(fe, topic ? topic : "",
                 status == 413 ? "too_large" : status == 415 ? "unsupported" : "invalid", events,
                 start_us);
}

static void pub_cleanup(fe_call_t *c)
{
    fe_pub_t *p = (fe_pub_t *)c;
    if (p->release)
        p->release(p);
    fe_batch_free(&p->batch);
    free(p->topic);
    free(p->subject);
    free(p->ids);
    free(p->dup);
    free(p->claimed);
    free(p->tps);
    msm_spans_deinit(&p->spans);
    json_decref(p->fin_error);
}

void *fe_pub_new(fe_t *fe, msm_http_req_t *req, size_t size, const char *topic,
                 const char *subject, fe_pub_done_cb *done, uint64_t start_us)
{
    fe_pub_t *p = fe_call_new(fe, req, size);
    if (!p) {
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return NULL;
    }
    p->base.cleanup = pub_cleanup;
    p->done = done;
    p->start_us = start_us;
    if ((topic && !(p->topic = strdup(topic))) || (subject && !(p->subject = strdup(subject)))) {
        fe_call_error(&p->base, 500, "INTERNAL", "out of memory", NULL);
        return NULL;
    }
    return p;
}

/* The caller's scope for @p topic (the protobuf RPC names it in the body, so the route's
 * guard could not) and its publish quota, counted in events. Answers 403 or 429 itself. */
static int pub_allowed(fe_t *fe, msm_http_req_t *req, const char *topic, size_t n,
                       uint64_t start_us)
{
    if (!msm_access_can(req, "publish", topic)) {
        fe_pub_count(fe, topic, "denied", 0, start_us);
        char msg[300];
        snprintf(msg, sizeof(msg), "no publish scope for topic \"%s\"", topic);
        msm_http_respond_error(req, 403, "PERMISSION_DENIED", msg, NULL);
        return 0;
    }
    if (fe_quota_spent(req, n)) {
        fe_pub_count(fe, topic, "rate_limited", 0, start_us);
        msm_http_respond_error(req, 429, "RATE_LIMITED", FE_QUOTA_SPENT, NULL);
        return 0;
    }
    return 1;
}

int fe_quota_spent(msm_http_req_t *req, size_t n)
{
    int64_t wait_ms = msm_access_take(req, n);
    if (wait_ms <= 0)
        return 0;
    char secs[24];
    snprintf(secs, sizeof(secs), "%lld", (long long)((wait_ms + 999) / 1000));
    msm_http_add_header(req, "Retry-After", secs);
    return 1;
}

void fe_pub_run(fe_t *fe, msm_http_req_t *req, const char *topic, const char *subject,
                fe_pub_done_cb *done, uint64_t start_us, int status, fe_batch_t *b,
                msm_json_err_t *e, msm_json_err_t *big, size_t events)
{
    if (status) {
        fe_parse_failed(fe, req, topic, status, e, big, events, start_us);
        fe_batch_free(b);
    } else if (!pub_allowed(fe, req, topic, b->n, start_us)) {
        fe_batch_free(b);
    } else {
        fe_pub_t *p = fe_pub_new(fe, req, sizeof(*p), topic, subject, done, start_us);
        if (p) {
            p->batch = *b;
            fe_trace_context(&p->batch, msm_http_req_header(req, "traceparent"),
                             msm_http_req_header(req, "tracestate"));
            fe_pub_submit(p);
        } else {
            fe_batch_free(b);
        }
    }
    msm_json_err_deinit(e);
    msm_json_err_deinit(big);
}

json_t *fe_pub_results(const fe_pub_t *p)
{
    json_t *results = json_array();
    for (size_t i = 0; results && i < p->batch.n; i++)
        json_array_append_new(results, json_pack("{s:s,s:b}", "id", p->ids[i], "duplicate",
                                                 p->dup[i]));
    return json_pack("{s:o*}", "results", results);
}

/* Ends the request through the form's callback. */
static void pub_finish(fe_pub_t *p, int status, json_t *error, const char *result)
{
    size_t fresh = 0;
    for (size_t i = 0; i < p->batch.n; i++)
        fresh += !p->dup[i];
    if (!p->prepare_only)
        fe_pub_count(p->base.fe, p->topic, result, status == 200 ? fresh : p->batch.n,
                     p->start_us);
    p->done(p, status, error);
}

/* The 503 body for @p why, with Retry-After. */
static json_t *unavailable_body(fe_pub_t *p, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "nothing was published: %.400s", why ? why : "unknown error");
    if (p->base.req)
        msm_http_add_header(p->base.req, "Retry-After", "1");
    return msm_json_error_body("UNAVAILABLE", msg, NULL);
}

static void pub_unavailable(fe_pub_t *p, const char *why)
{
    pub_finish(p, 503, unavailable_body(p, why), "unavailable");
}

static int pub_aborted(fe_pub_t *p)
{
    if (!p->base.fe->fe_closing)
        return 0;
    pub_unavailable(p, "the frontend is shutting down");
    return 1;
}

/* ---- step 3: the append ---- */

static void settle_and_finish(fe_pub_t *p, int commit, int status, json_t *error,
                              const char *result);

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    fe_pub_t *p = opaque;
    if (err != MSM_OK) {
        msm_log(MSM_LOG_WARN, FAC, "publish of %zu events to %s failed: %s", p->batch.n,
                p->topic, reason ? reason : msm_err_str(err));
        settle_and_finish(p, 0, 503, unavailable_body(p, reason ? reason : msm_err_str(err)),
                          "unavailable");
        return;
    }
    if (!p->base.req)
        msm_log(MSM_LOG_WARN, FAC, "%zu events published to %s after the request was "
                "cancelled", p->batch.n, p->topic);
    fe_pub_trace_end(p);
    settle_and_finish(p, 1, 200, NULL, "ok");
}

void fe_event_envelope(const fe_event_t *ev, const char *topic, Msm__V1__Event *env)
{
    msm__v1__event__init(env);
    env->topic = (char *)topic;
    env->key = (char *)ev->key;
    env->ordering_key = (char *)ev->ordering_key;
    env->attributes = ev->attrs;
    env->n_attributes = ev->n_attrs;
    env->payload.data = (uint8_t *)ev->payload;
    env->payload.len = ev->payload_len;
    env->content_type = (char *)(ev->content_type ? ev->content_type : "application/octet-stream");
    env->schema_id = ev->schema_id;
    env->deliver_at_ms = ev->deliver_at_ms;
    env->deadline_ms = ev->deadline_ms;
    env->priority = ev->priority;
    env->idempotency_key = (char *)ev->idempotency_key;
}

static void envelope_fill(const fe_pub_t *p, size_t i, int64_t now_ms, Msm__V1__Event *env)
{
    const fe_event_t *ev = &p->batch.evs[i];
    fe_event_envelope(ev, p->topic, env);
    env->id = (char *)p->ids[i];
    env->publish_time_ms = now_ms;
    env->traceparent = p->tps[i];
    if (ev->tracestate || (!ev->traceparent && p->batch.tracestate))
        env->tracestate = (char *)(ev->tracestate ? ev->tracestate : p->batch.tracestate);
    if (p->cdc_source) {
        const msm_cdc_change_t c = {ev->cdc_sequence, (Msm__V1__Operation)ev->cdc_operation,
                                    ev->cdc_entity, NULL};
        msm_cdc_envelope(env, p->cdc_source, p->cdc_partition, &c);
    }
}

static void append_step(fe_pub_t *p)
{
    fe_t *fe = p->base.fe;
    size_t n = 0, total = 0;
    for (size_t i = 0; i < p->batch.n; i++)
        n += !p->dup[i];
    if (n == 0) { /* every event is a repeat: nothing to publish */
        pub_finish(p, 200, NULL, "ok");
        return;
    }
    int64_t now_ms = p->batch.accepted_ms ? p->batch.accepted_ms : msm_time_unix_ms();
    Msm__V1__Event env;
    size_t *sizes = calloc(p->batch.n, sizeof(*sizes));
    msm_record_t *records = calloc(n, sizeof(*records));
    int64_t *seqs = NULL;
    uint8_t *buf = NULL;
    int rc = MSM_ERR_NOMEM;
    if (!sizes || !records || fe_pub_trace_begin(p, fe->fe_set.trace_sample_ratio) != MSM_OK)
        goto out;
    for (size_t i = 0; i < p->batch.n; i++) {
        if (p->dup[i])
            continue;
        envelope_fill(p, i, now_ms, &env);
        sizes[i] = msm__v1__event__get_packed_size(&env);
        total += sizes[i];
    }
    if (!(buf = malloc(total + 1)))
        goto out;
    size_t off = 0, k = 0;
    for (size_t i = 0; i < p->batch.n; i++) {
        if (p->dup[i])
            continue;
        const fe_event_t *ev = &p->batch.evs[i];
        envelope_fill(p, i, now_ms, &env);
        msm__v1__event__pack(&env, buf + off);
        /* The record key picks the partition: ordering_key keeps its events in order. */
        const char *key = *ev->ordering_key ? ev->ordering_key : ev->key;
        records[k++] = (msm_record_t){.key = *key ? key : NULL, .key_len = strlen(key),
                                      .value = buf + off, .value_len = sizes[i]};
        off += sizes[i];
    }
    char stream[MSM_NAME_MAX + 32];
    snprintf(stream, sizeof(stream), MSM_STREAM_EVENTS, p->topic);
    if (p->cdc_tag) {
        /* A CDC batch: marked, so that whether it is in can be found out after a crash
         * (msm/cdc_state.h). */
        char mark[MSM_STREAM_MARK_MAX + 1];
        if (!(seqs = calloc(n, sizeof(*seqs))) ||
            msm_cdc_mark_name(mark, sizeof(mark), p->cdc_source, p->cdc_partition) != MSM_OK)
            goto out;
        for (size_t i = 0, j = 0; i < p->batch.n; i++) {
            if (!p->dup[i])
                seqs[j++] = p->batch.evs[i].cdc_sequence;
        }
        const msm_stream_mark_t m = {mark, p->cdc_tag, seqs};
        rc = msm_stream_append_marked(fe->fe_deps.stream, stream, records, n, &m, on_appended, p);
    } else {
        rc = msm_stream_append(fe->fe_deps.stream, stream, records, n, on_appended, p);
    }
    p->append_sent = rc == MSM_OK;
out:
    free(seqs);
    free(sizes);
    free(records);
    free(buf);
    if (rc != MSM_OK)
        settle_and_finish(p, 0, 503, unavailable_body(p, msm_err_str(rc)), "unavailable");
}

/* ---- step 2: idempotency keys (msm/idempotency.h) ---- */

int fe_publish_scripts(fe_t *fe)
{
    fe->fe_idem = msm_idem_new();
    return fe->fe_idem ? MSM_OK : MSM_ERR_NOMEM;
}

/* The keys and ids of the events @p pick selects, into @p keys and @p ids (batch.n each).
 * @returns how many. */
static size_t idem_pick(const fe_pub_t *p, const unsigned char *pick, const char **keys,
                        const char **ids)
{
    size_t k = 0;
    for (size_t i = 0; i < p->batch.n; i++) {
        if (!pick[i])
            continue;
        keys[k] = p->batch.evs[i].idempotency_key;
        ids[k] = p->ids[i];
        k++;
    }
    return k;
}

static void idem_settled(int err, const char *why, void *opaque)
{
    fe_pub_t *p = opaque;
    if (err != MSM_OK) /* the pending claims expire after IDEM_PENDING_MS */
        msm_log(MSM_LOG_WARN, FAC, "idempotency keys of %s not settled: %s", p->topic, why);
    json_t *error = p->fin_error;
    p->fin_error = NULL;
    pub_finish(p, p->fin_status, error, p->fin_result);
}

/* Commits (or releases) the keys this request claimed, then answers: a client that repeats
 * a publish as soon as it has the answer must find the key settled, not in flight (and
 * Redis may run this script after commands sent later: see NOSCRIPT in redis.c). */
static void settle_and_finish(fe_pub_t *p, int commit, int status, json_t *error,
                              const char *result)
{
    if (!p->nclaimed) {
        pub_finish(p, status, error, result);
        return;
    }
    fe_t *fe = p->base.fe;
    const char **keys = calloc(p->batch.n, sizeof(*keys)), **ids = calloc(p->batch.n, sizeof(*ids));
    p->nclaimed = 0;
    p->fin_status = status;
    p->fin_error = error;
    p->fin_result = result;
    int rc = MSM_ERR_NOMEM;
    if (keys && ids) {
        size_t n = idem_pick(p, p->claimed, keys, ids);
        rc = msm_idem_settle(fe->fe_idem, fe->fe_deps.redis, p->topic, keys, ids, n, commit,
                             fe->fe_set.idempotency_window_ms, idem_settled, p);
    }
    free(keys);
    free(ids);
    if (rc != MSM_OK)
        idem_settled(rc, msm_err_str(rc), p);
}

static void on_claimed(int err, const char *why, const msm_idem_result_t *res, size_t n,
                       void *opaque)
{
    fe_pub_t *p = opaque;
    if (err != MSM_OK) {
        memset(p->claimed, 0, p->batch.n); /* unknown: the pending claims expire */
        pub_unavailable(p, why);
        return;
    }
    p->nclaimed = 0;
    const char *busy = NULL;
    size_t k = 0;
    for (size_t i = 0; i < p->batch.n && k < n; i++) {
        if (!p->claimed[i])
            continue;
        const msm_idem_result_t *r = &res[k++];
        if (r->state == MSM_IDEM_CLAIMED) {
            p->nclaimed++;
            continue;
        }
        p->claimed[i] = 0;
        if (r->state == MSM_IDEM_BUSY) {
            busy = p->batch.evs[i].idempotency_key;
        } else {
            p->dup[i] = 1;
            memcpy(p->ids[i], r->id, sizeof(p->ids[i]));
        }
    }
    /* Repeats inside this request take the id their first occurrence ends up with. */
    for (size_t i = 0; i < p->batch.n; i++) {
        if (p->dup[i] != 2)
            continue;
        for (size_t j = 0; j < i; j++) {
            if (p->dup[j] != 2 && strcmp(p->batch.evs[j].idempotency_key,
                                         p->batch.evs[i].idempotency_key) == 0) {
                memcpy(p->ids[i], p->ids[j], sizeof(p->ids[i]));
                break;
            }
        }
        p->dup[i] = 1;
    }
    if (busy) {
        char msg[FE_IDEMPOTENCY_MAX_BYTES + 96];
        snprintf(msg, sizeof(msg), "a publish with idempotency key '%s' is in progress", busy);
        settle_and_finish(p, 0, 503, unavailable_body(p, msg), "unavailable");
        return;
    }
    if (!pub_aborted(p))
        append_step(p);
}

static void idem_step(fe_pub_t *p)
{
    fe_t *fe = p->base.fe;
    int any = 0;
    for (size_t i = 0; i < p->batch.n; i++) {
        const char *k = p->batch.evs[i].idempotency_key;
        if (!*k)
            continue;
        /* A repeat inside the request (dup = 2, resolved in on_claimed) claims nothing. */
        for (size_t j = 0; j < i && !p->dup[i]; j++) {
            if (p->claimed[j] && strcmp(p->batch.evs[j].idempotency_key, k) == 0)
                p->dup[i] = 2;
        }
        if (!p->dup[i])
            p->claimed[i] = any = 1;
    }
    if (!any) {
        append_step(p);
        return;
    }
    const char **keys = calloc(p->batch.n, sizeof(*keys)), **ids = calloc(p->batch.n, sizeof(*ids));
    int rc = MSM_ERR_NOMEM;
    if (keys && ids) {
        size_t n = idem_pick(p, p->claimed, keys, ids);
        rc = msm_idem_claim(fe->fe_idem, fe->fe_deps.redis, p->topic, keys, ids, n,
                            IDEM_PENDING_MS, on_claimed, p);
    }
    free(keys);
    free(ids);
    if (rc != MSM_OK) {
        memset(p->claimed, 0, p->batch.n);
        pub_unavailable(p, msm_err_str(rc));
    }
}

/* ---- step 1: the topic's schema ---- */

/* The events are valid and in their wire form: on to the keys and the append, or back to a
 * form that only prepares them. */
static void schema_done(fe_pub_t *p)
{
    if (p->prepare_only)
        pub_finish(p, 200, NULL, "ok");
    else
        idem_step(p);
}

/* The wire bytes of event @p i under schema @p s; errors into @p e / @p big. */
static void convert_event(fe_pub_t *p, const msm_schema_t *s, int id, size_t i,
                          msm_json_err_t *e, msm_json_err_t *big, size_t limit)
{
    fe_event_t *ev = &p->batch.evs[i];
    const char *wire = msm_schema_content_type(s);
    json_t *parsed = NULL;
    const json_t *value = ev->data;
    if (!value && ev->content_type && msm_json_media_type(ev->content_type) &&
        msm_schema_type(s) != MSM_SCHEMA_JSON) {
        msm_json_err_t pe;
        msm_json_err_init(&pe);
        parsed = msm_json_parse((const char *)ev->payload, ev->payload_len, &pe);
        if (!parsed)
            msm_json_err_add(e, NULL, "%s", msm_json_err_message(&pe));
        msm_json_err_deinit(&pe);
        if (!parsed)
            return;
        value = parsed;
    }
    if (value) {
        uint8_t *out = NULL;
        size_t n = 0;
        if (msm_schema_encode_json(s, value, e, &out, &n) == MSM_OK) {
            free(ev->owned);
            ev->owned = out;
            ev->payload = out;
            ev->payload_len = n;
            ev->content_type = wire;
            ev->schema_id = id;
            if (n > limit)
                msm_json_err_add(big, NULL, "exceeds the limit of %zu bytes once encoded",
                                 limit);
        }
        json_decref(parsed);
        return;
    }
    const char *ct = ev->content_type ? ev->content_type : wire;
    if (!fe_same_media_type(ct, wire) && !(msm_schema_type(s) == MSM_SCHEMA_JSON &&
                                           msm_json_media_type(ct))) {
        msm_json_err_add(e, NULL, "content type %s does not match the topic's %s schema "
                         "(send %s, or JSON to be converted)", ct,
                         msm_schema_type_name(msm_schema_type(s)), wire);
        return;
    }
    char why[256];
    if (msm_schema_check(s, ev->payload, ev->payload_len, why, sizeof(why)) != MSM_OK) {
        msm_json_err_add(e, NULL, "does not match schema %d: %s", id, why);
        return;
    }
    ev->content_type = ct;
    ev->schema_id = id;
}

static void on_schema(const msm_schema_t *s, int id, int err, const char *why, void *opaque)
{
    fe_pub_t *p = opaque;
    if (pub_aborted(p))
        return;
    if (!s) {
        char msg[512];
        snprintf(msg, sizeof(msg), "schema %d of subject %s: %s", id, p->subject,
                 why ? why : msm_err_str(err));
        if (err == MSM_ERR_BACKEND)
            pub_unavailable(p, msg);
        else
            pub_finish(p, 500, msm_json_error_body("INTERNAL", msg, NULL), "invalid");
        return;
    }
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    if (p->batch.list) {
        msm_json_path_push_key(&e, p->batch.list);
        msm_json_path_push_key(&big, p->batch.list);
    } else if (p->batch.event_path) {
        msm_json_path_push_key(&e, p->batch.event_path);
        msm_json_path_push_key(&big, p->batch.event_path);
    }
    for (size_t i = 0; i < p->batch.n; i++) {
        const char *field = p->batch.evs[i].data_field;
        if (p->batch.list) {
            msm_json_path_push_index(&e, i);
            msm_json_path_push_index(&big, i);
        }
        if (field) {
            msm_json_path_push_key(&e, field);
            msm_json_path_push_key(&big, field);
        }
        if (p->cdc_source)
            fe_cdc_convert(p, s, id, i, &e, &big, p->base.fe->fe_set.max_event_bytes);
        else
            convert_event(p, s, id, i, &e, &big, p->base.fe->fe_set.max_event_bytes);
        if (field) {
            msm_json_path_pop(&e);
            msm_json_path_pop(&big);
        }
        if (p->batch.list) {
            msm_json_path_pop(&e);
            msm_json_path_pop(&big);
        }
    }
    int bad = msm_json_err_count(&e) > 0, too_large = msm_json_err_count(&big) > 0;
    json_t *body = bad ? msm_json_err_body(&e, NULL)
                       : too_large ? msm_json_err_body(&big, "PAYLOAD_TOO_LARGE") : NULL;
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    if (body)
        pub_finish(p, bad ? 400 : 413, body, bad ? "invalid" : "too_large");
    else
        schema_done(p);
}

static void on_latest_id(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fe_pub_t *p = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        pub_unavailable(p, why);
        return;
    }
    long long id = msm_redis_reply_int(reply, 0);
    if (id <= 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "topic %s is bound to subject '%s', which has no schema "
                 "version yet", p->topic, p->subject);
        pub_finish(p, 409, msm_json_error_body("FAILED_PRECONDITION", msg, NULL), "invalid");
        return;
    }
    if (!p->base.fe->fe_closing)
        fe_subject_latest_note(p->base.fe, p->subject, (int)id);
    if (msm_schema_store_get(fe_schema_store(p->base.fe), (int)id, on_schema, p) != MSM_OK)
        pub_unavailable(p, "out of memory");
}

void fe_pub_submit(fe_pub_t *p)
{
    fe_t *fe = p->base.fe;
    size_t n = p->batch.n;
    p->ids = calloc(n ? n : 1, sizeof(*p->ids));
    p->dup = calloc(n ? n : 1, 1);
    p->claimed = calloc(n ? n : 1, 1);
    if (!p->ids || !p->dup || !p->claimed) {
        pub_finish(p, 500, msm_json_error_body("INTERNAL", "out of memory", NULL), "invalid");
        return;
    }
    for (size_t i = 0; i < n; i++)
        msm_id_new_str(p->ids[i]);
    if (!p->subject) {
        schema_done(p);
        return;
    }
    int id = fe_subject_latest(fe, p->subject);
    if (id > 0) {
        if (msm_schema_store_get(fe_schema_store(fe), id, on_schema, p) != MSM_OK)
            pub_unavailable(p, "out of memory");
        return;
    }
    char key[KEY_MAX];
    msm_redis_key(fe->fe_deps.redis, key, sizeof(key), MSM_KEY_SCHEMA_VERSIONS, p->subject);
    if (msm_redis_command(fe->fe_deps.redis, on_latest_id, p, "LINDEX %s -1", key) != MSM_OK)
        pub_unavailable(p, "Redis refused the command");
}
