/* SPDX-License-Identifier: MIT */
/* The replay cache (docs/push.md "Replays"): the key of every push accepted on its signature,
 * kept until its timestamp leaves the tolerance window (after that the window alone refuses
 * it), in a fixed number of slots. The slots form a ring in arrival order, chained into a
 * hash table. When every slot is held by a live entry the oldest arrival is evicted early and
 * its timestamp becomes the floor: pushes signed at or before the floor are refused, since
 * the cache can no longer tell a copy of the evicted one from a new push. A replay is thus
 * always refused; a full cache only narrows the window. */
#include "lambda_int.h"

#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX

typedef struct {
    unsigned char re_key[LM_REPLAY_KEY_LEN];
    int64_t re_t;
    int64_t re_expires_s;
    uint32_t re_next; /* the next slot of its hash chain, or NIL */
} lm_replay_entry_t;

struct lm_replay_s {
    lm_replay_entry_t *rp_slots;
    size_t rp_cap;
    size_t rp_head; /* the oldest arrival */
    size_t rp_count;
    uint32_t *rp_buckets;
    size_t rp_mask;
    int64_t rp_floor; /* -1: nothing evicted early */
};

lm_replay_t *msm__replay_new(size_t cap)
{
    if (cap == 0 || cap >= NIL)
        return NULL;
    size_t nb = 1;
    while (nb < cap)
        nb <<= 1;
    lm_replay_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->rp_slots = calloc(cap, sizeof(*r->rp_slots));
    r->rp_buckets = malloc(nb * sizeof(*r->rp_buckets));
    if (!r->rp_slots || !r->rp_buckets) {
        msm__replay_free(r);
        return NULL;
    }
    for (size_t i = 0; i < nb; i++)
        r->rp_buckets[i] = NIL;
    r->rp_cap = cap;
    r->rp_mask = nb - 1;
    r->rp_floor = -1;
    return r;
}

void msm__replay_free(lm_replay_t *r)
{
    if (!r)
        return;
    free(r->rp_slots);
    free(r->rp_buckets);
    free(r);
}

size_t msm__replay_count(const lm_replay_t *r)
{
    return r->rp_count;
}

/* Keys are SHA-256 digests of signed text: any 8 of their bytes are a fine hash. */
static size_t bucket_of(const lm_replay_t *r, const unsigned char *key)
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)h & r->rp_mask;
}

static void drop_head(lm_replay_t *r)
{
    uint32_t slot = (uint32_t)r->rp_head;
    uint32_t *link = &r->rp_buckets[bucket_of(r, r->rp_slots[slot].re_key)];
    while (*link != NIL && *link != slot)
        link = &r->rp_slots[*link].re_next;
    if (*link == slot)
        *link = r->rp_slots[slot].re_next;
    r->rp_head = (r->rp_head + 1) % r->rp_cap;
    r->rp_count--;
}

lm_replay_verdict_t msm__replay_check(lm_replay_t *r,
                                      const unsigned char key[LM_REPLAY_KEY_LEN],
                                      int64_t t,
                                      int64_t expires_s,
                                      int64_t now_s)
{
    /* Arrival order is nearly expiry order (t is the sender's clock at sending): an expired
     * entry behind a live head waits for it, harmlessly (the window refuses its copies). */
    while (r->rp_count > 0 && r->rp_slots[r->rp_head].re_expires_s < now_s)
        drop_head(r);
    size_t b = bucket_of(r, key);
    for (uint32_t i = r->rp_buckets[b]; i != NIL; i = r->rp_slots[i].re_next) {
        if (memcmp(r->rp_slots[i].re_key, key, LM_REPLAY_KEY_LEN) == 0)
            return LM_REPLAY_SEEN;
    }
    int64_t floor = r->rp_floor;
    if (r->rp_count == r->rp_cap && r->rp_slots[r->rp_head].re_t > floor)
        floor = r->rp_slots[r->rp_head].re_t; /* the floor once the head is evicted */
    if (t <= floor)
        return LM_REPLAY_FLOOR;
    if (r->rp_count == r->rp_cap) {
        r->rp_floor = floor;
        drop_head(r);
    }
    uint32_t slot = (uint32_t)((r->rp_head + r->rp_count) % r->rp_cap);
    lm_replay_entry_t *e = &r->rp_slots[slot];
    memcpy(e->re_key, key, LM_REPLAY_KEY_LEN);
    e->re_t = t;
    e->re_expires_s = expires_s;
    e->re_next = r->rp_buckets[b];
    r->rp_buckets[b] = slot;
    r->rp_count++;
    return LM_REPLAY_FRESH;
}
