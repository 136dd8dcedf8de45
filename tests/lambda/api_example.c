/* SPDX-License-Identifier: MIT */
/* The lambda of API.md "Lambda SDK", as written there (the handler body filled in): it must
 * compile with every warning on, and serve. */
#include <msm/lambda.h>

/* clang-format off */

static msm_status_t on_order(const msm_event_t *ev, msm_ctx_t *ctx) { msm_ctx_log(ctx, MSM_LOG_INFO, "order %s", msm_event_id(ev)); return MSM_OK; }
int main(int argc, char **argv) {
    msm_lambda_t *l = msm_lambda_new("orders-lambda");
    msm_lambda_on(l, "orders-sub", on_order);        /* by subscription, "*" = any */
    return msm_lambda_main(l, argc, argv);           /* serves until SIGTERM */
}
