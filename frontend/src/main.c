/* SPDX-License-Identifier: MIT */
/* msm-frontend: the settings table and the wiring of the frontend library to the daemon
 * scaffold (config, logging, loop, Redis, log, HTTP, graceful stop). */
#include "frontend.h"

#include "msm/config.h"
#include "msm/daemon.h"
#include "msm/log.h"
#include "msm/netpolicy.h"

#include <stddef.h>
#include <stdio.h>

typedef struct {
    msm_common_conf_t common;
    int max_events;
    long long max_event_bytes;
    int registry_poll_ms;
    int sub_partitions;
    int status_partitions;
    long long idempotency_window_ms;
    char *allow_networks;
    double trace_sample_ratio;
    char *deny_networks;
} fe_conf_t;

static const msm_conf_def_t fe_defs[] = {
    MSM_CONF_COMMON(fe_conf_t, common, 8080),
    MSM_CONF_INT("publish.max_events", fe_conf_t, max_events, FE_DEFAULT_MAX_EVENTS, 1, 100000,
                 "most events in one publish request; more get 413"),
    MSM_CONF_INT("publish.max_event_bytes", fe_conf_t, max_event_bytes,
                 (long long)FE_DEFAULT_MAX_EVENT_BYTES, 1, 256LL * 1024 * 1024,
                 "largest payload of one event (decoded); larger ones get 413"),
    MSM_CONF_INT("registry.poll_ms", fe_conf_t, registry_poll_ms, FE_DEFAULT_REGISTRY_POLL_MS,
                 10, 60000, "how often the topic/subscription registry is polled"),
    MSM_CONF_INT("streams.sub_partitions", fe_conf_t, sub_partitions, FE_DEFAULT_SUB_PARTITIONS,
                 1, 256, "partitions of ready.<sub> and dispatch.<sub> made by PUT subscription"),
    MSM_CONF_INT("streams.status_partitions", fe_conf_t, status_partitions,
                 FE_DEFAULT_STATUS_PARTITIONS, 1, 256,
                 "partitions of each status.<sub> stream (when it does not exist yet)"),
    MSM_CONF_INT("publish.idempotency_window_ms", fe_conf_t, idempotency_window_ms,
                 (long long)FE_DEFAULT_IDEMPOTENCY_WINDOW_MS, 1000, 30LL * 24 * 3600 * 1000,
                 "how long an idempotency key answers its first event's id"),
    MSM_CONF_DOUBLE("trace.sample_ratio", fe_conf_t, trace_sample_ratio, 0.01, 0, 1,
                    "share of events published without a traceparent whose new trace is "
                    "sampled (a span line at every hop); a publisher's own traceparent "
                    "decides for its events"),
    /* The router's names: one config file serves both (PUT refuses what it would). */
    MSM_CONF_STR(MSM_NETPOLICY_ALLOW_SETTING, fe_conf_t, allow_networks, "",
                 "CIDRs endpoints may be in although denied by default (as the router's; "
                 "judged at PUT subscription)"),
    MSM_CONF_STR(MSM_NETPOLICY_DENY_SETTING, fe_conf_t, deny_networks, "",
                 "CIDRs endpoints may never be in (as the router's; judged at PUT "
                 "subscription)"),
};

int main(int argc, char **argv)
{
    fe_conf_t conf;
    msm_daemon_spec_t spec = {
        .name = "msm-frontend",
        .summary = "msm's public API: control plane, publish, schema registry, CDC push, stats and DLQ",
        .defs = fe_defs,
        .ndefs = MSM_CONF_COUNT(fe_defs),
        .conf = &conf,
        .common_offset = offsetof(fe_conf_t, common),
    };
    msm_daemon_t *d;
    int rc = msm_daemon_new(&d, &spec, argc, argv);
    if (!d)
        return rc;
    fe_deps_t deps = {msm_daemon_loop(d), msm_daemon_redis(d), msm_daemon_stream(d),
                      msm_daemon_http(d), msm_daemon_metrics(d)};
    fe_settings_t set = {
        .max_events = (size_t)conf.max_events,
        .max_event_bytes = (size_t)conf.max_event_bytes,
        .registry_poll_ms = (uint32_t)conf.registry_poll_ms,
        .sub_partitions = conf.sub_partitions,
        .status_partitions = conf.status_partitions,
        .idempotency_window_ms = (uint64_t)conf.idempotency_window_ms,
        .allow_networks = conf.allow_networks,
        .trace_sample_ratio = conf.trace_sample_ratio,
        .deny_networks = conf.deny_networks,
        .append_timeout_ms = (uint64_t)conf.common.log_append_timeout_ms,
    };
    char err[256];
    fe_t *fe = fe_new(&deps, &set, err, sizeof(err));
    if (!fe) {
        msm_log(MSM_LOG_ERROR, "frontend", "cannot start: %s", err);
        msm_daemon_free(d);
        return 1;
    }
    size_t nrules;
    const msm_access_rule_t *rules = fe_access_rules(&nrules);
    msm_daemon_set_access(d, rules, nrules);
    msm_daemon_set_ready(d, fe_ready, fe);
    msm_daemon_on_stop(d, fe_stop, fe_drained, fe);
    rc = msm_daemon_run(d);
    fe_free(fe);
    msm_daemon_free(d);
    return rc;
}
