/* SPDX-License-Identifier: MIT */
/* Which scope each frontend route needs when auth.tokens is set (API.md "Security"): the
 * one table. Kinds: "publish" and "subscribe" and "replay" take the path parameter named
 * as the resource; "schemas" and "admin" none. MSM_ACCESS_ANY is any valid token (reads
 * that show no event data). A route missing here needs "admin". Two checks live in their
 * handlers because the resource is not in the path: the protobuf publish RPC's topic
 * (publish.c), a CDC source's topic for the changes pushed into it and its :notify
 * (cdc_push.c, cdc.c), and a subscription's topic (control.c: a subscription reads its
 * topic's events, so "subscribe" must cover both names). The publish quota is taken in
 * publish.c and cdc_push.c. */
#include "frontend.h"

static const msm_access_rule_t fe_rules[] = {
    /* topics */
    {"GET", "/v1/topics", MSM_ACCESS_ANY, NULL},
    {"GET", "/v1/topics/{topic}", MSM_ACCESS_ANY, NULL},
    {"PUT", "/v1/topics/{topic}", "admin", NULL},
    {"DELETE", "/v1/topics/{topic}", "admin", NULL},
    /* publishing */
    {"POST", "/v1/topics/{topic}:publish", "publish", "topic"},
    {"POST", "/v1/topics/{topic}/events", "publish", "topic"},
    {"POST", "/v1/publish", "publish", NULL},
    /* subscriptions */
    {"GET", "/v1/subscriptions", "subscribe", NULL},
    {"PUT", "/v1/subscriptions/{name}", "subscribe", "name"},
    {"GET", "/v1/subscriptions/{name}", "subscribe", "name"},
    {"DELETE", "/v1/subscriptions/{name}", "subscribe", "name"},
    {"POST", "/v1/subscriptions/{name}:pause", "subscribe", "name"},
    {"POST", "/v1/subscriptions/{name}:resume", "subscribe", "name"},
    {"GET", "/v1/subscriptions/{name}/stats", "subscribe", "name"},
    {"GET", "/v1/subscriptions/{name}/keys", "subscribe", "name"},
    {"GET", "/v1/subscriptions/{name}/tasks", "subscribe", "name"},
    {"GET", "/v1/subscriptions/{name}/tasks/{event_id}", "subscribe", "name"},
    {"POST", "/v1/subscriptions/{name}/canary:promote", "subscribe", "name"},
    {"POST", "/v1/subscriptions/{name}/canary:rollback", "subscribe", "name"},
    /* dead letters */
    {"GET", "/v1/subscriptions/{name}/dlq", "replay", "name"},
    {"POST", "/v1/subscriptions/{name}/dlq:replay", "replay", "name"},
    /* CDC sources and their partitions' state are admin's; the changes pushed into one and
     * its :notify need "publish" on its topic, checked once the source is read (cdc.c,
     * cdc_push.c): the connector that pushes is the one that notifies */
    {"GET", "/v1/cdc/sources", "admin", NULL},
    {"PUT", "/v1/cdc/sources/{name}", "admin", NULL},
    {"GET", "/v1/cdc/sources/{name}", "admin", NULL},
    {"DELETE", "/v1/cdc/sources/{name}", "admin", NULL},
    {"GET", "/v1/cdc/sources/{name}/partitions", "admin", NULL},
    {"POST", "/v1/cdc/sources/{name}/changes", "publish", NULL},
    /* recurring schedules publish into their topic on their own: admin's, like CDC sources */
    {"GET", "/v1/schedules", "admin", NULL},
    {"PUT", "/v1/schedules/{name}", "admin", NULL},
    {"GET", "/v1/schedules/{name}", "admin", NULL},
    {"DELETE", "/v1/schedules/{name}", "admin", NULL},
    {"POST", "/v1/cdc/sources/{name}:notify", "publish", NULL},
    /* schema registry (Confluent-compatible): reads for anyone with a token, changes need
     * "schemas" */
    {"GET", "/subjects", MSM_ACCESS_ANY, NULL},
    {"GET", "/subjects/{subject}/versions", MSM_ACCESS_ANY, NULL},
    {"GET", "/subjects/{subject}/versions/{version}", MSM_ACCESS_ANY, NULL},
    {"GET", "/schemas/ids/{id}", MSM_ACCESS_ANY, NULL},
    {"POST", "/compatibility/subjects/{subject}/versions/{version}", MSM_ACCESS_ANY, NULL},
    {"GET", "/config", MSM_ACCESS_ANY, NULL},
    {"GET", "/config/{subject}", MSM_ACCESS_ANY, NULL},
    {"POST", "/subjects/{subject}/versions", "schemas", NULL},
    {"PUT", "/config", "schemas", NULL},
    {"PUT", "/config/{subject}", "schemas", NULL},
};

const msm_access_rule_t *fe_access_rules(size_t *n)
{
    *n = sizeof(fe_rules) / sizeof(fe_rules[0]);
    return fe_rules;
}
