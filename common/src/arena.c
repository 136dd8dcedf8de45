/* SPDX-License-Identifier: MIT */
#include "msm/arena.h"

#include <stdlib.h>

#define ARENA_ALIGN 16

struct msm_arena {
    msm_arena_t *next; /* the chunk before this one */
    size_t used, cap;
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

void *msm_arena_alloc(msm_arena_t **head, size_t size, size_t min_chunk)
{
    size = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    msm_arena_t *c = *head;
    if (!c || c->cap - c->used < size) {
        size_t cap = size > min_chunk ? size : min_chunk;
        /* Doubling: a record larger than guessed costs a few chunks, not one per task. */
        if (c && cap < c->cap * 2)
            cap = c->cap * 2;
        if (!(c = malloc(sizeof(*c) + cap)))
            return NULL;
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

void msm_arena_free(msm_arena_t *a)
{
    while (a) {
        msm_arena_t *next = a->next;
        free(a);
        a = next;
    }
}
