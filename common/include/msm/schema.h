/* SPDX-License-Identifier: MIT */
/* Compiled schemas of the three registry types (API.md "Schema registry"): AVRO (avro-c,
 * Avro's own resolution rules), JSON (a JSON Schema keyword subset, docs/schema-json.md) and
 * PROTOBUF (a FileDescriptorSet plus one message's full name; C has no .proto parser).
 *
 * One compiled schema answers four questions:
 *   - is this the same schema as that one?      msm_schema_canonical()
 *   - may data written with W be read with R?   msm_schema_can_read()
 *   - JSON in, the schema's wire form out:      msm_schema_encode_json()
 *   - wire form in: valid? as JSON?             msm_schema_check(), msm_schema_decode_json()
 *
 * A compiled schema is immutable: it may be shared and used from any thread. */
#ifndef MSM_SCHEMA_H
#define MSM_SCHEMA_H

#include "msm/json.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    MSM_SCHEMA_AVRO = 1,
    MSM_SCHEMA_JSON = 2,
    MSM_SCHEMA_PROTOBUF = 3,
} msm_schema_type_t;

typedef struct msm_schema_s msm_schema_t;

/** @brief "AVRO", "JSON" or "PROTOBUF" (exact, as Confluent spells them) into *out.
 *  @returns MSM_OK or MSM_ERR_INVALID. */
int msm_schema_type_parse(const char *name, msm_schema_type_t *out);

/** @brief The registry's name of @p type ("AVRO", ...). */
const char *msm_schema_type_name(msm_schema_type_t type);

/**
 * @brief Compiles a schema text.
 * @param text AVRO: the schema JSON; JSON: the JSON Schema document; PROTOBUF: a base64
 *        (RFC 4648, padded) google.protobuf.FileDescriptorSet
 * @param message_name PROTOBUF only: the message's full name ("pkg.Msg", a leading '.' is
 *        allowed); NULL or "" = the first message of the set's last file. Ignored otherwise.
 * @param err receives one line saying what is wrong when compiling fails
 * @returns the schema, or NULL (the reason in @p err; "out of memory" included).
 */
msm_schema_t *msm_schema_compile(msm_schema_type_t type, const char *text, size_t len,
                                 const char *message_name, char *err, size_t err_size);

void msm_schema_free(msm_schema_t *s);

msm_schema_type_t msm_schema_type(const msm_schema_t *s);

/** @brief The normalized text: two schemas are the same schema (same registry id) exactly
 *  when their canonical texts are equal. Whitespace and member order of the input do not
 *  matter (AVRO, JSON); PROTOBUF is the set's bytes re-encoded plus the message name. */
const char *msm_schema_canonical(const msm_schema_t *s);

/** @brief PROTOBUF: the resolved message full name without the leading dot; else NULL. */
const char *msm_schema_message_name(const msm_schema_t *s);

/** @brief The media type of the wire form: application/avro, application/json or
 *  application/x-protobuf. */
const char *msm_schema_content_type(const msm_schema_t *s);

/**
 * @brief Can a reader using @p reader decode every datum written with @p writer?
 * (Confluent: BACKWARD = can_read(new, latest); FORWARD = can_read(latest, new).)
 * Schemas of different types are never compatible.
 * @param why receives the first incompatibility found ("field 'x': type changed from int
 *        to string")
 * @returns MSM_OK when compatible, MSM_ERR_CONFLICT when not, MSM_ERR_NOMEM.
 */
int msm_schema_can_read(const msm_schema_t *reader, const msm_schema_t *writer, char *why,
                        size_t why_size);

/**
 * @brief Validates a JSON value against the schema and encodes it in the wire form (Avro
 * binary, protobuf wire format, or compact JSON text for JSON schemas).
 * JSON mappings: AVRO follows the Avro JSON encoding, except that a union's value may be
 * given bare when exactly one branch fits it (docs/schema-avro.md); PROTOBUF follows proto3's
 * JSON mapping (lowerCamelCase or original field names, enums by name or number, 64-bit
 * integers as numbers or strings, bytes as base64).
 * @param e errors are added at e's current path extended by the path inside the value
 *        (the caller pushes e.g. events[3].data first)
 * @param out malloc'd bytes the caller frees (set only on MSM_OK)
 * @returns MSM_OK, MSM_ERR_INVALID (errors in @p e), MSM_ERR_NOMEM.
 */
int msm_schema_encode_json(const msm_schema_t *s, const json_t *value, msm_json_err_t *e,
                           uint8_t **out, size_t *out_len);

/**
 * @brief Validates data in the wire form by decoding it completely (every byte must be
 * consumed; bounded recursion; never reads past @p len).
 * @returns MSM_OK, MSM_ERR_INVALID (reason in @p why), MSM_ERR_NOMEM.
 */
int msm_schema_check(const msm_schema_t *s, const uint8_t *data, size_t len, char *why,
                     size_t why_size);

/**
 * @brief Decodes data in the wire form into JSON (the same mappings as encode, so
 * encode(decode(x)) == x for valid x).
 * @returns a new reference, or NULL (reason in @p why).
 */
json_t *msm_schema_decode_json(const msm_schema_t *s, const uint8_t *data, size_t len,
                               char *why, size_t why_size);

#endif
