/* SPDX-License-Identifier: MIT */
/* Recurring schedules (docs/schedules.md): what PUT /v1/schedules/{name} accepts, what the
 * registry stores, and the ticks' due times, ids and idempotency keys every scheduler
 * derives the same way.
 *
 * Storage (under the namespace, the registry's hash slot): hash "{registry}:schedules"
 * name -> the stored JSON (the public fields plus "envelope": the event as a packed
 * msm.v1.Event in base64, validated and encoded once by the frontend), and hash
 * "{registry}:schedules:last_due" name -> the due time (unix ms) up to which every tick
 * is settled (published or skipped). */
#ifndef MSM_SCHEDULE_H
#define MSM_SCHEDULE_H

#include "msm/cron.h"
#include "msm/id.h"
#include "msm/json.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MSM_KEY_SCHEDULES          "{registry}:schedules"
#define MSM_KEY_SCHEDULES_LAST_DUE "{registry}:schedules:last_due"

/** every_ms bounds: a second .. a year. */
#define MSM_SCHEDULE_EVERY_MIN_MS 1000LL
#define MSM_SCHEDULE_EVERY_MAX_MS (366LL * 24 * 3600 * 1000)

/** The attributes the scheduler adds to every tick's event (a PUT may not set them). */
#define MSM_SCHEDULE_ATTR_NAME "msm-schedule"
#define MSM_SCHEDULE_ATTR_DUE  "msm-due-time"

/** What happens to ticks missed (due longer ago than the grace) when a scheduler finds them. */
typedef enum {
    MSM_CATCH_UP_NONE = 0, /**< skipped */
    MSM_CATCH_UP_LAST = 1, /**< the latest one is published, the others skipped (default) */
    MSM_CATCH_UP_ALL = 2,  /**< published, at most the scheduler's cap (the latest ones) */
} msm_catch_up_t;

typedef struct {
    char *name;
    char *topic;
    char *cron; /**< the expression's text, or NULL (every_ms) */
    msm_cron_t cron_expr;
    int64_t every_ms; /**< 0 with cron */
    char *timezone;   /**< "UTC" */
    msm_catch_up_t catch_up;
    json_t *event;     /**< the event as given (answers show it) */
    uint8_t *envelope; /**< stored form: the packed msm.v1.Event template, else NULL */
    size_t envelope_len;
    int64_t created_ms;
    int64_t updated_ms; /**< the last PUT: no tick due before it is ever published */
} msm_schedule_t;

/**
 * @brief Validates a schedule: a PUT body (@p stored 0: "envelope" is not allowed, cron must
 * match some minute in the next 30 years) or the registry's stored form (@p stored 1:
 * "envelope" required). Errors go to @p e with their field paths. The event itself is
 * only checked to be an object here: the frontend validates it as a publish would.
 * @returns the schedule (msm_schedule_free), or NULL when invalid.
 */
msm_schedule_t *
msm_schedule_from_json(const char *name, const json_t *body, int stored, msm_json_err_t *e);
/** @brief The JSON of @p s: the public fields, plus "envelope" when @p stored. */
json_t *msm_schedule_to_json(const msm_schedule_t *s, int stored);
/** @brief A deep copy, or NULL when out of memory. */
msm_schedule_t *msm_schedule_dup(const msm_schedule_t *s);
void msm_schedule_free(msm_schedule_t *s);

/** @brief "none", "last", "all". */
const char *msm_catch_up_name(msm_catch_up_t c);

/**
 * @brief The first due time strictly after @p after_ms: every_ms ticks fall on the
 * multiples of every_ms since 1970-01-01T00:00:00Z; cron ticks on the minutes it matches
 * (UTC). @returns unix ms, or -1 when there is none.
 */
int64_t msm_schedule_next(const msm_schedule_t *s, int64_t after_ms);

/** Room for msm_schedule_tick_key(): the prefix, a name and a number. */
#define MSM_SCHEDULE_TICK_KEY_MAX 256

/**
 * @brief The tick's idempotency key, "msm-schedule:<name>:<due unix ms>": every scheduler
 * publishing the tick claims the same key. @returns its length.
 */
int msm_schedule_tick_key(const char *name, int64_t due_ms, char *buf, size_t n);

/** @brief The tick's event id: a UUIDv7 with the due time as its timestamp, the rest derived
 *  from the tick key (msm_id_derive), into @p buf (MSM_ID_STR_SIZE). */
void msm_schedule_tick_id(const char *name, int64_t due_ms, char *buf);

#endif
