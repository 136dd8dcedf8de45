/* SPDX-License-Identifier: MIT */
/* Pub/Sub's filter language (docs/filter.md): a recursive-descent parser into a flat array of
 * nodes, and a matcher that walks it. Whitespace may separate any two tokens.
 *
 *   filter    := term { "AND" term } | term { "OR" term }   (mixing needs parentheses)
 *   term      := ( "NOT" | "-" ) term | "(" filter ")" | condition
 *   condition := "attributes" "." key ( "=" | "!=" ) string
 *              | "attributes" ":" key
 *              | "hasPrefix" "(" "attributes" "." key "," string ")"
 *   key       := [A-Za-z0-9_-]+ | string
 *   string    := "..." or '...' with the escapes of CEL (\n \" \xHH \ooo \uHHHH ...) */
#include "msm/filter.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NONE UINT32_MAX

typedef enum {
    N_AND,    /* every operand (child, then next, next...) */
    N_OR,     /* any operand */
    N_NOT,    /* not child */
    N_HAS,    /* attributes:key */
    N_EQ,     /* attributes.key = "value" */
    N_NE,     /* attributes.key != "value": also true without the key, as in Pub/Sub */
    N_PREFIX, /* hasPrefix(attributes.key, "value") */
} node_kind_t;

typedef struct {
    uint8_t kind;
    uint32_t child; /* AND, OR, NOT: the first operand */
    uint32_t next;  /* the next operand of the enclosing AND or OR */
    uint32_t key;   /* conditions: offsets into strs */
    uint32_t value;
    uint32_t value_len; /* hasPrefix compares this many bytes */
} node_t;

struct msm_filter_s {
    node_t *nodes;
    char *strs; /* keys and literals, decoded and NUL-terminated, back to back */
    uint32_t root;
};

/* ---- parsing ---- */

typedef struct {
    const char *s; /* the text, NUL-terminated: s[len] can always be read */
    size_t len;
    size_t pos;
    int depth;
    node_t *nodes;
    size_t nnodes, cap;
    char *strs; /* allocated once: see msm_filter_parse() */
    size_t nstrs, strs_cap;
    int failed, nomem;
    size_t err_at;
    char why[160];
} parser_t;

static void fail(parser_t *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first error only: the ones after it follow from it. */
static void fail(parser_t *p, size_t at, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = 1;
    p->err_at = at;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof(p->why), fmt, ap);
    va_end(ap);
}

static void fail_nomem(parser_t *p)
{
    fail(p, p->pos, "out of memory");
    p->nomem = 1;
}

/* ASCII classes by hand: <ctype.h> depends on the locale and wants unsigned chars. */
static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_word_char(char c)
{
    return is_alpha(c) || is_digit(c) || c == '_';
}

/* Pub/Sub: a key of other characters must be written as a string literal. */
static int is_key_char(char c)
{
    return is_word_char(c) || c == '-';
}

static void skip_ws(parser_t *p)
{
    for (char c = p->s[p->pos];
         c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
         c = p->s[++p->pos])
        ;
}

/* The length of the word (keyword or identifier) at the current position, 0 when none. */
static size_t word_len(const parser_t *p)
{
    size_t n = 0;
    if (is_alpha(p->s[p->pos]) || p->s[p->pos] == '_')
        while (is_word_char(p->s[p->pos + n]))
            n++;
    return n;
}

/* Whether the word at the current position is exactly @p w ("NOTE" is not "NOT"). */
static int at_word(const parser_t *p, const char *w)
{
    size_t n = word_len(p);
    return n == strlen(w) && memcmp(p->s + p->pos, w, n) == 0;
}

/* Says what was found instead of @p expected, with a hint for lower-case operators. */
static void fail_unexpected(parser_t *p, const char *expected)
{
    const char *at = p->s + p->pos;
    size_t n = word_len(p);
    char found[64];
    const char *hint = "";
    if (!*at) {
        snprintf(found, sizeof(found), "the end of the filter");
    } else if (n) {
        snprintf(found, sizeof(found), "\"%.*s\"%s", (int)(n > 24 ? 24 : n), at,
                 n > 24 ? "..." : "");
        if ((n == 3 && (strncasecmp(at, "AND", 3) == 0 || strncasecmp(at, "NOT", 3) == 0)) ||
            (n == 2 && strncasecmp(at, "OR", 2) == 0))
            hint = " (AND, OR and NOT are written in capitals)";
    } else if (*at == '"' || *at == '\'') {
        snprintf(found, sizeof(found), "a string literal");
    } else if (*at > ' ' && *at < 0x7f) {
        snprintf(found, sizeof(found), "'%c'", *at);
    } else {
        snprintf(found, sizeof(found), "byte 0x%02x", (unsigned char)*at);
    }
    fail(p, p->pos, "expected %s, found %s%s", expected, found, hint);
}

static uint32_t node_new(parser_t *p, node_kind_t kind)
{
    if (p->nnodes == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 8;
        node_t *nodes = realloc(p->nodes, cap * sizeof(*nodes));
        if (!nodes) {
            fail_nomem(p);
            return NONE;
        }
        p->nodes = nodes;
        p->cap = cap;
    }
    p->nodes[p->nnodes] = (node_t){kind, NONE, NONE, 0, 0, 0};
    return (uint32_t)p->nnodes++;
}

/* strs is sized so that this never fails (a string is never longer than its text); the
 * check only keeps a mistake in that reasoning from writing out of bounds. */
static void put_byte(parser_t *p, char c)
{
    if (p->nstrs < p->strs_cap)
        p->strs[p->nstrs++] = c;
    else
        fail(p, p->pos, "internal error: string space exhausted");
}

static void put_utf8(parser_t *p, uint32_t cp)
{
    if (cp < 0x80) {
        put_byte(p, (char)cp);
    } else if (cp < 0x800) {
        put_byte(p, (char)(0xc0 | cp >> 6));
        put_byte(p, (char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        put_byte(p, (char)(0xe0 | cp >> 12));
        put_byte(p, (char)(0x80 | ((cp >> 6) & 0x3f)));
        put_byte(p, (char)(0x80 | (cp & 0x3f)));
    } else {
        put_byte(p, (char)(0xf0 | cp >> 18));
        put_byte(p, (char)(0x80 | ((cp >> 12) & 0x3f)));
        put_byte(p, (char)(0x80 | ((cp >> 6) & 0x3f)));
        put_byte(p, (char)(0x80 | (cp & 0x3f)));
    }
}

static int hex_value(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads exactly @p digits digits of base 16 (or 8) after the current position. */
static int read_digits(parser_t *p, int digits, int base, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < digits; i++) {
        int d = hex_value(p->s[p->pos + (size_t)i]);
        if (d < 0 || d >= base)
            return -1;
        v = v * (uint32_t)base + (uint32_t)d;
    }
    p->pos += (size_t)digits;
    *out = v;
    return 0;
}

/* One escape after its backslash (at @p esc): the code point, or -1 after failing. */
static int64_t parse_escape(parser_t *p, size_t esc)
{
    static const char simple[] = "abfnrtv\\'\"`?", meaning[] = "\a\b\f\n\r\t\v\\'\"`?";
    char c = p->s[p->pos];
    const char *k = c ? strchr(simple, c) : NULL;
    uint32_t cp = 0;
    int ok = 0;
    p->pos++; /* not the terminating NUL: parse_string() checked */
    if (k) {
        cp = (unsigned char)meaning[k - simple];
        ok = 1;
    } else if (c == 'x' || c == 'X') {
        /* As in CEL, \x and octal escapes in a string name code points, not bytes. */
        ok = read_digits(p, 2, 16, &cp) == 0;
    } else if (c == 'u') {
        ok = read_digits(p, 4, 16, &cp) == 0;
    } else if (c == 'U') {
        ok = read_digits(p, 8, 16, &cp) == 0;
    } else if (c >= '0' && c <= '3') {
        p->pos--; /* the first of exactly three octal digits */
        ok = read_digits(p, 3, 8, &cp) == 0;
    }
    if (!ok) {
        fail(p, esc, "invalid escape sequence in a string literal");
        return -1;
    }
    if (cp == 0) {
        fail(p, esc, "a string literal cannot contain NUL");
        return -1;
    }
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        fail(p, esc, "invalid Unicode code point in a string literal");
        return -1;
    }
    return cp;
}

/* The string literal at the current position (its quote is there), decoded into strs.
 * @returns its offset, or NONE after failing. */
static uint32_t parse_string(parser_t *p, uint32_t *len)
{
    size_t start = p->pos;
    char quote = p->s[p->pos++];
    uint32_t off = (uint32_t)p->nstrs;
    for (;;) {
        char c = p->s[p->pos];
        if (!c) {
            fail(p, start, "unterminated string literal");
            return NONE;
        }
        p->pos++;
        if (c == quote)
            break;
        if (c != '\\') {
            put_byte(p, c);
            continue;
        }
        if (!p->s[p->pos]) { /* a backslash escaping the end */
            fail(p, start, "unterminated string literal");
            return NONE;
        }
        int64_t cp = parse_escape(p, p->pos - 1);
        if (cp < 0)
            return NONE;
        put_utf8(p, (uint32_t)cp);
    }
    if (len)
        *len = (uint32_t)(p->nstrs - off);
    put_byte(p, '\0');
    return p->failed ? NONE : off;
}

/* An attribute name: bare ([A-Za-z0-9_-]+) or a string literal. */
static uint32_t parse_key(parser_t *p)
{
    skip_ws(p);
    char c = p->s[p->pos];
    if (c == '"' || c == '\'')
        return parse_string(p, NULL);
    size_t start = p->pos;
    while (is_key_char(p->s[p->pos]))
        p->pos++;
    if (p->pos == start) {
        fail_unexpected(p, "an attribute name");
        return NONE;
    }
    uint32_t off = (uint32_t)p->nstrs;
    for (size_t i = start; i < p->pos; i++)
        put_byte(p, p->s[i]);
    put_byte(p, '\0');
    return p->failed ? NONE : off;
}

static uint32_t parse_value(parser_t *p, uint32_t *len)
{
    skip_ws(p);
    if (p->s[p->pos] != '"' && p->s[p->pos] != '\'') {
        fail_unexpected(p, "a string literal");
        return NONE;
    }
    return parse_string(p, len);
}

static int expect(parser_t *p, char c, const char *what)
{
    skip_ws(p);
    if (p->s[p->pos] == c) {
        p->pos++;
        return 1;
    }
    fail_unexpected(p, what);
    return 0;
}

/* After the word "attributes": ".key = string", ".key != string" or ":key". */
static uint32_t parse_attribute(parser_t *p)
{
    p->pos += strlen("attributes");
    skip_ws(p);
    char c = p->s[p->pos];
    if (c != '.' && c != ':') {
        fail_unexpected(p, "'.' or ':' after attributes");
        return NONE;
    }
    p->pos++;
    uint32_t key = parse_key(p);
    if (key == NONE)
        return NONE;
    node_kind_t kind = N_HAS;
    uint32_t value = 0, len = 0;
    if (c == '.') {
        skip_ws(p);
        const char *op = p->s + p->pos;
        if (op[0] == '=' && op[1] == '=') {
            fail(p, p->pos, "expected = or !=, found \"==\" (equality is a single =)");
            return NONE;
        }
        if (op[0] == '=') {
            kind = N_EQ;
            p->pos++;
        } else if (op[0] == '!' && op[1] == '=') {
            kind = N_NE;
            p->pos += 2;
        } else {
            fail_unexpected(p, "= or != after the attribute name");
            return NONE;
        }
        if ((value = parse_value(p, &len)) == NONE)
            return NONE;
    }
    uint32_t n = node_new(p, kind);
    if (n != NONE) {
        p->nodes[n].key = key;
        p->nodes[n].value = value;
        p->nodes[n].value_len = len;
    }
    return n;
}

/* After the word "hasPrefix": "(attributes.key, string)". */
static uint32_t parse_has_prefix(parser_t *p)
{
    p->pos += strlen("hasPrefix");
    if (!expect(p, '(', "'(' after hasPrefix"))
        return NONE;
    skip_ws(p);
    if (!at_word(p, "attributes")) {
        fail_unexpected(p, "attributes.<name> as the first argument of hasPrefix");
        return NONE;
    }
    p->pos += strlen("attributes");
    if (!expect(p, '.', "'.' after attributes"))
        return NONE;
    uint32_t key = parse_key(p), len = 0, value;
    if (key == NONE || !expect(p, ',', "',' after the attribute name") ||
        (value = parse_value(p, &len)) == NONE || !expect(p, ')', "')' after the prefix"))
        return NONE;
    uint32_t n = node_new(p, N_PREFIX);
    if (n != NONE) {
        p->nodes[n].key = key;
        p->nodes[n].value = value;
        p->nodes[n].value_len = len;
    }
    return n;
}

static uint32_t parse_filter(parser_t *p);

/* One term. The depth counts NOTs and parentheses, the only ways to nest: bounding it bounds
 * the recursion here and in the matcher. */
static uint32_t parse_term(parser_t *p)
{
    skip_ws(p);
    if (p->depth >= MSM_FILTER_DEPTH_MAX) {
        fail(p, p->pos, "nested more than %d levels deep", MSM_FILTER_DEPTH_MAX);
        return NONE;
    }
    char c = p->s[p->pos];
    uint32_t n = NONE;
    p->depth++;
    if (c == '-' || at_word(p, "NOT")) { /* "-" is Pub/Sub's short NOT */
        p->pos += c == '-' ? 1 : 3;
        uint32_t operand = parse_term(p);
        if (operand != NONE && (n = node_new(p, N_NOT)) != NONE)
            p->nodes[n].child = operand;
    } else if (c == '(') {
        p->pos++;
        n = parse_filter(p);
        if (n != NONE) {
            skip_ws(p);
            if (p->s[p->pos] == ')')
                p->pos++;
            else
                fail_unexpected(p, "AND, OR or ')'");
        }
    } else if (at_word(p, "attributes")) {
        n = parse_attribute(p);
    } else if (at_word(p, "hasPrefix")) {
        n = parse_has_prefix(p);
    } else {
        fail_unexpected(p, "a condition");
    }
    p->depth--;
    return p->failed ? NONE : n;
}

/* term { AND term } or term { OR term }: one operator per level, as Pub/Sub wants, so no
 * precedence rule between AND and OR can surprise anyone. */
static uint32_t parse_filter(parser_t *p)
{
    uint32_t first = parse_term(p);
    if (first == NONE)
        return NONE;
    skip_ws(p);
    const char *op = at_word(p, "AND") ? "AND" : at_word(p, "OR") ? "OR" : NULL;
    if (!op)
        return first;
    const char *other = op[0] == 'A' ? "OR" : "AND";
    uint32_t n = node_new(p, op[0] == 'A' ? N_AND : N_OR);
    if (n == NONE)
        return NONE;
    p->nodes[n].child = first;
    uint32_t last = first;
    while (at_word(p, op)) {
        p->pos += strlen(op);
        uint32_t operand = parse_term(p);
        if (operand == NONE)
            return NONE;
        p->nodes[last].next = operand;
        last = operand;
        skip_ws(p);
    }
    if (at_word(p, other)) {
        fail(p, p->pos, "AND and OR cannot be mixed without parentheses");
        return NONE;
    }
    return n;
}

/* The 1-based character (not byte) position of byte @p off, as an editor shows it. */
static size_t char_position(const char *s, size_t off)
{
    size_t n = 1;
    for (size_t i = 0; i < off && s[i]; i++)
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    return n;
}

msm_filter_t *msm_filter_parse(const char *text, char *err, size_t errlen, size_t *err_pos)
{
    parser_t p = {.s = text};
    msm_filter_t *f = NULL;
    p.len = strnlen(text, MSM_FILTER_TEXT_MAX + 1);
    if (p.len > MSM_FILTER_TEXT_MAX) {
        fail(&p, MSM_FILTER_TEXT_MAX, "longer than %d bytes", MSM_FILTER_TEXT_MAX);
        goto fail;
    }
    /* Every string is at most as long as its text (escapes only shrink), and its quotes, or
     * the '.' or ':' before a bare key, pay for its NUL: the text's length is enough. */
    p.strs_cap = p.len + 1;
    if (!(p.strs = malloc(p.strs_cap))) {
        fail_nomem(&p);
        goto fail;
    }
    uint32_t root = parse_filter(&p);
    if (root != NONE) {
        skip_ws(&p);
        if (p.pos < p.len)
            fail_unexpected(&p, "AND, OR or the end of the filter");
    }
    if (p.failed)
        goto fail;
    if (!(f = malloc(sizeof(*f)))) {
        fail_nomem(&p);
        goto fail;
    }
    /* Kept for the subscription's lifetime: give back what the growth left over. */
    node_t *nodes = realloc(p.nodes, p.nnodes * sizeof(*nodes));
    char *strs = p.nstrs ? realloc(p.strs, p.nstrs) : NULL;
    f->nodes = nodes ? nodes : p.nodes;
    f->strs = strs ? strs : p.strs;
    f->root = root;
    return f;
fail:
    if (err_pos)
        *err_pos = p.err_at;
    if (err && errlen) {
        if (p.nomem)
            snprintf(err, errlen, "out of memory");
        else
            snprintf(err, errlen, "position %zu: %s", char_position(text, p.err_at), p.why);
    }
    free(p.nodes);
    free(p.strs);
    return NULL;
}

void msm_filter_free(msm_filter_t *f)
{
    if (!f)
        return;
    free(f->nodes);
    free(f->strs);
    free(f);
}

/* ---- matching: per event and subscription on the scheduler's hot path, so no allocation ---- */

/* The value of attribute @p key, or NULL. The first entry wins: the frontend builds the map
 * from a JSON object, whose names are unique. */
static const char *
attr_get(Msm__V1__Event__AttributesEntry *const *attrs, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (attrs[i]->key && strcmp(attrs[i]->key, key) == 0)
            return attrs[i]->value ? attrs[i]->value : "";
    }
    return NULL;
}

static bool
eval(const msm_filter_t *f, uint32_t i, Msm__V1__Event__AttributesEntry *const *attrs, size_t n)
{
    const node_t *nd = &f->nodes[i];
    const char *v;
    switch ((node_kind_t)nd->kind) {
    case N_AND:
        for (uint32_t c = nd->child; c != NONE; c = f->nodes[c].next) {
            if (!eval(f, c, attrs, n))
                return false;
        }
        return true;
    case N_OR:
        for (uint32_t c = nd->child; c != NONE; c = f->nodes[c].next) {
            if (eval(f, c, attrs, n))
                return true;
        }
        return false;
    case N_NOT:
        return !eval(f, nd->child, attrs, n);
    case N_HAS:
        return attr_get(attrs, n, f->strs + nd->key) != NULL;
    case N_EQ:
        v = attr_get(attrs, n, f->strs + nd->key);
        return v && strcmp(v, f->strs + nd->value) == 0;
    case N_NE:
        v = attr_get(attrs, n, f->strs + nd->key);
        return !v || strcmp(v, f->strs + nd->value) != 0;
    case N_PREFIX:
        v = attr_get(attrs, n, f->strs + nd->key);
        return v && strncmp(v, f->strs + nd->value, nd->value_len) == 0;
    }
    return false;
}

bool msm_filter_match(const msm_filter_t *f,
                      Msm__V1__Event__AttributesEntry *const *attrs,
                      size_t n)
{
    return !f || eval(f, f->root, attrs, n);
}
