/* SPDX-License-Identifier: MIT */
/* The scheduler's internals shared by its files: the module, the per-topic consumers, the
 * per-subscription entries, and the entry points of fan-out (fanout.c) and of the delayed
 * events (delayed.c). */
#ifndef MSM_SCH_INT_H
#define MSM_SCH_INT_H

#include "scheduler.h"

#include "msm/trace.h"
#include "msm/envelope.h"
#include "msm/metrics.h"
#include "msm/registry.h"
#include "msm/schedule.h"
#include "msm/stream.h"

#include <stdint.h>

#define SCH_GROUP   "scheduler"
#define SCH_KEY_MAX 512

typedef struct sch_job_s sch_job_t;
typedef struct sch_cdc_s sch_cdc_t;

/** A topic with at least one subscription, and its consumer of events.<topic>. */
typedef struct sch_topic_s {
    struct sch_topic_s *next;
    scheduler_t *sch;
    char *name;
    char *stream;             /* "events.<topic>" */
    msm_consumer_t *consumer; /* NULL while the stream is being ensured */
    int partitions;           /* as ensured by us; 0 when not ensured (yet) */
    int ensuring;             /* msm_stream_ensure() in flight: its callback starts consuming */
    int removed;              /* dropped while ensuring: the callback frees the entry */
    int keep;                 /* reconcile mark */
    sch_job_t *jobs;          /* batches holding this consumer's messages */
    msm_metric_child_t *m_consumed, *m_invalid;
} sch_topic_t;

/** A subscription known to the registry: where its tasks go and its metric series. */
typedef struct sch_sub_s {
    struct sch_sub_s *next;
    char *name;
    char *topic;
    char *ready;     /* "ready.<sub>" */
    int ready_state; /* 0: not ensured, 1: ensure in flight, 2: ensured */
    int keep;        /* reconcile mark */
    msm_metric_child_t *m_fanned, *m_scheduled, *m_fired;
    msm_metric_child_t *m_filtered; /* events its filter kept out */
} sch_sub_t;

typedef struct sch_recurring_s sch_recurring_t;

struct scheduler_s {
    msm_daemon_t *daemon;
    msm_loop_t *loop;
    msm_redis_t *redis;
    msm_stream_t *stream;
    char member[256];
    sch_conf_t conf; /* numbers only: the strings stay the daemon's */
    msm_registry_t *registry;
    sch_topic_t *topics;
    sch_sub_t *subs;
    msm_redis_script_t *claim_script; /* delayed.c: claims the due ids of one subscription */
    sch_cdc_t *cdc;                   /* the CDC pull (cdc_pull.c, cdc_owner.c) */
    int stopping;
    int freed;       /* freed by the owner; the last completion destroys it */
    size_t inflight; /* completions we still wait for (they point at us) */
    size_t njobs;
    sch_stats_t stats;

    /* delayed events (delayed.c) */
    msm_timer_t delay_timer;
    int64_t delay_target_ms;  /* unix ms the timer is set for, while it is active */
    int cycle_running;        /* a claim cycle is in flight */
    int64_t hint_ms;          /* earliest deliver_at scheduled during the running cycle */
    uint32_t cycle_failures;  /* consecutive failed cycles: the retry backoff */
    size_t firing;            /* claimed batches whose append or removal is in flight */
    int fire_waiting;         /* a cycle waits for firing to go below its bound */
    uint32_t append_failures; /* consecutive failed appends of claimed events: their backoff */

    sch_recurring_t *recurring; /* recurring schedules (recurring.c) */

    /* metrics */
    msm_metric_t *f_consumed, *f_invalid, *f_fanned, *f_scheduled, *f_fired, *f_filtered;
    msm_metric_child_t *m_lateness, *m_retries, *m_consumers;
};

/* ---- scheduler.c ---- */
/** Counts one completion we wait for (a command, append or registry sync carrying a
 *  pointer to us). */
void sch__hold(scheduler_t *s);
/** The completion arrived: destroys the module when it was freed and this was the last. */
void sch__release(scheduler_t *s);
/** The subscription entry named @p name, or NULL. */
sch_sub_t *sch__sub(scheduler_t *s, const char *name);
/** Makes sure ready.<sub> exists (once per entry; again after a NOTFOUND). */
void sch__ensure_ready(scheduler_t *s, sch_sub_t *sub);
/** Backoff before retry number @p attempt of a failed write. */
uint64_t sch__backoff_ms(const scheduler_t *s, uint32_t attempt);
/** The ready.<sub> records of some tasks: packed TaskBatches back to back in one buffer. */
typedef struct {
    msm_buf_t buf;
    msm_record_t *recs; /* values point into buf, keys into the events */
    size_t n;
} sch_records_t;

/**
 * Packs Task{event, sub, attempt 0, PENDING} for each of @p evs, in order, into TaskBatch
 * records of at most record_max_tasks tasks and record_max_bytes bytes (a bigger single
 * task goes alone). A record's key is its first task's ordering key, else its key, else
 * none (round robin): a topic whose events share one key keeps its ready records in one
 * partition, in order.
 * @remark the keys are borrowed from @p evs: append before freeing them.
 */
int sch__records_build(const scheduler_t *s,
                       const char *sub,
                       Msm__V1__Event *const *evs,
                       size_t n,
                       sch_records_t *out);
void sch__records_deinit(sch_records_t *r);

/**
 * @brief Starts the scheduler's span of every sampled event of @p evs (NULL entries
 * skipped) and gives the event that span's traceparent, which its tasks carry on.
 */
void sch__trace_start(msm_spans_t *spans, Msm__V1__Event *const *evs, size_t n);
/** @brief Logs the spans sch__trace_start() made (@p sub: the one subscription, or NULL). */
void sch__trace_end(const msm_spans_t *spans, Msm__V1__Event *const *evs, size_t n,
                    const char *name, const char *sub);

/* ---- fanout.c ---- */
/** msm_consumer_batch_cb of every topic consumer (opaque: the sch_topic_t). */
void sch__on_events(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque);
/** The topic's consumer is about to be freed: its batches forget their messages. */
void sch__topic_detach_jobs(sch_topic_t *t);

/* ---- delayed.c ---- */
/** Runs a claim cycle now (or right after the running one). */
void sch__delayed_kick(scheduler_t *s);
/** A delayed event due at @p deliver_at_ms was scheduled: wake for it if it is earliest. */
void sch__delayed_hint(scheduler_t *s, int64_t deliver_at_ms);
/** Stops the timer (stop and free). */
void sch__delayed_stop(scheduler_t *s);

/* ---- recurring.c: recurring schedules (docs/schedules.md) ---- */
/** Registers its metrics; NULL when out of memory. */
sch_recurring_t *sch__recurring_new(scheduler_t *s);
/** The registry changed: a timer per schedule, started, replaced or stopped. */
void sch__recurring_sync(sch_recurring_t *rec);
/** Stops the timers; firings in flight finish their step and end. */
void sch__recurring_stop(sch_recurring_t *rec);
/** Frees it (nothing of it may be in flight: the scheduler's inflight count is 0). */
void sch__recurring_free(sch_recurring_t *rec);

/* ---- recurring_plan.c: which ticks a firing publishes (pure) ---- */
/** Missed ticks further back than this are dropped without being counted. */
#define SCH_CATCH_UP_LOOKBACK_MS (31LL * 24 * 3600 * 1000)

typedef struct {
    int64_t *due;     /* the due times to publish, in order */
    size_t n;
    int64_t last_ms;  /* the latest due time considered (<= now), or from_ms when none */
    uint64_t skipped; /* ticks catch_up skipped, counting only those after count_after_ms */
} sch_plan_t;

/**
 * The ticks of @p s due in (@p from_ms, @p now_ms]: those due at most @p grace_ms ago are on
 * time and published; older ones are missed and catch_up decides (none: skipped; last: the
 * latest published; all: the latest @p cap published, older ones skipped). Missed ticks
 * more than SCH_CATCH_UP_LOOKBACK_MS ago are dropped.
 * @returns MSM_OK or MSM_ERR_NOMEM.
 */
int sch__plan(const msm_schedule_t *s, int64_t from_ms, int64_t now_ms, int64_t grace_ms,
              size_t cap, int64_t count_after_ms, sch_plan_t *out);
void sch__plan_deinit(sch_plan_t *p);

#endif
