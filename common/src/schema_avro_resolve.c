/* SPDX-License-Identifier: MIT */
/* AVRO: can a reader schema read what a writer schema wrote? The rules of the Avro 1.11
 * specification, "Schema Resolution", over our compiled trees; recursive types are
 * resolved coinductively (a record pair being checked is assumed to match), and the work
 * is bounded whatever the schemas. */
#include "schema_avro_int.h"

#include "msm/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Calls nested (about three per record, array or map level of the schemas). */
#define RES_MAX_DEPTH (4 * MSM_AVRO_MAX_DEPTH + 8)
/* Type pairs compared in one can_read: enough for any real schema, and a bound on the
 * work hostile ones can cause. */
#define RES_MAX_STEPS (1u << 20)

enum {
    R_OK = 0,
    R_MISMATCH, /* the two types do not match at all (spec: "match") */
    R_FAIL,     /* they match, but something inside them cannot be read */
};

typedef struct {
    const av_node_t *rp_r;
    const av_node_t *rp_w;
} av_pair_t;

typedef struct {
    av_pair_t os_pair;
    size_t os_log; /* index in the log + 1; 0 = empty slot */
} av_ok_slot_t;

static const char SEG_ITEMS[] = "[]";
static const char SEG_VALUES[] = "{}";

typedef struct {
    /* record pairs being compared right now: meeting one again means recursion */
    av_pair_t rs_busy[RES_MAX_DEPTH];
    size_t rs_n_busy;
    /* record and enum pairs proven readable, in order: a failure rolls back what was proven since
     * its start, as that may have leaned on the failed pair */
    av_pair_t *rs_log;
    size_t rs_n_log;
    size_t rs_cap_log;
    av_ok_slot_t *rs_slots; /* index of the log */
    size_t rs_cap_slots;
    size_t rs_used_slots; /* stale ones (rolled back) included */
    size_t rs_steps;
    bool rs_abort; /* out of memory or over a bound: the answer is no */
    bool rs_nomem;
    const char *rs_path[RES_MAX_DEPTH]; /* reader field names, SEG_ITEMS, SEG_VALUES */
    size_t rs_depth;
    char rs_msg[256];
} av_res_t;

static void format_path(const av_res_t *res, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < res->rs_depth && len + 1 < size; i++) {
        const char *s = res->rs_path[i];
        bool seg = s == SEG_ITEMS || s == SEG_VALUES;
        int w = snprintf(buf + len, size - len, "%s%s", len && !seg ? "." : "", s);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

/* The message, prefixed with the reader's path ("field 'a.b': ..."). Returns @p code. */
__attribute__((format(printf, 3, 4))) static int fail(av_res_t *res, int code, const char *fmt, ...)
{
    char path[160], desc[200];
    format_path(res, path, sizeof(path));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    /* Long paths and names are cut: the message is for people. */
    int n = path[0] ? snprintf(res->rs_msg, sizeof(res->rs_msg), "field '%s': %s", path, desc)
                    : snprintf(res->rs_msg, sizeof(res->rs_msg), "%s", desc);
    if (n < 0)
        res->rs_msg[0] = '\0';
    return code;
}

static int give_up(av_res_t *res, const char *why)
{
    if (!res->rs_abort) {
        res->rs_abort = true;
        snprintf(res->rs_msg, sizeof(res->rs_msg), "%s", why);
    }
    return R_FAIL;
}

static int nomem(av_res_t *res)
{
    res->rs_nomem = true;
    return give_up(res, "out of memory");
}

/* "int", "record a.B", "union [null, string]". */
static const char *describe(const av_node_t *n, char *buf, size_t size)
{
    switch (n->an_kind) {
    case AV_RECORD:
        snprintf(buf, size, "record %s", n->an_fullname);
        return buf;
    case AV_ENUM:
        snprintf(buf, size, "enum %s", n->an_fullname);
        return buf;
    case AV_FIXED:
        snprintf(buf, size, "fixed %s", n->an_fullname);
        return buf;
    case AV_UNION: {
        char list[96];
        msm__avro_union_list(n, list, sizeof(list));
        snprintf(buf, size, "union [%s]", list);
        return buf;
    }
    default:
        return n->an_fullname;
    }
}

static int changed(av_res_t *res, int code, const av_node_t *r, const av_node_t *w)
{
    char rb[128], wb[128];
    return fail(res, code, "type changed from %s to %s", describe(w, wb, sizeof(wb)),
                describe(r, rb, sizeof(rb)));
}

/* ---- pairs proven readable ---- */

static size_t pair_hash(const av_node_t *r, const av_node_t *w)
{
    uint64_t h = (uint64_t)(uintptr_t)r * 0x9E3779B97F4A7C15ULL;
    h ^= (uint64_t)(uintptr_t)w + 0x7F4A7C159E3779B9ULL + (h << 6) + (h >> 2);
    return (size_t)(h ^ (h >> 29));
}

static av_ok_slot_t *
slot_of(av_ok_slot_t *slots, size_t cap, const av_node_t *r, const av_node_t *w)
{
    size_t i = pair_hash(r, w) & (cap - 1);
    while (slots[i].os_log && !(slots[i].os_pair.rp_r == r && slots[i].os_pair.rp_w == w))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static bool proven(const av_res_t *res, const av_node_t *r, const av_node_t *w)
{
    if (!res->rs_cap_slots)
        return false;
    const av_ok_slot_t *s = slot_of(res->rs_slots, res->rs_cap_slots, r, w);
    /* A slot left by a rolled-back entry points past the log or at another pair. */
    return s->os_log && s->os_log <= res->rs_n_log && res->rs_log[s->os_log - 1].rp_r == r &&
           res->rs_log[s->os_log - 1].rp_w == w;
}

static int reindex(av_res_t *res, size_t cap)
{
    av_ok_slot_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return nomem(res);
    for (size_t i = 0; i < res->rs_n_log; i++) {
        av_ok_slot_t *s = slot_of(slots, cap, res->rs_log[i].rp_r, res->rs_log[i].rp_w);
        s->os_pair = res->rs_log[i];
        s->os_log = i + 1;
    }
    free(res->rs_slots);
    res->rs_slots = slots;
    res->rs_cap_slots = cap;
    res->rs_used_slots = res->rs_n_log;
    return R_OK;
}

static int prove(av_res_t *res, const av_node_t *r, const av_node_t *w)
{
    if (res->rs_n_log == res->rs_cap_log) {
        size_t cap = res->rs_cap_log ? res->rs_cap_log * 2 : 32;
        av_pair_t *log = realloc(res->rs_log, cap * sizeof(*log));
        if (!log)
            return nomem(res);
        res->rs_log = log;
        res->rs_cap_log = cap;
    }
    /* Slots of rolled-back entries stay until the next reindex, which drops them. */
    if ((res->rs_used_slots + 1) * 2 > res->rs_cap_slots) {
        size_t cap = res->rs_cap_slots ? res->rs_cap_slots : 64; /* a power of two */
        if ((res->rs_n_log + 1) * 4 > cap)
            cap *= 2;
        if (reindex(res, cap) != R_OK)
            return R_FAIL;
    }
    res->rs_log[res->rs_n_log++] = (av_pair_t){r, w};
    av_ok_slot_t *s = slot_of(res->rs_slots, res->rs_cap_slots, r, w);
    if (!s->os_log)
        res->rs_used_slots++;
    s->os_pair = (av_pair_t){r, w};
    s->os_log = res->rs_n_log;
    return R_OK;
}

/* ---- the rules ---- */

static int resolve(av_res_t *res, const av_node_t *r, const av_node_t *w, size_t depth);

static int push(av_res_t *res, const char *seg)
{
    if (res->rs_depth == RES_MAX_DEPTH)
        return give_up(res, "the schemas nest too deeply to compare");
    res->rs_path[res->rs_depth++] = seg;
    return R_OK;
}

static void pop(av_res_t *res)
{
    res->rs_depth--;
}

/* Spec: named types match by unqualified name, or when a reader alias is the writer's name. */
static bool names_match(const av_node_t *r, const av_node_t *w)
{
    if (strcmp(r->an_name, w->an_name) == 0)
        return true;
    for (size_t i = 0; i < r->an_n_aliases; i++) {
        if (strcmp(r->an_aliases[i], w->an_fullname) == 0)
            return true;
    }
    return false;
}

static bool promotable(av_kind_t from, av_kind_t to)
{
    switch (from) {
    case AV_INT:
        return to == AV_LONG || to == AV_FLOAT || to == AV_DOUBLE;
    case AV_LONG:
        return to == AV_FLOAT || to == AV_DOUBLE;
    case AV_FLOAT:
        return to == AV_DOUBLE;
    case AV_STRING:
        return to == AV_BYTES;
    case AV_BYTES:
        return to == AV_STRING;
    default:
        return false;
    }
}

/* The writer's field a reader field reads: same name, else one of the reader's aliases. */
static const av_field_t *writer_field(const av_node_t *w, const av_field_t *rf)
{
    const av_field_t *wf = msm__avro_field_find(w, rf->af_name);
    for (size_t i = 0; !wf && i < rf->af_n_aliases; i++)
        wf = msm__avro_field_find(w, rf->af_aliases[i]);
    return wf;
}

static int resolve_fields(av_res_t *res, const av_node_t *r, const av_node_t *w, size_t depth)
{
    for (size_t i = 0; i < r->an_n_fields; i++) {
        const av_field_t *rf = &r->an_fields[i];
        const av_field_t *wf = writer_field(w, rf);
        if (push(res, rf->af_name) != R_OK)
            return R_FAIL;
        int rc = R_OK;
        if (wf)
            rc = resolve(res, rf->af_type, wf->af_type, depth + 1);
        else if (!rf->af_default)
            rc = fail(res, R_FAIL, "the writer's %s has no such field and it has no default",
                      w->an_fullname);
        pop(res);
        if (rc != R_OK)
            return R_FAIL; /* the records matched: what is inside them failed */
    }
    return R_OK;
}

static int resolve_records(av_res_t *res, const av_node_t *r, const av_node_t *w, size_t depth)
{
    for (size_t i = 0; i < res->rs_n_busy; i++) {
        if (res->rs_busy[i].rp_r == r && res->rs_busy[i].rp_w == w)
            return R_OK; /* recursion: holds if everything else does */
    }
    if (proven(res, r, w))
        return R_OK;
    if (res->rs_n_busy == RES_MAX_DEPTH)
        return give_up(res, "the schemas nest too deeply to compare");
    res->rs_busy[res->rs_n_busy++] = (av_pair_t){r, w};
    size_t mark = res->rs_n_log;
    int rc = resolve_fields(res, r, w, depth);
    res->rs_n_busy--;
    if (rc != R_OK) {
        res->rs_n_log = mark;
        return rc;
    }
    return prove(res, r, w);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every writer symbol must be a reader symbol, unless the reader has a default. */
static int resolve_enums(av_res_t *res, const av_node_t *r, const av_node_t *w)
{
    if (r->an_enum_default >= 0 || proven(res, r, w))
        return R_OK;
    const char **sorted = malloc(r->an_n_symbols * sizeof(*sorted));
    if (!sorted)
        return nomem(res);
    memcpy(sorted, r->an_symbols, r->an_n_symbols * sizeof(*sorted));
    qsort(sorted, r->an_n_symbols, sizeof(*sorted), cmp_str_ptr);
    int rc = R_OK;
    for (size_t i = 0; i < w->an_n_symbols && rc == R_OK; i++) {
        if (!bsearch(&w->an_symbols[i], sorted, r->an_n_symbols, sizeof(*sorted), cmp_str_ptr))
            rc = fail(res, R_FAIL,
                      "enum %s: the writer's symbol '%s' is missing and the reader's enum has "
                      "no default",
                      r->an_fullname, w->an_symbols[i]);
    }
    free(sorted);
    return rc == R_OK ? prove(res, r, w) : rc; /* the same pair again is not sorted again */
}

static int
resolve_inner(av_res_t *res, const av_node_t *r, const av_node_t *w, const char *seg, size_t depth)
{
    if (push(res, seg) != R_OK)
        return R_FAIL;
    int rc = resolve(res, r->an_items, w->an_items, depth + 1);
    pop(res);
    return rc == R_OK ? R_OK : R_FAIL;
}

/* Neither is a union. */
static int resolve_plain(av_res_t *res, const av_node_t *r, const av_node_t *w, size_t depth)
{
    if (r->an_kind != w->an_kind) {
        if (promotable(w->an_kind, r->an_kind))
            return R_OK;
        return changed(res, R_MISMATCH, r, w);
    }
    const char *kind = r->an_kind == AV_RECORD ? "record"
                       : r->an_kind == AV_ENUM ? "enum"
                                               : "fixed";
    switch (r->an_kind) {
    case AV_RECORD:
    case AV_ENUM:
    case AV_FIXED:
        if (!names_match(r, w))
            return fail(res, R_MISMATCH, "%s name changed from %s to %s (without an alias)", kind,
                        w->an_fullname, r->an_fullname);
        if (r->an_kind == AV_FIXED && r->an_size != w->an_size)
            return fail(res, R_MISMATCH, "fixed %s: size changed from %zu to %zu", r->an_fullname,
                        w->an_size, r->an_size);
        if (r->an_kind == AV_ENUM)
            return resolve_enums(res, r, w);
        return r->an_kind == AV_RECORD ? resolve_records(res, r, w, depth) : R_OK;
    case AV_ARRAY:
        return resolve_inner(res, r, w, SEG_ITEMS, depth);
    case AV_MAP:
        return resolve_inner(res, r, w, SEG_VALUES, depth);
    default:
        return R_OK; /* the same primitive */
    }
}

/* Spec: the first reader branch that matches is used. We accept any branch that reads the
 * writer's type completely (as Java's SchemaCompatibility and avro-c's resolver do). */
static int resolve_reader_union(av_res_t *res, const av_node_t *r, const av_node_t *w, size_t depth)
{
    char deep[sizeof(res->rs_msg)] = "";
    for (size_t i = 0; i < r->an_n_branches; i++) {
        int rc = resolve(res, r->an_branches[i], w, depth + 1);
        if (rc == R_OK)
            return R_OK;
        if (res->rs_abort)
            return R_FAIL;
        if (rc == R_FAIL && !deep[0]) /* matched, then failed inside: the useful reason */
            memcpy(deep, res->rs_msg, sizeof(deep));
    }
    if (deep[0]) {
        memcpy(res->rs_msg, deep, sizeof(deep));
        return R_FAIL;
    }
    return changed(res, R_MISMATCH, r, w);
}

/* Every branch the writer may have written must be readable. */
static int resolve_writer_union(av_res_t *res, const av_node_t *r, const av_node_t *w, size_t depth)
{
    for (size_t i = 0; i < w->an_n_branches; i++) {
        const av_node_t *b = w->an_branches[i];
        int rc = resolve(res, r, b, depth + 1);
        if (rc == R_OK)
            continue;
        if (rc == R_MISMATCH && r->an_kind != AV_UNION && !res->rs_abort) {
            char rb[128], wb[128];
            fail(res, R_FAIL, "the writer's union branch %s cannot be read as %s",
                 describe(b, wb, sizeof(wb)), describe(r, rb, sizeof(rb)));
        }
        return R_FAIL;
    }
    return R_OK;
}

static int resolve(av_res_t *res, const av_node_t *r, const av_node_t *w, size_t depth)
{
    if (res->rs_abort)
        return R_FAIL;
    if (++res->rs_steps > RES_MAX_STEPS)
        return give_up(res, "the schemas are too large to compare");
    if (depth >= RES_MAX_DEPTH)
        return give_up(res, "the schemas nest too deeply to compare");
    if (w->an_kind == AV_UNION)
        return resolve_writer_union(res, r, w, depth);
    if (r->an_kind == AV_UNION)
        return resolve_reader_union(res, r, w, depth);
    return resolve_plain(res, r, w, depth);
}

int msm__avro_can_read(const void *reader, const void *writer, char *why, size_t why_size)
{
    av_res_t *res = calloc(1, sizeof(*res)); /* a few kB: not on small thread stacks */
    if (!res) {
        snprintf(why, why_size, "out of memory");
        return MSM_ERR_NOMEM;
    }
    int rc = resolve(res, msm__avro_root(reader), msm__avro_root(writer), 0);
    int status = res->rs_nomem ? MSM_ERR_NOMEM : rc == R_OK ? MSM_OK : MSM_ERR_CONFLICT;
    snprintf(why, why_size, "%s", status == MSM_OK ? "" : res->rs_msg);
    free(res->rs_log);
    free(res->rs_slots);
    free(res);
    return status;
}
