/* SPDX-License-Identifier: MIT */
/* Which endpoint of a subscription gets the next request. First health narrows the
 * candidates (health.c: checked healthy, not ejected), then locality: only the candidates of
 * the most preferred zone that has any (the subscription's `locality` order; without one,
 * this router's own zone first), so traffic stays in a zone while it has healthy endpoints
 * and spills over to the next when it has none. Among those, smooth weighted round robin
 * (nginx's upstream algorithm), which spreads a weight-3 endpoint's turns among the
 * others' instead of sending it three in a row. A subscription with an active canary first
 * picks the side (canary.c): only that side's endpoints are candidates, and the other side
 * takes the request when it has none usable; a rolled-back canary's endpoints take none. */
#include "rt_int.h"

#include "msm/err.h"
#include "msm/time.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

int msm__rt_balance_reset(rt_sub_t *sub)
{
    free(sub->wrr);
    sub->wrr = NULL;
    if (!sub->conf || sub->conf->nendpoints == 0)
        return MSM_OK;
    sub->wrr = calloc(sub->conf->nendpoints, sizeof(*sub->wrr));
    return sub->wrr ? MSM_OK : MSM_ERR_NOMEM;
}

/* The preference of endpoint @p i's zone: its place in the subscription's locality list
 * (unlisted or no zone: after all listed ones); without a list, this router's zone first. */
static int zone_rank(const rt_sub_t *sub, size_t i)
{
    const char *zone = sub->conf->endpoints[i].zone;
    if (sub->conf->nlocality) {
        for (size_t k = 0; zone && k < sub->conf->nlocality; k++) {
            if (strcmp(zone, sub->conf->locality[k]) == 0)
                return (int)k;
        }
        return (int)sub->conf->nlocality;
    }
    const char *own = sub->rt->conf.zone;
    return own && *own && zone && strcmp(zone, own) == 0 ? 0 : 1;
}

/* @p side: -1 any endpoint, else only those with msm__rt_canary_is() == side. */
/* An endpoint at its own max_concurrency takes nothing more until a request ends. */
static int at_cap(const rt_sub_t *sub, size_t i)
{
    int cap = sub->conf->endpoints[i].max_concurrency;
    return cap > 0 && i < sub->neps && sub->eps[i].in_flight >= cap;
}

static int candidate(const rt_sub_t *sub, size_t i, int64_t now, int side)
{
    return sub->conf->endpoints[i].weight > 0 && msm__rt_health_usable(sub, i, now) &&
           !at_cap(sub, i) &&
           (side < 0 || msm__rt_canary_is(sub, i) == side);
}

static const msm_endpoint_t *pick_side(rt_sub_t *sub, int64_t now, int side)
{
    int rank = INT_MAX;
    for (size_t i = 0; i < sub->conf->nendpoints; i++) {
        if (candidate(sub, i, now, side) && zone_rank(sub, i) < rank)
            rank = zone_rank(sub, i);
    }
    int total = 0;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < sub->conf->nendpoints; i++) {
        if (!candidate(sub, i, now, side) || zone_rank(sub, i) != rank)
            continue;
        int w = sub->conf->endpoints[i].weight;
        sub->wrr[i] += w;
        total += w;
        if (best == SIZE_MAX || sub->wrr[i] > sub->wrr[best])
            best = i;
    }
    if (best == SIZE_MAX)
        return NULL;
    sub->wrr[best] -= total;
    return &sub->conf->endpoints[best];
}

const msm_endpoint_t *msm__rt_balance_pick(rt_sub_t *sub)
{
    if (!sub->conf || !sub->wrr)
        return NULL;
    int64_t now = msm_time_unix_ms();
    int side = msm__rt_canary_side(sub);
    const msm_endpoint_t *ep = pick_side(sub, now, side);
    if (!ep && side >= 0 && sub->canary.state == RT_CANARY_ACTIVE)
        ep = pick_side(sub, now, !side); /* one side has none usable: the other takes all */
    return ep;
}
