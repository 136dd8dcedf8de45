/* SPDX-License-Identifier: MIT */
/* Test support: msm's daemons as processes. */
#include "msm_test_daemons.h"

#include "msm_test.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const msm_test_daemon_names[MSM_TEST_NDAEMONS] = {"frontend", "scheduler",
                                                              "flowcontrol", "router"};

void msm_test_daemon_setup(msm_test_proc_t *p,
                           int which,
                           const char *bin,
                           const char *dir,
                           const char *redis_url,
                           const char *ns)
{
    memset(p, 0, sizeof(*p));
    p->port = msm_test_free_port();
    p->death_signal = SIGTERM; /* never outlive the test */
    snprintf(p->log, sizeof(p->log), "%s/%s.log", dir, msm_test_daemon_names[which]);
    msm_test_proc_arg(p, "%s", bin);
    msm_test_proc_arg(p, "--redis.url=%s", redis_url);
    msm_test_proc_arg(p, "--namespace=%s", ns);
    msm_test_proc_arg(p, "--http.port=%d", p->port);
    msm_test_proc_arg(p, "--http.bind=127.0.0.1");
    if (which == MSM_TEST_FRONTEND || which == MSM_TEST_ROUTER)
        msm_test_proc_arg(p, "--router.allow_networks=127.0.0.0/8,::1");
}

int msm_test_daemons_start(msm_test_proc_t *procs, int n, int ready_ms)
{
    for (int i = 0; i < n; i++) {
        if (msm_test_proc_start(&procs[i]) != 0) {
            fprintf(stderr, "could not start %s\n", procs[i].log);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        if (msm_test_proc_wait_ready(&procs[i], NULL, ready_ms) != 0) {
            fprintf(stderr, "not ready within %d ms; see %s\n", ready_ms, procs[i].log);
            return -1;
        }
    }
    return 0;
}

