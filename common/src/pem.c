/* SPDX-License-Identifier: MIT */
/* PEM checks: the shape of a block by hand, certificates and keys with GnuTLS (which common
 * links already for the HTTPS server). */
#include "msm/pem.h"
#include "msm/err.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include <stdio.h>
#include <string.h>

#define LABEL_MAX 64 /* "ENCRYPTED PRIVATE KEY" is the longest label we expect */

int msm_pem_has_block(const char *pem, const char *label_suffix)
{
    static const char begin[] = "-----BEGIN ", dashes[] = "-----";
    size_t suffix_len = strlen(label_suffix);
    for (const char *p = strstr(pem, begin); p; p = strstr(p + 1, begin)) {
        const char *label = p + sizeof(begin) - 1;
        const char *label_end = strstr(label, dashes);
        size_t len = label_end ? (size_t)(label_end - label) : 0;
        if (len < suffix_len || len > LABEL_MAX || memchr(label, '\n', len) ||
            memcmp(label_end - suffix_len, label_suffix, suffix_len) != 0)
            continue;
        char end_line[LABEL_MAX + sizeof("-----END -----")];
        snprintf(end_line, sizeof(end_line), "-----END %.*s-----", (int)len, label);
        if (strstr(label_end, end_line))
            return 1;
    }
    return 0;
}

static gnutls_datum_t datum_of(const char *pem)
{
    gnutls_datum_t d = {(unsigned char *)pem, (unsigned int)strlen(pem)};
    return d;
}

int msm_pem_certs_check(const char *pem, char *why, size_t why_size)
{
    gnutls_datum_t d = datum_of(pem);
    gnutls_x509_crt_t *certs = NULL;
    unsigned int n = 0;
    int rc = gnutls_x509_crt_list_import2(&certs, &n, &d, GNUTLS_X509_FMT_PEM, 0);
    for (unsigned int i = 0; rc >= 0 && i < n; i++)
        gnutls_x509_crt_deinit(certs[i]);
    gnutls_free(certs);
    if (rc < 0 || n == 0) {
        snprintf(why, why_size, "not PEM certificates: %s",
                 rc < 0 ? gnutls_strerror(rc) : "none found");
        return MSM_ERR_INVALID;
    }
    return (int)n;
}

/* Whether @p key is the private half of @p crt's public key (their SHA-256 key ids). */
static int same_public_key(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key)
{
    unsigned char a[64], b[64];
    size_t alen = sizeof(a), blen = sizeof(b);
    return gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA256, a, &alen) >= 0 &&
           gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, b, &blen) >= 0 &&
           alen == blen && memcmp(a, b, alen) == 0;
}

int msm_pem_key_matches(const char *cert_pem, const char *key_pem, char *why, size_t why_size)
{
    gnutls_x509_crt_t crt = NULL;
    gnutls_x509_privkey_t key = NULL;
    gnutls_datum_t cd = datum_of(cert_pem), kd = datum_of(key_pem);
    int rc = MSM_ERR_INVALID, g;
    if (gnutls_x509_crt_init(&crt) < 0 || gnutls_x509_privkey_init(&key) < 0) {
        snprintf(why, why_size, "out of memory");
        rc = MSM_ERR_NOMEM;
    } else if ((g = gnutls_x509_crt_import(crt, &cd, GNUTLS_X509_FMT_PEM)) < 0) {
        snprintf(why, why_size, "not a PEM certificate: %s", gnutls_strerror(g));
    } else if ((g = gnutls_x509_privkey_import2(key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        /* An encrypted key fails here too: nothing could give its password. */
        snprintf(why, why_size, "not an unencrypted PEM private key: %s", gnutls_strerror(g));
    } else if (!same_public_key(crt, key)) {
        snprintf(why, why_size, "is not the key of the client certificate");
    } else {
        rc = MSM_OK;
    }
    gnutls_x509_privkey_deinit(key);
    gnutls_x509_crt_deinit(crt);
    return rc;
}
