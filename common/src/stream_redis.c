/* SPDX-License-Identifier: MIT */
/* The Redis Streams log driver (docs/log-redis.md): the client, ensure, delete, append and
 * backlog here; consumers, claims, acknowledgements and trimming in stream_redis_consume.c.
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
#include "stream_redis_int.h"
#include "msm/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Atomic batch append. KEYS: the meta hash, then the partition streams; ARGV[1]: MAXLEN
 * (0 = none), ARGV[2]: a mark's meta field ("" = none) and ARGV[3] its tag, then (partition
 * index 1-based, key, value) triples. Returns the number of entries added. A stream deleted
 * since its partition count was read is not re-created. The mark is written with the
 * records: whoever finds the tag there knows the whole batch is in (msm_stream_marks()). */
static const char APPEND_LUA[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  return redis.error_reply('NOTFOUND stream deleted')\n"
    "end\n"
    "local maxlen = tonumber(ARGV[1])\n"
    "local n = 0\n"
    "if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end\n"
    "for i = 4, #ARGV, 3 do\n"
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

static void append_free(append_t *a);
static int mark_field(const char *name, char **out);
static void append_complete(append_t *a, msm_err_t err, const char *reason);
static void on_deferred_timer(msm_loop_t *loop, void *opaque);
static void on_redis_state(msm_redis_t *r, int connected, const char *reason, void *opaque);

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

stream_info_t *msm__redis_info_find(redis_log_t *lg, const char *name, int create)
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
    lg->min_replicas_acks = s->s_conf.redis_min_replicas_acks;
    lg->wait_timeout_ms =
        (uint32_t)(s->s_conf.redis_wait_timeout_ms ? s->s_conf.redis_wait_timeout_ms : 1000);
    snprintf(lg->wait_timeout, sizeof(lg->wait_timeout), "%" PRIu32, lg->wait_timeout_ms);
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
        stream_info_t *info = msm__redis_info_find(e->log, e->name, 1);
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
    stream_info_t *info = msm__redis_info_find(e->log, e->name, 0);
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

/* WAIT's answer: how many replicas have every write of this connection so far. */
static void on_replicated(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    append_t *a = opaque;
    redis_log_t *lg = a->log;
    const char *why = msm_redis_reply_err(reply, err);
    char msg[160];
    if (!why && (reply->type != REDIS_REPLY_INTEGER || reply->integer < lg->min_replicas_acks)) {
        snprintf(msg, sizeof(msg), "written, but %lld of %d replicas acknowledged within %s ms "
                 "(redis.min_replicas_acks)",
                 reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1LL,
                 lg->min_replicas_acks, lg->wait_timeout);
        why = msg;
    }
    append_complete(a, why ? (lg->closing ? MSM_ERR_SHUTDOWN : MSM_ERR_BACKEND) : MSM_OK, why);
}

/* The append is written: durable at once, or once enough replicas have it. WAIT goes after
 * the write's answer, not pipelined behind it: a write retried after NOSCRIPT goes to the
 * end of the pipeline, where a WAIT sent before it would not cover it. */
static void append_written(append_t *a)
{
    redis_log_t *lg = a->log;
    if (lg->min_replicas_acks <= 0) {
        append_complete(a, MSM_OK, NULL);
        return;
    }
    char n[16];
    snprintf(n, sizeof(n), "%d", lg->min_replicas_acks);
    const char *argv[] = {"WAIT", n, lg->wait_timeout};
    /* WAIT holds the connection up to its timeout: not a stuck server. */
    int rc = msm_redis_command_blocking_argv(lg->redis, lg->wait_timeout_ms, on_replicated, a, 3,
                                             argv, NULL);
    if (rc != MSM_OK)
        append_complete(a, rc, msm_err_str(rc));
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
        append_written(a);
    }
}

/* The partition keys and the script's names for them ("1".."n"), made once per stream. */
int msm__redis_info_keys(redis_log_t *lg, stream_info_t *info)
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

static int append_send(append_t *a, const msm_record_t *records);
static int copy_records(append_t *a, const msm_record_t *records);

/* The fast path's answer: an entry id, or nil when the partition has no key yet (never
 * written, or the stream was deleted): then the script decides, which creates it or says
 * NOTFOUND. */
static void on_append_one(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    append_t *a = opaque;
    if (!err && reply && reply->type == REDIS_REPLY_NIL) {
        a->scripted = 1;
        int rc = append_send(a, a->records);
        if (rc != MSM_OK)
            append_complete(a, rc, msm_err_str(rc));
        return;
    }
    if (!err && reply && reply->type == REDIS_REPLY_STRING) {
        append_written(a);
        return;
    }
    on_append(r, reply, err, opaque);
}

/* One record, no MAXLEN: a plain XADD NOMKSTREAM is atomic by itself and costs a fraction
 * of a script call (the internal hops append one batch record per loop turn). */
static int append_one(append_t *a, const msm_record_t *rec)
{
    redis_log_t *lg = a->log;
    stream_info_t *info = a->info;
    int rc = copy_records(a, rec); /* kept for the fallback */
    if (rc != MSM_OK)
        return rc;
    int p = partition_of(info, rec);
    const char *argv[] = {"XADD", info->part_keys[p], "NOMKSTREAM", "*", "k",
                          a->records[0].key_len ? a->records[0].key : "", "v",
                          a->records[0].value_len ? a->records[0].value : ""};
    const size_t lens[] = {4, info->part_key_lens[p], 10, 1, 1, a->records[0].key_len, 1,
                           a->records[0].value_len};
    return msm_redis_command_argv(lg->redis, on_append_one, a, 8, argv, lens);
}

/* Sends the batch as one script call. Arguments point into @p records (copied by eval). */
static int append_send(append_t *a, const msm_record_t *records)
{
    redis_log_t *lg = a->log;
    stream_info_t *info = a->info;
    int rc = msm__redis_info_keys(lg, info);
    if (rc != MSM_OK)
        return rc;
    if (a->n == 1 && lg->maxlen == 0 && !a->scripted && !a->mark_field)
        return append_one(a, records);
    int nkeys = info->partitions + 1;
    size_t argc = (size_t)nkeys + 3 + 3 * a->n;
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
    argv[j] = a->mark_field ? a->mark_field : "";
    argvlen[j] = strlen(argv[j]);
    j++;
    argv[j] = a->mark_tag ? a->mark_tag : "";
    argvlen[j] = strlen(argv[j]);
    j++;
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
    free(a->mark_field);
    free(a->mark_tag);
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
                        const msm_stream_mark_t *mark, msm_stream_done_cb *cb, void *opaque)
{
    redis_log_t *lg = log_of(s);
    if (lg->closing)
        return MSM_ERR_SHUTDOWN;
    stream_info_t *info = msm__redis_info_find(lg, name, 1);
    append_t *a = calloc(1, sizeof(*a));
    if (!info || !a) {
        free(a);
        return MSM_ERR_NOMEM;
    }
    *a = (append_t){.log = lg, .info = info, .cb = cb, .opaque = opaque, .n = n,
                    .deadline_ms = msm_loop_now_ms(s->s_loop) + lg->append_timeout_ms};
    int rc = MSM_OK;
    if (mark && (mark_field(mark->name, &a->mark_field) != MSM_OK ||
                 !(a->mark_tag = strdup(mark->tag))))
        rc = MSM_ERR_NOMEM;
    if (rc == MSM_OK)
        rc = append_dispatch(a, records);
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

/* ---- marks: the tag the last marked append of a series left in the meta hash ---- */

/* The meta hash field of mark @p name, malloc'd into *out. */
static int mark_field(const char *name, char **out)
{
    size_t n = strlen(name) + sizeof("mark:");
    if (!(*out = malloc(n)))
        return MSM_ERR_NOMEM;
    snprintf(*out, n, "mark:%s", name);
    return MSM_OK;
}

typedef struct {
    redis_log_t *log;
    char *tag;
    msm_stream_marks_cb *cb;
    void *opaque;
} marks_t;

static void on_mark(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    marks_t *m = opaque;
    const char *why = msm_redis_reply_err(reply, err);
    if (why)
        m->cb(m->log->closing ? MSM_ERR_SHUTDOWN : MSM_ERR_BACKEND, why, 0, NULL, 0, m->opaque);
    else /* the batch was one script: all of it or nothing */
        m->cb(MSM_OK, NULL, reply->type == REDIS_REPLY_STRING && strcmp(reply->str, m->tag) == 0,
              NULL, 0, m->opaque);
    free(m->tag);
    free(m);
}

static int redis_marks(msm_stream_t *s, const char *name, const char *mark, const char *tag,
                       int64_t since_ms, msm_stream_marks_cb *cb, void *opaque)
{
    (void)since_ms; /* the mark is exact: no records to look through */
    redis_log_t *lg = log_of(s);
    char key[KEY_MAX], *field = NULL;
    if (lg->closing)
        return MSM_ERR_SHUTDOWN;
    if (meta_key(lg, name, key, sizeof(key)) < 0)
        return MSM_ERR_TOOLARGE;
    marks_t *m = calloc(1, sizeof(*m));
    int rc = m && mark_field(mark, &field) == MSM_OK && (m->tag = strdup(tag)) ? MSM_OK
                                                                              : MSM_ERR_NOMEM;
    if (rc == MSM_OK) {
        *m = (marks_t){.log = lg, .tag = m->tag, .cb = cb, .opaque = opaque};
        const char *argv[] = {"HGET", key, field};
        rc = msm_redis_command_argv(lg->redis, on_mark, m, 3, argv, NULL);
    }
    free(field);
    if (rc != MSM_OK && m) {
        free(m->tag);
        free(m);
    }
    return rc;
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
            const redisReply *nm = msm__redis_entry_field(g, "name");
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
    .consume = msm__redis_consume,
    .ack = msm__redis_ack,
    .unacked = msm__redis_unacked,
    .consumer_free = msm__redis_consumer_free,
    .backlog = redis_backlog,
    .set_lease = msm__redis_set_lease,
    .set_stamp = msm__redis_set_stamp,
    .remove = redis_remove,
    .marks = redis_marks,
};
