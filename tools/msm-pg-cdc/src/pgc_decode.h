/* SPDX-License-Identifier: MIT */
/* One wal2json (format-version 2) message to what the range API serves: a transaction's
 * begin or commit with its LSNs, or one row change rendered as the API's change object
 * without its sequence ({"op","entity","data"}). Pure: no I/O, testable on text. */
#ifndef PGC_DECODE_H
#define PGC_DECODE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    PGC_OP_CREATE = 1,
    PGC_OP_UPDATE = 2,
    PGC_OP_DELETE = 3,
} pgc_op_t;

typedef enum {
    PGC_MSG_BEGIN,   /**< a transaction starts: lsn = its commit record, next_lsn = past it */
    PGC_MSG_COMMIT,  /**< the transaction ends */
    PGC_MSG_CHANGES, /**< one row change: 1 change, or 2 when an update moved the key */
    PGC_MSG_SKIP,    /**< nothing to serve (truncate, logical message): `what` says which */
} pgc_msg_kind_t;

/** One change, rendered: `{"op":"update","entity":"public.users/42","data":{…}}`. */
typedef struct {
    pgc_op_t op;
    char *json; /**< malloc'd, owned by the message until taken */
    size_t len;
} pgc_change_t;

typedef struct {
    pgc_msg_kind_t kind;
    uint64_t lsn;      /**< BEGIN/COMMIT: where the commit record starts */
    uint64_t next_lsn; /**< BEGIN/COMMIT: where it ends */
    size_t nchanges;
    pgc_change_t changes[2];
    int truncated; /**< a change's data was over the limit and replaced (README.md) */
    int keyless;   /**< the table has no primary key: the entity is the table alone */
    char what[32]; /**< SKIP: "truncate", "message", … */
} pgc_msg_t;

typedef struct {
    size_t max_data_bytes;   /**< larger data becomes {"msm_truncated_bytes":N} */
    size_t max_entity_bytes; /**< a longer entity keeps the table and hashes the key */
} pgc_decode_conf_t;

/**
 * @brief Decodes one message.
 * @param out cleared first; on MSM_OK holds the message (free with pgc_msg_clear())
 * @param err receives why on failure
 * @returns MSM_OK; MSM_ERR_PARSE for text that is not a wal2json v2 message we understand;
 * MSM_ERR_NOMEM.
 */
int pgc_decode(const char *text,
               size_t len,
               const pgc_decode_conf_t *conf,
               pgc_msg_t *out,
               char *err,
               size_t err_size);

/** @brief Frees the changes @p m still owns and zeroes it. */
void pgc_msg_clear(pgc_msg_t *m);

/** @brief "create", "update" or "delete". */
const char *pgc_op_name(pgc_op_t op);

#endif
