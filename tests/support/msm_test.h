/* SPDX-License-Identifier: MIT */
/* Test support: a CUnit runner, a real redis-server per test binary, the librdkafka mock
 * cluster, and loop helpers. Used by tests/ and bench/ only. */
#ifndef MSM_TEST_H
#define MSM_TEST_H

#include <CUnit/CUnit.h>
#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdint.h>
#include <sys/types.h>

#include "msm/loop.h"
#include "msm/stream.h"

/**
 * @brief Runs @p suites (CU_SuiteInfo array ending in CU_SUITE_INFO_NULL) in CUnit basic
 * mode. argv[1], if given and not a backend word the test reads itself, is ignored.
 * @returns 0 when every test passed, 1 otherwise (use as main's return).
 */
int msm_test_run(CU_SuiteInfo *suites);

/** @brief A loopback TCP port nobody listens on right now (bound and released), or -1. */
int msm_test_free_port(void);

/**
 * @brief The log backend a suite run on both names as its first argument: "redis" (also
 * when none is given) or "kafka", into @p out.
 * @returns that name, or NULL after printing the usage to stderr.
 */
const char *msm_test_backend_arg(int argc, char **argv, msm_stream_backend_t *out);

/** @brief Whether @p tp is a traceparent a hop made under @p parent (a span of its own):
 *  version 00, the same trace id and flags, another span id. */
int msm_test_tp_child_of(const char *tp, const char *parent);

/**
 * @brief Makes, with openssl, a fresh temporary directory (its path in @p dir) holding a CA
 * (ca.pem), a server certificate for 127.0.0.1 (srv.pem, srv.key) and a client certificate
 * with CN "orders-service" (cli.pem, cli.key) it signs, and a client certificate with the
 * same CN from another CA (rogue.pem, rogue.key). @returns 0 or -1.
 */
int msm_test_certs_make(char *dir, size_t n);
/** @brief Removes what msm_test_certs_make() made in @p dir, and @p dir. */
void msm_test_certs_remove(const char *dir);
/** @brief The text of @p file ("ca.pem", "cli.key", …) in @p dir, NUL-terminated; the caller
 *  frees it. NULL when it cannot be read. */
char *msm_test_certs_read(const char *dir, const char *file);

/** A redis-server of our own: free port, temporary directory, AOF with fsync always. */
typedef struct {
    pid_t pid;
    int port;
    char dir[256];
    char url[96];
    /* msm_test_redis_start_tls(): a TLS port too, requiring client certificates */
    char certs[256];
    int tls_port;
    char tls_url[1024]; /**< rediss:// with the CA and the client certificate */
} msm_test_redis_t;

/** @brief Starts redis-server and waits until it answers PING. @returns 0 or -1. */
int msm_test_redis_start(msm_test_redis_t *r);
/** @brief Like msm_test_redis_start(), serving TLS too (tls_port, tls_url) with the
 *  certificates msm_test_certs_make() made in @p certs (server srv.pem, clients of ca.pem). */
int msm_test_redis_start_tls(msm_test_redis_t *r, const char *certs);
/** @brief SIGTERM and wait (data kept in dir). */
int msm_test_redis_stop(msm_test_redis_t *r);
/** @brief SIGKILL and wait, like a crash (the AOF keeps what was fsynced). */
int msm_test_redis_kill(msm_test_redis_t *r);
/** @brief Starts it again on the same port and directory. @returns 0 or -1. */
int msm_test_redis_restart(msm_test_redis_t *r);
/** @brief Stops it if running and removes its directory. */
void msm_test_redis_destroy(msm_test_redis_t *r);
/** @brief One command on a connection of its own, for looking at keys (NULL when the server
 *  cannot be reached); the caller frees the reply with freeReplyObject(). */
redisReply *msm_test_redis_query(const msm_test_redis_t *r, const char *fmt, ...);

/** A unique key namespace for one test ("t<pid>_<counter>"), so tests never share keys. */
const char *msm_test_namespace(char *buf, size_t n);

/** The librdkafka mock cluster: real Kafka protocol, in-process brokers. */
typedef struct {
    rd_kafka_t *rk; /* the handle the mock cluster lives in */
    rd_kafka_mock_cluster_t *mcluster;
    char bootstraps[512];
} msm_test_kafka_t;

/** @brief Starts a mock cluster of @p brokers brokers. @returns 0 or -1. */
int msm_test_kafka_start(msm_test_kafka_t *k, int brokers);
void msm_test_kafka_stop(msm_test_kafka_t *k);

/** @brief Runs @p loop until *flag is non-zero or @p timeout_ms passes. @returns 0 if set. */
int msm_test_wait_flag(msm_loop_t *loop, volatile int *flag, uint64_t timeout_ms);

/**
 * @brief Asks @p s for the backlog of @p group on @p name and runs @p loop until it answers.
 * @returns MSM_OK with the backlog in *backlog; the driver's refusal or answer error; or
 * MSM_ERR_TIMEOUT when no answer came within 10 s (*backlog is then -1).
 */
msm_err_t msm_test_stream_backlog(msm_loop_t *loop, msm_stream_t *s, const char *name,
                                  const char *group, int64_t *backlog);

/** @brief Runs @p loop for @p ms milliseconds. */
void msm_test_spin(msm_loop_t *loop, uint64_t ms);

#endif
