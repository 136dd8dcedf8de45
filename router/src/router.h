/* SPDX-License-Identifier: MIT */
/* msm-router (layer 4): consumes dispatch.<sub> (msm.v1.TaskBatch records) for every
 * subscription, pushes each task to an endpoint of its subscription over HTTP (CloudEvents
 * 1.0 binary mode plus the Msm-* headers of API.md, or max_batch_events per request as a
 * CloudEvents batch), classifies the answer and appends the outcomes of each loop turn as
 * one msm.v1.OutcomeBatch to status.<sub>; a dispatch record is acknowledged only once the
 * outcomes of all its tasks are durable.
 *
 * Threading: everything runs on the loop's thread. */
#ifndef MSM_ROUTER_H
#define MSM_ROUTER_H

#include "msm/config.h"
#include "msm/daemon.h"
#include "msm/http_client.h"
#include "msm/http_server.h"
#include "msm/loop.h"
#include "msm/metrics.h"
#include "msm/redis.h"
#include "msm/stream.h"

#include <stddef.h>

typedef struct router_s router_t;

/** The router's settings (main.c's table fills them; 0 means the default given). */
typedef struct {
    msm_common_conf_t common;
    int status_partitions;   /**< partitions of status.<sub> when the router creates it; 4 */
    int max_connections;     /**< pooled push connections in all; 1024 */
    int max_host_connections;/**< per endpoint host:port; 256 */
    int connect_timeout_ms;  /**< TCP connect to an endpoint; 5000 */
    int registry_poll_ms;    /**< registry version poll; 500 */
    int max_batch;           /**< dispatch entries per consumer callback; 64 */
    int max_in_flight;       /**< push requests in flight, all subscriptions; 4096. Past it a
                                  free slot goes to the highest subscription priority first */
    char *allow_networks;    /**< CIDRs that open default-denied addresses (msm/netpolicy.h);
                                  NULL = none: loopback and private endpoints are refused */
    char *deny_networks;     /**< CIDRs never connected to; NULL = none */
    char *zone;              /**< this router's zone: preferred when a subscription names no
                                  locality; NULL or "" = none */
    char *lifecycle_topic;   /**< canary rollbacks and promotions are announced here as
                                  events; NULL or "" = off */
    char *ca_bundle;         /**< PEM CA file trusted for https:// pushes instead of the
                                  system's store (a subscription's push_tls.ca_pem wins);
                                  NULL or "" = the system's */
} router_conf_t;

/** What the router runs on, all borrowed (they must outlive the router). */
typedef struct {
    msm_loop_t *loop;
    msm_redis_t *redis;     /**< for the registry */
    msm_stream_t *stream;   /**< the durable log */
    msm_metrics_t *metrics; /**< where the router's metrics go */
    const char *member;     /**< consumer-group member name, stable across restarts (copied) */
} router_env_t;

/**
 * @brief Creates the router on @p env and starts it: watches the registry and, for every
 * subscription, creates status.<sub> if missing, then consumes dispatch.<sub> as group
 * "router", member env->member.
 * @param conf read during the call (values copied)
 * @returns NULL with the reason in @p errbuf on failure.
 */
router_t *router_new_env(const router_env_t *env, const router_conf_t *conf, char *errbuf,
                         size_t errbuf_size);

/**
 * @brief router_new_env() on the daemon's loop, Redis, log, metrics and member name; also
 * registers router_ready() with /readyz and router_stop()/router_drained() as the daemon's
 * graceful stop. @returns NULL on failure (logged).
 */
router_t *router_new(msm_daemon_t *d, const router_conf_t *conf);

/**
 * @brief Frees the router at once, like a crash as far as the log is concerned: requests in
 * flight are cancelled, nothing more is acknowledged, so every dispatch entry without a
 * durable outcome is delivered again (at once to a router of the same member name).
 * Appends already started may still complete. Safe with NULL.
 */
void router_free(router_t *r);

/** @brief Graceful stop (msm_daemon_stop_cb): no new deliveries; those in flight finish and
 *  their outcomes are appended. @p opaque is the router. */
void router_stop(void *opaque);

/** @brief Non-zero once nothing is in flight and no outcome awaits its append
 *  (msm_daemon_drained_cb). */
int router_drained(void *opaque);

/** @brief /readyz condition: the registry is loaded and status.<sub> of every active
 *  subscription exists. */
int router_ready(void *opaque, char *why, size_t n);

/** @brief Deliveries alive: consumed and not yet acknowledged (HTTP in flight, or outcome
 *  awaiting its append). */
size_t router_live(const router_t *r);

/** @brief The push client's counters (connections opened and reused, requests). */
void router_http_stats(const router_t *r, msm_http_client_stats_t *out);

#endif
