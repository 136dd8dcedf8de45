/* SPDX-License-Identifier: MIT */
/* PROTOBUF compatibility (msm_schema_can_read): can a reader parse whatever a writer wrote,
 * judged on the wire like the Confluent registry does. Field numbers matter, names do not;
 * message types are compared structurally, each (reader, writer) pair once, with a worklist
 * instead of recursion so that recursive and very deep schemas are safe. */
#include "schema_protobuf_int.h"

#include "msm/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const pb_msg_t *r, *w;
    size_t parent;     /* the pair this one was reached from; SIZE_MAX at the top */
    const char *field; /* the reader field it was reached through */
} pb_pair_t;

typedef struct {
    pb_pair_t *pairs;
    size_t n, cap;
    char *why;
    size_t why_size;
} pb_compat_t;

/* Types that share an encoding and read each other's values. */
enum {
    CLASS_VARINT = 1, /* int32 uint32 int64 uint64 bool enum */
    CLASS_ZIGZAG,     /* sint32 sint64 */
    CLASS_FIXED32,    /* fixed32 sfixed32 */
    CLASS_FIXED64,    /* fixed64 sfixed64 */
    CLASS_FLOAT,
    CLASS_DOUBLE,
    CLASS_TEXT, /* string bytes */
    CLASS_MESSAGE,
};

static int type_class(uint8_t type)
{
    switch (type) {
    case PB_TYPE_SINT32:
    case PB_TYPE_SINT64:
        return CLASS_ZIGZAG;
    case PB_TYPE_FIXED32:
    case PB_TYPE_SFIXED32:
        return CLASS_FIXED32;
    case PB_TYPE_FIXED64:
    case PB_TYPE_SFIXED64:
        return CLASS_FIXED64;
    case PB_TYPE_FLOAT:
        return CLASS_FLOAT;
    case PB_TYPE_DOUBLE:
        return CLASS_DOUBLE;
    case PB_TYPE_STRING:
    case PB_TYPE_BYTES:
        return CLASS_TEXT;
    case PB_TYPE_MESSAGE:
        return CLASS_MESSAGE;
    default:
        return CLASS_VARINT;
    }
}

/* "a.b.c": the reader field names from the top message down to pair @p at, plus @p leaf. */
static void field_path(const pb_compat_t *c, size_t at, const char *leaf, char *buf, size_t n)
{
    size_t len = strlen(leaf) < n ? strlen(leaf) : n - 1;
    memcpy(buf, leaf, len);
    buf[len] = '\0';
    for (size_t i = at; i != SIZE_MAX && c->pairs[i].field; i = c->pairs[i].parent) {
        size_t add = strlen(c->pairs[i].field) + 1;
        if (len + add >= n)
            break; /* the innermost part is the useful one */
        memmove(buf + add, buf, len + 1);
        memcpy(buf, c->pairs[i].field, add - 1);
        buf[add - 1] = '.';
        len += add;
    }
}

static int conflict(pb_compat_t *c, size_t at, const pb_field_t *f, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int conflict(pb_compat_t *c, size_t at, const pb_field_t *f, const char *fmt, ...)
{
    char what[160], path[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    field_path(c, at, f->name, path, sizeof(path));
    snprintf(c->why, c->why_size, "field '%s' (number %u) of %s: %s", path, f->number,
             c->pairs[at].r->full_name, what);
    return MSM_ERR_CONFLICT;
}

/* Queues (r, w) unless that pair was queued before. */
static int
visit(pb_compat_t *c, const pb_msg_t *r, const pb_msg_t *w, size_t parent, const char *field)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->pairs[i].r == r && c->pairs[i].w == w)
            return MSM_OK;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        pb_pair_t *pairs = realloc(c->pairs, cap * sizeof(*pairs));
        if (!pairs) {
            snprintf(c->why, c->why_size, "out of memory");
            return MSM_ERR_NOMEM;
        }
        c->pairs = pairs;
        c->cap = cap;
    }
    c->pairs[c->n++] = (pb_pair_t){r, w, parent, field};
    return MSM_OK;
}

static int compare_field(pb_compat_t *c, size_t at, const pb_field_t *rf, const pb_field_t *wf)
{
    int rclass = type_class(rf->type), wclass = type_class(wf->type);
    if (rclass != wclass)
        return conflict(c, at, rf, "type changed from %s to %s", msm__pb_type_name(wf->type),
                        msm__pb_type_name(rf->type));
    bool r_rep = rf->label == PB_LABEL_REPEATED, w_rep = wf->label == PB_LABEL_REPEATED;
    /* A single value reads as a one-element list, and repeated strings, bytes and messages
     * are just several records; but repeated numbers are usually packed (one LEN record)
     * and a single numeric field cannot read that. */
    if (w_rep && !r_rep && rclass != CLASS_TEXT && rclass != CLASS_MESSAGE)
        return conflict(c, at, rf, "changed from repeated %s to a single value",
                        msm__pb_type_name(wf->type));
    if (rf->label == PB_LABEL_REQUIRED && wf->label != PB_LABEL_REQUIRED)
        return conflict(c, at, rf, "became required");
    if (rclass == CLASS_MESSAGE)
        return visit(c, rf->msg, wf->msg, at, rf->name);
    return MSM_OK;
}

/* Fields that the writer could set together must not meet in one oneof of the reader:
 * the reader would keep only one of them. */
static int compare_oneofs(pb_compat_t *c, size_t at)
{
    const pb_msg_t *rm = c->pairs[at].r, *wm = c->pairs[at].w;
    for (size_t o = 0; o < rm->n_oneofs; o++) {
        const pb_field_t *first = NULL;
        int32_t first_group = -1;
        for (int32_t i = rm->oneof_first[o]; i >= 0; i = rm->fields[i].next_in_oneof) {
            const pb_field_t *rf = &rm->fields[i];
            const pb_field_t *wf = msm__pb_field_by_number(wm, rf->number);
            if (!wf)
                continue;
            if (!first) {
                first = rf;
                first_group = wf->oneof;
            } else if (wf->oneof < 0 || wf->oneof != first_group) {
                return conflict(c, at, rf, "moved into oneof '%s' with '%s': data may set both",
                                rm->oneof_names[o], first->name);
            }
        }
    }
    return MSM_OK;
}

static int compare_messages(pb_compat_t *c, size_t at)
{
    const pb_msg_t *rm = c->pairs[at].r, *wm = c->pairs[at].w;
    for (size_t i = 0; i < rm->n_fields; i++) {
        const pb_field_t *rf = &rm->fields[i];
        const pb_field_t *wf = msm__pb_field_by_number(wm, rf->number);
        int rc;
        /* Fields only one side has are fine: the reader skips or defaults them. */
        if (!wf && rf->label == PB_LABEL_REQUIRED)
            return conflict(c, at, rf, "required field added");
        if (wf && (rc = compare_field(c, at, rf, wf)) != MSM_OK)
            return rc;
    }
    return compare_oneofs(c, at);
}

int msm__pb_can_read(const void *reader, const void *writer, char *why, size_t why_size)
{
    const pb_schema_t *r = reader, *w = writer;
    if (strcmp(r->root->full_name, w->root->full_name) != 0) {
        snprintf(why, why_size, "message name changed from %s to %s", w->root->full_name,
                 r->root->full_name);
        return MSM_ERR_CONFLICT;
    }
    pb_compat_t c = {.why = why, .why_size = why_size};
    int rc = visit(&c, r->root, w->root, SIZE_MAX, NULL);
    for (size_t i = 0; rc == MSM_OK && i < c.n; i++)
        rc = compare_messages(&c, i);
    free(c.pairs);
    return rc;
}
