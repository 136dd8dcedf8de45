/* SPDX-License-Identifier: MIT */
/* JSON scanning and string writing without a tree (msm/json_scan.h). The frontend's batch
 * publish and the lambda SDK's batch push read their bodies with it; what it gives up on,
 * their jansson paths read. */
#include "msm/json_scan.h"

#include "msm/err.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INT_DIGITS 18  /* below int64's range whatever the digits */
#define MAX_REAL_CHARS 300 /* a real without exponent this short cannot overflow a double */
#define REAL_TEXT_MAX  40  /* "%.17g" of a double, ".0" and the NUL fit */

static int as_jansson(const msm_json_scan_t *s)
{
    return (s->flags & MSM_JSON_SCAN_AS_JANSSON) != 0;
}

void msm_json_scan_ws(msm_json_scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

int msm_json_scan_eat(msm_json_scan_t *s, char c)
{
    msm_json_scan_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* ---- strings ---- */

/* One UTF-8 sequence at p (first byte >= 0x80), as jansson accepts it: no overlong forms, no
 * surrogates, nothing above U+10FFFF. @returns its length, 0 when invalid. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], n, v;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, v = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, v = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, v = c & 0x07;
    else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    for (unsigned i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10ffff ||
        (v >= 0xd800 && v <= 0xdfff))
        return 0;
    return n;
}

/* ASCII character @p c as json_dumps writes it in a string. */
static char *put_ascii_escaped(char *out, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    static const char named_in[] = "\"\\\b\f\n\r\t", named_out[] = "\"\\bfnrt";
    const char *named = c ? memchr(named_in, c, sizeof(named_in) - 1) : NULL;
    if (named) {
        out[0] = '\\';
        out[1] = named_out[named - named_in];
        return out + 2;
    }
    if (c >= 0x20) {
        *out = (char)c;
        return out + 1;
    }
    memcpy(out, "\\u00", 4);
    out[4] = hex[c >> 4];
    out[5] = hex[c & 0xf];
    return out + 6;
}

static char *put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        *out++ = (char)cp;
    } else if (cp < 0x800) {
        *out++ = (char)(0xc0 | (cp >> 6));
        *out++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *out++ = (char)(0xe0 | (cp >> 12));
        *out++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *out++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *out++ = (char)(0xf0 | (cp >> 18));
        *out++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *out++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *out++ = (char)(0x80 | (cp & 0x3f));
    }
    return out;
}

/* The four hex digits of the \u escape at s->p, which it passes. */
static int hex4(msm_json_scan_t *s, uint32_t *v)
{
    if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u')
        return -1;
    *v = 0;
    for (int i = 2; i < 6; i++) {
        char c = s->p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16;
        if (d == 16)
            return -1;
        *v = *v << 4 | d;
    }
    s->p += 6;
    return 0;
}

/* The \u escape at s->p (a surrogate pair as one character). */
static int unicode_escape(msm_json_scan_t *s, int decode)
{
    if (!(s->flags & (MSM_JSON_SCAN_UNICODE | MSM_JSON_SCAN_AS_JANSSON)))
        return -1;
    const char *from = s->p;
    uint32_t cp, low;
    if (hex4(s, &cp) != 0 || (cp >= 0xdc00 && cp <= 0xdfff))
        return -1;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (hex4(s, &low) != 0 || low < 0xdc00 || low > 0xdfff)
            return -1;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
    }
    if (cp == 0) /* jansson refuses it without JSON_ALLOW_NUL */
        return -1;
    if (decode || (as_jansson(s) && cp >= 0x80)) {
        s->out = put_utf8(s->out, cp);
    } else if (as_jansson(s)) {
        s->out = put_ascii_escaped(s->out, (unsigned char)cp);
    } else {
        memcpy(s->out, from, (size_t)(s->p - from));
        s->out += s->p - from;
    }
    return 0;
}

/* The escape at s->p (its backslash): decoded, copied as written or as jansson prints it. */
static int escape(msm_json_scan_t *s, int decode)
{
    if (s->end - s->p < 2)
        return -1;
    if (s->p[1] == 'u')
        return unicode_escape(s, decode);
    static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
    const char *at = s->p[1] ? strchr(esc_in, s->p[1]) : NULL;
    if (!at)
        return -1;
    char c = esc_out[at - esc_in];
    if (decode) {
        *s->out++ = c;
    } else if (as_jansson(s)) {
        s->out = put_ascii_escaped(s->out, (unsigned char)c);
    } else {
        *s->out++ = '\\';
        *s->out++ = s->p[1];
    }
    s->p += 2;
    return 0;
}

char *msm_json_scan_string(msm_json_scan_t *s, int decode, int *escaped)
{
    if (s->p >= s->end || *s->p != '"')
        return NULL;
    char *start = s->out;
    if (!decode)
        *s->out++ = '"';
    s->p++;
    for (;;) {
        const char *run = s->p;
        while (s->p < s->end && (unsigned char)*s->p >= 0x20 && (unsigned char)*s->p < 0x80 &&
               *s->p != '"' && *s->p != '\\')
            s->p++;
        memcpy(s->out, run, (size_t)(s->p - run));
        s->out += s->p - run;
        if (s->p >= s->end)
            return NULL;
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            *s->out++ = decode ? '\0' : '"';
            return start;
        }
        if (c < 0x20)
            return NULL;
        if (c >= 0x80) {
            size_t n = utf8_len((const unsigned char *)s->p, (const unsigned char *)s->end);
            if (!n)
                return NULL;
            memcpy(s->out, s->p, n);
            s->out += n;
            s->p += n;
            continue;
        }
        if (escape(s, decode) != 0) /* a backslash */
            return NULL;
        if (escaped)
            *escaped = 1;
    }
}

char *msm_json_scan_name(msm_json_scan_t *s)
{
    msm_json_scan_ws(s);
    char *name = msm_json_scan_string(s, 1, NULL);
    return name && msm_json_scan_eat(s, ':') ? name : NULL;
}

int msm_json_scan_member(msm_json_scan_t *s, size_t *count, char **name)
{
    if (*count == 0) {
        if (!msm_json_scan_eat(s, '{'))
            return -1;
        if (msm_json_scan_eat(s, '}'))
            return 0;
    } else if (!msm_json_scan_eat(s, ',')) {
        return msm_json_scan_eat(s, '}') ? 0 : -1;
    }
    if (!(*name = msm_json_scan_name(s)))
        return -1;
    msm_json_scan_ws(s);
    (*count)++;
    return 1;
}

int msm_json_append_string(msm_buf_t *b, const char *str, size_t len)
{
    /* At most 6 bytes per byte ("\u001F"), the quotes and the NUL. */
    if (len > (SIZE_MAX - 3) / 6 || msm_buf_reserve(b, len * 6 + 3) != MSM_OK)
        return MSM_ERR_NOMEM;
    char *out = (char *)b->data + b->len;
    const unsigned char *p = (const unsigned char *)str, *end = p + len;
    *out++ = '"';
    while (p < end) {
        const unsigned char *run = p;
        while (p < end && *p >= 0x20 && *p != '"' && *p != '\\')
            p++;
        memcpy(out, run, (size_t)(p - run));
        out += p - run;
        if (p < end)
            out = put_ascii_escaped(out, *p++);
    }
    *out++ = '"';
    *out = '\0';
    b->len = (size_t)(out - (char *)b->data);
    return MSM_OK;
}

/* ---- numbers ---- */

static int is_digit(const msm_json_scan_t *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

/* One or more digits. */
static int skip_digits(msm_json_scan_t *s)
{
    if (!is_digit(s))
        return -1;
    while (is_digit(s))
        s->p++;
    return 0;
}

/* jansson (2.14 and before) prints a real as "%.17g", adds ".0" when that looks like an
 * integer and drops the exponent's '+' and leading zeros. @returns the length written to
 * @p out, or -1 (not a plain C-locale text). */
static int real_text(double v, char out[REAL_TEXT_MAX])
{
    int n = snprintf(out, REAL_TEXT_MAX - 2, "%.17g", v);
    if (n < 0 || n >= REAL_TEXT_MAX - 2 || strspn(out, "-+.e0123456789") != (size_t)n)
        return -1;
    char *e = strchr(out, 'e');
    if (!e && !strchr(out, '.')) {
        memcpy(out + n, ".0", 3);
        return n + 2;
    }
    if (!e)
        return n;
    char *digits = e + 1 + (e[1] == '-'), *from = e + 2;
    while (*from == '0')
        from++;
    memmove(digits, from, strlen(from) + 1);
    return (int)strlen(out);
}

/* Whether this jansson prints reals as real_text() does (newer ones print the shortest
 * text that reads back): checked once on values that tell the two apart. */
static int real_text_agrees;
static pthread_once_t real_text_checked = PTHREAD_ONCE_INIT;

static void check_real_text(void)
{
    static const double probes[] = {0.1, 1299.5, 1e5, -0.0, 1e16, 1e-5, 1e22, 5e-324};
    int agrees = 1;
    for (size_t i = 0; agrees && i < sizeof(probes) / sizeof(probes[0]); i++) {
        char mine[REAL_TEXT_MAX];
        json_t *real = json_real(probes[i]);
        char *theirs = real ? json_dumps(real, JSON_ENCODE_ANY) : NULL;
        int n = real_text(probes[i], mine);
        agrees = theirs && n >= 0 && strcmp(mine, theirs) == 0;
        free(theirs);
        json_decref(real);
    }
    real_text_agrees = agrees;
}

/* The real at @p text as jansson prints it, or -1 (it would refuse it, or print it another
 * way). */
static int put_real(msm_json_scan_t *s, const char *text, size_t len)
{
    pthread_once(&real_text_checked, check_real_text);
    if (!real_text_agrees)
        return -1;
    char in[MAX_REAL_CHARS + 1], out[REAL_TEXT_MAX];
    memcpy(in, text, len);
    in[len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(in, &end);
    /* Stopping short: a locale without '.'. An overflow: jansson refuses it. */
    if (end != in + len || ((v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE))
        return -1;
    int n = real_text(v, out);
    if (n < 0 || s->out_end - s->out < n)
        return -1;
    memcpy(s->out, out, (size_t)n);
    s->out += n;
    return 0;
}

int msm_json_scan_number(msm_json_scan_t *s, int64_t *int_value)
{
    const char *start = s->p;
    if (s->p < s->end && *s->p == '-') {
        if (int_value)
            return -1;
        s->p++;
    }
    if (!is_digit(s))
        return -1;
    if (*s->p == '0')
        s->p++;
    else
        while (is_digit(s))
            s->p++;
    size_t digits = (size_t)(s->p - start);
    int real = 0;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (skip_digits(s) != 0)
            return -1;
        real = 1;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        if (!as_jansson(s))
            return -1;
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (skip_digits(s) != 0)
            return -1;
        real = 1;
    }
    size_t len = (size_t)(s->p - start);
    if ((!real && digits > MAX_INT_DIGITS) || len > MAX_REAL_CHARS)
        return -1;
    if (int_value) {
        if (real)
            return -1;
        int64_t v = 0;
        for (const char *q = start; q < s->p; q++)
            v = v * 10 + (*q - '0');
        *int_value = v;
        return 0;
    }
    if (as_jansson(s) && real)
        return put_real(s, start, len);
    if (as_jansson(s) && len == 2 && start[0] == '-' && start[1] == '0') {
        *s->out++ = '0'; /* an integer, printed from its value */
        return 0;
    }
    memcpy(s->out, start, len);
    s->out += len;
    return 0;
}

/* ---- whole values ---- */

static int literal(msm_json_scan_t *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    memcpy(s->out, word, n);
    s->out += n;
    s->p += n;
    return 0;
}

/* Past a container's opening @p open (copied): 1 when @p close follows at once (copied too). */
static int opens_empty(msm_json_scan_t *s, char open, char close)
{
    s->p++;
    *s->out++ = open;
    if (!msm_json_scan_eat(s, close))
        return 0;
    *s->out++ = close;
    return 1;
}

static int closes(msm_json_scan_t *s, char close)
{
    if (!msm_json_scan_eat(s, close))
        return -1;
    *s->out++ = close;
    return 0;
}

/* An object's member names as written out, checked for duplicates as jansson's
 * JSON_REJECT_DUPLICATES does: as jansson prints them, one name has one spelling. */
static int object(msm_json_scan_t *s, int depth)
{
    const char *names[MSM_JSON_SCAN_MAX_KEYS];
    size_t lens[MSM_JSON_SCAN_MAX_KEYS], n = 0;
    if (opens_empty(s, '{', '}'))
        return 0;
    do {
        if (n > 0)
            *s->out++ = ',';
        msm_json_scan_ws(s);
        int escaped = 0;
        char *name = msm_json_scan_string(s, 0, &escaped);
        if (!name || (escaped && !as_jansson(s)) || n == MSM_JSON_SCAN_MAX_KEYS)
            return -1;
        size_t len = (size_t)(s->out - name);
        for (size_t i = 0; i < n; i++) {
            if (lens[i] == len && memcmp(names[i], name, len) == 0)
                return -1;
        }
        names[n] = name;
        lens[n++] = len;
        if (!msm_json_scan_eat(s, ':'))
            return -1;
        *s->out++ = ':';
        if (msm_json_scan_value(s, depth + 1) != 0)
            return -1;
    } while (msm_json_scan_eat(s, ','));
    return closes(s, '}');
}

static int array(msm_json_scan_t *s, int depth)
{
    if (opens_empty(s, '[', ']'))
        return 0;
    int first = 1;
    do {
        if (!first)
            *s->out++ = ',';
        first = 0;
        if (msm_json_scan_value(s, depth + 1) != 0)
            return -1;
    } while (msm_json_scan_eat(s, ','));
    return closes(s, ']');
}

int msm_json_scan_value(msm_json_scan_t *s, int depth)
{
    msm_json_scan_ws(s);
    if (s->p >= s->end || depth > MSM_JSON_SCAN_MAX_DEPTH)
        return -1;
    switch (*s->p) {
    case '{':
        return object(s, depth);
    case '[':
        return array(s, depth);
    case '"':
        return msm_json_scan_string(s, 0, NULL) ? 0 : -1;
    case 't':
        return literal(s, "true");
    case 'f':
        return literal(s, "false");
    case 'n':
        return literal(s, "null");
    default:
        return msm_json_scan_number(s, NULL);
    }
}
