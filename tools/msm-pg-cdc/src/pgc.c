/* SPDX-License-Identifier: MIT */
/* The adapter: settings, and the backlog, stream, monitor and range handler wired together. */
#include "pgc.h"
#include "pgc_backlog.h"
#include "pgc_monitor.h"
#include "pgc_range.h"
#include "pgc_repl.h"
#include "pgc_stats.h"

#include "msm/access.h"
#include "msm/err.h"
#include "msm/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const msm_conf_def_t pgc_conf_defs[] = {
    MSM_CONF_SERVING(pgc_conf_t, common, PGC_DEFAULT_PORT),
    MSM_CONF_SECRET_STR("pg.conninfo",
                        pgc_conf_t,
                        pg_conninfo,
                        "",
                        "libpq connection string or URI of the database to stream (PG* "
                        "variables and ~/.pgpass apply); its role needs REPLICATION"),
    MSM_CONF_STR("pg.slot",
                 pgc_conf_t,
                 pg_slot,
                 "msm_cdc",
                 "logical replication slot, [a-z0-9_]{1,63}; created with wal2json if missing"),
    MSM_CONF_STR("pg.tables",
                 pgc_conf_t,
                 pg_tables,
                 "",
                 "only these tables, wal2json add-tables: schema.table,… ('*' wildcards); "
                 "\"\": every table. Change it only with a new slot (README.md)"),
    MSM_CONF_STR("pg.filter_tables",
                 pgc_conf_t,
                 pg_filter_tables,
                 "",
                 "leave these tables out, wal2json filter-tables; same rule"),
    MSM_CONF_INT("pg.connect_timeout_ms",
                 pgc_conf_t,
                 pg_connect_timeout_ms,
                 10000,
                 100,
                 600000,
                 "a connection not up by then is retried"),
    MSM_CONF_INT("pg.status_interval_ms",
                 pgc_conf_t,
                 pg_status_interval_ms,
                 10000,
                 100,
                 600000,
                 "standby status updates at least this often (below wal_sender_timeout)"),
    MSM_CONF_INT("pg.monitor_interval_ms",
                 pgc_conf_t,
                 pg_monitor_interval_ms,
                 5000,
                 0,
                 3600000,
                 "how often the slot's lag is measured on a second connection (0: never)"),
    MSM_CONF_INT("pg.retry_max_ms",
                 pgc_conf_t,
                 pg_retry_max_ms,
                 30000,
                 200,
                 3600000,
                 "longest wait between reconnects"),
    MSM_CONF_STR("range.partition",
                 pgc_conf_t,
                 range_partition,
                 "p0",
                 "the partition name served: the slot's changes in commit order"),
    MSM_CONF_INT("range.default_limit",
                 pgc_conf_t,
                 range_default_limit,
                 500,
                 1,
                 100000,
                 "changes per answer when the request has no limit"),
    MSM_CONF_INT("range.max_limit",
                 pgc_conf_t,
                 range_max_limit,
                 10000,
                 1,
                 100000,
                 "largest limit a request may ask (more: 400)"),
    MSM_CONF_INT("range.wait_ms",
                 pgc_conf_t,
                 range_wait_ms,
                 500,
                 0,
                 60000,
                 "a request finding nothing waits this long for changes (0: answers at once)"),
    MSM_CONF_INT("range.max_response_bytes",
                 pgc_conf_t,
                 range_max_response_bytes,
                 16LL * 1024 * 1024,
                 4096,
                 1024LL * 1024 * 1024,
                 "an answer stops adding changes past this size (one change at least)"),
    MSM_CONF_INT("buffer.max_changes",
                 pgc_conf_t,
                 buffer_max_changes,
                 20000,
                 1,
                 10000000,
                 "changes held in memory unacknowledged; reading pauses at the limit"),
    MSM_CONF_INT("buffer.max_bytes",
                 pgc_conf_t,
                 buffer_max_bytes,
                 64LL * 1024 * 1024,
                 4096,
                 64LL * 1024 * 1024 * 1024,
                 "bytes of changes held in memory, the same way"),
    MSM_CONF_INT("changes.max_data_bytes",
                 pgc_conf_t,
                 changes_max_data_bytes,
                 1024 * 1024,
                 64,
                 1024LL * 1024 * 1024,
                 "a row's JSON over this is served as {\"msm_truncated_bytes\":N}"),
};
const size_t pgc_conf_ndefs = MSM_CONF_COUNT(pgc_conf_defs);

/* The range needs a valid token when auth.tokens is on; the rest needs admin. */
static const msm_access_rule_t pgc_access[] = {
    {"GET", PGC_RANGE_PATH, MSM_ACCESS_ANY, NULL},
};

struct pgc_s {
    msm_daemon_t *p_daemon;
    pgc_stats_t p_stats;
    pgc_backlog_t *p_backlog;
    pgc_repl_t *p_repl;
    pgc_monitor_t *p_monitor;
    pgc_range_t *p_range;
    int p_stopped;
};

static int slot_name_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 63 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

static int partition_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 200 &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static void on_news(void *opaque)
{
    pgc_t *p = opaque;
    if (p->p_range)
        pgc_range_news(p->p_range);
}

pgc_t *pgc_new(msm_daemon_t *d, const pgc_conf_t *conf, char *err, size_t n)
{
    if (!slot_name_valid(conf->pg_slot)) {
        snprintf(err, n, "pg.slot %s: must match [a-z0-9_]{1,63}", conf->pg_slot);
        return NULL;
    }
    if (!partition_valid(conf->range_partition)) {
        snprintf(err, n, "range.partition %s: must match [A-Za-z0-9._-]{1,200}",
                 conf->range_partition);
        return NULL;
    }
    if (conf->range_default_limit > conf->range_max_limit) {
        snprintf(err, n, "range.default_limit %d is above range.max_limit %d",
                 conf->range_default_limit, conf->range_max_limit);
        return NULL;
    }
    pgc_t *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, n, "out of memory");
        return NULL;
    }
    p->p_daemon = d;
    msm_loop_t *loop = msm_daemon_loop(d);
    const pgc_repl_conf_t rc = {
        .conninfo = conf->pg_conninfo,
        .slot = conf->pg_slot,
        .add_tables = conf->pg_tables,
        .filter_tables = conf->pg_filter_tables,
        .connect_timeout_ms = (unsigned)conf->pg_connect_timeout_ms,
        .status_interval_ms = (unsigned)conf->pg_status_interval_ms,
        .retry_max_ms = (unsigned)conf->pg_retry_max_ms,
        .decode = {.max_data_bytes = (size_t)conf->changes_max_data_bytes,
                   .max_entity_bytes = 1024 /* msm's key limit (docs/publish.md) */},
    };
    const pgc_range_conf_t gc = {
        .partition = conf->range_partition,
        .default_limit = (unsigned)conf->range_default_limit,
        .max_limit = (unsigned)conf->range_max_limit,
        .wait_ms = (unsigned)conf->range_wait_ms,
        .max_response_bytes = (size_t)conf->range_max_response_bytes,
    };
    if (pgc_stats_init(&p->p_stats, msm_daemon_metrics(d)) != MSM_OK ||
        !(p->p_backlog =
              pgc_backlog_new((size_t)conf->buffer_max_changes, (size_t)conf->buffer_max_bytes)) ||
        !(p->p_repl = pgc_repl_new(loop, &rc, p->p_backlog, &p->p_stats, on_news, p)) ||
        !(p->p_range = pgc_range_new(loop, &gc, p->p_backlog, &p->p_stats))) {
        snprintf(err, n, "out of memory");
        goto fail;
    }
    if (conf->pg_monitor_interval_ms > 0 &&
        !(p->p_monitor = pgc_monitor_new(loop, conf->pg_conninfo, conf->pg_slot,
                                         (unsigned)conf->pg_monitor_interval_ms,
                                         (unsigned)conf->pg_connect_timeout_ms, &p->p_stats))) {
        snprintf(err, n, "out of memory");
        goto fail;
    }
    pgc_range_attach(p->p_range, p->p_repl, p->p_monitor);
    if (msm_http_server_route(msm_daemon_http(d), "GET", PGC_RANGE_PATH, pgc_range_handle,
                              p->p_range) != MSM_OK) {
        snprintf(err, n, "cannot route %s", PGC_RANGE_PATH);
        goto fail;
    }
    msm_daemon_set_access(d, pgc_access, MSM_CONF_COUNT(pgc_access));
    msm_log(MSM_LOG_INFO, "pg-cdc", "slot %s, partition %s, tables %s", conf->pg_slot,
            conf->range_partition, *conf->pg_tables ? conf->pg_tables : "(all)");
    pgc_repl_start(p->p_repl);
    if (p->p_monitor)
        pgc_monitor_start(p->p_monitor);
    return p;
fail:
    pgc_free(p);
    return NULL;
}

void pgc_stop(void *opaque)
{
    pgc_t *p = opaque;
    if (p->p_stopped)
        return;
    p->p_stopped = 1;
    pgc_range_stop(p->p_range);
    pgc_repl_stop(p->p_repl);
}

int pgc_drained(void *opaque)
{
    pgc_t *p = opaque;
    return pgc_range_waiting(p->p_range) == 0;
}

int pgc_ready(void *opaque, char *why, size_t n)
{
    pgc_t *p = opaque;
    return pgc_repl_streaming(p->p_repl, why, n);
}

void pgc_free(pgc_t *p)
{
    if (!p)
        return;
    pgc_range_free(p->p_range); /* answers what waits while the server is still there */
    p->p_range = NULL;
    pgc_monitor_free(p->p_monitor);
    pgc_repl_free(p->p_repl);
    pgc_backlog_free(p->p_backlog);
    free(p);
}
