/* SPDX-License-Identifier: MIT */
/* The changes read from the slot and not yet acknowledged, their sequences, and the WAL
 * position the slot may be confirmed to. Pure bookkeeping (no I/O), on the loop's thread.
 *
 * Numbering (pgc_seq.h) counts the changes of each unit from the first one decoded, so a
 * restart must decode every change-bearing transaction of a unit or none: the slot is only
 * ever confirmed to a position that splits no unit's change-bearing transactions, and only
 * past transactions whose every change is acknowledged (README.md, "Acknowledgement"). */
#ifndef PGC_BACKLOG_H
#define PGC_BACKLOG_H

#include "pgc_decode.h"

#include <stddef.h>
#include <stdint.h>

typedef struct pgc_backlog_s pgc_backlog_t;

/** One buffered change. */
typedef struct {
    int64_t ch_seq;
    uint64_t ch_unit_first; /**< where the first change-bearing commit of its unit starts */
    char *ch_json;          /**< {"op","entity","data"} (pgc_decode.h) */
    size_t ch_len;
} pgc_entry_t;

/** @brief A backlog holding at most @p max_changes changes and about @p max_bytes bytes
 *  (one message may go past it). @returns NULL when out of memory. */
pgc_backlog_t *pgc_backlog_new(size_t max_changes, size_t max_bytes);
void pgc_backlog_free(pgc_backlog_t *b);

/**
 * @brief Forgets the stream (a new replication connection starts again from the slot's
 * confirmed position): buffered changes and unit counts go; the acknowledged floor stays.
 */
void pgc_backlog_reset(pgc_backlog_t *b);

/** @brief A transaction whose commit record spans [@p commit_lsn, @p end_lsn) begins. */
void pgc_backlog_begin(pgc_backlog_t *b, uint64_t commit_lsn, uint64_t end_lsn);

/**
 * @brief Numbers the next change of the open transaction and keeps it unless already
 * acknowledged.
 * @param json the rendered change (ownership TAKEN on every return)
 * @returns MSM_OK; MSM_ERR_INVALID outside a transaction; MSM_ERR_TOOLARGE when the unit
 * has no index left (the change is dropped: the stream must stop, README.md "Limits").
 */
int pgc_backlog_add(pgc_backlog_t *b, char *json, size_t len);

/** @brief The open transaction committed. */
void pgc_backlog_commit(pgc_backlog_t *b);

/** @brief The server has sent everything whose commit starts before @p lsn (a keepalive's
 *  position, outside a transaction). */
void pgc_backlog_progress(pgc_backlog_t *b, uint64_t lsn);

/** @brief Everything up to @p seq is durable downstream: it is dropped and never kept
 *  again. Lower values than an earlier one change nothing. */
void pgc_backlog_ack(pgc_backlog_t *b, int64_t seq);

/** @brief The highest acknowledged sequence (0: none). */
int64_t pgc_backlog_acked(const pgc_backlog_t *b);

/**
 * @brief The position the slot may be confirmed to now (README.md "Acknowledgement"), or 0
 * when nothing is known to be safe. Never lower than an earlier answer of the same stream.
 */
uint64_t pgc_backlog_confirmable(pgc_backlog_t *b);

/** @brief Whether the backlog is at its limits (stop reading the stream). */
int pgc_backlog_full(const pgc_backlog_t *b);

/** @brief Buffered changes and their bytes. */
size_t pgc_backlog_count(const pgc_backlog_t *b);
size_t pgc_backlog_bytes(const pgc_backlog_t *b);

/** @brief The index of the first buffered change with a sequence above @p after (== count
 *  when none). */
size_t pgc_backlog_find(const pgc_backlog_t *b, int64_t after);

/** @brief Buffered change @p i (0 = oldest), borrowed until the next ack or reset. */
const pgc_entry_t *pgc_backlog_at(const pgc_backlog_t *b, size_t i);

/** @brief The highest sequence numbered so far in this stream (0: none). */
int64_t pgc_backlog_last_seq(const pgc_backlog_t *b);

#endif
