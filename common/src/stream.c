/* SPDX-License-Identifier: MIT */
/* The log interface: picks the driver and owns the copied configuration. */
#include "stream_int.h"
#include "msm/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void conf_free(msm_stream_conf_t *c)
{
    free((char *)c->redis_url);
    free((char *)c->name_prefix);
    free((char *)c->kafka_brokers);
    if (c->kafka_props) {
        for (size_t i = 0; c->kafka_props[i]; i++)
            free((char *)c->kafka_props[i]);
        free((char **)c->kafka_props);
    }
    memset(c, 0, sizeof(*c));
}

static int conf_copy(msm_stream_conf_t *dst, const msm_stream_conf_t *src)
{
    *dst = *src;
    dst->redis_url = strdup(src->redis_url ? src->redis_url : "redis://127.0.0.1:6379");
    dst->name_prefix = strdup(src->name_prefix ? src->name_prefix : "msm");
    dst->kafka_brokers = strdup(src->kafka_brokers ? src->kafka_brokers : "127.0.0.1:9092");
    dst->kafka_props = NULL;
    if (!dst->redis_url || !dst->name_prefix || !dst->kafka_brokers)
        return MSM_ERR_NOMEM;
    if (src->kafka_props) {
        size_t n = 0;
        while (src->kafka_props[n])
            n++;
        char **props = calloc(n + 1, sizeof(*props));
        if (!props)
            return MSM_ERR_NOMEM;
        dst->kafka_props = (const char *const *)props;
        for (size_t i = 0; i < n; i++) {
            props[i] = strdup(src->kafka_props[i]);
            if (!props[i])
                return MSM_ERR_NOMEM;
        }
    }
    if (!dst->lease_ms)
        dst->lease_ms = 30000;
    if (!dst->append_timeout_ms)
        dst->append_timeout_ms = 10000;
    return MSM_OK;
}

msm_stream_t *msm_stream_new(msm_loop_t *loop, const msm_stream_conf_t *conf, char *errbuf,
                             size_t errbuf_size)
{
    msm_stream_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    s->s_loop = loop;
    switch (conf->backend) {
    case MSM_STREAM_REDIS:
        s->s_driver = &msm__stream_redis_driver;
        break;
    case MSM_STREAM_KAFKA:
        s->s_driver = &msm__stream_kafka_driver;
        break;
    default:
        snprintf(errbuf, errbuf_size, "unknown log backend %d", (int)conf->backend);
        goto fail;
    }
    if (conf_copy(&s->s_conf, conf) != MSM_OK) {
        snprintf(errbuf, errbuf_size, "out of memory");
        goto fail;
    }
    if (s->s_driver->init(s, errbuf, errbuf_size) != MSM_OK)
        goto fail;
    return s;
fail:
    conf_free(&s->s_conf);
    free(s);
    return NULL;
}

void msm_stream_free(msm_stream_t *s)
{
    if (!s)
        return;
    s->s_driver->destroy(s);
    conf_free(&s->s_conf);
    free(s);
}

const char *msm_stream_backend_name(const msm_stream_t *s)
{
    return s->s_driver->name;
}

int msm_stream_ensure(msm_stream_t *s, const char *name, int partitions, msm_stream_done_cb *cb,
                      void *opaque)
{
    if (!name || !*name || partitions < 1 || partitions > 4096)
        return MSM_ERR_INVALID;
    return s->s_driver->ensure(s, name, partitions, cb, opaque);
}

int msm_stream_append(msm_stream_t *s, const char *name, const msm_record_t *records, size_t n,
                      msm_stream_done_cb *cb, void *opaque)
{
    if (!name || !*name || (n && !records) || !cb)
        return MSM_ERR_INVALID;
    return s->s_driver->append(s, name, records, n, NULL, cb, opaque);
}

/* A mark name or tag: printable, no spaces (the Kafka header separates with spaces). */
static int mark_text_ok(const char *t)
{
    size_t n = t ? strlen(t) : 0;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)t[i] <= ' ' || t[i] == 0x7f)
            return 0;
    }
    return n > 0 && n <= MSM_STREAM_MARK_MAX;
}

int msm_stream_append_marked(msm_stream_t *s, const char *name, const msm_record_t *records,
                             size_t n, const msm_stream_mark_t *mark, msm_stream_done_cb *cb,
                             void *opaque)
{
    if (!name || !*name || (n && !records) || !cb || !mark || !mark_text_ok(mark->name) ||
        !mark_text_ok(mark->tag) || (n && !mark->values))
        return MSM_ERR_INVALID;
    return s->s_driver->append(s, name, records, n, mark, cb, opaque);
}

int msm_stream_marks(msm_stream_t *s, const char *name, const char *mark, const char *tag,
                     int64_t since_ms, msm_stream_marks_cb *cb, void *opaque)
{
    if (!name || !*name || !cb || !mark_text_ok(mark) || !mark_text_ok(tag))
        return MSM_ERR_INVALID;
    return s->s_driver->marks(s, name, mark, tag, since_ms, cb, opaque);
}

size_t msm_stream_pending_appends(const msm_stream_t *s)
{
    return s->s_driver->pending_appends(s);
}

/* ---- the lag gauge ---- */

/* One consumer's measure. It outlives its consumer while a backlog question is out. */
typedef struct lag_probe_s {
    msm_stream_t *s;
    msm_consumer_t *c; /* NULL once the consumer is freed */
    char *name, *group;
    msm_metric_child_t *gauge;
    msm_timer_t timer;
    int asking;
} lag_probe_t;

static void lag_free(lag_probe_t *p)
{
    free(p->name);
    free(p->group);
    free(p);
}

static void on_lag(msm_err_t err, int64_t backlog, void *opaque)
{
    lag_probe_t *p = opaque;
    p->asking = 0;
    if (!p->c) {
        lag_free(p);
        return;
    }
    if (err == MSM_OK)
        msm_gauge_set(p->gauge, (double)backlog);
}

static void on_lag_timer(msm_loop_t *loop, void *opaque)
{
    lag_probe_t *p = opaque;
    if (!p->asking) {
        p->asking = 1;
        if (msm_stream_backlog(p->s, p->name, p->group, on_lag, p) != MSM_OK)
            p->asking = 0;
    }
    msm_loop_timer_start(loop, &p->timer, p->s->s_lag_every_ms, on_lag_timer, p);
}

/* Out of memory the consumer is only not measured. */
static void lag_start(msm_consumer_t *c, const char *name, const char *group)
{
    msm_stream_t *s = c->c_stream;
    lag_probe_t *p = calloc(1, sizeof(*p));
    if (!p || !(p->name = strdup(name)) || !(p->group = strdup(group)) ||
        !(p->gauge = msm_metric_labels(s->s_lag, name, group, NULL))) {
        if (p)
            lag_free(p);
        return;
    }
    p->s = s;
    p->c = c;
    msm_timer_init(&p->timer);
    c->c_lag = p;
    on_lag_timer(s->s_loop, p); /* at once: a new consumer's lag is known from the start */
}

static void lag_stop(msm_consumer_t *c)
{
    lag_probe_t *p = c->c_lag;
    if (!p)
        return;
    c->c_lag = NULL;
    msm_loop_timer_stop(p->s->s_loop, &p->timer);
    msm_gauge_set(p->gauge, 0); /* the label set stays: say nothing is pending here */
    p->c = NULL;
    if (!p->asking)
        lag_free(p);
}

int msm_stream_export_lag(msm_stream_t *s, msm_metrics_t *metrics, uint32_t every_ms)
{
    static const char *const labels[] = {"stream", "group", NULL};
    s->s_lag_every_ms = every_ms ? every_ms : 10000;
    return msm_metrics_gauge(metrics, "msm_log_consumer_lag",
                             "entries of the stream the consumer group has not acknowledged",
                             labels, &s->s_lag);
}

msm_consumer_t *msm_stream_consume(msm_stream_t *s, const char *name, const char *group,
                                   const char *member, size_t max_batch, size_t max_unacked,
                                   msm_consumer_batch_cb *cb, void *opaque, char *errbuf,
                                   size_t errbuf_size)
{
    if (!name || !*name || !group || !*group || !member || !*member || !cb || max_batch == 0) {
        snprintf(errbuf, errbuf_size, "stream, group, member, callback and max_batch needed");
        return NULL;
    }
    if (max_unacked == 0)
        max_unacked = max_batch; /* one batch at a time */
    else if (max_batch > max_unacked)
        max_batch = max_unacked; /* the bound on unacknowledged records wins */
    msm_consumer_t *c = s->s_driver->consume(s, name, group, member, max_batch, max_unacked, cb,
                                             opaque, errbuf, errbuf_size);
    if (c) {
        c->c_stream = s;
        c->c_lag = NULL;
        c->c_stamp = -1;
        if (s->s_lag)
            lag_start(c, name, group);
    }
    return c;
}

void msm_consumer_ack(msm_consumer_t *c, msm_stream_msg_t *msg)
{
    c->c_stream->s_driver->ack(c, msg);
}

size_t msm_consumer_unacked(const msm_consumer_t *c)
{
    return c->c_stream->s_driver->unacked(c);
}

void msm_consumer_free(msm_consumer_t *c)
{
    if (!c)
        return;
    lag_stop(c);
    c->c_stream->s_driver->consumer_free(c);
}

int msm_stream_backlog(msm_stream_t *s, const char *name, const char *group,
                       msm_stream_backlog_cb *cb, void *opaque)
{
    if (!name || !group || !cb)
        return MSM_ERR_INVALID;
    return s->s_driver->backlog(s, name, group, cb, opaque);
}

void msm_consumer_set_lease(msm_consumer_t *c, uint64_t lease_ms)
{
    c->c_stream->s_driver->set_lease(c, lease_ms ? lease_ms : c->c_stream->s_conf.lease_ms);
}

int msm_consumer_set_stamp(msm_consumer_t *c, const char *key)
{
    if (!key || !*key || !c->c_stream->s_driver->set_stamp)
        return MSM_ERR_INVALID;
    return c->c_stream->s_driver->set_stamp(c, key);
}

int64_t msm_consumer_stamp(const msm_consumer_t *c)
{
    return c->c_stamp;
}

int msm_stream_delete(msm_stream_t *s, const char *name, msm_stream_done_cb *cb, void *opaque)
{
    if (!name || !*name || !cb)
        return MSM_ERR_INVALID;
    return s->s_driver->remove(s, name, cb, opaque);
}
