/* SPDX-License-Identifier: MIT */
/* msm/schema_store.h: compiled schemas by id. Ids are small dense integers (a counter), so
 * the cache is an array indexed by id; a ring of cached ids evicts the oldest when full. */
#include "msm/schema_store.h"

#include "msm/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ids above this are fetched but not cached (keeps the index array bounded). */
#define CACHE_ID_MAX (1 << 22)

typedef struct waiter_s {
    msm_schema_got_cb *cb;
    void *opaque;
    struct waiter_s *next;
} waiter_t;

typedef struct fetch_s {
    msm_schema_store_t *st; /* NULL once the store is gone */
    int id;
    waiter_t *waiters;
    struct fetch_s *next;
} fetch_t;

struct msm_schema_store_s {
    msm_redis_t *redis;
    msm_schema_t **by_id; /* index: id -> schema or NULL */
    size_t by_id_len;
    int *ring;            /* cached ids, oldest at ring_head */
    size_t cap, count, ring_head;
    fetch_t *fetches;
};

msm_schema_store_t *msm_schema_store_new(msm_redis_t *redis, size_t cache_max)
{
    msm_schema_store_t *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->redis = redis;
    st->cap = cache_max ? cache_max : MSM_SCHEMA_STORE_DEFAULT_CACHE;
    st->ring = calloc(st->cap, sizeof(*st->ring));
    if (!st->ring) {
        free(st);
        return NULL;
    }
    return st;
}

static void waiters_call(waiter_t *w, const msm_schema_t *s, int id, int err, const char *why)
{
    while (w) {
        waiter_t *next = w->next;
        w->cb(s, id, err, why, w->opaque);
        free(w);
        w = next;
    }
}

void msm_schema_store_free(msm_schema_store_t *st)
{
    if (!st)
        return;
    /* The fetches' Redis callbacks still come: they only free the fetch. */
    for (fetch_t *f = st->fetches; f; f = f->next) {
        waiter_t *w = f->waiters;
        f->waiters = NULL;
        f->st = NULL;
        waiters_call(w, NULL, f->id, MSM_ERR_BACKEND, "schema store closed");
    }
    for (size_t i = 0; i < st->by_id_len; i++)
        msm_schema_free(st->by_id[i]);
    free(st->by_id);
    free(st->ring);
    free(st);
}

static const msm_schema_t *cached(const msm_schema_store_t *st, int id)
{
    return id > 0 && (size_t)id < st->by_id_len ? st->by_id[id] : NULL;
}

static int index_grow(msm_schema_store_t *st, int id)
{
    if ((size_t)id < st->by_id_len)
        return MSM_OK;
    size_t n = st->by_id_len ? st->by_id_len : 64;
    while (n <= (size_t)id)
        n *= 2;
    msm_schema_t **p = realloc(st->by_id, n * sizeof(*p));
    if (!p)
        return MSM_ERR_NOMEM;
    memset(p + st->by_id_len, 0, (n - st->by_id_len) * sizeof(*p));
    st->by_id = p;
    st->by_id_len = n;
    return MSM_OK;
}

void msm_schema_store_put(msm_schema_store_t *st, int id, msm_schema_t *s)
{
    if (id <= 0 || id > CACHE_ID_MAX || st->cap == 0 || cached(st, id) ||
        index_grow(st, id) != MSM_OK) {
        msm_schema_free(s);
        return;
    }
    if (st->count == st->cap) { /* evict the oldest */
        int old = st->ring[st->ring_head];
        msm_schema_free(st->by_id[old]);
        st->by_id[old] = NULL;
        st->ring_head = (st->ring_head + 1) % st->cap;
        st->count--;
    }
    st->ring[(st->ring_head + st->count) % st->cap] = id;
    st->count++;
    st->by_id[id] = s;
}

static const redisReply *hash_field(const redisReply *hash, const char *name)
{
    for (size_t i = 0; i + 1 < hash->elements; i += 2) {
        const redisReply *k = hash->element[i];
        if (k->type == REDIS_REPLY_STRING && strcmp(k->str, name) == 0)
            return hash->element[i + 1];
    }
    return NULL;
}

/* Compiles a stored schema hash (HGETALL of MSM_KEY_SCHEMA); NULL with *err and @p why. */
static msm_schema_t *compile_reply(const redisReply *hash, int *err, char *why, size_t why_size)
{
    if (!hash || hash->type != REDIS_REPLY_ARRAY || hash->elements == 0) {
        *err = MSM_ERR_NOTFOUND;
        snprintf(why, why_size, "schema not found");
        return NULL;
    }
    const redisReply *type = hash_field(hash, "type");
    const redisReply *text = hash_field(hash, "schema");
    const redisReply *name = hash_field(hash, "message_name");
    msm_schema_type_t t;
    if (!type || type->type != REDIS_REPLY_STRING || !text || text->type != REDIS_REPLY_STRING ||
        msm_schema_type_parse(type->str, &t) != MSM_OK) {
        *err = MSM_ERR_INVALID;
        snprintf(why, why_size, "stored schema is damaged");
        return NULL;
    }
    const char *mn = name && name->type == REDIS_REPLY_STRING ? name->str : NULL;
    msm_schema_t *s = msm_schema_compile(t, text->str, text->len, mn, why, why_size);
    *err = s ? MSM_OK : MSM_ERR_INVALID;
    return s;
}

static void fetch_unlink(msm_schema_store_t *st, fetch_t *f)
{
    for (fetch_t **p = &st->fetches; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            return;
        }
    }
}

static void on_fetched(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    fetch_t *f = opaque;
    msm_schema_store_t *st = f->st;
    if (!st) {
        free(f);
        return;
    }
    fetch_unlink(st, f);
    const char *fail = msm_redis_reply_err(reply, err);
    char why[256];
    int code = MSM_ERR_BACKEND;
    msm_schema_t *s = NULL;
    if (fail)
        snprintf(why, sizeof(why), "schema registry unavailable: %s", fail);
    else
        s = compile_reply(reply, &code, why, sizeof(why));
    waiters_call(f->waiters, s, f->id, code, s ? NULL : why);
    if (s)
        msm_schema_store_put(st, f->id, s);
    free(f);
}

int msm_schema_store_get(msm_schema_store_t *st, int id, msm_schema_got_cb *cb, void *opaque)
{
    const msm_schema_t *s = cached(st, id);
    if (s) {
        cb(s, id, MSM_OK, NULL, opaque);
        return MSM_OK;
    }
    waiter_t *w = calloc(1, sizeof(*w));
    if (!w)
        return MSM_ERR_NOMEM;
    w->cb = cb;
    w->opaque = opaque;
    for (fetch_t *f = st->fetches; f; f = f->next) {
        if (f->id == id) {
            w->next = f->waiters;
            f->waiters = w;
            return MSM_OK;
        }
    }
    fetch_t *f = calloc(1, sizeof(*f));
    char key[512];
    if (!f) {
        free(w);
        return MSM_ERR_NOMEM;
    }
    f->st = st;
    f->id = id;
    f->waiters = w;
    msm_redis_key(st->redis, key, sizeof(key), MSM_KEY_SCHEMA, id);
    int rc = msm_redis_command(st->redis, on_fetched, f, "HGETALL %s", key);
    if (rc != MSM_OK) {
        free(w);
        free(f);
        return rc;
    }
    f->next = st->fetches;
    st->fetches = f;
    return MSM_OK;
}
