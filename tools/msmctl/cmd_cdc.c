/* SPDX-License-Identifier: MIT */
/* msmctl cdc: CDC sources (GET /v1/cdc/sources[/{name}]), their partitions' cursors and lag
 * (GET /v1/cdc/sources/{name}/partitions) and :notify (docs/cdc.md). */
#include "msmctl.h"

#include <stdlib.h>
#include <string.h>

static const char *const source_columns[] = {
    "name", "topic", "range_url", "partitions", "poll_interval_ms", "batch_size", NULL};
static const char *const partition_columns[] = {
    "partition", "cursor", "notified", "lag", "owner", "append_pending", "durable_above_cursor",
    NULL};

/* "/v1/cdc/sources/<escaped name><suffix>", malloc'd (NULL: out of memory, said). */
static char *source_path(ctl_t *c, const char *name, const char *suffix)
{
    char *esc = ctl_escape(c, name);
    size_t n = esc ? strlen(esc) + strlen(suffix) + 24 : 0;
    char *path = esc ? malloc(n) : NULL;
    if (path)
        snprintf(path, n, "/v1/cdc/sources/%s%s", esc, suffix);
    else
        ctl_error(c, "out of memory");
    free(esc);
    return path;
}

int ctl_cdc_list(ctl_t *c, const char **args, int nargs)
{
    (void)args, (void)nargs;
    return ctl_list(c, "cdc/sources", "sources", source_columns, NULL);
}

int ctl_cdc_get(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    char *path = source_path(c, args[0], "");
    char *ppath = source_path(c, args[0], "/partitions");
    ctl_resp_t r, p;
    int rc = CTL_EXIT_ERROR;
    if (!path || !ppath || ctl_http(c, "GET", path, NULL, &r) != 0)
        goto out;
    if (ctl_http(c, "GET", ppath, NULL, &p) != 0) {
        ctl_resp_free(&r);
        goto out;
    }
    if (c->o.json) {
        /* one object: the source, its partitions' state under "state" */
        json_t *both = json_deep_copy(r.json);
        json_object_set(both, "state", json_object_get(p.json, "partitions"));
        char *text = json_dumps(both, JSON_COMPACT);
        printf("%s\n", text ? text : "null");
        free(text);
        json_decref(both);
    } else {
        ctl_print_object(stdout, r.json, NULL);
        printf("\n");
        ctl_print_table(stdout, json_object_get(p.json, "partitions"), partition_columns);
    }
    ctl_resp_free(&p);
    ctl_resp_free(&r);
    rc = CTL_EXIT_OK;
out:
    free(path);
    free(ppath);
    return rc;
}

int ctl_cdc_notify(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    if (!c->o.partition || c->o.sequence < 1) {
        ctl_error(c, "--partition and --sequence are required");
        return CTL_EXIT_USAGE;
    }
    char *path = source_path(c, args[0], ":notify");
    if (!path)
        return CTL_EXIT_ERROR;
    json_t *body =
        json_pack("{s:s,s:I}", "partition", c->o.partition, "sequence", (json_int_t)c->o.sequence);
    ctl_resp_t r;
    int rc = CTL_EXIT_ERROR;
    if (ctl_http(c, "POST", path, body, &r) == 0) {
        if (c->o.json)
            ctl_print_raw(&r);
        else
            printf("source %s partition %s notified of sequence %lld (highest notified %lld)\n",
                   args[0], c->o.partition, c->o.sequence,
                   (long long)json_integer_value(json_object_get(r.json, "notified")));
        ctl_resp_free(&r);
        rc = CTL_EXIT_OK;
    }
    json_decref(body);
    free(path);
    return rc;
}
