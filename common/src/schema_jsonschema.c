/* SPDX-License-Identifier: MIT */
/* The JSON type of msm/schema.h: a JSON Schema keyword subset (docs/schema-json.md)
 * compiled into a flat validator tree, validation that reports every error at its path
 * inside the value, and a conservative "every document the writer accepts, the reader
 * accepts" check for the registry's compatibility rules. */
#include "schema_jsonschema_int.h"

#include "msm/err.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const js_type_t msm__js_types[JS_NTYPES] = {
    {"string", "a string", JS_STRING},  {"integer", "an integer", JS_INTEGER},
    {"number", "a number", JS_NUMBER},  {"boolean", "a boolean", JS_BOOLEAN},
    {"object", "an object", JS_OBJECT}, {"array", "an array", JS_ARRAY},
    {"null", "null", JS_NULL},
};

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

js_num_t msm__js_num_of(const json_t *v)
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

int msm__js_num_cmp(js_num_t a, js_num_t b)
{
    if (a.is_int && b.is_int)
        return (a.i > b.i) - (a.i < b.i);
    /* long double holds every int64 exactly where it is wider than double (x86-64). */
    long double x = a.is_int ? (long double)a.i : (long double)a.d;
    long double y = b.is_int ? (long double)b.i : (long double)b.d;
    return (x > y) - (x < y);
}

/* The shortest text that reads back as the same number. */
void msm__js_num_format(js_num_t n, char *buf, size_t size)
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
uint64_t msm__js_utf8_length(const char *s, size_t len)
{
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* The types a value has; a number with no fractional part is also an integer. */
unsigned msm__js_value_types(const json_t *v)
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

int msm__js_values_order(const json_t *a, const json_t *b)
{
    int ra = value_rank(a), rb = value_rank(b);
    if (ra != rb)
        return ra - rb;
    if (ra == 3)
        return msm__js_num_cmp(msm__js_num_of(a), msm__js_num_of(b));
    if (ra == 4) {
        size_t la = json_string_length(a), lb = json_string_length(b);
        int c = memcmp(json_string_value(a), json_string_value(b), la < lb ? la : lb);
        return c ? c : (la > lb) - (la < lb);
    }
    return 0;
}

static int enum_sort_cmp(const void *a, const void *b)
{
    return msm__js_values_order(*(const json_t *const *)a, *(const json_t *const *)b);
}

/* JSON Schema equality: numbers by value (1 equals 1.0), objects regardless of order. */
int msm__js_values_equal(const json_t *a, const json_t *b, int depth)
{
    if (json_is_number(a) && json_is_number(b))
        return msm__js_num_cmp(msm__js_num_of(a), msm__js_num_of(b)) == 0;
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
            if (!vb || !msm__js_values_equal(va, vb, depth + 1))
                return 0;
        }
        return 1;
    }
    if (json_is_array(a)) {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return 0;
        for (size_t i = 0; i < n; i++) {
            if (!msm__js_values_equal(json_array_get(a, i), json_array_get(b, i), depth + 1))
                return 0;
        }
        return 1;
    }
    return msm__js_values_order(a, b) == 0;
}

/* Compact text of @p v, cut to about JS_VALUE_TEXT_MAX bytes. @returns malloc'd or NULL. */
char *msm__js_value_text(const json_t *v)
{
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (t && strlen(t) > JS_VALUE_TEXT_MAX)
        memcpy(t + JS_VALUE_TEXT_MAX - 3, "...", 4);
    return t;
}

/* ---- paths: "$", ".name" or ["odd name"], "[*]" ---- */

void msm__js_path_init(js_path_t *p)
{
    memcpy(p->buf, "$", 2);
    p->len = 1;
    p->cut_end = 0;
}

/* Appends @p s (or "..." when it does not fit). @returns the mark msm__js_path_pop() restores. */
size_t msm__js_path_push(js_path_t *p, const char *s)
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

void msm__js_path_pop(js_path_t *p, size_t mark)
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
size_t msm__js_path_push_name(js_path_t *p, const char *name)
{
    char seg[JS_PATH_MAX];
    size_t t = 0;
    if (simple_name(name)) {
        snprintf(seg, sizeof(seg), ".%s", name);
        return msm__js_path_push(p, seg);
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
    return msm__js_path_push(p, seg);
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
        while (k < JS_NTYPES && strcmp(msm__js_types[k].name, json_string_value(t)) != 0)
            k++;
        if (k == JS_NTYPES)
            return compile_fail(c, MSM_ERR_INVALID, "'type': unknown type '%.64s'",
                                json_string_value(t));
        if (types & msm__js_types[k].bit)
            return compile_fail(c, MSM_ERR_INVALID, "'type' names '%s' twice",
                                msm__js_types[k].name);
        types |= msm__js_types[k].bit;
    }
    node_at(c, node)->types = types;
    return MSM_OK;
}

int msm__js_prop_cmp(const void *a, const void *b)
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
        size_t mark = msm__js_path_push(&c->path, ".properties");
        msm__js_path_push_name(&c->path, name);
        uint32_t child;
        rc = compile_schema(c, sub, depth + 1, &child);
        msm__js_path_pop(&c->path, mark);
        if (rc != MSM_OK)
            return rc;
        s->props[start + k].name = name;
        s->props[start + k].node = child;
        k++;
    }
    if (count > 0)
        qsort(s->props + start, count, sizeof(js_prop_t), msm__js_prop_cmp);
    js_node_t *n = node_at(c, node);
    n->props_start = (uint32_t)start;
    n->props_count = (uint32_t)count;
    return MSM_OK;
}

int msm__js_str_cmp(const void *a, const void *b)
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
        qsort(s->required + start, count, sizeof(char *), msm__js_str_cmp);
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
    size_t mark = msm__js_path_push(&c->path, segment);
    int rc = compile_schema(c, value, depth + 1, child);
    msm__js_path_pop(&c->path, mark);
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
    char *t = msm__js_value_text(value);
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
    js_num_t v = msm__js_num_of(value);
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
    msm__js_path_init(&c.path);
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

const msm_schema_ops_t msm_schema_json_ops = {
    .compile = js_compile,
    .free = js_free,
    .can_read = msm__js_can_read,
    .encode_json = msm__js_encode_json,
    .check = msm__js_check,
    .decode_json = msm__js_decode_json,
};
