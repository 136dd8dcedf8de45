/* SPDX-License-Identifier: MIT */
/* The Redis Streams driver's group members (docs/log-redis.md): XREADGROUP on a connection
 * of the consumer's own, first its own pending entries, then new ones; entries other members
 * left idle past this consumer's lease taken over with XPENDING IDLE + XCLAIM;
 * acknowledgements batched into one XACK per partition before the loop sleeps, followed by
 * the trim behind the slowest group (at most once a second per stream). */
#include "stream_redis_int.h"
#include "msm/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BLOCK_MS   1000 /* a blocked read returns this often; lets shutdown be prompt */
#define RETRY_DELAY_MS  200  /* after a failed read or setup */
#define CLAIM_MIN_MS    50
#define CLAIM_MAX_MS    5000
#define TRIM_EVERY_MS   1000 /* at most one trim per stream and client this often */

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
    int reading;             /* a read (and its stamp) is in flight on the reader */
    char *stamp_key;         /* namespaced key GET behind every read; NULL: no stamps */
    int stamp_sent;          /* the read in flight has a GET of stamp_key behind it */
    int read_ok;             /* ... and was answered well: its records wait for the GET */
    msm_stream_msg_t **held; /* a read's records waiting for their stamp */
    size_t nheld;
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

const redisReply *msm__redis_entry_field(const redisReply *fields, const char *name)
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

/* Hands @p list (taken) to the application in batches of at most max_batch. */
static void hand_over(rconsumer_t *c, msm_stream_msg_t **list, size_t n)
{
    c->in_callback++;
    for (size_t off = 0; off < n && !c->freed; off += c->max_batch) {
        size_t len = n - off < c->max_batch ? n - off : c->max_batch;
        c->cb(&c->base, list + off, len, c->opaque);
    }
    c->in_callback--;
    free(list);
}

/* Copies entries of several partitions out of a reply (entries[i] belongs to partition
 * parts[i]) into one batch the consumer owns. Trimmed entries (no fields) are acknowledged
 * at once: there is nothing left to deliver. @returns the records to hand over (*n of
 * them), or NULL when there are none. */
static msm_stream_msg_t **take(rconsumer_t *c, const redisReply *const *entries,
                               const int *parts, size_t n, uint32_t redelivered, size_t *taken)
{
    *taken = 0;
    size_t bytes = 0, good = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *fields = entries[i]->element[1];
        const redisReply *k = msm__redis_entry_field(fields, "k"), *v = msm__redis_entry_field(fields, "v");
        if (!v) {
            ack_queue_push(&c->acks[parts[i]], entries[i]->element[0]->str,
                           entries[i]->element[0]->len);
            continue;
        }
        bytes += v->len + (k ? k->len : 0);
        good++;
    }
    if (!good)
        return NULL;
    rbatch_t *b = malloc(sizeof(*b) + good * sizeof(rmsg_t) + bytes);
    msm_stream_msg_t **list = malloc(good * sizeof(*list));
    if (!b || !list) {
        free(b);
        free(list);
        reread_own_pending(c); /* the entries are ours now: deliver them on a later read */
        return NULL;
    }
    char *data = (char *)&b->msgs[good];
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *fields = entries[i]->element[1];
        const redisReply *k = msm__redis_entry_field(fields, "k"), *v = msm__redis_entry_field(fields, "v");
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
    *taken = good;
    return list;
}

/* take() and hand_over() with no stamp: records taken over from another member. */
static void deliver(rconsumer_t *c, const redisReply *const *entries, const int *parts, size_t n,
                    uint32_t redelivered)
{
    size_t good;
    msm_stream_msg_t **list = take(c, entries, parts, n, redelivered, &good);
    if (list) {
        c->base.c_stamp = -1;
        hand_over(c, list, good);
    }
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
    if (c->freed)
        return; /* the reader is being freed with the consumer */
    c->reading = c->stamp_sent; /* until the stamp's answer */
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
    if (c->stamp_sent) {
        c->held = take(c, entries, parts, n, history, &c->nheld);
        c->read_ok = 1;
        free(entries);
        free(parts);
        return; /* on_stamp() hands them over */
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

/* The stamp read behind a read: the read's records go to the application with it. */
static void on_stamp(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    rconsumer_t *c = opaque;
    if (c->freed)
        return; /* the reader is being freed with the consumer (and the held records) */
    c->reading = 0;
    c->stamp_sent = 0;
    if (!c->read_ok) {
        retry_later(c); /* the read failed (its retry may have found the reader busy) */
        return;
    }
    c->read_ok = 0;
    msm_stream_msg_t **list = c->held;
    size_t n = c->nheld;
    c->held = NULL;
    c->nheld = 0;
    if (list) {
        int good = !msm_redis_reply_err(reply, err) &&
                   (reply->type == REDIS_REPLY_NIL || reply->type == REDIS_REPLY_STRING);
        c->base.c_stamp = good ? msm_redis_reply_int(reply, 0) : -1;
        hand_over(c, list, n);
        if (c->freed) {
            consumer_release(c);
            return;
        }
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
    if (rc == MSM_OK && c->stamp_key) {
        /* Behind the read on the same connection: the server runs it once the read is
         * answered, so the value is at least as new as the records. Not sent (out of
         * memory): the read's records come without a stamp. */
        const char *get[] = {"GET", c->stamp_key};
        c->read_ok = 0;
        c->stamp_sent = msm_redis_command_argv(c->reader, on_stamp, c, 2, get, NULL) == MSM_OK;
    }
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

/* ---- trimming behind the slowest group (TRIM_LUA, stream_redis.c): after acknowledgements,
 * at most once a second per stream, only for streams this client acknowledged on (no timer
 * runs while idle) ---- */

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
    if (msm__redis_info_keys(lg, info) != MSM_OK)
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
    stream_info_t *info = msm__redis_info_find(lg, c->name, 1);
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

void msm__redis_ack(msm_consumer_t *base, msm_stream_msg_t *msg)
{
    rconsumer_t *c = (rconsumer_t *)base;
    rmsg_t *m = (rmsg_t *)msg;
    if (m->m.partition >= 0 && m->m.partition < c->nparts)
        ack_queue_push(&c->acks[m->m.partition], m->m.position, strlen(m->m.position));
    c->unacked--;
    batch_unref(c, m->batch);
}

int msm__redis_set_stamp(msm_consumer_t *base, const char *key)
{
    rconsumer_t *c = (rconsumer_t *)base;
    char full[KEY_MAX];
    if (msm_redis_key(c->reader, full, sizeof(full), "%s", key) < 0)
        return MSM_ERR_INVALID;
    char *copy = strdup(full);
    if (!copy)
        return MSM_ERR_NOMEM;
    free(c->stamp_key); /* a read in flight keeps the GET it was sent with */
    c->stamp_key = copy;
    return MSM_OK;
}

/* The scan runs again at once with the new lease, and from then on every half lease. */
void msm__redis_set_lease(msm_consumer_t *base, uint64_t lease_ms)
{
    rconsumer_t *c = (rconsumer_t *)base;
    if (c->lease_ms == lease_ms || c->freed)
        return;
    c->lease_ms = lease_ms;
    msm_loop_timer_start(c->stream->s_loop, &c->claim_timer, 0, on_claim_timer, c);
}

size_t msm__redis_unacked(const msm_consumer_t *base)
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
    free(c->stamp_key);
    free(c);
}

void msm__redis_consumer_free(msm_consumer_t *base)
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
    free(c->held); /* records of those batches */
    c->held = NULL;
    msm_redis_free(c->reader); /* a read in flight completes here, and sees c->freed */
    c->reader = NULL;
    consumer_release(c);
}

msm_consumer_t *msm__redis_consume(msm_stream_t *s, const char *name, const char *group,
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
