/* SPDX-License-Identifier: MIT */
/* msm-frontend in-process: the frontend library on its own loop with a real redis-server, an
 * HTTP server on an ephemeral port and the Redis log; requests go through msm/http_client.h
 * on the same loop. test_tasks.c covers a subscription's delivery state. */
#include "msm_test.h"

#include "frontend.h"

#include "msm/base64.h"
#include "msm/envelope.h"
#include "msm/err.h"
#include "msm/http_client.h"
#include "msm/id.h"
#include "msm/log.h"
#include "msm/registry.h"
#include "msm/time.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe_fixture.h"

/* ---- control plane ---- */

static void test_topics(void)
{
    resp_t r;
    http(&r, "PUT", "/v1/topics/orders", "{\"partitions\":3}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "name"), "orders");
    CU_ASSERT_EQUAL(jint(r.json, "partitions"), 3);
    json_int_t created = jint(r.json, "created_ms");
    CU_ASSERT(created > 0);
    resp_clear(&r);
    /* The log stream exists with the topic's partitions before the answer. */
    CU_ASSERT_EQUAL(cmd_int("HGET %s:log:{events.orders}:meta partitions", F.ns), 3);

    /* PUT again: same topic, created_ms kept; an empty body is fine. */
    http(&r, "PUT", "/v1/topics/orders", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "partitions"), 3);
    CU_ASSERT_EQUAL(jint(r.json, "created_ms"), created);
    resp_clear(&r);
    http(&r, "PUT", "/v1/topics/orders", "{\"partitions\":5}");
    CU_ASSERT_EQUAL(r.status, 409);
    CU_ASSERT(has_detail(&r, "partitions"));
    resp_clear(&r);

    http(&r, "PUT", "/v1/topics/invoices", "{\"schema_subject\":\"invoices-value\"}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "schema_subject"), "invoices-value");
    CU_ASSERT_EQUAL(jint(r.json, "partitions"), 4);
    resp_clear(&r);

    http(&r, "GET", "/v1/topics/orders", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "partitions"), 3);
    resp_clear(&r);
    http(&r, "GET", "/v1/topics", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *topics = json_object_get(r.json, "topics");
    CU_ASSERT_EQUAL(json_array_size(topics), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(topics, 0), "name"), "invoices");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(topics, 1), "name"), "orders");
    resp_clear(&r);

    /* Bad names and bodies. */
    http(&r, "PUT", "/v1/topics/bad%20name", "{}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "name"));
    resp_clear(&r);
    http(&r, "PUT", "/v1/topics/t1", "{\"partitions\":\"many\",\"colour\":1}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "partitions"));
    CU_ASSERT(has_detail(&r, "colour"));
    resp_clear(&r);
    http(&r, "PUT", "/v1/topics/t1", "{nope");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "INVALID_ARGUMENT");
    resp_clear(&r);

    /* 404s. */
    http(&r, "GET", "/v1/topics/nope", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "NOT_FOUND");
    resp_clear(&r);
    http(&r, "DELETE", "/v1/topics/nope", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    http(&r, "GET", "/v1/no/such/path", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    http(&r, "POST", "/v1/topics/nope:publish", "{\"events\":[{\"data\":1}]}");
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);

    /* DELETE, then the topic is gone for GET and for publish. */
    http(&r, "DELETE", "/v1/topics/invoices", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "GET", "/v1/topics/invoices", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    http(&r, "POST", "/v1/topics/invoices:publish", "{\"events\":[{\"data\":1}]}");
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    CU_ASSERT_EQUAL(cmd_int("HEXISTS %s:{registry}:topics invoices", F.ns), 0);
}

/* PUT /v1/subscriptions/{name} with <url> as its only endpoint (or two, comma-separated in
 * @p urls): the status, the error message in @p msg (may be NULL). */
static int put_endpoints(const char *urls, char *msg, size_t n)
{
    char body[1024], eps[768] = "";
    const char *p = urls;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        snprintf(eps + strlen(eps), sizeof(eps) - strlen(eps), "%s{\"url\":\"%.*s\"}",
                 eps[0] ? "," : "", (int)len, p);
        p += len + (end ? 1 : 0);
    }
    snprintf(body, sizeof(body), "{\"topic\":\"net-topic\",\"endpoints\":[%s]}", eps);
    resp_t r;
    http(&r, "PUT", "/v1/subscriptions/net-sub", body);
    int status = r.status;
    if (msg)
        snprintf(msg, n, "%s", jstr(json_object_get(r.json, "error"), "message") ?: "");
    if (status == 400 && !has_detail(&r, "endpoints[0].url") && !has_detail(&r, "endpoints[1].url"))
        status = -400; /* not about an endpoint */
    resp_clear(&r);
    return status;
}

/* Endpoint addresses at PUT: the fixture allows 127.0.0.0/8, ::1 and 10.1.0.0/16 and denies
 * 10.1.99.0/24 (router.allow_networks / deny_networks). */
static void test_subscription_endpoint_addresses(void)
{
    char msg[512];
    put_topic("net-topic", "{}");
    CU_ASSERT_EQUAL(put_endpoints("http://169.254.169.254/latest/meta-data/", msg, sizeof(msg)),
                    400);
    CU_ASSERT_STRING_EQUAL(msg, "endpoints[0].url: address 169.254.169.254 is denied "
                                "(link-local / cloud metadata); allow it in "
                                "router.allow_networks");
    CU_ASSERT_EQUAL(put_endpoints("http://10.2.3.4:9000/", msg, sizeof(msg)), 400);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "address 10.2.3.4 is denied (private network)"));
    CU_ASSERT_EQUAL(put_endpoints("http://[::ffff:169.254.169.254]/", NULL, 0), 400);
    CU_ASSERT_EQUAL(put_endpoints("http://[fe80::1]:80/", NULL, 0), 400);
    CU_ASSERT_EQUAL(put_endpoints("http://2852039166/", NULL, 0), 400); /* 169.254.169.254 */
    CU_ASSERT_EQUAL(put_endpoints("http://user:pw@192.168.1.1:80/", NULL, 0), 400);
    /* The second endpoint is denied: deny wins over the allowed 10.1.0.0/16. */
    resp_t r;
    http(&r, "PUT", "/v1/subscriptions/net-sub",
         "{\"topic\":\"net-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"},"
         "{\"url\":\"http://10.1.99.7:9000/\"}]}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "endpoints[1].url"));
    CU_ASSERT(!has_detail(&r, "endpoints[0].url"));
    resp_clear(&r);
    /* A name that does not resolve (within FE_RESOLVE_TIMEOUT_MS) is refused too. */
    CU_ASSERT_EQUAL(put_endpoints("http://no-such-host.invalid:9000/", msg, sizeof(msg)), 400);
    CU_ASSERT(strstr(msg, "no-such-host.invalid") != NULL);
    http(&r, "GET", "/v1/subscriptions/net-sub", NULL);
    CU_ASSERT_EQUAL(r.status, 404); /* nothing was stored */
    resp_clear(&r);

    /* Allowed: listed loopback and private addresses, a name resolving to loopback only. */
    CU_ASSERT_EQUAL(put_endpoints("http://127.0.0.1:9000/", NULL, 0), 200);
    CU_ASSERT_EQUAL(put_endpoints("http://[::1]:9000/", NULL, 0), 200);
    CU_ASSERT_EQUAL(put_endpoints("http://10.1.2.3:9000/,https://127.0.0.2/x", NULL, 0), 200);
    CU_ASSERT_EQUAL(put_endpoints("http://localhost:9000/", NULL, 0), 200);
    http(&r, "DELETE", "/v1/subscriptions/net-sub", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
}

static void test_subscriptions(void)
{
    resp_t r;
    put_topic("subs-topic", "{}");
    const char *body = "{\"topic\":\"subs-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\","
                       "\"zone\":\"a\"}],\"ordered\":true,\"secret\":\"s3cr3t\","
                       "\"retry\":{\"max_attempts\":3}}";
    http(&r, "PUT", "/v1/subscriptions/sub-a", body);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "secret"), "***");
    CU_ASSERT_EQUAL(jint(r.json, "max_concurrency"), 64);
    CU_ASSERT_TRUE(json_is_true(json_object_get(r.json, "ordered")));
    CU_ASSERT_EQUAL(jint(json_object_get(r.json, "retry"), "max_attempts"), 3);
    resp_clear(&r);
    /* Stored with its secret, and its streams exist. */
    redisReply *stored = cmd("HGET %s:{registry}:subs sub-a", F.ns);
    CU_ASSERT_EQUAL(stored->type, REDIS_REPLY_STRING);
    CU_ASSERT_PTR_NOT_NULL(strstr(stored->str, "\"secret\":\"s3cr3t\""));
    freeReplyObject(stored);
    CU_ASSERT_EQUAL(cmd_int("HGET %s:log:{ready.sub-a}:meta partitions", F.ns), 1);
    CU_ASSERT_EQUAL(cmd_int("HGET %s:log:{dispatch.sub-a}:meta partitions", F.ns), 1);
    CU_ASSERT_EQUAL(cmd_int("HGET %s:log:{status.sub-a}:meta partitions", F.ns), 1);

    http(&r, "GET", "/v1/subscriptions/sub-a", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "secret"), "***");
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "topic"), "subs-topic");
    resp_clear(&r);
    put_sub("sub-b", "subs-topic");
    http(&r, "GET", "/v1/subscriptions", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *subs = json_object_get(r.json, "subscriptions");
    CU_ASSERT_EQUAL(json_array_size(subs), 2);
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(subs, 0), "name"), "sub-a");
    CU_ASSERT_STRING_EQUAL(jstr(json_array_get(subs, 0), "secret"), "***");
    CU_ASSERT_PTR_NULL(json_object_get(json_array_get(subs, 1), "secret"));
    resp_clear(&r);

    /* Topic must exist; body validated with field paths; topic cannot change. */
    http(&r, "PUT", "/v1/subscriptions/sub-c",
         "{\"topic\":\"ghost\",\"endpoints\":[{\"url\":\"http://x/\"}]}");
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "NOT_FOUND");
    resp_clear(&r);
    http(&r, "PUT", "/v1/subscriptions/sub-c",
         "{\"topic\":\"subs-topic\",\"endpoints\":[{\"url\":\"ftp://x/\"}],\"priority\":11}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "endpoints[0].url"));
    CU_ASSERT(has_detail(&r, "priority"));
    resp_clear(&r);
    http(&r, "PUT", "/v1/subscriptions/sub-c", "{\"topic\":\"subs-topic\"}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "endpoints"));
    resp_clear(&r);
    put_topic("other-topic", "{}");
    http(&r, "PUT", "/v1/subscriptions/sub-a",
         "{\"topic\":\"other-topic\",\"endpoints\":[{\"url\":\"http://x/\"}]}");
    CU_ASSERT_EQUAL(r.status, 409);
    resp_clear(&r);

    http(&r, "DELETE", "/v1/subscriptions/sub-b", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/sub-b", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    http(&r, "DELETE", "/v1/subscriptions/sub-b", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/bad%20name", NULL);
    CU_ASSERT_EQUAL(r.status, 404);
    resp_clear(&r);
}

/* PUT of subscription "tls-sub" on @p url with push_tls @p tls (taken); the answer in @p r. */
static void put_tls_sub(resp_t *r, const char *url, json_t *tls)
{
    json_t *body = json_pack("{s:s,s:[{s:s}],s:o}", "topic", "tls-topic", "endpoints", "url",
                             url, "push_tls", tls);
    char *text = json_dumps(body, JSON_COMPACT);
    http(r, "PUT", "/v1/subscriptions/tls-sub", text);
    free(text);
    json_decref(body);
}

/* PUT answers 400 naming @p field. */
static void assert_tls_refused(const char *url, json_t *tls, const char *field)
{
    resp_t r;
    put_tls_sub(&r, url, tls);
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "INVALID_ARGUMENT");
    if (!has_detail(&r, field))
        fprintf(stderr, "%s not named in %s\n", field, r.body);
    CU_ASSERT(has_detail(&r, field));
    resp_clear(&r);
}

/* push_tls (docs/security.md "Outbound TLS"): the PEM is parsed at PUT, the key never shows
 * in an answer, and what cannot be honoured is a 400. */
static void test_subscription_push_tls(void)
{
    char dir[256];
    CU_ASSERT_EQUAL_FATAL(msm_test_certs_make(dir, sizeof(dir)), 0);
    char *ca = msm_test_certs_read(dir, "ca.pem"), *cert = msm_test_certs_read(dir, "cli.pem");
    char *key = msm_test_certs_read(dir, "cli.key"), *rogue = msm_test_certs_read(dir, "rogue.key");
    CU_ASSERT_FATAL(ca && cert && key && rogue);
    const char *https = "https://127.0.0.1:9443/hook";
    put_topic("tls-topic", "{}");

    resp_t r;
    put_tls_sub(&r, https,
                json_pack("{s:s,s:s,s:s}", "ca_pem", ca, "client_cert_pem", cert,
                          "client_key_pem", key));
    CU_ASSERT_EQUAL(r.status, 200);
    json_t *tls = json_object_get(r.json, "push_tls");
    CU_ASSERT_STRING_EQUAL(jstr(tls, "client_key_pem"), "***");
    CU_ASSERT_STRING_EQUAL(jstr(tls, "ca_pem"), ca);
    CU_ASSERT_STRING_EQUAL(jstr(tls, "client_cert_pem"), cert);
    resp_clear(&r);
    /* stored with the key, for the router */
    redisReply *stored = cmd("HGET %s:{registry}:subs tls-sub", F.ns);
    CU_ASSERT_PTR_NOT_NULL(strstr(stored->str, "PRIVATE KEY"));
    freeReplyObject(stored);
    /* no answer shows it: GET, the list, :pause */
    static const struct {
        const char *method, *path;
    } reads[] = {{"GET", "/v1/subscriptions/tls-sub"},
                 {"GET", "/v1/subscriptions"},
                 {"POST", "/v1/subscriptions/tls-sub:pause"}};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        http(&r, reads[i].method, reads[i].path, NULL);
        CU_ASSERT_EQUAL(r.status, 200);
        CU_ASSERT_PTR_NULL(strstr(r.body, "PRIVATE KEY"));
        CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "\"client_key_pem\":\"***\""));
        resp_clear(&r);
    }

    /* what cannot be honoured, or would fail every push, is refused */
    assert_tls_refused("http://127.0.0.1:9000/", json_pack("{s:s}", "ca_pem", ca), "push_tls");
    assert_tls_refused(https, json_pack("{s:s}", "client_cert_pem", cert),
                       "push_tls.client_key_pem");
    assert_tls_refused(https, json_pack("{s:s}", "client_key_pem", key),
                       "push_tls.client_cert_pem");
    const char *garbage = "-----BEGIN CERTIFICATE-----\ngarbage!\n-----END CERTIFICATE-----\n";
    assert_tls_refused(https, json_pack("{s:s}", "ca_pem", garbage), "push_tls.ca_pem");
    assert_tls_refused(https, json_pack("{s:s}", "ca_pem", "not PEM at all"), "push_tls.ca_pem");
    assert_tls_refused(https,
                       json_pack("{s:s,s:s}", "client_cert_pem", cert, "client_key_pem", rogue),
                       "push_tls.client_key_pem");
    assert_tls_refused(https, json_pack("{s:s,s:s}", "ca_pem", ca, "ca_file", "/etc/passwd"),
                       "push_tls.ca_file");
    /* the refused ones changed nothing */
    http(&r, "GET", "/v1/subscriptions/tls-sub", NULL);
    CU_ASSERT_STRING_EQUAL(jstr(json_object_get(r.json, "push_tls"), "ca_pem"), ca);
    resp_clear(&r);
    http(&r, "DELETE", "/v1/subscriptions/tls-sub", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    free(ca);
    free(cert);
    free(key);
    free(rogue);
    msm_test_certs_remove(dir);
}

/* The description of detail @p field of an error answer, or "". */
static const char *detail_description(const resp_t *r, const char *field)
{
    json_t *details = json_object_get(json_object_get(r->json, "error"), "details");
    size_t i;
    json_t *d;
    json_array_foreach(details, i, d)
    {
        const char *f = jstr(d, "field");
        if (f && strcmp(f, field) == 0)
            return jstr(d, "description") ? jstr(d, "description") : "";
    }
    return "";
}

/* docs/filter.md: a bad filter is a 400 naming the position; the filter is kept as given and
 * cannot change afterwards (409, as in Pub/Sub). */
static void test_subscription_filters(void)
{
    resp_t r;
    put_topic("filter-topic", "{}");
    http(&r, "PUT", "/v1/subscriptions/filtered",
         "{\"topic\":\"filter-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"filter\":\"attributes.kind = image\"}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "INVALID_ARGUMENT");
    CU_ASSERT_STRING_EQUAL(detail_description(&r, "filter"),
                           "position 19: expected a string literal, found \"image\"");
    CU_ASSERT_PTR_NOT_NULL(
        strstr(jstr(json_object_get(r.json, "error"), "message"), "filter: position 19"));
    resp_clear(&r);
    CU_ASSERT_EQUAL(cmd_int("HEXISTS %s:{registry}:subs filtered", F.ns), 0); /* nothing stored */

    const char *good =
        "{\"topic\":\"filter-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
        "\"filter\":\"attributes.kind = \\\"image\\\" AND -attributes:draft\"}";
    http(&r, "PUT", "/v1/subscriptions/filtered", good);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "filter"),
                           "attributes.kind = \"image\" AND -attributes:draft");
    resp_clear(&r);
    http(&r, "PUT", "/v1/subscriptions/filtered", good); /* the same filter again: fine */
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "GET", "/v1/subscriptions/filtered", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "filter"),
                           "attributes.kind = \"image\" AND -attributes:draft");
    resp_clear(&r);
    /* Another filter, or none: a conflict. */
    http(&r, "PUT", "/v1/subscriptions/filtered",
         "{\"topic\":\"filter-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"filter\":\"attributes:kind\"}");
    CU_ASSERT_EQUAL(r.status, 409);
    CU_ASSERT(has_detail(&r, "filter"));
    resp_clear(&r);
    http(&r, "PUT", "/v1/subscriptions/filtered",
         "{\"topic\":\"filter-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}]}");
    CU_ASSERT_EQUAL(r.status, 409);
    resp_clear(&r);
    /* Without a filter, "" is the same as none; adding one later is a change too. */
    put_sub("unfiltered", "filter-topic");
    http(&r, "PUT", "/v1/subscriptions/unfiltered",
         "{\"topic\":\"filter-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"filter\":\"\"}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "PUT", "/v1/subscriptions/unfiltered",
         "{\"topic\":\"filter-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"filter\":\"attributes:kind\"}");
    CU_ASSERT_EQUAL(r.status, 409);
    resp_clear(&r);
    /* A filter stored before filters were checked may be replaced by a valid one. */
    redisReply *old = cmd("HSET %s:{registry}:subs legacy {\"topic\":\"filter-topic\",\"endpoints\":"
                          "[{\"url\":\"http://127.0.0.1:9000/\"}],\"filter\":\"kind=image\"}",
                          F.ns);
    CU_ASSERT(old && old->type == REDIS_REPLY_INTEGER && old->integer == 1);
    freeReplyObject(old);
    http(&r, "PUT", "/v1/subscriptions/legacy",
         "{\"topic\":\"filter-topic\",\"endpoints\":[{\"url\":\"http://127.0.0.1:9000/\"}],"
         "\"filter\":\"attributes.kind = \\\"image\\\"\"}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
}

/* ---- publish: bad requests ---- */

typedef struct {
    const char *body;
    int status;
    const char *field; /* a detail that must be there; NULL = any */
} bad_case_t;

static void test_publish_invalid(void)
{
    static const bad_case_t cases[] = {
        {"{\"events\":[", 400, "$"},
        {"[]", 400, "$"},
        {"{\"events\":{}}", 400, "events"},
        {"{\"events\":[]}", 400, "events"},
        {"{}", 400, "events"},
        {"{\"events\":[{\"data\":1}],\"extra\":1}", 400, "extra"},
        {"{\"events\":[{}]}", 400, "events[0].data"},
        {"{\"events\":[7]}", 400, "events[0]"},
        {"{\"events\":[{\"data\":1,\"key\":5}]}", 400, "events[0].key"},
        {"{\"events\":[{\"data\":1,\"ordering_key\":[]}]}", 400, "events[0].ordering_key"},
        {"{\"events\":[{\"data\":1,\"key\":\"a\\nb\"}]}", 400, "events[0].key"},
        {"{\"events\":[{\"data\":1,\"delay_ms\":-1}]}", 400, "events[0].delay_ms"},
        {"{\"events\":[{\"data\":1,\"delay_ms\":1.5}]}", 400, "events[0].delay_ms"},
        {"{\"events\":[{\"data\":1,\"delay_ms\":5,\"deliver_at\":\"2030-01-01T00:00:00Z\"}]}",
         400, "events[0].deliver_at"},
        {"{\"events\":[{\"data\":1,\"deliver_at\":\"2030-13-01T00:00:00Z\"}]}", 400,
         "events[0].deliver_at"},
        {"{\"events\":[{\"data\":1,\"deliver_at\":\"tomorrow\"}]}", 400, "events[0].deliver_at"},
        {"{\"events\":[{\"data\":1,\"priority\":10}]}", 400, "events[0].priority"},
        {"{\"events\":[{\"data\":1,\"priority\":-1}]}", 400, "events[0].priority"},
        {"{\"events\":[{\"data\":1},{\"data\":2,\"priority\":\"high\"}]}", 400,
         "events[1].priority"},
        {"{\"events\":[{\"data_base64\":\"a=b=\"}]}", 400, "events[0].data_base64"},
        {"{\"events\":[{\"data_base64\":\"abc\"}]}", 400, "events[0].data_base64"},
        {"{\"events\":[{\"data\":1,\"data_base64\":\"AA==\"}]}", 400, "events[0].data_base64"},
        {"{\"events\":[{\"data\":1,\"bogus\":true}]}", 400, "events[0].bogus"},
        {"{\"events\":[{\"data\":1,\"attributes\":[]}]}", 400, "events[0].attributes"},
        {"{\"events\":[{\"data\":1,\"attributes\":{\"a\":1}}]}", 400, "events[0].attributes.a"},
        {"{\"events\":[{\"data\":1,\"attributes\":{\"bad name\":\"x\"}}]}", 400,
         "events[0].attributes[\"bad name\"]"},
        {"{\"events\":[{\"data\":1,\"content_type\":\"text/plain\"}]}", 400,
         "events[0].content_type"},
        {"{\"events\":[{\"data_base64\":\"AA==\",\"content_type\":\"nonsense\"}]}", 400,
         "events[0].content_type"},
        {"{\"events\":[{\"data\":1,\"idempotency_key\":false}]}", 400,
         "events[0].idempotency_key"},
    };
    put_topic("bad-pub", "{\"partitions\":2}");
    resp_t r;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        http(&r, "POST", "/v1/topics/bad-pub:publish", cases[i].body);
        if (r.status != cases[i].status || !has_detail(&r, cases[i].field))
            fprintf(stderr, "\ncase %zu %s -> %d %s\n", i, cases[i].body, r.status, r.body);
        CU_ASSERT_EQUAL(r.status, cases[i].status);
        CU_ASSERT_STRING_EQUAL(err_code(&r), "INVALID_ARGUMENT");
        CU_ASSERT(has_detail(&r, cases[i].field));
        resp_clear(&r);
    }

    /* Too large: one payload over publish.max_event_bytes. */
    size_t raw = MAX_EVENT_BYTES + 1;
    unsigned char *bytes = calloc(1, raw);
    char *b64 = malloc(msm_base64_encoded_size(raw));
    msm_base64_encode(bytes, raw, b64);
    char *big = malloc(strlen(b64) + 64);
    sprintf(big, "{\"events\":[{\"data\":1},{\"data_base64\":\"%s\"}]}", b64);
    http(&r, "POST", "/v1/topics/bad-pub:publish", big);
    CU_ASSERT_EQUAL(r.status, 413);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "PAYLOAD_TOO_LARGE");
    CU_ASSERT(has_detail(&r, "events[1].data_base64"));
    resp_clear(&r);
    /* The same through "data": a JSON string of the limit's size. */
    memset(bytes, 'x', raw - 1);
    sprintf(big, "{\"events\":[{\"data\":\"%.*s\"}]}", (int)(raw - 1), (char *)bytes);
    http(&r, "POST", "/v1/topics/bad-pub:publish", big);
    CU_ASSERT_EQUAL(r.status, 413);
    CU_ASSERT(has_detail(&r, "events[0].data"));
    resp_clear(&r);
    free(big);
    free(b64);
    free(bytes);

    /* Too many events: the default limit is 1000. */
    size_t cap = 1001 * 12 + 32, len = 0;
    char *many = malloc(cap);
    len += (size_t)sprintf(many, "{\"events\":[");
    for (int i = 0; i < 1001; i++)
        len += (size_t)sprintf(many + len, "%s{\"data\":1}", i ? "," : "");
    sprintf(many + len, "]}");
    http(&r, "POST", "/v1/topics/bad-pub:publish", many);
    CU_ASSERT_EQUAL(r.status, 413);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "PAYLOAD_TOO_LARGE");
    CU_ASSERT(has_detail(&r, "events"));
    resp_clear(&r);
    free(many);

    /* Over the body limit: the HTTP server answers 413 before the frontend sees it. */
    size_t huge = MAX_BODY_BYTES + 100;
    char *body = malloc(huge);
    memset(body, ' ', huge);
    http_h(&r, "POST", "/v1/topics/bad-pub:publish", body, huge, NULL, NULL);
    CU_ASSERT_EQUAL(r.status, 413);
    resp_clear(&r);
    free(body);

    /* None of it was published. */
    CU_ASSERT_EQUAL(stream_len("events.bad-pub", 2), 0);
    /* ... and the metrics counted it. */
    http(&r, "GET", "/metrics", NULL);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(r.body, "msm_frontend_publish_requests_total{topic=\"bad-pub\",result=\"invalid\"}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(
        r.body, "msm_frontend_publish_requests_total{topic=\"bad-pub\",result=\"too_large\"} 3"));
    resp_clear(&r);
}

/* ---- publish: 100 events, read back from the log ---- */

#define NPUB 100

typedef struct {
    Msm__V1__Event *ev[NPUB];
    char *record_key[NPUB]; /* NULL = no key */
    size_t n;
    int64_t order_seen[2];  /* last index seen per ordering key */
    int order_broken;
} collected_t;

static int index_of(const char *ids, const char *id)
{
    for (int i = 0; i < NPUB; i++) {
        if (strcmp(ids + (size_t)i * MSM_ID_STR_SIZE, id) == 0)
            return i;
    }
    return -1;
}

typedef struct {
    collected_t *c;
    const char *ids; /* NPUB ids, MSM_ID_STR_SIZE apart */
} consume_ctx_t;

static void on_batch(msm_consumer_t *cons, msm_stream_msg_t *const *msgs, size_t n,
                     void *opaque)
{
    consume_ctx_t *ctx = opaque;
    collected_t *c = ctx->c;
    for (size_t i = 0; i < n; i++) {
        Msm__V1__Event *ev = msm_event_unpack(msgs[i]->value, msgs[i]->value_len);
        CU_ASSERT_PTR_NOT_NULL(ev);
        int idx = ev ? index_of(ctx->ids, ev->id) : -1;
        CU_ASSERT(idx >= 0);
        if (idx >= 0 && !c->ev[idx]) {
            c->ev[idx] = ev;
            c->record_key[idx] = msgs[i]->key_len ? strndup(msgs[i]->key, msgs[i]->key_len)
                                                  : NULL;
            c->n++;
            /* Events sharing an ordering key come out in publish order. */
            if (idx % 4 == 3) {
                int k = (idx / 4) % 2;
                if (c->order_seen[k] > idx)
                    c->order_broken = 1;
                c->order_seen[k] = idx;
            }
        } else {
            msm_event_free(ev);
        }
        msm_consumer_ack(cons, msgs[i]);
    }
}

static void build_event(json_t *events, int i)
{
    json_t *e = json_object();
    char buf[64];
    switch (i % 4) {
    case 0:
        json_object_set_new(e, "data", json_pack("{s:i,s:s}", "i", i, "s", "x"));
        break;
    case 1: {
        unsigned char raw[16];
        int n = snprintf((char *)raw, sizeof(raw), "bin-%d", i);
        raw[n] = 0;
        raw[n + 1] = 0xff;
        char b64[32];
        msm_base64_encode(raw, (size_t)n + 2, b64);
        json_object_set_new(e, "data_base64", json_string(b64));
        json_object_set_new(e, "content_type", json_string("application/x-protobuf"));
        break;
    }
    case 2:
        json_object_set_new(e, "data", json_pack("[i,b,n]", i, 1));
        snprintf(buf, sizeof(buf), "k%d", i % 3);
        json_object_set_new(e, "key", json_string(buf));
        break;
    default:
        snprintf(buf, sizeof(buf), "str%d", i);
        json_object_set_new(e, "data", json_string(buf));
        snprintf(buf, sizeof(buf), "ok%d", (i / 4) % 2);
        json_object_set_new(e, "ordering_key", json_string(buf));
        json_object_set_new(e, "key", json_string("ignored-for-partitioning"));
    }
    if (i % 2 == 0) {
        snprintf(buf, sizeof(buf), "%d", i);
        json_object_set_new(e, "attributes", json_pack("{s:s,s:s}", "idx", buf, "kind", "even"));
    }
    if (i % 5 == 0)
        json_object_set_new(e, "delay_ms", json_integer(i * 10));
    else if (i % 5 == 1)
        json_object_set_new(e, "deliver_at", json_string("2030-01-02T03:04:05.678+01:00"));
    if (i % 3 == 0)
        json_object_set_new(e, "priority", json_integer(i % 10));
    if (i % 7 == 0) {
        snprintf(buf, sizeof(buf), "idem-%d", i);
        json_object_set_new(e, "idempotency_key", json_string(buf));
    }
    json_array_append_new(events, e);
}

static void check_event(const collected_t *c, int i, const char *id, int64_t t0, int64_t t1)
{
    const Msm__V1__Event *ev = c->ev[i];
    char buf[64];
    CU_ASSERT_STRING_EQUAL(ev->id, id);
    CU_ASSERT_STRING_EQUAL(ev->topic, "pub100");
    CU_ASSERT(ev->publish_time_ms >= t0 && ev->publish_time_ms <= t1);
    CU_ASSERT_EQUAL(ev->schema_id, 0);
    CU_ASSERT_TRUE(msm_test_tp_child_of(ev->traceparent, TRACEPARENT)); /* the frontend's span */
    CU_ASSERT_STRING_EQUAL(ev->tracestate, "vendor=1");
    const char *expect_payload = NULL;
    switch (i % 4) {
    case 0:
        snprintf(buf, sizeof(buf), "{\"i\":%d,\"s\":\"x\"}", i);
        expect_payload = buf;
        break;
    case 1: {
        char raw[16];
        int n = snprintf(raw, sizeof(raw), "bin-%d", i);
        CU_ASSERT_STRING_EQUAL(ev->content_type, "application/x-protobuf");
        CU_ASSERT_EQUAL(ev->payload.len, (size_t)n + 2);
        CU_ASSERT(memcmp(ev->payload.data, raw, (size_t)n) == 0);
        CU_ASSERT(ev->payload.data[n] == 0 && ev->payload.data[n + 1] == 0xff);
        break;
    }
    case 2:
        snprintf(buf, sizeof(buf), "[%d,true,null]", i);
        expect_payload = buf;
        break;
    default:
        snprintf(buf, sizeof(buf), "\"str%d\"", i);
        expect_payload = buf;
    }
    if (expect_payload) {
        CU_ASSERT_STRING_EQUAL(ev->content_type, "application/json");
        CU_ASSERT_EQUAL(ev->payload.len, strlen(expect_payload));
        CU_ASSERT(memcmp(ev->payload.data, expect_payload, ev->payload.len) == 0);
    }
    /* Keys, and the record key: ordering_key, else key, else none. */
    char key[32] = "", okey[32] = "";
    if (i % 4 == 2)
        snprintf(key, sizeof(key), "k%d", i % 3);
    if (i % 4 == 3) {
        snprintf(key, sizeof(key), "ignored-for-partitioning");
        snprintf(okey, sizeof(okey), "ok%d", (i / 4) % 2);
    }
    CU_ASSERT_STRING_EQUAL(ev->key, i % 4 == 3 ? "ignored-for-partitioning" : key);
    CU_ASSERT_STRING_EQUAL(ev->ordering_key, okey);
    const char *rk = *okey ? okey : (i % 4 == 2 ? key : NULL);
    if (rk) {
        CU_ASSERT(c->record_key[i] && strcmp(c->record_key[i], rk) == 0);
    } else {
        CU_ASSERT_PTR_NULL(c->record_key[i]);
    }
    if (i % 2 == 0) {
        snprintf(buf, sizeof(buf), "%d", i);
        CU_ASSERT_EQUAL(ev->n_attributes, 2);
        CU_ASSERT(msm_event_attr(ev, "idx") && strcmp(msm_event_attr(ev, "idx"), buf) == 0);
        CU_ASSERT(msm_event_attr(ev, "kind") && strcmp(msm_event_attr(ev, "kind"), "even") == 0);
    } else {
        CU_ASSERT_EQUAL(ev->n_attributes, 0);
    }
    int64_t at = 0;
    msm_time_parse("2030-01-02T03:04:05.678+01:00", &at);
    int64_t expect_at = i % 5 == 0 ? ev->publish_time_ms + i * 10 : i % 5 == 1 ? at : 0;
    CU_ASSERT_EQUAL(ev->deliver_at_ms, expect_at);
    CU_ASSERT_EQUAL(ev->priority, i % 3 == 0 ? i % 10 : 5);
    snprintf(buf, sizeof(buf), "idem-%d", i);
    CU_ASSERT_STRING_EQUAL(ev->idempotency_key, i % 7 == 0 ? buf : "");
}

static void test_publish_roundtrip(void)
{
    /* PUT then publish at once: the watcher polls every 5 s, so this needs the own view. */
    put_topic("pub100", "{\"partitions\":4}");
    json_t *events = json_array();
    for (int i = 0; i < NPUB; i++)
        build_event(events, i);
    json_t *req = json_pack("{s:o}", "events", events);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    resp_t r;
    int64_t t0 = msm_time_unix_ms();
    char url[64];
    snprintf(url, sizeof(url), "/v1/topics/pub100:publish");
    /* tracestate rides along only with a valid traceparent: send both in two requests'
     * worth of headers by using the client's header list directly. */
    char full[512];
    snprintf(full, sizeof(full), "%s%s", F.base, url);
    msm_http_header_t headers[] = {{"Content-Type", "application/json"},
                                   {"traceparent", TRACEPARENT},
                                   {"tracestate", "vendor=1"}};
    msm_http_request_t hr = {.method = "POST", .url = full, .headers = headers, .n_headers = 3,
                             .body = body, .body_len = strlen(body), .timeout_ms = 10000};
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL_FATAL(msm_http_client_request(F.client, &hr, on_response, &r, NULL), MSM_OK);
    CU_ASSERT_EQUAL_FATAL(msm_test_wait_flag(F.loop, &r.done, 15000), 0);
    int64_t t1 = msm_time_unix_ms();
    free(body);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    json_t *results = json_object_get(r.json, "results");
    CU_ASSERT_EQUAL_FATAL(json_array_size(results), NPUB);
    char *ids = calloc(NPUB, MSM_ID_STR_SIZE);
    for (int i = 0; i < NPUB; i++) {
        json_t *res = json_array_get(results, (size_t)i);
        const char *id = jstr(res, "id");
        msm_id_t parsed;
        CU_ASSERT_FATAL(id && msm_id_parse(id, &parsed) == MSM_OK);
        CU_ASSERT_EQUAL(msm_id_version(&parsed), 7);
        CU_ASSERT_TRUE(json_is_false(json_object_get(res, "duplicate")));
        memcpy(ids + (size_t)i * MSM_ID_STR_SIZE, id, MSM_ID_STR_LEN);
        if (i > 0) /* ids are made in request order, so they sort in it */
            CU_ASSERT(strcmp(ids + (size_t)(i - 1) * MSM_ID_STR_SIZE, id) < 0);
    }
    resp_clear(&r);
    CU_ASSERT_EQUAL(stream_len("events.pub100", 4), NPUB);

    collected_t c;
    memset(&c, 0, sizeof(c));
    c.order_seen[0] = c.order_seen[1] = -1;
    consume_ctx_t ctx = {&c, ids};
    char err[256];
    msm_consumer_t *cons = msm_stream_consume(F.stream, "events.pub100", "test", "t1", 64, 256,
                                              on_batch, &ctx, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(cons);
    for (int i = 0; i < 500 && c.n < NPUB; i++)
        msm_test_spin(F.loop, 10);
    msm_consumer_free(cons);
    CU_ASSERT_EQUAL(c.n, NPUB);
    CU_ASSERT_FALSE(c.order_broken);
    for (int i = 0; i < NPUB; i++) {
        if (!c.ev[i])
            continue;
        check_event(&c, i, ids + (size_t)i * MSM_ID_STR_SIZE, t0, t1);
        msm_event_free(c.ev[i]);
        free(c.record_key[i]);
    }
    free(ids);

    /* An invalid traceparent is dropped, not refused. */
    const char *one = "{\"events\":[{\"data\":{}}]}";
    http_h(&r, "POST", url, one, strlen(one), "traceparent", "garbage");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "GET", "/metrics", NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(
        r.body, "msm_frontend_publish_events_total{topic=\"pub100\",result=\"ok\"} 101"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.body, "msm_frontend_publish_latency_seconds_count{result=\"ok\"}"));
    resp_clear(&r);
}

static void test_readyz(void)
{
    resp_t r;
    http(&r, "GET", "/readyz", NULL);
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    char why[64] = "";
    CU_ASSERT_TRUE(fe_ready(F.fe, why, sizeof(why)));
    CU_ASSERT_EQUAL(fe_inflight(F.fe), 0);
}

/* ---- Redis away: 503, and nothing published later ---- */

static void test_publish_outage(void)
{
    put_topic("outage", "{\"partitions\":1}");
    resp_t r;
    http(&r, "POST", "/v1/topics/outage:publish", "{\"events\":[{\"data\":\"before\"}]}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    redisFree(F.sync);
    F.sync = NULL;
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_stop(&F.srv), 0);
    msm_test_spin(F.loop, 100); /* let the clients notice */

    char why[64] = "";
    CU_ASSERT_FALSE(fe_ready(F.fe, why, sizeof(why)));
    uint64_t t0 = msm_time_mono_ms();
    http(&r, "POST", "/v1/topics/outage:publish", "{\"events\":[{\"data\":\"during\"}]}");
    uint64_t took = msm_time_mono_ms() - t0;
    CU_ASSERT_EQUAL(r.status, 503);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "UNAVAILABLE");
    CU_ASSERT(took <= APPEND_TIMEOUT_MS + 1000);
    resp_clear(&r);
    /* Control plane reads fail the same way. */
    http(&r, "GET", "/v1/topics", NULL);
    CU_ASSERT_EQUAL(r.status, 503);
    resp_clear(&r);

    CU_ASSERT_EQUAL_FATAL(msm_test_redis_restart(&F.srv), 0);
    struct timeval tv = {2, 0};
    F.sync = redisConnectWithTimeout("127.0.0.1", F.srv.port, tv);
    CU_ASSERT_FATAL(F.sync && !F.sync->err);
    /* Once reconnected, publishing works; the failed event never shows up. */
    int status = 0;
    for (int i = 0; i < 50 && status != 200; i++) {
        msm_test_spin(F.loop, 100);
        http(&r, "POST", "/v1/topics/outage:publish", "{\"events\":[{\"data\":\"after\"}]}");
        status = r.status;
        resp_clear(&r);
    }
    CU_ASSERT_EQUAL(status, 200);
    msm_test_spin(F.loop, 300);
    redisReply *all = cmd("XRANGE %s:log:{events.outage}:0 - +", F.ns);
    CU_ASSERT_EQUAL(all->type, REDIS_REPLY_ARRAY);
    size_t n = all->elements;
    int during = 0;
    for (size_t i = 0; i < n; i++) {
        const redisReply *f = all->element[i]->element[1];
        for (size_t k = 0; k + 1 < f->elements; k += 2) {
            if (strcmp(f->element[k]->str, "v") != 0)
                continue;
            Msm__V1__Event *ev = msm_event_unpack(f->element[k + 1]->str, f->element[k + 1]->len);
            if (ev && ev->payload.len == 8 && memcmp(ev->payload.data, "\"during\"", 8) == 0)
                during = 1;
            msm_event_free(ev);
        }
    }
    freeReplyObject(all);
    CU_ASSERT_FALSE(during);
    CU_ASSERT(n >= 2); /* before, after (an after may repeat while reconnecting) */
}

/* Shutdown with a publish in flight: the server cancels it (503), the frontend's memory
 * lives until the log fails the append, and nothing leaks (ASan build). */
static void test_shutdown_in_flight(void)
{
    CU_ASSERT_EQUAL_FATAL(msm_test_redis_stop(&F.srv), 0);
    msm_test_spin(F.loop, 100);
    char url[256];
    snprintf(url, sizeof(url), "%s/v1/topics/outage:publish", F.base);
    const char *body = "{\"events\":[{\"data\":\"late\"}]}";
    msm_http_request_t req = {.method = "POST", .url = url, .body = body,
                              .body_len = strlen(body), .timeout_ms = 10000};
    resp_t r;
    memset(&r, 0, sizeof(r));
    CU_ASSERT_EQUAL_FATAL(msm_http_client_request(F.client, &req, on_response, &r, NULL), MSM_OK);
    for (int i = 0; i < 100 && fe_inflight(F.fe) == 0; i++)
        msm_test_spin(F.loop, 10);
    CU_ASSERT_EQUAL(fe_inflight(F.fe), 1);
    CU_ASSERT_FALSE(fe_drained(F.fe));
    fe_free(F.fe);
    F.fe = NULL;
    msm_http_server_free(F.http);
    F.http = NULL;
    CU_ASSERT_EQUAL(msm_test_wait_flag(F.loop, &r.done, 5000), 0);
    CU_ASSERT_EQUAL(r.status, 503);
    resp_clear(&r);
    /* suite_clean frees the log client: the held append fails and the call ends. */
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"topics", test_topics},
        {"subscriptions", test_subscriptions},
        {"subscription filters", test_subscription_filters},
        {"subscription endpoint addresses", test_subscription_endpoint_addresses},
        {"subscription push_tls", test_subscription_push_tls},
        {"publish_invalid", test_publish_invalid},
        {"publish_roundtrip", test_publish_roundtrip},
        {"readyz", test_readyz},
        {"publish_outage", test_publish_outage},
        {"shutdown_in_flight", test_shutdown_in_flight},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"frontend", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
