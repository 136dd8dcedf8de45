/* SPDX-License-Identifier: MIT */
/* A subscription's delivery state as the other layers keep it (docs/pipeline.md, data plane
 * v2): GET .../stats, GET .../tasks/{event_id} and GET .../tasks?state=S. Each first looks
 * the subscription up (404 when it does not exist), then reads its keys, which share the
 * hash tag {<sub>}: one script per request reads them all in one round trip. The happy
 * path keeps no per-task key but the task record flowcontrol writes; the stores (delayed,
 * retry, DLQ) hold the tasks off it. dlq.c serves the DLQ, listings.c the states listed
 * from the task records. */
#include "tasks_int.h"

#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_LIMIT_DEF 100
#define LIST_LIMIT_MAX 1000

/* KEYS: delayed, retry, dlq, stats, endpoints, canary, canary:report. The store sizes, the
 * stats hash's fields (SC_*), the routers' endpoint reports, the canary's state and the
 * routers' canary reports. */
static const char STATS_LUA[] =
    "return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]),"
    " redis.call('ZCARD', KEYS[3]), redis.call('HMGET', KEYS[4], 'succeeded',"
    " 'failed_attempts', 'pending', 'running', 'concurrency_limit', 'enqueued', 'done'),"
    " redis.call('HVALS', KEYS[5]), redis.call('HGETALL', KEYS[6]),"
    " redis.call('HVALS', KEYS[7])}";

#define REPORT_FRESH_MS 10000 /* a router's endpoint report older than this is ignored */

/* One endpoint as the routers measure it (MSM_KEY_ENDPOINTS): healthy when a router that
 * reported lately may push to it, in flight summed over the routers. Without any fresh
 * report nobody is pushing to it: not healthy, and the reason says so. */
static json_t *endpoint_stats(json_t *url, const json_t *reports)
{
    int64_t now = msm_time_unix_ms();
    int healthy = 0;
    json_int_t in_flight = 0;
    const char *reason = "no router has reported on it in the last 10 s";
    size_t i;
    json_t *r;
    json_array_foreach(reports, i, r) {
        if (!json_equal(json_object_get(r, "url"), url) ||
            now - json_integer_value(json_object_get(r, "updated_ms")) > REPORT_FRESH_MS)
            continue;
        in_flight += json_integer_value(json_object_get(r, "in_flight"));
        if (json_is_true(json_object_get(r, "healthy")))
            healthy = 1;
        else if (json_string_value(json_object_get(r, "reason")))
            reason = json_string_value(json_object_get(r, "reason"));
    }
    json_t *o = json_pack("{s:O,s:b,s:I}", "url", url, "healthy", healthy, "in_flight", in_flight);
    if (o && !healthy)
        json_object_set_new(o, "reason", json_string(reason));
    return o;
}

/* KEYS: task record hash, delayed, delayed:events, dlq:tasks, retry, retry:tasks; ARGV: id.
 * The first place the task is in, in the order of the API's truth: {TG_*, ...}. */
static const char TASK_GET_LUA[] =
    "local t = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if t then return {1, t} end\n"
    "local d = redis.call('ZSCORE', KEYS[2], ARGV[1])\n"
    "if d then return {2, redis.call('HGET', KEYS[3], ARGV[1]), d} end\n"
    "local x = redis.call('HGET', KEYS[4], ARGV[1])\n"
    "if x then return {3, x, '0'} end\n"
    "local y = redis.call('HGET', KEYS[6], ARGV[1])\n"
    "if y then return {4, y, redis.call('ZSCORE', KEYS[5], ARGV[1]) or '0'} end\n"
    "return {0}\n";
enum { TG_NONE, TG_RECORD, TG_DELAYED, TG_DEAD, TG_RETRYING };

/* KEYS: a store's zset and hash; ARGV: limit, cursor score ('' = first page), cursor id.
 * {more (0/1), id, score, packed or false, ...} in score order. A cursor whose task is
 * still in the store continues at its rank; one that left it continues after its score. */
static const char TASK_LIST_LUA[] =
    "local limit = tonumber(ARGV[1])\n"
    "local ids\n"
    "local rank = ARGV[2] ~= '' and redis.call('ZRANK', KEYS[1], ARGV[3])\n"
    "if ARGV[2] == '' then\n"
    "  ids = redis.call('ZRANGE', KEYS[1], 0, limit, 'WITHSCORES')\n"
    "elseif rank and tonumber(redis.call('ZSCORE', KEYS[1], ARGV[3])) == tonumber(ARGV[2]) then\n"
    "  ids = redis.call('ZRANGE', KEYS[1], rank + 1, rank + 1 + limit, 'WITHSCORES')\n"
    "else\n"
    "  ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'WITHSCORES',"
    " 'LIMIT', 0, limit + 1)\n"
    "end\n"
    "local out = {#ids > 2 * limit and 1 or 0}\n"
    "for i = 1, math.min(#ids, 2 * limit), 2 do\n"
    "  out[#out + 1] = ids[i]\n"
    "  out[#out + 1] = ids[i + 1]\n"
    "  out[#out + 1] = redis.call('HGET', KEYS[2], ids[i])\n"
    "end\n"
    "return out\n";

int fe_tasks_scripts(fe_t *fe)
{
    fe->fe_stats = msm_redis_script_new(STATS_LUA);
    fe->fe_task_get = msm_redis_script_new(TASK_GET_LUA);
    fe->fe_task_list = msm_redis_script_new(TASK_LIST_LUA);
    return fe->fe_stats && fe->fe_task_get && fe->fe_task_list && fe_dlq_scripts(fe) == MSM_OK &&
                   fe_listings_scripts(fe) == MSM_OK
               ? MSM_OK
               : MSM_ERR_NOMEM;
}

/* ---- the subscription lookup every endpoint starts with ---- */

static void sub_call_cleanup(fe_call_t *c)
{
    sub_call_t *sc = (sub_call_t *)c;
    free(sc->name);
    free(sc->event_id);
    free(sc->state);
    free(sc->cursor);
    free(sc->walk);
    free(sc->error);
    json_decref(sc->reports);
    json_decref(sc->canary_state);
    json_decref(sc->canary_reports);
    json_decref(sc->sub);
    json_decref(sc->ids);
    json_decref(sc->page_ids);
    json_decref(sc->page_records);
}

static void on_sub_found(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    sc->sub = fe_reply_json(reply);
    if (!json_is_object(sc->sub)) {
        char msg[512];
        snprintf(msg, sizeof(msg), "subscription %s not found", sc->name);
        fe_call_error(&sc->base, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    if (!fe_call_aborted(&sc->base))
        sc->next(sc);
}

sub_call_t *fe_sub_call_start(fe_t *fe, msm_http_req_t *req, sub_next_cb *next)
{
    const char *name = msm_http_req_param(req, "name");
    if (!msm_name_valid(name)) {
        fe_not_found(req, "subscription", name);
        return NULL;
    }
    sub_call_t *sc = fe_call_new(fe, req, sizeof(*sc));
    if (!sc || !(sc->name = strdup(name))) {
        if (sc)
            fe_call_end(&sc->base);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return NULL;
    }
    sc->base.cleanup = sub_call_cleanup;
    sc->next = next;
    return sc;
}

void fe_sub_call_go(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char key[TASKS_KEY_MAX];
    int rc = msm_redis_key(fe->fe_deps.redis, key, sizeof(key), "%s", MSM_KEY_SUBS);
    if (rc >= 0)
        rc = msm_redis_command(fe->fe_deps.redis, on_sub_found, sc, "HGET %s %s", key,
                               sc->name);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

/* ---- task JSON ---- */

json_t *fe_time_json(int64_t ms)
{
    char when[MSM_TIME_RFC3339_SIZE];
    return ms > 0 && msm_time_format(ms, when, sizeof(when)) ? json_string(when) : json_null();
}

/* The history a store keeps as JSON text; [] when there is none. */
static json_t *history_json(const char *text)
{
    json_t *h = text && *text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    if (!json_is_array(h)) {
        json_decref(h);
        h = json_array();
    }
    return h;
}

json_t *fe_task_from_packed(const void *packed, size_t len, const char *state, int64_t next_ms)
{
    Msm__V1__Task *t = msm_task_unpack(packed, len);
    if (!t || !t->event || !t->event->id) {
        msm_task_free(t);
        return NULL;
    }
    json_t *o = json_pack("{s:s,s:s,s:i,s:o,s:o,s:o}", "event_id", t->event->id, "state", state,
                          "attempts", t->attempt, "next_attempt_at", fe_time_json(next_ms),
                          "last_error",
                          t->last_error && *t->last_error ? json_string(t->last_error)
                                                          : json_null(),
                          "history", history_json(t->history));
    if (o)
        json_object_set_new(o, "event", msm_event_to_json(t->event));
    msm_task_free(t);
    return o;
}

/* A delayed event: not attempted yet, due at @p deliver_ms. */
static json_t *task_from_delayed(const char *id, const redisReply *packed, int64_t deliver_ms)
{
    json_t *o = json_pack("{s:s,s:s,s:i,s:o,s:n,s:[]}", "event_id", id, "state", "delayed",
                          "attempts", 0, "next_attempt_at", fe_time_json(deliver_ms),
                          "last_error", "history");
    Msm__V1__Event *ev = packed && packed->type == REDIS_REPLY_STRING
                             ? msm_event_unpack(packed->str, packed->len)
                             : NULL;
    if (o && ev)
        json_object_set_new(o, "event", msm_event_to_json(ev));
    msm_event_free(ev);
    return o;
}

json_t *fe_task_from_record(const char *id, const redisReply *text)
{
    json_t *o = fe_reply_json(text);
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    if (!json_object_get(o, "event_id"))
        json_object_set_new(o, "event_id", json_string(id));
    if (!json_object_get(o, "attempts"))
        json_object_set_new(o, "attempts", json_integer(0));
    /* A time written in ms is shown as the API's RFC 3339, like every other time here. */
    json_t *next = json_object_get(o, "next_attempt_at");
    if (!next || json_is_integer(next))
        json_object_set_new(o, "next_attempt_at", fe_time_json(json_integer_value(next)));
    if (!json_object_get(o, "last_error"))
        json_object_set_new(o, "last_error", json_null());
    if (!json_is_array(json_object_get(o, "history")))
        json_object_set_new(o, "history", json_array());
    return o;
}

/* ---- GET /v1/subscriptions/{name}/stats ---- */

/* The script's numbers: the three store sizes, then the stats hash's fields. */
enum { SC_DELAYED, SC_RETRY, SC_DLQ, SC_SUCCEEDED, SC_FAILED, SC_PENDING, SC_RUNNING,
       SC_CONC_LIMIT, SC_ENQUEUED, SC_DONE, SC_N };

static void stats_answer(sub_call_t *sc)
{
    if (--sc->waiting > 0)
        return;
    if (sc->error) {
        fe_call_unavailable(&sc->base, sc->error);
        return;
    }
    const long long *c = sc->counts;
    json_t *eps = json_array();
    json_t *endpoints = json_object_get(sc->sub, "endpoints");
    size_t i;
    json_t *ep;
    json_array_foreach(endpoints, i, ep)
        json_array_append_new(eps, endpoint_stats(json_object_get(ep, "url"), sc->reports));
    /* The owner's measured limit when it published one, else the configured one. */
    long long limit = c[SC_CONC_LIMIT] >= 0
                          ? c[SC_CONC_LIMIT]
                          : json_integer_value(json_object_get(sc->sub, "max_concurrency"));
    /* An integral rate stays an integer, as API.md's integers; a fractional one a number. */
    json_t *rate = json_object_get(sc->sub, "rate_limit_per_s");
    double rv = json_number_value(rate);
    json_t *rate_out = rv == (double)(json_int_t)rv ? json_integer((json_int_t)rv) : json_real(rv);
    /* Tasks appended to ready.<sub> and not settled, less those running: in the log or
     * pending in the owner's memory. */
    long long backlog = c[SC_ENQUEUED] - c[SC_DONE] - c[SC_RUNNING];
    json_t *body = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:b,s:o}", "backlog",
        (json_int_t)(backlog > 0 ? backlog : 0), "delayed", (json_int_t)c[SC_DELAYED],
        "in_flight", (json_int_t)c[SC_RUNNING], "retrying", (json_int_t)c[SC_RETRY],
        "succeeded", (json_int_t)c[SC_SUCCEEDED], "failed_attempts", (json_int_t)c[SC_FAILED],
        "dead", (json_int_t)c[SC_DLQ], "concurrency_limit", (json_int_t)limit,
        "rate_limit_per_s", rate_out, "paused",
        json_is_true(json_object_get(sc->sub, "paused")), "endpoints", eps);
    json_t *canary = fe_canary_stats(sc->sub, sc->canary_state, sc->canary_reports);
    if (body && canary)
        json_object_set_new(body, "canary", canary);
    else
        json_decref(canary);
    fe_call_json(&sc->base, 200, body);
}

/* The canary's state hash as an object, the routers' canary reports as an array. */
static void canary_replies(sub_call_t *sc, const redisReply *hash, const redisReply *vals)
{
    json_decref(sc->canary_state);
    json_decref(sc->canary_reports);
    sc->canary_state = json_object();
    sc->canary_reports = json_array();
    for (size_t i = 0; hash->type == REDIS_REPLY_ARRAY && i + 1 < hash->elements; i += 2) {
        if (hash->element[i]->str && hash->element[i + 1]->str)
            json_object_set_new(sc->canary_state, hash->element[i]->str,
                                json_string(hash->element[i + 1]->str));
    }
    for (size_t i = 0; vals->type == REDIS_REPLY_ARRAY && i < vals->elements; i++) {
        json_t *rep = fe_reply_json(vals->element[i]);
        if (json_is_object(rep))
            json_array_append(sc->canary_reports, rep);
        json_decref(rep);
    }
}

static void on_stats_counts(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 7 ||
                 reply->element[3]->type != REDIS_REPLY_ARRAY ||
                 reply->element[3]->elements != SC_N - SC_SUCCEEDED))
        why = "unexpected stats reply";
    if (why) {
        if (!sc->error)
            sc->error = strdup(why);
    } else {
        for (size_t i = 0; i < SC_SUCCEEDED; i++)
            sc->counts[i] = msm_redis_reply_int(reply->element[i], 0);
        for (size_t i = SC_SUCCEEDED; i < SC_N; i++)
            sc->counts[i] = msm_redis_reply_int(reply->element[3]->element[i - SC_SUCCEEDED],
                                                i == SC_CONC_LIMIT ? -1 : 0);
        json_decref(sc->reports);
        sc->reports = json_array();
        const redisReply *vals = reply->element[4];
        for (size_t i = 0; vals->type == REDIS_REPLY_ARRAY && i < vals->elements; i++) {
            json_t *rep = fe_reply_json(vals->element[i]);
            if (json_is_object(rep))
                json_array_append(sc->reports, rep);
            json_decref(rep);
        }
        canary_replies(sc, reply->element[5], reply->element[6]);
    }
    stats_answer(sc);
}

/* The stores and counters in one script. */
static void stats_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char keys[7][TASKS_KEY_MAX];
    SUB_KEY(sc, keys[0], MSM_KEY_DELAYED);
    SUB_KEY(sc, keys[1], MSM_KEY_RETRY);
    SUB_KEY(sc, keys[2], MSM_KEY_DLQ);
    SUB_KEY(sc, keys[3], MSM_KEY_STATS);
    SUB_KEY(sc, keys[4], MSM_KEY_ENDPOINTS);
    SUB_KEY(sc, keys[5], MSM_KEY_CANARY);
    SUB_KEY(sc, keys[6], MSM_KEY_CANARY_REPORT);
    const char *argv[] = {keys[0], keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]};
    sc->waiting = 1;
    if (msm_redis_eval(fe->fe_deps.redis, fe->fe_stats, on_stats_counts, sc, 7, 7, argv, NULL) !=
        MSM_OK) {
        sc->error = strdup("redis refused the command");
        stats_answer(sc);
    }
}

static void stats(msm_http_req_t *req, void *opaque)
{
    sub_call_t *sc = fe_sub_call_start(opaque, req, stats_next);
    if (sc)
        fe_sub_call_go(sc);
}

/* ---- GET /v1/subscriptions/{name}/tasks/{event_id} ---- */

static json_t *task_found(const sub_call_t *sc, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1)
        return NULL;
    long long where = msm_redis_reply_int(reply->element[0], TG_NONE);
    if (where == TG_NONE || (where == TG_RECORD && reply->elements != 2) ||
        (where != TG_RECORD && reply->elements != 3))
        return NULL;
    const redisReply *v = reply->element[1];
    int64_t score = where == TG_RECORD ? 0 : msm_redis_reply_int(reply->element[2], 0);
    switch (where) {
    case TG_RECORD:
        return fe_task_from_record(sc->event_id, v);
    case TG_DELAYED:
        return task_from_delayed(sc->event_id, v, score);
    case TG_DEAD:
    case TG_RETRYING:
        return v->type == REDIS_REPLY_STRING
                   ? fe_task_from_packed(v->str, v->len, where == TG_DEAD ? "dead" : "retrying",
                                         score)
                   : NULL;
    default:
        return NULL;
    }
}

static void on_task(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    json_t *task = task_found(sc, reply);
    if (!task) {
        char msg[512];
        snprintf(msg, sizeof(msg), "task %s of subscription %s not found", sc->event_id,
                 sc->name);
        fe_call_error(&sc->base, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    fe_call_json(&sc->base, 200, task);
}

static void task_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char keys[6][TASKS_KEY_MAX];
    int n = msm_task_key(fe->fe_deps.redis, keys[0], sizeof(keys[0]), sc->name, sc->event_id);
    SUB_KEY(sc, keys[1], MSM_KEY_DELAYED);
    SUB_KEY(sc, keys[2], MSM_KEY_DELAYED_EV);
    SUB_KEY(sc, keys[3], MSM_KEY_DLQ_TASKS);
    SUB_KEY(sc, keys[4], MSM_KEY_RETRY);
    SUB_KEY(sc, keys[5], MSM_KEY_RETRY_TASKS);
    const char *argv[] = {keys[0], keys[1], keys[2], keys[3], keys[4], keys[5], sc->event_id};
    int rc = n < 0 ? n
                   : msm_redis_eval(fe->fe_deps.redis, fe->fe_task_get, on_task, sc, 6, 7, argv,
                                    NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

static void task_get(msm_http_req_t *req, void *opaque)
{
    const char *id = msm_http_req_param(req, "event_id");
    if (strlen(id) > EVENT_ID_MAX) {
        msm_http_respond_error(req, 404, "NOT_FOUND", "no such task", NULL);
        return;
    }
    sub_call_t *sc = fe_sub_call_start(opaque, req, task_next);
    if (!sc)
        return;
    if (!(sc->event_id = strdup(id))) {
        fe_call_error(&sc->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    fe_sub_call_go(sc);
}

/* ---- GET /v1/subscriptions/{name}/tasks?state=S&limit=N&cursor=C ---- */

/* The states with a store to list them from, in score order; the others are listed from
 * the task records (listings.c). */
typedef struct {
    const char *state;
    const char *zset;
    const char *hash;
} list_store_t;

static const list_store_t LIST_STORES[] = {
    {"dead", MSM_KEY_DLQ, MSM_KEY_DLQ_TASKS},
    {"retrying", MSM_KEY_RETRY, MSM_KEY_RETRY_TASKS},
    {"delayed", MSM_KEY_DELAYED, MSM_KEY_DELAYED_EV},
};

static const list_store_t *list_store(const char *state)
{
    for (size_t i = 0; i < sizeof(LIST_STORES) / sizeof(LIST_STORES[0]); i++) {
        if (strcmp(LIST_STORES[i].state, state) == 0)
            return &LIST_STORES[i];
    }
    return NULL;
}

static json_t *listed_task(const char *state, const redisReply *id, const redisReply *score,
                           const redisReply *packed)
{
    if (id->type != REDIS_REPLY_STRING)
        return NULL;
    int64_t at = msm_redis_reply_int(score, 0);
    if (strcmp(state, "delayed") == 0)
        return task_from_delayed(id->str, packed, at);
    if (packed->type != REDIS_REPLY_STRING)
        return NULL;
    /* a dead task's score is its time of death, not a next attempt */
    return fe_task_from_packed(packed->str, packed->len, state,
                               strcmp(state, "dead") == 0 ? 0 : at);
}

static void on_list(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements % 3 != 1))
        why = "unexpected list reply";
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    json_t *tasks = json_array();
    const redisReply *last_id = NULL, *last_score = NULL;
    for (size_t i = 1; tasks && i + 2 < reply->elements; i += 3) {
        json_t *t = listed_task(sc->state, reply->element[i], reply->element[i + 1],
                                reply->element[i + 2]);
        if (t) /* an id whose packed task is gone left the store meanwhile */
            json_array_append_new(tasks, t);
        last_id = reply->element[i];
        last_score = reply->element[i + 1];
    }
    json_t *next = json_null();
    if (msm_redis_reply_int(reply->element[0], 0) == 1 && last_id &&
        last_id->type == REDIS_REPLY_STRING && last_score->type == REDIS_REPLY_STRING) {
        json_decref(next);
        next = json_sprintf("%.*s:%.*s", (int)last_score->len, last_score->str,
                            (int)last_id->len, last_id->str);
    }
    fe_call_json(&sc->base, 200, json_pack("{s:o*,s:o*}", "tasks", tasks, "next_cursor", next));
}

static void list_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    const list_store_t *st = list_store(sc->state);
    char zset[TASKS_KEY_MAX], hash[TASKS_KEY_MAX], limit[24];
    int n = msm_redis_key(fe->fe_deps.redis, zset, sizeof(zset), st->zset, sc->name);
    if (n >= 0)
        n = msm_redis_key(fe->fe_deps.redis, hash, sizeof(hash), st->hash, sc->name);
    snprintf(limit, sizeof(limit), "%ld", sc->limit);
    /* the cursor is "<score>:<id>" (checked by list_cursor_valid) */
    const char *colon = sc->cursor ? strchr(sc->cursor, ':') : NULL;
    char score[32] = "";
    if (colon)
        snprintf(score, sizeof(score), "%.*s", (int)(colon - sc->cursor), sc->cursor);
    const char *argv[] = {zset, hash, limit, score, colon ? colon + 1 : ""};
    int rc = n < 0 ? n
                   : msm_redis_eval(fe->fe_deps.redis, fe->fe_task_list, on_list, sc, 2, 5, argv,
                                    NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

/* "<score>:<id>" as on_list makes it: an integer score and an id. */
static int list_cursor_valid(const char *c)
{
    const char *colon = strchr(c, ':');
    if (!colon || colon == c || colon - c > 20 || !colon[1] || strlen(colon + 1) > EVENT_ID_MAX)
        return 0;
    for (const char *p = c; p < colon; p++) {
        if ((*p < '0' || *p > '9') && !(p == c && *p == '-'))
            return 0;
    }
    return 1;
}

void fe_bad_query(msm_http_req_t *req, const char *field, const char *desc)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "%s: %s", field, desc);
    msm_http_respond_error(req, 400, "INVALID_ARGUMENT", msg,
                           json_pack("[{s:s,s:s}]", "field", field, "description", desc));
}

static void task_list(msm_http_req_t *req, void *opaque)
{
    const char *state = msm_http_req_query(req, "state");
    const char *cursor = msm_http_req_query(req, "cursor");
    Msm__V1__TaskState parsed;
    long limit;
    if (!state || msm_task_state_parse(state, &parsed) != MSM_OK) {
        fe_bad_query(req, "state", "must be one of pending, delayed, running, retrying, "
                                   "succeeded, dead");
        return;
    }
    if (fe_query_limit(req, LIST_LIMIT_DEF, LIST_LIMIT_MAX, &limit) != 0)
        return;
    if (!list_store(state)) {
        fe_records_list(opaque, req, state, limit, cursor);
        return;
    }
    if (cursor && *cursor && !list_cursor_valid(cursor)) {
        fe_bad_query(req, "cursor", "must be a next_cursor this endpoint answered");
        return;
    }
    sub_call_t *sc = fe_sub_call_start(opaque, req, list_next);
    if (!sc)
        return;
    sc->limit = limit;
    if (!(sc->state = strdup(state)) || (cursor && *cursor && !(sc->cursor = strdup(cursor)))) {
        fe_call_error(&sc->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    fe_sub_call_go(sc);
}

int fe_query_limit(msm_http_req_t *req, long def, long max, long *out)
{
    const char *q = msm_http_req_query(req, "limit");
    *out = def;
    if (!q)
        return 0;
    char *end = NULL;
    long limit = strtol(q, &end, 10);
    if (!*q || *end || limit < 1 || limit > max) {
        char desc[64];
        snprintf(desc, sizeof(desc), "must be an integer between 1 and %ld", max);
        fe_bad_query(req, "limit", desc);
        return -1;
    }
    *out = limit;
    return 0;
}

int fe_tasks_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"GET", "/v1/subscriptions/{name}/stats", stats},
        {"GET", "/v1/subscriptions/{name}/tasks/{event_id}", task_get},
        {"GET", "/v1/subscriptions/{name}/tasks", task_list},
    };
    int rc = msm_http_server_routes(fe->fe_deps.http, routes,
                                    sizeof(routes) / sizeof(routes[0]), fe);
    if (rc == MSM_OK)
        rc = fe_dlq_routes(fe);
    if (rc == MSM_OK)
        rc = fe_canary_routes(fe);
    return rc == MSM_OK ? fe_listings_routes(fe) : rc;
}
