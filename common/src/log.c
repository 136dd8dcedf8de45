/* SPDX-License-Identifier: MIT */
/* Structured log lines. Each record is formatted into one buffer and written with a single
 * fwrite under the stdio lock, so lines from threads (librdkafka's, MHD's) never interleave. */
#include "msm/log.h"
#include "msm/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

msm_log_level_t msm__log_threshold = MSM_LOG_INFO;

static char log_daemon[64] = "msm";
static msm_log_format_t log_format = MSM_LOG_LOGFMT;
static FILE *log_out;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void msm_log_setup(const char *daemon, msm_log_level_t level, msm_log_format_t format, FILE *out)
{
    snprintf(log_daemon, sizeof(log_daemon), "%s", daemon ? daemon : "msm");
    msm__log_threshold = level;
    log_format = format;
    log_out = out;
}

int msm_log_level_parse(const char *s, msm_log_level_t *level)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *level = (msm_log_level_t)i;
            return MSM_OK;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *level = MSM_LOG_WARN;
        return MSM_OK;
    }
    return MSM_ERR_INVALID;
}

int msm_log_format_parse(const char *s, msm_log_format_t *format)
{
    if (strcasecmp(s, "logfmt") == 0 || strcasecmp(s, "text") == 0) {
        *format = MSM_LOG_LOGFMT;
        return MSM_OK;
    }
    if (strcasecmp(s, "json") == 0) {
        *format = MSM_LOG_JSON;
        return MSM_OK;
    }
    return MSM_ERR_INVALID;
}

/* Appends s to buf[*pos..cap) escaped for a JSON string or a quoted logfmt value (the same
 * escapes serve both); truncates rather than overflows. */
static void append_escaped(char *buf, size_t cap, size_t *pos, const char *s)
{
    for (; *s && *pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[(*pos)++] = '\\';
            buf[(*pos)++] = (char)c;
        } else if (c == '\n') {
            buf[(*pos)++] = '\\';
            buf[(*pos)++] = 'n';
        } else if (c < 0x20) {
            *pos += (size_t)snprintf(buf + *pos, cap - *pos, "\\u%04x", c);
        } else {
            buf[(*pos)++] = (char)c;
        }
    }
}

static void append_raw(char *buf, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (n > cap - 1 - *pos)
        n = cap - 1 - *pos;
    memcpy(buf + *pos, s, n);
    *pos += n;
}

/* One record: the common head, @p msg, then @p fields. */
static void log_record(msm_log_level_t level, const char *facility, const char *msg,
                       const msm_log_field_t *fields, size_t n)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[40];
    size_t tn = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tn, sizeof(ts) - tn, ".%03dZ", (int)(tv.tv_usec / 1000));

    const char *lvl = level_names[level <= MSM_LOG_ERROR ? level : MSM_LOG_ERROR];
    int json = log_format == MSM_LOG_JSON;
    char line[4096];
    size_t pos = 0;
    append_raw(line, sizeof(line), &pos, json ? "{\"ts\":\"" : "ts=");
    append_raw(line, sizeof(line), &pos, ts);
    append_raw(line, sizeof(line), &pos, json ? "\",\"level\":\"" : " level=");
    append_raw(line, sizeof(line), &pos, lvl);
    append_raw(line, sizeof(line), &pos, json ? "\",\"daemon\":\"" : " daemon=");
    append_escaped(line, sizeof(line), &pos, log_daemon);
    append_raw(line, sizeof(line), &pos, json ? "\",\"facility\":\"" : " facility=");
    append_escaped(line, sizeof(line), &pos, facility ? facility : json ? "" : "-");
    append_raw(line, sizeof(line), &pos, json ? "\",\"msg\":\"" : " msg=\"");
    append_escaped(line, sizeof(line), &pos, msg);
    append_raw(line, sizeof(line), &pos, "\"");
    for (size_t i = 0; i < n; i++) {
        if (!fields[i].value)
            continue;
        append_raw(line, sizeof(line), &pos, json ? ",\"" : " ");
        append_raw(line, sizeof(line), &pos, fields[i].key);
        append_raw(line, sizeof(line), &pos, json ? "\":\"" : "=\"");
        append_escaped(line, sizeof(line), &pos, fields[i].value);
        append_raw(line, sizeof(line), &pos, "\"");
    }
    append_raw(line, sizeof(line), &pos, json ? "}\n" : "\n");
    /* A truncated line still ends in a newline. */
    if (pos >= sizeof(line) - 1) {
        pos = sizeof(line) - 2;
        line[pos++] = '\n';
    }
    FILE *out = log_out ? log_out : stderr;
    fwrite(line, 1, pos, out);
    fflush(out);
}

void msm__log_write(msm_log_level_t level, const char *facility, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_record(level, facility, msg, NULL, 0);
}

void msm_log_fields(msm_log_level_t level, const char *facility, const char *msg,
                    const msm_log_field_t *fields, size_t n)
{
    if (level >= msm__log_threshold)
        log_record(level, facility, msg, fields, n);
}
