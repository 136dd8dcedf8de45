/* SPDX-License-Identifier: MIT */
/* A subscription's delivery state as the other layers keep it in Redis (docs/pipeline.md):
 * GET .../stats, GET .../tasks/{event_id}, GET .../dlq and POST .../dlq:replay. Each first
 * looks the subscription up (404 when it does not exist), then reads its keys, which share
 * the hash tag {<sub>}. The scripts build task keys from a prefix: every key they touch is
 * one subscription's, in one slot. */
#include "fe_int.h"

#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC             "tasks"
#define KEY_MAX         512
#define DLQ_LIMIT_DEF   100
#define DLQ_LIMIT_MAX   1000
#define REPLAY_IDS_MAX  10000
#define EVENT_ID_MAX    200
#define FLOWCONTROL     "flowcontrol" /* the group whose backlog on ready.<sub> counts */

/* Fields of a task hash, in the order the scripts return them. */
#define TASK_FIELDS "'state', 'attempts', 'next_attempt_at', 'last_error', 'history', 'event'"
enum { TF_STATE, TF_ATTEMPTS, TF_NEXT, TF_ERROR, TF_HISTORY, TF_EVENT, TF_COUNT };

/* KEYS: pending, delayed, running, retry, dlq, stats. */
static const char STATS_LUA[] =
    "return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]),"
    " redis.call('ZCARD', KEYS[3]), redis.call('ZCARD', KEYS[4]), redis.call('ZCARD', KEYS[5]),"
    " redis.call('HMGET', KEYS[6], 'succeeded', 'failed_attempts')}";

/* KEYS: the task hash. */
static const char TASK_GET_LUA[] = "return redis.call('HMGET', KEYS[1], " TASK_FIELDS ")";

/* KEYS: dlq; ARGV: limit, task key prefix. Newest death first: {id, {fields}, ...}. */
static const char DLQ_LIST_LUA[] =
    "local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  out[#out + 1] = id\n"
    "  out[#out + 1] = redis.call('HMGET', ARGV[2] .. id, " TASK_FIELDS ")\n"
    "end\n"
    "return out\n";

/* KEYS: dlq; ARGV: task key prefix, then event ids (none = all in the DLQ).
 * {id, packed event or false, ...} for the ids that are in the DLQ. */
static const char REPLAY_READ_LUA[] =
    "local ids = {}\n"
    "if #ARGV > 1 then for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end\n"
    "else ids = redis.call('ZRANGE', KEYS[1], 0, -1) end\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  if redis.call('ZSCORE', KEYS[1], id) then\n"
    "    out[#out + 1] = id\n"
    "    out[#out + 1] = redis.call('HGET', ARGV[1] .. id, 'event')\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS: dlq, pending; ARGV: task key prefix, now ms, then (id, pending score) pairs. Each
 * task still dead and in the DLQ goes back to pending (docs/pipeline.md), all at once. */
static const char REPLAY_MOVE_LUA[] =
    "local n = 0\n"
    "for i = 3, #ARGV, 2 do\n"
    "  local id = ARGV[i]\n"
    "  local key = ARGV[1] .. id\n"
    "  if redis.call('ZSCORE', KEYS[1], id) and redis.call('HGET', key, 'state') == 'dead' then\n"
    "    redis.call('HSET', key, 'state', 'pending', 'attempts', '0', 'updated_ms', ARGV[2])\n"
    "    redis.call('ZREM', KEYS[1], id)\n"
    "    redis.call('ZADD', KEYS[2], ARGV[i + 1], id)\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

int fe_tasks_scripts(fe_t *fe)
{
    fe->fe_stats = msm_redis_script_new(STATS_LUA);
    fe->fe_task_get = msm_redis_script_new(TASK_GET_LUA);
    fe->fe_dlq_list = msm_redis_script_new(DLQ_LIST_LUA);
    fe->fe_replay_read = msm_redis_script_new(REPLAY_READ_LUA);
    fe->fe_replay_move = msm_redis_script_new(REPLAY_MOVE_LUA);
    return fe->fe_stats && fe->fe_task_get && fe->fe_dlq_list && fe->fe_replay_read &&
                   fe->fe_replay_move
               ? MSM_OK
               : MSM_ERR_NOMEM;
}

/* ---- the subscription lookup every endpoint starts with ---- */

typedef struct sub_call_s sub_call_t;
typedef void sub_next_cb(sub_call_t *sc);

struct sub_call_s {
    fe_call_t base;
    char *name;
    json_t *sub;         /* the stored subscription, once found */
    sub_next_cb *next;
    /* per endpoint */
    char *event_id;      /* tasks */
    long limit;          /* dlq */
    json_t *ids;         /* replay: the requested ids (array), or NULL for all */
    int waiting;         /* stats: replies still due */
    int64_t backlog;
    long long counts[7]; /* stats: the script's numbers (SC_*) */
    char *error;
};

static void sub_call_cleanup(fe_call_t *c)
{
    sub_call_t *sc = (sub_call_t *)c;
    free(sc->name);
    free(sc->event_id);
    free(sc->error);
    json_decref(sc->sub);
    json_decref(sc->ids);
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

/* Starts a call on subscription {name} of @p req; @p next runs once it is found. */
static sub_call_t *sub_call_start(fe_t *fe, msm_http_req_t *req, sub_next_cb *next)
{
    const char *name = msm_http_req_param(req, "name");
    if (!msm_name_valid(name)) {
        fe_not_found(req, "subscription", name);
        return NULL;
    }
    char key[KEY_MAX];
    sub_call_t *sc = msm_redis_key(fe->fe_deps.redis, key, sizeof(key), "%s", MSM_KEY_SUBS) >= 0
                         ? fe_call_new(fe, req, sizeof(*sc))
                         : NULL;
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

/* Sends the lookup (after the caller filled the endpoint's fields). */
static void sub_call_go(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char key[KEY_MAX];
    msm_redis_key(fe->fe_deps.redis, key, sizeof(key), "%s", MSM_KEY_SUBS);
    int rc = msm_redis_command(fe->fe_deps.redis, on_sub_found, sc, "HGET %s %s", key, sc->name);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

/* One of the subscription's keys; @p fmt is an MSM_KEY_* literal with the name's %s. */
#define SUB_KEY(sc, buf, fmt)                                                                      \
    msm_redis_key((sc)->base.fe->fe_deps.redis, buf, sizeof(buf), fmt, (sc)->name)

/* ---- replies ---- */

static json_t *reply_str_or_null(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING ? json_stringn(r->str, r->len) : json_null();
}

/* A task as the API shows it, from the TASK_FIELDS of its hash; NULL when absent. */
static json_t *task_json(const char *event_id, size_t id_len, const redisReply *f)
{
    if (!f || f->type != REDIS_REPLY_ARRAY || f->elements != TF_COUNT ||
        f->element[TF_STATE]->type != REDIS_REPLY_STRING)
        return NULL;
    json_t *history = fe_reply_json(f->element[TF_HISTORY]);
    if (!json_is_array(history)) {
        json_decref(history);
        history = json_array();
    }
    long long next = msm_redis_reply_int(f->element[TF_NEXT], 0);
    long long attempts = msm_redis_reply_int(f->element[TF_ATTEMPTS], 0);
    char when[MSM_TIME_RFC3339_SIZE];
    json_t *o = json_pack("{s:s%,s:s%,s:I,s:o,s:o,s:o}", "event_id", event_id, id_len, "state",
                          f->element[TF_STATE]->str, f->element[TF_STATE]->len, "attempts",
                          (json_int_t)attempts, "next_attempt_at",
                          next > 0 && msm_time_format(next, when, sizeof(when))
                              ? json_string(when)
                              : json_null(),
                          "last_error", reply_str_or_null(f->element[TF_ERROR]), "history",
                          history);
    const redisReply *ev = f->element[TF_EVENT];
    if (o && ev->type == REDIS_REPLY_STRING) {
        Msm__V1__Event *e = msm_event_unpack(ev->str, ev->len);
        if (e)
            json_object_set_new(o, "event", msm_event_to_json(e));
        msm_event_free(e);
    }
    return o;
}

/* ---- GET /v1/subscriptions/{name}/stats ---- */

enum { SC_PENDING, SC_DELAYED, SC_RUNNING, SC_RETRY, SC_DLQ, SC_SUCCEEDED, SC_FAILED, SC_N };

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
    json_array_foreach(endpoints, i, ep) {
        json_array_append_new(eps, json_pack("{s:O,s:b,s:i}", "url", json_object_get(ep, "url"),
                                             "healthy", 1, "in_flight", 0));
    }
    /* An integral rate stays an integer, as API.md's integers; a fractional one a number. */
    json_t *rate = json_object_get(sc->sub, "rate_limit_per_s");
    double rv = json_number_value(rate);
    json_t *rate_out = rv == (double)(json_int_t)rv ? json_integer((json_int_t)rv) : json_real(rv);
    json_t *body = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o}", "backlog",
        (json_int_t)(sc->backlog + c[SC_PENDING]), "delayed", (json_int_t)c[SC_DELAYED],
        "in_flight", (json_int_t)c[SC_RUNNING], "retrying", (json_int_t)c[SC_RETRY],
        "succeeded", (json_int_t)c[SC_SUCCEEDED], "failed_attempts", (json_int_t)c[SC_FAILED],
        "dead", (json_int_t)c[SC_DLQ], "concurrency_limit",
        (json_int_t)json_integer_value(json_object_get(sc->sub, "max_concurrency")),
        "rate_limit_per_s", rate_out, "endpoints", eps);
    fe_call_json(&sc->base, 200, body);
}

static void on_stats_counts(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 6 ||
                 reply->element[5]->type != REDIS_REPLY_ARRAY ||
                 reply->element[5]->elements != 2))
        why = "unexpected stats reply";
    if (why) {
        if (!sc->error)
            sc->error = strdup(why);
    } else {
        for (size_t i = 0; i < 5; i++)
            sc->counts[i] = msm_redis_reply_int(reply->element[i], 0);
        sc->counts[SC_SUCCEEDED] = msm_redis_reply_int(reply->element[5]->element[0], 0);
        sc->counts[SC_FAILED] = msm_redis_reply_int(reply->element[5]->element[1], 0);
    }
    stats_answer(sc);
}

static void on_stats_backlog(msm_err_t err, int64_t backlog, void *opaque)
{
    sub_call_t *sc = opaque;
    int redis_log = strcmp(msm_stream_backend_name(sc->base.fe->fe_deps.stream), "redis") == 0;
    if (err == MSM_OK)
        sc->backlog = backlog;
    else if (err == MSM_ERR_NOTFOUND) /* no ready stream yet: nothing waits */
        sc->backlog = 0;
    else if (err == MSM_ERR_BACKEND && redis_log)
        /* The Redis driver fails the query ("ERR no such key" from XINFO GROUPS) while a
         * partition of an ensured stream has no entry yet. Redis itself answering the
         * counts script beside it tells a real outage apart: that one fails too. */
        sc->backlog = 0;
    else if (!sc->error)
        sc->error = strdup(msm_err_str(err));
    stats_answer(sc);
}

/* The sets and counters in one script, the log backlog beside it; answered when both are in. */
static void stats_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char keys[6][KEY_MAX];
    SUB_KEY(sc, keys[0], MSM_KEY_PENDING);
    SUB_KEY(sc, keys[1], MSM_KEY_DELAYED);
    SUB_KEY(sc, keys[2], MSM_KEY_RUNNING);
    SUB_KEY(sc, keys[3], MSM_KEY_RETRY);
    SUB_KEY(sc, keys[4], MSM_KEY_DLQ);
    SUB_KEY(sc, keys[5], MSM_KEY_STATS);
    const char *argv[] = {keys[0], keys[1], keys[2], keys[3], keys[4], keys[5]};
    char ready[KEY_MAX];
    snprintf(ready, sizeof(ready), MSM_STREAM_READY, sc->name);
    sc->waiting = 1; /* held until both are started */
    if (msm_redis_eval(fe->fe_deps.redis, fe->fe_stats, on_stats_counts, sc, 6, 6, argv, NULL) ==
        MSM_OK)
        sc->waiting++;
    else
        sc->error = strdup("redis refused the command");
    if (msm_stream_backlog(fe->fe_deps.stream, ready, FLOWCONTROL, on_stats_backlog, sc) ==
        MSM_OK)
        sc->waiting++;
    else if (!sc->error)
        sc->error = strdup("log refused the backlog query");
    stats_answer(sc);
}

static void stats(msm_http_req_t *req, void *opaque)
{
    sub_call_t *sc = sub_call_start(opaque, req, stats_next);
    if (sc)
        sub_call_go(sc);
}

/* ---- GET /v1/subscriptions/{name}/tasks/{event_id} ---- */

static void on_task(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    json_t *task = task_json(sc->event_id, strlen(sc->event_id), reply);
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
    char key[KEY_MAX];
    int n = msm_redis_key(fe->fe_deps.redis, key, sizeof(key), MSM_KEY_TASK, sc->name,
                          sc->event_id);
    const char *argv[] = {key};
    int rc = n < 0 ? n
                   : msm_redis_eval(fe->fe_deps.redis, fe->fe_task_get, on_task, sc, 1, 1, argv,
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
    sub_call_t *sc = sub_call_start(opaque, req, task_next);
    if (!sc)
        return;
    if (!(sc->event_id = strdup(id))) {
        fe_call_error(&sc->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    sub_call_go(sc);
}

/* ---- GET /v1/subscriptions/{name}/dlq?limit=N ---- */

static void on_dlq(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && reply->type != REDIS_REPLY_ARRAY)
        why = "unexpected dlq reply";
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    json_t *tasks = json_array();
    for (size_t i = 0; tasks && i + 1 < reply->elements; i += 2) {
        const redisReply *id = reply->element[i];
        json_t *t = id->type == REDIS_REPLY_STRING
                        ? task_json(id->str, id->len, reply->element[i + 1])
                        : NULL;
        if (t)
            json_array_append_new(tasks, t);
        /* an id in the DLQ without its hash is skipped: nothing to show or replay */
    }
    fe_call_json(&sc->base, 200, json_pack("{s:o*}", "tasks", tasks));
}

static int task_prefix(const sub_call_t *sc, char *buf, size_t n)
{
    return msm_redis_key(sc->base.fe->fe_deps.redis, buf, n, MSM_KEY_TASK, sc->name, "");
}

static void dlq_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char dlq[KEY_MAX], prefix[KEY_MAX], limit[24];
    SUB_KEY(sc, dlq, MSM_KEY_DLQ);
    task_prefix(sc, prefix, sizeof(prefix));
    snprintf(limit, sizeof(limit), "%ld", sc->limit);
    const char *argv[] = {dlq, limit, prefix};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_dlq_list, on_dlq, sc, 1, 3, argv, NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

static void dlq_list(msm_http_req_t *req, void *opaque)
{
    const char *q = msm_http_req_query(req, "limit");
    long limit = DLQ_LIMIT_DEF;
    if (q) {
        char *end = NULL;
        limit = strtol(q, &end, 10);
        if (!*q || *end || limit < 1 || limit > DLQ_LIMIT_MAX) {
            char desc[64];
            snprintf(desc, sizeof(desc), "must be an integer between 1 and %d", DLQ_LIMIT_MAX);
            json_t *d = json_pack("[{s:s,s:s}]", "field", "limit", "description", desc);
            char msg[96];
            snprintf(msg, sizeof(msg), "limit: %s", desc);
            msm_http_respond_error(req, 400, "INVALID_ARGUMENT", msg, d);
            return;
        }
    }
    sub_call_t *sc = sub_call_start(opaque, req, dlq_next);
    if (!sc)
        return;
    sc->limit = limit;
    sub_call_go(sc);
}

/* ---- POST /v1/subscriptions/{name}/dlq:replay ---- */

static void on_replayed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && reply->type != REDIS_REPLY_INTEGER)
        why = "unexpected replay reply";
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "subscription %s: %lld dead tasks replayed", sc->name,
            reply->integer);
    fe_call_json(&sc->base, 200, json_pack("{s:I}", "replayed", (json_int_t)reply->integer));
}

static int event_priority(const redisReply *packed)
{
    int prio = 5;
    if (packed && packed->type == REDIS_REPLY_STRING) {
        Msm__V1__Event *ev = msm_event_unpack(packed->str, packed->len);
        if (ev && ev->priority >= 0 && ev->priority <= 9)
            prio = ev->priority;
        msm_event_free(ev);
    }
    return prio;
}

/* The tasks in the DLQ with their events: move them with a pending score each. */
static void on_replay_read(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    sub_call_t *sc = opaque;
    fe_t *fe = sc->base.fe;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && reply->type != REDIS_REPLY_ARRAY)
        why = "unexpected replay reply";
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    size_t n = reply->elements / 2;
    if (n == 0) {
        fe_call_json(&sc->base, 200, json_pack("{s:i}", "replayed", 0));
        return;
    }
    if (fe_call_aborted(&sc->base))
        return;
    char dlq[KEY_MAX], pending[KEY_MAX], prefix[KEY_MAX], now[24];
    SUB_KEY(sc, dlq, MSM_KEY_DLQ);
    SUB_KEY(sc, pending, MSM_KEY_PENDING);
    task_prefix(sc, prefix, sizeof(prefix));
    int64_t now_ms = msm_time_unix_ms();
    snprintf(now, sizeof(now), "%" PRId64, now_ms);
    size_t argc = 4 + 2 * n;
    const char **argv = calloc(argc, sizeof(*argv));
    size_t *argvlen = calloc(argc, sizeof(*argvlen));
    char (*scores)[24] = calloc(n, sizeof(*scores));
    int rc = MSM_ERR_NOMEM;
    if (argv && argvlen && scores) {
        const char *fixed[] = {dlq, pending, prefix, now};
        for (size_t i = 0; i < 4; i++) {
            argv[i] = fixed[i];
            argvlen[i] = strlen(fixed[i]);
        }
        for (size_t i = 0; i < n; i++) {
            const redisReply *id = reply->element[2 * i];
            int prio = event_priority(reply->element[2 * i + 1]);
            snprintf(scores[i], sizeof(scores[i]), "%" PRId64,
                     msm_pending_score(prio, now_ms));
            argv[4 + 2 * i] = id->type == REDIS_REPLY_STRING ? id->str : "";
            argvlen[4 + 2 * i] = id->type == REDIS_REPLY_STRING ? id->len : 0;
            argv[5 + 2 * i] = scores[i];
            argvlen[5 + 2 * i] = strlen(scores[i]);
        }
        rc = msm_redis_eval(r, fe->fe_replay_move, on_replayed, sc, 2, (int)argc, argv, argvlen);
    }
    free(argv);
    free(argvlen);
    free(scores);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

static void replay_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    size_t n = json_array_size(sc->ids);
    char dlq[KEY_MAX], prefix[KEY_MAX];
    SUB_KEY(sc, dlq, MSM_KEY_DLQ);
    task_prefix(sc, prefix, sizeof(prefix));
    const char **argv = calloc(n + 2, sizeof(*argv));
    int rc = MSM_ERR_NOMEM;
    if (argv) {
        argv[0] = dlq;
        argv[1] = prefix;
        for (size_t i = 0; i < n; i++)
            argv[2 + i] = json_string_value(json_array_get(sc->ids, i));
        rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_replay_read, on_replay_read, sc, 1,
                            (int)n + 2, argv, NULL);
    }
    free(argv);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

/* {"event_ids":[…]} with ids as strings; absent, empty body or [] = every dead task. */
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
        }
    }
    msm_json_path_pop(&e);
    int bad = msm_json_err_count(&e) > 0;
    if (bad)
        msm_http_respond_json(req, 400, msm_json_err_body(&e, NULL));
    else if (json_array_size(ids))
        *ids_out = json_incref(ids);
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
    sub_call_t *sc = sub_call_start(opaque, req, replay_next);
    if (!sc) {
        json_decref(ids);
        return;
    }
    sc->ids = ids;
    sub_call_go(sc);
}

int fe_tasks_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"GET", "/v1/subscriptions/{name}/stats", stats},
        {"GET", "/v1/subscriptions/{name}/tasks/{event_id}", task_get},
        {"GET", "/v1/subscriptions/{name}/dlq", dlq_list},
        {"POST", "/v1/subscriptions/{name}/dlq:replay", dlq_replay},
    };
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]),
                                  fe);
}
