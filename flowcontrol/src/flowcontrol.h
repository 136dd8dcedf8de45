/* SPDX-License-Identifier: MIT */
/* msm-flowcontrol: the task state machine of every subscription. Admits tasks from
 * ready.<sub> into the pending set, moves them to running within the subscription's
 * max_concurrency and hands them to the router on dispatch.<sub>, applies the router's
 * outcomes from "status" (success, retry with backoff, dead letter), brings due retries back
 * and treats expired leases as failed attempts. docs/pipeline.md has the keys and streams.
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
 *  negative selects the default, except lease_grace_ms where 0 is a valid grace. */
typedef struct {
    msm_common_conf_t common;
    int lease_grace_ms;   /**< lease = now + timeout_ms + this; negative = 5000 */
    int admit_poll_ms;    /**< admission also runs this often (replays, other instances) */
    int safety_poll_ms;   /**< retry and lease scans run at least this often */
    int registry_poll_ms; /**< registry version poll */
    int batch;            /**< records per read, tasks per take, ids per retry/lease scan */
} fc_conf_t;

/** Defaults of fc_conf_t (also the defaults of main.c's table). */
#define FC_DEFAULT_LEASE_GRACE_MS   5000
#define FC_DEFAULT_ADMIT_POLL_MS    200
#define FC_DEFAULT_SAFETY_POLL_MS   1000
#define FC_DEFAULT_REGISTRY_POLL_MS 500
#define FC_DEFAULT_BATCH            128

/** What flowcontrol runs on; all borrowed, and must outlive it. */
typedef struct {
    msm_loop_t *loop;
    msm_redis_t *redis;     /**< state (namespaced keys) */
    msm_stream_t *stream;   /**< the durable log */
    msm_metrics_t *metrics; /**< where its counters are registered */
    const char *member;     /**< consumer-group member name (copied) */
} fc_env_t;

/**
 * @brief Starts watching the registry; per subscription, consumes ready.<sub> and
 * dispatches to dispatch.<sub>; consumes "status" once the registry is loaded.
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
 * @brief Frees @p fc. Scripts and appends still in flight are orphaned (their replies are
 * dropped); unacknowledged log entries are delivered again later, which is harmless: every
 * step is idempotent. Call before freeing the Redis and log clients. Safe with NULL.
 */
void flowcontrol_free(flowcontrol_t *fc);

/** @brief Stop taking new work (msm_daemon_stop_cb): no new reads, takes or scans. */
void flowcontrol_stop(void *fc);

/** @brief Non-zero once stopped and nothing is in flight (msm_daemon_drained_cb). */
int flowcontrol_drained(void *fc);

/** @brief /readyz condition (msm_http_ready_cb): the registry is loaded and "status" is
 *  being consumed. */
int flowcontrol_ready(void *fc, char *why, size_t n);

/** @brief Subscriptions currently managed (for tests and /debug). */
size_t flowcontrol_sub_count(const flowcontrol_t *fc);

#endif
