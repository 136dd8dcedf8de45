/* SPDX-License-Identifier: MIT */
/* The Kafka driver's blocking broker queries, run on one worker thread per client (started
 * on first use): ensure (CreateTopics, or broker auto-creation where the cluster lacks it),
 * delete (DeleteTopics) and backlog (watermarks and the group's committed offsets). Their callbacks fire on the
 * loop, which the worker wakes through the client's pipe. */
#include "stream_kafka_int.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KF_GROUP_CACHE 8 /* group handles the worker keeps for backlog queries */

typedef enum {
    KF_JOB_ENSURE = 0,  /* CreateTopics, or the auto-creation fallback, on the worker */
    KF_JOB_BACKLOG = 1, /* watermarks and committed offsets, on the worker */
    KF_JOB_DELETE = 2,  /* DeleteTopics, on the worker */
    KF_JOB_MARKS = 3,   /* a marked append's records read back, on the worker */
} kf_job_kind_t;

/* An ensure or backlog request; lives in ks_jobs until its callback has fired. */
struct kf_job_s {
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
    /* KF_JOB_MARKS */
    msm_stream_marks_cb *kj_marks_cb;
    char *kj_mark;      /* "<name> <tag> ": the header's prefix */
    int64_t kj_since;   /* unix ms */
    int64_t *kj_found;  /* the values of the records carrying it */
    size_t kj_nfound, kj_capfound;
};

/* A consumer handle with group.id set, owned by the worker (committed offsets need one). */
struct kf_group_s {
    struct kf_group_s *kg_next;
    rd_kafka_t *kg_rk;
    uint64_t kg_used;
    char kg_group[];
};

/* ------------------------------------------------------------------------------------ */
/* Jobs and the worker thread                                                           */

static kf_job_t *job_new(kf_stream_t *ks, kf_job_kind_t kind, const char *topic, const char *group)
{
    kf_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->kj_kind = kind;
    j->kj_backlog = -1;
    j->kj_topic = strdup(topic);
    if (group)
        j->kj_group = msm__kafka_group_id(topic, group);
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
    free(j->kj_mark);
    free(j->kj_found);
    free(j);
}

/* Fires the job's callback once and frees it (loop thread). */
static void job_finish(kf_stream_t *ks, kf_job_t *j, int err)
{
    kf_job_kind_t kind = j->kj_kind;
    msm_stream_done_cb *dcb = j->kj_done_cb;
    msm_stream_backlog_cb *bcb = j->kj_backlog_cb;
    msm_stream_marks_cb *mcb = j->kj_marks_cb;
    void *opaque = j->kj_opaque;
    int64_t backlog = err == MSM_OK ? j->kj_backlog : -1;
    char reason[sizeof(j->kj_reason)];
    snprintf(reason, sizeof(reason), "%s", j->kj_reason[0] ? j->kj_reason : msm_err_str(err));
    if (kind == KF_JOB_MARKS) {
        /* the values are the job's: answered before it is freed */
        j->kj_marks_cb = NULL;
        if (mcb)
            mcb(err, err == MSM_OK ? NULL : reason, 0, j->kj_found, err == MSM_OK ? j->kj_nfound : 0,
                opaque);
        job_free(ks, j);
        return;
    }
    job_free(ks, j);
    if ((kind == KF_JOB_ENSURE || kind == KF_JOB_DELETE) && dcb)
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
            msm__kafka_log_event(ev);
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_queue_destroy(q);
}

/* Worker thread: a consumer handle of the client's brokers and properties, of @p group (NULL:
 * none), committing nothing by itself, its logs queued for worker_log_drain(). */
static rd_kafka_t *worker_consumer(kf_stream_t *ks, const char *group, const char *client_id,
                                   char *errbuf, size_t n)
{
    const msm_stream_conf_t *sc = &ks->ks_s->s_conf;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (msm__kafka_conf_set(conf, "bootstrap.servers", sc->kafka_brokers, errbuf, n) != MSM_OK ||
        (group && msm__kafka_conf_set(conf, "group.id", group, errbuf, n) != MSM_OK) ||
        msm__kafka_conf_set(conf, "client.id", client_id, errbuf, n) != MSM_OK ||
        msm__kafka_conf_set(conf, "enable.auto.commit", "false", errbuf, n) != MSM_OK ||
        msm__kafka_conf_set(conf, "log.queue", "true", errbuf, n) != MSM_OK ||
        msm__kafka_conf_apply_props(conf, sc->kafka_props, errbuf, n) != MSM_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    char err[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        snprintf(errbuf, n, "kafka consumer: %.200s", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_set_log_queue(rk, NULL);
    return rk;
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
    kf_group_t *g = calloc(1, sizeof(*g) + strlen(group) + 1);
    if (!g) {
        snprintf(errbuf, n, "out of memory");
        return NULL;
    }
    if (!(g->kg_rk = worker_consumer(ks, group, "msm-backlog", errbuf, n))) {
        free(g);
        return NULL;
    }
    strcpy(g->kg_group, group);
    g->kg_used = ++w->kw_clock;
    g->kg_next = w->kw_groups;
    w->kw_groups = g;
    return g->kg_rk;
}

/* Worker thread: makes the broker auto-create the topic through a metadata request (the
 * path taken when the cluster has no usable CreateTopics, as librdkafka's mock cluster in
 * 2.0.x, whose Metadata versions predate the allow-auto-creation flag). */
static void worker_auto_create(kf_stream_t *ks, kf_job_t *j)
{
    uint64_t deadline = msm_time_mono_ms() + (uint64_t)ks->ks_query_ms;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(ks->ks_rk, j->kj_topic, NULL);
    if (!rkt) {
        j->kj_err = msm__kafka_err(rd_kafka_last_error());
        snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka %s: %s", j->kj_topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return;
    }
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        uint64_t now = msm_time_mono_ms();
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
        if (!retriable || msm_time_mono_ms() + 100 >= deadline) {
            j->kj_err = e ? msm__kafka_err(e) : MSM_ERR_TIMEOUT;
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
    char err[200], isr[16], retention[24];
    const msm_stream_conf_t *sc = &ks->ks_s->s_conf;
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(
        j->kj_topic, j->kj_partitions,
        sc->kafka_replication_factor > 0 ? sc->kafka_replication_factor : -1, err, sizeof(err));
    snprintf(isr, sizeof(isr), "%d", sc->kafka_min_insync_replicas);
    snprintf(retention, sizeof(retention), "%lld", (long long)sc->kafka_retention_ms);
    if (nt && ((sc->kafka_min_insync_replicas > 0 &&
                rd_kafka_NewTopic_set_config(nt, "min.insync.replicas", isr)) ||
               (sc->kafka_retention_ms != 0 &&
                rd_kafka_NewTopic_set_config(nt, "retention.ms", retention)))) {
        rd_kafka_NewTopic_destroy(nt);
        nt = NULL;
        snprintf(err, sizeof(err), "bad topic settings");
    }
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
        j->kj_err = msm__kafka_err(e) == MSM_OK ? MSM_ERR_BACKEND : msm__kafka_err(e);
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
        j->kj_err = msm__kafka_err(e) == MSM_OK ? MSM_ERR_BACKEND : msm__kafka_err(e);
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

/* Worker thread: DeleteTopics, waiting for its result; a topic already gone is fine. */
static void worker_delete(kf_stream_t *ks, kf_job_t *j)
{
    int usable = 0;
    rd_kafka_resp_err_t e = worker_controller(ks, &usable);
    if (!e && !usable) {
        j->kj_err = MSM_ERR_BACKEND;
        snprintf(j->kj_reason, sizeof(j->kj_reason),
                 "kafka delete topic %s: the cluster has no usable controller for DeleteTopics",
                 j->kj_topic);
        return;
    }
    const char *es = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_DeleteTopic_t *dt = NULL;
    if (e)
        goto out;
    char err[200];
    dt = rd_kafka_DeleteTopic_new(j->kj_topic);
    q = rd_kafka_queue_new(ks->ks_rk);
    opts = rd_kafka_AdminOptions_new(ks->ks_rk, RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_AdminOptions_set_request_timeout(opts, ks->ks_query_ms, err, sizeof(err));
    rd_kafka_AdminOptions_set_operation_timeout(opts, ks->ks_query_ms, err, sizeof(err));
    rd_kafka_DeleteTopics(ks->ks_rk, &dt, 1, opts, q);
    /* The request times itself out; the margin only guards against a lost result. */
    ev = rd_kafka_queue_poll(q, 2 * ks->ks_query_ms + 1000);
    e = ev ? rd_kafka_event_error(ev) : RD_KAFKA_RESP_ERR__TIMED_OUT;
    es = ev ? rd_kafka_event_error_string(ev) : NULL;
    const rd_kafka_DeleteTopics_result_t *res = ev ? rd_kafka_event_DeleteTopics_result(ev) : NULL;
    if (!e && res) {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr = rd_kafka_DeleteTopics_result_topics(res, &cnt);
        if (cnt >= 1) {
            e = rd_kafka_topic_result_error(tr[0]);
            es = rd_kafka_topic_result_error_string(tr[0]);
        }
    }
out:
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
        j->kj_err = MSM_OK;
    } else {
        j->kj_err = msm__kafka_err(e) == MSM_OK ? MSM_ERR_BACKEND : msm__kafka_err(e);
        snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka delete topic %s: %s", j->kj_topic,
                 es ? es : rd_kafka_err2str(e));
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (dt)
        rd_kafka_DeleteTopic_destroy(dt);
    if (q)
        rd_kafka_queue_destroy(q);
}

static rd_kafka_topic_partition_list_t *parts_copy(const rd_kafka_topic_partition_list_t *l,
                                                   int64_t offset)
{
    rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_copy(l);
    for (int i = 0; i < c->cnt; i++)
        c->elems[i].offset = offset;
    return c;
}

/* Worker thread: the partitions of @p topic (*all) with their high (*hi) and low (*lo)
 * watermarks, each list in the same order; on failure *what says which query failed. The
 * caller destroys the lists set (even on failure). */
static rd_kafka_resp_err_t worker_watermarks(rd_kafka_t *rk, const char *topic, int t,
                                             rd_kafka_topic_partition_list_t **all,
                                             rd_kafka_topic_partition_list_t **hi,
                                             rd_kafka_topic_partition_list_t **lo,
                                             const char **what)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rkt ? rd_kafka_metadata(rk, 0, rkt, &md, t) : rd_kafka_last_error();
    *what = "metadata";
    if (!e && md->topic_cnt != 1)
        e = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    if (!e)
        e = md->topics[0].err;
    if (!e && md->topics[0].partition_cnt == 0)
        e = RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    if (!e) {
        *all = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
        for (int i = 0; i < md->topics[0].partition_cnt; i++)
            rd_kafka_topic_partition_list_add(*all, topic, md->topics[0].partitions[i].id);
        /* ListOffsets with the logical timestamps END and BEGINNING: one request per leader
         * for all partitions, instead of a watermark query per partition. */
        *what = "high watermarks";
        *hi = parts_copy(*all, RD_KAFKA_OFFSET_END);
        e = rd_kafka_offsets_for_times(rk, *hi, t);
    }
    if (!e) {
        *what = "low watermarks";
        *lo = parts_copy(*all, RD_KAFKA_OFFSET_BEGINNING);
        e = rd_kafka_offsets_for_times(rk, *lo, t);
    }
    for (int i = 0; !e && i < (*all)->cnt; i++) {
        if ((e = (*hi)->elems[i].err) || (e = (*lo)->elems[i].err))
            break;
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return e;
}

/* Worker thread: sum over partitions of high watermark minus committed offset (or minus the
 * low watermark when the group never committed). */
static void worker_backlog(kf_stream_t *ks, kf_job_t *j)
{
    char errbuf[256];
    int t = ks->ks_query_ms;
    rd_kafka_t *rk = worker_group(ks, j->kj_group, errbuf, sizeof(errbuf));
    rd_kafka_topic_partition_list_t *all = NULL, *hi = NULL, *lo = NULL, *co = NULL;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    const char *what = "metadata";
    if (!rk) {
        j->kj_err = MSM_ERR_BACKEND;
        snprintf(j->kj_reason, sizeof(j->kj_reason), "%s", errbuf);
        return;
    }
    if ((e = worker_watermarks(rk, j->kj_topic, t, &all, &hi, &lo, &what)))
        goto fail;
    what = "committed offsets";
    co = parts_copy(all, RD_KAFKA_OFFSET_INVALID);
    if ((e = rd_kafka_committed(rk, co, t)))
        goto fail;
    int64_t sum = 0;
    for (int i = 0; i < all->cnt; i++) {
        if ((e = co->elems[i].err))
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
    j->kj_err = msm__kafka_err(e);
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
    worker_log_drain(rk);
}

/* Worker thread: one record's mark header, when it is the job's: its value is kept. */
static void marks_check(kf_job_t *j, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t n = 0, plen = strlen(j->kj_mark);
    if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(h, MSM__KAFKA_MARK_HEADER, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        n <= plen || n > plen + 24 || memcmp(v, j->kj_mark, plen) != 0)
        return;
    char num[32];
    memcpy(num, (const char *)v + plen, n - plen);
    num[n - plen] = '\0';
    if (j->kj_nfound == j->kj_capfound) {
        size_t cap = j->kj_capfound ? 2 * j->kj_capfound : 64;
        int64_t *grown = realloc(j->kj_found, cap * sizeof(*grown));
        if (!grown)
            return; /* found less: the caller publishes again (a duplicate, never a loss) */
        j->kj_found = grown;
        j->kj_capfound = cap;
    }
    j->kj_found[j->kj_nfound++] = strtoll(num, NULL, 10);
}

/* Worker thread: reads partition @p p of @p rkt from @p from up to @p to (exclusive), keeping
 * the job's mark values; *first_ts: the timestamp of the first record read (-1: none).
 * @returns 0, or -1 with the reason in the job. */
static int marks_read(kf_job_t *j, rd_kafka_topic_t *rkt, int32_t p, int64_t from, int64_t to,
                      uint64_t deadline, int64_t *first_ts)
{
    *first_ts = -1;
    if (rd_kafka_consume_start(rkt, p, from) == -1) {
        j->kj_err = MSM_ERR_BACKEND;
        snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka %s [%d]: consume: %s", j->kj_topic,
                 (int)p, rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    rd_kafka_message_t *msgs[256];
    int64_t pos = from;
    int rc = 0;
    while (pos < to) {
        if (msm_time_mono_ms() >= deadline) {
            j->kj_err = MSM_ERR_TIMEOUT;
            snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka %s [%d]: read back to offset "
                     "%lld of %lld in time", j->kj_topic, (int)p, (long long)pos, (long long)to);
            rc = -1;
            break;
        }
        ssize_t got = rd_kafka_consume_batch(rkt, p, 500, msgs, 256);
        for (ssize_t i = 0; i < got; i++) {
            if (!msgs[i]->err && msgs[i]->offset < to) {
                pos = msgs[i]->offset + 1;
                if (*first_ts < 0)
                    *first_ts = rd_kafka_message_timestamp(msgs[i], NULL);
                marks_check(j, msgs[i]);
            } else if (msgs[i]->err && msgs[i]->err != RD_KAFKA_RESP_ERR__PARTITION_EOF &&
                       rc == 0) {
                j->kj_err = msm__kafka_err(msgs[i]->err) == MSM_OK ? MSM_ERR_BACKEND
                                                                    : msm__kafka_err(msgs[i]->err);
                snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka %s [%d]: %s", j->kj_topic,
                         (int)p, rd_kafka_err2str(msgs[i]->err));
                rc = -1;
            } else if (!msgs[i]->err) {
                pos = to; /* past the end as it was asked for */
            }
            rd_kafka_message_destroy(msgs[i]);
        }
        if (rc)
            break;
    }
    rd_kafka_consume_stop(rkt, p);
    return rc;
}

/* Worker thread: the records of a marked append among those appended since kj_since. Each
 * partition is read backwards from its end (as it is now) in growing chunks until a chunk
 * starts with a record older than that (or the partition's start): only record timestamps
 * and absolute offsets, which every cluster answers. A consumer handle of its own, without
 * a group: nothing is committed. */
static void worker_marks(kf_stream_t *ks, kf_job_t *j)
{
    int t = ks->ks_query_ms;
    uint64_t deadline = msm_time_mono_ms() + 6 * (uint64_t)t;
    char errbuf[256];
    rd_kafka_t *rk = worker_consumer(ks, NULL, "msm-marks", errbuf, sizeof(errbuf));
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_topic_partition_list_t *all = NULL, *hi = NULL, *lo = NULL;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    const char *what = "metadata";
    if (!rk) {
        j->kj_err = MSM_ERR_BACKEND;
        snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka marks: %.200s", errbuf);
        return;
    }
    if ((e = worker_watermarks(rk, j->kj_topic, t, &all, &hi, &lo, &what)))
        goto fail;
    what = "topic handle";
    if (!(rkt = rd_kafka_topic_new(rk, j->kj_topic, NULL))) {
        e = rd_kafka_last_error();
        goto fail;
    }
    for (int i = 0; i < all->cnt; i++) {
        int64_t end = hi->elems[i].offset, start, low = lo->elems[i].offset, ts;
        for (int64_t chunk = 256; end > low; end = start, chunk *= 2) {
            start = end - low > chunk ? end - chunk : low;
            if (marks_read(j, rkt, hi->elems[i].partition, start, end, deadline, &ts) != 0)
                goto out;
            if (ts >= 0 && ts < j->kj_since)
                break;
        }
    }
    j->kj_err = MSM_OK;
    goto out;
fail:
    j->kj_err = msm__kafka_err(e) == MSM_OK ? MSM_ERR_BACKEND : msm__kafka_err(e);
    snprintf(j->kj_reason, sizeof(j->kj_reason), "kafka %s %s: %s", j->kj_topic, what,
             rd_kafka_err2str(e));
out:
    if (lo)
        rd_kafka_topic_partition_list_destroy(lo);
    if (hi)
        rd_kafka_topic_partition_list_destroy(hi);
    if (all)
        rd_kafka_topic_partition_list_destroy(all);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    worker_log_drain(rk);
    rd_kafka_destroy(rk);
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
        else if (j->kj_kind == KF_JOB_DELETE)
            worker_delete(ks, j);
        else if (j->kj_kind == KF_JOB_MARKS)
            worker_marks(ks, j);
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

void msm__kafka_worker_collect(kf_stream_t *ks)
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

void msm__kafka_worker_stop(kf_stream_t *ks)
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

void msm__kafka_jobs_abort(kf_stream_t *ks)
{
    while (ks->ks_jobs) {
        snprintf(ks->ks_jobs->kj_reason, sizeof(ks->ks_jobs->kj_reason), "log client closed");
        job_finish(ks, ks->ks_jobs, MSM_ERR_SHUTDOWN);
    }
}

/* ------------------------------------------------------------------------------------ */
/* Ensure and backlog                                                                   */

/* A job of @p kind on stream @p name, not yet submitted, in *out. */
static int topic_job_new(msm_stream_t *s, kf_job_kind_t kind, const char *name,
                         const char *group, kf_job_t **out)
{
    kf_stream_t *ks = s->s_impl;
    char tname[KF_TOPIC_MAX + 1];
    if (ks->ks_closing)
        return MSM_ERR_SHUTDOWN;
    if (msm__kafka_topic_name(s->s_conf.name_prefix, name, tname, sizeof(tname)) != MSM_OK)
        return MSM_ERR_INVALID;
    *out = job_new(ks, kind, tname, group);
    return *out ? MSM_OK : MSM_ERR_NOMEM;
}

/* Hands @p j to the worker; frees it when the worker cannot take it. */
static int job_submit(kf_stream_t *ks, kf_job_t *j)
{
    int rc = worker_submit(ks, j);
    if (rc != MSM_OK)
        job_free(ks, j);
    return rc;
}

int msm__kafka_ensure(
    msm_stream_t *s, const char *name, int partitions, msm_stream_done_cb *cb, void *opaque)
{
    kf_job_t *j;
    int rc = topic_job_new(s, KF_JOB_ENSURE, name, NULL, &j);
    if (rc != MSM_OK)
        return rc;
    j->kj_partitions = partitions;
    j->kj_done_cb = cb;
    j->kj_opaque = opaque;
    return job_submit(s->s_impl, j);
}

int msm__kafka_backlog(
    msm_stream_t *s, const char *name, const char *group, msm_stream_backlog_cb *cb, void *opaque)
{
    kf_job_t *j;
    int rc = topic_job_new(s, KF_JOB_BACKLOG, name, group, &j);
    if (rc != MSM_OK)
        return rc;
    j->kj_backlog_cb = cb;
    j->kj_opaque = opaque;
    return job_submit(s->s_impl, j);
}

int msm__kafka_delete(msm_stream_t *s, const char *name, msm_stream_done_cb *cb, void *opaque)
{
    kf_job_t *j;
    int rc = topic_job_new(s, KF_JOB_DELETE, name, NULL, &j);
    if (rc != MSM_OK)
        return rc;
    j->kj_done_cb = cb;
    j->kj_opaque = opaque;
    return job_submit(s->s_impl, j);
}

int msm__kafka_marks(msm_stream_t *s, const char *name, const char *mark, const char *tag,
                     int64_t since_ms, msm_stream_marks_cb *cb, void *opaque)
{
    kf_job_t *j;
    int rc = topic_job_new(s, KF_JOB_MARKS, name, NULL, &j);
    if (rc != MSM_OK)
        return rc;
    size_t n = strlen(mark) + strlen(tag) + 3;
    if (!(j->kj_mark = malloc(n))) {
        job_free(s->s_impl, j);
        return MSM_ERR_NOMEM;
    }
    snprintf(j->kj_mark, n, "%s %s ", mark, tag);
    j->kj_since = since_ms;
    j->kj_marks_cb = cb;
    j->kj_opaque = opaque;
    return job_submit(s->s_impl, j);
}
