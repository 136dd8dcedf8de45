/* SPDX-License-Identifier: MIT */
/* The Redis Streams log driver (docs/log-redis.md).
 *
 * A stream "name" with N partitions is N Redis streams plus a metadata hash, all under one
 * hash tag so that a batch append touching several partitions is one atomic script:
 *
 *     <ns>:log:{<name>}:meta      hash: partitions
 *     <ns>:log:{<name>}:<p>       stream, entries {k: key, v: value}
 *
 * Append: one EVALSHA per batch; the script XADDs every record and Redis answers once all
 * are written (and, with appendfsync always, fsynced). Consume: XREADGROUP on a connection
 * of the consumer's own (it blocks), first the member's own pending entries (a restart
 * resumes them), then new ones; entries other members left idle past the lease are taken
 * over with XPENDING IDLE + XCLAIM (the claiming consumer's lease). Acknowledgements are
 * batched per partition and sent as one XACK each before the loop sleeps; a script then trims
 * the stream behind its slowest group, at most once a second. Delete is one DEL of the meta
 * hash and the partitions; appends and group creation check the meta hash, so they never
 * re-create a deleted stream. */
#include "stream_int.h"
#include "msm/log.h"
#include "msm/redis.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX         512
#define READ_BLOCK_MS   1000 /* a blocked read returns this often; lets shutdown be prompt */
#define RETRY_DELAY_MS  200  /* after a failed read or setup */
#define CLAIM_MIN_MS    50
#define CLAIM_MAX_MS    5000
#define TRIM_EVERY_MS   1000 /* at most one trim per stream and client this often */

/* Atomic batch append. KEYS: the meta hash, then the partition streams; ARGV[1]: MAXLEN
 * (0 = none), then (partition index 1-based, key, value) triples. Returns the number of
 * entries added. A stream deleted since its partition count was read is not re-created. */
static const char APPEND_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  return redis.error_reply('NOTFOUND stream deleted')\n"
    "end\n"
    "local maxlen = tonumber(ARGV[1])\n"
    "local n = 0\n"
    "for i = 2, #ARGV, 3 do\n"
    "  local k = KEYS[tonumber(ARGV[i]) + 1]\n"
    "  if maxlen > 0 then\n"
    "    redis.call('XADD', k, 'MAXLEN', '~', maxlen, '*', 'k', ARGV[i+1], 'v', ARGV[i+2])\n"
    "  else\n"
    "    redis.call('XADD', k, '*', 'k', ARGV[i+1], 'v', ARGV[i+2])\n"
    "  end\n"
    "  n = n + 1\n"
    "end\n"
    "return n\n";

/* KEYS[1]: meta hash; ARGV[1]: partitions wanted. An existing stream keeps its count. */
static const char ENSURE_LUA[] =
    "redis.call('HSETNX', KEYS[1], 'partitions', ARGV[1])\n"
    "return tonumber(redis.call('HGET', KEYS[1], 'partitions'))\n";

/* KEYS[1]: meta hash, KEYS[2]: a partition; ARGV[1]: group. Creates the group at the oldest
 * entry (BUSYGROUP when it exists), but never re-creates the partition of a deleted stream. */
static const char GROUP_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  return redis.error_reply('NOSTREAM stream deleted')\n"
    "end\n"
    "return redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')\n";

/* Trim behind the slowest group. KEYS: the partition streams of one stream. Per partition,
 * what every group still needs starts at its oldest pending entry, or after its last
 * delivered one when nothing is pending; entries before the lowest such id over all groups
 * are removed, exactly (XTRIM MINID without ~). A partition without groups is kept whole: a
 * group may join later and start at the oldest entry. Returns the entries removed. Ids are
 * compared as decimal strings: sequence numbers may exceed Lua's exact integers. */
static const char TRIM_LUA[] =
    "local function split(id)\n"
    "  local d = string.find(id, '-', 1, true)\n"
    "  return string.sub(id, 1, d - 1), string.sub(id, d + 1)\n"
    "end\n"
    "local function numlt(a, b)\n"
    "  if #a ~= #b then return #a < #b end\n"
    "  return a < b\n"
    "end\n"
    "local function idlt(a, b)\n"
    "  local am, as = split(a)\n"
    "  local bm, bs = split(b)\n"
    "  if am ~= bm then return numlt(am, bm) end\n"
    "  return numlt(as, bs)\n"
    "end\n"
    "local function after(id)\n"
    "  local ms, seq = split(id)\n"
    "  if #seq < 15 then return ms .. '-' .. string.format('%d', tonumber(seq) + 1) end\n"
    "  return string.format('%d', tonumber(ms) + 1) .. '-0'\n"
    "end\n"
    "local removed = 0\n"
    "for _, k in ipairs(KEYS) do\n"
    "  if redis.call('EXISTS', k) == 1 then\n"
    "    local low = nil\n"
    "    for _, g in ipairs(redis.call('XINFO', 'GROUPS', k)) do\n"
    "      local f = {}\n"
    "      for i = 1, #g, 2 do f[g[i]] = g[i + 1] end\n"
    "      local keep\n"
    "      if tonumber(f['pending']) > 0 then\n"
    "        keep = redis.call('XPENDING', k, f['name'])[2]\n"
    "      else\n"
    "        keep = after(f['last-delivered-id'])\n"
    "      end\n"
    "      if not low or idlt(keep, low) then low = keep end\n"
    "    end\n"
    "    if low then removed = removed + redis.call('XTRIM', k, 'MINID', low) end\n"
    "  end\n"
    "end\n"
    "return removed\n";

/* ---- the client and its cache of partition counts ---- */

typedef struct append_s append_t;

typedef struct stream_info_s {
    struct stream_info_s *next;
    char *name;
    int partitions;        /* 0 while unknown */
    int looking_up;        /* an HGET is in flight */
    uint32_t round_robin;  /* next partition for records without a key */
    char *meta;            /* made by info_keys() once the count is known, with: */
    size_t meta_len;
    char **part_keys;
    size_t *part_key_lens;
    char (*part_index)[8]; /* "1".."n": the append script's names of the partitions */
    append_t *waiting;     /* appends waiting for the partition count, oldest first */
    append_t *waiting_tail;
    int trim_wanted;       /* acknowledged on since the last trim */
    int trimming;          /* a trim is in flight */
    uint64_t trimmed_ms;   /* when the last trim was sent */
    struct redis_log_s *trim_log;
} stream_info_t;

typedef struct redis_log_s {
    msm_redis_t *redis;
    msm_redis_script_t *append_script;
    msm_redis_script_t *ensure_script;
    msm_redis_script_t *group_script;
    msm_redis_script_t *trim_script;
    msm_timer_t trim_timer; /* armed only while a stream waits for its next trim */
    stream_info_t *streams;
    size_t pending_appends;
    size_t pending_acks;   /* XACKs sent and not answered: a drain waits for them */
    uint64_t maxlen;       /* approximate MAXLEN per partition; 0 = keep everything */
    uint64_t lease_ms;
    uint64_t append_timeout_ms;
    msm_loop_t *loop;
    append_t *deferred;    /* held while Redis is unreachable, oldest first */
    append_t *deferred_tail;
    msm_timer_t deferred_timer;
    int closing;
} redis_log_t;

struct append_s {
    append_t *next;          /* in stream_info_t.waiting */
    redis_log_t *log;
    stream_info_t *info;
    msm_stream_done_cb *cb;
    void *opaque;
    size_t n;
    msm_record_t *records;   /* copied, only while held back */
    uint64_t deadline_ms;    /* held past this: fails with MSM_ERR_TIMEOUT */
};

static void append_free(append_t *a);
static void append_complete(append_t *a, msm_err_t err, const char *reason);
static void on_deferred_timer(msm_loop_t *loop, void *opaque);
static void on_redis_state(msm_redis_t *r, int connected, const char *reason, void *opaque);

static redis_log_t *log_of(const msm_stream_t *s)
{
    return s->s_impl;
}

static uint32_t key_hash(const void *key, size_t len)
{
    /* FNV-1a: cheap, stable across versions and platforms. */
    const unsigned char *p = key;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static int partition_of(stream_info_t *info, const msm_record_t *r)
{
    if (r->key_len)
        return (int)(key_hash(r->key, r->key_len) % (uint32_t)info->partitions);
    return (int)(info->round_robin++ % (uint32_t)info->partitions);
}

static int meta_key(redis_log_t *lg, const char *name, char *buf, size_t n)
{
    return msm_redis_key(lg->redis, buf, n, "log:{%s}:meta", name);
}

static int part_key(redis_log_t *lg, const char *name, int p, char *buf, size_t n)
{
    return msm_redis_key(lg->redis, buf, n, "log:{%s}:%d", name, p);
}

static stream_info_t *info_find(redis_log_t *lg, const char *name, int create)
{
    for (stream_info_t *i = lg->streams; i; i = i->next) {
        if (strcmp(i->name, name) == 0)
            return i;
    }
    if (!create)
        return NULL;
    stream_info_t *i = calloc(1, sizeof(*i));
    if (!i || !(i->name = strdup(name))) {
        free(i);
        return NULL;
    }
    i->next = lg->streams;
    lg->streams = i;
    return i;
}

static void info_keys_free(stream_info_t *info)
{
    for (int p = 0; info->part_keys && p < info->partitions; p++)
        free(info->part_keys[p]);
    free(info->part_keys);
    free(info->part_key_lens);
    free(info->part_index);
    free(info->meta);
    info->part_keys = NULL;
    info->part_key_lens = NULL;
    info->part_index = NULL;
    info->meta = NULL;
}

/* Forgets the partition count of a stream deleted (or found deleted): the next append
 * looks it up again and finds the stream missing, or re-created with another count. */
static void info_forget(stream_info_t *info)
{
    if (info->looking_up || info->waiting)
        return; /* the lookup in flight answers afresh */
    info_keys_free(info);
    info->partitions = 0;
}

/* ---- init / destroy ---- */

static void warn_if_not_durable(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    (void)opaque;
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(reply->element[1]->str, "always") != 0)
        msm_log(MSM_LOG_WARN, "log",
                "redis appendfsync is '%s': an acknowledged append may be lost if the server "
                "crashes (see docs/log-redis.md)",
                reply->element[1]->str);
}

static int redis_init(msm_stream_t *s, char *errbuf, size_t errbuf_size)
{
    redis_log_t *lg = calloc(1, sizeof(*lg));
    if (!lg) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return MSM_ERR_NOMEM;
    }
    msm_redis_conf_t rc = {
        .url = s->s_conf.redis_url,
        .ns = s->s_conf.name_prefix,
        .command_timeout_ms = (uint32_t)s->s_conf.append_timeout_ms,
        .client_name = "msm-log",
        .backoff_max_ms = 1000, /* held appends wait on the reconnect: keep it short */
    };
    lg->redis = msm_redis_new(s->s_loop, &rc, errbuf, errbuf_size);
    lg->append_script = msm_redis_script_new(APPEND_LUA);
    lg->ensure_script = msm_redis_script_new(ENSURE_LUA);
    lg->group_script = msm_redis_script_new(GROUP_LUA);
    lg->trim_script = msm_redis_script_new(TRIM_LUA);
    if (!lg->redis || !lg->append_script || !lg->ensure_script || !lg->group_script ||
        !lg->trim_script) {
        if (lg->redis && errbuf_size)
            snprintf(errbuf, errbuf_size, "out of memory");
        msm_redis_free(lg->redis);
        msm_redis_script_free(lg->append_script);
        msm_redis_script_free(lg->ensure_script);
        msm_redis_script_free(lg->group_script);
        msm_redis_script_free(lg->trim_script);
        free(lg);
        return MSM_ERR_INVALID;
    }
    lg->maxlen = s->s_conf.redis_maxlen;
    lg->lease_ms = s->s_conf.lease_ms;
    lg->append_timeout_ms = s->s_conf.append_timeout_ms;
    lg->loop = s->s_loop;
    msm_timer_init(&lg->deferred_timer);
    msm_timer_init(&lg->trim_timer);
    msm_redis_set_state_cb(lg->redis, on_redis_state, lg);
    s->s_impl = lg;
    msm_redis_command(lg->redis, warn_if_not_durable, NULL, "CONFIG GET appendfsync");
    return MSM_OK;
}

static void redis_destroy(msm_stream_t *s)
{
    redis_log_t *lg = log_of(s);
    lg->closing = 1;
    msm_loop_timer_stop(lg->loop, &lg->deferred_timer);
    msm_loop_timer_stop(lg->loop, &lg->trim_timer);
    while (lg->deferred) {
        append_t *a = lg->deferred;
        lg->deferred = a->next;
        append_complete(a, MSM_ERR_SHUTDOWN, "log client closed");
    }
    /* Runs every pending reply callback with an error: appends complete with SHUTDOWN. */
    msm_redis_free(lg->redis);
    while (lg->streams) {
        stream_info_t *i = lg->streams;
        lg->streams = i->next;
        info_keys_free(i);
        free(i->name);
        free(i);
    }
    msm_redis_script_free(lg->append_script);
    msm_redis_script_free(lg->ensure_script);
    msm_redis_script_free(lg->group_script);
    msm_redis_script_free(lg->trim_script);
    free(lg);
}

/* ---- ensure ---- */

typedef struct {
    redis_log_t *log;
    char *name;
    msm_stream_done_cb *cb;
    void *opaque;
} ensure_t;

static void on_ensure(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    ensure_t *e = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && reply->type != REDIS_REPLY_INTEGER)
        why = "unexpected reply to ensure";
    if (why) {
        e->cb(e->log->closing ? MSM_ERR_SHUTDOWN : MSM_ERR_BACKEND, why, e->opaque);
    } else {
        stream_info_t *info = info_find(e->log, e->name, 1);
        if (info && !info->partitions)
            info->partitions = (int)reply->integer;
        e->cb(MSM_OK, NULL, e->opaque);
    }
    free(e->name);
    free(e);
}

static int redis_ensure(msm_stream_t *s, const char *name, int partitions, msm_stream_done_cb *cb,
                        void *opaque)
{
    redis_log_t *lg = log_of(s);
    char key[KEY_MAX], count[16];
    if (meta_key(lg, name, key, sizeof(key)) < 0)
        return MSM_ERR_TOOLARGE;
    snprintf(count, sizeof(count), "%d", partitions);
    ensure_t *e = calloc(1, sizeof(*e));
    if (!e || !(e->name = strdup(name))) {
        free(e);
        return MSM_ERR_NOMEM;
    }
    e->log = lg;
    e->cb = cb;
    e->opaque = opaque;
    const char *argv[] = {key, count};
    int rc = msm_redis_eval(lg->redis, lg->ensure_script, on_ensure, e, 1, 2, argv, NULL);
    if (rc != MSM_OK) {
        free(e->name);
        free(e);
    }
    return rc;
}

/* ---- delete: read the partition count, then one DEL of the meta hash and every partition
 * (their groups go with them). Appends and group creation check the meta hash in their
 * scripts, so neither re-creates a partition of the deleted stream. ---- */

static void remove_finish(ensure_t *e, msm_err_t err, const char *why)
{
    e->cb(err, why, e->opaque);
    free(e->name);
    free(e);
}

static void on_removed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    ensure_t *e = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    stream_info_t *info = info_find(e->log, e->name, 0);
    if (info)
        info_forget(info);
    remove_finish(e, why ? (e->log->closing ? MSM_ERR_SHUTDOWN : MSM_ERR_BACKEND) : MSM_OK, why);
}

static void on_remove_partitions(msm_redis_t *r, redisReply *reply, const char *err,
                                 void *opaque)
{
    ensure_t *e = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        remove_finish(e, e->log->closing ? MSM_ERR_SHUTDOWN : MSM_ERR_BACKEND, why);
        return;
    }
    long n = reply->type == REDIS_REPLY_STRING ? strtol(reply->str, NULL, 10) : 0;
    if (n < 0 || n > 4096)
        n = 0; /* not a count msm wrote: remove the meta hash alone */
    const char **keys = calloc((size_t)n + 2, sizeof(*keys));
    int rc = keys ? MSM_OK : MSM_ERR_NOMEM;
    char key[KEY_MAX];
    if (rc == MSM_OK) {
        keys[0] = "DEL";
        rc = meta_key(e->log, e->name, key, sizeof(key)) < 0 ? MSM_ERR_TOOLARGE
             : (keys[1] = strdup(key))                      ? MSM_OK
                                                            : MSM_ERR_NOMEM;
    }
    for (long p = 0; rc == MSM_OK && p < n; p++) {
        if (part_key(e->log, e->name, (int)p, key, sizeof(key)) < 0)
            rc = MSM_ERR_TOOLARGE;
        else if (!(keys[p + 2] = strdup(key)))
            rc = MSM_ERR_NOMEM;
    }
    if (rc == MSM_OK)
        rc = msm_redis_command_argv(r, on_removed, e, (int)n + 2, keys, NULL);
    for (long i = 1; keys && i < n + 2; i++)
        free((char *)keys[i]);
    free(keys);
    if (rc != MSM_OK)
        remove_finish(e, rc, msm_err_str(rc));
}

static int redis_remove(msm_stream_t *s, const char *name, msm_stream_done_cb *cb, void *opaque)
{
    redis_log_t *lg = log_of(s);
    char key[KEY_MAX];
    if (lg->closing)
        return MSM_ERR_SHUTDOWN;
    if (meta_key(lg, name, key, sizeof(key)) < 0)
        return MSM_ERR_TOOLARGE;
    ensure_t *e = calloc(1, sizeof(*e));
    if (!e || !(e->name = strdup(name))) {
        free(e);
        return MSM_ERR_NOMEM;
    }
    *e = (ensure_t){.log = lg, .name = e->name, .cb = cb, .opaque = opaque};
    int rc = msm_redis_command(lg->redis, on_remove_partitions, e, "HGET %s partitions", key);
    if (rc != MSM_OK) {
        free(e->name);
        free(e);
    }
    return rc;
}

/* ---- append ---- */

static void append_complete(append_t *a, msm_err_t err, const char *reason)
{
    redis_log_t *lg = a->log;
    lg->pending_appends--;
    msm_stream_done_cb *cb = a->cb;
    void *opaque = a->opaque;
    append_free(a);
    cb(err, reason, opaque);
}

static void on_append(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    append_t *a = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (!why && (reply->type != REDIS_REPLY_INTEGER || (size_t)reply->integer != a->n))
        why = "append script wrote an unexpected number of entries";
    if (why) {
        msm_err_t code = a->log->closing ? MSM_ERR_SHUTDOWN : MSM_ERR_BACKEND;
        if (err && strstr(err, "timed out"))
            code = MSM_ERR_TIMEOUT;
        if (!err && strstr(why, "NOTFOUND")) {
            code = MSM_ERR_NOTFOUND;
            why = "stream not found (deleted)";
            info_forget(a->info);
        }
        append_complete(a, code, why);
    } else {
        append_complete(a, MSM_OK, NULL);
    }
}

/* The partition keys and the script's names for them ("1".."n"), made once per stream. */
static int info_keys(redis_log_t *lg, stream_info_t *info)
{
    if (info->part_keys)
        return MSM_OK;
    int np = info->partitions;
    char **keys = calloc((size_t)np, sizeof(*keys));
    size_t *lens = calloc((size_t)np, sizeof(*lens));
    char(*index)[8] = calloc((size_t)np, sizeof(*index));
    char meta[KEY_MAX];
    int meta_len = meta_key(lg, info->name, meta, sizeof(meta));
    int rc = keys && lens && index ? MSM_OK : MSM_ERR_NOMEM;
    if (rc == MSM_OK && meta_len < 0)
        rc = MSM_ERR_TOOLARGE;
    if (rc == MSM_OK && !(info->meta = strdup(meta)))
        rc = MSM_ERR_NOMEM;
    for (int p = 0; rc == MSM_OK && p < np; p++) {
        char key[KEY_MAX];
        int len = part_key(lg, info->name, p, key, sizeof(key));
        if (len < 0) {
            rc = MSM_ERR_TOOLARGE;
        } else if (!(keys[p] = strdup(key))) {
            rc = MSM_ERR_NOMEM;
        } else {
            lens[p] = (size_t)len;
            snprintf(index[p], sizeof(index[p]), "%d", (p + 1) % 10000000);
        }
    }
    if (rc != MSM_OK) {
        for (int p = 0; keys && p < np; p++)
            free(keys[p]);
        free(keys);
        free(lens);
        free(index);
        free(info->meta);
        info->meta = NULL;
        return rc;
    }
    info->meta_len = (size_t)meta_len;
    info->part_keys = keys;
    info->part_key_lens = lens;
    info->part_index = index;
    return MSM_OK;
}

/* Sends the batch as one script call. Arguments point into @p records (copied by eval). */
static int append_send(append_t *a, const msm_record_t *records)
{
    redis_log_t *lg = a->log;
    stream_info_t *info = a->info;
    int rc = info_keys(lg, info);
    if (rc != MSM_OK)
        return rc;
    int nkeys = info->partitions + 1;
    size_t argc = (size_t)nkeys + 1 + 3 * a->n;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *argvlen = malloc(argc * sizeof(*argvlen));
    rc = MSM_ERR_NOMEM;
    if (!argv || !argvlen)
        goto out;
    argv[0] = info->meta;
    argvlen[0] = info->meta_len;
    for (int p = 0; p < info->partitions; p++) {
        argv[p + 1] = info->part_keys[p];
        argvlen[p + 1] = info->part_key_lens[p];
    }
    char maxlen[24];
    size_t j = (size_t)nkeys;
    argvlen[j] = (size_t)snprintf(maxlen, sizeof(maxlen), "%" PRIu64, lg->maxlen);
    argv[j++] = maxlen;
    for (size_t i = 0; i < a->n; i++) {
        const char *index = info->part_index[partition_of(info, &records[i])];
        argv[j] = index;
        argvlen[j++] = strlen(index);
        argv[j] = records[i].key_len ? records[i].key : "";
        argvlen[j++] = records[i].key_len;
        argv[j] = records[i].value_len ? records[i].value : "";
        argvlen[j++] = records[i].value_len;
    }
    rc = msm_redis_eval(lg->redis, lg->append_script, on_append, a, nkeys, (int)argc, argv,
                        argvlen);
out:
    free(argv);
    free(argvlen);
    return rc;
}

static void append_free(append_t *a)
{
    if (a->records) {
        for (size_t i = 0; i < a->n; i++)
            free((void *)a->records[i].value); /* key and value share one allocation */
        free(a->records);
    }
    free(a);
}

static int copy_records(append_t *a, const msm_record_t *records)
{
    if (a->records || !a->n)
        return MSM_OK;
    a->records = calloc(a->n, sizeof(*a->records));
    if (!a->records)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < a->n; i++) {
        const msm_record_t *r = &records[i];
        char *buf = malloc(r->value_len + r->key_len + 1);
        if (!buf)
            return MSM_ERR_NOMEM; /* append_free frees what was copied */
        if (r->value_len)
            memcpy(buf, r->value, r->value_len);
        if (r->key_len)
            memcpy(buf + r->value_len, r->key, r->key_len);
        a->records[i] = (msm_record_t){.value = buf, .value_len = r->value_len,
                                       .key = buf + r->value_len, .key_len = r->key_len};
    }
    return MSM_OK;
}

static void queue_push(append_t **head, append_t **tail, append_t *a)
{
    a->next = NULL;
    if (*tail)
        (*tail)->next = a;
    else
        *head = a;
    *tail = a;
}

static void on_partitions(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    stream_info_t *info = opaque;
    info->looking_up = 0;
    const char *why = msm_redis_reply_err(reply, err);
    msm_err_t code = MSM_ERR_BACKEND;
    if (!why) {
        long n = reply->type == REDIS_REPLY_STRING ? strtol(reply->str, NULL, 10) : 0;
        if (n >= 1) {
            info->partitions = (int)n;
        } else {
            why = "stream not found (ensure it first)";
            code = MSM_ERR_NOTFOUND;
        }
    }
    append_t *list = info->waiting;
    info->waiting = info->waiting_tail = NULL;
    while (list) {
        append_t *a = list;
        list = a->next;
        if (why) {
            append_complete(a, a->log->closing ? MSM_ERR_SHUTDOWN : code, why);
            continue;
        }
        int rc = append_send(a, a->records);
        if (rc != MSM_OK)
            append_complete(a, rc, msm_err_str(rc));
    }
}

/* Sends @p a now, or holds it (with a copy of the records) until Redis is reachable or the
 * stream's partition count is known. Order is kept: held appends go out first-in first-out.
 * @p records are the caller's, or a->records once copied. */
static int append_dispatch(append_t *a, const msm_record_t *records)
{
    redis_log_t *lg = a->log;
    stream_info_t *info = a->info;
    if (!msm_redis_connected(lg->redis) || lg->deferred) {
        int rc = copy_records(a, records);
        if (rc != MSM_OK)
            return rc;
        queue_push(&lg->deferred, &lg->deferred_tail, a);
        if (!msm_timer_active(&lg->deferred_timer))
            msm_loop_timer_start(lg->loop, &lg->deferred_timer, 100, on_deferred_timer, lg);
        return MSM_OK;
    }
    if (info->partitions && !info->waiting)
        return append_send(a, records);
    int rc = copy_records(a, records);
    if (rc == MSM_OK && !info->looking_up) {
        char key[KEY_MAX];
        rc = meta_key(lg, info->name, key, sizeof(key)) < 0
                 ? MSM_ERR_TOOLARGE
                 : msm_redis_command(lg->redis, on_partitions, info, "HGET %s partitions", key);
        info->looking_up = rc == MSM_OK;
    }
    if (rc == MSM_OK)
        queue_push(&info->waiting, &info->waiting_tail, a);
    return rc;
}

/* Fails held appends that have waited past the append timeout. */
static void on_deferred_timer(msm_loop_t *loop, void *opaque)
{
    redis_log_t *lg = opaque;
    uint64_t now = msm_loop_now_ms(loop);
    while (lg->deferred && lg->deferred->deadline_ms <= now) {
        append_t *a = lg->deferred;
        lg->deferred = a->next;
        if (!lg->deferred)
            lg->deferred_tail = NULL;
        append_complete(a, MSM_ERR_TIMEOUT, "redis unreachable for the whole append timeout");
    }
    if (lg->deferred)
        msm_loop_timer_start(loop, &lg->deferred_timer, 100, on_deferred_timer, lg);
}

/* Connected again: send what was held, oldest first. */
static void on_redis_state(msm_redis_t *r, int connected, const char *reason, void *opaque)
{
    (void)r;
    redis_log_t *lg = opaque;
    if (!connected) {
        msm_log(MSM_LOG_WARN, "log", "redis connection lost (%s): appends are held for up to "
                "%" PRIu64 " ms", reason ? reason : "?", lg->append_timeout_ms);
        return;
    }
    append_t *list = lg->deferred;
    lg->deferred = lg->deferred_tail = NULL;
    while (list) {
        append_t *a = list;
        list = a->next;
        int rc = append_dispatch(a, a->records);
        if (rc != MSM_OK)
            append_complete(a, rc, msm_err_str(rc));
    }
}

/* An append of no records is sent like any other: it completes after the appends before it,
 * on a later loop turn. */
static int redis_append(msm_stream_t *s, const char *name, const msm_record_t *records, size_t n,
                        msm_stream_done_cb *cb, void *opaque)
{
    redis_log_t *lg = log_of(s);
    if (lg->closing)
        return MSM_ERR_SHUTDOWN;
    stream_info_t *info = info_find(lg, name, 1);
    append_t *a = calloc(1, sizeof(*a));
    if (!info || !a) {
        free(a);
        return MSM_ERR_NOMEM;
    }
    *a = (append_t){.log = lg, .info = info, .cb = cb, .opaque = opaque, .n = n,
                    .deadline_ms = msm_loop_now_ms(s->s_loop) + lg->append_timeout_ms};
    int rc = append_dispatch(a, records);
    if (rc != MSM_OK) {
        append_free(a);
        return rc;
    }
    lg->pending_appends++;
    return MSM_OK;
}

static size_t redis_pending_appends(const msm_stream_t *s)
{
    return log_of(s)->pending_appends + log_of(s)->pending_acks;
}

/* ---- consumers ---- */

typedef struct rbatch_s rbatch_t;

/* What the application sees is the first member; the rest finds the batch again. */
typedef struct {
    msm_stream_msg_t m;
    rbatch_t *batch;
} rmsg_t;

/* One read's records in one allocation, freed when the last of them is acknowledged. */
struct rbatch_s {
    rbatch_t *prev, *next; /* the consumer's live batches */
    size_t refs;
    rmsg_t msgs[];         /* then the keys and values */
};

typedef struct {
    char (*ids)[48];
    size_t n, cap;
} ack_queue_t;

typedef enum { PHASE_SETUP, PHASE_HISTORY, PHASE_LIVE } phase_t;

typedef struct {
    msm_consumer_t base; /* first: the interface's view */
    msm_stream_t *stream;
    redis_log_t *log;
    msm_redis_t *reader; /* the consumer's own connection: XREADGROUP blocks */
    char *name, *group, *member;
    msm_consumer_batch_cb *cb;
    void *opaque;
    size_t max_batch, max_unacked, unacked;
    uint64_t lease_ms;       /* others' entries idle this long are taken over */
    phase_t phase;
    int nparts;
    char **keys;             /* partition stream keys */
    char (*history)[48];     /* per partition: own-PEL cursor; "" once read to the end */
    char (*claim_from)[48];  /* per partition: XPENDING start */
    ack_queue_t *acks;       /* per partition */
    rbatch_t *batches;
    int reading;             /* a read is in flight on the reader */
    unsigned rotate;         /* first partition of the next read when room is short */
    int claiming;            /* claims in flight on the shared client */
    int setup_pending;       /* setup replies awaited */
    int setup_failed;
    size_t shared_inflight;  /* our commands on the shared client (they hold a pointer to us) */
    int in_callback;
    int freed;
    msm_timer_t retry_timer;
    msm_timer_t claim_timer;
} rconsumer_t;

static void consumer_read(rconsumer_t *c);
static void consumer_setup(rconsumer_t *c);
static void consumer_release(rconsumer_t *c);

static size_t room_of(const rconsumer_t *c)
{
    return c->unacked >= c->max_unacked ? 0 : c->max_unacked - c->unacked;
}

/* How many entries to ask each partition for: the whole read stays within the room left. */
static size_t read_count(const rconsumer_t *c)
{
    size_t per = room_of(c) / (size_t)c->nparts; /* below 1: fewer partitions are asked */
    if (per < 1)
        per = 1;
    return per < c->max_batch ? per : c->max_batch;
}

static int partition_of_key(const rconsumer_t *c, const char *key, size_t len)
{
    for (int p = 0; p < c->nparts; p++) {
        if (strlen(c->keys[p]) == len && memcmp(c->keys[p], key, len) == 0)
            return p;
    }
    return -1;
}

static void batch_unref(rconsumer_t *c, rbatch_t *b)
{
    if (--b->refs)
        return;
    if (b->prev)
        b->prev->next = b->next;
    else
        c->batches = b->next;
    if (b->next)
        b->next->prev = b->prev;
    free(b);
}

static const redisReply *entry_field(const redisReply *fields, const char *name)
{
    if (!fields || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i];
        if (f->type == REDIS_REPLY_STRING && strcmp(f->str, name) == 0 &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING)
            return fields->element[i + 1];
    }
    return NULL;
}

/* An entry is [id, [field, value, ...]]; the fields are nil when the entry was trimmed. */
static int entry_ok(const redisReply *e)
{
    return e && e->type == REDIS_REPLY_ARRAY && e->elements == 2 &&
           e->element[0]->type == REDIS_REPLY_STRING && e->element[0]->len < 48;
}

/* Queues the acknowledgement of an entry id (the XACK goes out before the loop sleeps). */
static void ack_queue_push(ack_queue_t *q, const char *id, size_t len)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        void *ids = realloc(q->ids, cap * sizeof(*q->ids));
        if (!ids)
            return; /* unacknowledged: redelivered after the lease, never lost */
        q->ids = ids;
        q->cap = cap;
    }
    memcpy(q->ids[q->n], id, len);
    q->ids[q->n][len] = '\0';
    q->n++;
}

/* Reads this member's own pending list again from its start: entries may have entered it
 * without our seeing them (a lost reply), or been read and not delivered. */
static void reread_own_pending(rconsumer_t *c)
{
    c->phase = PHASE_HISTORY;
    for (int p = 0; p < c->nparts; p++)
        strcpy(c->history[p], "0");
}

/* Delivers entries of several partitions: entries[i] belongs to partition parts[i]. Trimmed
 * entries (no fields) are acknowledged at once: there is nothing left to deliver. */
static void deliver(rconsumer_t *c, const redisReply *const *entries, const int *parts, size_t n,
                    uint32_t redelivered)
{
    size_t bytes = 0, good = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *fields = entries[i]->element[1];
        const redisReply *k = entry_field(fields, "k"), *v = entry_field(fields, "v");
        if (!v) {
            ack_queue_push(&c->acks[parts[i]], entries[i]->element[0]->str,
                           entries[i]->element[0]->len);
            continue;
        }
        bytes += v->len + (k ? k->len : 0);
        good++;
    }
    if (!good)
        return;
    rbatch_t *b = malloc(sizeof(*b) + good * sizeof(rmsg_t) + bytes);
    msm_stream_msg_t **list = malloc(good * sizeof(*list));
    if (!b || !list) {
        free(b);
        free(list);
        reread_own_pending(c); /* the entries are ours now: deliver them on a later read */
        return;
    }
    char *data = (char *)&b->msgs[good];
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *fields = entries[i]->element[1];
        const redisReply *k = entry_field(fields, "k"), *v = entry_field(fields, "v");
        if (!v)
            continue;
        rmsg_t *m = &b->msgs[j];
        memset(m, 0, sizeof(*m));
        m->batch = b;
        m->m.stream = c->name;
        m->m.partition = parts[i];
        m->m.redelivered = redelivered;
        memcpy(m->m.position, entries[i]->element[0]->str, entries[i]->element[0]->len + 1);
        memcpy(data, v->str, v->len);
        m->m.value = data;
        m->m.value_len = v->len;
        data += v->len;
        if (k && k->len) {
            memcpy(data, k->str, k->len);
            m->m.key = data;
            m->m.key_len = k->len;
            data += k->len;
        }
        list[j++] = &m->m;
    }
    b->refs = good;
    b->prev = NULL;
    b->next = c->batches;
    if (c->batches)
        c->batches->prev = b;
    c->batches = b;
    c->unacked += good;
    c->in_callback++;
    for (size_t off = 0; off < good && !c->freed; off += c->max_batch) {
        size_t len = good - off < c->max_batch ? good - off : c->max_batch;
        c->cb(&c->base, list + off, len, c->opaque);
    }
    c->in_callback--;
    free(list);
}

static void on_retry(msm_loop_t *loop, void *opaque);

static void retry_later(rconsumer_t *c)
{
    if (!c->freed && !msm_timer_active(&c->retry_timer))
        msm_loop_timer_start(c->stream->s_loop, &c->retry_timer, RETRY_DELAY_MS, on_retry, c);
}

static void on_retry(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    rconsumer_t *c = opaque;
    if (c->phase == PHASE_SETUP)
        consumer_setup(c);
    else
        consumer_read(c);
}

static void on_read(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    rconsumer_t *c = opaque;
    c->reading = 0;
    if (c->freed)
        return; /* the reader is being freed with the consumer */
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        if (strstr(why, "NOGROUP")) {
            c->phase = PHASE_SETUP; /* group or stream gone (server reset): make them again */
        } else if (c->phase == PHASE_LIVE) {
            reread_own_pending(c); /* a lost reply may have moved entries into it */
        }
        msm_log(MSM_LOG_DEBUG, "log", "read %s/%s: %s", c->name, c->group, why);
        retry_later(c);
        return;
    }
    /* [[key, [entry, ...]], ...] or nil when a blocked read timed out. */
    size_t total = 0;
    if (reply->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *s = reply->element[i];
            if (s->type == REDIS_REPLY_ARRAY && s->elements == 2 &&
                s->element[1]->type == REDIS_REPLY_ARRAY)
                total += s->element[1]->elements;
        }
    }
    const redisReply **entries = total ? malloc(total * sizeof(*entries)) : NULL;
    int *parts = total ? malloc(total * sizeof(*parts)) : NULL;
    if (total && (!entries || !parts)) {
        free(entries);
        free(parts);
        retry_later(c);
        return;
    }
    size_t n = 0;
    int history = c->phase == PHASE_HISTORY;
    for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
        const redisReply *s = reply->element[i];
        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2 ||
            s->element[0]->type != REDIS_REPLY_STRING || s->element[1]->type != REDIS_REPLY_ARRAY)
            continue;
        int p = partition_of_key(c, s->element[0]->str, s->element[0]->len);
        if (p < 0)
            continue;
        const redisReply *list = s->element[1];
        if (history && list->elements == 0)
            c->history[p][0] = '\0'; /* this partition's pending entries are all read */
        for (size_t e = 0; e < list->elements; e++) {
            if (!entry_ok(list->element[e]))
                continue;
            if (history)
                memcpy(c->history[p], list->element[e]->element[0]->str,
                       list->element[e]->element[0]->len + 1);
            entries[n] = list->element[e];
            parts[n++] = p;
        }
    }
    if (history) {
        int done = 1;
        for (int p = 0; p < c->nparts; p++)
            done &= c->history[p][0] == '\0';
        if (done)
            c->phase = PHASE_LIVE;
    }
    deliver(c, entries, parts, n, history);
    free(entries);
    free(parts);
    if (c->freed) {
        consumer_release(c);
        return;
    }
    consumer_read(c);
}

/* Issues the next read if there is room and none is in flight. */
static void consumer_read(rconsumer_t *c)
{
    if (c->freed || c->reading || c->phase == PHASE_SETUP || room_of(c) == 0)
        return;
    int history = c->phase == PHASE_HISTORY;
    char count[24];
    snprintf(count, sizeof(count), "%zu", read_count(c));
    const char *fixed[] = {"XREADGROUP", "GROUP", c->group, c->member, "COUNT", count,
                           "BLOCK", "1000", "STREAMS"};
    size_t nfixed = history ? 6 : 9;
    size_t cap = nfixed + 1 + 2 * (size_t)c->nparts;
    const char **argv = malloc(cap * sizeof(*argv));
    if (!argv) {
        retry_later(c);
        return;
    }
    size_t argc = 0;
    for (size_t i = 0; i < nfixed; i++)
        argv[argc++] = fixed[i];
    if (history)
        argv[argc++] = "STREAMS";
    /* With less room than partitions, ask only as many partitions as there is room for,
     * starting one further each time so that none is starved. */
    size_t room = room_of(c), picked = 0;
    int *chosen = malloc((size_t)c->nparts * sizeof(*chosen));
    if (!chosen) {
        free(argv);
        retry_later(c);
        return;
    }
    for (int i = 0; i < c->nparts && picked < room; i++) {
        int p = (int)((c->rotate + (unsigned)i) % (unsigned)c->nparts);
        if (!history || c->history[p][0])
            chosen[picked++] = p;
    }
    c->rotate++;
    for (size_t i = 0; i < picked; i++)
        argv[argc++] = c->keys[chosen[i]];
    for (size_t i = 0; i < picked; i++)
        argv[argc++] = history ? c->history[chosen[i]] : ">";
    free(chosen);
    int rc = history ? msm_redis_command_argv(c->reader, on_read, c, (int)argc, argv, NULL)
                     : msm_redis_command_blocking_argv(c->reader, READ_BLOCK_MS, on_read, c,
                                                       (int)argc, argv, NULL);
    free(argv);
    if (rc == MSM_OK)
        c->reading = 1;
    else
        retry_later(c);
}

/* ---- setup: learn the partitions, create the group on each ---- */

/* Every command a consumer sends on the shared client goes through here: the client keeps
 * a pointer to the consumer until the reply, so the consumer outlives its commands. */
static int shared_command_ctx(rconsumer_t *c, msm_redis_reply_cb *cb, void *opaque, int argc,
                              const char **argv, const size_t *argvlen)
{
    int rc = msm_redis_command_argv(c->log->redis, cb, opaque, argc, argv, argvlen);
    if (rc == MSM_OK)
        c->shared_inflight++;
    return rc;
}

static int shared_command(rconsumer_t *c, msm_redis_reply_cb *cb, int argc, const char **argv,
                          const size_t *argvlen)
{
    int rc = msm_redis_command_argv(c->log->redis, cb, c, argc, argv, argvlen);
    if (rc == MSM_OK)
        c->shared_inflight++;
    return rc;
}

static int shared_eval(rconsumer_t *c, const msm_redis_script_t *script, msm_redis_reply_cb *cb,
                       int nkeys, int argc, const char **argv)
{
    int rc = msm_redis_eval(c->log->redis, script, cb, c, nkeys, argc, argv, NULL);
    if (rc == MSM_OK)
        c->shared_inflight++;
    return rc;
}

/* Called first in every shared-client callback: 0 when the consumer is gone. */
static int shared_reply(rconsumer_t *c)
{
    c->shared_inflight--;
    if (c->freed) {
        if (c->shared_inflight == 0)
            consumer_release(c);
        return 0;
    }
    return 1;
}

static int keys_make(rconsumer_t *c, int nparts)
{
    c->keys = calloc((size_t)nparts, sizeof(*c->keys));
    c->history = calloc((size_t)nparts, sizeof(*c->history));
    c->claim_from = calloc((size_t)nparts, sizeof(*c->claim_from));
    c->acks = calloc((size_t)nparts, sizeof(*c->acks));
    if (!c->keys || !c->history || !c->claim_from || !c->acks)
        return MSM_ERR_NOMEM;
    c->nparts = nparts;
    for (int p = 0; p < nparts; p++) {
        char key[KEY_MAX];
        if (part_key(c->log, c->name, p, key, sizeof(key)) < 0)
            return MSM_ERR_TOOLARGE;
        if (!(c->keys[p] = strdup(key)))
            return MSM_ERR_NOMEM;
        strcpy(c->history[p], "0");
        strcpy(c->claim_from[p], "-");
    }
    return MSM_OK;
}

static void on_group_created(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    rconsumer_t *c = opaque;
    if (!shared_reply(c))
        return;
    const char *why = msm_redis_reply_err(reply, err);
    if (why && !strstr(why, "BUSYGROUP")) {
        /* NOSTREAM: deleted between our reading its partitions and now; wait for it. */
        msm_log(strstr(why, "NOSTREAM") ? MSM_LOG_DEBUG : MSM_LOG_WARN, "log",
                "creating group %s on %s: %s", c->group, c->name, why);
        c->setup_failed = 1;
    }
    if (--c->setup_pending)
        return;
    if (c->setup_failed) {
        retry_later(c);
        return;
    }
    reread_own_pending(c); /* a restarted member resumes its own entries first */
    consumer_read(c);
}

static void on_consumer_partitions(msm_redis_t *r, redisReply *reply, const char *err,
                                   void *opaque)
{
    (void)r;
    rconsumer_t *c = opaque;
    if (!shared_reply(c))
        return;
    const char *why = msm_redis_reply_err(reply, err);
    long n = !why && reply->type == REDIS_REPLY_STRING ? strtol(reply->str, NULL, 10) : 0;
    if (n < 1) {
        /* Not there yet (or Redis is away): a consumer may start before the stream. */
        retry_later(c);
        return;
    }
    if (!c->keys && keys_make(c, (int)n) != MSM_OK) {
        retry_later(c);
        return;
    }
    char meta[KEY_MAX];
    if (meta_key(c->log, c->name, meta, sizeof(meta)) < 0) {
        retry_later(c);
        return;
    }
    /* New groups start at the oldest entry ("0"), like auto.offset.reset=earliest. */
    c->setup_failed = 0;
    for (int p = 0; p < c->nparts; p++) {
        const char *argv[] = {meta, c->keys[p], c->group};
        if (shared_eval(c, c->log->group_script, on_group_created, 2, 3, argv) == MSM_OK)
            c->setup_pending++;
        else
            c->setup_failed = 1;
    }
    if (!c->setup_pending)
        retry_later(c);
}

static void consumer_setup(rconsumer_t *c)
{
    char key[KEY_MAX];
    if (meta_key(c->log, c->name, key, sizeof(key)) < 0)
        return;
    const char *argv[] = {"HGET", key, "partitions"};
    if (shared_command(c, on_consumer_partitions, 3, argv, NULL) != MSM_OK)
        retry_later(c);
}

/* ---- taking over entries other members left idle past the lease ---- */

/* One partition's claim: XPENDING IDLE <lease> finds idle entries of other members, XCLAIM
 * takes them (only those still idle: a member that acknowledged meanwhile keeps them). */
typedef struct {
    rconsumer_t *c;
    int p;
} claim_t;

static void on_claim_timer(msm_loop_t *loop, void *opaque);

static void claim_done(claim_t *cl, int rearm_now)
{
    rconsumer_t *c = cl->c;
    free(cl);
    if (--c->claiming == 0 && rearm_now && !c->freed)
        msm_loop_timer_start(c->stream->s_loop, &c->claim_timer, 0, on_claim_timer, c);
}

static void on_claimed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    claim_t *cl = opaque;
    rconsumer_t *c = cl->c;
    if (!shared_reply(c)) {
        free(cl);
        return;
    }
    const char *why = msm_redis_reply_err(reply, err);
    if (why && c->phase == PHASE_LIVE)
        reread_own_pending(c); /* the claim may have happened without our hearing it */
    size_t n = 0;
    if (!why && reply->type == REDIS_REPLY_ARRAY && reply->elements) {
        const redisReply **entries = malloc(reply->elements * sizeof(*entries));
        int *parts = malloc(reply->elements * sizeof(*parts));
        if (entries && parts) {
            for (size_t i = 0; i < reply->elements; i++) {
                if (!entry_ok(reply->element[i]))
                    continue;
                entries[n] = reply->element[i];
                parts[n++] = cl->p;
            }
            deliver(c, entries, parts, n, 1);
        }
        free(entries);
        free(parts);
    }
    claim_done(cl, n > 0);
    if (c->freed && c->in_callback == 0 && c->shared_inflight == 0)
        consumer_release(c);
}

static void on_pending(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    claim_t *cl = opaque;
    rconsumer_t *c = cl->c;
    if (!shared_reply(c)) {
        free(cl);
        return;
    }
    const char *why = msm_redis_reply_err(reply, err);
    if (why || reply->type != REDIS_REPLY_ARRAY) {
        claim_done(cl, 0);
        return;
    }
    /* [[id, consumer, idle, deliveries], ...]: take the ones of other members. */
    size_t count = read_count(c), n = 0;
    const char **argv = malloc((6 + reply->elements) * sizeof(*argv));
    if (!argv) {
        claim_done(cl, 0);
        return;
    }
    char lease[24];
    snprintf(lease, sizeof(lease), "%" PRIu64, c->lease_ms);
    argv[n++] = "XCLAIM";
    argv[n++] = c->keys[cl->p];
    argv[n++] = c->group;
    argv[n++] = c->member;
    argv[n++] = lease;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(e->element[1]->str, c->member) != 0)
            argv[n++] = e->element[0]->str;
    }
    /* Page on through this partition's pending list, or start over from its head. */
    const redisReply *last = reply->elements ? reply->element[reply->elements - 1] : NULL;
    if (reply->elements >= count && last && last->type == REDIS_REPLY_ARRAY &&
        last->elements >= 1 && last->element[0]->type == REDIS_REPLY_STRING &&
        last->element[0]->len < 46)
        snprintf(c->claim_from[cl->p], sizeof(c->claim_from[cl->p]), "(%s",
                 last->element[0]->str);
    else
        strcpy(c->claim_from[cl->p], "-");
    if (n > 5 && shared_command_ctx(c, on_claimed, cl, (int)n, argv, NULL) == MSM_OK) {
        free(argv);
        return;
    }
    free(argv);
    claim_done(cl, strcmp(c->claim_from[cl->p], "-") != 0);
}

static void on_claim_timer(msm_loop_t *loop, void *opaque)
{
    rconsumer_t *c = opaque;
    uint64_t every = c->lease_ms / 2;
    every = every < CLAIM_MIN_MS ? CLAIM_MIN_MS : every > CLAIM_MAX_MS ? CLAIM_MAX_MS : every;
    msm_loop_timer_start(loop, &c->claim_timer, every, on_claim_timer, c);
    if (c->phase == PHASE_SETUP || c->claiming || room_of(c) == 0)
        return;
    char lease[24], count[24];
    snprintf(lease, sizeof(lease), "%" PRIu64, c->lease_ms);
    snprintf(count, sizeof(count), "%zu", read_count(c));
    for (int p = 0; p < c->nparts; p++) {
        claim_t *cl = malloc(sizeof(*cl));
        if (!cl)
            return;
        *cl = (claim_t){.c = c, .p = p};
        const char *argv[] = {"XPENDING", c->keys[p], c->group, "IDLE", lease,
                              c->claim_from[p], "+", count};
        if (shared_command_ctx(c, on_pending, cl, 8, argv, NULL) == MSM_OK)
            c->claiming++;
        else
            free(cl);
    }
}

/* ---- trimming behind the slowest group: after acknowledgements, at most once a second per
 * stream, only for streams this client acknowledged on (no timer runs while idle) ---- */

static void trim_schedule(redis_log_t *lg);

static void on_trimmed(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    stream_info_t *info = opaque;
    redis_log_t *lg = info->trim_log;
    info->trimming = 0;
    const char *why = msm_redis_reply_err(reply, err);
    if (lg->closing)
        return;
    if (why)
        msm_log(MSM_LOG_WARN, "log", "trimming %s: %s", info->name, why);
    else if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        msm_log(MSM_LOG_DEBUG, "log", "trimmed %lld entries of %s", reply->integer, info->name);
    if (info->trim_wanted)
        trim_schedule(lg);
}

static void trim_send(redis_log_t *lg, stream_info_t *info, uint64_t now)
{
    info->trim_wanted = 0;
    if (info_keys(lg, info) != MSM_OK)
        return;
    info->trim_log = lg;
    int np = info->partitions;
    if (msm_redis_eval(lg->redis, lg->trim_script, on_trimmed, info, np, np,
                       (const char **)info->part_keys, info->part_key_lens) == MSM_OK) {
        info->trimming = 1;
        info->trimmed_ms = now;
    }
}

/* Sends the trims that are due; the timer waits for the earliest one that is not. */
static void on_trim_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    trim_schedule(opaque);
}

static void trim_schedule(redis_log_t *lg)
{
    uint64_t now = msm_loop_now_ms(lg->loop), next = UINT64_MAX;
    for (stream_info_t *i = lg->streams; i; i = i->next) {
        if (!i->trim_wanted || i->trimming || !i->partitions)
            continue;
        uint64_t due = i->trimmed_ms + TRIM_EVERY_MS;
        if (due <= now)
            trim_send(lg, i, now);
        else if (due < next)
            next = due;
    }
    if (next != UINT64_MAX)
        msm_loop_timer_start(lg->loop, &lg->trim_timer, next - now, on_trim_timer, lg);
}

/* Called once acknowledgements of @p c went out (the trim goes after them on the same
 * connection, so it sees them). */
static void trim_wanted(rconsumer_t *c)
{
    redis_log_t *lg = c->log;
    stream_info_t *info = info_find(lg, c->name, 1);
    if (!info)
        return;
    if (!info->partitions && !info->looking_up && !info->waiting)
        info->partitions = c->nparts; /* read from the same meta hash */
    info->trim_wanted = 1;
    if (!msm_timer_active(&lg->trim_timer))
        trim_schedule(lg);
}

/* ---- acknowledgements ---- */

static void on_xack(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    redis_log_t *lg = opaque;
    lg->pending_acks--;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) /* the entries stay pending and are delivered again: at-least-once */
        msm_log(MSM_LOG_WARN, "log", "XACK failed: %s", why);
}

/* One XACK per partition with everything acknowledged since the last flush. The reply
 * needs nothing of the consumer, so it may be freed meanwhile. */
static void acks_flush(rconsumer_t *c)
{
    int sent = 0;
    for (int p = 0; p < c->nparts; p++) {
        ack_queue_t *q = &c->acks[p];
        if (!q->n)
            continue;
        const char **argv = malloc((3 + q->n) * sizeof(*argv));
        if (!argv)
            continue;
        argv[0] = "XACK";
        argv[1] = c->keys[p];
        argv[2] = c->group;
        for (size_t i = 0; i < q->n; i++)
            argv[3 + i] = q->ids[i];
        if (msm_redis_command_argv(c->log->redis, on_xack, c->log, (int)(3 + q->n), argv,
                                   NULL) == MSM_OK) {
            c->log->pending_acks++;
            sent = 1;
        }
        free(argv);
        q->n = 0;
    }
    if (sent)
        trim_wanted(c);
}

static void before_sleep(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    rconsumer_t *c = opaque;
    acks_flush(c);
    consumer_read(c);
}

static void redis_ack(msm_consumer_t *base, msm_stream_msg_t *msg)
{
    rconsumer_t *c = (rconsumer_t *)base;
    rmsg_t *m = (rmsg_t *)msg;
    if (m->m.partition >= 0 && m->m.partition < c->nparts)
        ack_queue_push(&c->acks[m->m.partition], m->m.position, strlen(m->m.position));
    c->unacked--;
    batch_unref(c, m->batch);
}

/* The scan runs again at once with the new lease, and from then on every half lease. */
static void redis_set_lease(msm_consumer_t *base, uint64_t lease_ms)
{
    rconsumer_t *c = (rconsumer_t *)base;
    if (c->lease_ms == lease_ms || c->freed)
        return;
    c->lease_ms = lease_ms;
    msm_loop_timer_start(c->stream->s_loop, &c->claim_timer, 0, on_claim_timer, c);
}

static size_t redis_unacked(const msm_consumer_t *base)
{
    return ((const rconsumer_t *)base)->unacked;
}

/* Frees what is left once nothing refers to the consumer any more. */
static void consumer_release(rconsumer_t *c)
{
    if (c->in_callback || c->shared_inflight)
        return;
    for (int p = 0; p < c->nparts; p++) {
        free(c->keys[p]);
        free(c->acks[p].ids);
    }
    free(c->keys);
    free(c->history);
    free(c->claim_from);
    free(c->acks);
    free(c->name);
    free(c->group);
    free(c->member);
    free(c);
}

static void redis_consumer_free(msm_consumer_t *base)
{
    rconsumer_t *c = (rconsumer_t *)base;
    if (c->freed)
        return;
    acks_flush(c);
    c->freed = 1;
    msm_loop_remove_before_sleep(c->stream->s_loop, before_sleep, c);
    msm_loop_timer_stop(c->stream->s_loop, &c->retry_timer);
    msm_loop_timer_stop(c->stream->s_loop, &c->claim_timer);
    /* Unacknowledged entries stay in the group's pending list: another member claims them
     * after the lease, or this member resumes them when it comes back under the same name. */
    while (c->batches) {
        rbatch_t *b = c->batches;
        c->batches = b->next;
        free(b);
    }
    msm_redis_free(c->reader); /* a read in flight completes here, and sees c->freed */
    c->reader = NULL;
    consumer_release(c);
}

static msm_consumer_t *redis_consume(msm_stream_t *s, const char *name, const char *group,
                                     const char *member, size_t max_batch, size_t max_unacked,
                                     msm_consumer_batch_cb *cb, void *opaque, char *errbuf,
                                     size_t errbuf_size)
{
    redis_log_t *lg = log_of(s);
    rconsumer_t *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(errbuf, errbuf_size, "out of memory");
        return NULL;
    }
    c->stream = s;
    c->log = lg;
    c->cb = cb;
    c->opaque = opaque;
    c->max_batch = max_batch;
    c->max_unacked = max_unacked;
    c->lease_ms = lg->lease_ms;
    c->name = strdup(name);
    c->group = strdup(group);
    c->member = strdup(member);
    msm_timer_init(&c->retry_timer);
    msm_timer_init(&c->claim_timer);
    msm_redis_conf_t rc = {
        .url = s->s_conf.redis_url,
        .ns = s->s_conf.name_prefix,
        .client_name = "msm-log-reader",
    };
    if (c->name && c->group && c->member)
        c->reader = msm_redis_new(s->s_loop, &rc, errbuf, errbuf_size);
    if (!c->reader || msm_loop_add_before_sleep(s->s_loop, before_sleep, c) != MSM_OK) {
        if (c->reader)
            snprintf(errbuf, errbuf_size, "out of memory");
        msm_redis_free(c->reader);
        free(c->name);
        free(c->group);
        free(c->member);
        free(c);
        return NULL;
    }
    c->phase = PHASE_SETUP;
    consumer_setup(c);
    on_claim_timer(s->s_loop, c); /* arms itself; claims start once set up */
    return &c->base;
}

/* ---- backlog: per partition, entries the group has not read (lag) plus those read and
 * not acknowledged (pending) ---- */

typedef struct {
    redis_log_t *log;
    char *name, *group;
    msm_stream_backlog_cb *cb;
    void *opaque;
    int waiting;
    int64_t sum;
    const char *failed; /* static reason */
} backlog_t;

static void backlog_step(backlog_t *b)
{
    if (--b->waiting)
        return;
    if (b->failed)
        b->cb(b->log->closing ? MSM_ERR_SHUTDOWN : MSM_ERR_BACKEND, -1, b->opaque);
    else
        b->cb(MSM_OK, b->sum, b->opaque);
    free(b->name);
    free(b->group);
    free(b);
}

/* The reply to [XLEN key, XINFO GROUPS key] of one partition (a MULTI would be overkill:
 * the backlog is an estimate that moves while we read it). */
static void on_backlog_groups(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    backlog_t *b = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why) {
        b->failed = "backlog query failed";
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        long long len = msm_redis_reply_int(reply->element[0], -1);
        const redisReply *groups = reply->element[1];
        long long lag = -1, pending = 0;
        int found = 0;
        for (size_t i = 0; groups->type == REDIS_REPLY_ARRAY && i < groups->elements; i++) {
            const redisReply *g = groups->element[i];
            const redisReply *nm = entry_field(g, "name");
            if (!nm || strcmp(nm->str, b->group) != 0)
                continue;
            found = 1;
            for (size_t f = 0; g->type == REDIS_REPLY_ARRAY && f + 1 < g->elements; f += 2) {
                const redisReply *k = g->element[f];
                if (k->type != REDIS_REPLY_STRING)
                    continue;
                if (strcmp(k->str, "lag") == 0)
                    lag = msm_redis_reply_int(g->element[f + 1], -1);
                else if (strcmp(k->str, "pending") == 0)
                    pending = msm_redis_reply_int(g->element[f + 1], -1);
            }
        }
        /* No such group yet: it will start at the oldest entry, so everything is backlog.
         * Lag unknown (entries deleted mid-stream): the stream length bounds it. */
        if (!found)
            b->sum += len;
        else
            b->sum += (lag < 0 ? len : lag) + pending;
    } else {
        b->failed = "unexpected backlog reply";
    }
    backlog_step(b);
}

static void on_backlog_partitions(msm_redis_t *r, redisReply *reply, const char *err,
                                  void *opaque)
{
    backlog_t *b = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    long n = !why && reply->type == REDIS_REPLY_STRING ? strtol(reply->str, NULL, 10) : 0;
    if (why || n < 1) {
        msm_err_t code = why ? (b->log->closing ? MSM_ERR_SHUTDOWN : MSM_ERR_BACKEND)
                             : MSM_ERR_NOTFOUND;
        b->cb(code, -1, b->opaque);
        free(b->name);
        free(b->group);
        free(b);
        return;
    }
    /* A partition nobody wrote to has no key yet: its backlog is 0. */
    static const char script[] =
        "if redis.call('EXISTS', KEYS[1]) == 0 then return {0, {}} end\n"
        "return {redis.call('XLEN', KEYS[1]), redis.call('XINFO', 'GROUPS', KEYS[1])}";
    b->waiting = 1; /* held until every partition is asked */
    for (long p = 0; p < n; p++) {
        char key[KEY_MAX];
        if (part_key(b->log, b->name, (int)p, key, sizeof(key)) < 0) {
            b->failed = "key too long";
            break;
        }
        const char *argv[] = {"EVAL", script, "1", key};
        if (msm_redis_command_argv(r, on_backlog_groups, b, 4, argv, NULL) == MSM_OK)
            b->waiting++;
        else
            b->failed = "backlog query refused";
    }
    backlog_step(b);
}

static int redis_backlog(msm_stream_t *s, const char *name, const char *group,
                         msm_stream_backlog_cb *cb, void *opaque)
{
    redis_log_t *lg = log_of(s);
    char key[KEY_MAX];
    if (meta_key(lg, name, key, sizeof(key)) < 0)
        return MSM_ERR_TOOLARGE;
    backlog_t *b = calloc(1, sizeof(*b));
    if (!b)
        return MSM_ERR_NOMEM;
    *b = (backlog_t){.log = lg, .cb = cb, .opaque = opaque, .name = strdup(name),
                     .group = strdup(group)};
    int rc = b->name && b->group ? msm_redis_command(lg->redis, on_backlog_partitions, b,
                                                     "HGET %s partitions", key)
                                 : MSM_ERR_NOMEM;
    if (rc != MSM_OK) {
        free(b->name);
        free(b->group);
        free(b);
    }
    return rc;
}

const msm_stream_driver_t msm__stream_redis_driver = {
    .name = "redis",
    .init = redis_init,
    .destroy = redis_destroy,
    .ensure = redis_ensure,
    .append = redis_append,
    .pending_appends = redis_pending_appends,
    .consume = redis_consume,
    .ack = redis_ack,
    .unacked = redis_unacked,
    .consumer_free = redis_consumer_free,
    .backlog = redis_backlog,
    .set_lease = redis_set_lease,
    .remove = redis_remove,
};
