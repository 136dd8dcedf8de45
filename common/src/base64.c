/* SPDX-License-Identifier: MIT */
/* RFC 4648 base64 with padding; the decoder rejects anything non-canonical. */
#include "msm/base64.h"
#include "msm/err.h"

#include <stdint.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t msm_base64_encoded_size(size_t n)
{
    return (n + 2) / 3 * 4 + 1;
}

size_t msm_base64_encode(const void *in, size_t n, char *out)
{
    const uint8_t *p = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = alphabet[v >> 18];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int sextet(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int msm_base64_decode(const char *in, size_t n, void *out, size_t *out_len)
{
    uint8_t *o = out;
    size_t len = 0;
    if (n % 4 != 0)
        return MSM_ERR_PARSE;
    for (size_t i = 0; i < n; i += 4) {
        int pad = 0;
        if (i + 4 == n) {
            pad = (in[n - 1] == '=') + (in[n - 2] == '=');
            if (pad == 1 && in[n - 2] == '=')
                return MSM_ERR_PARSE;
        }
        int a = sextet(in[i]), b = sextet(in[i + 1]);
        int c = pad >= 2 ? 0 : sextet(in[i + 2]);
        int d = pad >= 1 ? 0 : sextet(in[i + 3]);
        if (a < 0 || b < 0 || c < 0 || d < 0)
            return MSM_ERR_PARSE;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        /* Canonical form only: the bits that padding drops must be zero. */
        if ((pad == 2 && (v & 0xffff)) || (pad == 1 && (v & 0xff)))
            return MSM_ERR_PARSE;
        o[len++] = (uint8_t)(v >> 16);
        if (pad < 2)
            o[len++] = (uint8_t)(v >> 8);
        if (pad < 1)
            o[len++] = (uint8_t)v;
    }
    *out_len = len;
    return MSM_OK;
}

/* ---- lenient: standard or URL-safe alphabet, padding optional ---- */

static int lenient_sextet(char c)
{
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return sextet(c);
}

int msm_base64_lenient_measure(const char *in, size_t *n, size_t *out_len)
{
    size_t len = *n, pad = 0;
    while (len > 0 && in[len - 1] == '=' && pad < 2) {
        len--;
        pad++;
    }
    if ((pad && (len + pad) % 4 != 0) || len % 4 == 1)
        return MSM_ERR_PARSE;
    for (size_t i = 0; i < len; i++) {
        if (lenient_sextet(in[i]) < 0)
            return MSM_ERR_PARSE;
    }
    *n = len;
    *out_len = len / 4 * 3 + (len % 4 == 3 ? 2 : len % 4 == 2 ? 1 : 0);
    return MSM_OK;
}

void msm_base64_lenient_decode(const char *in, size_t n, void *out)
{
    uint8_t *o = out;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 6 | (uint32_t)lenient_sextet(in[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (uint8_t)(acc >> bits);
        }
    }
}
