/* SPDX-License-Identifier: MIT */
/* The schema registry's state in Redis (written by the frontend's registry endpoints, read
 * by every daemon that handles payloads) and a cache of compiled schemas by id.
 *
 * Keys (under the namespace, docs/schemas.md):
 * (all under the hash tag {registry}, with the registry's keys: the scripts that register
 * a version touch several of them and the registry's version, so they share one Redis
 * Cluster slot)
 *   schemas:next_id                     counter of global ids (the first id is 1)
 *   schemas:id:<id>                     hash: type, schema (text as first registered),
 *                                       message_name (PROTOBUF)
 *   schemas:fingerprints                hash: SHA-256 hex of "<TYPE>\n<canonical>" -> id
 *   schemas:subjects                    set of subjects with at least one version
 *   schemas:subject:<subject>:versions  list of ids, version N at index N-1
 *   schemas:config                      hash: subject -> compatibility; "" = global
 * A schema's id never changes and its text never changes: compiled schemas are cached by id
 * forever (bounded by count). Registering a version also bumps registry:version, so every
 * daemon's registry watcher sees that a subject's latest version may have changed.
 *
 * Threading: the loop's thread. */
#ifndef MSM_SCHEMA_STORE_H
#define MSM_SCHEMA_STORE_H

#include "msm/redis.h"
#include "msm/schema.h"

#include <stddef.h>

#define MSM_KEY_SCHEMA_ID_PREFIX     "{registry}:schemas:id:"
#define MSM_KEY_SCHEMA_NEXT_ID       "{registry}:schemas:next_id"
#define MSM_KEY_SCHEMA               MSM_KEY_SCHEMA_ID_PREFIX "%d"
#define MSM_KEY_SCHEMA_FINGERPRINTS  "{registry}:schemas:fingerprints"
#define MSM_KEY_SCHEMA_SUBJECTS      "{registry}:schemas:subjects"
#define MSM_KEY_SCHEMA_VERSIONS      "{registry}:schemas:subject:%s:versions"
#define MSM_KEY_SCHEMA_CONFIG        "{registry}:schemas:config"

/** Compiled schemas kept by default. */
#define MSM_SCHEMA_STORE_DEFAULT_CACHE 1024

typedef struct msm_schema_store_s msm_schema_store_t;

/**
 * A schema by id. @p s is NULL with @p err MSM_ERR_NOTFOUND (no such id), MSM_ERR_BACKEND
 * (Redis did not answer) or MSM_ERR_INVALID (stored text no longer compiles), @p why saying
 * more. @p s is borrowed: valid only during the call.
 */
typedef void msm_schema_got_cb(const msm_schema_t *s, int id, int err, const char *why,
                               void *opaque);

/** @brief A store on @p redis keeping up to @p cache_max compiled schemas (0 = default). */
msm_schema_store_t *msm_schema_store_new(msm_redis_t *redis, size_t cache_max);

/** @brief Frees the store. Fetches still in flight complete with MSM_ERR_BACKEND first. */
void msm_schema_store_free(msm_schema_store_t *st);

/**
 * @brief The schema @p id: @p cb runs inside this call when it is cached, otherwise once
 * Redis answered (concurrent requests for one id share one fetch).
 * @returns MSM_OK when @p cb was or will be called, MSM_ERR_NOMEM otherwise.
 */
int msm_schema_store_get(msm_schema_store_t *st, int id, msm_schema_got_cb *cb, void *opaque);

/** @brief Puts a schema the caller just compiled under @p id (takes @p s; freed at once
 *  when that id is cached already or cannot be). */
void msm_schema_store_put(msm_schema_store_t *st, int id, msm_schema_t *s);

#endif
