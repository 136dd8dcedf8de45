/* SPDX-License-Identifier: MIT */
/* Table-driven configuration: defaults, a JSON file, MSM_* environment variables and
 * command-line flags, applied in that order onto the daemon's struct through the offsets
 * in its msm_conf_def_t table; plus --help and masked JSON generated from the same table. */
#include "msm/config.h"
#include "msm/err.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

const char *const msm_conf_log_backends[] = {"redis", "kafka", NULL};
const char *const msm_conf_log_levels[] = {"debug", "info", "warn", "error", NULL};
const char *const msm_conf_log_formats[] = {"logfmt", "json", NULL};

#define MAX_NAME 256

/* One flag from argv, applied after the file and the environment. */
typedef struct {
    const msm_conf_def_t *fl_def;
    const char *fl_value;   /* text to parse; for a property flag, the property's value */
    const char *fl_key;     /* property key of --props.KEY=V, else NULL */
    size_t fl_keylen;
    const char *fl_arg;     /* the argv element, for errors */
} flag_t;

typedef struct {
    const msm_conf_def_t *defs;
    size_t ndefs;
    char *base;
    char *err;
    size_t errn;
    char src[MAX_NAME + 64]; /* "config file /x.json", "environment MSM_X", "flag --x" */
} loader_t;

/* ---- small helpers ---- */

static void *field_ptr(const msm_conf_def_t *d, const void *conf)
{
    return (char *)conf + d->cd_offset;
}

static int fail(loader_t *ld, const msm_conf_def_t *d, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(loader_t *ld, const msm_conf_def_t *d, int rc, const char *fmt, ...)
{
    if (!ld->err || ld->errn == 0)
        return rc;
    int n;
    if (d)
        n = snprintf(ld->err, ld->errn, "%s: key \"%s\": ", ld->src, d->cd_name);
    else
        n = snprintf(ld->err, ld->errn, "%s: ", ld->src);
    if (n < 0 || (size_t)n >= ld->errn)
        return rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err + n, ld->errn - (size_t)n, fmt, ap);
    va_end(ap);
    return rc;
}

/* '.', '-' and '_' are the same character in flag names. */
static int same_sep_char(char a, char b)
{
    int sa = a == '.' || a == '-' || a == '_', sb = b == '.' || b == '-' || b == '_';
    return sa ? sb : a == b;
}

static int name_matches(const char *name, const char *s, size_t len)
{
    size_t i = 0;
    for (; i < len && name[i]; i++) {
        if (!same_sep_char(name[i], s[i]))
            return 0;
    }
    return i == len && name[i] == '\0';
}

static const msm_conf_def_t *find_flag(const loader_t *ld, const char *s, size_t len)
{
    for (size_t i = 0; i < ld->ndefs; i++) {
        if (name_matches(ld->defs[i].cd_name, s, len))
            return &ld->defs[i];
    }
    return NULL;
}

static const msm_conf_def_t *find_exact(const loader_t *ld, const char *name)
{
    for (size_t i = 0; i < ld->ndefs; i++) {
        if (strcmp(ld->defs[i].cd_name, name) == 0)
            return &ld->defs[i];
    }
    return NULL;
}

/* Is there a setting below the dotted path @p prefix ("http" for "http.port")? */
static int has_children(const loader_t *ld, const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < ld->ndefs; i++) {
        const char *name = ld->defs[i].cd_name;
        if (strncmp(name, prefix, n) == 0 && name[n] == '.')
            return 1;
    }
    return 0;
}

size_t msm_conf_env_name(const char *name, char *buf, size_t n)
{
    size_t len = 4 + strlen(name);
    if (n == 0)
        return len;
    size_t p = 0;
    for (const char *s = "MSM_"; *s && p + 1 < n; s++)
        buf[p++] = *s;
    for (const char *s = name; *s && p + 1 < n; s++)
        buf[p++] = (*s == '.' || *s == '-') ? '_' : (char)toupper((unsigned char)*s);
    buf[p] = '\0';
    return len;
}

static const char *env_lookup(char *const *envp, const char *name)
{
    if (!envp)
        return NULL;
    size_t n = strlen(name);
    for (; *envp; envp++) {
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    }
    return NULL;
}

/* ---- integer fields of any C type ---- */

static void store_limits(msm__conf_store_t st, int64_t *lo, int64_t *hi)
{
    switch (st) {
    case MSM__CONF_S_BOOL:
        *lo = 0, *hi = 1;
        break;
    case MSM__CONF_S_CHAR:
        *lo = CHAR_MIN, *hi = CHAR_MAX;
        break;
    case MSM__CONF_S_SCHAR:
        *lo = SCHAR_MIN, *hi = SCHAR_MAX;
        break;
    case MSM__CONF_S_UCHAR:
        *lo = 0, *hi = UCHAR_MAX;
        break;
    case MSM__CONF_S_SHORT:
        *lo = SHRT_MIN, *hi = SHRT_MAX;
        break;
    case MSM__CONF_S_USHORT:
        *lo = 0, *hi = USHRT_MAX;
        break;
    case MSM__CONF_S_INT:
        *lo = INT_MIN, *hi = INT_MAX;
        break;
    case MSM__CONF_S_UINT:
        *lo = 0, *hi = UINT_MAX;
        break;
    case MSM__CONF_S_LONG:
        *lo = LONG_MIN, *hi = LONG_MAX;
        break;
    case MSM__CONF_S_LLONG:
        *lo = LLONG_MIN, *hi = LLONG_MAX;
        break;
    case MSM__CONF_S_ULONG:
    case MSM__CONF_S_ULLONG:
        *lo = 0, *hi = INT64_MAX;
        break;
    default:
        *lo = 1, *hi = 0; /* not an integer store: nothing fits */
        break;
    }
}

static void store_int(const msm_conf_def_t *d, void *conf, int64_t v)
{
    void *p = field_ptr(d, conf);
    switch (d->cd_store) {
    case MSM__CONF_S_BOOL:
        *(bool *)p = v != 0;
        break;
    case MSM__CONF_S_CHAR:
        *(char *)p = (char)v;
        break;
    case MSM__CONF_S_SCHAR:
        *(signed char *)p = (signed char)v;
        break;
    case MSM__CONF_S_UCHAR:
        *(unsigned char *)p = (unsigned char)v;
        break;
    case MSM__CONF_S_SHORT:
        *(short *)p = (short)v;
        break;
    case MSM__CONF_S_USHORT:
        *(unsigned short *)p = (unsigned short)v;
        break;
    case MSM__CONF_S_INT:
        *(int *)p = (int)v;
        break;
    case MSM__CONF_S_UINT:
        *(unsigned *)p = (unsigned)v;
        break;
    case MSM__CONF_S_LONG:
        *(long *)p = (long)v;
        break;
    case MSM__CONF_S_ULONG:
        *(unsigned long *)p = (unsigned long)v;
        break;
    case MSM__CONF_S_LLONG:
        *(long long *)p = (long long)v;
        break;
    case MSM__CONF_S_ULLONG:
        *(unsigned long long *)p = (unsigned long long)v;
        break;
    default:
        break;
    }
}

static int64_t load_int(const msm_conf_def_t *d, const void *conf)
{
    const void *p = field_ptr(d, conf);
    switch (d->cd_store) {
    case MSM__CONF_S_BOOL:
        return *(const bool *)p;
    case MSM__CONF_S_CHAR:
        return *(const char *)p;
    case MSM__CONF_S_SCHAR:
        return *(const signed char *)p;
    case MSM__CONF_S_UCHAR:
        return *(const unsigned char *)p;
    case MSM__CONF_S_SHORT:
        return *(const short *)p;
    case MSM__CONF_S_USHORT:
        return *(const unsigned short *)p;
    case MSM__CONF_S_INT:
        return *(const int *)p;
    case MSM__CONF_S_UINT:
        return *(const unsigned *)p;
    case MSM__CONF_S_LONG:
        return *(const long *)p;
    case MSM__CONF_S_ULONG:
        return (int64_t) * (const unsigned long *)p;
    case MSM__CONF_S_LLONG:
        return *(const long long *)p;
    case MSM__CONF_S_ULLONG:
        return (int64_t) * (const unsigned long long *)p;
    default:
        return 0;
    }
}

/* ---- values ---- */

static int set_str(const msm_conf_def_t *d, void *conf, const char *s)
{
    char **p = field_ptr(d, conf);
    char *copy = NULL;
    if (s && !(copy = strdup(s)))
        return MSM_ERR_NOMEM;
    free(*p);
    *p = copy;
    return MSM_OK;
}

static int enum_index(const msm_conf_def_t *d, const char *s)
{
    for (int i = 0; d->cd_choices[i]; i++) {
        if (strcasecmp(d->cd_choices[i], s) == 0)
            return i;
    }
    return -1;
}

static void set_enum(const msm_conf_def_t *d, void *conf, int idx)
{
    if (d->cd_store == MSM__CONF_S_CSTR)
        *(const char **)field_ptr(d, conf) = d->cd_choices[idx];
    else
        *(int *)field_ptr(d, conf) = idx;
}

static int enum_fail(loader_t *ld, const msm_conf_def_t *d, const char *s)
{
    char words[256];
    size_t p = 0;
    words[0] = '\0';
    for (int i = 0; d->cd_choices[i] && p < sizeof(words); i++)
        p += (size_t)snprintf(words + p, sizeof(words) - p, "%s%s", i ? ", " : "",
                              d->cd_choices[i]);
    return fail(ld, d, MSM_ERR_INVALID, "\"%s\" is not one of: %s", s, words);
}

/* Sets property @p key to @p val in a NULL-terminated "key=value" array, replacing an
 * earlier value of the same key. */
static int props_set(const msm_conf_def_t *d, void *conf, const char *key, size_t klen,
                     const char *val, size_t vlen)
{
    char ***pp = field_ptr(d, conf);
    char **arr = *pp;
    size_t n = 0;
    char *kv = malloc(klen + vlen + 2);
    if (!kv)
        return MSM_ERR_NOMEM;
    memcpy(kv, key, klen);
    kv[klen] = '=';
    memcpy(kv + klen + 1, val, vlen);
    kv[klen + 1 + vlen] = '\0';
    for (; arr && arr[n]; n++) {
        if (strncmp(arr[n], key, klen) == 0 && arr[n][klen] == '=') {
            free(arr[n]);
            arr[n] = kv;
            return MSM_OK;
        }
    }
    char **grown = realloc(arr, (n + 2) * sizeof(*grown));
    if (!grown) {
        free(kv);
        return MSM_ERR_NOMEM;
    }
    grown[n] = kv;
    grown[n + 1] = NULL;
    *pp = grown;
    return MSM_OK;
}

static void props_free(char ***pp)
{
    for (char **a = *pp; a && *a; a++)
        free(*a);
    free(*pp);
    *pp = NULL;
}

static int check_int(loader_t *ld, const msm_conf_def_t *d, void *conf, int64_t v)
{
    if (v < d->cd_int_min || v > d->cd_int_max)
        return fail(ld, d, MSM_ERR_INVALID, "%lld is out of range [%lld, %lld]", (long long)v,
                    (long long)d->cd_int_min, (long long)d->cd_int_max);
    store_int(d, conf, v);
    return MSM_OK;
}

static int check_double(loader_t *ld, const msm_conf_def_t *d, void *conf, double v)
{
    if (!isfinite(v) || v < d->cd_dbl_min || v > d->cd_dbl_max)
        return fail(ld, d, MSM_ERR_INVALID, "%g is out of range [%g, %g]", v, d->cd_dbl_min,
                    d->cd_dbl_max);
    *(double *)field_ptr(d, conf) = v;
    return MSM_OK;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* "k=v,k=v" (environment) or "k=v" (one flag). */
static int apply_props_text(loader_t *ld, const msm_conf_def_t *d, void *conf, const char *s)
{
    while (*s) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        const char *eq = memchr(s, '=', len);
        if (len > 0) {
            if (!eq || eq == s)
                return fail(ld, d, MSM_ERR_INVALID, "\"%.*s\" is not key=value", (int)len, s);
            int rc = props_set(d, conf, s, (size_t)(eq - s), eq + 1, len - (size_t)(eq - s) - 1);
            if (rc != MSM_OK)
                return fail(ld, d, rc, "out of memory");
        }
        s += len + (end ? 1 : 0);
    }
    return MSM_OK;
}

/* A value given as text: an environment variable or a flag. */
static int apply_text(loader_t *ld, const msm_conf_def_t *d, void *conf, const char *s)
{
    switch (d->cd_type) {
    case MSM_CONF_T_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (!*s || isspace((unsigned char)*s) || *end)
            return fail(ld, d, MSM_ERR_INVALID, "\"%s\" is not an integer", s);
        if (errno == ERANGE)
            return fail(ld, d, MSM_ERR_INVALID, "%s is out of range [%lld, %lld]", s,
                        (long long)d->cd_int_min, (long long)d->cd_int_max);
        return check_int(ld, d, conf, v);
    }
    case MSM_CONF_T_BOOL: {
        int b;
        if (parse_bool(s, &b) != 0)
            return fail(ld, d, MSM_ERR_INVALID, "\"%s\" is not a boolean (true or false)", s);
        store_int(d, conf, b);
        return MSM_OK;
    }
    case MSM_CONF_T_DOUBLE: {
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (!*s || isspace((unsigned char)*s) || *end || errno == ERANGE || !isfinite(v))
            return fail(ld, d, MSM_ERR_INVALID, "\"%s\" is not a finite number", s);
        return check_double(ld, d, conf, v);
    }
    case MSM_CONF_T_STR:
        if (set_str(d, conf, s) != MSM_OK)
            return fail(ld, d, MSM_ERR_NOMEM, "out of memory");
        return MSM_OK;
    case MSM_CONF_T_ENUM: {
        int idx = enum_index(d, s);
        if (idx < 0)
            return enum_fail(ld, d, s);
        set_enum(d, conf, idx);
        return MSM_OK;
    }
    case MSM_CONF_T_PROPS:
        return apply_props_text(ld, d, conf, s);
    }
    return fail(ld, d, MSM_ERR_INVALID, "unknown type");
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "something else";
}

static int json_text(loader_t *ld, const msm_conf_def_t *d, const json_t *v, const char **out)
{
    if (!json_is_string(v))
        return fail(ld, d, MSM_ERR_INVALID, "expected a string, got %s", json_kind(v));
    *out = json_string_value(v);
    if (strlen(*out) != json_string_length(v))
        return fail(ld, d, MSM_ERR_INVALID, "the string contains a NUL character");
    return MSM_OK;
}

static int apply_json_props(loader_t *ld, const msm_conf_def_t *d, void *conf, json_t *v)
{
    if (!json_is_object(v))
        return fail(ld, d, MSM_ERR_INVALID, "expected an object of properties, got %s",
                    json_kind(v));
    const char *key;
    json_t *pv;
    json_object_foreach(v, key, pv)
    {
        char num[64];
        const char *val;
        if (json_is_string(pv)) {
            val = json_string_value(pv);
        } else if (json_is_integer(pv)) {
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(pv));
            val = num;
        } else if (json_is_real(pv)) {
            snprintf(num, sizeof(num), "%.17g", json_real_value(pv));
            val = num;
        } else if (json_is_boolean(pv)) {
            val = json_is_true(pv) ? "true" : "false";
        } else {
            return fail(ld, d, MSM_ERR_INVALID,
                        "property \"%s\": expected a string, number or boolean, got %s", key,
                        json_kind(pv));
        }
        if (!*key)
            return fail(ld, d, MSM_ERR_INVALID, "empty property name");
        if (props_set(d, conf, key, strlen(key), val, strlen(val)) != MSM_OK)
            return fail(ld, d, MSM_ERR_NOMEM, "out of memory");
    }
    return MSM_OK;
}

static int apply_json(loader_t *ld, const msm_conf_def_t *d, void *conf, json_t *v)
{
    const char *s;
    switch (d->cd_type) {
    case MSM_CONF_T_INT:
        if (!json_is_integer(v))
            return fail(ld, d, MSM_ERR_INVALID, "expected an integer, got %s", json_kind(v));
        return check_int(ld, d, conf, (int64_t)json_integer_value(v));
    case MSM_CONF_T_BOOL:
        if (!json_is_boolean(v))
            return fail(ld, d, MSM_ERR_INVALID, "expected true or false, got %s", json_kind(v));
        store_int(d, conf, json_is_true(v));
        return MSM_OK;
    case MSM_CONF_T_DOUBLE:
        if (!json_is_number(v))
            return fail(ld, d, MSM_ERR_INVALID, "expected a number, got %s", json_kind(v));
        return check_double(ld, d, conf, json_number_value(v));
    case MSM_CONF_T_STR:
        /* null is "unset", as msm_conf_to_json() shows an unset string: its output loads. */
        if (json_is_null(v))
            return set_str(d, conf, NULL);
        if (json_text(ld, d, v, &s) != MSM_OK)
            return MSM_ERR_INVALID;
        if (set_str(d, conf, s) != MSM_OK)
            return fail(ld, d, MSM_ERR_NOMEM, "out of memory");
        return MSM_OK;
    case MSM_CONF_T_ENUM: {
        if (json_text(ld, d, v, &s) != MSM_OK)
            return MSM_ERR_INVALID;
        int idx = enum_index(d, s);
        if (idx < 0)
            return enum_fail(ld, d, s);
        set_enum(d, conf, idx);
        return MSM_OK;
    }
    case MSM_CONF_T_PROPS:
        return apply_json_props(ld, d, conf, v);
    }
    return fail(ld, d, MSM_ERR_INVALID, "unknown type");
}

/* ---- the table itself ---- */

static int valid_name(const char *s)
{
    if (!s || !*s || *s == '.' || s[strlen(s) - 1] == '.')
        return 0;
    for (; *s; s++) {
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '.' &&
            *s != '-' && *s != '_')
            return 0;
        if (s[0] == '.' && s[1] == '.')
            return 0;
    }
    return 1;
}

static int check_table(loader_t *ld)
{
    snprintf(ld->src, sizeof(ld->src), "config table");
    for (size_t i = 0; i < ld->ndefs; i++) {
        const msm_conf_def_t *d = &ld->defs[i];
        if (!valid_name(d->cd_name))
            return fail(ld, NULL, MSM_ERR_INVALID, "bad setting name \"%s\"",
                        d->cd_name ? d->cd_name : "(null)");
        if (strlen(d->cd_name) >= MAX_NAME - 64)
            return fail(ld, d, MSM_ERR_INVALID, "name too long");
        for (size_t j = 0; j < i; j++) {
            const char *o = ld->defs[j].cd_name;
            size_t n = strlen(o);
            if (name_matches(d->cd_name, o, n))
                return fail(ld, d, MSM_ERR_INVALID, "defined twice (or as \"%s\")", o);
            size_t m = strlen(d->cd_name);
            if ((strncmp(o, d->cd_name, m) == 0 && o[m] == '.') ||
                (strncmp(d->cd_name, o, n) == 0 && d->cd_name[n] == '.'))
                return fail(ld, d, MSM_ERR_INVALID, "both a setting and a prefix of \"%s\"", o);
        }
        int64_t lo, hi;
        switch (d->cd_type) {
        case MSM_CONF_T_INT:
        case MSM_CONF_T_BOOL:
            store_limits(d->cd_store, &lo, &hi);
            if (d->cd_int_min > d->cd_int_max || d->cd_int_min < lo || d->cd_int_max > hi ||
                d->cd_int_def < d->cd_int_min || d->cd_int_def > d->cd_int_max)
                return fail(ld, d, MSM_ERR_INVALID, "bad range or default for its field type");
            break;
        case MSM_CONF_T_DOUBLE:
            if (d->cd_store != MSM__CONF_S_DOUBLE || !(d->cd_dbl_min <= d->cd_dbl_max) ||
                !(d->cd_dbl_def >= d->cd_dbl_min && d->cd_dbl_def <= d->cd_dbl_max))
                return fail(ld, d, MSM_ERR_INVALID, "bad range or default");
            break;
        case MSM_CONF_T_STR:
            if (d->cd_store != MSM__CONF_S_STR)
                return fail(ld, d, MSM_ERR_INVALID, "field is not a char *");
            break;
        case MSM_CONF_T_ENUM:
            if ((d->cd_store != MSM__CONF_S_INT && d->cd_store != MSM__CONF_S_CSTR) ||
                !d->cd_choices || !d->cd_choices[0] || !d->cd_str_def ||
                enum_index(d, d->cd_str_def) < 0)
                return fail(ld, d, MSM_ERR_INVALID, "bad choices or default");
            break;
        case MSM_CONF_T_PROPS:
            if (d->cd_store != MSM__CONF_S_PROPS)
                return fail(ld, d, MSM_ERR_INVALID, "field is not a char **");
            break;
        default:
            return fail(ld, d, MSM_ERR_INVALID, "unknown type");
        }
    }
    return MSM_OK;
}

void msm_conf_free(const msm_conf_def_t *defs, size_t ndefs, void *conf)
{
    for (size_t i = 0; i < ndefs; i++) {
        const msm_conf_def_t *d = &defs[i];
        if (d->cd_type == MSM_CONF_T_STR) {
            char **p = field_ptr(d, conf);
            free(*p);
            *p = NULL;
        } else if (d->cd_type == MSM_CONF_T_PROPS) {
            props_free(field_ptr(d, conf));
        }
    }
}

static int apply_defaults(loader_t *ld, void *conf)
{
    snprintf(ld->src, sizeof(ld->src), "default");
    for (size_t i = 0; i < ld->ndefs; i++) {
        const msm_conf_def_t *d = &ld->defs[i];
        switch (d->cd_type) {
        case MSM_CONF_T_INT:
        case MSM_CONF_T_BOOL:
            store_int(d, conf, d->cd_int_def);
            break;
        case MSM_CONF_T_DOUBLE:
            *(double *)field_ptr(d, conf) = d->cd_dbl_def;
            break;
        case MSM_CONF_T_STR:
            if (set_str(d, conf, d->cd_str_def) != MSM_OK)
                return fail(ld, d, MSM_ERR_NOMEM, "out of memory");
            break;
        case MSM_CONF_T_ENUM:
            set_enum(d, conf, enum_index(d, d->cd_str_def));
            break;
        case MSM_CONF_T_PROPS:
            break;
        }
    }
    return MSM_OK;
}

/* ---- the JSON file ---- */

static int walk_object(loader_t *ld, void *conf, json_t *obj, const char *prefix)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v)
    {
        char name[MAX_NAME];
        int n = snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", key);
        if (n < 0 || (size_t)n >= sizeof(name))
            return fail(ld, NULL, MSM_ERR_INVALID, "key \"%s%s%.40s...\" is too long", prefix,
                        *prefix ? "." : "", key);
        const msm_conf_def_t *d = find_exact(ld, name);
        int rc;
        if (d)
            rc = apply_json(ld, d, conf, v);
        else if (json_is_object(v) && has_children(ld, name))
            rc = walk_object(ld, conf, v, name);
        else if (has_children(ld, name))
            rc = fail(ld, NULL, MSM_ERR_INVALID,
                      "key \"%s\": expected an object (it holds settings), got %s", name,
                      json_kind(v));
        else
            rc = fail(ld, NULL, MSM_ERR_INVALID, "unknown key \"%s\"", name);
        if (rc != MSM_OK)
            return rc;
    }
    return MSM_OK;
}

static int apply_file(loader_t *ld, void *conf, const char *path)
{
    snprintf(ld->src, sizeof(ld->src), "config file %s", path);
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(ld, NULL, MSM_ERR_IO, "cannot open: %s", strerror(errno));
    json_error_t jerr;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!root)
        return fail(ld, NULL, MSM_ERR_PARSE, "line %d, column %d: %s", jerr.line, jerr.column,
                    jerr.text);
    int rc;
    if (!json_is_object(root))
        rc = fail(ld, NULL, MSM_ERR_INVALID, "the top level must be a JSON object, not %s",
                  json_kind(root));
    else
        rc = walk_object(ld, conf, root, "");
    json_decref(root);
    return rc;
}

/* ---- the environment ---- */

static int apply_env(loader_t *ld, void *conf, char *const *envp)
{
    for (size_t i = 0; i < ld->ndefs; i++) {
        const msm_conf_def_t *d = &ld->defs[i];
        char var[MAX_NAME];
        msm_conf_env_name(d->cd_name, var, sizeof(var));
        const char *v = env_lookup(envp, var);
        if (!v)
            continue;
        snprintf(ld->src, sizeof(ld->src), "environment %s", var);
        int rc = apply_text(ld, d, conf, v);
        if (rc != MSM_OK)
            return rc;
    }
    return MSM_OK;
}

/* ---- flags ---- */

static int is_word(const char *a, const char *w)
{
    return strcmp(a, w) == 0;
}

/* --help and --version win over everything else on the line, even over a bad flag. */
static int scan_help(int argc, char *const *argv)
{
    int rc = MSM_OK;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (is_word(a, "--"))
            break;
        if (is_word(a, "--help") || is_word(a, "-h"))
            return MSM_CONF_HELP;
        if (is_word(a, "--version") && rc == MSM_OK)
            rc = MSM_CONF_VERSION;
    }
    return rc;
}

static const msm_conf_def_t *find_props_prefix(const loader_t *ld, const char *name, size_t len,
                                               size_t *prefix_len)
{
    for (size_t i = 0; i < ld->ndefs; i++) {
        const msm_conf_def_t *d = &ld->defs[i];
        size_t n = strlen(d->cd_name);
        if (d->cd_type == MSM_CONF_T_PROPS && len > n + 1 && name[n] == '.' &&
            name_matches(d->cd_name, name, n)) {
            *prefix_len = n + 1;
            return d;
        }
    }
    return NULL;
}

/* Splits argv into flags (applied later, after the environment), the config path and
 * positional arguments. */
static int parse_argv(loader_t *ld, const msm_conf_src_t *src, flag_t *flags, int *nflags,
                      const char **config_path)
{
    int endopts = 0;
    int npos = 0;
    *nflags = 0;
    for (int i = 1; i < src->argc; i++) {
        const char *a = src->argv[i];
        if (!endopts && is_word(a, "--")) {
            endopts = 1;
            continue;
        }
        if (endopts || a[0] != '-' || a[1] == '\0') {
            if (!src->positional) {
                snprintf(ld->src, sizeof(ld->src), "command line");
                return fail(ld, NULL, MSM_ERR_INVALID, "unexpected argument \"%s\"", a);
            }
            src->positional[npos++] = a;
            continue;
        }
        snprintf(ld->src, sizeof(ld->src), "flag %.*s", MAX_NAME, a);
        if (a[1] != '-')
            return fail(ld, NULL, MSM_ERR_INVALID, "unknown flag (flags start with --)");
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (eq)
            snprintf(ld->src, sizeof(ld->src), "flag --%.*s", (int)(len < MAX_NAME ? len : MAX_NAME),
                     name);
        const char *value = eq ? eq + 1 : NULL;
        if (len == 7 && strncmp(name, "version", 7) == 0)
            continue;
        int is_config = len == 6 && strncmp(name, "config", 6) == 0;
        const msm_conf_def_t *d = is_config ? NULL : find_flag(ld, name, len);
        flag_t *fl = &flags[*nflags];
        memset(fl, 0, sizeof(*fl));
        fl->fl_arg = a;
        if (!d && !is_config && len > 3 && strncmp(name, "no", 2) == 0 &&
            same_sep_char(name[2], '-')) {
            const msm_conf_def_t *b = find_flag(ld, name + 3, len - 3);
            if (b && b->cd_type == MSM_CONF_T_BOOL) {
                if (value)
                    return fail(ld, b, MSM_ERR_INVALID, "--%.*s takes no value", (int)len, name);
                fl->fl_def = b;
                fl->fl_value = "false";
                (*nflags)++;
                continue;
            }
        }
        size_t plen = 0;
        if (!d && !is_config && (d = find_props_prefix(ld, name, len, &plen)) != NULL) {
            fl->fl_key = name + plen;
            fl->fl_keylen = len - plen;
        }
        if (!d && !is_config)
            return fail(ld, NULL, MSM_ERR_INVALID, "unknown flag");
        if (!value && d && d->cd_type == MSM_CONF_T_BOOL) {
            value = "true";
        } else if (!value) {
            /* The next argument is the value unless it looks like another flag. */
            if (i + 1 >= src->argc || strncmp(src->argv[i + 1], "--", 2) == 0)
                return fail(ld, d, MSM_ERR_INVALID, "needs a value");
            value = src->argv[++i];
        }
        if (is_config) {
            *config_path = value;
            continue;
        }
        fl->fl_def = d;
        fl->fl_value = value;
        (*nflags)++;
    }
    if (src->npositional)
        *src->npositional = npos;
    return MSM_OK;
}

static int apply_flags(loader_t *ld, void *conf, const flag_t *flags, int nflags)
{
    for (int i = 0; i < nflags; i++) {
        const flag_t *fl = &flags[i];
        const char *eq = strchr(fl->fl_arg, '=');
        int len = eq ? (int)(eq - fl->fl_arg) : (int)strlen(fl->fl_arg);
        snprintf(ld->src, sizeof(ld->src), "flag %.*s", len < MAX_NAME ? len : MAX_NAME,
                 fl->fl_arg);
        int rc;
        if (fl->fl_key) {
            rc = props_set(fl->fl_def, conf, fl->fl_key, fl->fl_keylen, fl->fl_value,
                           strlen(fl->fl_value));
            if (rc != MSM_OK)
                rc = fail(ld, fl->fl_def, rc, "out of memory");
        } else {
            rc = apply_text(ld, fl->fl_def, conf, fl->fl_value);
        }
        if (rc != MSM_OK)
            return rc;
    }
    return MSM_OK;
}

int msm_conf_load(const msm_conf_def_t *defs, size_t ndefs, void *conf,
                  const msm_conf_src_t *src, char *errbuf, size_t errbuf_size)
{
    loader_t ld = {.defs = defs, .ndefs = ndefs, .base = conf, .err = errbuf, .errn = errbuf_size};
    flag_t *flags = NULL;
    const char *config_path = NULL;
    int nflags = 0;
    if (errbuf && errbuf_size)
        errbuf[0] = '\0';
    int rc = check_table(&ld);
    if (rc != MSM_OK)
        return rc; /* a programming error: conf is left untouched */
    /* Owned fields start empty so that any failure below can free them. */
    for (size_t i = 0; i < ndefs; i++) {
        if (defs[i].cd_type == MSM_CONF_T_STR)
            *(char **)field_ptr(&defs[i], conf) = NULL;
        else if (defs[i].cd_type == MSM_CONF_T_PROPS)
            *(char ***)field_ptr(&defs[i], conf) = NULL;
    }
    if (src->npositional)
        *src->npositional = 0;
    rc = scan_help(src->argc, src->argv);
    if (rc != MSM_OK)
        return rc;
    flags = calloc((size_t)(src->argc > 0 ? src->argc : 1), sizeof(*flags));
    if (!flags) {
        rc = MSM_ERR_NOMEM;
        goto fail;
    }
    if ((rc = apply_defaults(&ld, conf)) != MSM_OK)
        goto fail;
    if ((rc = parse_argv(&ld, src, flags, &nflags, &config_path)) != MSM_OK)
        goto fail;
    if (!config_path)
        config_path = env_lookup(src->envp, "MSM_CONFIG");
    if (config_path && *config_path && (rc = apply_file(&ld, conf, config_path)) != MSM_OK)
        goto fail;
    if ((rc = apply_env(&ld, conf, src->envp)) != MSM_OK)
        goto fail;
    if ((rc = apply_flags(&ld, conf, flags, nflags)) != MSM_OK)
        goto fail;
    free(flags);
    return MSM_OK;
fail:
    free(flags);
    msm_conf_free(defs, ndefs, conf);
    if (src->npositional)
        *src->npositional = 0;
    if (rc == MSM_ERR_NOMEM && errbuf && errbuf_size && !errbuf[0])
        snprintf(errbuf, errbuf_size, "out of memory");
    return rc;
}

int msm_conf_load_argv(const msm_conf_def_t *defs, size_t ndefs, void *conf, int argc,
                       char *const *argv, char *errbuf, size_t errbuf_size)
{
    msm_conf_src_t src = {.argc = argc, .argv = argv, .envp = environ};
    return msm_conf_load(defs, ndefs, conf, &src, errbuf, errbuf_size);
}

/* ---- help ---- */

static void flag_column(const msm_conf_def_t *d, char *buf, size_t n)
{
    switch (d->cd_type) {
    case MSM_CONF_T_INT:
        snprintf(buf, n, "--%s INT", d->cd_name);
        break;
    case MSM_CONF_T_BOOL:
        snprintf(buf, n, "--[no-]%s", d->cd_name);
        break;
    case MSM_CONF_T_DOUBLE:
        snprintf(buf, n, "--%s NUM", d->cd_name);
        break;
    case MSM_CONF_T_STR:
        snprintf(buf, n, "--%s STR", d->cd_name);
        break;
    case MSM_CONF_T_PROPS:
        snprintf(buf, n, "--%s K=V", d->cd_name);
        break;
    case MSM_CONF_T_ENUM: {
        size_t p = (size_t)snprintf(buf, n, "--%s ", d->cd_name);
        for (int i = 0; d->cd_choices[i] && p < n; i++)
            p += (size_t)snprintf(buf + p, n - p, "%s%s", i ? "|" : "", d->cd_choices[i]);
        break;
    }
    }
}

static void default_column(const msm_conf_def_t *d, char *buf, size_t n)
{
    switch (d->cd_type) {
    case MSM_CONF_T_INT:
        snprintf(buf, n, "%lld", (long long)d->cd_int_def);
        break;
    case MSM_CONF_T_BOOL:
        snprintf(buf, n, "%s", d->cd_int_def ? "true" : "false");
        break;
    case MSM_CONF_T_DOUBLE:
        snprintf(buf, n, "%g", d->cd_dbl_def);
        break;
    case MSM_CONF_T_STR:
        if (!d->cd_str_def)
            snprintf(buf, n, "-");
        else if (!*d->cd_str_def)
            snprintf(buf, n, "\"\"");
        else if (d->cd_flags & MSM_CONF_F_SECRET)
            snprintf(buf, n, "***");
        else
            msm_conf_mask_url(d->cd_str_def, buf, n);
        break;
    case MSM_CONF_T_ENUM:
        snprintf(buf, n, "%s", d->cd_str_def);
        break;
    case MSM_CONF_T_PROPS:
        snprintf(buf, n, "-");
        break;
    }
}

static void help_extra(const msm_conf_def_t *d, char *buf, size_t n)
{
    int64_t lo, hi;
    buf[0] = '\0';
    if (d->cd_type == MSM_CONF_T_INT) {
        store_limits(d->cd_store, &lo, &hi);
        if (d->cd_int_min != lo || d->cd_int_max != hi)
            snprintf(buf, n, " (%lld..%lld)", (long long)d->cd_int_min, (long long)d->cd_int_max);
    } else if (d->cd_type == MSM_CONF_T_DOUBLE) {
        snprintf(buf, n, " (%g..%g)", d->cd_dbl_min, d->cd_dbl_max);
    } else if (d->cd_type == MSM_CONF_T_PROPS) {
        snprintf(buf, n, " (repeatable; or --%s.KEY=V; env \"k=v,k=v\")", d->cd_name);
    }
}

static int clamp_width(size_t w, int cap)
{
    return w > (size_t)cap ? cap : (int)w;
}

void msm_conf_help(const msm_conf_def_t *defs, size_t ndefs, FILE *out, const char *progname,
                   const char *summary)
{
    char flag[MAX_NAME * 2], env[MAX_NAME], def[MAX_NAME], extra[MAX_NAME];
    size_t wf = strlen("--config FILE"), we = strlen("MSM_CONFIG"), wd = strlen("DEFAULT");
    for (size_t i = 0; i < ndefs; i++) {
        flag_column(&defs[i], flag, sizeof(flag));
        msm_conf_env_name(defs[i].cd_name, env, sizeof(env));
        default_column(&defs[i], def, sizeof(def));
        wf = strlen(flag) > wf ? strlen(flag) : wf;
        we = strlen(env) > we ? strlen(env) : we;
        wd = strlen(def) > wd ? strlen(def) : wd;
    }
    int f = clamp_width(wf, 40), e = clamp_width(we, 32), w = clamp_width(wd, 28);
    fprintf(out, "Usage: %s [options]\n", progname ? progname : "msm");
    if (summary && *summary)
        fprintf(out, "%s\n", summary);
    fprintf(out, "\nEach setting comes from, lowest precedence first: its default, the JSON\n"
                 "config file (nested objects are dotted names: {\"http\":{\"port\":1}} is\n"
                 "http.port), its environment variable, its flag (--a.b V, --a.b=V, --a-b V).\n\n");
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", f, "FLAG", e, "ENVIRONMENT", w, "DEFAULT",
            "DESCRIPTION");
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", f, "--config FILE", e, "MSM_CONFIG", w, "-",
            "JSON config file");
    for (size_t i = 0; i < ndefs; i++) {
        const msm_conf_def_t *d = &defs[i];
        flag_column(d, flag, sizeof(flag));
        msm_conf_env_name(d->cd_name, env, sizeof(env));
        default_column(d, def, sizeof(def));
        help_extra(d, extra, sizeof(extra));
        fprintf(out, "  %-*s  %-*s  %-*s  %s%s\n", f, flag, e, env, w, def,
                d->cd_help ? d->cd_help : "", extra);
    }
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", f, "--help, -h", e, "", w, "",
            "print this help and exit");
    fprintf(out, "  %-*s  %-*s  %-*s  %s\n", f, "--version", e, "", w, "",
            "print the version and exit");
}

/* ---- JSON for /debug/info ---- */

char *msm_conf_mask_url(const char *s, char *buf, size_t n)
{
    size_t o = 0;
    if (n == 0)
        return buf;
    /* c is evaluated exactly once, even when the buffer is full. */
#define PUT(c)                                                                                     \
    do {                                                                                           \
        char c_ = (c);                                                                             \
        if (o + 1 < n)                                                                             \
            buf[o++] = c_;                                                                         \
    } while (0)
    while (*s) {
        const char *sep = strstr(s, "://");
        if (!sep) {
            while (*s)
                PUT(*s++);
            break;
        }
        const char *start = sep + 3;
        while (s < start)
            PUT(*s++);
        /* The authority ends at a path, query, fragment, or the next item of a list. */
        size_t end = strcspn(start, "?#, \t\n");
        size_t slash = strcspn(start, "/?#, \t\n");
        const char *at = NULL;
        for (size_t i = 0; i < slash; i++)
            at = start[i] == '@' ? start + i : at;
        if (!at && memchr(start, ':', slash)) {
            /* A password with an unescaped '/': its '@' lies beyond the first slash. */
            for (size_t i = slash; i < end; i++)
                at = start[i] == '@' ? start + i : at;
        }
        const char *colon = at ? memchr(start, ':', (size_t)(at - start)) : NULL;
        if (colon) {
            while (s <= colon)
                PUT(*s++);
            PUT('*');
            PUT('*');
            PUT('*');
            s = at;
        }
    }
#undef PUT
    buf[o] = '\0';
    return buf;
}

static int secret_prop(const char *kv)
{
    const char *eq = strchr(kv, '=');
    size_t klen = eq ? (size_t)(eq - kv) : strlen(kv);
    static const char *const words[] = {"password", "secret", "token", "key"};
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= klen; i++) {
            if (strncasecmp(kv + i, words[w], wl) == 0)
                return 1;
        }
    }
    return 0;
}

static json_t *masked_string(const char *s)
{
    size_t n = strlen(s) + 4;
    char *buf = malloc(n);
    if (!buf)
        return NULL;
    json_t *j = json_string(msm_conf_mask_url(s, buf, n));
    free(buf);
    return j;
}

static json_t *value_json(const msm_conf_def_t *d, const void *conf)
{
    const void *p = field_ptr(d, conf);
    switch (d->cd_type) {
    case MSM_CONF_T_INT:
        return json_integer((json_int_t)load_int(d, conf));
    case MSM_CONF_T_BOOL:
        return json_boolean(load_int(d, conf));
    case MSM_CONF_T_DOUBLE:
        return json_real(*(const double *)p);
    case MSM_CONF_T_STR: {
        const char *s = *(char *const *)p;
        if (!s)
            return json_null();
        if ((d->cd_flags & MSM_CONF_F_SECRET) && *s)
            return json_string("***");
        return masked_string(s);
    }
    case MSM_CONF_T_ENUM: {
        if (d->cd_store == MSM__CONF_S_CSTR) {
            const char *s = *(const char *const *)p;
            return s ? json_string(s) : json_null();
        }
        int idx = *(const int *)p;
        for (int i = 0; d->cd_choices[i]; i++) {
            if (i == idx)
                return json_string(d->cd_choices[i]);
        }
        return json_integer(idx);
    }
    case MSM_CONF_T_PROPS: {
        json_t *obj = json_object();
        for (char *const *a = *(char **const *)p; obj && a && *a; a++) {
            const char *eq = strchr(*a, '=');
            char key[MAX_NAME];
            snprintf(key, sizeof(key), "%.*s", (int)(eq ? eq - *a : (long)strlen(*a)), *a);
            json_t *v = (secret_prop(*a) || (d->cd_flags & MSM_CONF_F_SECRET))
                            ? json_string("***")
                            : masked_string(eq ? eq + 1 : "");
            if (!v || json_object_set_new(obj, key, v) != 0) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    }
    return json_null();
}

json_t *msm_conf_to_json(const msm_conf_def_t *defs, size_t ndefs, const void *conf)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    for (size_t i = 0; i < ndefs; i++) {
        char name[MAX_NAME];
        snprintf(name, sizeof(name), "%s", defs[i].cd_name);
        json_t *parent = root;
        char *part = name, *dot;
        while (parent && (dot = strchr(part, '.')) != NULL) {
            *dot = '\0';
            json_t *child = json_object_get(parent, part);
            if (!child) {
                child = json_object();
                if (!child || json_object_set_new(parent, part, child) != 0)
                    goto fail;
            }
            parent = child;
            part = dot + 1;
        }
        json_t *v = value_json(&defs[i], conf);
        if (!v || json_object_set_new(parent, part, v) != 0)
            goto fail;
    }
    return root;
fail:
    json_decref(root);
    return NULL;
}
