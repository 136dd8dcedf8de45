/* SPDX-License-Identifier: MIT */
/* Subscription filters (msm/filter.h, docs/filter.md): the grammar and every operator,
 * Pub/Sub's semantics where they are easy to get wrong (!= and NOT on a missing attribute,
 * no mixing of AND and OR), string literals and quoted names, error positions, the depth
 * and length bounds, and garbage that must be refused without a crash. */
#include "msm_test.h"
#include "msm/filter.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- attributes as an event holds them ---- */

#define MAX_ATTRS 8

typedef struct {
    Msm__V1__Event__AttributesEntry e[MAX_ATTRS];
    Msm__V1__Event__AttributesEntry *p[MAX_ATTRS];
    size_t n;
} attrs_t;

/* @p kv: name, value, name, value, ..., NULL. */
static void attrs_set(attrs_t *a, const char *const *kv)
{
    a->n = 0;
    for (size_t i = 0; kv && kv[i] && kv[i + 1] && a->n < MAX_ATTRS; i += 2) {
        msm__v1__event__attributes_entry__init(&a->e[a->n]);
        a->e[a->n].key = (char *)kv[i];
        a->e[a->n].value = (char *)kv[i + 1];
        a->p[a->n] = &a->e[a->n];
        a->n++;
    }
}

#define KV(...)  ((const char *const[]){__VA_ARGS__, NULL})
#define NO_ATTRS ((const char *const *)NULL)

/* 1 when @p text parses and matches @p kv, 0 when it parses and does not, -1 when it does
 * not parse (reported). */
static int match(const char *text, const char *const *kv)
{
    char err[256] = "";
    msm_filter_t *f = msm_filter_parse(text, err, sizeof(err), NULL);
    if (!f) {
        fprintf(stderr, "\n  %s: %s\n", text, err);
        return -1;
    }
    attrs_t a;
    attrs_set(&a, kv);
    int m = msm_filter_match(f, a.p, a.n);
    msm_filter_free(f);
    return m;
}

/* @p text is refused at character @p pos (1-based) with a message containing @p needle. */
static void refused(const char *text, size_t pos, const char *needle)
{
    char err[256] = "", want[32];
    size_t at = SIZE_MAX;
    msm_filter_t *f = msm_filter_parse(text, err, sizeof(err), &at);
    CU_ASSERT_PTR_NULL(f);
    msm_filter_free(f);
    snprintf(want, sizeof(want), "position %zu: ", pos);
    int ok = strncmp(err, want, strlen(want)) == 0 && strstr(err, needle) != NULL;
    if (!ok)
        fprintf(stderr, "\n  %s: got \"%s\", want \"%s...%s\"\n", text, err, want, needle);
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_TRUE(at <= strlen(text));
}

/* ---- the operators ---- */

static void test_conditions(void)
{
    /* attributes.k = "v": present and equal, byte for byte (case matters). */
    CU_ASSERT_EQUAL(match("attributes.kind = \"image\"", KV("kind", "image")), 1);
    CU_ASSERT_EQUAL(match("attributes.kind = \"image\"", KV("kind", "Image")), 0);
    CU_ASSERT_EQUAL(match("attributes.kind = \"image\"", KV("kind", "images")), 0);
    CU_ASSERT_EQUAL(match("attributes.kind = \"image\"", KV("Kind", "image")), 0);
    CU_ASSERT_EQUAL(match("attributes.kind = \"image\"", NO_ATTRS), 0);
    CU_ASSERT_EQUAL(match("attributes.kind = \"\"", KV("kind", "")), 1);
    CU_ASSERT_EQUAL(match("attributes.kind = \"\"", NO_ATTRS), 0);
    /* attributes:k: present, whatever the value (even empty). */
    CU_ASSERT_EQUAL(match("attributes:kind", KV("kind", "")), 1);
    CU_ASSERT_EQUAL(match("attributes:kind", KV("other", "kind")), 0);
    CU_ASSERT_EQUAL(match("attributes:kind", NO_ATTRS), 0);
    /* hasPrefix: present and starting with the prefix; "" is a prefix of every value. */
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.path, \"/img/\")", KV("path", "/img/a.png")), 1);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.path, \"/img/\")", KV("path", "/img/")), 1);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.path, \"/img/\")", KV("path", "/img")), 0);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.path, \"/img/\")", KV("path", "/IMG/a")), 0);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.path, \"/img/\")", NO_ATTRS), 0);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.path, \"\")", KV("path", "")), 1);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.path, \"\")", NO_ATTRS), 0);
    /* Among several attributes. */
    CU_ASSERT_EQUAL(match("attributes.b = \"2\"", KV("a", "1", "b", "2", "c", "3")), 1);
    CU_ASSERT_EQUAL(match("attributes:c", KV("a", "1", "b", "2", "c", "3")), 1);
}

/* Pub/Sub: != is NOT (=), so it also passes events without the attribute; NOT on any
 * condition likewise. */
static void test_missing_attribute(void)
{
    CU_ASSERT_EQUAL(match("attributes.kind != \"image\"", KV("kind", "video")), 1);
    CU_ASSERT_EQUAL(match("attributes.kind != \"image\"", KV("kind", "image")), 0);
    CU_ASSERT_EQUAL(match("attributes.kind != \"image\"", NO_ATTRS), 1);
    CU_ASSERT_EQUAL(match("attributes.kind != \"image\"", KV("other", "image")), 1);
    CU_ASSERT_EQUAL(match("NOT attributes.kind = \"image\"", NO_ATTRS), 1);
    CU_ASSERT_EQUAL(match("NOT attributes:kind", NO_ATTRS), 1);
    CU_ASSERT_EQUAL(match("NOT attributes:kind", KV("kind", "x")), 0);
    CU_ASSERT_EQUAL(match("NOT hasPrefix(attributes.kind, \"im\")", NO_ATTRS), 1);
    CU_ASSERT_EQUAL(match("NOT hasPrefix(attributes.kind, \"im\")", KV("kind", "image")), 0);
    /* Only an attribute that is there with another value passes both. */
    CU_ASSERT_EQUAL(match("attributes:kind AND attributes.kind != \"image\"", NO_ATTRS), 0);
    CU_ASSERT_EQUAL(match("attributes:kind AND attributes.kind != \"image\"", KV("kind", "v")), 1);
}

static void test_boolean_operators(void)
{
    const char *const *both = KV("a", "1", "b", "2"), *const *only_a = KV("a", "1"),
                      *const *only_b = KV("b", "2");
    CU_ASSERT_EQUAL(match("attributes:a AND attributes:b", both), 1);
    CU_ASSERT_EQUAL(match("attributes:a AND attributes:b", only_a), 0);
    CU_ASSERT_EQUAL(match("attributes:a OR attributes:b", only_b), 1);
    CU_ASSERT_EQUAL(match("attributes:a OR attributes:b", NO_ATTRS), 0);
    CU_ASSERT_EQUAL(match("NOT attributes:a", only_b), 1);
    /* "-" is Pub/Sub's short NOT, with or without a space. */
    CU_ASSERT_EQUAL(match("-attributes:a", only_b), 1);
    CU_ASSERT_EQUAL(match("- attributes:a", only_a), 0);
    CU_ASSERT_EQUAL(match("attributes:b AND -attributes:\"a\"", only_b), 1);
    CU_ASSERT_EQUAL(match("-(attributes:a OR attributes:b)", NO_ATTRS), 1);
    CU_ASSERT_EQUAL(match("NOT NOT attributes:a", only_a), 1);
    CU_ASSERT_EQUAL(match("NOT -attributes:a", only_a), 1);
    /* Long chains of one operator. */
    CU_ASSERT_EQUAL(match("attributes:a AND attributes:b AND attributes.a = \"1\" AND "
                          "attributes.b != \"3\"",
                          both),
                    1);
    CU_ASSERT_EQUAL(match("attributes:x OR attributes:y OR attributes:z OR attributes:b", only_b),
                    1);
    CU_ASSERT_EQUAL(match("attributes:x OR attributes:y OR attributes:z", both), 0);
}

/* NOT binds to the term after it; parentheses group; AND and OR need them to mix. */
static void test_precedence_and_parentheses(void)
{
    const char *const *only_b = KV("b", "2");
    /* (NOT a) AND b, not NOT (a AND b). */
    CU_ASSERT_EQUAL(match("NOT attributes:a AND attributes:b", only_b), 1);
    CU_ASSERT_EQUAL(match("NOT attributes:a AND attributes:b", NO_ATTRS), 0);
    CU_ASSERT_EQUAL(match("NOT (attributes:a AND attributes:b)", NO_ATTRS), 1);
    CU_ASSERT_EQUAL(match("(attributes:a AND attributes:b) OR attributes:c", KV("c", "")), 1);
    CU_ASSERT_EQUAL(match("attributes:a AND (attributes:b OR attributes:c)", KV("c", "")), 0);
    CU_ASSERT_EQUAL(match("attributes:a AND (attributes:b OR attributes:c)", KV("a", "", "c", "")),
                    1);
    CU_ASSERT_EQUAL(match("((attributes:a))", KV("a", "")), 1);
    CU_ASSERT_EQUAL(match("(attributes.kind = \"image\" OR attributes.kind = \"video\") AND "
                          "NOT hasPrefix(attributes.path, \"/tmp/\")",
                          KV("kind", "video", "path", "/home/x")),
                    1);
    CU_ASSERT_EQUAL(match("(attributes.kind = \"image\" OR attributes.kind = \"video\") AND "
                          "NOT hasPrefix(attributes.path, \"/tmp/\")",
                          KV("kind", "video", "path", "/tmp/x")),
                    0);
    /* Pub/Sub refuses to guess: mixing without parentheses is an error, at the operator. */
    refused("attributes:a AND attributes:b OR attributes:c", 31, "cannot be mixed");
    refused("attributes:a OR attributes:b AND attributes:c", 30, "cannot be mixed");
    refused("(attributes:a OR attributes:b AND attributes:c)", 31, "cannot be mixed");
}

/* Whitespace anywhere between tokens, none needed around symbols. */
static void test_layout(void)
{
    const char *const *kv = KV("a", "x", "b", "");
    CU_ASSERT_EQUAL(match("attributes.a=\"x\"AND(attributes:b)", kv), 1);
    CU_ASSERT_EQUAL(match(" \t\nattributes . a\n=\r\n\"x\"  AND\tattributes : b \n", kv), 1);
    CU_ASSERT_EQUAL(match("hasPrefix( attributes.a , \"x\" )", kv), 1);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.a,\"x\")", kv), 1);
    CU_ASSERT_EQUAL(match("NOT(attributes:c)", kv), 1);
    /* A keyword is a whole word: NOTE is not NOT, ANDattributes not AND. */
    refused("NOTattributes:a", 1, "found \"NOTattributes\"");
    refused("attributes:a ANDattributes:b", 14, "found \"ANDattributes\"");
}

/* Names: bare [A-Za-z0-9_-]+ (hyphens are part of the name, not NOT), or string literals
 * for anything else. */
static void test_attribute_names(void)
{
    CU_ASSERT_EQUAL(match("attributes.ce-type = \"x\"", KV("ce-type", "x")), 1);
    CU_ASSERT_EQUAL(match("attributes:ce-type", KV("ce", "")), 0);
    CU_ASSERT_EQUAL(match("attributes:_a1-B2", KV("_a1-B2", "")), 1);
    CU_ASSERT_EQUAL(match("attributes:9lives", KV("9lives", "")), 1);
    CU_ASSERT_EQUAL(match("attributes.\"a b\" = \"x\"", KV("a b", "x")), 1);
    CU_ASSERT_EQUAL(match("attributes:\"a.b\"", KV("a.b", "")), 1);
    CU_ASSERT_EQUAL(match("attributes:'a:b'", KV("a:b", "")), 1);
    CU_ASSERT_EQUAL(match("attributes:\"\xc3\xa9t\xc3\xa9\"", KV("\xc3\xa9t\xc3\xa9", "")), 1);
    CU_ASSERT_EQUAL(match("attributes:\"\\u00e9t\\u00e9\"", KV("\xc3\xa9t\xc3\xa9", "")), 1);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.\"x y\", \"a\")", KV("x y", "abc")), 1);
    /* The word attributes and the function name are exact. */
    refused("Attributes:a", 1, "expected a condition");
    refused("attribute:a", 1, "found \"attribute\"");
    refused("hasprefix(attributes.a, \"x\")", 1, "found \"hasprefix\"");
    refused("attributes.a.b = \"x\"", 13, "= or !=");
}

static void test_string_literals(void)
{
    CU_ASSERT_EQUAL(match("attributes.q = \"say \\\"hi\\\"\"", KV("q", "say \"hi\"")), 1);
    refused("attributes.q = 'it''s'", 20, "found a string literal"); /* no juxtaposition */
    CU_ASSERT_EQUAL(match("attributes.q = 'it\\'s'", KV("q", "it's")), 1);
    CU_ASSERT_EQUAL(match("attributes.q = 'say \"hi\"'", KV("q", "say \"hi\"")), 1);
    CU_ASSERT_EQUAL(match("attributes.q = \"a\\\\b\"", KV("q", "a\\b")), 1);
    CU_ASSERT_EQUAL(
        match("attributes.q = \"\\a\\b\\f\\n\\r\\t\\v\\?\\`\"", KV("q", "\a\b\f\n\r\t\v?`")), 1);
    /* Hexadecimal, octal and Unicode escapes name code points (as in CEL). */
    CU_ASSERT_EQUAL(match("attributes.q = \"\\x41\\X42\\103\"", KV("q", "ABC")), 1);
    CU_ASSERT_EQUAL(match("attributes.q = \"\\xe9\"", KV("q", "\xc3\xa9")), 1);
    CU_ASSERT_EQUAL(match("attributes.q = \"\\351\"", KV("q", "\xc3\xa9")), 1);
    CU_ASSERT_EQUAL(match("attributes.q = \"\\u20ac\"", KV("q", "\xe2\x82\xac")), 1);
    CU_ASSERT_EQUAL(match("attributes.q = \"\\U0001F600\"", KV("q", "\xf0\x9f\x98\x80")), 1);
    CU_ASSERT_EQUAL(match("attributes.q = \"caf\xc3\xa9\"", KV("q", "caf\xc3\xa9")), 1);
    /* Operators inside literals are text. */
    CU_ASSERT_EQUAL(match("attributes.q = \"a AND b) OR (\"", KV("q", "a AND b) OR (")), 1);
    CU_ASSERT_EQUAL(match("hasPrefix(attributes.q, \"\\u00e9\")", KV("q", "\xc3\xa9t\xc3\xa9")), 1);
    /* Bad literals, at the quote or the backslash. */
    refused("attributes.q = \"abc", 16, "unterminated string literal");
    refused("attributes.q = 'abc\"", 16, "unterminated string literal");
    refused("attributes.q = \"abc\\", 16, "unterminated string literal");
    refused("attributes.q = \"a\\qb\"", 18, "invalid escape");
    refused("attributes.q = \"\\x4\"", 17, "invalid escape");
    refused("attributes.q = \"\\u12\"", 17, "invalid escape");
    refused("attributes.q = \"\\400\"", 17, "invalid escape");
    refused("attributes.q = \"\\8\"", 17, "invalid escape");
    refused("attributes.q = \"\\000\"", 17, "NUL");
    refused("attributes.q = \"\\x00\"", 17, "NUL");
    refused("attributes.q = \"\\ud800\"", 17, "code point");
    refused("attributes.q = \"\\U00110000\"", 17, "code point");
}

/* ---- errors ---- */

static void test_error_positions(void)
{
    refused("", 1, "expected a condition, found the end of the filter");
    refused("   ", 4, "expected a condition");
    refused("attributes.kind = image", 19, "expected a string literal, found \"image\"");
    refused("attributes.kind = 5", 19, "expected a string literal, found '5'");
    refused("attributes.kind", 16, "expected = or != after the attribute name");
    refused("attributes.kind == \"x\"", 17, "\"==\"");
    refused("attributes.kind > \"x\"", 17, "= or !=");
    refused("attributes", 11, "'.' or ':' after attributes");
    refused("attributes.", 12, "expected an attribute name");
    refused("attributes: ", 13, "expected an attribute name");
    refused("attributes.kind = \"x\" attributes:y", 23, "expected AND, OR or the end");
    refused("attributes:kind and attributes:x", 17, "written in capitals");
    refused("not attributes:x", 1, "written in capitals");
    refused("attributes:a Or attributes:b", 14, "written in capitals");
    refused("attributes:a AND", 17, "expected a condition, found the end");
    refused("attributes:a AND AND attributes:b", 18, "found \"AND\"");
    refused("NOT", 4, "expected a condition");
    refused("(attributes:a", 14, "expected AND, OR or ')'");
    refused("attributes:a)", 13, "found ')'");
    refused("()", 2, "expected a condition, found ')'");
    refused("hasPrefix", 10, "'(' after hasPrefix");
    refused("hasPrefix(attributes.a \"x\")", 24, "','");
    refused("hasPrefix(attributes.a, \"x\"", 28, "')' after the prefix");
    refused("hasPrefix(attributes:a, \"x\")", 21, "'.' after attributes");
    refused("hasPrefix(\"x\", attributes.a)", 11, "first argument of hasPrefix");
    refused("hasPrefix(attributes.a, attributes.b)", 25, "string literal");
    refused("data.kind = \"x\"", 1, "found \"data\"");
    refused("attributes.k = \"v\" ; DROP", 20, "found ';'");
    refused("attributes.k = \"v\" \x01", 20, "byte 0x01");
    /* Positions count characters, not bytes: é is one character, two bytes. */
    refused("attributes.\xc3\xa9 = \"x\"", 12, "attribute name");
    refused("attributes.\"\xc3\xa9\" = x", 18, "string literal");
    char err[128];
    size_t at = 0;
    CU_ASSERT_PTR_NULL(msm_filter_parse("attributes.\"\xc3\xa9\" = x", err, sizeof(err), &at));
    CU_ASSERT_EQUAL(at, 18); /* the byte offset, from 0 */
    /* A short buffer is cut, still terminated; NULL outputs are fine. */
    char tiny[12];
    CU_ASSERT_PTR_NULL(msm_filter_parse("attributes", tiny, sizeof(tiny), NULL));
    CU_ASSERT_STRING_EQUAL(tiny, "position 11");
    CU_ASSERT_PTR_NULL(msm_filter_parse("attributes", NULL, 0, NULL));
}

static char *repeat(const char *head, const char *unit, size_t n, const char *mid, const char *tail)
{
    size_t len = strlen(head) + n * strlen(unit) + strlen(mid) + n * strlen(tail) + 1;
    char *s = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    strcpy(s, head);
    for (size_t i = 0; i < n; i++)
        strcat(s, unit);
    strcat(s, mid);
    for (size_t i = 0; i < n; i++)
        strcat(s, tail);
    return s;
}

/* Nesting is bounded (no stack exhaustion on hostile input); long flat chains are not. */
static void test_depth_and_length(void)
{
    const size_t max = MSM_FILTER_DEPTH_MAX;
    char *ok = repeat("", "(", max - 1, "attributes:a", ")");
    char *deep = repeat("", "(", max, "attributes:a", ")");
    CU_ASSERT_EQUAL(match(ok, KV("a", "")), 1);
    refused(deep, max + 1, "nested more than 64 levels deep");
    free(ok);
    free(deep);
    ok = repeat("", "NOT ", max - 1, "attributes:a", "");
    deep = repeat("", "-", max, "attributes:a", "");
    CU_ASSERT_EQUAL(match(ok, KV("a", "")), 0); /* an odd number of NOTs */
    refused(deep, max + 1, "nested");
    free(ok);
    free(deep);
    deep = repeat("", "(NOT ", 500, "attributes:a", ")"); /* two levels per "(NOT " */
    refused(deep, max / 2 * strlen("(NOT ") + 1, "nested");
    free(deep);
    /* 200 ANDs in a row: one level. */
    char *chain = repeat("attributes:a", " AND attributes:a", 200, "", "");
    CU_ASSERT_EQUAL(match(chain, KV("a", "")), 1);
    free(chain);

    /* MSM_FILTER_TEXT_MAX bytes pass, one more does not. */
    char text[MSM_FILTER_TEXT_MAX + 2];
    const char *head = "attributes.k = \"";
    memset(text, 'x', sizeof(text));
    memcpy(text, head, strlen(head));
    text[MSM_FILTER_TEXT_MAX - 1] = '"';
    text[MSM_FILTER_TEXT_MAX] = '\0';
    msm_filter_t *f = msm_filter_parse(text, NULL, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL(f);
    msm_filter_free(f);
    text[MSM_FILTER_TEXT_MAX - 1] = 'x';
    text[MSM_FILTER_TEXT_MAX] = '"';
    text[MSM_FILTER_TEXT_MAX + 1] = '\0';
    refused(text, MSM_FILTER_TEXT_MAX + 1, "longer than 4096 bytes");
}

static void test_no_filter_and_duplicates(void)
{
    attrs_t a;
    attrs_set(&a, KV("k", "v"));
    CU_ASSERT_TRUE(msm_filter_match(NULL, a.p, a.n));
    CU_ASSERT_TRUE(msm_filter_match(NULL, NULL, 0));
    msm_filter_free(NULL);
    /* The first entry of a name counts (the frontend never stores two). */
    CU_ASSERT_EQUAL(match("attributes.k = \"1\"", KV("k", "1", "k", "2")), 1);
    CU_ASSERT_EQUAL(match("attributes.k = \"2\"", KV("k", "1", "k", "2")), 0);
    /* One parsed filter, many events. */
    msm_filter_t *f = msm_filter_parse("attributes.kind = \"image\"", NULL, 0, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    size_t hits = 0;
    for (int i = 0; i < 1000; i++) {
        attrs_set(&a, i % 2 ? KV("kind", "image") : KV("kind", "text"));
        hits += msm_filter_match(f, a.p, a.n);
    }
    CU_ASSERT_EQUAL(hits, 500);
    msm_filter_free(f);
}

/* ---- garbage ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Parses @p text: it is a filter, or refused with a positioned message; never a crash. */
static int parse_any(const char *text)
{
    char err[256] = "";
    size_t at = SIZE_MAX;
    msm_filter_t *f = msm_filter_parse(text, err, sizeof(err), &at);
    if (f) {
        attrs_t a;
        attrs_set(&a, KV("a", "1", "kind", "image", "b", ""));
        (void)msm_filter_match(f, a.p, a.n);
        msm_filter_free(f);
        return 1;
    }
    CU_ASSERT_TRUE(strncmp(err, "position ", 9) == 0);
    CU_ASSERT_TRUE(at <= strlen(text));
    return 0;
}

static void test_garbage(void)
{
    static const char *const fixed[] = {
        "\"",
        "'",
        "\\",
        "(",
        ")",
        "-",
        "--",
        "!",
        "!=",
        "=",
        ":",
        ".",
        ",",
        "(((",
        ")))",
        "attributes:",
        "attributes.\"",
        "attributes.'\\",
        "hasPrefix(",
        "hasPrefix(attributes.",
        "hasPrefix(attributes.a,",
        "NOT NOT NOT",
        "AND",
        "OR",
        "attributes:a OR",
        "\xff\xfe",
        "attributes.\xff = \"x\"",
        "attributes.a = \"\\u\"",
        "attributes.a = \"\\U0000\"",
        "attributes.a = \"\\",
        "attributes.a = \"\\x",
        "-(",
        "-)",
        "(attributes:a))",
        "attributes:a AND (attributes:b",
        "\t\n\r\v\f",
        "{}",
        "[]",
        "*",
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        CU_ASSERT_EQUAL(parse_any(fixed[i]), 0);
    CU_ASSERT_EQUAL(parse_any("attributes.a = \"\xff\""), 1); /* bytes are compared as bytes */

    /* Random strings of filter tokens and bytes: some parse, the rest fail cleanly. */
    static const char *const tokens[] = {
        "attributes", ".",           ":",         "a",  "kind", "=",        "!=",  "\"image\"",
        "'x'",        "\"\\u00e9\"", "hasPrefix", "(",  ")",    ",",        "AND", "OR",
        "NOT",        "-",           " ",         "\"", "\\",   "\xc3\xa9", "==",
    };
    size_t ntok = sizeof(tokens) / sizeof(tokens[0]), parsed = 0;
    char buf[512];
    for (int round = 0; round < 20000; round++) {
        size_t len = 0, n = rng() % 24;
        for (size_t k = 0; k < n; k++) {
            const char *t = tokens[rng() % ntok];
            char byte[2] = {(char)(rng() % 255 + 1), 0};
            if (rng() % 16 == 0)
                t = byte;
            size_t tl = strlen(t);
            if (len + tl >= sizeof(buf))
                break;
            memcpy(buf + len, t, tl);
            len += tl;
        }
        buf[len] = '\0';
        parsed += (size_t)parse_any(buf);
    }
    fprintf(stderr, "\n  20000 random inputs: %zu parsed\n", parsed);
    CU_ASSERT_TRUE(parsed > 0);
}

/* ---- random filters against a reference ---- */

/* A random filter, written out as text while its truth for @p a is computed straight from
 * the tree: the parser's reading (precedence, NOT, escapes, quoting) must agree with it. */
typedef struct {
    char text[MSM_FILTER_TEXT_MAX];
    size_t len;
    const attrs_t *a;
} gen_t;

static void emit(gen_t *g, const char *s)
{
    size_t n = strlen(s);
    if (g->len + n < sizeof(g->text)) {
        memcpy(g->text + g->len, s, n + 1);
        g->len += n;
    }
}

static const char *gen_value_of(const attrs_t *a, const char *key)
{
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->p[i]->key, key) == 0)
            return a->p[i]->value;
    }
    return NULL;
}

/* Names bare, with a hyphen and quoted; values plain, a prefix of another, escaped, empty. */
static const char *const gen_keys[] = {"a", "b-c", "d e"};
static const char *const gen_values[] = {"x", "xy", "\"", ""};

static int gen_condition(gen_t *g)
{
    const char *const *keys = gen_keys, *const *values = gen_values;
    const char *key = keys[rng() % 3], *value = values[rng() % 4];
    const char *v = gen_value_of(g->a, key);
    char k[16], lit[16];
    snprintf(k, sizeof(k), strchr(key, ' ') ? "\"%s\"" : "%s", key);
    snprintf(lit, sizeof(lit), "\"%s\"", strcmp(value, "\"") == 0 ? "\\\"" : value);
    switch (rng() % 4) {
    case 0:
        emit(g, "attributes:");
        emit(g, k);
        return v != NULL;
    case 1:
        emit(g, "attributes.");
        emit(g, k);
        emit(g, " = ");
        emit(g, lit);
        return v && strcmp(v, value) == 0;
    case 2:
        emit(g, "attributes.");
        emit(g, k);
        emit(g, " != ");
        emit(g, lit);
        return !v || strcmp(v, value) != 0;
    default:
        emit(g, "hasPrefix(attributes.");
        emit(g, k);
        emit(g, ", ");
        emit(g, lit);
        emit(g, ")");
        return v && strncmp(v, value, strlen(value)) == 0;
    }
}

static int gen_filter(gen_t *g, int depth);

/* A term: a condition, a negated term, or a parenthesised filter. */
static int gen_term(gen_t *g, int depth)
{
    unsigned pick = depth >= 6 ? 0 : (unsigned)(rng() % 4);
    if (pick == 0 || pick == 1)
        return gen_condition(g);
    if (pick == 2) {
        emit(g, rng() % 2 ? "NOT " : "-");
        return !gen_term(g, depth + 1);
    }
    emit(g, "(");
    int v = gen_filter(g, depth + 1);
    emit(g, ")");
    return v;
}

/* One term, or 2..4 terms joined by one operator. */
static int gen_filter(gen_t *g, int depth)
{
    size_t n = rng() % 2 ? 1 : 2 + rng() % 3;
    int all = rng() % 2, v = all;
    for (size_t i = 0; i < n; i++) {
        if (i)
            emit(g, all ? " AND " : " OR ");
        int t = gen_term(g, depth);
        v = all ? v && t : v || t;
    }
    return v;
}

static void test_random_filters(void)
{
    size_t agreed = 0, mutated_parsed = 0;
    for (int round = 0; round < 20000; round++) {
        attrs_t a;
        const char *kv[7] = {NULL};
        size_t nkv = 0;
        for (size_t k = 0; k < 3; k++) {
            if (rng() % 3 == 0)
                continue; /* absent */
            kv[nkv++] = gen_keys[k];
            kv[nkv++] = gen_values[rng() % 4];
        }
        attrs_set(&a, kv);
        gen_t g = {.len = 0, .a = &a};
        g.text[0] = '\0';
        int want = gen_filter(&g, 0);
        char err[256] = "";
        msm_filter_t *f = msm_filter_parse(g.text, err, sizeof(err), NULL);
        if (!f) {
            fprintf(stderr, "\n  %s: %s\n", g.text, err);
            CU_FAIL("a generated filter did not parse");
            continue;
        }
        int got = msm_filter_match(f, a.p, a.n);
        if (got != want)
            fprintf(stderr, "\n  %s: matched %d, want %d\n", g.text, got, want);
        agreed += got == want;
        msm_filter_free(f);
        /* One byte changed, dropped or doubled: parsed or refused, never a crash. */
        size_t at = rng() % g.len;
        switch (rng() % 3) {
        case 0:
            g.text[at] = (char)(rng() % 255 + 1);
            break;
        case 1:
            memmove(g.text + at, g.text + at + 1, g.len - at);
            break;
        default:
            if (g.len + 1 < sizeof(g.text))
                memmove(g.text + at + 1, g.text + at, g.len - at + 1);
            break;
        }
        mutated_parsed += (size_t)parse_any(g.text);
    }
    fprintf(stderr, "\n  20000 random filters agree with the reference: %zu; mutants parsed: %zu\n",
            agreed, mutated_parsed);
    CU_ASSERT_EQUAL(agreed, 20000);
}

static CU_TestInfo tests[] = {
    {"conditions: =, :, hasPrefix", test_conditions},
    {"a missing attribute: != and NOT pass it", test_missing_attribute},
    {"AND, OR, NOT and -", test_boolean_operators},
    {"precedence, parentheses, no mixing of AND and OR", test_precedence_and_parentheses},
    {"whitespace and whole words", test_layout},
    {"attribute names, bare and quoted", test_attribute_names},
    {"string literals and escapes", test_string_literals},
    {"errors name their position", test_error_positions},
    {"depth and length bounds", test_depth_and_length},
    {"no filter, duplicate names, reuse", test_no_filter_and_duplicates},
    {"garbage is refused without a crash", test_garbage},
    {"random filters agree with a reference", test_random_filters},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"filter", NULL, NULL, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
