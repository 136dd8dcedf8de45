/* SPDX-License-Identifier: MIT */
/* jansson helpers for HTTP handlers: parse a request body, read typed fields while recording
 * precise errors with their JSON path, and build the API.md error body from them. */
#ifndef MSM_JSON_H
#define MSM_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The API.md error body, built by msm_json_error_body():
 *
 *     {"error":{"code":"INVALID_ARGUMENT",
 *               "message":"events[3].delay_ms: must be >= 0",
 *               "details":[{"field":"events[3].delay_ms","description":"must be >= 0"},
 *                          {"field":"events[5].data","description":"is required"}]}}
 *
 * - code: UPPER_SNAKE (INVALID_ARGUMENT, NOT_FOUND, PAYLOAD_TOO_LARGE, ...).
 * - message: one human-readable line; for validation errors the first detail.
 * - details: always an array (possibly empty). Each entry has "field", the path of the
 *   offending value relative to the request body ("$" is the body itself; object members
 *   are joined with '.', array elements as [i], members whose names are not
 *   [A-Za-z0-9_-]+ as ["name"]), and "description", what is wrong ("is required", "must be
 *   a string", "must be >= 0", "unknown field"). A parse error adds "line" and "column"
 *   (1-based) to its entry.
 */

/** Most details one collector keeps (the rest are counted, not listed). */
#define MSM_JSON_MAX_DETAILS 32
/** Longest field path kept; deeper paths are truncated with "...". */
#define MSM_JSON_PATH_MAX 256
/** Deepest push nesting. */
#define MSM_JSON_DEPTH_MAX 32

/**
 * A collector of validation errors with a current path (the "cursor"): push a member or
 * an index when descending into a value, pop when leaving it. Lives in the caller's storage:
 * msm_json_err_init() before use, msm_json_err_deinit() after.
 */
typedef struct {
    json_t *je_details;   /* array of {"field","description"}, NULL until the first error */
    size_t je_count;      /* errors recorded (may exceed the details kept) */
    size_t je_depth;      /* push depth */
    size_t je_pathlen;    /* current length of je_path */
    size_t je_marks[MSM_JSON_DEPTH_MAX]; /* je_pathlen before each push */
    char je_path[MSM_JSON_PATH_MAX];     /* current path, "" = the body */
    char je_message[256]; /* "field: description" of the first error */
} msm_json_err_t;

/** Flags of the typed getters. */
#define MSM_JSON_OPTIONAL 0x0 /**< absent is fine: *out is left untouched (keep a default) */
#define MSM_JSON_REQUIRED 0x1 /**< absent is an error: "is required" */
#define MSM_JSON_NULLABLE 0x2 /**< a JSON null counts as absent */
#define MSM_JSON_NONEMPTY 0x4 /**< strings, arrays, objects: must not be empty */

/** @brief Prepares @p e (no allocation). */
void msm_json_err_init(msm_json_err_t *e);

/** @brief Releases what @p e holds; it may be initialised again afterwards. */
void msm_json_err_deinit(msm_json_err_t *e);

/** @brief Errors recorded so far (0 = valid). */
size_t msm_json_err_count(const msm_json_err_t *e);

/** @brief The first error as "field: description", or "" when none. Owned by @p e. */
const char *msm_json_err_message(const msm_json_err_t *e);

/**
 * @brief Moves the details array out of @p e (an empty array when there are none).
 * @returns a new reference the caller owns, or NULL when out of memory.
 */
json_t *msm_json_err_take_details(msm_json_err_t *e);

/** @brief Descends into member @p key of the current value. */
void msm_json_path_push_key(msm_json_err_t *e, const char *key);

/** @brief Descends into element @p index of the current array. */
void msm_json_path_push_index(msm_json_err_t *e, size_t index);

/** @brief Leaves the innermost pushed member or element (no-op at the top). */
void msm_json_path_pop(msm_json_err_t *e);

/**
 * @brief Records an error at the current path, extended by @p key when not NULL.
 * @param fmt printf format of the description
 */
void msm_json_err_add(msm_json_err_t *e, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * @brief Parses a request body. Rejects empty bodies, trailing garbage, duplicate object keys
 * and NUL bytes in strings.
 * @param data the bytes (need not be NUL-terminated)
 * @param len their length
 * @param e on failure receives one detail at "$": "invalid JSON: <reason>" with "line" and
 *        "column"
 * @returns a new reference the caller owns, or NULL on failure.
 */
json_t *msm_json_parse(const char *data, size_t len, msm_json_err_t *e);

/*
 * Typed getters. Each reads member @p key of @p obj (which must be an object; otherwise the
 * member counts as absent) and returns MSM_OK when the value is valid or absent-and-allowed
 * (then *out is untouched), MSM_ERR_INVALID after recording an error at "<path>.<key>".
 * Wrong type: "must be a string" / "must be an integer" / ...
 */

/** @brief A string (borrowed from @p obj). */
int msm_json_get_str(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                     const char **out);

/** @brief A string of at most @p max_len bytes (0 = unlimited); see msm_json_get_str(). */
int msm_json_get_strn(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                      size_t max_len, const char **out);

/**
 * @brief An integer in [@p min, @p max] ("must be >= min", "must be <= max" or "must be
 * between min and max"). A real number with an integral value (e.g. 5.0) is refused:
 * "must be an integer".
 */
int msm_json_get_int(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                     int64_t min, int64_t max, int64_t *out);

/** @brief Any JSON number in [@p min, @p max]. */
int msm_json_get_double(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                        double min, double max, double *out);

/** @brief true or false, stored as 1 or 0. */
int msm_json_get_bool(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                      int *out);

/** @brief An object (borrowed). */
int msm_json_get_object(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                        json_t **out);

/** @brief An array (borrowed). */
int msm_json_get_array(msm_json_err_t *e, const json_t *obj, const char *key, int flags,
                       json_t **out);

/**
 * @brief Checks that the value at the current path is an object ("must be an object").
 * @returns MSM_OK or MSM_ERR_INVALID.
 */
int msm_json_expect_object(msm_json_err_t *e, const json_t *v);

/**
 * @brief Records "unknown field" for every member of @p obj not named in @p allowed
 * (NULL-terminated). @returns MSM_OK or MSM_ERR_INVALID.
 */
int msm_json_check_known(msm_json_err_t *e, const json_t *obj, const char *const *allowed);

/**
 * @brief Builds `{"error":{"code":…,"message":…,"details":[…]}}`.
 * @param code UPPER_SNAKE code (copied)
 * @param message human-readable message (copied); NULL = ""
 * @param details array to use (reference STOLEN, even on failure), or NULL for []
 * @returns a new reference, or NULL when out of memory.
 */
json_t *msm_json_error_body(const char *code, const char *message, json_t *details);

/**
 * @brief Builds the error body of a failed validation: code INVALID_ARGUMENT (or @p code
 * when not NULL), the first error as message, every detail. Takes the details out of @p e.
 * @returns a new reference, or NULL when out of memory.
 */
json_t *msm_json_err_body(msm_json_err_t *e, const char *code);

/**
 * @brief Serialises @p v compactly (no spaces, keys in insertion order).
 * @param len receives the length (may be NULL)
 * @returns a malloc'd NUL-terminated string the caller frees, or NULL.
 */
char *msm_json_dump(const json_t *v, size_t *len);

/** @brief Non-zero when @p s has a byte below 0x20 or 0x7f (a text that may not travel as an
 *  HTTP header value or a log field). */
int msm_json_has_control_chars(const char *s);

/**
 * @brief Checks a text that may travel as an HTTP header (key, ordering key, CDC entity...):
 * longer than @p max bytes is an error in @p big (413), a control character one in @p e
 * (400), both at the current path extended by @p field.
 */
void msm_json_check_text(msm_json_err_t *e, msm_json_err_t *big, const char *field,
                         const char *v, size_t max);

/** @brief Non-zero when the media type @p ct (parameters ignored, case-insensitive) is
 *  application/json or any +json type; 0 for NULL. */
int msm_json_media_type(const char *ct);

#endif
