/* SPDX-License-Identifier: MIT */
/* msm-pg-cdc: settings, the daemon scaffold (HTTP only: no Redis, no log), the adapter, run
 * until SIGTERM. */
#include "pgc.h"

#include "msm/log.h"

#include <stddef.h>
#include <string.h>

int main(int argc, char **argv)
{
    pgc_conf_t conf;
    memset(&conf, 0, sizeof(conf)); /* the backends' half of conf.common stays unset */
    msm_daemon_t *d;
    const msm_daemon_spec_t spec = {
        .name = "msm-pg-cdc",
        .summary = "serves a PostgreSQL logical replication slot (wal2json) as a CDC range "
                   "source for msm's scheduler",
        .defs = pgc_conf_defs,
        .ndefs = pgc_conf_ndefs,
        .conf = &conf,
        .common_offset = offsetof(pgc_conf_t, common),
    };
    int rc = msm_daemon_new_serving(&d, &spec, argc, argv);
    if (!d)
        return rc;
    char err[256];
    pgc_t *p = pgc_new(d, &conf, err, sizeof(err));
    if (!p) {
        msm_log(MSM_LOG_ERROR, "pg-cdc", "%s", err);
        msm_daemon_free(d);
        return 2;
    }
    msm_daemon_set_ready(d, pgc_ready, p);
    msm_daemon_on_stop(d, pgc_stop, pgc_drained, p);
    rc = msm_daemon_run(d);
    msm_daemon_on_stop(d, NULL, NULL, NULL);
    msm_daemon_set_ready(d, NULL, NULL);
    pgc_free(p);
    msm_daemon_free(d);
    return rc;
}
