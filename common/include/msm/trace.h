/* SPDX-License-Identifier: MIT */
/* W3C trace context (https://www.w3.org/TR/trace-context/): the traceparent format, shared
 * by the frontend (which keeps a publish request's traceparent in the envelope) and the
 * SDK's client (which derives a child of the handled event's). */
#ifndef MSM_TRACE_H
#define MSM_TRACE_H

/** Length of a version-00 traceparent: "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>". */
#define MSM_TRACEPARENT_LEN 55

/**
 * @brief Whether @p tp is a well-formed traceparent: lower-case hex fields, a version other
 * than ff, a trace id and a span id not all zero; version 00 is exactly
 * MSM_TRACEPARENT_LEN long, a later version may append fields after a '-'.
 * @returns 1 or 0 (0 for NULL).
 */
int msm_traceparent_valid(const char *tp);

#endif
