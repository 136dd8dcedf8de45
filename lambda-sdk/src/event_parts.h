/* SPDX-License-Identifier: MIT */
/* The parts an event is built from before it is copied into its one allocation (event.c),
 * shared with the fast reader of batch bodies (batch_fast.c). */
#ifndef MSM_LAMBDA_EVENT_PARTS_H
#define MSM_LAMBDA_EVENT_PARTS_H

#include "lambda_int.h"

#include <stddef.h>
#include <stdint.h>

#define LM_MAX_ATTRS 256

typedef struct {
    const char *a_name;
    const char *a_value;
} lm_attr_t;

/* Attributes or extensions in arrival order. */
typedef struct {
    lm_attr_t ac_attrs[LM_MAX_ATTRS];
    size_t ac_n;
    size_t ac_bytes; /* name and value bytes with their NULs */
    int ac_too_many;
} attr_collect_t;

/* The text fields in one table, so sizing and copying walk the same list. */
enum {
    F_ID,
    F_SOURCE,
    F_TOPIC,
    F_TYPE,
    F_SUBJECT,
    F_DATASCHEMA,
    F_SOURCE_ID,
    F_SUBSCRIPTION,
    F_KEY,
    F_ORDERING_KEY,
    F_TRACEPARENT,
    F_CONTENT_TYPE,
    F_COUNT
};

typedef struct {
    const char *text[F_COUNT];
    size_t lens[F_COUNT];
    const attr_collect_t *attrs;
    const attr_collect_t *exts;
    const char *payload;
    size_t payload_len;
    int64_t attempt, deadline_ms, time_ms;
} event_parts_t;

/* The members of a batch event that are CloudEvents context or msm's own: every other member
 * whose value is a string is an attribute. */
enum {
    BM_SPECVERSION,
    BM_ID,
    BM_SOURCE,
    BM_TYPE,
    BM_TIME,
    BM_DATACONTENTTYPE,
    BM_DATASCHEMA,
    BM_SUBJECT,
    BM_DATA,
    BM_DATA_BASE64,
    BM_MSMSUBSCRIPTION,
    BM_MSMATTEMPT,
    BM_MSMKEY,
    BM_MSMORDERINGKEY,
    BM_MSMSOURCEID,
    BM_TRACEPARENT,
    BM_TRACESTATE,
    BM_COUNT
};

/** The name of member BM_* @p m. */
const char *msm__batch_member_name(int m);
/** @returns the BM_* index of member @p name, or -1 for an attribute. */
int msm__batch_member(const char *name);
/**
 * Sets the text fields, topic and time of a batch event from its string members
 * (@p members[BM_*], NULL when absent or not a string) and the request's subscription.
 */
void msm__batch_parts_texts(event_parts_t *p,
                            const char *const members[BM_COUNT],
                            const char *subscription);
/** Copies @p p into the event's one allocation. @returns the event, or NULL (out of memory). */
msm_event_t *msm__event_build(const event_parts_t *p, char *why, size_t why_size);

#endif
