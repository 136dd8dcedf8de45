/* SPDX-License-Identifier: MIT */
/* msmctl tasks and dlq: one event's task in a subscription
 * (GET /v1/subscriptions/{name}/tasks/{event_id}), the dead-letter queue
 * (GET …/dlq?limit=N) and its replay (POST …/dlq:replay). */
#include "msmctl.h"

#include <stdlib.h>
#include <string.h>

static const char *const task_columns[] = {"event_id",        "state",      "attempts",
                                           "next_attempt_at", "last_error", NULL};
static const char *const history_columns[] = {"attempt", "at",          "state", "status",
                                              "result",  "duration_ms", "error", NULL};

static int sub_path(ctl_t *c, const char *sub, const char *suffix, char *out, size_t n)
{
    char *esc = ctl_escape(c, sub);
    if (!esc) {
        ctl_error(c, "out of memory");
        return -1;
    }
    snprintf(out, n, "/v1/subscriptions/%s%s", esc, suffix);
    free(esc);
    return 0;
}

static int show_task(ctl_t *c, const char *sub, const char *event_id)
{
    char *esc = ctl_escape(c, event_id);
    char suffix[600];
    snprintf(suffix, sizeof(suffix), "/tasks/%s", esc ? esc : "");
    free(esc);
    char path[1024];
    ctl_resp_t r;
    if (sub_path(c, sub, suffix, path, sizeof(path)) != 0 ||
        ctl_http(c, "GET", path, NULL, &r) != 0)
        return CTL_EXIT_ERROR;
    if (c->o.json) {
        ctl_print_raw(&r);
        ctl_resp_free(&r);
        return CTL_EXIT_OK;
    }
    static const char *const skip[] = {"history", NULL};
    ctl_print_object(stdout, r.json, skip);
    json_t *history = json_object_get(r.json, "history");
    if (json_is_array(history) && json_array_size(history) > 0) {
        printf("\nhistory:\n");
        if (json_is_object(json_array_get(history, 0))) {
            ctl_print_table(stdout, history, history_columns);
        } else {
            size_t i;
            json_t *h;
            json_array_foreach(history, i, h)
            {
                char *s = ctl_cell(h);
                printf("  %s\n", s ? s : "?");
                free(s);
            }
        }
    }
    ctl_resp_free(&r);
    return CTL_EXIT_OK;
}

static int list_dead(ctl_t *c, const char *sub)
{
    char suffix[64], path[1024];
    snprintf(suffix, sizeof(suffix), "/dlq?limit=%d", c->o.limit);
    ctl_resp_t r;
    if (sub_path(c, sub, suffix, path, sizeof(path)) != 0 ||
        ctl_http(c, "GET", path, NULL, &r) != 0)
        return CTL_EXIT_ERROR;
    if (c->o.json) {
        ctl_print_raw(&r);
    } else {
        json_t *tasks = ctl_list_items(r.json, "tasks");
        ctl_print_table(stdout, tasks, task_columns);
        json_decref(tasks);
    }
    ctl_resp_free(&r);
    return CTL_EXIT_OK;
}

int ctl_tasks(ctl_t *c, const char **args, int nargs)
{
    if (nargs == 2) {
        if (c->o.state) {
            ctl_error(c, "give an EVENT_ID or --state, not both");
            return CTL_EXIT_USAGE;
        }
        return show_task(c, args[0], args[1]);
    }
    if (!c->o.state) {
        ctl_error(c, "expected an EVENT_ID, or --state dead to list the dead-letter queue");
        return CTL_EXIT_USAGE;
    }
    if (strcmp(c->o.state, "dead") != 0) {
        ctl_error(c,
                  "--state %s: only dead tasks can be listed (the API lists the "
                  "dead-letter queue); show one task with msmctl tasks SUB EVENT_ID",
                  c->o.state);
        return CTL_EXIT_USAGE;
    }
    return list_dead(c, args[0]);
}

int ctl_dlq_list(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return list_dead(c, args[0]);
}

int ctl_dlq_replay(ctl_t *c, const char **args, int nargs)
{
    json_t *ids = json_array();
    for (int i = 1; i < nargs; i++)
        json_array_append_new(ids, json_string(args[i]));
    json_t *body = json_pack("{s:o}", "event_ids", ids);
    char path[1024];
    ctl_resp_t r;
    int rc = CTL_EXIT_ERROR;
    if (sub_path(c, args[0], "/dlq:replay", path, sizeof(path)) == 0 &&
        ctl_http(c, "POST", path, body, &r) == 0) {
        if (c->o.json)
            ctl_print_raw(&r);
        else
            printf("replayed %lld\n",
                   (long long)json_integer_value(json_object_get(r.json, "replayed")));
        ctl_resp_free(&r);
        rc = CTL_EXIT_OK;
    }
    json_decref(body);
    return rc;
}
