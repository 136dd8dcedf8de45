/* SPDX-License-Identifier: MIT */
/* msm-scheduler (layer 2): consumes events.<topic> and fans every consumed batch out to the
 * subscriptions of its topic as msm.v1.TaskBatch records on ready.<subscription>; events
 * whose deliver_at lies ahead are held in Redis (sub:{s}:delayed + sub:{s}:delayed:events)
 * and appended to ready.<subscription> when due; recurring schedules publish an event to
 * their topic at every tick (recurring.c); CDC sources with a range_url are pulled into
 * events.<topic> (docs/cdc.md). The logic lives here, in the msm_scheduler library; main.c
 * only wires it to msm_daemon (see scheduler/README.md). */
#ifndef MSM_SCHEDULER_H
#define MSM_SCHEDULER_H

#include "msm/config.h"
#include "msm/daemon.h"

#include <stddef.h>
#include <stdint.h>

/** The daemon's settings: the shared ones plus the scheduler's own (scheduler.*). */
typedef struct {
    msm_common_conf_t common;
    int batch;            /**< scheduler.batch: most events per consumed batch */
    int max_unacked;      /**< scheduler.max_unacked: per topic, consumed and not yet acked */
    int record_max_tasks; /**< scheduler.record_max_tasks: most tasks per ready.<sub> record */
    int record_max_bytes; /**< scheduler.record_max_bytes: most bytes per ready.<sub> record */
    int fire_batch;       /**< scheduler.fire_batch: most delayed events claimed per sub per turn */
    int claim_lease_ms;   /**< scheduler.claim_lease_ms: how long claimed delayed ids are skipped */
    int delayed_poll_ms;  /**< scheduler.delayed_poll_ms: safety poll of the delayed sets */
    int retry_min_ms;     /**< scheduler.retry_min_ms: first backoff after a failed write */
    int retry_max_ms;     /**< scheduler.retry_max_ms: backoff cap */
    int registry_poll_ms; /**< scheduler.registry_poll_ms: how often the registry is polled */
    int schedules_grace_ms;     /**< schedules.misfire_grace_ms: later than this, a tick is missed */
    int schedules_catch_up_max; /**< schedules.catch_up_max: missed ticks "all" publishes at most */
    long long idempotency_window_ms; /**< publish.idempotency_window_ms: tick keys kept this long */
    /* CDC pull (docs/cdc.md) */
    int cdc_fetch_timeout_ms; /**< cdc.fetch_timeout_ms: a range request's whole time */
    int cdc_lease_ms;         /**< cdc.lease_ms: a partition's lease (taken over after it) */
    int cdc_backoff_min_ms;   /**< cdc.backoff_min_ms: first backoff of a failing partition */
    int cdc_backoff_max_ms;   /**< cdc.backoff_max_ms: backoff cap */
    int cdc_max_answer_bytes; /**< cdc.max_answer_bytes: a range answer's body at most */
    int cdc_max_event_bytes;  /**< cdc.max_event_bytes: one change's payload at most */
} sch_conf_t;

/** The settings table (MSM_CONF_COMMON with port 8081 first), shared by main.c and tests. */
extern const msm_conf_def_t sch_conf_defs[];
extern const size_t sch_conf_ndefs;

typedef struct scheduler_s scheduler_t;

/** Counters for tests and /debug: how often the module itself woke up, and its state. */
typedef struct {
    uint64_t delayed_timer_wakeups; /**< the one delayed-event timer fired */
    uint64_t delayed_cycles;        /**< scans of the delayed sets (each: one round trip) */
    uint64_t fanout_retries;        /**< failed fan-out writes retried after a backoff */
    size_t consumers;               /**< topic consumers running */
    size_t jobs;                    /**< consumed batches not yet acknowledged */
    size_t inflight;                /**< Redis commands and appends awaiting completion */
} sch_stats_t;

/**
 * @brief Creates the scheduler on @p d: watches the registry, consumes events.<topic> for
 * every topic with subscriptions (group "scheduler", member msm_daemon_member()), and runs
 * the delayed-event timer. Adds "registry loaded" to /readyz and registers its metrics.
 * @param conf read during the call only (the numbers are copied)
 * @returns NULL when out of memory.
 * @remark @p d must outlive the scheduler; loop thread only.
 */
scheduler_t *scheduler_new(msm_daemon_t *d, const sch_conf_t *conf);

/**
 * @brief Stops consuming and frees the scheduler. Consumed events not yet acknowledged are
 * redelivered (to this member name on its next start, or to another member after the
 * lease). Writes still in flight complete in the background without acknowledging
 * anything; the memory they need is released when the last one completes (at the latest
 * when the daemon frees its Redis and log clients).
 */
void scheduler_free(scheduler_t *s);

/** @brief msm_daemon_stop_cb: frees the consumers and stops the timers. */
void scheduler_stop(void *s);

/** @brief msm_daemon_drained_cb: non-zero once no write of ours and no append is pending. */
int scheduler_drained(void *s);

/** @brief Non-zero once the registry has been loaded (part of /readyz). */
int scheduler_ready(const scheduler_t *s);

/** @brief Copies the counters into @p out. */
void scheduler_stats(const scheduler_t *s, sch_stats_t *out);

#endif
