/* SPDX-License-Identifier: MIT */
/* CDC push (API.md "CDC", docs/cdc.md "Push"): POST /v1/cdc/sources/{name}/changes. One
 * batch of the protocol push and pull share (msm/cdc_state.h): claim the partition (its
 * lock and intent; the cursor and the sequences known durable), publish the changes above
 * it through the publish pipeline in one append marked with the batch's token, then settle.
 * A change at or below the partition's last published sequence is a duplicate: acknowledged,
 * not published again, whether the push or the scheduler's pull brought it first. */
#include "pub_int.h"

#include "msm/access.h"
#include "msm/cdc_state.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "cdc"

typedef struct {
    fe_pub_t pub;
    char *source;
    char *partition;
    char token[MSM_ID_STR_SIZE];
    json_t *body;      /* the request, kept until the changes are built */
    size_t received;   /* changes in the request */
    int64_t last;      /* the request's highest sequence */
    int64_t cursor;    /* the partition's last sequence when claimed */
    int answer_status; /* the answer, given once the batch is settled */
    json_t *answer;
} push_t;

static void push_release(fe_pub_t *p)
{
    push_t *ps = (push_t *)p;
    free(ps->source);
    free(ps->partition);
    json_decref(ps->body);
    json_decref(ps->answer);
}

static void count(fe_t *fe, const char *source, const char *result, size_t n)
{
    msm_counter_add(msm_metric_labels(fe->fe_m_cdc, source, result, NULL), n);
}

static void on_settled(int err, const char *reason, int64_t cursor, int ours, void *opaque)
{
    push_t *ps = opaque;
    (void)cursor;
    if (err != MSM_OK)
        msm_log(MSM_LOG_WARN, FAC,
                "source %s partition %s: batch %s not settled (its lock "
                "expires, its intent is recovered): %s",
                ps->source, ps->partition, ps->token, reason ? reason : msm_err_str(err));
    else if (!ours)
        msm_log(MSM_LOG_WARN, FAC,
                "source %s partition %s: batch %s was resolved without it "
                "(source deleted, or taken for dead and recovered)",
                ps->source, ps->partition, ps->token);
    json_t *answer = ps->answer;
    ps->answer = NULL;
    fe_call_json(&ps->pub.base, ps->answer_status, answer);
}

/* Ends the batch (@p outcome), then answers @p status with @p answer (stolen). The answer
 * waits for the settle: a client that pushes the next changes as soon as it has the answer
 * finds the partition free. */
static void settle_and_answer(push_t *ps, msm_cdc_outcome_t outcome, int status, json_t *answer)
{
    fe_t *fe = ps->pub.base.fe;
    ps->answer_status = status;
    ps->answer = answer;
    if (msm_cdc_settle(fe->fe_cdc, ps->source, ps->partition, ps->token, outcome, ps->last,
                       on_settled, ps) != MSM_OK)
        on_settled(MSM_ERR_NOMEM, "not sent", 0, 1, ps);
}

static json_t *push_answer(const push_t *ps, size_t published)
{
    int64_t last = ps->last > ps->cursor ? ps->last : ps->cursor;
    return json_pack("{s:I,s:I,s:I}", "accepted", (json_int_t)published, "duplicates",
                     (json_int_t)(ps->received - published), "last_sequence", (json_int_t)last);
}

static void on_published(fe_pub_t *p, int status, json_t *error)
{
    push_t *ps = (push_t *)p;
    fe_t *fe = p->base.fe;
    if (status != 200) {
        count(fe, ps->source, "failed", ps->received);
        /* A failed append may be in partly: its intent stays for the recovery. */
        settle_and_answer(ps, p->append_sent ? MSM_CDC_UNKNOWN : MSM_CDC_NOTHING, status, error);
        return;
    }
    count(fe, ps->source, "published", p->batch.n);
    count(fe, ps->source, "duplicate", ps->received - p->batch.n);
    settle_and_answer(ps, MSM_CDC_DURABLE, 200, push_answer(ps, p->batch.n));
}

/* Checks the request body {"partition","changes"}. @returns 0, 400 or 413. */
static int
body_check(const fe_parse_ctx_t *ctx, const json_t *body, msm_json_err_t *e, msm_json_err_t *big)
{
    static const char *const known[] = {"partition", "changes", NULL};
    json_t *changes = NULL;
    const char *partition = NULL;
    if (msm_json_expect_object(e, body) != MSM_OK)
        return 400;
    msm_json_check_known(e, body, known);
    if (msm_json_get_str(e, body, "partition", MSM_JSON_REQUIRED, &partition) == MSM_OK &&
        !msm_name_valid(partition))
        msm_json_err_add(e, "partition", "must match [A-Za-z0-9._-]{1,200}");
    msm_json_get_array(e, body, "changes", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &changes);
    if (json_array_size(changes) > ctx->max_events) {
        msm_json_err_add(big, "changes", "at most %zu changes per request", ctx->max_events);
        return 413;
    }
    msm_json_path_push_key(e, "changes");
    msm_json_path_push_key(big, "changes");
    msm_cdc_changes_check(changes, e, big);
    msm_json_path_pop(e);
    msm_json_path_pop(big);
    return msm_json_err_count(e) ? 400 : msm_json_err_count(big) ? 413 : 0;
}

/* The events of the changes not yet published into the pipeline's batch. Without a schema
 * their payloads are made now; with one, the pipeline's schema step makes them
 * (fe_cdc_convert), both through msm_cdc_payload(). */
static int
build_events(push_t *ps, const msm_cdc_claim_t *claim, int schematized, msm_json_err_t *big)
{
    fe_pub_t *p = &ps->pub;
    const json_t *changes = json_object_get(ps->body, "changes");
    size_t n = 0, i;
    json_t *c;
    json_array_foreach(changes, i, c)
    {
        n += !msm_cdc_published(claim, json_integer_value(json_object_get(c, "sequence")));
    }
    if (fe_batch_init(&p->batch, n, 0) != MSM_OK)
        return MSM_ERR_NOMEM;
    p->batch.list = "changes";
    p->batch.json = json_incref(ps->body);
    size_t k = 0, limit = p->base.fe->fe_set.max_event_bytes;
    json_array_foreach(changes, i, c)
    {
        msm_cdc_change_t ch;
        msm_cdc_change_get(c, &ch);
        if (msm_cdc_published(claim, ch.sequence))
            continue;
        fe_event_t *ev = &p->batch.evs[k++];
        ev->key = ev->ordering_key = ch.entity;
        ev->cdc_entity = ch.entity;
        ev->cdc_sequence = ch.sequence;
        ev->cdc_operation = ch.op;
        ev->data = ch.data;
        ev->data_field = "data";
        ev->content_type = "application/json";
        if (schematized)
            continue;
        msm_cdc_payload_t pl;
        msm_json_path_push_key(big, "changes");
        msm_json_path_push_index(big, i);
        msm_json_path_push_key(big, "data");
        int rc = msm_cdc_payload(&ch, NULL, 0, limit, &pl, big, big);
        msm_json_path_pop(big);
        msm_json_path_pop(big);
        msm_json_path_pop(big);
        if (rc == MSM_ERR_NOMEM)
            return rc;
        if (rc == MSM_OK) {
            ev->owned = pl.data;
            ev->payload = pl.data;
            ev->payload_len = pl.len;
            ev->content_type = pl.content_type;
        }
    }
    return MSM_OK;
}

void fe_cdc_convert(fe_pub_t *p,
                    const msm_schema_t *s,
                    int id,
                    size_t i,
                    msm_json_err_t *e,
                    msm_json_err_t *big,
                    size_t limit)
{
    fe_event_t *ev = &p->batch.evs[i];
    msm_cdc_change_t ch = {ev->cdc_sequence, (Msm__V1__Operation)ev->cdc_operation, ev->cdc_entity,
                           ev->data};
    msm_cdc_payload_t pl;
    if (msm_cdc_payload(&ch, s, id, limit, &pl, e, big) != MSM_OK)
        return;
    free(ev->owned);
    ev->owned = pl.data;
    ev->payload = pl.data;
    ev->payload_len = pl.len;
    ev->content_type = pl.content_type;
    ev->schema_id = pl.schema_id;
}

static void answer_claim_error(push_t *ps, const msm_cdc_claim_t *res)
{
    fe_pub_t *p = &ps->pub;
    char msg[700];
    switch (res->status) {
    case MSM_CDC_NO_SOURCE:
        fe_cdc_not_found(&p->base, ps->source);
        return;
    case MSM_CDC_NO_PARTITION:
        snprintf(msg, sizeof(msg), "partition %s is not one of source %s's partitions",
                 ps->partition, ps->source);
        fe_call_error(&p->base, 400, "INVALID_ARGUMENT", msg, NULL);
        return;
    case MSM_CDC_BUSY: {
        char secs[24];
        snprintf(secs, sizeof(secs), "%lld", (long long)((res->retry_ms + 999) / 1000));
        if (p->base.req)
            msm_http_add_header(p->base.req, "Retry-After", secs);
        snprintf(msg, sizeof(msg),
                 "another batch of source %s partition %s is in progress or "
                 "being recovered; retry",
                 ps->source, ps->partition);
        fe_call_error(&p->base, 503, "UNAVAILABLE", msg, NULL);
        return;
    }
    default:
        fe_call_unavailable(&p->base, res->reason ? res->reason : "CDC state unavailable");
        return;
    }
}

static void on_claimed(const msm_cdc_claim_t *res, void *opaque)
{
    push_t *ps = opaque;
    fe_pub_t *p = &ps->pub;
    fe_t *fe = p->base.fe;
    if (res->status != MSM_CDC_CLAIMED) {
        answer_claim_error(ps, res);
        return;
    }
    ps->cursor = res->cursor;
    const char *subject = NULL;
    int status = 0;
    char msg[700] = "";
    msm_json_err_t big;
    msm_json_err_init(&big);
    if (!fe_topic_lookup(fe, res->topic, &subject)) {
        status = 404;
        snprintf(msg, sizeof(msg), "topic %s of CDC source %s not found", res->topic, ps->source);
    } else if (p->base.req && !msm_access_can(p->base.req, "publish", res->topic)) {
        /* A connector needs the publish scope of its source's topic, like a publisher. */
        status = 403;
        snprintf(msg, sizeof(msg), "no publish scope for topic \"%s\" of CDC source %s", res->topic,
                 ps->source);
    } else if (!(p->topic = strdup(res->topic)) || (subject && !(p->subject = strdup(subject))) ||
               build_events(ps, res, subject != NULL, &big) != MSM_OK) {
        status = 500;
        snprintf(msg, sizeof(msg), "out of memory");
    } else if (msm_json_err_count(&big)) {
        status = 413;
    } else if (p->base.req && fe_quota_spent(p->base.req, p->batch.n)) {
        /* The principal's publish_per_s counts changes as events. */
        status = 429;
        snprintf(msg, sizeof(msg), "%s", FE_QUOTA_SPENT);
    }
    if (status) {
        const char *code = status == 404   ? "NOT_FOUND"
                           : status == 403 ? "PERMISSION_DENIED"
                           : status == 429 ? "RATE_LIMITED"
                                           : "INTERNAL";
        json_t *body = status == 413 ? msm_json_err_body(&big, "PAYLOAD_TOO_LARGE")
                                     : msm_json_error_body(code, msg, NULL);
        msm_json_err_deinit(&big);
        settle_and_answer(ps, MSM_CDC_NOTHING, status, body);
        return;
    }
    msm_json_err_deinit(&big);
    if (p->batch.n == 0) { /* every change was published already: it is all durable */
        count(fe, ps->source, "duplicate", ps->received);
        settle_and_answer(ps, MSM_CDC_DURABLE, 200, push_answer(ps, 0));
        return;
    }
    p->cdc_source = ps->source;
    p->cdc_partition = ps->partition;
    p->cdc_tag = ps->token;
    fe_pub_submit(p);
}

void fe_cdc_push(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    uint64_t start_us = msm_time_mono_us();
    const char *name = msm_http_req_param(req, "name");
    if (!msm_name_valid(name)) {
        fe_not_found(req, "CDC source", name);
        return;
    }
    json_t *body;
    if (fe_parse_body(req, 0, &body) != 0)
        return;
    fe_parse_ctx_t ctx = fe_parse_ctx(fe);
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    int status = body_check(&ctx, body, &e, &big);
    if (status) {
        msm_http_respond_json(req, status,
                              status == 413 ? msm_json_err_body(&big, "PAYLOAD_TOO_LARGE")
                                            : msm_json_err_body(&e, NULL));
        msm_json_err_deinit(&e);
        msm_json_err_deinit(&big);
        json_decref(body);
        return;
    }
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    /* The topic is known once the source is read: the pipeline's topic is set then. */
    push_t *ps = fe_pub_new(fe, req, sizeof(*ps), NULL, NULL, on_published, start_us);
    if (!ps) {
        json_decref(body);
        return;
    }
    ps->pub.release = push_release;
    ps->body = body;
    const json_t *changes = json_object_get(body, "changes");
    ps->received = json_array_size(changes);
    ps->last =
        json_integer_value(json_object_get(json_array_get(changes, ps->received - 1), "sequence"));
    const char *partition = json_string_value(json_object_get(body, "partition"));
    if (!(ps->source = strdup(name)) || !(ps->partition = strdup(partition))) {
        fe_call_error(&ps->pub.base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    msm_id_new_str(ps->token);
    const msm_cdc_claim_args_t args = {.source = name,
                                       .partition = partition,
                                       .token = ps->token,
                                       .lock_ms = MSM_CDC_PUSH_LOCK_MS,
                                       .last_sequence = ps->last};
    int rc = msm_cdc_claim(fe->fe_cdc, &args, on_claimed, ps);
    if (rc != MSM_OK)
        fe_call_unavailable(&ps->pub.base, msm_err_str(rc));
}
