/* SPDX-License-Identifier: MIT */
/* JSON without a tree, for the fast paths of hot request bodies: a one-pass scanner
 * (whitespace, strings, numbers, whole values copied compact) and a string writer. The
 * scanner accepts only what jansson accepts too and gives up on anything else, so a caller
 * can leave every body it declines to its jansson path, whose answers stay the reference. */
#ifndef MSM_JSON_SCAN_H
#define MSM_JSON_SCAN_H

#include "msm/buf.h"

#include <stddef.h>
#include <stdint.h>

/** Deepest value msm_json_scan_value() copies (jansson allows more: deeper gives up). */
#define MSM_JSON_SCAN_MAX_DEPTH 32
/** Most members of one object msm_json_scan_value() checks for duplicates (more: gives up). */
#define MSM_JSON_SCAN_MAX_KEYS 32

/** Flags of msm_json_scan_t. */
#define MSM_JSON_SCAN_UNICODE    0x1 /**< decode \uXXXX escapes (else give up on them) */
#define MSM_JSON_SCAN_AS_JANSSON 0x2 /**< copy values as jansson prints them (implies UNICODE) */

/**
 * A scan of @p p .. @p end that writes what it reads (decoded strings, compacted values) to
 * the caller's arena at @p out. Nothing written is longer than what it was read from (a
 * string's quotes make room for its NUL), except a real number printed as jansson does (1e5
 * is 100000.0): that one checks @p out_end and gives up when it does not fit.
 */
typedef struct {
    const char *p, *end;
    char *out, *out_end;
    int flags;
} msm_json_scan_t;

/** @brief Skips JSON whitespace. */
void msm_json_scan_ws(msm_json_scan_t *s);

/** @brief Skips whitespace, then @p c if it is next. @returns 1 when it was, else 0. */
int msm_json_scan_eat(msm_json_scan_t *s, char c);

/**
 * @brief The string at s->p (its opening quote). @p decode: its value, NUL-terminated;
 * else its JSON text (as written, or as jansson prints it with MSM_JSON_SCAN_AS_JANSSON).
 * Gives up on invalid UTF-8, control characters, bad escapes, \u0000 and lone surrogates
 * (as jansson refuses them), and on any \u escape without MSM_JSON_SCAN_UNICODE or
 * MSM_JSON_SCAN_AS_JANSSON.
 * @param escaped set to 1 when the string had an escape (may be NULL)
 * @returns the start of what was written, or NULL to give up.
 */
char *msm_json_scan_string(msm_json_scan_t *s, int decode, int *escaped);

/**
 * @brief An object member's name and its colon, whitespace skipped around them: the name
 * decoded (as msm_json_scan_string() with decode). @returns it, or NULL to give up.
 */
char *msm_json_scan_name(msm_json_scan_t *s);

/**
 * @brief Steps through an object's members. The first call (@p *count 0) reads its '{';
 * each call then reads one member's name and colon, leaving s->p at its value, which the
 * caller reads before the next call; the call after the last value reads the '}'.
 * @param count members read so far (start at 0)
 * @param name the member's name, decoded (as msm_json_scan_name())
 * @returns 1 for a member, 0 at the end of the object, -1 to give up.
 */
int msm_json_scan_member(msm_json_scan_t *s, size_t *count, char **name);

/**
 * @brief A number, copied (as jansson prints it with MSM_JSON_SCAN_AS_JANSSON: "-0" is 0, a
 * real as "%.17g" with ".0" when it looks like an integer; an exponent needs that flag).
 * Gives up on integers of more than 18 characters and reals of more than 300, which jansson
 * may find out of range.
 * @param int_value when not NULL, the number must be a non-negative integer: stored there,
 * nothing written.
 * @returns 0, or -1 to give up.
 */
int msm_json_scan_number(msm_json_scan_t *s, int64_t *int_value);

/**
 * @brief Any JSON value, copied compact (no whitespace). Gives up deeper than
 * MSM_JSON_SCAN_MAX_DEPTH, on objects with more than MSM_JSON_SCAN_MAX_KEYS members or with
 * a duplicate name (jansson's JSON_REJECT_DUPLICATES; without AS_JANSSON, on any name with an
 * escape too: two spellings could be one name).
 * @param depth the depth of the value (0 for a top-level one)
 * @returns 0, or -1 to give up.
 */
int msm_json_scan_value(msm_json_scan_t *s, int depth);

/**
 * @brief Appends @p s (@p len bytes of valid UTF-8) as a JSON string, escaped exactly as
 * jansson's json_dumps() does, and keeps a NUL after it like msm_buf_append().
 * @returns MSM_OK or MSM_ERR_NOMEM.
 */
int msm_json_append_string(msm_buf_t *b, const char *s, size_t len);

#endif
