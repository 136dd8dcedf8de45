/* SPDX-License-Identifier: MIT */
/* A lambda built for tests/lambda/test_client.c: for each push it publishes one event
 * `{"parent":"<ce-id>"}` to the topic named by the push's `Msm-Attr-publish_to` attribute
 * with msm_client_publish_from(), so the published event carries the handled event's trace
 * and deadline. The frontend comes from MSM_FRONTEND_URL. Answers ok, or fatal with the
 * client's error message. */
#include "msm/client.h"

#include <stdio.h>

static msm_status_t on_push(const msm_event_t *ev, msm_ctx_t *ctx)
{
    msm_client_t *c = msm_ctx_opaque(ctx);
    const char *topic = msm_event_attr(ev, "publish_to");
    char data[160];
    snprintf(data, sizeof(data), "{\"parent\":\"%.100s\"}", msm_event_id(ev));
    msm_message_t m = {.data = data};
    msm_publish_result_t r;
    if (!topic || msm_client_publish_from(c, msm_ctx_event(ctx), topic, &m, 1, &r) != MSM_OK) {
        const msm_client_error_t *e = msm_client_last_error(c);
        msm_ctx_set_error(ctx, "publish failed: %s %s", e->code, e->message);
        return MSM_FATAL;
    }
    msm_ctx_log(ctx, MSM_LOG_INFO, "published %s", r.id);
    return MSM_OK;
}

int main(int argc, char **argv)
{
    msm_client_t *c = msm_client_new(NULL);
    msm_lambda_t *l = msm_lambda_new("client-lambda");
    if (!c || !l || msm_lambda_on(l, "*", on_push) != MSM_OK) {
        msm_lambda_free(l);
        msm_client_free(c);
        return 1;
    }
    msm_lambda_set_opaque(l, c);
    int rc = msm_lambda_main(l, argc, argv);
    msm_client_free(c);
    return rc;
}
