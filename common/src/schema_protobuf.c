/* SPDX-License-Identifier: MIT */
/* PROTOBUF schemas: a base64 google.protobuf.FileDescriptorSet read with our own bounded
 * wire reader (no generated code), every type name resolved, one message chosen as the
 * schema. The codec and the compatibility check live in schema_protobuf_*.c. */
#include "schema_protobuf_int.h"

#include "msm/base64.h"
#include "msm/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deepest nesting of message declarations inside each other. */
#define PB_MAX_DECL_DEPTH 64
/* Arena block size; larger requests get a block of their own. */
#define PB_BLOCK_SIZE 8192

/* ---- the arena every descriptor lives in ---- */

struct pb_block_s {
    pb_block_t *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

/* Zeroed, aligned memory that lives until arena_free(). */
static void *arena_alloc(pb_block_t **arena, size_t size)
{
    const size_t align = sizeof(max_align_t);
    if (size > SIZE_MAX - align - sizeof(pb_block_t) - PB_BLOCK_SIZE)
        return NULL;
    size = (size + align - 1) / align * align;
    pb_block_t *b = *arena;
    if (!b || b->cap - b->used < size) {
        size_t cap = size > PB_BLOCK_SIZE ? size : PB_BLOCK_SIZE;
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->next = *arena;
        b->used = 0;
        b->cap = cap;
        *arena = b;
    }
    void *p = (unsigned char *)b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

static void arena_free(pb_block_t *b)
{
    while (b) {
        pb_block_t *next = b->next;
        free(b);
        b = next;
    }
}

/* ---- compiling ---- */

typedef struct {
    const char *name; /* full name, no leading dot */
    pb_msg_t *msg;
    pb_enum_t *enm;
} pb_symbol_t;

typedef struct {
    pb_block_t *arena;
    pb_symbol_t *syms;
    size_t n_syms, cap_syms;
    const pb_msg_t *file_first; /* first top-level message of the file read last */
    char *err;
    size_t err_size;
} pb_compiler_t;

static int fail(pb_compiler_t *c, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(pb_compiler_t *c, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->err_size, fmt, ap);
    va_end(ap);
    return rc;
}

static int nomem(pb_compiler_t *c)
{
    return fail(c, MSM_ERR_NOMEM, "out of memory");
}

static int malformed(pb_compiler_t *c, const char *what)
{
    return fail(c, MSM_ERR_INVALID, "malformed descriptor set: %s", what);
}

/* A record of a descriptor must have the wire type its field is declared with. */
static int expect_wire(pb_compiler_t *c, const pb_record_t *rec, uint8_t wire)
{
    if (rec->wire == wire)
        return MSM_OK;
    return malformed(c, "a descriptor field has the wrong wire type");
}

static bool is_ident(const char *s)
{
    if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
        return false;
    for (; *s; s++) {
        if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9')))
            return false;
    }
    return true;
}

/* Copies a descriptor string into the arena; it must be UTF-8 without NUL (names end up
 * as JSON keys and in messages). */
static int arena_str(pb_compiler_t *c, const uint8_t *s, size_t n, const char **out)
{
    if (memchr(s, 0, n) || !msm__pb_utf8_valid(s, n))
        return malformed(c, "a name is not UTF-8 text");
    char *p = arena_alloc(&c->arena, n + 1);
    if (!p)
        return nomem(c);
    memcpy(p, s, n);
    p[n] = '\0';
    *out = p;
    return MSM_OK;
}

/* "scope.name" (or "name" at the top without a package) in the arena. */
static int full_name(pb_compiler_t *c, const char *scope, const char *name, const char **out)
{
    size_t ls = strlen(scope), ln = strlen(name);
    char *p = arena_alloc(&c->arena, ls + ln + 2);
    if (!p)
        return nomem(c);
    if (ls) {
        memcpy(p, scope, ls);
        p[ls++] = '.';
    }
    memcpy(p + ls, name, ln + 1);
    *out = p;
    return MSM_OK;
}

static int add_symbol(pb_compiler_t *c, const char *name, pb_msg_t *msg, pb_enum_t *enm)
{
    if (c->n_syms == c->cap_syms) {
        size_t cap = c->cap_syms ? c->cap_syms * 2 : 32;
        pb_symbol_t *syms = realloc(c->syms, cap * sizeof(*syms));
        if (!syms)
            return nomem(c);
        c->syms = syms;
        c->cap_syms = cap;
    }
    c->syms[c->n_syms++] = (pb_symbol_t){name, msg, enm};
    return MSM_OK;
}

/* protoc's ToJsonName: drop each '_' and upper-case the letter after it. */
static int default_json_name(pb_compiler_t *c, const char *name, const char **out)
{
    char *p = arena_alloc(&c->arena, strlen(name) + 1);
    if (!p)
        return nomem(c);
    size_t n = 0;
    bool upper = false;
    for (const char *s = name; *s; s++) {
        if (*s == '_') {
            upper = true;
        } else {
            p[n++] = upper && *s >= 'a' && *s <= 'z' ? (char)(*s - 'a' + 'A') : *s;
            upper = false;
        }
    }
    p[n] = '\0';
    *out = p;
    return MSM_OK;
}

static int cmp_value_number(const void *a, const void *b)
{
    const pb_enum_value_t *x = a, *y = b;
    if (x->number != y->number)
        return x->number < y->number ? -1 : 1;
    /* Aliases: keep the declaration order. */
    return x->decl < y->decl ? -1 : x->decl > y->decl;
}

static int cmp_value_name(const void *a, const void *b)
{
    return strcmp(((const pb_enum_value_t *)a)->name, ((const pb_enum_value_t *)b)->name);
}

/* EnumValueDescriptorProto: name=1 number=2. */
static int parse_enum_value(pb_compiler_t *c, const pb_record_t *outer, pb_enum_value_t *v)
{
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    int more, rc;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        if (rec.number == 1) {
            if ((rc = expect_wire(c, &rec, PB_WIRE_LEN)) ||
                (rc = arena_str(c, rec.data, rec.len, &v->name)))
                return rc;
        } else if (rec.number == 2) {
            if ((rc = expect_wire(c, &rec, PB_WIRE_VARINT)))
                return rc;
            int64_t n = (int64_t)rec.value;
            if (n < INT32_MIN || n > INT32_MAX)
                return malformed(c, "an enum value number is not an int32");
            v->number = (int32_t)n;
        }
    }
    if (more < 0)
        return malformed(c, r.err);
    if (!v->name || !is_ident(v->name))
        return malformed(c, "an enum value has no valid name");
    return MSM_OK;
}

/* EnumDescriptorProto: name=1 value=2. */
static int parse_enum(pb_compiler_t *c, const pb_record_t *outer, const char *scope)
{
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    const char *name = NULL;
    size_t n_values = 0;
    int more, rc;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        if (rec.number == 1) {
            if ((rc = expect_wire(c, &rec, PB_WIRE_LEN)) ||
                (rc = arena_str(c, rec.data, rec.len, &name)))
                return rc;
        } else if (rec.number == 2) {
            n_values++;
        }
    }
    if (more < 0)
        return malformed(c, r.err);
    if (!name || !is_ident(name))
        return malformed(c, "an enum has no valid name");

    pb_enum_t *e = arena_alloc(&c->arena, sizeof(*e));
    if (!e || (n_values &&
               (!(e->by_number = arena_alloc(&c->arena, n_values * sizeof(pb_enum_value_t))) ||
                !(e->by_name = arena_alloc(&c->arena, n_values * sizeof(pb_enum_value_t))))))
        return nomem(c);
    if ((rc = full_name(c, scope, name, &e->full_name)))
        return rc;
    r = (pb_reader_t){outer->data, outer->data + outer->len, NULL};
    while (msm__pb_next(&r, &rec) > 0) {
        if (rec.number == 2) {
            pb_enum_value_t *v = &e->by_number[e->n_values];
            v->decl = (uint32_t)e->n_values++;
            if ((rc = expect_wire(c, &rec, PB_WIRE_LEN)) || (rc = parse_enum_value(c, &rec, v)))
                return rc;
        }
    }
    if (n_values) {
        memcpy(e->by_name, e->by_number, n_values * sizeof(pb_enum_value_t));
        qsort(e->by_number, n_values, sizeof(pb_enum_value_t), cmp_value_number);
        qsort(e->by_name, n_values, sizeof(pb_enum_value_t), cmp_value_name);
    }
    return add_symbol(c, e->full_name, NULL, e);
}

/* FieldOptions: packed=2. Sets *packed to 0 or 1, leaves it at -1 when not given. */
static int parse_field_options(pb_compiler_t *c, const pb_record_t *outer, int *packed)
{
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    int more;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        if (rec.number == 2) {
            if (expect_wire(c, &rec, PB_WIRE_VARINT))
                return MSM_ERR_INVALID;
            *packed = rec.value != 0;
        }
    }
    return more < 0 ? malformed(c, r.err) : MSM_OK;
}

/* The values one field record of a FieldDescriptorProto sets. */
static int field_record(pb_compiler_t *c,
                        const pb_record_t *rec,
                        pb_field_t *f,
                        int *packed,
                        bool *proto3_optional,
                        uint64_t *oneof_index)
{
    int rc = MSM_OK;
    switch (rec->number) {
    case 1: /* name */
        if (!(rc = expect_wire(c, rec, PB_WIRE_LEN)))
            rc = arena_str(c, rec->data, rec->len, &f->name);
        break;
    case 3: /* number */
        if (!(rc = expect_wire(c, rec, PB_WIRE_VARINT)))
            f->number = rec->value <= PB_MAX_FIELD_NUMBER ? (uint32_t)rec->value : 0;
        break;
    case 4: /* label */
    case 5: /* type */
        if (!(rc = expect_wire(c, rec, PB_WIRE_VARINT))) {
            uint8_t v = rec->value <= 18 ? (uint8_t)rec->value : 0xff;
            *(rec->number == 4 ? &f->label : &f->type) = v;
        }
        break;
    case 6: /* type_name */
        if (!(rc = expect_wire(c, rec, PB_WIRE_LEN)))
            rc = arena_str(c, rec->data, rec->len, &f->type_name);
        break;
    case 8: /* options */
        if (!(rc = expect_wire(c, rec, PB_WIRE_LEN)))
            rc = parse_field_options(c, rec, packed);
        break;
    case 9: /* oneof_index */
        if (!(rc = expect_wire(c, rec, PB_WIRE_VARINT)))
            *oneof_index = rec->value;
        break;
    case 10: /* json_name */
        if (!(rc = expect_wire(c, rec, PB_WIRE_LEN)))
            rc = arena_str(c, rec->data, rec->len, &f->json_name);
        break;
    case 17: /* proto3_optional */
        if (!(rc = expect_wire(c, rec, PB_WIRE_VARINT)))
            *proto3_optional = rec->value != 0;
        break;
    }
    return rc;
}

/* FieldDescriptorProto: name=1 number=3 label=4 type=5 type_name=6 options=8 oneof_index=9
 * json_name=10 proto3_optional=17. */
static int parse_field(pb_compiler_t *c, const pb_record_t *outer, pb_msg_t *m, pb_field_t *f)
{
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    int packed = -1, more, rc;
    bool proto3_optional = false;
    uint64_t oneof_index = UINT64_MAX;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        if ((rc = field_record(c, &rec, f, &packed, &proto3_optional, &oneof_index)))
            return rc;
    }
    if (more < 0)
        return malformed(c, r.err);
    if (!f->name || !is_ident(f->name))
        return fail(c, MSM_ERR_INVALID, "%s: a field has no valid name", m->full_name);
    if (f->number == 0 || (f->number >= 19000 && f->number <= 19999))
        return fail(c, MSM_ERR_INVALID,
                    "%s.%s: field number must be 1..536870911 outside 19000..19999", m->full_name,
                    f->name);
    if (f->label == 0)
        f->label = PB_LABEL_OPTIONAL;
    if (f->label > PB_LABEL_REPEATED)
        return fail(c, MSM_ERR_INVALID, "%s.%s: invalid label", m->full_name, f->name);
    if (f->type == PB_TYPE_GROUP)
        return fail(c, MSM_ERR_INVALID, "%s.%s: group fields are not supported", m->full_name,
                    f->name);
    if (f->type > PB_TYPE_SINT64 || (f->type == 0 && !f->type_name))
        return fail(c, MSM_ERR_INVALID, "%s.%s: invalid type", m->full_name, f->name);
    if (oneof_index != UINT64_MAX && oneof_index >= m->n_oneofs)
        return fail(c, MSM_ERR_INVALID, "%s.%s: oneof_index out of range", m->full_name, f->name);
    f->oneof = oneof_index == UINT64_MAX ? -1 : (int32_t)oneof_index;
    if (!f->json_name && (rc = default_json_name(c, f->name, &f->json_name)))
        return rc;
    if (!f->json_name[0])
        return fail(c, MSM_ERR_INVALID, "%s.%s: empty json_name", m->full_name, f->name);
    /* proto2 and proto3 'optional' track presence; so do oneof members and messages. */
    f->presence = f->label != PB_LABEL_REPEATED &&
                  (!m->proto3 || proto3_optional || f->oneof >= 0 || f->type == PB_TYPE_MESSAGE);
    /* Only scalars pack; a message-or-enum type (type 0) is settled in resolve_field(). */
    f->packed = f->label == PB_LABEL_REPEATED && (packed < 0 ? m->proto3 : packed == 1) &&
                pb_packable(f->type);
    f->required_bit = -1;
    return MSM_OK;
}

/* MessageOptions: map_entry=7. */
static int parse_message_options(pb_compiler_t *c, const pb_record_t *outer, pb_msg_t *m)
{
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    int more;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        if (rec.number == 7) {
            if (expect_wire(c, &rec, PB_WIRE_VARINT))
                return MSM_ERR_INVALID;
            m->map_entry = rec.value != 0;
        }
    }
    return more < 0 ? malformed(c, r.err) : MSM_OK;
}

/* OneofDescriptorProto: name=1. */
static int parse_oneof(pb_compiler_t *c, const pb_record_t *outer, const char **name)
{
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    int more, rc;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        if (rec.number == 1 && ((rc = expect_wire(c, &rec, PB_WIRE_LEN)) ||
                                (rc = arena_str(c, rec.data, rec.len, name))))
            return rc;
    }
    if (more < 0)
        return malformed(c, r.err);
    return *name ? MSM_OK : malformed(c, "a oneof has no name");
}

static int parse_message(
    pb_compiler_t *c, const pb_record_t *outer, const char *scope, bool proto3, int depth);

/* Second pass over a DescriptorProto: fields=2, nested_type=3, enum_type=4, oneof_decl=8. */
static int parse_message_members(pb_compiler_t *c, const pb_record_t *outer, pb_msg_t *m, int depth)
{
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    size_t nf = 0, no = 0;
    int rc;
    /* Oneof names first: fields refer to them by index. */
    while (msm__pb_next(&r, &rec) > 0) {
        if (rec.number == 8 && ((rc = expect_wire(c, &rec, PB_WIRE_LEN)) ||
                                (rc = parse_oneof(c, &rec, &m->oneof_names[no++]))))
            return rc;
    }
    r = (pb_reader_t){outer->data, outer->data + outer->len, NULL};
    while (msm__pb_next(&r, &rec) > 0) {
        rc = MSM_OK;
        if (rec.number == 2) {
            if (!(rc = expect_wire(c, &rec, PB_WIRE_LEN)))
                rc = parse_field(c, &rec, m, &m->fields[nf++]);
        } else if (rec.number == 3) {
            if (!(rc = expect_wire(c, &rec, PB_WIRE_LEN)))
                rc = parse_message(c, &rec, m->full_name, m->proto3, depth + 1);
        } else if (rec.number == 4) {
            if (!(rc = expect_wire(c, &rec, PB_WIRE_LEN)))
                rc = parse_enum(c, &rec, m->full_name);
        }
        if (rc)
            return rc;
    }
    return MSM_OK;
}

/* DescriptorProto: name=1 field=2 nested_type=3 enum_type=4 options=7 oneof_decl=8. */
static int
parse_message(pb_compiler_t *c, const pb_record_t *outer, const char *scope, bool proto3, int depth)
{
    if (depth > PB_MAX_DECL_DEPTH)
        return malformed(c, "message declarations nested too deeply");
    pb_msg_t *m = arena_alloc(&c->arena, sizeof(*m));
    if (!m)
        return nomem(c);
    m->proto3 = proto3;
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    const char *name = NULL;
    int more, rc;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        rc = MSM_OK;
        if (rec.number == 1) {
            if (!(rc = expect_wire(c, &rec, PB_WIRE_LEN)))
                rc = arena_str(c, rec.data, rec.len, &name);
        } else if (rec.number == 2) {
            m->n_fields++;
        } else if (rec.number == 8) {
            m->n_oneofs++;
        } else if (rec.number == 7) {
            if (!(rc = expect_wire(c, &rec, PB_WIRE_LEN)))
                rc = parse_message_options(c, &rec, m);
        }
        if (rc)
            return rc;
    }
    if (more < 0)
        return malformed(c, r.err);
    if (!name || !is_ident(name))
        return malformed(c, "a message has no valid name");
    if ((rc = full_name(c, scope, name, &m->full_name)))
        return rc;
    if ((m->n_fields && !(m->fields = arena_alloc(&c->arena, m->n_fields * sizeof(pb_field_t)))) ||
        (m->n_oneofs &&
         (!(m->oneof_names = arena_alloc(&c->arena, m->n_oneofs * sizeof(char *))) ||
          !(m->oneof_first = arena_alloc(&c->arena, m->n_oneofs * sizeof(int32_t))))))
        return nomem(c);
    if ((rc = add_symbol(c, m->full_name, m, NULL)) ||
        (rc = parse_message_members(c, outer, m, depth)))
        return rc;
    return MSM_OK;
}

/* FileDescriptorProto: name=1 package=2 message_type=4 enum_type=5 syntax=12. */
static int parse_file(pb_compiler_t *c, const pb_record_t *outer)
{
    pb_reader_t r = {outer->data, outer->data + outer->len, NULL};
    pb_record_t rec;
    const char *package = "", *syntax = "proto2", *name = "?";
    int more, rc;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        const char **dst = rec.number == 1    ? &name
                           : rec.number == 2  ? &package
                           : rec.number == 12 ? &syntax
                                              : NULL;
        if (dst && ((rc = expect_wire(c, &rec, PB_WIRE_LEN)) ||
                    (rc = arena_str(c, rec.data, rec.len, dst))))
            return rc;
    }
    if (more < 0)
        return malformed(c, r.err);
    bool proto3 = strcmp(syntax, "proto3") == 0;
    if (!proto3 && strcmp(syntax, "proto2") != 0 && syntax[0])
        return fail(c, MSM_ERR_INVALID, "%s: syntax '%s' is not supported (proto2 and proto3 are)",
                    name, syntax);
    c->file_first = NULL;
    r = (pb_reader_t){outer->data, outer->data + outer->len, NULL};
    while (msm__pb_next(&r, &rec) > 0) {
        rc = MSM_OK;
        if (rec.number == 4) {
            /* A top-level message is the first symbol parse_message() adds. */
            size_t first = c->n_syms;
            if (!(rc = expect_wire(c, &rec, PB_WIRE_LEN)))
                rc = parse_message(c, &rec, package, proto3, 0);
            if (!rc && !c->file_first)
                c->file_first = c->syms[first].msg;
        } else if (rec.number == 5) {
            if (!(rc = expect_wire(c, &rec, PB_WIRE_LEN)))
                rc = parse_enum(c, &rec, package);
        }
        if (rc)
            return rc;
    }
    return MSM_OK;
}

/* FileDescriptorSet: file=1. */
static int parse_set(pb_compiler_t *c, const uint8_t *data, size_t len)
{
    pb_reader_t r = {data, data + len, NULL};
    pb_record_t rec;
    size_t files = 0;
    int more, rc;
    while ((more = msm__pb_next(&r, &rec)) > 0) {
        if (rec.number != 1)
            continue;
        if ((rc = expect_wire(c, &rec, PB_WIRE_LEN)) || (rc = parse_file(c, &rec)))
            return rc;
        files++;
    }
    if (more < 0)
        return malformed(c, r.err);
    if (files == 0)
        return malformed(c, "no file in the set");
    return MSM_OK;
}

/* ---- resolving and checking ---- */

static int cmp_symbol(const void *a, const void *b)
{
    return strcmp(((const pb_symbol_t *)a)->name, ((const pb_symbol_t *)b)->name);
}

static const pb_symbol_t *find_symbol(const pb_compiler_t *c, const char *name)
{
    pb_symbol_t key = {name, NULL, NULL};
    if (!c->n_syms)
        return NULL;
    return bsearch(&key, c->syms, c->n_syms, sizeof(key), cmp_symbol);
}

static int cmp_field_number(const void *a, const void *b)
{
    uint32_t x = ((const pb_field_t *)a)->number, y = ((const pb_field_t *)b)->number;
    return x < y ? -1 : x > y;
}

typedef struct {
    const char *name;
    const pb_field_t *field;
} pb_json_key_t;

static int cmp_json_key(const void *a, const void *b)
{
    return strcmp(((const pb_json_key_t *)a)->name, ((const pb_json_key_t *)b)->name);
}

/* Every JSON spelling (name and json_name) must lead to one field only. */
static int check_json_names(pb_compiler_t *c, const pb_msg_t *m)
{
    if (m->n_fields < 2)
        return MSM_OK;
    pb_json_key_t *keys = malloc(2 * m->n_fields * sizeof(*keys));
    if (!keys)
        return nomem(c);
    size_t n = 0;
    for (size_t i = 0; i < m->n_fields; i++) {
        keys[n++] = (pb_json_key_t){m->fields[i].name, &m->fields[i]};
        if (strcmp(m->fields[i].name, m->fields[i].json_name) != 0)
            keys[n++] = (pb_json_key_t){m->fields[i].json_name, &m->fields[i]};
    }
    qsort(keys, n, sizeof(*keys), cmp_json_key);
    int rc = MSM_OK;
    for (size_t i = 1; i < n && rc == MSM_OK; i++) {
        if (strcmp(keys[i - 1].name, keys[i].name) == 0 && keys[i - 1].field != keys[i].field)
            rc = fail(c, MSM_ERR_INVALID, "%s: fields '%s' and '%s' have the same JSON name '%s'",
                      m->full_name, keys[i - 1].field->name, keys[i].field->name, keys[i].name);
    }
    free(keys);
    return rc;
}

/* Sorts the fields by number; refuses duplicates; links oneof members and required bits. */
static int order_fields(pb_compiler_t *c, pb_msg_t *m)
{
    if (m->n_fields)
        qsort(m->fields, m->n_fields, sizeof(pb_field_t), cmp_field_number);
    for (size_t i = 0; i < m->n_oneofs; i++)
        m->oneof_first[i] = -1;
    int required = 0;
    for (size_t i = m->n_fields; i-- > 0;) {
        pb_field_t *f = &m->fields[i];
        if (i > 0 && m->fields[i - 1].number == f->number)
            return fail(c, MSM_ERR_INVALID, "%s: fields '%s' and '%s' share number %u",
                        m->full_name, m->fields[i - 1].name, f->name, f->number);
        f->next_in_oneof = -1;
        if (f->oneof >= 0) {
            f->next_in_oneof = m->oneof_first[f->oneof];
            m->oneof_first[f->oneof] = (int32_t)i;
        }
        /* Only the first 64 required fields are checked for presence (proto2 only). */
        if (f->label == PB_LABEL_REQUIRED && required < 64) {
            f->required_bit = required++;
            m->required_mask |= 1ull << f->required_bit;
        }
    }
    return check_json_names(c, m);
}

static int resolve_field(pb_compiler_t *c, const pb_msg_t *m, pb_field_t *f)
{
    if (!f->type_name) {
        if (f->type == PB_TYPE_MESSAGE || f->type == PB_TYPE_ENUM)
            return fail(c, MSM_ERR_INVALID, "%s.%s: %s field without a type name", m->full_name,
                        f->name, msm__pb_type_name(f->type));
        return MSM_OK;
    }
    if (f->type_name[0] != '.')
        return fail(c, MSM_ERR_INVALID, "%s.%s: type name '%s' is not fully qualified",
                    m->full_name, f->name, f->type_name);
    const pb_symbol_t *s = find_symbol(c, f->type_name + 1);
    if (!s)
        return fail(c, MSM_ERR_INVALID,
                    "%s.%s: type '%s' is not in the set (was it made with --include_imports?)",
                    m->full_name, f->name, f->type_name);
    if (f->type == 0) {
        f->type = s->msg ? PB_TYPE_MESSAGE : PB_TYPE_ENUM;
        f->presence = f->presence || f->type == PB_TYPE_MESSAGE;
        if (f->type == PB_TYPE_MESSAGE)
            f->packed = false;
    }
    if (f->type != PB_TYPE_MESSAGE && f->type != PB_TYPE_ENUM)
        return fail(c, MSM_ERR_INVALID, "%s.%s: a %s field with a type name", m->full_name, f->name,
                    msm__pb_type_name(f->type));
    if ((f->type == PB_TYPE_MESSAGE && !s->msg) || (f->type == PB_TYPE_ENUM && !s->enm))
        return fail(c, MSM_ERR_INVALID, "%s.%s: '%s' is not a%s %s", m->full_name, f->name,
                    f->type_name, f->type == PB_TYPE_ENUM ? "n" : "", msm__pb_type_name(f->type));
    f->msg = s->msg;
    f->enm = s->enm;
    f->is_map = f->msg && f->msg->map_entry && f->label == PB_LABEL_REPEATED;
    if (f->msg && f->msg->map_entry && !f->is_map)
        return fail(c, MSM_ERR_INVALID, "%s.%s: map entry type used by a non-repeated field",
                    m->full_name, f->name);
    if (f->is_map)
        f->presence = false;
    f->packed = f->packed && pb_packable(f->type);
    return MSM_OK;
}

static bool valid_map_key(uint8_t type)
{
    return type != PB_TYPE_DOUBLE && type != PB_TYPE_FLOAT && type != PB_TYPE_BYTES &&
           type != PB_TYPE_MESSAGE && type != PB_TYPE_ENUM && type != PB_TYPE_GROUP;
}

static int check_map_entry(pb_compiler_t *c, const pb_msg_t *m)
{
    if (m->n_fields != 2 || m->fields[0].number != 1 || m->fields[1].number != 2 ||
        m->fields[0].label == PB_LABEL_REPEATED || m->fields[1].label == PB_LABEL_REPEATED ||
        !valid_map_key(m->fields[0].type))
        return fail(c, MSM_ERR_INVALID, "%s: malformed map entry (key = 1, value = 2 expected)",
                    m->full_name);
    return MSM_OK;
}

static int resolve_all(pb_compiler_t *c)
{
    if (c->n_syms)
        qsort(c->syms, c->n_syms, sizeof(pb_symbol_t), cmp_symbol);
    for (size_t i = 1; i < c->n_syms; i++) {
        if (strcmp(c->syms[i - 1].name, c->syms[i].name) == 0)
            return fail(c, MSM_ERR_INVALID, "'%s' is defined twice in the set", c->syms[i].name);
    }
    int rc;
    for (size_t i = 0; i < c->n_syms; i++) {
        if (c->syms[i].msg && (rc = order_fields(c, c->syms[i].msg)))
            return rc;
    }
    for (size_t i = 0; i < c->n_syms; i++) {
        pb_msg_t *m = c->syms[i].msg;
        for (size_t k = 0; m && k < m->n_fields; k++) {
            if ((rc = resolve_field(c, m, &m->fields[k])))
                return rc;
        }
        if (m && m->map_entry && (rc = check_map_entry(c, m)))
            return rc;
    }
    return MSM_OK;
}

static int choose_root(pb_compiler_t *c, const char *message_name, const pb_msg_t **root)
{
    if (!message_name || !message_name[0]) {
        if (!c->file_first)
            return fail(c, MSM_ERR_INVALID,
                        "the set's last file declares no message: give the message name");
        *root = c->file_first;
        return MSM_OK;
    }
    const char *name = message_name[0] == '.' ? message_name + 1 : message_name;
    const pb_symbol_t *s = find_symbol(c, name);
    if (!s)
        return fail(c, MSM_ERR_INVALID, "message '%s' is not in the descriptor set", name);
    if (!s->msg)
        return fail(c, MSM_ERR_INVALID, "'%s' is an enum, not a message", name);
    if (s->msg->map_entry)
        return fail(c, MSM_ERR_INVALID, "'%s' is a map entry, not a message", name);
    *root = s->msg;
    return MSM_OK;
}

/* The schema text without the whitespace base64 tools wrap lines with, decoded. */
static int
decode_text(pb_compiler_t *c, const char *text, size_t len, uint8_t **raw, size_t *raw_len)
{
    char *compact = malloc(len + 1);
    uint8_t *bytes = malloc(len / 4 * 3 + 3);
    if (!compact || !bytes) {
        free(compact);
        free(bytes);
        return nomem(c);
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
            compact[n++] = text[i];
    }
    compact[n] = '\0';
    int rc = n ? msm_base64_decode(compact, n, bytes, raw_len) : MSM_ERR_PARSE;
    free(compact);
    if (rc != MSM_OK) {
        free(bytes);
        return fail(c, MSM_ERR_INVALID,
                    "the schema must be a base64 FileDescriptorSet (protoc --descriptor_set_out "
                    "--include_imports)");
    }
    *raw = bytes;
    return MSM_OK;
}

static int
make_canonical(pb_compiler_t *c, const char *name, const uint8_t *raw, size_t n, char **canonical)
{
    size_t ln = strlen(name);
    char *s = malloc(ln + 1 + msm_base64_encoded_size(n));
    if (!s)
        return nomem(c);
    memcpy(s, name, ln);
    s[ln] = '\n';
    msm_base64_encode(raw, n, s + ln + 1);
    *canonical = s;
    return MSM_OK;
}

static void pb_free(void *impl)
{
    pb_schema_t *s = impl;
    if (!s)
        return;
    arena_free(s->arena);
    free(s);
}

static int pb_compile(const char *text,
                      size_t len,
                      const char *message_name,
                      void **impl,
                      char **canonical,
                      char **resolved_name,
                      char *err,
                      size_t err_size)
{
    pb_compiler_t c = {.err = err, .err_size = err_size};
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    const pb_msg_t *root = NULL;
    pb_schema_t *s = NULL;
    int rc = decode_text(&c, text, len, &raw, &raw_len);
    if (rc || (rc = parse_set(&c, raw, raw_len)) || (rc = resolve_all(&c)) ||
        (rc = choose_root(&c, message_name, &root)))
        goto fail;
    if (!(s = calloc(1, sizeof(*s))) || !(*resolved_name = strdup(root->full_name))) {
        rc = nomem(&c);
        goto fail;
    }
    if ((rc = make_canonical(&c, root->full_name, raw, raw_len, canonical)))
        goto fail;
    s->arena = c.arena;
    s->root = root;
    *impl = s;
    free(raw);
    free(c.syms);
    return MSM_OK;
fail:
    free(s);
    free(*resolved_name);
    *resolved_name = NULL;
    free(raw);
    free(c.syms);
    arena_free(c.arena);
    return rc;
}

const msm_schema_ops_t msm_schema_protobuf_ops = {
    .compile = pb_compile,
    .free = pb_free,
    .can_read = msm__pb_can_read,
    .encode_json = msm__pb_encode_json,
    .check = msm__pb_check,
    .decode_json = msm__pb_decode_json,
};
