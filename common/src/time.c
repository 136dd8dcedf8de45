/* SPDX-License-Identifier: MIT */
/* Clocks and RFC 3339 timestamps. Calendar arithmetic is done on day numbers (the
 * proleptic Gregorian "days from civil" method) so it needs neither timegm nor the TZ. */
#include "msm/time.h"
#include "msm/err.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t msm_time_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t msm_time_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t msm_time_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + (int64_t)ts.tv_nsec / 1000000;
}

int64_t msm_time_unix_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + (int64_t)ts.tv_nsec / 1000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date; m in 1..12. Years are split into
 * 400-year eras starting in March, so Feb 29 is the last day of its "year". */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

size_t msm_time_format(int64_t unix_ms, char *buf, size_t n)
{
    if (n > 0)
        buf[0] = '\0';
    if (n < MSM_TIME_RFC3339_SIZE || unix_ms < MSM_TIME_MIN_MS || unix_ms > MSM_TIME_MAX_MS)
        return 0;
    int64_t days = floor_div(unix_ms, 86400000);
    int64_t ms_of_day = unix_ms - days * 86400000;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int hh = (int)(ms_of_day / 3600000);
    int mi = (int)(ms_of_day / 60000 % 60);
    int ss = (int)(ms_of_day / 1000 % 60);
    int ms = (int)(ms_of_day % 1000);
    /* By hand (every push carries a ce-time): "YYYY-MM-DDTHH:MM:SS.mmmZ", y in 0..9999. */
    const struct {
        int v, width;
        char after;
    } parts[] = {{(int)y, 4, '-'}, {m, 2, '-'}, {d, 2, 'T'}, {hh, 2, ':'},
                 {mi, 2, ':'},     {ss, 2, '.'}, {ms, 3, 'Z'}};
    char *p = buf;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        for (int k = parts[i].width - 1, v = parts[i].v; k >= 0; k--, v /= 10)
            p[k] = (char)('0' + v % 10);
        p += parts[i].width;
        *p++ = parts[i].after;
    }
    *p = '\0';
    return (size_t)(p - buf);
}

/* Reads exactly @p ndigits decimal digits at s[*pos]. */
static int digits(const char *s, size_t len, size_t *pos, int ndigits, int *out)
{
    int v = 0;
    if (*pos + (size_t)ndigits > len)
        return -1;
    for (int i = 0; i < ndigits; i++) {
        char c = s[*pos + (size_t)i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *pos += (size_t)ndigits;
    *out = v;
    return 0;
}

static int expect(const char *s, size_t len, size_t *pos, char c)
{
    if (*pos >= len || s[*pos] != c)
        return -1;
    (*pos)++;
    return 0;
}

int msm_time_parse_n(const char *s, size_t len, int64_t *out)
{
    size_t p = 0;
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0, ms = 0;
    if (!s)
        return MSM_ERR_PARSE;
    if (digits(s, len, &p, 4, &y) || expect(s, len, &p, '-') || digits(s, len, &p, 2, &mo) ||
        expect(s, len, &p, '-') || digits(s, len, &p, 2, &d))
        return MSM_ERR_PARSE;
    if (p >= len || (s[p] != 'T' && s[p] != 't'))
        return MSM_ERR_PARSE;
    p++;
    if (digits(s, len, &p, 2, &h) || expect(s, len, &p, ':') || digits(s, len, &p, 2, &mi) ||
        expect(s, len, &p, ':') || digits(s, len, &p, 2, &se))
        return MSM_ERR_PARSE;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60)
        return MSM_ERR_PARSE;
    if (p < len && s[p] == '.') {
        p++;
        size_t start = p;
        while (p < len && s[p] >= '0' && s[p] <= '9') {
            /* Digits past the third only add precision we do not keep: truncate. */
            if (p - start < 3)
                ms = ms * 10 + (s[p] - '0');
            p++;
        }
        if (p == start)
            return MSM_ERR_PARSE;
        for (size_t k = p - start; k < 3; k++)
            ms *= 10;
    }
    int offset_min = 0;
    if (p >= len)
        return MSM_ERR_PARSE;
    if (s[p] == 'Z' || s[p] == 'z') {
        p++;
    } else if (s[p] == '+' || s[p] == '-') {
        int sign = s[p] == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(s, len, &p, 2, &oh) || expect(s, len, &p, ':') || digits(s, len, &p, 2, &om))
            return MSM_ERR_PARSE;
        if (oh > 23 || om > 59)
            return MSM_ERR_PARSE;
        offset_min = sign * (oh * 60 + om);
    } else {
        return MSM_ERR_PARSE;
    }
    if (p != len)
        return MSM_ERR_PARSE;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se;
    /* Local time = UTC + offset, so UTC = local - offset. */
    secs -= (int64_t)offset_min * 60;
    *out = secs * 1000 + ms;
    return MSM_OK;
}

int msm_time_parse(const char *s, int64_t *out)
{
    if (!s)
        return MSM_ERR_PARSE;
    return msm_time_parse_n(s, strlen(s), out);
}
