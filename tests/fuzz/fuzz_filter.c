/* SPDX-License-Identifier: MIT */
/* libFuzzer target: msm_filter_parse() on arbitrary bytes, as PUT /v1/subscriptions parses a
 * subscription's filter (docs/filter.md). A refused filter must say where, inside the text; a
 * parsed one is matched against a few attribute sets, and must agree with its own negation
 * and parenthesised form: the matcher reads the tree the parser built. */
#include "msm/filter.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant is reported like a crash, so libFuzzer keeps the input. */
static void fail(const char *what)
{
    fprintf(stderr, "fuzz_filter: %s\n", what);
    abort();
}

/* Attribute sets an event may carry: none, a few names the corpus and dictionary use, an
 * empty value, a non-ASCII name. */
#define NSETS 4
static Msm__V1__Event__AttributesEntry e_kind = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT,
                                       e_a = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT,
                                       e_empty = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT,
                                       e_utf8 = MSM__V1__EVENT__ATTRIBUTES_ENTRY__INIT;
static Msm__V1__Event__AttributesEntry *set_kind[] = {&e_kind, &e_a},
                                       *set_misc[] = {&e_empty, &e_utf8, &e_a};
static Msm__V1__Event__AttributesEntry *const *sets[NSETS] = {NULL, set_kind, set_misc,
                                                              set_kind + 1};
static const size_t set_sizes[NSETS] = {0, 2, 3, 1};

static void sets_init(void)
{
    e_kind.key = "kind";
    e_kind.value = "image";
    e_a.key = "a";
    e_a.value = "x";
    e_empty.key = "ce-type";
    e_empty.value = "";
    e_utf8.key = "\xc3\xa9t\xc3\xa9";
    e_utf8.value = "d\"quote";
}

/* Matches @p text against every set, into @p out; 0 when it does not parse. */
static int match_all(const char *text, int out[NSETS])
{
    msm_filter_t *f = msm_filter_parse(text, NULL, 0, NULL);
    if (!f)
        return 0;
    for (size_t i = 0; i < NSETS; i++)
        out[i] = msm_filter_match(f, sets[i], set_sizes[i]);
    msm_filter_free(f);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sets_init();
    /* The text as the registry gets it: NUL-terminated (a NUL inside ends it). */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text);
    char err[256] = "";
    size_t at = SIZE_MAX;
    msm_filter_t *f = msm_filter_parse(text, err, sizeof(err), &at);
    if (!f) {
        if (strncmp(err, "position ", 9) != 0 && strcmp(err, "out of memory") != 0)
            fail("an error without a position");
        if (at > len)
            fail("an error position past the end of the text");
        free(text);
        return 0;
    }
    int got[NSETS], again[NSETS];
    for (size_t i = 0; i < NSETS; i++)
        got[i] = msm_filter_match(f, sets[i], set_sizes[i]);
    msm_filter_free(f);

    /* "(X)" means X, "NOT (X)" its opposite (unless the wrapping goes past a bound). */
    char *wrapped = malloc(len + sizeof("NOT ()"));
    if (wrapped) {
        snprintf(wrapped, len + sizeof("NOT ()"), "(%s)", text);
        if (match_all(wrapped, again) && memcmp(got, again, sizeof(got)) != 0)
            fail("(X) does not match as X");
        snprintf(wrapped, len + sizeof("NOT ()"), "NOT (%s)", text);
        if (match_all(wrapped, again)) {
            for (size_t i = 0; i < NSETS; i++) {
                if (again[i] == got[i])
                    fail("NOT (X) matches as X");
            }
        }
        free(wrapped);
    }
    free(text);
    return 0;
}
