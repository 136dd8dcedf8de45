/* SPDX-License-Identifier: MIT */
/* Test support: msm's four daemons as processes (frontend, scheduler, flowcontrol, router)
 * the way the end-to-end tests and benchmarks run them (msm_test_http.h calls their API). */
#ifndef MSM_TEST_DAEMONS_H
#define MSM_TEST_DAEMONS_H

#include "msm_test_http.h"
#include "msm_test_proc.h"

enum {
    MSM_TEST_FRONTEND,
    MSM_TEST_SCHEDULER,
    MSM_TEST_FLOWCONTROL,
    MSM_TEST_ROUTER,
    MSM_TEST_NDAEMONS
};

/** "frontend", "scheduler", "flowcontrol", "router". */
extern const char *const msm_test_daemon_names[MSM_TEST_NDAEMONS];

/**
 * @brief Prepares @p p (zeroed here) to run daemon @p which from @p bin: its log in
 * @p dir/<name>.log, a free port on 127.0.0.1, Redis at @p redis_url, namespace @p ns, and
 * (frontend, router) pushes to loopback allowed, as lambdas in tests listen there. More
 * arguments may be added before msm_test_proc_start().
 */
void msm_test_daemon_setup(msm_test_proc_t *p,
                           int which,
                           const char *bin,
                           const char *dir,
                           const char *redis_url,
                           const char *ns);

/**
 * @brief Starts the @p n prepared processes, then waits until each answers /readyz.
 * @returns 0, or -1 naming the one that did not start or become ready within @p ready_ms
 * on stderr (with its log's path).
 */
int msm_test_daemons_start(msm_test_proc_t *procs, int n, int ready_ms);

#endif
