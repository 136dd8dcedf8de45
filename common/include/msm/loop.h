/* SPDX-License-Identifier: MIT */
/* The event loop every msm daemon runs on: epoll for file descriptors, a min-heap of
 * timers, before-sleep hooks (where batched work such as acknowledgements is flushed) and
 * flush requests (buffered output written right after the hooks).
 * One loop per thread; every function here runs on the loop's own thread. */
#ifndef MSM_LOOP_H
#define MSM_LOOP_H

#include <stddef.h>
#include <stdint.h>

typedef struct msm_loop_s msm_loop_t;

#define MSM_LOOP_READ  0x1
#define MSM_LOOP_WRITE 0x2
#define MSM_LOOP_ERROR 0x4 /* reported only: hang-up or error on the fd */

typedef void msm_loop_fd_cb(msm_loop_t *loop, int fd, int events, void *opaque);
typedef void msm_loop_timer_cb(msm_loop_t *loop, void *opaque);
typedef void msm_loop_hook_cb(msm_loop_t *loop, void *opaque);

/** A timer lives in its owner's storage (libuv style): init once, start/stop at will. */
typedef struct msm_timer_s {
    uint64_t tm_when_ms;      /* monotonic deadline while active */
    size_t tm_heap_index;     /* position in the loop's heap, SIZE_MAX when inactive */
    uint64_t tm_seq;          /* tie-breaker: timers due together fire in start order */
    msm_loop_timer_cb *tm_cb;
    void *tm_opaque;
} msm_timer_t;

/** A flush request (caller-owned, like a timer): output a client has buffered, written
 *  once per loop turn after the before-sleep hooks (which may still add to it) and before
 *  the wait, instead of on the socket's next writable event. */
typedef struct msm_flush_s {
    struct msm_flush_s *fl_next; /* the loop's queue while queued */
    int fl_queued;
    msm_loop_hook_cb *fl_cb;
    void *fl_opaque;
} msm_flush_t;

/** @brief Creates a loop. @returns NULL on failure (errno set). */
msm_loop_t *msm_loop_new(void);

/** @brief Frees the loop. Watched fds are not closed; active timers are forgotten. */
void msm_loop_free(msm_loop_t *loop);

/**
 * @brief Watches @p fd for @p events (MSM_LOOP_READ|MSM_LOOP_WRITE), replacing any earlier
 * interest and callback for it. events == 0 stops watching.
 * @returns MSM_OK or MSM_ERR_IO.
 */
int msm_loop_watch(msm_loop_t *loop, int fd, int events, msm_loop_fd_cb *cb, void *opaque);

/** @brief Stops watching @p fd (safe if it is not watched). Call before closing the fd. */
void msm_loop_unwatch(msm_loop_t *loop, int fd);

/** @brief Current interest mask of @p fd (0 if not watched). */
int msm_loop_watched(const msm_loop_t *loop, int fd);

void msm_timer_init(msm_timer_t *t);

/** @brief (Re)starts @p t to fire once after @p delay_ms. */
void msm_loop_timer_start(msm_loop_t *loop, msm_timer_t *t, uint64_t delay_ms,
                          msm_loop_timer_cb *cb, void *opaque);

/** @brief Stops @p t if active; safe to call on an inactive timer or from its callback. */
void msm_loop_timer_stop(msm_loop_t *loop, msm_timer_t *t);

static inline int msm_timer_active(const msm_timer_t *t)
{
    return t->tm_heap_index != SIZE_MAX;
}

/**
 * @brief Adds a hook run before every wait for events (redis `beforeSleep`): flush batched
 * writes there. @returns MSM_OK or MSM_ERR_NOMEM.
 */
int msm_loop_add_before_sleep(msm_loop_t *loop, msm_loop_hook_cb *cb, void *opaque);
void msm_loop_remove_before_sleep(msm_loop_t *loop, msm_loop_hook_cb *cb, void *opaque);

void msm_flush_init(msm_flush_t *f, msm_loop_hook_cb *cb, void *opaque);

/** @brief Queues @p f: its callback runs once, before the loop next waits for events (after
 *  that turn's before-sleep hooks). Queuing a queued request does nothing. */
void msm_loop_flush_later(msm_loop_t *loop, msm_flush_t *f);

/** @brief Takes @p f off the queue (safe when it is not queued). */
void msm_loop_flush_cancel(msm_loop_t *loop, msm_flush_t *f);

/**
 * @brief Runs hooks, waits at most @p max_wait_ms (-1: until something happens) and
 * dispatches what is ready. @returns the number of callbacks run, or MSM_ERR_IO.
 */
int msm_loop_run_once(msm_loop_t *loop, int max_wait_ms);

/** @brief Runs until msm_loop_stop() is called (from a callback or a signal handler flag). */
void msm_loop_run(msm_loop_t *loop);

/** @brief Makes msm_loop_run() return after the current iteration. Async-signal-safe. */
void msm_loop_stop(msm_loop_t *loop);

/**
 * @brief Runs until @p done(arg) is true or @p timeout_ms passes (for tests and tools).
 * @returns MSM_OK when done, MSM_ERR_TIMEOUT otherwise.
 */
int msm_loop_run_until(msm_loop_t *loop, int (*done)(void *arg), void *arg, uint64_t timeout_ms);

/** @brief Monotonic milliseconds, cached once per loop iteration. */
uint64_t msm_loop_now_ms(const msm_loop_t *loop);

#endif
