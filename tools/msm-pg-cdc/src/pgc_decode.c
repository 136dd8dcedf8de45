/* SPDX-License-Identifier: MIT */
/* wal2json format-version 2 messages (options in pgc_repl.c) to the range API's changes:
 *
 *     {"action":"B","lsn":"0/16B2F38","nextlsn":"0/16B2F68"}
 *     {"action":"U","schema":"public","table":"users","columns":[{"name":"id",
 *      "type":"integer","value":42},…],"identity":[…],"pk":[{"name":"id","type":"integer"}]}
 *     {"action":"C","lsn":"0/16B2F38","nextlsn":"0/16B2F68"}
 *
 * Values keep their exact text: wal2json writes numeric columns as bare JSON numbers of any
 * size, which no JSON parser keeps exactly, so every number that is not an int64 integer is
 * quoted before parsing; float columns become JSON numbers again, numeric ones stay strings. */
#include "pgc_decode.h"
#include "pgc_seq.h"

#include "msm/buf.h"
#include "msm/err.h"
#include "msm/signature.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *pgc_op_name(pgc_op_t op)
{
    switch (op) {
    case PGC_OP_CREATE:
        return "create";
    case PGC_OP_UPDATE:
        return "update";
    case PGC_OP_DELETE:
        return "delete";
    }
    return "?";
}

void pgc_msg_clear(pgc_msg_t *m)
{
    for (size_t i = 0; i < m->nchanges; i++)
        free(m->changes[i].json);
    memset(m, 0, sizeof(*m));
}

/* ---- exact numbers ---- */

static int is_number_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* Whether the number token @p t would lose its text in a parser: a fraction or exponent, or
 * an integer outside int64. */
static int number_needs_quotes(const char *t, size_t n)
{
    if (memchr(t, '.', n) || memchr(t, 'e', n) || memchr(t, 'E', n))
        return 1;
    int negative = t[0] == '-';
    const char *digits = t + negative;
    size_t nd = n - (size_t)negative;
    const char *limit = negative ? "9223372036854775808" : "9223372036854775807";
    return nd > 19 || (nd == 19 && memcmp(digits, limit, 19) > 0);
}

/* Copies the JSON text @p s to @p out with every number that needs it in quotes. */
static int quote_numbers(const char *s, size_t n, msm_buf_t *out)
{
    size_t i = 0, copied = 0;
    int in_string = 0;
    while (i < n) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character is never the closing quote */
            else if (c == '"')
                in_string = 0;
            i++;
            continue;
        }
        if (c == '"') {
            in_string = 1;
            i++;
            continue;
        }
        if (c != '-' && !(c >= '0' && c <= '9')) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && is_number_char(s[j]))
            j++;
        if (number_needs_quotes(s + i, j - i)) {
            if (msm_buf_append(out, s + copied, i - copied) != MSM_OK ||
                msm_buf_append(out, "\"", 1) != MSM_OK ||
                msm_buf_append(out, s + i, j - i) != MSM_OK || msm_buf_append(out, "\"", 1))
                return MSM_ERR_NOMEM;
            copied = j;
        }
        i = j;
    }
    return msm_buf_append(out, s + copied, n - copied);
}

/* ---- columns ---- */

static int type_is_float(const char *type)
{
    return type && (strcmp(type, "real") == 0 || strcmp(type, "double precision") == 0);
}

static int type_is_numeric(const char *type)
{
    return type && strncmp(type, "numeric", 7) == 0;
}

/* The value served in data for a column of @p type (a new reference). */
static json_t *column_value(const char *type, json_t *v)
{
    if (type_is_float(type)) {
        if (json_is_integer(v))
            return json_real((double)json_integer_value(v));
        if (json_is_string(v)) {
            char *end;
            double d = strtod(json_string_value(v), &end);
            if (*end == '\0' && isfinite(d))
                return json_real(d);
        }
    } else if (type_is_numeric(type) && json_is_integer(v)) {
        char num[32];
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return json_string(num); /* numeric is always a string: its scale stays visible */
    }
    return json_incref(v);
}

/* {"name": value, …} of wal2json's columns array. */
static json_t *columns_object(json_t *columns, char *err, size_t n)
{
    json_t *data = json_object(), *col;
    size_t i;
    if (!data)
        return NULL;
    json_array_foreach(columns, i, col)
    {
        const char *name = json_string_value(json_object_get(col, "name"));
        json_t *value = json_object_get(col, "value");
        if (!name || !value) {
            snprintf(err, n, "columns[%zu]: name and value are required", i);
            json_decref(data);
            return NULL;
        }
        json_object_set_new(data, name,
                            column_value(json_string_value(json_object_get(col, "type")), value));
    }
    return data;
}

/* The value of column @p name in wal2json's array @p cols, or NULL. */
static json_t *column_get(json_t *cols, const char *name)
{
    json_t *col;
    size_t i;
    json_array_foreach(cols, i, col)
    {
        const char *n = json_string_value(json_object_get(col, "name"));
        if (n && strcmp(n, name) == 0)
            return json_object_get(col, "value");
    }
    return NULL;
}

/* ---- entities ---- */

/* Percent-encodes @p s: everything but [A-Za-z0-9_~-] (and '.' when @p keep_dot). */
static int pct_append(msm_buf_t *b, const char *s, size_t n, int keep_dot)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '~' || c == '-' || (keep_dot && c == '.');
        char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
        if (msm_buf_append(b, plain ? (const char *)&s[i] : esc, plain ? 1 : 3) != MSM_OK)
            return MSM_ERR_NOMEM;
    }
    return MSM_OK;
}

/* Appends "/" and the text of key value @p v. */
static int key_append(msm_buf_t *b, json_t *v)
{
    char num[64];
    const char *text = num;
    size_t len;
    if (json_is_string(v)) {
        text = json_string_value(v);
        len = json_string_length(v);
    } else if (json_is_integer(v)) {
        len = (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        len = (size_t)snprintf(num, sizeof(num), "%.17g", json_real_value(v));
    } else {
        text = json_is_true(v) ? "true" : json_is_false(v) ? "false" : "null";
        len = strlen(text);
    }
    if (msm_buf_append(b, "/", 1) != MSM_OK)
        return MSM_ERR_NOMEM;
    return pct_append(b, text, len, 1);
}

/* The key part of an entity ("/42" or "/1001/3") from the primary key columns @p pk found in
 * @p cols; when one is missing there (a replica identity other than the key), every column
 * of @p cols. @returns MSM_OK or MSM_ERR_NOMEM. */
static int key_text(msm_buf_t *b, json_t *pk, json_t *cols)
{
    json_t *k;
    size_t i;
    int complete = 1;
    json_array_foreach(pk, i, k)
    {
        const char *name = json_string_value(json_object_get(k, "name"));
        if (!name || !column_get(cols, name))
            complete = 0;
    }
    json_array_foreach(complete ? pk : cols, i, k)
    {
        json_t *v = complete ? column_get(cols, json_string_value(json_object_get(k, "name")))
                             : json_object_get(k, "value");
        if (v && key_append(b, v) != MSM_OK)
            return MSM_ERR_NOMEM;
    }
    return MSM_OK;
}

/* "schema.table" + @p key, or "schema.table/sha256:<hex>" when longer than @p max. */
static char *entity_make(const char *schema, const char *table, const msm_buf_t *key, size_t max)
{
    msm_buf_t e = {0};
    if (pct_append(&e, schema, strlen(schema), 0) != MSM_OK || msm_buf_append(&e, ".", 1) ||
        pct_append(&e, table, strlen(table), 0) != MSM_OK)
        goto fail;
    if (e.len + key->len <= max) {
        if (key->len && msm_buf_append(&e, key->data, key->len) != MSM_OK)
            goto fail;
    } else {
        char hex[MSM_SIGNATURE_HEX_LEN + 1];
        if (msm_signature_sha256_hex(key->data, key->len, hex) != MSM_OK ||
            msm_buf_append(&e, "/sha256:", 8) != MSM_OK || msm_buf_append(&e, hex, strlen(hex)))
            goto fail;
    }
    if (!e.data && msm_buf_append(&e, "", 0) != MSM_OK)
        goto fail;
    return (char *)e.data;
fail:
    msm_buf_deinit(&e);
    return NULL;
}

/* ---- changes ---- */

/* Renders {"op":…,"entity":…[,"data":…]} into the next change of @p m. */
static int change_add(
    pgc_msg_t *m, pgc_op_t op, const char *entity, json_t *data, const pgc_decode_conf_t *conf)
{
    char *data_text = NULL, *entity_text = NULL;
    json_t *ent = json_string(entity);
    msm_buf_t b = {0};
    int rc = MSM_ERR_NOMEM;
    if (!ent || !(entity_text = json_dumps(ent, JSON_ENCODE_ANY | JSON_COMPACT)))
        goto done;
    if (data && !(data_text = json_dumps(data, JSON_COMPACT)))
        goto done;
    if (data_text && strlen(data_text) > conf->max_data_bytes) {
        size_t len = strlen(data_text);
        free(data_text);
        if (!(data_text = malloc(64)))
            goto done;
        snprintf(data_text, 64, "{\"msm_truncated_bytes\":%zu}", len);
        m->truncated = 1;
    }
    if (msm_buf_append(&b, "{\"op\":\"", 7) || msm_buf_append(&b, pgc_op_name(op), 6) ||
        msm_buf_append(&b, "\",\"entity\":", 11) ||
        msm_buf_append(&b, entity_text, strlen(entity_text)))
        goto done;
    if (data_text &&
        (msm_buf_append(&b, ",\"data\":", 8) || msm_buf_append(&b, data_text, strlen(data_text))))
        goto done;
    if (msm_buf_append(&b, "}", 1))
        goto done;
    m->changes[m->nchanges].op = op;
    m->changes[m->nchanges].json = (char *)b.data;
    m->changes[m->nchanges].len = b.len;
    m->nchanges++;
    b.data = NULL;
    rc = MSM_OK;
done:
    msm_buf_deinit(&b);
    json_decref(ent);
    free(entity_text);
    free(data_text);
    return rc;
}

static int decode_row(
    json_t *root, char action, const pgc_decode_conf_t *conf, pgc_msg_t *m, char *err, size_t n)
{
    const char *schema = json_string_value(json_object_get(root, "schema"));
    const char *table = json_string_value(json_object_get(root, "table"));
    json_t *columns = json_object_get(root, "columns");
    json_t *identity = json_object_get(root, "identity");
    json_t *pk = json_object_get(root, "pk");
    if (!schema || !table) {
        snprintf(err, n, "%c without schema or table", action);
        return MSM_ERR_PARSE;
    }
    if ((action != 'D' && !json_is_array(columns)) || (action == 'D' && !json_is_array(identity))) {
        snprintf(err, n, "%c on %s.%s without %s", action, schema, table,
                 action == 'D' ? "identity" : "columns");
        return MSM_ERR_PARSE;
    }
    if (!json_is_array(pk))
        pk = NULL;
    m->keyless = !pk || json_array_size(pk) == 0;
    m->kind = PGC_MSG_CHANGES;
    int rc = MSM_ERR_NOMEM;
    msm_buf_t new_key = {0}, old_key = {0};
    char *new_entity = NULL, *old_entity = NULL;
    json_t *data = NULL;
    if (!m->keyless) {
        if (action != 'D' && key_text(&new_key, pk, columns) != MSM_OK)
            goto done;
        if (action != 'I' && json_is_array(identity) && key_text(&old_key, pk, identity) != MSM_OK)
            goto done;
    }
    if (action != 'D') {
        if (!(data = columns_object(columns, err, n))) {
            rc = err[0] ? MSM_ERR_PARSE : MSM_ERR_NOMEM;
            goto done;
        }
        if (!(new_entity = entity_make(schema, table, &new_key, conf->max_entity_bytes)))
            goto done;
    }
    if (action != 'I' &&
        !(old_entity = entity_make(schema, table, &old_key, conf->max_entity_bytes)))
        goto done;
    switch (action) {
    case 'I':
        rc = change_add(m, PGC_OP_CREATE, new_entity, data, conf);
        break;
    case 'D':
        rc = change_add(m, PGC_OP_DELETE, old_entity, NULL, conf);
        break;
    default:
        /* An update that moved the key: the old entity is gone, a new one appears (keyed
         * consumers would otherwise keep the old row for ever). */
        if (json_is_array(identity) && !m->keyless && strcmp(old_entity, new_entity) != 0) {
            rc = change_add(m, PGC_OP_DELETE, old_entity, NULL, conf);
            if (rc == MSM_OK)
                rc = change_add(m, PGC_OP_CREATE, new_entity, data, conf);
        } else {
            rc = change_add(m, PGC_OP_UPDATE, new_entity, data, conf);
        }
    }
done:
    msm_buf_deinit(&new_key);
    msm_buf_deinit(&old_key);
    free(new_entity);
    free(old_entity);
    json_decref(data);
    return rc;
}

static int decode_txn(json_t *root, char action, pgc_msg_t *m, char *err, size_t n)
{
    const char *lsn = json_string_value(json_object_get(root, "lsn"));
    const char *next = json_string_value(json_object_get(root, "nextlsn"));
    if (pgc_lsn_parse(lsn, &m->lsn) != MSM_OK || pgc_lsn_parse(next, &m->next_lsn) != MSM_OK ||
        m->next_lsn < m->lsn) {
        snprintf(err, n, "%c without lsn and nextlsn (include-lsn)", action);
        return MSM_ERR_PARSE;
    }
    m->kind = action == 'B' ? PGC_MSG_BEGIN : PGC_MSG_COMMIT;
    return MSM_OK;
}

int pgc_decode(const char *text,
               size_t len,
               const pgc_decode_conf_t *conf,
               pgc_msg_t *out,
               char *err,
               size_t err_size)
{
    memset(out, 0, sizeof(*out));
    err[0] = '\0';
    msm_buf_t exact = {0};
    if (quote_numbers(text, len, &exact) != MSM_OK) {
        msm_buf_deinit(&exact);
        return MSM_ERR_NOMEM;
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)exact.data, exact.len, 0, &jerr);
    msm_buf_deinit(&exact);
    if (!json_is_object(root)) {
        snprintf(err, err_size, "not a JSON object: %s", root ? "" : jerr.text);
        json_decref(root);
        return MSM_ERR_PARSE;
    }
    const char *action = json_string_value(json_object_get(root, "action"));
    int rc = MSM_OK;
    if (!action || strlen(action) != 1) {
        snprintf(err, err_size, "no action");
        rc = MSM_ERR_PARSE;
    } else if (*action == 'B' || *action == 'C') {
        rc = decode_txn(root, *action, out, err, err_size);
    } else if (*action == 'I' || *action == 'U' || *action == 'D') {
        rc = decode_row(root, *action, conf, out, err, err_size);
    } else {
        out->kind = PGC_MSG_SKIP;
        snprintf(out->what, sizeof(out->what), "%s",
                 *action == 'T'   ? "truncate"
                 : *action == 'M' ? "message"
                                  : action);
    }
    json_decref(root);
    if (rc != MSM_OK)
        pgc_msg_clear(out);
    return rc;
}
