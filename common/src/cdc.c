/* SPDX-License-Identifier: MIT */
/* CDC sources, changes and their envelopes (msm/cdc.h): what the frontend's push and the
 * scheduler's pull share, so a change is the same event whichever path brings it. */
#include "msm/cdc.h"

#include "msm/err.h"
#include "msm/registry.h"

#include <stdlib.h>
#include <string.h>

/* ---- sources ---- */

static int url_ok(const char *u)
{
    return (strncmp(u, "http://", 7) == 0 && u[7]) || (strncmp(u, "https://", 8) == 0 && u[8]);
}

void msm_cdc_source_free(msm_cdc_source_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->npartitions; i++)
        free(s->partitions[i]);
    free(s->partitions);
    free(s->name);
    free(s->topic);
    free(s->range_url);
    free(s);
}

static void check_partitions(msm_json_err_t *e, const json_t *parts)
{
    if (json_array_size(parts) > MSM_CDC_PARTITIONS_MAX)
        msm_json_err_add(e, "partitions", "at most %d partitions", MSM_CDC_PARTITIONS_MAX);
    msm_json_path_push_key(e, "partitions");
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p)
    {
        msm_json_path_push_index(e, i);
        if (!json_is_string(p) || !msm_name_valid(json_string_value(p)))
            msm_json_err_add(e, NULL, "must be a name matching [A-Za-z0-9._-]{1,200}");
        for (size_t j = 0; j < i && json_is_string(p); j++) {
            if (json_equal(p, json_array_get(parts, j)))
                msm_json_err_add(e, NULL, "appears twice");
        }
        msm_json_path_pop(e);
    }
    msm_json_path_pop(e);
}

msm_cdc_source_t *msm_cdc_source_from_json(const char *name, const json_t *body, msm_json_err_t *e)
{
    static const char *const known[] = {"topic",      "range_url", "partitions", "poll_interval_ms",
                                        "batch_size", "name",      NULL};
    const char *topic = NULL, *url = NULL;
    json_t *parts = NULL;
    int64_t poll = MSM_CDC_POLL_DEFAULT_MS, batch = MSM_CDC_BATCH_DEFAULT;
    if (msm_json_expect_object(e, body) != MSM_OK)
        return NULL;
    msm_json_check_known(e, body, known);
    if (msm_json_get_str(e, body, "topic", MSM_JSON_REQUIRED, &topic) == MSM_OK &&
        !msm_name_valid(topic))
        msm_json_err_add(e, "topic", "must match [A-Za-z0-9._-]{1,200}");
    if (msm_json_get_strn(e, body, "range_url", MSM_JSON_NULLABLE, MSM_CDC_URL_MAX, &url) ==
            MSM_OK &&
        url && (!url_ok(url) || msm_json_has_control_chars(url)))
        msm_json_err_add(e, "range_url", "must be an http:// or https:// URL");
    if (msm_json_get_array(e, body, "partitions", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &parts) ==
        MSM_OK)
        check_partitions(e, parts);
    msm_json_get_int(e, body, "poll_interval_ms", MSM_JSON_NULLABLE, MSM_CDC_POLL_MIN_MS,
                     MSM_CDC_POLL_MAX_MS, &poll);
    msm_json_get_int(e, body, "batch_size", MSM_JSON_NULLABLE, 1, MSM_CDC_BATCH_MAX, &batch);
    if (msm_json_err_count(e))
        return NULL;
    msm_cdc_source_t *s = calloc(1, sizeof(*s));
    if (!s)
        goto nomem;
    s->poll_interval_ms = (int)poll;
    s->batch_size = (int)batch;
    s->npartitions = json_array_size(parts);
    s->partitions = calloc(s->npartitions, sizeof(*s->partitions));
    if (!s->partitions || !(s->name = strdup(name)) || !(s->topic = strdup(topic)) ||
        (url && !(s->range_url = strdup(url))))
        goto nomem;
    for (size_t i = 0; i < s->npartitions; i++) {
        if (!(s->partitions[i] = strdup(json_string_value(json_array_get(parts, i)))))
            goto nomem;
    }
    return s;
nomem:
    msm_cdc_source_free(s);
    msm_json_err_add(e, NULL, "out of memory");
    return NULL;
}

json_t *msm_cdc_source_to_json(const msm_cdc_source_t *s)
{
    json_t *parts = json_array();
    for (size_t i = 0; parts && i < s->npartitions; i++)
        json_array_append_new(parts, json_string(s->partitions[i]));
    return json_pack("{s:s,s:s,s:s?,s:o*,s:i,s:i}", "name", s->name, "topic", s->topic, "range_url",
                     s->range_url, "partitions", parts, "poll_interval_ms", s->poll_interval_ms,
                     "batch_size", s->batch_size);
}

int msm_cdc_source_has_partition(const msm_cdc_source_t *s, const char *partition)
{
    for (size_t i = 0; i < s->npartitions; i++) {
        if (strcmp(s->partitions[i], partition) == 0)
            return 1;
    }
    return 0;
}

/* ---- changes ---- */

static void check_change(const json_t *c, int64_t *prev, msm_json_err_t *e, msm_json_err_t *big)
{
    static const char *const known[] = {"sequence", "op", "entity", "data", NULL};
    const char *op = NULL, *entity = NULL;
    int64_t seq = 0;
    Msm__V1__Operation parsed;
    if (msm_json_expect_object(e, c) != MSM_OK)
        return;
    msm_json_check_known(e, c, known);
    if (msm_json_get_int(e, c, "sequence", MSM_JSON_REQUIRED, 1, INT64_MAX, &seq) == MSM_OK &&
        seq <= *prev)
        msm_json_err_add(e, "sequence", "must be greater than the previous change's");
    *prev = seq > *prev ? seq : *prev;
    if (msm_json_get_str(e, c, "op", MSM_JSON_REQUIRED, &op) == MSM_OK &&
        msm_operation_parse(op, &parsed) != MSM_OK)
        msm_json_err_add(e, "op", "must be create, update or delete");
    if (msm_json_get_str(e, c, "entity", MSM_JSON_REQUIRED | MSM_JSON_NONEMPTY, &entity) == MSM_OK)
        msm_json_check_text(e, big, "entity", entity, MSM_CDC_ENTITY_MAX);
    if (!json_object_get(c, "data") && op && strcmp(op, "delete") != 0)
        msm_json_err_add(e, "data", "is required (except for delete)");
}

void msm_cdc_changes_check(const json_t *changes, msm_json_err_t *e, msm_json_err_t *big)
{
    int64_t prev = 0;
    size_t i;
    json_t *c;
    json_array_foreach(changes, i, c)
    {
        msm_json_path_push_index(e, i);
        msm_json_path_push_index(big, i);
        check_change(c, &prev, e, big);
        msm_json_path_pop(e);
        msm_json_path_pop(big);
    }
}

void msm_cdc_change_get(const json_t *c, msm_cdc_change_t *out)
{
    out->sequence = json_integer_value(json_object_get(c, "sequence"));
    out->op = MSM__V1__OPERATION__OPERATION_UNSPECIFIED;
    msm_operation_parse(json_string_value(json_object_get(c, "op")), &out->op);
    out->entity = json_string_value(json_object_get(c, "entity"));
    out->data = json_object_get(c, "data");
}

/* ---- events ---- */

int msm_cdc_payload(const msm_cdc_change_t *c,
                    const msm_schema_t *schema,
                    int32_t schema_id,
                    size_t limit,
                    msm_cdc_payload_t *out,
                    msm_json_err_t *e,
                    msm_json_err_t *big)
{
    msm_cdc_payload_t p = {.content_type = "application/json"};
    if (!c->data) { /* a tombstone: nothing to check */
        if (!(p.data = (uint8_t *)strdup("null")))
            return MSM_ERR_NOMEM;
        p.len = 4;
    } else if (schema) {
        int rc = msm_schema_encode_json(schema, c->data, e, &p.data, &p.len);
        if (rc != MSM_OK)
            return rc;
        p.content_type = msm_schema_content_type(schema);
        p.schema_id = schema_id;
    } else if (!(p.data = (uint8_t *)msm_json_dump(c->data, &p.len))) {
        return MSM_ERR_NOMEM;
    }
    if (p.len > limit) {
        msm_json_err_add(big, NULL, "exceeds the limit of %zu bytes%s", limit,
                         p.schema_id ? " once encoded" : "");
        free(p.data);
        return MSM_ERR_INVALID;
    }
    *out = p;
    return MSM_OK;
}

void msm_cdc_envelope(Msm__V1__Event *env,
                      const char *source,
                      const char *partition,
                      const msm_cdc_change_t *c)
{
    env->key = (char *)c->entity;
    env->ordering_key = (char *)c->entity;
    env->cdc_source = (char *)source;
    env->cdc_partition = (char *)partition;
    env->cdc_sequence = c->sequence;
    env->cdc_operation = c->op;
    env->cdc_entity = (char *)c->entity;
}
