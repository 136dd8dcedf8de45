/* SPDX-License-Identifier: MIT */
/* Msm-Signature (API.md "Push to lambdas"): the router signs each push with the
 * subscription's secret, the lambda SDK verifies it. Both compute the same value here:
 *
 *     v1 = lower-case hex HMAC-SHA256(secret, "<t>.<event id>.<body>")
 *
 * sent as `Msm-Signature: t=<unix seconds>,v1=<hex>`. */
#ifndef MSM_SIGNATURE_H
#define MSM_SIGNATURE_H

#include <stddef.h>

/** Hex digits of a v1 signature. */
#define MSM_SIGNATURE_HEX_LEN 64

/**
 * @brief Computes the v1 signature of (@p t, @p event_id, @p body) into @p hex (64 digits
 * and a NUL), without building the signed text in memory.
 * @param t the timestamp text exactly as sent, @p tlen bytes (need not be NUL-terminated)
 * @returns MSM_OK, or MSM_ERR_INVALID when HMAC-SHA256 is unavailable (@p hex is then "").
 * @remark thread-safe.
 */
int msm_signature_v1(const char *secret, const char *t, size_t tlen, const char *event_id,
                     const void *body, size_t len, char hex[MSM_SIGNATURE_HEX_LEN + 1]);

#endif
