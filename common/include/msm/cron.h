/* SPDX-License-Identifier: MIT */
/* Cron expressions of recurring schedules (docs/schedules.md "Cron syntax"): the standard
 * five fields "minute hour day-of-month month day-of-week" with '*', numbers, lists (a,b),
 * ranges (a-b), steps ("/n" after '*', a range or a start value), month names JAN-DEC and day names
 * SUN-SAT, and the macros @yearly @annually @monthly @weekly @daily @midnight @hourly; evaluated in
 * UTC. Pure functions: no clock, no time zone database, no allocation. */
#ifndef MSM_CRON_H
#define MSM_CRON_H

#include <stddef.h>
#include <stdint.h>

/** A parsed expression: one bit per allowed value of each field. */
typedef struct {
    uint64_t minutes; /**< bit m: minute m (0-59) */
    uint32_t hours;   /**< bit h: hour h (0-23) */
    uint32_t mdays;   /**< bit d: day of the month d (1-31) */
    uint16_t months;  /**< bit m: month m (1-12) */
    uint8_t wdays;    /**< bit d: day of the week d (0 = Sunday .. 6 = Saturday) */
    /** The day-of-month / day-of-week field starts with '*'. When neither does, a day
     *  matches if EITHER field matches (Vixie cron); otherwise both must. */
    uint8_t mday_star, wday_star;
} msm_cron_t;

/** Longest expression text msm_cron_parse() takes. */
#define MSM_CRON_TEXT_MAX 256

/**
 * @brief Parses @p text into @p out.
 * @returns MSM_OK, or MSM_ERR_PARSE with what is wrong in @p why (e.g. "hour field: 24 is
 * out of range 0-23").
 */
int msm_cron_parse(const char *text, msm_cron_t *out, char *why, size_t why_size);

/**
 * @brief The first minute strictly after @p after_ms (unix ms, UTC) that @p c matches.
 * @returns unix ms of that minute (a multiple of 60000), or -1 when it matches nothing in
 * the next 30 years (e.g. "0 0 30 2 *") or past year 9999.
 */
int64_t msm_cron_next(const msm_cron_t *c, int64_t after_ms);

#endif
