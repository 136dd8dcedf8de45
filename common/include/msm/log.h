/* SPDX-License-Identifier: MIT */
/* Structured logging: one line per record on stderr, logfmt or JSON, tagged with the
 * daemon's name. The level is checked before anything is formatted. */
#ifndef MSM_LOG_H
#define MSM_LOG_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    MSM_LOG_DEBUG = 0,
    MSM_LOG_INFO = 1,
    MSM_LOG_WARN = 2,
    MSM_LOG_ERROR = 3,
    MSM_LOG_OFF = 4,
} msm_log_level_t;

typedef enum {
    MSM_LOG_LOGFMT = 0, /**< ts=… level=info daemon=frontend facility=http msg="…" */
    MSM_LOG_JSON = 1,   /**< {"ts":"…","level":"info","daemon":"…","facility":"…","msg":"…"} */
} msm_log_format_t;

/**
 * @brief Sets the process-wide log identity. Call once at start-up, before threads.
 * @param daemon name written on every line (copied)
 * @param out where lines go; NULL means stderr
 */
void msm_log_setup(const char *daemon, msm_log_level_t level, msm_log_format_t format, FILE *out);

/** @brief Parses "debug", "info", "warn", "error", "off". @returns 0 or MSM_ERR_INVALID. */
int msm_log_level_parse(const char *s, msm_log_level_t *level);

/** @brief Parses "logfmt" or "json". @returns 0 or MSM_ERR_INVALID. */
int msm_log_format_parse(const char *s, msm_log_format_t *format);

/** The current threshold; read by msm_log() before formatting. */
extern msm_log_level_t msm__log_threshold;

void msm__log_write(msm_log_level_t level, const char *facility, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** One field of a structured record: key=value in logfmt, "key":"value" in JSON. */
typedef struct {
    const char *key;   /**< a bare word: letters, digits, '_' */
    const char *value; /**< NULL fields are left out */
} msm_log_field_t;

/**
 * @brief Logs one record with @p msg and @p n extra fields after it, when @p level is at or
 * above the threshold. For records that tools read by field (span lines). Thread-safe.
 */
void msm_log_fields(msm_log_level_t level, const char *facility, const char *msg,
                    const msm_log_field_t *fields, size_t n);

/** @brief Logs one record when @p level is at or above the threshold. Thread-safe. */
#define msm_log(level, facility, ...)                                                              \
    do {                                                                                           \
        if ((level) >= msm__log_threshold)                                                         \
            msm__log_write((level), (facility), __VA_ARGS__);                                      \
    } while (0)

#endif
