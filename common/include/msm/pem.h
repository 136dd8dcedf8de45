/* SPDX-License-Identifier: MIT */
/* PEM text checked before it is kept: certificates and private keys given as text (a
 * subscription's push_tls, a daemon's CA bundle) are judged when they arrive, so the code that
 * uses them later (libcurl, per connection) never meets a bad one first. The shape check is
 * cheap; the others parse with GnuTLS. */
#ifndef MSM_PEM_H
#define MSM_PEM_H

#include <stddef.h>

/**
 * @brief 1 when @p pem holds a block "-----BEGIN <label>-----" … "-----END <label>-----" whose
 * label ends with @p label_suffix ("CERTIFICATE", "PRIVATE KEY"), else 0. Shape only: the
 * content of the block is not decoded.
 */
int msm_pem_has_block(const char *pem, const char *label_suffix);

/**
 * @brief Parses @p pem as one or more X.509 certificates (text between blocks is ignored).
 * @returns the number of certificates (>= 1), or MSM_ERR_INVALID with the reason in @p why.
 */
int msm_pem_certs_check(const char *pem, char *why, size_t why_size);

/**
 * @brief Checks that @p key_pem is an unencrypted private key (PKCS#8, PKCS#1 or SEC1) and
 * the key of the first certificate in @p cert_pem.
 * @returns MSM_OK, or MSM_ERR_INVALID with the reason in @p why (never any key material).
 */
int msm_pem_key_matches(const char *cert_pem, const char *key_pem, char *why, size_t why_size);

#endif
