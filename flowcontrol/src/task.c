/* SPDX-License-Identifier: MIT */
/* Tasks in memory: a pool (no allocation per event once warm), the id map that outcomes
 * are matched through, the pending queues (one FIFO per priority, highest first) and the
 * running list in dispatch order, which is also lease order. */
#include "fc_int.h"

#include "msm/time.h"
#include "msm/trace.h"

#include <stdlib.h>
#include <string.h>

#define POOL_KEEP 65536 /* idle task structs kept for reuse */

fc_task_t *fc_task_get(flowcontrol_t *fc)
{
    fc_task_t *t = fc->free_tasks;
    if (t) {
        fc->free_tasks = t->next;
        fc->nfree_tasks--;
    } else if (!(t = malloc(sizeof(*t)))) {
        return NULL;
    }
    memset(t, 0, sizeof(*t));
    return t;
}

Msm__V1__Task *fc_task_own(fc_task_t *t)
{
    if (t->owns_t)
        return t->t;
    msm_buf_t buf = {0};
    Msm__V1__Task *copy = NULL;
    if (msm_pb_pack(&t->t->base, &buf) == MSM_OK)
        copy = msm_task_unpack(buf.data, buf.len);
    msm_buf_deinit(&buf);
    if (!copy)
        return NULL;
    /* The borrowed one stays in the arena and dies with the record, which outlives the
     * task (anything built from it this turn still reads valid memory). */
    t->t = copy;
    t->owns_t = 1;
    return copy;
}

void fc_task_put(flowcontrol_t *fc, fc_task_t *t)
{
    if (t->owns_t)
        msm_task_free(t->t);
    if (fc->nfree_tasks >= POOL_KEEP) {
        free(t);
        return;
    }
    t->next = fc->free_tasks;
    fc->free_tasks = t;
    fc->nfree_tasks++;
}

void fc_tasks_free_pool(flowcontrol_t *fc)
{
    while (fc->free_tasks) {
        fc_task_t *t = fc->free_tasks;
        fc->free_tasks = t->next;
        free(t);
    }
    fc->nfree_tasks = 0;
}

const char *fc_task_id(const fc_task_t *t)
{
    return t->t->event->id;
}

/* ---- the id map ---- */

static size_t hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t)h;
}

static int map_grow(fc_sub_t *sub)
{
    size_t size = sub->map_size ? sub->map_size * 2 : 1024;
    fc_task_t **map = calloc(size, sizeof(*map));
    if (!map)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < sub->map_size; i++) {
        fc_task_t *t = sub->map[i];
        while (t) {
            fc_task_t *next = t->hnext;
            size_t b = t->hash & (size - 1);
            t->hnext = map[b];
            map[b] = t;
            t = next;
        }
    }
    free(sub->map);
    sub->map = map;
    sub->map_size = size;
    return MSM_OK;
}

int fc_map_add(fc_sub_t *sub, fc_task_t *t)
{
    if (sub->ntasks + 1 > sub->map_size && map_grow(sub) != MSM_OK)
        return MSM_ERR_NOMEM;
    t->hash = hash_id(fc_task_id(t));
    size_t b = t->hash & (sub->map_size - 1);
    t->hnext = sub->map[b];
    sub->map[b] = t;
    sub->ntasks++;
    return MSM_OK;
}

fc_task_t *fc_map_find(fc_sub_t *sub, const char *id)
{
    if (!sub->map_size)
        return NULL;
    size_t h = hash_id(id);
    for (fc_task_t *t = sub->map[h & (sub->map_size - 1)]; t; t = t->hnext) {
        /* The hash first: a task's id is three pointers away, likely out of the cache. */
        if (t->hash == h && strcmp(fc_task_id(t), id) == 0)
            return t;
    }
    return NULL;
}

static void map_remove(fc_sub_t *sub, fc_task_t *t)
{
    fc_task_t **p = &sub->map[t->hash & (sub->map_size - 1)];
    for (; *p; p = &(*p)->hnext) {
        if (*p == t) {
            *p = t->hnext;
            t->hnext = NULL;
            sub->ntasks--;
            return;
        }
    }
}

/* ---- fair share: flows ---- */

/* The value of the subscription's fairness_key attribute ("" when absent). */
static const char *fair_value(const fc_sub_t *sub, const fc_task_t *t)
{
    const Msm__V1__Event *ev = t->t->event;
    for (size_t i = 0; i < ev->n_attributes; i++) {
        const Msm__V1__Event__AttributesEntry *a = ev->attributes[i];
        if (a->key && a->value && strcmp(a->key, sub->fairness_key) == 0)
            return a->value;
    }
    return "";
}

static size_t flow_hash(int priority, const char *value)
{
    return hash_id(value) * 31u + (size_t)priority;
}

static int fmap_grow(fc_sub_t *sub)
{
    size_t size = sub->fmap_size ? sub->fmap_size * 2 : 64;
    fc_flow_t **map = calloc(size, sizeof(*map));
    if (!map)
        return MSM_ERR_NOMEM;
    for (size_t i = 0; i < sub->fmap_size; i++) {
        for (fc_flow_t *f = sub->fmap[i], *next; f; f = next) {
            next = f->hnext;
            size_t b = flow_hash(f->priority, f->value) & (size - 1);
            f->hnext = map[b];
            map[b] = f;
        }
    }
    free(sub->fmap);
    sub->fmap = map;
    sub->fmap_size = size;
    return MSM_OK;
}

static fc_flow_t *flow_get(fc_sub_t *sub, int priority, const char *value)
{
    if (sub->fmap_size) {
        fc_flow_t *f = sub->fmap[flow_hash(priority, value) & (sub->fmap_size - 1)];
        for (; f; f = f->hnext) {
            if (f->priority == priority && strcmp(f->value, value) == 0)
                return f;
        }
    }
    if (sub->nflows + 1 > sub->fmap_size && fmap_grow(sub) != MSM_OK)
        return NULL;
    size_t len = strlen(value);
    fc_flow_t *f = calloc(1, sizeof(*f) + len + 1);
    if (!f)
        return NULL;
    f->priority = priority;
    memcpy(f->value, value, len + 1);
    size_t b = flow_hash(priority, value) & (sub->fmap_size - 1);
    f->hnext = sub->fmap[b];
    sub->fmap[b] = f;
    sub->nflows++;
    return f;
}

static void flow_free(fc_sub_t *sub, fc_flow_t *f)
{
    fc_flow_t **p = &sub->fmap[flow_hash(f->priority, f->value) & (sub->fmap_size - 1)];
    for (; *p; p = &(*p)->hnext) {
        if (*p == f) {
            *p = f->hnext;
            sub->nflows--;
            free(f);
            return;
        }
    }
}

/* A flow with tasks joins its priority's ring: at the back, or at the front when a task is
 * put back (it was taken from there). */
static void ring_add(fc_sub_t *sub, fc_flow_t *f, int front)
{
    int p = f->priority;
    if (front) {
        f->rnext = sub->ring_head[p];
        sub->ring_head[p] = f;
        if (!sub->ring_tail[p])
            sub->ring_tail[p] = f;
    } else {
        f->rnext = NULL;
        if (sub->ring_tail[p])
            sub->ring_tail[p]->rnext = f;
        else
            sub->ring_head[p] = f;
        sub->ring_tail[p] = f;
    }
}

static int fair_push(fc_sub_t *sub, fc_task_t *t, int front)
{
    fc_flow_t *f = flow_get(sub, t->priority, fair_value(sub, t));
    if (!f)
        return MSM_ERR_NOMEM;
    int was_empty = !f->head;
    t->flow = f;
    if (front) {
        t->next = f->head;
        f->head = t;
        if (!f->tail)
            f->tail = t;
    } else {
        t->next = NULL;
        if (f->tail)
            f->tail->next = t;
        else
            f->head = t;
        f->tail = t;
    }
    if (was_empty)
        ring_add(sub, f, front);
    return MSM_OK;
}

/* One task from the flow whose turn it is; the flow goes to the back of the ring (round
 * robin: each value gets one task per round, whatever its backlog). */
static fc_task_t *fair_pop(fc_sub_t *sub, int p)
{
    fc_flow_t *f = sub->ring_head[p];
    if (!f)
        return NULL;
    sub->ring_head[p] = f->rnext;
    if (!sub->ring_head[p])
        sub->ring_tail[p] = NULL;
    fc_task_t *t = f->head;
    f->head = t->next;
    if (!f->head)
        f->tail = NULL;
    t->next = NULL;
    t->flow = NULL;
    if (f->head)
        ring_add(sub, f, 0);
    else
        flow_free(sub, f);
    return t;
}

/* ---- pending queues ---- */

void fc_pq_push(fc_sub_t *sub, fc_task_t *t, int front)
{
    int p = t->priority;
    t->state = FC_TASK_PENDING;
    /* A sampled task's flowcontrol span starts (sub.c). */
    t->queued_us = t->t->event && msm_traceparent_sampled(t->t->event->traceparent)
                       ? msm_time_mono_us()
                       : 0;
    if (sub->fairness_key && fair_push(sub, t, front) == MSM_OK) {
        sub->npending++;
        return;
    } /* out of memory: the plain queue (served too, only not shared fairly) */
    if (front) {
        t->next = sub->pq_head[p];
        sub->pq_head[p] = t;
        if (!sub->pq_tail[p])
            sub->pq_tail[p] = t;
    } else {
        t->next = NULL;
        if (sub->pq_tail[p])
            sub->pq_tail[p]->next = t;
        else
            sub->pq_head[p] = t;
        sub->pq_tail[p] = t;
    }
    sub->npending++;
}

fc_task_t *fc_pq_pop(fc_sub_t *sub)
{
    for (int p = FC_PRIORITIES - 1; p >= 0; p--) {
        fc_task_t *t = sub->ring_head[p] ? fair_pop(sub, p) : NULL;
        if (t) {
            sub->npending--;
            return t;
        }
        t = sub->pq_head[p];
        if (!t)
            continue;
        sub->pq_head[p] = t->next;
        if (!t->next)
            sub->pq_tail[p] = NULL;
        t->next = NULL;
        sub->npending--;
        return t;
    }
    return NULL;
}

void fc_pq_reset(fc_sub_t *sub)
{
    for (size_t b = 0; b < sub->fmap_size; b++) {
        while (sub->fmap[b]) {
            fc_flow_t *f = sub->fmap[b];
            sub->fmap[b] = f->hnext;
            free(f);
        }
    }
    sub->nflows = 0;
    for (int p = 0; p < FC_PRIORITIES; p++) {
        sub->pq_head[p] = sub->pq_tail[p] = NULL;
        sub->ring_head[p] = sub->ring_tail[p] = NULL;
    }
    sub->npending = 0;
}

/* ---- running list ---- */

void fc_running_add(fc_sub_t *sub, fc_task_t *t)
{
    t->state = FC_TASK_RUNNING;
    t->next = NULL;
    t->prev = sub->running_tail;
    if (sub->running_tail)
        sub->running_tail->next = t;
    else
        sub->running_head = t;
    sub->running_tail = t;
    sub->nrunning++;
}

void fc_running_remove(fc_sub_t *sub, fc_task_t *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        sub->running_head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        sub->running_tail = t->prev;
    t->next = t->prev = NULL;
    sub->nrunning--;
}

int fc_ptrs_push(fc_task_t ***arr, size_t *n, size_t *cap, fc_task_t *t)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        fc_task_t **a = realloc(*arr, c * sizeof(*a));
        if (!a)
            return MSM_ERR_NOMEM;
        *arr = a;
        *cap = c;
    }
    (*arr)[(*n)++] = t;
    return MSM_OK;
}

void fc_task_dirty(fc_sub_t *sub, fc_task_t *t)
{
    /* Out of memory: the record is only late (written at the task's next change). */
    if (!t->dirty && fc_ptrs_push(&sub->dirty, &sub->ndirty, &sub->capdirty, t) == MSM_OK)
        t->dirty = 1;
}

/* A record whose tasks are all settled is acknowledged: the log no longer needs to hold
 * them. */
static void rec_settled(fc_sub_t *sub, fc_rec_t *rec)
{
    if (--rec->unsettled)
        return;
    if (sub->ready && rec->msg)
        msm_consumer_ack(sub->ready, rec->msg);
    msm_arena_free(rec->arena);
    free(rec);
}

/* ---- deferred task records ---- */

static void lazy_remove(fc_sub_t *sub, fc_task_t *t)
{
    if (!t->in_lazy)
        return;
    if (t->lprev)
        t->lprev->lnext = t->lnext;
    else
        sub->lazy_head = t->lnext;
    if (t->lnext)
        t->lnext->lprev = t->lprev;
    else
        sub->lazy_tail = t->lprev;
    t->lnext = t->lprev = NULL;
    t->in_lazy = 0;
}

static void lazy_sweep(fc_sub_t *sub);

static void on_lazy_timer(msm_loop_t *loop, void *opaque)
{
    (void)loop;
    lazy_sweep(opaque);
}

static void lazy_arm(fc_sub_t *sub)
{
    if (!sub->lazy_head || msm_timer_active(&sub->lazy_timer))
        return;
    int64_t delay = sub->lazy_head->since_ms + sub->fc->conf.record_lag_ms - fc_now_ms();
    msm_loop_timer_start(sub->fc->env.loop, &sub->lazy_timer, delay > 0 ? (uint64_t)delay : 0,
                         on_lazy_timer, sub);
}

static void record_now(fc_sub_t *sub, fc_task_t *t)
{
    lazy_remove(sub, t);
    t->recorded = (int)t->state + 1;
    fc_flush_record(sub, t);
}

void fc_task_record(fc_sub_t *sub, fc_task_t *t)
{
    if (t->state == FC_TASK_SETTLING || sub->fc->conf.record_lag_ms == 0) {
        record_now(sub, t);
        return;
    }
    if (t->in_lazy && t->lazy_state == t->state)
        return; /* the same state goes on (dispatched again): its wait goes on too */
    lazy_remove(sub, t);
    if (t->recorded == (int)t->state + 1)
        return; /* back in the state its record already shows */
    t->lazy_state = t->state;
    /* The list stays in time order: a task joins at the tail when its state changes. */
    t->since_ms = fc_now_ms();
    t->lprev = sub->lazy_tail;
    if (sub->lazy_tail)
        sub->lazy_tail->lnext = t;
    else
        sub->lazy_head = t;
    sub->lazy_tail = t;
    t->in_lazy = 1;
    lazy_arm(sub);
}

/* Writes the deferred records that are due; re-arms the timer. */
static void lazy_sweep(fc_sub_t *sub)
{
    int64_t due = fc_now_ms() - sub->fc->conf.record_lag_ms;
    fc_task_t *t;
    while ((t = sub->lazy_head) && t->since_ms <= due)
        record_now(sub, t);
    lazy_arm(sub);
}

void fc_task_drop(fc_sub_t *sub, fc_task_t *t, int settled)
{
    if (settled)
        fc_order_gone(sub, t); /* its ordering key moves on */
    lazy_remove(sub, t);
    map_remove(sub, t);
    fc_rec_t *rec = t->rec;
    fc_task_put(sub->fc, t);
    if (!rec)
        return;
    if (settled) {
        rec_settled(sub, rec);
    } else if (--rec->unsettled == 0) {
        /* Dropped unsettled (ownership lost): the record stays unacknowledged. */
        msm_arena_free(rec->arena);
        free(rec);
    }
}
