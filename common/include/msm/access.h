/* SPDX-License-Identifier: MIT */
/* The guard in front of a daemon's routes (API.md "Security"): the caller's bearer token
 * names a principal (msm/auth.h) — or, without an Authorization header, the CN of its
 * verified TLS client certificate does — and one table per daemon says which scope each
 * route needs. /healthz and /readyz stay open; a route the table does not name needs "admin"
 * (/metrics, /debug/info and anything internal). With no token file there is no guard. */
#ifndef MSM_ACCESS_H
#define MSM_ACCESS_H

#include "msm/auth.h"
#include "msm/http_server.h"

#include <stddef.h>

/** Any principal with a valid token (e.g. listings whose rows are filtered later). */
#define MSM_ACCESS_ANY "any"

/** One row of a daemon's table. */
typedef struct {
    const char *method;  /**< "GET", ... */
    const char *pattern; /**< the route's pattern, exactly as registered */
    const char *kind;    /**< scope kind ("publish", "subscribe", "replay", "schemas",
                              "admin"), MSM_ACCESS_ANY, or NULL: open to anyone */
    const char *param;   /**< path parameter naming the resource ("topic", "name"), or NULL */
} msm_access_rule_t;

typedef struct msm_access_s msm_access_t;

/** @brief A guard over @p auth (borrowed) with @p rules (borrowed: a static table). */
msm_access_t *msm_access_new(msm_auth_t *auth, const msm_access_rule_t *rules, size_t n);
void msm_access_free(msm_access_t *a);

/** @brief Replaces the table (a daemon's own, set after start). */
void msm_access_set_rules(msm_access_t *a, const msm_access_rule_t *rules, size_t n);

/** @brief The msm_http_guard_cb to install with msm_http_server_set_guard(srv, ..., a). */
int msm_access_guard(msm_http_req_t *req, const char *pattern, void *opaque, char *msg, size_t n);

/**
 * @brief For handlers whose resource is in the body (the protobuf publish RPC, a CDC
 * source's topic): whether the caller holds @p kind for @p resource. Always true when the
 * daemon runs without a token file (no principal on the request).
 */
int msm_access_can(const msm_http_req_t *req, const char *kind, const char *resource);

/**
 * @brief The caller's publish quota for @p n events (msm_principal_take()).
 * @returns 0, or the ms to put in Retry-After.
 */
int64_t msm_access_take(msm_http_req_t *req, uint64_t n);

#endif
