/* SPDX-License-Identifier: MIT */
/* POST /v1/topics/{t}/events: headers (Msm-*, CloudEvents binary mode ce-*, Content-Type)
 * and body, as fe_parse_single() sees them. The input is "Name: value" lines, an empty line,
 * then the body; the first byte says whether the topic has a schema. Arbitrary input must
 * give an event or a complete API.md error body, never a crash. */
#include "pub_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int keep_json = data[0] & 1;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    size_t len = size - 1;
    fe_header_t hdrs[MAX_HEADERS];
    size_t n = 0;
    char *p = text, *end = text + len;
    /* Header lines up to the first empty line; names and values are NUL-terminated in place
     * (as MHD hands them over: a header value never holds a NUL). */
    while (p < end && n < MAX_HEADERS) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            break;
        *nl = '\0';
        if (nl == p) {
            p = nl + 1;
            break;
        }
        char *colon = strchr(p, ':');
        if (colon) {
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ')
                v++;
            hdrs[n++] = (fe_header_t){p, v};
        }
        p = nl + 1;
    }
    fe_parse_ctx_t ctx = {.max_events = 50, .max_event_bytes = 4096, .now_ms = 1700000000000};
    fe_batch_t b = {0};
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    int status = fe_parse_single(&ctx, hdrs, n, (const uint8_t *)p, (size_t)(end - p),
                                 keep_json, &b, &e, &big);
    if (status) {
        json_t *body = status == 413 ? msm_json_err_body(&big, "PAYLOAD_TOO_LARGE")
                                     : msm_json_err_body(&e, status == 415
                                                                 ? "UNSUPPORTED_MEDIA_TYPE"
                                                                 : NULL);
        if (!body || !json_object_get(body, "error"))
            abort();
        json_decref(body);
    } else if (b.n != 1 || (!b.evs[0].data && !b.evs[0].payload)) {
        abort();
    }
    fe_batch_free(&b);
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    free(text);
    return 0;
}
