/* SPDX-License-Identifier: MIT */
/* The JSON type: validating a value against a compiled schema (schema_jsonschema.c). */
#include "schema_jsonschema_int.h"

#include "msm/err.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "a string", "a string or null", "an integer, a string or null". */
static void types_phrase(unsigned types, char *buf, size_t size)
{
    size_t len = 0, total = 0, seen = 0;
    if (types & JS_NUMBER)
        types &= ~JS_INTEGER; /* a number covers integers */
    for (size_t k = 0; k < JS_NTYPES; k++)
        total += (types & msm__js_types[k].bit) != 0;
    buf[0] = '\0';
    for (size_t k = 0; k < JS_NTYPES && len < size; k++) {
        if (!(types & msm__js_types[k].bit))
            continue;
        seen++;
        const char *sep = seen == 1 ? "" : seen == total ? " or " : ", ";
        int n = snprintf(buf + len, size - len, "%s%s", sep, msm__js_types[k].phrase);
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
            if (msm__js_values_equal(values[i], v, 0))
                return 1;
        }
        return 0;
    }
    size_t lo = 0, hi = scalars;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = msm__js_values_order(values[mid], v);
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
    msm__js_num_format(bound, b, sizeof(b));
    msm_json_err_add(e, NULL, "must be %s %s", op, b);
}

static void validate_number(const js_node_t *n, const json_t *v, msm_json_err_t *e)
{
    js_num_t x = msm__js_num_of(v);
    if ((n->flags & JS_HAS_MINIMUM) && msm__js_num_cmp(x, n->minimum) < 0)
        bound_error(e, ">=", n->minimum);
    if ((n->flags & JS_HAS_XMINIMUM) && msm__js_num_cmp(x, n->xminimum) <= 0)
        bound_error(e, ">", n->xminimum);
    if ((n->flags & JS_HAS_MAXIMUM) && msm__js_num_cmp(x, n->maximum) > 0)
        bound_error(e, "<=", n->maximum);
    if ((n->flags & JS_HAS_XMAXIMUM) && msm__js_num_cmp(x, n->xmaximum) >= 0)
        bound_error(e, "<", n->xmaximum);
}

static void validate_string(const js_node_t *n, const json_t *v, msm_json_err_t *e)
{
    if (!(n->flags & (JS_HAS_MIN_LENGTH | JS_HAS_MAX_LENGTH)))
        return;
    uint64_t len = msm__js_utf8_length(json_string_value(v), json_string_length(v));
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
        msm__js_validate(s, n->items, json_array_get(v, i), e);
        msm_json_path_pop(e);
    }
}

const js_prop_t *msm__js_find_prop(const js_schema_t *s, const js_node_t *n, const char *name)
{
    js_prop_t key = {name, 0};
    if (n->props_count == 0)
        return NULL;
    return bsearch(&key, s->props + n->props_start, n->props_count, sizeof(js_prop_t),
                   msm__js_prop_cmp);
}

int msm__js_is_required(const js_schema_t *s, const js_node_t *n, const char *name)
{
    if (n->required_count == 0)
        return 0;
    return bsearch(&name, s->required + n->required_start, n->required_count, sizeof(char *),
                   msm__js_str_cmp) != NULL;
}

static void
validate_object(const js_schema_t *s, const js_node_t *n, const json_t *v, msm_json_err_t *e)
{
    const char *key;
    json_t *member;
    /* Members in the document's order, so errors come out in reading order. */
    json_object_foreach((json_t *)v, key, member)
    {
        const js_prop_t *p = msm__js_find_prop(s, n, key);
        uint32_t child = p ? p->node : n->additional;
        if (child == JS_TRUE_NODE)
            continue;
        if (!p && child == JS_FALSE_NODE) {
            msm_json_err_add(e, key, "unknown field");
            continue;
        }
        msm_json_path_push_key(e, key);
        msm__js_validate(s, child, member, e);
        msm_json_path_pop(e);
    }
    for (uint32_t i = 0; i < n->required_count; i++) {
        const char *name = s->required[n->required_start + i];
        if (!json_object_get(v, name))
            msm_json_err_add(e, name, "is required");
    }
}

void msm__js_validate(const js_schema_t *s, uint32_t idx, const json_t *v, msm_json_err_t *e)
{
    const js_node_t *n = &s->nodes[idx];
    if (n->flags & JS_IS_FALSE) {
        msm_json_err_add(e, NULL, "is not allowed");
        return;
    }
    if (!(n->types & msm__js_value_types(v))) {
        char phrase[128];
        types_phrase(n->types, phrase, sizeof(phrase));
        msm_json_err_add(e, NULL, "must be %s", phrase);
        return;
    }
    if (n->const_value && !msm__js_values_equal(n->const_value, v, 0))
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

int msm__js_encode_json(
    const void *impl, const json_t *value, msm_json_err_t *e, uint8_t **out, size_t *out_len)
{
    const js_schema_t *s = impl;
    size_t before = msm_json_err_count(e);
    if (!value) {
        msm_json_err_add(e, NULL, "is required");
        return MSM_ERR_INVALID;
    }
    msm__js_validate(s, s->root, value, e);
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
        msm__js_validate(s, s->root, v, &e);
    if (msm_json_err_count(&e) > 0) {
        snprintf(why, why_size, "%s", msm_json_err_message(&e));
        json_decref(v);
        v = NULL;
    }
    msm_json_err_deinit(&e);
    return v;
}

int msm__js_check(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    json_t *v = parse_valid(impl, data, len, why, why_size);
    if (!v)
        return MSM_ERR_INVALID;
    json_decref(v);
    return MSM_OK;
}

json_t *
msm__js_decode_json(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size)
{
    return parse_valid(impl, data, len, why, why_size);
}
