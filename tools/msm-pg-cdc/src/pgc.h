/* SPDX-License-Identifier: MIT */
/* msm-pg-cdc: a PostgreSQL change source for msm's CDC pull. It streams a logical replication
 * slot through wal2json and serves the changes with API.md's range protocol (README.md).
 * This is the adapter object main.c wires to the daemon scaffold. */
#ifndef PGC_H
#define PGC_H

#include "msm/config.h"
#include "msm/daemon.h"

#include <stddef.h>

#define PGC_DEFAULT_PORT 8084

typedef struct {
    msm_common_conf_t common; /* only its serving part: no Redis, no log */
    char *pg_conninfo;
    char *pg_slot;
    char *pg_tables;
    char *pg_filter_tables;
    int pg_connect_timeout_ms;
    int pg_status_interval_ms;
    int pg_monitor_interval_ms;
    int pg_retry_max_ms;
    char *range_partition;
    int range_default_limit;
    int range_max_limit;
    int range_wait_ms;
    long long range_max_response_bytes;
    int buffer_max_changes;
    long long buffer_max_bytes;
    long long changes_max_data_bytes;
} pgc_conf_t;

extern const msm_conf_def_t pgc_conf_defs[];
extern const size_t pgc_conf_ndefs;

typedef struct pgc_s pgc_t;

/**
 * @brief Checks @p conf, registers the route and metrics on @p d and starts streaming.
 * @param err receives why on failure (a bad setting or out of memory)
 * @returns the adapter, or NULL.
 */
pgc_t *pgc_new(msm_daemon_t *d, const pgc_conf_t *conf, char *err, size_t n);

/** @brief msm_daemon_stop_cb: answers waiting requests, confirms and closes the stream. */
void pgc_stop(void *opaque);

/** @brief msm_daemon_drained_cb: nothing is in flight once stopped. */
int pgc_drained(void *opaque);

/** @brief msm_http_ready_cb: streaming from the slot. */
int pgc_ready(void *opaque, char *why, size_t n);

void pgc_free(pgc_t *p);

#endif
