/* SPDX-License-Identifier: MIT */
/* The body of a batch push read without a JSON tree: one pass over the array that builds each
 * event from its members as they come (msm/json_scan.h), "data" copied as jansson prints it.
 * It takes only bodies it fully understands and that msm__event_from_json() would take event
 * by event; on anything else (an error, a duplicate member, an unusual form) it declines and
 * the jansson path reads the body, so answers stay that path's. Measured: the jansson tree
 * and printing each "data" back were more than half of the SDK's CPU per batched event. */
#include "event_parts.h"

#include "msm/base64.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/json_scan.h"

#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OTHER_MEMBERS 64 /* attributes and ignored members of one event; more: declined */

/* One event's members as they were read (pointers into the scan's arena). */
typedef struct {
    const char *str[BM_COUNT]; /* string members, decoded */
    unsigned seen;             /* BM_* members met, whatever their type */
    int64_t attempt;
    const char *data; /* "data" as jansson prints it */
    size_t data_len;
    int data_is_string;
    const char *others[MAX_OTHER_MEMBERS]; /* the other names, for duplicates */
    size_t nothers;
    attr_collect_t attrs;
} members_t;

/* @returns 0 when @p name is new among the event's other members. */
static int other_member_new(members_t *m, const char *name)
{
    if (m->nothers == MAX_OTHER_MEMBERS)
        return -1;
    for (size_t i = 0; i < m->nothers; i++) {
        if (strcmp(m->others[i], name) == 0)
            return -1;
    }
    m->others[m->nothers++] = name;
    return 0;
}

/* A member that is not context: a string is an attribute, any other value is skipped. */
static int other_member(msm_json_scan_t *s, members_t *m, const char *name)
{
    if (other_member_new(m, name) != 0)
        return -1;
    if (s->p < s->end && *s->p == '"') {
        const char *v = msm_json_scan_string(s, 1, NULL);
        attr_collect_t *ac = &m->attrs;
        if (!v || ac->ac_n == LM_MAX_ATTRS)
            return -1;
        ac->ac_attrs[ac->ac_n++] = (lm_attr_t){name, v};
        ac->ac_bytes += strlen(name) + strlen(v) + 2;
        return 0;
    }
    char *mark = s->out;
    int rc = msm_json_scan_value(s, 0);
    s->out = mark;
    return rc;
}

/* A context member: strings decoded, "data" as jansson prints it, "msmattempt" a number. */
static int context_member(msm_json_scan_t *s, members_t *m, int bm)
{
    m->seen |= 1u << bm;
    if (bm == BM_DATA) {
        m->data_is_string = s->p < s->end && *s->p == '"';
        m->data = s->out;
        if (msm_json_scan_value(s, 0) != 0)
            return -1;
        m->data_len = (size_t)(s->out - m->data);
        return 0;
    }
    if (bm == BM_MSMATTEMPT) /* a string form is left to the jansson path */
        return msm_json_scan_number(s, &m->attempt) == 0 && m->attempt >= 1 && m->attempt <= INT_MAX
                   ? 0
                   : -1;
    if (s->p < s->end && *s->p == '"')
        return (m->str[bm] = msm_json_scan_string(s, 1, NULL)) ? 0 : -1;
    if (bm == BM_DATA_BASE64) /* not a string: not base64 */
        return -1;
    /* Another type reads as absent, as json_string_value() makes it. */
    char *mark = s->out;
    int rc = msm_json_scan_value(s, 0);
    s->out = mark;
    return rc;
}

/* The members of the event object at s->p. */
static int event_members(msm_json_scan_t *s, members_t *m)
{
    size_t count = 0;
    char *name;
    int rc;
    while ((rc = msm_json_scan_member(s, &count, &name)) == 1) {
        int bm = msm__batch_member(name);
        if (bm >= 0 && (m->seen & (1u << bm)))
            return -1;
        if ((bm >= 0 ? context_member(s, m, bm) : other_member(s, m, name)) != 0)
            return -1;
    }
    return rc == 0 && count ? 0 : -1; /* {} has no id */
}

/* The payload as msm__event_from_json() takes it: "data_base64" decoded, else "data" (a
 * string as is for a type that is not JSON). */
static int payload(msm_json_scan_t *s, const members_t *m, const char *ct, event_parts_t *p)
{
    p->payload = "";
    p->payload_len = 0;
    if (m->seen & (1u << BM_DATA_BASE64)) {
        const char *text = m->str[BM_DATA_BASE64];
        size_t len = strlen(text);
        if ((size_t)(s->out_end - s->out) < len / 4 * 3 + 3 ||
            msm_base64_decode(text, len, s->out, &p->payload_len) != MSM_OK)
            return -1;
        p->payload = s->out;
        return 0;
    }
    if (!m->data)
        return 0;
    if (m->data_is_string && !msm_json_media_type(ct)) {
        /* Decoded from the copy: one string, read back exactly as it was written. */
        msm_json_scan_t again = {.p = m->data,
                                 .end = m->data + m->data_len,
                                 .out = s->out,
                                 .out_end = s->out_end,
                                 .flags = s->flags};
        p->payload = msm_json_scan_string(&again, 1, NULL);
        p->payload_len = p->payload ? (size_t)(again.out - p->payload) - 1 : 0;
        return p->payload ? 0 : -1;
    }
    p->payload = m->data;
    p->payload_len = m->data_len;
    return 0;
}

/* The event object at s->p, with the checks of msm__event_from_json(). NULL: declined. */
static msm_event_t *
read_event(msm_json_scan_t *s, members_t *m, const char *subscription, int64_t deadline_ms)
{
    memset(m, 0, offsetof(members_t, attrs));
    m->attrs.ac_n = m->attrs.ac_bytes = 0;
    m->attrs.ac_too_many = 0;
    m->attempt = 1;
    if (event_members(s, m) != 0)
        return NULL;
    const char *spec = m->str[BM_SPECVERSION];
    if (!m->str[BM_ID] || !*m->str[BM_ID] || (spec && strcmp(spec, "1.0") != 0))
        return NULL;
    event_parts_t p = {.deadline_ms = deadline_ms, .attempt = m->attempt};
    p.attrs = &m->attrs;
    p.exts = &m->attrs; /* in a batch the attributes are the extensions */
    msm__batch_parts_texts(&p, m->str, subscription);
    if (payload(s, m, p.text[F_CONTENT_TYPE], &p) != 0)
        return NULL;
    char why[64];
    return msm__event_build(&p, why, sizeof(why));
}

typedef struct {
    msm_event_t **evs;
    size_t n, cap;
} event_list_t;

static int list_add(event_list_t *l, msm_event_t *ev)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        msm_event_t **evs = realloc(l->evs, cap * sizeof(*evs));
        if (!evs)
            return -1;
        l->evs = evs;
        l->cap = cap;
    }
    l->evs[l->n++] = ev;
    return 0;
}

/* Every event of the array, or -1. */
static int read_batch(msm_json_scan_t *s,
                      char *arena,
                      const char *subscription,
                      int64_t deadline_ms,
                      event_list_t *list)
{
    members_t *m = malloc(sizeof(*m)); /* its attributes are 4 KiB: not on the loop's stack */
    int rc = -1;
    if (!m || !msm_json_scan_eat(s, '['))
        goto done;
    if (!msm_json_scan_eat(s, ']')) {
        do {
            s->out = arena; /* each event is copied out before the next is read */
            msm_json_scan_ws(s);
            msm_event_t *ev = read_event(s, m, subscription, deadline_ms);
            if (!ev || list_add(list, ev) != 0) {
                msm__event_free(ev);
                goto done;
            }
        } while (msm_json_scan_eat(s, ','));
        if (!msm_json_scan_eat(s, ']'))
            goto done;
    }
    msm_json_scan_ws(s);
    rc = s->p == s->end ? 0 : -1;
done:
    free(m);
    return rc;
}

int msm__batch_read_fast(const char *body,
                         size_t len,
                         const char *subscription,
                         int64_t deadline_ms,
                         msm_event_t ***events,
                         size_t *n)
{
    /* One event at a time: what it writes is no longer than the body, but for reals printed
     * longer (1e5 is 100000.0) and a decoded copy of its "data". */
    size_t size = len < SIZE_MAX / 2 - 64 ? 2 * len + 64 : 0;
    char *arena = size ? malloc(size) : NULL;
    msm_json_scan_t s = {.p = body,
                         .end = body + len,
                         .out = arena,
                         .out_end = arena ? arena + size : NULL,
                         .flags = MSM_JSON_SCAN_AS_JANSSON};
    event_list_t list = {0};
    int ok = arena && body && read_batch(&s, arena, subscription, deadline_ms, &list) == 0;
    free(arena);
    if (!ok) {
        for (size_t i = 0; i < list.n; i++)
            msm__event_free(list.evs[i]);
        free(list.evs);
        return 0;
    }
    *events = list.evs;
    *n = list.n;
    return 1;
}
