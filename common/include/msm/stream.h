/* SPDX-License-Identifier: MIT */
/* The durable log every layer meets in (events.*, ready.*, dispatch.*, status.*): named
 * streams split into partitions by key, appended in batches that complete once durable,
 * consumed by members of consumer groups with explicit acknowledgement (at-least-once),
 * kept bounded (Redis: trimmed behind the slowest group; Kafka: the topic's retention).
 * Two drivers stand behind it: Redis Streams and Kafka (librdkafka). Both pass one
 * contract suite (tests/common/test_stream_contract.c).
 *
 * Threading: everything, callbacks included, runs on the loop's thread. */
#ifndef MSM_STREAM_H
#define MSM_STREAM_H

#include "msm/metrics.h"
#include "msm/err.h"
#include "msm/loop.h"

#include <stddef.h>
#include <stdint.h>

typedef struct msm_stream_s msm_stream_t;
typedef struct msm_consumer_s msm_consumer_t;

typedef enum {
    MSM_STREAM_REDIS = 0,
    MSM_STREAM_KAFKA = 1,
} msm_stream_backend_t;

typedef struct {
    msm_stream_backend_t backend;
    const char *redis_url;     /**< redis://[:password@]host:port[/db] */
    const char *name_prefix;   /**< namespace: stream "events.x" is stored as "<prefix>…" */
    const char *kafka_brokers; /**< bootstrap.servers */
    /** Extra librdkafka properties, "key=value" strings, NULL-terminated (may be NULL). */
    const char *const *kafka_props;
    /** A consumed entry left unacknowledged this long by its member is given to another
     *  member (Redis: XPENDING IDLE / XCLAIM min-idle, per consumer with
     *  msm_consumer_set_lease(); Kafka: the group session timeout). 0 = 30000. */
    uint64_t lease_ms;
    /** An append not durable after this long fails with MSM_ERR_TIMEOUT. 0 = 10000. */
    uint64_t append_timeout_ms;
    /** Redis: approximate MAXLEN per partition stream on top of the trimming behind the
     *  slowest group; 0 = no cap (default). */
    uint64_t redis_maxlen;
    /** Redis: an append is durable only once this many replicas have it (WAIT after the
     *  write); fewer within redis_wait_timeout_ms fails the append. 0 = the master's word
     *  (its AOF) is enough. */
    int redis_min_replicas_acks;
    uint64_t redis_wait_timeout_ms; /**< 0 = 1000 */
    /** Kafka: topics msm creates get this replication factor (0 = the broker's
     *  default.replication.factor), min.insync.replicas (0 = the broker's) and retention.ms
     *  (0 = the broker's; -1 = forever). Existing topics keep theirs. */
    int kafka_replication_factor;
    int kafka_min_insync_replicas;
    int64_t kafka_retention_ms;
} msm_stream_conf_t;

/** One record to append. The key chooses the partition (hash); no key = partition 0..n by
 *  round robin. */
typedef struct {
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
} msm_record_t;

/** One consumed record; owned by the consumer until msm_consumer_ack() or the consumer
 *  is freed. */
typedef struct msm_stream_msg_s {
    const char *stream;        /**< stream name as given to msm_stream_consume() */
    int32_t partition;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    char position[48];         /**< driver position: Redis entry id, or Kafka offset */
    uint32_t redelivered;      /**< non-zero when this record was delivered before */
} msm_stream_msg_t;

/**
 * Completion of an append or ensure: @p err is MSM_OK only when every record is durable;
 * otherwise @p reason says why (none of the records should be assumed stored).
 */
typedef void msm_stream_done_cb(msm_err_t err, const char *reason, void *opaque);

/** A batch of consumed records, in log order per partition. The array is only valid during
 *  the call; the messages stay valid until acknowledged. */
typedef void msm_consumer_batch_cb(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n,
                                   void *opaque);

/** Backlog of a group on a stream: records not yet acknowledged, or -1 with err set. */
typedef void msm_stream_backlog_cb(msm_err_t err, int64_t backlog, void *opaque);

/**
 * @brief Creates a log client of the configured backend on @p loop.
 * @returns NULL on failure with the reason in @p errbuf.
 * @remark the conf strings are copied.
 */
msm_stream_t *msm_stream_new(msm_loop_t *loop, const msm_stream_conf_t *conf, char *errbuf,
                             size_t errbuf_size);

/** @brief Frees the client; pending appends complete with MSM_ERR_SHUTDOWN first. */
void msm_stream_free(msm_stream_t *s);

/** @brief The backend's name: "redis" or "kafka". */
const char *msm_stream_backend_name(const msm_stream_t *s);

/**
 * @brief Makes sure stream @p name exists with @p partitions partitions (never shrinks;
 * an existing stream keeps its count). @p cb is called once.
 */
int msm_stream_ensure(msm_stream_t *s, const char *name, int partitions, msm_stream_done_cb *cb,
                      void *opaque);

/**
 * @brief Appends @p n records to @p name; @p cb fires exactly once, after every record is
 * durable or with the reason they are not. The records are copied before return.
 * @returns MSM_OK when the append was started; an error (and no callback) otherwise.
 */
int msm_stream_append(msm_stream_t *s, const char *name, const msm_record_t *records, size_t n,
                      msm_stream_done_cb *cb, void *opaque);

/** Longest mark name (msm_stream_mark_t.name) and tag. */
#define MSM_STREAM_MARK_MAX 512

/**
 * What a marked append carries, so that which of its records are durable can be found out
 * later by anyone (msm_stream_marks()), even when the appender died before its callback:
 * @c name names a series of appends (e.g. "cdc:<source>:<partition>"; one appender at a
 * time), @c tag this append (unique, e.g. a UUID), @c values[i] records[i]'s value (e.g. a
 * sequence number). Names and tags: printable, no spaces, at most MSM_STREAM_MARK_MAX bytes.
 */
typedef struct {
    const char *name;
    const char *tag;
    const int64_t *values;
} msm_stream_mark_t;

/**
 * @brief As msm_stream_append(), carrying @p mark (copied).
 * Redis: the append is one script (all records or none) that also stores the tag as the
 * stream's mark @c name (its meta hash: one field per name, gone with the stream).
 * Kafka: each record carries the header "msm-mark: <name> <tag> <value>"; records in several
 * partitions are not appended atomically there.
 */
int msm_stream_append_marked(msm_stream_t *s, const char *name, const msm_record_t *records,
                             size_t n, const msm_stream_mark_t *mark, msm_stream_done_cb *cb,
                             void *opaque);

/**
 * What msm_stream_marks() found out: @p all non-zero when every record of the append is
 * durable; otherwise the values of its records that are, @p found[0..n) (borrowed for the
 * call; n = 0: none is).
 */
typedef void msm_stream_marks_cb(msm_err_t err, const char *reason, int all,
                                 const int64_t *found, size_t n, void *opaque);

/**
 * @brief Which records of the append marked (@p mark, @p tag) on @p name are durable.
 * Redis: all or none (the stream's mark @p mark holds @p tag, or not). Kafka: the records
 * carrying that mark and tag among those appended since @p since_ms (unix ms, compared with
 * the records' timestamps: give a margin for clock skew), read from every partition up to
 * its end when asked. Ask once the append can no longer be in flight (its callback ran, or
 * its appender died longer ago than the append timeout). @p cb fires once.
 * @returns MSM_OK, or an error and no callback.
 */
int msm_stream_marks(msm_stream_t *s, const char *name, const char *mark, const char *tag,
                     int64_t since_ms, msm_stream_marks_cb *cb, void *opaque);

/** @brief Appends not yet completed, and acknowledgements not yet confirmed by the backend
 *  (for back-pressure and graceful shutdown: drain until 0, then free). */
size_t msm_stream_pending_appends(const msm_stream_t *s);

/**
 * @brief Joins consumer group @p group on stream @p name as member @p member and starts
 * delivering batches of at most @p max_batch records to @p cb, holding off while
 * @p max_unacked records are unacknowledged (0: one batch; a @p max_batch above
 * @p max_unacked is lowered to it). A new group starts at the oldest record.
 * @returns NULL with the reason in @p errbuf on failure.
 */
msm_consumer_t *msm_stream_consume(msm_stream_t *s, const char *name, const char *group,
                                   const char *member, size_t max_batch, size_t max_unacked,
                                   msm_consumer_batch_cb *cb, void *opaque, char *errbuf,
                                   size_t errbuf_size);

/**
 * @brief Acknowledges @p msg (batched and flushed before the loop sleeps) and frees it.
 * An acknowledgement that never reaches the backend means a redelivery, never a loss.
 */
void msm_consumer_ack(msm_consumer_t *c, msm_stream_msg_t *msg);

/** @brief Records delivered to the application and not yet acknowledged. */
size_t msm_consumer_unacked(const msm_consumer_t *c);

/**
 * @brief Leaves the group and frees @p c. Unacknowledged records are not acknowledged:
 * another member receives them again (after the lease, on Redis; after the rebalance, on
 * Kafka).
 */
void msm_consumer_free(msm_consumer_t *c);

/**
 * @brief Has every batch come with a stamp: the integer held by key @p key (in the stream's
 * namespace; a missing key reads 0), read after the batch's records were read. A consumer
 * stamped with a version that every change increments learns, without a round trip of its
 * own, whether it already knows every change committed before its records were read.
 * Redis: a GET sent right behind each read on the consumer's connection, so the server runs
 * it as soon as the read is answered. Kafka: no stamps (MSM_ERR_INVALID).
 * @returns MSM_OK, MSM_ERR_NOMEM, or MSM_ERR_INVALID when the backend cannot stamp.
 */
int msm_consumer_set_stamp(msm_consumer_t *c, const char *key);

/**
 * @brief In a batch callback: the batch's stamp (msm_consumer_set_stamp()), or -1 when it
 * has none (no stamp asked, the key could not be read, records taken over from another
 * member).
 */
int64_t msm_consumer_stamp(const msm_consumer_t *c);

/**
 * @brief Sets this consumer's lease: how long an entry delivered to ANOTHER member of its
 * group must have stayed unacknowledged before this consumer takes it over. 0 restores the
 * client's conf.lease_ms (the default). Set it to more than the longest time a member may
 * hold a record (e.g. the longest push timeout plus a grace), so that a record still being
 * worked on is never taken by another member.
 *
 * Redis: the consumer's XPENDING IDLE / XCLAIM min-idle; the takeover scan runs every half
 * lease (bounded to 50 ms … 5 s). Members of one group should use the same lease: the
 * lease that protects a member's entries is the one of the members that would claim them.
 * Kafka: no effect, by design: a live member keeps its assigned partitions however long it
 * holds their records; a member that dies loses them after the group session timeout
 * (conf.lease_ms).
 */
void msm_consumer_set_lease(msm_consumer_t *c, uint64_t lease_ms);

/**
 * @brief Removes stream @p name: every partition with its records and consumer groups.
 * @p cb fires once: MSM_OK when the stream is gone (also when it did not exist).
 * Afterwards an append to @p name completes with MSM_ERR_NOTFOUND, as for a stream never
 * ensured, until it is ensured again. Consumers of the stream do not fail: they wait for it
 * to exist again, as a consumer started before its stream does; free them.
 * Redis: one DEL of the metadata hash and every partition stream.
 * Kafka: DeleteTopics through the client's worker; a cluster without a usable controller
 * (librdkafka's mock cluster) answers MSM_ERR_BACKEND.
 * @returns MSM_OK when the deletion was started; an error (and no callback) otherwise.
 */
int msm_stream_delete(msm_stream_t *s, const char *name, msm_stream_done_cb *cb, void *opaque);

/**
 * @brief Exports every consumer's lag from now on: the gauge
 * msm_log_consumer_lag{stream,group} (entries of the stream its group has not acknowledged,
 * msm_stream_backlog()) measured every @p every_ms, on either driver. A freed consumer's
 * gauge drops to 0. @returns MSM_OK or MSM_ERR_NOMEM.
 */
int msm_stream_export_lag(msm_stream_t *s, msm_metrics_t *metrics, uint32_t every_ms);

/** @brief Asks for the backlog of @p group on @p name; @p cb fires once. */
int msm_stream_backlog(msm_stream_t *s, const char *name, const char *group,
                       msm_stream_backlog_cb *cb, void *opaque);

#endif
