/* SPDX-License-Identifier: MIT */
/* The AVRO schema type's compiled tree and what schema_avro*.c share: compiling
 * (schema_avro.c), resolution (schema_avro_resolve.c), JSON to binary
 * (schema_avro_encode.c) and the bounded binary decoder (schema_avro_decode.c).
 * docs/schema-avro.md describes the behaviour. */
#ifndef MSM_SCHEMA_AVRO_INT_H
#define MSM_SCHEMA_AVRO_INT_H

#include "schema_int.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Records, arrays and maps nested in one value (and in one schema). */
#define MSM_AVRO_MAX_DEPTH 64
/** Largest binary encode_json writes. */
#define MSM_AVRO_MAX_ENCODED ((size_t)64 << 20)
/** All field defaults of one schema, pre-encoded, together. */
#define MSM_AVRO_MAX_DEFAULTS ((size_t)4 << 20)
/** Array items that take no bytes (null, empty records), per decoded value: without a
 *  bound, ten input bytes could claim 2^62 of them. */
#define MSM_AVRO_MAX_EMPTY_ITEMS 65536

typedef enum {
    AV_NULL,
    AV_BOOLEAN,
    AV_INT,
    AV_LONG,
    AV_FLOAT,
    AV_DOUBLE,
    AV_BYTES,
    AV_STRING,
    AV_RECORD,
    AV_ENUM,
    AV_ARRAY,
    AV_MAP,
    AV_UNION,
    AV_FIXED,
} av_kind_t;

typedef struct av_node_s av_node_t;

typedef struct {
    const char *af_name;
    const char *af_record; /* the full name of the record it belongs to, for messages */
    const char **af_aliases;
    size_t af_n_aliases;
    const av_node_t *af_type;
    const uint8_t *af_default; /* the default, pre-encoded in Avro binary; NULL = none */
    size_t af_default_len;
    /* compile time only: the default's JSON and where its encoding stands */
    const json_t *af_default_json;
    int af_default_state;
} av_field_t;

struct av_node_s {
    av_kind_t an_kind;
    const char *an_fullname; /* named types; else the type name ("int", "array", ...) */
    const char *an_name;     /* named types: the unqualified part of an_fullname */
    const char **an_aliases; /* named types: full names */
    size_t an_n_aliases;
    av_field_t *an_fields;                /* record */
    const av_field_t **an_fields_by_name; /* record: an_fields sorted by name */
    size_t an_n_fields;
    const char **an_symbols; /* enum */
    size_t an_n_symbols;
    long an_enum_default;          /* enum: index of the default symbol, -1 = none */
    size_t an_size;                /* fixed */
    const av_node_t *an_items;     /* array items, map values */
    const av_node_t **an_branches; /* union */
    size_t an_n_branches;
    bool an_may_be_empty; /* a value may take no bytes at all (null, {} records) */
};

typedef struct av_compiler_s av_compiler_t;

/** @brief A record field by name (binary search), or NULL. */
const av_field_t *msm__avro_field_find(const av_node_t *record, const char *name);

/** @brief The name a union branch goes by in the JSON encoding ("int", "map", "a.b.Rec"). */
const char *msm__avro_branch_name(const av_node_t *n);

/** @brief Writes "null, string, a.b.Rec" into @p buf (cut to fit). */
void msm__avro_union_list(const av_node_t *u, char *buf, size_t size);

/** The branch a JSON value selects in a union (encode and decode must agree). */
#define AV_PICK_NONE      (-1) /* no branch takes this JSON type */
#define AV_PICK_AMBIGUOUS (-2) /* several do: the value must be wrapped */
#define AV_PICK_WRAPPED   (-3) /* {"<branch name>": value}: the wrapped form */

/** @brief Which branch of @p u the bare (unwrapped) value @p v selects, or AV_PICK_*.
 *  A one-member object whose key names a branch is AV_PICK_WRAPPED. */
long msm__avro_union_pick(const av_node_t *u, const json_t *v);

/** @brief The branch of @p u named @p name in the JSON encoding, or -1. */
long msm__avro_union_branch_by_name(const av_node_t *u, const char *name);

/**
 * @brief Encodes one JSON value (schema_avro_encode.c).
 * @param defaults true: the value is a field default (unions take their first branch, bare;
 *        unknown record members are ignored); false: user data (docs/schema-avro.md)
 * @param cc compile time only (NULL afterwards): computes nested field defaults on demand
 * @param depth records/arrays/maps already entered
 * @param limit most bytes the encoding may take (more is an error in @p e)
 * @param out malloc'd bytes the caller frees (set only on MSM_OK)
 * @returns MSM_OK, MSM_ERR_INVALID (errors in @p e), MSM_ERR_NOMEM
 */
int msm__avro_encode(const av_node_t *n,
                     const json_t *value,
                     bool defaults,
                     av_compiler_t *cc,
                     int depth,
                     size_t limit,
                     msm_json_err_t *e,
                     uint8_t **out,
                     size_t *out_len);

/**
 * @brief Compile time: makes sure @p f's default is encoded (af_default set), encoding it
 * now if needed (schema_avro.c).
 * @returns MSM_OK, MSM_ERR_INVALID (reason in the compiler), MSM_ERR_NOMEM.
 */
int msm__avro_field_default(av_compiler_t *cc, av_field_t *f, int depth);

/**
 * @brief Decodes (json != NULL) or only checks (json == NULL) one value of @p root
 * (schema_avro_decode.c).
 * @param canonical when not NULL, set to whether @p data is exactly what encode_json writes
 *        for it (one block per non-empty array or map, shortest varints): only then does
 *        encode(decode(x)) give x back byte for byte
 * @returns MSM_OK, MSM_ERR_INVALID (reason in @p why), MSM_ERR_NOMEM.
 */
int msm__avro_decode(const av_node_t *root,
                     const uint8_t *data,
                     size_t len,
                     json_t **json,
                     bool *canonical,
                     char *why,
                     size_t why_size);

/** @brief The root of a compiled AVRO schema (the impl of msm_schema_avro_ops). */
const av_node_t *msm__avro_root(const void *impl);

/** @brief Decodes one UTF-8 character of at most @p n bytes at @p p into *cp.
 *  @returns its length, or 0 when it is not valid UTF-8 (overlong forms, surrogates and
 *  code points above U+10FFFF included). */
size_t msm__avro_utf8_next(const uint8_t *p, size_t n, uint32_t *cp);

/** @brief Resolution (schema_avro_resolve.c): msm_schema_avro_ops.can_read. */
int msm__avro_can_read(const void *reader, const void *writer, char *why, size_t why_size);

#endif
