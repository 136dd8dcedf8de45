/* SPDX-License-Identifier: MIT */
/* The Kafka log driver (librdkafka): one idempotent producer per msm_stream_t and one
 * consumer handle per msm_consumer_t. Every librdkafka event arrives on a queue that wakes
 * our loop through a pipe, so no msm code runs on librdkafka's threads; the blocking broker
 * queries (ensure, backlog) run on one small worker thread of ours. This file holds the
 * client's life cycle and the helpers every part shares; appends are in
 * stream_kafka_produce.c, group members in stream_kafka_consume.c and stream_kafka_ack.c,
 * the worker in stream_kafka_admin.c. */
#include "stream_kafka_int.h"
#include "msm/err.h"
#include "msm/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------ */
/* Helpers shared by the driver's files                                                 */

/* librdkafka's codes, translated once for the whole driver. */
int msm__kafka_err(rd_kafka_resp_err_t e)
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
int msm__kafka_topic_name(const char *prefix, const char *name, char *out, size_t outsz)
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
char *msm__kafka_group_id(const char *topic, const char *group)
{
    char *gid = NULL;
    if (asprintf(&gid, "%s:%s", topic, group) < 0)
        return NULL;
    return gid;
}

int msm__kafka_pipe_open(int p[2])
{
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
        p[0] = p[1] = -1;
        return MSM_ERR_IO;
    }
    return MSM_OK;
}

void msm__kafka_pipe_close(int p[2])
{
    for (int i = 0; i < 2; i++) {
        if (p[i] >= 0)
            close(p[i]);
        p[i] = -1;
    }
}

void msm__kafka_pipe_drain(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

void msm__kafka_log_event(rd_kafka_event_t *ev)
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

void msm__kafka_log_error_event(const char *who, rd_kafka_event_t *ev)
{
    rd_kafka_resp_err_t e = rd_kafka_event_error(ev);
    int fatal = rd_kafka_event_error_is_fatal(ev);
    msm_log(fatal ? MSM_LOG_ERROR : MSM_LOG_WARN, KF_FAC, "%s%s: %s (%s)", who,
            fatal ? " fatal error" : "", rd_kafka_event_error_string(ev), rd_kafka_err2name(e));
}

int msm__kafka_conf_set(
    rd_kafka_conf_t *conf, const char *key, const char *val, char *errbuf, size_t errbuf_size)
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
int msm__kafka_conf_apply_props(rd_kafka_conf_t *conf,
                                const char *const *props,
                                char *errbuf,
                                size_t errbuf_size)
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
        int rc = msm__kafka_conf_set(conf, key, eq + 1, errbuf, errbuf_size);
        if (rc != MSM_OK)
            return rc;
    }
    return MSM_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Init and destroy                                                                     */

static void kf_destroy(msm_stream_t *s)
{
    kf_stream_t *ks = s->s_impl;
    if (!ks)
        return;
    ks->ks_closing = 1;
    if (ks->ks_consumers)
        msm_log(MSM_LOG_WARN, KF_FAC, "log client freed before %zu of its consumers",
                ks->ks_consumers);
    msm__kafka_worker_stop(ks);
    if (ks->ks_pipe[0] >= 0)
        msm_loop_unwatch(ks->ks_loop, ks->ks_pipe[0]);
    msm_loop_timer_stop(ks->ks_loop, &ks->ks_kick);
    /* Callbacks first (they may look at pending counts), then librdkafka goes away: the
     * reports still queued inside it are dropped with the handle. */
    msm__kafka_appends_abort(ks);
    msm__kafka_jobs_abort(ks);
    if (ks->ks_rk) {
        rd_kafka_purge(ks->ks_rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                                      RD_KAFKA_PURGE_F_NON_BLOCKING);
        if (ks->ks_q) {
            rd_kafka_queue_io_event_enable(ks->ks_q, -1, NULL, 0);
            rd_kafka_queue_destroy(ks->ks_q);
        }
        msm__kafka_topics_free(ks);
        rd_kafka_destroy(ks->ks_rk);
    }
    msm__kafka_appends_free(ks);
    msm__kafka_pipe_close(ks->ks_pipe);
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
    if (msm__kafka_pipe_open(ks->ks_pipe) != MSM_OK) {
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
    if (msm__kafka_conf_set(conf, "bootstrap.servers", sc->kafka_brokers, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "client.id", "msm", errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "enable.idempotence", "true", errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "acks", "all", errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "linger.ms", KF_LINGER_MS, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "message.timeout.ms", num, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "partitioner", "murmur2_random", errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "allow.auto.create.topics", "false", errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "reconnect.backoff.max.ms", KF_RECONNECT_MAX_MS, errbuf,
                            errbuf_size) ||
        msm__kafka_conf_set(conf, "log.queue", "true", errbuf, errbuf_size) ||
        msm__kafka_conf_apply_props(conf, sc->kafka_props, errbuf, errbuf_size))
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
    if (msm__kafka_producer_watch(ks) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "cannot watch the kafka wake-up pipe");
        goto fail;
    }
    return MSM_OK;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    kf_destroy(s);
    return MSM_ERR_INVALID;
}

/* By design: a live member keeps its assigned partitions however long it holds their
 * records; only a dead member's partitions move (after the session timeout, conf.lease_ms). */
static void kf_set_lease(msm_consumer_t *c, uint64_t lease_ms)
{
    (void)c;
    (void)lease_ms;
}

const msm_stream_driver_t msm__stream_kafka_driver = {
    .name = "kafka",
    .init = kf_init,
    .destroy = kf_destroy,
    .ensure = msm__kafka_ensure,
    .append = msm__kafka_append,
    .pending_appends = msm__kafka_pending_appends,
    .consume = msm__kafka_consume,
    .ack = msm__kafka_ack,
    .unacked = msm__kafka_unacked,
    .consumer_free = msm__kafka_consumer_free,
    .backlog = msm__kafka_backlog,
    .set_lease = kf_set_lease,
    .remove = msm__kafka_delete,
    .marks = msm__kafka_marks,
};
