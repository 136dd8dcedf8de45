/* SPDX-License-Identifier: MIT */
/* Registration of the adapter's metrics (pgc_stats.h). */
#include "pgc_stats.h"

#include "msm/err.h"

#include <stddef.h>

static msm_metric_child_t *
solo(msm_metrics_t *reg, int gauge, const char *name, const char *help, int *rc)
{
    msm_metric_t *fam = NULL;
    int r = gauge ? msm_metrics_gauge(reg, name, help, NULL, &fam)
                  : msm_metrics_counter(reg, name, help, NULL, &fam);
    if (r != MSM_OK && *rc == MSM_OK)
        *rc = r;
    return fam ? msm_metric_solo(fam) : NULL;
}

int pgc_stats_init(pgc_stats_t *st, msm_metrics_t *reg)
{
    int rc = MSM_OK;
    st->changes_read = solo(reg, 0, "msm_pg_cdc_changes_read_total",
                            "row changes read from the replication slot", &rc);
    st->changes_served = solo(reg, 0, "msm_pg_cdc_changes_served_total",
                              "changes sent in range answers (a retried range counts again)", &rc);
    st->transactions = solo(reg, 0, "msm_pg_cdc_transactions_total",
                            "transactions read from the slot (empty ones included)", &rc);
    st->skipped_truncate = solo(reg, 0, "msm_pg_cdc_truncates_skipped_total",
                                "TRUNCATEs read and not served (no row changes)", &rc);
    st->skipped_message = solo(reg, 0, "msm_pg_cdc_messages_skipped_total",
                               "logical decoding messages read and not served", &rc);
    st->truncated_data = solo(reg, 0, "msm_pg_cdc_data_truncated_total",
                              "changes whose data was over changes.max_data_bytes", &rc);
    st->stream_failures = solo(reg, 0, "msm_pg_cdc_stream_failures_total",
                               "replication connections that failed or broke", &rc);
    st->stream_up = solo(reg, 1, "msm_pg_cdc_stream_up", "1 while the slot is streaming", &rc);
    st->backlog_changes = solo(reg, 1, "msm_pg_cdc_backlog_changes",
                               "changes read and not yet acknowledged, in memory", &rc);
    st->backlog_bytes =
        solo(reg, 1, "msm_pg_cdc_backlog_bytes", "bytes of the changes in memory", &rc);
    st->acked_sequence = solo(reg, 1, "msm_pg_cdc_acked_sequence",
                              "the highest sequence acknowledged by a range request", &rc);
    st->confirmed_lsn = solo(reg, 1, "msm_pg_cdc_confirmed_lsn",
                             "the WAL position confirmed to the slot (bytes)", &rc);
    st->slot_lag_bytes = solo(reg, 1, "msm_pg_cdc_slot_lag_bytes",
                              "server WAL position minus the slot's confirmed_flush_lsn", &rc);
    st->slot_retained_bytes = solo(reg, 1, "msm_pg_cdc_slot_retained_bytes",
                                   "server WAL position minus the slot's restart_lsn: WAL kept "
                                   "for the slot",
                                   &rc);
    static const char *const code[] = {"code", NULL};
    int r = msm_metrics_counter(reg, "msm_pg_cdc_range_requests_total",
                                "range requests answered, by HTTP status", code, &st->requests);
    if (r != MSM_OK && rc == MSM_OK)
        rc = r;
    msm_metric_t *lat = NULL;
    r = msm_metrics_histogram(reg, "msm_pg_cdc_range_request_seconds",
                              "range request latency, waiting for changes included", NULL, NULL, 0,
                              &lat);
    if (r != MSM_OK && rc == MSM_OK)
        rc = r;
    st->request_seconds = lat ? msm_metric_solo(lat) : NULL;
    return rc;
}
