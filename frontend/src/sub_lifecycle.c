/* SPDX-License-Identifier: MIT */
/* A subscription's life beyond PUT (docs/pipeline.md "Subscription barrier, pause,
 * delete"): POST …:pause / :resume flip "paused" in its registry JSON, and DELETE removes
 * the registry entry first (every daemon stops using it), then its streams
 * ready|dispatch|status.<sub> and every key "sub:{<sub>}:*" (SCAN in pages, UNLINK). The
 * DELETE answers once that cleanup is done, so a PUT of the same name right after it
 * starts empty and no late cleanup can remove the new subscription's streams. */
#include "fe_int.h"

#include "msm/err.h"
#include "msm/json.h"
#include "msm/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC        "control"
#define KEY_MAX    512
#define SCAN_COUNT "500" /* keys looked at per SCAN page: one bounded reply per page */

/* ---- POST /v1/subscriptions/{name}:pause and :resume ---- */

typedef struct {
    fe_call_t base;
    char *name;
    bool paused;    /* the value to store */
    msm_sub_t *sub; /* the stored subscription, changed */
} pause_call_t;

static void pause_cleanup(fe_call_t *c)
{
    pause_call_t *pc = (pause_call_t *)c;
    free(pc->name);
    msm_sub_free(pc->sub);
}

static void on_pause_stored(int err, const char *reason, void *opaque)
{
    pause_call_t *pc = opaque;
    if (err != MSM_OK) {
        fe_call_unavailable(&pc->base, reason);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "subscription %s %s", pc->name,
            pc->paused ? "paused" : "resumed");
    fe_call_json(&pc->base, 200, msm_sub_to_json(pc->sub, false));
}

/* The stored JSON parsed as a PUT body would be (it was one), paused set, stored again. */
static void on_pause_read(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    pause_call_t *pc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&pc->base, why);
        return;
    }
    json_t *stored = fe_reply_json(reply);
    if (!json_is_object(stored)) {
        json_decref(stored);
        char msg[512];
        snprintf(msg, sizeof(msg), "subscription %s not found", pc->name);
        fe_call_error(&pc->base, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    msm_json_err_t e;
    msm_json_err_init(&e);
    pc->sub = msm_sub_from_json(pc->name, stored, &e);
    msm_json_err_deinit(&e);
    json_decref(stored);
    if (!pc->sub) {
        fe_call_error(&pc->base, 500, "INTERNAL", "the stored subscription is not valid", NULL);
        return;
    }
    if (fe_call_aborted(&pc->base))
        return;
    pc->sub->paused = pc->paused;
    json_t *j = msm_sub_to_json(pc->sub, true);
    int rc = j ? msm_registry_put(r, MSM_KEY_SUBS, pc->name, j, on_pause_stored, pc)
               : MSM_ERR_NOMEM;
    json_decref(j);
    if (rc != MSM_OK)
        fe_call_unavailable(&pc->base, msm_err_str(rc));
}

void fe_sub_pause_start(fe_t *fe, msm_http_req_t *req, const char *name, bool paused)
{
    if (!msm_name_valid(name)) {
        fe_not_found(req, "subscription", name);
        return;
    }
    char key[KEY_MAX];
    pause_call_t *pc = msm_redis_key(fe->fe_deps.redis, key, sizeof(key), "%s", MSM_KEY_SUBS) >= 0
                           ? fe_call_new(fe, req, sizeof(*pc))
                           : NULL;
    if (!pc || !(pc->name = strdup(name))) {
        if (pc)
            fe_call_end(&pc->base);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    pc->base.cleanup = pause_cleanup;
    pc->paused = paused;
    int rc = msm_redis_command(fe->fe_deps.redis, on_pause_read, pc, "HGET %s %s", key, name);
    if (rc != MSM_OK)
        fe_call_unavailable(&pc->base, msm_err_str(rc));
}

/* ---- DELETE /v1/subscriptions/{name} ---- */

typedef struct {
    fe_call_t base;
    char *name;
    char *match;        /* SCAN pattern of the subscription's keys */
    int waiting;        /* stream deletes and key pages still due */
    char *error;        /* the first cleanup failure */
    long long unlinked; /* keys removed, for the log */
} del_call_t;

static void del_cleanup(fe_call_t *c)
{
    del_call_t *dc = (del_call_t *)c;
    free(dc->name);
    free(dc->match);
    free(dc->error);
}

static void del_fail(del_call_t *dc, const char *why)
{
    if (!dc->error)
        dc->error = strdup(why ? why : "unknown error");
}

/* One step of the cleanup ended; the last one answers. */
static void del_step_done(del_call_t *dc)
{
    if (--dc->waiting > 0)
        return;
    if (dc->error) {
        char msg[768];
        snprintf(msg, sizeof(msg),
                 "subscription %s deleted, but removing its data failed: %s", dc->name,
                 dc->error);
        msm_log(MSM_LOG_WARN, FAC, "%s", msg);
        fe_call_error(&dc->base, 503, "UNAVAILABLE", msg, NULL);
        return;
    }
    msm_log(MSM_LOG_INFO, FAC, "subscription %s deleted (%lld keys removed)", dc->name,
            dc->unlinked);
    fe_call_json(&dc->base, 200, json_object());
}

/* "<ns>:sub:{<name>}:*" with the glob characters of the literal part escaped (the namespace
 * is configuration and may hold any of them). */
static char *keys_match(const fe_t *fe, const char *name)
{
    char prefix[KEY_MAX];
    int n = msm_redis_key(fe->fe_deps.redis, prefix, sizeof(prefix), MSM_KEY_STATS, name);
    if (n < 0)
        return NULL;
    /* MSM_KEY_STATS is "sub:{%s}:stats": keep "…}:" and drop the "stats" after it. */
    prefix[n - strlen("stats")] = '\0';
    char *out = malloc(2 * strlen(prefix) + 2);
    if (!out)
        return NULL;
    char *w = out;
    for (const char *p = prefix; *p; p++) {
        if (strchr("*?[]\\", *p))
            *w++ = '\\';
        *w++ = *p;
    }
    *w++ = '*';
    *w = '\0';
    return out;
}

static void scan_page(del_call_t *dc, const char *cursor);

static void on_unlinked(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    del_call_t *dc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why)
        del_fail(dc, why);
    else
        dc->unlinked += msm_redis_reply_int(reply, 0);
    del_step_done(dc);
}

/* A page of keys: UNLINK them and ask for the next page in the same pipeline. */
static void on_scan(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    del_call_t *dc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
                 reply->element[0]->type != REDIS_REPLY_STRING ||
                 reply->element[1]->type != REDIS_REPLY_ARRAY))
        why = "unexpected SCAN reply";
    if (why) {
        del_fail(dc, why);
        del_step_done(dc);
        return;
    }
    const redisReply *keys = reply->element[1];
    if (keys->elements > 0) {
        const char **argv = calloc(keys->elements + 1, sizeof(*argv));
        size_t *argvlen = calloc(keys->elements + 1, sizeof(*argvlen));
        int rc = MSM_ERR_NOMEM;
        if (argv && argvlen) {
            argv[0] = "UNLINK";
            argvlen[0] = strlen("UNLINK");
            for (size_t i = 0; i < keys->elements; i++) {
                argv[i + 1] = keys->element[i]->str;
                argvlen[i + 1] = keys->element[i]->len;
            }
            rc = msm_redis_command_argv(r, on_unlinked, dc, (int)keys->elements + 1, argv,
                                        argvlen);
        }
        free(argv);
        free(argvlen);
        if (rc == MSM_OK)
            dc->waiting++;
        else
            del_fail(dc, msm_err_str(rc));
    }
    if (strcmp(reply->element[0]->str, "0") != 0 && !dc->error)
        scan_page(dc, reply->element[0]->str);
    del_step_done(dc);
}

static void scan_page(del_call_t *dc, const char *cursor)
{
    const char *argv[] = {"SCAN", cursor, "MATCH", dc->match, "COUNT", SCAN_COUNT};
    int rc = msm_redis_command_argv(dc->base.fe->fe_deps.redis, on_scan, dc, 6, argv, NULL);
    if (rc == MSM_OK)
        dc->waiting++;
    else
        del_fail(dc, msm_err_str(rc));
}

static void on_stream_deleted(msm_err_t err, const char *reason, void *opaque)
{
    del_call_t *dc = opaque;
    if (err != MSM_OK && err != MSM_ERR_NOTFOUND)
        del_fail(dc, reason ? reason : msm_err_str(err));
    del_step_done(dc);
}

/* The three streams and the key pages, side by side; answered when all are done. */
static void del_cleanup_start(del_call_t *dc)
{
    fe_t *fe = dc->base.fe;
    const char *const streams[] = {MSM_STREAM_READY, MSM_STREAM_DISPATCH, MSM_STREAM_STATUS};
    dc->waiting = 1; /* held until every step is started */
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
        char stream[KEY_MAX];
        snprintf(stream, sizeof(stream), streams[i], dc->name);
        int rc = msm_stream_delete(fe->fe_deps.stream, stream, on_stream_deleted, dc);
        if (rc == MSM_OK)
            dc->waiting++;
        else
            del_fail(dc, msm_err_str(rc));
    }
    if (!(dc->match = keys_match(fe, dc->name)))
        del_fail(dc, "out of memory");
    else
        scan_page(dc, "0");
    del_step_done(dc);
}

static void on_registry_deleted(int err, const char *reason, void *opaque)
{
    del_call_t *dc = opaque;
    if (err == MSM_ERR_NOTFOUND) {
        char msg[512];
        snprintf(msg, sizeof(msg), "subscription %s not found", dc->name);
        fe_call_error(&dc->base, 404, "NOT_FOUND", msg, NULL);
        return;
    }
    if (err != MSM_OK) {
        fe_call_unavailable(&dc->base, reason);
        return;
    }
    if (!fe_call_aborted(&dc->base))
        del_cleanup_start(dc);
}

void fe_sub_delete_start(fe_t *fe, msm_http_req_t *req, const char *name)
{
    if (!msm_name_valid(name)) {
        fe_not_found(req, "subscription", name);
        return;
    }
    del_call_t *dc = fe_call_new(fe, req, sizeof(*dc));
    if (!dc || !(dc->name = strdup(name))) {
        if (dc)
            fe_call_end(&dc->base);
        msm_http_respond_error(req, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    dc->base.cleanup = del_cleanup;
    int rc = msm_registry_delete(fe->fe_deps.redis, MSM_KEY_SUBS, name, on_registry_deleted, dc);
    if (rc != MSM_OK)
        fe_call_unavailable(&dc->base, msm_err_str(rc));
}
