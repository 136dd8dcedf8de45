/* SPDX-License-Identifier: MIT */
/* The slot monitor (pgc_monitor.h): one small query per interval on its own connection. */
#include "pgc_monitor.h"
#include "pgc_pg.h"
#include "pgc_seq.h"

#include "msm/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "monitor"

struct pgc_monitor_s {
    msm_loop_t *m_loop;
    pgc_pg_t *m_pg;
    char m_query[512];
    unsigned m_interval_ms, m_connect_timeout_ms;
    pgc_stats_t *m_stats;
    int m_connecting, m_busy, m_warned;
    int m_lsn_known;
    uint64_t m_lsn;
    msm_timer_t m_tick;
};

static void look(pgc_monitor_t *m)
{
    if (m->m_busy)
        return;
    if (!pgc_pg_up(m->m_pg)) {
        if (!m->m_connecting) {
            m->m_connecting = 1;
            pgc_pg_connect(m->m_pg, m->m_connect_timeout_ms);
        }
        return;
    }
    if (pgc_pg_query(m->m_pg, m->m_query) == 0)
        m->m_busy = 1;
}

static void on_tick(msm_loop_t *loop, void *opaque)
{
    pgc_monitor_t *m = opaque;
    look(m);
    msm_loop_timer_start(loop, &m->m_tick, m->m_interval_ms, on_tick, m);
}

static void on_connected(pgc_pg_t *pg, void *opaque)
{
    (void)pg;
    pgc_monitor_t *m = opaque;
    m->m_connecting = 0;
    look(m);
}

static void on_result(pgc_pg_t *pg, PGresult *res, void *opaque)
{
    (void)pg;
    pgc_monitor_t *m = opaque;
    m->m_busy = 0;
    uint64_t now, confirmed, restart;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
        pgc_lsn_parse(PQgetvalue(res, 0, 0), &now) != 0)
        return;
    m->m_lsn = now;
    m->m_lsn_known = 1;
    if (pgc_lsn_parse(PQgetvalue(res, 0, 1), &confirmed) == 0 && now >= confirmed)
        msm_gauge_set(m->m_stats->slot_lag_bytes, (double)(now - confirmed));
    if (pgc_lsn_parse(PQgetvalue(res, 0, 2), &restart) == 0 && now >= restart)
        msm_gauge_set(m->m_stats->slot_retained_bytes, (double)(now - restart));
}

static int on_copy_data(pgc_pg_t *pg, const char *data, size_t len, void *opaque)
{
    (void)pg;
    (void)data;
    (void)len;
    (void)opaque;
    return 1; /* never asked for */
}

static void on_failed(pgc_pg_t *pg, const char *why, void *opaque)
{
    (void)pg;
    pgc_monitor_t *m = opaque;
    m->m_connecting = m->m_busy = 0;
    if (!m->m_warned++)
        msm_log(MSM_LOG_WARN, FAC, "slot monitor connection: %s (retrying every interval)", why);
}

pgc_monitor_t *pgc_monitor_new(msm_loop_t *loop,
                               const char *conninfo,
                               const char *slot,
                               unsigned interval_ms,
                               unsigned connect_timeout_ms,
                               pgc_stats_t *stats)
{
    static const pgc_pg_handlers_t handlers = {on_connected, on_result, on_copy_data, on_failed};
    pgc_monitor_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->m_loop = loop;
    m->m_interval_ms = interval_ms;
    m->m_connect_timeout_ms = connect_timeout_ms;
    m->m_stats = stats;
    msm_timer_init(&m->m_tick);
    /* The slot name is [a-z0-9_] (checked at start-up): no quoting needed. */
    snprintf(m->m_query, sizeof(m->m_query),
             "SELECT pg_current_wal_lsn(), s.confirmed_flush_lsn, s.restart_lsn FROM "
             "(SELECT 1) AS one LEFT JOIN pg_catalog.pg_replication_slots s ON s.slot_name = "
             "'%s'",
             slot);
    if (!(m->m_pg = pgc_pg_new(loop, conninfo ? conninfo : "", 0, &handlers, m))) {
        free(m);
        return NULL;
    }
    return m;
}

void pgc_monitor_free(pgc_monitor_t *m)
{
    if (!m)
        return;
    msm_loop_timer_stop(m->m_loop, &m->m_tick);
    pgc_pg_free(m->m_pg);
    free(m);
}

void pgc_monitor_start(pgc_monitor_t *m)
{
    msm_loop_timer_start(m->m_loop, &m->m_tick, 0, on_tick, m);
}

int pgc_monitor_server_lsn(const pgc_monitor_t *m, uint64_t *lsn)
{
    if (m && m->m_lsn_known)
        *lsn = m->m_lsn;
    return m && m->m_lsn_known;
}
