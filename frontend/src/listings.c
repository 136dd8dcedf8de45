/* SPDX-License-Identifier: MIT */
/* The listings no index serves, walked a page at a time with SCAN and HSCAN
 * (docs/pipeline.md "Task and key listings"): GET .../tasks?state=S for the states only the
 * task records hold (pending, running, succeeded: the record hashes sub:{s}:t:<second>,
 * filtered by the record's "state"), and GET .../keys?blocked=true (the hash sub:{s}:held
 * of ordering keys held by a failing event). One script per page, bounded in the work it
 * does; the opaque cursor says where the walk stands and is checked when it comes back. */
#include "tasks_int.h"

#include "msm/base64.h"
#include "msm/err.h"
#include "msm/json.h"
#include "msm/time.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HELD_LIMIT_DEF 100
#define HELD_LIMIT_MAX 1000
/* Elements a page may look at before it answers, short if need be: slots of the keyspace
 * a SCAN visits (its COUNT) plus fields HSCAN returns. A few ms of Redis at most. */
#define PAGE_WORK     "10000"
#define SCAN_COUNT    "1000"
#define HSCAN_COUNT   "500"
#define CURSOR_MAX    8192 /* characters of a cursor given back */
#define AFTER_MAX     4096 /* bytes of the field a page resumes after (ordering keys: 1 KiB) */
#define BUCKET_DIGITS 15   /* a publish second (the script reads no longer ones) */

enum { WALK_SCAN, WALK_BUCKET, WALK_HSCAN, WALK_AFTER };

/* One HSCAN call of a page: reads `key` from HSCAN cursor `cur`, passes over the reply's
 * fields up to and including `after` (reply order; '' = none), and adds the (field, value)
 * pairs whose value holds `needle` to `out` until it has `limit`. A reply is the same for
 * the same cursor while the hash does not change, so the field a page stopped at marks
 * where the next one goes on; a field not found (the hash changed) means the whole reply
 * again: a repeat, never a gap. Returns 'full', cur, last field taken or passed (stop
 * there), else 'end' or 'next', the next cursor. A key that is not a hash counts as done. */
#define HPAGE_LUA                                                                                  \
    "local function hpage(key, cur, after)\n"                                                      \
    "  local r = redis.pcall('HSCAN', key, cur, 'COUNT', hcount)\n"                                \
    "  if r.err then return 'end', '0' end\n"                                                      \
    "  local f = r[2]\n"                                                                           \
    "  work = work + #f / 2\n"                                                                     \
    "  local j, last = 1, after\n"                                                                 \
    "  if after ~= '' then\n"                                                                      \
    "    for k = 1, #f, 2 do\n"                                                                    \
    "      if f[k] == after then j = k + 2 break end\n"                                            \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  for k = j, #f, 2 do\n"                                                                      \
    "    if string.find(f[k + 1], needle, 1, true) then\n"                                         \
    "      if n >= limit then return 'full', cur, last end\n"                                      \
    "      n = n + 1\n"                                                                            \
    "      out[#out + 1] = f[k]\n"                                                                 \
    "      out[#out + 1] = f[k + 1]\n"                                                             \
    "    end\n"                                                                                    \
    "    last = f[k]\n"                                                                            \
    "  end\n"                                                                                      \
    "  return r[1] == '0' and 'end' or 'next', r[1]\n"                                             \
    "end\n"

/* KEYS: the bucket key prefix "<ns>:sub:{<sub>}:t:" (every bucket shares its hash tag, so the
 * call goes to the node of that slot). ARGV: SCAN pattern (the prefix, glob-escaped, and
 * '*'), state needle, limit, work budget, then where the walk stands: SCAN cursor, bucket
 * ('' = none: SCAN from the cursor), HSCAN cursor, last field; then SCAN and HSCAN COUNT.
 * The buckets of one SCAN reply are read in the order of their second, so a page that stops
 * in one goes on there: SCAN again from the same cursor, buckets below it passed over.
 * Returns {more (0/1), SCAN cursor, bucket, HSCAN cursor, last field, id, record, ...}. */
static const char RECORDS_SCAN_LUA[] =
    "local prefix, pattern, needle = KEYS[1], ARGV[1], ARGV[2]\n"
    "local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local scur, bucket, hcur, after = ARGV[5], ARGV[6], ARGV[7], ARGV[8]\n"
    "local scount, hcount = ARGV[9], ARGV[10]\n"
    "local out, n, work = {0, '', '', '0', ''}, 0, 0\n" HPAGE_LUA
    "local function batch(cur)\n"
    "  local r = redis.call('SCAN', cur, 'MATCH', pattern, 'COUNT', scount)\n"
    "  work = work + tonumber(scount)\n"
    "  local bs = {}\n"
    "  for _, k in ipairs(r[2]) do\n"
    "    local s = string.sub(k, #prefix + 1)\n"
    "    if string.sub(k, 1, #prefix) == prefix and #s <= 15 and\n"
    "       (s == '0' or string.find(s, '^[1-9]%d*$')) then bs[#bs + 1] = s end\n"
    "  end\n"
    "  table.sort(bs, function(a, b) return tonumber(a) < tonumber(b) end)\n"
    "  return r[1], bs\n"
    "end\n"
    "local function stop(more, s, b, h, a)\n"
    "  out[1], out[2], out[3], out[4], out[5] = more, s, b, h, a\n"
    "  return out\n"
    "end\n"
    "local nextcur, bs = batch(scur)\n"
    "local i, moved = 1, bucket == ''\n"
    "if bucket == '' then\n"
    "  hcur, after = '0', ''\n"
    "else\n"
    "  local want = tonumber(bucket)\n"
    "  while i <= #bs and tonumber(bs[i]) < want do i = i + 1 end\n"
    "  if bs[i] ~= bucket then hcur, after = '0', '' end\n" /* it expired: the next, afresh */
    "end\n"
    "while true do\n"
    "  if i > #bs then\n"
    "    if nextcur == '0' then return stop(0, '', '', '0', '') end\n"
    "    if moved and work >= budget then return stop(1, nextcur, '', '0', '') end\n"
    "    scur = nextcur\n"
    "    nextcur, bs = batch(scur)\n"
    "    i, hcur, after, moved = 1, '0', '', true\n"
    "  else\n"
    "    if moved and work >= budget then return stop(1, scur, bs[i], hcur, after) end\n"
    "    local how, c, last = hpage(prefix .. bs[i], hcur, after)\n"
    "    moved = true\n"
    "    if how == 'full' then return stop(1, scur, bs[i], c, last) end\n"
    "    if how == 'end' then i, hcur, after = i + 1, '0', '' else hcur, after = c, '' end\n"
    "  end\n"
    "end\n";

/* KEYS: held; ARGV: limit, work budget, HSCAN cursor, last field, HSCAN COUNT.
 * Returns {more (0/1), HSCAN cursor, last field, key, holder JSON, ...}. */
static const char HELD_SCAN_LUA[] =
    "local limit, budget = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local cur, after, hcount, needle = ARGV[3], ARGV[4], ARGV[5], ''\n"
    "local out, n, work = {0, '0', ''}, 0, 0\n" HPAGE_LUA
    "while true do\n"
    "  local how, c, last = hpage(KEYS[1], cur, after)\n"
    "  if how == 'full' then out[1], out[2], out[3] = 1, c, last return out end\n"
    "  if how == 'end' then return out end\n"
    "  cur, after = c, ''\n"
    "  if work >= budget then out[1], out[2], out[3] = 1, cur, '' return out end\n"
    "end\n";

int fe_listings_scripts(fe_t *fe)
{
    fe->fe_records_scan = msm_redis_script_new(RECORDS_SCAN_LUA);
    fe->fe_held_scan = msm_redis_script_new(HELD_SCAN_LUA);
    return fe->fe_records_scan && fe->fe_held_scan ? MSM_OK : MSM_ERR_NOMEM;
}

/* ---- cursors: base64url of "<tag>:<field>:…", the last field free text ---- */

static json_t *cursor_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The cursor of @p fmt, URL-safe (no '+', '/', '='), so it goes in a query as it is. */
static json_t *cursor_json(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *text = len >= 0 ? malloc((size_t)len + 1) : NULL;
    char *b64 = text ? malloc(msm_base64_encoded_size((size_t)len)) : NULL;
    json_t *out = NULL;
    if (b64) {
        va_start(ap, fmt);
        vsnprintf(text, (size_t)len + 1, fmt, ap);
        va_end(ap);
        size_t n = msm_base64_encode(text, (size_t)len, b64);
        while (n > 0 && b64[n - 1] == '=')
            n--;
        b64[n] = '\0';
        for (char *p = b64; *p; p++)
            *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
        out = json_string(b64);
    }
    free(text);
    free(b64);
    return out;
}

/* The text of cursor @p c split at its first @p nfields - 1 colons (the last field keeps
 * any), or NULL when it is not one of ours. The caller frees the text (fields[0]). */
static char *cursor_split(const char *c, const char **fields, size_t nfields)
{
    size_t n = strlen(c), len;
    if (n > CURSOR_MAX || msm_base64_lenient_measure(c, &n, &len) != MSM_OK)
        return NULL;
    char *text = malloc(len + 1);
    if (!text)
        return NULL;
    msm_base64_lenient_decode(c, n, text);
    text[len] = '\0';
    size_t i = 0;
    char *p = text, *colon;
    if (!memchr(text, '\0', len)) { /* a NUL inside is not a cursor this file made */
        for (fields[0] = p; i + 1 < nfields && (colon = strchr(p, ':')); i++) {
            *colon = '\0';
            p = colon + 1;
            fields[i + 1] = p;
        }
    }
    if (i + 1 != nfields) {
        free(text);
        return NULL;
    }
    return text;
}

/* A Redis SCAN cursor as Redis answers it: an unsigned 64-bit decimal. */
static int scan_cursor_valid(const char *s)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 20 || s[n] || (n > 1 && s[0] == '0'))
        return 0;
    errno = 0;
    (void)strtoull(s, NULL, 10);
    return errno == 0;
}

/* A bucket's second as msm_task_key() writes it, or "" for none. */
static int bucket_valid(const char *s)
{
    size_t n = strspn(s, "0123456789");
    return !s[n] && n <= BUCKET_DIGITS && !(n > 1 && s[0] == '0');
}

/* 400 for a cursor that is not one of ours, as fe_bad_query() words it. */
static void bad_cursor(sub_call_t *sc, const char *desc)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "cursor: %s", desc);
    fe_call_error(&sc->base, 400, "INVALID_ARGUMENT", msg,
                  json_pack("[{s:s,s:s}]", "field", "cursor", "description", desc));
}

/* ---- GET /v1/subscriptions/{name}/tasks?state=S, from the task records ---- */

static void on_records(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why &&
        (reply->type != REDIS_REPLY_ARRAY || reply->elements < 5 || (reply->elements - 5) % 2 != 0))
        why = "unexpected task records reply";
    for (size_t i = 1; !why && i < 5; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING)
            why = "unexpected task records reply";
    }
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    json_t *tasks = json_array();
    for (size_t i = 5; tasks && i + 1 < reply->elements; i += 2) {
        const redisReply *id = reply->element[i];
        json_t *t = id->type == REDIS_REPLY_STRING
                        ? fe_task_from_record(id->str, reply->element[i + 1])
                        : NULL;
        /* the script matched text; the state itself decides (a record that is not JSON, or
         * names the state elsewhere, is passed over) */
        const char *state = json_string_value(json_object_get(t, "state"));
        if (state && strcmp(state, sc->state) == 0)
            json_array_append_new(tasks, t);
        else
            json_decref(t);
    }
    json_t *next = json_null();
    if (msm_redis_reply_int(reply->element[0], 0) == 1) {
        json_decref(next);
        next = cursor_json("t1:%s:%s:%s:%s:%s", sc->state, reply->element[1]->str,
                           reply->element[2]->str, reply->element[3]->str,
                           reply->element[4]->str);
    }
    fe_call_json(&sc->base, 200, json_pack("{s:o*,s:o*}", "tasks", tasks, "next_cursor", next));
}

static void records_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char prefix[TASKS_KEY_MAX], pattern[2 * TASKS_KEY_MAX], needle[64], limit[24];
    /* the bucket keys' common part: MSM_KEY_TASK up to its second */
    int n = msm_redis_key(fe->fe_deps.redis, prefix, sizeof(prefix), MSM_KEY_TASK, sc->name,
                          0LL);
    if (n < 0) {
        fe_call_unavailable(&sc->base, msm_err_str(n));
        return;
    }
    prefix[n - 1] = '\0';
    char *w = pattern;
    for (const char *p = prefix; *p; p++) {
        if (strchr("*?[]\\", *p))
            *w++ = '\\'; /* the namespace is configuration and may hold glob characters */
        *w++ = *p;
    }
    *w++ = '*';
    *w = '\0';
    snprintf(needle, sizeof(needle), "\"state\":\"%s\"", sc->state);
    snprintf(limit, sizeof(limit), "%ld", sc->limit);
    const char *start[4] = {"0", "", "0", ""};
    const char *const *at = sc->walk ? sc->walk_at : start;
    const char *argv[] = {prefix, pattern, needle, limit, PAGE_WORK, at[WALK_SCAN],
                          at[WALK_BUCKET], at[WALK_HSCAN], at[WALK_AFTER], SCAN_COUNT,
                          HSCAN_COUNT};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_records_scan, on_records, sc, 1,
                            (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

/* "t1:<state>:<SCAN cursor>:<bucket>:<HSCAN cursor>:<last field>" for @p state, split into
 * sc->walk_at; 0 when it is not a cursor this listing answered. */
static int records_cursor(sub_call_t *sc, const char *cursor, const char *state)
{
    const char *f[6] = {0};
    char *text = cursor_split(cursor, f, 6);
    if (!text)
        return 0;
    int ok = strcmp(f[0], "t1") == 0 && strcmp(f[1], state) == 0 && scan_cursor_valid(f[2]) &&
             bucket_valid(f[3]) && scan_cursor_valid(f[4]) && strlen(f[5]) <= AFTER_MAX &&
             (*f[3] || (strcmp(f[4], "0") == 0 && !*f[5]));
    if (!ok) {
        free(text);
        return 0;
    }
    sc->walk = text;
    for (size_t i = 0; i < 4; i++)
        sc->walk_at[i] = f[2 + i];
    return 1;
}

void fe_records_list(fe_t *fe, msm_http_req_t *req, const char *state, long limit,
                     const char *cursor)
{
    sub_call_t *sc = fe_sub_call_start(fe, req, records_next);
    if (!sc)
        return;
    sc->limit = limit;
    if (!(sc->state = strdup(state))) {
        fe_call_error(&sc->base, 500, "INTERNAL", "out of memory", NULL);
        return;
    }
    if (cursor && *cursor && !records_cursor(sc, cursor, state)) {
        bad_cursor(sc, "must be a next_cursor this endpoint answered for the same state");
        return;
    }
    fe_sub_call_go(sc);
}

/* ---- GET /v1/subscriptions/{name}/keys?blocked=true ---- */

/* A held key as the API shows it; NULL when its holder is not readable JSON. */
static json_t *held_key(const redisReply *key, const redisReply *value, int64_t now_ms)
{
    json_t *h = fe_reply_json(value);
    const char *holder = json_string_value(json_object_get(h, "event_id"));
    json_t *out = NULL;
    if (key->type == REDIS_REPLY_STRING && holder) {
        /* numbers as the Lua encoder may write them (1.7e12 is still a time in ms) */
        int64_t since = (int64_t)json_number_value(json_object_get(h, "since_ms"));
        int64_t blocked = since > 0 && now_ms > since ? now_ms - since : 0;
        out = json_pack("{s:s%,s:s,s:I,s:I}", "key", key->str, key->len, "event_id", holder,
                        "attempts",
                        (json_int_t)json_number_value(json_object_get(h, "attempts")),
                        "blocked_ms", (json_int_t)blocked);
    }
    json_decref(h);
    return out;
}

static void on_held(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    sub_call_t *sc = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
                 (reply->elements - 3) % 2 != 0 || reply->element[1]->type != REDIS_REPLY_STRING ||
                 reply->element[2]->type != REDIS_REPLY_STRING))
        why = "unexpected held keys reply";
    if (why) {
        fe_call_unavailable(&sc->base, why);
        return;
    }
    int64_t now = msm_time_unix_ms();
    json_t *keys = json_array();
    for (size_t i = 3; keys && i + 1 < reply->elements; i += 2) {
        json_t *k = held_key(reply->element[i], reply->element[i + 1], now);
        if (k) /* a holder that is not JSON has nothing to show */
            json_array_append_new(keys, k);
    }
    json_t *next = json_null();
    if (msm_redis_reply_int(reply->element[0], 0) == 1) {
        json_decref(next);
        next = cursor_json("k1:%s:%s", reply->element[1]->str, reply->element[2]->str);
    }
    fe_call_json(&sc->base, 200, json_pack("{s:o*,s:o*}", "keys", keys, "next_cursor", next));
}

static void held_next(sub_call_t *sc)
{
    fe_t *fe = sc->base.fe;
    char held[TASKS_KEY_MAX], limit[24];
    SUB_KEY(sc, held, MSM_KEY_HELD);
    snprintf(limit, sizeof(limit), "%ld", sc->limit);
    const char *argv[] = {held,
                          limit,
                          PAGE_WORK,
                          sc->walk ? sc->walk_at[WALK_HSCAN] : "0",
                          sc->walk ? sc->walk_at[WALK_AFTER] : "",
                          HSCAN_COUNT};
    int rc = msm_redis_eval(fe->fe_deps.redis, fe->fe_held_scan, on_held, sc, 1,
                            (int)(sizeof(argv) / sizeof(argv[0])), argv, NULL);
    if (rc != MSM_OK)
        fe_call_unavailable(&sc->base, msm_err_str(rc));
}

/* "k1:<HSCAN cursor>:<last field>" split into sc->walk_at; 0 when it is not ours. */
static int held_cursor(sub_call_t *sc, const char *cursor)
{
    const char *f[3] = {0};
    char *text = cursor_split(cursor, f, 3);
    if (!text)
        return 0;
    if (strcmp(f[0], "k1") != 0 || !scan_cursor_valid(f[1]) || strlen(f[2]) > AFTER_MAX) {
        free(text);
        return 0;
    }
    sc->walk = text;
    sc->walk_at[WALK_HSCAN] = f[1];
    sc->walk_at[WALK_AFTER] = f[2];
    return 1;
}

static void held_list(msm_http_req_t *req, void *opaque)
{
    const char *blocked = msm_http_req_query(req, "blocked");
    const char *cursor = msm_http_req_query(req, "cursor");
    long limit;
    /* The only keys kept anywhere are the held ones: any other ask would be answered with
     * them all the same, so it is refused rather than ignored. */
    if (!blocked || strcmp(blocked, "true") != 0) {
        fe_bad_query(req, "blocked", "only blocked=true is supported: the keys held by a "
                                     "failing event");
        return;
    }
    if (fe_query_limit(req, HELD_LIMIT_DEF, HELD_LIMIT_MAX, &limit) != 0)
        return;
    sub_call_t *sc = fe_sub_call_start(opaque, req, held_next);
    if (!sc)
        return;
    sc->limit = limit;
    if (cursor && *cursor && !held_cursor(sc, cursor)) {
        bad_cursor(sc, "must be a next_cursor this endpoint answered");
        return;
    }
    fe_sub_call_go(sc);
}

int fe_listings_routes(fe_t *fe)
{
    static const msm_http_route_t routes[] = {
        {"GET", "/v1/subscriptions/{name}/keys", held_list},
    };
    return msm_http_server_routes(fe->fe_deps.http, routes, sizeof(routes) / sizeof(routes[0]),
                                  fe);
}
