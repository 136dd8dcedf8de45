/* SPDX-License-Identifier: MIT */
/* Msm-Signature (docs/push.md "Signatures"): t=<unix s>,v1=<hex>,v2=<hex>. v2 signs t, ce-id,
 * Msm-Subscription, Msm-Attempt, Msm-Deadline and the body's SHA-256; v1 only t, ce-id and
 * the body. A v2 entry, when there is one, must match: v1 alone is accepted only from a
 * sender that sends no v2 (one release of transition). The timestamp inside the signed text
 * plus a tolerance window keeps a captured request from being replayed much later (the
 * replay cache, replay.c, covers the window itself); any configured secret may match and
 * several v1= or v2= entries may be sent, for secret rotation on either side. */
#include "lambda_int.h"
#include "msm/signature.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
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

/* The t= text of @p header into @p tbuf. @returns 0, or -1 when absent or too long. */
static int find_t(const char *header, char *tbuf, size_t n, int *nv1, int *nv2)
{
    const char *t = NULL;
    size_t tlen = 0;
    *nv1 = *nv2 = 0;
    /* The parts may come in any order; unknown ones (a later version) are skipped. */
    for (const char *p = header; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t len = strcspn(p, ",");
        if (len > 2 && strncmp(p, "t=", 2) == 0) {
            t = p + 2;
            tlen = len - 2;
            while (tlen > 0 && t[tlen - 1] == ' ')
                tlen--;
        } else if (len > 3 && strncmp(p, "v1=", 3) == 0) {
            (*nv1)++;
        } else if (len > 3 && strncmp(p, "v2=", 3) == 0) {
            (*nv2)++;
        }
        p += len;
    }
    if (!t || tlen == 0 || tlen >= n)
        return -1;
    memcpy(tbuf, t, tlen);
    tbuf[tlen] = '\0';
    return 0;
}

/* Whether any "<version>=<hex>" part of @p header equals @p want. */
static int any_matches(const char *header, const char *version, const char *want)
{
    int found = 0;
    for (const char *p = header; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        char got[SIG_HEX_LEN + 1];
        size_t vl = n;
        while (vl > 3 && p[vl - 1] == ' ')
            vl--;
        /* Every part is compared (in constant time): no early exit on a match. */
        if (n > 3 && strncmp(p, version, 2) == 0 && p[2] == '=' &&
            normalise_hex(p + 3, vl - 3, got) == 0)
            found |= CRYPTO_memcmp(got, want, SIG_HEX_LEN) == 0;
        p += n;
    }
    return found;
}

/* The replay key: SHA-256 of what the matching signature covers, so that neither an unsigned
 * header nor the choice among several signatures tells two copies of one push apart. */
static int replay_key(const msm_signature_fields_t *f,
                      const char *body_sha,
                      int version,
                      unsigned char key[LM_REPLAY_KEY_LEN])
{
    char stack[1024], *text = stack;
    size_t n;
    if (version == 2) {
        n = msm_signature_v2_text(f, body_sha, stack, sizeof(stack));
        if (n >= sizeof(stack)) {
            text = malloc(n + 1);
            if (!text)
                return -1;
            msm_signature_v2_text(f, body_sha, text, n + 1);
        }
    } else {
        int w = snprintf(stack, sizeof(stack), "v1\n%s\n%s\n%s", f->sf_t, f->sf_id, body_sha);
        if (w < 0)
            return -1;
        n = (size_t)w;
        if (n >= sizeof(stack)) {
            text = malloc(n + 1);
            if (!text)
                return -1;
            snprintf(text, n + 1, "v1\n%s\n%s\n%s", f->sf_t, f->sf_id, body_sha);
        }
    }
    unsigned outlen = 0;
    int ok = EVP_Digest(text, n, key, &outlen, EVP_sha256(), NULL) && outlen == 32;
    if (text != stack)
        free(text);
    return ok ? 0 : -1;
}

int msm__signature_verify(const char *const *secrets,
                          size_t nsecrets,
                          const char *header,
                          const msm_signature_fields_t *fields,
                          const void *body,
                          size_t len,
                          int64_t now_s,
                          int tolerance_s,
                          lm_sig_result_t *res,
                          char *why,
                          size_t why_size)
{
    if (!header || !*header) {
        snprintf(why, why_size, "the Msm-Signature header is required");
        return -1;
    }
    char tbuf[24];
    int nv1, nv2;
    if (find_t(header, tbuf, sizeof(tbuf), &nv1, &nv2) != 0 || nv1 + nv2 == 0) {
        snprintf(why, why_size, "Msm-Signature must be t=<unix seconds>,v1=<hex>,v2=<hex>");
        return -1;
    }
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
    msm_signature_fields_t f = *fields;
    f.sf_t = tbuf;
    char body_sha[SIG_HEX_LEN + 1], want[SIG_HEX_LEN + 1];
    if (msm_signature_sha256_hex(body, len, body_sha) != MSM_OK) {
        snprintf(why, why_size, "SHA-256 is unavailable");
        return -1;
    }
    /* A v2 part, when present, is the only one looked at: a v1 match beside a wrong v2
     * means altered headers. */
    int version = nv2 > 0 ? 2 : 1, ok = 0;
    for (size_t i = 0; i < nsecrets && !ok; i++) {
        int rc = version == 2
                     ? msm_signature_v2(secrets[i], &f, body_sha, want)
                     : msm_signature_v1(secrets[i], tbuf, strlen(tbuf), f.sf_id, body, len, want);
        if (rc != MSM_OK) {
            snprintf(why, why_size,
                     "Msm-Signature: cannot compute (a line feed in a signed header, or no "
                     "HMAC-SHA256)");
            return -1;
        }
        ok = any_matches(header, version == 2 ? "v2" : "v1", want);
    }
    if (!ok) {
        snprintf(why, why_size, "Msm-Signature does not match (%s)", version == 2 ? "v2" : "v1");
        return -1;
    }
    res->sr_version = version;
    res->sr_t = ts;
    if (replay_key(&f, body_sha, version, res->sr_key) != 0) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    return 0;
}
