/* SPDX-License-Identifier: MIT */
/* The growable byte buffer of msm/buf.h. */
#include "msm/buf.h"

#include "msm/err.h"

#include <errno.h>
#include <stdio.h>
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

int msm_buf_append_file(msm_buf_t *b, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return MSM_ERR_IO;
    size_t start = b->len;
    int rc = MSM_OK;
    for (;;) {
        if (msm_buf_reserve(b, 4096 + 1) != MSM_OK) {
            rc = MSM_ERR_NOMEM;
            break;
        }
        size_t r = fread(b->data + b->len, 1, b->cap - b->len - 1, f);
        b->len += r;
        if (r == 0)
            break;
    }
    if (rc == MSM_OK && ferror(f)) {
        rc = MSM_ERR_IO;
        if (errno == 0)
            errno = EIO;
    }
    fclose(f);
    if (rc != MSM_OK)
        b->len = start;
    if (b->data)
        b->data[b->len] = '\0';
    return rc;
}

void msm_buf_deinit(msm_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}
