/* SPDX-License-Identifier: MIT */
/* The publish pipeline every publish form shares (JSON batch, single event and CloudEvents,
 * protobuf RPC, CDC push):
 *
 *   form parser -> fe_batch_t (events validated for form, limits)      400 / 413 / 415
 *   -> schema step: topic bound to a subject? validate every event against the latest
 *      version, convert JSON to the schema's wire form                  400 / 409 / 503
 *   -> idempotency step: claim each event's key, or find its first id  503
 *   -> one log append of every new event, durable                      503
 *   -> the form's done callback answers (ids and duplicate flags)
 *
 * Parsers are pure functions of their input (no fe_t, no I/O) so fuzz targets drive them. */
#ifndef MSM_PUB_INT_H
#define MSM_PUB_INT_H

#include "fe_int.h"

#include "msm/envelope.h"
#include "msm/id.h"
#include "msm/json.h"
#include "msm/trace.h"

#include <stdint.h>

/* Per-event field limits (frontend/README.md). */
#define FE_KEY_MAX_BYTES         1024
#define FE_IDEMPOTENCY_MAX_BYTES 256
#define FE_CONTENT_TYPE_MAX      255
#define FE_ATTRS_MAX             100
#define FE_ATTR_NAME_MAX         128
#define FE_ATTR_VALUE_MAX        1024
#define FE_DELAY_MAX_MS          (10LL * 366 * 24 * 3600 * 1000) /* ten years */
#define FE_DEFAULT_PRIORITY      5

/** One event as parsed: strings are borrowed from what the batch keeps alive. */
typedef struct {
    const char *key;              /**< "" when absent, as are the next two */
    const char *ordering_key;
    const char *idempotency_key;
    const char *content_type;     /**< NULL until known */
    Msm__V1__Event__AttributesEntry **attrs;
    size_t n_attrs;
    const uint8_t *payload;       /**< the wire bytes (NULL while only data is known) */
    size_t payload_len;
    uint8_t *owned;               /**< payload storage owned by the batch, or NULL */
    const json_t *data;           /**< the event's JSON value when it came as JSON */
    const char *data_field;       /**< error path of the payload: "data", ..., NULL = body */
    int64_t deliver_at_ms;
    int64_t deadline_ms;          /**< unix ms, 0 = none */
    const char *traceparent;      /**< the event's own trace context (body field), or NULL */
    const char *tracestate;
    int priority;
    int32_t schema_id;
    /* CDC origin (the batch's source and partition are the fe_pub_t's) */
    const char *cdc_entity;
    int64_t cdc_sequence;
    int cdc_operation;
} fe_event_t;

/** A request's events and everything their borrowed strings point into. */
typedef struct {
    fe_event_t *evs;
    size_t n;
    const char *list;             /**< error path of the list ("events", "changes"), NULL
                                       for a single event */
    const char *event_path;       /**< with no list: the error path of the one event inside
                                       a larger body ("event" of a schedule), NULL = the body */
    Msm__V1__Event__AttributesEntry *attr_entries;
    Msm__V1__Event__AttributesEntry **attr_ptrs;
    size_t attr_used, attr_cap;
    json_t *json;                 /**< a parsed body kept alive */
    void *pb;                     /**< an unpacked protobuf request kept alive */
    char *arena;                  /**< strings and payloads of the fast JSON parser */
    char **strings;               /**< copies (header values) */
    size_t nstrings;
    const char *traceparent;      /**< valid W3C trace context, or NULL */
    const char *tracestate;
    int64_t accepted_ms;          /**< the publish time (delays count from it); 0 = now */
} fe_batch_t;

/** A request header (for parsers that read headers). */
typedef struct {
    const char *name;
    const char *value;
} fe_header_t;

/** What parsers need to know of the frontend. */
typedef struct {
    size_t max_events;
    size_t max_event_bytes;
    int64_t now_ms;
} fe_parse_ctx_t;

/* ---- batch building (publish.c) ---- */

/** @brief Allocates @p n zeroed events with defaults and room for @p nattrs attributes.
 *  @returns MSM_OK or MSM_ERR_NOMEM. */
int fe_batch_init(fe_batch_t *b, size_t n, size_t nattrs);
/** @brief Frees everything the batch owns (not b itself). */
void fe_batch_free(fe_batch_t *b);
/** @brief Keeps a copy of @p s (length @p n) alive with the batch; NULL when out of memory. */
const char *fe_batch_keep(fe_batch_t *b, const char *s, size_t n);
/** @brief Adds attribute @p name = @p value to event @p ev (both borrowed). The event's
 *  attributes must be added consecutively. */
void fe_batch_attr(fe_batch_t *b, fe_event_t *ev, const char *name, const char *value);

/* ---- payloads given in JSON: errors at "data" / "data_base64" ---- */

/** @brief The event's payload is @p data: kept as JSON (@p keep_json: the topic's schema
 *  encodes it) or its compact text (owned), at most @p limit bytes. */
void fe_event_data(fe_event_t *ev, const json_t *data, int keep_json, size_t limit,
                   msm_json_err_t *e, msm_json_err_t *big);
/** @brief The event's payload is the base64 text @p b64 decoded (owned), at most @p limit
 *  bytes. */
void fe_event_data_base64(fe_event_t *ev, const char *b64, size_t limit, msm_json_err_t *e,
                          msm_json_err_t *big);

/* ---- shared field checks: errors into e (400) or big (413) at e's path ---- */

/** @brief An attribute @p name = @p value, errors at @p field (event's attribute count so
 *  far in @p count). */
void fe_check_attr(msm_json_err_t *e, msm_json_err_t *big, const char *field,
                   const char *name, const char *value, size_t count);
/** @brief The event's deadline (set) against its deliver_at: a deadline not after it is
 *  an error at @p field (the event could never be pushed). A deadline already past is
 *  accepted: the event is dead-lettered with DEADLINE_EXCEEDED (docs/publish.md). */
void fe_check_deadline(msm_json_err_t *e, const char *field, const fe_event_t *ev);
/** @brief The event's delay_ms (@p delay, -1 when absent or invalid; @p have_delay: the
 *  field was given), deliver_at and deadline (RFC 3339 texts or NULL) into @p out. */
void fe_event_timing(msm_json_err_t *e,
                     int64_t now_ms,
                     int have_delay,
                     int64_t delay,
                     const char *deliver_at,
                     const char *deadline,
                     fe_event_t *out);
/** @brief A media type such as type/subtype[; params]. */
int fe_media_type_ok(const char *ct);
/** @brief Same media type (parameters ignored, case-insensitive). */
int fe_same_media_type(const char *a, const char *b);
/** @brief The trace context headers of a request, when well formed. */
void fe_trace_context(fe_batch_t *b, const char *traceparent, const char *tracestate);
/** @brief An event's own trace context given at @p field / @p state_field (a body field or
 *  CloudEvents extension): a malformed one is an error, unlike a header. */
void fe_event_trace(fe_batch_t *b, fe_event_t *ev, msm_json_err_t *e, const char *field,
                    const char *traceparent, const char *state_field, const char *tracestate);

/* ---- parsers ---- */

/** @brief One event given as a JSON object inside another body (a schedule's "event"),
 *  validated exactly as one event of the JSON batch; errors at e's and big's current path.
 *  @p event is stolen (kept alive by the batch). @returns 0, 400 or 413. */
int fe_parse_json_event(const fe_parse_ctx_t *ctx, json_t *event, int keep_json,
                        fe_batch_t *b, msm_json_err_t *e, msm_json_err_t *big);

/** @brief The JSON batch body of POST /v1/topics/{t}:publish. @p body is stolen. When
 *  @p keep_json, events given as "data" keep their JSON value (the topic has a schema);
 *  otherwise their payload is its compact text.
 *  @returns 0 or the HTTP status of the errors in @p e (400) / @p big (413). */
int fe_parse_json_batch(const fe_parse_ctx_t *ctx, json_t *body, int keep_json,
                        fe_batch_t *b, msm_json_err_t *e, msm_json_err_t *big);

/** @brief The same for a topic without schema, in one pass over the raw @p body (no JSON
 *  tree): @returns 1 with the events in @p b when the body is valid and fe_parse_json_batch()
 *  would accept it with the same events, 0 (nothing to free) for anything else, including
 *  every error: fe_parse_json_batch() then decides and words the answer. */
int fe_parse_json_batch_fast(const fe_parse_ctx_t *ctx,
                             const char *body,
                             size_t len,
                             fe_batch_t *b);

/** @brief POST /v1/topics/{t}/events: one event from its body and headers (Msm-*,
 *  CloudEvents binary mode, or a structured application/cloudevents+json body).
 *  @returns 0, 400, 413 or 415 (unsupported content type), errors in @p e / @p big. */
int fe_parse_single(const fe_parse_ctx_t *ctx, const fe_header_t *hdrs, size_t nhdrs,
                    const uint8_t *body, size_t len, int keep_json, fe_batch_t *b,
                    msm_json_err_t *e, msm_json_err_t *big);

/** @brief The msm.v1.PublishRequest of POST /v1/publish; its topic in *topic (borrowed
 *  from the batch). @returns 0, 400 or 413. */
int fe_parse_pb_batch(const fe_parse_ctx_t *ctx, const uint8_t *data, size_t len,
                      fe_batch_t *b, const char **topic, msm_json_err_t *e,
                      msm_json_err_t *big);

/* ---- the pipeline ---- */

typedef struct fe_pub_s fe_pub_t;

/** The answer: @p status 200 with ids/dup filled, else @p error (the API.md body, stolen). */
typedef void fe_pub_done_cb(fe_pub_t *p, int status, json_t *error);

struct fe_pub_s {
    fe_call_t base;
    char *topic;
    char *subject;                  /**< the topic's schema subject, or NULL */
    const char *cdc_source;         /**< envelopes' cdc_source (borrowed), or NULL */
    const char *cdc_partition;      /**< CDC: envelopes' cdc_partition (borrowed) */
    const char *cdc_tag;            /**< CDC: the batch's token: the append is marked with it
                                         (msm/cdc_state.h); NULL: not marked */
    int append_sent;                /**< the log append was started (a failure after it may
                                         have stored some events) */
    fe_batch_t batch;
    char (*ids)[MSM_ID_STR_SIZE];
    unsigned char *dup;             /**< 1: a repeat; ids[i] is the first event's id */
    unsigned char *claimed;         /**< 1: this request holds the idempotency key */
    size_t nclaimed;
    int fin_status;                 /**< the answer held while the keys are settled */
    json_t *fin_error;
    const char *fin_result;
    uint64_t start_us;
    /* Trace context per event (trace.c): its traceparent in the envelope, and the spans
     * this request logs once the events are durable. */
    char (*tps)[MSM_TRACEPARENT_LEN + 1];
    msm_spans_t spans;              /**< per event: its own, sampled context's */
    msm_span_t req_span;            /**< the request's, under its traceparent header */
    int has_req_span;
    fe_pub_done_cb *done;
    void (*release)(fe_pub_t *p);   /**< frees the form's own state, may be NULL */
    /** Only validate and convert: @p done gets 200 after the schema step, nothing is claimed
     *  or appended and no publish is counted (a schedule's event, stored for later). */
    int prepare_only;
};

/**
 * @brief A pipeline request for @p topic (NULL: set p->topic before submitting, as CDC
 * does once the source is read) and its @p subject, @p size bytes
 * (>= sizeof(fe_pub_t), the form's state after it). Answers 500 itself and returns NULL
 * when out of memory.
 */
void *fe_pub_new(fe_t *fe, msm_http_req_t *req, size_t size, const char *topic,
                 const char *subject, fe_pub_done_cb *done, uint64_t start_us);

/** The 429 message of a spent publish quota. */
#define FE_QUOTA_SPENT "the publish quota of this principal (publish_per_s) is spent"
/** @brief Takes @p n events from the caller's publish quota. @returns 0, or 1 when it is
 *  spent: Retry-After is then on the answer, which the caller makes a 429. */
int fe_quota_spent(msm_http_req_t *req, size_t n);

/** @brief Gives each event of @p p its traceparent (p->tps) and starts the frontend's spans;
 *  a new trace is sampled with probability @p sample_ratio (pub_trace.c).
 *  @returns MSM_OK or MSM_ERR_NOMEM. */
int fe_pub_trace_begin(fe_pub_t *p, double sample_ratio);
/** @brief Logs the spans fe_pub_trace_begin() started: the events are durable. */
void fe_pub_trace_end(const fe_pub_t *p);

/** @brief The envelope fields event @p ev determines (topic, key, ordering key, attributes,
 *  payload, content type, schema id, deliver_at, deadline, priority, idempotency key), the
 *  rest zero; strings are borrowed from the event's batch. */
void fe_event_envelope(const fe_event_t *ev, const char *topic, Msm__V1__Event *env);
/** @brief The schema step of a CDC batch's event @p i (cdc_push.c): its change's payload
 *  from msm_cdc_payload(), as the scheduler's pull makes it. Errors at e's path. */
void fe_cdc_convert(fe_pub_t *p, const msm_schema_t *s, int id, size_t i, msm_json_err_t *e,
                    msm_json_err_t *big, size_t limit);

/** @brief Runs the pipeline over p->batch (parsed, ids not yet assigned). */
void fe_pub_submit(fe_pub_t *p);

/**
 * @brief What every form's handler does after its parser: answers the parser's failure
 * (@p status 400/413/415, @p events counted), or runs the pipeline over @p b (taken) with
 * the request's trace context. Deinitialises @p e and @p big either way.
 */
void fe_pub_run(fe_t *fe, msm_http_req_t *req, const char *topic, const char *subject,
                fe_pub_done_cb *done, uint64_t start_us, int status, fe_batch_t *b,
                msm_json_err_t *e, msm_json_err_t *big, size_t events);

/** @brief The parse context of this frontend (limits, now). */
fe_parse_ctx_t fe_parse_ctx(const fe_t *fe);

/** @brief Answers a parser's failure (400/413/415) and counts it. */
void fe_parse_failed(fe_t *fe, msm_http_req_t *req, const char *topic, int status,
                     msm_json_err_t *e, msm_json_err_t *big, size_t events, uint64_t start_us);

/** @brief Counts a finished publish request in the metrics. */
void fe_pub_count(fe_t *fe, const char *topic, const char *result, size_t events,
                  uint64_t start_us);

/** @brief {"results":[{"id","duplicate"}...]} of a finished pipeline. */
json_t *fe_pub_results(const fe_pub_t *p);

#endif
