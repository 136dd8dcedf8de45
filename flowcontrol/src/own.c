/* SPDX-License-Identifier: MIT */
/* Ownership: one flowcontrol member works on a subscription at a time, so the outcomes in
 * status.<sub> always reach the member holding the tasks. sub:{s}:owner holds the member's
 * name with a lease; every member runs one small script per subscription a third of a lease
 * apart: take the key when free, extend it when ours. A member that cannot confirm its lease
 * in time stops working on the subscription before the lease can pass to another. */
#include "fc_int.h"

#include "msm/log.h"

#include <stdio.h>
#include <string.h>

/* KEYS[1] owner. ARGV[1] member, ARGV[2] lease ms. 1 = ours (taken or extended), 0 = not. */
static const char CLAIM_LUA[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end\n"
    "if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end\n"
    "return 0\n";

/* KEYS[1] owner. ARGV[1] member. Gives the lease back when it is ours. */
static const char RELEASE_LUA[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                  "  return redis.call('DEL', KEYS[1])\n"
                                  "end\n"
                                  "return 0\n";

static msm_redis_script_t *claim_script, *release_script; /* process-wide, never freed */

static int scripts(void)
{
    if (!claim_script)
        claim_script = msm_redis_script_new(CLAIM_LUA);
    if (!release_script)
        release_script = msm_redis_script_new(RELEASE_LUA);
    return claim_script && release_script ? MSM_OK : MSM_ERR_NOMEM;
}

static void own_send(fc_sub_t *sub);

static void on_own_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    own_send(opaque);
}

static void arm(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    if (sub->removed || fc->stopping)
        return;
    msm_loop_timer_start(fc->env.loop, &sub->own_timer, (uint64_t)fc->conf.owner_lease_ms / 3,
                         on_own_timer, sub);
}

static void lose(fc_sub_t *sub, const char *why)
{
    if (!sub->owner)
        return;
    msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: ownership lost (%s)", sub->name, why);
    fc_sub_stop_engine(sub);
}

static void on_claimed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    int same = 0;
    fc_sub_t *sub = fc_call_sub(opaque, &same);
    fc_call_free(opaque);
    if (!sub)
        return;
    sub->own_call = 0;
    flowcontrol_t *fc = sub->fc;
    const char *why = msm_redis_reply_err(reply, err);
    if (sub->removed || fc->stopping) {
        fc_sub_release(sub);
        return;
    }
    uint64_t now = msm_loop_now_ms(fc->env.loop);
    if (why) {
        /* Unconfirmed: keep working only while the last confirmation is surely still valid. */
        if (sub->owner && now - sub->own_ok_mono > (uint64_t)fc->conf.owner_lease_ms * 2 / 3)
            lose(sub, why);
    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        sub->own_ok_mono = now;
        if (!sub->owner) {
            msm_log(MSM_LOG_INFO, FC_FACILITY, "subscription %s: owned by %s", sub->name,
                    fc->member);
            fc_sub_start_engine(sub);
        }
    } else {
        lose(sub, "another member holds it");
    }
    arm(sub);
    fc_sub_release(sub);
}

static void own_send(fc_sub_t *sub)
{
    flowcontrol_t *fc = sub->fc;
    if (sub->own_call || sub->removed || fc->stopping)
        return;
    char lease[24];
    snprintf(lease, sizeof(lease), "%d", fc->conf.owner_lease_ms);
    const char *argv[] = {sub->k_owner, fc->member, lease};
    fc_call_t *c = fc_call_new(sub);
    if (!c || scripts() != MSM_OK ||
        msm_redis_eval(fc->env.redis, claim_script, on_claimed, c, 1, 3, argv, NULL) != MSM_OK) {
        if (c) {
            fc_sub_release(sub);
            fc_call_free(c);
        }
        arm(sub);
        return;
    }
    sub->own_call = 1;
}

void fc_own_start(fc_sub_t *sub)
{
    own_send(sub);
}

static void on_released(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    (void)reply;
    (void)err;
    int same = 0;
    fc_sub_t *sub = fc_call_sub(opaque, &same);
    fc_call_free(opaque);
    if (sub)
        fc_sub_release(sub);
}

void fc_own_stop(fc_sub_t *sub, int release)
{
    msm_loop_timer_stop(sub->fc->env.loop, &sub->own_timer);
    int was_owner = sub->owner;
    fc_sub_stop_engine(sub);
    if (!release || !was_owner || scripts() != MSM_OK)
        return;
    /* The next member takes over at once instead of after the lease. */
    const char *argv[] = {sub->k_owner, sub->fc->member};
    fc_call_t *c = fc_call_new(sub);
    if (c && msm_redis_eval(sub->fc->env.redis, release_script, on_released, c, 1, 2, argv,
                            NULL) != MSM_OK) {
        fc_sub_release(sub);
        fc_call_free(c);
    }
}
