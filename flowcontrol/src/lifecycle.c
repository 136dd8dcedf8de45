/* SPDX-License-Identifier: MIT */
/* Lifecycle events: when --lifecycle.topic names a topic, every task that goes retrying or
 * dead is also announced there as an ordinary event (type msm.task.retrying / msm.task.dead,
 * JSON payload), so operators subscribe to their own failures like to anything else. Off the
 * happy path: only failed attempts cost an append. At least once: an announcement may come
 * for a change a crash then undid (the task is retried again). */
#include "fc_int.h"
#include "msm/err.h"
#include "msm/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WARN_EVERY_MS 60000 /* a missing topic is logged this often at most */

static void warn(flowcontrol_t *fc, msm_err_t err, const char *reason)
{
    int64_t now = fc_now_ms();
    if (now - fc->lifecycle_warned_ms < WARN_EVERY_MS)
        return;
    fc->lifecycle_warned_ms = now;
    msm_log(MSM_LOG_WARN, FC_FACILITY,
            "lifecycle event not published to topic %s: %s (does the topic exist?)",
            fc->conf.lifecycle_topic, reason ? reason : msm_err_str(err));
}

/* The append's answer: through a call, which flowcontrol_free() orphans (the append may
 * outlive the daemon's state). */
static void on_announced(msm_err_t err, const char *reason, void *opaque)
{
    fc_call_t *c = opaque;
    int same = 0;
    fc_sub_t *sub = fc_call_sub(c, &same);
    fc_call_free(c);
    if (!sub)
        return;
    if (err != MSM_OK)
        warn(sub->fc, err, reason);
    fc_sub_release(sub);
}

void fc_lifecycle_emit(fc_sub_t *sub, const fc_task_t *t, const char *state)
{
    flowcontrol_t *fc = sub->fc;
    const char *topic = fc->conf.lifecycle_topic;
    if (!topic || !*topic)
        return;
    const Msm__V1__Task *task = t->t;
    json_t *body = json_pack("{s:s,s:s,s:s,s:i,s:s,s:I,s:I}", "subscription", sub->name,
                             "event_id", task->event->id, "state", state, "attempts",
                             task->attempt, "last_error",
                             task->last_error ? task->last_error : "", "next_attempt_at",
                             (json_int_t)task->next_attempt_at_ms, "at",
                             (json_int_t)fc_now_ms());
    char type[64], stream[FC_KEY_MAX];
    snprintf(type, sizeof(type), "msm.task.%s", state);
    snprintf(stream, sizeof(stream), MSM_STREAM_EVENTS, topic);
    msm_buf_t buf = {0};
    int rc = msm_lifecycle_pack(topic, sub->name, type, body, &buf);
    json_decref(body);
    if (rc == MSM_OK) {
        msm_record_t rec = {.key = sub->name, .key_len = strlen(sub->name),
                            .value = buf.data, .value_len = buf.len};
        fc_call_t *c = fc_call_new(sub);
        if (!c) {
            warn(fc, MSM_ERR_NOMEM, "out of memory");
        } else if (msm_stream_append(fc->env.stream, stream, &rec, 1, on_announced, c) !=
                   MSM_OK) {
            fc_sub_release(sub);
            fc_call_free(c);
            warn(fc, MSM_ERR_NOMEM, "cannot send");
        }
    }
    msm_buf_deinit(&buf);
}
