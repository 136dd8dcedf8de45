/* SPDX-License-Identifier: MIT */
/* The JSON type of msm/schema.h: a JSON Schema keyword subset (docs/schema-json.md)
 * compiled into a flat validator tree, validation that reports every error at its path
 * inside the value, and a conservative "every document the writer accepts, the reader
 * accepts" check for the registry's compatibility rules. */
#include "schema_int.h"

#include "msm/err.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest schema nesting accepted; each properties/items/additionalProperties level is one.
 * Validation and compatibility recurse along the schema only, so this bounds them too. */
#define JS_DEPTH_MAX 64
/* Longest schema path kept in messages; longer ones end in "...". */
#define JS_PATH_MAX 256
/* Objects and arrays an enum may list: they are compared one by one (strings, numbers and
 * literals are looked up in a sorted index), so their number bounds the work per value. */
#define JS_ENUM_CONTAINERS_MAX 256
/* Longest value text quoted in an error ("must be one of [...]"). */
#define JS_VALUE_TEXT_MAX 120
/* Deepest nesting compared by enum/const equality; jansson parses at most 2048 levels. */
#define JS_EQUAL_DEPTH_MAX 4096
/* Work one compatibility check may do (node pairs, properties, enum values): a reader's
 * property may be compared with the writer's additionalProperties once per name, so crafted
 * schemas could otherwise cost their sizes multiplied. */
#define JS_COMPAT_BUDGET 2000000u

/* ---- the compiled form ---- */

enum {
    JS_NULL = 1u << 0,
    JS_BOOLEAN = 1u << 1,
    JS_OBJECT = 1u << 2,
    JS_ARRAY = 1u << 3,
    JS_NUMBER = 1u << 4,
    JS_INTEGER = 1u << 5,
    JS_STRING = 1u << 6,
    JS_ANY = (1u << 7) - 1,
};

static const struct {
    const char *name;
    const char *phrase; /* as in "must be a string" */
    unsigned bit;
} js_types[] = {
    {"string", "a string", JS_STRING},  {"integer", "an integer", JS_INTEGER},
    {"number", "a number", JS_NUMBER},  {"boolean", "a boolean", JS_BOOLEAN},
    {"object", "an object", JS_OBJECT}, {"array", "an array", JS_ARRAY},
    {"null", "null", JS_NULL},
};

#define JS_NTYPES (sizeof(js_types) / sizeof(js_types[0]))

enum {
    JS_HAS_MINIMUM = 1u << 0,
    JS_HAS_XMINIMUM = 1u << 1,
    JS_HAS_MAXIMUM = 1u << 2,
    JS_HAS_XMAXIMUM = 1u << 3,
    JS_HAS_MIN_LENGTH = 1u << 4,
    JS_HAS_MAX_LENGTH = 1u << 5,
    JS_HAS_MIN_ITEMS = 1u << 6,
    JS_HAS_MAX_ITEMS = 1u << 7,
    JS_HAS_ENUM = 1u << 8,
    JS_IS_FALSE = 1u << 9,
};

/* A JSON number kept exactly: jansson integers stay 64-bit integers. */
typedef struct {
    int is_int;
    json_int_t i;
    double d;
} js_num_t;

#define JS_NO_TEXT UINT32_MAX

/* Node 0 is the schema `true`, node 1 `false`. Children are indices: the arrays grow while
 * compiling. Names and values are borrowed from the document the schema keeps. */
#define JS_TRUE_NODE  0u
#define JS_FALSE_NODE 1u

typedef struct {
    unsigned types;
    unsigned flags;
    js_num_t minimum, xminimum, maximum, xmaximum;
    uint64_t min_length, max_length, min_items, max_items;
    const json_t *const_value;       /* NULL when absent */
    uint32_t enum_start, enum_count; /* sorted (values_order), objects and arrays last */
    uint32_t enum_containers;
    uint32_t enum_text, const_text; /* offsets into js_schema_t.text */
    uint32_t items, additional;
    uint32_t props_start, props_count;       /* sorted by name */
    uint32_t required_start, required_count; /* sorted */
} js_node_t;

typedef struct {
    const char *name;
    uint32_t node;
} js_prop_t;

typedef struct {
    json_t *doc;
    uint32_t root;
    js_node_t *nodes;
    size_t n_nodes, cap_nodes;
    js_prop_t *props;
    size_t n_props, cap_props;
    const char **required;
    size_t n_required, cap_required;
    const json_t **enums;
    size_t n_enums, cap_enums;
    char *text; /* NUL-separated descriptions of enum and const values */
    size_t n_text, cap_text;
} js_schema_t;

/* Makes room for @p need elements of @p size bytes; indices are 32-bit. *out receives the
 * array (moved or not); on failure it is @p old, still valid. */
static int grow(void *old, size_t *cap, size_t need, size_t size, void **out)
{
    *out = old;
    if (need <= *cap)
        return MSM_OK;
    if (need >= UINT32_MAX)
        return MSM_ERR_TOOLARGE;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *q = realloc(old, n * size);
    if (!q)
        return MSM_ERR_NOMEM;
    *out = q;
    *cap = n;
    return MSM_OK;
}

/* rc = room for @p need elements in the array @p arr with capacity @p cap. */
#define JS_GROW(rc, arr, cap, need)                                                                \
    do {                                                                                           \
        void *grown_;                                                                              \
        (rc) = grow((arr), &(cap), (need), sizeof(*(arr)), &grown_);                               \
        (arr) = grown_;                                                                            \
    } while (0)

static void schema_free(js_schema_t *s)
{
    if (!s)
        return;
    json_decref(s->doc);
    free(s->nodes);
    free(s->props);
    free(s->required);
    free(s->enums);
    free(s->text);
    free(s);
}

/* ---- numbers, strings, values ---- */

static js_num_t num_of(const json_t *v)
{
    js_num_t n = {0, 0, 0.0};
    if (json_is_integer(v)) {
        n.is_int = 1;
        n.i = json_integer_value(v);
        n.d = (double)n.i;
    } else {
        n.d = json_number_value(v);
    }
    return n;
}

static int num_cmp(js_num_t a, js_num_t b)
{
    if (a.is_int && b.is_int)
        return (a.i > b.i) - (a.i < b.i);
    /* long double holds every int64 exactly where it is wider than double (x86-64). */
    long double x = a.is_int ? (long double)a.i : (long double)a.d;
    long double y = b.is_int ? (long double)b.i : (long double)b.d;
    return (x > y) - (x < y);
}

/* The shortest text that reads back as the same number. */
static void num_format(js_num_t n, char *buf, size_t size)
{
    if (n.is_int) {
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, n.i);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, n.d);
        if (strtod(buf, NULL) == n.d)
            return;
    }
}

/* Unicode code points of valid UTF-8 (jansson validates strings): non-continuation bytes. */
static uint64_t utf8_length(const char *s, size_t len)
{
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* The types a value has; a number with no fractional part is also an integer. */
static unsigned value_types(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return JS_NULL;
    case JSON_TRUE:
    case JSON_FALSE:
        return JS_BOOLEAN;
    case JSON_OBJECT:
        return JS_OBJECT;
    case JSON_ARRAY:
        return JS_ARRAY;
    case JSON_STRING:
        return JS_STRING;
    case JSON_INTEGER:
        return JS_NUMBER | JS_INTEGER;
    case JSON_REAL: {
        double d = json_real_value(v);
        return JS_NUMBER | (isfinite(d) && floor(d) == d ? JS_INTEGER : 0);
    }
    }
    return 0;
}

/* Orders values for the enum index: null, false, true, numbers by value, strings by bytes,
 * then objects and arrays (all "equal": they are scanned, not searched). */
static int value_rank(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return 0;
    case JSON_FALSE:
        return 1;
    case JSON_TRUE:
        return 2;
    case JSON_INTEGER:
    case JSON_REAL:
        return 3;
    case JSON_STRING:
        return 4;
    default:
        return 5;
    }
}

static int values_order(const json_t *a, const json_t *b)
{
    int ra = value_rank(a), rb = value_rank(b);
    if (ra != rb)
        return ra - rb;
    if (ra == 3)
        return num_cmp(num_of(a), num_of(b));
    if (ra == 4) {
        size_t la = json_string_length(a), lb = json_string_length(b);
        int c = memcmp(json_string_value(a), json_string_value(b), la < lb ? la : lb);
        return c ? c : (la > lb) - (la < lb);
    }
    return 0;
}

static int enum_sort_cmp(const void *a, const void *b)
{
    return values_order(*(const json_t *const *)a, *(const json_t *const *)b);
}

/* JSON Schema equality: numbers by value (1 equals 1.0), objects regardless of order. */
static int values_equal(const json_t *a, const json_t *b, int depth)
{
    if (json_is_number(a) && json_is_number(b))
        return num_cmp(num_of(a), num_of(b)) == 0;
    if (json_typeof(a) != json_typeof(b) || depth > JS_EQUAL_DEPTH_MAX)
        return 0;
    if (json_is_object(a)) {
        const char *key;
        json_t *va;
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach((json_t *)a, key, va)
        {
            const json_t *vb = json_object_get(b, key);
            if (!vb || !values_equal(va, vb, depth + 1))
                return 0;
        }
        return 1;
    }
    if (json_is_array(a)) {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return 0;
        for (size_t i = 0; i < n; i++) {
            if (!values_equal(json_array_get(a, i), json_array_get(b, i), depth + 1))
                return 0;
        }
        return 1;
    }
    return values_order(a, b) == 0;
}

/* Compact text of @p v, cut to about JS_VALUE_TEXT_MAX bytes. @returns malloc'd or NULL. */
static char *value_text(const json_t *v)
{
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (t && strlen(t) > JS_VALUE_TEXT_MAX)
        memcpy(t + JS_VALUE_TEXT_MAX - 3, "...", 4);
    return t;
}

/* ---- paths: "$", ".name" or ["odd name"], "[*]" ---- */

typedef struct {
    char buf[JS_PATH_MAX];
    size_t len;
    size_t cut_end; /* "..." ends buf at this length (0: not cut): appends stop there */
} js_path_t;

static void path_init(js_path_t *p)
{
    memcpy(p->buf, "$", 2);
    p->len = 1;
    p->cut_end = 0;
}

/* Appends @p s (or "..." when it does not fit). @returns the mark path_pop() restores. */
static size_t path_push(js_path_t *p, const char *s)
{
    size_t mark = p->len;
    size_t n = strlen(s);
    if (p->cut_end)
        return mark;
    if (p->len + n + 4 > sizeof(p->buf)) { /* 4: room for "..." stays */
        memcpy(p->buf + p->len, "...", 4);
        p->len += 3;
        p->cut_end = p->len;
        return mark;
    }
    memcpy(p->buf + p->len, s, n + 1);
    p->len += n;
    return mark;
}

static void path_pop(js_path_t *p, size_t mark)
{
    p->len = mark;
    p->buf[mark] = '\0';
    if (mark < p->cut_end)
        p->cut_end = 0;
}

static int simple_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* .name, or ["name"] with quotes and backslashes escaped, as msm/json.h writes fields. */
static size_t path_push_name(js_path_t *p, const char *name)
{
    char seg[JS_PATH_MAX];
    size_t t = 0;
    if (simple_name(name)) {
        snprintf(seg, sizeof(seg), ".%s", name);
        return path_push(p, seg);
    }
    seg[t++] = '[';
    seg[t++] = '"';
    for (const char *c = name; *c && t < sizeof(seg) - 4; c++) {
        if (*c == '"' || *c == '\\')
            seg[t++] = '\\';
        seg[t++] = *c;
    }
    seg[t++] = '"';
    seg[t++] = ']';
    seg[t] = '\0';
    return path_push(p, seg);
}

/* ---- compiling ---- */

typedef struct {
    js_schema_t *s;
    js_path_t path;
    char *err;
    size_t err_size;
} js_compiler_t;

typedef struct js_keyword js_keyword_t;
typedef int (*js_keyword_fn)(
    js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth);

struct js_keyword {
    const char *name;
    js_keyword_fn compile; /* NULL: an annotation, or unsupported */
    int unsupported;       /* changes validation and is not implemented: refused */
    unsigned flag;         /* the JS_HAS_ flag the keyword sets, if any */
};

__attribute__((format(printf, 3, 4))) static int
compile_fail(js_compiler_t *c, int rc, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (rc == MSM_ERR_NOMEM)
        snprintf(c->err, c->err_size, "out of memory");
    else
        snprintf(c->err, c->err_size, "%s (at %s)", msg, c->path.buf);
    return rc;
}

static int out_of_room(js_compiler_t *c, int rc)
{
    if (rc == MSM_ERR_NOMEM)
        return compile_fail(c, rc, "out of memory");
    return compile_fail(c, rc, "the schema is too large");
}

static js_node_t *node_at(js_compiler_t *c, uint32_t idx)
{
    return &c->s->nodes[idx];
}

static void node_init(js_node_t *n, unsigned types)
{
    memset(n, 0, sizeof(*n));
    n->types = types;
    n->items = JS_TRUE_NODE;
    n->additional = JS_TRUE_NODE;
    n->enum_text = JS_NO_TEXT;
    n->const_text = JS_NO_TEXT;
}

static int new_node(js_schema_t *s, uint32_t *idx)
{
    int rc;
    JS_GROW(rc, s->nodes, s->cap_nodes, s->n_nodes + 1);
    if (rc != MSM_OK)
        return rc;
    *idx = (uint32_t)s->n_nodes++;
    node_init(&s->nodes[*idx], JS_ANY);
    return MSM_OK;
}

/* Appends @p str (NUL-terminated) to the text arena. */
static int add_text(js_schema_t *s, const char *str, uint32_t *offset)
{
    size_t n = strlen(str) + 1;
    int rc;
    JS_GROW(rc, s->text, s->cap_text, s->n_text + n);
    if (rc != MSM_OK)
        return rc;
    memcpy(s->text + s->n_text, str, n);
    *offset = (uint32_t)s->n_text;
    s->n_text += n;
    return MSM_OK;
}

static int compile_schema(js_compiler_t *c, json_t *schema, int depth, uint32_t *out);

static int
kw_type(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)kw;
    (void)depth;
    unsigned types = 0;
    size_t n = json_is_array(value) ? json_array_size(value) : 1;
    if (n == 0 || (!json_is_array(value) && !json_is_string(value)))
        return compile_fail(c, MSM_ERR_INVALID,
                            "'type' must be a type name or a non-empty array of type names");
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_is_array(value) ? json_array_get(value, i) : value;
        if (!json_is_string(t))
            return compile_fail(c, MSM_ERR_INVALID, "'type' must list type names (strings)");
        size_t k = 0;
        while (k < JS_NTYPES && strcmp(js_types[k].name, json_string_value(t)) != 0)
            k++;
        if (k == JS_NTYPES)
            return compile_fail(c, MSM_ERR_INVALID, "'type': unknown type '%.64s'",
                                json_string_value(t));
        if (types & js_types[k].bit)
            return compile_fail(c, MSM_ERR_INVALID, "'type' names '%s' twice", js_types[k].name);
        types |= js_types[k].bit;
    }
    node_at(c, node)->types = types;
    return MSM_OK;
}

static int prop_cmp(const void *a, const void *b)
{
    return strcmp(((const js_prop_t *)a)->name, ((const js_prop_t *)b)->name);
}

static int
kw_properties(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)kw;
    js_schema_t *s = c->s;
    if (!json_is_object(value))
        return compile_fail(c, MSM_ERR_INVALID, "'properties' must be an object of schemas");
    /* The slots are taken before the children compile, so a node's properties stay
     * contiguous while the children append their own after them. */
    size_t start = s->n_props, count = json_object_size(value), k = 0;
    int rc;
    JS_GROW(rc, s->props, s->cap_props, start + count);
    if (rc != MSM_OK)
        return out_of_room(c, rc);
    s->n_props = start + count;
    const char *name;
    json_t *sub;
    json_object_foreach(value, name, sub)
    {
        size_t mark = path_push(&c->path, ".properties");
        path_push_name(&c->path, name);
        uint32_t child;
        rc = compile_schema(c, sub, depth + 1, &child);
        path_pop(&c->path, mark);
        if (rc != MSM_OK)
            return rc;
        s->props[start + k].name = name;
        s->props[start + k].node = child;
        k++;
    }
    if (count > 0)
        qsort(s->props + start, count, sizeof(js_prop_t), prop_cmp);
    js_node_t *n = node_at(c, node);
    n->props_start = (uint32_t)start;
    n->props_count = (uint32_t)count;
    return MSM_OK;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int
kw_required(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)kw;
    (void)depth;
    js_schema_t *s = c->s;
    if (!json_is_array(value))
        return compile_fail(c, MSM_ERR_INVALID, "'required' must be an array of names");
    size_t start = s->n_required, count = json_array_size(value);
    int rc;
    JS_GROW(rc, s->required, s->cap_required, start + count);
    if (rc != MSM_OK)
        return out_of_room(c, rc);
    for (size_t i = 0; i < count; i++) {
        const json_t *name = json_array_get(value, i);
        if (!json_is_string(name))
            return compile_fail(c, MSM_ERR_INVALID, "'required' must be an array of names");
        s->required[start + i] = json_string_value(name);
    }
    if (count > 0)
        qsort(s->required + start, count, sizeof(char *), str_cmp);
    for (size_t i = 1; i < count; i++) {
        if (strcmp(s->required[start + i - 1], s->required[start + i]) == 0)
            return compile_fail(c, MSM_ERR_INVALID, "'required' names '%.64s' twice",
                                s->required[start + i]);
    }
    s->n_required = start + count;
    js_node_t *n = node_at(c, node);
    n->required_start = (uint32_t)start;
    n->required_count = (uint32_t)count;
    return MSM_OK;
}

static int
kw_subschema(js_compiler_t *c, const char *segment, json_t *value, int depth, uint32_t *child)
{
    size_t mark = path_push(&c->path, segment);
    int rc = compile_schema(c, value, depth + 1, child);
    path_pop(&c->path, mark);
    return rc;
}

static int
kw_additional(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)kw;
    uint32_t child;
    int rc = kw_subschema(c, ".additionalProperties", value, depth, &child);
    if (rc == MSM_OK)
        node_at(c, node)->additional = child;
    return rc;
}

static int
kw_items(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)kw;
    if (json_is_array(value))
        return compile_fail(c, MSM_ERR_INVALID,
                            "keyword 'items' in its array (tuple) form is not supported");
    uint32_t child;
    int rc = kw_subschema(c, ".items", value, depth, &child);
    if (rc == MSM_OK)
        node_at(c, node)->items = child;
    return rc;
}

/* "[a,b,...]" of the first few values, without dumping a long enum whole. */
static int enum_text(js_compiler_t *c, const json_t *values, uint32_t *offset)
{
    char buf[JS_VALUE_TEXT_MAX + 8];
    size_t len = 0;
    buf[len++] = '[';
    for (size_t i = 0; i < json_array_size(values); i++) {
        char *t = json_dumps(json_array_get(values, i), JSON_COMPACT | JSON_ENCODE_ANY);
        if (!t)
            return MSM_ERR_NOMEM;
        size_t n = strlen(t);
        if (len + n + 2 > JS_VALUE_TEXT_MAX) {
            free(t);
            memcpy(buf + len, i ? ",...]" : "...]", i ? 6 : 5);
            return add_text(c->s, buf, offset);
        }
        if (i)
            buf[len++] = ',';
        memcpy(buf + len, t, n);
        len += n;
        free(t);
    }
    memcpy(buf + len, "]", 2);
    return add_text(c->s, buf, offset);
}

static int
kw_enum(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)kw;
    (void)depth;
    js_schema_t *s = c->s;
    if (!json_is_array(value))
        return compile_fail(c, MSM_ERR_INVALID, "'enum' must be an array");
    size_t start = s->n_enums, count = json_array_size(value), containers = 0;
    int rc;
    JS_GROW(rc, s->enums, s->cap_enums, start + count);
    if (rc != MSM_OK)
        return out_of_room(c, rc);
    for (size_t i = 0; i < count; i++) {
        const json_t *v = json_array_get(value, i);
        containers += json_is_object(v) || json_is_array(v);
        s->enums[start + i] = v;
    }
    if (containers > JS_ENUM_CONTAINERS_MAX)
        return compile_fail(c, MSM_ERR_INVALID, "'enum' may list at most %d objects or arrays",
                            JS_ENUM_CONTAINERS_MAX);
    if (count > 0) /* the array is still NULL when every enum so far was empty */
        qsort(s->enums + start, count, sizeof(json_t *), enum_sort_cmp);
    s->n_enums = start + count;
    uint32_t text;
    rc = enum_text(c, value, &text);
    if (rc != MSM_OK)
        return out_of_room(c, rc);
    js_node_t *n = node_at(c, node);
    n->flags |= JS_HAS_ENUM;
    n->enum_start = (uint32_t)start;
    n->enum_count = (uint32_t)count;
    n->enum_containers = (uint32_t)containers;
    n->enum_text = text;
    return MSM_OK;
}

static int
kw_const(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)kw;
    (void)depth;
    char *t = value_text(value);
    if (!t)
        return out_of_room(c, MSM_ERR_NOMEM);
    uint32_t text;
    int rc = add_text(c->s, t, &text);
    free(t);
    if (rc != MSM_OK)
        return out_of_room(c, rc);
    js_node_t *n = node_at(c, node);
    n->const_value = value;
    n->const_text = text;
    return MSM_OK;
}

static int
kw_bound(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)depth;
    if (json_is_boolean(value) && (kw->flag & (JS_HAS_XMINIMUM | JS_HAS_XMAXIMUM)))
        return compile_fail(c, MSM_ERR_INVALID,
                            "'%s' must be a number (the draft-4 boolean form is not supported)",
                            kw->name);
    if (!json_is_number(value))
        return compile_fail(c, MSM_ERR_INVALID, "'%s' must be a number", kw->name);
    js_node_t *n = node_at(c, node);
    js_num_t v = num_of(value);
    switch (kw->flag) {
    case JS_HAS_MINIMUM:
        n->minimum = v;
        break;
    case JS_HAS_XMINIMUM:
        n->xminimum = v;
        break;
    case JS_HAS_MAXIMUM:
        n->maximum = v;
        break;
    default:
        n->xmaximum = v;
        break;
    }
    n->flags |= kw->flag;
    return MSM_OK;
}

static int
kw_count(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)depth;
    uint64_t v;
    /* Draft 6+: 2.0 is an integer too. */
    if (json_is_integer(value) && json_integer_value(value) >= 0) {
        v = (uint64_t)json_integer_value(value);
    } else if (json_is_real(value) && json_real_value(value) >= 0 &&
               json_real_value(value) < 9.2e18 &&
               floor(json_real_value(value)) == json_real_value(value)) {
        v = (uint64_t)json_real_value(value);
    } else {
        return compile_fail(c, MSM_ERR_INVALID, "'%s' must be a non-negative integer", kw->name);
    }
    js_node_t *n = node_at(c, node);
    switch (kw->flag) {
    case JS_HAS_MIN_LENGTH:
        n->min_length = v;
        break;
    case JS_HAS_MAX_LENGTH:
        n->max_length = v;
        break;
    case JS_HAS_MIN_ITEMS:
        n->min_items = v;
        break;
    default:
        n->max_items = v;
        break;
    }
    n->flags |= kw->flag;
    return MSM_OK;
}

/* "uniqueItems": false is the default and constrains nothing; true is not implemented. */
static int
kw_unique_items(js_compiler_t *c, uint32_t node, const js_keyword_t *kw, json_t *value, int depth)
{
    (void)node;
    (void)kw;
    (void)depth;
    if (json_is_false(value))
        return MSM_OK;
    if (json_is_true(value))
        return compile_fail(c, MSM_ERR_INVALID,
                            "keyword 'uniqueItems' is not supported (only false is accepted)");
    return compile_fail(c, MSM_ERR_INVALID, "'uniqueItems' must be a boolean");
}

/* Keywords that are neither here nor supported are ignored, as the spec says of unknown
 * keywords; the annotations are listed to say they were considered. */
static const js_keyword_t js_keywords[] = {
    {"type", kw_type, 0, 0},
    {"properties", kw_properties, 0, 0},
    {"required", kw_required, 0, 0},
    {"additionalProperties", kw_additional, 0, 0},
    {"items", kw_items, 0, 0},
    {"enum", kw_enum, 0, 0},
    {"const", kw_const, 0, 0},
    {"minimum", kw_bound, 0, JS_HAS_MINIMUM},
    {"exclusiveMinimum", kw_bound, 0, JS_HAS_XMINIMUM},
    {"maximum", kw_bound, 0, JS_HAS_MAXIMUM},
    {"exclusiveMaximum", kw_bound, 0, JS_HAS_XMAXIMUM},
    {"minLength", kw_count, 0, JS_HAS_MIN_LENGTH},
    {"maxLength", kw_count, 0, JS_HAS_MAX_LENGTH},
    {"minItems", kw_count, 0, JS_HAS_MIN_ITEMS},
    {"maxItems", kw_count, 0, JS_HAS_MAX_ITEMS},
    {"uniqueItems", kw_unique_items, 0, 0},
    /* annotations */
    {"$schema", NULL, 0, 0},
    {"$id", NULL, 0, 0},
    {"title", NULL, 0, 0},
    {"description", NULL, 0, 0},
    {"default", NULL, 0, 0},
    {"examples", NULL, 0, 0},
    {"$comment", NULL, 0, 0},
    {"format", NULL, 0, 0},
    {"readOnly", NULL, 0, 0},
    {"writeOnly", NULL, 0, 0},
    {"deprecated", NULL, 0, 0},
    /* not supported: each would change what validates */
    {"allOf", NULL, 1, 0},
    {"anyOf", NULL, 1, 0},
    {"oneOf", NULL, 1, 0},
    {"not", NULL, 1, 0},
    {"if", NULL, 1, 0},
    {"then", NULL, 1, 0},
    {"else", NULL, 1, 0},
    {"$ref", NULL, 1, 0},
    {"$dynamicRef", NULL, 1, 0},
    {"$recursiveRef", NULL, 1, 0},
    {"$defs", NULL, 1, 0},
    {"definitions", NULL, 1, 0},
    {"patternProperties", NULL, 1, 0},
    {"pattern", NULL, 1, 0},
    {"dependencies", NULL, 1, 0},
    {"dependentRequired", NULL, 1, 0},
    {"dependentSchemas", NULL, 1, 0},
    {"propertyNames", NULL, 1, 0},
    {"contains", NULL, 1, 0},
    {"minContains", NULL, 1, 0},
    {"maxContains", NULL, 1, 0},
    {"multipleOf", NULL, 1, 0},
    {"prefixItems", NULL, 1, 0},
    {"additionalItems", NULL, 1, 0},
    {"unevaluatedItems", NULL, 1, 0},
    {"unevaluatedProperties", NULL, 1, 0},
    {"minProperties", NULL, 1, 0},
    {"maxProperties", NULL, 1, 0},
};

static const js_keyword_t *keyword_find(const char *name)
{
    for (size_t i = 0; i < sizeof(js_keywords) / sizeof(js_keywords[0]); i++) {
        if (strcmp(js_keywords[i].name, name) == 0)
            return &js_keywords[i];
    }
    return NULL;
}

static int compile_schema(js_compiler_t *c, json_t *schema, int depth, uint32_t *out)
{
    if (json_is_true(schema)) {
        *out = JS_TRUE_NODE;
        return MSM_OK;
    }
    if (json_is_false(schema)) {
        *out = JS_FALSE_NODE;
        return MSM_OK;
    }
    if (!json_is_object(schema))
        return compile_fail(c, MSM_ERR_INVALID, "a schema must be an object or a boolean");
    if (depth > JS_DEPTH_MAX)
        return compile_fail(c, MSM_ERR_INVALID, "schemas nest deeper than %d levels", JS_DEPTH_MAX);
    uint32_t node;
    int rc = new_node(c->s, &node);
    if (rc != MSM_OK)
        return out_of_room(c, rc);
    const char *key;
    json_t *value;
    json_object_foreach(schema, key, value)
    {
        const js_keyword_t *kw = keyword_find(key);
        if (kw && kw->unsupported)
            return compile_fail(c, MSM_ERR_INVALID, "keyword '%s' is not supported", key);
        if (!kw || !kw->compile)
            continue;
        rc = kw->compile(c, node, kw, value, depth);
        if (rc != MSM_OK)
            return rc;
    }
    *out = node;
    return MSM_OK;
}

static int js_compile(const char *text,
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
    msm_json_err_t je;
    msm_json_err_init(&je);
    json_t *doc = msm_json_parse(text, len, &je);
    if (!doc) {
        const char *m = msm_json_err_message(&je);
        snprintf(err, err_size, "%s", strncmp(m, "$: ", 3) == 0 ? m + 3 : m);
        msm_json_err_deinit(&je);
        return MSM_ERR_INVALID;
    }
    msm_json_err_deinit(&je);

    int rc;
    js_schema_t *s = calloc(1, sizeof(*s));
    if (!s) {
        json_decref(doc);
        snprintf(err, err_size, "out of memory");
        return MSM_ERR_NOMEM;
    }
    s->doc = doc;
    JS_GROW(rc, s->nodes, s->cap_nodes, 2);
    if (rc != MSM_OK) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    node_init(&s->nodes[JS_TRUE_NODE], JS_ANY);
    node_init(&s->nodes[JS_FALSE_NODE], 0);
    s->nodes[JS_FALSE_NODE].flags = JS_IS_FALSE;
    s->n_nodes = 2;

    js_compiler_t c = {.s = s, .err = err, .err_size = err_size};
    path_init(&c.path);
    rc = compile_schema(&c, doc, 0, &s->root);
    if (rc != MSM_OK)
        goto fail;
    *canonical = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (!*canonical) {
        rc = MSM_ERR_NOMEM;
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    *impl = s;
    return MSM_OK;
fail:
    schema_free(s);
    return rc;
}

static void js_free(void *impl)
{
    schema_free(impl);
}

/* ---- validating ---- */

static void validate(const js_schema_t *s, uint32_t idx, const json_t *v, msm_json_err_t *e);

/* "a string", "a string or null", "an integer, a string or null". */
static void types_phrase(unsigned types, char *buf, size_t size)
{
    size_t len = 0, total = 0, seen = 0;
    if (types & JS_NUMBER)
        types &= ~JS_INTEGER; /* a number covers integers */
    for (size_t k = 0; k < JS_NTYPES; k++)
        total += (types & js_types[k].bit) != 0;
    buf[0] = '\0';
    for (size_t k = 0; k < JS_NTYPES && len < size; k++) {
        if (!(types & js_types[k].bit))
            continue;
        seen++;
        const char *sep = seen == 1 ? "" : seen == total ? " or " : ", ";
        int n = snprintf(buf + len, size - len, "%s%s", sep, js_types[k].phrase);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

static int enum_contains(const js_schema_t *s, const js_node_t *n, const json_t *v)
{
    if (n->enum_count == 0)
        return 0;
    const json_t *const *values = s->enums + n->enum_start;
    size_t scalars = n->enum_count - n->enum_containers;
    if (json_is_object(v) || json_is_array(v)) {
        for (size_t i = scalars; i < n->enum_count; i++) {
            if (values_equal(values[i], v, 0))
                return 1;
        }
        return 0;
    }
    size_t lo = 0, hi = scalars;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = values_order(values[mid], v);
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static void bound_error(msm_json_err_t *e, const char *op, js_num_t bound)
{
    char b[40];
    num_format(bound, b, sizeof(b));
    msm_json_err_add(e, NULL, "must be %s %s", op, b);
}

static void validate_number(const js_node_t *n, const json_t *v, msm_json_err_t *e)
{
    js_num_t x = num_of(v);
    if ((n->flags & JS_HAS_MINIMUM) && num_cmp(x, n->minimum) < 0)
        bound_error(e, ">=", n->minimum);
    if ((n->flags & JS_HAS_XMINIMUM) && num_cmp(x, n->xminimum) <= 0)
        bound_error(e, ">", n->xminimum);
    if ((n->flags & JS_HAS_MAXIMUM) && num_cmp(x, n->maximum) > 0)
        bound_error(e, "<=", n->maximum);
    if ((n->flags & JS_HAS_XMAXIMUM) && num_cmp(x, n->xmaximum) >= 0)
        bound_error(e, "<", n->xmaximum);
}

static void validate_string(const js_node_t *n, const json_t *v, msm_json_err_t *e)
{
    if (!(n->flags & (JS_HAS_MIN_LENGTH | JS_HAS_MAX_LENGTH)))
        return;
    uint64_t len = utf8_length(json_string_value(v), json_string_length(v));
    if ((n->flags & JS_HAS_MIN_LENGTH) && len < n->min_length)
        msm_json_err_add(e, NULL, "must be at least %" PRIu64 " character%s long", n->min_length,
                         n->min_length == 1 ? "" : "s");
    if ((n->flags & JS_HAS_MAX_LENGTH) && len > n->max_length)
        msm_json_err_add(e, NULL, "must be at most %" PRIu64 " character%s long", n->max_length,
                         n->max_length == 1 ? "" : "s");
}

static void
validate_array(const js_schema_t *s, const js_node_t *n, const json_t *v, msm_json_err_t *e)
{
    size_t count = json_array_size(v);
    if ((n->flags & JS_HAS_MIN_ITEMS) && count < n->min_items)
        msm_json_err_add(e, NULL, "must have at least %" PRIu64 " item%s", n->min_items,
                         n->min_items == 1 ? "" : "s");
    if ((n->flags & JS_HAS_MAX_ITEMS) && count > n->max_items)
        msm_json_err_add(e, NULL, "must have at most %" PRIu64 " item%s", n->max_items,
                         n->max_items == 1 ? "" : "s");
    if (n->items == JS_TRUE_NODE)
        return;
    for (size_t i = 0; i < count; i++) {
        msm_json_path_push_index(e, i);
        validate(s, n->items, json_array_get(v, i), e);
        msm_json_path_pop(e);
    }
}

static const js_prop_t *find_prop(const js_schema_t *s, const js_node_t *n, const char *name)
{
    js_prop_t key = {name, 0};
    if (n->props_count == 0)
        return NULL;
    return bsearch(&key, s->props + n->props_start, n->props_count, sizeof(js_prop_t), prop_cmp);
}

static int is_required(const js_schema_t *s, const js_node_t *n, const char *name)
{
    if (n->required_count == 0)
        return 0;
    return bsearch(&name, s->required + n->required_start, n->required_count, sizeof(char *),
                   str_cmp) != NULL;
}

static void
validate_object(const js_schema_t *s, const js_node_t *n, const json_t *v, msm_json_err_t *e)
{
    const char *key;
    json_t *member;
    /* Members in the document's order, so errors come out in reading order. */
    json_object_foreach((json_t *)v, key, member)
    {
        const js_prop_t *p = find_prop(s, n, key);
        uint32_t child = p ? p->node : n->additional;
        if (child == JS_TRUE_NODE)
            continue;
        if (!p && child == JS_FALSE_NODE) {
            msm_json_err_add(e, key, "unknown field");
            continue;
        }
        msm_json_path_push_key(e, key);
        validate(s, child, member, e);
        msm_json_path_pop(e);
    }
    for (uint32_t i = 0; i < n->required_count; i++) {
        const char *name = s->required[n->required_start + i];
        if (!json_object_get(v, name))
            msm_json_err_add(e, name, "is required");
    }
}

static void validate(const js_schema_t *s, uint32_t idx, const json_t *v, msm_json_err_t *e)
{
    const js_node_t *n = &s->nodes[idx];
    if (n->flags & JS_IS_FALSE) {
        msm_json_err_add(e, NULL, "is not allowed");
        return;
    }
    if (!(n->types & value_types(v))) {
        char phrase[128];
        types_phrase(n->types, phrase, sizeof(phrase));
        msm_json_err_add(e, NULL, "must be %s", phrase);
        return;
    }
    if (n->const_value && !values_equal(n->const_value, v, 0))
        msm_json_err_add(e, NULL, "must be %s", s->text + n->const_text);
    if ((n->flags & JS_HAS_ENUM) && !enum_contains(s, n, v))
        msm_json_err_add(e, NULL, "must be one of %s", s->text + n->enum_text);
    switch (json_typeof(v)) {
    case JSON_INTEGER:
    case JSON_REAL:
        validate_number(n, v, e);
        break;
    case JSON_STRING:
        validate_string(n, v, e);
        break;
    case JSON_ARRAY:
        validate_array(s, n, v, e);
        break;
    case JSON_OBJECT:
        validate_object(s, n, v, e);
        break;
    default:
        break;
    }
}

static int js_encode_json(
    const void *impl, const json_t *value, msm_json_err_t *e, uint8_t **out, size_t *out_len)
{
    const js_schema_t *s = impl;
    size_t before = msm_json_err_count(e);
    if (!value) {
        msm_json_err_add(e, NULL, "is required");
        return MSM_ERR_INVALID;
    }
    validate(s, s->root, value, e);
    if (msm_json_err_count(e) != before)
        return MSM_ERR_INVALID;
    size_t len = 0;
    char *text = msm_json_dump(value, &len);
    if (!text)
        return MSM_ERR_NOMEM;
    *out = (uint8_t *)text;
    *out_len = len;
    return MSM_OK;
}

/* Parses and validates; the first problem in @p why as "field: description". */
static json_t *
parse_valid(const js_schema_t *s, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    msm_json_err_t e;
    msm_json_err_init(&e);
    json_t *v = msm_json_parse((const char *)data, len, &e);
    if (v)
        validate(s, s->root, v, &e);
    if (msm_json_err_count(&e) > 0) {
        snprintf(why, why_size, "%s", msm_json_err_message(&e));
        json_decref(v);
        v = NULL;
    }
    msm_json_err_deinit(&e);
    return v;
}

static int js_check(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    json_t *v = parse_valid(impl, data, len, why, why_size);
    if (!v)
        return MSM_ERR_INVALID;
    json_decref(v);
    return MSM_OK;
}

static json_t *
js_decode_json(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    return parse_valid(impl, data, len, why, why_size);
}

/* ---- compatibility: is every document valid under the writer valid under the reader? ---- */

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
    validate(c->w, wi, v, &e);
    if (msm_json_err_count(&e) == 0) {
        validate(c->r, ri, v, &e);
        if (msm_json_err_count(&e) > 0) {
            char *t = value_text(v);
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
        if (!(types & js_types[k].bit))
            continue;
        int n = snprintf(buf + len, size - len, "%s%s", len ? ", " : "", js_types[k].name);
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
    if ((w->flags & exc) && (!b.has || sign * num_cmp(xv, b.v) >= 0))
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
    num_format(rv, rs, sizeof(rs));
    if (!wb.has)
        return incompatible(c, "%s %s added (the writer has no %s bound)", kw, rs,
                            lower ? "lower" : "upper");
    int cmp = num_cmp(rv, wb.v) * (lower ? 1 : -1); /* > 0: the reader is tighter */
    if (cmp > 0 || (cmp == 0 && r_exclusive && !wb.exclusive)) {
        num_format(wb.v, ws, sizeof(ws));
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
    size_t mark = path_push(&c->path, "[*]");
    rc = compat(c, r->items, w->items, depth + 1);
    path_pop(&c->path, mark);
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
        if (is_required(c->w, w, name))
            continue;
        size_t mark = path_push_name(&c->path, name);
        rc = incompatible(c, "required by the reader but not by the writer");
        path_pop(&c->path, mark);
    }
    for (uint32_t i = 0; rc == MSM_OK && i < r->props_count; i++) {
        const js_prop_t *rp = &c->r->props[r->props_start + i];
        const js_prop_t *wp = find_prop(c->w, w, rp->name);
        size_t mark = path_push_name(&c->path, rp->name);
        rc = wp ? compat(c, rp->node, wp->node, depth + 1) : compat_added_prop(c, rp, w, depth);
        path_pop(&c->path, mark);
    }
    for (uint32_t i = 0; rc == MSM_OK && i < w->props_count; i++) {
        const js_prop_t *wp = &c->w->props[w->props_start + i];
        if (find_prop(c->r, r, wp->name))
            continue;
        size_t mark = path_push_name(&c->path, wp->name);
        rc = compat_removed_prop(c, r, wp, depth);
        path_pop(&c->path, mark);
    }
    if (rc != MSM_OK)
        return rc;
    /* Members neither declares. */
    if (r->additional == JS_FALSE_NODE && w->additional != JS_FALSE_NODE)
        return incompatible(c, "the reader rejects undeclared properties "
                               "(additionalProperties false), the writer allows them");
    size_t mark = path_push(&c->path, ".*");
    rc = compat(c, r->additional, w->additional, depth + 1);
    path_pop(&c->path, mark);
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

static int js_can_read(const void *reader, const void *writer, char *why, size_t why_size)
{
    js_compat_t c = {
        .r = reader, .w = writer, .why = why, .why_size = why_size, .budget = JS_COMPAT_BUDGET};
    if (why && why_size)
        why[0] = '\0';
    path_init(&c.path);
    return compat(&c, c.r->root, c.w->root, 0);
}

const msm_schema_ops_t msm_schema_json_ops = {
    .compile = js_compile,
    .free = js_free,
    .can_read = js_can_read,
    .encode_json = js_encode_json,
    .check = js_check,
    .decode_json = js_decode_json,
};
