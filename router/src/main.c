/* SPDX-License-Identifier: MIT */
/* msm-router: the settings table and the daemon's three calls (see msm/daemon.h). */
#include "router.h"

#include <stddef.h>

static const msm_conf_def_t router_defs[] = {
    MSM_CONF_COMMON(router_conf_t, common, 8083),
    MSM_CONF_INT("status.partitions", router_conf_t, status_partitions, 4, 1, 256,
                 "partitions of the status stream, when the router is first to create it"),
    MSM_CONF_INT("push.max_connections", router_conf_t, max_connections, 1024, 1, 65535,
                 "open connections to endpoints in all (idle ones kept for reuse)"),
    MSM_CONF_INT("push.max_host_connections", router_conf_t, max_host_connections, 256, 1,
                 65535, "open connections per endpoint host:port"),
    MSM_CONF_INT("push.connect_timeout_ms", router_conf_t, connect_timeout_ms, 5000, 1, 600000,
                 "TCP connect timeout to an endpoint"),
    MSM_CONF_INT("registry.poll_ms", router_conf_t, registry_poll_ms, 500, 10, 60000,
                 "how often the registry version is polled"),
    MSM_CONF_INT("push.max_in_flight", router_conf_t, max_in_flight, 4096, 1, 1000000,
                 "push requests in flight over all subscriptions; past it, waiting pushes go "
                 "out by subscription priority (highest first)"),
    MSM_CONF_STR("zone", router_conf_t, zone, "",
                 "this router's zone: endpoints in it are preferred when a subscription names "
                 "no locality (empty: no preference)"),
    MSM_CONF_STR("lifecycle.topic", router_conf_t, lifecycle_topic, "",
                 "topic where canary rollbacks and promotions are announced as events "
                 "(msm.canary.rolled_back, msm.canary.promoted); empty: off"),
    MSM_CONF_STR("push.ca_bundle", router_conf_t, ca_bundle, "",
                 "PEM CA bundle file trusted for https:// pushes instead of the system's CA "
                 "store (a subscription's push_tls.ca_pem replaces either); empty: the system's"),
    MSM_CONF_INT("consume.max_batch", router_conf_t, max_batch, 64, 1, 4096,
                 "dispatch entries handed over per consumer callback"),
    MSM_CONF_STR(MSM_NETPOLICY_ALLOW_SETTING, router_conf_t, allow_networks, "",
                 "comma-separated CIDRs endpoints may be in although denied by default "
                 "(loopback, private, link-local, metadata: each block named, e.g. "
                 "127.0.0.0/8,::1)"),
    MSM_CONF_STR(MSM_NETPOLICY_DENY_SETTING, router_conf_t, deny_networks, "",
                 "comma-separated CIDRs never connected to (wins over the allow list)"),
};

int main(int argc, char **argv)
{
    router_conf_t conf;
    msm_daemon_t *d;
    msm_daemon_spec_t spec = {
        .name = "msm-router",
        .summary = "pushes dispatched tasks to lambda endpoints and records their outcomes",
        .defs = router_defs,
        .ndefs = MSM_CONF_COUNT(router_defs),
        .conf = &conf,
        .common_offset = offsetof(router_conf_t, common),
    };
    int rc = msm_daemon_new(&d, &spec, argc, argv);
    if (!d)
        return rc;
    router_t *r = router_new(d, &conf);
    if (!r) {
        msm_daemon_free(d);
        return 1;
    }
    rc = msm_daemon_run(d);
    router_free(r);
    msm_daemon_free(d);
    return rc;
}
