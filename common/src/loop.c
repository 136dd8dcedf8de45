/* SPDX-License-Identifier: MIT */
/* epoll event loop with a binary min-heap of caller-owned timers (redis ae.c, libuv). */
#include "msm/loop.h"
#include "msm/err.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fe_events;
    msm_loop_fd_cb *fe_cb;
    void *fe_opaque;
} fd_entry_t;

typedef struct {
    msm_loop_hook_cb *h_cb;
    void *h_opaque;
} hook_t;

struct msm_loop_s {
    int lp_epfd;
    int lp_wakefd; /* eventfd: msm_loop_stop() from a signal handler or another thread */
    fd_entry_t *lp_fds;
    int lp_nfds;
    msm_timer_t **lp_heap;
    size_t lp_heap_len, lp_heap_cap;
    uint64_t lp_timer_seq;
    hook_t *lp_hooks;
    size_t lp_nhooks;
    msm_flush_t *lp_flush_head, *lp_flush_tail; /* queued flush requests, in order */
    uint64_t lp_now_ms;
    volatile sig_atomic_t lp_stop;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void wake_cb(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop, (void)events, (void)opaque;
    uint64_t v;
    while (read(fd, &v, sizeof(v)) > 0) {
    }
}

msm_loop_t *msm_loop_new(void)
{
    msm_loop_t *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    loop->lp_epfd = epoll_create1(EPOLL_CLOEXEC);
    loop->lp_wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->lp_epfd < 0 || loop->lp_wakefd < 0)
        goto fail;
    loop->lp_now_ms = mono_ms();
    if (msm_loop_watch(loop, loop->lp_wakefd, MSM_LOOP_READ, wake_cb, NULL) != MSM_OK)
        goto fail;
    return loop;
fail:
    if (loop->lp_epfd >= 0)
        close(loop->lp_epfd);
    if (loop->lp_wakefd >= 0)
        close(loop->lp_wakefd);
    free(loop);
    return NULL;
}

void msm_loop_free(msm_loop_t *loop)
{
    if (!loop)
        return;
    for (size_t i = 0; i < loop->lp_heap_len; i++)
        loop->lp_heap[i]->tm_heap_index = SIZE_MAX;
    while (loop->lp_flush_head)
        msm_loop_flush_cancel(loop, loop->lp_flush_head);
    close(loop->lp_epfd);
    close(loop->lp_wakefd);
    free(loop->lp_fds);
    free(loop->lp_heap);
    free(loop->lp_hooks);
    free(loop);
}

static int ensure_fd_slot(msm_loop_t *loop, int fd)
{
    if (fd < loop->lp_nfds)
        return MSM_OK;
    int n = loop->lp_nfds ? loop->lp_nfds : 64;
    while (n <= fd)
        n *= 2;
    fd_entry_t *fds = realloc(loop->lp_fds, (size_t)n * sizeof(*fds));
    if (!fds)
        return MSM_ERR_NOMEM;
    memset(fds + loop->lp_nfds, 0, (size_t)(n - loop->lp_nfds) * sizeof(*fds));
    loop->lp_fds = fds;
    loop->lp_nfds = n;
    return MSM_OK;
}

int msm_loop_watch(msm_loop_t *loop, int fd, int events, msm_loop_fd_cb *cb, void *opaque)
{
    if (fd < 0)
        return MSM_ERR_INVALID;
    if (events == 0) {
        msm_loop_unwatch(loop, fd);
        return MSM_OK;
    }
    if (ensure_fd_slot(loop, fd) != MSM_OK)
        return MSM_ERR_NOMEM;
    fd_entry_t *fe = &loop->lp_fds[fd];
    struct epoll_event ev = {0};
    ev.data.fd = fd;
    if (events & MSM_LOOP_READ)
        ev.events |= EPOLLIN;
    if (events & MSM_LOOP_WRITE)
        ev.events |= EPOLLOUT;
    int op = fe->fe_events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(loop->lp_epfd, op, fd, &ev) < 0) {
        /* The fd may have been closed and reused without an unwatch: retry as the other op. */
        op = op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(loop->lp_epfd, op, fd, &ev) < 0)
            return MSM_ERR_IO;
    }
    fe->fe_events = events & (MSM_LOOP_READ | MSM_LOOP_WRITE);
    fe->fe_cb = cb;
    fe->fe_opaque = opaque;
    return MSM_OK;
}

void msm_loop_unwatch(msm_loop_t *loop, int fd)
{
    if (fd < 0 || fd >= loop->lp_nfds || !loop->lp_fds[fd].fe_events)
        return;
    epoll_ctl(loop->lp_epfd, EPOLL_CTL_DEL, fd, NULL);
    memset(&loop->lp_fds[fd], 0, sizeof(loop->lp_fds[fd]));
}

int msm_loop_watched(const msm_loop_t *loop, int fd)
{
    if (fd < 0 || fd >= loop->lp_nfds)
        return 0;
    return loop->lp_fds[fd].fe_events;
}

/* ---- timers: binary min-heap ordered by (deadline, start sequence) ---- */

void msm_timer_init(msm_timer_t *t)
{
    memset(t, 0, sizeof(*t));
    t->tm_heap_index = SIZE_MAX;
}

static int timer_less(const msm_timer_t *a, const msm_timer_t *b)
{
    if (a->tm_when_ms != b->tm_when_ms)
        return a->tm_when_ms < b->tm_when_ms;
    return a->tm_seq < b->tm_seq;
}

static void heap_set(msm_loop_t *loop, size_t i, msm_timer_t *t)
{
    loop->lp_heap[i] = t;
    t->tm_heap_index = i;
}

static void heap_up(msm_loop_t *loop, size_t i)
{
    msm_timer_t *t = loop->lp_heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_less(t, loop->lp_heap[parent]))
            break;
        heap_set(loop, i, loop->lp_heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void heap_down(msm_loop_t *loop, size_t i)
{
    msm_timer_t *t = loop->lp_heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const msm_timer_t *best = t;
        if (l < loop->lp_heap_len && timer_less(loop->lp_heap[l], best)) {
            m = l;
            best = loop->lp_heap[l];
        }
        if (r < loop->lp_heap_len && timer_less(loop->lp_heap[r], best))
            m = r;
        if (m == i)
            break;
        heap_set(loop, i, loop->lp_heap[m]);
        i = m;
    }
    heap_set(loop, i, t);
}

void msm_loop_timer_stop(msm_loop_t *loop, msm_timer_t *t)
{
    size_t i = t->tm_heap_index;
    if (i == SIZE_MAX)
        return;
    t->tm_heap_index = SIZE_MAX;
    loop->lp_heap_len--;
    if (i == loop->lp_heap_len)
        return;
    msm_timer_t *moved = loop->lp_heap[loop->lp_heap_len];
    heap_set(loop, i, moved);
    heap_up(loop, i);
    heap_down(loop, moved->tm_heap_index);
}

void msm_loop_timer_start(msm_loop_t *loop, msm_timer_t *t, uint64_t delay_ms,
                          msm_loop_timer_cb *cb, void *opaque)
{
    msm_loop_timer_stop(loop, t);
    if (loop->lp_heap_len == loop->lp_heap_cap) {
        size_t cap = loop->lp_heap_cap ? loop->lp_heap_cap * 2 : 64;
        msm_timer_t **heap = realloc(loop->lp_heap, cap * sizeof(*heap));
        if (!heap)
            abort(); /* a lost timer would be a silent hang; out of memory here is fatal */
        loop->lp_heap = heap;
        loop->lp_heap_cap = cap;
    }
    /* Fresh time, so a timer started long after the last wake-up is not fired early. */
    loop->lp_now_ms = mono_ms();
    t->tm_when_ms = loop->lp_now_ms + delay_ms;
    t->tm_seq = ++loop->lp_timer_seq;
    t->tm_cb = cb;
    t->tm_opaque = opaque;
    heap_set(loop, loop->lp_heap_len++, t);
    heap_up(loop, t->tm_heap_index);
}

static int run_timers(msm_loop_t *loop)
{
    int ran = 0;
    loop->lp_now_ms = mono_ms();
    /* Only timers due now: one started by a callback with delay 0 waits for the next turn. */
    uint64_t seq_limit = loop->lp_timer_seq;
    while (loop->lp_heap_len > 0) {
        msm_timer_t *t = loop->lp_heap[0];
        if (t->tm_when_ms > loop->lp_now_ms || t->tm_seq > seq_limit)
            break;
        msm_loop_timer_stop(loop, t);
        t->tm_cb(loop, t->tm_opaque);
        ran++;
    }
    return ran;
}

/* ---- hooks and the loop itself ---- */

int msm_loop_add_before_sleep(msm_loop_t *loop, msm_loop_hook_cb *cb, void *opaque)
{
    hook_t *hooks = realloc(loop->lp_hooks, (loop->lp_nhooks + 1) * sizeof(*hooks));
    if (!hooks)
        return MSM_ERR_NOMEM;
    hooks[loop->lp_nhooks].h_cb = cb;
    hooks[loop->lp_nhooks].h_opaque = opaque;
    loop->lp_hooks = hooks;
    loop->lp_nhooks++;
    return MSM_OK;
}

void msm_loop_remove_before_sleep(msm_loop_t *loop, msm_loop_hook_cb *cb, void *opaque)
{
    for (size_t i = 0; i < loop->lp_nhooks; i++) {
        if (loop->lp_hooks[i].h_cb == cb && loop->lp_hooks[i].h_opaque == opaque) {
            memmove(&loop->lp_hooks[i], &loop->lp_hooks[i + 1],
                    (loop->lp_nhooks - i - 1) * sizeof(hook_t));
            loop->lp_nhooks--;
            return;
        }
    }
}

void msm_flush_init(msm_flush_t *f, msm_loop_hook_cb *cb, void *opaque)
{
    *f = (msm_flush_t){NULL, 0, cb, opaque};
}

void msm_loop_flush_later(msm_loop_t *loop, msm_flush_t *f)
{
    if (f->fl_queued)
        return;
    f->fl_queued = 1;
    f->fl_next = NULL;
    *(loop->lp_flush_tail ? &loop->lp_flush_tail->fl_next : &loop->lp_flush_head) = f;
    loop->lp_flush_tail = f;
}

/* A walk of the queue: it holds the few clients with output this turn, and a queued
 * request is rarely cancelled (its client went away). */
void msm_loop_flush_cancel(msm_loop_t *loop, msm_flush_t *f)
{
    if (!f->fl_queued)
        return;
    msm_flush_t *prev = NULL;
    for (msm_flush_t **at = &loop->lp_flush_head; *at; prev = *at, at = &(*at)->fl_next) {
        if (*at != f)
            continue;
        *at = f->fl_next;
        if (loop->lp_flush_tail == f)
            loop->lp_flush_tail = prev;
        break;
    }
    f->fl_next = NULL;
    f->fl_queued = 0;
}

int msm_loop_run_once(msm_loop_t *loop, int max_wait_ms)
{
    /* Hooks may remove themselves: iterate over a count taken before calling any. */
    for (size_t i = 0; i < loop->lp_nhooks; i++) {
        size_t before = loop->lp_nhooks;
        loop->lp_hooks[i].h_cb(loop, loop->lp_hooks[i].h_opaque);
        if (loop->lp_nhooks < before)
            i--;
    }
    /* Then the output buffered this turn, hooks' included; a flush may queue another. */
    while (loop->lp_flush_head) {
        msm_flush_t *f = loop->lp_flush_head;
        if (!(loop->lp_flush_head = f->fl_next))
            loop->lp_flush_tail = NULL;
        f->fl_next = NULL;
        f->fl_queued = 0;
        f->fl_cb(loop, f->fl_opaque);
    }

    int wait = max_wait_ms;
    if (loop->lp_heap_len > 0) {
        uint64_t now = mono_ms();
        uint64_t when = loop->lp_heap[0]->tm_when_ms;
        int until = when <= now ? 0 : (int)(when - now > 3600000 ? 3600000 : when - now);
        if (wait < 0 || until < wait)
            wait = until;
    }
    if (loop->lp_stop)
        wait = 0;

    struct epoll_event evs[256];
    int n = epoll_wait(loop->lp_epfd, evs, 256, wait);
    if (n < 0) {
        if (errno != EINTR)
            return MSM_ERR_IO;
        n = 0;
    }
    loop->lp_now_ms = mono_ms();
    int ran = 0;
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        /* An earlier callback in this batch may have unwatched (and closed) this fd. */
        if (fd >= loop->lp_nfds || !loop->lp_fds[fd].fe_events)
            continue;
        fd_entry_t fe = loop->lp_fds[fd];
        int events = 0;
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            events |= MSM_LOOP_READ;
        if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            events |= MSM_LOOP_WRITE;
        if (evs[i].events & (EPOLLHUP | EPOLLERR))
            events |= MSM_LOOP_ERROR;
        events &= fe.fe_events | MSM_LOOP_ERROR;
        if (events) {
            fe.fe_cb(loop, fd, events, fe.fe_opaque);
            ran++;
        }
    }
    ran += run_timers(loop);
    return ran;
}

void msm_loop_run(msm_loop_t *loop)
{
    loop->lp_stop = 0;
    while (!loop->lp_stop) {
        if (msm_loop_run_once(loop, -1) < 0)
            break;
    }
}

void msm_loop_stop(msm_loop_t *loop)
{
    loop->lp_stop = 1;
    uint64_t one = 1;
    ssize_t rc = write(loop->lp_wakefd, &one, sizeof(one));
    (void)rc;
}

int msm_loop_run_until(msm_loop_t *loop, int (*done)(void *arg), void *arg, uint64_t timeout_ms)
{
    uint64_t deadline = mono_ms() + timeout_ms;
    while (!done(arg)) {
        uint64_t now = mono_ms();
        if (now >= deadline)
            return MSM_ERR_TIMEOUT;
        uint64_t left = deadline - now;
        if (msm_loop_run_once(loop, left > 50 ? 50 : (int)left) < 0)
            return MSM_ERR_IO;
    }
    return MSM_OK;
}

uint64_t msm_loop_now_ms(const msm_loop_t *loop)
{
    return loop->lp_now_ms;
}
