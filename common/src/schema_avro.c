/* SPDX-License-Identifier: MIT */
/* AVRO schemas: the schema JSON compiled into our own tree (named types resolved, field
 * defaults checked and pre-encoded), accepted only when avro-c accepts it too; and
 * msm_schema_avro_ops, which the rest of schema_avro*.c implements. */
#include "schema_avro_int.h"

#include "msm/err.h"

#include <avro.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena: every node, name and default of one schema, freed at once ---- */

#define ARENA_BLOCK 16384

typedef struct av_block_s {
    struct av_block_s *ab_next;
    size_t ab_used;
    size_t ab_cap;
    max_align_t ab_data[]; /* aligned for anything */
} av_block_t;

typedef struct {
    av_block_t *aa_head;
} av_arena_t;

static void *arena_alloc(av_arena_t *a, size_t size)
{
    const size_t align = _Alignof(max_align_t);
    if (size > SIZE_MAX / 2)
        return NULL;
    size = (size + align - 1) & ~(align - 1);
    if (!a->aa_head || a->aa_head->ab_cap - a->aa_head->ab_used < size) {
        size_t cap = size > ARENA_BLOCK ? size : ARENA_BLOCK;
        av_block_t *b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->ab_next = a->aa_head;
        b->ab_used = 0;
        b->ab_cap = cap;
        a->aa_head = b;
    }
    void *p = (unsigned char *)a->aa_head->ab_data + a->aa_head->ab_used;
    a->aa_head->ab_used += size;
    return p;
}

static void *arena_calloc(av_arena_t *a, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / 2 / size)
        return NULL;
    void *p = arena_alloc(a, count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

static char *arena_strndup(av_arena_t *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* "ns.name", or "name" when ns is NULL. */
static char *arena_fullname(av_arena_t *a, const char *ns, const char *name)
{
    if (!ns)
        return arena_strndup(a, name, strlen(name));
    size_t nl = strlen(ns), ml = strlen(name);
    char *p = arena_alloc(a, nl + ml + 2);
    if (p) {
        memcpy(p, ns, nl);
        p[nl] = '.';
        memcpy(p + nl + 1, name, ml + 1);
    }
    return p;
}

static void arena_free(av_arena_t *a)
{
    while (a->aa_head) {
        av_block_t *next = a->aa_head->ab_next;
        free(a->aa_head);
        a->aa_head = next;
    }
}

/* ---- the compiled schema ---- */

typedef struct {
    av_arena_t as_arena;
    const av_node_t *as_root;
} av_schema_t;

const av_node_t *msm__avro_root(const void *impl)
{
    return ((const av_schema_t *)impl)->as_root;
}

#define PRIMITIVE(kind, name, empty)                                                               \
    {                                                                                              \
        .an_kind = (kind), .an_fullname = (name), .an_enum_default = -1,                           \
        .an_may_be_empty = (empty)                                                                 \
    }

static const av_node_t primitives[] = {
    PRIMITIVE(AV_NULL, "null", true),    PRIMITIVE(AV_BOOLEAN, "boolean", false),
    PRIMITIVE(AV_INT, "int", false),     PRIMITIVE(AV_LONG, "long", false),
    PRIMITIVE(AV_FLOAT, "float", false), PRIMITIVE(AV_DOUBLE, "double", false),
    PRIMITIVE(AV_BYTES, "bytes", false), PRIMITIVE(AV_STRING, "string", false),
};

static const av_node_t *primitive_named(const char *name)
{
    for (size_t i = 0; i < sizeof(primitives) / sizeof(primitives[0]); i++) {
        if (strcmp(primitives[i].an_fullname, name) == 0)
            return &primitives[i];
    }
    return NULL;
}

/* ---- named types: a hash of full names, compile time only ---- */

typedef struct {
    const char *ns_key;
    av_node_t *ns_node;
} av_name_slot_t;

typedef struct {
    av_name_slot_t *nt_slots;
    size_t nt_cap; /* a power of two, or 0 */
    size_t nt_count;
} av_names_t;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static av_node_t *names_find(const av_names_t *t, const char *key)
{
    if (!t->nt_cap)
        return NULL;
    for (size_t i = hash_str(key) & (t->nt_cap - 1);; i = (i + 1) & (t->nt_cap - 1)) {
        if (!t->nt_slots[i].ns_key)
            return NULL;
        if (strcmp(t->nt_slots[i].ns_key, key) == 0)
            return t->nt_slots[i].ns_node;
    }
}

static void names_put(av_name_slot_t *slots, size_t cap, const char *key, av_node_t *node)
{
    size_t i = hash_str(key) & (cap - 1);
    while (slots[i].ns_key)
        i = (i + 1) & (cap - 1);
    slots[i].ns_key = key;
    slots[i].ns_node = node;
}

/* Adds a name not yet present (the caller checked). */
static int names_add(av_names_t *t, const char *key, av_node_t *node)
{
    if ((t->nt_count + 1) * 2 > t->nt_cap) {
        size_t cap = t->nt_cap ? t->nt_cap * 2 : 64;
        av_name_slot_t *slots = calloc(cap, sizeof(*slots));
        if (!slots)
            return MSM_ERR_NOMEM;
        for (size_t i = 0; i < t->nt_cap; i++) {
            if (t->nt_slots[i].ns_key)
                names_put(slots, cap, t->nt_slots[i].ns_key, t->nt_slots[i].ns_node);
        }
        free(t->nt_slots);
        t->nt_slots = slots;
        t->nt_cap = cap;
    }
    names_put(t->nt_slots, t->nt_cap, key, node);
    t->nt_count++;
    return MSM_OK;
}

/* ---- the compiler ---- */

enum { DEFAULT_NONE = 0, DEFAULT_PENDING, DEFAULT_BUSY, DEFAULT_DONE };

struct av_compiler_s {
    av_arena_t *cc_arena;
    av_names_t cc_names;
    av_field_t **cc_defaults; /* fields with a default, in document order */
    size_t cc_n_defaults;
    size_t cc_cap_defaults;
    size_t cc_default_bytes;
    int cc_status; /* the first error */
    char *cc_err;
    size_t cc_err_size;
};

/* Records the first error only: later ones are often its consequences. */
__attribute__((format(printf, 3, 4))) static int
fail(av_compiler_t *cc, int status, const char *fmt, ...)
{
    if (cc->cc_status == MSM_OK) {
        cc->cc_status = status;
        if (status == MSM_ERR_NOMEM) {
            snprintf(cc->cc_err, cc->cc_err_size, "out of memory");
        } else {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(cc->cc_err, cc->cc_err_size, fmt, ap);
            va_end(ap);
        }
    }
    return cc->cc_status;
}

static int nomem(av_compiler_t *cc)
{
    return fail(cc, MSM_ERR_NOMEM, "out of memory");
}

/* [A-Za-z_][A-Za-z0-9_]* */
static bool valid_name(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* Names separated by single dots: a full name or a namespace. */
static bool valid_dotted(const char *s)
{
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (!valid_name(s, n))
            return false;
        if (!dot)
            return true;
        s = dot + 1;
    }
}

static int
compile_type(av_compiler_t *cc, const json_t *j, const char *ns, int depth, const av_node_t **out);

/* A type name in a schema: a primitive, or a named type defined earlier (or enclosing). */
static int resolve_name(av_compiler_t *cc, const char *name, const char *ns, const av_node_t **out)
{
    const av_node_t *n = primitive_named(name);
    if (!n && ns && !strchr(name, '.')) {
        size_t len = strlen(ns) + strlen(name) + 2;
        char *full = malloc(len);
        if (!full)
            return nomem(cc);
        snprintf(full, len, "%s.%s", ns, name);
        n = names_find(&cc->cc_names, full);
        free(full);
    }
    if (!n)
        n = names_find(&cc->cc_names, name);
    if (!n)
        return fail(cc, MSM_ERR_INVALID, "unknown type '%s'", name);
    *out = n;
    return MSM_OK;
}

/* "aliases": optional array of names; qualified with @p ns when @p qualify (named types). */
static int compile_aliases(av_compiler_t *cc,
                           const json_t *j,
                           const char *what,
                           bool qualify,
                           const char *ns,
                           const char ***out,
                           size_t *count)
{
    const json_t *aliases = json_object_get(j, "aliases");
    *out = NULL;
    *count = 0;
    if (!aliases)
        return MSM_OK;
    if (!json_is_array(aliases))
        return fail(cc, MSM_ERR_INVALID, "%s: \"aliases\" must be an array of names", what);
    size_t n = json_array_size(aliases);
    const char **list = arena_calloc(cc->cc_arena, n ? n : 1, sizeof(*list));
    if (!list)
        return nomem(cc);
    for (size_t i = 0; i < n; i++) {
        const char *a = json_string_value(json_array_get(aliases, i));
        bool ok = a && (qualify ? valid_dotted(a) : valid_name(a, strlen(a)));
        if (!ok)
            return fail(cc, MSM_ERR_INVALID, "%s: alias %zu is not a valid name", what, i);
        list[i] = qualify && !strchr(a, '.') ? arena_fullname(cc->cc_arena, ns, a)
                                             : arena_strndup(cc->cc_arena, a, strlen(a));
        if (!list[i])
            return nomem(cc);
    }
    *out = list;
    *count = n;
    return MSM_OK;
}

/*
 * The name, namespace and aliases of a record, enum or fixed, registered before its body
 * is compiled so that the body may refer to it. *own_ns = the namespace its body inherits.
 */
static int named_header(av_compiler_t *cc,
                        const json_t *j,
                        const char *what,
                        const char *ns,
                        av_node_t *n,
                        const char **own_ns)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    if (!name)
        return fail(cc, MSM_ERR_INVALID, "%s without a \"name\"", what);
    const char *dot = strrchr(name, '.');
    if (dot) {
        /* A full name: its "namespace" attribute, if any, is ignored (spec, "Names"). */
        if (!valid_dotted(name))
            return fail(cc, MSM_ERR_INVALID, "%s name '%s' is not a valid full name", what, name);
        n->an_fullname = arena_strndup(cc->cc_arena, name, strlen(name));
        *own_ns = arena_strndup(cc->cc_arena, name, (size_t)(dot - name));
        if (!n->an_fullname || !*own_ns)
            return nomem(cc);
        n->an_name = n->an_fullname + (dot - name) + 1;
    } else {
        if (!valid_name(name, strlen(name)))
            return fail(cc, MSM_ERR_INVALID, "%s name '%s' is not a valid name", what, name);
        const json_t *space = json_object_get(j, "namespace");
        if (space) {
            const char *s = json_string_value(space);
            if (!s || (*s && !valid_dotted(s)))
                return fail(cc, MSM_ERR_INVALID, "%s %s: \"namespace\" must be a dotted name", what,
                            name);
            ns = *s ? s : NULL; /* "" is the null namespace */
        }
        *own_ns = ns ? arena_strndup(cc->cc_arena, ns, strlen(ns)) : NULL;
        n->an_fullname = arena_fullname(cc->cc_arena, ns, name);
        if (!n->an_fullname || (ns && !*own_ns))
            return nomem(cc);
        n->an_name = n->an_fullname + (ns ? strlen(ns) + 1 : 0);
    }
    if (primitive_named(n->an_fullname))
        return fail(cc, MSM_ERR_INVALID, "%s cannot be named '%s', a primitive type", what,
                    n->an_fullname);
    if (names_find(&cc->cc_names, n->an_fullname))
        return fail(cc, MSM_ERR_INVALID, "type '%s' is defined twice", n->an_fullname);
    char ctx[320];
    snprintf(ctx, sizeof(ctx), "%s %s", what, n->an_fullname);
    if (compile_aliases(cc, j, ctx, true, *own_ns, &n->an_aliases, &n->an_n_aliases) != MSM_OK)
        return cc->cc_status;
    if (names_add(&cc->cc_names, n->an_fullname, n) != MSM_OK)
        return nomem(cc);
    return MSM_OK;
}

static int cmp_field_ptr(const void *a, const void *b)
{
    const av_field_t *x = *(const av_field_t *const *)a, *y = *(const av_field_t *const *)b;
    return strcmp(x->af_name, y->af_name);
}

const av_field_t *msm__avro_field_find(const av_node_t *record, const char *name)
{
    size_t lo = 0, hi = record->an_n_fields;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(record->an_fields_by_name[mid]->af_name, name);
        if (c == 0)
            return record->an_fields_by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int add_pending_default(av_compiler_t *cc, av_field_t *f)
{
    if (cc->cc_n_defaults == cc->cc_cap_defaults) {
        size_t cap = cc->cc_cap_defaults ? cc->cc_cap_defaults * 2 : 16;
        av_field_t **list = realloc(cc->cc_defaults, cap * sizeof(*list));
        if (!list)
            return nomem(cc);
        cc->cc_defaults = list;
        cc->cc_cap_defaults = cap;
    }
    cc->cc_defaults[cc->cc_n_defaults++] = f;
    f->af_default_state = DEFAULT_PENDING;
    return MSM_OK;
}

static int compile_field(av_compiler_t *cc,
                         av_node_t *rec,
                         const json_t *fj,
                         size_t i,
                         const char *own_ns,
                         int depth,
                         av_field_t *f)
{
    if (!json_is_object(fj))
        return fail(cc, MSM_ERR_INVALID, "record %s: field %zu must be an object", rec->an_fullname,
                    i);
    const char *name = json_string_value(json_object_get(fj, "name"));
    if (!name || !valid_name(name, strlen(name)))
        return fail(cc, MSM_ERR_INVALID, "record %s: field %zu needs a valid \"name\"",
                    rec->an_fullname, i);
    f->af_name = arena_strndup(cc->cc_arena, name, strlen(name));
    if (!f->af_name)
        return nomem(cc);
    f->af_record = rec->an_fullname;
    char ctx[320];
    snprintf(ctx, sizeof(ctx), "record %s, field '%s'", rec->an_fullname, name);
    const json_t *type = json_object_get(fj, "type");
    if (!type)
        return fail(cc, MSM_ERR_INVALID, "%s: no \"type\"", ctx);
    if (compile_type(cc, type, own_ns, depth, &f->af_type) != MSM_OK)
        return cc->cc_status;
    if (compile_aliases(cc, fj, ctx, false, NULL, &f->af_aliases, &f->af_n_aliases) != MSM_OK)
        return cc->cc_status;
    const json_t *order = json_object_get(fj, "order");
    const char *o = json_string_value(order);
    if (order && (!o || (strcmp(o, "ascending") && strcmp(o, "descending") && strcmp(o, "ignore"))))
        return fail(cc, MSM_ERR_INVALID,
                    "%s: \"order\" must be \"ascending\", \"descending\" or \"ignore\"", ctx);
    /* avro-c 1.11 drops defaults: ours come from the JSON, encoded once all types exist. */
    f->af_default_json = json_object_get(fj, "default");
    if (f->af_default_json)
        return add_pending_default(cc, f);
    return MSM_OK;
}

static int
compile_record(av_compiler_t *cc, const json_t *j, const char *ns, int depth, const av_node_t **out)
{
    av_node_t *n = arena_calloc(cc->cc_arena, 1, sizeof(*n));
    if (!n)
        return nomem(cc);
    n->an_kind = AV_RECORD;
    n->an_enum_default = -1;
    const char *own_ns = NULL;
    if (named_header(cc, j, "record", ns, n, &own_ns) != MSM_OK)
        return cc->cc_status;
    const json_t *fields = json_object_get(j, "fields");
    if (!json_is_array(fields))
        return fail(cc, MSM_ERR_INVALID, "record %s: \"fields\" must be an array", n->an_fullname);
    size_t count = json_array_size(fields);
    n->an_fields = arena_calloc(cc->cc_arena, count ? count : 1, sizeof(av_field_t));
    n->an_fields_by_name = arena_calloc(cc->cc_arena, count ? count : 1, sizeof(av_field_t *));
    if (!n->an_fields || !n->an_fields_by_name)
        return nomem(cc);
    *out = n; /* the fields may refer to the record itself */
    for (size_t i = 0; i < count; i++) {
        if (compile_field(cc, n, json_array_get(fields, i), i, own_ns, depth, &n->an_fields[i]) !=
            MSM_OK)
            return cc->cc_status;
        n->an_fields_by_name[i] = &n->an_fields[i];
        n->an_n_fields = i + 1;
    }
    qsort(n->an_fields_by_name, count, sizeof(av_field_t *), cmp_field_ptr);
    for (size_t i = 1; i < count; i++) {
        if (strcmp(n->an_fields_by_name[i - 1]->af_name, n->an_fields_by_name[i]->af_name) == 0)
            return fail(cc, MSM_ERR_INVALID, "record %s: field '%s' appears twice", n->an_fullname,
                        n->an_fields_by_name[i]->af_name);
    }
    /* Records referred to here were compiled before, except enclosing ones (still false):
     * those can only recur through arrays, maps or unions, which take bytes anyway, or
     * directly, and then no finite value exists. So one pass is exact. */
    n->an_may_be_empty = true;
    for (size_t i = 0; i < count; i++)
        n->an_may_be_empty = n->an_may_be_empty && n->an_fields[i].af_type->an_may_be_empty;
    return MSM_OK;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int compile_enum(av_compiler_t *cc, const json_t *j, const char *ns, const av_node_t **out)
{
    av_node_t *n = arena_calloc(cc->cc_arena, 1, sizeof(*n));
    if (!n)
        return nomem(cc);
    n->an_kind = AV_ENUM;
    n->an_enum_default = -1;
    const char *own_ns = NULL;
    if (named_header(cc, j, "enum", ns, n, &own_ns) != MSM_OK)
        return cc->cc_status;
    const json_t *symbols = json_object_get(j, "symbols");
    size_t count = json_array_size(symbols);
    if (!json_is_array(symbols) || count == 0)
        return fail(cc, MSM_ERR_INVALID, "enum %s: \"symbols\" must be a non-empty array",
                    n->an_fullname);
    n->an_symbols = arena_calloc(cc->cc_arena, count, sizeof(char *));
    const char **sorted = malloc(count * sizeof(char *));
    if (!n->an_symbols || !sorted) {
        free(sorted);
        return nomem(cc);
    }
    int rc = MSM_OK;
    for (size_t i = 0; i < count && rc == MSM_OK; i++) {
        const char *s = json_string_value(json_array_get(symbols, i));
        if (!s || !valid_name(s, strlen(s)))
            rc = fail(cc, MSM_ERR_INVALID, "enum %s: symbol %zu is not a valid name",
                      n->an_fullname, i);
        else if (!(n->an_symbols[i] = arena_strndup(cc->cc_arena, s, strlen(s))))
            rc = nomem(cc);
        sorted[i] = n->an_symbols[i];
    }
    if (rc == MSM_OK) {
        qsort(sorted, count, sizeof(char *), cmp_str_ptr);
        for (size_t i = 1; i < count && rc == MSM_OK; i++) {
            if (strcmp(sorted[i - 1], sorted[i]) == 0)
                rc = fail(cc, MSM_ERR_INVALID, "enum %s: symbol '%s' appears twice", n->an_fullname,
                          sorted[i]);
        }
    }
    free(sorted);
    if (rc != MSM_OK)
        return rc;
    n->an_n_symbols = count;
    const json_t *def = json_object_get(j, "default");
    if (def) {
        const char *d = json_string_value(def);
        for (size_t i = 0; d && i < count; i++) {
            if (strcmp(n->an_symbols[i], d) == 0)
                n->an_enum_default = (long)i;
        }
        if (n->an_enum_default < 0)
            return fail(cc, MSM_ERR_INVALID, "enum %s: \"default\" must be one of its symbols",
                        n->an_fullname);
    }
    *out = n;
    return MSM_OK;
}

static int compile_fixed(av_compiler_t *cc, const json_t *j, const char *ns, const av_node_t **out)
{
    av_node_t *n = arena_calloc(cc->cc_arena, 1, sizeof(*n));
    if (!n)
        return nomem(cc);
    n->an_kind = AV_FIXED;
    n->an_enum_default = -1;
    const char *own_ns = NULL;
    if (named_header(cc, j, "fixed", ns, n, &own_ns) != MSM_OK)
        return cc->cc_status;
    const json_t *size = json_object_get(j, "size");
    if (!json_is_integer(size) || json_integer_value(size) < 0 ||
        json_integer_value(size) > INT32_MAX)
        return fail(cc, MSM_ERR_INVALID, "fixed %s: \"size\" must be an integer from 0 to %d",
                    n->an_fullname, INT32_MAX);
    n->an_size = (size_t)json_integer_value(size);
    n->an_may_be_empty = n->an_size == 0;
    *out = n;
    return MSM_OK;
}

/* An array's items or a map's values. */
static int compile_container(av_compiler_t *cc,
                             const json_t *j,
                             av_kind_t kind,
                             const char *ns,
                             int depth,
                             const av_node_t **out)
{
    const char *member = kind == AV_ARRAY ? "items" : "values";
    const char *what = kind == AV_ARRAY ? "array" : "map";
    const json_t *inner = json_object_get(j, member);
    if (!inner)
        return fail(cc, MSM_ERR_INVALID, "%s without \"%s\"", what, member);
    av_node_t *n = arena_calloc(cc->cc_arena, 1, sizeof(*n));
    if (!n)
        return nomem(cc);
    n->an_kind = kind;
    n->an_fullname = what;
    n->an_enum_default = -1;
    if (compile_type(cc, inner, ns, depth, &n->an_items) != MSM_OK)
        return cc->cc_status;
    *out = n;
    return MSM_OK;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const void *const *)a, y = (uintptr_t) * (const void *const *)b;
    return x < y ? -1 : x > y;
}

static bool is_named(const av_node_t *n)
{
    return n->an_kind == AV_RECORD || n->an_kind == AV_ENUM || n->an_kind == AV_FIXED;
}

/* Spec: at most one branch per unnamed type, named types once each, no union in a union. */
static int check_union_branches(av_compiler_t *cc, av_node_t *n)
{
    unsigned kinds = 0;
    for (size_t i = 0; i < n->an_n_branches; i++) {
        const av_node_t *b = n->an_branches[i];
        if (is_named(b))
            continue;
        if (kinds & (1u << b->an_kind))
            return fail(cc, MSM_ERR_INVALID, "a union contains %s twice", b->an_fullname);
        kinds |= 1u << b->an_kind;
    }
    /* Named types are one node per full name: equal names are equal pointers. */
    const av_node_t **sorted = malloc(n->an_n_branches * sizeof(*sorted));
    if (!sorted)
        return nomem(cc);
    memcpy(sorted, n->an_branches, n->an_n_branches * sizeof(*sorted));
    qsort(sorted, n->an_n_branches, sizeof(*sorted), cmp_ptr);
    int rc = MSM_OK;
    for (size_t i = 1; i < n->an_n_branches && rc == MSM_OK; i++) {
        if (sorted[i] == sorted[i - 1] && is_named(sorted[i]))
            rc = fail(cc, MSM_ERR_INVALID, "a union contains %s twice", sorted[i]->an_fullname);
    }
    free(sorted);
    return rc;
}

static int
compile_union(av_compiler_t *cc, const json_t *j, const char *ns, int depth, const av_node_t **out)
{
    size_t count = json_array_size(j);
    if (count == 0)
        return fail(cc, MSM_ERR_INVALID, "a union needs at least one type");
    av_node_t *n = arena_calloc(cc->cc_arena, 1, sizeof(*n));
    const av_node_t **branches = arena_calloc(cc->cc_arena, count, sizeof(*branches));
    if (!n || !branches)
        return nomem(cc);
    n->an_kind = AV_UNION;
    n->an_fullname = "union";
    n->an_enum_default = -1;
    n->an_branches = branches;
    for (size_t i = 0; i < count; i++) {
        const json_t *b = json_array_get(j, i);
        /* Checked before descending, so nested arrays cannot recurse unbounded. */
        if (json_is_array(b))
            return fail(cc, MSM_ERR_INVALID, "a union cannot contain a union directly");
        if (compile_type(cc, b, ns, depth, &branches[i]) != MSM_OK)
            return cc->cc_status;
        if (branches[i]->an_kind == AV_UNION)
            return fail(cc, MSM_ERR_INVALID, "a union cannot contain a union directly");
        n->an_n_branches = i + 1;
    }
    if (check_union_branches(cc, n) != MSM_OK)
        return cc->cc_status;
    *out = n;
    return MSM_OK;
}

static int
compile_type(av_compiler_t *cc, const json_t *j, const char *ns, int depth, const av_node_t **out)
{
    if (json_is_string(j))
        return resolve_name(cc, json_string_value(j), ns, out);
    if (json_is_array(j))
        return compile_union(cc, j, ns, depth, out);
    if (!json_is_object(j))
        return fail(cc, MSM_ERR_INVALID,
                    "a schema must be a type name, an object with \"type\", or an array");
    const char *type = json_string_value(json_object_get(j, "type"));
    if (!type)
        return fail(cc, MSM_ERR_INVALID, "\"type\" must be a string");
    bool nests = !strcmp(type, "record") || !strcmp(type, "array") || !strcmp(type, "map");
    if (nests && depth >= MSM_AVRO_MAX_DEPTH)
        return fail(cc, MSM_ERR_INVALID, "records, arrays and maps nested deeper than %d",
                    MSM_AVRO_MAX_DEPTH);
    if (!strcmp(type, "record"))
        return compile_record(cc, j, ns, depth + 1, out);
    if (!strcmp(type, "array"))
        return compile_container(cc, j, AV_ARRAY, ns, depth + 1, out);
    if (!strcmp(type, "map"))
        return compile_container(cc, j, AV_MAP, ns, depth + 1, out);
    if (!strcmp(type, "enum"))
        return compile_enum(cc, j, ns, out);
    if (!strcmp(type, "fixed"))
        return compile_fixed(cc, j, ns, out);
    /* {"type": "int", "logicalType": ...}: logical types read as their base type. */
    return resolve_name(cc, type, ns, out);
}

/* ---- field defaults ---- */

/* "$: must be an int" reads better as "must be an int". */
static const char *without_root(const char *msg)
{
    return strncmp(msg, "$: ", 3) == 0 ? msg + 3 : msg;
}

int msm__avro_field_default(av_compiler_t *cc, av_field_t *f, int depth)
{
    if (f->af_default_state == DEFAULT_NONE || f->af_default_state == DEFAULT_DONE)
        return MSM_OK;
    if (f->af_default_state == DEFAULT_BUSY)
        return fail(cc, MSM_ERR_INVALID, "record %s, field '%s': the default refers to itself",
                    f->af_record, f->af_name);
    f->af_default_state = DEFAULT_BUSY;
    msm_json_err_t e;
    msm_json_err_init(&e);
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = msm__avro_encode(f->af_type, f->af_default_json, true, cc, depth,
                              MSM_AVRO_MAX_DEFAULTS - cc->cc_default_bytes, &e, &bytes, &len);
    if (rc == MSM_ERR_NOMEM) {
        rc = nomem(cc);
    } else if (rc != MSM_OK) {
        rc = fail(cc, MSM_ERR_INVALID, "record %s, field '%s': invalid default: %s", f->af_record,
                  f->af_name, without_root(msm_json_err_message(&e)));
    } else {
        static const uint8_t empty[1];
        uint8_t *copy = len ? arena_alloc(cc->cc_arena, len) : (uint8_t *)empty;
        if (!copy) {
            rc = nomem(cc);
        } else {
            memcpy(copy, bytes, len);
            f->af_default = copy;
            f->af_default_len = len;
            cc->cc_default_bytes += len;
            f->af_default_state = DEFAULT_DONE;
        }
    }
    free(bytes);
    msm_json_err_deinit(&e);
    return rc;
}

/* ---- avro-c's opinion ---- */

/* avro-c keeps its last error in one static buffer (it is built without THREADSAFE). */
static pthread_mutex_t avro_c_lock = PTHREAD_MUTEX_INITIALIZER;

static int avro_c_accepts(const char *text, size_t len, char *err, size_t err_size)
{
    avro_schema_t schema = NULL;
    pthread_mutex_lock(&avro_c_lock);
    int rc = avro_schema_from_json_length(text, len, &schema);
    if (rc != 0)
        snprintf(err, err_size, "invalid Avro schema: %s", avro_strerror());
    pthread_mutex_unlock(&avro_c_lock);
    if (rc == ENOMEM) {
        snprintf(err, err_size, "out of memory");
        return MSM_ERR_NOMEM;
    }
    if (rc != 0)
        return MSM_ERR_INVALID; /* schema may point at freed memory then: not touched */
    avro_schema_decref(schema);
    return MSM_OK;
}

/* ---- ops ---- */

static void av_free(void *impl)
{
    av_schema_t *s = impl;
    if (!s)
        return;
    arena_free(&s->as_arena);
    free(s);
}

static int compile_document(av_compiler_t *cc, const json_t *doc, const av_node_t **root)
{
    if (compile_type(cc, doc, NULL, 0, root) != MSM_OK)
        return cc->cc_status;
    for (size_t i = 0; i < cc->cc_n_defaults; i++) {
        if (msm__avro_field_default(cc, cc->cc_defaults[i], 0) != MSM_OK)
            return cc->cc_status;
    }
    for (size_t i = 0; i < cc->cc_n_defaults; i++)
        cc->cc_defaults[i]->af_default_json = NULL; /* the document goes away */
    return MSM_OK;
}

static int av_compile(const char *text,
                      size_t len,
                      const char *message_name,
                      void **impl,
                      char **canonical,
                      char **resolved_name,
                      char *err,
                      size_t err_size)
{
    (void)message_name;
    (void)resolved_name;
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!doc) {
        snprintf(err, err_size, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return MSM_ERR_INVALID;
    }
    av_schema_t *s = calloc(1, sizeof(*s));
    if (!s) {
        json_decref(doc);
        snprintf(err, err_size, "out of memory");
        return MSM_ERR_NOMEM;
    }
    av_compiler_t cc = {.cc_arena = &s->as_arena, .cc_err = err, .cc_err_size = err_size};
    /* Ours first: avro-c 1.11 leaks on some invalid schemas (a name defined twice). */
    int rc = compile_document(&cc, doc, &s->as_root);
    free(cc.cc_names.nt_slots);
    free(cc.cc_defaults);
    if (rc == MSM_OK)
        rc = avro_c_accepts(text, len, err, err_size);
    if (rc == MSM_OK) {
        *canonical = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        if (!*canonical) {
            snprintf(err, err_size, "out of memory");
            rc = MSM_ERR_NOMEM;
        }
    }
    json_decref(doc);
    if (rc != MSM_OK) {
        av_free(s);
        return rc;
    }
    *impl = s;
    return MSM_OK;
}

static int av_encode_json(
    const void *impl, const json_t *value, msm_json_err_t *e, uint8_t **out, size_t *out_len)
{
    return msm__avro_encode(msm__avro_root(impl), value, false, NULL, 0, MSM_AVRO_MAX_ENCODED, e,
                            out, out_len);
}

static int av_check(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    return msm__avro_decode(msm__avro_root(impl), data, len, NULL, NULL, why, why_size);
}

static json_t *
av_decode_json(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    json_t *out = NULL;
    if (msm__avro_decode(msm__avro_root(impl), data, len, &out, NULL, why, why_size) != MSM_OK)
        return NULL;
    return out;
}

const msm_schema_ops_t msm_schema_avro_ops = {
    .compile = av_compile,
    .free = av_free,
    .can_read = msm__avro_can_read,
    .encode_json = av_encode_json,
    .check = av_check,
    .decode_json = av_decode_json,
};
