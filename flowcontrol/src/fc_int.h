/* SPDX-License-Identifier: MIT */
/* flowcontrol's internals shared between its files (docs/pipeline.md, "data plane v2"):
 *
 *   flowcontrol.c  the daemon: registry → one engine per subscription, stop and drain
 *   own.c          the ownership lease of a subscription (one member works on it at a time)
 *   sub.c          an owned subscription's engine: ready records in, admission by priority
 *                  within max_concurrency, one dispatch record per loop turn, leases
 *   task.c         tasks in memory: a pool, the id map, the pending queues
 *   settle.c       outcomes from status.<sub>, the retry store, the DLQ, task records and
 *                  stats, written in one pipeline per subscription and loop turn
 *   order.c        ordered subscriptions: one task per ordering key may run; a failing one
 *                  holds its key, and what arrives behind it is parked in Redis
 *   pace.c         how many tasks may start now: adaptive concurrency limit, rate limit,
 *                  Retry-After hold
 *
 * The happy path touches Redis only through the log and the pipelined task records: no Lua
 * per event. Durable per-task state exists only for retries and dead letters. */
#ifndef FC_INT_H
#define FC_INT_H

#include "flowcontrol.h"
#include "msm/envelope.h"
#include "msm/registry.h"

#include <stdint.h>

#define FC_KEY_MAX    512
#define FC_PRIORITIES 10
#define FC_TASKS_IN_FLIGHT_CAP 100000 /* tasks running per subscription, whatever the settings */
#define FC_FACILITY   "flowcontrol"

typedef struct fc_sub_s fc_sub_t;
typedef struct fc_task_s fc_task_t;
typedef struct fc_rec_s fc_rec_t;
typedef struct fc_flush_s fc_flush_t;
typedef struct fc_call_s fc_call_t;
typedef struct fc_key_s fc_key_t;
typedef struct fc_flow_s fc_flow_t;

/** One Redis call or log operation in flight for a subscription. Orphaned (fc = NULL, sub =
 *  NULL) by flowcontrol_free(): its completion then only frees it. */
struct fc_call_s {
    fc_call_t *next, *prev;
    flowcontrol_t *fc;
    fc_sub_t *sub;   /**< a reference */
    uint64_t gen;    /**< the subscription's ownership term when sent */
    void *data;      /**< free()d with the call */
    size_t n;
};

/** Metric families (labels: subscription, and kind for outcomes). */
typedef struct {
    msm_metric_t *admitted, *duplicates, *dispatched, *dispatch_failures, *outcomes, *stale,
        *retries, *dead, *expired, *in_flight, *pending, *subs, *owned, *limit, *limit_drops,
        *held, *held_longest, *hol;
} fc_metrics_t;

/** A subscription's pace (pace.c). */
typedef struct {
    int max;               /**< max_concurrency; 0 before the first fc_pace_set() */
    double limit;          /**< adaptive concurrency limit, 1..max */
    double rtt_ms;         /**< smoothed latency of successful pushes */
    int64_t last_drop_ms;  /**< the last decrease */
    double rate, burst, tokens; /**< token bucket; rate 0 = unlimited */
    int64_t refilled_ms;
    int64_t hold_until_ms; /**< Retry-After: nothing starts before */
} fc_pace_t;

/** Outcome kinds as counted and written in histories. */
typedef enum {
    FC_KIND_SUCCESS = 0,
    FC_KIND_RETRIABLE = 1,
    FC_KIND_FATAL = 2,
    FC_KIND_NOT_PUSHED = 3,
    FC_KIND_COUNT = 4,
} fc_kind_t;

extern const char *const fc_kind_names[FC_KIND_COUNT];

typedef enum {
    FC_TASK_PENDING = 0, /**< waiting in a priority queue */
    FC_TASK_RUNNING,     /**< dispatched, lease running, outcome awaited */
    FC_TASK_SETTLING,    /**< its final writes are in flight (succeeded, retry store, DLQ) */
} fc_task_state_t;

/** One ready record held unacknowledged until every task in it is settled. */
struct fc_rec_s {
    msm_stream_msg_t *msg;      /**< owned by the ready consumer until acknowledged */
    Msm__V1__TaskBatch *batch;  /**< its tasks point into it */
    msm_arena_t *arena;         /**< where batch was unpacked: dies with the record */
    size_t unsettled;
};

/** One ordering key of an ordered subscription with tasks in memory or held (order.c). */
struct fc_key_s {
    fc_key_t *hnext;
    char *name;
    fc_task_t *head;                  /**< the key's one task that may run, if in memory */
    fc_task_t *wait_head, *wait_tail; /**< in-memory followers in arrival order (knext) */
    size_t ntasks;                    /**< tasks in memory that point here */
    int held;                         /**< a failing event holds it (MSM_KEY_HELD) */
    int advancing;                    /**< the holder settled: the next one is being found */
    char *holder;                     /**< event id holding it */
    int attempts;
    int64_t since_ms;                 /**< held since */
    int hol_reported;                 /**< the head-of-line detector has logged it */
};

/** Fair share: the pending tasks of one priority and one value of the subscription's
 *  fairness_key attribute; the flows of a priority take turns (task.c). */
struct fc_flow_s {
    fc_flow_t *hnext;          /**< in the subscription's flow map */
    fc_flow_t *rnext;          /**< in its priority's ring, when it has tasks */
    fc_task_t *head, *tail;
    int priority;
    char value[];              /**< the attribute's value ("" when the event has none) */
};

/** One task in memory. */
struct fc_task_s {
    fc_task_t *next, *prev;   /**< pending queue (singly), running list (doubly) or free list */
    fc_task_t *hnext;         /**< id map chain */
    size_t hash;              /**< of its id, while in the id map */
    fc_sub_t *sub;
    fc_rec_t *rec;            /**< the ready record it came from; NULL: from the retry store */
    Msm__V1__Task *t;         /**< borrowed from rec->batch (in its arena), or owned */
    int owns_t;               /**< t is a heap message of its own (fc_task_own()) */
    fc_task_state_t state;
    int priority;
    int dirty;                /**< its task record is due in this turn's flush */
    int recorded;             /**< state + 1 of the last record written, 0 = none */
    fc_task_t *lnext, *lprev; /**< in the subscription's lazy-record list */
    int in_lazy;
    fc_task_state_t lazy_state; /**< the state it waits in, while in_lazy */
    int64_t since_ms;         /**< when it entered its current pending or running state */
    int64_t lease_until_ms;
    int64_t next_attempt_ms;  /**< retrying: when the retry is due */
    const char *result;       /**< task record state once settling */
    fc_key_t *key;            /**< ordered subscriptions: its ordering key */
    fc_task_t *knext;         /**< in its key's followers */
    int parked;               /**< handed to the parked store behind its held key */
    fc_flow_t *flow;          /**< fair share: the flow it waits in */
    uint64_t queued_us;       /**< a sampled task's entry into the pending queue (its span) */
};

/** An outgoing pipeline: the Redis commands of one subscription and loop turn. */
typedef struct {
    fc_flush_t *fl;
    size_t arg0;   /**< first argument (index into the flush's argument table) */
    int argc;
    int done;      /**< answered OK */
} fc_cmd_t;

struct fc_flush_s {
    fc_flush_t *next, *prev; /**< in flowcontrol.flushes */
    flowcontrol_t *fc;       /**< NULL once orphaned by flowcontrol_free() */
    fc_sub_t *sub;           /**< a reference */
    msm_buf_t arena;         /**< argument bytes */
    size_t *aoff, *alen;
    size_t nargs, capargs;
    fc_cmd_t *cmds;
    size_t ncmds, capcmds;
    size_t outstanding;
    int failed;
    uint32_t attempts;
    fc_task_t **done;        /**< tasks settled once every command succeeded */
    size_t ndone, capdone;
    msm_stream_msg_t **acks; /**< status records acknowledged then */
    size_t nacks, capacks;
    /* Task records of the turn, written at send time as one HSET per bucket run. */
    msm_buf_t rec_text;      /**< bucket key, id and JSON of each record, back to back */
    size_t *rec_off;         /**< per record: offsets of its key, id, JSON and the end */
    size_t nrecs, caprecs;
    msm_timer_t retry_timer;
};

struct flowcontrol_s {
    fc_env_t env;
    char *member;
    fc_conf_t conf;
    fc_metrics_t m;
    msm_registry_t *registry;
    fc_sub_t *subs;       /**< subscriptions in the registry */
    fc_sub_t *retired;    /**< removed ones whose writes are still in flight */
    fc_flush_t *flushes;  /**< pipelines in flight or waiting to retry */
    fc_call_t *calls;     /**< other calls in flight */
    size_t ncalls;
    fc_task_t *free_tasks;
    size_t nfree_tasks;
    int stopping;
    int consumers_closed;
    int64_t lifecycle_warned_ms; /**< lifecycle.c: the last warning about its topic */
};

struct fc_sub_s {
    fc_sub_t *next;
    flowcontrol_t *fc;
    int refs;    /**< the list's own plus one per flush or call in flight */
    int removed; /**< gone from the registry: freed with its last reference */
    char *name;
    /* Settings, copied: the registry's snapshot dies at its next change. */
    int max_concurrency, timeout_ms, max_attempts, paused;
    double rate_limit_per_s;
    int ordered;
    char *fairness_key;  /**< attribute whose values share a priority round-robin; NULL: FIFO */
    fc_pace_t pace;
    msm_timer_t pace_timer; /**< wakes admission when tokens or a hold allow more */
    int64_t min_backoff_ms, max_backoff_ms, retention_ms;
    int partitions;
    char k_retry[FC_KEY_MAX], k_retry_tasks[FC_KEY_MAX], k_dlq[FC_KEY_MAX],
        k_dlq_tasks[FC_KEY_MAX], k_stats[FC_KEY_MAX], k_owner[FC_KEY_MAX], k_held[FC_KEY_MAX],
        k_parked[FC_KEY_MAX], k_parked_tasks[FC_KEY_MAX];
    char s_ready[FC_KEY_MAX], s_dispatch[FC_KEY_MAX], s_status[FC_KEY_MAX];
    char rec_key[FC_KEY_MAX]; /**< the task record hash of rec_key_bucket (0 length: none) */
    int rec_key_len;
    long long rec_key_bucket;

    /* ownership (own.c) */
    int owner;         /**< this member holds the lease and works on the subscription */
    int own_call;      /**< an acquire or renew is in flight */
    uint64_t own_ok_mono; /**< loop ms of the last confirmed renewal */
    uint64_t own_gen;  /**< bumped at every loss: late replies of an older term are void */
    msm_timer_t own_timer;

    /* the engine (sub.c), alive while owner */
    msm_consumer_t *ready, *status;
    int streams_ready; /**< dispatch.<sub> and status.<sub> ensured */
    int ensuring;
    msm_timer_t ensure_timer, lease_timer, retry_timer;
    fc_task_t *pq_head[FC_PRIORITIES], *pq_tail[FC_PRIORITIES];
    /* fair share (fairness_key set): per priority a ring of flows instead of one FIFO */
    fc_flow_t *ring_head[FC_PRIORITIES], *ring_tail[FC_PRIORITIES];
    fc_flow_t **fmap;
    size_t fmap_size, nflows;
    size_t npending, nrunning, ntasks;
    fc_task_t *running_head, *running_tail; /**< by dispatch time: leases in order */
    fc_task_t **map;   /**< id → task, chained */
    size_t map_size;
    fc_task_t **outgoing; /**< admitted this turn, dispatched in the turn's record */
    size_t noutgoing, capoutgoing;
    fc_task_t **dirty;    /**< tasks whose record is written in this turn's pipeline */
    size_t ndirty, capdirty;
    /** Pending and running tasks whose record waits: written only if they stay so for
     *  --record.lag_ms (a task through in milliseconds gets its final record alone). */
    fc_task_t *lazy_head, *lazy_tail;
    msm_timer_t lazy_timer;
    int dispatching;   /**< dispatch appends in flight */
    /* ordering keys (order.c) */
    fc_key_t **kmap;
    size_t kmap_size, nkeys, nwaiting, nheld;
    int order_loading; /**< the held keys are being read before anything is consumed */
    int64_t hol_look_ms; /**< the head-of-line detector's last scan */
    msm_timer_t order_timer;
    fc_flush_t *flush; /**< this turn's pipeline, sent before the loop sleeps */
    int claiming;      /**< a retry-store claim is in flight */
    int64_t retry_due_ms; /**< earliest retry known due (0: none known) */
    /* stats (settle.c): counters not yet written, gauges last written */
    int64_t c_succeeded, c_failed, c_dead, c_done; /* c_done: ready tasks settled or skipped */
    size_t w_pending, w_running;
    int w_limit;
    int stats_written;
    msm_metric_child_t *m_admitted, *m_duplicates, *m_dispatched, *m_dispatch_failures,
        *m_outcomes[FC_KIND_COUNT], *m_stale, *m_retries, *m_dead, *m_expired, *m_in_flight,
        *m_pending, *m_limit, *m_limit_drops, *m_held, *m_held_longest, *m_hol;
};

/* ---- flowcontrol.c ---- */
/** @brief Unix ms now (one clock for the whole daemon). */
int64_t fc_now_ms(void);
/** @brief A call for @p sub in its current ownership term (keeps a reference). */
fc_call_t *fc_call_new(fc_sub_t *sub);
/** @brief The completion of @p c arrived: the subscription, still referenced (release it
 *  with fc_sub_release() when done), with *gen_ok set when the ownership term is the same;
 *  NULL when orphaned. @p c and its data are freed by fc_call_free(). */
fc_sub_t *fc_call_sub(fc_call_t *c, int *gen_ok);
/** @brief The completion of @p c arrived: frees @p c and its data, and returns its
 *  subscription, referenced, when it is still owned in the same term; else NULL (the
 *  reference already released). */
fc_sub_t *fc_call_take(fc_call_t *c);
/** @brief Unlinks and frees @p c and its data (not the subscription's reference). */
void fc_call_free(fc_call_t *c);

/* ---- own.c ---- */
/** @brief Starts competing for the subscription's lease (acquire now, then periodically). */
void fc_own_start(fc_sub_t *sub);
/** @brief Stops competing; gives the lease back when held and @p release (graceful stop). */
void fc_own_stop(fc_sub_t *sub, int release);

/* ---- sub.c ---- */
fc_sub_t *fc_sub_new(flowcontrol_t *fc, const msm_sub_t *s, const msm_topic_t *topic);
void fc_sub_update(fc_sub_t *sub, const msm_sub_t *s);
void fc_sub_keep(fc_sub_t *sub);
void fc_sub_release(fc_sub_t *sub);
/** @brief Gone from the registry: stops, gives up ownership, freed with its last reference. */
void fc_sub_remove(fc_sub_t *sub);
/** @brief Frees it now (flowcontrol_free, after every flush was orphaned). */
void fc_sub_destroy(fc_sub_t *sub);
fc_sub_t *fc_sub_find(flowcontrol_t *fc, const char *name);
/** @brief The lease is ours: start consuming and working. */
void fc_sub_start_engine(fc_sub_t *sub);
/** @brief The held keys are known: start consuming. */
void fc_sub_consume(fc_sub_t *sub);
/** @brief The lease is lost (or we stop): drop every task in memory, unacknowledged. */
void fc_sub_stop_engine(fc_sub_t *sub);
/** @brief The before-sleep work of one subscription: the dispatch record, the pipeline. */
void fc_sub_turn(fc_sub_t *sub);
/** @brief A running task goes back to pending at the front of its queue. */
void fc_sub_requeue(fc_sub_t *sub, fc_task_t *task);
/** @brief Takes tasks claimed from the retry store into memory (packed Tasks). */
void fc_sub_take_retries(fc_sub_t *sub, const void *const *data, const size_t *lens, size_t n);
/** @brief Makes sure the retry store is claimed from by @p due_ms. */
void fc_sub_arm_retry(fc_sub_t *sub, int64_t due_ms);

/* ---- order.c ---- */
/** @brief A ready task of an ordered subscription: 1 when ordering took it (it waits behind
 *  its key, or is parked), 0 when it goes to the pending queue as its key's head. */
int fc_order_intake(fc_sub_t *sub, fc_task_t *t);
/** @brief A task claimed from the retry store: the head of its held key. */
void fc_order_from_store(fc_sub_t *sub, fc_task_t *t);
/** @brief @p t failed and goes to the retry store (@p retrying) or the DLQ. */
void fc_order_failed(fc_sub_t *sub, fc_task_t *t, int retrying);
/** @brief 1 when @p t holds its key: the advance removes it from the retry store. */
int fc_order_holds(const fc_task_t *t);
/** @brief @p t settled and leaves memory: its key moves on. */
void fc_order_gone(fc_sub_t *sub, fc_task_t *t);
/** @brief Reads the held keys (repairing any whose holder is gone), then starts consuming. */
void fc_order_load(fc_sub_t *sub);
/** @brief Forgets every key (ownership lost). */
void fc_order_reset(fc_sub_t *sub);
/** @brief The head-of-line detector and the held-key gauges (each turn, cheap). */
void fc_order_check(fc_sub_t *sub);

/* ---- lifecycle.c ---- */
/** @brief Announces that @p t went @p state ("retrying", "dead") on --lifecycle.topic. */
void fc_lifecycle_emit(fc_sub_t *sub, const fc_task_t *t, const char *state);

/* ---- pace.c ---- */
/** @brief The most tasks of @p s running at once: max_concurrency requests of up to
 *  max_batch_events tasks each, capped at FC_TASKS_IN_FLIGHT_CAP. */
int fc_tasks_in_flight_max(const msm_sub_t *s);

/** @brief @p t's Task as a heap message of its own, copied out of its record's arena
 *  (where nothing may be freed or replaced) before a first change of its strings; NULL when
 *  out of memory. */
Msm__V1__Task *fc_task_own(fc_task_t *t);

/** @brief Takes the subscription's settings (first call: starts at max_concurrency). */
void fc_pace_set(fc_pace_t *p, int max_concurrency, double rate_per_s, int64_t now_ms);
/** @brief How many tasks may start now with @p running in flight; when fewer than the limit
 *  would allow because of the rate or a hold, *wake_ms says when to look again (else 0). */
size_t fc_pace_allowance(fc_pace_t *p, size_t running, int64_t now_ms, int64_t *wake_ms);
/** @brief @p n tasks started (tokens spent). */
void fc_pace_take(fc_pace_t *p, size_t n);
/** @brief A push succeeded after @p latency_ms with @p running in flight. */
void fc_pace_success(fc_pace_t *p, int64_t latency_ms, size_t running);
/** @brief A congestion signal (429, 503, no answer); a Retry-After holds the subscription,
 *  capped at @p cap_ms. @returns 1 when the limit was lowered. */
int fc_pace_congestion(fc_pace_t *p, int64_t now_ms, int64_t retry_after_ms, int64_t cap_ms);
/** @brief The current concurrency limit. */
int fc_pace_limit(const fc_pace_t *p);
/** @brief The delay before retry @p attempt + 1: jittered in [min, min * 2^attempt] capped at
 *  max; a Retry-After wins when longer, up to max. */
int64_t fc_retry_delay_ms(int64_t min_ms, int64_t max_ms, int attempt, int64_t retry_after_ms);

/* ---- task.c ---- */
fc_task_t *fc_task_get(flowcontrol_t *fc);
/** @brief Returns @p t to the pool (frees an owned Task). */
void fc_task_put(flowcontrol_t *fc, fc_task_t *t);
void fc_tasks_free_pool(flowcontrol_t *fc);
const char *fc_task_id(const fc_task_t *t);
int fc_map_add(fc_sub_t *sub, fc_task_t *t);
fc_task_t *fc_map_find(fc_sub_t *sub, const char *id);
void fc_pq_push(fc_sub_t *sub, fc_task_t *t, int front);
fc_task_t *fc_pq_pop(fc_sub_t *sub);
/** @brief Empties the pending queues (the tasks themselves are dropped by the caller). */
void fc_pq_reset(fc_sub_t *sub);
void fc_running_add(fc_sub_t *sub, fc_task_t *t);
void fc_running_remove(fc_sub_t *sub, fc_task_t *t);
/** @brief Appends @p t to a growing array of task pointers. */
int fc_ptrs_push(fc_task_t ***arr, size_t *n, size_t *cap, fc_task_t *t);
/** @brief Queues @p t's task record for this turn's pipeline. */
void fc_task_dirty(fc_sub_t *sub, fc_task_t *t);
/** @brief The turn's record work for @p t: written now when settling, else deferred. */
void fc_task_record(fc_sub_t *sub, fc_task_t *t);
/** @brief Drops a task from memory (map, queues) and returns it to the pool; its record
 *  count goes down only when @p settled (then the record may be acknowledged). */
void fc_task_drop(fc_sub_t *sub, fc_task_t *t, int settled);

/* ---- settle.c ---- */
/** @brief The status consumer's batch callback (opaque: the sub). */
void fc_on_status_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque);
/** @brief Adds @p t's task record (state from the task) to this turn's pipeline. */
void fc_flush_record(fc_sub_t *sub, fc_task_t *t);
/** @brief Sends this turn's pipeline (also the stats). */
void fc_flush_send(fc_sub_t *sub);
/** @brief Orphans every pipeline (flowcontrol_free). */
void fc_flushes_orphan_all(flowcontrol_t *fc);
/** @brief Parks @p t behind its held key (in this turn's pipeline); it is settled then. */
void fc_flush_park(fc_sub_t *sub, fc_task_t *t);
/** @brief Writes @p k's holder into MSM_KEY_HELD (this turn's pipeline). */
void fc_flush_hold(fc_sub_t *sub, const fc_key_t *k);
/** @brief Claims due tasks from the retry store (one script). */
void fc_retry_claim(fc_sub_t *sub);
/** @brief Adds the counters and, when they moved, the gauges to this turn's pipeline. */
void fc_stats_gauges(fc_sub_t *sub);

#endif
