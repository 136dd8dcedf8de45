/* SPDX-License-Identifier: MIT */
/* The Msm-Signature HMAC shared by the router (signing) and the lambda SDK (verifying). */
#include "msm/signature.h"
#include "msm/err.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <string.h>

/* Fetching the algorithm is the costly part: once per process, kept for its lifetime. */
static EVP_MAC *hmac;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

int msm_signature_v1(const char *secret, const char *t, size_t tlen, const char *event_id,
                     const void *body, size_t len, char hex[MSM_SIGNATURE_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char out[32];
    size_t outlen = 0;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    pthread_once(&hmac_once, hmac_fetch);
    EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    int ok = ctx && EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) &&
             EVP_MAC_update(ctx, (const unsigned char *)t, tlen) &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
             EVP_MAC_update(ctx, (const unsigned char *)event_id, strlen(event_id)) &&
             EVP_MAC_update(ctx, (const unsigned char *)".", 1) &&
             (len == 0 || EVP_MAC_update(ctx, body, len)) &&
             EVP_MAC_final(ctx, out, &outlen, sizeof(out)) && outlen == sizeof(out);
    EVP_MAC_CTX_free(ctx);
    hex[0] = '\0';
    if (!ok)
        return MSM_ERR_INVALID;
    for (size_t i = 0; i < sizeof(out); i++) {
        hex[2 * i] = digits[out[i] >> 4];
        hex[2 * i + 1] = digits[out[i] & 0xf];
    }
    hex[2 * sizeof(out)] = '\0';
    return MSM_OK;
}
