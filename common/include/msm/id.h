/* SPDX-License-Identifier: MIT */
/* Event ids: UUIDv7 (RFC 9562) — 48-bit unix ms, version 7, RFC variant, a 42-bit counter
 * that is monotonic within a millisecond (method 1 of RFC 9562 §6.2), and random bits.
 * Ids made in one process sort, as bytes or as strings, in the order they were made. */
#ifndef MSM_ID_H
#define MSM_ID_H

#include <stddef.h>
#include <stdint.h>

/** Length of the text form "0190a3e2-...": 36 characters. */
#define MSM_ID_STR_LEN 36
/** Buffer size for the text form plus NUL. */
#define MSM_ID_STR_SIZE 37

/** A UUID in network byte order (what RFC 9562 calls its binary form). */
typedef struct {
    uint8_t b[16];
} msm_id_t;

/**
 * @brief Makes a new UUIDv7. Within one process every id is greater than the previous one
 * (a counter orders ids of the same millisecond; if the wall clock steps back, the last
 * timestamp is kept until the clock catches up).
 * @remark Thread-safe (a process-wide lock around the timestamp and counter). A forked
 * child gets a fresh random counter and random bits, so it never repeats its parent's ids.
 */
void msm_id_new(msm_id_t *out);

/**
 * @brief Makes a new UUIDv7 and writes its text form (36 lowercase characters plus NUL).
 * @param buf at least MSM_ID_STR_SIZE bytes
 * @returns @p buf
 */
char *msm_id_new_str(char *buf);

/**
 * @brief A UUIDv7 made of @p ts_ms and the SHA-256 of @p seed instead of a counter and random
 * bits: the same inputs always give the same id (a recurring schedule's tick is one event
 * whoever publishes it, and however often). Ids of different seeds collide no more often
 * than random ones.
 */
void msm_id_derive(int64_t ts_ms, const void *seed, size_t seed_len, msm_id_t *out);

/**
 * @brief Writes the canonical text form of @p id: 8-4-4-4-12 lowercase hex digits.
 * @param buf at least MSM_ID_STR_SIZE bytes
 * @returns @p buf
 */
char *msm_id_format(const msm_id_t *id, char *buf);

/**
 * @brief Parses the 36-character 8-4-4-4-12 hex form (either case) of any UUID.
 * @param s NUL-terminated text; anything else (braces, "urn:uuid:", no dashes, spaces)
 * is rejected
 * @param out receives the id; may be NULL to only validate
 * @returns MSM_OK or MSM_ERR_PARSE.
 */
int msm_id_parse(const char *s, msm_id_t *out);

/** @brief Like msm_id_parse() on @p len bytes that need not be NUL-terminated. */
int msm_id_parse_n(const char *s, size_t len, msm_id_t *out);

/** @brief The version nibble of @p id (7 for ids made here). */
int msm_id_version(const msm_id_t *id);

/**
 * @brief The unix ms timestamp of a UUIDv7 (its first 48 bits).
 * @returns the timestamp, or -1 if @p id is not version 7 with the RFC variant.
 */
int64_t msm_id_timestamp_ms(const msm_id_t *id);

/** @brief memcmp order of two ids (<0, 0, >0): for UUIDv7, creation order. */
int msm_id_compare(const msm_id_t *a, const msm_id_t *b);

#endif
