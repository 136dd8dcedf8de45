/* SPDX-License-Identifier: MIT */
/* The Kafka log driver (librdkafka): one idempotent producer per msm_stream_t and one
 * consumer handle per msm_consumer_t. Every librdkafka event arrives on a queue that wakes
 * our loop through a pipe, so no msm code runs on librdkafka's threads; the blocking broker
 * queries (ensure, backlog) run on one small worker thread of ours. */
#include "stream_int.h"
#include "msm/err.h"
#include "msm/log.h"

#include <librdkafka/rdkafka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KF_FAC             "kafka"
#define KF_TOPIC_MAX       249   /* Kafka's limit on topic names */
#define KF_DRAIN_MAX       1024  /* events handled per wake-up before yielding to the loop */
#define KF_POLL_MS         1000  /* idle poll: the member keeps polling while records are held */
#define KF_CLOSE_MS        5000  /* bound on leaving the group in msm_consumer_free() */
#define KF_COMMIT_RETRY_MS 250   /* pause before retrying a failed offset commit */
#define KF_GROUP_CACHE     8     /* group handles the worker keeps for backlog queries */
#define KF_MAX_PARTITION   65536 /* sanity bound on partition ids we index by */
#define KF_MIN_SESSION_MS  6000  /* brokers' default group.min.session.timeout.ms */
#define KF_MSG_MIN_CAP     256   /* smallest record buffer: most events fit, few reallocs */
#define KF_MSG_SPARE_CAP   65536 /* larger record buffers are not kept for reuse */
/* A broker back from an outage is reconnected to within a second, well inside the append
 * timeout (librdkafka's default backoff grows to 10 s). */
#define KF_RECONNECT_MAX_MS "1000"

/* ------------------------------------------------------------------------------------ */
/* Types                                                                                  */

struct kf_stream_s;

/* A topic handle for one stream name, cached by the producer. */
typedef struct kf_topic_s {
    struct kf_topic_s *kt_next;
    rd_kafka_topic_t *kt_rkt;
    uint32_t kt_hash;
    char kt_name[]; /* the msm stream name (the cache key) */
} kf_topic_t;

/* One append: its callback fires when the last delivery report is in. */
typedef struct kf_batch_s {
    struct kf_batch_s *kb_prev, *kb_next; /* pending list */
    struct kf_batch_s *kb_rnext;          /* zero-record batches waiting for the kick */
    msm_stream_done_cb *kb_cb;            /* NULL once completed with MSM_ERR_SHUTDOWN */
    void *kb_opaque;
    size_t kb_remaining; /* produced, report not yet in */
    int kb_err;          /* first error, MSM_OK while none */
    char kb_reason[192];
} kf_batch_t;

typedef enum {
    KF_JOB_ENSURE = 0,  /* CreateTopics, or the auto-creation fallback, on the worker */
    KF_JOB_BACKLOG = 1, /* watermarks and committed offsets, on the worker */
} kf_job_kind_t;

/* An ensure or backlog request; lives in ks_jobs until its callback has fired. */
typedef struct kf_job_s {
    struct kf_job_s *kj_prev, *kj_next; /* ks_jobs (loop thread only) */
    struct kf_job_s *kj_wnext;          /* worker todo/done lists (under kw_mu) */
    kf_job_kind_t kj_kind;
    int kj_partitions;
    msm_stream_done_cb *kj_done_cb;
    msm_stream_backlog_cb *kj_backlog_cb;
    void *kj_opaque;
    int kj_err;
    int64_t kj_backlog;
    char kj_reason[256];
    char *kj_topic;
    char *kj_group;
} kf_job_t;

/* A consumer handle with group.id set, owned by the worker (committed offsets need one). */
typedef struct kf_group_s {
    struct kf_group_s *kg_next;
    rd_kafka_t *kg_rk;
    uint64_t kg_used;
    char kg_group[];
} kf_group_t;

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
/* Helpers                                                                                */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* librdkafka's codes, translated once for the whole driver. */
static int kf_err(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return MSM_OK;
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
        return MSM_ERR_TIMEOUT;
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
        return MSM_ERR_TOOLARGE;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
        return MSM_ERR_NOTFOUND;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR_INVALID_PARTITIONS:
        return MSM_ERR_INVALID;
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__DESTROY:
        return MSM_ERR_SHUTDOWN;
    default:
        return MSM_ERR_BACKEND;
    }
}

/* "<prefix>.<name>" with every character Kafka rejects replaced by '_'. */
static int topic_name(const char *prefix, const char *name, char *out, size_t outsz)
{
    int n = snprintf(out, outsz, "%s.%s", prefix, name);
    if (n < 0 || (size_t)n >= outsz || n > KF_TOPIC_MAX)
        return MSM_ERR_INVALID;
    for (char *p = out; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            *p = '_';
    }
    return MSM_OK;
}

/* A consumer group belongs to one stream, as a Redis Streams group does: "<topic>:<group>"
 * (':' never appears in a topic name, so two pairs never give one id). Heap string. */
static char *group_id(const char *topic, const char *group)
{
    char *gid = NULL;
    if (asprintf(&gid, "%s:%s", topic, group) < 0)
        return NULL;
    return gid;
}

static int pipe_open(int p[2])
{
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
        p[0] = p[1] = -1;
        return MSM_ERR_IO;
    }
    return MSM_OK;
}

static void pipe_close(int p[2])
{
    for (int i = 0; i < 2; i++) {
        if (p[i] >= 0)
            close(p[i]);
        p[i] = -1;
    }
}

static void pipe_drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

static void log_event(rd_kafka_event_t *ev)
{
    const char *fac = NULL, *str = NULL;
    int level = 6;
    if (rd_kafka_event_log(ev, &fac, &str, &level) != 0)
        return;
    msm_log_level_t l = level <= 3   ? MSM_LOG_ERROR
                        : level == 4 ? MSM_LOG_WARN
                        : level <= 6 ? MSM_LOG_INFO
                                     : MSM_LOG_DEBUG;
    msm_log(l, KF_FAC, "%s: %s", fac ? fac : "-", str ? str : "");
}

static void log_error_event(const char *who, rd_kafka_event_t *ev)
{
    rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
    int fatal = rd_kafka_event_error_is_fatal(ev);
    msm_log(fatal ? MSM_LOG_ERROR : MSM_LOG_WARN, KF_FAC, "%s%s: %s (%s)", who,
            fatal ? " fatal error" : "", rd_kafka_event_error_string(ev), rd_kafka_err2name(e));
}

static int
conf_set(rd_kafka_conf_t *conf, const char *key, const char *val, char *errbuf, size_t errbuf_size)
{
    char err[256];
    if (rd_kafka_conf_set(conf, key, val, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        snprintf(errbuf, errbuf_size, "kafka property \"%.100s\": %.120s", key, err);
        return MSM_ERR_INVALID;
    }
    return MSM_OK;
}

/* Properties the driver's promises rest on (durability, commits of acknowledged records
 * only, where a new group starts) or that msm_stream_conf_t already sets. */
static const char *const kf_fixed_props[] = {
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "group.id",
    "bootstrap.servers",
    "metadata.broker.list",
    NULL,
};

static int prop_is_fixed(const char *key)
{
    for (size_t i = 0; kf_fixed_props[i]; i++)
        if (strcmp(key, kf_fixed_props[i]) == 0)
            return 1;
    return 0;
}

/* The user's "key=value" properties, applied after our defaults so they may tune them;
 * the fixed ones are refused rather than silently weakening a guarantee. */
static int
conf_apply_props(rd_kafka_conf_t *conf, const char *const *props, char *errbuf, size_t errbuf_size)
{
    if (!props)
        return MSM_OK;
    for (size_t i = 0; props[i]; i++) {
        const char *eq = strchr(props[i], '=');
        if (!eq || eq == props[i]) {
            snprintf(errbuf, errbuf_size, "kafka property \"%s\": expected key=value", props[i]);
            return MSM_ERR_INVALID;
        }
        char key[256];
        size_t klen = (size_t)(eq - props[i]);
        if (klen >= sizeof(key)) {
            snprintf(errbuf, errbuf_size, "kafka property \"%.40s...\": key too long", props[i]);
            return MSM_ERR_INVALID;
        }
        memcpy(key, props[i], klen);
        key[klen] = '\0';
        if (prop_is_fixed(key)) {
            snprintf(errbuf, errbuf_size, "kafka property \"%s\" is set by msm", key);
            return MSM_ERR_INVALID;
        }
        int rc = conf_set(conf, key, eq + 1, errbuf, errbuf_size);
        if (rc != MSM_OK)
            return rc;
    }
    return MSM_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Producer: topic cache, appends, delivery reports                                      */

static uint32_t str_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static int topics_grow(kf_stream_t *ks)
{
    size_t ncap = ks->ks_topics_cap ? ks->ks_topics_cap * 2 : 16;
    kf_topic_t **nt = calloc(ncap, sizeof(*nt));
    if (!nt)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < ks->ks_topics_cap; i++) {
        kf_topic_t *kt = ks->ks_topics[i];
        while (kt) {
            kf_topic_t *next = kt->kt_next;
            kt->kt_next = nt[kt->kt_hash & (ncap - 1)];
            nt[kt->kt_hash & (ncap - 1)] = kt;
            kt = next;
        }
    }
    free(ks->ks_topics);
    ks->ks_topics = nt;
    ks->ks_topics_cap = ncap;
    return MSM_OK;
}

static int topic_get(kf_stream_t *ks, const char *name, kf_topic_t **out)
{
    uint32_t h = str_hash(name);
    if (ks->ks_topics_cap) {
        for (kf_topic_t *kt = ks->ks_topics[h & (ks->ks_topics_cap - 1)]; kt; kt = kt->kt_next) {
            if (kt->kt_hash == h && strcmp(kt->kt_name, name) == 0) {
                *out = kt;
                return MSM_OK;
            }
        }
    }
    if (ks->ks_topics_cnt >= ks->ks_topics_cap && topics_grow(ks) != MSM_OK)
        return MSM_ERR_NOMEM;
    char tname[KF_TOPIC_MAX + 1];
    if (topic_name(ks->ks_s->s_conf.name_prefix, name, tname, sizeof(tname)) != MSM_OK)
        return MSM_ERR_INVALID;
    size_t nlen = strlen(name);
    kf_topic_t *kt = malloc(sizeof(*kt) + nlen + 1);
    if (!kt)
        return MSM_ERR_NOMEM;
    kt->kt_rkt = rd_kafka_topic_new(ks->ks_rk, tname, NULL);
    if (!kt->kt_rkt) {
        int err = kf_err(rd_kafka_last_error());
        free(kt);
        return err;
    }
    kt->kt_hash = h;
    memcpy(kt->kt_name, name, nlen + 1);
    kt->kt_next = ks->ks_topics[h & (ks->ks_topics_cap - 1)];
    ks->ks_topics[h & (ks->ks_topics_cap - 1)] = kt;
    ks->ks_topics_cnt++;
    *out = kt;
    return MSM_OK;
}

static void topics_free(kf_stream_t *ks)
{
    for (size_t i = 0; i < ks->ks_topics_cap; i++) {
        kf_topic_t *kt = ks->ks_topics[i];
        while (kt) {
            kf_topic_t *next = kt->kt_next;
            rd_kafka_topic_destroy(kt->kt_rkt);
            free(kt);
            kt = next;
        }
    }
    free(ks->ks_topics);
    ks->ks_topics = NULL;
    ks->ks_topics_cap = ks->ks_topics_cnt = 0;
}

static void batch_unlink(kf_stream_t *ks, kf_batch_t *b)
{
    if (b->kb_prev)
        b->kb_prev->kb_next = b->kb_next;
    else
        ks->ks_batches = b->kb_next;
    if (b->kb_next)
        b->kb_next->kb_prev = b->kb_prev;
    b->kb_prev = b->kb_next = NULL;
    ks->ks_pending--;
}

static void batch_finish(kf_stream_t *ks, kf_batch_t *b)
{
    batch_unlink(ks, b);
    msm_stream_done_cb *cb = b->kb_cb;
    void *opaque = b->kb_opaque;
    int err = b->kb_err;
    char reason[sizeof(b->kb_reason)];
    memcpy(reason, b->kb_reason, sizeof(reason));
    free(b);
    if (cb)
        cb(err, err == MSM_OK ? NULL : reason, opaque);
}

static void batch_fail(kf_batch_t *b, rd_kafka_resp_err_t e, const char *topic)
{
    if (b->kb_err != MSM_OK)
        return; /* the first error is the one reported */
    b->kb_err = kf_err(e);
    if (b->kb_err == MSM_OK)
        b->kb_err = MSM_ERR_BACKEND;
    snprintf(b->kb_reason, sizeof(b->kb_reason), "kafka %s: %s", topic, rd_kafka_err2str(e));
}

static void on_delivery(kf_stream_t *ks, rd_kafka_event_t *ev)
{
    const rd_kafka_message_t *m;
    while ((m = rd_kafka_event_message_next(ev))) {
        kf_batch_t *b = m->_private;
        if (!b)
            continue;
        /* Durable means acks=all answered: anything but PERSISTED is a failure, even
         * POSSIBLY_PERSISTED (the caller retries; duplicates are allowed, losses are not). */
        if (m->err || rd_kafka_message_status(m) != RD_KAFKA_MSG_STATUS_PERSISTED)
            batch_fail(b, m->err ? m->err : RD_KAFKA_RESP_ERR__FAIL, rd_kafka_topic_name(m->rkt));
        if (--b->kb_remaining == 0)
            batch_finish(ks, b);
    }
}

static void on_producer_kick(msm_loop_t *loop, void *opaque);

/* Runs the producer's dispatch on the next loop iteration. */
static void ks_kick(kf_stream_t *ks)
{
    if (!msm_timer_active(&ks->ks_kick))
        msm_loop_timer_start(ks->ks_loop, &ks->ks_kick, 0, on_producer_kick, ks);
}

static int kf_append(msm_stream_t *s,
                     const char *name,
                     const msm_record_t *records,
                     size_t n,
                     msm_stream_done_cb *cb,
                     void *opaque)
{
    kf_stream_t *ks = s->s_impl;
    if (ks->ks_closing)
        return MSM_ERR_SHUTDOWN;
    kf_topic_t *kt;
    int rc = topic_get(ks, name, &kt);
    if (rc != MSM_OK)
        return rc;
    kf_batch_t *b = calloc(1, sizeof(*b));
    if (!b)
        return MSM_ERR_NOMEM;
    b->kb_cb = cb;
    b->kb_opaque = opaque;
    for (size_t i = 0; i < n; i++) {
        const msm_record_t *r = &records[i];
        b->kb_remaining++;
        if (rd_kafka_produce(kt->kt_rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                             (void *)(uintptr_t)r->value, r->value ? r->value_len : 0, r->key,
                             r->key ? r->key_len : 0, b) == -1) {
            rd_kafka_resp_err_t e = rd_kafka_last_error();
            b->kb_remaining--;
            if (i == 0) {
                /* Nothing is in flight: fail now, without a callback. */
                free(b);
                return kf_err(e) == MSM_OK ? MSM_ERR_BACKEND : kf_err(e);
            }
            /* Records already produced still get their reports; the callback fires
             * once, after the last of them, with this error. */
            batch_fail(b, e, rd_kafka_topic_name(kt->kt_rkt));
            break;
        }
    }
    b->kb_next = ks->ks_batches;
    if (b->kb_next)
        b->kb_next->kb_prev = b;
    ks->ks_batches = b;
    ks->ks_pending++;
    if (b->kb_remaining == 0) {
        b->kb_rnext = ks->ks_ready;
        ks->ks_ready = b;
        ks_kick(ks);
    }
    return MSM_OK;
}

static size_t kf_pending_appends(const msm_stream_t *s)
{
    const kf_stream_t *ks = s->s_impl;
    return ks->ks_pending;
}

/* ------------------------------------------------------------------------------------ */
/* Jobs and the worker thread                                                             */

static kf_job_t *job_new(kf_stream_t *ks, kf_job_kind_t kind, const char *topic, const char *group)
{
    kf_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->kj_kind = kind;
    j->kj_backlog = -1;
    j->kj_topic = strdup(topic);
    if (group)
        j->kj_group = group_id(topic, group);
    if (!j->kj_topic || (group && !j->kj_group)) {
        free(j->kj_topic);
        free(j->kj_group);
        free(j);
        return NULL;
    }
    j->kj_next = ks->ks_jobs;
    if (j->kj_next)
        j->kj_next->kj_prev = j;
    ks->ks_jobs = j;
    return j;
}

static void job_free(kf_stream_t *ks, kf_job_t *j)
{
    if (j->kj_prev)
        j->kj_prev->kj_next = j->kj_next;
    else
        ks->ks_jobs = j->kj_next;
    if (j->kj_next)
        j->kj_next->kj_prev = j->kj_prev;
    free(j->kj_topic);
    free(j->kj_group);
    free(j);
}

/* Fires the job's callback once and frees it (loop thread). */
static void job_finish(kf_stream_t *ks, kf_job_t *j, int err)
{
    kf_job_kind_t kind = j->kj_kind;
    msm_stream_done_cb *dcb = j->kj_done_cb;
    msm_stream_backlog_cb *bcb = j->kj_backlog_cb;
    void *opaque = j->kj_opaque;
    int64_t backlog = err == MSM_OK ? j->kj_backlog : -1;
    char reason[sizeof(j->kj_reason)];
    snprintf(reason, sizeof(reason), "%s", j->kj_reason[0] ? j->kj_reason : msm_err_str(err));
    job_free(ks, j);
    if (kind == KF_JOB_ENSURE && dcb)
        dcb(err, err == MSM_OK ? NULL : reason, opaque);
    else if (kind == KF_JOB_BACKLOG && bcb)
        bcb(err, backlog, opaque);
}

static void worker_log_drain(rd_kafka_t *rk)
{
    rd_kafka_queue_t *q = rd_kafka_queue_get_main(rk);
    rd_kafka_event_t *ev;
    while ((ev = rd_kafka_queue_poll(q, 0))) {
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_LOG)
            log_event(ev);
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
}

/* Worker thread: a consumer handle of @p group (no subscription), created on first use. */
static rd_kafka_t *worker_group(kf_stream_t *ks, const char *group, char *errbuf, size_t n)
{
    kf_worker_t *w = &ks->ks_w;
    kf_group_t **lru = NULL;
    size_t cnt = 0;
    for (kf_group_t **pp = &w->kw_groups; *pp; pp = &(*pp)->kg_next, cnt++) {
        if (strcmp((*pp)->kg_group, group) == 0) {
            (*pp)->kg_used = ++w->kw_clock;
            return (*pp)->kg_rk;
        }
        if (!lru || (*pp)->kg_used < (*lru)->kg_used)
            lru = pp;
    }
    if (cnt >= KF_GROUP_CACHE && lru) {
        kf_group_t *old = *lru;
        *lru = old->kg_next;
        rd_kafka_destroy_flags(old->kg_rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        free(old);
    }
    const msm_stream_conf_t *sc = &ks->ks_s->s_conf;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    kf_group_t *g = calloc(1, sizeof(*g) + strlen(group) + 1);
    if (!g) {
        snprintf(errbuf, n, "out of memory");
        goto fail;
    }
    if (conf_set(conf, "bootstrap.servers", sc->kafka_brokers, errbuf, n) != MSM_OK ||
        conf_set(conf, "group.id", group, errbuf, n) != MSM_OK ||
        conf_set(conf, "client.id", "msm-backlog", errbuf, n) != MSM_OK ||
        conf_set(conf, "enable.auto.commit", "false", errbuf, n) != MSM_OK ||
        conf_set(conf, "log.queue", "true", errbuf, n) != MSM_OK ||
        conf_apply_props(conf, sc->kafka_props, errbuf, n) != MSM_OK)
        goto fail;
    char err[256];
    g->kg_rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!g->kg_rk) {
        snprintf(errbuf, n, "kafka consumer: %.200s", err);
        goto fail;
    }
    conf = NULL;
    rd_kafka_set_log_queue(g->kg_rk, NULL);
    strcpy(g->kg_group, group);
    g->kg_used = ++w->kw_clock;
    g->kg_next = w->kw_groups;
    w->kw_groups = g;
    return g->kg_rk;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(g);
    return NULL;
}

/* Worker thread: makes the broker auto-create the topic through a metadata request (the
 * path taken when the cluster has no usable CreateTopics, as librdkafka's mock cluster in
 * 2.0.x, whose Metadata versions predate the allow-auto-creation flag). */
static void worker_auto_create(kf_stream_t *ks, kf_job_t *j)
{
    uint64_t deadline = mono_ms() + (uint64_t)ks->ks_query_ms;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(ks->ks_rk, j->kj_topic, NULL);
    if (!rkt) {
        j->kj_err = kf_err(rd_kafka_last_error());
        snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka %s: %s", j->kj_topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return;
    }
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        uint64_t now = mono_ms();
        int left = now < deadline ? (int)(deadline - now) : 0;
        rd_kafka_resp_err_t e = rd_kafka_metadata(ks->ks_rk, 0, rkt, &md, left > 0 ? left : 1);
        int parts = 0;
        if (!e && md && md->topic_cnt == 1) {
            e = md->topics[0].err;
            parts = md->topics[0].partition_cnt;
        }
        if (md)
            rd_kafka_metadata_destroy(md);
        if (!e && parts > 0) {
            j->kj_err = MSM_OK;
            if (parts != j->kj_partitions)
                msm_log(MSM_LOG_WARN, KF_FAC,
                        "topic %s has %d partitions (asked %d): the broker has no CreateTopics, "
                        "it was auto-created with the broker's default count or existed",
                        j->kj_topic, parts, j->kj_partitions);
            break;
        }
        int retriable = !e || e == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
                        e == RD_KAFKA_RESP_ERR__TIMED_OUT || e == RD_KAFKA_RESP_ERR__TRANSPORT;
        if (!retriable || mono_ms() + 100 >= deadline) {
            j->kj_err = e ? kf_err(e) : MSM_ERR_TIMEOUT;
            snprintf(j->kj_reason, sizeof(j->kj_reason),
                     "kafka %s: broker has no CreateTopics and did not auto-create it: %s",
                     j->kj_topic, e ? rd_kafka_err2str(e) : "no partitions");
            break;
        }
        usleep(100 * 1000);
    }
    rd_kafka_topic_destroy(rkt);
}

/* Worker thread: whether the cluster names a controller that is one of its brokers (the
 * mock cluster of librdkafka 2.0.x names broker 0, which does not exist). @returns the error
 * when the cluster cannot be reached. */
static rd_kafka_resp_err_t worker_controller(kf_stream_t *ks, int *usable)
{
    const struct rd_kafka_metadata *md = NULL;
    *usable = 0;
    rd_kafka_resp_err_t e = rd_kafka_metadata(ks->ks_rk, 0, NULL, &md, ks->ks_query_ms);
    if (e)
        return e;
    int32_t id = rd_kafka_controllerid(ks->ks_rk, 0); /* known since that metadata */
    for (int i = 0; i < md->broker_cnt; i++)
        *usable |= id >= 0 && md->brokers[i].id == id;
    rd_kafka_metadata_destroy(md);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Worker thread: CreateTopics, waiting for its result. @returns 0 when the job is decided,
 * -1 when the broker does not support the request (the caller falls back). */
static int worker_create_topic(kf_stream_t *ks, kf_job_t *j)
{
    char err[200];
    rd_kafka_NewTopic_t *nt =
        rd_kafka_NewTopic_new(j->kj_topic, j->kj_partitions, -1, err, sizeof(err));
    if (!nt) {
        j->kj_err = MSM_ERR_INVALID;
        snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka create topic: %s", err);
        return 0;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(ks->ks_rk);
    rd_kafka_AdminOptions_t *opts =
        rd_kafka_AdminOptions_new(ks->ks_rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, ks->ks_query_ms, err, sizeof(err));
    rd_kafka_AdminOptions_set_operation_timeout(opts, ks->ks_query_ms, err, sizeof(err));
    rd_kafka_CreateTopics(ks->ks_rk, &nt, 1, opts, q);
    /* The request times itself out; the margin only guards against a lost result. */
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 2 * ks->ks_query_ms + 1000);
    rd_kafka_resp_err_t e = ev ? rd_kafka_event_error(ev) : RD_KAFKA_RESP_ERR__TIMED_OUT;
    const char *es = ev ? rd_kafka_event_error_string(ev) : NULL;
    const rd_kafka_CreateTopics_result_t *res = ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    if (!e && res) {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
        if (cnt >= 1) {
            e = rd_kafka_topic_result_error(tr[0]);
            es = rd_kafka_topic_result_error_string(tr[0]);
        }
    }
    int unsupported = e == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE;
    /* An existing topic keeps its partition count: msm never grows it behind the producers'
     * backs (it would move keys to other partitions). */
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        j->kj_err = MSM_OK;
    } else {
        j->kj_err = kf_err(e) == MSM_OK ? MSM_ERR_BACKEND : kf_err(e);
        snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka create topic %s: %s", j->kj_topic,
                 es ? es : rd_kafka_err2str(e));
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    return unsupported ? -1 : 0;
}

/* Worker thread: CreateTopics with the asked partition count where the cluster takes it,
 * broker auto-creation otherwise. */
static void worker_ensure(kf_stream_t *ks, kf_job_t *j)
{
    int usable = 0;
    rd_kafka_resp_err_t e = worker_controller(ks, &usable);
    if (e) {
        j->kj_err = kf_err(e) == MSM_OK ? MSM_ERR_BACKEND : kf_err(e);
        snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka %s: cluster metadata: %s", j->kj_topic,
                 rd_kafka_err2str(e));
        return;
    }
    if (usable && worker_create_topic(ks, j) == 0)
        return;
    msm_log(MSM_LOG_INFO, KF_FAC, "topic %s: no CreateTopics here; broker auto-creation",
            j->kj_topic);
    j->kj_err = MSM_OK;
    j->kj_reason[0] = '\0';
    worker_auto_create(ks, j);
}

static rd_kafka_topic_partition_list_t *parts_copy(const rd_kafka_topic_partition_list_t *l,
                                                   int64_t offset)
{
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(l);
    for (int i = 0; i < c->cnt; i++)
        c->elems[i].offset = offset;
    return c;
}

/* Worker thread: sum over partitions of high watermark minus committed offset (or minus the
 * low watermark when the group never committed). */
static void worker_backlog(kf_stream_t *ks, kf_job_t *j)
{
    char errbuf[256];
    int t = ks->ks_query_ms;
    rd_kafka_t *rk = worker_group(ks, j->kj_group, errbuf, sizeof(errbuf));
    rd_kafka_topic_t *rkt = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_partition_list_t *all = NULL, *hi = NULL, *lo = NULL, *co = NULL;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    const char *what = "metadata";
    if (!rk) {
        j->kj_err = MSM_ERR_BACKEND;
        snprintf(j->kj_reason, sizeof(j->kj_reason), "%s", errbuf);
        return;
    }
    rkt = rd_kafka_topic_new(rk, j->kj_topic, NULL);
    if (!rkt) {
        e = rd_kafka_last_error();
        goto fail;
    }
    e = rd_kafka_metadata(rk, 0, rkt, &md, t);
    if (!e && md->topic_cnt != 1)
        e = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    if (!e)
        e = md->topics[0].err;
    if (!e && md->topics[0].partition_cnt == 0)
        e = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    if (e)
        goto fail;
    all = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(all, j->kj_topic, md->topics[0].partitions[i].id);
    /* ListOffsets with the logical timestamps END and BEGINNING: one request per leader for
     * all partitions, instead of a watermark query per partition. */
    what = "high watermarks";
    hi = parts_copy(all, RD_KAFKA_OFFSET_END);
    if ((e = rd_kafka_offsets_for_times(rk, hi, t)))
        goto fail;
    what = "low watermarks";
    lo = parts_copy(all, RD_KAFKA_OFFSET_BEGINNING);
    if ((e = rd_kafka_offsets_for_times(rk, lo, t)))
        goto fail;
    what = "committed offsets";
    co = parts_copy(all, RD_KAFKA_OFFSET_INVALID);
    if ((e = rd_kafka_committed(rk, co, t)))
        goto fail;
    int64_t sum = 0;
    for (int i = 0; i < all->cnt; i++) {
        if ((e = hi->elems[i].err) || (e = lo->elems[i].err) || (e = co->elems[i].err))
            goto fail;
        int64_t h = hi->elems[i].offset, l = lo->elems[i].offset, c = co->elems[i].offset;
        int64_t base = c >= 0 ? (c > l ? c : l) : l;
        if (h > base)
            sum += h - base;
    }
    j->kj_err = MSM_OK;
    j->kj_backlog = sum;
    goto out;
fail:
    j->kj_err = kf_err(e);
    if (j->kj_err == MSM_OK)
        j->kj_err = MSM_ERR_BACKEND;
    snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka %s %s: %s", j->kj_topic, what,
             rd_kafka_err2str(e));
out:
    if (co)
        rd_kafka_topic_partition_list_destroy(co);
    if (lo)
        rd_kafka_topic_partition_list_destroy(lo);
    if (hi)
        rd_kafka_topic_partition_list_destroy(hi);
    if (all)
        rd_kafka_topic_partition_list_destroy(all);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    worker_log_drain(rk);
}

static void *worker_main(void *arg)
{
    kf_stream_t *ks = arg;
    kf_worker_t *w = &ks->ks_w;
    pthread_mutex_lock(&w->kw_mu);
    while (!w->kw_stop) {
        kf_job_t *j = w->kw_todo;
        if (!j) {
            pthread_cond_wait(&w->kw_cv, &w->kw_mu);
            continue;
        }
        w->kw_todo = j->kj_wnext;
        if (!w->kw_todo)
            w->kw_todo_tail = NULL;
        j->kj_wnext = NULL;
        pthread_mutex_unlock(&w->kw_mu);
        if (j->kj_kind == KF_JOB_ENSURE)
            worker_ensure(ks, j);
        else
            worker_backlog(ks, j);
        pthread_mutex_lock(&w->kw_mu);
        if (w->kw_done_tail)
            w->kw_done_tail->kj_wnext = j;
        else
            w->kw_done = j;
        w->kw_done_tail = j;
        /* One byte wakes the loop; a full pipe means it is awake already. */
        if (write(ks->ks_pipe[1], "w", 1) < 0 && errno != EAGAIN)
            msm_log(MSM_LOG_WARN, KF_FAC, "worker wake-up: %s", strerror(errno));
    }
    pthread_mutex_unlock(&w->kw_mu);
    while (w->kw_groups) {
        kf_group_t *g = w->kw_groups;
        w->kw_groups = g->kg_next;
        rd_kafka_destroy_flags(g->kg_rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        free(g);
    }
    return NULL;
}

static int worker_submit(kf_stream_t *ks, kf_job_t *j)
{
    kf_worker_t *w = &ks->ks_w;
    if (!w->kw_started) {
        if (pthread_create(&w->kw_thread, NULL, worker_main, ks) != 0)
            return MSM_ERR_NOMEM;
        w->kw_started = 1;
    }
    pthread_mutex_lock(&w->kw_mu);
    if (w->kw_todo_tail)
        w->kw_todo_tail->kj_wnext = j;
    else
        w->kw_todo = j;
    w->kw_todo_tail = j;
    pthread_cond_signal(&w->kw_cv);
    pthread_mutex_unlock(&w->kw_mu);
    return MSM_OK;
}

static void worker_collect(kf_stream_t *ks)
{
    kf_worker_t *w = &ks->ks_w;
    if (!w->kw_started)
        return;
    pthread_mutex_lock(&w->kw_mu);
    kf_job_t *j = w->kw_done;
    w->kw_done = w->kw_done_tail = NULL;
    pthread_mutex_unlock(&w->kw_mu);
    while (j) {
        kf_job_t *next = j->kj_wnext;
        job_finish(ks, j, j->kj_err);
        j = next;
    }
}

static void worker_stop(kf_stream_t *ks)
{
    kf_worker_t *w = &ks->ks_w;
    if (!w->kw_started)
        return;
    pthread_mutex_lock(&w->kw_mu);
    w->kw_stop = 1;
    pthread_cond_signal(&w->kw_cv);
    pthread_mutex_unlock(&w->kw_mu);
    pthread_join(w->kw_thread, NULL);
    w->kw_started = 0;
}

/* ------------------------------------------------------------------------------------ */
/* Ensure and backlog                                                                     */

static int
kf_ensure(msm_stream_t *s, const char *name, int partitions, msm_stream_done_cb *cb, void *opaque)
{
    kf_stream_t *ks = s->s_impl;
    char tname[KF_TOPIC_MAX + 1];
    if (ks->ks_closing)
        return MSM_ERR_SHUTDOWN;
    if (topic_name(s->s_conf.name_prefix, name, tname, sizeof(tname)) != MSM_OK)
        return MSM_ERR_INVALID;
    kf_job_t *j = job_new(ks, KF_JOB_ENSURE, tname, NULL);
    if (!j)
        return MSM_ERR_NOMEM;
    j->kj_partitions = partitions;
    j->kj_done_cb = cb;
    j->kj_opaque = opaque;
    int rc = worker_submit(ks, j);
    if (rc != MSM_OK)
        job_free(ks, j);
    return rc;
}

static int kf_backlog(
    msm_stream_t *s, const char *name, const char *group, msm_stream_backlog_cb *cb, void *opaque)
{
    kf_stream_t *ks = s->s_impl;
    char tname[KF_TOPIC_MAX + 1];
    if (ks->ks_closing)
        return MSM_ERR_SHUTDOWN;
    if (topic_name(s->s_conf.name_prefix, name, tname, sizeof(tname)) != MSM_OK)
        return MSM_ERR_INVALID;
    kf_job_t *j = job_new(ks, KF_JOB_BACKLOG, tname, group);
    if (!j)
        return MSM_ERR_NOMEM;
    j->kj_backlog_cb = cb;
    j->kj_opaque = opaque;
    int rc = worker_submit(ks, j);
    if (rc != MSM_OK)
        job_free(ks, j);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Producer event dispatch, init and destroy                                              */

static void ks_drain(kf_stream_t *ks)
{
    pipe_drain(ks->ks_pipe[0]);
    worker_collect(ks);
    while (ks->ks_ready) {
        kf_batch_t *b = ks->ks_ready;
        ks->ks_ready = b->kb_rnext;
        batch_finish(ks, b);
    }
    int i;
    for (i = 0; i < KF_DRAIN_MAX; i++) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(ks->ks_q, 0);
        if (!ev)
            break;
        switch (rd_kafka_event_type(ev)) {
        case RD_KAFKA_EVENT_DR:
            on_delivery(ks, ev);
            break;
        case RD_KAFKA_EVENT_ERROR:
            log_error_event("producer", ev);
            break;
        case RD_KAFKA_EVENT_LOG:
            log_event(ev);
            break;
        default:
            break;
        }
        rd_kafka_event_destroy(ev);
    }
    /* librdkafka writes the pipe again only once the queue was served empty. */
    if (i == KF_DRAIN_MAX)
        ks_kick(ks);
}

static void on_producer_fd(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop, (void)fd, (void)events;
    ks_drain(opaque);
}

static void on_producer_kick(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    ks_drain(opaque);
}

static void kf_destroy(msm_stream_t *s)
{
    kf_stream_t *ks = s->s_impl;
    if (!ks)
        return;
    ks->ks_closing = 1;
    if (ks->ks_consumers)
        msm_log(MSM_LOG_WARN, KF_FAC, "log client freed before %zu of its consumers",
                ks->ks_consumers);
    worker_stop(ks);
    if (ks->ks_pipe[0] >= 0)
        msm_loop_unwatch(ks->ks_loop, ks->ks_pipe[0]);
    msm_loop_timer_stop(ks->ks_loop, &ks->ks_kick);
    /* Callbacks first (they may look at pending counts), then librdkafka goes away: the
     * reports still queued inside it are dropped with the handle. */
    for (kf_batch_t *b = ks->ks_batches; b; b = b->kb_next) {
        msm_stream_done_cb *cb = b->kb_cb;
        b->kb_cb = NULL;
        if (cb)
            cb(MSM_ERR_SHUTDOWN, "log client closed", b->kb_opaque);
    }
    while (ks->ks_jobs) {
        snprintf(ks->ks_jobs->kj_reason, sizeof(ks->ks_jobs->kj_reason), "log client closed");
        job_finish(ks, ks->ks_jobs, MSM_ERR_SHUTDOWN);
    }
    if (ks->ks_rk) {
        rd_kafka_purge(ks->ks_rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                                      RD_KAFKA_PURGE_F_NON_BLOCKING);
        if (ks->ks_q) {
            rd_kafka_queue_io_event_enable(ks->ks_q, -1, NULL, 0);
            rd_kafka_queue_destroy(ks->ks_q);
        }
        topics_free(ks);
        rd_kafka_destroy(ks->ks_rk);
    }
    while (ks->ks_batches) {
        kf_batch_t *b = ks->ks_batches;
        batch_unlink(ks, b);
        free(b);
    }
    pipe_close(ks->ks_pipe);
    pthread_mutex_destroy(&ks->ks_w.kw_mu);
    pthread_cond_destroy(&ks->ks_w.kw_cv);
    free(ks);
    s->s_impl = NULL;
}

static int kf_init(msm_stream_t *s, char *errbuf, size_t errbuf_size)
{
    const msm_stream_conf_t *sc = &s->s_conf;
    rd_kafka_conf_t *conf = NULL;
    kf_stream_t *ks = calloc(1, sizeof(*ks));
    char num[32], err[256];
    if (!ks) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return MSM_ERR_NOMEM;
    }
    ks->ks_s = s;
    ks->ks_loop = s->s_loop;
    ks->ks_pipe[0] = ks->ks_pipe[1] = -1;
    msm_timer_init(&ks->ks_kick);
    pthread_mutex_init(&ks->ks_w.kw_mu, NULL);
    pthread_cond_init(&ks->ks_w.kw_cv, NULL);
    uint64_t q = sc->append_timeout_ms;
    ks->ks_query_ms = (int)(q < 1000 ? 1000 : q > 10000 ? 10000 : q);
    s->s_impl = ks;
    if (pipe_open(ks->ks_pipe) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "pipe: %s", strerror(errno));
        goto fail;
    }
    /* Durable means written by every in-sync replica (acks=all), once however often
     * librdkafka retries (idempotence), or failed when append_timeout_ms is spent. An append
     * to a stream nobody ensured fails rather than creating a topic with the broker's
     * default partition count. */
    conf = rd_kafka_conf_new();
    snprintf(num, sizeof(num), "%" PRIu64,
             sc->append_timeout_ms > INT32_MAX ? (uint64_t)INT32_MAX : sc->append_timeout_ms);
    if (conf_set(conf, "bootstrap.servers", sc->kafka_brokers, errbuf, errbuf_size) ||
        conf_set(conf, "client.id", "msm", errbuf, errbuf_size) ||
        conf_set(conf, "enable.idempotence", "true", errbuf, errbuf_size) ||
        conf_set(conf, "acks", "all", errbuf, errbuf_size) ||
        conf_set(conf, "linger.ms", "5", errbuf, errbuf_size) ||
        conf_set(conf, "message.timeout.ms", num, errbuf, errbuf_size) ||
        conf_set(conf, "partitioner", "murmur2_random", errbuf, errbuf_size) ||
        conf_set(conf, "allow.auto.create.topics", "false", errbuf, errbuf_size) ||
        conf_set(conf, "reconnect.backoff.max.ms", KF_RECONNECT_MAX_MS, errbuf, errbuf_size) ||
        conf_set(conf, "log.queue", "true", errbuf, errbuf_size) ||
        conf_apply_props(conf, sc->kafka_props, errbuf, errbuf_size))
        goto fail;
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR | RD_KAFKA_EVENT_ERROR | RD_KAFKA_EVENT_LOG);
    ks->ks_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!ks->ks_rk) {
        snprintf(errbuf, errbuf_size, "kafka producer: %s", err);
        goto fail;
    }
    conf = NULL; /* owned by ks_rk now */
    ks->ks_q = rd_kafka_queue_get_main(ks->ks_rk);
    rd_kafka_set_log_queue(ks->ks_rk, ks->ks_q);
    rd_kafka_queue_io_event_enable(ks->ks_q, ks->ks_pipe[1], "1", 1);
    if (msm_loop_watch(ks->ks_loop, ks->ks_pipe[0], MSM_LOOP_READ, on_producer_fd, ks) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "cannot watch the kafka wake-up pipe");
        goto fail;
    }
    /* Events queued before the pipe was attached produce no wake-up: look once. */
    msm_loop_timer_start(ks->ks_loop, &ks->ks_kick, 0, on_producer_kick, ks);
    return MSM_OK;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    kf_destroy(s);
    return MSM_ERR_INVALID;
}

/* ------------------------------------------------------------------------------------ */
/* Consumer: partitions and acknowledgement tracking                                     */

static kf_part_t *part_get(kf_consumer_t *kc, int32_t id)
{
    return id >= 0 && (size_t)id < kc->kc_nparts ? &kc->kc_parts[id] : NULL;
}

static kf_part_t *part_make(kf_consumer_t *kc, int32_t id)
{
    if (id < 0 || id >= KF_MAX_PARTITION)
        return NULL;
    if ((size_t)id >= kc->kc_nparts) {
        size_t n = (size_t)id + 1;
        kf_part_t *np = realloc(kc->kc_parts, n * sizeof(*np));
        if (!np)
            return NULL;
        for (size_t i = kc->kc_nparts; i < n; i++) {
            memset(&np[i], 0, sizeof(np[i]));
            np[i].kp_commit = np[i].kp_sent = np[i].kp_seen = -1;
        }
        kc->kc_parts = np;
        kc->kc_nparts = n;
    }
    return &kc->kc_parts[id];
}

static kf_slot_t *ring_at(kf_part_t *p, uint64_t seq)
{
    return &p->kp_ring[seq & (p->kp_cap - 1)];
}

static int ring_push(kf_part_t *p, int64_t off, uint64_t *seq)
{
    if (p->kp_tail - p->kp_head == p->kp_cap) {
        size_t ncap = p->kp_cap ? p->kp_cap * 2 : 64;
        kf_slot_t *nr = malloc(ncap * sizeof(*nr));
        if (!nr)
            return MSM_ERR_NOMEM;
        for (uint64_t q = p->kp_head; q < p->kp_tail; q++)
            nr[q & (ncap - 1)] = *ring_at(p, q);
        free(p->kp_ring);
        p->kp_ring = nr;
        p->kp_cap = ncap;
    }
    kf_slot_t *slot = ring_at(p, p->kp_tail);
    slot->sl_off = off;
    slot->sl_acked = 0;
    *seq = p->kp_tail++;
    return MSM_OK;
}

static void part_assign(kf_consumer_t *kc, kf_part_t *p)
{
    p->kp_assigned = 1;
    p->kp_gen = ++kc->kc_gen;
    p->kp_head = p->kp_tail;
    p->kp_commit = p->kp_sent = -1;
}

/* Revoked: acks of the messages still out are ignored from now on (kp_gen). */
static void part_forget(kf_part_t *p)
{
    p->kp_assigned = 0;
    p->kp_head = p->kp_tail;
    p->kp_commit = p->kp_sent = -1;
}

static int msg_current(kf_consumer_t *kc, const kf_msg_t *km)
{
    kf_part_t *p = part_get(kc, km->km_msg.partition);
    return p && p->kp_assigned && p->kp_gen == km->km_gen;
}

static void out_link(kf_consumer_t *kc, kf_msg_t *km)
{
    km->km_prev = NULL;
    km->km_next = kc->kc_out;
    if (km->km_next)
        km->km_next->km_prev = km;
    kc->kc_out = km;
}

static void out_unlink(kf_consumer_t *kc, kf_msg_t *km)
{
    if (km->km_prev)
        km->km_prev->km_next = km->km_next;
    else
        kc->kc_out = km->km_next;
    if (km->km_next)
        km->km_next->km_prev = km->km_prev;
    km->km_prev = km->km_next = NULL;
}

/* A record buffer of at least @p need bytes: a spare one when there is (grown if it is too
 * small), a new one otherwise. */
static kf_msg_t *msg_take(kf_consumer_t *kc, size_t need)
{
    kf_msg_t *km = kc->kc_spare;
    if (km) {
        kc->kc_spare = km->km_next;
        kc->kc_nspare--;
        if (km->km_cap >= need)
            return km;
    }
    size_t cap = KF_MSG_MIN_CAP;
    while (cap < need && cap <= SIZE_MAX / 2)
        cap *= 2;
    if (cap < need)
        cap = need;
    kf_msg_t *grown = realloc(km, sizeof(*grown) + cap);
    if (!grown) {
        free(km);
        return NULL;
    }
    grown->km_cap = cap;
    return grown;
}

/* Keeps a freed record for reuse, as many as can be out at once, small ones only. */
static void msg_give(kf_consumer_t *kc, kf_msg_t *km)
{
    if (km->km_cap > KF_MSG_SPARE_CAP || kc->kc_nspare >= kc->kc_max_unacked + kc->kc_max_batch) {
        free(km);
        return;
    }
    km->km_next = kc->kc_spare;
    kc->kc_spare = km;
    kc->kc_nspare++;
}

/* Drops fetched-but-undelivered messages of partitions no longer ours. */
static void ready_prune(kf_consumer_t *kc)
{
    kf_msg_t **pp = &kc->kc_ready, *last = NULL;
    while (*pp) {
        kf_msg_t *km = *pp;
        if (!msg_current(kc, km)) {
            *pp = km->km_next;
            msg_give(kc, km);
            kc->kc_nready--;
        } else {
            last = km;
            pp = &km->km_next;
        }
    }
    kc->kc_ready_tail = last;
}

static void on_commit_retry(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    kf_consumer_t *kc = opaque;
    kc->kc_dirty = 1;
}

static void commit_retry_later(kf_consumer_t *kc)
{
    if (!kc->kc_closing && !msm_timer_active(&kc->kc_retry))
        msm_loop_timer_start(kc->kc_loop, &kc->kc_retry, KF_COMMIT_RETRY_MS, on_commit_retry, kc);
}

/* Commits the acknowledged prefix of every assigned partition that moved (asynchronously:
 * the result arrives as an OFFSET_COMMIT event). */
static void commit_flush(kf_consumer_t *kc)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    kc->kc_dirty = 0;
    for (size_t i = 0; i < kc->kc_nparts; i++) {
        kf_part_t *p = &kc->kc_parts[i];
        if (!p->kp_assigned || p->kp_commit < 0 || p->kp_commit == p->kp_sent)
            continue;
        if (!l)
            l = rd_kafka_topic_partition_list_new(4);
        rd_kafka_topic_partition_list_add(l, kc->kc_topic, (int32_t)i)->offset = p->kp_commit;
        p->kp_sent = p->kp_commit;
    }
    if (!l)
        return;
    rd_kafka_resp_err_t e = rd_kafka_commit(kc->kc_rk, l, 1);
    if (e) {
        msm_log(MSM_LOG_WARN, KF_FAC, "commit on %s: %s", kc->kc_topic, rd_kafka_err2str(e));
        for (int i = 0; i < l->cnt; i++) {
            kf_part_t *p = part_get(kc, l->elems[i].partition);
            if (p)
                p->kp_sent = -1;
        }
        commit_retry_later(kc);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void on_commit(kf_consumer_t *kc, rd_kafka_event_t *ev)
{
    rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
    const rd_kafka_topic_partition_list_t *l = rd_kafka_event_topic_partition_list(ev);
    rd_kafka_resp_err_t first = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (e == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    for (int i = 0; l && i < l->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &l->elems[i];
        rd_kafka_resp_err_t pe = tp->err ? tp->err : e;
        if (!pe)
            continue;
        if (!first)
            first = pe;
        /* Send it again unless a later commit of this partition is already out. */
        kf_part_t *p = part_get(kc, tp->partition);
        if (p && p->kp_assigned && p->kp_sent == tp->offset)
            p->kp_sent = -1;
    }
    if (!first && !l)
        first = e;
    if (first) {
        msm_log(MSM_LOG_WARN, KF_FAC, "offset commit on %s failed: %s (retrying)", kc->kc_topic,
                rd_kafka_err2str(first));
        commit_retry_later(kc);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Consumer: events, delivery, flow control                                              */

static void on_fetch(kf_consumer_t *kc, rd_kafka_event_t *ev)
{
    const rd_kafka_message_t *m = rd_kafka_event_message_next(ev);
    if (!m)
        return;
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            msm_log(MSM_LOG_WARN, KF_FAC, "consumer of %s: %s", kc->kc_topic,
                    rd_kafka_message_errstr(m));
        return;
    }
    kf_part_t *p = part_get(kc, m->partition);
    if (!p || !p->kp_assigned)
        return; /* not ours any more (librdkafka normally filters these) */
    /* A rewind within one assignment (an offset reset, a seek) would break the ring's offset
     * order: track afresh, as after a reassignment, so the records already out are delivered
     * again rather than a later ack committing over them. */
    if (p->kp_tail > p->kp_head && m->offset <= ring_at(p, p->kp_tail - 1)->sl_off)
        part_assign(kc, p);
    size_t klen = m->key ? m->key_len : 0, vlen = m->payload ? m->len : 0;
    kf_msg_t *km = msg_take(kc, klen + vlen);
    uint64_t seq = 0;
    if (!km || ring_push(p, m->offset, &seq) != MSM_OK) {
        /* librdkafka already moved past this record: dropping it could commit over it. */
        msm_log(MSM_LOG_ERROR, KF_FAC,
                "out of memory holding %s [%" PRId32 "] offset %" PRId64 ": aborting rather "
                "than skipping a record",
                kc->kc_topic, m->partition, m->offset);
        abort();
    }
    memset(&km->km_msg, 0, sizeof(km->km_msg));
    if (klen)
        memcpy(km->km_data, m->key, klen);
    if (vlen)
        memcpy(km->km_data + klen, m->payload, vlen);
    km->km_msg.stream = kc->kc_name;
    km->km_msg.partition = m->partition;
    km->km_msg.key = m->key ? km->km_data : NULL;
    km->km_msg.key_len = klen;
    km->km_msg.value = km->km_data + klen;
    km->km_msg.value_len = vlen;
    snprintf(km->km_msg.position, sizeof(km->km_msg.position), "%" PRId64, m->offset);
    km->km_msg.redelivered = m->offset <= p->kp_seen;
    if (m->offset > p->kp_seen)
        p->kp_seen = m->offset;
    km->km_seq = seq;
    km->km_gen = p->kp_gen;
    km->km_prev = km->km_next = NULL;
    if (kc->kc_ready_tail)
        kc->kc_ready_tail->km_next = km;
    else
        kc->kc_ready = km;
    kc->kc_ready_tail = km;
    kc->kc_nready++;
}

/* Routes the records of newly assigned partitions to the fetch queue, which is only read
 * while there is room under max_unacked (done before the assignment starts fetching; the
 * routing ends by itself when a partition's fetching stops). */
static void forward_partitions(kf_consumer_t *kc, const rd_kafka_topic_partition_list_t *l)
{
    for (int i = 0; i < l->cnt; i++) {
        rd_kafka_queue_t *pq =
            rd_kafka_queue_get_partition(kc->kc_rk, l->elems[i].topic, l->elems[i].partition);
        if (!pq) {
            /* Its records then arrive on the consumer queue, outside the flow control. */
            msm_log(MSM_LOG_WARN, KF_FAC, "member %s: no queue for %s [%" PRId32 "]", kc->kc_member,
                    l->elems[i].topic, l->elems[i].partition);
            continue;
        }
        rd_kafka_queue_forward(pq, kc->kc_fq);
        rd_kafka_queue_destroy(pq);
    }
}

static void on_rebalance(kf_consumer_t *kc, rd_kafka_event_t *ev)
{
    rd_kafka_t *rk = kc->kc_rk;
    rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
    rd_kafka_topic_partition_list_t *l = rd_kafka_event_topic_partition_list(ev);
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    int cnt = l ? l->cnt : 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t re = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (e == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < cnt; i++) {
            kf_part_t *p = part_make(kc, l->elems[i].partition);
            if (p)
                part_assign(kc, p);
        }
        if (l)
            forward_partitions(kc, l);
        if (coop)
            error = rd_kafka_incremental_assign(rk, l);
        else
            re = rd_kafka_assign(rk, l);
        msm_log(MSM_LOG_INFO, KF_FAC, "member %s of %s: assigned %d partition(s)", kc->kc_member,
                kc->kc_topic, cnt);
    } else {
        /* Revoked (or a rebalance error): commit what was acknowledged, forget the rest.
         * The async commit is queued ahead of the unassign and the rejoin. */
        if (!rd_kafka_assignment_lost(rk))
            commit_flush(kc);
        if (l) {
            for (int i = 0; i < cnt; i++) {
                kf_part_t *p = part_get(kc, l->elems[i].partition);
                if (p)
                    part_forget(p);
            }
        } else {
            for (size_t i = 0; i < kc->kc_nparts; i++)
                part_forget(&kc->kc_parts[i]);
        }
        ready_prune(kc);
        if (coop && l)
            error = rd_kafka_incremental_unassign(rk, l);
        else
            re = rd_kafka_assign(rk, NULL);
        if (e != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            msm_log(MSM_LOG_WARN, KF_FAC, "member %s of %s: rebalance error: %s", kc->kc_member,
                    kc->kc_topic, rd_kafka_err2str(e));
        else
            msm_log(MSM_LOG_INFO, KF_FAC, "member %s of %s: revoked %d partition(s)", kc->kc_member,
                    kc->kc_topic, cnt);
    }
    if (error) {
        msm_log(MSM_LOG_WARN, KF_FAC, "member %s: %s", kc->kc_member, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    if (re)
        msm_log(MSM_LOG_WARN, KF_FAC, "member %s: assign: %s", kc->kc_member, rd_kafka_err2str(re));
}

/* Records held: handed out and unacknowledged, or fetched and not yet handed out. */
static size_t kc_load(const kf_consumer_t *kc)
{
    return kc->kc_unacked + kc->kc_nready;
}

/* Takes records from the fetch queue while fewer than max_unacked are held. Leaving them in
 * librdkafka's queue is what holds consumption back: its prefetch stops at
 * queued.min.messages / queued.max.messages.kbytes, and the member keeps polling its group
 * events meanwhile. (Pausing the partitions instead would drop the prefetched records and
 * stall up to a second on every resume; so would a small queued.min.messages, since
 * librdkafka 2.0 looks again at a partition whose queue was full about once a second.)
 * @returns the events taken. */
static size_t fetch_more(kf_consumer_t *kc, size_t budget)
{
    size_t n = 0;
    kc->kc_held = 0;
    while (n < budget) {
        if (kc_load(kc) >= kc->kc_max_unacked) {
            kc->kc_held = 1;
            break;
        }
        rd_kafka_event_t *ev = rd_kafka_queue_poll(kc->kc_fq, 0);
        if (!ev)
            break;
        if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_FETCH)
            on_fetch(kc, ev);
        else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ERROR)
            log_error_event("consumer", ev);
        rd_kafka_event_destroy(ev);
        n++;
    }
    return n;
}

static void deliver(kf_consumer_t *kc)
{
    while (!kc->kc_free_pending && kc->kc_ready && kc->kc_unacked < kc->kc_max_unacked) {
        size_t n = 0;
        while (n < kc->kc_max_batch && kc->kc_ready && kc->kc_unacked < kc->kc_max_unacked) {
            kf_msg_t *km = kc->kc_ready;
            kc->kc_ready = km->km_next;
            if (!kc->kc_ready)
                kc->kc_ready_tail = NULL;
            kc->kc_nready--;
            out_link(kc, km);
            kc->kc_unacked++;
            kc->kc_arr[n++] = &km->km_msg;
        }
        kc->kc_cb(&kc->kc_base, kc->kc_arr, n, kc->kc_opaque);
    }
}

static void kc_free_now(kf_consumer_t *kc);
static void on_consumer_kick(msm_loop_t *loop, void *opaque);

static void kc_kick(kf_consumer_t *kc)
{
    if (!kc->kc_closing && !msm_timer_active(&kc->kc_kick))
        msm_loop_timer_start(kc->kc_loop, &kc->kc_kick, 0, on_consumer_kick, kc);
}

/* Serves the group's events (rebalances, commit results, errors, logs). @returns how many. */
static size_t control_drain(kf_consumer_t *kc)
{
    size_t i;
    for (i = 0; i < KF_DRAIN_MAX; i++) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(kc->kc_q, 0);
        if (!ev)
            break;
        switch (rd_kafka_event_type(ev)) {
        case RD_KAFKA_EVENT_FETCH: /* a partition whose queue could not be routed */
            on_fetch(kc, ev);
            break;
        case RD_KAFKA_EVENT_REBALANCE:
            on_rebalance(kc, ev);
            break;
        case RD_KAFKA_EVENT_OFFSET_COMMIT:
            on_commit(kc, ev);
            break;
        case RD_KAFKA_EVENT_ERROR:
            log_error_event("consumer", ev);
            break;
        case RD_KAFKA_EVENT_LOG:
            log_event(ev);
            break;
        default:
            break;
        }
        rd_kafka_event_destroy(ev);
    }
    return i;
}

static void kc_drain(kf_consumer_t *kc)
{
    if (kc->kc_closing)
        return;
    pipe_drain(kc->kc_pipe[0]);
    kc->kc_busy++;
    int more = control_drain(kc) == KF_DRAIN_MAX;
    /* Acks from inside the batch callback make room for more: go round until no progress,
     * within one wake-up's budget. */
    size_t budget = KF_DRAIN_MAX;
    while (!kc->kc_free_pending) {
        size_t n = fetch_more(kc, budget);
        deliver(kc);
        budget -= n;
        if (n == 0)
            break;
        if (budget == 0) {
            more = 1;
            break;
        }
    }
    kc->kc_busy--;
    if (kc->kc_free_pending) {
        kc_free_now(kc);
        return;
    }
    if (more)
        kc_kick(kc);
}

static void on_consumer_fd(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop, (void)fd, (void)events;
    kc_drain(opaque);
}

static void on_consumer_kick(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    kc_drain(opaque);
}

static void on_consumer_poll(msm_loop_t *loop, void *opaque)
{
    kf_consumer_t *kc = opaque;
    msm_loop_timer_start(loop, &kc->kc_poll, KF_POLL_MS, on_consumer_poll, kc);
    kc_drain(kc);
}

static void on_consumer_before_sleep(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    kf_consumer_t *kc = opaque;
    if (kc->kc_dirty)
        commit_flush(kc);
}

/* ------------------------------------------------------------------------------------ */
/* Consumer: life cycle                                                                   */

/* Leaves the group, serving the revoke it triggers; blocks the loop at most KF_CLOSE_MS.
 * @returns 1 when the consumer closed cleanly. */
static int close_bounded(kf_consumer_t *kc)
{
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(kc->kc_rk, kc->kc_q);
    if (error) {
        msm_log(MSM_LOG_WARN, KF_FAC, "member %s: close: %s", kc->kc_member,
                rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return 0;
    }
    uint64_t deadline = mono_ms() + KF_CLOSE_MS;
    while (!rd_kafka_consumer_closed(kc->kc_rk)) {
        if (mono_ms() >= deadline) {
            msm_log(MSM_LOG_WARN, KF_FAC, "member %s: leaving the group timed out", kc->kc_member);
            return 0;
        }
        rd_kafka_event_t *ev = rd_kafka_queue_poll(kc->kc_q, 50);
        if (!ev)
            continue;
        switch (rd_kafka_event_type(ev)) {
        case RD_KAFKA_EVENT_REBALANCE:
            on_rebalance(kc, ev);
            break;
        case RD_KAFKA_EVENT_LOG:
            log_event(ev);
            break;
        case RD_KAFKA_EVENT_ERROR:
            log_error_event("consumer", ev);
            break;
        default:
            break;
        }
        rd_kafka_event_destroy(ev);
    }
    return 1;
}

static void msgs_free(kf_msg_t *km)
{
    while (km) {
        kf_msg_t *next = km->km_next;
        free(km);
        km = next;
    }
}

static void kc_free_now(kf_consumer_t *kc)
{
    kc->kc_closing = 1;
    if (kc->kc_hooked)
        msm_loop_remove_before_sleep(kc->kc_loop, on_consumer_before_sleep, kc);
    msm_loop_timer_stop(kc->kc_loop, &kc->kc_kick);
    msm_loop_timer_stop(kc->kc_loop, &kc->kc_poll);
    msm_loop_timer_stop(kc->kc_loop, &kc->kc_retry);
    if (kc->kc_pipe[0] >= 0)
        msm_loop_unwatch(kc->kc_loop, kc->kc_pipe[0]);
    if (kc->kc_rk) {
        int closed = 0;
        if (kc->kc_q) {
            /* Acknowledged records are committed; unacknowledged ones are not, so the
             * member that takes the partition over receives them. */
            commit_flush(kc);
            rd_kafka_queue_io_event_enable(kc->kc_q, -1, NULL, 0);
            closed = close_bounded(kc);
            rd_kafka_queue_destroy(kc->kc_q);
        }
        if (kc->kc_fq) {
            rd_kafka_queue_io_event_enable(kc->kc_fq, -1, NULL, 0);
            rd_kafka_queue_destroy(kc->kc_fq);
        }
        rd_kafka_destroy_flags(kc->kc_rk, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    msgs_free(kc->kc_ready);
    msgs_free(kc->kc_out);
    msgs_free(kc->kc_spare);
    for (size_t i = 0; i < kc->kc_nparts; i++)
        free(kc->kc_parts[i].kp_ring);
    free(kc->kc_parts);
    free(kc->kc_arr);
    free(kc->kc_name);
    free(kc->kc_member);
    free(kc->kc_topic);
    pipe_close(kc->kc_pipe);
    free(kc);
}

/* The consumer's librdkafka configuration. @returns NULL with the reason in errbuf. */
static rd_kafka_conf_t *consumer_conf(const msm_stream_conf_t *sc,
                                      const char *gid,
                                      const char *member,
                                      char *errbuf,
                                      size_t errbuf_size)
{
    char session[24], heartbeat[24], maxpoll[24];
    /* The lease is the session timeout: a member silent that long loses its partitions and
     * its unacknowledged records go to another member. Brokers refuse less than their
     * group.min.session.timeout.ms (6 s by default). Heartbeats come often enough that a
     * rebalance is noticed within a fraction of it. */
    uint64_t lease = sc->lease_ms > 3600000 ? 3600000 : sc->lease_ms;
    if (lease < KF_MIN_SESSION_MS)
        lease = KF_MIN_SESSION_MS;
    uint64_t hb = lease / 10 < 250 ? 250 : lease / 10 > 3000 ? 3000 : lease / 10;
    snprintf(session, sizeof(session), "%" PRIu64, lease);
    snprintf(heartbeat, sizeof(heartbeat), "%" PRIu64, hb);
    snprintf(maxpoll, sizeof(maxpoll), "%" PRIu64, lease > 300000 ? lease : (uint64_t)300000);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", sc->kafka_brokers, errbuf, errbuf_size) ||
        conf_set(conf, "group.id", gid, errbuf, errbuf_size) ||
        conf_set(conf, "client.id", member, errbuf, errbuf_size) ||
        conf_set(conf, "enable.auto.commit", "false", errbuf, errbuf_size) ||
        conf_set(conf, "enable.auto.offset.store", "false", errbuf, errbuf_size) ||
        conf_set(conf, "auto.offset.reset", "earliest", errbuf, errbuf_size) ||
        conf_set(conf, "session.timeout.ms", session, errbuf, errbuf_size) ||
        conf_set(conf, "heartbeat.interval.ms", heartbeat, errbuf, errbuf_size) ||
        conf_set(conf, "max.poll.interval.ms", maxpoll, errbuf, errbuf_size) ||
        conf_set(conf, "reconnect.backoff.max.ms", KF_RECONNECT_MAX_MS, errbuf, errbuf_size) ||
        conf_set(conf, "topic.metadata.refresh.interval.ms", "10000", errbuf, errbuf_size) ||
        conf_set(conf, "log.queue", "true", errbuf, errbuf_size) ||
        conf_apply_props(conf, sc->kafka_props, errbuf, errbuf_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_FETCH | RD_KAFKA_EVENT_REBALANCE |
                                       RD_KAFKA_EVENT_OFFSET_COMMIT | RD_KAFKA_EVENT_ERROR |
                                       RD_KAFKA_EVENT_LOG);
    return conf;
}

/* Wires the consumer's queue to the loop and subscribes. @returns MSM_OK or an error with
 * the reason in errbuf. */
static int consumer_start(kf_consumer_t *kc, char *errbuf, size_t errbuf_size)
{
    rd_kafka_poll_set_consumer(kc->kc_rk);
    kc->kc_q = rd_kafka_queue_get_consumer(kc->kc_rk);
    kc->kc_fq = rd_kafka_queue_new(kc->kc_rk);
    rd_kafka_set_log_queue(kc->kc_rk, kc->kc_q);
    rd_kafka_queue_io_event_enable(kc->kc_q, kc->kc_pipe[1], "1", 1);
    rd_kafka_queue_io_event_enable(kc->kc_fq, kc->kc_pipe[1], "1", 1);
    if (msm_loop_watch(kc->kc_loop, kc->kc_pipe[0], MSM_LOOP_READ, on_consumer_fd, kc) != MSM_OK ||
        msm_loop_add_before_sleep(kc->kc_loop, on_consumer_before_sleep, kc) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "cannot attach the consumer to the loop");
        return MSM_ERR_IO;
    }
    kc->kc_hooked = 1;
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, kc->kc_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(kc->kc_rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (e) {
        snprintf(errbuf, errbuf_size, "subscribe to %s: %s", kc->kc_topic, rd_kafka_err2str(e));
        return kf_err(e) == MSM_OK ? MSM_ERR_BACKEND : kf_err(e);
    }
    msm_loop_timer_start(kc->kc_loop, &kc->kc_poll, KF_POLL_MS, on_consumer_poll, kc);
    /* Events queued before the pipe was attached produce no wake-up: look once. */
    msm_loop_timer_start(kc->kc_loop, &kc->kc_kick, 0, on_consumer_kick, kc);
    return MSM_OK;
}

static msm_consumer_t *kf_consume(msm_stream_t *s,
                                  const char *name,
                                  const char *group,
                                  const char *member,
                                  size_t max_batch,
                                  size_t max_unacked,
                                  msm_consumer_batch_cb *cb,
                                  void *opaque,
                                  char *errbuf,
                                  size_t errbuf_size)
{
    kf_stream_t *ks = s->s_impl;
    rd_kafka_conf_t *conf = NULL;
    char tname[KF_TOPIC_MAX + 1], err[256];
    char *gid = NULL;
    kf_consumer_t *kc = calloc(1, sizeof(*kc));
    if (!kc) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    kc->kc_ks = ks;
    kc->kc_loop = s->s_loop;
    kc->kc_pipe[0] = kc->kc_pipe[1] = -1;
    kc->kc_max_batch = max_batch;
    kc->kc_max_unacked = max_unacked;
    kc->kc_cb = cb;
    kc->kc_opaque = opaque;
    msm_timer_init(&kc->kc_kick);
    msm_timer_init(&kc->kc_poll);
    msm_timer_init(&kc->kc_retry);
    if (ks->ks_closing) {
        snprintf(errbuf, errbuf_size, "log client is closing");
        goto fail;
    }
    if (topic_name(s->s_conf.name_prefix, name, tname, sizeof(tname)) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "stream name \"%s\" too long for a Kafka topic", name);
        goto fail;
    }
    kc->kc_name = strdup(name);
    kc->kc_member = strdup(member);
    kc->kc_topic = strdup(tname);
    kc->kc_arr = calloc(max_batch, sizeof(*kc->kc_arr));
    gid = group_id(tname, group);
    if (!kc->kc_name || !kc->kc_member || !kc->kc_topic || !kc->kc_arr || !gid) {
        snprintf(errbuf, errbuf_size, "out of memory");
        goto fail;
    }
    if (pipe_open(kc->kc_pipe) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "pipe: %s", strerror(errno));
        goto fail;
    }
    conf = consumer_conf(&s->s_conf, gid, member, errbuf, errbuf_size);
    if (!conf)
        goto fail;
    kc->kc_rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!kc->kc_rk) {
        snprintf(errbuf, errbuf_size, "kafka consumer: %s", err);
        goto fail;
    }
    conf = NULL; /* owned by kc_rk now */
    if (consumer_start(kc, errbuf, errbuf_size) != MSM_OK)
        goto fail;
    free(gid);
    ks->ks_consumers++;
    return &kc->kc_base;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(gid);
    kc_free_now(kc);
    return NULL;
}

static void kf_ack(msm_consumer_t *c, msm_stream_msg_t *msg)
{
    kf_consumer_t *kc = (kf_consumer_t *)c;
    kf_msg_t *km = (kf_msg_t *)msg;
    out_unlink(kc, km);
    kc->kc_unacked--;
    kf_part_t *p = part_get(kc, km->km_msg.partition);
    if (p && p->kp_assigned && p->kp_gen == km->km_gen && km->km_seq >= p->kp_head &&
        km->km_seq < p->kp_tail) {
        ring_at(p, km->km_seq)->sl_acked = 1;
        /* Only the contiguous acknowledged prefix may be committed: an older record still
         * out holds the partition's commit back. */
        while (p->kp_head < p->kp_tail && ring_at(p, p->kp_head)->sl_acked) {
            p->kp_commit = ring_at(p, p->kp_head)->sl_off + 1;
            p->kp_head++;
            kc->kc_dirty = 1;
        }
    }
    msg_give(kc, km);
    if (!kc->kc_busy && (kc->kc_ready || kc->kc_held))
        kc_kick(kc);
}

static size_t kf_unacked(const msm_consumer_t *c)
{
    return ((const kf_consumer_t *)c)->kc_unacked;
}

static void kf_consumer_free(msm_consumer_t *c)
{
    kf_consumer_t *kc = (kf_consumer_t *)c;
    kc->kc_ks->ks_consumers--;
    if (kc->kc_busy) {
        /* Called from its own batch callback: finished when the dispatch unwinds. */
        kc->kc_free_pending = 1;
        return;
    }
    kc_free_now(kc);
}

const msm_stream_driver_t msm__stream_kafka_driver = {
    .name = "kafka",
    .init = kf_init,
    .destroy = kf_destroy,
    .ensure = kf_ensure,
    .append = kf_append,
    .pending_appends = kf_pending_appends,
    .consume = kf_consume,
    .ack = kf_ack,
    .unacked = kf_unacked,
    .consumer_free = kf_consumer_free,
    .backlog = kf_backlog,
};
