/* SPDX-License-Identifier: MIT */
/* The Msm-Signature HMACs (v1, v2 and its canonical text) shared by the router (signing)
 * and the lambda SDK (verifying). */
#include "msm/signature.h"
#include "msm/err.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Fetching the algorithm is the costly part: once per process, kept for its lifetime. */
static EVP_MAC *hmac;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* One piece of the signed text. */
typedef struct {
    const void *p;
    size_t n;
} piece_t;

static void to_hex(const unsigned char *in, size_t n, char *hex)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = digits[in[i] >> 4];
        hex[2 * i + 1] = digits[in[i] & 0xf];
    }
    hex[2 * n] = '\0';
}

/* HMAC-SHA256 of the concatenated pieces, as lower-case hex. */
static int hmac_hex(const char *secret,
                    const piece_t *pieces,
                    size_t npieces,
                    char hex[MSM_SIGNATURE_HEX_LEN + 1])
{
    unsigned char out[32];
    size_t outlen = 0;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    pthread_once(&hmac_once, hmac_fetch);
    EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    int ok = ctx && EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params);
    for (size_t i = 0; ok && i < npieces; i++)
        ok = pieces[i].n == 0 || EVP_MAC_update(ctx, pieces[i].p, pieces[i].n);
    ok = ok && EVP_MAC_final(ctx, out, &outlen, sizeof(out)) && outlen == sizeof(out);
    EVP_MAC_CTX_free(ctx);
    hex[0] = '\0';
    if (!ok)
        return MSM_ERR_INVALID;
    to_hex(out, sizeof(out), hex);
    return MSM_OK;
}

int msm_signature_v1(const char *secret, const char *t, size_t tlen, const char *event_id,
                     const void *body, size_t len, char hex[MSM_SIGNATURE_HEX_LEN + 1])
{
    const piece_t pieces[] = {
        {t, tlen}, {".", 1}, {event_id, strlen(event_id)}, {".", 1}, {body, len},
    };
    return hmac_hex(secret, pieces, sizeof(pieces) / sizeof(pieces[0]), hex);
}

int msm_signature_sha256_hex(const void *data, size_t len, char hex[MSM_SIGNATURE_HEX_LEN + 1])
{
    unsigned char out[32];
    unsigned outlen = 0;
    hex[0] = '\0';
    if (!EVP_Digest(len ? data : "", len, out, &outlen, EVP_sha256(), NULL) ||
        outlen != sizeof(out))
        return MSM_ERR_INVALID;
    to_hex(out, sizeof(out), hex);
    return MSM_OK;
}

/* The v2 text's lines, in order: "v2", then each field, then the body's hash. A line feed
 * inside a field would let two different requests share one text: refused. */
static int v2_pieces(const msm_signature_fields_t *f, const char *body_sha256, piece_t out[16])
{
    const char *lines[] = {"v2",          f->sf_t,        f->sf_id,   f->sf_subscription,
                           f->sf_attempt, f->sf_deadline, body_sha256};
    size_t k = 0;
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        const char *l = lines[i] ? lines[i] : "";
        if (strchr(l, '\n'))
            return -1;
        if (i > 0)
            out[k++] = (piece_t){"\n", 1};
        out[k++] = (piece_t){l, strlen(l)};
    }
    return (int)k;
}

size_t msm_signature_v2_text(const msm_signature_fields_t *f,
                             const char body_sha256[MSM_SIGNATURE_HEX_LEN + 1],
                             char *buf,
                             size_t size)
{
    piece_t pieces[16] = {{0}}; /* (n <= 13; zeroed so the compiler need not prove it) */
    int n = v2_pieces(f, body_sha256, pieces);
    size_t total = 0;
    if (size > 0)
        buf[0] = '\0';
    if (n < 0)
        return 0;
    for (int i = 0; i < n; i++) {
        if (total < size) {
            size_t take = pieces[i].n < size - total ? pieces[i].n : size - total;
            memcpy(buf + total, pieces[i].p, take);
        }
        total += pieces[i].n;
    }
    if (size > 0)
        buf[total < size ? total : size - 1] = '\0';
    return total;
}

int msm_signature_v2(const char *secret,
                     const msm_signature_fields_t *f,
                     const char body_sha256[MSM_SIGNATURE_HEX_LEN + 1],
                     char hex[MSM_SIGNATURE_HEX_LEN + 1])
{
    piece_t pieces[16] = {{0}}; /* (n <= 13; zeroed so the compiler need not prove it) */
    int n = v2_pieces(f, body_sha256, pieces);
    if (n < 0) {
        hex[0] = '\0';
        return MSM_ERR_INVALID;
    }
    return hmac_hex(secret, pieces, (size_t)n, hex);
}

int msm_signature_header(const char *secret,
                         const msm_signature_fields_t *f,
                         const void *body,
                         size_t len,
                         char *out,
                         size_t size)
{
    char v1[MSM_SIGNATURE_HEX_LEN + 1], v2[MSM_SIGNATURE_HEX_LEN + 1];
    char sha[MSM_SIGNATURE_HEX_LEN + 1];
    const char *t = f->sf_t ? f->sf_t : "";
    if (size > 0)
        out[0] = '\0';
    const char *id = f->sf_id ? f->sf_id : "";
    if (msm_signature_v1(secret, t, strlen(t), id, body, len, v1) != MSM_OK ||
        msm_signature_sha256_hex(body, len, sha) != MSM_OK ||
        msm_signature_v2(secret, f, sha, v2) != MSM_OK)
        return MSM_ERR_INVALID;
    int w = snprintf(out, size, "t=%s,v1=%s,v2=%s", t, v1, v2);
    if (w < 0 || (size_t)w >= size) {
        if (size > 0)
            out[0] = '\0';
        return MSM_ERR_INVALID;
    }
    return MSM_OK;
}
