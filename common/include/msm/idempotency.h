/* SPDX-License-Identifier: MIT */
/* Idempotency keys of publishes (docs/publish.md "Idempotency keys"), shared by every
 * publisher that appends to events.<topic>: the frontend's publish forms and the scheduler's
 * recurring schedules. A key is scoped to its topic and lives in Redis as
 * "<ns>:idem:{<topic>}:<key>" (one hash slot per topic), in two steps around the append:
 *
 *   claim   SET NX "p:<id>" with a pending TTL: claimed, or the first publish's id (a
 *           duplicate), or someone else's claim still in flight (busy);
 *   settle  commit: the claim becomes the id for the window; release: the claim is deleted
 *           (the append failed). Only keys still holding this publisher's claim change.
 *
 * A publisher that dies between its append and the commit leaves a claim that expires after
 * the pending TTL; whoever claims the key then publishes again (at least once, never lost).
 *
 * Threading: loop thread of the Redis client, like msm/redis.h. */
#ifndef MSM_IDEMPOTENCY_H
#define MSM_IDEMPOTENCY_H

#include "msm/id.h"
#include "msm/redis.h"

#include <stddef.h>
#include <stdint.h>

typedef struct msm_idem_s msm_idem_t;

/** What a claim found for one key. */
typedef enum {
    MSM_IDEM_CLAIMED = 0,   /**< the key is this publisher's now: append, then settle */
    MSM_IDEM_DUPLICATE = 1, /**< published before: id holds the first publish's id */
    MSM_IDEM_BUSY = 2,      /**< another publish of this key is in flight (not durable yet) */
} msm_idem_state_t;

typedef struct {
    msm_idem_state_t state;
    char id[MSM_ID_STR_SIZE]; /**< MSM_IDEM_DUPLICATE: the id the key was committed to */
} msm_idem_result_t;

/** Completion of msm_idem_claim(): @p err MSM_OK with one result per key, in order
 *  (borrowed for the call), or MSM_ERR_BACKEND with @p why (then nothing is known: claims
 *  that were made expire after the pending TTL). */
typedef void msm_idem_claimed_cb(
    int err, const char *why, const msm_idem_result_t *results, size_t n, void *opaque);
/** Completion of msm_idem_settle(): MSM_OK, or MSM_ERR_BACKEND with @p why (the claims then
 *  expire after their pending TTL). */
typedef void msm_idem_settled_cb(int err, const char *why, void *opaque);

/** Longest key msm_idem_claim() takes (the API's idempotency_key limit is 256 bytes). */
#define MSM_IDEM_KEY_MAX 1024

/** @brief The two scripts, prepared once per owner. @returns NULL when out of memory. */
msm_idem_t *msm_idem_new(void);
/** @brief Frees @p idem. @remark no claim or settle of it may still be pending. */
void msm_idem_free(msm_idem_t *idem);

/**
 * @brief Claims @p n keys of @p topic for the events @p ids (one script, one round trip).
 * @param keys the idempotency keys (at most MSM_IDEM_KEY_MAX bytes each; a key may appear
 *        once only: the caller resolves repeats inside one publish)
 * @param pending_ms how long a claim outlives a publisher that dies before settling it;
 *        longer than the publisher's append may take (log.append_timeout_ms)
 * @returns MSM_OK when @p cb will be called (never from inside this call); MSM_ERR_NOMEM,
 * MSM_ERR_TOOLARGE or msm_redis_eval()'s error otherwise, and no callback.
 */
int msm_idem_claim(msm_idem_t *idem,
                   msm_redis_t *r,
                   const char *topic,
                   const char *const *keys,
                   const char *const *ids,
                   size_t n,
                   uint64_t pending_ms,
                   msm_idem_claimed_cb *cb,
                   void *opaque);

/**
 * @brief Settles keys this publisher claimed for @p ids: @p commit non-zero keeps each as
 * its id for @p window_ms (later claims find a duplicate), zero deletes the claims.
 * @returns as msm_idem_claim().
 */
int msm_idem_settle(msm_idem_t *idem,
                    msm_redis_t *r,
                    const char *topic,
                    const char *const *keys,
                    const char *const *ids,
                    size_t n,
                    int commit,
                    uint64_t window_ms,
                    msm_idem_settled_cb *cb,
                    void *opaque);

#endif
