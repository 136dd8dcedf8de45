/* SPDX-License-Identifier: MIT */
/* What the files of the Redis Streams log driver share: the client, its cache of partition
 * counts and its appends (stream_redis.c), its group members with their claims,
 * acknowledgements and the trimming behind the slowest group (stream_redis_consume.c).
 * docs/log-redis.md describes the behaviour. Internal to libmsm-common. */
#ifndef MSM_STREAM_REDIS_INT_H
#define MSM_STREAM_REDIS_INT_H

#include "stream_int.h"
#include "msm/redis.h"

#include <stddef.h>
#include <stdint.h>

#define KEY_MAX 512

/* ---- the client and its cache of partition counts ---- */

typedef struct append_s append_t;

typedef struct stream_info_s {
    struct stream_info_s *next;
    char *name;
    int partitions;        /* 0 while unknown */
    int looking_up;        /* an HGET is in flight */
    uint32_t round_robin;  /* next partition for records without a key */
    char *meta;            /* made by info_keys() once the count is known, with: */
    size_t meta_len;
    char **part_keys;
    size_t *part_key_lens;
    char (*part_index)[8]; /* "1".."n": the append script's names of the partitions */
    append_t *waiting;     /* appends waiting for the partition count, oldest first */
    append_t *waiting_tail;
    int trim_wanted;       /* acknowledged on since the last trim */
    int trimming;          /* a trim is in flight */
    uint64_t trimmed_ms;   /* when the last trim was sent */
    struct redis_log_s *trim_log;
} stream_info_t;

typedef struct redis_log_s {
    msm_redis_t *redis;
    msm_redis_script_t *append_script;
    msm_redis_script_t *ensure_script;
    msm_redis_script_t *group_script;
    msm_redis_script_t *trim_script;
    msm_timer_t trim_timer; /* armed only while a stream waits for its next trim */
    stream_info_t *streams;
    size_t pending_appends;
    size_t pending_acks;   /* XACKs sent and not answered: a drain waits for them */
    uint64_t maxlen;       /* approximate MAXLEN per partition; 0 = keep everything */
    uint64_t lease_ms;
    uint64_t append_timeout_ms;
    int min_replicas_acks;  /* WAIT for this many replicas after each append (0: none) */
    uint32_t wait_timeout_ms;
    char wait_timeout[24];  /* the same, as WAIT's argument */
    msm_loop_t *loop;
    append_t *deferred;    /* held while Redis is unreachable, oldest first */
    append_t *deferred_tail;
    msm_timer_t deferred_timer;
    int closing;
} redis_log_t;

struct append_s {
    append_t *next;          /* in stream_info_t.waiting */
    redis_log_t *log;
    stream_info_t *info;
    msm_stream_done_cb *cb;
    void *opaque;
    size_t n;
    msm_record_t *records;   /* copied while held back, or for the fast path's fallback */
    int scripted;            /* sent (or to be sent) through the append script */
    char *mark_field;        /* a marked append: "mark:<name>" in the meta hash, or NULL */
    char *mark_tag;
    uint64_t deadline_ms;    /* held past this: fails with MSM_ERR_TIMEOUT */
};

static inline redis_log_t *log_of(const msm_stream_t *s)
{
    return s->s_impl;
}

static inline int meta_key(redis_log_t *lg, const char *name, char *buf, size_t n)
{
    return msm_redis_key(lg->redis, buf, n, "log:{%s}:meta", name);
}

static inline int part_key(redis_log_t *lg, const char *name, int p, char *buf, size_t n)
{
    return msm_redis_key(lg->redis, buf, n, "log:{%s}:%d", name, p);
}

/* ---- stream_redis.c ---- */

/** @brief The cached stream @p name; made (partitions unknown) when @p create. */
stream_info_t *msm__redis_info_find(redis_log_t *lg, const char *name, int create);
/** @brief Makes the stream's meta and partition key names once its count is known. */
int msm__redis_info_keys(redis_log_t *lg, stream_info_t *info);

/* ---- stream_redis_consume.c ---- */

/** @brief The string value of field @p name in an entry's [field, value, ...], or NULL. */
const redisReply *msm__redis_entry_field(const redisReply *fields, const char *name);
msm_consumer_t *msm__redis_consume(msm_stream_t *s, const char *name, const char *group,
                                   const char *member, size_t max_batch, size_t max_unacked,
                                   msm_consumer_batch_cb *cb, void *opaque, char *errbuf,
                                   size_t errbuf_size);
void msm__redis_ack(msm_consumer_t *base, msm_stream_msg_t *msg);
void msm__redis_set_lease(msm_consumer_t *base, uint64_t lease_ms);
int msm__redis_set_stamp(msm_consumer_t *base, const char *key);
size_t msm__redis_unacked(const msm_consumer_t *base);
void msm__redis_consumer_free(msm_consumer_t *base);

#endif
