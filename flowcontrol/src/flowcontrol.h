/* SPDX-License-Identifier: MIT */
/* msm-flowcontrol: the task state machine of every subscription it owns. Holds the tasks
 * of ready.<sub> in memory (pending by priority), admits them within the subscription's
 * max_concurrency into one dispatch.<sub> record per loop turn, settles the router's outcomes
 * from status.<sub> (success, retry store with backoff, dead letter), takes due retries back
 * and re-dispatches tasks whose lease passed. Members share subscriptions by an ownership
 * lease. docs/pipeline.md has the streams and keys.
 *
 * Threading: everything runs on the loop's thread. */
#ifndef FLOWCONTROL_H
#define FLOWCONTROL_H

#include "msm/config.h"
#include "msm/daemon.h"
#include "msm/loop.h"
#include "msm/metrics.h"
#include "msm/redis.h"
#include "msm/stream.h"

#include <stddef.h>

typedef struct flowcontrol_s flowcontrol_t;

/** The daemon's settings (main.c's table fills them; tests set them directly). Zero or
 *  negative selects the default, except lease_grace_ms and record_lag_ms where 0 is valid. */
typedef struct {
    msm_common_conf_t common;
    int lease_grace_ms;   /**< task lease = now + timeout_ms + this; negative = 5000 */
    int owner_lease_ms;   /**< a subscription's ownership lease, renewed at a third */
    int registry_poll_ms; /**< registry version poll */
    int batch;            /**< ready and status records per read */
    int max_records;      /**< ready records held in memory per subscription (the bound) */
    int dispatch_max;     /**< tasks per dispatch record */
    int record_lag_ms;    /**< pending/running records only after this long in the state */
    int hol_threshold_ms; /**< an ordering key held this long is reported (log, metric) */
    int fair_max_records; /**< max_records of a subscription with a fairness_key: reading
                               further ahead lets a late tenant pass a burst */
    char *lifecycle_topic; /**< tasks going retrying or dead are announced here; NULL: off */
} fc_conf_t;

/** Defaults of fc_conf_t (also the defaults of main.c's table). */
#define FC_DEFAULT_LEASE_GRACE_MS   5000
#define FC_DEFAULT_OWNER_LEASE_MS   5000
#define FC_DEFAULT_REGISTRY_POLL_MS 500
#define FC_DEFAULT_BATCH            16
#define FC_DEFAULT_MAX_RECORDS      8
#define FC_DEFAULT_DISPATCH_MAX     1000
#define FC_DEFAULT_RECORD_LAG_MS    1000
#define FC_DEFAULT_HOL_THRESHOLD_MS 60000
#define FC_DEFAULT_FAIR_MAX_RECORDS 1024

/** What flowcontrol runs on; all borrowed, and must outlive it. */
typedef struct {
    msm_loop_t *loop;
    msm_redis_t *redis;     /**< state (namespaced keys) */
    msm_stream_t *stream;   /**< the durable log */
    msm_metrics_t *metrics; /**< where its counters are registered */
    const char *member;     /**< consumer-group member name (copied) */
} fc_env_t;

/**
 * @brief Starts watching the registry and competing for every subscription's ownership;
 * per owned subscription, consumes ready.<sub> and status.<sub>, dispatches to dispatch.<sub>.
 * @param conf read during the call (copied)
 * @returns NULL when out of memory or the metric families cannot be registered.
 */
flowcontrol_t *flowcontrol_new(const fc_env_t *env, const fc_conf_t *conf);

/**
 * @brief flowcontrol_new() on a daemon's loop, Redis, log and metrics, with its readiness
 * condition and its graceful stop registered on @p d.
 */
flowcontrol_t *flowcontrol_new_daemon(msm_daemon_t *d, const fc_conf_t *conf);

/**
 * @brief Frees @p fc. Writes still in flight are orphaned (their replies are dropped);
 * unacknowledged log records are delivered again to the next owner: redelivery, never loss.
 * Call before freeing the Redis and log clients. Safe with NULL.
 */
void flowcontrol_free(flowcontrol_t *fc);

/** @brief Stop taking new work (msm_daemon_stop_cb): nothing new is dispatched; outcomes of
 *  what is running are still applied until drained. */
void flowcontrol_stop(void *fc);

/** @brief Non-zero once stopped and nothing is in flight (msm_daemon_drained_cb). */
int flowcontrol_drained(void *fc);

/** @brief /readyz condition (msm_http_ready_cb): the registry is loaded. */
int flowcontrol_ready(void *fc, char *why, size_t n);

/** @brief Subscriptions currently managed (for tests and /debug). */
size_t flowcontrol_sub_count(const flowcontrol_t *fc);

/** @brief Subscriptions this member owns now (for tests). */
size_t flowcontrol_owned_count(const flowcontrol_t *fc);

/** @brief Tasks in memory across owned subscriptions (for tests). */
size_t flowcontrol_task_count(const flowcontrol_t *fc);

#endif
