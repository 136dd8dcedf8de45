/* SPDX-License-Identifier: MIT */
/* What the frontend's files share: the fe_t itself, the per-request call state for requests
 * answered from a later callback, and the view of topics publish uses. */
#ifndef MSM_FE_INT_H
#define MSM_FE_INT_H

#include "frontend.h"

#include "msm/registry.h"

#include "msm/idempotency.h"
#include "msm/netpolicy.h"
#include "msm/schema_store.h"

#include <jansson.h>
#include <stdbool.h>

/** A topic the frontend itself wrote or deleted since the registry last reloaded. */
typedef struct {
    char *name;
    char *subject; /* its schema_subject, NULL when unbound */
    bool present;
} fe_own_write_t;

/** A subject's latest schema id as last read (publish validates against it). */
typedef struct {
    char *subject;
    int id;
} fe_subject_latest_t;

struct fe_s {
    fe_deps_t fe_deps;
    fe_settings_t fe_set;
    msm_registry_t *fe_reg;
    /* Own topic writes not yet seen by the watcher: a publish right after PUT topic must
     * find its topic before the next poll. Cleared by every reload (which, on the same
     * Redis connection, already reflects them). */
    fe_own_write_t *fe_own;
    size_t fe_nown;
    size_t fe_inflight; /* calls awaiting Redis or the log; each holds the fe */
    int fe_closing;     /* fe_free() ran: the last call frees */
    msm_redis_script_t *fe_sub_check;
    msm_redis_script_t *fe_stats;
    msm_redis_script_t *fe_task_get;
    msm_redis_script_t *fe_dlq_list;
    msm_redis_script_t *fe_task_list;
    msm_redis_script_t *fe_records_scan; /* task records by state (listings.c) */
    msm_redis_script_t *fe_held_scan;    /* held ordering keys (listings.c) */
    msm_redis_script_t *fe_replay_read;
    msm_redis_script_t *fe_replay_done;
    msm_redis_script_t *fe_sr_lookup;   /* schema registry */
    msm_redis_script_t *fe_sr_register;
    msm_redis_script_t *fe_sr_version;
    msm_idem_t *fe_idem;                /* idempotency keys (msm/idempotency.h) */
    msm_redis_script_t *fe_cdc_put;     /* CDC sources (cdc.c) */
    msm_redis_script_t *fe_cdc_delete;
    msm_redis_script_t *fe_cdc_notify;
    msm_redis_script_t *fe_cdc_state_read;
    struct msm_cdc_state_s *fe_cdc;     /* the batch protocol push shares with pull */
    msm_redis_script_t *fe_sched_check;  /* schedules: the stored one and the count */
    msm_redis_script_t *fe_sched_delete; /* schedules: the entry, its state, the version */
    msm_schema_store_t *fe_schemas;     /* compiled schemas by id */
    fe_subject_latest_t *fe_latest;     /* subject -> latest schema id, cleared on changes */
    size_t fe_nlatest;
    msm_metric_t *fe_m_cdc;             /* CDC changes by source and result */
    msm_metric_t *fe_m_requests;
    msm_metric_t *fe_m_events;
    msm_metric_t *fe_m_latency;
    msm_netpolicy_t *fe_netpolicy;      /* endpoint addresses allowed at PUT subscription */
};

/* ---- calls: one request answered later ---- */

typedef struct fe_call_s fe_call_t;
typedef void fe_call_cleanup_cb(fe_call_t *c);

/** The head of every deferred request's state (embed it first). */
struct fe_call_s {
    fe_t *fe;
    msm_http_req_t *req;         /* NULL once the server cancelled the request */
    fe_call_cleanup_cb *cleanup; /* frees what the call owns besides itself; may be NULL */
};

/** @brief Allocates @p size bytes (>= sizeof(fe_call_t)) zeroed, ties them to @p req and
 *  counts the call in flight. @returns NULL when out of memory (nothing answered). */
void *fe_call_new(fe_t *fe, msm_http_req_t *req, size_t size);
/** @brief Answers with @p body (stolen) unless cancelled, then ends the call. */
void fe_call_json(fe_call_t *c, int status, json_t *body);
/** @brief Answers with @p body (copied) of @p content_type unless cancelled, then ends. */
void fe_call_bytes(fe_call_t *c, int status, const char *content_type, const void *body,
                   size_t len);
/** @brief Answers with the API.md error body (details stolen) unless cancelled, then ends. */
void fe_call_error(fe_call_t *c, int status, const char *code, const char *message,
                   json_t *details);
/** @brief Answers 503 UNAVAILABLE with @p why, then ends the call. */
void fe_call_unavailable(fe_call_t *c, const char *why);
/** @brief Ends the call without answering (it was answered, or cancelled). */
void fe_call_end(fe_call_t *c);
/** @brief Non-zero when the call can no longer go on (fe freed): answer 503 and stop. */
int fe_call_aborted(fe_call_t *c);

/* ---- helpers ---- */

/** @brief 404 NOT_FOUND "<what> <name> not found". */
void fe_not_found(msm_http_req_t *req, const char *what, const char *name);
/** @brief Parses the request body as JSON into *out (NULL for an empty body when
 *  @p allow_empty). Answers 400 itself and returns -1 when it is not JSON. */
int fe_parse_body(msm_http_req_t *req, int allow_empty, json_t **out);
/** @brief A JSON text stored in Redis (bulk string) parsed, or NULL. */
json_t *fe_reply_json(const redisReply *r);

/* ---- topics as publish sees them ---- */

/** @brief Non-zero when topic @p name exists (own writes first, then the registry); its
 *  schema subject (NULL when unbound, borrowed until the next loop turn) in *subject. */
int fe_topic_lookup(const fe_t *fe, const char *name, const char **subject);
/** @brief fe_topic_lookup() without the subject. */
int fe_topic_exists(const fe_t *fe, const char *name);
/** @brief Notes a topic the frontend just stored (@p present, bound to @p subject or NULL)
 *  or deleted. */
void fe_topic_noted(fe_t *fe, const char *name, bool present, const char *subject);

/* ---- schemas ---- */

/** @brief The compiled-schema cache. */
msm_schema_store_t *fe_schema_store(fe_t *fe);
/** @brief A subject got a new version: forget the latest ids read so far. */
void fe_schemas_changed(fe_t *fe);
/** @brief The cached latest schema id of @p subject, 0 when not known. */
int fe_subject_latest(const fe_t *fe, const char *subject);
/** @brief Remembers @p id as @p subject's latest schema id. */
void fe_subject_latest_note(fe_t *fe, const char *subject, int id);

/* ---- registry objects (topics, subscriptions, CDC sources) ---- */

/** One kind of object stored as JSON in a registry hash. */
typedef struct {
    const char *key;    /**< the hash (MSM_KEY_TOPICS, ...) */
    const char *what;   /**< "topic", ... (messages) */
    const char *member; /**< the list answer's member: {"topics":[...]} */
    int mask;           /**< mask the secrets (msm_sub_mask_secrets) */
    int topic;          /**< deletes are noted for publish */
    void (*view)(json_t *obj); /**< turns a stored object into its answer, or NULL */
} fe_kind_t;

extern const fe_kind_t fe_kind_topics, fe_kind_subs, fe_kind_cdc, fe_kind_schedules;

/** @brief GET of one object (@p name) or of the list (@p name NULL). */
void fe_read_start(fe_t *fe, msm_http_req_t *req, const fe_kind_t *kind, const char *name);
/** @brief DELETE of one object. */
void fe_delete_start(fe_t *fe, msm_http_req_t *req, const fe_kind_t *kind, const char *name);

/* ---- a subscription's life (sub_lifecycle.c) ---- */

/** @brief POST …:pause (@p paused) or :resume: sets "paused" in the stored subscription. */
void fe_sub_pause_start(fe_t *fe, msm_http_req_t *req, const char *name, bool paused);
/** @brief DELETE of a subscription: the registry entry, then its streams and keys; answers
 *  once they are gone. */
void fe_sub_delete_start(fe_t *fe, msm_http_req_t *req, const char *name);

/* ---- endpoint addresses (netcheck.c) ---- */

/** How long a PUT subscription waits for its endpoints' host names to resolve. */
#define FE_RESOLVE_TIMEOUT_MS 3000

/** Called once with the verdict: one error per refused endpoint at "endpoints[i].url"
 *  (none when all are allowed); @p verdict is borrowed for the call. */
typedef void fe_netcheck_cb(void *opaque, msm_json_err_t *verdict);

/**
 * @brief Judges the host of every endpoint of @p s against the frontend's netpolicy: IP
 * literals at once, host names by every address they resolve to, on a resolver thread
 * bounded by FE_RESOLVE_TIMEOUT_MS (an unresolvable or slow name is refused too).
 * @returns MSM_OK when @p cb will be called (possibly before this returns), or
 * MSM_ERR_NOMEM / MSM_ERR_IO (no thread) and @p cb is never called.
 */
int fe_netcheck_start(fe_t *fe, const msm_sub_t *s, fe_netcheck_cb *cb, void *opaque);

/* ---- routes of each file ---- */

int fe_control_routes(fe_t *fe);
int fe_publish_routes(fe_t *fe);
int fe_tasks_routes(fe_t *fe);
int fe_schema_routes(fe_t *fe);
int fe_cdc_routes(fe_t *fe);
/** @brief PUT/GET/DELETE /v1/schedules (schedules.c) and its scripts. */
int fe_schedule_routes(fe_t *fe);
/** @brief Prepares the CDC sources' Lua scripts. */
int fe_cdc_scripts(fe_t *fe);
/** @brief 404 NOT_FOUND "CDC source <name> not found" (cdc.c). */
void fe_cdc_not_found(fe_call_t *c, const char *name);
/** @brief POST /v1/cdc/sources/{name}/changes (cdc_push.c). */
void fe_cdc_push(msm_http_req_t *req, void *opaque);
void fe_publish_single(msm_http_req_t *req, void *opaque);
void fe_publish_pb(msm_http_req_t *req, void *opaque);
/** @brief Prepares the schema registry's Lua scripts. */
int fe_schema_scripts(fe_t *fe);
/** @brief Prepares the publish pipeline's idempotency scripts. */
int fe_publish_scripts(fe_t *fe);
/** @brief Prepares the tasks file's Lua scripts. @returns MSM_OK or MSM_ERR_NOMEM. */
int fe_tasks_scripts(fe_t *fe);

#endif
