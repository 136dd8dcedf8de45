/* SPDX-License-Identifier: MIT */
/* msmctl schedule …: recurring schedules (PUT/GET/DELETE /v1/schedules/{name},
 * GET /v1/schedules; docs/schedules.md). The event is built from the same options as
 * msmctl publish's. */
#include "msmctl.h"

#include <stdlib.h>
#include <string.h>

static const char *const schedule_columns[] = {"name",     "topic",    "cron", "every_ms",
                                               "timezone", "catch_up", NULL};

int ctl_schedule_put(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    if (!c->o.topic) {
        ctl_error(c, "--topic is required");
        return CTL_EXIT_USAGE;
    }
    if ((c->o.cron != NULL) == (c->o.every_ms != CTL_UNSET)) {
        ctl_error(c, "give exactly one of --cron and --every-ms");
        return CTL_EXIT_USAGE;
    }
    json_t *event = ctl_event_json(c);
    if (!event)
        return CTL_EXIT_USAGE;
    json_t *body = json_pack("{s:s,s:o}", "topic", c->o.topic, "event", event);
    if (c->o.cron)
        json_object_set_new(body, "cron", json_string(c->o.cron));
    else
        json_object_set_new(body, "every_ms", json_integer(c->o.every_ms));
    if (c->o.timezone)
        json_object_set_new(body, "timezone", json_string(c->o.timezone));
    if (c->o.catch_up)
        json_object_set_new(body, "catch_up", json_string(c->o.catch_up));
    int rc = ctl_named(c, "PUT", "schedules", args[0], body, "saved");
    json_decref(body);
    return rc;
}

int ctl_schedule_list(ctl_t *c, const char **args, int nargs)
{
    (void)args, (void)nargs;
    return ctl_list(c, "schedules", NULL, schedule_columns, NULL);
}

int ctl_schedule_get(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return ctl_named(c, "GET", "schedules", args[0], NULL, NULL);
}

int ctl_schedule_delete(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return ctl_named(c, "DELETE", "schedules", args[0], NULL, "deleted");
}
