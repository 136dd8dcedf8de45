/* SPDX-License-Identifier: MIT */
/* The lambda object and msm_lambda_main(): settings (the SDK's table plus the lambda's own,
 * loaded as one), then either the supervisor (supervisor.c: workers, autoscaling, canary)
 * or, in a worker process, the HTTP server with a POST route for every path on the
 * supervisor's socket, metrics, handler threads, start/stop hooks and the SIGTERM drain. */
#include "lambda_int.h"

#include "board.h"
#include "pool.h"

#include "msm/err.h"
#include "msm/log.h"
#include "msm/time.h"
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
                 LM_MAX_WORKERS,
                 "worker processes always running (the supervisor restarts any that dies)"),
    MSM_CONF_INT("max-workers",
                 lm_conf_t,
                 lc_max_workers,
                 0,
                 0,
                 LM_MAX_WORKERS,
                 "most worker processes: above --min-workers they come and go with the load "
                 "(0: as many as --min-workers)"),
    MSM_CONF_INT("threads",
                 lm_conf_t,
                 lc_threads,
                 0,
                 0,
                 LM_MAX_THREADS,
                 "handler threads per worker, for handlers that block (0: handlers run on the "
                 "worker's event loop and must not block)"),
    MSM_CONF_INT("target-utilization",
                 lm_conf_t,
                 lc_target_utilization,
                 60,
                 10,
                 100,
                 "percent of handler capacity (workers x threads) to keep busy when "
                 "autoscaling (60: 40% headroom)"),
    MSM_CONF_INT("scale-down-delay-ms",
                 lm_conf_t,
                 lc_scale_down_delay_ms,
                 10000,
                 1000,
                 3600000,
                 "stop workers only when fewer were wanted all this time"),
    MSM_CONF_INT("watchdog-ms",
                 lm_conf_t,
                 lc_watchdog_ms,
                 30000,
                 100,
                 86400000,
                 "kill and restart a worker whose handler runs this long past its event's "
                 "deadline (or in all, without one), or whose loop is stuck this long"),
    MSM_CONF_INT("admin-port",
                 lm_conf_t,
                 lc_admin_port,
                 0,
                 0,
                 65535,
                 "the supervisor's HTTP port: /healthz /readyz /metrics /debug/info "
                 "/debug/workers (0: any free port, logged)"),
    MSM_CONF_INT("max-connection-age-ms",
                 lm_conf_t,
                 lc_max_connection_age_ms,
                 2000,
                 0,
                 86400000,
                 "answer Connection: close on connections older than this, so keep-alive "
                 "clients spread over new workers (0: never)"),
    MSM_CONF_STR("canary",
                 lm_conf_t,
                 lc_canary,
                 NULL,
                 "binary of a new release (built with this SDK) to run beside this one on a "
                 "share of the workers; promoted or rolled back by itself"),
    MSM_CONF_INT("canary-share",
                 lm_conf_t,
                 lc_canary_share,
                 10,
                 1,
                 99,
                 "percent of the workers that run the canary (at least one)"),
    MSM_CONF_INT("canary-window-ms",
                 lm_conf_t,
                 lc_canary_window_ms,
                 60000,
                 100,
                 86400000,
                 "compare the canary with the current release this long before promoting"),
    MSM_CONF_INT("canary-min-events",
                 lm_conf_t,
                 lc_canary_min_events,
                 100,
                 1,
                 100000000,
                 "answers the canary must give before any verdict"),
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
 * eventfd the loop watches, set before the handlers are installed. Only the supervisor's
 * own signals count towards a forced stop: a signal sent to the whole process group
 * (Ctrl-C, systemd's control-group kill) reaches a worker directly too, and with the
 * supervisor's copy it would look like a second one. */
static volatile sig_atomic_t lm_signals;           /* from the supervisor */
static volatile sig_atomic_t lm_signals_elsewhere; /* from anyone else */
static volatile sig_atomic_t lm_retire_signals;    /* SIGUSR2: the supervisor retires us */
static volatile sig_atomic_t lm_signal_fd = -1;
static pid_t lm_supervisor_pid;

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
    msm_timer_init(&l->lm_heartbeat_timer);
    msm_timer_init(&l->lm_retire_timer);
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

int msm_lambda_threads(const msm_lambda_t *l)
{
    return l->lm_conf.lc_threads;
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

static void on_signal(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    int saved = errno;
    if (sig == LM_RETIRE_SIGNAL)
        lm_retire_signals++;
    else if (info && info->si_pid == lm_supervisor_pid)
        lm_signals++;
    else
        lm_signals_elsewhere++;
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
    atomic_store_explicit(&l->lm_slot->s_state, LM_SLOT_DRAINING, memory_order_relaxed);
    msm_http_server_quiesce(l->lm_srv);
    msm_log(MSM_LOG_INFO, FAC, "draining: %zu invocation(s) in flight", l->lm_inflight);
    if (l->lm_inflight == 0) {
        msm_loop_stop(l->lm_loop);
        return;
    }
    msm_loop_timer_start(l->lm_loop, &l->lm_drain_timer, (uint64_t)l->lm_conf.lc_drain_timeout_ms,
                         on_drain_timeout, l);
}

/* Retiring (the pool shrinks, or a new release replaces this worker): the other workers
 * take new connections, requests on ours are still served but told Connection: close, and
 * the worker leaves once nothing is in flight and its connections are gone or idle. */
static void on_retire_check(msm_loop_t *loop, void *opaque)
{
    msm_lambda_t *l = opaque;
    uint64_t idle_us = msm_time_mono_us() - l->lm_last_push_us;
    if (!l->lm_draining && l->lm_inflight == 0 &&
        (msm_http_server_connections(l->lm_srv) == 0 || idle_us >= LM_RETIRE_IDLE_MS * 1000u)) {
        msm_log(MSM_LOG_INFO, FAC, "retired");
        msm_loop_stop(loop);
        return;
    }
    msm_loop_timer_start(loop, &l->lm_retire_timer, LM_RETIRE_CHECK_MS, on_retire_check, l);
}

static void begin_retire(msm_lambda_t *l)
{
    l->lm_retiring = 1;
    atomic_store_explicit(&l->lm_slot->s_state, LM_SLOT_DRAINING, memory_order_relaxed);
    msm_http_server_quiesce(l->lm_srv);
    msm_log(MSM_LOG_INFO, FAC, "retiring: %zu invocation(s) in flight", l->lm_inflight);
    msm_loop_timer_start(l->lm_loop, &l->lm_drain_timer, (uint64_t)l->lm_conf.lc_drain_timeout_ms,
                         on_drain_timeout, l);
    on_retire_check(l->lm_loop, l);
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
    if (lm_signals + lm_signals_elsewhere == 0) {
        if (!l->lm_retiring && !l->lm_draining)
            begin_retire(l);
        return;
    }
    if (!l->lm_draining)
        begin_drain(l);
    if (lm_signals >= 2) {
        msm_log(MSM_LOG_WARN, FAC, "second signal from the supervisor: stopping now");
        l->lm_forced = l->lm_inflight > 0;
        msm_loop_stop(loop);
    }
}

typedef struct {
    struct sigaction ss_term, ss_int, ss_pipe, ss_retire;
} saved_signals_t;

static int install_signals(saved_signals_t *saved, int fd)
{
    lm_signals = lm_signals_elsewhere = lm_retire_signals = 0;
    lm_supervisor_pid = getppid();
    lm_signal_fd = fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    struct sigaction ign;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    if (sigaction(SIGTERM, &sa, &saved->ss_term) != 0 ||
        sigaction(SIGINT, &sa, &saved->ss_int) != 0 ||
        sigaction(LM_RETIRE_SIGNAL, &sa, &saved->ss_retire) != 0 ||
        sigaction(SIGPIPE, &ign, &saved->ss_pipe) != 0)
        return -1;
    return 0;
}

/* The worker is about to exit: a signal still on its way (the supervisor's copy of a
 * group-wide SIGTERM) must not turn a clean stop into death by signal, so the stop signals
 * are ignored from here on rather than given back their default action. */
static void restore_signals(const saved_signals_t *saved)
{
    struct sigaction ign;
    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGTERM, &ign, NULL);
    sigaction(SIGINT, &ign, NULL);
    sigaction(LM_RETIRE_SIGNAL, &ign, NULL);
    sigaction(SIGPIPE, &saved->ss_pipe, NULL);
    lm_signal_fd = -1;
}

/* ---- serving ---- */

static void warn_no_handlers(const msm_lambda_t *l)
{
    if (l->lm_nhandlers == 0)
        msm_log(MSM_LOG_WARN, FAC, "no handlers registered: every push will get 404");
}

/* ---- the worker's place on the board ---- */

typedef struct {
    int we_listen_fd;
    int we_board_fd;
    unsigned we_slot;
} worker_env_t;

static int parse_worker_env(const char *s, worker_env_t *we)
{
    char tail;
    return s && sscanf(s, "%d,%d,%u%c", &we->we_listen_fd, &we->we_board_fd, &we->we_slot,
                       &tail) == 3 && we->we_listen_fd > 2 && we->we_board_fd > 2
               ? 0
               : -1;
}

static void on_heartbeat(msm_loop_t *loop, void *opaque)
{
    msm_lambda_t *l = opaque;
    atomic_store_explicit(&l->lm_slot->s_heartbeat_ms, msm__board_now_ms(),
                          memory_order_relaxed);
    /* Several beats per watchdog period: a late one must not look like a hang. */
    uint64_t every = (uint64_t)l->lm_conf.lc_watchdog_ms / 4;
    if (every > LM_HEARTBEAT_MS)
        every = LM_HEARTBEAT_MS;
    msm_loop_timer_start(loop, &l->lm_heartbeat_timer, every > 0 ? every : 1, on_heartbeat, l);
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

static msm_http_server_t *start_server(msm_lambda_t *l, const json_t *conf_json, int listen_fd)
{
    msm_http_server_conf_t hc;
    msm_http_server_conf_init(&hc);
    hc.bind_address = l->lm_conf.lc_bind;
    hc.port = l->lm_conf.lc_port;
    hc.listen_fd = listen_fd;
    hc.max_connection_age_ms = (unsigned)l->lm_conf.lc_max_connection_age_ms;
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

/* A worker process: serves the supervisor's socket, posts to its board slot. */
static int serve(msm_lambda_t *l, const json_t *conf_json, const worker_env_t *we)
{
    int rc = EXIT_FAILED, started = 0, sigfd = -1, signals_set = 0;
    saved_signals_t saved;
    lm_board_t *board = msm__board_map(we->we_board_fd);
    close(we->we_board_fd);
    if (!board || we->we_slot >= board->b_nslots) {
        close(we->we_listen_fd);
        msm_log(MSM_LOG_ERROR, FAC, "worker: no board from the supervisor");
        msm__board_unmap(board);
        return EXIT_FAILED;
    }
    l->lm_slot = &board->b_slots[we->we_slot];
    atomic_store_explicit(&l->lm_slot->s_pid, (int32_t)getpid(), memory_order_relaxed);
    atomic_store_explicit(&l->lm_slot->s_heartbeat_ms, msm__board_now_ms(),
                          memory_order_relaxed);
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
    l->lm_srv = start_server(l, conf_json, we->we_listen_fd);
    if (!l->lm_srv)
        goto out;
    if (l->lm_conf.lc_threads > 0 &&
        !(l->lm_pool = msm__pool_new(l->lm_loop, (unsigned)l->lm_conf.lc_threads,
                                     msm__lambda_run_job, msm__lambda_job_done, l))) {
        msm_log(MSM_LOG_ERROR, FAC, "cannot start %d handler threads: %s", l->lm_conf.lc_threads,
                strerror(errno));
        goto out;
    }
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
    on_heartbeat(l->lm_loop, l);
    atomic_store_explicit(&l->lm_slot->s_state, LM_SLOT_READY, memory_order_release);
    msm_log(MSM_LOG_INFO, FAC, "worker %u (pid %d) ready on port %u with %zu handler(s), %d thread(s)",
            we->we_slot, (int)getpid(), (unsigned)l->lm_port, l->lm_nhandlers,
            l->lm_conf.lc_threads);
    msm_loop_run(l->lm_loop);
    rc = l->lm_forced ? EXIT_FAILED : EXIT_CLEAN;
out:
    /* The server answers late requests still owed 503 before it goes. */
    msm_http_server_free(l->lm_srv);
    l->lm_srv = NULL;
    if (l->lm_loop) {
        msm__lambda_cancel_all(l);
        msm_loop_timer_stop(l->lm_loop, &l->lm_drain_timer);
        msm_loop_timer_stop(l->lm_loop, &l->lm_heartbeat_timer);
        msm_loop_timer_stop(l->lm_loop, &l->lm_retire_timer);
    }
    msm__pool_free(l->lm_pool, !l->lm_forced);
    l->lm_pool = NULL;
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
    msm_log(MSM_LOG_INFO, FAC, "worker %u (pid %d) stopped", we->we_slot, (int)getpid());
    l->lm_slot = NULL;
    msm__board_unmap(board);
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
    if (rc == KEEP_GOING) {
        msm_log_setup(l->lm_name, (msm_log_level_t)l->lm_conf.lc_logging_level,
                      (msm_log_format_t)l->lm_conf.lc_logging_format, NULL);
        const char *env = getenv(LM_WORKER_ENV);
        worker_env_t we;
        if (!env) {
            warn_no_handlers(l);
            rc = msm__supervise(l, argc, argv, conf_json);
        } else if (parse_worker_env(env, &we) == 0) {
            unsetenv(LM_WORKER_ENV); /* not for the handlers' own child processes */
            rc = serve(l, conf_json, &we);
        } else {
            msm_log(MSM_LOG_ERROR, FAC, "%s=\"%s\" is not LISTEN_FD,BOARD_FD,SLOT", LM_WORKER_ENV,
                    env);
            rc = EXIT_FAILED;
        }
    }
    json_decref(conf_json);
    msm_lambda_free(l);
    return rc;
}
