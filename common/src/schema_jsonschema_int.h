/* SPDX-License-Identifier: MIT */
/* The JSON type's compiled form, shared by schema_jsonschema.c (compiling),
 * schema_jsonschema_validate.c and schema_jsonschema_compat.c. */
#ifndef MSM_SCHEMA_JSONSCHEMA_INT_H
#define MSM_SCHEMA_JSONSCHEMA_INT_H

#include "schema_int.h"

#include <stdint.h>

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

typedef struct {
    const char *name;
    const char *phrase; /* as in "must be a string" */
    unsigned bit;
} js_type_t;

#define JS_NTYPES 7
extern const js_type_t msm__js_types[JS_NTYPES];

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
    uint32_t enum_start, enum_count; /* sorted (msm__js_values_order), objects and arrays last */
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

/* A schema path for messages: "$", ".name" or ["odd name"], "[*]". */
typedef struct {
    char buf[JS_PATH_MAX];
    size_t len;
    size_t cut_end; /* "..." ends buf at this length (0: not cut): appends stop there */
} js_path_t;

/* ---- schema_jsonschema.c: values, numbers, paths ---- */

js_num_t msm__js_num_of(const json_t *v);
int msm__js_num_cmp(js_num_t a, js_num_t b);
void msm__js_num_format(js_num_t n, char *buf, size_t size);
uint64_t msm__js_utf8_length(const char *s, size_t len);
/** The JS_* type bits @p v has (an integral number is both NUMBER and INTEGER). */
unsigned msm__js_value_types(const json_t *v);
int msm__js_values_order(const json_t *a, const json_t *b);
int msm__js_values_equal(const json_t *a, const json_t *b, int depth);
/** A short text of @p v for messages (malloc'd). */
char *msm__js_value_text(const json_t *v);
int msm__js_prop_cmp(const void *a, const void *b);
int msm__js_str_cmp(const void *a, const void *b);
void msm__js_path_init(js_path_t *p);
size_t msm__js_path_push(js_path_t *p, const char *s);
size_t msm__js_path_push_name(js_path_t *p, const char *name);
void msm__js_path_pop(js_path_t *p, size_t mark);

/* ---- schema_jsonschema_validate.c ---- */

const js_prop_t *msm__js_find_prop(const js_schema_t *s, const js_node_t *n, const char *name);
int msm__js_is_required(const js_schema_t *s, const js_node_t *n, const char *name);
/** Adds every error of @p v against node @p idx to @p e, at e's path. */
void msm__js_validate(const js_schema_t *s, uint32_t idx, const json_t *v, msm_json_err_t *e);
int msm__js_encode_json(
    const void *impl, const json_t *value, msm_json_err_t *e, uint8_t **out, size_t *out_len);
int msm__js_check(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size);
json_t *
msm__js_decode_json(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size);

/* ---- schema_jsonschema_compat.c ---- */

int msm__js_can_read(const void *reader, const void *writer, char *why, size_t why_size);

#endif
