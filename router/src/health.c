/* SPDX-License-Identifier: MIT */
/* Endpoint health, as this router sees it, and what it reports.
 *
 *  - Active: an endpoint with a "health" setting gets GET <origin><path> every interval_ms;
 *    unhealthy_threshold failures in a row take it out, healthy_threshold successes bring it
 *    back (Envoy's and Kubernetes' rule).
 *  - Passive (outlier ejection, as Envoy does): pushes that got no answer at all (refused,
 *    reset, timeout) PASSIVE_FAILURES times in a row eject the endpoint for EJECT_BASE_MS
 *    times the number of ejections so far, capped at EJECT_MAX_MS.
 *  - In flight: requests per endpoint, measured.
 * Each second the state is written to sub:{s}:endpoints (field: this member and the URL) for
 * the stats API; with no endpoint to push to, the subscription's deliveries wait (no attempt
 * spent) and that hash says why. */
#include "rt_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/registry.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PASSIVE_FAILURES 3
#define EJECT_BASE_MS    5000
#define EJECT_MAX_MS     300000
#define CHECK_TIMEOUT_MS 2000
#define REPORT_MS        1000
#define REPORT_TTL_MS    30000 /* the hash goes when no router reports any more */

static rt_ep_t *ep_find(rt_sub_t *sub, const char *url)
{
    for (size_t i = 0; i < sub->neps; i++) {
        if (strcmp(sub->eps[i].url, url) == 0)
            return &sub->eps[i];
    }
    return NULL;
}

int msm__rt_health_usable(const rt_sub_t *sub, size_t i, int64_t now)
{
    if (i >= sub->neps)
        return 1;
    const rt_ep_t *ep = &sub->eps[i];
    return ep->healthy && now >= ep->ejected_until_ms;
}

/* ---- active checks ---- */

static void check_arm(rt_ep_t *ep);

/* "<scheme>://<host[:port]>" of @p url followed by @p path. */
static void check_url(const char *url, const char *path, char *out, size_t n)
{
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    size_t origin = strcspn(host, "/?#") + (size_t)(host - url);
    snprintf(out, n, "%.*s%s", (int)origin, url, path);
}

static void set_healthy(rt_ep_t *ep, int healthy, const char *why)
{
    if (ep->healthy == healthy)
        return;
    ep->healthy = healthy;
    if (healthy) {
        /* A passing check is fresher evidence than the pushes that ejected it. */
        ep->ejected_until_ms = 0;
        ep->push_fails = 0;
    }
    snprintf(ep->reason, sizeof(ep->reason), "%s", healthy ? "" : why);
    msm_log(healthy ? MSM_LOG_INFO : MSM_LOG_WARN, RT_FACILITY,
            "subscription %s: endpoint %s %s%s%s", ep->sub->name, ep->url,
            healthy ? "healthy again" : "unhealthy", healthy ? "" : ": ", healthy ? "" : why);
    if (healthy)
        msm__rt_send_queued(ep->sub); /* what waited for it goes now */
}

static void on_checked(msm_http_client_t *cl, msm_http_call_t *call, const msm_http_result_t *res,
                       void *opaque)
{
    (void)cl;
    (void)call;
    rt_ep_t *ep = opaque;
    ep->check = NULL;
    if (res->err == MSM_ERR_SHUTDOWN)
        return;
    int ok = res->err == MSM_OK && res->status >= 200 && res->status <= 299;
    if (ok) {
        ep->check_fails = 0;
        if (++ep->check_oks >= ep->health.healthy_threshold && ep->healthy &&
            ep->ejected_until_ms > msm_time_unix_ms()) {
            /* Passing checks since the ejection: it answers again (restarted quicker than
             * the checks could call it unhealthy). */
            ep->ejected_until_ms = 0;
            ep->push_fails = 0;
            msm_log(MSM_LOG_INFO, RT_FACILITY, "subscription %s: endpoint %s: ejection lifted, "
                    "its health check passes", ep->sub->name, ep->url);
            msm__rt_send_queued(ep->sub);
        }
        if (ep->check_oks >= ep->health.healthy_threshold)
            set_healthy(ep, 1, NULL);
    } else {
        ep->check_oks = 0;
        char why[sizeof(ep->reason)];
        if (res->err == MSM_OK)
            snprintf(why, sizeof(why), "health check answered HTTP %d", res->status);
        else
            snprintf(why, sizeof(why), "health check failed: %s",
                     res->error ? res->error : msm_err_str(res->err));
        if (++ep->check_fails >= ep->health.unhealthy_threshold)
            set_healthy(ep, 0, why);
    }
    check_arm(ep);
}

static void on_check_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    rt_ep_t *ep = opaque;
    char url[2304];
    check_url(ep->url, ep->health.path, url, sizeof(url));
    msm_http_request_t hr = {.method = "GET",
                             .url = url,
                             .tls = ep->sub->tls, /* checks trust as the pushes do */
                             .timeout_ms = (uint32_t)(ep->health.interval_ms < CHECK_TIMEOUT_MS
                                                          ? ep->health.interval_ms
                                                          : CHECK_TIMEOUT_MS)};
    if (msm_http_client_request(ep->sub->rt->http, &hr, on_checked, ep, &ep->check) != MSM_OK) {
        ep->check = NULL;
        check_arm(ep);
    }
}

static void check_arm(rt_ep_t *ep)
{
    if (ep->health.path && !ep->sub->rt->stopping)
        msm_loop_timer_start(ep->sub->rt->env.loop, &ep->timer, (uint64_t)ep->health.interval_ms,
                             on_check_timer, ep);
}

/* ---- passive: what pushes show ---- */

void msm__rt_health_sent(rt_sub_t *sub, const char *url)
{
    rt_ep_t *ep = ep_find(sub, url);
    if (ep)
        ep->in_flight++;
}

void msm__rt_health_observe(rt_sub_t *sub, const char *url, const msm_http_result_t *res)
{
    rt_ep_t *ep = url ? ep_find(sub, url) : NULL;
    if (!ep)
        return;
    if (ep->in_flight > 0)
        ep->in_flight--;
    if (res->status > 0) { /* it answered, whatever it said: it is there */
        ep->push_fails = 0;
        return;
    }
    int64_t now = msm_time_unix_ms();
    /* Pushes that were in flight when it was ejected fail too: they are the same evidence,
     * not a new ejection (each would lengthen it, as a burst once did to 50 s). */
    if (res->err == MSM_ERR_SHUTDOWN || now < ep->ejected_until_ms ||
        ++ep->push_fails < PASSIVE_FAILURES)
        return;
    ep->ejections++;
    ep->check_oks = 0; /* an active check lifts it only once it passes again after this */
    int64_t t = (int64_t)EJECT_BASE_MS * ep->ejections;
    ep->ejected_until_ms = now + (t < EJECT_MAX_MS ? t : EJECT_MAX_MS);
    ep->push_fails = 0;
    snprintf(ep->reason, sizeof(ep->reason), "ejected: %d pushes without an answer (%s)",
             PASSIVE_FAILURES, res->error ? res->error : msm_err_str(res->err));
    msm_log(MSM_LOG_WARN, RT_FACILITY, "subscription %s: endpoint %s ejected for %" PRId64 " ms: %s",
            sub->name, ep->url, ep->ejected_until_ms - now, ep->reason);
    msm__rt_hold_arm(sub, ep->ejected_until_ms); /* look again when it may come back */
}

/* ---- settings ---- */

void msm__rt_health_free(rt_sub_t *sub)
{
    for (size_t i = 0; i < sub->neps; i++) {
        rt_ep_t *ep = &sub->eps[i];
        msm_loop_timer_stop(sub->rt->env.loop, &ep->timer);
        if (ep->check)
            msm_http_call_cancel(ep->check);
        free(ep->url);
        free(ep->health.path);
    }
    free(sub->eps);
    sub->eps = NULL;
    sub->neps = 0;
}

int msm__rt_health_reset(rt_sub_t *sub)
{
    size_t n = sub->conf ? sub->conf->nendpoints : 0;
    rt_ep_t *eps = n ? calloc(n, sizeof(*eps)) : NULL;
    if (n && !eps)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const msm_endpoint_t *e = &sub->conf->endpoints[i];
        rt_ep_t *ep = &eps[i];
        const rt_ep_t *old = ep_find(sub, e->url);
        if (old) /* the same endpoint keeps what was learnt about it */
            *ep = *old;
        else
            ep->healthy = 1; /* innocent until a check or a push says otherwise */
        ep->sub = sub;
        ep->check = NULL;
        msm_timer_init(&ep->timer);
        ep->url = strdup(e->url);
        ep->health = e->health;
        ep->health.path = e->health.path ? strdup(e->health.path) : NULL;
        if (!e->health.path && !ep->healthy)
            set_healthy(ep, 1, NULL); /* no more active check to bring it back */
    }
    msm__rt_health_free(sub); /* the old array: timers and checks stop */
    sub->eps = eps;
    sub->neps = n;
    for (size_t i = 0; i < n; i++) {
        if (eps[i].health.path)
            msm_loop_timer_start(sub->rt->env.loop, &eps[i].timer, 0, on_check_timer, &eps[i]);
    }
    return MSM_OK;
}

/* ---- the report ---- */

int msm__rt_health_any(const rt_sub_t *sub, int64_t now)
{
    if (!sub->conf)
        return 0;
    for (size_t i = 0; i < sub->conf->nendpoints; i++) {
        /* A rolled-back canary's endpoints take nothing (balance.c). */
        if (sub->canary.state == RT_CANARY_ROLLED_BACK && msm__rt_canary_is(sub, i))
            continue;
        if (msm__rt_health_usable(sub, i, now))
            return 1;
    }
    return 0;
}

static void on_reported(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    (void)reply;
    (void)err;
    (void)opaque; /* best effort: the next report comes in a second */
}

void msm__rt_health_report(rt_sub_t *sub)
{
    router_t *rt = sub->rt;
    if (!sub->conf || !sub->neps)
        return;
    char key[512], ttl[24];
    if (msm_redis_key(rt->env.redis, key, sizeof(key), MSM_KEY_ENDPOINTS, sub->name) < 0)
        return;
    int64_t now = msm_time_unix_ms();
    size_t argc = 2 + 2 * sub->neps;
    const char **argv = calloc(argc, sizeof(*argv));
    char **owned = calloc(2 * sub->neps, sizeof(*owned));
    if (!argv || !owned) {
        free(argv);
        free(owned);
        return;
    }
    argv[0] = "HSET";
    argv[1] = key;
    for (size_t i = 0; i < sub->neps; i++) {
        const rt_ep_t *ep = &sub->eps[i];
        int usable = msm__rt_health_usable(sub, i, now);
        json_t *j = json_pack("{s:s,s:s,s:b,s:i,s:s,s:I}", "url", ep->url, "member", rt->member,
                              "healthy", usable, "in_flight", ep->in_flight, "reason",
                              usable ? "" : ep->reason, "updated_ms", (json_int_t)now);
        size_t flen = strlen(rt->member) + strlen(ep->url) + 2;
        if ((owned[2 * i] = malloc(flen)))
            snprintf(owned[2 * i], flen, "%s\n%s", rt->member, ep->url);
        owned[2 * i + 1] = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        argv[2 + 2 * i] = owned[2 * i] ? owned[2 * i] : "";
        argv[3 + 2 * i] = owned[2 * i + 1] ? owned[2 * i + 1] : "{}";
    }
    msm_redis_command_argv(rt->env.redis, on_reported, NULL, (int)argc, argv, NULL);
    snprintf(ttl, sizeof(ttl), "%d", REPORT_TTL_MS);
    const char *expire[] = {"PEXPIRE", key, ttl};
    msm_redis_command_argv(rt->env.redis, on_reported, NULL, 3, expire, NULL);
    for (size_t i = 0; i < 2 * sub->neps; i++)
        free(owned[i]);
    free(owned);
    free(argv);
}
