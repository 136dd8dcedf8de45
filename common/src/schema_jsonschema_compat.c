/* SPDX-License-Identifier: MIT */
/* The JSON type: is every document valid under the writer valid under the reader? */
#include "schema_jsonschema_int.h"

#include "msm/err.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const js_schema_t *r, *w;
    js_path_t path;
    char *why;
    size_t why_size;
    size_t budget; /* work left, JS_COMPAT_BUDGET at the start */
} js_compat_t;

__attribute__((format(printf, 2, 3))) static int incompatible(js_compat_t *c, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->why, c->why_size, "%s: %s", c->path.buf, msg);
    return MSM_ERR_CONFLICT;
}

static int compat(js_compat_t *c, uint32_t ri, uint32_t wi, int depth);

/* One value the writer may write: fine when the writer rejects it or the reader accepts it. */
static int compat_value(js_compat_t *c, uint32_t ri, uint32_t wi, const json_t *v)
{
    int rc = MSM_OK;
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm__js_validate(c->w, wi, v, &e);
    if (msm_json_err_count(&e) == 0) {
        msm__js_validate(c->r, ri, v, &e);
        if (msm_json_err_count(&e) > 0) {
            char *t = msm__js_value_text(v);
            rc = incompatible(c, "the writer allows %s, the reader rejects it (%s)",
                              t ? t : "a value", msm_json_err_message(&e));
            free(t);
        }
    }
    msm_json_err_deinit(&e);
    return rc;
}

/* A writer with const, enum, or only null/boolean types has few values: try each. */
static int writer_enumerable(const js_node_t *w)
{
    return w->const_value || (w->flags & JS_HAS_ENUM) || !(w->types & ~(JS_NULL | JS_BOOLEAN));
}

static int compat_values(js_compat_t *c, uint32_t ri, uint32_t wi)
{
    const js_node_t *w = &c->w->nodes[wi];
    if (w->const_value)
        return compat_value(c, ri, wi, w->const_value);
    if (w->flags & JS_HAS_ENUM) {
        for (uint32_t i = 0; i < w->enum_count; i++) {
            int rc = compat_value(c, ri, wi, c->w->enums[w->enum_start + i]);
            if (rc != MSM_OK)
                return rc;
        }
        return MSM_OK;
    }
    json_t *literals[] = {json_null(), json_true(), json_false()};
    for (size_t i = 0; i < 3; i++) {
        int rc = compat_value(c, ri, wi, literals[i]);
        if (rc != MSM_OK)
            return rc;
    }
    return MSM_OK;
}

static void types_list(unsigned types, char *buf, size_t size)
{
    size_t len = 0;
    if ((types & JS_ANY) == JS_ANY) {
        snprintf(buf, size, "any type");
        return;
    }
    buf[0] = '\0';
    for (size_t k = 0; k < JS_NTYPES && len < size; k++) {
        if (!(types & msm__js_types[k].bit))
            continue;
        int n = snprintf(buf + len, size - len, "%s%s", len ? ", " : "", msm__js_types[k].name);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

static int compat_types(js_compat_t *c, const js_node_t *r, const js_node_t *w)
{
    unsigned wt = w->types, rt = r->types;
    if (wt & JS_NUMBER)
        wt &= ~JS_INTEGER;
    if (rt & JS_NUMBER)
        rt |= JS_INTEGER; /* integers are numbers */
    if (!(wt & ~rt))
        return MSM_OK;
    char wl[96], rl[96];
    types_list(w->types, wl, sizeof(wl));
    types_list(r->types, rl, sizeof(rl));
    return incompatible(c, "type narrowed: the writer allows %s, the reader only %s", wl, rl);
}

/* The writer's tightest bound on one side. */
typedef struct {
    int has;
    int exclusive;
    js_num_t v;
} js_bound_t;

static js_bound_t writer_bound(const js_node_t *w, int lower, int integers_only)
{
    js_bound_t b = {0, 0, {0, 0, 0.0}};
    unsigned inc = lower ? JS_HAS_MINIMUM : JS_HAS_MAXIMUM;
    unsigned exc = lower ? JS_HAS_XMINIMUM : JS_HAS_XMAXIMUM;
    js_num_t iv = lower ? w->minimum : w->maximum, xv = lower ? w->xminimum : w->xmaximum;
    int sign = lower ? 1 : -1; /* > 0 when the first is tighter */
    if (w->flags & inc)
        b = (js_bound_t){1, 0, iv};
    if ((w->flags & exc) && (!b.has || sign * msm__js_num_cmp(xv, b.v) >= 0))
        b = (js_bound_t){1, 1, xv};
    if (!b.has || !integers_only)
        return b;
    /* An integer-only writer's values start at the first integer inside the bound. */
    if (b.v.is_int) {
        if (b.exclusive && (lower ? b.v.i < INT64_MAX : b.v.i > INT64_MIN)) {
            b.v.i += sign;
            b.v.d = (double)b.v.i;
            b.exclusive = 0;
        }
        return b;
    }
    double d = b.exclusive ? (lower ? floor(b.v.d) + 1 : ceil(b.v.d) - 1)
                           : (lower ? ceil(b.v.d) : floor(b.v.d));
    if (fabs(d) < 9007199254740992.0) {
        b.v = (js_num_t){1, (json_int_t)d, d};
        b.exclusive = 0;
    }
    return b;
}

/* Does the reader's bound (kw, value, exclusive) hold every value inside the writer's? */
static int
compat_bound(js_compat_t *c, const char *kw, js_num_t rv, int r_exclusive, int lower, js_bound_t wb)
{
    char rs[40], ws[40];
    msm__js_num_format(rv, rs, sizeof(rs));
    if (!wb.has)
        return incompatible(c, "%s %s added (the writer has no %s bound)", kw, rs,
                            lower ? "lower" : "upper");
    int cmp = msm__js_num_cmp(rv, wb.v) * (lower ? 1 : -1); /* > 0: the reader is tighter */
    if (cmp > 0 || (cmp == 0 && r_exclusive && !wb.exclusive)) {
        msm__js_num_format(wb.v, ws, sizeof(ws));
        return incompatible(c, "%s %s is narrower than the writer's bound %s %s", kw, rs,
                            lower ? (wb.exclusive ? ">" : ">=") : (wb.exclusive ? "<" : "<="), ws);
    }
    return MSM_OK;
}

static int compat_numbers(js_compat_t *c, const js_node_t *r, const js_node_t *w)
{
    int integers_only = !(w->types & JS_NUMBER);
    js_bound_t lo = writer_bound(w, 1, integers_only);
    js_bound_t hi = writer_bound(w, 0, integers_only);
    int rc = MSM_OK;
    if (rc == MSM_OK && (r->flags & JS_HAS_MINIMUM))
        rc = compat_bound(c, "minimum", r->minimum, 0, 1, lo);
    if (rc == MSM_OK && (r->flags & JS_HAS_XMINIMUM))
        rc = compat_bound(c, "exclusiveMinimum", r->xminimum, 1, 1, lo);
    if (rc == MSM_OK && (r->flags & JS_HAS_MAXIMUM))
        rc = compat_bound(c, "maximum", r->maximum, 0, 0, hi);
    if (rc == MSM_OK && (r->flags & JS_HAS_XMAXIMUM))
        rc = compat_bound(c, "exclusiveMaximum", r->xmaximum, 1, 0, hi);
    return rc;
}

/* A count range (lengths or items): the reader's must contain the writer's. */
typedef struct {
    const char *min_kw, *max_kw;
    unsigned min_flag, max_flag;
} js_range_kind_t;

static int compat_range(js_compat_t *c,
                        const js_range_kind_t *k,
                        const js_node_t *r,
                        uint64_t r_min,
                        uint64_t r_max,
                        const js_node_t *w,
                        uint64_t w_min,
                        uint64_t w_max)
{
    if (!(w->flags & k->min_flag))
        w_min = 0;
    if ((r->flags & k->min_flag) && r_min > w_min) {
        if (!(w->flags & k->min_flag))
            return incompatible(c, "%s %" PRIu64 " added", k->min_kw, r_min);
        return incompatible(c, "%s raised from %" PRIu64 " to %" PRIu64, k->min_kw, w_min, r_min);
    }
    if (!(r->flags & k->max_flag))
        return MSM_OK;
    if (!(w->flags & k->max_flag))
        return incompatible(c, "%s %" PRIu64 " added", k->max_kw, r_max);
    if (r_max < w_max)
        return incompatible(c, "%s lowered from %" PRIu64 " to %" PRIu64, k->max_kw, w_max, r_max);
    return MSM_OK;
}

static int compat_arrays(js_compat_t *c, const js_node_t *r, const js_node_t *w, int depth)
{
    static const js_range_kind_t items = {"minItems", "maxItems", JS_HAS_MIN_ITEMS,
                                          JS_HAS_MAX_ITEMS};
    int rc = compat_range(c, &items, r, r->min_items, r->max_items, w, w->min_items, w->max_items);
    if (rc != MSM_OK || r->items == JS_TRUE_NODE)
        return rc;
    if ((w->flags & JS_HAS_MAX_ITEMS) && w->max_items == 0)
        return MSM_OK; /* the writer's arrays are empty */
    size_t mark = msm__js_path_push(&c->path, "[*]");
    rc = compat(c, r->items, w->items, depth + 1);
    msm__js_path_pop(&c->path, mark);
    return rc;
}

/* A property the reader declares and the writer does not. */
static int compat_added_prop(js_compat_t *c, const js_prop_t *rp, const js_node_t *w, int depth)
{
    int rc = compat(c, rp->node, w->additional, depth + 1);
    if (rc == MSM_ERR_CONFLICT && w->additional == JS_TRUE_NODE)
        return incompatible(c, "property added to an open content model (the writer does not "
                               "declare it and allows additional properties, so its documents "
                               "may hold any value there)");
    return rc;
}

/* A property the writer declares and the reader does not. */
static int compat_removed_prop(js_compat_t *c, const js_node_t *r, const js_prop_t *wp, int depth)
{
    if (r->additional == JS_FALSE_NODE && wp->node != JS_FALSE_NODE)
        return incompatible(c, "property removed from a closed content model (the reader's "
                               "additionalProperties is false, the writer allows it)");
    return compat(c, r->additional, wp->node, depth + 1);
}

static int compat_objects(js_compat_t *c, const js_node_t *r, const js_node_t *w, int depth)
{
    int rc = MSM_OK;
    for (uint32_t i = 0; rc == MSM_OK && i < r->required_count; i++) {
        const char *name = c->r->required[r->required_start + i];
        if (msm__js_is_required(c->w, w, name))
            continue;
        size_t mark = msm__js_path_push_name(&c->path, name);
        rc = incompatible(c, "required by the reader but not by the writer");
        msm__js_path_pop(&c->path, mark);
    }
    for (uint32_t i = 0; rc == MSM_OK && i < r->props_count; i++) {
        const js_prop_t *rp = &c->r->props[r->props_start + i];
        const js_prop_t *wp = msm__js_find_prop(c->w, w, rp->name);
        size_t mark = msm__js_path_push_name(&c->path, rp->name);
        rc = wp ? compat(c, rp->node, wp->node, depth + 1) : compat_added_prop(c, rp, w, depth);
        msm__js_path_pop(&c->path, mark);
    }
    for (uint32_t i = 0; rc == MSM_OK && i < w->props_count; i++) {
        const js_prop_t *wp = &c->w->props[w->props_start + i];
        if (msm__js_find_prop(c->r, r, wp->name))
            continue;
        size_t mark = msm__js_path_push_name(&c->path, wp->name);
        rc = compat_removed_prop(c, r, wp, depth);
        msm__js_path_pop(&c->path, mark);
    }
    if (rc != MSM_OK)
        return rc;
    /* Members neither declares. */
    if (r->additional == JS_FALSE_NODE && w->additional != JS_FALSE_NODE)
        return incompatible(c, "the reader rejects undeclared properties "
                               "(additionalProperties false), the writer allows them");
    size_t mark = msm__js_path_push(&c->path, ".*");
    rc = compat(c, r->additional, w->additional, depth + 1);
    msm__js_path_pop(&c->path, mark);
    return rc;
}

static int compat(js_compat_t *c, uint32_t ri, uint32_t wi, int depth)
{
    static const js_range_kind_t lengths = {"minLength", "maxLength", JS_HAS_MIN_LENGTH,
                                            JS_HAS_MAX_LENGTH};
    const js_node_t *r = &c->r->nodes[ri], *w = &c->w->nodes[wi];
    if ((w->flags & JS_IS_FALSE) || ri == JS_TRUE_NODE)
        return MSM_OK;
    if (r->flags & JS_IS_FALSE)
        return incompatible(c, "the reader accepts no value here (false), the writer does");
    if (depth > JS_DEPTH_MAX + 1)
        return incompatible(c, "schemas nest too deeply to compare");
    size_t cost = 1u + r->props_count + r->required_count + w->props_count + w->enum_count;
    if (cost > c->budget)
        return incompatible(c, "the schemas are too large to compare");
    c->budget -= cost;
    if (writer_enumerable(w))
        return compat_values(c, ri, wi);
    if (r->const_value || (r->flags & JS_HAS_ENUM))
        return incompatible(c, "the reader allows only listed values (enum or const), "
                               "the writer does not list its values");
    int rc = compat_types(c, r, w);
    if (rc == MSM_OK && (w->types & (JS_NUMBER | JS_INTEGER)))
        rc = compat_numbers(c, r, w);
    if (rc == MSM_OK && (w->types & JS_STRING))
        rc = compat_range(c, &lengths, r, r->min_length, r->max_length, w, w->min_length,
                          w->max_length);
    if (rc == MSM_OK && (w->types & JS_ARRAY))
        rc = compat_arrays(c, r, w, depth);
    if (rc == MSM_OK && (w->types & JS_OBJECT))
        rc = compat_objects(c, r, w, depth);
    return rc;
}

int msm__js_can_read(const void *reader, const void *writer, char *why, size_t why_size)
{
    js_compat_t c = {
        .r = reader, .w = writer, .why = why, .why_size = why_size, .budget = JS_COMPAT_BUDGET};
    if (why && why_size)
        why[0] = '\0';
    msm__js_path_init(&c.path);
    return compat(&c, c.r->root, c.w->root, 0);
}
