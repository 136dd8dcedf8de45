/* SPDX-License-Identifier: MIT */
/* The router's internals shared by its files: the router, one state per subscription, one
 * per dispatch record, one per task (delivery) and one per HTTP request, and the steps a
 * delivery goes through:
 *
 *   router.c      registry → per-subscription status.<sub> ensure and consumer, stop/drain
 *   push.c        dispatch record → deliveries → requests (one task, or a batch) → outcome
 *   batch_push.c  max_batch_events > 1: the structured CloudEvents batch body and the
 *                 per-event results of the answer (API.md "Batch push")
 *   outcome.c     outcomes → one OutcomeBatch per subscription and loop turn → record acks
 *
 * Filters run before anything is stored (the scheduler), pacing in flowcontrol; health and
 * locality will slot in inside balance.c. */
#ifndef RT_INT_H
#define RT_INT_H

#include "router.h"
#include "canary.h"

#include "msm/trace.h"
#include "msm/envelope.h"
#include "msm/http_client.h"
#include "msm/registry.h"
#include "msm/schema_store.h"
#include "msm/signature.h"
#include "msm/time.h"

#include <stdint.h>

#define RT_GROUP "router"
#define RT_FACILITY "router"

typedef struct rt_sub_s rt_sub_t;
typedef struct rt_record_s rt_record_t;
typedef struct rt_delivery_s rt_delivery_t;
typedef struct rt_req_s rt_req_t;
typedef struct rt_batch_s rt_batch_t;
typedef struct rt_retired_s rt_retired_t;

/** The kinds counted in metrics, indexed by Msm__V1__OutcomeKind. */
#define RT_KINDS 5

/** Room for an outcome's error text (longer ones are cut). */
#define RT_ERROR_MAX 256

/** Settings replaced while deliveries still point into them (endpoint URLs). */
struct rt_retired_s {
    rt_retired_t *next;
    msm_sub_t *conf;
};

/** One endpoint's health as this router sees it (health.c). */
typedef struct {
    rt_sub_t *sub;
    char *url;
    msm_health_t health;      /**< own copy; path NULL: no active check */
    int healthy;              /**< the active checks' verdict (1 until they say otherwise) */
    int check_oks, check_fails; /**< consecutive check results */
    int push_fails;           /**< consecutive pushes without an answer */
    int ejections;            /**< passive ejections so far (each one lasts longer) */
    int64_t ejected_until_ms;
    int in_flight;            /**< requests to it in flight */
    char reason[160];         /**< why it is not used, for the stats */
    msm_timer_t timer;        /**< the next active check */
    msm_http_call_t *check;   /**< the check in flight */
} rt_ep_t;

/** A subscription's delivery canary as this router runs it (canary.c). */
typedef struct {
    rt_canary_state_t state;  /**< NONE when the settings name no canary */
    char *version;            /**< the canary version the windows and state are about */
    int min_events;           /**< the windows were sized for it */
    double credit;            /**< msm__rt_canary_split() */
    rt_window_t win[2];       /**< outcomes: [0] baseline, [1] canary */
    void *token;              /**< a state read or write in flight (canary.c), else NULL */
    msm_metric_child_t *m_rollbacks, *m_state;
} rt_canary_t;

/** One subscription: its own copy of the settings, its consumer and its deliveries. */
struct rt_sub_s {
    rt_sub_t *next;
    router_t *rt;
    char *name;
    char *status_stream;      /**< "status.<name>" */
    msm_sub_t *conf;          /**< own deep copy; NULL once gone from the registry */
    json_t *conf_json;        /**< to notice changes */
    msm_http_tls_t *tls;      /**< conf->push_tls made once per change, for every push and
                                   health check; NULL: none */
    rt_retired_t *retired;    /**< older settings, freed once nothing is live */
    int status_ready;         /**< status.<name> exists: consuming may start */
    void *ensure_token;       /**< status.<name> ensure in flight */
    msm_consumer_t *consumer; /**< NULL while not consuming */
    int consumer_max;         /**< the max_unacked it was created with */
    size_t live;              /**< deliveries taken whose outcome is not durable yet */
    int in_http;              /**< requests in flight, at most conf->max_concurrency */
    rt_delivery_t *queue;     /**< taken, waiting for a free request slot */
    rt_delivery_t *queue_tail;
    rt_delivery_t *finished;  /**< outcomes waiting for the next append, oldest first */
    rt_delivery_t *finished_tail;
    size_t nfinished;
    int status_appending;     /**< its status appends in flight (outcomes wait behind one) */
    rt_req_t *idle_reqs;      /**< requests kept for reuse (their buffers with them) */
    int nidle_reqs;
    int *wrr;                 /**< smooth weighted round robin: current weight per endpoint */
    rt_ep_t *eps;             /**< health per endpoint, parallel to conf->endpoints */
    size_t neps;
    msm_timer_t hold_timer;   /**< no endpoint usable: look again then */
    int64_t hold_at_ms;
    msm_metric_child_t *m_kind[RT_KINDS];
    msm_metric_child_t *m_latency;
    msm_metric_child_t *m_in_flight;
    rt_canary_t canary;
};

/** One dispatch record (a msm.v1.TaskBatch) from its consumption to its acknowledgement,
 *  which waits until the outcome of every task in it is durable. */
struct rt_record_s {
    rt_record_t *next, *prev;   /**< in router.records */
    rt_sub_t *sub;
    msm_stream_msg_t *msg;      /**< owned by sub->consumer until acknowledged */
    Msm__V1__TaskBatch *batch;  /**< unpacked into arena */
    msm_arena_t *arena;         /**< the batch's memory */
    rt_delivery_t *items;       /**< one per task, one allocation */
    size_t n;
    size_t open;                /**< deliveries whose outcome is not durable yet */
};

/** One task of a record, from its record's consumption to its outcome being durable. */
struct rt_delivery_s {
    rt_delivery_t *next, *prev; /**< in sub.queue, router.converting or sub.finished */
    rt_record_t *rec;
    rt_sub_t *sub;
    Msm__V1__Task *task;        /**< borrowed from rec->batch */
    const char *endpoint;       /**< URL pushed to (borrowed from the settings), or "" */
    Msm__V1__OutcomeKind kind;
    int http_status;
    int64_t latency_ms;
    int64_t retry_after_ms;
    int64_t finished_at_ms;
    char *body;                 /**< delivery_format "json": the payload as JSON, else NULL */
    size_t body_len;
    msm_span_t *span;           /**< the router's span of a sampled event, from its first
                                     send to its outcome (docs/tracing.md); else NULL */
    char error[RT_ERROR_MAX];
};

/** One HTTP request (one task, or a batch of up to max_batch_events), kept for reuse with
 *  its buffers so that a push allocates nothing once the subscription is warm. */
struct rt_req_s {
    rt_req_t *next, *prev;      /**< in router.sending, or sub.idle_reqs */
    rt_sub_t *sub;
    msm_http_call_t *call;      /**< while in flight */
    rt_delivery_t **items;
    size_t n, cap;
    const char *endpoint;
    msm_http_header_t *h;       /**< the request's headers */
    size_t nh, hcap;
    msm_buf_t text;             /**< header names and values built for this request */
    msm_buf_t body;             /**< batch push: the JSON array */
    char attempt[16];
    char deadline[24];
    int64_t deadline_ms;        /**< the push deadline (Msm-Deadline), unix ms */
    uint32_t timeout_ms;        /**< the HTTP timeout: from the start until deadline_ms */
    char time[MSM_TIME_RFC3339_SIZE];
    char signature[MSM_SIGNATURE_HEADER_SIZE];
};

/** The outcomes of one subscription appended together (one status.<sub> record). */
struct rt_batch_s {
    rt_batch_t *next, *prev;
    router_t *rt;          /**< NULL once orphaned by router_free() */
    rt_sub_t *sub;
    rt_delivery_t **items;
    size_t n;
    int appending;         /**< an append is in flight */
    uint32_t failures;     /**< consecutive failed appends (backoff) */
    msm_timer_t retry_timer;
};

/** A callback token for a stream operation that may outlive the router. */
typedef struct {
    router_t *rt; /**< NULL once the router is gone */
    rt_sub_t *sub;
} rt_token_t;

struct router_s {
    router_env_t env;
    char *member;
    router_conf_t conf;
    msm_registry_t *registry;
    msm_http_client_t *http;
    rt_sub_t *subs;
    rt_record_t *records;    /**< every record taken and not yet acknowledged */
    rt_req_t *sending;       /**< HTTP requests in flight */
    rt_delivery_t *converting; /**< waiting for a schema to turn the payload into JSON */
    msm_schema_store_t *schemas;
    int freeing;             /**< router_free() runs: late callbacks do nothing */
    rt_batch_t *batches;     /**< appends in flight or waiting to retry */
    size_t live;             /**< deliveries alive, all subscriptions */
    size_t in_http;          /**< push requests in flight, all subscriptions */
    int send_due;            /**< records came in covered by the registry: send before sleeping */
    int stopping;
    msm_timer_t retry_timer; /**< status ensure / consumer creation retries */
    msm_timer_t report_timer; /**< each second: the endpoints' health for the stats */
    msm_daemon_t *daemon;    /**< the daemon it runs in (NULL in tests): the drain's length */
    msm_buf_t packed;        /**< an OutcomeBatch being packed (copied by the append) */
    Msm__V1__DeliveryOutcome *outs; /**< scratch for packing */
    Msm__V1__DeliveryOutcome **out_ptrs;
    size_t outs_cap;
    msm_metric_t *m_deliveries, *m_latency, *m_in_flight;
    msm_metric_t *m_canary_rollbacks, *m_canary_state;
    msm_metric_child_t *m_invalid, *m_append_failures;
};

/* ---- router.c ---- */
/** A delivery's outcome is durable (@p ack), or will never be (its subscription is gone):
 *  counts it down, acknowledges its record when it was the last (only with @p ack), and
 *  reconciles its sub. */
void msm__rt_delivery_done(router_t *rt, rt_delivery_t *d, int ack);
/** Frees a record, its deliveries and its batch (not its message). */
void msm__rt_record_free(router_t *rt, rt_record_t *rec);
/** The log lease of a subscription's dispatch consumer: longer than any push of it. */
uint64_t msm__rt_lease_ms(const msm_sub_t *conf);

/* ---- health.c ---- */
/** @brief New settings: per-endpoint state follows by URL, active checks start or stop. */
int msm__rt_health_reset(rt_sub_t *sub);
/** @brief Stops the checks and frees the state. */
void msm__rt_health_free(rt_sub_t *sub);
/** @brief 1 when endpoint @p i may take requests now (healthy, not ejected). */
int msm__rt_health_usable(const rt_sub_t *sub, size_t i, int64_t now);
/** @brief 1 when any endpoint may take requests now. */
int msm__rt_health_any(const rt_sub_t *sub, int64_t now);
/** @brief A request left for @p url. */
void msm__rt_health_sent(rt_sub_t *sub, const char *url);
/** @brief What a push to @p url showed (passive health, in flight). */
void msm__rt_health_observe(rt_sub_t *sub, const char *url, const msm_http_result_t *res);
/** @brief Writes this router's view of the subscription's endpoints for the stats API. */
void msm__rt_health_report(rt_sub_t *sub);
/** @brief Looks at the held queue again at @p at_ms (unix ms) at the latest. */
void msm__rt_hold_arm(rt_sub_t *sub, int64_t at_ms);

/* ---- balance.c ---- */
/** @brief Resets the balancer after the endpoints changed. @returns MSM_OK or NOMEM. */
int msm__rt_balance_reset(rt_sub_t *sub);
/** @brief The endpoint for the next request, or NULL when there is none. */
const msm_endpoint_t *msm__rt_balance_pick(rt_sub_t *sub);

/* ---- canary.c ---- */
/** @brief Registers the canary metrics. @returns MSM_OK or an error. */
int msm__rt_canary_metrics(router_t *rt);
/** @brief New settings: a new canary version (or none) starts afresh, windows emptied. */
int msm__rt_canary_reset(rt_sub_t *sub);
/** @brief Frees the windows; a read or write in flight finds the subscription gone. */
void msm__rt_canary_free(rt_sub_t *sub);
/** @brief 1 when endpoint @p i of the settings is of the canary version. */
int msm__rt_canary_is(const rt_sub_t *sub, size_t i);
/** @brief Which endpoints the next request may go to: -1 any, 0 the baseline's, 1 the
 *  canary's (advances the split while the canary is active). */
int msm__rt_canary_side(rt_sub_t *sub);
/** @brief Counts a finished push to @p url in its side's window (NOT_PUSHED is not). */
void msm__rt_canary_observe(rt_sub_t *sub, const char *url, Msm__V1__OutcomeKind kind,
                            int64_t latency_ms);
/** @brief Each second: reads the shared state, judges the windows (and rolls back),
 *  reports them for the stats. */
void msm__rt_canary_tick(rt_sub_t *sub);

/* ---- push.c ---- */
/** @brief Takes one dispatch record of @p sub: decodes it and queues its tasks (or finishes
 *  them at once when they cannot be pushed). Call msm__rt_send_queued() after a run of
 *  records, so that consecutive records share batch requests. */
void msm__rt_take(rt_sub_t *sub, msm_stream_msg_t *msg);
/** @brief Starts requests for queued deliveries while the subscription has free slots. */
void msm__rt_send_queued(rt_sub_t *sub);
/** @brief msm__rt_send_queued() for every subscription with work, highest priority first:
 *  when the router's --push.max_in_flight is the bound, the free slots go to them first. */
void msm__rt_send_by_priority(router_t *rt);
/** @brief Drops the deliveries queued and the idle requests (router_free()). */
void msm__rt_queue_drop(rt_sub_t *sub);
/** @brief Frees a request and its buffers. */
void msm__rt_req_free(rt_req_t *req);
/** @brief 1 when @p s is an HTTP token (a valid header name). */
int msm__rt_token_ok(const char *s);
/** @brief 1 when @p s may be sent as a header value (no CR, LF or other controls). */
int msm__rt_value_ok(const char *s);
/** @brief ce-type of @p ev: attribute "type" when safe, else "msm.event". */
const char *msm__rt_ce_type(const Msm__V1__Event *ev);
/** @brief Bytes ce-source of @p ev needs, NUL included. */
size_t msm__rt_ce_source_size(const Msm__V1__Event *ev);
/** @brief Writes ce-source of @p ev: "/msm/topics/<topic>" or "/msm/cdc/<source>". */
void msm__rt_ce_source(const Msm__V1__Event *ev, char *out, size_t n);
/** @brief 1 when @p ev was published as a CloudEvent (it carries the producer's ce_id). */
int msm__rt_ce_origin(const Msm__V1__Event *ev);
/** @brief 1 when attribute @p name of @p ev is one of its producer's CloudEvents extensions:
 *  a valid extension name, not a context attribute or one of msm's, listed in ce_extensions
 *  (an older CloudEvent without that list: any such name). */
int msm__rt_ce_extension(const Msm__V1__Event *ev, const char *name);
/** @brief 1 when @p name may go out as a CloudEvents extension: lower-case letters and
 *  digits, at most 20, and not a context attribute or one of msm's. */
int msm__rt_ce_extension_name_ok(const char *name);
/** @brief The error of a delivery not pushed because its event's deadline had passed: it
 *  ends FATAL (dead-lettered at once) with this text. */
#define RT_DEADLINE_EXCEEDED "DEADLINE_EXCEEDED"
/** @brief "HTTP 503: <start of the body>" into @p buf. */
void msm__rt_http_error(const msm_http_result_t *res, const char *prefix, char *buf, size_t n);
/** @brief Retry-After of a 429/503 answer in ms (0 when none). */
int64_t msm__rt_retry_after_ms(const msm_http_result_t *res);
/** @brief The error text of a request that got no answer. */
void msm__rt_transport_error(const rt_req_t *req, const msm_http_result_t *res, char *err,
                             size_t n);

/* ---- batch_push.c ---- */
/** One result of a batch answer: strings decoded, NULL when absent. */
typedef struct {
    const char *id, *status;
} rt_result_t;

/**
 * @brief Reads a batch answer of the common form, {"results":[{"id":"…","status":"…"},…]}
 * (other members skipped), in one pass without a JSON tree; @p out (@p len + 1 bytes)
 * receives the decoded strings. Gives up on anything unusual (a second "results", a result
 * that is not an object, a repeated or non-string id or status, more than @p max results,
 * anything jansson would refuse), which the jansson reading then decides.
 * @returns the number of results, or -1 to give up.
 */
int msm__rt_results_scan(const char *body, size_t len, char *out, rt_result_t *results,
                         size_t max);

/** @brief Builds the body and headers of a batch request for req->items. @returns MSM_OK,
 *  MSM_ERR_NOMEM or MSM_ERR_INVALID (signing failed). */
int msm__rt_batch_build(rt_req_t *req, int64_t now_ms);
/** @brief Settles every delivery of a batch request from its answer. */
void msm__rt_batch_settle(rt_req_t *req, const msm_http_result_t *res);

/* ---- outcome.c ---- */
/** @brief Records how @p d ended (copies @p error) and queues its outcome for the next
 *  append of its subscription. */
void msm__rt_finish(router_t *rt, rt_delivery_t *d, Msm__V1__OutcomeKind kind, int http_status,
                    const char *error, int64_t latency_ms, int64_t retry_after_ms);
/** @brief The before-sleep hook: appends each subscription's outcomes of this turn as one
 *  status.<sub> record. */
void msm__rt_flush(msm_loop_t *loop, void *opaque);
/** @brief router_free(): batches in flight are orphaned (their callback frees them). */
void msm__rt_batches_abandon(router_t *rt);

#endif
