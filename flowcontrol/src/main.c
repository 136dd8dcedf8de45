/* SPDX-License-Identifier: MIT */
/* msm-flowcontrol: admits tasks within each subscription's concurrency, dispatches them to
 * the router, applies outcomes, retries with backoff, dead-letters, re-dispatches on leases. */
#include "flowcontrol.h"

#include <stddef.h>

static const msm_conf_def_t fc_defs[] = {
    MSM_CONF_COMMON(fc_conf_t, common, 8082),
    MSM_CONF_INT("lease.grace_ms", fc_conf_t, lease_grace_ms, FC_DEFAULT_LEASE_GRACE_MS, 0,
                 3600000, "added to a subscription's timeout_ms to form a task's lease"),
    MSM_CONF_INT("owner.lease_ms", fc_conf_t, owner_lease_ms, FC_DEFAULT_OWNER_LEASE_MS, 300,
                 600000, "ownership lease of a subscription (another member takes over after)"),
    MSM_CONF_INT("registry.poll_ms", fc_conf_t, registry_poll_ms, FC_DEFAULT_REGISTRY_POLL_MS,
                 10, 60000, "registry version poll interval"),
    MSM_CONF_INT("batch", fc_conf_t, batch, FC_DEFAULT_BATCH, 1, 10000,
                 "ready and status records per read"),
    MSM_CONF_INT("max_records", fc_conf_t, max_records, FC_DEFAULT_MAX_RECORDS, 1, 100000,
                 "ready records held in memory per subscription"),
    MSM_CONF_INT("dispatch_max", fc_conf_t, dispatch_max, FC_DEFAULT_DISPATCH_MAX, 1, 100000,
                 "tasks per dispatch record"),
    MSM_CONF_INT("record.lag_ms", fc_conf_t, record_lag_ms, FC_DEFAULT_RECORD_LAG_MS, 0, 600000,
                 "a pending or running task's record is written once it stays so this long "
                 "(0: at once); finished states are written at once"),
    MSM_CONF_INT("hol.threshold_ms", fc_conf_t, hol_threshold_ms, FC_DEFAULT_HOL_THRESHOLD_MS,
                 1, 86400000,
                 "an ordering key held by a failing event this long is logged and counted "
                 "(the head-of-line detector)"),
    MSM_CONF_INT("fair.max_records", fc_conf_t, fair_max_records, FC_DEFAULT_FAIR_MAX_RECORDS,
                 1, 100000,
                 "ready records held in memory per subscription with a fairness_key (read "
                 "ahead, so that a tenant publishing after a burst is not queued behind it)"),
    MSM_CONF_STR("lifecycle.topic", fc_conf_t, lifecycle_topic, "",
                 "topic where every task going retrying or dead is announced as an event of "
                 "type msm.task.retrying / msm.task.dead (empty: off; the topic must exist)"),
};

int main(int argc, char **argv)
{
    fc_conf_t conf;
    msm_daemon_t *d;
    msm_daemon_spec_t spec = {"msm-flowcontrol",
                              "task admission, dispatch, retries and dead letters",
                              fc_defs,
                              MSM_CONF_COUNT(fc_defs),
                              &conf,
                              offsetof(fc_conf_t, common)};
    int rc = msm_daemon_new(&d, &spec, argc, argv);
    if (!d)
        return rc;
    flowcontrol_t *fc = flowcontrol_new_daemon(d, &conf);
    if (!fc) {
        msm_daemon_free(d);
        return 1;
    }
    rc = msm_daemon_run(d);
    flowcontrol_free(fc);
    msm_daemon_free(d);
    return rc;
}
