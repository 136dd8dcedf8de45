/* SPDX-License-Identifier: MIT */
/* Settling: the router's outcomes from status.<sub> decide each running task's fate in
 * memory; what must be durable goes into the subscription's pipeline of the loop turn (one
 * batch of plain commands, no Lua): the task records (SET … PX retention), the retry store
 * and the DLQ (HSET of the packed Task, then ZADD of its id: a zset entry always has its
 * task), the stats counters and gauges. Once every command of a pipeline succeeded, its
 * settled tasks leave memory (their ready records may then be acknowledged) and its status
 * records are acknowledged. A failed command is sent again; nothing is acknowledged before. */
#include "fc_int.h"
#include "msm/backoff.h"
#include "msm/err.h"
#include "msm/json_scan.h"
#include "msm/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLUSH_RETRY_MS 500
#define ERROR_MAX      1024 /* error text kept in last_error and the history */
#define HISTORY_MAX    64   /* attempts kept in a history (the latest) */
#define CLAIM_BATCH    1000 /* retries claimed per script */

/* ---- building a pipeline ---- */

static fc_flush_t *flush_new(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    fc_flush_t *fl = calloc(1, sizeof(*fl));
    if (!fl)
        return NULL;
    fl->fc = fc;
    fl->sub = sub;
    fc_sub_keep(sub);
    msm_timer_init(&fl->retry_timer);
    return fl;
}

static void flush_free(fc_flush_t *fl)
{
    flowcontrol_t *fc = fl->fc;
    if (fc) {
        msm_loop_timer_stop(fc->env.loop, &fl->retry_timer);
        if (fl->prev)
            fl->prev->next = fl->next;
        else if (fc->flushes == fl)
            fc->flushes = fl->next;
        if (fl->next)
            fl->next->prev = fl->prev;
    }
    if (fl->sub)
        fc_sub_release(fl->sub);
    msm_buf_deinit(&fl->arena);
    msm_buf_deinit(&fl->rec_text);
    free(fl->rec_off);
    free(fl->aoff);
    free(fl->alen);
    free(fl->cmds);
    free(fl->done);
    free(fl->acks);
    free(fl);
}

/* The subscription's pipeline of this turn, made on first use. */
static fc_flush_t *flush_of(fc_sub_t *sub)
{
    if (!sub->flush)
        sub->flush = flush_new(sub);
    return sub->flush;
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return MSM_OK;
    size_t c = *cap ? *cap * 2 : 64;
    while (c < need)
        c *= 2;
    void *a = realloc(*arr, c * elem);
    if (!a)
        return MSM_ERR_NOMEM;
    *arr = a;
    *cap = c;
    return MSM_OK;
}

static int arg(fc_flush_t *fl, const void *data, size_t len)
{
    size_t cap = fl->capargs;
    if (grow((void **)&fl->aoff, &cap, fl->nargs + 1, sizeof(*fl->aoff)) != MSM_OK)
        return MSM_ERR_NOMEM;
    cap = fl->capargs;
    if (grow((void **)&fl->alen, &cap, fl->nargs + 1, sizeof(*fl->alen)) != MSM_OK)
        return MSM_ERR_NOMEM;
    fl->capargs = cap;
    if (msm_buf_reserve(&fl->arena, len + 1) != MSM_OK)
        return MSM_ERR_NOMEM;
    fl->aoff[fl->nargs] = fl->arena.len;
    fl->alen[fl->nargs] = len;
    if (len)
        memcpy(fl->arena.data + fl->arena.len, data, len);
    fl->arena.len += len;
    fl->arena.data[fl->arena.len++] = '\0';
    fl->nargs++;
    return MSM_OK;
}

/* One command of C strings; a binary argument is given as a (pointer, length) pair after
 * a "\x01" marker. @returns MSM_OK or NOMEM (the pipeline is then incomplete: retried). */
static int cmd(fc_flush_t *fl, int argc, const char *const *argv, const size_t *lens)
{
    if (grow((void **)&fl->cmds, &fl->capcmds, fl->ncmds + 1, sizeof(*fl->cmds)) != MSM_OK)
        return MSM_ERR_NOMEM;
    size_t first = fl->nargs;
    for (int i = 0; i < argc; i++) {
        if (arg(fl, argv[i], lens ? lens[i] : strlen(argv[i])) != MSM_OK) {
            fl->nargs = first;
            return MSM_ERR_NOMEM;
        }
    }
    fl->cmds[fl->ncmds++] = (fc_cmd_t){.arg0 = first, .argc = argc};
    return MSM_OK;
}

static int flush_keep_task(fc_flush_t *fl, fc_task_t *t)
{
    if (grow((void **)&fl->done, &fl->capdone, fl->ndone + 1, sizeof(*fl->done)) != MSM_OK)
        return MSM_ERR_NOMEM;
    fl->done[fl->ndone++] = t;
    return MSM_OK;
}

static int flush_keep_ack(fc_flush_t *fl, msm_stream_msg_t *msg)
{
    if (grow((void **)&fl->acks, &fl->capacks, fl->nacks + 1, sizeof(*fl->acks)) != MSM_OK)
        return MSM_ERR_NOMEM;
    fl->acks[fl->nacks++] = msg;
    return MSM_OK;
}

/* ---- JSON pieces (no allocation per record) ---- */

/* Appends @p s as a JSON string to @p out (at most @p max bytes of it). */
static void json_str(msm_buf_t *out, const char *s, size_t max)
{
    msm_json_append_string(out, s, strnlen(s, max));
}

static void append_raw(msm_buf_t *out, const char *s, size_t n)
{
    if (msm_buf_reserve(out, n) == MSM_OK) {
        memcpy(out->data + out->len, s, n);
        out->len += n;
    }
}

#define append_lit(out, lit) append_raw((out), (lit), sizeof(lit) - 1)

/* A decimal integer without printf: task records are written for every task. */
static void append_i64(msm_buf_t *out, int64_t v)
{
    char buf[24], *p = buf + sizeof(buf);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    append_raw(out, p, (size_t)(buf + sizeof(buf) - p));
}

static int has_text(const char *s)
{
    return s && *s;
}

static const char *state_name(const fc_task_t *t)
{
    switch (t->state) {
    case FC_TASK_PENDING:
        return "pending";
    case FC_TASK_RUNNING:
        return "running";
    default:
        return t->result ? t->result : "running";
    }
}

/* ---- task records ---- */

void fc_flush_record(fc_sub_t *sub, fc_task_t *t)
{
    fc_flush_t *fl = flush_of(sub);
    if (!fl)
        return;
    static msm_buf_t json; /* the loop's thread only */
    const Msm__V1__Task *task = t->t;
    json.len = 0;
    /* Absent fields are the API's defaults (null, []) and the event id is the hash field:
     * the frontend fills them in. */
    const char *state = state_name(t);
    append_lit(&json, "{\"state\":\"");
    append_raw(&json, state, strlen(state));
    append_lit(&json, "\",\"attempts\":");
    append_i64(&json, task->attempt);
    if (t->next_attempt_ms > 0 && t->result && strcmp(t->result, "retrying") == 0) {
        append_lit(&json, ",\"next_attempt_at\":");
        append_i64(&json, t->next_attempt_ms);
    }
    if (t->parked)
        append_lit(&json, ",\"parked\":true"); /* behind its held ordering key */
    if (has_text(task->last_error)) {
        append_lit(&json, ",\"last_error\":");
        json_str(&json, task->last_error, ERROR_MAX);
    }
    append_lit(&json, ",\"updated_ms\":");
    append_i64(&json, fc_now_ms());
    if (has_text(task->history)) {
        append_lit(&json, ",\"history\":");
        append_raw(&json, task->history, strlen(task->history));
    }
    append_lit(&json, "}");
    /* The tasks of a turn mostly share their publish second: its key is made once. */
    long long bucket = msm_task_bucket(task->event->id);
    if (!sub->rec_key_len || bucket != sub->rec_key_bucket) {
        int n = msm_redis_key(sub->fc->env.redis, sub->rec_key, sizeof(sub->rec_key),
                              MSM_KEY_TASK, sub->name, bucket);
        sub->rec_key_len = n > 0 ? n : 0;
        sub->rec_key_bucket = bucket;
    }
    const char *key = sub->rec_key;
    int klen = sub->rec_key_len ? sub->rec_key_len : -1;
    size_t idlen = strlen(task->event->id);
    if (klen < 0 ||
        grow((void **)&fl->rec_off, &fl->caprecs, 4 * (fl->nrecs + 1), sizeof(*fl->rec_off)) !=
            MSM_OK ||
        msm_buf_reserve(&fl->rec_text, (size_t)klen + idlen + json.len) != MSM_OK)
        return; /* out of memory: the record is only late (written at its next change) */
    size_t *off = &fl->rec_off[4 * fl->nrecs++];
    off[0] = fl->rec_text.len;
    append_raw(&fl->rec_text, key, (size_t)klen);
    off[1] = fl->rec_text.len;
    append_raw(&fl->rec_text, task->event->id, idlen);
    off[2] = fl->rec_text.len;
    append_raw(&fl->rec_text, (const char *)json.data, json.len);
    off[3] = fl->rec_text.len;
}

/* The turn's records: per run of records in one bucket, HSET <bucket> id json … and
 * PEXPIRE <bucket> retention (the bucket outlives its last write by the retention). */
static void records_to_cmds(fc_sub_t *sub, fc_flush_t *fl)
{
    const char *text = (const char *)fl->rec_text.data;
    char px[24];
    snprintf(px, sizeof(px), "%" PRId64, sub->retention_ms);
    size_t i = 0;
    while (i < fl->nrecs) {
        const size_t *first = &fl->rec_off[4 * i];
        size_t klen = first[1] - first[0], j = i;
        while (j < fl->nrecs) {
            const size_t *o = &fl->rec_off[4 * j];
            if (o[1] - o[0] != klen || memcmp(text + o[0], text + first[0], klen) != 0)
                break;
            j++;
        }
        size_t argc = 2 + 2 * (j - i);
        const char **argv = malloc(argc * sizeof(*argv));
        size_t *lens = malloc(argc * sizeof(*lens));
        if (argv && lens) {
            argv[0] = "HSET";
            lens[0] = 4;
            argv[1] = text + first[0];
            lens[1] = klen;
            for (size_t k = i; k < j; k++) {
                const size_t *o = &fl->rec_off[4 * k];
                argv[2 + 2 * (k - i)] = text + o[1];
                lens[2 + 2 * (k - i)] = o[2] - o[1];
                argv[3 + 2 * (k - i)] = text + o[2];
                lens[3 + 2 * (k - i)] = o[3] - o[2];
            }
            const char *expire[] = {"PEXPIRE", text + first[0], px};
            const size_t elens[] = {7, klen, strlen(px)};
            cmd(fl, (int)argc, argv, lens);
            cmd(fl, 3, expire, elens);
        }
        free(argv);
        free(lens);
        i = j;
    }
    fl->nrecs = 0;
    fl->rec_text.len = 0;
}

/* ---- history and text fields of a Task ---- */

static void set_text(char **field, char *value)
{
    if (!value)
        return;
    if (*field && *field != protobuf_c_empty_string)
        free(*field);
    *field = value;
}

/* Adds one attempt to the Task's JSON history (the latest HISTORY_MAX are kept). */
static void history_add(Msm__V1__Task *task, const char *result, int http_status,
                        const char *error, int64_t latency_ms)
{
    json_t *h = has_text(task->history) ? json_loads(task->history, 0, NULL) : NULL;
    if (!json_is_array(h)) {
        json_decref(h);
        h = json_array();
    }
    json_array_append_new(h, json_pack("{s:i,s:I,s:s,s:i,s:s,s:I}", "attempt", task->attempt, "at",
                                       (json_int_t)fc_now_ms(), "result", result, "http_status",
                                       http_status, "error", error ? error : "", "latency_ms",
                                       (json_int_t)latency_ms));
    while (json_array_size(h) > HISTORY_MAX)
        json_array_remove(h, 0);
    set_text(&task->history, json_dumps(h, JSON_COMPACT));
    json_decref(h);
}

/* ---- outcomes ---- */

/* The packed Task into a store: HSET <hash> id task, then ZADD <zset> score id. */
static void store_put(fc_flush_t *fl, const char *hash, const char *zset, fc_task_t *t,
                      int64_t score)
{
    msm_buf_t buf = {0};
    if (msm_pb_pack(&t->t->base, &buf) != MSM_OK) {
        msm_buf_deinit(&buf);
        fl->failed = 1;
        return;
    }
    const char *id = fc_task_id(t);
    char sc[24];
    snprintf(sc, sizeof(sc), "%" PRId64, score);
    const char *hset[] = {"HSET", hash, id, (const char *)buf.data};
    const size_t hlens[] = {4, strlen(hash), strlen(id), buf.len};
    const char *zadd[] = {"ZADD", zset, sc, id};
    cmd(fl, 4, hset, hlens);
    cmd(fl, 4, zadd, NULL);
    msm_buf_deinit(&buf);
}

/* Removes a task that came from the retry store from it: ZREM first, then HDEL. */
static void retry_forget(fc_flush_t *fl, fc_sub_t *sub, fc_task_t *t)
{
    if (t->rec)
        return;
    const char *zrem[] = {"ZREM", sub->k_retry, fc_task_id(t)};
    const char *hdel[] = {"HDEL", sub->k_retry_tasks, fc_task_id(t)};
    cmd(fl, 3, zrem, NULL);
    cmd(fl, 3, hdel, NULL);
}

static void settle(fc_sub_t *sub, fc_flush_t *fl, fc_task_t *t, const char *result)
{
    fc_running_remove(sub, t);
    t->state = FC_TASK_SETTLING;
    t->result = result;
    fc_task_dirty(sub, t);
    if (flush_keep_task(fl, t) != MSM_OK)
        fl->failed = 1; /* never settled: the record comes back after a restart */
}

/* A failed attempt: into the retry store with its delay, or dead. */
static void settle_failure(fc_sub_t *sub, fc_task_t *t, fc_kind_t kind, int http_status,
                           const char *error, int64_t latency_ms, int64_t retry_after_ms)
{
    fc_flush_t *fl = flush_of(sub);
    Msm__V1__Task *task = fl ? fc_task_own(t) : NULL;
    if (!task)
        return; /* stays running: the lease brings it back */
    char text[ERROR_MAX];
    if (has_text(error))
        snprintf(text, sizeof(text), "%s", error);
    else if (http_status)
        snprintf(text, sizeof(text), "HTTP %d", http_status);
    else
        snprintf(text, sizeof(text), "%s", fc_kind_names[kind]);
    history_add(task, fc_kind_names[kind], http_status, text, latency_ms);
    set_text(&task->last_error, strdup(text));
    sub->c_failed++;
    int64_t now = fc_now_ms();
    if (kind == FC_KIND_FATAL || task->attempt >= sub->max_attempts) {
        task->state = MSM__V1__TASK_STATE__TASK_STATE_DEAD;
        task->next_attempt_at_ms = 0;
        if (!fc_order_holds(t))
            retry_forget(fl, sub, t);
        store_put(fl, sub->k_dlq_tasks, sub->k_dlq, t, now);
        sub->c_dead++;
        msm_counter_inc(sub->m_dead);
        fc_lifecycle_emit(sub, t, "dead");
        settle(sub, fl, t, "dead");
        return;
    }
    int64_t due = now + fc_retry_delay_ms(sub->min_backoff_ms, sub->max_backoff_ms,
                                          task->attempt, retry_after_ms);
    task->state = MSM__V1__TASK_STATE__TASK_STATE_RETRYING;
    task->next_attempt_at_ms = due;
    t->next_attempt_ms = due;
    store_put(fl, sub->k_retry_tasks, sub->k_retry, t, due);
    fc_order_failed(sub, t, 1); /* holds its ordering key; what waits behind it is parked */
    msm_counter_inc(sub->m_retries);
    fc_lifecycle_emit(sub, t, "retrying");
    settle(sub, fl, t, "retrying");
    fc_sub_arm_retry(sub, due);
}

static fc_kind_t kind_of(Msm__V1__OutcomeKind k)
{
    switch (k) {
    case MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS:
        return FC_KIND_SUCCESS;
    case MSM__V1__OUTCOME_KIND__OUTCOME_KIND_FATAL:
        return FC_KIND_FATAL;
    case MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED:
        return FC_KIND_NOT_PUSHED;
    default:
        /* RETRIABLE, and anything unknown: retrying is the safe reading. */
        return FC_KIND_RETRIABLE;
    }
}

/* The endpoint's answer moves the subscription's pace: 429, a 503 with Retry-After and no
 * answer at all (timeout, reset, refused) are congestion; a Retry-After holds the whole
 * subscription. A plain 503 is how a handler asks for a retry (the SDK's MSM_RETRY): one
 * event's trouble, not the endpoint's load, so it leaves the limit alone (API.md). */
static void pace_observe(fc_sub_t *sub, fc_kind_t kind, const Msm__V1__DeliveryOutcome *o)
{
    if (kind == FC_KIND_SUCCESS) {
        fc_pace_success(&sub->pace, o->latency_ms, sub->nrunning);
        return;
    }
    if (kind != FC_KIND_RETRIABLE)
        return;
    int congested = o->http_status == 429 || o->http_status == 0 ||
                    (o->http_status == 503 && o->retry_after_ms > 0);
    if (!congested && o->retry_after_ms <= 0)
        return;
    int64_t now = fc_now_ms();
    int64_t held = sub->pace.hold_until_ms;
    if (fc_pace_congestion(&sub->pace, now, o->retry_after_ms, sub->max_backoff_ms)) {
        msm_counter_inc(sub->m_limit_drops);
        msm_log(MSM_LOG_DEBUG, FC_FACILITY, "subscription %s: concurrency limit %d (HTTP %d)",
                sub->name, fc_pace_limit(&sub->pace), (int)o->http_status);
    }
    if (sub->pace.hold_until_ms > held && sub->pace.hold_until_ms > now + 1000)
        msm_log(MSM_LOG_INFO, FC_FACILITY, "subscription %s: held %" PRId64 " ms (Retry-After)",
                sub->name, sub->pace.hold_until_ms - now);
}

static void apply(fc_sub_t *sub, fc_flush_t *fl, const Msm__V1__DeliveryOutcome *o)
{
    fc_task_t *t = o->event_id ? fc_map_find(sub, o->event_id) : NULL;
    if (!t || t->state != FC_TASK_RUNNING || t->t->attempt != o->attempt) {
        msm_counter_inc(sub->m_stale);
        return;
    }
    fc_kind_t kind = kind_of(o->kind);
    msm_counter_inc(sub->m_outcomes[kind]);
    pace_observe(sub, kind, o);
    switch (kind) {
    case FC_KIND_NOT_PUSHED:
        t->t->attempt--; /* never pushed: no attempt spent */
        fc_sub_requeue(sub, t);
        /* The router may know a change we do not yet (a pause): look now, not at the poll. */
        msm_registry_refresh(sub->fc->registry);
        break;
    case FC_KIND_SUCCESS:
        if (!fc_order_holds(t)) /* a holder leaves the retry store with its key's advance */
            retry_forget(fl, sub, t);
        sub->c_succeeded++;
        settle(sub, fl, t, "succeeded");
        break;
    default:
        settle_failure(sub, t, kind, o->http_status, o->error, o->latency_ms,
                          o->retry_after_ms);
        break;
    }
}

void fc_on_status_batch(msm_consumer_t *c, msm_stream_msg_t *const *msgs, size_t n, void *opaque)
{
    fc_sub_t *sub = opaque;
    if (!sub->owner || sub->removed || c != sub->status)
        return; /* unacknowledged: the next owner reads them again */
    fc_flush_t *fl = flush_of(sub);
    if (!fl)
        return;
    for (size_t i = 0; i < n; i++) {
        msm_arena_t *arena = NULL;
        Msm__V1__OutcomeBatch *b =
            msm_outcome_batch_unpack_in(&arena, msgs[i]->value, msgs[i]->value_len);
        if (!b) {
            msm_arena_free(arena);
            msm_log(MSM_LOG_WARN, FC_FACILITY,
                    "subscription %s: dropping status record %s: not an outcome batch", sub->name,
                    msgs[i]->position);
            msm_consumer_ack(c, msgs[i]);
            continue;
        }
        for (size_t k = 0; k < b->n_outcomes; k++)
            apply(sub, fl, b->outcomes[k]);
        msm_arena_free(arena);
        if (flush_keep_ack(fl, msgs[i]) != MSM_OK)
            fl->failed = 1;
    }
}

/* ---- stats ---- */

void fc_stats_gauges(fc_sub_t *sub)
{
    int counters = sub->c_succeeded || sub->c_failed || sub->c_dead || sub->c_done;
    int gauges = !sub->stats_written || sub->w_pending != sub->npending + sub->nwaiting ||
                 sub->w_running != sub->nrunning || sub->w_limit != fc_pace_limit(&sub->pace);
    if (!counters && !gauges)
        return;
    fc_flush_t *fl = flush_of(sub);
    if (!fl)
        return;
    const int64_t deltas[] = {sub->c_succeeded, sub->c_failed, sub->c_dead, sub->c_done};
    const char *const fields[] = {"succeeded", "failed_attempts", "dead", "done"};
    for (size_t i = 0; i < 4; i++) {
        if (!deltas[i])
            continue;
        char d[24];
        snprintf(d, sizeof(d), "%" PRId64, deltas[i]);
        const char *argv[] = {"HINCRBY", sub->k_stats, fields[i], d};
        cmd(fl, 4, argv, NULL);
    }
    sub->c_succeeded = sub->c_failed = sub->c_dead = sub->c_done = 0;
    if (!gauges)
        return;
    char pending[24], running[24], limit[24], now[24];
    snprintf(pending, sizeof(pending), "%zu", sub->npending + sub->nwaiting);
    snprintf(running, sizeof(running), "%zu", sub->nrunning);
    snprintf(limit, sizeof(limit), "%d", fc_pace_limit(&sub->pace));
    snprintf(now, sizeof(now), "%" PRId64, fc_now_ms());
    const char *argv[] = {"HSET",    sub->k_stats, "pending",           pending, "running",
                          running,   "concurrency_limit", limit,        "updated_ms", now};
    cmd(fl, 10, argv, NULL);
    sub->w_pending = sub->npending + sub->nwaiting;
    sub->w_running = sub->nrunning;
    sub->w_limit = fc_pace_limit(&sub->pace);
    sub->stats_written = 1;
}

/* ---- sending ---- */

static void flush_send_cmds(fc_flush_t *fl);

static void on_flush_retry(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    flush_send_cmds(opaque);
}

/* Every command answered OK: the settled tasks leave memory, the status records are
 * acknowledged. */
static void flush_complete(fc_flush_t *fl)
{
    fc_sub_t *sub = fl->sub;
    for (size_t i = 0; i < fl->ndone; i++) {
        sub->c_done += fl->done[i]->rec != NULL; /* a retry came from the store, not ready */
        fc_task_drop(sub, fl->done[i], 1);
    }
    for (size_t i = 0; i < fl->nacks; i++) {
        if (sub->status)
            msm_consumer_ack(sub->status, fl->acks[i]);
    }
    flush_free(fl);
}

static void on_cmd_reply(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_cmd_t *c = opaque;
    fc_flush_t *fl = c->fl;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        if (!fl->failed && fl->fc)
            msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: write failed: %s (retrying)",
                    fl->sub ? fl->sub->name : "?", why);
        fl->failed = 1;
    } else {
        c->done = 1;
    }
    if (--fl->outstanding)
        return;
    if (!fl->fc) {
        flush_free(fl);
        return;
    }
    if (fl->failed) {
        fl->attempts++;
        uint64_t delay = msm_backoff_cap_ms(fl->attempts, FLUSH_RETRY_MS, 5000);
        msm_loop_timer_start(fl->fc->env.loop, &fl->retry_timer, delay, on_flush_retry, fl);
        return;
    }
    flush_complete(fl);
}

static void flush_send_cmds(fc_flush_t *fl)
{
    flowcontrol_t *fc = fl->fc;
    fl->failed = 0;
    const char *stack_argv[16];
    size_t stack_lens[16];
    for (size_t i = 0; i < fl->ncmds; i++) {
        fc_cmd_t *c = &fl->cmds[i];
        if (c->done)
            continue;
        c->fl = fl;
        const char **argv = stack_argv;
        size_t *lens = stack_lens;
        if (c->argc > 16) {
            argv = malloc((size_t)c->argc * sizeof(*argv));
            lens = malloc((size_t)c->argc * sizeof(*lens));
        }
        int rc = argv && lens ? MSM_OK : MSM_ERR_NOMEM;
        for (int a = 0; rc == MSM_OK && a < c->argc; a++) {
            argv[a] = (const char *)fl->arena.data + fl->aoff[c->arg0 + (size_t)a];
            lens[a] = fl->alen[c->arg0 + (size_t)a];
        }
        if (rc == MSM_OK)
            rc = msm_redis_command_argv(fc->env.redis, on_cmd_reply, c, c->argc, argv, lens);
        if (argv != stack_argv)
            free((void *)argv);
        if (lens != stack_lens)
            free(lens);
        if (rc == MSM_OK)
            fl->outstanding++;
        else
            fl->failed = 1;
    }
    if (fl->outstanding)
        return;
    if (fl->failed) {
        fl->attempts++;
        msm_loop_timer_start(fc->env.loop, &fl->retry_timer, FLUSH_RETRY_MS, on_flush_retry, fl);
        return;
    }
    flush_complete(fl);
}

void fc_flush_send(fc_sub_t *sub)
{
    fc_flush_t *fl = sub->flush;
    if (!fl)
        return;
    sub->flush = NULL;
    flowcontrol_t *fc = sub->fc;
    fl->next = fc->flushes;
    if (fc->flushes)
        fc->flushes->prev = fl;
    fc->flushes = fl;
    records_to_cmds(sub, fl);
    int incomplete = fl->failed; /* a command could not even be built: retry as a whole */
    if (incomplete) {
        msm_log(MSM_LOG_ERROR, FC_FACILITY,
                "subscription %s: out of memory building writes: its records stay unsettled",
                sub->name);
        fl->ndone = 0;
        fl->nacks = 0;
    }
    flush_send_cmds(fl);
}

void fc_flushes_orphan_all(flowcontrol_t *fc)
{
    fc_sub_t *lists[] = {fc->subs, fc->retired};
    for (size_t i = 0; i < 2; i++) {
        for (fc_sub_t *s = lists[i], *next; s; s = next) {
            next = s->next; /* a retired one may be freed with its flush's reference */
            if (s->flush) {
                fc_flush_t *fl = s->flush;
                s->flush = NULL;
                fl->fc = NULL;
                flush_free(fl);
            }
        }
    }
    fc_flush_t *fl = fc->flushes;
    while (fl) {
        fc_flush_t *next = fl->next;
        msm_loop_timer_stop(fc->env.loop, &fl->retry_timer);
        fl->next = fl->prev = NULL;
        fl->ndone = fl->nacks = 0;
        fl->fc = NULL;
        fl->sub = NULL; /* destroyed right after, whatever its count */
        if (!fl->outstanding)
            flush_free(fl);
        fl = next;
    }
    fc->flushes = NULL;
}

/* ---- ordering keys (order.c decides, these write) ---- */

/* KEYS: held, parked, parked tasks, retry, retry tasks. ARGV: key, id, packed task, now.
 * Parks the task behind its held key; if the key moved on meanwhile (a write of an earlier
 * turn came late), the task holds it itself, due at once: never parked behind nobody. */
static const char PARK_LUA[] =
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then\n"
    "  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])\n"
    "  redis.call('ZADD', KEYS[2], 0, string.format('%04x', #ARGV[1]) .. ':' .. ARGV[1] .. ':' .. ARGV[2])\n"
    "  return 1\n"
    "end\n"
    "redis.call('HSET', KEYS[5], ARGV[2], ARGV[3])\n"
    "redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])\n"
    "redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({event_id = ARGV[2], attempts = 0,\n"
    "                                                  since_ms = tonumber(ARGV[4])}))\n"
    "return 2\n";

void fc_flush_park(fc_sub_t *sub, fc_task_t *t)
{
    fc_flush_t *fl = flush_of(sub);
    msm_buf_t buf = {0};
    if (!fl || msm_pb_pack(&t->t->base, &buf) != MSM_OK) {
        msm_buf_deinit(&buf);
        if (fl)
            fl->failed = 1; /* not settled: its record comes back after a restart */
        return;
    }
    char now[24];
    snprintf(now, sizeof(now), "%" PRId64, fc_now_ms());
    const char *key = t->t->event->ordering_key, *id = fc_task_id(t);
    const char *argv[] = {"EVAL", PARK_LUA, "5", sub->k_held, sub->k_parked, sub->k_parked_tasks,
                          sub->k_retry, sub->k_retry_tasks, key, id, (const char *)buf.data, now};
    size_t lens[12];
    for (size_t i = 0; i < 12; i++) /* the packed task (10) is binary: its length is known */
        lens[i] = i == 10 ? buf.len : strlen(argv[i]);
    cmd(fl, 12, argv, lens);
    msm_buf_deinit(&buf);
    t->parked = 1;
    t->state = FC_TASK_SETTLING;
    t->result = "pending";
    fc_task_dirty(sub, t);
    if (flush_keep_task(fl, t) != MSM_OK)
        fl->failed = 1;
    /* A key that moved on meanwhile makes this one due at once: look then. */
    fc_sub_arm_retry(sub, fc_now_ms() + 1000);
}

void fc_flush_hold(fc_sub_t *sub, const fc_key_t *k)
{
    fc_flush_t *fl = flush_of(sub);
    if (!fl)
        return;
    static msm_buf_t json;
    json.len = 0;
    append_lit(&json, "{\"event_id\":");
    json_str(&json, k->holder ? k->holder : "", MSM_NAME_MAX);
    append_lit(&json, ",\"attempts\":");
    append_i64(&json, k->attempts);
    append_lit(&json, ",\"since_ms\":");
    append_i64(&json, k->since_ms);
    append_lit(&json, "}");
    const char *argv[] = {"HSET", sub->k_held, k->name, (const char *)json.data};
    const size_t lens[] = {4, strlen(sub->k_held), strlen(k->name), json.len};
    cmd(fl, 4, argv, lens);
}

/* ---- claiming due retries ---- */

/* KEYS[1] retry zset, KEYS[2] retry tasks. ARGV[1] now, ARGV[2] limit, ARGV[3] claim lease
 * deadline. Due ids move to the deadline (no other claimer takes them meanwhile; a claimer
 * that dies leaves them due again then). Returns {{task, ...}, next due or -1}. */
static const char CLAIM_LUA[] =
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local t = redis.call('HGET', KEYS[2], id)\n"
    "  if t then\n"
    "    redis.call('ZADD', KEYS[1], ARGV[3], id)\n"
    "    out[#out + 1] = t\n"
    "  else\n"
    "    redis.call('ZREM', KEYS[1], id)\n"
    "  end\n"
    "end\n"
    "local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "return {out, tonumber(nxt[2]) or -1}\n";

static msm_redis_script_t *claim_script; /* process-wide, never freed */

static void on_claimed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_sub_t *sub = fc_call_take(opaque);
    if (!sub)
        return;
    sub->claiming = 0;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
                 reply->element[0]->type != REDIS_REPLY_ARRAY))
        why = "unexpected reply";
    if (why) {
        msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: claiming retries: %s", sub->name,
                why);
        fc_sub_arm_retry(sub, fc_now_ms() + FLUSH_RETRY_MS);
        fc_sub_release(sub);
        return;
    }
    const redisReply *tasks = reply->element[0];
    size_t n = tasks->elements;
    const void **data = n ? calloc(n, sizeof(*data)) : NULL;
    size_t *lens = n ? calloc(n, sizeof(*lens)) : NULL;
    size_t k = 0;
    for (size_t i = 0; data && lens && i < n; i++) {
        if (tasks->element[i]->type != REDIS_REPLY_STRING)
            continue;
        data[k] = tasks->element[i]->str;
        lens[k++] = tasks->element[i]->len;
    }
    fc_sub_take_retries(sub, data, lens, k);
    free(data);
    free(lens);
    long long next = msm_redis_reply_int(reply->element[1], -1);
    if (n >= CLAIM_BATCH)
        fc_sub_arm_retry(sub, 1); /* more may be due */
    else if (next >= 0)
        fc_sub_arm_retry(sub, next);
    fc_sub_release(sub);
}

void fc_retry_claim(fc_sub_t *sub)
{
    if (!sub->owner || sub->removed || sub->claiming)
        return;
    if (!claim_script && !(claim_script = msm_redis_script_new(CLAIM_LUA)))
        return;
    int64_t now = fc_now_ms();
    char snow[24], limit[24], lease[24];
    snprintf(snow, sizeof(snow), "%" PRId64, now);
    snprintf(limit, sizeof(limit), "%d", CLAIM_BATCH);
    snprintf(lease, sizeof(lease), "%" PRId64,
             now + sub->timeout_ms + sub->fc->conf.lease_grace_ms + sub->fc->conf.owner_lease_ms);
    const char *argv[] = {sub->k_retry, sub->k_retry_tasks, snow, limit, lease};
    fc_call_t *c = fc_call_new(sub);
    if (!c || msm_redis_eval(sub->fc->env.redis, claim_script, on_claimed, c, 2, 5, argv, NULL) !=
                  MSM_OK) {
        if (c) {
            fc_sub_release(sub);
            fc_call_free(c);
        }
        fc_sub_arm_retry(sub, now + FLUSH_RETRY_MS);
        return;
    }
    sub->claiming = 1;
}
