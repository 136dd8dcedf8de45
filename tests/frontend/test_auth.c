/* SPDX-License-Identifier: MIT */
/* Authentication and authorization (API.md "Security") on the real msm-frontend process
 * with its real redis-server: a token file of principals, 401 without or with an unknown
 * token (and nothing published), 403 outside a principal's scopes, the probes open, the
 * publish quota answering 429 with Retry-After, and a bad token file refused at start. */
#include "lambda_test_util.h"
#include "msm_test.h"

#include <CUnit/CUnit.h>
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *frontend_bin, *msmctl_bin;
static char dir[256], ns[64], tokens[320];
static msm_test_redis_t redis_srv;
static msm_test_proc_t fe;

#define QUOTA 100

static void sha256_hex(const char *s, char out[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, strlen(s), d);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static int write_tokens(const char *path)
{
    char a[65], p[65], s[65], sch[65], svc[65];
    sha256_hex("admin-token", a);
    sha256_hex("pub-token", p);
    sha256_hex("sub-token", s);
    sha256_hex("schema-token", sch);
    sha256_hex("orders-service-token-unused", svc);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "[{\"name\":\"ops\",\"token_sha256\":\"%s\",\"scopes\":[\"admin\"]},\n"
            " {\"name\":\"orders-svc\",\"token_sha256\":\"%s\",\"scopes\":[\"publish:orders*\"],"
            "\"publish_per_s\":%d},\n"
            " {\"name\":\"billing\",\"token_sha256\":\"%s\",\"scopes\":[\"subscribe:orders*\"]},\n"
            " {\"name\":\"schemer\",\"token_sha256\":\"%s\",\"scopes\":[\"schemas\"]},\n"
            " {\"name\":\"orders-service\",\"token_sha256\":\"%s\","
            "\"scopes\":[\"publish:orders*\"]}]\n",
            a, p, QUOTA, s, sch, svc);
    return fclose(f);
}

/* One request with @p token (NULL: none); @returns the status. */
static long
call(const char *method, const char *path, const char *body, const char *token, lt_http_t *keep)
{
    char auth[128];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
    lt_http_t h = {.method = method,
                   .path = path,
                   .body = body,
                   .body_len = body ? strlen(body) : 0,
                   .headers = {"Content-Type: application/json", token ? auth : NULL}};
    lt_http(fe.port, &h);
    long st = h.status;
    if (keep)
        *keep = h;
    else
        lt_http_free(&h);
    return st;
}

static long long events_in(const char *topic)
{
    redisReply *r = msm_test_redis_query(&redis_srv, "XLEN %s:log:{events.%s}:0", ns, topic);
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r)
        freeReplyObject(r);
    return n;
}

static int suite_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (lt_tmpdir(dir, sizeof(dir)) != 0 || msm_test_redis_start(&redis_srv) != 0)
        return -1;
    snprintf(tokens, sizeof(tokens), "%s/tokens.json", dir);
    if (write_tokens(tokens) != 0)
        return -1;
    msm_test_namespace(ns, sizeof(ns));
    char flag[400];
    snprintf(flag, sizeof(flag), "--auth.tokens=%s", tokens);
    const char *extra[] = {flag, "--router.allow_networks=127.0.0.0/8", NULL};
    if (lt_frontend_start(&fe, frontend_bin, dir, redis_srv.url, ns, extra) != 0)
        return -1;
    const char *topics[] = {"/v1/topics/orders", "/v1/topics/payments"};
    for (size_t i = 0; i < 2; i++)
        if (call("PUT", topics[i], "{\"partitions\":1}", "admin-token", NULL) != 200)
            return -1;
    return 0;
}

static int suite_clean(void)
{
    int rc = msm_test_proc_stop(&fe, SIGTERM, MSM_TEST_PROC_GRACE_MS);
    msm_test_redis_destroy(&redis_srv);
    lt_rmdir(dir);
    curl_global_cleanup();
    return rc == 0 ? 0 : -1;
}

static const char *ONE_EVENT = "{\"events\":[{\"data\":{\"n\":1}}]}";

static void test_probes_open_rest_needs_a_token(void)
{
    CU_ASSERT_EQUAL(call("GET", "/healthz", NULL, NULL, NULL), 200);
    CU_ASSERT_EQUAL(call("GET", "/readyz", NULL, NULL, NULL), 200);
    lt_http_t h;
    CU_ASSERT_EQUAL(call("GET", "/metrics", NULL, NULL, &h), 401);
    char v[64];
    CU_ASSERT_PTR_NOT_NULL(lt_http_header(&h, "WWW-Authenticate", v, sizeof(v)));
    CU_ASSERT_PTR_NOT_NULL(h.rbody && strstr(h.rbody, "\"UNAUTHENTICATED\""));
    lt_http_free(&h);
    /* /metrics and /debug/info need admin */
    CU_ASSERT_EQUAL(call("GET", "/metrics", NULL, "pub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("GET", "/debug/info", NULL, "sub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("GET", "/metrics", NULL, "admin-token", NULL), 200);
    CU_ASSERT_EQUAL(call("GET", "/debug/info", NULL, "admin-token", NULL), 200);
}

static void test_no_token_publishes_nothing(void)
{
    long long before = events_in("orders");
    CU_ASSERT_EQUAL(call("POST", "/v1/topics/orders:publish", ONE_EVENT, NULL, NULL), 401);
    CU_ASSERT_EQUAL(call("POST", "/v1/topics/orders:publish", ONE_EVENT, "wrong-token", NULL), 401);
    CU_ASSERT_EQUAL(call("POST", "/v1/topics/orders/events", "{\"n\":1}", NULL, NULL), 401);
    CU_ASSERT_EQUAL(events_in("orders"), before);
}

static void test_scopes(void)
{
    long long before = events_in("orders");
    /* publish:orders* publishes to orders, not to payments */
    CU_ASSERT_EQUAL(call("POST", "/v1/topics/orders:publish", ONE_EVENT, "pub-token", NULL), 200);
    CU_ASSERT_EQUAL(events_in("orders"), before + 1);
    lt_http_t h;
    CU_ASSERT_EQUAL(call("POST", "/v1/topics/payments:publish", ONE_EVENT, "pub-token", &h), 403);
    CU_ASSERT_PTR_NOT_NULL(h.rbody && strstr(h.rbody, "\"PERMISSION_DENIED\""));
    lt_http_free(&h);
    CU_ASSERT_EQUAL(events_in("payments"), 0);
    /* a publish-only token cannot create a subscription, nor a topic */
    const char *sub = "{\"topic\":\"orders\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9/\"}]}";
    CU_ASSERT_EQUAL(call("PUT", "/v1/subscriptions/orders-billing", sub, "pub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("PUT", "/v1/topics/orders2", "{}", "pub-token", NULL), 403);
    /* subscribe:orders* manages orders* subscriptions, on orders* topics only */
    CU_ASSERT_EQUAL(call("PUT", "/v1/subscriptions/orders-billing", sub, "sub-token", NULL), 200);
    CU_ASSERT_EQUAL(call("GET", "/v1/subscriptions/orders-billing", NULL, "sub-token", NULL), 200);
    const char *steal =
        "{\"topic\":\"payments\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9/\"}]}";
    CU_ASSERT_EQUAL(call("PUT", "/v1/subscriptions/orders-steal", steal, "sub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("PUT", "/v1/subscriptions/payments-x", sub, "sub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("POST", "/v1/topics/orders:publish", ONE_EVENT, "sub-token", NULL), 403);
    /* dead letters need replay; schema changes need schemas; reads need a token only */
    CU_ASSERT_EQUAL(
        call("POST", "/v1/subscriptions/orders-billing/dlq:replay", "{}", "sub-token", NULL), 403);
    const char *schema = "{\"schema\":\"{\\\"type\\\":\\\"string\\\"}\",\"schemaType\":\"JSON\"}";
    CU_ASSERT_EQUAL(call("POST", "/subjects/orders-value/versions", schema, "pub-token", NULL),
                    403);
    CU_ASSERT_EQUAL(call("POST", "/subjects/orders-value/versions", schema, "schema-token", NULL),
                    200);
    CU_ASSERT_EQUAL(call("GET", "/subjects", NULL, "pub-token", NULL), 200);
    CU_ASSERT_EQUAL(call("GET", "/subjects", NULL, NULL, NULL), 401);
    /* admin holds every scope */
    CU_ASSERT_EQUAL(call("POST", "/v1/topics/payments:publish", ONE_EVENT, "admin-token", NULL),
                    200);
    /* CDC: sources are admin's; pushing changes needs publish on the source's topic */
    CU_ASSERT_EQUAL(call("PUT", "/v1/cdc/sources/cdc-orders",
                         "{\"topic\":\"orders\",\"partitions\":[\"p0\"]}", "pub-token", NULL),
                    403);
    CU_ASSERT_EQUAL(call("PUT", "/v1/cdc/sources/cdc-orders",
                         "{\"topic\":\"orders\",\"partitions\":[\"p0\"]}", "admin-token", NULL),
                    200);
    CU_ASSERT_EQUAL(call("PUT", "/v1/cdc/sources/cdc-pay",
                         "{\"topic\":\"payments\",\"partitions\":[\"p0\"]}", "admin-token",
                         NULL),
                    200);
    const char *change = "{\"partition\":\"p0\",\"changes\":[{\"sequence\":1,\"op\":\"create\","
                         "\"entity\":\"e1\",\"data\":{\"n\":1}}]}";
    long long orders = events_in("orders"), payments = events_in("payments");
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-orders/changes", change, "pub-token", NULL),
                    200);
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-pay/changes", change, "pub-token", &h),
                    403);
    CU_ASSERT_PTR_NOT_NULL(h.rbody && strstr(h.rbody, "payments"));
    lt_http_free(&h);
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-pay/changes", change, "sub-token", NULL),
                    403);
    CU_ASSERT_EQUAL(events_in("orders"), orders + 1);
    CU_ASSERT_EQUAL(events_in("payments"), payments);
    /* the refused push left the partition free: the right token gets it through */
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-pay/changes", change, "admin-token", NULL),
                    200);
    CU_ASSERT_EQUAL(events_in("payments"), payments + 1);
    /* Recurring schedules publish on their own: admin's, like CDC sources. */
    const char *sched = "{\"topic\":\"orders\",\"every_ms\":3600000,\"event\":{\"data\":1}}";
    CU_ASSERT_EQUAL(call("PUT", "/v1/schedules/hourly", sched, "pub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("PUT", "/v1/schedules/hourly", sched, "sub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("PUT", "/v1/schedules/hourly", sched, NULL, NULL), 401);
    CU_ASSERT_EQUAL(call("PUT", "/v1/schedules/hourly", sched, "admin-token", NULL), 200);
    CU_ASSERT_EQUAL(call("GET", "/v1/schedules", NULL, "pub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("GET", "/v1/schedules/hourly", NULL, "sub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("GET", "/v1/schedules/hourly", NULL, "admin-token", NULL), 200);
    CU_ASSERT_EQUAL(call("DELETE", "/v1/schedules/hourly", NULL, "pub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("DELETE", "/v1/schedules/hourly", NULL, "admin-token", NULL), 200);
    /* :notify takes the push's scope (the connector that pushes is the one that notifies);
     * the partitions' state is admin's */
    const char *pulled = "{\"topic\":\"%s\",\"range_url\":\"http://127.0.0.1:9/c\","
                         "\"partitions\":[\"p0\"]}";
    char body[256];
    snprintf(body, sizeof(body), pulled, "orders");
    CU_ASSERT_EQUAL(call("PUT", "/v1/cdc/sources/cdc-orders", body, "admin-token", NULL), 200);
    snprintf(body, sizeof(body), pulled, "payments");
    CU_ASSERT_EQUAL(call("PUT", "/v1/cdc/sources/cdc-pay", body, "admin-token", NULL), 200);
    const char *note = "{\"partition\":\"p0\",\"sequence\":9}";
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-orders:notify", note, "pub-token", NULL),
                    200);
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-pay:notify", note, "pub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-pay:notify", note, "sub-token", NULL), 403);
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-pay:notify", note, "admin-token", NULL),
                    200);
    CU_ASSERT_EQUAL(call("POST", "/v1/cdc/sources/cdc-pay:notify", note, NULL, NULL), 401);
    CU_ASSERT_EQUAL(call("GET", "/v1/cdc/sources/cdc-pay/partitions", NULL, "pub-token", NULL),
                    403);
    CU_ASSERT_EQUAL(call("GET", "/v1/cdc/sources/cdc-pay/partitions", NULL, "admin-token", NULL),
                    200);
}

/* publish_per_s 100: batches of 50 as fast as they are answered for 2 s. */
static void test_quota(void)
{
    sleep(1); /* the bucket refills from the scope test */
    const char *batch_head = "{\"events\":[";
    char body[4096];
    size_t len = (size_t)snprintf(body, sizeof(body), "%s", batch_head);
    for (int i = 0; i < 50; i++)
        len += (size_t)snprintf(body + len, sizeof(body) - len, "%s{\"data\":%d}", i ? "," : "", i);
    snprintf(body + len, sizeof(body) - len, "]}");
    long long before = events_in("orders"), accepted = 0, refused = 0;
    char retry_after[32] = "";
    double t0 = lt_now_ms();
    while (lt_now_ms() - t0 < 2000) {
        lt_http_t h;
        long st = call("POST", "/v1/topics/orders:publish", body, "pub-token", &h);
        if (st == 200) {
            accepted += 50;
        } else if (st == 429) {
            refused++;
            lt_http_header(&h, "Retry-After", retry_after, sizeof(retry_after));
        } else {
            CU_FAIL("publish answered neither 200 nor 429");
        }
        lt_http_free(&h);
    }
    double secs = (lt_now_ms() - t0) / 1000.0;
    printf("\n    quota %d events/s: %lld accepted in %.1f s, %lld requests answered 429 "
           "(Retry-After %s)\n",
           QUOTA, accepted, secs, refused, retry_after);
    CU_ASSERT_TRUE(refused > 0);
    CU_ASSERT_TRUE(atoi(retry_after) >= 1);
    /* one second's worth up front, then the rate; a batch may overdraw by less than 50 */
    CU_ASSERT_TRUE(accepted <= (long long)(QUOTA * (secs + 1)) + 50);
    CU_ASSERT_TRUE(accepted >= QUOTA);
    CU_ASSERT_EQUAL(events_in("orders") - before, accepted);
}

static void test_bad_token_file_refused(void)
{
    char bad[320];
    snprintf(bad, sizeof(bad), "%s/bad.json", dir);
    FILE *f = fopen(bad, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "[{\"name\":\"x\",\"token_sha256\":\"abc\",\"scopes\":[\"root\"]}]");
    fclose(f);
    msm_test_proc_t p;
    memset(&p, 0, sizeof(p));
    snprintf(p.log, sizeof(p.log), "%s/bad-frontend.log", dir);
    msm_test_proc_arg(&p, "%s", frontend_bin);
    msm_test_proc_arg(&p, "--redis.url=%s", redis_srv.url);
    msm_test_proc_arg(&p, "--http.port=%d", msm_test_free_port());
    msm_test_proc_arg(&p, "--auth.tokens=%s", bad);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&p), 0);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&p, 0, 10000), 2);
    char *log = lt_read_file(p.log, NULL);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "auth.tokens"));
    free(log);
}

/* mTLS: a second frontend serving HTTPS with a client CA; a verified client certificate
 * whose CN names a principal ("orders-service") is that principal without any token. */
static long
tls_call(int port, const char *certs, const char *cert, const char *path, const char *body)
{
    char url[128], ca[400], crt[400], key[400];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d%s", port, path);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certs);
    snprintf(crt, sizeof(crt), "%s/%s.pem", certs, cert ? cert : "");
    snprintf(key, sizeof(key), "%s/%s.key", certs, cert ? cert : "");
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, fwrite);
    FILE *sink = fopen("/dev/null", "w");
    curl_easy_setopt(e, CURLOPT_WRITEDATA, sink);
    if (cert) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, crt);
        curl_easy_setopt(e, CURLOPT_SSLKEY, key);
    }
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    long status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (sink)
        fclose(sink);
    return status;
}

static void test_mtls_principal(void)
{
    char certs[256];
    CU_ASSERT_EQUAL_FATAL(msm_test_certs_make(certs, sizeof(certs)), 0);
    char f1[400], f2[400], f3[400], f4[400];
    snprintf(f1, sizeof(f1), "--auth.tokens=%s", tokens);
    snprintf(f2, sizeof(f2), "--tls.cert=%s/srv.pem", certs);
    snprintf(f3, sizeof(f3), "--tls.key=%s/srv.key", certs);
    snprintf(f4, sizeof(f4), "--tls.client_ca=%s/ca.pem", certs);
    msm_test_proc_t tls;
    memset(&tls, 0, sizeof(tls));
    tls.port = msm_test_free_port();
    snprintf(tls.log, sizeof(tls.log), "%s/frontend-tls.log", dir);
    msm_test_proc_arg(&tls, "%s", frontend_bin);
    msm_test_proc_arg(&tls, "--redis.url=%s", redis_srv.url);
    msm_test_proc_arg(&tls, "--namespace=%s", ns);
    msm_test_proc_arg(&tls, "--http.port=%d", tls.port);
    msm_test_proc_arg(&tls, "--http.bind=127.0.0.1");
    msm_test_proc_arg(&tls, "%s", f1);
    msm_test_proc_arg(&tls, "%s", f2);
    msm_test_proc_arg(&tls, "%s", f3);
    msm_test_proc_arg(&tls, "%s", f4);
    CU_ASSERT_EQUAL_FATAL(msm_test_proc_start(&tls), 0);
    long ready = 0;
    for (int i = 0; i < 150 && ready != 200; i++) {
        usleep(100000);
        ready = tls_call(tls.port, certs, NULL, "/readyz", NULL);
    }
    CU_ASSERT_EQUAL(ready, 200);
    long long before = events_in("orders");
    /* the certificate's CN is the principal: its scopes apply, no token needed */
    CU_ASSERT_EQUAL(tls_call(tls.port, certs, "cli", "/v1/topics/orders:publish", ONE_EVENT), 200);
    CU_ASSERT_EQUAL(events_in("orders"), before + 1);
    CU_ASSERT_EQUAL(tls_call(tls.port, certs, "cli", "/v1/topics/payments:publish", ONE_EVENT),
                    403);
    /* no certificate, or one from another CA with the same CN: refused */
    CU_ASSERT_EQUAL(tls_call(tls.port, certs, NULL, "/v1/topics/orders:publish", ONE_EVENT), 401);
    CU_ASSERT_EQUAL(tls_call(tls.port, certs, "rogue", "/v1/topics/orders:publish", ONE_EVENT),
                    401);
    CU_ASSERT_EQUAL(events_in("orders"), before + 1);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&tls, SIGTERM, MSM_TEST_PROC_GRACE_MS), 0);
    msm_test_certs_remove(certs);
}

/* The frontend on a Redis that speaks only TLS to it (rediss://, client certificate): ready,
 * and a publish lands in the log. */
static void test_redis_over_tls(void)
{
    char certs[256];
    CU_ASSERT_EQUAL_FATAL(msm_test_certs_make(certs, sizeof(certs)), 0);
    msm_test_redis_t tls;
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_start_tls(&tls, certs), 0);
    char sub_dir[300];
    snprintf(sub_dir, sizeof(sub_dir), "%s/tls", dir);
    mkdir(sub_dir, 0700);
    msm_test_proc_t f;
    CU_ASSERT_EQUAL_FATAL(lt_frontend_start(&f, frontend_bin, sub_dir, tls.tls_url, ns, NULL), 0);
    const char *paths[] = {"/v1/topics/tls-orders", "/v1/topics/tls-orders:publish"};
    const char *bodies[] = {"{\"partitions\":1}", ONE_EVENT};
    const char *methods[] = {"PUT", "POST"};
    for (int i = 0; i < 2; i++) {
        lt_http_t h = {.method = methods[i],
                       .path = paths[i],
                       .body = bodies[i],
                       .body_len = strlen(bodies[i]),
                       .headers = {"Content-Type: application/json"}};
        lt_http(f.port, &h);
        CU_ASSERT_EQUAL(h.status, 200);
        lt_http_free(&h);
    }
    redisReply *r = msm_test_redis_query(&tls, "XLEN %s:log:{events.tls-orders}:0", ns);
    CU_ASSERT_TRUE(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1);
    if (r)
        freeReplyObject(r);
    CU_ASSERT_EQUAL(msm_test_proc_stop(&f, SIGTERM, MSM_TEST_PROC_GRACE_MS), 0);
    msm_test_redis_destroy(&tls);
    msm_test_certs_remove(certs);
}

/* msmctl sends --token (or MSM_TOKEN) as the bearer token. */
static void test_msmctl_token(void)
{
    char cmd[1024], out[400];
    snprintf(out, sizeof(out), "%s/msmctl.out", dir);
    snprintf(cmd, sizeof(cmd), "%s topic list --url=http://127.0.0.1:%d > %s 2>&1", msmctl_bin,
             fe.port, out);
    CU_ASSERT_NOT_EQUAL(WEXITSTATUS(system(cmd)), 0);
    char *text = lt_read_file(out, NULL);
    CU_ASSERT_PTR_NOT_NULL(text && strstr(text, "401"));
    free(text);
    snprintf(cmd, sizeof(cmd),
             "%s topic list --url=http://127.0.0.1:%d --token=pub-token > %s 2>&1", msmctl_bin,
             fe.port, out);
    CU_ASSERT_EQUAL(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof(cmd),
             "MSM_TOKEN=pub-token %s topic list --url=http://127.0.0.1:%d > %s 2>&1", msmctl_bin,
             fe.port, out);
    CU_ASSERT_EQUAL(WEXITSTATUS(system(cmd)), 0);
    text = lt_read_file(out, NULL);
    CU_ASSERT_PTR_NOT_NULL(text && strstr(text, "orders"));
    free(text);
}

static CU_TestInfo tests[] = {
    {"Redis over TLS: rediss:// with a client certificate", test_redis_over_tls},
    {"msmctl --token and MSM_TOKEN", test_msmctl_token},
    {"mTLS: a client certificate's CN names the principal", test_mtls_principal},
    {"probes open; /metrics and /debug/info need admin", test_probes_open_rest_needs_a_token},
    {"no or an unknown token: 401 and nothing published", test_no_token_publishes_nothing},
    {"scopes: publish, subscribe (and its topic), replay, schemas, admin", test_scopes},
    {"publish_per_s: 429 with Retry-After above the quota", test_quota},
    {"a bad token file: exit status 2", test_bad_token_file_refused},
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    {"auth", suite_init, suite_clean, NULL, NULL, tests},
    CU_SUITE_INFO_NULL,
};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MSM_FRONTEND MSMCTL\n", argv[0]);
        return 2;
    }
    frontend_bin = argv[1];
    msmctl_bin = argv[2];
    return msm_test_run(suites);
}
