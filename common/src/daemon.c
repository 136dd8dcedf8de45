/* SPDX-License-Identifier: MIT */
/* The shared start-up, serving and shutdown of every msm daemon (see msm/daemon.h). */
#include "msm/daemon.h"
#include "msm/access.h"
#include "msm/auth.h"
#include "msm/buf.h"
#include "msm/err.h"
#include "msm/log.h"
#include "msm/version.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define DRAIN_DEADLINE_MS 10000
#define DRAIN_POLL_MS     50

struct msm_daemon_s {
    const msm_daemon_spec_t *spec;
    int no_backends; /* msm_daemon_new_serving() */
    msm_common_conf_t *common;
    msm_loop_t *loop;
    msm_redis_t *redis;
    msm_stream_t *stream;
    msm_http_server_t *http;
    msm_metrics_t *metrics;
    msm_auth_t *auth;     /* principals of auth.tokens, or NULL: no guard */
    msm_access_t *access; /* the guard over them */
    char member[256];
    int sigfd;
    msm_http_ready_cb *ready;
    void *ready_opaque;
    msm_daemon_stop_cb *on_stop;
    msm_daemon_drained_cb *drained;
    void *stop_opaque;
    int stopping;
    uint64_t drain_deadline_ms;
    uint64_t drain_ms; /**< 0: DRAIN_DEADLINE_MS */
    msm_timer_t drain_timer;
};

static int daemon_ready(void *opaque, char *why, size_t n)
{
    msm_daemon_t *d = opaque;
    if (!d->no_backends && !msm_redis_connected(d->redis)) {
        snprintf(why, n, "redis not connected");
        return 0;
    }
    if (d->stopping) {
        snprintf(why, n, "stopping");
        return 0;
    }
    return d->ready ? d->ready(d->ready_opaque, why, n) : 1;
}

static void on_drain_timer(msm_loop_t *loop, void *opaque)
{
    msm_daemon_t *d = opaque;
    int done = !d->drained || d->drained(d->stop_opaque);
    if (done || msm_loop_now_ms(loop) >= d->drain_deadline_ms) {
        if (!done)
            msm_log(MSM_LOG_WARN, "daemon", "drain deadline passed: stopping with work in flight "
                                            "(unacknowledged log entries will be redelivered)");
        msm_loop_stop(loop);
        return;
    }
    msm_loop_timer_start(loop, &d->drain_timer, DRAIN_POLL_MS, on_drain_timer, d);
}

void msm_daemon_set_drain_ms(msm_daemon_t *d, uint64_t ms)
{
    d->drain_ms = ms;
}

void msm_daemon_request_stop(msm_daemon_t *d)
{
    if (d->stopping)
        return;
    d->stopping = 1;
    msm_log(MSM_LOG_INFO, "daemon", "stopping: no new work; draining what is in flight");
    msm_http_server_quiesce(d->http);
    if (d->on_stop)
        d->on_stop(d->stop_opaque);
    d->drain_deadline_ms = msm_loop_now_ms(d->loop) + (d->drain_ms ? d->drain_ms : DRAIN_DEADLINE_MS);
    msm_loop_timer_start(d->loop, &d->drain_timer, 0, on_drain_timer, d);
}

static void on_signal(msm_loop_t *loop, int fd, int events, void *opaque)
{
    (void)loop;
    (void)events;
    msm_daemon_t *d = opaque;
    struct signalfd_siginfo si;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        msm_log(MSM_LOG_INFO, "daemon", "signal %s received", strsignal((int)si.ssi_signo));
        if (d->stopping && si.ssi_signo == SIGINT) {
            msm_loop_stop(d->loop); /* a second Ctrl-C: stop now */
            return;
        }
        msm_daemon_request_stop(d);
    }
}

static int watch_signals(msm_daemon_t *d)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return MSM_ERR_IO;
    signal(SIGPIPE, SIG_IGN); /* a peer closing a socket is an error return, not a death */
    d->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->sigfd < 0)
        return MSM_ERR_IO;
    return msm_loop_watch(d->loop, d->sigfd, MSM_LOOP_READ, on_signal, d);
}

static void make_member(msm_daemon_t *d)
{
    char host[128] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(d->member, sizeof(d->member), "%s-%s-%d", host, d->spec->name,
             d->common->http_port);
}

/* redis.password_file: the URL with the file's first line as its password (kept out of the
 * settings, so /debug/info never shows it). */
static int redis_url_with_file_password(const msm_common_conf_t *c, char *url, size_t url_size,
                                        char *err, size_t n)
{
    msm_buf_t b = {0};
    if (msm_buf_append_file(&b, c->redis_password_file) != MSM_OK) {
        snprintf(err, n, "redis.password_file %s: %s", c->redis_password_file, strerror(errno));
        msm_buf_deinit(&b);
        return -1;
    }
    size_t len = 0;
    while (len < b.len && b.data[len] != '\n' && b.data[len] != '\r' && b.data[len] != '\0')
        len++;
    char *password = strndup((const char *)b.data, len);
    msm_buf_deinit(&b);
    int rc = password && len > 0 ? msm_redis_url_with_password(c->redis_url, password, url,
                                                                url_size)
                                  : MSM_ERR_INVALID;
    if (password)
        explicit_bzero(password, len);
    free(password);
    if (rc != MSM_OK)
        snprintf(err, n, "redis.password_file %s: %s", c->redis_password_file,
                 len == 0 ? "empty first line" : "cannot combine with redis.url");
    return rc == MSM_OK ? 0 : -1;
}

msm_redis_t *msm_daemon_redis_connect(msm_daemon_t *d, const char *client_name, char *err,
                                      size_t n)
{
    const msm_common_conf_t *c = d->common;
    char url_buf[1024];
    const char *url = c->redis_url;
    if (c->redis_password_file && *c->redis_password_file) {
        if (redis_url_with_file_password(c, url_buf, sizeof(url_buf), err, n) != 0)
            return NULL;
        url = url_buf;
    }
    msm_redis_conf_t rc = {.url = url, .ns = c->ns, .client_name = client_name};
    msm_redis_t *r = msm_redis_new(d->loop, &rc, err, n);
    explicit_bzero(url_buf, sizeof(url_buf));
    return r;
}

static int start_backends(msm_daemon_t *d, char *err, size_t n)
{
    const msm_common_conf_t *c = d->common;
    char url_buf[1024];
    if (c->redis_min_replicas_acks > 0 && c->log_backend != MSM_STREAM_REDIS) {
        /* Never accepted and ignored: on Kafka, replication is acks=all and the topics'
         * min.insync.replicas (docs/log-kafka.md). */
        snprintf(err, n, "redis.min_replicas_acks applies to log.backend redis; on kafka, "
                 "set kafka.min_insync_replicas");
        return -1;
    }
    int kafka_topics = c->kafka_replication_factor || c->kafka_min_insync_replicas ||
                       c->kafka_retention_ms;
    if (kafka_topics && c->log_backend != MSM_STREAM_KAFKA) {
        snprintf(err, n, "kafka.replication_factor, kafka.min_insync_replicas and "
                 "kafka.retention_ms apply to log.backend kafka");
        return -1;
    }
    if (c->kafka_min_insync_replicas && c->kafka_replication_factor &&
        c->kafka_min_insync_replicas > c->kafka_replication_factor) {
        /* Every acks=all produce would fail: NOT_ENOUGH_REPLICAS, for ever. */
        snprintf(err, n, "kafka.min_insync_replicas %d is more than kafka.replication_factor %d",
                 c->kafka_min_insync_replicas, c->kafka_replication_factor);
        return -1;
    }
    if (c->log_backend == MSM_STREAM_KAFKA && c->kafka_replication_factor > 0 &&
        (c->kafka_replication_factor < 3 || c->kafka_min_insync_replicas < 2))
        msm_log(MSM_LOG_WARN, "daemon", "kafka.replication_factor %d, min_insync_replicas %d: "
                "an acknowledged event survives losing a broker only with 3 and 2",
                c->kafka_replication_factor, c->kafka_min_insync_replicas);
    const char *url = c->redis_url;
    if (c->redis_password_file && *c->redis_password_file) {
        if (redis_url_with_file_password(c, url_buf, sizeof(url_buf), err, n) != 0)
            return -1;
        url = url_buf;
    }
    d->redis = msm_daemon_redis_connect(d, d->spec->name, err, n);
    if (!d->redis)
        return -1;
    msm_stream_conf_t sc = {
        .backend = (msm_stream_backend_t)c->log_backend,
        .redis_url = url,
        .name_prefix = c->ns,
        .kafka_brokers = c->kafka_brokers,
        .kafka_props = (const char *const *)c->kafka_props,
        .append_timeout_ms = (uint64_t)c->log_append_timeout_ms,
        .lease_ms = (uint64_t)c->log_lease_ms,
        .redis_min_replicas_acks = c->redis_min_replicas_acks,
        .kafka_replication_factor = c->kafka_replication_factor,
        .kafka_min_insync_replicas = c->kafka_min_insync_replicas,
        .kafka_retention_ms = c->kafka_retention_ms,
        .redis_wait_timeout_ms = (uint64_t)c->redis_wait_timeout_ms,
    };
    d->stream = msm_stream_new(d->loop, &sc, err, n);
    if (d->stream && c->log_lag_interval_ms > 0 &&
        msm_stream_export_lag(d->stream, d->metrics, (uint32_t)c->log_lag_interval_ms) != MSM_OK) {
        snprintf(err, n, "metrics: cannot register msm_log_consumer_lag");
        msm_stream_free(d->stream);
        d->stream = NULL;
    }
    explicit_bzero(url_buf, sizeof(url_buf));
    return d->stream ? 0 : -1;
}

static int start_http(msm_daemon_t *d, char *err, size_t n)
{
    json_t *config = msm_conf_to_json(d->spec->defs, d->spec->ndefs, d->spec->conf);
    msm_http_server_conf_t hc;
    msm_http_server_conf_init(&hc);
    hc.bind_address = d->common->http_bind;
    hc.port = d->common->http_port;
    hc.name = d->spec->name;
    hc.metrics = d->metrics;
    hc.ready = daemon_ready;
    hc.ready_opaque = d;
    hc.config = config;
    hc.max_body_bytes = (size_t)d->common->http_max_body_bytes;
    hc.request_deadline_ms = (unsigned)d->common->http_request_deadline_ms;
    hc.max_connections = (unsigned)d->common->http_max_connections;
    hc.max_connections_per_ip = (unsigned)d->common->http_max_connections_per_ip;
    hc.tls_cert_file = d->common->tls_cert;
    hc.tls_key_file = d->common->tls_key;
    hc.tls_client_ca_file = d->common->tls_client_ca;
    d->http = msm_http_server_new(d->loop, &hc, err, n);
    json_decref(config);
    return d->http ? 0 : -1;
}

static int loopback(const char *bind)
{
    return strcmp(bind, "127.0.0.1") == 0 || strcmp(bind, "::1") == 0 ||
           strcmp(bind, "localhost") == 0 || strncmp(bind, "127.", 4) == 0;
}

/* The guard over auth.tokens' principals in front of every route (the daemon's own table
 * comes later, msm_daemon_set_access()). */
static int start_auth(msm_daemon_t *d, char *err, size_t n)
{
    const char *path = d->common->auth_tokens;
    if (!d->auth) {
        if (!loopback(d->common->http_bind))
            msm_log(MSM_LOG_WARN, "daemon",
                    "authentication is off (no auth.tokens) and HTTP listens on %s: anyone "
                    "who reaches it may call every route",
                    d->common->http_bind);
        return 0;
    }
    if (!(d->access = msm_access_new(d->auth, NULL, 0))) {
        snprintf(err, n, "out of memory");
        return -1;
    }
    msm_http_server_set_guard(d->http, msm_access_guard, d->access);
    msm_log(MSM_LOG_INFO, "daemon", "authentication on: %zu principal(s) from %s",
            msm_auth_count(d->auth), path);
    return 0;
}

void msm_daemon_set_access(msm_daemon_t *d, const msm_access_rule_t *rules, size_t n)
{
    if (d->access)
        msm_access_set_rules(d->access, rules, n);
}

static int daemon_new(msm_daemon_t **out, const msm_daemon_spec_t *spec, int no_backends,
                      int argc, char **argv)
{
    *out = NULL;
    char err[512] = "";
    int rc = msm_conf_load_argv(spec->defs, spec->ndefs, spec->conf, argc, argv, err, sizeof(err));
    if (rc == MSM_CONF_HELP) {
        msm_conf_help(spec->defs, spec->ndefs, stdout, spec->name, spec->summary);
        return 0;
    }
    if (rc == MSM_CONF_VERSION) {
        printf("%s %s (%s)\n", spec->name, msm_version(), msm_git_sha());
        return 0;
    }
    if (rc != MSM_OK) {
        fprintf(stderr, "%s: %s (see --help)\n", spec->name, err);
        return 2;
    }
    msm_daemon_t *d = calloc(1, sizeof(*d));
    if (!d) {
        msm_conf_free(spec->defs, spec->ndefs, spec->conf);
        return 1;
    }
    d->spec = spec;
    d->no_backends = no_backends;
    d->sigfd = -1;
    d->common = (msm_common_conf_t *)((char *)spec->conf + spec->common_offset);
    const char *tokens = d->common->auth_tokens;
    if (tokens && *tokens && !(d->auth = msm_auth_load(tokens, err, sizeof(err)))) {
        /* A bad token file is a bad setting: refusing to start beats serving unguarded. */
        fprintf(stderr, "%s: auth.tokens: %s\n", spec->name, err);
        msm_daemon_free(d);
        return 2;
    }
    msm_timer_init(&d->drain_timer);
    msm_log_setup(spec->name, (msm_log_level_t)d->common->logging_level,
                  (msm_log_format_t)d->common->logging_format, NULL);
    make_member(d);
    d->loop = msm_loop_new();
    d->metrics = msm_metrics_new();
    if (!d->loop || !d->metrics || watch_signals(d) != MSM_OK) {
        snprintf(err, sizeof(err), "start-up failed: %s", strerror(errno));
        goto fail;
    }
    if ((!no_backends && start_backends(d, err, sizeof(err)) != 0) ||
        start_http(d, err, sizeof(err)) != 0 || start_auth(d, err, sizeof(err)) != 0)
        goto fail;
    char url[256];
    if (no_backends)
        msm_log(MSM_LOG_INFO, "daemon", "%s %s (%s) serving on %s:%u", spec->name, msm_version(),
                msm_git_sha(), d->common->http_bind, msm_http_server_port(d->http));
    else
        msm_log(MSM_LOG_INFO, "daemon", "%s %s (%s) serving on %s:%u; redis %s; log %s; member %s",
                spec->name, msm_version(), msm_git_sha(), d->common->http_bind,
                msm_http_server_port(d->http),
                msm_conf_mask_url(d->common->redis_url, url, sizeof(url)),
                msm_stream_backend_name(d->stream), d->member);
    *out = d;
    return 0;
fail:
    msm_log(MSM_LOG_ERROR, "daemon", "%s", err);
    msm_daemon_free(d);
    return 1;
}

int msm_daemon_new(msm_daemon_t **out, const msm_daemon_spec_t *spec, int argc, char **argv)
{
    return daemon_new(out, spec, 0, argc, argv);
}

int msm_daemon_new_serving(msm_daemon_t **out, const msm_daemon_spec_t *spec, int argc,
                           char **argv)
{
    return daemon_new(out, spec, 1, argc, argv);
}

void msm_daemon_free(msm_daemon_t *d)
{
    if (!d)
        return;
    if (d->loop)
        msm_loop_timer_stop(d->loop, &d->drain_timer);
    msm_http_server_free(d->http);
    msm_access_free(d->access);
    msm_auth_free(d->auth);
    msm_stream_free(d->stream);
    msm_redis_free(d->redis);
    if (d->sigfd >= 0) {
        msm_loop_unwatch(d->loop, d->sigfd);
        close(d->sigfd);
    }
    msm_metrics_free(d->metrics);
    msm_loop_free(d->loop);
    msm_conf_free(d->spec->defs, d->spec->ndefs, d->spec->conf);
    free(d);
}

int msm_daemon_run(msm_daemon_t *d)
{
    msm_loop_run(d->loop);
    msm_log(MSM_LOG_INFO, "daemon", "stopped");
    return 0;
}

void msm_daemon_set_ready(msm_daemon_t *d, msm_http_ready_cb *cb, void *opaque)
{
    d->ready = cb;
    d->ready_opaque = opaque;
}

void msm_daemon_on_stop(msm_daemon_t *d, msm_daemon_stop_cb *stop, msm_daemon_drained_cb *drained,
                        void *opaque)
{
    d->on_stop = stop;
    d->drained = drained;
    d->stop_opaque = opaque;
}

msm_loop_t *msm_daemon_loop(const msm_daemon_t *d)
{
    return d->loop;
}

msm_redis_t *msm_daemon_redis(const msm_daemon_t *d)
{
    return d->redis;
}

msm_stream_t *msm_daemon_stream(const msm_daemon_t *d)
{
    return d->stream;
}

msm_http_server_t *msm_daemon_http(const msm_daemon_t *d)
{
    return d->http;
}

msm_metrics_t *msm_daemon_metrics(const msm_daemon_t *d)
{
    return d->metrics;
}

const msm_common_conf_t *msm_daemon_common(const msm_daemon_t *d)
{
    return d->common;
}

const char *msm_daemon_name(const msm_daemon_t *d)
{
    return d->spec->name;
}

const char *msm_daemon_member(const msm_daemon_t *d)
{
    return d->member;
}
