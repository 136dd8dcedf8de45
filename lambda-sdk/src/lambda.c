/* SPDX-License-Identifier: MIT */
/* The lambda object and msm_lambda_main(): settings (the SDK's table plus the lambda's own,
 * loaded as one), the HTTP server with a POST route for every path, metrics, start/stop
 * hooks, and the SIGTERM drain. One process for now: the Atlas-style supervisor (prefork,
 * autoscaling, canary) is a later step, its flags are accepted and documented already. */
#include "lambda_int.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/version.h"

#include <errno.h>
#include <signal.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define FAC "lambda"
/* Push paths may have up to this many segments (the HTTP server's parameter limit). */
#define PUSH_MAX_DEPTH MSM_HTTP_MAX_PARAMS

/* Exit codes of msm_lambda_main(). */
#define EXIT_CLEAN  0
#define EXIT_FAILED 1
#define EXIT_USAGE  2
#define KEEP_GOING  -1

static const msm_conf_def_t lm_conf_defs[] = {
    MSM_CONF_INT("port",
                 lm_conf_t,
                 lc_port,
                 9000,
                 0,
                 65535,
                 "HTTP port the router pushes to (0: any free port)"),
    MSM_CONF_STR("bind", lm_conf_t, lc_bind, "0.0.0.0", "HTTP listen address"),
    MSM_CONF_SECRET_STR("secret",
                        lm_conf_t,
                        lc_secret,
                        NULL,
                        "verify Msm-Signature (HMAC-SHA256) with these comma-separated secrets "
                        "(any one may match: rotation); unsigned, badly signed or replayed "
                        "pushes get 401"),
    MSM_CONF_INT("signature-tolerance-s",
                 lm_conf_t,
                 lc_signature_tolerance_s,
                 300,
                 0,
                 86400,
                 "refuse signatures whose timestamp is further than this from now (0: any)"),
    MSM_CONF_INT("replay-cache-size",
                 lm_conf_t,
                 lc_replay_cache_size,
                 100000,
                 0,
                 10000000,
                 "signed pushes remembered to refuse replays within the tolerance window "
                 "(about 60 bytes each; 0: no replay check)"),
    MSM_CONF_INT("drain-timeout-ms",
                 lm_conf_t,
                 lc_drain_timeout_ms,
                 30000,
                 0,
                 3600000,
                 "on SIGTERM, wait at most this long for handlers in flight"),
    MSM_CONF_INT("max-body-bytes",
                 lm_conf_t,
                 lc_max_body_bytes,
                 10485760,
                 1,
                 1073741824,
                 "largest payload accepted (larger: 413)"),
    MSM_CONF_INT("min-workers",
                 lm_conf_t,
                 lc_min_workers,
                 1,
                 1,
                 1024,
                 "worker processes always running (not yet: single process)"),
    MSM_CONF_INT("max-workers",
                 lm_conf_t,
                 lc_max_workers,
                 1,
                 1,
                 1024,
                 "most worker processes when autoscaling (not yet: single process)"),
    MSM_CONF_STR("canary",
                 lm_conf_t,
                 lc_canary,
                 NULL,
                 "binary of a new release to run beside this one (not yet: single process)"),
    MSM_CONF_INT("canary-share",
                 lm_conf_t,
                 lc_canary_share,
                 10,
                 0,
                 100,
                 "percent of pushes the canary gets (not yet: single process)"),
    MSM_CONF_ENUM("logging.level",
                  lm_conf_t,
                  lc_logging_level,
                  "info",
                  msm_conf_log_levels,
                  "lowest level logged"),
    MSM_CONF_ENUM("logging.format",
                  lm_conf_t,
                  lc_logging_format,
                  "logfmt",
                  msm_conf_log_formats,
                  "log line format"),
};
#define LM_NCONF MSM_CONF_COUNT(lm_conf_defs)

/* Signals reach us through these (the only globals: a handler needs them). The fd is an
 * eventfd the loop watches, set before the handlers are installed. */
static volatile sig_atomic_t lm_signals;
static volatile sig_atomic_t lm_signal_fd = -1;

/* ---- the lambda object ---- */

msm_lambda_t *msm_lambda_new(const char *name)
{
    msm_lambda_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->lm_name = strdup(name && *name ? name : "msm-lambda");
    if (!l->lm_name) {
        free(l);
        return NULL;
    }
    msm_timer_init(&l->lm_drain_timer);
    return l;
}

void msm_lambda_free(msm_lambda_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->lm_nhandlers; i++)
        free(l->lm_handlers[i].h_subscription);
    free(l->lm_handlers);
    if (l->lm_conf_loaded) {
        msm_conf_free(lm_conf_defs, LM_NCONF, &l->lm_conf);
        for (size_t i = 0; i < l->lm_nuser_confs; i++) {
            lm_user_conf_t *uc = &l->lm_user_confs[i];
            msm_conf_free(uc->uc_defs, uc->uc_ndefs, uc->uc_conf);
        }
    }
    free(l->lm_user_confs);
    for (size_t i = 0; i < l->lm_nsecrets; i++)
        free(l->lm_secrets[i]);
    free(l->lm_secrets);
    free(l->lm_start_hooks);
    free(l->lm_stop_hooks);
    free(l->lm_name);
    free(l);
}

int msm_lambda_on(msm_lambda_t *l, const char *subscription, msm_handler_t *handler)
{
    if (!l || !subscription || !*subscription || !handler || l->lm_serving)
        return MSM_ERR_INVALID;
    for (size_t i = 0; i < l->lm_nhandlers; i++) {
        if (strcmp(l->lm_handlers[i].h_subscription, subscription) == 0) {
            l->lm_handlers[i].h_cb = handler;
            return MSM_OK;
        }
    }
    lm_handler_t *hs = realloc(l->lm_handlers, (l->lm_nhandlers + 1) * sizeof(*hs));
    if (!hs)
        return MSM_ERR_NOMEM;
    l->lm_handlers = hs;
    lm_handler_t *h = &hs[l->lm_nhandlers];
    memset(h, 0, sizeof(*h));
    h->h_subscription = strdup(subscription);
    if (!h->h_subscription)
        return MSM_ERR_NOMEM;
    h->h_cb = handler;
    l->lm_nhandlers++;
    return MSM_OK;
}

static int add_secret(msm_lambda_t *l, const char *secret, size_t len)
{
    char **ss = realloc(l->lm_secrets, (l->lm_nsecrets + 1) * sizeof(*ss));
    if (!ss)
        return MSM_ERR_NOMEM;
    l->lm_secrets = ss;
    ss[l->lm_nsecrets] = strndup(secret, len);
    if (!ss[l->lm_nsecrets])
        return MSM_ERR_NOMEM;
    l->lm_nsecrets++;
    return MSM_OK;
}

int msm_lambda_add_secret(msm_lambda_t *l, const char *secret)
{
    if (!l || !secret || !*secret || l->lm_serving)
        return MSM_ERR_INVALID;
    return add_secret(l, secret, strlen(secret));
}

/* --secret's comma-separated items join those of msm_lambda_add_secret(). */
static int load_secrets(msm_lambda_t *l)
{
    const char *s = l->lm_conf.lc_secret;
    while (s && *s) {
        size_t n = strcspn(s, ",");
        if (n > 0 && add_secret(l, s, n) != MSM_OK)
            return -1;
        s += n + (s[n] == ',');
    }
    if (l->lm_conf.lc_secret && *l->lm_conf.lc_secret && l->lm_nsecrets == 0) {
        /* Only commas: refusing to start beats silently accepting unsigned pushes. */
        msm_log(MSM_LOG_ERROR, FAC, "--secret holds no secret (only commas)");
        return -1;
    }
    return 0;
}

void msm_lambda_set_opaque(msm_lambda_t *l, void *opaque)
{
    l->lm_opaque = opaque;
}

int msm_lambda_add_conf(
    msm_lambda_t *l, const msm_conf_def_t *defs, size_t ndefs, void *conf, size_t conf_size)
{
    if (!l || !defs || !ndefs || !conf || !conf_size || l->lm_serving || l->lm_conf_loaded)
        return MSM_ERR_INVALID;
    lm_user_conf_t *ucs = realloc(l->lm_user_confs, (l->lm_nuser_confs + 1) * sizeof(*ucs));
    if (!ucs)
        return MSM_ERR_NOMEM;
    l->lm_user_confs = ucs;
    ucs[l->lm_nuser_confs++] = (lm_user_conf_t){defs, ndefs, conf, conf_size};
    return MSM_OK;
}

static int add_hook(lm_hook_t **hooks, size_t *n, msm_lambda_hook_t *cb, void *opaque)
{
    if (!cb)
        return MSM_ERR_INVALID;
    lm_hook_t *hs = realloc(*hooks, (*n + 1) * sizeof(*hs));
    if (!hs)
        return MSM_ERR_NOMEM;
    hs[(*n)++] = (lm_hook_t){cb, opaque};
    *hooks = hs;
    return MSM_OK;
}

int msm_lambda_on_start(msm_lambda_t *l, msm_lambda_hook_t *hook, void *opaque)
{
    return add_hook(&l->lm_start_hooks, &l->lm_nstart_hooks, hook, opaque);
}

int msm_lambda_on_stop(msm_lambda_t *l, msm_lambda_hook_t *hook, void *opaque)
{
    return add_hook(&l->lm_stop_hooks, &l->lm_nstop_hooks, hook, opaque);
}

msm_loop_t *msm_lambda_loop(msm_lambda_t *l)
{
    return l->lm_loop;
}

int msm_lambda_port(const msm_lambda_t *l)
{
    return l->lm_port;
}

/* ---- settings: the SDK's table and the lambda's, loaded as one ---- */

static size_t align_up(size_t n)
{
    size_t a = alignof(max_align_t);
    return (n + a - 1) / a * a;
}

/* One table over one buffer: the SDK's struct first, then each lambda struct at its own
 * aligned offset, its definitions shifted by that offset. */
static msm_conf_def_t *merged_table(const msm_lambda_t *l, size_t *ndefs, size_t *bufsize)
{
    size_t n = LM_NCONF;
    for (size_t i = 0; i < l->lm_nuser_confs; i++)
        n += l->lm_user_confs[i].uc_ndefs;
    msm_conf_def_t *defs = malloc(n * sizeof(*defs));
    if (!defs)
        return NULL;
    memcpy(defs, lm_conf_defs, sizeof(lm_conf_defs));
    size_t k = LM_NCONF, base = align_up(sizeof(lm_conf_t));
    for (size_t i = 0; i < l->lm_nuser_confs; i++) {
        const lm_user_conf_t *uc = &l->lm_user_confs[i];
        for (size_t j = 0; j < uc->uc_ndefs; j++) {
            defs[k] = uc->uc_defs[j];
            defs[k++].cd_offset += base;
        }
        base += align_up(uc->uc_size);
    }
    *ndefs = n;
    *bufsize = base;
    return defs;
}

static const char *prog_name(msm_lambda_t *l, int argc, char **argv)
{
    if (argc < 1 || !argv[0] || !*argv[0])
        return l->lm_name;
    const char *slash = strrchr(argv[0], '/');
    return slash ? slash + 1 : argv[0];
}

static void print_help(msm_lambda_t *l, const msm_conf_def_t *defs, size_t n, const char *prog)
{
    char summary[512];
    snprintf(summary, sizeof(summary),
             "%s: an msm lambda (libmsm-lambda %s). Serves the router's pushes (POST to any\n"
             "path, CloudEvents 1.0 binary mode) and GET /healthz /readyz /metrics /debug/info.\n"
             "SIGTERM or SIGINT: stop accepting, finish what is in flight, exit 0.",
             l->lm_name, msm_version());
    msm_conf_help(defs, n, stdout, prog, summary);
}

/* Loads every setting. Returns KEEP_GOING (serve), EXIT_CLEAN (--help, --version) or
 * EXIT_USAGE. On KEEP_GOING *json holds the masked settings for /debug/info. */
static int load_conf(msm_lambda_t *l, int argc, char **argv, json_t **json)
{
    size_t n, size;
    msm_conf_def_t *defs = merged_table(l, &n, &size);
    char *buf = defs ? calloc(1, size) : NULL;
    const char *prog = prog_name(l, argc, argv);
    if (!buf) {
        free(defs);
        fprintf(stderr, "%s: out of memory\n", prog);
        return EXIT_FAILED;
    }
    /* The lambda's structs keep their other fields: start from their current contents. */
    size_t base = align_up(sizeof(lm_conf_t));
    for (size_t i = 0; i < l->lm_nuser_confs; i++) {
        memcpy(buf + base, l->lm_user_confs[i].uc_conf, l->lm_user_confs[i].uc_size);
        base += align_up(l->lm_user_confs[i].uc_size);
    }
    char err[512];
    int rc = msm_conf_load_argv(defs, n, buf, argc, argv, err, sizeof(err));
    int out = EXIT_USAGE;
    if (rc == MSM_CONF_HELP) {
        print_help(l, defs, n, prog);
        out = EXIT_CLEAN;
    } else if (rc == MSM_CONF_VERSION) {
        printf("%s %s (libmsm-lambda, git %s)\n", l->lm_name, msm_version(), msm_git_sha());
        out = EXIT_CLEAN;
    } else if (rc != MSM_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
    } else {
        *json = msm_conf_to_json(defs, n, buf);
        memcpy(&l->lm_conf, buf, sizeof(lm_conf_t));
        base = align_up(sizeof(lm_conf_t));
        for (size_t i = 0; i < l->lm_nuser_confs; i++) {
            memcpy(l->lm_user_confs[i].uc_conf, buf + base, l->lm_user_confs[i].uc_size);
            base += align_up(l->lm_user_confs[i].uc_size);
        }
        l->lm_conf_loaded = 1;
        out = KEEP_GOING;
    }
    free(buf);
    free(defs);
    return out;
}

/* ---- metrics ---- */

static int register_metrics(msm_lambda_t *l, msm_metrics_t *reg)
{
    static const char *const inv_labels[] = {"handler", "result", NULL};
    static const char *const dur_labels[] = {"handler", NULL};
    static const char *const rej_labels[] = {"reason", NULL};
    static const char *const results[] = {"ok", "retry", "fatal", "deadline"};
    msm_metric_t *inflight, *v1_only;
    if (msm_metrics_counter(reg, "msm_lambda_invocations_total",
                            "Handler invocations answered, by handler and result.", inv_labels,
                            &l->lm_m_invocations) != MSM_OK ||
        msm_metrics_histogram(reg, "msm_lambda_handler_duration_seconds",
                              "From the push's arrival to its answer, by handler.", dur_labels,
                              NULL, 0, &l->lm_m_duration) != MSM_OK ||
        msm_metrics_counter(reg, "msm_lambda_rejected_total",
                            "Pushes answered before any handler ran, by reason.", rej_labels,
                            &l->lm_m_rejected) != MSM_OK ||
        msm_metrics_gauge(reg, "msm_lambda_in_flight", "Invocations not yet finished.", NULL,
                          &inflight) != MSM_OK ||
        msm_metrics_counter(reg, "msm_lambda_signature_v1_only_total",
                            "Pushes accepted on a v1 signature alone (the sender sent no v2).",
                            NULL, &v1_only) != MSM_OK)
        return -1;
    l->lm_m_inflight = msm_metric_solo(inflight);
    l->lm_m_v1_only = msm_metric_solo(v1_only);
    for (size_t i = 0; i < l->lm_nhandlers; i++) {
        lm_handler_t *h = &l->lm_handlers[i];
        for (int r = 0; r < 4; r++)
            h->h_results[r] =
                msm_metric_labels(l->lm_m_invocations, h->h_subscription, results[r], NULL);
        h->h_duration = msm_metric_labels(l->lm_m_duration, h->h_subscription, NULL);
    }
    return 0;
}

/* ---- routes: POST on any path up to PUSH_MAX_DEPTH segments ---- */

static int add_push_routes(msm_lambda_t *l)
{
    char pattern[PUSH_MAX_DEPTH * 6 + 2];
    if (msm_http_server_route(l->lm_srv, "POST", "/", msm__lambda_on_push, l) != MSM_OK)
        return -1;
    size_t len = 0;
    for (int depth = 1; depth <= PUSH_MAX_DEPTH; depth++) {
        len += (size_t)snprintf(pattern + len, sizeof(pattern) - len, "/{p%d}", depth);
        /* The same path with a trailing slash ("/orders/"). */
        char slashed[sizeof(pattern) + 1];
        snprintf(slashed, sizeof(slashed), "%s/", pattern);
        if (msm_http_server_route(l->lm_srv, "POST", pattern, msm__lambda_on_push, l) != MSM_OK ||
            msm_http_server_route(l->lm_srv, "POST", slashed, msm__lambda_on_push, l) != MSM_OK)
            return -1;
    }
    return 0;
}

/* ---- signals and the drain ---- */

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    lm_signals++;
    uint64_t one = 1;
    if (lm_signal_fd >= 0) {
        ssize_t rc = write(lm_signal_fd, &one, sizeof(one));
        (void)rc;
    }
    errno = saved;
}

static void on_drain_timeout(msm_loop_t *loop, void *opaque)
{
    msm_lambda_t *l = opaque;
    msm_log(MSM_LOG_WARN, FAC, "drain timeout: %zu invocation(s) still in flight", l->lm_inflight);
    l->lm_forced = 1;
    msm_loop_stop(loop);
}

static void begin_drain(msm_lambda_t *l)
{
    l->lm_draining = 1;
    msm_http_server_quiesce(l->lm_srv);
    msm_log(MSM_LOG_INFO, FAC, "draining: %zu invocation(s) in flight", l->lm_inflight);
    if (l->lm_inflight == 0) {
        msm_loop_stop(l->lm_loop);
        return;
    }
    msm_loop_timer_start(l->lm_loop, &l->lm_drain_timer, (uint64_t)l->lm_conf.lc_drain_timeout_ms,
                         on_drain_timeout, l);
}

void msm__lambda_released(msm_lambda_t *l)
{
    if (l->lm_draining && l->lm_inflight == 0) {
        msm_log(MSM_LOG_INFO, FAC, "drained");
        msm_loop_stop(l->lm_loop);
    }
}

static void on_signal_fd(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)events;
    msm_lambda_t *l = opaque;
    uint64_t v;
    ssize_t rc = read(fd, &v, sizeof(v));
    (void)rc;
    if (!l->lm_draining)
        begin_drain(l);
    if (lm_signals >= 2) {
        msm_log(MSM_LOG_WARN, FAC, "second signal: stopping now");
        l->lm_forced = l->lm_inflight > 0;
        msm_loop_stop(loop);
    }
}

typedef struct {
    struct sigaction ss_term, ss_int, ss_pipe;
} saved_signals_t;

static int install_signals(saved_signals_t *saved, int fd)
{
    lm_signals = 0;
    lm_signal_fd = fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    struct sigaction ign;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    if (sigaction(SIGTERM, &sa, &saved->ss_term) != 0 ||
        sigaction(SIGINT, &sa, &saved->ss_int) != 0 ||
        sigaction(SIGPIPE, &ign, &saved->ss_pipe) != 0)
        return -1;
    return 0;
}

static void restore_signals(const saved_signals_t *saved)
{
    sigaction(SIGTERM, &saved->ss_term, NULL);
    sigaction(SIGINT, &saved->ss_int, NULL);
    sigaction(SIGPIPE, &saved->ss_pipe, NULL);
    lm_signal_fd = -1;
}

/* ---- serving ---- */

static void warn_not_yet(const msm_lambda_t *l)
{
    const lm_conf_t *c = &l->lm_conf;
    if (c->lc_min_workers != 1 || c->lc_max_workers != 1 || (c->lc_canary && *c->lc_canary))
        msm_log(MSM_LOG_WARN, FAC,
                "--min-workers, --max-workers and --canary are not implemented yet: "
                "serving from this single process");
    if (l->lm_nhandlers == 0)
        msm_log(MSM_LOG_WARN, FAC, "no handlers registered: every push will get 404");
}

static int run_start_hooks(msm_lambda_t *l)
{
    for (size_t i = 0; i < l->lm_nstart_hooks; i++) {
        if (l->lm_start_hooks[i].hk_cb(l, l->lm_start_hooks[i].hk_opaque) != 0) {
            msm_log(MSM_LOG_ERROR, FAC, "a start hook failed: not serving");
            return -1;
        }
    }
    return 0;
}

static void run_stop_hooks(msm_lambda_t *l)
{
    for (size_t i = 0; i < l->lm_nstop_hooks; i++)
        l->lm_stop_hooks[i].hk_cb(l, l->lm_stop_hooks[i].hk_opaque);
}

static msm_http_server_t *start_server(msm_lambda_t *l, const json_t *conf_json)
{
    msm_http_server_conf_t hc;
    msm_http_server_conf_init(&hc);
    hc.bind_address = l->lm_conf.lc_bind;
    hc.port = l->lm_conf.lc_port;
    hc.max_body_bytes = (size_t)l->lm_conf.lc_max_body_bytes;
    hc.name = l->lm_name;
    hc.config = conf_json;
    hc.metrics = l->lm_metrics;
    char err[256];
    msm_http_server_t *srv = msm_http_server_new(l->lm_loop, &hc, err, sizeof(err));
    if (!srv)
        msm_log(MSM_LOG_ERROR, FAC, "cannot serve HTTP: %s", err);
    return srv;
}

static int serve(msm_lambda_t *l, const json_t *conf_json)
{
    int rc = EXIT_FAILED, started = 0, sigfd = -1, signals_set = 0;
    saved_signals_t saved;
    msm_log_setup(l->lm_name, (msm_log_level_t)l->lm_conf.lc_logging_level,
                  (msm_log_format_t)l->lm_conf.lc_logging_format, NULL);
    warn_not_yet(l);
    l->lm_serving = 1;
    l->lm_loop = msm_loop_new();
    /* Our registry, lent to the server: invocations still counted after the server is gone
     * (at a forced stop) must not touch a freed one. */
    l->lm_metrics = msm_metrics_new();
    if (!l->lm_loop || !l->lm_metrics)
        goto out;
    if (load_secrets(l) != 0)
        goto out;
    if (l->lm_nsecrets > 0 && l->lm_conf.lc_replay_cache_size > 0 &&
        !(l->lm_replay = msm__replay_new((size_t)l->lm_conf.lc_replay_cache_size))) {
        msm_log(MSM_LOG_ERROR, FAC, "cannot set up the replay cache: out of memory");
        goto out;
    }
    l->lm_srv = start_server(l, conf_json);
    if (!l->lm_srv)
        goto out;
    l->lm_port = msm_http_server_port(l->lm_srv);
    if (register_metrics(l, l->lm_metrics) != 0 || add_push_routes(l) != 0) {
        msm_log(MSM_LOG_ERROR, FAC, "cannot set up metrics or routes (out of memory?)");
        goto out;
    }
    sigfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sigfd < 0 || msm_loop_watch(l->lm_loop, sigfd, MSM_LOOP_READ, on_signal_fd, l) != MSM_OK ||
        install_signals(&saved, sigfd) != 0) {
        msm_log(MSM_LOG_ERROR, FAC, "cannot set up signal handling: %s", strerror(errno));
        goto out;
    }
    signals_set = 1;
    if (run_start_hooks(l) != 0)
        goto out;
    started = 1;
    msm_log(MSM_LOG_INFO, FAC, "%s ready on port %u with %zu handler(s)", l->lm_name,
            (unsigned)l->lm_port, l->lm_nhandlers);
    msm_loop_run(l->lm_loop);
    rc = l->lm_forced ? EXIT_FAILED : EXIT_CLEAN;
out:
    /* The server answers late requests still owed 503 before it goes. */
    msm_http_server_free(l->lm_srv);
    l->lm_srv = NULL;
    if (l->lm_loop) {
        msm__lambda_cancel_all(l);
        msm_loop_timer_stop(l->lm_loop, &l->lm_drain_timer);
    }
    if (started)
        run_stop_hooks(l);
    if (signals_set)
        restore_signals(&saved);
    if (sigfd >= 0) {
        msm_loop_unwatch(l->lm_loop, sigfd);
        close(sigfd);
    }
    msm_loop_free(l->lm_loop);
    l->lm_loop = NULL;
    msm_metrics_free(l->lm_metrics);
    l->lm_metrics = NULL;
    msm__replay_free(l->lm_replay);
    l->lm_replay = NULL;
    msm_log(MSM_LOG_INFO, FAC, "%s stopped", l->lm_name);
    return rc;
}

int msm_lambda_main(msm_lambda_t *l, int argc, char **argv)
{
    if (!l) {
        fprintf(stderr, "msm_lambda_main: no lambda (msm_lambda_new failed?)\n");
        return EXIT_FAILED;
    }
    json_t *conf_json = NULL;
    int rc = load_conf(l, argc, argv, &conf_json);
    if (rc == KEEP_GOING)
        rc = serve(l, conf_json);
    json_decref(conf_json);
    msm_lambda_free(l);
    return rc;
}
