/* SPDX-License-Identifier: MIT */
/* CDC sources (API.md "CDC"): the registry of sources and push ingestion.
 *
 * A push names one partition. Per (source, partition) Redis keeps the last accepted
 * sequence; a push first takes the partition's lock and reads that sequence (one script),
 * drops every change at or below it (duplicates: acknowledged, not published again), sends
 * the rest through the publish pipeline, and only once they are durable advances the
 * sequence and frees the lock (one script). A frontend that dies mid-push leaves a lock that
 * expires; the sequence did not move, so the retried push publishes those changes again
 * (at least once, never lost). */
#include "pub_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC                  "cdc"
#define KEY_MAX              600
/* A push's claim script reads its source and takes the partition's lock: the cursor and
 * the lock share the registry's hash slot (Redis Cluster), as the sources do. */
#define CDC_KIND             "{registry}:cdc:sources"
#define CDC_LOCK_MS          60000
#define ENTITY_MAX           FE_KEY_MAX_BYTES
#define PARTITIONS_MAX       1024
#define POLL_MIN_MS          10
#define POLL_MAX_MS          3600000
#define BATCH_MAX            10000

const fe_kind_t fe_kind_cdc = {CDC_KIND, "CDC source", "sources", 0, 0};

/* KEYS sources hash, cursor hash, lock; ARGV name, partition, token, lock ms.
 * -> {-2} no such source; {-1} another push holds the partition; {last, source json}. */
static const char CLAIM_LUA[] =
    "local src = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not src then return {-2} end\n"
    "if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then return {-1} end\n"
    "return {tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or 0), src}\n";

/* KEYS cursor hash, lock; ARGV partition, token, new last sequence ("" = unchanged). */
static const char SETTLE_LUA[] =
    "if ARGV[3] ~= '' then\n"
    "  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or 0)\n"
    "  if tonumber(ARGV[3]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end\n"
    "end\n"
    "if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end\n"
    "return 0\n";

int fe_cdc_scripts(fe_t *fe)
{
    fe->fe_cdc_claim = msm_redis_script_new(CLAIM_LUA);
    fe->fe_cdc_settle = msm_redis_script_new(SETTLE_LUA);
    return fe->fe_cdc_claim && fe->fe_cdc_settle ? MSM_OK : MSM_ERR_NOMEM;
}

/* ---- the registry ---- */

static int url_ok(const char *u)
{
    return (strncmp(u, "http://", 7) == 0 && u[7]) || (strncmp(u, "https://", 8) == 0 && u[8]);
}

/* The stored form of a source, or NULL with errors in @p e. */
static json_t *source_from_json(const char *name, const json_t *body, msm_json_err_t *e)
{
    static const char *const known[] = {"topic", "range_url", "partitions",
                                        "poll_interval_ms", "batch_size", "name", NULL};
    const char *topic = NULL, *url = NULL;
    json_t *parts = NULL;
    int64_t poll = 1000, batch = 500;
    if (msm_json_expect_object(e, body) != MSM_OK)
        return NULL;
    msm_json_check_known(e, body, known);
    if (msm_json_get_str(e, body, "topic", MSM_JSON_REQUIRED, &topic) == MSM_OK &&
        !msm_name_valid(topic))
        msm_json_err_add(e, "topic", "must match [A-Za-z0-9._-]{1,200}");
    if (msm_json_get_strn(e, body, "range_url", MSM_JSON_NULLABLE, 2048, &url) == MSM_OK && url &&
        (!url_ok(url) || msm_json_has_control_chars(url)))
        msm_json_err_add(e, "range_url", "must be an http:// or https:// URL");
    if (msm_json_get_array(e, body, "partitions", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY,
                           &parts) == MSM_OK) {
        if (json_array_size(parts) > PARTITIONS_MAX)
            msm_json_err_add(e, "partitions", "at most %d partitions", PARTITIONS_MAX);
        msm_json_path_push_key(e, "partitions");
        size_t i;
        json_t *p;
        json_array_foreach(parts, i, p) {
            msm_json_path_push_index(e, i);
            if (!json_is_string(p) || !msm_name_valid(json_string_value(p)))
                msm_json_err_add(e, NULL, "must be a name matching [A-Za-z0-9._-]{1,200}");
            for (size_t j = 0; j < i && json_is_string(p); j++) {
                if (json_equal(p, json_array_get(parts, j)))
                    msm_json_err_add(e, NULL, "appears twice");
            }
            msm_json_path_pop(e);
        }
        msm_json_path_pop(e);
    }
    msm_json_get_int(e, body, "poll_interval_ms", MSM_JSON_NULLABLE, POLL_MIN_MS, POLL_MAX_MS,
                     &poll);
    msm_json_get_int(e, body, "batch_size", MSM_JSON_NULLABLE, 1, BATCH_MAX, &batch);
    if (msm_json_err_count(e))
        return NULL;
    return json_pack("{s:s,s:s,s:s?,s:O,s:I,s:I}", "name", name, "topic", topic, "range_url",
                     url, "partitions", parts, "poll_interval_ms", (json_int_t)poll,
                     "batch_size", (json_int_t)batch);
}

typedef struct {
    fe_call_t base;
    json_t *source;
} put_t;

static void put_cleanup(fe_call_t *c)
{
    json_decref(((put_t *)c)->source);
}

static void on_stored(int err, const char *reason, void *opaque)
{
    put_t *pt = opaque;
    if (err != MSM_OK) {
        fe_call_unavailable(&pt->base, reason);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "CDC source %s stored",
            json_string_value(json_object_get(pt->source, "name")));
    fe_call_json(&pt->base, 200, json_incref(pt->source));
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
    json_t *src = source_from_json(name, body, &e);
    json_decref(body);
    if (!src) {
        msm_http_respond_json(req, 400, msm_json_err_body(&e, NULL));
        msm_json_err_deinit(&e);
        return;
    }
    msm_json_err_deinit(&e);
    const char *topic = json_string_value(json_object_get(src, "topic"));
    if (!fe_topic_exists(fe, topic)) {
        fe_not_found(req, "topic", topic); /* before the decref: topic is src's */
        json_decref(src);
        return;
    }
    put_t *pt = fe_call_new(fe, req, sizeof(*pt));
    if (!pt) {
        json_decref(src);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    pt->base.cleanup = put_cleanup;
    pt->source = src;
    int rc = msm_registry_put(fe->fe_deps.redis, CDC_KIND, name, src, on_stored, pt);
    if (rc != MSM_OK)
        fe_call_unavailable(&pt->base, msm_err_str(rc));
}

static void source_get(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_cdc, msm_http_req_param(req, "name"));
}

static void source_list(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_cdc, NULL);
}

static void source_delete(msm_http_req_t *req, void *opaque)
{
    fe_delete_start(opaque, req, &fe_kind_cdc, msm_http_req_param(req, "name"));
}

/* ---- push ---- */

static const char *const op_names[] = {"", "create", "update", "delete"};

typedef struct {
    fe_pub_t pub;
    char *source;
    char *partition;
    char token[MSM_ID_STR_SIZE];
    json_t *body;          /* the request, kept until the changes are built */
    size_t received;       /* changes in the request */
    int64_t last_before;   /* the partition's last sequence when claimed */
    int64_t last_after;    /* the highest sequence published by this push */
    int answer_status;     /* the answer, given once the lock is freed */
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

static void settled(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    push_t *ps = opaque;
    (void)r;
    const char *why = msm_redis_reply_err(reply, err);
    if (why)
        msm_log(MSM_LOG_WARN, FAC, "source %s partition %s: lock not released (it expires): %s",
                ps->source, ps->partition, why);
    json_t *answer = ps->answer;
    ps->answer = NULL;
    fe_call_json(&ps->pub.base, ps->answer_status, answer);
}

/* Frees the lock (and advances the sequence to @p last after a publish), then answers
 * @p status with @p answer (stolen). The answer waits for the lock: a client that pushes
 * the partition's next changes as soon as it has the answer finds the partition free. */
static void settle_and_answer(push_t *ps, int64_t last, int status, json_t *answer)
{
    fe_t *fe = ps->pub.base.fe;
    char k_cur[KEY_MAX], k_lock[KEY_MAX], seq[24] = "";
    msm_redis_key(fe->fe_deps.redis, k_cur, sizeof(k_cur), "{registry}:cdc:%s:cursor", ps->source);
    msm_redis_key(fe->fe_deps.redis, k_lock, sizeof(k_lock), "{registry}:cdc:%s:lock:%s", ps->source,
                  ps->partition);
    if (last > 0)
        snprintf(seq, sizeof(seq), "%lld", (long long)last);
    const char *argv[] = {k_cur, k_lock, ps->partition, ps->token, seq};
    ps->answer_status = status;
    ps->answer = answer;
    if (msm_redis_eval(fe->fe_deps.redis, fe->fe_cdc_settle, settled, ps, 2, 5, argv, NULL) !=
        MSM_OK)
        settled(NULL, NULL, "not sent", ps);
}

static json_t *push_answer(const push_t *ps, size_t published)
{
    int64_t last = ps->last_after > ps->last_before ? ps->last_after : ps->last_before;
    return json_pack("{s:I,s:I,s:I}", "accepted", (json_int_t)published, "duplicates",
                     (json_int_t)(ps->received - published), "last_sequence", (json_int_t)last);
}

static void on_published(fe_pub_t *p, int status, json_t *error)
{
    push_t *ps = (push_t *)p;
    fe_t *fe = p->base.fe;
    if (status != 200) {
        count(fe, ps->source, "failed", ps->received);
        settle_and_answer(ps, 0, status, error);
        return;
    }
    count(fe, ps->source, "published", p->batch.n);
    count(fe, ps->source, "duplicate", ps->received - p->batch.n);
    settle_and_answer(ps, ps->last_after, 200, push_answer(ps, p->batch.n));
}

/* Validates the changes (every one, before anything is claimed). */
static int changes_valid(const fe_parse_ctx_t *ctx, const json_t *body, msm_json_err_t *e,
                         msm_json_err_t *big)
{
    static const char *const known[] = {"partition", "changes", NULL};
    static const char *const change_known[] = {"sequence", "op", "entity", "data", NULL};
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
    int64_t prev = 0;
    size_t i;
    json_t *c;
    json_array_foreach(changes, i, c) {
        msm_json_path_push_index(e, i);
        msm_json_path_push_index(big, i);
        const char *op = NULL, *entity = NULL;
        int64_t seq = 0;
        if (msm_json_expect_object(e, c) == MSM_OK) {
            msm_json_check_known(e, c, change_known);
            if (msm_json_get_int(e, c, "sequence", MSM_JSON_REQUIRED, 1, INT64_MAX, &seq) ==
                    MSM_OK &&
                seq <= prev)
                msm_json_err_add(e, "sequence", "must be greater than the previous change's");
            prev = seq > prev ? seq : prev;
            if (msm_json_get_str(e, c, "op", MSM_JSON_REQUIRED, &op) == MSM_OK &&
                strcmp(op, "create") != 0 && strcmp(op, "update") != 0 &&
                strcmp(op, "delete") != 0)
                msm_json_err_add(e, "op", "must be create, update or delete");
            if (msm_json_get_str(e, c, "entity", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY,
                                 &entity) == MSM_OK)
                msm_json_check_text(e, big, "entity", entity, ENTITY_MAX);
            const json_t *data = json_object_get(c, "data");
            if (!data && op && strcmp(op, "delete") != 0)
                msm_json_err_add(e, "data", "is required (except for delete)");
        }
        msm_json_path_pop(e);
        msm_json_path_pop(big);
    }
    msm_json_path_pop(e);
    msm_json_path_pop(big);
    return msm_json_err_count(e) ? 400 : msm_json_err_count(big) ? 413 : 0;
}

static int op_of(const char *op)
{
    for (int i = 1; i < 4; i++) {
        if (strcmp(op, op_names[i]) == 0)
            return i;
    }
    return 0;
}

/* Builds the events of the changes above @p last into the pipeline's batch. */
static int build_events(push_t *ps, const char *subject, int64_t last, msm_json_err_t *e,
                        msm_json_err_t *big)
{
    fe_pub_t *p = &ps->pub;
    const json_t *changes = json_object_get(ps->body, "changes");
    size_t n = 0, i;
    json_t *c;
    json_array_foreach(changes, i, c) {
        n += json_integer_value(json_object_get(c, "sequence")) > last;
    }
    if (fe_batch_init(&p->batch, n, 0) != MSM_OK)
        return MSM_ERR_NOMEM;
    p->batch.list = "changes";
    p->batch.json = json_incref(ps->body);
    size_t k = 0, limit = p->base.fe->fe_set.max_event_bytes;
    json_array_foreach(changes, i, c) {
        int64_t seq = json_integer_value(json_object_get(c, "sequence"));
        if (seq <= last)
            continue;
        fe_event_t *ev = &p->batch.evs[k++];
        const json_t *data = json_object_get(c, "data");
        ev->key = ev->ordering_key = json_string_value(json_object_get(c, "entity"));
        ev->cdc_entity = ev->key;
        ev->cdc_partition = ps->partition;
        ev->cdc_sequence = seq;
        ev->cdc_operation = op_of(json_string_value(json_object_get(c, "op")));
        ev->content_type = "application/json";
        ev->data_field = "data";
        ps->last_after = seq;
        if (subject && data) {
            ev->data = data;
            continue;
        }
        size_t len = 4;
        ev->unschematized = !data; /* a delete without data: a tombstone, nothing to check */
        char *text = data ? msm_json_dump(data, &len) : strdup("null");
        if (!text)
            return MSM_ERR_NOMEM;
        ev->owned = (uint8_t *)text;
        ev->payload = ev->owned;
        ev->payload_len = len;
        if (len > limit) {
            msm_json_path_push_key(big, "changes");
            msm_json_path_push_index(big, i);
            msm_json_err_add(big, "data", "exceeds the limit of %zu bytes", limit);
            msm_json_path_pop(big);
            msm_json_path_pop(big);
        }
    }
    (void)e;
    return MSM_OK;
}

static void on_claimed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    push_t *ps = opaque;
    fe_pub_t *p = &ps->pub;
    fe_t *fe = p->base.fe;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1))
        why = "unexpected reply from Redis";
    if (why) {
        fe_call_unavailable(&p->base, why);
        return;
    }
    long long last = msm_redis_reply_int(reply->element[0], -3);
    if (last == -2) {
        char msg[300];
        snprintf(msg, sizeof(msg), "CDC source %s not found", ps->source);
        fe_call_error(&p->base, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    if (last == -1) {
        if (p->base.req)
            msm_http_add_header(p->base.req, "Retry-After", "1");
        char msg[600];
        snprintf(msg, sizeof(msg), "another push of source %s partition %s is in progress; "
                 "retry", ps->source, ps->partition);
        fe_call_error(&p->base, 503, "UNAVAILABLE", msg, NULL);
        return;
    }
    json_t *src = reply->elements == 2 ? fe_reply_json(reply->element[1]) : NULL;
    const char *topic = json_string_value(json_object_get(src, "topic"));
    int known_partition = 0;
    size_t i;
    json_t *part;
    json_array_foreach(json_object_get(src, "partitions"), i, part) {
        known_partition |= json_is_string(part) && strcmp(json_string_value(part),
                                                          ps->partition) == 0;
    }
    const char *subject = NULL;
    int status = 0;
    char msg[700] = "";
    if (!topic || !fe_topic_lookup(fe, topic, &subject)) {
        status = 404;
        snprintf(msg, sizeof(msg), "topic %s of CDC source %s not found", topic ? topic : "?",
                 ps->source);
    } else if (!known_partition) {
        status = 400;
        snprintf(msg, sizeof(msg), "partition %s is not one of source %s's partitions",
                 ps->partition, ps->source);
    } else if (p->base.req && !msm_access_can(p->base.req, "publish", topic)) {
        /* A connector needs the publish scope of its source's topic, like a publisher. */
        status = 403;
        snprintf(msg, sizeof(msg), "no publish scope for topic \"%s\" of CDC source %s", topic,
                 ps->source);
    }
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    ps->last_before = last;
    if (!status && (!(p->topic = strdup(topic)) || (subject && !(p->subject = strdup(subject))) ||
                    build_events(ps, subject, last, &e, &big) != MSM_OK)) {
        status = 500;
        snprintf(msg, sizeof(msg), "out of memory");
    }
    if (!status && msm_json_err_count(&big))
        status = 413;
    /* The principal's publish_per_s counts changes as events. */
    if (!status && p->base.req && fe_quota_spent(p->base.req, p->batch.n)) {
        status = 429;
        snprintf(msg, sizeof(msg), "%s", FE_QUOTA_SPENT);
    }
    json_decref(src);
    if (status) {
        const char *code = status == 404   ? "NOT_FOUND"
                           : status == 400 ? "INVALID_ARGUMENT"
                           : status == 403 ? "PERMISSION_DENIED"
                           : status == 429 ? "RATE_LIMITED"
                                           : "INTERNAL";
        json_t *body = status == 413 ? msm_json_err_body(&big, "PAYLOAD_TOO_LARGE")
                                     : msm_json_error_body(code, msg, NULL);
        msm_json_err_deinit(&e);
        msm_json_err_deinit(&big);
        settle_and_answer(ps, 0, status, body);
        return;
    }
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    if (p->batch.n == 0) { /* every change was a duplicate */
        count(fe, ps->source, "duplicate", ps->received);
        settle_and_answer(ps, 0, 200, push_answer(ps, 0));
        return;
    }
    p->cdc_source = ps->source;
    fe_pub_submit(p);
}

static void push(msm_http_req_t *req, void *opaque)
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
    int status = changes_valid(&ctx, body, &e, &big);
    if (status) {
        msm_http_respond_json(req, status, status == 413 ? msm_json_err_body(&big,
                                                                              "PAYLOAD_TOO_LARGE")
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
    ps->received = json_array_size(json_object_get(body, "changes"));
    const char *partition = json_string_value(json_object_get(body, "partition"));
    if (!(ps->source = strdup(name)) || !(ps->partition = strdup(partition))) {
        fe_call_error(&ps->pub.base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    msm_id_new_str(ps->token);
    char k_src[KEY_MAX], k_cur[KEY_MAX], k_lock[KEY_MAX], lock_ms[24];
    msm_redis_key(fe->fe_deps.redis, k_src, sizeof(k_src), "%s", CDC_KIND);
    msm_redis_key(fe->fe_deps.redis, k_cur, sizeof(k_cur), "{registry}:cdc:%s:cursor", name);
    msm_redis_key(fe->fe_deps.redis, k_lock, sizeof(k_lock), "{registry}:cdc:%s:lock:%s", name, partition);
    snprintf(lock_ms, sizeof(lock_ms), "%d", CDC_LOCK_MS);
    const char *argv[] = {k_src, k_cur, k_lock, name, partition, ps->token, lock_ms};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_cdc_claim, on_claimed, ps, 3, 7, argv,
                            NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&ps->pub.base, msm_err_str(rc));
}

int fe_cdc_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"GET", "/v1/cdc/sources", source_list},
        {"PUT", "/v1/cdc/sources/{name}", source_put},
        {"GET", "/v1/cdc/sources/{name}", source_get},
        {"DELETE", "/v1/cdc/sources/{name}", source_delete},
        {"POST", "/v1/cdc/sources/{name}/changes", push},
    };
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]),
                                  fe);
}
