/* SPDX-License-Identifier: MIT */
/* msmctl topic … and sub …: the control plane (PUT/GET/DELETE /v1/topics/{topic} and
 * /v1/subscriptions/{name}, GET /v1/subscriptions/{name}/stats). */
#include "msmctl.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const topic_columns[] = {"name", "schema_subject", "created_at", NULL};
static const char *const sub_columns[] = {
    "name",       "topic",        "endpoints", "ordered", "max_concurrency",
    "timeout_ms", "max_attempts", "priority",  "filter",  NULL};

int ctl_named(ctl_t *c,
              const char *method,
              const char *collection,
              const char *name,
              const json_t *body,
              const char *done_word)
{
    char *esc = ctl_escape(c, name);
    if (!esc) {
        ctl_error(c, "out of memory");
        return CTL_EXIT_ERROR;
    }
    size_t n = strlen(collection) + strlen(esc) + 8;
    char *path = malloc(n);
    if (!path) {
        free(esc);
        ctl_error(c, "out of memory");
        return CTL_EXIT_ERROR;
    }
    snprintf(path, n, "/v1/%s/%s", collection, esc);
    free(esc);
    ctl_resp_t r;
    int rc = ctl_http(c, method, path, body, &r);
    free(path);
    if (rc != 0)
        return CTL_EXIT_ERROR;
    if (c->o.json) {
        ctl_print_raw(&r);
    } else {
        if (done_word)
            printf("%s %s %s\n",
                   strcmp(collection, "topics") == 0      ? "topic"
                   : strcmp(collection, "schedules") == 0 ? "schedule"
                                                          : "subscription",
                   name, done_word);
        if (json_is_object(r.json) && json_object_size(r.json) > 0 && strcmp(method, "DELETE"))
            ctl_print_object(stdout, r.json, NULL);
    }
    ctl_resp_free(&r);
    return CTL_EXIT_OK;
}

int ctl_list(ctl_t *c, const char *collection, const char *member, const char *const *columns,
             void (*shape)(json_t *row))
{
    char path[64];
    snprintf(path, sizeof(path), "/v1/%s", collection);
    ctl_resp_t r;
    if (ctl_http(c, "GET", path, NULL, &r) != 0)
        return CTL_EXIT_ERROR;
    if (c->o.json) {
        ctl_print_raw(&r);
        ctl_resp_free(&r);
        return CTL_EXIT_OK;
    }
    json_t *items = ctl_list_items(r.json, member ? member : collection);
    if (!items) {
        ctl_error(c, "GET %s: unexpected answer (try --json)", path);
        ctl_resp_free(&r);
        return CTL_EXIT_ERROR;
    }
    json_t *rows = json_deep_copy(items);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        if (shape && json_is_object(row))
            shape(row);
    }
    ctl_print_table(stdout, rows, columns);
    json_decref(rows);
    json_decref(items);
    ctl_resp_free(&r);
    return CTL_EXIT_OK;
}

/* ---- topics ---- */

int ctl_topic_create(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    json_t *body = json_object();
    if (c->o.schema_subject)
        json_object_set_new(body, "schema_subject", json_string(c->o.schema_subject));
    int rc = ctl_named(c, "PUT", "topics", args[0], body, "saved");
    json_decref(body);
    return rc;
}

int ctl_topic_list(ctl_t *c, const char **args, int nargs)
{
    (void)args, (void)nargs;
    return ctl_list(c, "topics", NULL, topic_columns, NULL);
}

int ctl_topic_get(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return ctl_named(c, "GET", "topics", args[0], NULL, NULL);
}

int ctl_topic_delete(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return ctl_named(c, "DELETE", "topics", args[0], NULL, "deleted");
}

/* ---- subscriptions ---- */

/* "http://a/,http://b/" into [{"url":…}, …]; NULL (reason printed) when one is not a URL. */
static json_t *endpoints_json(ctl_t *c, const char *list_text)
{
    json_t *arr = json_array();
    const char *p = list_text;
    while (*p) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t n = strcspn(p, ",");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n == 0)
            break;
        if (strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0) {
            ctl_error(c, "--endpoint \"%.*s\" is not an http:// or https:// URL", (int)n, p);
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, json_pack("{s:s%}", "url", p, n));
        p += n;
    }
    if (json_array_size(arr) == 0) {
        ctl_error(c, "--endpoint needs at least one URL");
        json_decref(arr);
        return NULL;
    }
    return arr;
}

static void set_if_given(json_t *obj, const char *name, int v)
{
    if (v != CTL_UNSET)
        json_object_set_new(obj, name, json_integer(v));
}

int ctl_sub_create(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    if (!c->o.topic || !*c->o.topic) {
        ctl_error(c, "--topic is required");
        return CTL_EXIT_USAGE;
    }
    if (!c->o.endpoint) {
        ctl_error(c, "--endpoint is required");
        return CTL_EXIT_USAGE;
    }
    json_t *eps = endpoints_json(c, c->o.endpoint);
    if (!eps)
        return CTL_EXIT_USAGE;
    json_t *body =
        json_pack("{s:s,s:o,s:b}", "topic", c->o.topic, "endpoints", eps, "ordered", c->o.ordered);
    if (c->o.filter)
        json_object_set_new(body, "filter", json_string(c->o.filter));
    set_if_given(body, "max_concurrency", c->o.max_concurrency);
    set_if_given(body, "timeout_ms", c->o.timeout_ms);
    set_if_given(body, "rate_limit_per_s", c->o.rate_limit_per_s);
    set_if_given(body, "priority", c->o.priority);
    json_t *retry = json_object();
    set_if_given(retry, "max_attempts", c->o.max_attempts);
    set_if_given(retry, "min_backoff_ms", c->o.min_backoff_ms);
    set_if_given(retry, "max_backoff_ms", c->o.max_backoff_ms);
    if (json_object_size(retry) > 0)
        json_object_set(body, "retry", retry);
    json_decref(retry);
    int rc = ctl_named(c, "PUT", "subscriptions", args[0], body, "saved");
    json_decref(body);
    return rc;
}

/* A subscription row for the table: endpoint URLs joined, retry.max_attempts lifted. */
static void shape_sub(json_t *row)
{
    json_t *eps = json_object_get(row, "endpoints");
    if (json_is_array(eps)) {
        char buf[512] = "";
        size_t i, len = 0;
        json_t *ep;
        json_array_foreach(eps, i, ep)
        {
            const char *u = json_string_value(json_object_get(ep, "url"));
            if (u && len < sizeof(buf))
                len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", u);
        }
        json_object_set_new(row, "endpoints", json_string(buf));
    }
    json_t *ma = json_object_get(json_object_get(row, "retry"), "max_attempts");
    if (ma && !json_object_get(row, "max_attempts"))
        json_object_set(row, "max_attempts", ma);
}

int ctl_sub_list(ctl_t *c, const char **args, int nargs)
{
    (void)args, (void)nargs;
    return ctl_list(c, "subscriptions", NULL, sub_columns, shape_sub);
}

int ctl_sub_get(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return ctl_named(c, "GET", "subscriptions", args[0], NULL, NULL);
}

int ctl_sub_delete(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return ctl_named(c, "DELETE", "subscriptions", args[0], NULL, "deleted");
}

/* POST /v1/subscriptions/{name}<action> (":pause", "/canary:promote", ...) into @p r.
 * @returns 0, or -1 once the error is reported. */
static int sub_post(ctl_t *c, const char *name, const char *action, ctl_resp_t *r)
{
    char *esc = ctl_escape(c, name);
    if (!esc) {
        ctl_error(c, "out of memory");
        return -1;
    }
    char path[1024];
    snprintf(path, sizeof(path), "/v1/subscriptions/%s%s", esc, action);
    free(esc);
    return ctl_http(c, "POST", path, NULL, r) != 0 ? -1 : 0;
}

/* POST /v1/subscriptions/{name}:<verb> (pause, resume). */
static int sub_verb(ctl_t *c, const char *name, const char *verb, const char *done_word)
{
    char action[64];
    snprintf(action, sizeof(action), ":%s", verb);
    ctl_resp_t r;
    if (sub_post(c, name, action, &r) != 0)
        return CTL_EXIT_ERROR;
    if (c->o.json)
        ctl_print_raw(&r);
    else
        printf("subscription %s %s\n", name, done_word);
    ctl_resp_free(&r);
    return CTL_EXIT_OK;
}

int ctl_sub_pause(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return sub_verb(c, args[0], "pause", "paused");
}

int ctl_sub_resume(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return sub_verb(c, args[0], "resume", "resumed");
}

/* POST /v1/subscriptions/{name}/canary:<verb>: prints the canary's new state. */
static int canary_verb(ctl_t *c, const char *name, const char *verb)
{
    char action[64];
    snprintf(action, sizeof(action), "/canary:%s", verb);
    ctl_resp_t r;
    if (sub_post(c, name, action, &r) != 0)
        return CTL_EXIT_ERROR;
    if (c->o.json)
        ctl_print_raw(&r);
    else
        printf("subscription %s: canary %s %s (share %g)\n", name,
               json_string_value(json_object_get(r.json, "version")),
               json_string_value(json_object_get(r.json, "state")),
               json_number_value(json_object_get(r.json, "share")));
    ctl_resp_free(&r);
    return CTL_EXIT_OK;
}

int ctl_canary_promote(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return canary_verb(c, args[0], "promote");
}

int ctl_canary_rollback(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    return canary_verb(c, args[0], "rollback");
}

/* ---- stats, once or --watch ---- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void print_stats(ctl_t *c, const char *name, const ctl_resp_t *r)
{
    if (c->o.json) {
        ctl_print_raw(r);
        return;
    }
    static const char *const skip[] = {"endpoints", NULL};
    static const char *const ep_columns[] = {"url", "healthy", "in_flight", NULL};
    printf("subscription %s\n", name);
    ctl_print_object(stdout, r->json, skip);
    json_t *eps = json_object_get(r->json, "endpoints");
    if (json_is_array(eps) && json_array_size(eps) > 0) {
        printf("\n");
        ctl_print_table(stdout, eps, ep_columns);
    }
}

static void sleep_ms(int ms)
{
    /* Short naps so Ctrl-C ends a watch promptly. */
    while (ms > 0 && !interrupted) {
        int step = ms < 50 ? ms : 50;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

int ctl_sub_stats(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    char *esc = ctl_escape(c, args[0]);
    char path[1024];
    snprintf(path, sizeof(path), "/v1/subscriptions/%s/stats", esc ? esc : "");
    free(esc);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    if (c->o.watch)
        sigaction(SIGINT, &sa, &old);
    int clear = c->o.watch && !c->o.json && isatty(STDOUT_FILENO);
    int rc = CTL_EXIT_OK;
    for (int round = 1; !interrupted; round++) {
        ctl_resp_t r;
        if (ctl_http(c, "GET", path, NULL, &r) != 0) {
            rc = CTL_EXIT_ERROR;
            break;
        }
        if (clear)
            printf("\033[H\033[2J(every %d ms, Ctrl-C to stop)\n", c->o.interval_ms);
        print_stats(c, args[0], &r);
        fflush(stdout);
        ctl_resp_free(&r);
        if (!c->o.watch || (c->o.watch_count > 0 && round >= c->o.watch_count))
            break;
        if (!clear && !c->o.json)
            printf("\n");
        sleep_ms(c->o.interval_ms);
    }
    if (c->o.watch)
        sigaction(SIGINT, &old, NULL);
    return rc;
}
