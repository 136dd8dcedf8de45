/* SPDX-License-Identifier: MIT */
/* The logical replication stream of one slot (pgc_repl.h). Protocol: PostgreSQL's
 * "Streaming Replication Protocol" over COPY BOTH: the server sends XLogData ('w': one
 * wal2json message each) and keepalives ('k'); we send standby status updates ('r') whose
 * flush position is the slot's new confirmed_flush_lsn. */
#include "pgc_repl.h"
#include "pgc_pg.h"
#include "pgc_seq.h"

#include "msm/backoff.h"
#include "msm/buf.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC          "stream"
#define RETRY_MIN_MS 200
/* Microseconds from the Unix epoch to PostgreSQL's (2000-01-01). */
#define PG_EPOCH_US INT64_C(946684800000000)

typedef enum {
    R_STOPPED,
    R_CONNECTING,
    R_CHECK_SLOT,
    R_CREATE_SLOT,
    R_STARTING,
    R_STREAMING,
    R_RETRY_WAIT,
    R_HALTED, /* a change cannot be served (README.md "Limits"): needs an operator */
} repl_state_t;

struct pgc_repl_s {
    msm_loop_t *r_loop;
    char *r_conninfo, *r_slot, *r_add_tables, *r_filter_tables;
    unsigned r_connect_timeout_ms, r_status_interval_ms, r_retry_max_ms;
    pgc_decode_conf_t r_decode;
    pgc_backlog_t *r_backlog;
    pgc_stats_t *r_stats;
    pgc_repl_news_cb *r_news;
    void *r_opaque;
    pgc_pg_t *r_pg;
    repl_state_t r_state;
    uint32_t r_attempt;
    char r_why[512];      /* why not streaming */
    uint64_t r_confirmed; /* the slot's confirmed_flush_lsn as we last set (or found) it */
    uint64_t r_received;  /* the highest position the server reported */
    int r_paused;
    int r_news_pending; /* changes added since the last news */
    msm_timer_t r_retry;
    msm_timer_t r_status;
};

static void set_why(pgc_repl_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_why(pgc_repl_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->r_why, sizeof(r->r_why), fmt, ap);
    va_end(ap);
}

static void on_retry(msm_loop_t *loop, void *opaque);

/* The stream is gone: forget what it brought (a new one starts at the slot's confirmed
 * position and numbers the same changes the same way) and try again later. */
static void stream_down(pgc_repl_t *r, int retry)
{
    msm_loop_timer_stop(r->r_loop, &r->r_status);
    pgc_pg_close(r->r_pg);
    pgc_backlog_reset(r->r_backlog);
    r->r_paused = 0;
    msm_gauge_set(r->r_stats->stream_up, 0);
    msm_gauge_set(r->r_stats->backlog_changes, 0);
    msm_gauge_set(r->r_stats->backlog_bytes, 0);
    if (retry) {
        uint64_t delay = msm_backoff_delay_ms(r->r_attempt++, RETRY_MIN_MS, r->r_retry_max_ms);
        r->r_state = R_RETRY_WAIT;
        msm_loop_timer_start(r->r_loop, &r->r_retry, delay, on_retry, r);
    }
    if (r->r_news)
        r->r_news(r->r_opaque);
}

static void halt(pgc_repl_t *r)
{
    msm_log(MSM_LOG_ERROR, FAC, "stream halted: %s", r->r_why);
    stream_down(r, 0);
    r->r_state = R_HALTED;
}

/* ---- standby status updates ---- */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void send_status(pgc_repl_t *r)
{
    if (r->r_state != R_STREAMING)
        return;
    uint8_t msg[34];
    msg[0] = 'r';
    put64(msg + 1, r->r_received);  /* written: what we have seen */
    put64(msg + 9, r->r_confirmed); /* flushed: the slot's confirmed_flush_lsn from now on */
    put64(msg + 17, r->r_confirmed);
    put64(msg + 25, (uint64_t)(msm_time_unix_ms() * 1000 - PG_EPOCH_US));
    msg[33] = 0;
    pgc_pg_copy_send(r->r_pg, msg, sizeof(msg));
}

/* Confirms what became safe; sends a status update when it moved (or when @p always). */
static void confirm(pgc_repl_t *r, int always)
{
    uint64_t p = pgc_backlog_confirmable(r->r_backlog);
    int moved = p > r->r_confirmed;
    if (moved) {
        r->r_confirmed = p;
        msm_gauge_set(r->r_stats->confirmed_lsn, (double)p);
    }
    if (moved || always)
        send_status(r);
}

static void on_status_timer(msm_loop_t *loop, void *opaque)
{
    pgc_repl_t *r = opaque;
    confirm(r, 1); /* also keeps wal_sender_timeout from ending a paused stream */
    msm_loop_timer_start(loop, &r->r_status, r->r_status_interval_ms, on_status_timer, r);
}

/* ---- the stream's messages ---- */

static void gauges(pgc_repl_t *r)
{
    msm_gauge_set(r->r_stats->backlog_changes, (double)pgc_backlog_count(r->r_backlog));
    msm_gauge_set(r->r_stats->backlog_bytes, (double)pgc_backlog_bytes(r->r_backlog));
}

static void news(pgc_repl_t *r)
{
    gauges(r);
    if (r->r_news_pending && r->r_news) {
        r->r_news_pending = 0;
        r->r_news(r->r_opaque);
    }
}

/* One wal2json message. @returns 0, or -1 when the stream halted. */
static int on_wal2json(pgc_repl_t *r, const char *text, size_t len)
{
    pgc_msg_t m;
    char err[256];
    int rc = pgc_decode(text, len, &r->r_decode, &m, err, sizeof(err));
    if (rc != MSM_OK) {
        set_why(r, "cannot decode a wal2json message (%s): %.*s", err, (int)(len > 200 ? 200 : len),
                text);
        halt(r);
        return -1;
    }
    switch (m.kind) {
    case PGC_MSG_BEGIN:
        /* Its commit record exists: a cursor inside this transaction is not "ahead". */
        if (m.next_lsn > r->r_received)
            r->r_received = m.next_lsn;
        pgc_backlog_begin(r->r_backlog, m.lsn, m.next_lsn);
        break;
    case PGC_MSG_COMMIT:
        pgc_backlog_commit(r->r_backlog);
        msm_counter_inc(r->r_stats->transactions);
        news(r);
        break;
    case PGC_MSG_CHANGES:
        if (m.truncated) {
            msm_counter_inc(r->r_stats->truncated_data);
            msm_log(MSM_LOG_WARN, FAC,
                    "a row over changes.max_data_bytes: served without its "
                    "columns (%.200s)",
                    m.changes[0].json);
        }
        for (size_t i = 0; i < m.nchanges; i++) {
            rc = pgc_backlog_add(r->r_backlog, m.changes[i].json, m.changes[i].len);
            m.changes[i].json = NULL; /* taken */
            if (rc != MSM_OK) {
                pgc_msg_clear(&m);
                set_why(r, rc == MSM_ERR_TOOLARGE
                               ? "more than 2^29 changes commit within one 16 MiB unit of WAL: "
                                 "they cannot be numbered (README.md, Limits)"
                               : "a change outside a transaction");
                halt(r);
                return -1;
            }
            msm_counter_inc(r->r_stats->changes_read);
            r->r_news_pending = 1;
        }
        break;
    case PGC_MSG_SKIP:
        msm_counter_inc(strcmp(m.what, "truncate") == 0 ? r->r_stats->skipped_truncate
                                                        : r->r_stats->skipped_message);
        if (strcmp(m.what, "truncate") == 0)
            msm_log(MSM_LOG_WARN, FAC,
                    "a TRUNCATE was read: it deletes rows without row "
                    "changes, none is served");
        break;
    }
    pgc_msg_clear(&m);
    return 0;
}

static int on_copy_data(pgc_pg_t *pg, const char *data, size_t len, void *opaque)
{
    (void)pg;
    pgc_repl_t *r = opaque;
    const uint8_t *p = (const uint8_t *)data;
    if (len >= 25 && p[0] == 'w') {
        uint64_t at = get64(p + 1);
        if (at > r->r_received)
            r->r_received = at;
        if (on_wal2json(r, data + 25, len - 25) != 0)
            return 1;
    } else if (len >= 18 && p[0] == 'k') {
        uint64_t end = get64(p + 1);
        if (end > r->r_received)
            r->r_received = end;
        pgc_backlog_progress(r->r_backlog, end);
        confirm(r, p[17] != 0);
    }
    if (pgc_backlog_full(r->r_backlog)) {
        /* Stop reading: the server waits (TCP), the status timer keeps it patient. */
        r->r_paused = 1;
        news(r);
        return 1;
    }
    return 0;
}

/* ---- set-up: slot, then START_REPLICATION ---- */

/* Appends 'text' as a string constant of the replication grammar (quotes doubled). */
static int append_literal(msm_buf_t *b, const char *text)
{
    if (msm_buf_append(b, "'", 1) != MSM_OK)
        return MSM_ERR_NOMEM;
    for (const char *s = text; *s; s++)
        if (msm_buf_append(b, s, 1) != MSM_OK || (*s == '\'' && msm_buf_append(b, s, 1)))
            return MSM_ERR_NOMEM;
    return msm_buf_append(b, "'", 1);
}

static int start_replication(pgc_repl_t *r)
{
    msm_buf_t q = {0};
    char head[256];
    snprintf(head, sizeof(head),
             "START_REPLICATION SLOT %s LOGICAL 0/0 (\"format-version\" '2', \"include-lsn\" "
             "'1', \"include-pk\" '1', \"include-transaction\" '1', \"include-types\" '1', "
             "\"include-schemas\" '1'",
             r->r_slot);
    int rc = msm_buf_append(&q, head, strlen(head));
    if (rc == MSM_OK && r->r_add_tables && *r->r_add_tables &&
        (rc = msm_buf_append(&q, ", \"add-tables\" ", 15)) == MSM_OK)
        rc = append_literal(&q, r->r_add_tables);
    if (rc == MSM_OK && r->r_filter_tables && *r->r_filter_tables &&
        (rc = msm_buf_append(&q, ", \"filter-tables\" ", 18)) == MSM_OK)
        rc = append_literal(&q, r->r_filter_tables);
    if (rc == MSM_OK)
        rc = msm_buf_append(&q, ")", 1);
    if (rc == MSM_OK) {
        r->r_state = R_STARTING;
        rc = pgc_pg_query(r->r_pg, (const char *)q.data);
    }
    msm_buf_deinit(&q);
    return rc;
}

static void check_slot(pgc_repl_t *r)
{
    char q[512];
    snprintf(q, sizeof(q),
             "SELECT plugin, slot_type, database = current_database(), confirmed_flush_lsn "
             "FROM pg_catalog.pg_replication_slots WHERE slot_name = '%s'",
             r->r_slot);
    r->r_state = R_CHECK_SLOT;
    pgc_pg_query(r->r_pg, q);
}

static void on_connected(pgc_pg_t *pg, void *opaque)
{
    (void)pg;
    check_slot(opaque);
}

/* The slot as it is: ours to stream, to create, or someone else's. */
static void on_slot(pgc_repl_t *r, PGresult *res)
{
    if (PQntuples(res) == 0) {
        msm_log(MSM_LOG_INFO, FAC, "creating replication slot %s (wal2json)", r->r_slot);
        char q[256];
        snprintf(q, sizeof(q), "CREATE_REPLICATION_SLOT %s LOGICAL wal2json NOEXPORT_SNAPSHOT",
                 r->r_slot);
        r->r_state = R_CREATE_SLOT;
        pgc_pg_query(r->r_pg, q);
        return;
    }
    const char *plugin = PQgetvalue(res, 0, 0), *type = PQgetvalue(res, 0, 1);
    if (strcmp(type, "logical") != 0 || strcmp(plugin, "wal2json") != 0 ||
        strcmp(PQgetvalue(res, 0, 2), "t") != 0) {
        set_why(r,
                "replication slot %s exists but is not a logical wal2json slot of this "
                "database (%s, %s)",
                r->r_slot, type, plugin);
        msm_log(MSM_LOG_ERROR, FAC, "%s", r->r_why);
        stream_down(r, 1);
        return;
    }
    pgc_lsn_parse(PQgetvalue(res, 0, 3), &r->r_confirmed);
    if (start_replication(r) != MSM_OK) {
        set_why(r, "out of memory");
        stream_down(r, 1);
    }
}

static void on_result(pgc_pg_t *pg, PGresult *res, void *opaque)
{
    (void)pg;
    pgc_repl_t *r = opaque;
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && st != PGRES_COPY_BOTH) {
        char msg[400];
        snprintf(msg, sizeof(msg), "%s", res ? PQresultErrorMessage(res) : "no result");
        msg[strcspn(msg, "\n")] = '\0';
        set_why(r, "%s: %s",
                r->r_state == R_CHECK_SLOT    ? "reading the slot"
                : r->r_state == R_CREATE_SLOT ? "creating the slot"
                                              : "START_REPLICATION",
                msg);
        msm_log(MSM_LOG_WARN, FAC, "%s", r->r_why);
        stream_down(r, 1);
        return;
    }
    switch (r->r_state) {
    case R_CHECK_SLOT:
        on_slot(r, res);
        break;
    case R_CREATE_SLOT:
        if (PQntuples(res) > 0)
            pgc_lsn_parse(PQgetvalue(res, 0, 1), &r->r_confirmed);
        if (start_replication(r) != MSM_OK) {
            set_why(r, "out of memory");
            stream_down(r, 1);
        }
        break;
    case R_STARTING: {
        char lsn[PGC_LSN_TEXT];
        r->r_state = R_STREAMING;
        r->r_attempt = 0;
        r->r_why[0] = '\0';
        r->r_received = 0;
        r->r_news_pending = 0;
        pgc_backlog_reset(r->r_backlog);
        msm_gauge_set(r->r_stats->stream_up, 1);
        msm_gauge_set(r->r_stats->confirmed_lsn, (double)r->r_confirmed);
        msm_log(MSM_LOG_INFO, FAC, "streaming slot %s from %s", r->r_slot,
                pgc_lsn_format(r->r_confirmed, lsn));
        msm_loop_timer_start(r->r_loop, &r->r_status, r->r_status_interval_ms, on_status_timer, r);
        break;
    }
    default:
        break;
    }
}

static void on_failed(pgc_pg_t *pg, const char *why, void *opaque)
{
    (void)pg;
    pgc_repl_t *r = opaque;
    if (r->r_state == R_STREAMING)
        msm_counter_inc(r->r_stats->stream_failures);
    set_why(r, "%s", why);
    msm_log(MSM_LOG_WARN, FAC, "replication connection: %s", why);
    stream_down(r, 1);
}

static void on_retry(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    pgc_repl_t *r = opaque;
    r->r_state = R_CONNECTING;
    pgc_pg_connect(r->r_pg, r->r_connect_timeout_ms);
}

/* ---- the object ---- */

pgc_repl_t *pgc_repl_new(msm_loop_t *loop,
                         const pgc_repl_conf_t *conf,
                         pgc_backlog_t *backlog,
                         pgc_stats_t *stats,
                         pgc_repl_news_cb *news_cb,
                         void *opaque)
{
    static const pgc_pg_handlers_t handlers = {on_connected, on_result, on_copy_data, on_failed};
    pgc_repl_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->r_loop = loop;
    r->r_conninfo = strdup(conf->conninfo ? conf->conninfo : "");
    r->r_slot = strdup(conf->slot);
    r->r_add_tables = conf->add_tables ? strdup(conf->add_tables) : NULL;
    r->r_filter_tables = conf->filter_tables ? strdup(conf->filter_tables) : NULL;
    r->r_connect_timeout_ms = conf->connect_timeout_ms;
    r->r_status_interval_ms = conf->status_interval_ms;
    r->r_retry_max_ms = conf->retry_max_ms;
    r->r_decode = conf->decode;
    r->r_backlog = backlog;
    r->r_stats = stats;
    r->r_news = news_cb;
    r->r_opaque = opaque;
    msm_timer_init(&r->r_retry);
    msm_timer_init(&r->r_status);
    set_why(r, "not connected yet");
    if (!r->r_conninfo || !r->r_slot || (conf->add_tables && !r->r_add_tables) ||
        (conf->filter_tables && !r->r_filter_tables) ||
        !(r->r_pg = pgc_pg_new(loop, r->r_conninfo, 1, &handlers, r))) {
        pgc_repl_free(r);
        return NULL;
    }
    return r;
}

void pgc_repl_free(pgc_repl_t *r)
{
    if (!r)
        return;
    msm_loop_timer_stop(r->r_loop, &r->r_retry);
    msm_loop_timer_stop(r->r_loop, &r->r_status);
    pgc_pg_free(r->r_pg);
    free(r->r_conninfo);
    free(r->r_slot);
    free(r->r_add_tables);
    free(r->r_filter_tables);
    free(r);
}

void pgc_repl_start(pgc_repl_t *r)
{
    r->r_state = R_CONNECTING;
    pgc_pg_connect(r->r_pg, r->r_connect_timeout_ms);
}

void pgc_repl_stop(pgc_repl_t *r)
{
    confirm(r, 1);
    msm_loop_timer_stop(r->r_loop, &r->r_retry);
    msm_loop_timer_stop(r->r_loop, &r->r_status);
    pgc_pg_close(r->r_pg);
    r->r_state = R_STOPPED;
    set_why(r, "stopping");
}

int pgc_repl_streaming(const pgc_repl_t *r, char *why, size_t n)
{
    if (r->r_state == R_STREAMING)
        return 1;
    if (why)
        snprintf(why, n, "%s", r->r_why);
    return 0;
}

int pgc_repl_paused(const pgc_repl_t *r)
{
    return r->r_paused;
}

void pgc_repl_acked(pgc_repl_t *r)
{
    if (r->r_state != R_STREAMING)
        return;
    confirm(r, 0);
    gauges(r);
    if (r->r_paused && !pgc_backlog_full(r->r_backlog)) {
        r->r_paused = 0;
        pgc_pg_copy_resume(r->r_pg);
    }
}

uint64_t pgc_repl_received(const pgc_repl_t *r)
{
    return r->r_received;
}
