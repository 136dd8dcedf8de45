/* SPDX-License-Identifier: MIT */
/* msm_client: publish to a topic over the frontend's HTTP API (API.md `POST
 * /v1/topics/{topic}:publish`) from a handler or any C program. One keep-alive connection
 * per client, batches split to the frontend's limits, and, inside a handler, the handled
 * event's trace context and deadline carried onto what it publishes:
 *
 *     msm_client_t *c = msm_client_new(NULL);              // MSM_FRONTEND_URL or :8080
 *     msm_message_t m = {.data = "{\"order\":42}", .key = "customer-7"};
 *     msm_publish_result_t r;
 *     if (msm_client_publish(c, "orders", &m, 1, &r) != MSM_OK)
 *         fprintf(stderr, "%s\n", msm_client_last_error(c)->message);
 *     msm_client_free(c);
 *
 * Blocking: every publish waits for the frontend's answer (it answers once every event is
 * durable). Inside a lambda, call it from handlers run on handler threads (`--threads`),
 * or keep the time it may block small (msm_client_publish_from() caps it by the event's
 * deadline): a handler on the event loop stalls the loop meanwhile.
 *
 * Threading: a client is not thread-safe; use one client per thread (each keeps its own
 * connection). Different clients may be used from different threads at once. */
#ifndef MSM_CLIENT_H
#define MSM_CLIENT_H

#include "msm/lambda.h" /* msm_event_t, and the status codes of msm/err.h */

#include <stddef.h>
#include <stdint.h>

typedef struct msm_client_s msm_client_t;

/** The frontend URL msm_client_new(NULL) uses when MSM_FRONTEND_URL is not set. */
#define MSM_CLIENT_DEFAULT_URL "http://127.0.0.1:8080"
/** Default total time of one request (connect, send, the frontend's durable append). */
#define MSM_CLIENT_DEFAULT_TIMEOUT_MS 30000
/** The frontend's default limits (docs/publish.md "Limits"): larger batches are split. */
#define MSM_CLIENT_DEFAULT_MAX_EVENTS     1000
#define MSM_CLIENT_DEFAULT_MAX_BODY_BYTES (1024 * 1024)

/** An event attribute (API.md `"attributes":{str:str}`). */
typedef struct {
    const char *name;
    const char *value;
} msm_attr_t;

/**
 * One event to publish; zero-initialise it and set what you need. Every pointer is
 * borrowed for the duration of the call. The payload is either @c data (JSON text, sent as
 * the event's `"data"`) or @c bytes (sent as `"data_base64"` with @c content_type); with
 * neither the event's data is JSON null.
 */
typedef struct {
    const char *data;         /**< JSON text (any JSON value), or NULL */
    const void *bytes;        /**< raw payload when data is NULL (may contain NULs) */
    size_t bytes_len;         /**< length of bytes */
    const char *content_type; /**< of bytes, e.g. "application/x-protobuf"; NULL = none */
    const char *key;          /**< "key", or NULL */
    const char *ordering_key; /**< "ordering_key", or NULL */
    const msm_attr_t *attrs;  /**< "attributes" */
    size_t n_attrs;
    int64_t delay_ms;            /**< "delay_ms" when > 0 */
    int64_t deliver_at_ms;       /**< "deliver_at" (unix ms, sent as RFC 3339) when > 0 */
    const char *idempotency_key; /**< "idempotency_key", or NULL */
    int priority;                /**< "priority" 0..9 when has_priority is set */
    int has_priority;            /**< 0 = the frontend's default (5) */
} msm_message_t;

/** What the frontend answered for one event, in request order. */
typedef struct {
    char id[64];   /**< the event id ("" when the event was not published) */
    int duplicate; /**< 1: an earlier event had the same idempotency key; id is that one's */
} msm_publish_result_t;

/** The last failure of a client (see msm_client_last_error()). */
typedef struct {
    int err;                /**< the msm status the call returned (MSM_OK after a success) */
    long http_status;       /**< the frontend's HTTP status, or 0 when it never answered */
    const char *code;       /**< the API error code (e.g. "INVALID_ARGUMENT"), or "" */
    const char *message;    /**< the API error message, or what went wrong locally; never NULL */
    const char *details;    /**< the API error's "details" as JSON text (event indexes are
                                 relative to the failed request, which began at published), or "" */
    size_t published;       /**< events (in order) of the call published before the failure */
    int64_t retry_after_ms; /**< the answer's Retry-After (429, 503), or 0 */
} msm_client_error_t;

/** Where a publish comes from (see msm_client_publish_opts()). Zero-initialise it. */
typedef struct {
    /** The W3C traceparent of the work that publishes: the events carry a child of it
     *  (same trace id and flags, a new span id). NULL, "" or malformed = none. */
    const char *traceparent;
    /** Unix ms after which the result is of no use: each request's timeout is capped to
     *  the time left, and nothing is sent once it has passed. 0 = none. */
    int64_t deadline_ms;
} msm_publish_opts_t;

/**
 * @brief Creates a client for the frontend at @p frontend_url (e.g. "http://host:8080"; a
 * trailing '/' is fine). Nothing is connected yet.
 * @param frontend_url copied; NULL = environment MSM_FRONTEND_URL, else
 *        MSM_CLIENT_DEFAULT_URL
 * @returns the client, or NULL when out of memory or the URL is not http:// or https://.
 * @remark The caller owns the client: free it with msm_client_free().
 */
msm_client_t *msm_client_new(const char *frontend_url);

/** @brief Closes the client's connection and frees it (safe with NULL). */
void msm_client_free(msm_client_t *c);

/** @brief Total time allowed for one request; 0 = MSM_CLIENT_DEFAULT_TIMEOUT_MS. */
void msm_client_set_timeout_ms(msm_client_t *c, int64_t timeout_ms);

/**
 * @brief Sends `Authorization: Bearer <token>` with every request (API.md "Security").
 * @param token copied; NULL or "" = no Authorization header
 * @returns MSM_OK, MSM_ERR_INVALID (a control character in it) or MSM_ERR_NOMEM.
 */
int msm_client_set_token(msm_client_t *c, const char *token);

/**
 * @brief The largest request the client sends: at most @p max_events events and, when
 * events allow, @p max_body_bytes of body (an event larger than that alone is still sent,
 * alone). Set them to the frontend's `publish.max_events` and `http.max_body_bytes`
 * when those differ from the defaults. 0 = the default.
 */
void msm_client_set_batch_limits(msm_client_t *c, size_t max_events, size_t max_body_bytes);

/**
 * @brief Publishes @p n events to @p topic, blocking until the frontend answered: one
 * request when they fit the batch limits, else several in order (each all-or-nothing;
 * a failure stops the call and msm_client_last_error()->published says how many went).
 * @param msgs the events (borrowed)
 * @param results n entries filled in request order (may be NULL)
 * @returns MSM_OK; MSM_ERR_INVALID (bad argument, a message whose data is not JSON, or a
 * 400/415 answer), MSM_ERR_NOTFOUND (404: no such topic), MSM_ERR_TOOLARGE (413),
 * MSM_ERR_DENIED (401, 403), MSM_ERR_CONFLICT (409), MSM_ERR_BACKEND (429, 503 or another
 * status: nothing of that request was published), MSM_ERR_TIMEOUT (no answer in time: the
 * request's events may or may not be published; idempotency keys make a retry safe),
 * MSM_ERR_IO (no connection), MSM_ERR_NOMEM.
 */
int msm_client_publish(msm_client_t *c,
                       const char *topic,
                       const msm_message_t *msgs,
                       size_t n,
                       msm_publish_result_t *results);

/** @brief msm_client_publish() with a trace parent and a deadline (@p opts may be NULL). */
int msm_client_publish_opts(msm_client_t *c,
                            const char *topic,
                            const msm_message_t *msgs,
                            size_t n,
                            msm_publish_result_t *results,
                            const msm_publish_opts_t *opts);

/**
 * @brief Publishes from a handler: msm_client_publish_opts() with @p parent's traceparent
 * and deadline (msm_event_traceparent(), msm_event_deadline_ms()), so the events join the
 * handled event's trace and the call gives up when the handler's time is up
 * (MSM_ERR_TIMEOUT). @p parent may be NULL (then as msm_client_publish()); from a ctx,
 * pass msm_ctx_event(ctx).
 */
int msm_client_publish_from(msm_client_t *c,
                            const msm_event_t *parent,
                            const char *topic,
                            const msm_message_t *msgs,
                            size_t n,
                            msm_publish_result_t *results);

/**
 * @brief The last call's outcome: after a failure its status, HTTP status, API error code,
 * message and details. Borrowed: valid until the next call on @p c.
 */
const msm_client_error_t *msm_client_last_error(const msm_client_t *c);

/** @brief Connections the client has opened so far (1 while keep-alive holds). */
uint64_t msm_client_connects(const msm_client_t *c);

/**
 * @brief Derives a child of the W3C traceparent @p parent: same version, trace id and
 * flags, a new random span id ("00-<trace id>-<span id>-<flags>").
 * @param out at least 56 bytes
 * @returns MSM_OK, or MSM_ERR_INVALID when @p parent is not a valid traceparent.
 */
int msm_client_child_traceparent(const char *parent, char *out, size_t out_size);

#endif
