/* SPDX-License-Identifier: MIT */
/* Standard base64 (RFC 4648, with padding), strict on decode: untrusted input lands here.
 * A lenient decoder (URL-safe alphabet too, padding optional) serves proto3 JSON bytes. */
#ifndef MSM_BASE64_H
#define MSM_BASE64_H

#include <stddef.h>

/** @brief Bytes needed to encode @p n bytes, including the terminating NUL. */
size_t msm_base64_encoded_size(size_t n);

/** @brief Encodes @p n bytes into @p out (msm_base64_encoded_size(n) bytes). @returns length. */
size_t msm_base64_encode(const void *in, size_t n, char *out);

/**
 * @brief Decodes @p n characters into @p out (at least n / 4 * 3 bytes). Rejects characters
 * outside the alphabet, bad padding and lengths that are not a multiple of 4.
 * @returns MSM_OK and the length in @p out_len, or MSM_ERR_PARSE.
 */
int msm_base64_decode(const char *in, size_t n, void *out, size_t *out_len);

/**
 * @brief Validates a lenient base64 text, as proto3's JSON mapping accepts for bytes: the
 * standard or the URL-safe alphabet, padding optional.
 * @param n in: the text's length; out: its length without padding (pass that to decode)
 * @param out_len receives the decoded size
 * @returns MSM_OK or MSM_ERR_PARSE.
 */
int msm_base64_lenient_measure(const char *in, size_t *n, size_t *out_len);

/** @brief Decodes @p n characters measured valid by msm_base64_lenient_measure(). */
void msm_base64_lenient_decode(const char *in, size_t n, void *out);

#endif
