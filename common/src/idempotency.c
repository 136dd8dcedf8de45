/* SPDX-License-Identifier: MIT */
/* Idempotency keys of publishes: the claim and settle scripts (msm/idempotency.h). */
#include "msm/idempotency.h"

#include "msm/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PENDING_PREFIX "p:"
/* "<ns>:idem:{<topic>}:<key>": namespace and topic are at most a few hundred bytes */
#define KEY_MAX (MSM_IDEM_KEY_MAX + 512)
#define VAL_MAX (MSM_ID_STR_SIZE + 2)

struct msm_idem_s {
    msm_redis_script_t *claim;
    msm_redis_script_t *settle;
};

/* KEYS: the keys; ARGV: pending ttl ms, then per key "p:<id>".
 * -> per key: "" = claimed now, else the value there (an id, or "p:<id>" in flight). */
static const char CLAIM_LUA[] =
    "local r = {}\n"
    "for i, k in ipairs(KEYS) do\n"
    "  if redis.call('SET', k, ARGV[i + 1], 'NX', 'PX', ARGV[1]) then r[i] = ''\n"
    "  else r[i] = redis.call('GET', k) or '' end\n"
    "end\n"
    "return r\n";

/* KEYS: the claimed keys; ARGV: "commit" or "release", window ms, then per key its id.
 * Only keys still holding this publisher's claim change. */
static const char SETTLE_LUA[] =
    "for i, k in ipairs(KEYS) do\n"
    "  if redis.call('GET', k) == 'p:' .. ARGV[i + 2] then\n"
    "    if ARGV[1] == 'commit' then redis.call('SET', k, ARGV[i + 2], 'PX', ARGV[2])\n"
    "    else redis.call('DEL', k) end\n"
    "  end\n"
    "end\n"
    "return 0\n";

msm_idem_t *msm_idem_new(void)
{
    msm_idem_t *idem = calloc(1, sizeof(*idem));
    if (!idem)
        return NULL;
    idem->claim = msm_redis_script_new(CLAIM_LUA);
    idem->settle = msm_redis_script_new(SETTLE_LUA);
    if (!idem->claim || !idem->settle) {
        msm_idem_free(idem);
        return NULL;
    }
    return idem;
}

void msm_idem_free(msm_idem_t *idem)
{
    if (!idem)
        return;
    msm_redis_script_free(idem->claim);
    msm_redis_script_free(idem->settle);
    free(idem);
}

/* The arguments of one script: KEYS (n), then the head arguments, then a value per key. */
typedef struct {
    const char **argv;
    size_t *lens;
    char *keys; /* KEY_MAX per key */
    char *vals; /* VAL_MAX per key */
    int argc;
} args_t;

static void args_free(args_t *a)
{
    free(a->argv);
    free(a->lens);
    free(a->keys);
    free(a->vals);
}

static int args_build(msm_redis_t *r,
                      const char *topic,
                      const char *const *keys,
                      const char *const *ids,
                      size_t n,
                      const char *const *head,
                      int nhead,
                      const char *val_prefix,
                      args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->argc = (int)(2 * n) + nhead;
    a->argv = calloc((size_t)a->argc + 1, sizeof(*a->argv));
    a->lens = calloc((size_t)a->argc + 1, sizeof(*a->lens));
    a->keys = malloc(n * KEY_MAX + 1);
    a->vals = malloc(n * VAL_MAX + 1);
    if (!a->argv || !a->lens || !a->keys || !a->vals) {
        args_free(a);
        return MSM_ERR_NOMEM;
    }
    for (int h = 0; h < nhead; h++) {
        a->argv[n + (size_t)h] = head[h];
        a->lens[n + (size_t)h] = strlen(head[h]);
    }
    for (size_t i = 0; i < n; i++) {
        char *key = a->keys + i * KEY_MAX, *val = a->vals + i * VAL_MAX;
        int kl = strlen(keys[i]) <= MSM_IDEM_KEY_MAX
                     ? msm_redis_key(r, key, KEY_MAX, "idem:{%s}:%s", topic, keys[i])
                     : MSM_ERR_TOOLARGE;
        if (kl < 0) {
            args_free(a);
            return MSM_ERR_TOOLARGE;
        }
        snprintf(val, VAL_MAX, "%s%s", val_prefix, ids[i]);
        a->argv[i] = key;
        a->lens[i] = (size_t)kl;
        a->argv[n + (size_t)nhead + i] = val;
        a->lens[n + (size_t)nhead + i] = strlen(val);
    }
    return MSM_OK;
}

typedef struct {
    msm_idem_claimed_cb *claimed;
    msm_idem_settled_cb *settled;
    void *opaque;
    size_t n;
} call_t;

static void on_claimed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    call_t *c = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != c->n))
        why = "unexpected reply from Redis";
    msm_idem_result_t *res = why ? NULL : calloc(c->n ? c->n : 1, sizeof(*res));
    if (!why && !res)
        why = "out of memory";
    if (why) {
        c->claimed(MSM_ERR_BACKEND, why, NULL, 0, c->opaque);
        free(c);
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        const redisReply *v = reply->element[i];
        if (v->type != REDIS_REPLY_STRING || v->len == 0) {
            res[i].state = MSM_IDEM_CLAIMED;
        } else if (v->len >= 2 && strncmp(v->str, PENDING_PREFIX, 2) == 0) {
            res[i].state = MSM_IDEM_BUSY;
        } else {
            res[i].state = MSM_IDEM_DUPLICATE;
            snprintf(res[i].id, sizeof(res[i].id), "%.*s", (int)v->len, v->str);
        }
    }
    c->claimed(MSM_OK, NULL, res, c->n, c->opaque);
    free(res);
    free(c);
}

static void on_settled(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    call_t *c = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    c->settled(why ? MSM_ERR_BACKEND : MSM_OK, why, c->opaque);
    free(c);
}

static int run(msm_redis_t *r,
               const msm_redis_script_t *s,
               msm_redis_reply_cb *done,
               call_t *c,
               size_t n,
               args_t *a)
{
    int rc = msm_redis_eval(r, s, done, c, (int)n, a->argc, a->argv, a->lens);
    args_free(a);
    if (rc != MSM_OK)
        free(c);
    return rc;
}

int msm_idem_claim(msm_idem_t *idem,
                   msm_redis_t *r,
                   const char *topic,
                   const char *const *keys,
                   const char *const *ids,
                   size_t n,
                   uint64_t pending_ms,
                   msm_idem_claimed_cb *cb,
                   void *opaque)
{
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)pending_ms);
    const char *head[] = {ttl};
    args_t a;
    int rc = args_build(r, topic, keys, ids, n, head, 1, PENDING_PREFIX, &a);
    call_t *c = rc == MSM_OK ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        if (rc == MSM_OK)
            args_free(&a);
        return rc == MSM_OK ? MSM_ERR_NOMEM : rc;
    }
    *c = (call_t){.claimed = cb, .opaque = opaque, .n = n};
    return run(r, idem->claim, on_claimed, c, n, &a);
}

int msm_idem_settle(msm_idem_t *idem,
                    msm_redis_t *r,
                    const char *topic,
                    const char *const *keys,
                    const char *const *ids,
                    size_t n,
                    int commit,
                    uint64_t window_ms,
                    msm_idem_settled_cb *cb,
                    void *opaque)
{
    char window[24];
    snprintf(window, sizeof(window), "%llu", (unsigned long long)window_ms);
    const char *head[] = {commit ? "commit" : "release", window};
    args_t a;
    int rc = args_build(r, topic, keys, ids, n, head, 2, "", &a);
    call_t *c = rc == MSM_OK ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        if (rc == MSM_OK)
            args_free(&a);
        return rc == MSM_OK ? MSM_ERR_NOMEM : rc;
    }
    *c = (call_t){.settled = cb, .opaque = opaque, .n = n};
    return run(r, idem->settle, on_settled, c, n, &a);
}
