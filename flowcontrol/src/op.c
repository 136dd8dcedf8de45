/* SPDX-License-Identifier: MIT */
/* Operations in flight: one Redis script or log append each, with the log entries to
 * acknowledge once it succeeded. The daemon tracks them all so it can drain on stop and, when
 * freed early, orphan them (their late replies are then only freed). */
#include "fc_int.h"
#include "msm/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed script is sent again after this pause; the log entries stay unacknowledged. */
#define OP_RETRY_MS 500

int fc_args_add(fc_args_t *a, const void *data, size_t len)
{
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 16;
        char **v = realloc(a->v, (size_t)cap * sizeof(*v));
        if (!v)
            return MSM_ERR_NOMEM;
        a->v = v;
        size_t *l = realloc(a->len, (size_t)cap * sizeof(*l));
        if (!l)
            return MSM_ERR_NOMEM;
        a->len = l;
        a->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return MSM_ERR_NOMEM;
    if (len)
        memcpy(copy, data, len);
    copy[len] = '\0';
    a->v[a->n] = copy;
    a->len[a->n] = len;
    a->n++;
    return MSM_OK;
}

int fc_args_addf(fc_args_t *a, const char *fmt, ...)
{
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return MSM_ERR_TOOLARGE;
    return fc_args_add(a, buf, (size_t)n);
}

void fc_args_deinit(fc_args_t *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    free(a->len);
    *a = (fc_args_t){0};
}

fc_op_t *fc_op_new(flowcontrol_t *fc, fc_sub_t *sub, fc_op_kind_t kind)
{
    fc_op_t *op = calloc(1, sizeof(*op));
    if (!op)
        return NULL;
    op->fc = fc;
    op->kind = kind;
    msm_timer_init(&op->retry_timer);
    if (sub) {
        op->sub = sub;
        fc_sub_keep(sub);
    }
    op->next = fc->ops;
    if (fc->ops)
        fc->ops->prev = op;
    fc->ops = op;
    fc->nops++;
    return op;
}

fc_op_t *fc_op_answered(void *opaque)
{
    fc_op_t *op = opaque;
    op->in_call = 0;
    if (!op->fc) {
        fc_op_free(op); /* flowcontrol was freed while the op was out */
        return NULL;
    }
    return op;
}

void fc_op_free(fc_op_t *op)
{
    if (!op)
        return;
    flowcontrol_t *fc = op->fc;
    if (fc) {
        msm_loop_timer_stop(fc->env.loop, &op->retry_timer);
        if (op->prev)
            op->prev->next = op->next;
        else
            fc->ops = op->next;
        if (op->next)
            op->next->prev = op->prev;
        fc->nops--;
    }
    if (op->sub)
        fc_sub_release(op->sub);
    fc_scripts_release(op->scripts_held);
    fc_args_deinit(&op->args);
    free(op->msgs);
    free(op->kinds);
    free(op->due_ms);
    free(op);
}

int fc_op_hold(fc_op_t *op, msm_stream_msg_t *msg)
{
    if (op->nmsgs == op->msgs_cap) {
        size_t cap = op->msgs_cap ? op->msgs_cap * 2 : 16;
        msm_stream_msg_t **m = realloc(op->msgs, cap * sizeof(*m));
        if (!m)
            return MSM_ERR_NOMEM;
        op->msgs = m;
        op->msgs_cap = cap;
    }
    op->msgs[op->nmsgs++] = msg;
    return MSM_OK;
}

void fc_op_ack(fc_op_t *op)
{
    if (!op->fc || !op->consumer)
        return;
    for (size_t i = 0; i < op->nmsgs; i++)
        msm_consumer_ack(op->consumer, op->msgs[i]);
    op->nmsgs = 0;
}

int fc_op_eval(fc_op_t *op, const msm_redis_script_t *script, int nkeys, msm_redis_reply_cb *cb)
{
    int rc = msm_redis_eval(op->fc->env.redis, script, cb, op, nkeys, op->args.n,
                            (const char **)op->args.v, op->args.len);
    op->in_call = rc == MSM_OK;
    return rc;
}

void fc_op_retry_later(fc_op_t *op, msm_loop_timer_cb *resend)
{
    op->in_call = 0;
    if (op->fc->stopping) {
        /* Leave the entries unacknowledged: they come back after a restart. */
        fc_op_free(op);
        return;
    }
    msm_loop_timer_start(op->fc->env.loop, &op->retry_timer, OP_RETRY_MS, resend, op);
}

void fc_ops_orphan_all(flowcontrol_t *fc)
{
    fc_op_t *op = fc->ops;
    while (op) {
        fc_op_t *next = op->next;
        msm_loop_timer_stop(fc->env.loop, &op->retry_timer);
        op->prev = op->next = NULL;
        if (op->sub) {
            /* The subscriptions are destroyed right after, whatever their counts. */
            op->sub = NULL;
        }
        op->nmsgs = 0; /* their consumer is freed too */
        if (op->in_call) {
            op->fc = NULL;
            op->scripts_held = fc->scripts;
            fc_scripts_keep(fc->scripts);
        } else {
            op->fc = NULL;
            fc_op_free(op);
        }
        op = next;
    }
    fc->ops = NULL;
    fc->nops = 0;
}
