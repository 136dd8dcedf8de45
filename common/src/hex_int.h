/* SPDX-License-Identifier: MIT */
/* Hex digits, for the parsers of libmsm-common (ids, URLs, percent-escapes). Internal. */
#ifndef MSM_HEX_INT_H
#define MSM_HEX_INT_H

/* The value of hex digit @p c (either case), or -1. */
static inline int msm__hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
