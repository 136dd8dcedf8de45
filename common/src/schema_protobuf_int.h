/* SPDX-License-Identifier: MIT */
/* The PROTOBUF schema type inside: the compiled descriptors (schema_protobuf.c), the bounded
 * wire-format reader every part shares, and the entry points of the codec
 * (schema_protobuf_codec.c) and of the compatibility check (schema_protobuf_compat.c). */
#ifndef MSM_SCHEMA_PROTOBUF_INT_H
#define MSM_SCHEMA_PROTOBUF_INT_H

#include "schema_int.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Deepest nesting of messages (map entries count as a level) in data and in JSON. */
#define PB_MAX_DEPTH 64
/** Doubles of this magnitude and above round to an infinite float (FLT_MAX + half an ulp). */
#define PB_FLOAT_OVERFLOW 3.4028235677973366e38
/** Largest field number the wire format allows (2^29 - 1). */
#define PB_MAX_FIELD_NUMBER 536870911u

/* google.protobuf.FieldDescriptorProto.Type */
enum {
    PB_TYPE_DOUBLE = 1,
    PB_TYPE_FLOAT = 2,
    PB_TYPE_INT64 = 3,
    PB_TYPE_UINT64 = 4,
    PB_TYPE_INT32 = 5,
    PB_TYPE_FIXED64 = 6,
    PB_TYPE_FIXED32 = 7,
    PB_TYPE_BOOL = 8,
    PB_TYPE_STRING = 9,
    PB_TYPE_GROUP = 10,
    PB_TYPE_MESSAGE = 11,
    PB_TYPE_BYTES = 12,
    PB_TYPE_UINT32 = 13,
    PB_TYPE_ENUM = 14,
    PB_TYPE_SFIXED32 = 15,
    PB_TYPE_SFIXED64 = 16,
    PB_TYPE_SINT32 = 17,
    PB_TYPE_SINT64 = 18,
};

/* google.protobuf.FieldDescriptorProto.Label */
enum {
    PB_LABEL_OPTIONAL = 1,
    PB_LABEL_REQUIRED = 2,
    PB_LABEL_REPEATED = 3,
};

/* Wire types; 3 and 4 (groups) are refused everywhere. */
enum {
    PB_WIRE_VARINT = 0,
    PB_WIRE_I64 = 1,
    PB_WIRE_LEN = 2,
    PB_WIRE_SGROUP = 3,
    PB_WIRE_EGROUP = 4,
    PB_WIRE_I32 = 5,
};

typedef struct pb_msg_s pb_msg_t;
typedef struct pb_enum_s pb_enum_t;

typedef struct {
    const char *name;
    int32_t number;
    uint32_t decl; /* declaration order */
} pb_enum_value_t;

struct pb_enum_s {
    const char *full_name;      /* "pkg.Outer.Color", no leading dot */
    pb_enum_value_t *by_number; /* sorted by number; among aliases the first declared first */
    pb_enum_value_t *by_name;   /* sorted by name */
    size_t n_values;
};

typedef struct {
    const char *name;      /* as declared: "order_id" */
    const char *json_name; /* lowerCamelCase or [json_name]: "orderId" */
    const char *type_name; /* MESSAGE/ENUM as written (".pkg.M"), else NULL */
    const pb_msg_t *msg;   /* MESSAGE: resolved */
    const pb_enum_t *enm;  /* ENUM: resolved */
    uint32_t number;
    uint8_t type;          /* PB_TYPE_* */
    uint8_t label;         /* PB_LABEL_* */
    bool packed;           /* repeated scalar written packed by encode */
    bool presence;         /* explicit presence: a default value is still written/shown */
    bool is_map;           /* repeated map-entry message: a JSON object */
    int32_t oneof;         /* index in the message's oneofs, -1 when none */
    int32_t next_in_oneof; /* index of the next field of the same oneof, -1 at the end */
    int32_t required_bit;  /* proto2 required: bit in a 64-bit mask, -1 otherwise */
} pb_field_t;

struct pb_msg_s {
    const char *full_name; /* no leading dot */
    pb_field_t *fields;    /* sorted by number */
    size_t n_fields;
    const char **oneof_names;
    int32_t *oneof_first; /* per oneof: index of its first field, -1 when empty */
    size_t n_oneofs;
    uint64_t required_mask; /* every required_bit of the fields */
    bool map_entry;
    bool proto3;
};

typedef struct pb_block_s pb_block_t;

/** A compiled PROTOBUF schema: every descriptor lives in one arena. */
typedef struct {
    pb_block_t *arena;
    const pb_msg_t *root;
} pb_schema_t;

/* ---- the bounded wire reader ---- */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    const char *err; /* static text when a read failed */
} pb_reader_t;

/** One field record: its number, wire type and value. */
typedef struct {
    uint32_t number;
    uint8_t wire;
    uint64_t value;       /* VARINT, I64, I32 (little-endian bits) */
    const uint8_t *data;  /* LEN */
    size_t len;           /* LEN */
    const uint8_t *start; /* where the record's tag begins */
} pb_record_t;

/** @brief Reads a varint of at most 10 bytes that fits in 64 bits. @returns 0, or -1 (r->err). */
int msm__pb_read_varint(pb_reader_t *r, uint64_t *out);

/**
 * @brief Reads the next field record: the tag (field number 1..2^29-1, wire type 0, 1, 2 or
 * 5) and its value, never past r->end.
 * @returns 1 when a record was read, 0 at the end, -1 on malformed input (r->err).
 */
int msm__pb_next(pb_reader_t *r, pb_record_t *rec);

/** @brief Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool msm__pb_utf8_valid(const uint8_t *s, size_t n);

/** @brief The field numbered @p number of @p m, or NULL. */
const pb_field_t *msm__pb_field_by_number(const pb_msg_t *m, uint32_t number);

/** @brief The enum value named @p name, or NULL. */
const pb_enum_value_t *msm__pb_enum_by_name(const pb_enum_t *e, const char *name);

/** @brief The first declared value numbered @p number, or NULL. */
const pb_enum_value_t *msm__pb_enum_by_number(const pb_enum_t *e, int32_t number);

/** @brief The wire type values of @p type have (LEN for string, bytes, message). */
uint8_t msm__pb_wire_type(uint8_t type);

/** @brief The .proto spelling of @p type ("int32", "message", ...). */
const char *msm__pb_type_name(uint8_t type);

/** @brief Repeated fields of this type may be packed (every scalar but string and bytes). */
static inline bool pb_packable(uint8_t type)
{
    return type != PB_TYPE_STRING && type != PB_TYPE_BYTES && type != PB_TYPE_MESSAGE &&
           type != PB_TYPE_GROUP;
}

/** @brief @p n (4 or 8) little-endian bytes. */
static inline uint64_t pb_read_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- behind msm_schema_ops_t ---- */

int msm__pb_can_read(const void *reader, const void *writer, char *why, size_t why_size);
int msm__pb_encode_json(
    const void *impl, const json_t *value, msm_json_err_t *e, uint8_t **out, size_t *out_len);
int msm__pb_check(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size);
json_t *
msm__pb_decode_json(const void *impl, const uint8_t *data, size_t len, char *why, size_t why_size);

#endif
