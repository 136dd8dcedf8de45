/* SPDX-License-Identifier: MIT */
/* The growable byte buffer of msm/buf.h. */
#include "msm/buf.h"

#include "msm/err.h"

#include <stdlib.h>
#include <string.h>

int msm_buf_reserve(msm_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return MSM_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            return MSM_ERR_NOMEM;
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (!data)
        return MSM_ERR_NOMEM;
    b->data = data;
    b->cap = cap;
    return MSM_OK;
}

int msm_buf_append(msm_buf_t *b, const void *p, size_t n)
{
    if (n == SIZE_MAX || msm_buf_reserve(b, n + 1) != MSM_OK)
        return MSM_ERR_NOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return MSM_OK;
}

void msm_buf_deinit(msm_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
