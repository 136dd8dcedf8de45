/* SPDX-License-Identifier: MIT */
/* One PostgreSQL connection driven by the daemon's event loop (libpq's asynchronous API: no
 * call here blocks, but libpq may resolve a host name while starting to connect): connect,
 * run one query at a time, and the COPY BOTH stream of logical replication. Everything runs
 * on the loop's thread; the owner learns of each step through its handlers. */
#ifndef PGC_PG_H
#define PGC_PG_H

#include "msm/loop.h"

#include <libpq-fe.h>
#include <stddef.h>

typedef struct pgc_pg_s pgc_pg_t;

typedef struct {
    /** The connection is up (after pgc_pg_connect()). */
    void (*connected)(pgc_pg_t *pg, void *opaque);
    /** The query's last result (borrowed: freed after the call). A query that starts COPY
     *  BOTH reports PGRES_COPY_BOTH; the stream's messages then go to copy_data. */
    void (*result)(pgc_pg_t *pg, PGresult *res, void *opaque);
    /** One CopyData message (borrowed). Return non-zero to stop reading until
     *  pgc_pg_copy_resume(). */
    int (*copy_data)(pgc_pg_t *pg, const char *data, size_t len, void *opaque);
    /** The connection failed or broke (@p why is one line); it is closed already, and the
     *  owner may connect again. */
    void (*failed)(pgc_pg_t *pg, const char *why, void *opaque);
} pgc_pg_handlers_t;

/**
 * @brief A connection object (not connected yet).
 * @param conninfo libpq connection string or URI (copied)
 * @param replication non-zero for a logical replication connection (replication=database)
 * @param handlers copied; @p opaque is passed to each
 * @returns NULL when out of memory.
 */
pgc_pg_t *pgc_pg_new(msm_loop_t *loop,
                     const char *conninfo,
                     int replication,
                     const pgc_pg_handlers_t *handlers,
                     void *opaque);

/** @brief Closes and frees (no handler is called). Safe with NULL. */
void pgc_pg_free(pgc_pg_t *pg);

/** @brief Starts connecting; gives up after @p timeout_ms. Closes any earlier connection.
 *  @returns MSM_OK (then connected or failed follows, never from inside this call). */
int pgc_pg_connect(pgc_pg_t *pg, unsigned timeout_ms);

/** @brief Closes the connection without calling a handler. */
void pgc_pg_close(pgc_pg_t *pg);

/** @brief Whether connected and not in a failed state. */
int pgc_pg_up(const pgc_pg_t *pg);

/** @brief Sends one simple-protocol query (the only kind a replication connection takes);
 *  result follows. @returns MSM_OK, or MSM_ERR_INVALID when not connected or busy. */
int pgc_pg_query(pgc_pg_t *pg, const char *sql);

/** @brief Sends one CopyData message on the COPY BOTH stream (queued when the socket is
 *  full). @returns MSM_OK, or MSM_ERR_BACKEND (failed follows). */
int pgc_pg_copy_send(pgc_pg_t *pg, const void *data, size_t len);

/** @brief Reads the stream again after copy_data asked to stop (soon, not from inside this
 *  call). */
void pgc_pg_copy_resume(pgc_pg_t *pg);

/** @brief The libpq connection (for PQescapeLiteral and the like), or NULL. */
PGconn *pgc_pg_conn(pgc_pg_t *pg);

#endif
