/* SPDX-License-Identifier: MIT */
/* Test support: a real PostgreSQL cluster of the test's own (initdb in a temporary
 * directory, a free loopback port, its Unix socket in that directory, trust authentication,
 * superuser "msm"), and blocking libpq helpers to run SQL against it. PostgreSQL refuses to
 * run as root: a test running as root runs the server as the unprivileged user "nobody",
 * which then owns the directory. The library msm_test_pg links libpq. */
#ifndef MSM_TEST_PG_H
#define MSM_TEST_PG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
    pid_t pid; /**< the postmaster, > 0 while running */
    int port;
    char dir[256];      /**< the temporary directory: data/, the socket, server.log */
    char bindir[512];   /**< where initdb and postgres were found */
    char conninfo[512]; /**< "host=127.0.0.1 port=N dbname=postgres user=msm" */
    char log[300];      /**< the server's log file */
} msm_test_pg_t;

/**
 * @brief Makes and starts a cluster, waiting until it accepts connections.
 * @param settings extra "name=value" server settings (each becomes -c name=value), NULL-
 *        terminated, or NULL; e.g. "wal_level=logical"
 * @returns 0, or -1 with the reason on stderr (no server binaries: the PostgreSQL packages
 * of scripts/install-deps.sh are missing; the server's log is printed when it failed).
 */
int msm_test_pg_start(msm_test_pg_t *pg, const char *const *settings);

/** @brief Stops the server (fast shutdown, SIGKILL after 20 s); the data stays. */
int msm_test_pg_stop(msm_test_pg_t *pg);

/** @brief Stops it if running and removes its directory. */
void msm_test_pg_destroy(msm_test_pg_t *pg);

/** @brief Whether the server has the wal2json output plugin installed. */
int msm_test_pg_has_wal2json(const msm_test_pg_t *pg);

/** @brief A connection (blocking; 10 s to connect), or NULL with the reason on stderr. */
PGconn *msm_test_pg_connect(const msm_test_pg_t *pg);

/**
 * @brief Runs printf-formatted SQL (one or more statements) on @p c.
 * @returns 0, or -1 with the server's error on stderr.
 */
int msm_test_pg_exec(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * @brief The first column of the first row of a printf-formatted query.
 * @returns a malloc'd copy the caller frees, or NULL (error on stderr, no row, or SQL NULL).
 */
char *msm_test_pg_value(PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
