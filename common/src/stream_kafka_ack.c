/* SPDX-License-Identifier: MIT */
/* The Kafka consumer's records, from fetch to commit: copied out of librdkafka into reused
 * buffers, taken only while fewer than max_unacked are held, delivered in batches, tracked
 * per partition in offset order, and committed up to the end of the contiguous acknowledged
 * prefix only (at least once). */
#include "stream_kafka_int.h"
#include "msm/err.h"
#include "msm/log.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KF_COMMIT_RETRY_MS 250   /* pause before retrying a failed offset commit */
#define KF_MAX_PARTITION   65536 /* sanity bound on partition ids we index by */
#define KF_MSG_MIN_CAP     256   /* smallest record buffer: most events fit, few reallocs */
#define KF_MSG_SPARE_CAP   65536 /* larger record buffers are not kept for reuse */

/* ------------------------------------------------------------------------------------ */
/* Partitions and acknowledgement tracking                                              */

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

void msm__kafka_parts_assigned(kf_consumer_t *kc, const rd_kafka_topic_partition_list_t *l)
{
    for (int i = 0; l && i < l->cnt; i++) {
        kf_part_t *p = part_make(kc, l->elems[i].partition);
        if (p)
            part_assign(kc, p);
    }
}

void msm__kafka_parts_revoked(kf_consumer_t *kc, const rd_kafka_topic_partition_list_t *l)
{
    if (l) {
        for (int i = 0; i < l->cnt; i++) {
            kf_part_t *p = part_get(kc, l->elems[i].partition);
            if (p)
                part_forget(p);
        }
    } else {
        for (size_t i = 0; i < kc->kc_nparts; i++)
            part_forget(&kc->kc_parts[i]);
    }
    ready_prune(kc);
}

/* ------------------------------------------------------------------------------------ */
/* Commits                                                                              */

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
void msm__kafka_commit_flush(kf_consumer_t *kc)
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

void msm__kafka_on_commit(kf_consumer_t *kc, rd_kafka_event_t *ev)
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
/* Fetch, flow control, delivery, acknowledgement                                       */

void msm__kafka_on_fetch(kf_consumer_t *kc, rd_kafka_event_t *ev)
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
size_t msm__kafka_fetch_more(kf_consumer_t *kc, size_t budget)
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
            msm__kafka_on_fetch(kc, ev);
        else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ERROR)
            msm__kafka_log_error_event("consumer", ev);
        rd_kafka_event_destroy(ev);
        n++;
    }
    return n;
}

void msm__kafka_deliver(kf_consumer_t *kc)
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

void msm__kafka_ack(msm_consumer_t *c, msm_stream_msg_t *msg)
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
        msm__kafka_consumer_kick(kc);
}
