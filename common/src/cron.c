/* SPDX-License-Identifier: MIT */
/* Cron expressions: parsing into bit sets, and the next matching minute in UTC with the
 * civil calendar computed here (days <-> year/month/day), so no gmtime/timegm and no TZ. */
#include "msm/cron.h"

#include "msm/err.h"
#include "msm/time.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How far msm_cron_next() looks: long enough for "29 February on a Monday" (28 years). */
#define SEARCH_DAYS (30 * 366)

typedef struct {
    const char *name; /* for messages */
    int min, max;
    const char *const *names; /* 3-letter names of min.., or NULL */
} field_t;

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL",
                                          "AUG", "SEP", "OCT", "NOV", "DEC", NULL};
static const char *const day_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", NULL};

/* Day of the week allows 7 for Sunday too (folded into 0 after parsing). */
static const field_t fields[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day-of-month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day-of-week", 0, 7, day_names},
};

static const struct {
    const char *macro;
    const char *expr;
} macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

/* A number or (for fields with names) a 3-letter name at *p; advances *p. */
static int parse_value(const field_t *f, const char **p, int *out, char *why, size_t n)
{
    const char *s = *p;
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        while (isdigit((unsigned char)*s) && v <= 1000)
            v = v * 10 + (*s++ - '0');
        if (v < f->min || v > f->max) {
            snprintf(why, n, "%s field: %ld is out of range %d-%d", f->name, v, f->min, f->max);
            return MSM_ERR_PARSE;
        }
        *out = (int)v;
        *p = s;
        return MSM_OK;
    }
    for (int i = 0; f->names && f->names[i]; i++) {
        if (strncasecmp(s, f->names[i], 3) == 0 && !isalpha((unsigned char)s[3])) {
            *out = f->min + i;
            *p = s + 3;
            return MSM_OK;
        }
    }
    if (f->names)
        snprintf(why, n, "%s field: expected a number %d-%d or a name such as %s at \"%.12s\"",
                 f->name, f->min, f->max, f->names[0], s);
    else
        snprintf(why, n, "%s field: expected a number %d-%d at \"%.12s\"", f->name, f->min, f->max,
                 s);
    return MSM_ERR_PARSE;
}

/* One field's text (no spaces) into bits (bit v for value v). */
static int
parse_field(const field_t *f, const char *text, uint64_t *bits, int *star, char *why, size_t n)
{
    const char *p = text;
    *bits = 0;
    *star = *p == '*';
    for (;;) {
        int lo, hi, step = 1, ranged = 0;
        if (*p == '*') { /* day-of-week: 0-7, as in Vixie cron (7 is Sunday again) */
            lo = f->min;
            hi = f->max;
            ranged = 1;
            p++;
        } else {
            if (parse_value(f, &p, &lo, why, n) != MSM_OK)
                return MSM_ERR_PARSE;
            hi = lo;
            if (*p == '-') {
                p++;
                if (parse_value(f, &p, &hi, why, n) != MSM_OK)
                    return MSM_ERR_PARSE;
                if (hi < lo) {
                    snprintf(why, n, "%s field: range %d-%d runs backwards", f->name, lo, hi);
                    return MSM_ERR_PARSE;
                }
                ranged = 1;
            }
        }
        if (*p == '/') {
            p++;
            long s = 0;
            if (!isdigit((unsigned char)*p)) {
                snprintf(why, n, "%s field: a step needs a number after '/'", f->name);
                return MSM_ERR_PARSE;
            }
            while (isdigit((unsigned char)*p) && s <= 1000)
                s = s * 10 + (*p++ - '0');
            if (s < 1 || s > f->max - f->min + 1) {
                snprintf(why, n, "%s field: step %ld is out of range 1-%d", f->name, s,
                         f->max - f->min + 1);
                return MSM_ERR_PARSE;
            }
            step = (int)s;
            if (!ranged) /* "a/n": from a to the field's end ("7/n" of day-of-week: Sunday) */
                hi = f->max;
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= 1ULL << (f->max == 7 && v == 7 ? 0 : v);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p) {
            snprintf(why, n, "%s field: unexpected \"%.12s\"", f->name, p);
            return MSM_ERR_PARSE;
        }
        return MSM_OK;
    }
}

int msm_cron_parse(const char *text, msm_cron_t *out, char *why, size_t why_size)
{
    char buf[MSM_CRON_TEXT_MAX + 1], dummy[8];
    if (!why) {
        why = dummy;
        why_size = sizeof(dummy);
    }
    if (!text || strlen(text) > MSM_CRON_TEXT_MAX) {
        snprintf(why, why_size, "must be at most %d characters", MSM_CRON_TEXT_MAX);
        return MSM_ERR_PARSE;
    }
    while (isspace((unsigned char)*text))
        text++;
    if (*text == '@') {
        size_t len = strcspn(text, " \t\r\n");
        for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++) {
            if (strlen(macros[i].macro) == len && strncasecmp(text, macros[i].macro, len) == 0 &&
                text[len + strspn(text + len, " \t\r\n")] == '\0')
                return msm_cron_parse(macros[i].expr, out, why, why_size);
        }
        snprintf(why, why_size,
                 "unknown macro \"%.*s\" (supported: @yearly @annually @monthly @weekly @daily "
                 "@midnight @hourly)",
                 (int)(len > 20 ? 20 : len), text);
        return MSM_ERR_PARSE;
    }
    snprintf(buf, sizeof(buf), "%s", text);
    char *parts[6], *save = NULL;
    int nparts = 0;
    for (char *tok = strtok_r(buf, " \t\r\n", &save); tok; tok = strtok_r(NULL, " \t\r\n", &save)) {
        if (nparts == 6)
            break;
        parts[nparts++] = tok;
    }
    if (nparts != 5) {
        snprintf(why, why_size,
                 "must have 5 fields (minute hour day-of-month month day-of-week), not %s%d",
                 nparts == 6 ? "at least " : "", nparts);
        return MSM_ERR_PARSE;
    }
    uint64_t bits[5];
    int star[5];
    for (int i = 0; i < 5; i++) {
        if (parse_field(&fields[i], parts[i], &bits[i], &star[i], why, why_size) != MSM_OK)
            return MSM_ERR_PARSE;
    }
    *out = (msm_cron_t){.minutes = bits[0],
                        .hours = (uint32_t)bits[1],
                        .mdays = (uint32_t)bits[2],
                        .months = (uint16_t)bits[3],
                        .wdays = (uint8_t)bits[4],
                        .mday_star = (uint8_t)star[2],
                        .wday_star = (uint8_t)star[4]};
    return MSM_OK;
}

/* ---- the calendar (proleptic Gregorian, days since 1970-01-01; H. Hinnant's algorithms) ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* The lowest set bit of @p bits at or above @p from, or -1. */
static int next_bit(uint64_t bits, int from)
{
    if (from >= 64)
        return -1;
    uint64_t rest = bits & (~0ULL << from);
    return rest ? __builtin_ctzll(rest) : -1;
}

static int day_matches(const msm_cron_t *c, int mday, int wday)
{
    int dom = (c->mdays >> mday) & 1, dow = (c->wdays >> wday) & 1;
    return c->mday_star || c->wday_star ? dom && dow : dom || dow;
}

int64_t msm_cron_next(const msm_cron_t *c, int64_t after_ms)
{
    int64_t minute0 = floor_div(after_ms, 60000) + 1; /* the first whole minute after */
    int64_t day = floor_div(minute0, 1440);
    int hour = (int)((minute0 - day * 1440) / 60), minute = (int)((minute0 - day * 1440) % 60);
    int64_t last_day = day + SEARCH_DAYS;
    while (day <= last_day) {
        int64_t y;
        int m, d;
        civil_from_days(day, &y, &m, &d);
        if (y > 9999)
            return -1;
        if (!((c->months >> m) & 1)) { /* on to the 1st of the next month */
            day = days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1);
            hour = minute = 0;
            continue;
        }
        int wday = (int)(((day % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
        int h = day_matches(c, d, wday) ? next_bit(c->hours, hour) : -1;
        int mi = h < 0 ? -1 : next_bit(c->minutes, h == hour ? minute : 0);
        if (h >= 0 && mi < 0) { /* no minute left in that hour: the next matching hour */
            h = next_bit(c->hours, h + 1);
            mi = h < 0 ? -1 : next_bit(c->minutes, 0);
        }
        if (h >= 0 && mi >= 0) {
            int64_t t = ((day * 1440) + h * 60 + mi) * 60000;
            return t <= MSM_TIME_MAX_MS ? t : -1;
        }
        day++;
        hour = minute = 0;
    }
    return -1;
}
