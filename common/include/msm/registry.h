/* SPDX-License-Identifier: MIT */
/* The control plane's state: topics, subscriptions, recurring schedules and CDC sources as
 * the frontend stores them in Redis and every daemon watches them, plus the names of the
 * Redis keys and log streams the layers meet in (docs/pipeline.md has the whole map).
 *
 * Storage (under the namespace): hash "topics" name → topic JSON, hash "subs" name →
 * subscription JSON, hash "schedules" name → schedule JSON (msm/schedule.h), hash
 * "cdc:sources" name → source JSON (msm/cdc.h), counter
 * "{registry}:version" bumped by every change. A watcher polls the counter and reloads the
 * hashes when it moves, so a change reaches every daemon within one poll interval without a
 * pub/sub connection per daemon. */
#ifndef MSM_REGISTRY_H
#define MSM_REGISTRY_H

#include "msm/cdc.h"
#include "msm/filter.h"
#include "msm/json.h"
#include "msm/loop.h"
#include "msm/redis.h"
#include "msm/schedule.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- log streams (msm/stream.h names; the log client adds the namespace) ----
 * Internal hops carry batch records (docs/pipeline.md): ready.* and dispatch.* hold one
 * msm.v1.TaskBatch per record, status.* one msm.v1.OutcomeBatch. */
#define MSM_STREAM_EVENTS   "events.%s"   /**< per topic: one msm.v1.Event per record */
#define MSM_STREAM_READY    "ready.%s"    /**< per subscription: TaskBatch, from the scheduler */
#define MSM_STREAM_DISPATCH "dispatch.%s" /**< per subscription: TaskBatch, from flowcontrol */
#define MSM_STREAM_STATUS   "status.%s"   /**< per subscription: OutcomeBatch, from the router */

/* ---- Redis keys (msm_redis_key() adds "<ns>:"); one subscription's keys share a hash tag.
 * The happy path keeps no per-task key but the task record; the stores below hold tasks
 * only off it (delayed, waiting for a retry, dead). */
#define MSM_KEY_TOPICS      "{registry}:topics"
#define MSM_KEY_SUBS        "{registry}:subs"
#define MSM_KEY_VERSION     "{registry}:version"
/** hash per second of publish time (read from the UUIDv7 event id; 0 for other ids): event
 *  id → the task API's JSON {"state","attempts","next_attempt_at","last_error","updated_ms",
 *  "history"} (the event id is the field: readers add it). The hash expires task_retention_ms after its last write: one
 *  field per task, no key and no expiry entry per task. Use msm_task_key(). */
#define MSM_KEY_TASK        "sub:{%s}:t:%lld"
#define MSM_TASK_BUCKET_MS  1000
#define MSM_KEY_DELAYED     "sub:{%s}:delayed"        /**< zset: event id by deliver_at */
#define MSM_KEY_DELAYED_EV  "sub:{%s}:delayed:events" /**< hash: event id → packed Event */
#define MSM_KEY_RETRY       "sub:{%s}:retry"          /**< zset: event id by next attempt */
#define MSM_KEY_RETRY_TASKS "sub:{%s}:retry:tasks"    /**< hash: event id → packed Task */
#define MSM_KEY_DLQ         "sub:{%s}:dlq"            /**< zset: event id by time of death */
#define MSM_KEY_DLQ_TASKS   "sub:{%s}:dlq:tasks"      /**< hash: event id → packed Task */
/* Ordered subscriptions (docs/pipeline.md, "Ordered subscriptions"): a key held by a failing
 * event, and the events that wait behind it, off the happy path. */
/** hash: ordering key → {"event_id","attempts","since_ms"} of the event holding it (the
 *  event itself waits in the retry store) */
#define MSM_KEY_HELD        "sub:{%s}:held"
/** zset, every score 0 (read by lex): "<key length, 4 hex digits>:<key>:<event id>" of the
 *  events parked behind a held key, so one key's events sort together, by event id (UUIDv7:
 *  publish order) */
#define MSM_KEY_PARKED      "sub:{%s}:parked"
#define MSM_KEY_PARKED_TASKS "sub:{%s}:parked:tasks" /**< hash: event id → packed Task */
/** hash: counters succeeded, failed_attempts, dead, enqueued (tasks appended to ready.<sub>),
 *  done (tasks of ready records settled) (HINCRBY); gauges pending, running,
 *  concurrency_limit, updated_ms (written by the owner). backlog = enqueued - done - running. */
#define MSM_KEY_STATS       "sub:{%s}:stats"
#define MSM_KEY_OWNER       "sub:{%s}:owner"          /**< string: flowcontrol member, PX lease */
/** hash: "<router member>\n<endpoint url>" → {"url","member","healthy","in_flight","reason",
 *  "updated_ms"}, each router's measured view, rewritten every second (PEXPIRE 30 s) */
#define MSM_KEY_ENDPOINTS   "sub:{%s}:endpoints"
/** hash: the delivery canary's state, shared by every router and kept across restarts:
 *  version (the canary version it is about), state active|rolled_back|promoted, reason,
 *  at (unix ms), announced (the state a lifecycle event went out for). No hash = active. */
#define MSM_KEY_CANARY      "sub:{%s}:canary"
/** hash: router member → {"version","canary":{"events","failures","p99_ms"},"baseline":{…},
 *  "updated_ms"}, each router's sliding windows, rewritten every second (PEXPIRE 30 s) */
#define MSM_KEY_CANARY_REPORT "sub:{%s}:canary:report"

/** The names of every key and stream of subscription @p sub live under these patterns
 *  (DELETE cleans them up): the keys "sub:{<sub>}:*", the streams ready/dispatch/status. */

/** @brief The bucket (publish second) of @p event_id's task record: from a UUIDv7 id, else 0. */
long long msm_task_bucket(const char *event_id);

/** @brief Writes the key of the hash holding @p event_id's task record of @p sub.
 *  @returns the length, or MSM_ERR_TOOLARGE. */
int msm_task_key(const msm_redis_t *r, char *buf, size_t n, const char *sub,
                 const char *event_id);

/** @brief Counts @p n tasks appended to ready.<@p sub> (the backlog's input side); a reply
 *  is not awaited: a count lost with a crash only makes the backlog read low. */
void msm_sub_count_enqueued(msm_redis_t *r, const char *sub, size_t n);

/** Topic and subscription names: [A-Za-z0-9._-]{1,200}. */
#define MSM_NAME_MAX 200
bool msm_name_valid(const char *name);

typedef struct {
    char *name;
    char *schema_subject; /**< NULL when unbound */
    int partitions;       /**< of events.<topic>; default 4 */
    int64_t created_ms;
} msm_topic_t;

/** Active health check of an endpoint (API.md: endpoint "health"). */
typedef struct {
    char *path;              /**< GET <endpoint origin><path>; NULL: no active check */
    int interval_ms;         /**< default 5000 */
    int unhealthy_threshold; /**< consecutive failed checks to mark it down; default 3 */
    int healthy_threshold;   /**< consecutive good checks to bring it back; default 2 */
} msm_health_t;

typedef struct {
    char *url;
    char *zone;  /**< NULL when not given */
    int weight;  /**< default 1 */
    char *version; /**< a release label (canary); NULL when not given */
    int max_concurrency; /**< requests in flight to this endpoint at most; 0 = no cap */
    msm_health_t health;
} msm_endpoint_t;

/** A delivery canary (API.md "canary"; router/README.md "Delivery canaries"). */
typedef struct {
    char *version;            /**< endpoints of this version are the canary; NULL: none */
    double share;             /**< of the requests, in (0,1] */
    double max_failure_ratio; /**< rollback when canary - baseline failure ratio exceeds it */
    int min_events;           /**< outcomes per side before any judgement, >= 1 */
} msm_canary_t;

/** Longest PEM text of one push_tls member (a CA bundle of a few dozen certificates). */
#define MSM_PUSH_TLS_PEM_MAX ((size_t)64 * 1024)

/** TLS of pushes to https:// endpoints (docs/security.md "Outbound TLS"); every member NULL:
 *  the router's default trust, no client certificate. */
typedef struct {
    char *ca_pem;          /**< CAs trusted instead of the router's default store */
    char *client_cert_pem; /**< client certificate (chain), with client_key_pem */
    char *client_key_pem;  /**< its unencrypted private key: a secret, never in an answer */
} msm_push_tls_t;

typedef struct {
    char *name;
    char *topic;
    msm_endpoint_t *endpoints;
    size_t nendpoints;
    char *filter;           /**< the filter's text (docs/filter.md); NULL = every event */
    msm_filter_t *filter_expr; /**< filter, parsed once for msm_filter_match(); NULL = none */
    bool ordered;           /**< default false */
    int max_concurrency;    /**< default 64 */
    double rate_limit_per_s;/**< 0 = unlimited */
    int timeout_ms;         /**< default 30000 */
    int priority;           /**< 0..9, default 5 */
    char *fairness_key;     /**< attribute whose values share a priority round-robin; NULL */
    char *delivery_format;  /**< "native" (default) or "json" */
    char **locality;        /**< preferred zones, in order */
    size_t nlocality;
    int max_attempts;       /**< retry.max_attempts, default 5 */
    int64_t min_backoff_ms; /**< retry.min_backoff_ms, default 100 */
    int64_t max_backoff_ms; /**< retry.max_backoff_ms, default 60000 */
    char *secret;           /**< HMAC secret for Msm-Signature; NULL = unsigned */
    int max_batch_events;   /**< events per push request, default 1 (API.md "Batch push") */
    int64_t task_retention_ms; /**< finished task records stay this long, default 3600000 */
    bool paused;            /**< :pause / :resume; nothing is pushed while set */
    msm_canary_t canary;    /**< canary.version NULL: no canary */
    msm_push_tls_t push_tls; /**< only with https:// endpoints */
    int64_t created_ms;
} msm_sub_t;

/**
 * @brief Validates a PUT body (API.md) into a topic named @p name; errors go to @p e with
 * their field paths. @returns NULL when invalid.
 */
msm_topic_t *msm_topic_from_json(const char *name, const json_t *body, msm_json_err_t *e);
/** @brief The stored and public JSON of @p t. */
json_t *msm_topic_to_json(const msm_topic_t *t);
void msm_topic_free(msm_topic_t *t);

/** @brief As msm_topic_from_json(), for a subscription (defaults filled in). The filter is
 *  parsed here (an error on "filter" names its position; "" means no filter), so every
 *  snapshot's subscriptions carry it parsed in filter_expr. push_tls is checked for shape
 *  only (PEM blocks, sizes, https:// endpoints): parsing the PEM is the frontend's, once,
 *  before it stores the subscription (msm/pem.h), not every daemon's on every load. */
msm_sub_t *msm_sub_from_json(const char *name, const json_t *body, msm_json_err_t *e);
/** @brief JSON of @p s; the secrets are included only when @p with_secret (storage),
 *  otherwise masked as msm_sub_mask_secrets() does. */
json_t *msm_sub_to_json(const msm_sub_t *s, bool with_secret);
/** @brief Replaces every secret of a subscription's JSON @p sub ("secret",
 *  "push_tls"."client_key_pem") that is set with "***": what any answer may show. */
void msm_sub_mask_secrets(json_t *sub);
void msm_sub_free(msm_sub_t *s);

/* ---- writing (the frontend) ---- */

/** Completion of a write: MSM_OK, or an error with a reason. */
typedef void msm_registry_done_cb(int err, const char *reason, void *opaque);

/** @brief Stores @p json (a topic's or subscription's) under @p name in hash @p kind
 *  (MSM_KEY_TOPICS or MSM_KEY_SUBS) and bumps the version, atomically. */
int msm_registry_put(msm_redis_t *r, const char *kind, const char *name, const json_t *json,
                     msm_registry_done_cb *cb, void *opaque);
/** @brief Deletes @p name from @p kind and bumps the version; err MSM_ERR_NOTFOUND when
 *  it was not there. */
int msm_registry_delete(msm_redis_t *r, const char *kind, const char *name,
                        msm_registry_done_cb *cb, void *opaque);

/* ---- watching (every daemon) ---- */

typedef struct msm_registry_s msm_registry_t;

/** Called after each reload that changed something (and after the first load). */
typedef void msm_registry_changed_cb(msm_registry_t *reg, void *opaque);

/** @brief Starts watching (first load at once, then every @p poll_ms; 0 = 500). */
msm_registry_t *msm_registry_new(msm_redis_t *r, uint32_t poll_ms, msm_registry_changed_cb *cb,
                                 void *opaque);
void msm_registry_free(msm_registry_t *reg);
/** @brief Non-zero once a first load has succeeded. */
int msm_registry_loaded(const msm_registry_t *reg);
/** @brief Reloads on the next loop turn (after a write of one's own). */
void msm_registry_refresh(msm_registry_t *reg);

/** Completion of msm_registry_sync(): @p err MSM_OK once the snapshot is at least as new as
 *  the stored version was when the sync was asked for (the change callback, if anything
 *  changed, has run before); MSM_ERR_BACKEND when Redis could not be asked (the snapshot
 *  is unchanged), MSM_ERR_SHUTDOWN from inside msm_registry_free(). */
typedef void msm_registry_synced_cb(msm_registry_t *reg, int err, void *opaque);

/**
 * @brief The barrier: checks the stored version now (one round trip: GET, and the reload in
 * the same script when the version moved) and calls @p cb once that is done. The syncs of
 * one loop turn share one check; syncs asked for while a check is in flight share the next.
 * A change committed before this call is always in the snapshot @p cb sees.
 * @returns MSM_OK (@p cb will be called exactly once, never from inside this call), or
 * MSM_ERR_NOMEM and no callback.
 * @remark loop thread only; @p cb must not free @p reg.
 */
int msm_registry_sync(msm_registry_t *reg, msm_registry_synced_cb *cb, void *opaque);

/**
 * @brief The barrier without a round trip: non-zero when the snapshot is at least as new
 * as @p version, a value of the stored version (MSM_KEY_VERSION) read after the records in
 * hand, e.g. their batch's stamp (msm_consumer_set_stamp()). 0 when @p version is -1
 * (unknown) or newer: then msm_registry_sync().
 */
int msm_registry_covers(const msm_registry_t *reg, int64_t version);

/** The current snapshot; valid until the next change callback returns. */
size_t msm_registry_topic_count(const msm_registry_t *reg);
const msm_topic_t *msm_registry_topic_at(const msm_registry_t *reg, size_t i);
const msm_topic_t *msm_registry_topic(const msm_registry_t *reg, const char *name);
size_t msm_registry_sub_count(const msm_registry_t *reg);
const msm_sub_t *msm_registry_sub_at(const msm_registry_t *reg, size_t i);
const msm_sub_t *msm_registry_sub(const msm_registry_t *reg, const char *name);
size_t msm_registry_schedule_count(const msm_registry_t *reg);
const msm_schedule_t *msm_registry_schedule_at(const msm_registry_t *reg, size_t i);
/** CDC sources (MSM_KEY_CDC_SOURCES), in the same snapshot. */
size_t msm_registry_cdc_count(const msm_registry_t *reg);
const msm_cdc_source_t *msm_registry_cdc_at(const msm_registry_t *reg, size_t i);
const msm_cdc_source_t *msm_registry_cdc(const msm_registry_t *reg, const char *name);

#endif
