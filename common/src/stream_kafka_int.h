/* SPDX-License-Identifier: MIT */
/* What the files of the Kafka log driver share: the client (stream_kafka.c), its appends
 * (stream_kafka_produce.c), its worker's ensure and backlog (stream_kafka_admin.c) and its
 * group members (stream_kafka_consume.c; their records in stream_kafka_ack.c).
 * docs/log-kafka.md describes the behaviour. Internal to libmsm-common. */
#ifndef MSM_STREAM_KAFKA_INT_H
#define MSM_STREAM_KAFKA_INT_H

#include "stream_int.h"

#include <librdkafka/rdkafka.h>

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define KF_FAC       "kafka"
#define KF_TOPIC_MAX 249  /* Kafka's limit on topic names */
#define KF_DRAIN_MAX 1024 /* events handled per wake-up before yielding to the loop */
/* A broker back from an outage is reconnected to within a second, well inside the append
 * timeout (librdkafka's default backoff grows to 10 s). */
#define KF_RECONNECT_MAX_MS "1000"
/* The header a marked append's records carry: "<mark name> <tag> <value>". */
#define MSM__KAFKA_MARK_HEADER "msm-mark"
/* Every event crosses four appends (events, ready, dispatch, status): librdkafka's 5 ms
 * default would cost 20 ms at low load. 1 ms batches as well under load (measured with
 * msm-bench-publish: batch-1 publishes 2.6k/s at 5 ms, 9.3k/s at 1 ms; batches of 1000
 * 80k/s at both). */
#define KF_LINGER_MS "1"

/* ------------------------------------------------------------------------------------ */
/* The client                                                                           */

typedef struct kf_topic_s kf_topic_t; /* stream_kafka_produce.c */
typedef struct kf_batch_s kf_batch_t; /* stream_kafka_produce.c */
typedef struct kf_job_s kf_job_t;     /* stream_kafka_admin.c */
typedef struct kf_group_s kf_group_t; /* stream_kafka_admin.c */

typedef struct {
    pthread_t kw_thread;
    int kw_started;
    pthread_mutex_t kw_mu;
    pthread_cond_t kw_cv;
    kf_job_t *kw_todo, *kw_todo_tail;
    kf_job_t *kw_done, *kw_done_tail;
    int kw_stop;
    /* worker thread only */
    kf_group_t *kw_groups;
    uint64_t kw_clock;
} kf_worker_t;

typedef struct kf_stream_s {
    msm_stream_t *ks_s;
    msm_loop_t *ks_loop;
    rd_kafka_t *ks_rk;
    rd_kafka_queue_t *ks_q; /* main queue: reports, errors, logs, admin results */
    int ks_pipe[2];         /* written by librdkafka and the worker, read by the loop */
    msm_timer_t ks_kick;
    kf_topic_t **ks_topics;
    size_t ks_topics_cap, ks_topics_cnt;
    kf_batch_t *ks_batches; /* pending appends */
    size_t ks_pending;
    kf_batch_t *ks_ready; /* zero-record batches to complete from the kick */
    kf_job_t *ks_jobs;
    kf_worker_t ks_w;
    int ks_closing;
    size_t ks_consumers;
    int ks_query_ms; /* bound on each blocking query on the worker */
} kf_stream_t;

/* ------------------------------------------------------------------------------------ */
/* A group member                                                                       */

/* Per partition ack tracking: a ring of delivered offsets in order, acked or not. */
typedef struct {
    int64_t sl_off;
    int sl_acked;
} kf_slot_t;

typedef struct {
    int kp_assigned;
    uint32_t kp_gen; /* changes at every assignment: older messages' acks are ignored */
    kf_slot_t *kp_ring;
    size_t kp_cap; /* power of two */
    uint64_t kp_head, kp_tail;
    int64_t kp_commit; /* end of the acked prefix (next offset to read), -1: none */
    int64_t kp_sent;   /* last offset handed to rd_kafka_commit(), -1: none */
    int64_t kp_seen;   /* highest offset this consumer delivered (redelivery hint) */
} kf_part_t;

/* A consumed record, copied out of librdkafka's fetch buffer (holding the event instead
 * would pin the whole fetch response in memory while the application holds one record).
 * Freed records are kept for reuse (kc_spare), so steady consumption does not malloc. */
typedef struct kf_msg_s {
    msm_stream_msg_t km_msg; /* first: the application sees only this */
    struct kf_msg_s *km_prev, *km_next;
    uint64_t km_seq;
    uint32_t km_gen;
    size_t km_cap;  /* bytes km_data can hold */
    char km_data[]; /* key, then value */
} kf_msg_t;

typedef struct {
    msm_consumer_t kc_base; /* first: the dispatcher's view */
    kf_stream_t *kc_ks;
    msm_loop_t *kc_loop;
    rd_kafka_t *kc_rk;
    rd_kafka_queue_t *kc_q;  /* consumer queue (the main queue is forwarded to it) */
    rd_kafka_queue_t *kc_fq; /* the assigned partitions' records, read while there is room */
    int kc_pipe[2];
    char *kc_name;   /* the stream, as the application named it */
    char *kc_member; /* for the logs */
    char *kc_topic;
    size_t kc_max_batch, kc_max_unacked;
    msm_consumer_batch_cb *kc_cb;
    void *kc_opaque;
    msm_stream_msg_t **kc_arr; /* max_batch slots, reused for every batch */
    kf_part_t *kc_parts;
    size_t kc_nparts;
    uint32_t kc_gen;
    kf_msg_t *kc_ready, *kc_ready_tail; /* fetched, not yet handed to the application */
    size_t kc_nready;
    kf_msg_t *kc_out; /* handed out, not yet acknowledged */
    size_t kc_unacked;
    kf_msg_t *kc_spare; /* freed records kept for reuse */
    size_t kc_nspare;
    int kc_held; /* records left in the fetch queue for want of room */
    int kc_dirty, kc_busy, kc_free_pending, kc_closing, kc_hooked;
    msm_timer_t kc_kick, kc_poll, kc_retry;
} kf_consumer_t;

/* ------------------------------------------------------------------------------------ */
/* stream_kafka.c: helpers                                                              */

/** @brief A librdkafka code as an msm_err_t (MSM_OK for NO_ERROR). */
int msm__kafka_err(rd_kafka_resp_err_t e);
/** @brief The topic of stream @p name. @returns MSM_ERR_INVALID when it does not fit. */
int msm__kafka_topic_name(const char *prefix, const char *name, char *out, size_t outsz);
/** @brief The consumer group id of @p group on @p topic, a heap string (NULL: no memory). */
char *msm__kafka_group_id(const char *topic, const char *group);
/** @brief A non-blocking close-on-exec pipe. @returns MSM_ERR_IO with both ends -1. */
int msm__kafka_pipe_open(int p[2]);
/** @brief Closes the ends still open and sets them to -1. */
void msm__kafka_pipe_close(int p[2]);
/** @brief Reads the wake-up bytes waiting on @p fd. */
void msm__kafka_pipe_drain(int fd);
/** @brief Passes a LOG event on to msm_log. */
void msm__kafka_log_event(rd_kafka_event_t *ev);
/** @brief Logs an ERROR event of @p who ("producer", "consumer"). */
void msm__kafka_log_error_event(const char *who, rd_kafka_event_t *ev);
/** @brief Sets one property. @returns MSM_ERR_INVALID with the reason in errbuf. */
int msm__kafka_conf_set(
    rd_kafka_conf_t *conf, const char *key, const char *val, char *errbuf, size_t errbuf_size);
/** @brief Applies the user's "key=value" properties, refusing those msm sets itself. */
int msm__kafka_conf_apply_props(rd_kafka_conf_t *conf,
                                const char *const *props,
                                char *errbuf,
                                size_t errbuf_size);

/* ------------------------------------------------------------------------------------ */
/* stream_kafka_produce.c: appends (loop thread)                                        */

int msm__kafka_append(msm_stream_t *s,
                      const char *name,
                      const msm_record_t *records,
                      size_t n,
                      const msm_stream_mark_t *mark,
                      msm_stream_done_cb *cb,
                      void *opaque);
size_t msm__kafka_pending_appends(const msm_stream_t *s);
/** @brief Serves the main queue and the worker's results on the loop from now on.
 *  @returns MSM_OK, or an error when the loop cannot watch the wake-up pipe. */
int msm__kafka_producer_watch(kf_stream_t *ks);
/** @brief Completes every pending append with MSM_ERR_SHUTDOWN; the batches stay listed
 *  until msm__kafka_appends_free(), as librdkafka may still hold their records. */
void msm__kafka_appends_abort(kf_stream_t *ks);
/** @brief Frees the batches left, once the producer handle is gone. */
void msm__kafka_appends_free(kf_stream_t *ks);
/** @brief Destroys the cached topic handles (before the producer handle). */
void msm__kafka_topics_free(kf_stream_t *ks);

/* ------------------------------------------------------------------------------------ */
/* stream_kafka_admin.c: ensure, delete and backlog on the worker thread                */

int msm__kafka_ensure(
    msm_stream_t *s, const char *name, int partitions, msm_stream_done_cb *cb, void *opaque);
int msm__kafka_delete(msm_stream_t *s, const char *name, msm_stream_done_cb *cb, void *opaque);
int msm__kafka_marks(msm_stream_t *s, const char *name, const char *mark, const char *tag,
                     int64_t since_ms, msm_stream_marks_cb *cb, void *opaque);
int msm__kafka_backlog(
    msm_stream_t *s, const char *name, const char *group, msm_stream_backlog_cb *cb, void *opaque);
/** @brief Fires the callbacks of the jobs the worker finished (loop thread). */
void msm__kafka_worker_collect(kf_stream_t *ks);
/** @brief Stops and joins the worker, after its current job. */
void msm__kafka_worker_stop(kf_stream_t *ks);
/** @brief Completes every job left with MSM_ERR_SHUTDOWN (the worker is stopped). */
void msm__kafka_jobs_abort(kf_stream_t *ks);

/* ------------------------------------------------------------------------------------ */
/* stream_kafka_consume.c: the group member (loop thread)                               */

msm_consumer_t *msm__kafka_consume(msm_stream_t *s,
                                   const char *name,
                                   const char *group,
                                   const char *member,
                                   size_t max_batch,
                                   size_t max_unacked,
                                   msm_consumer_batch_cb *cb,
                                   void *opaque,
                                   char *errbuf,
                                   size_t errbuf_size);
size_t msm__kafka_unacked(const msm_consumer_t *c);
void msm__kafka_consumer_free(msm_consumer_t *c);
/** @brief Serves the member's queues on the next loop iteration. */
void msm__kafka_consumer_kick(kf_consumer_t *kc);

/* ------------------------------------------------------------------------------------ */
/* stream_kafka_ack.c: the member's records (loop thread)                               */

/** @brief Starts tracking the newly assigned partitions of @p l afresh. */
void msm__kafka_parts_assigned(kf_consumer_t *kc, const rd_kafka_topic_partition_list_t *l);
/** @brief Forgets the revoked partitions of @p l (all of them when NULL): acknowledgements of
 *  their records still out no longer count, records not yet delivered are dropped. */
void msm__kafka_parts_revoked(kf_consumer_t *kc, const rd_kafka_topic_partition_list_t *l);
/** @brief Commits the acknowledged prefix of every assigned partition that moved. */
void msm__kafka_commit_flush(kf_consumer_t *kc);
/** @brief Handles an OFFSET_COMMIT result: failed partitions are sent again later. */
void msm__kafka_on_commit(kf_consumer_t *kc, rd_kafka_event_t *ev);
/** @brief Copies a FETCH event's record to the ready list. */
void msm__kafka_on_fetch(kf_consumer_t *kc, rd_kafka_event_t *ev);
/** @brief Takes up to @p budget events from the fetch queue while there is room.
 *  @returns the events taken. */
size_t msm__kafka_fetch_more(kf_consumer_t *kc, size_t budget);
/** @brief Hands the ready records to the application, in batches, while there is room. */
void msm__kafka_deliver(kf_consumer_t *kc);
void msm__kafka_ack(msm_consumer_t *c, msm_stream_msg_t *msg);

#endif
