/* SPDX-License-Identifier: MIT */
/* The backlog: a ring of numbered changes above the acknowledged floor, and the unit and
 * progress bookkeeping that says how far the slot may be confirmed (see pgc_backlog.h). */
#include "pgc_backlog.h"
#include "pgc_seq.h"

#include "msm/err.h"

#include <stdlib.h>
#include <string.h>

struct pgc_backlog_s {
    pgc_entry_t *bl_ring;
    size_t bl_cap, bl_head, bl_count, bl_bytes;
    size_t bl_max_changes, bl_max_bytes;
    int64_t bl_acked;
    /* the stream since the last reset */
    int bl_in_txn;
    uint64_t bl_txn_commit, bl_txn_end;
    int bl_has_unit;         /* a change has been numbered */
    uint64_t bl_unit;        /* the unit of the latest numbered change */
    uint64_t bl_unit_first;  /* where that unit's first change-bearing commit starts */
    uint32_t bl_next_index;  /* the next index in bl_unit */
    uint64_t bl_progress;    /* every commit starting before it has been received */
    uint64_t bl_confirmable; /* the last answer of pgc_backlog_confirmable() */
    int64_t bl_last_seq;
};

pgc_backlog_t *pgc_backlog_new(size_t max_changes, size_t max_bytes)
{
    pgc_backlog_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    /* One message adds up to two changes after the last check of pgc_backlog_full(). */
    b->bl_cap = max_changes + 2;
    b->bl_ring = calloc(b->bl_cap, sizeof(*b->bl_ring));
    if (!b->bl_ring) {
        free(b);
        return NULL;
    }
    b->bl_max_changes = max_changes;
    b->bl_max_bytes = max_bytes;
    return b;
}

static pgc_entry_t *slot_at(const pgc_backlog_t *b, size_t i)
{
    return &b->bl_ring[(b->bl_head + i) % b->bl_cap];
}

static void drop_oldest(pgc_backlog_t *b)
{
    pgc_entry_t *e = slot_at(b, 0);
    b->bl_bytes -= e->ch_len;
    free(e->ch_json);
    memset(e, 0, sizeof(*e));
    b->bl_head = (b->bl_head + 1) % b->bl_cap;
    b->bl_count--;
}

void pgc_backlog_reset(pgc_backlog_t *b)
{
    while (b->bl_count)
        drop_oldest(b);
    b->bl_head = 0;
    b->bl_in_txn = 0;
    b->bl_has_unit = 0;
    b->bl_next_index = 0;
    b->bl_progress = 0;
    b->bl_confirmable = 0;
}

void pgc_backlog_free(pgc_backlog_t *b)
{
    if (!b)
        return;
    pgc_backlog_reset(b);
    free(b->bl_ring);
    free(b);
}

void pgc_backlog_begin(pgc_backlog_t *b, uint64_t commit_lsn, uint64_t end_lsn)
{
    b->bl_in_txn = 1;
    b->bl_txn_commit = commit_lsn;
    b->bl_txn_end = end_lsn;
}

int pgc_backlog_add(pgc_backlog_t *b, char *json, size_t len)
{
    if (!b->bl_in_txn || b->bl_count >= b->bl_cap) {
        free(json);
        return MSM_ERR_INVALID;
    }
    uint64_t unit = pgc_lsn_unit(b->bl_txn_commit);
    if (!b->bl_has_unit || unit != b->bl_unit) {
        /* Counting starts at the unit's first change-bearing commit decoded. */
        b->bl_has_unit = 1;
        b->bl_unit = unit;
        b->bl_unit_first = b->bl_txn_commit;
        b->bl_next_index = 0;
    }
    if (unit > PGC_SEQ_UNIT_MAX || b->bl_next_index > PGC_SEQ_INDEX_MAX) {
        free(json);
        return MSM_ERR_TOOLARGE;
    }
    int64_t seq = pgc_seq_make(unit, b->bl_next_index++);
    b->bl_last_seq = seq;
    if (seq <= b->bl_acked) {
        free(json); /* acknowledged before a restart: numbered, never kept */
        return MSM_OK;
    }
    pgc_entry_t *e = slot_at(b, b->bl_count++);
    e->ch_seq = seq;
    e->ch_unit_first = b->bl_unit_first;
    e->ch_json = json;
    e->ch_len = len;
    b->bl_bytes += len;
    return MSM_OK;
}

void pgc_backlog_commit(pgc_backlog_t *b)
{
    if (!b->bl_in_txn)
        return;
    b->bl_in_txn = 0;
    /* The next commit record starts at or after this one's end. */
    if (b->bl_txn_end > b->bl_progress)
        b->bl_progress = b->bl_txn_end;
}

void pgc_backlog_progress(pgc_backlog_t *b, uint64_t lsn)
{
    if (!b->bl_in_txn && lsn > b->bl_progress)
        b->bl_progress = lsn;
}

void pgc_backlog_ack(pgc_backlog_t *b, int64_t seq)
{
    if (seq <= b->bl_acked)
        return;
    b->bl_acked = seq;
    while (b->bl_count && slot_at(b, 0)->ch_seq <= seq)
        drop_oldest(b);
}

int64_t pgc_backlog_acked(const pgc_backlog_t *b)
{
    return b->bl_acked;
}

uint64_t pgc_backlog_confirmable(pgc_backlog_t *b)
{
    uint64_t p;
    if (b->bl_count)
        /* The oldest unacknowledged change's unit must be decoded again whole. */
        p = slot_at(b, 0)->ch_unit_first;
    else if (!b->bl_has_unit || pgc_lsn_unit(b->bl_progress) > b->bl_unit)
        /* Everything received is acknowledged, and no later commit can share a unit with
         * one before the progress point. */
        p = b->bl_progress;
    else
        /* Acknowledged, but the unit may still grow: keep it whole. */
        p = b->bl_unit_first;
    if (p > b->bl_confirmable)
        b->bl_confirmable = p;
    return b->bl_confirmable;
}

int pgc_backlog_full(const pgc_backlog_t *b)
{
    return b->bl_count >= b->bl_max_changes || b->bl_bytes >= b->bl_max_bytes;
}

size_t pgc_backlog_count(const pgc_backlog_t *b)
{
    return b->bl_count;
}

size_t pgc_backlog_bytes(const pgc_backlog_t *b)
{
    return b->bl_bytes;
}

size_t pgc_backlog_find(const pgc_backlog_t *b, int64_t after)
{
    size_t lo = 0, hi = b->bl_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (slot_at(b, mid)->ch_seq <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const pgc_entry_t *pgc_backlog_at(const pgc_backlog_t *b, size_t i)
{
    return i < b->bl_count ? slot_at(b, i) : NULL;
}

int64_t pgc_backlog_last_seq(const pgc_backlog_t *b)
{
    return b->bl_last_seq;
}
