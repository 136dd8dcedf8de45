/* SPDX-License-Identifier: MIT */
/* Delivery canaries (router/README.md "Delivery canaries"): while a subscription's canary is
 * active, `share` of its requests go to the endpoints of the canary version; each side's
 * last outcomes are kept in a window (canary_window.c) and judged once a second. A router
 * that finds the canary worse rolls it back for every router: the state lives in Redis
 * (MSM_KEY_CANARY), written by one idempotent script, and every router reads it each second,
 * off the hot path. Promotion and manual rollback come from the frontend through that hash. */
#include "rt_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX       512
#define REPORT_TTL_MS "30000" /* the report goes when no router writes it any more */

/* KEYS: canary hash; ARGV: version, mode, reason, at.
 * mode "rollback": from active (or no state, or a state about another version) to
 * rolled_back, announced by the writer: 1 when this call changed it, 0 when another
 * router or the frontend got there first.
 * mode "claim": the right to announce the current state (set by the frontend): 1 once. */
static const char CANARY_LUA[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then st = false end\n"
    "if ARGV[2] == 'rollback' then\n"
    "  if st and st ~= 'active' then return 0 end\n"
    "  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'state', 'rolled_back', 'reason',"
    " ARGV[3], 'at', ARGV[4], 'announced', 'rolled_back')\n"
    "  return 1\n"
    "end\n"
    "if not st or st == 'active' or redis.call('HGET', KEYS[1], 'announced') == st then"
    " return 0 end\n"
    "redis.call('HSET', KEYS[1], 'announced', st)\n"
    "return 1\n";

/* A callback's way back to its subscription, which may be freed meanwhile. */
typedef struct {
    rt_sub_t *sub; /* NULL once the subscription is gone */
    char *version; /* the canary version asked about */
    char reason[256];
    rt_canary_state_t state; /* "claim": the state announced */
} token_t;

static token_t *token_new(rt_sub_t *sub)
{
    token_t *t = calloc(1, sizeof(*t));
    if (t && !(t->version = strdup(sub->canary.version))) {
        free(t);
        return NULL;
    }
    if (t) {
        t->sub = sub;
        sub->canary.token = t;
    }
    return t;
}

/* Ends a callback: @returns the subscription when it still runs the same canary. */
static rt_sub_t *token_end(token_t *t)
{
    rt_sub_t *sub = t->sub;
    if (sub)
        sub->canary.token = NULL;
    if (sub && (!sub->canary.version || strcmp(sub->canary.version, t->version) != 0))
        sub = NULL;
    return sub;
}

static void token_free(token_t *t)
{
    free(t->version);
    free(t);
}

/* ---- settings and metrics ---- */

int msm__rt_canary_metrics(router_t *rt)
{
    static const char *const by_sub[] = {"subscription", NULL};
    int rc = msm_metrics_counter(rt->env.metrics, "msm_router_canary_rollbacks_total",
                                 "canaries this router rolled back", by_sub,
                                 &rt->m_canary_rollbacks);
    if (rc == MSM_OK)
        rc = msm_metrics_gauge(rt->env.metrics, "msm_router_canary_state",
                               "the canary's state: 0 none, 1 active, 2 rolled back, "
                               "3 promoted",
                               by_sub, &rt->m_canary_state);
    return rc;
}

static void set_state(rt_sub_t *sub, rt_canary_state_t st)
{
    rt_canary_t *c = &sub->canary;
    if (!c->m_state)
        c->m_state = msm_metric_labels(sub->rt->m_canary_state, sub->name, NULL);
    c->state = st;
    msm_gauge_set(c->m_state, (double)st);
}

void msm__rt_canary_free(rt_sub_t *sub)
{
    rt_canary_t *c = &sub->canary;
    if (c->token)
        ((token_t *)c->token)->sub = NULL;
    c->token = NULL;
    msm__rt_window_deinit(&c->win[0]);
    msm__rt_window_deinit(&c->win[1]);
    free(c->version);
    c->version = NULL;
}

int msm__rt_canary_reset(rt_sub_t *sub)
{
    rt_canary_t *c = &sub->canary;
    const msm_canary_t *conf = sub->conf ? &sub->conf->canary : NULL;
    const char *v = conf ? conf->version : NULL;
    if (v && c->version && strcmp(v, c->version) == 0 && c->min_events == conf->min_events)
        return MSM_OK; /* the same canary: what was measured stays */
    rt_canary_state_t was = c->state;
    msm__rt_canary_free(sub);
    c->credit = 0;
    if (!v) {
        if (was != RT_CANARY_NONE)
            set_state(sub, RT_CANARY_NONE);
        return MSM_OK;
    }
    c->min_events = conf->min_events;
    if (!(c->version = strdup(v)) || msm__rt_window_init(&c->win[0], conf->min_events) ||
        msm__rt_window_init(&c->win[1], conf->min_events)) {
        msm__rt_canary_free(sub);
        return MSM_ERR_NOMEM;
    }
    set_state(sub, RT_CANARY_ACTIVE); /* until the shared state says otherwise */
    return MSM_OK;
}

/* ---- the hot path ---- */

int msm__rt_canary_is(const rt_sub_t *sub, size_t i)
{
    const char *v = sub->canary.version, *ev = sub->conf->endpoints[i].version;
    return v && ev && strcmp(v, ev) == 0;
}

int msm__rt_canary_side(rt_sub_t *sub)
{
    rt_canary_t *c = &sub->canary;
    switch (c->state) {
    case RT_CANARY_ACTIVE:
        return msm__rt_canary_split(&c->credit, sub->conf->canary.share);
    case RT_CANARY_ROLLED_BACK:
        return 0;
    default:
        return -1;
    }
}

void msm__rt_canary_observe(rt_sub_t *sub, const char *url, Msm__V1__OutcomeKind kind,
                            int64_t latency_ms)
{
    rt_canary_t *c = &sub->canary;
    if (c->state != RT_CANARY_ACTIVE || !url || !*url || !sub->conf ||
        kind == MSM__V1__OUTCOME_KIND__OUTCOME_KIND_NOT_PUSHED)
        return;
    for (size_t i = 0; i < sub->conf->nendpoints; i++) {
        if (strcmp(sub->conf->endpoints[i].url, url) == 0) {
            int failed = kind != MSM__V1__OUTCOME_KIND__OUTCOME_KIND_SUCCESS;
            msm__rt_window_add(&c->win[msm__rt_canary_is(sub, i)], failed, latency_ms);
            return;
        }
    }
}

/* ---- lifecycle events ---- */

static void on_announced(msm_err_t err, const char *reason, void *opaque)
{
    char *topic = opaque;
    if (err != MSM_OK)
        msm_log(MSM_LOG_WARN, RT_FACILITY,
                "lifecycle event not published to topic %s: %s (does the topic exist?)",
                topic, reason ? reason : msm_err_str(err));
    free(topic);
}

/* Announces on --lifecycle.topic that the canary went @p state (type msm.canary.<state>). */
static void announce(rt_sub_t *sub, const char *version, rt_canary_state_t st,
                     const char *reason)
{
    router_t *rt = sub->rt;
    const char *topic = rt->conf.lifecycle_topic;
    if (!topic || !*topic)
        return;
    const char *state = msm__rt_canary_state_name(st);
    json_t *body = json_pack("{s:s,s:s,s:s,s:s,s:I}", "subscription", sub->name, "version",
                             version, "state", state, "reason", reason ? reason : "", "at",
                             (json_int_t)msm_time_unix_ms());
    char type[64], stream[KEY_MAX];
    snprintf(type, sizeof(type), "msm.canary.%s", state);
    snprintf(stream, sizeof(stream), MSM_STREAM_EVENTS, topic);
    msm_buf_t buf = {0};
    char *owned = strdup(topic);
    int rc = msm_lifecycle_pack(topic, sub->name, type, body, &buf);
    json_decref(body);
    if (owned && rc == MSM_OK) {
        msm_record_t rec = {.key = sub->name, .key_len = strlen(sub->name),
                            .value = buf.data, .value_len = buf.len};
        if (msm_stream_append(rt->env.stream, stream, &rec, 1, on_announced, owned) != MSM_OK)
            on_announced(MSM_ERR_NOMEM, "cannot send", owned);
    } else {
        free(owned);
    }
    msm_buf_deinit(&buf);
}

/* ---- the shared state ---- */

static int canary_key(const rt_sub_t *sub, char *key, size_t n, const char *fmt)
{
    return msm_redis_key(sub->rt->env.redis, key, n, fmt, sub->name);
}

static void on_claimed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    token_t *t = opaque;
    rt_sub_t *sub = token_end(t);
    if (sub && !msm_redis_reply_err(reply, err) && msm_redis_reply_int(reply, 0) == 1)
        announce(sub, t->version, t->state, t->reason);
    token_free(t);
}

static void script(rt_sub_t *sub, token_t *t, const char *mode, msm_redis_reply_cb *cb)
{
    char key[KEY_MAX], at[24];
    snprintf(at, sizeof(at), "%lld", (long long)msm_time_unix_ms());
    const char *argv[] = {"EVAL", CANARY_LUA, "1", key, t->version, mode, t->reason, at};
    if (canary_key(sub, key, sizeof(key), MSM_KEY_CANARY) < 0 ||
        msm_redis_command_argv(sub->rt->env.redis, cb, t, 8, argv, NULL) != MSM_OK) {
        sub->canary.token = NULL;
        token_free(t);
    }
}

static void on_state(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    token_t *t = opaque;
    rt_sub_t *sub = token_end(t);
    if (!sub || msm_redis_reply_err(reply, err) || reply->type != REDIS_REPLY_ARRAY) {
        token_free(t);
        return;
    }
    const char *version = NULL, *state = NULL, *reason = "", *announced = "";
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const char *k = reply->element[i]->str, *v = reply->element[i + 1]->str;
        if (!k || !v)
            continue;
        if (strcmp(k, "version") == 0)
            version = v;
        else if (strcmp(k, "state") == 0)
            state = v;
        else if (strcmp(k, "reason") == 0)
            reason = v;
        else if (strcmp(k, "announced") == 0)
            announced = v;
    }
    /* A state about another version (an older canary) does not apply to this one. */
    rt_canary_state_t st = version && strcmp(version, t->version) == 0
                               ? msm__rt_canary_state_parse(state)
                               : RT_CANARY_NONE;
    if (st == RT_CANARY_NONE)
        st = RT_CANARY_ACTIVE;
    if (st != sub->canary.state) {
        msm_log(st == RT_CANARY_ROLLED_BACK ? MSM_LOG_WARN : MSM_LOG_INFO, RT_FACILITY,
                "subscription %s: canary %s %s%s%s", sub->name, t->version,
                msm__rt_canary_state_name(st), *reason ? ": " : "", reason);
        set_state(sub, st);
        if (st != RT_CANARY_ACTIVE)
            msm__rt_send_queued(sub); /* endpoints may have opened up */
    }
    if (st != RT_CANARY_ACTIVE && strcmp(announced, msm__rt_canary_state_name(st)) != 0) {
        t->state = st;
        snprintf(t->reason, sizeof(t->reason), "%s", reason);
        sub->canary.token = t;
        script(sub, t, "claim", on_claimed);
        return;
    }
    token_free(t);
}

static void on_rolled_back(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    token_t *t = opaque;
    rt_sub_t *sub = token_end(t);
    if (sub && !msm_redis_reply_err(reply, err) && msm_redis_reply_int(reply, 0) == 1) {
        msm_counter_inc(msm_metric_labels(sub->rt->m_canary_rollbacks, sub->name, NULL));
        announce(sub, t->version, RT_CANARY_ROLLED_BACK, t->reason);
    } else if (sub && msm_redis_reply_err(reply, err)) {
        msm_log(MSM_LOG_WARN, RT_FACILITY, "subscription %s: canary rollback not stored: %s",
                sub->name, msm_redis_reply_err(reply, err));
    }
    token_free(t);
}

static void on_reported(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    (void)reply;
    (void)err;
    (void)opaque; /* best effort: the next report comes in a second */
}

/* This router's windows, for the stats API (MSM_KEY_CANARY_REPORT). */
static void report(rt_sub_t *sub)
{
    const rt_canary_t *c = &sub->canary;
    char key[KEY_MAX];
    if (canary_key(sub, key, sizeof(key), MSM_KEY_CANARY_REPORT) < 0)
        return;
    json_t *j = json_pack(
        "{s:s,s:{s:I,s:I,s:I},s:{s:I,s:I,s:I},s:I}", "version", c->version, "canary", "events",
        (json_int_t)c->win[1].n, "failures", (json_int_t)c->win[1].nfailed, "p99_ms",
        (json_int_t)msm__rt_window_p99(&c->win[1]), "baseline", "events",
        (json_int_t)c->win[0].n, "failures", (json_int_t)c->win[0].nfailed, "p99_ms",
        (json_int_t)msm__rt_window_p99(&c->win[0]), "updated_ms",
        (json_int_t)msm_time_unix_ms());
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return;
    const char *hset[] = {"HSET", key, sub->rt->member, text};
    const char *expire[] = {"PEXPIRE", key, REPORT_TTL_MS};
    msm_redis_command_argv(sub->rt->env.redis, on_reported, NULL, 4, hset, NULL);
    msm_redis_command_argv(sub->rt->env.redis, on_reported, NULL, 3, expire, NULL);
    free(text);
}

void msm__rt_canary_tick(rt_sub_t *sub)
{
    rt_canary_t *c = &sub->canary;
    if (!sub->conf || c->state == RT_CANARY_NONE || !c->version)
        return;
    report(sub);
    if (c->token)
        return; /* the last read or write has not come back: one at a time */
    token_t *t = token_new(sub);
    if (!t)
        return;
    if (c->state == RT_CANARY_ACTIVE &&
        msm__rt_canary_judge(&c->win[1], &c->win[0], &sub->conf->canary, t->reason,
                             sizeof(t->reason))) {
        /* Stop sending it traffic here at once; the script tells the others. */
        msm_log(MSM_LOG_WARN, RT_FACILITY, "subscription %s: canary %s rolled back: %s",
                sub->name, c->version, t->reason);
        set_state(sub, RT_CANARY_ROLLED_BACK);
        script(sub, t, "rollback", on_rolled_back);
        return;
    }
    char key[KEY_MAX];
    const char *argv[] = {"HGETALL", key};
    if (canary_key(sub, key, sizeof(key), MSM_KEY_CANARY) < 0 ||
        msm_redis_command_argv(sub->rt->env.redis, on_state, t, 2, argv, NULL) != MSM_OK) {
        c->token = NULL;
        token_free(t);
    }
}
