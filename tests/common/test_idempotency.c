/* SPDX-License-Identifier: MIT */
/* Idempotency keys against a real redis-server: a claim is claimed, busy (in flight) or a
 * duplicate of the committed id; commit keeps it for the window, release frees it; only the
 * claimer's own claims change; a claim lapses after its pending time; keys of one topic share
 * a hash slot. */
#include "msm_test.h"

#include "msm/err.h"
#include "msm/idempotency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static msm_test_redis_t srv;

typedef struct {
    int done, err;
    msm_idem_result_t res[8];
    size_t n;
} wait_t;

static void
on_claimed(int err, const char *why, const msm_idem_result_t *res, size_t n, void *opaque)
{
    (void)why;
    wait_t *w = opaque;
    w->err = err;
    w->n = n;
    if (res && n <= 8)
        memcpy(w->res, res, n * sizeof(*res));
    w->done = 1;
}

static void on_settled(int err, const char *why, void *opaque)
{
    (void)why;
    wait_t *w = opaque;
    w->err = err;
    w->done = 1;
}

typedef struct {
    msm_loop_t *loop;
    msm_redis_t *r;
    msm_idem_t *idem;
    char ns[64];
} fx_t;

static void claim(fx_t *f,
                  const char *const *keys,
                  const char *const *ids,
                  size_t n,
                  uint64_t pending_ms,
                  wait_t *w)
{
    memset(w, 0, sizeof(*w));
    CU_ASSERT_EQUAL_FATAL(
        msm_idem_claim(f->idem, f->r, "orders", keys, ids, n, pending_ms, on_claimed, w), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_wait_flag(f->loop, &w->done, 5000), 0);
    CU_ASSERT_EQUAL(w->err, MSM_OK);
    CU_ASSERT_EQUAL(w->n, n);
}

static void settle(fx_t *f, const char *const *keys, const char *const *ids, size_t n, int commit)
{
    wait_t w = {0};
    CU_ASSERT_EQUAL_FATAL(
        msm_idem_settle(f->idem, f->r, "orders", keys, ids, n, commit, 60000, on_settled, &w),
        MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_wait_flag(f->loop, &w.done, 5000), 0);
    CU_ASSERT_EQUAL(w.err, MSM_OK);
}

static void test_claim_settle(void)
{
    fx_t f = {0};
    f.loop = msm_loop_new();
    msm_redis_conf_t rc = {.url = srv.url, .ns = msm_test_namespace(f.ns, sizeof(f.ns))};
    char err[256];
    f.r = msm_redis_new(f.loop, &rc, err, sizeof(err));
    f.idem = msm_idem_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.r);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f.idem);
    const char *keys[] = {"k1", "k2", "k3"}, *ids[] = {"id-1", "id-2", "id-3"},
               *other[] = {"id-x", "id-y", "id-z"};
    wait_t w;
    claim(&f, keys, ids, 3, 60000, &w);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(w.res[i].state, MSM_IDEM_CLAIMED);
    /* In flight: busy for anyone, this publisher included. */
    claim(&f, keys, other, 3, 60000, &w);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(w.res[i].state, MSM_IDEM_BUSY);
    /* Another's settle changes nothing: only keys holding that publisher's claim do. */
    settle(&f, keys, other, 3, 1);
    claim(&f, keys, other, 1, 60000, &w);
    CU_ASSERT_EQUAL(w.res[0].state, MSM_IDEM_BUSY);
    /* k1, k2 committed (duplicates of their ids), k3 released (free again). */
    settle(&f, keys, ids, 2, 1);
    settle(&f, keys + 2, ids + 2, 1, 0);
    claim(&f, keys, other, 3, 60000, &w);
    CU_ASSERT_EQUAL(w.res[0].state, MSM_IDEM_DUPLICATE);
    CU_ASSERT_STRING_EQUAL(w.res[0].id, "id-1");
    CU_ASSERT_EQUAL(w.res[1].state, MSM_IDEM_DUPLICATE);
    CU_ASSERT_STRING_EQUAL(w.res[1].id, "id-2");
    CU_ASSERT_EQUAL(w.res[2].state, MSM_IDEM_CLAIMED);
    /* The key, its window, and the claim's lapse. */
    redisReply *rep = msm_test_redis_query(&srv, "PTTL %s:idem:{orders}:k1", f.ns);
    CU_ASSERT_TRUE(rep && rep->integer > 50000 && rep->integer <= 60000);
    freeReplyObject(rep);
    const char *lapse[] = {"k4"}, *lid[] = {"id-4"};
    claim(&f, lapse, lid, 1, 100, &w);
    CU_ASSERT_EQUAL(w.res[0].state, MSM_IDEM_CLAIMED);
    claim(&f, lapse, other, 1, 100, &w);
    CU_ASSERT_EQUAL(w.res[0].state, MSM_IDEM_BUSY);
    msm_test_spin(f.loop, 250); /* the pending time passes: the publisher "died" */
    claim(&f, lapse, other, 1, 100, &w);
    CU_ASSERT_EQUAL(w.res[0].state, MSM_IDEM_CLAIMED);
    /* Bounds: a key over MSM_IDEM_KEY_MAX is refused before anything is sent. */
    char *big = malloc(MSM_IDEM_KEY_MAX + 2);
    memset(big, 'k', MSM_IDEM_KEY_MAX + 1);
    big[MSM_IDEM_KEY_MAX + 1] = '\0';
    const char *bigk[] = {big};
    CU_ASSERT_EQUAL(msm_idem_claim(f.idem, f.r, "orders", bigk, ids, 1, 1000, on_claimed, &w),
                    MSM_ERR_TOOLARGE);
    free(big);
    msm_idem_free(f.idem);
    msm_redis_free(f.r);
    msm_loop_free(f.loop);
}

static int suite_init(void)
{
    return msm_test_redis_start(&srv);
}

static int suite_clean(void)
{
    msm_test_redis_destroy(&srv);
    return 0;
}

static CU_TestInfo tests[] = {
    {"claim, busy, duplicate, commit, release, lapse", test_claim_settle},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"idempotency", suite_init, suite_clean, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return msm_test_run(suites);
}
