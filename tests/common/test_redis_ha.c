/* SPDX-License-Identifier: MIT */
/* Redis high availability with real servers: a master, a replica and a Sentinel (Debian's
 * redis-server in its three roles). The log on redis-sentinel:// with
 * redis.min_replicas_acks 1 appends without pause while the master is killed with kill -9:
 * every append acknowledged before, during and after the failover is on the promoted
 * replica. Also WAIT's failure when no replica answers, and the URL's form. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/redis.h"
#include "msm/stream.h"
#include "msm/time.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static msm_test_redis_t master;
static char dir[64];
static int replica_port, sentinel_port;

/* The servers the suite did not start through msm_test_redis_start(), by port. */
static msm_test_redis_t at(int port)
{
    return (msm_test_redis_t){.port = port};
}

/* Whether the reply to INFO replication on @p port contains @p text. */
static int info_has(int port, const char *text)
{
    msm_test_redis_t srv = at(port);
    redisReply *r = msm_test_redis_query(&srv, "INFO replication");
    int has = r && r->type == REDIS_REPLY_STRING && strstr(r->str, text);
    if (r)
        freeReplyObject(r);
    return has;
}

/* The port Sentinel names as the master's, or 0. */
static int sentinel_master_port(void)
{
    msm_test_redis_t sentinel = at(sentinel_port);
    redisReply *r = msm_test_redis_query(&sentinel, "SENTINEL get-master-addr-by-name mymaster");
    int port = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? atoi(r->element[1]->str) : 0;
    if (r)
        freeReplyObject(r);
    return port;
}

static int wait_until(int (*cond)(void), int timeout_ms)
{
    for (int t = 0; t < timeout_ms; t += 50) {
        if (cond())
            return 0;
        usleep(50 * 1000);
    }
    return -1;
}

static int replica_linked(void)
{
    return info_has(replica_port, "master_link_status:up") && info_has(master.port, "connected_slaves:1");
}

static int sentinel_knows_master(void)
{
    return sentinel_master_port() == master.port && info_has(master.port, "connected_slaves:1");
}

static int suite_init(void)
{
    snprintf(dir, sizeof(dir), "/tmp/msm-ha-XXXXXX");
    if (!mkdtemp(dir) || msm_test_redis_start(&master) != 0)
        return -1;
    replica_port = msm_test_free_port();
    sentinel_port = msm_test_free_port();
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "redis-server --port %d --bind 127.0.0.1 --replicaof 127.0.0.1 %d --dir %s "
             "--appendonly yes --appendfsync always --save '' --daemonize yes --loglevel warning "
             "--pidfile %s/replica.pid --logfile %s/replica.log",
             replica_port, master.port, dir, dir, dir);
    if (system(cmd) != 0 || wait_until(replica_linked, 10000) != 0)
        return -1;
    char conf[128];
    snprintf(conf, sizeof(conf), "%s/sentinel.conf", dir);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\n"
            "sentinel monitor mymaster 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            "sentinel failover-timeout mymaster 5000\n",
            sentinel_port, dir, master.port);
    fclose(f);
    snprintf(cmd, sizeof(cmd),
             "redis-server %s --sentinel --daemonize yes --loglevel warning "
             "--pidfile %s/sentinel.pid --logfile %s/sentinel.log",
             conf, dir, dir);
    return system(cmd) == 0 && wait_until(sentinel_knows_master, 10000) == 0 ? 0 : -1;
}

static void kill_pidfile(const char *name)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s.pid", dir, name);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f && fscanf(f, "%d", &pid) == 1 && pid > 0)
        kill(pid, SIGKILL);
    if (f)
        fclose(f);
}

static int suite_clean(void)
{
    kill_pidfile("sentinel");
    kill_pidfile("replica");
    msm_test_redis_destroy(&master);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- appends ---- */

typedef struct {
    int done;
    msm_err_t err;
    char why[256];
} wait_t;

static void on_done(msm_err_t err, const char *reason, void *opaque)
{
    wait_t *w = opaque;
    w->err = err;
    snprintf(w->why, sizeof(w->why), "%s", reason ? reason : "");
    w->done = 1;
}

static msm_err_t append_one(msm_loop_t *loop, msm_stream_t *s, const char *value, char *why)
{
    wait_t w = {0};
    msm_record_t rec = {.value = value, .value_len = strlen(value)};
    if (msm_stream_append(s, "ha", &rec, 1, on_done, &w) != MSM_OK)
        return MSM_ERR_BACKEND;
    if (msm_test_wait_flag(loop, &w.done, 15000) != 0)
        return MSM_ERR_TIMEOUT;
    if (why)
        snprintf(why, 256, "%s", w.why);
    return w.err;
}

static msm_stream_t *log_on_sentinel(msm_loop_t *loop, const char *ns, int replicas)
{
    char url[128], err[256] = "";
    snprintf(url, sizeof(url), "redis-sentinel://127.0.0.1:%d/mymaster", sentinel_port);
    msm_stream_conf_t conf = {.backend = MSM_STREAM_REDIS,
                              .redis_url = url,
                              .name_prefix = ns,
                              .append_timeout_ms = 5000,
                              .redis_min_replicas_acks = replicas,
                              .redis_wait_timeout_ms = 500};
    msm_stream_t *s = msm_stream_new(loop, &conf, err, sizeof(err));
    if (!s)
        fprintf(stderr, "msm_stream_new: %s\n", err);
    return s;
}

/* WAIT for more replicas than there are: written, but not acknowledged, with the reason. */
static void test_wait_needs_the_replicas(void)
{
    msm_loop_t *loop = msm_loop_new();
    char ns[64];
    msm_stream_t *s = log_on_sentinel(loop, msm_test_namespace(ns, sizeof(ns)), 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    wait_t w = {0};
    CU_ASSERT_EQUAL(msm_stream_ensure(s, "ha", 1, on_done, &w), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &w.done, 5000), 0);
    char why[256];
    CU_ASSERT_EQUAL(append_one(loop, s, "x", why), MSM_ERR_BACKEND);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "1 of 2 replicas"));
    msm_stream_free(s);
    msm_loop_free(loop);
}

static int promoted;
static int replica_promoted(void)
{
    return sentinel_master_port() == replica_port && info_has(replica_port, "role:master");
}

/* kill -9 of the master while appending with WAIT 1 through Sentinel: nothing acknowledged
 * is lost, and appends go on on the promoted replica. */
static void test_failover_loses_no_ack(void)
{
    msm_loop_t *loop = msm_loop_new();
    char ns[64];
    msm_test_namespace(ns, sizeof(ns));
    msm_stream_t *s = log_on_sentinel(loop, ns, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    wait_t w = {0};
    CU_ASSERT_EQUAL(msm_stream_ensure(s, "ha", 1, on_done, &w), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_wait_flag(loop, &w.done, 5000), 0);
    enum { BEFORE = 200, AFTER = 200, MAX = 100000 };
    char (*acked)[16] = calloc(MAX, sizeof(*acked));
    int nacked = 0, failed = 0, killed_at = -1, restarted = 0;
    uint64_t t_kill = 0, t_back = 0;
    for (int i = 0; i < MAX && nacked < BEFORE + AFTER; i++) {
        char v[16];
        snprintf(v, sizeof(v), "e%d", i);
        if (nacked == BEFORE && killed_at < 0) {
            CU_ASSERT_EQUAL(msm_test_redis_kill(&master), 0);
            killed_at = i;
            t_kill = msm_time_mono_ms();
        }
        msm_err_t err = append_one(loop, s, v, NULL);
        if (err == MSM_OK) {
            snprintf(acked[nacked++], 16, "%s", v);
            if (killed_at >= 0 && !t_back)
                t_back = msm_time_mono_ms();
        } else {
            failed++;
            msm_test_spin(loop, 50); /* as a publisher would, after a 503 */
        }
        /* Once the replica is promoted the old master comes back: Sentinel makes it the
         * new master's replica, so WAIT 1 can be met again. */
        if (killed_at >= 0 && !restarted && replica_promoted()) {
            CU_ASSERT_EQUAL(msm_test_redis_restart(&master), 0);
            restarted = 1;
        }
        if (killed_at >= 0 && msm_time_mono_ms() - t_kill > 60000)
            break;
    }
    promoted = sentinel_master_port() == replica_port;
    CU_ASSERT_TRUE(promoted);
    CU_ASSERT_EQUAL(nacked, BEFORE + AFTER);
    /* Everything acknowledged is on the promoted replica. */
    msm_test_redis_t promoted_srv = at(replica_port);
    redisReply *r = msm_test_redis_query(&promoted_srv, "XRANGE %s:log:{ha}:0 - +", ns);
    CU_ASSERT_TRUE_FATAL(r && r->type == REDIS_REPLY_ARRAY);
    int found = 0;
    for (int a = 0; a < nacked; a++) {
        for (size_t e = 0; e < r->elements; e++) {
            redisReply *fields = r->element[e]->element[1];
            int hit = 0;
            for (size_t k = 0; k + 1 < fields->elements; k += 2)
                hit |= strcmp(fields->element[k]->str, "v") == 0 &&
                       strcmp(fields->element[k + 1]->str, acked[a]) == 0;
            if (hit) {
                found++;
                break;
            }
        }
    }
    CU_ASSERT_EQUAL(found, nacked);
    fprintf(stderr,
            "\n  Sentinel failover, WAIT 1: %d appends acknowledged (%d before kill -9 of the "
            "master), %d failed meanwhile, appending again %llu ms after the kill; %d of %d "
            "acknowledged found on the promoted replica\n",
            nacked, BEFORE, failed, (unsigned long long)(t_back - t_kill), found, nacked);
    freeReplyObject(r);
    free(acked);
    msm_stream_free(s);
    msm_loop_free(loop);
}

static void test_url(void)
{
    msm_redis_url_t u;
    char err[256];
    CU_ASSERT_EQUAL(msm_redis_url_parse("redis-sentinel://:pw@s1:26379,s2:26380/mymaster/2", &u,
                                        err, sizeof(err)),
                    MSM_OK);
    CU_ASSERT_STRING_EQUAL(u.sentinels, "s1:26379,s2:26380");
    CU_ASSERT_STRING_EQUAL(u.master, "mymaster");
    CU_ASSERT_STRING_EQUAL(u.password, "pw");
    CU_ASSERT_EQUAL(u.db, 2);
    const char *bad[] = {"redis-sentinel://s1:26379", "redis-sentinel://s1/m",
                         "redis-sentinel://s1:0/m", "redis-sentinel://s1:1,s2/m",
                         "redis-sentinel:///m"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_EQUAL(msm_redis_url_parse(bad[i], &u, err, sizeof(err)), MSM_ERR_PARSE);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"redis-sentinel:// URLs", test_url},
        {"WAIT: fewer replicas than asked fails the append", test_wait_needs_the_replicas},
        {"kill -9 of the master mid-run with WAIT 1: no acknowledged append lost",
         test_failover_loses_no_ack},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"redis_ha", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
