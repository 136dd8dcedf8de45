/* SPDX-License-Identifier: MIT */
/* Outcomes: the router's DeliveryOutcomes from "status", and expired leases, go through one
 * complete script per subscription and batch. The retry delay is chosen here (exponential
 * backoff with full jitter, never below the subscription's min_backoff_ms, and never before a
 * Retry-After the endpoint asked for); the script decides whether the task retries or dies. */
#include "fc_int.h"
#include "msm/backoff.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const fc_kind_names[FC_KIND_COUNT] = {"success", "retriable", "fatal"};

/* Error text kept in the task's history and last_error. */
#define ERROR_MAX 1024

static int64_t retry_delay_ms(const fc_sub_t *sub, int attempt, int64_t retry_after_ms)
{
    uint64_t min = (uint64_t)(sub->min_backoff_ms > 0 ? sub->min_backoff_ms : 0);
    uint64_t max = (uint64_t)(sub->max_backoff_ms > 0 ? sub->max_backoff_ms : 0);
    uint64_t delay = msm_backoff_delay_ms(attempt > 0 ? (uint32_t)attempt : 1, min, max);
    /* Full jitter may draw 0; the subscription's minimum is a promise to the endpoint. */
    if (delay < min)
        delay = min;
    if (retry_after_ms > 0 && (uint64_t)retry_after_ms > delay)
        delay = (uint64_t)retry_after_ms;
    return (int64_t)delay;
}

fc_op_t *fc_complete_new(fc_sub_t *sub, int lease)
{
    flowcontrol_t *fc = sub->fc;
    fc_op_t *op = fc_op_new(fc, sub, FC_OP_COMPLETE);
    if (!op)
        return NULL;
    op->lease = lease;
    op->now_ms = msm_time_unix_ms();
    fc_args_t *a = &op->args;
    const char *keys[] = {sub->k_running, sub->k_retry, sub->k_dlq, sub->k_stats, sub->k_task};
    int rc = MSM_OK;
    for (size_t i = 0; rc == MSM_OK && i < sizeof(keys) / sizeof(keys[0]); i++)
        rc = fc_args_add(a, keys[i], strlen(keys[i]));
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%lld", (long long)op->now_ms);
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%d", sub->max_attempts);
    if (rc != MSM_OK) {
        fc_op_free(op);
        return NULL;
    }
    return op;
}

int fc_complete_add(fc_op_t *op,
                    const char *event_id,
                    int attempt,
                    fc_kind_t kind,
                    int http_status,
                    const char *error,
                    int64_t latency_ms,
                    int64_t retry_after_ms)
{
    uint8_t *kinds = realloc(op->kinds, (op->nitems + 1) * sizeof(*kinds));
    if (kinds)
        op->kinds = kinds;
    int64_t *due = realloc(op->due_ms, (op->nitems + 1) * sizeof(*due));
    if (due)
        op->due_ms = due;
    if (!kinds || !due)
        return MSM_ERR_NOMEM;
    int64_t delay =
        kind == FC_KIND_RETRIABLE ? retry_delay_ms(op->sub, attempt, retry_after_ms) : 0;
    char text[ERROR_MAX];
    if (error && *error)
        snprintf(text, sizeof(text), "%s", error);
    else if (kind != FC_KIND_SUCCESS && http_status)
        snprintf(text, sizeof(text), "HTTP %d", http_status);
    else
        text[0] = '\0';
    fc_args_t *a = &op->args;
    int n = a->n;
    int rc = fc_args_add(a, event_id, strlen(event_id));
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%d", attempt);
    if (rc == MSM_OK)
        rc = fc_args_add(a, fc_kind_names[kind], strlen(fc_kind_names[kind]));
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%d", http_status);
    if (rc == MSM_OK)
        rc = fc_args_add(a, text, strlen(text));
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%lld", (long long)latency_ms);
    if (rc == MSM_OK)
        rc = fc_args_addf(a, "%lld", (long long)delay);
    if (rc != MSM_OK) {
        while (a->n > n) /* keep the arguments in whole 7-tuples */
            free(a->v[--a->n]);
        return rc;
    }
    op->kinds[op->nitems] = (uint8_t)kind;
    op->due_ms[op->nitems] = op->now_ms + delay;
    op->nitems++;
    return MSM_OK;
}

static void on_complete_retry(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    fc_complete_send(opaque);
}

static void count_result(fc_op_t *op, size_t i, const redisReply *result)
{
    fc_sub_t *sub = op->sub;
    const char *r = result->type == REDIS_REPLY_STRING ? result->str : "";
    if (strcmp(r, "stale") == 0) {
        msm_counter_inc(sub->m_stale);
        return;
    }
    if (op->lease)
        msm_counter_inc(sub->m_expired);
    else
        msm_counter_inc(sub->m_outcomes[op->kinds[i]]);
    if (strcmp(r, "retrying") == 0) {
        msm_counter_inc(sub->m_retries);
        fc_sub_arm_retry(sub, op->due_ms[i]);
    } else if (strcmp(r, "dead") == 0) {
        msm_counter_inc(sub->m_dead);
    }
}

static void on_completed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_op_t *op = fc_op_answered(opaque);
    if (!op)
        return;
    fc_sub_t *sub = op->sub;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why &&
        (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
         reply->element[0]->type != REDIS_REPLY_ARRAY || reply->element[0]->elements != op->nitems))
        why = "unexpected reply";
    if (why) {
        msm_log(MSM_LOG_WARN, "outcome", "subscription %s: applying %zu outcomes failed: %s",
                sub->name, op->nitems, why);
        if (op->lease) {
            fc_op_free(op); /* the next lease scan finds them again */
            return;
        }
        fc_op_retry_later(op, on_complete_retry);
        return;
    }
    size_t applied = 0;
    for (size_t i = 0; i < op->nitems; i++) {
        const redisReply *res = reply->element[0]->element[i];
        applied += !(res->type == REDIS_REPLY_STRING && strcmp(res->str, "stale") == 0);
        count_result(op, i, res);
    }
    msm_gauge_set(sub->m_in_flight, (double)msm_redis_reply_int(reply->element[1], 0));
    fc_op_ack(op);
    if (applied)
        fc_sub_kick(sub); /* slots were freed */
    fc_op_free(op);
}

void fc_complete_send(fc_op_t *op)
{
    if (op->nitems == 0) {
        fc_op_ack(op);
        fc_op_free(op);
        return;
    }
    if (fc_op_eval(op, op->fc->scripts->complete, 4, on_completed) != MSM_OK) {
        if (op->lease)
            fc_op_free(op);
        else
            fc_op_retry_later(op, on_complete_retry);
    }
}

/* ---- the status stream ---- */

static fc_kind_t kind_of(Msm__V1__OutcomeKind k)
{
    switch (k) {
    case MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS:
        return FC_KIND_SUCCESS;
    case MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL:
        return FC_KIND_FATAL;
    default:
        /* RETRIABLE, and anything unknown: retrying is the safe reading. */
        return FC_KIND_RETRIABLE;
    }
}

/* The complete op of @p sub within this batch, made on first use. */
static fc_op_t *op_for(fc_op_t **ops, size_t *nops, fc_sub_t *sub, msm_consumer_t *c)
{
    for (size_t i = 0; i < *nops; i++) {
        if (ops[i]->sub == sub)
            return ops[i];
    }
    fc_op_t *op = fc_complete_new(sub, 0);
    if (op) {
        op->consumer = c;
        ops[(*nops)++] = op;
    }
    return op;
}

static void
status_add(flowcontrol_t *fc, msm_consumer_t *c, msm_stream_msg_t *msg, fc_op_t **ops, size_t *nops)
{
    Msm__V1__DeliveryOutcome *o = msm_outcome_unpack(msg->value, msg->value_len);
    if (!o || !o->event_id || !*o->event_id || !o->subscription) {
        msm_log(MSM_LOG_WARN, "outcome", "dropping status entry %s: not an outcome", msg->position);
        msm_outcome_free(o);
        msm_consumer_ack(c, msg);
        return;
    }
    fc_sub_t *sub = fc_sub_find(fc, o->subscription);
    if (!sub) {
        msm_log(MSM_LOG_DEBUG, "outcome", "dropping outcome of %s: no subscription %s", o->event_id,
                o->subscription);
        msm_outcome_free(o);
        msm_consumer_ack(c, msg);
        return;
    }
    fc_op_t *op = op_for(ops, nops, sub, c);
    int rc = op ? fc_complete_add(op, o->event_id, o->attempt, kind_of(o->kind), o->http_status,
                                  o->error, o->latency_ms, o->retry_after_ms)
                : MSM_ERR_NOMEM;
    if (rc == MSM_OK)
        rc = fc_op_hold(op, msg);
    if (rc != MSM_OK) /* unacknowledged: delivered again after a restart */
        msm_log(MSM_LOG_ERROR, "outcome", "outcome of %s: %s", o->event_id, msm_err_str(rc));
    msm_outcome_free(o);
}

void fc_on_status_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    flowcontrol_t *fc = opaque;
    if (fc->stopping)
        return; /* unacknowledged: delivered again after a restart */
    fc_op_t **ops = calloc(n ? n : 1, sizeof(*ops));
    if (!ops)
        return;
    size_t nops = 0;
    for (size_t i = 0; i < n; i++)
        status_add(fc, c, msgs[i], ops, &nops);
    for (size_t i = 0; i < nops; i++)
        fc_complete_send(ops[i]);
    free(ops);
}
