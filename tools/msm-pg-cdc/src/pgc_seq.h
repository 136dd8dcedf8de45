/* SPDX-License-Identifier: MIT */
/* Change sequences and WAL positions (LSNs). A change's sequence is a pure function of the
 * WAL, so the same change gets the same number after any restart (README.md, "Sequences"):
 *
 *     sequence = unit << 29 | index
 *     unit     = the LSN where its transaction's commit record starts, >> 24
 *                (16 MiB of WAL: one WAL segment at the default segment size)
 *     index    = its position among the changes of every transaction whose commit starts in
 *                that unit, counted in commit order from 0
 *
 * Below 256 TiB of WAL every sequence is below 2^53 (exact in a JSON double); an int64
 * holds them up to 256 PiB. One unit numbers at most 2^29 changes. */
#ifndef PGC_SEQ_H
#define PGC_SEQ_H

#include <stddef.h>
#include <stdint.h>

#define PGC_SEQ_UNIT_SHIFT 24 /* bytes of WAL per unit: 2^24 */
#define PGC_SEQ_INDEX_BITS 29
#define PGC_SEQ_INDEX_MAX  ((UINT32_C(1) << PGC_SEQ_INDEX_BITS) - 1)
/* The last unit whose sequences fit an int64. */
#define PGC_SEQ_UNIT_MAX ((UINT64_C(1) << (63 - PGC_SEQ_INDEX_BITS)) - 1)

/** Longest text of an LSN, "FFFFFFFF/FFFFFFFF" and its NUL. */
#define PGC_LSN_TEXT 18

/** @brief The unit of a commit record starting at @p lsn. */
static inline uint64_t pgc_lsn_unit(uint64_t lsn)
{
    return lsn >> PGC_SEQ_UNIT_SHIFT;
}

/** @brief The sequence of change @p index of unit @p unit (unit <= PGC_SEQ_UNIT_MAX,
 *  index <= PGC_SEQ_INDEX_MAX). */
static inline int64_t pgc_seq_make(uint64_t unit, uint32_t index)
{
    return (int64_t)(unit << PGC_SEQ_INDEX_BITS | index);
}

/** @brief The unit of sequence @p seq (>= 0). */
static inline uint64_t pgc_seq_unit(int64_t seq)
{
    return (uint64_t)seq >> PGC_SEQ_INDEX_BITS;
}

/**
 * @brief Parses PostgreSQL's text form of an LSN, "16/B374D848" (hex, 1..8 digits each side).
 * @returns MSM_OK or MSM_ERR_PARSE.
 */
int pgc_lsn_parse(const char *s, uint64_t *out);

/** @brief Writes @p lsn as PostgreSQL does ("16/B374D848"). @returns @p buf. */
char *pgc_lsn_format(uint64_t lsn, char buf[PGC_LSN_TEXT]);

#endif
