/* SPDX-License-Identifier: MIT */
/* Which scheduler pulls which CDC partition (docs/cdc.md "Leases"), and :notify.
 *
 * Leases: every lease_ms/3 one script renews this scheduler's leases on the pulled
 * partitions (and the lock of a batch in flight), notes the scheduler in the members set,
 * gives back idle partitions above its fair share (ceil(partitions / live members)) and
 * takes free ones up to it. A scheduler that dies (kill -9) stops renewing: its leases
 * expire after lease_ms and the next round of another one takes them, so a partition is
 * orphaned for at most lease_ms + lease_ms/3, and never fetched by two at once.
 *
 * :notify: the frontend appends {source, partition, sequence} to a capped stream
 * ({registry}:cdc:notify, MSM_CDC_NOTIFY_MAXLEN entries); each scheduler that pulls a
 * source reads it with XREAD BLOCK on a connection of its own, and the holder of the
 * partition fetches at once. A missed notification costs at most a poll interval. */
#include "cdc_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC             "cdc"
#define NOTIFY_BLOCK_MS 5000
#define NOTIFY_COUNT    "256"

/* KEYS: members, then per partition its lease, lock, cursor hash, notified hash.
 * ARGV: member, lease ms, take (1: may take free partitions), then per partition its name,
 * the token of our batch holding its lock ("" = none) and whether a round of ours is in
 * flight (1: not given back now). -> per partition {held, cursor, notified}. */
static const char LEASE_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local me, lease = ARGV[1], tonumber(ARGV[2])\n"
    "redis.call('ZADD', KEYS[1], now, me)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lease)\n"
    "local n = (#KEYS - 1) / 4\n"
    "local fair = math.ceil(n / math.max(1, redis.call('ZCARD', KEYS[1])))\n"
    "local held, r = 0, {}\n"
    "for i = 1, n do\n"
    "  local k, tok = 2 + (i - 1) * 4, ARGV[2 + 3 * i]\n"
    "  r[i] = 0\n"
    "  if redis.call('GET', KEYS[k]) == me then\n"
    "    redis.call('PEXPIRE', KEYS[k], lease)\n"
    "    if tok ~= '' and redis.call('GET', KEYS[k + 1]) == tok then\n"
    "      redis.call('PEXPIRE', KEYS[k + 1], lease)\n"
    "    end\n"
    "    r[i] = 1\n"
    "    held = held + 1\n"
    "  end\n"
    "end\n"
    "for i = 1, n do\n"
    "  local k = 2 + (i - 1) * 4\n"
    "  if r[i] == 1 and held > fair and ARGV[3 + 3 * i] == '0' then\n"
    "    redis.call('DEL', KEYS[k])\n"
    "    r[i] = 0\n"
    "    held = held - 1\n"
    "  elseif r[i] == 0 and held < fair and ARGV[3] == '1' and\n"
    "         redis.call('SET', KEYS[k], me, 'NX', 'PX', lease) then\n"
    "    r[i] = 1\n"
    "    held = held + 1\n"
    "  end\n"
    "end\n"
    "local out = {}\n"
    "for i = 1, n do\n"
    "  local k, p = 2 + (i - 1) * 4, ARGV[1 + 3 * i]\n"
    "  out[i] = {r[i], redis.call('HGET', KEYS[k + 2], p) or '0',"
    " redis.call('HGET', KEYS[k + 3], p) or '0'}\n"
    "end\n"
    "return out\n";

/* KEYS: members, then the leases; ARGV: member. Gives back what the member holds. */
static const char RELEASE_LUA[] =
    "redis.call('ZREM', KEYS[1], ARGV[1])\n"
    "for i = 2, #KEYS do\n"
    "  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end\n"
    "end\n"
    "return 0\n";

/* ---- the lease rounds ---- */

/* The partitions one round is about, by name (a partition dropped before the answer is
 * simply not found then). */
typedef struct {
    sch_cdc_t *c;
    size_t n;
    char **names; /* source, partition, source, partition, ... */
    uint64_t sent_ms;
} round_t;

static void round_free(round_t *r)
{
    for (size_t i = 0; i < 2 * r->n; i++)
        free(r->names[i]);
    free(r->names);
    free(r);
}

static void lease_arm(sch_cdc_t *c, uint64_t ms);

static void on_lease(msm_redis_t *rd, redisReply *reply, const char *err, void *opaque)
{
    (void)rd;
    round_t *r = opaque;
    sch_cdc_t *c = r->c;
    c->lease_running = 0;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != r->n))
        why = "unexpected reply";
    if (c->stopping || c->freed) {
        round_free(r);
        sch__cdc_release(c);
        return;
    }
    if (why) {
        /* our leases hold until lease_until; the next round may renew them */
        msm_log(MSM_LOG_WARN, FAC, "lease round: %s", why);
    }
    size_t owned = 0;
    for (size_t i = 0; !why && i < r->n; i++) {
        const redisReply *e = reply->element[i];
        sch_cdc_part_t *p = sch__cdc_part(c, r->names[2 * i], r->names[2 * i + 1]);
        if (!p || e->type != REDIS_REPLY_ARRAY || e->elements != 3)
            continue;
        int held = msm_redis_reply_int(e->element[0], 0) == 1;
        int64_t cursor = msm_redis_reply_int(e->element[1], 0);
        int64_t notified = msm_redis_reply_int(e->element[2], 0);
        if (notified > p->notified)
            p->notified = notified;
        if (!held) {
            if (p->owned) {
                msm_log(MSM_LOG_INFO, FAC,
                        "source %s partition %s: lease given up or lost: "
                        "another scheduler pulls it",
                        p->source, p->name);
                sch__cdc_lost(p);
            }
            continue;
        }
        owned++;
        p->lease_until = r->sent_ms + (uint64_t)c->lease_ms * 9 / 10;
        /* a push may have moved it; only forward: a batch of ours may have settled since the
         * round read it */
        if (!p->busy && cursor > p->cursor)
            p->cursor = cursor;
        if (!p->owned) {
            p->owned = 1;
            msm_log(MSM_LOG_INFO, FAC,
                    "source %s partition %s: lease taken, pulling after "
                    "sequence %" PRId64,
                    p->source, p->name, p->cursor);
        }
        sch__cdc_lag(p);
        if (!p->busy && !msm_timer_active(&p->timer))
            sch__cdc_kick(p, 0);
    }
    if (!why)
        msm_gauge_set(c->m_owned, (double)owned);
    round_free(r);
    lease_arm(c, c->lease_again ? 0 : c->lease_ms / 3);
    c->lease_again = 0;
    sch__cdc_release(c);
}

/* The keys and arguments of a round over every pulled partition. */
static int lease_send(sch_cdc_t *c)
{
    size_t n = 0;
    for (sch_cdc_src_t *s = c->sources; s; s = s->next)
        for (sch_cdc_part_t *p = s->parts; p; p = p->next)
            n++;
    round_t *r = calloc(1, sizeof(*r));
    size_t nkeys = 1 + 4 * n, argc = nkeys + 3 + 3 * n;
    char(*keys)[SCH_CDC_KEY_MAX] = calloc(nkeys, SCH_CDC_KEY_MAX);
    const char **argv = calloc(argc, sizeof(*argv));
    int rc = MSM_ERR_NOMEM;
    if (!r || !keys || !argv || !(r->names = calloc(2 * n + 1, sizeof(*r->names))))
        goto out;
    r->c = c;
    char lease[24];
    snprintf(lease, sizeof(lease), "%" PRIu32, c->lease_ms);
    msm_redis_key(c->redis, keys[0], SCH_CDC_KEY_MAX, "%s", MSM_KEY_CDC_MEMBERS);
    argv[0] = keys[0];
    argv[nkeys] = c->member;
    argv[nkeys + 1] = lease;
    argv[nkeys + 2] = c->stopping ? "0" : "1";
    size_t i = 0;
    for (sch_cdc_src_t *s = c->sources; s; s = s->next) {
        for (sch_cdc_part_t *p = s->parts; p; p = p->next, i++) {
            char *k = keys[1 + 4 * i];
            msm_redis_key(c->redis, k, SCH_CDC_KEY_MAX, MSM_KEY_CDC_LEASE, s->name, p->name);
            msm_redis_key(c->redis, k + SCH_CDC_KEY_MAX, SCH_CDC_KEY_MAX, MSM_KEY_CDC_LOCK, s->name,
                          p->name);
            msm_redis_key(c->redis, k + 2 * SCH_CDC_KEY_MAX, SCH_CDC_KEY_MAX, MSM_KEY_CDC_CURSOR,
                          s->name);
            msm_redis_key(c->redis, k + 3 * SCH_CDC_KEY_MAX, SCH_CDC_KEY_MAX, MSM_KEY_CDC_NOTIFIED,
                          s->name);
            for (int j = 0; j < 4; j++)
                argv[1 + 4 * i + j] = k + j * SCH_CDC_KEY_MAX;
            argv[nkeys + 3 + 3 * i] = p->name;
            argv[nkeys + 4 + 3 * i] = p->token; /* "" when no batch holds the lock */
            argv[nkeys + 5 + 3 * i] = p->busy ? "1" : "0";
            if (!(r->names[2 * i] = strdup(s->name)) || !(r->names[2 * i + 1] = strdup(p->name)))
                goto out;
            r->n = i + 1;
        }
    }
    r->sent_ms = msm_loop_now_ms(c->loop);
    rc = msm_redis_eval(c->redis, c->lease_script, on_lease, r, (int)nkeys, (int)argc, argv, NULL);
out:
    free(keys);
    free(argv);
    if (rc != MSM_OK) {
        if (r)
            round_free(r);
        return rc;
    }
    c->lease_running = 1;
    sch__cdc_hold(c);
    return MSM_OK;
}

static void on_lease_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    sch_cdc_t *c = opaque;
    if (c->stopping || c->lease_running)
        return;
    if (!c->sources) { /* nothing pulled: nothing to hold */
        msm_gauge_set(c->m_owned, 0);
        lease_arm(c, c->lease_ms / 3);
        return;
    }
    if (lease_send(c) != MSM_OK)
        lease_arm(c, c->lease_ms / 3);
}

static void lease_arm(sch_cdc_t *c, uint64_t ms)
{
    if (!c->stopping)
        msm_loop_timer_start(c->loop, &c->lease_timer, ms, on_lease_timer, c);
}

void sch__cdc_leases_now(sch_cdc_t *c)
{
    if (c->lease_running)
        c->lease_again = 1;
    else
        lease_arm(c, 0);
}

/* Gives back every lease this scheduler may hold, at once (stop): the others take the
 * partitions on their next round instead of after lease_ms. */
static void on_released(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    (void)reply;
    (void)err;
    sch__cdc_release(opaque);
}

static void leases_release(sch_cdc_t *c)
{
    size_t n = 0;
    for (sch_cdc_src_t *s = c->sources; s; s = s->next)
        for (sch_cdc_part_t *p = s->parts; p; p = p->next)
            n += p->owned;
    char(*keys)[SCH_CDC_KEY_MAX] = calloc(n + 1, SCH_CDC_KEY_MAX);
    const char **argv = calloc(n + 2, sizeof(*argv));
    if (keys && argv) {
        size_t i = 1;
        msm_redis_key(c->redis, keys[0], SCH_CDC_KEY_MAX, "%s", MSM_KEY_CDC_MEMBERS);
        argv[0] = keys[0];
        for (sch_cdc_src_t *s = c->sources; s; s = s->next) {
            for (sch_cdc_part_t *p = s->parts; p; p = p->next) {
                if (!p->owned)
                    continue;
                msm_redis_key(c->redis, keys[i], SCH_CDC_KEY_MAX, MSM_KEY_CDC_LEASE, s->name,
                              p->name);
                argv[i] = keys[i];
                i++;
                sch__cdc_lost(p);
            }
        }
        argv[i] = c->member;
        if (msm_redis_eval(c->redis, c->lease_script_release, on_released, c, (int)i, (int)i + 1,
                           argv, NULL) == MSM_OK)
            sch__cdc_hold(c);
    }
    free(keys);
    free(argv);
}

/* ---- :notify ---- */

static void notify_read(sch_cdc_t *c);

static void notify_entry(sch_cdc_t *c, const redisReply *fields)
{
    const char *source = NULL, *partition = NULL;
    int64_t seq = 0;
    for (size_t i = 0; fields->type == REDIS_REPLY_ARRAY && i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, "source") == 0)
            source = v->str;
        else if (strcmp(k->str, "partition") == 0)
            partition = v->str;
        else if (strcmp(k->str, "sequence") == 0)
            seq = strtoll(v->str, NULL, 10);
    }
    sch_cdc_part_t *p = source && partition ? sch__cdc_part(c, source, partition) : NULL;
    if (!p)
        return;
    if (seq > p->notified)
        p->notified = seq;
    sch__cdc_lag(p);
    if (seq > p->cursor)
        sch__cdc_kick(p, 1);
}

static void on_notify(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sch_cdc_t *c = opaque;
    int first = c->notify_first;
    c->notify_reading = 0;
    c->notify_first = 0;
    const char *why = msm_redis_reply_err(reply, err);
    int again = !c->stopping && !c->freed && c->notify_redis;
    if (why) {
        if (again)
            msm_log(MSM_LOG_DEBUG, FAC, "reading notifications: %s", why);
    } else if (first) {
        /* XREVRANGE … COUNT 1: start after the newest entry (or at the start) */
        const redisReply *e =
            reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 ? reply->element[0] : NULL;
        snprintf(c->notify_last, sizeof(c->notify_last), "%s",
                 e && e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
                         e->element[0]->type == REDIS_REPLY_STRING
                     ? e->element[0]->str
                     : "0-0");
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
               reply->element[0]->type == REDIS_REPLY_ARRAY && reply->element[0]->elements == 2) {
        /* XREAD: [[stream, [[id, fields], …]]]; nil when the block timed out */
        const redisReply *entries = reply->element[0]->element[1];
        for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++) {
            const redisReply *e = entries->element[i];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            snprintf(c->notify_last, sizeof(c->notify_last), "%s", e->element[0]->str);
            if (again)
                notify_entry(c, e->element[1]);
        }
    }
    if (again)
        notify_read(c);
    sch__cdc_release(c);
}

static void notify_read(sch_cdc_t *c)
{
    if (c->notify_reading || !c->notify_redis || c->stopping)
        return;
    char key[SCH_CDC_KEY_MAX], block[16];
    msm_redis_key(c->redis, key, sizeof(key), "%s", MSM_KEY_CDC_NOTIFY);
    snprintf(block, sizeof(block), "%d", NOTIFY_BLOCK_MS);
    int rc;
    if (!c->notify_last[0]) { /* start after the newest entry there is */
        const char *argv[] = {"XREVRANGE", key, "+", "-", "COUNT", "1"};
        rc = msm_redis_command_argv(c->notify_redis, on_notify, c, 6, argv, NULL);
        c->notify_first = rc == MSM_OK;
    } else {
        const char *argv[] = {"XREAD", "COUNT",   NOTIFY_COUNT, "BLOCK",
                              block,   "STREAMS", key,          c->notify_last};
        rc = msm_redis_command_blocking_argv(c->notify_redis, NOTIFY_BLOCK_MS, on_notify, c, 8,
                                             argv, NULL);
    }
    if (rc == MSM_OK) {
        c->notify_reading = 1;
        sch__cdc_hold(c);
    }
}

void sch__cdc_notify_update(sch_cdc_t *c)
{
    if (c->sources && !c->notify_redis && !c->stopping) {
        char err[256];
        c->notify_redis =
            msm_daemon_redis_connect(c->daemon, "msm-scheduler-cdc-notify", err, sizeof(err));
        if (!c->notify_redis) {
            msm_log(MSM_LOG_WARN, FAC,
                    "no connection for notifications (%s): partitions are "
                    "polled only",
                    err);
            return;
        }
        c->notify_last[0] = '\0';
    } else if (!c->sources && c->notify_redis) {
        msm_redis_t *r = c->notify_redis;
        c->notify_redis = NULL;
        msm_redis_free(r); /* a read in flight completes here, with "client closed" */
        return;
    }
    notify_read(c);
}

/* ---- life cycle ---- */

int sch__cdc_owner_init(sch_cdc_t *c)
{
    msm_timer_init(&c->lease_timer);
    c->lease_script = msm_redis_script_new(LEASE_LUA);
    c->lease_script_release = msm_redis_script_new(RELEASE_LUA);
    if (!c->lease_script || !c->lease_script_release)
        return MSM_ERR_NOMEM;
    lease_arm(c, 0);
    return MSM_OK;
}

void sch__cdc_owner_stop(sch_cdc_t *c)
{
    msm_loop_timer_stop(c->loop, &c->lease_timer);
    leases_release(c);
    if (c->notify_redis) {
        msm_redis_t *r = c->notify_redis;
        c->notify_redis = NULL;
        msm_redis_free(r);
    }
}

void sch__cdc_owner_free(sch_cdc_t *c)
{
    msm_loop_timer_stop(c->loop, &c->lease_timer);
    if (c->notify_redis) {
        msm_redis_t *r = c->notify_redis;
        c->notify_redis = NULL;
        msm_redis_free(r);
    }
    msm_redis_script_free(c->lease_script);
    msm_redis_script_free(c->lease_script_release);
}
