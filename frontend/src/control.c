/* SPDX-License-Identifier: MIT */
/* The control plane: PUT/GET/DELETE of topics and subscriptions (API.md). Writes go through
 * msm_registry_put/delete (store and version bump in one script), after the log streams
 * the object needs exist, so a daemon that sees a new object can use its streams at once.
 * Reads go to Redis directly: a GET right after a PUT on another frontend sees it. */
#include "fe_int.h"

#include "msm/access.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"
#include "msm/pem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC     "control"
#define KEY_MAX 512

/* ---- shared ---- */

static int hash_key(const fe_t *fe, const char *kind, char *buf, size_t n)
{
    return msm_redis_key(fe->fe_deps.redis, buf, n, "%s", kind);
}

static int by_name(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    const char *nx = json_string_value(json_object_get(x, "name"));
    const char *ny = json_string_value(json_object_get(y, "name"));
    return strcmp(nx ? nx : "", ny ? ny : "");
}

/* {"<member>":[objects of an HGETALL reply, sorted by name]}, each as its kind answers it. */
static json_t *list_body(const redisReply *r, const fe_kind_t *kind)
{
    const char *member = kind->member;
    int mask = kind->mask;
    size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
    json_t **items = calloc(n ? n : 1, sizeof(*items));
    json_t *arr = json_array();
    if (!items || !arr) {
        free(items);
        json_decref(arr);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *o = fe_reply_json(r->element[2 * i + 1]);
        if (!json_is_object(o)) {
            json_decref(o);
            continue;
        }
        if (mask)
            msm_sub_mask_secrets(o);
        if (kind->view)
            kind->view(o);
        items[k++] = o;
    }
    qsort(items, k, sizeof(*items), by_name);
    for (size_t i = 0; i < k; i++)
        json_array_append_new(arr, items[i]);
    free(items);
    return json_pack("{s:o}", member, arr);
}

const fe_kind_t fe_kind_topics = {MSM_KEY_TOPICS, "topic", "topics", 0, 1, NULL};
const fe_kind_t fe_kind_subs = {MSM_KEY_SUBS, "subscription", "subscriptions", 1, 0, NULL};

typedef struct {
    fe_call_t base;
    const fe_kind_t *kind;
    char *name;
    int list;
} read_call_t;

static void read_cleanup(fe_call_t *c)
{
    free(((read_call_t *)c)->name);
}

static void on_read(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    read_call_t *rc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&rc->base, why);
        return;
    }
    if (rc->list) {
        json_t *body = list_body(reply, rc->kind);
        if (body)
            fe_call_json(&rc->base, 200, body);
        else
            fe_call_error(&rc->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    json_t *o = fe_reply_json(reply);
    if (!json_is_object(o)) {
        json_decref(o);
        char msg[512];
        snprintf(msg, sizeof(msg), "%s %s not found", rc->kind->what, rc->name);
        fe_call_error(&rc->base, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    if (rc->kind->mask)
        msm_sub_mask_secrets(o);
    if (rc->kind->view)
        rc->kind->view(o);
    fe_call_json(&rc->base, 200, o);
}

void fe_read_start(fe_t *fe, msm_http_req_t *req, const fe_kind_t *kind, const char *name)
{
    if (name && !msm_name_valid(name)) {
        fe_not_found(req, kind->what, name);
        return;
    }
    char key[KEY_MAX];
    if (hash_key(fe, kind->key, key, sizeof(key)) < 0) {
        msm_http_respond_error(req, 500, "INTERNAL", "key too long", NULL);
        return;
    }
    read_call_t *rc = fe_call_new(fe, req, sizeof(*rc));
    if (!rc || (name && !(rc->name = strdup(name)))) {
        free(rc ? rc->name : NULL);
        if (rc)
            fe_call_end(&rc->base);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    rc->base.cleanup = read_cleanup;
    rc->kind = kind;
    rc->list = name == NULL;
    int err = name ? msm_redis_command(fe->fe_deps.redis, on_read, rc, "HGET %s %s", key, name)
                   : msm_redis_command(fe->fe_deps.redis, on_read, rc, "HGETALL %s", key);
    if (err != MSM_OK)
        fe_call_unavailable(&rc->base, msm_err_str(err));
}

typedef struct {
    fe_call_t base;
    const fe_kind_t *kind;
    char *name;
} delete_call_t;

static void on_deleted(int err, const char *reason, void *opaque)
{
    delete_call_t *dc = opaque;
    if (err == MSM_ERR_NOTFOUND) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s %s not found", dc->kind->what, dc->name);
        fe_call_error(&dc->base, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    if (err != MSM_OK) {
        fe_call_unavailable(&dc->base, reason);
        return;
    }
    if (dc->kind->topic && !dc->base.fe->fe_closing)
        fe_topic_noted(dc->base.fe, dc->name, false, NULL);
    msm_log(MSM_LOG_INFO, FAC, "%s %s deleted", dc->kind->what, dc->name);
    fe_call_json(&dc->base, 200, json_object());
}

static void delete_cleanup(fe_call_t *c)
{
    free(((delete_call_t *)c)->name);
}

void fe_delete_start(fe_t *fe, msm_http_req_t *req, const fe_kind_t *kind, const char *name)
{
    if (!msm_name_valid(name)) {
        fe_not_found(req, kind->what, name);
        return;
    }
    delete_call_t *dc = fe_call_new(fe, req, sizeof(*dc));
    if (!dc || !(dc->name = strdup(name))) {
        if (dc)
            fe_call_end(&dc->base);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    dc->base.cleanup = delete_cleanup;
    dc->kind = kind;
    int err = msm_registry_delete(fe->fe_deps.redis, kind->key, name, on_deleted, dc);
    if (err != MSM_OK)
        fe_call_unavailable(&dc->base, msm_err_str(err));
}

/* Answers 400 with the collected details. */
static void respond_invalid(msm_http_req_t *req, msm_json_err_t *e)
{
    json_t *body = msm_json_err_body(e, NULL);
    if (body)
        msm_http_respond_json(req, 400, body);
    else
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
}

/* ---- topics ---- */

typedef struct {
    fe_call_t base;
    msm_topic_t *topic;
    int explicit_partitions; /* the body named "partitions" */
} topic_put_t;

static void topic_put_cleanup(fe_call_t *c)
{
    msm_topic_free(((topic_put_t *)c)->topic);
}

static void on_topic_stored(int err, const char *reason, void *opaque)
{
    topic_put_t *tp = opaque;
    if (err != MSM_OK) {
        fe_call_unavailable(&tp->base, reason);
        return;
    }
    if (!tp->base.fe->fe_closing)
        fe_topic_noted(tp->base.fe, tp->topic->name, true, tp->topic->schema_subject);
    msm_log(MSM_LOG_INFO, FAC, "topic %s stored (%d partitions)", tp->topic->name,
            tp->topic->partitions);
    fe_call_json(&tp->base, 200, msm_topic_to_json(tp->topic));
}

static void on_topic_stream(msm_err_t err, const char *reason, void *opaque)
{
    topic_put_t *tp = opaque;
    if (err != MSM_OK) {
        fe_call_unavailable(&tp->base, reason);
        return;
    }
    if (fe_call_aborted(&tp->base))
        return;
    json_t *j = msm_topic_to_json(tp->topic);
    int rc = j ? msm_registry_put(tp->base.fe->fe_deps.redis, MSM_KEY_TOPICS, tp->topic->name, j,
                                  on_topic_stored, tp)
               : MSM_ERR_NOMEM;
    json_decref(j);
    if (rc != MSM_OK)
        fe_call_unavailable(&tp->base, msm_err_str(rc));
}

/* The stored topic, if any: created_ms and partitions do not change on a new PUT. */
static void on_topic_existing(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    topic_put_t *tp = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&tp->base, why);
        return;
    }
    json_t *old = fe_reply_json(reply);
    if (json_is_object(old)) {
        json_int_t parts = json_integer_value(json_object_get(old, "partitions"));
        json_int_t created = json_integer_value(json_object_get(old, "created_ms"));
        if (tp->explicit_partitions && parts > 0 && parts != tp->topic->partitions) {
            json_decref(old);
            json_t *d = json_pack("[{s:s,s:s}]", "field", "partitions", "description",
                                  "cannot change on an existing topic");
            fe_call_error(&tp->base, 409, "CONFLICT",
                          "partitions: cannot change on an existing topic", d);
            return;
        }
        if (parts > 0)
            tp->topic->partitions = (int)parts;
        if (created > 0)
            tp->topic->created_ms = created;
    }
    json_decref(old);
    if (fe_call_aborted(&tp->base))
        return;
    char stream[KEY_MAX];
    snprintf(stream, sizeof(stream), MSM_STREAM_EVENTS, tp->topic->name);
    int rc = msm_stream_ensure(tp->base.fe->fe_deps.stream, stream, tp->topic->partitions,
                               on_topic_stream, tp);
    if (rc != MSM_OK)
        fe_call_unavailable(&tp->base, msm_err_str(rc));
}

static void topic_put(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    const char *name = msm_http_req_param(req, "topic");
    json_t *body;
    if (fe_parse_body(req, 1, &body) != 0)
        return;
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_topic_t *t = msm_topic_from_json(name, body, &e);
    int explicit_partitions = json_object_get(body, "partitions") != NULL;
    json_decref(body);
    if (!t) {
        respond_invalid(req, &e);
        msm_json_err_deinit(&e);
        return;
    }
    msm_json_err_deinit(&e);
    char key[KEY_MAX];
    topic_put_t *tp = hash_key(fe, MSM_KEY_TOPICS, key, sizeof(key)) >= 0
                          ? fe_call_new(fe, req, sizeof(*tp))
                          : NULL;
    if (!tp) {
        msm_topic_free(t);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    tp->base.cleanup = topic_put_cleanup;
    tp->topic = t;
    tp->explicit_partitions = explicit_partitions;
    int rc = msm_redis_command(fe->fe_deps.redis, on_topic_existing, tp, "HGET %s %s", key,
                               t->name);
    if (rc != MSM_OK)
        fe_call_unavailable(&tp->base, msm_err_str(rc));
}

static void topic_get(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_topics, msm_http_req_param(req, "topic"));
}

static void topic_list(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_topics, NULL);
}

static void topic_delete(msm_http_req_t *req, void *opaque)
{
    fe_delete_start(opaque, req, &fe_kind_topics, msm_http_req_param(req, "topic"));
}

/* ---- subscriptions ---- */

/* KEYS: topics, subs; ARGV: topic, sub. {topic exists (0/1), stored sub JSON or false}. */
static const char SUB_CHECK_LUA[] =
    "return {redis.call('HEXISTS', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[2])}";

typedef struct {
    fe_call_t base;
    msm_sub_t *sub;
    int explicit_paused; /* the body named "paused" */
    int ensuring;       /* streams still being ensured */
    char *ensure_error; /* the first failure */
} sub_put_t;

static void sub_put_cleanup(fe_call_t *c)
{
    sub_put_t *sp = (sub_put_t *)c;
    msm_sub_free(sp->sub);
    free(sp->ensure_error);
}

static void on_sub_stored(int err, const char *reason, void *opaque)
{
    sub_put_t *sp = opaque;
    if (err != MSM_OK) {
        fe_call_unavailable(&sp->base, reason);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "subscription %s stored (topic %s)", sp->sub->name,
            sp->sub->topic);
    fe_call_json(&sp->base, 200, msm_sub_to_json(sp->sub, false));
}

static void on_sub_stream(msm_err_t err, const char *reason, void *opaque)
{
    sub_put_t *sp = opaque;
    if (err != MSM_OK && !sp->ensure_error)
        sp->ensure_error = strdup(reason ? reason : msm_err_str(err));
    if (--sp->ensuring > 0)
        return;
    if (sp->ensure_error) {
        fe_call_unavailable(&sp->base, sp->ensure_error);
        return;
    }
    if (fe_call_aborted(&sp->base))
        return;
    json_t *j = msm_sub_to_json(sp->sub, true);
    int rc = j ? msm_registry_put(sp->base.fe->fe_deps.redis, MSM_KEY_SUBS, sp->sub->name, j,
                                  on_sub_stored, sp)
               : MSM_ERR_NOMEM;
    json_decref(j);
    if (rc != MSM_OK)
        fe_call_unavailable(&sp->base, msm_err_str(rc));
}

/* ready.<sub> and dispatch.<sub> (fe_settings_t.sub_partitions each) and status.<sub>
 * (status_partitions); the registry write waits for all three, so a daemon that sees the
 * subscription finds its streams. */
static void sub_ensure_streams(sub_put_t *sp)
{
    const fe_t *fe = sp->base.fe;
    char ready[KEY_MAX], dispatch[KEY_MAX], status[KEY_MAX];
    snprintf(ready, sizeof(ready), MSM_STREAM_READY, sp->sub->name);
    snprintf(dispatch, sizeof(dispatch), MSM_STREAM_DISPATCH, sp->sub->name);
    snprintf(status, sizeof(status), MSM_STREAM_STATUS, sp->sub->name);
    struct {
        const char *name;
        int partitions;
    } streams[] = {{ready, fe->fe_set.sub_partitions},
                   {dispatch, fe->fe_set.sub_partitions},
                   {status, fe->fe_set.status_partitions}};
    sp->ensuring = 1; /* held until all are started */
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
        int rc = msm_stream_ensure(fe->fe_deps.stream, streams[i].name, streams[i].partitions,
                                   on_sub_stream, sp);
        if (rc == MSM_OK)
            sp->ensuring++;
        else if (!sp->ensure_error)
            sp->ensure_error = strdup(msm_err_str(rc));
    }
    on_sub_stream(MSM_OK, NULL, sp);
}

/* Pub/Sub: a filter is set when the subscription is created and never changes, so one filter
 * judged every event a subscription holds (delayed ones were judged before they were
 * stored). A stored filter that does not parse (kept from before filters were checked) may
 * still be replaced. */
static int filter_changed(const json_t *old, const msm_sub_t *s)
{
    const char *was = json_string_value(json_object_get(old, "filter"));
    if (!was || !*was)
        return s->filter != NULL;
    if (s->filter && strcmp(was, s->filter) == 0)
        return 0;
    msm_filter_t *f = msm_filter_parse(was, NULL, 0, NULL);
    int valid = f != NULL;
    msm_filter_free(f);
    return valid;
}

/* Every endpoint's address was judged (netcheck.c): 400 naming each refused one. */
static void on_sub_netchecked(void *opaque, msm_json_err_t *verdict)
{
    sub_put_t *sp = opaque;
    if (msm_json_err_count(verdict) > 0) {
        json_t *body = msm_json_err_body(verdict, NULL);
        if (body)
            fe_call_json(&sp->base, 400, body);
        else
            fe_call_error(&sp->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    if (!fe_call_aborted(&sp->base))
        sub_ensure_streams(sp);
}

static void on_sub_checked(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_put_t *sp = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2))
        why = "unexpected reply";
    if (why) {
        fe_call_unavailable(&sp->base, why);
        return;
    }
    if (reply->element[0]->type != REDIS_REPLY_INTEGER || reply->element[0]->integer != 1) {
        char msg[512];
        snprintf(msg, sizeof(msg), "topic %s not found", sp->sub->topic);
        json_t *d = json_pack("[{s:s,s:s}]", "field", "topic", "description", "no such topic");
        fe_call_error(&sp->base, 404, "NOT_FOUND", msg, d);
        return;
    }
    json_t *old = fe_reply_json(reply->element[1]);
    if (json_is_object(old)) {
        const char *old_topic = json_string_value(json_object_get(old, "topic"));
        if (old_topic && strcmp(old_topic, sp->sub->topic) != 0) {
            json_decref(old);
            json_t *d = json_pack("[{s:s,s:s}]", "field", "topic", "description",
                                  "cannot change on an existing subscription");
            fe_call_error(&sp->base, 409, "CONFLICT",
                          "topic: cannot change on an existing subscription", d);
            return;
        }
        if (filter_changed(old, sp->sub)) {
            json_decref(old);
            json_t *d = json_pack("[{s:s,s:s}]", "field", "filter", "description",
                                  "cannot change on an existing subscription");
            fe_call_error(&sp->base, 409, "CONFLICT",
                          "filter: cannot change on an existing subscription", d);
            return;
        }
        json_int_t created = json_integer_value(json_object_get(old, "created_ms"));
        if (created > 0)
            sp->sub->created_ms = created;
        /* A PUT that does not name "paused" keeps the state :pause / :resume left. */
        if (!sp->explicit_paused)
            sp->sub->paused = json_is_true(json_object_get(old, "paused"));
    }
    json_decref(old);
    if (fe_call_aborted(&sp->base))
        return;
    int rc = fe_netcheck_start(sp->base.fe, sp->sub, on_sub_netchecked, sp);
    if (rc != MSM_OK)
        fe_call_unavailable(&sp->base, msm_err_str(rc));
}

/* push_tls's PEM parses and its key is the certificate's: a 400 now rather than failed pushes
 * later. The match matters beyond that: libcurl reuses a connection for the same certificate
 * without looking at the key, so a key that is not the certificate's must never be stored. */
static void check_push_tls_pem(const msm_sub_t *s, msm_json_err_t *e)
{
    const msm_push_tls_t *t = &s->push_tls;
    char why[256];
    msm_json_path_push_key(e, "push_tls");
    if (t->ca_pem && msm_pem_certs_check(t->ca_pem, why, sizeof(why)) < 0)
        msm_json_err_add(e, "ca_pem", "%s", why);
    const char *cert = t->client_cert_pem, *key = t->client_key_pem;
    if (cert && msm_pem_certs_check(cert, why, sizeof(why)) < 0)
        msm_json_err_add(e, "client_cert_pem", "%s", why);
    else if (cert && msm_pem_key_matches(cert, key, why, sizeof(why)) != MSM_OK)
        msm_json_err_add(e, "client_key_pem", "%s", why);
    msm_json_path_pop(e);
}

static void sub_put(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    const char *name = msm_http_req_param(req, "name");
    json_t *body;
    if (fe_parse_body(req, 0, &body) != 0)
        return;
    msm_json_err_t e;
    msm_json_err_init(&e);
    msm_sub_t *s = msm_sub_from_json(name, body, &e);
    int explicit_paused = json_object_get(body, "paused") != NULL;
    json_decref(body);
    if (s)
        check_push_tls_pem(s, &e);
    if (s && msm_json_err_count(&e) > 0) {
        msm_sub_free(s);
        s = NULL;
    }
    if (!s) {
        respond_invalid(req, &e);
        msm_json_err_deinit(&e);
        return;
    }
    msm_json_err_deinit(&e);
    if (!msm_access_can(req, "subscribe", s->topic)) {
        /* A subscription receives its topic's events: its scope must cover the topic too. */
        char msg[300];
        snprintf(msg, sizeof(msg), "no subscribe scope for topic \"%s\"", s->topic);
        msm_sub_free(s);
        msm_http_respond_error(req, 403, "PERMISSION_DENIED", msg, NULL);
        return;
    }
    char kt[KEY_MAX], ks[KEY_MAX];
    sub_put_t *sp = hash_key(fe, MSM_KEY_TOPICS, kt, sizeof(kt)) >= 0 &&
                            hash_key(fe, MSM_KEY_SUBS, ks, sizeof(ks)) >= 0
                        ? fe_call_new(fe, req, sizeof(*sp))
                        : NULL;
    if (!sp) {
        msm_sub_free(s);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    sp->base.cleanup = sub_put_cleanup;
    sp->sub = s;
    sp->explicit_paused = explicit_paused;
    const char *argv[] = {kt, ks, s->topic, s->name};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_sub_check, on_sub_checked, sp, 2, 4, argv,
                            NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sp->base, msm_err_str(rc));
}

static void sub_get(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_subs, msm_http_req_param(req, "name"));
}

static void sub_list(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_subs, NULL);
}

static void sub_delete(msm_http_req_t *req, void *opaque)
{
    fe_sub_delete_start(opaque, req, msm_http_req_param(req, "name"));
}

static void sub_pause(msm_http_req_t *req, void *opaque)
{
    fe_sub_pause_start(opaque, req, msm_http_req_param(req, "name"), true);
}

static void sub_resume(msm_http_req_t *req, void *opaque)
{
    fe_sub_pause_start(opaque, req, msm_http_req_param(req, "name"), false);
}

int fe_control_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"GET", "/v1/topics", topic_list},
        {"PUT", "/v1/topics/{topic}", topic_put},
        {"GET", "/v1/topics/{topic}", topic_get},
        {"DELETE", "/v1/topics/{topic}", topic_delete},
        {"GET", "/v1/subscriptions", sub_list},
        {"PUT", "/v1/subscriptions/{name}", sub_put},
        {"GET", "/v1/subscriptions/{name}", sub_get},
        {"DELETE", "/v1/subscriptions/{name}", sub_delete},
        {"POST", "/v1/subscriptions/{name}:pause", sub_pause},
        {"POST", "/v1/subscriptions/{name}:resume", sub_resume},
    };
    fe->fe_sub_check = msm_redis_script_new(SUB_CHECK_LUA);
    if (!fe->fe_sub_check)
        return MSM_ERR_NOMEM;
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]),
                                  fe);
}
