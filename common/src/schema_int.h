/* SPDX-License-Identifier: MIT */
/* What each schema type implements behind msm/schema.h (schema.c dispatches). */
#ifndef MSM_SCHEMA_INT_H
#define MSM_SCHEMA_INT_H

#include "msm/schema.h"

typedef struct {
    /* Compiles into *impl (the type's own state) and *canonical (malloc'd, NUL-terminated).
     * message_name is the PROTOBUF name, NULL or "" when not given; *resolved_name may be
     * set to a malloc'd name (PROTOBUF). Returns MSM_OK, or another code with err filled. */
    int (*compile)(const char *text, size_t len, const char *message_name, void **impl,
                   char **canonical, char **resolved_name, char *err, size_t err_size);
    void (*free)(void *impl);
    int (*can_read)(const void *reader, const void *writer, char *why, size_t why_size);
    int (*encode_json)(const void *impl, const json_t *value, msm_json_err_t *e,
                       uint8_t **out, size_t *out_len);
    int (*check)(const void *impl, const uint8_t *data, size_t len, char *why,
                 size_t why_size);
    json_t *(*decode_json)(const void *impl, const uint8_t *data, size_t len, char *why,
                           size_t why_size);
} msm_schema_ops_t;

extern const msm_schema_ops_t msm_schema_avro_ops;     /* schema_avro.c */
extern const msm_schema_ops_t msm_schema_json_ops;     /* schema_jsonschema.c */
extern const msm_schema_ops_t msm_schema_protobuf_ops; /* schema_protobuf.c */

#endif
