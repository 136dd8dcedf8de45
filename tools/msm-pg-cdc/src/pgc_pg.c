/* SPDX-License-Identifier: MIT */
/* libpq's asynchronous connection, query and COPY BOTH calls on the msm event loop (see
 * pgc_pg.h). A handler may close, reconnect or query from inside its call: every step
 * after a handler checks the connection's generation before touching it again. */
#include "pgc_pg.h"

#include "msm/err.h"
#include "msm/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { PG_CLOSED, PG_CONNECTING, PG_IDLE, PG_BUSY, PG_COPY } pg_state_t;

struct pgc_pg_s {
    msm_loop_t *pg_loop;
    char *pg_conninfo;
    int pg_replication;
    pgc_pg_handlers_t pg_h;
    void *pg_opaque;
    PGconn *pg_conn;
    int pg_fd; /* the socket we watch, -1 */
    pg_state_t pg_state;
    unsigned pg_gen;      /* bumped by every close: a handler's caller checks it */
    int pg_paused;        /* copy_data asked to stop reading */
    int pg_want_write;    /* output is queued in libpq */
    PGresult *pg_last;    /* the latest result of the running query */
    char pg_pending[256]; /* a failure to report from the kick timer */
    msm_timer_t pg_deadline;
    msm_timer_t pg_kick;
};

static void on_io(msm_loop_t *loop, int fd, int events, void *opaque);

/* The server's notices and warnings (wal2json's among them) go to our log, not stderr. */
static void on_notice(void *opaque, const char *message)
{
    (void)opaque;
    int len = (int)strcspn(message, "\n");
    msm_log(MSM_LOG_WARN, "postgres", "%.*s", len, message);
}
static void drain_copy(pgc_pg_t *pg);

static void watch(pgc_pg_t *pg, int events)
{
    int fd = pg->pg_conn ? PQsocket(pg->pg_conn) : -1;
    if (fd != pg->pg_fd) {
        /* libpq may open a new socket for another address while connecting. */
        msm_loop_unwatch(pg->pg_loop, pg->pg_fd);
        pg->pg_fd = fd;
    }
    if (fd >= 0)
        msm_loop_watch(pg->pg_loop, fd, events, on_io, pg);
}

void pgc_pg_close(pgc_pg_t *pg)
{
    if (!pg)
        return;
    msm_loop_timer_stop(pg->pg_loop, &pg->pg_deadline);
    msm_loop_timer_stop(pg->pg_loop, &pg->pg_kick);
    msm_loop_unwatch(pg->pg_loop, pg->pg_fd);
    pg->pg_fd = -1;
    PQclear(pg->pg_last);
    pg->pg_last = NULL;
    if (pg->pg_conn)
        PQfinish(pg->pg_conn);
    pg->pg_conn = NULL;
    pg->pg_state = PG_CLOSED;
    pg->pg_paused = pg->pg_want_write = 0;
    pg->pg_pending[0] = '\0';
    pg->pg_gen++;
}

/* Copies libpq's message without its trailing newline. */
static void error_text(const char *msg, const char *prefix, char *out, size_t n)
{
    snprintf(out, n, "%s%s", prefix, msg && *msg ? msg : "connection lost");
    size_t len = strlen(out);
    while (len && (out[len - 1] == '\n' || out[len - 1] == ' '))
        out[--len] = '\0';
}

static void fail(pgc_pg_t *pg, const char *prefix)
{
    char why[512];
    error_text(pg->pg_conn ? PQerrorMessage(pg->pg_conn) : NULL, prefix, why, sizeof(why));
    pgc_pg_close(pg);
    pg->pg_h.failed(pg, why, pg->pg_opaque);
}

static void on_kick(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    pgc_pg_t *pg = opaque;
    if (pg->pg_pending[0]) {
        char why[sizeof(pg->pg_pending)];
        memcpy(why, pg->pg_pending, sizeof(why));
        pgc_pg_close(pg);
        pg->pg_h.failed(pg, why, pg->pg_opaque);
    } else if (pg->pg_state == PG_COPY) {
        drain_copy(pg);
    }
}

static void on_deadline(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    pgc_pg_t *pg = opaque;
    if (pg->pg_state == PG_CONNECTING) {
        pgc_pg_close(pg);
        pg->pg_h.failed(pg, "connect: timed out", pg->pg_opaque);
    }
}

pgc_pg_t *pgc_pg_new(msm_loop_t *loop,
                     const char *conninfo,
                     int replication,
                     const pgc_pg_handlers_t *handlers,
                     void *opaque)
{
    pgc_pg_t *pg = calloc(1, sizeof(*pg));
    if (!pg || !(pg->pg_conninfo = strdup(conninfo))) {
        free(pg);
        return NULL;
    }
    pg->pg_loop = loop;
    pg->pg_replication = replication;
    pg->pg_h = *handlers;
    pg->pg_opaque = opaque;
    pg->pg_fd = -1;
    msm_timer_init(&pg->pg_deadline);
    msm_timer_init(&pg->pg_kick);
    return pg;
}

void pgc_pg_free(pgc_pg_t *pg)
{
    if (!pg)
        return;
    pgc_pg_close(pg);
    free(pg->pg_conninfo);
    free(pg);
}

int pgc_pg_connect(pgc_pg_t *pg, unsigned timeout_ms)
{
    pgc_pg_close(pg);
    /* Keywords later in the list win over the same ones inside the connection string. */
    const char *keys[] = {"dbname", "fallback_application_name",
                          pg->pg_replication ? "replication" : NULL, NULL};
    const char *values[] = {pg->pg_conninfo, "msm-pg-cdc", "database", NULL};
    pg->pg_conn = PQconnectStartParams(keys, values, 1);
    pg->pg_state = PG_CONNECTING;
    if (!pg->pg_conn || PQstatus(pg->pg_conn) == CONNECTION_BAD) {
        error_text(pg->pg_conn ? PQerrorMessage(pg->pg_conn) : "out of memory",
                   "connect: ", pg->pg_pending, sizeof(pg->pg_pending));
        msm_loop_timer_start(pg->pg_loop, &pg->pg_kick, 0, on_kick, pg);
        return MSM_OK;
    }
    PQsetNoticeProcessor(pg->pg_conn, on_notice, NULL);
    watch(pg, MSM_LOOP_WRITE); /* libpq: poll for writing first */
    msm_loop_timer_start(pg->pg_loop, &pg->pg_deadline, timeout_ms, on_deadline, pg);
    return MSM_OK;
}

int pgc_pg_up(const pgc_pg_t *pg)
{
    return pg->pg_state == PG_IDLE || pg->pg_state == PG_BUSY || pg->pg_state == PG_COPY;
}

PGconn *pgc_pg_conn(pgc_pg_t *pg)
{
    return pg->pg_conn;
}

static void step_connect(pgc_pg_t *pg)
{
    switch (PQconnectPoll(pg->pg_conn)) {
    case PGRES_POLLING_READING:
        watch(pg, MSM_LOOP_READ);
        return;
    case PGRES_POLLING_WRITING:
        watch(pg, MSM_LOOP_WRITE);
        return;
    case PGRES_POLLING_OK:
        msm_loop_timer_stop(pg->pg_loop, &pg->pg_deadline);
        if (PQsetnonblocking(pg->pg_conn, 1) != 0) {
            fail(pg, "connect: ");
            return;
        }
        pg->pg_state = PG_IDLE;
        watch(pg, MSM_LOOP_READ);
        pg->pg_h.connected(pg, pg->pg_opaque);
        return;
    default:
        fail(pg, "connect: ");
    }
}

/* Sends what libpq holds; watches for writing while some remains. */
static int flush_output(pgc_pg_t *pg, int read_too)
{
    int rc = PQflush(pg->pg_conn);
    if (rc < 0)
        return -1;
    pg->pg_want_write = rc == 1;
    watch(pg, (read_too ? MSM_LOOP_READ : 0) | (pg->pg_want_write ? MSM_LOOP_WRITE : 0));
    return 0;
}

int pgc_pg_query(pgc_pg_t *pg, const char *sql)
{
    if (pg->pg_state != PG_IDLE)
        return MSM_ERR_INVALID;
    if (!PQsendQuery(pg->pg_conn, sql)) {
        error_text(PQerrorMessage(pg->pg_conn), "query: ", pg->pg_pending, sizeof(pg->pg_pending));
        msm_loop_timer_start(pg->pg_loop, &pg->pg_kick, 0, on_kick, pg);
        return MSM_OK;
    }
    pg->pg_state = PG_BUSY;
    if (flush_output(pg, 1) != 0) {
        error_text(PQerrorMessage(pg->pg_conn), "query: ", pg->pg_pending, sizeof(pg->pg_pending));
        msm_loop_timer_start(pg->pg_loop, &pg->pg_kick, 0, on_kick, pg);
    }
    return MSM_OK;
}

/* Collects the running query's results; reports the last, or the COPY BOTH start. */
static void step_query(pgc_pg_t *pg)
{
    unsigned gen = pg->pg_gen;
    while (!PQisBusy(pg->pg_conn)) {
        PGresult *res = PQgetResult(pg->pg_conn);
        if (!res) {
            PGresult *last = pg->pg_last;
            pg->pg_last = NULL;
            pg->pg_state = PG_IDLE;
            pg->pg_h.result(pg, last, pg->pg_opaque);
            PQclear(last);
            return;
        }
        if (PQresultStatus(res) == PGRES_COPY_BOTH) {
            pg->pg_state = PG_COPY;
            pg->pg_h.result(pg, res, pg->pg_opaque);
            PQclear(res);
            if (gen == pg->pg_gen)
                drain_copy(pg);
            return;
        }
        PQclear(pg->pg_last);
        pg->pg_last = res;
    }
}

static void drain_copy(pgc_pg_t *pg)
{
    unsigned gen = pg->pg_gen;
    while (!pg->pg_paused) {
        char *buf = NULL;
        int n = PQgetCopyData(pg->pg_conn, &buf, 1);
        if (n > 0) {
            int stop = pg->pg_h.copy_data(pg, buf, (size_t)n, pg->pg_opaque);
            PQfreemem(buf);
            if (gen != pg->pg_gen)
                return;
            if (stop)
                pg->pg_paused = 1;
        } else if (n == 0) {
            break;
        } else {
            /* -1: the server ended the stream; its reason is in the final result. */
            PGresult *res = n == -1 ? PQgetResult(pg->pg_conn) : NULL;
            char why[512];
            error_text(res ? PQresultErrorMessage(res) : PQerrorMessage(pg->pg_conn),
                       "replication stream: ", why, sizeof(why));
            PQclear(res);
            pgc_pg_close(pg);
            pg->pg_h.failed(pg, why, pg->pg_opaque);
            return;
        }
    }
    watch(pg, (pg->pg_paused ? 0 : MSM_LOOP_READ) | (pg->pg_want_write ? MSM_LOOP_WRITE : 0));
}

int pgc_pg_copy_send(pgc_pg_t *pg, const void *data, size_t len)
{
    if (pg->pg_state != PG_COPY)
        return MSM_ERR_INVALID;
    if (PQputCopyData(pg->pg_conn, data, (int)len) != 1 || flush_output(pg, !pg->pg_paused)) {
        error_text(PQerrorMessage(pg->pg_conn), "replication stream: ", pg->pg_pending,
                   sizeof(pg->pg_pending));
        msm_loop_timer_start(pg->pg_loop, &pg->pg_kick, 0, on_kick, pg);
        return MSM_ERR_BACKEND;
    }
    return MSM_OK;
}

void pgc_pg_copy_resume(pgc_pg_t *pg)
{
    if (pg->pg_state != PG_COPY || !pg->pg_paused)
        return;
    pg->pg_paused = 0;
    /* Messages libpq already holds raise no socket event: drain them from a timer. */
    msm_loop_timer_start(pg->pg_loop, &pg->pg_kick, 0, on_kick, pg);
}

static void on_io(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop;
    (void)fd;
    pgc_pg_t *pg = opaque;
    if (pg->pg_state == PG_CONNECTING) {
        step_connect(pg);
        return;
    }
    if ((events & MSM_LOOP_WRITE) && pg->pg_want_write &&
        flush_output(pg, pg->pg_state != PG_COPY || !pg->pg_paused) != 0) {
        fail(pg, "send: ");
        return;
    }
    if (!(events & (MSM_LOOP_READ | MSM_LOOP_ERROR)))
        return;
    if (!PQconsumeInput(pg->pg_conn)) {
        fail(pg, "");
        return;
    }
    if (pg->pg_state == PG_BUSY)
        step_query(pg);
    else if (pg->pg_state == PG_COPY)
        drain_copy(pg);
    else
        for (PGnotify *n; (n = PQnotifies(pg->pg_conn));) /* idle: nothing is expected */
            PQfreemem(n);
}
