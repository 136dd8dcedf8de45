/* SPDX-License-Identifier: MIT */
/* What the frontend's files share: the fe_t itself, the per-request call state for requests
 * answered from a later callback, and the view of topics publish uses. */
#ifndef MSM_FE_INT_H
#define MSM_FE_INT_H

#include "frontend.h"

#include "msm/registry.h"

#include <jansson.h>
#include <stdbool.h>

/** A topic the frontend itself wrote or deleted since the registry last reloaded. */
typedef struct {
    char *name;
    bool present;
} fe_own_write_t;

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
    msm_redis_script_t *fe_replay_read;
    msm_redis_script_t *fe_replay_move;
    msm_metric_t *fe_m_requests;
    msm_metric_t *fe_m_events;
    msm_metric_t *fe_m_latency;
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
/** @brief Replaces a non-null "secret" member with "***". */
void fe_mask_secret(json_t *sub);

/* ---- topics as publish sees them ---- */

/** @brief Non-zero when topic @p name exists (own writes first, then the registry). */
int fe_topic_exists(const fe_t *fe, const char *name);
/** @brief Notes a topic the frontend just stored (@p present) or deleted. */
void fe_topic_noted(fe_t *fe, const char *name, bool present);

/* ---- routes of each file ---- */

int fe_control_routes(fe_t *fe);
int fe_publish_routes(fe_t *fe);
int fe_tasks_routes(fe_t *fe);
/** @brief Prepares the tasks file's Lua scripts. @returns MSM_OK or MSM_ERR_NOMEM. */
int fe_tasks_scripts(fe_t *fe);

#endif
