/* SPDX-License-Identifier: MIT */
/* Clocks and RFC 3339 timestamps: monotonic and unix milliseconds, formatting as
 * "2026-11-25T12:00:00.123Z", and a strict parser (offsets, fractional seconds) to unix ms. */
#ifndef MSM_TIME_H
#define MSM_TIME_H

#include <stddef.h>
#include <stdint.h>

/** Buffer size for msm_time_format(): "YYYY-MM-DDTHH:MM:SS.mmmZ" plus the NUL. */
#define MSM_TIME_RFC3339_SIZE 25

/** Smallest and largest unix ms that RFC 3339 can express (0000-01-01 .. 9999-12-31). */
#define MSM_TIME_MIN_MS (-62167219200000LL)
#define MSM_TIME_MAX_MS (253402300799999LL)

/**
 * @brief Monotonic clock in milliseconds (CLOCK_MONOTONIC): for deadlines and durations.
 * @remark Thread-safe. Not related to wall-clock time.
 */
uint64_t msm_time_mono_ms(void);

/** @brief Monotonic clock in microseconds (CLOCK_MONOTONIC). Thread-safe. */
uint64_t msm_time_mono_us(void);

/**
 * @brief Wall-clock time as milliseconds since 1970-01-01T00:00:00Z (CLOCK_REALTIME).
 * @remark Thread-safe. May jump when the system clock is set.
 */
int64_t msm_time_unix_ms(void);

/** @brief msm_time_unix_ms() in microseconds. */
int64_t msm_time_unix_us(void);

/**
 * @brief Formats @p unix_ms as RFC 3339 in UTC with milliseconds, e.g.
 * "2026-11-25T12:00:00.123Z".
 * @param buf at least MSM_TIME_RFC3339_SIZE bytes for a complete result
 * @returns the length written (24), or 0 when @p unix_ms is outside
 * [MSM_TIME_MIN_MS, MSM_TIME_MAX_MS] or @p n is too small (buf is then "" if n > 0).
 */
size_t msm_time_format(int64_t unix_ms, char *buf, size_t n);

/**
 * @brief Parses an RFC 3339 date-time ("2026-11-25T12:00:00Z",
 * "2026-11-25T12:00:00.123+02:00") into unix milliseconds.
 *
 * Strict: exactly the RFC 3339 `date-time` grammar (the 'T' and 'Z' may be lower case),
 * calendar-checked (month 1-12, day within the month including leap years, hour 0-23,
 * minute 0-59, second 0-60 where 60 is a leap second, counted as the next second like
 * POSIX time does), offsets "Z" or "+hh:mm"/"-hh:mm" up to 23:59. Fractional seconds
 * of any length are truncated to milliseconds. Leading/trailing spaces are rejected.
 * @param s the text; need not be NUL-terminated when @p len is given
 * @param len length of @p s
 * @param out receives unix ms on success (untouched on failure)
 * @returns MSM_OK or MSM_ERR_PARSE.
 */
int msm_time_parse_n(const char *s, size_t len, int64_t *out);

/** @brief msm_time_parse_n() on a NUL-terminated string (NULL is MSM_ERR_PARSE). */
int msm_time_parse(const char *s, int64_t *out);

#endif
