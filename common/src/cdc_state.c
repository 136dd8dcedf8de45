/* SPDX-License-Identifier: MIT */
/* The per-partition CDC protocol push and pull share (msm/cdc_state.h): the claim, settle and
 * recovery scripts, and the recovery of an interrupted append from the log's marks. */
#include "msm/cdc_state.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/registry.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC     "cdc"
#define KEY_MAX 600

/* An intent is "<token>|<since>|<to>|<topic>|<skip,...>": token "" when no append is
 * pending, only sequences already durable above the cursor (skip) are left. Sequences stay
 * text in Redis; Lua compares them as numbers (exact up to 2^53). */
#define INTENT_PARSE                                                                               \
    "local function intent(raw)\n"                                                                 \
    "  local tok, since, to, topic, skip = string.match(raw or '',"                                \
    " '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')\n"                                                 \
    "  if not tok then return '', '0', '0', '', '' end\n"                                          \
    "  return tok, since, to, topic, skip\n"                                                       \
    "end\n"                                                                                        \
    "local function keep_above(skip, cur, extra)\n"                                                \
    "  local seen, keep = {}, {}\n"                                                                \
    "  for _, list in ipairs({skip, extra or ''}) do\n"                                            \
    "    for s in string.gmatch(list, '[^,]+') do\n"                                               \
    "      if tonumber(s) > tonumber(cur) and not seen[s] then\n"                                  \
    "        seen[s] = true\n"                                                                     \
    "        keep[#keep + 1] = s\n"                                                                \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  return table.concat(keep, ',')\n"                                                           \
    "end\n"                                                                                        \
    "local function store(k, p, skip)\n"                                                           \
    "  if skip == '' then redis.call('HDEL', k, p)\n"                                              \
    "  else redis.call('HSET', k, p, '||||' .. skip) end\n"                                        \
    "end\n"                                                                                        \
    "local function now()\n"                                                                       \
    "  local t = redis.call('TIME')\n"                                                             \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                         \
    "end\n"

/* KEYS: sources, cursor, lock, intent, lease. ARGV: source, partition, token, lock ms,
 * lease member ("" = push), last sequence, append timeout ms.
 * -> {-2} no source; {-5} no such partition; {-4} not the lease's member; {-1, ms} busy
 *    (a batch holds the lock: batches take milliseconds, so at most a second, however long
 *    a renewed lock lives; an intent too young to recover: until it is old enough);
 *    {-3, intent} an unresolved intent to recover; {cursor, source json, skip, topic}. */
static const char CLAIM_LUA[] = INTENT_PARSE
    "local src = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not src then return {-2} end\n"
    "local s = cjson.decode(src)\n"
    "local known = false\n"
    "for _, p in ipairs(s.partitions or {}) do known = known or p == ARGV[2] end\n"
    "if not known then return {-5} end\n"
    "if ARGV[5] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[5] then return {-4} end\n"
    "local ttl = redis.call('PTTL', KEYS[3])\n"
    "if ttl ~= -2 then return {-1, math.min(ttl > 0 and ttl or 1000, 1000)} end\n"
    "local raw = redis.call('HGET', KEYS[4], ARGV[2])\n"
    "local tok, since, to, topic, skip = intent(raw)\n"
    "if tok ~= '' then\n"
    "  local wait = tonumber(since) + tonumber(ARGV[7]) - now()\n"
    "  if wait > 0 then return {-1, wait} end\n"
    "  return {-3, raw}\n"
    "end\n"
    "redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])\n"
    "redis.call('HSET', KEYS[4], ARGV[2], ARGV[3] .. '|' .. string.format('%.0f', now()) .. '|'"
    " .. ARGV[6] .. '|' .. s.topic .. '|' .. skip)\n"
    "return {redis.call('HGET', KEYS[2], ARGV[2]) or '0', src, skip, s.topic}\n";

/* KEYS: cursor, lock, intent. ARGV: partition, token, outcome (durable|nothing|unknown), to.
 * -> {1 when the intent was the token's, cursor}. */
static const char SETTLE_LUA[] = INTENT_PARSE
    "local tok, since, to, topic, skip = intent(redis.call('HGET', KEYS[3], ARGV[1]))\n"
    "local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '0'\n"
    "local ours = 0\n"
    "if tok == ARGV[2] then\n"
    "  ours = 1\n"
    "  if ARGV[3] == 'durable' and tonumber(ARGV[4]) > tonumber(cur) then\n"
    "    redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])\n"
    "    cur = ARGV[4]\n"
    "  end\n"
    "  if ARGV[3] ~= 'unknown' then store(KEYS[3], ARGV[1], keep_above(skip, cur)) end\n"
    "end\n"
    "if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end\n"
    "return {ours, cur}\n";

/* KEYS: cursor, intent. ARGV: partition, token, all (1|0), found "s,s,...".
 * -> 1 when the token's intent was resolved here, 0 when someone else did it first. */
static const char RECOVER_LUA[] = INTENT_PARSE
    "local tok, since, to, topic, skip = intent(redis.call('HGET', KEYS[2], ARGV[1]))\n"
    "if tok == '' or tok ~= ARGV[2] then return 0 end\n"
    "local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '0'\n"
    "if ARGV[3] == '1' and tonumber(to) > tonumber(cur) then\n"
    "  redis.call('HSET', KEYS[1], ARGV[1], to)\n"
    "  cur = to\n"
    "end\n"
    "store(KEYS[2], ARGV[1], keep_above(skip, cur, ARGV[4]))\n"
    "return 1\n";

struct msm_cdc_state_s {
    msm_redis_t *redis;
    msm_stream_t *log;
    uint64_t append_timeout_ms;
    msm_redis_script_t *claim, *settle, *recover;
    size_t pending;
    int freed;
};

static void state_destroy(msm_cdc_state_t *st)
{
    msm_redis_script_free(st->claim);
    msm_redis_script_free(st->settle);
    msm_redis_script_free(st->recover);
    free(st);
}

msm_cdc_state_t *
msm_cdc_state_new(msm_redis_t *redis, msm_stream_t *log, uint64_t append_timeout_ms)
{
    msm_cdc_state_t *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->redis = redis;
    st->log = log;
    st->append_timeout_ms = append_timeout_ms ? append_timeout_ms : 10000;
    st->claim = msm_redis_script_new(CLAIM_LUA);
    st->settle = msm_redis_script_new(SETTLE_LUA);
    st->recover = msm_redis_script_new(RECOVER_LUA);
    if (!st->claim || !st->settle || !st->recover) {
        state_destroy(st);
        return NULL;
    }
    return st;
}

void msm_cdc_state_free(msm_cdc_state_t *st)
{
    if (!st)
        return;
    st->freed = 1;
    if (st->pending == 0)
        state_destroy(st);
}

size_t msm_cdc_state_pending(const msm_cdc_state_t *st)
{
    return st->pending;
}

/* A reply for us arrived: the state goes once freed and the last one is in. */
static void state_release(msm_cdc_state_t *st)
{
    if (--st->pending == 0 && st->freed)
        state_destroy(st);
}

int msm_cdc_mark_name(char *buf, size_t n, const char *source, const char *partition)
{
    int len = snprintf(buf, n, "cdc:%s:%s", source, partition);
    return len < 0 || (size_t)len >= n ? MSM_ERR_TOOLARGE : MSM_OK;
}

/* Parses "s,s,..." into a malloc'd array (NULL and 0 when empty). */
static int parse_seqs(const char *text, int64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    if (!*text)
        return MSM_OK;
    if (!(*out = malloc(cap * sizeof(**out))))
        return MSM_ERR_NOMEM;
    for (const char *p = text; *p;) {
        (*out)[(*n)++] = strtoll(p, NULL, 10);
        p += strcspn(p, ",");
        p += *p == ',';
    }
    return MSM_OK;
}

/* ---- claim, with the recovery of an unresolved intent ---- */

typedef struct {
    msm_cdc_state_t *st;
    char *source, *partition, *token, *member;
    uint64_t lock_ms;
    int64_t last;
    msm_cdc_claim_cb *cb;
    void *opaque;
    int tries;
    int recovered;
    /* the intent being recovered */
    char *rec_token;
    int64_t rec_to;
    char rec_mark[MSM_STREAM_MARK_MAX + 1];
} claim_t;

static void claim_free(claim_t *c)
{
    free(c->source);
    free(c->partition);
    free(c->token);
    free(c->member);
    free(c->rec_token);
    free(c);
}

static void claim_finish(claim_t *c, msm_cdc_claim_t *res)
{
    msm_cdc_state_t *st = c->st;
    res->recovered = c->recovered;
    c->cb(res, c->opaque);
    claim_free(c);
    state_release(st);
}

static void claim_fail(claim_t *c, int err, const char *why)
{
    msm_cdc_claim_t res = {.status = err, .reason = why ? why : msm_err_str(err)};
    claim_finish(c, &res);
}

static int claim_send(claim_t *c);

static void on_recovered(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    claim_t *c = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        claim_fail(c, MSM_ERR_BACKEND, why);
        return;
    }
    c->recovered = 1;
    int rc = claim_send(c);
    if (rc != MSM_OK)
        claim_fail(c, rc, NULL);
}

static void
on_marks(msm_err_t err, const char *reason, int all, const int64_t *found, size_t n, void *opaque)
{
    claim_t *c = opaque;
    if (err != MSM_OK) {
        char why[300];
        snprintf(why, sizeof(why), "recovering an interrupted append: %.250s",
                 reason ? reason : msm_err_str(err));
        claim_fail(c, err, why);
        return;
    }
    char *list = malloc(n * 21 + 1);
    if (!list) {
        claim_fail(c, MSM_ERR_NOMEM, NULL);
        return;
    }
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < n; i++)
        off += (size_t)sprintf(list + off, "%s%" PRId64, i ? "," : "", found[i]);
    msm_log(MSM_LOG_WARN, FAC,
            "source %s partition %s: the append of batch %s (up to sequence %" PRId64
            ") was interrupted; %s",
            c->source, c->partition, c->rec_token, c->rec_to,
            all ? "all of it is durable: the cursor moves past it"
            : n ? "some of its changes are durable: they are not published again"
                : "none of it is durable: it is fetched or pushed again");
    msm_cdc_state_t *st = c->st;
    char k_cur[KEY_MAX], k_int[KEY_MAX];
    msm_redis_key(st->redis, k_cur, sizeof(k_cur), MSM_KEY_CDC_CURSOR, c->source);
    msm_redis_key(st->redis, k_int, sizeof(k_int), MSM_KEY_CDC_INTENT, c->source);
    const char *argv[] = {k_cur, k_int, c->partition, c->rec_token, all ? "1" : "0", list};
    int rc = msm_redis_eval(st->redis, st->recover, on_recovered, c, 2, 6, argv, NULL);
    free(list);
    if (rc != MSM_OK)
        claim_fail(c, rc, NULL);
}

/* Asks the log which records of the intent's append are durable. */
static void recover(claim_t *c, const char *raw, size_t len)
{
    char tok[128] = "", topic[MSM_NAME_MAX + 1] = "";
    long long since = 0, to = 0;
    char *copy = strndup(raw, len);
    int ok = copy && sscanf(copy, "%127[^|]|%lld|%lld|%200[^|]|", tok, &since, &to, topic) == 4;
    free(copy);
    if (!ok ||
        msm_cdc_mark_name(c->rec_mark, sizeof(c->rec_mark), c->source, c->partition) != MSM_OK) {
        claim_fail(c, MSM_ERR_INVALID, "an unreadable intent is stored for the partition");
        return;
    }
    free(c->rec_token);
    if (!(c->rec_token = strdup(tok))) {
        claim_fail(c, MSM_ERR_NOMEM, NULL);
        return;
    }
    c->rec_to = to;
    char stream[MSM_NAME_MAX + 16];
    snprintf(stream, sizeof(stream), MSM_STREAM_EVENTS, topic);
    int rc = msm_stream_marks(c->st->log, stream, c->rec_mark, c->rec_token,
                              since - MSM_CDC_CLOCK_MARGIN_MS, on_marks, c);
    if (rc != MSM_OK)
        claim_fail(c, rc, "the log refused the read back of an interrupted append");
}

static void on_claim(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    claim_t *c = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1))
        why = "unexpected reply from Redis";
    if (why) {
        claim_fail(c, MSM_ERR_BACKEND, why);
        return;
    }
    long long code = msm_redis_reply_int(reply->element[0], -100);
    msm_cdc_claim_t res = {0};
    switch (code) {
    case -2:
        res.status = MSM_CDC_NO_SOURCE;
        break;
    case -5:
        res.status = MSM_CDC_NO_PARTITION;
        break;
    case -4:
        res.status = MSM_CDC_NOT_OWNER;
        break;
    case -1:
        res.status = MSM_CDC_BUSY;
        res.retry_ms = reply->elements > 1 ? msm_redis_reply_int(reply->element[1], 1000) : 1000;
        break;
    case -3:
        /* one recovery per claim: an intent that is back at once belongs to a new batch */
        if (c->tries++ == 0 && reply->elements > 1 &&
            reply->element[1]->type == REDIS_REPLY_STRING) {
            recover(c, reply->element[1]->str, reply->element[1]->len);
            return;
        }
        res.status = MSM_CDC_BUSY;
        res.retry_ms = 1000;
        break;
    default:
        break;
    }
    if (code < 0) {
        claim_finish(c, &res);
        return;
    }
    if (reply->elements != 4 || reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[2]->type != REDIS_REPLY_STRING ||
        reply->element[3]->type != REDIS_REPLY_STRING) {
        claim_fail(c, MSM_ERR_BACKEND, "unexpected reply from Redis");
        return;
    }
    int64_t *skip = NULL;
    json_t *src = json_loadb(reply->element[1]->str, reply->element[1]->len, 0, NULL);
    if (!src || parse_seqs(reply->element[2]->str, &skip, &res.nskip) != MSM_OK) {
        json_decref(src);
        /* The lock is ours now: free it, or it holds the partition until it expires. */
        msm_cdc_settle(c->st, c->source, c->partition, c->token, MSM_CDC_NOTHING, 0, NULL, NULL);
        claim_fail(c, MSM_ERR_NOMEM, "out of memory reading the claim");
        return;
    }
    res.status = MSM_CDC_CLAIMED;
    res.cursor = msm_redis_reply_int(reply->element[0], 0);
    res.source = src;
    res.topic = reply->element[3]->str;
    res.skip = skip;
    claim_finish(c, &res);
    json_decref(src);
    free(skip);
}

static int claim_send(claim_t *c)
{
    msm_cdc_state_t *st = c->st;
    char k_src[KEY_MAX], k_cur[KEY_MAX], k_lock[KEY_MAX], k_int[KEY_MAX], k_lease[KEY_MAX];
    char lock_ms[24], last[24], wait[24];
    if (msm_redis_key(st->redis, k_src, sizeof(k_src), "%s", MSM_KEY_CDC_SOURCES) < 0 ||
        msm_redis_key(st->redis, k_cur, sizeof(k_cur), MSM_KEY_CDC_CURSOR, c->source) < 0 ||
        msm_redis_key(st->redis, k_lock, sizeof(k_lock), MSM_KEY_CDC_LOCK, c->source,
                      c->partition) < 0 ||
        msm_redis_key(st->redis, k_int, sizeof(k_int), MSM_KEY_CDC_INTENT, c->source) < 0 ||
        msm_redis_key(st->redis, k_lease, sizeof(k_lease), MSM_KEY_CDC_LEASE, c->source,
                      c->partition) < 0)
        return MSM_ERR_TOOLARGE;
    snprintf(lock_ms, sizeof(lock_ms), "%" PRIu64, c->lock_ms);
    snprintf(last, sizeof(last), "%" PRId64, c->last);
    snprintf(wait, sizeof(wait), "%" PRIu64, st->append_timeout_ms);
    const char *argv[] = {k_src,     k_cur,        k_lock,   k_int,   k_lease,
                          c->source, c->partition, c->token, lock_ms, c->member ? c->member : "",
                          last,      wait};
    return msm_redis_eval(st->redis, st->claim, on_claim, c, 5, 12, argv, NULL);
}

int msm_cdc_claim(msm_cdc_state_t *st,
                  const msm_cdc_claim_args_t *a,
                  msm_cdc_claim_cb *cb,
                  void *opaque)
{
    if (!a->source || !a->partition || !a->token || !*a->token || strchr(a->token, '|') || !cb ||
        st->freed)
        return MSM_ERR_INVALID;
    claim_t *c = calloc(1, sizeof(*c));
    if (!c)
        return MSM_ERR_NOMEM;
    c->st = st;
    c->lock_ms = a->lock_ms ? a->lock_ms : MSM_CDC_PUSH_LOCK_MS;
    c->last = a->last_sequence;
    c->cb = cb;
    c->opaque = opaque;
    if (!(c->source = strdup(a->source)) || !(c->partition = strdup(a->partition)) ||
        !(c->token = strdup(a->token)) ||
        (a->lease_member && !(c->member = strdup(a->lease_member)))) {
        claim_free(c);
        return MSM_ERR_NOMEM;
    }
    int rc = claim_send(c);
    if (rc != MSM_OK) {
        claim_free(c);
        return rc;
    }
    st->pending++;
    return MSM_OK;
}

int msm_cdc_published(const msm_cdc_claim_t *res, int64_t seq)
{
    if (seq <= res->cursor)
        return 1;
    for (size_t i = 0; i < res->nskip; i++) {
        if (res->skip[i] == seq)
            return 1;
    }
    return 0;
}

/* ---- settle ---- */

typedef struct {
    msm_cdc_state_t *st;
    msm_cdc_settle_cb *cb;
    void *opaque;
} settle_t;

static void on_settled(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    settle_t *s = opaque;
    msm_cdc_state_t *st = s->st;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2))
        why = "unexpected reply from Redis";
    if (s->cb) {
        if (why)
            s->cb(MSM_ERR_BACKEND, why, 0, 0, s->opaque);
        else
            s->cb(MSM_OK, NULL, msm_redis_reply_int(reply->element[1], 0),
                  msm_redis_reply_int(reply->element[0], 0) == 1, s->opaque);
    }
    free(s);
    state_release(st);
}

int msm_cdc_settle(msm_cdc_state_t *st,
                   const char *source,
                   const char *partition,
                   const char *token,
                   msm_cdc_outcome_t outcome,
                   int64_t to,
                   msm_cdc_settle_cb *cb,
                   void *opaque)
{
    static const char *const outcomes[] = {"durable", "nothing", "unknown"};
    char k_cur[KEY_MAX], k_lock[KEY_MAX], k_int[KEY_MAX], seq[24];
    if ((unsigned)outcome > MSM_CDC_UNKNOWN)
        return MSM_ERR_INVALID;
    if (msm_redis_key(st->redis, k_cur, sizeof(k_cur), MSM_KEY_CDC_CURSOR, source) < 0 ||
        msm_redis_key(st->redis, k_lock, sizeof(k_lock), MSM_KEY_CDC_LOCK, source, partition) < 0 ||
        msm_redis_key(st->redis, k_int, sizeof(k_int), MSM_KEY_CDC_INTENT, source) < 0)
        return MSM_ERR_TOOLARGE;
    settle_t *s = calloc(1, sizeof(*s));
    if (!s)
        return MSM_ERR_NOMEM;
    *s = (settle_t){st, cb, opaque};
    snprintf(seq, sizeof(seq), "%" PRId64, to);
    const char *argv[] = {k_cur, k_lock, k_int, partition, token, outcomes[outcome], seq};
    int rc = msm_redis_eval(st->redis, st->settle, on_settled, s, 3, 7, argv, NULL);
    if (rc != MSM_OK) {
        free(s);
        return rc;
    }
    st->pending++;
    return MSM_OK;
}
