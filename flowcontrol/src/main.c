/* SPDX-License-Identifier: MIT */
/* msm-flowcontrol: admits tasks within each subscription's concurrency, dispatches them to
 * the router, applies outcomes, retries with backoff, dead-letters, expires leases. */
#include "flowcontrol.h"

#include <stddef.h>

static const msm_conf_def_t fc_defs[] = {
    MSM_CONF_COMMON(fc_conf_t, common, 8082),
    MSM_CONF_INT("lease.grace_ms", fc_conf_t, lease_grace_ms, FC_DEFAULT_LEASE_GRACE_MS, 0,
                 3600000, "added to a subscription's timeout_ms to form a task's lease"),
    MSM_CONF_INT("admit.poll_ms", fc_conf_t, admit_poll_ms, FC_DEFAULT_ADMIT_POLL_MS, 10, 60000,
                 "admission also runs this often (dead-letter replays, other instances)"),
    MSM_CONF_INT("scan.poll_ms", fc_conf_t, safety_poll_ms, FC_DEFAULT_SAFETY_POLL_MS, 10,
                 600000, "retry and lease scans run at least this often"),
    MSM_CONF_INT("registry.poll_ms", fc_conf_t, registry_poll_ms, FC_DEFAULT_REGISTRY_POLL_MS,
                 10, 60000, "registry version poll interval"),
    MSM_CONF_INT("batch", fc_conf_t, batch, FC_DEFAULT_BATCH, 1, 10000,
                 "log records per read, tasks per take, ids per retry or lease scan"),
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
