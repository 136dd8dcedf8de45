/* SPDX-License-Identifier: MIT */
/* The replication stream: a logical replication connection that makes sure the slot exists
 * (creating it with wal2json), streams its changes into the backlog, stops reading while the
 * backlog is full, confirms to PostgreSQL only what the backlog says is acknowledged, and
 * reconnects with backoff. On the loop's thread. */
#ifndef PGC_REPL_H
#define PGC_REPL_H

#include "pgc_backlog.h"
#include "pgc_decode.h"
#include "pgc_stats.h"

#include "msm/loop.h"

#include <stddef.h>
#include <stdint.h>

typedef struct pgc_repl_s pgc_repl_t;

typedef struct {
    const char *conninfo;      /**< libpq connection string */
    const char *slot;          /**< [a-z0-9_]{1,63} */
    const char *add_tables;    /**< wal2json add-tables, NULL or "" = every table */
    const char *filter_tables; /**< wal2json filter-tables, NULL or "" = none */
    unsigned connect_timeout_ms;
    unsigned status_interval_ms; /**< standby status updates at least this often */
    unsigned retry_max_ms;       /**< reconnect backoff cap */
    pgc_decode_conf_t decode;
} pgc_repl_conf_t;

/** Called when changes were added to the backlog (at a commit or when it filled up) and
 *  when the stream went down (waiting requests then answer). */
typedef void pgc_repl_news_cb(void *opaque);

/** @brief The stream (not started). Strings of @p conf are copied; @p backlog and @p stats
 *  are borrowed. @returns NULL when out of memory. */
pgc_repl_t *pgc_repl_new(msm_loop_t *loop,
                         const pgc_repl_conf_t *conf,
                         pgc_backlog_t *backlog,
                         pgc_stats_t *stats,
                         pgc_repl_news_cb *news,
                         void *opaque);
void pgc_repl_free(pgc_repl_t *r);

/** @brief Connects (and keeps reconnecting until pgc_repl_stop()). */
void pgc_repl_start(pgc_repl_t *r);

/** @brief Sends a last confirmation and closes the connection. */
void pgc_repl_stop(pgc_repl_t *r);

/** @brief Non-zero while streaming; otherwise @p why (if not NULL) says what is wrong. */
int pgc_repl_streaming(const pgc_repl_t *r, char *why, size_t n);

/** @brief Whether reading is stopped because the backlog is full (more is waiting). */
int pgc_repl_paused(const pgc_repl_t *r);

/** @brief The backlog was acknowledged further: confirm what became safe, read on. */
void pgc_repl_acked(pgc_repl_t *r);

/** @brief The highest WAL position this stream has shown to exist (messages, keepalives,
 *  and the commit records of transactions being read). */
uint64_t pgc_repl_received(const pgc_repl_t *r);

#endif
