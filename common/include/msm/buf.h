/* SPDX-License-Identifier: MIT */
/* A growable byte buffer, reused across packs and requests so hot paths do not allocate
 * per event (the envelope's packs, the SDK client's request bodies). */
#ifndef MSM_BUF_H
#define MSM_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} msm_buf_t;

/** @brief Makes room for @p extra more bytes after len. @returns MSM_OK or MSM_ERR_NOMEM. */
int msm_buf_reserve(msm_buf_t *b, size_t extra);
/**
 * @brief Appends @p n bytes and keeps a NUL after them (not counted in len), so text stays
 * a C string. @returns MSM_OK or MSM_ERR_NOMEM.
 */
int msm_buf_append(msm_buf_t *b, const void *p, size_t n);
/**
 * @brief Appends the whole of file @p path, NUL-terminated like msm_buf_append().
 * @returns MSM_OK, MSM_ERR_IO (errno says why) or MSM_ERR_NOMEM; on error @p b keeps what
 * it had, possibly with more room.
 */
int msm_buf_append_file(msm_buf_t *b, const char *path);
/** @brief Frees the storage and zeroes @p b. */
void msm_buf_deinit(msm_buf_t *b);

#endif
