/* SPDX-License-Identifier: MIT */
/* The schema registry (Confluent REST subset) and publish to schema-bound topics, against a
 * real redis-server: ids, versions, compatibility (409), and JSON converted to Avro binary. */
#include "fe_fixture.h"

#include "msm/envelope.h"
#include "msm/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V1 "{\"type\":\"record\",\"name\":\"Order\",\"fields\":[{\"name\":\"id\",\"type\":\"long\"}]}"
#define V2 "{\"type\":\"record\",\"name\":\"Order\",\"fields\":[{\"name\":\"id\",\"type\":\"long\"}," \
           "{\"name\":\"note\",\"type\":\"string\",\"default\":\"\"}]}"
#define BAD "{\"type\":\"record\",\"name\":\"Order\",\"fields\":[{\"name\":\"id\",\"type\":\"long\"}," \
            "{\"name\":\"qty\",\"type\":\"int\"}]}"

/* POST /subjects/{s}/versions with @p schema (a JSON text, escaped here). */
static void register_schema(resp_t *r, const char *subject, const char *schema, const char *type)
{
    json_t *body = json_pack("{s:s,s:s}", "schema", schema, "schemaType", type);
    char *text = json_dumps(body, JSON_COMPACT);
    char path[256];
    snprintf(path, sizeof(path), "/subjects/%s/versions", subject);
    msm_http_header_t hs[] = {{"Content-Type", "application/vnd.schemaregistry.v1+json"}};
    http_hs(r, "POST", path, text, strlen(text), hs, 1);
    free(text);
    json_decref(body);
}

static void test_registry(void)
{
    resp_t r;
    register_schema(&r, "orders-value", V1, "AVRO");
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    json_int_t id1 = jint(r.json, "id");
    CU_ASSERT(id1 > 0);
    resp_clear(&r);
    /* The same schema again, spaced differently: the same id, no new version. */
    register_schema(&r, "orders-value",
                    "{ \"name\": \"Order\", \"type\": \"record\", \"fields\": [ {\"type\": "
                    "\"long\", \"name\": \"id\"} ] }", "AVRO");
    CU_ASSERT_EQUAL(jint(r.json, "id"), id1);
    resp_clear(&r);
    /* The same schema under another subject keeps its global id. */
    register_schema(&r, "other-value", V1, "AVRO");
    CU_ASSERT_EQUAL(jint(r.json, "id"), id1);
    resp_clear(&r);
    /* Compatible (a field with a default): version 2. */
    register_schema(&r, "orders-value", V2, "AVRO");
    CU_ASSERT_EQUAL(r.status, 200);
    json_int_t id2 = jint(r.json, "id");
    CU_ASSERT(id2 > id1);
    resp_clear(&r);
    /* Incompatible under BACKWARD (a new field without a default): 409. */
    register_schema(&r, "orders-value", BAD, "AVRO");
    CU_ASSERT_EQUAL(r.status, 409);
    CU_ASSERT_STRING_EQUAL(err_code(&r), "INCOMPATIBLE_SCHEMA");
    CU_ASSERT_EQUAL(jint(r.json, "error_code"), 409);
    resp_clear(&r);
    json_t *b = json_pack("{s:s}", "schema", BAD);
    char *text = json_dumps(b, JSON_COMPACT);
    http(&r, "POST", "/compatibility/subjects/orders-value/versions/latest", text);
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT(json_is_false(json_object_get(r.json, "is_compatible")));
    resp_clear(&r);
    /* With NONE it goes in. */
    http(&r, "PUT", "/config/orders-value", "{\"compatibility\":\"NONE\"}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    http(&r, "GET", "/config/orders-value", NULL);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "compatibilityLevel"), "NONE");
    resp_clear(&r);
    http(&r, "POST", "/compatibility/subjects/orders-value/versions/latest", text);
    CU_ASSERT(json_is_true(json_object_get(r.json, "is_compatible")));
    resp_clear(&r);
    free(text);
    json_decref(b);
    http(&r, "PUT", "/config/orders-value", "{\"compatibility\":\"BACKWARD\"}");
    resp_clear(&r);
    /* Reads. */
    http(&r, "GET", "/subjects", NULL);
    CU_ASSERT_EQUAL(json_array_size(r.json), 2);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_array_get(r.json, 0)), "orders-value");
    resp_clear(&r);
    http(&r, "GET", "/subjects/orders-value/versions", NULL);
    CU_ASSERT_EQUAL(json_array_size(r.json), 2);
    resp_clear(&r);
    http(&r, "GET", "/subjects/orders-value/versions/latest", NULL);
    CU_ASSERT_EQUAL(jint(r.json, "version"), 2);
    CU_ASSERT_EQUAL(jint(r.json, "id"), id2);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "schema"), V2);
    resp_clear(&r);
    http(&r, "GET", "/subjects/orders-value/versions/1", NULL);
    CU_ASSERT_EQUAL(jint(r.json, "id"), id1);
    resp_clear(&r);
    char path[64];
    snprintf(path, sizeof(path), "/schemas/ids/%lld", (long long)id1);
    http(&r, "GET", path, NULL);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "schema"), V1);
    CU_ASSERT_STRING_EQUAL(jstr(r.json, "schemaType"), "AVRO");
    resp_clear(&r);
    /* Not found and invalid. */
    const struct {
        const char *method, *path, *body;
        int status;
        const char *code;
    } bad[] = {
        {"GET", "/subjects/nope/versions", NULL, 404, "NOT_FOUND"},
        {"GET", "/subjects/orders-value/versions/9", NULL, 404, "NOT_FOUND"},
        {"GET", "/subjects/orders-value/versions/x", NULL, 400, "INVALID_ARGUMENT"},
        {"GET", "/schemas/ids/99999", NULL, 404, "NOT_FOUND"},
        {"POST", "/subjects/s/versions", "{\"schema\":\"{\\\"type\\\":\\\"nope\\\"}\"}", 400,
         "INVALID_SCHEMA"},
        {"POST", "/subjects/s/versions", "{\"schema\":\"x\",\"schemaType\":\"XML\"}", 400,
         "INVALID_ARGUMENT"},
        {"POST", "/subjects/s/versions", "{}", 400, "INVALID_ARGUMENT"},
        {"PUT", "/config/s", "{\"compatibility\":\"SIDEWAYS\"}", 400, "INVALID_ARGUMENT"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        http(&r, bad[i].method, bad[i].path, bad[i].body);
        int ok = r.status == bad[i].status && err_code(&r) &&
                 strcmp(err_code(&r), bad[i].code) == 0;
        if (!ok)
            fprintf(stderr, "registry case %zu: %d %s\n", i, r.status, r.body);
        CU_ASSERT(ok);
        resp_clear(&r);
    }
}

static void test_publish_avro(void)
{
    resp_t r;
    put_topic("orders", "{\"partitions\":1,\"schema_subject\":\"orders-value\"}");
    /* JSON in, Avro binary out: {"id":3,"note":"hi"} -> zigzag(3)=06, len 2, "hi". */
    http(&r, "POST", "/v1/topics/orders:publish",
         "{\"events\":[{\"data\":{\"id\":3,\"note\":\"hi\"}},{\"data\":{\"id\":-1}},"
         "{\"data_base64\":\"BgRoaQ==\",\"content_type\":\"application/avro\"}]}");
    if (r.status != 200)
        fprintf(stderr, "publish: %d %s\n", r.status, r.body);
    CU_ASSERT_EQUAL_FATAL(r.status, 200);
    resp_clear(&r);
    redisReply *x = cmd("XRANGE %s:log:{events.orders}:0 - +", F.ns);
    CU_ASSERT_EQUAL_FATAL(x->elements, 3);
    const uint8_t want0[] = {0x06, 0x04, 'h', 'i'}, want1[] = {0x01, 0x00};
    for (size_t i = 0; i < 3; i++) {
        const redisReply *v = x->element[i]->element[1]->element[3];
        Msm__V1__Event *ev = msm__v1__event__unpack(NULL, v->len, (const uint8_t *)v->str);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
        CU_ASSERT_STRING_EQUAL(ev->content_type, "application/avro");
        CU_ASSERT(ev->schema_id > 0);
        const uint8_t *want = i == 1 ? want1 : want0;
        size_t wlen = i == 1 ? sizeof(want1) : sizeof(want0);
        if (i == 2) { /* given as Avro already: validated, kept as sent */
            CU_ASSERT(ev->payload.len == 4 && memcmp(ev->payload.data, want0, 4) == 0);
        } else {
            CU_ASSERT(ev->payload.len == wlen && memcmp(ev->payload.data, want, wlen) == 0);
        }
        msm__v1__event__free_unpacked(ev, NULL);
    }
    freeReplyObject(x);
    /* Invalid against the schema: 400 naming the path, nothing published. */
    http(&r, "POST", "/v1/topics/orders:publish",
         "{\"events\":[{\"data\":{\"id\":1}},{\"data\":{\"id\":\"seven\"}}]}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "events[1].data.id"));
    resp_clear(&r);
    http(&r, "POST", "/v1/topics/orders:publish",
         "{\"events\":[{\"data_base64\":\"Bg==\",\"content_type\":\"application/avro\"}]}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "events[0].data_base64"));
    resp_clear(&r);
    msm_http_header_t hs[] = {{"Content-Type", "application/json"}};
    http_hs(&r, "POST", "/v1/topics/orders/events", "{\"id\":\"x\"}", 10, hs, 1);
    CU_ASSERT_EQUAL(r.status, 400);
    resp_clear(&r);
    CU_ASSERT_EQUAL(stream_len("events.orders", 1), 3);
    /* Bound to a subject without versions: 409, nothing published. */
    put_topic("unbound", "{\"partitions\":1,\"schema_subject\":\"empty-value\"}");
    http(&r, "POST", "/v1/topics/unbound:publish", "{\"events\":[{\"data\":1}]}");
    CU_ASSERT_EQUAL(r.status, 409);
    resp_clear(&r);
}

/* CDC changes on a schema-bound topic: data converted, a delete without data passes as a
 * tombstone, data that does not fit is 400 naming the change. */
static void test_cdc_avro(void)
{
    resp_t r;
    http(&r, "PUT", "/v1/cdc/sources/orders-db", "{\"topic\":\"orders\",\"partitions\":[\"p0\"]}");
    CU_ASSERT_EQUAL(r.status, 200);
    resp_clear(&r);
    long long before = stream_len("events.orders", 1);
    http(&r, "POST", "/v1/cdc/sources/orders-db/changes",
         "{\"partition\":\"p0\",\"changes\":[{\"sequence\":1,\"op\":\"update\","
         "\"entity\":\"o1\",\"data\":{\"id\":\"one\"}}]}");
    CU_ASSERT_EQUAL(r.status, 400);
    CU_ASSERT(has_detail(&r, "changes[0].data.id"));
    resp_clear(&r);
    http(&r, "POST", "/v1/cdc/sources/orders-db/changes",
         "{\"partition\":\"p0\",\"changes\":[{\"sequence\":1,\"op\":\"create\","
         "\"entity\":\"o1\",\"data\":{\"id\":1}},{\"sequence\":2,\"op\":\"delete\","
         "\"entity\":\"o1\"}]}");
    CU_ASSERT_EQUAL(r.status, 200);
    CU_ASSERT_EQUAL(jint(r.json, "accepted"), 2);
    resp_clear(&r);
    CU_ASSERT_EQUAL(stream_len("events.orders", 1), before + 2);
    redisReply *x = cmd("XREVRANGE %s:log:{events.orders}:0 + - COUNT 2", F.ns);
    CU_ASSERT_EQUAL_FATAL(x->elements, 2);
    for (size_t i = 0; i < 2; i++) {
        const redisReply *v = x->element[i]->element[1]->element[3];
        Msm__V1__Event *ev = msm__v1__event__unpack(NULL, v->len, (const uint8_t *)v->str);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ev);
        if (ev->cdc_sequence == 1) { /* {"id":1} with note's default "": 02 00 */
            CU_ASSERT_STRING_EQUAL(ev->content_type, "application/avro");
            CU_ASSERT(ev->schema_id > 0);
            CU_ASSERT(ev->payload.len == 2 && memcmp(ev->payload.data, "\x02\x00", 2) == 0);
        } else {
            CU_ASSERT_EQUAL(ev->cdc_operation, MSM__V1__OPERATION__OPERATION_DELETE);
            CU_ASSERT_EQUAL(ev->schema_id, 0);
            CU_ASSERT(ev->payload.len == 4 && memcmp(ev->payload.data, "null", 4) == 0);
        }
        msm__v1__event__free_unpacked(ev, NULL);
    }
    freeReplyObject(x);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"registry", test_registry},
        {"publish_avro", test_publish_avro},
        {"cdc_avro", test_cdc_avro},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"schemas", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    return msm_test_run(suites);
}
