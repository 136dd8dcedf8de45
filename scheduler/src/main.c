/* SPDX-License-Identifier: MIT */
/* msm-scheduler: settings, the daemon scaffold, the scheduler module, run until SIGTERM. */
#include "scheduler.h"

#include "msm/log.h"

#include <stddef.h>

int main(int argc, char **argv)
{
    sch_conf_t conf;
    msm_daemon_t *d;
    const msm_daemon_spec_t spec = {
        .name = "msm-scheduler",
        .summary = "fans events out to subscriptions and holds delayed events until due",
        .defs = sch_conf_defs,
        .ndefs = sch_conf_ndefs,
        .conf = &conf,
        .common_offset = offsetof(sch_conf_t, common),
    };
    int rc = msm_daemon_new(&d, &spec, argc, argv);
    if (!d)
        return rc;
    scheduler_t *s = scheduler_new(d, &conf);
    if (!s) {
        msm_log(MSM_LOG_ERROR, "scheduler", "out of memory");
        msm_daemon_free(d);
        return 1;
    }
    msm_daemon_on_stop(d, scheduler_stop, scheduler_drained, s);
    rc = msm_daemon_run(d);
    msm_daemon_on_stop(d, NULL, NULL, NULL);
    scheduler_free(s);
    msm_daemon_free(d);
    return rc;
}
