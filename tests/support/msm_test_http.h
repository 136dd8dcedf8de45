/* SPDX-License-Identifier: MIT */
/* Test support: one blocking HTTP request (libcurl easy) for tests that drive daemons as
 * processes. Not for the loop's thread of a daemon: it blocks. */
#ifndef MSM_TEST_HTTP_H
#define MSM_TEST_HTTP_H

#include <jansson.h>

/**
 * @brief @p method @p url with @p body (NULL: none) as application/json, 20 s at most.
 * @param out receives the answer's body, NUL-terminated and malloc'd (NULL when there was
 *        none); the caller frees it. May be NULL.
 * @returns the HTTP status, 0 when no answer came.
 */
long msm_test_http(const char *method, const char *url, const char *body, char **out);

/**
 * @brief The same, the answer parsed as JSON into @p out (NULL when it is not JSON; may be
 * NULL), to decref.
 */
long msm_test_http_json(const char *method, const char *url, const char *body, json_t **out);

#endif
