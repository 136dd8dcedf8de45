/* SPDX-License-Identifier: MIT */
/* UUIDv7 (RFC 9562). Layout: 48-bit unix ms | ver 7 | 12 counter bits (rand_a) | variant
 * 0b10 | 30 more counter bits | 32 random bits. The counter starts at a random value below
 * 2^41 in each new millisecond and goes up by one per id; should it ever run out, the
 * timestamp is advanced by a millisecond (RFC 9562 §6.2, method 1). */
#include "hex_int.h"
#include "msm/id.h"
#include "msm/backoff.h"
#include "msm/err.h"
#include "msm/time.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>

#define COUNTER_BITS 42
#define COUNTER_MAX  ((UINT64_C(1) << COUNTER_BITS) - 1)

/* The one piece of process-wide state: ids must be ordered across threads. */
static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;
static uint64_t id_last_ms;
static uint64_t id_counter;

static void id_child_after_fork(void)
{
    /* Another thread of the parent may have held the lock at fork time. */
    pthread_mutex_init(&id_lock, NULL);
    id_last_ms = 0;
    id_counter = 0;
}

static void id_register_atfork(void)
{
    pthread_atfork(NULL, NULL, id_child_after_fork);
}

void msm_id_new(msm_id_t *out)
{
    pthread_once(&id_once, id_register_atfork);
    int64_t now = msm_time_unix_ms();
    uint64_t ms = now < 0 ? 0 : (uint64_t)now;
    uint64_t rnd = msm_rand_u64();

    pthread_mutex_lock(&id_lock);
    if (ms > id_last_ms) {
        id_last_ms = ms;
        id_counter = msm_rand_u64() >> (64 - (COUNTER_BITS - 1));
    } else if (id_counter < COUNTER_MAX) {
        /* Same millisecond, or the wall clock went back: keep the last timestamp. */
        id_counter++;
    } else {
        id_last_ms++;
        id_counter = msm_rand_u64() >> (64 - (COUNTER_BITS - 1));
    }
    uint64_t ts = id_last_ms & ((UINT64_C(1) << 48) - 1);
    uint64_t ctr = id_counter;
    pthread_mutex_unlock(&id_lock);

    uint8_t *b = out->b;
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ts >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | ((ctr >> 38) & 0x0f));
    b[7] = (uint8_t)(ctr >> 30);
    b[8] = (uint8_t)(0x80 | ((ctr >> 24) & 0x3f));
    b[9] = (uint8_t)(ctr >> 16);
    b[10] = (uint8_t)(ctr >> 8);
    b[11] = (uint8_t)ctr;
    b[12] = (uint8_t)(rnd >> 24);
    b[13] = (uint8_t)(rnd >> 16);
    b[14] = (uint8_t)(rnd >> 8);
    b[15] = (uint8_t)rnd;
}

void msm_id_derive(int64_t ts_ms, const void *seed, size_t seed_len, msm_id_t *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(seed, seed_len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 16)
        memset(md, 0, sizeof(md)); /* only when libcrypto is broken: still a valid id */
    uint64_t ts = (uint64_t)(ts_ms < 0 ? 0 : ts_ms) & ((UINT64_C(1) << 48) - 1);
    uint8_t *b = out->b;
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ts >> (40 - 8 * i));
    memcpy(b + 6, md, 10);
    b[6] = (uint8_t)(0x70 | (b[6] & 0x0f));
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));
}

char *msm_id_format(const msm_id_t *id, char *buf)
{
    static const char hex[] = "0123456789abcdef";
    size_t p = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            buf[p++] = '-';
        buf[p++] = hex[id->b[i] >> 4];
        buf[p++] = hex[id->b[i] & 0x0f];
    }
    buf[p] = '\0';
    return buf;
}

char *msm_id_new_str(char *buf)
{
    msm_id_t id;
    msm_id_new(&id);
    return msm_id_format(&id, buf);
}

int msm_id_parse_n(const char *s, size_t len, msm_id_t *out)
{
    msm_id_t id;
    if (!s || len != MSM_ID_STR_LEN)
        return MSM_ERR_PARSE;
    size_t p = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            if (s[p++] != '-')
                return MSM_ERR_PARSE;
        }
        int hi = msm__hex_value(s[p]), lo = msm__hex_value(s[p + 1]);
        if (hi < 0 || lo < 0)
            return MSM_ERR_PARSE;
        id.b[i] = (uint8_t)(hi << 4 | lo);
        p += 2;
    }
    if (out)
        *out = id;
    return MSM_OK;
}

int msm_id_parse(const char *s, msm_id_t *out)
{
    if (!s)
        return MSM_ERR_PARSE;
    return msm_id_parse_n(s, strnlen(s, MSM_ID_STR_LEN + 1), out);
}

int msm_id_version(const msm_id_t *id)
{
    return id->b[6] >> 4;
}

int64_t msm_id_timestamp_ms(const msm_id_t *id)
{
    if (msm_id_version(id) != 7 || (id->b[8] & 0xc0) != 0x80)
        return -1;
    uint64_t ts = 0;
    for (int i = 0; i < 6; i++)
        ts = ts << 8 | id->b[i];
    return (int64_t)ts;
}

int msm_id_compare(const msm_id_t *a, const msm_id_t *b)
{
    return memcmp(a->b, b->b, sizeof(a->b));
}
