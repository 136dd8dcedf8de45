/* SPDX-License-Identifier: MIT */
/* A bump allocator whose memory dies all at once: what protobuf-c allocates to unpack one
 * batch record (a few chunks instead of a dozen allocations per task, and one free). */
#ifndef MSM_ARENA_H
#define MSM_ARENA_H

#include <stddef.h>

typedef struct msm_arena msm_arena_t;

/** @brief @p size bytes (16-aligned) from the arena at @p *head, which grows by chunks of
 *  at least @p min_chunk bytes (a NULL @p *head starts one). NULL when out of memory. */
void *msm_arena_alloc(msm_arena_t **head, size_t size, size_t min_chunk);
/** @brief Frees every chunk of @p a (NULL is fine). */
void msm_arena_free(msm_arena_t *a);

#endif
