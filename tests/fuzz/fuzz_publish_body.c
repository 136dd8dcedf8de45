/* SPDX-License-Identifier: MIT */
/* The JSON batch publish body (POST /v1/topics/{t}:publish) and the protobuf publish RPC
 * body (POST /v1/publish), as the frontend's parsers see them: arbitrary bytes must give a
 * batch or a complete API.md error body, never a crash. The first byte picks the form and
 * whether the topic has a schema (data kept as JSON for conversion). */
#include "pub_int.h"

#include <stdint.h>
#include <stdlib.h>

static void check_error(msm_json_err_t *e, msm_json_err_t *big, int status)
{
    if (!status)
        return;
    json_t *body = status == 413 ? msm_json_err_body(big, "PAYLOAD_TOO_LARGE")
                                 : msm_json_err_body(e, NULL);
    if (!body || !json_object_get(body, "error"))
        abort(); /* every failure must have its error body */
    json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fe_parse_ctx_t ctx = {.max_events = 50, .max_event_bytes = 4096, .now_ms = 1700000000000};
    int keep_json = data[0] & 1, protobuf = data[0] & 2;
    data++, size--;
    fe_batch_t b = {0};
    msm_json_err_t e, big;
    msm_json_err_init(&e);
    msm_json_err_init(&big);
    int status;
    if (protobuf) {
        const char *topic = NULL;
        status = fe_parse_pb_batch(&ctx, data, size, &b, &topic, &e, &big);
    } else {
        json_t *body = msm_json_parse((const char *)data, size, &e);
        status = body ? fe_parse_json_batch(&ctx, body, keep_json, &b, &e, &big) : 400;
    }
    check_error(&e, &big, status);
    for (size_t i = 0; !status && i < b.n; i++) { /* what the pipeline will read */
        const fe_event_t *ev = &b.evs[i];
        if (!ev->key || !ev->ordering_key || !ev->idempotency_key ||
            (!ev->data && !ev->payload) || ev->priority < 0 || ev->priority > 9)
            abort();
    }
    fe_batch_free(&b);
    msm_json_err_deinit(&e);
    msm_json_err_deinit(&big);
    return 0;
}
