/* SPDX-License-Identifier: MIT */
/* What tasks.c (stats, tasks), dlq.c (DLQ list, replay) and listings.c (task records by state,
 * held ordering keys) share: the call that first looks the subscription up, and the task JSON
 * the API shows. */
#ifndef MSM_FE_TASKS_INT_H
#define MSM_FE_TASKS_INT_H

#include "fe_int.h"

#include "msm/envelope.h"

#include <stdint.h>

#define TASKS_KEY_MAX  512
#define EVENT_ID_MAX   200

typedef struct sub_call_s sub_call_t;
typedef void sub_next_cb(sub_call_t *sc);

/** One request on subscription {name}; the fields after next belong to one endpoint. */
struct sub_call_s {
    fe_call_t base;
    char *name;
    json_t *sub;       /* the stored subscription, once found */
    sub_next_cb *next; /* runs once it is found */
    char *event_id;    /* tasks/{event_id} */
    long limit;        /* dlq, tasks list */
    char *state;       /* tasks list: the store listed */
    char *cursor;      /* tasks list: where the page starts, NULL = first */
    char *walk;        /* listings.c: the decoded cursor, split in place into walk_at */
    const char *walk_at[4]; /* listings.c: SCAN cursor, bucket, HSCAN cursor, last field */
    int waiting;       /* stats: replies still due */
    long long counts[10]; /* stats: the script's numbers */
    char *error;       /* stats: the first failure */
    json_t *reports;   /* stats: the routers' endpoint reports (array) */
    json_t *canary_state;   /* stats: the canary's state hash (object) */
    json_t *canary_reports; /* stats: the routers' canary window reports (array) */
    int64_t at_ms;     /* canary: the time of the change */
    json_t *ids;       /* replay: the requested ids (array), or NULL for all */
    size_t offset;     /* replay by ids: the next id to read */
    int64_t max_dead_ms; /* replay all: only tasks dead by then (so it ends) */
    int64_t replayed;  /* replay: tasks appended so far */
    json_t *page_ids;  /* replay: ids of the page being appended (array) */
    json_t *page_records; /* replay: their reset task records (array of strings) */
};

/** @brief Starts a call on subscription {name} of @p req (404 itself when the name is not
 *  valid); fill the endpoint's fields, then sub_call_go(). @returns NULL when answered. */
sub_call_t *fe_sub_call_start(fe_t *fe, msm_http_req_t *req, sub_next_cb *next);
/** @brief Looks the subscription up; next runs once it is found (404 otherwise). */
void fe_sub_call_go(sub_call_t *sc);

/** One of the subscription's keys; @p fmt is an MSM_KEY_* literal with the name's %s. */
#define SUB_KEY(sc, buf, fmt)                                                                      \
    msm_redis_key((sc)->base.fe->fe_deps.redis, buf, sizeof(buf), fmt, (sc)->name)

/**
 * @brief A task as the API shows it, from a packed Task of a store (retry, DLQ):
 * {"event_id","state","attempts","next_attempt_at","last_error","history","event"}, with
 * @p state and @p next_ms (0 = null) given by the store. NULL when @p packed is not a Task.
 */
json_t *fe_task_from_packed(const void *packed, size_t len, const char *state, int64_t next_ms);

/**
 * @brief A task as the API shows it, from the task record flowcontrol wrote (@p text, a
 * bulk string): the record as is, with the API's defaults for what it lacks and its ms
 * times as RFC 3339. NULL when @p text is not a JSON object.
 */
json_t *fe_task_from_record(const char *id, const redisReply *text);

/** @brief POST …/canary:promote and :rollback (canary.c). */
int fe_canary_routes(fe_t *fe);
/** @brief The stats' "canary" of subscription @p sub (stored JSON) from its state hash
 *  (@p hash, an object) and the routers' window reports (@p reports, an array); NULL when
 *  it has no canary. */
json_t *fe_canary_stats(const json_t *sub, const json_t *hash, const json_t *reports);

/** @brief A time in ms as the API's RFC 3339 string, or null for 0. */
json_t *fe_time_json(int64_t ms);

/** @brief A query parameter "limit" in 1..max (default @p def) into *out; answers 400
 *  itself and returns -1 when it is not one. */
int fe_query_limit(msm_http_req_t *req, long def, long max, long *out);

/** @brief 400 INVALID_ARGUMENT for query parameter @p field, with one detail. */
void fe_bad_query(msm_http_req_t *req, const char *field, const char *desc);

/** @brief GET …/tasks?state=S for a state listed from the task records (pending, running,
 *  succeeded): checks the cursor (400), then answers a page. */
void fe_records_list(fe_t *fe, msm_http_req_t *req, const char *state, long limit,
                     const char *cursor);
/** @brief Prepares listings.c's Lua scripts. @returns MSM_OK or MSM_ERR_NOMEM. */
int fe_listings_scripts(fe_t *fe);
/** @brief Registers listings.c's routes (GET …/keys). */
int fe_listings_routes(fe_t *fe);

/** @brief Prepares dlq.c's Lua scripts. @returns MSM_OK or MSM_ERR_NOMEM. */
int fe_dlq_scripts(fe_t *fe);
/** @brief Registers dlq.c's routes. */
int fe_dlq_routes(fe_t *fe);

#endif
