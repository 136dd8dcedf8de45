/* SPDX-License-Identifier: MIT */
/* Msm-Signature (API.md "Push to lambdas", docs/push.md "Signatures"): the router signs each
 * push with the subscription's secret, the lambda SDK verifies it. Both compute the same
 * values here:
 *
 *     v1 = lower-case hex HMAC-SHA256(secret, "<t>.<event id>.<body>")
 *     v2 = lower-case hex HMAC-SHA256(secret, "v2\n<t>\n<ce-id>\n<Msm-Subscription>\n"
 *                                             "<Msm-Attempt>\n<Msm-Deadline>\n"
 *                                             "<hex SHA-256 of the body>")
 *
 * sent as `Msm-Signature: t=<unix seconds>,v1=<hex>,v2=<hex>`. v1 signs only t, the id and
 * the body; v2 also the delivery headers, and is the one a verifier requires when present
 * (v1 is kept for one release so that older lambdas keep verifying). */
#ifndef MSM_SIGNATURE_H
#define MSM_SIGNATURE_H

#include <stddef.h>

/** Hex digits of a v1 or v2 signature, and of the body's SHA-256 in the v2 text. */
#define MSM_SIGNATURE_HEX_LEN 64
/** Room for a whole `t=<t>,v1=<hex>,v2=<hex>` header value and its NUL. */
#define MSM_SIGNATURE_HEADER_SIZE 176

/**
 * The values v2 signs besides the body: each exactly as the request carries it in its
 * header, "" when the request has no such header (a batch push has neither ce-id nor
 * Msm-Attempt). None may contain a line feed. All NUL-terminated and borrowed.
 */
typedef struct {
    const char *sf_t;            /**< the t= text: unix seconds in decimal */
    const char *sf_id;           /**< ce-id */
    const char *sf_subscription; /**< Msm-Subscription */
    const char *sf_attempt;      /**< Msm-Attempt */
    const char *sf_deadline;     /**< Msm-Deadline */
} msm_signature_fields_t;

/**
 * @brief Computes the v1 signature of (@p t, @p event_id, @p body) into @p hex (64 digits
 * and a NUL), without building the signed text in memory.
 * @param t the timestamp text exactly as sent, @p tlen bytes (need not be NUL-terminated)
 * @returns MSM_OK, or MSM_ERR_INVALID when HMAC-SHA256 is unavailable (@p hex is then "").
 * @remark thread-safe.
 */
int msm_signature_v1(const char *secret, const char *t, size_t tlen, const char *event_id,
                     const void *body, size_t len, char hex[MSM_SIGNATURE_HEX_LEN + 1]);

/**
 * @brief Lower-case hex SHA-256 of @p len bytes at @p data into @p hex (64 digits and a NUL).
 * @returns MSM_OK, or MSM_ERR_INVALID when SHA-256 is unavailable (@p hex is then "").
 * @remark thread-safe.
 */
int msm_signature_sha256_hex(const void *data, size_t len, char hex[MSM_SIGNATURE_HEX_LEN + 1]);

/**
 * @brief Writes the v2 canonical text of @p f with the body's hex SHA-256 @p body_sha256
 * into @p buf, snprintf-style (always NUL-terminated when @p size > 0).
 * @returns the text's length (without NUL) even when @p size is too small, or 0 when a
 * field contains a line feed (the text would be ambiguous).
 */
size_t msm_signature_v2_text(const msm_signature_fields_t *f,
                             const char body_sha256[MSM_SIGNATURE_HEX_LEN + 1],
                             char *buf,
                             size_t size);

/**
 * @brief Computes the v2 signature of @p f and the body whose hex SHA-256 is
 * @p body_sha256 (msm_signature_sha256_hex(): hashed once, however many secrets are tried)
 * into @p hex, without building the text in memory.
 * @returns MSM_OK, or MSM_ERR_INVALID when a field contains a line feed or HMAC-SHA256 is
 * unavailable (@p hex is then "").
 * @remark thread-safe.
 */
int msm_signature_v2(const char *secret,
                     const msm_signature_fields_t *f,
                     const char body_sha256[MSM_SIGNATURE_HEX_LEN + 1],
                     char hex[MSM_SIGNATURE_HEX_LEN + 1]);

/**
 * @brief The whole header value a sender puts in Msm-Signature: `t=<t>,v1=<hex>,v2=<hex>`
 * (v1 over t, @p f->sf_id and the body; v2 over @p f and the body) into @p out.
 * @returns MSM_OK, or MSM_ERR_INVALID (a line feed in a field, HMAC-SHA256 unavailable, or
 * @p size too small; @p out is then "").
 * @remark thread-safe.
 */
int msm_signature_header(const char *secret,
                         const msm_signature_fields_t *f,
                         const void *body,
                         size_t len,
                         char *out,
                         size_t size);

#endif
