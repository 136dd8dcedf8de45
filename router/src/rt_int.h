/* SPDX-License-Identifier: MIT */
/* The router's internals shared by its files: the router, one state per subscription and
 * one per delivery, and the steps a delivery goes through:
 *
 *   router.c   registry → per-subscription consumers (reconciled), batches in, stop/drain
 *   push.c     task → endpoint (balance.c) → HTTP request with the API.md headers → result
 *   outcome.c  result → DeliveryOutcome → one "status" append per loop turn → acks
 *
 * Later concerns slot in as further steps of push.c (filters before the endpoint choice;
 * health and locality inside balance.c; pacing before the request). */
#ifndef RT_INT_H
#define RT_INT_H

#include "router.h"

#include "msm/envelope.h"
#include "msm/http_client.h"
#include "msm/registry.h"
#include "msm/schema_store.h"

#include <stdint.h>

#define RT_GROUP "router"
#define RT_FACILITY "router"

typedef struct rt_sub_s rt_sub_t;
typedef struct rt_delivery_s rt_delivery_t;
typedef struct rt_batch_s rt_batch_t;

/** The kinds counted in metrics, indexed by Msm__V1__OutcomeKind. */
#define RT_KINDS 4

/** One subscription: its own copy of the settings, its consumer and its deliveries. */
struct rt_sub_s {
    rt_sub_t *next;
    router_t *rt;
    char *name;
    msm_sub_t *conf;          /**< own deep copy; NULL once gone from the registry */
    json_t *conf_json;        /**< to notice changes */
    msm_consumer_t *consumer; /**< NULL while not consuming */
    int consumer_max;         /**< the max_unacked it was created with */
    size_t live;              /**< deliveries consumed and not acknowledged */
    int in_http;              /**< requests in flight, at most conf->max_concurrency */
    rt_delivery_t *queue;     /**< taken beyond max_concurrency: wait for a free slot */
    rt_delivery_t *queue_tail;
    int *wrr;                 /**< smooth weighted round robin: current weight per endpoint */
    msm_metric_child_t *m_kind[RT_KINDS];
    msm_metric_child_t *m_latency;
    msm_metric_child_t *m_in_flight;
};

/** One task from its dispatch entry to the acknowledgement of that entry. */
struct rt_delivery_s {
    rt_delivery_t *next, *prev; /**< in router.sending, router.finished or a batch */
    rt_sub_t *sub;              /**< NULL once orphaned by router_free() */
    msm_stream_msg_t *msg;      /**< owned by sub->consumer until acknowledged */
    Msm__V1__Task *task;
    msm_http_call_t *call;      /**< while the request is in flight */
    char *endpoint;             /**< URL pushed to ("" when none could be chosen) */
    Msm__V1__OutcomeKind kind;
    int http_status;
    char *error;
    int64_t latency_ms;
    int64_t retry_after_ms;
    int64_t finished_at_ms;
    msm_buf_t packed;           /**< the DeliveryOutcome, packed once finished */
    char *body;                 /**< delivery_format "json": the payload as JSON, else NULL */
    size_t body_len;
};

/** Outcomes appended together; acknowledged together once durable. */
struct rt_batch_s {
    rt_batch_t *next, *prev;
    router_t *rt;          /**< NULL once orphaned by router_free() */
    rt_delivery_t *items;  /**< singly linked through next */
    size_t n;
    int appending;         /**< an append is in flight */
    uint32_t failures;     /**< consecutive failed appends (backoff) */
    msm_timer_t retry_timer;
};

/** A callback token for a stream operation that may outlive the router. */
typedef struct {
    router_t *rt; /**< NULL once the router is gone */
} rt_token_t;

struct router_s {
    router_env_t env;
    char *member;
    router_conf_t conf;
    msm_registry_t *registry;
    msm_http_client_t *http;
    rt_sub_t *subs;
    rt_delivery_t *sending;  /**< HTTP requests in flight */
    rt_delivery_t *finished; /**< outcomes waiting for the next append */
    rt_delivery_t *converting; /**< waiting for a schema to turn the payload into JSON */
    msm_schema_store_t *schemas;
    int freeing;             /**< router_free() runs: late callbacks do nothing */
    rt_batch_t *batches;     /**< appends in flight or waiting to retry */
    size_t live;             /**< deliveries alive, all subscriptions */
    int status_ready;        /**< "status" exists */
    rt_token_t *ensure_token;
    int stopping;
    msm_timer_t retry_timer; /**< status ensure / consumer creation retries */
    msm_metric_t *m_deliveries, *m_latency, *m_in_flight;
    msm_metric_child_t *m_invalid, *m_append_failures;
};

/* ---- router.c ---- */
/** A delivery is over (acknowledged or dropped): counts down and reconciles its sub. */
void msm__rt_delivery_release(router_t *rt, rt_delivery_t *d);
/** Frees a delivery's own memory (not its message). */
void msm__rt_delivery_free(rt_delivery_t *d);
void msm__rt_list_push(rt_delivery_t **head, rt_delivery_t *d);
void msm__rt_list_remove(rt_delivery_t **head, rt_delivery_t *d);

/* ---- balance.c ---- */
/** @brief Resets the balancer after the endpoints changed. @returns MSM_OK or NOMEM. */
int msm__rt_balance_reset(rt_sub_t *sub);
/** @brief The endpoint for the next request, or NULL when there is none. */
const msm_endpoint_t *msm__rt_balance_pick(rt_sub_t *sub);

/* ---- push.c ---- */
/** @brief Takes one dispatch entry of @p sub: decodes it and pushes it (or finishes it at
 *  once when it cannot be pushed). */
void msm__rt_push(rt_sub_t *sub, msm_stream_msg_t *msg);
/** @brief Drops the deliveries queued behind max_concurrency (router_free()). */
void msm__rt_queue_drop(rt_sub_t *sub);
/** @brief 1 when @p s is an HTTP token (a valid header name). */
int msm__rt_token_ok(const char *s);
/** @brief 1 when @p s may be sent as a header value (no CR, LF or other controls). */
int msm__rt_value_ok(const char *s);

/* ---- outcome.c ---- */
/** @brief Records how @p d ended (copies @p error) and queues its outcome for the next
 *  append. */
void msm__rt_finish(router_t *rt, rt_delivery_t *d, Msm__V1__OutcomeKind kind, int http_status,
                    const char *error, int64_t latency_ms, int64_t retry_after_ms);
/** @brief The before-sleep hook: appends the outcomes finished this turn in one batch. */
void msm__rt_flush(msm_loop_t *loop, void *opaque);
/** @brief router_free(): batches in flight are orphaned (their callback frees them). */
void msm__rt_batches_abandon(router_t *rt);

#endif
