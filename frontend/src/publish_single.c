/* SPDX-License-Identifier: MIT */
/* POST /v1/topics/{topic}/events: one event, its body the payload and its Content-Type the
 * format, metadata in Msm-* headers; or a CloudEvent (HTTP binding 1.0) in binary mode
 * (ce-* headers) or structured mode (application/cloudevents+json). Answers {"id","duplicate"}.
 *
 * CloudEvents context attributes become event attributes (docs/publish.md): type, source,
 * subject, dataschema keep their names, id and time become ce_id and ce_time (msm assigns
 * the event's own id and publish time), extensions keep theirs; partitionkey is the key
 * unless Msm-Key is given. The names of the extensions go into ce_extensions (comma
 * separated, in the order given), so the router can give the lambda the producer's context
 * back; attribute names beginning ce_ are msm's for such events (Msm-Attr-ce_* is 400). */
#include "pub_int.h"

#include "msm/err.h"
#include "msm/time.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CE_JSON       "application/cloudevents+json"
#define CE_BATCH_JSON "application/cloudevents-batch+json"
#define CE_EXT_MAX    20
#define CE_EXTS_ATTR  "ce_extensions"

/* Content types a plain single event may have. */
static int plain_type_ok(const char *ct)
{
    static const char *const ok[] = {"application/x-protobuf", "application/avro",
                                     "application/octet-stream", "text/plain", NULL};
    if (msm_json_media_type(ct))
        return 1;
    for (size_t i = 0; ok[i]; i++) {
        if (fe_same_media_type(ct, ok[i]))
            return 1;
    }
    return 0;
}

static const char *header(const fe_header_t *h, size_t n, const char *name)
{
    const char *v = NULL;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, name) == 0)
            v = h[i].value;
    }
    return v;
}

/* A kept copy (the request's own strings may go while the pipeline runs). */
static const char *keep(fe_batch_t *b, msm_json_err_t *e, const char *s)
{
    const char *k = fe_batch_keep(b, s, strlen(s));
    if (!k)
        msm_json_err_add(e, NULL, "out of memory");
    return k ? k : "";
}

static int parse_int_text(const char *s, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    long long v = strtoll(s, &end, 10);
    if (*end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Msm-* headers onto the event. */
static void msm_headers(const fe_parse_ctx_t *ctx, const fe_header_t *h, size_t n,
                        fe_batch_t *b, fe_event_t *ev, msm_json_err_t *e, msm_json_err_t *big,
                        size_t *nattrs)
{
    int have_delay = 0, have_at = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = h[i].name, *v = h[i].value;
        if (strncasecmp(name, "Msm-", 4) != 0)
            continue;
        int64_t x;
        if (strncasecmp(name, "Msm-Attr-", 9) == 0) {
            fe_check_attr(e, big, name, name + 9, v, (*nattrs)++);
            fe_batch_attr(b, ev, keep(b, e, name + 9), keep(b, e, v));
        } else if (strcasecmp(name, "Msm-Key") == 0) {
            msm_json_check_text(e, big, "Msm-Key", v, FE_KEY_MAX_BYTES);
            ev->key = keep(b, e, v);
        } else if (strcasecmp(name, "Msm-Ordering-Key") == 0) {
            msm_json_check_text(e, big, "Msm-Ordering-Key", v, FE_KEY_MAX_BYTES);
            ev->ordering_key = keep(b, e, v);
        } else if (strcasecmp(name, "Msm-Idempotency-Key") == 0) {
            msm_json_check_text(e, big, "Msm-Idempotency-Key", v, FE_IDEMPOTENCY_MAX_BYTES);
            ev->idempotency_key = keep(b, e, v);
        } else if (strcasecmp(name, "Msm-Priority") == 0) {
            if (parse_int_text(v, 0, 9, &x) != 0)
                msm_json_err_add(e, "Msm-Priority", "must be an integer from 0 to 9");
            else
                ev->priority = (int)x;
        } else if (strcasecmp(name, "Msm-Delay-Ms") == 0) {
            have_delay = 1;
            if (parse_int_text(v, 0, FE_DELAY_MAX_MS, &x) != 0)
                msm_json_err_add(e, "Msm-Delay-Ms", "must be an integer from 0 to %lld",
                                 (long long)FE_DELAY_MAX_MS);
            else
                ev->deliver_at_ms = ctx->now_ms + x;
        } else if (strcasecmp(name, "Msm-Deadline") == 0) {
            if (parse_int_text(v, 1, INT64_MAX, &x) != 0)
                msm_json_err_add(e, "Msm-Deadline", "must be a positive integer (unix ms)");
            else
                ev->deadline_ms = x;
        } else if (strcasecmp(name, "Msm-Deliver-At") == 0) {
            have_at = 1;
            if (msm_time_parse(v, &x) != MSM_OK || x < 0)
                msm_json_err_add(e, "Msm-Deliver-At", "must be an RFC 3339 date-time");
            else
                ev->deliver_at_ms = x;
        } else {
            msm_json_err_add(e, name, "unknown header (Msm-Key, Msm-Ordering-Key, "
                             "Msm-Delay-Ms, Msm-Deliver-At, Msm-Deadline, Msm-Idempotency-Key, "
                             "Msm-Priority, Msm-Attr-<name>)");
        }
    }
    if (have_delay && have_at)
        msm_json_err_add(e, "Msm-Deliver-At", "cannot be used with Msm-Delay-Ms");
    fe_check_deadline(e, "Msm-Deadline", ev);
}

static int ext_name_ok(const char *s)
{
    size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789");
    return n >= 1 && n <= CE_EXT_MAX && s[n] == '\0';
}

/* The names of a CloudEvent's extensions, comma separated (ce_extensions). */
typedef struct {
    char *names;
    size_t len;
} ce_exts_t;

static int ce_context_name(const char *name)
{
    static const char *const ctx[] = {"type", "source", "subject", "dataschema", NULL};
    for (size_t i = 0; ctx[i]; i++) {
        if (strcmp(ctx[i], name) == 0)
            return 1;
    }
    return 0;
}

static void ce_exts_add(ce_exts_t *x, msm_json_err_t *e, const char *name)
{
    size_t n = strlen(name);
    char *p = realloc(x->names, x->len + n + 2);
    if (!p) {
        msm_json_err_add(e, NULL, "out of memory");
        return;
    }
    x->names = p;
    if (x->len)
        p[x->len++] = ',';
    memcpy(p + x->len, name, n + 1);
    x->len += n;
}

/* One CloudEvents context attribute or extension (name lowercase) onto the event. */
static void ce_attr(fe_batch_t *b, fe_event_t *ev, msm_json_err_t *e, msm_json_err_t *big,
                    const char *field, const char *name, const char *v, size_t *nattrs,
                    ce_exts_t *exts)
{
    if (strcmp(name, "specversion") == 0)
        return;
    if (strcmp(name, "time") == 0) {
        int64_t t;
        if (msm_time_parse(v, &t) != MSM_OK)
            msm_json_err_add(e, field, "must be an RFC 3339 date-time");
        name = "ce_time";
    } else if (strcmp(name, "id") == 0) {
        name = "ce_id";
    } else if (!ext_name_ok(name)) {
        msm_json_err_add(e, field, "CloudEvents attribute names are 1-%d lowercase letters "
                         "or digits", CE_EXT_MAX);
        return;
    }
    if (strcmp(name, "partitionkey") == 0 && !*ev->key)
        ev->key = keep(b, e, v);
    if (strncmp(name, "ce_", 3) != 0 && !ce_context_name(name))
        ce_exts_add(exts, e, name);
    fe_check_attr(e, big, field, name, v, (*nattrs)++);
    fe_batch_attr(b, ev, keep(b, e, name), keep(b, e, v));
}

static void ce_required(msm_json_err_t *e, const char *field, const char *v)
{
    if (!v || !*v)
        msm_json_err_add(e, field, "is required (a non-empty string)");
}

/* Binary mode: ce-* headers, the body is the data. */
static void ce_binary(const fe_header_t *h, size_t n, fe_batch_t *b, fe_event_t *ev,
                      msm_json_err_t *e, msm_json_err_t *big, size_t *nattrs, ce_exts_t *exts)
{
    const char *sv = header(h, n, "ce-specversion");
    if (strcmp(sv, "1.0") != 0)
        msm_json_err_add(e, "ce-specversion", "must be 1.0");
    ce_required(e, "ce-id", header(h, n, "ce-id"));
    ce_required(e, "ce-source", header(h, n, "ce-source"));
    ce_required(e, "ce-type", header(h, n, "ce-type"));
    for (size_t i = 0; i < n; i++) {
        if (strncasecmp(h[i].name, "ce-", 3) != 0)
            continue;
        char name[64];
        size_t k = 0;
        for (const char *p = h[i].name + 3; *p && k + 1 < sizeof(name); p++)
            name[k++] = (char)tolower((unsigned char)*p);
        name[k] = '\0';
        ce_attr(b, ev, e, big, h[i].name, name, h[i].value, nattrs, exts);
    }
}

/* Structured mode: the whole CloudEvent is the JSON body. */
static void ce_structured(const fe_parse_ctx_t *ctx, json_t *ce, int keep_json,
                          fe_batch_t *b, fe_event_t *ev, msm_json_err_t *e,
                          msm_json_err_t *big, size_t *nattrs, ce_exts_t *exts)
{
    if (msm_json_expect_object(e, ce) != MSM_OK)
        return;
    const char *sv = NULL, *ct = NULL;
    if (msm_json_get_str(e, ce, "specversion", MSM_JSON_REQUIRED, &sv) == MSM_OK &&
        strcmp(sv, "1.0") != 0)
        msm_json_err_add(e, "specversion", "must be 1.0");
    const char *req[] = {"id", "source", "type"};
    for (size_t i = 0; i < 3; i++) {
        const char *v = NULL;
        msm_json_get_str(e, ce, req[i], MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &v);
    }
    msm_json_get_strn(e, ce, "datacontenttype", MSM_JSON_NULLABLE | MSM_JSON_NONEMPTY,
                      FE_CONTENT_TYPE_MAX, &ct);
    if (ct && !fe_media_type_ok(ct))
        msm_json_err_add(e, "datacontenttype", "must be a media type such as type/subtype");
    /* The Distributed Tracing extension is the event's trace context, not an attribute. */
    const char *tp = NULL, *ts = NULL;
    msm_json_get_str(e, ce, "traceparent", MSM_JSON_NULLABLE, &tp);
    msm_json_get_str(e, ce, "tracestate", MSM_JSON_NULLABLE, &ts);
    fe_event_trace(b, ev, e, "traceparent", tp, "tracestate", ts);
    const char *name;
    json_t *v;
    json_object_foreach(ce, name, v) {
        if (strcmp(name, "data") == 0 || strcmp(name, "data_base64") == 0 ||
            strcmp(name, "datacontenttype") == 0 || strcmp(name, "traceparent") == 0 ||
            strcmp(name, "tracestate") == 0 || json_is_null(v))
            continue;
        char num[64];
        const char *text = json_is_string(v) ? json_string_value(v) : NULL;
        if (json_is_integer(v)) {
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            text = num;
        } else if (json_is_boolean(v)) {
            text = json_is_true(v) ? "true" : "false";
        }
        if (!text) {
            msm_json_err_add(e, name, "must be a string, an integer or a boolean");
            continue;
        }
        ce_attr(b, ev, e, big, name, name, text, nattrs, exts);
    }
    const json_t *data = json_object_get(ce, "data");
    const char *b64 = NULL;
    msm_json_get_str(e, ce, "data_base64", MSM_JSON_NULLABLE, &b64);
    if (data && b64) {
        msm_json_err_add(e, "data_base64", "cannot be used with data");
        return;
    }
    ev->content_type = ct;
    if (b64) {
        fe_event_data_base64(ev, b64, ctx->max_event_bytes, e, big);
        if (!ct && !keep_json)
            ev->content_type = "application/octet-stream";
        return;
    }
    ev->data_field = "data";
    if (!data || json_is_null(data)) { /* an event without data */
        ev->payload = (const uint8_t *)"";
        return;
    }
    if (ct && !msm_json_media_type(ct)) {
        if (!json_is_string(data)) {
            msm_json_err_add(e, "data", "must be a string when datacontenttype is %s", ct);
            return;
        }
        ev->payload = (const uint8_t *)json_string_value(data);
        ev->payload_len = json_string_length(data);
        return;
    }
    if (!ct)
        ev->content_type = "application/json";
    fe_event_data(ev, data, keep_json, ctx->max_event_bytes, e, big);
}

/* A CloudEvent's extension names onto the event as ce_extensions (even none: the list is
 * what tells the router which attributes are extensions). ce_* names are msm's here. */
static void ce_exts_record(fe_batch_t *b, fe_event_t *ev, msm_json_err_t *e,
                           const fe_header_t *h, size_t n, const ce_exts_t *exts)
{
    for (size_t i = 0; i < n; i++) {
        if (strncasecmp(h[i].name, "Msm-Attr-ce_", 12) == 0)
            msm_json_err_add(e, h[i].name, "attribute names beginning ce_ are reserved for "
                             "the CloudEvent's context");
    }
    fe_batch_attr(b, ev, CE_EXTS_ATTR, exts->names ? keep(b, e, exts->names) : "");
}

/* A plain body: its bytes are the payload (JSON is checked to be JSON). */
static void plain_body(const uint8_t *body, size_t len, const char *ct, int keep_json,
                       fe_batch_t *b, fe_event_t *ev, msm_json_err_t *e)
{
    ev->content_type = keep(b, e, ct);
    if (msm_json_media_type(ct)) {
        msm_json_err_t pe;
        msm_json_err_init(&pe);
        json_t *v = msm_json_parse((const char *)body, len, &pe);
        if (!v)
            msm_json_err_add(e, NULL, "%s", msm_json_err_message(&pe));
        msm_json_err_deinit(&pe);
        if (v && keep_json) {
            b->json = v;
            ev->data = v;
            return;
        }
        json_decref(v);
    }
    if (!(ev->owned = malloc(len ? len : 1))) {
        msm_json_err_add(e, NULL, "out of memory");
        return;
    }
    if (len)
        memcpy(ev->owned, body, len);
    ev->payload = ev->owned;
    ev->payload_len = len;
}

int fe_parse_single(const fe_parse_ctx_t *ctx, const fe_header_t *hdrs, size_t nhdrs,
                    const uint8_t *body, size_t len, int keep_json, fe_batch_t *b,
                    msm_json_err_t *e, msm_json_err_t *big)
{
    const char *ct = header(hdrs, nhdrs, "Content-Type");
    b->accepted_ms = ctx->now_ms;
    /* A binary-mode CloudEvent may leave datacontenttype out: its data is just bytes. */
    if (!ct && header(hdrs, nhdrs, "ce-specversion"))
        ct = "application/octet-stream";
    int structured = ct && fe_same_media_type(ct, CE_JSON);
    if (len > ctx->max_event_bytes && !structured) {
        msm_json_err_add(big, NULL, "the event exceeds the limit of %zu bytes",
                         ctx->max_event_bytes);
        return 413;
    }
    if (ct && fe_same_media_type(ct, CE_BATCH_JSON)) {
        msm_json_err_add(e, "Content-Type", "CloudEvents batch mode is not supported: send "
                         "each event, or use POST /v1/topics/{topic}:publish");
        return 415;
    }
    json_t *ce = NULL;
    if (structured) {
        if (!(ce = msm_json_parse((const char *)body, len, e)))
            return 400;
        b->json = ce;
    }
    size_t cap = nhdrs + 1 + (ce ? json_object_size(ce) : 0); /* 1: ce_extensions */
    if (fe_batch_init(b, 1, cap) != MSM_OK) {
        msm_json_err_add(e, NULL, "out of memory");
        return 400;
    }
    fe_event_t *ev = &b->evs[0];
    size_t nattrs = 0;
    msm_headers(ctx, hdrs, nhdrs, b, ev, e, big, &nattrs);
    ce_exts_t exts = {NULL, 0};
    int is_ce = ce || header(hdrs, nhdrs, "ce-specversion");
    if (ce) {
        ce_structured(ctx, ce, keep_json, b, ev, e, big, &nattrs, &exts);
    } else {
        if (!ct || !fe_media_type_ok(ct) || !plain_type_ok(ct)) {
            msm_json_err_add(e, "Content-Type", "%s%s is not supported: send application/json, "
                             "application/x-protobuf, application/avro, "
                             "application/octet-stream, text/plain or " CE_JSON,
                             ct ? "" : "(none)", ct ? ct : "");
            return 415;
        }
        if (is_ce)
            ce_binary(hdrs, nhdrs, b, ev, e, big, &nattrs, &exts);
        plain_body(body, len, ct, keep_json, b, ev, e);
    }
    if (is_ce)
        ce_exts_record(b, ev, e, hdrs, nhdrs, &exts);
    free(exts.names);
    return msm_json_err_count(e) ? 400 : msm_json_err_count(big) ? 413 : 0;
}

/* ---- the route ---- */

typedef struct {
    fe_header_t *h;
    size_t n, cap;
} headers_t;

static int collect(void *opaque, const char *name, const char *value)
{
    headers_t *hs = opaque;
    if (hs->n == hs->cap) {
        size_t cap = hs->cap ? hs->cap * 2 : 32;
        fe_header_t *h = realloc(hs->h, cap * sizeof(*h));
        if (!h)
            return 1;
        hs->h = h;
        hs->cap = cap;
    }
    hs->h[hs->n++] = (fe_header_t){name, value ? value : ""};
    return 0;
}

static void on_done(fe_pub_t *p, int status, json_t *error)
{
    if (status == 200)
        fe_call_json(&p->base, 200, json_pack("{s:s,s:b}", "id", p->ids[0], "duplicate",
                                              p->dup[0]));
    else
        fe_call_json(&p->base, status, error);
}

void fe_publish_single(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    uint64_t start_us = msm_time_mono_us();
    const char *topic = msm_http_req_param(req, "topic"), *subject = NULL;
    if (!msm_name_valid(topic) || !fe_topic_lookup(fe, topic, &subject)) {
        fe_pub_count(fe, "", "not_found", 0, start_us);
        fe_not_found(req, "topic", topic);
        return;
    }
    headers_t hs = {0};
    msm_http_req_headers(req, collect, &hs);
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    fe_parse_ctx_t ctx = fe_parse_ctx(fe);
    fe_batch_t b = {0};
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    int status = fe_parse_single(&ctx, hs.h, hs.n, (const uint8_t *)body, len, subject != NULL,
                                 &b, &e, &big);
    free(hs.h);
    fe_pub_run(fe, req, topic, subject, on_done, start_us, status, &b, &e, &big, 1);
}
