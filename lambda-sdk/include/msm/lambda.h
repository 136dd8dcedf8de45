/* SPDX-License-Identifier: MIT */
/* libmsm-lambda: write handlers, register them by subscription, and let msm_lambda_main()
 * serve the router's pushes (CloudEvents 1.0 binary mode over HTTP, API.md "Push to
 * lambdas") until SIGTERM:
 *
 *     static msm_status_t on_order(const msm_event_t *ev, msm_ctx_t *ctx) { ...; return MSM_OK; }
 *     int main(int argc, char **argv) {
 *         msm_lambda_t *l = msm_lambda_new("orders-lambda");
 *         msm_lambda_on(l, "orders-sub", on_order);        // by subscription, "*" = any
 *         return msm_lambda_main(l, argc, argv);           // serves until SIGTERM
 *     }
 *
 * A batch push (max_batch_events > 1: `application/cloudevents-batch+json`, API.md "Batch
 * push") calls the handler once per event, each with its own ctx, and answers the router
 * `{"results":[{"id","status"}]}` once every event has its verdict.
 *
 * Processes: msm_lambda_main() is a supervisor (docs/lambda.md) that runs the lambda in
 * worker processes — this same binary started again — sharing the port: between
 * --min-workers and --max-workers as the load asks, each restarted when it dies or hangs,
 * and --canary's binary on a share of them until it is promoted or rolled back. Hooks and
 * handlers run in the workers; a worker's state is its own.
 *
 * Threading in a worker: one event loop; hooks run on it. With --threads 0 (the default)
 * handlers run on the loop too and must not block: to answer later one returns MSM_LATER
 * and calls msm_ctx_complete() from a loop callback (a timer, an fd). With --threads N,
 * handlers run on N handler threads and may block (each holds only its thread); from
 * there, use the msm_ctx_*() calls about the invocation but not msm_ctx_loop() (the loop
 * is not thread-safe), and a handler returning MSM_LATER must complete on the loop. */
#ifndef MSM_LAMBDA_H
#define MSM_LAMBDA_H

#include "msm/config.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/loop.h"

#include <stddef.h>
#include <stdint.h>

typedef struct msm_lambda_s msm_lambda_t;
/** One delivery as the handler sees it (read-only, owned by the SDK). */
typedef struct msm_event_s msm_event_t;
/** One invocation: deadline, logger, late completion (owned by the SDK). */
typedef struct msm_ctx_s msm_ctx_t;

/**
 * What a handler answers. MSM_OK is msm/err.h's 0 (MSM_LAMBDA_OK names the same value).
 * The router learns it from the HTTP answer: MSM_OK → 200; MSM_RETRY → 503 with
 * `Msm-Status: retry` (delivered again after backoff); MSM_FATAL → 500 with
 * `Msm-Status: fatal` (dead-lettered now, no retry). Any other value counts as MSM_RETRY.
 */
typedef int msm_status_t;
enum {
    MSM_LAMBDA_OK = MSM_OK, /**< handled */
    MSM_RETRY = 1,          /**< transient failure: try again later */
    MSM_FATAL = 2,          /**< this event can never succeed: dead-letter it */
    /** The handler answers later with msm_ctx_complete(); the event and ctx stay valid
     *  until then. */
    MSM_LATER = 3,
};

/** A handler. @p ev and @p ctx are valid during the call (and, after MSM_LATER, until
 *  msm_ctx_complete()). */
typedef msm_status_t msm_handler_t(const msm_event_t *ev, msm_ctx_t *ctx);

/** A start or stop hook (see msm_lambda_on_start()). @returns 0, or non-zero to abort start. */
typedef int msm_lambda_hook_t(msm_lambda_t *l, void *opaque);

/** Called when the SDK abandons an invocation still awaiting msm_ctx_complete() (forced
 *  shutdown): release what the invocation holds; never call msm_ctx_complete() after it. */
typedef void msm_ctx_cancel_t(msm_ctx_t *ctx, void *opaque);

/* ---- the lambda ---- */

/**
 * @brief Creates a lambda.
 * @param name shown in logs, /debug/info and --help (copied)
 * @returns the lambda, or NULL when out of memory.
 */
msm_lambda_t *msm_lambda_new(const char *name);

/**
 * @brief Routes deliveries of @p subscription to @p handler. "*" catches the subscriptions
 * no other handler names; a delivery nobody handles is answered 404 (retriable).
 * Registering the same subscription again replaces its handler.
 * @returns MSM_OK, MSM_ERR_INVALID (NULL or empty argument, or already serving),
 * MSM_ERR_NOMEM.
 */
int msm_lambda_on(msm_lambda_t *l, const char *subscription, msm_handler_t *handler);

/** @brief Sets the pointer msm_ctx_opaque() gives handlers (the lambda's own state). */
void msm_lambda_set_opaque(msm_lambda_t *l, void *opaque);

/**
 * @brief Adds a secret Msm-Signature may be signed with, besides the comma-separated ones of
 * `--secret` (any one matching is enough: add the new secret before the subscription
 * switches to it, drop the old one after). With at least one secret every push must be
 * signed (docs/push.md "Signatures"). Never shown in /debug/info or logs.
 * @param secret copied; unlike `--secret`'s items it may contain commas
 * @returns MSM_OK, MSM_ERR_INVALID (NULL or empty secret, or already serving),
 * MSM_ERR_NOMEM.
 */
int msm_lambda_add_secret(msm_lambda_t *l, const char *secret);

/**
 * @brief Adds the lambda's own settings: they get flags, MSM_* environment variables,
 * config-file keys and --help rows exactly like the SDK's own (msm/config.h).
 * msm_lambda_main() fills @p conf before the start hooks run, and frees its strings
 * (msm_conf_free()) after the stop hooks.
 * @param defs the table (borrowed: must outlive the lambda, e.g. a static array); offsets
 *        are relative to @p conf and names must not clash with the SDK's
 * @param conf the struct they fill (borrowed)
 * @param conf_size sizeof(*conf)
 * @returns MSM_OK, MSM_ERR_INVALID or MSM_ERR_NOMEM.
 */
int msm_lambda_add_conf(
    msm_lambda_t *l, const msm_conf_def_t *defs, size_t ndefs, void *conf, size_t conf_size);

/**
 * @brief Hooks run by msm_lambda_main(): start hooks after the settings are loaded and the
 * port is bound, before the first request (a non-zero return aborts: main returns 1);
 * stop hooks after the last invocation ended. Both in registration order, on the loop thread.
 * @returns MSM_OK or MSM_ERR_NOMEM.
 */
int msm_lambda_on_start(msm_lambda_t *l, msm_lambda_hook_t *hook, void *opaque);
int msm_lambda_on_stop(msm_lambda_t *l, msm_lambda_hook_t *hook, void *opaque);

/** @brief The loop msm_lambda_main() runs (NULL before it starts): for timers in hooks. */
msm_loop_t *msm_lambda_loop(msm_lambda_t *l);

/** @brief Handler threads per worker (--threads; 0 = handlers run on the loop). Valid from
 *  the start hooks on. */
int msm_lambda_threads(const msm_lambda_t *l);

/** @brief The HTTP port actually bound (0 before msm_lambda_main() bound it). */
int msm_lambda_port(const msm_lambda_t *l);

/**
 * @brief Parses the flags, serves HTTP until SIGTERM or SIGINT, then drains: stops
 * accepting, answers new requests on open connections 503, lets in-flight invocations
 * finish (at most --drain-timeout-ms), runs the stop hooks. A second signal stops at once.
 * Flags: run with --help. --help and --version print and return 0.
 * @returns 0 after a clean stop; 1 when it could not start (bind failed, a start hook
 * failed) or was forced to stop; 2 for bad flags or settings (one line on stderr).
 * @remark Takes ownership of @p l: it is freed before returning.
 */
int msm_lambda_main(msm_lambda_t *l, int argc, char **argv);

/** @brief Frees a lambda that never reached msm_lambda_main() (safe with NULL). */
void msm_lambda_free(msm_lambda_t *l);

/* ---- the event (CloudEvents binary-mode request, API.md) ---- */

/** @brief ce-id: the event id, the same on every attempt. Never NULL. */
const char *msm_event_id(const msm_event_t *ev);
/** @brief The topic of a ce-source `/msm/topics/{topic}`, else "" (e.g. CDC sources, and
 *  events published as CloudEvents: their ce-source is the producer's). */
const char *msm_event_topic(const msm_event_t *ev);
/** @brief ce-source as sent: the producer's own for an event published as a CloudEvent,
 *  else `/msm/topics/{topic}` or `/msm/cdc/{source}`; or "". */
const char *msm_event_source(const msm_event_t *ev);
/** @brief ce-type, or "". */
const char *msm_event_type(const msm_event_t *ev);
/** @brief ce-subject (the producer's, for an event published as a CloudEvent), or "". */
const char *msm_event_subject(const msm_event_t *ev);
/** @brief ce-dataschema (the producer's, for an event published as a CloudEvent), or "". */
const char *msm_event_dataschema(const msm_event_t *ev);
/** @brief ce-msmsourceid: the producer's own ce-id of an event published as a CloudEvent
 *  (msm_event_id() is msm's id, unique per publish), or "". */
const char *msm_event_source_id(const msm_event_t *ev);
/**
 * @brief The CloudEvents extension @p name (header `ce-<name>`; a member of the event in a
 * batch push), or NULL when absent. Context attributes (id, source, subject, ...) and
 * msmsourceid have their own accessors and are not extensions here.
 */
const char *msm_event_extension(const msm_event_t *ev, const char *name);
/** @brief Number of CloudEvents extensions. */
size_t msm_event_extension_count(const msm_event_t *ev);
/**
 * @brief The extension at @p index (0 .. count-1), in the order they arrived.
 * @returns MSM_OK, or MSM_ERR_NOTFOUND when @p index is out of range.
 */
int msm_event_extension_at(const msm_event_t *ev, size_t index, const char **name,
                           const char **value);
/** @brief ce-time as unix ms, or 0 when absent or not RFC 3339. */
int64_t msm_event_time_ms(const msm_event_t *ev);
/** @brief Msm-Subscription, or "" when absent. */
const char *msm_event_subscription(const msm_event_t *ev);
/** @brief Msm-Key, or "" when the event has no key. */
const char *msm_event_key(const msm_event_t *ev);
/** @brief Msm-Ordering-Key, or "" when none. */
const char *msm_event_ordering_key(const msm_event_t *ev);
/** @brief traceparent (W3C trace context), or "". */
const char *msm_event_traceparent(const msm_event_t *ev);
/** @brief Msm-Attempt: 1 on the first delivery. */
int msm_event_attempt(const msm_event_t *ev);
/** @brief Msm-Deadline (unix ms) after which the router stops waiting, or 0 when none. */
int64_t msm_event_deadline_ms(const msm_event_t *ev);
/** @brief Content-Type of the payload, or "" when absent. */
const char *msm_event_content_type(const msm_event_t *ev);
/**
 * @brief The payload (the request body).
 * @param len receives its length (may be NULL)
 * @returns the bytes, NUL-terminated for convenience (never NULL; "" when empty).
 */
const void *msm_event_payload(const msm_event_t *ev, size_t *len);
/**
 * @brief The attribute @p name (header `Msm-Attr-<name>`), or NULL when absent. An exact
 * name match wins; otherwise the first case-insensitive one (HTTP header names are).
 */
const char *msm_event_attr(const msm_event_t *ev, const char *name);
/** @brief Number of attributes. */
size_t msm_event_attr_count(const msm_event_t *ev);
/**
 * @brief The attribute at @p index (0 .. count-1), in the order the headers arrived.
 * @returns MSM_OK, or MSM_ERR_NOTFOUND when @p index is out of range.
 */
int msm_event_attr_at(const msm_event_t *ev, size_t index, const char **name, const char **value);

/* ---- the invocation context ---- */

/** @brief Milliseconds left before the deadline (0 once passed; INT64_MAX when none). */
int64_t msm_ctx_remaining_ms(const msm_ctx_t *ctx);
/** @brief The event of this invocation (for completions after MSM_LATER). */
const msm_event_t *msm_ctx_event(const msm_ctx_t *ctx);
/** @brief The lambda's pointer from msm_lambda_set_opaque(). */
void *msm_ctx_opaque(const msm_ctx_t *ctx);
/** @brief The loop the invocation runs on: start timers or watch fds there. */
msm_loop_t *msm_ctx_loop(const msm_ctx_t *ctx);

/**
 * @brief Logs one line (facility "lambda") tagged with the event id, subscription and
 * attempt. The level is checked before formatting.
 */
void msm_ctx_log(const msm_ctx_t *ctx, msm_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * @brief Sets the message of a failure answer (the router records it as the task's
 * last_error). Last call wins.
 */
void msm_ctx_set_error(msm_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * @brief Asks the router to slow this subscription down: a MSM_RETRY answer then carries
 * `Retry-After` (seconds, rounded up) and status 429 instead of 503. 0 = no push-back.
 */
void msm_ctx_set_retry_after(msm_ctx_t *ctx, int64_t ms);

/**
 * @brief Says the endpoint is overloaded without naming a time: a MSM_RETRY answer then has
 * status 429 and no `Retry-After` (error code OVERLOADED), so the router retries the event
 * after its backoff and lowers the subscription's concurrency, without holding it. A retry
 * after set with msm_ctx_set_retry_after() wins. No effect on other answers, nor in a batch
 * push (whose answer is 200: the event's result is "retry").
 */
void msm_ctx_set_overloaded(msm_ctx_t *ctx);

/**
 * @brief Finishes an invocation whose handler returned MSM_LATER.
 * @param status MSM_OK, MSM_RETRY or MSM_FATAL (anything else counts as MSM_RETRY)
 * @returns the status the router actually got: @p status, or MSM_RETRY when the deadline
 * had passed and the SDK had already answered retry.
 * @remark Call exactly once, on the loop thread; @p ctx and its event are freed by it.
 */
msm_status_t msm_ctx_complete(msm_ctx_t *ctx, msm_status_t status);

/** @brief Sets what to call if the SDK abandons this MSM_LATER invocation (see
 *  msm_ctx_cancel_t). */
void msm_ctx_on_cancel(msm_ctx_t *ctx, msm_ctx_cancel_t *cb, void *opaque);

#endif
