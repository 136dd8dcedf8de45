/* SPDX-License-Identifier: MIT */
/* Ordered subscriptions: per ordering key, one task may run at a time, in publish order.
 *
 * On the happy path this lives in memory only: a key's first task is its head and goes to
 * the pending queue; the tasks behind it wait in the key's list (their ready records stay
 * unacknowledged, so a takeover rebuilds the same order from the log) and the next one
 * becomes head when the head settles.
 *
 * A head that fails holds its key: it goes to the retry store like any retry and the key is
 * written to MSM_KEY_HELD. Whatever arrives behind a held key is parked in Redis
 * (MSM_KEY_PARKED, ordered by event id), so its ready record can be acknowledged and a key
 * blocked for minutes holds neither memory nor the log. When the holder settles (succeeded
 * or dead) one script removes it from the retry store and moves the key's next parked task
 * there, due at once, as the new holder; with none left the key is free again. Every step
 * is one script, so a member killed at any point leaves a state the next owner reads back
 * (fc_order_load), repairing a key whose holder is gone. */
#include "fc_int.h"
#include "msm/err.h"
#include "msm/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOL_CHECK_MS  1000   /* the detector looks this often */
#define ADVANCE_RETRY 500    /* ms before a failed advance is sent again */

/* The next parked task of key KEYS-relative: becomes its holder in the retry store, due at
 * once; none left: the key is free. KEYS: held, parked, parked tasks, retry, retry tasks. */
#define ADVANCE_FN                                                                                 \
    "local function advance(key, now)\n"                                                           \
    "  local p = string.format('%04x', #key) .. ':' .. key .. ':'\n"                               \
    "  local lo, hi = '[' .. p, '(' .. string.sub(p, 1, -2) .. ';'\n"                              \
    "  while true do\n"                                                                            \
    "    local m = redis.call('ZRANGEBYLEX', KEYS[2], lo, hi, 'LIMIT', 0, 1)\n"                    \
    "    if #m == 0 then redis.call('HDEL', KEYS[1], key) return 0 end\n"                          \
    "    local id = string.sub(m[1], #p + 1)\n"                                                    \
    "    local t = redis.call('HGET', KEYS[3], id)\n"                                              \
    "    redis.call('ZREM', KEYS[2], m[1])\n"                                                      \
    "    redis.call('HDEL', KEYS[3], id)\n"                                                        \
    "    if t then\n"                                                                              \
    "      redis.call('HSET', KEYS[5], id, t)\n"                                                   \
    "      redis.call('ZADD', KEYS[4], now, id)\n"                                                 \
    "      redis.call('HSET', KEYS[1], key, cjson.encode({event_id = id, attempts = 0,\n"          \
    "                                                      since_ms = tonumber(now)}))\n"          \
    "      return 1\n"                                                                             \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function holder(v)\n"                                                                   \
    "  local ok, h = pcall(cjson.decode, v or '')\n"                                               \
    "  if ok and type(h) == 'table' and type(h.event_id) == 'string' then return h.event_id end\n" \
    "  return ''\n"                                                                                \
    "end\n"

/* ARGV: key, the settled holder's id, now. Returns 1 (still held: by the next one) or 0. */
static const char ADVANCE_LUA[] =
    ADVANCE_FN "redis.call('ZREM', KEYS[4], ARGV[2])\n"
               "redis.call('HDEL', KEYS[5], ARGV[2])\n"
               "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
               "if cur and holder(cur) ~= ARGV[2] then return 1 end\n"
               "return advance(ARGV[1], ARGV[3])\n";

/* ARGV: now. Returns {key, holder JSON, ...} of the keys held, after repairing those whose
 * holder is no longer in the retry store (a member died between its settle and advance). */
static const char LOAD_LUA[] =
    ADVANCE_FN "local all = redis.call('HGETALL', KEYS[1])\n"
               "local out = {}\n"
               "for i = 1, #all, 2 do\n"
               "  local held = 1\n"
               "  if redis.call('HEXISTS', KEYS[5], holder(all[i + 1])) == 0 then\n"
               "    held = advance(all[i], ARGV[1])\n"
               "  end\n"
               "  if held == 1 then\n"
               "    out[#out + 1] = all[i]\n"
               "    out[#out + 1] = redis.call('HGET', KEYS[1], all[i])\n"
               "  end\n"
               "end\n"
               "return out\n";

static msm_redis_script_t *advance_script, *load_script; /* process-wide, never freed */

/* ---- the key map ---- */

static size_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)h;
}

static fc_key_t *key_find(fc_sub_t *sub, const char *name)
{
    if (!sub->kmap_size)
        return NULL;
    for (fc_key_t *k = sub->kmap[hash_key(name) & (sub->kmap_size - 1)]; k; k = k->hnext) {
        if (strcmp(k->name, name) == 0)
            return k;
    }
    return NULL;
}

static int kmap_grow(fc_sub_t *sub)
{
    size_t size = sub->kmap_size ? sub->kmap_size * 2 : 256;
    fc_key_t **map = calloc(size, sizeof(*map));
    if (!map)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < sub->kmap_size; i++) {
        for (fc_key_t *k = sub->kmap[i], *next; k; k = next) {
            next = k->hnext;
            size_t b = hash_key(k->name) & (size - 1);
            k->hnext = map[b];
            map[b] = k;
        }
    }
    free(sub->kmap);
    sub->kmap = map;
    sub->kmap_size = size;
    return MSM_OK;
}

static fc_key_t *key_get(fc_sub_t *sub, const char *name)
{
    fc_key_t *k = key_find(sub, name);
    if (k)
        return k;
    if (sub->nkeys + 1 > sub->kmap_size && kmap_grow(sub) != MSM_OK)
        return NULL;
    if (!(k = calloc(1, sizeof(*k))) || !(k->name = strdup(name))) {
        free(k);
        return NULL;
    }
    size_t b = hash_key(name) & (sub->kmap_size - 1);
    k->hnext = sub->kmap[b];
    sub->kmap[b] = k;
    sub->nkeys++;
    return k;
}

static void key_free(fc_key_t *k)
{
    free(k->name);
    free(k->holder);
    free(k);
}

/* A key with nothing in memory and nothing held is forgotten. */
static void key_maybe_free(fc_sub_t *sub, fc_key_t *k)
{
    if (k->ntasks || k->held || k->advancing || k->head || k->wait_head)
        return;
    fc_key_t **p = &sub->kmap[hash_key(k->name) & (sub->kmap_size - 1)];
    for (; *p; p = &(*p)->hnext) {
        if (*p == k) {
            *p = k->hnext;
            sub->nkeys--;
            key_free(k);
            return;
        }
    }
}

static void set_held(fc_sub_t *sub, fc_key_t *k, int held)
{
    if (k->held == held)
        return;
    k->held = held;
    if (held) {
        sub->nheld++;
        k->hol_reported = 0;
    } else {
        sub->nheld--;
    }
}

static void set_holder(fc_key_t *k, const char *id)
{
    char *h = strdup(id);
    if (h) {
        free(k->holder);
        k->holder = h;
    }
}

/* ---- followers ---- */

static void wait_push(fc_sub_t *sub, fc_key_t *k, fc_task_t *t)
{
    t->knext = NULL;
    if (k->wait_tail)
        k->wait_tail->knext = t;
    else
        k->wait_head = t;
    k->wait_tail = t;
    sub->nwaiting++;
}

static fc_task_t *wait_pop(fc_sub_t *sub, fc_key_t *k)
{
    fc_task_t *t = k->wait_head;
    if (!t)
        return NULL;
    k->wait_head = t->knext;
    if (!k->wait_head)
        k->wait_tail = NULL;
    t->knext = NULL;
    sub->nwaiting--;
    return t;
}

/* Every in-memory follower of a held key goes to the parked store, in order. */
static void park_waiting(fc_sub_t *sub, fc_key_t *k)
{
    fc_task_t *t;
    while ((t = wait_pop(sub, k)))
        fc_flush_park(sub, t);
}

/* The key is free: its next follower becomes head. */
static void promote(fc_sub_t *sub, fc_key_t *k)
{
    fc_task_t *t = wait_pop(sub, k);
    if (t) {
        k->head = t;
        fc_pq_push(sub, t, 0);
    }
}

/* ---- intake ---- */

int fc_order_intake(fc_sub_t *sub, fc_task_t *t)
{
    const char *name = t->t->event->ordering_key;
    if (!name || !*name)
        return 0; /* no ordering key: no order to keep (as Pub/Sub) */
    fc_key_t *k = key_get(sub, name);
    if (!k)
        return 0; /* out of memory: delivered unordered rather than not at all */
    t->key = k;
    k->ntasks++;
    if (!k->head && !k->held && !k->advancing && !k->wait_head) {
        k->head = t;
        return 0;
    }
    t->state = FC_TASK_PENDING;
    if (k->held && !k->advancing)
        fc_flush_park(sub, t);
    else
        wait_push(sub, k, t);
    return 1;
}

void fc_order_from_store(fc_sub_t *sub, fc_task_t *t)
{
    const char *name = t->t->event->ordering_key;
    fc_key_t *k = name && *name ? key_get(sub, name) : NULL;
    if (!k)
        return;
    t->key = k;
    k->ntasks++;
    set_held(sub, k, 1);
    set_holder(k, t->t->event->id);
    k->attempts = t->t->attempt;
    if (!k->since_ms)
        k->since_ms = fc_now_ms();
    if (!k->head)
        k->head = t;
}

void fc_order_failed(fc_sub_t *sub, fc_task_t *t, int retrying)
{
    fc_key_t *k = t->key;
    if (!k || k->head != t || !retrying)
        return; /* dead: the key moves on when it has left memory (fc_order_gone) */
    if (!k->held) {
        set_held(sub, k, 1);
        k->since_ms = fc_now_ms();
    }
    set_holder(k, t->t->event->id);
    k->attempts = t->t->attempt;
    fc_flush_hold(sub, k);
    park_waiting(sub, k); /* after the hold in the same pipeline: the park sees it */
}

int fc_order_holds(const fc_task_t *t)
{
    return t->key && t->key->held && t->key->head == t;
}

/* ---- advancing a held key ---- */

static void advance_send(fc_sub_t *sub, fc_key_t *k);

static void on_advance_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    fc_sub_t *sub = opaque;
    for (size_t b = 0; b < sub->kmap_size; b++) {
        for (fc_key_t *k = sub->kmap[b]; k; k = k->hnext) {
            if (k->advancing == 2)
                advance_send(sub, k);
        }
    }
}

static void on_advanced(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_call_t *c = opaque;
    int same = 0;
    fc_sub_t *sub = fc_call_sub(c, &same);
    fc_key_t *k = c->data;
    c->data = NULL; /* not ours to free */
    fc_call_free(c);
    if (!sub)
        return;
    if (!same || !sub->owner || sub->removed) {
        fc_sub_release(sub); /* the key went with the term */
        return;
    }
    const char *why = msm_redis_reply_err(reply, err);
    if (why || reply->type != REDIS_REPLY_INTEGER) {
        msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: moving key %s on: %s (retrying)",
                sub->name, k->name, why ? why : "unexpected reply");
        k->advancing = 2;
        if (!msm_timer_active(&sub->order_timer))
            msm_loop_timer_start(sub->fc->env.loop, &sub->order_timer, ADVANCE_RETRY,
                                 on_advance_timer, sub);
        fc_sub_release(sub);
        return;
    }
    k->advancing = 0;
    if (reply->integer == 1) {
        /* The next parked one holds it now, due at once in the retry store. */
        k->since_ms = fc_now_ms();
        k->attempts = 0;
        park_waiting(sub, k);
        fc_sub_arm_retry(sub, 1);
    } else {
        set_held(sub, k, 0);
        free(k->holder);
        k->holder = NULL;
        k->since_ms = 0;
        promote(sub, k);
    }
    key_maybe_free(sub, k);
    fc_sub_release(sub);
}

static void advance_send(fc_sub_t *sub, fc_key_t *k)
{
    if (!advance_script && !(advance_script = msm_redis_script_new(ADVANCE_LUA)))
        return;
    k->advancing = 1;
    char now[24];
    snprintf(now, sizeof(now), "%" PRId64, fc_now_ms());
    const char *argv[] = {sub->k_held,  sub->k_parked, sub->k_parked_tasks, sub->k_retry,
                          sub->k_retry_tasks, k->name, k->holder ? k->holder : "", now};
    fc_call_t *c = fc_call_new(sub);
    if (c) {
        c->data = k;
        if (msm_redis_eval(sub->fc->env.redis, advance_script, on_advanced, c, 5, 8, argv,
                           NULL) == MSM_OK)
            return;
        c->data = NULL;
        fc_sub_release(sub);
        fc_call_free(c);
    }
    k->advancing = 2;
    if (!msm_timer_active(&sub->order_timer))
        msm_loop_timer_start(sub->fc->env.loop, &sub->order_timer, ADVANCE_RETRY,
                             on_advance_timer, sub);
}

void fc_order_gone(fc_sub_t *sub, fc_task_t *t)
{
    fc_key_t *k = t->key;
    if (!k)
        return;
    t->key = NULL;
    k->ntasks--;
    if (k->head == t) {
        k->head = NULL;
        if (t->result && strcmp(t->result, "retrying") == 0) {
            /* It comes back from the retry store as head; the key stays held meanwhile. */
        } else if (k->held) {
            advance_send(sub, k);
        } else {
            promote(sub, k);
        }
    }
    key_maybe_free(sub, k);
}

/* ---- the held keys at start ---- */

static void on_load_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    fc_sub_t *sub = opaque;
    if (sub->owner && !sub->removed)
        fc_order_load(sub);
}

static void on_loaded(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fc_sub_t *sub = fc_call_take(opaque);
    if (!sub)
        return;
    sub->order_loading = 0;
    const char *why = msm_redis_reply_err(reply, err);
    if (why || reply->type != REDIS_REPLY_ARRAY) {
        msm_log(MSM_LOG_WARN, FC_FACILITY, "subscription %s: reading held keys: %s (retrying)",
                sub->name, why ? why : "unexpected reply");
        msm_loop_timer_start(sub->fc->env.loop, &sub->order_timer, ADVANCE_RETRY, on_load_timer,
                             sub);
        fc_sub_release(sub);
        return;
    }
    for (size_t i = 0; i + 1 < reply->elements; i += 2) {
        const redisReply *name = reply->element[i], *v = reply->element[i + 1];
        if (name->type != REDIS_REPLY_STRING)
            continue;
        fc_key_t *k = key_get(sub, name->str);
        if (!k)
            continue;
        set_held(sub, k, 1);
        json_t *h = v->type == REDIS_REPLY_STRING ? json_loads(v->str, 0, NULL) : NULL;
        const char *id = json_string_value(json_object_get(h, "event_id"));
        if (id)
            set_holder(k, id);
        k->attempts = (int)json_integer_value(json_object_get(h, "attempts"));
        k->since_ms = json_integer_value(json_object_get(h, "since_ms"));
        json_decref(h);
    }
    if (reply->elements)
        msm_log(MSM_LOG_INFO, FC_FACILITY, "subscription %s: %zu ordering keys held", sub->name,
                reply->elements / 2);
    fc_sub_consume(sub);
    fc_sub_release(sub);
}

void fc_order_load(fc_sub_t *sub)
{
    if (!load_script && !(load_script = msm_redis_script_new(LOAD_LUA)))
        return;
    char now[24];
    snprintf(now, sizeof(now), "%" PRId64, fc_now_ms());
    const char *argv[] = {sub->k_held,        sub->k_parked, sub->k_parked_tasks,
                          sub->k_retry,       sub->k_retry_tasks, now};
    fc_call_t *c = fc_call_new(sub);
    if (c && msm_redis_eval(sub->fc->env.redis, load_script, on_loaded, c, 5, 6, argv, NULL) ==
                 MSM_OK) {
        sub->order_loading = 1;
        return;
    }
    if (c) {
        fc_sub_release(sub);
        fc_call_free(c);
    }
    msm_loop_timer_start(sub->fc->env.loop, &sub->order_timer, ADVANCE_RETRY, on_load_timer, sub);
}

void fc_order_reset(fc_sub_t *sub)
{
    msm_loop_timer_stop(sub->fc->env.loop, &sub->order_timer);
    for (size_t b = 0; b < sub->kmap_size; b++) {
        while (sub->kmap[b]) {
            fc_key_t *k = sub->kmap[b];
            sub->kmap[b] = k->hnext;
            key_free(k);
        }
    }
    sub->nkeys = sub->nwaiting = sub->nheld = 0;
    sub->order_loading = 0;
}

/* ---- the head-of-line detector ---- */

void fc_order_check(fc_sub_t *sub)
{
    if (!sub->ordered)
        return;
    int64_t now = fc_now_ms(), longest = 0;
    int64_t threshold = sub->fc->conf.hol_threshold_ms;
    if (sub->nheld && now - sub->hol_look_ms >= HOL_CHECK_MS) {
        sub->hol_look_ms = now; /* a scan per second at most */
        for (size_t b = 0; b < sub->kmap_size; b++) {
            for (fc_key_t *k = sub->kmap[b]; k; k = k->hnext) {
                if (!k->held || !k->since_ms)
                    continue;
                int64_t held = now - k->since_ms;
                if (held > longest)
                    longest = held;
                if (held >= threshold && !k->hol_reported) {
                    k->hol_reported = 1;
                    msm_counter_inc(sub->m_hol);
                    msm_log(MSM_LOG_WARN, FC_FACILITY,
                            "subscription %s: ordering key %s held %" PRId64
                            " ms by event %s (attempt %d): the events behind it wait",
                            sub->name, k->name, held, k->holder ? k->holder : "?", k->attempts);
                }
            }
        }
        msm_gauge_set(sub->m_held_longest, (double)longest);
    } else if (!sub->nheld) {
        msm_gauge_set(sub->m_held_longest, 0);
    }
    msm_gauge_set(sub->m_held, (double)sub->nheld);
}
