/* SPDX-License-Identifier: MIT */
/* Which endpoint of a subscription gets the next request: smooth weighted round robin
 * (nginx's upstream algorithm), which spreads a weight-3 endpoint's turns among the others'
 * instead of sending it three in a row. Health checks and locality will narrow the
 * candidates here, before the weights are applied. */
#include "rt_int.h"

#include "msm/err.h"

#include <stdlib.h>

int msm__rt_balance_reset(rt_sub_t *sub)
{
    free(sub->wrr);
    sub->wrr = NULL;
    if (!sub->conf || sub->conf->nendpoints == 0)
        return MSM_OK;
    sub->wrr = calloc(sub->conf->nendpoints, sizeof(*sub->wrr));
    return sub->wrr ? MSM_OK : MSM_ERR_NOMEM;
}

/* The slot for health checks and locality: 1 when endpoint i may take requests now. */
static int candidate(const rt_sub_t *sub, size_t i)
{
    return sub->conf->endpoints[i].weight > 0;
}

const msm_endpoint_t *msm__rt_balance_pick(rt_sub_t *sub)
{
    if (!sub->conf || !sub->wrr)
        return NULL;
    int total = 0;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < sub->conf->nendpoints; i++) {
        if (!candidate(sub, i))
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
