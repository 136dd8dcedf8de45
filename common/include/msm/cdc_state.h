/* SPDX-License-Identifier: MIT */
/* The per-(source, partition) state the CDC push (frontend) and pull (scheduler) share, and
 * the protocol of one batch over it (docs/cdc.md "One batch"): claim, marked append,
 * settle. Whichever path brings a change, it is published once:
 *
 *   claim   one script: the source exists and names the partition, no batch holds the
 *           partition (its lock), no earlier append is unresolved (its intent); takes the
 *           lock and writes the intent "this token may append up to sequence N to topic T"
 *           (Redis TIME as its start); answers the cursor and the sequences known durable
 *           above it (skip). An unresolved intent whose lock is gone and which is older
 *           than the append timeout is recovered first (below), then claimed again.
 *   append  the changes above the cursor, not in skip, in ONE append to events.<topic>
 *           marked "cdc:<source>:<partition>" with the token as tag and each change's
 *           sequence as value (msm_stream_append_marked()).
 *   settle  one script: durable: cursor := N, intent gone; nothing appended: intent gone;
 *           append failed (may be in anyway): intent kept for recovery. Frees the lock.
 *   recover msm_stream_marks() says which records of the token's append are durable:
 *           Redis "all" (one script wrote records and mark) → cursor := N; Kafka the
 *           sequences found → kept as skip. A crash between append and settle therefore
 *           never publishes a change twice, on either log backend.
 *
 * Keys (under the namespace, hash tag {registry} like the sources, so one script sees
 * them all; Redis Cluster keeps them in one slot):
 *   {registry}:cdc:<source>:cursor    hash partition → last sequence published
 *   {registry}:cdc:<source>:intent    hash partition → "<token>|<since ms>|<to>|<topic>|<skip,…>"
 *   {registry}:cdc:<source>:lock:<p>  string: the token of the batch in progress (PX)
 *   {registry}:cdc:<source>:notified  hash partition → the highest sequence notified
 *   {registry}:cdc:<source>:lease:<p> string: the scheduler that pulls the partition (PX)
 *   {registry}:cdc:notify             stream: notifications for the schedulers (capped)
 *   {registry}:cdc:members            zset: scheduler → last lease round (unix ms)
 * Deleting a source removes its keys; a PUT that drops partitions removes theirs.
 *
 * Threading: the loop's thread. */
#ifndef MSM_CDC_STATE_H
#define MSM_CDC_STATE_H

#include "msm/cdc.h"
#include "msm/redis.h"
#include "msm/stream.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define MSM_KEY_CDC_CURSOR   "{registry}:cdc:%s:cursor"
#define MSM_KEY_CDC_INTENT   "{registry}:cdc:%s:intent"
#define MSM_KEY_CDC_LOCK     "{registry}:cdc:%s:lock:%s"
#define MSM_KEY_CDC_NOTIFIED "{registry}:cdc:%s:notified"
#define MSM_KEY_CDC_LEASE    "{registry}:cdc:%s:lease:%s"
#define MSM_KEY_CDC_NOTIFY   "{registry}:cdc:notify"
#define MSM_KEY_CDC_MEMBERS  "{registry}:cdc:members"

/** Entries kept in the notify stream (MAXLEN ~): a scheduler that falls further behind
 *  misses notifications, never changes (its poll still finds them). */
#define MSM_CDC_NOTIFY_MAXLEN 1000
/** A push holds its partition's lock this long at most (a pull renews its own). */
#define MSM_CDC_PUSH_LOCK_MS 60000
/** Kafka record timestamps are the appender's clock, an intent's start Redis's: the read
 *  back for a recovery starts this much earlier. */
#define MSM_CDC_CLOCK_MARGIN_MS 60000

typedef struct msm_cdc_state_s msm_cdc_state_t;

/**
 * @brief The protocol on @p redis (state) and @p log (events.<topic>); an intent whose lock
 * is gone is recovered once it is @p append_timeout_ms old (no append of it can still be
 * in flight: use log.append_timeout_ms). @returns NULL when out of memory.
 * @remark both clients are borrowed and must outlive the state.
 */
msm_cdc_state_t *
msm_cdc_state_new(msm_redis_t *redis, msm_stream_t *log, uint64_t append_timeout_ms);
/** @brief Frees @p st; claims and settles still in flight complete first (then it goes). */
void msm_cdc_state_free(msm_cdc_state_t *st);
/** @brief Claims and settles in flight. */
size_t msm_cdc_state_pending(const msm_cdc_state_t *st);

/** @brief The mark of a partition's appends, "cdc:<source>:<partition>", into @p buf.
 *  @returns MSM_OK or MSM_ERR_TOOLARGE. */
int msm_cdc_mark_name(char *buf, size_t n, const char *source, const char *partition);

typedef enum {
    MSM_CDC_CLAIMED = 0,      /**< the batch may go: lock and intent are ours */
    MSM_CDC_NO_SOURCE = 1,    /**< no such source */
    MSM_CDC_NO_PARTITION = 2, /**< the source has no such partition */
    MSM_CDC_BUSY = 3,         /**< another batch holds the partition: retry after retry_ms */
    MSM_CDC_NOT_OWNER = 4,    /**< lease_member does not hold the partition's lease */
} msm_cdc_claim_status_t;

/** What a claim found; everything is borrowed for the callback's duration. */
typedef struct {
    int status;           /**< msm_cdc_claim_status_t, or a negative msm_err_t */
    const char *reason;   /**< status < 0: why (Redis or the log unavailable...) */
    int64_t cursor;       /**< CLAIMED: the last sequence published */
    const json_t *source; /**< CLAIMED: the stored source */
    const char *topic;    /**< CLAIMED: its topic, the one the intent names */
    const int64_t *skip;  /**< CLAIMED: sequences above the cursor known durable */
    size_t nskip;
    int64_t retry_ms; /**< BUSY: when the partition may be free */
    int recovered;    /**< an interrupted append was recovered before the claim */
} msm_cdc_claim_t;

typedef void msm_cdc_claim_cb(const msm_cdc_claim_t *res, void *opaque);

typedef struct {
    const char *source;
    const char *partition;
    const char *token;        /**< unique per batch: the lock's value and the mark's tag */
    const char *lease_member; /**< pull: the claim needs this member's lease; NULL: push */
    uint64_t lock_ms;         /**< how long the lock lives unless renewed */
    int64_t last_sequence;    /**< the batch's highest sequence (the intent's end) */
} msm_cdc_claim_args_t;

/**
 * @brief Claims a batch (above). @p cb fires once, never from inside this call.
 * @returns MSM_OK, or an error and no callback.
 */
int msm_cdc_claim(msm_cdc_state_t *st,
                  const msm_cdc_claim_args_t *a,
                  msm_cdc_claim_cb *cb,
                  void *opaque);

/** @brief Non-zero when change @p seq of a claimed batch is published already (at or below
 *  the cursor, or in skip): drop it. */
int msm_cdc_published(const msm_cdc_claim_t *res, int64_t seq);

typedef enum {
    MSM_CDC_DURABLE = 0, /**< the append is durable: every change up to `to` is published */
    MSM_CDC_NOTHING = 1, /**< nothing was appended (every change a duplicate, or refused) */
    MSM_CDC_UNKNOWN = 2, /**< the append failed and may be in partly: recover it later */
} msm_cdc_outcome_t;

/** @p ours: 0 when the intent was no longer the token's (the source was deleted, or the
 *  batch was taken for dead and recovered): the cursor did not move. */
typedef void msm_cdc_settle_cb(int err, const char *reason, int64_t cursor, int ours, void *opaque);

/**
 * @brief Ends the batch @p token of a claim (above) and frees its lock; @p to is its highest
 * sequence (used by DURABLE). @p cb may be NULL; it fires once, never from inside this call.
 * @returns MSM_OK, or an error and no callback.
 */
int msm_cdc_settle(msm_cdc_state_t *st,
                   const char *source,
                   const char *partition,
                   const char *token,
                   msm_cdc_outcome_t outcome,
                   int64_t to,
                   msm_cdc_settle_cb *cb,
                   void *opaque);

#endif
