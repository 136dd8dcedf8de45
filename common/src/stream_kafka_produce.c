/* SPDX-License-Identifier: MIT */
/* The Kafka driver's appends: records handed to the idempotent producer, one delivery report
 * per record counted down to the append's single callback (durable = persisted with
 * acks=all), and the dispatch of the client's main queue, which also wakes the loop for the
 * worker's finished jobs. */
#include "stream_kafka_int.h"
#include "msm/err.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A topic handle for one stream name, cached by the producer. */
struct kf_topic_s {
    struct kf_topic_s *kt_next;
    rd_kafka_topic_t *kt_rkt;
    uint32_t kt_hash;
    char kt_name[]; /* the msm stream name (the cache key) */
};

/* One append: its callback fires when the last delivery report is in. */
struct kf_batch_s {
    struct kf_batch_s *kb_prev, *kb_next; /* pending list */
    struct kf_batch_s *kb_rnext;          /* zero-record batches waiting for the kick */
    msm_stream_done_cb *kb_cb;            /* NULL once completed with MSM_ERR_SHUTDOWN */
    void *kb_opaque;
    size_t kb_remaining; /* produced, report not yet in */
    int kb_err;          /* first error, MSM_OK while none */
    char kb_reason[192];
};

/* ------------------------------------------------------------------------------------ */
/* Topic cache                                                                          */

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
    if (msm__kafka_topic_name(ks->ks_s->s_conf.name_prefix, name, tname, sizeof(tname)) != MSM_OK)
        return MSM_ERR_INVALID;
    size_t nlen = strlen(name);
    kf_topic_t *kt = malloc(sizeof(*kt) + nlen + 1);
    if (!kt)
        return MSM_ERR_NOMEM;
    kt->kt_rkt = rd_kafka_topic_new(ks->ks_rk, tname, NULL);
    if (!kt->kt_rkt) {
        int err = msm__kafka_err(rd_kafka_last_error());
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

void msm__kafka_topics_free(kf_stream_t *ks)
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

/* ------------------------------------------------------------------------------------ */
/* Appends and delivery reports                                                         */

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
    b->kb_err = msm__kafka_err(e);
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

/* Produces one record (copied), with the mark header "<name> <tag> <value>" when marked. */
static rd_kafka_resp_err_t produce_one(kf_stream_t *ks, kf_topic_t *kt, const msm_record_t *r,
                       const msm_stream_mark_t *mark, int64_t value, kf_batch_t *b)
{
    if (!mark)
        return rd_kafka_produce(kt->kt_rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                                (void *)(uintptr_t)r->value, r->value ? r->value_len : 0, r->key,
                                r->key ? r->key_len : 0, b) == -1
                   ? rd_kafka_last_error()
                   : RD_KAFKA_RESP_ERR_NO_ERROR;
    char hdr[2 * MSM_STREAM_MARK_MAX + 32];
    int hlen = snprintf(hdr, sizeof(hdr), "%s %s %" PRId64, mark->name, mark->tag, value);
    return rd_kafka_producev(
        ks->ks_rk, RD_KAFKA_V_RKT(kt->kt_rkt), RD_KAFKA_V_PARTITION(RD_KAFKA_PARTITION_UA),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_VALUE((void *)(uintptr_t)r->value, r->value ? r->value_len : 0),
        RD_KAFKA_V_KEY(r->key, r->key ? r->key_len : 0),
        RD_KAFKA_V_HEADER(MSM__KAFKA_MARK_HEADER, hdr, (ssize_t)hlen), RD_KAFKA_V_OPAQUE(b),
        RD_KAFKA_V_END);
}

int msm__kafka_append(msm_stream_t *s,
                      const char *name,
                      const msm_record_t *records,
                      size_t n,
                      const msm_stream_mark_t *mark,
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
        rd_kafka_resp_err_t e = produce_one(ks, kt, r, mark, mark ? mark->values[i] : 0, b);
        if (e) {
            b->kb_remaining--;
            if (i == 0) {
                /* Nothing is in flight: fail now, without a callback. */
                free(b);
                return msm__kafka_err(e) == MSM_OK ? MSM_ERR_BACKEND : msm__kafka_err(e);
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

size_t msm__kafka_pending_appends(const msm_stream_t *s)
{
    const kf_stream_t *ks = s->s_impl;
    return ks->ks_pending;
}

void msm__kafka_appends_abort(kf_stream_t *ks)
{
    for (kf_batch_t *b = ks->ks_batches; b; b = b->kb_next) {
        msm_stream_done_cb *cb = b->kb_cb;
        b->kb_cb = NULL;
        if (cb)
            cb(MSM_ERR_SHUTDOWN, "log client closed", b->kb_opaque);
    }
}

void msm__kafka_appends_free(kf_stream_t *ks)
{
    while (ks->ks_batches) {
        kf_batch_t *b = ks->ks_batches;
        batch_unlink(ks, b);
        free(b);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Dispatch of the main queue                                                           */

static void ks_drain(kf_stream_t *ks)
{
    msm__kafka_pipe_drain(ks->ks_pipe[0]);
    msm__kafka_worker_collect(ks);
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
            msm__kafka_log_error_event("producer", ev);
            break;
        case RD_KAFKA_EVENT_LOG:
            msm__kafka_log_event(ev);
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

int msm__kafka_producer_watch(kf_stream_t *ks)
{
    int rc = msm_loop_watch(ks->ks_loop, ks->ks_pipe[0], MSM_LOOP_READ, on_producer_fd, ks);
    if (rc != MSM_OK)
        return rc;
    /* Events queued before the pipe was attached produce no wake-up: look once. */
    ks_kick(ks);
    return MSM_OK;
}
