/* SPDX-License-Identifier: MIT */
/* jansson helpers: body parsing with line/column, typed getters that record errors at a JSON
 * path kept in a caller-owned collector, and the API.md error body. */
#include "msm/json.h"
#include "msm/err.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void msm_json_err_init(msm_json_err_t *e)
{
    memset(e, 0, sizeof(*e));
}

void msm_json_err_deinit(msm_json_err_t *e)
{
    json_decref(e->je_details);
    msm_json_err_init(e);
}

size_t msm_json_err_count(const msm_json_err_t *e)
{
    return e->je_count;
}

const char *msm_json_err_message(const msm_json_err_t *e)
{
    return e->je_message;
}

json_t *msm_json_err_take_details(msm_json_err_t *e)
{
    json_t *d = e->je_details;
    e->je_details = NULL;
    return d ? d : json_array();
}

/* ---- paths ---- */

static int simple_key(const char *key)
{
    if (!*key)
        return 0;
    for (const char *p = key; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* Appends to a path buffer; a path that does not fit ends in "..." and stays so. */
static size_t path_append(char *buf, size_t len, const char *s)
{
    size_t n = strlen(s);
    if (len >= 3 && strcmp(buf + len - 3, "...") == 0)
        return len;
    if (len + n + 1 > MSM_JSON_PATH_MAX) {
        if (len + 4 > MSM_JSON_PATH_MAX)
            len = MSM_JSON_PATH_MAX - 4;
        memcpy(buf + len, "...", 4);
        return len + 3;
    }
    memcpy(buf + len, s, n + 1);
    return len + n;
}

static size_t path_append_key(char *buf, size_t len, const char *key)
{
    if (simple_key(key)) {
        if (len > 0)
            len = path_append(buf, len, ".");
        return path_append(buf, len, key);
    }
    /* ["weird.key"], with quotes and backslashes escaped JSON-style. */
    char tmp[MSM_JSON_PATH_MAX];
    size_t t = 0;
    tmp[t++] = '[';
    tmp[t++] = '"';
    for (const char *p = key; *p && t < sizeof(tmp) - 4; p++) {
        if (*p == '"' || *p == '\\')
            tmp[t++] = '\\';
        tmp[t++] = *p;
    }
    tmp[t++] = '"';
    tmp[t++] = ']';
    tmp[t] = '\0';
    return path_append(buf, len, tmp);
}

void msm_json_path_push_key(msm_json_err_t *e, const char *key)
{
    if (e->je_depth < MSM_JSON_DEPTH_MAX) {
        e->je_marks[e->je_depth] = e->je_pathlen;
        e->je_pathlen = path_append_key(e->je_path, e->je_pathlen, key);
    }
    e->je_depth++;
}

void msm_json_path_push_index(msm_json_err_t *e, size_t index)
{
    if (e->je_depth < MSM_JSON_DEPTH_MAX) {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "[%zu]", index);
        e->je_marks[e->je_depth] = e->je_pathlen;
        e->je_pathlen = path_append(e->je_path, e->je_pathlen, tmp);
    }
    e->je_depth++;
}

void msm_json_path_pop(msm_json_err_t *e)
{
    if (e->je_depth == 0)
        return;
    e->je_depth--;
    if (e->je_depth < MSM_JSON_DEPTH_MAX) {
        e->je_pathlen = e->je_marks[e->je_depth];
        e->je_path[e->je_pathlen] = '\0';
    }
}

/* ---- recording ---- */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when it is not one. */
static size_t utf8_seq_len(const unsigned char *p)
{
    size_t n;
    unsigned min;
    unsigned cp;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xE0) == 0xC0) {
        n = 2, min = 0x80, cp = p[0] & 0x1F;
    } else if ((p[0] & 0xF0) == 0xE0) {
        n = 3, min = 0x800, cp = p[0] & 0x0F;
    } else if ((p[0] & 0xF8) == 0xF0) {
        n = 4, min = 0x10000, cp = p[0] & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Paths and messages are cut to fit and jansson's error text quotes raw input: a sequence
 * cut in two or an invalid byte would make json_string() refuse the whole text, so each
 * becomes '?'. */
static void utf8_scrub(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq_len(p);
        if (n == 0) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

/* a + b + c into dst, silently cut to fit (messages are for humans). */
static void join3(char *dst, size_t n, const char *a, const char *b, const char *c)
{
    const char *parts[3] = {a, b, c};
    size_t len = 0;
    for (int i = 0; i < 3; i++) {
        for (const char *p = parts[i]; *p && len + 1 < n; p++)
            dst[len++] = *p;
    }
    dst[len] = '\0';
}

static json_t *record(msm_json_err_t *e, const char *key, const char *description)
{
    char field[MSM_JSON_PATH_MAX];
    size_t len = e->je_pathlen;
    memcpy(field, e->je_path, len + 1);
    if (key)
        len = path_append_key(field, len, key);
    if (len == 0)
        memcpy(field, "$", 2);
    utf8_scrub(field);
    char desc[256];
    snprintf(desc, sizeof(desc), "%s", description);
    utf8_scrub(desc);
    description = desc;

    e->je_count++;
    if (e->je_count == 1) {
        join3(e->je_message, sizeof(e->je_message), field, ": ", description);
        utf8_scrub(e->je_message);
    }
    if (!e->je_details)
        e->je_details = json_array();
    if (!e->je_details || json_array_size(e->je_details) >= MSM_JSON_MAX_DETAILS)
        return NULL;
    json_t *d = json_object();
    if (!d)
        return NULL;
    json_object_set_new(d, "field", json_string(field));
    json_object_set_new(d, "description", json_string(description));
    if (json_array_append_new(e->je_details, d) != 0)
        return NULL;
    return d;
}

void msm_json_err_add(msm_json_err_t *e, const char *key, const char *fmt, ...)
{
    char desc[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof(desc), fmt, ap);
    va_end(ap);
    record(e, key, desc);
}

/* ---- parsing ---- */

json_t *msm_json_parse(const char *data, size_t len, msm_json_err_t *e)
{
    if (!data || len == 0) {
        json_t *d = record(e, NULL, "invalid JSON: the body is empty");
        if (d) {
            json_object_set_new(d, "line", json_integer(1));
            json_object_set_new(d, "column", json_integer(1));
        }
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (v)
        return v;
    int line = jerr.line > 0 ? jerr.line : 1;
    int column = jerr.column > 0 ? jerr.column : 1;
    char desc[256];
    snprintf(desc, sizeof(desc), "invalid JSON at line %d, column %d: %s", line, column,
             jerr.text);
    json_t *d = record(e, NULL, desc);
    if (d) {
        json_object_set_new(d, "line", json_integer(line));
        json_object_set_new(d, "column", json_integer(column));
    }
    return NULL;
}

/* ---- typed getters ---- */

/* 1: present (in *v); 0: absent and allowed; -1: error recorded. */
static int lookup(msm_json_err_t *e, const json_t *obj, const char *key, int flags, json_t **v)
{
    *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (*v && json_is_null(*v) && (flags & MSM_JSON_NULLABLE))
        *v = NULL;
    if (*v)
        return 1;
    if (flags & MSM_JSON_REQUIRED) {
        record(e, key, "is required");
        return -1;
    }
    return 0;
}

int msm_json_get_strn(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                      size_t max_len, const char **out)
{
    json_t *v;
    int r = lookup(e, obj, key, flags, &v);
    if (r <= 0)
        return r == 0 ? MSM_OK : MSM_ERR_INVALID;
    if (!json_is_string(v)) {
        record(e, key, "must be a string");
        return MSM_ERR_INVALID;
    }
    size_t n = json_string_length(v);
    if ((flags & MSM_JSON_NONEMPTY) && n == 0) {
        record(e, key, "must not be empty");
        return MSM_ERR_INVALID;
    }
    if (max_len && n > max_len) {
        msm_json_err_add(e, key, "must be at most %zu bytes long", max_len);
        return MSM_ERR_INVALID;
    }
    *out = json_string_value(v);
    return MSM_OK;
}

int msm_json_get_str(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                     const char **out)
{
    return msm_json_get_strn(e, obj, key, flags, 0, out);
}

int msm_json_get_int(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                     int64_t min, int64_t max, int64_t *out)
{
    json_t *v;
    int r = lookup(e, obj, key, flags, &v);
    if (r <= 0)
        return r == 0 ? MSM_OK : MSM_ERR_INVALID;
    if (!json_is_integer(v)) {
        record(e, key, "must be an integer");
        return MSM_ERR_INVALID;
    }
    int64_t x = (int64_t)json_integer_value(v);
    if (x < min || x > max) {
        if (max == INT64_MAX)
            msm_json_err_add(e, key, "must be >= %" PRId64, min);
        else if (min == INT64_MIN)
            msm_json_err_add(e, key, "must be <= %" PRId64, max);
        else
            msm_json_err_add(e, key, "must be between %" PRId64 " and %" PRId64, min, max);
        return MSM_ERR_INVALID;
    }
    *out = x;
    return MSM_OK;
}

int msm_json_get_double(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                        double min, double max, double *out)
{
    json_t *v;
    int r = lookup(e, obj, key, flags, &v);
    if (r <= 0)
        return r == 0 ? MSM_OK : MSM_ERR_INVALID;
    if (!json_is_number(v)) {
        record(e, key, "must be a number");
        return MSM_ERR_INVALID;
    }
    double x = json_number_value(v);
    if (x < min || x > max) {
        if (isinf(max))
            msm_json_err_add(e, key, "must be >= %g", min);
        else if (isinf(min))
            msm_json_err_add(e, key, "must be <= %g", max);
        else
            msm_json_err_add(e, key, "must be between %g and %g", min, max);
        return MSM_ERR_INVALID;
    }
    *out = x;
    return MSM_OK;
}

int msm_json_get_bool(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                      int *out)
{
    json_t *v;
    int r = lookup(e, obj, key, flags, &v);
    if (r <= 0)
        return r == 0 ? MSM_OK : MSM_ERR_INVALID;
    if (!json_is_boolean(v)) {
        record(e, key, "must be true or false");
        return MSM_ERR_INVALID;
    }
    *out = json_is_true(v);
    return MSM_OK;
}

static int get_container(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                         int want_object, json_t **out)
{
    json_t *v;
    int r = lookup(e, obj, key, flags, &v);
    if (r <= 0)
        return r == 0 ? MSM_OK : MSM_ERR_INVALID;
    if (want_object ? !json_is_object(v) : !json_is_array(v)) {
        record(e, key, want_object ? "must be an object" : "must be an array");
        return MSM_ERR_INVALID;
    }
    size_t n = want_object ? json_object_size(v) : json_array_size(v);
    if ((flags & MSM_JSON_NONEMPTY) && n == 0) {
        record(e, key, "must not be empty");
        return MSM_ERR_INVALID;
    }
    *out = v;
    return MSM_OK;
}

int msm_json_get_object(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                        json_t **out)
{
    return get_container(e, obj, key, flags, 1, out);
}

int msm_json_get_array(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                       json_t **out)
{
    return get_container(e, obj, key, flags, 0, out);
}

int msm_json_expect_object(msm_json_err_t *e, const json_t *v)
{
    if (json_is_object(v))
        return MSM_OK;
    record(e, NULL, "must be an object");
    return MSM_ERR_INVALID;
}

int msm_json_check_known(msm_json_err_t *e, const json_t *obj, const char *const *allowed)
{
    int rc = MSM_OK;
    const char *key;
    json_t *v;
    if (!json_is_object(obj))
        return MSM_OK;
    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i = 0;
        while (allowed && allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (!allowed || !allowed[i]) {
            record(e, key, "unknown field");
            rc = MSM_ERR_INVALID;
        }
    }
    return rc;
}

/* ---- error bodies ---- */

json_t *msm_json_error_body(const char *code, const char *message, json_t *details)
{
    json_t *body = json_object();
    json_t *err = json_object();
    if (!details)
        details = json_array();
    if (!body || !err || !details)
        goto fail;
    if (json_object_set_new(err, "code", json_string(code ? code : "INTERNAL")) != 0 ||
        json_object_set_new(err, "message", json_string(message ? message : "")) != 0)
        goto fail;
    /* Both _new calls steal their reference even when they fail. */
    json_t *d = details;
    details = NULL;
    if (json_object_set_new(err, "details", d) != 0)
        goto fail;
    json_t *e = err;
    err = NULL;
    if (json_object_set_new(body, "error", e) != 0)
        goto fail;
    return body;
fail:
    json_decref(details);
    json_decref(err);
    json_decref(body);
    return NULL;
}

json_t *msm_json_err_body(msm_json_err_t *e, const char *code)
{
    char message[sizeof(e->je_message) + 48];
    if (e->je_count > 1)
        snprintf(message, sizeof(message), "%s (and %zu more problem%s)", e->je_message,
                 e->je_count - 1, e->je_count > 2 ? "s" : "");
    else
        snprintf(message, sizeof(message), "%s", e->je_count ? e->je_message : "invalid request");
    return msm_json_error_body(code ? code : "INVALID_ARGUMENT", message,
                               msm_json_err_take_details(e));
}

char *msm_json_dump(const json_t *v, size_t *len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s && len)
        *len = strlen(s);
    return s;
}

int msm_json_media_type(const char *ct)
{
    size_t n = ct ? strcspn(ct, ";") : 0;
    while (n && ct[n - 1] == ' ')
        n--;
    return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

int msm_json_has_control_chars(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return 1;
    }
    return 0;
}

void msm_json_check_text(msm_json_err_t *e, msm_json_err_t *big, const char *field,
                         const char *v, size_t max)
{
    if (strlen(v) > max)
        msm_json_err_add(big, field, "must be at most %zu bytes long", max);
    else if (msm_json_has_control_chars(v))
        msm_json_err_add(e, field, "must not contain control characters");
}
