/* SPDX-License-Identifier: MIT */
/* The scheduler's settings table: shared by main.c and the tests. */
#include "scheduler.h"

/* clang-format off */
const msm_conf_def_t sch_conf_defs[] = {
    MSM_CONF_COMMON(sch_conf_t, common, 8081),
    MSM_CONF_INT("scheduler.batch", sch_conf_t, batch, 500, 1, 10000,
                 "most events handled per consumed batch"),
    MSM_CONF_INT("scheduler.max_unacked", sch_conf_t, max_unacked, 5000, 1, 1000000,
                 "per topic: events consumed and not yet acknowledged before reading pauses"),
    MSM_CONF_INT("scheduler.fire_batch", sch_conf_t, fire_batch, 500, 1, 10000,
                 "most due delayed events moved per subscription per turn"),
    MSM_CONF_INT("scheduler.delayed_poll_ms", sch_conf_t, delayed_poll_ms, 1000, 10, 60000,
                 "safety poll of the delayed sets (events another instance added)"),
    MSM_CONF_INT("scheduler.retry_min_ms", sch_conf_t, retry_min_ms, 50, 1, 60000,
                 "first backoff after a failed write to Redis or the log"),
    MSM_CONF_INT("scheduler.retry_max_ms", sch_conf_t, retry_max_ms, 2000, 1, 600000,
                 "backoff cap after failed writes"),
    MSM_CONF_INT("scheduler.registry_poll_ms", sch_conf_t, registry_poll_ms, 500, 10, 60000,
                 "how often the registry of topics and subscriptions is polled"),
};
/* clang-format on */

const size_t sch_conf_ndefs = MSM_CONF_COUNT(sch_conf_defs);
