/* SPDX-License-Identifier: MIT */
/* W3C trace context: the traceparent's format, new ids, spans as log lines. */
#include "hex_int.h"
#include "msm/trace.h"
#include "msm/backoff.h"
#include "msm/err.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether the @p n characters at @p s are lower-case hex; *all_zero says whether all are '0'. */
static int hex_run(const char *s, size_t n, int *all_zero)
{
    *all_zero = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
        if (c != '0')
            *all_zero = 0;
    }
    return 1;
}

int msm_traceparent_valid(const char *tp)
{
    size_t n = tp ? strlen(tp) : 0;
    int zero;
    if (n < MSM_TRACEPARENT_LEN || tp[2] != '-' || tp[35] != '-' || tp[52] != '-')
        return 0;
    if (!hex_run(tp, 2, &zero) || strncmp(tp, "ff", 2) == 0)
        return 0;
    if (strncmp(tp, "00", 2) == 0 ? n != MSM_TRACEPARENT_LEN
                                  : (n > MSM_TRACEPARENT_LEN && tp[MSM_TRACEPARENT_LEN] != '-'))
        return 0;
    if (!hex_run(tp + 3, 32, &zero) || zero || !hex_run(tp + 36, 16, &zero) || zero)
        return 0;
    return hex_run(tp + 53, 2, &zero);
}

int msm_traceparent_sampled(const char *tp)
{
    if (!tp || strlen(tp) < MSM_TRACEPARENT_LEN)
        return 0;
    int lo = msm__hex_value((unsigned char)tp[54]);
    return lo >= 0 && (lo & 1);
}

/* @p n random lower-case hex digits at @p out, not all zero (W3C: all-zero ids are invalid). */
static void random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int zero = 1;
    while (zero) {
        uint64_t r = 0;
        for (size_t i = 0; i < n; i++) {
            if (i % 16 == 0)
                r = msm_rand_u64();
            out[i] = hex[r & 15];
            zero &= out[i] == '0';
            r >>= 4;
        }
    }
}

void msm_traceparent_new(char *out, int sampled)
{
    memcpy(out, "00-", 3);
    random_hex(out + 3, 32);
    out[35] = '-';
    random_hex(out + 36, 16);
    memcpy(out + 52, sampled ? "-01" : "-00", 4); /* with the NUL */
}

int msm_traceparent_child(const char *parent, char *out)
{
    if (!msm_traceparent_valid(parent))
        return MSM_ERR_INVALID;
    if (out != parent)
        memcpy(out, parent, MSM_TRACEPARENT_LEN);
    /* A hop that changes the traceparent writes the version it knows (W3C §3.2.4). */
    memcpy(out, "00", 2);
    random_hex(out + 36, 16);
    out[MSM_TRACEPARENT_LEN] = '\0';
    return MSM_OK;
}

int msm_span_start(msm_span_t *span, const char *parent)
{
    if (!msm_traceparent_sampled(parent) || !msm_traceparent_valid(parent))
        return 0; /* the cheap test first: most events are not sampled */
    memcpy(span->parent, parent, MSM_TRACEPARENT_LEN);
    span->parent[MSM_TRACEPARENT_LEN] = '\0';
    msm_traceparent_child(span->parent, span->tp);
    span->start_us = msm_time_mono_us();
    return 1;
}

void msm_span_start_root(msm_span_t *span)
{
    msm_traceparent_new(span->tp, 1);
    span->parent[0] = '\0';
    span->start_us = msm_time_mono_us();
}

msm_span_t *msm_spans_start(msm_spans_t *set, size_t n, size_t i, const char *parent)
{
    if (parent && !msm_traceparent_sampled(parent))
        return NULL;
    if (!set->spans) {
        set->spans = malloc(n * sizeof(*set->spans));
        set->started = calloc(n, 1);
        set->n = n;
        if (!set->spans || !set->started) {
            msm_spans_deinit(set);
            return NULL;
        }
    }
    if (i >= set->n)
        return NULL;
    msm_span_t *s = &set->spans[i];
    if (parent) {
        set->started[i] = (unsigned char)msm_span_start(s, parent);
    } else {
        msm_span_start_root(s);
        set->started[i] = 1;
    }
    return set->started[i] ? s : NULL;
}

msm_span_t *msm_spans_get(const msm_spans_t *set, size_t i)
{
    return set->started && i < set->n && set->started[i] ? &set->spans[i] : NULL;
}

void msm_spans_deinit(msm_spans_t *set)
{
    free(set->spans);
    free(set->started);
    *set = (msm_spans_t){0};
}

void msm_span_end(const msm_span_t *span, const char *hop, const char *name,
                  const msm_log_field_t *fields, size_t n)
{
    if (MSM_LOG_INFO < msm__log_threshold)
        return;
    char trace_id[33], span_id[17], parent_id[17], duration[24];
    memcpy(trace_id, span->tp + 3, 32);
    trace_id[32] = '\0';
    memcpy(span_id, span->tp + 36, 16);
    span_id[16] = '\0';
    memcpy(parent_id, span->parent + 36, 16);
    parent_id[16] = '\0';
    snprintf(duration, sizeof(duration), "%" PRIu64, msm_time_mono_us() - span->start_us);
    msm_log_field_t all[16] = {{"trace_id", trace_id},
                               {"span_id", span_id},
                               {"parent_id", span->parent[0] ? parent_id : NULL},
                               {"hop", hop},
                               {"name", name},
                               {"duration_us", duration}};
    size_t k = 6;
    for (size_t i = 0; i < n && k < sizeof(all) / sizeof(all[0]); i++)
        all[k++] = fields[i];
    msm_log_fields(MSM_LOG_INFO, "trace", "span", all, k);
}
