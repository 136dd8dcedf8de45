/* SPDX-License-Identifier: MIT */
/* The CDC pull's partitions (cdc_int.h, docs/cdc.md): a round fetches the changes after the
 * cursor, claims the partition (msm/cdc_state.h: lock and intent), appends the changes not
 * yet published to events.<topic> in one marked append with the envelopes the frontend's
 * push makes (msm/cdc.h), then settles: the cursor moves only once the append is durable.
 * Failures back off per partition (exponential, capped, full jitter; Retry-After honoured),
 * logged once per change of reason. */
#include "cdc_int.h"

#include "msm/backoff.h"
#include "msm/err.h"
#include "msm/id.h"
#include "msm/log.h"
#include "msm/time.h"
#include "msm/trace.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC              "cdc"
#define URL_MAX          (MSM_CDC_URL_MAX + 600)
#define RETRY_AFTER_MAX  3600000 /* a Retry-After is honoured up to an hour */
#define PRIORITY_DEFAULT 5       /* as a publish without "priority" */

/* Range requests take milliseconds, a stall is the fetch timeout. */
static const double latency_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25,  0.5,    1,     2.5,  5,     10,   30};

static void fetch(sch_cdc_part_t *p);
static void batch_end(sch_cdc_part_t *p);

/* ---- the module's life ---- */

static void destroy(sch_cdc_t *c);

void sch__cdc_hold(sch_cdc_t *c)
{
    c->inflight++;
}

void sch__cdc_release(sch_cdc_t *c)
{
    if (--c->inflight == 0 && c->freed)
        destroy(c);
}

static void part_free(sch_cdc_part_t *p)
{
    msm_loop_timer_stop(p->cdc->loop, &p->timer);
    json_decref(p->changes);
    free(p->topic);
    free(p->skip);
    free(p->source);
    free(p->name);
    free(p);
}

sch_cdc_part_t *sch__cdc_part(sch_cdc_t *c, const char *source, const char *name)
{
    for (sch_cdc_src_t *s = c->sources; s; s = s->next) {
        if (strcmp(s->name, source) != 0)
            continue;
        for (sch_cdc_part_t *p = s->parts; p; p = p->next) {
            if (strcmp(p->name, name) == 0)
                return p;
        }
    }
    return NULL;
}

void sch__cdc_lag(sch_cdc_part_t *p)
{
    if (p->cdc->freed || !p->m_lag)
        return;
    int64_t head = p->notified > p->seen ? p->notified : p->seen;
    msm_gauge_set(p->m_lag, p->owned && head > p->cursor ? (double)(head - p->cursor) : 0);
}

/* The partition is ours to fetch now: the lease round confirmed it within the lease. */
static int ours(const sch_cdc_part_t *p)
{
    return p->owned && p->src && !p->cdc->stopping &&
           msm_loop_now_ms(p->cdc->loop) < p->lease_until;
}

/* A round starts only while no lease round is in flight: that one may give the partition
 * back (an idle one above the fair share), and a page fetched meanwhile would be fetched
 * again by the next holder. The answer of the lease round kicks the partitions it left us
 * that wait (idle, no timer). */
static void fetch_if_ours(sch_cdc_part_t *p)
{
    if (ours(p) && !p->busy && !p->cdc->lease_running)
        fetch(p);
}

static void on_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    sch_cdc_part_t *p = opaque;
    p->waiting_backoff = 0;
    fetch_if_ours(p);
}

void sch__cdc_kick(sch_cdc_part_t *p, int notified)
{
    if (p->busy) {
        p->again |= notified;
        return;
    }
    if (!ours(p) || (notified && p->waiting_backoff))
        return;
    msm_loop_timer_stop(p->cdc->loop, &p->timer);
    p->waiting_backoff = 0;
    fetch_if_ours(p);
}

void sch__cdc_lost(sch_cdc_part_t *p)
{
    p->owned = 0;
    msm_loop_timer_stop(p->cdc->loop, &p->timer);
    p->waiting_backoff = 0;
    sch__cdc_lag(p);
}

/* The round is over: the next one after the poll interval, at once when the source said it
 * has more or a notification came meanwhile, or never when the partition went away. */
static void round_end(sch_cdc_part_t *p, uint64_t next_ms)
{
    batch_end(p);
    p->busy = 0;
    if (!p->src) {
        part_free(p);
        return;
    }
    sch__cdc_lag(p);
    if (!ours(p))
        return;
    if (p->again || p->has_more) {
        p->again = 0;
        p->has_more = 0;
        next_ms = 0;
    }
    msm_loop_timer_start(p->cdc->loop, &p->timer, next_ms, on_timer, p);
}

static void round_ok(sch_cdc_part_t *p)
{
    if (p->backoff_reason[0])
        msm_log(MSM_LOG_INFO, FAC,
                "source %s partition %s: pulling again after %" PRIu32 " failed rounds (%s)",
                p->source, p->name, p->failures, p->backoff_reason);
    p->backoff_reason[0] = '\0';
    p->failures = 0;
    round_end(p, p->src ? (uint64_t)p->src->poll_interval_ms : 0);
}

/* Backs the partition off: exponential from backoff_min_ms to backoff_max_ms, full jitter,
 * at least @p retry_after_ms when the source named one. Logged when the reason changes. */
static void
backoff(sch_cdc_part_t *p, const char *reason, uint64_t retry_after_ms, const char *detail)
{
    sch_cdc_t *c = p->cdc;
    p->failures++;
    uint64_t d = msm_backoff_delay_ms(p->failures, c->backoff_min_ms, c->backoff_max_ms);
    if (d < c->backoff_min_ms / 2) /* full jitter may draw 0: keep a floor */
        d = c->backoff_min_ms / 2;
    if (retry_after_ms > RETRY_AFTER_MAX)
        retry_after_ms = RETRY_AFTER_MAX;
    if (d < retry_after_ms)
        d = retry_after_ms;
    if (strcmp(p->backoff_reason, reason) != 0) {
        msm_log(MSM_LOG_WARN, FAC,
                "source %s partition %s: %s; backing off (next try in %" PRIu64
                " ms, then growing up to %" PRIu32 " ms%s)",
                p->source, p->name, detail, d, c->backoff_max_ms,
                retry_after_ms ? " or as Retry-After says" : "");
        snprintf(p->backoff_reason, sizeof(p->backoff_reason), "%s", reason);
    }
    if (!c->freed && p->src)
        msm_counter_inc(msm_metric_labels(c->f_backoffs, p->source, p->name, reason, NULL));
    round_end(p, d);
    if (msm_timer_active(&p->timer))
        p->waiting_backoff = 1;
}

/* ---- 1. the range request ---- */

static void on_fetched(msm_http_client_t *cl,
                       msm_http_call_t *call,
                       const msm_http_result_t *res,
                       void *opaque);

static void fetch(sch_cdc_part_t *p)
{
    sch_cdc_t *c = p->cdc;
    char url[URL_MAX];
    const char *u = p->src->range_url;
    int n = snprintf(url, sizeof(url), "%s%spartition=%s&after=%" PRId64 "&limit=%d", u,
                     strchr(u, '?') ? "&" : "?", p->name, p->cursor, p->src->batch_size);
    p->busy = 1;
    p->again = 0;
    p->has_more = 0;
    p->after = p->cursor;
    p->fetch_start_us = msm_time_mono_us();
    const msm_http_header_t hdr = {"Accept", "application/json"};
    msm_http_request_t req = {.method = "GET",
                              .url = url,
                              .headers = &hdr,
                              .n_headers = 1,
                              .timeout_ms = c->fetch_timeout_ms};
    int rc = n > 0 && (size_t)n < sizeof(url)
                 ? msm_http_client_request(c->http, &req, on_fetched, p, &p->call)
                 : MSM_ERR_TOOLARGE;
    if (rc != MSM_OK) {
        backoff(p, "request", 0, msm_err_str(rc));
        return;
    }
    sch__cdc_hold(c);
}

/* Retry-After in seconds (an HTTP date is not honoured: the backoff applies). */
static uint64_t retry_after_ms(const msm_http_headers_t *h)
{
    const char *v = msm_http_headers_get(h, "Retry-After");
    char *end = NULL;
    long long s = v ? strtoll(v, &end, 10) : -1;
    return s >= 0 && end && *end == '\0' ? (uint64_t)s * 1000 : 0;
}

/* The answer {"changes":[…],"has_more":bool}: its changes kept in p. @returns NULL or why
 * it is not one (into @p why). */
static const char *
answer_parse(sch_cdc_part_t *p, const char *body, size_t len, char *why, size_t n)
{
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    json_t *j = msm_json_parse(body, len, &e);
    json_t *changes = NULL;
    int more = 0;
    if (j && msm_json_expect_object(&e, j) == MSM_OK) {
        msm_json_get_array(&e, j, "changes", MSM_JSON_REQUIRED, &changes);
        msm_json_get_bool(&e, j, "has_more", MSM_JSON_NULLABLE, &more);
        msm_json_path_push_key(&e, "changes");
        msm_json_path_push_key(&big, "changes");
        msm_cdc_changes_check(changes, &e, &big);
    }
    const char *bad = NULL;
    if (msm_json_err_count(&e) || msm_json_err_count(&big)) {
        snprintf(why, n, "malformed range answer: %s",
                 msm_json_err_message(msm_json_err_count(&e) ? &e : &big));
        bad = why;
    } else {
        p->changes = json_incref(changes);
        p->has_more = more && json_array_size(changes) > 0;
    }
    json_decref(j);
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    return bad;
}

static void claim(sch_cdc_part_t *p);

static void
on_fetched(msm_http_client_t *cl, msm_http_call_t *call, const msm_http_result_t *res, void *opaque)
{
    (void)cl, (void)call;
    sch_cdc_part_t *p = opaque;
    sch_cdc_t *c = p->cdc;
    p->call = NULL;
    if (!c->freed && p->src)
        msm_histogram_observe(p->src->m_latency,
                              (double)(msm_time_mono_us() - p->fetch_start_us) / 1e6);
    char why[512];
    if (res->err == MSM_ERR_TIMEOUT) {
        snprintf(why, sizeof(why), "range request timed out after %" PRIu32 " ms",
                 c->fetch_timeout_ms);
        backoff(p, "timeout", 0, why);
    } else if (res->err != MSM_OK) {
        snprintf(why, sizeof(why), "range request failed: %s", res->error);
        backoff(p, "connection", 0, why);
    } else if (res->status == 429 || res->status == 503) {
        snprintf(why, sizeof(why), "the source answered %d", res->status);
        backoff(p, res->status == 429 ? "rate_limited" : "unavailable",
                retry_after_ms(res->headers), why);
    } else if (res->status != 200) {
        snprintf(why, sizeof(why), "the source answered %d", res->status);
        backoff(p, res->status >= 500 ? "server_error" : "http_error", 0, why);
    } else if (answer_parse(p, res->body, res->body_len, why, sizeof(why))) {
        backoff(p, "malformed", 0, why);
    } else if (json_array_size(p->changes) &&
               json_integer_value(json_object_get(json_array_get(p->changes, 0), "sequence")) <=
                   p->after) {
        /* a source that answers what it was not asked for would be asked again for ever */
        snprintf(why, sizeof(why),
                 "malformed range answer: changes[0].sequence is not after "
                 "%" PRId64,
                 p->after);
        backoff(p, "malformed", 0, why);
    } else if (!p->src || c->stopping) {
        round_end(p, 0);
    } else {
        size_t n = json_array_size(p->changes);
        int64_t last =
            n ? json_integer_value(json_object_get(json_array_get(p->changes, n - 1), "sequence"))
              : 0;
        if (last > p->seen)
            p->seen = last;
        if (n == 0)
            round_ok(p);
        else
            claim(p);
    }
    sch__cdc_release(c);
}

/* ---- 2. the claim ---- */

static int64_t last_sequence(const sch_cdc_part_t *p)
{
    const json_t *ch = p->changes;
    return json_integer_value(
        json_object_get(json_array_get(ch, json_array_size(ch) - 1), "sequence"));
}

static void on_settled(int err, const char *reason, int64_t cursor, int ours, void *opaque);

/* Ends the batch through the protocol (and then the round). */
static void settle(sch_cdc_part_t *p, msm_cdc_outcome_t outcome)
{
    sch_cdc_t *c = p->cdc;
    int rc = msm_cdc_settle(c->state, p->source, p->name, p->token, outcome, last_sequence(p),
                            on_settled, p);
    if (rc != MSM_OK) {
        p->token[0] = '\0';
        backoff(p, "state", 0, "the batch could not be settled (its lock expires)");
        return;
    }
    sch__cdc_hold(c);
}

static void publish(sch_cdc_part_t *p);
static void
fail(sch_cdc_part_t *p, const char *reason, msm_cdc_outcome_t outcome, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void on_claimed(const msm_cdc_claim_t *res, void *opaque)
{
    sch_cdc_part_t *p = opaque;
    sch_cdc_t *c = p->cdc;
    char why[600];
    switch (res->status) {
    case MSM_CDC_CLAIMED:
        break;
    case MSM_CDC_NO_SOURCE:
    case MSM_CDC_NO_PARTITION:
        /* deleted or changed: the registry's next poll drops the partition */
        round_end(p, c->lease_ms);
        goto out;
    case MSM_CDC_NOT_OWNER:
        msm_log(MSM_LOG_INFO, FAC,
                "source %s partition %s: the lease went to another "
                "scheduler; not pulling",
                p->source, p->name);
        sch__cdc_lost(p);
        round_end(p, 0);
        goto out;
    case MSM_CDC_BUSY:
        /* a push (or the recovery of an interrupted batch) holds the partition: not a fault
         * of the source; fetched again from the cursor once it is free */
        round_end(p, (uint64_t)(res->retry_ms > 0 ? res->retry_ms : 100));
        goto out;
    default:
        snprintf(why, sizeof(why), "claiming the partition: %s", res->reason);
        backoff(p, "state", 0, why);
        goto out;
    }
    if (res->recovered)
        msm_log(MSM_LOG_INFO, FAC,
                "source %s partition %s: an interrupted batch was "
                "recovered before this one",
                p->source, p->name);
    p->claim_cursor = res->cursor;
    free(p->skip);
    p->skip = NULL;
    p->nskip = 0;
    free(p->topic);
    p->topic = strdup(res->topic);
    if (res->nskip && (p->skip = malloc(res->nskip * sizeof(*p->skip)))) {
        memcpy(p->skip, res->skip, res->nskip * sizeof(*p->skip));
        p->nskip = res->nskip;
    }
    if (!p->topic || (res->nskip && !p->skip)) {
        fail(p, "state", MSM_CDC_NOTHING, "out of memory");
        goto out;
    }
    if (res->cursor < p->after) {
        /* the cursor went back (the source was deleted and made again): fetch from it */
        p->cursor = res->cursor;
        p->again = 1;
        settle(p, MSM_CDC_NOTHING);
        goto out;
    }
    p->cursor = res->cursor;
    publish(p);
out:
    sch__cdc_release(c);
}

static void claim(sch_cdc_part_t *p)
{
    sch_cdc_t *c = p->cdc;
    msm_id_new_str(p->token);
    const msm_cdc_claim_args_t a = {.source = p->source,
                                    .partition = p->name,
                                    .token = p->token,
                                    .lease_member = c->member,
                                    .lock_ms = c->lease_ms,
                                    .last_sequence = last_sequence(p)};
    int rc = msm_cdc_claim(c->state, &a, on_claimed, p);
    if (rc != MSM_OK) {
        p->token[0] = '\0';
        backoff(p, "state", 0, "claiming the partition: the state store refused");
        return;
    }
    sch__cdc_hold(c);
}

/* ---- 3. the append ---- */

static int published(const sch_cdc_part_t *p, int64_t seq)
{
    const msm_cdc_claim_t view = {.cursor = p->claim_cursor, .skip = p->skip, .nskip = p->nskip};
    return msm_cdc_published(&view, seq);
}

/* Ends a batch that failed: settled with @p outcome, then backed off for @p reason. */
static void
fail(sch_cdc_part_t *p, const char *reason, msm_cdc_outcome_t outcome, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->fail_detail, sizeof(p->fail_detail), fmt, ap);
    va_end(ap);
    p->fail = reason;
    settle(p, outcome);
}

static void on_appended(msm_err_t err, const char *reason, void *opaque)
{
    sch_cdc_part_t *p = opaque;
    sch_cdc_t *c = p->cdc;
    if (err != MSM_OK)
        /* the intent stays: whatever got in is found by the recovery that comes before the
         * partition's next batch (msm/cdc_state.h) */
        fail(p, "log", MSM_CDC_UNKNOWN, "appending to events.%s: %.300s", p->topic,
             reason ? reason : msm_err_str(err));
    else
        settle(p, MSM_CDC_DURABLE);
    sch__cdc_release(c);
}

/* The events of changes @p ch[0..n) with payloads @p pl, packed back to back into *buf;
 * records[i] points into it, keyed by the entity. */
static int pack_events(const sch_cdc_part_t *p,
                       const msm_cdc_change_t *ch,
                       const msm_cdc_payload_t *pl,
                       size_t n,
                       msm_record_t *recs,
                       uint8_t **buf)
{
    int64_t now = msm_time_unix_ms();
    size_t total = 0, off = 0;
    size_t *sizes = calloc(n, sizeof(*sizes));
    char(*ids)[MSM_ID_STR_SIZE] = calloc(n, sizeof(*ids));
    char(*tps)[MSM_TRACEPARENT_LEN + 1] = calloc(n, sizeof(*tps));
    int rc = MSM_ERR_NOMEM;
    Msm__V1__Event env;
    if (!sizes || !ids || !tps)
        goto out;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            if (pass == 0) {
                msm_id_new_str(ids[i]);
                msm_traceparent_new(tps[i], 0); /* a new trace, as an untraced publish's */
            }
            msm__v1__event__init(&env);
            env.id = ids[i];
            env.topic = p->topic;
            env.payload.data = pl[i].data;
            env.payload.len = pl[i].len;
            env.content_type = (char *)pl[i].content_type;
            env.schema_id = pl[i].schema_id;
            env.publish_time_ms = now;
            env.priority = PRIORITY_DEFAULT;
            env.traceparent = tps[i];
            msm_cdc_envelope(&env, p->source, p->name, &ch[i]);
            if (pass == 0) {
                sizes[i] = msm__v1__event__get_packed_size(&env);
                total += sizes[i];
                continue;
            }
            msm__v1__event__pack(&env, *buf + off);
            recs[i] = (msm_record_t){.key = ch[i].entity,
                                     .key_len = strlen(ch[i].entity),
                                     .value = *buf + off,
                                     .value_len = sizes[i]};
            off += sizes[i];
        }
        if (pass == 0 && !(*buf = malloc(total + 1)))
            goto out;
    }
    rc = MSM_OK;
out:
    free(sizes);
    free(ids);
    free(tps);
    return rc;
}

/* Makes the payloads of the changes not yet published (validated and converted by
 * @p schema when there is one) and appends their events in one append marked with the
 * batch's token; with nothing left to publish, settles at once. A change the schema (or the
 * size limit) refuses fails the whole batch: nothing of it goes out. */
static void append_changes(sch_cdc_part_t *p, const msm_schema_t *schema, int schema_id)
{
    sch_cdc_t *c = p->cdc;
    size_t n = json_array_size(p->changes), k = 0;
    msm_cdc_payload_t *pl = calloc(n, sizeof(*pl));
    msm_cdc_change_t *ch = calloc(n, sizeof(*ch));
    msm_record_t *recs = calloc(n, sizeof(*recs));
    int64_t *seqs = calloc(n, sizeof(*seqs));
    uint8_t *buf = NULL;
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    int rc = pl && ch && recs && seqs ? MSM_OK : MSM_ERR_NOMEM;
    for (size_t i = 0; rc == MSM_OK && i < n; i++) {
        msm_cdc_change_get(json_array_get(p->changes, i), &ch[k]);
        if (published(p, ch[k].sequence))
            continue;
        msm_json_path_push_key(&e, "changes");
        msm_json_path_push_index(&e, i);
        msm_json_path_push_key(&e, "data");
        rc = msm_cdc_payload(&ch[k], schema, schema_id, c->max_event_bytes, &pl[k], &e, &e);
        msm_json_path_pop(&e);
        msm_json_path_pop(&e);
        msm_json_path_pop(&e);
        seqs[k] = ch[k].sequence;
        k += rc == MSM_OK;
    }
    if (rc == MSM_ERR_INVALID) {
        fail(p, "refused", MSM_CDC_NOTHING, "a change cannot be published: %s",
             msm_json_err_message(&e));
    } else if (rc != MSM_OK) {
        fail(p, "refused", MSM_CDC_NOTHING, "building the batch: %s", msm_err_str(rc));
    } else if (k == 0) { /* all published already (by a push, or a recovered batch) */
        p->published = 0;
        settle(p, MSM_CDC_DURABLE);
    } else if ((rc = pack_events(p, ch, pl, k, recs, &buf)) != MSM_OK) {
        fail(p, "refused", MSM_CDC_NOTHING, "packing the batch: %s", msm_err_str(rc));
    } else {
        char stream[MSM_NAME_MAX + 16], mark[MSM_STREAM_MARK_MAX + 1];
        snprintf(stream, sizeof(stream), MSM_STREAM_EVENTS, p->topic);
        const msm_stream_mark_t m = {mark, p->token, seqs};
        p->published = k;
        rc = msm_cdc_mark_name(mark, sizeof(mark), p->source, p->name);
        if (rc == MSM_OK)
            rc = msm_stream_append_marked(c->log, stream, recs, k, &m, on_appended, p);
        if (rc == MSM_OK)
            sch__cdc_hold(c);
        else /* refused before anything went out */
            fail(p, "log", MSM_CDC_NOTHING, "appending to %s: %s", stream, msm_err_str(rc));
    }
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    for (size_t i = 0; pl && i < n; i++)
        free(pl[i].data);
    free(pl);
    free(ch);
    free(recs);
    free(seqs);
    free(buf);
}

static void on_schema(const msm_schema_t *s, int id, int err, const char *why, void *opaque)
{
    sch_cdc_part_t *p = opaque;
    sch_cdc_t *c = p->cdc;
    if (!s)
        fail(p, "schema", MSM_CDC_NOTHING, "schema %d of topic %s: %.300s", id, p->topic,
             why ? why : msm_err_str(err));
    else
        append_changes(p, s, id);
    sch__cdc_release(c);
}

static void on_latest(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_cdc_part_t *p = opaque;
    sch_cdc_t *c = p->cdc;
    const char *why = msm_redis_reply_err(reply, err);
    long long id = why ? 0 : msm_redis_reply_int(reply, 0);
    if (id <= 0) {
        fail(p, "schema", MSM_CDC_NOTHING, "the schema of topic %s: %.300s", p->topic,
             why ? why : "its subject has no version yet");
    } else {
        sch__cdc_hold(c);
        if (msm_schema_store_get(c->schemas, (int)id, on_schema, p) != MSM_OK)
            on_schema(NULL, (int)id, MSM_ERR_NOMEM, NULL, p);
    }
    sch__cdc_release(c);
}

/* The topic's schema first when it is bound to a subject (the changes are validated and
 * converted as a push's are), then the append. */
static void publish(sch_cdc_part_t *p)
{
    sch_cdc_t *c = p->cdc;
    const char *subject = NULL;
    for (size_t i = 0; i < c->ntopics; i++) {
        if (strcmp(c->topics[i].topic, p->topic) == 0)
            subject = c->topics[i].subject;
    }
    if (!subject) {
        append_changes(p, NULL, 0);
        return;
    }
    char key[SCH_CDC_KEY_MAX];
    msm_redis_key(c->redis, key, sizeof(key), MSM_KEY_SCHEMA_VERSIONS, subject);
    if (msm_redis_command(c->redis, on_latest, p, "LINDEX %s -1", key) != MSM_OK) {
        fail(p, "state", MSM_CDC_NOTHING, "Redis refused the schema lookup");
        return;
    }
    sch__cdc_hold(c);
}

/* ---- 4. the settle ---- */

static void on_settled(int err, const char *reason, int64_t cursor, int ours, void *opaque)
{
    sch_cdc_part_t *p = opaque;
    sch_cdc_t *c = p->cdc;
    p->token[0] = '\0';
    if (err != MSM_OK) {
        char why[400];
        snprintf(why, sizeof(why), "settling the batch (its lock expires): %.300s",
                 reason ? reason : "?");
        backoff(p, "state", 0, why);
    } else if (p->fail) {
        const char *what = p->fail;
        p->fail = NULL;
        backoff(p, what, 0, p->fail_detail);
    } else {
        if (ours) {
            p->cursor = cursor;
            if (!c->freed && p->src && p->published)
                msm_counter_add(p->m_pulled, p->published);
        } else {
            msm_log(MSM_LOG_WARN, FAC,
                    "source %s partition %s: the batch was resolved without "
                    "us (source deleted, or recovered as interrupted)",
                    p->source, p->name);
        }
        round_ok(p);
    }
    sch__cdc_release(c);
}

static void batch_end(sch_cdc_part_t *p)
{
    json_decref(p->changes);
    p->changes = NULL;
    free(p->topic);
    p->topic = NULL;
    free(p->skip);
    p->skip = NULL;
    p->nskip = 0;
    p->published = 0;
    p->fail = NULL;
}

/* ---- the registry: which sources are pulled ---- */

static void topics_free(sch_cdc_t *c)
{
    for (size_t i = 0; i < c->ntopics; i++) {
        free(c->topics[i].topic);
        free(c->topics[i].subject);
    }
    free(c->topics);
    c->topics = NULL;
    c->ntopics = 0;
}

static void topics_load(sch_cdc_t *c, const msm_registry_t *reg)
{
    topics_free(c);
    size_t n = msm_registry_topic_count(reg);
    if (!n || !(c->topics = calloc(n, sizeof(*c->topics))))
        return;
    for (size_t i = 0; i < n; i++) {
        const msm_topic_t *t = msm_registry_topic_at(reg, i);
        sch_cdc_topic_t *ct = &c->topics[c->ntopics];
        if (!(ct->topic = strdup(t->name)) ||
            (t->schema_subject && !(ct->subject = strdup(t->schema_subject)))) {
            free(ct->topic);
            continue;
        }
        c->ntopics++;
    }
}

/* Drops partition @p p: freed now, or when its batch ends. */
static void part_drop(sch_cdc_part_t *p)
{
    p->src = NULL;
    p->owned = 0;
    sch__cdc_lag(p);
    if (p->busy) {
        if (p->call) { /* nothing claimed yet: the request can go */
            msm_http_call_cancel(p->call);
            p->call = NULL;
            sch__cdc_release(p->cdc);
            round_end(p, 0);
        }
        return;
    }
    part_free(p);
}

static sch_cdc_part_t *part_new(sch_cdc_t *c, sch_cdc_src_t *s, const char *name)
{
    sch_cdc_part_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->cdc = c;
    p->src = s;
    msm_timer_init(&p->timer);
    if (!(p->source = strdup(s->name)) || !(p->name = strdup(name))) {
        free(p->source);
        free(p);
        return NULL;
    }
    p->m_lag = msm_metric_labels(c->f_lag, s->name, name, NULL);
    p->m_pulled = msm_metric_labels(c->f_pulled, s->name, name, NULL);
    return p;
}

static void src_free(sch_cdc_src_t *s)
{
    while (s->parts) {
        sch_cdc_part_t *p = s->parts;
        s->parts = p->next;
        part_drop(p);
    }
    free(s->name);
    free(s->topic);
    free(s->range_url);
    free(s);
}

static int set_str(char **field, const char *v)
{
    if (*field && strcmp(*field, v) == 0)
        return 0;
    char *copy = strdup(v);
    if (!copy)
        return 0;
    free(*field);
    *field = copy;
    return 1;
}

/* Updates @p s from the registry's @p rs. @returns non-zero when its partitions changed. */
static int src_update(sch_cdc_t *c, sch_cdc_src_t *s, const msm_cdc_source_t *rs)
{
    int changed = set_str(&s->topic, rs->topic) | set_str(&s->range_url, rs->range_url);
    s->poll_interval_ms = rs->poll_interval_ms;
    s->batch_size = rs->batch_size;
    for (sch_cdc_part_t **pp = &s->parts; *pp;) {
        sch_cdc_part_t *p = *pp;
        if (msm_cdc_source_has_partition(rs, p->name)) {
            pp = &p->next;
            continue;
        }
        msm_log(MSM_LOG_INFO, FAC, "source %s: partition %s removed: not pulling it", s->name,
                p->name);
        *pp = p->next;
        part_drop(p);
        changed = 1;
    }
    for (size_t i = 0; i < rs->npartitions; i++) {
        sch_cdc_part_t *p = NULL;
        for (p = s->parts; p && strcmp(p->name, rs->partitions[i]) != 0; p = p->next)
            ;
        if (!p && (p = part_new(c, s, rs->partitions[i])) != NULL) {
            p->next = s->parts;
            s->parts = p;
            changed = 1;
        }
    }
    return changed;
}

void sch_cdc_reconcile(sch_cdc_t *c, const msm_registry_t *reg)
{
    if (c->stopping)
        return;
    topics_load(c, reg);
    int changed = 0;
    for (sch_cdc_src_t *s = c->sources; s; s = s->next)
        s->keep = 0;
    for (size_t i = 0; i < msm_registry_cdc_count(reg); i++) {
        const msm_cdc_source_t *rs = msm_registry_cdc_at(reg, i);
        if (!rs->range_url)
            continue; /* push only */
        sch_cdc_src_t *s;
        for (s = c->sources; s && strcmp(s->name, rs->name) != 0; s = s->next)
            ;
        if (!s) {
            if (!(s = calloc(1, sizeof(*s))) || !(s->name = strdup(rs->name))) {
                free(s);
                continue;
            }
            s->m_latency = msm_metric_labels(c->f_latency, rs->name, NULL);
            s->next = c->sources;
            c->sources = s;
            msm_log(MSM_LOG_INFO, FAC, "source %s: pulling %zu partition(s) from %s into %s",
                    rs->name, rs->npartitions, rs->range_url, rs->topic);
        }
        s->keep = 1;
        changed |= src_update(c, s, rs);
    }
    for (sch_cdc_src_t **ps = &c->sources; *ps;) {
        sch_cdc_src_t *s = *ps;
        if (s->keep) {
            ps = &s->next;
            continue;
        }
        msm_log(MSM_LOG_INFO, FAC, "source %s: deleted or no range_url any more: not pulling",
                s->name);
        *ps = s->next;
        src_free(s);
        changed = 1;
    }
    if (changed)
        sch__cdc_leases_now(c);
    sch__cdc_notify_update(c);
}

/* ---- life cycle ---- */

static int register_metrics(sch_cdc_t *c, msm_metrics_t *m)
{
    static const char *const by_part[] = {"source", "partition", NULL};
    static const char *const by_source[] = {"source", NULL};
    static const char *const by_reason[] = {"source", "partition", "reason", NULL};
    msm_metric_t *owned = NULL;
    int rc = 0;
    rc |= msm_metrics_gauge(m, "msm_scheduler_cdc_lag",
                            "per pulled partition this scheduler holds: the highest sequence "
                            "notified or seen in a range answer minus the cursor",
                            by_part, &c->f_lag);
    rc |= msm_metrics_histogram(
        m, "msm_scheduler_cdc_fetch_seconds",
        "range requests to the source, until their answer or failure", by_source, latency_buckets,
        sizeof(latency_buckets) / sizeof(latency_buckets[0]), &c->f_latency);
    rc |= msm_metrics_counter(m, "msm_scheduler_cdc_backoffs_total",
                              "rounds of a partition that failed and backed off, by reason",
                              by_reason, &c->f_backoffs);
    rc |= msm_metrics_counter(m, "msm_scheduler_cdc_changes_pulled_total",
                              "changes a range answer brought that were published (durable in "
                              "events.<topic>; duplicates not counted)",
                              by_part, &c->f_pulled);
    rc |= msm_metrics_gauge(m, "msm_scheduler_cdc_partitions_owned",
                            "CDC partitions whose lease this scheduler holds", NULL, &owned);
    if (rc)
        return -1;
    c->m_owned = msm_metric_solo(owned);
    return 0;
}

sch_cdc_t *sch_cdc_new(msm_daemon_t *d,
                       const sch_conf_t *conf,
                       msm_metrics_t *metrics,
                       char *errbuf,
                       size_t errbuf_size)
{
    sch_cdc_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    c->daemon = d;
    c->loop = msm_daemon_loop(d);
    c->redis = msm_daemon_redis(d);
    c->log = msm_daemon_stream(d);
    snprintf(c->member, sizeof(c->member), "%s", msm_daemon_member(d));
    c->fetch_timeout_ms = (uint32_t)conf->cdc_fetch_timeout_ms;
    c->lease_ms = (uint32_t)conf->cdc_lease_ms;
    c->backoff_min_ms = (uint32_t)conf->cdc_backoff_min_ms;
    c->backoff_max_ms =
        (uint32_t)(conf->cdc_backoff_max_ms > conf->cdc_backoff_min_ms ? conf->cdc_backoff_max_ms
                                                                       : conf->cdc_backoff_min_ms);
    c->max_event_bytes = (size_t)conf->cdc_max_event_bytes;
    msm_http_client_conf_t hc;
    msm_http_client_conf_init(&hc);
    hc.timeout_ms = c->fetch_timeout_ms;
    hc.max_response_bytes = (size_t)conf->cdc_max_answer_bytes;
    uint64_t append_timeout = (uint64_t)msm_daemon_common(d)->log_append_timeout_ms;
    c->http = msm_http_client_new(c->loop, &hc, errbuf, errbuf_size);
    c->state = msm_cdc_state_new(c->redis, c->log, append_timeout);
    c->schemas = msm_schema_store_new(c->redis, 0);
    if (!c->http || !c->state || !c->schemas || register_metrics(c, metrics) != 0 ||
        sch__cdc_owner_init(c) != MSM_OK) {
        if (c->http)
            snprintf(errbuf, errbuf_size, "out of memory");
        destroy(c);
        return NULL;
    }
    return c;
}

void sch_cdc_stop(sch_cdc_t *c)
{
    if (!c || c->stopping)
        return;
    c->stopping = 1;
    for (sch_cdc_src_t *s = c->sources; s; s = s->next) {
        for (sch_cdc_part_t *p = s->parts; p; p = p->next) {
            msm_loop_timer_stop(c->loop, &p->timer);
            if (p->call) { /* a fetch without a claim: nothing to finish */
                msm_http_call_cancel(p->call);
                p->call = NULL;
                sch__cdc_release(c);
                round_end(p, 0);
            }
        }
    }
    sch__cdc_owner_stop(c);
}

int sch_cdc_drained(const sch_cdc_t *c)
{
    return !c || c->inflight == 0;
}

static void destroy(sch_cdc_t *c)
{
    while (c->sources) {
        sch_cdc_src_t *s = c->sources;
        c->sources = s->next;
        src_free(s);
    }
    topics_free(c);
    sch__cdc_owner_free(c);
    msm_http_client_free(c->http);
    msm_cdc_state_free(c->state);
    msm_schema_store_free(c->schemas);
    free(c);
}

void sch_cdc_free(sch_cdc_t *c)
{
    if (!c)
        return;
    sch_cdc_stop(c);
    c->freed = 1;
    if (c->inflight == 0)
        destroy(c);
}
