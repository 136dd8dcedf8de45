/* SPDX-License-Identifier: MIT */
/* msm-frontend's logic as a library (frontend_core): the public API of API.md "Frontend"
 * (control plane, JSON batch publish, subscription stats, tasks and DLQ) mounted on an HTTP
 * server that someone else owns. main.c gives it the daemon's loop, Redis client, log
 * client, HTTP server and metrics; tests give it their own, on an ephemeral port.
 *
 * Threading: everything runs on the loop's thread. */
#ifndef MSM_FRONTEND_H
#define MSM_FRONTEND_H

#include "msm/access.h"
#include "msm/http_server.h"
#include "msm/loop.h"
#include "msm/metrics.h"
#include "msm/redis.h"
#include "msm/stream.h"

#include <stddef.h>
#include <stdint.h>

/** Defaults of the settings below (frontend/README.md documents them). */
#define FE_DEFAULT_MAX_EVENTS        1000
#define FE_DEFAULT_MAX_EVENT_BYTES   ((size_t)1024 * 1024)
#define FE_DEFAULT_REGISTRY_POLL_MS  500
#define FE_DEFAULT_SUB_PARTITIONS    1
#define FE_DEFAULT_STATUS_PARTITIONS 1
#define FE_DEFAULT_IDEMPOTENCY_WINDOW_MS (24ULL * 3600 * 1000)

typedef struct fe_s fe_t;

/** The frontend's own settings (0 = the default). */
typedef struct {
    size_t max_events;          /**< events per publish request; more: 413 */
    size_t max_event_bytes;     /**< one event's payload (decoded); more: 413 */
    uint32_t registry_poll_ms;  /**< how often the registry watcher polls Redis */
    int sub_partitions;         /**< partitions of ready.<sub> and dispatch.<sub> */
    int status_partitions;      /**< partitions of each status.<sub> stream */
    uint64_t idempotency_window_ms; /**< a repeated idempotency key answers the first id */
    /** The router's address policy (msm/netpolicy.h), judged against every endpoint at PUT
     *  subscription: comma-separated CIDRs, NULL = none (then loopback and private
     *  endpoints are refused). Read during fe_new(). */
    const char *allow_networks;
    const char *deny_networks;
    /** The share of events published without a trace context whose new trace is sampled
     *  (spans logged at every hop, docs/tracing.md): 0..1. */
    double trace_sample_ratio;
    /** The log's append timeout (log.append_timeout_ms): a CDC batch interrupted longer ago
     *  than this is recovered (msm/cdc_state.h); 0 = 10000. */
    uint64_t append_timeout_ms;
} fe_settings_t;

/** What the frontend borrows; each must outlive it (the metrics registry must also outlive
 *  the Redis and log clients, whose late callbacks still count). */
typedef struct {
    msm_loop_t *loop;
    msm_redis_t *redis;         /**< state: registry hashes, task keys */
    msm_stream_t *stream;       /**< the durable log */
    msm_http_server_t *http;    /**< routes are added to it */
    msm_metrics_t *metrics;
} fe_deps_t;

/**
 * @brief Creates the frontend: routes on deps->http, a registry watcher, metrics families.
 * @returns NULL with the reason in @p errbuf.
 */
fe_t *fe_new(const fe_deps_t *deps, const fe_settings_t *settings, char *errbuf,
             size_t errbuf_size);

/**
 * @brief Frees the frontend. Requests still waiting on Redis or the log keep a reference:
 * the frontend's memory goes when the last of them completes (which happens at the latest
 * when the Redis and log clients are freed).
 * @remark Free it before the HTTP server, the Redis client and the log client.
 */
void fe_free(fe_t *fe);

/** The scope each route needs when auth.tokens is set (scopes.c): for msm_daemon_set_access(). */
const msm_access_rule_t *fe_access_rules(size_t *n);

/** @brief Readiness for /readyz: Redis connected and the registry loaded (opaque = fe). */
int fe_ready(void *fe, char *why, size_t n);

/** @brief Stop callback for msm_daemon_on_stop (nothing to do: HTTP stops accepting). */
void fe_stop(void *fe);

/** @brief Drained callback: non-zero when no request awaits Redis or the log. */
int fe_drained(void *fe);

/** @brief Requests waiting on Redis or the log (tests, drain). */
size_t fe_inflight(const fe_t *fe);

/** @brief Non-zero once the registry's first load has finished (tests). */
int fe_registry_loaded(const fe_t *fe);

#endif
