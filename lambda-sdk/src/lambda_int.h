/* SPDX-License-Identifier: MIT */
/* libmsm-lambda internals shared by its files: the lambda, the event, the invocation. */
#ifndef MSM_LAMBDA_INT_H
#define MSM_LAMBDA_INT_H

#include "msm/trace.h"
#include "msm/http_server.h"
#include "msm/lambda.h"
#include "msm/metrics.h"
#include "msm/signature.h"

#include <jansson.h>
#include <signal.h>
#include <stdint.h>

/** Most worker processes (--max-workers). */
#define LM_MAX_WORKERS 256
/** The supervisor retires a worker with this signal (SIGTERM would be a shutdown). */
#define LM_RETIRE_SIGNAL SIGUSR2
/** A retiring worker leaves once nothing is in flight and no push came for this long. */
#define LM_RETIRE_IDLE_MS 1000
#define LM_RETIRE_CHECK_MS 50
/** How often (at most) a worker tells the board its loop is alive. */
#define LM_HEARTBEAT_MS 1000

/* The SDK's own settings (the table lives in lambda.c). */
typedef struct {
    int lc_port;
    char *lc_bind;
    int lc_min_workers;
    int lc_max_workers;
    int lc_threads;
    int lc_target_utilization; /* percent */
    int lc_scale_down_delay_ms;
    int lc_watchdog_ms;
    int lc_admin_port;
    int lc_max_connection_age_ms;
    char *lc_canary;
    int lc_canary_share;
    int lc_canary_window_ms;
    int lc_canary_min_events;
    char *lc_secret; /* comma-separated: any one may match */
    int lc_signature_tolerance_s;
    int lc_replay_cache_size;
    int lc_drain_timeout_ms;
    int lc_max_body_bytes;
    int lc_logging_level;
    int lc_logging_format;
} lm_conf_t;

typedef struct {
    char *h_subscription; /* "*" for the catch-all */
    msm_handler_t *h_cb;
    msm_metric_child_t *h_results[4]; /* by lm_result_t */
    msm_metric_child_t *h_duration;
} lm_handler_t;

/* How an invocation ended, for metrics and logs. */
typedef enum {
    LM_RESULT_OK = 0,
    LM_RESULT_RETRY = 1,
    LM_RESULT_FATAL = 2,
    LM_RESULT_DEADLINE = 3,
} lm_result_t;

typedef struct {
    const msm_conf_def_t *uc_defs;
    size_t uc_ndefs;
    void *uc_conf;
    size_t uc_size;
} lm_user_conf_t;

typedef struct {
    msm_lambda_hook_t *hk_cb;
    void *hk_opaque;
} lm_hook_t;

typedef struct lm_replay_s lm_replay_t;
typedef struct lm_pool_s lm_pool_t;
typedef struct lm_job_s lm_job_t;

struct msm_lambda_s {
    char *lm_name;
    void *lm_opaque;
    lm_handler_t *lm_handlers;
    size_t lm_nhandlers;
    lm_user_conf_t *lm_user_confs;
    size_t lm_nuser_confs;
    lm_hook_t *lm_start_hooks, *lm_stop_hooks;
    size_t lm_nstart_hooks, lm_nstop_hooks;
    char **lm_secrets; /* msm_lambda_add_secret()'s, then --secret's items at serve time */
    size_t lm_nsecrets;

    /* Serving state (msm_lambda_main). */
    lm_conf_t lm_conf;
    int lm_conf_loaded;
    int lm_serving;
    msm_loop_t *lm_loop;
    msm_http_server_t *lm_srv;
    msm_metrics_t *lm_metrics; /* lent to the server; outlives it */
    uint16_t lm_port;
    int lm_draining;
    int lm_forced;
    msm_timer_t lm_drain_timer;
    msm_ctx_t *lm_ctxs; /* invocations not yet released */
    size_t lm_inflight;
    msm_metric_t *lm_m_invocations;
    msm_metric_t *lm_m_duration;
    msm_metric_t *lm_m_rejected;
    msm_metric_child_t *lm_m_inflight;
    msm_metric_child_t *lm_m_v1_only;
    lm_replay_t *lm_replay;    /* signatures seen within the tolerance window, or NULL */
    lm_pool_t *lm_pool;        /* handler threads (--threads > 0), or NULL: the loop's */
    struct lm_slot_s *lm_slot; /* this worker's slot on the supervisor's board */
    msm_timer_t lm_heartbeat_timer;
    int lm_retiring;           /* the supervisor retires this worker (LM_RETIRE_SIGNAL) */
    msm_timer_t lm_retire_timer;
    uint64_t lm_last_push_us;  /* monotonic time of the last push received */
    uint64_t lm_v1_warned_us;  /* monotonic time of the last v1-only warning */
};

/* ---- event.c ---- */

/**
 * Builds the event of a push request: one allocation holding copies of every field, the
 * attributes and the payload, so it outlives the request. @returns NULL with a reason in
 * @p why (a 400 answer) or "out of memory".
 */
msm_event_t *msm__event_new(const msm_http_req_t *req, char *why, size_t why_size);
/**
 * Builds the event of one member of a batch push (a structured-mode CloudEvent, API.md
 * "Batch push"): msmsubscription (else @p subscription, the request's Msm-Subscription),
 * msmattempt, msmkey, msmorderingkey, the other string members as attributes, "data" or
 * "data_base64" as the payload; @p deadline_ms is the request's Msm-Deadline. @returns NULL
 * with a reason in @p why.
 */
msm_event_t *msm__event_from_json(const json_t *obj, const char *subscription,
                                  int64_t deadline_ms, char *why, size_t why_size);
/**
 * Reads a batch push body without a JSON tree when it can (batch_fast.c): every event as
 * msm__event_from_json() would build it. @returns 1 with @p events (an array the caller
 * frees, each event too) and their count @p n, or 0 when it declines: the body is then left
 * to json_loadb() and msm__event_from_json(), which answer errors as ever.
 */
int msm__batch_read_fast(const char *body,
                         size_t len,
                         const char *subscription,
                         int64_t deadline_ms,
                         msm_event_t ***events,
                         size_t *n);
void msm__event_free(msm_event_t *ev);
/** Starts the handler's span when the event's trace is sampled: the event's traceparent is
 *  then the span's. @returns 1 when traced. */
int msm__event_trace(msm_event_t *ev, msm_span_t *span);

/* ---- signature.c ---- */

/** Bytes of a replay key (a SHA-256). */
#define LM_REPLAY_KEY_LEN 32

/** What a valid signature was. */
typedef struct {
    int sr_version;                          /* 2, or 1 when the header has no v2 part */
    int64_t sr_t;                            /* its t=, unix seconds */
    unsigned char sr_key[LM_REPLAY_KEY_LEN]; /* SHA-256 of what it signs: the replay key */
} lm_sig_result_t;

/**
 * Checks `Msm-Signature: t=<unix s>,v1=<hex>,v2=<hex>` (docs/push.md "Signatures") against
 * each of @p secrets: with any v2= part one of them must match the v2 text of @p fields (its
 * sf_t is ignored: t comes from the header) and the body; with none, one v1= part must match
 * "<t>.<sf_id>.<body>". @p tolerance_s > 0 also refuses timestamps further than that from
 * @p now_s. @returns 0 with @p res filled when valid, -1 with a reason in @p why.
 */
int msm__signature_verify(const char *const *secrets,
                          size_t nsecrets,
                          const char *header,
                          const msm_signature_fields_t *fields,
                          const void *body,
                          size_t len,
                          int64_t now_s,
                          int tolerance_s,
                          lm_sig_result_t *res,
                          char *why,
                          size_t why_size);

/* ---- replay.c ---- */

/** The verdicts of msm__replay_check(). */
typedef enum {
    LM_REPLAY_FRESH = 0, /* not seen: now recorded */
    LM_REPLAY_SEEN = 1,  /* seen within the window: a replay */
    LM_REPLAY_FLOOR = 2, /* signed at or before an entry evicted early: cannot be told */
} lm_replay_verdict_t;

/** A cache of at most @p cap (> 0) keys. @returns NULL when out of memory. */
lm_replay_t *msm__replay_new(size_t cap);
void msm__replay_free(lm_replay_t *r);
/**
 * Drops the entries expired by @p now_s, then looks @p key (signed at @p t, acceptable until
 * @p expires_s) up and records it when fresh; a full cache first evicts its oldest entry and
 * raises its floor to that entry's t.
 */
lm_replay_verdict_t msm__replay_check(lm_replay_t *r,
                                      const unsigned char key[LM_REPLAY_KEY_LEN],
                                      int64_t t,
                                      int64_t expires_s,
                                      int64_t now_s);
/** Entries held (for tests and logs). */
size_t msm__replay_count(const lm_replay_t *r);

/* ---- invoke.c ---- */

/** The route handler of every POST: checks, builds the event, runs the handler, answers. */
void msm__lambda_on_push(msm_http_req_t *req, void *opaque);

/** Abandons every invocation still waiting for msm_ctx_complete() and frees them all
 *  (after the HTTP server is gone). */
void msm__lambda_cancel_all(msm_lambda_t *l);

/** Called whenever an invocation is released: lets a drain finish. */
void msm__lambda_released(msm_lambda_t *l);

/** The handler threads' job (pool.h): run the handler of a ctx, hand its status back. */
int msm__lambda_run_job(lm_job_t *job, unsigned thread, void *opaque);
void msm__lambda_job_done(lm_job_t *job, int result, void *opaque);

/* ---- supervisor.c ---- */

/** Worker processes find these in their environment: "LISTEN_FD,BOARD_FD,SLOT". */
#define LM_WORKER_ENV "MSM_LAMBDA_WORKER"

/**
 * Runs the supervisor (the settings are loaded): binds the port, starts the workers (this
 * binary, or the canary's, run again with LM_WORKER_ENV set), keeps them alive, scales
 * them, judges a canary, drains on SIGTERM. @returns msm_lambda_main()'s exit code.
 */
int msm__supervise(msm_lambda_t *l, int argc, char **argv, const json_t *conf_json);

#endif
