/* SPDX-License-Identifier: MIT */
/* Recurring schedules (docs/schedules.md): PUT, GET and DELETE /v1/schedules/{name} and the
 * list. A PUT validates the schedule (msm/schedule.h) and its event exactly as one event of
 * a JSON publish (publish_json.c), runs the publish pipeline's schema step on that event (a
 * topic bound to a subject gets it converted here, once), and stores the schedule with the
 * packed envelope the scheduler publishes at every tick (store and version bump in one
 * script). Reads go to Redis directly, as for topics; the envelope is not shown. */
#include "pub_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/schedule.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC     "schedules"
#define KEY_MAX 512
/* Every daemon loads every schedule with each registry reload (and the scheduler keeps a
 * timer each): at most FE_SCHEDULES_MAX * FE_SCHEDULE_STORED_MAX bytes (32 MB). */
#define FE_SCHEDULE_EVENT_MAX  ((size_t)8 * 1024)  /* the event's payload */
#define FE_SCHEDULE_STORED_MAX ((size_t)32 * 1024) /* the stored JSON, envelope included */
#define FE_SCHEDULES_MAX       1000

static void schedule_view(json_t *o)
{
    json_object_del(o, "envelope");
}

const fe_kind_t fe_kind_schedules = {MSM_KEY_SCHEDULES, "schedule", "schedules", 0, 0,
                                     schedule_view};

/* KEYS: the schedules hash; ARGV: name. -> {the stored schedule or false, how many there are} */
static const char CHECK_LUA[] =
    "return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HLEN', KEYS[1])}";

/* KEYS: the schedules hash, the last_due hash, the registry version; ARGV: name. The schedule
 * and its state go together, and daemons see it within a poll. -> 1, or 0 when not there. */
static const char DELETE_LUA[] = "local n = redis.call('HDEL', KEYS[1], ARGV[1])\n"
                                 "if n > 0 then\n"
                                 "  redis.call('HDEL', KEYS[2], ARGV[1])\n"
                                 "  redis.call('INCR', KEYS[3])\n"
                                 "end\n"
                                 "return n\n";

/* ---- PUT ---- */

typedef struct {
    fe_pub_t pub; /* the schema step of the publish pipeline, prepare_only */
    msm_schedule_t *sched;
} put_t;

static void put_release(fe_pub_t *p)
{
    msm_schedule_free(((put_t *)p)->sched);
}

/* What a schedule's event may not carry (the rest is a publish's event: publish_json.c). */
static void check_event_fields(msm_json_err_t *e, const json_t *event)
{
    static const struct {
        const char *field, *why;
    } refused[] = {
        {"delay_ms", "each tick is delivered at its due time"},
        {"deliver_at", "each tick is delivered at its due time"},
        {"deadline", "one date cannot suit every tick"},
        {"idempotency_key", "each tick has its own (msm-schedule:<name>:<due unix ms>)"},
        {"traceparent", "each tick starts a trace of its own"},
        {"tracestate", "each tick starts a trace of its own"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (json_object_get(event, refused[i].field))
            msm_json_err_add(e, refused[i].field, "is not allowed in a schedule's event: %s",
                             refused[i].why);
    }
    const json_t *attrs = json_object_get(event, "attributes");
    if (!json_is_object(attrs))
        return;
    size_t n = json_object_size(attrs);
    if (n > FE_ATTRS_MAX - 2 && n <= FE_ATTRS_MAX)
        msm_json_err_add(e, "attributes",
                         "at most %d attributes: the scheduler adds " MSM_SCHEDULE_ATTR_NAME
                         " and " MSM_SCHEDULE_ATTR_DUE,
                         FE_ATTRS_MAX - 2);
    msm_json_path_push_key(e, "attributes");
    static const char *const reserved[] = {MSM_SCHEDULE_ATTR_NAME, MSM_SCHEDULE_ATTR_DUE};
    for (size_t i = 0; i < 2; i++) {
        if (json_object_get(attrs, reserved[i]))
            msm_json_err_add(e, reserved[i], "is set by the scheduler at every tick");
    }
    msm_json_path_pop(e);
}

static void on_stored(int err, const char *reason, void *opaque)
{
    put_t *pt = opaque;
    if (err != MSM_OK) {
        fe_call_unavailable(&pt->pub.base, reason);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "schedule %s stored (topic %s)", pt->sched->name, pt->sched->topic);
    json_t *answer = msm_schedule_to_json(pt->sched, 0);
    if (answer)
        fe_call_json(&pt->pub.base, 200, answer);
    else
        fe_call_error(&pt->pub.base, 500, "INTERNAL", "out of memory", NULL);
}

/* The stored schedule of that name (its created_ms stays) and the count (bounded). */
static void on_checked(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    put_t *pt = opaque;
    fe_t *fe = pt->pub.base.fe;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2))
        why = "unexpected reply from Redis";
    if (why) {
        fe_call_unavailable(&pt->pub.base, why);
        return;
    }
    json_t *old = fe_reply_json(reply->element[0]);
    int64_t created = json_integer_value(json_object_get(old, "created_ms"));
    json_decref(old);
    if (!created && msm_redis_reply_int(reply->element[1], 0) >= FE_SCHEDULES_MAX) {
        char msg[128];
        snprintf(msg, sizeof(msg), "there are %d schedules already, the most there may be",
                 FE_SCHEDULES_MAX);
        fe_call_error(&pt->pub.base, 409, "RESOURCE_EXHAUSTED", msg, NULL);
        return;
    }
    if (fe_call_aborted(&pt->pub.base))
        return;
    int64_t now = msm_time_unix_ms();
    pt->sched->created_ms = created > 0 ? created : now;
    pt->sched->updated_ms = now;
    json_t *j = msm_schedule_to_json(pt->sched, 1);
    char *text = j ? msm_json_dump(j, NULL) : NULL;
    if (text && strlen(text) > FE_SCHEDULE_STORED_MAX) { /* attributes, keys: beyond the payload */
        json_t *d = json_pack("[{s:s,s:s}]", "field", "event", "description",
                              "too large: a schedule is stored in at most 32 KiB");
        fe_call_error(&pt->pub.base, 413, "PAYLOAD_TOO_LARGE",
                      "event: too large: a schedule is stored in at most 32 KiB", d);
        free(text);
        json_decref(j);
        return;
    }
    free(text);
    int rc = j ? msm_registry_put(fe->fe_deps.redis, MSM_KEY_SCHEDULES, pt->sched->name, j,
                                  on_stored, pt)
               : MSM_ERR_NOMEM;
    json_decref(j);
    if (rc != MSM_OK)
        fe_call_unavailable(&pt->pub.base, msm_err_str(rc));
}

/* The event passed the schema step: packed as the envelope every tick starts from. */
static void on_prepared(fe_pub_t *p, int status, json_t *error)
{
    put_t *pt = (put_t *)p;
    fe_t *fe = p->base.fe;
    if (status != 200) {
        fe_call_json(&p->base, status, error);
        return;
    }
    Msm__V1__Event env;
    fe_event_envelope(&p->batch.evs[0], p->topic, &env);
    size_t len = msm__v1__event__get_packed_size(&env);
    if (!(pt->sched->envelope = malloc(len ? len : 1))) {
        fe_call_error(&p->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    pt->sched->envelope_len = msm__v1__event__pack(&env, pt->sched->envelope);
    if (fe_call_aborted(&p->base))
        return;
    char key[KEY_MAX];
    msm_redis_key(fe->fe_deps.redis, key, sizeof(key), "%s", MSM_KEY_SCHEDULES);
    const char *argv[] = {key, pt->sched->name};
    int rc =
        msm_redis_eval(fe->fe_deps.redis, fe->fe_sched_check, on_checked, pt, 1, 2, argv, NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&p->base, msm_err_str(rc));
}

static void schedule_put(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    const char *name = msm_http_req_param(req, "name");
    json_t *body;
    if (fe_parse_body(req, 0, &body) != 0)
        return;
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    msm_schedule_t *s = msm_schedule_from_json(name, body, 0, &e);
    const char *subject = NULL;
    int topic_found = s && fe_topic_lookup(fe, s->topic, &subject);
    json_t *event = json_object_get(body, "event");
    fe_batch_t b = {0};
    if (json_is_object(event)) {
        /* The event's errors are "event.<field>", as a publish's are "events[i].<field>". */
        fe_parse_ctx_t ctx = fe_parse_ctx(fe);
        if (ctx.max_event_bytes > FE_SCHEDULE_EVENT_MAX)
            ctx.max_event_bytes = FE_SCHEDULE_EVENT_MAX;
        msm_json_path_push_key(&e, "event");
        msm_json_path_push_key(&big, "event");
        check_event_fields(&e, event);
        fe_parse_json_event(&ctx, json_incref(event), subject != NULL, &b, &e, &big);
        msm_json_path_pop(&e);
        msm_json_path_pop(&big);
        b.event_path = "event";
    }
    json_decref(body);
    int status = !s || msm_json_err_count(&e) ? 400 : msm_json_err_count(&big) ? 413 : 0;
    if (status) {
        json_t *answer = status == 400 ? msm_json_err_body(&e, NULL)
                                       : msm_json_err_body(&big, "PAYLOAD_TOO_LARGE");
        if (answer)
            msm_http_respond_json(req, status, answer);
        else
            msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
    } else if (!topic_found) {
        char msg[300];
        snprintf(msg, sizeof(msg), "topic %s not found", s->topic);
        msm_http_respond_error(
            req, 404, "NOT_FOUND", msg,
            json_pack("[{s:s,s:s}]", "field", "topic", "description", "no such topic"));
    }
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    if (status || !topic_found) {
        fe_batch_free(&b);
        msm_schedule_free(s);
        return;
    }
    put_t *pt =
        fe_pub_new(fe, req, sizeof(*pt), s->topic, subject, on_prepared, msm_time_mono_us());
    if (!pt) { /* answered */
        fe_batch_free(&b);
        msm_schedule_free(s);
        return;
    }
    pt->pub.release = put_release;
    pt->pub.prepare_only = 1;
    pt->pub.batch = b;
    pt->sched = s;
    fe_pub_submit(&pt->pub);
}

/* ---- GET, list, DELETE ---- */

static void schedule_get(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_schedules, msm_http_req_param(req, "name"));
}

static void schedule_list(msm_http_req_t *req, void *opaque)
{
    fe_read_start(opaque, req, &fe_kind_schedules, NULL);
}

typedef struct {
    fe_call_t base;
    char name[MSM_NAME_MAX + 1];
} delete_t;

static void on_deleted(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    delete_t *dc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&dc->base, why);
        return;
    }
    if (msm_redis_reply_int(reply, 0) == 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "schedule %s not found", dc->name);
        fe_call_error(&dc->base, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "schedule %s deleted", dc->name);
    fe_call_json(&dc->base, 200, json_object());
}

static void schedule_delete(msm_http_req_t *req, void *opaque)
{
    fe_t *fe = opaque;
    const char *name = msm_http_req_param(req, "name");
    if (!msm_name_valid(name)) {
        fe_not_found(req, "schedule", name);
        return;
    }
    delete_t *dc = fe_call_new(fe, req, sizeof(*dc));
    if (!dc) {
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    snprintf(dc->name, sizeof(dc->name), "%s", name);
    char ks[KEY_MAX], kl[KEY_MAX], kv[KEY_MAX];
    msm_redis_key(fe->fe_deps.redis, ks, sizeof(ks), "%s", MSM_KEY_SCHEDULES);
    msm_redis_key(fe->fe_deps.redis, kl, sizeof(kl), "%s", MSM_KEY_SCHEDULES_LAST_DUE);
    msm_redis_key(fe->fe_deps.redis, kv, sizeof(kv), "%s", MSM_KEY_VERSION);
    const char *argv[] = {ks, kl, kv, name};
    int rc =
        msm_redis_eval(fe->fe_deps.redis, fe->fe_sched_delete, on_deleted, dc, 3, 4, argv, NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&dc->base, msm_err_str(rc));
}

int fe_schedule_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"GET", "/v1/schedules", schedule_list},
        {"PUT", "/v1/schedules/{name}", schedule_put},
        {"GET", "/v1/schedules/{name}", schedule_get},
        {"DELETE", "/v1/schedules/{name}", schedule_delete},
    };
    fe->fe_sched_check = msm_redis_script_new(CHECK_LUA);
    fe->fe_sched_delete = msm_redis_script_new(DELETE_LUA);
    if (!fe->fe_sched_check || !fe->fe_sched_delete)
        return MSM_ERR_NOMEM;
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]), fe);
}
