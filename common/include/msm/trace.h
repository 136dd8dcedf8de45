/* SPDX-License-Identifier: MIT */
/* W3C trace context (https://www.w3.org/TR/trace-context/) and msm's spans.
 *
 * Every event carries a traceparent in its envelope: the publisher's (body field or
 * header) or a new one made by the frontend. Each hop that handles a *sampled* event
 * (trace flag 01) makes a span: a new span id whose parent is the span id the event came
 * with, logged as one structured line when the hop's work is done, and passed on in the
 * event (or the push's traceparent header). So one grep of a trace id follows an event
 * through frontend, scheduler, flowcontrol, router and the lambda. Unsampled events pass
 * through unchanged and cost no line (docs/tracing.md). */
#ifndef MSM_TRACE_H
#define MSM_TRACE_H

#include "msm/log.h"

/** Length of a version-00 traceparent: "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>". */
#define MSM_TRACEPARENT_LEN 55

/**
 * @brief Whether @p tp is a well-formed traceparent: lower-case hex fields, a version other
 * than ff, a trace id and a span id not all zero; version 00 is exactly
 * MSM_TRACEPARENT_LEN long, a later version may append fields after a '-'.
 * @returns 1 or 0 (0 for NULL).
 */
int msm_traceparent_valid(const char *tp);

#include <stddef.h>
#include <stdint.h>

/** @brief Whether the valid traceparent @p tp has the sampled flag (0 for NULL). */
int msm_traceparent_sampled(const char *tp);

/**
 * @brief A new trace: random trace and span ids, sampled flag as @p sampled, in @p out
 * (MSM_TRACEPARENT_LEN + 1 bytes).
 */
void msm_traceparent_new(char *out, int sampled);

/**
 * @brief A child of the valid traceparent @p parent into @p out (MSM_TRACEPARENT_LEN + 1
 * bytes; may be @p parent itself, which then must have room for it): version 00, the same
 * trace id and flags, a new random span id. @returns MSM_OK or MSM_ERR_INVALID.
 */
int msm_traceparent_child(const char *parent, char *out);

/** A span made by one hop: its traceparent, its parent's, and when it began. */
typedef struct {
    char tp[MSM_TRACEPARENT_LEN + 1];     /**< this span's (what the next hop gets) */
    char parent[MSM_TRACEPARENT_LEN + 1]; /**< "" for a root span */
    uint64_t start_us;                    /**< msm_time_mono_us() at the start */
} msm_span_t;

/**
 * @brief Starts a span under @p parent (a traceparent, or NULL/invalid for none) when it is
 * sampled. @returns 1 when a span was started (@p span holds it), 0 when nothing is
 * traced (unsampled or no parent).
 */
int msm_span_start(msm_span_t *span, const char *parent);

/**
 * @brief Starts a root span: a new sampled trace. For a hop that makes the trace.
 */
void msm_span_start_root(msm_span_t *span);

/** The spans of a batch's items (events, tasks), made only for the sampled ones: the
 *  storage is taken on the first. Zero-initialise. */
typedef struct {
    msm_span_t *spans;
    unsigned char *started;
    size_t n;
} msm_spans_t;

/**
 * @brief msm_span_start() for item @p i of @p n under @p parent (NULL = a root span).
 * @returns the span, or NULL when nothing is traced or out of memory (then it is not).
 */
msm_span_t *msm_spans_start(msm_spans_t *set, size_t n, size_t i, const char *parent);

/** @brief Item @p i's span, or NULL when it has none. */
msm_span_t *msm_spans_get(const msm_spans_t *set, size_t i);

/** @brief Frees the storage (not @p set). */
void msm_spans_deinit(msm_spans_t *set);

/**
 * @brief Logs @p span as one line (facility "trace", msg "span") with trace_id, span_id,
 * parent_id, hop, name, duration_us and @p n more fields, ended now. Thread-safe.
 */
void msm_span_end(const msm_span_t *span, const char *hop, const char *name,
                  const msm_log_field_t *fields, size_t n);

#endif
