/* SPDX-License-Identifier: MIT */
/* msmctl tasks and dlq: one event's task in a subscription
 * (GET /v1/subscriptions/{name}/tasks/{event_id}), the tasks waiting for a retry or
 * delayed (GET …/tasks?state=S, page by page), the dead-letter queue (GET …/dlq?limit=N)
 * and its replay (POST …/dlq:replay). */
#include "msmctl.h"

#include <stdlib.h>
#include <string.h>

static const char *const task_columns[] = {"event_id",        "state",      "attempts",
                                           "next_attempt_at", "last_error", NULL};
/* docs/pipeline.md: the attempts flowcontrol keeps in a task's history */
static const char *const history_columns[] = {"attempt", "at",         "result", "http_status",
                                              "error",   "latency_ms", NULL};

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

#define LIST_PAGE_MAX 1000 /* the frontend's largest page */

/* One page of GET …/tasks?state=S from @p cursor (NULL = first): its tasks appended to
 * @p all, the next cursor (malloc'd) in *next or NULL. */
static int list_page(ctl_t *c, const char *sub, const char *state, int limit,
                     const char *cursor, json_t *all, char **next)
{
    char *esc = cursor ? ctl_escape(c, cursor) : NULL;
    char suffix[512], path[1024];
    snprintf(suffix, sizeof(suffix), "/tasks?state=%s&limit=%d%s%s", state, limit,
             esc ? "&cursor=" : "", esc ? esc : "");
    free(esc);
    ctl_resp_t r;
    *next = NULL;
    if (sub_path(c, sub, suffix, path, sizeof(path)) != 0 ||
        ctl_http(c, "GET", path, NULL, &r) != 0)
        return -1;
    json_array_extend(all, json_object_get(r.json, "tasks"));
    const char *n = json_string_value(json_object_get(r.json, "next_cursor"));
    if (n)
        *next = strdup(n);
    ctl_resp_free(&r);
    return 0;
}

/* Up to --limit tasks in @p state, following next_cursor page by page. */
static int list_state(ctl_t *c, const char *sub, const char *state)
{
    json_t *all = json_array();
    char *cursor = NULL;
    int rc = CTL_EXIT_OK;
    for (int left = c->o.limit; left > 0;) {
        int page = left > LIST_PAGE_MAX ? LIST_PAGE_MAX : left;
        char *next;
        size_t before = json_array_size(all);
        if (list_page(c, sub, state, page, cursor, all, &next) != 0) {
            rc = CTL_EXIT_ERROR;
            break;
        }
        free(cursor);
        cursor = next;
        left -= (int)(json_array_size(all) - before);
        if (!cursor || json_array_size(all) == before)
            break;
    }
    free(cursor);
    if (rc == CTL_EXIT_OK) {
        if (c->o.json) {
            json_t *o = json_pack("{s:O}", "tasks", all);
            char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
            printf("%s\n", text ? text : "{}");
            free(text);
            json_decref(o);
        } else {
            ctl_print_table(stdout, all, task_columns);
        }
    }
    json_decref(all);
    return rc;
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
        ctl_error(c, "expected an EVENT_ID, or --state dead|retrying|delayed to list tasks");
        return CTL_EXIT_USAGE;
    }
    if (strcmp(c->o.state, "dead") == 0)
        return list_dead(c, args[0]);
    if (strcmp(c->o.state, "retrying") == 0 || strcmp(c->o.state, "delayed") == 0)
        return list_state(c, args[0], c->o.state);
    ctl_error(c,
              "--state %s: only dead, retrying and delayed tasks can be listed (the others "
              "are not indexed); show one task with msmctl tasks SUB EVENT_ID",
              c->o.state);
    return CTL_EXIT_USAGE;
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
