/* SPDX-License-Identifier: MIT */
/* Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
 * Jitter"), and the fast thread-local PRNG behind it (xoshiro256**, seeded by getrandom),
 * which ids and sampling use too. Not for secrets: use getrandom or OpenSSL for those. */
#ifndef MSM_BACKOFF_H
#define MSM_BACKOFF_H

#include <stdint.h>

/**
 * @brief The upper bound of the delay before retry number @p attempt:
 * min(max_ms, min_ms * 2^(attempt-1)), computed without overflow for any attempt.
 * @param attempt 1 for the first retry; 0 is treated as 1
 * @param min_ms the base delay
 * @param max_ms the cap; when max_ms < min_ms the result is max_ms
 * @remark Pure function, thread-safe.
 */
uint64_t msm_backoff_cap_ms(uint32_t attempt, uint64_t min_ms, uint64_t max_ms);

/**
 * @brief Full-jitter delay: uniform in [0, msm_backoff_cap_ms(attempt, min_ms, max_ms)]
 * (both ends included).
 * @remark Thread-safe (thread-local PRNG).
 */
uint64_t msm_backoff_delay_ms(uint32_t attempt, uint64_t min_ms, uint64_t max_ms);

/**
 * @brief 64 uniformly random bits from this thread's xoshiro256** generator. The state is
 * seeded from getrandom() on first use in each thread and again in a child after fork(),
 * so forked workers never repeat their parent's sequence.
 * @remark Thread-safe (thread-local state), lock-free, no system call after seeding.
 */
uint64_t msm_rand_u64(void);

/** @brief Uniform in [0, n) without modulo bias; 0 when n == 0. Thread-safe. */
uint64_t msm_rand_below(uint64_t n);

/** @brief Uniform double in [0, 1) with 53 random bits. Thread-safe. */
double msm_rand_double(void);

#endif
