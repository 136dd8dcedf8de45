/* SPDX-License-Identifier: MIT */
/* The adapter's Prometheus metrics (README.md "Metrics"), registered once by pgc_new() and
 * updated by the stream, the range handler and the monitor. */
#ifndef PGC_STATS_H
#define PGC_STATS_H

#include "msm/metrics.h"

typedef struct {
    msm_metric_child_t *changes_read;     /* numbered from the stream */
    msm_metric_child_t *changes_served;   /* sent in range answers (again after a retry) */
    msm_metric_child_t *transactions;     /* commits read */
    msm_metric_child_t *skipped_truncate; /* TRUNCATE: not a row change, not served */
    msm_metric_child_t *skipped_message;  /* logical decoding messages */
    msm_metric_child_t *truncated_data;   /* data over changes.max_data_bytes */
    msm_metric_child_t *stream_failures;  /* replication connection failures */
    msm_metric_child_t *stream_up;        /* 1 while streaming */
    msm_metric_child_t *backlog_changes;  /* buffered, not acknowledged */
    msm_metric_child_t *backlog_bytes;
    msm_metric_child_t *acked_sequence;      /* the highest acknowledged sequence */
    msm_metric_child_t *confirmed_lsn;       /* the slot position confirmed to PostgreSQL */
    msm_metric_child_t *slot_lag_bytes;      /* server WAL position - confirmed_flush_lsn */
    msm_metric_child_t *slot_retained_bytes; /* server WAL position - restart_lsn */
    msm_metric_t *requests;                  /* by code */
    msm_metric_child_t *request_seconds;     /* range answers, waiting included */
} pgc_stats_t;

/** @brief Registers the families in @p reg and fills @p st. @returns MSM_OK or an error. */
int pgc_stats_init(pgc_stats_t *st, msm_metrics_t *reg);

#endif
