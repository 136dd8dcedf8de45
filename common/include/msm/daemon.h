/* SPDX-License-Identifier: MIT */
/* What every msm daemon's main() shares: configuration (file < MSM_* env < flags, --help,
 * --version), logging, the event loop, a Redis client for state, the durable log, the HTTP
 * server with /healthz /readyz /metrics /debug/info, and a graceful stop on SIGTERM/SIGINT.
 * A daemon's main.c is then a table of settings plus three calls:
 *
 *     typedef struct { msm_common_conf_t common; int workers; } sched_conf_t;
 *     static const msm_conf_def_t defs[] = { MSM_CONF_COMMON(sched_conf_t, common, 8081), … };
 *     int main(int argc, char **argv) {
 *         sched_conf_t conf;
 *         msm_daemon_t *d;
 *         int rc = msm_daemon_new(&d, &(msm_daemon_spec_t){"msm-scheduler", "…", defs,
 *                                 MSM_CONF_COUNT(defs), &conf, offsetof(sched_conf_t, common)},
 *                                 argc, argv);
 *         if (!d) return rc;                  // --help, --version, or a bad setting
 *         scheduler_t *s = scheduler_new(d, &conf);  // routes, consumers, timers
 *         msm_daemon_on_stop(d, scheduler_stop, scheduler_drained, s);
 *         rc = msm_daemon_run(d);             // until SIGTERM and drained
 *         scheduler_free(s);
 *         msm_daemon_free(d);
 *         return rc;
 *     }
 */
#ifndef MSM_DAEMON_H
#define MSM_DAEMON_H

#include "msm/access.h"
#include "msm/config.h"
#include "msm/http_server.h"
#include "msm/loop.h"
#include "msm/metrics.h"
#include "msm/redis.h"
#include "msm/stream.h"

#include <stddef.h>

typedef struct msm_daemon_s msm_daemon_t;

typedef struct {
    const char *name;            /**< "msm-scheduler": logs, /debug/info, --help */
    const char *summary;         /**< one line for --help */
    const msm_conf_def_t *defs;  /**< the daemon's settings, MSM_CONF_COMMON among them */
    size_t ndefs;
    void *conf;                  /**< the daemon's struct, filled by msm_daemon_new() */
    size_t common_offset;        /**< offsetof its msm_common_conf_t */
} msm_daemon_spec_t;

/** Called once when SIGTERM/SIGINT arrives: stop taking new work. */
typedef void msm_daemon_stop_cb(void *opaque);
/** Polled after the stop: non-zero once in-flight work is finished or handed back. */
typedef int msm_daemon_drained_cb(void *opaque);

/**
 * @brief Loads the configuration and brings up logging, loop, Redis, log client and HTTP.
 * @param out receives the daemon, or NULL when the process should exit with the returned
 * code (0 after --help/--version; 2 for a bad setting, with the reason on stderr; 1 when
 * something could not start).
 */
int msm_daemon_new(msm_daemon_t **out, const msm_daemon_spec_t *spec, int argc, char **argv);

/**
 * @brief msm_daemon_new() for a tool that keeps no msm state (msm-pg-cdc): no Redis client
 * and no log are started (msm_daemon_redis() and msm_daemon_stream() are NULL), its table
 * needs only MSM_CONF_SERVING, and /readyz is the tool's own condition alone.
 */
int msm_daemon_new_serving(msm_daemon_t **out, const msm_daemon_spec_t *spec, int argc,
                           char **argv);

/**
 * @brief The daemon's access table (msm/access.h; borrowed: a static table): which scope
 * each of its routes needs when auth.tokens is set. Routes it does not name need "admin".
 * Without auth.tokens it does nothing.
 */
void msm_daemon_set_access(msm_daemon_t *d, const msm_access_rule_t *rules, size_t n);

/** @brief Frees everything msm_daemon_new() made, and the configuration strings. */
void msm_daemon_free(msm_daemon_t *d);

msm_loop_t *msm_daemon_loop(const msm_daemon_t *d);
/** @brief The Redis client for state (keys under the namespace). */
msm_redis_t *msm_daemon_redis(const msm_daemon_t *d);
/**
 * @brief Another Redis client with the daemon's settings (URL, password file, namespace),
 * for commands that block (XREAD BLOCK), which need a connection of their own.
 * @returns the client (the caller frees it, before the daemon) or NULL with the reason.
 */
msm_redis_t *msm_daemon_redis_connect(msm_daemon_t *d, const char *client_name, char *errbuf,
                                      size_t errbuf_size);
/** @brief The durable log (Redis Streams or Kafka per log.backend). */
msm_stream_t *msm_daemon_stream(const msm_daemon_t *d);
msm_http_server_t *msm_daemon_http(const msm_daemon_t *d);
msm_metrics_t *msm_daemon_metrics(const msm_daemon_t *d);
const msm_common_conf_t *msm_daemon_common(const msm_daemon_t *d);
const char *msm_daemon_name(const msm_daemon_t *d);
/** @brief A stable consumer-group member name: "<host>-<daemon>-<port>" (a restarted
 *  daemon resumes its own unacknowledged log entries at once). */
const char *msm_daemon_member(const msm_daemon_t *d);

/** @brief Adds a readiness condition to /readyz, besides "Redis is connected". */
void msm_daemon_set_ready(msm_daemon_t *d, msm_http_ready_cb *cb, void *opaque);

/** @brief What to do on SIGTERM/SIGINT (both may be NULL: stop at once). */
void msm_daemon_on_stop(msm_daemon_t *d, msm_daemon_stop_cb *stop, msm_daemon_drained_cb *drained,
                        void *opaque);

/**
 * @brief Runs the loop until a stop signal has arrived and the daemon has drained (or the
 * drain deadline, 10 s, passed), then stops accepting HTTP connections.
 * @returns 0 (the process's exit code).
 */
int msm_daemon_run(msm_daemon_t *d);

/** @brief How long a stop may drain (default 10 s); a stop callback may set it, e.g. to the
 *  longest request it still waits for. */
void msm_daemon_set_drain_ms(msm_daemon_t *d, uint64_t ms);

/** @brief Asks the daemon to stop as if SIGTERM had arrived (tests, fatal conditions). */
void msm_daemon_request_stop(msm_daemon_t *d);

#endif
