/* SPDX-License-Identifier: MIT */
/* msm/schema.h: the type-independent part, dispatching to each type's ops. */
#include "schema_int.h"

#include "msm/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msm_schema_s {
    msm_schema_type_t type;
    const msm_schema_ops_t *ops;
    void *impl;
    char *canonical;
    char *message_name;
};

static const msm_schema_ops_t *ops_of(msm_schema_type_t type)
{
    switch (type) {
    case MSM_SCHEMA_AVRO:
        return &msm_schema_avro_ops;
    case MSM_SCHEMA_JSON:
        return &msm_schema_json_ops;
    case MSM_SCHEMA_PROTOBUF:
        return &msm_schema_protobuf_ops;
    }
    return NULL;
}

int msm_schema_type_parse(const char *name, msm_schema_type_t *out)
{
    static const msm_schema_type_t all[] = {MSM_SCHEMA_AVRO, MSM_SCHEMA_JSON,
                                            MSM_SCHEMA_PROTOBUF};
    for (size_t i = 0; name && i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(name, msm_schema_type_name(all[i])) == 0) {
            *out = all[i];
            return MSM_OK;
        }
    }
    return MSM_ERR_INVALID;
}

const char *msm_schema_type_name(msm_schema_type_t type)
{
    switch (type) {
    case MSM_SCHEMA_AVRO:
        return "AVRO";
    case MSM_SCHEMA_JSON:
        return "JSON";
    case MSM_SCHEMA_PROTOBUF:
        return "PROTOBUF";
    }
    return "?";
}

msm_schema_t *msm_schema_compile(msm_schema_type_t type, const char *text, size_t len,
                                 const char *message_name, char *err, size_t err_size)
{
    const msm_schema_ops_t *ops = ops_of(type);
    if (!ops) {
        snprintf(err, err_size, "unknown schema type");
        return NULL;
    }
    msm_schema_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    s->type = type;
    s->ops = ops;
    if (ops->compile(text ? text : "", text ? len : 0, message_name, &s->impl, &s->canonical,
                     &s->message_name, err, err_size) != MSM_OK) {
        free(s->canonical);
        free(s->message_name);
        free(s);
        return NULL;
    }
    return s;
}

void msm_schema_free(msm_schema_t *s)
{
    if (!s)
        return;
    s->ops->free(s->impl);
    free(s->canonical);
    free(s->message_name);
    free(s);
}

msm_schema_type_t msm_schema_type(const msm_schema_t *s)
{
    return s->type;
}

const char *msm_schema_canonical(const msm_schema_t *s)
{
    return s->canonical;
}

const char *msm_schema_message_name(const msm_schema_t *s)
{
    return s->type == MSM_SCHEMA_PROTOBUF ? s->message_name : NULL;
}

const char *msm_schema_content_type(const msm_schema_t *s)
{
    switch (s->type) {
    case MSM_SCHEMA_AVRO:
        return "application/avro";
    case MSM_SCHEMA_JSON:
        return "application/json";
    case MSM_SCHEMA_PROTOBUF:
        return "application/x-protobuf";
    }
    return "application/octet-stream";
}

int msm_schema_can_read(const msm_schema_t *reader, const msm_schema_t *writer, char *why,
                        size_t why_size)
{
    if (reader->type != writer->type) {
        snprintf(why, why_size, "schema type changed from %s to %s",
                 msm_schema_type_name(writer->type), msm_schema_type_name(reader->type));
        return MSM_ERR_CONFLICT;
    }
    return reader->ops->can_read(reader->impl, writer->impl, why, why_size);
}

int msm_schema_encode_json(const msm_schema_t *s, const json_t *value, msm_json_err_t *e,
                           uint8_t **out, size_t *out_len)
{
    return s->ops->encode_json(s->impl, value, e, out, out_len);
}

int msm_schema_check(const msm_schema_t *s, const uint8_t *data, size_t len, char *why,
                     size_t why_size)
{
    return s->ops->check(s->impl, data, len, why, why_size);
}

json_t *msm_schema_decode_json(const msm_schema_t *s, const uint8_t *data, size_t len,
                               char *why, size_t why_size)
{
    return s->ops->decode_json(s->impl, data, len, why, why_size);
}
