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
    MSM_CONF_INT("scheduler.record_max_tasks", sch_conf_t, record_max_tasks, 1000, 1, 100000,
                 "most tasks per ready.<sub> record (a larger batch is split)"),
    MSM_CONF_INT("scheduler.record_max_bytes", sch_conf_t, record_max_bytes, 900000, 1024,
                 256 * 1024 * 1024,
                 "most bytes per ready.<sub> record (a larger batch is split; one bigger task "
                 "goes alone); below the Kafka brokers' message.max.bytes"),
    MSM_CONF_INT("scheduler.fire_batch", sch_conf_t, fire_batch, 2000, 1, 10000,
                 "most due delayed events claimed per subscription per turn"),
    MSM_CONF_INT("scheduler.claim_lease_ms", sch_conf_t, claim_lease_ms, 30000, 1000, 3600000,
                 "claimed delayed events are skipped by other schedulers this long (due again "
                 "after it if their claimer died before removing them)"),
    MSM_CONF_INT("scheduler.delayed_poll_ms", sch_conf_t, delayed_poll_ms, 1000, 10, 60000,
                 "safety poll of the delayed sets (events another instance added)"),
    MSM_CONF_INT("scheduler.retry_min_ms", sch_conf_t, retry_min_ms, 50, 1, 60000,
                 "first backoff after a failed write to Redis or the log"),
    MSM_CONF_INT("scheduler.retry_max_ms", sch_conf_t, retry_max_ms, 2000, 1, 600000,
                 "backoff cap after failed writes"),
    MSM_CONF_INT("scheduler.registry_poll_ms", sch_conf_t, registry_poll_ms, 500, 10, 3600000,
                 "how often the registry of topics and subscriptions is polled (fan-out checks "
                 "it before every batch anyway; the poll starts and stops topic consumers)"),
    MSM_CONF_INT("schedules.misfire_grace_ms", sch_conf_t, schedules_grace_ms, 5000, 0, 3600000,
                 "a schedule's tick found later than this after its due time is missed: its "
                 "catch_up decides (docs/schedules.md)"),
    MSM_CONF_INT("schedules.catch_up_max", sch_conf_t, schedules_catch_up_max, 100, 1, 10000,
                 "most missed ticks a schedule with catch_up \"all\" publishes (the latest)"),
    /* The frontend's name: one config file serves both. */
    MSM_CONF_INT("publish.idempotency_window_ms", sch_conf_t, idempotency_window_ms,
                 24LL * 3600 * 1000, 1000, 30LL * 24 * 3600 * 1000,
                 "how long a published tick's idempotency key is kept (as the frontend's)"),
    MSM_CONF_INT("cdc.fetch_timeout_ms", sch_conf_t, cdc_fetch_timeout_ms, 10000, 100, 600000,
                 "CDC pull: a range request not answered in this time fails (backoff)"),
    MSM_CONF_INT("cdc.lease_ms", sch_conf_t, cdc_lease_ms, 10000, 1000, 600000,
                 "CDC pull: a scheduler holds a partition this long unless it renews (every "
                 "third of it); another takes it over after a crash within about 4/3 of it"),
    MSM_CONF_INT("cdc.backoff_min_ms", sch_conf_t, cdc_backoff_min_ms, 100, 1, 600000,
                 "CDC pull: first backoff of a partition whose round failed (doubling, full "
                 "jitter; a source's Retry-After is honoured when longer)"),
    MSM_CONF_INT("cdc.backoff_max_ms", sch_conf_t, cdc_backoff_max_ms, 30000, 1, 3600000,
                 "CDC pull: backoff cap"),
    MSM_CONF_INT("cdc.max_answer_bytes", sch_conf_t, cdc_max_answer_bytes, 64 * 1024 * 1024,
                 1024, 1024 * 1024 * 1024, "CDC pull: a larger range answer fails (backoff)"),
    MSM_CONF_INT("cdc.max_event_bytes", sch_conf_t, cdc_max_event_bytes, 1024 * 1024, 1,
                 256 * 1024 * 1024,
                 "CDC pull: one change's payload at most (as the frontend's "
                 "publish.max_event_bytes); a larger one stops its partition (backoff)"),
};
/* clang-format on */

const size_t sch_conf_ndefs = MSM_CONF_COUNT(sch_conf_defs);
