/* SPDX-License-Identifier: MIT */
/* Test support: CUnit runner, redis-server per test, librdkafka mock cluster, loop waits. */
#include "msm_test.h"
#include "msm/buf.h"
#include "msm/err.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int msm_test_run(CU_SuiteInfo *suites)
{
    /* A test must never die of SIGPIPE from a server we stopped on purpose. */
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 1;
    }
    /* MSM_TEST_ONLY=text runs only the tests whose names contain it (while working on one). */
    const char *only = getenv("MSM_TEST_ONLY");
    for (CU_pSuite s = CU_get_registry()->pSuite; only && *only && s; s = s->pNext) {
        for (CU_pTest t = s->pTest; t; t = t->pNext)
            CU_set_test_active(t, strstr(t->pName, only) ? CU_TRUE : CU_FALSE);
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}

int msm_test_tp_child_of(const char *tp, const char *parent)
{
    return tp && parent && strlen(tp) == 55 && strncmp(tp, "00-", 3) == 0 &&
           strncmp(tp + 3, parent + 3, 33) == 0 && strncmp(tp + 36, parent + 36, 16) != 0 &&
           strcmp(tp + 52, parent + 52) == 0 && strspn(tp + 36, "0123456789abcdef") == 16;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *msm_test_backend_arg(int argc, char **argv, msm_stream_backend_t *out)
{
    const char *which = argc > 1 ? argv[1] : "redis";
    if (strcmp(which, "redis") == 0) {
        *out = MSM_STREAM_REDIS;
    } else if (strcmp(which, "kafka") == 0) {
        *out = MSM_STREAM_KAFKA;
    } else {
        fprintf(stderr, "usage: %s redis|kafka\n", argv[0]);
        return NULL;
    }
    return which;
}

int msm_test_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int redis_ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    int ok = 0;
    if (c && !c->err) {
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

static int redis_spawn(msm_test_redis_t *r)
{
    char port[16], tls_port[16], cert[300], key[300], ca[300];
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(tls_port, sizeof(tls_port), "%d", r->tls_port);
    snprintf(cert, sizeof(cert), "%s/srv.pem", r->certs);
    snprintf(key, sizeof(key), "%s/srv.key", r->certs);
    snprintf(ca, sizeof(ca), "%s/ca.pem", r->certs);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            close(devnull);
        }
        /* A daemon in this process blocks SIGTERM/SIGINT (signalfd); the server must not
         * inherit that, or stopping it would hang. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* Durability as msm documents it: AOF, fsync before every reply. */
        if (r->certs[0]) /* the plain port stays: the readiness check uses it */
            execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
                   "--dir", r->dir, "--appendonly", "yes", "--appendfsync", "always", "--save",
                   "", "--daemonize", "no", "--loglevel", "warning", "--tls-port", tls_port,
                   "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca,
                   (char *)NULL);
        else
            execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
                   "--dir", r->dir, "--appendonly", "yes", "--appendfsync", "always", "--save",
                   "", "--daemonize", "no", "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    uint64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        if (redis_ping(r->port))
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            r->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    r->pid = 0;
    return -1;
}

static int redis_start(msm_test_redis_t *r, const char *certs)
{
    memset(r, 0, sizeof(*r));
    if (certs)
        snprintf(r->certs, sizeof(r->certs), "%s", certs);
    const char *tmp = getenv("TMPDIR");
    snprintf(r->dir, sizeof(r->dir), "%s/msm-redis-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(r->dir))
        return -1;
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = msm_test_free_port();
        r->tls_port = certs ? msm_test_free_port() : 0;
        if (r->port > 0 && redis_spawn(r) == 0) {
            snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d", r->port);
            if (certs)
                snprintf(r->tls_url, sizeof(r->tls_url),
                         "rediss://127.0.0.1:%d?ssl_ca_certs=%s/ca.pem&ssl_certfile=%s/cli.pem"
                         "&ssl_keyfile=%s/cli.key",
                         r->tls_port, certs, certs, certs);
            return 0;
        }
    }
    return -1;
}

int msm_test_redis_start(msm_test_redis_t *r)
{
    return redis_start(r, NULL);
}

int msm_test_redis_start_tls(msm_test_redis_t *r, const char *certs)
{
    return redis_start(r, certs);
}

static int redis_signal(msm_test_redis_t *r, int sig)
{
    if (r->pid <= 0)
        return 0;
    kill(r->pid, sig);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
    return 0;
}

int msm_test_redis_stop(msm_test_redis_t *r)
{
    return redis_signal(r, SIGTERM);
}

int msm_test_redis_kill(msm_test_redis_t *r)
{
    return redis_signal(r, SIGKILL);
}

int msm_test_redis_restart(msm_test_redis_t *r)
{
    if (r->pid > 0)
        return 0;
    return redis_spawn(r);
}

void msm_test_redis_destroy(msm_test_redis_t *r)
{
    msm_test_redis_stop(r);
    if (r->dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", r->dir);
        r->dir[0] = '\0';
    }
}

const char *msm_test_namespace(char *buf, size_t n)
{
    static unsigned counter;
    snprintf(buf, n, "t%d_%u", (int)getpid(), ++counter);
    return buf;
}

int msm_test_kafka_start(msm_test_kafka_t *k, int brokers)
{
    memset(k, 0, sizeof(*k));
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!k->rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "kafka mock: %s\n", err);
        return -1;
    }
    k->mcluster = rd_kafka_mock_cluster_new(k->rk, brokers);
    if (!k->mcluster) {
        rd_kafka_destroy(k->rk);
        k->rk = NULL;
        return -1;
    }
    snprintf(k->bootstraps, sizeof(k->bootstraps), "%s",
             rd_kafka_mock_cluster_bootstraps(k->mcluster));
    return 0;
}

void msm_test_kafka_stop(msm_test_kafka_t *k)
{
    if (k->mcluster)
        rd_kafka_mock_cluster_destroy(k->mcluster);
    if (k->rk)
        rd_kafka_destroy(k->rk);
    memset(k, 0, sizeof(*k));
}

int msm_test_wait_flag(msm_loop_t *loop, volatile int *flag, uint64_t timeout_ms)
{
    uint64_t deadline = now_ms() + timeout_ms;
    while (!*flag) {
        if (now_ms() >= deadline)
            return -1;
        msm_loop_run_once(loop, 20);
    }
    return 0;
}

void msm_test_spin(msm_loop_t *loop, uint64_t ms)
{
    uint64_t deadline = now_ms() + ms;
    while (now_ms() < deadline)
        msm_loop_run_once(loop, 10);
}

typedef struct {
    int done;
    msm_err_t err;
    int64_t backlog;
} backlog_answer_t;

static void on_backlog_answer(msm_err_t err, int64_t backlog, void *opaque)
{
    backlog_answer_t *b = opaque;
    b->done = 1;
    b->err = err;
    b->backlog = backlog;
}

msm_err_t msm_test_stream_backlog(msm_loop_t *loop, msm_stream_t *s, const char *name,
                                  const char *group, int64_t *backlog)
{
    backlog_answer_t b = {.backlog = -1};
    int rc = msm_stream_backlog(s, name, group, on_backlog_answer, &b);
    if (rc == MSM_OK && msm_test_wait_flag(loop, &b.done, 10000) != 0)
        rc = MSM_ERR_TIMEOUT;
    *backlog = rc == MSM_OK && b.err == MSM_OK ? b.backlog : -1;
    return rc != MSM_OK ? (msm_err_t)rc : b.err;
}

redisReply *msm_test_redis_query(const msm_test_redis_t *r, const char *fmt, ...)
{
    /* Bounded: a test may ask a server it has just killed, or one that is failing over. */
    struct timeval connect_tv = {2, 0}, command_tv = {10, 0};
    redisContext *ctx = redisConnectWithTimeout("127.0.0.1", r->port, connect_tv);
    if (!ctx || ctx->err || redisSetTimeout(ctx, command_tv) != REDIS_OK) {
        redisFree(ctx);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *reply = redisvCommand(ctx, fmt, ap);
    va_end(ap);
    redisFree(ctx);
    return reply;
}

/* ---- TLS certificates ---- */

static const char *const cert_files[] = {
    "ca.key",  "ca.pem",  "ca.srl",  "rogue-ca.key", "rogue-ca.pem", "rogue-ca.srl",
    "srv.key", "srv.csr", "srv.pem", "srv.ext",      "cli.key",      "cli.csr",
    "cli.pem", "cli.ext", "rogue.key", "rogue.csr",  "rogue.pem",
};

int msm_test_certs_make(char *dir, size_t n)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, n, "%s/msm-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return -1;
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && (set -e; k='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes';"
             " openssl req -x509 $k -keyout ca.key -out ca.pem -subj /CN=test-ca -days 2;"
             " openssl req -x509 $k -keyout rogue-ca.key -out rogue-ca.pem -subj /CN=rogue -days 2;"
             " printf 'subjectAltName=IP:127.0.0.1\\n' > srv.ext;"
             " printf 'extendedKeyUsage=clientAuth\\n' > cli.ext;"
             " openssl req $k -keyout srv.key -out srv.csr -subj /CN=127.0.0.1;"
             " openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
             "  -out srv.pem -days 2 -extfile srv.ext;"
             " openssl req $k -keyout cli.key -out cli.csr -subj /CN=orders-service;"
             " openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
             "  -out cli.pem -days 2 -extfile cli.ext;"
             " openssl req $k -keyout rogue.key -out rogue.csr -subj /CN=orders-service;"
             " openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key"
             "  -CAcreateserial -out rogue.pem -days 2 -extfile cli.ext) >/dev/null 2>&1",
             dir);
    return system(cmd) == 0 ? 0 : -1;
}

char *msm_test_certs_read(const char *dir, const char *file)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    msm_buf_t b = {0};
    if (msm_buf_append_file(&b, path) != MSM_OK || !b.data) {
        msm_buf_deinit(&b);
        return NULL;
    }
    return (char *)b.data; /* msm_buf_t's storage is one malloc'd block */
}

void msm_test_certs_remove(const char *dir)
{
    char path[512];
    for (size_t i = 0; i < sizeof(cert_files) / sizeof(cert_files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, cert_files[i]);
        unlink(path);
    }
    rmdir(dir);
}
