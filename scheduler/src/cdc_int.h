/* SPDX-License-Identifier: MIT */
/* The scheduler's CDC pull (docs/cdc.md): per (source, partition) with a range_url, the
 * scheduler holding its lease fetches `GET {range_url}?partition=P&after=<cursor>&limit=N`
 * and publishes the changes through the batch protocol the frontend's push shares
 * (msm/cdc_state.h). cdc_pull.c runs the partitions (fetch, claim, append, settle, backoff,
 * metrics); cdc_owner.c decides which partitions this scheduler pulls (leases shared with
 * the other schedulers) and hears :notify. scheduler.c only wires the module in. */
#ifndef MSM_SCH_CDC_INT_H
#define MSM_SCH_CDC_INT_H

#include "scheduler.h"

#include "msm/cdc_state.h"
#include "msm/http_client.h"
#include "msm/metrics.h"
#include "msm/registry.h"
#include "msm/schema_store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SCH_CDC_KEY_MAX 600

typedef struct sch_cdc_s sch_cdc_t;
typedef struct sch_cdc_src_s sch_cdc_src_t;

/** One partition of a pulled source. Lives while its source has it, and while a batch of it
 *  is in flight (a partition dropped meanwhile is freed when the batch ends). */
typedef struct sch_cdc_part_s {
    struct sch_cdc_part_s *next;
    sch_cdc_t *cdc;
    sch_cdc_src_t *src; /* NULL once dropped */
    char *source;       /* names, the part's own copies */
    char *name;
    int owned;               /* this scheduler holds the lease */
    uint64_t lease_until;    /* monotonic ms: surely ours until then */
    int64_t cursor;          /* last sequence published, as last read */
    int64_t notified;        /* highest sequence :notify named */
    int64_t seen;            /* highest sequence a range answer carried */
    int busy;                /* a fetch or a batch is in flight */
    int again;               /* fetch again once the batch ends (has_more, :notify) */
    msm_timer_t timer;       /* next fetch: poll interval or backoff */
    int waiting_backoff;     /* the timer is a backoff: :notify does not cut it short */
    uint32_t failures;       /* consecutive failed rounds */
    char backoff_reason[24]; /* what the partition is backing off from; "" when fine */
    /* the batch in flight */
    msm_http_call_t *call;
    uint64_t fetch_start_us;
    int64_t after;   /* the cursor the fetch asked after */
    json_t *changes; /* the answer's changes */
    int has_more;
    char token[40];       /* the batch's token (lock value, mark tag); "" when none */
    char *topic;          /* where the batch goes (the claim's) */
    int64_t claim_cursor; /* the claim's view: published up to here, and these above */
    int64_t *skip;
    size_t nskip;
    size_t published; /* changes the append carries */
    const char *fail; /* the batch failed: the backoff's reason once settled, or NULL */
    char fail_detail[400];
    msm_metric_child_t *m_lag, *m_pulled;
} sch_cdc_part_t;

struct sch_cdc_src_s {
    struct sch_cdc_src_s *next;
    char *name;
    char *topic;
    char *range_url;
    int poll_interval_ms;
    int batch_size;
    int keep; /* reconcile mark */
    sch_cdc_part_t *parts;
    msm_metric_child_t *m_latency;
};

/** A topic's schema binding as the last registry snapshot had it. */
typedef struct {
    char *topic;
    char *subject; /* NULL: unbound */
} sch_cdc_topic_t;

struct sch_cdc_s {
    msm_daemon_t *daemon;
    msm_loop_t *loop;
    msm_redis_t *redis;
    msm_stream_t *log;
    char member[256];
    /* settings */
    uint32_t fetch_timeout_ms;
    uint32_t lease_ms;
    uint32_t backoff_min_ms, backoff_max_ms;
    size_t max_event_bytes;
    msm_http_client_t *http;
    msm_cdc_state_t *state;
    msm_schema_store_t *schemas;
    sch_cdc_src_t *sources;
    sch_cdc_topic_t *topics;
    size_t ntopics;
    int stopping;
    int freed;
    size_t inflight; /* callbacks we wait for (they point at us or at a partition) */
    /* leases (cdc_owner.c) */
    msm_redis_script_t *lease_script;
    msm_redis_script_t *lease_script_release;
    msm_timer_t lease_timer;
    int lease_running;
    int lease_again;
    uint64_t lease_sent_ms;
    /* :notify (cdc_owner.c): its own connection, for the blocking reads */
    msm_redis_t *notify_redis;
    char notify_last[48];
    int notify_reading;
    int notify_first; /* the read in flight is the first: where to start */
    /* metrics */
    msm_metric_t *f_lag, *f_latency, *f_backoffs, *f_pulled;
    msm_metric_child_t *m_owned;
};

/* ---- cdc_pull.c ---- */
/** @brief A partition became ours (or is ours and was notified): fetch unless busy or
 *  backing off (@p notified: a :notify, which does not cut a backoff short). */
void sch__cdc_kick(sch_cdc_part_t *p, int notified);
/** @brief The partition is no longer ours: stop its timer (a batch in flight ends). */
void sch__cdc_lost(sch_cdc_part_t *p);
/** @brief Sets the partition's lag gauge from cursor, notified and seen. */
void sch__cdc_lag(sch_cdc_part_t *p);
/** @brief The partition @p name of source @p source, or NULL. */
sch_cdc_part_t *sch__cdc_part(sch_cdc_t *c, const char *source, const char *name);
/** @brief Counts one callback we wait for, and its end (the last one after a free frees). */
void sch__cdc_hold(sch_cdc_t *c);
void sch__cdc_release(sch_cdc_t *c);

/* ---- cdc_owner.c ---- */
/** @brief Runs a lease round now (or right after the running one). */
void sch__cdc_leases_now(sch_cdc_t *c);
/** @brief Starts or stops reading notifications: they matter while a source is pulled. */
void sch__cdc_notify_update(sch_cdc_t *c);
/** @brief Stopping: the timer ends, the leases we hold are given back, notifications stop. */
void sch__cdc_owner_stop(sch_cdc_t *c);
int sch__cdc_owner_init(sch_cdc_t *c);
void sch__cdc_owner_free(sch_cdc_t *c);

/* ---- the module's entry points, for scheduler.c ---- */
/** @brief The CDC pull on the daemon's loop, Redis and log. NULL when out of memory. */
sch_cdc_t *sch_cdc_new(msm_daemon_t *d,
                       const sch_conf_t *conf,
                       msm_metrics_t *metrics,
                       char *errbuf,
                       size_t errbuf_size);
/** @brief Brings the pulled sources in line with the registry snapshot. */
void sch_cdc_reconcile(sch_cdc_t *c, const msm_registry_t *reg);
/** @brief Stops taking new work; batches in flight end (drain with sch_cdc_drained()). */
void sch_cdc_stop(sch_cdc_t *c);
/** @brief Non-zero once no batch and no command of ours is in flight. */
int sch_cdc_drained(const sch_cdc_t *c);
/** @brief Frees the module; what is still in flight completes first. */
void sch_cdc_free(sch_cdc_t *c);

#endif
