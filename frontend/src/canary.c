/* SPDX-License-Identifier: MIT */
/* Delivery canaries (router/README.md "Delivery canaries"): POST …/canary:promote and
 * :rollback write the canary's shared state (MSM_KEY_CANARY), which every router reads each
 * second; and the "canary" object of GET …/stats, from that state and the routers' window
 * reports (MSM_KEY_CANARY_REPORT). */
#include "tasks_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPORT_FRESH_MS 10000 /* a router's window report older than this is ignored */

/* The effective share of the requests the canary gets in @p state. */
static double share_of(const json_t *canary, const char *state)
{
    if (strcmp(state, "rolled_back") == 0)
        return 0;
    if (strcmp(state, "promoted") == 0)
        return 1;
    return json_number_value(json_object_get(canary, "share"));
}

/* A state hash (HGETALL as an object) that is about @p version; else the default, active. */
static const char *state_of(const json_t *hash, const char *version, const char **reason,
                            json_int_t *at)
{
    const char *v = json_string_value(json_object_get(hash, "version"));
    const char *st = json_string_value(json_object_get(hash, "state"));
    *reason = "";
    *at = 0;
    if (!v || !st || strcmp(v, version) != 0)
        return "active";
    const char *r = json_string_value(json_object_get(hash, "reason"));
    const char *a = json_string_value(json_object_get(hash, "at"));
    *reason = r ? r : "";
    *at = a ? strtoll(a, NULL, 10) : 0;
    return st;
}

/* The answer of promote / rollback, and the head of the stats' "canary". */
static json_t *state_json(const json_t *canary, const char *state, const char *reason,
                          json_int_t at)
{
    return json_pack("{s:O,s:f,s:s,s:s,s:o}", "version", json_object_get(canary, "version"),
                     "share", share_of(canary, state), "state", state, "reason", reason, "at",
                     fe_time_json(at));
}

/* ---- stats ---- */

json_t *fe_canary_stats(const json_t *sub, const json_t *hash, const json_t *reports)
{
    const json_t *canary = json_object_get(sub, "canary");
    const char *version = json_string_value(json_object_get(canary, "version"));
    if (!version)
        return NULL;
    const char *reason;
    json_int_t at;
    const char *state = state_of(hash, version, &reason, &at);
    json_t *o = state_json(canary, state, reason, at);
    /* Summed over the routers that reported lately on this version; p99 is the highest
     * router's (each router sees its own share of the traffic). */
    static const char *const sides[] = {"canary", "baseline"};
    int64_t now = msm_time_unix_ms();
    for (int s = 0; o && s < 2; s++) {
        json_int_t events = 0, failures = 0, p99 = 0;
        size_t i;
        json_t *r;
        json_array_foreach(reports, i, r) {
            const char *v = json_string_value(json_object_get(r, "version"));
            if (!v || strcmp(v, version) != 0 ||
                now - json_integer_value(json_object_get(r, "updated_ms")) > REPORT_FRESH_MS)
                continue;
            const json_t *w = json_object_get(r, sides[s]);
            events += json_integer_value(json_object_get(w, "events"));
            failures += json_integer_value(json_object_get(w, "failures"));
            json_int_t p = json_integer_value(json_object_get(w, "p99_ms"));
            p99 = p > p99 ? p : p99;
        }
        json_object_set_new(o, sides[s],
                            json_pack("{s:I,s:f,s:I}", "events", events, "failure_ratio",
                                      events ? (double)failures / (double)events : 0.0,
                                      "p99_ms", p99));
    }
    return o;
}

/* ---- POST …/canary:promote and :rollback ---- */

static void on_written(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    const json_t *canary = json_object_get(sc->sub, "canary");
    msm_log(MSM_LOG_INFO, "control", "subscription %s: canary %s %s by request", sc->name,
            json_string_value(json_object_get(canary, "version")), sc->state);
    fe_call_json(&sc->base, 200,
                 state_json(canary, sc->state, "by request", (json_int_t)sc->at_ms));
}

/* The state is replaced whatever it was (an operator's word wins over a router's verdict);
 * "announced" goes, so that one router announces the new state on the lifecycle topic. */
static void canary_next(sub_call_t *sc)
{
    const json_t *canary = json_object_get(sc->sub, "canary");
    const char *version = json_string_value(json_object_get(canary, "version"));
    if (!version) {
        char msg[512];
        snprintf(msg, sizeof(msg), "subscription %s has no canary", sc->name);
        fe_call_error(&sc->base, 409, "FAILED_PRECONDITION", msg, NULL);
        return;
    }
    char key[TASKS_KEY_MAX], at[24];
    sc->at_ms = msm_time_unix_ms();
    snprintf(at, sizeof(at), "%lld", (long long)sc->at_ms);
    const char *argv[] = {"EVAL",
                          "redis.call('HDEL', KEYS[1], 'announced')\n"
                          "return redis.call('HSET', KEYS[1], 'version', ARGV[1], 'state', "
                          "ARGV[2], 'reason', 'by request', 'at', ARGV[3])",
                          "1",
                          key,
                          version,
                          sc->state,
                          at};
    int rc = SUB_KEY(sc, key, MSM_KEY_CANARY);
    if (rc >= 0)
        rc = msm_redis_command_argv(sc->base.fe->fe_deps.redis, on_written, sc, 7, argv, NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

static void canary_set(msm_http_req_t *req, void *opaque, const char *state)
{
    sub_call_t *sc = fe_sub_call_start(opaque, req, canary_next);
    if (!sc)
        return;
    if (!(sc->state = strdup(state))) {
        fe_call_error(&sc->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    fe_sub_call_go(sc);
}

static void promote(msm_http_req_t *req, void *opaque)
{
    canary_set(req, opaque, "promoted");
}

static void rollback(msm_http_req_t *req, void *opaque)
{
    canary_set(req, opaque, "rolled_back");
}

int fe_canary_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"POST", "/v1/subscriptions/{name}/canary:promote", promote},
        {"POST", "/v1/subscriptions/{name}/canary:rollback", rollback},
    };
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]),
                                  fe);
}
