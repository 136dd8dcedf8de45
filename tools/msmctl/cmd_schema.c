/* SPDX-License-Identifier: MIT */
/* msmctl schema: the registry's Confluent-compatible subset (POST /subjects/{s}/versions,
 * GET /subjects). */
#include "msmctl.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int ctl_schema_register(ctl_t *c, const char **args, int nargs)
{
    (void)nargs;
    if (!c->o.schema) {
        ctl_error(c, "--schema is required (the schema text, or @FILE)");
        return CTL_EXIT_USAGE;
    }
    const char *type = c->o.schema_type;
    if (strcasecmp(type, "AVRO") != 0 && strcasecmp(type, "JSON") != 0 &&
        strcasecmp(type, "PROTOBUF") != 0) {
        ctl_error(c, "--type %s: expected AVRO, JSON or PROTOBUF", type);
        return CTL_EXIT_USAGE;
    }
    char *text = ctl_text_arg(c, "--schema", c->o.schema);
    if (!text)
        return CTL_EXIT_USAGE;
    char upper[16];
    size_t i = 0;
    for (; type[i] && i + 1 < sizeof(upper); i++)
        upper[i] = (char)(type[i] >= 'a' && type[i] <= 'z' ? type[i] - 32 : type[i]);
    upper[i] = '\0';
    json_t *body = json_pack("{s:s,s:s,s:s*}", "schema", text, "schemaType", upper,
                             "messageName", c->o.message_name);
    free(text);
    char *esc = ctl_escape(c, args[0]);
    char path[1024];
    snprintf(path, sizeof(path), "/subjects/%s/versions", esc ? esc : "");
    free(esc);
    ctl_resp_t r;
    int rc = CTL_EXIT_ERROR;
    if (ctl_http(c, "POST", path, body, &r) == 0) {
        if (c->o.json)
            ctl_print_raw(&r);
        else
            printf("subject %s: schema id %lld\n", args[0],
                   (long long)json_integer_value(json_object_get(r.json, "id")));
        ctl_resp_free(&r);
        rc = CTL_EXIT_OK;
    }
    json_decref(body);
    return rc;
}

int ctl_schema_list(ctl_t *c, const char **args, int nargs)
{
    (void)args, (void)nargs;
    ctl_resp_t r;
    if (ctl_http(c, "GET", "/subjects", NULL, &r) != 0)
        return CTL_EXIT_ERROR;
    if (c->o.json) {
        ctl_print_raw(&r);
    } else if (json_array_size(r.json) == 0) {
        printf("(none)\n");
    } else {
        size_t i;
        json_t *s;
        json_array_foreach(r.json, i, s)
        {
            char *cell = ctl_cell(s);
            printf("%s\n", cell ? cell : "?");
            free(cell);
        }
    }
    ctl_resp_free(&r);
    return CTL_EXIT_OK;
}
