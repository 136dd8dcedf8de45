/* SPDX-License-Identifier: MIT */
/* PROTOBUF: the bounded wire-format reader, strict UTF-8 and the descriptor lookups that
 * compiling, the codec and the compatibility check share. Untrusted bytes come through
 * here: nothing reads past the end it is given. */
#include "schema_protobuf_int.h"

#include <string.h>

/* ---- the wire reader ---- */

int msm__pb_read_varint(pb_reader_t *r, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (r->p >= r->end) {
            r->err = "truncated varint";
            return -1;
        }
        uint8_t b = *r->p++;
        /* The tenth byte holds bit 63 only: anything more overflows. */
        if (i == 9 && b > 1) {
            r->err = "varint longer than 10 bytes or above 2^64-1";
            return -1;
        }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    r->err = "varint longer than 10 bytes";
    return -1;
}

static int read_fixed(pb_reader_t *r, unsigned n, uint64_t *out)
{
    if ((size_t)(r->end - r->p) < n) {
        r->err = n == 4 ? "truncated 32-bit value" : "truncated 64-bit value";
        return -1;
    }
    *out = pb_read_le(r->p, n);
    r->p += n;
    return 0;
}

int msm__pb_next(pb_reader_t *r, pb_record_t *rec)
{
    if (r->p >= r->end)
        return 0;
    rec->start = r->p;
    uint64_t tag, len;
    if (msm__pb_read_varint(r, &tag) < 0)
        return -1;
    if (tag >> 3 == 0) {
        r->err = "field number 0";
        return -1;
    }
    if (tag >> 3 > PB_MAX_FIELD_NUMBER) {
        r->err = "field number above 2^29-1";
        return -1;
    }
    rec->number = (uint32_t)(tag >> 3);
    rec->wire = (uint8_t)(tag & 7);
    rec->value = 0;
    rec->data = NULL;
    rec->len = 0;
    switch (rec->wire) {
    case PB_WIRE_VARINT:
        return msm__pb_read_varint(r, &rec->value) < 0 ? -1 : 1;
    case PB_WIRE_I64:
        return read_fixed(r, 8, &rec->value) < 0 ? -1 : 1;
    case PB_WIRE_I32:
        return read_fixed(r, 4, &rec->value) < 0 ? -1 : 1;
    case PB_WIRE_LEN:
        if (msm__pb_read_varint(r, &len) < 0)
            return -1;
        if (len > (uint64_t)(r->end - r->p)) {
            r->err = "length past the end of the data";
            return -1;
        }
        rec->data = r->p;
        rec->len = (size_t)len;
        r->p += len;
        return 1;
    case PB_WIRE_SGROUP:
    case PB_WIRE_EGROUP:
        r->err = "groups (wire types 3 and 4) are not supported";
        return -1;
    default:
        r->err = "invalid wire type (6 or 7)";
        return -1;
    }
}

bool msm__pb_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t extra;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += extra + 1;
    }
    return true;
}

/* ---- lookups shared by the codec and the compatibility check ---- */

const pb_field_t *msm__pb_field_by_number(const pb_msg_t *m, uint32_t number)
{
    size_t lo = 0, hi = m->n_fields;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->fields[mid].number == number)
            return &m->fields[mid];
        if (m->fields[mid].number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const pb_enum_value_t *msm__pb_enum_by_name(const pb_enum_t *e, const char *name)
{
    size_t lo = 0, hi = e->n_values;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(e->by_name[mid].name, name);
        if (cmp == 0)
            return &e->by_name[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const pb_enum_value_t *msm__pb_enum_by_number(const pb_enum_t *e, int32_t number)
{
    /* Lower bound, so that among aliases the first declared one answers. */
    size_t lo = 0, hi = e->n_values;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (e->by_number[mid].number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < e->n_values && e->by_number[lo].number == number ? &e->by_number[lo] : NULL;
}

uint8_t msm__pb_wire_type(uint8_t type)
{
    switch (type) {
    case PB_TYPE_DOUBLE:
    case PB_TYPE_FIXED64:
    case PB_TYPE_SFIXED64:
        return PB_WIRE_I64;
    case PB_TYPE_FLOAT:
    case PB_TYPE_FIXED32:
    case PB_TYPE_SFIXED32:
        return PB_WIRE_I32;
    case PB_TYPE_STRING:
    case PB_TYPE_BYTES:
    case PB_TYPE_MESSAGE:
        return PB_WIRE_LEN;
    default:
        return PB_WIRE_VARINT;
    }
}

const char *msm__pb_type_name(uint8_t type)
{
    static const char *const names[] = {
        "?",       "double",   "float",    "int64",  "uint64",  "int32", "fixed64",
        "fixed32", "bool",     "string",   "group",  "message", "bytes", "uint32",
        "enum",    "sfixed32", "sfixed64", "sint32", "sint64",
    };
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}
