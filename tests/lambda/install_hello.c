/* SPDX-License-Identifier: MIT */
/* A lambda built outside the tree by lambda.install: only the installed public headers,
 * compiled with `cc $(pkg-config --cflags --libs msm-lambda)`. It also uses a settings
 * table (msm/config.h) and the log levels, the parts of the API lambda owners reach for. */
#include <msm/lambda.h>

typedef struct {
    char *greeting;
    int repeat;
} hello_conf_t;

static const msm_conf_def_t hello_defs[] = {
    MSM_CONF_STR("greeting", hello_conf_t, greeting, "hello", "what to say"),
    MSM_CONF_INT("repeat", hello_conf_t, repeat, 1, 1, 10, "how often"),
};

static msm_status_t on_any(const msm_event_t *ev, msm_ctx_t *ctx)
{
    const hello_conf_t *conf = msm_ctx_opaque(ctx);
    for (int i = 0; i < conf->repeat; i++) {
        msm_ctx_log(ctx, MSM_LOG_INFO, "%s %s", conf->greeting, msm_event_id(ev));
    }
    return MSM_OK;
}

int main(int argc, char **argv)
{
    static hello_conf_t conf;
    msm_lambda_t *l = msm_lambda_new("hello-lambda");
    if (l == NULL) {
        return 1;
    }
    if (msm_lambda_add_conf(l, hello_defs, MSM_CONF_COUNT(hello_defs), &conf, sizeof(conf)) !=
            MSM_OK ||
        msm_lambda_on(l, "*", on_any) != MSM_OK) {
        msm_lambda_free(l);
        return 1;
    }
    msm_lambda_set_opaque(l, &conf);
    return msm_lambda_main(l, argc, argv);
}
