/* SPDX-License-Identifier: MIT */
/* One push, start to end: refuse it while draining, check its signature, build the event,
 * pick the handler, run it and answer the router (API.md "Push to lambdas": 2xx success,
 * `Msm-Status: fatal` fatal, anything else retriable). A handler may answer later
 * (MSM_LATER): the HTTP response is deferred and a deadline timer answers "retry" for it if
 * it overruns, so the router never waits past Msm-Deadline for us.
 *
 * A batch push (`Content-Type: application/cloudevents-batch+json`, API.md "Batch push")
 * runs the handler once per event of its JSON array, each with its own ctx, and answers
 * `{"results":[{"id","status"}]}` once every event has its verdict. */
#include "lambda_int.h"

#include "board.h"
#include "pool.h"

#include "msm/err.h"
#include "msm/json_scan.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAC "lambda"
#define BATCH_MEDIA_TYPE "application/cloudevents-batch+json"

typedef struct lm_batch_s lm_batch_t;

/* One batch push: the verdict of each event until all are in, then one answer. */
struct lm_batch_s {
    msm_http_req_t *b_req; /* NULL once answered or cancelled by the server */
    size_t b_n;
    size_t b_waiting;      /* events without a verdict yet */
    int b_starting;        /* handlers are still being started: do not answer yet */
    char **b_ids;
    const char **b_status; /* "ok", "retry", "fatal" per event */
    msm_ctx_t **b_ctxs;    /* the ctx still owing its verdict, per event */
};

struct msm_ctx_s {
    msm_ctx_t *cx_prev, *cx_next; /* the lambda's in-flight list */
    msm_lambda_t *cx_lambda;
    lm_handler_t *cx_handler;
    msm_event_t *cx_ev;
    msm_http_req_t *cx_req; /* NULL once answered (or cancelled by the server) */
    msm_timer_t cx_deadline_timer;
    uint64_t cx_start_us;
    int cx_in_handler;
    int cx_handler_done;      /* returned a final status, or completed after MSM_LATER */
    int cx_early_status;      /* msm_ctx_complete() called from inside the handler, or -1 */
    msm_status_t cx_answered; /* what the router was told */
    int64_t cx_retry_after_ms;
    int cx_overloaded; /* a retry is answered 429 without Retry-After */
    msm_ctx_cancel_t *cx_cancel_cb;
    void *cx_cancel_opaque;
    lm_batch_t *cx_batch;     /* a member of a batch push: the verdict goes there */
    size_t cx_index;
    lm_job_t cx_job;          /* --threads: the handler call handed to a thread */
    msm_span_t cx_span;       /* the handler's span, when cx_traced (docs/tracing.md) */
    int cx_traced;
    char cx_error[256];
};

static void batch_verdict(msm_ctx_t *ctx, lm_result_t result);

static const char *const result_names[] = {"ok", "retry", "fatal", "deadline"};

/* ---- rejections before any handler runs ---- */

static void count_rejected(msm_lambda_t *l, const char *reason)
{
    msm_counter_inc(msm_metric_labels(l->lm_m_rejected, reason, NULL));
}

static void reject(msm_lambda_t *l,
                   msm_http_req_t *req,
                   int status,
                   const char *code,
                   const char *reason,
                   const char *msg)
{
    count_rejected(l, reason);
    msm_log(MSM_LOG_DEBUG, FAC, "%s %s: %d %s: %s", msm_http_req_method(req),
            msm_http_req_path(req), status, code, msg);
    msm_http_respond_error(req, status, code, msg, NULL);
}

static lm_handler_t *find_handler(msm_lambda_t *l, const char *subscription)
{
    lm_handler_t *star = NULL;
    for (size_t i = 0; i < l->lm_nhandlers; i++) {
        lm_handler_t *h = &l->lm_handlers[i];
        if (strcmp(h->h_subscription, subscription) == 0 && strcmp(h->h_subscription, "*") != 0)
            return h;
        if (strcmp(h->h_subscription, "*") == 0)
            star = h;
    }
    return star;
}

/* ---- answering ---- */

static int past_deadline(const msm_event_t *ev)
{
    int64_t d = msm_event_deadline_ms(ev);
    return d > 0 && msm_time_unix_ms() >= d;
}

static void observe(msm_ctx_t *ctx, lm_result_t result)
{
    lm_handler_t *h = ctx->cx_handler;
    msm_counter_inc(h->h_results[result]);
    uint64_t took_us = msm_time_mono_us() - ctx->cx_start_us;
    msm_histogram_observe(h->h_duration, (double)took_us / 1e6);
    msm__slot_answered(ctx->cx_lambda->lm_slot, result != LM_RESULT_OK, took_us);
    msm_log(MSM_LOG_DEBUG, FAC, "event %s subscription=%s attempt=%d: %s", msm_event_id(ctx->cx_ev),
            msm_event_subscription(ctx->cx_ev), msm_event_attempt(ctx->cx_ev),
            result_names[result]);
    if (ctx->cx_traced) {
        char attempt[16];
        snprintf(attempt, sizeof(attempt), "%d", msm_event_attempt(ctx->cx_ev));
        msm_log_field_t f[] = {{"subscription", msm_event_subscription(ctx->cx_ev)},
                               {"event_id", msm_event_id(ctx->cx_ev)},
                               {"attempt", attempt},
                               {"result", result_names[result]}};
        msm_span_end(&ctx->cx_span, "lambda", "handle", f, 4);
    }
}

static void respond_failure(
    msm_ctx_t *ctx, int status, const char *msm_status, const char *code, const char *fallback)
{
    msm_http_req_t *req = ctx->cx_req;
    msm_http_add_header(req, "Msm-Status", msm_status);
    msm_http_respond_error(req, status, code, ctx->cx_error[0] ? ctx->cx_error : fallback, NULL);
}

/* Tells the router how the invocation went (once) and returns what it was told.
 * @p deadline_hit: the deadline timer fired (the wall clock may lag it by a millisecond). */
static msm_status_t answer(msm_ctx_t *ctx, msm_status_t status, int deadline_hit)
{
    msm_http_req_t *req = ctx->cx_req;
    if (!req)
        return ctx->cx_answered;
    if (status != MSM_OK && status != MSM_FATAL)
        status = MSM_RETRY;
    lm_result_t result =
        status == MSM_OK ? LM_RESULT_OK : (status == MSM_FATAL ? LM_RESULT_FATAL : LM_RESULT_RETRY);
    /* An answer after the deadline is one the router no longer waits for: whatever the
     * handler decided, it will deliver again, so say so. */
    if (deadline_hit || past_deadline(ctx->cx_ev)) {
        status = MSM_RETRY;
        result = LM_RESULT_DEADLINE;
    }
    if (ctx->cx_batch) {
        ctx->cx_req = NULL;
        ctx->cx_answered = status;
        observe(ctx, result);
        batch_verdict(ctx, result);
        return status;
    }
    if (result == LM_RESULT_OK) {
        msm_http_add_header(req, "Msm-Status", "ok");
        msm_http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
    } else if (result == LM_RESULT_FATAL) {
        respond_failure(ctx, 500, "fatal", "FATAL", "the handler failed this event for good");
    } else if (result == LM_RESULT_DEADLINE) {
        if (ctx->cx_in_handler) /* a handler thread may still be writing cx_error */
            ctx->cx_error[0] = '\0';
        respond_failure(ctx, 503, "retry", "DEADLINE_EXCEEDED",
                        "the handler did not finish before Msm-Deadline");
    } else if (ctx->cx_retry_after_ms > 0) {
        char secs[24];
        snprintf(secs, sizeof(secs), "%lld", (long long)((ctx->cx_retry_after_ms + 999) / 1000));
        msm_http_add_header(req, "Retry-After", secs);
        respond_failure(ctx, 429, "retry", "RETRY", "the handler asked to slow down");
    } else if (ctx->cx_overloaded) {
        respond_failure(ctx, 429, "retry", "OVERLOADED", "the handler is overloaded");
    } else {
        respond_failure(ctx, 503, "retry", "RETRY", "the handler asked for a retry");
    }
    ctx->cx_req = NULL;
    ctx->cx_answered = status;
    observe(ctx, result);
    return status;
}

/* ---- the in-flight list ---- */

static void ctx_link(msm_lambda_t *l, msm_ctx_t *ctx)
{
    ctx->cx_next = l->lm_ctxs;
    if (l->lm_ctxs)
        l->lm_ctxs->cx_prev = ctx;
    l->lm_ctxs = ctx;
    l->lm_inflight++;
    msm_gauge_inc(l->lm_m_inflight);
}

static void ctx_free(msm_ctx_t *ctx)
{
    msm_lambda_t *l = ctx->cx_lambda;
    if (ctx->cx_prev)
        ctx->cx_prev->cx_next = ctx->cx_next;
    else
        l->lm_ctxs = ctx->cx_next;
    if (ctx->cx_next)
        ctx->cx_next->cx_prev = ctx->cx_prev;
    l->lm_inflight--;
    msm_gauge_dec(l->lm_m_inflight);
    msm_loop_timer_stop(l->lm_loop, &ctx->cx_deadline_timer);
    msm__event_free(ctx->cx_ev);
    free(ctx);
}

/* Frees the invocation once both sides are over: the router was answered and the handler
 * will not touch the ctx again. */
static void ctx_release(msm_ctx_t *ctx)
{
    if (ctx->cx_req || !ctx->cx_handler_done)
        return;
    msm_lambda_t *l = ctx->cx_lambda;
    ctx_free(ctx);
    msm__lambda_released(l);
}

static void on_deadline(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    msm_ctx_t *ctx = opaque;
    answer(ctx, MSM_RETRY, 1);
    ctx_release(ctx);
}

static void start_deadline_timer(msm_ctx_t *ctx)
{
    int64_t d = msm_event_deadline_ms(ctx->cx_ev);
    if (d <= 0)
        return;
    int64_t left = d - msm_time_unix_ms();
    msm_loop_timer_start(ctx->cx_lambda->lm_loop, &ctx->cx_deadline_timer,
                         left > 0 ? (uint64_t)left : 0, on_deadline, ctx);
}

/* The HTTP server is going away with our late answer still owed: it answers 503 itself. */
static void on_request_cancel(msm_http_req_t *req, void *opaque)
{
    (void)req;
    msm_ctx_t *ctx = opaque;
    ctx->cx_req = NULL;
    ctx->cx_answered = MSM_RETRY;
}

/* ---- the route ---- */

static const char *header_or_empty(const msm_http_req_t *req, const char *name)
{
    const char *v = msm_http_req_header(req, name);
    return v ? v : "";
}

/* A v1-only push is accepted for one release of transition: say so, at most once a minute. */
static void warn_v1_only(msm_lambda_t *l, const char *id)
{
    msm_counter_inc(l->lm_m_v1_only);
    uint64_t now = msm_time_mono_us();
    if (l->lm_v1_warned_us != 0 && now - l->lm_v1_warned_us < 60000000u)
        return;
    l->lm_v1_warned_us = now;
    msm_log(MSM_LOG_WARN, FAC,
            "push %s accepted on a v1 signature alone (no v2): its Msm-Subscription, "
            "Msm-Attempt and Msm-Deadline are not signed; v1-only pushes will be refused in "
            "the next release (upgrade the sender)",
            *id ? id : "(batch)");
}

/* With secrets, the push must be signed (v2 when the sender sends one), inside the tolerance
 * window, and not seen before. A batch push signs ce-id and Msm-Attempt as "" (it sends
 * neither). Answers 401 itself when not. */
static int signature_ok(msm_lambda_t *l, msm_http_req_t *req, int batch)
{
    if (l->lm_nsecrets == 0)
        return 1;
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    msm_signature_fields_t f = {
        .sf_id = batch ? "" : header_or_empty(req, "ce-id"),
        .sf_subscription = header_or_empty(req, "Msm-Subscription"),
        .sf_attempt = batch ? "" : header_or_empty(req, "Msm-Attempt"),
        .sf_deadline = header_or_empty(req, "Msm-Deadline"),
    };
    int64_t now_s = msm_time_unix_ms() / 1000;
    int tolerance = l->lm_conf.lc_signature_tolerance_s;
    lm_sig_result_t res;
    char why[160];
    if (msm__signature_verify((const char *const *)l->lm_secrets, l->lm_nsecrets,
                              msm_http_req_header(req, "Msm-Signature"), &f, body, len, now_s,
                              tolerance, &res, why, sizeof(why)) != 0) {
        reject(l, req, 401, "UNAUTHENTICATED", "signature", why);
        return 0;
    }
    if (l->lm_replay) {
        /* Kept while the window would still accept it (0: no window, kept until evicted). */
        int64_t expires = tolerance > 0 ? res.sr_t + tolerance : INT64_MAX;
        lm_replay_verdict_t v =
            msm__replay_check(l->lm_replay, res.sr_key, res.sr_t, expires, now_s);
        if (v == LM_REPLAY_SEEN) {
            reject(l, req, 401, "UNAUTHENTICATED", "replay",
                   "Msm-Signature: this push was received already (replay)");
            return 0;
        }
        if (v == LM_REPLAY_FLOOR) {
            snprintf(why, sizeof(why),
                     "Msm-Signature: t=%lld is too old to be checked for replays (the replay "
                     "cache is full)",
                     (long long)res.sr_t);
            reject(l, req, 401, "UNAUTHENTICATED", "replay", why);
            return 0;
        }
    }
    if (res.sr_version == 1)
        warn_v1_only(l, f.sf_id);
    return 1;
}

/* The handler call itself, on the loop thread or handler thread @p thread, posted to the
 * board so the supervisor sees it running (utilisation, watchdog). */
static msm_status_t call_handler(msm_ctx_t *ctx, unsigned thread)
{
    lm_slot_t *slot = ctx->cx_lambda->lm_slot;
    msm__slot_begin(slot, thread, msm_event_deadline_ms(ctx->cx_ev));
    msm_status_t st = ctx->cx_handler->h_cb(ctx->cx_ev, ctx);
    msm__slot_end(slot, thread);
    return st;
}

/* After the handler returned @p st (on the loop thread): answer, or wait for
 * msm_ctx_complete() with a deadline timer. */
static void handler_returned(msm_ctx_t *ctx, msm_status_t st)
{
    msm_lambda_t *l = ctx->cx_lambda;
    ctx->cx_in_handler = 0;
    if (ctx->cx_early_status >= 0)
        st = ctx->cx_early_status;
    if (st != MSM_LATER) {
        ctx->cx_handler_done = 1;
        msm_loop_timer_stop(l->lm_loop, &ctx->cx_deadline_timer);
        answer(ctx, st, 0);
        ctx_release(ctx);
        return;
    }
    if (ctx->cx_req && !ctx->cx_batch) /* a batch's request has one cancel hook */
        msm_http_req_on_cancel(ctx->cx_req, on_request_cancel, ctx);
    if (!msm_timer_active(&ctx->cx_deadline_timer))
        start_deadline_timer(ctx);
}

static void run_handler(msm_ctx_t *ctx)
{
    msm_lambda_t *l = ctx->cx_lambda;
    ctx->cx_in_handler = 1;
    if (l->lm_pool) {
        /* The router is answered at the deadline even while the thread is still busy. */
        start_deadline_timer(ctx);
        if (!ctx->cx_batch && ctx->cx_req)
            msm_http_req_on_cancel(ctx->cx_req, on_request_cancel, ctx);
        msm__pool_submit(l->lm_pool, &ctx->cx_job);
        return;
    }
    handler_returned(ctx, call_handler(ctx, 0));
}

int msm__lambda_run_job(lm_job_t *job, unsigned thread, void *opaque)
{
    (void)opaque;
    msm_ctx_t *ctx = (msm_ctx_t *)(void *)((char *)job - offsetof(msm_ctx_t, cx_job));
    return call_handler(ctx, thread);
}

void msm__lambda_job_done(lm_job_t *job, int result, void *opaque)
{
    (void)opaque;
    msm_ctx_t *ctx = (msm_ctx_t *)(void *)((char *)job - offsetof(msm_ctx_t, cx_job));
    handler_returned(ctx, result);
}

/* ---- batch push ---- */

static void batch_free(lm_batch_t *b)
{
    for (size_t i = 0; i < b->b_n; i++)
        free(b->b_ids[i]);
    free(b->b_ids);
    free(b->b_status);
    free(b->b_ctxs);
    free(b);
}

/* {"results":[{"id":"…","status":"…"},…]} written straight out: the ids are valid UTF-8
 * (they were read from the JSON body). An event without an id has no result. */
static void batch_answer(lm_batch_t *b)
{
    msm_buf_t out = {0};
    int rc = msm_buf_append(&out, "{\"results\":[", 12);
    const char *sep = "{\"id\":";
    for (size_t i = 0; rc == MSM_OK && i < b->b_n; i++) {
        if (!b->b_ids[i])
            continue;
        const char *st = b->b_status[i];
        if ((rc = msm_buf_append(&out, sep, strlen(sep))) == MSM_OK &&
            (rc = msm_json_append_string(&out, b->b_ids[i], strlen(b->b_ids[i]))) == MSM_OK &&
            (rc = msm_buf_append(&out, ",\"status\":\"", 11)) == MSM_OK &&
            (rc = msm_buf_append(&out, st, strlen(st))) == MSM_OK)
            rc = msm_buf_append(&out, "\"}", 2);
        sep = ",{\"id\":";
    }
    if (rc == MSM_OK)
        rc = msm_buf_append(&out, "]}", 2);
    if (rc == MSM_OK)
        msm_http_respond(b->b_req, 200, "application/json", out.data, out.len);
    else /* the server answers 503 for a request left without its answer */
        msm_http_respond_json(b->b_req, 200, NULL);
    msm_buf_deinit(&out);
    batch_free(b);
}

static void batch_verdict(msm_ctx_t *ctx, lm_result_t result)
{
    lm_batch_t *b = ctx->cx_batch;
    ctx->cx_batch = NULL;
    b->b_status[ctx->cx_index] =
        result == LM_RESULT_OK ? "ok" : (result == LM_RESULT_FATAL ? "fatal" : "retry");
    b->b_ctxs[ctx->cx_index] = NULL;
    if (--b->b_waiting == 0 && !b->b_starting)
        batch_answer(b);
}

/* The server is going away with the batch's answer still owed: it answers 503 itself. */
static void on_batch_cancel(msm_http_req_t *req, void *opaque)
{
    (void)req;
    lm_batch_t *b = opaque;
    for (size_t i = 0; i < b->b_n; i++) {
        msm_ctx_t *ctx = b->b_ctxs[i];
        if (ctx) {
            ctx->cx_batch = NULL;
            ctx->cx_req = NULL;
            ctx->cx_answered = MSM_RETRY;
        }
    }
    batch_free(b);
}

static lm_batch_t *batch_new(size_t n)
{
    lm_batch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->b_n = n;
    b->b_ids = calloc(n ? n : 1, sizeof(*b->b_ids));
    b->b_status = calloc(n ? n : 1, sizeof(*b->b_status));
    b->b_ctxs = calloc(n ? n : 1, sizeof(*b->b_ctxs));
    if (!b->b_ids || !b->b_status || !b->b_ctxs) {
        batch_free(b);
        return NULL;
    }
    return b;
}

static msm_ctx_t *ctx_new(msm_lambda_t *l, lm_handler_t *h, msm_event_t *ev,
                          msm_http_req_t *req);
static void ctx_start(msm_ctx_t *ctx);

/* Starts the handler of event @p i, built as @p ev (NULL: unreadable, @p why says why); its
 * verdict may come at once. @p id: the event's id, NULL when it has none. */
static void batch_start_one(
    msm_lambda_t *l, lm_batch_t *b, size_t i, const char *id, msm_event_t *ev, const char *why)
{
    b->b_ids[i] = id ? strdup(id) : NULL; /* no id: no result can name it (retried) */
    b->b_status[i] = "retry";
    lm_handler_t *h = ev ? find_handler(l, msm_event_subscription(ev)) : NULL;
    msm_ctx_t *ctx = h ? ctx_new(l, h, ev, b->b_req) : NULL;
    if (!ctx) {
        /* Retried like a single push answered 400 or 404 would be. */
        count_rejected(l, !ev ? "invalid" : (!h ? "no_handler" : "nomem"));
        msm_log(MSM_LOG_DEBUG, FAC, "batch event %zu: %s", i,
                !ev ? why : "no handler for its subscription");
        msm__event_free(ev);
        return;
    }
    ctx->cx_batch = b;
    ctx->cx_index = i;
    b->b_ctxs[i] = ctx;
    b->b_waiting++;
    ctx_start(ctx);
}

/* The batch of @p n events of @p req, its handlers about to start; NULL after answering 503. */
static lm_batch_t *batch_begin(msm_lambda_t *l, msm_http_req_t *req, size_t n)
{
    lm_batch_t *b = batch_new(n);
    if (!b) {
        reject(l, req, 503, "UNAVAILABLE", "nomem", "out of memory");
        return NULL;
    }
    b->b_req = req;
    b->b_starting = 1;
    return b;
}

/* Every handler has started: answer now if all have their verdict, else when they do. */
static void batch_started(lm_batch_t *b)
{
    b->b_starting = 0;
    if (b->b_waiting == 0) {
        batch_answer(b);
        return;
    }
    msm_http_req_on_cancel(b->b_req, on_batch_cancel, b);
}

/* The events read by msm__batch_read_fast(): the array is freed, each event handed on. */
static void batch_start_read(msm_lambda_t *l, msm_http_req_t *req, msm_event_t **evs, size_t n)
{
    lm_batch_t *b = batch_begin(l, req, n);
    for (size_t i = 0; i < n; i++) {
        if (b)
            batch_start_one(l, b, i, msm_event_id(evs[i]), evs[i], NULL);
        else
            msm__event_free(evs[i]);
    }
    free(evs);
    if (b)
        batch_started(b);
}

static void on_batch_push(msm_lambda_t *l, msm_http_req_t *req)
{
    size_t len;
    const char *body = msm_http_req_body(req, &len);
    if (!signature_ok(l, req, 1))
        return;
    const char *d = msm_http_req_header(req, "Msm-Deadline");
    long long deadline = d ? strtoll(d, NULL, 10) : 0;
    if (deadline < 0)
        deadline = 0;
    const char *subscription = msm_http_req_header(req, "Msm-Subscription");
    msm_event_t **evs;
    size_t n;
    if (msm__batch_read_fast(body, len, subscription, deadline, &evs, &n)) {
        batch_start_read(l, req, evs, n);
        return;
    }
    json_t *events = json_loadb(body, len, 0, NULL);
    if (!json_is_array(events)) {
        json_decref(events);
        reject(l, req, 400, "INVALID_ARGUMENT", "invalid", "a batch push is a JSON array");
        return;
    }
    lm_batch_t *b = batch_begin(l, req, json_array_size(events));
    size_t i;
    json_t *obj;
    json_array_foreach(events, i, obj)
    {
        if (!b)
            break;
        char why[160];
        msm_event_t *ev = msm__event_from_json(obj, subscription, deadline, why, sizeof(why));
        batch_start_one(l, b, i, json_string_value(json_object_get(obj, "id")), ev, why);
    }
    json_decref(events);
    if (b)
        batch_started(b);
}

static int is_batch(const msm_http_req_t *req)
{
    const char *ct = msm_http_req_header(req, "Content-Type");
    size_t n = sizeof(BATCH_MEDIA_TYPE) - 1;
    return ct && strncasecmp(ct, BATCH_MEDIA_TYPE, n) == 0 && (ct[n] == '\0' || ct[n] == ';' ||
                                                               ct[n] == ' ');
}

void msm__lambda_on_push(msm_http_req_t *req, void *opaque)
{
    msm_lambda_t *l = opaque;
    l->lm_last_push_us = msm_time_mono_us();
    if (l->lm_retiring && !l->lm_draining) /* served, then the client goes elsewhere */
        msm_http_add_header(req, "Connection", "close");
    if (l->lm_draining) {
        /* Close the connection too, so the router's next try opens one elsewhere. */
        msm_http_add_header(req, "Connection", "close");
        reject(l, req, 503, "SHUTTING_DOWN", "draining", "the lambda is shutting down");
        return;
    }
    if (is_batch(req)) {
        on_batch_push(l, req);
        return;
    }
    if (!signature_ok(l, req, 0))
        return;
    char why[160];
    msm_event_t *ev = msm__event_new(req, why, sizeof(why));
    if (!ev) {
        reject(l, req, 400, "INVALID_ARGUMENT", "invalid", why);
        return;
    }
    lm_handler_t *h = find_handler(l, msm_event_subscription(ev));
    if (!h) {
        snprintf(why, sizeof(why), "no handler for subscription \"%.100s\"",
                 msm_event_subscription(ev));
        msm__event_free(ev);
        reject(l, req, 404, "NOT_FOUND", "no_handler", why);
        return;
    }
    msm_ctx_t *ctx = ctx_new(l, h, ev, req);
    if (!ctx) {
        msm__event_free(ev);
        reject(l, req, 503, "UNAVAILABLE", "nomem", "out of memory");
        return;
    }
    ctx_start(ctx);
}

static msm_ctx_t *ctx_new(msm_lambda_t *l, lm_handler_t *h, msm_event_t *ev,
                          msm_http_req_t *req)
{
    msm_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->cx_lambda = l;
    ctx->cx_handler = h;
    ctx->cx_ev = ev;
    ctx->cx_req = req;
    ctx->cx_early_status = -1;
    ctx->cx_start_us = msm_time_mono_us();
    ctx->cx_traced = msm__event_trace(ev, &ctx->cx_span);
    msm_timer_init(&ctx->cx_deadline_timer);
    ctx_link(l, ctx);
    return ctx;
}

static void ctx_start(msm_ctx_t *ctx)
{
    if (past_deadline(ctx->cx_ev)) {
        /* The router gave up already: running the handler would only repeat work. */
        ctx->cx_handler_done = 1;
        answer(ctx, MSM_RETRY, 1);
        ctx_release(ctx);
        return;
    }
    run_handler(ctx);
}

void msm__lambda_cancel_all(msm_lambda_t *l)
{
    while (l->lm_ctxs) {
        msm_ctx_t *ctx = l->lm_ctxs;
        msm_log(MSM_LOG_WARN, FAC, "event %s: abandoned at shutdown", msm_event_id(ctx->cx_ev));
        ctx->cx_req = NULL;
        if (l->lm_pool && ctx->cx_in_handler) {
            /* Its handler thread still runs and may touch it: leave it to the exit. */
            l->lm_ctxs = ctx->cx_next;
            if (l->lm_ctxs)
                l->lm_ctxs->cx_prev = NULL;
            l->lm_inflight--;
            msm_loop_timer_stop(l->lm_loop, &ctx->cx_deadline_timer);
            continue;
        }
        if (!ctx->cx_handler_done && ctx->cx_cancel_cb)
            ctx->cx_cancel_cb(ctx, ctx->cx_cancel_opaque);
        ctx_free(ctx);
    }
}

/* ---- ctx accessors ---- */

int64_t msm_ctx_remaining_ms(const msm_ctx_t *ctx)
{
    int64_t d = msm_event_deadline_ms(ctx->cx_ev);
    if (d <= 0)
        return INT64_MAX;
    int64_t left = d - msm_time_unix_ms();
    return left > 0 ? left : 0;
}

const msm_event_t *msm_ctx_event(const msm_ctx_t *ctx)
{
    return ctx->cx_ev;
}

void *msm_ctx_opaque(const msm_ctx_t *ctx)
{
    return ctx->cx_lambda->lm_opaque;
}

msm_loop_t *msm_ctx_loop(const msm_ctx_t *ctx)
{
    return ctx->cx_lambda->lm_loop;
}

void msm_ctx_log(const msm_ctx_t *ctx, msm_log_level_t level, const char *fmt, ...)
{
    if (level < msm__log_threshold)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    msm__log_write(level, FAC, "%s (event=%s subscription=%s attempt=%d)", msg,
                   msm_event_id(ctx->cx_ev), msm_event_subscription(ctx->cx_ev),
                   msm_event_attempt(ctx->cx_ev));
}

void msm_ctx_set_error(msm_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->cx_error, sizeof(ctx->cx_error), fmt, ap);
    va_end(ap);
}

void msm_ctx_set_retry_after(msm_ctx_t *ctx, int64_t ms)
{
    ctx->cx_retry_after_ms = ms > 0 ? ms : 0;
}

void msm_ctx_set_overloaded(msm_ctx_t *ctx)
{
    ctx->cx_overloaded = 1;
}

void msm_ctx_on_cancel(msm_ctx_t *ctx, msm_ctx_cancel_t *cb, void *opaque)
{
    ctx->cx_cancel_cb = cb;
    ctx->cx_cancel_opaque = opaque;
}

msm_status_t msm_ctx_complete(msm_ctx_t *ctx, msm_status_t status)
{
    if (status != MSM_OK && status != MSM_FATAL)
        status = MSM_RETRY;
    if (ctx->cx_in_handler) {
        /* Completing before returning is the same as returning the status. */
        ctx->cx_early_status = status;
        return past_deadline(ctx->cx_ev) ? MSM_RETRY : status;
    }
    ctx->cx_handler_done = 1;
    msm_loop_timer_stop(ctx->cx_lambda->lm_loop, &ctx->cx_deadline_timer);
    msm_status_t told = answer(ctx, status, 0);
    ctx_release(ctx);
    return told;
}
