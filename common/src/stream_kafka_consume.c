/* SPDX-License-Identifier: MIT */
/* The Kafka driver's group member: one librdkafka consumer per msm_consumer_t, in the group
 * "<topic>:<group>", its group events (rebalances, commit results, errors, logs) served on
 * the loop, and leaving the group when freed. What it does with its records (flow control,
 * batches, acknowledgements, commits) is in stream_kafka_ack.c. */
#include "stream_kafka_int.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KF_POLL_MS        1000 /* idle poll: the member keeps polling while records are held */
#define KF_CLOSE_MS       5000 /* bound on leaving the group in msm_consumer_free() */
#define KF_MIN_SESSION_MS 6000 /* brokers' default group.min.session.timeout.ms */

/* ------------------------------------------------------------------------------------ */
/* Events and rebalances                                                                */

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
        msm__kafka_parts_assigned(kc, l);
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
            msm__kafka_commit_flush(kc);
        msm__kafka_parts_revoked(kc, l);
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

static void kc_free_now(kf_consumer_t *kc);
static void on_consumer_kick(msm_loop_t *loop, void *opaque);

void msm__kafka_consumer_kick(kf_consumer_t *kc)
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
            msm__kafka_on_fetch(kc, ev);
            break;
        case RD_KAFKA_EVENT_REBALANCE:
            on_rebalance(kc, ev);
            break;
        case RD_KAFKA_EVENT_OFFSET_COMMIT:
            msm__kafka_on_commit(kc, ev);
            break;
        case RD_KAFKA_EVENT_ERROR:
            msm__kafka_log_error_event("consumer", ev);
            break;
        case RD_KAFKA_EVENT_LOG:
            msm__kafka_log_event(ev);
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
    msm__kafka_pipe_drain(kc->kc_pipe[0]);
    kc->kc_busy++;
    int more = control_drain(kc) == KF_DRAIN_MAX;
    /* Acks from inside the batch callback make room for more: go round until no progress,
     * within one wake-up's budget. */
    size_t budget = KF_DRAIN_MAX;
    while (!kc->kc_free_pending) {
        size_t n = msm__kafka_fetch_more(kc, budget);
        msm__kafka_deliver(kc);
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
        msm__kafka_consumer_kick(kc);
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
        msm__kafka_commit_flush(kc);
}

/* ------------------------------------------------------------------------------------ */
/* Life cycle                                                                           */

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
    uint64_t deadline = msm_time_mono_ms() + KF_CLOSE_MS;
    while (!rd_kafka_consumer_closed(kc->kc_rk)) {
        if (msm_time_mono_ms() >= deadline) {
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
            msm__kafka_log_event(ev);
            break;
        case RD_KAFKA_EVENT_ERROR:
            msm__kafka_log_error_event("consumer", ev);
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
            msm__kafka_commit_flush(kc);
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
    msm__kafka_pipe_close(kc->kc_pipe);
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
    if (msm__kafka_conf_set(conf, "bootstrap.servers", sc->kafka_brokers, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "group.id", gid, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "client.id", member, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "enable.auto.commit", "false", errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "enable.auto.offset.store", "false", errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "auto.offset.reset", "earliest", errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "session.timeout.ms", session, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "heartbeat.interval.ms", heartbeat, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "max.poll.interval.ms", maxpoll, errbuf, errbuf_size) ||
        msm__kafka_conf_set(conf, "reconnect.backoff.max.ms", KF_RECONNECT_MAX_MS, errbuf,
                            errbuf_size) ||
        msm__kafka_conf_set(conf, "topic.metadata.refresh.interval.ms", "10000", errbuf,
                            errbuf_size) ||
        msm__kafka_conf_set(conf, "log.queue", "true", errbuf, errbuf_size) ||
        msm__kafka_conf_apply_props(conf, sc->kafka_props, errbuf, errbuf_size)) {
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
        return msm__kafka_err(e) == MSM_OK ? MSM_ERR_BACKEND : msm__kafka_err(e);
    }
    msm_loop_timer_start(kc->kc_loop, &kc->kc_poll, KF_POLL_MS, on_consumer_poll, kc);
    /* Events queued before the pipe was attached produce no wake-up: look once. */
    msm_loop_timer_start(kc->kc_loop, &kc->kc_kick, 0, on_consumer_kick, kc);
    return MSM_OK;
}

msm_consumer_t *msm__kafka_consume(msm_stream_t *s,
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
    if (msm__kafka_topic_name(s->s_conf.name_prefix, name, tname, sizeof(tname)) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "stream name \"%s\" too long for a Kafka topic", name);
        goto fail;
    }
    kc->kc_name = strdup(name);
    kc->kc_member = strdup(member);
    kc->kc_topic = strdup(tname);
    kc->kc_arr = calloc(max_batch, sizeof(*kc->kc_arr));
    gid = msm__kafka_group_id(tname, group);
    if (!kc->kc_name || !kc->kc_member || !kc->kc_topic || !kc->kc_arr || !gid) {
        snprintf(errbuf, errbuf_size, "out of memory");
        goto fail;
    }
    if (msm__kafka_pipe_open(kc->kc_pipe) != MSM_OK) {
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

size_t msm__kafka_unacked(const msm_consumer_t *c)
{
    return ((const kf_consumer_t *)c)->kc_unacked;
}

void msm__kafka_consumer_free(msm_consumer_t *c)
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
