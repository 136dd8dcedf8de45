/* SPDX-License-Identifier: MIT */
/* CDC sources (API.md "CDC", docs/cdc.md): the registry of sources with the per-partition
 * state that goes with them, :notify (which wakes the scheduler that pulls the partition),
 * and the partitions' state for operators. The push of changes is cdc_push.c. */
#include "pub_int.h"

#include "msm/access.h"
#include "msm/cdc_state.h"
#include "msm/err.h"
#include "msm/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC     "cdc"
#define KEY_MAX 600

const fe_kind_t fe_kind_cdc = {MSM_KEY_CDC_SOURCES, "CDC source", "sources", 0, 0, NULL};

/* KEYS: sources, version, cursor, intent, notified; ARGV: name, source JSON. Stores the
 * source and drops the state of the partitions it no longer has (their locks and leases
 * expire by themselves), as one change of the registry. */
static const char PUT_LUA[] =
    "local old = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "if old then\n"
    "  local keep = {}\n"
    "  for _, p in ipairs(cjson.decode(ARGV[2]).partitions) do keep[p] = true end\n"
    "  for _, p in ipairs(cjson.decode(old).partitions or {}) do\n"
    "    if not keep[p] then\n"
    "      for k = 3, 5 do redis.call('HDEL', KEYS[k], p) end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('INCR', KEYS[2])\n"
    "return 1\n";

/* KEYS: sources, version, cursor, intent, notified; ARGV: name. The source and its state
 * go in one change; 0 when there was no such source. */
static const char DELETE_LUA[] = "if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end\n"
                                 "redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])\n"
                                 "redis.call('INCR', KEYS[2])\n"
                                 "return 1\n";

/* KEYS: sources, notified, notify stream; ARGV: name, partition, sequence, maxlen.
 * -> -2 no source; else the partition's highest notified sequence. The schedulers read the
 * stream (the one pulling the partition fetches at once); the hash keeps the highest. */
static const char NOTIFY_LUA[] =
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -2 end\n"
    "local cur = redis.call('HGET', KEYS[2], ARGV[2])\n"
    "if not cur or tonumber(ARGV[3]) > tonumber(cur) then\n"
    "  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])\n"
    "  cur = ARGV[3]\n"
    "end\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'source', ARGV[1],"
    " 'partition', ARGV[2], 'sequence', ARGV[3])\n"
    "return cur\n";

/* KEYS: cursor, notified, intent, then the lease of each partition; ARGV: the partitions.
 * -> per partition {cursor, notified, intent, lease holder}, false where absent. */
static const char STATE_LUA[] =
    "local r = {}\n"
    "for i, p in ipairs(ARGV) do\n"
    "  r[i] = {redis.call('HGET', KEYS[1], p), redis.call('HGET', KEYS[2], p),"
    " redis.call('HGET', KEYS[3], p), redis.call('GET', KEYS[3 + i])}\n"
    "end\n"
    "return r\n";

int fe_cdc_scripts(fe_t *fe)
{
    fe->fe_cdc_put = msm_redis_script_new(PUT_LUA);
    fe->fe_cdc_delete = msm_redis_script_new(DELETE_LUA);
    fe->fe_cdc_notify = msm_redis_script_new(NOTIFY_LUA);
    fe->fe_cdc_state_read = msm_redis_script_new(STATE_LUA);
    return fe->fe_cdc_put && fe->fe_cdc_delete && fe->fe_cdc_notify && fe->fe_cdc_state_read
               ? MSM_OK
               : MSM_ERR_NOMEM;
}

/* KEYS[0..4] of PUT_LUA and DELETE_LUA for source @p name. */
static int source_keys(fe_t *fe, const char *name, char keys[5][KEY_MAX])
{
    msm_redis_t *r = fe->fe_deps.redis;
    return msm_redis_key(r, keys[0], KEY_MAX, "%s", MSM_KEY_CDC_SOURCES) < 0 ||
                   msm_redis_key(r, keys[1], KEY_MAX, "%s", MSM_KEY_VERSION) < 0 ||
                   msm_redis_key(r, keys[2], KEY_MAX, MSM_KEY_CDC_CURSOR, name) < 0 ||
                   msm_redis_key(r, keys[3], KEY_MAX, MSM_KEY_CDC_INTENT, name) < 0 ||
                   msm_redis_key(r, keys[4], KEY_MAX, MSM_KEY_CDC_NOTIFIED, name) < 0
               ? MSM_ERR_TOOLARGE
               : MSM_OK;
}

void fe_cdc_not_found(fe_call_t *c, const char *name)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "CDC source %s not found", name);
    fe_call_error(c, 404, "NOT_FOUND", msg, NULL);
}

/* ---- the registry ---- */

typedef struct {
    fe_call_t base;
    json_t *source;
    char *name;
} source_call_t;

static void source_call_cleanup(fe_call_t *c)
{
    source_call_t *sc = (source_call_t *)c;
    json_decref(sc->source);
    free(sc->name);
}

static void on_stored(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    source_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "CDC source %s stored", sc->name);
    fe_call_json(&sc->base, 200, json_incref(sc->source));
}

static void source_put(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    const char *name = msm_http_req_param(req, "name");
    if (!msm_name_valid(name)) {
        msm_http_respond_error(req, 400, "INVALID_ARGUMENT",
                               "CDC source names match [A-Za-z0-9._-]{1,200}", NULL);
        return;
    }
    json_t *body;
    if (fe_parse_body(req, 0, &body) != 0)
        return;
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_cdc_source_t *src = msm_cdc_source_from_json(name, body, &e);
    json_decref(body);
    if (!src) {
        msm_http_respond_json(req, 400, msm_json_err_body(&e, NULL));
        msm_json_err_deinit(&e);
        return;
    }
    msm_json_err_deinit(&e);
    if (!fe_topic_exists(fe, src->topic)) {
        fe_not_found(req, "topic", src->topic);
        msm_cdc_source_free(src);
        return;
    }
    source_call_t *sc = fe_call_new(fe, req, sizeof(*sc));
    json_t *stored = msm_cdc_source_to_json(src);
    char *text = stored ? msm_json_dump(stored, NULL) : NULL;
    msm_cdc_source_free(src);
    char keys[5][KEY_MAX];
    if (!sc || !text || !(sc->name = strdup(name)) || source_keys(fe, name, keys) != MSM_OK) {
        json_decref(stored);
        free(text);
        if (sc)
            fe_call_end(&sc->base);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    sc->base.cleanup = source_call_cleanup;
    sc->source = stored;
    const char *argv[] = {keys[0], keys[1], keys[2], keys[3], keys[4], name, text};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_cdc_put, on_stored, sc, 5, 7, argv, NULL);
    free(text);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

static void source_get(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_cdc, msm_http_req_param(req, "name"));
}

static void source_list(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_cdc, NULL);
}

static void on_source_deleted(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    source_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    if (msm_redis_reply_int(reply, 0) == 0) {
        fe_cdc_not_found(&sc->base, sc->name);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "CDC source %s deleted with its cursors", sc->name);
    fe_call_json(&sc->base, 200, json_object());
}

static void source_delete(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    const char *name = msm_http_req_param(req, "name");
    if (!msm_name_valid(name)) {
        fe_not_found(req, "CDC source", name);
        return;
    }
    source_call_t *sc = fe_call_new(fe, req, sizeof(*sc));
    char keys[5][KEY_MAX];
    if (!sc || !(sc->name = strdup(name)) || source_keys(fe, name, keys) != MSM_OK) {
        if (sc)
            fe_call_end(&sc->base);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    sc->base.cleanup = source_call_cleanup;
    const char *argv[] = {keys[0], keys[1], keys[2], keys[3], keys[4], name};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_cdc_delete, on_source_deleted, sc, 5, 6, argv,
                            NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

/* ---- reading a source first: :notify and the partitions' state ---- */

typedef struct read_src_s read_src_t;
typedef void read_src_cb(read_src_t *rs, msm_cdc_source_t *src);

struct read_src_s {
    fe_call_t base;
    char *name;
    char *partition; /* :notify */
    int64_t sequence;
    msm_cdc_source_t *src;
    read_src_cb *then;
};

static void read_src_cleanup(fe_call_t *c)
{
    read_src_t *rs = (read_src_t *)c;
    free(rs->name);
    free(rs->partition);
    msm_cdc_source_free(rs->src);
}

static void on_source_read(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_src_t *rs = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&rs->base, why);
        return;
    }
    json_t *j = fe_reply_json(reply);
    msm_json_err_t e;
    msm_json_err_init(&e);
    rs->src = j ? msm_cdc_source_from_json(rs->name, j, &e) : NULL;
    msm_json_err_deinit(&e);
    json_decref(j);
    if (!rs->src) {
        fe_cdc_not_found(&rs->base, rs->name);
        return;
    }
    rs->then(rs, rs->src);
}

/* Reads source @p name, then calls @p then (404 when it does not exist). */
static read_src_t *read_source(fe_t *fe, msm_http_req_t *req, const char *name, read_src_cb *then)
{
    if (!msm_name_valid(name)) {
        fe_not_found(req, "CDC source", name);
        return NULL;
    }
    read_src_t *rs = fe_call_new(fe, req, sizeof(*rs));
    if (!rs || !(rs->name = strdup(name))) {
        if (rs)
            fe_call_end(&rs->base);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return NULL;
    }
    rs->base.cleanup = read_src_cleanup;
    rs->then = then;
    return rs;
}

static void read_send(read_src_t *rs)
{
    fe_t *fe = rs->base.fe;
    char key[KEY_MAX];
    msm_redis_key(fe->fe_deps.redis, key, sizeof(key), "%s", MSM_KEY_CDC_SOURCES);
    if (msm_redis_command(fe->fe_deps.redis, on_source_read, rs, "HGET %s %s", key, rs->name) !=
        MSM_OK)
        fe_call_unavailable(&rs->base, "Redis refused the command");
}

/* ---- :notify ---- */

static void on_notified(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_src_t *rs = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&rs->base, why);
        return;
    }
    long long notified = msm_redis_reply_int(reply, -2);
    if (notified == -2) { /* deleted meanwhile */
        fe_cdc_not_found(&rs->base, rs->name);
        return;
    }
    fe_call_json(&rs->base, 200,
                 json_pack("{s:s,s:I,s:I}", "partition", rs->partition, "sequence",
                           (json_int_t)rs->sequence, "notified", (json_int_t)notified));
}

static void notify_source(read_src_t *rs, msm_cdc_source_t *src)
{
    fe_t *fe = rs->base.fe;
    char msg[600];
    if (!msm_cdc_source_has_partition(src, rs->partition)) {
        snprintf(msg, sizeof(msg), "partition %s is not one of source %s's partitions",
                 rs->partition, rs->name);
        fe_call_error(&rs->base, 400, "INVALID_ARGUMENT", msg, NULL);
        return;
    }
    /* Like a push: a connector needs the publish scope of its source's topic. */
    if (rs->base.req && !msm_access_can(rs->base.req, "publish", src->topic)) {
        snprintf(msg, sizeof(msg), "no publish scope for topic \"%s\" of CDC source %s", src->topic,
                 rs->name);
        fe_call_error(&rs->base, 403, "PERMISSION_DENIED", msg, NULL);
        return;
    }
    if (!src->range_url) { /* nothing pulls it: a notification would change nothing */
        snprintf(msg, sizeof(msg),
                 "CDC source %s has no range_url: nothing pulls it (push its "
                 "changes to /v1/cdc/sources/%s/changes)",
                 rs->name, rs->name);
        fe_call_error(&rs->base, 400, "FAILED_PRECONDITION", msg, NULL);
        return;
    }
    char k_src[KEY_MAX], k_not[KEY_MAX], k_stream[KEY_MAX], seq[24], maxlen[24];
    msm_redis_key(fe->fe_deps.redis, k_src, sizeof(k_src), "%s", MSM_KEY_CDC_SOURCES);
    msm_redis_key(fe->fe_deps.redis, k_not, sizeof(k_not), MSM_KEY_CDC_NOTIFIED, rs->name);
    msm_redis_key(fe->fe_deps.redis, k_stream, sizeof(k_stream), "%s", MSM_KEY_CDC_NOTIFY);
    snprintf(seq, sizeof(seq), "%" PRId64, rs->sequence);
    snprintf(maxlen, sizeof(maxlen), "%d", MSM_CDC_NOTIFY_MAXLEN);
    const char *argv[] = {k_src, k_not, k_stream, rs->name, rs->partition, seq, maxlen};
    if (msm_redis_eval(fe->fe_deps.redis, fe->fe_cdc_notify, on_notified, rs, 3, 7, argv, NULL) !=
        MSM_OK)
        fe_call_unavailable(&rs->base, "Redis refused the command");
}

static void notify(msm_http_req_t *req, void *opaque)
{
    static const char *const known[] = {"partition", "sequence", NULL};
    json_t *body;
    if (fe_parse_body(req, 0, &body) != 0)
        return;
    msm_json_err_t e;
    msm_json_err_init(&e);
    const char *partition = NULL;
    int64_t sequence = 0;
    if (msm_json_expect_object(&e, body) == MSM_OK) {
        msm_json_check_known(&e, body, known);
        if (msm_json_get_str(&e, body, "partition", MSM_JSON_REQUIRED, &partition) == MSM_OK &&
            !msm_name_valid(partition))
            msm_json_err_add(&e, "partition", "must match [A-Za-z0-9._-]{1,200}");
        msm_json_get_int(&e, body, "sequence", MSM_JSON_REQUIRED, 1, INT64_MAX, &sequence);
    }
    if (msm_json_err_count(&e)) {
        msm_http_respond_json(req, 400, msm_json_err_body(&e, NULL));
        msm_json_err_deinit(&e);
        json_decref(body);
        return;
    }
    msm_json_err_deinit(&e);
    read_src_t *rs = read_source(opaque, req, msm_http_req_param(req, "name"), notify_source);
    if (rs && !(rs->partition = strdup(partition))) {
        fe_call_error(&rs->base, 500, "INTERNAL", "out of memory", NULL);
        rs = NULL;
    }
    json_decref(body);
    if (!rs)
        return;
    rs->sequence = sequence;
    read_send(rs);
}

/* ---- the partitions' state ---- */

static const char *reply_str(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING ? r->str : NULL;
}

static void on_state(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_src_t *rs = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != rs->src->npartitions))
        why = "unexpected reply from Redis";
    if (why) {
        fe_call_unavailable(&rs->base, why);
        return;
    }
    json_t *parts = json_array();
    for (size_t i = 0; parts && i < reply->elements; i++) {
        const redisReply *p = reply->element[i];
        if (p->type != REDIS_REPLY_ARRAY || p->elements != 4)
            continue;
        long long cursor = msm_redis_reply_int(p->element[0], 0);
        long long notified = msm_redis_reply_int(p->element[1], 0);
        const char *intent = reply_str(p->element[2]);
        const char *owner = reply_str(p->element[3]);
        /* the intent's last field lists the sequences known durable above the cursor */
        const char *list = intent ? strrchr(intent, '|') : NULL;
        size_t skip = list && list[1] ? 1 : 0;
        for (const char *c = skip ? list + 1 : ""; *c; c++)
            skip += *c == ',';
        json_array_append_new(
            parts, json_pack("{s:s,s:I,s:I,s:I,s:s?,s:b,s:I}", "partition", rs->src->partitions[i],
                             "cursor", (json_int_t)cursor, "notified", (json_int_t)notified, "lag",
                             (json_int_t)(notified > cursor ? notified - cursor : 0), "owner",
                             owner, "append_pending", intent && intent[0] && intent[0] != '|',
                             "durable_above_cursor", (json_int_t)skip));
    }
    fe_call_json(&rs->base, 200, json_pack("{s:s,s:o*}", "source", rs->name, "partitions", parts));
}

static void state_source(read_src_t *rs, msm_cdc_source_t *src)
{
    fe_t *fe = rs->base.fe;
    size_t n = src->npartitions, nk = 3 + n;
    char(*keys)[KEY_MAX] = calloc(nk, KEY_MAX);
    const char **argv = calloc(nk + n, sizeof(*argv));
    if (!keys || !argv) {
        free(keys);
        free(argv);
        fe_call_error(&rs->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    msm_redis_t *r = fe->fe_deps.redis;
    msm_redis_key(r, keys[0], KEY_MAX, MSM_KEY_CDC_CURSOR, rs->name);
    msm_redis_key(r, keys[1], KEY_MAX, MSM_KEY_CDC_NOTIFIED, rs->name);
    msm_redis_key(r, keys[2], KEY_MAX, MSM_KEY_CDC_INTENT, rs->name);
    for (size_t i = 0; i < n; i++)
        msm_redis_key(r, keys[3 + i], KEY_MAX, MSM_KEY_CDC_LEASE, rs->name, src->partitions[i]);
    for (size_t i = 0; i < nk; i++)
        argv[i] = keys[i];
    for (size_t i = 0; i < n; i++)
        argv[nk + i] = src->partitions[i];
    int rc =
        msm_redis_eval(r, fe->fe_cdc_state_read, on_state, rs, (int)nk, (int)(nk + n), argv, NULL);
    free(keys);
    free(argv);
    if (rc != MSM_OK)
        fe_call_unavailable(&rs->base, msm_err_str(rc));
}

static void partitions_get(msm_http_req_t *req, void *opaque)
{
    read_src_t *rs = read_source(opaque, req, msm_http_req_param(req, "name"), state_source);
    if (rs)
        read_send(rs);
}

int fe_cdc_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"GET", "/v1/cdc/sources", source_list},
        {"PUT", "/v1/cdc/sources/{name}", source_put},
        {"GET", "/v1/cdc/sources/{name}", source_get},
        {"DELETE", "/v1/cdc/sources/{name}", source_delete},
        {"POST", "/v1/cdc/sources/{name}/changes", fe_cdc_push},
        {"POST", "/v1/cdc/sources/{name}:notify", notify},
        {"GET", "/v1/cdc/sources/{name}/partitions", partitions_get},
    };
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]), fe);
}
