/* SPDX-License-Identifier: MIT */
/* The Redis client against a real redis-server: reply types, pipelining, scripts with the
 * NOSCRIPT fallback, AUTH/SELECT from the URL, disconnects, reconnects and timeouts, and
 * rediss:// against a redis-server serving TLS with client certificates. */
#include "msm_test.h"
#include "msm/err.h"
#include "msm/redis.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static msm_test_redis_t srv;

static int suite_init(void)
{
    return msm_test_redis_start(&srv);
}

static int suite_clean(void)
{
    msm_test_redis_destroy(&srv);
    return 0;
}

/* One reply, copied out of the callback. */
typedef struct {
    int done;
    int type; /* -1 when err */
    long long integer;
    char str[256];
    char err[256];
    size_t elements;
} result_t;

static void on_result(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    result_t *res = opaque;
    res->done = 1;
    if (err) {
        res->type = -1;
        snprintf(res->err, sizeof(res->err), "%s", err);
        return;
    }
    res->type = reply->type;
    res->integer = reply->integer;
    res->elements = reply->elements;
    if (reply->str)
        snprintf(res->str, sizeof(res->str), "%s", reply->str);
}

static msm_redis_t *client(msm_loop_t *loop, const char *url, const char *ns)
{
    msm_redis_conf_t conf = {0};
    conf.url = url;
    conf.ns = ns;
    conf.backoff_min_ms = 20;
    conf.backoff_max_ms = 200;
    char err[256];
    msm_redis_t *r = msm_redis_new(loop, &conf, err, sizeof(err));
    if (!r)
        fprintf(stderr, "msm_redis_new: %s\n", err);
    return r;
}

/* Runs one command to completion. */
static void run(msm_loop_t *loop, msm_redis_t *r, result_t *res, const char *fmt, ...)
{
    memset(res, 0, sizeof(*res));
    va_list ap;
    va_start(ap, fmt);
    int rc = msm_redis_vcommand(r, on_result, res, fmt, ap);
    va_end(ap);
    CU_ASSERT_EQUAL(rc, MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res->done, 5000), 0);
}

static int connected_flag(void *arg)
{
    return msm_redis_connected(arg);
}

static void test_url_parse(void)
{
    msm_redis_url_t u;
    char err[128];
    CU_ASSERT_EQUAL(msm_redis_url_parse("redis://127.0.0.1:6380/2", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "127.0.0.1");
    CU_ASSERT_EQUAL(u.port, 6380);
    CU_ASSERT_EQUAL(u.db, 2);
    CU_ASSERT_PTR_NULL(u.password);
    CU_ASSERT_EQUAL(msm_redis_url_parse("redis://:p%40ss@host", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.host, "host");
    CU_ASSERT_EQUAL(u.port, 6379);
    CU_ASSERT_STRING_EQUAL(u.password, "p@ss");
    CU_ASSERT_PTR_NULL(u.user);
    CU_ASSERT_EQUAL(msm_redis_url_parse("redis://bob:pw@[::1]:7000/", &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.user, "bob");
    CU_ASSERT_STRING_EQUAL(u.password, "pw");
    CU_ASSERT_STRING_EQUAL(u.host, "::1");
    CU_ASSERT_EQUAL(u.port, 7000);
    CU_ASSERT_EQUAL(u.db, 0);
    CU_ASSERT_EQUAL(msm_redis_url_parse(NULL, &u, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(u.port, 6379);
    CU_ASSERT_EQUAL(msm_redis_url_parse("http://x", &u, err, sizeof(err)), MSM_ERR_PARSE);
    CU_ASSERT_EQUAL(msm_redis_url_parse("redis://h:99999", &u, err, sizeof(err)), MSM_ERR_PARSE);
    CU_ASSERT_EQUAL(msm_redis_url_parse("redis://h:1/x", &u, err, sizeof(err)), MSM_ERR_PARSE);
    CU_ASSERT_EQUAL(msm_redis_url_parse("redis://[::1", &u, err, sizeof(err)), MSM_ERR_PARSE);
    /* A password from a file replaces the URL's, percent-encoded, the user kept. */
    char built[256];
    CU_ASSERT_EQUAL(msm_redis_url_with_password("redis://bob:old@h:7000/2", "p@ss:w/rd", built,
                                                sizeof(built)),
                    MSM_OK);
    CU_ASSERT_STRING_EQUAL(built, "redis://bob:p%40ss%3Aw%2Frd@h:7000/2");
    CU_ASSERT_EQUAL(msm_redis_url_parse(built, &u, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(u.user, "bob");
    CU_ASSERT_STRING_EQUAL(u.password, "p@ss:w/rd");
    CU_ASSERT_EQUAL(msm_redis_url_with_password("redis://h", "s3", built, sizeof(built)), MSM_OK);
    CU_ASSERT_STRING_EQUAL(built, "redis://:s3@h");
    CU_ASSERT_EQUAL(msm_redis_url_with_password("http://h", "s3", built, sizeof(built)),
                    MSM_ERR_PARSE);
    CU_ASSERT_EQUAL(msm_redis_url_with_password("redis://h", "s3", built, 8), MSM_ERR_INVALID);
    /* TLS: rediss:// and its file options, percent-decoded; a password from a file too. */
    CU_ASSERT_EQUAL(msm_redis_url_parse("rediss://u:p@h:6380/1?ssl_ca_certs=/c%20a.pem&"
                                        "ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
                                        &u, err, sizeof(err)),
                    MSM_OK);
    CU_ASSERT_TRUE(u.tls);
    CU_ASSERT_STRING_EQUAL(u.host, "h");
    CU_ASSERT_EQUAL(u.port, 6380);
    CU_ASSERT_EQUAL(u.db, 1);
    CU_ASSERT_STRING_EQUAL(u.password, "p");
    CU_ASSERT_STRING_EQUAL(u.tls_ca, "/c a.pem");
    CU_ASSERT_STRING_EQUAL(u.tls_cert, "/c.pem");
    CU_ASSERT_STRING_EQUAL(u.tls_key, "/k.pem");
    CU_ASSERT_EQUAL(msm_redis_url_parse("rediss://h", &u, err, sizeof(err)), MSM_OK);
    CU_ASSERT_TRUE(u.tls && !u.tls_ca && !u.tls_cert);
    CU_ASSERT_EQUAL(msm_redis_url_with_password("rediss://h:1?ssl_ca_certs=/a@b", "s", built,
                                                sizeof(built)),
                    MSM_OK);
    CU_ASSERT_STRING_EQUAL(built, "rediss://:s@h:1?ssl_ca_certs=/a@b");
    /* Options that would be ignored are errors: unknown, valueless, TLS ones without TLS. */
    const char *bad[] = {"redis://h?timeout=5", "rediss://h?ssl_ca_certs", "rediss://h?x=1",
                         "redis://h?ssl_ca_certs=/a", "rediss://h?ssl_certfile=/c.pem",
                         "http://h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_EQUAL(msm_redis_url_parse(bad[i], &u, err, sizeof(err)), MSM_ERR_PARSE);

    msm_redis_conf_t conf = {0};
    conf.url = "redis://h:0";
    CU_ASSERT_PTR_NULL(msm_redis_new(NULL, &conf, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "port"));
}

static void test_commands_and_reply_types(void)
{
    msm_loop_t *loop = msm_loop_new();
    char ns[64], key[128];
    msm_test_namespace(ns, sizeof(ns));
    msm_redis_t *r = client(loop, srv.url, ns);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_STRING_EQUAL(msm_redis_namespace(r), ns);
    CU_ASSERT_TRUE(msm_redis_key(r, key, sizeof(key), "str:%d", 1) > 0);
    char want[128];
    snprintf(want, sizeof(want), "%s:str:1", ns);
    CU_ASSERT_STRING_EQUAL(key, want);
    char tiny[8];
    CU_ASSERT_EQUAL(msm_redis_key(r, tiny, sizeof(tiny), "%s", "longer-than-eight"),
                    MSM_ERR_TOOLARGE);

    result_t res;
    /* Issued before the connection is up: queued behind the handshake. */
    run(loop, r, &res, "PING");
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);
    CU_ASSERT_STRING_EQUAL(res.str, "PONG");
    CU_ASSERT_TRUE(msm_redis_connected(r));

    const char bin[5] = {'a', '\0', 'b', '\r', '\n'};
    run(loop, r, &res, "SET %s %b", key, bin, sizeof(bin));
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);
    run(loop, r, &res, "STRLEN %s", key);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_INTEGER);
    CU_ASSERT_EQUAL(res.integer, 5);
    run(loop, r, &res, "GET %s:nothing", ns);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_NIL);
    const char *argv[5] = {"RPUSH", "", "x", "y", "z"};
    char lkey[128];
    msm_redis_key(r, lkey, sizeof(lkey), "list");
    argv[1] = lkey;
    memset(&res, 0, sizeof(res));
    CU_ASSERT_EQUAL(msm_redis_command_argv(r, on_result, &res, 5, argv, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 5000), 0);
    CU_ASSERT_EQUAL(res.integer, 3);
    run(loop, r, &res, "LRANGE %s 0 -1", lkey);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_ARRAY);
    CU_ASSERT_EQUAL(res.elements, 3);

    /* An error reply is a reply; the helper turns it into an error string. */
    run(loop, r, &res, "INCR %s", key);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_ERROR);
    run(loop, r, &res, "NOSUCHCOMMAND");
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_ERROR);
    redisReply fake = {0};
    fake.type = REDIS_REPLY_ERROR;
    fake.str = "ERR x";
    CU_ASSERT_STRING_EQUAL(msm_redis_reply_err(&fake, NULL), "ERR x");
    CU_ASSERT_STRING_EQUAL(msm_redis_reply_err(NULL, "down"), "down");
    fake.type = REDIS_REPLY_STATUS;
    CU_ASSERT_PTR_NULL(msm_redis_reply_err(&fake, NULL));

    /* A malformed command fails through the callback, not by hanging. */
    memset(&res, 0, sizeof(res));
    CU_ASSERT_EQUAL(msm_redis_command_argv(r, on_result, &res, 0, argv, NULL), MSM_OK);
    CU_ASSERT_EQUAL(res.done, 0);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 5000), 0);
    CU_ASSERT_EQUAL(res.type, -1);
    CU_ASSERT_EQUAL(msm_redis_pending(r), 0);
    msm_redis_free(r);
    msm_loop_free(loop);
}

typedef struct {
    int n, in_order;
    long long next;
} incr_state_t;

static void on_incr(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    incr_state_t *st = opaque;
    if (err || reply->type != REDIS_REPLY_INTEGER || reply->integer != st->next)
        st->in_order = 0;
    st->next++;
    st->n++;
}

static int incr_done(void *arg)
{
    return ((incr_state_t *)arg)->n == 10000;
}

/* A command is written before the loop's wait, not on the socket's next writable event:
 * one turn of the loop sends it and receives its reply. */
static void test_written_before_the_wait(void)
{
    msm_loop_t *loop = msm_loop_new();
    char ns[64];
    msm_redis_t *r = client(loop, srv.url, msm_test_namespace(ns, sizeof(ns)));
    CU_ASSERT_EQUAL_FATAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    for (int i = 0; i < 20; i++) {
        result_t res = {0};
        CU_ASSERT_EQUAL(msm_redis_command(r, on_result, &res, "PING"), MSM_OK);
        CU_ASSERT_TRUE(msm_loop_run_once(loop, 5000) >= 1);
        CU_ASSERT_TRUE(res.done);
        CU_ASSERT_STRING_EQUAL(res.str, "PONG");
    }
    msm_redis_free(r);
    msm_loop_free(loop);
}

static void test_pipelining_10k(void)
{
    msm_loop_t *loop = msm_loop_new();
    char ns[64], key[128];
    msm_test_namespace(ns, sizeof(ns));
    msm_redis_t *r = client(loop, srv.url, ns);
    CU_ASSERT_EQUAL_FATAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    msm_redis_key(r, key, sizeof(key), "counter");
    msm_redis_stats_t before, after;
    msm_redis_stats(r, &before);
    incr_state_t st = {0, 1, 1};
    for (int i = 0; i < 10000; i++)
        CU_ASSERT_EQUAL(msm_redis_command(r, on_incr, &st, "INCR %s", key), MSM_OK);
    CU_ASSERT_EQUAL(msm_redis_pending(r), 10000);
    CU_ASSERT_EQUAL(st.n, 0); /* never answered from inside the call */
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, incr_done, &st, 10000), MSM_OK);
    CU_ASSERT_TRUE(st.in_order);
    msm_redis_stats(r, &after);
    /* One buffer for all of them: a handful of socket writes, not one per command. */
    CU_ASSERT_TRUE(after.write_events - before.write_events <= 20);
    CU_ASSERT_EQUAL(after.replies - before.replies, 10000);
    result_t res;
    run(loop, r, &res, "GET %s", key);
    CU_ASSERT_STRING_EQUAL(res.str, "10000");
    msm_redis_free(r);
    msm_loop_free(loop);
}

typedef struct {
    int done;
    char info[16384];
} info_t;

static void on_info(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r;
    info_t *in = opaque;
    in->done = 1;
    if (!err && reply->type == REDIS_REPLY_STRING)
        snprintf(in->info, sizeof(in->info), "%s", reply->str);
}

static long long cmd_calls(msm_loop_t *loop, msm_redis_t *r, const char *cmd)
{
    static info_t in;
    memset(&in, 0, sizeof(in));
    msm_redis_command(r, on_info, &in, "INFO commandstats");
    if (msm_test_wait_flag(loop, &in.done, 5000) != 0)
        return -1;
    char needle[64];
    snprintf(needle, sizeof(needle), "cmdstat_%s:calls=", cmd);
    const char *p = strstr(in.info, needle);
    return p ? atoll(p + strlen(needle)) : 0;
}

static void test_script_noscript_fallback(void)
{
    msm_loop_t *loop = msm_loop_new();
    char ns[64], key[128];
    msm_test_namespace(ns, sizeof(ns));
    msm_redis_t *r = client(loop, srv.url, ns);
    CU_ASSERT_EQUAL_FATAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    const char *lua = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('STRLEN', KEYS[1])";
    msm_redis_script_t *s = msm_redis_script_new(lua);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(strlen(msm_redis_script_sha(s)), 40);

    /* Our SHA1 is the server's. */
    result_t res;
    run(loop, r, &res, "SCRIPT LOAD %s", lua);
    CU_ASSERT_STRING_EQUAL(res.str, msm_redis_script_sha(s));
    run(loop, r, &res, "SCRIPT FLUSH");
    long long evals = cmd_calls(loop, r, "eval");

    msm_redis_key(r, key, sizeof(key), "script");
    const char *argv[2] = {key, "hello\0world"};
    const size_t lens[2] = {strlen(key), 11};
    for (int round = 0; round < 3; round++) {
        if (round == 2) {
            run(loop, r, &res, "SCRIPT FLUSH");
            CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);
        }
        memset(&res, 0, sizeof(res));
        CU_ASSERT_EQUAL(msm_redis_eval(r, s, on_result, &res, 1, 2, argv, lens), MSM_OK);
        CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 5000), 0);
        CU_ASSERT_EQUAL(res.type, REDIS_REPLY_INTEGER);
        CU_ASSERT_EQUAL(res.integer, 11); /* binary-safe arguments survive the retry */
    }
    /* Round 0 and round 2 needed EVAL; round 1 ran from the cache. */
    CU_ASSERT_EQUAL(cmd_calls(loop, r, "eval") - evals, 2);

    /* Many arguments (heap path) and an error from the script is a reply. */
    msm_redis_script_t *s2 = msm_redis_script_new("return #ARGV");
    const char *many[40];
    for (int i = 0; i < 40; i++)
        many[i] = "x";
    memset(&res, 0, sizeof(res));
    msm_redis_eval(r, s2, on_result, &res, 0, 40, many, NULL);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 5000), 0);
    CU_ASSERT_EQUAL(res.integer, 40);
    msm_redis_script_t *s3 = msm_redis_script_new("return redis.error_reply('boom')");
    memset(&res, 0, sizeof(res));
    msm_redis_eval(r, s3, on_result, &res, 0, 0, NULL, NULL);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 5000), 0);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_ERROR);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.str, "boom"));
    msm_redis_free(r);
    msm_redis_script_free(s);
    msm_redis_script_free(s2);
    msm_redis_script_free(s3);
    msm_loop_free(loop);
}

static void test_auth_and_select_from_url(void)
{
    msm_loop_t *loop = msm_loop_new();
    char ns[64], url[160];
    msm_test_namespace(ns, sizeof(ns));
    msm_redis_t *admin = client(loop, srv.url, ns);
    result_t res;
    run(loop, admin, &res, "CONFIG SET requirepass s3cr%%t");
    CU_ASSERT_EQUAL_FATAL(res.type, REDIS_REPLY_STATUS);

    /* Password (percent-encoded in the URL) and database 3. */
    snprintf(url, sizeof(url), "redis://:s3cr%%25t@127.0.0.1:%d/3", srv.port);
    msm_redis_t *r = client(loop, url, ns);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    run(loop, r, &res, "SET %s:db3 yes", ns);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);
    run(loop, admin, &res, "GET %s:db3", ns); /* admin is on db 0 */
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_NIL);
    run(loop, admin, &res, "SELECT 3");
    run(loop, admin, &res, "GET %s:db3", ns);
    CU_ASSERT_STRING_EQUAL(res.str, "yes");
    run(loop, admin, &res, "DEL %s:db3", ns);
    run(loop, admin, &res, "SELECT 0");

    /* A wrong password never connects; its commands fail with the reason. */
    snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d", srv.port);
    msm_redis_t *bad = client(loop, url, ns);
    run(loop, bad, &res, "PING");
    CU_ASSERT_EQUAL(res.type, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.err, "handshake refused"));
    CU_ASSERT_FALSE(msm_redis_connected(bad));
    msm_redis_free(bad);

    run(loop, admin, &res, "CONFIG SET requirepass %s", "");
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);
    msm_redis_free(r);
    msm_redis_free(admin);
    msm_loop_free(loop);
}

typedef struct {
    int ups, downs;
} states_t;

static void on_state(msm_redis_t *r, int connected, const char *reason, void *opaque)
{
    (void)r, (void)reason;
    states_t *st = opaque;
    if (connected)
        st->ups++;
    else
        st->downs++;
}

static uint64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void test_disconnect_and_reconnect(void)
{
    msm_test_redis_t own;
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_start(&own), 0);
    msm_loop_t *loop = msm_loop_new();
    char ns[64], key[128];
    msm_test_namespace(ns, sizeof(ns));
    msm_redis_t *r = client(loop, own.url, ns);
    states_t st = {0, 0};
    msm_redis_set_state_cb(r, on_state, &st);
    CU_ASSERT_EQUAL_FATAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    CU_ASSERT_EQUAL(st.ups, 1);

    /* A command in flight when the server dies fails with an error. */
    msm_redis_key(r, key, sizeof(key), "never");
    const char *argv[3] = {"BLPOP", key, "10"};
    result_t blocked = {0};
    msm_redis_command_blocking_argv(r, 11000, on_result, &blocked, 3, argv, NULL);
    msm_test_spin(loop, 50);
    CU_ASSERT_EQUAL(blocked.done, 0);
    CU_ASSERT_EQUAL(msm_test_redis_kill(&own), 0);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &blocked.done, 2000), 0);
    CU_ASSERT_EQUAL(blocked.type, -1);
    CU_ASSERT_FALSE(msm_redis_connected(r));
    CU_ASSERT_EQUAL(st.downs, 1);

    /* New commands fail fast while it is down. */
    for (int i = 0; i < 3; i++) {
        result_t res = {0};
        uint64_t t0 = mono();
        msm_redis_command(r, on_result, &res, "PING");
        CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 2000), 0);
        CU_ASSERT_TRUE(mono() - t0 < 1000);
        CU_ASSERT_EQUAL(res.type, -1);
        msm_test_spin(loop, 100);
    }

    /* Back up: the client reconnects by itself within the backoff (max 200 ms here). */
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_restart(&own), 0);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, connected_flag, r, 3000), MSM_OK);
    CU_ASSERT_EQUAL(st.ups, 2);
    result_t res;
    run(loop, r, &res, "PING");
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);
    msm_redis_stats_t stats;
    msm_redis_stats(r, &stats);
    CU_ASSERT_EQUAL(stats.connects, 2);
    CU_ASSERT_EQUAL(stats.disconnects, 1);
    msm_redis_free(r);
    msm_loop_free(loop);
    msm_test_redis_destroy(&own);
}

static void test_command_timeout(void)
{
    msm_loop_t *loop = msm_loop_new();
    char ns[64];
    msm_test_namespace(ns, sizeof(ns));
    msm_redis_conf_t conf = {0};
    conf.url = srv.url;
    conf.ns = ns;
    conf.command_timeout_ms = 200;
    conf.backoff_min_ms = 20;
    conf.backoff_max_ms = 100;
    char err[128];
    msm_redis_t *r = msm_redis_new(loop, &conf, err, sizeof(err));
    CU_ASSERT_EQUAL_FATAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    /* The server stops answering for a second (DEBUG is disabled on Redis 7 by default). */
    result_t pause, res = {0};
    run(loop, r, &pause, "CLIENT PAUSE 1000 ALL");
    CU_ASSERT_EQUAL(pause.type, REDIS_REPLY_STATUS);
    uint64_t t0 = mono();
    msm_redis_command(r, on_result, &res, "PING");
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 3000), 0);
    uint64_t took = mono() - t0;
    CU_ASSERT_EQUAL(res.type, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(res.err, "timeout"));
    CU_ASSERT_TRUE(took >= 190 && took < 800);
    msm_redis_stats_t stats;
    msm_redis_stats(r, &stats);
    CU_ASSERT_EQUAL(stats.timeouts, 1);
    /* Once the pause is over the client is back. */
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    run(loop, r, &res, "PING");
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);

    /* A blocking command with its own allowance does not time out. */
    const char *argv[3] = {"BLPOP", "", "1"};
    char key[128];
    msm_redis_key(r, key, sizeof(key), "empty");
    argv[1] = key;
    memset(&res, 0, sizeof(res));
    msm_redis_command_blocking_argv(r, 1500, on_result, &res, 3, argv, NULL);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 5000), 0);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_NIL);
    msm_redis_free(r);
    msm_loop_free(loop);
}

static void test_unreachable_fails_fast(void)
{
    msm_test_redis_t own;
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_start(&own), 0);
    char url[96];
    snprintf(url, sizeof(url), "%s", own.url);
    msm_test_redis_destroy(&own); /* a port where nothing listens */
    msm_loop_t *loop = msm_loop_new();
    msm_redis_t *r = client(loop, url, "x");
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    for (int i = 0; i < 5; i++) {
        result_t res = {0};
        uint64_t t0 = mono();
        msm_redis_command(r, on_result, &res, "PING");
        CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 3000), 0);
        CU_ASSERT_TRUE(mono() - t0 < 1000);
        CU_ASSERT_EQUAL(res.type, -1);
        CU_ASSERT_TRUE(strlen(res.err) > 0);
    }
    CU_ASSERT_FALSE(msm_redis_connected(r));
    msm_redis_free(r);
    msm_loop_free(loop);
}

static int freed_calls;
static void free_from_callback(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)reply, (void)err, (void)opaque;
    freed_calls++;
    if (freed_calls == 1)
        msm_redis_free(r);
}

static void count_errors(msm_redis_t *r, redisReply *reply, const char *err, void *opaque)
{
    (void)r, (void)reply;
    int *n = opaque;
    if (err)
        (*n)++;
    /* Commands from a callback during free are refused, not lost. */
    CU_ASSERT_EQUAL(msm_redis_command(r, NULL, NULL, "PING"), MSM_ERR_SHUTDOWN);
}

static void test_free_runs_pending_callbacks(void)
{
    msm_loop_t *loop = msm_loop_new();
    msm_redis_t *r = client(loop, srv.url, "x");
    CU_ASSERT_EQUAL_FATAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    int errors = 0;
    for (int i = 0; i < 100; i++)
        msm_redis_command(r, count_errors, &errors, "PING");
    msm_redis_free(r); /* all 100 callbacks run inside */
    CU_ASSERT_EQUAL(errors, 100);

    /* Freed from inside its own reply callback, with more replies still pending. */
    r = client(loop, srv.url, "x");
    freed_calls = 0;
    for (int i = 0; i < 10; i++)
        msm_redis_command(r, free_from_callback, NULL, "PING");
    msm_test_spin(loop, 200);
    CU_ASSERT_EQUAL(freed_calls, 10);

    /* Freed while down, with failures queued. */
    msm_test_redis_t own;
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_start(&own), 0);
    char url[96];
    snprintf(url, sizeof(url), "%s", own.url);
    msm_test_redis_destroy(&own);
    r = client(loop, url, "x");
    msm_test_spin(loop, 50);
    errors = 0;
    msm_redis_command(r, count_errors, &errors, "PING");
    msm_redis_free(r);
    CU_ASSERT_EQUAL(errors, 1);
    msm_test_spin(loop, 20);
    msm_loop_free(loop);
}

/* Integer, numeric string, nil and other replies, built the way hiredis builds them. */
/* rediss:// through the TLS tunnel: commands work, the server's certificate is checked
 * against the given CA, and a server that requires client certificates refuses a client
 * without one. Files that cannot be loaded fail at msm_redis_new(). */
static void test_tls(void)
{
    char certs[256];
    CU_ASSERT_EQUAL_FATAL(msm_test_certs_make(certs, sizeof(certs)), 0);
    msm_test_redis_t tls;
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_start_tls(&tls, certs), 0);
    msm_loop_t *loop = msm_loop_new();
    char ns[64], url[1024];
    msm_test_namespace(ns, sizeof(ns));

    msm_redis_t *r = client(loop, tls.tls_url, ns);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    CU_ASSERT_EQUAL(msm_loop_run_until(loop, connected_flag, r, 5000), MSM_OK);
    result_t res;
    run(loop, r, &res, "SET %s:tls %b", ns, "over TLS", (size_t)8);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);
    /* Bigger than one TLS record and one tunnel buffer, both ways. */
    size_t big_len = 200 * 1024;
    char *big = malloc(big_len);
    memset(big, 'x', big_len);
    run(loop, r, &res, "SET %s:big %b", ns, big, big_len);
    CU_ASSERT_EQUAL(res.type, REDIS_REPLY_STATUS);
    run(loop, r, &res, "STRLEN %s:big", ns);
    CU_ASSERT_EQUAL(res.integer, (long long)big_len);
    free(big);
    msm_redis_t *plain = client(loop, tls.url, ns); /* the same data, seen without TLS */
    run(loop, plain, &res, "GET %s:tls", ns);
    CU_ASSERT_STRING_EQUAL(res.str, "over TLS");
    msm_redis_free(plain);
    msm_redis_free(r);

    /* Another CA than the server's: never connected, commands fail with a reason. */
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%d?ssl_ca_certs=%s/rogue-ca.pem",
             tls.tls_port, certs);
    const char *refused[] = {url, NULL};
    char nocert[1024];
    /* The right CA but no client certificate: the server refuses it (tls-auth-clients). */
    snprintf(nocert, sizeof(nocert), "rediss://127.0.0.1:%d?ssl_ca_certs=%s/ca.pem",
             tls.tls_port, certs);
    refused[1] = nocert;
    for (int i = 0; i < 2; i++) {
        msm_redis_t *bad = client(loop, refused[i], ns);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bad);
        run(loop, bad, &res, "PING");
        CU_ASSERT_EQUAL(res.type, -1);
        CU_ASSERT_FALSE(msm_redis_connected(bad));
        msm_redis_free(bad);
    }

    /* Files that cannot be used are refused at once, with the reason. */
    msm_redis_conf_t conf = {.url = url, .ns = ns};
    char err[512];
    snprintf(url, sizeof(url), "rediss://127.0.0.1:%d?ssl_ca_certs=%s/none.pem", tls.tls_port,
             certs);
    CU_ASSERT_PTR_NULL(msm_redis_new(loop, &conf, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "none.pem"));
    snprintf(url, sizeof(url),
             "rediss://127.0.0.1:%d?ssl_ca_certs=%s/ca.pem&ssl_certfile=%s/cli.pem&"
             "ssl_keyfile=%s/srv.key",
             tls.tls_port, certs, certs, certs); /* a key that is not the certificate's */
    CU_ASSERT_PTR_NULL(msm_redis_new(loop, &conf, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cli.pem"));

    msm_loop_free(loop);
    msm_test_redis_destroy(&tls);
    msm_test_certs_remove(certs);
}

/* msm_redis_key_slot() against a real server's CLUSTER KEYSLOT (a redis-server started in
 * cluster mode: a node with no slots still answers it), and a script whose keys span two
 * slots refused before it is sent. */
static void test_key_slots(void)
{
    char dir[64], cmd[600];
    snprintf(dir, sizeof(dir), "/tmp/msm-slots-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    int port = msm_test_free_port();
    snprintf(cmd, sizeof(cmd),
             "redis-server --port %d --bind 127.0.0.1 --cluster-enabled yes --dir %s "
             "--cluster-port %d --cluster-config-file nodes.conf --save '' --daemonize yes "
             "--loglevel warning --pidfile %s/pid --logfile %s/redis.log",
             port, dir, msm_test_free_port(), dir, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    redisContext *c = NULL;
    /* The bus port is set: by default it is port + 10000, impossible above 55535. */
    for (int i = 0; i < 500 && !(c && !c->err); i++) { /* up to 10 s on a loaded machine */
        if (c)
            redisFree(c);
        usleep(20000);
        c = redisConnect("127.0.0.1", port);
    }
    if (!c || c->err) {
        fprintf(stderr, "cluster-mode redis-server on %d did not answer (log: %s/redis.log)\n",
                port, dir);
        if (c)
            redisFree(c);
        CU_FAIL_FATAL("no cluster-mode redis-server");
    }
    const char *keys[] = {"", "a", "foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap",
                          "foo{bar}{zap}", "{}x", "msm:sub:{orders-sub}:delayed",
                          "msm:log:{events.orders}:0", "x{y"};
    int checked = 0;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) + 500; i++) {
        char rnd[40];
        const char *k = keys[i % (sizeof(keys) / sizeof(keys[0]))];
        if (i >= sizeof(keys) / sizeof(keys[0])) {
            snprintf(rnd, sizeof(rnd), "k%zu:{t%zu}:%zu", i * 7919, i % 13, i);
            k = i % 2 ? rnd : rnd + 4;
        }
        redisReply *rep = redisCommand(c, "CLUSTER KEYSLOT %b", k, strlen(k));
        CU_ASSERT_TRUE_FATAL(rep && rep->type == REDIS_REPLY_INTEGER);
        CU_ASSERT_EQUAL(msm_redis_key_slot(k, strlen(k)), (int)rep->integer);
        checked += msm_redis_key_slot(k, strlen(k)) == (int)rep->integer;
        freeReplyObject(rep);
    }
    CU_ASSERT_EQUAL(checked, (int)(sizeof(keys) / sizeof(keys[0])) + 500);
    redisCommand(c, "SHUTDOWN NOSAVE");
    redisFree(c);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);

    msm_loop_t *loop = msm_loop_new();
    msm_redis_t *r = client(loop, srv.url, "slots");
    msm_redis_script_t *s = msm_redis_script_new("return 1");
    const char *same[] = {"sub:{a}:x", "sub:{a}:y"}, *apart[] = {"sub:{a}:x", "sub:{b}:x"};
    result_t res = {0};
    CU_ASSERT_EQUAL(msm_redis_eval(r, s, on_result, &res, 2, 2, same, NULL), MSM_OK);
    CU_ASSERT_EQUAL(msm_test_wait_flag(loop, &res.done, 5000), 0);
    CU_ASSERT_EQUAL(res.integer, 1);
    CU_ASSERT_EQUAL(msm_redis_eval(r, s, on_result, &res, 2, 2, apart, NULL), MSM_ERR_INVALID);
    msm_redis_free(r);
    msm_redis_script_free(s);
    msm_loop_free(loop);
}

static void test_reply_int(void)
{
    redisReply i = {.type = REDIS_REPLY_INTEGER, .integer = -42};
    char digits[] = "123456789012";
    redisReply str = {.type = REDIS_REPLY_STRING, .str = digits, .len = sizeof(digits) - 1};
    redisReply nil = {.type = REDIS_REPLY_NIL};
    redisReply arr = {.type = REDIS_REPLY_ARRAY};
    CU_ASSERT_EQUAL(msm_redis_reply_int(&i, 7), -42);
    CU_ASSERT_EQUAL(msm_redis_reply_int(&str, 7), 123456789012LL);
    CU_ASSERT_EQUAL(msm_redis_reply_int(&nil, 7), 7);
    CU_ASSERT_EQUAL(msm_redis_reply_int(&arr, -1), -1);
    CU_ASSERT_EQUAL(msm_redis_reply_int(NULL, 0), 0);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"url parse", test_url_parse},
        {"commands and reply types", test_commands_and_reply_types},
        {"pipelining 10k INCR in one turn", test_pipelining_10k},
        {"a command goes out before the loop waits", test_written_before_the_wait},
        {"script EVALSHA with NOSCRIPT fallback", test_script_noscript_fallback},
        {"AUTH and SELECT from the URL", test_auth_and_select_from_url},
        {"disconnect, fail fast, reconnect", test_disconnect_and_reconnect},
        {"command timeout drops and reconnects", test_command_timeout},
        {"unreachable server fails fast", test_unreachable_fails_fast},
        {"free runs pending callbacks", test_free_runs_pending_callbacks},
        {"integer of a reply", test_reply_int},
        {"rediss://: TLS with CA and client certificate", test_tls},
        {"hash slots: CLUSTER KEYSLOT agrees, a cross-slot script is refused", test_key_slots},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"redis", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
