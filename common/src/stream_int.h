/* SPDX-License-Identifier: MIT */
/* What a log driver implements behind msm/stream.h. Internal to libmsm-common. */
#ifndef MSM_STREAM_INT_H
#define MSM_STREAM_INT_H

#include "msm/metrics.h"
#include "msm/stream.h"

typedef struct msm_stream_driver_s {
    const char *name;
    /* Sets s->s_impl; on failure writes errbuf and returns an error. */
    int (*init)(msm_stream_t *s, char *errbuf, size_t errbuf_size);
    /* Completes pending appends with MSM_ERR_SHUTDOWN and frees s->s_impl. */
    void (*destroy)(msm_stream_t *s);
    int (*ensure)(msm_stream_t *s, const char *name, int partitions, msm_stream_done_cb *cb,
                  void *opaque);
    /* mark: NULL for a plain append */
    int (*append)(msm_stream_t *s, const char *name, const msm_record_t *records, size_t n,
                  const msm_stream_mark_t *mark, msm_stream_done_cb *cb, void *opaque);
    int (*marks)(msm_stream_t *s, const char *name, const char *mark, const char *tag,
                 int64_t since_ms, msm_stream_marks_cb *cb, void *opaque);
    size_t (*pending_appends)(const msm_stream_t *s);
    /* Returns a driver struct whose first member is msm_consumer_t, filled by the driver. */
    msm_consumer_t *(*consume)(msm_stream_t *s, const char *name, const char *group,
                               const char *member, size_t max_batch, size_t max_unacked,
                               msm_consumer_batch_cb *cb, void *opaque, char *errbuf,
                               size_t errbuf_size);
    void (*ack)(msm_consumer_t *c, msm_stream_msg_t *msg);
    size_t (*unacked)(const msm_consumer_t *c);
    void (*consumer_free)(msm_consumer_t *c);
    int (*backlog)(msm_stream_t *s, const char *name, const char *group,
                   msm_stream_backlog_cb *cb, void *opaque);
    void (*set_lease)(msm_consumer_t *c, uint64_t lease_ms); /* 0: the client's */
    int (*set_stamp)(msm_consumer_t *c, const char *key);     /* NULL: cannot stamp */
    int (*remove)(msm_stream_t *s, const char *name, msm_stream_done_cb *cb, void *opaque);
} msm_stream_driver_t;

struct msm_stream_s {
    const msm_stream_driver_t *s_driver;
    msm_loop_t *s_loop;
    msm_stream_conf_t s_conf; /* strings owned (copied in msm_stream_new) */
    void *s_impl;
    msm_metric_t *s_lag;      /* msm_log_consumer_lag, once msm_stream_export_lag() ran */
    uint32_t s_lag_every_ms;
};

struct lag_probe_s;

/* The common head of every driver's consumer. */
struct msm_consumer_s {
    msm_stream_t *c_stream;
    struct lag_probe_s *c_lag; /* its backlog, measured for the lag gauge (stream.c) */
    int64_t c_stamp;           /* the stamp of the batch being delivered; -1: none */
};

extern const msm_stream_driver_t msm__stream_redis_driver;
extern const msm_stream_driver_t msm__stream_kafka_driver;

#endif
