/* SPDX-License-Identifier: MIT */
/* Msm-Signature (API.md "Push to lambdas"): t=<unix s>,v1=<hex HMAC-SHA256(secret,
 * "<t>.<ce-id>.<body>")>. The timestamp inside the signed text plus a tolerance window keeps
 * a captured request from being replayed much later; several v1= entries let a sender sign
 * with an old and a new secret while the secret is rotated. */
#include "lambda_int.h"
#include "msm/signature.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIG_HEX_LEN MSM_SIGNATURE_HEX_LEN

/* Lower-cases a hex candidate so that upper-case senders match too. */
static int normalise_hex(const char *s, size_t n, char out[SIG_HEX_LEN + 1])
{
    if (n != SIG_HEX_LEN)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return -1;
        out[i] = c;
    }
    out[n] = '\0';
    return 0;
}

int msm__signature_verify(const char *secret,
                          const char *header,
                          const char *event_id,
                          const void *body,
                          size_t len,
                          int64_t now_s,
                          int tolerance_s,
                          char *why,
                          size_t why_size)
{
    if (!header || !*header) {
        snprintf(why, why_size, "the Msm-Signature header is required");
        return -1;
    }
    const char *t = NULL;
    size_t tlen = 0;
    int nv1 = 0;
    /* First pass: the timestamp (its position in the list is free). */
    for (const char *p = header; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        if (n > 2 && strncmp(p, "t=", 2) == 0) {
            t = p + 2;
            tlen = n - 2;
            while (tlen > 0 && t[tlen - 1] == ' ')
                tlen--;
        } else if (n > 3 && strncmp(p, "v1=", 3) == 0) {
            nv1++;
        }
        p += n;
    }
    char tbuf[24];
    if (!t || tlen == 0 || tlen >= sizeof(tbuf) || nv1 == 0) {
        snprintf(why, why_size, "Msm-Signature must be t=<unix seconds>,v1=<hex>");
        return -1;
    }
    memcpy(tbuf, t, tlen);
    tbuf[tlen] = '\0';
    char *end;
    long long ts = strtoll(tbuf, &end, 10);
    if (*end != '\0' || ts < 0) {
        snprintf(why, why_size, "Msm-Signature: t is not unix seconds");
        return -1;
    }
    if (tolerance_s > 0 && (ts < now_s - tolerance_s || ts > now_s + tolerance_s)) {
        snprintf(why, why_size, "Msm-Signature: timestamp %lld is outside the %d s window", ts,
                 tolerance_s);
        return -1;
    }
    char want[SIG_HEX_LEN + 1];
    if (msm_signature_v1(secret, tbuf, tlen, event_id, body, len, want) != MSM_OK) {
        snprintf(why, why_size, "HMAC-SHA256 is unavailable");
        return -1;
    }
    for (const char *p = header; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        char got[SIG_HEX_LEN + 1];
        size_t vl = n;
        while (vl > 3 && p[vl - 1] == ' ')
            vl--;
        if (n > 3 && strncmp(p, "v1=", 3) == 0 && normalise_hex(p + 3, vl - 3, got) == 0 &&
            CRYPTO_memcmp(got, want, SIG_HEX_LEN) == 0)
            return 0;
        p += n;
    }
    snprintf(why, why_size, "Msm-Signature does not match");
    return -1;
}
