/* SPDX-License-Identifier: MIT */
/* flowcontrol's internals shared between its files: the daemon, a subscription's engine, the
 * operations in flight (one Redis script or log append each) and the Lua scripts. */
#ifndef FC_INT_H
#define FC_INT_H

#include "flowcontrol.h"
#include "msm/registry.h"

#include <stdint.h>

#define FC_KEY_MAX 512

typedef struct fc_sub_s fc_sub_t;
typedef struct fc_op_s fc_op_t;

/** Metric families (labels: subscription, and kind for outcomes). */
typedef struct {
    msm_metric_t *admitted, *duplicates, *dispatched, *dispatch_failures, *outcomes, *stale,
        *retries, *dead, *expired, *in_flight, *subs;
} fc_metrics_t;

/** The Lua scripts (scripts.c), shared by reference: an orphaned operation keeps them alive
 *  because a NOSCRIPT answer makes the Redis client send the script's text again. */
typedef struct {
    int refs;
    msm_redis_script_t *admit, *take, *complete, *expire, *due;
} fc_scripts_t;

struct flowcontrol_s {
    fc_env_t env;
    char *member;
    fc_conf_t conf;
    fc_metrics_t m;
    fc_scripts_t *scripts;
    msm_registry_t *registry;
    msm_consumer_t *status; /**< "status", created after the first registry load */
    fc_sub_t *subs;         /**< subscriptions in the registry */
    fc_sub_t *retired;      /**< removed ones whose operations are still in flight */
    fc_op_t *ops;           /**< every operation in flight (doubly linked) */
    size_t nops;
    msm_timer_t status_timer; /**< retries creating the status consumer */
    int stopping;
    int consumers_closed; /**< drain: consumers freed so their acks are flushed */
};

/** Outcome kinds as the complete script names them (history "result"). */
typedef enum {
    FC_KIND_SUCCESS = 0,
    FC_KIND_RETRIABLE = 1,
    FC_KIND_FATAL = 2,
    FC_KIND_COUNT = 3,
} fc_kind_t;

extern const char *const fc_kind_names[FC_KIND_COUNT];

struct fc_sub_s {
    fc_sub_t *next;
    flowcontrol_t *fc;
    int refs;    /**< the list's own plus one per operation */
    int removed; /**< gone from the registry: no new work, freed with its last operation */
    char *name;
    /* Settings, copied: the registry's snapshot dies at its next change. */
    int max_concurrency;
    int timeout_ms;
    int max_attempts;
    int64_t min_backoff_ms, max_backoff_ms;
    int partitions; /**< of dispatch.<sub> when we create it */
    char k_pending[FC_KEY_MAX], k_running[FC_KEY_MAX], k_retry[FC_KEY_MAX], k_dlq[FC_KEY_MAX],
        k_stats[FC_KEY_MAX], k_task[FC_KEY_MAX]; /* k_task: prefix, the event id follows */
    char s_ready[FC_KEY_MAX], s_dispatch[FC_KEY_MAX];
    msm_consumer_t *ready;
    int dispatch_ready; /**< dispatch.<sub> ensured */
    int taking, take_again, scanning_due, scanning_leases;
    msm_timer_t admit_timer, retry_timer, lease_timer, ensure_timer;
    uint64_t retry_at_mono, lease_at_mono; /**< when those timers fire, while active */
    msm_metric_child_t *m_admitted, *m_duplicates, *m_dispatched, *m_dispatch_failures,
        *m_outcomes[FC_KIND_COUNT], *m_stale, *m_retries, *m_dead, *m_expired, *m_in_flight;
};

/** Owned, binary-safe script arguments. */
typedef struct {
    char **v;
    size_t *len;
    int n, cap;
} fc_args_t;

typedef enum {
    FC_OP_ADMIT,
    FC_OP_TAKE,
    FC_OP_DISPATCH,
    FC_OP_COMPLETE,
    FC_OP_EXPIRE,
    FC_OP_DUE,
    FC_OP_ENSURE,
} fc_op_kind_t;

/** One script or append in flight. Orphaned (fc = NULL) by flowcontrol_free(): its reply is
 *  then only freed. */
struct fc_op_s {
    fc_op_t *prev, *next;
    flowcontrol_t *fc;
    fc_sub_t *sub; /**< a reference */
    fc_op_kind_t kind;
    int in_call; /**< a reply or completion is awaited (else: waiting to retry) */
    msm_timer_t retry_timer;
    fc_args_t args;
    /* Log entries acknowledged once the script succeeded. */
    msm_consumer_t *consumer;
    msm_stream_msg_t **msgs;
    size_t nmsgs, msgs_cap;
    /* complete: per outcome, its kind and when a retry would be due (unix ms). */
    uint8_t *kinds;
    int64_t *due_ms;
    size_t nitems;
    int lease;              /**< complete of expired leases (counted apart from router outcomes) */
    int64_t now_ms;         /**< unix ms the script was given */
    int64_t lease_until_ms; /**< take: the lease deadline of what it takes */
    fc_scripts_t *scripts_held; /**< set while orphaned and in a call */
};

/* ---- script arguments (op.c) ---- */
int fc_args_add(fc_args_t *a, const void *data, size_t len);
int fc_args_addf(fc_args_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fc_args_deinit(fc_args_t *a);

/* ---- operations (op.c) ---- */
/** @brief Called first when the reply or completion of op @p opaque comes: the op, or NULL
 *  when flowcontrol was freed meanwhile (the op is then freed). */
fc_op_t *fc_op_answered(void *opaque);
fc_op_t *fc_op_new(flowcontrol_t *fc, fc_sub_t *sub, fc_op_kind_t kind);
void fc_op_free(fc_op_t *op);
/** @brief Remembers @p msg, to be acknowledged by fc_op_ack(). */
int fc_op_hold(fc_op_t *op, msm_stream_msg_t *msg);
void fc_op_ack(fc_op_t *op);
/** @brief Runs @p script with op->args (the first @p nkeys are keys). */
int fc_op_eval(fc_op_t *op, const msm_redis_script_t *script, int nkeys, msm_redis_reply_cb *cb);
/** @brief Sends the op again after a pause, or gives up (no ack) when stopping. */
void fc_op_retry_later(fc_op_t *op, msm_loop_timer_cb *resend);
/** @brief Orphans every op (flowcontrol_free). */
void fc_ops_orphan_all(flowcontrol_t *fc);

/* ---- subscriptions (sub.c) ---- */
fc_sub_t *fc_sub_new(flowcontrol_t *fc, const msm_sub_t *s, const msm_topic_t *topic);
void fc_sub_update(fc_sub_t *sub, const msm_sub_t *s);
void fc_sub_keep(fc_sub_t *sub);
void fc_sub_release(fc_sub_t *sub);
/** @brief Stops its timers and consumer reads; freed once its last operation is done. */
void fc_sub_remove(fc_sub_t *sub);
/** @brief Frees it now, whatever is in flight (flowcontrol_free, after fc_ops_orphan_all). */
void fc_sub_destroy(fc_sub_t *sub);
void fc_sub_stop(fc_sub_t *sub);
void fc_sub_close_consumer(fc_sub_t *sub);
fc_sub_t *fc_sub_find(flowcontrol_t *fc, const char *name);
/** @brief Runs admission soon (coalesced). */
void fc_sub_kick(fc_sub_t *sub);
/** @brief Makes sure the retry scan runs by @p due_unix_ms (-1: the safety poll). */
void fc_sub_arm_retry(fc_sub_t *sub, int64_t due_unix_ms);
/** @brief Makes sure the lease scan runs by @p due_unix_ms (-1: the safety poll). */
void fc_sub_arm_lease(fc_sub_t *sub, int64_t due_unix_ms);

/* ---- outcomes (outcome.c) ---- */
/** @brief The status consumer's batch callback. */
void fc_on_status_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque);
/** @brief Starts a complete op for @p sub. Items are added with fc_complete_add(). */
fc_op_t *fc_complete_new(fc_sub_t *sub, int lease);
/** @brief Adds one outcome (computes its retry delay). */
int fc_complete_add(fc_op_t *op,
                    const char *event_id,
                    int attempt,
                    fc_kind_t kind,
                    int http_status,
                    const char *error,
                    int64_t latency_ms,
                    int64_t retry_after_ms);
/** @brief Sends the op (or frees it when it has no items). */
void fc_complete_send(fc_op_t *op);

/* ---- scripts (scripts.c) ---- */
/** @brief The scripts with one reference. @returns NULL when out of memory. */
fc_scripts_t *fc_scripts_new(void);
void fc_scripts_keep(fc_scripts_t *s);
void fc_scripts_release(fc_scripts_t *s);

#endif
