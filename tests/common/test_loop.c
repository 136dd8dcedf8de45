/* SPDX-License-Identifier: MIT */
/* The event loop: fd readiness, timer order and cancellation, hooks, stop. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/loop.h"

#include <stdlib.h>
#include <unistd.h>

static int fired[16];
static int nfired;

static void record_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    fired[nfired++] = (int)(intptr_t)opaque;
}

static void test_timers_fire_in_deadline_order(void)
{
    msm_loop_t *loop = msm_loop_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(loop);
    msm_timer_t t[5];
    const int delays[5] = {40, 10, 30, 0, 20};
    nfired = 0;
    for (int i = 0; i < 5; i++) {
        msm_timer_init(&t[i]);
        msm_loop_timer_start(loop, &t[i], (uint64_t)delays[i], record_timer, (void *)(intptr_t)i);
    }
    msm_test_spin(loop, 120);
    CU_ASSERT_EQUAL(nfired, 5);
    const int want[5] = {3, 1, 4, 2, 0};
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(fired[i], want[i]);
    msm_loop_free(loop);
}

static void test_timer_stop_and_restart(void)
{
    msm_loop_t *loop = msm_loop_new();
    msm_timer_t a, b, c;
    msm_timer_init(&a);
    msm_timer_init(&b);
    msm_timer_init(&c);
    nfired = 0;
    msm_loop_timer_start(loop, &a, 10, record_timer, (void *)1);
    msm_loop_timer_start(loop, &b, 15, record_timer, (void *)2);
    msm_loop_timer_start(loop, &c, 20, record_timer, (void *)3);
    CU_ASSERT_TRUE(msm_timer_active(&b));
    msm_loop_timer_stop(loop, &b);
    CU_ASSERT_FALSE(msm_timer_active(&b));
    msm_loop_timer_stop(loop, &b); /* twice is harmless */
    msm_loop_timer_start(loop, &a, 30, record_timer, (void *)4); /* restart moves it */
    msm_test_spin(loop, 80);
    CU_ASSERT_EQUAL(nfired, 2);
    CU_ASSERT_EQUAL(fired[0], 3);
    CU_ASSERT_EQUAL(fired[1], 4);
    msm_loop_free(loop);
}

static void test_timer_not_early(void)
{
    msm_loop_t *loop = msm_loop_new();
    msm_timer_t t;
    msm_timer_init(&t);
    nfired = 0;
    uint64_t start = msm_loop_now_ms(loop);
    msm_loop_timer_start(loop, &t, 50, record_timer, (void *)7);
    while (nfired == 0)
        msm_loop_run_once(loop, -1);
    CU_ASSERT_TRUE(msm_loop_now_ms(loop) - start >= 50);
    msm_loop_free(loop);
}

static int reads;
static void on_readable(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop, (void)opaque;
    CU_ASSERT_TRUE(events & MSM_LOOP_READ);
    char buf[16];
    if (read(fd, buf, sizeof(buf)) > 0)
        reads++;
}

static void test_fd_readiness(void)
{
    msm_loop_t *loop = msm_loop_new();
    int p[2];
    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    reads = 0;
    CU_ASSERT_EQUAL(msm_loop_watch(loop, p[0], MSM_LOOP_READ, on_readable, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_loop_watched(loop, p[0]), MSM_LOOP_READ);
    msm_loop_run_once(loop, 10);
    CU_ASSERT_EQUAL(reads, 0);
    CU_ASSERT_EQUAL(write(p[1], "x", 1), 1);
    msm_loop_run_once(loop, 1000);
    CU_ASSERT_EQUAL(reads, 1);
    msm_loop_unwatch(loop, p[0]);
    CU_ASSERT_EQUAL(msm_loop_watched(loop, p[0]), 0);
    CU_ASSERT_EQUAL(write(p[1], "y", 1), 1);
    msm_loop_run_once(loop, 20);
    CU_ASSERT_EQUAL(reads, 1);
    close(p[0]);
    close(p[1]);
    msm_loop_free(loop);
}

static int hook_runs;
static void hook(msm_loop_t *loop, void *opaque)
{
    (void)opaque;
    if (++hook_runs == 2)
        msm_loop_stop(loop);
}

static void test_before_sleep_and_stop(void)
{
    msm_loop_t *loop = msm_loop_new();
    hook_runs = 0;
    CU_ASSERT_EQUAL(msm_loop_add_before_sleep(loop, hook, NULL), MSM_OK);
    msm_timer_t t;
    msm_timer_init(&t);
    msm_loop_timer_start(loop, &t, 5, record_timer, NULL);
    msm_loop_run(loop); /* the timer wakes it once; the second hook run stops it */
    CU_ASSERT_EQUAL(hook_runs, 2);
    msm_loop_remove_before_sleep(loop, hook, NULL);
    msm_loop_run_once(loop, 0);
    CU_ASSERT_EQUAL(hook_runs, 2);
    msm_loop_free(loop);
}

/* Flush requests: after the hooks (a hook's output goes out in the same turn), once per
 * queuing however often queued, in queuing order, not after a cancel. */
static char flushed[8];
static size_t nflushed;
static msm_flush_t flush_a, flush_b;

static void on_flush(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    if (nflushed < sizeof(flushed) - 1)
        flushed[nflushed++] = *(const char *)opaque;
}

static void hook_queues_b(msm_loop_t *loop, void *opaque)
{
    (void)opaque;
    msm_loop_flush_later(loop, &flush_b);
}

static void test_flush_after_hooks(void)
{
    msm_loop_t *loop = msm_loop_new();
    msm_flush_init(&flush_a, on_flush, "a");
    msm_flush_init(&flush_b, on_flush, "b");
    memset(flushed, 0, sizeof(flushed));
    nflushed = 0;
    msm_loop_flush_later(loop, &flush_a);
    msm_loop_flush_later(loop, &flush_a);
    CU_ASSERT_EQUAL(msm_loop_add_before_sleep(loop, hook_queues_b, NULL), MSM_OK);
    msm_loop_run_once(loop, 0);
    CU_ASSERT_STRING_EQUAL(flushed, "ab");
    msm_loop_remove_before_sleep(loop, hook_queues_b, NULL);
    msm_loop_flush_later(loop, &flush_b);
    msm_loop_flush_later(loop, &flush_a);
    msm_loop_flush_cancel(loop, &flush_b);
    msm_loop_flush_cancel(loop, &flush_b);
    msm_loop_run_once(loop, 0);
    CU_ASSERT_STRING_EQUAL(flushed, "aba");
    msm_loop_run_once(loop, 0);
    CU_ASSERT_STRING_EQUAL(flushed, "aba");
    /* The tail taken off and queued again: still after the head. */
    msm_loop_flush_later(loop, &flush_a);
    msm_loop_flush_later(loop, &flush_b);
    msm_loop_flush_cancel(loop, &flush_b);
    msm_loop_flush_later(loop, &flush_b);
    msm_loop_run_once(loop, 0);
    CU_ASSERT_STRING_EQUAL(flushed, "abaab");
    msm_loop_flush_later(loop, &flush_a); /* queued when the loop goes: forgotten */
    msm_loop_free(loop);
    CU_ASSERT_FALSE(flush_a.fl_queued);
}

static void test_many_timers_heap(void)
{
    msm_loop_t *loop = msm_loop_new();
    enum { N = 2000 };
    msm_timer_t *t = calloc(N, sizeof(*t));
    nfired = 0;
    for (int i = 0; i < N; i++) {
        msm_timer_init(&t[i]);
        msm_loop_timer_start(loop, &t[i], (uint64_t)(1000 + (i * 7919) % 1000), record_timer,
                             NULL);
    }
    /* Stop every other timer, from the middle of the heap. */
    for (int i = 0; i < N; i += 2)
        msm_loop_timer_stop(loop, &t[i]);
    int active = 0;
    for (int i = 0; i < N; i++)
        active += msm_timer_active(&t[i]);
    CU_ASSERT_EQUAL(active, N / 2);
    for (int i = 1; i < N; i += 2)
        msm_loop_timer_stop(loop, &t[i]);
    msm_loop_run_once(loop, 0);
    CU_ASSERT_EQUAL(nfired, 0);
    free(t);
    msm_loop_free(loop);
}

static CU_TestInfo loop_tests[] = {
    {"timers fire in deadline order", test_timers_fire_in_deadline_order},
    {"timer stop and restart", test_timer_stop_and_restart},
    {"timer never fires early", test_timer_not_early},
    {"fd readiness and unwatch", test_fd_readiness},
    {"before-sleep hooks and stop", test_before_sleep_and_stop},
    {"heap of 2000 timers with removals", test_many_timers_heap},
    {"flush requests run after the hooks, once each", test_flush_after_hooks},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"loop", NULL, NULL, NULL, NULL, loop_tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
