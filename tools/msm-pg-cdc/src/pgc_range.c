/* SPDX-License-Identifier: MIT */
/* The range handler (pgc_range.h): validate, acknowledge, answer from the backlog or wait. */
#include "pgc_range.h"
#include "pgc_seq.h"

#include "msm/buf.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/time.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct waiter_s {
    struct waiter_s *next;
    pgc_range_t *rg;
    msm_http_req_t *req;
    int64_t after;
    unsigned limit;
    uint64_t start_us;
    msm_timer_t timer;
} waiter_t;

struct pgc_range_s {
    msm_loop_t *rg_loop;
    char *rg_partition;
    pgc_range_conf_t rg_conf;
    pgc_backlog_t *rg_backlog;
    pgc_stats_t *rg_stats;
    pgc_repl_t *rg_repl;
    pgc_monitor_t *rg_monitor;
    waiter_t *rg_waiters;
    size_t rg_nwaiting;
    int rg_stopping;
};

pgc_range_t *pgc_range_new(msm_loop_t *loop,
                           const pgc_range_conf_t *conf,
                           pgc_backlog_t *backlog,
                           pgc_stats_t *stats)
{
    pgc_range_t *rg = calloc(1, sizeof(*rg));
    if (!rg || !(rg->rg_partition = strdup(conf->partition))) {
        free(rg);
        return NULL;
    }
    rg->rg_loop = loop;
    rg->rg_conf = *conf;
    rg->rg_conf.partition = rg->rg_partition;
    rg->rg_backlog = backlog;
    rg->rg_stats = stats;
    return rg;
}

void pgc_range_attach(pgc_range_t *rg, pgc_repl_t *repl, pgc_monitor_t *monitor)
{
    rg->rg_repl = repl;
    rg->rg_monitor = monitor;
}

static void count(pgc_range_t *rg, int status, uint64_t start_us)
{
    char code[8];
    snprintf(code, sizeof(code), "%d", status);
    msm_counter_inc(msm_metric_labels(rg->rg_stats->requests, code, NULL));
    msm_histogram_observe(rg->rg_stats->request_seconds,
                          (double)(msm_time_mono_us() - start_us) / 1e6);
}

static void respond_error(pgc_range_t *rg,
                          msm_http_req_t *req,
                          int status,
                          const char *code,
                          const char *message,
                          json_t *details,
                          uint64_t start_us)
{
    if (status == 503)
        msm_http_add_header(req, "Retry-After", "1");
    msm_http_respond_error(req, status, code, message, details);
    count(rg, status, start_us);
}

/* {"changes":[…],"has_more":…} with up to @p limit changes after @p after. */
static void respond_changes(
    pgc_range_t *rg, msm_http_req_t *req, int64_t after, unsigned limit, uint64_t start_us)
{
    pgc_backlog_t *b = rg->rg_backlog;
    size_t total = pgc_backlog_count(b), i = pgc_backlog_find(b, after), n = 0;
    msm_buf_t body = {0};
    int rc = msm_buf_append(&body, "{\"changes\":[", 12);
    for (; rc == MSM_OK && i < total && n < limit; i++, n++) {
        const pgc_entry_t *e = pgc_backlog_at(b, i);
        if (n > 0 && body.len + e->ch_len > rg->rg_conf.max_response_bytes)
            break;
        char head[48];
        int len =
            snprintf(head, sizeof(head), "%s{\"sequence\":%" PRId64 ",", n ? "," : "", e->ch_seq);
        /* The stored change is {"op",…}: it continues after our sequence member. */
        rc = msm_buf_append(&body, head, (size_t)len);
        if (rc == MSM_OK)
            rc = msm_buf_append(&body, e->ch_json + 1, e->ch_len - 1);
    }
    int more = i < total || pgc_repl_paused(rg->rg_repl);
    if (rc == MSM_OK)
        rc = msm_buf_append(&body, more ? "],\"has_more\":true}" : "],\"has_more\":false}",
                            more ? 18 : 19);
    if (rc != MSM_OK) {
        msm_buf_deinit(&body);
        respond_error(rg, req, 503, "UNAVAILABLE", "out of memory", NULL, start_us);
        return;
    }
    msm_http_respond(req, 200, "application/json", body.data, body.len);
    msm_buf_deinit(&body);
    msm_counter_add(rg->rg_stats->changes_served, n);
    count(rg, 200, start_us);
}

/* ---- waiting ---- */

static void waiter_unlink(pgc_range_t *rg, waiter_t *w)
{
    for (waiter_t **p = &rg->rg_waiters; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            rg->rg_nwaiting--;
            break;
        }
    }
    msm_loop_timer_stop(rg->rg_loop, &w->timer);
}

/* Answers @p w with what there is (the stream may be down meanwhile) and frees it. */
static void waiter_answer(pgc_range_t *rg, waiter_t *w)
{
    waiter_unlink(rg, w);
    msm_http_req_on_cancel(w->req, NULL, NULL);
    char why[256];
    if (!pgc_repl_streaming(rg->rg_repl, why, sizeof(why)))
        respond_error(rg, w->req, 503, "UNAVAILABLE", why, NULL, w->start_us);
    else
        respond_changes(rg, w->req, w->after, w->limit, w->start_us);
    free(w);
}

static void on_wait_timeout(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    waiter_t *w = opaque;
    waiter_answer(w->rg, w);
}

static void on_cancel(msm_http_req_t *req, void *opaque)
{
    (void)req;
    waiter_t *w = opaque;
    waiter_unlink(w->rg, w);
    free(w);
}

static int wait_for_changes(
    pgc_range_t *rg, msm_http_req_t *req, int64_t after, unsigned limit, uint64_t start_us)
{
    waiter_t *w = calloc(1, sizeof(*w));
    if (!w)
        return MSM_ERR_NOMEM;
    w->rg = rg;
    w->req = req;
    w->after = after;
    w->limit = limit;
    w->start_us = start_us;
    msm_timer_init(&w->timer);
    w->next = rg->rg_waiters;
    rg->rg_waiters = w;
    rg->rg_nwaiting++;
    msm_http_req_on_cancel(req, on_cancel, w);
    msm_loop_timer_start(rg->rg_loop, &w->timer, rg->rg_conf.wait_ms, on_wait_timeout, w);
    return MSM_OK;
}

void pgc_range_news(pgc_range_t *rg)
{
    int streaming = pgc_repl_streaming(rg->rg_repl, NULL, 0);
    size_t total = pgc_backlog_count(rg->rg_backlog);
    waiter_t *w = rg->rg_waiters;
    while (w) {
        waiter_t *next = w->next;
        if (!streaming || pgc_backlog_find(rg->rg_backlog, w->after) < total)
            waiter_answer(rg, w);
        w = next;
    }
}

void pgc_range_stop(pgc_range_t *rg)
{
    rg->rg_stopping = 1;
    while (rg->rg_waiters)
        waiter_answer(rg, rg->rg_waiters);
}

size_t pgc_range_waiting(const pgc_range_t *rg)
{
    return rg->rg_nwaiting;
}

void pgc_range_free(pgc_range_t *rg)
{
    if (!rg)
        return;
    pgc_range_stop(rg);
    free(rg->rg_partition);
    free(rg);
}

/* ---- the request ---- */

/* A decimal integer in [min, max], nothing else. */
static int parse_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s || (*s < '0' || *s > '9'))
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || errno == ERANGE || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Whether @p after lies beyond every position this database has: a cursor of another slot
 * or database, which must not silently acknowledge changes it never saw. */
static int after_ahead(pgc_range_t *rg, int64_t after)
{
    uint64_t server;
    if (!pgc_monitor_server_lsn(rg->rg_monitor, &server))
        return 0;
    uint64_t known = pgc_repl_received(rg->rg_repl);
    if (server > known)
        known = server;
    return pgc_seq_unit(after) > pgc_lsn_unit(known);
}

void pgc_range_handle(msm_http_req_t *req, void *opaque)
{
    pgc_range_t *rg = opaque;
    uint64_t start_us = msm_time_mono_us();
    const char *partition = msm_http_req_query(req, "partition");
    const char *after_s = msm_http_req_query(req, "after");
    const char *limit_s = msm_http_req_query(req, "limit");
    int64_t after = 0, limit = rg->rg_conf.default_limit;
    msm_json_err_t e;
    msm_json_err_init(&e);
    if (!partition || !*partition)
        msm_json_err_add(&e, "partition", "is required");
    if (after_s && parse_int(after_s, 0, INT64_MAX, &after) != 0)
        msm_json_err_add(&e, "after", "must be an integer >= 0");
    if (limit_s && parse_int(limit_s, 1, rg->rg_conf.max_limit, &limit) != 0)
        msm_json_err_add(&e, "limit", "must be an integer between 1 and %u", rg->rg_conf.max_limit);
    if (msm_json_err_count(&e) == 0 && after_ahead(rg, after))
        msm_json_err_add(&e, "after",
                         "is beyond this database's WAL (a cursor of another slot "
                         "or database?)");
    if (msm_json_err_count(&e)) {
        json_t *body = msm_json_err_body(&e, NULL);
        msm_json_err_deinit(&e);
        msm_http_respond_json(req, 400, body);
        count(rg, 400, start_us);
        return;
    }
    msm_json_err_deinit(&e);
    if (strcmp(partition, rg->rg_partition) != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "no partition %.200s: this source serves %.200s", partition,
                 rg->rg_partition);
        respond_error(rg, req, 404, "NOT_FOUND", msg, NULL, start_us);
        return;
    }
    char why[256];
    if (!pgc_repl_streaming(rg->rg_repl, why, sizeof(why))) {
        respond_error(rg, req, 503, "UNAVAILABLE", why, NULL, start_us);
        return;
    }
    if (after > pgc_backlog_acked(rg->rg_backlog)) {
        pgc_backlog_ack(rg->rg_backlog, after);
        msm_gauge_set(rg->rg_stats->acked_sequence, (double)after);
        pgc_repl_acked(rg->rg_repl);
    }
    int nothing = pgc_backlog_find(rg->rg_backlog, after) == pgc_backlog_count(rg->rg_backlog);
    if (nothing && rg->rg_conf.wait_ms > 0 && !rg->rg_stopping && !pgc_repl_paused(rg->rg_repl) &&
        wait_for_changes(rg, req, after, (unsigned)limit, start_us) == MSM_OK)
        return;
    respond_changes(rg, req, after, (unsigned)limit, start_us);
}
