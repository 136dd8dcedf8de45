/* SPDX-License-Identifier: MIT */
/* Who may call what (API.md "Security"): principals from a token file, each with scopes and
 * an optional publish quota. Only SHA-256 digests of the tokens are stored, and a presented
 * token is compared with every digest in constant time.
 *
 * The file is a JSON array:
 *     [{"name":"orders-svc","token_sha256":"<64 hex>","scopes":["publish:orders*"],
 *       "publish_per_s":100}]
 * Scopes: "admin" (everything), "schemas" (schema registry changes), "publish:<pattern>"
 * (topics), "subscribe:<pattern>" (subscriptions: create, change, read, pause, tasks),
 * "replay:<pattern>" (a subscription's dead letters). A pattern is a name where '*' matches
 * any run of characters ("orders*", "*"). */
#ifndef MSM_AUTH_H
#define MSM_AUTH_H

#include <stddef.h>
#include <stdint.h>

typedef struct msm_auth_s msm_auth_t;
typedef struct msm_principal_s msm_principal_t;

/**
 * @brief Loads the token file at @p path.
 * @returns the principals, or NULL with one line in @p err (unreadable file, not the format
 * above, an unknown key or scope, a duplicate name or digest).
 */
msm_auth_t *msm_auth_load(const char *path, char *err, size_t err_size);

void msm_auth_free(msm_auth_t *a);

/** @brief Number of principals. */
size_t msm_auth_count(const msm_auth_t *a);

/**
 * @brief The principal a bearer token belongs to, or NULL. The token's SHA-256 is compared
 * with every principal's in constant time (no early exit on the first match either).
 */
msm_principal_t *msm_auth_by_token(msm_auth_t *a, const char *token, size_t len);

/** @brief The principal named @p name (a TLS client certificate's subject), or NULL. */
msm_principal_t *msm_auth_by_name(msm_auth_t *a, const char *name);

const char *msm_principal_name(const msm_principal_t *p);

/**
 * @brief Whether @p p holds @p kind ("admin", "schemas", "publish", "subscribe", "replay")
 * for @p resource (a topic or subscription name; NULL for kinds without one, and for "any
 * resource of this kind"). "admin" holds every scope.
 */
int msm_principal_can(const msm_principal_t *p, const char *kind, const char *resource);

/**
 * @brief The publish quota: @p n events taken at monotonic time @p now_ms from a bucket
 * refilled at publish_per_s that holds at most one second's worth. A batch bigger than what
 * is left is taken when the bucket is not empty (it then owes the difference), so the rate
 * holds on average whatever the batch size.
 * @returns 0 when taken (always without a quota), else the ms until the bucket has room.
 */
int64_t msm_principal_take(msm_principal_t *p, uint64_t n, uint64_t now_ms);

/** @brief Whether @p s is a valid scope (for messages and the token file's checks). */
int msm_auth_scope_valid(const char *s);

/** @brief '*'-glob match of @p name against @p pattern. */
int msm_auth_glob(const char *pattern, const char *name);

#endif
