/* SPDX-License-Identifier: MIT */
/* Exponential backoff with full jitter, and a thread-local xoshiro256** PRNG seeded from
 * getrandom (splitmix64 expands the seed into the four state words). */
#include "msm/backoff.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint64_t s[4];
    int seeded;
} rng_t;

static _Thread_local rng_t tls_rng;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A forked child starts with a copy of the parent's state; the handler runs in the only
 * thread the child has, so clearing that thread's flag is enough to reseed it. */
static void child_after_fork(void)
{
    tls_rng.seeded = 0;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, child_after_fork);
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void seed(rng_t *r)
{
    pthread_once(&atfork_once, register_atfork);
    uint64_t seedv = 0;
    if (getrandom(&seedv, sizeof(seedv), GRND_NONBLOCK) != (ssize_t)sizeof(seedv)) {
        /* Early boot without entropy: mix what differs between processes and threads. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seedv = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^
                (uint64_t)(uintptr_t)r;
    }
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seedv);
    r->seeded = 1;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t msm_rand_u64(void)
{
    rng_t *r = &tls_rng;
    if (!r->seeded)
        seed(r);
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t msm_rand_below(uint64_t n)
{
    if (n == 0)
        return 0;
    /* Lemire's multiply-and-reject: the high word of x*n is uniform once the low word
     * clears the bias threshold (2^64 mod n). */
    unsigned __int128 m = (unsigned __int128)msm_rand_u64() * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (unsigned __int128)msm_rand_u64() * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double msm_rand_double(void)
{
    return (double)(msm_rand_u64() >> 11) * 0x1.0p-53;
}

uint64_t msm_backoff_cap_ms(uint32_t attempt, uint64_t min_ms, uint64_t max_ms)
{
    if (attempt == 0)
        attempt = 1;
    uint32_t shift = attempt - 1;
    if (min_ms >= max_ms)
        return max_ms;
    /* min * 2^shift <= max  <=>  min <= max >> shift, which cannot overflow. */
    if (shift >= 64 || min_ms > (max_ms >> shift))
        return max_ms;
    return min_ms << shift;
}

uint64_t msm_backoff_delay_ms(uint32_t attempt, uint64_t min_ms, uint64_t max_ms)
{
    uint64_t cap = msm_backoff_cap_ms(attempt, min_ms, max_ms);
    if (cap == UINT64_MAX)
        return msm_rand_u64();
    return msm_rand_below(cap + 1);
}
