/* SPDX-License-Identifier: MIT */
/* LSN text forms (the sequence arithmetic itself is inline in pgc_seq.h). */
#include "pgc_seq.h"

#include "msm/err.h"

#include <inttypes.h>
#include <stdio.h>

/* Reads 1..8 hex digits at *s; advances *s. */
static int hex32(const char **s, uint32_t *out)
{
    uint32_t v = 0;
    int n = 0;
    for (;; n++) {
        char c = **s;
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            break;
        if (n == 8)
            return MSM_ERR_PARSE;
        v = v << 4 | (uint32_t)d;
        (*s)++;
    }
    *out = v;
    return n > 0 ? MSM_OK : MSM_ERR_PARSE;
}

int pgc_lsn_parse(const char *s, uint64_t *out)
{
    uint32_t hi, lo;
    if (!s || hex32(&s, &hi) != MSM_OK || *s++ != '/' || hex32(&s, &lo) != MSM_OK || *s)
        return MSM_ERR_PARSE;
    *out = (uint64_t)hi << 32 | lo;
    return MSM_OK;
}

char *pgc_lsn_format(uint64_t lsn, char buf[PGC_LSN_TEXT])
{
    snprintf(buf, PGC_LSN_TEXT, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
    return buf;
}
