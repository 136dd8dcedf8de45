/* SPDX-License-Identifier: MIT */
/* The Lua scripts behind every task transition. Each runs atomically in Redis, so the state
 * in the task hash and the sub:{s}:* sets never disagree, and several flowcontrol instances
 * may run side by side. All keys of one subscription share the hash tag {s}: the task keys a
 * script builds from the prefix in ARGV[1] live in the same slot as the declared KEYS. */
#include "fc_int.h"
#include "msm/err.h"

#include <stdlib.h>

/* A history entry is one per attempt: "running" when taken, replaced by the outcome. A broken
 * history (hand edit) restarts rather than failing the script half-way. */
#define LUA_HISTORY                                                                                \
    "local function history_decode(s)\n"                                                           \
    "  if not s then return {} end\n"                                                              \
    "  local ok, h = pcall(cjson.decode, s)\n"                                                     \
    "  if ok and type(h) == 'table' then return h end\n"                                           \
    "  return {}\n"                                                                                \
    "end\n"

/* KEYS[1] pending. ARGV[1] task key prefix, ARGV[2] now (unix ms), then per task: id, pending
 * score, priority, packed msm.v1.Event. Returns 1 (admitted) or 0 (duplicate) per task. */
static const char ADMIT_LUA[] =
    "local out = {}\n"
    "for i = 3, #ARGV, 4 do\n"
    "  local id = ARGV[i]\n"
    "  local key = ARGV[1] .. id\n"
    "  local state = redis.call('HGET', key, 'state')\n"
    "  if state == false or state == 'delayed' then\n"
    "    redis.call('HSET', key, 'state', 'pending', 'attempts', 0, 'event', ARGV[i + 3],\n"
    "               'priority', ARGV[i + 2], 'updated_ms', ARGV[2])\n"
    "    redis.call('HSETNX', key, 'history', '[]')\n"
    "    redis.call('ZADD', KEYS[1], ARGV[i + 1], id)\n"
    "    out[#out + 1] = 1\n"
    "  else\n"
    "    out[#out + 1] = 0\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS[1] pending, KEYS[2] running. ARGV[1] prefix, ARGV[2] now, ARGV[3] max_concurrency,
 * ARGV[4] batch, ARGV[5] lease deadline. Moves up to min(batch, free slots) tasks, best
 * score first, to running. Returns {running count, pending count, {id, attempt, event, ...}}. */
static const char TAKE_LUA[] = LUA_HISTORY
    "local running = redis.call('ZCARD', KEYS[2])\n"
    "local room = math.min(tonumber(ARGV[3]) - running, tonumber(ARGV[4]))\n"
    "local out = {}\n"
    "if room > 0 then\n"
    "  local popped = redis.call('ZPOPMIN', KEYS[1], room)\n"
    "  for i = 1, #popped, 2 do\n"
    "    local id = popped[i]\n"
    "    local key = ARGV[1] .. id\n"
    "    local v = redis.call('HMGET', key, 'state', 'event', 'history')\n"
    /* anything else is a leftover (the task moved on meanwhile): popping it is the cleanup */
    "    if v[1] == 'pending' and v[2] then\n"
    "      local attempt = redis.call('HINCRBY', key, 'attempts', 1)\n"
    "      local h = history_decode(v[3])\n"
    "      h[#h + 1] = {attempt = attempt, at = tonumber(ARGV[2]), result = 'running'}\n"
    "      redis.call('HSET', key, 'state', 'running', 'updated_ms', ARGV[2],\n"
    "                 'history', cjson.encode(h))\n"
    "      redis.call('ZADD', KEYS[2], ARGV[5], id)\n"
    "      out[#out + 1] = id\n"
    "      out[#out + 1] = attempt\n"
    "      out[#out + 1] = v[2]\n"
    "      running = running + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return {running, redis.call('ZCARD', KEYS[1]), out}\n";

/* KEYS[1] running, KEYS[2] retry, KEYS[3] dlq, KEYS[4] stats. ARGV[1] prefix, ARGV[2] now,
 * ARGV[3] max_attempts, then per outcome: id, attempt, kind (success|retriable|fatal),
 * http_status, error, latency_ms, retry delay ms. An outcome applies only to a running task
 * on that very attempt; anything else is stale (a duplicate, or the lease already expired).
 * Returns {{"stale"|"succeeded"|"retrying"|"dead", ...}, running count}. */
static const char COMPLETE_LUA[] = LUA_HISTORY
    "local now = tonumber(ARGV[2])\n"
    "local max_attempts = tonumber(ARGV[3])\n"
    "local results = {}\n"
    "for i = 4, #ARGV, 7 do\n"
    "  local id, attempt, kind = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]\n"
    "  local key = ARGV[1] .. id\n"
    "  local v = redis.call('HMGET', key, 'state', 'attempts', 'history')\n"
    "  local result = 'stale'\n"
    "  if v[1] == 'running' and tonumber(v[2]) == attempt then\n"
    "    redis.call('ZREM', KEYS[1], id)\n"
    "    local entry = {attempt = attempt, at = now, result = kind,\n"
    "                   http_status = tonumber(ARGV[i + 3]), error = ARGV[i + 4],\n"
    "                   latency_ms = tonumber(ARGV[i + 5])}\n"
    "    local h = history_decode(v[3])\n"
    "    local last = h[#h]\n"
    "    if type(last) == 'table' and last.attempt == attempt and last.result == 'running' then\n"
    "      h[#h] = entry\n"
    "    else\n"
    "      h[#h + 1] = entry\n"
    "    end\n"
    "    local fields = {'history', cjson.encode(h), 'updated_ms', ARGV[2]}\n"
    "    if kind == 'success' then\n"
    "      result = 'succeeded'\n"
    "      redis.call('HINCRBY', KEYS[4], 'succeeded', 1)\n"
    "    else\n"
    "      redis.call('HINCRBY', KEYS[4], 'failed_attempts', 1)\n"
    "      fields[#fields + 1] = 'last_error'\n"
    "      fields[#fields + 1] = ARGV[i + 4]\n"
    "      if kind == 'fatal' or attempt >= max_attempts then\n"
    "        result = 'dead'\n"
    "        redis.call('ZADD', KEYS[3], now, id)\n"
    "        redis.call('HINCRBY', KEYS[4], 'dead', 1)\n"
    "        redis.call('HDEL', key, 'next_attempt_at')\n"
    "      else\n"
    "        result = 'retrying'\n"
    "        local at = now + tonumber(ARGV[i + 6])\n"
    "        fields[#fields + 1] = 'next_attempt_at'\n"
    "        fields[#fields + 1] = string.format('%.0f', at)\n"
    "        redis.call('ZADD', KEYS[2], string.format('%.0f', at), id)\n"
    "      end\n"
    "    end\n"
    "    fields[#fields + 1] = 'state'\n"
    "    fields[#fields + 1] = result\n"
    "    redis.call('HSET', key, unpack(fields))\n"
    "  end\n"
    "  results[#results + 1] = result\n"
    "end\n"
    "return {results, redis.call('ZCARD', KEYS[1])}\n";

/* KEYS[1] running. ARGV[1] prefix, ARGV[2] now, ARGV[3] limit. Lists running tasks whose
 * lease has passed, with their attempt (the caller completes them as retriable failures);
 * drops entries whose task is not running. Returns {{id, attempt, ...}, scanned, next lease
 * deadline or -1}. */
static const char EXPIRE_LUA[] =
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0,\n"
    "                       tonumber(ARGV[3]))\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local v = redis.call('HMGET', ARGV[1] .. id, 'state', 'attempts')\n"
    "  if v[1] == 'running' then\n"
    "    out[#out + 1] = id\n"
    "    out[#out + 1] = tonumber(v[2]) or 0\n"
    "  else\n"
    "    redis.call('ZREM', KEYS[1], id)\n"
    "  end\n"
    "end\n"
    "local nxt = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf', 'WITHSCORES',\n"
    "                       'LIMIT', 0, 1)\n"
    "return {out, #ids, tonumber(nxt[2]) or -1}\n";

/* KEYS[1] retry, KEYS[2] pending. ARGV[1] prefix, ARGV[2] now, ARGV[3] limit. Moves due
 * retries back to pending (score by their priority, arrival now). Returns {moved, scanned,
 * next due time or -1}. */
static const char DUE_LUA[] =
    "local now = tonumber(ARGV[2])\n"
    "local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0,\n"
    "                       tonumber(ARGV[3]))\n"
    "local moved = 0\n"
    "for _, id in ipairs(ids) do\n"
    "  redis.call('ZREM', KEYS[1], id)\n"
    "  local key = ARGV[1] .. id\n"
    "  local v = redis.call('HMGET', key, 'state', 'priority')\n"
    "  if v[1] == 'retrying' then\n"
    "    local p = tonumber(v[2]) or 5\n"
    "    redis.call('HSET', key, 'state', 'pending', 'updated_ms', ARGV[2])\n"
    "    redis.call('ZADD', KEYS[2], string.format('%.0f', (9 - p) * 1e13 + now), id)\n"
    "    moved = moved + 1\n"
    "  end\n"
    "end\n"
    "local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "return {moved, #ids, tonumber(nxt[2]) or -1}\n";

fc_scripts_t *fc_scripts_new(void)
{
    fc_scripts_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->refs = 1;
    s->admit = msm_redis_script_new(ADMIT_LUA);
    s->take = msm_redis_script_new(TAKE_LUA);
    s->complete = msm_redis_script_new(COMPLETE_LUA);
    s->expire = msm_redis_script_new(EXPIRE_LUA);
    s->due = msm_redis_script_new(DUE_LUA);
    if (!s->admit || !s->take || !s->complete || !s->expire || !s->due) {
        fc_scripts_release(s);
        return NULL;
    }
    return s;
}

void fc_scripts_keep(fc_scripts_t *s)
{
    s->refs++;
}

void fc_scripts_release(fc_scripts_t *s)
{
    if (!s || --s->refs > 0)
        return;
    msm_redis_script_free(s->admit);
    msm_redis_script_free(s->take);
    msm_redis_script_free(s->complete);
    msm_redis_script_free(s->expire);
    msm_redis_script_free(s->due);
    free(s);
}
