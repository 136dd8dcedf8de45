/* SPDX-License-Identifier: MIT */
/* msm_client: blocking publishes to the frontend's JSON batch form (API.md `POST
 * /v1/topics/{topic}:publish`) over one libcurl easy handle per client, so the connection
 * is kept alive across calls. Batches are cut to the frontend's limits before sending. */
#include "msm/client.h"

#include "msm/base64.h"
#include "msm/buf.h"
#include "msm/time.h"
#include "msm/trace.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A response body larger than this is not the API's answer: the request fails. */
#define MAX_RESPONSE_BYTES ((size_t)16 * 1024 * 1024)

struct msm_client_s {
    char *cl_url; /* without a trailing '/' */
    CURL *cl_easy;
    char *cl_auth; /* "Authorization: Bearer <token>", or NULL */
    int64_t cl_timeout_ms;
    size_t cl_max_events;
    size_t cl_max_body;
    uint64_t cl_connects;
    msm_buf_t cl_resp;
    int64_t cl_retry_after_ms; /* of the current response */
    char cl_curl_err[CURL_ERROR_SIZE];
    /* the last outcome; the strings below are owned */
    msm_client_error_t cl_err;
    char *cl_code;
    char *cl_message;
    char *cl_details;
};

/* ---- the last outcome ---- */

static void err_reset(msm_client_t *c)
{
    free(c->cl_code);
    free(c->cl_message);
    free(c->cl_details);
    c->cl_code = c->cl_message = c->cl_details = NULL;
    c->cl_err = (msm_client_error_t){.err = MSM_OK, .code = "", .message = "", .details = ""};
}

/* Records a failure: @p code and @p details may be NULL. @returns @p err. */
__attribute__((format(printf, 6, 7))) static int fail(msm_client_t *c,
                                                      int err,
                                                      long status,
                                                      const char *code,
                                                      const char *details,
                                                      const char *fmt,
                                                      ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t published = c->cl_err.published;
    err_reset(c);
    c->cl_code = code ? strdup(code) : NULL;
    c->cl_message = strdup(msg);
    c->cl_details = details ? strdup(details) : NULL;
    c->cl_err.err = err;
    c->cl_err.http_status = status;
    c->cl_err.code = c->cl_code ? c->cl_code : "";
    c->cl_err.message = c->cl_message ? c->cl_message : "out of memory";
    c->cl_err.details = c->cl_details ? c->cl_details : "";
    c->cl_err.published = published;
    c->cl_err.retry_after_ms = c->cl_retry_after_ms;
    return err;
}

/* ---- the client ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *opaque)
{
    msm_client_t *c = opaque;
    size_t n = size * nmemb;
    if (c->cl_resp.len + n > MAX_RESPONSE_BYTES || msm_buf_append(&c->cl_resp, ptr, n) != MSM_OK)
        return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *opaque)
{
    msm_client_t *c = opaque;
    size_t n = size * nmemb;
    static const char name[] = "retry-after:";
    if (n > sizeof(name) - 1 && strncasecmp(ptr, name, sizeof(name) - 1) == 0) {
        /* delta-seconds only: the frontend never sends an HTTP date */
        char v[32];
        size_t len = n - (sizeof(name) - 1);
        if (len >= sizeof(v))
            len = sizeof(v) - 1;
        memcpy(v, ptr + sizeof(name) - 1, len);
        v[len] = '\0';
        char *end;
        long long s = strtoll(v, &end, 10);
        if (end != v && s >= 0 && s < 86400)
            c->cl_retry_after_ms = (int64_t)s * 1000;
    }
    return n;
}

msm_client_t *msm_client_new(const char *frontend_url)
{
    if (!frontend_url || !*frontend_url) {
        const char *env = getenv("MSM_FRONTEND_URL");
        frontend_url = env && *env ? env : MSM_CLIENT_DEFAULT_URL;
    }
    if (strncasecmp(frontend_url, "http://", 7) != 0 &&
        strncasecmp(frontend_url, "https://", 8) != 0)
        return NULL;
    msm_client_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    err_reset(c);
    c->cl_timeout_ms = MSM_CLIENT_DEFAULT_TIMEOUT_MS;
    c->cl_max_events = MSM_CLIENT_DEFAULT_MAX_EVENTS;
    c->cl_max_body = MSM_CLIENT_DEFAULT_MAX_BODY_BYTES;
    if (!(c->cl_url = strdup(frontend_url)) || !(c->cl_easy = curl_easy_init()))
        goto fail;
    size_t n = strlen(c->cl_url);
    while (n > 0 && c->cl_url[n - 1] == '/')
        c->cl_url[--n] = '\0';

    CURL *e = c->cl_easy;
    /* Set once: curl_easy_perform() keeps the connection of the handle open for the next
     * request (keep-alive), as long as the options below stay the same. */
    if (curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK || /* no proxy from the env */
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, "msm-client") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, c) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HEADERDATA, c) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->cl_curl_err) != CURLE_OK)
        goto fail;
    return c;
fail:
    msm_client_free(c);
    return NULL;
}

void msm_client_free(msm_client_t *c)
{
    if (!c)
        return;
    if (c->cl_easy)
        curl_easy_cleanup(c->cl_easy);
    err_reset(c);
    msm_buf_deinit(&c->cl_resp);
    free(c->cl_auth);
    free(c->cl_url);
    free(c);
}

void msm_client_set_timeout_ms(msm_client_t *c, int64_t timeout_ms)
{
    c->cl_timeout_ms = timeout_ms > 0 ? timeout_ms : MSM_CLIENT_DEFAULT_TIMEOUT_MS;
}

int msm_client_set_token(msm_client_t *c, const char *token)
{
    char *auth = NULL;
    if (token && *token) {
        for (const char *p = token; *p; p++) {
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                return MSM_ERR_INVALID;
        }
        size_t n = strlen("Authorization: Bearer ") + strlen(token) + 1;
        if (!(auth = malloc(n)))
            return MSM_ERR_NOMEM;
        snprintf(auth, n, "Authorization: Bearer %s", token);
    }
    free(c->cl_auth);
    c->cl_auth = auth;
    return MSM_OK;
}

void msm_client_set_batch_limits(msm_client_t *c, size_t max_events, size_t max_body_bytes)
{
    c->cl_max_events = max_events ? max_events : MSM_CLIENT_DEFAULT_MAX_EVENTS;
    c->cl_max_body = max_body_bytes ? max_body_bytes : MSM_CLIENT_DEFAULT_MAX_BODY_BYTES;
}

const msm_client_error_t *msm_client_last_error(const msm_client_t *c)
{
    return &c->cl_err;
}

uint64_t msm_client_connects(const msm_client_t *c)
{
    return c->cl_connects;
}

/* ---- trace context ---- */

int msm_client_child_traceparent(const char *parent, char *out, size_t out_size)
{
    if (!out || out_size < MSM_TRACEPARENT_LEN + 1)
        return MSM_ERR_INVALID;
    return msm_traceparent_child(parent, out);
}

/* ---- building the body ---- */

static int set_str(json_t *o, const char *name, const char *v)
{
    json_t *s;
    if (!v)
        return 0;
    if (!(s = json_string(v))) /* NULL also for text that is not UTF-8 */
        return -1;
    return json_object_set_new(o, name, s);
}

/* One event as the frontend's JSON, appended to @p body. */
static int append_event(msm_client_t *c, size_t i, const msm_message_t *m, msm_buf_t *body)
{
    json_t *o = json_object(), *v = NULL;
    char *text = NULL, *b64 = NULL;
    int rc = MSM_ERR_NOMEM;
    if (!o)
        goto out;
    if (m->data) {
        json_error_t je;
        if (!(v = json_loads(m->data, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je))) {
            rc = fail(c, MSM_ERR_INVALID, 0, NULL, NULL, "message %zu: data is not JSON: %s", i,
                      je.text);
            goto out;
        }
        if (json_object_set_new(o, "data", v) != 0)
            goto out;
    } else if (m->bytes || m->bytes_len) {
        if (!m->bytes) {
            rc = fail(c, MSM_ERR_INVALID, 0, NULL, NULL, "message %zu: bytes is NULL", i);
            goto out;
        }
        if (!(b64 = malloc(msm_base64_encoded_size(m->bytes_len) + 1)))
            goto out;
        size_t n = msm_base64_encode(m->bytes, m->bytes_len, b64);
        if (json_object_set_new(o, "data_base64", json_stringn(b64, n)) != 0)
            goto out;
    } else if (json_object_set_new(o, "data", json_null()) != 0) {
        goto out;
    }
    if ((m->bytes && !m->data && set_str(o, "content_type", m->content_type) != 0) ||
        set_str(o, "key", m->key) != 0 || set_str(o, "ordering_key", m->ordering_key) != 0 ||
        set_str(o, "idempotency_key", m->idempotency_key) != 0) {
        rc = fail(c, MSM_ERR_INVALID, 0, NULL, NULL,
                  "message %zu: content_type, key, ordering_key or idempotency_key is not "
                  "UTF-8",
                  i);
        goto out;
    }
    if (m->n_attrs) {
        json_t *attrs = json_object();
        if (!attrs || json_object_set_new(o, "attributes", attrs) != 0)
            goto out;
        for (size_t a = 0; a < m->n_attrs; a++) {
            const msm_attr_t *at = &m->attrs[a];
            if (!m->attrs || !at->name || !at->value || set_str(attrs, at->name, at->value)) {
                rc = fail(c, MSM_ERR_INVALID, 0, NULL, NULL,
                          "message %zu: attribute %zu has no name or value, or is not UTF-8", i, a);
                goto out;
            }
        }
    }
    if (m->delay_ms > 0 && json_object_set_new(o, "delay_ms", json_integer(m->delay_ms)) != 0)
        goto out;
    if (m->deliver_at_ms > 0) {
        char at[40];
        msm_time_format(m->deliver_at_ms, at, sizeof(at));
        if (set_str(o, "deliver_at", at) != 0)
            goto out;
    }
    if (m->has_priority && json_object_set_new(o, "priority", json_integer(m->priority)) != 0)
        goto out;
    if (!(text = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY)))
        goto out;
    rc = msm_buf_append(body, text, strlen(text));
out:
    if (rc == MSM_ERR_NOMEM)
        fail(c, MSM_ERR_NOMEM, 0, NULL, NULL, "out of memory");
    free(text);
    free(b64);
    json_decref(o);
    return rc;
}

/* ---- one request ---- */

static int status_err(long status)
{
    switch (status) {
    case 400:
    case 415:
    case 422:
        return MSM_ERR_INVALID;
    case 401:
    case 403:
        return MSM_ERR_DENIED;
    case 404:
        return MSM_ERR_NOTFOUND;
    case 409:
        return MSM_ERR_CONFLICT;
    case 413:
        return MSM_ERR_TOOLARGE;
    default:
        return MSM_ERR_BACKEND;
    }
}

static int curl_err(CURLcode rc)
{
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        return MSM_ERR_TIMEOUT;
    case CURLE_OUT_OF_MEMORY:
        return MSM_ERR_NOMEM;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return MSM_ERR_INVALID;
    default:
        return MSM_ERR_IO;
    }
}

/* The answer's body as JSON, or NULL. */
static json_t *answer_json(const msm_client_t *c)
{
    return c->cl_resp.len ? json_loadb((const char *)c->cl_resp.data, c->cl_resp.len, 0, NULL)
                          : NULL;
}

/* The API error body of a failed answer, into the last error. */
static int answer_failed(msm_client_t *c, long status)
{
    int err = status_err(status);
    json_t *root = answer_json(c);
    json_t *e = json_object_get(root, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *message = json_string_value(json_object_get(e, "message"));
    json_t *details = json_object_get(e, "details");
    char *dtext = details ? json_dumps(details, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (message)
        fail(c, err, status, code, dtext, "%s", message);
    else
        fail(c, err, status, code, dtext, "HTTP %ld from the frontend: %.*s", status,
             (int)(c->cl_resp.len < 200 ? c->cl_resp.len : 200),
             c->cl_resp.data ? (const char *)c->cl_resp.data : "");
    free(dtext);
    json_decref(root);
    return err;
}

/* The 200 answer's ids into @p results (n entries). */
static int answer_ok(msm_client_t *c, msm_publish_result_t *results, size_t n)
{
    json_t *root = answer_json(c);
    json_t *arr = json_object_get(root, "results");
    int rc = MSM_OK;
    if (json_array_size(arr) != n) {
        rc = fail(c, MSM_ERR_PARSE, 200, NULL, NULL,
                  "the frontend answered %zu results for %zu events", json_array_size(arr), n);
        goto out;
    }
    for (size_t i = 0; results && i < n; i++) {
        json_t *r = json_array_get(arr, i);
        const char *id = json_string_value(json_object_get(r, "id"));
        if (!id || strlen(id) >= sizeof(results[i].id)) {
            rc = fail(c, MSM_ERR_PARSE, 200, NULL, NULL, "result %zu has no usable id", i);
            goto out;
        }
        memcpy(results[i].id, id, strlen(id) + 1);
        results[i].duplicate = json_is_true(json_object_get(r, "duplicate"));
    }
out:
    json_decref(root);
    return rc;
}

/* POSTs one batch (the JSON in @p body, @p n events). */
static int post(msm_client_t *c,
                const char *url,
                const char *traceparent,
                int64_t deadline_ms,
                const msm_buf_t *body,
                msm_publish_result_t *results,
                size_t n)
{
    int64_t timeout = c->cl_timeout_ms;
    if (deadline_ms > 0) {
        int64_t left = deadline_ms - msm_time_unix_ms();
        if (left <= 0)
            return fail(c, MSM_ERR_TIMEOUT, 0, NULL, NULL, "the deadline has passed");
        if (left < timeout)
            timeout = left;
    }
    char tp[80];
    struct curl_slist *h = NULL, *t;
    if (!(t = curl_slist_append(h, "Content-Type: application/json")) || !(h = t) ||
        /* no 100-continue round trip before large bodies */
        !(t = curl_slist_append(h, "Expect:")) || !(h = t) ||
        (c->cl_auth && (!(t = curl_slist_append(h, c->cl_auth)) || !(h = t))))
        goto nomem;
    if (traceparent) {
        snprintf(tp, sizeof(tp), "traceparent: %s", traceparent);
        if (!(t = curl_slist_append(h, tp)) || !(h = t))
            goto nomem;
    }
    CURL *e = c->cl_easy;
    c->cl_resp.len = 0;
    c->cl_retry_after_ms = 0;
    c->cl_curl_err[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout);
    CURLcode crc = curl_easy_perform(e);
    long connects = 0, status = 0;
    if (curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0)
        c->cl_connects += (uint64_t)connects;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    if (crc != CURLE_OK) {
        int err = curl_err(crc);
        return fail(c, err, 0, NULL, NULL, "%s %s: %s",
                    err == MSM_ERR_TIMEOUT ? "no answer in time from" : "cannot reach", c->cl_url,
                    c->cl_curl_err[0] ? c->cl_curl_err : curl_easy_strerror(crc));
    }
    if (status != 200)
        return answer_failed(c, status);
    return answer_ok(c, results, n);
nomem:
    curl_slist_free_all(h);
    return fail(c, MSM_ERR_NOMEM, 0, NULL, NULL, "out of memory");
}

/* ---- publish ---- */

int msm_client_publish_opts(msm_client_t *c,
                            const char *topic,
                            const msm_message_t *msgs,
                            size_t n,
                            msm_publish_result_t *results,
                            const msm_publish_opts_t *opts)
{
    if (!c)
        return MSM_ERR_INVALID;
    err_reset(c);
    if (!topic || !*topic || (n && !msgs))
        return fail(c, MSM_ERR_INVALID, 0, NULL, NULL, "no topic, or no messages");
    for (size_t i = 0; results && i < n; i++)
        results[i] = (msm_publish_result_t){0};
    if (n == 0)
        return MSM_OK;

    char traceparent[MSM_TRACEPARENT_LEN + 1], *tp = NULL;
    if (opts && opts->traceparent &&
        msm_client_child_traceparent(opts->traceparent, traceparent, sizeof(traceparent)) == MSM_OK)
        tp = traceparent;
    int64_t deadline_ms = opts ? opts->deadline_ms : 0;

    msm_buf_t body = {0};
    char *url = NULL, *etopic = curl_easy_escape(c->cl_easy, topic, 0);
    int rc = MSM_ERR_NOMEM;
    size_t url_len = strlen(c->cl_url) + (etopic ? strlen(etopic) : 0) + 32;
    if (!etopic || !(url = malloc(url_len))) {
        rc = fail(c, MSM_ERR_NOMEM, 0, NULL, NULL, "out of memory");
        goto out;
    }
    snprintf(url, url_len, "%s/v1/topics/%s:publish", c->cl_url, etopic);

    static const char head[] = "{\"events\":[", tail[] = "]}";
    size_t start = 0; /* first event of the batch being built */
    while (start < n) {
        body.len = 0;
        if ((rc = msm_buf_append(&body, head, sizeof(head) - 1)) != MSM_OK)
            break;
        size_t end = start;
        while (end < n && end - start < c->cl_max_events) {
            size_t before = body.len;
            if (end > start && (rc = msm_buf_append(&body, ",", 1)) != MSM_OK)
                break;
            if ((rc = append_event(c, end, &msgs[end], &body)) != MSM_OK)
                goto out;
            /* over the body limit: this event starts the next batch (unless it is alone) */
            if (end > start && body.len + sizeof(tail) - 1 > c->cl_max_body) {
                body.len = before;
                break;
            }
            end++;
        }
        if (rc != MSM_OK || (rc = msm_buf_append(&body, tail, sizeof(tail) - 1)) != MSM_OK)
            break;
        rc = post(c, url, tp, deadline_ms, &body, results ? results + start : NULL, end - start);
        if (rc != MSM_OK)
            goto out;
        start = end;
        c->cl_err.published = start;
    }
    if (rc == MSM_ERR_NOMEM)
        fail(c, MSM_ERR_NOMEM, 0, NULL, NULL, "out of memory");
out:
    curl_free(etopic);
    free(url);
    msm_buf_deinit(&body);
    return rc;
}

int msm_client_publish(msm_client_t *c,
                       const char *topic,
                       const msm_message_t *msgs,
                       size_t n,
                       msm_publish_result_t *results)
{
    return msm_client_publish_opts(c, topic, msgs, n, results, NULL);
}

int msm_client_publish_from(msm_client_t *c,
                            const msm_event_t *parent,
                            const char *topic,
                            const msm_message_t *msgs,
                            size_t n,
                            msm_publish_result_t *results)
{
    msm_publish_opts_t opts = {0};
    if (parent) {
        opts.traceparent = msm_event_traceparent(parent);
        opts.deadline_ms = msm_event_deadline_ms(parent);
    }
    return msm_client_publish_opts(c, topic, msgs, n, results, &opts);
}
