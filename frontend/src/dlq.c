/* SPDX-License-Identifier: MIT */
/* A subscription's dead-letter queue (docs/pipeline.md): sub:{s}:dlq (id by time of death)
 * and sub:{s}:dlq:tasks (id → packed Task), written by flowcontrol.
 *
 * GET .../dlq?limit=N lists the newest deaths. POST .../dlq:replay moves dead tasks back
 * into the pipeline in bounded pages: each page's tasks (attempt 0, PENDING, history kept)
 * go to ready.<sub> as ONE msm.v1.TaskBatch record, and only once that record is durable
 * are they removed from the DLQ and their task records reset to pending. A failure between
 * the two leaves them in the DLQ as well: replayed again later, never lost. */
#include "tasks_int.h"

#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC                 "tasks"
#define DLQ_LIMIT_DEF       100
#define DLQ_LIMIT_MAX       1000
#define REPLAY_IDS_MAX      10000
#define REPLAY_PAGE         500                /* tasks read per page */
#define REPLAY_RECORD_BYTES ((size_t)1 << 20)  /* a page's record stops growing here */
#define RETENTION_DEF_MS    3600000

/* KEYS: dlq, dlq:tasks; ARGV: limit. Newest death first: {id, time of death, packed, ...}. */
static const char DLQ_LIST_LUA[] =
    "local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')\n"
    "local out = {}\n"
    "for i = 1, #ids, 2 do\n"
    "  out[#out + 1] = ids[i]\n"
    "  out[#out + 1] = ids[i + 1]\n"
    "  out[#out + 1] = redis.call('HGET', KEYS[2], ids[i])\n"
    "end\n"
    "return out\n";

/* KEYS: dlq, dlq:tasks; ARGV: the latest time of death ('' = by ids), then either the
 * offset and page size, or the ids. {id, packed Task or false when not dead, ...}. */
static const char REPLAY_READ_LUA[] =
    "local ids = {}\n"
    "if ARGV[1] ~= '' then\n"
    "  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT',"
    " tonumber(ARGV[2]), tonumber(ARGV[3]))\n"
    "else\n"
    "  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end\n"
    "end\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  out[#out + 1] = id\n"
    "  out[#out + 1] = redis.call('ZSCORE', KEYS[1], id) and redis.call('HGET', KEYS[2], id)\n"
    "end\n"
    "return out\n";

/* KEYS: dlq, dlq:tasks, then each task's record hash; ARGV: retention ms, then (id, task
 * record) pairs: out of the DLQ, the record reset (its hash outlives it by the retention). */
static const char REPLAY_DONE_LUA[] =
    "local n = #KEYS - 2\n"
    "for i = 1, n do\n"
    "  local id = ARGV[2 * i]\n"
    "  redis.call('ZREM', KEYS[1], id)\n"
    "  redis.call('HDEL', KEYS[2], id)\n"
    "  redis.call('HSET', KEYS[2 + i], id, ARGV[2 * i + 1])\n"
    "  redis.call('PEXPIRE', KEYS[2 + i], ARGV[1])\n"
    "end\n"
    "return n\n";

int fe_dlq_scripts(fe_t *fe)
{
    fe->fe_dlq_list = msm_redis_script_new(DLQ_LIST_LUA);
    fe->fe_replay_read = msm_redis_script_new(REPLAY_READ_LUA);
    fe->fe_replay_done = msm_redis_script_new(REPLAY_DONE_LUA);
    return fe->fe_dlq_list && fe->fe_replay_read && fe->fe_replay_done ? MSM_OK : MSM_ERR_NOMEM;
}

/* ---- GET /v1/subscriptions/{name}/dlq?limit=N ---- */

static void on_dlq(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements % 3 != 0))
        why = "unexpected dlq reply";
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    json_t *tasks = json_array();
    for (size_t i = 0; tasks && i + 2 < reply->elements; i += 3) {
        const redisReply *packed = reply->element[i + 2];
        json_t *t = packed->type == REDIS_REPLY_STRING
                        ? fe_task_from_packed(packed->str, packed->len, "dead", 0)
                        : NULL;
        if (!t) /* an id without its task is mid-write or half-removed: nothing to show */
            continue;
        json_object_set_new(t, "died_at",
                            fe_time_json(msm_redis_reply_int(reply->element[i + 1], 0)));
        json_array_append_new(tasks, t);
    }
    fe_call_json(&sc->base, 200, json_pack("{s:o*}", "tasks", tasks));
}

static void dlq_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char dlq[TASKS_KEY_MAX], hash[TASKS_KEY_MAX], limit[24];
    SUB_KEY(sc, dlq, MSM_KEY_DLQ);
    SUB_KEY(sc, hash, MSM_KEY_DLQ_TASKS);
    snprintf(limit, sizeof(limit), "%ld", sc->limit);
    const char *argv[] = {dlq, hash, limit};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_dlq_list, on_dlq, sc, 2, 3, argv, NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

static void dlq_list(msm_http_req_t *req, void *opaque)
{
    long limit;
    if (fe_query_limit(req, DLQ_LIMIT_DEF, DLQ_LIMIT_MAX, &limit) != 0)
        return;
    sub_call_t *sc = fe_sub_call_start(opaque, req, dlq_next);
    if (!sc)
        return;
    sc->limit = limit;
    fe_sub_call_go(sc);
}

/* ---- POST /v1/subscriptions/{name}/dlq:replay ---- */

static void replay_page(sub_call_t *sc);

static void replay_answer(sub_call_t *sc)
{
    if (sc->replayed > 0)
        msm_log(MSM_LOG_INFO, FAC, "subscription %s: %" PRId64 " dead tasks replayed", sc->name,
                sc->replayed);
    fe_call_json(&sc->base, 200, json_pack("{s:I}", "replayed", (json_int_t)sc->replayed));
}

/* A failure after some pages went through says how many did. */
static void replay_fail(sub_call_t *sc, const char *why)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s (%" PRId64 " tasks were replayed before)",
             why ? why : "unknown error", sc->replayed);
    fe_call_unavailable(&sc->base, msg);
}

static void on_replay_done(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        replay_fail(sc, why);
        return;
    }
    sc->replayed += (int64_t)json_array_size(sc->page_ids);
    json_array_clear(sc->page_ids);
    json_array_clear(sc->page_records);
    if (!fe_call_aborted(&sc->base))
        replay_page(sc);
}

/* The page's record is durable in ready.<sub>: take its tasks out of the DLQ. */
static void on_replay_appended(msm_err_t err, const char *reason, void *opaque)
{
    sub_call_t *sc = opaque;
    if (err != MSM_OK) {
        replay_fail(sc, reason ? reason : msm_err_str(err));
        return;
    }
    if (fe_call_aborted(&sc->base))
        return;
    fe_t *fe = sc->base.fe;
    size_t n = json_array_size(sc->page_ids);
    msm_sub_count_enqueued(fe->fe_deps.redis, sc->name, n);
    char dlq[TASKS_KEY_MAX], hash[TASKS_KEY_MAX], retention[24];
    SUB_KEY(sc, dlq, MSM_KEY_DLQ);
    SUB_KEY(sc, hash, MSM_KEY_DLQ_TASKS);
    json_int_t keep = json_integer_value(json_object_get(sc->sub, "task_retention_ms"));
    snprintf(retention, sizeof(retention), "%" JSON_INTEGER_FORMAT,
             keep > 0 ? keep : (json_int_t)RETENTION_DEF_MS);
    const char **argv = calloc(3 + 3 * n, sizeof(*argv));
    char *keys = malloc(n * TASKS_KEY_MAX + 1);
    int rc = MSM_ERR_NOMEM;
    if (argv && keys) {
        argv[0] = dlq;
        argv[1] = hash;
        argv[2 + n] = retention;
        rc = MSM_OK;
        for (size_t i = 0; rc == MSM_OK && i < n; i++) {
            const char *id = json_string_value(json_array_get(sc->page_ids, i));
            char *key = keys + i * TASKS_KEY_MAX;
            if (msm_task_key(fe->fe_deps.redis, key, TASKS_KEY_MAX, sc->name, id) < 0)
                rc = MSM_ERR_TOOLARGE;
            argv[2 + i] = key;
            argv[3 + n + 2 * i] = id;
            argv[4 + n + 2 * i] = json_string_value(json_array_get(sc->page_records, i));
        }
    }
    if (rc == MSM_OK) {
        rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_replay_done, on_replay_done, sc,
                            (int)(2 + n), (int)(3 + 3 * n), argv, NULL);
    }
    free(argv);
    free(keys);
    if (rc != MSM_OK)
        replay_fail(sc, msm_err_str(rc));
}

/* The task record a replayed task starts over with (the API's fields, as flowcontrol
 * writes them), serialised. */
static char *pending_record(const Msm__V1__Task *t, int64_t now_ms)
{
    json_t *h = t->history && *t->history ? json_loads(t->history, 0, NULL) : NULL;
    json_t *o = json_pack("{s:s,s:s,s:i,s:n,s:o,s:I,s:o}", "event_id", t->event->id, "state",
                          "pending", "attempts", 0, "next_attempt_at", "last_error",
                          t->last_error && *t->last_error ? json_string(t->last_error)
                                                          : json_null(),
                          "updated_ms", (json_int_t)now_ms, "history",
                          json_is_array(h) ? json_incref(h) : json_array());
    json_decref(h);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* Adds one dead task to the page (reset to attempt 0, PENDING). */
static int page_add(sub_call_t *sc, Msm__V1__Task *t, int64_t now_ms)
{
    char *record = pending_record(t, now_ms);
    if (!record || json_array_append_new(sc->page_ids, json_string(t->event->id)) != 0 ||
        json_array_append_new(sc->page_records, json_string(record)) != 0) {
        free(record);
        return MSM_ERR_NOMEM;
    }
    free(record);
    t->attempt = 0;
    t->state = MSM__V1__TASK_STATE__TASK_STATE_PENDING;
    t->next_attempt_at_ms = 0;
    t->lease_until_ms = 0;
    return MSM_OK;
}

static void tasks_free(Msm__V1__Task **tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        msm_task_free(tasks[i]);
    free(tasks);
}

/* Packs the page's tasks as one TaskBatch and appends it to ready.<sub>. */
static int page_append(sub_call_t *sc, Msm__V1__Task **tasks, size_t n)
{
    Msm__V1__TaskBatch batch = MSM__V1__TASK_BATCH__INIT;
    batch.tasks = tasks;
    batch.n_tasks = n;
    msm_buf_t buf = {0};
    int rc = msm_pb_pack(&batch.base, &buf);
    if (rc == MSM_OK) {
        char ready[TASKS_KEY_MAX];
        snprintf(ready, sizeof(ready), MSM_STREAM_READY, sc->name);
        /* keyed as the scheduler keys its records: by the first event's ordering key */
        const Msm__V1__Event *ev = tasks[0]->event;
        const char *key = ev->ordering_key && *ev->ordering_key ? ev->ordering_key : ev->key;
        msm_record_t rec = {.key = key && *key ? key : NULL,
                            .key_len = key && *key ? strlen(key) : 0,
                            .value = buf.data,
                            .value_len = buf.len};
        rc = msm_stream_append(sc->base.fe->fe_deps.stream, ready, &rec, 1, on_replay_appended,
                               sc);
    }
    msm_buf_deinit(&buf);
    return rc;
}

/* A page read: the dead tasks in order until the record would pass its size; ids not
 * dead (or without their task) are passed over. */
static void on_replay_read(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0))
        why = "unexpected replay reply";
    if (why) {
        replay_fail(sc, why);
        return;
    }
    size_t n = reply->elements / 2;
    if (n == 0) {
        replay_answer(sc);
        return;
    }
    if (fe_call_aborted(&sc->base))
        return;
    Msm__V1__Task **tasks = calloc(n, sizeof(*tasks));
    size_t ntasks = 0, bytes = 0;
    int64_t now_ms = msm_time_unix_ms();
    int rc = tasks ? MSM_OK : MSM_ERR_NOMEM;
    for (size_t i = 0; rc == MSM_OK && i < n; i++) {
        const redisReply *packed = reply->element[2 * i + 1];
        Msm__V1__Task *t = packed->type == REDIS_REPLY_STRING
                               ? msm_task_unpack(packed->str, packed->len)
                               : NULL;
        if (t && t->event && t->event->id && *t->event->id) {
            if (ntasks > 0 && bytes + packed->len > REPLAY_RECORD_BYTES) {
                msm_task_free(t); /* the next page starts with it */
                break;
            }
            bytes += packed->len;
            rc = page_add(sc, t, now_ms);
            tasks[ntasks++] = t;
            if (sc->ids)
                sc->offset++;
        } else {
            msm_task_free(t);
            sc->offset++; /* by ids: the next id; all: one more to pass over */
        }
    }
    if (rc == MSM_OK && ntasks > 0)
        rc = page_append(sc, tasks, ntasks);
    tasks_free(tasks, ntasks);
    if (rc != MSM_OK)
        replay_fail(sc, msm_err_str(rc));
    else if (ntasks == 0)
        replay_page(sc); /* nothing dead on this page: on to the next */
}

static void replay_page(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    size_t total = json_array_size(sc->ids);
    if (sc->ids && sc->offset >= total) {
        replay_answer(sc);
        return;
    }
    size_t n = sc->ids ? total - sc->offset : 0;
    if (n > REPLAY_PAGE)
        n = REPLAY_PAGE;
    char dlq[TASKS_KEY_MAX], hash[TASKS_KEY_MAX], max[24], offset[24], page[24];
    SUB_KEY(sc, dlq, MSM_KEY_DLQ);
    SUB_KEY(sc, hash, MSM_KEY_DLQ_TASKS);
    snprintf(max, sizeof(max), "%" PRId64, sc->max_dead_ms);
    snprintf(offset, sizeof(offset), "%zu", sc->offset);
    snprintf(page, sizeof(page), "%d", REPLAY_PAGE);
    const char **argv = calloc(5 + n, sizeof(*argv));
    int rc = MSM_ERR_NOMEM;
    if (argv) {
        int argc = 2;
        argv[0] = dlq;
        argv[1] = hash;
        if (sc->ids) {
            argv[argc++] = "";
            for (size_t i = 0; i < n; i++)
                argv[argc++] = json_string_value(json_array_get(sc->ids, sc->offset + i));
        } else {
            argv[argc++] = max;
            argv[argc++] = offset;
            argv[argc++] = page;
        }
        rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_replay_read, on_replay_read, sc, 2, argc,
                            argv, NULL);
    }
    free(argv);
    if (rc != MSM_OK)
        replay_fail(sc, msm_err_str(rc));
}

static void replay_next(sub_call_t *sc)
{
    sc->max_dead_ms = msm_time_unix_ms(); /* "all" = every task dead by now: the pages end */
    sc->page_ids = json_array();
    sc->page_records = json_array();
    if (!sc->page_ids || !sc->page_records) {
        fe_call_error(&sc->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    replay_page(sc);
}

/* {"event_ids":[…]} with ids as strings, each once; absent, empty body or [] = every dead
 * task. */
static int replay_ids(msm_http_req_t *req, json_t **ids_out)
{
    static const char *const known[] = {"event_ids", NULL};
    json_t *body;
    *ids_out = NULL;
    if (fe_parse_body(req, 1, &body) != 0)
        return -1;
    msm_json_err_t e;
    msm_json_err_init(&e);
    json_t *ids = NULL;
    if (body && msm_json_expect_object(&e, body) == MSM_OK) {
        msm_json_check_known(&e, body, known);
        msm_json_get_array(&e, body, "event_ids", MSM_JSON_NULLABLE, &ids);
    }
    if (json_array_size(ids) > REPLAY_IDS_MAX)
        msm_json_err_add(&e, "event_ids", "at most %d ids per request", REPLAY_IDS_MAX);
    json_t *seen = json_object(), *unique = json_array();
    size_t i;
    json_t *id;
    msm_json_path_push_key(&e, "event_ids");
    json_array_foreach(ids, i, id) {
        if (!json_is_string(id) || json_string_length(id) == 0 ||
            json_string_length(id) > EVENT_ID_MAX) {
            msm_json_path_push_index(&e, i);
            msm_json_err_add(&e, NULL, "must be a non-empty string of at most %d bytes",
                             EVENT_ID_MAX);
            msm_json_path_pop(&e);
        } else if (!json_object_get(seen, json_string_value(id))) {
            json_object_set_new(seen, json_string_value(id), json_true());
            json_array_append(unique, id);
        }
    }
    msm_json_path_pop(&e);
    int bad = msm_json_err_count(&e) > 0 || !seen || !unique;
    if (bad)
        msm_http_respond_json(req, 400, msm_json_err_body(&e, NULL));
    else if (json_array_size(unique))
        *ids_out = json_incref(unique);
    json_decref(seen);
    json_decref(unique);
    msm_json_err_deinit(&e);
    json_decref(body);
    return bad ? -1 : 0;
}

static void dlq_replay(msm_http_req_t *req, void *opaque)
{
    json_t *ids;
    if (!msm_name_valid(msm_http_req_param(req, "name"))) {
        fe_not_found(req, "subscription", msm_http_req_param(req, "name"));
        return;
    }
    if (replay_ids(req, &ids) != 0)
        return;
    sub_call_t *sc = fe_sub_call_start(opaque, req, replay_next);
    if (!sc) {
        json_decref(ids);
        return;
    }
    sc->ids = ids;
    fe_sub_call_go(sc);
}

int fe_dlq_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"GET", "/v1/subscriptions/{name}/dlq", dlq_list},
        {"POST", "/v1/subscriptions/{name}/dlq:replay", dlq_replay},
    };
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]),
                                  fe);
}
